// certmint-bench --coap: CMP over CoAP (RFC 9482) for any CoAP CMP server. Each connection is
// a connected UDP socket with one transaction in flight: the PKIMessage goes out as a
// Confirmable POST (Content-Format 259), in Block1 blocks when it exceeds --coap-block (RFC
// 7959 §2.5); the answer comes piggybacked in the ACK or, after an Empty ACK, as a separate
// Confirmable response that is acknowledged (RFC 7252 §5.2.2); a Block2 answer is fetched
// slice by slice (RFC 7959 §2.4). A request whose ACK does not come is retransmitted (2 s,
// doubled, 4 times: RFC 7252 §4.2). The small codec here is the bench's own (bench/ may not
// use engine/front's internals).
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "bench/certmint_bench.h"

#define BENCH_COAP_CON      0u
#define BENCH_COAP_ACK      2u
#define BENCH_COAP_RST      3u
#define BENCH_COAP_POST     2u
#define BENCH_COAP_CHANGED  ((2u << 5) | 4u)
#define BENCH_COAP_CONTINUE ((2u << 5) | 31u)
#define BENCH_COAP_CT       259u // application/pkixcmp (RFC 9482)

typedef struct bench_coap_msg {
    uint8_t type, code, tkl;
    uint16_t mid;
    uint8_t token[8];
    bool has_block1, has_block2, has_cf;
    uint32_t block2, cf;
    cm_span payload;
} bench_coap_msg;

static uint32_t bench_coap_uint(const uint8_t *p, size_t n)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n && i < 4; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

// bench_coap_parse reads the fields the client needs (RFC 7252 §3); false when malformed.
static bool bench_coap_parse(bench_coap_msg *m, const uint8_t *p, size_t n)
{
    memset(m, 0, sizeof(*m));
    if (n < 4 || (p[0] >> 6) != 1 || (p[0] & 15u) > 8 || n < 4u + (p[0] & 15u)) {
        return false;
    }
    m->type = (p[0] >> 4) & 3u;
    m->tkl = p[0] & 15u;
    m->code = p[1];
    m->mid = (uint16_t)(p[2] << 8 | p[3]);
    memcpy(m->token, p + 4, m->tkl);
    size_t i = 4u + m->tkl;
    uint32_t num = 0;
    while (i < n) {
        if (p[i] == 0xff) {
            m->payload = cm_span_make(p + i + 1, n - i - 1);
            return m->payload.len > 0;
        }
        uint32_t d = p[i] >> 4, l = p[i] & 15u;
        i++;
        uint32_t *f[2] = {&d, &l};
        for (int k = 0; k < 2; k++) {
            if (*f[k] == 13 && i < n) {
                *f[k] = 13u + p[i++];
            } else if (*f[k] == 14 && i + 1 < n) {
                *f[k] = 269u + (uint32_t)(p[i] << 8 | p[i + 1]);
                i += 2;
            } else if (*f[k] >= 13) {
                return false;
            }
        }
        num += d;
        if (l > n - i) {
            return false;
        }
        if (num == 12) {
            m->has_cf = true;
            m->cf = bench_coap_uint(p + i, l);
        } else if (num == 23) {
            m->has_block2 = true;
            m->block2 = bench_coap_uint(p + i, l);
        } else if (num == 27) {
            m->has_block1 = true;
        }
        i += l;
    }
    return true;
}

// bench_coap_opt appends option |num| (after |*last|) with |len| bytes of |val| at |*off|.
static void bench_coap_opt(uint8_t *buf, size_t *off, uint16_t *last, uint16_t num,
                           const uint8_t *val, size_t len)
{
    const uint32_t d = (uint32_t)(num - *last);
    uint8_t *h = buf + (*off)++;
    uint8_t dn = (uint8_t)d, ln = (uint8_t)len;
    if (d >= 13) {
        dn = 13;
        buf[(*off)++] = (uint8_t)(d - 13); // every option here is below 269
    }
    if (len >= 13) {
        ln = 13;
        buf[(*off)++] = (uint8_t)(len - 13);
    }
    *h = (uint8_t)(dn << 4 | ln);
    memcpy(buf + *off, val, len);
    *off += len;
    *last = num;
}

