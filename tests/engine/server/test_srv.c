// Suite "srv": the request state machine driven in process against a throwaway SoftHSM token
// (the CA key never leaves it), a real SQLite store, and requests made by the real
// `openssl cmp` client. Responses are checked with OpenSSL's own CMP code
// (d2i_OSSL_CMP_MSG, OSSL_CMP_validate_msg) and the certificates with X509_verify.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/cmp.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv.h"
#include "engine/server/srv_internal.h"
#include "tests/support/test_hand.h"
#include "tests/support/test_support.h"

#define SECRET_REF "line-7"
#define SECRET     "factory-secret"

static struct {
    char dir[256];
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
    srv_secret secrets[1];
    srv_ca ca;
    srv_engine *engine;
    cm_cq cq;
    srv_worker *worker;
    X509 *ca_x509;
    char ca_pem[320], mock_key[320], mock_pem[320], dev_key[320], dev2_key[320];
    char vendor_pem[320], vendor_key[320], devcert_pem[320], rogue_pem[320], rogue_key[320];
    char rogue_leaf[320], ra_pem[320], ra_key[320], ra_ext[320];
    unsigned char *ra_der;
    cm_span ra_cert;
    char log[320];
    int seq;
} g;

// --- fixture --------------------------------------------------------------------------------

// make_root builds a self-signed root CA certificate for the token key (ca_root_tbs_build,
// signed through the pool) and writes it as PEM.
static bool make_root(const char *pem_path)
{
    return test_hand_make_root(&g.ca_x509, g.pool, g.ca_key, "certmint test root", 0x1001,
                               pem_path);
}

static bool run_openssl(const char *const *argv)
{
    int rc = test_run(argv, g.log);
    if (rc != 0) {
        fprintf(stderr, "%s exited %d (log: %s)\n", argv[1], rc, g.log);
    }
    return rc == 0;
}

static int srv_suite_init(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "srv") || !test_token_create(&g.token, "srv-test")) {
        return 1;
    }
    test_path(g.log, sizeof(g.log), g.dir, "openssl.log");
    test_path(g.ca_pem, sizeof(g.ca_pem), g.dir, "ca.pem");
    test_path(g.mock_key, sizeof(g.mock_key), g.dir, "mock.key");
    test_path(g.mock_pem, sizeof(g.mock_pem), g.dir, "mock.pem");
    test_path(g.dev_key, sizeof(g.dev_key), g.dir, "dev.key");
    test_path(g.dev2_key, sizeof(g.dev2_key), g.dir, "dev2.key");
    test_path(g.vendor_pem, sizeof(g.vendor_pem), g.dir, "vendor.pem");
    test_path(g.vendor_key, sizeof(g.vendor_key), g.dir, "vendor.key");
    test_path(g.devcert_pem, sizeof(g.devcert_pem), g.dir, "idevid.pem");
    test_path(g.rogue_pem, sizeof(g.rogue_pem), g.dir, "rogue.pem");
    test_path(g.rogue_key, sizeof(g.rogue_key), g.dir, "rogue.key");
    test_path(g.rogue_leaf, sizeof(g.rogue_leaf), g.dir, "rogue-leaf.pem");
    test_path(g.ra_pem, sizeof(g.ra_pem), g.dir, "ra.pem");
    test_path(g.ra_key, sizeof(g.ra_key), g.dir, "ra.key");
    test_path(g.ra_ext, sizeof(g.ra_ext), g.dir, "ra-ext.cnf");

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
    if (!make_root(g.ca_pem)) {
        return 1;
    }
    // The mock server's own identity, device keys, a vendor PKI (trusted for ir) and a rogue
    // one (not trusted).
    const char *const ca_true[] = {"basicConstraints=critical,CA:TRUE", NULL};
    const test_pki_cert_spec mock = {.subject = "/CN=mock", .days = 2};
    const test_pki_cert_spec vendor = {
        .subject = "/O=Vendor/CN=Vendor IDevID CA", .days = 30, .addext = ca_true};
    const test_pki_cert_spec rogue = {.subject = "/CN=rogue", .days = 2, .addext = ca_true};
    const test_pki_cert_spec idcert = {
        .subject = "/O=Vendor/CN=device-SN4711", .days = 30, .key_exists = true, .serial = "4711"};
    const test_pki_cert_spec rleaf = {
        .subject = "/CN=rogue-device", .days = 2, .key_exists = true, .serial = "7"};
    // The RA (RFC 9483 §5): extended key usage id-kp-cmcRA, from the vendor PKI.
    static const char k_ra_ext[] = "[ra]\nkeyUsage = critical, digitalSignature\n"
                                   "extendedKeyUsage = 1.3.6.1.5.5.7.3.28\n"
                                   "subjectKeyIdentifier = hash\n";
    const test_pki_cert_spec ra_spec = {.subject = "/O=Vendor/CN=Line RA",
                                        .days = 30,
                                        .serial = "77",
                                        .ext_file = g.ra_ext,
                                        .ext_section = "ra"};
    if (!test_pki_make_ca(g.mock_key, g.mock_pem, &mock, g.log) ||
        !test_pki_make_key(g.dev_key, TEST_PKI_EC_P256, g.log) ||
        !test_pki_make_key(g.dev2_key, TEST_PKI_ED25519, g.log) ||
        !test_pki_make_ca(g.vendor_key, g.vendor_pem, &vendor, g.log) ||
        !test_pki_make_ca(g.rogue_key, g.rogue_pem, &rogue, g.log) ||
        !test_pki_issue(g.dev_key, g.devcert_pem, g.vendor_key, g.vendor_pem, &idcert, g.log) ||
        !test_pki_issue(g.dev_key, g.rogue_leaf, g.rogue_key, g.rogue_pem, &rleaf, g.log)) {
        return 1;
    }
    if (!test_write_file(g.ra_ext, k_ra_ext, sizeof(k_ra_ext) - 1) ||
        !test_pki_issue(g.ra_key, g.ra_pem, g.vendor_key, g.vendor_pem, &ra_spec, g.log)) {
        return 1;
    }

    char db[400], err_s[256];
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    // The requests below come from openssl cmp, whose PBM MAC is HMAC-SHA1 by default.
    static crmf_alg_policy sha1;
    crmf_alg_policy_default(&sha1, true);
    lim.policy = &sha1;
    const char *own[] = {g.ca_pem};
    const char *vend[] = {g.vendor_pem};
    if (!cm_ok(store_open(&g.st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot, NULL, NULL, &lim)) ||
        !cm_ok(ca_authority_load(&g.authority, err_s, sizeof(err_s), g.ca_pem, NULL)) ||
        !cm_ok(ca_trust_new(&g.own_trust, err_s, sizeof(err_s), own, 1, 64)) ||
        !cm_ok(ca_trust_new(&g.client_trust, err_s, sizeof(err_s), vend, 1, 64))) {
        fprintf(stderr, "setup: %s\n", err_s);
        return 1;
    }
    // The device profile: EC/RSA/Ed25519 keys, copy the subject, DNS SANs, clientAuth.
    static const char conf_text[] = "[ext]\nbasicConstraints = critical, CA:FALSE\n"
                                    "keyUsage = critical, digitalSignature\n"
                                    "extendedKeyUsage = clientAuth\n";
    CONF *conf = NCONF_new(NULL);
    BIO *bio = BIO_new_mem_buf(conf_text, (int)sizeof(conf_text) - 1);
    long line;
    const bool conf_ok = conf != NULL && bio != NULL && NCONF_load_bio(conf, bio, &line) == 1;
    BIO_free(bio);
    ca_profile_params pp = {.name = "devices",
                            .default_days = 365,
                            .max_days = 730,
                            .key_types =
                                CA_KEY_EC_P256 | CA_KEY_EC_P384 | CA_KEY_RSA | CA_KEY_ED25519,
                            .rsa_min_bits = 2048,
                            .rsa_max_bits = 4096,
                            .subject_mode = CA_SUBJECT_COPY,
                            .san_types = CA_SAN_DNS,
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
    uint8_t *ra_pem;
    size_t ra_pem_len;
    if (!test_read_file(g.ra_pem, &ra_pem, &ra_pem_len)) {
        return 1;
    }
    BIO *rb = BIO_new_mem_buf(ra_pem, (int)ra_pem_len);
    X509 *ra = rb != NULL ? PEM_read_bio_X509(rb, NULL, NULL, NULL) : NULL;
    unsigned char *ra_der = NULL;
    const int ra_len = ra != NULL ? i2d_X509(ra, &ra_der) : -1;
    BIO_free(rb);
    X509_free(ra);
    free(ra_pem);
    if (ra_len <= 0) {
        return 1;
    }
    g.ra_der = ra_der;
    g.ra_cert = cm_span_make(ra_der, (size_t)ra_len);
    g.ca = (srv_ca){.name = "devices",
                    .authority = g.authority,
                    .profile = g.profile,
                    .ca_key = g.ca_key,
                    .ca_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .cmp_cert = g.authority,
                    .cmp_key = g.ca_key,
                    .cmp_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .secrets = g.secrets,
                    .num_secrets = 1,
                    .client_trust = g.client_trust,
                    .own_trust = g.own_trust,
                    .ca_pubs = true,
                    .ra_certs = &g.ra_cert,
                    .num_ra_certs = 1,
                    .crl_validity = 86400,
                    .profile_name = "devices",
                    // These tests reuse their few keys; key reuse has its own suite (srv_trust).
                    .policy = {.allow_key_reuse = true}};
    srv_params sp = {.hsm = g.pool,
                     .store = g.st,
                     .prot = g.prot,
                     .cas = &g.ca,
                     .num_cas = 1,
                     .message_time_window = 600,
                     .confirm_wait_time = 300};
    if (!cm_ok(srv_engine_new(&g.engine, &sp)) || !cm_ok(cm_cq_init(&g.cq)) ||
        !cm_ok(srv_worker_new(&g.worker, g.engine, &g.cq))) {
        return 1;
    }
    return 0;
}

