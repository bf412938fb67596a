// Suite "srv_trust": issue 14, trust and authorization, driven through the request state
// machine as suite "srv" does (a throwaway SoftHSM token, a real SQLite store, requests made by
// the real `openssl cmp` client or, where it cannot make them, by our own marshal code; answers
// read with our parser and OpenSSL's d2i_OSSL_CMP_MSG). Each test is one rule: a certificate
// this CA issued authenticates only while it is valid in the store; a key update supersedes;
// key reuse; pvno; RA certificates; senderKID and sender; an error from a client; subject
// binding and patterns; per-secret limits; certProfile; an HSM that cannot queue.
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
#include "tests/support/test_support.h"

#define SECRET_REF "line-7"
#define SECRET     "factory-secret"

// ecdsa-with-SHA256, no parameters (RFC 5758 §3.2)
static const uint8_t k_ecdsa_sha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                         0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};

enum { T_SECRETS = 5 };

// The key of the key-based MAC client key-once (A's key.REF): 32 distinct octets.
static const uint8_t k_mac_key[32] = {
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x01,
    0x12, 0x23, 0x34, 0x45, 0x56, 0x67, 0x78, 0x89, 0x9a, 0xab, 0xbc, 0xcd, 0xde, 0xef, 0xf1, 0x02};

static struct {
    char dir[256];
    test_token token;
    hsm_token *tok;
    hsm_key *ca_key;
    hsm_pool *pool;
    store *st;
    cmp_protect_ctx *prot;
    ca_authority *authority;
    ca_authority *vendor;
    ca_profile *profile, *gw_profile, *rsa_profile;
    ca_trust *client_trust, *own_trust;
    srv_secret secrets[T_SECRETS];
    srv_profile profiles[2];
    srv_ca ca;
    srv_engine *engine;
    cm_cq cq;
    srv_worker *worker;
    X509 *ca_x509;
    char ca_pem[320], mock_key[320], mock_pem[320], vendor_pem[320], vendor_key[320];
    char idevid_pem[320], idevid_key[320], ra_pem[320], ra_key[320], ext[320], log[320];
    unsigned char *ra_der;
    cm_span ra_cert;
    int seq;
} g;

// --- fixture --------------------------------------------------------------------------------

// sign_der signs |tbs| with the CA key through the pool and assembles the Certificate (or
// CRL) into |b|.
static bool sign_der(der_builder *b, cm_span tbs, cm_span alg)
{
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    return cm_ok(hsm_sign_sync(g.pool, &sig_len, sig, sizeof(sig), g.ca_key, HSM_SIG_ECDSA_SHA256,
                               tbs)) &&
           cm_ok(ca_signed_assemble(b, tbs, alg, cm_span_make(sig, sig_len)));
}

static bool write_x509_pem(const char *path, cm_span der, X509 **out)
{
    const unsigned char *q = der.p;
    X509 *x = d2i_X509(NULL, &q, (long)der.len);
    FILE *f = fopen(path, "w");
    bool ok = x != NULL && f != NULL && PEM_write_X509(f, x) == 1;
    if (f != NULL) {
        ok &= fclose(f) == 0;
    }
    if (out != NULL && ok) {
        *out = x;
    } else {
        X509_free(x);
    }
    return ok;
}

static bool make_root(void)
{
    static const uint8_t k_name[] = {0x30, 0x15, 0x31, 0x13, 0x30, 0x11, 0x06, 0x03,
                                     0x55, 0x04, 0x03, 0x0c, 0x0a, 't',  'r',  'u',
                                     's',  't',  ' ',  'r',  'o',  'o',  't'};
    static const uint8_t k_serial[] = {0x10, 0x02};
    der_builder tbs_b, cert_b;
    der_builder_init(&tbs_b, 1024);
    der_builder_init(&cert_b, 2048);
    const cm_span alg = cm_span_make(k_ecdsa_sha256, sizeof(k_ecdsa_sha256));
    cm_span tbs, cert;
    const int64_t now = cm_time_now();
    bool ok =
        cm_ok(ca_root_tbs_build(
            &tbs_b, cm_span_make(k_name, sizeof(k_name)), hsm_key_get0_spki(g.ca_key),
            cm_span_make(k_serial, sizeof(k_serial)), now - 3600, now + 3650 * 86400LL, alg)) &&
        cm_ok(der_builder_finish(&tbs_b, &tbs)) && sign_der(&cert_b, tbs, alg) &&
        cm_ok(der_builder_finish(&cert_b, &cert)) && write_x509_pem(g.ca_pem, cert, &g.ca_x509);
    der_builder_cleanup(&tbs_b);
    der_builder_cleanup(&cert_b);
    return ok;
}

static bool load_profile_keys(ca_profile **out, const char *name, uint32_t days, uint32_t keys)
{
    static const char conf_text[] = "[ext]\nbasicConstraints = critical, CA:FALSE\n"
                                    "keyUsage = critical, digitalSignature\n"
                                    "extendedKeyUsage = clientAuth\n";
    CONF *conf = NCONF_new(NULL);
    BIO *bio = BIO_new_mem_buf(conf_text, (int)sizeof(conf_text) - 1);
    long line;
    char err[256] = "";
    const bool conf_ok = conf != NULL && bio != NULL && NCONF_load_bio(conf, bio, &line) == 1;
    BIO_free(bio);
    ca_profile_params pp = {.name = name,
                            .default_days = days,
                            .max_days = days,
                            .key_types = keys,
                            .rsa_min_bits = 2048,
                            .rsa_max_bits = 4096,
                            .subject_mode = CA_SUBJECT_COPY,
                            .san_types = CA_SAN_DNS,
                            .implicit_confirm = true};
    const bool ok = conf_ok && cm_ok(ca_profile_new(out, err, sizeof(err), &pp, conf, "ext"));
    if (!ok) {
        fprintf(stderr, "profile %s: %s\n", name, err);
    }
    NCONF_free(conf);
    return ok;
}

static bool load_profile(ca_profile **out, const char *name, uint32_t days)
{
    return load_profile_keys(out, name, days, CA_KEY_EC_P256 | CA_KEY_ED25519);
}

static bool read_der_cert(const char *pem, unsigned char **out, size_t *out_len)
{
    X509 *x = test_pki_read_cert(pem);
    unsigned char *der = NULL;
    const int n = x != NULL ? i2d_X509(x, &der) : -1;
    X509_free(x);
    *out = der;
    *out_len = n > 0 ? (size_t)n : 0;
    return n > 0;
}

