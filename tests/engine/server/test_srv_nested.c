// Suite "srv_nested": nested messages from an RA (issue 16; RFC 9810 §5.1.3.4, RFC 9483
// §5.2.2), driven in process like suite "srv_conform" (a throwaway SoftHSM token, a real SQLite
// store) with requests built by tests/support/test_hand. Every response is read back with our
// codec and with OpenSSL's (d2i_OSSL_CMP_MSG for the nested answer and for each inner answer,
// OSSL_CMP_validate_msg for their protection). Two engines share the token and the store: one
// verifies inner messages on two verification threads (nested_threads 2), one inline on the
// calling thread (nested_threads 0); the batches must come out the same on both.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/cmp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv.h"
#include "engine/server/srv_internal.h"
#include "tests/support/test_hand.h"
#include "tests/support/test_support.h"

#define EE_REF    "line-7" // an end entity's MAC secret, not marked for RA use
#define EE_SECRET "factory-secret"
#define RA_REF    "ra-line" // an RA's MAC secret (ra = on)
#define RA_SECRET "ra-secret"
#define MAX_BATCH 8u                  // max_nested_messages of both engines
#define ARENA_CAP ((size_t)40 * 1024) // the capped engine's arena_cap

static struct {
    char dir[256];
    char log[320];
    test_token token;
    hsm_token *tok;
    hsm_key *ca_key;
    hsm_pool *pool;
    store *st;
    cmp_protect_ctx *prot;
    ca_authority *authority;
    ca_profile *profile;
    ca_trust *client_trust;
    ca_trust *own_trust;
    srv_secret secrets[2];
    cm_span ra_cert;
    srv_ca ca;
    srv_engine *engine, *engine_inline;
    cm_cq cq, cq_inline;
    srv_worker *worker, *worker_inline;
    srv_worker *w; // the worker the helpers below use
    X509 *ca_x509;
    EVP_PKEY *ra_key, *idev_key;
    uint8_t *ra_der, *idev_der;
    cm_span idev_cert; // a manufacturer certificate: trusted, but not an RA
    int seq;
} g;

// --- fixture --------------------------------------------------------------------------------

static bool make_root(const char *pem_path)
{
    return test_hand_make_root(&g.ca_x509, g.pool, g.ca_key, "certmint nested root", 0x3003,
                               pem_path);
}

static uint8_t *cert_der(const char *path, cm_span *out)
{
    X509 *x = test_pki_read_cert(path);
    unsigned char *der = NULL;
    const int len = x != NULL ? i2d_X509(x, &der) : -1;
    X509_free(x);
    *out = len > 0 ? cm_span_make(der, (size_t)len) : cm_span_make(NULL, 0);
    return len > 0 ? der : NULL;
}

static bool make_engine_with(srv_engine **e, cm_cq *cq, srv_worker **w, uint32_t threads,
                             size_t arena_cap, bool limits)
{
    srv_params sp = {.hsm = g.pool,
                     .store = g.st,
                     .prot = g.prot,
                     .cas = &g.ca,
                     .num_cas = 1,
                     .message_time_window = 600,
                     .confirm_wait_time = 300,
                     .max_nested_depth = 2,
                     .max_nested_messages = MAX_BATCH,
                     .nested_threads = threads,
                     .arena_cap = arena_cap};
    if (limits) {
        // Issue 23's limits as certmintd sets them: PBM on the KDF pool, the budgets, resends.
        sp.kdf_threads = 1;
        sp.mac_failures_max = 10;
        sp.mac_failure_window = 60;
        sp.mac_failure_backoff = 60;
        sp.error_signatures_per_peer = 10;
        sp.retransmit_window = SRV_RETRANSMIT_AUTO;
    }
    return cm_ok(srv_engine_new(e, &sp)) && cm_ok(cm_cq_init(cq)) &&
           cm_ok(srv_worker_new(w, *e, cq));
}

static bool make_engine(srv_engine **e, cm_cq *cq, srv_worker **w, uint32_t threads,
                        size_t arena_cap)
{
    return make_engine_with(e, cq, w, threads, arena_cap, false);
}

static int nested_init(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "srvnest") ||
        !test_token_create(&g.token, "srv-nested")) {
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
    char ca_pem[320], vendor_pem[320], vendor_key[320], ra_key[320], ra_pem[320], ra_ext[320],
        idev_key[320], idev_pem[320];
    test_path(ca_pem, sizeof(ca_pem), g.dir, "ca.pem");
    test_path(vendor_pem, sizeof(vendor_pem), g.dir, "vendor.pem");
    test_path(vendor_key, sizeof(vendor_key), g.dir, "vendor.key");
    test_path(ra_key, sizeof(ra_key), g.dir, "ra.key");
    test_path(ra_pem, sizeof(ra_pem), g.dir, "ra.pem");
    test_path(ra_ext, sizeof(ra_ext), g.dir, "ra-ext.cnf");
    test_path(idev_key, sizeof(idev_key), g.dir, "idev.key");
    test_path(idev_pem, sizeof(idev_pem), g.dir, "idev.pem");
    const char *const ca_true[] = {"basicConstraints=critical,CA:TRUE", NULL};
    const test_pki_cert_spec vendor = {
        .subject = "/O=Vendor/CN=Vendor CA", .days = 30, .addext = ca_true};
    // The RA (RFC 9483 §3.3): extended key usage id-kp-cmcRA.
    static const char k_ra_ext[] = "[ra]\nkeyUsage = critical, digitalSignature\n"
                                   "extendedKeyUsage = 1.3.6.1.5.5.7.3.28\n"
                                   "subjectKeyIdentifier = hash\n";
    const test_pki_cert_spec ra = {.subject = "/O=Vendor/CN=Batch RA",
                                   .days = 30,
                                   .serial = "88",
                                   .ext_file = ra_ext,
                                   .ext_section = "ra"};
    const test_pki_cert_spec idev = {
        .subject = "/O=Vendor/CN=device-SN9", .days = 30, .serial = "4713"};
    if (!test_write_file(ra_ext, k_ra_ext, sizeof(k_ra_ext) - 1) || !make_root(ca_pem) ||
        !test_pki_make_ca(vendor_key, vendor_pem, &vendor, g.log) ||
        !test_pki_issue(ra_key, ra_pem, vendor_key, vendor_pem, &ra, g.log) ||
        !test_pki_issue(idev_key, idev_pem, vendor_key, vendor_pem, &idev, g.log)) {
        return 1;
    }
    g.ra_key = test_pki_read_key(ra_key);
    g.idev_key = test_pki_read_key(idev_key);
    g.ra_der = cert_der(ra_pem, &g.ra_cert);
    g.idev_der = cert_der(idev_pem, &g.idev_cert);
    if (g.ra_key == NULL || g.idev_key == NULL || g.ra_der == NULL || g.idev_der == NULL) {
        return 1;
    }
    char db[400], err_s[256];
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    const char *own[] = {ca_pem};
    const char *vend[] = {vendor_pem};
    if (!cm_ok(store_open(&g.st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot, NULL, NULL, &lim)) ||
        !cm_ok(ca_authority_load(&g.authority, err_s, sizeof(err_s), ca_pem, NULL)) ||
        !cm_ok(ca_trust_new(&g.own_trust, err_s, sizeof(err_s), own, 1, 64)) ||
        !cm_ok(ca_trust_new(&g.client_trust, err_s, sizeof(err_s), vend, 1, 64))) {
        fprintf(stderr, "setup: %s\n", err_s);
        return 1;
    }
    ca_profile_params pp = {.name = "devices",
                            .default_days = 365,
                            .max_days = 730,
                            .key_types = CA_KEY_EC_P256,
                            .rsa_min_bits = 2048,
                            .rsa_max_bits = 4096,
                            .subject_mode = CA_SUBJECT_COPY,
                            .implicit_confirm = true};
    if (!cm_ok(ca_profile_new(&g.profile, err_s, sizeof(err_s), &pp, NULL, NULL))) {
        fprintf(stderr, "profile: %s\n", err_s);
        return 1;
    }
    g.secrets[0] = (srv_secret){.ref = CM_SPAN_LIT(EE_REF), .secret = CM_SPAN_LIT(EE_SECRET)};
    g.secrets[1] =
        (srv_secret){.ref = CM_SPAN_LIT(RA_REF), .secret = CM_SPAN_LIT(RA_SECRET), .ra = true};
    g.ca = (srv_ca){.name = "devices",
                    .authority = g.authority,
                    .profile = g.profile,
                    .ca_key = g.ca_key,
                    .ca_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .cmp_cert = g.authority,
                    .cmp_key = g.ca_key,
                    .cmp_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .secrets = g.secrets,
                    .num_secrets = 2,
                    .client_trust = g.client_trust,
                    .own_trust = g.own_trust,
                    .ra_certs = &g.ra_cert,
                    .num_ra_certs = 1,
                    .crl_validity = 86400,
                    // Central key generation (issue 19), for test_nested_central_keygen; a
                    // request with its own key is unaffected.
                    .policy = {.central_keygen = SRV_CKG_ALLOWED,
                               .central_key_types = CA_KEY_EC_P256,
                               .central_keygen_min_secret = 8},
                    .kga = true};
    if (!make_engine(&g.engine, &g.cq, &g.worker, 2, 0) ||
        !make_engine(&g.engine_inline, &g.cq_inline, &g.worker_inline, 0, 0)) {
        return 1;
    }
    g.w = g.worker;
    return 0;
}

