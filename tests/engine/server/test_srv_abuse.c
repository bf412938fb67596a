// Suite "srv_abuse": what unauthenticated senders may cost and how resends are answered
// (issue 23), driven in process like suite "srv_conform" (a throwaway SoftHSM token, a real
// SQLite store, requests built by tests/support/test_hand): the KDF pool (PBM and PBMAC1
// verified off the calling thread, a full queue refused with systemUnavail), the MAC-failure
// back-off per senderKID and per peer address with the good-pair exemption, the
// error-signature budget per peer, and the retransmission cache. The budgets and the cache are
// also tested directly with their own clock.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <openssl/cmp.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/server/srv.h"
#include "engine/server/srv_internal.h"
#include "tests/support/test_hand.h"
#include "tests/support/test_support.h"

#define SECRET_REF  "line-7"
#define SECRET      "factory-secret"
#define SECRET2_REF "line-8"
#define SECRET2     "other-secret"
#define SECRET3_REF "line-9"
#define SECRET3     "third-secret"
#define BACKOFF_S   1u // mac_failure_backoff of the fixture's engine
#define FAILS_MAX   3u // mac_failures_max
#define ERR_SIGS    2u // error_signatures_per_peer

static struct {
    char dir[256];
    char log[320];
    test_token token;
    hsm_token *tok;
    hsm_key *ca_key;
    hsm_pool *pool;
    store *st;
    cmp_protect_ctx *prot;
    cmp_protect_ctx *prot_big; // PBMAC1 up to 400000 iterations (the KDF queue test)
    ca_authority *authority;
    ca_profile *profile;
    srv_secret secrets[3];
    srv_ca ca;
    srv_engine *engine;
    cm_cq cq;
    srv_worker *worker;
    EVP_PKEY *key;
    uint8_t next_peer; // each test its own addresses
} g;

// --- fixture --------------------------------------------------------------------------------

static bool make_root(const char *pem_path)
{
    return test_hand_make_root(NULL, g.pool, g.ca_key, "certmint abuse root", 0x3003, pem_path);
}

// engine_params is the fixture engine's: every limit on, small enough to reach in a test.
static srv_params engine_params(void)
{
    srv_params sp = {.hsm = g.pool,
                     .store = g.st,
                     .prot = g.prot,
                     .cas = &g.ca,
                     .num_cas = 1,
                     .message_time_window = 600,
                     .confirm_wait_time = 300,
                     .kdf_threads = 1,
                     .kdf_max_queue = 16,
                     .mac_failures_max = FAILS_MAX,
                     .mac_failure_window = 60,
                     .mac_failure_backoff = BACKOFF_S,
                     .error_signatures_per_peer = ERR_SIGS,
                     .retransmit_window = SRV_RETRANSMIT_AUTO};
    return sp;
}

static int abuse_init(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "srvabuse") ||
        !test_token_create(&g.token, "srv-abuse")) {
        return 1;
    }
    test_path(g.log, sizeof(g.log), g.dir, "openssl.log");
    char uri[512];
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=%s?module-path=%s&pin-value=%s", g.token.label,
                   g.token.module, g.token.user_pin);
    hsm_error err;
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = 2;
    if (!cm_ok(hsm_token_open(&g.tok, &err, uri)) ||
        !cm_ok(hsm_key_generate(g.tok, &g.ca_key, &err, HSM_KEYGEN_EC_P256, "ca",
                                CM_SPAN_LIT("\x01"))) ||
        !cm_ok(hsm_pool_new(&g.pool, g.tok, &po))) {
        fprintf(stderr, "hsm: %s\n", err.msg);
        return 1;
    }
    char ca_pem[320], key_path[320], db[400], err_s[256];
    test_path(ca_pem, sizeof(ca_pem), g.dir, "ca.pem");
    test_path(key_path, sizeof(key_path), g.dir, "dev.key");
    if (!make_root(ca_pem) || !test_pki_make_key(key_path, TEST_PKI_EC_P256, g.log) ||
        (g.key = test_pki_read_key(key_path)) == NULL) {
        return 1;
    }
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim, big;
    cmp_protect_limits_default(&lim);
    cmp_protect_limits_default(&big);
    big.pbmac1_max_iterations = 400000;
    if (!cm_ok(store_open(&g.st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot, NULL, NULL, &lim)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot_big, NULL, NULL, &big)) ||
        !cm_ok(ca_authority_load(&g.authority, err_s, sizeof(err_s), ca_pem, NULL))) {
        fprintf(stderr, "setup: %s\n", err_s);
        return 1;
    }
    static const char conf_text[] = "[ext]\nbasicConstraints = critical, CA:FALSE\n"
                                    "keyUsage = critical, digitalSignature\n";
    CONF *conf = NCONF_new(NULL);
    BIO *bio = BIO_new_mem_buf(conf_text, (int)sizeof(conf_text) - 1);
    long line;
    const bool conf_ok = conf != NULL && bio != NULL && NCONF_load_bio(conf, bio, &line) == 1;
    BIO_free(bio);
    ca_profile_params pp = {.name = "devices",
                            .default_days = 30,
                            .max_days = 30,
                            .key_types = CA_KEY_EC_P256,
                            .rsa_min_bits = 2048,
                            .rsa_max_bits = 4096,
                            .subject_mode = CA_SUBJECT_COPY,
                            .implicit_confirm = true};
    const bool prof_ok =
        conf_ok && cm_ok(ca_profile_new(&g.profile, err_s, sizeof(err_s), &pp, conf, "ext"));
    NCONF_free(conf);
    if (!prof_ok) {
        fprintf(stderr, "profile: %s\n", err_s);
        return 1;
    }
    g.secrets[0].ref = CM_SPAN_LIT(SECRET_REF);
    g.secrets[0].secret = CM_SPAN_LIT(SECRET);
    g.secrets[1].ref = CM_SPAN_LIT(SECRET2_REF);
    g.secrets[1].secret = CM_SPAN_LIT(SECRET2);
    g.secrets[2].ref = CM_SPAN_LIT(SECRET3_REF);
    g.secrets[2].secret = CM_SPAN_LIT(SECRET3);
    g.ca = (srv_ca){.name = "devices",
                    .authority = g.authority,
                    .profile = g.profile,
                    .ca_key = g.ca_key,
                    .ca_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .cmp_cert = g.authority,
                    .cmp_key = g.ca_key,
                    .cmp_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .secrets = g.secrets,
                    .num_secrets = 3,
                    .policy = {.allow_key_reuse = true}, // one device key for every request
                    .crl_validity = 86400};
    return cm_ok(cm_cq_init(&g.cq)) ? 0 : 1;
}

