// certmint init: a complete instance in DIR — a new SoftHSM2 token (own softhsm2.conf, SO and
// user PINs in 0600 files) or an existing token of any PKCS#11 module, the CA and CMP
// protection keys generated inside it, a self-signed root CA certificate signed through
// PKCS#11 (or a CSR for an external parent), the CMP protection certificate, a demo MAC secret,
// the store, a ready certmint.cnf with a `devices` profile, and an `env` file with the
// SOFTHSM2_CONF the daemon needs. It refuses to overwrite an existing instance. It reports the
// four long steps (token, keys, root, store) on stdout as each starts and ends: RSA keys on a
// slow token take minutes.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "tools/certmint/tool.h"

extern char **environ;

#define TOOL_TOKEN_LABEL "certmint"

typedef struct tool_init_opts {
    const char *dir;
    const char *key_type;
    const char *sig_alg; // a signature name of the algorithm table, or NULL: by --key-type
    const char *subject;
    int days;
    int port;
    const char *module;   // an existing PKCS#11 module instead of a new SoftHSM2 token
    const char *token;    // its token label (with module)
    const char *pin_file; // the user PIN (with module)
    bool csr;             // make a CSR for an external parent instead of a self-signed root
    bool kga;             // the CMP certificate gets id-kp-cmKGA: central key generation
} tool_init_opts;

#define TOOL_INIT_STEPS 4