static int trust_suite_init(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "srv-trust") ||
        !test_token_create(&g.token, "srv-trust")) {
        return 1;
    }
    test_path(g.log, sizeof(g.log), g.dir, "openssl.log");
    test_path(g.ca_pem, sizeof(g.ca_pem), g.dir, "ca.pem");
    test_path(g.mock_key, sizeof(g.mock_key), g.dir, "mock.key");
    test_path(g.mock_pem, sizeof(g.mock_pem), g.dir, "mock.pem");
    test_path(g.vendor_pem, sizeof(g.vendor_pem), g.dir, "vendor.pem");
    test_path(g.vendor_key, sizeof(g.vendor_key), g.dir, "vendor.key");
    test_path(g.idevid_pem, sizeof(g.idevid_pem), g.dir, "idevid.pem");
    test_path(g.idevid_key, sizeof(g.idevid_key), g.dir, "idevid.key");
    test_path(g.ra_pem, sizeof(g.ra_pem), g.dir, "ra.pem");
    test_path(g.ra_key, sizeof(g.ra_key), g.dir, "ra.key");
    test_path(g.ext, sizeof(g.ext), g.dir, "ext.cnf");
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
        !cm_ok(hsm_pool_new(&g.pool, g.tok, &po)) || !make_root()) {
        fprintf(stderr, "hsm: %s\n", err.msg);
        return 1;
    }
    // A vendor PKI (trusted for signature-protected ir): an IDevID with an SKI, an RA with
    // id-kp-cmcRA.
    static const char k_ext[] = "[idevid]\nkeyUsage = critical, digitalSignature\n"
                                "subjectKeyIdentifier = hash\n"
                                "[ra]\nkeyUsage = critical, digitalSignature\n"
                                "extendedKeyUsage = 1.3.6.1.5.5.7.3.28\n"
                                "subjectKeyIdentifier = hash\n";
    const char *const ca_true[] = {"basicConstraints=critical,CA:TRUE", NULL};
    const test_pki_cert_spec mock = {.subject = "/CN=mock", .days = 2};
    const test_pki_cert_spec vendor = {
        .subject = "/O=Vendor/CN=Vendor IDevID CA", .days = 30, .addext = ca_true};
    const test_pki_cert_spec idevid = {.subject = "/O=Vendor/CN=device-SN1",
                                       .days = 30,
                                       .serial = "4711",
                                       .ext_file = g.ext,
                                       .ext_section = "idevid"};
    const test_pki_cert_spec ra = {.subject = "/O=Vendor/CN=Line RA",
                                   .days = 30,
                                   .serial = "77",
                                   .ext_file = g.ext,
                                   .ext_section = "ra"};
    if (!test_write_file(g.ext, k_ext, sizeof(k_ext) - 1) ||
        !test_pki_make_ca(g.mock_key, g.mock_pem, &mock, g.log) ||
        !test_pki_make_ca(g.vendor_key, g.vendor_pem, &vendor, g.log) ||
        !test_pki_issue(g.idevid_key, g.idevid_pem, g.vendor_key, g.vendor_pem, &idevid, g.log) ||
        !test_pki_issue(g.ra_key, g.ra_pem, g.vendor_key, g.vendor_pem, &ra, g.log)) {
        return 1;
    }
    char db[400], err_s[256] = "";
    (void)snprintf(db, sizeof(db), "sqlite:%s/certmint.db", g.dir);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    // The requests below come from openssl cmp, whose PBM MAC is HMAC-SHA1 by default.
    static crmf_alg_policy sha1;
    crmf_alg_policy_default(&sha1, true);
    lim.policy = &sha1;
    const char *own[] = {g.ca_pem};
    const char *vend[] = {g.vendor_pem};
    size_t ra_len = 0;
    if (!cm_ok(store_open(&g.st, db, NULL)) ||
        !cm_ok(cmp_protect_ctx_new(&g.prot, NULL, NULL, &lim)) ||
        !cm_ok(ca_authority_load(&g.authority, err_s, sizeof(err_s), g.ca_pem, NULL)) ||
        !cm_ok(ca_authority_load(&g.vendor, err_s, sizeof(err_s), g.vendor_pem, NULL)) ||
        !cm_ok(ca_trust_new(&g.own_trust, err_s, sizeof(err_s), own, 1, 64)) ||
        !cm_ok(ca_trust_new(&g.client_trust, err_s, sizeof(err_s), vend, 1, 64)) ||
        !load_profile(&g.profile, "devices", 365) || !load_profile(&g.gw_profile, "gateways", 30) ||
        !load_profile_keys(&g.rsa_profile, "rsa-only", 30, CA_KEY_RSA) ||
        !read_der_cert(g.ra_pem, &g.ra_der, &ra_len)) {
        fprintf(stderr, "setup: %s\n", err_s);
        return 1;
    }
    g.ra_cert = cm_span_make(g.ra_der, ra_len);
    g.secrets[0] = (srv_secret){.ref = CM_SPAN_LIT(SECRET_REF), .secret = CM_SPAN_LIT(SECRET)};
    g.secrets[1] = (srv_secret){
        .ref = CM_SPAN_LIT("line-9"), .secret = CM_SPAN_LIT(SECRET), .subject_pattern = "CN=l9-*"};
    g.secrets[2] =
        (srv_secret){.ref = CM_SPAN_LIT("batch-2"), .secret = CM_SPAN_LIT(SECRET), .max_certs = 2};
    g.secrets[3] =
        (srv_secret){.ref = CM_SPAN_LIT("one-time"), .secret = CM_SPAN_LIT(SECRET), .max_certs = 1};
    g.secrets[4] = (srv_secret){.ref = CM_SPAN_LIT("key-once"),
                                .secret = cm_span_make(k_mac_key, sizeof(k_mac_key)),
                                .kind = CMP_SECRET_KEY,
                                .max_certs = 1,
                                .subject_pattern = "CN=k-*"};
    g.profiles[0] = (srv_profile){.name = "gateways", .profile = g.gw_profile};
    g.profiles[1] = (srv_profile){.name = "rsa-only", .profile = g.rsa_profile};
    g.ca = (srv_ca){.name = "devices",
                    .authority = g.authority,
                    .profile = g.profile,
                    .profile_name = "devices",
                    .profiles = g.profiles,
                    .num_profiles = 2,
                    .ca_key = g.ca_key,
                    .ca_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .cmp_cert = g.authority,
                    .cmp_key = g.ca_key,
                    .cmp_sig_alg = HSM_SIG_ECDSA_SHA256,
                    .secrets = g.secrets,
                    .num_secrets = T_SECRETS,
                    .client_trust = g.client_trust,
                    .own_trust = g.own_trust,
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

static int trust_suite_cleanup(void)
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
    ca_profile_free(g.gw_profile);
    ca_profile_free(g.rsa_profile);
    ca_authority_free(g.authority);
    ca_authority_free(g.vendor);
    cmp_protect_ctx_free(g.prot);
    X509_free(g.ca_x509);
    OPENSSL_free(g.ra_der);
    test_token_destroy(&g.token);
    (void)test_rmtree(g.dir);
    return 0;
}

// --- helpers --------------------------------------------------------------------------------

// new_key writes a fresh EC P-256 key to DIR/NAME.key and returns its path in |out|.
static const char *new_key(char out[320], const char *name)
{
    char file[96];
    (void)snprintf(file, sizeof(file), "%s.key", name);
    test_path(out, 320, g.dir, file);
    CU_ASSERT_FATAL(test_pki_make_key(out, TEST_PKI_EC_P256, g.log));
    return out;
}

// make_request runs `openssl cmp` against its in-process mock server with |extra| options and
// returns the first request it sent.
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

static void process_with(rsp *out, srv_worker *w, const srv_ca *ca, const uint8_t *der, size_t len)
{
    memset(out, 0, sizeof(*out));
    out->req = srv_request_new(w, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out->req);
    uint8_t *body = srv_request_body(out->req, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memcpy(body, der, len);
    cm_span resp = srv_request_run(out->req, ca, cm_span_make(body, len));
    CU_ASSERT_FATAL(resp.len > 0);
    cm_arena_init(&out->arena, 0, 0);
    out->parsed = cm_ok(cmp_msg_from_der(&out->arena, &out->msg, resp, NULL));
    CU_ASSERT_TRUE(out->parsed);
    const unsigned char *q = resp.p;
    out->ossl = d2i_OSSL_CMP_MSG(NULL, &q, (long)resp.len);
    CU_ASSERT_PTR_NOT_NULL(out->ossl);
}

static void process(rsp *out, const uint8_t *der, size_t len)
{
    process_with(out, g.worker, &g.ca, der, len);
}

static void rsp_free(rsp *r)
{
    OSSL_CMP_MSG_free(r->ossl);
    cm_arena_cleanup(&r->arena);
    srv_request_free(r->req);
}

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

// refusal_of returns the PKIStatusInfo of a rejection wherever srv_fail put it (RFC 9483
// §3.6.4): an error message's, or the one CertResponse's of an ip/cp/kup or the rp's for a
// refused request content; NULL when |r| is no rejection.
static const cmp_status_info *refusal_of(const rsp *r)
{
    if (!r->parsed) {
        return NULL;
    }
    const cmp_body *b = &r->msg.body;
    const cmp_status_info *st = NULL;
    switch (b->type) {
    case CMP_BODY_ERROR:
        st = &b->u.error.status;
        break;
    case CMP_BODY_IP:
    case CMP_BODY_CP:
    case CMP_BODY_KUP:
        st = b->u.rep.num_responses == 1 ? &b->u.rep.responses[0].status : NULL;
        break;
    case CMP_BODY_RP:
        st = b->u.rp.num_status == 1 ? &b->u.rp.status[0] : NULL;
        break;
    default:
        break;
    }
    return st != NULL && st->status == CMP_STATUS_REJECTION ? st : NULL;
}

// fail_bit_of returns the failInfo bit of a rejection, -2 when it is no rejection.
static int fail_bit_of(const rsp *r)
{
    const cmp_status_info *st = refusal_of(r);
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

// expect_refused checks that |r| is a rejection with failInfo |bit| and a statusString starting
// with |prefix| (the summary's reason, which goes into the log line, is the same).
static void expect_refused(const rsp *r, int bit, const char *prefix)
{
    srv_summary sum;
    srv_request_summary(r->req, &sum);
    const int got = fail_bit_of(r);
    const bool ok = got == bit && strncmp(sum.reason, prefix, strlen(prefix)) == 0;
    if (!ok) {
        fprintf(stderr, "\n  got bit %d (%s) \"%s\"\n  want bit %d \"%s...\"\n", got,
                cm_result_name(sum.error), sum.reason, bit, prefix);
    }
    CU_ASSERT_TRUE(ok);
    const cmp_status_info *st = refusal_of(r);
    if (st != NULL) {
        der_reader rd, seq;
        cm_span s;
        der_reader_init(&rd, st->status_string);
        CU_ASSERT_TRUE(cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) &&
                       cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &s)) &&
                       s.len == strlen(sum.reason) && memcmp(s.p, sum.reason, s.len) == 0);
    }
}

