// The incremental request parser (RFC 9112 §2-§6, strict). A request head is scanned byte by
// byte with decisions that depend only on the bytes seen so far, so splitting the input
// anywhere never changes the answer; the complete head is then parsed in one pass, in place
// when it arrived in one feed, from the head buffer otherwise.
#include <string.h>

#include "engine/http/http.h"

// Where in the chunked-body grammar the next byte falls (http_parser.chunk_state).
enum {
    HTTP_CH_SIZE = 0, // hex digits of chunk-size
    HTTP_CH_SIZE_WS,  // whitespace after the size: only more of it or ';' may follow
    HTTP_CH_EXT,      // chunk extensions (ignored), up to CR
    HTTP_CH_LINE_LF,  // the LF ending a chunk line
    HTTP_CH_DATA,     // chunk data (chunk_size bytes left)
    HTTP_CH_DATA_CR,  // the CR after chunk data
    HTTP_CH_DATA_LF,  // the LF after it
    HTTP_CH_TR_START, // the start of a trailer line, or the CR of the final empty line
    HTTP_CH_TR_NAME,  // a trailer field name, up to ':'
    HTTP_CH_TR_VALUE, // its value, up to CR
    HTTP_CH_TR_LF,    // the LF ending a trailer line
    HTTP_CH_END_LF,   // the LF of the final empty line
};

// Scratch facts about the head that do not survive into http_request.
typedef struct http_head_info {
    bool has_length;
    uint64_t length;
    uint32_t num_te;
    bool te_chunked_only;
    bool seen_content_type;
    uint32_t num_host;
    bool conn_close;
    bool conn_keep_alive;
} http_head_info;

http_limits http_limits_default(void)
{
    http_limits l = {
        .max_request_line = HTTP_DEFAULT_MAX_REQUEST_LINE,
        .max_head = HTTP_DEFAULT_MAX_HEAD,
        .max_fields = HTTP_DEFAULT_MAX_FIELDS,
        .max_body = HTTP_DEFAULT_MAX_BODY,
    };
    return l;
}

static void http_head_reset(http_parser *p)
{
    p->state = HTTP_PARSER_HEAD;
    p->head_len = 0;
    p->buffered = 0;
    p->line_len = 0;
    p->num_lines = 0;
    p->prev_cr = false;
    p->body_left = 0;
    p->body = NULL;
    memset(&p->pending, 0, sizeof(p->pending));
    p->body_cap = 0;
    p->chunk_state = 0;
    p->chunk_size = 0;
    p->chunk_digits = 0;
    p->chunk_sig = 0;
    p->framing = 0;
    p->trailer_lines = 0;
}

cm_result http_parser_init(http_parser *p, const http_limits *limits, uint8_t *head_buf,
                           size_t head_cap)
{
    CM_ENSURE(p != NULL && limits != NULL && head_buf != NULL, CM_E_INVALID_ARG);
    CM_ENSURE(limits->max_request_line > 0 && limits->max_head > 0 && limits->max_fields > 0,
              CM_E_INVALID_ARG);
    CM_ENSURE(head_cap >= limits->max_head, CM_E_INVALID_ARG);
    memset(p, 0, sizeof(*p));
    p->limits = *limits;
    p->head_buf = head_buf;
    p->head_cap = head_cap;
    http_head_reset(p);
    return cm_result_make(CM_OK);
}

bool http_parser_idle(const http_parser *p)
{
    return p->state == HTTP_PARSER_HEAD && p->head_len == 0;
}

// --- character classes (RFC 9110 §5.6.2) ---------------------------------------------------

static bool http_is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static uint8_t http_lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

// http_eq_ci compares |s| with the lower-case literal |lit| ignoring ASCII case.
static bool http_eq_ci(cm_span s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (http_lower(s.p[i]) != (uint8_t)lit[i]) {
            return false;
        }
    }
    return true;
}

static cm_span http_trim_ows(cm_span s)
{
    while (s.len > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t')) {
        s.len--;
    }
    return s;
}

// --- head scanning ---------------------------------------------------------------------------

typedef enum http_scan {
    HTTP_SCAN_MORE,
    HTTP_SCAN_DONE,
    HTTP_SCAN_ERROR,
} http_scan;

