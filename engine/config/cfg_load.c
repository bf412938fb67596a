// Loading and validating the configuration file (see cfg.h for the format).
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/config/cfg.h"

#define CFG_MAX_LIST    32u // items in one comma-separated value
#define CFG_TRUST_CACHE 4096u
#define CFG_ITEM_MAX    1024u

// cfg_loader is the state of one cfg_load call. Thread: start-up, one thread.
typedef struct cfg_loader {
    cfg_config *cfg;
    CONF *conf;
    char *err;
    size_t err_cap;
    char section[160]; // the section being read, as shown in messages ("profile:devices")
} cfg_loader;

static cm_result cfg_fail(cfg_loader *ld, uint32_t code, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static cm_result cfg_fail(cfg_loader *ld, uint32_t code, const char *key, const char *fmt, ...)
{
    if (ld->err != NULL && ld->err_cap > 0) {
        char what[512];
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        if (ld->section[0] == '\0') {
            (void)snprintf(ld->err, ld->err_cap, "%s: %s", ld->cfg->path, what);
        } else if (key == NULL) {
            (void)snprintf(ld->err, ld->err_cap, "%s: [%s] %s", ld->cfg->path, ld->section, what);
        } else {
            (void)snprintf(ld->err, ld->err_cap, "%s: [%s] %s: %s", ld->cfg->path, ld->section, key,
                           what);
        }
    }
    return cm_bail_note(code, __FILE__, __LINE__);
}

static char *cfg_strdup(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

// cfg_resolve returns |p| made absolute against the configuration file's directory.
static char *cfg_resolve(const cfg_loader *ld, const char *p)
{
    if (p[0] == '/') {
        return cfg_strdup(p);
    }
    const size_t n = strlen(ld->cfg->dir) + 1 + strlen(p) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        (void)snprintf(d, n, "%s/%s", ld->cfg->dir, p);
    }
    return d;
}

// cfg_item copies the next comma-separated, trimmed item of |*cursor| into |buf|; false at
// the end. An empty item is returned as "" (callers reject it).
static bool cfg_item(const char **cursor, char *buf, size_t cap)
{
    const char *s = *cursor;
    if (s == NULL) {
        return false;
    }
    const char *comma = strchr(s, ',');
    const char *end = comma != NULL ? comma : s + strlen(s);
    while (s < end && isspace((unsigned char)*s)) {
        s++;
    }
    const char *e = end;
    while (e > s && isspace((unsigned char)e[-1])) {
        e--;
    }
    size_t n = (size_t)(e - s);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    *cursor = comma != NULL ? comma + 1 : NULL;
    return true;
}

static cm_result cfg_u32(cfg_loader *ld, uint32_t *out, const char *key, const char *v,
                         uint32_t min, uint32_t max)
{
    const char *p = v;
    uint64_t n = 0;
    if (*p == '\0') {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not a number", v);
    }
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not a number", v);
        }
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > 0xffffffffu) {
            break;
        }
    }
    if (n < min || n > max) {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is out of range %u..%u", v, min, max);
    }
    *out = (uint32_t)n;
    return cm_result_make(CM_OK);
}

static cm_result cfg_bool(cfg_loader *ld, bool *out, const char *key, const char *v)
{
    static const char *const k_true[] = {"on", "yes", "true", "1"};
    static const char *const k_false[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, k_true[i]) == 0) {
            *out = true;
            return cm_result_make(CM_OK);
        }
        if (strcasecmp(v, k_false[i]) == 0) {
            *out = false;
            return cm_result_make(CM_OK);
        }
    }
    return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not on or off", v);
}