// Each test gets an engine of its own: the budgets remember what earlier tests did.
static void abuse_setup(void)
{
    const srv_params sp = engine_params();
    g.engine = NULL;
    g.worker = NULL;
    if (!cm_ok(srv_engine_new(&g.engine, &sp)) ||
        !cm_ok(srv_worker_new(&g.worker, g.engine, &g.cq))) {
        fprintf(stderr, "abuse: cannot build the engine\n");
    }
}

static void abuse_teardown(void)
{
    srv_worker_free(g.worker);
    srv_engine_free(g.engine);
    g.worker = NULL;
    g.engine = NULL;
}

static int abuse_cleanup(void)
{
    cm_cq_cleanup(&g.cq);
    store_close(g.st);
    hsm_pool_free(g.pool);
    hsm_key_free(g.ca_key);
    hsm_token_free(g.tok);
    ca_profile_free(g.profile);
    ca_authority_free(g.authority);
    cmp_protect_ctx_free(g.prot);
    cmp_protect_ctx_free(g.prot_big);
    EVP_PKEY_free(g.key);
    test_token_destroy(&g.token);
    (void)test_rmtree(g.dir);
    return 0;
}

// --- helpers ---------------------------------------------------------------------------------

// peer_v4 writes the peer key of 198.51.100.|n| (IPv4-mapped IPv6, as the fronts make it).
static void peer_v4(uint8_t out[SRV_PEER_KEY_LEN], uint8_t n)
{
    memset(out, 0, SRV_PEER_KEY_LEN);
    out[10] = out[11] = 0xff;
    out[12] = 198;
    out[13] = 51;
    out[14] = 100;
    out[15] = n;
}

// new_peer is a peer address no earlier test used.
static void new_peer(uint8_t out[SRV_PEER_KEY_LEN])
{
    peer_v4(out, ++g.next_peer);
}

// An ir (or another body) from |ref| with |secret|, PBM unless |pbmac1|.
static void hand_ir(test_hand *x, const char *ref, const char *secret, bool pbmac1)
{
    test_hand_init(x, CMP_BODY_IR, g.prot, ca_authority_subject(g.authority),
                   cm_span_make(ref, strlen(ref)), secret);
    x->pbmac1 = pbmac1;
    TEST_ASSERT_OK(test_hand_template(x, g.key, "/CN=abuse-device"));
}

static uint8_t *hand_build(test_hand *x, size_t *out_len)
{
    uint8_t *out = NULL;
    TEST_ASSERT_OK(test_hand_build(x, &out, out_len));
    return out;
}

typedef struct rsp {
    srv_request *req;
    bool sync; // srv_request_start answered at once
    cm_arena arena;
    cmp_msg msg;
    srv_summary sum;
    cm_span der;
} rsp;

// finish_rsp waits for |out->req| on |w|'s queue |cq| and parses its response.
static void finish_rsp(rsp *out, srv_worker *w, cm_cq *cq)
{
    for (int i = 0; i < 3000 && srv_request_response(out->req).len == 0; i++) {
        (void)cm_cq_wait(cq, 10);
        for (cm_cq_node *n = cm_cq_drain(cq); n != NULL;) {
            cm_cq_node *next = n->next;
            (void)srv_worker_on_completion(w, n);
            n = next;
        }
    }
    out->der = srv_request_response(out->req);
    CU_ASSERT_FATAL(out->der.len > 0);
    cm_arena_init(&out->arena, 0, 0);
    CU_ASSERT_TRUE_FATAL(cm_ok(cmp_msg_from_der(&out->arena, &out->msg, out->der, NULL)));
    srv_request_summary(out->req, &out->sum);
}

// start_on starts |der| from |peer| on worker |w| without waiting.
static void start_on(rsp *out, srv_worker *w, const uint8_t *peer, const uint8_t *der, size_t len)
{
    memset(out, 0, sizeof(*out));
    out->req = srv_request_new(w, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->req);
    uint8_t *body = srv_request_body(out->req, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memcpy(body, der, len);
    srv_request_set_peer(out->req, peer);
    out->sync = srv_request_start(out->req, &g.ca, cm_span_make(body, len));
}

// process runs |der| from |peer| to its answer on the fixture's engine.
static void process(rsp *out, const uint8_t *peer, const uint8_t *der, size_t len)
{
    start_on(out, g.worker, peer, der, len);
    finish_rsp(out, g.worker, &g.cq);
}

static void rsp_free(rsp *r)
{
    cm_arena_cleanup(&r->arena);
    srv_request_free(r->req);
}

// run_hand builds |x|, processes it from |peer| and frees the DER.
static void run_hand(rsp *out, test_hand *x, const uint8_t *peer)
{
    size_t len = 0;
    uint8_t *der = hand_build(x, &len);
    process(out, peer, der, len);
    free(der);
}

// status_of returns the PKIStatusInfo of an error or of an ip's one CertResponse.
static const cmp_status_info *status_of(const rsp *r)
{
    const cmp_body *b = &r->msg.body;
    if (b->type == CMP_BODY_ERROR) {
        return &b->u.error.status;
    }
    if (b->type == CMP_BODY_IP && b->u.rep.num_responses == 1) {
        return &b->u.rep.responses[0].status;
    }
    return NULL;
}

// text_of writes the statusString's first UTF8String into |buf|.
static const char *text_of(const rsp *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    const cmp_status_info *st = status_of(r);
    der_reader rd, seq;
    cm_span s;
    if (st == NULL) {
        return buf;
    }
    der_reader_init(&rd, st->status_string);
    if (cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) &&
        cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &s)) && s.len < cap) {
        memcpy(buf, s.p, s.len);
        buf[s.len] = '\0';
    }
    return buf;
}

// accepted reports whether |r| is an ip with an accepted certificate.
static bool accepted(const rsp *r)
{
    const cmp_status_info *st = status_of(r);
    const bool ok = r->msg.body.type == CMP_BODY_IP && st != NULL &&
                    st->status == CMP_STATUS_ACCEPTED &&
                    r->msg.body.u.rep.responses[0].has_certified_key_pair;
    if (!ok) {
        fprintf(stderr, "\n  not accepted: %s \"%s\"\n", cm_result_name(r->sum.error),
                r->sum.reason);
    }
    return ok;
}

