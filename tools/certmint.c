// certmint: the admin tool.
//
//   certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|ed25519]
//                 [--subject DN] [--days N] [--port N]
//   certmint keys -c CONF
//
// `init` makes a complete instance in DIR: a new SoftHSM2 token (own softhsm2.conf, SO and user
// PINs in 0600 files), the CA key pair generated inside the token, a self-signed root CA
// certificate signed through PKCS#11, a demo MAC secret, a ready certmint.cnf with a `devices`
// profile, and an `env` file with the SOFTHSM2_CONF the daemon needs. It refuses to overwrite
// an existing instance. Exit codes: 0 ok, 1 failed, 2 usage.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "engine/ca/ca.h"
#include "engine/config/cfg.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"

extern char **environ;

#define TOOL_TOKEN_LABEL "certmint"

typedef struct tool_init_opts {
    const char *dir;
    const char *key_type;
    const char *subject;
    int days;
    int port;
} tool_init_opts;

static int tool_usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|ed25519]\n"
               "                [--subject DN] [--days N] [--port N]\n"
               "  certmint keys -c CONF\n"
               "Run 'certmint COMMAND --help' for details.\n");
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

static hsm_sig_alg tool_sig_alg(hsm_keygen_type t)
{
    switch (t) {
    case HSM_KEYGEN_EC_P384:
        return HSM_SIG_ECDSA_SHA384;
    case HSM_KEYGEN_EC_P521:
        return HSM_SIG_ECDSA_SHA512;
    case HSM_KEYGEN_RSA_2048:
    case HSM_KEYGEN_RSA_3072:
    case HSM_KEYGEN_RSA_4096:
        return HSM_SIG_RSA_PKCS1_SHA256;
    case HSM_KEYGEN_ED25519:
        return HSM_SIG_ED25519;
    default:
        return HSM_SIG_ECDSA_SHA256;
    }
}

// tool_put_ext writes Extension { extnID, critical, extnValue OCTET STRING { value } } where
// the value is written by the caller between open and close.
static void tool_ext_open(der_builder *b, der_mark *outer, der_mark *octets, const char *oid,
                          size_t oid_len, bool critical)
{
    der_open(b, outer, DER_TAG_SEQUENCE);
    der_put_oid(b, cm_span_make(oid, oid_len));
    if (critical) {
        der_put_bool(b, true);
    }
    der_open(b, octets, DER_TAG_OCTET_STRING);
}

static void tool_ext_close(der_builder *b, der_mark *outer, der_mark *octets)
{
    der_close(b, octets);
    der_close(b, outer);
}