static int nested_cleanup(void)
{
    srv_worker_free(g.worker);
    srv_worker_free(g.worker_inline);
    srv_engine_free(g.engine);
    srv_engine_free(g.engine_inline);
    cm_cq_cleanup(&g.cq);
    cm_cq_cleanup(&g.cq_inline);
    store_close(g.st);
    hsm_pool_free(g.pool);
    hsm_key_free(g.ca_key);
    hsm_token_free(g.tok);
    ca_trust_free(g.client_trust);
    ca_trust_free(g.own_trust);
    ca_profile_free(g.profile);
    ca_authority_free(g.authority);
    cmp_protect_ctx_free(g.prot);
    X509_free(g.ca_x509);
    EVP_PKEY_free(g.ra_key);
    EVP_PKEY_free(g.idev_key);
    OPENSSL_free(g.ra_der);
    OPENSSL_free(g.idev_der);
    test_token_destroy(&g.token);
    (void)test_rmtree(g.dir);
    return 0;
}

// --- requests ---------------------------------------------------------------------------------

// The protection of a message built below.
typedef enum prot {
    P_EE_MAC = 0, // PBM with the end entity's secret (line-7)
    P_RA_MAC,     // PBM with the RA's secret (ra = on)
    P_RA_SIG,     // signed by the RA certificate
    P_IDEV_SIG,   // signed by a trusted manufacturer certificate that is not an RA
    P_NONE,       // unprotected
} prot;

static void hand_init(test_hand *x, cmp_body_type t, prot p)
{
    const bool ra_mac = p == P_RA_MAC;
    test_hand_init(x, t, g.prot, ca_authority_subject(g.authority),
                   ra_mac ? CM_SPAN_LIT(RA_REF) : CM_SPAN_LIT(EE_REF),
                   ra_mac ? RA_SECRET : EE_SECRET);
    if (p == P_RA_SIG) {
        TEST_ASSERT_OK(test_hand_sign(x, g.ra_key, g.ra_cert));
    } else if (p == P_IDEV_SIG) {
        TEST_ASSERT_OK(test_hand_sign(x, g.idev_key, g.idev_cert));
    } else if (p == P_NONE) {
        x->prot_mode = TEST_PROT_NONE;
    }
}

static cm_span hand_done(test_hand *x)
{
    uint8_t *der = NULL;
    size_t len = 0;
    TEST_ASSERT_OK(test_hand_build(x, &der, &len));
    return cm_span_make(der, len);
}

static void span_free(cm_span s)
{
    free((void *)(uintptr_t)s.p);
}

// One inner ir: a fresh P-256 key with a signature POPO, subject CN=nested-N, implicitConfirm
// when asked. Its transactionID and key stay in |*out| for the checks.
typedef struct inner_ir {
    cm_span der;
    uint8_t tid[16];
    EVP_PKEY *key;
} inner_ir;

static void make_ir(inner_ir *out, prot p, bool implicit)
{
    test_hand x;
    hand_init(&x, CMP_BODY_IR, p);
    out->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->key);
    char dn[64];
    (void)snprintf(dn, sizeof(dn), "/CN=nested-%d", ++g.seq);
    TEST_ASSERT_OK(test_hand_template(&x, out->key, dn));
    if (implicit) {
        test_hand_add_info(&x, cmp_itav_implicit_confirm());
    }
    memcpy(out->tid, x.tid, sizeof(out->tid));
    out->der = hand_done(&x);
    test_hand_free(&x);
}

static void inner_free(inner_ir *ir, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        span_free(ir[i].der);
        EVP_PKEY_free(ir[i].key);
    }
}

// make_nested wraps |n| messages in a nested message protected as |p| says.
static cm_span make_nested(const cm_span *inner, size_t n, prot p)
{
    test_hand x;
    hand_init(&x, CMP_BODY_NESTED, p);
    TEST_ASSERT_OK(test_hand_nested(&x, inner, n));
    const cm_span der = hand_done(&x);
    test_hand_free(&x);
    return der;
}

// --- responses --------------------------------------------------------------------------------

typedef struct rsp {
    srv_request *req;
    cm_arena arena;
    cmp_msg msg;
    OSSL_CMP_MSG *ossl;
} rsp;

// OpenSSL 3.0 reads no EncryptedKey but EncryptedValue, so it cannot read an answer carrying a
// centrally generated key (envelopedData [0], RFC 9810 §5.2.2): test_nested_central_keygen
// sets this while it runs.
static bool g_ossl_cannot_read;

