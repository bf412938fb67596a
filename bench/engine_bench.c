// engine_bench: pushes N pre-made PBM-protected `ir` requests (EC P-256 device key, the CA key
// P-256 in a throwaway SoftHSM2 token, a SQLite store with synchronous=FULL) through
// engine/server in process, W requests in flight, and reports enrolments/s and where the time
// goes per stage (srv_summary.stage_ns: medians and the share of their sum).
//
//   build/release/bench/engine_bench [N=2000] [W=64] [hsm_sessions=2]
//
// The requests come from one real `openssl cmp -reqout` ir, re-stamped with a fresh
// transactionID, senderNonce and messageTime and re-MACed before the clock starts.
//
// It also counts heap allocations while the requests run (malloc, calloc and realloc, replaced
// below) and reports them per enrolment: on every thread (the HSM workers, the store writer,
// OpenSSL and SQLite included) and on the request thread alone (what the engine's own
// request path costs). Sanitizer builds bring their own allocator and report no counts.
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv.h"
#include "tests/support/test_support.h"

#define BENCH_SECRET "bench-secret"

// --- allocation counter ----------------------------------------------------------------------

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BENCH_COUNT_ALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define BENCH_COUNT_ALLOCS 0
#endif
#endif
#ifndef BENCH_COUNT_ALLOCS
#define BENCH_COUNT_ALLOCS 1
#endif

static _Atomic uint64_t bench_allocs;              // every thread
static _Thread_local uint64_t bench_allocs_thread; // the calling thread

#if BENCH_COUNT_ALLOCS
// glibc's allocator under its internal names: the replacements below count, then defer to it.
// They are the one exception to "everything static" in bench/: the dynamic linker must find
// them in the executable so that every library's calls come here too.
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

static void bench_count_alloc(void)
{
    atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
    bench_allocs_thread++;
}

void *malloc(size_t n)
{
    bench_count_alloc();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    bench_count_alloc();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    bench_count_alloc();
    return __libc_realloc(p, n);
}
#endif

typedef struct bench_ctx {
    char dir[256];
    test_token token;
    hsm_token *tok;
    hsm_key *key;
    hsm_pool *pool;
    store *st;
    cmp_protect_ctx *prot;
    ca_authority *authority;
    ca_profile *profile;
    srv_engine *engine;
    srv_worker *worker;
    cm_cq cq;
    srv_secret secret;
    srv_ca ca;
} bench_ctx;

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

static bool bench_fail(const char *what)
{
    fprintf(stderr, "engine_bench: %s\n", what);
    return false;
}

// bench_root makes the CA certificate for the token key and loads it as the authority.
static bool bench_root(bench_ctx *b)
{
    static const uint8_t k_serial[] = {0x01};
    // Name: CN=bench root CA.
    uint8_t name_buf[64];
    der_builder nb;
    der_builder_init_fixed(&nb, name_buf, sizeof(name_buf));
    der_mark n1, n2, n3;
    der_open(&nb, &n1, DER_TAG_SEQUENCE);
    der_open(&nb, &n2, DER_TAG_SET);
    der_open(&nb, &n3, DER_TAG_SEQUENCE);
    der_put_oid_lit(&nb, DER_OID_AT_COMMON_NAME);
    der_put_string(&nb, DER_TAG_UTF8_STRING, CM_SPAN_LIT("bench root CA"));
    der_close(&nb, &n3);
    der_close(&nb, &n2);
    der_close(&nb, &n1);
    cm_span name;
    if (!cm_ok(der_builder_finish(&nb, &name))) {
        return bench_fail("cannot encode the CA name");
    }
    der_builder ab, tb, cb;
    der_builder_init(&ab, 64);
    der_builder_init(&tb, 1024);
    der_builder_init(&cb, 2048);
    hsm_sig_alg_marshal(&ab, HSM_SIG_ECDSA_SHA256);
    cm_span alg, tbs, cert;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    const int64_t now = cm_time_now();
    bool ok = cm_ok(der_builder_finish(&ab, &alg)) &&
              cm_ok(ca_root_tbs_build(&tb, name, hsm_key_get0_spki(b->key),
                                      cm_span_make(k_serial, sizeof(k_serial)), now - 60,
                                      now + 3650 * 86400LL, alg)) &&
              cm_ok(der_builder_finish(&tb, &tbs)) &&
              cm_ok(hsm_sign_sync(b->pool, &sig_len, sig, sizeof(sig), b->key, HSM_SIG_ECDSA_SHA256,
                                  tbs)) &&
              cm_ok(ca_signed_assemble(&cb, tbs, alg, cm_span_make(sig, sig_len))) &&
              cm_ok(der_builder_finish(&cb, &cert));
    char pem[320], err[256];
    test_path(pem, sizeof(pem), b->dir, "ca.pem");
    if (ok) {
        const unsigned char *q = cert.p;
        X509 *x = d2i_X509(NULL, &q, (long)cert.len);
        FILE *f = fopen(pem, "w");
        ok = x != NULL && f != NULL && PEM_write_X509(f, x) == 1;
        if (f != NULL) {
            ok &= fclose(f) == 0;
        }
        X509_free(x);
    }
    ok = ok && cm_ok(ca_authority_load(&b->authority, err, sizeof(err), pem, NULL));
    der_builder_cleanup(&ab);
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    return ok || bench_fail("cannot make the CA certificate");
}