// http_scan_byte advances the line state by one byte of the head.
static http_scan http_scan_byte(http_parser *p, uint8_t c, uint32_t *out_err)
{
    const http_limits *l = &p->limits;
    p->head_len++;
    if (p->head_len > l->max_head) {
        *out_err = HTTP_E_HEAD_TOO_LARGE;
        return HTTP_SCAN_ERROR;
    }
    if (p->prev_cr) {
        p->prev_cr = false;
        if (c != '\n') {
            *out_err = HTTP_E_BARE_CR;
            return HTTP_SCAN_ERROR;
        }
        if (p->line_len > 0) {
            p->num_lines++;
            p->line_len = 0;
            return HTTP_SCAN_MORE;
        }
        // The empty line ends the head. RFC 9112 §2.2 lets a server skip empty lines before
        // the request line; we do not: a CMP client never sends them.
        if (p->num_lines == 0) {
            *out_err = HTTP_E_BAD_REQUEST_LINE;
            return HTTP_SCAN_ERROR;
        }
        return HTTP_SCAN_DONE;
    }
    if (c == '\r') {
        p->prev_cr = true;
        return HTTP_SCAN_MORE;
    }
    if (c == '\n') {
        *out_err = HTTP_E_BARE_LF;
        return HTTP_SCAN_ERROR;
    }
    p->line_len++;
    if (p->num_lines == 0 && p->line_len > l->max_request_line) {
        *out_err = HTTP_E_REQUEST_LINE_TOO_LONG;
        return HTTP_SCAN_ERROR;
    }
    if (p->num_lines > 0 && p->line_len == 1) {
        // RFC 9112 §5.2: obs-fold is rejected in requests.
        if (c == ' ' || c == '\t') {
            *out_err = HTTP_E_OBS_FOLD;
            return HTTP_SCAN_ERROR;
        }
        if (p->num_lines > l->max_fields) {
            *out_err = HTTP_E_TOO_MANY_FIELDS;
            return HTTP_SCAN_ERROR;
        }
    }
    return HTTP_SCAN_MORE;
}

// http_head_scan advances the line state over |in| until the empty line ending the head, an
// error, or the end of |in|. |*out_used| is the bytes looked at (the error byte included).
// Every check is decided by the bytes up to the current one, so any split of the input gives
// the same answer at the same offset.
static http_scan http_head_scan(http_parser *p, cm_span in, size_t *out_used, uint32_t *out_err)
{
    for (size_t i = 0; i < in.len; i++) {
        http_scan s = http_scan_byte(p, in.p[i], out_err);
        if (s != HTTP_SCAN_MORE) {
            *out_used = i + 1;
            return s;
        }
    }
    *out_used = in.len;
    return HTTP_SCAN_MORE;
}

// --- head parsing ----------------------------------------------------------------------------

// http_next_line splits the line ending in CR LF off |*rest| (the scanner guarantees one).
static cm_span http_next_line(cm_span *rest)
{
    size_t i = 0;
    while (i + 1 < rest->len && !(rest->p[i] == '\r' && rest->p[i + 1] == '\n')) {
        i++;
    }
    cm_span line = cm_span_make(rest->p, i);
    size_t skip = i + 2 <= rest->len ? i + 2 : rest->len;
    rest->p += skip;
    rest->len -= skip;
    return line;
}

// http_origin_of reduces an absolute-form target ("http://host/path?q") to its path and query;
// origin-form passes unchanged. RFC 9112 §3.2.2: a server MUST accept absolute-form.
static CM_RESULT http_origin_of(cm_span *target)
{
    for (size_t i = 0; i < target->len; i++) {
        CM_ENSURE(target->p[i] != '#', HTTP_E_BAD_TARGET);
    }
    if (target->len > 0 && target->p[0] == '/') {
        return cm_result_make(CM_OK);
    }
    size_t skip;
    if (target->len >= 7 && http_eq_ci(cm_span_make(target->p, 7), "http://")) {
        skip = 7;
    } else if (target->len >= 8 && http_eq_ci(cm_span_make(target->p, 8), "https://")) {
        skip = 8;
    } else {
        CM_BAIL(HTTP_E_BAD_TARGET); // "*" and authority-form are not for us
    }
    size_t i = skip;
    while (i < target->len && target->p[i] != '/' && target->p[i] != '?') {
        i++;
    }
    CM_ENSURE(i > skip && i < target->len && target->p[i] == '/', HTTP_E_BAD_TARGET);
    target->p += i;
    target->len -= i;
    return cm_result_make(CM_OK);
}

