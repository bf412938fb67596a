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
    char rogue_leaf[320];
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
    static const uint8_t k_name[] = {
        0x30, 0x1d, 0x31, 0x1b, 0x30, 0x19, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x12, 'c', 'e', 'r',
        't',  'm',  'i',  'n',  't',  ' ',  't',  'e',  's',  't',  ' ',  'r',  'o',  'o', 't'};
    static const uint8_t k_serial[] = {0x10, 0x01};
    der_builder alg_b, tbs_b, cert_b;
    der_builder_init(&alg_b, 64);
    der_builder_init(&tbs_b, 1024);
    der_builder_init(&cert_b, 2048);
    hsm_sig_alg_marshal(&alg_b, HSM_SIG_ECDSA_SHA256);
    cm_span alg, tbs, cert;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    const int64_t now = cm_time_now();
    bool ok = cm_ok(der_builder_finish(&alg_b, &alg)) &&
              cm_ok(ca_root_tbs_build(&tbs_b, cm_span_make(k_name, sizeof(k_name)),
                                      hsm_key_get0_spki(g.ca_key),
                                      cm_span_make(k_serial, sizeof(k_serial)), now - 3600,
                                      now + 3650 * 86400LL, alg)) &&
              cm_ok(der_builder_finish(&tbs_b, &tbs)) &&
              cm_ok(hsm_sign_sync(g.pool, &sig_len, sig, sizeof(sig), g.ca_key,
                                  HSM_SIG_ECDSA_SHA256, tbs)) &&
              cm_ok(ca_signed_assemble(&cert_b, tbs, alg, cm_span_make(sig, sig_len))) &&
              cm_ok(der_builder_finish(&cert_b, &cert));
    if (ok) {
        const unsigned char *q = cert.p;
        g.ca_x509 = d2i_X509(NULL, &q, (long)cert.len);
        FILE *f = fopen(pem_path, "w");
        ok = g.ca_x509 != NULL && f != NULL && PEM_write_X509(f, g.ca_x509) == 1;
        if (f != NULL) {
            ok &= fclose(f) == 0;
        }
    }
    der_builder_cleanup(&alg_b);
    der_builder_cleanup(&tbs_b);
    der_builder_cleanup(&cert_b);
    return ok;
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
    const char *mock[] = {"openssl",
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:P-256",
                          "-nodes",
                          "-keyout",
                          g.mock_key,
                          "-out",
                          g.mock_pem,
                          "-subj",
                          "/CN=mock",
                          "-days",
                          "2",
                          NULL};
    const char *dev[] = {"openssl", "genpkey",  "-algorithm",
                         "EC",      "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-out",    g.dev_key,  NULL};
    const char *dev2[] = {"openssl", "genpkey", "-algorithm", "ED25519", "-out", g.dev2_key, NULL};
    const char *vendor[] = {"openssl",
                            "req",
                            "-x509",
                            "-newkey",
                            "ec",
                            "-pkeyopt",
                            "ec_paramgen_curve:P-256",
                            "-nodes",
                            "-keyout",
                            g.vendor_key,
                            "-out",
                            g.vendor_pem,
                            "-subj",
                            "/O=Vendor/CN=Vendor IDevID CA",
                            "-days",
                            "30",
                            "-addext",
                            "basicConstraints=critical,CA:TRUE",
                            NULL};
    const char *rogue[] = {"openssl",
                           "req",
                           "-x509",
                           "-newkey",
                           "ec",
                           "-pkeyopt",
                           "ec_paramgen_curve:P-256",
                           "-nodes",
                           "-keyout",
                           g.rogue_key,
                           "-out",
                           g.rogue_pem,
                           "-subj",
                           "/CN=rogue",
                           "-days",
                           "2",
                           "-addext",
                           "basicConstraints=critical,CA:TRUE",
                           NULL};
    char rcsr[320];
    test_path(rcsr, sizeof(rcsr), g.dir, "rogue-leaf.csr");
    const char *rleaf_csr[] = {"openssl",          "req",  "-new", "-key", g.dev_key, "-subj",
                               "/CN=rogue-device", "-out", rcsr,   NULL};
    const char *rleaf[] = {"openssl",   "x509",   "-req",       "-in",         rcsr, "-CA",
                           g.rogue_pem, "-CAkey", g.rogue_key,  "-set_serial", "7",  "-days",
                           "2",         "-out",   g.rogue_leaf, NULL};
    char csr[320];
    test_path(csr, sizeof(csr), g.dir, "idevid.csr");
    const char *idcsr[] = {
        "openssl", "req", "-new", "-key", g.dev_key, "-subj", "/O=Vendor/CN=device-SN4711",
        "-out",    csr,   NULL};
    const char *idcert[] = {"openssl",    "x509",   "-req",        "-in",         csr,    "-CA",
                            g.vendor_pem, "-CAkey", g.vendor_key,  "-set_serial", "4711", "-days",
                            "30",         "-out",   g.devcert_pem, NULL};
    if (!run_openssl(mock) || !run_openssl(dev) || !run_openssl(dev2) || !run_openssl(vendor) ||
        !run_openssl(rogue) || !run_openssl(idcsr) || !run_openssl(idcert) ||
        !run_openssl(rleaf_csr) || !run_openssl(rleaf)) {
        return 1;
    }

    char db[400], err_s[256];
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
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
    ca_profile_params pp = {.default_days = 365,
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
    if (!test_read_file(g.devcert_pem, &ra_pem, &ra_pem_len)) {
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

static int fail_bit_of(const rsp *r)
{
    srv_summary sum;
    srv_request_summary(r->req, &sum);
    if (getenv("SRV_TEST_VERBOSE") != NULL) {
        fprintf(stderr, "\n  response error: %s (bit %d)\n", cm_result_name(sum.error),
                sum.fail_bit);
    }
    if (!r->parsed || r->msg.body.type != CMP_BODY_ERROR) {
        return -2;
    }
    for (int b = 0; b < 32; b++) {
        if (r->msg.body.u.error.status.fail_info & (1u << b)) {
            return b;
        }
    }
    return -1;
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
    char key[400], pem[400];
    (void)snprintf(key, sizeof(key), "%s/newroot.key", g.dir);
    (void)snprintf(pem, sizeof(pem), "%s/newroot.pem", g.dir);
    const char *mk[] = {
        "openssl", "req",     "-x509",    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes",  "-keyout", key,        "-out",    pem,  "-subj",    "/CN=certmint test root G2",
        "-days",   "30",      "-outform", "DER",     NULL};
    CU_ASSERT_TRUE_FATAL(run_openssl(mk));
    uint8_t *nwn;
    size_t nwn_len;
    CU_ASSERT_TRUE_FATAL(test_read_file(pem, &nwn, &nwn_len));
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
    char fake_ca[400], fake_key[400], fake_csr[400], fake[400];
    (void)snprintf(fake_ca, sizeof(fake_ca), "%s/fake-root.pem", g.dir);
    (void)snprintf(fake_key, sizeof(fake_key), "%s/fake-root.key", g.dir);
    (void)snprintf(fake_csr, sizeof(fake_csr), "%s/fake.csr", g.dir);
    (void)snprintf(fake, sizeof(fake), "%s/fake.pem", g.dir);
    const char *mk_ca[] = {
        "openssl", "req",     "-x509",  "-newkey", "ec",    "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes",  "-keyout", fake_key, "-out",    fake_ca, "-subj",    "/CN=certmint test root",
        "-days",   "2",       NULL};
    const char *mk_csr[] = {"openssl", "req",       "-new", "-key",   g.dev_key,
                            "-subj",   "/CN=ghost", "-out", fake_csr, NULL};
    const char *mk_leaf[] = {"openssl", "x509",   "-req",   "-in",         fake_csr, "-CA",
                             fake_ca,   "-CAkey", fake_key, "-set_serial", "4660",   "-days",
                             "2",       "-out",   fake,     NULL};
    CU_ASSERT_TRUE_FATAL(run_openssl(mk_ca) && run_openssl(mk_csr) && run_openssl(mk_leaf));
    const char *ra_rr[] = {"-cmd",     "rr", "-cert",      g.devcert_pem, "-key", g.dev_key,
                           "-oldcert", fake, "-revreason", "0",           NULL};
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
                                          CMP_HASH_SHA256, CMP_HASH_SHA256, 10000, 16, 32));
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
    TEST_ASSERT_OK(cmp_protect_verify_mac(g.prot, &rk, r.msg.header.protection_alg.whole,
                                          CM_SPAN_LIT(SECRET), r.msg.protected_part,
                                          r.msg.protection, r.msg.protection_unused, NULL));
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
    // The RA (the configured vendor device certificate) sends raVerified: accepted.
    const char *ra[] = {"-cmd",
                        "ir",
                        "-cert",
                        g.devcert_pem,
                        "-key",
                        g.dev_key,
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
                                            CM_SPAN_LIT(SECRET), m.protected_part, m.protection,
                                            m.protection_unused, NULL),
                     CMP_E_PROT_MAC_MISMATCH);
    // ...so compute a valid one over the damaged request.
    TEST_ASSERT_OK(
        cmp_mac_key_derive(g.prot, &key, m.header.protection_alg.whole, CM_SPAN_LIT(SECRET)));
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
    rsp_free(&r);
    free(cc);
}