// tool_step_begin prints "certmint init: [N/4] what..." and returns the start time for
// tool_step_end. stdout is flushed, so a pipe or a terminal shows the step while it runs.
static uint64_t tool_step_begin(int n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static uint64_t tool_step_begin(int n, const char *fmt, ...)
{
    printf("certmint init: [%d/%d] ", n, TOOL_INIT_STEPS);
    va_list ap;
    va_start(ap, fmt);
    (void)vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    (void)fflush(stdout);
    return cm_time_mono_ns();
}

// tool_step_end prints how long the step begun at |t0| took.
static void tool_step_end(uint64_t t0)
{
    printf("certmint init:       done in %.2f s\n", (double)(cm_time_mono_ns() - t0) / 1e9);
    (void)fflush(stdout);
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
    // The CA key types (RFC 9481 §3): the -pss types sign with RSASSA-PSS (SHA-256, MGF1
    // SHA-256, a 32-octet salt) instead of PKCS#1 v1.5.
    static const struct {
        const char *name;
        hsm_keygen_type type;
        crmf_alg_id sig; // CRMF_ALG_NONE: the key type's default (hsm_sig_alg_for_type)
    } k_types[] = {{"ec-p256", HSM_KEYGEN_EC_P256, CRMF_ALG_NONE},
                   {"ec-p384", HSM_KEYGEN_EC_P384, CRMF_ALG_NONE},
                   {"ec-p521", HSM_KEYGEN_EC_P521, CRMF_ALG_NONE},
                   {"rsa2048", HSM_KEYGEN_RSA_2048, CRMF_ALG_NONE},
                   {"rsa3072", HSM_KEYGEN_RSA_3072, CRMF_ALG_NONE},
                   {"rsa4096", HSM_KEYGEN_RSA_4096, CRMF_ALG_NONE},
                   {"rsa2048-pss", HSM_KEYGEN_RSA_2048, CRMF_ALG_RSA_PSS_SHA256},
                   {"rsa3072-pss", HSM_KEYGEN_RSA_3072, CRMF_ALG_RSA_PSS_SHA256},
                   {"rsa4096-pss", HSM_KEYGEN_RSA_4096, CRMF_ALG_RSA_PSS_SHA256},
                   {"ed25519", HSM_KEYGEN_ED25519, CRMF_ALG_NONE},
                   {"ed448", HSM_KEYGEN_ED448, CRMF_ALG_NONE}};
    hsm_keygen_type kt = HSM_KEYGEN_EC_P256;
    crmf_alg_id sig_row = CRMF_ALG_NONE;
    bool found = false;
    for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++) {
        if (strcmp(o->key_type, k_types[i].name) == 0) {
            kt = k_types[i].type;
            sig_row = k_types[i].sig;
            found = true;
        }
    }
    if (!found || o->days < 1 || o->port < 1 || o->port > 65535) {
        fprintf(stderr, "certmint init: bad --key-type, --days or --port (see --help)\n");
        return 2;
    }
    if (o->sig_alg != NULL) {
        const crmf_alg *a = crmf_alg_by_name(o->sig_alg);
        if (a == NULL || hsm_sig_alg_of_row((int)a->id) == HSM_SIG_NONE) {
            fprintf(stderr,
                    "certmint init: --sig-alg %s is not a signature the token can make (ECDSA "
                    "or RSA with SHA-2, RSASSA-PSS with SHA-2, Ed25519, Ed448)\n",
                    o->sig_alg);
            return 2;
        }
        sig_row = a->id;
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
    const char *module = o->module != NULL ? o->module : CM_SOFTHSM2_MODULE_PATH;
    const char *label = o->token != NULL ? o->token : TOOL_TOKEN_LABEL;
    uint64_t t_step =
        o->module != NULL
            ? tool_step_begin(1, "token: opening token '%s' of %s", label, module)
            : tool_step_begin(1, "token: creating SoftHSM2 token '%s' in %s/tokens", label, dir);
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
        tool_step_end(t_step);
        t_step = tool_step_begin(2,
                                 "keys: generating the CA key 'ca' (%s) and the CMP protection "
                                 "key 'cmp' (ec-p256) in the token",
                                 o->key_type);
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
        fprintf(stderr, "certmint init: PKCS#11: %s (%s)\n", err.msg, cm_result_name(r));
        goto out;
    }
    tool_step_end(t_step);
    const hsm_sig_alg ca_sig =
        sig_row != CRMF_ALG_NONE ? hsm_sig_alg_of_row((int)sig_row) : hsm_sig_alg_for_key(key);
    if (!hsm_sig_alg_fits(ca_sig, hsm_key_get_type(key))) {
        fprintf(stderr, "certmint init: --sig-alg %s does not fit a %s key\n",
                crmf_alg_get(sig_row)->name, o->key_type);
        goto out;
    }
    if (o->csr) {
        t_step = tool_step_begin(3,
                                 "root: the certificate request %s/ca.csr for a parent CA, "
                                 "signed in the token",
                                 dir);
        if (!tool_csr_write(pool, key, ca_sig, cm_span_make(name_der, name_len),
                            tool_path(p, sizeof(p), dir, "ca.csr"))) {
            goto out;
        }
        tool_step_end(t_step);
        (void)tool_step_begin(4, "store: after import-ca-cert (certmintd creates it)");
        goto write_config;
    }
    t_step = tool_step_begin(3,
                             "root: the self-signed CA certificate %s/ca.pem and the CMP "
                             "protection certificate %s/cmp.pem, signed in the token",
                             dir, dir);
    if (!tool_issue(pool, key, ca_sig, NULL, key, cm_span_make(name_der, name_len), o->days, 0,
                    &cert, &cert_len) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "ca.pem"), cert, cert_len)) {
        goto out;
    }
    // The CMP protection certificate, issued by the CA with id-kp-cmcCA (RFC 9483 §3.1).
    char err_s[512];
    if (!cm_ok(ca_authority_load(&authority, err_s, sizeof(err_s),
                                 tool_path(p, sizeof(p), dir, "ca.pem"), NULL)) ||
        !tool_parse_dn("/O=certmint/CN=certmint CMP protection", &cmp_name, &cmp_name_len) ||
        !tool_issue(pool, key, ca_sig, authority, cmp_key, cm_span_make(cmp_name, cmp_name_len),
                    o->days, o->kga ? CA_CMP_CERT_KGA : 0, &cmp_cert, &cmp_cert_len) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "cmp.pem"), cmp_cert, cmp_cert_len)) {
        fprintf(stderr, "certmint init: cannot issue the CMP protection certificate\n");
        goto out;
    }
    tool_step_end(t_step);
    // The store, created now so that read commands find it.
    t_step = tool_step_begin(4, "store: %s/certmint.db", dir);
    char store_url[PATH_MAX + 32];
    (void)snprintf(store_url, sizeof(store_url), "sqlite:%s/certmint.db", dir);
    if (!cm_ok(store_open(&db, store_url, NULL))) {
        fprintf(stderr, "certmint init: cannot create the store %s\n", store_url);
        goto out;
    }
    store_close(db);
    db = NULL;
    tool_step_end(t_step);
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
                 "%s%s%s"
                 "\n"
                 "[profile:devices]\n"
                 "validity_days = 365\n"
                 "max_validity_days = 825\n"
                 "key_types = P-256, P-384, P-521, RSA, Ed25519, Ed448\n"
                 "rsa_min_bits = 2048\n"
                 "rsa_max_bits = 4096\n"
                 "san_types = dns, ip\n"
                 "implicit_confirm = on\n"
                 "%s"
                 "extensions = devices_ext\n"
                 "\n"
                 "[devices_ext]\n"
                 "basicConstraints = critical, CA:FALSE\n"
                 "keyUsage = critical, digitalSignature\n"
                 "extendedKeyUsage = clientAuth\n"
                 "\n"
                 "[clients:devices]\n"
                 "secret.demo-device = secrets/demo-device\n",
                 o->port, uri, cmp_uri, sig_row != CRMF_ALG_NONE ? "sig_alg = " : "",
                 sig_row != CRMF_ALG_NONE ? crmf_alg_get(sig_row)->name : "",
                 sig_row != CRMF_ALG_NONE ? "\n" : "", o->kga ? "central_keygen = allowed\n" : "");
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
           "  CA key           %s key 'ca' in token '%s' (%s), signing with %s\n",
           dir, o->key_type, label, module, hsm_sig_alg_name(ca_sig));
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