// request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
// HTTP-version = "HTTP" "/" DIGIT "." DIGIT                (RFC 9112 §2.3)
static CM_RESULT http_parse_request_line(http_request *req, cm_span line)
{
    size_t i = 0;
    while (i < line.len && line.p[i] != ' ') {
        CM_ENSURE(http_is_tchar(line.p[i]), HTTP_E_BAD_METHOD);
        i++;
    }
    CM_ENSURE(i < line.len, HTTP_E_BAD_REQUEST_LINE);
    CM_ENSURE(i > 0, HTTP_E_BAD_METHOD);
    cm_span method = cm_span_make(line.p, i);
    size_t t0 = ++i;
    while (i < line.len && line.p[i] != ' ') {
        // Visible ASCII only: no controls, no DEL, no obs-text in the target.
        CM_ENSURE(line.p[i] > 0x20 && line.p[i] < 0x7f, HTTP_E_BAD_TARGET);
        i++;
    }
    CM_ENSURE(i < line.len, HTTP_E_BAD_REQUEST_LINE);
    CM_ENSURE(i > t0, HTTP_E_BAD_TARGET);
    cm_span target = cm_span_make(line.p + t0, i - t0);
    cm_span version = cm_span_make(line.p + i + 1, line.len - i - 1);
    CM_ENSURE(version.len == 8 && memcmp(version.p, "HTTP/", 5) == 0 && version.p[5] >= '0' &&
                  version.p[5] <= '9' && version.p[6] == '.' && version.p[7] >= '0' &&
                  version.p[7] <= '9',
              HTTP_E_BAD_VERSION);
    CM_ENSURE(version.p[5] == '1' && (version.p[7] == '0' || version.p[7] == '1'), HTTP_E_VERSION);
    CM_TRY(http_origin_of(&target));

    req->version_minor = (uint8_t)(version.p[7] - '0');
    req->target = target;
    if (method.len == 4 && memcmp(method.p, "POST", 4) == 0) {
        req->method = HTTP_METHOD_POST; // methods are case-sensitive (RFC 9110 §9.1)
    } else if (method.len == 3 && memcmp(method.p, "GET", 3) == 0) {
        req->method = HTTP_METHOD_GET;
    } else {
        req->method = HTTP_METHOD_OTHER;
    }
    return cm_result_make(CM_OK);
}

// Content-Length = 1*DIGIT (RFC 9110 §8.6); no lists, no signs, below 2^63.
static CM_RESULT http_parse_length(uint64_t *out, cm_span v)
{
    CM_ENSURE(v.len > 0, HTTP_E_BAD_CONTENT_LENGTH);
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        CM_ENSURE(v.p[i] >= '0' && v.p[i] <= '9', HTTP_E_BAD_CONTENT_LENGTH);
        uint64_t d = (uint64_t)(v.p[i] - '0');
        CM_ENSURE(n <= ((uint64_t)INT64_MAX - d) / 10u, HTTP_E_BAD_CONTENT_LENGTH);
        n = n * 10u + d;
    }
    *out = n;
    return cm_result_make(CM_OK);
}

static http_content_type http_classify_media(cm_span v)
{
    size_t i = 0;
    while (i < v.len && v.p[i] != ';') {
        i++;
    }
    cm_span type = http_trim_ows(cm_span_make(v.p, i));
    if (http_eq_ci(type, "application/pkixcmp") || http_eq_ci(type, "application/pkixcmp-poll")) {
        return HTTP_CONTENT_PKIXCMP;
    }
    return HTTP_CONTENT_OTHER;
}

// Connection = #connection-option (RFC 9110 §7.6.1): close and keep-alive matter to us.
static void http_parse_connection(http_head_info *info, cm_span v)
{
    while (v.len > 0) {
        size_t i = 0;
        while (i < v.len && v.p[i] != ',') {
            i++;
        }
        cm_span tok = http_trim_ows(cm_span_make(v.p, i));
        if (http_eq_ci(tok, "close")) {
            info->conn_close = true;
        } else if (http_eq_ci(tok, "keep-alive")) {
            info->conn_keep_alive = true;
        }
        size_t skip = i < v.len ? i + 1 : i;
        v.p += skip;
        v.len -= skip;
    }
}

