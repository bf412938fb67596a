// Suite "support": the helpers themselves. The throwaway token works end to end through
// p11-kit — a token is created, a user logs in, an EC P-256 key pair is generated and signs; a
// wrong PIN is refused; destroy removes every file. The test PKI's CAs and the certificates
// they issue verify with `openssl verify` and carry the requested key, subject, serial,
// validity and extensions; bad arguments and failing openssl runs return false and leave no
// file. test_register_suite registers a table in order with every callback, and refuses bad
// tables (checked in a child process: CUnit cannot add suites while a test runs).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "tests/support/test_support.h"

static test_token g_token;
static CK_FUNCTION_LIST *g_p11;
static char g_dir[256]; // the PKI tests' files
static char g_log[320]; // openssl's output

static int support_init(void)
{
    if (!test_token_create(&g_token, "support-test") ||
        !test_tmpdir(g_dir, sizeof(g_dir), "support")) {
        return 1;
    }
    test_path(g_log, sizeof(g_log), g_dir, "openssl.log");
    g_p11 = p11_kit_module_load(g_token.module, 0);
    if (g_p11 == NULL) {
        fprintf(stderr, "p11_kit_module_load: %s\n", p11_kit_message());
        return 1;
    }
    CK_RV rv = p11_kit_module_initialize(g_p11);
    if (rv != CKR_OK) {
        fprintf(stderr, "p11_kit_module_initialize: %s\n", p11_kit_strerror(rv));
        return 1;
    }
    return 0;
}

static int support_cleanup(void)
{
    if (g_p11 != NULL) {
        (void)p11_kit_module_finalize(g_p11);
        p11_kit_module_release(g_p11);
        g_p11 = NULL;
    }
    test_token_destroy(&g_token);
    (void)test_rmtree(g_dir);
    return 0;
}

// find_slot returns the slot whose token has label |label|.
static bool find_slot(const char *label, CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    if (g_p11->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) {
        return false;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (g_p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK) {
            continue;
        }
        size_t ll = strlen(label);
        if (memcmp(ti.label, label, ll) == 0 && (ll == 32 || ti.label[ll] == ' ')) {
            *out = slots[i];
            return true;
        }
    }
    return false;
}

static void test_support_token_login_and_ec_keygen(void)
{
    CK_SLOT_ID slot;
    CU_ASSERT_FATAL(find_slot(g_token.label, &slot));
    CK_SESSION_HANDLE s;
    CU_ASSERT_EQUAL_FATAL(
        g_p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(g_p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)g_token.user_pin,
                                         (CK_ULONG)strlen(g_token.user_pin)),
                          CKR_OK);

    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_BBOOL yes = CK_TRUE;
    CK_MECHANISM gen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pub[] = {{CKA_EC_PARAMS, (void *)(uintptr_t)p256, sizeof(p256)},
                          {CKA_VERIFY, &yes, sizeof(yes)}};
    CK_ATTRIBUTE priv[] = {{CKA_SIGN, &yes, sizeof(yes)},
                           {CKA_TOKEN, &yes, sizeof(yes)},
                           {CKA_PRIVATE, &yes, sizeof(yes)},
                           {CKA_SENSITIVE, &yes, sizeof(yes)}};
    CK_OBJECT_HANDLE hpub, hpriv;
    CU_ASSERT_EQUAL_FATAL(g_p11->C_GenerateKeyPair(s, &gen, pub, 2, priv, 4, &hpub, &hpriv),
                          CKR_OK);

    // The key signs: a 64-byte raw r||s for P-256.
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
    CK_BYTE digest[32] = {1, 2, 3};
    CK_BYTE sig[132];
    CK_ULONG sig_len = sizeof(sig);
    CU_ASSERT_EQUAL_FATAL(g_p11->C_SignInit(s, &ecdsa, hpriv), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(g_p11->C_Sign(s, digest, sizeof(digest), sig, &sig_len), CKR_OK);
    CU_ASSERT_EQUAL(sig_len, 64);
    CU_ASSERT_EQUAL(g_p11->C_Logout(s), CKR_OK);
    CU_ASSERT_EQUAL(g_p11->C_CloseSession(s), CKR_OK);
}

static void test_support_token_rejects_wrong_pin(void)
{
    CK_SLOT_ID slot;
    CU_ASSERT_FATAL(find_slot(g_token.label, &slot));
    CK_SESSION_HANDLE s;
    CU_ASSERT_EQUAL_FATAL(g_p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
    static const char bad[] = "not-the-pin";
    CU_ASSERT_EQUAL(g_p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)bad, sizeof(bad) - 1),
                    CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(g_p11->C_CloseSession(s), CKR_OK);
}

