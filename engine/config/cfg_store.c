// The [certmintd] store keys: store = sqlite:PATH (resolved against the configuration's folder)
// or a PostgreSQL connection string — a libpq URI (postgresql://..., postgres://...) or
// "postgresql:" followed by libpq's KEY=VALUE pairs — and store_passfile = PATH, the libpq
// password file, appended to the connection string. A password in the connection string itself
// is refused: configuration files get copied, shown and committed; the password stays in a file
// only the daemon's user can read (or in PGPASSFILE).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"

// cfg_pg_uri returns what follows "scheme://" for a libpq URI, NULL for anything else.
static const char *cfg_pg_uri(const char *v)
{
    if (strncmp(v, "postgresql://", 13) == 0) {
        return v + 13;
    }
    return strncmp(v, "postgres://", 11) == 0 ? v + 11 : NULL;
}

// cfg_pg_uri_password: a URI's password is in its userinfo (user:password@host) or a
// password= query parameter (RFC 3986 §3.2.1; libpq's URI form).
static bool cfg_pg_uri_password(const char *rest)
{
    const size_t authority = strcspn(rest, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < authority; i++) {
        at = rest[i] == '@' ? rest + i : at;
    }
    if (at != NULL && memchr(rest, ':', (size_t)(at - rest)) != NULL) {
        return true;
    }
    for (const char *p = strchr(rest, '?'); p != NULL; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, "password=", 9) == 0) {
            return true;
        }
    }
    return false;
}

typedef enum cfg_kv {
    CFG_KV_OK,
    CFG_KV_PASSWORD,
    CFG_KV_MALFORMED,
} cfg_kv;

// cfg_pg_kv_check walks KEY = VALUE pairs, a VALUE bare or in single quotes with backslash
// escapes (libpq's keyword/value form), looking for a password. Text that does not parse is
// refused too: it could hide one.
static cfg_kv cfg_pg_kv_check(const char *p)
{
    for (;;) {
        p += strspn(p, " \t");
        if (*p == '\0') {
            return CFG_KV_OK;
        }
        const char *key = p;
        p += strcspn(p, " \t=");
        const size_t key_len = (size_t)(p - key);
        p += strspn(p, " \t");
        if (*p != '=' || key_len == 0) {
            return CFG_KV_MALFORMED;
        }
        p++;
        p += strspn(p, " \t");
        if (key_len == 8 && memcmp(key, "password", 8) == 0) {
            return CFG_KV_PASSWORD;
        }
        if (*p == '\'') {
            for (p++; *p != '\0' && *p != '\''; p++) {
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                }
            }
            if (*p == '\'') {
                p++;
            }
        } else {
            p += strcspn(p, " \t");
        }
    }
}

cm_result cfg_store(cfg_loader *ld, const char *v)
{
    cfg_config *cfg = ld->cfg;
    free(cfg->store_url);
    cfg->store_url = NULL;
    free(cfg->store_path);
    cfg->store_path = NULL;
    if (strncmp(v, "sqlite:", 7) == 0 && v[7] != '\0') {
        CM_TRY(cfg_path(ld, &cfg->store_path, "store", v + 7));
        const size_t len = strlen(cfg->store_path) + 8;
        cfg->store_url = malloc(len);
        CM_ENSURE(cfg->store_url != NULL, CM_E_NOMEM);
        (void)snprintf(cfg->store_url, len, "sqlite:%s", cfg->store_path);
        return cm_result_make(CM_OK);
    }
    const char *uri = cfg_pg_uri(v);
    const bool kv = uri == NULL && strncmp(v, "postgresql:", 11) == 0 && v[11] != '\0';
    if (uri == NULL && !kv) {
        return cfg_fail(ld, CFG_E_VALUE, "store",
                        "'%s' is not sqlite:PATH nor postgresql://... (a libpq URI) nor "
                        "postgresql:KEY=VALUE ...",
                        v);
    }
    const cfg_kv kv_state = kv ? cfg_pg_kv_check(v + 11) : CFG_KV_OK;
    if (kv_state == CFG_KV_MALFORMED) {
        // Not repeated either: a password may be in what does not parse.
        return cfg_fail(ld, CFG_E_VALUE, "store",
                        "the postgresql: value is not libpq KEY=VALUE pairs");
    }
    if (kv_state == CFG_KV_PASSWORD || (uri != NULL && cfg_pg_uri_password(uri))) {
        // The value is not repeated: it holds the password.
        return cfg_fail(ld, CFG_E_VALUE, "store",
                        "the connection string holds a password: put it in a password file "
                        "(store_passfile = PATH, or PGPASSFILE) instead");
    }
    cfg->store_url = cfg_strdup(v);
    CM_ENSURE(cfg->store_url != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

// cfg_uri_escape appends |s| to |out| percent-encoded except for RFC 3986 unreserved
// characters and '/'.
static size_t cfg_uri_escape(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '.' || *c == '_' || *c == '~' || *c == '/') {
            out[n++] = (char)*c;
        } else {
            out[n++] = '%';
            out[n++] = hex[*c >> 4];
            out[n++] = hex[*c & 15];
        }
    }
    out[n] = '\0';
    return n;
}

cm_result cfg_store_finish(cfg_loader *ld)
{
    cfg_config *cfg = ld->cfg;
    if (cfg->store_passfile == NULL) {
        return cm_result_make(CM_OK);
    }
    if (cfg->store_path != NULL) {
        return cfg_fail(ld, CFG_E_VALUE, "store_passfile",
                        "only a PostgreSQL store takes a password file");
    }
    struct stat st;
    if (stat(cfg->store_passfile, &st) != 0 || !S_ISREG(st.st_mode)) {
        return cfg_fail(ld, CFG_E_FILE, "store_passfile", "cannot read %s", cfg->store_passfile);
    }
    if ((st.st_mode & 077) != 0) {
        return cfg_fail(ld, CFG_E_VALUE, "store_passfile",
                        "%s is readable by group or others (chmod 600 it)", cfg->store_passfile);
    }
    // Appended last: libpq takes the last value of a repeated keyword.
    const char *uri = cfg_pg_uri(cfg->store_url);
    const size_t cap = strlen(cfg->store_url) + 3 * strlen(cfg->store_passfile) + 16;
    char *url = malloc(cap);
    CM_ENSURE(url != NULL, CM_E_NOMEM);
    size_t n = (size_t)snprintf(url, cap, "%s", cfg->store_url);
    if (uri != NULL) {
        n += (size_t)snprintf(url + n, cap - n, "%cpassfile=", strchr(uri, '?') ? '&' : '?');
        (void)cfg_uri_escape(url + n, cfg->store_passfile);
    } else {
        n += (size_t)snprintf(url + n, cap - n, " passfile='");
        for (const char *c = cfg->store_passfile; *c != '\0'; c++) {
            if (*c == '\'' || *c == '\\') {
                url[n++] = '\\';
            }
            url[n++] = *c;
        }
        url[n++] = '\'';
        url[n] = '\0';
    }
    free(cfg->store_url);
    cfg->store_url = url;
    return cm_result_make(CM_OK);
}
