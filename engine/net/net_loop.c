// The io_uring loops (STYLE.md §2.7): one ring, buffer ring, listener set and connection table
// per thread; cookies {op:8 | gen:24 | slot:32} in user_data; one submit-and-wait per turn.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/net/net.h"
#include "engine/net/net_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define NET_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define NET_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define NET_POISON(p, n)   ((void)(p), (void)(n))
#define NET_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define NET_MAX_LISTEN       8
#define NET_BGID             0
#define NET_TICK_MS          250
#define NET_ACCEPT_PAUSE_MS  100  // back-off after EMFILE/ENFILE instead of spinning
#define NET_WARN_INTERVAL_MS 1000 // at most one line per kind and loop per interval
#define NET_FD_SLACK         64u  // refused sockets between their accept and their close
#define NET_GEN_MASK         0xffffffu
#define NET_SLOT_LISTENER0   0xffff0000u // accept cookies use this + listener index
#define NET_SLOT_CQ          0xfffffffeu
#define NET_TLS_PLAIN_CAP    16384u // one TLS record's plaintext at most
#define NET_TLS_OUT_KEEP     65536u // a larger ciphertext buffer is freed once sent

enum {
    NET_OP_ACCEPT = 1,
    NET_OP_RECV = 2,
    NET_OP_SEND = 3,
    NET_OP_CQ = 4,
    NET_OP_CANCEL = 5,
    NET_OP_COUNT = 6,
};

// Why net closes a connection; the transport reasons are logged when a request was in progress.
typedef enum net_why {
    NET_WHY_APP = 0,        // the application asked (NET_CLOSE, net_conn_close, close_after)
    NET_WHY_EOF = 1,        // the peer finished sending and nothing was in progress
    NET_WHY_RECV_ERROR = 2, // recv failed (reset, ...)
    NET_WHY_SEND_ERROR = 3, // send failed: the answer is lost
    NET_WHY_STOP = 4,       // graceful stop, idle connection
    NET_WHY_LINGER = 5,     // a lingering close ended
    NET_WHY_TLS = 6,        // TLS failed (handshake, a bad record) or its handshake timed out
} net_why;

// Rate-limited warnings (one line per kind per NET_WARN_INTERVAL_MS and loop).
enum {
    NET_WARN_CLOSED_BUSY = 0,
    NET_WARN_REJECT = 1,
    NET_WARN_ACCEPT = 2,
    NET_WARN_TLS = 3,
    NET_WARN_KINDS = 4,
};

// net_conn: one slot of a loop's connection table. Thread: loop-confined.
typedef struct net_conn {
    int fd;
    uint32_t gen;      // bumped when the slot is freed
    uint32_t inflight; // operations in the ring for this connection
    bool used;
    bool admin;       // accepted on an admin listener (an admin slot)
    bool recv_armed;  // a multishot recv is in the ring
    bool needs_rearm; // recv stopped on -ENOBUFS; re-arm after buffers return
    bool closing;     // shut down; freed when inflight reaches 0
    bool peer_eof;    // the peer finished sending; the recv is not re-armed
    bool write_done;  // the last answer (close_after) was sent: no more sends
    bool lingering;   // writing shut down; input read and discarded until linger ends
    bool send_active;
    bool close_after_send;
    bool peer_counted; // holds a count in the loop's peer table
    void *app_state;
    const uint8_t *send_p;
    size_t send_len;
    size_t send_off;
    uint64_t deadline_ms; // 0: none; the application's, or the linger end when lingering
    uint32_t drained;     // input discarded since the last answer was queued (saturating)
    uint32_t next_free;
    uint8_t peer[16]; // peer key (net_peer_key)
    // TLS (accepted on a TLS listener; NULL tls: plain). The ring sends ciphertext from
    // tls_out (send_p/len/off then describe that wire send, wire_active while it is in the
    // ring); the application's send (send_active) is done once every byte taken from the
    // records up to tls_app_mark is sent.
    net_tls_conn *tls;
    bool wire_active;
    bool tls_open;        // the handshake finished (on_data may be called)
    bool tls_counted;     // its handshake outcome is counted
    bool tls_fail_close;  // TLS failed: close once the pending alert is sent
    bool tls_peer_closed; // the peer sent close_notify
    uint64_t tls_hs_deadline_ms;
    uint64_t tls_hs_ns;
    uint8_t *tls_out;
    size_t tls_out_cap;
    uint64_t tls_taken, tls_acked, tls_app_mark; // ciphertext bytes
} net_conn;

// net_peer: connections per peer key on one loop (open addressing, linear probing).
// count 0 marks an empty entry. Thread: loop-confined.
typedef struct net_peer {
    uint8_t key[16];
    uint32_t count;
} net_peer;

struct net_loop {
    net_server *server;
    uint32_t index;
    pthread_t thread;
    struct io_uring ring;
    bool ring_ok;
    cm_cq cq;
    int listen_fd[NET_MAX_LISTEN];
    size_t num_listen; // main and admin listeners; admin ones from num_main_listen on
    size_t num_main_listen;
    bool accept_armed[NET_MAX_LISTEN];
    uint64_t accept_resume_ms[NET_MAX_LISTEN]; // 0, or when a paused accept is re-armed
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    uint32_t num_bufs;
    uint32_t buf_size;
    net_conn *conns;
    uint32_t max_conns;    // main slots [0, max_conns)
    uint32_t num_slots;    // main and admin slots: admin ones are [max_conns, num_slots)
    uint32_t free_head[2]; // free lists (main, admin) through next_free; UINT32_MAX when empty
    uint32_t open;         // written by the loop, read by net_server_stats (relaxed atomics)
    uint32_t incoming;     // connections other loops handed to this one, not yet taken (atomic)
    int ready;             // atomic: set (release) once the loop is set up; hand-offs need it
    uint32_t open_admin;   // likewise
    net_peer *peers;
    uint32_t peer_mask; // peers has peer_mask + 1 entries (a power of two)
    uint64_t peer_seed;
    void *app_ctx;
    bool stopping;
    bool any_needs_rearm;
    uint64_t last_tick_ms;
    uint64_t warn_next_ms[NET_WARN_KINDS];
    uint32_t warn_suppressed[NET_WARN_KINDS];
    bool dropped_logged;
    // Counters read by net_server_stats from other threads (relaxed atomics).
    uint64_t st_accepted, st_rejected, st_timeouts, st_rejected_peer, st_rejected_admin;
    uint64_t st_emfile, st_cq_overflow, st_cq_dropped, st_rearms, st_closed_busy, st_eof_busy;
    uint64_t st_lingered, st_handed_off;
    uint64_t st_tls_full, st_tls_resumed, st_tls_failed, st_tls_timeouts, st_tls_ns, tls_open;
    uint8_t *tls_plain; // NET_TLS_PLAIN_CAP bytes: decrypted input during on_data
    cm_result start_result;
    bool cq_rang;                   // the cq's eventfd fired this turn: its drain reads the counter
    unsigned turn_ready, turn_seen; // CQEs of this turn, and those dispatched (net_loop_busy)
    cm_log_buf log_buf;             // this loop's log lines, written once per turn
};

struct net_server {
    net_server_config cfg;
    const net_app *app;
    void *app_arg;
    net_loop *loops;
    uint32_t num_loops;
    uint16_t ports[NET_MAX_LISTEN]; // main listeners, then admin ones
    uint8_t *reject;                // copy of cfg.reject_response
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t started; // guarded_by(mu): loops that finished start (ok or not)
    int stop;         // atomic
};

static uint64_t net_now_ms(void)
{
    return cm_time_mono_ns() / 1000000u;
}

static uint64_t net_cookie(uint32_t op, uint32_t gen, uint32_t slot)
{
    return ((uint64_t)op << 56) | ((uint64_t)(gen & NET_GEN_MASK) << 32) | slot;
}

static void net_count(uint64_t *counter)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

// net_warn_gate decides whether a warning of |kind| may be logged now; when it may,
// |*out_suppressed| is how many were held back since the last one.
static bool net_warn_gate(net_loop *l, int kind, uint32_t *out_suppressed)
{
    const uint64_t now = net_now_ms();
    if (now < l->warn_next_ms[kind]) {
        l->warn_suppressed[kind]++;
        return false;
    }
    l->warn_next_ms[kind] = now + NET_WARN_INTERVAL_MS;
    *out_suppressed = l->warn_suppressed[kind];
    l->warn_suppressed[kind] = 0;
    return true;
}

// net_more_text formats ", N more since the last line" into |buf| (empty for 0).
static const char *net_more_text(char *buf, size_t cap, uint32_t suppressed)
{
    buf[0] = '\0';
    if (suppressed > 0) {
        (void)snprintf(buf, cap, " (%u more since the last line)", suppressed);
    }
    return buf;
}

