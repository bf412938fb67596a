// Suite "http": the HTTP/1.1 request parser, the router and the response writer. Every
// request is also fed split at every byte boundary and one byte at a time, and must give the
// same events as when fed whole. The requests the real `openssl cmp` client sends are captured
// at suite init by a loopback listener and parsed; OpenSSL's HTTP client reads our responses.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/cmp.h>
#include <openssl/http.h>

#include "engine/http/http.h"
#include "tests/support/test_support.h"

#define LIT(s) cm_span_make((s), sizeof(s) - 1)

static char g_dir[256];
static cm_arena g_arena;
static uint8_t *g_genm_req; // captured `openssl cmp -cmd genm` request
static size_t g_genm_len;
static uint8_t *g_ir_req; // captured `openssl cmp -cmd ir -keep_alive 2` request
static size_t g_ir_len;

// --- driving the parser ------------------------------------------------------------------

#define MAX_EVENTS 8

typedef struct event {
    http_feed_kind kind;
    uint32_t code;
    uint16_t status;
    bool close;
    http_method allow;
    size_t offset; // stream offset after the event
    http_request req;
} event;

typedef struct run {
    event ev[MAX_EVENTS];
    size_t num;
    size_t continues; // feeds that asked for 100 Continue
    http_parser_state end_state;
} run;

// run_stream feeds |in| to a fresh parser with |lim|: whole (|chunk| 0, |cut| 0), in two pieces
// split at |cut|, or in |chunk|-byte pieces. Pipelined remainders are fed again. Stops after
// an event that closes the connection.
static void run_stream(run *out, const http_limits *lim, cm_span in, size_t cut, size_t chunk)
{
    uint8_t head_buf[16384];
    http_parser p;
    memset(out, 0, sizeof(*out));
    CU_ASSERT_FATAL(lim->max_head <= sizeof(head_buf));
    TEST_ASSERT_OK(http_parser_init(&p, lim, head_buf, sizeof(head_buf)));
    size_t pos = 0;
    bool dead = false;
    while (pos < in.len && !dead && out->num < MAX_EVENTS) {
        size_t n = in.len - pos;
        if (chunk > 0) {
            n = chunk < n ? chunk : n;
        } else if (cut > pos) {
            n = cut - pos;
        }
        http_feed f;
        cm_result r = http_parser_feed(&p, &f, &g_arena, cm_span_make(in.p + pos, n));
        CU_ASSERT_FATAL(f.consumed <= n);
        CU_ASSERT_EQUAL(r.code, f.error.code);
        pos += f.consumed;
        if (f.send_continue) {
            out->continues++;
        }
        if (f.kind == HTTP_FEED_NEED_MORE) {
            CU_ASSERT_EQUAL_FATAL(f.consumed, n);
            continue;
        }
        event *e = &out->ev[out->num++];
        e->kind = f.kind;
        e->code = f.error.code;
        e->status = f.status;
        e->close = f.close;
        e->allow = f.allow;
        e->offset = pos;
        e->req = f.request;
        dead = f.kind == HTTP_FEED_ERROR && f.close;
    }
    out->end_state = p.state;
}

static bool span_same(cm_span a, cm_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool same_request(const http_request *a, const http_request *b)
{
    return a->method == b->method && a->version_minor == b->version_minor &&
           span_same(a->target, b->target) && a->route.kind == b->route.kind &&
           span_same(a->route.name, b->route.name) &&
           span_same(a->route.operation, b->route.operation) && span_same(a->host, b->host) &&
           a->content_type == b->content_type && a->keep_alive == b->keep_alive &&
           a->expect_continue == b->expect_continue && span_same(a->body, b->body);
}

static bool same_run(const run *a, const run *b)
{
    if (a->num != b->num || a->end_state != b->end_state) {
        return false;
    }
    for (size_t i = 0; i < a->num; i++) {
        const event *x = &a->ev[i], *y = &b->ev[i];
        if (x->kind != y->kind || x->code != y->code || x->status != y->status ||
            x->close != y->close || x->allow != y->allow || x->offset != y->offset) {
            return false;
        }
        if (x->kind == HTTP_FEED_REQUEST && !same_request(&x->req, &y->req)) {
            return false;
        }
    }
    return true;
}

// parse_all parses |in| whole into |out| and checks that every split point and a byte-by-byte
// feed give the same events.
static void parse_all(run *out, const http_limits *lim, cm_span in)
{
    run_stream(out, lim, in, 0, 0);
    run other;
    for (size_t cut = 1; cut < in.len; cut++) {
        run_stream(&other, lim, in, cut, 0);
        if (!same_run(out, &other)) {
            fprintf(stderr, "\n  split at %zu differs\n", cut);
            CU_FAIL("split feed differs from whole feed");
            return;
        }
    }
    run_stream(&other, lim, in, 0, 1);
    CU_ASSERT(same_run(out, &other));
    run_stream(&other, lim, in, 0, 7);
    CU_ASSERT(same_run(out, &other));
}

static http_limits lim_default(void)
{
    return http_limits_default();
}

// expect_error parses |in| and checks that the first event is the error |code| with |status|
// and |close|.
static void expect_error_lim(const http_limits *lim, cm_span in, uint32_t code, uint16_t status,
                             bool close)
{
    run r;
    parse_all(&r, lim, in);
    CU_ASSERT_FATAL(r.num >= 1);
    if (r.ev[0].code != code) {
        fprintf(stderr, "\n  got %s, expected %s\n", cm_result_name(cm_result_make(r.ev[0].code)),
                cm_result_name(cm_result_make(code)));
    }
    CU_ASSERT_EQUAL(r.ev[0].kind, HTTP_FEED_ERROR);
    CU_ASSERT_EQUAL(r.ev[0].code, code);
    CU_ASSERT_EQUAL(r.ev[0].status, status);
    CU_ASSERT_EQUAL(r.ev[0].close, close);
    CU_ASSERT_EQUAL(http_status_of(code), status);
}

static void expect_error(cm_span in, uint32_t code, uint16_t status, bool close)
{
    http_limits lim = lim_default();
    expect_error_lim(&lim, in, code, status, close);
}

// expect_request parses |in| and returns its only event, a complete request.
static http_request expect_request_lim(const http_limits *lim, cm_span in)
{
    run r;
    parse_all(&r, lim, in);
    CU_ASSERT_EQUAL_FATAL(r.num, 1);
    if (r.ev[0].kind != HTTP_FEED_REQUEST) {
        fprintf(stderr, "\n  got %s\n", cm_result_name(cm_result_make(r.ev[0].code)));
    }
    CU_ASSERT_EQUAL_FATAL(r.ev[0].kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(r.ev[0].offset, in.len);
    CU_ASSERT_EQUAL(r.end_state, HTTP_PARSER_HEAD);
    return r.ev[0].req;
}

static http_request expect_request(cm_span in)
{
    http_limits lim = lim_default();
    return expect_request_lim(&lim, in);
}

static bool span_is(cm_span s, const char *lit)
{
    return s.len == strlen(lit) && (s.len == 0 || memcmp(s.p, lit, s.len) == 0);
}

// --- good requests -------------------------------------------------------------------------

static void test_http_parses_cmp_post(void)
{
    http_request q = expect_request(
        LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: ca.example\r\n"
            "Content-Type: application/pkixcmp\r\nContent-Length: 5\r\n\r\n0\x03\x02\x01\x00"));
    CU_ASSERT_EQUAL(q.method, HTTP_METHOD_POST);
    CU_ASSERT_EQUAL(q.version_minor, 1);
    CU_ASSERT(span_is(q.target, "/.well-known/cmp"));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_CMP);
    CU_ASSERT_EQUAL(q.route.name.len, 0);
    CU_ASSERT_EQUAL(q.route.operation.len, 0);
    CU_ASSERT(span_is(q.host, "ca.example"));
    CU_ASSERT_EQUAL(q.content_type, HTTP_CONTENT_PKIXCMP);
    CU_ASSERT(q.keep_alive);
    CU_ASSERT(!q.expect_continue);
    CU_ASSERT_EQUAL(q.body.len, 5);
    CU_ASSERT(memcmp(q.body.p, "0\x03\x02\x01\x00", 5) == 0);
}

