// engine/front: CMP over CoAP (RFC 9482), the cm-coap thread.
//
// One thread owns the coap_listen UDP sockets, a peer table, the block-wise transfers and an
// srv_worker of its own whose HSM and store jobs come back through its own cm_cq: it waits in
// poll(2) on the sockets and the queue's eventfd together, so a completion wakes it like a
// datagram does. Everything below runs on that thread; /metrics reads its relaxed counters.
//
// A request arrives in one datagram or as Block1 blocks (RFC 7959 §2.5), reassembled into a
// heap buffer of at most max_request_bytes and then copied once into the request's arena. A
// request that finishes at once is answered in the ACK (piggybacked); one whose jobs go out is
// acknowledged with an Empty ACK first and answered later in a Confirmable message that is
// retransmitted until acknowledged (RFC 7252 §5.2.2, §4.2). A response longer than one block
// goes out as Block2 slices the client asks for one by one (RFC 7959 §2.4, §3.2). Every answer
// to a request is kept per (peer, message ID) so a retransmitted request gets the same answer
// without being processed twice (RFC 7252 §4.5).
//
// Limits: coap_peer_rate datagrams a second per peer address (dropped above it, before any
// parsing), coap_max_transfers_per_peer transfers (Block1 being reassembled, requests in the
// engine, Block2 responses being fetched) per address, FRONT_COAP_MAX_XFERS in all,
// coap_transfer_timeout between the blocks of a transfer, coap_max_requests in the engine at
// once (5.03 with Max-Age above it), FRONT_COAP_MAX_PEERS addresses in the table. HTTP runs on
// the I/O loops' threads: a CoAP flood costs them nothing but its share of the HSM pool, which
// coap_max_requests bounds.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "engine/front/front_coap_internal.h"
#include "engine/front/front_internal.h"

#define FRONT_COAP_MAX_PEERS  1024u
#define FRONT_COAP_HASH       2048u // peer hash buckets (a power of two)
#define FRONT_COAP_MAX_XFERS  256u
#define FRONT_COAP_DEDUP      8u     // answers kept per peer address for retransmissions
#define FRONT_COAP_DGRAM_CAP  1280u  // an answer: a 1024-byte block, its header and options
#define FRONT_COAP_RECV_CAP   65536u // the largest UDP payload, so nothing is cut
#define FRONT_COAP_BATCH      16u    // datagrams per recvmmsg
#define FRONT_COAP_TURN_READS 4u     // recvmmsg calls per socket per turn (then the queue)
#define FRONT_COAP_TICK_MS    50
// How long a Confirmable request whose jobs went out waits for its answer before the Empty ACK
// makes it a separate response (RFC 7252 §5.2.2). Well under ACK_TIMEOUT, so the client does not
// retransmit meanwhile; long enough that a local token's signature (milliseconds) and most
// network HSMs' are piggybacked, which is one datagram less each way and what clients handle
// best (libcoap 4.3.1's client cannot follow a separate response that starts a Block2 transfer
// unless its request was sent in several blocks).
#define FRONT_COAP_ACK_DELAY_MS 500
// RFC 7252 §4.8: ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4; §4.8.2:
// EXCHANGE_LIFETIME 247 s, NON_LIFETIME 145 s (how long a message ID may be reused for).
#define FRONT_COAP_ACK_TIMEOUT_MS       2000
#define FRONT_COAP_MAX_RETRANSMIT       4u
#define FRONT_COAP_EXCHANGE_LIFETIME_MS 247000
#define FRONT_COAP_NON_LIFETIME_MS      145000
#define FRONT_COAP_NONE                 UINT32_MAX
#define FRONT_COAP_CQ_KIND_STOP         14u // the stop request's cm_cq_node.kind

// An answer kept for retransmitted requests of one (port, message ID).
typedef struct front_coap_dedup {
    int64_t expires_ms; // 0: the slot is free
    uint16_t port;
    uint16_t mid;
    uint16_t len; // 0: the request is being processed and has no answer yet
    uint8_t *bytes;
} front_coap_dedup;

// One peer address (IPv4, or IPv6 /128). Thread: the cm-coap thread.
typedef struct front_coap_peer {
    bool used;
    uint8_t fam; // 4 or 6
    uint8_t ip[16];
    uint32_t next;      // hash chain
    uint64_t tokens;    // the datagram budget, in thousandths of a datagram
    int64_t refill_ms;  // when |tokens| was last refilled
    uint32_t num_xfers; // open transfers
    front_coap_dedup dedup[FRONT_COAP_DEDUP];
    uint32_t dedup_next;
} front_coap_peer;

typedef enum front_coap_xstate {
    FRONT_COAP_XF_FREE = 0,
    FRONT_COAP_XF_RECV, // Block1 blocks being reassembled
    FRONT_COAP_XF_BUSY, // the request is in the engine
    FRONT_COAP_XF_SEND, // the response is out: Block2 slices wait, or its CON its ACK
} front_coap_xstate;

// One transfer: a request from its first block to the last block of its response.
// Thread: the cm-coap thread.
typedef struct front_coap_xfer {
    front_coap_xstate state;
    uint32_t peer;
    uint32_t sock; // index of the listening socket it arrived on
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint16_t port;
    uint64_t key;      // the Uri-Path and Request-Tag (FNV-1a): Block1 blocks match by it
    uint64_t path_key; // the Uri-Path alone: Block2 requests match by it (they may omit the tag)
    const srv_ca *ca;
    front_coap_asm body;
    bool block1;   // the request came in Block1 blocks: the answer carries the last Block1
    uint32_t num1; // the last Block1 number
    uint8_t szx1;
    uint8_t szx2; // the response's block size
    srv_request *req;
    uint64_t start_ns;
    int64_t expires_ms;
    // The exchange the response answers: the request that completed the body.
    uint8_t type;
    uint16_t mid;
    uint8_t token[FRONT_COAP_MAX_TOKEN];
    uint8_t token_len;
    bool ack_sent;      // an Empty ACK was sent: the response is a separate one
    int64_t ack_due_ms; // when the Empty ACK goes out unless the answer is ready first (0: none)
    cm_span rsp;        // the response's DER (in the request's arena)
    uint32_t etag;
    bool more; // Block2 slices remain after those sent
    // A Confirmable separate response until it is acknowledged.
    uint8_t *sep;
    size_t sep_len;
    uint16_t sep_mid;
    uint32_t tries;
    int64_t timeout_ms;
    int64_t next_ms; // 0: nothing to retransmit
} front_coap_xfer;

struct front_coap {
    front_daemon *d;
    front_coap_counters *c;
    int fds[CFG_MAX_COAP_LISTEN];
    uint16_t ports[CFG_MAX_COAP_LISTEN];
    size_t num_fds;
    cm_cq cq;
    bool cq_ok;
    srv_worker *worker;
    pthread_t thread;
    bool thread_started;
    cm_cq_node stop_node;
    bool stopping;
    // limits (from the configuration)
    size_t max_body;
    uint32_t max_per_peer, max_requests, rate;
    int64_t timeout_ms;
    // state
    front_coap_peer *peers;
    uint32_t *hash;
    uint32_t num_peers, hand;
    front_coap_xfer *xfers;
    uint32_t num_xfers;
    uint32_t pending; // transfers whose request has jobs out
    uint16_t next_mid;
    uint32_t next_etag;
    char core[1024]; // the /.well-known/core answer (RFC 6690)
    size_t core_len;
    uint8_t *rbuf;
    struct mmsghdr msgs[FRONT_COAP_BATCH];
    struct iovec iov[FRONT_COAP_BATCH];
    struct sockaddr_storage from[FRONT_COAP_BATCH];
    uint8_t out[FRONT_COAP_DGRAM_CAP];
};

