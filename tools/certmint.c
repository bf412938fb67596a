// certmint: the admin tool.
//
//   certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|ed25519]
//                 [--subject DN] [--days N] [--port N]
//   certmint keys -c CONF
//   certmint secret add|list|remove -c CONF [--ref REF] [--secret-file F] [--ca NAME]
//   certmint list -c CONF [--ca NAME] [--status S] [--subject SUBSTR] [--json]
//   certmint show -c CONF [--ca NAME] SERIAL
//   certmint revoke -c CONF [--ca NAME] SERIAL [--reason NAME]
//   certmint crl -c CONF [--ca NAME] [--out FILE] [--days N]
//
// `init` makes a complete instance in DIR: a new SoftHSM2 token (own softhsm2.conf, SO and user
// PINs in 0600 files), the CA key pair generated inside the token, a self-signed root CA
// certificate signed through PKCS#11, a demo MAC secret, a ready certmint.cnf with a `devices`
// profile, and an `env` file with the SOFTHSM2_CONF the daemon needs. It refuses to overwrite
// an existing instance. The other commands work on the instance a configuration describes,
// through the same engine modules as the daemon (cfg, store, hsm, srv_crl_issue); the commands
// that open the token read SOFTHSM2_CONF from the env file next to the configuration when the
// environment lacks it. Exit codes: 0 ok, 1 failed, 2 usage.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "engine/ca/ca.h"
#include "engine/config/cfg.h"
#include "engine/server/srv.h"
#include "engine/store/store.h"
#include "hsm/hsm.h"

extern char **environ;

#define TOOL_TOKEN_LABEL "certmint"

typedef struct tool_init_opts {
    const char *dir;
    const char *key_type;
    const char *subject;
    int days;
    int port;
    const char *module;   // an existing PKCS#11 module instead of a new SoftHSM2 token
    const char *token;    // its token label (with module)
    const char *pin_file; // the user PIN (with module)
    bool csr;             // make a CSR for an external parent instead of a self-signed root
} tool_init_opts;

static int tool_usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|ed25519]\n"
               "                [--subject DN] [--days N] [--port N] [--csr]\n"
               "                [--module PATH --token LABEL --pin-file FILE]\n"
               "  certmint import-ca-cert -c CONF --cert FILE [--chain FILE]\n"
               "  certmint keys -c CONF\n"
               "  certmint secret add|list|remove -c CONF [--ref REF] [--secret-file F]\n"
               "  certmint list -c CONF [--status valid|revoked|hold|unconfirmed]\n"
               "                [--subject SUBSTR] [--json]\n"
               "  certmint show -c CONF SERIAL\n"
               "  certmint revoke -c CONF SERIAL [--reason NAME]\n"
               "  certmint crl -c CONF [--ca NAME] [--out FILE] [--days N]\n"
               "Run 'certmint COMMAND --help' for details. Exit: 0 ok, 1 failed, 2 usage.\n");
    return f == stdout ? 0 : 2;
}

static bool tool_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "certmint: cannot create %s: %s\n", path, strerror(errno));
        return false;
    }
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "certmint: cannot write %s: %s\n", path, strerror(errno));
            (void)close(fd);
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd) == 0;
}

// tool_random_text makes |n| characters of [a-zA-Z0-9] from RAND_bytes (no modulo bias: 62
// symbols drawn by rejection).
static bool tool_random_text(char *out, size_t n)
{
    static const char k_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t i = 0;
    while (i < n) {
        uint8_t b[32];
        if (RAND_bytes(b, sizeof(b)) != 1) {
            return false;
        }
        for (size_t k = 0; k < sizeof(b) && i < n; k++) {
            if (b[k] < 248) {
                out[i++] = k_alpha[b[k] % 62];
            }
        }
    }
    out[n] = '\0';
    return true;
}

static int tool_spawn(const char *const argv[])
{
    pid_t pid;
    posix_spawn_file_actions_t fa;
    (void)posix_spawn_file_actions_init(&fa);
    (void)posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *const *args = (char *const *)(uintptr_t)argv;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, args, environ);
    (void)posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "certmint: cannot run %s: %s (apt-get install softhsm2)\n", argv[0],
                strerror(rc));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// tool_parse_dn turns "/CN=x/O=y" into a DER Name (OpenSSL's text form; '/' inside a value is
// not supported).
static bool tool_parse_dn(const char *text, uint8_t **out, size_t *out_len)
{
    X509_NAME *n = X509_NAME_new();
    char *copy = strdup(text);
    bool ok = n != NULL && copy != NULL && text[0] == '/';
    char *save = NULL;
    for (char *part = ok ? strtok_r(copy + 1, "/", &save) : NULL; ok && part != NULL;
         part = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(part, '=');
        ok = eq != NULL && eq != part && eq[1] != '\0';
        if (ok) {
            *eq = '\0';
            ok = X509_NAME_add_entry_by_txt(n, part, MBSTRING_UTF8, (unsigned char *)(eq + 1), -1,
                                            -1, 0) == 1;
        }
    }
    unsigned char *der = NULL;
    int len = ok ? i2d_X509_NAME(n, &der) : -1;
    X509_NAME_free(n);
    free(copy);
    if (len <= 2) {
        OPENSSL_free(der);
        fprintf(stderr, "certmint: --subject '%s' is not a DN like /CN=Example Root CA/O=Example\n",
                text);
        return false;
    }
    *out = (uint8_t *)der;
    *out_len = (size_t)len;
    return true;
}


// tool_issue builds one certificate signed by |signer| through the pool: |ca| NULL makes the
// self-signed root for |subject_key| (ca_root_tbs_build), otherwise a CMP protection
// certificate issued by |ca| (ca_cmp_tbs_build: keyUsage digitalSignature, EKU id-kp-cmcCA,
// SKI, AKI). |*out| is malloc'ed DER.
static bool tool_issue(hsm_pool *pool, const hsm_key *signer, hsm_sig_alg alg,
                       const ca_authority *ca, const hsm_key *subject_key, cm_span name, int days,
                       uint8_t **out, size_t *out_len)
{
    uint8_t serial[CA_SERIAL_LEN];
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    const int64_t now = cm_time_now();
    der_builder ab, tb, cb;
    der_builder_init(&ab, 64);
    der_builder_init(&tb, 1024);
    der_builder_init(&cb, 2048);
    hsm_sig_alg_marshal(&ab, alg);
    cm_span alg_der, tbs;
    cm_result res = ca_serial_new(serial);
    if (cm_ok(res)) {
        res = der_builder_finish(&ab, &alg_der);
    }
    if (cm_ok(res)) {
        const cm_span sn = cm_span_make(serial, sizeof(serial));
        const cm_span spki = hsm_key_get0_spki(subject_key);
        const int64_t nb = now - 300, na = now + (int64_t)days * 86400;
        res = ca == NULL ? ca_root_tbs_build(&tb, name, spki, sn, nb, na, alg_der)
                         : ca_cmp_tbs_build(ca, &tb, name, spki, sn, nb, na, alg_der);
    }
    if (cm_ok(res)) {
        res = der_builder_finish(&tb, &tbs);
    }
    if (cm_ok(res)) {
        res = hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), signer, alg, tbs);
    }
    if (cm_ok(res)) {
        res = ca_signed_assemble(&cb, tbs, alg_der, cm_span_make(sig, sig_len));
    }
    uint8_t *buf = NULL;
    if (cm_ok(res)) {
        res = der_builder_take(&cb, &buf, out_len);
    }
    der_builder_cleanup(&ab);
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    if (!cm_ok(res)) {
        fprintf(stderr, "certmint: cannot build the %s certificate: %s\n",
                ca == NULL ? "root" : "CMP protection", cm_result_name(res));
        return false;
    }
    *out = buf;
    return true;
}

// tool_csr_write makes a PKCS#10 request (RFC 2986) for the CA key, signed in the token, and
// writes it as PEM to |path|: subject |name|, no attributes (the parent sets the extensions).
static bool tool_csr_write(hsm_pool *pool, const hsm_key *key, hsm_sig_alg alg, cm_span name,
                           const char *path)
{
    der_builder ib, ab, cb;
    der_builder_init(&ib, 1024);
    der_builder_init(&ab, 64);
    der_builder_init(&cb, 2048);
    // CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) }, subject Name,
    //     subjectPKInfo SubjectPublicKeyInfo, attributes [0] Attributes }
    der_mark m;
    der_open(&ib, &m, DER_TAG_SEQUENCE);
    der_put_i64(&ib, 0);
    der_put_raw(&ib, name);
    der_put_raw(&ib, hsm_key_get0_spki(key));
    der_put_tlv(&ib, DER_CONTEXT_CONS(0), cm_span_make(NULL, 0));
    der_close(&ib, &m);
    hsm_sig_alg_marshal(&ab, alg);
    cm_span info, alg_der, csr;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    cm_result r = der_builder_finish(&ib, &info);
    if (cm_ok(r)) {
        r = der_builder_finish(&ab, &alg_der);
    }
    if (cm_ok(r)) {
        r = hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), key, alg, info);
    }
    if (cm_ok(r)) {
        // CertificationRequest has the shape of a Certificate: SEQUENCE { info, alg, BIT STRING }.
        r = ca_signed_assemble(&cb, info, alg_der, cm_span_make(sig, sig_len));
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&cb, &csr);
    }
    bool ok = false;
    if (cm_ok(r)) {
        const unsigned char *q = csr.p;
        X509_REQ *req = d2i_X509_REQ(NULL, &q, (long)csr.len);
        BIO *bio = BIO_new(BIO_s_mem());
        char *pem = NULL;
        ok = req != NULL && bio != NULL && PEM_write_bio_X509_REQ(bio, req) == 1;
        const long n = ok ? BIO_get_mem_data(bio, &pem) : 0;
        ok = ok && n > 0 && tool_write_file(path, pem, (size_t)n, 0644);
        BIO_free(bio);
        X509_REQ_free(req);
    }
    der_builder_cleanup(&ib);
    der_builder_cleanup(&ab);
    der_builder_cleanup(&cb);
    if (!ok) {
        fprintf(stderr, "certmint init: cannot write the CA request %s: %s\n", path,
                cm_result_name(r));
    }
    return ok;
}

