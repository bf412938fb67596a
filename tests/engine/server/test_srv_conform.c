// Suite "srv_conform": the RFC 9483 conformance rules of the request state machine (issue 15),
// driven in process like suite "srv" (a throwaway SoftHSM token, a real SQLite store) with
// requests built by the project's marshal code, because most of them are what a conforming
// client never sends. Every response is read back with our codec (body type, PKIStatus,
// failInfo bit, statusString) and must be accepted by OpenSSL's d2i_OSSL_CMP_MSG.
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
#include <openssl/x509v3.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv.h"
#include "engine/server/srv_internal.h"
#include "tests/support/test_hand.h"
#include "tests/support/test_support.h"

#define SECRET_REF "line-7"
#define SECRET     "factory-secret"

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
    srv_secret secrets[1];
    cm_span ra_cert; // the RA's certificate (DER), issued by the vendor CA
    srv_ca ca;
    srv_engine *engine;
    cm_cq cq;
    srv_worker *worker;
    X509 *ca_x509;
    EVP_PKEY *ec_key, *ec2_key, *ed_key, *rsa_key, *ra_key, *idev_key;
    uint8_t *ra_der, *idev_der;
    cm_span idev_cert; // a manufacturer certificate (IDevID) for ec_key, not an RA
    char ec_pem[320], idev_pem[320], vendor_pem[320];
} g;

// --- fixture --------------------------------------------------------------------------------

static bool make_root(const char *pem_path)
{
    return test_hand_make_root(&g.ca_x509, g.pool, g.ca_key, "certmint conform root", 0x2002,
                               pem_path);
}

// cert_der reads the PEM certificate at |path| as DER (OPENSSL_free it).
static uint8_t *cert_der(const char *path, cm_span *out)
{
    X509 *x = test_pki_read_cert(path);
    unsigned char *der = NULL;
    const int len = x != NULL ? i2d_X509(x, &der) : -1;
    X509_free(x);
    *out = len > 0 ? cm_span_make(der, (size_t)len) : cm_span_make(NULL, 0);
    return len > 0 ? der : NULL;
}

static int conform_init(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "srvconf") ||
        !test_token_create(&g.token, "srv-conform")) {
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
    char ca_pem[320], vendor_key[320], ra_key[320], ra_pem[320], ec[320], ec2[320], ed[320],
        rsa[320];
    test_path(ca_pem, sizeof(ca_pem), g.dir, "ca.pem");
    test_path(g.vendor_pem, sizeof(g.vendor_pem), g.dir, "vendor.pem");
    test_path(vendor_key, sizeof(vendor_key), g.dir, "vendor.key");
    test_path(ra_key, sizeof(ra_key), g.dir, "ra.key");
    test_path(ra_pem, sizeof(ra_pem), g.dir, "ra.pem");
    test_path(g.idev_pem, sizeof(g.idev_pem), g.dir, "idevid.pem");
    test_path(ec, sizeof(ec), g.dir, "ec.key");
    test_path(ec2, sizeof(ec2), g.dir, "ec2.key");
    test_path(ed, sizeof(ed), g.dir, "ed.key");
    test_path(rsa, sizeof(rsa), g.dir, "rsa.key");
    (void)snprintf(g.ec_pem, sizeof(g.ec_pem), "%s", ec);
    const char *const ca_true[] = {"basicConstraints=critical,CA:TRUE", NULL};
    const test_pki_cert_spec vendor = {
        .subject = "/O=Vendor/CN=Vendor IDevID CA", .days = 30, .addext = ca_true};
    // The RA certificate carries id-kp-cmcRA (RFC 9483 §3.3; ra_require_cmcra is on by default).
    char ra_ext[320];
    test_path(ra_ext, sizeof(ra_ext), g.dir, "ra-ext.cnf");
    static const char k_ra_ext[] = "[ra]\nextendedKeyUsage = 1.3.6.1.5.5.7.3.28\n";
    const test_pki_cert_spec ra = {.subject = "/O=Vendor/CN=RA-1",
                                   .days = 30,
                                   .serial = "77",
                                   .ext_file = ra_ext,
                                   .ext_section = "ra"};
    const test_pki_cert_spec idev = {
        .subject = "/O=Vendor/CN=device-SN1", .days = 30, .key_exists = true, .serial = "4712"};
    if (!test_write_file(ra_ext, k_ra_ext, sizeof(k_ra_ext) - 1) || !make_root(ca_pem) ||
        !test_pki_make_key(ec, TEST_PKI_EC_P256, g.log) ||
        !test_pki_make_key(ec2, TEST_PKI_EC_P256, g.log) ||
        !test_pki_make_key(ed, TEST_PKI_ED25519, g.log) ||
        !test_pki_make_key(rsa, TEST_PKI_RSA_2048, g.log) ||
        !test_pki_make_ca(vendor_key, g.vendor_pem, &vendor, g.log) ||
        !test_pki_issue(ra_key, ra_pem, vendor_key, g.vendor_pem, &ra, g.log) ||
        !test_pki_issue(ec, g.idev_pem, vendor_key, g.vendor_pem, &idev, g.log)) {
        return 1;
    }
    g.ec_key = test_pki_read_key(ec);
    g.ec2_key = test_pki_read_key(ec2);
    g.ed_key = test_pki_read_key(ed);
    g.rsa_key = test_pki_read_key(rsa);
    g.ra_key = test_pki_read_key(ra_key);
    g.ra_der = cert_der(ra_pem, &g.ra_cert);
    g.idev_der = cert_der(g.idev_pem, &g.idev_cert);
    if (g.ec_key == NULL || g.ec2_key == NULL || g.ed_key == NULL || g.rsa_key == NULL ||
        g.ra_key == NULL || g.ra_der == NULL || g.idev_der == NULL) {
        return 1;
    }
    char db[400], err_s[256];
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    const char *own[] = {ca_pem};
    const char *vend[] = {g.vendor_pem};
    if (!cm_ok(store_open(&g.st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot, NULL, NULL, &lim)) ||
        !cm_ok(ca_authority_load(&g.authority, err_s, sizeof(err_s), ca_pem, NULL)) ||
        !cm_ok(ca_trust_new(&g.own_trust, err_s, sizeof(err_s), own, 1, 64)) ||
        !cm_ok(ca_trust_new(&g.client_trust, err_s, sizeof(err_s), vend, 1, 64))) {
        fprintf(stderr, "setup: %s\n", err_s);
        return 1;
    }
    // An end-entity device profile: requests may narrow keyUsage to what the key is for
    // (keyAgreement for ECDH, keyEncipherment for RSA encryption keys).
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
                            .implicit_confirm = true,
                            .has_key_usage_allowed = true,
                            .key_usage_allowed = CA_KU_DIGITAL_SIGNATURE | CA_KU_KEY_AGREEMENT |
                                                 CA_KU_KEY_ENCIPHERMENT};
    const bool prof_ok =
        conf_ok && cm_ok(ca_profile_new(&g.profile, err_s, sizeof(err_s), &pp, conf, "ext"));
    NCONF_free(conf);
    if (!prof_ok) {
        fprintf(stderr, "profile: %s\n", err_s);
        return 1;
    }
    g.secrets[0].ref = CM_SPAN_LIT(SECRET_REF);
    g.secrets[0].secret = CM_SPAN_LIT(SECRET);
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
                    .ra_certs = &g.ra_cert,
                    .num_ra_certs = 1,
                    // The cases reuse a few device keys; key reuse has its own suite (srv_trust).
                    .policy = {.allow_key_reuse = true},
                    .crl_validity = 86400};
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

