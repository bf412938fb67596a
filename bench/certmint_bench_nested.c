// Nested batches (--flow nested, nested-confirm; RFC 9810 §5.1.3.4, RFC 9483 §5.2.2.2): an RA
// forwards --batch requests in one nested message signed with --ra-cert/--ra-key. The inner
// requests are prepared as single ones are (ir, PBM or signature protected, implicitConfirm
// for nested); each batch wraps --batch of them. Every inner answer is checked as a single
// answer is (bench_check_cmp) and counted as one transaction: rates are of enrolments. With
// nested-confirm the ips are followed on the same connection by one nested message carrying
// the certConf of each enrolment that succeeded, each protected like its ir, whose pkiconfs
// are checked the same way; the latency is then of both rounds.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "bench/certmint_bench.h"

void bench_nested_setup(bench_ctx *ctx)
{
    const bench_opts *o = ctx->o;
    FILE *f = fopen(o->ra_cert_path, "r");
    X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL) {
        (void)fclose(f);
    }
    unsigned char *der = NULL, *name = NULL;
    const int n = x != NULL ? i2d_X509(x, &der) : -1;
    const int nn = x != NULL ? i2d_X509_NAME(X509_get_subject_name(x), &name) : -1;
    X509_free(x);
    if (n <= 0 || nn <= 0) {
        bench_die("cannot read --ra-cert");
    }
    f = fopen(o->ra_key_path, "r");
    EVP_PKEY *key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f != NULL) {
        (void)fclose(f);
    }
    if (key == NULL) {
        bench_die("cannot read --ra-key");
    }
    ctx->ra_key_owned = key;
    ctx->ra.key = key;
    ctx->ra.alg = bench_sig_alg_for(key);
    ctx->ra.alg_der = bench_alg_der(&ctx->ra.alg);
    ctx->ra.cert = cm_span_make(der, (size_t)n);
    ctx->ra_sender = cm_span_make(name, (size_t)nn);
}

void bench_nested_cleanup(bench_ctx *ctx)
{
    for (size_t i = 0; i < ctx->num_batches; i++) {
        free(ctx->batches[i].http);
    }
    free(ctx->batches);
    EVP_PKEY_free(ctx->ra_key_owned);
    free((void *)(uintptr_t)ctx->ra.alg_der.p);
    OPENSSL_free((void *)(uintptr_t)ctx->ra.cert.p);
    OPENSSL_free((void *)(uintptr_t)ctx->ra_sender.p);
}

// bench_nested_wrap builds the nested message of the |n| PKIMessages |inner|: the RA as sender
// (its senderKID the RA certificate's SKI), transactionID |tid| and senderNonce |nonce|, signed
// by the RA. Returns its HTTP request (heap) or NULL.
static uint8_t *bench_nested_wrap(bench_ctx *ctx, crmf_crypto *crypto, cm_arena *arena,
                                  const cm_span *inner, size_t n, const uint8_t *tid,
                                  const uint8_t *nonce, size_t *out_len)
{
    cmp_header_fields h;
    bench_header_init(ctx, &h, ctx->ra_sender, ctx->ra.alg_der);
    uint8_t ski[64];
    const size_t ski_len = bench_cert_ski(ctx->ra.cert, ski, sizeof(ski));
    h.sender_kid = (cmp_opt_span){ski_len > 0, cm_span_make(ski, ski_len)};
    h.transaction_id = (cmp_opt_span){true, cm_span_make(tid, BENCH_NONCE_LEN)};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, BENCH_NONCE_LEN)};
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_NESTED;
    body.u.nested.ders = inner;
    body.u.nested.num = n;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += inner[i].len;
    }
    der_builder b;
    der_builder_init_arena(&b, arena, total + 4096);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cm_span der;
    if (!bench_protect_finish(ctx, crypto, arena, &w, NULL, &ctx->ra) ||
        !cm_ok(der_builder_finish(&b, &der))) {
        return NULL;
    }
    return bench_put_http(ctx->o, out_len, der);
}