static bool tool_write_pem_cert(const char *path, const uint8_t *der, size_t len)
{
    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, (long)len);
    BIO *bio = BIO_new(BIO_s_mem());
    bool ok = x != NULL && bio != NULL && PEM_write_bio_X509(bio, x) == 1;
    char *pem = NULL;
    long n = ok ? BIO_get_mem_data(bio, &pem) : 0;
    ok = ok && n > 0 && tool_write_file(path, pem, (size_t)n, 0644);
    BIO_free(bio);
    X509_free(x);
    return ok;
}

static const char *tool_path(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

// tool_mkdir_parents creates the missing parent folders of |path| (mode 0755, like mkdir -p),
// so `certmint init --dir var/demo` works in a fresh clone without var/.
static bool tool_mkdir_parents(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
        fprintf(stderr, "certmint init: --dir is too long\n");
        return false;
    }
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') {
        buf[--n] = '\0';
    }
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "certmint init: cannot create %s: %s\n", buf, strerror(errno));
            return false;
        }
        *p = '/';
    }
    return true;
}

static int tool_init(const tool_init_opts *o)
{
    static const struct {
        const char *name;
        hsm_keygen_type type;
    } k_types[] = {{"ec-p256", HSM_KEYGEN_EC_P256},
                   {"ec-p384", HSM_KEYGEN_EC_P384},
                   {"rsa2048", HSM_KEYGEN_RSA_2048},
                   {"rsa3072", HSM_KEYGEN_RSA_3072},
                   {"ed25519", HSM_KEYGEN_ED25519}};
    hsm_keygen_type kt = HSM_KEYGEN_EC_P256;
    bool found = false;
    for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++) {
        if (strcmp(o->key_type, k_types[i].name) == 0) {
            kt = k_types[i].type;
            found = true;
        }
    }
    if (!found || o->days < 1 || o->port < 1 || o->port > 65535) {
        fprintf(stderr, "certmint init: bad --key-type, --days or --port (see --help)\n");
        return 2;
    }
    char dir[PATH_MAX], p[PATH_MAX + 64], p2[PATH_MAX + 64];
    if (!tool_mkdir_parents(o->dir) || (mkdir(o->dir, 0700) != 0 && errno != EEXIST)) {
        fprintf(stderr, "certmint init: cannot create %s: %s\n", o->dir, strerror(errno));
        return 1;
    }
    if (realpath(o->dir, dir) == NULL) {
        fprintf(stderr, "certmint init: %s: %s\n", o->dir, strerror(errno));
        return 1;
    }
    struct stat st;
    if (stat(tool_path(p, sizeof(p), dir, "certmint.cnf"), &st) == 0 ||
        stat(tool_path(p, sizeof(p), dir, "tokens"), &st) == 0) {
        fprintf(stderr,
                "certmint init: %s already holds an instance; refusing to overwrite it "
                "(remove the folder or pick another --dir)\n",
                dir);
        return 1;
    }
    uint8_t *name_der = NULL;
    size_t name_len = 0;
    if (!tool_parse_dn(o->subject, &name_der, &name_len)) {
        return 2;
    }
    // The token: own configuration, PINs in 0600 files.
    char so_pin[25], user_pin[25], secret[33], conf[PATH_MAX * 2];
    int rc = 1;
    hsm_token *tok = NULL;
    hsm_key *key = NULL, *cmp_key = NULL;
    hsm_pool *pool = NULL;
    ca_authority *authority = NULL;
    store *db = NULL;
    uint8_t *cert = NULL, *cmp_cert = NULL, *cmp_name = NULL;
    size_t cert_len = 0, cmp_cert_len = 0, cmp_name_len = 0;
    char pin_path[PATH_MAX];
    if (o->module != NULL && realpath(o->pin_file, pin_path) == NULL) {
        fprintf(stderr, "certmint init: --pin-file %s: %s\n", o->pin_file, strerror(errno));
        return 1;
    }
    if (!tool_random_text(so_pin, 24) || !tool_random_text(user_pin, 24) ||
        !tool_random_text(secret, 32) ||
        (o->module == NULL && mkdir(tool_path(p, sizeof(p), dir, "tokens"), 0700) != 0) ||
        mkdir(tool_path(p, sizeof(p), dir, "secrets"), 0700) != 0) {
        fprintf(stderr, "certmint init: cannot prepare %s: %s\n", dir, strerror(errno));
        goto out;
    }
    if (o->module != NULL) {
        // An existing token of any PKCS#11 module: nothing to create but the keys.
        if (!tool_write_file(tool_path(p, sizeof(p), dir, "secrets/demo-device"), secret, 32,
                             0600)) {
            goto out;
        }
        goto token_ready;
    }
    int n = snprintf(conf, sizeof(conf),
                     "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
                     "log.level = ERROR\nslots.removable = false\n",
                     dir);
    if (!tool_write_file(tool_path(p, sizeof(p), dir, "softhsm2.conf"), conf, (size_t)n, 0600) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "so.pin"), so_pin, 24, 0600) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "user.pin"), user_pin, 24, 0600) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "secrets/demo-device"), secret, 32, 0600)) {
        goto out;
    }
    (void)setenv("SOFTHSM2_CONF", tool_path(p, sizeof(p), dir, "softhsm2.conf"), 1);
    const char *init_argv[] = {
        "softhsm2-util", "--init-token", "--free", "--label", TOOL_TOKEN_LABEL,
        "--so-pin",      so_pin,         "--pin",  user_pin,  NULL};
    if (tool_spawn(init_argv) != 0) {
        fprintf(stderr, "certmint init: softhsm2-util --init-token failed\n");
        goto out;
    }
token_ready:;
    char uri[PATH_MAX * 2], cmp_uri[PATH_MAX * 2], pin_src[PATH_MAX + 32];
    const char *module = o->module != NULL ? o->module : CM_SOFTHSM2_MODULE_PATH;
    const char *label = o->token != NULL ? o->token : TOOL_TOKEN_LABEL;
    (void)snprintf(pin_src, sizeof(pin_src), "%s", o->module != NULL ? pin_path : dir);
    if (o->module == NULL) {
        (void)snprintf(pin_src, sizeof(pin_src), "%s/user.pin", dir);
    }
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=ca?module-path=%s&pin-source=file:%s",
                   label, module, pin_src);
    (void)snprintf(cmp_uri, sizeof(cmp_uri),
                   "pkcs11:token=%s;object=cmp?module-path=%s&pin-source=file:%s", label, module,
                   pin_src);
    hsm_error err;
    memset(&err, 0, sizeof(err));
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = 1;
    cm_result r = hsm_token_open(&tok, &err, uri);
    if (cm_ok(r)) {
        r = hsm_key_generate(tok, &key, &err, kt, "ca", CM_SPAN_LIT("\x01"));
    }
    // The CMP protection key: P-256 whatever the CA key is (it signs every signed response).
    if (cm_ok(r)) {
        r = hsm_key_generate(tok, &cmp_key, &err, HSM_KEYGEN_EC_P256, "cmp", CM_SPAN_LIT("\x02"));
    }
    if (cm_ok(r)) {
        r = hsm_pool_new(&pool, tok, &po);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint init: PKCS#11: %s (%s)\n", err.msg, hsm_result_name(r));
        goto out;
    }
    if (o->csr) {
        if (!tool_csr_write(pool, key, hsm_sig_alg_for_key(key), cm_span_make(name_der, name_len),
                            tool_path(p, sizeof(p), dir, "ca.csr"))) {
            goto out;
        }
        goto write_config;
    }
    if (!tool_issue(pool, key, hsm_sig_alg_for_key(key), NULL, key,
                    cm_span_make(name_der, name_len), o->days, &cert, &cert_len) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "ca.pem"), cert, cert_len)) {
        goto out;
    }
    // The CMP protection certificate, issued by the CA with id-kp-cmcCA (RFC 9483 §3.1).
    char err_s[512];
    if (!cm_ok(ca_authority_load(&authority, err_s, sizeof(err_s),
                                 tool_path(p, sizeof(p), dir, "ca.pem"), NULL)) ||
        !tool_parse_dn("/O=certmint/CN=certmint CMP protection", &cmp_name, &cmp_name_len) ||
        !tool_issue(pool, key, hsm_sig_alg_for_key(key), authority, cmp_key,
                    cm_span_make(cmp_name, cmp_name_len), o->days, &cmp_cert, &cmp_cert_len) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "cmp.pem"), cmp_cert, cmp_cert_len)) {
        fprintf(stderr, "certmint init: cannot issue the CMP protection certificate\n");
        goto out;
    }
    // The store, created now so that read commands find it.
    char store_url[PATH_MAX + 32];
    (void)snprintf(store_url, sizeof(store_url), "sqlite:%s/certmint.db", dir);
    if (!cm_ok(store_open(&db, store_url, NULL))) {
        fprintf(stderr, "certmint init: cannot create the store %s\n", store_url);
        goto out;
    }
    store_close(db);
    db = NULL;
write_config:;

    n = snprintf(conf, sizeof(conf),
                 "# certmint instance made by 'certmint init' (see README: configuration)\n"
                 "[certmintd]\n"
                 "listen = 127.0.0.1:%d\n"
                 "io_threads = 2\n"
                 "hsm_sessions = 2\n"
                 "store = sqlite:certmint.db\n"
                 "default_ca = devices\n"
                 "log_level = info\n"
                 "\n"
                 "[ca:devices]\n"
                 "key = %s\n"
                 "cert = ca.pem\n"
                 "cmp_key = %s\n"
                 "cmp_cert = cmp.pem\n"
                 "profile = devices\n"
                 "clients = devices\n"
                 "caPubs = on\n"
                 "\n"
                 "[profile:devices]\n"
                 "validity_days = 365\n"
                 "max_validity_days = 825\n"
                 "key_types = P-256, P-384, RSA, Ed25519\n"
                 "rsa_min_bits = 2048\n"
                 "rsa_max_bits = 4096\n"
                 "san_types = dns, ip\n"
                 "implicit_confirm = on\n"
                 "extensions = devices_ext\n"
                 "\n"
                 "[devices_ext]\n"
                 "basicConstraints = critical, CA:FALSE\n"
                 "keyUsage = critical, digitalSignature\n"
                 "extendedKeyUsage = clientAuth\n"
                 "\n"
                 "[clients:devices]\n"
                 "secret.demo-device = secrets/demo-device\n",
                 o->port, uri, cmp_uri);
    if (o->module == NULL) {
        (void)snprintf(p2, sizeof(p2), "SOFTHSM2_CONF=%s/softhsm2.conf\n", dir);
    } else if (getenv("SOFTHSM2_CONF") != NULL) {
        (void)snprintf(p2, sizeof(p2), "SOFTHSM2_CONF=%s\n", getenv("SOFTHSM2_CONF"));
    } else {
        p2[0] = '\0';
    }
    if (n < 0 || (size_t)n >= sizeof(conf) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "certmint.cnf"), conf, (size_t)n, 0600) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "env"), p2, strlen(p2), 0644)) {
        goto out;
    }
    printf("certmint: instance created in %s\n"
           "  CA key           %s key 'ca' in token '%s' (%s)\n",
           dir, o->key_type, label, module);
    if (o->csr) {
        printf("  CA request       %s/ca.csr: have your parent CA sign it (basicConstraints\n"
               "                   CA:TRUE, keyUsage keyCertSign cRLSign), then run\n"
               "                   certmint import-ca-cert -c %s/certmint.cnf --cert SIGNED.pem "
               "[--chain CHAIN.pem]\n",
               dir, dir);
    } else {
        printf("  CA certificate   %s/ca.pem (self-signed root)\n"
               "  CMP protection   %s/cmp.pem (EC P-256 key 'cmp', id-kp-cmcCA, issued by the "
               "CA)\n",
               dir, dir);
    }
    printf("  configuration    %s/certmint.cnf\n"
           "  demo MAC secret  reference 'demo-device', secret '%s' (stored in %s/secrets, 0600)\n",
           dir, secret, dir);
    if (p2[0] != '\0') {
        printf("  the daemon needs %.*s in its environment (%s/env)\n", (int)strlen(p2) - 1, p2,
               dir);
    }
    rc = 0;
