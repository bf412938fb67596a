// Suite "front", CoAP part: the codec (front_coap_msg.c) on hand-made datagrams, and the
// cm-coap thread of the suite's daemon on a loopback UDP socket (front_coap.c): format errors,
// pings, routes and options, Block1 reassembly, the deduplication cache, the size cap, the
// per-peer transfer cap and the transfer timeout.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "engine/front/front_coap_internal.h"
#include "engine/front/front_internal.h"

int test_front_coap_add(CU_pSuite s, front_daemon **d);

static front_daemon **g_coap_daemon;

// --- the codec -------------------------------------------------------------------------------

// A CON POST, MID 0x1234, token 0xaa 0xbb, Uri-Path "a" "bc", Content-Format 259, Block1 2/M/64,
// payload "xyz".
static const uint8_t k_msg[] = {0x42, 0x02, 0x12, 0x34, 0xaa, 0xbb, 0xb1, 'a', 0x02, 'b', 'c',
                                0x12, 0x01, 0x03, 0xd1, 0x02, 0x2a, 0xff, 'x', 'y',  'z'};

static void test_front_coap_parses_a_message(void)
{
    front_coap_msg m;
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(k_msg, sizeof(k_msg))), FRONT_COAP_PARSED_OK);
    CU_ASSERT_EQUAL(m.type, FRONT_COAP_CON);
    CU_ASSERT_EQUAL(m.code, FRONT_COAP_POST);
    CU_ASSERT_EQUAL(m.mid, 0x1234);
    CU_ASSERT_EQUAL(m.token_len, 2);
    CU_ASSERT_EQUAL(m.token[1], 0xbb);
    CU_ASSERT_EQUAL(m.num_opts, 4);
    CU_ASSERT(m.payload.len == 3 && memcmp(m.payload.p, "xyz", 3) == 0);
    char path[32];
    size_t n = 0;
    CU_ASSERT(front_coap_path_write(&m, path, sizeof(path), &n));
    CU_ASSERT_STRING_EQUAL(path, "/a/bc");
    uint32_t cf = 0;
    const front_coap_opt *o = front_coap_find(&m, FRONT_COAP_OPT_CONTENT_FORMAT);
    CU_ASSERT(o != NULL && front_coap_opt_uint(o, &cf) && cf == FRONT_COAP_CT_PKIXCMP);
    front_coap_block b;
    o = front_coap_find(&m, FRONT_COAP_OPT_BLOCK1);
    CU_ASSERT(o != NULL && front_coap_block_parse(o, &b));
    CU_ASSERT(b.num == 2 && b.more && b.szx == 2 && front_coap_block_size(b.szx) == 64);
    CU_ASSERT_EQUAL(front_coap_block_value(&b), 0x2a);
    CU_ASSERT_PTR_NULL(front_coap_find(&m, FRONT_COAP_OPT_BLOCK2));
}