static void process(rsp *out, cm_span der)
{
    memset(out, 0, sizeof(*out));
    out->req = srv_request_new(g.w, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->req);
    uint8_t *body = srv_request_body(out->req, der.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memcpy(body, der.p, der.len);
    cm_span resp = srv_request_run(out->req, &g.ca, cm_span_make(body, der.len));
    CU_ASSERT_FATAL(resp.len > 0);
    cm_arena_init(&out->arena, 0, 0);
    const cmp_parse_opts two = {.max_nesting = 2};
    CU_ASSERT_TRUE_FATAL(cm_ok(cmp_msg_from_der(&out->arena, &out->msg, resp, &two)));
    const unsigned char *q = resp.p;
    out->ossl = d2i_OSSL_CMP_MSG(NULL, &q, (long)resp.len);
    CU_ASSERT_TRUE(out->ossl != NULL || g_ossl_cannot_read); // OpenSSL reads the nested answer
}

static void rsp_free(rsp *r)
{
    OSSL_CMP_MSG_free(r->ossl);
    cm_arena_cleanup(&r->arena);
    srv_request_free(r->req);
}

// validates checks the protection of the PKIMessage |m| with OpenSSL: with |secret| when given,
// else as signed by the CA.
static bool validates(const cmp_msg *m, const char *secret)
{
    const unsigned char *q = m->whole.p;
    OSSL_CMP_MSG *om = d2i_OSSL_CMP_MSG(NULL, &q, (long)m->whole.len);
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    bool ok = om != NULL && ctx != NULL;
    if (ok && secret != NULL) {
        ok = OSSL_CMP_CTX_set1_secretValue(ctx, (const unsigned char *)secret,
                                           (int)strlen(secret)) == 1;
    } else if (ok) {
        ok = OSSL_CMP_CTX_set1_srvCert(ctx, g.ca_x509) == 1;
    }
    ok = ok && OSSL_CMP_validate_msg(ctx, om) == 1;
    OSSL_CMP_CTX_free(ctx);
    OSSL_CMP_MSG_free(om);
    return ok;
}

static const cmp_status_info *status_of(const cmp_msg *m)
{
    const cmp_body *b = &m->body;
    switch (b->type) {
    case CMP_BODY_ERROR:
        return &b->u.error.status;
    case CMP_BODY_IP:
    case CMP_BODY_CP:
    case CMP_BODY_KUP:
        return b->u.rep.num_responses == 1 ? &b->u.rep.responses[0].status : NULL;
    case CMP_BODY_RP:
        return b->u.rp.num_status == 1 ? &b->u.rp.status[0] : NULL;
    default:
        return NULL;
    }
}

static const char *text_of(const cmp_status_info *st, char *buf, size_t cap)
{
    buf[0] = '\0';
    der_reader rd, seq;
    cm_span s;
    der_reader_init(&rd, st->status_string);
    if (cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) &&
        cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &s)) && s.len < cap) {
        memcpy(buf, s.p, s.len);
        buf[s.len] = '\0';
    }
    return buf;
}

// expect checks |m|: body |body|, PKIStatus |status|, failInfo bit |bit| (-1: none) and a
// statusString containing |text| (NULL: not checked).
#define expect(m, body, status, bit, text) expect_at(__LINE__, m, body, status, bit, text)
static void expect_at(int line, const cmp_msg *m, cmp_body_type body, int64_t status, int bit,
                      const char *text)
{
    const cmp_status_info *st = status_of(m);
    char got[400] = "";
    if (st != NULL) {
        text_of(st, got, sizeof(got));
    }
    const uint32_t want_fi = bit >= 0 ? CMP_FAILINFO_BIT((uint32_t)bit) : 0;
    const bool ok = m->body.type == body && st != NULL && st->status == status &&
                    (st->has_fail_info ? st->fail_info : 0) == want_fi &&
                    (text == NULL || strstr(got, text) != NULL);
    if (!ok) {
        fprintf(stderr,
                "\n  line %d: got body %d status %lld failInfo 0x%x \"%s\""
                "\n           want body %d status %lld bit %d \"...%s...\"\n",
                line, (int)m->body.type, st != NULL ? (long long)st->status : -1LL,
                st != NULL ? st->fail_info : 0, got, (int)body, (long long)status, bit,
                text != NULL ? text : "");
    }
    CU_ASSERT_TRUE(ok);
}

// expect_issued checks that inner answer |m| is an accepted ip for |ir|: its transaction, a
// certificate of the requested key, protected with |secret| (NULL: signed by the CA).
static void expect_issued(const cmp_msg *m, const inner_ir *ir, const char *secret)
{
    expect(m, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(cm_span_eq(m->header.f.transaction_id.v, cm_span_make(ir->tid, 16)));
    CU_ASSERT_TRUE(validates(m, secret));
    if (m->body.type != CMP_BODY_IP || m->body.u.rep.num_responses != 1) {
        return;
    }
    const cmp_cert_response *cr = &m->body.u.rep.responses[0];
    CU_ASSERT_FATAL(cr->has_certified_key_pair);
    const unsigned char *q = cr->cert.p;
    X509 *x = d2i_X509(NULL, &q, (long)cr->cert.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(x), ir->key), 1);
    CU_ASSERT_EQUAL(X509_verify(x, X509_get0_pubkey(g.ca_x509)), 1);
    X509_free(x);
}

// nested_of returns the |i|th inner answer of the nested answer |r| (the test stops unless the
// answer is a nested message of |n|).
static const cmp_msg *nested_of(const cmp_msg *m, size_t n, size_t i)
{
    if (m->body.type != CMP_BODY_NESTED) {
        const cmp_status_info *st = status_of(m);
        char got[400] = "";
        fprintf(stderr, "\n  not a nested answer: body %d \"%s\"\n", (int)m->body.type,
                st != NULL ? text_of(st, got, sizeof(got)) : "");
    }
    CU_ASSERT_EQUAL_FATAL(m->body.type, CMP_BODY_NESTED);
    CU_ASSERT_EQUAL_FATAL(m->body.u.nested.num, n);
    return &m->body.u.nested.msgs[i];
}

static srv_worker_stats stats_now(void)
{
    srv_worker_stats s;
    srv_worker_get_stats(g.w, &s);
    return s;
}

// --- tests ------------------------------------------------------------------------------------

// A batch of MAC-protected irs (each with its own end-entity secret) in a nested message
// signed by the RA: one ip per ir, in order, each MAC-protected as it would be alone, the
// nested answer signed by the CA; the same with the inline engine.
static void test_nested_batch_of_irs(void)
{
    for (int pass = 0; pass < 2; pass++) {
        g.w = pass == 0 ? g.worker : g.worker_inline;
        inner_ir ir[3];
        cm_span ders[3];
        for (size_t i = 0; i < 3; i++) {
            make_ir(&ir[i], P_EE_MAC, true);
            ders[i] = ir[i].der;
        }
        const cm_span outer = make_nested(ders, 3, P_RA_SIG);
        rsp r;
        process(&r, outer);
        CU_ASSERT_TRUE(validates(&r.msg, NULL)); // the CA's CMP key
        CU_ASSERT_EQUAL(OSSL_CMP_MSG_get_bodytype(r.ossl),
                        CMP_BODY_NESTED); // OpenSSL 3.0 has no name for it
        for (size_t i = 0; i < 3; i++) {
            const cmp_msg *m = nested_of(&r.msg, 3, i);
            expect_issued(m, &ir[i], EE_SECRET);
            CU_ASSERT_TRUE(m->header.implicit_confirm);
        }
        rsp_free(&r);
        span_free(outer);
        inner_free(ir, 3);
    }
    g.w = g.worker;
}