static int conform_cleanup(void)
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
    EVP_PKEY_free(g.ec_key);
    EVP_PKEY_free(g.ec2_key);
    EVP_PKEY_free(g.ed_key);
    EVP_PKEY_free(g.rsa_key);
    EVP_PKEY_free(g.ra_key);
    OPENSSL_free(g.ra_der);
    OPENSSL_free(g.idev_der);
    test_token_destroy(&g.token);
    (void)test_rmtree(g.dir);
    return 0;
}

// --- hand-built requests (tests/support/test_hand) ----------------------------------------------

typedef test_hand hand;

enum {
    PROT_NONE = TEST_PROT_NONE,
    PROT_ALG_ONLY = TEST_PROT_ALG_ONLY,
    PROT_BITS_ONLY = TEST_PROT_BITS_ONLY,
};

// hand_init starts a valid PBM-protected message of type |t| from the MAC client line-7.
static void hand_init(hand *x, cmp_body_type t)
{
    test_hand_init(x, t, g.prot, ca_authority_subject(g.authority), CM_SPAN_LIT(SECRET_REF),
                   SECRET);
}

static void hand_free(hand *x)
{
    test_hand_free(x);
}

static cm_span hand_name(hand *x, const char *dn)
{
    cm_span out;
    TEST_ASSERT_OK(test_hand_name(x, &out, dn));
    return out;
}

static cm_span hand_spki(hand *x, EVP_PKEY *key)
{
    cm_span out;
    TEST_ASSERT_OK(test_hand_spki(x, &out, key));
    return out;
}

static cm_span spki_body(cm_span spki)
{
    const cm_span b = test_spki_body(spki);
    CU_ASSERT_FATAL(b.len > 0);
    return b;
}

static cm_span sig_alg_of(hand *x, EVP_PKEY *key)
{
    cm_span out;
    TEST_ASSERT_OK(test_hand_sig_alg(x, &out, key));
    return out;
}

static void hand_template(hand *x, EVP_PKEY *key, const char *dn)
{
    TEST_ASSERT_OK(test_hand_template(x, key, dn));
}

static void hand_extensions(hand *x, const char *const *names, const char *const *values, size_t n)
{
    TEST_ASSERT_OK(test_hand_extensions(x, names, values, n));
}

static void hand_sign(hand *x, EVP_PKEY *key, cm_span cert)
{
    TEST_ASSERT_OK(test_hand_sign(x, key, cert));
}

static uint8_t *hand_build(hand *x, size_t *out_len)
{
    uint8_t *out = NULL;
    TEST_ASSERT_OK(test_hand_build(x, &out, out_len));
    return out;
}

// --- responses --------------------------------------------------------------------------------

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
    CU_ASSERT_TRUE_FATAL(out->parsed);
    // OpenSSL's CMP decoder must accept every response.
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

// hand_run builds |x|, processes it and frees the DER.
static void hand_run(rsp *out, hand *x)
{
    size_t len = 0;
    uint8_t *der = hand_build(x, &len);
    process(out, der, len);
    free(der);
}

static bool validates_with_secret(const rsp *r)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    bool ok = ctx != NULL &&
              OSSL_CMP_CTX_set1_secretValue(ctx, (const unsigned char *)SECRET,
                                            (int)strlen(SECRET)) == 1 &&
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

// status_of returns the PKIStatusInfo |r| carries: an error's, the one CertResponse's of an
// ip/cp/kup, an rp's first; NULL for other bodies.
static const cmp_status_info *status_of(const rsp *r)
{
    const cmp_body *b = &r->msg.body;
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

// text_of writes the statusString's first UTF8String into |buf|.
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

// expect checks |r|: body type |body|, PKIStatus |status|, exactly the failInfo bit |bit| (-1:
// none) and a statusString starting with |text| (NULL: not checked). For rejections in an
// ip/cp/kup there is no certificate, and the log line's reason is the statusString.
#define expect(r, body, status, bit, text) expect_at(__LINE__, r, body, status, bit, text)
static void expect_at(int line, const rsp *r, cmp_body_type body, int64_t status, int bit,
                      const char *text)
{
    srv_summary sum;
    srv_request_summary(r->req, &sum);
    const cmp_status_info *st = status_of(r);
    char got[400] = "";
    if (st != NULL) {
        text_of(st, got, sizeof(got));
    }
    const uint32_t want_fi = bit >= 0 ? CMP_FAILINFO_BIT((uint32_t)bit) : 0;
    const bool ok = r->msg.body.type == body && st != NULL && st->status == status &&
                    (st->has_fail_info ? st->fail_info : 0) == want_fi &&
                    (text == NULL || strncmp(got, text, strlen(text)) == 0);
    if (!ok) {
        fprintf(stderr,
                "\n  line %d: got body %d status %lld failInfo 0x%x (%s) \"%s\""
                "\n           want body %d status %lld bit %d \"%s...\"\n",
                line, (int)r->msg.body.type, st != NULL ? (long long)st->status : -1LL,
                st != NULL ? st->fail_info : 0, cm_result_name(sum.error), got, (int)body,
                (long long)status, bit, text != NULL ? text : "");
    }
    CU_ASSERT_TRUE(ok);
    if (status == CMP_STATUS_REJECTION && st != NULL) {
        CU_ASSERT_STRING_EQUAL(sum.reason, got);
        const cmp_body_type t = r->msg.body.type;
        if (t == CMP_BODY_IP || t == CMP_BODY_CP || t == CMP_BODY_KUP) {
            CU_ASSERT_FALSE(r->msg.body.u.rep.responses[0].has_certified_key_pair);
        }
    }
}

// span_free frees a heap span (issued_cert, enrol).
static void span_free(cm_span s)
{
    free((void *)(uintptr_t)s.p);
}

// cert_resp returns the one CertResponse of an ip/cp/kup (the test stops otherwise).
static const cmp_cert_response *cert_resp(const rsp *r)
{
    const cmp_body_type t = r->msg.body.type;
    CU_ASSERT_FATAL((t == CMP_BODY_IP || t == CMP_BODY_CP || t == CMP_BODY_KUP) &&
                    r->msg.body.u.rep.num_responses == 1);
    return &r->msg.body.u.rep.responses[0];
}

// expect_pkiconf checks |r| is the pkiconf of an accepted certConf.
static void expect_pkiconf(const rsp *r)
{
    if (r->msg.body.type != CMP_BODY_PKICONF) {
        srv_summary sum;
        srv_request_summary(r->req, &sum);
        fprintf(stderr, "\n  not a pkiconf: %s \"%s\"\n", cm_result_name(sum.error), sum.reason);
    }
    CU_ASSERT_EQUAL(r->msg.body.type, CMP_BODY_PKICONF);
}

// issued_cert returns a heap copy of the certificate of an ip/cp/kup (free() it).
static cm_span issued_cert(const rsp *r)
{
    const cmp_cert_response *cr = cert_resp(r);
    CU_ASSERT_FATAL(cr->has_certified_key_pair);
    const cm_span c = cr->cert;
    uint8_t *p = malloc(c.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memcpy(p, c.p, c.len);
    return cm_span_make(p, c.len);
}

// enrol issues a certificate for |key| with subject |dn| (PBM, implicitConfirm) and returns it
// (heap; span_free it).
static cm_span enrol(EVP_PKEY *key, const char *dn)
{
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, key, dn);
    x.ginfo[0] = cmp_itav_implicit_confirm();
    x.h.general_info = x.ginfo;
    x.h.num_general_info = 1;
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    const cm_span c = issued_cert(&r);
    rsp_free(&r);
    hand_free(&x);
    return c;
}

static store_cert_status stored_status(cm_span cert)
{
    ca_cert_fields f;
    store_cert_status st = STORE_CERT_ANY;
    store_reader *rd;
    if (cm_ok(ca_cert_fields_parse(&f, cert)) && cm_ok(store_reader_open(g.st, &rd))) {
        cm_arena a;
        cm_arena_init(&a, 0, 0);
        store_cert c;
        if (cm_ok(store_cert_get(rd, &a, &c, "devices", f.serial))) {
            st = c.status;
        }
        cm_arena_cleanup(&a);
        store_reader_close(rd);
    }
    return st;
}

// --- §1: where a rejection goes (RFC 9483 §3.6.4) ---------------------------------------------

static void test_conform_content_rejection_in_the_response_type(void)
{
    // The profile refuses the request's content: ir -> ip, cr -> cp, kur -> kup, each with one
    // CertResponse carrying rejection, the failInfo and the reason; protected as usual.
    static const cmp_body_type k_types[] = {CMP_BODY_IR, CMP_BODY_CR};
    static const cmp_body_type k_resp[] = {CMP_BODY_IP, CMP_BODY_CP};
    for (size_t i = 0; i < 2; i++) {
        hand x;
        hand_init(&x, k_types[i]);
        hand_template(&x, g.ec_key, "/CN=dev-1");
        const char *n[] = {"subjectAltName"}, *v[] = {"email:dev@example.com"};
        hand_extensions(&x, n, v, 1);
        rsp r;
        hand_run(&r, &x);
        expect(&r, k_resp[i], CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
               "profile devices does not allow subjectAltName type email (allowed: dns)");
        CU_ASSERT_EQUAL(cert_resp(&r)->cert_req_id, 0);
        CU_ASSERT_TRUE(validates_with_secret(&r));
        CU_ASSERT_FALSE(r.msg.header.implicit_confirm);
        rsp_free(&r);
        hand_free(&x);
    }
    // The message as a whole is wrong (its MAC): an error message, signed.
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=dev-2");
    x.secret = "not-the-secret";
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK, "the MAC");
    CU_ASSERT_TRUE(validates_with_ca(&r));
    rsp_free(&r);
    hand_free(&x);
    // A transactionID in use is about the header: an error, even after authentication.
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=dev-3");
    x.ginfo[0] = cmp_itav_implicit_confirm();
    x.h.general_info = x.ginfo;
    x.h.num_general_info = 1;
    size_t len;
    uint8_t *der = hand_build(&x, &len);
    process(&r, der, len);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    process(&r, der, len);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_TRANSACTION_ID_IN_USE, NULL);
    CU_ASSERT_TRUE(validates_with_secret(&r));
    rsp_free(&r);
    free(der);
    hand_free(&x);
}