static void bench_coap_opt_uint(uint8_t *buf, size_t *off, uint16_t *last, uint16_t num, uint32_t v)
{
    uint8_t b[4];
    size_t n = 0;
    for (int s = 24; s >= 0; s -= 8) {
        if (n > 0 || (uint8_t)(v >> s) != 0) {
            b[n++] = (uint8_t)(v >> s);
        }
    }
    bench_coap_opt(buf, off, last, num, b, n);
}

// bench_coap_send writes and sends the next request of |c|'s transfer: Block1 |c->coap_num1|
// while the body is going out, then Block2 |c->coap_num2| requests for the answer.
static void bench_coap_send(bench_run *run, bench_conn *c, bool block2)
{
    const bench_opts *o = run->o;
    uint8_t *b = c->coap_out;
    size_t n = 0;
    uint16_t last = 0;
    c->coap_mid++;
    b[n++] = 0x40u | 4u; // version 1, CON, a 4-byte token
    b[n++] = BENCH_COAP_POST;
    b[n++] = (uint8_t)(c->coap_mid >> 8);
    b[n++] = (uint8_t)c->coap_mid;
    const uint32_t tok = (uint32_t)c->req;
    b[n++] = (uint8_t)(tok >> 24);
    b[n++] = (uint8_t)(tok >> 16);
    b[n++] = (uint8_t)(tok >> 8);
    b[n++] = (uint8_t)tok;
    for (const char *p = o->path; *p != '\0';) {
        while (*p == '/') {
            p++;
        }
        const char *e = strchr(p, '/');
        const size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        if (len > 0 && len < 200) {
            bench_coap_opt(b, &n, &last, 11, (const uint8_t *)p, len); // Uri-Path
        }
        p += len;
    }
    const size_t bs = (size_t)16 << o->coap_szx;
    cm_span payload = {NULL, 0};
    if (!block2) {
        bench_coap_opt_uint(b, &n, &last, 12, BENCH_COAP_CT); // Content-Format
        const size_t off = (size_t)c->coap_num1 * bs;
        const size_t left = c->coap_body.len - off;
        payload = cm_span_make(c->coap_body.p + off, left < bs ? left : bs);
        if (c->coap_body.len > bs) {
            const bool more = off + payload.len < c->coap_body.len;
            bench_coap_opt_uint(b, &n, &last, 27,
                                c->coap_num1 << 4 | (more ? 8u : 0u) | o->coap_szx); // Block1
        }
    } else {
        bench_coap_opt_uint(b, &n, &last, 23, c->coap_num2 << 4 | o->coap_szx); // Block2
    }
    if (payload.len > 0 && n + 1 + payload.len <= sizeof(c->coap_out)) {
        b[n++] = 0xff;
        memcpy(b + n, payload.p, payload.len);
        n += payload.len;
    }
    c->coap_out_len = n;
    c->coap_acked = false;
    c->coap_tries = 0;
    c->coap_rto = 2000000000u;
    c->coap_sent_at = bench_now();
    (void)send(c->fd, b, n, MSG_DONTWAIT); // a lost datagram is retransmitted by the tick
}