static void test_http_field_names_are_case_insensitive(void)
{
    http_request q = expect_request(LIT("POST /.well-known/cmp/p/devices HTTP/1.1\r\n"
                                        "hOsT:ca\r\nCONTENT-TYPE:   Application/PKIXCMP-Poll ; "
                                        "x=y \t\r\ncontent-length:\t2\r\nX-Other: \x80\xff\r\n"
                                        "\r\nab"));
    CU_ASSERT(span_is(q.host, "ca"));
    CU_ASSERT_EQUAL(q.content_type, HTTP_CONTENT_PKIXCMP);
    CU_ASSERT(span_is(q.route.name, "devices"));
    CU_ASSERT(span_is(q.body, "ab"));
}

static void test_http_get_routes(void)
{
    http_request q = expect_request(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"));
    CU_ASSERT_EQUAL(q.method, HTTP_METHOD_GET);
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_HEALTHZ);
    CU_ASSERT_EQUAL(q.body.len, 0);
    q = expect_request(LIT("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_METRICS);
    CU_ASSERT(span_is(q.target, "/metrics?x=1"));
    q = expect_request(LIT("GET /crl/devices-ca.crl HTTP/1.0\r\n\r\n"));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_CRL);
    CU_ASSERT(span_is(q.route.name, "devices-ca"));
    CU_ASSERT_EQUAL(q.version_minor, 0);
    CU_ASSERT_EQUAL(q.host.len, 0);
    CU_ASSERT(!q.keep_alive);
}

static void test_http_accepts_absolute_form(void)
{
    http_request q =
        expect_request(LIT("GET http://ca.example:8080/healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    CU_ASSERT(span_is(q.target, "/healthz"));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_HEALTHZ);
    q = expect_request(LIT("GET HTTPS://ca/metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_METRICS);
    expect_error(LIT("GET http://ca HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("GET ftp://ca/x HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
}

// --- connection semantics ------------------------------------------------------------------

static void test_http_keep_alive_and_close(void)
{
    static const struct {
        const char *req;
        bool keep;
    } k_cases[] = {
        {"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", true},
        {"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
        {"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", false},
        {"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET /healthz HTTP/1.0\r\n\r\n", false},
        {"GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false},
        {"GET /healthz HTTP/1.0\r\nConnection: te,keep-alive , x\r\n\r\n", true},
    };
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        http_request q = expect_request(cm_span_make(k_cases[i].req, strlen(k_cases[i].req)));
        CU_ASSERT_EQUAL(q.keep_alive, k_cases[i].keep);
    }
}

static void test_http_pipelined_requests(void)
{
    static const char k_in[] = "POST /.well-known/cmp/p/a/initialization HTTP/1.1\r\nHost: h\r\n"
                               "Content-Type: application/pkixcmp\r\nContent-Length: 3\r\n\r\nxyz"
                               "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
                               "POST /.well-known/cmp HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                               "Content-Type: application/pkixcmp\r\nContent-Length: 2\r\n\r\nuv";
    run r;
    http_limits lim = lim_default();
    parse_all(&r, &lim, LIT(k_in));
    CU_ASSERT_EQUAL_FATAL(r.num, 3);
    const char *first_end = strstr(k_in, "xyz") + 3;
    const char *second_end = strstr(k_in, "h\r\n\r\nPOST") + 5;
    CU_ASSERT_EQUAL(r.ev[0].kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(r.ev[0].offset, (size_t)(first_end - k_in));
    CU_ASSERT(span_is(r.ev[0].req.body, "xyz"));
    CU_ASSERT(span_is(r.ev[0].req.route.name, "a"));
    CU_ASSERT(span_is(r.ev[0].req.route.operation, "initialization"));
    CU_ASSERT_EQUAL(r.ev[1].kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(r.ev[1].offset, (size_t)(second_end - k_in));
    CU_ASSERT_EQUAL(r.ev[1].req.route.kind, HTTP_ROUTE_HEALTHZ);
    CU_ASSERT_EQUAL(r.ev[2].kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(r.ev[2].offset, sizeof(k_in) - 1);
    CU_ASSERT(span_is(r.ev[2].req.body, "uv"));
    CU_ASSERT(!r.ev[2].req.keep_alive);
}

static void test_http_request_outlives_input_and_parser_buffers(void)
{
    // Feed from a buffer that is then overwritten, as engine/net recycles receive buffers.
    char buf[128];
    static const char k_a[] = "POST /.well-known/cmp/p/ca1 HTTP/1.1\r\nHost: one\r\nContent-";
    static const char k_b[] = "Type: application/pkixcmp\r\nContent-Length: 4\r\n\r\nbo";
    uint8_t head_buf[HTTP_DEFAULT_MAX_HEAD];
    http_limits lim = lim_default();
    http_parser p;
    TEST_ASSERT_OK(http_parser_init(&p, &lim, head_buf, sizeof(head_buf)));
    http_feed f;
    memcpy(buf, k_a, sizeof(k_a) - 1);
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &g_arena, cm_span_make(buf, sizeof(k_a) - 1)));
    CU_ASSERT_EQUAL(f.kind, HTTP_FEED_NEED_MORE);
    CU_ASSERT(!http_parser_idle(&p));
    memset(buf, 'X', sizeof(buf));
    memcpy(buf, k_b, sizeof(k_b) - 1);
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &g_arena, cm_span_make(buf, sizeof(k_b) - 1)));
    CU_ASSERT_EQUAL(f.kind, HTTP_FEED_NEED_MORE);
    memset(buf, 'Y', sizeof(buf));
    memcpy(buf, "dyGET", 5);
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &g_arena, cm_span_make(buf, 5)));
    CU_ASSERT_EQUAL_FATAL(f.kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(f.consumed, 2);
    CU_ASSERT(http_parser_idle(&p));
    memset(buf, 'Z', sizeof(buf));
    memset(head_buf, 'W', sizeof(head_buf));
    CU_ASSERT(span_is(f.request.body, "body"));
    CU_ASSERT(span_is(f.request.host, "one"));
    CU_ASSERT(span_is(f.request.target, "/.well-known/cmp/p/ca1"));
    CU_ASSERT(span_is(f.request.route.name, "ca1"));
}

static void test_http_expect_100_continue(void)
{
#define K_HEAD                                                              \
    "POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n" \
    "Content-Type: application/pkixcmp\r\nContent-Length: 3\r\n\r\n"
    static const char k_head[] = K_HEAD;
    uint8_t head_buf[HTTP_DEFAULT_MAX_HEAD];
    http_limits lim = lim_default();
    http_parser p;
    TEST_ASSERT_OK(http_parser_init(&p, &lim, head_buf, sizeof(head_buf)));
    http_feed f;
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &g_arena, LIT(k_head)));
    CU_ASSERT_EQUAL(f.kind, HTTP_FEED_NEED_MORE);
    CU_ASSERT(f.send_continue);
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &g_arena, LIT("ab")));
    CU_ASSERT(!f.send_continue);
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &g_arena, LIT("c")));
    CU_ASSERT_EQUAL_FATAL(f.kind, HTTP_FEED_REQUEST);
    CU_ASSERT(f.request.expect_continue);
    CU_ASSERT(span_is(f.request.body, "abc"));

    // Body in the same feed as the head: the client did not wait, no 100 needed.
    run r;
    run_stream(&r, &lim, LIT(K_HEAD "abc"), 0, 0);
    CU_ASSERT_EQUAL(r.num, 1);
    CU_ASSERT_EQUAL(r.continues, 0);
    // Part of the body came with the head: the client is already sending, no 100 either.
    run_stream(&r, &lim, LIT(K_HEAD "abc"), sizeof(K_HEAD), 0);
    CU_ASSERT_EQUAL(r.num, 1);
    CU_ASSERT_EQUAL(r.continues, 0);
    run_stream(&r, &lim, LIT(K_HEAD "abc"), sizeof(K_HEAD) - 1, 0);
    CU_ASSERT_EQUAL(r.num, 1);
    CU_ASSERT_EQUAL(r.continues, 1);
    // Never to an HTTP/1.0 client (RFC 9110 §10.1.1).
    run_stream(&r, &lim,
               LIT("POST /.well-known/cmp HTTP/1.0\r\nExpect: 100-continue\r\n"
                   "Content-Type: application/pkixcmp\r\nContent-Length: 3\r\n\r\nabc"),
               0, 1);
    CU_ASSERT_EQUAL(r.num, 1);
    CU_ASSERT_EQUAL(r.continues, 0);
#undef K_HEAD
    cm_span c = http_continue_response();
    CU_ASSERT(span_is(c, "HTTP/1.1 100 Continue\r\n\r\n"));
}

// --- status paths --------------------------------------------------------------------------