static int64_t front_coap_now_ms(void)
{
    return (int64_t)(cm_time_mono_ns() / 1000000u);
}

static void front_coap_count(uint64_t *c)
{
    __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

static void front_coap_gauge(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, v, __ATOMIC_RELAXED);
}

static uint64_t front_coap_fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

// --- peers -----------------------------------------------------------------------------------

// front_coap_addr_key extracts the address (without the port) of |sa| and its port.
static bool front_coap_addr_key(const struct sockaddr_storage *sa, uint8_t *fam, uint8_t ip[16],
                                uint16_t *port)
{
    memset(ip, 0, 16);
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
        memcpy(ip, &a->sin_addr, 4);
        *fam = 4;
        *port = ntohs(a->sin_port);
        return true;
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(ip, &a->sin6_addr, 16);
        *fam = 6;
        *port = ntohs(a->sin6_port);
        return true;
    }
    return false;
}

static uint32_t front_coap_bucket(uint8_t fam, const uint8_t ip[16])
{
    return (uint32_t)front_coap_fnv(0xcbf29ce484222325ull ^ fam, ip, 16) & (FRONT_COAP_HASH - 1);
}

static void front_coap_peer_unlink(front_coap *s, uint32_t i)
{
    front_coap_peer *p = &s->peers[i];
    uint32_t *link = &s->hash[front_coap_bucket(p->fam, p->ip)];
    while (*link != FRONT_COAP_NONE && *link != i) {
        link = &s->peers[*link].next;
    }
    if (*link == i) {
        *link = p->next;
    }
    for (size_t k = 0; k < FRONT_COAP_DEDUP; k++) {
        free(p->dedup[k].bytes);
    }
    memset(p, 0, sizeof(*p));
    s->num_peers--;
}

// front_coap_peer_get finds or adds the peer of |fam|/|ip|. When the table is full, a peer
// without open transfers is evicted (a clock hand, so the search is amortised O(1));
// FRONT_COAP_NONE when every peer has transfers open.
static uint32_t front_coap_peer_get(front_coap *s, uint8_t fam, const uint8_t ip[16], int64_t now)
{
    const uint32_t b = front_coap_bucket(fam, ip);
    for (uint32_t i = s->hash[b]; i != FRONT_COAP_NONE; i = s->peers[i].next) {
        if (s->peers[i].fam == fam && memcmp(s->peers[i].ip, ip, 16) == 0) {
            return i;
        }
    }
    uint32_t slot = FRONT_COAP_NONE;
    if (s->num_peers == FRONT_COAP_MAX_PEERS) {
        for (uint32_t n = 0; n < FRONT_COAP_MAX_PEERS && slot == FRONT_COAP_NONE; n++) {
            const uint32_t i = s->hand;
            s->hand = (s->hand + 1) % FRONT_COAP_MAX_PEERS;
            if (s->peers[i].num_xfers == 0) {
                front_coap_peer_unlink(s, i);
                slot = i;
            }
        }
        if (slot == FRONT_COAP_NONE) {
            return FRONT_COAP_NONE;
        }
    } else {
        for (uint32_t i = 0; i < FRONT_COAP_MAX_PEERS; i++) {
            if (!s->peers[i].used) {
                slot = i;
                break;
            }
        }
    }
    front_coap_peer *p = &s->peers[slot];
    memset(p, 0, sizeof(*p));
    p->used = true;
    p->fam = fam;
    memcpy(p->ip, ip, 16);
    p->tokens = s->rate == UINT32_MAX ? UINT64_MAX : (uint64_t)s->rate * 1000u;
    p->refill_ms = now;
    p->next = s->hash[b];
    s->hash[b] = slot;
    s->num_peers++;
    front_coap_gauge(&s->c->peers, s->num_peers);
    return slot;
}

// front_coap_peer_take takes one datagram from the peer's budget (a token bucket of
// coap_peer_rate a second, as deep as one second of it); false when it is empty.
static bool front_coap_peer_take(front_coap *s, front_coap_peer *p, int64_t now)
{
    if (s->rate == UINT32_MAX) {
        return true;
    }
    const uint64_t cap = (uint64_t)s->rate * 1000u;
    if (now > p->refill_ms) {
        const uint64_t add = (uint64_t)(now - p->refill_ms) * s->rate; // rate/ms in 1/1000s
        p->tokens = cap - p->tokens < add ? cap : p->tokens + add;
        p->refill_ms = now;
    }
    if (p->tokens < 1000u) {
        return false;
    }
    p->tokens -= 1000u;
    return true;
}

static front_coap_dedup *front_coap_dedup_find(front_coap_peer *p, uint16_t port, uint16_t mid,
                                               int64_t now)
{
    for (size_t k = 0; k < FRONT_COAP_DEDUP; k++) {
        front_coap_dedup *e = &p->dedup[k];
        if (e->expires_ms > now && e->port == port && e->mid == mid) {
            return e;
        }
    }
    return NULL;
}

// front_coap_dedup_put keeps |bytes| (may be empty: still being processed) as the answer to
// (port, mid) of |p| for the exchange's lifetime, in the oldest slot.
static void front_coap_dedup_put(front_coap_peer *p, uint16_t port, uint16_t mid, bool con,
                                 const uint8_t *bytes, size_t len, int64_t now)
{
    front_coap_dedup *e = front_coap_dedup_find(p, port, mid, now);
    if (e == NULL) {
        e = &p->dedup[p->dedup_next];
        p->dedup_next = (p->dedup_next + 1) % FRONT_COAP_DEDUP;
    }
    free(e->bytes);
    e->bytes = NULL;
    e->len = 0;
    e->port = port;
    e->mid = mid;
    e->expires_ms = now + (con ? FRONT_COAP_EXCHANGE_LIFETIME_MS : FRONT_COAP_NON_LIFETIME_MS);
    if (len > 0 && len <= UINT16_MAX) {
        e->bytes = malloc(len);
        if (e->bytes != NULL) {
            memcpy(e->bytes, bytes, len);
            e->len = (uint16_t)len;
        }
    }
}

// --- sending ---------------------------------------------------------------------------------

static void front_coap_sendto(front_coap *s, uint32_t sock, const struct sockaddr_storage *to,
                              socklen_t to_len, const uint8_t *p, size_t n)
{
    // A full socket buffer drops the datagram: UDP may, and a Confirmable one is resent.
    (void)sendto(s->fds[sock], p, n, MSG_DONTWAIT, (const struct sockaddr *)to, to_len);
}

// front_coap_request is the request being answered: where it came from and what it was.
typedef struct front_coap_request {
    uint32_t sock;
    const struct sockaddr_storage *from;
    socklen_t from_len;
    uint32_t peer;
    uint16_t port;
    const front_coap_msg *m;
    int64_t now;
} front_coap_request;

// front_coap_reply_begin starts the answer to |r|: an ACK for a Confirmable request
// (piggybacked), a NON with a new message ID for a Non-confirmable one (RFC 7252 §5.2.3).
static void front_coap_reply_begin(front_coap *s, front_coap_writer *w, const front_coap_request *r,
                                   uint8_t code)
{
    const bool con = r->m->type == FRONT_COAP_CON;
    front_coap_writer_init(w, s->out, sizeof(s->out), con ? FRONT_COAP_ACK : FRONT_COAP_NON, code,
                           con ? r->m->mid : s->next_mid++, r->m->token, r->m->token_len);
}