static int srv_suite_cleanup(void)
{
    srv_worker_free(g.worker);
    srv_engine_free(g.engine);
    cm_cq_cleanup(&g.cq);
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
    OPENSSL_free(g.ra_der);
    test_token_destroy(&g.token);
    (void)test_rmtree(g.dir);
    return 0;
}

// --- helpers --------------------------------------------------------------------------------

// make_request runs `openssl cmp` against its in-process mock server with |extra| options and
// returns the first request it sent (the mock's answers do not matter here).
static uint8_t *make_request(size_t *out_len, const char *const *extra)
{
    char req[400], rsp[400], certout[400];
    g.seq++;
    (void)snprintf(req, sizeof(req), "%s/req-%d.der", g.dir, g.seq);
    (void)snprintf(rsp, sizeof(rsp), "%s/rsp-%d.der", g.dir, g.seq);
    (void)snprintf(certout, sizeof(certout), "%s/mock-out-%d.pem", g.dir, g.seq);
    const char *argv[64] = {"openssl",
                            "cmp",
                            "-use_mock_srv",
                            "-srv_ref",
                            SECRET_REF,
                            "-srv_secret",
                            "pass:" SECRET,
                            "-srv_cert",
                            g.mock_pem,
                            "-srv_key",
                            g.mock_key,
                            "-rsp_cert",
                            g.mock_pem,
                            "-srv_trusted",
                            g.vendor_pem,
                            "-reqout",
                            req,
                            "-rspout",
                            rsp,
                            "-certout",
                            certout,
                            "-unprotected_errors",
                            "-disable_confirm"};
    size_t n = 23;
    for (size_t i = 0; extra[i] != NULL && n < 62; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    (void)test_run(argv, g.log);
    uint8_t *buf;
    if (!test_read_file(req, &buf, out_len)) {
        fprintf(stderr, "openssl cmp wrote no request (log: %s)\n", g.log);
        return NULL;
    }
    return buf;
}

typedef struct rsp {
    srv_request *req;
    cm_arena arena;
    cmp_msg msg;
    bool parsed;
    OSSL_CMP_MSG *ossl;
} rsp;

static void process(rsp *out, const uint8_t *der, size_t len)
{
    memset(out, 0, sizeof(*out));
    out->req = srv_request_new(g.worker, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->req);
    uint8_t *body = srv_request_body(out->req, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memcpy(body, der, len);
    cm_span resp = srv_request_run(out->req, &g.ca, cm_span_make(body, len));
    CU_ASSERT_FATAL(resp.len > 0);
    cm_arena_init(&out->arena, 0, 0);
    out->parsed = cm_ok(cmp_msg_from_der(&out->arena, &out->msg, resp, NULL));
    CU_ASSERT_TRUE(out->parsed);
    const unsigned char *q = resp.p;
    out->ossl = d2i_OSSL_CMP_MSG(NULL, &q, (long)resp.len);
    CU_ASSERT_PTR_NOT_NULL(out->ossl);
}

static void rsp_free(rsp *r)
{
    OSSL_CMP_MSG_free(r->ossl);
    cm_arena_cleanup(&r->arena);
    srv_request_free(r->req);
}

// validates_with_secret / validates_with_ca: OpenSSL's client-side protection check.
static bool validates_with_secret(const rsp *r, const char *secret)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    bool ok = ctx != NULL &&
              OSSL_CMP_CTX_set1_secretValue(ctx, (const unsigned char *)secret,
                                            (int)strlen(secret)) == 1 &&
              OSSL_CMP_validate_msg(ctx, r->ossl) == 1;
    OSSL_CMP_CTX_free(ctx);
    return ok;
}

static bool validates_with_ca(const rsp *r)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    bool ok = ctx != NULL && OSSL_CMP_CTX_set1_srvCert(ctx, g.ca_x509) == 1 &&
              OSSL_CMP_validate_msg(ctx, r->ossl) == 1;
    OSSL_CMP_CTX_free(ctx);
    return ok;
}

// rejection_status returns the PKIStatusInfo of a rejection: an error message's, or the one
// CertResponse's of an ip/cp/kup, or the rp's first (RFC 9483 §3.6.4: a refused request's
// content is answered in its own response type); NULL for anything else.
static const cmp_status_info *rejection_status(const rsp *r)
{
    if (!r->parsed) {
        return NULL;
    }
    const cmp_body *b = &r->msg.body;
    switch (b->type) {
    case CMP_BODY_ERROR:
        return &b->u.error.status;
    case CMP_BODY_IP:
    case CMP_BODY_CP:
    case CMP_BODY_KUP:
        return b->u.rep.num_responses == 1 &&
                       b->u.rep.responses[0].status.status == CMP_STATUS_REJECTION
                   ? &b->u.rep.responses[0].status
                   : NULL;
    case CMP_BODY_RP:
        return b->u.rp.num_status >= 1 && b->u.rp.status[0].status == CMP_STATUS_REJECTION
                   ? &b->u.rp.status[0]
                   : NULL;
    default:
        return NULL;
    }
}

static int fail_bit_of(const rsp *r)
{
    srv_summary sum;
    srv_request_summary(r->req, &sum);
    if (getenv("SRV_TEST_VERBOSE") != NULL) {
        fprintf(stderr, "\n  response error: %s (bit %d)\n", cm_result_name(sum.error),
                sum.fail_bit);
    }
    const cmp_status_info *st = rejection_status(r);
    if (st == NULL) {
        return -2;
    }
    for (int b = 0; b < 32; b++) {
        if (st->fail_info & (1u << b)) {
            return b;
        }
    }
    return -1;
}

// status_text returns the statusString of an error response (its first UTF8String, as
// openssl cmp prints it) in |buf|, "" when there is none; and checks that the summary's
// reason, which goes into the log line, is the same sentence.
static const char *status_text(const rsp *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    const cmp_status_info *rs = rejection_status(r);
    if (rs == NULL) {
        return buf;
    }
    der_reader rd, seq;
    cm_span s;
    der_reader_init(&rd, rs->status_string);
    if (cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) &&
        cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &s)) && s.len < cap) {
        memcpy(buf, s.p, s.len);
        buf[s.len] = '\0';
    }
    srv_summary sum;
    srv_request_summary(r->req, &sum);
    CU_ASSERT_STRING_EQUAL(sum.reason, buf);
    return buf;
}

// expect_status checks the statusString: exactly |want|, or starting with it when |prefix|.
static void expect_status(const rsp *r, const char *want, bool prefix)
{
    char got[256];
    status_text(r, got, sizeof(got));
    const bool ok = prefix ? strncmp(got, want, strlen(want)) == 0 : strcmp(got, want) == 0;
    if (!ok) {
        fprintf(stderr, "\n  statusString \"%s\"\n  wanted       \"%s\"%s\n", got, want,
                prefix ? "..." : "");
    }
    CU_ASSERT_TRUE(ok);
}

// check_issued: the response carries one accepted certificate for |key_path| and |cn|,
// signed by the CA; returns it (X509_free).
static X509 *check_issued(const rsp *r, cmp_body_type type, int64_t cert_req_id,
                          const char *key_path, const char *cn)
{
    if (r->msg.body.type == CMP_BODY_ERROR) {
        srv_summary sum;
        srv_request_summary(r->req, &sum);
        fprintf(stderr, "\n  unexpected error: %s (bit %d)\n", cm_result_name(sum.error),
                sum.fail_bit);
    }
    CU_ASSERT_EQUAL_FATAL(r->msg.body.type, type);
    const cmp_cert_rep *rep = &r->msg.body.u.rep;
    CU_ASSERT_EQUAL_FATAL(rep->num_responses, 1);
    CU_ASSERT_EQUAL(rep->responses[0].cert_req_id, cert_req_id);
    CU_ASSERT_EQUAL(rep->responses[0].status.status, CMP_STATUS_ACCEPTED);
    const cm_span c = rep->responses[0].cert;
    const unsigned char *q = c.p;
    X509 *x = d2i_X509(NULL, &q, (long)c.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    EVP_PKEY *cak = X509_get0_pubkey(g.ca_x509);
    CU_ASSERT_EQUAL(X509_verify(x, cak), 1);
    FILE *f = fopen(key_path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    (void)fclose(f);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(k, X509_get0_pubkey(x)), 1);
    EVP_PKEY_free(k);
    char buf[256];
    CU_ASSERT(
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf)) > 0);
    CU_ASSERT_STRING_EQUAL(buf, cn);
    CU_ASSERT_EQUAL(X509_check_issued(g.ca_x509, x), X509_V_OK);
    return x;
}

// stored_subject_is checks the store's printable subject of |x| (RFC 4514 text).
static bool stored_subject_is(X509 *x, const char *want)
{
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    unsigned char *der = NULL;
    int n = i2d_ASN1_INTEGER(sn, &der);
    bool ok = false;
    store_reader *rd;
    if (n > 2 && cm_ok(store_reader_open(g.st, &rd))) {
        cm_arena a;
        cm_arena_init(&a, 0, 0);
        store_cert c;
        if (cm_ok(store_cert_get(rd, &a, &c, "devices", cm_span_make(der + 2, (size_t)n - 2)))) {
            ok = strcmp(c.subject_text, want) == 0;
            if (!ok) {
                fprintf(stderr, "\n  stored subject '%s', want '%s'\n", c.subject_text, want);
            }
        }
        cm_arena_cleanup(&a);
        store_reader_close(rd);
    }
    OPENSSL_free(der);
    return ok;
}