// refused_with reports whether |r| is an error with code |code| whose statusString contains
// |text|.
static bool refused_with(const rsp *r, uint32_t code, const char *text)
{
    char got[256];
    text_of(r, got, sizeof(got));
    const bool ok = r->msg.body.type == CMP_BODY_ERROR && r->sum.error.code == code &&
                    strstr(got, text) != NULL;
    if (!ok) {
        fprintf(stderr, "\n  got body %d %s \"%s\", want %s \"...%s...\"\n", (int)r->msg.body.type,
                cm_result_name(r->sum.error), got, cm_result_name(cm_result_make(code)), text);
    }
    return ok;
}

static srv_engine_stats stats(void)
{
    srv_engine_stats s;
    srv_engine_get_stats(g.engine, &s);
    return s;
}

// cert_count is the number of certificates in the fixture's store.
static uint64_t cert_count(void)
{
    store_reader *rd = NULL;
    uint64_t n = 0;
    const store_filter f = {.status = STORE_CERT_ANY};
    TEST_ASSERT_OK(store_reader_open(g.st, &rd));
    TEST_ASSERT_OK(store_cert_count(rd, &f, &n));
    store_reader_close(rd);
    return n;
}

// send_ir sends a fresh ir from |ref|/|secret| and |peer| and returns its response.
static void send_ir(rsp *out, const char *ref, const char *secret, const uint8_t *peer)
{
    test_hand x;
    hand_ir(&x, ref, secret, false);
    run_hand(out, &x, peer);
    test_hand_free(&x);
}

// --- the KDF pool ------------------------------------------------------------------------------

// A MAC-protected genm (answered MAC-protected, so nothing else leaves the thread): without a
// KDF pool srv_request_start would answer it at once; with one the PBM and the PBMAC1 key
// derivations go to the pool and the answer comes through the worker's queue. A wrong MAC comes
// back refused from the pool with its reason.
static void test_abuse_kdf_off_the_calling_thread(void)
{
    uint8_t peer[SRV_PEER_KEY_LEN];
    new_peer(peer);
    for (int pbmac1 = 0; pbmac1 < 2; pbmac1++) {
        const srv_engine_stats s0 = stats();
        test_hand x;
        test_hand_init(&x, CMP_BODY_GENM, g.prot, ca_authority_subject(g.authority),
                       CM_SPAN_LIT(SECRET_REF), SECRET);
        x.pbmac1 = pbmac1 != 0;
        size_t len;
        uint8_t *der = hand_build(&x, &len);
        rsp r;
        start_on(&r, g.worker, peer, der, len);
        CU_ASSERT_FALSE(r.sync); // the derivation is with the pool
        finish_rsp(&r, g.worker, &g.cq);
        CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_GENP);
        CU_ASSERT_EQUAL(r.sum.fail_bit, -1);
        CU_ASSERT_EQUAL(stats().kdf_done - s0.kdf_done, 1);
        rsp_free(&r);
        free(der);
        test_hand_free(&x);
        // The same with a wrong secret: badMessageCheck, the MAC's reason, counted.
        test_hand_init(&x, CMP_BODY_GENM, g.prot, ca_authority_subject(g.authority),
                       CM_SPAN_LIT(SECRET_REF), "wrong");
        x.pbmac1 = pbmac1 != 0;
        der = hand_build(&x, &len);
        process(&r, peer, der, len);
        CU_ASSERT_TRUE(refused_with(&r, CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
        CU_ASSERT_TRUE(r.sum.mac_failed);
        CU_ASSERT_EQUAL(stats().kdf_done - s0.kdf_done, 2);
        rsp_free(&r);
        free(der);
        test_hand_free(&x);
    }
    // A key-based MAC would stay inline; a signature never goes to the pool; and an unknown
    // senderKID costs no derivation at all.
    const srv_engine_stats s0 = stats();
    rsp r;
    send_ir(&r, "nobody", SECRET, peer);
    CU_ASSERT_TRUE(refused_with(&r, SRV_E_UNKNOWN_SENDER, "no MAC secret for senderKID nobody"));
    CU_ASSERT_EQUAL(stats().kdf_done, s0.kdf_done);
    rsp_free(&r);
}

// The pool itself: with its one worker busy on a long PBMAC1 derivation and one job waiting
// (max_queue 1), the next submission is refused with SRV_E_KDF_BUSY and stays the caller's;
// the two accepted ones complete through the queue, the right one verified and the wrong one
// refused.
static void test_abuse_kdf_pool_queue_bound(void)
{
    srv_kdf_pool *p = NULL;
    TEST_ASSERT_OK(srv_kdf_pool_new(&p, 1, 1));
    CU_ASSERT_EQUAL(srv_kdf_pool_new(&(srv_kdf_pool *){NULL}, 0, 1).code, CM_E_INVALID_ARG);
    test_hand x;
    test_hand_init(&x, CMP_BODY_GENM, g.prot_big, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(SECRET_REF), SECRET);
    x.pbmac1 = true;
    x.mac_iterations = 300000; // tens of ms: the worker is busy while we submit
    size_t len;
    uint8_t *der = hand_build(&x, &len);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &m, cm_span_make(der, len), NULL));
    cmp_mac_key keys[3];
    srv_kdf_job jobs[3];
    memset(jobs, 0, sizeof(jobs));
    memset(keys, 0, sizeof(keys));
    for (int i = 0; i < 3; i++) {
        jobs[i].cq = &g.cq;
        jobs[i].prot = g.prot_big;
        jobs[i].key = &keys[i];
        jobs[i].alg = m.header.protection_alg.whole;
        jobs[i].secret = i == 1 ? CM_SPAN_LIT("wrong") : CM_SPAN_LIT(SECRET);
        jobs[i].kind = CMP_SECRET_PASSWORD;
        jobs[i].protected_part = m.protected_part;
        jobs[i].protection = m.protection;
        jobs[i].unused_bits = m.protection_unused;
    }
    TEST_ASSERT_OK(srv_kdf_pool_submit(p, &jobs[0]));
    for (int i = 0; i < 5000 && srv_kdf_pool_depth(p) != 0; i++) {
        usleep(1000); // until the worker has taken job 0 (not a fixed time: loaded machines)
    }
    TEST_ASSERT_OK(srv_kdf_pool_submit(p, &jobs[1]));
    CU_ASSERT_EQUAL(srv_kdf_pool_depth(p), 1);
    CU_ASSERT_EQUAL(srv_kdf_pool_submit(p, &jobs[2]).code, SRV_E_KDF_BUSY);
    size_t back = 0;
    for (int i = 0; i < 3000 && back < 2; i++) {
        (void)cm_cq_wait(&g.cq, 10);
        for (cm_cq_node *n = cm_cq_drain(&g.cq); n != NULL; n = n->next) {
            CU_ASSERT_EQUAL(n->kind, CM_CQ_KIND_KDF_JOB);
            CU_ASSERT_TRUE(n == &jobs[0].node || n == &jobs[1].node);
            back++;
        }
    }
    CU_ASSERT_EQUAL(back, 2);
    CU_ASSERT_TRUE(cm_ok(jobs[0].result));
    CU_ASSERT_EQUAL(jobs[1].result.code, CMP_E_PROT_MAC_MISMATCH);
    CU_ASSERT_TRUE(cm_why_is_set(&jobs[1].why));
    CU_ASSERT_EQUAL(srv_kdf_pool_done(p), 2);
    srv_kdf_pool_free(p);
    for (int i = 0; i < 3; i++) {
        cmp_mac_key_cleanse(&keys[i]);
    }
    cm_arena_cleanup(&a);
    free(der);
    test_hand_free(&x);
}