// front_coap_reply_end sends the answer and keeps it for retransmissions of the request.
static void front_coap_reply_end(front_coap *s, front_coap_writer *w, const front_coap_request *r)
{
    size_t len = 0;
    if (!front_coap_writer_finish(w, &len)) {
        return;
    }
    front_coap_sendto(s, r->sock, r->from, r->from_len, s->out, len);
    front_coap_dedup_put(&s->peers[r->peer], r->port, r->m->mid, r->m->type == FRONT_COAP_CON,
                         s->out, len, r->now);
}

// front_coap_error answers |r| with |code| and a diagnostic payload (RFC 7252 §5.5.2),
// counting it under |why| (FRONT_COAP_REFUSED_*). |size1| > 0 adds Size1 (4.13, RFC 7959
// §4); |max_age| > 0 adds Max-Age (5.03, RFC 7252 §5.9.3.4).
static void front_coap_error(front_coap *s, const front_coap_request *r, uint8_t code,
                             const char *text, int why, uint32_t size1, uint32_t max_age)
{
    front_coap_count(&s->c->refused[why]);
    front_coap_writer w;
    front_coap_reply_begin(s, &w, r, code);
    if (max_age > 0) {
        front_coap_put_uint(&w, FRONT_COAP_OPT_MAX_AGE, max_age);
    }
    if (size1 > 0) {
        front_coap_put_uint(&w, FRONT_COAP_OPT_SIZE1, size1);
    }
    front_coap_put_payload(&w, cm_span_make(text, strlen(text)));
    front_coap_reply_end(s, &w, r);
}

// front_coap_reset answers a message we cannot or will not process with a Reset (RFC 7252
// §4.2: a Confirmable message that lacks context or is malformed).
static void front_coap_reset(front_coap *s, uint32_t sock, const struct sockaddr_storage *from,
                             socklen_t from_len, uint16_t mid)
{
    const uint8_t rst[4] = {0x40u | FRONT_COAP_RST << 4, 0, (uint8_t)(mid >> 8), (uint8_t)mid};
    front_coap_sendto(s, sock, from, from_len, rst, sizeof(rst));
}

// --- transfers -------------------------------------------------------------------------------

static void front_coap_xfer_free(front_coap *s, front_coap_xfer *x)
{
    if (x->state == FRONT_COAP_XF_FREE) {
        return;
    }
    front_coap_asm_cleanup(&x->body);
    srv_request_free(x->req);
    free(x->sep);
    if (s->peers[x->peer].used && s->peers[x->peer].num_xfers > 0) {
        s->peers[x->peer].num_xfers--;
    }
    memset(x, 0, sizeof(*x));
    s->num_xfers--;
    front_coap_gauge(&s->c->transfers, s->num_xfers);
}

// front_coap_xfer_find returns the open transfer of |r|'s endpoint with |key| in |state|.
static front_coap_xfer *front_coap_xfer_find(front_coap *s, const front_coap_request *r,
                                             uint64_t key, front_coap_xstate state)
{
    if (s->peers[r->peer].num_xfers == 0) {
        return NULL;
    }
    for (uint32_t i = 0; i < FRONT_COAP_MAX_XFERS; i++) {
        front_coap_xfer *x = &s->xfers[i];
        const uint64_t k = state == FRONT_COAP_XF_SEND ? x->path_key : x->key;
        if (x->state == state && x->peer == r->peer && x->port == r->port && k == key) {
            return x;
        }
    }
    return NULL;
}

// front_coap_xfer_new opens a transfer for |r|, or answers 5.03 (and returns NULL) when the
// peer has coap_max_transfers_per_peer open or the table is full.
static front_coap_xfer *front_coap_xfer_new(front_coap *s, const front_coap_request *r,
                                            uint64_t key, uint64_t path_key, const srv_ca *ca)
{
    front_coap_peer *p = &s->peers[r->peer];
    front_coap_xfer *x = NULL;
    if (p->num_xfers < s->max_per_peer) {
        for (uint32_t i = 0; i < FRONT_COAP_MAX_XFERS && x == NULL; i++) {
            x = s->xfers[i].state == FRONT_COAP_XF_FREE ? &s->xfers[i] : NULL;
        }
    }
    if (x == NULL) {
        front_coap_error(s, r, FRONT_COAP_UNAVAILABLE, "too many transfers open",
                         FRONT_COAP_REFUSED_TRANSFERS, 0, 2);
        return NULL;
    }
    memset(x, 0, sizeof(*x));
    x->state = FRONT_COAP_XF_RECV;
    x->peer = r->peer;
    x->sock = r->sock;
    memcpy(&x->addr, r->from, r->from_len);
    x->addr_len = r->from_len;
    x->port = r->port;
    x->key = key;
    x->path_key = path_key;
    x->ca = ca;
    x->szx2 = FRONT_COAP_MAX_SZX;
    front_coap_asm_zero(&x->body, s->max_body);
    x->expires_ms = r->now + s->timeout_ms;
    p->num_xfers++;
    s->num_xfers++;
    front_coap_gauge(&s->c->transfers, s->num_xfers);
    return x;
}