// The batching is real: a batch of N enrolments makes one HSM submission for its N certificate
// signatures (and one for the nested answer's signature), one store batch for the N
// reservations and one for the 2N records; N requests alone make N and 2N. The pool verified
// the N inner requests.
static void test_nested_batches_hsm_and_store(void)
{
    enum { N = 4 };
    inner_ir ir[N];
    cm_span ders[N];
    for (size_t i = 0; i < N; i++) {
        make_ir(&ir[i], P_EE_MAC, true);
        ders[i] = ir[i].der;
    }
    const cm_span outer = make_nested(ders, N, P_RA_SIG);
    store_stats st0, st1;
    store_get_stats(g.st, &st0);
    const srv_worker_stats a = stats_now();
    rsp r;
    process(&r, outer);
    const srv_worker_stats b = stats_now();
    store_get_stats(g.st, &st1);
    for (size_t i = 0; i < N; i++) {
        expect_issued(nested_of(&r.msg, N, i), &ir[i], EE_SECRET);
    }
    CU_ASSERT_EQUAL(b.nested - a.nested, 1);
    CU_ASSERT_EQUAL(b.inner - a.inner, N);
    CU_ASSERT_EQUAL(b.pool_tasks - a.pool_tasks, N);
    CU_ASSERT_EQUAL(b.hsm_submits - a.hsm_submits, 2); // N certificates, then the answer
    CU_ASSERT_EQUAL(b.hsm_jobs - a.hsm_jobs, N + 1);
    CU_ASSERT_EQUAL(b.store_submits - a.store_submits, 2); // N reservations, then 2N records
    CU_ASSERT_EQUAL(b.store_jobs - a.store_jobs, 3 * N);
    CU_ASSERT_EQUAL(st1.jobs - st0.jobs, 3 * N);
    CU_ASSERT(st1.max_batch >= 2 * N); // the records went to the writer together
    rsp_free(&r);
    span_free(outer);
    inner_free(ir, N);
    // The same enrolments alone: a submission per signature and per store round.
    const srv_worker_stats c = stats_now();
    for (size_t i = 0; i < N; i++) {
        make_ir(&ir[i], P_EE_MAC, true);
        process(&r, ir[i].der);
        expect_issued(&r.msg, &ir[i], EE_SECRET);
        rsp_free(&r);
    }
    const srv_worker_stats d = stats_now();
    CU_ASSERT_EQUAL(d.hsm_submits - c.hsm_submits, N);
    CU_ASSERT_EQUAL(d.store_submits - c.store_submits, 2 * N);
    inner_free(ir, N);
}