// Through the engine: a second engine whose KDF queue holds one request. While its worker
// derives a long PBMAC1 key and one request waits, the next MAC-protected request is refused
// with systemUnavail and a reason, without derivation, and counted; the others are answered.
static void test_abuse_kdf_queue_full_refused(void)
{
    srv_params sp = engine_params();
    sp.prot = g.prot_big;
    sp.kdf_max_queue = 1;
    srv_engine *e = NULL;
    srv_worker *w = NULL;
    cm_cq cq;
    TEST_ASSERT_OK(cm_cq_init(&cq));
    TEST_ASSERT_OK(srv_engine_new(&e, &sp));
    TEST_ASSERT_OK(srv_worker_new(&w, e, &cq));
    uint8_t peer[SRV_PEER_KEY_LEN];
    new_peer(peer);
    test_hand x;
    test_hand_init(&x, CMP_BODY_GENM, g.prot_big, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(SECRET_REF), SECRET);
    x.pbmac1 = true;
    x.mac_iterations = 300000;
    size_t len;
    uint8_t *der = hand_build(&x, &len);
    rsp r[3];
    start_on(&r[0], w, peer, der, len);
    srv_engine_stats es;
    srv_engine_get_stats(e, &es);
    for (int i = 0; i < 5000 && es.kdf_queued != 0; i++) {
        usleep(1000); // until the KDF thread has taken r[0]
        srv_engine_get_stats(e, &es);
    }
    start_on(&r[1], w, peer, der, len);
    start_on(&r[2], w, peer, der, len);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_FALSE(r[i].sync);
        finish_rsp(&r[i], w, &cq);
    }
    CU_ASSERT_EQUAL(r[0].msg.body.type, CMP_BODY_GENP);
    CU_ASSERT_EQUAL(r[1].msg.body.type, CMP_BODY_GENP);
    CU_ASSERT_TRUE(refused_with(&r[2], SRV_E_KDF_BUSY, "busy checking password-based MACs"));
    CU_ASSERT_EQUAL(r[2].sum.fail_bit, CM_FAIL_SYSTEM_UNAVAIL);
    CU_ASSERT_FALSE(r[2].sum.mac_failed);
    srv_engine_get_stats(e, &es);
    CU_ASSERT_EQUAL(es.kdf_refused, 1);
    CU_ASSERT_EQUAL(es.kdf_done, 2);
    for (int i = 0; i < 3; i++) {
        rsp_free(&r[i]);
    }
    free(der);
    test_hand_free(&x);
    srv_worker_free(w);
    srv_engine_free(e);
    cm_cq_cleanup(&cq);
}

// kdf_inline: a PBM genm from an address that has not proven the secret goes to the pool; once
// it has, the next one is verified on the calling thread (answered at once, counted inline,
// nothing derived by the pool). A wrong MAC from it is still checked there once and ends its
// standing: its next request goes to the pool. While other work waits on the calling thread, or
// a check waits for the pool's one thread, a good address's request goes to the pool too, and
// so does every request without kdf_inline (the fixture's engine:
// test_abuse_kdf_off_the_calling_thread).
static bool test_busy(void *arg)
{
    return *(const bool *)arg;
}

static void test_abuse_kdf_inline_for_good_addresses(void)
{
    srv_params sp = engine_params();
    sp.prot = g.prot_big;
    sp.kdf_inline = true;
    srv_engine *e = NULL;
    srv_worker *w = NULL;
    cm_cq cq;
    TEST_ASSERT_OK(cm_cq_init(&cq));
    TEST_ASSERT_OK(srv_engine_new(&e, &sp));
    TEST_ASSERT_OK(srv_worker_new(&w, e, &cq));
    uint8_t device[SRV_PEER_KEY_LEN], busy[SRV_PEER_KEY_LEN];
    new_peer(device);
    new_peer(busy);
    test_hand good, bad, slow;
    test_hand_init(&good, CMP_BODY_GENM, g.prot_big, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(SECRET_REF), SECRET);
    test_hand_init(&bad, CMP_BODY_GENM, g.prot_big, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(SECRET_REF), "wrong");
    test_hand_init(&slow, CMP_BODY_GENM, g.prot_big, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(SECRET2_REF), SECRET2);
    slow.pbmac1 = true;
    slow.mac_iterations = 300000;
    size_t glen, blen, slen;
    uint8_t *gder = hand_build(&good, &glen);
    uint8_t *bder = hand_build(&bad, &blen);
    uint8_t *sder = hand_build(&slow, &slen);
    srv_engine_stats es;
    // (sync expected, pool jobs done, inline checks, refused) after each step.
    static const struct {
        bool wrong, sync;
        uint64_t done, in;
    } k_steps[] = {
        {false, false, 1, 0}, // not yet a good address: the pool
        {false, true, 1, 1},  // good now: inline
        {false, true, 1, 2},
        {true, false, 1, 3},  // a wrong MAC from it: checked inline once (its error is signed)
        {false, false, 2, 3}, // its standing is gone: the pool
        {false, true, 2, 4},  // and back once it proved the secret again
    };
    for (size_t i = 0; i < sizeof(k_steps) / sizeof(k_steps[0]); i++) {
        rsp r;
        start_on(&r, w, device, k_steps[i].wrong ? bder : gder, k_steps[i].wrong ? blen : glen);
        CU_ASSERT_EQUAL(r.sync, k_steps[i].sync);
        finish_rsp(&r, w, &cq);
        if (k_steps[i].wrong) {
            CU_ASSERT_TRUE(refused_with(&r, CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
        } else {
            CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_GENP);
        }
        srv_engine_get_stats(e, &es);
        CU_ASSERT_EQUAL(es.kdf_done, k_steps[i].done);
        CU_ASSERT_EQUAL(es.kdf_inline, k_steps[i].in);
        rsp_free(&r);
    }
    // Other work waiting on the calling thread (an I/O loop's net_loop_busy): the pool.
    bool loop_busy = true;
    srv_worker_set_busy(w, test_busy, &loop_busy);
    rsp rb;
    start_on(&rb, w, device, gder, glen);
    CU_ASSERT_FALSE(rb.sync);
    finish_rsp(&rb, w, &cq);
    CU_ASSERT_EQUAL(rb.msg.body.type, CMP_BODY_GENP);
    rsp_free(&rb);
    srv_engine_get_stats(e, &es);
    CU_ASSERT_EQUAL(es.kdf_done, 3);
    CU_ASSERT_EQUAL(es.kdf_inline, 4);
    loop_busy = false;
    // The pool's thread on one slow check and another waiting: the good address waits its turn.
    rsp r[3];
    start_on(&r[0], w, busy, sder, slen);
    srv_engine_get_stats(e, &es);
    for (int i = 0; i < 5000 && es.kdf_queued != 0; i++) {
        usleep(1000); // until the KDF thread has taken r[0]
        srv_engine_get_stats(e, &es);
    }
    start_on(&r[1], w, busy, sder, slen);
    start_on(&r[2], w, device, gder, glen);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_FALSE(r[i].sync);
        finish_rsp(&r[i], w, &cq);
        CU_ASSERT_EQUAL(r[i].msg.body.type, CMP_BODY_GENP);
        rsp_free(&r[i]);
    }
    srv_engine_get_stats(e, &es);
    CU_ASSERT_EQUAL(es.kdf_done, 6);
    CU_ASSERT_EQUAL(es.kdf_inline, 4);
    free(gder);
    free(bder);
    free(sder);
    test_hand_free(&good);
    test_hand_free(&bad);
    test_hand_free(&slow);
    srv_worker_free(w);
    srv_engine_free(e);
    cm_cq_cleanup(&cq);
}