static void test_conform_p10cr_rejection_in_cp_with_id_minus_1(void)
{
    // A CSR for an Ed448 key, which the profile does not take: cp, certReqId -1.
    char key[400], csr[400];
    test_path(key, sizeof(key), g.dir, "ed448.key");
    test_path(csr, sizeof(csr), g.dir, "ed448.csr");
    CU_ASSERT_FATAL(test_pki_make_key(key, TEST_PKI_ED448, g.log));
    const char *argv[] = {"openssl", "req",      "-new", "-key", key, "-subj",
                          "/CN=p10", "-outform", "DER",  "-out", csr, NULL};
    CU_ASSERT_FATAL(test_run(argv, g.log) == 0);
    uint8_t *buf;
    size_t blen;
    CU_ASSERT_FATAL(test_read_file(csr, &buf, &blen));
    hand x;
    hand_init(&x, CMP_BODY_P10CR);
    TEST_ASSERT_OK(crmf_csr_from_der(&x.body.u.p10, cm_span_make(buf, blen)));
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_CP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "key type Ed448 not allowed by profile devices");
    CU_ASSERT_EQUAL(cert_resp(&r)->cert_req_id, -1);
    rsp_free(&r);
    hand_free(&x);
    free(buf);
}

// --- §3: header and protection rules ---------------------------------------------------------

static void test_conform_header_rules(void)
{
    // implicitConfirm together with confirmWaitTime: refused as a whole (error, badDataFormat).
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=hdr");
    uint8_t cwt[17];
    x.ginfo[0] = cmp_itav_implicit_confirm();
    x.ginfo[1] = cmp_itav_confirm_wait_time(cwt, cm_time_now() + 60);
    x.h.general_info = x.ginfo;
    x.h.num_general_info = 2;
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_DATA_FORMAT,
           "the header has both implicitConfirm and confirmWaitTime");
    rsp_free(&r);
    // implicitConfirm whose value is not NULL.
    x.ginfo[0].value = CM_SPAN_LIT("\x02\x01\x00");
    x.h.num_general_info = 1;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_DATA_FORMAT,
           "the implicitConfirm value is not NULL");
    rsp_free(&r);
    x.h.num_general_info = 0;
    // protection without protectionAlg, and the reverse: badMessageCheck, error, signed.
    x.prot_mode = PROT_BITS_ONLY;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK,
           "the message has protection but no protectionAlg");
    CU_ASSERT_TRUE(validates_with_ca(&r));
    rsp_free(&r);
    x.prot_mode = PROT_ALG_ONLY;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK,
           "the message names a protectionAlg but carries no protection");
    rsp_free(&r);
    hand_free(&x);
}

// --- §4: request content rules ---------------------------------------------------------------

static void test_conform_one_cert_req_msg_with_id_0(void)
{
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=two");
    x.msgs[1] = x.msgs[0];
    x.body.u.req.num_msgs = 2;
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "the request must carry exactly one CertReqMsg, not 2");
    rsp_free(&r);
    hand_free(&x);
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=id");
    x.msgs[0].req.cert_req_id = 5;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "the certReqId must be 0, not 5");
    CU_ASSERT_EQUAL(cert_resp(&r)->cert_req_id, 5); // the request's, echoed
    rsp_free(&r);
    hand_free(&x);
}

static void test_conform_subject_or_san_required(void)
{
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "");
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "the requested subject is empty and there is no subjectAltName");
    rsp_free(&r);
    hand_free(&x);
    // With a SAN the empty subject is fine (and the SAN critical, RFC 5280 §4.2.1.6).
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "");
    const char *n[] = {"subjectAltName"}, *v[] = {"DNS:dev-san.example"};
    hand_extensions(&x, n, v, 1);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
}

static void test_conform_popo_algorithm_must_fit_the_key(void)
{
    // An Ed25519 key with a POPO claiming ecdsa-with-SHA256: badPOP in the ip.
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ed_key, "/CN=ed");
    x.popo_alg = sig_alg_of(&x, g.ec_key);
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP,
           "the POPO signature algorithm ecdsa-with-SHA256 does not fit the Ed25519 key");
    rsp_free(&r);
    hand_free(&x);
}

static void test_conform_ra_verified_from_an_end_entity(void)
{
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=claims-ra");
    x.msgs[0].popo.type = CRMF_POPO_RA_VERIFIED;
    x.popo_key = NULL;
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
           "raVerified proof of possession is accepted only from an RA of this CA");
    rsp_free(&r);
    hand_free(&x);
}