static bool bench_setup(bench_ctx *b, uint32_t sessions)
{
    if (!test_tmpdir(b->dir, sizeof(b->dir), "engine-bench") ||
        !test_token_create(&b->token, "engine-bench")) {
        return bench_fail("cannot create the SoftHSM token");
    }
    char uri[512];
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=%s?module-path=%s&pin-value=%s", b->token.label,
                   b->token.module, b->token.user_pin);
    hsm_error err;
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = sessions;
    if (!cm_ok(hsm_token_open(&b->tok, &err, uri)) ||
        !cm_ok(hsm_key_generate(b->tok, &b->key, &err, HSM_KEYGEN_EC_P256, "ca",
                                CM_SPAN_LIT("\x01"))) ||
        !cm_ok(hsm_pool_new(&b->pool, b->tok, &po))) {
        return bench_fail(err.msg);
    }
    if (!bench_root(b)) {
        return false;
    }
    static const char k_ext[] = "[ext]\nbasicConstraints = critical, CA:FALSE\n"
                                "keyUsage = critical, digitalSignature\n"
                                "extendedKeyUsage = clientAuth\n";
    CONF *conf = NCONF_new(NULL);
    BIO *bio = BIO_new_mem_buf(k_ext, (int)sizeof(k_ext) - 1);
    long line;
    char e2[256];
    ca_profile_params pp = {.default_days = 365,
                            .max_days = 365,
                            .key_types = CA_KEY_EC_P256,
                            .rsa_min_bits = 2048,
                            .rsa_max_bits = 4096,
                            .subject_mode = CA_SUBJECT_COPY,
                            .implicit_confirm = true};
    const bool prof = conf != NULL && bio != NULL && NCONF_load_bio(conf, bio, &line) == 1 &&
                      cm_ok(ca_profile_new(&b->profile, e2, sizeof(e2), &pp, conf, "ext"));
    BIO_free(bio);
    NCONF_free(conf);
    char db[400];
    (void)snprintf(db, sizeof(db), "sqlite:%s/bench.db", b->dir);
    if (!prof || !cm_ok(store_open(&b->st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&b->prot, NULL, NULL, NULL))) {
        return bench_fail("cannot set up profile, store or protection");
    }
    b->secret.ref = CM_SPAN_LIT("bench");
    b->secret.secret = CM_SPAN_LIT(BENCH_SECRET);
    b->ca = (srv_ca){.name = "bench",
                     .authority = b->authority,
                     .profile = b->profile,
                     .ca_key = b->key,
                     .ca_sig_alg = HSM_SIG_ECDSA_SHA256,
                     .cmp_cert = b->authority,
                     .cmp_key = b->key,
                     .cmp_sig_alg = HSM_SIG_ECDSA_SHA256,
                     .secrets = &b->secret,
                     .num_secrets = 1,
                     // Every request certifies the one key of the captured ir: the key-reuse
                     // rule (on by default) would refuse all but the first.
                     .policy = {.allow_key_reuse = true}};
    srv_params sp = {.hsm = b->pool,
                     .store = b->st,
                     .prot = b->prot,
                     .cas = &b->ca,
                     .num_cas = 1,
                     .message_time_window = 3600,
                     .confirm_wait_time = 300};
    return (cm_ok(srv_engine_new(&b->engine, &sp)) && cm_ok(cm_cq_init(&b->cq)) &&
            cm_ok(srv_worker_new(&b->worker, b->engine, &b->cq))) ||
           bench_fail("cannot start the engine");
}

static void bench_teardown(bench_ctx *b)
{
    srv_worker_free(b->worker);
    srv_engine_free(b->engine);
    cm_cq_cleanup(&b->cq);
    if (b->st != NULL) {
        store_close(b->st);
    }
    hsm_pool_free(b->pool);
    hsm_key_free(b->key);
    hsm_token_free(b->tok);
    ca_profile_free(b->profile);
    ca_authority_free(b->authority);
    cmp_protect_ctx_free(b->prot);
    test_token_destroy(&b->token);
    (void)test_rmtree(b->dir);
}

