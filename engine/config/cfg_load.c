// Loading and validating the configuration file (see cfg.h for the format): the loader's
// shared value parsers and error messages, reading the file, NCONF, the order in which the
// sections are loaded, and freeing. The sections themselves: cfg_daemon.c ([certmintd]),
// cfg_profile.c ([profile:NAME]), cfg_clients.c ([clients:NAME]), cfg_ca.c ([ca:NAME]).
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
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"

cm_result cfg_fail(cfg_loader *ld, uint32_t code, const char *key, const char *fmt, ...)
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

char *cfg_strdup(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

char *cfg_resolve(const cfg_loader *ld, const char *p)
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

bool cfg_item(const char **cursor, char *buf, size_t cap)
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

cm_result cfg_u32(cfg_loader *ld, uint32_t *out, const char *key, const char *v, uint32_t min,
                  uint32_t max)
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

cm_result cfg_bool(cfg_loader *ld, bool *out, const char *key, const char *v)
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

cm_result cfg_path(cfg_loader *ld, char **out, const char *key, const char *v)
{
    if (v[0] == '\0') {
        return cfg_fail(ld, CFG_E_VALUE, key, "empty path");
    }
    free(*out);
    *out = cfg_resolve(ld, v);
    CM_ENSURE(*out != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

cm_result cfg_pkcs11_uri(cfg_loader *ld, char **out, const char *key, const char *v)
{
    if (strncmp(v, "pkcs11:", 7) != 0) {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not a PKCS#11 URI (pkcs11:...)", v);
    }
    free(*out);
    *out = cfg_strdup(v);
    CM_ENSURE(*out != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

cm_result cfg_read_certs(cfg_loader *ld, const char *key, const char *path, uint8_t **ders,
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
        res = cfg_daemon_load(ld);
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
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_chain);
    free(cfg->tls_client_ca);
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
        free(cfg->profiles[i].name_constraints);
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
            free(s->subject_pattern);
        }
        free(cl->secrets);
        for (size_t j = 0; j < cl->num_crl_paths; j++) {
            free(cl->crl_paths[j]);
        }
        free(cl->crl_paths);
        free(cl->profiles);
        for (size_t j = 0; j < cl->num_ra_certs; j++) {
            free(cl->ra_certs[j]);
        }
        free(cl->ra_certs);
        free(cl->ra_cert_lens);
        for (size_t j = 0; j < cl->num_cross_certs; j++) {
            free(cl->cross_certs[j]);
        }
        free(cl->cross_certs);
        free(cl->cross_cert_lens);
        ca_trust_free(cl->trust);
        free(cl->name);
    }
    free(cfg->cas);
    free(cfg->profiles);
    free(cfg->clients);
    free(cfg->store_path);
    free(cfg->store_url);
    free(cfg->store_passfile);
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