static void test_front_coap_writer_round_trips(void)
{
    uint8_t buf[64];
    front_coap_writer w;
    const uint8_t tok[2] = {0xaa, 0xbb};
    front_coap_writer_init(&w, buf, sizeof(buf), FRONT_COAP_CON, FRONT_COAP_POST, 0x1234, tok, 2);
    front_coap_put_opt(&w, FRONT_COAP_OPT_URI_PATH, (const uint8_t *)"a", 1);
    front_coap_put_opt(&w, FRONT_COAP_OPT_URI_PATH, (const uint8_t *)"bc", 2);
    front_coap_put_uint(&w, FRONT_COAP_OPT_CONTENT_FORMAT, FRONT_COAP_CT_PKIXCMP);
    front_coap_put_uint(&w, FRONT_COAP_OPT_BLOCK1, 0x2a);
    front_coap_put_payload(&w, cm_span_make("xyz", 3));
    size_t len = 0;
    CU_ASSERT(front_coap_writer_finish(&w, &len));
    CU_ASSERT(len == sizeof(k_msg) && memcmp(buf, k_msg, len) == 0);
    // Options out of order, or after the payload, and overflowing the buffer fail for good.
    front_coap_writer_init(&w, buf, sizeof(buf), FRONT_COAP_ACK, FRONT_COAP_CHANGED, 1, NULL, 0);
    front_coap_put_uint(&w, FRONT_COAP_OPT_BLOCK1, 1);
    front_coap_put_uint(&w, FRONT_COAP_OPT_URI_PATH, 1);
    CU_ASSERT(!front_coap_writer_finish(&w, &len));
    front_coap_writer_init(&w, buf, 8, FRONT_COAP_ACK, FRONT_COAP_CHANGED, 1, NULL, 0);
    front_coap_put_payload(&w, cm_span_make("0123456789", 10));
    CU_ASSERT(!front_coap_writer_finish(&w, &len));
    // Extended deltas and lengths (13 and 14 nibbles) and an option number above 268.
    uint8_t big[400];
    memset(big, 'q', sizeof(big));
    front_coap_writer_init(&w, buf, sizeof(buf), FRONT_COAP_NON, FRONT_COAP_POST, 7, NULL, 0);
    front_coap_put_opt(&w, FRONT_COAP_OPT_SIZE1, big, 20);
    front_coap_put_opt(&w, FRONT_COAP_OPT_REQUEST_TAG, big, 4);
    CU_ASSERT(front_coap_writer_finish(&w, &len));
    front_coap_msg m;
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(buf, len)), FRONT_COAP_PARSED_OK);
    CU_ASSERT(m.num_opts == 2 && m.opts[0].num == 60 && m.opts[0].val.len == 20 &&
              m.opts[1].num == 292 && m.opts[1].val.len == 4);
    uint8_t large[512];
    front_coap_writer_init(&w, large, sizeof(large), FRONT_COAP_NON, FRONT_COAP_POST, 7, NULL, 0);
    front_coap_put_opt(&w, FRONT_COAP_OPT_URI_HOST, big, sizeof(big)); // length 14 + 2 bytes
    CU_ASSERT(front_coap_writer_finish(&w, &len));
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(large, len)), FRONT_COAP_PARSED_OK);
    CU_ASSERT(m.num_opts == 1 && m.opts[0].val.len == sizeof(big));
}