static void test_conform_oversized_key_refused_before_popo(void)
{
    // An 8192-bit RSA modulus (over the profile's 4096) with a POPO that does not verify:
    // refused for its size (badCertTemplate) before any signature work, not for the POPO.
    uint8_t n[1 + 1024];
    CU_ASSERT_FATAL(RAND_bytes(n + 1, 1024) == 1);
    n[0] = 0x00;
    n[1] |= 0x80;
    n[1024] |= 0x01;
    hand x;
    hand_init(&x, CMP_BODY_IR);
    der_builder kb, sb;
    der_builder_init_arena(&kb, &x.a, 1100);
    der_mark seq, alg, bits;
    der_open_hint(&kb, &seq, DER_TAG_SEQUENCE, 3);
    der_put_tlv(&kb, DER_TAG_INTEGER, cm_span_make(n, sizeof(n)));
    der_put_tlv(&kb, DER_TAG_INTEGER, CM_SPAN_LIT("\x01\x00\x01"));
    der_close(&kb, &seq);
    cm_span rsa_key;
    TEST_ASSERT_OK(der_builder_finish(&kb, &rsa_key));
    der_builder_init_arena(&sb, &x.a, 1200);
    der_open_hint(&sb, &seq, DER_TAG_SEQUENCE, 3);
    der_open(&sb, &alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(&sb, DER_OID_RSA_ENCRYPTION);
    der_put_tlv(&sb, DER_TAG_NULL, cm_span_make(NULL, 0));
    der_close(&sb, &alg);
    (void)bits;
    der_put_bitstring(&sb, rsa_key, 0);
    der_close(&sb, &seq);
    cm_span spki;
    TEST_ASSERT_OK(der_builder_finish(&sb, &spki));
    x.msgs[0].req.tmpl.subject = hand_name(&x, "/CN=huge");
    x.msgs[0].req.tmpl.public_key = spki_body(spki);
    x.msgs[0].popo.type = CRMF_POPO_SIGNATURE;
    x.msgs[0].popo.alg = sig_alg_of(&x, g.rsa_key);
    x.msgs[0].popo.signature = CM_SPAN_LIT("not a signature");
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "RSA key of 8192 bits not allowed by profile devices (allowed: 2048 to 4096 bits)");
    rsp_free(&r);
    hand_free(&x);
}

static void old_cert_id(hand *x, cm_span issuer, cm_span serial)
{
    TEST_ASSERT_OK(test_hand_old_cert_id(x, issuer, serial));
}

static void test_conform_kur_rules(void)
{
    const cm_span cert = enrol(g.ec_key, "/CN=kur-me");
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, cert));
    // MAC-protected kur: the wrong kind of protection (wrongIntegrity), an error.
    hand x;
    hand_init(&x, CMP_BODY_KUR);
    hand_template(&x, g.ec2_key, "/CN=kur-me");
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
           "kur must be signed with the certificate to update, not MAC-protected");
    rsp_free(&r);
    hand_free(&x);
    // oldCertID naming another issuer, then an unknown serial: kup, badCertId.
    hand_init(&x, CMP_BODY_KUR);
    hand_template(&x, g.ec2_key, "/CN=kur-me");
    hand_sign(&x, g.ec_key, cert);
    old_cert_id(&x, hand_name(&x, "/CN=Some Other CA"), f.serial);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_KUP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "the oldCertID names a certificate issued by CN=Some Other CA, not by this CA");
    CU_ASSERT_TRUE(validates_with_ca(&r));
    rsp_free(&r);
    hand_free(&x);
    hand_init(&x, CMP_BODY_KUR);
    hand_template(&x, g.ec2_key, "/CN=kur-me");
    hand_sign(&x, g.ec_key, cert);
    old_cert_id(&x, ca_authority_subject(g.authority), CM_SPAN_LIT("\x7f\x01\x02"));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_KUP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "this CA issued no certificate with serial 7F0102 (the oldCertID)");
    rsp_free(&r);
    hand_free(&x);
    // The right oldCertID: kup, accepted.
    hand_init(&x, CMP_BODY_KUR);
    hand_template(&x, g.ec2_key, "/CN=kur-me");
    hand_sign(&x, g.ec_key, cert);
    old_cert_id(&x, ca_authority_subject(g.authority), f.serial);
    x.ginfo[0] = cmp_itav_implicit_confirm();
    x.h.general_info = x.ginfo;
    x.h.num_general_info = 1;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_KUP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
    span_free(cert);
}

static void test_conform_requested_extensions(void)
{
    // basicConstraints cA:TRUE from an end-entity profile: badCertTemplate, readable.
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=wants-ca");
    const char *n1[] = {"basicConstraints"}, *v1[] = {"critical, CA:TRUE"};
    hand_extensions(&x, n1, v1, 1);
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "profile devices issues end-entity certificates: the request asks for "
           "basicConstraints cA:TRUE");
    rsp_free(&r);
    hand_free(&x);
    // keyAgreement for an ECDH key: honoured (within key_usage_allowed), accepted as asked.
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=ecdh");
    const char *n2[] = {"keyUsage"}, *v2[] = {"critical, keyAgreement"};
    hand_extensions(&x, n2, v2, 1);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    const cm_span c = cert_resp(&r)->cert;
    const unsigned char *q = c.p;
    X509 *cx = d2i_X509(NULL, &q, (long)c.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cx);
    CU_ASSERT_EQUAL(X509_get_key_usage(cx), KU_KEY_AGREEMENT);
    X509_free(cx);
    rsp_free(&r);
    hand_free(&x);
    // keyEncipherment for that EC key does not fit it; keyCertSign is not allowed.
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=ecdh");
    const char *v3[] = {"critical, keyCertSign"};
    hand_extensions(&x, n2, v3, 1);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "keyUsage keyCertSign not allowed by profile devices (allowed: digitalSignature, "
           "keyEncipherment, keyAgreement)");
    rsp_free(&r);
    hand_free(&x);
}

static void test_conform_granted_with_mods(void)
{
    // A notAfter beyond the profile's 730 days: issued with it capped, grantedWithMods, and the
    // statusString says what changed.
    hand x;
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=long-lived");
    x.msgs[0].req.tmpl.has_not_after = true;
    x.msgs[0].req.tmpl.not_after = cm_time_now() + 2000 * 86400LL;
    x.ginfo[0] = cmp_itav_implicit_confirm();
    x.h.general_info = x.ginfo;
    x.h.num_general_info = 1;
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_GRANTED_WITH_MODS, -1,
           "granted with changes: notAfter shortened to ");
    char text[400];
    CU_ASSERT_PTR_NOT_NULL(strstr(text_of(status_of(&r), text, sizeof(text)),
                                  "(profile devices grants at most 730 days)"));
    CU_ASSERT_TRUE(cert_resp(&r)->has_certified_key_pair);
    CU_ASSERT_TRUE(validates_with_secret(&r));
    rsp_free(&r);
    hand_free(&x);
    // Within the profile: accepted as asked, no statusString.
    hand_init(&x, CMP_BODY_IR);
    hand_template(&x, g.ec_key, "/CN=short-lived");
    x.msgs[0].req.tmpl.has_not_after = true;
    x.msgs[0].req.tmpl.not_after = cm_time_now() + 30 * 86400LL;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_EQUAL(status_of(&r)->status_string.len, 0);
    rsp_free(&r);
    hand_free(&x);
}