// tool_root_build makes the self-signed root certificate (RFC 5280 §4.1, §4.2.1) for |key|:
// basicConstraints cA (critical), keyUsage keyCertSign+cRLSign+digitalSignature (critical),
// SKI (SHA-1 of the key, method 1), signed through the pool.
static bool tool_root_build(hsm_pool *pool, const hsm_key *key, hsm_sig_alg alg, cm_span name,
                            int days, uint8_t **out, size_t *out_len)
{
    const cm_span spki = hsm_key_get0_spki(key);
    der_reader r, s;
    der_reader_init(&r, spki);
    cm_span alg_el, bits;
    uint8_t unused;
    uint8_t ski[20], serial[CA_SERIAL_LEN];
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &s)) ||
        !cm_ok(der_get_element(&s, DER_TAG_SEQUENCE, &alg_el)) ||
        !cm_ok(der_get_bitstring(&s, &bits, &unused)) ||
        EVP_Digest(bits.p, bits.len, ski, NULL, EVP_sha1(), NULL) != 1 ||
        !cm_ok(ca_serial_new(serial))) {
        return false;
    }
    const int64_t now = cm_time_now();
    der_builder b;
    der_builder_init(&b, 1024);
    der_mark tbs, m, m2, o, v;
    der_open(&b, &tbs, DER_TAG_SEQUENCE);
    der_open(&b, &m, DER_CONTEXT_CONS(0));
    der_put_i64(&b, 2);
    der_close(&b, &m);
    der_put_uint_bytes(&b, cm_span_make(serial, sizeof(serial)));
    hsm_sig_alg_marshal(&b, alg);
    der_put_raw(&b, name);
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_time(&b, now - 300);
    der_put_time(&b, now + (int64_t)days * 86400);
    der_close(&b, &m);
    der_put_raw(&b, name);
    der_put_raw(&b, spki);
    der_open(&b, &m, DER_CONTEXT_CONS(3));
    der_open(&b, &m2, DER_TAG_SEQUENCE);
    tool_ext_open(&b, &o, &v, DER_OID_CE_BASIC_CONSTRAINTS,
                  sizeof(DER_OID_CE_BASIC_CONSTRAINTS) - 1, true);
    der_mark bc;
    der_open(&b, &bc, DER_TAG_SEQUENCE);
    der_put_bool(&b, true);
    der_close(&b, &bc);
    tool_ext_close(&b, &o, &v);
    tool_ext_open(&b, &o, &v, DER_OID_CE_KEY_USAGE, sizeof(DER_OID_CE_KEY_USAGE) - 1, true);
    der_put_bitstring_flags(&b, 1u | (1u << 5) | (1u << 6));
    tool_ext_close(&b, &o, &v);
    tool_ext_open(&b, &o, &v, DER_OID_CE_SUBJECT_KEY_ID, sizeof(DER_OID_CE_SUBJECT_KEY_ID) - 1,
                  false);
    der_put_octets(&b, cm_span_make(ski, sizeof(ski)));
    tool_ext_close(&b, &o, &v);
    der_close(&b, &m2);
    der_close(&b, &m);
    der_close(&b, &tbs);
    cm_span tbs_der;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    der_builder ab, cb;
    der_builder_init(&ab, 64);
    der_builder_init(&cb, 2048);
    hsm_sig_alg_marshal(&ab, alg);
    cm_span alg_der, cert;
    cm_result res = der_builder_finish(&b, &tbs_der);
    if (cm_ok(res)) {
        res = hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), key, alg, tbs_der);
    }
    if (cm_ok(res)) {
        res = der_builder_finish(&ab, &alg_der);
    }
    if (cm_ok(res)) {
        res = ca_signed_assemble(&cb, tbs_der, alg_der, cm_span_make(sig, sig_len));
    }
    uint8_t *buf = NULL;
    if (cm_ok(res)) {
        res = der_builder_take(&cb, &buf, out_len);
    }
    der_builder_cleanup(&b);
    der_builder_cleanup(&ab);
    der_builder_cleanup(&cb);
    if (!cm_ok(res)) {
        fprintf(stderr, "certmint: cannot build the root certificate: %s\n", cm_result_name(res));
        return false;
    }
    (void)cert;
    *out = buf;
    return true;
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
    if (mkdir(o->dir, 0700) != 0 && errno != EEXIST) {
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
    hsm_key *key = NULL;
    hsm_pool *pool = NULL;
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    if (!tool_random_text(so_pin, 24) || !tool_random_text(user_pin, 24) ||
        !tool_random_text(secret, 32) || mkdir(tool_path(p, sizeof(p), dir, "tokens"), 0700) != 0 ||
        mkdir(tool_path(p, sizeof(p), dir, "secrets"), 0700) != 0) {
        fprintf(stderr, "certmint init: cannot prepare %s: %s\n", dir, strerror(errno));
        goto out;
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
    char uri[PATH_MAX * 2];
    (void)snprintf(uri, sizeof(uri),
                   "pkcs11:token=" TOOL_TOKEN_LABEL ";object=ca?module-path=%s&pin-source=file:"
                   "%s/user.pin",
                   CM_SOFTHSM2_MODULE_PATH, dir);
    hsm_error err;
    memset(&err, 0, sizeof(err));
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = 1;
    cm_result r = hsm_token_open(&tok, &err, uri);
    if (cm_ok(r)) {
        r = hsm_key_generate(tok, &key, &err, kt, "ca", CM_SPAN_LIT("\x01"));
    }
    if (cm_ok(r)) {
        r = hsm_pool_new(&pool, tok, &po);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint init: PKCS#11: %s (%s)\n", err.msg, hsm_result_name(r));
        goto out;
    }
    if (!tool_root_build(pool, key, tool_sig_alg(kt), cm_span_make(name_der, name_len), o->days,
                         &cert, &cert_len) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "ca.pem"), cert, cert_len)) {
        goto out;
    }
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
                 o->port, uri);
    (void)snprintf(p2, sizeof(p2), "SOFTHSM2_CONF=%s/softhsm2.conf\n", dir);
    if (n < 0 || (size_t)n >= sizeof(conf) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "certmint.cnf"), conf, (size_t)n, 0600) ||
        !tool_write_file(tool_path(p, sizeof(p), dir, "env"), p2, strlen(p2), 0644)) {
        goto out;
    }
    printf("certmint: instance created in %s\n"
           "  CA certificate   %s/ca.pem (key '%s' in SoftHSM token '%s')\n"
           "  configuration    %s/certmint.cnf\n"
           "  demo MAC secret  reference 'demo-device', secret '%s' (stored in %s/secrets, 0600)\n"
           "  the daemon needs SOFTHSM2_CONF=%s/softhsm2.conf in its environment (%s/env)\n",
           dir, dir, o->key_type, TOOL_TOKEN_LABEL, dir, secret, dir, dir, dir);
    rc = 0;