static cm_result cfg_path(cfg_loader *ld, char **out, const char *key, const char *v)
{
    if (v[0] == '\0') {
        return cfg_fail(ld, CFG_E_VALUE, key, "empty path");
    }
    free(*out);
    *out = cfg_resolve(ld, v);
    CM_ENSURE(*out != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

static cm_result cfg_pkcs11_uri(cfg_loader *ld, char **out, const char *key, const char *v)
{
    if (strncmp(v, "pkcs11:", 7) != 0) {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not a PKCS#11 URI (pkcs11:...)", v);
    }
    free(*out);
    *out = cfg_strdup(v);
    CM_ENSURE(*out != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

// cfg_read_certs reads every PEM certificate of |path| as DER into |ders|/|lens| (appending
// at |*num|, up to |cap|).
static cm_result cfg_read_certs(cfg_loader *ld, const char *key, const char *path, uint8_t **ders,
                                size_t *lens, size_t *num, size_t cap)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        return cfg_fail(ld, CFG_E_FILE, key, "cannot open %s", path);
    }
    cm_result res = cm_result_make(CM_OK);
    size_t found = 0;
    X509 *x;
    while (cm_ok(res) && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        unsigned char *der = NULL;
        const int len = i2d_X509(x, &der);
        X509_free(x);
        if (*num == cap) {
            res = cfg_fail(ld, CFG_E_VALUE, key, "more than %zu certificates", cap);
        } else if (len <= 0 || (ders[*num] = malloc((size_t)len)) == NULL) {
            res = cm_result_make(CM_E_NOMEM);
        } else {
            memcpy(ders[*num], der, (size_t)len);
            lens[(*num)++] = (size_t)len;
            found++;
        }
        OPENSSL_free(der);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (cm_ok(res) && found == 0) {
        res = cfg_fail(ld, CFG_E_FILE, key, "%s holds no PEM certificate", path);
    }
    return res;
}

// ---------------------------------------------------------------------------------------------
// [certmintd]

static cm_result cfg_listen_one(cfg_loader *ld, const char *item)
{
    cfg_config *cfg = ld->cfg;
    if (cfg->num_listen == CFG_MAX_LISTEN) {
        return cfg_fail(ld, CFG_E_VALUE, "listen", "more than %u addresses", CFG_MAX_LISTEN);
    }
    cfg_listen *l = &cfg->listen[cfg->num_listen];
    char host[64];
    const char *port;
    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - item - 1) >= sizeof(host)) {
            return cfg_fail(ld, CFG_E_VALUE, "listen", "'%s' is not [IPv6]:port", item);
        }
        memcpy(host, item + 1, (size_t)(close - item - 1));
        host[close - item - 1] = '\0';
        port = close + 2;
        l->ipv6 = true;
    } else {
        const char *colon = strrchr(item, ':');
        if (colon == NULL || colon == item || (size_t)(colon - item) >= sizeof(host) ||
            memchr(item, ':', (size_t)(colon - item)) != NULL) {
            return cfg_fail(ld, CFG_E_VALUE, "listen", "'%s' is not host:port or [IPv6]:port",
                            item);
        }
        memcpy(host, item, (size_t)(colon - item));
        host[colon - item] = '\0';
        port = colon + 1;
        l->ipv6 = false;
    }
    uint8_t addr[16];
    if (inet_pton(l->ipv6 ? AF_INET6 : AF_INET, host, addr) != 1 ||
        strlen(host) >= sizeof(l->host)) {
        return cfg_fail(ld, CFG_E_VALUE, "listen", "'%s' is not a numeric %s address", host,
                        l->ipv6 ? "IPv6" : "IPv4");
    }
    uint32_t p;
    CM_TRY(cfg_u32(ld, &p, "listen", port, 1, 65535));
    memcpy(l->host, host, strlen(host) + 1);
    l->port = (uint16_t)p;
    cfg->num_listen++;
    return cm_result_make(CM_OK);
}

static cm_result cfg_daemon(cfg_loader *ld)
{
    cfg_config *cfg = ld->cfg;
    (void)snprintf(ld->section, sizeof(ld->section), "certmintd");
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(ld->conf, "certmintd");
    if (vals == NULL) {
        ERR_clear_error();
        ld->section[0] = '\0';
        return cfg_fail(ld, CFG_E_MISSING, NULL, "no [certmintd] section");
    }
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->io_threads = cores > 0 && cores < 256 ? (uint32_t)cores : 1;
    cfg->max_connections = 4096;
    cfg->header_timeout = 10;
    cfg->idle_timeout = 30;
    cfg->hsm_sessions = cfg->io_threads;
    cfg->max_request_bytes = 256u * 1024u;
    cfg->min_pbm_iterations = 100;
    cfg->max_pbm_iterations = 100000;
    cfg->max_pbmac1_iterations = 100000;
    cfg->message_time_window = 300;
    cfg->confirm_wait_time = 300;
    cfg->log_level = CM_LOG_INFO;
    const char *default_ca = NULL;
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "listen") == 0) {
            cfg->num_listen = 0;
            char item[CFG_ITEM_MAX];
            for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
                CM_TRY(cfg_listen_one(ld, item));
            }
        } else if (strcmp(k, "io_threads") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->io_threads, k, v, 1, 256));
        } else if (strcmp(k, "hsm_sessions") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->hsm_sessions, k, v, 1, 1024));
        } else if (strcmp(k, "store_sync") == 0) {
            if (strcmp(v, "full") == 0) {
                cfg->store_sync_normal = false;
            } else if (strcmp(v, "normal") == 0) {
                cfg->store_sync_normal = true;
            } else {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not full or normal", v);
            }
        } else if (strcmp(k, "max_connections") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_connections, k, v, 1, 1000000));
        } else if (strcmp(k, "header_timeout") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->header_timeout, k, v, 1, 3600));
        } else if (strcmp(k, "idle_timeout") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->idle_timeout, k, v, 1, 86400));
        } else if (strcmp(k, "store") == 0) {
            if (strncmp(v, "sqlite:", 7) != 0 || v[7] == '\0') {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not sqlite:PATH", v);
            }
            CM_TRY(cfg_path(ld, &cfg->store_path, k, v + 7));
        } else if (strcmp(k, "max_request_bytes") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_request_bytes, k, v, 1024, 64u << 20));
        } else if (strcmp(k, "min_pbm_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->min_pbm_iterations, k, v, 1, 10000000));
        } else if (strcmp(k, "max_pbm_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_pbm_iterations, k, v, 1, 10000000));
        } else if (strcmp(k, "max_pbmac1_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_pbmac1_iterations, k, v, 1, 10000000));
        } else if (strcmp(k, "message_time_window") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->message_time_window, k, v, 1, 86400));
        } else if (strcmp(k, "confirm_wait_time") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->confirm_wait_time, k, v, 1, 86400));
        } else if (strcmp(k, "log_level") == 0) {
            if (!cm_log_level_parse(v, &cfg->log_level)) {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not error, warn, info or debug", v);
            }
        } else if (strcmp(k, "default_ca") == 0) {
            default_ca = v;
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (cfg->num_listen == 0) {
        return cfg_fail(ld, CFG_E_MISSING, "listen", "missing");
    }
    if (cfg->store_path == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "store", "missing");
    }
    if (cfg->min_pbm_iterations > cfg->max_pbm_iterations) {
        return cfg_fail(ld, CFG_E_VALUE, "min_pbm_iterations", "%u is above max_pbm_iterations %u",
                        cfg->min_pbm_iterations, cfg->max_pbm_iterations);
    }
    if (default_ca != NULL) {
        cfg->default_ca = cfg_ca_find(cfg, default_ca);
        if (cfg->default_ca == NULL) {
            return cfg_fail(ld, CFG_E_REFERENCE, "default_ca", "no [ca:%s] section", default_ca);
        }
    } else if (cfg->num_cas == 1) {
        cfg->default_ca = &cfg->cas[0];
    }
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// [profile:NAME]