// front_coap_log writes the request's log line, the HTTP front's with "via=coap".
static void front_coap_log(const front_coap_xfer *x, const srv_summary *sm, uint64_t us)
{
    if (!cm_log_enabled(CM_LOG_INFO)) {
        return;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    const void *ip =
        x->addr.ss_family == AF_INET6
            ? (const void *)&((const struct sockaddr_in6 *)(const void *)&x->addr)->sin6_addr
            : (const void *)&((const struct sockaddr_in *)(const void *)&x->addr)->sin_addr;
    (void)inet_ntop(x->addr.ss_family, ip, host, sizeof(host));
    if (sm->fail_bit < 0) {
        cm_log(CM_LOG_INFO, "peer=%s:%u ca=%s body=%s outcome=ok us=%llu via=coap", host,
               (unsigned)x->port, x->ca->name, front_body_name(sm->body_type),
               (unsigned long long)us);
    } else {
        char reason[4 * sizeof(((cm_why *)NULL)->text)];
        cm_log(CM_LOG_INFO,
               "peer=%s:%u ca=%s body=%s outcome=rejected failinfo=%d error=%s reason=\"%s\" "
               "us=%llu via=coap",
               host, (unsigned)x->port, x->ca->name, front_body_name(sm->body_type), sm->fail_bit,
               cm_result_name(sm->error), cm_log_quote(reason, sizeof(reason), sm->reason),
               (unsigned long long)us);
    }
}

// front_coap_put_slice writes the options and payload of Block2 slice |num| of |x|'s response
// (the whole response when it fits one block) and sets x->more.
static void front_coap_put_slice(front_coap_writer *w, front_coap_xfer *x, uint32_t num,
                                 bool final_block1)
{
    const bool blocks = x->rsp.len > front_coap_block_size(x->szx2);
    cm_span slice = x->rsp;
    x->more = false;
    if (blocks && !front_coap_block2_slice(x->rsp, num, x->szx2, &slice, &x->more)) {
        slice = cm_span_make(x->rsp.p, 0);
    }
    if (blocks) {
        uint8_t etag[4] = {(uint8_t)(x->etag >> 24), (uint8_t)(x->etag >> 16),
                           (uint8_t)(x->etag >> 8), (uint8_t)x->etag};
        front_coap_put_opt(w, FRONT_COAP_OPT_ETAG, etag, sizeof(etag));
    }
    front_coap_put_uint(w, FRONT_COAP_OPT_CONTENT_FORMAT, FRONT_COAP_CT_PKIXCMP);
    if (blocks) {
        const front_coap_block b2 = {.num = num, .more = x->more, .szx = x->szx2};
        front_coap_put_uint(w, FRONT_COAP_OPT_BLOCK2, front_coap_block_value(&b2));
    }
    if (final_block1) {
        // RFC 7959 §2.3: the final response names the last block it acknowledges.
        const front_coap_block b1 = {.num = x->num1, .more = false, .szx = x->szx1};
        front_coap_put_uint(w, FRONT_COAP_OPT_BLOCK1, front_coap_block_value(&b1));
    }
    if (blocks && num == 0) {
        front_coap_put_uint(w, FRONT_COAP_OPT_SIZE2, (uint32_t)x->rsp.len); // RFC 7959 §4
    }
    front_coap_put_payload(w, slice);
}

// front_coap_answer sends the finished CMP response of |x|: piggybacked in the ACK, or as a
// separate response after the Empty ACK (Confirmable, retransmitted until acknowledged), or as
// a NON; its first block when it takes several.
static void front_coap_answer(front_coap *s, front_coap_xfer *x)
{
    srv_summary sm;
    srv_request_summary(x->req, &sm);
    const uint64_t us = (cm_time_mono_ns() - x->start_ns) / 1000u;
    front_coap_log(x, &sm, us);
    front_metrics_count(s->d, &sm, us);
    const int64_t now = front_coap_now_ms();
    x->rsp = srv_request_response(x->req);
    x->etag = s->next_etag++;
    const bool con = x->type == FRONT_COAP_CON;
    const bool separate = con && x->ack_sent;
    const uint8_t type = !con ? FRONT_COAP_NON : separate ? FRONT_COAP_CON : FRONT_COAP_ACK;
    const uint16_t mid = con && !separate ? x->mid : s->next_mid++;
    front_coap_writer w;
    front_coap_writer_init(&w, s->out, sizeof(s->out), type,
                           x->rsp.len > 0 ? FRONT_COAP_CHANGED : FRONT_COAP_INTERNAL_ERROR, mid,
                           x->token, x->token_len);
    if (x->rsp.len > 0) {
        // RFC 9482 §2.3: a CMP response, a CMP error message too, is a 2.04 (Changed) with
        // Content-Format application/pkixcmp.
        front_coap_put_slice(&w, x, 0, x->block1);
    } else {
        front_coap_put_payload(&w, CM_SPAN_LIT("internal error"));
    }
    size_t len = 0;
    if (!front_coap_writer_finish(&w, &len)) {
        front_coap_xfer_free(s, x);
        return;
    }
    front_coap_sendto(s, x->sock, &x->addr, x->addr_len, s->out, len);
    front_coap_peer *p = &s->peers[x->peer];
    if (!separate) {
        // The answer to the request's own message ID, kept for its retransmissions.
        front_coap_dedup_put(p, x->port, x->mid, con, s->out, len, now);
    } else {
        front_coap_count(&s->c->separate);
        x->sep = malloc(len);
        if (x->sep != NULL) {
            memcpy(x->sep, s->out, len);
            x->sep_len = len;
            x->sep_mid = mid;
            uint8_t r = 0;
            (void)RAND_bytes(&r, 1);
            // ACK_TIMEOUT times a random factor in [1, ACK_RANDOM_FACTOR] (§4.2).
            x->timeout_ms = FRONT_COAP_ACK_TIMEOUT_MS + FRONT_COAP_ACK_TIMEOUT_MS / 2 * r / 255;
            x->next_ms = now + x->timeout_ms;
        }
    }
    if (!x->more && x->next_ms == 0) {
        front_coap_xfer_free(s, x);
        return;
    }
    x->state = FRONT_COAP_XF_SEND;
    x->expires_ms = now + s->timeout_ms;
}

// front_coap_start_request hands the complete body of |x| to the engine.
static void front_coap_start_request(front_coap *s, front_coap_xfer *x, const front_coap_request *r,
                                     cm_span body)
{
    if (s->pending >= s->max_requests) {
        front_coap_error(s, r, FRONT_COAP_UNAVAILABLE, "busy", FRONT_COAP_REFUSED_BUSY, 0, 1);
        front_coap_xfer_free(s, x);
        return;
    }
    x->req = srv_request_new(s->worker, x);
    uint8_t *der = x->req != NULL ? srv_request_body(x->req, body.len) : NULL;
    if (der == NULL) {
        front_coap_error(s, r, FRONT_COAP_UNAVAILABLE, "out of memory", FRONT_COAP_REFUSED_BUSY, 0,
                         1);
        front_coap_xfer_free(s, x);
        return;
    }
    memcpy(der, body.p, body.len);
    front_coap_asm_cleanup(&x->body);
    x->state = FRONT_COAP_XF_BUSY;
    x->type = r->m->type;
    x->mid = r->m->mid;
    memcpy(x->token, r->m->token, r->m->token_len);
    x->token_len = r->m->token_len;
    x->start_ns = cm_time_mono_ns();
    __atomic_add_fetch(&s->d->counters.n_requests, 1, __ATOMIC_RELAXED);
    uint8_t peer_key[SRV_PEER_KEY_LEN];
    front_peer_key(peer_key, (const struct sockaddr *)(const void *)&x->addr);
    srv_request_set_peer(x->req, peer_key);
    if (srv_request_start(x->req, x->ca, cm_span_make(der, body.len))) {
        front_coap_answer(s, x);
        return;
    }
    s->pending++;
    front_coap_peer *p = &s->peers[x->peer];
    // No answer yet: a retransmission meanwhile is dropped (NON) or gets the Empty ACK (CON).
    front_coap_dedup_put(p, x->port, x->mid, x->type == FRONT_COAP_CON, NULL, 0, r->now);
    if (x->type == FRONT_COAP_CON) {
        x->ack_due_ms = r->now + FRONT_COAP_ACK_DELAY_MS;
    }
}

// front_coap_empty_ack sends the Empty ACK of |x|'s request (RFC 7252 §5.2.2): it stops the
// client's retransmissions while the HSM signs, and the answer becomes a separate response.
static void front_coap_empty_ack(front_coap *s, front_coap_xfer *x, int64_t now)
{
    const uint8_t ack[4] = {0x40u | FRONT_COAP_ACK << 4, 0, (uint8_t)(x->mid >> 8),
                            (uint8_t)x->mid};
    front_coap_sendto(s, x->sock, &x->addr, x->addr_len, ack, sizeof(ack));
    front_coap_dedup_put(&s->peers[x->peer], x->port, x->mid, true, ack, sizeof(ack), now);
    x->ack_sent = true;
    x->ack_due_ms = 0;
}

// --- requests --------------------------------------------------------------------------------

// front_coap_options_ok answers 4.02 or 5.05 for a critical option this server does not
// process (RFC 7252 §5.4.1), 4.15 for another Content-Format and 4.06 for another Accept.
static bool front_coap_options_ok(front_coap *s, const front_coap_request *r)
{
    const front_coap_msg *m = r->m;
    for (size_t i = 0; i < m->num_opts; i++) {
        const uint16_t n = m->opts[i].num;
        if (n == FRONT_COAP_OPT_PROXY_URI || n == FRONT_COAP_OPT_PROXY_SCHEME) {
            front_coap_error(s, r, FRONT_COAP_PROXYING_NOT_SUPPORTED, "not a proxy",
                             FRONT_COAP_REFUSED_BAD, 0, 0);
            return false;
        }
        if (front_coap_critical(n) && n != FRONT_COAP_OPT_URI_HOST &&
            n != FRONT_COAP_OPT_URI_PORT && n != FRONT_COAP_OPT_URI_PATH &&
            n != FRONT_COAP_OPT_ACCEPT && n != FRONT_COAP_OPT_BLOCK2 &&
            n != FRONT_COAP_OPT_BLOCK1) {
            front_coap_error(s, r, FRONT_COAP_BAD_OPTION, "unsupported critical option",
                             FRONT_COAP_REFUSED_BAD, 0, 0);
            return false;
        }
    }
    uint32_t v = 0;
    const front_coap_opt *cf = front_coap_find(m, FRONT_COAP_OPT_CONTENT_FORMAT);
    if (m->payload.len > 0 &&
        (cf == NULL || !front_coap_opt_uint(cf, &v) || v != FRONT_COAP_CT_PKIXCMP)) {
        front_coap_error(s, r, FRONT_COAP_UNSUPPORTED_FORMAT,
                         "Content-Format must be application/pkixcmp (259)", FRONT_COAP_REFUSED_BAD,
                         0, 0);
        return false;
    }
    const front_coap_opt *acc = front_coap_find(m, FRONT_COAP_OPT_ACCEPT);
    if (acc != NULL && (!front_coap_opt_uint(acc, &v) || v != FRONT_COAP_CT_PKIXCMP)) {
        front_coap_error(s, r, FRONT_COAP_CODE(4, 6), "only application/pkixcmp (259)",
                         FRONT_COAP_REFUSED_BAD, 0, 0);
        return false;
    }
    return true;
}

// front_coap_block2_next serves a Block2 slice after the first (RFC 7959 §2.4) from the
// transfer of |r|'s endpoint and path.
static void front_coap_block2_next(front_coap *s, const front_coap_request *r, uint64_t key,
                                   const front_coap_block *b2)
{
    front_coap_xfer *x = front_coap_xfer_find(s, r, key, FRONT_COAP_XF_SEND);
    cm_span slice;
    bool more = false;
    if (x == NULL || !front_coap_block2_slice(x->rsp, b2->num, x->szx2, &slice, &more) ||
        x->rsp.len <= front_coap_block_size(x->szx2)) {
        front_coap_error(s, r, FRONT_COAP_INCOMPLETE, "no response to continue",
                         FRONT_COAP_REFUSED_INCOMPLETE, 0, 0);
        return;
    }
    if (b2->szx < x->szx2 && b2->num == 0) {
        x->szx2 = b2->szx;
    }
    x->next_ms = 0; // a request for the next block acknowledges the separate response
    front_coap_writer w;
    front_coap_reply_begin(s, &w, r, FRONT_COAP_CHANGED);
    front_coap_put_slice(&w, x, b2->num, false);
    front_coap_reply_end(s, &w, r);
    if (!x->more) {
        front_coap_xfer_free(s, x); // the last block is out
        return;
    }
    x->expires_ms = r->now + s->timeout_ms;
}

// front_coap_block1 adds one Block1 block of |r| to its transfer (RFC 7959 §2.5): 2.31
// Continue while more follow, the request into the engine after the last.
static void front_coap_block1(front_coap *s, const front_coap_request *r, uint64_t key,
                              uint64_t path_key, const srv_ca *ca, const front_coap_block *b1,
                              uint8_t szx2)
{
    front_coap_xfer *x = front_coap_xfer_find(s, r, key, FRONT_COAP_XF_RECV);
    if (x != NULL && b1->num == 0) {
        front_coap_asm_cleanup(&x->body); // a new body from its start: the old one is dropped
    }
    if (x == NULL) {
        if (b1->num != 0) {
            front_coap_error(s, r, FRONT_COAP_INCOMPLETE, "no transfer for this block",
                             FRONT_COAP_REFUSED_INCOMPLETE, 0, 0);
            return;
        }
        x = front_coap_xfer_new(s, r, key, path_key, ca);
        if (x == NULL) {
            return;
        }
    }
    uint32_t size1 = 0;
    const front_coap_opt *o = front_coap_find(r->m, FRONT_COAP_OPT_SIZE1);
    if (o != NULL && !front_coap_opt_uint(o, &size1)) {
        size1 = UINT32_MAX;
    }
    const front_coap_asm_result ar = front_coap_asm_add(&x->body, b1, r->m->payload, size1);
    x->expires_ms = r->now + s->timeout_ms;
    switch (ar) {
    case FRONT_COAP_ASM_MORE:
    case FRONT_COAP_ASM_DUPLICATE: {
        front_coap_writer w;
        front_coap_reply_begin(s, &w, r, FRONT_COAP_CONTINUE);
        const front_coap_block echo = {.num = b1->num, .more = true, .szx = b1->szx};
        front_coap_put_uint(&w, FRONT_COAP_OPT_BLOCK1, front_coap_block_value(&echo));
        front_coap_reply_end(s, &w, r);
        return;
    }
    case FRONT_COAP_ASM_DONE:
        x->block1 = true;
        x->num1 = b1->num;
        x->szx1 = b1->szx;
        x->szx2 = szx2;
        front_coap_start_request(s, x, r, cm_span_make(x->body.buf, x->body.len));
        return;
    case FRONT_COAP_ASM_GAP:
        front_coap_error(s, r, FRONT_COAP_INCOMPLETE, "a block is missing",
                         FRONT_COAP_REFUSED_INCOMPLETE, 0, 0);
        break;
    case FRONT_COAP_ASM_TOO_LARGE:
        front_coap_error(s, r, FRONT_COAP_TOO_LARGE, "request too large",
                         FRONT_COAP_REFUSED_TOO_LARGE, (uint32_t)s->max_body, 0);
        break;
    case FRONT_COAP_ASM_BAD_SIZE:
        front_coap_error(s, r, FRONT_COAP_BAD_REQUEST, "block of the wrong size",
                         FRONT_COAP_REFUSED_BAD, 0, 0);
        break;
    case FRONT_COAP_ASM_NOMEM:
    default:
        front_coap_error(s, r, FRONT_COAP_UNAVAILABLE, "out of memory", FRONT_COAP_REFUSED_BUSY, 0,
                         1);
        break;
    }
    front_coap_xfer_free(s, x);
}

// front_coap_on_request routes one request (RFC 9482 §2.1: POST to /.well-known/cmp,
// /.well-known/cmp/p/NAME, with or without an operation label; GET /.well-known/core lists
// them, RFC 9482 §2.5 and RFC 6690).
static void front_coap_on_request(front_coap *s, const front_coap_request *r)
{
    const front_coap_msg *m = r->m;
    if (!front_coap_options_ok(s, r)) {
        return;
    }
    char path[512];
    size_t path_len = 0;
    http_route route;
    memset(&route, 0, sizeof(route));
    const bool path_ok = front_coap_path_write(m, path, sizeof(path), &path_len);
    if (path_ok && m->code == FRONT_COAP_GET && strcmp(path, "/.well-known/core") == 0) {
        front_coap_writer w;
        front_coap_reply_begin(s, &w, r, FRONT_COAP_CONTENT);
        front_coap_put_uint(&w, FRONT_COAP_OPT_CONTENT_FORMAT, FRONT_COAP_CT_LINK);
        front_coap_put_payload(&w, cm_span_make(s->core, s->core_len));
        front_coap_reply_end(s, &w, r);
        return;
    }
    const srv_ca *ca = NULL;
    if (path_ok && cm_ok(http_route_classify(&route, cm_span_make(path, path_len))) &&
        route.kind == HTTP_ROUTE_CMP) {
        ca = srv_engine_find_ca(s->d->engine, route.name);
    }
    if (ca == NULL) {
        front_coap_error(s, r, FRONT_COAP_NOT_FOUND, "not found", FRONT_COAP_REFUSED_BAD, 0, 0);
        return;
    }
    if (m->code != FRONT_COAP_POST) {
        front_coap_error(s, r, FRONT_COAP_METHOD_NOT_ALLOWED, "POST only", FRONT_COAP_REFUSED_BAD,
                         0, 0);
        return;
    }
    // Blocks of one body share the endpoint, the path and the Request-Tag (RFC 9175 §3.3); the
    // token may change between them.
    const uint64_t path_key =
        front_coap_fnv(0xcbf29ce484222325ull, (const uint8_t *)path, path_len);
    uint64_t key = path_key;
    const front_coap_opt *tag = front_coap_find(m, FRONT_COAP_OPT_REQUEST_TAG);
    if (tag != NULL) {
        key = front_coap_fnv(key ^ 0xff, tag->val.p, tag->val.len);
    }
    front_coap_block b1, b2 = {.szx = FRONT_COAP_MAX_SZX};
    const front_coap_opt *o1 = front_coap_find(m, FRONT_COAP_OPT_BLOCK1);
    const front_coap_opt *o2 = front_coap_find(m, FRONT_COAP_OPT_BLOCK2);
    if ((o1 != NULL && !front_coap_block_parse(o1, &b1)) ||
        (o2 != NULL && !front_coap_block_parse(o2, &b2))) {
        front_coap_error(s, r, FRONT_COAP_BAD_REQUEST, "bad block option", FRONT_COAP_REFUSED_BAD,
                         0, 0);
        return;
    }
    if (o2 != NULL && b2.num > 0) {
        front_coap_block2_next(s, r, path_key, &b2);
        return;
    }
    // Early negotiation (RFC 7959 §2.4): Block2 with NUM 0 in the request asks for a size.
    const uint8_t szx2 = o2 != NULL ? b2.szx : o1 != NULL ? b1.szx : FRONT_COAP_MAX_SZX;
    if (o1 != NULL) {
        front_coap_block1(s, r, key, path_key, ca, &b1, szx2);
        return;
    }
    if (m->payload.len > s->max_body) {
        front_coap_error(s, r, FRONT_COAP_TOO_LARGE, "request too large",
                         FRONT_COAP_REFUSED_TOO_LARGE, (uint32_t)s->max_body, 0);
        return;
    }
    if (m->payload.len == 0) {
        front_coap_error(s, r, FRONT_COAP_BAD_REQUEST, "no CMP message", FRONT_COAP_REFUSED_BAD, 0,
                         0);
        return;
    }
    front_coap_xfer *x = front_coap_xfer_new(s, r, key, path_key, ca);
    if (x != NULL) {
        x->szx2 = szx2;
        front_coap_start_request(s, x, r, m->payload);
    }
}

// front_coap_on_ack_or_reset matches an ACK or RST to the separate response it answers.
static void front_coap_on_ack_or_reset(front_coap *s, const front_coap_request *r)
{
    if (s->peers[r->peer].num_xfers == 0) {
        return;
    }
    for (uint32_t i = 0; i < FRONT_COAP_MAX_XFERS; i++) {
        front_coap_xfer *x = &s->xfers[i];
        if (x->state != FRONT_COAP_XF_SEND || x->peer != r->peer || x->port != r->port ||
            x->next_ms == 0 || x->sep_mid != r->m->mid) {
            continue;
        }
        x->next_ms = 0;
        if (r->m->type == FRONT_COAP_RST || !x->more) {
            front_coap_xfer_free(s, x); // refused, or acknowledged and complete
        }
        return;
    }
}

// front_coap_on_datagram handles one datagram of |len| bytes at |p| from |from|.
static void front_coap_on_datagram(front_coap *s, uint32_t sock,
                                   const struct sockaddr_storage *from, socklen_t from_len,
                                   const uint8_t *p, size_t len, int64_t now)
{
    front_coap_count(&s->c->received);
    uint8_t fam = 0, ip[16];
    uint16_t port = 0;
    if (!front_coap_addr_key(from, &fam, ip, &port)) {
        return;
    }
    const uint32_t pi = front_coap_peer_get(s, fam, ip, now);
    if (pi == FRONT_COAP_NONE) {
        front_coap_count(&s->c->refused[FRONT_COAP_REFUSED_PEERS]);
        return;
    }
    if (!front_coap_peer_take(s, &s->peers[pi], now)) {
        front_coap_count(&s->c->rate_limited);
        return;
    }
    front_coap_msg m;
    const front_coap_parsed pr = front_coap_parse(&m, cm_span_make(p, len));
    if (pr != FRONT_COAP_PARSED_OK) {
        front_coap_count(&s->c->garbage);
        if (pr == FRONT_COAP_PARSED_FORMAT_ERROR && m.type == FRONT_COAP_CON) {
            front_coap_reset(s, sock, from, from_len, m.mid);
        }
        return;
    }
    const front_coap_request r = {.sock = sock,
                                  .from = from,
                                  .from_len = from_len,
                                  .peer = pi,
                                  .port = port,
                                  .m = &m,
                                  .now = now};
    if (m.type == FRONT_COAP_ACK || m.type == FRONT_COAP_RST) {
        front_coap_on_ack_or_reset(s, &r);
        return;
    }
    if (m.code == FRONT_COAP_EMPTY || (m.code >> 5) != 0) {
        // A CoAP ping (a Confirmable Empty message) gets its Reset (RFC 7252 §4.3); a
        // response sent to a server lacks context (§4.2). Both are dropped when NON.
        if (m.type == FRONT_COAP_CON) {
            front_coap_reset(s, sock, from, from_len, m.mid);
        }
        return;
    }
    const front_coap_dedup *e = front_coap_dedup_find(&s->peers[pi], port, m.mid, now);
    if (e != NULL) {
        front_coap_count(&s->c->duplicates);
        if (e->len > 0) {
            front_coap_sendto(s, sock, from, from_len, e->bytes, e->len);
        } else if (m.type == FRONT_COAP_CON) {
            // The client retransmits while its request is in the engine: acknowledge it now.
            for (uint32_t i = 0; i < FRONT_COAP_MAX_XFERS; i++) {
                front_coap_xfer *x = &s->xfers[i];
                if (x->state == FRONT_COAP_XF_BUSY && x->peer == pi && x->port == port &&
                    x->mid == m.mid && !x->ack_sent) {
                    front_coap_empty_ack(s, x, now);
                    break;
                }
            }
        }
        return;
    }
    if (s->stopping) {
        front_coap_error(s, &r, FRONT_COAP_UNAVAILABLE, "stopping", FRONT_COAP_REFUSED_BUSY, 0, 5);
        return;
    }
    front_coap_on_request(s, &r);
}

// --- the thread ------------------------------------------------------------------------------

static void front_coap_on_completions(front_coap *s)
{
    for (cm_cq_node *n = cm_cq_drain(&s->cq), *next = NULL; n != NULL; n = next) {
        next = n->next;
        if (n == &s->stop_node) {
            s->stopping = true;
            continue;
        }
        srv_request *req = srv_worker_on_completion(s->worker, n);
        if (req == NULL) {
            continue;
        }
        s->pending--;
        front_coap_answer(s, srv_request_user(req));
    }
}

// front_coap_tick retransmits separate responses that are due and frees transfers whose
// next block is overdue.
static void front_coap_tick(front_coap *s, int64_t now)
{
    for (uint32_t i = 0; i < FRONT_COAP_MAX_XFERS && s->num_xfers > 0; i++) {
        front_coap_xfer *x = &s->xfers[i];
        if (x->state == FRONT_COAP_XF_BUSY && x->ack_due_ms != 0 && now >= x->ack_due_ms) {
            front_coap_empty_ack(s, x, now);
        }
        if (x->state == FRONT_COAP_XF_SEND && x->next_ms != 0 && now >= x->next_ms) {
            if (x->tries < FRONT_COAP_MAX_RETRANSMIT) {
                front_coap_sendto(s, x->sock, &x->addr, x->addr_len, x->sep, x->sep_len);
                front_coap_count(&s->c->retransmits);
                x->tries++;
                x->timeout_ms *= 2;
                x->next_ms = now + x->timeout_ms;
            } else {
                front_coap_count(&s->c->gave_up);
                x->next_ms = 0;
                if (!x->more) {
                    front_coap_xfer_free(s, x);
                    continue;
                }
            }
        }
        if ((x->state == FRONT_COAP_XF_RECV || x->state == FRONT_COAP_XF_SEND) && x->next_ms == 0 &&
            now >= x->expires_ms) {
            front_coap_count(&s->c->expired);
            front_coap_xfer_free(s, x);
        }
    }
}

static void front_coap_read(front_coap *s, uint32_t sock)
{
    for (unsigned turn = 0; turn < FRONT_COAP_TURN_READS; turn++) {
        for (size_t i = 0; i < FRONT_COAP_BATCH; i++) {
            s->iov[i] = (struct iovec){s->rbuf + i * FRONT_COAP_RECV_CAP, FRONT_COAP_RECV_CAP};
            memset(&s->msgs[i], 0, sizeof(s->msgs[i]));
            s->msgs[i].msg_hdr.msg_iov = &s->iov[i];
            s->msgs[i].msg_hdr.msg_iovlen = 1;
            s->msgs[i].msg_hdr.msg_name = &s->from[i];
            s->msgs[i].msg_hdr.msg_namelen = sizeof(s->from[i]);
        }
        const int n = recvmmsg(s->fds[sock], s->msgs, FRONT_COAP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            return;
        }
        const int64_t now = front_coap_now_ms();
        for (int i = 0; i < n; i++) {
            if ((s->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
                front_coap_count(&s->c->received);
                front_coap_count(&s->c->garbage);
                continue;
            }
            front_coap_on_datagram(s, sock, &s->from[i], s->msgs[i].msg_hdr.msg_namelen,
                                   s->iov[i].iov_base, s->msgs[i].msg_len, now);
        }
        if ((unsigned)n < FRONT_COAP_BATCH) {
            return;
        }
    }
}

static void *front_coap_main(void *arg)
{
    front_coap *s = arg;
    (void)pthread_setname_np(pthread_self(), "cm-coap");
    struct pollfd pfd[CFG_MAX_COAP_LISTEN + 1];
    int64_t next_tick = front_coap_now_ms() + FRONT_COAP_TICK_MS;
    for (;;) {
        if (s->stopping && s->pending == 0) {
            break;
        }
        size_t n = 0;
        pfd[n++] = (struct pollfd){.fd = cm_cq_fd(&s->cq), .events = POLLIN};
        if (!s->stopping) {
            for (size_t i = 0; i < s->num_fds; i++) {
                pfd[n++] = (struct pollfd){.fd = s->fds[i], .events = POLLIN};
            }
        }
        const int timeout = s->num_xfers > 0 ? FRONT_COAP_TICK_MS : -1;
        const int rc = poll(pfd, n, timeout);
        if (rc < 0 && errno != EINTR) {
            cm_log(CM_LOG_ERROR, "certmintd: coap: poll: %s", strerror(errno));
            break;
        }
        if (rc > 0 && (pfd[0].revents & POLLIN) != 0) {
            front_coap_on_completions(s);
        }
        for (size_t i = 1; rc > 0 && i < n; i++) {
            if ((pfd[i].revents & POLLIN) != 0) {
                front_coap_read(s, (uint32_t)(i - 1));
            }
        }
        const int64_t now = front_coap_now_ms();
        if (now >= next_tick) {
            front_coap_tick(s, now);
            next_tick = now + FRONT_COAP_TICK_MS;
        }
    }
    return NULL;
}

// --- start and stop --------------------------------------------------------------------------

static void front_coap_free(front_coap *s)
{
    if (s->xfers != NULL) {
        for (uint32_t i = 0; i < FRONT_COAP_MAX_XFERS; i++) {
            front_coap_xfer_free(s, &s->xfers[i]);
        }
    }
    if (s->peers != NULL) {
        for (uint32_t i = 0; i < FRONT_COAP_MAX_PEERS; i++) {
            if (s->peers[i].used) {
                front_coap_peer_unlink(s, i);
            }
        }
    }
    srv_worker_free(s->worker);
    if (s->cq_ok) {
        cm_cq_cleanup(&s->cq);
    }
    for (size_t i = 0; i < s->num_fds; i++) {
        (void)close(s->fds[i]);
    }
    front_coap_gauge(&s->c->transfers, 0);
    front_coap_gauge(&s->c->peers, 0);
    free(s->rbuf);
    free(s->peers);
    free(s->hash);
    free(s->xfers);
    free(s);
}

static cm_result front_coap_bind(front_coap *s, const cfg_listen *l, char *err, size_t err_cap)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len = 0;
    if (l->ipv6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(l->port);
        (void)inet_pton(AF_INET6, l->host, &a->sin6_addr);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)(void *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(l->port);
        (void)inet_pton(AF_INET, l->host, &a->sin_addr);
        len = sizeof(*a);
    }
    const int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (const struct sockaddr *)&ss, len) != 0) {
        const int e = errno;
        (void)snprintf(err, err_cap, "cannot listen on coap://%s%s%s:%u: %s", l->ipv6 ? "[" : "",
                       l->host, l->ipv6 ? "]" : "", (unsigned)l->port, strerror(e));
        if (fd >= 0) {
            (void)close(fd);
        }
        return cm_result_make(cm_code_from_errno(e));
    }
    // Room for bursts of blocks while the thread signs nothing: it never blocks, but a burst
    // from many peers arrives between two turns.
    const int rcvbuf = 1 << 20;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    uint16_t port = l->port;
    uint8_t fam = 0, ip[16];
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0) {
        (void)front_coap_addr_key(&bound, &fam, ip, &port);
    }
    s->ports[s->num_fds] = port;
    s->fds[s->num_fds++] = fd;
    return cm_result_make(CM_OK);
}

