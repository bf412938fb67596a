// The test PKI: fixture keys and certificates made with the openssl CLI.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "tests/support/test_support.h"

// How each key type is spelled for `genpkey -algorithm` and `req -newkey`, with its -pkeyopt.
typedef struct test_pki_key_args {
    const char *name;
    const char *pkeyopt; // NULL: none
} test_pki_key_args;

static const test_pki_key_args k_key_args[TEST_PKI_KEY_TYPE_COUNT] = {
    [TEST_PKI_EC_P256] = {"EC", "ec_paramgen_curve:P-256"},
    [TEST_PKI_EC_SECP256K1] = {"EC", "ec_paramgen_curve:secp256k1"},
    [TEST_PKI_RSA_2048] = {"RSA", "rsa_keygen_bits:2048"},
    [TEST_PKI_ED25519] = {"ED25519", NULL},
    [TEST_PKI_ED448] = {"ED448", NULL},
};

// An openssl command line being assembled; |ok| turns false when it would not fit.
typedef struct test_pki_argv {
    const char *v[48];
    size_t n;
    bool ok;
} test_pki_argv;

static void test_pki_argv_init(test_pki_argv *a, const char *cmd)
{
    a->n = 0;
    a->ok = true;
    a->v[a->n++] = "openssl";
    a->v[a->n++] = cmd;
    a->v[a->n] = NULL;
}

static void test_pki_push(test_pki_argv *a, const char *arg)
{
    if (a->n + 1 >= sizeof(a->v) / sizeof(a->v[0])) {
        a->ok = false;
        return;
    }
    a->v[a->n++] = arg;
    a->v[a->n] = NULL;
}

static void test_pki_push2(test_pki_argv *a, const char *opt, const char *val)
{
    test_pki_push(a, opt);
    test_pki_push(a, val);
}

// test_pki_run runs the assembled command; |what| names the fixture in the failure message.
static bool test_pki_run(const test_pki_argv *a, const char *fn, const char *what, const char *log)
{
    if (!a->ok) {
        fprintf(stderr, "%s: %s: too many openssl arguments\n", fn, what);
        return false;
    }
    if (test_run(a->v, log) != 0) {
        fprintf(stderr, "%s: openssl %s failed for %s; see %s\n", fn, a->v[1], what,
                log != NULL ? log : "(no log: pass a log path)");
        return false;
    }
    return true;
}

static bool test_pki_key_type_ok(test_pki_key_type type)
{
    return (unsigned)type < TEST_PKI_KEY_TYPE_COUNT;
}

// test_pki_push_key adds the key options of a request: the existing key, or a new one.
static void test_pki_push_key(test_pki_argv *a, const char *key_path,
                              const test_pki_cert_spec *spec)
{
    if (spec->key_exists) {
        test_pki_push2(a, "-key", key_path);
        return;
    }
    const test_pki_key_args *k = &k_key_args[spec->key_type];
    test_pki_push2(a, "-newkey", k->name);
    if (k->pkeyopt != NULL) {
        test_pki_push2(a, "-pkeyopt", k->pkeyopt);
    }
    test_pki_push(a, "-nodes");
    test_pki_push2(a, "-keyout", key_path);
}

// test_pki_spec_ok checks what both certificate helpers need.
static bool test_pki_spec_ok(const char *fn, const char *key_path, const char *cert_path,
                             const test_pki_cert_spec *spec)
{
    if (key_path == NULL || cert_path == NULL || spec == NULL || spec->subject == NULL) {
        fprintf(stderr, "%s: key path, certificate path, spec and subject are required\n", fn);
        return false;
    }
    if (spec->subject[0] != '/') {
        fprintf(stderr, "%s: subject \"%s\" is not in the /O=x/CN=y form\n", fn, spec->subject);
        return false;
    }
    if (spec->days < 1 || spec->days > 36500) {
        fprintf(stderr, "%s: %s: validity of %d days is not in 1..36500\n", fn, spec->subject,
                spec->days);
        return false;
    }
    if (!spec->key_exists && !test_pki_key_type_ok(spec->key_type)) {
        fprintf(stderr, "%s: %s: unknown key type %d\n", fn, spec->subject, (int)spec->key_type);
        return false;
    }
    return true;
}

// test_pki_der_copy writes the DER copy of |cert_path| that spec->der_path asks for.
static bool test_pki_der_copy(const char *fn, const char *cert_path, const test_pki_cert_spec *spec,
                              const char *log)
{
    if (spec->der_path == NULL) {
        return true;
    }
    test_pki_argv a;
    test_pki_argv_init(&a, "x509");
    test_pki_push2(&a, "-in", cert_path);
    test_pki_push2(&a, "-outform", "DER");
    test_pki_push2(&a, "-out", spec->der_path);
    return test_pki_run(&a, fn, spec->subject, log);
}

// test_pki_fail removes what a failed helper was asked to write, so a half-written or empty
// file (openssl opens its output before it fails) cannot pass for a fixture.
static bool test_pki_fail(const char *key_path, const char *cert_path,
                          const test_pki_cert_spec *spec)
{
    if (!spec->key_exists) {
        (void)unlink(key_path);
    }
    (void)unlink(cert_path);
    if (spec->der_path != NULL) {
        (void)unlink(spec->der_path);
    }
    return false;
}