static void test_http_not_found_and_method(void)
{
    expect_error(LIT("GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_NOT_FOUND, 404, false);
    expect_error(LIT("POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
                 HTTP_E_METHOD, 405, false);
    expect_error(LIT("GET /.well-known/cmp HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_METHOD, 405,
                 false);
    expect_error(LIT("DELETE /crl/a.crl HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_METHOD, 405, false);
    // Methods are case-sensitive: "post" is not POST.
    expect_error(LIT("post /.well-known/cmp HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_METHOD, 405,
                 false);
    run r;
    http_limits lim = lim_default();
    parse_all(&r, &lim, LIT("PUT /.well-known/cmp HTTP/1.1\r\nHost: a\r\n\r\n"));
    CU_ASSERT_EQUAL(r.ev[0].allow, HTTP_METHOD_POST);
    parse_all(&r, &lim, LIT("POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n"));
    CU_ASSERT_EQUAL(r.ev[0].allow, HTTP_METHOD_GET);
    // 404 with a 1.0 client: closes (no keep-alive asked for).
    expect_error(LIT("GET /x HTTP/1.0\r\n\r\n"), HTTP_E_NOT_FOUND, 404, true);
}

static void test_http_error_keeps_connection_and_skips_body(void)
{
    http_limits lim = lim_default();
    run r;
    parse_all(&r, &lim,
              LIT("POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde"
                  "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"));
    CU_ASSERT_EQUAL_FATAL(r.num, 2);
    CU_ASSERT_EQUAL(r.ev[0].code, HTTP_E_NOT_FOUND);
    CU_ASSERT(!r.ev[0].close);
    CU_ASSERT_EQUAL(r.ev[1].kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(r.ev[1].req.route.kind, HTTP_ROUTE_HEALTHZ);
    // 415 skips its body too.
    parse_all(&r, &lim,
              LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                  "Content-Length: 3\r\n\r\nGETGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"));
    CU_ASSERT_EQUAL_FATAL(r.num, 2);
    CU_ASSERT_EQUAL(r.ev[0].code, HTTP_E_MEDIA_TYPE);
    CU_ASSERT_EQUAL(r.ev[1].req.route.kind, HTTP_ROUTE_METRICS);
    // But closes with Connection: close, with Expect: 100-continue, or a body over the limit.
    expect_error(LIT("POST /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                     "Content-Length: 5\r\n\r\nabcde"),
                 HTTP_E_NOT_FOUND, 404, true);
    expect_error(LIT("POST /nope HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                     "Content-Length: 5\r\n\r\n"),
                 HTTP_E_NOT_FOUND, 404, true);
    expect_error(LIT("POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 262145\r\n\r\n"),
                 HTTP_E_NOT_FOUND, 404, true);
    // After a closing error the parser refuses more input.
    uint8_t head_buf[HTTP_DEFAULT_MAX_HEAD];
    http_parser p;
    TEST_ASSERT_OK(http_parser_init(&p, &lim, head_buf, sizeof(head_buf)));
    http_feed f;
    TEST_ASSERT_CODE(http_parser_feed(&p, &f, &g_arena, LIT("GET / HTTP/1.1\n")), HTTP_E_BARE_LF);
    TEST_ASSERT_CODE(http_parser_feed(&p, &f, &g_arena, LIT("GET")), CM_E_STATE);
    CU_ASSERT_EQUAL(f.consumed, 0);
    CU_ASSERT(f.close);
}

static void test_http_length_required_and_transfer_codings(void)
{
    // A CMP POST with neither Content-Length nor chunked → 411.
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\n"
                     "Content-Type: application/pkixcmp\r\n\r\n"),
                 HTTP_E_LENGTH_REQUIRED, 411, true);
    // Codings other than chunked alone → 501.
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, "
                     "chunked\r\n\r\n"),
                 HTTP_E_ENCODING, 501, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, "
                     "gzip\r\n\r\n"),
                 HTTP_E_ENCODING, 501, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"),
                 HTTP_E_ENCODING, 501, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"),
                 HTTP_E_ENCODING, 501, true);
    // A chunked body cannot be skipped: an error on a chunked request always closes.
    expect_error(LIT("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\n\r\n"),
                 HTTP_E_NOT_FOUND, 404, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Type: text/plain\r\n\r\n0\r\n\r\n"),
                 HTTP_E_MEDIA_TYPE, 415, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\n\r\n"),
                 HTTP_E_BODY_NOT_ALLOWED, 400, true);
}

#define CHUNKED_HEAD                                                                     \
    "POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/pkixcmp\r\n" \
    "Transfer-Encoding: chunked\r\n\r\n"

static void test_http_chunked_bodies(void)
{
    http_request q = expect_request(LIT(CHUNKED_HEAD "5\r\nabcde\r\n0\r\n\r\n"));
    CU_ASSERT(span_is(q.body, "abcde"));
    CU_ASSERT(q.keep_alive);
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_CMP);
    // Hex in either case, leading zeros, extensions (ignored), a last chunk of several zeros,
    // and a trailer section (ignored).
    q = expect_request(LIT(CHUNKED_HEAD "3;name=val\r\nabc\r\n00A ; x=\"q;\" ;y\r\n0123456789\r\n"
                                        "b\r\nxxxxxxxxxxx\r\n000;last\r\nX-Trailer: 1\r\n"
                                        "Other:\ttwo words \r\n\r\n"));
    CU_ASSERT(span_is(q.body, "abc0123456789xxxxxxxxxxx"));
    // An empty chunked body.
    q = expect_request(LIT(CHUNKED_HEAD "0\r\n\r\n"));
    CU_ASSERT_EQUAL(q.body.len, 0);
    CU_ASSERT_PTR_NOT_NULL(q.body.p);
    // A chunked request followed by a pipelined one.
    http_limits lim = lim_default();
    run r;
    parse_all(&r, &lim,
              LIT(CHUNKED_HEAD "2\r\nhi\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"));
    CU_ASSERT_EQUAL_FATAL(r.num, 2);
    CU_ASSERT_EQUAL(r.ev[0].kind, HTTP_FEED_REQUEST);
    CU_ASSERT(span_is(r.ev[0].req.body, "hi"));
    CU_ASSERT_EQUAL(r.ev[0].offset, strlen(CHUNKED_HEAD "2\r\nhi\r\n0\r\n\r\n"));
    CU_ASSERT_EQUAL(r.ev[1].req.route.kind, HTTP_ROUTE_HEALTHZ);
    CU_ASSERT_EQUAL(r.end_state, HTTP_PARSER_HEAD);
    // Expect: 100-continue: asked for once, when the head arrives before the body.
    run_stream(&r, &lim,
               LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                   "pkixcmp\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "1\r\nx\r\n0\r\n\r\n"),
               strlen("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                      "pkixcmp\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"),
               0);
    CU_ASSERT_EQUAL(r.num, 1);
    CU_ASSERT_EQUAL(r.continues, 1);
    // Chunked is accepted in any case, and the body limit holds exactly.
    lim.max_body = 10;
    q = expect_request_lim(&lim, LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: "
                                     "application/pkixcmp\r\nTransfer-Encoding: Chunked\r\n\r\n"
                                     "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n"));
    CU_ASSERT(span_is(q.body, "abcdefghij"));
}

// A body of many chunks, larger than the first buffer, so it is moved while it grows: the
// result is the same whole, byte by byte, and in pieces of 7 and 4096 bytes.
static void test_http_chunked_body_grows(void)
{
    static char in[64 * 1024];
    static uint8_t want[40000];
    size_t n = (size_t)snprintf(in, sizeof(in), "%s", CHUNKED_HEAD);
    size_t body = 0;
    for (int i = 0; body + 3001 + i < sizeof(want); i++) {
        const size_t len = 1000u + (size_t)i * 997u % 3000u;
        n += (size_t)snprintf(in + n, sizeof(in) - n, "%zx\r\n", len);
        for (size_t k = 0; k < len; k++) {
            want[body + k] = (uint8_t)('a' + (body + k) % 23);
            in[n + k] = (char)want[body + k];
        }
        n += len;
        body += len;
        memcpy(in + n, "\r\n", 2);
        n += 2;
    }
    n += (size_t)snprintf(in + n, sizeof(in) - n, "0\r\n\r\n");
    http_limits lim = lim_default();
    const size_t pieces[] = {0, 1, 7, 4096};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        run r;
        run_stream(&r, &lim, cm_span_make(in, n), 0, pieces[i]);
        CU_ASSERT_EQUAL_FATAL(r.num, 1);
        CU_ASSERT_EQUAL_FATAL(r.ev[0].kind, HTTP_FEED_REQUEST);
        CU_ASSERT_EQUAL(r.ev[0].offset, n);
        CU_ASSERT_EQUAL_FATAL(r.ev[0].req.body.len, body);
        CU_ASSERT_EQUAL(memcmp(r.ev[0].req.body.p, want, body), 0);
    }
    CU_ASSERT(body > 3 * 4096);
    // Doubling keeps the moved copies to a geometric series: the buffers together are at most
    // twice the last one, which is at most twice the body (and never more than max_body).
    cm_arena a;
    cm_arena_init(&a, 4096, 0);
    uint8_t head_buf[HTTP_DEFAULT_MAX_HEAD];
    http_parser p;
    TEST_ASSERT_OK(http_parser_init(&p, &lim, head_buf, sizeof(head_buf)));
    http_feed f;
    TEST_ASSERT_OK(http_parser_feed(&p, &f, &a, cm_span_make(in, n)));
    CU_ASSERT_EQUAL(f.kind, HTTP_FEED_REQUEST);
    CU_ASSERT(a.total <= 4 * body + 2 * 4096);
    cm_arena_cleanup(&a);
}

static void test_http_chunked_rejects_bad_framing(void)
{
    // chunk-size: 1*HEXDIG, then ';' (after optional whitespace) or CR LF.
    static const char *const k_bad[] = {
        "\r\n",                  // no digits
        ";x\r\n",                // no digits before the extension
        "5x\r\nabcde\r\n",       // not hex
        "0x5\r\nabcde\r\n",      // no 0x prefix
        "-1\r\n",                // no sign
        "+5\r\n",                // no sign
        "5 \r\nabcde\r\n",       // whitespace that leads to no extension
        "5\nabcde\r\n",          // bare LF ending the size line
        "5\rabcde\r\n",          // bare CR
        "5;a\x01z\r\nabcde\r\n", // a control character in an extension
        "5;a\nabcde\r\n",        // bare LF in an extension
        "5\r\nabcdeX\r\n",       // data not followed by CR LF
        "5\r\nabcde\n0\r\n\r\n", // LF without CR after data
        "5\r\nabcde\rX",         // CR without LF after data
        "5\r\nabcde\r\n0\r\r\n", // bare CR ending the last chunk
        "10000000000000000\r\n", // 17 significant digits: overflows 64 bits
    };
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        char req[512];
        const int n = snprintf(req, sizeof(req), "%s%s", CHUNKED_HEAD, k_bad[i]);
        expect_error(cm_span_make(req, (size_t)n), HTTP_E_BAD_CHUNK, 400, true);
    }
    // Leading zeros do not count towards the 16 digits.
    (void)expect_request(LIT(CHUNKED_HEAD "00000000000000000000005\r\nabcde\r\n0\r\n\r\n"));
    // 16 significant digits parse, and are far over the body limit: 413 before any data.
    expect_error(LIT(CHUNKED_HEAD "FFFFFFFFFFFFFFFF\r\n"), HTTP_E_BODY_TOO_LARGE, 413, true);
    // The decoded body is bounded by max_body, checked when each size is known.
    http_limits lim = lim_default();
    lim.max_body = 10;
    expect_error_lim(&lim, LIT(CHUNKED_HEAD "6\r\nabcdef\r\n5\r\n"), HTTP_E_BODY_TOO_LARGE, 413,
                     true);
    expect_error_lim(&lim, LIT(CHUNKED_HEAD "b;ext\r\n"), HTTP_E_BODY_TOO_LARGE, 413, true);
    // Trailer fields follow the head's field-line rules.
    static const struct {
        const char *trailers;
        uint32_t code;
    } k_trailers[] = {
        {" folded: 1\r\n\r\n", HTTP_E_OBS_FOLD},
        {"X : 1\r\n\r\n", HTTP_E_SPACE_BEFORE_COLON},
        {"NoColon\r\n\r\n", HTTP_E_BAD_FIELD_NAME},
        {": 1\r\n\r\n", HTTP_E_BAD_FIELD_NAME},
        {"X@y: 1\r\n\r\n", HTTP_E_BAD_FIELD_NAME},
        {"X: a\x01\r\n\r\n", HTTP_E_BAD_FIELD_VALUE},
        {"X: 1\n\r\n", HTTP_E_BARE_LF},
        {"\n", HTTP_E_BARE_LF},
        {"X: 1\rY\r\n\r\n", HTTP_E_BARE_CR},
        {"\rX", HTTP_E_BARE_CR},
    };
    for (size_t i = 0; i < sizeof(k_trailers) / sizeof(k_trailers[0]); i++) {
        char req[512];
        const int n = snprintf(req, sizeof(req), "%s0\r\n%s", CHUNKED_HEAD, k_trailers[i].trailers);
        expect_error(cm_span_make(req, (size_t)n), k_trailers[i].code, 400, true);
    }
}

static void test_http_chunked_framing_limits(void)
{
    // The head has 3 fields.
    http_limits lim = {.max_request_line = 100, .max_head = 200, .max_fields = 3, .max_body = 64};
    // Trailer lines count against max_fields on their own: three pass, four are 431.
    (void)expect_request_lim(&lim, LIT(CHUNKED_HEAD "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"));
    expect_error_lim(&lim, LIT(CHUNKED_HEAD "0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"),
                     HTTP_E_TOO_MANY_FIELDS, 431, true);
    // The framing (chunk lines, CR LFs after data, trailers) is bounded by max_head: exactly
    // 200 bytes pass, 201 are 431, however they are split between extensions and trailers.
    char ext[256], req[1024];
    // "1;" + ext + "\r\n" (4 + e) + "\r\n" after the data (2) + "0\r\n\r\n" (5) = 200.
    const size_t e = 200 - 4 - 2 - 5;
    memset(ext, 'e', sizeof(ext));
    int n = snprintf(req, sizeof(req), "%s1;%.*s\r\nx\r\n0\r\n\r\n", CHUNKED_HEAD, (int)e, ext);
    http_request q = expect_request_lim(&lim, cm_span_make(req, (size_t)n));
    CU_ASSERT(span_is(q.body, "x"));
    n = snprintf(req, sizeof(req), "%s1;%.*s\r\nx\r\n0\r\n\r\n", CHUNKED_HEAD, (int)e + 1, ext);
    expect_error_lim(&lim, cm_span_make(req, (size_t)n), HTTP_E_HEAD_TOO_LARGE, 431, true);
    // Endless extensions or trailers are cut at the limit, not read forever.
    n = snprintf(req, sizeof(req), "%s1;%.*s", CHUNKED_HEAD, (int)sizeof(ext), ext);
    expect_error_lim(&lim, cm_span_make(req, (size_t)n), HTTP_E_HEAD_TOO_LARGE, 431, true);
    n = snprintf(req, sizeof(req), "%s0\r\nX: %.*s", CHUNKED_HEAD, (int)sizeof(ext), ext);
    expect_error_lim(&lim, cm_span_make(req, (size_t)n), HTTP_E_HEAD_TOO_LARGE, 431, true);
    // A chunked body the arena cannot hold is 503, as with Content-Length.
    cm_arena small;
    cm_arena_init(&small, 256, 2048);
    uint8_t head_buf[HTTP_DEFAULT_MAX_HEAD];
    http_limits d = lim_default();
    http_parser p;
    TEST_ASSERT_OK(http_parser_init(&p, &d, head_buf, sizeof(head_buf)));
    http_feed f;
    TEST_ASSERT_CODE(http_parser_feed(&p, &f, &small, LIT(CHUNKED_HEAD "1000\r\n")), CM_E_NOMEM);
    CU_ASSERT_EQUAL(f.status, 503);
    CU_ASSERT(f.close);
    CU_ASSERT_EQUAL(p.state, HTTP_PARSER_DEAD);
    cm_arena_cleanup(&small);
}

static void test_http_body_limit(void)
{
    http_limits lim = lim_default();
    lim.max_body = 10;
    http_request q = expect_request_lim(&lim, LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\n"
                                                  "Content-Type: application/pkixcmp\r\n"
                                                  "Content-Length: 10\r\n\r\n0123456789"));
    CU_ASSERT_EQUAL(q.body.len, 10);
    expect_error_lim(&lim,
                     LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\n"
                         "Content-Type: application/pkixcmp\r\nContent-Length: 11\r\n\r\n"),
                     HTTP_E_BODY_TOO_LARGE, 413, true);
    // The largest Content-Length we parse (2^63-1) is 413, one more is 400.
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: "
                     "application/pkixcmp\r\nContent-Length: 9223372036854775807\r\n\r\n"),
                 HTTP_E_BODY_TOO_LARGE, 413, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: "
                     "application/pkixcmp\r\nContent-Length: 9223372036854775808\r\n\r\n"),
                 HTTP_E_BAD_CONTENT_LENGTH, 400, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: "
                     "application/pkixcmp\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
                 HTTP_E_BAD_CONTENT_LENGTH, 400, true);
}