// expect_issued checks |r| carries one accepted certificate of |type| and returns it.
static X509 *expect_issued(const rsp *r, cmp_body_type type)
{
    if (r->msg.body.type == CMP_BODY_ERROR) {
        srv_summary sum;
        srv_request_summary(r->req, &sum);
        fprintf(stderr, "\n  unexpected error: %s \"%s\"\n", cm_result_name(sum.error), sum.reason);
    }
    CU_ASSERT_EQUAL_FATAL(r->msg.body.type, type);
    const cmp_cert_rep *rep = &r->msg.body.u.rep;
    CU_ASSERT_EQUAL_FATAL(rep->num_responses, 1);
    CU_ASSERT_EQUAL(rep->responses[0].status.status, CMP_STATUS_ACCEPTED);
    const cm_span c = rep->responses[0].cert;
    const unsigned char *q = c.p;
    X509 *x = d2i_X509(NULL, &q, (long)c.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(X509_verify(x, X509_get0_pubkey(g.ca_x509)), 1);
    return x;
}

// run_cmp makes a request with |args| (NULL-terminated), processes it and returns the answer.
static void run_cmp(rsp *out, const char *const *args)
{
    size_t len;
    uint8_t *m = make_request(&len, args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    process(out, m, len);
    free(m);
}

// enrol issues a certificate for a fresh key NAME.key and subject /CN=NAME with a MAC ir
// (implicitConfirm unless |confirm|), writes it to DIR/NAME.pem and returns it.
static X509 *enrol(const char *name, bool confirm, char key[320], char pem[320])
{
    new_key(key, name);
    char subject[96], file[96];
    (void)snprintf(subject, sizeof(subject), "/CN=%s", name);
    (void)snprintf(file, sizeof(file), "%s.pem", name);
    test_path(pem, 320, g.dir, file);
    const char *args[] = {"-cmd",
                          "ir",
                          "-ref",
                          SECRET_REF,
                          "-secret",
                          "pass:" SECRET,
                          "-newkey",
                          key,
                          "-subject",
                          subject,
                          confirm ? NULL : "-implicit_confirm",
                          NULL};
    rsp r;
    run_cmp(&r, args);
    X509 *x = expect_issued(&r, CMP_BODY_IP);
    FILE *f = fopen(pem, "w");
    CU_ASSERT_FATAL(f != NULL && PEM_write_X509(f, x) == 1);
    (void)fclose(f);
    rsp_free(&r);
    return x;
}

// serial_of returns |x|'s serial as INTEGER content octets (the store's form) in |buf|.
static cm_span serial_of(X509 *x, uint8_t buf[32])
{
    unsigned char *der = NULL;
    const int n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der);
    CU_ASSERT_FATAL(n > 2 && n - 2 <= 32);
    memcpy(buf, der + 2, (size_t)n - 2);
    OPENSSL_free(der);
    return cm_span_make(buf, (size_t)n - 2);
}

static cm_result store_ref_op(store_op op, X509 *x, int reason)
{
    uint8_t sn[32];
    store_job j;
    store_job_init(&j, op, NULL);
    j.u.ref.ca = "devices";
    j.u.ref.serial = serial_of(x, sn);
    j.u.ref.time = cm_time_now();
    j.u.ref.reason = reason;
    return store_run(g.st, &j);
}

static store_cert stored(X509 *x, cm_arena *a)
{
    uint8_t sn[32];
    store_cert c;
    memset(&c, 0, sizeof(c));
    store_reader *rd;
    TEST_ASSERT_OK(store_reader_open(g.st, &rd));
    TEST_ASSERT_OK(store_cert_get(rd, a, &c, "devices", serial_of(x, sn)));
    store_reader_close(rd);
    return c;
}

// cr_by asks for a certificate for a fresh key with a cr signed by |pem|/|key| for |subject|.
static void cr_by(rsp *out, const char *pem, const char *key, const char *subject,
                  const char *fresh_name)
{
    char nk[320];
    new_key(nk, fresh_name);
    const char *args[] = {"-cmd",    "cr", "-cert",    pem,     "-key", key,
                          "-newkey", nk,   "-subject", subject, NULL};
    run_cmp(out, args);
}

static void kur_by(rsp *out, const char *pem, const char *key, const char *new_key_path,
                   bool implicit)
{
    const char *args[] = {"-cmd",    "kur",        "-cert",
                          pem,       "-key",       key,
                          "-newkey", new_key_path, implicit ? "-implicit_confirm" : NULL,
                          NULL};
    run_cmp(out, args);
}

// header_edit changes a parsed request's header before it is protected again.
typedef void (*header_edit)(cmp_header_fields *h, void *ctx);

// reprotect re-encodes request |der| after |edit| and protects it again: with a PBM MAC under
// |secret|, or, when |key_path| is set, signed by that key (ecdsa-with-SHA256) with the
// request's extraCerts. Returns the new message (free() it).
static uint8_t *reprotect(size_t *out_len, const uint8_t *der, size_t len, header_edit edit,
                          void *ctx, const char *secret, const char *key_path)
{
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &m, cm_span_make(der, len), NULL));
    cmp_header_fields h = m.header.f;
    cmp_mac_key key;
    memset(&key, 0, sizeof(key));
    der_builder ab, b;
    der_builder_init(&ab, 256);
    if (key_path == NULL) {
        TEST_ASSERT_OK(cmp_mac_key_new_pbm(g.prot, &key, cm_span_make(secret, strlen(secret)),
                                           CMP_HASH_SHA256, CMP_HASH_SHA256, 500, 16));
        cmp_mac_key_put_alg(&ab, &key);
        TEST_ASSERT_OK(der_builder_finish(&ab, &h.protection_alg));
    } else {
        h.protection_alg = cm_span_make(k_ecdsa_sha256, sizeof(k_ecdsa_sha256));
    }
    if (edit != NULL) {
        edit(&h, ctx);
    }
    der_builder_init(&b, 4096);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &m.body);
    const cm_span pp = cmp_msg_writer_protected_part(&w);
    uint8_t prot_buf[256];
    cm_span prot;
    if (key_path == NULL) {
        size_t mac_len = 0;
        TEST_ASSERT_OK(cmp_mac_compute(g.prot, prot_buf, sizeof(prot_buf), &mac_len, &key, pp));
        prot = cm_span_make(prot_buf, mac_len);
        cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    } else {
        cm_span tbs;
        TEST_ASSERT_OK(cmp_protect_sign_input(&a, &tbs, pp));
        EVP_PKEY *k = test_pki_read_key(key_path);
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        size_t sig_len = sizeof(prot_buf);
        CU_ASSERT_FATAL(md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
                        EVP_DigestSign(md, prot_buf, &sig_len, tbs.p, tbs.len) == 1);
        EVP_MD_CTX_free(md);
        EVP_PKEY_free(k);
        prot = cm_span_make(prot_buf, sig_len);
        cmp_msg_writer_finish(&w, &prot, 0, m.extra_certs, m.num_extra_certs);
    }
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    der_builder_cleanup(&ab);
    cmp_mac_key_cleanse(&key);
    cm_arena_cleanup(&a);
    return out;
}

// --- 1: a certificate this CA issued authenticates only while it is valid in the store -----

static void test_trust_revoked_signer_is_refused_for_every_body(void)
{
    char key[320], pem[320];
    X509 *x = enrol("t1-dev", false, key, pem);
    // Valid: a cr signed by it is accepted (and its status is now in the cache).
    rsp r;
    cr_by(&r, pem, key, "/CN=t1-dev", "t1-a");
    X509_free(expect_issued(&r, CMP_BODY_CP));
    rsp_free(&r);
    // Revoked: every kind of request it signs is refused, certRevoked, with the serial.
    TEST_ASSERT_OK(store_ref_op(STORE_OP_CERT_REVOKE, x, STORE_REASON_KEY_COMPROMISE));
    cr_by(&r, pem, key, "/CN=t1-dev", "t1-b");
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    srv_summary sum;
    srv_request_summary(r.req, &sum);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum.reason, ") was revoked"));
    CU_ASSERT_EQUAL(sum.error.code, SRV_E_SIGNER_REVOKED);
    rsp_free(&r);
    char nk[320];
    new_key(nk, "t1-c");
    const char *ir[] = {"-cmd",    "ir", "-cert",    pem,         "-key", key,
                        "-newkey", nk,   "-subject", "/CN=t1-ir", NULL};
    run_cmp(&r, ir);
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    rsp_free(&r);
    char csr[320];
    test_path(csr, sizeof(csr), g.dir, "t1.csr");
    const char *mk[] = {"openssl", "req",        "-new", "-key", nk,
                        "-subj",   "/CN=t1-p10", "-out", csr,    NULL};
    CU_ASSERT_EQUAL_FATAL(test_run(mk, g.log), 0);
    const char *p10[] = {"-cmd", "p10cr", "-cert", pem, "-key", key, "-csr", csr, NULL};
    run_cmp(&r, p10);
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    rsp_free(&r);
    const char *genm[] = {"-cmd", "genm", "-cert", pem, "-key", key, "-infotype", "caCerts", NULL};
    run_cmp(&r, genm);
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    rsp_free(&r);
    kur_by(&r, pem, key, nk, true);
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    rsp_free(&r);
    // rr of itself again: certRevoked as well.
    const char *rr[] = {"-cmd", "rr", "-cert", pem, "-key", key, "-oldcert", pem, NULL};
    run_cmp(&r, rr);
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    rsp_free(&r);
    X509_free(x);
}