static void test_front_coap_rejects_malformed_datagrams(void)
{
    front_coap_msg m;
    static const uint8_t too_short[] = {0x40, 0x01, 0x00};
    static const uint8_t version2[] = {0x80, 0x01, 0x00, 0x01};
    static const uint8_t tkl9[] = {0x49, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    static const uint8_t token_cut[] = {0x44, 0x01, 0, 1, 1, 2};
    static const uint8_t empty_with_token[] = {0x41, 0x00, 0, 1, 7};
    static const uint8_t marker_no_payload[] = {0x40, 0x02, 0, 1, 0xff};
    static const uint8_t delta15[] = {0x40, 0x02, 0, 1, 0xf1, 0};
    static const uint8_t len15[] = {0x40, 0x02, 0, 1, 0x1f};
    static const uint8_t value_cut[] = {0x40, 0x02, 0, 1, 0xb4, 'a', 'b'};
    static const uint8_t ext_cut[] = {0x40, 0x02, 0, 1, 0xe0, 0x01};
    static const uint8_t num_overflow[] = {0x40, 0x02, 0, 1, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff};
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(too_short, sizeof(too_short))),
                    FRONT_COAP_PARSED_IGNORE);
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(version2, sizeof(version2))),
                    FRONT_COAP_PARSED_IGNORE);
    const struct {
        const uint8_t *p;
        size_t n;
    } bad[] = {{tkl9, sizeof(tkl9)},
               {token_cut, sizeof(token_cut)},
               {empty_with_token, sizeof(empty_with_token)},
               {marker_no_payload, sizeof(marker_no_payload)},
               {delta15, sizeof(delta15)},
               {len15, sizeof(len15)},
               {value_cut, sizeof(value_cut)},
               {ext_cut, sizeof(ext_cut)},
               {num_overflow, sizeof(num_overflow)}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(bad[i].p, bad[i].n)),
                        FRONT_COAP_PARSED_FORMAT_ERROR);
    }
    // Every truncation of a good message is a format error or (under 4 bytes) ignored, and
    // never reads past its end (ASan).
    for (size_t n = 0; n < sizeof(k_msg) - 4; n++) {
        uint8_t *cut = malloc(n > 0 ? n : 1);
        memcpy(cut, k_msg, n);
        const front_coap_parsed r = front_coap_parse(&m, cm_span_make(cut, n));
        if (n < 4) {
            CU_ASSERT_EQUAL(r, FRONT_COAP_PARSED_IGNORE);
        } else if (n != 6 && n != 8 && n != 11 && n != 14 && n != 17) {
            // Cut inside the token, an option or after the payload marker.
            CU_ASSERT_EQUAL(r, FRONT_COAP_PARSED_FORMAT_ERROR);
        }
        free(cut);
    }
    // More options than the parser holds.
    uint8_t many[4 + FRONT_COAP_MAX_OPTIONS + 1] = {0x40, 0x02, 0, 1, 0x10}; // If-Match,
    // then the same option again (delta 0, empty) until there is one too many.
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(many, sizeof(many))),
                    FRONT_COAP_PARSED_FORMAT_ERROR);
    // Paths that would not name exactly their segments.
    static const uint8_t slash[] = {0x40, 0x02, 0, 1, 0xb3, 'a', '/', 'b'};
    static const uint8_t empty_seg[] = {0x40, 0x02, 0, 1, 0xb0};
    char path[16];
    size_t n = 0;
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(slash, sizeof(slash))), FRONT_COAP_PARSED_OK);
    CU_ASSERT(!front_coap_path_write(&m, path, sizeof(path), &n));
    CU_ASSERT_EQUAL(front_coap_parse(&m, cm_span_make(empty_seg, sizeof(empty_seg))),
                    FRONT_COAP_PARSED_OK);
    CU_ASSERT(!front_coap_path_write(&m, path, sizeof(path), &n));
    // Block values: more than 3 bytes and SZX 7 are refused.
    const uint8_t b4[4] = {1, 2, 3, 4}, szx7[1] = {0x17};
    const front_coap_opt o4 = {FRONT_COAP_OPT_BLOCK1, cm_span_make(b4, 4)};
    const front_coap_opt o7 = {FRONT_COAP_OPT_BLOCK1, cm_span_make(szx7, 1)};
    front_coap_block b;
    CU_ASSERT(!front_coap_block_parse(&o4, &b));
    CU_ASSERT(!front_coap_block_parse(&o7, &b));
    CU_ASSERT(front_coap_critical(FRONT_COAP_OPT_BLOCK1) && !front_coap_critical(4));
}