// net_get_sqe never fails: when the SQ is full it submits and retries.
static struct io_uring_sqe *net_get_sqe(net_loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    while (sqe == NULL) {
        (void)io_uring_submit(&l->ring);
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

// --- buffers --------------------------------------------------------------------------------

static cm_result net_bufring_setup(net_loop *l)
{
    const size_t ring_bytes = (size_t)l->num_bufs * sizeof(struct io_uring_buf);
    const long page = sysconf(_SC_PAGESIZE);
    void *mem = NULL;
    CM_ENSURE(posix_memalign(&mem, (size_t)(page > 0 ? page : 4096), ring_bytes) == 0, CM_E_NOMEM);
    memset(mem, 0, ring_bytes);
    l->br = mem;
    l->bufs = malloc((size_t)l->num_bufs * l->buf_size);
    CM_ENSURE(l->bufs != NULL, CM_E_NOMEM);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)l->br;
    reg.ring_entries = l->num_bufs;
    reg.bgid = NET_BGID;
    CM_TRY_SYS(io_uring_register_buf_ring(&l->ring, &reg, 0));
    io_uring_buf_ring_init(l->br);
    const int mask = io_uring_buf_ring_mask(l->num_bufs);
    for (uint32_t i = 0; i < l->num_bufs; i++) {
        uint8_t *b = l->bufs + (size_t)i * l->buf_size;
        io_uring_buf_ring_add(l->br, b, l->buf_size, (unsigned short)i, mask, (int)i);
        NET_POISON(b, l->buf_size);
    }
    io_uring_buf_ring_advance(l->br, (int)l->num_bufs);
    return cm_result_make(CM_OK);
}

static void net_buf_recycle(net_loop *l, uint32_t bid)
{
    uint8_t *b = l->bufs + (size_t)bid * l->buf_size;
    NET_POISON(b, l->buf_size);
    io_uring_buf_ring_add(l->br, b, l->buf_size, (unsigned short)bid,
                          io_uring_buf_ring_mask(l->num_bufs), 0);
    io_uring_buf_ring_advance(l->br, 1);
}

// --- peers ----------------------------------------------------------------------------------

// net_peer_key maps a peer address to the key its connections are counted under: an IPv4
// address as its IPv4-mapped IPv6 form, an IPv6 address as its /64 prefix (the rest zero),
// anything else as all zeros.
static void net_peer_key(uint8_t out[16], const struct sockaddr_storage *a)
{
    memset(out, 0, 16);
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &v4->sin_addr, 4);
    } else if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            memcpy(out, &v6->sin6_addr, 16);
        } else {
            memcpy(out, &v6->sin6_addr, 8);
        }
    }
}

// net_peer_hash mixes the key with the loop's random seed, so that addresses chosen to collide
// in the table cannot be computed in advance.
static uint32_t net_peer_hash(const net_loop *l, const uint8_t key[16])
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    uint64_t h = l->peer_seed;
    h = (h ^ a) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    h = (h ^ b) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

// net_peer_find returns the entry holding |key|, or the empty entry where it would go. The
// table has at least twice as many entries as main slots, so an empty entry always exists.
static uint32_t net_peer_find(const net_loop *l, const uint8_t key[16])
{
    uint32_t i = net_peer_hash(l, key) & l->peer_mask;
    while (l->peers[i].count != 0 && memcmp(l->peers[i].key, key, 16) != 0) {
        i = (i + 1) & l->peer_mask;
    }
    return i;
}

// net_peer_release drops one connection of |key|; an entry reaching 0 is deleted by shifting
// later entries of its probe run back (no tombstones, so probe runs stay short).
static void net_peer_release(net_loop *l, const uint8_t key[16])
{
    uint32_t i = net_peer_find(l, key);
    CM_CHECK(l->peers[i].count > 0);
    if (--l->peers[i].count > 0) {
        return;
    }
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & l->peer_mask;
        if (l->peers[j].count == 0) {
            break;
        }
        const uint32_t home = net_peer_hash(l, l->peers[j].key) & l->peer_mask;
        // Entry j may move to the hole at i unless its home lies cyclically in (i, j].
        const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            l->peers[i] = l->peers[j];
            l->peers[j].count = 0;
            i = j;
        }
    }
}

static void net_peer_text(const uint8_t key[16], char *out, size_t cap)
{
    static const uint8_t k_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, k_mapped, 12) == 0) {
        (void)inet_ntop(AF_INET, key + 12, out, (socklen_t)cap);
        return;
    }
    if (inet_ntop(AF_INET6, key, out, (socklen_t)cap) != NULL) {
        const size_t n = strlen(out);
        (void)snprintf(out + n, cap - n, "/64");
    }
}

// --- arming ---------------------------------------------------------------------------------

static void net_arm_accept(net_loop *l, size_t i)
{
    struct io_uring_sqe *sqe = net_get_sqe(l);
    io_uring_prep_multishot_accept(sqe, l->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_ACCEPT, 0, NET_SLOT_LISTENER0 + (uint32_t)i));
    l->accept_armed[i] = true;
    l->accept_resume_ms[i] = 0;
}

static void net_arm_recv(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    struct io_uring_sqe *sqe = net_get_sqe(l);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = NET_BGID;
    io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_RECV, c->gen, slot));
    c->recv_armed = true;
    c->needs_rearm = false;
    c->inflight++;
}

static void net_arm_send(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    struct io_uring_sqe *sqe = net_get_sqe(l);
    io_uring_prep_send(sqe, c->fd, c->send_p + c->send_off, c->send_len - c->send_off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_SEND, c->gen, slot));
    c->inflight++;
}

static void net_arm_cq(net_loop *l)
{
    struct io_uring_sqe *sqe = net_get_sqe(l);
    io_uring_prep_poll_multishot(sqe, cm_cq_fd(&l->cq), POLLIN);
    io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_CQ, 0, NET_SLOT_CQ));
}

// --- connections ----------------------------------------------------------------------------

static net_conn *net_conn_get(const net_loop *l, net_conn_ref ref)
{
    if (ref.slot >= l->num_slots) {
        return NULL;
    }
    net_conn *c = &l->conns[ref.slot];
    return c->used && c->gen == ref.gen ? c : NULL;
}

static net_conn_ref net_ref(const net_loop *l, uint32_t slot)
{
    return (net_conn_ref){slot, l->conns[slot].gen};
}

static void net_tls_conn_release(net_loop *l, net_conn *c);

static void net_conn_free_if_drained(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    if (!c->closing || c->inflight != 0) {
        return;
    }
    (void)close(c->fd);
    if (c->send_active && l->server->app->on_sent != NULL) {
        c->send_active = false;
        l->server->app->on_sent(l->app_ctx, c->app_state, net_ref(l, slot), false);
    }
    if (c->tls != NULL) {
        net_tls_conn_release(l, c);
    }
    l->server->app->on_close(l->app_ctx, c->app_state);
    if (c->peer_counted) {
        net_peer_release(l, c->peer);
    }
    const bool admin = c->admin;
    c->used = false;
    c->app_state = NULL;
    c->gen = (c->gen + 1) & NET_GEN_MASK;
    c->next_free = l->free_head[admin];
    l->free_head[admin] = slot;
    __atomic_sub_fetch(&l->open, 1, __ATOMIC_RELAXED);
    if (admin) {
        __atomic_sub_fetch(&l->open_admin, 1, __ATOMIC_RELAXED);
    }
}

// net_conn_is_busy reports whether closing |c| now would discard a request: an answer being
// sent, or the application not idle. A lingering connection has sent its last answer.
static bool net_conn_is_busy(net_loop *l, const net_conn *c)
{
    if (c->lingering || c->write_done) {
        return false;
    }
    return c->send_active || !l->server->app->is_idle(l->app_ctx, c->app_state);
}

static const char *net_why_text(net_why why)
{
    switch (why) {
    case NET_WHY_RECV_ERROR:
        return "receive failed";
    case NET_WHY_SEND_ERROR:
        return "send failed";
    default:
        return "closed";
    }
}

// net_conn_shutdown starts closing |slot|. |why| and |err| (an errno, or 0) say why; a
// transport failure that discards a request in progress is counted and logged.
static void net_conn_shutdown(net_loop *l, uint32_t slot, net_why why, int err)
{
    net_conn *c = &l->conns[slot];
    if (c->closing) {
        return;
    }
    if ((why == NET_WHY_RECV_ERROR || why == NET_WHY_SEND_ERROR) && net_conn_is_busy(l, c)) {
        net_count(&l->st_closed_busy);
        uint32_t suppressed = 0;
        if (net_warn_gate(l, NET_WARN_CLOSED_BUSY, &suppressed)) {
            char peer[64] = "?";
            char more[64];
            net_peer_text(c->peer, peer, sizeof(peer));
            cm_log(
                CM_LOG_WARN,
                "net: loop %u: connection from %s closed with a request in progress: %s (%s)%s%s",
                l->index, peer, net_why_text(why), strerror(err),
                c->send_active ? ", its answer is lost" : "",
                net_more_text(more, sizeof(more), suppressed));
        }
    }
    c->closing = true;
    c->lingering = false;
    c->deadline_ms = 0;
    // shutdown(2) completes the armed recv (EOF) and fails a pending send, so the ring's
    // operations on this descriptor drain; the descriptor is closed when they have.
    (void)shutdown(c->fd, SHUT_RDWR);
    net_conn_free_if_drained(l, slot);
}