static void test_support_unknown_label_has_no_slot(void)
{
    CK_SLOT_ID slot;
    CU_ASSERT_FALSE(find_slot("no-such-token", &slot));
}

static void test_support_destroy_removes_directory(void)
{
    test_token t;
    CU_ASSERT_FATAL(test_token_create(&t, "second-token"));
    char dir[256];
    (void)snprintf(dir, sizeof(dir), "%s", t.dir);
    struct stat st;
    CU_ASSERT_EQUAL(stat(dir, &st), 0);
    test_token_destroy(&t);
    CU_ASSERT_NOT_EQUAL(stat(dir, &st), 0);
    // The suite's own token's configuration is back in force.
    const char *conf = getenv("SOFTHSM2_CONF");
    CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
    CU_ASSERT_STRING_EQUAL(conf, g_token.conf_path);
}

// ---------------------------------------------------------------------------------------------
// The test PKI

static const char *pki_path(char *out, size_t cap, const char *name)
{
    return test_path(out, cap, g_dir, name);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

// openssl_verify runs `openssl verify -CAfile ca cert` (exit status 0: the chain verifies).
static int openssl_verify(const char *ca, const char *cert)
{
    const char *argv[] = {"openssl", "verify", "-CAfile", ca, cert, NULL};
    return test_run(argv, g_log);
}

// key_is checks that |k| is of |type|: algorithm, curve or size.
static bool key_is(EVP_PKEY *k, test_pki_key_type type)
{
    char curve[64] = "";
    size_t curve_len = 0;
    switch (type) {
    case TEST_PKI_EC_P256:
    case TEST_PKI_EC_SECP256K1:
        if (!EVP_PKEY_is_a(k, "EC") ||
            EVP_PKEY_get_group_name(k, curve, sizeof(curve), &curve_len) != 1) {
            return false;
        }
        return strcmp(curve, type == TEST_PKI_EC_P256 ? "prime256v1" : "secp256k1") == 0;
    case TEST_PKI_RSA_2048:
        return EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) == 2048;
    case TEST_PKI_ED25519:
        return EVP_PKEY_is_a(k, "ED25519");
    case TEST_PKI_ED448:
        return EVP_PKEY_is_a(k, "ED448");
    case TEST_PKI_KEY_TYPE_COUNT:
        break;
    }
    return false;
}

// validity_days is notAfter - notBefore in whole days (-1 when it is not whole days).
static int validity_days(const X509 *x)
{
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)) != 1 ||
        secs != 0) {
        return -1;
    }
    return days;
}

static bool subject_is(const X509 *x, const char *want)
{
    char buf[256];
    return X509_NAME_oneline(X509_get_subject_name(x), buf, (int)sizeof(buf)) != NULL &&
           strcmp(buf, want) == 0;
}

static void test_support_pki_keys_of_every_type(void)
{
    for (int t = 0; t < TEST_PKI_KEY_TYPE_COUNT; t++) {
        char name[32], path[320];
        (void)snprintf(name, sizeof(name), "key-%d.pem", t);
        CU_ASSERT_TRUE_FATAL(
            test_pki_make_key(pki_path(path, sizeof(path), name), (test_pki_key_type)t, g_log));
        EVP_PKEY *k = test_pki_read_key(path);
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        CU_ASSERT_TRUE(key_is(k, (test_pki_key_type)t));
        EVP_PKEY_free(k);
    }
}