// The outer protection decides before anything inside is looked at: a bad signature, a MAC
// with a secret not marked for RA use, a trusted signer that is not an RA: refused, no inner
// message handled. A MAC with the RA's secret is accepted.
static void test_nested_outer_protection(void)
{
    inner_ir ir[1];
    make_ir(&ir[0], P_EE_MAC, true);
    const struct {
        prot p;
        bool corrupt;
        int bit;
        const char *text;
    } cases[] = {
        {P_RA_SIG, true, CMP_FAIL_BAD_MESSAGE_CHECK, NULL},
        {P_EE_MAC, false, CMP_FAIL_NOT_AUTHORIZED, "not marked for RA use (ra.REF = on"},
        {P_IDEV_SIG, false, CMP_FAIL_NOT_AUTHORIZED, "RA certificate of this CA (ra_certs)"},
        {P_NONE, false, CMP_FAIL_BAD_MESSAGE_CHECK, "not protected"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cm_span outer = make_nested(&ir[0].der, 1, cases[i].p);
        if (cases[i].corrupt) {
            uint8_t *p = (uint8_t *)(uintptr_t)outer.p;
            p[outer.len - g.ra_cert.len - 20] ^= 0x01; // in the signature, before extraCerts
        }
        const srv_worker_stats a = stats_now();
        rsp r;
        process(&r, outer);
        expect(&r.msg, CMP_BODY_ERROR, CMP_STATUS_REJECTION, cases[i].bit, cases[i].text);
        CU_ASSERT_EQUAL(stats_now().inner, a.inner); // nothing inside was started
        rsp_free(&r);
        span_free(outer);
    }
    // The RA's own MAC secret (ra = on): accepted; the nested answer is still signed.
    cm_span outer = make_nested(&ir[0].der, 1, P_RA_MAC);
    rsp r;
    process(&r, outer);
    CU_ASSERT_TRUE(validates(&r.msg, NULL));
    expect_issued(nested_of(&r.msg, 1, 0), &ir[0], EE_SECRET);
    rsp_free(&r);
    span_free(outer);
    inner_free(ir, 1);
}

// One inner message that fails fails alone: a bad MAC, a bad POPO and a message that is not
// CMP at all between good irs; the others are issued, and the failures answered in place.
static void test_nested_inner_failure_among_good(void)
{
    for (int pass = 0; pass < 2; pass++) {
        g.w = pass == 0 ? g.worker : g.worker_inline;
        inner_ir ir[5];
        cm_span ders[5];
        for (size_t i = 0; i < 5; i++) {
            make_ir(&ir[i], P_EE_MAC, true);
            ders[i] = ir[i].der;
        }
        // [1]: its MAC does not verify. [2]: its POPO does not verify. [3]: not CMP.
        test_hand x;
        hand_init(&x, CMP_BODY_IR, P_EE_MAC);
        x.secret = "not-the-secret";
        TEST_ASSERT_OK(test_hand_template(&x, ir[1].key, "/CN=nested-bad-mac"));
        span_free(ir[1].der);
        ir[1].der = ders[1] = hand_done(&x);
        test_hand_free(&x);
        hand_init(&x, CMP_BODY_IR, P_EE_MAC);
        TEST_ASSERT_OK(test_hand_template(&x, ir[2].key, "/CN=nested-bad-pop"));
        x.popo_corrupt = true;
        span_free(ir[2].der);
        ir[2].der = ders[2] = hand_done(&x);
        test_hand_free(&x);
        static const uint8_t k_junk[] = {0x30, 0x03, 0x02, 0x01, 0x07};
        ders[3] = cm_span_make(k_junk, sizeof(k_junk));
        const cm_span outer = make_nested(ders, 5, P_RA_SIG);
        rsp r;
        process(&r, outer);
        CU_ASSERT_TRUE(validates(&r.msg, NULL));
        expect_issued(nested_of(&r.msg, 5, 0), &ir[0], EE_SECRET);
        expect(nested_of(&r.msg, 5, 1), CMP_BODY_ERROR, CMP_STATUS_REJECTION,
               CMP_FAIL_BAD_MESSAGE_CHECK, NULL);
        // A refused POPO is answered in the ip (RFC 9483 §3.6.4), MAC-protected like an ip.
        expect(nested_of(&r.msg, 5, 2), CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP, NULL);
        CU_ASSERT_TRUE(validates(nested_of(&r.msg, 5, 2), EE_SECRET));
        expect(nested_of(&r.msg, 5, 3), CMP_BODY_ERROR, CMP_STATUS_REJECTION,
               CMP_FAIL_BAD_DATA_FORMAT, NULL);
        CU_ASSERT_TRUE(validates(nested_of(&r.msg, 5, 3), NULL)); // signed: no MAC known
        expect_issued(nested_of(&r.msg, 5, 4), &ir[4], EE_SECRET);
        rsp_free(&r);
        span_free(outer);
        inner_free(ir, 5);
    }
    g.w = g.worker;
}

// max_nested_messages (8 here) bounds a batch before any work: 9 inner messages are refused
// with badRequest and none is started; 8 pass. Inner messages of every level count together.
static void test_nested_batch_over_the_limit(void)
{
    inner_ir ir[MAX_BATCH + 1];
    cm_span ders[MAX_BATCH + 1];
    for (size_t i = 0; i <= MAX_BATCH; i++) {
        make_ir(&ir[i], P_EE_MAC, true);
        ders[i] = ir[i].der;
    }
    cm_span outer = make_nested(ders, MAX_BATCH + 1, P_RA_SIG);
    const srv_worker_stats a = stats_now();
    rsp r;
    process(&r, outer);
    expect(&r.msg, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "carries 9 inner messages; at most 8 are accepted (max_nested_messages)");
    const srv_worker_stats b = stats_now();
    CU_ASSERT_EQUAL(b.inner, a.inner);
    CU_ASSERT_EQUAL(b.store_submits, a.store_submits);
    CU_ASSERT_EQUAL(b.hsm_submits - a.hsm_submits, 1); // the signed error, nothing else
    rsp_free(&r);
    span_free(outer);
    // 5 irs and a nested message of 3 more: 9 at two levels; the inner nested one is refused.
    const cm_span inner_nested = make_nested(ders + 5, 3, P_RA_SIG);
    cm_span mixed[6] = {ders[0], ders[1], ders[2], ders[3], ders[4], inner_nested};
    outer = make_nested(mixed, 6, P_RA_SIG);
    process(&r, outer);
    for (size_t i = 0; i < 5; i++) {
        expect_issued(nested_of(&r.msg, 6, i), &ir[i], EE_SECRET);
    }
    expect(nested_of(&r.msg, 6, 5), CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "9 with those of the batch around it; at most 8");
    rsp_free(&r);
    span_free(outer);
    span_free(inner_nested);
    inner_free(ir, MAX_BATCH + 1);
}

// max_nested_depth (2 here): an RA behind an RA works; a third level is refused, alone.
static void test_nested_depth(void)
{
    for (int pass = 0; pass < 2; pass++) {
        g.w = pass == 0 ? g.worker : g.worker_inline;
        inner_ir ir[3];
        for (size_t i = 0; i < 3; i++) {
            make_ir(&ir[i], P_EE_MAC, true);
        }
        // level 1 (RA signed) [ level 2 (RA MAC) [ ir0, level 3 [ ir1 ] ], ir2 ]
        const cm_span l3 = make_nested(&ir[1].der, 1, P_RA_SIG);
        const cm_span l2_items[2] = {ir[0].der, l3};
        const cm_span l2 = make_nested(l2_items, 2, P_RA_MAC);
        const cm_span l1_items[2] = {l2, ir[2].der};
        const cm_span l1 = make_nested(l1_items, 2, P_RA_SIG);
        rsp r;
        process(&r, l1);
        CU_ASSERT_TRUE(validates(&r.msg, NULL));
        const cmp_msg *m2 = nested_of(&r.msg, 2, 0);
        CU_ASSERT_TRUE(validates(m2, NULL)); // every nested answer is signed by the CA
        expect_issued(nested_of(m2, 2, 0), &ir[0], EE_SECRET);
        expect(nested_of(m2, 2, 1), CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
               "nested messages 2 levels deep (max_nested_depth)");
        expect_issued(nested_of(&r.msg, 2, 1), &ir[2], EE_SECRET);
        rsp_free(&r);
        span_free(l1);
        span_free(l2);
        span_free(l3);
        inner_free(ir, 3);
    }
    g.w = g.worker;
}

// An unprotected inner message is accepted where the RA's protection vouches for it (RFC 9483
// §5.2.2.1): as if the RA had protected it. Under the RA certificate its answer is signed by
// the CA; under the RA's MAC secret it is MAC-protected with that secret. Alone it is refused.
static void test_nested_unprotected_inner_vouched(void)
{
    inner_ir ir[2];
    make_ir(&ir[0], P_NONE, true);
    make_ir(&ir[1], P_NONE, true);
    cm_span outer = make_nested(&ir[0].der, 1, P_RA_SIG);
    rsp r;
    process(&r, outer);
    expect_issued(nested_of(&r.msg, 1, 0), &ir[0], NULL);
    rsp_free(&r);
    span_free(outer);
    outer = make_nested(&ir[1].der, 1, P_RA_MAC);
    process(&r, outer);
    const cmp_msg *m = nested_of(&r.msg, 1, 0);
    expect_issued(m, &ir[1], RA_SECRET);
    CU_ASSERT_TRUE(cm_span_eq(m->header.f.sender_kid.v, CM_SPAN_LIT(RA_REF)));
    rsp_free(&r);
    span_free(outer);
    inner_free(ir, 2);
    // Outside a nested message nothing vouches.
    make_ir(&ir[0], P_NONE, true);
    process(&r, ir[0].der);
    expect(&r.msg, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK,
           "not protected");
    rsp_free(&r);
    inner_free(ir, 1);
}

// Central key generation in a batch (issue 19): an inner ir without a key, MAC-protected by
// the end entity, gets its key encrypted under the end entity's secret; the same request left
// unprotected for the RA to vouch for (by its MAC secret or its certificate) is refused: the
// key would be encrypted to the RA.
static void test_nested_central_keygen(void)
{
    cm_span inner[3];
    const prot ps[3] = {P_EE_MAC, P_NONE, P_NONE};
    for (size_t i = 0; i < 3; i++) {
        test_hand x;
        hand_init(&x, CMP_BODY_IR, ps[i]);
        char dn[64];
        (void)snprintf(dn, sizeof(dn), "/CN=nested-ckg-%d", ++g.seq);
        TEST_ASSERT_OK(test_hand_ckg(&x, NULL, dn));
        test_hand_add_info(&x, cmp_itav_implicit_confirm());
        inner[i] = hand_done(&x);
        test_hand_free(&x);
    }
    cm_span outer = make_nested(inner, 2, P_RA_MAC);
    rsp r;
    g_ossl_cannot_read = true;
    process(&r, outer);
    g_ossl_cannot_read = false;
    const cmp_msg *m = nested_of(&r.msg, 2, 0);
    expect(m, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_EQUAL(m->header.f.pvno, 3);
    CU_ASSERT_TRUE(m->body.u.rep.responses[0].private_key.len > 0);
    // The key opens under the end entity's secret and is the certificate's.
    const cmp_cert_response *cr = &m->body.u.rep.responses[0];
    cm_span env, ctype, ptype, pkg;
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, cr->cert));
    TEST_ASSERT_OK(cmp_encrypted_key_body(&env, cr->private_key));
    const cmp_cms_opener o = {
        .password = CM_SPAN_LIT(EE_SECRET), .min_iterations = 1000, .max_iterations = 100000};
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    crmf_crypto c;
    TEST_ASSERT_OK(crmf_crypto_init(&c, NULL, NULL));
    TEST_ASSERT_OK(cmp_cms_open(&c, &plain, &plain_len, &ctype, env, &o, NULL));
    TEST_ASSERT_OK(cmp_signed_data_content(&ptype, &pkg, cm_span_make(plain, plain_len)));
    EVP_PKEY *key = NULL;
    TEST_ASSERT_OK(cmp_key_package_key(&c, &key, pkg, f.spki));
    EVP_PKEY_free(key);
    cmp_cms_secret_free(plain, plain_len);
    crmf_crypto_cleanup(&c);
    m = nested_of(&r.msg, 2, 1);
    expect(m, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
           "central key generation through an RA is not supported");
    CU_ASSERT_EQUAL(m->body.u.rep.responses[0].private_key.len, 0);
    rsp_free(&r);
    span_free(outer);
    outer = make_nested(&inner[2], 1, P_RA_SIG);
    process(&r, outer);
    m = nested_of(&r.msg, 1, 0);
    expect(m, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
           "central key generation through an RA is not supported");
    rsp_free(&r);
    span_free(outer);
    for (size_t i = 0; i < 3; i++) {
        span_free(inner[i]);
    }
}