static cm_result cfg_key_types(cfg_loader *ld, uint32_t *out, const char *key, const char *v)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } k_types[] = {{"P-256", CA_KEY_EC_P256},   {"P-384", CA_KEY_EC_P384},
                   {"P-521", CA_KEY_EC_P521},   {"RSA", CA_KEY_RSA},
                   {"Ed25519", CA_KEY_ED25519}, {"Ed448", CA_KEY_ED448}};
    uint32_t bits = 0;
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        uint32_t bit = 0;
        for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++) {
            if (strcasecmp(item, k_types[i].name) == 0) {
                bit = k_types[i].bit;
            }
        }
        if (bit == 0) {
            return cfg_fail(ld, CFG_E_VALUE, key,
                            "'%s' is not one of P-256, P-384, P-521, RSA, Ed25519, Ed448", item);
        }
        bits |= bit;
    }
    *out = bits;
    return cm_result_make(CM_OK);
}

static cm_result cfg_san_types(cfg_loader *ld, uint32_t *out, const char *key, const char *v)
{
    uint32_t bits = 0;
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        if (strcasecmp(item, "dns") == 0) {
            bits |= CA_SAN_DNS;
        } else if (strcasecmp(item, "ip") == 0) {
            bits |= CA_SAN_IP;
        } else if (strcasecmp(item, "email") == 0) {
            bits |= CA_SAN_EMAIL;
        } else if (strcasecmp(item, "uri") == 0) {
            bits |= CA_SAN_URI;
        } else if (strcasecmp(item, "none") != 0) {
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not one of dns, ip, email, uri, none",
                            item);
        }
    }
    *out = bits;
    return cm_result_make(CM_OK);
}

// cfg_names splits |v| into at most CA_MAX_RDN_RULES / 2 names, copied into |store|.
static cm_result cfg_names(cfg_loader *ld, char store[][64], const char **names, size_t *num,
                           const char *key, const char *v)
{
    char item[CFG_ITEM_MAX];
    *num = 0;
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        if (*num == CA_MAX_RDN_RULES / 2) {
            return cfg_fail(ld, CFG_E_VALUE, key, "more than %u attribute types",
                            CA_MAX_RDN_RULES / 2);
        }
        ASN1_OBJECT *obj = item[0] != '\0' && strlen(item) < 64 ? OBJ_txt2obj(item, 0) : NULL;
        ASN1_OBJECT_free(obj);
        if (obj == NULL) {
            ERR_clear_error();
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not an attribute type OpenSSL knows",
                            item);
        }
        memcpy(store[*num], item, strlen(item) + 1);
        names[*num] = store[*num];
        (*num)++;
    }
    return cm_result_make(CM_OK);
}

