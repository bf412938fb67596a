// Suite "ca": profiles, the policy check, serials, the TBSCertificate builder, trust stores
// and CRLs. Certificates are built by engine/ca, signed here with an in-memory OpenSSL key
// (EVP_DigestSign over the TBS, standing in for the HSM) and checked with OpenSSL: X509_verify,
// X509_get_ext_d2i, X509_CRL_verify and the openssl CLI (`openssl verify`, with -crl_check).
// CA certificates and the key chain are made with the openssl CLI at suite init.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/ca/ca.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

static char g_dir[256];
static char g_log[320];
static ca_authority *g_ca;  // the issuing CA (30 days)
static EVP_PKEY *g_ca_key;  // its private key
static ca_authority *g_int; // an intermediate under g_root (for chains)
static EVP_PKEY *g_int_key; // its private key
static ca_profile *g_profile;
static CONF *g_conf;

// ecdsa-with-SHA256, no parameters (RFC 5758 §3.2)
static const uint8_t k_ecdsa_sha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                         0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
#define SIG_ALG cm_span_make(k_ecdsa_sha256, sizeof(k_ecdsa_sha256))

static const char k_conf[] = "[ext]\n"
                             "basicConstraints = critical, CA:FALSE\n"
                             "keyUsage = critical, digitalSignature, keyAgreement\n"
                             "extendedKeyUsage = clientAuth, serverAuth\n"
                             "certificatePolicies = 1.3.6.1.4.1.99999.1.1\n"
                             "crlDistributionPoints = URI:http://ca.example/crl/devices.crl\n"
                             "authorityInfoAccess = caIssuers;URI:http://ca.example/ca.crt\n"
                             "[bad_value]\n"
                             "keyUsage = critical, digitalSignatur\n"
                             "[with_ski]\n"
                             "subjectKeyIdentifier = hash\n"
                             "[key_agreement_only]\n"
                             "keyUsage = critical, keyAgreement\n"
                             "[twice]\n"
                             "keyUsage = digitalSignature\n"
                             "2.5.29.15 = DER:03020780\n"
                             "[sub_ca]\n"
                             "basicConstraints = critical, CA:TRUE, pathlen:0\n"
                             "keyUsage = critical, keyCertSign, cRLSign\n";

static const char *g_required[] = {"CN"};
static const char *g_allowed[] = {"O", "C", "serialNumber"};

static ca_profile_params base_params(void)
{
    ca_profile_params p;
    memset(&p, 0, sizeof(p));
    p.name = "devices";
    p.default_days = 10;
    p.max_days = 365;
    p.key_types = CA_KEY_EC_P256 | CA_KEY_EC_P384 | CA_KEY_RSA | CA_KEY_ED25519;
    p.rsa_min_bits = 2048;
    p.rsa_max_bits = 4096;
    p.subject_mode = CA_SUBJECT_RULES;
    p.required_rdns = g_required;
    p.num_required_rdns = 1;
    p.allowed_rdns = g_allowed;
    p.num_allowed_rdns = 3;
    p.san_types = CA_SAN_DNS | CA_SAN_IP | CA_SAN_URI;
    p.implicit_confirm = true;
    return p;
}

static const char *path_of(char *out, size_t cap, const char *name)
{
    return test_path(out, cap, g_dir, name);
}

static EVP_PKEY *read_key(const char *name)
{
    char p[320];
    BIO *b = BIO_new_file(path_of(p, sizeof(p), name), "r");
    EVP_PKEY *k = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return k;
}

static int ca_suite_init(void)
{
    if (!test_tmpdir(g_dir, sizeof(g_dir), "ca")) {
        return 1;
    }
    path_of(g_log, sizeof(g_log), "openssl.log");
    char key[320], cert[320], root_key[320], root[320], int_key[320], int_pem[320];
    char ext[320], plain[320], plain_key[320];
    path_of(key, sizeof(key), "ca.key");
    path_of(cert, sizeof(cert), "ca.pem");
    path_of(root_key, sizeof(root_key), "root.key");
    path_of(root, sizeof(root), "root.pem");
    path_of(int_key, sizeof(int_key), "int.key");
    path_of(int_pem, sizeof(int_pem), "int.pem");
    path_of(ext, sizeof(ext), "ext.cnf");
    path_of(plain, sizeof(plain), "plain.pem");
    path_of(plain_key, sizeof(plain_key), "plain.key");
    const char ext_text[] = "[v3_int]\nbasicConstraints=critical,CA:TRUE\n"
                            "keyUsage=critical,keyCertSign,cRLSign\n"
                            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                            "[v3_leaf]\nbasicConstraints=critical,CA:FALSE\n";
    if (!test_write_file(ext, ext_text, sizeof(ext_text) - 1)) {
        return 1;
    }
    const test_pki_cert_spec ca_spec = {.subject = "/C=DE/O=certmint test/CN=Issuing CA",
                                        .days = 30};
    const test_pki_cert_spec root_spec = {.subject = "/O=Vendor/CN=Vendor Root", .days = 60};
    const test_pki_cert_spec int_spec = {.subject = "/O=Vendor/CN=Vendor Factory CA",
                                         .days = 40,
                                         .serial = "2",
                                         .ext_file = ext,
                                         .ext_section = "v3_int"};
    // A certificate that is not a CA (for ca_authority_load's refusal).
    const test_pki_cert_spec plain_spec = {
        .subject = "/CN=not a CA", .days = 5, .ext_file = ext, .ext_section = "v3_leaf"};
    if (!test_pki_make_ca(key, cert, &ca_spec, g_log) ||
        !test_pki_make_ca(root_key, root, &root_spec, g_log) ||
        !test_pki_issue(int_key, int_pem, root_key, root, &int_spec, g_log) ||
        !test_pki_make_ca(plain_key, plain, &plain_spec, g_log)) {
        return 1;
    }
    char err[256];
    if (!cm_ok(ca_authority_load(&g_ca, err, sizeof(err), cert, NULL)) ||
        !cm_ok(ca_authority_load(&g_int, err, sizeof(err), int_pem, root))) {
        fprintf(stderr, "ca_authority_load: %s\n", err);
        return 1;
    }
    g_ca_key = read_key("ca.key");
    g_int_key = read_key("int.key");
    BIO *b = BIO_new_mem_buf(k_conf, (int)sizeof(k_conf) - 1);
    g_conf = NCONF_new(NULL);
    long line = 0;
    if (g_ca_key == NULL || g_int_key == NULL || b == NULL || g_conf == NULL ||
        NCONF_load_bio(g_conf, b, &line) != 1) {
        BIO_free(b);
        return 1;
    }
    BIO_free(b);
    const ca_profile_params p = base_params();
    if (!cm_ok(ca_profile_new(&g_profile, err, sizeof(err), &p, g_conf, "ext"))) {
        fprintf(stderr, "ca_profile_new: %s\n", err);
        return 1;
    }
    return 0;
}

static int ca_suite_cleanup(void)
{
    ca_profile_free(g_profile);
    ca_authority_free(g_ca);
    ca_authority_free(g_int);
    EVP_PKEY_free(g_ca_key);
    EVP_PKEY_free(g_int_key);
    NCONF_free(g_conf);
    (void)test_rmtree(g_dir);
    return 0;
}

// --- request helpers ------------------------------------------------------------------------

// test_req owns the DER of a request's parts.
typedef struct test_req {
    uint8_t *subject;
    size_t subject_len;
    uint8_t *spki;
    size_t spki_len;
    EVP_PKEY *key;
    X509_EXTENSION *san;
    ca_ext exts[4];
    ca_request req;
} test_req;

static EVP_PKEY *make_key(const char *kind)
{
    if (strcmp(kind, "P-256") == 0 || strcmp(kind, "P-384") == 0 || strcmp(kind, "P-521") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", kind);
    }
    if (strcmp(kind, "RSA-2048") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    }
    if (strcmp(kind, "RSA-1024") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    }
    return EVP_PKEY_Q_keygen(NULL, NULL, kind);
}

// req_make builds a request for a new |kind| key with subject |subj| ("/CN=x/O=y", "" for an
// empty one) and, when |san| is non-NULL, a subjectAltName in OpenSSL's syntax.
static void req_make(test_req *t, const char *kind, const char *subj, const char *san)
{
    memset(t, 0, sizeof(*t));
    t->key = make_key(kind);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->key);
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(t->key, &der);
    CU_ASSERT_FATAL(len > 0);
    t->spki = der;
    t->spki_len = (size_t)len;
    X509_NAME *n = X509_NAME_new();
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", subj);
    for (char *save = NULL, *tok = strtok_r(buf, "/", &save); tok != NULL;
         tok = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(tok, '=');
        CU_ASSERT_PTR_NOT_NULL_FATAL(eq);
        *eq = '\0';
        CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(n, tok, MBSTRING_UTF8,
                                                   (const unsigned char *)eq + 1, -1, -1, 0) == 1);
    }
    der = NULL;
    len = i2d_X509_NAME(n, &der);
    X509_NAME_free(n);
    CU_ASSERT_FATAL(len > 0);
    t->subject = der;
    t->subject_len = (size_t)len;
    t->req.subject = cm_span_make(t->subject, t->subject_len);
    t->req.spki = cm_span_make(t->spki, t->spki_len);
    t->req.exts = t->exts;
    if (san != NULL) {
        t->san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t->san);
        const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(t->san);
        t->exts[0].oid = CM_SPAN_LIT(DER_OID_CE_SUBJECT_ALT_NAME);
        t->exts[0].value = cm_span_make(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
        t->req.num_exts = 1;
    }
}

static void req_free(test_req *t)
{
    OPENSSL_free(t->subject);
    OPENSSL_free(t->spki);
    EVP_PKEY_free(t->key);
    X509_EXTENSION_free(t->san);
}

// sign_tbs signs |tbs| with |key| (SHA-256) and assembles the signed object into |out|.
static void sign_and_assemble(der_builder *out, EVP_PKEY *key, cm_span tbs)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    size_t sig_len = 0;
    CU_ASSERT_FATAL(m != NULL && EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, key) == 1);
    CU_ASSERT_FATAL(EVP_DigestSign(m, NULL, &sig_len, tbs.p, tbs.len) == 1);
    uint8_t *sig = malloc(sig_len);
    CU_ASSERT_FATAL(sig != NULL && EVP_DigestSign(m, sig, &sig_len, tbs.p, tbs.len) == 1);
    EVP_MD_CTX_free(m);
    TEST_ASSERT_OK(ca_signed_assemble(out, tbs, SIG_ALG, cm_span_make(sig, sig_len)));
    free(sig);
}

// issue runs the policy check and builds and signs a certificate; returns it parsed.
static X509 *issue_by(const ca_authority *ca, EVP_PKEY *ca_key, const ca_profile *profile,
                      const test_req *t, int64_t now, ca_decision *out_d, uint8_t *out_serial)
{
    ca_decision d;
    TEST_ASSERT_OK(ca_policy_check(profile, ca, &d, &t->req, now, NULL));
    uint8_t serial[CA_SERIAL_LEN];
    TEST_ASSERT_OK(ca_serial_new(serial));
    der_builder tb, cb;
    der_builder_init(&tb, 0);
    der_builder_init(&cb, 0);
    TEST_ASSERT_OK(
        ca_tbs_build(ca, &tb, profile, &d, &t->req, cm_span_make(serial, sizeof(serial)), SIG_ALG));
    cm_span tbs, cert;
    TEST_ASSERT_OK(der_builder_finish(&tb, &tbs));
    sign_and_assemble(&cb, ca_key, tbs);
    TEST_ASSERT_OK(der_builder_finish(&cb, &cert));
    const unsigned char *p = cert.p;
    X509 *x = d2i_X509(NULL, &p, (long)cert.len);
    CU_ASSERT_PTR_NOT_NULL(x);
    CU_ASSERT_PTR_EQUAL(p, cert.p + cert.len);
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    if (out_d != NULL) {
        *out_d = d;
    }
    if (out_serial != NULL) {
        memcpy(out_serial, serial, sizeof(serial));
    }
    return x;
}

static X509 *issue(const test_req *t, ca_decision *out_d)
{
    return issue_by(g_ca, g_ca_key, g_profile, t, cm_time_now(), out_d, NULL);
}

static bool write_pem(const char *name, X509 *x)
{
    char p[320];
    BIO *b = BIO_new_file(path_of(p, sizeof(p), name), "w");
    const bool ok = b != NULL && PEM_write_bio_X509(b, x) == 1;
    BIO_free(b);
    return ok;
}