// A CA and a leaf it issues, for each key type: both verify with `openssl verify`, and carry
// the key, subject, serial, validity and extensions asked for.
static void test_support_pki_ca_and_leaf_verify(void)
{
    for (int t = 0; t < TEST_PKI_KEY_TYPE_COUNT; t++) {
        char n[64], ca_key[320], ca[320], ca_der[320], leaf_key[320], leaf[320];
        (void)snprintf(n, sizeof(n), "ca-%d.key", t);
        pki_path(ca_key, sizeof(ca_key), n);
        (void)snprintf(n, sizeof(n), "ca-%d.pem", t);
        pki_path(ca, sizeof(ca), n);
        (void)snprintf(n, sizeof(n), "ca-%d.der", t);
        pki_path(ca_der, sizeof(ca_der), n);
        (void)snprintf(n, sizeof(n), "leaf-%d.key", t);
        pki_path(leaf_key, sizeof(leaf_key), n);
        (void)snprintf(n, sizeof(n), "leaf-%d.pem", t);
        pki_path(leaf, sizeof(leaf), n);
        const test_pki_cert_spec ca_spec = {.subject = "/O=certmint test/CN=Support CA",
                                            .days = 30,
                                            .key_type = (test_pki_key_type)t,
                                            .der_path = ca_der};
        CU_ASSERT_TRUE_FATAL(test_pki_make_ca(ca_key, ca, &ca_spec, g_log));
        const test_pki_cert_spec leaf_spec = {.subject = "/CN=device-7",
                                              .days = 3,
                                              .key_type = (test_pki_key_type)t,
                                              .serial = "4711"};
        CU_ASSERT_TRUE_FATAL(test_pki_issue(leaf_key, leaf, ca_key, ca, &leaf_spec, g_log));
        CU_ASSERT_EQUAL(openssl_verify(ca, ca), 0);
        CU_ASSERT_EQUAL(openssl_verify(ca, leaf), 0);

        X509 *cx = test_pki_read_cert(ca), *lx = test_pki_read_cert(leaf);
        EVP_PKEY *ck = test_pki_read_key(ca_key), *lk = test_pki_read_key(leaf_key);
        CU_ASSERT_FATAL(cx != NULL && lx != NULL && ck != NULL && lk != NULL);
        CU_ASSERT_TRUE(subject_is(cx, "/O=certmint test/CN=Support CA"));
        CU_ASSERT_TRUE(subject_is(lx, "/CN=device-7"));
        CU_ASSERT_EQUAL(X509_NAME_cmp(X509_get_issuer_name(lx), X509_get_subject_name(cx)), 0);
        CU_ASSERT_EQUAL(X509_check_private_key(cx, ck), 1);
        CU_ASSERT_EQUAL(X509_check_private_key(lx, lk), 1);
        CU_ASSERT_TRUE(key_is(lk, (test_pki_key_type)t));
        CU_ASSERT_EQUAL(X509_check_ca(cx), 1);
        CU_ASSERT_EQUAL(X509_get_ext_count(lx), 0);
        CU_ASSERT_EQUAL(ASN1_INTEGER_get(X509_get0_serialNumber(lx)), 4711);
        CU_ASSERT_EQUAL(validity_days(cx), 30);
        CU_ASSERT_EQUAL(validity_days(lx), 3);
        // The DER copy is the same certificate; the request is not left behind.
        uint8_t *der;
        size_t der_len;
        CU_ASSERT_TRUE_FATAL(test_read_file(ca_der, &der, &der_len));
        unsigned char *want = NULL;
        int want_len = i2d_X509(cx, &want);
        CU_ASSERT_TRUE(want_len > 0 && (size_t)want_len == der_len &&
                       memcmp(want, der, der_len) == 0);
        OPENSSL_free(want);
        free(der);
        char csr[400];
        (void)snprintf(csr, sizeof(csr), "%s.csr", leaf);
        CU_ASSERT_FALSE(file_exists(csr));
        X509_free(cx);
        X509_free(lx);
        EVP_PKEY_free(ck);
        EVP_PKEY_free(lk);
    }
}