out:
    OPENSSL_cleanse(so_pin, sizeof(so_pin));
    OPENSSL_cleanse(user_pin, sizeof(user_pin));
    OPENSSL_cleanse(secret, sizeof(secret));
    free(cert);
    free(cmp_cert);
    OPENSSL_free(cmp_name);
    OPENSSL_free(name_der);
    ca_authority_free(authority);
    hsm_pool_free(pool);
    hsm_key_free(cmp_key);
    hsm_key_free(key);
    hsm_token_free(tok);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Command line parsing shared by the subcommands that take -c CONF.

typedef struct tool_opt {
    const char *name;   // "--ca"; "-c" is spelled as its own entry
    const char **value; // where the value goes; NULL for a flag
    bool *flag;         // set for a flag
} tool_opt;

// tool_args_parse walks argv[first..]: options listed in |opts| (as "--name VALUE" or
// "--name=VALUE"), "--help"/"-h", and up to |max_pos| positional arguments. Returns -1 to go
// on, 0 when the help was printed, 2 after a usage error was printed.
static int tool_args_parse(int argc, char **argv, int first, const tool_opt *opts, size_t num_opts,
                           const char **pos, size_t max_pos, size_t *out_num_pos, const char *cmd,
                           const char *help)
{
    *out_num_pos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(help, stdout);
            return 0;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (*out_num_pos == max_pos) {
                fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", cmd, a);
                return 2;
            }
            pos[(*out_num_pos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        const size_t name_len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const tool_opt *o = NULL;
        for (size_t k = 0; k < num_opts; k++) {
            if (strlen(opts[k].name) == name_len && strncmp(opts[k].name, a, name_len) == 0) {
                o = &opts[k];
            }
        }
        if (o == NULL) {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", cmd, a);
            return 2;
        }
        if (o->value == NULL) {
            if (eq != NULL) {
                fprintf(stderr, "%s: %.*s takes no value\n", cmd, (int)name_len, a);
                return 2;
            }
            *o->flag = true;
        } else if (eq != NULL) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            fprintf(stderr, "%s: %s needs a value (see --help)\n", cmd, a);
            return 2;
        }
    }
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Small helpers: time, serials, reasons, JSON.

static void tool_time_text(char *out, size_t cap, int64_t t)
{
    if (t == 0) {
        (void)snprintf(out, cap, "-");
        return;
    }
    int y, mo, d, h, mi, s;
    cm_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
    (void)snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, s);
}

#define TOOL_SERIAL_MAX 21u // 20 octets of magnitude and a sign octet

// tool_serial_parse reads a serial number as hex: any case, an optional 0x, colons or spaces
// between digits allowed ("3F:0A", "0x3f0a", "3F0A" are the same). |out| receives the content
// octets of the DER INTEGER (minimal, positive: a 00 octet when the top bit is set), which is
// how the store keys certificates.
static bool tool_serial_parse(const char *text, uint8_t out[TOOL_SERIAL_MAX], size_t *out_len)
{
    const char *p = text;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
    }
    uint8_t nib[2 * TOOL_SERIAL_MAX];
    size_t n = 0, digits = 0;
    for (; *p != '\0'; p++) {
        const char c = *p;
        int v;
        if (c >= '0' && c <= '9') {
            v = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v = c - 'A' + 10;
        } else if (c == ':' || c == ' ') {
            continue;
        } else {
            return false;
        }
        digits++;
        if (n == 0 && v == 0) {
            continue; // leading zeros are not part of the value
        }
        if (n == sizeof(nib)) {
            return false;
        }
        nib[n++] = (uint8_t)v;
    }
    if (digits == 0) {
        return false;
    }
    if (n == 0) {
        out[0] = 0; // the value 0
        *out_len = 1;
        return true;
    }
    if ((n + 1) / 2 > TOOL_SERIAL_MAX - 1) {
        return false;
    }
    // The magnitude, then a 00 sign octet in front when its top bit is set.
    uint8_t mag[TOOL_SERIAL_MAX];
    size_t k = 0, i = 0;
    if (n % 2 == 1) {
        mag[k++] = nib[i++];
    }
    for (; i < n; i += 2) {
        mag[k++] = (uint8_t)(nib[i] << 4 | nib[i + 1]);
    }
    size_t o = 0;
    if (mag[0] & 0x80) {
        out[o++] = 0;
    }
    memcpy(out + o, mag, k);
    *out_len = o + k;
    return true;
}

// tool_serial_text prints the serial as `openssl x509 -serial` does: the magnitude in
// upper-case hex, two digits an octet.
static void tool_serial_text(char *out, size_t cap, cm_span serial)
{
    size_t i = 0;
    while (serial.len - i > 1 && serial.p[i] == 0) {
        i++;
    }
    size_t o = 0;
    for (; i < serial.len && o + 3 <= cap; i++) {
        (void)snprintf(out + o, cap - o, "%02X", serial.p[i]);
        o += 2;
    }
    out[o < cap ? o : cap - 1] = '\0';
}

static const char *const k_tool_reasons[] = {
    [STORE_REASON_UNSPECIFIED] = "unspecified",
    [STORE_REASON_KEY_COMPROMISE] = "keyCompromise",
    [STORE_REASON_CA_COMPROMISE] = "cACompromise",
    [STORE_REASON_AFFILIATION_CHANGED] = "affiliationChanged",
    [STORE_REASON_SUPERSEDED] = "superseded",
    [STORE_REASON_CESSATION_OF_OPERATION] = "cessationOfOperation",
    [STORE_REASON_CERTIFICATE_HOLD] = "certificateHold",
    [STORE_REASON_REMOVE_FROM_CRL] = "removeFromCRL",
    [STORE_REASON_PRIVILEGE_WITHDRAWN] = "privilegeWithdrawn",
    [STORE_REASON_AA_COMPROMISE] = "aACompromise",
};
#define TOOL_NUM_REASONS (sizeof(k_tool_reasons) / sizeof(k_tool_reasons[0]))

static const char *tool_reason_name(int reason)
{
    if (reason < 0 || (size_t)reason >= TOOL_NUM_REASONS || k_tool_reasons[reason] == NULL) {
        return "-";
    }
    return k_tool_reasons[reason];
}

// tool_reason_parse maps a CRLReason name (RFC 5280 §5.3.1; case does not matter) to its value.
static int tool_reason_parse(const char *name)
{
    for (size_t i = 0; i < TOOL_NUM_REASONS; i++) {
        if (k_tool_reasons[i] != NULL && strcasecmp(k_tool_reasons[i], name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static const char *tool_status_name(store_cert_status s)
{
    switch (s) {
    case STORE_CERT_UNCONFIRMED:
        return "unconfirmed";
    case STORE_CERT_VALID:
        return "valid";
    case STORE_CERT_REVOKED:
        return "revoked";
    case STORE_CERT_HOLD:
        return "hold";
    default:
        return "?";
    }
}

// tool_json_string writes |s| as a JSON string (RFC 8259 §7): quotes, backslashes and control
// characters escaped, everything else (UTF-8) as is.
static void tool_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(f, "\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}

// ---------------------------------------------------------------------------------------------
// Opening an instance: the configuration, the store, the token.

typedef struct tool_inst {
    const char *cmd; // "certmint list", for messages
    cfg_config *cfg;
    store *st;
    store_reader *rd;
    hsm_token *tok;
    hsm_key *key;
    hsm_pool *pool;
} tool_inst;

// tool_env_load sets SOFTHSM2_CONF from the `env` file next to the configuration (written by
// `certmint init`) unless the environment has it already, as the daemon's unit file does.
static void tool_env_load(const char *conf_path)
{
    if (getenv("SOFTHSM2_CONF") != NULL) {
        return;
    }
    char path[PATH_MAX];
    const char *slash = strrchr(conf_path, '/');
    int n = slash == NULL
                ? snprintf(path, sizeof(path), "env")
                : snprintf(path, sizeof(path), "%.*s/env", (int)(slash - conf_path), conf_path);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return;
    }
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return;
    }
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "SOFTHSM2_CONF=", 14) == 0 && line[14] != '\0') {
            (void)setenv("SOFTHSM2_CONF", line + 14, 1);
        }
    }
    (void)fclose(f);
}

static bool tool_inst_open_cfg(tool_inst *t, const char *conf_path)
{
    char err[1024];
    cm_result r = cfg_load(&t->cfg, err, sizeof(err), conf_path);
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: %s\n", t->cmd, err);
        if (access(conf_path, F_OK) != 0) {
            fprintf(stderr,
                    "%s: pass the certmint.cnf of an instance with -c (certmint init "
                    "--dir DIR makes one)\n",
                    t->cmd);
        }
        return false;
    }
    return true;
}