static X509 *load_pem(const char *name)
{
    char p[320];
    BIO *b = BIO_new_file(path_of(p, sizeof(p), name), "r");
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

// openssl_verify runs `openssl verify -CAfile ca.pem [extra...] leaf` and returns its status.
static int openssl_verify(const char *leaf, const char *crl)
{
    char ca[320], lp[320], cp[320];
    path_of(ca, sizeof(ca), "ca.pem");
    path_of(lp, sizeof(lp), leaf);
    if (crl != NULL) {
        path_of(cp, sizeof(cp), crl);
        const char *argv[] = {"openssl",  "verify", "-crl_check", "-CAfile", ca,
                              "-CRLfile", cp,       lp,           NULL};
        return test_run(argv, g_log);
    }
    const char *argv[] = {"openssl", "verify", "-CAfile", ca, lp, NULL};
    return test_run(argv, g_log);
}

// check_common checks what every certificate from g_profile must carry.
static void check_common(X509 *x, const test_req *t)
{
    X509 *ca = load_pem("ca.pem");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    EVP_PKEY *ca_pub = X509_get0_pubkey(ca);
    CU_ASSERT_EQUAL(X509_verify(x, ca_pub), 1);
    CU_ASSERT_EQUAL(X509_get_version(x), 2);
    CU_ASSERT_EQUAL(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(ca)), 0);

    // Subject and key exactly as requested.
    unsigned char *der = NULL;
    int len = i2d_X509_NAME(X509_get_subject_name(x), &der);
    CU_ASSERT_TRUE(len == (int)t->subject_len && memcmp(der, t->subject, t->subject_len) == 0);
    OPENSSL_free(der);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(x), t->key), 1);

    // Serial positive, 16 octets at most.
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    CU_ASSERT_NOT_EQUAL(ASN1_STRING_type(sn), V_ASN1_NEG_INTEGER);
    CU_ASSERT_TRUE(ASN1_STRING_length(sn) >= 1 && ASN1_STRING_length(sn) <= 16);

    // The profile's extensions.
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ku);
    CU_ASSERT_EQUAL(ASN1_BIT_STRING_get_bit(ku, 0), 1); // digitalSignature
    CU_ASSERT_EQUAL(ASN1_BIT_STRING_get_bit(ku, 4), 1); // keyAgreement
    CU_ASSERT_EQUAL(ASN1_BIT_STRING_get_bit(ku, 5), 0); // keyCertSign
    ASN1_BIT_STRING_free(ku);
    CU_ASSERT_TRUE(
        X509_EXTENSION_get_critical(X509_get_ext(x, X509_get_ext_by_NID(x, NID_key_usage, -1))));
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(eku);
    CU_ASSERT_EQUAL(sk_ASN1_OBJECT_num(eku), 2);
    CU_ASSERT_EQUAL(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_client_auth);
    CU_ASSERT_EQUAL(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 1)), NID_server_auth);
    EXTENDED_KEY_USAGE_free(eku);
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
    CU_ASSERT_FALSE(bc->ca);
    BASIC_CONSTRAINTS_free(bc);
    CERTIFICATEPOLICIES *pol = X509_get_ext_d2i(x, NID_certificate_policies, NULL, NULL);
    CU_ASSERT_TRUE(pol != NULL && sk_POLICYINFO_num(pol) == 1);
    CERTIFICATEPOLICIES_free(pol);
    CRL_DIST_POINTS *dp = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    CU_ASSERT_TRUE(dp != NULL && sk_DIST_POINT_num(dp) == 1);
    CRL_DIST_POINTS_free(dp);
    AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
    CU_ASSERT_TRUE(aia != NULL && sk_ACCESS_DESCRIPTION_num(aia) == 1);
    AUTHORITY_INFO_ACCESS_free(aia);

    // SKI = SHA-1 of the key bits; AKI = the CA's SKI.
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    unsigned char md[20];
    unsigned int md_len = 0;
    const ASN1_BIT_STRING *kb = X509_get0_pubkey_bitstr(x);
    CU_ASSERT_FATAL(EVP_Digest(ASN1_STRING_get0_data(kb), (size_t)ASN1_STRING_length(kb), md,
                               &md_len, EVP_sha1(), NULL) == 1);
    CU_ASSERT_TRUE(ski != NULL && ASN1_STRING_length(ski) == 20 &&
                   memcmp(ASN1_STRING_get0_data(ski), md, 20) == 0);
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
    const ASN1_OCTET_STRING *ca_ski = X509_get0_subject_key_id(ca);
    CU_ASSERT_TRUE(aki != NULL && ca_ski != NULL && ASN1_STRING_cmp(aki, ca_ski) == 0);
    // Exactly 6 profile extensions + SKI + AKI (+ SAN).
    CU_ASSERT_EQUAL(X509_get_ext_count(x), 8 + (t->san != NULL ? 1 : 0));
    X509_free(ca);
}

// check_sans compares the certificate's SANs with what OpenSSL encoded for the request.
static void check_sans(X509 *x, const test_req *t)
{
    GENERAL_NAMES *got = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    GENERAL_NAMES *want = X509V3_EXT_d2i(t->san);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    CU_ASSERT_EQUAL_FATAL(sk_GENERAL_NAME_num(got), sk_GENERAL_NAME_num(want));
    for (int i = 0; i < sk_GENERAL_NAME_num(got); i++) {
        CU_ASSERT_EQUAL(
            GENERAL_NAME_cmp(sk_GENERAL_NAME_value(got, i), sk_GENERAL_NAME_value(want, i)), 0);
    }
    GENERAL_NAMES_free(got);
    GENERAL_NAMES_free(want);
}

// --- issuance -------------------------------------------------------------------------------

static void issue_and_check(const char *kind, const char *leaf_name)
{
    test_req t;
    req_make(&t, kind, "/C=DE/O=Example Devices/CN=device-0001",
             "DNS:device-0001.example.com,IP:10.1.2.3,URI:urn:dev:0001");
    X509 *x = issue(&t, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    check_common(x, &t);
    check_sans(x, &t);
    CU_ASSERT_TRUE(write_pem(leaf_name, x));
    CU_ASSERT_EQUAL(openssl_verify(leaf_name, NULL), 0);
    X509_free(x);
    req_free(&t);
}

static void test_ca_issues_ec_p256(void)
{
    issue_and_check("P-256", "leaf-p256.pem");
}

static void test_ca_issues_rsa_2048(void)
{
    issue_and_check("RSA-2048", "leaf-rsa.pem");
}

static void test_ca_issues_ed25519(void)
{
    issue_and_check("ED25519", "leaf-ed25519.pem");
}

static void test_ca_issues_without_san(void)
{
    test_req t;
    req_make(&t, "P-256", "/CN=no-san", NULL);
    X509 *x = issue(&t, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    check_common(x, &t);
    CU_ASSERT_EQUAL(X509_get_ext_by_NID(x, NID_subject_alt_name, -1), -1);
    X509_free(x);
    req_free(&t);
}

static void test_ca_empty_subject_gets_critical_san(void)
{
    test_req t;
    req_make(&t, "P-256", "", "DNS:only-san.example");
    ca_profile *copy;
    ca_profile_params p = base_params();
    p.subject_mode = CA_SUBJECT_COPY;
    char err[256];
    TEST_ASSERT_OK(ca_profile_new(&copy, err, sizeof(err), &p, g_conf, "ext"));
    X509 *x = issue_by(g_ca, g_ca_key, copy, &t, cm_time_now(), NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    const int i = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
    CU_ASSERT_TRUE(i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, i)) == 1);
    CU_ASSERT_EQUAL(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
    check_common(x, &t);
    X509_free(x);
    // With the rules profile, CN is required.
    ca_decision d;
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SUBJECT_MISSING);
    // And without a SAN an empty subject is refused.
    t.req.num_exts = 0;
    TEST_ASSERT_CODE(ca_policy_check(copy, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SUBJECT_EMPTY);
    ca_profile_free(copy);
    req_free(&t);
}

static int cmp_serial(const void *a, const void *b)
{
    return memcmp(a, b, CA_SERIAL_LEN);
}

static void test_ca_serials_sort_by_time_with_64_random_bits(void)
{
    // The prefix: 0x40 and the microseconds, big-endian, so later serials sort after earlier
    // ones (memcmp order, as the store's index compares them).
    const uint64_t t0 = 1764720000123456ull; // 2025-12-03, in microseconds
    uint8_t a[CA_SERIAL_LEN], b[CA_SERIAL_LEN];
    for (uint64_t d = 1; d < (1ull << 40); d *= 37) {
        TEST_ASSERT_OK(ca_serial_new_at(a, t0));
        TEST_ASSERT_OK(ca_serial_new_at(b, t0 + d));
        CU_ASSERT(memcmp(a, b, CA_SERIAL_LEN) < 0);
    }
    CU_ASSERT_EQUAL(a[0], 0x40);
    uint64_t got = 0;
    for (size_t i = 1; i < CA_SERIAL_TIME_LEN; i++) {
        got = got << 8 | a[i];
    }
    CU_ASSERT_EQUAL(got, t0);
    // The same microsecond: the random half differs, and its 64 bits are all in use.
    enum { N = 2000 };
    uint8_t(*s)[CA_SERIAL_LEN] = malloc((size_t)N * CA_SERIAL_LEN);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint64_t set_or = 0, set_and = ~0ull;
    size_t ones = 0;
    for (size_t i = 0; i < N; i++) {
        TEST_ASSERT_OK(ca_serial_new_at(s[i], t0));
        CU_ASSERT_EQUAL(memcmp(s[i], a, CA_SERIAL_TIME_LEN), 0);
        uint64_t r = 0;
        for (size_t j = CA_SERIAL_TIME_LEN; j < CA_SERIAL_LEN; j++) {
            r = r << 8 | s[i][j];
        }
        set_or |= r;
        set_and &= r;
        ones += (size_t)__builtin_popcountll(r);
    }
    qsort(s, N, CA_SERIAL_LEN, cmp_serial);
    size_t dups = 0;
    for (size_t i = 1; i < N; i++) {
        dups += memcmp(s[i], s[i - 1], CA_SERIAL_LEN) == 0;
    }
    CU_ASSERT_EQUAL(dups, 0);
    CU_ASSERT_EQUAL(set_or, ~0ull); // every random bit was 1 in some serial ...
    CU_ASSERT_EQUAL(set_and, 0);    // ... and 0 in some other
    CU_ASSERT(ones > N * 64 * 45 / 100 && ones < N * 64 * 55 / 100);
    free(s);
    // ca_serial_new uses the wall clock.
    const uint64_t now = (uint64_t)cm_time_now() * 1000000u;
    TEST_ASSERT_OK(ca_serial_new(a));
    got = 0;
    for (size_t i = 1; i < CA_SERIAL_TIME_LEN; i++) {
        got = got << 8 | a[i];
    }
    CU_ASSERT(got + 2000000u >= now && got <= now + 2000000u);
}

static void test_ca_serials_unique_and_positive(void)
{
    enum { N = 10000 };
    uint8_t(*s)[CA_SERIAL_LEN] = malloc((size_t)N * CA_SERIAL_LEN);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (size_t i = 0; i < N; i++) {
        TEST_ASSERT_OK(ca_serial_new(s[i]));
        CU_ASSERT_EQUAL(s[i][0] & 0x80, 0);
    }
    qsort(s, N, CA_SERIAL_LEN, cmp_serial);
    size_t dups = 0, zeros = 0, high_bit_seen = 0;
    for (size_t i = 0; i < N; i++) {
        if (i > 0 && memcmp(s[i], s[i - 1], CA_SERIAL_LEN) == 0) {
            dups++;
        }
        uint8_t any = 0;
        for (size_t j = 0; j < CA_SERIAL_LEN; j++) {
            any |= s[i][j];
        }
        zeros += any == 0;
        high_bit_seen += (s[i][0] & 0x40) != 0;
    }
    CU_ASSERT_EQUAL(dups, 0);
    CU_ASSERT_EQUAL(zeros, 0);
    CU_ASSERT_TRUE(high_bit_seen > 0); // the remaining bits are used

    // Encoded as a minimal positive INTEGER, including when the first octet is 0.
    uint8_t buf[32];
    const uint8_t lead0[CA_SERIAL_LEN] = {0x00, 0x7f, 1};
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    der_put_uint_bytes(&b, cm_span_make(lead0, sizeof(lead0)));
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    CU_ASSERT_EQUAL(out.len, 2 + 15);
    CU_ASSERT_EQUAL(out.p[2], 0x7f);
    free(s);
}

// --- validity -------------------------------------------------------------------------------

static void test_ca_validity_rules(void)
{
    test_req t;
    req_make(&t, "P-256", "/CN=v", NULL);
    const int64_t now = cm_time_now(), day = 86400;
    ca_decision d;
    // Default.
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.not_before, now);
    CU_ASSERT_EQUAL(d.not_after, now + 10 * day);
    // A requested validity within the max is honoured.
    t.req.not_before = now + day;
    t.req.not_after = now + 5 * day;
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.not_before, now + day);
    CU_ASSERT_EQUAL(d.not_after, now + 5 * day);
    // A notBefore in the past starts now.
    t.req.not_before = now - 3 * day;
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.not_before, now);
    // Never beyond the CA's notAfter (the CA has 30 days, the max is 365).
    t.req.not_before = 0;
    t.req.not_after = now + 200 * day;
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.not_after, ca_authority_not_after(g_ca));
    X509 *x = issue_by(g_ca, g_ca_key, g_profile, &t, now, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    X509 *ca = load_pem("ca.pem");
    CU_ASSERT_EQUAL(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)), 0);
    X509_free(ca);
    X509_free(x);
    // Longer than the max is shortened to it (a profile with max 20 days).
    ca_profile *short_profile;
    ca_profile_params p = base_params();
    p.max_days = 20;
    char err[200];
    TEST_ASSERT_OK(ca_profile_new(&short_profile, err, sizeof(err), &p, NULL, NULL));
    TEST_ASSERT_OK(ca_policy_check(short_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.not_after, now + 20 * day);
    ca_profile_free(short_profile);
    // Inverted, already expired, or starting after the CA's end.
    t.req.not_before = now + 5 * day;
    t.req.not_after = now + 4 * day;
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL), CA_E_VALIDITY);
    t.req.not_before = 0;
    t.req.not_after = now - 1;
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL), CA_E_VALIDITY);
    t.req.not_before = ca_authority_not_after(g_ca) + day;
    t.req.not_after = 0;
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL), CA_E_VALIDITY);
    // The CA cannot issue outside its own validity.
    t.req.not_before = 0;
    TEST_ASSERT_CODE(
        ca_policy_check(g_profile, g_ca, &d, &t.req, ca_authority_not_after(g_ca) + 1, NULL),
        CA_E_CA_EXPIRED);
    TEST_ASSERT_CODE(
        ca_policy_check(g_profile, g_ca, &d, &t.req, ca_authority_not_before(g_ca) - 1, NULL),
        CA_E_CA_EXPIRED);
    req_free(&t);
}