static void test_front_coap_reassembles_blocks(void)
{
    uint8_t body[1000];
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t)(i * 7);
    }
    front_coap_asm a;
    front_coap_asm_zero(&a, 1000);
    // 256-byte blocks, then the client follows a smaller size (128) from the same offset.
    front_coap_block b = {.num = 0, .more = true, .szx = 4};
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body, 256), 1000), FRONT_COAP_ASM_MORE);
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body, 256), 1000),
                    FRONT_COAP_ASM_DUPLICATE);
    b = (front_coap_block){.num = 3, .more = true, .szx = 4};
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body + 768, 256), 0),
                    FRONT_COAP_ASM_GAP);
    b = (front_coap_block){.num = 2, .more = true, .szx = 3}; // 128 * 2 = 256
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body + 256, 100), 0),
                    FRONT_COAP_ASM_BAD_SIZE);
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body + 256, 128), 0),
                    FRONT_COAP_ASM_MORE);
    for (uint32_t num = 3; num < 7; num++) {
        b = (front_coap_block){.num = num, .more = true, .szx = 3};
        CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body + num * 128, 128), 0),
                        FRONT_COAP_ASM_MORE);
    }
    b = (front_coap_block){.num = 7, .more = false, .szx = 3};
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body + 896, 104), 0),
                    FRONT_COAP_ASM_DONE);
    CU_ASSERT(a.len == sizeof(body) && memcmp(a.buf, body, sizeof(body)) == 0);
    front_coap_asm_cleanup(&a);
    CU_ASSERT(a.buf == NULL && a.len == 0);
    // Over the cap: announced by Size1, or found when a block passes it.
    front_coap_asm_zero(&a, 300);
    b = (front_coap_block){.num = 0, .more = true, .szx = 4};
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body, 256), 301),
                    FRONT_COAP_ASM_TOO_LARGE);
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body, 256), 0), FRONT_COAP_ASM_MORE);
    b.num = 1;
    CU_ASSERT_EQUAL(front_coap_asm_add(&a, &b, cm_span_make(body + 256, 256), 0),
                    FRONT_COAP_ASM_TOO_LARGE);
    CU_ASSERT(a.len == 256 && a.cap <= 300);
    front_coap_asm_cleanup(&a);
    // Block2 slices.
    cm_span sl;
    bool more = false;
    CU_ASSERT(front_coap_block2_slice(cm_span_make(body, 1000), 0, 6, &sl, &more));
    CU_ASSERT(sl.len == 1000 && !more);
    CU_ASSERT(front_coap_block2_slice(cm_span_make(body, 1000), 3, 4, &sl, &more));
    CU_ASSERT(sl.p == body + 768 && sl.len == 232 && !more);
    CU_ASSERT(front_coap_block2_slice(cm_span_make(body, 1000), 2, 4, &sl, &more) && more);
    CU_ASSERT(!front_coap_block2_slice(cm_span_make(body, 1000), 4, 4, &sl, &more));
    CU_ASSERT(!front_coap_block2_slice(cm_span_make(body, 1024), 4, 4, &sl, &more));
}

// --- the server on loopback ------------------------------------------------------------------

typedef struct coap_client {
    int fd;
    uint16_t mid;
    uint8_t in[2048];
    size_t in_len;
    front_coap_msg m;
} coap_client;

static bool coap_client_open(coap_client *c, uint16_t port)
{
    memset(c, 0, sizeof(*c));
    c->mid = 0x100;
    c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return c->fd >= 0 && connect(c->fd, (const struct sockaddr *)&a, sizeof(a)) == 0;
}

// coap_client_recv waits up to |ms| for one datagram and parses it into c->m.
static bool coap_client_recv(coap_client *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1) {
        return false;
    }
    const ssize_t n = recv(c->fd, c->in, sizeof(c->in), 0);
    if (n <= 0) {
        return false;
    }
    c->in_len = (size_t)n;
    return front_coap_parse(&c->m, cm_span_make(c->in, c->in_len)) == FRONT_COAP_PARSED_OK;
}

static void coap_client_raw(coap_client *c, const void *p, size_t n)
{
    CU_ASSERT_EQUAL(send(c->fd, p, n, 0), (ssize_t)n);
}

// coap_post sends a CON POST to |path| ("/"-separated) with Content-Format 259, optionally a
// Block1 value (|block1| < 0: none), Size1 (0: none), Request-Tag (0: none) and |body|.
static uint16_t coap_post(coap_client *c, const char *path, int block1, uint32_t size1,
                          uint32_t tag, cm_span body)
{
    uint8_t buf[1400];
    front_coap_writer w;
    const uint8_t tok[1] = {(uint8_t)c->mid};
    const uint16_t mid = c->mid++;
    front_coap_writer_init(&w, buf, sizeof(buf), FRONT_COAP_CON, FRONT_COAP_POST, mid, tok, 1);
    for (const char *p = path + 1; *p != '\0';) {
        const char *e = strchr(p, '/');
        const size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        front_coap_put_opt(&w, FRONT_COAP_OPT_URI_PATH, (const uint8_t *)p, n);
        p += n + (e != NULL);
    }
    if (body.len > 0) {
        front_coap_put_uint(&w, FRONT_COAP_OPT_CONTENT_FORMAT, FRONT_COAP_CT_PKIXCMP);
    }
    if (block1 >= 0) {
        front_coap_put_uint(&w, FRONT_COAP_OPT_BLOCK1, (uint32_t)block1);
    }
    if (size1 > 0) {
        front_coap_put_uint(&w, FRONT_COAP_OPT_SIZE1, size1);
    }
    if (tag > 0) {
        front_coap_put_uint(&w, FRONT_COAP_OPT_REQUEST_TAG, tag);
    }
    front_coap_put_payload(&w, body);
    size_t len = 0;
    CU_ASSERT_FATAL(front_coap_writer_finish(&w, &len));
    coap_client_raw(c, buf, len);
    return mid;
}