// tool_inst_pick_ca returns the CA named |name|, or the default CA when |name| is NULL.
static const cfg_ca *tool_inst_pick_ca(tool_inst *t, const char *name)
{
    const cfg_config *cfg = t->cfg;
    if (name == NULL) {
        if (cfg->default_ca != NULL) {
            return cfg->default_ca;
        }
        if (cfg->num_cas == 1) {
            return &cfg->cas[0];
        }
        fprintf(stderr, "%s: %s has %zu CAs and no default_ca: pass --ca NAME\n", t->cmd, cfg->path,
                cfg->num_cas);
        return NULL;
    }
    const cfg_ca *c = cfg_ca_find(cfg, name);
    if (c == NULL) {
        fprintf(stderr, "%s: %s has no [ca:%s]; its CAs are:", t->cmd, cfg->path, name);
        for (size_t i = 0; i < cfg->num_cas; i++) {
            fprintf(stderr, " %s", cfg->cas[i].name);
        }
        fputc('\n', stderr);
    }
    return c;
}

static bool tool_inst_open_store(tool_inst *t)
{
    char url[PATH_MAX + 16];
    (void)snprintf(url, sizeof(url), "sqlite:%s", t->cfg->store_path);
    cm_result r = store_open(&t->st, url, NULL);
    if (cm_ok(r)) {
        r = store_reader_open(t->st, &t->rd);
    }
    if (!cm_ok(r)) {
        fprintf(stderr,
                "%s: cannot open the store %s: %s (check the store key of [certmintd] "
                "and the permissions of its folder)\n",
                t->cmd, url, store_result_name(r));
        return false;
    }
    return true;
}

// tool_hsm_hint says what to do about a token or key failure.
static const char *tool_hsm_hint(cm_result r)
{
    const char *name = hsm_result_name(r);
    if (strcmp(name, "CKR_PIN_INCORRECT") == 0 || strcmp(name, "CKR_PIN_LEN_RANGE") == 0) {
        return "the user PIN is wrong: check the file pin-source names in the key URI";
    }
    if (r.code == HSM_E_NO_TOKEN) {
        return "no token has that label: check token= in the key URI and, for SoftHSM2, "
               "SOFTHSM2_CONF (certmint reads it from the env file next to the configuration)";
    }
    if (r.code == HSM_E_PIN_SOURCE || r.code == HSM_E_NO_PIN) {
        return "the PIN file cannot be read: check pin-source in the key URI";
    }
    if (r.code == HSM_E_MODULE_LOAD || r.code == HSM_E_NO_MODULE) {
        return "the PKCS#11 module cannot be loaded: check module-path/module-name in the key URI";
    }
    if (r.code == HSM_E_NO_KEY || r.code == HSM_E_AMBIGUOUS_KEY) {
        return "check object=/id= in the key URI (the message lists the keys the token holds)";
    }
    return "check the key URI in the configuration";
}

// tool_result_name names a code from any module the CRL path touches (store, hsm, base).
static const char *tool_result_name(cm_result r)
{
    const char *store_name = store_result_name(r);
    return strcmp(store_name, cm_result_name(r)) != 0 ? store_name : hsm_result_name(r);
}


static const char *tool_key_type_name(hsm_key_type t)
{
    switch (t) {
    case HSM_KEY_EC_P256:
        return "EC P-256";
    case HSM_KEY_EC_P384:
        return "EC P-384";
    case HSM_KEY_EC_P521:
        return "EC P-521";
    case HSM_KEY_RSA:
        return "RSA";
    case HSM_KEY_ED25519:
        return "Ed25519";
    default:
        return "?";
    }
}

// tool_inst_open_key opens the token of |c|'s key, finds the key and checks it matches the CA
// certificate; with |pool| also starts a one-session signing pool.
static bool tool_inst_open_key(tool_inst *t, const cfg_ca *c, bool pool)
{
    hsm_error err;
    memset(&err, 0, sizeof(err));
    cm_result r = hsm_token_open(&t->tok, &err, c->key_uri);
    if (cm_ok(r)) {
        r = hsm_key_find(t->tok, &t->key, &err, c->key_uri);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: [ca:%s] key: %s (%s)\n%s: %s\n", t->cmd, c->name, err.msg,
                hsm_result_name(r), t->cmd, tool_hsm_hint(r));
        return false;
    }
    if (!cm_ok(ca_authority_matches_spki(c->authority, hsm_key_get0_spki(t->key)))) {
        fprintf(stderr,
                "%s: [ca:%s] the key %s does not hold the public key of %s: the key URI "
                "names another key than the one the CA certificate was made for\n",
                t->cmd, c->name, hsm_key_get0_label(t->key), c->cert_path);
        return false;
    }
    if (pool) {
        hsm_pool_opts po;
        hsm_pool_opts_default(&po);
        po.sessions = 1;
        r = hsm_pool_new(&t->pool, t->tok, &po);
        if (!cm_ok(r)) {
            fprintf(stderr, "%s: cannot open a session on the token: %s\n", t->cmd,
                    hsm_result_name(r));
            return false;
        }
    }
    return true;
}

static void tool_inst_close(tool_inst *t)
{
    hsm_pool_free(t->pool);
    hsm_key_free(t->key);
    hsm_token_free(t->tok);
    store_reader_close(t->rd);
    if (t->st != NULL) {
        store_close(t->st);
    }
    cfg_free(t->cfg);
}

// ---------------------------------------------------------------------------------------------
// certmint keys