// ra_request builds an ir from the RA for |key| with raVerified, forwarding |orig| (a
// PKIMessage, DER; len 0: none) in origPKIMessage.
static void ra_request(hand *x, EVP_PKEY *key, cm_span orig)
{
    hand_init(x, CMP_BODY_IR);
    hand_template(x, key, "/CN=via-ra");
    x->msgs[0].popo.type = CRMF_POPO_RA_VERIFIED;
    x->popo_key = NULL;
    hand_sign(x, g.ra_key, g.ra_cert);
    test_hand_add_info(x, cmp_itav_implicit_confirm());
    if (orig.len != 0) {
        TEST_ASSERT_OK(test_hand_orig(x, orig));
    }
}

static void test_conform_orig_pki_message(void)
{
    // The end entity's own ir (PBM with the RA's secret, as the RA would check it).
    hand ee;
    hand_init(&ee, CMP_BODY_IR);
    hand_template(&ee, g.ec_key, "/CN=ee-original");
    size_t ee_len;
    uint8_t *ee_der = hand_build(&ee, &ee_len);
    const cm_span orig = cm_span_make(ee_der, ee_len);
    // Consistent: the same key, a POPO of its own that verifies. Accepted.
    hand x;
    ra_request(&x, g.ec_key, orig);
    rsp r;
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
    // Without an original: the RA is trusted as before.
    ra_request(&x, g.ec_key, cm_span_make(NULL, 0));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
    // Another key than the original's: badPOP.
    ra_request(&x, g.ec2_key, orig);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP,
           "the RA asks for another public key than the original request");
    rsp_free(&r);
    hand_free(&x);
    // An original whose POPO does not verify.
    hand bad;
    hand_init(&bad, CMP_BODY_IR);
    hand_template(&bad, g.ec_key, "/CN=ee-original");
    bad.popo_corrupt = true;
    size_t bad_len;
    uint8_t *bad_der = hand_build(&bad, &bad_len);
    ra_request(&x, g.ec_key, cm_span_make(bad_der, bad_len));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP,
           "the original request's proof of possession does not verify");
    rsp_free(&r);
    hand_free(&x);
    free(bad_der);
    hand_free(&bad);
    // An unprotected original, and one of another body type.
    hand_init(&bad, CMP_BODY_IR);
    hand_template(&bad, g.ec_key, "/CN=ee-original");
    bad.prot_mode = PROT_NONE;
    bad_der = hand_build(&bad, &bad_len);
    ra_request(&x, g.ec_key, cm_span_make(bad_der, bad_len));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP,
           "the original request in origPKIMessage is not protected");
    rsp_free(&r);
    hand_free(&x);
    free(bad_der);
    hand_free(&bad);
    hand_init(&bad, CMP_BODY_CR);
    hand_template(&bad, g.ec_key, "/CN=ee-original");
    bad_der = hand_build(&bad, &bad_len);
    ra_request(&x, g.ec_key, cm_span_make(bad_der, bad_len));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP,
           "origPKIMessage holds a cr, not the original of this ir");
    rsp_free(&r);
    hand_free(&x);
    free(bad_der);
    hand_free(&bad);
    // Garbage.
    ra_request(&x, g.ec_key, CM_SPAN_LIT("\x30\x00"));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_IP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_POP,
           "origPKIMessage must hold exactly one readable PKIMessage");
    rsp_free(&r);
    hand_free(&x);
    free(ee_der);
    hand_free(&ee);
}

// --- certConf ---------------------------------------------------------------------------------

// conf_for makes |x| the certConf answering |ip| for |cert| with certReqId |id|, protected by
// the PBM secret (a test switches it to a signature with hand_sign).
static void conf_for(hand *x, const rsp *ip, cm_span cert, int64_t id)
{
    hand_init(x, CMP_BODY_CERT_CONF);
    TEST_ASSERT_OK(test_hand_cert_conf(x, ip->msg.header.f.transaction_id.v,
                                       ip->msg.header.f.sender_nonce.v, cert, id));
}

// wait_ip runs an ir (PBM unless |key| signs it with |cert|) for |subject_key| without
// implicitConfirm and checks the ip; |*out_cert| gets a heap copy of the certificate.
static void wait_ip(rsp *ip, hand *ir, EVP_PKEY *subject_key, const char *dn, EVP_PKEY *key,
                    cm_span cert, cm_span *out_cert)
{
    hand_init(ir, CMP_BODY_IR);
    hand_template(ir, subject_key, dn);
    if (key != NULL) {
        hand_sign(ir, key, cert);
    }
    hand_run(ip, ir);
    expect(ip, CMP_BODY_IP, CMP_STATUS_ACCEPTED, -1, NULL);
    *out_cert = issued_cert(ip);
    CU_ASSERT_EQUAL(stored_status(*out_cert), STORE_CERT_UNCONFIRMED);
}

static void test_conform_cert_conf_cert_req_id(void)
{
    hand ir, c;
    rsp ip, r;
    cm_span cert;
    wait_ip(&ip, &ir, g.ec_key, "/CN=conf-id", NULL, cm_span_make(NULL, 0), &cert);
    // -1 after an ir: not the issued certificate's certReqId.
    conf_for(&c, &ip, cert, -1);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "the CertStatus certReqId must be 0");
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_UNCONFIRMED);
    conf_for(&c, &ip, cert, 0);
    hand_run(&r, &c);
    expect_pkiconf(&r);
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_VALID);
    rsp_free(&ip);
    hand_free(&ir);
    span_free(cert);
}

static void test_conform_cert_conf_after_p10cr_is_minus_1(void)
{
    char csr[400];
    test_path(csr, sizeof(csr), g.dir, "p10.csr");
    const char *argv[] = {"openssl",      "req",      "-new", "-key", g.ec_pem, "-subj",
                          "/CN=p10-conf", "-outform", "DER",  "-out", csr,      NULL};
    CU_ASSERT_FATAL(test_run(argv, g.log) == 0);
    uint8_t *buf;
    size_t blen;
    CU_ASSERT_FATAL(test_read_file(csr, &buf, &blen));
    hand x, c;
    hand_init(&x, CMP_BODY_P10CR);
    TEST_ASSERT_OK(crmf_csr_from_der(&x.body.u.p10, cm_span_make(buf, blen)));
    rsp ip, r;
    hand_run(&ip, &x);
    expect(&ip, CMP_BODY_CP, CMP_STATUS_ACCEPTED, -1, NULL);
    CU_ASSERT_EQUAL(cert_resp(&ip)->cert_req_id, -1);
    const cm_span cert = issued_cert(&ip);
    // certReqId 0 does not confirm a p10cr's certificate; -1 does.
    conf_for(&c, &ip, cert, 0);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "the CertStatus certReqId must be -1, the certificate's (issued for a p10cr), not 0");
    rsp_free(&r);
    hand_free(&c);
    conf_for(&c, &ip, cert, -1);
    hand_run(&r, &c);
    expect_pkiconf(&r);
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_VALID);
    span_free(cert);
    rsp_free(&ip);
    hand_free(&x);
    free(buf);
}

