// fuzz_http: feeds arbitrary bytes to the HTTP request parser twice, once whole and once in
// chunks whose sizes are derived from the input, and traps unless both runs report the same
// events (kind, code, status, close, request contents) at the same stream offsets and end in
// the same parser state. Also checks that a feed never consumes more than it was given, that
// NEED_MORE consumed everything, and that a request's body is exactly the bytes between its
// head and the point where it completed, as long as the Content-Length in its head, or, for a
// chunked request, what a simple reference decoder makes of those bytes. Input layout: two seed
// bytes for the chunking, then the byte stream.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(c)         \
    do {                      \
        if (!(c)) {           \
            __builtin_trap(); \
        }                     \
    } while (0)

#define FUZZ_MAX_EVENTS 64

typedef struct fuzz_event {
    http_feed_kind kind;
    uint32_t code;
    uint16_t status;
    bool close;
    http_method allow;
    size_t offset; // stream offset after the event
    uint64_t digest;
} fuzz_event;

typedef struct fuzz_run {
    fuzz_event ev[FUZZ_MAX_EVENTS];
    size_t num;
    http_parser_state state;
    size_t head_len;
    uint64_t body_left;
} fuzz_run;

static uint64_t fuzz_mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t fuzz_digest(const http_request *r)
{
    uint64_t h = 0xcbf29ce484222325ull;
    uint32_t scalars[] = {(uint32_t)r->method,
                          r->version_minor,
                          (uint32_t)r->route.kind,
                          (uint32_t)r->content_type,
                          (uint32_t)r->keep_alive,
                          (uint32_t)r->expect_continue,
                          (uint32_t)r->target.len,
                          (uint32_t)r->host.len,
                          (uint32_t)r->body.len,
                          (uint32_t)r->route.name.len,
                          (uint32_t)r->route.operation.len};
    h = fuzz_mix(h, scalars, sizeof(scalars));
    h = fuzz_mix(h, r->target.p, r->target.len);
    h = fuzz_mix(h, r->host.p, r->host.len);
    h = fuzz_mix(h, r->body.p, r->body.len);
    h = fuzz_mix(h, r->route.name.p, r->route.name.len);
    h = fuzz_mix(h, r->route.operation.p, r->route.operation.len);
    return h;
}

// fuzz_find_field returns the offset just after "\r\nNAME:" (|lname| lower case, with the
// CR LF and colon) in the head |h|, field names matched ignoring case, or 0 when absent.
static size_t fuzz_find_field(cm_span h, const char *lname)
{
    const size_t n = strlen(lname);
    for (size_t i = 0; i + n <= h.len; i++) {
        size_t k = 0;
        while (k < n && (h.p[i + k] | (k >= 2 ? 0x20 : 0)) == (uint8_t)lname[k]) {
            k++;
        }
        if (k == n) {
            return i + n;
        }
    }
    return 0;
}

// fuzz_head_len returns the length of the head at the start of |m| (through the first empty
// line), or 0.
static size_t fuzz_head_len(cm_span m)
{
    for (size_t i = 0; i + 4 <= m.len; i++) {
        if (memcmp(m.p + i, "\r\n\r\n", 4) == 0) {
            return i + 4;
        }
    }
    return 0;
}