static void test_http_media_type(void)
{
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
                 HTTP_E_MEDIA_TYPE, 415, false);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                     "pkixcmpx\r\nContent-Length: 0\r\n\r\n"),
                 HTTP_E_MEDIA_TYPE, 415, false);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                     "octet-stream\r\nContent-Length: 0\r\n\r\n"),
                 HTTP_E_MEDIA_TYPE, 415, false);
    // A 415 closes when the client asked for it, or is HTTP/1.0 without keep-alive.
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                     "Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n"),
                 HTTP_E_MEDIA_TYPE, 415, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.0\r\nContent-Type: text/plain\r\n"
                     "Content-Length: 1\r\n\r\nx"),
                 HTTP_E_MEDIA_TYPE, 415, true);
    http_request q = expect_request(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-"
                                        "Type: application/pkixcmp-poll\r\nContent-Length: 0\r\n"
                                        "\r\n"));
    CU_ASSERT_EQUAL(q.content_type, HTTP_CONTENT_PKIXCMP);
    CU_ASSERT_EQUAL(q.body.len, 0);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                     "pkixcmp\r\nContent-type: application/pkixcmp\r\nContent-Length: 0\r\n\r\n"),
                 HTTP_E_DUPLICATE_FIELD, 400, true);
}

static void test_http_versions(void)
{
    expect_error(LIT("GET /healthz HTTP/2.0\r\nHost: a\r\n\r\n"), HTTP_E_VERSION, 505, true);
    expect_error(LIT("GET /healthz HTTP/1.2\r\nHost: a\r\n\r\n"), HTTP_E_VERSION, 505, true);
    expect_error(LIT("GET /healthz HTTP/0.9\r\n\r\n"), HTTP_E_VERSION, 505, true);
    expect_error(LIT("GET /healthz HTTP/1.10\r\nHost: a\r\n\r\n"), HTTP_E_BAD_VERSION, 400, true);
    expect_error(LIT("GET /healthz http/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_VERSION, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1 \r\nHost: a\r\n\r\n"), HTTP_E_BAD_VERSION, 400, true);
    expect_error(LIT("GET /healthz\r\nHost: a\r\n\r\n"), HTTP_E_BAD_REQUEST_LINE, 400, true);
    expect_error(LIT("GET  /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT(" GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_METHOD, 400, true);
    expect_error(LIT("G(T /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_METHOD, 400, true);
    expect_error(LIT("\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_REQUEST_LINE, 400,
                 true);
}

static void test_http_host_rules(void)
{
    expect_error(LIT("GET /healthz HTTP/1.1\r\n\r\n"), HTTP_E_BAD_HOST, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), HTTP_E_BAD_HOST, 400,
                 true);
    expect_error(LIT("GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), HTTP_E_BAD_HOST, 400,
                 true);
    http_request q = expect_request(LIT("GET /healthz HTTP/1.1\r\nHost:\r\n\r\n"));
    CU_ASSERT_EQUAL(q.host.len, 0); // RFC 9112 §3.2: an empty Host is allowed
}

// --- smuggling rules -----------------------------------------------------------------------

static void test_http_smuggling_rules(void)
{
    // obs-fold
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), HTTP_E_OBS_FOLD,
                 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"), HTTP_E_OBS_FOLD,
                 400, true);
    // whitespace before the colon
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost : a\r\n\r\n"), HTTP_E_SPACE_BEFORE_COLON, 400,
                 true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Length\t: 1\r\n\r\nx"),
                 HTTP_E_SPACE_BEFORE_COLON, 400, true);
    // Content-Length conflicts and forms
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                     "Content-Length: 2\r\n\r\nxy"),
                 HTTP_E_CONTENT_LENGTH_CONFLICT, 400, true);
    http_request q = expect_request(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\n"
                                        "Content-Length: 2\r\ncontent-length: 02\r\n"
                                        "Content-Type: application/pkixcmp\r\n\r\nxy"));
    CU_ASSERT(span_is(q.body, "xy"));
    static const char *const k_bad_lengths[] = {"+1", "-1", "1a", "0x1", "1,1", "1 1", "", "1.0"};
    for (size_t i = 0; i < sizeof(k_bad_lengths) / sizeof(k_bad_lengths[0]); i++) {
        char req[256];
        int n = snprintf(req, sizeof(req),
                         "POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                         k_bad_lengths[i]);
        expect_error(cm_span_make(req, (size_t)n), HTTP_E_BAD_CONTENT_LENGTH, 400, true);
    }
    // Content-Length with Transfer-Encoding, in either order
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                     "Transfer-Encoding: chunked\r\n\r\nabc"),
                 HTTP_E_LENGTH_AND_ENCODING, 400, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Length: 3\r\n\r\nabc"),
                 HTTP_E_LENGTH_AND_ENCODING, 400, true);
    expect_error(LIT("POST /.well-known/cmp HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
                 HTTP_E_ENCODING_HTTP10, 400, true);
    // bare CR and bare LF, in the request line and in fields
    expect_error(LIT("GET /healthz HTTP/1.1\rHost: a\r\n\r\n"), HTTP_E_BARE_CR, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\rb\r\n\r\n"), HTTP_E_BARE_CR, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\r\n"), HTTP_E_BARE_CR, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\nHost: a\r\n\r\n"), HTTP_E_BARE_LF, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\n\r\n"), HTTP_E_BARE_LF, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\n\n"), HTTP_E_BARE_LF, 400, true);
    // control characters and non-ASCII in the target
    expect_error(LIT("GET /heal\x01thz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("GET /heal\x7fthz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("GET /heal\xc3\xa4thz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400,
                 true);
    expect_error(LIT("GET /heal\tthz HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("GET /healthz#x HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    expect_error(LIT("GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_E_BAD_TARGET, 400, true);
    // field names must be tokens; values must not carry controls
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX\"y: 1\r\n\r\n"), HTTP_E_BAD_FIELD_NAME,
                 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX@y: 1\r\n\r\n"), HTTP_E_BAD_FIELD_NAME,
                 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n"), HTTP_E_BAD_FIELD_NAME, 400,
                 true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), HTTP_E_BAD_FIELD_NAME,
                 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX\xc3\xa4: 1\r\n\r\n"),
                 HTTP_E_BAD_FIELD_NAME, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\x01\r\n\r\n"), HTTP_E_BAD_FIELD_VALUE, 400,
                 true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\x00z\r\n\r\n"),
                 HTTP_E_BAD_FIELD_VALUE, 400, true);
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n"), HTTP_E_BAD_FIELD_VALUE,
                 400, true);
    // GET with a body
    expect_error(LIT("GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"),
                 HTTP_E_BODY_NOT_ALLOWED, 400, true);
}