static store_cert_status stored_status(X509 *x)
{
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    unsigned char *der = NULL;
    int n = i2d_ASN1_INTEGER(sn, &der);
    store_cert_status st = STORE_CERT_ANY;
    store_reader *rd;
    if (n > 2 && cm_ok(store_reader_open(g.st, &rd))) {
        cm_arena a;
        cm_arena_init(&a, 0, 0);
        store_cert c;
        if (cm_ok(store_cert_get(rd, &a, &c, "devices", cm_span_make(der + 2, (size_t)n - 2)))) {
            st = c.status;
        }
        cm_arena_cleanup(&a);
        store_reader_close(rd);
    }
    OPENSSL_free(der);
    return st;
}

// --- enrolment ------------------------------------------------------------------------------

static void test_srv_ir_pbm_implicit_confirm(void)
{
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,        "-secret",           "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-0001", "-implicit_confirm", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    CU_ASSERT_FALSE(validates_with_secret(&r, "other-secret"));
    CU_ASSERT_TRUE(r.msg.header.implicit_confirm);
    CU_ASSERT_EQUAL(r.msg.body.u.rep.num_ca_pubs, 1);
    X509 *x = check_issued(&r, CMP_BODY_IP, 0, g.dev_key, "device-0001");
    CU_ASSERT_EQUAL(stored_status(x), STORE_CERT_VALID);
    CU_ASSERT_TRUE(stored_subject_is(x, "CN=device-0001"));
    // The response echoes the transaction and answers the nonce.
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg req;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &req, cm_span_make(ir, len), NULL));
    CU_ASSERT_TRUE(cm_span_eq(r.msg.header.f.transaction_id.v, req.header.f.transaction_id.v));
    CU_ASSERT_TRUE(cm_span_eq(r.msg.header.f.recip_nonce.v, req.header.f.sender_nonce.v));
    CU_ASSERT_FALSE(cm_span_eq(r.msg.header.f.sender_nonce.v, req.header.f.sender_nonce.v));
    cm_arena_cleanup(&a);
    X509_free(x);
    rsp_free(&r);

    // The same request again: its transactionID is in use.
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_TRANSACTION_ID_IN_USE);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    free(ir);
}

// make_genm builds a PBM-protected genm with one InfoTypeAndValue (our marshal code: the 3.0
// client lacks most RFC 9483 types).
static uint8_t *make_genm(size_t *out_len, cm_span oid, cm_span value)
{
    cmp_itav itav = {.oid = oid, .value = value};
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENM;
    body.u.gen.items = &itav;
    body.u.gen.num = 1;
    cmp_mac_key key;
    TEST_ASSERT_OK(cmp_mac_key_new_pbm(g.prot, &key, CM_SPAN_LIT(SECRET), CMP_HASH_SHA256,
                                       CMP_HASH_SHA256, 500, 16));
    der_builder ab;
    der_builder_init(&ab, 128);
    cmp_mac_key_put_alg(&ab, &key);
    cm_span alg;
    TEST_ASSERT_OK(der_builder_finish(&ab, &alg));
    uint8_t tid[16], nonce[16];
    CU_ASSERT_FATAL(RAND_bytes(tid, 16) == 1 && RAND_bytes(nonce, 16) == 1);
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.recipient_name = ca_authority_subject(g.authority);
    h.has_message_time = true;
    h.message_time = cm_time_now();
    h.protection_alg = alg;
    h.sender_kid = (cmp_opt_span){true, CM_SPAN_LIT(SECRET_REF)};
    h.transaction_id = (cmp_opt_span){true, cm_span_make(tid, 16)};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, 16)};
    der_builder b;
    der_builder_init(&b, 1024);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    uint8_t mac[64];
    size_t mac_len;
    TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, &key,
                                   cmp_msg_writer_protected_part(&w)));
    const cm_span prot = cm_span_make(mac, mac_len);
    cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    der_builder_cleanup(&ab);
    cmp_mac_key_cleanse(&key);
    return out;
}

// genp_item checks |r| is a MAC-protected genp and returns its one ITAV (NULL when empty).
static const cmp_itav *genp_item(const rsp *r)
{
    CU_ASSERT_EQUAL_FATAL(r->msg.body.type, CMP_BODY_GENP);
    CU_ASSERT_TRUE(validates_with_secret(r, SECRET));
    CU_ASSERT_PTR_NOT_NULL(r->ossl); // OpenSSL parses it too
    return r->msg.body.u.gen.num == 1 ? &r->msg.body.u.gen.items[0] : NULL;
}

// crl_status_list builds CRLStatusList { CRLStatus { issuer [1] GeneralNames { dirName },
// thisUpdate } } for the CA, with |this_update| 0 meaning absent.
static cm_span crl_status_list(der_builder *b, int64_t this_update)
{
    der_builder_init(b, 256);
    der_mark l, st, src, dn;
    der_open(b, &l, DER_TAG_SEQUENCE);
    der_open(b, &st, DER_TAG_SEQUENCE);
    der_open(b, &src, DER_CONTEXT_CONS(1));
    der_open(b, &dn, DER_CONTEXT_CONS(4));
    der_put_raw(b, ca_authority_subject(g.authority));
    der_close(b, &dn);
    der_close(b, &src);
    if (this_update != 0) {
        der_put_time(b, this_update);
    }
    der_close(b, &st);
    der_close(b, &l);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(b, &out));
    return out;
}

static void test_srv_genm_types(void)
{
    // caCerts: the CA certificate (no chain configured).
    size_t len;
    uint8_t *m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CA_CERTS), cm_span_make(NULL, 0));
    rsp r;
    process(&r, m, len);
    const cmp_itav *it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_CA_CERTS));
    der_reader rd, seq;
    der_reader_init(&rd, it->value);
    TEST_ASSERT_OK(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    cm_span cert;
    TEST_ASSERT_OK(der_get_element(&seq, DER_TAG_SEQUENCE, &cert));
    CU_ASSERT_TRUE(cm_span_eq(cert, ca_authority_cert(g.authority)));
    TEST_ASSERT_OK(der_expect_end(&seq));
    rsp_free(&r);
    free(m);

    // rootCaCert (with the old root as value) -> rootCaKeyUpdate, absent.
    m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_ROOT_CA_CERT), ca_authority_cert(g.authority));
    process(&r, m, len);
    it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_ROOT_CA_KEY_UPDATE));
    CU_ASSERT_EQUAL(it->value.len, 0);
    rsp_free(&r);
    free(m);

    // certReqTemplate: a CertTemplate carrying the profile's extensions.
    m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CERT_REQ_TEMPLATE), cm_span_make(NULL, 0));
    process(&r, m, len);
    it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_CERT_REQ_TEMPLATE));
    der_reader_init(&rd, it->value);
    TEST_ASSERT_OK(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    crmf_template t;
    TEST_ASSERT_OK(crmf_template_parse(&seq, &t));
    CU_ASSERT_TRUE(cm_span_eq(t.extensions, ca_profile_extensions(g.profile)));
    crmf_extension ext;
    bool found;
    TEST_ASSERT_OK(
        crmf_extensions_find(t.extensions, CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE), &ext, &found));
    CU_ASSERT_TRUE(found);

    // certReqTemplate's keySpec: id-regCtrl-algId with the preferred curve (P-256).
    der_reader ctrls, atv, alg;
    TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &ctrls));
    TEST_ASSERT_OK(der_enter(&ctrls, DER_TAG_SEQUENCE, &atv));
    cm_span oid;
    TEST_ASSERT_OK(der_get_oid(&atv, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, "\x2b\x06\x01\x05\x05\x07\x05\x01\x0b"));
    TEST_ASSERT_OK(der_enter(&atv, DER_TAG_SEQUENCE, &alg));
    TEST_ASSERT_OK(der_get_oid(&alg, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_EC_PUBLIC_KEY));
    TEST_ASSERT_OK(der_get_oid(&alg, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_P256));
    rsp_free(&r);
    free(m);

    // signKeyPairTypes: the profile's key types (P-256, P-384, RSA, Ed25519), in that order.
    m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_SIGN_KEY_PAIR_TYPES), cm_span_make(NULL, 0));
    process(&r, m, len);
    it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_SIGN_KEY_PAIR_TYPES));
    der_reader_init(&rd, it->value);
    TEST_ASSERT_OK(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    static const char *const k_want[] = {DER_OID_EC_PUBLIC_KEY, DER_OID_EC_PUBLIC_KEY,
                                         DER_OID_RSA_ENCRYPTION, DER_OID_ED25519};
    for (size_t i = 0; i < 4; i++) {
        TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &alg));
        TEST_ASSERT_OK(der_get_oid(&alg, &oid));
        CU_ASSERT_TRUE(cm_span_eq(oid, cm_span_make(k_want[i], strlen(k_want[i]))));
    }
    TEST_ASSERT_OK(der_expect_end(&seq));
    rsp_free(&r);
    free(m);

    // An unknown info type: an empty genp.
    m = make_genm(&len, CM_SPAN_LIT("\x2b\x06\x01\x04\x01\x82\x37\x01"), cm_span_make(NULL, 0));
    process(&r, m, len);
    CU_ASSERT_PTR_NULL(genp_item(&r));
    rsp_free(&r);
    free(m);
}