CM_RESULT front_coap_start(front_coap **out, front_daemon *d, char *err, size_t err_cap)
{
    *out = NULL;
    const cfg_config *cfg = d->cfg;
    if (cfg->num_coap_listen == 0) {
        return cm_result_make(CM_OK);
    }
    front_coap *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        (void)snprintf(err, err_cap, "out of memory");
        return cm_result_make(CM_E_NOMEM);
    }
    s->d = d;
    s->c = &d->counters.coap;
    s->max_body = cfg->max_request_bytes;
    s->max_per_peer = cfg->coap_max_transfers_per_peer;
    s->max_requests = cfg->coap_max_requests;
    s->rate = cfg->coap_peer_rate;
    s->timeout_ms = (int64_t)cfg->coap_transfer_timeout * 1000;
    s->peers = calloc(FRONT_COAP_MAX_PEERS, sizeof(*s->peers));
    s->hash = malloc(FRONT_COAP_HASH * sizeof(*s->hash));
    s->xfers = calloc(FRONT_COAP_MAX_XFERS, sizeof(*s->xfers));
    s->rbuf = malloc((size_t)FRONT_COAP_BATCH * FRONT_COAP_RECV_CAP);
    cm_result r = cm_result_make(CM_E_NOMEM);
    if (s->peers == NULL || s->hash == NULL || s->xfers == NULL || s->rbuf == NULL) {
        (void)snprintf(err, err_cap, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < FRONT_COAP_HASH; i++) {
        s->hash[i] = FRONT_COAP_NONE;
    }
    (void)RAND_bytes((uint8_t *)&s->next_mid, sizeof(s->next_mid));
    (void)RAND_bytes((uint8_t *)&s->next_etag, sizeof(s->next_etag));
    // RFC 6690 link format: the default CA's path, then each CA's (RFC 9482 §2.1, §2.5).
    int n = snprintf(s->core, sizeof(s->core), "</.well-known/cmp>;ct=%u", FRONT_COAP_CT_PKIXCMP);
    for (size_t i = 0; i < d->num_cas && n > 0 && (size_t)n < sizeof(s->core); i++) {
        const int k =
            snprintf(s->core + n, sizeof(s->core) - (size_t)n, ",</.well-known/cmp/p/%s>;ct=%u",
                     d->cas[i].name, FRONT_COAP_CT_PKIXCMP);
        if (k < 0 || (size_t)k >= sizeof(s->core) - (size_t)n) {
            s->core[n] = '\0'; // the list stops before an entry that does not fit
            break;
        }
        n += k;
    }
    s->core_len = strlen(s->core);
    for (size_t i = 0; i < cfg->num_coap_listen; i++) {
        r = front_coap_bind(s, &cfg->coap_listen[i], err, err_cap);
        if (!cm_ok(r)) {
            goto fail;
        }
    }
    r = cm_cq_init(&s->cq);
    if (!cm_ok(r)) {
        (void)snprintf(err, err_cap, "coap: cannot make a completion queue: %s", cm_result_name(r));
        goto fail;
    }
    s->cq_ok = true;
    // Made here, then confined to the thread (pthread_create orders the hand-over).
    r = srv_worker_new(&s->worker, d->engine, &s->cq);
    if (!cm_ok(r)) {
        (void)snprintf(err, err_cap, "coap: cannot make a worker: %s", cm_result_name(r));
        goto fail;
    }
    s->stop_node.kind = FRONT_COAP_CQ_KIND_STOP;
    const int e = pthread_create(&s->thread, NULL, front_coap_main, s);
    if (e != 0) {
        (void)snprintf(err, err_cap, "coap: cannot start its thread: %s", strerror(e));
        r = cm_result_make(cm_code_from_errno(e));
        goto fail;
    }
    s->thread_started = true;
    *out = s;
    return cm_result_make(CM_OK);
fail:
    front_coap_free(s);
    return r;
}