static void test_trust_held_unconfirmed_and_unknown_signers(void)
{
    char key[320], pem[320];
    X509 *x = enrol("t2-held", false, key, pem);
    TEST_ASSERT_OK(store_ref_op(STORE_OP_CERT_REVOKE, x, STORE_REASON_CERTIFICATE_HOLD));
    rsp r;
    cr_by(&r, pem, key, "/CN=t2-held", "t2-a");
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    srv_summary sum;
    srv_request_summary(r.req, &sum);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum.reason, ") is on hold"));
    rsp_free(&r);
    // Released: it signs again (the cache saw the release).
    TEST_ASSERT_OK(store_ref_op(STORE_OP_CERT_RELEASE, x, 0));
    cr_by(&r, pem, key, "/CN=t2-held", "t2-b");
    X509_free(expect_issued(&r, CMP_BODY_CP));
    rsp_free(&r);
    X509_free(x);

    // Never confirmed (certConf did not come): notAuthorized.
    x = enrol("t2-unconf", true, key, pem);
    cr_by(&r, pem, key, "/CN=t2-unconf", "t2-c");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the signer's certificate (serial ");
    srv_request_summary(r.req, &sum);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum.reason, "never confirmed with certConf"));
    rsp_free(&r);
    X509_free(x);

    // Signed by this CA's key but unknown to its store (another installation's database, or a
    // forgery with the key): signerNotTrusted.
    char gk[320], gp[320];
    new_key(gk, "t2-ghost");
    test_path(gp, sizeof(gp), g.dir, "t2-ghost.pem");
    EVP_PKEY *k = test_pki_read_key(gk);
    unsigned char *spki = NULL;
    const int spki_len = i2d_PUBKEY(k, &spki);
    EVP_PKEY_free(k);
    CU_ASSERT_FATAL(spki_len > 0);
    static const uint8_t k_ghost_name[] = {0x30, 0x13, 0x31, 0x11, 0x30, 0x0f, 0x06,
                                           0x03, 0x55, 0x04, 0x03, 0x0c, 0x08, 't',
                                           '2',  '-',  'g',  'h',  'o',  's',  't'};
    ca_request creq = {.subject = cm_span_make(k_ghost_name, sizeof(k_ghost_name)),
                       .spki = cm_span_make(spki, (size_t)spki_len)};
    ca_decision d;
    TEST_ASSERT_OK(ca_policy_check(g.profile, g.authority, &d, &creq, cm_time_now(), NULL));
    uint8_t serial[CA_SERIAL_LEN];
    TEST_ASSERT_OK(ca_serial_new(serial));
    der_builder tb, cb;
    der_builder_init(&tb, 1024);
    der_builder_init(&cb, 2048);
    const cm_span alg = cm_span_make(k_ecdsa_sha256, sizeof(k_ecdsa_sha256));
    TEST_ASSERT_OK(ca_tbs_build(g.authority, &tb, g.profile, &d, &creq,
                                cm_span_make(serial, sizeof(serial)), alg));
    cm_span tbs, cert;
    TEST_ASSERT_OK(der_builder_finish(&tb, &tbs));
    CU_ASSERT_TRUE_FATAL(sign_der(&cb, tbs, alg));
    TEST_ASSERT_OK(der_builder_finish(&cb, &cert));
    CU_ASSERT_TRUE_FATAL(write_x509_pem(gp, cert, NULL));
    OPENSSL_free(spki);
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    cr_by(&r, gp, gk, "/CN=t2-ghost", "t2-d");
    expect_refused(&r, CMP_FAIL_SIGNER_NOT_TRUSTED, "the signer's certificate (serial ");
    srv_request_summary(r.req, &sum);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum.reason, "this CA has no record of it"));
    rsp_free(&r);
}

// --- 2: a key update supersedes --------------------------------------------------------------

// signed_cert_conf builds a certConf accepting |cert| (issued in |rep|'s transaction), signed
// by |signer_pem|/|key_path| (the credential of the kur), with the signer's SKI as senderKID.
static uint8_t *signed_cert_conf(size_t *out_len, const rsp *rep, cm_span cert,
                                 const char *signer_pem, const char *key_path)
{
    cmp_digests d;
    TEST_ASSERT_OK(cmp_digests_init(&d));
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len;
    TEST_ASSERT_OK(cmp_cert_hash(&d, hash, &hash_len, cert, NULL));
    cmp_digests_cleanup(&d);
    cmp_cert_status cs;
    memset(&cs, 0, sizeof(cs));
    cs.cert_hash = cm_span_make(hash, hash_len);
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_CERT_CONF;
    body.u.conf.items = &cs;
    body.u.conf.num = 1;
    X509 *sx = test_pki_read_cert(signer_pem);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sx);
    unsigned char *sder = NULL, *name = NULL;
    const int slen = i2d_X509(sx, &sder);
    const int nlen = i2d_X509_NAME(X509_get_subject_name(sx), &name);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(sx);
    CU_ASSERT_FATAL(slen > 0 && nlen > 0 && ski != NULL);
    uint8_t nonce[16];
    CU_ASSERT_FATAL(RAND_bytes(nonce, sizeof(nonce)) == 1);
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.sender_name = cm_span_make(name, (size_t)nlen);
    h.recipient_name = ca_authority_subject(g.authority);
    h.has_message_time = true;
    h.message_time = cm_time_now();
    h.protection_alg = cm_span_make(k_ecdsa_sha256, sizeof(k_ecdsa_sha256));
    h.sender_kid = (cmp_opt_span){
        true, cm_span_make(ASN1_STRING_get0_data(ski), (size_t)ASN1_STRING_length(ski))};
    h.transaction_id = rep->msg.header.f.transaction_id;
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, sizeof(nonce))};
    h.recip_nonce = rep->msg.header.f.sender_nonce;
    der_builder b;
    der_builder_init(&b, 2048);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cm_span tbs;
    TEST_ASSERT_OK(cmp_protect_sign_input(&a, &tbs, cmp_msg_writer_protected_part(&w)));
    EVP_PKEY *k = test_pki_read_key(key_path);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t sig[256];
    size_t sig_len = sizeof(sig);
    CU_ASSERT_FATAL(k != NULL && md != NULL &&
                    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
                    EVP_DigestSign(md, sig, &sig_len, tbs.p, tbs.len) == 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    const cm_span prot = cm_span_make(sig, sig_len);
    const cm_span extra = cm_span_make(sder, (size_t)slen);
    cmp_msg_writer_finish(&w, &prot, 0, &extra, 1);
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    cm_arena_cleanup(&a);
    OPENSSL_free(sder);
    OPENSSL_free(name);
    X509_free(sx);
    return out;
}