static void test_conform_cert_conf_protection_kind(void)
{
    hand ir, c;
    rsp ip, r;
    cm_span cert;
    // A PBM request confirmed with PBMAC1: wrongIntegrity.
    wait_ip(&ip, &ir, g.ec_key, "/CN=conf-kind", NULL, cm_span_make(NULL, 0), &cert);
    conf_for(&c, &ip, cert, 0);
    c.pbmac1 = true;
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
           "certConf must be protected like its request, with PasswordBasedMac, not PBMAC1");
    rsp_free(&r);
    hand_free(&c);
    // ...and signed (by the new certificate, which is never the request's credential).
    conf_for(&c, &ip, cert, 0);
    hand_sign(&c, g.ec_key, cert);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
           "certConf must be protected like its request, with PasswordBasedMac, not a "
           "signature");
    rsp_free(&r);
    hand_free(&c);
    rsp_free(&ip);
    hand_free(&ir);
    span_free(cert);
    // A signed request (by a certificate of this CA) confirmed with a MAC: wrongIntegrity; with
    // the newly issued certificate: refused; with the request's certificate: pkiconf.
    const cm_span signer = enrol(g.ec_key, "/CN=conf-signer");
    wait_ip(&ip, &ir, g.ec2_key, "/CN=conf-new", g.ec_key, signer, &cert);
    conf_for(&c, &ip, cert, 0);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
           "certConf must be signed like its request, not protected with PasswordBasedMac");
    rsp_free(&r);
    hand_free(&c);
    conf_for(&c, &ip, cert, 0);
    hand_sign(&c, g.ec2_key, cert);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
           "certConf must be signed with the credential of its request, not with the "
           "certificate it confirms");
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_UNCONFIRMED);
    conf_for(&c, &ip, cert, 0);
    hand_sign(&c, g.ec_key, signer);
    hand_run(&r, &c);
    expect_pkiconf(&r);
    CU_ASSERT_TRUE(validates_with_ca(&r));
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_VALID);
    rsp_free(&ip);
    hand_free(&ir);
    span_free(cert);
    span_free(signer);
}

static void test_conform_cert_conf_nonces_and_transaction(void)
{
    hand ir, c;
    rsp ip, r;
    cm_span cert;
    wait_ip(&ip, &ir, g.ec_key, "/CN=conf-nonce", NULL, cm_span_make(NULL, 0), &cert);
    // The request's senderNonce again, and the server's own: badSenderNonce.
    conf_for(&c, &ip, cert, 0);
    memcpy(c.nonce, ir.nonce, 16);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_SENDER_NONCE,
           "certConf's senderNonce repeats the request's");
    rsp_free(&r);
    hand_free(&c);
    conf_for(&c, &ip, cert, 0);
    c.h.sender_nonce = ip.msg.header.f.sender_nonce;
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_SENDER_NONCE,
           "certConf's senderNonce repeats the server's response's");
    rsp_free(&r);
    hand_free(&c);
    // No transactionID at all: badDataFormat.
    conf_for(&c, &ip, cert, 0);
    c.h.transaction_id.present = false;
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_DATA_FORMAT,
           "the message header has no transactionID");
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_UNCONFIRMED);
    rsp_free(&ip);
    hand_free(&ir);
    span_free(cert);
}

static void test_conform_cert_conf_by_manufacturer_certificate(void)
{
    // An ir signed by an IDevID (vendor CA in the trust anchors, not an RA), explicit
    // confirmation: the certConf signed by the same IDevID is accepted, with and without
    // extraCerts (issue 14 item 4), and the certificate becomes valid.
    for (int with_certs = 1; with_certs >= 0; with_certs--) {
        hand ir, c;
        rsp ip, r;
        cm_span cert;
        wait_ip(&ip, &ir, g.ec2_key, with_certs ? "/CN=op-1" : "/CN=op-2", g.ec_key, g.idev_cert,
                &cert);
        conf_for(&c, &ip, cert, 0);
        hand_sign(&c, g.ec_key, g.idev_cert);
        c.num_certs = with_certs ? 1 : 0;
        hand_run(&r, &c);
        expect_pkiconf(&r);
        CU_ASSERT_TRUE(validates_with_ca(&r));
        rsp_free(&r);
        hand_free(&c);
        CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_VALID);
        rsp_free(&ip);
        hand_free(&ir);
        span_free(cert);
    }
    // Another vendor certificate of the same CA does not confirm it.
    hand ir, c;
    rsp ip, r;
    cm_span cert;
    wait_ip(&ip, &ir, g.ec2_key, "/CN=op-3", g.ec_key, g.idev_cert, &cert);
    conf_for(&c, &ip, cert, 0);
    hand_sign(&c, g.ra_key, g.ra_cert);
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK,
           "certConf must be signed by the same certificate as the request it confirms");
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_UNCONFIRMED);
    rsp_free(&ip);
    hand_free(&ir);
    span_free(cert);
}

// A certConf without extraCerts is verified with the signer certificate the transaction kept
// (its own column, store schema 3), under the signer rules every signed message meets: the
// senderKID is that certificate's key identifier, and a certificate of this CA must still be
// valid in the store (srv_authenticate_stored).
static void test_conform_cert_conf_stored_signer_rules(void)
{
    const cm_span dev = enrol(g.ec2_key, "/CN=conf-signer");
    hand ir, c;
    rsp ip, r;
    cm_span cert;
    wait_ip(&ip, &ir, g.ec_key, "/CN=conf-signer", g.ec2_key, dev, &cert);
    // A senderKID that is not the signer's key identifier: badMessageCheck.
    conf_for(&c, &ip, cert, 0);
    hand_sign(&c, g.ec2_key, dev);
    c.num_certs = 0;
    c.h.sender_kid = (cmp_opt_span){true, CM_SPAN_LIT("not-the-ski")};
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK,
           "the senderKID not-the-ski is not the subject key identifier of the signer's");
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_UNCONFIRMED);
    // The signer revoked meanwhile: certRevoked, through the signer-status cache (the ir put
    // the signer's status there; the revocation invalidates it).
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, dev));
    store_job j;
    store_job_init(&j, STORE_OP_CERT_REVOKE, NULL);
    j.u.ref = (store_ref){.ca = "devices",
                          .serial = f.serial,
                          .time = cm_time_now(),
                          .reason = STORE_REASON_KEY_COMPROMISE};
    TEST_ASSERT_OK(store_run(g.st, &j));
    conf_for(&c, &ip, cert, 0);
    hand_sign(&c, g.ec2_key, dev);
    c.num_certs = 0;
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_CERT_REVOKED,
           "the signer's certificate (serial ");
    rsp_free(&r);
    hand_free(&c);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_UNCONFIRMED);
    rsp_free(&ip);
    hand_free(&ir);
    span_free(cert);
    span_free(dev);
}

// A transaction reserved before signing (state SRV_TXN_RESERVED: the enrolment has not
// recorded a certificate, and may never) has nothing to confirm: answered like an unknown
// transaction, not as "already confirmed".
static void test_conform_cert_conf_for_a_reservation(void)
{
    uint8_t tid[16], serial[16], spki[32], nonce[16];
    CU_ASSERT_FATAL(RAND_bytes(tid, sizeof(tid)) == 1 && RAND_bytes(serial, sizeof(serial)) == 1 &&
                    RAND_bytes(spki, sizeof(spki)) == 1 && RAND_bytes(nonce, sizeof(nonce)) == 1);
    serial[0] &= 0x7f;
    store_job j;
    store_job_init(&j, STORE_OP_TXN_RESERVE, NULL);
    j.u.rsv = (store_reservation){.ca = "devices",
                                  .transaction_id = cm_span_make(tid, sizeof(tid)),
                                  .serial = cm_span_make(serial, sizeof(serial)),
                                  .state = SRV_TXN_RESERVED,
                                  .protection = STORE_AUTH_MAC,
                                  .credential = CM_SPAN_LIT(SECRET_REF),
                                  .expires_at = cm_time_now() + 300,
                                  .spki_sha256 = cm_span_make(spki, sizeof(spki))};
    TEST_ASSERT_OK(store_run(g.st, &j));
    const cm_span some = enrol(g.ec_key, "/CN=conf-reserved");
    hand c;
    rsp r;
    hand_init(&c, CMP_BODY_CERT_CONF);
    TEST_ASSERT_OK(test_hand_cert_conf(&c, cm_span_make(tid, sizeof(tid)),
                                       cm_span_make(nonce, sizeof(nonce)), some, 0));
    hand_run(&r, &c);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "certConf for a transaction whose certificate was not issued");
    rsp_free(&r);
    hand_free(&c);
    span_free(some);
}

