// Suite "srv_poll": delayed delivery, manual approval and cross-certification (issue 16),
// driven in process like the other server suites (a throwaway SoftHSM token, a real SQLite
// store) with requests built by the project's marshal code (tests/support/test_hand): ir and
// ccr answered `waiting`, pollReq answered pollRep and then the certificate or the rejection,
// the drain (srv_engine_drain), the store's decisions (what `certmint approve` and `reject` do),
// expiry, the load decision and its bound, and the bad cases (unknown and finished
// transactions, a wrong certReqId, the wrong credential, a ccr from a CA not configured, a ccr
// asking for a longer path). Every response is accepted by OpenSSL's d2i_OSSL_CMP_MSG, and the
// cross-certificate is verified with `openssl verify` as the link between this CA and the other
// CA's end entity.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/cmp.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/server/srv.h"
#include "engine/server/srv_internal.h"
#include "tests/support/test_hand.h"
#include "tests/support/test_support.h"

#define SECRET_REF "line-7"
#define SECRET     "factory-secret"
#define OTHER_REF  "line-8" // another client of the same CAs
#define OTHER      "other-secret"
// OpenSSL keeps its body type numbers in an internal header: ccp is [14] (RFC 9810 §5.1.2).
#define BODY_CCP 14

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
    ca_profile *cross_profile;
    ca_trust *own_trust;
    srv_secret secrets[2];
    srv_profile cross;
    cm_span other_cert; // the other CA (a cross-certification requester), DER
    cm_span rogue_cert; // a CA that is not one
    uint8_t *other_der, *rogue_der;
    EVP_PKEY *other_key, *rogue_key;
    srv_ca cas[2]; // "devices" (auto approval, ccr) and "approve" (approval = manual)
    srv_engine *engine;
    cm_cq cq;
    srv_worker *worker;
    X509 *ca_x509;
    char ca_pem[320], other_pem[320], other_keyf[320];
} g;

#define CA_AUTO   (&g.cas[0])
#define CA_MANUAL (&g.cas[1])

// --- fixture --------------------------------------------------------------------------------

