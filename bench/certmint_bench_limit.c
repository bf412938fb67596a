// --limit: the physical limit of this machine, in process. The crypto of one enrolment (POPO
// verification, PBM derivation and request MAC check, response MAC, certificate signature in the
// token or in memory), each step timed alone, then all of it on every thread.
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "bench/certmint_bench.h"
#include "hsm/hsm.h"

typedef enum bench_limit_sign {
    BENCH_LIMIT_NONE = 0, // the common part only (for the per-step timing)
    BENCH_LIMIT_TOKEN,
    BENCH_LIMIT_MEMORY,
} bench_limit_sign;

// Shared, read-only while the threads run.
typedef struct bench_limit_env {
    bench_ctx *ctx;
    cmp_msg req;        // the prepared ir, parsed
    cm_span tbs;        // bytes signed as "the certificate" (the request's protected part)
    hsm_pool *pool;     // NULL without --token-uri
    const hsm_key *key; // the CA key on the token
    hsm_sig_alg alg;
    EVP_PKEY *mem_key; // an in-memory key of the same type
    const EVP_MD *mem_md;
} bench_limit_env;

typedef struct bench_limit_thread {
    const bench_limit_env *env;
    bench_limit_sign sign;
    uint64_t stop_at;
    uint64_t ops;
    bool ok;
} bench_limit_thread;

// bench_limit_op does the crypto of one enrolment: POPO verification, PBM key derivation and
// MAC check of the request, the response's MAC, and the certificate signature.
static bool bench_limit_op(const bench_limit_env *env, crmf_crypto *c, EVP_MD_CTX *mdctx,
                           bench_limit_sign sign)
{
    const bench_opts *o = env->ctx->o;
    const cmp_msg *m = &env->req;
    if (!cm_ok(crmf_popo_verify(c, &m->body.u.req.msgs[0], NULL))) {
        return false;
    }
    cmp_mac_key key;
    if (!cm_ok(cmp_protect_verify_mac(env->ctx->prot, &key, m->header.f.protection_alg,
                                      cm_span_make(o->secret, strlen(o->secret)),
                                      CMP_SECRET_PASSWORD, m->protected_part, m->protection,
                                      m->protection_unused, NULL))) {
        return false;
    }
    uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
    size_t mac_len;
    const bool mac_ok =
        cm_ok(cmp_mac_compute(env->ctx->prot, mac, sizeof(mac), &mac_len, &key, m->whole));
    cmp_mac_key_cleanse(&key);
    if (!mac_ok) {
        return false;
    }
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = sizeof(sig);
    if (sign == BENCH_LIMIT_TOKEN) {
        return cm_ok(
            hsm_sign_sync(env->pool, &sig_len, sig, sizeof(sig), env->key, env->alg, env->tbs));
    }
    if (sign == BENCH_LIMIT_MEMORY) {
        return EVP_DigestSignInit(mdctx, NULL, env->mem_md, NULL, env->mem_key) == 1 &&
               EVP_DigestSign(mdctx, sig, &sig_len, env->tbs.p, env->tbs.len) == 1;
    }
    return true;
}

static void *bench_limit_thread_main(void *arg)
{
    bench_limit_thread *t = arg;
    crmf_crypto c;
    EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
    t->ok = mdctx != NULL && cm_ok(crmf_crypto_init(&c, NULL, NULL));
    while (t->ok && bench_now() < t->stop_at) {
        for (int i = 0; i < 16 && t->ok; i++) {
            t->ok = bench_limit_op(t->env, &c, mdctx, t->sign);
            t->ops++;
        }
    }
    crmf_crypto_cleanup(&c);
    EVP_MD_CTX_free(mdctx);
    return NULL;
}