// net_conn_linger begins the lingering close of RFC 9112 §9.6 after the last answer: the FIN
// goes out now, input is read and discarded until the peer closes or a bound is reached.
static void net_conn_linger(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    if (c->peer_eof || (!c->recv_armed && !c->needs_rearm) || l->stopping) {
        // Nothing more will arrive, or the server is stopping (a stop is not held up by it).
        net_conn_shutdown(l, slot, NET_WHY_APP, 0);
        return;
    }
    (void)shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->deadline_ms = net_now_ms() + l->server->cfg.linger_ms;
    net_count(&l->st_lingered);
}

// net_conn_finish_if_done closes a connection whose peer has finished sending once nothing is
// left to answer.
static void net_conn_finish_if_done(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    if (c->used && !c->closing && !c->lingering && c->peer_eof && !c->send_active &&
        l->server->app->is_idle(l->app_ctx, c->app_state)) {
        net_conn_shutdown(l, slot, NET_WHY_EOF, 0);
    }
}

// --- TLS over the ring ----------------------------------------------------------------------

// net_tls_count_handshake counts the outcome of |c|'s handshake once, with the time its steps
// took.
static void net_tls_count_handshake(net_loop *l, net_conn *c, uint64_t *counter)
{
    if (c->tls_counted) {
        return;
    }
    c->tls_counted = true;
    net_count(counter);
    __atomic_add_fetch(&l->st_tls_ns, c->tls_hs_ns, __ATOMIC_RELAXED);
}

// net_tls_conn_release frees |c|'s TLS state when the connection is freed; a handshake that
// never finished counts as failed (the peer left, or net closed it).
static void net_tls_conn_release(net_loop *l, net_conn *c)
{
    net_tls_count_handshake(l, c, &l->st_tls_failed);
    net_tls_conn_free(c->tls);
    c->tls = NULL;
    free(c->tls_out);
    c->tls_out = NULL;
    c->tls_out_cap = 0;
    __atomic_sub_fetch(&l->tls_open, 1, __ATOMIC_RELAXED);
}

// net_tls_log logs a failed TLS connection with OpenSSL's reason, rate-limited, at INFO: a
// scanner's or a misconfigured client's failures are routine, and counted in net_stats.
static void net_tls_log(net_loop *l, const net_conn *c, const char *what)
{
    char why[128];
    net_tls_conn_why(why, sizeof(why)); // also clears the thread's error queue
    uint32_t suppressed = 0;
    if (!net_warn_gate(l, NET_WARN_TLS, &suppressed)) {
        return;
    }
    char peer[64] = "?";
    char more[64];
    net_peer_text(c->peer, peer, sizeof(peer));
    cm_log(CM_LOG_INFO, "net: loop %u: TLS %s from %s: %s%s", l->index, what, peer, why,
           net_more_text(more, sizeof(more), suppressed));
}

// net_tls_flush hands the records waiting in |slot|'s TLS state to the ring, unless a send of
// the connection is in it already (the rest goes when it completes). A connection whose TLS
// failed closes once its alert is out.
static void net_tls_flush(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    if (c->tls == NULL || c->closing || c->wire_active) {
        return;
    }
    const size_t n = net_tls_conn_pending(c->tls);
    if (n == 0) {
        if (c->tls_fail_close) {
            net_conn_shutdown(l, slot, NET_WHY_TLS, 0);
        }
        return;
    }
    if (n > c->tls_out_cap) {
        uint8_t *nb = malloc(n);
        if (nb == NULL) {
            net_conn_shutdown(l, slot, NET_WHY_SEND_ERROR, ENOMEM);
            return;
        }
        free(c->tls_out);
        c->tls_out = nb;
        c->tls_out_cap = n;
    }
    net_tls_conn_take(c->tls, c->tls_out, n);
    c->tls_taken += n;
    c->send_p = c->tls_out;
    c->send_len = n;
    c->send_off = 0;
    c->wire_active = true;
    net_arm_send(l, slot);
}

// net_tls_fail: TLS failed on |slot| (OpenSSL wrote an alert, if any): the alert goes out, no
// more input is read, then the connection closes.
static void net_tls_fail(net_loop *l, uint32_t slot, const char *what)
{
    net_conn *c = &l->conns[slot];
    if (!c->tls_open) {
        net_tls_count_handshake(l, c, &l->st_tls_failed);
    }
    net_tls_log(l, c, what);
    c->tls_fail_close = true;
    net_tls_flush(l, slot);
}

// net_tls_on_bytes takes ciphertext that arrived on |slot|: the handshake goes on, or the
// plaintext goes to on_data record by record.
static void net_tls_on_bytes(net_loop *l, uint32_t slot, cm_span data)
{
    net_conn *c = &l->conns[slot];
    if (c->tls_fail_close || c->tls_peer_closed) {
        return; // nothing more is read
    }
    const net_tls_status st = net_tls_conn_input(c->tls, data, &c->tls_hs_ns);
    if (st == NET_TLS_FAILED) {
        net_tls_fail(l, slot, c->tls_open ? "connection failed" : "handshake failed");
        return;
    }
    if (st == NET_TLS_HANDSHAKING) {
        net_tls_flush(l, slot);
        return;
    }
    if (!c->tls_open) {
        c->tls_open = true;
        c->tls_hs_deadline_ms = 0;
        net_tls_count_handshake(
            l, c, net_tls_conn_resumed(c->tls) ? &l->st_tls_resumed : &l->st_tls_full);
    }
    // The application may answer (a send) or close while it reads; input after a last answer
    // is not wanted (as on a plain connection).
    while (!c->closing && !c->tls_fail_close && !c->lingering &&
           !(c->send_active && c->close_after_send)) {
        size_t n = 0;
        const net_tls_read r = net_tls_conn_read(c->tls, l->tls_plain, NET_TLS_PLAIN_CAP, &n);
        if (r == NET_TLS_READ_DATA) {
            if (l->server->app->on_data(l->app_ctx, c->app_state, net_ref(l, slot),
                                        cm_span_make(l->tls_plain, n)) == NET_CLOSE) {
                net_conn_shutdown(l, slot, NET_WHY_APP, 0);
            }
            continue;
        }
        if (r == NET_TLS_READ_CLOSED) {
            c->tls_peer_closed = true; // its FIN follows; the EOF is handled then
        } else if (r == NET_TLS_READ_FAILED) {
            net_tls_fail(l, slot, "record failed");
            return;
        }
        break;
    }
    net_tls_flush(l, slot); // the handshake's last flight, tickets, or nothing
}