static void test_trust_kur_supersedes_the_old_certificate(void)
{
    // implicitConfirm: the old certificate is superseded at once (not revoked: the profile's
    // revoke_on_update is off) and can neither update again nor sign a cr; the new one can.
    char key[320], pem[320], k2[320], k3[320];
    X509 *x = enrol("t3-dev", false, key, pem);
    new_key(k2, "t3-new");
    rsp r;
    kur_by(&r, pem, key, k2, true);
    X509 *y = expect_issued(&r, CMP_BODY_KUP);
    rsp_free(&r);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert old = stored(x, &a);
    CU_ASSERT_EQUAL(old.status, STORE_CERT_VALID);
    CU_ASSERT_NOT_EQUAL(old.superseded_at, 0);
    store_cert neu = stored(y, &a);
    uint8_t sn[32];
    CU_ASSERT_TRUE(cm_span_eq(neu.replaces, serial_of(x, sn)));
    kur_by(&r, pem, key, new_key(k3, "t3-again"), true);
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the signer's certificate (serial ");
    srv_summary sum;
    srv_request_summary(r.req, &sum);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum.reason, "was replaced by a key update"));
    rsp_free(&r);
    cr_by(&r, pem, key, "/CN=t3-dev", "t3-cr");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the signer's certificate (serial ");
    rsp_free(&r);
    const char *rr[] = {"-cmd", "rr", "-cert", pem, "-key", key, "-oldcert", pem, NULL};
    run_cmp(&r, rr);
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the signer's certificate (serial ");
    rsp_free(&r);
    char ypem[320];
    test_path(ypem, sizeof(ypem), g.dir, "t3-new.pem");
    FILE *f = fopen(ypem, "w");
    CU_ASSERT_FATAL(f != NULL && PEM_write_X509(f, y) == 1);
    (void)fclose(f);
    cr_by(&r, ypem, k2, "/CN=t3-dev", "t3-ok");
    X509_free(expect_issued(&r, CMP_BODY_CP));
    rsp_free(&r);
    X509_free(x);
    X509_free(y);
    cm_arena_reset(&a);

    // Explicit confirmation: while the update waits for certConf, a second kur, a cr and an rr
    // signed by the old certificate are refused; the certConf it signs is not; after it the old
    // certificate is superseded.
    x = enrol("t3b-dev", false, key, pem);
    kur_by(&r, pem, key, new_key(k2, "t3b-new"), false);
    y = expect_issued(&r, CMP_BODY_KUP);
    rsp kup = r;
    kur_by(&r, pem, key, new_key(k3, "t3b-again"), false);
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "an update of the signer's certificate (serial ");
    rsp_free(&r);
    cr_by(&r, pem, key, "/CN=t3b-dev", "t3b-cr");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "an update of the signer's certificate (serial ");
    rsp_free(&r);
    const char *rr2[] = {"-cmd", "rr", "-cert", pem, "-key", key, "-oldcert", pem, NULL};
    run_cmp(&r, rr2);
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "an update of the signer's certificate (serial ");
    rsp_free(&r);
    CU_ASSERT_EQUAL(stored(x, &a).superseded_at, 0);
    size_t clen;
    uint8_t *cc = signed_cert_conf(&clen, &kup, kup.msg.body.u.rep.responses[0].cert, pem, key);
    process(&r, cc, clen);
    if (r.msg.body.type != CMP_BODY_PKICONF) {
        expect_refused(&r, -1, "(a pkiconf)");
    }
    CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_PKICONF);
    rsp_free(&r);
    free(cc);
    CU_ASSERT_EQUAL(stored(y, &a).status, STORE_CERT_VALID);
    CU_ASSERT_NOT_EQUAL(stored(x, &a).superseded_at, 0);
    kur_by(&r, pem, key, k3, true);
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the signer's certificate (serial ");
    rsp_free(&r);
    rsp_free(&kup);
    X509_free(x);
    X509_free(y);
    cm_arena_reset(&a);

    // revoke_on_update: the old certificate is also revoked (superseded); it then signs
    // nothing (certRevoked).
    g.ca.policy.revoke_on_update = true;
    x = enrol("t3c-dev", false, key, pem);
    kur_by(&r, pem, key, new_key(k2, "t3c-new"), true);
    X509_free(expect_issued(&r, CMP_BODY_KUP));
    rsp_free(&r);
    old = stored(x, &a);
    CU_ASSERT_EQUAL(old.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(old.reason, STORE_REASON_SUPERSEDED);
    cr_by(&r, pem, key, "/CN=t3c-dev", "t3c-cr");
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate (serial ");
    srv_request_summary(r.req, &sum);
    CU_ASSERT_PTR_NOT_NULL(strstr(sum.reason, "superseded by a key update"));
    rsp_free(&r);
    g.ca.policy.revoke_on_update = false;
    X509_free(x);
    cm_arena_cleanup(&a);
}

// --- 3: key reuse ------------------------------------------------------------------------------

static void test_trust_key_reuse_is_refused(void)
{
    char key[320], pem[320];
    X509 *x = enrol("t4-dev", false, key, pem);
    hsm_pool_stats before, after;
    hsm_pool_get_stats(g.pool, &before);
    // Another ir, p10cr or cr for the same key: badCertTemplate, and no signature spent.
    const char *ir[] = {
        "-cmd",    "ir", "-ref",     SECRET_REF,   "-secret",           "pass:" SECRET,
        "-newkey", key,  "-subject", "/CN=t4-two", "-implicit_confirm", NULL};
    rsp r;
    run_cmp(&r, ir);
    expect_refused(&r, CMP_FAIL_BAD_CERT_TEMPLATE,
                   "this CA already certified the requested public key");
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    char csr[320];
    test_path(csr, sizeof(csr), g.dir, "t4.csr");
    const char *mk[] = {"openssl", "req",        "-new", "-key", key,
                        "-subj",   "/CN=t4-p10", "-out", csr,    NULL};
    CU_ASSERT_EQUAL_FATAL(test_run(mk, g.log), 0);
    const char *p10[] = {"-cmd",         "p10cr", "-ref", SECRET_REF, "-secret",
                         "pass:" SECRET, "-csr",  csr,    NULL};
    run_cmp(&r, p10);
    expect_refused(&r, CMP_FAIL_BAD_CERT_TEMPLATE,
                   "this CA already certified the requested public key");
    rsp_free(&r);
    hsm_pool_get_stats(g.pool, &after);
    CU_ASSERT_EQUAL(after.signed_ok, before.signed_ok);
    // allow_key_reuse = on: accepted.
    g.ca.policy.allow_key_reuse = true;
    run_cmp(&r, ir);
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    // A kur for the key it already has: refused even so.
    kur_by(&r, pem, key, key, true);
    expect_refused(&r, CMP_FAIL_BAD_CERT_TEMPLATE, "kur must certify a new key");
    rsp_free(&r);
    g.ca.policy.allow_key_reuse = false;
    kur_by(&r, pem, key, key, true);
    expect_refused(&r, CMP_FAIL_BAD_CERT_TEMPLATE, "kur must certify a new key");
    rsp_free(&r);
    X509_free(x);
}

// --- 5: pvno -------------------------------------------------------------------------------------

static void set_pvno(cmp_header_fields *h, void *ctx)
{
    h->pvno = *(const int64_t *)ctx;
}

static void test_trust_pvno_other_than_2_or_3_is_unsupported(void)
{
    char key[320];
    new_key(key, "t5");
    const char *ir[] = {"-cmd",    "ir", "-ref",     SECRET_REF, "-secret", "pass:" SECRET,
                        "-newkey", key,  "-subject", "/CN=t5",   NULL};
    size_t len, len2;
    uint8_t *m = make_request(&len, ir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const int64_t k_pvno[] = {1, 4, 0};
    static const int64_t k_answer[] = {2, 3, 2};
    for (size_t i = 0; i < 3; i++) {
        int64_t pvno = k_pvno[i];
        uint8_t *v = reprotect(&len2, m, len, set_pvno, &pvno, SECRET, NULL);
        rsp r;
        process(&r, v, len2);
        expect_refused(&r, CMP_FAIL_UNSUPPORTED_VERSION, "CMP version (pvno)");
        CU_ASSERT_EQUAL(r.msg.header.f.pvno, k_answer[i]); // the nearest supported version
        rsp_free(&r);
        free(v);
    }
    free(m);
}

// --- 6: RA certificates ------------------------------------------------------------------------

// ra_ir asks for a certificate with raVerified POP, signed by |pem|/|key|.
static void ra_ir(rsp *out, const char *pem, const char *key, const char *name)
{
    char nk[320], subject[64];
    new_key(nk, name);
    (void)snprintf(subject, sizeof(subject), "/CN=%s", name);
    const char *args[] = {"-cmd",
                          "ir",
                          "-cert",
                          pem,
                          "-key",
                          key,
                          "-popo",
                          "0",
                          "-newkey",
                          nk,
                          "-subject",
                          subject,
                          "-implicit_confirm",
                          NULL};
    run_cmp(out, args);
}

// write_vendor_crl writes a CRL of the vendor CA listing serial |serial| (a small number) to
// DIR/vendor.crl and returns its path.
static const char *write_vendor_crl(char path[320], uint8_t serial)
{
    const uint8_t sn[1] = {serial};
    ca_crl_entry e = {cm_span_make(sn, 1), cm_time_now() - 60, CA_REASON_KEY_COMPROMISE};
    der_builder tb, cb;
    der_builder_init(&tb, 512);
    der_builder_init(&cb, 1024);
    const cm_span alg = cm_span_make(k_ecdsa_sha256, sizeof(k_ecdsa_sha256));
    const int64_t now = cm_time_now();
    TEST_ASSERT_OK(ca_crl_tbs_build(g.vendor, &tb, alg, now - 60, now + 86400, 1, &e, 1));
    cm_span tbs, crl;
    TEST_ASSERT_OK(der_builder_finish(&tb, &tbs));
    EVP_PKEY *k = test_pki_read_key(g.vendor_key);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t sig[256];
    size_t sig_len = sizeof(sig);
    CU_ASSERT_FATAL(k != NULL && md != NULL &&
                    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
                    EVP_DigestSign(md, sig, &sig_len, tbs.p, tbs.len) == 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    TEST_ASSERT_OK(ca_signed_assemble(&cb, tbs, alg, cm_span_make(sig, sig_len)));
    TEST_ASSERT_OK(der_builder_finish(&cb, &crl));
    test_path(path, 320, g.dir, "vendor.crl");
    CU_ASSERT_TRUE_FATAL(test_write_file(path, crl.p, crl.len));
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    return path;
}

// make_expired_ra writes an RA certificate (id-kp-cmcRA) of the vendor CA that expired
// yesterday to DIR/ra-old.pem (openssl x509 cannot make one in the past).
static bool make_expired_ra(const char *pem, const char *key_path)
{
    EVP_PKEY *ca_key = test_pki_read_key(g.vendor_key);
    X509 *ca = test_pki_read_cert(g.vendor_pem);
    EVP_PKEY *k = test_pki_read_key(key_path);
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    bool ok = ca_key != NULL && ca != NULL && k != NULL && x != NULL && n != NULL &&
              X509_set_version(x, 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), 78) == 1 &&
              X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"Old RA", -1,
                                         -1, 0) == 1 &&
              X509_set_subject_name(x, n) == 1 &&
              X509_set_issuer_name(x, X509_get_subject_name(ca)) == 1 &&
              X509_time_adj_ex(X509_getm_notBefore(x), -10, 0, NULL) != NULL &&
              X509_time_adj_ex(X509_getm_notAfter(x), -1, 0, NULL) != NULL &&
              X509_set_pubkey(x, k) == 1;
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
    X509_EXTENSION *e1 = ok ? X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage, "cmcRA") : NULL;
    X509_EXTENSION *e2 =
        ok ? X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash") : NULL;
    ok = ok && e1 != NULL && e2 != NULL && X509_add_ext(x, e1, -1) == 1 &&
         X509_add_ext(x, e2, -1) == 1 && X509_sign(x, ca_key, EVP_sha256()) > 0;
    FILE *f = ok ? fopen(pem, "w") : NULL;
    ok = ok && f != NULL && PEM_write_X509(f, x) == 1;
    if (f != NULL) {
        ok &= fclose(f) == 0;
    }
    X509_EXTENSION_free(e1);
    X509_EXTENSION_free(e2);
    X509_NAME_free(n);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(k);
    EVP_PKEY_free(ca_key);
    return ok;
}