static int tool_keys(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint keys -c CONF\n"
        "  Opens the token of every CA's key, finds the key and prints its type and size and\n"
        "  whether it matches the CA certificate (a check that the HSM is reachable).\n"
        "  SOFTHSM2_CONF is read from the env file next to CONF when not set.\n"
        "  Exit: 0 all keys found and matching, 1 a key is missing or wrong, 2 usage.\n";
    const char *conf = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL}, {"--config", &conf, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 2, pos, 0, &np, "certmint keys", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint keys: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_env_load(conf);
    tool_inst cfg_only = {.cmd = "certmint keys"};
    if (!tool_inst_open_cfg(&cfg_only, conf)) {
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < cfg_only.cfg->num_cas; i++) {
        const cfg_ca *c = &cfg_only.cfg->cas[i];
        tool_inst t = {.cmd = "certmint keys"};
        if (tool_inst_open_key(&t, c, false)) {
            printf("ca %-16s key '%s' %s %u bits, matches %s\n", c->name, hsm_key_get0_label(t.key),
                   tool_key_type_name(hsm_key_get_type(t.key)), hsm_key_get_bits(t.key),
                   c->cert_path);
        } else {
            rc = 1;
        }
        tool_inst_close(&t);
    }
    tool_inst_close(&cfg_only);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// certmint list

typedef struct tool_list_ctx {
    bool json;
    const char *subject_substr; // NULL: every subject
    size_t count;
} tool_list_ctx;

// tool_subject_text returns the printable subject of |c| (RFC 4514, ca_name_to_text): the
// stored text, or, when the server left it empty, text made from the subject DER. The result
// is |buf| or the store's string.
static const char *tool_subject_text(const store_cert *c, char *buf, size_t cap)
{
    if (c->subject_text != NULL && c->subject_text[0] != '\0') {
        return c->subject_text;
    }
    (void)ca_name_to_text(buf, cap, c->subject_der);
    return buf;
}

static bool tool_list_row(void *ctx, const store_cert *c)
{
    tool_list_ctx *l = ctx;
    char serial[2 * TOOL_SERIAL_MAX + 1], na[32], nb[32], rt[32], sbuf[1024];
    const char *subject = tool_subject_text(c, sbuf, sizeof(sbuf));
    if (l->subject_substr != NULL && strstr(subject, l->subject_substr) == NULL) {
        return true;
    }
    tool_serial_text(serial, sizeof(serial), c->serial);
    tool_time_text(na, sizeof(na), c->not_after);
    if (!l->json) {
        printf("%s  %-11s  %s  %s  %s\n", serial, tool_status_name(c->status), na, c->ca, subject);
    } else {
        tool_time_text(nb, sizeof(nb), c->not_before);
        tool_time_text(rt, sizeof(rt), c->revoked_at);
        printf("%s\n  {\"serial\": \"%s\", \"ca\": ", l->count == 0 ? "" : ",", serial);
        tool_json_string(stdout, c->ca);
        printf(", \"status\": \"%s\", \"not_before\": \"%s\", \"not_after\": \"%s\", "
               "\"subject\": ",
               tool_status_name(c->status), nb, na);
        tool_json_string(stdout, subject);
        if (c->status == STORE_CERT_REVOKED || c->status == STORE_CERT_HOLD) {
            printf(", \"revoked_at\": \"%s\", \"reason\": \"%s\"", rt, tool_reason_name(c->reason));
        }
        printf("}");
    }
    l->count++;
    return true;
}

static int tool_list(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint list -c CONF [--ca NAME] [--status valid|revoked|hold|unconfirmed]\n"
        "                     [--subject SUBSTR] [--json]\n"
        "  Lists the issued certificates in the store, in issue order, one a line:\n"
        "    SERIAL  STATUS  NOT_AFTER  CA  SUBJECT\n"
        "  SERIAL is hex as `openssl x509 -serial` prints it; --subject matches a\n"
        "  case-sensitive substring of the subject; --json prints a JSON array of objects\n"
        "  (serial, ca, status, not_before, not_after, subject, revoked_at, reason).\n"
        "  Exit: 0 ok (also when nothing matches), 1 failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *status = NULL, *subject = NULL, *pos[1];
    bool json = false;
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},           {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},           {"--status", &status, NULL},
                             {"--subject", &subject, NULL}, {"--json", NULL, &json}};
    int pr = tool_args_parse(argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), pos, 0, &np,
                             "certmint list", help);
    if (pr >= 0) {
        return pr;
    }
    store_filter f = {.status = STORE_CERT_ANY};
    if (status != NULL) {
        static const store_cert_status k_all[] = {STORE_CERT_UNCONFIRMED, STORE_CERT_VALID,
                                                  STORE_CERT_REVOKED, STORE_CERT_HOLD};
        bool found = false;
        for (size_t i = 0; i < sizeof(k_all) / sizeof(k_all[0]); i++) {
            if (strcmp(status, tool_status_name(k_all[i])) == 0) {
                f.status = k_all[i];
                found = true;
            }
        }
        if (!found) {
            fprintf(stderr,
                    "certmint list: --status '%s': use valid, revoked, hold or "
                    "unconfirmed\n",
                    status);
            return 2;
        }
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint list: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint list"};
    int rc = 1;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    if (ca != NULL) {
        const cfg_ca *c = tool_inst_pick_ca(&t, ca);
        if (c == NULL) {
            goto out;
        }
        f.ca = c->name;
    }
    if (!tool_inst_open_store(&t)) {
        goto out;
    }
    // The subject is matched here, not by the store: the server may leave subject_text empty.
    tool_list_ctx l = {.json = json, .subject_substr = subject};
    if (json) {
        printf("[");
    }
    cm_result r = store_cert_list(t.rd, &f, tool_list_row, &l);
    if (json) {
        printf("%s]\n", l.count == 0 ? "" : "\n");
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint list: reading the store failed: %s\n", store_result_name(r));
        goto out;
    }
    rc = 0;
out:
    tool_inst_close(&t);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Finding one certificate by serial (show, revoke)

// tool_find_cert looks |serial_text| up in CA |ca_name| (NULL: every CA of the
// configuration). On success |*out| is filled in |a| and 0 is returned; otherwise the problem
// was printed and the exit code (1 or 2) is returned.
static int tool_find_cert(tool_inst *t, cm_arena *a, store_cert *out, const char *ca_name,
                          const char *serial_text)
{
    uint8_t serial[TOOL_SERIAL_MAX];
    size_t serial_len = 0;
    if (!tool_serial_parse(serial_text, serial, &serial_len)) {
        fprintf(stderr,
                "%s: '%s' is not a serial number: give it in hex as `certmint list` or "
                "`openssl x509 -serial` print it (e.g. 3F0A..., 0x3f0a..., 3f:0a:...)\n",
                t->cmd, serial_text);
        return 2;
    }
    const cfg_ca *only = NULL;
    if (ca_name != NULL) {
        only = tool_inst_pick_ca(t, ca_name);
        if (only == NULL) {
            return 1;
        }
    }
    if (!tool_inst_open_store(t)) {
        return 1;
    }
    size_t found = 0;
    for (size_t i = 0; i < t->cfg->num_cas; i++) {
        const cfg_ca *c = &t->cfg->cas[i];
        if (only != NULL && c != only) {
            continue;
        }
        store_cert tmp;
        cm_result r = store_cert_get(t->rd, a, &tmp, c->name, cm_span_make(serial, serial_len));
        if (cm_ok(r)) {
            if (found++ == 0) {
                *out = tmp;
            }
        } else if (r.code != STORE_E_NOT_FOUND) {
            fprintf(stderr, "%s: reading the store failed: %s\n", t->cmd, store_result_name(r));
            return 1;
        }
    }
    char text[2 * TOOL_SERIAL_MAX + 1];
    tool_serial_text(text, sizeof(text), cm_span_make(serial, serial_len));
    if (found == 0) {
        fprintf(stderr,
                "%s: no certificate with serial %s in %s (certmint list -c %s shows "
                "the serials)\n",
                t->cmd, text, only != NULL ? only->name : "any CA of the configuration",
                t->cfg->path);
        return 1;
    }
    if (found > 1) {
        fprintf(stderr, "%s: serial %s exists in several CAs: pass --ca NAME\n", t->cmd, text);
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// certmint show

static int tool_show(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint show -c CONF [--ca NAME] SERIAL\n"
        "  Prints one issued certificate as `openssl x509 -text` does, then its record in the\n"
        "  store: CA, status, issue time, revocation time and reason, requester.\n"
        "  SERIAL is hex (any case, optional 0x, colons allowed).\n"
        "  Exit: 0 ok, 1 not found or failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL}, {"--config", &conf, NULL}, {"--ca", &ca, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 3, pos, 1, &np, "certmint show", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint show: -c CONF and SERIAL are required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint show"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    X509 *x = NULL;
    BIO *out = NULL;
    int rc = 1;
    store_cert c;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    rc = tool_find_cert(&t, &a, &c, ca, pos[0]);
    if (rc != 0) {
        goto out;
    }
    rc = 1;
    const unsigned char *q = c.cert_der.p;
    x = d2i_X509(NULL, &q, (long)c.cert_der.len);
    out = BIO_new_fp(stdout, BIO_NOCLOSE);
    if (x == NULL || out == NULL || X509_print_ex(out, x, XN_FLAG_COMPAT, X509_FLAG_COMPAT) != 1) {
        fprintf(stderr, "certmint show: the stored certificate does not parse\n");
        goto out;
    }
    (void)BIO_flush(out);
    char ts[32];
    printf("Store record:\n    CA: %s\n    Status: %s\n", c.ca, tool_status_name(c.status));
    tool_time_text(ts, sizeof(ts), c.issued_at);
    printf("    Issued at: %s\n", ts);
    if (c.status == STORE_CERT_REVOKED || c.status == STORE_CERT_HOLD) {
        tool_time_text(ts, sizeof(ts), c.revoked_at);
        printf("    Revoked at: %s\n    Reason: %s\n", ts, tool_reason_name(c.reason));
    }
    if (c.status == STORE_CERT_UNCONFIRMED) {
        tool_time_text(ts, sizeof(ts), c.confirm_deadline);
        printf("    certConf expected before: %s\n", ts);
    }
    if (c.requester_kind == STORE_AUTH_MAC) {
        printf("    Requester: MAC, senderKID '%.*s'\n", (int)c.requester.len,
               (const char *)c.requester.p);
    } else if (c.requester_kind == STORE_AUTH_SIGNATURE) {
        printf("    Requester: signature, certificate SHA-256 ");
        for (size_t i = 0; i < c.requester.len; i++) {
            printf("%02X", c.requester.p[i]);
        }
        printf("\n");
    }
    if (c.transaction_id.len > 0) {
        printf("    Transaction: ");
        for (size_t i = 0; i < c.transaction_id.len; i++) {
            printf("%02X", c.transaction_id.p[i]);
        }
        printf("\n");
    }
    rc = 0;
out:
    BIO_free(out);
    X509_free(x);
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// certmint revoke

static int tool_revoke(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint revoke -c CONF [--ca NAME] SERIAL [--reason NAME]\n"
        "  Revokes an issued certificate in the store (the server's own store operation);\n"
        "  the next CRL lists it (certmint crl). Reasons (RFC 5280 5.3.1): unspecified\n"
        "  (default), keyCompromise, cACompromise, affiliationChanged, superseded,\n"
        "  cessationOfOperation, certificateHold (revocable later, or released),\n"
        "  removeFromCRL (releases a certificate on hold), privilegeWithdrawn, aACompromise.\n"
        "  Exit: 0 ok, 1 unknown serial, already revoked, not on hold or failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *reason_name = "unspecified", *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},
                             {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},
                             {"--reason", &reason_name, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 4, pos, 1, &np, "certmint revoke", help);
    if (pr >= 0) {
        return pr;
    }
    const int reason = tool_reason_parse(reason_name);
    if (reason < 0) {
        fprintf(stderr,
                "certmint revoke: --reason '%s' is not a CRLReason; use one of:", reason_name);
        for (size_t i = 0; i < TOOL_NUM_REASONS; i++) {
            if (k_tool_reasons[i] != NULL) {
                fprintf(stderr, " %s", k_tool_reasons[i]);
            }
        }
        fputc('\n', stderr);
        return 2;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint revoke: -c CONF and SERIAL are required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint revoke"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    int rc = 1;
    store_cert c;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    rc = tool_find_cert(&t, &a, &c, ca, pos[0]);
    if (rc != 0) {
        goto out;
    }
    rc = 1;
    const bool release = reason == STORE_REASON_REMOVE_FROM_CRL;
    store_job job;
    store_job_init(&job, release ? STORE_OP_CERT_RELEASE : STORE_OP_CERT_REVOKE, NULL);
    job.u.ref.ca = c.ca;
    job.u.ref.serial = c.serial;
    job.u.ref.time = cm_time_now();
    job.u.ref.reason = release ? 0 : reason;
    cm_result r = store_run(t.st, &job);
    char serial[2 * TOOL_SERIAL_MAX + 1];
    tool_serial_text(serial, sizeof(serial), c.serial);
    if (r.code == STORE_E_ALREADY_REVOKED) {
        char when[32];
        tool_time_text(when, sizeof(when), c.revoked_at);
        fprintf(stderr, "certmint revoke: %s is %s already (reason %s, since %s)%s\n", serial,
                c.status == STORE_CERT_HOLD ? "on hold" : "revoked", tool_reason_name(c.reason),
                when,
                c.status == STORE_CERT_HOLD ? "; --reason removeFromCRL releases it, another "
                                              "reason revokes it for good"
                                            : "");
        goto out;
    }
    if (r.code == STORE_E_NOT_ON_HOLD) {
        fprintf(stderr,
                "certmint revoke: %s is %s, not on hold: removeFromCRL only releases a "
                "certificate revoked with certificateHold\n",
                serial, tool_status_name(c.status));
        goto out;
    }
    if (r.code == STORE_E_NOT_FOUND) {
        fprintf(stderr, "certmint revoke: %s vanished from the store\n", serial);
        goto out;
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint revoke: the store refused: %s\n", store_result_name(r));
        goto out;
    }
    if (release) {
        printf("released %s (ca %s) from hold: valid again; the next CRL drops it "
               "(certmint crl -c %s)\n",
               serial, c.ca, conf);
    } else {
        printf("revoked %s (ca %s, reason %s); the next CRL lists it (certmint crl -c %s)\n",
               serial, c.ca, tool_reason_name(reason), conf);
    }
    rc = 0;
out:
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// certmint crl

// tool_write_replace writes |data| to |path| through a temporary file and rename, so a reader
// never sees half a file.
static bool tool_write_replace(const char *cmd, const char *path, const void *data, size_t len,
                               mode_t mode)
{
    char tmp[PATH_MAX + 16];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        fprintf(stderr, "%s: path too long: %s\n", cmd, path);
        return false;
    }
    (void)unlink(tmp);
    if (!tool_write_file(tmp, data, len, mode)) {
        return false;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "%s: cannot write %s: %s\n", cmd, path, strerror(errno));
        (void)unlink(tmp);
        return false;
    }
    return true;
}

static int tool_crl(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint crl -c CONF [--ca NAME] [--out FILE] [--days N]\n"
        "  Issues a fresh CRL of the CA (default: default_ca) signed with its key in the\n"
        "  token, records it in the store and writes it as DER to FILE (default:\n"
        "  NAME.crl next to CONF). --days: nextUpdate - thisUpdate (default: the CA's\n"
        "  crl_validity_days, 7 unless set).\n"
        "  SOFTHSM2_CONF is read from the env file next to CONF when not set.\n"
        "  Check it: openssl crl -inform DER -in FILE -CAfile ca.pem -noout\n"
        "  Exit: 0 ok, 1 failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *out_path = NULL, *days_text = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},
                             {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},
                             {"--out", &out_path, NULL},
                             {"--days", &days_text, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 5, pos, 0, &np, "certmint crl", help);
    if (pr >= 0) {
        return pr;
    }
    long days = 0; // 0: the CA's crl_validity_days
    if (days_text != NULL) {
        char *end = NULL;
        errno = 0;
        days = strtol(days_text, &end, 10);
        if (errno != 0 || end == days_text || *end != '\0' || days < 1 || days > 3650) {
            fprintf(stderr, "certmint crl: --days '%s': give a number of days from 1 to 3650\n",
                    days_text);
            return 2;
        }
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint crl: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_env_load(conf);
    tool_inst t = {.cmd = "certmint crl"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    X509_CRL *crl = NULL;
    int rc = 1;
    char path[PATH_MAX + 64];
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    const cfg_ca *c = tool_inst_pick_ca(&t, ca);
    if (c == NULL || !tool_inst_open_key(&t, c, true) || !tool_inst_open_store(&t)) {
        goto out;
    }
    if (days == 0) {
        days = c->crl_validity_days > 0 ? (long)c->crl_validity_days : 7;
    }
    if (out_path == NULL) {
        (void)snprintf(path, sizeof(path), "%s/%s.crl", t.cfg->dir, c->name);
        out_path = path;
    }
    const srv_crl_params p = {.store = t.st,
                              .pool = t.pool,
                              .key = t.key,
                              .sig_alg = hsm_sig_alg_for_key(t.key),
                              .authority = c->authority,
                              .ca_name = c->name,
                              .validity_s = (int64_t)days * 86400};
    cm_span der = {0};
    cm_result r = srv_crl_issue(&p, cm_time_now(), &a, &der);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint crl: [ca:%s] the CRL could not be issued: %s%s\n", c->name,
                tool_result_name(r),
                r.code == STORE_E_STALE || r.code == STORE_E_BUSY
                    ? " (certmintd issued one at the same moment: run this again)"
                    : "");
        goto out;
    }
    if (!tool_write_replace(t.cmd, out_path, der.p, der.len, 0644)) {
        goto out;
    }
    const unsigned char *q = der.p;
    crl = d2i_X509_CRL(NULL, &q, (long)der.len);
    if (crl == NULL) {
        fprintf(stderr, "certmint crl: the CRL written to %s does not parse\n", out_path);
        goto out;
    }
    STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(crl);
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    char next[32];
    tool_time_text(next, sizeof(next), cm_time_now() + (int64_t)days * 86400);
    printf("certmint crl: wrote %s (ca %s, CRL number %ld, %d entries, next update %s)\n", out_path,
           c->name, num != NULL ? ASN1_INTEGER_get(num) : -1L,
           revoked != NULL ? sk_X509_REVOKED_num(revoked) : 0, next);
    ASN1_INTEGER_free(num);
    rc = 0;
out:
    X509_CRL_free(crl);
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// certmint secret: [clients:NAME] MAC credentials, edited in the configuration text itself
// (comments, order and everything else kept as they are).

#define TOOL_MAX_REF 64u

static bool tool_ref_ok(const char *ref)
{
    const size_t n = strlen(ref);
    if (n == 0 || n > TOOL_MAX_REF || ref[0] == '-' || ref[0] == '.') {
        return false;
    }
    return strspn(ref, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") == n;
}

// tool_text is a file's text and mode, NUL-terminated.
typedef struct tool_text {
    char *p;
    size_t len;
    struct stat st;
} tool_text;

static bool tool_text_read(const char *cmd, tool_text *t, const char *path)
{
    memset(t, 0, sizeof(*t));
    FILE *f = fopen(path, "re");
    if (f == NULL || fstat(fileno(f), &t->st) != 0 || t->st.st_size > (off_t)CFG_MAX_FILE) {
        fprintf(stderr, "%s: cannot read %s: %s\n", cmd, path,
                f == NULL ? strerror(errno) : "too large");
        if (f != NULL) {
            (void)fclose(f);
        }
        return false;
    }
    t->p = malloc((size_t)t->st.st_size + 1);
    t->len = t->p != NULL ? fread(t->p, 1, (size_t)t->st.st_size, f) : 0;
    (void)fclose(f);
    if (t->p == NULL || t->len != (size_t)t->st.st_size) {
        fprintf(stderr, "%s: cannot read %s\n", cmd, path);
        free(t->p);
        t->p = NULL;
        return false;
    }
    t->p[t->len] = '\0';
    return true;
}

// tool_text_write replaces the file at |path| with |data| (same mode and, when allowed, owner).
static bool tool_text_write(const char *cmd, const char *path, const char *data, size_t len,
                            const struct stat *st)
{
    if (!tool_write_replace(cmd, path, data, len, st->st_mode & 07777)) {
        return false;
    }
    (void)chmod(path, st->st_mode & 07777);
    if (chown(path, st->st_uid, st->st_gid) != 0) {
        // Only root may give a file away; the file stays the caller's.
    }
    return true;
}

// tool_line_skip_ws returns the first non-blank character of [p, end).
static const char *tool_line_skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p;
}

// tool_line_section reports whether the line [p, end) is a section header, and whether it is
// [KIND:NAME] or [KIND NAME] (the two spellings cfg_load accepts).
static bool tool_line_section(const char *p, const char *end, const char *kind, const char *name,
                              bool *out_match)
{
    p = tool_line_skip_ws(p, end);
    *out_match = false;
    if (p == end || *p != '[') {
        return false;
    }
    p = tool_line_skip_ws(p + 1, end);
    const size_t kl = strlen(kind), nl = strlen(name);
    if ((size_t)(end - p) > kl && strncmp(p, kind, kl) == 0 && (p[kl] == ':' || p[kl] == ' ')) {
        const char *q = tool_line_skip_ws(p + kl + 1, end);
        if ((size_t)(end - q) >= nl && strncmp(q, name, nl) == 0) {
            q = tool_line_skip_ws(q + nl, end);
            *out_match = q < end && *q == ']';
        }
    }
    return true;
}

// tool_line_key reports whether the line [p, end) sets |key| ("key = value"); |*out_value|
// gets the value without a trailing comment and blanks.
static bool tool_line_key(const char *p, const char *end, const char *key, const char **out_value,
                          size_t *out_value_len)
{
    p = tool_line_skip_ws(p, end);
    const size_t kl = strlen(key);
    if ((size_t)(end - p) <= kl || strncmp(p, key, kl) != 0) {
        return false;
    }
    const char *q = tool_line_skip_ws(p + kl, end);
    if (q == end || *q != '=') {
        return false;
    }
    q = tool_line_skip_ws(q + 1, end);
    const char *v_end = q;
    while (v_end < end && *v_end != '#') {
        v_end++;
    }
    while (v_end > q && (v_end[-1] == ' ' || v_end[-1] == '\t' || v_end[-1] == '\r')) {
        v_end--;
    }
    *out_value = q;
    *out_value_len = (size_t)(v_end - q);
    return true;
}

// tool_section_find locates [clients:NAME] in |t|: |*out_body| is the offset just after its
// header line, |*out_end| the offset of the next section header (or the end), and
// |*out_last| the offset just after its last line that is neither blank nor a comment (the
// header line when the section is empty).
static bool tool_section_find(const tool_text *t, const char *name, size_t *out_body,
                              size_t *out_end, size_t *out_last)
{
    bool in = false;
    const char *p = t->p, *end = t->p + t->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        const char *next = nl != NULL ? nl + 1 : end;
        bool match = false;
        const bool header = tool_line_section(p, le, "clients", name, &match);
        if (in && header) {
            *out_end = (size_t)(p - t->p);
            return true;
        }
        if (!in && header && match) {
            in = true;
            *out_body = *out_last = (size_t)(next - t->p);
        } else if (in) {
            const char *s = tool_line_skip_ws(p, le);
            if (s < le && *s != '#' && *s != ';' && *s != '\r') {
                *out_last = (size_t)(next - t->p);
            }
        }
        p = next;
    }
    *out_end = t->len;
    return in;
}

// tool_secret_gen_or_read fills |buf| (cap CFG_MAX_SECRET + 1) with a new secret or the one
// in |file| (one trailing line end dropped, as cfg_load does).
static bool tool_secret_gen_or_read(const char *cmd, char *buf, size_t *out_len, const char *file)
{
    if (file == NULL) {
        *out_len = 32; // 32 of 62 symbols: 190 bits
        if (!tool_random_text(buf, *out_len)) {
            fprintf(stderr, "%s: the random generator failed\n", cmd);
            return false;
        }
        return true;
    }
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot read --secret-file %s: %s\n", cmd, file, strerror(errno));
        return false;
    }
    size_t n = fread(buf, 1, CFG_MAX_SECRET + 1, f);
    (void)fclose(f);
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }
    }
    if (n == 0 || n > CFG_MAX_SECRET) {
        fprintf(stderr, "%s: --secret-file %s must hold 1 to %u bytes\n", cmd, file,
                CFG_MAX_SECRET);
        return false;
    }
    *out_len = n;
    return true;
}

// tool_cfg_verify reloads the edited configuration; on failure restores |orig| and says so.
static bool tool_cfg_verify(const char *cmd, const char *path, const tool_text *orig)
{
    char err[1024];
    cfg_config *cfg = NULL;
    cm_result r = cfg_load(&cfg, err, sizeof(err), path);
    cfg_free(cfg);
    if (cm_ok(r)) {
        return true;
    }
    fprintf(stderr, "%s: the edited configuration does not load (%s); %s restored\n", cmd, err,
            path);
    (void)tool_text_write(cmd, path, orig->p, orig->len, &orig->st);
    return false;
}

static int tool_secret_add(tool_inst *t, const cfg_ca *c, const char *conf, const char *ref,
                           const char *file)
{
    const cfg_clients *cl = c->clients;
    for (size_t i = 0; i < cl->num_secrets; i++) {
        if (strcmp(cl->secrets[i].ref, ref) == 0) {
            fprintf(stderr,
                    "%s: [clients:%s] has secret.%s already; pick another --ref, or remove "
                    "it first (certmint secret remove -c %s --ref %s)\n",
                    t->cmd, cl->name, ref, conf, ref);
            return 1;
        }
    }
    int rc = 1;
    tool_text text = {0};
    char *edited = NULL;
    char secret[CFG_MAX_SECRET + 1];
    size_t secret_len = 0;
    char rel[TOOL_MAX_REF + 16], abs[PATH_MAX + TOOL_MAX_REF + 16], line[2 * TOOL_MAX_REF + 32];
    bool created = false;
    size_t body, end, last;
    if (!tool_text_read(t->cmd, &text, conf)) {
        goto out;
    }
    if (!tool_section_find(&text, cl->name, &body, &end, &last)) {
        fprintf(stderr, "%s: cannot find the [clients:%s] header in %s\n", t->cmd, cl->name, conf);
        goto out;
    }
    if (!tool_secret_gen_or_read(t->cmd, secret, &secret_len, file)) {
        goto out;
    }
    (void)snprintf(rel, sizeof(rel), "secrets/%s", ref);
    (void)snprintf(abs, sizeof(abs), "%s/secrets", t->cfg->dir);
    if (mkdir(abs, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: cannot create %s: %s\n", t->cmd, abs, strerror(errno));
        goto out;
    }
    (void)snprintf(abs, sizeof(abs), "%s/%s", t->cfg->dir, rel);
    if (access(abs, F_OK) == 0) {
        fprintf(stderr,
                "%s: %s exists already (not referenced by [clients:%s]); delete it or "
                "pick another --ref\n",
                t->cmd, abs, cl->name);
        goto out;
    }
    if (!tool_write_file(abs, secret, secret_len, 0600)) {
        goto out;
    }
    created = true;
    // The new line goes after the section's last setting; a last line without its line end
    // gets one first.
    const bool need_nl = last > 0 && text.p[last - 1] != '\n';
    const int ll =
        snprintf(line, sizeof(line), "%ssecret.%s = %s\n", need_nl ? "\n" : "", ref, rel);
    edited = malloc(text.len + (size_t)ll + 1);
    if (edited == NULL) {
        goto out;
    }
    memcpy(edited, text.p, last);
    memcpy(edited + last, line, (size_t)ll);
    memcpy(edited + last + (size_t)ll, text.p + last, text.len - last);
    if (!tool_text_write(t->cmd, conf, edited, text.len + (size_t)ll, &text.st) ||
        !tool_cfg_verify(t->cmd, conf, &text)) {
        goto out;
    }
    if (file == NULL) {
        printf("added secret.%s to [clients:%s] of %s\n"
               "  reference: %s\n"
               "  secret:    %.*s   (shown once; stored in %s, mode 0600)\n",
               ref, cl->name, conf, ref, (int)secret_len, secret, abs);
    } else {
        printf("added secret.%s to [clients:%s] of %s (secret copied from %s to %s, mode 0600)\n",
               ref, cl->name, conf, file, abs);
    }
    printf("Restart certmintd to load it. A device then enrols with\n"
           "  openssl cmp -cmd ir ... -ref %s -secret file:%s\n",
           ref, abs);
    created = false;
    rc = 0;
out:
    if (created) {
        (void)unlink(abs);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    free(edited);
    free(text.p);
    return rc;
}

static int tool_secret_remove(tool_inst *t, const cfg_ca *c, const char *conf, const char *ref)
{
    const cfg_clients *cl = c->clients;
    bool known = false;
    for (size_t i = 0; i < cl->num_secrets; i++) {
        known = known || strcmp(cl->secrets[i].ref, ref) == 0;
    }
    if (!known) {
        fprintf(stderr,
                "%s: [clients:%s] has no secret.%s (certmint secret list -c %s shows "
                "the references)\n",
                t->cmd, cl->name, ref, conf);
        return 1;
    }
    int rc = 1;
    tool_text text = {0};
    char *edited = NULL;
    char key_secret[TOOL_MAX_REF + 16], key_kid[TOOL_MAX_REF + 16];
    char file[PATH_MAX + PATH_MAX];
    file[0] = '\0';
    size_t body, end, last;
    if (!tool_text_read(t->cmd, &text, conf)) {
        goto out;
    }
    if (!tool_section_find(&text, cl->name, &body, &end, &last)) {
        fprintf(stderr, "%s: cannot find the [clients:%s] header in %s\n", t->cmd, cl->name, conf);
        goto out;
    }
    (void)snprintf(key_secret, sizeof(key_secret), "secret.%s", ref);
    (void)snprintf(key_kid, sizeof(key_kid), "senderKID.%s", ref);
    edited = malloc(text.len + 1);
    if (edited == NULL) {
        goto out;
    }
    size_t o = 0, removed = 0;
    for (size_t off = 0; off < text.len;) {
        const char *p = text.p + off;
        const char *nl = memchr(p, '\n', text.len - off);
        const size_t next = nl != NULL ? (size_t)(nl - text.p) + 1 : text.len;
        const char *v = NULL;
        size_t vl = 0;
        bool drop = false;
        if (off >= body && off < end) {
            const char *le = text.p + (nl != NULL ? next - 1 : next);
            if (tool_line_key(p, le, key_secret, &v, &vl)) {
                drop = true;
                if (vl > 0 && vl < PATH_MAX) {
                    if (v[0] == '/') {
                        (void)snprintf(file, sizeof(file), "%.*s", (int)vl, v);
                    } else {
                        (void)snprintf(file, sizeof(file), "%s/%.*s", t->cfg->dir, (int)vl, v);
                    }
                }
            } else if (tool_line_key(p, le, key_kid, &v, &vl)) {
                drop = true;
            }
        }
        if (drop) {
            removed++;
        } else {
            memcpy(edited + o, p, next - off);
            o += next - off;
        }
        off = next;
    }
    if (removed == 0 || file[0] == '\0') {
        fprintf(stderr,
                "%s: no 'secret.%s = FILE' line in the [clients:%s] section of %s "
                "(is it set through a $variable?); edit the file by hand\n",
                t->cmd, ref, cl->name, conf);
        goto out;
    }
    if (!tool_text_write(t->cmd, conf, edited, o, &text.st) ||
        !tool_cfg_verify(t->cmd, conf, &text)) {
        goto out;
    }
    if (unlink(file) != 0) {
        fprintf(stderr, "%s: removed secret.%s from %s but cannot delete %s: %s\n", t->cmd, ref,
                conf, file, strerror(errno));
        goto out;
    }
    printf("removed secret.%s from [clients:%s] of %s and deleted %s; restart certmintd to "
           "stop accepting it\n",
           ref, cl->name, conf, file);
    rc = 0;
out:
    free(edited);
    free(text.p);
    return rc;
}

static int tool_secret(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint secret add    -c CONF --ref REF [--secret-file F] [--ca NAME]\n"
        "       certmint secret list   -c CONF [--ca NAME]\n"
        "       certmint secret remove -c CONF --ref REF [--ca NAME]\n"
        "  Manages the MAC credentials (secret.REF) of the [clients:NAME] section the CA\n"
        "  (default: default_ca) names. add generates a strong secret, prints it once,\n"
        "  stores it in secrets/REF (mode 0600) next to CONF and appends\n"
        "  'secret.REF = secrets/REF' to the section (comments and order of CONF kept);\n"
        "  with --secret-file F the secret is copied from F instead and not printed.\n"
        "  list prints the references (never the secrets). remove deletes the line (and a\n"
        "  senderKID.REF line) and the secret file. REF: letters, digits, '_', '-', '.'.\n"
        "  certmintd reads the secrets at start: restart it afterwards.\n"
        "  Exit: 0 ok, 1 failed (duplicate or unknown REF, ...), 2 usage.\n";
    if (argc < 3 || strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
        fputs(help, argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    const char *action = argv[2];
    const bool add = strcmp(action, "add") == 0, list = strcmp(action, "list") == 0,
               remove = strcmp(action, "remove") == 0;
    if (!add && !list && !remove) {
        fprintf(stderr, "certmint secret: unknown action '%s': use add, list or remove\n", action);
        return 2;
    }
    const char *conf = NULL, *ca = NULL, *ref = NULL, *file = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},
                             {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},
                             {"--ref", &ref, NULL},
                             {"--secret-file", &file, NULL}};
    int pr = tool_args_parse(argc, argv, 3, opts, 5, pos, 0, &np, "certmint secret", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint secret: -c CONF is required (see --help)\n");
        return 2;
    }
    if (!list && ref == NULL) {
        fprintf(stderr, "certmint secret %s: --ref REF is required (see --help)\n", action);
        return 2;
    }
    if ((list && ref != NULL) || (!add && file != NULL)) {
        fprintf(stderr, "certmint secret %s: %s does not apply (see --help)\n", action,
                list && ref != NULL ? "--ref" : "--secret-file");
        return 2;
    }
    if (ref != NULL && !tool_ref_ok(ref)) {
        fprintf(stderr,
                "certmint secret %s: --ref '%s': use 1 to %u letters, digits, '_', '-' or '.' "
                "(not starting with '-' or '.')\n",
                action, ref, TOOL_MAX_REF);
        return 2;
    }
    tool_inst t = {.cmd = "certmint secret"};
    int rc = 1;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    const cfg_ca *c = tool_inst_pick_ca(&t, ca);
    if (c == NULL) {
        goto out;
    }
    if (c->clients == NULL) {
        fprintf(stderr,
                "certmint secret: [ca:%s] has no 'clients = NAME' line: add one and a "
                "[clients:NAME] section to %s, then run this again\n",
                c->name, conf);
        goto out;
    }
    if (list) {
        for (size_t i = 0; i < c->clients->num_secrets; i++) {
            printf("%s\n", c->clients->secrets[i].ref);
        }
        rc = 0;
    } else if (add) {
        rc = tool_secret_add(&t, c, conf, ref, file);
    } else {
        rc = tool_secret_remove(&t, c, conf, ref);
    }
out:
    tool_inst_close(&t);
    return rc;
}

// ---------------------------------------------------------------------------------------------

// tool_read_all reads a whole file into a malloc'ed buffer.
static bool tool_read_all(const char *path, uint8_t **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    bool ok = f != NULL;
    while (ok) {
        if (cap - len < 4096) {
            cap = cap * 2 + 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                ok = false;
                break;
            }
            buf = nb;
        }
        const size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            ok = ferror(f) == 0;
            break;
        }
    }
    if (f != NULL) {
        (void)fclose(f);
    }
    if (!ok) {
        fprintf(stderr, "certmint: cannot read %s\n", path);
        free(buf);
        return false;
    }
    *out = buf;
    *out_len = len;
    return true;
}

// tool_conf_value finds the first "KEY = value" line of the configuration text (instances made
// by 'certmint init' have one CA); the value is copied into |out|.
static bool tool_conf_value(const tool_text *t, const char *key, char *out, size_t cap)
{
    const char *p = t->p, *end = t->p + t->len;
    while (p < end) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        le = le != NULL ? le : end;
        const char *v;
        size_t vl;
        if (tool_line_key(p, le, key, &v, &vl) && vl < cap) {
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        p = le + 1;
    }
    return false;
}

// certmint import-ca-cert -c CONF --cert FILE [--chain FILE]: finishes an instance made with
// 'certmint init --csr': checks the certificate is a CA certificate holding the CA key,
// installs it (and the chain), issues the CMP protection certificate with it, and checks the
// configuration loads.
static int tool_import_ca_cert(int argc, char **argv)
{
    const char *conf = NULL, *cert = NULL, *chain = NULL;
    for (int i = 2; i < argc; i++) {
        const bool has = i + 1 < argc;
        if (strcmp(argv[i], "-c") == 0 && has) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "--cert") == 0 && has) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--chain") == 0 && has) {
            chain = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: certmint import-ca-cert -c CONF --cert FILE [--chain FILE]\n"
                   "  Installs the CA certificate a parent CA issued for DIR/ca.csr (made by\n"
                   "  'certmint init --csr'), and its chain; issues the CMP protection\n"
                   "  certificate. Exit: 0 ok, 1 failed, 2 usage.\n");
            return 0;
        } else {
            fprintf(stderr, "certmint import-ca-cert: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (conf == NULL || cert == NULL) {
        fprintf(stderr, "certmint import-ca-cert: -c CONF and --cert FILE are required\n");
        return 2;
    }
    char conf_abs[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 64];
    if (realpath(conf, conf_abs) == NULL) {
        fprintf(stderr, "certmint import-ca-cert: %s: %s\n", conf, strerror(errno));
        return 1;
    }
    (void)snprintf(dir, sizeof(dir), "%s", conf_abs);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    struct stat st;
    if (stat(tool_path(p, sizeof(p), dir, "ca.pem"), &st) == 0) {
        fprintf(stderr,
                "certmint import-ca-cert: %s already exists: this instance has its CA "
                "certificate\n",
                p);
        return 1;
    }
    tool_env_load(conf_abs);
    tool_text t;
    char key_uri[PATH_MAX * 2], cmp_uri[PATH_MAX * 2], err[512];
    if (!tool_text_read("certmint import-ca-cert", &t, conf_abs)) {
        return 1;
    }
    int rc = 1;
    hsm_token *tok = NULL;
    hsm_key *ca_key = NULL, *cmp_key = NULL;
    hsm_pool *pool = NULL;
    ca_authority *authority = NULL;
    uint8_t *der = NULL, *cmp_name = NULL, *pem = NULL, *chain_pem = NULL;
    size_t der_len = 0, cmp_name_len = 0, pem_len = 0, chain_len = 0;
    hsm_error herr;
    memset(&herr, 0, sizeof(herr));
    if (!tool_conf_value(&t, "key", key_uri, sizeof(key_uri)) ||
        !tool_conf_value(&t, "cmp_key", cmp_uri, sizeof(cmp_uri))) {
        fprintf(stderr,
                "certmint import-ca-cert: %s has no key/cmp_key (not made by "
                "'certmint init --csr'?)\n",
                conf_abs);
        goto out;
    }
    if (!cm_ok(ca_authority_load(&authority, err, sizeof(err), cert, chain))) {
        fprintf(stderr, "certmint import-ca-cert: %s\n", err);
        goto out;
    }
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = 1;
    cm_result r = hsm_token_open(&tok, &herr, key_uri);
    if (cm_ok(r)) {
        r = hsm_key_find(tok, &ca_key, &herr, key_uri);
    }
    if (cm_ok(r)) {
        r = hsm_key_find(tok, &cmp_key, &herr, cmp_uri);
    }
    if (cm_ok(r)) {
        r = hsm_pool_new(&pool, tok, &po);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint import-ca-cert: PKCS#11: %s (%s)\n", herr.msg,
                tool_result_name(r));
        goto out;
    }
    if (!cm_ok(ca_authority_matches_spki(authority, hsm_key_get0_spki(ca_key)))) {
        fprintf(stderr,
                "certmint import-ca-cert: %s does not hold the CA key of this instance "
                "(was it issued for %s/ca.csr?)\n",
                cert, dir);
        goto out;
    }
    const int64_t left = (ca_authority_not_after(authority) - cm_time_now()) / 86400;
    const int days = left > 825 ? 825 : (int)(left > 1 ? left : 1);
    if (!tool_parse_dn("/O=certmint/CN=certmint CMP protection", &cmp_name, &cmp_name_len) ||
        !tool_issue(pool, ca_key, hsm_sig_alg_for_key(ca_key), authority, cmp_key,
                    cm_span_make(cmp_name, cmp_name_len), days, &der, &der_len) ||
        !tool_read_all(cert, &pem, &pem_len) ||
        (chain != NULL && !tool_read_all(chain, &chain_pem, &chain_len))) {
        goto out;
    }
    if (!tool_write_file(tool_path(p, sizeof(p), dir, "ca.pem"), pem, pem_len, 0644) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "cmp.pem"), der, der_len)) {
        goto out;
    }
    if (chain != NULL) {
        // "chain = chain.pem" goes right after "cert = ca.pem".
        static const char k_after[] = "cert = ca.pem\n";
        char *at = strstr(t.p, k_after);
        if (at == NULL || !tool_write_file(tool_path(p, sizeof(p), dir, "chain.pem"), chain_pem,
                                           chain_len, 0644)) {
            fprintf(stderr, "certmint import-ca-cert: cannot add the chain to %s\n", conf_abs);
            goto out;
        }
        const size_t head = (size_t)(at - t.p) + sizeof(k_after) - 1;
        static const char k_line[] = "chain = chain.pem\n";
        char *nt = malloc(t.len + sizeof(k_line));
        if (nt == NULL) {
            goto out;
        }
        memcpy(nt, t.p, head);
        memcpy(nt + head, k_line, sizeof(k_line) - 1);
        memcpy(nt + head + sizeof(k_line) - 1, t.p + head, t.len - head);
        const bool ok = tool_text_write("certmint import-ca-cert", conf_abs, nt,
                                        t.len + sizeof(k_line) - 1, &t.st);
        free(nt);
        if (!ok) {
            goto out;
        }
    }
    cfg_config *cfg = NULL;
    if (!cm_ok(cfg_load(&cfg, err, sizeof(err), conf_abs))) {
        fprintf(stderr, "certmint import-ca-cert: the configuration does not load: %s\n", err);
        goto out;
    }
    cfg_free(cfg);
    printf("certmint: %s installed as %s/ca.pem; CMP protection certificate %s/cmp.pem\n", cert,
           dir, dir);
    rc = 0;