// Inner certConf and rr: ir without implicitConfirm in one batch, its certConf in the next
// (MAC-protected by the end entity as it would be alone); then an unprotected rr vouched for
// by the RA certificate revokes the certificate (an RA may revoke for others). A certConf
// vouched for by the RA does not confirm a transaction the end entity's secret opened.
static void test_nested_cert_conf_and_rr(void)
{
    inner_ir ir[2];
    make_ir(&ir[0], P_EE_MAC, false);
    make_ir(&ir[1], P_EE_MAC, false);
    const cm_span ders[2] = {ir[0].der, ir[1].der};
    cm_span outer = make_nested(ders, 2, P_RA_SIG);
    rsp r;
    process(&r, outer);
    span_free(outer);
    cm_span certs[2], nonces[2];
    for (size_t i = 0; i < 2; i++) {
        const cmp_msg *m = nested_of(&r.msg, 2, i);
        expect_issued(m, &ir[i], EE_SECRET);
        CU_ASSERT_FALSE(m->header.implicit_confirm);
        const cm_span c = m->body.u.rep.responses[0].cert;
        uint8_t *cp = malloc(c.len), *np = malloc(16);
        CU_ASSERT_FATAL(cp != NULL && np != NULL && m->header.f.sender_nonce.v.len == 16);
        memcpy(cp, c.p, c.len);
        memcpy(np, m->header.f.sender_nonce.v.p, 16);
        certs[i] = cm_span_make(cp, c.len);
        nonces[i] = cm_span_make(np, 16);
    }
    rsp_free(&r);
    // Round 2: [certConf 0 (EE MAC), certConf 1 unprotected (the RA vouches: refused)].
    cm_span confs[2];
    for (size_t i = 0; i < 2; i++) {
        test_hand x;
        hand_init(&x, CMP_BODY_CERT_CONF, i == 0 ? P_EE_MAC : P_NONE);
        TEST_ASSERT_OK(
            test_hand_cert_conf(&x, cm_span_make(ir[i].tid, 16), nonces[i], certs[i], 0));
        confs[i] = hand_done(&x);
        test_hand_free(&x);
    }
    outer = make_nested(confs, 2, P_RA_SIG);
    process(&r, outer);
    const cmp_msg *c0 = nested_of(&r.msg, 2, 0);
    CU_ASSERT_EQUAL(c0->body.type, CMP_BODY_PKICONF);
    CU_ASSERT_TRUE(validates(c0, EE_SECRET));
    expect(nested_of(&r.msg, 2, 1), CMP_BODY_ERROR, CMP_STATUS_REJECTION,
           CMP_FAIL_BAD_MESSAGE_CHECK, "another credential");
    rsp_free(&r);
    span_free(outer);
    // Round 3: an unprotected rr of certificate 0, vouched for by the RA certificate.
    test_hand x;
    hand_init(&x, CMP_BODY_RR, P_NONE);
    TEST_ASSERT_OK(test_hand_rr(&x, certs[0], 1)); // keyCompromise
    const cm_span rr = hand_done(&x);
    test_hand_free(&x);
    outer = make_nested(&rr, 1, P_RA_SIG);
    process(&r, outer);
    const cmp_msg *rp = nested_of(&r.msg, 1, 0);
    expect(rp, CMP_BODY_RP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(validates(rp, NULL));
    rsp_free(&r);
    span_free(outer);
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, certs[0]));
    store_reader *rd = NULL;
    TEST_ASSERT_OK(store_reader_open(g.st, &rd));
    store_cert_state cs;
    TEST_ASSERT_OK(store_cert_state_get(rd, &cs, "devices", f.serial));
    CU_ASSERT_EQUAL(cs.status, STORE_CERT_REVOKED);
    store_reader_close(rd);
    span_free(rr);
    for (size_t i = 0; i < 2; i++) {
        span_free(confs[i]);
        span_free(certs[i]);
        span_free(nonces[i]);
    }
    inner_free(ir, 2);
}

// A MAC-protected nested message whose RA secret is marked: inner answers signed where the
// inner message was signed (each protected as it would be alone): a signature-protected inner
// ir by a device certificate gets a CA-signed ip, in the same batch as a MAC one.
static void test_nested_mixed_inner_protection(void)
{
    inner_ir ir[2];
    make_ir(&ir[0], P_IDEV_SIG, true);
    make_ir(&ir[1], P_EE_MAC, true);
    const cm_span ders[2] = {ir[0].der, ir[1].der};
    const srv_worker_stats a = stats_now();
    const cm_span outer = make_nested(ders, 2, P_RA_MAC);
    rsp r;
    process(&r, outer);
    const srv_worker_stats b = stats_now();
    expect_issued(nested_of(&r.msg, 2, 0), &ir[0], NULL);
    expect_issued(nested_of(&r.msg, 2, 1), &ir[1], EE_SECRET);
    // Certificates together, the inner ip's signature alone (the MAC ip needs none), then the
    // nested answer.
    CU_ASSERT_EQUAL(b.hsm_submits - a.hsm_submits, 3);
    CU_ASSERT_EQUAL(b.hsm_jobs - a.hsm_jobs, 4);
    rsp_free(&r);
    span_free(outer);
    inner_free(ir, 2);
}