// --- limits --------------------------------------------------------------------------------

// make_get builds "GET /healthz?qqq HTTP/1.1\r\nHost: a\r\n" + |extra| + "\r\n" with a request
// line of exactly |line_len| bytes.
static size_t make_get(char *out, size_t cap, size_t line_len, const char *extra)
{
    const size_t fixed = strlen("GET /healthz? HTTP/1.1");
    CU_ASSERT_FATAL(line_len >= fixed);
    size_t n = 0;
    n += (size_t)snprintf(out + n, cap - n, "GET /healthz?");
    memset(out + n, 'q', line_len - fixed);
    n += line_len - fixed;
    n += (size_t)snprintf(out + n, cap - n, " HTTP/1.1\r\nHost: a\r\n%s\r\n", extra);
    CU_ASSERT_FATAL(n < cap);
    return n;
}

static void test_http_limits_at_and_past(void)
{
    static char buf[20000];
    http_limits lim = {.max_request_line = 100, .max_head = 300, .max_fields = 4, .max_body = 64};
    // Request line: exactly at the limit, then one past it.
    size_t n = make_get(buf, sizeof(buf), 100, "");
    http_request q = expect_request_lim(&lim, cm_span_make(buf, n));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_HEALTHZ);
    n = make_get(buf, sizeof(buf), 101, "");
    expect_error_lim(&lim, cm_span_make(buf, n), HTTP_E_REQUEST_LINE_TOO_LONG, 414, true);
    // Head size: pad one field so the whole head is exactly max_head bytes.
    char pad[400];
    size_t base = make_get(buf, sizeof(buf), 30, "");
    size_t want = 300 - base - strlen("X: \r\n");
    memset(pad, 0, sizeof(pad));
    memcpy(pad, "X: ", 3);
    memset(pad + 3, 'p', want);
    memcpy(pad + 3 + want, "\r\n", 2);
    n = make_get(buf, sizeof(buf), 30, pad);
    CU_ASSERT_EQUAL_FATAL(n, 300);
    (void)expect_request_lim(&lim, cm_span_make(buf, n));
    pad[3 + want] = 'p';
    memcpy(pad + 4 + want, "\r\n", 2);
    n = make_get(buf, sizeof(buf), 30, pad);
    CU_ASSERT_EQUAL_FATAL(n, 301);
    expect_error_lim(&lim, cm_span_make(buf, n), HTTP_E_HEAD_TOO_LARGE, 431, true);
    // A head that never ends is cut at the limit.
    memset(buf, 'a', 400);
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    expect_error_lim(&lim, cm_span_make(buf, 400), HTTP_E_HEAD_TOO_LARGE, 431, true);
    // Field count: Host plus three is four (the limit), plus four is five.
    n = make_get(buf, sizeof(buf), 30, "A: 1\r\nB: 2\r\nC: 3\r\n");
    (void)expect_request_lim(&lim, cm_span_make(buf, n));
    n = make_get(buf, sizeof(buf), 30, "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n");
    expect_error_lim(&lim, cm_span_make(buf, n), HTTP_E_TOO_MANY_FIELDS, 431, true);
    // Body: at the limit and one past it.
    char body[100];
    memset(body, 'b', sizeof(body));
    n = (size_t)snprintf(buf, sizeof(buf),
                         "POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                         "pkixcmp\r\nContent-Length: 64\r\n\r\n%.64s",
                         body);
    q = expect_request_lim(&lim, cm_span_make(buf, n));
    CU_ASSERT_EQUAL(q.body.len, 64);
    n = (size_t)snprintf(buf, sizeof(buf),
                         "POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\nContent-Type: application/"
                         "pkixcmp\r\nContent-Length: 65\r\n\r\n%.65s",
                         body);
    expect_error_lim(&lim, cm_span_make(buf, n), HTTP_E_BODY_TOO_LARGE, 413, true);
    // The defaults accept the default-sized body.
    http_limits d = http_limits_default();
    CU_ASSERT_EQUAL(d.max_body, 256u * 1024u);
    CU_ASSERT_EQUAL(d.max_head, HTTP_DEFAULT_MAX_HEAD);
}