// bench_limit_rate runs |sign| enrolments on |threads| threads for |seconds| and returns the
// rate.
static double bench_limit_rate(const bench_limit_env *env, bench_limit_sign sign, size_t threads,
                               double seconds)
{
    bench_limit_thread th[BENCH_MAX_THREADS];
    pthread_t tid[BENCH_MAX_THREADS];
    const uint64_t t0 = bench_now();
    for (size_t i = 0; i < threads; i++) {
        th[i] = (bench_limit_thread){env, sign, t0 + (uint64_t)(seconds * 1e9), 0, true};
        if (pthread_create(&tid[i], NULL, bench_limit_thread_main, &th[i]) != 0) {
            bench_die("cannot start a thread");
        }
    }
    uint64_t ops = 0;
    for (size_t i = 0; i < threads; i++) {
        (void)pthread_join(tid[i], NULL);
        if (!th[i].ok) {
            bench_die("an in-process operation failed");
        }
        ops += th[i].ops;
    }
    return (double)ops / ((double)(bench_now() - t0) / 1e9);
}

// bench_limit_us times |n| single-threaded operations of one kind, in microseconds each.
static double bench_limit_step_us(const bench_limit_env *env, int step, int n)
{
    crmf_crypto c;
    EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL || !cm_ok(crmf_crypto_init(&c, NULL, NULL))) {
        bench_die("crmf_crypto_init failed");
    }
    const bench_opts *o = env->ctx->o;
    const cmp_msg *m = &env->req;
    const uint64_t t0 = bench_now();
    for (int i = 0; i < n; i++) {
        bool ok = true;
        uint8_t buf[HSM_MAX_SIG_LEN];
        size_t len = sizeof(buf);
        cmp_mac_key key;
        switch (step) {
        case 0:
            ok = cm_ok(crmf_popo_verify(&c, &m->body.u.req.msgs[0], NULL));
            break;
        case 1:
            ok = cm_ok(cmp_protect_verify_mac(env->ctx->prot, &key, m->header.f.protection_alg,
                                              cm_span_make(o->secret, strlen(o->secret)),
                                              CMP_SECRET_PASSWORD, m->protected_part, m->protection,
                                              m->protection_unused, NULL));
            cmp_mac_key_cleanse(&key);
            break;
        case 2:
            ok = cm_ok(cmp_mac_compute(env->ctx->prot, buf, sizeof(buf), &len, &env->ctx->macs[0],
                                       m->whole));
            break;
        case 3:
            ok = cm_ok(
                hsm_sign_sync(env->pool, &len, buf, sizeof(buf), env->key, env->alg, env->tbs));
            break;
        default:
            ok = EVP_DigestSignInit(mdctx, NULL, env->mem_md, NULL, env->mem_key) == 1 &&
                 EVP_DigestSign(mdctx, buf, &len, env->tbs.p, env->tbs.len) == 1;
            break;
        }
        if (!ok) {
            bench_die("an in-process operation failed");
        }
    }
    crmf_crypto_cleanup(&c);
    EVP_MD_CTX_free(mdctx);
    return (double)(bench_now() - t0) / 1e3 / n;
}

static hsm_sig_alg bench_hsm_alg_for(hsm_key_type t, const EVP_MD **out_md, bench_key_type *out_mem)
{
    switch (t) {
    case HSM_KEY_EC_P384:
        *out_md = EVP_sha384();
        *out_mem = BENCH_KEY_EC_P384;
        break;
    case HSM_KEY_RSA:
        *out_md = EVP_sha256();
        *out_mem = BENCH_KEY_RSA2048;
        break;
    case HSM_KEY_ED25519:
        *out_md = NULL;
        *out_mem = BENCH_KEY_ED25519;
        break;
    default:
        *out_md = EVP_sha256();
        *out_mem = BENCH_KEY_EC_P256;
        return HSM_SIG_ECDSA_SHA256;
    }
    return hsm_sig_alg_for_type(t);
}