static void test_srv_genm_root_ca_key_update(void)
{
    // A new root (a stand-in made by openssl) configured as newWithNew.
    char key[400], pem[400], der[400];
    (void)snprintf(key, sizeof(key), "%s/newroot.key", g.dir);
    (void)snprintf(pem, sizeof(pem), "%s/newroot.pem", g.dir);
    (void)snprintf(der, sizeof(der), "%s/newroot.der", g.dir);
    const test_pki_cert_spec g2 = {
        .subject = "/CN=certmint test root G2", .days = 30, .der_path = der};
    CU_ASSERT_TRUE_FATAL(test_pki_make_ca(key, pem, &g2, g.log));
    uint8_t *nwn;
    size_t nwn_len;
    CU_ASSERT_TRUE_FATAL(test_read_file(der, &nwn, &nwn_len));
    g.ca.root_update[0] = cm_span_make(nwn, nwn_len);
    // The client names our current root: the update comes back.
    size_t len;
    uint8_t *m =
        make_genm(&len, CM_SPAN_LIT(DER_OID_IT_ROOT_CA_CERT), ca_authority_cert(g.authority));
    rsp r;
    process(&r, m, len);
    const cmp_itav *it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_ROOT_CA_KEY_UPDATE));
    der_reader rd, seq;
    der_reader_init(&rd, it->value);
    TEST_ASSERT_OK(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    cm_span got;
    TEST_ASSERT_OK(der_get_element(&seq, DER_TAG_SEQUENCE, &got));
    CU_ASSERT_TRUE(cm_span_eq(got, cm_span_make(nwn, nwn_len)));
    TEST_ASSERT_OK(der_expect_end(&seq));
    rsp_free(&r);
    free(m);
    // A client with another root: no update for it (absent value).
    m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_ROOT_CA_CERT), cm_span_make(nwn, nwn_len));
    process(&r, m, len);
    it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_EQUAL(it->value.len, 0);
    rsp_free(&r);
    free(m);
    g.ca.root_update[0] = cm_span_make(NULL, 0);
    free(nwn);
}

static void test_srv_genm_crl_update(void)
{
    // Before any CRL: crls, absent.
    der_builder lb;
    cm_span list = crl_status_list(&lb, 0);
    size_t len;
    uint8_t *m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CRL_STATUS_LIST), list);
    rsp r;
    process(&r, m, len);
    const cmp_itav *it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_CRLS));
    CU_ASSERT_EQUAL(it->value.len, 0);
    rsp_free(&r);
    free(m);
    der_builder_cleanup(&lb);

    // Issue a CRL; a client without one (or with an older one) gets it, a current one not.
    srv_crl_params cp = {.store = g.st,
                         .pool = g.pool,
                         .key = g.ca_key,
                         .sig_alg = HSM_SIG_ECDSA_SHA256,
                         .authority = g.authority,
                         .ca_name = "devices",
                         .validity_s = 86400};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cm_span crl;
    const int64_t now = cm_time_now();
    TEST_ASSERT_OK(srv_crl_issue(&cp, now, &a, &crl));
    const unsigned char *q = crl.p;
    X509_CRL *x = d2i_X509_CRL(NULL, &q, (long)crl.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(X509_CRL_verify(x, X509_get0_pubkey(g.ca_x509)), 1);
    X509_CRL_free(x);
    m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CURRENT_CRL), cm_span_make(NULL, 0));
    process(&r, m, len);
    it = genp_item(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(der_oid_is(it->oid, DER_OID_IT_CURRENT_CRL));
    CU_ASSERT_TRUE(cm_span_eq(it->value, crl));
    rsp_free(&r);
    free(m);
    const int64_t stamps[] = {0, now - 3600, now + 60};
    for (size_t i = 0; i < 3; i++) {
        list = crl_status_list(&lb, stamps[i]);
        m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CRL_STATUS_LIST), list);
        process(&r, m, len);
        it = genp_item(&r);
        CU_ASSERT_PTR_NOT_NULL_FATAL(it);
        if (i < 2) {
            der_reader rd, seq;
            der_reader_init(&rd, it->value);
            TEST_ASSERT_OK(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
            cm_span got;
            TEST_ASSERT_OK(der_get_element(&seq, DER_TAG_SEQUENCE, &got));
            CU_ASSERT_TRUE(cm_span_eq(got, crl));
        } else {
            CU_ASSERT_EQUAL(it->value.len, 0); // the client's CRL is current
        }
        rsp_free(&r);
        free(m);
        der_builder_cleanup(&lb);
    }
    // A malformed CRLStatusList: badRequest-class rejection.
    m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CRL_STATUS_LIST), CM_SPAN_LIT("\x30\x00"));
    process(&r, m, len);
    CU_ASSERT(fail_bit_of(&r) >= 0);
    rsp_free(&r);
    free(m);
    cm_arena_cleanup(&a);
}

static void test_srv_rr_flows(void)
{
    // A certificate to revoke.
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,      "-secret",           "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-rr", "-implicit_confirm", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp ip;
    process(&ip, ir, len);
    X509 *x = check_issued(&ip, CMP_BODY_IP, 0, g.dev_key, "device-rr");
    char pem[400];
    (void)snprintf(pem, sizeof(pem), "%s/rr-victim.pem", g.dir);
    FILE *f = fopen(pem, "w");
    CU_ASSERT_FATAL(f != NULL && PEM_write_X509(f, x) == 1);
    (void)fclose(f);

    // rr by the certificate's own key: rp, revoked in the store; a second time: certRevoked.
    const char *rr[] = {"-cmd",     "rr", "-cert",      pem, "-key", g.dev_key,
                        "-oldcert", pem,  "-revreason", "1", NULL};
    uint8_t *req = make_request(&len, rr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    rsp r;
    process(&r, req, len);
    CU_ASSERT_EQUAL_FATAL(r.msg.body.type, CMP_BODY_RP);
    CU_ASSERT_EQUAL(r.msg.body.u.rp.num_status, 1);
    CU_ASSERT_EQUAL(r.msg.body.u.rp.status[0].status, CMP_STATUS_ACCEPTED);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    CU_ASSERT_EQUAL(stored_status(x), STORE_CERT_REVOKED);
    rsp_free(&r);
    free(req);
    req = make_request(&len, rr);
    process(&r, req, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_CERT_REVOKED);
    rsp_free(&r);
    free(req);

    // rr of a certificate we never issued (a look-alike with our CA's name as issuer and an
    // unknown serial), sent by the configured RA: badCertId.
    char fake_ca[400], fake_key[400], fake[400];
    (void)snprintf(fake_ca, sizeof(fake_ca), "%s/fake-root.pem", g.dir);
    (void)snprintf(fake_key, sizeof(fake_key), "%s/fake-root.key", g.dir);
    (void)snprintf(fake, sizeof(fake), "%s/fake.pem", g.dir);
    const test_pki_cert_spec fake_root = {.subject = "/CN=certmint test root", .days = 2};
    const test_pki_cert_spec ghost = {
        .subject = "/CN=ghost", .days = 2, .key_exists = true, .serial = "4660"};
    CU_ASSERT_TRUE_FATAL(test_pki_make_ca(fake_key, fake_ca, &fake_root, g.log) &&
                         test_pki_issue(g.dev_key, fake, fake_key, fake_ca, &ghost, g.log));
    const char *ra_rr[] = {"-cmd",     "rr", "-cert",      g.ra_pem, "-key", g.ra_key,
                           "-oldcert", fake, "-revreason", "0",      NULL};
    req = make_request(&len, ra_rr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    process(&r, req, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_CERT_ID);
    rsp_free(&r);
    free(req);
    // A device that is not an RA revoking another certificate: notAuthorized.
    const char *not_ra[] = {"-cmd", "rr", "-cert", pem, "-key", g.dev_key, "-oldcert", fake, NULL};
    req = make_request(&len, not_ra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    process(&r, req, len);
    CU_ASSERT(fail_bit_of(&r) == CMP_FAIL_NOT_AUTHORIZED ||
              fail_bit_of(&r) == CMP_FAIL_CERT_REVOKED);
    rsp_free(&r);
    free(req);
    X509_free(x);
    rsp_free(&ip);
    free(ir);
}

// make_cert_conf builds a PBM-protected certConf answering |ip| for |cert| (our marshal code;
// the 3.0 client cannot save the certConf it would send without a live server).
static uint8_t *make_cert_conf(size_t *out_len, const rsp *ip, cm_span cert, const char *secret,
                               bool wrong_hash, bool wrong_nonce, int64_t status)
{
    cmp_digests d;
    TEST_ASSERT_OK(cmp_digests_init(&d));
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len;
    TEST_ASSERT_OK(cmp_cert_hash(&d, hash, &hash_len, cert, NULL));
    cmp_digests_cleanup(&d);
    if (wrong_hash) {
        hash[0] ^= 1;
    }
    cmp_cert_status cs;
    memset(&cs, 0, sizeof(cs));
    cs.cert_hash = cm_span_make(hash, hash_len);
    cs.cert_req_id = 0;
    if (status >= 0) {
        cs.has_status_info = true;
        cs.status_info.status = status;
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_CERT_CONF;
    body.u.conf.items = &cs;
    body.u.conf.num = 1;
    cmp_mac_key key;
    TEST_ASSERT_OK(cmp_mac_key_new_pbm(g.prot, &key, cm_span_make(secret, strlen(secret)),
                                       CMP_HASH_SHA256, CMP_HASH_SHA256, 1000, 16));
    der_builder ab;
    der_builder_init(&ab, 128);
    cmp_mac_key_put_alg(&ab, &key);
    cm_span alg;
    TEST_ASSERT_OK(der_builder_finish(&ab, &alg));
    uint8_t nonce[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    uint8_t bad_nonce[16] = {0};
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.sender_name = ip->msg.header.f.recipient_name;
    h.sender_gn = ip->msg.header.f.recipient_gn;
    h.recipient_name = ip->msg.header.f.sender_name;
    h.recipient_gn = ip->msg.header.f.sender_gn;
    h.has_message_time = true;
    h.message_time = cm_time_now();
    h.protection_alg = alg;
    h.sender_kid = (cmp_opt_span){true, CM_SPAN_LIT(SECRET_REF)};
    h.transaction_id = ip->msg.header.f.transaction_id;
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, sizeof(nonce))};
    h.recip_nonce = wrong_nonce ? (cmp_opt_span){true, cm_span_make(bad_nonce, 16)}
                                : ip->msg.header.f.sender_nonce;
    der_builder b;
    der_builder_init(&b, 1024);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    const cm_span pp = cmp_msg_writer_protected_part(&w);
    uint8_t mac[64];
    size_t mac_len;
    TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, &key, pp));
    const cm_span prot = cm_span_make(mac, mac_len);
    cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    der_builder_cleanup(&ab);
    cmp_mac_key_cleanse(&key);
    return out;
}

static void test_srv_ir_pbm_with_cert_conf(void)
{
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,        "-secret", "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-0002", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp ip;
    process(&ip, ir, len);
    CU_ASSERT_FALSE(ip.msg.header.implicit_confirm); // not asked for
    X509 *x = check_issued(&ip, CMP_BODY_IP, 0, g.dev_key, "device-0002");
    CU_ASSERT_EQUAL(stored_status(x), STORE_CERT_UNCONFIRMED);
    const cm_span cert = ip.msg.body.u.rep.responses[0].cert;

    // Wrong certHash, wrong recipNonce, wrong secret: each refused, nothing confirmed.
    size_t clen;
    uint8_t *cc = make_cert_conf(&clen, &ip, cert, SECRET, true, false, -1);
    rsp r;
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_CERT_ID);
    rsp_free(&r);
    free(cc);
    cc = make_cert_conf(&clen, &ip, cert, SECRET, false, true, -1);
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_RECIPIENT_NONCE);
    // RFC 9483 §3.1: recipNonce echoes the CA's last senderNonce; the reason says which.
    expect_status(&r, "certConf's recipNonce does not match the senderNonce", true);
    rsp_free(&r);
    free(cc);
    cc = make_cert_conf(&clen, &ip, cert, "not-the-secret", false, false, -1);
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    CU_ASSERT_TRUE(validates_with_ca(&r)); // signed: the MAC did not verify
    rsp_free(&r);
    free(cc);
    CU_ASSERT_EQUAL(stored_status(x), STORE_CERT_UNCONFIRMED);

    // The right certConf: pkiconf with the same MAC, the certificate becomes valid.
    cc = make_cert_conf(&clen, &ip, cert, SECRET, false, false, -1);
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_PKICONF);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    CU_ASSERT_EQUAL(stored_status(x), STORE_CERT_VALID);
    // A duplicate: certConfirmed.
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_CERT_CONFIRMED);
    rsp_free(&r);
    free(cc);
    X509_free(x);
    rsp_free(&ip);
    free(ir);
}