uint16_t front_coap_port(const front_coap *s, size_t i)
{
    return s != NULL && i < s->num_fds ? s->ports[i] : 0;
}

void front_coap_stop(front_coap *s)
{
    if (s == NULL) {
        return;
    }
    if (s->thread_started) {
        cm_cq_push(&s->cq, &s->stop_node);
        (void)pthread_join(s->thread, NULL);
    }
    front_coap_free(s);
}

// --- /metrics --------------------------------------------------------------------------------

__attribute__((format(printf, 4, 5))) static void
front_coap_put_text(char *out, size_t cap, size_t *used, const char *fmt, ...)
{
    if (*used >= cap) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(out + *used, cap - *used, fmt, ap);
    va_end(ap);
    *used = n < 0 ? cap : *used + (size_t)n > cap ? cap : *used + (size_t)n;
}

static unsigned long long front_coap_get(const uint64_t *v)
{
    return (unsigned long long)__atomic_load_n(v, __ATOMIC_RELAXED);
}

void front_coap_metrics_write(const front_coap_counters *c, char *out, size_t cap, size_t *used)
{
    front_coap_put_text(
        out, cap, used,
        "# HELP certmint_coap_datagrams_total CoAP datagrams received, by what became of them "
        "before the request was looked at: received (all), garbage (not CoAP: too short, "
        "another version, a format error, or cut), rate_limited (dropped: the address was over "
        "coap_peer_rate), duplicate (a retransmission, answered from the deduplication cache).\n"
        "# TYPE certmint_coap_datagrams_total counter\n"
        "certmint_coap_datagrams_total{kind=\"received\"} %llu\n"
        "certmint_coap_datagrams_total{kind=\"garbage\"} %llu\n"
        "certmint_coap_datagrams_total{kind=\"rate_limited\"} %llu\n"
        "certmint_coap_datagrams_total{kind=\"duplicate\"} %llu\n",
        front_coap_get(&c->received), front_coap_get(&c->garbage), front_coap_get(&c->rate_limited),
        front_coap_get(&c->duplicates));
    front_coap_put_text(
        out, cap, used,
        "# HELP certmint_coap_refused_total CoAP requests refused before the CMP engine, by "
        "reason: too_large (4.13, max_request_bytes), transfers (5.03, "
        "coap_max_transfers_per_peer), busy (5.03, coap_max_requests), peers (dropped: the peer "
        "table is full of peers with transfers), incomplete (4.08: a block is missing), bad "
        "(another 4.xx or 5.05: not a CMP request).\n"
        "# TYPE certmint_coap_refused_total counter\n"
        "certmint_coap_refused_total{reason=\"too_large\"} %llu\n"
        "certmint_coap_refused_total{reason=\"transfers\"} %llu\n"
        "certmint_coap_refused_total{reason=\"busy\"} %llu\n"
        "certmint_coap_refused_total{reason=\"peers\"} %llu\n"
        "certmint_coap_refused_total{reason=\"incomplete\"} %llu\n"
        "certmint_coap_refused_total{reason=\"bad\"} %llu\n",
        front_coap_get(&c->refused[0]), front_coap_get(&c->refused[1]),
        front_coap_get(&c->refused[2]), front_coap_get(&c->refused[3]),
        front_coap_get(&c->refused[4]), front_coap_get(&c->refused[5]));
    front_coap_put_text(
        out, cap, used,
        "# HELP certmint_coap_transfers_expired_total Block-wise transfers freed because their "
        "next block did not come within coap_transfer_timeout.\n"
        "# TYPE certmint_coap_transfers_expired_total counter\n"
        "certmint_coap_transfers_expired_total %llu\n"
        "# HELP certmint_coap_separate_responses_total CMP responses sent as separate responses "
        "(an Empty ACK first, while the HSM signed).\n"
        "# TYPE certmint_coap_separate_responses_total counter\n"
        "certmint_coap_separate_responses_total %llu\n"
        "# HELP certmint_coap_retransmissions_total Confirmable separate responses sent again "
        "because their ACK did not come; gave_up: never acknowledged.\n"
        "# TYPE certmint_coap_retransmissions_total counter\n"
        "certmint_coap_retransmissions_total{kind=\"resent\"} %llu\n"
        "certmint_coap_retransmissions_total{kind=\"gave_up\"} %llu\n"
        "# HELP certmint_coap_transfers_open CoAP transfers open now (blocks being received, "
        "requests in the engine, responses being fetched).\n"
        "# TYPE certmint_coap_transfers_open gauge\n"
        "certmint_coap_transfers_open %llu\n"
        "# HELP certmint_coap_peers Peer addresses in the CoAP peer table now.\n"
        "# TYPE certmint_coap_peers gauge\n"
        "certmint_coap_peers %llu\n",
        front_coap_get(&c->expired), front_coap_get(&c->separate), front_coap_get(&c->retransmits),
        front_coap_get(&c->gave_up), front_coap_get(&c->transfers), front_coap_get(&c->peers));
}