static void test_trust_ra_certificates_are_checked(void)
{
    // The configured RA with id-kp-cmcRA vouches (raVerified).
    rsp r;
    ra_ir(&r, g.ra_pem, g.ra_key, "t6-ok");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    // An IDevID configured as RA: no cmcRA, so no raVerified (ra_require_cmcra), unless the
    // requirement is off.
    unsigned char *idder;
    size_t idlen;
    CU_ASSERT_TRUE_FATAL(read_der_cert(g.idevid_pem, &idder, &idlen));
    const cm_span idevid = cm_span_make(idder, idlen);
    g.ca.ra_certs = &idevid;
    ra_ir(&r, g.idevid_pem, g.idevid_key, "t6-noeku");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED,
                   "raVerified is accepted only from an RA of this CA: the RA certificate lacks "
                   "extended key usage id-kp-cmcRA");
    rsp_free(&r);
    g.ca.ra_cmcra_optional = true;
    ra_ir(&r, g.idevid_pem, g.idevid_key, "t6-opt");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    g.ca.ra_cmcra_optional = false;
    // An expired RA certificate vouches for nothing: it does not even authenticate.
    char ok_key[320], old_pem[320];
    new_key(ok_key, "t6-old-ra");
    test_path(old_pem, sizeof(old_pem), g.dir, "ra-old.pem");
    CU_ASSERT_TRUE_FATAL(make_expired_ra(old_pem, ok_key));
    unsigned char *oldder;
    size_t oldlen;
    CU_ASSERT_TRUE_FATAL(read_der_cert(old_pem, &oldder, &oldlen));
    const cm_span old = cm_span_make(oldder, oldlen);
    g.ca.ra_certs = &old;
    ra_ir(&r, old_pem, ok_key, "t6-expired");
    expect_refused(&r, CMP_FAIL_SIGNER_NOT_TRUSTED, "the signer's certificate is not trusted");
    CU_ASSERT_TRUE(r.req->ra_why.text[0] != '\0');
    rsp_free(&r);
    // A revoked RA certificate (its CA's CRL lists it): neither vouches nor revokes for others.
    g.ca.ra_certs = &g.ra_cert;
    char crl[320];
    const char *crls[] = {write_vendor_crl(crl, 77)};
    char err[256] = "";
    TEST_ASSERT_OK(ca_trust_set_crls(g.client_trust, err, sizeof(err), crls, 1));
    ra_ir(&r, g.ra_pem, g.ra_key, "t6-revoked");
    expect_refused(&r, CMP_FAIL_CERT_REVOKED, "the signer's certificate is not trusted");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.req->ra_why.text, "its issuer's CRL lists it"));
    rsp_free(&r);
    char vk[320], vp[320];
    X509 *victim = enrol("t6-victim", false, vk, vp);
    const char *rr[] = {"-cmd", "rr", "-cert", g.ra_pem, "-key", g.ra_key, "-oldcert", vp, NULL};
    run_cmp(&r, rr);
    CU_ASSERT(fail_bit_of(&r) >= 0);
    rsp_free(&r);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    CU_ASSERT_EQUAL(stored(victim, &a).status, STORE_CERT_VALID);
    cm_arena_cleanup(&a);
    TEST_ASSERT_OK(ca_trust_set_crls(g.client_trust, err, sizeof(err), NULL, 0));
    ra_ir(&r, g.ra_pem, g.ra_key, "t6-again");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    X509_free(victim);
    OPENSSL_free(idder);
    OPENSSL_free(oldder);
}

// --- 7: senderKID and sender ---------------------------------------------------------------

static void set_kid(cmp_header_fields *h, void *ctx)
{
    const cm_span *kid = ctx;
    h->sender_kid = (cmp_opt_span){kid->len != 0, *kid};
}

static void set_sender_dns(cmp_header_fields *h, void *ctx)
{
    (void)ctx;
    static const uint8_t k_dns[] = {0x82, 0x07, 'd', 'e', 'v', '.', 'c', 'o', 'm'}; // [2] dNSName
    h->sender_gn = cm_span_make(k_dns, sizeof(k_dns));
}

static void test_trust_sender_kid_and_sender(void)
{
    char nk[320];
    new_key(nk, "t7");
    const char *ir[] = {
        "-cmd", "ir",       "-cert",     g.idevid_pem,        "-key", g.idevid_key, "-newkey",
        nk,     "-subject", "/CN=t7-op", "-implicit_confirm", NULL};
    size_t len, len2;
    uint8_t *m = make_request(&len, ir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    // Re-signed with a senderKID that is not the certificate's SKI: badMessageCheck.
    cm_span kid = CM_SPAN_LIT("not-the-ski");
    uint8_t *v = reprotect(&len2, m, len, set_kid, &kid, NULL, g.idevid_key);
    rsp r;
    process(&r, v, len2);
    expect_refused(&r, CMP_FAIL_BAD_MESSAGE_CHECK,
                   "the senderKID not-the-ski is not the subject key identifier of the signer's "
                   "certificate");
    rsp_free(&r);
    free(v);
    // Without senderKID, in the first message of a transaction: badMessageCheck.
    kid = cm_span_make(NULL, 0);
    v = reprotect(&len2, m, len, set_kid, &kid, NULL, g.idevid_key);
    process(&r, v, len2);
    expect_refused(&r, CMP_FAIL_BAD_MESSAGE_CHECK, "the ir message is signed but has no senderKID");
    rsp_free(&r);
    free(v);
    // As the client made it (senderKID = the SKI): accepted.
    process(&r, m, len);
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    free(m);
    // A MAC-protected message naming its sender by a dNSName: badMessageCheck.
    new_key(nk, "t7-mac");
    const char *mac[] = {"-cmd",    "ir", "-ref",     SECRET_REF,   "-secret", "pass:" SECRET,
                         "-newkey", nk,   "-subject", "/CN=t7-mac", NULL};
    m = make_request(&len, mac);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    v = reprotect(&len2, m, len, set_sender_dns, NULL, SECRET, NULL);
    process(&r, v, len2);
    expect_refused(&r, CMP_FAIL_BAD_MESSAGE_CHECK,
                   "a MAC-protected message must name its sender as a directoryName");
    rsp_free(&r);
    free(v);
    free(m);
}

// --- 10: an error from a client ----------------------------------------------------------------

// error_msg builds an error message (PBM under |secret|, or unprotected when NULL) for
// transaction |tid| answering |recip_nonce| (may be empty).
static uint8_t *error_msg(size_t *out_len, cm_span tid, cm_span recip_nonce, const char *secret)
{
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_ERROR;
    body.u.error.status.status = CMP_STATUS_REJECTION;
    body.u.error.status.has_fail_info = true;
    body.u.error.status.fail_info = CMP_FAILINFO_BIT(CMP_FAIL_BAD_CERT_ID);
    uint8_t nonce[16];
    CU_ASSERT_FATAL(RAND_bytes(nonce, sizeof(nonce)) == 1);
    cmp_mac_key key;
    memset(&key, 0, sizeof(key));
    der_builder ab;
    der_builder_init(&ab, 128);
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.recipient_name = ca_authority_subject(g.authority);
    h.has_message_time = true;
    h.message_time = cm_time_now();
    if (secret != NULL) {
        TEST_ASSERT_OK(cmp_mac_key_new_pbm(g.prot, &key, cm_span_make(secret, strlen(secret)),
                                           CMP_HASH_SHA256, CMP_HASH_SHA256, 500, 16));
        cmp_mac_key_put_alg(&ab, &key);
        TEST_ASSERT_OK(der_builder_finish(&ab, &h.protection_alg));
        h.sender_kid = (cmp_opt_span){true, CM_SPAN_LIT(SECRET_REF)};
    }
    h.transaction_id = (cmp_opt_span){true, tid};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, 16)};
    if (recip_nonce.len != 0) {
        h.recip_nonce = (cmp_opt_span){true, recip_nonce};
    }
    der_builder b;
    der_builder_init(&b, 1024);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    if (secret != NULL) {
        uint8_t mac[64];
        size_t mac_len;
        TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, &key,
                                       cmp_msg_writer_protected_part(&w)));
        const cm_span prot = cm_span_make(mac, mac_len);
        cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    } else {
        cmp_msg_writer_finish(&w, NULL, 0, NULL, 0);
    }
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    der_builder_cleanup(&ab);
    cmp_mac_key_cleanse(&key);
    return out;
}