static cm_result cfg_profile_load(cfg_loader *ld, cfg_profile *pr, const char *section)
{
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(ld->conf, section);
    ca_profile_params p;
    memset(&p, 0, sizeof(p));
    p.name = pr->name;
    p.default_days = 365;
    p.key_types = CA_KEY_EC_P256;
    p.rsa_min_bits = 2048;
    p.rsa_max_bits = 4096;
    p.implicit_confirm = true;
    bool have_max = false;
    char req_store[CA_MAX_RDN_RULES / 2][64], allow_store[CA_MAX_RDN_RULES / 2][64];
    const char *req_names[CA_MAX_RDN_RULES / 2], *allow_names[CA_MAX_RDN_RULES / 2];
    const char *ext = NULL;
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "validity_days") == 0) {
            CM_TRY(cfg_u32(ld, &p.default_days, k, v, 1, 36500));
        } else if (strcmp(k, "max_validity_days") == 0) {
            CM_TRY(cfg_u32(ld, &p.max_days, k, v, 1, 36500));
            have_max = true;
        } else if (strcmp(k, "key_types") == 0) {
            CM_TRY(cfg_key_types(ld, &p.key_types, k, v));
        } else if (strcmp(k, "rsa_min_bits") == 0) {
            CM_TRY(cfg_u32(ld, &p.rsa_min_bits, k, v, 1024, 16384));
        } else if (strcmp(k, "rsa_max_bits") == 0) {
            CM_TRY(cfg_u32(ld, &p.rsa_max_bits, k, v, 1024, 16384));
        } else if (strcmp(k, "subject_required") == 0) {
            CM_TRY(cfg_names(ld, req_store, req_names, &p.num_required_rdns, k, v));
        } else if (strcmp(k, "subject_allowed") == 0) {
            CM_TRY(cfg_names(ld, allow_store, allow_names, &p.num_allowed_rdns, k, v));
        } else if (strcmp(k, "san_types") == 0) {
            CM_TRY(cfg_san_types(ld, &p.san_types, k, v));
        } else if (strcmp(k, "implicit_confirm") == 0) {
            CM_TRY(cfg_bool(ld, &p.implicit_confirm, k, v));
        } else if (strcmp(k, "extensions") == 0) {
            if (NCONF_get_section(ld->conf, v) == NULL) {
                ERR_clear_error();
                return cfg_fail(ld, CFG_E_REFERENCE, k, "no section [%s]", v);
            }
            ext = v;
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (!have_max) {
        p.max_days = p.default_days;
    } else if (p.max_days < p.default_days) {
        return cfg_fail(ld, CFG_E_VALUE, "max_validity_days", "%u is below validity_days %u",
                        p.max_days, p.default_days);
    }
    if (p.rsa_max_bits < p.rsa_min_bits) {
        return cfg_fail(ld, CFG_E_VALUE, "rsa_max_bits", "%u is below rsa_min_bits %u",
                        p.rsa_max_bits, p.rsa_min_bits);
    }
    if (p.key_types == 0) {
        return cfg_fail(ld, CFG_E_VALUE, "key_types", "no key type");
    }
    p.subject_mode =
        p.num_required_rdns + p.num_allowed_rdns > 0 ? CA_SUBJECT_RULES : CA_SUBJECT_COPY;
    p.required_rdns = req_names;
    p.allowed_rdns = allow_names;
    char why[400];
    cm_result r = ca_profile_new(&pr->profile, why, sizeof(why), &p, ld->conf, ext);
    if (!cm_ok(r)) {
        return cfg_fail(ld, r.code == CM_E_NOMEM ? CM_E_NOMEM : CFG_E_VALUE, NULL, "%s", why);
    }
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// [clients:NAME]

static cm_result cfg_read_secret(cfg_loader *ld, cfg_secret *s, const char *key, const char *path)
{
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return cfg_fail(ld, CFG_E_FILE, key, "cannot open %s: %s", path, strerror(errno));
    }
    cm_result res = cm_result_make(CM_OK);
    uint8_t *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        res = cfg_fail(ld, CFG_E_FILE, key, "%s is not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        res = cfg_fail(ld, CFG_E_SECRET_MODE, key,
                       "%s has mode %04o; a secret must not be accessible by group or others "
                       "(chmod 600)",
                       path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size <= 0 || st.st_size > (off_t)CFG_MAX_SECRET) {
        res = cfg_fail(ld, CFG_E_VALUE, key, "%s must hold 1..%u bytes", path, CFG_MAX_SECRET);
        goto out;
    }
    const size_t cap = (size_t)st.st_size;
    buf = malloc(cap);
    if (buf == NULL) {
        res = cm_result_make(CM_E_NOMEM);
        goto out;
    }
    size_t len = 0;
    while (len < cap) {
        const ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    // One trailing line end is not part of the secret (files made with echo).
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r') {
            len--;
        }
    }
    if (len == 0) {
        res = cfg_fail(ld, CFG_E_VALUE, key, "%s holds an empty secret", path);
        goto out;
    }
    s->secret = buf;
    s->secret_len = len;
    buf = NULL;
out:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, (size_t)st.st_size);
        free(buf);
    }
    (void)close(fd);
    return res;
}

static int cfg_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static cm_result cfg_kid(cfg_loader *ld, cfg_secret *s, const char *key, const char *v)
{
    const bool hex = strncmp(v, "hex:", 4) == 0;
    const char *src = hex ? v + 4 : v;
    const size_t n = strlen(src);
    if (n == 0 || (hex && n % 2 != 0)) {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not a senderKID (text or hex:HEXDIGITS)", v);
    }
    uint8_t *kid = malloc(hex ? n / 2 : n);
    CM_ENSURE(kid != NULL, CM_E_NOMEM);
    if (hex) {
        for (size_t i = 0; i < n; i += 2) {
            const int hi = cfg_hex(src[i]), lo = cfg_hex(src[i + 1]);
            if (hi < 0 || lo < 0) {
                free(kid);
                return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not valid hex", v);
            }
            kid[i / 2] = (uint8_t)(hi * 16 + lo);
        }
    } else {
        memcpy(kid, src, n);
    }
    free(s->kid);
    s->kid = kid;
    s->kid_len = hex ? n / 2 : n;
    return cm_result_make(CM_OK);
}

static cm_result cfg_paths_list(cfg_loader *ld, char **paths, size_t *num, const char *key,
                                const char *v)
{
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        if (*num == CFG_MAX_LIST) {
            return cfg_fail(ld, CFG_E_VALUE, key, "more than %u files", CFG_MAX_LIST);
        }
        if (item[0] == '\0') {
            return cfg_fail(ld, CFG_E_VALUE, key, "empty file name in '%s'", v);
        }
        paths[*num] = cfg_resolve(ld, item);
        CM_ENSURE(paths[*num] != NULL, CM_E_NOMEM);
        (*num)++;
    }
    return cm_result_make(CM_OK);
}