// field-line = field-name ":" OWS field-value OWS (RFC 9112 §5)
static CM_RESULT http_parse_field(http_request *req, http_head_info *info, cm_span line)
{
    size_t i = 0;
    while (i < line.len && line.p[i] != ':') {
        // RFC 9112 §5.1: no whitespace between the name and the colon (400).
        CM_ENSURE(line.p[i] != ' ' && line.p[i] != '\t', HTTP_E_SPACE_BEFORE_COLON);
        CM_ENSURE(http_is_tchar(line.p[i]), HTTP_E_BAD_FIELD_NAME);
        i++;
    }
    CM_ENSURE(i > 0 && i < line.len, HTTP_E_BAD_FIELD_NAME);
    cm_span name = cm_span_make(line.p, i);
    cm_span value = http_trim_ows(cm_span_make(line.p + i + 1, line.len - i - 1));
    for (size_t k = 0; k < value.len; k++) {
        uint8_t c = value.p[k];
        CM_ENSURE((c >= 0x20 && c != 0x7f) || c == '\t', HTTP_E_BAD_FIELD_VALUE);
    }

    if (http_eq_ci(name, "content-length")) {
        uint64_t n = 0;
        CM_TRY(http_parse_length(&n, value));
        CM_ENSURE(!info->has_length || info->length == n, HTTP_E_CONTENT_LENGTH_CONFLICT);
        info->has_length = true;
        info->length = n;
    } else if (http_eq_ci(name, "transfer-encoding")) {
        info->num_te++;
        info->te_chunked_only = info->num_te == 1 && http_eq_ci(value, "chunked");
    } else if (http_eq_ci(name, "content-type")) {
        CM_ENSURE(!info->seen_content_type, HTTP_E_DUPLICATE_FIELD);
        info->seen_content_type = true;
        req->content_type = http_classify_media(value);
    } else if (http_eq_ci(name, "connection")) {
        http_parse_connection(info, value);
    } else if (http_eq_ci(name, "host")) {
        info->num_host++;
        req->host = value;
    } else if (http_eq_ci(name, "expect")) {
        if (http_eq_ci(value, "100-continue")) {
            req->expect_continue = true;
        }
    }
    return cm_result_make(CM_OK);
}

// http_check_request decides, from a syntactically valid head, whether the request is one we
// serve and how its body is framed. On failure |*out_close| says whether the stream is lost.
static CM_RESULT http_check_request(const http_parser *p, http_request *req,
                                    const http_head_info *info, bool *out_close,
                                    http_method *out_allow)
{
    *out_close = true;
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one otherwise.
    CM_ENSURE(info->num_host <= 1 && (req->version_minor == 0 || info->num_host == 1),
              HTTP_E_BAD_HOST);
    const bool chunked = info->num_te > 0;
    if (chunked) {
        // RFC 9112 §6.1, §6.3: TE with CL is a smuggling attempt; TE in HTTP/1.0 is faulty
        // framing; chunked must be the only (and so the final) coding, we know no other.
        CM_ENSURE(!info->has_length, HTTP_E_LENGTH_AND_ENCODING);
        CM_ENSURE(req->version_minor == 1, HTTP_E_ENCODING_HTTP10);
        CM_ENSURE(info->te_chunked_only, HTTP_E_ENCODING);
    }
    uint64_t len = info->has_length ? info->length : 0;
    // A request answered 404/405/415 can keep the connection when its body can be skipped
    // (a chunked one is not skipped: it always closes).
    *out_close = chunked || !req->keep_alive || len > p->limits.max_body ||
                 (req->expect_continue && len > 0);

    CM_TRY(http_route_classify(&req->route, req->target));
    http_method want = req->route.kind == HTTP_ROUTE_CMP ? HTTP_METHOD_POST : HTTP_METHOD_GET;
    if (req->method != want) {
        *out_allow = want;
        CM_BAIL(HTTP_E_METHOD);
    }
    *out_close = true;
    if (want == HTTP_METHOD_GET) {
        CM_ENSURE(len == 0 && !chunked, HTTP_E_BODY_NOT_ALLOWED);
    } else {
        CM_ENSURE(info->has_length || chunked, HTTP_E_LENGTH_REQUIRED);
        CM_ENSURE(len <= p->limits.max_body, HTTP_E_BODY_TOO_LARGE);
        *out_close = chunked || !req->keep_alive || (req->expect_continue && len > 0);
        CM_ENSURE(req->content_type == HTTP_CONTENT_PKIXCMP, HTTP_E_MEDIA_TYPE);
    }
    return cm_result_make(CM_OK);
}