static void test_trust_error_from_client_gets_pkiconf(void)
{
    // For a transaction this CA does not know: pkiconf, MAC-protected with the same secret.
    uint8_t tid[16];
    CU_ASSERT_FATAL(RAND_bytes(tid, sizeof(tid)) == 1);
    size_t len;
    uint8_t *m = error_msg(&len, cm_span_make(tid, 16), cm_span_make(NULL, 0), SECRET);
    rsp r;
    process(&r, m, len);
    CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_PKICONF);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    free(m);
    // Instead of the certConf of a waiting certificate: pkiconf, and the certificate is revoked
    // (the transaction ended without it).
    char key[320];
    new_key(key, "t10");
    const char *ir[] = {"-cmd",    "ir", "-ref",     SECRET_REF, "-secret", "pass:" SECRET,
                        "-newkey", key,  "-subject", "/CN=t10",  NULL};
    rsp ip;
    run_cmp(&ip, ir);
    X509 *x = expect_issued(&ip, CMP_BODY_IP);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    CU_ASSERT_EQUAL(stored(x, &a).status, STORE_CERT_UNCONFIRMED);
    // ... but not with a recipNonce that answers nothing, nor unprotected.
    uint8_t bad[16] = {0};
    m = error_msg(&len, ip.msg.header.f.transaction_id.v, cm_span_make(bad, 16), SECRET);
    process(&r, m, len);
    expect_refused(&r, CMP_FAIL_BAD_RECIPIENT_NONCE, "the error's recipNonce does not match");
    rsp_free(&r);
    free(m);
    m = error_msg(&len, ip.msg.header.f.transaction_id.v, ip.msg.header.f.sender_nonce.v, NULL);
    process(&r, m, len);
    expect_refused(&r, CMP_FAIL_BAD_MESSAGE_CHECK, "the error message is not protected");
    rsp_free(&r);
    free(m);
    CU_ASSERT_EQUAL(stored(x, &a).status, STORE_CERT_UNCONFIRMED);
    m = error_msg(&len, ip.msg.header.f.transaction_id.v, ip.msg.header.f.sender_nonce.v, SECRET);
    process(&r, m, len);
    CU_ASSERT_EQUAL(r.msg.body.type, CMP_BODY_PKICONF);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    free(m);
    const store_cert c = stored(x, &a);
    CU_ASSERT_EQUAL(c.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(c.reason, STORE_REASON_CESSATION_OF_OPERATION);
    cm_arena_cleanup(&a);
    X509_free(x);
    rsp_free(&ip);
}

// --- policy: subject binding, subject patterns, per-secret limits, certProfile ---------------

static void test_trust_certificate_signed_requests_keep_their_subject(void)
{
    char key[320], pem[320], nk[320];
    X509 *x = enrol("t11-dev", false, key, pem);
    rsp r;
    cr_by(&r, pem, key, "/CN=someone-else", "t11-a");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED,
                   "a cr signed by a certificate may only request its subject (CN=t11-dev), not "
                   "CN=someone-else (profile devices: subject_from = signer)");
    rsp_free(&r);
    const char *kur[] = {"-cmd",     "kur",       "-cert",   pem,
                         "-key",     key,         "-newkey", new_key(nk, "t11-k"),
                         "-subject", "/CN=other", NULL};
    run_cmp(&r, kur);
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "a kur signed by a certificate may only request");
    rsp_free(&r);
    cr_by(&r, pem, key, "/CN=t11-dev", "t11-b");
    X509_free(expect_issued(&r, CMP_BODY_CP));
    rsp_free(&r);
    g.ca.policy.subject_from_request = true;
    cr_by(&r, pem, key, "/CN=someone-else", "t11-c");
    X509_free(expect_issued(&r, CMP_BODY_CP));
    rsp_free(&r);
    g.ca.policy.subject_from_request = false;
    X509_free(x);
}

static void mac_ir(rsp *out, const char *ref, const char *subject, const char *key_name)
{
    char key[320];
    new_key(key, key_name);
    const char *args[] = {"-cmd",    "ir", "-ref",     ref,     "-secret",           "pass:" SECRET,
                          "-newkey", key,  "-subject", subject, "-implicit_confirm", NULL};
    run_cmp(out, args);
}

static void test_trust_secret_subject_pattern(void)
{
    rsp r;
    mac_ir(&r, "line-9", "/CN=l9-0001", "t12-a");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    mac_ir(&r, "line-9", "/CN=l8-0001", "t12-b");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED,
                   "the subject CN=l8-0001 does not match this secret's subject_pattern CN=l9-*");
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    mac_ir(&r, "line-9", "/O=Evil/CN=l9-0002", "t12-c");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the subject CN=l9-0002,O=Evil does not match");
    rsp_free(&r);
    // Other secrets are not limited.
    mac_ir(&r, SECRET_REF, "/CN=l8-0001", "t12-d");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
}

static void test_trust_secret_limits(void)
{
    rsp r;
    for (int i = 0; i < 2; i++) {
        char subject[32], name[32];
        (void)snprintf(subject, sizeof(subject), "/CN=batch-%d", i);
        (void)snprintf(name, sizeof(name), "t13-%d", i);
        mac_ir(&r, "batch-2", subject, name);
        X509_free(expect_issued(&r, CMP_BODY_IP));
        rsp_free(&r);
    }
    mac_ir(&r, "batch-2", "/CN=batch-3", "t13-3");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED,
                   "the secret of senderKID batch-2 has enrolled all the certificates it may (2");
    rsp_free(&r);
    mac_ir(&r, "one-time", "/CN=once-1", "t13-o1");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    mac_ir(&r, "one-time", "/CN=once-2", "t13-o2");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED, "the secret of senderKID one-time has enrolled");
    rsp_free(&r);
}

// reprotect_keyed re-protects |der| with HMAC-SHA256 under the shared key |key| (a key-based MAC,
// RFC 9481 §6.2: openssl cmp 3.0 makes none).
static uint8_t *reprotect_keyed(size_t *out_len, const uint8_t *der, size_t len, cm_span key)
{
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&a, &m, cm_span_make(der, len), NULL));
    cmp_mac_key mk;
    TEST_ASSERT_OK(cmp_mac_key_new_keyed(g.prot, &mk, key, CRMF_ALG_HMAC_SHA256));
    der_builder ab, b;
    der_builder_init(&ab, 256);
    cmp_mac_key_put_alg(&ab, &mk);
    cmp_header_fields h = m.header.f;
    TEST_ASSERT_OK(der_builder_finish(&ab, &h.protection_alg));
    der_builder_init(&b, 4096);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &m.body);
    uint8_t mac[64];
    size_t mac_len = 0;
    TEST_ASSERT_OK(cmp_mac_compute(g.prot, mac, sizeof(mac), &mac_len, &mk,
                                   cmp_msg_writer_protected_part(&w)));
    const cm_span prot = cm_span_make(mac, mac_len);
    cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    uint8_t *out;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    der_builder_cleanup(&ab);
    cmp_mac_key_cleanse(&mk);
    cm_arena_cleanup(&a);
    return out;
}

// key_mac_ir runs an ir for a fresh key and |subject| from the key-based MAC client key-once.
static void key_mac_ir(rsp *out, const char *subject, const char *key_name)
{
    char key[320];
    new_key(key, key_name);
    const char *args[] = {
        "-cmd",    "ir", "-ref",     "key-once", "-secret",           "pass:" SECRET,
        "-newkey", key,  "-subject", subject,    "-implicit_confirm", NULL};
    size_t len, len2;
    uint8_t *m = make_request(&len, args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    uint8_t *v = reprotect_keyed(&len2, m, len, cm_span_make(k_mac_key, sizeof(k_mac_key)));
    process(out, v, len2);
    free(v);
    free(m);
}

// The per-secret limits hold for a key.REF (key-based MAC) as for a secret.REF password:
// subject_pattern, then max_certs (here 1, as once.REF makes it).
static void test_trust_key_mac_secret_limits(void)
{
    rsp r;
    key_mac_ir(&r, "/CN=other", "t13k-a");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED,
                   "the subject CN=other does not match this secret's subject_pattern CN=k-*");
    rsp_free(&r);
    key_mac_ir(&r, "/CN=k-1", "t13k-b");
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    key_mac_ir(&r, "/CN=k-2", "t13k-c");
    expect_refused(&r, CMP_FAIL_NOT_AUTHORIZED,
                   "the secret of senderKID key-once has enrolled all the certificates it may (1");
    rsp_free(&r);
}