static void test_http_parser_init_rejects_bad_args(void)
{
    uint8_t buf[64];
    http_parser p;
    http_limits lim = {.max_request_line = 10, .max_head = 65, .max_fields = 1, .max_body = 0};
    TEST_ASSERT_CODE(http_parser_init(&p, &lim, buf, sizeof(buf)), CM_E_INVALID_ARG);
    lim.max_head = 64;
    TEST_ASSERT_OK(http_parser_init(&p, &lim, buf, sizeof(buf)));
    lim.max_fields = 0;
    TEST_ASSERT_CODE(http_parser_init(&p, &lim, buf, sizeof(buf)), CM_E_INVALID_ARG);
}

static void test_http_arena_exhaustion_is_503(void)
{
    cm_arena small;
    cm_arena_init(&small, 256, 512);
    uint8_t head_buf[HTTP_DEFAULT_MAX_HEAD];
    http_limits lim = lim_default();
    http_parser p;
    TEST_ASSERT_OK(http_parser_init(&p, &lim, head_buf, sizeof(head_buf)));
    http_feed f;
    TEST_ASSERT_CODE(http_parser_feed(&p, &f, &small,
                                      LIT("POST /.well-known/cmp HTTP/1.1\r\nHost: a\r\n"
                                          "Content-Type: application/pkixcmp\r\n"
                                          "Content-Length: 4096\r\n\r\n")),
                     CM_E_NOMEM);
    CU_ASSERT_EQUAL(f.kind, HTTP_FEED_ERROR);
    CU_ASSERT_EQUAL(f.status, 503);
    CU_ASSERT(f.close);
    cm_arena_cleanup(&small);
}

// --- routing -------------------------------------------------------------------------------

static void test_http_routes(void)
{
    static const struct {
        const char *target;
        http_route_kind kind;
        const char *name;
        const char *op;
    } k_ok[] = {
        {"/.well-known/cmp", HTTP_ROUTE_CMP, "", ""},
        {"/.well-known/cmp/", HTTP_ROUTE_CMP, "", ""},
        {"/.well-known/cmp?x=1", HTTP_ROUTE_CMP, "", ""},
        {"/.well-known/cmp/initialization", HTTP_ROUTE_CMP, "", "initialization"},
        {"/.well-known/cmp/getcacerts/", HTTP_ROUTE_CMP, "", "getcacerts"},
        {"/.well-known/cmp/p/devices", HTTP_ROUTE_CMP, "devices", ""},
        {"/.well-known/cmp/p/devices/", HTTP_ROUTE_CMP, "devices", ""},
        {"/.well-known/cmp/p/Dev_CA-2.x/keyupdate", HTTP_ROUTE_CMP, "Dev_CA-2.x", "keyupdate"},
        {"/.well-known/cmp/p/p", HTTP_ROUTE_CMP, "p", ""},
        {"/.well-known/cmp/p/a/nested?q", HTTP_ROUTE_CMP, "a", "nested"},
        {"/healthz", HTTP_ROUTE_HEALTHZ, "", ""},
        {"/healthz?verbose", HTTP_ROUTE_HEALTHZ, "", ""},
        {"/metrics", HTTP_ROUTE_METRICS, "", ""},
        {"/crl/devices.crl", HTTP_ROUTE_CRL, "devices", ""},
        {"/crl/a.b.crl", HTTP_ROUTE_CRL, "a.b", ""},
    };
    for (size_t i = 0; i < sizeof(k_ok) / sizeof(k_ok[0]); i++) {
        http_route r;
        cm_span t = cm_span_make(k_ok[i].target, strlen(k_ok[i].target));
        cm_result res = http_route_classify(&r, t);
        if (!cm_ok(res)) {
            fprintf(stderr, "\n  %s not routed\n", k_ok[i].target);
        }
        CU_ASSERT(cm_ok(res));
        CU_ASSERT_EQUAL(r.kind, k_ok[i].kind);
        CU_ASSERT(span_is(r.name, k_ok[i].name));
        CU_ASSERT(span_is(r.operation, k_ok[i].op));
    }
    char longname[128] = "/.well-known/cmp/p/";
    memset(longname + strlen(longname), 'n', HTTP_MAX_NAME_LEN);
    http_route r;
    TEST_ASSERT_OK(http_route_classify(&r, cm_span_make(longname, strlen(longname))));
    CU_ASSERT_EQUAL(r.name.len, HTTP_MAX_NAME_LEN);
    strcat(longname, "n");
    TEST_ASSERT_CODE(http_route_classify(&r, cm_span_make(longname, strlen(longname))),
                     HTTP_E_NOT_FOUND);
    CU_ASSERT_EQUAL(r.kind, HTTP_ROUTE_NONE);

    static const char *const k_bad[] = {
        "/",
        "",
        "/.well-known",
        "/.well-known/cmpx",
        "/.well-known/cmp/p",
        "/.well-known/cmp/p/",
        "/.well-known/cmp//",
        "/.well-known/cmp//x",
        "/.well-known/cmp/p/../x",
        "/.well-known/cmp/p/.hidden",
        "/.well-known/cmp/p/a%2fb",
        "/.well-known/cmp/p/a/b/c",
        "/.well-known/cmp/a/b",
        "/.well-known/cmp/p/a/p",
        "/.well-known/cmp/p/a//",
        "/.WELL-KNOWN/cmp",
        "/healthz/x",
        "/healthzz",
        "/crl/.crl",
        "/crl/a.CRL",
        "/crl/a",
        "/crl/a/b.crl",
        "/crl/..crl",
        "/metrics/x",
    };
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        cm_result res = http_route_classify(&r, cm_span_make(k_bad[i], strlen(k_bad[i])));
        if (res.code != HTTP_E_NOT_FOUND) {
            fprintf(stderr, "\n  %s routed\n", k_bad[i]);
        }
        CU_ASSERT_EQUAL(res.code, HTTP_E_NOT_FOUND);
    }
}