// --- rr --------------------------------------------------------------------------------------

// rr_for makes |x| an rr of |cert| with |reason| (-1: no crlEntryDetails), signed by |key| and
// |signer|.
static void rr_for(hand *x, cm_span cert, int reason, EVP_PKEY *key, cm_span signer)
{
    hand_init(x, CMP_BODY_RR);
    TEST_ASSERT_OK(test_hand_rr(x, cert, reason));
    hand_sign(x, key, signer);
}

static bool crl_lists(cm_span cert)
{
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
    TEST_ASSERT_OK(srv_crl_issue(&cp, cm_time_now(), &a, &crl));
    const unsigned char *q = crl.p;
    X509_CRL *x = d2i_X509_CRL(NULL, &q, (long)crl.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    const unsigned char *cq = cert.p;
    X509 *c = d2i_X509(NULL, &cq, (long)cert.len);
    X509_REVOKED *rev = NULL;
    const bool listed = c != NULL && X509_CRL_get0_by_cert(x, &rev, c) == 1;
    X509_free(c);
    X509_CRL_free(x);
    cm_arena_cleanup(&a);
    return listed;
}

static void test_conform_rr_rules(void)
{
    const cm_span cert = enrol(g.ec_key, "/CN=rr-me");
    // MAC-protected: wrongIntegrity, an error.
    hand x;
    rsp r;
    rr_for(&x, cert, 1, g.ec_key, cert);
    x.sig_key = NULL;
    x.num_certs = 0;
    x.h.sender_kid = (cmp_opt_span){true, CM_SPAN_LIT(SECRET_REF)};
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_WRONG_INTEGRITY,
           "rr must be signed by the certificate to revoke or by an RA");
    rsp_free(&r);
    hand_free(&x);
    // No serialNumber: rp, badCertTemplate.
    rr_for(&x, cert, 1, g.ec_key, cert);
    x.rd.tmpl.serial = cm_span_make(NULL, 0);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_TEMPLATE,
           "rr must name the certificate by issuer and serialNumber (serialNumber missing)");
    CU_ASSERT_TRUE(validates_with_ca(&r));
    rsp_free(&r);
    hand_free(&x);
    // Another issuer: badCertId.
    rr_for(&x, cert, 1, g.ec_key, cert);
    x.rd.tmpl.issuer = hand_name(&x, "/CN=Some Other CA");
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "the certificate to revoke was issued by CN=Some Other CA, not by this CA");
    rsp_free(&r);
    hand_free(&x);
    // A subject or key that is not the certificate's: badCertId.
    rr_for(&x, cert, 1, g.ec_key, cert);
    x.rd.tmpl.subject = hand_name(&x, "/CN=someone-else");
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "the rr's subject is not the subject of certificate CN=rr-me");
    rsp_free(&r);
    hand_free(&x);
    rr_for(&x, cert, 1, g.ec_key, cert);
    x.rd.tmpl.public_key = spki_body(hand_spki(&x, g.ec2_key));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "the rr's public key is not the key of certificate CN=rr-me");
    rsp_free(&r);
    hand_free(&x);
    // No CRLReason: badRequest.
    rr_for(&x, cert, -1, g.ec_key, cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "rr must carry exactly one CRLReason");
    rsp_free(&r);
    hand_free(&x);
    // removeFromCRL of a valid certificate: badRequest, readable.
    rr_for(&x, cert, STORE_REASON_REMOVE_FROM_CRL, g.ec_key, cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "the certificate is not on hold, so it cannot be removed from the CRL");
    rsp_free(&r);
    hand_free(&x);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_VALID);
    // The matching subject and key: accepted. Hold, hold again (certRevoked), release (valid
    // again, off the CRL), revoke for good, again (certRevoked).
    rr_for(&x, cert, STORE_REASON_CERTIFICATE_HOLD, g.ec_key, cert);
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, cert));
    x.rd.tmpl.subject = f.subject;
    x.rd.tmpl.public_key = spki_body(hand_spki(&x, g.ec_key));
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_HOLD);
    CU_ASSERT_TRUE(crl_lists(cert));
    // Held, it authenticates nothing, not even its own second hold (issue 14: certRevoked, in
    // an error message: the signer is refused before the rr's content is looked at) ...
    rr_for(&x, cert, STORE_REASON_CERTIFICATE_HOLD, g.ec_key, cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_CERT_REVOKED,
           "the signer's certificate (serial ");
    rsp_free(&r);
    hand_free(&x);
    // ... while the RA's second hold is refused in the rp as the content it is.
    rr_for(&x, cert, STORE_REASON_CERTIFICATE_HOLD, g.ra_key, g.ra_cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_CERT_REVOKED,
           "the certificate is already on hold (reason certificateHold)");
    rsp_free(&r);
    hand_free(&x);
    // The RA releases it for the device.
    rr_for(&x, cert, STORE_REASON_REMOVE_FROM_CRL, g.ra_key, g.ra_cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_VALID);
    CU_ASSERT_FALSE(crl_lists(cert));
    // Another device may not revoke it; the RA may.
    const cm_span other = enrol(g.ec2_key, "/CN=rr-other");
    rr_for(&x, cert, 1, g.ec2_key, other);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_NOT_AUTHORIZED,
           "the signer may revoke only its own certificate");
    rsp_free(&r);
    hand_free(&x);
    rr_for(&x, cert, 1, g.ra_key, g.ra_cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_ACCEPTED, -1, NULL);
    rsp_free(&r);
    hand_free(&x);
    CU_ASSERT_EQUAL(stored_status(cert), STORE_CERT_REVOKED);
    rr_for(&x, cert, 1, g.ra_key, g.ra_cert);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_CERT_REVOKED,
           "the certificate is already revoked (reason keyCompromise)");
    rsp_free(&r);
    hand_free(&x);
    // A serial this CA never issued: badCertId.
    rr_for(&x, cert, 1, g.ra_key, g.ra_cert);
    x.rd.tmpl.serial = CM_SPAN_LIT("\x01\x02\x03");
    hand_run(&r, &x);
    expect(&r, CMP_BODY_RP, CMP_STATUS_REJECTION, CMP_FAIL_BAD_CERT_ID,
           "this CA issued no certificate with serial 010203");
    rsp_free(&r);
    hand_free(&x);
    span_free(other);
    span_free(cert);
}

// --- genm ------------------------------------------------------------------------------------

static const cmp_itav *genp_find(const rsp *r, const char *oid)
{
    if (r->msg.body.type != CMP_BODY_GENP) {
        return NULL;
    }
    for (size_t i = 0; i < r->msg.body.u.gen.num; i++) {
        if (cm_span_eq(r->msg.body.u.gen.items[i].oid, cm_span_make(oid, strlen(oid)))) {
            return &r->msg.body.u.gen.items[i];
        }
    }
    return NULL;
}

static void genm_with(hand *x, const cmp_itav *items, size_t n)
{
    hand_init(x, CMP_BODY_GENM);
    x->body.u.gen.items = items;
    x->body.u.gen.num = n;
}