// --- policy rejections ----------------------------------------------------------------------

static void expect_policy(const char *kind, const char *subj, const char *san, uint32_t code)
{
    test_req t;
    req_make(&t, kind, subj, san);
    ca_decision d;
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL), code);
    req_free(&t);
}

// expect_why checks that the request is refused with |code| and exactly the reason |text|.
static void expect_why(const char *kind, const char *subj, const char *san, uint32_t code,
                       const char *text)
{
    test_req t;
    req_make(&t, kind, subj, san);
    ca_decision d;
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), &why), code);
    if (strcmp(why.text, text) != 0) {
        fprintf(stderr, "\n  reason \"%s\"\n  wanted \"%s\"\n", why.text, text);
    }
    CU_ASSERT_STRING_EQUAL(why.text, text);
    req_free(&t);
}

static void test_ca_policy_reasons(void)
{
    expect_why("P-521", "/CN=a", NULL, CA_E_KEY_TYPE,
               "key type P-521 not allowed by profile devices (allowed: P-256, P-384, RSA, "
               "Ed25519)");
    expect_why("X25519", "/CN=a", NULL, CA_E_KEY_TYPE,
               "key type X25519 not allowed by profile devices (allowed: P-256, P-384, RSA, "
               "Ed25519)");
    expect_why("RSA-1024", "/CN=a", NULL, CA_E_KEY_SIZE,
               "RSA key of 1024 bits not allowed by profile devices (allowed: 2048 to 4096 bits)");
    expect_why("P-256", "/O=Example/C=DE", NULL, CA_E_SUBJECT_MISSING,
               "subject lacks CN, required by profile devices");
    expect_why("P-256", "/CN=a/OU=not allowed", NULL, CA_E_SUBJECT_RDN,
               "subject attribute OU not allowed by profile devices (allowed: CN, O, C, "
               "serialNumber)");
    expect_why("P-256", "/CN=a", "email:a@example.com", CA_E_SAN_TYPE,
               "profile devices does not allow subjectAltName type email (allowed: dns, ip, uri)");
    expect_why("P-256", "/CN=a", "DNS:ok.example,RID:1.2.3.4", CA_E_SAN_TYPE,
               "profile devices does not allow subjectAltName type registeredID (allowed: dns, "
               "ip, uri)");
    expect_why("P-256", "/CN=a", "DNS:ok.example,DNS:a..example", CA_E_SAN_MALFORMED,
               "subjectAltName entry 2 (type dns) is not a valid DNS name");
    expect_why("P-256", "/CN=a/O=b", "DNS:ok.example", CM_OK, "");

    // Extensions, validity and the CA's own validity.
    test_req t;
    req_make(&t, "P-256", "/CN=a", "DNS:a.example");
    ca_decision d;
    cm_why why;
    const uint8_t any[] = {0x05, 0x00};
    t.exts[1] = (ca_ext){CM_SPAN_LIT("\x55\x1d\x1e"), false, // nameConstraints
                         cm_span_make(any, sizeof(any))};
    t.req.num_exts = 2;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), &why),
                     CA_E_EXT_UNACCEPTED);
    CU_ASSERT_STRING_EQUAL(why.text, "profile devices does not accept the requested extension "
                                     "nameConstraints (2.5.29.30)");
    t.exts[1].oid = CM_SPAN_LIT("\x2b\x06\x01\x04\x01\x83\x8d\x1f\x63"); // 1.3.6.1.4.1.50847.99
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), &why),
                     CA_E_EXT_UNACCEPTED);
    CU_ASSERT_STRING_EQUAL(why.text, "profile devices does not accept the requested extension "
                                     "1.3.6.1.4.1.50847.99");
    t.req.num_exts = 1;
    const int64_t now = 1767225600; // 2026-01-01 00:00:00 UTC
    t.req.not_after = now - 1;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), &why),
                     CA_E_VALIDITY);
    CU_ASSERT_STRING_EQUAL(why.text,
                           "the requested notAfter 2025-12-31 23:59:59 UTC is not in the future");
    t.req.not_after = 0;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(
        ca_policy_check(g_profile, g_ca, &d, &t.req, ca_authority_not_after(g_ca) + 1, &why),
        CA_E_CA_EXPIRED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why.text, "the CA certificate is not valid now (valid from "));
    // An explanation already set is kept: the innermost one wins.
    cm_why_clear(&why);
    cm_why_set(&why, "set before");
    TEST_ASSERT_CODE(
        ca_policy_check(g_profile, g_ca, &d, &t.req, ca_authority_not_after(g_ca) + 1, &why),
        CA_E_CA_EXPIRED);
    CU_ASSERT_STRING_EQUAL(why.text, "set before");
    req_free(&t);
}

static void test_ca_rejects_key_types(void)
{
    expect_policy("P-521", "/CN=a", NULL, CA_E_KEY_TYPE);
    expect_policy("ED448", "/CN=a", NULL, CA_E_KEY_TYPE);
    expect_policy("RSA-1024", "/CN=a", NULL, CA_E_KEY_SIZE);
    // Allowed ones pass.
    expect_policy("P-384", "/CN=a", NULL, CM_OK);
    // Keys the module does not know (X25519 cannot sign; DSA is not supported).
    expect_policy("X25519", "/CN=a", NULL, CA_E_KEY_TYPE);
}

static void test_ca_spki_parse(void)
{
    const char *kinds[] = {"P-256", "P-384", "P-521", "RSA-2048", "ED25519", "ED448"};
    const uint32_t types[] = {CA_KEY_EC_P256, CA_KEY_EC_P384, CA_KEY_EC_P521,
                              CA_KEY_RSA,     CA_KEY_ED25519, CA_KEY_ED448};
    const uint32_t bits[] = {256, 384, 521, 2048, 256, 456};
    for (size_t i = 0; i < 6; i++) {
        EVP_PKEY *k = make_key(kinds[i]);
        unsigned char *der = NULL;
        const int len = i2d_PUBKEY(k, &der);
        CU_ASSERT_FATAL(len > 0);
        ca_key_info info;
        TEST_ASSERT_OK(ca_spki_parse(&info, cm_span_make(der, (size_t)len)));
        CU_ASSERT_EQUAL(info.type, types[i]);
        CU_ASSERT_EQUAL(info.bits, bits[i]);
        CU_ASSERT_EQUAL((int)EVP_PKEY_get_bits(k), (int)(types[i] == CA_KEY_ED448 ? 456 : bits[i]));
        // Every truncation is malformed, as is a trailing byte.
        for (size_t cut = 0; cut < (size_t)len; cut++) {
            TEST_ASSERT_CODE(ca_spki_parse(&info, cm_span_make(der, cut)), CA_E_SPKI_MALFORMED);
        }
        uint8_t *longer = malloc((size_t)len + 1);
        memcpy(longer, der, (size_t)len);
        longer[len] = 0;
        TEST_ASSERT_CODE(ca_spki_parse(&info, cm_span_make(longer, (size_t)len + 1)),
                         CA_E_SPKI_MALFORMED);
        free(longer);
        OPENSSL_free(der);
        EVP_PKEY_free(k);
    }
    // Ed25519 with a wrong key length, and with parameters.
    const uint8_t ed_short[] = {0x30, 0x0b, 0x30, 0x05, 0x06, 0x03, 0x2b,
                                0x65, 0x70, 0x03, 0x02, 0x00, 0x01};
    ca_key_info info;
    TEST_ASSERT_CODE(ca_spki_parse(&info, cm_span_make(ed_short, sizeof(ed_short))),
                     CA_E_SPKI_MALFORMED);
    // An EC key on an unknown curve (secp256k1 1.3.132.0.10).
    uint8_t k1[2 + 2 + 9 + 7 + 3 + 65] = {0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86,
                                          0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
                                          0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00, 0x04};
    TEST_ASSERT_CODE(ca_spki_parse(&info, cm_span_make(k1, 0x58)), CA_E_KEY_TYPE);
    // The same with a P-256 OID but a point of the wrong length.
    const uint8_t bad_point[] = {0x30, 0x1a, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
                                 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
                                 0x03, 0x01, 0x07, 0x03, 0x03, 0x00, 0x04, 0x01};
    TEST_ASSERT_CODE(ca_spki_parse(&info, cm_span_make(bad_point, sizeof(bad_point))),
                     CA_E_SPKI_MALFORMED);
}

static void test_ca_rejects_subjects(void)
{
    expect_policy("P-256", "/O=Example", NULL, CA_E_SUBJECT_MISSING);
    expect_policy("P-256", "/CN=a/OU=not allowed", NULL, CA_E_SUBJECT_RDN);
    expect_policy("P-256", "/CN=a/O=b/C=DE/serialNumber=42", NULL, CM_OK);
    // A malformed Name: an RDN SET that is empty, and a non-string value.
    test_req t;
    req_make(&t, "P-256", "/CN=a", NULL);
    ca_decision d;
    const uint8_t empty_set[] = {0x30, 0x02, 0x31, 0x00};
    t.req.subject = cm_span_make(empty_set, sizeof(empty_set));
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SUBJECT_MALFORMED);
    const uint8_t int_value[] = {0x30, 0x0a, 0x31, 0x08, 0x30, 0x06, 0x06,
                                 0x03, 0x55, 0x04, 0x03, 0x02, 0x01, 0x05};
    t.req.subject = cm_span_make(int_value, sizeof(int_value));
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SUBJECT_MALFORMED);
    const uint8_t bad_printable[] = {0x30, 0x0b, 0x31, 0x09, 0x30, 0x07, 0x06,
                                     0x03, 0x55, 0x04, 0x03, 0x13, 0x01, '*'};
    t.req.subject = cm_span_make(bad_printable, sizeof(bad_printable));
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SUBJECT_MALFORMED);
    req_free(&t);
}

static void test_ca_rejects_sans(void)
{
    expect_policy("P-256", "/CN=a", "email:a@example.com", CA_E_SAN_TYPE);
    expect_policy("P-256", "/CN=a", "RID:1.2.3.4", CA_E_SAN_TYPE);
    expect_policy("P-256", "/CN=a", "DNS:-bad-.example", CA_E_SAN_MALFORMED);
    expect_policy("P-256", "/CN=a", "DNS:a..example", CA_E_SAN_MALFORMED);
    expect_policy("P-256", "/CN=a", "DNS:*.example.com", CA_E_SAN_MALFORMED);
    expect_policy("P-256", "/CN=a", "URI:no-scheme", CA_E_SAN_MALFORMED);
    expect_policy("P-256", "/CN=a", "IP:::1,DNS:ok.example,URI:https://x.example/", CM_OK);
    // A GeneralNames that is empty or not a SEQUENCE.
    test_req t;
    req_make(&t, "P-256", "/CN=a", "DNS:a.example");
    ca_decision d;
    const uint8_t empty[] = {0x30, 0x00};
    t.exts[0].value = cm_span_make(empty, sizeof(empty));
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SAN_MALFORMED);
    const uint8_t dir_name[] = {0x30, 0x04, 0xa4, 0x02, 0x30, 0x00};
    t.exts[0].value = cm_span_make(dir_name, sizeof(dir_name));
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SAN_TYPE);
    const uint8_t ip5[] = {0x30, 0x07, 0x87, 0x05, 1, 2, 3, 4, 5};
    t.exts[0].value = cm_span_make(ip5, sizeof(ip5));
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_SAN_MALFORMED);
    req_free(&t);
}