static void test_srv_cert_conf_rejection_revokes(void)
{
    const char *extra[] = {
        "-cmd",    "ir",       "-ref",     SECRET_REF,           "-secret", "pass:" SECRET,
        "-newkey", g.dev2_key, "-subject", "/CN=device-ed25519", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp ip;
    process(&ip, ir, len);
    X509 *x = check_issued(&ip, CMP_BODY_IP, 0, g.dev2_key, "device-ed25519");
    size_t clen;
    uint8_t *cc = make_cert_conf(&clen, &ip, ip.msg.body.u.rep.responses[0].cert, SECRET, false,
                                 false, CMP_STATUS_REJECTION);
    rsp r;
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_PKICONF);
    CU_ASSERT_EQUAL(stored_status(x), STORE_CERT_REVOKED);
    rsp_free(&r);
    free(cc);
    X509_free(x);
    rsp_free(&ip);
    free(ir);
}

static void test_srv_ir_signature_protected_by_vendor_cert(void)
{
    const char *extra[] = {"-cmd",
                           "ir",
                           "-cert",
                           g.devcert_pem,
                           "-key",
                           g.dev_key,
                           "-newkey",
                           g.dev2_key,
                           "-subject",
                           "/CN=device-SN4711-op",
                           "-implicit_confirm",
                           NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    X509 *x = check_issued(&r, CMP_BODY_IP, 0, g.dev2_key, "device-SN4711-op");
    CU_ASSERT_TRUE(stored_subject_is(x, "CN=device-SN4711-op"));
    X509_free(x);
    rsp_free(&r);
    free(ir);
}

// reprotect_pbmac1 re-protects request |der| with PBMAC1 (PBKDF2-HMAC-SHA256, HMAC-SHA256)
// under |secret|: the 3.0 client cannot produce PBMAC1 (RFC 9481 §6.1.3) itself.
static uint8_t *reprotect_pbmac1(size_t *out_len, const uint8_t *der, size_t len,
                                 const char *secret, cmp_mac_key *out_key)
{
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &m, cm_span_make(der, len), NULL));
    TEST_ASSERT_OK(cmp_mac_key_new_pbmac1(g.prot, out_key, cm_span_make(secret, strlen(secret)),
                                          CMP_HASH_SHA256, CMP_HASH_SHA256, 2000, 16, 32));
    der_builder ab, b;
    der_builder_init(&ab, 256);
    cmp_mac_key_put_alg(&ab, out_key);
    cm_span alg;
    TEST_ASSERT_OK(der_builder_finish(&ab, &alg));
    cmp_header_fields h = m.header.f;
    h.protection_alg = alg;
    der_builder_init(&b, 2048);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &m.body);
    uint8_t mac[64];
    size_t mac_len;
    TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, out_key,
                                   cmp_msg_writer_protected_part(&w)));
    const cm_span prot = cm_span_make(mac, mac_len);
    cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    der_builder_cleanup(&ab);
    cm_arena_cleanup(&a);
    return out;
}

static void test_srv_ir_pbmac1(void)
{
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,          "-secret",           "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-pbmac1", "-implicit_confirm", NULL};
    size_t len, len2;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    cmp_mac_key key;
    uint8_t *req = reprotect_pbmac1(&len2, ir, len, SECRET, &key);
    rsp r;
    process(&r, req, len2);
    X509 *x = check_issued(&r, CMP_BODY_IP, 0, g.dev_key, "device-pbmac1");
    // The response is PBMAC1-protected with the same parameters (RFC 9483 §3.2).
    cmp_prot_kind kind;
    TEST_ASSERT_OK(cmp_protect_kind(&kind, r.msg.header.protection_alg.whole));
    CU_ASSERT_EQUAL(kind, CMP_PROT_PBMAC1);
    cmp_mac_key rk;
    TEST_ASSERT_OK(cmp_protect_verify_mac(
        g.prot, &rk, r.msg.header.protection_alg.whole, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD,
        r.msg.protected_part, r.msg.protection, r.msg.protection_unused, NULL));
    cmp_mac_key_cleanse(&rk);
    X509_free(x);
    rsp_free(&r);
    free(req);
    // The same under a wrong secret: badMessageCheck.
    cmp_mac_key_cleanse(&key);
    req = reprotect_pbmac1(&len2, ir, len, "not-the-secret", &key);
    process(&r, req, len2);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    rsp_free(&r);
    free(req);
    cmp_mac_key_cleanse(&key);
    free(ir);
}

static void test_srv_ra_verified_only_from_an_ra(void)
{
    // The RA (a configured RA certificate with id-kp-cmcRA) sends raVerified: accepted.
    const char *ra[] = {"-cmd",
                        "ir",
                        "-cert",
                        g.ra_pem,
                        "-key",
                        g.ra_key,
                        "-popo",
                        "0",
                        "-newkey",
                        g.dev2_key,
                        "-subject",
                        "/CN=device-via-ra",
                        "-implicit_confirm",
                        NULL};
    size_t len;
    uint8_t *ir = make_request(&len, ra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    X509 *x = check_issued(&r, CMP_BODY_IP, 0, g.dev2_key, "device-via-ra");
    X509_free(x);
    rsp_free(&r);
    free(ir);
    // A device that is not an RA: notAuthorized.
    const char *dev[] = {"-cmd",         "ir",    "-ref", SECRET_REF, "-secret",
                         "pass:" SECRET, "-popo", "0",    "-newkey",  g.dev_key,
                         "-subject",     "/CN=x", NULL};
    ir = make_request(&len, dev);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_NOT_AUTHORIZED);
    rsp_free(&r);
    free(ir);
}

static void test_srv_p10cr(void)
{
    char csr[400];
    (void)snprintf(csr, sizeof(csr), "%s/p10.csr", g.dir);
    const char *mk[] = {"openssl",        "req",  "-new", "-key", g.dev_key, "-subj",
                        "/CN=device-p10", "-out", csr,    NULL};
    CU_ASSERT_TRUE_FATAL(run_openssl(mk));
    const char *extra[] = {"-cmd",         "p10cr", "-ref", SECRET_REF,          "-secret",
                           "pass:" SECRET, "-csr",  csr,    "-implicit_confirm", NULL};
    size_t len;
    uint8_t *req = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    rsp r;
    process(&r, req, len);
    X509 *x = check_issued(&r, CMP_BODY_CP, -1, g.dev_key, "device-p10");
    X509_free(x);
    rsp_free(&r);
    free(req);
}