// net_reject refuses an accepted socket over a cap: the configured bytes once, best effort
// (non-blocking: a socket that was just accepted takes a small answer whole), then close.
static void net_reject(net_loop *l, int fd, uint64_t *counter, const char *why,
                       const struct sockaddr_storage *peer)
{
    net_count(counter);
    const net_server *s = l->server;
    if (s->cfg.reject_response.len > 0) {
        (void)!send(fd, s->reject, s->cfg.reject_response.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    (void)close(fd);
    uint32_t suppressed = 0;
    if (net_warn_gate(l, NET_WARN_REJECT, &suppressed)) {
        uint8_t key[16];
        char text[64] = "?";
        char more[64];
        net_peer_key(key, peer);
        net_peer_text(key, text, sizeof(text));
        cm_log(CM_LOG_WARN, "net: loop %u: connection from %s refused: %s%s", l->index, text, why,
               net_more_text(more, sizeof(more), suppressed));
    }
}

// net_on_accept_error re-arms an ended accept, or pauses it when re-arming would fail again
// at once (no descriptor left: re-arming at once spins a core while the backlog waits).
static void net_on_accept_error(net_loop *l, size_t li, int res)
{
    if (l->stopping || res == -ECANCELED) {
        return;
    }
    if (res == -ECONNABORTED || res == -EINTR || res == -EAGAIN) {
        net_arm_accept(l, li);
        return;
    }
    if (res == -EMFILE || res == -ENFILE) {
        net_count(&l->st_emfile);
    }
    l->accept_resume_ms[li] = net_now_ms() + NET_ACCEPT_PAUSE_MS;
    uint32_t suppressed = 0;
    if (net_warn_gate(l, NET_WARN_ACCEPT, &suppressed)) {
        char more[64];
        cm_log(CM_LOG_WARN, "net: loop %u: accept failed: %s; accepting paused for %d ms%s",
               l->index, strerror(-res), NET_ACCEPT_PAUSE_MS,
               net_more_text(more, sizeof(more), suppressed));
    }
}

// net_handoff is an accepted connection one loop gives to a less loaded one (net_hand_off):
// pushed to the receiver's completion queue (CM_CQ_KIND_NET_ADOPT), which admits it.
typedef struct net_handoff {
    cm_cq_node node;
    int fd;
    uint32_t listener;
    struct sockaddr_storage peer;
} net_handoff;

static void net_admit(net_loop *l, int fd, size_t li, const struct sockaddr_storage *peer);
static bool net_would_admit(const net_loop *l, const struct sockaddr_storage *peer);

// net_hand_off balances connections over the loops. SO_REUSEPORT spreads them by a hash of
// their addresses, which for a few connections often puts most of them on one loop (5 or 6 of
// 8 were seen), and a loop's connections wait for each other's requests while another loop
// idles. A loop that accepts while another has fewer connections (counting those handed to it
// and not yet taken) gives the new one to the least loaded loop. Returns false when this loop
// keeps it. Only main listeners' connections this loop would admit move (net_would_admit); the
// caps (max_connections, max_connections_per_peer) apply again on the loop that admits it.
static bool net_hand_off(net_loop *l, int fd, size_t li, const struct sockaddr_storage *peer)
{
    net_server *s = l->server;
    if (s->num_loops < 2) {
        return false;
    }
    const uint32_t mine = __atomic_load_n(&l->open, __ATOMIC_RELAXED) +
                          __atomic_load_n(&l->incoming, __ATOMIC_RELAXED);
    net_loop *to = NULL;
    uint32_t least = mine;
    for (uint32_t k = 0; k < s->num_loops; k++) {
        net_loop *o = &s->loops[k];
        if (o == l || __atomic_load_n(&o->ready, __ATOMIC_ACQUIRE) == 0) {
            continue; // another loop may still be setting up its queue
        }
        const uint32_t n = __atomic_load_n(&o->open, __ATOMIC_RELAXED) +
                           __atomic_load_n(&o->incoming, __ATOMIC_RELAXED);
        if (n < least) {
            least = n;
            to = o;
        }
    }
    if (to == NULL) {
        return false;
    }
    net_handoff *h = malloc(sizeof(*h));
    if (h == NULL) {
        return false;
    }
    memset(h, 0, sizeof(*h));
    h->node.kind = CM_CQ_KIND_NET_ADOPT;
    h->fd = fd;
    h->listener = (uint32_t)li;
    h->peer = *peer;
    __atomic_add_fetch(&to->incoming, 1, __ATOMIC_RELAXED);
    net_count(&l->st_handed_off);
    cm_cq_push(&to->cq, &h->node);
    return true;
}

// net_would_admit reports whether this loop has a main slot for a connection from |peer| and
// room under max_connections_per_peer. Only such a connection is handed over: one this loop
// refuses is refused here at once, as before there were hand-offs, so a flood of connections
// over a cap costs no cross-thread wake-ups.
static bool net_would_admit(const net_loop *l, const struct sockaddr_storage *peer)
{
    if (l->free_head[0] == UINT32_MAX) {
        return false;
    }
    if (l->peers == NULL) {
        return true;
    }
    uint8_t key[16];
    net_peer_key(key, peer);
    return l->peers[net_peer_find(l, key)].count < l->server->cfg.max_connections_per_peer;
}

// net_adopt admits a connection another loop handed to this one.
static void net_adopt(net_loop *l, net_handoff *h)
{
    net_admit(l, h->fd, h->listener, &h->peer);
    __atomic_sub_fetch(&l->incoming, 1, __ATOMIC_RELAXED);
    free(h);
}

static void net_on_accept(net_loop *l, uint32_t slot, const struct io_uring_cqe *cqe)
{
    const size_t li = slot - NET_SLOT_LISTENER0;
    if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
        l->accept_armed[li] = false;
        if (cqe->res >= 0) {
            // The kernel also ends a multishot accept when it cannot post a completion.
            if (!l->stopping) {
                net_arm_accept(l, li);
            }
        } else {
            net_on_accept_error(l, li, cqe->res);
        }
    }
    if (cqe->res < 0) {
        return;
    }
    const int fd = cqe->res;
    const bool admin = li >= l->num_main_listen;
    net_count(&l->st_accepted);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0) {
        memset(&peer, 0, sizeof(peer));
    }
    if (!admin && !l->stopping && net_would_admit(l, &peer) && net_hand_off(l, fd, li, &peer)) {
        return;
    }
    net_admit(l, fd, li, &peer);
}

// net_admit makes accepted socket |fd| (from listener |li|, peer |peer|) a connection of this
// loop, or refuses it (stopping, slots full, the peer's cap, no memory for TLS).
static void net_admit(net_loop *l, int fd, size_t li, const struct sockaddr_storage *peer_in)
{
    const bool admin = li >= l->num_main_listen;
    struct sockaddr_storage peer = *peer_in;
    if (l->stopping) {
        net_reject(l, fd, &l->st_rejected, "stopping", &peer);
        return;
    }
    if (l->free_head[admin] == UINT32_MAX) {
        net_reject(l, fd, admin ? &l->st_rejected_admin : &l->st_rejected,
                   admin ? "admin connections full" : "connections full", &peer);
        return;
    }
    uint8_t key[16];
    net_peer_key(key, &peer);
    uint32_t pi = UINT32_MAX;
    if (!admin && l->peers != NULL) {
        pi = net_peer_find(l, key);
        if (l->peers[pi].count >= l->server->cfg.max_connections_per_peer) {
            net_reject(l, fd, &l->st_rejected_peer, "connections per peer address full", &peer);
            return;
        }
        memcpy(l->peers[pi].key, key, 16);
        l->peers[pi].count++;
    }
    net_tls_conn *tc = NULL;
    if (!admin && (l->server->cfg.tls_listen_mask >> li & 1u) != 0) {
        tc = net_tls_conn_new(l->server->cfg.tls);
        if (tc == NULL) {
            if (pi != UINT32_MAX) {
                net_peer_release(l, key);
            }
            net_reject(l, fd, &l->st_rejected, "out of memory for TLS", &peer);
            return;
        }
    }
    const int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const uint32_t s = l->free_head[admin];
    net_conn *c = &l->conns[s];
    l->free_head[admin] = c->next_free;
    const uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->fd = fd;
    c->used = true;
    c->admin = admin;
    c->peer_counted = pi != UINT32_MAX;
    memcpy(c->peer, key, 16);
    if (tc != NULL) {
        c->tls = tc;
        c->tls_hs_deadline_ms = net_now_ms() + l->server->cfg.tls_handshake_ms;
        __atomic_add_fetch(&l->tls_open, 1, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&l->open, 1, __ATOMIC_RELAXED);
    if (admin) {
        __atomic_add_fetch(&l->open_admin, 1, __ATOMIC_RELAXED);
    }
    c->app_state =
        l->server->app->on_open(l->app_ctx, net_ref(l, s), (const struct sockaddr *)&peer);
    net_arm_recv(l, s);
}

// net_on_peer_eof: the peer finished sending; every byte it sent went to on_data before.
static void net_on_peer_eof(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    c->peer_eof = true;
    if (c->lingering) {
        net_conn_shutdown(l, slot, NET_WHY_LINGER, 0);
        return;
    }
    const net_app *app = l->server->app;
    net_action a;
    if (app->on_eof != NULL) {
        a = app->on_eof(l->app_ctx, c->app_state, net_ref(l, slot));
    } else {
        a = net_conn_is_busy(l, c) ? NET_CONTINUE : NET_CLOSE;
    }
    if (c->closing) {
        return; // on_eof closed it itself
    }
    if (a == NET_CLOSE) {
        net_conn_shutdown(l, slot, NET_WHY_EOF, 0);
        return;
    }
    if (net_conn_is_busy(l, c)) {
        // A half-closed peer still reads: the answer in progress is sent, then we close.
        net_count(&l->st_eof_busy);
        return;
    }
    net_conn_finish_if_done(l, slot);
}

static void net_on_recv(net_loop *l, uint32_t slot, const struct io_uring_cqe *cqe)
{
    net_conn *c = &l->conns[slot];
    const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    // (2) a buffer: hand the bytes over (or discard them while lingering), then recycle it.
    if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
        const uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        uint8_t *b = l->bufs + (size_t)bid * l->buf_size;
        if (cqe->res > 0 && (c->lingering || (c->send_active && c->close_after_send))) {
            // After the last answer was queued the application wants no more input: discard it
            // (counted towards the lingering close's budget).
            const uint32_t n = (uint32_t)cqe->res;
            c->drained = n > UINT32_MAX - c->drained ? UINT32_MAX : c->drained + n;
            if (c->drained >= l->server->cfg.linger_bytes) {
                net_conn_shutdown(l, slot, NET_WHY_LINGER, 0);
            }
        } else if (cqe->res > 0 && !c->closing && c->tls != NULL) {
            NET_UNPOISON(b, (size_t)cqe->res);
            net_tls_on_bytes(l, slot, cm_span_make(b, (size_t)cqe->res));
        } else if (cqe->res > 0 && !c->closing) {
            NET_UNPOISON(b, (size_t)cqe->res);
            net_action a = l->server->app->on_data(l->app_ctx, c->app_state, net_ref(l, slot),
                                                   cm_span_make(b, (size_t)cqe->res));
            if (a == NET_CLOSE) {
                net_conn_shutdown(l, slot, NET_WHY_APP, 0);
            }
        }
        net_buf_recycle(l, bid);
    }
    if (more) {
        if (cqe->res == 0 && !c->closing) {
            net_on_peer_eof(l, slot); // not expected with F_MORE; EOF all the same
        }
        return;
    }
    // (3) no F_MORE: the multishot ended. Only EOF, an error or our own close end the
    // connection: the kernel also ends a multishot recv that still delivered data (res > 0)
    // when it cannot post another completion (a full CQ), and then it is simply re-armed.
    c->recv_armed = false;
    c->inflight--;
    if (c->closing) {
        net_conn_free_if_drained(l, slot);
    } else if (cqe->res > 0) {
        net_count(&l->st_rearms);
        net_arm_recv(l, slot);
    } else if (cqe->res == -ENOBUFS) {
        c->needs_rearm = true; // (4) re-armed after the next recycle pass
        l->any_needs_rearm = true;
    } else if (cqe->res == 0) {
        net_on_peer_eof(l, slot);
    } else {
        net_conn_shutdown(l, slot, c->lingering ? NET_WHY_LINGER : NET_WHY_RECV_ERROR, -cqe->res);
    }
}