static cm_result cfg_clients_body(cfg_loader *ld, cfg_clients *cl, STACK_OF(CONF_VALUE) * vals,
                                  char **anchors, size_t *num_anchors)
{
    const int n = sk_CONF_VALUE_num(vals);
    size_t num_secrets = 0;
    for (int i = 0; i < n; i++) {
        num_secrets += strncmp(sk_CONF_VALUE_value(vals, i)->name, "secret.", 7) == 0;
    }
    if (num_secrets > 0) {
        cl->secrets = calloc(num_secrets, sizeof(*cl->secrets));
        CM_ENSURE(cl->secrets != NULL, CM_E_NOMEM);
    }
    cl->ra_certs = calloc(CFG_MAX_RA_CERTS, sizeof(*cl->ra_certs));
    cl->ra_cert_lens = calloc(CFG_MAX_RA_CERTS, sizeof(*cl->ra_cert_lens));
    CM_ENSURE(cl->ra_certs != NULL && cl->ra_cert_lens != NULL, CM_E_NOMEM);
    // Pass 1: everything but senderKID.REF, which refers to secrets.
    for (int i = 0; i < n; i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strncmp(k, "secret.", 7) == 0) {
            if (k[7] == '\0') {
                return cfg_fail(ld, CFG_E_VALUE, k, "the reference after 'secret.' is empty");
            }
            cfg_secret *s = &cl->secrets[cl->num_secrets++];
            s->ref = cfg_strdup(k + 7);
            char *path = NULL;
            CM_ENSURE(s->ref != NULL, CM_E_NOMEM);
            CM_TRY(cfg_path(ld, &path, k, v));
            cm_result r = cfg_read_secret(ld, s, k, path);
            free(path);
            CM_TRY(r);
            CM_TRY(cfg_kid(ld, s, k, s->ref));
        } else if (strncmp(k, "senderKID.", 10) == 0) {
            continue;
        } else if (strcmp(k, "trust_anchors") == 0) {
            CM_TRY(cfg_paths_list(ld, anchors, num_anchors, k, v));
        } else if (strcmp(k, "ra_certs") == 0) {
            char *paths[CFG_MAX_LIST];
            size_t num = 0;
            cm_result r = cfg_paths_list(ld, paths, &num, k, v);
            for (size_t j = 0; j < num; j++) {
                if (cm_ok(r)) {
                    r = cfg_read_certs(ld, k, paths[j], cl->ra_certs, cl->ra_cert_lens,
                                       &cl->num_ra_certs, CFG_MAX_RA_CERTS);
                }
                free(paths[j]);
            }
            CM_TRY(r);
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    // Pass 2: senderKID overrides.
    for (int i = 0; i < n; i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        if (strncmp(cv->name, "senderKID.", 10) != 0) {
            continue;
        }
        cfg_secret *s = NULL;
        for (size_t j = 0; j < cl->num_secrets; j++) {
            if (strcmp(cl->secrets[j].ref, cv->name + 10) == 0) {
                s = &cl->secrets[j];
            }
        }
        if (s == NULL) {
            return cfg_fail(ld, CFG_E_REFERENCE, cv->name, "there is no secret.%s", cv->name + 10);
        }
        CM_TRY(cfg_kid(ld, s, cv->name, cv->value));
    }
    for (size_t i = 0; i < cl->num_secrets; i++) {
        for (size_t j = 0; j < i; j++) {
            if (cm_span_eq(cm_span_make(cl->secrets[i].kid, cl->secrets[i].kid_len),
                           cm_span_make(cl->secrets[j].kid, cl->secrets[j].kid_len))) {
                return cfg_fail(ld, CFG_E_VALUE, NULL,
                                "secret.%s and secret.%s have the same "
                                "senderKID",
                                cl->secrets[j].ref, cl->secrets[i].ref);
            }
        }
    }
    if (*num_anchors > 0) {
        char why[400];
        cm_result r = ca_trust_new(&cl->trust, why, sizeof(why), (const char *const *)anchors,
                                   *num_anchors, CFG_TRUST_CACHE);
        if (!cm_ok(r)) {
            return cfg_fail(ld, r.code == CM_E_NOMEM ? CM_E_NOMEM : CFG_E_FILE, "trust_anchors",
                            "%s", why);
        }
    }
    return cm_result_make(CM_OK);
}

static cm_result cfg_clients_load(cfg_loader *ld, cfg_clients *cl, const char *section)
{
    char *anchors[CFG_MAX_LIST];
    size_t num_anchors = 0;
    cm_result r =
        cfg_clients_body(ld, cl, NCONF_get_section(ld->conf, section), anchors, &num_anchors);
    for (size_t i = 0; i < num_anchors; i++) {
        free(anchors[i]);
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// [ca:NAME]

static cm_result cfg_ca_load(cfg_loader *ld, cfg_ca *ca, const char *section)
{
    cfg_config *cfg = ld->cfg;
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(ld->conf, section);
    ca->crl_validity_days = 7;
    ca->crl_min_interval = 60;
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "key") == 0) {
            CM_TRY(cfg_pkcs11_uri(ld, &ca->key_uri, k, v));
        } else if (strcmp(k, "cmp_key") == 0) {
            CM_TRY(cfg_pkcs11_uri(ld, &ca->cmp_key_uri, k, v));
        } else if (strcmp(k, "cert") == 0) {
            CM_TRY(cfg_path(ld, &ca->cert_path, k, v));
        } else if (strcmp(k, "chain") == 0) {
            CM_TRY(cfg_path(ld, &ca->chain_path, k, v));
        } else if (strcmp(k, "cmp_cert") == 0) {
            CM_TRY(cfg_path(ld, &ca->cmp_cert_path, k, v));
        } else if (strcmp(k, "profile") == 0) {
            ca->profile = NULL;
            for (size_t j = 0; j < cfg->num_profiles; j++) {
                if (strcmp(cfg->profiles[j].name, v) == 0) {
                    ca->profile = &cfg->profiles[j];
                }
            }
            if (ca->profile == NULL) {
                return cfg_fail(ld, CFG_E_REFERENCE, k, "no [profile:%s] section", v);
            }
        } else if (strcmp(k, "clients") == 0) {
            ca->clients = NULL;
            for (size_t j = 0; j < cfg->num_clients; j++) {
                if (strcmp(cfg->clients[j].name, v) == 0) {
                    ca->clients = &cfg->clients[j];
                }
            }
            if (ca->clients == NULL) {
                return cfg_fail(ld, CFG_E_REFERENCE, k, "no [clients:%s] section", v);
            }
        } else if (strcmp(k, "caPubs") == 0) {
            CM_TRY(cfg_bool(ld, &ca->ca_pubs, k, v));
        } else if (strcmp(k, "sign_mac_responses") == 0) {
            CM_TRY(cfg_bool(ld, &ca->sign_mac_responses, k, v));
        } else if (strcmp(k, "unprotected_genm") == 0) {
            CM_TRY(cfg_bool(ld, &ca->unprotected_genm, k, v));
        } else if (strcmp(k, "root_new_with_new") == 0) {
            CM_TRY(cfg_path(ld, &ca->root_update_paths[0], k, v));
        } else if (strcmp(k, "root_new_with_old") == 0) {
            CM_TRY(cfg_path(ld, &ca->root_update_paths[1], k, v));
        } else if (strcmp(k, "root_old_with_new") == 0) {
            CM_TRY(cfg_path(ld, &ca->root_update_paths[2], k, v));
        } else if (strcmp(k, "crl_validity_days") == 0) {
            CM_TRY(cfg_u32(ld, &ca->crl_validity_days, k, v, 1, 365));
        } else if (strcmp(k, "crl_min_interval") == 0) {
            CM_TRY(cfg_u32(ld, &ca->crl_min_interval, k, v, 0, 86400));
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (ca->key_uri == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "key", "missing");
    }
    if (ca->cert_path == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "cert", "missing");
    }
    if (ca->profile == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "profile", "missing");
    }
    if ((ca->cmp_key_uri == NULL) != (ca->cmp_cert_path == NULL)) {
        return cfg_fail(ld, CFG_E_MISSING, ca->cmp_key_uri == NULL ? "cmp_key" : "cmp_cert",
                        "cmp_key and cmp_cert go together");
    }
    char why[400];
    cm_result r =
        ca_authority_load(&ca->authority, why, sizeof(why), ca->cert_path, ca->chain_path);
    if (!cm_ok(r)) {
        return cfg_fail(ld, r.code == CM_E_NOMEM ? CM_E_NOMEM : CFG_E_FILE, "cert", "%s", why);
    }
    static const char *const k_root_keys[3] = {"root_new_with_new", "root_new_with_old",
                                               "root_old_with_new"};
    if (ca->root_update_paths[0] == NULL &&
        (ca->root_update_paths[1] != NULL || ca->root_update_paths[2] != NULL)) {
        return cfg_fail(ld, CFG_E_MISSING, "root_new_with_new",
                        "required with root_new_with_old / root_old_with_new");
    }
    for (size_t i = 0; i < 3; i++) {
        if (ca->root_update_paths[i] != NULL) {
            size_t num = 0;
            CM_TRY(cfg_read_certs(ld, k_root_keys[i], ca->root_update_paths[i], &ca->root_update[i],
                                  &ca->root_update_len[i], &num, 1));
        }
    }
    if (ca->cmp_key_uri == NULL) {
        ca->cmp_key_uri = cfg_strdup(ca->key_uri);
        ca->cmp_cert_path = cfg_strdup(ca->cert_path);
        const cm_span der = ca_authority_cert(ca->authority);
        ca->cmp_cert = malloc(der.len);
        CM_ENSURE(ca->cmp_key_uri != NULL && ca->cmp_cert_path != NULL && ca->cmp_cert != NULL,
                  CM_E_NOMEM);
        memcpy(ca->cmp_cert, der.p, der.len);
        ca->cmp_cert_len = der.len;
    } else {
        size_t num = 0;
        CM_TRY(cfg_read_certs(ld, "cmp_cert", ca->cmp_cert_path, &ca->cmp_cert, &ca->cmp_cert_len,
                              &num, 1));
    }
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// The file