// --- rejections -----------------------------------------------------------------------------

static void test_srv_rejects_wrong_secret_with_signed_error(void)
{
    const char *extra[] = {"-cmd",    "ir",      "-ref",     SECRET_REF, "-secret", "pass:wrong",
                           "-newkey", g.dev_key, "-subject", "/CN=x",    NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    CU_ASSERT_EQUAL(r.msg.body.u.error.status.status, CMP_STATUS_REJECTION);
    expect_status(&r, "the MAC does not verify: wrong shared secret for this senderKID?", false);
    rsp_free(&r);
    free(ir);
}

static void test_srv_rejects_unknown_reference(void)
{
    const char *extra[] = {"-cmd",     "ir",           "-ref",    "no-such-line",
                           "-secret",  "pass:" SECRET, "-newkey", g.dev_key,
                           "-subject", "/CN=x",        NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    expect_status(&r, "no MAC secret for senderKID no-such-line", false);
    rsp_free(&r);
    free(ir);
    // A senderKID that is not text is shown in hex.
    const char *bin[] = {"-cmd",    "ir",      "-ref",     "\x01\x02z", "-secret", "pass:" SECRET,
                         "-newkey", g.dev_key, "-subject", "/CN=x",     NULL};
    ir = make_request(&len, bin);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    process(&r, ir, len);
    expect_status(&r, "no MAC secret for senderKID 01027a", false);
    rsp_free(&r);
    free(ir);
}

static void test_srv_rejects_untrusted_signer(void)
{
    // A device certificate from a CA this CA does not trust.
    const char *extra[] = {"-cmd",     "ir",          "-cert",     g.rogue_leaf, "-key",
                           g.dev_key,  "-extracerts", g.rogue_pem, "-newkey",    g.dev2_key,
                           "-subject", "/CN=x",       NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_SIGNER_NOT_TRUSTED);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    // Which check failed, from OpenSSL's verification, and on which certificate.
    expect_status(&r,
                  "the signer's certificate is not trusted: self-signed certificate in "
                  "certificate chain (CN=rogue)",
                  false);
    rsp_free(&r);
    free(ir);
    // A self-signed signer: the client sends no extraCerts, so the signature cannot be
    // checked at all (RFC 9483 §3.3: the protection certificate MUST be extraCerts[0]).
    const char *self[] = {"-cmd",    "ir",      "-cert",    g.rogue_pem, "-key", g.rogue_key,
                          "-newkey", g.dev_key, "-subject", "/CN=x",     NULL};
    ir = make_request(&len, self);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    rsp_free(&r);
    free(ir);
}

static void test_srv_rejects_tampered_request(void)
{
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,          "-secret", "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-tamper", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    // Change one letter of the requested subject: the MAC no longer matches.
    uint8_t *p = memmem(ir, len, "device-tamper", 13);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    p[0] = 'D';
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    rsp_free(&r);
    free(ir);
}

static void test_srv_rejects_garbage_with_signed_bad_data_format(void)
{
    static const uint8_t inputs[][8] = {{0x30, 0x03, 0x02, 0x01, 0x02},
                                        {0x30, 0x80, 0x00, 0x00},
                                        {'G', 'E', 'T', ' ', '/'},
                                        {0x30, 0x05, 0x30, 0x03, 0x02, 0x01}};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        rsp r;
        process(&r, inputs[i], 5);
        CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_DATA_FORMAT);
        // No specifics to add: the registry's sentence, never a code.
        srv_summary sum;
        srv_request_summary(r.req, &sum);
        expect_status(&r, cm_result_text(sum.error), false);
        CU_ASSERT_PTR_NULL(strstr(sum.reason, "0x"));
        CU_ASSERT_TRUE(validates_with_ca(&r));
        CU_ASSERT_TRUE(r.msg.header.f.transaction_id.present); // generated by the server
        rsp_free(&r);
    }
}

static void test_srv_rejects_bad_popo(void)
{
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,        "-secret", "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-popo", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    // Re-protect a request whose POPO signature was damaged, so only the POPO is wrong.
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &m, cm_span_make(ir, len), NULL));
    crmf_popo *popo = &m.body.u.req.msgs[0].popo;
    CU_ASSERT_EQUAL_FATAL(popo->type, CRMF_POPO_SIGNATURE);
    uint8_t *sig = (uint8_t *)(uintptr_t)popo->signature.p;
    sig[popo->signature.len / 2] ^= 0x01;
    cmp_mac_key key;
    // The damage alone breaks the MAC...
    TEST_ASSERT_CODE(cmp_protect_verify_mac(g.prot, &key, m.header.protection_alg.whole,
                                            CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD,
                                            m.protected_part, m.protection, m.protection_unused,
                                            NULL),
                     CMP_E_PROT_MAC_MISMATCH);
    // ...so compute a valid one over the damaged request.
    TEST_ASSERT_OK(cmp_mac_key_derive(g.prot, &key, m.header.protection_alg.whole,
                                      CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
    uint8_t mac[64];
    size_t mac_len;
    TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, &key, m.protected_part));
    CU_ASSERT_EQUAL_FATAL(mac_len, m.protection.len);
    memcpy((uint8_t *)(uintptr_t)m.protection.p, mac, mac_len);
    cmp_mac_key_cleanse(&key);
    cm_arena_cleanup(&a);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_POP);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET)); // the request's MAC verified
    expect_status(&r,
                  "the POPO signature (ecdsa-with-SHA256) does not verify with the EC P-256 "
                  "public key",
                  false);
    rsp_free(&r);
    free(ir);
}

static void test_srv_rejects_cert_conf_for_unknown_transaction(void)
{
    // A certConf whose transaction was never started here.
    rsp fake;
    memset(&fake, 0, sizeof(fake));
    uint8_t tid[16] = {0xee}, nonce[16] = {0xdd};
    fake.msg.header.f.transaction_id = (cmp_opt_span){true, cm_span_make(tid, 16)};
    fake.msg.header.f.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, 16)};
    size_t clen;
    uint8_t *cc =
        make_cert_conf(&clen, &fake, ca_authority_cert(g.authority), SECRET, false, false, -1);
    rsp r;
    process(&r, cc, clen);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_REQUEST);
    expect_status(&r, "certConf for a transactionID this CA does not know", true);
    rsp_free(&r);
    free(cc);
}

static void test_srv_rejects_what_the_profile_refuses(void)
{
    // The profile's name, what was asked for and what it allows.
    const char *email[] = {"-cmd",     "ir",           "-ref",    SECRET_REF,
                           "-secret",  "pass:" SECRET, "-newkey", g.dev_key,
                           "-subject", "/CN=dev-san",  "-sans",   "https://dev.example/",
                           NULL};
    size_t len;
    uint8_t *ir = make_request(&len, email);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_CERT_TEMPLATE);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    expect_status(&r, "profile devices does not allow subjectAltName type uri (allowed: dns)",
                  false);
    srv_summary sum;
    srv_request_summary(r.req, &sum);
    CU_ASSERT_EQUAL(sum.error.code, CA_E_SAN_TYPE);
    CU_ASSERT_STRING_EQUAL(cm_result_name(sum.error), "CA_E_SAN_TYPE"); // the log line's name
    rsp_free(&r);
    free(ir);
    // A key type the profile does not take, and a curve certmint cannot use at all: both
    // refused by the profile's key check, which runs before the POPO is verified.
    const struct {
        test_pki_key_type type;
        const char *file;
        int bit;
        const char *text;
    } keys[] = {
        {TEST_PKI_ED448, "ed448.key", CMP_FAIL_BAD_CERT_TEMPLATE,
         "key type Ed448 not allowed by profile devices (allowed: P-256, P-384, RSA, Ed25519)"},
        {TEST_PKI_EC_SECP256K1, "secp256k1.key", CMP_FAIL_BAD_CERT_TEMPLATE,
         "key type secp256k1 not allowed by profile devices (allowed: P-256, P-384, RSA, "
         "Ed25519)"},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char key[400];
        test_path(key, sizeof(key), g.dir, keys[i].file);
        CU_ASSERT_FATAL(test_pki_make_key(key, keys[i].type, g.log));
        const char *args[] = {"-cmd",    "ir", "-ref",     SECRET_REF,    "-secret", "pass:" SECRET,
                              "-newkey", key,  "-subject", "/CN=dev-key", NULL};
        ir = make_request(&len, args);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
        process(&r, ir, len);
        CU_ASSERT_EQUAL(fail_bit_of(&r), keys[i].bit);
        expect_status(&r, keys[i].text, false);
        rsp_free(&r);
        free(ir);
    }
}

// --- the handler table ----------------------------------------------------------------------