bool test_pki_make_key(const char *key_path, test_pki_key_type type, const char *log)
{
    if (key_path == NULL || !test_pki_key_type_ok(type)) {
        fprintf(stderr, "test_pki_make_key: a key path and a known key type are required\n");
        return false;
    }
    const test_pki_key_args *k = &k_key_args[type];
    test_pki_argv a;
    test_pki_argv_init(&a, "genpkey");
    test_pki_push2(&a, "-algorithm", k->name);
    if (k->pkeyopt != NULL) {
        test_pki_push2(&a, "-pkeyopt", k->pkeyopt);
    }
    test_pki_push2(&a, "-out", key_path);
    if (!test_pki_run(&a, "test_pki_make_key", key_path, log)) {
        (void)unlink(key_path);
        return false;
    }
    return true;
}

bool test_pki_make_ca(const char *key_path, const char *cert_path, const test_pki_cert_spec *spec,
                      const char *log)
{
    static const char fn[] = "test_pki_make_ca";
    if (!test_pki_spec_ok(fn, key_path, cert_path, spec)) {
        return false;
    }
    char days[16];
    (void)snprintf(days, sizeof(days), "%d", spec->days);
    test_pki_argv a;
    test_pki_argv_init(&a, "req");
    test_pki_push(&a, "-x509");
    if (spec->key_exists) {
        test_pki_push(&a, "-new");
    }
    test_pki_push_key(&a, key_path, spec);
    test_pki_push2(&a, "-out", cert_path);
    test_pki_push2(&a, "-subj", spec->subject);
    test_pki_push2(&a, "-days", days);
    if (spec->serial != NULL) {
        test_pki_push2(&a, "-set_serial", spec->serial);
    }
    for (size_t i = 0; spec->addext != NULL && spec->addext[i] != NULL; i++) {
        test_pki_push2(&a, "-addext", spec->addext[i]);
    }
    if (spec->ext_file != NULL) {
        test_pki_push2(&a, "-config", spec->ext_file);
    }
    if (spec->ext_section != NULL) {
        test_pki_push2(&a, "-extensions", spec->ext_section);
    }
    if (!test_pki_run(&a, fn, spec->subject, log) || !test_pki_der_copy(fn, cert_path, spec, log)) {
        return test_pki_fail(key_path, cert_path, spec);
    }
    return true;
}

bool test_pki_issue(const char *key_path, const char *cert_path, const char *ca_key_path,
                    const char *ca_cert_path, const test_pki_cert_spec *spec, const char *log)
{
    static const char fn[] = "test_pki_issue";
    if (!test_pki_spec_ok(fn, key_path, cert_path, spec)) {
        return false;
    }
    if (ca_key_path == NULL || ca_cert_path == NULL) {
        fprintf(stderr, "%s: %s: the issuing CA's key and certificate are required\n", fn,
                spec->subject);
        return false;
    }
    if (spec->addext != NULL || (spec->ext_section != NULL && spec->ext_file == NULL)) {
        fprintf(stderr, "%s: %s: extensions come from ext_file (addext is not copied)\n", fn,
                spec->subject);
        return false;
    }
    char csr[512], days[16];
    int n = snprintf(csr, sizeof(csr), "%s.csr", cert_path);
    if (n < 0 || (size_t)n >= sizeof(csr)) {
        fprintf(stderr, "%s: %s: path too long\n", fn, cert_path);
        return false;
    }
    (void)snprintf(days, sizeof(days), "%d", spec->days);
    test_pki_argv req;
    test_pki_argv_init(&req, "req");
    test_pki_push(&req, "-new");
    test_pki_push_key(&req, key_path, spec);
    test_pki_push2(&req, "-subj", spec->subject);
    test_pki_push2(&req, "-out", csr);

    test_pki_argv x;
    test_pki_argv_init(&x, "x509");
    test_pki_push(&x, "-req");
    test_pki_push2(&x, "-in", csr);
    test_pki_push2(&x, "-CA", ca_cert_path);
    test_pki_push2(&x, "-CAkey", ca_key_path);
    if (spec->serial != NULL) {
        test_pki_push2(&x, "-set_serial", spec->serial);
    }
    test_pki_push2(&x, "-days", days);
    if (spec->ext_file != NULL) {
        test_pki_push2(&x, "-extfile", spec->ext_file);
    }
    if (spec->ext_section != NULL) {
        test_pki_push2(&x, "-extensions", spec->ext_section);
    }
    test_pki_push2(&x, "-out", cert_path);
    const bool ok =
        test_pki_run(&req, fn, spec->subject, log) && test_pki_run(&x, fn, spec->subject, log);
    (void)unlink(csr);
    if (!ok || !test_pki_der_copy(fn, cert_path, spec, log)) {
        return test_pki_fail(key_path, cert_path, spec);
    }
    return true;
}

// test_pki_read_pem reads one PEM object of |path|: a private key or a certificate.
static void *test_pki_read_pem(const char *path, bool key)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    void *v = key ? (void *)PEM_read_PrivateKey(f, NULL, NULL, NULL)
                  : (void *)PEM_read_X509(f, NULL, NULL, NULL);
    (void)fclose(f);
    if (v == NULL) {
        ERR_clear_error(); // the queue is per thread: keep it from the next check
    }
    return v;
}

X509 *test_pki_read_cert(const char *path)
{
    return test_pki_read_pem(path, false);
}

EVP_PKEY *test_pki_read_key(const char *path)
{
    return test_pki_read_pem(path, true);
}