// ext_value returns the extnValue content of |nid| = |value| (OpenSSL's v3 syntax) as a ca_ext;
// |*keep| must be freed with X509_EXTENSION_free.
static ca_ext ext_value(X509_EXTENSION **keep, int nid, const char *value, bool critical)
{
    *keep = X509V3_EXT_conf_nid(NULL, NULL, nid, value);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*keep);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(*keep);
    ca_ext e = {.critical = critical,
                .value = cm_span_make(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v))};
    const ASN1_OBJECT *o = X509_EXTENSION_get_object(*keep);
    e.oid = cm_span_make(OBJ_get0_data(o), OBJ_length(o));
    return e;
}

// cert_ku returns the keyUsage bits of |x| (bit i = 1 << i), 0 without one.
static uint32_t cert_ku(X509 *x)
{
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, NULL, NULL);
    uint32_t bits = 0;
    for (int i = 0; ku != NULL && i < 9; i++) {
        bits |= ASN1_BIT_STRING_get_bit(ku, i) ? 1u << i : 0;
    }
    ASN1_BIT_STRING_free(ku);
    return bits;
}

// cert_eku_count returns how many purposes |x|'s extendedKeyUsage has and whether |nid| is one.
static int cert_eku_count(X509 *x, int nid, bool *out_has)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    const int n = eku != NULL ? sk_ASN1_OBJECT_num(eku) : 0;
    *out_has = false;
    for (int i = 0; i < n; i++) {
        *out_has |= OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == nid;
    }
    EXTENDED_KEY_USAGE_free(eku);
    return n;
}

static void expect_refusal(const ca_profile *pr, test_req *t, uint32_t code, const char *text)
{
    ca_decision d;
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_policy_check(pr, g_ca, &d, &t->req, cm_time_now(), &why), code);
    if (text != NULL && strcmp(why.text, text) != 0) {
        fprintf(stderr, "\n  reason \"%s\"\n  wanted \"%s\"\n", why.text, text);
        CU_ASSERT_STRING_EQUAL(why.text, text);
    }
}

static void test_ca_requested_extensions(void)
{
    test_req t;
    req_make(&t, "P-256", "/CN=a", "DNS:a.example");
    X509_EXTENSION *keep = NULL;
    ca_decision d;
    // A keyUsage within the profile's (digitalSignature, keyAgreement) is honoured: the
    // certificate gets exactly the requested bits, critical as the profile writes it.
    t.exts[1] = ext_value(&keep, NID_key_usage, "digitalSignature", false);
    t.req.num_exts = 2;
    X509 *x = issue_by(g_ca, g_ca_key, g_profile, &t, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_DIGITAL_SIGNATURE);
    CU_ASSERT_TRUE(
        X509_EXTENSION_get_critical(X509_get_ext(x, X509_get_ext_by_NID(x, NID_key_usage, -1))));
    CU_ASSERT_EQUAL(d.mods, 0);
    X509_free(x);
    X509_EXTENSION_free(keep);
    // A bit beyond the profile's: refused, naming it and what is allowed.
    t.exts[1] = ext_value(&keep, NID_key_usage, "digitalSignature, keyCertSign", true);
    expect_refusal(g_profile, &t, CA_E_KEY_USAGE,
                   "keyUsage keyCertSign not allowed by profile devices (allowed: "
                   "digitalSignature, keyAgreement)");
    X509_EXTENSION_free(keep);
    // extendedKeyUsage: one of the profile's purposes is honoured, another refused.
    t.exts[1] = ext_value(&keep, NID_ext_key_usage, "clientAuth", false);
    x = issue(&t, &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    bool has = false;
    CU_ASSERT_EQUAL(cert_eku_count(x, NID_client_auth, &has), 1);
    CU_ASSERT_TRUE(has);
    X509_free(x);
    X509_EXTENSION_free(keep);
    t.exts[1] = ext_value(&keep, NID_ext_key_usage, "clientAuth, codeSigning", false);
    expect_refusal(g_profile, &t, CA_E_EKU,
                   "extendedKeyUsage codeSigning not allowed by profile devices (allowed: "
                   "clientAuth, serverAuth)");
    X509_EXTENSION_free(keep);
    // basicConstraints: a CA certificate from an end-entity profile is refused; CA:FALSE is
    // what the profile writes anyway.
    t.exts[1] = ext_value(&keep, NID_basic_constraints, "critical, CA:TRUE", true);
    expect_refusal(g_profile, &t, CA_E_EXT_CA_REQUESTED,
                   "profile devices issues end-entity certificates: the request asks for "
                   "basicConstraints cA:TRUE");
    X509_EXTENSION_free(keep);
    t.exts[1] = ext_value(&keep, NID_basic_constraints, "CA:FALSE, pathlen:0", false);
    expect_refusal(g_profile, &t, CA_E_EXT_CA_REQUESTED, NULL);
    X509_EXTENSION_free(keep);
    t.exts[1] = ext_value(&keep, NID_basic_constraints, "CA:FALSE", true);
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL));
    CU_ASSERT_EQUAL(d.mods, 0);
    X509_EXTENSION_free(keep);
    // Another extension the profile writes, with another value: the profile's value, reported.
    t.exts[1] =
        ext_value(&keep, NID_crl_distribution_points, "URI:http://other.example/x.crl", false);
    x = issue(&t, &d);
    CU_ASSERT_PTR_NOT_NULL(x);
    X509_free(x);
    CU_ASSERT_EQUAL(d.mods, CA_MOD_EXTENSION);
    char text[300];
    CU_ASSERT_STRING_EQUAL(ca_decision_mods_text(text, sizeof(text), g_profile, &d),
                           "crlDistributionPoints set to profile devices's value");
    X509_EXTENSION_free(keep);
    // Anything else is refused.
    const uint8_t any[] = {0x05, 0x00};
    t.exts[1] = (ca_ext){CM_SPAN_LIT("\x2b\x06\x01\x04\x01\x82\x37\x14\x02"), false,
                         cm_span_make(any, sizeof(any))};
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_EXT_UNACCEPTED);
    // The same OID twice.
    t.exts[1] = t.exts[0];
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_EXT_DUPLICATE);
    // A keyUsage that is not a KeyUsage BIT STRING.
    const uint8_t bad_ku[] = {0x03, 0x01, 0x00};
    t.exts[1] = (ca_ext){CM_SPAN_LIT(DER_OID_CE_KEY_USAGE), true, cm_span_make(bad_ku, 3)};
    TEST_ASSERT_CODE(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL),
                     CA_E_EXT_MALFORMED);
    req_free(&t);
}

static void test_ca_key_usage_allowed_and_replace(void)
{
    // A profile that lets an ECDH key ask for keyAgreement and an RSA encryption key for
    // keyEncipherment, and lets clients ask for codeSigning.
    ca_profile_params p = base_params();
    p.has_key_usage_allowed = true;
    p.key_usage_allowed = CA_KU_DIGITAL_SIGNATURE | CA_KU_KEY_AGREEMENT | CA_KU_KEY_ENCIPHERMENT;
    const char *ekus[] = {"clientAuth", "codeSigning", "1.3.6.1.5.5.7.3.28"};
    p.has_eku_allowed = true;
    p.eku_allowed = ekus;
    p.num_eku_allowed = 3;
    ca_profile *pr = NULL;
    char err[256];
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "ext"));
    test_req ec, rsa;
    req_make(&ec, "P-256", "/CN=ecdh", NULL);
    req_make(&rsa, "RSA-2048", "/CN=rsa-enc", NULL);
    X509_EXTENSION *k1 = NULL, *k2 = NULL, *k3 = NULL;
    ca_decision d;
    ec.exts[0] = ext_value(&k1, NID_key_usage, "keyAgreement", true);
    ec.req.num_exts = 1;
    X509 *x = issue_by(g_ca, g_ca_key, pr, &ec, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_AGREEMENT);
    X509_free(x);
    rsa.exts[0] = ext_value(&k2, NID_key_usage, "keyEncipherment", true);
    rsa.exts[1] = ext_value(&k3, NID_ext_key_usage, "codeSigning, cmcRA", false);
    rsa.req.num_exts = 2;
    x = issue_by(g_ca, g_ca_key, pr, &rsa, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_ENCIPHERMENT);
    bool has = false;
    CU_ASSERT_EQUAL(cert_eku_count(x, NID_code_sign, &has), 2);
    CU_ASSERT_TRUE(has);
    X509_free(x);
    X509_EXTENSION_free(k1);
    // keyEncipherment for an EC key does not fit the key (RFC 5480 §3), even when allowed.
    ec.exts[0] = ext_value(&k1, NID_key_usage, "keyEncipherment", true);
    expect_refusal(pr, &ec, CA_E_KEY_USAGE, "keyUsage keyEncipherment does not fit a P-256 key");
    X509_EXTENSION_free(k1);
    X509_EXTENSION_free(k2);
    X509_EXTENSION_free(k3);
    ca_profile_free(pr);

    // requested_extensions = replace: what is not allowed becomes the profile's own, reported.
    p = base_params();
    p.replace_requested_exts = true;
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "ext"));
    ec.exts[0] = ext_value(&k1, NID_key_usage, "keyCertSign", true);
    ec.exts[1] = ext_value(&k2, NID_ext_key_usage, "codeSigning", false);
    ec.req.num_exts = 2;
    x = issue_by(g_ca, g_ca_key, pr, &ec, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_DIGITAL_SIGNATURE | CA_KU_KEY_AGREEMENT);
    CU_ASSERT_EQUAL(cert_eku_count(x, NID_server_auth, &has), 2);
    X509_free(x);
    CU_ASSERT_EQUAL(d.mods, CA_MOD_KEY_USAGE | CA_MOD_EKU);
    char text[300];
    CU_ASSERT_STRING_EQUAL(ca_decision_mods_text(text, sizeof(text), pr, &d),
                           "keyUsage replaced by profile devices's (digitalSignature, "
                           "keyAgreement); extendedKeyUsage replaced by profile devices's");
    X509_EXTENSION_free(k1);
    X509_EXTENSION_free(k2);
    ca_profile_free(pr);

    // A CA profile may issue what a request for a CA asks, with its own basicConstraints.
    p = base_params();
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "sub_ca"));
    CU_ASSERT_TRUE(ca_profile_is_ca(pr));
    CU_ASSERT_FALSE(ca_profile_is_ca(g_profile));
    ec.exts[0] = ext_value(&k1, NID_basic_constraints, "critical, CA:TRUE, pathlen:0", true);
    ec.req.num_exts = 1;
    TEST_ASSERT_OK(ca_policy_check(pr, g_ca, &d, &ec.req, cm_time_now(), NULL));
    CU_ASSERT_EQUAL(d.mods, 0);
    X509_EXTENSION_free(k1);
    ec.exts[0] = ext_value(&k1, NID_basic_constraints, "critical, CA:TRUE, pathlen:3", true);
    TEST_ASSERT_OK(ca_policy_check(pr, g_ca, &d, &ec.req, cm_time_now(), NULL));
    CU_ASSERT_EQUAL(d.mods, CA_MOD_EXTENSION); // the profile's pathlen:0 is what it gets
    X509_EXTENSION_free(k1);
    ca_profile_free(pr);
    req_free(&ec);
    req_free(&rsa);
}