// The I/O thread keeps answering while the pool derives: with four 300,000-iteration PBMAC1
// checks from a flooder with the pool (one thread), a garbage request from another address is
// answered (its error signed in the HSM, nothing derived) before any derivation is done; the
// flood requests are answered afterwards, refused for their wrong MAC.
static void test_abuse_kdf_flood_does_not_delay_others(void)
{
    srv_params sp = engine_params();
    sp.prot = g.prot_big;
    srv_engine *e = NULL;
    srv_worker *w = NULL;
    cm_cq cq;
    TEST_ASSERT_OK(cm_cq_init(&cq));
    TEST_ASSERT_OK(srv_engine_new(&e, &sp));
    TEST_ASSERT_OK(srv_worker_new(&w, e, &cq));
    uint8_t flooder[SRV_PEER_KEY_LEN], client[SRV_PEER_KEY_LEN];
    new_peer(flooder);
    new_peer(client);
    test_hand x;
    test_hand_init(&x, CMP_BODY_GENM, g.prot_big, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(SECRET_REF), "wrong");
    x.pbmac1 = true;
    x.mac_iterations = 300000;
    size_t len;
    uint8_t *der = hand_build(&x, &len);
    rsp flood[4], other;
    for (int i = 0; i < 4; i++) {
        start_on(&flood[i], w, flooder, der, len);
        CU_ASSERT_FALSE(flood[i].sync);
    }
    static const uint8_t k_garbage[] = {0x30, 0x03, 0x02, 0x01, 0x05};
    start_on(&other, w, client, k_garbage, sizeof(k_garbage));
    finish_rsp(&other, w, &cq);
    CU_ASSERT_EQUAL(other.msg.body.type, CMP_BODY_ERROR);
    CU_ASSERT_TRUE(other.msg.has_protection);
    srv_engine_stats es;
    srv_engine_get_stats(e, &es);
    CU_ASSERT_EQUAL(es.kdf_done, 0); // answered while the pool was still deriving
    CU_ASSERT_EQUAL(srv_request_response(flood[3].req).len, 0);
    for (int i = 0; i < 4; i++) {
        finish_rsp(&flood[i], w, &cq);
        CU_ASSERT_TRUE(refused_with(&flood[i], CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
        rsp_free(&flood[i]);
    }
    srv_engine_get_stats(e, &es);
    CU_ASSERT_EQUAL(es.kdf_done, 4);
    rsp_free(&other);
    free(der);
    test_hand_free(&x);
    srv_worker_free(w);
    srv_engine_free(e);
    cm_cq_cleanup(&cq);
}

// --- the MAC-failure back-off ----------------------------------------------------------------

// FAILS_MAX wrong MACs for line-7 from an attacker's address put the senderKID in back-off:
// its MAC-protected requests are then refused without derivation (systemUnavail, a reason
// naming it and the time left, counted by senderKID), a correct MAC from a third address too;
// the address from which line-7 authenticated before is exempt and still enrols. Once the
// back-off is over, the third address enrols too.
static void test_abuse_mac_backoff_per_sender_kid(void)
{
    uint8_t device[SRV_PEER_KEY_LEN], attacker[SRV_PEER_KEY_LEN], other[SRV_PEER_KEY_LEN];
    new_peer(device);
    new_peer(attacker);
    new_peer(other);
    rsp r;
    send_ir(&r, SECRET_REF, SECRET, device); // the device's address becomes a good pair
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
    for (unsigned i = 0; i < FAILS_MAX; i++) {
        send_ir(&r, SECRET_REF, "guess", attacker);
        CU_ASSERT_TRUE(refused_with(&r, CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
        rsp_free(&r);
    }
    const srv_engine_stats s0 = stats();
    send_ir(&r, SECRET_REF, "guess", attacker);
    CU_ASSERT_TRUE(refused_with(&r, SRV_E_MAC_BACKOFF,
                                "too many wrong MACs for senderKID line-7 (3 within 60 s)"));
    CU_ASSERT_EQUAL(r.sum.fail_bit, CM_FAIL_SYSTEM_UNAVAIL);
    CU_ASSERT_FALSE(r.sum.mac_failed); // no MAC was checked
    rsp_free(&r);
    send_ir(&r, SECRET_REF, SECRET, other); // right secret, but line-7 is in back-off
    CU_ASSERT_TRUE(refused_with(&r, SRV_E_MAC_BACKOFF, "refused for 1 s more"));
    rsp_free(&r);
    send_ir(&r, SECRET_REF, SECRET, device); // exempt: it authenticated line-7 before
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
    srv_engine_stats s1 = stats();
    CU_ASSERT_EQUAL(s1.mac_backoff_kid - s0.mac_backoff_kid, 2);
    CU_ASSERT_EQUAL(s1.kdf_done - s0.kdf_done, 1); // the device's only
    // Another senderKID is not affected from an address in good standing.
    send_ir(&r, SECRET2_REF, SECRET2, other);
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
    usleep(BACKOFF_S * 1000000u + 100000u);
    send_ir(&r, SECRET_REF, SECRET, other);
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
}

// FAILS_MAX wrong MACs from one address, spread over senderKIDs so that none of them reaches
// its own back-off, put the address in back-off: a correct MAC for another senderKID from it
// is refused (a reason about the address, counted by peer), unless that senderKID
// authenticated from this address before (a good pair); the same senderKID from another
// address is answered. A wrong MAC from the good pair ends its exemption.
static void test_abuse_mac_backoff_per_peer(void)
{
    uint8_t nat[SRV_PEER_KEY_LEN], elsewhere[SRV_PEER_KEY_LEN];
    new_peer(nat);
    new_peer(elsewhere);
    rsp r;
    send_ir(&r, SECRET3_REF, SECRET3, nat); // line-9 is good at this address
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
    static const char *const k_refs[FAILS_MAX] = {SECRET2_REF, SECRET_REF, SECRET2_REF};
    for (unsigned i = 0; i < FAILS_MAX; i++) {
        send_ir(&r, k_refs[i], "guess", nat);
        CU_ASSERT_TRUE(refused_with(&r, CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
        rsp_free(&r);
    }
    const srv_engine_stats s0 = stats();
    send_ir(&r, SECRET2_REF, SECRET2, nat);
    CU_ASSERT_TRUE(refused_with(&r, SRV_E_MAC_BACKOFF,
                                "too many wrong MACs from this address (3 within 60 s)"));
    CU_ASSERT_EQUAL(r.sum.fail_bit, CM_FAIL_SYSTEM_UNAVAIL);
    rsp_free(&r);
    send_ir(&r, SECRET2_REF, SECRET2, elsewhere); // line-8 itself is not in back-off
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
    send_ir(&r, SECRET3_REF, SECRET3, nat); // a good pair: exempt
    CU_ASSERT_TRUE(accepted(&r));
    rsp_free(&r);
    send_ir(&r, SECRET3_REF, "typo", nat); // ... until a wrong MAC from the pair
    CU_ASSERT_TRUE(refused_with(&r, CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
    rsp_free(&r);
    send_ir(&r, SECRET3_REF, SECRET3, nat);
    CU_ASSERT_TRUE(refused_with(&r, SRV_E_MAC_BACKOFF, "from this address"));
    rsp_free(&r);
    const srv_engine_stats s1 = stats();
    CU_ASSERT_EQUAL(s1.mac_backoff_peer - s0.mac_backoff_peer, 2);
    CU_ASSERT_EQUAL(s1.mac_backoff_kid, s0.mac_backoff_kid);
    CU_ASSERT_EQUAL(s1.kdf_done - s0.kdf_done, 3); // the two answered and the typo
}

// The budget on its own clock: failures outside the window do not add up, a back-off ends
// exactly when it should, a good pair is exempt from both back-offs, at most
// SRV_BUDGET_GOOD_PEERS good addresses are remembered, and a small peer table evicts the least
// recently seen address.
static void test_abuse_budget_clock(void)
{
    const srv_budget_params bp = {.mac_failures_max = 2,
                                  .mac_failure_window_ms = 1000,
                                  .mac_failure_backoff_ms = 5000,
                                  .error_signatures_per_peer = 0,
                                  .peer_slots = 8};
    srv_budget *b = NULL;
    const srv_budget_params bad = {.mac_failures_max = 2};
    CU_ASSERT_EQUAL(srv_budget_new(&b, &bad, 1).code, CM_E_INVALID_ARG);
    TEST_ASSERT_OK(srv_budget_new(&b, &bp, 2));
    uint8_t a[SRV_PEER_KEY_LEN], c[SRV_PEER_KEY_LEN];
    peer_v4(a, 1);
    peer_v4(c, 2);
    uint64_t wait = 0;
    srv_budget_mac_outcome(b, 0, a, false, 10000);
    srv_budget_mac_outcome(b, 0, a, false, 11000); // a new window: 1 failure in it
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 0, a, 11001, &wait, NULL), SRV_MAC_GO);
    srv_budget_mac_outcome(b, 0, a, false, 11500); // 2 within 1000 ms: back-off until 16500
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 0, a, 11501, &wait, NULL), SRV_MAC_KID_BACKOFF);
    CU_ASSERT_EQUAL(wait, 4999);
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 1, a, 11501, &wait, NULL), SRV_MAC_PEER_BACKOFF);
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 1, c, 11501, &wait, NULL), SRV_MAC_GO);
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 0, c, 16499, &wait, NULL), SRV_MAC_KID_BACKOFF);
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 0, c, 16500, &wait, NULL), SRV_MAC_GO);
    CU_ASSERT_EQUAL(wait, 0);
    // Good pairs: kid 1 authenticates from five addresses; the first is forgotten.
    uint8_t gp[5][SRV_PEER_KEY_LEN];
    for (uint8_t i = 0; i < 5; i++) {
        peer_v4(gp[i], (uint8_t)(100 + i));
        srv_budget_mac_outcome(b, 1, gp[i], true, 20000);
    }
    srv_budget_mac_outcome(b, 1, c, false, 20001);
    srv_budget_mac_outcome(b, 1, c, false, 20002); // kid 1 in back-off until 25002
    bool good = true;
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 1, gp[0], 20003, &wait, &good), SRV_MAC_KID_BACKOFF);
    CU_ASSERT_FALSE(good); // forgotten
    for (int i = 1; i < 5; i++) {
        good = false;
        CU_ASSERT_EQUAL(srv_budget_mac_check(b, 1, gp[i], 20003, &wait, &good), SRV_MAC_GO);
        CU_ASSERT_TRUE(good);
    }
    // A good address in back-off itself is still exempt for its own senderKID.
    srv_budget_mac_outcome(b, 0, gp[1], false, 20004);
    srv_budget_mac_outcome(b, 0, gp[1], false, 20005);
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 1, gp[1], 20006, &wait, NULL), SRV_MAC_GO);
    CU_ASSERT_EQUAL(srv_budget_mac_check(b, 0, gp[1], 20006, &wait, NULL), SRV_MAC_KID_BACKOFF);
    srv_budget_stats st;
    srv_budget_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.backoffs_kid, 3);
    CU_ASSERT_EQUAL(st.backoffs_peer, 3); // a at 11500, c at 20002, gp[1] at 20005
    CU_ASSERT_EQUAL(st.peers_evicted, 0);
    // Eight slots: more failing addresses than that take over the least recently seen.
    for (uint8_t i = 0; i < 32; i++) {
        uint8_t p[SRV_PEER_KEY_LEN];
        peer_v4(p, (uint8_t)(200 + i));
        srv_budget_mac_outcome(b, 0, p, false, 30000 + i);
    }
    srv_budget_get_stats(b, &st);
    CU_ASSERT_TRUE(st.peers_evicted > 0);
    CU_ASSERT_TRUE(st.peers_tracked <= 8);
    srv_budget_free(b);
}