static bool make_root(const char *pem_path)
{
    return test_hand_make_root(&g.ca_x509, g.pool, g.ca_key, "certmint poll root", 0x3003,
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

static bool make_profile(ca_profile **out, const char *name, bool is_ca, const char *ext)
{
    static const char conf_text[] = "[ext]\nbasicConstraints = critical, CA:FALSE\n"
                                    "keyUsage = critical, digitalSignature\n";
    CONF *conf = NCONF_new(NULL);
    BIO *bio = BIO_new_mem_buf(conf_text, (int)sizeof(conf_text) - 1);
    long line;
    const bool conf_ok = conf != NULL && bio != NULL && NCONF_load_bio(conf, bio, &line) == 1;
    BIO_free(bio);
    char err[256];
    ca_profile_params pp = {.name = name,
                            .default_days = 365,
                            .max_days = 730,
                            .key_types = CA_KEY_EC_P256,
                            .rsa_min_bits = 2048,
                            .rsa_max_bits = 4096,
                            .subject_mode = CA_SUBJECT_COPY,
                            .implicit_confirm = true,
                            .is_ca = is_ca,
                            .has_path_len = is_ca,
                            .path_len = 0};
    const bool ok = conf_ok && cm_ok(ca_profile_new(out, err, sizeof(err), &pp, conf, ext));
    if (!ok) {
        fprintf(stderr, "profile %s: %s\n", name, err);
    }
    NCONF_free(conf);
    return ok;
}

static int poll_init(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "srvpoll") || !test_token_create(&g.token, "srv-poll")) {
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
    char rogue_pem[320], rogue_key[320];
    test_path(g.ca_pem, sizeof(g.ca_pem), g.dir, "ca.pem");
    test_path(g.other_pem, sizeof(g.other_pem), g.dir, "other-ca.pem");
    test_path(g.other_keyf, sizeof(g.other_keyf), g.dir, "other-ca.key");
    test_path(rogue_pem, sizeof(rogue_pem), g.dir, "rogue-ca.pem");
    test_path(rogue_key, sizeof(rogue_key), g.dir, "rogue-ca.key");
    // The other CA: a root of its own, with the usual CA key usages only.
    const char *const root_ext[] = {"basicConstraints=critical,CA:TRUE",
                                    "keyUsage=critical,keyCertSign,cRLSign", NULL};
    const test_pki_cert_spec other = {
        .subject = "/O=Other PKI/CN=Other Root CA", .days = 30, .addext = root_ext};
    const test_pki_cert_spec rogue = {
        .subject = "/O=Rogue/CN=Rogue Root CA", .days = 30, .addext = root_ext};
    if (!make_root(g.ca_pem) || !test_pki_make_ca(g.other_keyf, g.other_pem, &other, g.log) ||
        !test_pki_make_ca(rogue_key, rogue_pem, &rogue, g.log)) {
        return 1;
    }
    g.other_key = test_pki_read_key(g.other_keyf);
    g.rogue_key = test_pki_read_key(rogue_key);
    g.other_der = cert_der(g.other_pem, &g.other_cert);
    g.rogue_der = cert_der(rogue_pem, &g.rogue_cert);
    if (g.other_key == NULL || g.rogue_key == NULL || g.other_der == NULL || g.rogue_der == NULL) {
        return 1;
    }
    char db[400], err_s[256];
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    const char *own[] = {g.ca_pem};
    if (!cm_ok(store_open(&g.st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot, NULL, NULL, &lim)) ||
        !cm_ok(ca_authority_load(&g.authority, err_s, sizeof(err_s), g.ca_pem, NULL)) ||
        !cm_ok(ca_trust_new(&g.own_trust, err_s, sizeof(err_s), own, 1, 64))) {
        fprintf(stderr, "setup: %s\n", err_s);
        return 1;
    }
    if (!make_profile(&g.profile, "devices", false, "ext") ||
        !make_profile(&g.cross_profile, "cross", true, NULL)) {
        return 1;
    }
    g.secrets[0].ref = CM_SPAN_LIT(SECRET_REF);
    g.secrets[0].secret = CM_SPAN_LIT(SECRET);
    g.secrets[1].ref = CM_SPAN_LIT(OTHER_REF);
    g.secrets[1].secret = CM_SPAN_LIT(OTHER);
    g.cross = (srv_profile){
        .name = "cross", .profile = g.cross_profile, .policy = {.manual_approval = true}};
    for (int i = 0; i < 2; i++) {
        g.cas[i] = (srv_ca){.name = i == 0 ? "devices" : "approve",
                            .authority = g.authority,
                            .profile = g.profile,
                            .ca_key = g.ca_key,
                            .ca_sig_alg = HSM_SIG_ECDSA_SHA256,
                            .cmp_cert = g.authority,
                            .cmp_key = g.ca_key,
                            .cmp_sig_alg = HSM_SIG_ECDSA_SHA256,
                            .secrets = g.secrets,
                            .num_secrets = 2,
                            .own_trust = g.own_trust,
                            .ca_pubs = true,
                            .profile_name = "devices",
                            .policy = {.manual_approval = i == 1},
                            .crl_validity = 86400,
                            .cross_requesters = &g.other_cert,
                            .num_cross_requesters = 1,
                            .cross_profile = &g.cross};
    }
    srv_params sp = {.hsm = g.pool,
                     .store = g.st,
                     .prot = g.prot,
                     .cas = g.cas,
                     .num_cas = 2,
                     .message_time_window = 600,
                     .confirm_wait_time = 300,
                     .waiting_timeout = 3600,
                     .max_pending = 2,
                     .approval_check_after = 7};
    if (!cm_ok(srv_engine_new(&g.engine, &sp)) || !cm_ok(cm_cq_init(&g.cq)) ||
        !cm_ok(srv_worker_new(&g.worker, g.engine, &g.cq))) {
        return 1;
    }
    return 0;
}

static int poll_cleanup(void)
{
    srv_worker_free(g.worker);
    srv_engine_free(g.engine);
    cm_cq_cleanup(&g.cq);
    store_close(g.st);
    hsm_pool_free(g.pool);
    hsm_key_free(g.ca_key);
    hsm_token_free(g.tok);
    ca_trust_free(g.own_trust);
    ca_profile_free(g.profile);
    ca_profile_free(g.cross_profile);
    ca_authority_free(g.authority);
    cmp_protect_ctx_free(g.prot);
    X509_free(g.ca_x509);
    EVP_PKEY_free(g.other_key);
    EVP_PKEY_free(g.rogue_key);
    OPENSSL_free(g.other_der);
    OPENSSL_free(g.rogue_der);
    test_token_destroy(&g.token);
    (void)test_rmtree(g.dir);
    return 0;
}

// --- requests and responses -------------------------------------------------------------------

typedef struct rsp {
    srv_request *req;
    cm_arena arena;
    cmp_msg msg;
    OSSL_CMP_MSG *ossl;
    uint8_t nonce[16]; // the response's senderNonce
} rsp;

static void process(rsp *out, const srv_ca *ca, const uint8_t *der, size_t len)
{
    memset(out, 0, sizeof(*out));
    out->req = srv_request_new(g.worker, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->req);
    uint8_t *body = srv_request_body(out->req, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memcpy(body, der, len);
    const cm_span resp = srv_request_run(out->req, ca, cm_span_make(body, len));
    CU_ASSERT_FATAL(resp.len > 0);
    cm_arena_init(&out->arena, 0, 0);
    CU_ASSERT_FATAL(cm_ok(cmp_msg_from_der(&out->arena, &out->msg, resp, NULL)));
    const unsigned char *q = resp.p;
    out->ossl = d2i_OSSL_CMP_MSG(NULL, &q, (long)resp.len);
    CU_ASSERT_PTR_NOT_NULL(out->ossl); // OpenSSL's decoder accepts every response
    const cmp_opt_span sn = out->msg.header.f.sender_nonce;
    CU_ASSERT_FATAL(sn.present && sn.v.len == 16);
    memcpy(out->nonce, sn.v.p, 16);
}

static void rsp_free(rsp *r)
{
    OSSL_CMP_MSG_free(r->ossl);
    cm_arena_cleanup(&r->arena);
    srv_request_free(r->req);
}

static void hand_init(test_hand *x, cmp_body_type t)
{
    test_hand_init(x, t, g.prot, ca_authority_subject(g.authority), CM_SPAN_LIT(SECRET_REF),
                   SECRET);
}

static void hand_run(rsp *out, const srv_ca *ca, test_hand *x)
{
    uint8_t *der = NULL;
    size_t len = 0;
    TEST_ASSERT_OK(test_hand_build(x, &der, &len));
    process(out, ca, der, len);
    free(der);
}

// status_of returns the PKIStatusInfo of an error, or of the one CertResponse of an
// ip/cp/kup/ccp; NULL otherwise.
static const cmp_status_info *status_of(const rsp *r)
{
    const cmp_body *b = &r->msg.body;
    if (b->type == CMP_BODY_ERROR) {
        return &b->u.error.status;
    }
    if ((b->type == CMP_BODY_IP || b->type == CMP_BODY_CP || b->type == CMP_BODY_KUP ||
         b->type == CMP_BODY_CCP) &&
        b->u.rep.num_responses == 1) {
        return &b->u.rep.responses[0].status;
    }
    return NULL;
}

// status_has reports whether |r|'s statusString (or a pollRep's reason) contains |want|.
static bool text_has(cm_span free_text, const char *want)
{
    // PKIFreeText: SEQUENCE OF UTF8String; the server writes one.
    der_reader rd, seq;
    cm_span s;
    der_reader_init(&rd, free_text);
    if (!cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) ||
        !cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &s))) {
        return false;
    }
    char buf[600];
    const size_t n = s.len < sizeof(buf) - 1 ? s.len : sizeof(buf) - 1;
    memcpy(buf, s.p, n);
    buf[n] = '\0';
    if (strstr(buf, want) == NULL) {
        fprintf(stderr, "\n  text \"%s\"\n  wanted \"%s\"\n", buf, want);
        return false;
    }
    return true;
}