// make_csr returns a PKCS#10 request (DER, heap: OPENSSL_free) for |key| with subject |cn|,
// signed by |key|.
static uint8_t *make_csr(EVP_PKEY *key, const char *cn, cm_span *out)
{
    X509_REQ *rq = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    unsigned char *der = NULL;
    int len = -1;
    if (rq != NULL && n != NULL &&
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) ==
            1 &&
        X509_REQ_set_subject_name(rq, n) == 1 && X509_REQ_set_pubkey(rq, key) == 1 &&
        X509_REQ_sign(rq, key, EVP_sha256()) > 0) {
        len = i2d_X509_REQ(rq, &der);
    }
    X509_NAME_free(n);
    X509_REQ_free(rq);
    *out = len > 0 ? cm_span_make(der, (size_t)len) : cm_span_make(NULL, 0);
    return len > 0 ? der : NULL;
}

// make_kur returns a kur for a fresh key (in |*new_key|) signed by |old_key| with |old_cert|
// (unless |p| is P_NONE: unprotected), naming |old_cert| in oldCertID, implicitConfirm.
static cm_span make_kur(EVP_PKEY *old_key, cm_span old_cert, prot p, EVP_PKEY **new_key)
{
    test_hand x;
    hand_init(&x, CMP_BODY_KUR, p == P_NONE ? P_NONE : P_EE_MAC);
    *new_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(*new_key);
    TEST_ASSERT_OK(test_hand_template(&x, *new_key, "/CN=nested-cr")); // the same subject
    if (p != P_NONE) {
        TEST_ASSERT_OK(test_hand_sign(&x, old_key, old_cert));
    }
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, old_cert));
    TEST_ASSERT_OK(test_hand_old_cert_id(&x, ca_authority_subject(g.authority), f.serial));
    test_hand_add_info(&x, cmp_itav_implicit_confirm());
    const cm_span der = hand_done(&x);
    test_hand_free(&x);
    return der;
}