// Keys that prove possession without a signature (issue 19): the profile lists which may
// transport keys (encryption_key_types) and which may agree keys (kem_key_types); their
// certificates get keyEncipherment or keyAgreement in place of the profile's digitalSignature,
// and a requested keyUsage may narrow that but never add a signing bit.
static void test_ca_non_signing_key_uses(void)
{
    ca_profile_params p = base_params();
    p.enc_key_types = CA_KEY_RSA;
    p.kem_key_types = CA_KEY_EC_P256 | CA_KEY_X25519;
    ca_profile *pr = NULL;
    char err[256];
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "ext"));
    CU_ASSERT_EQUAL(ca_profile_key_use_types(pr, CA_KEY_USE_AGREE), CA_KEY_EC_P256 | CA_KEY_X25519);
    CU_ASSERT_EQUAL(ca_profile_key_use_types(pr, CA_KEY_USE_ENCIPHER), CA_KEY_RSA);
    test_req ec, rsa, x25519, p384;
    req_make(&ec, "P-256", "/CN=ecdh", NULL);
    req_make(&rsa, "RSA-2048", "/CN=rsa-enc", NULL);
    req_make(&x25519, "X25519", "/CN=x25519", NULL);
    req_make(&p384, "P-384", "/CN=p384", NULL);
    ec.req.key_use = CA_KEY_USE_AGREE;
    rsa.req.key_use = CA_KEY_USE_ENCIPHER;
    x25519.req.key_use = CA_KEY_USE_AGREE;
    p384.req.key_use = CA_KEY_USE_AGREE;
    ca_decision d;
    X509 *x = issue_by(g_ca, g_ca_key, pr, &ec, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_AGREEMENT);
    CU_ASSERT_TRUE(
        X509_EXTENSION_get_critical(X509_get_ext(x, X509_get_ext_by_NID(x, NID_key_usage, -1))));
    X509_free(x);
    x = issue_by(g_ca, g_ca_key, pr, &rsa, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_ENCIPHERMENT);
    X509_free(x);
    x = issue_by(g_ca, g_ca_key, pr, &x25519, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_AGREEMENT);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(x), x25519.key), 1);
    X509_free(x);
    // A type not listed for the use, with the setting in the reason.
    expect_refusal(pr, &p384, CA_E_KEY_TYPE,
                   "key type P-384 not allowed to agree keys without a signature proof of "
                   "possession by profile devices (kem_key_types: P-256, X25519)");
    rsa.req.key_use = CA_KEY_USE_AGREE;
    expect_refusal(pr, &rsa, CA_E_KEY_TYPE,
                   "key type RSA not allowed to agree keys without a signature proof of "
                   "possession by profile devices (kem_key_types: P-256, X25519)");
    rsa.req.key_use = CA_KEY_USE_ENCIPHER;
    // An X25519 key is not a signing key at all.
    x25519.req.key_use = CA_KEY_USE_SIGN;
    expect_refusal(pr, &x25519, CA_E_KEY_TYPE, NULL);
    // A requested keyUsage may narrow the use's bits but not add signing.
    X509_EXTENSION *k1 = NULL;
    ec.exts[0] = ext_value(&k1, NID_key_usage, "digitalSignature, keyAgreement", true);
    ec.req.num_exts = 1;
    expect_refusal(pr, &ec, CA_E_KEY_USAGE,
                   "keyUsage digitalSignature not allowed for a key that proved possession "
                   "without a signature (allowed: keyAgreement, encipherOnly, decipherOnly)");
    X509_EXTENSION_free(k1);
    ec.exts[0] = ext_value(&k1, NID_key_usage, "keyAgreement, encipherOnly", true);
    x = issue_by(g_ca, g_ca_key, pr, &ec, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_AGREEMENT | CA_KU_ENCIPHER_ONLY);
    X509_free(x);
    X509_EXTENSION_free(k1);
    ca_profile_free(pr);
    // The default profile (no such types) refuses every non-signing key.
    expect_refusal(g_profile, &rsa, CA_E_KEY_TYPE,
                   "key type RSA not allowed to transport keys without a signature proof of "
                   "possession by profile devices (encryption_key_types: none)");
    // Misplaced types are configuration errors.
    p = base_params();
    p.enc_key_types = CA_KEY_EC_P256;
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "ext"), CA_E_CONFIG);
    CU_ASSERT_STRING_EQUAL(err, "encryption_key_types: only RSA keys transport keys");
    p = base_params();
    p.kem_key_types = CA_KEY_RSA;
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "ext"), CA_E_CONFIG);
    p = base_params();
    p.key_types |= CA_KEY_X25519;
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "ext"), CA_E_CONFIG);
    CU_ASSERT_STRING_EQUAL(err, "X25519 and X448 keys cannot sign: list them in kem_key_types");
    req_free(&ec);
    req_free(&rsa);
    req_free(&x25519);
    req_free(&p384);
}

// ca_cert_has_eku reads a certificate's extendedKeyUsage; ca_cmp_tbs_build_ex adds id-kp-cmKGA.
static void test_ca_cmp_cert_kga_eku(void)
{
    test_req t;
    req_make(&t, "P-256", "/CN=kga", NULL);
    uint8_t serial[CA_SERIAL_LEN];
    TEST_ASSERT_OK(ca_serial_new(serial));
    const int64_t now = cm_time_now();
    for (int kga = 0; kga < 2; kga++) {
        der_builder tb, cb;
        der_builder_init(&tb, 0);
        der_builder_init(&cb, 0);
        TEST_ASSERT_OK(ca_cmp_tbs_build_ex(g_ca, &tb, t.req.subject, t.req.spki,
                                           cm_span_make(serial, sizeof(serial)), now, now + 86400,
                                           SIG_ALG, kga ? CA_CMP_CERT_KGA : 0));
        cm_span tbs, cert;
        TEST_ASSERT_OK(der_builder_finish(&tb, &tbs));
        sign_and_assemble(&cb, g_ca_key, tbs);
        TEST_ASSERT_OK(der_builder_finish(&cb, &cert));
        bool has = false;
        TEST_ASSERT_OK(ca_cert_has_eku(cert, CM_SPAN_LIT(DER_OID_KP_CMC_CA), &has));
        CU_ASSERT_TRUE(has);
        TEST_ASSERT_OK(ca_cert_has_eku(cert, CM_SPAN_LIT(DER_OID_KP_CM_KGA), &has));
        CU_ASSERT_EQUAL(has, kga == 1);
        const unsigned char *q = cert.p;
        X509 *x = d2i_X509(NULL, &q, (long)cert.len);
        CU_ASSERT_PTR_NOT_NULL(x);
        X509_free(x);
        // Truncated, it is refused, not misread.
        TEST_ASSERT_CODE(ca_cert_has_eku(cm_span_make(cert.p, cert.len - 1),
                                         CM_SPAN_LIT(DER_OID_KP_CM_KGA), &has),
                         CM_E_DER_TRUNCATED);
        der_builder_cleanup(&tb);
        der_builder_cleanup(&cb);
    }
    req_free(&t);
}

// A CA profile from its keys (ca = on, path_len, name_constraints; issue 16): the certificate is
// a CA with that path length, keyUsage keyCertSign and cRLSign, and the name constraints; the
// keys refuse what contradicts them.
static void test_ca_ca_profile_keys(void)
{
    char err[256];
    ca_profile_params p = base_params();
    p.is_ca = true;
    p.has_path_len = true;
    p.path_len = 1;
    p.name_constraints = "permitted;DNS:.example.com";
    ca_profile *pr = NULL;
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, NULL));
    CU_ASSERT_TRUE(ca_profile_is_ca(pr));
    uint32_t n = 99;
    CU_ASSERT_TRUE(ca_profile_path_len(pr, &n));
    CU_ASSERT_EQUAL(n, 1);
    test_req t;
    req_make(&t, "P-256", "/CN=Other CA", NULL);
    ca_decision d;
    X509 *x = issue_by(g_ca, g_ca_key, pr, &t, cm_time_now(), &d, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_EQUAL(X509_check_ca(x), 1);
    CU_ASSERT_EQUAL(X509_get_pathlen(x), 1);
    CU_ASSERT_EQUAL(cert_ku(x), CA_KU_KEY_CERT_SIGN | CA_KU_CRL_SIGN);
    int crit = 0;
    NAME_CONSTRAINTS *nc = X509_get_ext_d2i(x, NID_name_constraints, &crit, NULL);
    CU_ASSERT_PTR_NOT_NULL(nc);
    CU_ASSERT_EQUAL(crit, 1);
    if (nc != NULL) {
        CU_ASSERT_EQUAL(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 1);
    }
    NAME_CONSTRAINTS_free(nc);
    X509_free(x);
    req_free(&t);
    ca_profile_free(pr);
    // Without a path length: none in the certificate, none reported.
    p.has_path_len = false;
    p.name_constraints = NULL;
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, NULL));
    CU_ASSERT_FALSE(ca_profile_path_len(pr, &n));
    CU_ASSERT_FALSE(ca_profile_path_len(g_profile, &n)); // an end-entity profile has none
    ca_profile_free(pr);
    // Contradictions: a basicConstraints of the extensions section, path_len or
    // name_constraints without ca = on, a keyUsage without keyCertSign, bad constraints.
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "sub_ca"), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "basicConstraints"));
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, "key_agreement_only"),
                     CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "keyCertSign"));
    p.name_constraints = "permitted;nonsense:.example.com";
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, NULL), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "name_constraints"));
    p = base_params();
    p.has_path_len = true;
    TEST_ASSERT_CODE(ca_profile_new(&pr, err, sizeof(err), &p, g_conf, NULL), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "ca = on"));
}

static void test_ca_capped_validity_is_reported(void)
{
    test_req t;
    req_make(&t, "P-256", "/CN=long", NULL);
    const int64_t now = cm_time_now();
    ca_decision d;
    // Within max_days and the CA's life: as asked, no modification.
    t.req.not_after = now + 20 * 86400;
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.mods, 0);
    // Longer than the CA lives (30 days here, max_days 365): cut at the CA's notAfter.
    t.req.not_after = now + 200 * 86400;
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.mods, CA_MOD_VALIDITY_CA);
    CU_ASSERT_EQUAL(d.not_after, ca_authority_not_after(g_ca));
    char text[300];
    CU_ASSERT_PTR_NOT_NULL(strstr(ca_decision_mods_text(text, sizeof(text), g_profile, &d),
                                  ", when the CA certificate expires"));
    // Longer than max_days: cut at max_days.
    ca_profile_params p = base_params();
    p.max_days = 12;
    ca_profile *pr = NULL;
    char err[256];
    TEST_ASSERT_OK(ca_profile_new(&pr, err, sizeof(err), &p, NULL, NULL));
    t.req.not_after = now + 20 * 86400;
    TEST_ASSERT_OK(ca_policy_check(pr, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.mods, CA_MOD_VALIDITY_PROFILE);
    CU_ASSERT_EQUAL(d.not_after, now + 12 * 86400);
    CU_ASSERT_PTR_NOT_NULL(strstr(ca_decision_mods_text(text, sizeof(text), pr, &d),
                                  "(profile devices grants at most 12 days)"));
    // No validity asked for: the profile's default is not a modification.
    t.req.not_after = 0;
    TEST_ASSERT_OK(ca_policy_check(pr, g_ca, &d, &t.req, now, NULL));
    CU_ASSERT_EQUAL(d.mods, 0);
    ca_profile_free(pr);
    req_free(&t);
}

static void test_ca_profile_check_key_before_anything(void)
{
    // The key check alone, on a key's DER: an RSA key over the profile's bound is refused
    // with the numbers, a P-521 key (not allowed) with the list.
    test_req t;
    req_make(&t, "P-521", "/CN=k", NULL);
    ca_key_info k;
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_profile_check_key(g_profile, &k, t.req.spki, &why), CA_E_KEY_TYPE);
    CU_ASSERT_STRING_EQUAL(why.text, "key type P-521 not allowed by profile devices (allowed: "
                                     "P-256, P-384, RSA, Ed25519)");
    req_free(&t);
    req_make(&t, "P-256", "/CN=k", NULL);
    TEST_ASSERT_OK(ca_profile_check_key(g_profile, &k, t.req.spki, NULL));
    CU_ASSERT_EQUAL(k.type, CA_KEY_EC_P256);
    req_free(&t);
    // ca_key_usage_bit and ca_key_usage_text read and write the configuration's names.
    CU_ASSERT_EQUAL(ca_key_usage_bit("keyAgreement"), CA_KU_KEY_AGREEMENT);
    CU_ASSERT_EQUAL(ca_key_usage_bit("CONTENTCOMMITMENT"), CA_KU_NON_REPUDIATION);
    CU_ASSERT_EQUAL(ca_key_usage_bit("keyAgreements"), 0);
    char text[200];
    CU_ASSERT_STRING_EQUAL(
        ca_key_usage_text(text, sizeof(text), CA_KU_DIGITAL_SIGNATURE | CA_KU_DECIPHER_ONLY),
        "digitalSignature, decipherOnly");
}

static void test_ca_extensions_parse(void)
{
    // The body of Extensions { SAN critical { DNS:a }, keyUsage { digitalSignature } }
    const uint8_t good[] = {0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x11, 0x01, 0x01, 0xff,
                            0x04, 0x04, 0x30, 0x02, 0x82, 0x00, 0x30, 0x0b, 0x06, 0x03,
                            0x55, 0x1d, 0x0f, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80};
    ca_ext exts[4];
    size_t n = 0;
    TEST_ASSERT_OK(ca_extensions_parse(exts, &n, 4, cm_span_make(good, sizeof(good))));
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_TRUE(exts[0].critical && der_oid_is(exts[0].oid, DER_OID_CE_SUBJECT_ALT_NAME));
    CU_ASSERT_TRUE(!exts[1].critical && exts[1].value.len == 4);
    TEST_ASSERT_CODE(ca_extensions_parse(exts, &n, 1, cm_span_make(good, sizeof(good))),
                     CM_E_DER_TOO_MANY);
    // critical FALSE written out (a DEFAULT value encoded): not DER.
    uint8_t explicit_false[sizeof(good)];
    memcpy(explicit_false, good, sizeof(good));
    explicit_false[9] = 0x00;
    TEST_ASSERT_CODE(
        ca_extensions_parse(exts, &n, 4, cm_span_make(explicit_false, sizeof(explicit_false))),
        CA_E_EXT_MALFORMED);
    // Duplicate OIDs.
    uint8_t dup[sizeof(good)];
    memcpy(dup, good, sizeof(good));
    dup[22] = 0x11;
    TEST_ASSERT_CODE(ca_extensions_parse(exts, &n, 4, cm_span_make(dup, sizeof(dup))),
                     CA_E_EXT_DUPLICATE);
    // No OID first, an empty body, something that is not an Extension, and every truncation.
    const uint8_t no_oid[] = {0x30, 0x03, 0x04, 0x01, 0x00};
    TEST_ASSERT_CODE(ca_extensions_parse(exts, &n, 4, cm_span_make(no_oid, sizeof(no_oid))),
                     CA_E_EXT_MALFORMED);
    TEST_ASSERT_CODE(ca_extensions_parse(exts, &n, 4, cm_span_make(good, 0)), CA_E_EXT_MALFORMED);
    const uint8_t not_seq[] = {0x04, 0x00};
    TEST_ASSERT_CODE(ca_extensions_parse(exts, &n, 4, cm_span_make(not_seq, sizeof(not_seq))),
                     CM_E_DER_UNEXPECTED_TAG);
    for (size_t cut = 1; cut < sizeof(good); cut++) {
        if (cut == 16) {
            continue; // exactly the first Extension: a valid body
        }
        const cm_result r = ca_extensions_parse(exts, &n, 4, cm_span_make(good, cut));
        CU_ASSERT_TRUE(r.code == CM_E_DER_TRUNCATED || r.code == CA_E_EXT_MALFORMED);
    }
    // The failure-info mapping the server uses.
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_EXT_UNACCEPTED), 16);
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_KEY_SIZE), 19);
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_EXT_DUPLICATE), CM_FAIL_BAD_CERT_TEMPLATE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_EXT_MALFORMED), CM_FAIL_BAD_CERT_TEMPLATE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_UNTRUSTED), 20);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_E_DER_TRUNCATED), CM_FAIL_BAD_DATA_FORMAT);
}