// expect_status checks |r|'s body type, PKIStatus, failInfo bit (-1: none) and statusString.
static void expect_status(const rsp *r, cmp_body_type type, int64_t status, int fail_bit,
                          const char *text)
{
    CU_ASSERT_EQUAL(r->msg.body.type, type);
    const cmp_status_info *st = status_of(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(st->status, status);
    if (fail_bit < 0) {
        CU_ASSERT_FALSE(st->has_fail_info && st->fail_info != 0);
    } else {
        CU_ASSERT_TRUE(st->has_fail_info && st->fail_info == CMP_FAILINFO_BIT((uint32_t)fail_bit));
    }
    if (text != NULL) {
        CU_ASSERT_TRUE(text_has(st->status_string, text));
    }
}

static bool validates_with_secret(const rsp *r)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    const bool ok = ctx != NULL &&
                    OSSL_CMP_CTX_set1_secretValue(ctx, (const unsigned char *)SECRET,
                                                  (int)strlen(SECRET)) == 1 &&
                    OSSL_CMP_validate_msg(ctx, r->ossl) == 1;
    OSSL_CMP_CTX_free(ctx);
    return ok;
}

static bool validates_with_ca(const rsp *r)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    const bool ok = ctx != NULL && OSSL_CMP_CTX_set1_srvCert(ctx, g.ca_x509) == 1 &&
                    OSSL_CMP_validate_msg(ctx, r->ossl) == 1;
    OSSL_CMP_CTX_free(ctx);
    return ok;
}

// issued_cert returns the certificate of |r|'s one CertResponse (X509_free it), checked to be
// signed by the CA and to hold |key|.
static X509 *issued_cert(const rsp *r, EVP_PKEY *key)
{
    CU_ASSERT_EQUAL_FATAL(r->msg.body.u.rep.num_responses, 1);
    const cm_span c = r->msg.body.u.rep.responses[0].cert;
    CU_ASSERT_FATAL(c.len > 0);
    const unsigned char *q = c.p;
    X509 *x = d2i_X509(NULL, &q, (long)c.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(X509_verify(x, X509_get0_pubkey(g.ca_x509)), 1);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(x), key), 1);
    return x;
}