// http_parse_head parses a complete head (the scanner vetted its line structure) into
// p->pending and sets up the body. Returns the error to answer; |*out_close|, |*out_allow| and
// |*out_len| (the announced body length, for skipping) describe it.
static CM_RESULT http_parse_head(http_parser *p, cm_arena *arena, cm_span head, bool *out_close,
                                 http_method *out_allow, uint64_t *out_len)
{
    http_request *req = &p->pending;
    memset(req, 0, sizeof(*req));
    http_head_info info;
    memset(&info, 0, sizeof(info));
    *out_close = true;
    *out_len = 0;

    cm_span rest = head;
    CM_TRY(http_parse_request_line(req, http_next_line(&rest)));
    for (;;) {
        cm_span line = http_next_line(&rest);
        if (line.len == 0) {
            break;
        }
        CM_TRY(http_parse_field(req, &info, line));
    }
    req->keep_alive =
        req->version_minor == 1 ? !info.conn_close : (info.conn_keep_alive && !info.conn_close);
    *out_len = info.has_length ? info.length : 0;
    CM_TRY(http_check_request(p, req, &info, out_close, out_allow));

    // Accepted: move what the request keeps into its arena, so nothing points into the input
    // or the head buffer once this feed returns.
    *out_close = true;
    uint8_t *t = cm_arena_memdup(arena, req->target);
    CM_ENSURE(t != NULL, CM_E_NOMEM);
    req->route.name.p = req->route.name.len > 0 ? t + (req->route.name.p - req->target.p) : t;
    req->route.operation.p =
        req->route.operation.len > 0 ? t + (req->route.operation.p - req->target.p) : t;
    req->target.p = t;
    if (req->host.len > 0) {
        uint8_t *h = cm_arena_memdup(arena, req->host);
        CM_ENSURE(h != NULL, CM_E_NOMEM);
        req->host.p = h;
    } else {
        req->host.p = t; // empty, but never a pointer into the input
    }
    if (info.num_te > 0) {
        // Chunked (the check allowed no other coding): the body buffer grows as chunks come.
        req->body = cm_span_make(NULL, 0);
        p->chunk_state = HTTP_CH_SIZE;
        p->state = HTTP_PARSER_CHUNKED;
        return cm_result_make(CM_OK);
    }
    p->body = cm_arena_alloc(arena, (size_t)*out_len);
    CM_ENSURE(p->body != NULL, CM_E_NOMEM);
    req->body = cm_span_make(p->body, (size_t)*out_len);
    p->body_left = *out_len;
    p->state = HTTP_PARSER_BODY;
    return cm_result_make(CM_OK);
}

// --- chunked bodies (RFC 9112 §7.1) ------------------------------------------------------------
//
// chunked-body   = *chunk last-chunk trailer-section CRLF
// chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
// chunk-size     = 1*HEXDIG
// last-chunk     = 1*("0") [ chunk-ext ] CRLF
// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
// trailer-section = *( field-line CRLF )
//
// Like the head, the framing is scanned byte by byte with decisions that depend only on the
// bytes seen so far; chunk data is copied in bulk.

typedef enum http_chunk_step {
    HTTP_CHUNK_MORE,      // go on
    HTTP_CHUNK_SIZE_DONE, // chunk_size is complete: check it and make room before its data
    HTTP_CHUNK_END,       // the empty line after the trailer section: the body is complete
    HTTP_CHUNK_ERROR,
} http_chunk_step;

static int http_hex_value(uint8_t c)
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

// http_chunk_size_byte reads one byte of chunk-size (state HTTP_CH_SIZE).
static http_chunk_step http_chunk_size_byte(http_parser *p, uint8_t c, uint32_t *out_err)
{
    const int d = http_hex_value(c);
    if (d >= 0) {
        // At most 16 significant digits, so the size never overflows 64 bits.
        if ((p->chunk_sig > 0 || d != 0) && ++p->chunk_sig > 16) {
            *out_err = HTTP_E_BAD_CHUNK;
            return HTTP_CHUNK_ERROR;
        }
        p->chunk_size = p->chunk_size * 16u + (uint64_t)d;
        p->chunk_digits++;
        return HTTP_CHUNK_MORE;
    }
    if (p->chunk_digits == 0) {
        *out_err = HTTP_E_BAD_CHUNK; // the size is 1*HEXDIG
        return HTTP_CHUNK_ERROR;
    }
    if (c == ';') {
        p->chunk_state = HTTP_CH_EXT;
    } else if (c == ' ' || c == '\t') {
        p->chunk_state = HTTP_CH_SIZE_WS;
    } else if (c == '\r') {
        p->chunk_state = HTTP_CH_LINE_LF;
    } else {
        *out_err = HTTP_E_BAD_CHUNK;
        return HTTP_CHUNK_ERROR;
    }
    return HTTP_CHUNK_SIZE_DONE;
}