// set_cert_profile adds generalInfo certProfile (id-it 21: SEQUENCE OF UTF8String) with the
// NUL-separated names of |ctx| (ends with an empty name).
static der_builder g_cp_builder; // set_cert_profile's value, until the next call
static void set_cert_profile(cmp_header_fields *h, void *ctx)
{
    der_builder *bp = &g_cp_builder;
    static cmp_itav itav;
    static uint8_t tid[16];
    CU_ASSERT_FATAL(RAND_bytes(tid, sizeof(tid)) == 1); // each case its own transaction
    h->transaction_id = (cmp_opt_span){true, cm_span_make(tid, sizeof(tid))};
    der_builder_cleanup(bp);
    der_builder_init(bp, 128);
    der_mark seq;
    der_open(bp, &seq, DER_TAG_SEQUENCE);
    for (const char *n = ctx; *n != '\0'; n += strlen(n) + 1) {
        der_put_tlv(bp, DER_TAG_UTF8_STRING, cm_span_make(n, strlen(n)));
    }
    der_close(bp, &seq);
    cm_span v;
    TEST_ASSERT_OK(der_builder_finish(bp, &v));
    itav = (cmp_itav){.oid = CM_SPAN_LIT(DER_OID_IT_CERT_PROFILE), .value = v};
    h->general_info = &itav;
    h->num_general_info = 1;
}

static void test_trust_cert_profile_selects_the_profile(void)
{
    char key[320];
    const char *args[] = {"-cmd",     "ir",           "-ref",    SECRET_REF,
                          "-secret",  "pass:" SECRET, "-newkey", new_key(key, "t14"),
                          "-subject", "/CN=t14",      NULL};
    size_t len, len2;
    uint8_t *m = make_request(&len, args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const struct {
        const char names[32];
        int days; // 0: refused
        const char *why;
    } k_cases[] = {
        {"gateways\0", 30, NULL},
        {"devices\0", 365, NULL},
        {"nope\0", 0,
         "certProfile 'nope' is not a profile this CA offers (offered: devices, "
         "gateways, rsa-only)"},
        {"gateways\0devices\0", 0, "certProfile must name one profile (one per request), not 2"},
    };
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        char names[32];
        memcpy(names, k_cases[i].names, sizeof(names));
        uint8_t *v = reprotect(&len2, m, len, set_cert_profile, names, SECRET, NULL);
        rsp r;
        process(&r, v, len2);
        if (k_cases[i].days == 0) {
            expect_refused(&r, CMP_FAIL_BAD_REQUEST, k_cases[i].why);
        } else {
            X509 *x = expect_issued(&r, CMP_BODY_IP);
            int days = 0, secs = 0;
            CU_ASSERT_EQUAL(
                ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
            CU_ASSERT_EQUAL(days, k_cases[i].days);
            X509_free(x);
            g.ca.policy.allow_key_reuse = true; // the same key once more for the next case
        }
        rsp_free(&r);
        free(v);
    }
    g.ca.policy.allow_key_reuse = false;
    free(m);
    der_builder_cleanup(&g_cp_builder);
}

// certProfile's profile is the one C's content rules use: the key check before the POPO
// (srv_enrol_check: ca_profile_check_key) and the grantedWithMods text.
static void test_trust_cert_profile_decides_the_content_rules(void)
{
    char rsa[320], ec[320];
    test_path(rsa, sizeof(rsa), g.dir, "t14-rsa.key");
    CU_ASSERT_FATAL(test_pki_make_key(rsa, TEST_PKI_RSA_2048, g.log));
    // An RSA key under rsa-only: issued, although the CA's own profile (devices) takes no RSA;
    // the request asks for 365 days and gets rsa-only's 30, saying so.
    const char *args[] = {"-cmd",         "ir",      "-ref", SECRET_REF, "-secret",
                          "pass:" SECRET, "-newkey", rsa,    "-subject", "/CN=t14r",
                          "-days",        "365",     NULL};
    size_t len, len2;
    uint8_t *m = make_request(&len, args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    char names[32] = "rsa-only\0";
    uint8_t *v = reprotect(&len2, m, len, set_cert_profile, names, SECRET, NULL);
    rsp r;
    process(&r, v, len2);
    CU_ASSERT_EQUAL_FATAL(r.msg.body.type, CMP_BODY_IP);
    CU_ASSERT_EQUAL_FATAL(r.msg.body.u.rep.num_responses, 1);
    const cmp_status_info *st = &r.msg.body.u.rep.responses[0].status;
    CU_ASSERT_EQUAL(st->status, CMP_STATUS_GRANTED_WITH_MODS);
    CU_ASSERT_TRUE(r.msg.body.u.rep.responses[0].cert.len > 0);
    der_reader rd, seq;
    cm_span text = cm_span_make(NULL, 0);
    der_reader_init(&rd, st->status_string);
    CU_ASSERT_TRUE(cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) &&
                   cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &text)));
    static const char k_mods[] = "(profile rsa-only grants at most 30 days)";
    CU_ASSERT_PTR_NOT_NULL(memmem(text.p, text.len, k_mods, strlen(k_mods)));
    rsp_free(&r);
    free(v);
    free(m);
    // An EC key under rsa-only: refused by rsa-only's key rule, before anything else.
    const char *args2[] = {"-cmd",     "ir",           "-ref",    SECRET_REF,
                           "-secret",  "pass:" SECRET, "-newkey", new_key(ec, "t14e"),
                           "-subject", "/CN=t14e",     NULL};
    m = make_request(&len, args2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    v = reprotect(&len2, m, len, set_cert_profile, names, SECRET, NULL);
    process(&r, v, len2);
    expect_refused(&r, CMP_FAIL_BAD_CERT_TEMPLATE,
                   "key type P-256 not allowed by profile rsa-only");
    rsp_free(&r);
    free(v);
    free(m);
    der_builder_cleanup(&g_cp_builder);
}

// --- 12: an HSM job that cannot be queued ------------------------------------------------------

static void test_trust_hsm_refusal_is_answered_with_the_mac(void)
{
    // The CA's keys opened on a second handle of the token: this pool refuses their jobs at
    // submission, as a full queue or a stopped pool does.
    char uri[512];
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=ca?module-path=%s&pin-value=%s",
                   g.token.label, g.token.module, g.token.user_pin);
    hsm_error err;
    hsm_token *t2 = NULL;
    hsm_key *k2 = NULL;
    TEST_ASSERT_OK(hsm_token_open(&t2, &err, uri));
    TEST_ASSERT_OK(hsm_key_find(t2, &k2, &err, uri));
    srv_ca ca = g.ca;
    ca.ca_key = k2;
    ca.cmp_key = k2;
    ca.sign_mac_responses = true; // every answer would be signed
    // An enrolment: its certificate cannot be signed; the answer carries the request's MAC, and
    // the reservation was given back (the same request succeeds once the HSM can sign).
    char key[320];
    const char *args[] = {"-cmd",     "ir",           "-ref",    SECRET_REF,
                          "-secret",  "pass:" SECRET, "-newkey", new_key(key, "t15"),
                          "-subject", "/CN=t15",      NULL};
    size_t len;
    uint8_t *m = make_request(&len, args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    rsp r;
    process_with(&r, g.worker, &ca, m, len);
    CU_ASSERT_EQUAL(fail_bit_of(&r), CMP_FAIL_SYSTEM_FAILURE);
    CU_ASSERT_TRUE(validates_with_secret(&r, SECRET));
    rsp_free(&r);
    process(&r, m, len);
    X509_free(expect_issued(&r, CMP_BODY_IP));
    rsp_free(&r);
    free(m);
    hsm_key_free(k2);
    hsm_token_free(t2);
}

int test_srv_trust_register(void);
int test_srv_trust_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_trust_revoked_signer_is_refused_for_every_body),
        TEST_CASE(test_trust_held_unconfirmed_and_unknown_signers),
        TEST_CASE(test_trust_kur_supersedes_the_old_certificate),
        TEST_CASE(test_trust_key_reuse_is_refused),
        TEST_CASE(test_trust_pvno_other_than_2_or_3_is_unsupported),
        TEST_CASE(test_trust_ra_certificates_are_checked),
        TEST_CASE(test_trust_sender_kid_and_sender),
        TEST_CASE(test_trust_error_from_client_gets_pkiconf),
        TEST_CASE(test_trust_certificate_signed_requests_keep_their_subject),
        TEST_CASE(test_trust_secret_subject_pattern),
        TEST_CASE(test_trust_secret_limits),
        TEST_CASE(test_trust_key_mac_secret_limits),
        TEST_CASE(test_trust_cert_profile_selects_the_profile),
        TEST_CASE(test_trust_cert_profile_decides_the_content_rules),
        TEST_CASE(test_trust_hsm_refusal_is_answered_with_the_mac),
    };
    return test_register_suite("srv_trust", trust_suite_init, trust_suite_cleanup, NULL, NULL,
                               tests, TEST_NUM_CASES(tests));
}