// The other inner body types, each handled as it would be alone: a cr, a p10cr and a genm
// (MAC-protected by the end entity) next to an ir; then a kur signed by the cr's certificate
// is served in a batch, while kurs the RA would vouch for (unprotected) are refused in place:
// under the RA certificate the signer is not the certificate to update (badCertId), under the
// RA's MAC a kur is not signed at all (wrongIntegrity); a vouched genm is answered.
static void test_nested_inner_body_types(void)
{
    inner_ir ir[3]; // [0] the cr, [1] the p10cr's key, [2] the ir
    test_hand x;
    hand_init(&x, CMP_BODY_CR, P_EE_MAC);
    ir[0].key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir[0].key);
    TEST_ASSERT_OK(test_hand_template(&x, ir[0].key, "/CN=nested-cr"));
    test_hand_add_info(&x, cmp_itav_implicit_confirm());
    memcpy(ir[0].tid, x.tid, sizeof(ir[0].tid));
    ir[0].der = hand_done(&x);
    test_hand_free(&x);
    ir[1].key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir[1].key);
    cm_span csr;
    uint8_t *csr_der = make_csr(ir[1].key, "nested-p10", &csr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(csr_der);
    hand_init(&x, CMP_BODY_P10CR, P_EE_MAC);
    TEST_ASSERT_OK(crmf_csr_from_der(&x.body.u.p10, csr));
    test_hand_add_info(&x, cmp_itav_implicit_confirm());
    memcpy(ir[1].tid, x.tid, sizeof(ir[1].tid));
    ir[1].der = hand_done(&x);
    test_hand_free(&x);
    make_ir(&ir[2], P_EE_MAC, true);
    const cmp_itav k_ask[] = {{CM_SPAN_LIT(DER_OID_IT_CA_CERTS), {0}}};
    hand_init(&x, CMP_BODY_GENM, P_EE_MAC);
    x.body.u.gen.items = k_ask;
    x.body.u.gen.num = 1;
    const cm_span genm = hand_done(&x);
    test_hand_free(&x);
    const cm_span ders[4] = {ir[0].der, ir[1].der, genm, ir[2].der};
    cm_span outer = make_nested(ders, 4, P_RA_SIG);
    rsp r;
    process(&r, outer);
    CU_ASSERT_TRUE(validates(&r.msg, NULL));
    const cmp_msg *cp = nested_of(&r.msg, 4, 0);
    expect(cp, CMP_BODY_CP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(validates(cp, EE_SECRET));
    const cmp_msg *p10 = nested_of(&r.msg, 4, 1);
    expect(p10, CMP_BODY_CP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(cm_span_eq(p10->header.f.transaction_id.v, cm_span_make(ir[1].tid, 16)));
    CU_ASSERT_EQUAL(p10->body.u.rep.responses[0].cert_req_id, -1);
    const cmp_msg *gp = nested_of(&r.msg, 4, 2);
    CU_ASSERT_EQUAL(gp->body.type, CMP_BODY_GENP);
    CU_ASSERT_TRUE(validates(gp, EE_SECRET));
    expect_issued(nested_of(&r.msg, 4, 3), &ir[2], EE_SECRET);
    // The cr's certificate, for the kurs.
    CU_ASSERT_FATAL(cp->body.type == CMP_BODY_CP && cp->body.u.rep.num_responses == 1);
    const cm_span c = cp->body.u.rep.responses[0].cert;
    uint8_t *old_der = malloc(c.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(old_der);
    memcpy(old_der, c.p, c.len);
    const cm_span old_cert = cm_span_make(old_der, c.len);
    rsp_free(&r);
    span_free(outer);
    // A kur signed by the certificate it updates, and one the RA certificate would vouch for.
    EVP_PKEY *k1 = NULL, *k2 = NULL, *k3 = NULL;
    const cm_span kurs[3] = {make_kur(ir[0].key, old_cert, P_EE_MAC, &k1),
                             make_kur(ir[0].key, old_cert, P_NONE, &k2), genm};
    outer = make_nested(kurs, 3, P_RA_SIG);
    process(&r, outer);
    const cmp_msg *kup = nested_of(&r.msg, 3, 0);
    expect(kup, CMP_BODY_KUP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(validates(kup, NULL));
    expect(nested_of(&r.msg, 3, 1), CMP_BODY_KUP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "kur must be signed by the certificate to update");
    CU_ASSERT_EQUAL(nested_of(&r.msg, 3, 2)->body.type, CMP_BODY_GENP); // the same genm again
    rsp_free(&r);
    span_free(outer);
    // Under the RA's MAC secret an unprotected kur is MAC-protected by the RA: refused.
    const cm_span kur3 = make_kur(ir[0].key, old_cert, P_NONE, &k3);
    outer = make_nested(&kur3, 1, P_RA_MAC);
    process(&r, outer);
    expect(nested_of(&r.msg, 1, 0), CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
           "not MAC-protected");
    rsp_free(&r);
    span_free(outer);
    span_free(kur3);
    span_free(kurs[0]);
    span_free(kurs[1]);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k3);
    free(old_der);
    span_free(genm);
    OPENSSL_free(csr_der);
    inner_free(ir, 3);
}

// The same ir twice in one batch (one transactionID, one key): its reservations go to the
// store in the same batch, yet exactly one is issued and the other refused, as the second of
// two single requests would be; nothing is issued twice. Likewise a key certified before, and
// one new key asked for twice in a batch (allow_key_reuse off).
static void test_nested_same_request_twice(void)
{
    inner_ir ir[1];
    make_ir(&ir[0], P_EE_MAC, true);
    const cm_span ders[2] = {ir[0].der, ir[0].der};
    const cm_span outer = make_nested(ders, 2, P_RA_SIG);
    rsp r;
    process(&r, outer);
    const cmp_msg *a = nested_of(&r.msg, 2, 0), *b = nested_of(&r.msg, 2, 1);
    const bool a_ok = status_of(a) != NULL && status_of(a)->status == CMP_STATUS_ACCEPTED;
    const bool b_ok = status_of(b) != NULL && status_of(b)->status == CMP_STATUS_ACCEPTED;
    CU_ASSERT_TRUE(a_ok != b_ok); // exactly one issued
    const cmp_msg *refused = a_ok ? b : a;
    expect_issued(a_ok ? a : b, &ir[0], EE_SECRET);
    expect(refused, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_TRANSACTION_ID_IN_USE, NULL);
    rsp_free(&r);
    span_free(outer);
    // Two irs for the same key (allow_key_reuse off): one issued, the other refused.
    test_hand x;
    hand_init(&x, CMP_BODY_IR, P_EE_MAC);
    TEST_ASSERT_OK(test_hand_template(&x, ir[0].key, "/CN=nested-same-key"));
    test_hand_add_info(&x, cmp_itav_implicit_confirm());
    const cm_span again = hand_done(&x);
    test_hand_free(&x);
    inner_ir ir2[1];
    make_ir(&ir2[0], P_EE_MAC, true);
    test_hand y;
    hand_init(&y, CMP_BODY_IR, P_EE_MAC);
    TEST_ASSERT_OK(test_hand_template(&y, ir2[0].key, "/CN=nested-same-key-2"));
    test_hand_add_info(&y, cmp_itav_implicit_confirm());
    const cm_span again2 = hand_done(&y);
    test_hand_free(&y);
    const cm_span keys[3] = {again, ir2[0].der, again2};
    const cm_span outer2 = make_nested(keys, 3, P_RA_SIG);
    process(&r, outer2);
    expect(nested_of(&r.msg, 3, 0), CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           NULL); // ir[0]'s key, certified above
    // [1] and [2] ask for the same new key: whichever reserved first is issued (the batch's
    // order of reservations is not the message order), the other refused.
    const cmp_msg *k1 = nested_of(&r.msg, 3, 1), *k2 = nested_of(&r.msg, 3, 2);
    const bool first = status_of(k1) != NULL && status_of(k1)->status == CMP_STATUS_ACCEPTED;
    const bool second = status_of(k2) != NULL && status_of(k2)->status == CMP_STATUS_ACCEPTED;
    CU_ASSERT_TRUE(first != second);
    expect(first ? k2 : k1, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "or an enrolment of it is in progress");
    rsp_free(&r);
    span_free(outer2);
    span_free(again);
    span_free(again2);
    inner_free(ir2, 1);
    inner_free(ir, 1);
}

// The nested answer is built in the request's arena, whose cap is fixed (arena_cap): a batch
// whose answers do not fit is refused readably (systemFailure, "send smaller batches"), not
// left without an answer; a smaller batch on the same engine goes through.
static void test_nested_answer_over_the_arena_cap(void)
{
    srv_engine *e = NULL;
    cm_cq cq;
    srv_worker *w = NULL;
    CU_ASSERT_TRUE_FATAL(make_engine(&e, &cq, &w, 2, ARENA_CAP));
    g.w = w;
    inner_ir ir[MAX_BATCH];
    cm_span ders[MAX_BATCH];
    for (size_t i = 0; i < MAX_BATCH; i++) {
        make_ir(&ir[i], P_IDEV_SIG, true); // signed ips: the larger answers
        ders[i] = ir[i].der;
    }
    cm_span outer = make_nested(ders, MAX_BATCH, P_RA_SIG);
    rsp r;
    process(&r, outer);
    expect(&r.msg, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_SYSTEM_FAILURE,
           "do not fit this server's response limit; send smaller batches");
    rsp_free(&r);
    span_free(outer);
    inner_free(ir, MAX_BATCH);
    make_ir(&ir[0], P_IDEV_SIG, true);
    outer = make_nested(&ir[0].der, 1, P_RA_SIG);
    process(&r, outer);
    expect_issued(nested_of(&r.msg, 1, 0), &ir[0], NULL);
    rsp_free(&r);
    span_free(outer);
    inner_free(ir, 1);
    g.w = g.worker;
    srv_worker_free(w);
    srv_engine_free(e);
    cm_cq_cleanup(&cq);
}

// With issue 23's abuse limits on (as certmintd runs): the RA's PBM is checked on the KDF
// pool, the inner PBMs where the batch verifies them (the verification threads, which have no
// cq for the KDF pool, or inline); every inner ir is issued, with the pool and without.
static void test_nested_with_abuse_limits(void)
{
    for (uint32_t threads = 0; threads <= 2; threads += 2) {
        srv_engine *e = NULL;
        cm_cq cq;
        srv_worker *w = NULL;
        CU_ASSERT_TRUE_FATAL(make_engine_with(&e, &cq, &w, threads, 0, true));
        g.w = w;
        inner_ir ir[3];
        cm_span ders[3];
        for (size_t i = 0; i < 3; i++) {
            make_ir(&ir[i], P_EE_MAC, true);
            ders[i] = ir[i].der;
        }
        const cm_span outer = make_nested(ders, 3, P_RA_MAC);
        rsp r;
        process(&r, outer);
        CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_NESTED);
        if (r.msg.body.type == CMP_BODY_NESTED) {
            for (size_t i = 0; i < 3; i++) {
                expect_issued(nested_of(&r.msg, 3, i), &ir[i], EE_SECRET);
            }
        }
        rsp_free(&r);
        span_free(outer);
        inner_free(ir, 3);
        g.w = g.worker;
        srv_worker_free(w);
        srv_engine_free(e);
        cm_cq_cleanup(&cq);
    }
}

int test_srv_nested_register(void);
int test_srv_nested_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_nested_batch_of_irs),
        TEST_CASE(test_nested_batches_hsm_and_store),
        TEST_CASE(test_nested_outer_protection),
        TEST_CASE(test_nested_inner_failure_among_good),
        TEST_CASE(test_nested_batch_over_the_limit),
        TEST_CASE(test_nested_depth),
        TEST_CASE(test_nested_unprotected_inner_vouched),
        TEST_CASE(test_nested_central_keygen),
        TEST_CASE(test_nested_cert_conf_and_rr),
        TEST_CASE(test_nested_mixed_inner_protection),
        TEST_CASE(test_nested_inner_body_types),
        TEST_CASE(test_nested_same_request_twice),
        TEST_CASE(test_nested_answer_over_the_arena_cap),
        TEST_CASE(test_nested_with_abuse_limits),
    };
    return test_register_suite("srv_nested", nested_init, nested_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