int test_srv_register(void);
int test_srv_register(void)
{
    CU_pSuite s = CU_add_suite("srv", srv_suite_init, srv_suite_cleanup);
    if (s == NULL || CU_ADD_TEST(s, test_srv_ir_pbm_implicit_confirm) == NULL ||
        CU_ADD_TEST(s, test_srv_ir_pbm_with_cert_conf) == NULL ||
        CU_ADD_TEST(s, test_srv_cert_conf_rejection_revokes) == NULL ||
        CU_ADD_TEST(s, test_srv_ir_signature_protected_by_vendor_cert) == NULL ||
        CU_ADD_TEST(s, test_srv_p10cr) == NULL ||
        CU_ADD_TEST(s, test_srv_ra_verified_only_from_an_ra) == NULL ||
        CU_ADD_TEST(s, test_srv_ir_pbmac1) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_wrong_secret_with_signed_error) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_unknown_reference) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_untrusted_signer) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_tampered_request) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_garbage_with_signed_bad_data_format) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_bad_popo) == NULL ||
        CU_ADD_TEST(s, test_srv_rejects_cert_conf_for_unknown_transaction) == NULL ||
        CU_ADD_TEST(s, test_srv_genm_types) == NULL ||
        CU_ADD_TEST(s, test_srv_genm_crl_update) == NULL ||
        CU_ADD_TEST(s, test_srv_genm_root_ca_key_update) == NULL ||
        CU_ADD_TEST(s, test_srv_rr_flows) == NULL) {
        return 1;
    }
    return 0;
}