static int fuzz_hex(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// fuzz_dechunk_matches decodes |f|, the framing of an accepted chunked body, leniently (the
// parser already vetted it) and reports whether it is exactly |body| and ends exactly with |f|.
static bool fuzz_dechunk_matches(cm_span f, cm_span body)
{
    size_t i = 0, out = 0;
    for (;;) {
        uint64_t size = 0;
        size_t digits = 0;
        while (i < f.len && fuzz_hex(f.p[i]) >= 0) {
            size = size * 16u + (uint64_t)fuzz_hex(f.p[i]);
            if (size > ((uint64_t)1 << 40)) {
                return false;
            }
            digits++;
            i++;
        }
        while (i < f.len && f.p[i] != '\n') {
            i++; // chunk extensions
        }
        if (digits == 0 || i >= f.len) {
            return false;
        }
        i++;
        if (size == 0) {
            break;
        }
        if (size > f.len - i || size > body.len - out || memcmp(f.p + i, body.p + out, size) != 0) {
            return false;
        }
        i += size;
        out += size;
        if (i + 2 > f.len || f.p[i] != '\r' || f.p[i + 1] != '\n') {
            return false;
        }
        i += 2;
    }
    for (;;) { // the trailer section, up to the empty line
        const size_t start = i;
        while (i < f.len && f.p[i] != '\n') {
            i++;
        }
        if (i >= f.len) {
            return false;
        }
        i++;
        if (i - start == 2) {
            break;
        }
    }
    return i == f.len && out == body.len;
}

// fuzz_content_length finds the first Content-Length field of the head |h| and returns its
// value, or 0 when there is none.
static uint64_t fuzz_content_length(cm_span h)
{
    size_t j = fuzz_find_field(h, "\r\ncontent-length:");
    if (j == 0) {
        return 0;
    }
    while (j < h.len && (h.p[j] == ' ' || h.p[j] == '\t')) {
        j++;
    }
    uint64_t v = 0;
    while (j < h.len && h.p[j] >= '0' && h.p[j] <= '9') {
        v = v * 10u + (uint64_t)(h.p[j] - '0');
        j++;
    }
    return v;
}

// fuzz_feed_all parses |in| in chunks (|seed| 0: whole) and records the events in |run|.
static void fuzz_feed_all(fuzz_run *run, cm_span in, uint32_t seed)
{
    static const http_limits k_limits = {
        .max_request_line = 96, .max_head = 384, .max_fields = 6, .max_body = 2048};
    uint8_t head_buf[384];
    http_parser p;
    FUZZ_CHECK(cm_ok(http_parser_init(&p, &k_limits, head_buf, sizeof(head_buf))));
    cm_arena arena;
    cm_arena_init(&arena, 4096, (size_t)64 * 1024);
    memset(run, 0, sizeof(*run));
    uint32_t rng = seed;
    size_t pos = 0;
    size_t req_start = 0; // where the current request began, SIZE_MAX when a body was skipped
    bool dead = false;
    while (pos < in.len && !dead && run->num < FUZZ_MAX_EVENTS) {
        size_t n = in.len - pos;
        if (seed != 0) {
            rng = rng * 1103515245u + 12345u;
            size_t want = (rng >> 16) % 41u; // 0..40, zero-length feeds included
            n = want < n ? want : n;
        }
        http_feed f;
        memset(&f, 0, sizeof(f));
        cm_result r = http_parser_feed(&p, &f, &arena, cm_span_make(in.p + pos, n));
        FUZZ_CHECK(f.consumed <= n);
        FUZZ_CHECK(r.code == f.error.code);
        pos += f.consumed;
        if (f.kind == HTTP_FEED_NEED_MORE) {
            FUZZ_CHECK(f.consumed == n && cm_ok(r));
            continue;
        }
        FUZZ_CHECK(f.consumed > 0);
        fuzz_event *e = &run->ev[run->num++];
        e->kind = f.kind;
        e->code = f.error.code;
        e->status = f.status;
        e->close = f.close;
        e->allow = f.allow;
        e->offset = pos;
        if (f.kind == HTTP_FEED_REQUEST) {
            const http_request *q = &f.request;
            FUZZ_CHECK(cm_ok(r));
            FUZZ_CHECK(q->body.p != NULL);
            FUZZ_CHECK(q->body.len <= k_limits.max_body);
            FUZZ_CHECK(q->route.kind != HTTP_ROUTE_NONE);
            FUZZ_CHECK(q->method ==
                       (q->route.kind == HTTP_ROUTE_CMP ? HTTP_METHOD_POST : HTTP_METHOD_GET));
            // After its head (when we know where it began) comes either exactly Content-Length
            // bytes of body, or chunked framing that decodes to the body.
            if (req_start != SIZE_MAX) {
                cm_span msg = cm_span_make(in.p + req_start, pos - req_start);
                const size_t hl = fuzz_head_len(msg);
                FUZZ_CHECK(hl != 0);
                cm_span head = cm_span_make(msg.p, hl);
                cm_span rest = cm_span_make(msg.p + hl, msg.len - hl);
                if (fuzz_find_field(head, "\r\ntransfer-encoding:") != 0) {
                    FUZZ_CHECK(fuzz_dechunk_matches(rest, q->body));
                } else {
                    FUZZ_CHECK(rest.len == q->body.len &&
                               (rest.len == 0 || memcmp(rest.p, q->body.p, rest.len) == 0));
                    FUZZ_CHECK(fuzz_content_length(head) == q->body.len);
                }
            }
            req_start = pos;
            e->digest = fuzz_digest(q);
            cm_arena_reset(&arena);
        } else {
            FUZZ_CHECK(!cm_ok(r));
            FUZZ_CHECK(f.status >= 400 && f.status <= 599);
            dead = f.close;
            // A keep-alive error is reported at the end of its head and skips Content-Length
            // bytes of body: the next request starts after them.
            if (req_start != SIZE_MAX && !dead) {
                cm_span head = cm_span_make(in.p + req_start, pos - req_start);
                req_start = pos + (size_t)fuzz_content_length(head);
            } else {
                req_start = SIZE_MAX;
            }
        }
    }
    run->state = p.state;
    run->head_len = p.head_len;
    run->body_left = p.body_left;
    cm_arena_cleanup(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    uint32_t seed = ((uint32_t)data[0] << 8 | data[1]) | 0x10000u; // never 0
    cm_span in = cm_span_make(data + 2, size - 2);
    fuzz_run *whole = malloc(sizeof(*whole));
    fuzz_run *split = malloc(sizeof(*split));
    FUZZ_CHECK(whole != NULL && split != NULL);
    fuzz_feed_all(whole, in, 0);
    fuzz_feed_all(split, in, seed);
    FUZZ_CHECK(whole->num == split->num);
    for (size_t i = 0; i < whole->num; i++) {
        const fuzz_event *a = &whole->ev[i];
        const fuzz_event *b = &split->ev[i];
        FUZZ_CHECK(a->kind == b->kind && a->code == b->code && a->status == b->status &&
                   a->close == b->close && a->allow == b->allow && a->offset == b->offset &&
                   a->digest == b->digest);
    }
    if (whole->num < FUZZ_MAX_EVENTS) {
        FUZZ_CHECK(whole->state == split->state && whole->head_len == split->head_len &&
                   whole->body_left == split->body_left);
    }
    free(whole);
    free(split);
    return 0;
}