// --- responses -----------------------------------------------------------------------------

static void test_http_response_head_exact_bytes(void)
{
    uint8_t buf[512];
    size_t len;
    // RFC 9110 §5.6.7's example date: Sun, 06 Nov 1994 08:49:37 GMT.
    http_response r = {.status = 200,
                       .content_type = HTTP_CONTENT_TYPE_PKIXCMP,
                       .body_len = 1234,
                       .no_cache = true,
                       .date = 784111777};
    TEST_ASSERT_OK(http_response_head_write(buf, sizeof(buf), &len, &r));
    static const char k_want[] = "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                                 "Content-Type: application/pkixcmp\r\nContent-Length: 1234\r\n"
                                 "Cache-Control: no-cache\r\n\r\n";
    CU_ASSERT_EQUAL(len, sizeof(k_want) - 1);
    CU_ASSERT(memcmp(buf, k_want, len) == 0);
    // Every smaller buffer fails cleanly.
    for (size_t cap = 0; cap < len; cap++) {
        size_t l2 = 0;
        TEST_ASSERT_CODE(http_response_head_write(buf, cap, &l2, &r), CM_E_BUFFER_TOO_SMALL);
    }
    size_t l3;
    TEST_ASSERT_OK(http_response_head_write(buf, len, &l3, &r));
    CU_ASSERT_EQUAL(l3, len);

    http_response k = {.status = 200, .body_len = 0, .keep_alive_10 = true};
    TEST_ASSERT_OK(http_response_head_write(buf, sizeof(buf), &len, &k));
    static const char k_want2[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
    CU_ASSERT(len == sizeof(k_want2) - 1 && memcmp(buf, k_want2, len) == 0);

    http_response bad = {.status = 99};
    TEST_ASSERT_CODE(http_response_head_write(buf, sizeof(buf), &len, &bad), CM_E_INVALID_ARG);
    bad.status = 600;
    TEST_ASSERT_CODE(http_response_head_write(buf, sizeof(buf), &len, &bad), CM_E_INVALID_ARG);
    http_response inj = {.status = 200, .content_type = "text/plain\r\nX: y"};
    TEST_ASSERT_CODE(http_response_head_write(buf, sizeof(buf), &len, &inj), CM_E_INVALID_ARG);
    // Dates: the leap day of 2024 was a Thursday.
    http_response d = {.status = 204, .date = 1709209845};
    TEST_ASSERT_OK(http_response_head_write(buf, sizeof(buf), &len, &d));
    static const char k_want3[] =
        "HTTP/1.1 204 No Content\r\nDate: Thu, 29 Feb 2024 12:30:45 GMT\r\n\r\n";
    CU_ASSERT(len == sizeof(k_want3) - 1 && memcmp(buf, k_want3, len) == 0);
}

static void test_http_error_responses(void)
{
    uint8_t buf[512];
    size_t len;
    http_limits lim = lim_default();
    run r;
    parse_all(&r, &lim,
              LIT("PUT /.well-known/cmp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    http_feed f = {.kind = HTTP_FEED_ERROR,
                   .status = r.ev[0].status,
                   .close = r.ev[0].close,
                   .allow = r.ev[0].allow};
    TEST_ASSERT_OK(http_error_write(buf, sizeof(buf), &len, &f, 0));
    static const char k_want[] = "HTTP/1.1 405 Method Not Allowed\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n"
                                 "Allow: POST\r\nConnection: close\r\n\r\n405 Method Not Allowed\n";
    CU_ASSERT_EQUAL(len, sizeof(k_want) - 1);
    CU_ASSERT(memcmp(buf, k_want, len) == 0);
    // Every status the parser can answer has a reason phrase and fits in 512 bytes.
    static const uint16_t k_statuses[] = {400, 404, 405, 408, 411, 413, 414,
                                          415, 431, 500, 501, 503, 505};
    for (size_t i = 0; i < sizeof(k_statuses) / sizeof(k_statuses[0]); i++) {
        CU_ASSERT(strcmp(http_status_reason(k_statuses[i]), "Unknown") != 0);
        http_feed e = {.kind = HTTP_FEED_ERROR, .status = k_statuses[i], .close = true};
        TEST_ASSERT_OK(http_error_write(buf, sizeof(buf), &len, &e, 253402300799));
    }
    CU_ASSERT_STRING_EQUAL(http_status_reason(299), "Unknown");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(HTTP_E_OBS_FOLD)), "HTTP_E_OBS_FOLD");
}

// openssl_reads_response hands |resp| to OpenSSL's HTTP client (OSSL_HTTP_REQ_CTX over memory
// BIOs) as the answer to a CMP POST and returns the body it extracted (BIO_free it), or NULL.
static BIO *openssl_reads_response(const uint8_t *resp, size_t len)
{
    BIO *wbio = BIO_new(BIO_s_mem());
    BIO *rbio = BIO_new_mem_buf(resp, (int)len);
    ASN1_OCTET_STRING *req = ASN1_OCTET_STRING_new();
    OSSL_HTTP_REQ_CTX *ctx = NULL;
    BIO *body = NULL;
    BIO *copy = NULL;
    if (wbio == NULL || rbio == NULL || req == NULL || ASN1_OCTET_STRING_set(req, NULL, 0) != 1) {
        goto out;
    }
    ctx = OSSL_HTTP_REQ_CTX_new(wbio, rbio, 0);
    if (ctx == NULL ||
        OSSL_HTTP_REQ_CTX_set_request_line(ctx, 1, NULL, NULL, "/.well-known/cmp") != 1 ||
        OSSL_HTTP_REQ_CTX_set_expected(ctx, HTTP_CONTENT_TYPE_PKIXCMP, 0, 0, 0) != 1 ||
        OSSL_HTTP_REQ_CTX_set1_req(ctx, HTTP_CONTENT_TYPE_PKIXCMP,
                                   ASN1_ITEM_rptr(ASN1_OCTET_STRING),
                                   (const ASN1_VALUE *)req) != 1) {
        goto out;
    }
    body = OSSL_HTTP_REQ_CTX_exchange(ctx);
    if (body != NULL) {
        // |body| belongs to the context; copy it out.
        copy = BIO_new(BIO_s_mem());
        char tmp[256];
        int n;
        while (copy != NULL && (n = BIO_read(body, tmp, sizeof(tmp))) > 0) {
            (void)BIO_write(copy, tmp, n);
        }
    }
out:
    OSSL_HTTP_REQ_CTX_free(ctx);
    BIO_free(wbio);
    BIO_free(rbio);
    ASN1_OCTET_STRING_free(req);
    return copy;
}