void bench_nested_prepare(bench_ctx *ctx)
{
    const size_t batch = ctx->o->batch;
    ctx->num_batches = ctx->num_reqs / batch;
    ctx->batches = calloc(ctx->num_batches, sizeof(*ctx->batches));
    cm_span *inner = calloc(batch, sizeof(*inner));
    crmf_crypto crypto;
    cm_arena arena;
    cm_arena_init(&arena, 65536, 0);
    if (ctx->batches == NULL || inner == NULL || !cm_ok(crmf_crypto_init(&crypto, NULL, NULL))) {
        bench_die("out of memory");
    }
    for (size_t j = 0; j < ctx->num_batches; j++) {
        bench_batch *b = &ctx->batches[j];
        for (size_t i = 0; i < batch; i++) {
            const bench_req *rq = &ctx->reqs[j * batch + i];
            inner[i] = cm_span_make(rq->inner, rq->inner_len);
        }
        cm_arena_reset(&arena);
        if (RAND_bytes(b->tid, sizeof(b->tid)) != 1 ||
            RAND_bytes(b->nonce, sizeof(b->nonce)) != 1 ||
            (b->http = bench_nested_wrap(ctx, &crypto, &arena, inner, batch, b->tid, b->nonce,
                                         &b->http_len)) == NULL) {
            bench_die("cannot build a nested message");
        }
    }
    crmf_crypto_cleanup(&crypto);
    cm_arena_cleanup(&arena);
    free(inner);
}

// bench_nested_conf builds the certConf of request |k| for its ip |ip| into |*out| (in
// run->arena): certHash, certReqId 0, a fresh senderNonce, recipNonce the ip's senderNonce,
// the request's transactionID, protected like the request (its PBM key, or its signer).
static bool bench_nested_conf(bench_run *run, size_t k, const cmp_msg *ip, cm_span *out)
{
    bench_ctx *ctx = run->ctx;
    bench_req *rq = &ctx->reqs[k];
    const cm_span cert = ip->body.u.rep.responses[0].cert;
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len;
    if (!cm_ok(cmp_cert_hash(&run->digests, hash, &hash_len, cert, NULL)) ||
        !ip->header.f.sender_nonce.present ||
        ip->header.f.sender_nonce.v.len != sizeof(rq->ip_nonce) ||
        RAND_bytes(rq->conf_nonce, sizeof(rq->conf_nonce)) != 1) {
        return false;
    }
    memcpy(rq->ip_nonce, ip->header.f.sender_nonce.v.p, sizeof(rq->ip_nonce));
    cmp_cert_status cs;
    memset(&cs, 0, sizeof(cs));
    cs.cert_hash = cm_span_make(hash, hash_len);
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_CERT_CONF;
    body.u.conf.items = &cs;
    body.u.conf.num = 1;
    cmp_mac_key *mac = ctx->macs != NULL ? &ctx->macs[k] : NULL;
    cm_span prot_alg = ctx->prot_alg_der;
    if (mac != NULL) {
        der_builder pb;
        der_builder_init_arena(&pb, &run->arena, 128);
        if (!cm_ok(cmp_mac_key_renew_nonce(mac))) { // AES-GMAC: not the ir's nonce
            return false;
        }
        cmp_mac_key_put_alg(&pb, mac);
        if (!cm_ok(der_builder_finish(&pb, &prot_alg))) {
            return false;
        }
    }
    cmp_header_fields h;
    bench_header_init(ctx, &h, cm_span_make(rq->sender, rq->sender_len), prot_alg);
    h.transaction_id = (cmp_opt_span){true, cm_span_make(rq->tid, sizeof(rq->tid))};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(rq->conf_nonce, sizeof(rq->conf_nonce))};
    h.recip_nonce = (cmp_opt_span){true, cm_span_make(rq->ip_nonce, sizeof(rq->ip_nonce))};
    der_builder b;
    der_builder_init_arena(&b, &run->arena, 1024);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    const bench_signer signer = bench_default_signer(ctx);
    return bench_protect_finish(ctx, &run->crypto, &run->arena, &w, mac, &signer) &&
           cm_ok(der_builder_finish(&b, out));
}

// bench_nested_expect is what inner answer |i| of |c|'s batch must match.
static bench_expect bench_nested_expect(const bench_run *run, const bench_conn *c, size_t k)
{
    const bench_req *rq = &run->ctx->reqs[k];
    bench_expect e;
    memset(&e, 0, sizeof(e));
    e.transaction_id = cm_span_make(rq->tid, sizeof(rq->tid));
    if (c->phase == 0) {
        e.sender_nonce = cm_span_make(rq->nonce, sizeof(rq->nonce));
        e.body = CMP_BODY_IP;
        if (!run->o->no_key_check) {
            const bench_key *key = &run->ctx->keys[rq->key];
            e.spki = cm_span_make(key->spki, key->spki_len);
        }
    } else {
        e.sender_nonce = cm_span_make(rq->conf_nonce, sizeof(rq->conf_nonce));
        e.body = CMP_BODY_PKICONF;
    }
    return e;
}