// http_trailer_byte reads one byte of the trailer section with the head's field-line rules.
static http_chunk_step http_trailer_byte(http_parser *p, uint8_t c, uint32_t *out_err)
{
    uint32_t err = CM_OK;
    switch (p->chunk_state) {
    case HTTP_CH_TR_START:
        if (c == '\r') {
            p->chunk_state = HTTP_CH_END_LF;
        } else if (c == ' ' || c == '\t') {
            err = HTTP_E_OBS_FOLD;
        } else if (++p->trailer_lines > p->limits.max_fields) {
            err = HTTP_E_TOO_MANY_FIELDS;
        } else if (c == '\n') {
            err = HTTP_E_BARE_LF;
        } else if (!http_is_tchar(c)) {
            err = HTTP_E_BAD_FIELD_NAME; // an empty name (':') or not a token
        } else {
            p->chunk_state = HTTP_CH_TR_NAME;
        }
        break;
    case HTTP_CH_TR_NAME:
        if (c == ':') {
            p->chunk_state = HTTP_CH_TR_VALUE;
        } else if (c == ' ' || c == '\t') {
            err = HTTP_E_SPACE_BEFORE_COLON;
        } else if (c == '\n') {
            err = HTTP_E_BARE_LF;
        } else if (!http_is_tchar(c)) {
            err = HTTP_E_BAD_FIELD_NAME; // CR before a colon included
        }
        break;
    case HTTP_CH_TR_VALUE:
        if (c == '\r') {
            p->chunk_state = HTTP_CH_TR_LF;
        } else if (c == '\n') {
            err = HTTP_E_BARE_LF;
        } else if (!((c >= 0x20 && c != 0x7f) || c == '\t')) {
            err = HTTP_E_BAD_FIELD_VALUE;
        }
        break;
    case HTTP_CH_TR_LF:
        if (c != '\n') {
            err = HTTP_E_BARE_CR;
        }
        p->chunk_state = HTTP_CH_TR_START;
        break;
    default: // HTTP_CH_END_LF
        if (c != '\n') {
            err = HTTP_E_BARE_CR;
            break;
        }
        return HTTP_CHUNK_END;
    }
    if (err != CM_OK) {
        *out_err = err;
        return HTTP_CHUNK_ERROR;
    }
    return HTTP_CHUNK_MORE;
}

// http_chunk_byte advances the framing state by one byte (any state but HTTP_CH_DATA).
static http_chunk_step http_chunk_byte(http_parser *p, uint8_t c, uint32_t *out_err)
{
    if (++p->framing > p->limits.max_head) {
        *out_err = HTTP_E_HEAD_TOO_LARGE;
        return HTTP_CHUNK_ERROR;
    }
    bool ok = true;
    switch (p->chunk_state) {
    case HTTP_CH_SIZE:
        return http_chunk_size_byte(p, c, out_err);
    case HTTP_CH_SIZE_WS: // BWS after the size must lead to an extension
        if (c == ';') {
            p->chunk_state = HTTP_CH_EXT;
        } else {
            ok = c == ' ' || c == '\t';
        }
        break;
    case HTTP_CH_EXT: // ignored: visible characters, SP, HTAB (and obs-text) up to CR
        if (c == '\r') {
            p->chunk_state = HTTP_CH_LINE_LF;
        } else {
            ok = (c >= 0x20 && c != 0x7f) || c == '\t';
        }
        break;
    case HTTP_CH_LINE_LF:
        ok = c == '\n';
        p->chunk_state = p->chunk_size == 0 ? HTTP_CH_TR_START : HTTP_CH_DATA;
        break;
    case HTTP_CH_DATA_CR:
        ok = c == '\r';
        p->chunk_state = HTTP_CH_DATA_LF;
        break;
    case HTTP_CH_DATA_LF:
        ok = c == '\n';
        p->chunk_state = HTTP_CH_SIZE;
        p->chunk_size = 0;
        p->chunk_digits = 0;
        p->chunk_sig = 0;
        break;
    default:
        return http_trailer_byte(p, c, out_err);
    }
    if (!ok) {
        *out_err = HTTP_E_BAD_CHUNK;
        return HTTP_CHUNK_ERROR;
    }
    return HTTP_CHUNK_MORE;
}