// cfg_read_text reads the file and rewrites "[kind:name]" section headers to "[kind name]",
// which OpenSSL 3.0's NCONF accepts.
static cm_result cfg_read_text(cfg_loader *ld, char **out, size_t *out_len)
{
    const int fd = open(ld->cfg->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return cfg_fail(ld, CFG_E_FILE, NULL, "cannot open: %s", strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)CFG_MAX_FILE) {
        (void)close(fd);
        return cfg_fail(ld, CFG_E_FILE, NULL, "not a regular file of at most %u bytes",
                        CFG_MAX_FILE);
    }
    const size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        (void)close(fd);
        CM_BAIL(CM_E_NOMEM);
    }
    size_t len = 0;
    while (len < cap) {
        const ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    (void)close(fd);
    buf[len] = '\0';
    bool continued = false;
    size_t line = 1;
    for (char *p = buf; *p != '\0'; line++) {
        char *eol = strchr(p, '\n');
        char *end = eol != NULL ? eol : p + strlen(p);
        char *s = p;
        while (s < end && (*s == ' ' || *s == '\t')) {
            s++;
        }
        if (!continued && s < end && *s == '[') {
            for (char *c = s; c < end && *c != ']'; c++) {
                if (*c == ':') {
                    *c = ' ';
                }
            }
        }
        if (!continued && (size_t)(end - s) >= 8 && strncmp(s, ".include", 8) == 0) {
            free(buf);
            return cfg_fail(ld, CFG_E_SYNTAX, NULL, "line %zu: .include is not supported", line);
        }
        continued = end > p && end[-1] == '\\';
        p = eol != NULL ? eol + 1 : end;
    }
    *out = buf;
    *out_len = len;
    return cm_result_make(CM_OK);
}