static void net_tls_on_wire_sent(net_loop *l, uint32_t slot);
static void net_send_done(net_loop *l, uint32_t slot);

static void net_on_send(net_loop *l, uint32_t slot, const struct io_uring_cqe *cqe)
{
    net_conn *c = &l->conns[slot];
    c->inflight--;
    if (c->closing) {
        net_conn_free_if_drained(l, slot);
        return;
    }
    if (cqe->res < 0) {
        net_conn_shutdown(l, slot, NET_WHY_SEND_ERROR, -cqe->res);
        return;
    }
    c->send_off += (size_t)cqe->res;
    if (c->send_off < c->send_len) {
        net_arm_send(l, slot); // a partial send: continue with the rest
        return;
    }
    if (c->tls != NULL) {
        net_tls_on_wire_sent(l, slot);
        return;
    }
    net_send_done(l, slot);
}

// net_tls_on_wire_sent: a ciphertext send of |slot| completed. The application's send is done
// once the records holding it are all out; what waits goes next.
static void net_tls_on_wire_sent(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    c->wire_active = false;
    c->tls_acked += c->send_len;
    if (c->tls_out_cap > NET_TLS_OUT_KEEP) {
        free(c->tls_out); // a large answer's buffer is not kept for the idle connection
        c->tls_out = NULL;
        c->tls_out_cap = 0;
    }
    if (c->send_active && c->tls_acked >= c->tls_app_mark) {
        net_send_done(l, slot);
    }
    net_tls_flush(l, slot);
}

// net_send_done: the application's send on |slot| is out: on_sent, then a lingering close
// after a last answer, or the close a finished peer or a stop waited for.
static void net_send_done(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    c->send_active = false;
    const bool close_after = c->close_after_send;
    c->write_done = close_after;
    l->server->app->on_sent(l->app_ctx, c->app_state, net_ref(l, slot), true);
    if (c->closing) {
        return; // on_sent closed it
    }
    if (close_after) {
        net_conn_linger(l, slot);
    } else if (c->peer_eof) {
        net_conn_finish_if_done(l, slot);
    } else if (l->stopping && !c->send_active &&
               l->server->app->is_idle(l->app_ctx, c->app_state)) {
        net_conn_shutdown(l, slot, NET_WHY_STOP, 0);
    }
}

// net_on_cq: the completion queue's doorbell rang. Its nodes are taken once per turn, after
// every CQE of the turn (net_drain_cq), together with those the loop completed itself.
static void net_on_cq(net_loop *l, const struct io_uring_cqe *cqe)
{
    if ((cqe->flags & IORING_CQE_F_MORE) == 0 && !l->stopping) {
        net_arm_cq(l);
    }
    l->cq_rang = true;
}

// net_deliver hands drained completions to the application, oldest first.
static void net_deliver(net_loop *l, cm_cq_node *n)
{
    while (n != NULL) {
        cm_cq_node *next = n->next;
        if (n->kind == CM_CQ_KIND_NET_ADOPT) {
            net_adopt(l, (net_handoff *)n);
        } else if (n->kind != CM_CQ_KIND_NONE) {
            l->server->app->on_completion(l->app_ctx, n);
        }
        n = next;
    }
}

// How many times one turn drains the completion queue before it lets the ring in again:
// completions delivered inline (an HSM lane) may queue further ones.
#define NET_CQ_DRAINS_PER_TURN 4

// net_drain_cq delivers what waits in the completion queue: pushed by other threads (their
// doorbell rang) or by this loop itself without a doorbell (cm_cq_push_local). Returns true
// when more is still waiting, so the next wait must not block.
static bool net_drain_cq(net_loop *l)
{
    for (int round = 0; round < NET_CQ_DRAINS_PER_TURN; round++) {
        cm_cq_node *n;
        if (l->cq_rang) {
            l->cq_rang = false;
            n = cm_cq_drain(&l->cq); // consumes the eventfd's counter too
        } else if (cm_cq_pending(&l->cq)) {
            n = cm_cq_drain_after_read(&l->cq);
        } else {
            return false;
        }
        net_deliver(l, n);
    }
    return l->cq_rang || cm_cq_pending(&l->cq);
}

static void net_begin_stop(net_loop *l)
{
    if (l->stopping) {
        return;
    }
    l->stopping = true;
    for (size_t i = 0; i < l->num_listen; i++) {
        l->accept_resume_ms[i] = 0;
        if (l->accept_armed[i]) {
            struct io_uring_sqe *sqe = net_get_sqe(l);
            io_uring_prep_cancel64(
                sqe, net_cookie(NET_OP_ACCEPT, 0, NET_SLOT_LISTENER0 + (uint32_t)i), 0);
            io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_CANCEL, 0, 0));
        }
    }
    for (uint32_t s = 0; s < l->num_slots; s++) {
        net_conn *c = &l->conns[s];
        if (c->used && !c->closing && (c->lingering || !net_conn_is_busy(l, c))) {
            net_conn_shutdown(l, s, NET_WHY_STOP, 0);
        }
    }
}

static void net_tick(net_loop *l, uint64_t now)
{
    for (uint32_t s = 0; s < l->num_slots; s++) {
        net_conn *c = &l->conns[s];
        if (!c->used || c->closing) {
            continue;
        }
        if (c->tls != NULL && !c->tls_open && c->tls_hs_deadline_ms != 0 &&
            now >= c->tls_hs_deadline_ms) {
            // A handshake that stalls holds its slot this long at most.
            c->tls_hs_deadline_ms = 0;
            net_tls_count_handshake(l, c, &l->st_tls_timeouts);
            net_conn_shutdown(l, s, NET_WHY_TLS, 0);
            continue;
        }
        if (c->deadline_ms != 0 && now >= c->deadline_ms) {
            c->deadline_ms = 0;
            if (c->lingering) {
                net_conn_shutdown(l, s, NET_WHY_LINGER, 0);
                continue;
            }
            net_count(&l->st_timeouts);
            if (l->server->app->on_timeout(l->app_ctx, c->app_state, net_ref(l, s)) == NET_CLOSE) {
                net_conn_shutdown(l, s, NET_WHY_APP, 0);
                continue;
            }
        }
        if (c->closing) {
            continue;
        }
        if (c->needs_rearm) {
            net_arm_recv(l, s);
        }
        if (c->peer_eof) {
            net_conn_finish_if_done(l, s); // an application that became idle without a send
        }
    }
    l->any_needs_rearm = false;
}

// net_resume_accepts re-arms the accepts paused after EMFILE/ENFILE whose pause is over.
static void net_resume_accepts(net_loop *l, uint64_t now)
{
    for (size_t i = 0; i < l->num_listen; i++) {
        if (l->accept_resume_ms[i] != 0 && now >= l->accept_resume_ms[i] && !l->stopping) {
            net_arm_accept(l, i);
        }
    }
}

// net_wait_ms is how long the next wait may block: a tick, or less when a paused accept is
// due sooner.
static uint64_t net_wait_ms(const net_loop *l, uint64_t now)
{
    uint64_t ms = NET_TICK_MS;
    for (size_t i = 0; i < l->num_listen; i++) {
        const uint64_t at = l->accept_resume_ms[i];
        if (at != 0) {
            const uint64_t left = at > now ? at - now : 1;
            ms = left < ms ? left : ms;
        }
    }
    return ms;
}