bool bench_coap_open(bench_run *run, bench_conn *c)
{
    c->fd = socket(run->ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return false;
    }
    c->gen++;
    if (!bench_bind_source(run->o, c->fd, run->ai->ai_family)) {
        bench_conn_close(c);
        return false;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - run->conns);
    if (connect(c->fd, run->ai->ai_addr, run->ai->ai_addrlen) != 0 ||
        epoll_ctl(run->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        bench_conn_close(c);
        return false;
    }
    if (c->coap_mid == 0) {
        (void)RAND_bytes((uint8_t *)&c->coap_mid, sizeof(c->coap_mid));
    }
    c->connecting = false;
    c->used = 0;
    run->reconnects++;
    return true;
}

void bench_coap_start(bench_run *run, bench_conn *c)
{
    // The prepared messages are HTTP requests: the PKIMessage is their body.
    const uint8_t *end = c->out + c->out_len;
    const uint8_t *body = c->out;
    for (; body + 4 <= end && memcmp(body, "\r\n\r\n", 4) != 0; body++) {
    }
    body = body + 4 <= end ? body + 4 : end;
    c->coap_body = cm_span_make(body, (size_t)(end - body));
    c->coap_num1 = 0;
    c->coap_num2 = 0;
    c->coap_rsp_len = 0;
    c->out_off = c->out_len; // nothing for the TCP path to send
    bench_coap_send(run, c, false);
}

// bench_coap_answer adds one answer (2.04 with its payload) to the response; the next Block2
// slice is asked for, or the whole response goes to bench_on_response.
static void bench_coap_answer(bench_run *run, bench_conn *c, const bench_coap_msg *m)
{
    if (m->code != BENCH_COAP_CHANGED) {
        bench_http_rsp h = {.status = 400 + (m->code & 31u), .minor = 1};
        bench_on_response(run, c, &h); // fails as http_status
        return;
    }
    if (c->coap_rsp_cap - c->coap_rsp_len < m->payload.len) {
        const size_t cap = (c->coap_rsp_cap + m->payload.len) * 2;
        uint8_t *p = realloc(c->coap_rsp, cap);
        if (p == NULL) {
            bench_die("out of memory");
        }
        c->coap_rsp = p;
        c->coap_rsp_cap = cap;
    }
    if (m->payload.len > 0) {
        memcpy(c->coap_rsp + c->coap_rsp_len, m->payload.p, m->payload.len);
    }
    c->coap_rsp_len += m->payload.len;
    if (m->has_block2 && (m->block2 & 8u) != 0) {
        c->coap_num2 = (m->block2 >> 4) + 1;
        bench_coap_send(run, c, true);
        return;
    }
    bench_http_rsp h = {.status = 200,
                        .minor = 1,
                        .content_type = m->has_cf && m->cf == BENCH_COAP_CT
                                            ? CM_SPAN_LIT("application/pkixcmp")
                                            : CM_SPAN_LIT("application/octet-stream"),
                        .body = cm_span_make(c->coap_rsp, c->coap_rsp_len),
                        .keep_alive = true};
    c->coap_out_len = 0;
    bench_on_response(run, c, &h);
}

static void bench_coap_on_msg(bench_run *run, bench_conn *c, const bench_coap_msg *m)
{
    const uint32_t tok = (uint32_t)c->req;
    const bool ours = m->tkl == 4 && bench_coap_uint(m->token, 4) == tok;
    if (m->type == BENCH_COAP_CON) {
        // A separate response: acknowledge it (again, if it is a retransmission).
        const uint8_t ack[4] = {0x40u | BENCH_COAP_ACK << 4, 0, (uint8_t)(m->mid >> 8),
                                (uint8_t)m->mid};
        (void)send(c->fd, ack, sizeof(ack), MSG_DONTWAIT);
        if (!c->busy || !ours || c->coap_out_len == 0 || m->mid == c->coap_sep_mid) {
            return;
        }
        c->coap_sep_mid = m->mid;
        bench_coap_answer(run, c, m);
        return;
    }
    if (!c->busy || c->coap_out_len == 0 || m->mid != c->coap_mid) {
        return; // a late duplicate
    }
    if (m->type == BENCH_COAP_RST) {
        bench_http_rsp h = {.status = 500, .minor = 1};
        bench_on_response(run, c, &h);
        return;
    }
    if (m->type != BENCH_COAP_ACK) {
        return;
    }
    if (m->code == 0) {
        c->coap_acked = true; // the answer follows separately
        return;
    }
    if (!ours) {
        return;
    }
    if (m->code == BENCH_COAP_CONTINUE && m->has_block1) {
        c->coap_num1++;
        bench_coap_send(run, c, false);
        return;
    }
    c->coap_acked = true;
    bench_coap_answer(run, c, m);
}

void bench_coap_on_readable(bench_run *run, bench_conn *c)
{
    uint8_t buf[2048];
    for (int i = 0; i < 64 && c->fd >= 0; i++) {
        const ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        bench_coap_msg m;
        if (bench_coap_parse(&m, buf, (size_t)n)) {
            bench_coap_on_msg(run, c, &m);
        }
    }
}

void bench_coap_tick(bench_run *run, bench_conn *c, uint64_t now)
{
    (void)run;
    if (c->coap_out_len == 0 || c->coap_acked || now - c->coap_sent_at < c->coap_rto) {
        return;
    }
    if (c->coap_tries == 4) {
        return; // the transaction's --timeout ends it
    }
    c->coap_tries++;
    c->coap_rto *= 2;
    c->coap_sent_at = now;
    (void)send(c->fd, c->coap_out, c->coap_out_len, MSG_DONTWAIT);
}

void bench_coap_cleanup(bench_conn *c)
{
    free(c->coap_rsp);
    c->coap_rsp = NULL;
    c->coap_rsp_len = c->coap_rsp_cap = 0;
}