static uint64_t coap_counter(const uint64_t *v)
{
    return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static void test_front_coap_server_on_loopback(void)
{
    front_daemon *d = *g_coap_daemon;
    CU_ASSERT_FATAL(d != NULL);
    cfg_config *cfg = d->cfg;
    const cfg_config saved = *cfg;
    cfg->num_coap_listen = 1;
    memset(&cfg->coap_listen[0], 0, sizeof(cfg->coap_listen[0]));
    (void)snprintf(cfg->coap_listen[0].host, sizeof(cfg->coap_listen[0].host), "127.0.0.1");
    cfg->coap_transfer_timeout = 1;
    cfg->coap_max_transfers_per_peer = 2;
    front_coap *s = NULL;
    char err[256];
    CU_ASSERT_FATAL(cm_ok(front_coap_start(&s, d, err, sizeof(err))) && s != NULL);
    const front_coap_counters *k = &d->counters.coap;
    const uint64_t garbage0 = coap_counter(&k->garbage), dup0 = coap_counter(&k->duplicates);
    const uint64_t expired0 = coap_counter(&k->expired);
    coap_client c;
    CU_ASSERT_FATAL(coap_client_open(&c, front_coap_port(s, 0)));

    // Garbage: dropped and counted; a malformed Confirmable message gets a Reset; so does a
    // ping (a Confirmable Empty message).
    coap_client_raw(&c, "\x00\x01", 2);
    CU_ASSERT(!coap_client_recv(&c, 200));
    static const uint8_t tkl9[] = {0x49, 0x01, 0x0a, 0x0b, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    coap_client_raw(&c, tkl9, sizeof(tkl9));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.type == FRONT_COAP_RST && c.m.mid == 0x0a0b);
    CU_ASSERT_EQUAL(coap_counter(&k->garbage), garbage0 + 2);
    static const uint8_t ping[] = {0x40, 0x00, 0x33, 0x44};
    coap_client_raw(&c, ping, sizeof(ping));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.type == FRONT_COAP_RST && c.m.mid == 0x3344);

    // Routes and options.
    coap_post(&c, "/nowhere", -1, 0, 0, CM_SPAN_LIT("x"));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.type == FRONT_COAP_ACK &&
              c.m.code == FRONT_COAP_NOT_FOUND);
    static const uint8_t no_cf[] = {0x40, 0x02, 0x00, 0x09, 0xbb, '.',  'w', 'e', 'l', 'l',  '-',
                                    'k',  'n',  'o',  'w',  'n',  0x03, 'c', 'm', 'p', 0xff, 0x30};
    coap_client_raw(&c, no_cf, sizeof(no_cf));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_UNSUPPORTED_FORMAT);

    // A body announced over max_request_bytes: 4.13 with Size1 = the cap (RFC 7959 §4).
    uint8_t blk[1024];
    memset(blk, 0x5a, sizeof(blk));
    coap_post(&c, "/.well-known/cmp", 0x0e, cfg->max_request_bytes + 1, 0,
              cm_span_make(blk, 1024)); // 0/M/1024
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_TOO_LARGE);
    const front_coap_opt *o = front_coap_find(&c.m, FRONT_COAP_OPT_SIZE1);
    uint32_t v = 0;
    CU_ASSERT(o != NULL && front_coap_opt_uint(o, &v) && v == cfg->max_request_bytes);

    // A body in three blocks (not a PKIMessage): 2.31 Continue twice, then the engine's CMP
    // error message as a 2.04 with Content-Format 259 and the last Block1. The second block
    // sent again with its message ID gets the same answer from the cache.
    const uint16_t mid0 = coap_post(&c, "/.well-known/cmp", 0x0e, 0, 0, cm_span_make(blk, 1024));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_CONTINUE && c.m.mid == mid0);
    const uint16_t mid1 = coap_post(&c, "/.well-known/cmp", 0x1e, 0, 0, cm_span_make(blk, 1024));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_CONTINUE);
    uint8_t first[64];
    const size_t first_len = c.in_len < sizeof(first) ? c.in_len : 0;
    memcpy(first, c.in, first_len);
    c.mid = mid1;
    coap_post(&c, "/.well-known/cmp", 0x1e, 0, 0, cm_span_make(blk, 1024)); // the same again
    CU_ASSERT(coap_client_recv(&c, 1000) && c.in_len == first_len &&
              memcmp(c.in, first, first_len) == 0);
    CU_ASSERT_EQUAL(coap_counter(&k->duplicates), dup0 + 1);
    coap_post(&c, "/.well-known/cmp", 0x26, 0, 0, cm_span_make(blk, 100)); // 2/_/1024
    CU_ASSERT(coap_client_recv(&c, 2000) && c.m.code == FRONT_COAP_CHANGED &&
              c.m.type == FRONT_COAP_ACK && c.m.payload.len > 0 && c.m.payload.p[0] == 0x30);
    o = front_coap_find(&c.m, FRONT_COAP_OPT_CONTENT_FORMAT);
    CU_ASSERT(o != NULL && front_coap_opt_uint(o, &v) && v == FRONT_COAP_CT_PKIXCMP);
    o = front_coap_find(&c.m, FRONT_COAP_OPT_BLOCK1);
    CU_ASSERT(o != NULL && front_coap_opt_uint(o, &v) && v == 0x26);

    // Two transfers open (different Request-Tags); a third is refused with 5.03; abandoned,
    // both expire after coap_transfer_timeout and a late block finds no transfer (4.08).
    coap_post(&c, "/.well-known/cmp", 0x0e, 0, 1, cm_span_make(blk, 1024));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_CONTINUE);
    coap_post(&c, "/.well-known/cmp", 0x0e, 0, 2, cm_span_make(blk, 1024));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_CONTINUE);
    coap_post(&c, "/.well-known/cmp", 0x0e, 0, 3, cm_span_make(blk, 1024));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_UNAVAILABLE);
    CU_ASSERT_EQUAL(coap_counter(&k->transfers), 2);
    for (int i = 0; i < 40 && coap_counter(&k->transfers) > 0; i++) {
        (void)usleep(100 * 1000);
    }
    CU_ASSERT_EQUAL(coap_counter(&k->transfers), 0);
    CU_ASSERT_EQUAL(coap_counter(&k->expired), expired0 + 2);
    coap_post(&c, "/.well-known/cmp", 0x1e, 0, 1, cm_span_make(blk, 1024));
    CU_ASSERT(coap_client_recv(&c, 1000) && c.m.code == FRONT_COAP_INCOMPLETE);

    (void)close(c.fd);
    front_coap_stop(s);
    *cfg = saved;
}

int test_front_coap_add(CU_pSuite s, front_daemon **d)
{
    g_coap_daemon = d;
    if (CU_ADD_TEST(s, test_front_coap_parses_a_message) == NULL ||
        CU_ADD_TEST(s, test_front_coap_writer_round_trips) == NULL ||
        CU_ADD_TEST(s, test_front_coap_rejects_malformed_datagrams) == NULL ||
        CU_ADD_TEST(s, test_front_coap_reassembles_blocks) == NULL ||
        CU_ADD_TEST(s, test_front_coap_server_on_loopback) == NULL) {
        return 1;
    }
    return 0;
}