out:
    free(t.p);
    free(der);
    free(pem);
    free(chain_pem);
    OPENSSL_free(cmp_name);
    ca_authority_free(authority);
    hsm_pool_free(pool);
    hsm_key_free(cmp_key);
    hsm_key_free(ca_key);
    hsm_token_free(tok);
    return rc;
}

static int tool_init_main(int argc, char **argv)
{
    tool_init_opts o = {.key_type = "ec-p256",
                        .subject = "/O=certmint/CN=certmint Demo Root CA",
                        .days = 3650,
                        .port = 8080};
    for (int i = 2; i < argc; i++) {
        const bool has = i + 1 < argc;
        if (strcmp(argv[i], "--dir") == 0 && has) {
            o.dir = argv[++i];
        } else if (strcmp(argv[i], "--key-type") == 0 && has) {
            o.key_type = argv[++i];
        } else if (strcmp(argv[i], "--subject") == 0 && has) {
            o.subject = argv[++i];
        } else if (strcmp(argv[i], "--days") == 0 && has) {
            o.days = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--port") == 0 && has) {
            o.port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--module") == 0 && has) {
            o.module = argv[++i];
        } else if (strcmp(argv[i], "--token") == 0 && has) {
            o.token = argv[++i];
        } else if (strcmp(argv[i], "--pin-file") == 0 && has) {
            o.pin_file = argv[++i];
        } else if (strcmp(argv[i], "--csr") == 0) {
            o.csr = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|"
                   "ed25519]\n"
                   "                     [--subject DN] [--days N] [--port N] [--csr]\n"
                   "                     [--module PATH --token LABEL --pin-file FILE]\n"
                   "  Creates a SoftHSM2 token in DIR (or uses the existing token LABEL of the\n"
                   "  PKCS#11 module PATH), the CA key and the CMP protection key in it, a\n"
                   "  self-signed root (or, with --csr, DIR/ca.csr for an external parent:\n"
                   "  finish with 'certmint import-ca-cert'), the CMP protection certificate,\n"
                   "  a demo secret, the store and DIR/certmint.cnf; refuses an existing\n"
                   "  instance or a token that already holds keys labelled 'ca' or 'cmp'.\n"
                   "  Exit: 0 ok, 1 failed, 2 usage.\n");
            return 0;
        } else {
            fprintf(stderr, "certmint init: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (o.dir == NULL) {
        fprintf(stderr, "certmint init: --dir DIR is required\n");
        return 2;
    }
    if ((o.module != NULL) != (o.token != NULL) || (o.module != NULL) != (o.pin_file != NULL)) {
        fprintf(stderr, "certmint init: --module, --token and --pin-file go together\n");
        return 2;
    }
    return tool_init(&o);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return tool_usage(stderr);
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        return tool_usage(stdout);
    }
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } k_cmds[] = {{"init", tool_init_main}, {"keys", tool_keys},
                  {"secret", tool_secret},  {"list", tool_list},
                  {"show", tool_show},      {"revoke", tool_revoke},
                  {"crl", tool_crl},        {"import-ca-cert", tool_import_ca_cert}};
    for (size_t i = 0; i < sizeof(k_cmds) / sizeof(k_cmds[0]); i++) {
        if (strcmp(argv[1], k_cmds[i].name) == 0) {
            if (!cm_ok(cm_runtime_init())) {
                fprintf(stderr, "certmint: cannot initialise OpenSSL\n");
                return 1;
            }
            cm_runtime_set_log_level(CM_LOG_WARN);
            return k_cmds[i].fn(argc, argv);
        }
    }
    fprintf(stderr, "certmint: unknown command '%s'\n", argv[1]);
    return tool_usage(stderr);
}