int bench_limit_main(const bench_opts *o)
{
    bench_ctx ctx;
    bench_ctx_setup(&ctx, o, 1);
    bench_limit_env env;
    memset(&env, 0, sizeof(env));
    env.ctx = &ctx;
    const bench_req *rq = &ctx.reqs[0];
    const uint8_t *sep = memmem(rq->http, rq->http_len, "\r\n\r\n", 4);
    cm_arena arena;
    cm_arena_init(&arena, 16384, 0);
    if (sep == NULL ||
        !cm_ok(cmp_msg_from_der(&arena, &env.req,
                                cm_span_make(sep + 4, rq->http_len - (size_t)(sep + 4 - rq->http)),
                                NULL))) {
        bench_die("cannot parse the prepared request");
    }
    env.tbs = env.req.protected_part;
    hsm_token *tok = NULL;
    hsm_key *hkey = NULL;
    bench_key_type mem_type = o->key_type;
    env.mem_md = EVP_sha256();
    if (o->token_uri != NULL) {
        hsm_error err;
        memset(&err, 0, sizeof(err));
        hsm_pool_opts po;
        hsm_pool_opts_default(&po);
        po.sessions = (uint32_t)o->threads;
        if (!cm_ok(hsm_token_open(&tok, &err, o->token_uri)) ||
            !cm_ok(hsm_key_find(tok, &hkey, &err, o->token_uri)) ||
            !cm_ok(hsm_pool_new(&env.pool, tok, &po))) {
            (void)fprintf(stderr, "certmint-bench: PKCS#11: %s\n", err.msg);
            return 2;
        }
        env.key = hkey;
        env.alg = bench_hsm_alg_for(hsm_key_get_type(hkey), &env.mem_md, &mem_type);
    }
    env.mem_key = bench_keygen(mem_type);
    if (env.mem_key == NULL) {
        bench_die("key generation failed");
    }
    const int n = 200;
    const double popo_us = bench_limit_step_us(&env, 0, n);
    const double pbm_us = bench_limit_step_us(&env, 1, n);
    const double mac_us = bench_limit_step_us(&env, 2, n);
    const double tok_us = env.pool != NULL ? bench_limit_step_us(&env, 3, n) : 0;
    const double mem_us = bench_limit_step_us(&env, 4, n);
    const double secs = o->duration > 0 ? o->duration : 3.0;
    const double tok_eps =
        env.pool != NULL ? bench_limit_rate(&env, BENCH_LIMIT_TOKEN, o->threads, secs) : 0;
    const double mem_eps = bench_limit_rate(&env, BENCH_LIMIT_MEMORY, o->threads, secs);
    printf("certmint-bench --limit: the crypto of one %s enrolment (%s keys, PBM %llu iterations), "
           "in process\n",
           bench_flow_names[o->flow], bench_key_names[o->key_type],
           (unsigned long long)o->pbm_iterations);
    printf("  %-34s %8.1f us\n", "POPO verify (device key)", popo_us);
    printf("  %-34s %8.1f us\n", "PBM derive + request MAC check", pbm_us);
    printf("  %-34s %8.1f us\n", "response MAC", mac_us);
    if (env.pool != NULL) {
        printf("  %-34s %8.1f us\n", "certificate signature (token)", tok_us);
    }
    printf("  %-34s %8.1f us\n", "certificate signature (memory)", mem_us);
    if (env.pool != NULL) {
        printf("  %-34s %8.0f enrolments/s (%zu threads)\n", "limit via the token", tok_eps,
               o->threads);
    }
    printf("  %-34s %8.0f enrolments/s (%zu threads)\n", "limit with in-memory keys", mem_eps,
           o->threads);
    if (o->json_path != NULL) {
        FILE *f = strcmp(o->json_path, "-") == 0 ? stdout : fopen(o->json_path, "w");
        if (f == NULL) {
            bench_die("cannot write --json");
        }
        (void)fprintf(f,
                      "{\"threads\": %zu, \"popo_us\": %.2f, \"pbm_us\": %.2f, \"mac_us\": %.2f, "
                      "\"sign_token_us\": %.2f, \"sign_memory_us\": %.2f, \"limit_token_eps\": "
                      "%.1f, \"limit_memory_eps\": %.1f}\n",
                      o->threads, popo_us, pbm_us, mac_us, tok_us, mem_us, tok_eps, mem_eps);
        if (f != stdout) {
            (void)fclose(f);
        }
    }
    EVP_PKEY_free(env.mem_key);
    hsm_pool_free(env.pool);
    hsm_key_free(hkey);
    hsm_token_free(tok);
    cm_arena_cleanup(&arena);
    bench_ctx_cleanup(&ctx);
    return 0;
}