// net_dispatch decodes a cookie, drops stale ones, and calls the handler (STYLE.md §2.7).
static void net_dispatch(net_loop *l, const struct io_uring_cqe *cqe)
{
    const uint64_t ud = io_uring_cqe_get_data64(cqe);
    const uint32_t op = (uint32_t)(ud >> 56);
    const uint32_t gen = (uint32_t)(ud >> 32) & NET_GEN_MASK;
    const uint32_t slot = (uint32_t)ud;
    switch (op) {
    case NET_OP_ACCEPT:
        CM_CHECK(slot >= NET_SLOT_LISTENER0 && slot - NET_SLOT_LISTENER0 < l->num_listen);
        net_on_accept(l, slot, cqe);
        return;
    case NET_OP_CQ:
        net_on_cq(l, cqe);
        return;
    case NET_OP_CANCEL:
        return;
    case NET_OP_RECV:
    case NET_OP_SEND:
        break;
    default:
        CM_CHECK(op < NET_OP_COUNT && op != 0);
        return;
    }
    CM_CHECK(slot < l->num_slots);
    net_conn *c = &l->conns[slot];
    if (!c->used || c->gen != gen) {
        // A completion for a slot that was freed and reused: its buffer still goes back.
        if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
            net_buf_recycle(l, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        }
        return;
    }
    if (op == NET_OP_RECV) {
        net_on_recv(l, slot, cqe);
    } else {
        net_on_send(l, slot, cqe);
    }
}

static cm_result net_ring_init(net_loop *l, uint32_t entries)
{
    // The preferred flags need kernel 6.1; fall back step by step (probe, not #ifdef).
    const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, &l->ring, &p);
        if (rc == 0) {
            l->ring_ok = true;
            // Without NODROP (kernels before 5.5) a full CQ drops completions, and a dropped
            // recv or send completion strands its connection: refuse to run.
            if ((p.features & IORING_FEAT_NODROP) == 0) {
                cm_log(CM_LOG_ERROR, "net: the kernel lacks IORING_FEAT_NODROP");
                CM_BAIL(NET_E_FEATURE);
            }
            return cm_result_make(CM_OK);
        }
    }
    (void)rc;
    CM_BAIL(NET_E_RING);
}

static cm_result net_probe(net_loop *l)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);
    CM_ENSURE(probe != NULL, NET_E_FEATURE);
    const bool ok = io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
                    io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                    io_uring_opcode_supported(probe, IORING_OP_SEND) &&
                    io_uring_opcode_supported(probe, IORING_OP_POLL_ADD) &&
                    io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL) &&
                    io_uring_opcode_supported(probe, IORING_OP_PROVIDE_BUFFERS);
    io_uring_free_probe(probe);
    CM_ENSURE(ok, NET_E_FEATURE);
    return cm_result_make(CM_OK);
}

static cm_result net_loop_setup(net_loop *l)
{
    const net_server_config *cfg = &l->server->cfg;
    CM_TRY(net_ring_init(l, cfg->ring_entries));
    CM_TRY(net_probe(l));
    CM_TRY(cm_cq_init(&l->cq));
    CM_TRY(net_bufring_setup(l));
    l->conns = calloc(l->num_slots, sizeof(net_conn));
    CM_ENSURE(l->conns != NULL, CM_E_NOMEM);
    // Two free lists over one table: main slots first, admin slots after them.
    for (uint32_t s = 0; s < l->num_slots; s++) {
        const uint32_t end = s < l->max_conns ? l->max_conns : l->num_slots;
        l->conns[s].next_free = s + 1 < end ? s + 1 : UINT32_MAX;
    }
    l->free_head[0] = l->max_conns > 0 ? 0 : UINT32_MAX;
    l->free_head[1] = l->num_slots > l->max_conns ? l->max_conns : UINT32_MAX;
    if (cfg->max_connections_per_peer < l->max_conns) {
        uint32_t n = 2;
        while (n < 2 * l->max_conns) {
            n *= 2;
        }
        l->peers = calloc(n, sizeof(net_peer));
        CM_ENSURE(l->peers != NULL, CM_E_NOMEM);
        l->peer_mask = n - 1;
        if (getrandom(&l->peer_seed, sizeof(l->peer_seed), 0) != (ssize_t)sizeof(l->peer_seed)) {
            l->peer_seed = cm_time_mono_ns() ^ (uint64_t)(uintptr_t)l;
        }
    }
    if (cfg->tls_listen_mask != 0) {
        l->tls_plain = malloc(NET_TLS_PLAIN_CAP);
        CM_ENSURE(l->tls_plain != NULL, CM_E_NOMEM);
    }
    l->app_ctx = l->server->app->loop_init(l->server->app_arg, l);
    CM_ENSURE(l->app_ctx != NULL, CM_E_STATE);
    for (size_t i = 0; i < l->num_listen; i++) {
        net_arm_accept(l, i);
    }
    net_arm_cq(l);
    return cm_result_make(CM_OK);
}

static void net_loop_teardown(net_loop *l)
{
    if (l->app_ctx != NULL) {
        l->server->app->loop_cleanup(l->app_ctx);
        l->app_ctx = NULL;
    }
    for (size_t i = 0; i < l->num_listen; i++) {
        if (l->listen_fd[i] >= 0) {
            (void)close(l->listen_fd[i]);
            l->listen_fd[i] = -1;
        }
    }
    if (l->ring_ok) {
        io_uring_queue_exit(&l->ring);
        l->ring_ok = false;
    }
    // The completion queue's eventfd stays open until net_server_free: net_server_stop may
    // still be ringing it from another thread.
    free(l->conns);
    l->conns = NULL;
    free(l->peers);
    l->peers = NULL;
    free(l->tls_plain);
    l->tls_plain = NULL;
    if (l->bufs != NULL) {
        NET_UNPOISON(l->bufs, (size_t)l->num_bufs * l->buf_size);
    }
    free(l->bufs);
    l->bufs = NULL;
    free(l->br);
    l->br = NULL;
}

// net_check_overflow counts a turn that found completions in the kernel's overflow list, and
// the completions the kernel dropped (it only does when it cannot allocate an overflow entry).
static void net_check_overflow(net_loop *l)
{
    if ((IO_URING_READ_ONCE(*l->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) != 0) {
        net_count(&l->st_cq_overflow);
    }
    const uint32_t dropped = IO_URING_READ_ONCE(*l->ring.cq.koverflow);
    if (dropped != (uint32_t)__atomic_load_n(&l->st_cq_dropped, __ATOMIC_RELAXED)) {
        __atomic_store_n(&l->st_cq_dropped, (uint64_t)dropped, __ATOMIC_RELAXED);
        if (!l->dropped_logged) {
            l->dropped_logged = true;
            cm_log(CM_LOG_ERROR,
                   "net: loop %u: the kernel dropped %u completions (out of memory for its CQ "
                   "overflow list); connections may hang until their deadline",
                   l->index, dropped);
        }
    }
}

static void net_loop_serve(net_loop *l)
{
    l->last_tick_ms = net_now_ms();
    bool more = false; // completions still queued after the last turn's drains
    for (;;) {
        if (!l->stopping && __atomic_load_n(&l->server->stop, __ATOMIC_ACQUIRE) != 0) {
            net_begin_stop(l);
        }
        if (l->stopping && __atomic_load_n(&l->open, __ATOMIC_RELAXED) == 0 &&
            __atomic_load_n(&l->incoming, __ATOMIC_RELAXED) == 0 &&
            l->server->app->pending(l->app_ctx) == 0) {
            break;
        }
        const uint64_t wait_ms = more ? 0 : net_wait_ms(l, net_now_ms());
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = (long long)wait_ms * 1000000LL};
        struct io_uring_cqe *cqe = NULL;
        // The turn's log lines, in one write before the loop may sleep.
        cm_log_buf_flush();
        // The wait also runs the deferred task work and moves completions the kernel held in
        // its overflow list (the CQ was full) into the CQ, oldest first.
        int rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EBADR) {
            cm_log(CM_LOG_ERROR, "net: loop %u: io_uring wait failed: %s", l->index, strerror(-rc));
        }
        net_check_overflow(l);
        unsigned seen = 0;
        unsigned head;
        l->turn_ready = io_uring_cq_ready(&l->ring);
        io_uring_for_each_cqe(&l->ring, head, cqe) {
            l->turn_seen = seen + 1;
            net_dispatch(l, cqe);
            seen++;
            // What this CQE's work finished on this thread (an inline signature) moves on at
            // once, not behind the rest of the turn: its store job reaches the writer while
            // the loop handles the next request. No syscall: the doorbell is read at the end.
            if (cm_cq_pending(&l->cq)) {
                net_deliver(l, cm_cq_drain_after_read(&l->cq));
            }
        }
        io_uring_cq_advance(&l->ring, seen);
        l->turn_ready = l->turn_seen = 0;
        more = net_drain_cq(l);
        const uint64_t now = net_now_ms();
        net_resume_accepts(l, now);
        if (l->any_needs_rearm || now - l->last_tick_ms >= NET_TICK_MS) {
            net_tick(l, now);
            l->last_tick_ms = now;
        }
    }
}