// http_chunk_reserve checks a chunk size that just became known against max_body (before any
// of its data is copied) and makes room for it in one contiguous arena buffer: when it does not
// fit, a buffer twice as large (at least 4 KiB, at most max_body) replaces the old one, which
// stays in the arena until it is reset.
static CM_RESULT http_chunk_reserve(http_parser *p, cm_arena *arena)
{
    const uint64_t have = (uint64_t)p->pending.body.len;
    CM_ENSURE(p->chunk_size <= p->limits.max_body - have, HTTP_E_BODY_TOO_LARGE);
    const uint64_t need = have + p->chunk_size;
    if (need <= (uint64_t)p->body_cap) {
        return cm_result_make(CM_OK);
    }
    uint64_t cap = 2u * (uint64_t)p->body_cap;
    cap = cap < 4096u ? 4096u : cap;
    cap = cap < need ? need : cap;
    cap = cap > p->limits.max_body ? p->limits.max_body : cap;
    uint8_t *nb = cm_arena_alloc(arena, (size_t)cap);
    CM_ENSURE(nb != NULL, CM_E_NOMEM);
    if (have > 0) {
        memcpy(nb, p->body, (size_t)have);
    }
    p->body = nb;
    p->body_cap = (size_t)cap;
    return cm_result_make(CM_OK);
}

// http_feed_chunked decodes chunked framing and data from |in| at |*io_pos|. Returns
// HTTP_CHUNK_MORE when |in| is used up, HTTP_CHUNK_END when the body is complete (|*io_pos|
// just after it), HTTP_CHUNK_ERROR with |*out_code| (the connection must close).
static http_chunk_step http_feed_chunked(http_parser *p, cm_arena *arena, cm_span in,
                                         size_t *io_pos, uint32_t *out_code)
{
    size_t i = *io_pos;
    http_chunk_step step = HTTP_CHUNK_MORE;
    while (i < in.len && step != HTTP_CHUNK_END) {
        if (p->chunk_state == HTTP_CH_DATA) {
            const size_t n =
                p->chunk_size < (uint64_t)(in.len - i) ? (size_t)p->chunk_size : in.len - i;
            memcpy(p->body + p->pending.body.len, in.p + i, n);
            p->pending.body.len += n;
            p->chunk_size -= n;
            i += n;
            if (p->chunk_size == 0) {
                p->chunk_state = HTTP_CH_DATA_CR;
            }
            continue;
        }
        step = http_chunk_byte(p, in.p[i++], out_code);
        if (step == HTTP_CHUNK_ERROR) {
            break;
        }
        if (step == HTTP_CHUNK_SIZE_DONE) {
            const cm_result r = http_chunk_reserve(p, arena);
            if (!cm_ok(r)) {
                *out_code = r.code;
                step = HTTP_CHUNK_ERROR;
                break;
            }
        }
    }
    *io_pos = i;
    return step == HTTP_CHUNK_SIZE_DONE ? HTTP_CHUNK_MORE : step;
}

// --- feeding ---------------------------------------------------------------------------------

static cm_result http_fail(http_parser *p, http_feed *out, uint32_t code, bool close, uint64_t skip)
{
    out->kind = HTTP_FEED_ERROR;
    out->error = cm_result_make(code);
    out->status = http_status_of(code);
    out->close = close;
    http_head_reset(p);
    if (close) {
        p->state = HTTP_PARSER_DEAD;
    } else if (skip > 0) {
        p->state = HTTP_PARSER_SKIP;
        p->body_left = skip;
    }
    return out->error;
}