// bench_template gets one real ir from `openssl cmp` (its in-process mock answers it).
static bool bench_template(bench_ctx *b, uint8_t **out, size_t *out_len)
{
    char key[320], mk[320], mp[320], req[320], cout[320], log[320];
    test_path(key, sizeof(key), b->dir, "dev.key");
    test_path(mk, sizeof(mk), b->dir, "mock.key");
    test_path(mp, sizeof(mp), b->dir, "mock.pem");
    test_path(req, sizeof(req), b->dir, "ir.der");
    test_path(cout, sizeof(cout), b->dir, "out.pem");
    test_path(log, sizeof(log), b->dir, "openssl.log");
    const char *gen[] = {"openssl", "genpkey",  "-algorithm",
                         "EC",      "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-out",    key,        NULL};
    const char *mock[] = {
        "openssl", "req",     "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes",  "-keyout", mk,      "-out",    mp,   "-subj",    "/CN=mock",
        "-days",   "1",       NULL};
    const char *cmp[] = {"openssl",
                         "cmp",
                         "-cmd",
                         "ir",
                         "-use_mock_srv",
                         "-srv_ref",
                         "bench",
                         "-srv_secret",
                         "pass:" BENCH_SECRET,
                         "-srv_cert",
                         mp,
                         "-srv_key",
                         mk,
                         "-rsp_cert",
                         mp,
                         "-ref",
                         "bench",
                         "-secret",
                         "pass:" BENCH_SECRET,
                         "-newkey",
                         key,
                         "-subject",
                         "/CN=bench-device",
                         "-implicit_confirm",
                         "-mac", // SHA-1 is off by default; openssl's PBM MAC is HMAC-SHA1
                         "hmacWithSHA256",
                         "-reqout",
                         req,
                         "-certout",
                         cout,
                         "-disable_confirm",
                         NULL};
    if (test_run(gen, log) != 0 || test_run(mock, log) != 0) {
        return bench_fail("openssl failed");
    }
    (void)test_run(cmp, log);
    return test_read_file(req, out, out_len) || bench_fail("openssl cmp wrote no request");
}

// bench_requests re-stamps the template N times (fresh tid, nonce, time) and re-MACs it.
static uint8_t **bench_requests(bench_ctx *b, const uint8_t *tpl, size_t tpl_len, size_t n,
                                size_t **out_lens)
{
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    uint8_t **reqs = calloc(n, sizeof(uint8_t *));
    *out_lens = calloc(n, sizeof(size_t));
    cmp_mac_key key;
    if (reqs == NULL || *out_lens == NULL ||
        !cm_ok(cmp_msg_from_der(&a, &m, cm_span_make(tpl, tpl_len), NULL)) ||
        !cm_ok(cmp_mac_key_derive(b->prot, &key, m.header.protection_alg.whole,
                                  CM_SPAN_LIT(BENCH_SECRET), CMP_SECRET_PASSWORD))) {
        bench_fail("cannot parse the template request");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t tid[16], nonce[16];
        if (RAND_bytes(tid, 16) != 1 || RAND_bytes(nonce, 16) != 1) {
            exit(1);
        }
        cmp_header_fields h = m.header.f;
        h.transaction_id.v = cm_span_make(tid, 16);
        h.sender_nonce.v = cm_span_make(nonce, 16);
        h.message_time = cm_time_now();
        der_builder db;
        der_builder_init(&db, tpl_len + 64);
        cmp_msg_writer w;
        cmp_msg_writer_begin(&w, &db, &h, &m.body);
        uint8_t mac[64];
        size_t mac_len;
        if (!cm_ok(cmp_mac_compute(b->prot, mac, sizeof(mac), &mac_len, &key,
                                   cmp_msg_writer_protected_part(&w)))) {
            exit(1);
        }
        const cm_span prot = cm_span_make(mac, mac_len);
        cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
        if (!cm_ok(der_builder_take(&db, &reqs[i], &(*out_lens)[i]))) {
            exit(1);
        }
    }
    cmp_mac_key_cleanse(&key);
    cm_arena_cleanup(&a);
    return reqs;
}