static void *net_loop_main(void *arg)
{
    net_loop *l = arg;
    char name[16];
    (void)snprintf(name, sizeof(name), "cm-io%u", l->index);
    (void)pthread_setname_np(pthread_self(), name); // for ps -L, top -H and perf
    cm_result r = net_loop_setup(l);
    if (cm_ok(r)) {
        __atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE); // its cq may take hand-offs now
    }
    net_server *s = l->server;
    (void)pthread_mutex_lock(&s->mu);
    l->start_result = r;
    s->started++;
    (void)pthread_cond_broadcast(&s->cv);
    (void)pthread_mutex_unlock(&s->mu);
    if (cm_ok(r)) {
        // This thread looks at its completion queue before every wait (net_drain_cq), so work
        // it completes itself needs no doorbell; and it writes its log lines once per turn.
        cm_cq_set_drains_before_wait(&l->cq, true);
        cm_log_buf_attach(&l->log_buf);
        net_loop_serve(l);
    }
    net_loop_teardown(l);
    // Every line of the last turns, before the thread ends (a stop by SIGTERM comes here too).
    cm_log_buf_detach();
    cm_cq_set_drains_before_wait(&l->cq, false);
    return NULL;
}

// --- listen sockets ---------------------------------------------------------------------------

static cm_result net_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len)
{
    char host[128];
    const char *colon;
    memset(out, 0, sizeof(*out));
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        CM_ENSURE(end != NULL && end[1] == ':' && (size_t)(end - text - 1) < sizeof(host),
                  NET_E_ADDRESS);
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        CM_ENSURE(colon != NULL && (size_t)(colon - text) < sizeof(host), NET_E_ADDRESS);
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
    }
    char *endp;
    const unsigned long port = strtoul(colon + 1, &endp, 10);
    CM_ENSURE(colon[1] != '\0' && *endp == '\0' && port <= 65535, NET_E_ADDRESS);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
    } else {
        CM_BAIL(NET_E_ADDRESS);
    }
    return cm_result_make(CM_OK);
}

static cm_result net_listen_one(const struct sockaddr_storage *addr, socklen_t len, int *out_fd)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CM_ENSURE(fd >= 0, cm_code_from_errno(errno));
    const int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        (addr->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)addr, len) != 0 || listen(fd, 1024) != 0) {
        const int err = errno;
        (void)close(fd);
        CM_BAIL(cm_code_from_errno(err));
    }
    *out_fd = fd;
    return cm_result_make(CM_OK);
}

// net_config_address returns the |i|-th listen address: the main ones, then the admin ones.
static const char *net_config_address(const net_server_config *cfg, size_t i)
{
    return i < cfg->num_listen ? cfg->listen[i] : cfg->admin_listen[i - cfg->num_listen];
}

static cm_result net_bind_all(net_server *s)
{
    const size_t total = s->cfg.num_listen + s->cfg.num_admin_listen;
    for (size_t i = 0; i < total; i++) {
        struct sockaddr_storage addr;
        socklen_t len = 0;
        CM_TRY(net_parse_addr(net_config_address(&s->cfg, i), &addr, &len));
        for (uint32_t k = 0; k < s->num_loops; k++) {
            int fd = -1;
            CM_TRY(net_listen_one(&addr, len, &fd));
            s->loops[k].listen_fd[i] = fd;
            s->loops[k].num_listen = i + 1;
            if (k == 0) {
                // Port 0: every loop binds the port the first bind got.
                struct sockaddr_storage got;
                socklen_t glen = sizeof(got);
                CM_ENSURE(getsockname(fd, (struct sockaddr *)&got, &glen) == 0,
                          cm_code_from_errno(errno));
                const uint16_t port = got.ss_family == AF_INET6
                                          ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&got)->sin_port);
                s->ports[i] = port;
                if (addr.ss_family == AF_INET6) {
                    ((struct sockaddr_in6 *)&addr)->sin6_port = htons(port);
                } else {
                    ((struct sockaddr_in *)&addr)->sin_port = htons(port);
                }
            }
        }
    }
    return cm_result_make(CM_OK);
}

static void net_server_free(net_server *s)
{
    for (uint32_t k = 0; k < s->num_loops; k++) {
        if (s->loops[k].cq.efd >= 0) {
            // Every loop has stopped: a connection handed to a loop after it left its last
            // turn is closed here (nothing else can be left, the application had no pending).
            for (cm_cq_node *n = cm_cq_drain(&s->loops[k].cq); n != NULL;) {
                cm_cq_node *next = n->next;
                if (n->kind == CM_CQ_KIND_NET_ADOPT) {
                    net_handoff *h = (net_handoff *)n;
                    (void)close(h->fd);
                    free(h);
                }
                n = next;
            }
            cm_cq_cleanup(&s->loops[k].cq);
        }
        for (size_t i = 0; i < NET_MAX_LISTEN; i++) {
            if (s->loops[k].listen_fd[i] >= 0) {
                (void)close(s->loops[k].listen_fd[i]);
            }
        }
    }
    (void)pthread_mutex_destroy(&s->mu);
    (void)pthread_cond_destroy(&s->cv);
    free(s->loops);
    free(s->reject);
    free(s);
}

// net_config_defaults replaces the zero fields of |cfg| by what they mean.
static void net_config_defaults(net_server_config *cfg)
{
    if (cfg->io_threads == 0) {
        const long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->io_threads = n > 0 ? (uint32_t)n : 1;
    }
    if (cfg->ring_entries == 0) {
        cfg->ring_entries = 256;
    }
    if (cfg->recv_buffers == 0) {
        cfg->recv_buffers = 256;
    }
    if (cfg->recv_buffer_size == 0) {
        cfg->recv_buffer_size = 16 * 1024;
    }
    if (cfg->max_connections == 0) {
        cfg->max_connections = NET_DEFAULT_MAX_CONNECTIONS;
    }
    if (cfg->max_connections_per_peer == 0) {
        cfg->max_connections_per_peer = NET_DEFAULT_MAX_CONNECTIONS_PER_PEER;
    }
    if (cfg->admin_max_connections == 0) {
        cfg->admin_max_connections = NET_DEFAULT_ADMIN_MAX_CONNECTIONS;
    }
    if (cfg->num_admin_listen == 0) {
        cfg->admin_max_connections = 0; // no admin listener: no admin slots
    }
    if (cfg->linger_ms == 0) {
        cfg->linger_ms = NET_DEFAULT_LINGER_MS;
    }
    if (cfg->linger_bytes == 0) {
        cfg->linger_bytes = NET_DEFAULT_LINGER_BYTES;
    }
    if (cfg->tls_handshake_ms == 0) {
        cfg->tls_handshake_ms = NET_DEFAULT_TLS_HANDSHAKE_MS;
    }
}

uint64_t net_server_fds_needed(const net_server_config *cfg)
{
    net_server_config c = *cfg;
    net_config_defaults(&c);
    const uint64_t per_loop = 2u + (uint64_t)c.num_listen + (uint64_t)c.num_admin_listen +
                              (uint64_t)c.max_connections + (uint64_t)c.admin_max_connections +
                              NET_FD_SLACK;
    return per_loop * c.io_threads;
}

cm_result net_fd_limit_raise(uint64_t want, uint64_t *out_limit)
{
    struct rlimit rl;
    CM_ENSURE(getrlimit(RLIMIT_NOFILE, &rl) == 0, cm_code_from_errno(errno));
    rlim_t target = want == 0 ? rl.rlim_max : (rlim_t)want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) {
        target = rl.rlim_max;
    }
    if (target == RLIM_INFINITY) {
        // An unlimited hard limit: the kernel still caps descriptors at fs.nr_open.
        target = 1048576;
    }
    if (rl.rlim_cur == RLIM_INFINITY || target <= rl.rlim_cur) {
        *out_limit = (uint64_t)rl.rlim_cur;
        return cm_result_make(CM_OK);
    }
    rl.rlim_cur = target;
    CM_ENSURE(setrlimit(RLIMIT_NOFILE, &rl) == 0, cm_code_from_errno(errno));
    *out_limit = (uint64_t)target;
    return cm_result_make(CM_OK);
}