// --- the error-signature budget ----------------------------------------------------------------

// Garbage from one address: the first ERR_SIGS error answers in a second are signed by the CMP
// key (so answered through the HSM), the next goes out at once without protection (no
// protectionAlg, no protection, no extraCerts) with the same failInfo and statusString,
// counted; another address still gets signed errors, and so does this one a second later. An
// authenticated request's rejection is protected whatever the budget.
static void test_abuse_error_signatures_per_peer(void)
{
    uint8_t peer[SRV_PEER_KEY_LEN], other[SRV_PEER_KEY_LEN];
    new_peer(peer);
    new_peer(other);
    static const uint8_t k_garbage[] = {0x30, 0x03, 0x02, 0x01, 0x05}; // a SEQUENCE, not CMP
    const srv_engine_stats s0 = stats();
    rsp r;
    for (unsigned i = 0; i < ERR_SIGS; i++) {
        start_on(&r, g.worker, peer, k_garbage, sizeof(k_garbage));
        CU_ASSERT_FALSE(r.sync); // the signature is with the HSM
        finish_rsp(&r, g.worker, &g.cq);
        CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_ERROR);
        CU_ASSERT_TRUE(r.msg.has_protection);
        CU_ASSERT_TRUE(r.msg.header.protection_alg.whole.len > 0);
        rsp_free(&r);
    }
    start_on(&r, g.worker, peer, k_garbage, sizeof(k_garbage));
    CU_ASSERT_TRUE(r.sync); // nothing to sign
    finish_rsp(&r, g.worker, &g.cq);
    CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_ERROR);
    CU_ASSERT_FALSE(r.msg.has_protection);
    CU_ASSERT_EQUAL(r.msg.header.protection_alg.whole.len, 0);
    CU_ASSERT_EQUAL(r.msg.num_extra_certs, 0);
    CU_ASSERT_EQUAL(r.sum.fail_bit, CM_FAIL_BAD_DATA_FORMAT);
    char text[256];
    CU_ASSERT_TRUE(strlen(text_of(&r, text, sizeof(text))) > 0);
    CU_ASSERT_STRING_EQUAL(text, r.sum.reason);
    rsp_free(&r);
    start_on(&r, g.worker, other, k_garbage, sizeof(k_garbage));
    CU_ASSERT_FALSE(r.sync);
    finish_rsp(&r, g.worker, &g.cq);
    CU_ASSERT_TRUE(r.msg.has_protection);
    rsp_free(&r);
    const srv_engine_stats s1 = stats();
    CU_ASSERT_EQUAL(s1.error_signed - s0.error_signed, ERR_SIGS + 1);
    CU_ASSERT_EQUAL(s1.error_unprotected - s0.error_unprotected, 1);
    // A wrong MAC is unauthenticated too: over the budget, unprotected.
    send_ir(&r, SECRET2_REF, "guess", peer);
    CU_ASSERT_TRUE(refused_with(&r, CMP_E_PROT_MAC_MISMATCH, "the MAC does not verify"));
    CU_ASSERT_FALSE(r.msg.has_protection);
    rsp_free(&r);
    // An authenticated request refused for its content is MAC-protected regardless.
    test_hand x;
    hand_ir(&x, SECRET_REF, SECRET, false);
    x.msgs[0].req.cert_req_id = 5; // RFC 9483 §4.1.1: must be 0
    run_hand(&r, &x, peer);
    CU_ASSERT_EQUAL(r.sum.error.code, SRV_E_CERT_REQ_ID);
    CU_ASSERT_TRUE(r.msg.has_protection);
    rsp_free(&r);
    test_hand_free(&x);
    usleep(1100000); // a second later the bucket is full again
    start_on(&r, g.worker, peer, k_garbage, sizeof(k_garbage));
    CU_ASSERT_FALSE(r.sync);
    finish_rsp(&r, g.worker, &g.cq);
    CU_ASSERT_TRUE(r.msg.has_protection);
    rsp_free(&r);
}