// --- profiles and CA material ---------------------------------------------------------------

static void test_ca_profile_config_errors(void)
{
    ca_profile *p = NULL;
    char err[256] = "";
    ca_profile_params prm = base_params();
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, g_conf, "bad_value"), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "[bad_value] keyUsage: 'critical, digitalSignatur'"));
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, g_conf, "with_ski"), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "subjectKeyIdentifier: not allowed"));
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, g_conf, "twice"), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "2.5.29.15 given twice"));
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, g_conf, "missing"), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "[missing] does not exist"));
    prm.max_days = 5;
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, NULL, NULL), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "validity"));
    prm = base_params();
    prm.rsa_min_bits = 512;
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, NULL, NULL), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "RSA sizes"));
    prm = base_params();
    const char *bogus[] = {"notAnAttribute"};
    prm.allowed_rdns = bogus;
    prm.num_allowed_rdns = 1;
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, NULL, NULL), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "'notAnAttribute'"));
    prm = base_params();
    prm.key_types = 0;
    TEST_ASSERT_CODE(ca_profile_new(&p, err, sizeof(err), &prm, NULL, NULL), CA_E_CONFIG);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_TRUE(ca_profile_implicit_confirm(g_profile));
    CU_ASSERT_TRUE(ca_profile_extensions(g_profile).len > 0);
}

static void test_ca_authority_material(void)
{
    char err[256] = "", p[320];
    ca_authority *ca = NULL;
    TEST_ASSERT_CODE(
        ca_authority_load(&ca, err, sizeof(err), path_of(p, sizeof(p), "plain.pem"), NULL),
        CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a CA certificate"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "plain.pem"));
    TEST_ASSERT_CODE(
        ca_authority_load(&ca, err, sizeof(err), path_of(p, sizeof(p), "nope.pem"), NULL),
        CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "nope.pem: cannot read"));
    CU_ASSERT_PTR_NULL(ca);

    // The key check: the CA's own SPKI matches, another key does not.
    X509 *x = load_pem("ca.pem");
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(X509_get0_pubkey(x), &der);
    TEST_ASSERT_OK(ca_authority_matches_spki(g_ca, cm_span_make(der, (size_t)len)));
    OPENSSL_free(der);
    der = NULL;
    len = i2d_PUBKEY(g_int_key, &der);
    TEST_ASSERT_CODE(ca_authority_matches_spki(g_ca, cm_span_make(der, (size_t)len)),
                     CA_E_KEY_MISMATCH);
    OPENSSL_free(der);
    // Spans: subject as in the certificate, SKI as its extension.
    der = NULL;
    len = i2d_X509_NAME(X509_get_subject_name(x), &der);
    cm_span subj = ca_authority_subject(g_ca);
    CU_ASSERT_TRUE(subj.len == (size_t)len && memcmp(subj.p, der, subj.len) == 0);
    OPENSSL_free(der);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    cm_span s = ca_authority_ski(g_ca);
    CU_ASSERT_TRUE(s.len == (size_t)ASN1_STRING_length(ski) &&
                   memcmp(s.p, ASN1_STRING_get0_data(ski), s.len) == 0);
    X509_free(x);
    // The intermediate was loaded with its chain (the root).
    CU_ASSERT_EQUAL(ca_authority_num_chain(g_int), 1);
    CU_ASSERT_EQUAL(ca_authority_num_chain(g_ca), 0);
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CA_E_KEY_TYPE)), "CA_E_KEY_TYPE");
}

// --- trust store ----------------------------------------------------------------------------

static cm_span x509_der(X509 *x, unsigned char **owned)
{
    *owned = NULL;
    const int len = i2d_X509(x, owned);
    CU_ASSERT_FATAL(len > 0);
    return cm_span_make(*owned, (size_t)len);
}