// Existing keys are certified, not replaced; extension sections and -addext apply.
static void test_support_pki_existing_keys_and_extensions(void)
{
    char ext[320], root_key[320], root[320], int_key[320], int_pem[320], self[320], self_key[320];
    pki_path(ext, sizeof(ext), "ext.cnf");
    static const char ext_text[] = "[req]\ndistinguished_name=dn\n[dn]\n"
                                   "[v3_int]\nbasicConstraints=critical,CA:TRUE\n"
                                   "keyUsage=critical,keyCertSign,cRLSign\n"
                                   "[leaf]\nbasicConstraints=critical,CA:FALSE\n";
    CU_ASSERT_TRUE_FATAL(test_write_file(ext, ext_text, sizeof(ext_text) - 1));
    pki_path(root_key, sizeof(root_key), "x-root.key");
    pki_path(root, sizeof(root), "x-root.pem");
    pki_path(int_key, sizeof(int_key), "x-int.key");
    pki_path(int_pem, sizeof(int_pem), "x-int.pem");
    pki_path(self, sizeof(self), "x-self.pem");
    pki_path(self_key, sizeof(self_key), "x-self.key");
    CU_ASSERT_TRUE_FATAL(test_pki_make_key(root_key, TEST_PKI_ED25519, g_log));
    EVP_PKEY *before = test_pki_read_key(root_key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(before);
    const char *const san[] = {"subjectAltName=DNS:ca.example,IP:127.0.0.1", NULL};
    const test_pki_cert_spec root_spec = {
        .subject = "/CN=x-root", .days = 60, .key_exists = true, .addext = san};
    CU_ASSERT_TRUE_FATAL(test_pki_make_ca(root_key, root, &root_spec, g_log));
    X509 *rx = test_pki_read_cert(root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx);
    CU_ASSERT_EQUAL(X509_check_private_key(rx, before), 1);
    GENERAL_NAMES *gns = X509_get_ext_d2i(rx, NID_subject_alt_name, NULL, NULL);
    CU_ASSERT_TRUE(gns != NULL && sk_GENERAL_NAME_num(gns) == 2);
    GENERAL_NAMES_free(gns);

    // An intermediate from an existing key, with the config file's CA section.
    CU_ASSERT_TRUE_FATAL(test_pki_make_key(int_key, TEST_PKI_EC_P256, g_log));
    const test_pki_cert_spec int_spec = {.subject = "/O=Vendor/CN=x-int",
                                         .days = 40,
                                         .key_exists = true,
                                         .serial = "0x1234",
                                         .ext_file = ext,
                                         .ext_section = "v3_int"};
    CU_ASSERT_TRUE_FATAL(test_pki_issue(int_key, int_pem, root_key, root, &int_spec, g_log));
    CU_ASSERT_EQUAL(openssl_verify(root, int_pem), 0);
    X509 *ix = test_pki_read_cert(int_pem);
    EVP_PKEY *ik = test_pki_read_key(int_key);
    CU_ASSERT_FATAL(ix != NULL && ik != NULL);
    CU_ASSERT_EQUAL(X509_check_private_key(ix, ik), 1);
    CU_ASSERT_EQUAL(X509_check_ca(ix), 1);
    CU_ASSERT_EQUAL(ASN1_INTEGER_get(X509_get0_serialNumber(ix)), 0x1234);

    // A self-signed end entity: the leaf section replaces openssl's v3_ca.
    const test_pki_cert_spec self_spec = {
        .subject = "/CN=not a CA", .days = 5, .ext_file = ext, .ext_section = "leaf"};
    CU_ASSERT_TRUE_FATAL(test_pki_make_ca(self_key, self, &self_spec, g_log));
    X509 *sx = test_pki_read_cert(self);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sx);
    CU_ASSERT_EQUAL(X509_check_ca(sx), 0);
    X509_free(rx);
    X509_free(ix);
    X509_free(sx);
    EVP_PKEY_free(before);
    EVP_PKEY_free(ik);
}

// Bad arguments and failing openssl runs return false and write no certificate.
static void test_support_pki_rejects_bad_arguments(void)
{
    char key[320], cert[320], ca_key[320], ca[320], missing[320], nodir[320];
    pki_path(key, sizeof(key), "bad.key");
    pki_path(cert, sizeof(cert), "bad.pem");
    pki_path(ca_key, sizeof(ca_key), "bad-ca.key");
    pki_path(ca, sizeof(ca), "bad-ca.pem");
    pki_path(missing, sizeof(missing), "no-such.key");
    pki_path(nodir, sizeof(nodir), "no-such-dir/ca.pem");
    const test_pki_cert_spec good = {.subject = "/CN=bad-args CA", .days = 2};
    CU_ASSERT_TRUE_FATAL(test_pki_make_ca(ca_key, ca, &good, g_log));

    test_pki_cert_spec s = good;
    CU_ASSERT_FALSE(test_pki_make_ca(NULL, cert, &s, g_log));
    CU_ASSERT_FALSE(test_pki_make_ca(key, NULL, &s, g_log));
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, NULL, g_log));
    s.subject = NULL;
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, &s, g_log));
    s.subject = "CN=no slash";
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, &s, g_log));
    s = good;
    s.days = 0;
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, &s, g_log));
    s.days = 36501;
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, &s, g_log));
    s = good;
    s.key_type = TEST_PKI_KEY_TYPE_COUNT;
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, &s, g_log));
    CU_ASSERT_FALSE(test_pki_make_key(key, TEST_PKI_KEY_TYPE_COUNT, g_log));
    CU_ASSERT_FALSE(test_pki_make_key(NULL, TEST_PKI_EC_P256, g_log));
    // The readers: a missing file, and a file that holds the other kind of PEM object.
    CU_ASSERT_PTR_NULL(test_pki_read_cert(missing));
    CU_ASSERT_PTR_NULL(test_pki_read_key(missing));
    CU_ASSERT_PTR_NULL(test_pki_read_cert(ca_key));
    CU_ASSERT_PTR_NULL(test_pki_read_key(ca));
    // openssl itself fails: an existing key that is not there, an unknown extension section,
    // a directory that does not exist.
    s = good;
    s.key_exists = true;
    CU_ASSERT_FALSE(test_pki_make_ca(missing, cert, &s, g_log));
    s = good;
    s.ext_section = "no_such_section";
    CU_ASSERT_FALSE(test_pki_make_ca(key, cert, &s, g_log));
    CU_ASSERT_FALSE(test_pki_make_ca(key, nodir, &good, g_log));
    CU_ASSERT_FALSE(file_exists(cert));

    s = good;
    CU_ASSERT_FALSE(test_pki_issue(key, cert, NULL, ca, &s, g_log));
    CU_ASSERT_FALSE(test_pki_issue(key, cert, ca_key, NULL, &s, g_log));
    const char *const san[] = {"subjectAltName=DNS:x.example", NULL};
    s.addext = san;
    CU_ASSERT_FALSE(test_pki_issue(key, cert, ca_key, ca, &s, g_log));
    s = good;
    s.ext_section = "v3_ca";
    CU_ASSERT_FALSE(test_pki_issue(key, cert, ca_key, ca, &s, g_log));
    s = good;
    CU_ASSERT_FALSE(test_pki_issue(key, cert, missing, ca, &s, g_log));
    s.serial = "not-a-number";
    CU_ASSERT_FALSE(test_pki_issue(key, cert, ca_key, ca, &s, g_log));
    CU_ASSERT_FALSE(file_exists(cert));
}