// enrol sends an ir (PBM, a fresh key for subject |dn|) to |ca| and leaves its hand in |x| (the
// transactionID) and its key in |*out_key| (EVP_PKEY_free it).
static void enrol(rsp *out, const srv_ca *ca, test_hand *x, EVP_PKEY **out_key, const char *dn,
                  bool implicit)
{
    hand_init(x, CMP_BODY_IR);
    *out_key = EVP_EC_gen("P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(*out_key);
    TEST_ASSERT_OK(test_hand_template(x, *out_key, dn));
    if (implicit) {
        test_hand_add_info(x, cmp_itav_implicit_confirm());
    }
    hand_run(out, ca, x);
}

// poll sends a pollReq in |first|'s transaction answering |prev|, asking for |num| requests of
// certReqId |id|, protected with the PBM secret or, with |key|, signed with |cert|.
static void poll(rsp *out, const srv_ca *ca, const test_hand *first, const rsp *prev, int64_t id,
                 size_t num, EVP_PKEY *key, cm_span cert)
{
    test_hand x;
    hand_init(&x, CMP_BODY_POLL_REQ);
    if (key != NULL) {
        TEST_ASSERT_OK(test_hand_sign(&x, key, cert));
    }
    TEST_ASSERT_OK(test_hand_poll(
        &x, cm_span_make(first->tid, 16),
        prev != NULL ? cm_span_make(prev->nonce, 16) : cm_span_make(NULL, 0), id, num));
    hand_run(out, ca, &x);
    test_hand_free(&x);
}

// poll_rep_of checks that |r| is a pollRep for certReqId |id| and returns its checkAfter.
static int64_t poll_rep_of(const rsp *r, int64_t id, const char *reason)
{
    CU_ASSERT_EQUAL_FATAL(r->msg.body.type, CMP_BODY_POLL_REP);
    CU_ASSERT_EQUAL_FATAL(r->msg.body.u.poll_rep.num, 1);
    const cmp_poll_rep *p = &r->msg.body.u.poll_rep.items[0];
    CU_ASSERT_EQUAL(p->cert_req_id, id);
    if (reason != NULL) {
        CU_ASSERT_TRUE(text_has(p->reason, reason));
    }
    return p->check_after;
}

static store_pending pending_of(cm_arena *a, const srv_ca *ca, const test_hand *x)
{
    store_reader *rd = NULL;
    TEST_ASSERT_OK(store_reader_open(g.st, &rd));
    store_pending p;
    memset(&p, 0, sizeof(p));
    TEST_ASSERT_OK(store_pending_get(rd, a, &p, ca->name, cm_span_make(x->tid, 16)));
    store_reader_close(rd);
    return p;
}

static cm_result decide(int64_t id, bool approve, const char *reason)
{
    store_job j;
    store_job_init(&j, STORE_OP_PENDING_DECIDE, NULL);
    j.u.pop = (store_pending_op){.id = id,
                                 .time = cm_time_now(),
                                 .approve = approve,
                                 .fail_info = (int)cm_code_failinfo(SRV_E_OPERATOR_REJECTED),
                                 .status_text = reason,
                                 .keep_s = 3600};
    return store_run(g.st, &j);
}

static size_t drain(void)
{
    size_t done = 0;
    TEST_ASSERT_OK(srv_engine_drain(g.engine, cm_time_now(), 64, &done));
    return done;
}

// cert_conf confirms |cert| in |first|'s transaction, answering |prev| (PBM).
static void cert_conf(rsp *out, const test_hand *first, const rsp *prev, X509 *cert)
{
    unsigned char *der = NULL;
    const int len = i2d_X509(cert, &der);
    CU_ASSERT_FATAL(len > 0);
    test_hand x;
    hand_init(&x, CMP_BODY_CERT_CONF);
    TEST_ASSERT_OK(test_hand_cert_conf(&x, cm_span_make(first->tid, 16),
                                       cm_span_make(prev->nonce, 16),
                                       cm_span_make(der, (size_t)len), 0));
    hand_run(out, CA_MANUAL, &x);
    test_hand_free(&x);
    OPENSSL_free(der);
}

// --- manual approval ----------------------------------------------------------------------------

// An ir under a profile with manual approval: answered waiting (an ip with status waiting and
// no certificate), pollRep with the approval checkAfter while an operator decides; once approved
// and drained the next pollReq gets the certificate, certConf confirms it (answering that
// delivery's senderNonce), and the transaction is finished.
static void test_poll_approved(void)
{
    test_hand ir;
    EVP_PKEY *key = NULL;
    rsp w;
    enrol(&w, CA_MANUAL, &ir, &key, "/CN=approve-me", false);
    expect_status(&w, CMP_BODY_IP, CMP_STATUS_WAITING, -1, "approval of the CA's operator");
    CU_ASSERT_FALSE(w.msg.body.u.rep.responses[0].has_certified_key_pair);
    CU_ASSERT_TRUE(validates_with_secret(&w));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    const store_pending p = pending_of(&a, CA_MANUAL, &ir);
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_APPROVAL);
    CU_ASSERT_EQUAL(p.why, STORE_PENDING_WHY_APPROVAL);
    CU_ASSERT_STRING_EQUAL(p.subject, "CN=approve-me");
    CU_ASSERT_STRING_EQUAL(p.key_type, "EC P-256");
    CU_ASSERT_STRING_EQUAL(p.requester, "senderKID line-7");
    CU_ASSERT_STRING_EQUAL(p.profile, "devices");
    // While it waits: pollRep, certReqId 0, the configured checkAfter; the drain leaves it.
    rsp r1;
    poll(&r1, CA_MANUAL, &ir, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    CU_ASSERT_EQUAL(poll_rep_of(&r1, 0, "approval"), 7);
    CU_ASSERT_TRUE(validates_with_secret(&r1));
    CU_ASSERT_EQUAL(drain(), 0);
    // Approved (certmint approve), signed by the drain.
    TEST_ASSERT_OK(decide(p.id, true, NULL));
    rsp r2;
    poll(&r2, CA_MANUAL, &ir, &r1, 0, 1, NULL, cm_span_make(NULL, 0));
    CU_ASSERT_EQUAL(poll_rep_of(&r2, 0, "approved"), 1);
    CU_ASSERT_EQUAL(drain(), 1);
    CU_ASSERT_EQUAL(pending_of(&a, CA_MANUAL, &ir).state, STORE_PENDING_ISSUED);
    rsp r3;
    poll(&r3, CA_MANUAL, &ir, &r2, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r3, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(validates_with_secret(&r3));
    CU_ASSERT_EQUAL(r3.msg.body.u.rep.num_ca_pubs, 1);
    CU_ASSERT_EQUAL(r3.msg.header.num_cert_profiles, 0);
    CU_ASSERT_FALSE(r3.msg.header.implicit_confirm);
    X509 *cert = issued_cert(&r3, key);
    // certConf answers the delivery: the certificate becomes valid.
    rsp c;
    cert_conf(&c, &ir, &r3, cert);
    CU_ASSERT_EQUAL(c.msg.body.type, CMP_BODY_PKICONF);
    store_reader *rd = NULL;
    TEST_ASSERT_OK(store_reader_open(g.st, &rd));
    store_cert sc;
    TEST_ASSERT_OK(store_cert_get(rd, &a, &sc, "approve", p.serial));
    CU_ASSERT_EQUAL(sc.status, STORE_CERT_VALID);
    store_reader_close(rd);
    // Finished: another pollReq is a readable badRequest.
    rsp r4;
    poll(&r4, CA_MANUAL, &ir, &c, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r4, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST, "finished");
    CU_ASSERT_TRUE(validates_with_secret(&r4));
    rsp_free(&w);
    rsp_free(&r1);
    rsp_free(&r2);
    rsp_free(&r3);
    rsp_free(&c);
    rsp_free(&r4);
    X509_free(cert);
    EVP_PKEY_free(key);
    test_hand_free(&ir);
    cm_arena_cleanup(&a);
}

// A rejection (certmint reject --reason): the next pollReq gets an ip with the rejection, the
// operator's reason as statusString; the transaction is finished; the key is free again.
static void test_poll_rejected(void)
{
    test_hand ir;
    EVP_PKEY *key = NULL;
    rsp w;
    enrol(&w, CA_MANUAL, &ir, &key, "/CN=reject-me", false);
    expect_status(&w, CMP_BODY_IP, CMP_STATUS_WAITING, -1, NULL);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    const store_pending p = pending_of(&a, CA_MANUAL, &ir);
    TEST_ASSERT_OK(decide(p.id, false, "rejected by the CA operator: not on the device list"));
    TEST_ASSERT_CODE(decide(p.id, true, NULL), STORE_E_PENDING_STATE); // decided already
    CU_ASSERT_EQUAL(drain(), 0);
    rsp r1;
    poll(&r1, CA_MANUAL, &ir, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r1, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
                  "rejected by the CA operator: not on the device list");
    CU_ASSERT_TRUE(validates_with_secret(&r1));
    rsp r2;
    poll(&r2, CA_MANUAL, &ir, &r1, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r2, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
                  "finished: its rejection was delivered");
    // The key was never certified: a new request for it waits again, and is issued.
    test_hand again;
    hand_init(&again, CMP_BODY_IR);
    TEST_ASSERT_OK(test_hand_template(&again, key, "/CN=reject-me"));
    rsp w2;
    hand_run(&w2, CA_MANUAL, &again);
    expect_status(&w2, CMP_BODY_IP, CMP_STATUS_WAITING, -1, NULL);
    rsp_free(&w);
    rsp_free(&r1);
    rsp_free(&r2);
    rsp_free(&w2);
    EVP_PKEY_free(key);
    test_hand_free(&ir);
    test_hand_free(&again);
    cm_arena_cleanup(&a);
}

// The bad pollReqs: an unknown transaction, the wrong certReqId, two requests asked for, no
// recipNonce, a signature where the request had a MAC, another client's secret: each a readable
// error.
static void test_poll_bad_requests(void)
{
    test_hand ir;
    EVP_PKEY *key = NULL;
    rsp w;
    enrol(&w, CA_MANUAL, &ir, &key, "/CN=bad-polls", false);
    expect_status(&w, CMP_BODY_IP, CMP_STATUS_WAITING, -1, NULL);
    rsp r;
    test_hand unknown;
    hand_init(&unknown, CMP_BODY_IR); // a transactionID never used
    poll(&r, CA_MANUAL, &unknown, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
                  "in which nothing waits at this CA");
    CU_ASSERT_TRUE(validates_with_secret(&r));
    rsp_free(&r);
    // The same transaction at another CA is unknown there.
    poll(&r, CA_AUTO, &ir, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST, "nothing waits");
    rsp_free(&r);
    poll(&r, CA_MANUAL, &ir, &w, 5, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
                  "pollReq asks for certReqId 5; the request waiting in transaction");
    rsp_free(&r);
    poll(&r, CA_MANUAL, &ir, &w, -1, 0, NULL, cm_span_make(NULL, 0)); // none: -1, not 0
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST, "certReqId -1");
    rsp_free(&r);
    poll(&r, CA_MANUAL, &ir, &w, 0, 2, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST, "not 2");
    rsp_free(&r);
    poll(&r, CA_MANUAL, &ir, NULL, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_RECIPIENT_NONCE,
                  "recipNonce");
    rsp_free(&r);
    poll(&r, CA_MANUAL, &ir, &w, 0, 1, g.other_key, g.other_cert);
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
                  "pollReq must be protected like its request");
    rsp_free(&r);
    // Another client of the CA (its own valid secret) cannot collect this client's request.
    test_hand other;
    test_hand_init(&other, CMP_BODY_POLL_REQ, g.prot, ca_authority_subject(g.authority),
                   CM_SPAN_LIT(OTHER_REF), OTHER);
    TEST_ASSERT_OK(
        test_hand_poll(&other, cm_span_make(ir.tid, 16), cm_span_make(w.nonce, 16), 0, 1));
    hand_run(&r, CA_MANUAL, &other);
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK,
                  "pollReq must be MAC-protected with the secret of its request");
    rsp_free(&r);
    test_hand_free(&other);
    // Nothing of it changed the waiting request.
    poll(&r, CA_MANUAL, &ir, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    (void)poll_rep_of(&r, 0, NULL);
    rsp_free(&r);
    rsp_free(&w);
    EVP_PKEY_free(key);
    test_hand_free(&ir);
    test_hand_free(&unknown);
}