static void test_ca_trust_chains_and_cache(void)
{
    char root[320], ca[320], err[256] = "";
    path_of(root, sizeof(root), "root.pem");
    path_of(ca, sizeof(ca), "ca.pem");
    const char *anchors[] = {root};
    ca_trust *t = NULL;
    TEST_ASSERT_OK(ca_trust_new(&t, err, sizeof(err), anchors, 1, 4));

    // A device certificate from the vendor's intermediate (issued by us, for the test).
    test_req r;
    req_make(&r, "P-256", "/CN=factory-device", NULL);
    const int64_t now = cm_time_now();
    X509 *leaf = issue_by(g_int, g_int_key, g_profile, &r, now, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(leaf);
    unsigned char *leaf_der, *int_der;
    cm_span l = x509_der(leaf, &leaf_der);
    X509 *inter = load_pem("int.pem");
    cm_span i = x509_der(inter, &int_der);

    uint64_t hits;
    size_t entries;
    // Without the intermediate: no path to the root; nothing cached. The reason names the
    // check that failed and the certificate it failed on.
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, l, NULL, 0, now, &why), CA_E_UNTRUSTED);
    CU_ASSERT_STRING_EQUAL(why.text, "certificate is not trusted: unable to get local issuer "
                                     "certificate (CN=factory-device)");
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(entries, 0);
    // With it: trusted, then answered from the cache.
    TEST_ASSERT_OK(ca_trust_verify(t, l, &i, 1, now, NULL));
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(hits, 0);
    CU_ASSERT_EQUAL(entries, 1);
    TEST_ASSERT_OK(ca_trust_verify(t, l, NULL, 0, now + 60, NULL));
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(hits, 1);
    // Expired (the leaf lives 10 days): the cache does not answer outside the window.
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, l, &i, 1, now + 11 * 86400, &why), CA_E_CERT_EXPIRED);
    CU_ASSERT_STRING_EQUAL(
        why.text, "certificate is not trusted: certificate has expired (CN=factory-device)");
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(hits, 1);
    // Not yet valid.
    TEST_ASSERT_CODE(ca_trust_verify(t, l, &i, 1, now - 86400, NULL), CA_E_CERT_EXPIRED);
    // A certificate from another CA.
    test_req r2;
    req_make(&r2, "P-256", "/CN=someone-else", NULL);
    // Issued at |now| too: it is verified at |now| below, whatever second the clock reached.
    X509 *other = issue_by(g_ca, g_ca_key, g_profile, &r2, now, NULL, NULL);
    unsigned char *other_der;
    cm_span o = x509_der(other, &other_der);
    TEST_ASSERT_CODE(ca_trust_verify(t, o, &i, 1, now, NULL), CA_E_UNTRUSTED);
    // Garbage.
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, cm_span_make(leaf_der, 10), NULL, 0, now, &why),
                     CA_E_UNTRUSTED);
    CU_ASSERT_STRING_EQUAL(why.text, "certificate is not trusted: it cannot be parsed");
    // A signature that does not verify: flip a bit of the signature.
    leaf_der[l.len - 5] ^= 0x01;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, l, &i, 1, now, &why), CA_E_UNTRUSTED);
    CU_ASSERT_STRING_EQUAL(why.text, "certificate is not trusted: certificate signature failure "
                                     "(CN=factory-device)");
    leaf_der[l.len - 5] ^= 0x01;
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(entries, 1);

    // The cache never holds more than its cap (4): six more good leaves.
    for (int k = 0; k < 6; k++) {
        test_req rk;
        req_make(&rk, "P-256", "/CN=more", NULL);
        X509 *xk = issue_by(g_int, g_int_key, g_profile, &rk, now, NULL, NULL);
        unsigned char *dk;
        cm_span sk = x509_der(xk, &dk);
        TEST_ASSERT_OK(ca_trust_verify(t, sk, &i, 1, now, NULL));
        OPENSSL_free(dk);
        X509_free(xk);
        req_free(&rk);
    }
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(entries, 4);
    ca_trust_free(t);

    // A trust store of our own CA (as for cr/kur), without a cache.
    const char *ours[] = {ca};
    TEST_ASSERT_OK(ca_trust_new(&t, err, sizeof(err), ours, 1, 0));
    TEST_ASSERT_OK(ca_trust_verify(t, o, NULL, 0, now, NULL));
    TEST_ASSERT_CODE(ca_trust_verify(t, l, &i, 1, now, NULL), CA_E_UNTRUSTED);
    ca_trust_free(t);

    // Configuration errors.
    const char *bad[] = {"/nonexistent/anchors.pem"};
    TEST_ASSERT_CODE(ca_trust_new(&t, err, sizeof(err), bad, 1, 4), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/anchors.pem: cannot open"));
    char empty[320];
    path_of(empty, sizeof(empty), "empty.pem");
    CU_ASSERT_TRUE_FATAL(test_write_file(empty, "", 0));
    const char *none[] = {empty};
    TEST_ASSERT_CODE(ca_trust_new(&t, err, sizeof(err), none, 1, 4), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no PEM certificate"));

    OPENSSL_free(leaf_der);
    OPENSSL_free(int_der);
    OPENSSL_free(other_der);
    X509_free(leaf);
    X509_free(inter);
    X509_free(other);
    req_free(&r);
    req_free(&r2);
}

// write_crl builds a CRL of |ca| (signed with |key|) listing |serial| (16 octets, or none when
// NULL), valid from |this_update| to |next_update|, and writes it as DER to |name|.
static void write_crl(const char *name, const ca_authority *ca, EVP_PKEY *key,
                      const uint8_t *serial, int64_t this_update, int64_t next_update)
{
    ca_crl_entry e = {cm_span_make(serial, CA_SERIAL_LEN), this_update, CA_REASON_KEY_COMPROMISE};
    der_builder tb, cb;
    der_builder_init(&tb, 0);
    der_builder_init(&cb, 0);
    TEST_ASSERT_OK(ca_crl_tbs_build(ca, &tb, SIG_ALG, this_update, next_update, 1, &e,
                                    serial != NULL ? 1 : 0));
    cm_span tbs, crl;
    TEST_ASSERT_OK(der_builder_finish(&tb, &tbs));
    sign_and_assemble(&cb, key, tbs);
    TEST_ASSERT_OK(der_builder_finish(&cb, &crl));
    char p[320];
    CU_ASSERT_TRUE_FATAL(test_write_file(path_of(p, sizeof(p), name), crl.p, crl.len));
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
}

// The anchors' CRLs (trust_crls): a revoked device certificate no longer verifies, also when it
// was cached before the CRLs were loaded; an expired CRL fails closed; a CRL not signed by its
// anchor is refused at load and the previous set stays; a certificate trusted as itself (an RA
// certificate) is checked against its issuer's CRL alone.
static void test_ca_trust_crls(void)
{
    char root[320], err[256] = "";
    path_of(root, sizeof(root), "root.pem");
    const char *anchors[] = {root};
    ca_trust *t = NULL;
    TEST_ASSERT_OK(ca_trust_new(&t, err, sizeof(err), anchors, 1, 16));
    const int64_t now = cm_time_now();
    test_req r1, r2;
    req_make(&r1, "P-256", "/CN=stolen-device", NULL);
    req_make(&r2, "P-256", "/CN=good-device", NULL);
    uint8_t s1[CA_SERIAL_LEN], s2[CA_SERIAL_LEN];
    X509 *x1 = issue_by(g_int, g_int_key, g_profile, &r1, now, NULL, s1);
    X509 *x2 = issue_by(g_int, g_int_key, g_profile, &r2, now, NULL, s2);
    CU_ASSERT_TRUE_FATAL(x1 != NULL && x2 != NULL);
    unsigned char *d1, *d2, *di;
    const cm_span l1 = x509_der(x1, &d1), l2 = x509_der(x2, &d2);
    X509 *inter = load_pem("int.pem");
    const cm_span i = x509_der(inter, &di);

    // Verified (and cached) before any CRL.
    TEST_ASSERT_OK(ca_trust_verify(t, l1, &i, 1, now, NULL));
    CU_ASSERT_EQUAL(ca_trust_num_crls(t), 0);
    TEST_ASSERT_OK(ca_trust_check_crls(t, l1, now, NULL));

    // The intermediate's CRL revokes the first device: refused at once, cache or not.
    write_crl("int-crl.der", g_int, g_int_key, s1, now - 60, now + 86400);
    char crl_path[320];
    const char *crls[] = {path_of(crl_path, sizeof(crl_path), "int-crl.der")};
    TEST_ASSERT_OK(ca_trust_set_crls(t, err, sizeof(err), crls, 1));
    CU_ASSERT_EQUAL(ca_trust_num_crls(t), 1);
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, l1, &i, 1, now, &why), CA_E_CERT_REVOKED);
    CU_ASSERT_STRING_EQUAL(why.text,
                           "certificate is not trusted: certificate revoked (CN=stolen-device)");
    TEST_ASSERT_CODE(ca_trust_verify(t, l1, NULL, 0, now, NULL), CA_E_UNTRUSTED);
    TEST_ASSERT_OK(ca_trust_verify(t, l2, &i, 1, now, NULL));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_check_crls(t, l1, now, &why), CA_E_CERT_REVOKED);
    CU_ASSERT_STRING_EQUAL(why.text, "certificate is revoked: its issuer's CRL lists it");
    TEST_ASSERT_OK(ca_trust_check_crls(t, l2, now, NULL));
    // The good device's cached success lasts only until the CRL's nextUpdate.
    TEST_ASSERT_CODE(ca_trust_verify(t, l2, NULL, 0, now + 2 * 86400, NULL), CA_E_UNTRUSTED);
    // Past its nextUpdate the CRL cannot be relied on: fail closed.
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, l2, &i, 1, now + 2 * 86400, &why), CA_E_UNTRUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why.text, "CRL has expired"));
    TEST_ASSERT_CODE(ca_trust_check_crls(t, l2, now + 2 * 86400, NULL), CA_E_UNTRUSTED);

    // A root CRL signed by another key: refused at load; the previous set is kept.
    ca_authority *root_ca = NULL;
    TEST_ASSERT_OK(ca_authority_load(&root_ca, err, sizeof(err), root, NULL));
    write_crl("forged-root-crl.der", root_ca, g_ca_key, NULL, now - 60, now + 86400);
    char forged[320];
    const char *bad[] = {crls[0], path_of(forged, sizeof(forged), "forged-root-crl.der")};
    TEST_ASSERT_CODE(ca_trust_set_crls(t, err, sizeof(err), bad, 2), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "forged-root-crl.der: the CRL of CN=Vendor Root,O=Vendor is "
                                       "not signed by that trust anchor's key"));
    CU_ASSERT_EQUAL(ca_trust_num_crls(t), 1);
    TEST_ASSERT_CODE(ca_trust_verify(t, l1, &i, 1, now, NULL), CA_E_CERT_REVOKED);
    // Files that are not CRLs.
    const char *missing[] = {"/nonexistent/crl.pem"};
    TEST_ASSERT_CODE(ca_trust_set_crls(t, err, sizeof(err), missing, 1), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/crl.pem: cannot open the CRL file"));
    const char *not_crl[] = {root};
    TEST_ASSERT_CODE(ca_trust_set_crls(t, err, sizeof(err), not_crl, 1), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no CRL in the file"));
    // A new CRL that no longer lists it (a reload), and no CRLs at all.
    write_crl("int-crl.der", g_int, g_int_key, NULL, now - 60, now + 86400);
    TEST_ASSERT_OK(ca_trust_set_crls(t, err, sizeof(err), crls, 1));
    TEST_ASSERT_OK(ca_trust_verify(t, l1, &i, 1, now, NULL));
    write_crl("int-crl.der", g_int, g_int_key, s1, now - 60, now + 86400);
    TEST_ASSERT_OK(ca_trust_set_crls(t, err, sizeof(err), crls, 1));
    TEST_ASSERT_CODE(ca_trust_verify(t, l1, &i, 1, now, NULL), CA_E_CERT_REVOKED);
    TEST_ASSERT_OK(ca_trust_set_crls(t, err, sizeof(err), NULL, 0));
    TEST_ASSERT_OK(ca_trust_verify(t, l1, &i, 1, now, NULL));
    ca_trust_free(t);
    ca_authority_free(root_ca);
    OPENSSL_free(d1);
    OPENSSL_free(d2);
    OPENSSL_free(di);
    X509_free(x1);
    X509_free(x2);
    X509_free(inter);
    req_free(&r1);
    req_free(&r2);
}

// The chain check uses key usage: a signer whose keyUsage lacks digitalSignature, and a CA
// whose keyUsage lacks keyCertSign, are not trusted.
static void test_ca_trust_key_usage(void)
{
    char root[320], err[256] = "";
    path_of(root, sizeof(root), "root.pem");
    const char *anchors[] = {root};
    ca_trust *t = NULL;
    TEST_ASSERT_OK(ca_trust_new(&t, err, sizeof(err), anchors, 1, 16));
    const int64_t now = cm_time_now();
    X509 *inter = load_pem("int.pem");
    unsigned char *di;
    const cm_span i = x509_der(inter, &di);
    // A leaf for key agreement only.
    ca_profile *ka = NULL;
    ca_profile_params p = base_params();
    TEST_ASSERT_OK(ca_profile_new(&ka, err, sizeof(err), &p, g_conf, "key_agreement_only"));
    test_req r;
    req_make(&r, "P-256", "/CN=ka-device", NULL);
    X509 *x = issue_by(g_int, g_int_key, ka, &r, now, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    unsigned char *d;
    const cm_span l = x509_der(x, &d);
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(ca_trust_verify(t, l, &i, 1, now, &why), CA_E_CHAIN_KEY_USAGE);
    CU_ASSERT_STRING_EQUAL(why.text, "certificate is not trusted: its keyUsage does not allow "
                                     "digitalSignature (CN=ka-device)");
    // A "CA" under the root whose keyUsage has no keyCertSign, and a leaf it issued.
    char ext[320], bad_key[320], bad_pem[320];
    path_of(ext, sizeof(ext), "ext-nocertsign.cnf");
    path_of(bad_key, sizeof(bad_key), "nocertsign.key");
    path_of(bad_pem, sizeof(bad_pem), "nocertsign.pem");
    const char ext_text[] = "[v3]\nbasicConstraints=critical,CA:TRUE\n"
                            "keyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n";
    CU_ASSERT_TRUE_FATAL(test_write_file(ext, ext_text, sizeof(ext_text) - 1));
    char root_key[320];
    path_of(root_key, sizeof(root_key), "root.key");
    const test_pki_cert_spec spec = {
        .subject = "/O=Vendor/CN=No CertSign CA", .days = 5, .ext_file = ext, .ext_section = "v3"};
    CU_ASSERT_TRUE_FATAL(test_pki_issue(bad_key, bad_pem, root_key, root, &spec, g_log));
    // (ca_authority_load refuses such a CA, so the leaf comes from openssl x509 -req.)
    char leaf_key[320], leaf_pem[320];
    path_of(leaf_key, sizeof(leaf_key), "under-nocertsign.key");
    path_of(leaf_pem, sizeof(leaf_pem), "under-nocertsign.pem");
    const test_pki_cert_spec leaf = {.subject = "/CN=under-no-certsign", .days = 5};
    CU_ASSERT_TRUE_FATAL(test_pki_issue(leaf_key, leaf_pem, bad_key, bad_pem, &leaf, g_log));
    X509 *x2 = load_pem("under-nocertsign.pem");
    X509 *bx = load_pem("nocertsign.pem");
    CU_ASSERT_TRUE_FATAL(x2 != NULL && bx != NULL);
    unsigned char *d2, *db;
    const cm_span l2 = x509_der(x2, &d2);
    const cm_span b = x509_der(bx, &db);
    cm_why_clear(&why);
    cm_result res = ca_trust_verify(t, l2, &b, 1, now, &why);
    CU_ASSERT(res.code == CA_E_CHAIN_KEY_USAGE || res.code == CA_E_UNTRUSTED);
    CU_ASSERT_FALSE(cm_ok(res));
    if (cm_ok(res)) {
        fprintf(stderr, "\n  a leaf under a CA without keyCertSign verified\n");
    }
    ca_trust_free(t);
    ca_profile_free(ka);
    OPENSSL_free(d);
    OPENSSL_free(d2);
    OPENSSL_free(db);
    OPENSSL_free(di);
    X509_free(x);
    X509_free(x2);
    X509_free(bx);
    X509_free(inter);
    req_free(&r);
}

typedef struct trust_worker {
    ca_trust *t;
    cm_span leaves[2];
    cm_span inter;
    int64_t now;
    int failures;
} trust_worker;

static void *trust_worker_run(void *arg)
{
    trust_worker *w = arg;
    for (int k = 0; k < 200; k++) {
        if (!cm_ok(ca_trust_verify(w->t, w->leaves[k % 2], &w->inter, 1, w->now, NULL))) {
            w->failures++;
        }
    }
    return NULL;
}

static void test_ca_trust_cache_concurrent(void)
{
    char root[320], err[256] = "";
    path_of(root, sizeof(root), "root.pem");
    const char *anchors[] = {root};
    ca_trust *t = NULL;
    TEST_ASSERT_OK(ca_trust_new(&t, err, sizeof(err), anchors, 1, 64));
    test_req r[2];
    X509 *x[2];
    unsigned char *der[2], *int_der;
    const int64_t now = cm_time_now();
    trust_worker w[4];
    X509 *inter = load_pem("int.pem");
    const cm_span i = x509_der(inter, &int_der);
    for (int k = 0; k < 2; k++) {
        req_make(&r[k], "P-256", k == 0 ? "/CN=t0" : "/CN=t1", NULL);
        x[k] = issue_by(g_int, g_int_key, g_profile, &r[k], now, NULL, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(x[k]);
    }
    const cm_span l0 = x509_der(x[0], &der[0]), l1 = x509_der(x[1], &der[1]);
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        w[k] = (trust_worker){t, {l0, l1}, i, now, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[k], NULL, trust_worker_run, &w[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        CU_ASSERT_EQUAL(pthread_join(th[k], NULL), 0);
        CU_ASSERT_EQUAL(w[k].failures, 0);
    }
    uint64_t hits;
    size_t entries;
    ca_trust_cache_stats(t, &hits, &entries);
    CU_ASSERT_EQUAL(entries, 2);
    // Each thread may miss each leaf at most once before some thread inserted it.
    CU_ASSERT_TRUE(hits >= 4 * 200 - 8 && hits <= 4 * 200 - 2);
    ca_trust_free(t);
    for (int k = 0; k < 2; k++) {
        OPENSSL_free(der[k]);
        X509_free(x[k]);
        req_free(&r[k]);
    }
    OPENSSL_free(int_der);
    X509_free(inter);
}

// --- CRLs -----------------------------------------------------------------------------------

static void test_ca_crl_builds_and_verifies(void)
{
    // Two issued certificates; the first is revoked.
    test_req r1, r2;
    req_make(&r1, "P-256", "/CN=revoked-device", NULL);
    req_make(&r2, "P-256", "/CN=good-device", NULL);
    const int64_t now = cm_time_now();
    uint8_t s1[CA_SERIAL_LEN], s2[CA_SERIAL_LEN];
    X509 *x1 = issue_by(g_ca, g_ca_key, g_profile, &r1, now, NULL, s1);
    X509 *x2 = issue_by(g_ca, g_ca_key, g_profile, &r2, now, NULL, s2);
    CU_ASSERT_TRUE_FATAL(x1 != NULL && x2 != NULL);
    CU_ASSERT_TRUE(write_pem("revoked.pem", x1) && write_pem("good.pem", x2));
    const uint8_t other_serial[] = {0x00, 0x00, 0x42};
    ca_crl_entry entries[2] = {
        {cm_span_make(s1, sizeof(s1)), now - 60, CA_REASON_KEY_COMPROMISE},
        {cm_span_make(other_serial, sizeof(other_serial)), now - 120, CA_REASON_NONE},
    };
    der_builder tb, cb;
    der_builder_init(&tb, 0);
    der_builder_init(&cb, 0);
    TEST_ASSERT_OK(ca_crl_tbs_build(g_ca, &tb, SIG_ALG, now, now + 7 * 86400, 4711, entries, 2));
    cm_span tbs, crl;
    TEST_ASSERT_OK(der_builder_finish(&tb, &tbs));
    sign_and_assemble(&cb, g_ca_key, tbs);
    TEST_ASSERT_OK(der_builder_finish(&cb, &crl));

    const unsigned char *p = crl.p;
    X509_CRL *c = d2i_X509_CRL(NULL, &p, (long)crl.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_EQUAL(p, crl.p + crl.len);
    X509 *ca = load_pem("ca.pem");
    CU_ASSERT_EQUAL(X509_CRL_verify(c, X509_get0_pubkey(ca)), 1);
    CU_ASSERT_EQUAL(X509_CRL_get_version(c), 1);
    CU_ASSERT_EQUAL(X509_NAME_cmp(X509_CRL_get_issuer(c), X509_get_subject_name(ca)), 0);
    CU_ASSERT_EQUAL(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(c)), 2);
    X509_REVOKED *rev = NULL;
    CU_ASSERT_EQUAL(X509_CRL_get0_by_serial(c, &rev, X509_get0_serialNumber(x1)), 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rev);
    ASN1_ENUMERATED *reason = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL);
    CU_ASSERT_TRUE(reason != NULL && ASN1_ENUMERATED_get(reason) == 1);
    ASN1_ENUMERATED_free(reason);
    CU_ASSERT_EQUAL(X509_CRL_get0_by_serial(c, &rev, X509_get0_serialNumber(x2)), 0);
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(c, NID_crl_number, NULL, NULL);
    CU_ASSERT_TRUE(num != NULL && ASN1_INTEGER_get(num) == 4711);
    ASN1_INTEGER_free(num);
    AUTHORITY_KEYID *akid = X509_CRL_get_ext_d2i(c, NID_authority_key_identifier, NULL, NULL);
    CU_ASSERT_TRUE(akid != NULL && akid->keyid != NULL &&
                   ASN1_STRING_cmp(akid->keyid, X509_get0_subject_key_id(ca)) == 0);
    AUTHORITY_KEYID_free(akid);

    char crl_path[320];
    BIO *b = BIO_new_file(path_of(crl_path, sizeof(crl_path), "crl.pem"), "w");
    CU_ASSERT_TRUE_FATAL(b != NULL && PEM_write_bio_X509_CRL(b, c) == 1);
    BIO_free(b);
    // openssl verify -crl_check: the revoked one is refused as revoked, the other passes.
    char log2[320];
    path_of(log2, sizeof(log2), "verify-revoked.log");
    char cap[320], lp[320];
    path_of(cap, sizeof(cap), "ca.pem");
    path_of(lp, sizeof(lp), "revoked.pem");
    const char *argv[] = {"openssl",  "verify", "-crl_check", "-CAfile", cap,
                          "-CRLfile", crl_path, lp,           NULL};
    CU_ASSERT_NOT_EQUAL(test_run(argv, log2), 0);
    uint8_t *out;
    size_t out_len;
    CU_ASSERT_TRUE_FATAL(test_read_file(log2, &out, &out_len));
    char *text = calloc(1, out_len + 1);
    memcpy(text, out, out_len);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "certificate revoked"));
    free(text);
    free(out);
    CU_ASSERT_EQUAL(openssl_verify("good.pem", "crl.pem"), 0);

    X509_free(ca);
    X509_CRL_free(c);
    X509_free(x1);
    X509_free(x2);
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    req_free(&r1);
    req_free(&r2);
}

static void test_ca_crl_empty_and_bad_args(void)
{
    der_builder b;
    der_builder_init(&b, 0);
    const int64_t now = cm_time_now();
    TEST_ASSERT_OK(ca_crl_tbs_build(g_ca, &b, SIG_ALG, now, now + 3600, 1, NULL, 0));
    cm_span tbs;
    TEST_ASSERT_OK(der_builder_finish(&b, &tbs));
    der_builder cb;
    der_builder_init(&cb, 0);
    sign_and_assemble(&cb, g_ca_key, tbs);
    cm_span crl;
    TEST_ASSERT_OK(der_builder_finish(&cb, &crl));
    const unsigned char *p = crl.p;
    X509_CRL *c = d2i_X509_CRL(NULL, &p, (long)crl.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    // No revokedCertificates field at all (RFC 5280 §5.1.2.6).
    CU_ASSERT_EQUAL(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(c)), -1);
    X509_CRL_free(c);
    der_builder_cleanup(&b);
    der_builder_cleanup(&cb);

    const uint8_t s[] = {1};
    ca_crl_entry e = {cm_span_make(s, 1), now, CA_REASON_REMOVE_FROM_CRL};
    der_builder_init(&b, 0);
    TEST_ASSERT_CODE(ca_crl_tbs_build(g_ca, &b, SIG_ALG, now, now + 60, 2, &e, 1),
                     CM_E_INVALID_ARG);
    e.reason = 7;
    TEST_ASSERT_CODE(ca_crl_tbs_build(g_ca, &b, SIG_ALG, now, now + 60, 2, &e, 1),
                     CM_E_INVALID_ARG);
    e.reason = CA_REASON_SUPERSEDED;
    TEST_ASSERT_CODE(ca_crl_tbs_build(g_ca, &b, SIG_ALG, now, now, 2, &e, 1), CM_E_INVALID_ARG);
    der_builder_cleanup(&b);
}

static void test_ca_cert_fields(void)
{
    test_req r;
    req_make(&r, "P-256", "/CN=fields", NULL);
    X509 *x = issue(&r, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    unsigned char *der;
    cm_span c = x509_der(x, &der);
    ca_cert_fields f;
    TEST_ASSERT_OK(ca_cert_fields_parse(&f, c));
    // Each field as OpenSSL encodes it.
    unsigned char *n = NULL;
    int len = i2d_X509_NAME(X509_get_issuer_name(x), &n);
    CU_ASSERT_TRUE(f.issuer.len == (size_t)len && memcmp(f.issuer.p, n, f.issuer.len) == 0);
    OPENSSL_free(n);
    n = NULL;
    len = i2d_X509_NAME(X509_get_subject_name(x), &n);
    CU_ASSERT_TRUE(f.subject.len == (size_t)len && memcmp(f.subject.p, n, f.subject.len) == 0);
    OPENSSL_free(n);
    n = NULL;
    len = i2d_PUBKEY(X509_get0_pubkey(x), &n);
    CU_ASSERT_TRUE(f.spki.len == (size_t)len && memcmp(f.spki.p, n, f.spki.len) == 0);
    OPENSSL_free(n);
    n = NULL;
    len = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &n); // tag, short length, content
    CU_ASSERT_TRUE(len > 2 && f.serial.len == (size_t)len - 2 &&
                   memcmp(f.serial.p, n + 2, f.serial.len) == 0);
    OPENSSL_free(n);
    CU_ASSERT_TRUE(f.validity.len > 2 && f.validity.p[0] == 0x30);
    // Bad input: truncated, trailing bytes, not a certificate.
    TEST_ASSERT_CODE(ca_cert_fields_parse(&f, cm_span_make(c.p, c.len - 1)), CM_E_DER_TRUNCATED);
    uint8_t *longer = malloc(c.len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(longer);
    memcpy(longer, c.p, c.len);
    longer[c.len] = 0;
    TEST_ASSERT_CODE(ca_cert_fields_parse(&f, cm_span_make(longer, c.len + 1)), CM_E_DER_TRAILING);
    free(longer);
    static const uint8_t k_int[] = {0x02, 0x01, 0x05};
    TEST_ASSERT_CODE(ca_cert_fields_parse(&f, cm_span_make(k_int, sizeof(k_int))),
                     CM_E_DER_UNEXPECTED_TAG);
    TEST_ASSERT_CODE(ca_cert_fields_parse(&f, cm_span_make(NULL, 0)), CM_E_DER_TRUNCATED);
    OPENSSL_free(der);
    X509_free(x);
    req_free(&r);
}

static void test_ca_tbs_fixed_buffer_too_small(void)
{
    test_req t;
    req_make(&t, "P-256", "/CN=small", NULL);
    ca_decision d;
    TEST_ASSERT_OK(ca_policy_check(g_profile, g_ca, &d, &t.req, cm_time_now(), NULL));
    uint8_t serial[CA_SERIAL_LEN] = {1};
    uint8_t buf[200];
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    TEST_ASSERT_CODE(ca_tbs_build(g_ca, &b, g_profile, &d, &t.req,
                                  cm_span_make(serial, sizeof(serial)), SIG_ALG),
                     CM_E_BUFFER_TOO_SMALL);
    // In an arena, as the server will.
    cm_arena a;
    cm_arena_init(&a, 0, 64 * 1024);
    der_builder_init_arena(&b, &a, 1024);
    TEST_ASSERT_OK(ca_tbs_build(g_ca, &b, g_profile, &d, &t.req,
                                cm_span_make(serial, sizeof(serial)), SIG_ALG));
    cm_span tbs;
    TEST_ASSERT_OK(der_builder_finish(&b, &tbs));
    CU_ASSERT_TRUE(tbs.len > 300);
    cm_arena_cleanup(&a);
    req_free(&t);
}

// name_der encodes an X509_NAME built by |fill| into a malloc'ed buffer.
static uint8_t *name_der(X509_NAME *n, size_t *out_len)
{
    unsigned char *der = NULL;
    const int len = i2d_X509_NAME(n, &der);
    CU_ASSERT_FATAL(len > 0);
    *out_len = (size_t)len;
    return der;
}

static void test_ca_name_to_text(void)
{
    char out[256];
    // Plain attributes, last RDN first, as `openssl x509 -nameopt RFC2253` prints them.
    X509_NAME *n = X509_NAME_new();
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
                                               (const unsigned char *)"Example", -1, -1, 0) == 1);
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                                               (const unsigned char *)"dev-1", -1, -1, 0) == 1);
    size_t len;
    uint8_t *der = name_der(n, &len);
    CU_ASSERT_TRUE(ca_name_to_text(out, sizeof(out), cm_span_make(der, len)));
    CU_ASSERT_STRING_EQUAL(out, "CN=dev-1,O=Example");
    // Cut at the buffer's size: false, still terminated.
    CU_ASSERT_FALSE(ca_name_to_text(out, 8, cm_span_make(der, len)));
    CU_ASSERT_EQUAL(strlen(out), 7);
    // Malformed: truncated, trailing byte, not a SEQUENCE.
    CU_ASSERT_FALSE(ca_name_to_text(out, sizeof(out), cm_span_make(der, len - 1)));
    CU_ASSERT_STRING_EQUAL(out, "");
    CU_ASSERT_FALSE(ca_name_to_text(out, sizeof(out), cm_span_make(der + 2, len - 2)));
    OPENSSL_free(der);
    X509_NAME_free(n);
    // Escapes (RFC 4514 §2.4), a multi-valued RDN, an attribute type without a short label.
    n = X509_NAME_new();
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                                               (const unsigned char *)" a,b+\"c\" ", -1, -1,
                                               0) == 1);
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(n, "serialNumber", MBSTRING_ASC,
                                               (const unsigned char *)"42", -1, -1, -1) == 1);
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(n, "1.2.3.4", MBSTRING_UTF8,
                                               (const unsigned char *)"x", -1, -1, 0) == 1);
    der = name_der(n, &len);
    CU_ASSERT_TRUE(ca_name_to_text(out, sizeof(out), cm_span_make(der, len)));
    // DER sorts the SET: the shorter serialNumber element comes first.
    CU_ASSERT_STRING_EQUAL(out, "1.2.3.4=x,serialNumber=42+CN=\\ a\\,b\\+\\\"c\\\"\\ ");
    OPENSSL_free(der);
    X509_NAME_free(n);
    // The empty Name (a NULL-DN) renders as "".
    static const uint8_t k_empty[] = {0x30, 0x00};
    CU_ASSERT_TRUE(ca_name_to_text(out, sizeof(out), cm_span_make(k_empty, sizeof(k_empty))));
    CU_ASSERT_STRING_EQUAL(out, "");
}