// ---------------------------------------------------------------------------------------------
// test_register_suite, through test_register_probe

// probe runs test_register_probe |which| with its output in |log_name|; returns its status.
static int probe(const char *which, const char *log_name, char *log, size_t cap)
{
    pki_path(log, cap, log_name);
    (void)unlink(log);
    const char *argv[] = {CM_REGISTER_PROBE_PATH, which, NULL};
    return test_run(argv, log);
}

static bool log_has(const char *log, const char *want)
{
    uint8_t *buf;
    size_t len;
    if (!test_read_file(log, &buf, &len)) {
        return false;
    }
    bool found = false;
    for (size_t i = 0; !found && i + strlen(want) <= len; i++) {
        found = memcmp(buf + i, want, strlen(want)) == 0;
    }
    free(buf);
    return found;
}

static void test_support_register_suite_in_table_order(void)
{
    char log[320];
    CU_ASSERT_EQUAL_FATAL(probe("ok", "probe-ok.log", log, sizeof(log)), 0);
    CU_ASSERT_TRUE(log_has(log, "test probe_first\ntest probe_second\ntest probe_third\n"));
    CU_ASSERT_TRUE(log_has(log, "ran 3 init 1 cleanup 1 setup 3 teardown 3 failures 0\n"));
}

static void test_support_register_suite_rejects_bad_tables(void)
{
    static const char *const bad[] = {"no-registry", "null-name",     "null-table", "empty",
                                      "null-fn",     "null-row-name", "dup-test",   "dup-suite"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char log[320], name[64];
        (void)snprintf(name, sizeof(name), "probe-%s.log", bad[i]);
        const int rc = probe(bad[i], name, log, sizeof(log));
        if (rc != 1) {
            fprintf(stderr, "\n  probe %s exited %d, not 1\n", bad[i], rc);
        }
        CU_ASSERT_EQUAL(rc, 1);
        CU_ASSERT_TRUE(log_has(log, "test_register_suite: "));
    }
    // An unknown case is the probe's own usage error, not a registration failure.
    char log[320];
    CU_ASSERT_EQUAL(probe("no-such-case", "probe-usage.log", log, sizeof(log)), 2);
}

int test_support_register(void);
int test_support_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_support_token_login_and_ec_keygen),
        TEST_CASE(test_support_token_rejects_wrong_pin),
        TEST_CASE(test_support_unknown_label_has_no_slot),
        TEST_CASE(test_support_destroy_removes_directory),
        TEST_CASE(test_support_pki_keys_of_every_type),
        TEST_CASE(test_support_pki_ca_and_leaf_verify),
        TEST_CASE(test_support_pki_existing_keys_and_extensions),
        TEST_CASE(test_support_pki_rejects_bad_arguments),
        TEST_CASE(test_support_register_suite_in_table_order),
        TEST_CASE(test_support_register_suite_rejects_bad_tables),
    };
    return test_register_suite("support", support_init, support_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