// --- backpressure -----------------------------------------------------------------------------

// Under load (the store's commits measured slower than max_commit_latency) a new enrolment is
// accepted as waiting; past max_pending (2 here) the answer is systemUnavail; once the load is
// gone the drain issues them, the pollReq collects each (with implicitConfirm when granted) and
// the queue is empty.
static void test_poll_load(void)
{
    srv_pending *pd = g.engine->pend;
    __atomic_store_n(&pd->commit_us, 2000000u, __ATOMIC_RELAXED); // 2 s per commit
    test_hand ir[3];
    EVP_PKEY *key[3];
    rsp w[3];
    for (int i = 0; i < 3; i++) {
        char dn[32];
        (void)snprintf(dn, sizeof(dn), "/CN=load-%d", i);
        enrol(&w[i], CA_AUTO, &ir[i], &key[i], dn, i == 0);
    }
    expect_status(&w[0], CMP_BODY_IP, CMP_STATUS_WAITING, -1, "the CA is busy");
    CU_ASSERT_FALSE(w[0].msg.header.implicit_confirm); // granted with the certificate
    expect_status(&w[1], CMP_BODY_IP, CMP_STATUS_WAITING, -1, NULL);
    expect_status(&w[2], CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_SYSTEM_UNAVAIL,
                  "max_pending");
    srv_pending_stats st;
    srv_engine_pending_stats(g.engine, &st);
    CU_ASSERT_EQUAL(st.waiting, 2);
    CU_ASSERT_EQUAL(st.refused, 1);
    rsp r;
    poll(&r, CA_AUTO, &ir[0], &w[0], 0, 1, NULL, cm_span_make(NULL, 0));
    CU_ASSERT(poll_rep_of(&r, 0, "queued") >= 1);
    rsp_free(&r);
    __atomic_store_n(&pd->commit_us, 0u, __ATOMIC_RELAXED);
    CU_ASSERT_EQUAL(drain(), 2);
    srv_engine_pending_stats(g.engine, &st);
    CU_ASSERT_EQUAL(st.waiting, 0);
    // The implicitConfirm one: delivered with implicitConfirm, then finished.
    poll(&r, CA_AUTO, &ir[0], &w[0], 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(r.msg.header.implicit_confirm);
    X509 *c0 = issued_cert(&r, key[0]);
    rsp_free(&r);
    poll(&r, CA_AUTO, &ir[0], &w[0], 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST, "finished");
    rsp_free(&r);
    // The other: delivered, then (its answer lost, no certConf yet) delivered again.
    poll(&r, CA_AUTO, &ir[1], &w[1], 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_FALSE(r.msg.header.implicit_confirm);
    X509 *c1 = issued_cert(&r, key[1]);
    rsp_free(&r);
    poll(&r, CA_AUTO, &ir[1], &w[1], 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    X509 *c1b = issued_cert(&r, key[1]);
    CU_ASSERT_EQUAL(X509_cmp(c1, c1b), 0);
    rsp_free(&r);
    // Without load nothing waits.
    test_hand direct;
    EVP_PKEY *dkey = NULL;
    enrol(&r, CA_AUTO, &direct, &dkey, "/CN=direct", true);
    expect_status(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    for (int i = 0; i < 3; i++) {
        rsp_free(&w[i]);
        EVP_PKEY_free(key[i]);
        test_hand_free(&ir[i]);
    }
    X509_free(c0);
    X509_free(c1);
    X509_free(c1b);
    EVP_PKEY_free(dkey);
    test_hand_free(&direct);
}

// --- cross-certification ----------------------------------------------------------------------

// ccr_make starts a ccr signed by |key| with |cert| for the key |for_key| and subject |dn|,
// asking for basicConstraints |bc| (NULL: none).
static void ccr_make(test_hand *x, EVP_PKEY *key, cm_span cert, EVP_PKEY *for_key, const char *dn,
                     const char *bc)
{
    hand_init(x, CMP_BODY_CCR);
    TEST_ASSERT_OK(test_hand_template(x, for_key, dn));
    if (bc != NULL) {
        const char *names[] = {"basicConstraints"};
        const char *values[] = {bc};
        TEST_ASSERT_OK(test_hand_extensions(x, names, values, 1));
    }
    TEST_ASSERT_OK(test_hand_sign(x, key, cert));
}

static bool write_pem(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    bool ok = f != NULL && PEM_write_X509(f, x) == 1;
    if (f != NULL) {
        ok &= fclose(f) == 0;
    }
    return ok;
}

// A ccr from the configured other CA, for its own key and name: waiting (a CA profile needs
// approval), approved, drained, collected with a signed pollReq as a ccp, confirmed; the
// cross-certificate is a CA certificate with the profile's path length, and `openssl verify`
// builds the chain from this CA's root through it to an end entity of the other CA.
static void test_poll_cross_certification(void)
{
    test_hand x;
    ccr_make(&x, g.other_key, g.other_cert, g.other_key, "/O=Other PKI/CN=Other Root CA",
             "critical, CA:TRUE, pathlen:0");
    rsp w;
    hand_run(&w, CA_AUTO, &x);
    expect_status(&w, CMP_BODY_CCP, CMP_STATUS_WAITING, -1, "approval");
    CU_ASSERT_TRUE(validates_with_ca(&w));
    CU_ASSERT_EQUAL(OSSL_CMP_MSG_get_bodytype(w.ossl), BODY_CCP);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    const store_pending p = pending_of(&a, CA_AUTO, &x);
    CU_ASSERT_STRING_EQUAL(p.profile, "cross");
    CU_ASSERT_PTR_NOT_NULL(strstr(p.requester, "Other Root CA"));
    TEST_ASSERT_OK(decide(p.id, true, NULL));
    CU_ASSERT_EQUAL(drain(), 1);
    rsp r;
    poll(&r, CA_AUTO, &x, &w, 0, 1, g.other_key, g.other_cert);
    expect_status(&r, CMP_BODY_CCP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    CU_ASSERT_EQUAL(OSSL_CMP_MSG_get_bodytype(r.ossl), BODY_CCP);
    X509 *cross = issued_cert(&r, g.other_key);
    CU_ASSERT_EQUAL(X509_check_ca(cross), 1);
    CU_ASSERT_EQUAL(X509_get_pathlen(cross), 0);
    X509 *other = test_pki_read_cert(g.other_pem);
    CU_ASSERT_PTR_NOT_NULL_FATAL(other);
    CU_ASSERT_EQUAL(X509_NAME_cmp(X509_get_subject_name(cross), X509_get_subject_name(other)), 0);
    X509_free(other);
    CU_ASSERT_TRUE((X509_get_key_usage(cross) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) ==
                   (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    // certConf, signed by the other CA again.
    unsigned char *der = NULL;
    const int len = i2d_X509(cross, &der);
    test_hand cc;
    hand_init(&cc, CMP_BODY_CERT_CONF);
    TEST_ASSERT_OK(test_hand_cert_conf(&cc, cm_span_make(x.tid, 16), cm_span_make(r.nonce, 16),
                                       cm_span_make(der, (size_t)len), 0));
    TEST_ASSERT_OK(test_hand_sign(&cc, g.other_key, g.other_cert));
    rsp c;
    hand_run(&c, CA_AUTO, &cc);
    CU_ASSERT_EQUAL(c.msg.body.type, CMP_BODY_PKICONF);
    OPENSSL_free(der);
    // The chain: this CA's root -> the cross-certificate -> an end entity of the other CA.
    char cross_pem[320], ee_key[320], ee_pem[320];
    test_path(cross_pem, sizeof(cross_pem), g.dir, "cross.pem");
    test_path(ee_key, sizeof(ee_key), g.dir, "other-ee.key");
    test_path(ee_pem, sizeof(ee_pem), g.dir, "other-ee.pem");
    CU_ASSERT_TRUE_FATAL(write_pem(cross_pem, cross));
    const test_pki_cert_spec ee = {.subject = "/O=Other PKI/CN=other-device", .days = 2};
    CU_ASSERT_TRUE_FATAL(test_pki_issue(ee_key, ee_pem, g.other_keyf, g.other_pem, &ee, g.log));
    const char *const verify[] = {"openssl",    "verify",  "-CAfile", g.ca_pem,
                                  "-untrusted", cross_pem, ee_pem,    NULL};
    CU_ASSERT_EQUAL(test_run(verify, g.log), 0);
    // Without the cross-certificate there is no chain.
    const char *const no_link[] = {"openssl", "verify", "-CAfile", g.ca_pem, ee_pem, NULL};
    CU_ASSERT_NOT_EQUAL(test_run(no_link, g.log), 0);
    rsp_free(&w);
    rsp_free(&r);
    rsp_free(&c);
    X509_free(cross);
    test_hand_free(&x);
    test_hand_free(&cc);
    cm_arena_cleanup(&a);
}

// The bad ccr: from a CA that is not a cross-certification requester, MAC-protected, asking for
// a longer path than the profile's, for another key or another name.
static void test_poll_cross_refusals(void)
{
    test_hand x;
    rsp r;
    ccr_make(&x, g.rogue_key, g.rogue_cert, g.rogue_key, "/O=Rogue/CN=Rogue Root CA", NULL);
    hand_run(&r, CA_AUTO, &x);
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
                  "which is not a cross-certification requester of this CA");
    rsp_free(&r);
    test_hand_free(&x);
    // MAC-protected.
    hand_init(&x, CMP_BODY_CCR);
    TEST_ASSERT_OK(test_hand_template(&x, g.other_key, "/O=Other PKI/CN=Other Root CA"));
    hand_run(&r, CA_AUTO, &x);
    expect_status(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
                  "ccr must be signed");
    CU_ASSERT_TRUE(validates_with_secret(&r));
    rsp_free(&r);
    test_hand_free(&x);
    // A path length over the profile's (0): refused in the ccp.
    ccr_make(&x, g.other_key, g.other_cert, g.other_key, "/O=Other PKI/CN=Other Root CA",
             "critical, CA:TRUE, pathlen:3");
    hand_run(&r, CA_AUTO, &x);
    expect_status(&r, CMP_BODY_CCP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
                  "asks for pathLenConstraint 3; profile cross issues cross-certificates with at "
                  "most 0");
    CU_ASSERT_TRUE(validates_with_ca(&r));
    rsp_free(&r);
    test_hand_free(&x);
    // Another key than the requester's own, another name.
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ccr_make(&x, g.other_key, g.other_cert, k, "/O=Other PKI/CN=Other Root CA", NULL);
    hand_run(&r, CA_AUTO, &x);
    expect_status(&r, CMP_BODY_CCP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
                  "requesting CA's own key");
    rsp_free(&r);
    test_hand_free(&x);
    ccr_make(&x, g.other_key, g.other_cert, g.other_key, "/CN=Someone Else", NULL);
    hand_run(&r, CA_AUTO, &x);
    expect_status(&r, CMP_BODY_CCP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
                  "requesting CA's own name");
    rsp_free(&r);
    test_hand_free(&x);
    EVP_PKEY_free(k);
}

// --- expiry -------------------------------------------------------------------------------------

// A request nobody decided about within waiting_timeout (3600 s here) is rejected by the
// maintenance pass (systemUnavail, saying why) and the pollReq collects the rejection.
static void test_poll_expiry(void)
{
    test_hand ir;
    EVP_PKEY *key = NULL;
    rsp w;
    enrol(&w, CA_MANUAL, &ir, &key, "/CN=forgotten", false);
    expect_status(&w, CMP_BODY_IP, CMP_STATUS_WAITING, -1, NULL);
    uint64_t revoked = 0;
    TEST_ASSERT_OK(srv_engine_maintain(g.engine, cm_time_now() + 60, &revoked));
    rsp r;
    poll(&r, CA_MANUAL, &ir, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    (void)poll_rep_of(&r, 0, NULL); // not yet
    rsp_free(&r);
    TEST_ASSERT_OK(srv_engine_maintain(g.engine, cm_time_now() + 3601, &revoked));
    poll(&r, CA_MANUAL, &ir, &w, 0, 1, NULL, cm_span_make(NULL, 0));
    expect_status(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_SYSTEM_UNAVAIL,
                  "waited longer than waiting_timeout (3600 s)");
    rsp_free(&r);
    rsp_free(&w);
    EVP_PKEY_free(key);
    test_hand_free(&ir);
}

int test_srv_poll_register(void);
int test_srv_poll_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_poll_approved),
        TEST_CASE(test_poll_rejected),
        TEST_CASE(test_poll_bad_requests),
        TEST_CASE(test_poll_load),
        TEST_CASE(test_poll_cross_certification),
        TEST_CASE(test_poll_cross_refusals),
        TEST_CASE(test_poll_expiry),
    };
    return test_register_suite("srv_poll", poll_init, poll_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
