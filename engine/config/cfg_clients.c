// The [clients:NAME] sections: MAC secrets (secret.REF = file for a password, key.REF = file
// for a key; senderKID.REF overrides) with their limits (max_certs.REF, once.REF,
// subject_pattern.REF, for both kinds of secret) and their RA use (ra.REF), trust anchors and their
// CRLs for signature-protected clients, RA certificates, and the profiles a certProfile may select
// (see cfg.h for the keys).
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/crypto.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"

#define CFG_MAX_LIST    32u   // files in one comma-separated list (trust_anchors, ra_certs)
#define CFG_TRUST_CACHE 4096u // chain validations a client group's trust store remembers


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

static int cfg_hex(char c);

// cfg_key_decode turns the hex text cfg_read_secret read for a key.REF into the key's octets,
// in place: 16..64 octets (32..128 hex digits), and not obviously non-random (at least 8
// distinct octets; `openssl rand -hex 32` makes a good one).
static cm_result cfg_key_decode(cfg_loader *ld, cfg_secret *s, const char *key, const char *path)
{
    const size_t n = s->secret_len;
    bool hex = n % 2 == 0 && n >= 32 && n <= 128;
    for (size_t i = 0; hex && i < n; i++) {
        hex = cfg_hex((char)s->secret[i]) >= 0;
    }
    if (!hex) {
        return cfg_fail(ld, CFG_E_VALUE, key,
                        "%s must hold the key as 32..128 hex digits (16..64 octets; e.g. "
                        "openssl rand -hex 32)",
                        path);
    }
    bool seen[256] = {false};
    size_t distinct = 0;
    for (size_t i = 0; i < n; i += 2) {
        const uint8_t b =
            (uint8_t)(cfg_hex((char)s->secret[i]) * 16 + cfg_hex((char)s->secret[i + 1]));
        s->secret[i / 2] = b;
        distinct += seen[b] ? 0 : 1;
        seen[b] = true;
    }
    OPENSSL_cleanse(s->secret + n / 2, n - n / 2);
    s->secret_len = n / 2;
    s->is_key = true;
    if (distinct < 8) {
        return cfg_fail(ld, CFG_E_VALUE, key,
                        "%s does not look like a random key (%zu distinct octets); make one "
                        "with openssl rand -hex 32",
                        path, distinct);
    }
    return cm_result_make(CM_OK);
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

// cfg_ref_secret returns the secret REF of a per-secret key "PREFIX.REF", NULL (after failing
// with a message) when there is none.
static cfg_secret *cfg_ref_secret(cfg_loader *ld, cfg_clients *cl, const char *key, size_t plen,
                                  cm_result *out)
{
    for (size_t j = 0; j < cl->num_secrets; j++) {
        if (strcmp(cl->secrets[j].ref, key + plen) == 0) {
            return &cl->secrets[j];
        }
    }
    *out = cfg_fail(ld, CFG_E_REFERENCE, key, "there is no secret.%s or key.%s", key + plen,
                    key + plen);
    return NULL;
}

// cfg_secret_key applies one per-secret key (pass 2, after every secret.REF and key.REF; they
// apply to both kinds of secret): senderKID.REF,
// max_certs.REF, once.REF, subject_pattern.REF, ra.REF. Sets |*handled| when |k| is one of them.
static cm_result cfg_secret_key(cfg_loader *ld, cfg_clients *cl, const char *k, const char *v,
                                bool *handled, bool *once)
{
    static const char *const k_prefixes[] = {"senderKID.", "max_certs.", "once.",
                                             "subject_pattern.", "ra."};
    const size_t num_prefixes = sizeof(k_prefixes) / sizeof(k_prefixes[0]);
    size_t which = 0;
    *handled = false;
    for (; which < num_prefixes; which++) {
        if (strncmp(k, k_prefixes[which], strlen(k_prefixes[which])) == 0) {
            break;
        }
    }
    if (which == num_prefixes) {
        return cm_result_make(CM_OK);
    }
    *handled = true;
    cm_result r = cm_result_make(CM_OK);
    cfg_secret *s = cfg_ref_secret(ld, cl, k, strlen(k_prefixes[which]), &r);
    if (s == NULL) {
        return r;
    }
    const size_t idx = (size_t)(s - cl->secrets);
    if (which == 0) {
        return cfg_kid(ld, s, k, v);
    }
    if (which == 1) {
        uint32_t n = 0;
        CM_TRY(cfg_u32(ld, &n, k, v, 1, 1000000000u));
        if (once[idx] && n != 1) {
            return cfg_fail(ld, CFG_E_VALUE, k, "%u contradicts once.%s = on (one certificate)", n,
                            s->ref);
        }
        s->max_certs = n;
        return cm_result_make(CM_OK);
    }
    if (which == 2) {
        bool on = false;
        CM_TRY(cfg_bool(ld, &on, k, v));
        if (on && s->max_certs > 1) {
            return cfg_fail(ld, CFG_E_VALUE, k, "contradicts max_certs.%s = %u", s->ref,
                            s->max_certs);
        }
        once[idx] = on;
        if (on) {
            s->max_certs = 1;
        }
        return cm_result_make(CM_OK);
    }
    if (which == 4) {
        // ra.REF = on: the secret may protect nested messages as an RA (RFC 9483 §5.2.2);
        // any other MAC secret is refused for them.
        return cfg_bool(ld, &s->ra, k, v);
    }
    if (!ca_subject_pattern_valid(v)) {
        return cfg_fail(ld, CFG_E_VALUE, k,
                        "'%s' is not a subject pattern (1..%u characters, '*' and '?' as "
                        "wildcards, '\\' escapes the next character)",
                        v, CA_MAX_PATTERN);
    }
    free(s->subject_pattern);
    s->subject_pattern = cfg_strdup(v);
    CM_ENSURE(s->subject_pattern != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

// cfg_profiles_list resolves `profiles = a, b` to the [profile:NAME] sections (loaded before
// the client groups).
static cm_result cfg_profiles_list(cfg_loader *ld, cfg_clients *cl, const char *key, const char *v)
{
    const cfg_config *cfg = ld->cfg;
    free(cl->profiles);
    cl->num_profiles = 0;
    cl->profiles = calloc(cfg->num_profiles + 1, sizeof(*cl->profiles));
    CM_ENSURE(cl->profiles != NULL, CM_E_NOMEM);
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        const cfg_profile *found = NULL;
        for (size_t j = 0; j < cfg->num_profiles; j++) {
            if (strcmp(cfg->profiles[j].name, item) == 0) {
                found = &cfg->profiles[j];
            }
        }
        if (found == NULL) {
            return cfg_fail(ld, CFG_E_REFERENCE, key, "no [profile:%s] section", item);
        }
        for (size_t j = 0; j < cl->num_profiles; j++) {
            if (cl->profiles[j] == found) {
                return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is listed twice", item);
            }
        }
        cl->profiles[cl->num_profiles++] = found;
    }
    if (cl->num_profiles == 0) {
        return cfg_fail(ld, CFG_E_VALUE, key, "no profile named");
    }
    return cm_result_make(CM_OK);
}

// cfg_cross_requesters reads `cross_requesters = a.pem, b.pem`: the CA certificates that may
// send a ccr (issue 16), as DER.
static cm_result cfg_cross_requesters(cfg_loader *ld, cfg_clients *cl, const char *k, const char *v)
{
    if (cl->cross_certs == NULL) {
        cl->cross_certs = calloc(CFG_MAX_RA_CERTS, sizeof(*cl->cross_certs));
        cl->cross_cert_lens = calloc(CFG_MAX_RA_CERTS, sizeof(*cl->cross_cert_lens));
        CM_ENSURE(cl->cross_certs != NULL && cl->cross_cert_lens != NULL, CM_E_NOMEM);
    }
    char *paths[CFG_MAX_LIST];
    size_t num = 0;
    cm_result r = cfg_paths_list(ld, paths, &num, k, v);
    for (size_t j = 0; j < num; j++) {
        if (cm_ok(r)) {
            r = cfg_read_certs(ld, k, paths[j], cl->cross_certs, cl->cross_cert_lens,
                               &cl->num_cross_certs, CFG_MAX_RA_CERTS);
        }
        free(paths[j]);
    }
    return r;
}

// cfg_cross_profile resolves `cross_profile = NAME` to a [profile:NAME] with ca = on.
static cm_result cfg_cross_profile(cfg_loader *ld, cfg_clients *cl, const char *k, const char *v)
{
    const cfg_config *cfg = ld->cfg;
    for (size_t j = 0; j < cfg->num_profiles; j++) {
        if (strcmp(cfg->profiles[j].name, v) == 0) {
            if (!cfg->profiles[j].is_ca) {
                return cfg_fail(ld, CFG_E_VALUE, k,
                                "[profile:%s] issues end-entity certificates; a cross-certificate "
                                "needs a profile with ca = on",
                                v);
            }
            cl->cross_profile = &cfg->profiles[j];
            return cm_result_make(CM_OK);
        }
    }
    return cfg_fail(ld, CFG_E_REFERENCE, k, "no [profile:%s] section", v);
}

static cm_result cfg_clients_body(cfg_loader *ld, cfg_clients *cl, STACK_OF(CONF_VALUE) * vals,
                                  char **anchors, size_t *num_anchors)
{
    const int n = sk_CONF_VALUE_num(vals);
    size_t num_secrets = 0;
    for (int i = 0; i < n; i++) {
        num_secrets += strncmp(sk_CONF_VALUE_value(vals, i)->name, "secret.", 7) == 0 ||
                       strncmp(sk_CONF_VALUE_value(vals, i)->name, "key.", 4) == 0;
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
        const bool is_key = strncmp(k, "key.", 4) == 0;
        if (strncmp(k, "secret.", 7) == 0 || is_key) {
            const char *ref = k + (is_key ? 4 : 7);
            if (ref[0] == '\0') {
                return cfg_fail(ld, CFG_E_VALUE, k, "the reference after '%s' is empty",
                                is_key ? "key." : "secret.");
            }
            for (size_t j = 0; j < cl->num_secrets; j++) {
                if (strcmp(cl->secrets[j].ref, ref) == 0) {
                    return cfg_fail(ld, CFG_E_VALUE, k,
                                    "there is a secret.%s or key.%s already: one REF, one secret",
                                    ref, ref);
                }
            }
            cfg_secret *s = &cl->secrets[cl->num_secrets++];
            s->ref = cfg_strdup(ref);
            char *path = NULL;
            CM_ENSURE(s->ref != NULL, CM_E_NOMEM);
            CM_TRY(cfg_path(ld, &path, k, v));
            cm_result r = cfg_read_secret(ld, s, k, path);
            if (cm_ok(r) && is_key) {
                r = cfg_key_decode(ld, s, k, path);
            }
            free(path);
            CM_TRY(r);
            CM_TRY(cfg_kid(ld, s, k, s->ref));
        } else if (strncmp(k, "senderKID.", 10) == 0 || strncmp(k, "max_certs.", 10) == 0 ||
                   strncmp(k, "once.", 5) == 0 || strncmp(k, "subject_pattern.", 16) == 0 ||
                   strncmp(k, "ra.", 3) == 0) {
            continue;
        } else if (strcmp(k, "trust_anchors") == 0) {
            CM_TRY(cfg_paths_list(ld, anchors, num_anchors, k, v));
        } else if (strcmp(k, "trust_crls") == 0) {
            if (cl->crl_paths == NULL) {
                cl->crl_paths = calloc(CFG_MAX_LIST, sizeof(*cl->crl_paths));
                CM_ENSURE(cl->crl_paths != NULL, CM_E_NOMEM);
            }
            CM_TRY(cfg_paths_list(ld, cl->crl_paths, &cl->num_crl_paths, k, v));
        } else if (strcmp(k, "ra_require_cmcra") == 0) {
            CM_TRY(cfg_bool(ld, &cl->ra_require_cmcra, k, v));
        } else if (strcmp(k, "profiles") == 0) {
            CM_TRY(cfg_profiles_list(ld, cl, k, v));
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
        } else if (strcmp(k, "cross_requesters") == 0) {
            CM_TRY(cfg_cross_requesters(ld, cl, k, v));
        } else if (strcmp(k, "cross_profile") == 0) {
            CM_TRY(cfg_cross_profile(ld, cl, k, v));
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (cl->num_cross_certs > 0 && cl->cross_profile == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "cross_profile",
                        "cross_requesters needs a cross_profile (a profile with ca = on) that "
                        "their ccr are issued under");
    }
    // Pass 2: the per-secret keys (senderKID overrides, limits, subject patterns).
    bool *once = calloc(cl->num_secrets + 1, sizeof(bool));
    CM_ENSURE(once != NULL, CM_E_NOMEM);
    cm_result pr = cm_result_make(CM_OK);
    for (int i = 0; i < n && cm_ok(pr); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        bool handled = false;
        pr = cfg_secret_key(ld, cl, cv->name, cv->value, &handled, once);
    }
    free(once);
    CM_TRY(pr);
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
    if (cl->num_crl_paths > 0) {
        if (cl->trust == NULL) {
            return cfg_fail(ld, CFG_E_MISSING, "trust_crls",
                            "CRLs of trust anchors need trust_anchors in the same section");
        }
        char why[400];
        cm_result r = ca_trust_set_crls(cl->trust, why, sizeof(why),
                                        (const char *const *)cl->crl_paths, cl->num_crl_paths);
        if (!cm_ok(r)) {
            return cfg_fail(ld, r.code == CM_E_NOMEM ? CM_E_NOMEM : CFG_E_FILE, "trust_crls", "%s",
                            why);
        }
    }
    return cm_result_make(CM_OK);
}

cm_result cfg_clients_reload_crls(const cfg_clients *clients, char *err, size_t err_cap)
{
    if (clients->num_crl_paths == 0 || clients->trust == NULL) {
        return cm_result_make(CM_OK);
    }
    char why[400];
    cm_result r =
        ca_trust_set_crls(clients->trust, why, sizeof(why), (const char *const *)clients->crl_paths,
                          clients->num_crl_paths);
    if (!cm_ok(r) && err_cap > 0) {
        (void)snprintf(err, err_cap, "[clients:%s] trust_crls: %s", clients->name, why);
    }
    return r;
}

cm_result cfg_clients_load(cfg_loader *ld, cfg_clients *cl, const char *section)
{
    cl->ra_require_cmcra = true;
    char *anchors[CFG_MAX_LIST];
    size_t num_anchors = 0;
    cm_result r =
        cfg_clients_body(ld, cl, NCONF_get_section(ld->conf, section), anchors, &num_anchors);
    for (size_t i = 0; i < num_anchors; i++) {
        free(anchors[i]);
    }
    return r;
}