static int cfg_cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// cfg_sections loads every [profile:], [clients:] and [ca:] section, in that order.
static cm_result cfg_sections(cfg_loader *ld, const char **names, size_t num)
{
    cfg_config *cfg = ld->cfg;
    static const char *const k_kinds[] = {"profile", "clients", "ca"};
    size_t counts[3] = {0, 0, 0};
    for (size_t i = 0; i < num; i++) {
        const char *sp = strchr(names[i], ' ');
        if (sp == NULL) {
            continue; // extension, policy and variable sections
        }
        const size_t klen = (size_t)(sp - names[i]);
        bool known = false;
        for (size_t k = 0; k < 3; k++) {
            if (strlen(k_kinds[k]) == klen && strncmp(names[i], k_kinds[k], klen) == 0) {
                counts[k]++;
                known = true;
            }
        }
        ld->section[0] = '\0';
        if (!known) {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, NULL,
                            "[%.*s:%s]: unknown section kind '%.*s' (ca, profile, clients)",
                            (int)klen, names[i], sp + 1, (int)klen, names[i]);
        }
        if (sp[1] == '\0' || strchr(sp + 1, ' ') != NULL) {
            return cfg_fail(ld, CFG_E_SYNTAX, NULL, "[%s]: bad section name", names[i]);
        }
    }
    cfg->profiles = calloc(counts[0] + 1, sizeof(*cfg->profiles));
    cfg->clients = calloc(counts[1] + 1, sizeof(*cfg->clients));
    cfg->cas = calloc(counts[2] + 1, sizeof(*cfg->cas));
    CM_ENSURE(cfg->profiles != NULL && cfg->clients != NULL && cfg->cas != NULL, CM_E_NOMEM);
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < num; i++) {
            const char *sp = strchr(names[i], ' ');
            const size_t klen = strlen(k_kinds[k]);
            if (sp == NULL || (size_t)(sp - names[i]) != klen ||
                strncmp(names[i], k_kinds[k], klen) != 0) {
                continue;
            }
            (void)snprintf(ld->section, sizeof(ld->section), "%s:%s", k_kinds[k], sp + 1);
            char *name = cfg_strdup(sp + 1);
            CM_ENSURE(name != NULL, CM_E_NOMEM);
            if (k == 0) {
                cfg_profile *pr = &cfg->profiles[cfg->num_profiles++];
                pr->name = name;
                CM_TRY(cfg_profile_load(ld, pr, names[i]));
            } else if (k == 1) {
                cfg_clients *cl = &cfg->clients[cfg->num_clients++];
                cl->name = name;
                CM_TRY(cfg_clients_load(ld, cl, names[i]));
            } else {
                cfg_ca *ca = &cfg->cas[cfg->num_cas++];
                ca->name = name;
                CM_TRY(cfg_ca_load(ld, ca, names[i]));
            }
        }
    }
    ld->section[0] = '\0';
    if (cfg->num_cas == 0) {
        return cfg_fail(ld, CFG_E_MISSING, NULL, "no [ca:NAME] section");
    }
    return cm_result_make(CM_OK);
}