static void test_http_openssl_client_reads_our_response(void)
{
    uint8_t buf[512];
    size_t len;
    static const uint8_t k_body[] = {0x30, 0x03, 0x02, 0x01, 0x05};
    http_response r = {.status = 200,
                       .content_type = HTTP_CONTENT_TYPE_PKIXCMP,
                       .no_cache = true,
                       .close = true,
                       .date = 1700000000};
    TEST_ASSERT_OK(
        http_response_write(buf, sizeof(buf), &len, &r, cm_span_make(k_body, sizeof(k_body))));
    BIO *got = openssl_reads_response(buf, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    char *p = NULL;
    long n = BIO_get_mem_data(got, &p);
    CU_ASSERT_EQUAL(n, (long)sizeof(k_body));
    CU_ASSERT(n == (long)sizeof(k_body) && memcmp(p, k_body, sizeof(k_body)) == 0);
    BIO_free(got);
    // A 404 from our writer is an error to the client.
    http_feed f = {.kind = HTTP_FEED_ERROR, .status = 404, .close = true};
    TEST_ASSERT_OK(http_error_write(buf, sizeof(buf), &len, &f, 0));
    got = openssl_reads_response(buf, len);
    CU_ASSERT_PTR_NULL(got);
    BIO_free(got);
    cm_ossl_clear_errors();
}

// --- the real client -----------------------------------------------------------------------

static void check_openssl_request(const uint8_t *req, size_t len, const char *want_target,
                                  const char *want_name, const char *want_op, bool keep)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    http_request q = expect_request(cm_span_make(req, len));
    CU_ASSERT_EQUAL(q.method, HTTP_METHOD_POST);
    CU_ASSERT(span_is(q.target, want_target));
    CU_ASSERT_EQUAL(q.route.kind, HTTP_ROUTE_CMP);
    CU_ASSERT(span_is(q.route.name, want_name));
    CU_ASSERT(span_is(q.route.operation, want_op));
    CU_ASSERT(span_is(q.host, "127.0.0.1"));
    CU_ASSERT_EQUAL(q.content_type, HTTP_CONTENT_PKIXCMP);
    CU_ASSERT_EQUAL(q.keep_alive, keep);
    // The body is the whole PKIMessage: OpenSSL's own decoder takes it.
    const unsigned char *p = q.body.p;
    OSSL_CMP_MSG *msg = d2i_OSSL_CMP_MSG(NULL, &p, (long)q.body.len);
    CU_ASSERT_PTR_NOT_NULL(msg);
    CU_ASSERT(p == q.body.p + q.body.len);
    OSSL_CMP_MSG_free(msg);
    // Pipelined twice in one buffer, both parse, at the right offsets.
    uint8_t *two = malloc(2 * len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(two);
    memcpy(two, req, len);
    memcpy(two + len, req, len);
    run r;
    http_limits lim = lim_default();
    run_stream(&r, &lim, cm_span_make(two, 2 * len), 0, 0);
    if (keep) {
        CU_ASSERT_EQUAL(r.num, 2);
        CU_ASSERT_EQUAL(r.ev[1].offset, 2 * len);
    }
    CU_ASSERT_EQUAL(r.ev[0].kind, HTTP_FEED_REQUEST);
    CU_ASSERT_EQUAL(r.ev[0].offset, len);
    free(two);
}

static void test_http_parses_openssl_cmp_requests(void)
{
    check_openssl_request(g_genm_req, g_genm_len, "/.well-known/cmp", "", "", false);
    check_openssl_request(g_ir_req, g_ir_len, "/.well-known/cmp/p/devices/initialization",
                          "devices", "initialization", true);
}

// capture is a one-shot loopback listener that saves one HTTP request.
typedef struct capture {
    int lfd;
    uint8_t buf[65536];
    size_t len;
} capture;

// capture_complete reports whether |c| holds a head and the Content-Length bytes after it.
static bool capture_complete(const capture *c)
{
    const uint8_t *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) {
        return false;
    }
    size_t head = (size_t)(end - c->buf) + 4;
    size_t want = 0;
    for (size_t i = 0; i + 15 < head; i++) {
        if (strncasecmp((const char *)c->buf + i, "\nContent-Length:", 16) == 0) {
            want = strtoul((const char *)c->buf + i + 16, NULL, 10);
            break;
        }
    }
    return c->len >= head + want;
}

static void *capture_main(void *arg)
{
    capture *c = arg;
    struct pollfd pl = {.fd = c->lfd, .events = POLLIN};
    if (poll(&pl, 1, 30000) != 1) {
        return NULL;
    }
    int fd = accept(c->lfd, NULL, NULL);
    if (fd < 0) {
        return NULL;
    }
    while (c->len < sizeof(c->buf) && !capture_complete(c)) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 30000) != 1) {
            break;
        }
        ssize_t n = read(fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n <= 0) {
            break;
        }
        c->len += (size_t)n;
    }
    (void)close(fd); // the client then fails, which is expected
    return NULL;
}

// capture_openssl runs `openssl cmp` with |args| (after -server) against a listener on a free
// loopback port and returns the request bytes it sent (malloc'ed), or NULL.
static uint8_t *capture_openssl(const char *const *args, size_t num_args, size_t *out_len)
{
    capture *c = calloc(1, sizeof(*c));
    uint8_t *out = NULL;
    if (c == NULL) {
        return NULL;
    }
    c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    pthread_t th;
    if (c->lfd < 0 || bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(c->lfd, 4) != 0 || getsockname(c->lfd, (struct sockaddr *)&sa, &sl) != 0 ||
        pthread_create(&th, NULL, capture_main, c) != 0) {
        goto out;
    }
    char server[64];
    (void)snprintf(server, sizeof(server), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    const char *argv[32] = {"openssl", "cmp", "-server", server};
    size_t k = 4;
    for (size_t i = 0; i < num_args && k < 31; i++) {
        argv[k++] = args[i];
    }
    argv[k] = NULL;
    char log[512];
    (void)test_run(argv, test_path(log, sizeof(log), g_dir, "openssl.log"));
    (void)pthread_join(th, NULL);
    if (c->len > 0) {
        out = malloc(c->len);
        if (out != NULL) {
            memcpy(out, c->buf, c->len);
            *out_len = c->len;
        }
    }
out:
    if (c->lfd >= 0) {
        (void)close(c->lfd);
    }
    free(c);
    return out;
}

static int http_suite_init(void)
{
    if (!test_tmpdir(g_dir, sizeof(g_dir), "http")) {
        return 1;
    }
    char key[512], certout[512];
    test_path(key, sizeof(key), g_dir, "dev.key");
    test_path(certout, sizeof(certout), g_dir, "dev.pem");
    const char *genkey[] = {"openssl", "genpkey",  "-algorithm",
                            "EC",      "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-out",    key,        NULL};
    if (test_run(genkey, NULL) != 0) {
        return 1;
    }
    const char *genm[] = {
        "-path",   ".well-known/cmp", "-cmd",       "genm",     "-ref",         "1234",
        "-secret", "pass:1234",       "-recipient", "/CN=test", "-msg_timeout", "10"};
    g_genm_req = capture_openssl(genm, sizeof(genm) / sizeof(genm[0]), &g_genm_len);
    const char *ir[] = {"-path",        "/.well-known/cmp/p/devices/initialization",
                        "-cmd",         "ir",
                        "-ref",         "1234",
                        "-secret",      "pass:1234",
                        "-recipient",   "/CN=test",
                        "-newkey",      key,
                        "-subject",     "/CN=device",
                        "-certout",     certout,
                        "-keep_alive",  "2",
                        "-msg_timeout", "10"};
    g_ir_req = capture_openssl(ir, sizeof(ir) / sizeof(ir[0]), &g_ir_len);
    if (g_genm_req == NULL || g_ir_req == NULL) {
        fprintf(stderr, "could not capture the openssl cmp requests\n");
        return 1;
    }
    return 0;
}

static int http_suite_cleanup(void)
{
    free(g_genm_req);
    free(g_ir_req);
    g_genm_req = g_ir_req = NULL;
    (void)test_rmtree(g_dir);
    return 0;
}

static void http_test_setup(void)
{
    cm_arena_init(&g_arena, 0, 0);
}

static void http_test_teardown(void)
{
    cm_arena_cleanup(&g_arena);
}

int test_http_register(void);
int test_http_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_http_parses_cmp_post),
        TEST_CASE(test_http_field_names_are_case_insensitive),
        TEST_CASE(test_http_get_routes),
        TEST_CASE(test_http_accepts_absolute_form),
        TEST_CASE(test_http_keep_alive_and_close),
        TEST_CASE(test_http_pipelined_requests),
        TEST_CASE(test_http_request_outlives_input_and_parser_buffers),
        TEST_CASE(test_http_expect_100_continue),
        TEST_CASE(test_http_not_found_and_method),
        TEST_CASE(test_http_error_keeps_connection_and_skips_body),
        TEST_CASE(test_http_body_limit),
        TEST_CASE(test_http_media_type),
        TEST_CASE(test_http_versions),
        TEST_CASE(test_http_host_rules),
        TEST_CASE(test_http_smuggling_rules),
        TEST_CASE(test_http_limits_at_and_past),
        TEST_CASE(test_http_parser_init_rejects_bad_args),
        TEST_CASE(test_http_arena_exhaustion_is_503),
        TEST_CASE(test_http_routes),
        TEST_CASE(test_http_response_head_exact_bytes),
        TEST_CASE(test_http_error_responses),
        TEST_CASE(test_http_openssl_client_reads_our_response),
        TEST_CASE(test_http_parses_openssl_cmp_requests),
        TEST_CASE(test_http_length_required_and_transfer_codings),
        TEST_CASE(test_http_chunked_bodies),
        TEST_CASE(test_http_chunked_body_grows),
        TEST_CASE(test_http_chunked_rejects_bad_framing),
        TEST_CASE(test_http_chunked_framing_limits),
    };
    return test_register_suite("http", http_suite_init, http_suite_cleanup, http_test_setup,
                               http_test_teardown, tests, TEST_NUM_CASES(tests));
}