cm_result net_server_start(net_server **out, const net_server_config *cfg, const net_app *app,
                           void *app_arg)
{
    CM_ENSURE(cfg->num_listen >= 1 && cfg->num_listen + cfg->num_admin_listen <= NET_MAX_LISTEN &&
                  (cfg->num_admin_listen == 0 || cfg->admin_listen != NULL),
              NET_E_ADDRESS);
    // TLS listeners are main ones, and need a context.
    CM_ENSURE(cfg->tls_listen_mask == 0 ||
                  (cfg->tls != NULL && (cfg->tls_listen_mask >> cfg->num_listen) == 0),
              NET_E_TLS);
    net_server *s = calloc(1, sizeof(*s));
    CM_ENSURE(s != NULL, CM_E_NOMEM);
    s->cfg = *cfg;
    s->app = app;
    s->app_arg = app_arg;
    net_config_defaults(&s->cfg);
    if (s->cfg.reject_response.len > 0) {
        s->reject = malloc(s->cfg.reject_response.len);
        if (s->reject == NULL) {
            free(s);
            CM_BAIL(CM_E_NOMEM);
        }
        memcpy(s->reject, s->cfg.reject_response.p, s->cfg.reject_response.len);
    }
    s->cfg.reject_response.p = s->reject;
    (void)pthread_mutex_init(&s->mu, NULL);
    (void)pthread_cond_init(&s->cv, NULL);
    s->num_loops = s->cfg.io_threads;
    s->loops = calloc(s->num_loops, sizeof(net_loop));
    if (s->loops == NULL) {
        net_server_free(s);
        CM_BAIL(CM_E_NOMEM);
    }
    for (uint32_t k = 0; k < s->num_loops; k++) {
        net_loop *l = &s->loops[k];
        l->server = s;
        l->index = k;
        l->max_conns = s->cfg.max_connections;
        l->num_slots = s->cfg.max_connections + s->cfg.admin_max_connections;
        l->num_main_listen = s->cfg.num_listen;
        l->num_bufs = s->cfg.recv_buffers;
        l->buf_size = s->cfg.recv_buffer_size;
        l->cq.efd = -1;
        for (size_t i = 0; i < NET_MAX_LISTEN; i++) {
            l->listen_fd[i] = -1;
        }
    }
    cm_result r = net_bind_all(s);
    if (!cm_ok(r)) {
        net_server_free(s);
        return r;
    }
    // Published before the loops start (pthread_create orders it before their first request):
    // the application may reach the server through |*out| from a loop (its /metrics does).
    *out = s;
    uint32_t launched = 0;
    for (; launched < s->num_loops; launched++) {
        if (pthread_create(&s->loops[launched].thread, NULL, net_loop_main, &s->loops[launched]) !=
            0) {
            r = cm_result_make(cm_code_from_errno(EAGAIN));
            break;
        }
    }
    (void)pthread_mutex_lock(&s->mu);
    while (s->started < launched) {
        (void)pthread_cond_wait(&s->cv, &s->mu);
    }
    (void)pthread_mutex_unlock(&s->mu);
    for (uint32_t k = 0; k < launched && cm_ok(r); k++) {
        r = s->loops[k].start_result;
    }
    if (!cm_ok(r)) {
        __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
        for (uint32_t k = 0; k < launched; k++) {
            if (s->loops[k].cq.efd >= 0) {
                const uint64_t one = 1;
                (void)!write(s->loops[k].cq.efd, &one, sizeof(one));
            }
            (void)pthread_join(s->loops[k].thread, NULL);
        }
        *out = NULL;
        net_server_free(s);
        return r;
    }
    // The loops own their listeners now; each closes its own in its teardown.
    return cm_result_make(CM_OK);
}

uint16_t net_server_port(const net_server *s, size_t i)
{
    return i < s->cfg.num_listen ? s->ports[i] : 0;
}

uint16_t net_server_admin_port(const net_server *s, size_t i)
{
    return i < s->cfg.num_admin_listen ? s->ports[s->cfg.num_listen + i] : 0;
}

void net_server_stop(net_server *s)
{
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    for (uint32_t k = 0; k < s->num_loops; k++) {
        // Ring the doorbell so a loop blocked in its wait looks at the flag now.
        const uint64_t one = 1;
        (void)!write(cm_cq_fd(&s->loops[k].cq), &one, sizeof(one));
    }
}

void net_server_wait(net_server *s)
{
    for (uint32_t k = 0; k < s->num_loops; k++) {
        (void)pthread_join(s->loops[k].thread, NULL);
        // Teardown closed the listeners.
        for (size_t i = 0; i < NET_MAX_LISTEN; i++) {
            s->loops[k].listen_fd[i] = -1;
        }
    }
    net_server_free(s);
}

void net_server_stats(const net_server *s, net_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t k = 0; k < s->num_loops; k++) {
        const net_loop *l = &s->loops[k];
        out->accepted += __atomic_load_n(&l->st_accepted, __ATOMIC_RELAXED);
        out->rejected_full += __atomic_load_n(&l->st_rejected, __ATOMIC_RELAXED);
        out->timeouts += __atomic_load_n(&l->st_timeouts, __ATOMIC_RELAXED);
        out->open += __atomic_load_n(&l->open, __ATOMIC_RELAXED);
        out->rejected_peer += __atomic_load_n(&l->st_rejected_peer, __ATOMIC_RELAXED);
        out->rejected_admin += __atomic_load_n(&l->st_rejected_admin, __ATOMIC_RELAXED);
        out->admin_open += __atomic_load_n(&l->open_admin, __ATOMIC_RELAXED);
        out->accept_emfile += __atomic_load_n(&l->st_emfile, __ATOMIC_RELAXED);
        out->cq_overflow += __atomic_load_n(&l->st_cq_overflow, __ATOMIC_RELAXED);
        out->cq_dropped += __atomic_load_n(&l->st_cq_dropped, __ATOMIC_RELAXED);
        out->recv_rearms += __atomic_load_n(&l->st_rearms, __ATOMIC_RELAXED);
        out->closed_busy += __atomic_load_n(&l->st_closed_busy, __ATOMIC_RELAXED);
        out->eof_busy += __atomic_load_n(&l->st_eof_busy, __ATOMIC_RELAXED);
        out->lingered += __atomic_load_n(&l->st_lingered, __ATOMIC_RELAXED);
        out->handed_off += __atomic_load_n(&l->st_handed_off, __ATOMIC_RELAXED);
        const uint64_t open = __atomic_load_n(&l->open, __ATOMIC_RELAXED);
        out->open_loop_min = k == 0 || open < out->open_loop_min ? open : out->open_loop_min;
        out->open_loop_max = open > out->open_loop_max ? open : out->open_loop_max;
        out->tls_full += __atomic_load_n(&l->st_tls_full, __ATOMIC_RELAXED);
        out->tls_resumed += __atomic_load_n(&l->st_tls_resumed, __ATOMIC_RELAXED);
        out->tls_failed += __atomic_load_n(&l->st_tls_failed, __ATOMIC_RELAXED);
        out->tls_timeouts += __atomic_load_n(&l->st_tls_timeouts, __ATOMIC_RELAXED);
        out->tls_handshake_ns += __atomic_load_n(&l->st_tls_ns, __ATOMIC_RELAXED);
        out->tls_open += __atomic_load_n(&l->tls_open, __ATOMIC_RELAXED);
    }
}

bool net_loop_busy(const net_loop *loop)
{
    return loop->turn_ready > loop->turn_seen || cm_cq_pending(&loop->cq);
}

cm_cq *net_loop_cq(net_loop *loop)
{
    return &loop->cq;
}

uint32_t net_loop_index(const net_loop *loop)
{
    return loop->index;
}

cm_result net_conn_send(net_loop *l, net_conn_ref ref, cm_span data, bool close_after)
{
    net_conn *c = net_conn_get(l, ref);
    CM_ENSURE(c != NULL && !c->closing && !c->lingering && !c->write_done, NET_E_GONE);
    CM_ENSURE(!c->send_active, NET_E_BUSY);
    if (c->tls != NULL) {
        // The plaintext is encrypted now (the caller's bytes are not needed after this);
        // on_sent follows once the records holding it are sent.
        CM_ENSURE(c->tls_open && data.len > 0, NET_E_BUSY);
        CM_ENSURE(!c->tls_fail_close && net_tls_conn_write(c->tls, data, close_after), NET_E_GONE);
        c->send_active = true;
        c->close_after_send = close_after;
        c->tls_app_mark = c->tls_taken + net_tls_conn_pending(c->tls);
        net_tls_flush(l, ref.slot);
        return cm_result_make(CM_OK);
    }
    c->send_active = true;
    c->close_after_send = close_after;
    c->send_p = data.p;
    c->send_len = data.len;
    c->send_off = 0;
    net_arm_send(l, ref.slot);
    return cm_result_make(CM_OK);
}

void net_conn_close(net_loop *l, net_conn_ref ref)
{
    if (net_conn_get(l, ref) != NULL) {
        net_conn_shutdown(l, ref.slot, NET_WHY_APP, 0);
    }
}

void net_conn_set_deadline(net_loop *l, net_conn_ref ref, uint32_t ms_from_now)
{
    net_conn *c = net_conn_get(l, ref);
    if (c != NULL && !c->lingering && !c->closing) {
        c->deadline_ms = ms_from_now == 0 ? 0 : net_now_ms() + ms_from_now;
    }
}

bool net_conn_is_admin(const net_loop *l, net_conn_ref ref)
{
    const net_conn *c = net_conn_get(l, ref);
    return c != NULL && c->admin;
}

bool net_conn_tls_info(net_loop *l, net_conn_ref ref, net_tls_info *out)
{
    const net_conn *c = net_conn_get(l, ref);
    if (c == NULL || c->tls == NULL || !c->tls_open) {
        return false;
    }
    net_tls_conn_info(c->tls, out);
    return true;
}