static cm_result cfg_parse(cfg_loader *ld)
{
    char *text = NULL;
    size_t len = 0;
    CM_TRY(cfg_read_text(ld, &text, &len));
    cm_result res = cm_result_make(CM_E_NOMEM);
    STACK_OF(OPENSSL_CSTRING) *sk = NULL;
    const char **names = NULL;
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    ld->conf = NCONF_new(NULL);
    if (bio == NULL || ld->conf == NULL) {
        goto out;
    }
    long line = 0;
    if (NCONF_load_bio(ld->conf, bio, &line) != 1) {
        const unsigned long e = ERR_peek_last_error();
        const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;
        res = cfg_fail(ld, CFG_E_SYNTAX, NULL, "line %ld: %s", line,
                       why != NULL ? why : "syntax error");
        goto out;
    }
    sk = NCONF_get_section_names(ld->conf);
    if (sk == NULL) {
        goto out;
    }
    const size_t num = (size_t)sk_OPENSSL_CSTRING_num(sk);
    names = calloc(num + 1, sizeof(*names));
    if (names == NULL) {
        goto out;
    }
    for (size_t i = 0; i < num; i++) {
        names[i] = sk_OPENSSL_CSTRING_value(sk, (int)i);
    }
    qsort(names, num, sizeof(*names), cfg_cmp_names); // messages do not depend on hashing
    res = cfg_sections(ld, names, num);
    if (cm_ok(res)) {
        res = cfg_daemon(ld);
    }
out:
    ERR_clear_error();
    free(names);
    sk_OPENSSL_CSTRING_free(sk);
    BIO_free(bio);
    NCONF_free(ld->conf);
    ld->conf = NULL;
    // The text may hold $variables but never secrets (those live in their own files).
    free(text);
    return res;
}

cm_result cfg_load(cfg_config **out, char *err, size_t err_cap, const char *path)
{
    cfg_config *cfg = calloc(1, sizeof(*cfg));
    CM_ENSURE(cfg != NULL, CM_E_NOMEM);
    cfg_loader ld = {cfg, NULL, err, err_cap, ""};
    cm_result res = cm_result_make(CM_E_NOMEM);
    cfg->path = cfg_strdup(path);
    if (cfg->path == NULL) {
        goto out;
    }
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        cfg->dir = cfg_strdup(".");
    } else {
        const size_t n = slash == path ? 1 : (size_t)(slash - path);
        cfg->dir = malloc(n + 1);
        if (cfg->dir != NULL) {
            memcpy(cfg->dir, path, n);
            cfg->dir[n] = '\0';
        }
    }
    if (cfg->dir == NULL) {
        goto out;
    }
    res = cfg_parse(&ld);
    if (cm_ok(res)) {
        *out = cfg;
        cfg = NULL;
    }
out:
    cfg_free(cfg);
    return res;
}

void cfg_free(cfg_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    for (size_t i = 0; i < cfg->num_cas; i++) {
        cfg_ca *ca = &cfg->cas[i];
        free(ca->name);
        free(ca->key_uri);
        free(ca->cmp_key_uri);
        free(ca->cert_path);
        free(ca->chain_path);
        free(ca->cmp_cert_path);
        free(ca->cmp_cert);
        for (size_t k = 0; k < 3; k++) {
            free(ca->root_update_paths[k]);
            free(ca->root_update[k]);
        }
        ca_authority_free(ca->authority);
    }
    for (size_t i = 0; i < cfg->num_profiles; i++) {
        free(cfg->profiles[i].name);
        ca_profile_free(cfg->profiles[i].profile);
    }
    for (size_t i = 0; i < cfg->num_clients; i++) {
        cfg_clients *cl = &cfg->clients[i];
        for (size_t j = 0; j < cl->num_secrets; j++) {
            cfg_secret *s = &cl->secrets[j];
            if (s->secret != NULL) {
                OPENSSL_cleanse(s->secret, s->secret_len);
            }
            free(s->secret);
            free(s->kid);
            free(s->ref);
        }
        free(cl->secrets);
        for (size_t j = 0; j < cl->num_ra_certs; j++) {
            free(cl->ra_certs[j]);
        }
        free(cl->ra_certs);
        free(cl->ra_cert_lens);
        ca_trust_free(cl->trust);
        free(cl->name);
    }
    free(cfg->cas);
    free(cfg->profiles);
    free(cfg->clients);
    free(cfg->store_path);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

const cfg_ca *cfg_ca_find(const cfg_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->num_cas; i++) {
        if (strcmp(cfg->cas[i].name, name) == 0) {
            return &cfg->cas[i];
        }
    }
    return NULL;
}

const cfg_secret *cfg_clients_find_secret(const cfg_clients *clients, cm_span kid)
{
    for (size_t i = 0; i < clients->num_secrets; i++) {
        const cfg_secret *s = &clients->secrets[i];
        if (cm_span_eq(cm_span_make(s->kid, s->kid_len), kid)) {
            return s;
        }
    }
    return NULL;
}

const char *cfg_result_name(cm_result r)
{
    switch (r.code) {
    case CFG_E_SYNTAX:
        return "USAGE/CFG_SYNTAX";
    case CFG_E_VALUE:
        return "USAGE/CFG_VALUE";
    case CFG_E_UNKNOWN_KEY:
        return "USAGE/CFG_UNKNOWN_KEY";
    case CFG_E_MISSING:
        return "USAGE/CFG_MISSING";
    case CFG_E_FILE:
        return "USAGE/CFG_FILE";
    case CFG_E_SECRET_MODE:
        return "USAGE/CFG_SECRET_MODE";
    case CFG_E_REFERENCE:
        return "USAGE/CFG_REFERENCE";
    default:
        return ca_result_name(r);
    }
}