static void test_srv_handler_table_has_a_row_per_body_type(void)
{
    static const cmp_body_type k_served[] = {CMP_BODY_IR,    CMP_BODY_CR,        CMP_BODY_KUR,
                                             CMP_BODY_P10CR, CMP_BODY_RR,        CMP_BODY_GENM,
                                             CMP_BODY_ERROR, CMP_BODY_CERT_CONF, CMP_BODY_POLL_REQ,
                                             CMP_BODY_CCR,   CMP_BODY_NESTED};
    CU_ASSERT_EQUAL(SRV_NUM_BODY_TYPES, CMP_BODY_POLL_REP + 1);
    CU_ASSERT_PTR_NULL(srv_handler_get(-1));
    CU_ASSERT_PTR_NULL(srv_handler_get(SRV_NUM_BODY_TYPES));
    for (int t = 0; t < SRV_NUM_BODY_TYPES; t++) {
        const srv_handler *h = srv_handler_get(t);
        CU_ASSERT_PTR_NOT_NULL_FATAL(h);
        CU_ASSERT_PTR_NOT_NULL(h->name);
        CU_ASSERT_PTR_NOT_NULL(h->start);
        bool served = false;
        for (size_t i = 0; i < sizeof(k_served) / sizeof(k_served[0]); i++) {
            served |= (int)k_served[i] == t;
        }
        if (!served) {
            // Every refused type goes to the one refusal handler and nowhere else.
            CU_ASSERT_PTR_EQUAL(h->start, srv_refuse_start);
            CU_ASSERT_PTR_NULL(h->after_sign);
            CU_ASSERT_PTR_NULL(h->after_store);
            CU_ASSERT_FALSE(h->opens_transaction);
        } else {
            CU_ASSERT_PTR_NOT_EQUAL(h->start, srv_refuse_start);
            CU_ASSERT(h->after_sign == NULL || h->after_store != NULL); // signed → recorded
            CU_ASSERT_EQUAL(h->opens_transaction, t != CMP_BODY_CERT_CONF && t != CMP_BODY_ERROR &&
                                                      t != CMP_BODY_POLL_REQ);
        }
        for (int u = 0; u < t; u++) {
            CU_ASSERT(strcmp(srv_handler_get(u)->name, h->name) != 0);
        }
    }
}

// make_pbm_body builds a PBM-protected message around the PKIBody element |body| (built by
// hand for bodies our codec does not marshal), MACed with |secret|.
static uint8_t *make_pbm_body(size_t *out_len, cm_span body, const char *secret)
{
    cmp_mac_key key;
    TEST_ASSERT_OK(cmp_mac_key_new_pbm(g.prot, &key, cm_span_make(secret, strlen(secret)),
                                       CMP_HASH_SHA256, CMP_HASH_SHA256, 500, 16));
    der_builder ab, hb, mb;
    der_builder_init(&ab, 128);
    der_builder_init(&hb, 512);
    der_builder_init(&mb, 1024);
    cmp_mac_key_put_alg(&ab, &key);
    cm_span alg;
    TEST_ASSERT_OK(der_builder_finish(&ab, &alg));
    uint8_t tid[16], nonce[16];
    CU_ASSERT_FATAL(RAND_bytes(tid, 16) == 1 && RAND_bytes(nonce, 16) == 1);
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.recipient_name = ca_authority_subject(g.authority);
    h.has_message_time = true;
    h.message_time = cm_time_now();
    h.protection_alg = alg;
    h.sender_kid = (cmp_opt_span){true, CM_SPAN_LIT(SECRET_REF)};
    h.transaction_id = (cmp_opt_span){true, cm_span_make(tid, 16)};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, 16)};
    cmp_header_marshal(&hb, &h);
    der_put_raw(&hb, body); // header || body: the content of ProtectedPart
    cm_span pp;
    TEST_ASSERT_OK(der_builder_finish(&hb, &pp));
    uint8_t mac[64];
    size_t mac_len;
    TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, &key, pp));
    der_mark m, p;
    der_open_hint(&mb, &m, DER_TAG_SEQUENCE, 3);
    der_put_raw(&mb, pp);
    der_open(&mb, &p, DER_CONTEXT_CONS(0));
    der_put_bitstring(&mb, cm_span_make(mac, mac_len), 0);
    der_close(&mb, &p);
    der_close(&mb, &m);
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&mb, &out, out_len));
    der_builder_cleanup(&ab);
    der_builder_cleanup(&hb);
    cmp_mac_key_cleanse(&key);
    return out;
}

// body_der marshals |body| with our codec into |*out| (heap; free() it).
static cm_span body_der(uint8_t **out, const cmp_body *body)
{
    der_builder b;
    der_builder_init(&b, 256);
    cmp_body_marshal(&b, body, 1);
    size_t n = 0;
    *out = NULL;
    TEST_ASSERT_OK(der_builder_take(&b, out, &n));
    return cm_span_make(*out, n);
}

static void test_srv_refuses_unsupported_bodies_after_authentication(void)
{
    // Bodies the codec reads but the CA does not serve reach the table's refusal handler:
    // authenticated first, so the badRequest error carries the request's MAC; with a wrong
    // secret the authentication failure is answered instead (signed).
    static const cmp_poll_rep k_rep[] = {{.cert_req_id = 0, .check_after = 5}};
    cmp_body bodies[2];
    memset(bodies, 0, sizeof(bodies));
    bodies[0].type = CMP_BODY_POLL_REP;
    bodies[0].u.poll_rep.items = k_rep;
    bodies[0].u.poll_rep.num = 1;
    bodies[1].type = CMP_BODY_PKICONF;
    for (size_t i = 0; i < 2; i++) {
        uint8_t *bbuf;
        const cm_span b = body_der(&bbuf, &bodies[i]);
        for (int wrong = 0; wrong < 2; wrong++) {
            size_t len;
            uint8_t *m = make_pbm_body(&len, b, wrong ? "not-the-secret" : SECRET);
            rsp r;
            process(&r, m, len);
            if (wrong) {
                CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
                CU_ASSERT_TRUE(validates_with_ca(&r));
            } else {
                CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_REQUEST);
                CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
                srv_summary sum;
                srv_request_summary(r.req, &sum);
                CU_ASSERT_EQUAL(sum.error.code, SRV_E_BODY);
                CU_ASSERT_EQUAL(sum.body_type, (int)bodies[i].type);
                expect_status(&r,
                              i == 0 ? "this CA does not accept pollRep messages"
                                     : "this CA does not accept pkiconf messages",
                              false);
            }
            rsp_free(&r);
            free(m);
        }
        free(bbuf);
    }
    // krr [9] CertReqMessages and ckuann [15] CAKeyUpdAnnContent: valid PKIBody choices the
    // codec does not read (CMP_E_UNSUPPORTED_BODY), so they are refused with badRequest before
    // any handler runs, and the error is signed (the MAC could not be checked).
    static const uint8_t k_krr[] = {0xa9, 0x04, 0x30, 0x02, 0x30, 0x00};
    static const uint8_t k_ckuann[] = {0xaf, 0x02, 0x30, 0x00};
    const cm_span raw[2] = {cm_span_make(k_krr, sizeof(k_krr)),
                            cm_span_make(k_ckuann, sizeof(k_ckuann))};
    for (size_t i = 0; i < 2; i++) {
        size_t len;
        uint8_t *m = make_pbm_body(&len, raw[i], SECRET);
        rsp r;
        process(&r, m, len);
        CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_REQUEST);
        CU_ASSERT_TRUE(validates_with_ca(&r));
        rsp_free(&r);
        free(m);
    }
}

// --- a transactionID collision costs no signature and leaves no certificate behind ----------

typedef struct txn_certs {
    cm_span tid;
    int total, revoked, valid, reason;
} txn_certs;

static bool count_txn_cert(void *ctx, const store_cert *c)
{
    txn_certs *t = ctx;
    if (cm_span_eq(c->transaction_id, t->tid)) {
        t->total++;
        if (c->status == STORE_CERT_REVOKED) {
            t->revoked++;
            t->reason = c->reason;
        }
        t->valid += c->status == STORE_CERT_VALID;
    }
    return true;
}

static void test_srv_txn_collision_reserved_before_signing(void)
{
    const char *extra[] = {
        "-cmd",    "ir",      "-ref",     SECRET_REF,        "-secret",           "pass:" SECRET,
        "-newkey", g.dev_key, "-subject", "/CN=device-race", "-implicit_confirm", NULL};
    size_t len;
    uint8_t *ir = make_request(&len, extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ir);
    hsm_pool_stats before, after;
    hsm_pool_get_stats(g.pool, &before);
    // Two requests with one transactionID at once (issue 14 §8): the transactionID is
    // reserved in the store before anything is signed, so one reservation fails on the
    // conflict and its request is answered transactionIdInUse without an HSM signature.
    srv_request *req[2];
    for (int i = 0; i < 2; i++) {
        req[i] = srv_request_new(g.worker, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(req[i]);
        uint8_t *body = srv_request_body(req[i], len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(body);
        memcpy(body, ir, len);
        CU_ASSERT_FALSE(srv_request_start(req[i], &g.ca, cm_span_make(body, len)));
    }
    bool done[2] = {false, false};
    int revokes = 0;
    while (!done[0] || !done[1]) {
        (void)cm_cq_wait(&g.cq, 1000);
        for (cm_cq_node *n = cm_cq_drain(&g.cq); n != NULL;) {
            cm_cq_node *next = n->next;
            revokes +=
                n->kind == CM_CQ_KIND_STORE_JOB && ((store_job *)n)->op == STORE_OP_CERT_REVOKE;
            srv_request *fin = srv_worker_on_completion(g.worker, n);
            if (fin != NULL) {
                done[fin == req[0] ? 0 : 1] = true;
            }
            n = next;
        }
    }
    srv_summary s0, s1;
    srv_request_summary(req[0], &s0);
    srv_request_summary(req[1], &s1);
    CU_ASSERT_EQUAL(s0.fail_bit < 0, s1.fail_bit >= 0);
    const srv_summary *ls = s0.fail_bit >= 0 ? &s0 : &s1;
    CU_ASSERT_EQUAL(ls->fail_bit, CMP_FAIL_TRANSACTION_ID_IN_USE);
    CU_ASSERT_STRING_EQUAL(ls->reason,
                           "transactionID already in use: use a fresh one for each enrolment");
    CU_ASSERT_EQUAL(ls->stage_ns[SRV_STAGE_HSM], 0); // the loser never reached the HSM
    CU_ASSERT_EQUAL(revokes, 0);
    // One signature in all: the winner's certificate (its response is MAC-protected).
    hsm_pool_get_stats(g.pool, &after);
    CU_ASSERT_EQUAL(after.signed_ok - before.signed_ok, 1);
    // The store: one certificate under the transactionID, valid; nothing revoked.
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &m, cm_span_make(ir, len), NULL));
    txn_certs t = {.tid = m.header.f.transaction_id.v, .reason = -1};
    store_reader *rd;
    TEST_ASSERT_OK(store_reader_open(g.st, &rd));
    store_filter f = {.ca = "devices", .status = STORE_CERT_ANY};
    TEST_ASSERT_OK(store_cert_list(rd, &f, count_txn_cert, &t));
    store_reader_close(rd);
    CU_ASSERT_EQUAL(t.total, 1);
    CU_ASSERT_EQUAL(t.revoked, 0);
    CU_ASSERT_EQUAL(t.valid, 1);
    cm_arena_cleanup(&a);
    srv_request_free(req[0]);
    srv_request_free(req[1]);
    // The same request once more, later: refused the same way, still without a signature.
    hsm_pool_get_stats(g.pool, &before);
    rsp r;
    process(&r, ir, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_TRANSACTION_ID_IN_USE);
    hsm_pool_get_stats(g.pool, &after);
    CU_ASSERT_EQUAL(after.signed_ok, before.signed_ok);
    rsp_free(&r);
    free(ir);
}

