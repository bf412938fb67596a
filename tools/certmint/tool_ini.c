// The INI editor: the configuration text read, searched and written back as it is (comments,
// order and everything else kept), then checked with cfg_load.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/certmint/tool.h"

bool tool_text_read(const char *cmd, tool_text *t, const char *path)
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

bool tool_text_write(const char *cmd, const char *path, const char *data, size_t len,
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

bool tool_line_key(const char *p, const char *end, const char *key, const char **out_value,
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

bool tool_section_find(const tool_text *t, const char *name, size_t *out_body, size_t *out_end,
                       size_t *out_last)
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

bool tool_cfg_verify(const char *cmd, const char *path, const tool_text *orig)
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

bool tool_conf_value(const tool_text *t, const char *key, char *out, size_t cap)
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
