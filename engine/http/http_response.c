// The response writer (RFC 9112 §4, §6; RFC 9110 §15) and the status table.
#include <stdio.h>
#include <string.h>

#include "engine/http/http.h"

typedef struct http_status_entry {
    uint16_t status;
    const char *reason;
} http_status_entry;

static const http_status_entry k_http_statuses[] = {
    {100, "Continue"},
    {200, "OK"},
    {204, "No Content"},
    {400, "Bad Request"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {503, "Service Unavailable"},
    {505, "HTTP Version Not Supported"},
};

const char *http_status_reason(uint16_t status)
{
    for (size_t i = 0; i < sizeof(k_http_statuses) / sizeof(k_http_statuses[0]); i++) {
        if (k_http_statuses[i].status == status) {
            return k_http_statuses[i].reason;
        }
    }
    return "Unknown";
}

uint16_t http_status_of(uint32_t code)
{
    switch (code) {
    case CM_OK:
        return 200;
    case HTTP_E_NOT_FOUND:
        return 404;
    case HTTP_E_METHOD:
        return 405;
    case HTTP_E_MEDIA_TYPE:
        return 415;
    case HTTP_E_LENGTH_REQUIRED:
        return 411;
    case HTTP_E_ENCODING:
        return 501;
    case HTTP_E_VERSION:
        return 505;
    case HTTP_E_BODY_TOO_LARGE:
        return 413;
    case HTTP_E_REQUEST_LINE_TOO_LONG:
        return 414;
    case HTTP_E_HEAD_TOO_LARGE:
    case HTTP_E_TOO_MANY_FIELDS:
        return 431;
    case CM_E_NOMEM:
    case CM_E_LIMIT:
        return 503;
    default:
        break;
    }
    if (code >= HTTP_E_BAD_REQUEST_LINE && code <= HTTP_E_BAD_CHUNK) {
        return 400;
    }
    return 500;
}

// http_out is a bounded writer with a sticky overflow flag.
typedef struct http_out {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow;
} http_out;

static void http_put(http_out *o, const void *p, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = true;
        return;
    }
    if (n > 0) {
        memcpy(o->buf + o->len, p, n);
    }
    o->len += n;
}

static void http_puts(http_out *o, const char *s)
{
    http_put(o, s, strlen(s));
}

static void http_put_u64(http_out *o, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n] = (char)('0' + (v % 10u));
        v /= 10u;
        n++;
    } while (v > 0);
    http_put(o, tmp + sizeof(tmp) - n, n);
}

static void http_put_2digits(http_out *o, int v)
{
    char d[2] = {(char)('0' + (v / 10) % 10), (char)('0' + v % 10)};
    http_put(o, d, 2);
}

// IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT".
static void http_put_date(http_out *o, int64_t t)
{
    static const char k_days[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
    static const char k_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int y = 0;
    int mo = 1;
    int d = 0;
    int h = 0;
    int mi = 0;
    int s = 0;
    cm_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
    http_put(o, k_days[(t / 86400) % 7], 3);
    http_puts(o, ", ");
    http_put_2digits(o, d);
    http_puts(o, " ");
    http_put(o, k_months[mo - 1], 3);
    http_puts(o, " ");
    http_put_u64(o, (uint64_t)y);
    http_puts(o, " ");
    http_put_2digits(o, h);
    http_puts(o, ":");
    http_put_2digits(o, mi);
    http_puts(o, ":");
    http_put_2digits(o, s);
    http_puts(o, " GMT");
}

cm_result http_response_head_write(uint8_t *buf, size_t cap, size_t *out_len,
                                   const http_response *resp)
{
    CM_ENSURE(buf != NULL && out_len != NULL && resp != NULL, CM_E_INVALID_ARG);
    CM_ENSURE(resp->status >= 100 && resp->status <= 599, CM_E_INVALID_ARG);
    CM_ENSURE(resp->date >= 0 && resp->date < 253402300800, CM_E_INVALID_ARG); // year 9999
    if (resp->content_type != NULL) {
        for (const char *c = resp->content_type; *c != '\0'; c++) {
            CM_ENSURE((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f, CM_E_INVALID_ARG);
        }
    }
    http_out o = {buf, cap, 0, false};
    http_puts(&o, "HTTP/1.1 ");
    http_put_u64(&o, resp->status);
    http_puts(&o, " ");
    http_puts(&o, http_status_reason(resp->status));
    http_puts(&o, "\r\n");
    if (resp->date > 0) {
        http_puts(&o, "Date: ");
        http_put_date(&o, resp->date);
        http_puts(&o, "\r\n");
    }
    if (resp->content_type != NULL) {
        http_puts(&o, "Content-Type: ");
        http_puts(&o, resp->content_type);
        http_puts(&o, "\r\n");
    }
    // RFC 9110 §8.6: no Content-Length in 1xx (and 204) responses.
    if (resp->status >= 200 && resp->status != 204) {
        http_puts(&o, "Content-Length: ");
        http_put_u64(&o, resp->body_len);
        http_puts(&o, "\r\n");
    }
    if (resp->no_cache) {
        http_puts(&o, "Cache-Control: no-cache\r\n");
    }
    if (resp->allow == HTTP_METHOD_GET) {
        http_puts(&o, "Allow: GET\r\n");
    } else if (resp->allow == HTTP_METHOD_POST) {
        http_puts(&o, "Allow: POST\r\n");
    }
    if (resp->close) {
        http_puts(&o, "Connection: close\r\n");
    } else if (resp->keep_alive_10) {
        http_puts(&o, "Connection: keep-alive\r\n");
    }
    http_puts(&o, "\r\n");
    CM_ENSURE(!o.overflow, CM_E_BUFFER_TOO_SMALL);
    *out_len = o.len;
    return cm_result_make(CM_OK);
}

cm_result http_response_write(uint8_t *buf, size_t cap, size_t *out_len, const http_response *resp,
                              cm_span body)
{
    CM_ENSURE(resp != NULL, CM_E_INVALID_ARG);
    http_response r = *resp;
    r.body_len = body.len;
    size_t head = 0;
    CM_TRY(http_response_head_write(buf, cap, &head, &r));
    CM_ENSURE(cap - head >= body.len, CM_E_BUFFER_TOO_SMALL);
    if (body.len > 0) {
        memcpy(buf + head, body.p, body.len);
    }
    *out_len = head + body.len;
    return cm_result_make(CM_OK);
}

cm_result http_error_write(uint8_t *buf, size_t cap, size_t *out_len, const http_feed *feed,
                           int64_t date)
{
    CM_ENSURE(feed != NULL, CM_E_INVALID_ARG);
    uint16_t status = feed->status != 0 ? feed->status : 500;
    char text[64];
    int n = snprintf(text, sizeof(text), "%u %s\n", (unsigned)status, http_status_reason(status));
    CM_ENSURE(n > 0 && (size_t)n < sizeof(text), CM_E_INVALID_ARG);
    http_response r = {
        .status = status,
        .content_type = "text/plain; charset=utf-8",
        .close = feed->close,
        .allow = status == 405 ? feed->allow : HTTP_METHOD_OTHER,
        .date = date,
    };
    return http_response_write(buf, cap, out_len, &r, cm_span_make(text, (size_t)n));
}

cm_span http_continue_response(void)
{
    return CM_SPAN_LIT("HTTP/1.1 100 Continue\r\n\r\n");
}