// http_feed_head scans and, once complete, parses the head from |in|; |*out_used| is the bytes
// it took. Returns true when the body follows (state BODY), false when |*out_res| is final for
// this feed (need more, or an error).
static bool http_feed_head(http_parser *p, http_feed *out, cm_arena *arena, cm_span in,
                           size_t *out_used, cm_result *out_res)
{
    uint32_t err = CM_OK;
    size_t n = 0;
    http_scan s = http_head_scan(p, in, &n, &err);
    *out_used = n;
    if (s == HTTP_SCAN_ERROR) {
        *out_res = http_fail(p, out, err, true, 0);
        return false;
    }
    // The scanner bounds head_len by max_head <= head_cap, so buffering cannot overflow.
    cm_span head;
    if (p->buffered == 0 && s == HTTP_SCAN_DONE) {
        head = cm_span_make(in.p, n); // the whole head is in this feed: parse in place
    } else {
        CM_CHECK(p->buffered + n <= p->head_cap);
        memcpy(p->head_buf + p->buffered, in.p, n);
        p->buffered += n;
        head = cm_span_make(p->head_buf, p->buffered);
    }
    if (s == HTTP_SCAN_MORE) {
        *out_res = cm_result_make(CM_OK);
        return false;
    }
    bool close = true;
    http_method allow = HTTP_METHOD_OTHER;
    uint64_t len = 0;
    cm_result r = http_parse_head(p, arena, head, &close, &allow, &len);
    if (!cm_ok(r)) {
        *out_res = http_fail(p, out, r.code, close, close ? 0 : len);
        out->allow = allow;
        return false;
    }
    *out_res = cm_result_make(CM_OK);
    return true;
}

static size_t http_min(uint64_t a, size_t b)
{
    return a < (uint64_t)b ? (size_t)a : b;
}

cm_result http_parser_feed(http_parser *p, http_feed *out, cm_arena *arena, cm_span in)
{
    CM_ENSURE(p != NULL && out != NULL && arena != NULL && (in.p != NULL || in.len == 0),
              CM_E_INVALID_ARG);
    memset(out, 0, sizeof(*out));
    if (p->state == HTTP_PARSER_DEAD) {
        out->kind = HTTP_FEED_ERROR;
        out->error = cm_result_make(CM_E_STATE);
        out->status = 500;
        out->close = true;
        CM_BAIL(CM_E_STATE);
    }
    size_t pos = 0;
    if (p->state == HTTP_PARSER_SKIP) {
        size_t n = http_min(p->body_left, in.len);
        pos += n;
        p->body_left -= n;
        if (p->body_left > 0) {
            out->consumed = pos;
            return cm_result_make(CM_OK);
        }
        http_head_reset(p);
    }
    bool head_now = false;
    if (p->state == HTTP_PARSER_HEAD) {
        if (pos == in.len) {
            out->consumed = pos;
            return cm_result_make(CM_OK);
        }
        size_t used = 0;
        cm_result res;
        bool body =
            http_feed_head(p, out, arena, cm_span_make(in.p + pos, in.len - pos), &used, &res);
        pos += used;
        out->consumed = pos;
        if (!body) {
            return res;
        }
        head_now = true;
    }
    if (p->state == HTTP_PARSER_CHUNKED) {
        const size_t start = pos;
        uint32_t code = CM_OK;
        const http_chunk_step step = http_feed_chunked(p, arena, in, &pos, &code);
        out->consumed = pos;
        if (step == HTTP_CHUNK_ERROR) {
            return http_fail(p, out, code, true, 0);
        }
        if (step != HTTP_CHUNK_END) {
            out->send_continue = head_now && start == in.len && p->pending.expect_continue;
            return cm_result_make(CM_OK);
        }
        if (p->body == NULL) {
            p->body = cm_arena_alloc(arena, 0); // no data: still never a NULL body
            if (p->body == NULL) {
                return http_fail(p, out, CM_E_NOMEM, true, 0);
            }
        }
        out->kind = HTTP_FEED_REQUEST;
        out->request = p->pending;
        out->request.body = cm_span_make(p->body, p->pending.body.len);
        http_head_reset(p);
        return cm_result_make(CM_OK);
    }
    CM_CHECK(p->state == HTTP_PARSER_BODY);
    size_t n = http_min(p->body_left, in.len - pos);
    if (n > 0) {
        size_t off = p->pending.body.len - (size_t)p->body_left;
        memcpy(p->body + off, in.p + pos, n);
        pos += n;
        p->body_left -= n;
    }
    out->consumed = pos;
    if (p->body_left > 0) {
        // RFC 9110 §10.1.1: no 100 to an HTTP/1.0 client; only before the body arrives.
        out->send_continue =
            head_now && n == 0 && p->pending.expect_continue && p->pending.version_minor == 1;
        return cm_result_make(CM_OK);
    }
    out->kind = HTTP_FEED_REQUEST;
    out->request = p->pending;
    http_head_reset(p);
    return cm_result_make(CM_OK);
}