int test_ca_register(void);
int test_ca_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_ca_issues_ec_p256),
        TEST_CASE(test_ca_issues_rsa_2048),
        TEST_CASE(test_ca_issues_ed25519),
        TEST_CASE(test_ca_issues_without_san),
        TEST_CASE(test_ca_empty_subject_gets_critical_san),
        TEST_CASE(test_ca_serials_unique_and_positive),
        TEST_CASE(test_ca_serials_sort_by_time_with_64_random_bits),
        TEST_CASE(test_ca_validity_rules),
        TEST_CASE(test_ca_rejects_key_types),
        TEST_CASE(test_ca_policy_reasons),
        TEST_CASE(test_ca_spki_parse),
        TEST_CASE(test_ca_rejects_subjects),
        TEST_CASE(test_ca_rejects_sans),
        TEST_CASE(test_ca_requested_extensions),
        TEST_CASE(test_ca_key_usage_allowed_and_replace),
        TEST_CASE(test_ca_capped_validity_is_reported),
        TEST_CASE(test_ca_profile_check_key_before_anything),
        TEST_CASE(test_ca_extensions_parse),
        TEST_CASE(test_ca_profile_config_errors),
        TEST_CASE(test_ca_authority_material),
        TEST_CASE(test_ca_trust_chains_and_cache),
        TEST_CASE(test_ca_trust_cache_concurrent),
        TEST_CASE(test_ca_trust_crls),
        TEST_CASE(test_ca_trust_key_usage),
        TEST_CASE(test_ca_crl_builds_and_verifies),
        TEST_CASE(test_ca_crl_empty_and_bad_args),
        TEST_CASE(test_ca_cert_fields),
        TEST_CASE(test_ca_tbs_fixed_buffer_too_small),
        TEST_CASE(test_ca_name_to_text),
        TEST_CASE(test_ca_non_signing_key_uses),
        TEST_CASE(test_ca_cmp_cert_kga_eku),
        TEST_CASE(test_ca_ca_profile_keys),
    };
    return test_register_suite("ca", ca_suite_init, ca_suite_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