out:
    OPENSSL_cleanse(so_pin, sizeof(so_pin));
    OPENSSL_cleanse(user_pin, sizeof(user_pin));
    OPENSSL_cleanse(secret, sizeof(secret));
    free(cert);
    OPENSSL_free(name_der);
    hsm_pool_free(pool);
    hsm_key_free(key);
    hsm_token_free(tok);
    return rc;
}

static int tool_keys(const char *conf_path)
{
    char err[1024];
    cfg_config *cfg = NULL;
    cm_result r = cfg_load(&cfg, err, sizeof(err), conf_path);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint keys: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < cfg->num_cas && rc == 0; i++) {
        const cfg_ca *c = &cfg->cas[i];
        hsm_token *tok = NULL;
        hsm_key *key = NULL;
        hsm_error herr;
        memset(&herr, 0, sizeof(herr));
        r = hsm_token_open(&tok, &herr, c->key_uri);
        if (cm_ok(r)) {
            r = hsm_key_find(tok, &key, &herr, c->key_uri);
        }
        if (!cm_ok(r)) {
            fprintf(stderr, "certmint keys: [ca:%s] %s (%s)\n", c->name, herr.msg,
                    hsm_result_name(r));
            rc = 1;
        } else {
            const bool match =
                cm_ok(ca_authority_matches_spki(c->authority, hsm_key_get0_spki(key)));
            printf("ca %-16s key '%s' %u bits, %s\n", c->name, hsm_key_get0_label(key),
                   hsm_key_get_bits(key),
                   match ? "matches the CA certificate" : "DOES NOT match the CA certificate");
            rc = match ? 0 : 1;
        }
        hsm_key_free(key);
        hsm_token_free(tok);
    }
    cfg_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return tool_usage(stderr);
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        return tool_usage(stdout);
    }
    if (!cm_ok(cm_runtime_init())) {
        fprintf(stderr, "certmint: cannot initialise OpenSSL\n");
        return 1;
    }
    if (strcmp(argv[1], "init") == 0) {
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
            } else if (strcmp(argv[i], "--help") == 0) {
                printf("certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|"
                       "ed25519] [--subject DN] [--days N] [--port N]\n"
                       "  creates a SoftHSM2 token, a CA key in it, a self-signed root, a demo\n"
                       "  secret and DIR/certmint.cnf; refuses an existing instance\n");
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
        return tool_init(&o);
    }
    if (strcmp(argv[1], "keys") == 0) {
        if (argc == 3 && strcmp(argv[2], "--help") == 0) {
            printf("certmint keys -c CONF: the keys the configuration uses, found in the token\n");
            return 0;
        }
        if (argc != 4 || strcmp(argv[2], "-c") != 0) {
            fprintf(stderr, "usage: certmint keys -c CONF\n");
            return 2;
        }
        return tool_keys(argv[3]);
    }
    fprintf(stderr, "certmint: unknown command '%s'\n", argv[1]);
    return tool_usage(stderr);
}