int main(int argc, char **argv)
{
    const size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000;
    const size_t window = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
    const uint32_t sessions = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 2;
    if (n == 0 || window == 0 || sessions == 0) {
        fprintf(stderr, "usage: engine_bench [N] [window] [hsm_sessions]\n");
        return 2;
    }
    if (!cm_ok(cm_runtime_init())) {
        return 1;
    }
    cm_runtime_set_log_level(CM_LOG_WARN);
    bench_ctx b;
    memset(&b, 0, sizeof(b));
    uint8_t *tpl = NULL;
    size_t tpl_len = 0;
    if (!bench_setup(&b, sessions) || !bench_template(&b, &tpl, &tpl_len)) {
        bench_teardown(&b);
        return 1;
    }
    size_t *lens;
    uint8_t **reqs = bench_requests(&b, tpl, tpl_len, n, &lens);
    uint64_t *stage[SRV_STAGE_COUNT];
    for (int s = 0; s < SRV_STAGE_COUNT; s++) {
        stage[s] = calloc(n, sizeof(uint64_t));
    }
    size_t started = 0, done = 0, ok = 0, inflight = 0;
    const uint64_t allocs0 = atomic_load(&bench_allocs), thread_allocs0 = bench_allocs_thread;
    const uint64_t t0 = cm_time_mono_ns();
    while (done < n) {
        while (started < n && inflight < window) {
            srv_request *req = srv_request_new(b.worker, NULL);
            uint8_t *body = req != NULL ? srv_request_body(req, lens[started]) : NULL;
            if (body == NULL) {
                return 1;
            }
            memcpy(body, reqs[started], lens[started]);
            started++;
            inflight++;
            if (srv_request_start(req, &b.ca, cm_span_make(body, lens[started - 1]))) {
                srv_summary sum;
                srv_request_summary(req, &sum);
                ok += sum.fail_bit < 0;
                done++;
                inflight--;
                srv_request_free(req);
            }
        }
        (void)cm_cq_wait(&b.cq, 1000);
        for (cm_cq_node *nd = cm_cq_drain(&b.cq); nd != NULL;) {
            cm_cq_node *next = nd->next;
            srv_request *req = srv_worker_on_completion(b.worker, nd);
            if (req != NULL) {
                srv_summary sum;
                srv_request_summary(req, &sum);
                if (sum.fail_bit < 0) {
                    for (int s = 0; s < SRV_STAGE_COUNT; s++) {
                        stage[s][ok] = sum.stage_ns[s];
                    }
                    ok++;
                } else if (done - ok < 3) {
                    fprintf(stderr, "rejected: %s\n", cm_result_name(sum.error));
                }
                done++;
                inflight--;
                srv_request_free(req);
            }
            nd = next;
        }
    }
    const double secs = (double)(cm_time_mono_ns() - t0) / 1e9;
    const uint64_t allocs = atomic_load(&bench_allocs) - allocs0;
    const uint64_t thread_allocs = bench_allocs_thread - thread_allocs0;
    static const char *const k_names[SRV_STAGE_COUNT] = {"parse",
                                                         "verify (PBM, POPO, policy)",
                                                         "reserve + build TBS",
                                                         "HSM sign (incl. queue)",
                                                         "store (group commit)",
                                                         "respond (MAC)"};
    printf("engine_bench: %zu ir (PBM, EC P-256), %zu in flight, %u HSM session(s)\n", n, window,
           sessions);
    printf("enrolments/s: %.0f  (%zu ok of %zu, %.2f s)\n", (double)ok / secs, ok, n, secs);
    printf("%-30s %12s %8s\n", "stage", "median us", "share");
    uint64_t med[SRV_STAGE_COUNT], total = 0;
    for (int s = 0; s < SRV_STAGE_COUNT; s++) {
        qsort(stage[s], ok, sizeof(uint64_t), bench_cmp_u64);
        med[s] = ok > 0 ? stage[s][ok / 2] : 0;
        total += med[s];
    }
    for (int s = 0; s < SRV_STAGE_COUNT; s++) {
        printf("%-30s %12.1f %7.1f%%\n", k_names[s], (double)med[s] / 1000.0,
               total ? 100.0 * (double)med[s] / (double)total : 0.0);
        free(stage[s]);
    }
    printf("(HSM and store medians include queueing behind the %zu requests in flight)\n", window);
    if (BENCH_COUNT_ALLOCS) {
        printf("allocations per enrolment: %.1f on all threads, %.1f on the request thread\n",
               (double)allocs / (double)n, (double)thread_allocs / (double)n);
    } else {
        printf("allocations per enrolment: not counted (sanitizer build)\n");
        (void)allocs;
        (void)thread_allocs;
    }
    for (size_t i = 0; i < n; i++) {
        free(reqs[i]);
    }
    free(reqs);
    free(lens);
    free(tpl);
    bench_teardown(&b);
    return ok == n ? 0 : 1;
}