int tool_init_main(int argc, char **argv)
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
        } else if (strcmp(argv[i], "--sig-alg") == 0 && has) {
            o.sig_alg = argv[++i];
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
        } else if (strcmp(argv[i], "--kga") == 0) {
            o.kga = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: certmint init --dir DIR [--key-type TYPE] [--sig-alg NAME]\n"
                   "                     [--subject DN] [--days N] [--port N] [--csr] [--kga]\n"
                   "                     [--module PATH --token LABEL --pin-file FILE]\n"
                   "  Creates a SoftHSM2 token in DIR (or uses the existing token LABEL of the\n"
                   "  PKCS#11 module PATH), the CA key and the CMP protection key in it, a\n"
                   "  self-signed root (or, with --csr, DIR/ca.csr for an external parent:\n"
                   "  finish with 'certmint import-ca-cert'), the CMP protection certificate,\n"
                   "  a demo secret, the store and DIR/certmint.cnf; refuses an existing\n"
                   "  instance or a token that already holds keys labelled 'ca' or 'cmp'.\n"
                   "  TYPE: ec-p256 (default), ec-p384, ec-p521, rsa2048, rsa3072, rsa4096,\n"
                   "  rsa2048-pss, rsa3072-pss, rsa4096-pss (RSASSA-PSS with SHA-256), ed25519,\n"
                   "  ed448. NAME: the CA's signature algorithm from the algorithm table\n"
                   "  (README), e.g. ecdsa-sha512 or rsa-pss-sha384; it becomes the [ca:devices]\n"
                   "  sig_alg setting. --kga: the CMP certificate also gets id-kp-cmKGA and\n"
                   "  the profile central_keygen = allowed (central key generation, README).\n"
                   "  Exit: 0 ok, 1 failed, 2 usage.\n");
            return 0;
        } else {
            fprintf(stderr, "certmint init: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (o.kga && o.csr) {
        fprintf(stderr, "certmint init: --kga needs the CMP certificate now, which --csr "
                        "issues only at import-ca-cert: give --kga without --csr\n");
        return 2;
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
