// Target classification: the CMP paths of RFC 9811 §3.3 and the daemon's own resources.
#include <string.h>

#include "engine/http/http.h"

// http_valid_name accepts 1..HTTP_MAX_NAME_LEN of [A-Za-z0-9._-], not starting with '.', so a
// name can never be "." or ".." or carry a separator or an escape.
static bool http_valid_name(cm_span s)
{
    if (s.len == 0 || s.len > HTTP_MAX_NAME_LEN || s.p[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool http_span_is(cm_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

static bool http_take_prefix(cm_span *s, const char *lit)
{
    size_t n = strlen(lit);
    if (s->len < n || memcmp(s->p, lit, n) != 0) {
        return false;
    }
    s->p += n;
    s->len -= n;
    return true;
}

// http_next_segment splits "/seg" off the front of |*rest|.
static bool http_next_segment(cm_span *rest, cm_span *out_seg)
{
    if (rest->len == 0 || rest->p[0] != '/') {
        return false;
    }
    size_t i = 1;
    while (i < rest->len && rest->p[i] != '/') {
        i++;
    }
    *out_seg = cm_span_make(rest->p + 1, i - 1);
    rest->p += i;
    rest->len -= i;
    return true;
}

// /.well-known/cmp[/p/NAME][/OPERATION], given what follows "/.well-known/cmp".
static bool http_route_cmp(http_route *out, cm_span rest)
{
    cm_span seg[4];
    size_t n = 0;
    while (rest.len > 0) {
        if (n == 4 || !http_next_segment(&rest, &seg[n])) {
            return false;
        }
        n++;
    }
    size_t i = 0;
    if (n >= 2 && http_span_is(seg[0], "p")) {
        if (!http_valid_name(seg[1])) {
            return false;
        }
        out->name = seg[1];
        i = 2;
    }
    if (i < n) {
        // An operation label; "p" alone is not one (it needs a name).
        if (http_span_is(seg[i], "p") || !http_valid_name(seg[i])) {
            return false;
        }
        out->operation = seg[i];
        i++;
    }
    if (i != n) {
        return false;
    }
    out->kind = HTTP_ROUTE_CMP;
    return true;
}

cm_result http_route_classify(http_route *out, cm_span target)
{
    memset(out, 0, sizeof(*out));
    cm_span path = target;
    for (size_t i = 0; i < target.len; i++) {
        if (target.p[i] == '?') {
            path.len = i; // the query is ignored for routing
            break;
        }
    }
    if (path.len > 1 && path.p[path.len - 1] == '/') {
        path.len--; // one trailing slash is accepted
    }
    cm_span rest = path;
    bool ok = false;
    if (http_span_is(path, "/healthz")) {
        out->kind = HTTP_ROUTE_HEALTHZ;
        ok = true;
    } else if (http_span_is(path, "/metrics")) {
        out->kind = HTTP_ROUTE_METRICS;
        ok = true;
    } else if (http_take_prefix(&rest, "/crl/")) {
        if (rest.len > 4 && memcmp(rest.p + rest.len - 4, ".crl", 4) == 0) {
            cm_span name = cm_span_make(rest.p, rest.len - 4);
            if (http_valid_name(name)) {
                out->kind = HTTP_ROUTE_CRL;
                out->name = name;
                ok = true;
            }
        }
    } else if (http_take_prefix(&rest, "/.well-known/cmp")) {
        ok = http_route_cmp(out, rest);
    }
    if (!ok) {
        memset(out, 0, sizeof(*out));
        CM_BAIL(HTTP_E_NOT_FOUND);
    }
    return cm_result_make(CM_OK);
}