// --- the retransmission cache ------------------------------------------------------------------

// A resend (the same bytes) of an answered ir gets the same answer (byte for byte: the one
// certificate), without its MAC being checked again or anything signed; a different request
// in the same transaction is still refused with transactionIdInUse, and that refusal is not
// kept (its resend is refused again, not answered from the cache). A request whose MAC failed
// is never kept.
static void test_abuse_resend_gets_the_same_answer(void)
{
    uint8_t peer[SRV_PEER_KEY_LEN];
    new_peer(peer);
    test_hand x;
    hand_ir(&x, SECRET_REF, SECRET, false);
    size_t len;
    uint8_t *der = hand_build(&x, &len);
    rsp first, again;
    const uint64_t certs0 = cert_count();
    process(&first, peer, der, len);
    CU_ASSERT_TRUE(accepted(&first));
    CU_ASSERT_FALSE(first.sum.resent);
    const srv_engine_stats s0 = stats();
    start_on(&again, g.worker, peer, der, len);
    CU_ASSERT_TRUE(again.sync); // from the cache, at once
    finish_rsp(&again, g.worker, &g.cq);
    CU_ASSERT_TRUE(again.sum.resent);
    CU_ASSERT_EQUAL(again.sum.fail_bit, -1);
    CU_ASSERT_TRUE(again.der.len == first.der.len &&
                   memcmp(again.der.p, first.der.p, first.der.len) == 0);
    srv_engine_stats s1 = stats();
    CU_ASSERT_EQUAL(s1.resend_hits - s0.resend_hits, 1);
    CU_ASSERT_EQUAL(s1.kdf_done, s0.kdf_done);
    CU_ASSERT_TRUE(s1.resend_entries >= 1 && s1.resend_bytes > first.der.len);
    CU_ASSERT_EQUAL(cert_count() - certs0, 1); // one certificate for the two answers
    rsp_free(&again);
    // Another request (a new senderNonce) in the same transaction.
    test_hand y;
    hand_ir(&y, SECRET_REF, SECRET, false);
    memcpy(y.tid, x.tid, sizeof(y.tid));
    size_t len2;
    uint8_t *der2 = hand_build(&y, &len2);
    for (int i = 0; i < 2; i++) {
        process(&again, peer, der2, len2);
        CU_ASSERT_TRUE(refused_with(&again, STORE_E_TXN_IN_USE, "transactionID already in use"));
        CU_ASSERT_EQUAL(again.sum.fail_bit, CM_FAIL_TRANSACTION_ID_IN_USE);
        CU_ASSERT_FALSE(again.sum.resent);
        rsp_free(&again);
    }
    // Wrong MACs are never kept: each copy is checked (and refused) again.
    test_hand z;
    hand_ir(&z, SECRET2_REF, "guess", false);
    size_t len3;
    uint8_t *der3 = hand_build(&z, &len3);
    const srv_engine_stats s2 = stats();
    for (int i = 0; i < 2; i++) {
        process(&again, peer, der3, len3);
        CU_ASSERT_TRUE(refused_with(&again, CMP_E_PROT_MAC_MISMATCH, ""));
        CU_ASSERT_FALSE(again.sum.resent);
        rsp_free(&again);
    }
    CU_ASSERT_EQUAL(stats().kdf_done - s2.kdf_done, 2);
    CU_ASSERT_EQUAL(stats().resend_hits, s1.resend_hits);
    rsp_free(&first);
    free(der);
    free(der2);
    free(der3);
    test_hand_free(&x);
    test_hand_free(&y);
    test_hand_free(&z);
}