void bench_nested_on_response(bench_run *run, bench_conn *c, const bench_http_rsp *h)
{
    bench_ctx *ctx = run->ctx;
    const size_t batch = run->o->batch;
    bench_fail fs[CMP_MAX_NESTED_LIMIT];
    // Phase 1 answers only the requests whose certConf went out (fs[i] != BENCH_OK for the
    // others already, from phase 0).
    size_t idx[CMP_MAX_NESTED_LIMIT];
    size_t num = 0;
    if (c->phase == 0) {
        for (size_t i = 0; i < batch; i++) {
            fs[i] = BENCH_OK;
            idx[num++] = i;
        }
    } else {
        memcpy(fs, c->nested_fails, batch * sizeof(fs[0]));
        for (size_t i = 0; i < batch; i++) {
            if (fs[i] == BENCH_OK) {
                idx[num++] = i;
            }
        }
    }
    cm_arena_reset(&run->arena);
    bench_expect oe;
    memset(&oe, 0, sizeof(oe));
    const bench_batch *b = &ctx->batches[c->req / batch];
    oe.transaction_id = cm_span_make(c->phase == 0 ? b->tid : c->conf_tid, BENCH_NONCE_LEN);
    oe.sender_nonce = cm_span_make(c->phase == 0 ? b->nonce : c->conf_nonce, BENCH_NONCE_LEN);
    cmp_msg outer;
    cm_span confs_of[CMP_MAX_NESTED_LIMIT]; // nested-confirm: the certConf of inner request i
    bench_fail of = bench_check_http(h);
    if (of == BENCH_OK) {
        of = bench_check_nested(&run->arena, &outer, &oe, h->body, num);
    }
    c->used++;
    for (size_t j = 0; j < num; j++) {
        const size_t i = idx[j];
        if (of != BENCH_OK) {
            fs[i] = of;
            continue;
        }
        const size_t k = c->req + i;
        const bench_expect e = bench_nested_expect(run, c, k);
        cmp_msg m;
        const cm_span der = outer.body.u.nested.ders[j];
        fs[i] = bench_check_cmp(&run->arena, &m, &e, der);
        if (fs[i] != BENCH_OK) {
            continue;
        }
        if (c->phase == 0 && run->serials != NULL && m.body.type == CMP_BODY_IP) {
            bench_save_serial(run, m.body.u.rep.responses[0].cert);
        }
        if (c->phase == 0 && run->rsp != NULL) {
            bench_keep(&run->rsp[k], &run->rsp_len[k], der);
        }
        if (c->phase == 1 && run->conf_rsp != NULL) {
            bench_keep(&run->conf_rsp[k], &run->conf_rsp_len[k], der);
        }
        if (c->phase == 0 && ctx->flow == BENCH_FLOW_NESTED_CONFIRM) {
            // The certConf of this enrolment joins the next nested message.
            cm_span conf;
            if (!bench_nested_conf(run, k, &m, &conf)) {
                bench_die("cannot build a certConf");
            }
            confs_of[i] = conf;
        }
    }
    if (of != BENCH_OK || c->phase == 1 || ctx->flow != BENCH_FLOW_NESTED_CONFIRM) {
        bench_finish_n(run, c, fs, batch, of == BENCH_OK && h->keep_alive);
        return;
    }
    // nested-confirm: the certConfs of the enrolments that succeeded, in one nested message.
    cm_span confs[CMP_MAX_NESTED_LIMIT];
    size_t num_confs = 0;
    for (size_t i = 0; i < batch; i++) {
        if (fs[i] == BENCH_OK) {
            confs[num_confs++] = confs_of[i];
        }
    }
    if (num_confs == 0) {
        bench_finish_n(run, c, fs, batch, h->keep_alive);
        return;
    }
    if (c->nested_fails == NULL && (c->nested_fails = calloc(batch, sizeof(fs[0]))) == NULL) {
        bench_die("out of memory");
    }
    memcpy(c->nested_fails, fs, batch * sizeof(fs[0]));
    if (RAND_bytes(c->conf_tid, sizeof(c->conf_tid)) != 1 ||
        RAND_bytes(c->conf_nonce, sizeof(c->conf_nonce)) != 1) {
        bench_die("RAND_bytes failed");
    }
    free(c->conf);
    c->conf = bench_nested_wrap(ctx, &run->crypto, &run->arena, confs, num_confs, c->conf_tid,
                                c->conf_nonce, &c->conf_len);
    if (c->conf == NULL) {
        bench_die("cannot build a nested certConf");
    }
    if (!h->keep_alive) {
        bench_conn_close(c);
    }
    c->phase = 1;
    c->retried = false;
    c->out = c->conf;
    c->out_len = c->conf_len;
    bench_conn_transmit(run, c);
}