// --- request recycling ----------------------------------------------------------------------

// is_fresh: |req| is zeroed but for what srv_request_new sets and its arena's one kept block.
static bool is_fresh(const srv_request *req, const srv_worker *w)
{
    srv_request copy = *req;
    const bool ok = copy.w == w && copy.body_type == -1 && copy.fail_bit == -1 &&
                    copy.arena.head != NULL && copy.arena.total == SRV_ARENA_BLOCK;
    copy.w = NULL;
    copy.user = NULL;
    copy.prev = copy.next = NULL;
    copy.body_type = 0;
    copy.fail_bit = 0;
    memset(&copy.arena, 0, sizeof(copy.arena));
    static const srv_request k_zero;
    return ok && memcmp(&copy, &k_zero, sizeof(copy)) == 0;
}

static void test_srv_recycles_requests(void)
{
    // A steady stream on one worker: the same request object and arena block every time.
    srv_request *first = NULL;
    for (int i = 0; i < 20; i++) {
        size_t len;
        uint8_t *m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CA_CERTS), cm_span_make(NULL, 0));
        rsp r;
        process(&r, m, len);
        CU_ASSERT_PTR_NOT_NULL(genp_item(&r));
        if (i == 0) {
            first = r.req;
        } else {
            CU_ASSERT_PTR_EQUAL(r.req, first);
            CU_ASSERT_EQUAL(r.req->arena.total, SRV_ARENA_BLOCK); // still the kept block
        }
        rsp_free(&r);
        free(m);
    }
    // The free list is bounded: an engine keeping 2 gets 2 back of 5 freed.
    srv_params sp = g.engine->p;
    sp.free_requests = 2;
    srv_engine *e;
    srv_worker *w;
    cm_cq cq;
    TEST_ASSERT_OK(srv_engine_new(&e, &sp));
    TEST_ASSERT_OK(cm_cq_init(&cq));
    TEST_ASSERT_OK(srv_worker_new(&w, e, &cq));
    srv_request *reqs[5];
    for (int i = 0; i < 5; i++) {
        reqs[i] = srv_request_new(w, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(reqs[i]);
        CU_ASSERT_PTR_NOT_NULL(srv_request_body(reqs[i], 100)); // the arena's first block
    }
    CU_ASSERT_EQUAL(srv_worker_num_free(w), 0);
    for (int i = 0; i < 5; i++) {
        srv_request_free(reqs[i]);
    }
    CU_ASSERT_EQUAL(srv_worker_num_free(w), 2);
    srv_request *again = srv_request_new(w, NULL);
    CU_ASSERT_PTR_EQUAL(again, reqs[1]); // the last one kept (the first two freed were)
    CU_ASSERT_TRUE(is_fresh(again, w));
    CU_ASSERT_EQUAL(srv_worker_num_free(w), 1);
    srv_request_free(again);
    srv_worker_free(w);
    srv_engine_free(e);
    cm_cq_cleanup(&cq);
}

static void test_srv_recycled_request_does_not_see_the_previous_mac_key(void)
{
    size_t len;
    uint8_t *m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CA_CERTS), cm_span_make(NULL, 0));
    rsp r;
    process(&r, m, len);
    CU_ASSERT_PTR_NOT_NULL(genp_item(&r)); // MAC-protected with the request's key
    srv_request *used = r.req;
    CU_ASSERT_TRUE(used->mac_ok);
    CU_ASSERT_NOT_EQUAL(used->mac_key.key_len, 0);
    rsp_free(&r);
    free(m);

    // The next request is the same object, wiped: no MAC state, no key bytes.
    srv_request *next = srv_request_new(g.worker, NULL);
    CU_ASSERT_PTR_EQUAL_FATAL(next, used);
    CU_ASSERT_TRUE(is_fresh(next, g.worker));
    static const cmp_mac_key k_zero_key;
    CU_ASSERT_EQUAL(memcmp(&next->mac_key, &k_zero_key, sizeof(k_zero_key)), 0);
    srv_request_free(next);

    // A request with the wrong secret on the recycled object: the error is signed by the CA,
    // never MACed with the previous request's key.
    cmp_itav itav = {.oid = CM_SPAN_LIT(DER_OID_IT_CA_CERTS)};
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENM;
    body.u.gen.items = &itav;
    body.u.gen.num = 1;
    uint8_t *bbuf;
    const cm_span b = body_der(&bbuf, &body);
    m = make_pbm_body(&len, b, "not-the-secret");
    process(&r, m, len);
    CU_ASSERT_PTR_EQUAL(r.req, used);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_BAD_MESSAGE_CHECK);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    CU_ASSERT_FALSE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    free(m);
    free(bbuf);
}

static void test_srv_request_may_be_freed_after_its_worker(void)
{
    // The rule (srv.h): srv_worker_free detaches the requests still out; they may then only be
    // freed, which returns them to the heap. ASan checks there is no use after free or leak.
    srv_worker *w;
    TEST_ASSERT_OK(srv_worker_new(&w, g.engine, &g.cq));
    srv_request *kept = srv_request_new(w, NULL);
    srv_request *done = srv_request_new(w, NULL);
    srv_request *idle = srv_request_new(w, NULL);
    CU_ASSERT_FATAL(kept != NULL && done != NULL && idle != NULL);
    size_t len;
    uint8_t *m = make_genm(&len, CM_SPAN_LIT(DER_OID_IT_CA_CERTS), cm_span_make(NULL, 0));
    uint8_t *body = srv_request_body(kept, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memcpy(body, m, len);
    const cm_span resp = srv_request_run(kept, &g.ca, cm_span_make(body, len));
    CU_ASSERT(resp.len > 0);
    CU_ASSERT_PTR_NOT_NULL(srv_request_body(done, 64));
    srv_request_free(done); // kept by the worker for reuse
    CU_ASSERT_EQUAL(srv_worker_num_free(w), 1);
    srv_worker_free(w);
    CU_ASSERT_PTR_NULL(kept->w);
    CU_ASSERT_EQUAL(srv_request_response(kept).len, resp.len); // still readable
    srv_request_free(kept);
    srv_request_free(idle);
    free(m);
}

int test_srv_register(void);
int test_srv_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_srv_ir_pbm_implicit_confirm),
        TEST_CASE(test_srv_ir_pbm_with_cert_conf),
        TEST_CASE(test_srv_cert_conf_rejection_revokes),
        TEST_CASE(test_srv_ir_signature_protected_by_vendor_cert),
        TEST_CASE(test_srv_p10cr),
        TEST_CASE(test_srv_ra_verified_only_from_an_ra),
        TEST_CASE(test_srv_ir_pbmac1),
        TEST_CASE(test_srv_rejects_wrong_secret_with_signed_error),
        TEST_CASE(test_srv_rejects_unknown_reference),
        TEST_CASE(test_srv_rejects_untrusted_signer),
        TEST_CASE(test_srv_rejects_tampered_request),
        TEST_CASE(test_srv_rejects_garbage_with_signed_bad_data_format),
        TEST_CASE(test_srv_rejects_bad_popo),
        TEST_CASE(test_srv_rejects_cert_conf_for_unknown_transaction),
        TEST_CASE(test_srv_rejects_what_the_profile_refuses),
        TEST_CASE(test_srv_genm_types),
        TEST_CASE(test_srv_genm_crl_update),
        TEST_CASE(test_srv_genm_root_ca_key_update),
        TEST_CASE(test_srv_rr_flows),
        TEST_CASE(test_srv_handler_table_has_a_row_per_body_type),
        TEST_CASE(test_srv_refuses_unsupported_bodies_after_authentication),
        TEST_CASE(test_srv_txn_collision_reserved_before_signing),
        TEST_CASE(test_srv_recycles_requests),
        TEST_CASE(test_srv_recycled_request_does_not_see_the_previous_mac_key),
        TEST_CASE(test_srv_request_may_be_freed_after_its_worker),
    };
    return test_register_suite("srv", srv_suite_init, srv_suite_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