static void test_conform_genm_support_messages(void)
{
    // Every type asked at once: each gets its ITAV, unknown ones are left out.
    const cmp_itav ask[] = {
        {CM_SPAN_LIT(DER_OID_IT_CA_PROT_ENC_CERT), {0}},
        {CM_SPAN_LIT(DER_OID_IT_SIGN_KEY_PAIR_TYPES), {0}},
        {CM_SPAN_LIT(DER_OID_IT_ENC_KEY_PAIR_TYPES), {0}},
        {CM_SPAN_LIT(DER_OID_IT_PREFERRED_SYMM_ALG), {0}},
        {CM_SPAN_LIT(DER_OID_IT_CURRENT_CRL), {0}},
        {CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS), CM_SPAN_LIT("\x30\x0b\x0c\x02"
                                                             "de\x0c\x05"
                                                             "en-GB")},
        {CM_SPAN_LIT(DER_OID_IT_CA_CERTS), {0}},
        {CM_SPAN_LIT(DER_OID_IT_ROOT_CA_CERT), {0}},
        {CM_SPAN_LIT(DER_OID_IT_CERT_REQ_TEMPLATE), {0}},
        {CM_SPAN_LIT("\x2b\x06\x01\x04\x01\x82\x37\x01"), {0}},
    };
    hand x;
    genm_with(&x, ask, sizeof(ask) / sizeof(ask[0]));
    rsp r;
    hand_run(&r, &x);
    CU_ASSERT_EQUAL_FATAL(r.msg.body.type, CMP_BODY_GENP);
    CU_ASSERT_EQUAL(r.msg.body.u.gen.num, 9);
    CU_ASSERT_TRUE(validates_with_secret(&r));
    const cmp_itav *it = genp_find(&r, DER_OID_IT_CA_PROT_ENC_CERT);
    CU_ASSERT_TRUE(it != NULL && it->value.len == 0); // deliberately empty
    it = genp_find(&r, DER_OID_IT_ENC_KEY_PAIR_TYPES);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    // P-256, P-384 (ECDH) and RSA: the profile's key types that can encrypt; not Ed25519.
    der_reader rd, seq, alg;
    der_reader_init(&rd, it->value);
    TEST_ASSERT_OK(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    size_t n = 0;
    while (!der_reader_empty(&seq)) {
        cm_span oid;
        TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &alg));
        TEST_ASSERT_OK(der_get_oid(&alg, &oid));
        CU_ASSERT_FALSE(der_oid_is(oid, DER_OID_ED25519));
        n++;
    }
    CU_ASSERT_EQUAL(n, 3);
    it = genp_find(&r, DER_OID_IT_PREFERRED_SYMM_ALG);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(cm_span_eq(it->value, CM_SPAN_LIT("\x30\x0b\x06\x09\x60\x86\x48\x01\x65\x03"
                                                     "\x04\x01\x2a")));
    it = genp_find(&r, DER_OID_IT_SUPP_LANG_TAGS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    CU_ASSERT_TRUE(cm_span_eq(it->value, CM_SPAN_LIT("\x30\x07\x0c\x05"
                                                     "en-GB")));
    CU_ASSERT_PTR_NOT_NULL(genp_find(&r, DER_OID_IT_CA_CERTS));
    CU_ASSERT_PTR_NOT_NULL(genp_find(&r, DER_OID_IT_ROOT_CA_KEY_UPDATE));
    CU_ASSERT_PTR_NOT_NULL(genp_find(&r, DER_OID_IT_CERT_REQ_TEMPLATE));
    CU_ASSERT_PTR_NOT_NULL(genp_find(&r, DER_OID_IT_CURRENT_CRL));
    CU_ASSERT_PTR_NOT_NULL(genp_find(&r, DER_OID_IT_SIGN_KEY_PAIR_TYPES));
    rsp_free(&r);
    hand_free(&x);
    // supportedLangTags: ["en"] is answered "en"; no value, or no English, is refused.
    const cmp_itav en[] = {{CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS), CM_SPAN_LIT("\x30\x04\x0c\x02"
                                                                                "en")}};
    genm_with(&x, en, 1);
    hand_run(&r, &x);
    it = r.msg.body.type == CMP_BODY_GENP ? genp_find(&r, DER_OID_IT_SUPP_LANG_TAGS) : NULL;
    CU_ASSERT_TRUE(it != NULL && cm_span_eq(it->value, en[0].value));
    rsp_free(&r);
    hand_free(&x);
    const cmp_itav none[] = {{CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS), {0}}};
    genm_with(&x, none, 1);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "a genm for supportedLangTags needs the list of languages");
    CU_ASSERT_TRUE(validates_with_secret(&r));
    rsp_free(&r);
    hand_free(&x);
    const cmp_itav de[] = {{CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS), CM_SPAN_LIT("\x30\x04\x0c\x02"
                                                                                "de")}};
    genm_with(&x, de, 1);
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_REQUEST,
           "supportedLangTags offers no English tag");
    rsp_free(&r);
    hand_free(&x);
}

static void test_conform_genm_without_itav(void)
{
    // What `openssl cmp -cmd genm` sends without -infotype: an empty genp, MAC-protected.
    hand x;
    genm_with(&x, NULL, 0);
    rsp r;
    hand_run(&r, &x);
    CU_ASSERT_EQUAL_FATAL(r.msg.body.type, CMP_BODY_GENP);
    CU_ASSERT_EQUAL(r.msg.body.u.gen.num, 0);
    CU_ASSERT_TRUE(validates_with_secret(&r));
    rsp_free(&r);
    hand_free(&x);
    // Still authenticated: with a wrong secret it is refused.
    genm_with(&x, NULL, 0);
    x.secret = "not-the-secret";
    hand_run(&r, &x);
    expect(&r, CMP_BODY_ERROR, CMP_STATUS_REJECTION, CMP_FAIL_BAD_MESSAGE_CHECK, NULL);
    rsp_free(&r);
    hand_free(&x);
}

int test_srv_conform_register(void);
int test_srv_conform_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_conform_content_rejection_in_the_response_type),
        TEST_CASE(test_conform_p10cr_rejection_in_cp_with_id_minus_1),
        TEST_CASE(test_conform_header_rules),
        TEST_CASE(test_conform_one_cert_req_msg_with_id_0),
        TEST_CASE(test_conform_subject_or_san_required),
        TEST_CASE(test_conform_popo_algorithm_must_fit_the_key),
        TEST_CASE(test_conform_ra_verified_from_an_end_entity),
        TEST_CASE(test_conform_oversized_key_refused_before_popo),
        TEST_CASE(test_conform_kur_rules),
        TEST_CASE(test_conform_requested_extensions),
        TEST_CASE(test_conform_granted_with_mods),
        TEST_CASE(test_conform_orig_pki_message),
        TEST_CASE(test_conform_cert_conf_cert_req_id),
        TEST_CASE(test_conform_cert_conf_after_p10cr_is_minus_1),
        TEST_CASE(test_conform_cert_conf_protection_kind),
        TEST_CASE(test_conform_cert_conf_nonces_and_transaction),
        TEST_CASE(test_conform_cert_conf_by_manufacturer_certificate),
        TEST_CASE(test_conform_cert_conf_stored_signer_rules),
        TEST_CASE(test_conform_cert_conf_for_a_reservation),
        TEST_CASE(test_conform_rr_rules),
        TEST_CASE(test_conform_genm_support_messages),
        TEST_CASE(test_conform_genm_without_itav),
    };
    return test_register_suite("srv_conform", conform_init, conform_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
