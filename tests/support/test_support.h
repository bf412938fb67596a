// tests/support: helpers every suite may use — suite registration from a table, running a
// program (openssl, softhsm2-util) without a shell, temporary directories, file reading, result
// assertions, a throwaway SoftHSM2 token per suite, and fixture keys and certificates made with
// the openssl CLI (a test PKI). The PKCS#11 latency/fault shim is in tests/support/p11shim.
#ifndef CERTMINT_TESTS_SUPPORT_TEST_SUPPORT_H
#define CERTMINT_TESTS_SUPPORT_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <CUnit/CUnit.h>
#include <openssl/types.h>

#include "engine/base/base.h"

// TEST_ASSERT_OK fails the test (fatally) when |expr| is not CM_OK, naming the code.
#define TEST_ASSERT_OK(expr)                                                    \
    do {                                                                        \
        cm_result test_r_ = (expr);                                             \
        if (!cm_ok(test_r_)) {                                                  \
            fprintf(stderr, "\n  %s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, \
                    cm_result_name(test_r_));                                   \
        }                                                                       \
        CU_ASSERT_FATAL(cm_ok(test_r_));                                        \
    } while (0)

// TEST_ASSERT_CODE checks that |expr| fails with exactly |code|.
#define TEST_ASSERT_CODE(expr, want)                                                            \
    do {                                                                                        \
        cm_result test_r_ = (expr);                                                             \
        if (test_r_.code != (uint32_t)(want)) {                                                 \
            fprintf(stderr, "\n  %s:%d: %s -> %s, expected %s\n", __FILE__, __LINE__, #expr,    \
                    cm_result_name(test_r_), cm_result_name(cm_result_make((uint32_t)(want)))); \
        }                                                                                       \
        CU_ASSERT_EQUAL(test_r_.code, (uint32_t)(want));                                        \
    } while (0)

// test_case is one row of a suite's table of tests: the name CUnit reports and the function.
typedef struct test_case {
    const char *name;
    CU_TestFunc fn;
} test_case;

// TEST_CASE(fn) is the table row for test function |fn|, named after the function as
// CU_ADD_TEST names it.
#define TEST_CASE(fn) \
    {                 \
#fn, fn       \
    }

// TEST_NUM_CASES(table) is the number of rows of a test_case array (not a pointer).
#define TEST_NUM_CASES(table) (sizeof(table) / sizeof((table)[0]))

// test_register_suite adds the CUnit suite |name| with suite-wide |init| and |cleanup| and
// per-test |setup| and |teardown| (each may be NULL), then the |num_tests| tests of |tests| in
// table order. It is what every test_<suite>_register() returns: 0 on success; 1, after printing
// why, when |name| or |tests| is NULL, the table is empty or has a row without a name or a
// function, a suite of that name is already registered, two rows share a name, or CUnit
// refuses (no registry, no memory). On
// failure part of the suite may already be registered; the runner then stops. CUnit keeps the
// pointers: |name| and the rows' names must outlive the registry (string literals do).
int test_register_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc cleanup,
                        CU_SetUpFunc setup, CU_TearDownFunc teardown, const test_case *tests,
                        size_t num_tests);

// test_run runs argv[0] (looked up in PATH) with |argv| and waits. stdout and stderr go to
// |log_path| when non-NULL (appended), else to /dev/null. Returns the exit status, or -1 if the
// program could not be started or was killed by a signal.
int test_run(const char *const argv[], const char *log_path);

// test_tmpdir creates a fresh private directory named /tmp/certmint-PREFIX-XXXXXX into |out|.
bool test_tmpdir(char *out, size_t cap, const char *prefix);

// test_rmtree removes |dir| and everything in it; false if something could not be removed.
bool test_rmtree(const char *dir);

// test_read_file reads a whole file into a malloc'ed buffer (free() it).
bool test_read_file(const char *path, uint8_t **out_buf, size_t *out_len);

// test_write_file writes |len| bytes to |path| (created 0600, truncated).
bool test_write_file(const char *path, const void *buf, size_t len);

// test_path joins |dir| and |name| into |out|; aborts the test run on truncation.
const char *test_path(char *out, size_t cap, const char *dir, const char *name);

// test_token is a throwaway SoftHSM2 token: its own directory and softhsm2.conf, SOFTHSM2_CONF
// pointed at it for this process, initialised with an SO PIN and a user PIN.
typedef struct test_token {
    char dir[256];       // /tmp/certmint-token-XXXXXX
    char conf_path[320]; // dir/softhsm2.conf
    char label[33];      // token label
    char so_pin[32];
    char user_pin[32];
    const char *module; // path of the SoftHSM2 PKCS#11 module
    char *saved_conf;   // the SOFTHSM2_CONF value before create (restored by destroy)
    bool had_conf;
} test_token;

// test_token_create makes and initialises a token labelled |label| (softhsm2-util
// --init-token). Returns false, after printing why, on any failure.
bool test_token_create(test_token *t, const char *label);

// test_token_destroy removes the token's directory and restores SOFTHSM2_CONF. Safe on a
// zeroed or failed token.
void test_token_destroy(test_token *t);

// ---------------------------------------------------------------------------------------------
// A test PKI: fixture keys and certificates made with the openssl CLI, written as PEM files.
// Each helper runs openssl through test_run, its output appended to |log| (NULL: discarded),
// and returns true on success; on bad arguments or a failed openssl run it prints why (naming
// |log|) and returns false, having removed the files it was to write (the certificate, its DER
// copy, a key it was to generate). Files are created or replaced; nothing else is left behind.

// test_pki_key_type names the kinds of key the helpers generate (a zeroed spec: EC P-256).
typedef enum test_pki_key_type {
    TEST_PKI_EC_P256,       // ECDSA on P-256
    TEST_PKI_EC_SECP256K1,  // ECDSA on secp256k1 (a curve certmint does not accept)
    TEST_PKI_RSA_2048,      // RSA, 2048 bits
    TEST_PKI_ED25519,       // Ed25519
    TEST_PKI_ED448,         // Ed448
    TEST_PKI_KEY_TYPE_COUNT // not a key type
} test_pki_key_type;

// test_pki_cert_spec describes one certificate for test_pki_make_ca and test_pki_issue. Start
// from a zeroed struct ({0} or designated initialisers) and set what the fixture needs.
typedef struct test_pki_cert_spec {
    const char *subject;        // -subj, in openssl's "/O=x/CN=y" form (required)
    int days;                   // validity in days from now, 1..36500 (required)
    test_pki_key_type key_type; // the key generated into the key path
    bool key_exists;            // the key path names an existing key: certify it, generate none
    const char *serial;         // -set_serial ("7", "0x1234"); NULL: openssl picks a random one
    const char *const *addext;  // NULL-terminated -addext values (test_pki_make_ca only), or NULL
    const char *ext_file;       // an OpenSSL config file holding |ext_section|, or NULL
    const char *ext_section;    // the extensions section to use, or NULL for openssl's default
    const char *der_path;       // when non-NULL, a DER copy of the certificate is written here
} test_pki_cert_spec;

// test_pki_make_key generates a private key of |type| into |key_path| (PKCS#8 PEM, unencrypted;
// `openssl genpkey`).
bool test_pki_make_key(const char *key_path, test_pki_key_type type, const char *log);

// test_pki_make_ca writes a self-signed certificate for the key at |key_path| (generated first,
// unless spec->key_exists) to |cert_path| (`openssl req -x509`). Without spec->ext_file and
// spec->ext_section it carries openssl's default v3_ca extensions (basicConstraints CA:TRUE,
// subject and authority key identifiers), so it is a CA; spec->ext_file replaces openssl's
// configuration (-config) and spec->ext_section picks the extensions section (-extensions),
// e.g. a leaf section for a self-signed end entity; spec->addext adds extensions.
bool test_pki_make_ca(const char *key_path, const char *cert_path, const test_pki_cert_spec *spec,
                      const char *log);

// test_pki_issue writes to |cert_path| a certificate for the key at |key_path| (generated first,
// unless spec->key_exists) issued by the CA whose key and certificate are |ca_key_path| and
// |ca_cert_path|: a request (`openssl req -new`, to |cert_path|.csr, removed afterwards) signed
// by `openssl x509 -req`. Without spec->ext_file the certificate has no extensions; with it,
// the file is passed as -extfile and spec->ext_section (if set) as -extensions. An ext_section
// without an ext_file, and spec->addext, are refused.
bool test_pki_issue(const char *key_path, const char *cert_path, const char *ca_key_path,
                    const char *ca_cert_path, const test_pki_cert_spec *spec, const char *log);

// test_pki_read_cert reads the first PEM certificate of |path| (X509_free it); NULL when the
// file cannot be opened or holds none.
X509 *test_pki_read_cert(const char *path);

// test_pki_read_key reads the PEM private key at |path| (EVP_PKEY_free it); NULL when the file
// cannot be opened or holds none.
EVP_PKEY *test_pki_read_key(const char *path);

#endif // CERTMINT_TESTS_SUPPORT_TEST_SUPPORT_H