// The cache on its own: entries expire at their time; the entry bound and the byte bound evict
// the oldest first; the first answer kept for a key stays while it lives; an answer larger
// than the byte bound is not kept.
static void test_abuse_resend_cache_bounds(void)
{
    srv_resend *c = NULL;
    CU_ASSERT_EQUAL(srv_resend_new(&c, 0, 100).code, CM_E_INVALID_ARG);
    const size_t entry = 200; // each test answer's size with its entry, roughly
    TEST_ASSERT_OK(srv_resend_new(&c, 3, 4 * entry));
    uint8_t k[5][SRV_RESEND_KEY_LEN];
    uint8_t body[100];
    memset(body, 0x42, sizeof(body));
    const uint64_t now = srv_now_ms();
    for (int i = 0; i < 5; i++) {
        memset(k[i], i + 1, SRV_RESEND_KEY_LEN);
    }
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cm_span out;
    int bit = 0;
    cm_result err;
    srv_resend_put(c, k[0], now + 60000, cm_span_make(body, 10), -1, cm_result_make(CM_OK));
    CU_ASSERT_TRUE(srv_resend_get(c, k[0], now, &a, &out, &bit, &err));
    CU_ASSERT_TRUE(out.len == 10 && bit == -1);
    CU_ASSERT_FALSE(srv_resend_get(c, k[0], now + 60000, &a, &out, &bit, &err)); // expired
    CU_ASSERT_FALSE(srv_resend_get(c, k[1], now, &a, &out, &bit, &err));
    // The first answer wins while it lives.
    srv_resend_put(c, k[0], now + 60000, cm_span_make(body, 20), 2,
                   cm_result_make(SRV_E_CERT_REQ_ID));
    CU_ASSERT_TRUE(srv_resend_get(c, k[0], now, &a, &out, &bit, &err) && out.len == 10);
    // Entry bound 3: the fourth pushes out the oldest (k[0]).
    for (int i = 1; i < 4; i++) {
        srv_resend_put(c, k[i], now + 60000, cm_span_make(body, 10), -1, cm_result_make(CM_OK));
    }
    srv_resend_stats st;
    srv_resend_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.entries, 3);
    CU_ASSERT_EQUAL(st.evicted, 1);
    CU_ASSERT_FALSE(srv_resend_get(c, k[0], now, &a, &out, &bit, &err));
    CU_ASSERT_TRUE(srv_resend_get(c, k[3], now, &a, &out, &bit, &err));
    // The byte bound: a big answer pushes out as many of the oldest as it needs.
    srv_resend_put(c, k[4], now + 60000, cm_span_make(body, sizeof(body)), -1,
                   cm_result_make(CM_OK));
    srv_resend_get_stats(c, &st);
    CU_ASSERT_TRUE(st.bytes <= 4 * entry);
    CU_ASSERT_TRUE(srv_resend_get(c, k[4], now, &a, &out, &bit, &err) && out.len == sizeof(body));
    srv_resend_free(c);
    // Larger than the whole cache: not kept.
    TEST_ASSERT_OK(srv_resend_new(&c, 3, 64));
    srv_resend_put(c, k[0], now + 60000, cm_span_make(body, sizeof(body)), -1,
                   cm_result_make(CM_OK));
    CU_ASSERT_FALSE(srv_resend_get(c, k[0], now, &a, &out, &bit, &err));
    srv_resend_free(c);
    cm_arena_cleanup(&a);
}

int test_srv_abuse_register(void);
int test_srv_abuse_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_abuse_kdf_off_the_calling_thread),
        TEST_CASE(test_abuse_kdf_pool_queue_bound),
        TEST_CASE(test_abuse_kdf_queue_full_refused),
        TEST_CASE(test_abuse_kdf_flood_does_not_delay_others),
        TEST_CASE(test_abuse_kdf_inline_for_good_addresses),
        TEST_CASE(test_abuse_mac_backoff_per_sender_kid),
        TEST_CASE(test_abuse_mac_backoff_per_peer),
        TEST_CASE(test_abuse_budget_clock),
        TEST_CASE(test_abuse_error_signatures_per_peer),
        TEST_CASE(test_abuse_resend_gets_the_same_answer),
        TEST_CASE(test_abuse_resend_cache_bounds),
    };
    return test_register_suite("srv_abuse", abuse_init, abuse_cleanup, abuse_setup, abuse_teardown,
                               tests, TEST_NUM_CASES(tests));
}
