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
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/net/net.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define NET_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define NET_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define NET_POISON(p, n)   ((void)(p), (void)(n))
#define NET_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define NET_MAX_LISTEN     8
#define NET_BGID           0
#define NET_TICK_MS        250
#define NET_GEN_MASK       0xffffffu
#define NET_SLOT_LISTENER0 0xffff0000u // accept cookies use this + listener index
#define NET_SLOT_CQ        0xfffffffeu

enum {
    NET_OP_ACCEPT = 1,
    NET_OP_RECV = 2,
    NET_OP_SEND = 3,
    NET_OP_CQ = 4,
    NET_OP_CANCEL = 5,
    NET_OP_COUNT = 6,
};

// net_conn: one slot of a loop's connection table. Thread: loop-confined.
typedef struct net_conn {
    int fd;
    uint32_t gen;      // bumped when the slot is freed
    uint32_t inflight; // operations in the ring for this connection
    bool used;
    bool recv_armed;  // a multishot recv is in the ring
    bool needs_rearm; // recv stopped on -ENOBUFS; re-arm after buffers return
    bool closing;     // shut down; freed when inflight reaches 0
    bool send_active;
    bool close_after_send;
    void *app_state;
    const uint8_t *send_p;
    size_t send_len;
    size_t send_off;
    uint64_t deadline_ms; // 0: none
    uint32_t next_free;
} net_conn;

struct net_loop {
    net_server *server;
    uint32_t index;
    pthread_t thread;
    struct io_uring ring;
    bool ring_ok;
    cm_cq cq;
    int listen_fd[NET_MAX_LISTEN];
    size_t num_listen;
    bool accept_armed[NET_MAX_LISTEN];
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    uint32_t num_bufs;
    uint32_t buf_size;
    net_conn *conns;
    uint32_t max_conns;
    uint32_t free_head; // free list through next_free; UINT32_MAX when full
    uint32_t open;      // written by the loop, read by net_server_stats (relaxed atomics)
    void *app_ctx;
    bool stopping;
    bool any_needs_rearm;
    uint64_t last_tick_ms;
    // Counters read by net_server_stats from other threads (relaxed atomics).
    uint64_t st_accepted, st_rejected, st_timeouts;
    cm_result start_result;
};

struct net_server {
    net_server_config cfg;
    const net_app *app;
    void *app_arg;
    net_loop *loops;
    uint32_t num_loops;
    uint16_t ports[NET_MAX_LISTEN];
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

// --- arming ---------------------------------------------------------------------------------

static void net_arm_accept(net_loop *l, size_t i)
{
    struct io_uring_sqe *sqe = net_get_sqe(l);
    io_uring_prep_multishot_accept(sqe, l->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_ACCEPT, 0, NET_SLOT_LISTENER0 + (uint32_t)i));
    l->accept_armed[i] = true;
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

static net_conn *net_conn_get(net_loop *l, net_conn_ref ref)
{
    if (ref.slot >= l->max_conns) {
        return NULL;
    }
    net_conn *c = &l->conns[ref.slot];
    return c->used && c->gen == ref.gen ? c : NULL;
}

static void net_conn_free_if_drained(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    if (!c->closing || c->inflight != 0) {
        return;
    }
    (void)close(c->fd);
    if (c->send_active && l->server->app->on_sent != NULL) {
        c->send_active = false;
        l->server->app->on_sent(l->app_ctx, c->app_state, (net_conn_ref){slot, c->gen}, false);
    }
    l->server->app->on_close(l->app_ctx, c->app_state);
    c->used = false;
    c->app_state = NULL;
    c->gen = (c->gen + 1) & NET_GEN_MASK;
    c->next_free = l->free_head;
    l->free_head = slot;
    __atomic_sub_fetch(&l->open, 1, __ATOMIC_RELAXED);
}

static void net_conn_shutdown(net_loop *l, uint32_t slot)
{
    net_conn *c = &l->conns[slot];
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->deadline_ms = 0;
    // shutdown(2) completes the armed recv (EOF) and fails a pending send, so the ring's
    // operations on this descriptor drain; the descriptor is closed when they have.
    (void)shutdown(c->fd, SHUT_RDWR);
    net_conn_free_if_drained(l, slot);
}

static void net_on_accept(net_loop *l, uint32_t slot, const struct io_uring_cqe *cqe)
{
    const size_t li = slot - NET_SLOT_LISTENER0;
    if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
        l->accept_armed[li] = false;
        if (!l->stopping && cqe->res != -ECANCELED) {
            net_arm_accept(l, li);
        }
    }
    if (cqe->res < 0) {
        return;
    }
    const int fd = cqe->res;
    __atomic_add_fetch(&l->st_accepted, 1, __ATOMIC_RELAXED);
    if (l->stopping || l->free_head == UINT32_MAX) {
        __atomic_add_fetch(&l->st_rejected, 1, __ATOMIC_RELAXED);
        (void)close(fd);
        return;
    }
    const int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const uint32_t s = l->free_head;
    net_conn *c = &l->conns[s];
    l->free_head = c->next_free;
    const uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->fd = fd;
    c->used = true;
    __atomic_add_fetch(&l->open, 1, __ATOMIC_RELAXED);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0) {
        memset(&peer, 0, sizeof(peer));
    }
    c->app_state = l->server->app->on_open(l->app_ctx, (net_conn_ref){s, c->gen},
                                           (const struct sockaddr *)&peer);
    net_arm_recv(l, s);
}

static void net_on_recv(net_loop *l, uint32_t slot, const struct io_uring_cqe *cqe)
{
    net_conn *c = &l->conns[slot];
    const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    // (2) a buffer: hand the bytes over, then recycle it at once.
    if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
        const uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        uint8_t *b = l->bufs + (size_t)bid * l->buf_size;
        if (cqe->res > 0 && !c->closing) {
            NET_UNPOISON(b, (size_t)cqe->res);
            net_action a =
                l->server->app->on_data(l->app_ctx, c->app_state, (net_conn_ref){slot, c->gen},
                                        cm_span_make(b, (size_t)cqe->res));
            if (a == NET_CLOSE) {
                net_conn_shutdown(l, slot);
            }
        }
        net_buf_recycle(l, bid);
    }
    // (3) no F_MORE: the multishot ended.
    if (!more) {
        c->recv_armed = false;
        c->inflight--;
        if (cqe->res == -ENOBUFS && !c->closing) {
            c->needs_rearm = true; // (4) re-armed after the next recycle pass
            l->any_needs_rearm = true;
        } else if (!c->closing) {
            // EOF, reset or another error: the peer is gone.
            net_conn_shutdown(l, slot);
            return;
        }
        net_conn_free_if_drained(l, slot);
    } else if (cqe->res == 0 && !c->closing) {
        net_conn_shutdown(l, slot);
    }
}

static void net_on_send(net_loop *l, uint32_t slot, const struct io_uring_cqe *cqe)
{
    net_conn *c = &l->conns[slot];
    c->inflight--;
    if (c->closing) {
        net_conn_free_if_drained(l, slot);
        return;
    }
    if (cqe->res < 0) {
        net_conn_shutdown(l, slot);
        return;
    }
    c->send_off += (size_t)cqe->res;
    if (c->send_off < c->send_len) {
        net_arm_send(l, slot); // a partial send: continue with the rest
        return;
    }
    c->send_active = false;
    const bool close_after = c->close_after_send;
    l->server->app->on_sent(l->app_ctx, c->app_state, (net_conn_ref){slot, c->gen}, true);
    if (close_after || (l->stopping && l->server->app->is_idle(l->app_ctx, c->app_state))) {
        net_conn_shutdown(l, slot);
    }
}

static void net_on_cq(net_loop *l, const struct io_uring_cqe *cqe)
{
    if ((cqe->flags & IORING_CQE_F_MORE) == 0 && !l->stopping) {
        net_arm_cq(l);
    }
    for (cm_cq_node *n = cm_cq_drain(&l->cq); n != NULL;) {
        cm_cq_node *next = n->next;
        if (n->kind != CM_CQ_KIND_NONE) {
            l->server->app->on_completion(l->app_ctx, n);
        }
        n = next;
    }
}

static void net_begin_stop(net_loop *l)
{
    if (l->stopping) {
        return;
    }
    l->stopping = true;
    for (size_t i = 0; i < l->num_listen; i++) {
        if (l->accept_armed[i]) {
            struct io_uring_sqe *sqe = net_get_sqe(l);
            io_uring_prep_cancel64(
                sqe, net_cookie(NET_OP_ACCEPT, 0, NET_SLOT_LISTENER0 + (uint32_t)i), 0);
            io_uring_sqe_set_data64(sqe, net_cookie(NET_OP_CANCEL, 0, 0));
        }
    }
    for (uint32_t s = 0; s < l->max_conns; s++) {
        net_conn *c = &l->conns[s];
        if (c->used && !c->closing && !c->send_active &&
            l->server->app->is_idle(l->app_ctx, c->app_state)) {
            net_conn_shutdown(l, s);
        }
    }
}

static void net_tick(net_loop *l, uint64_t now)
{
    for (uint32_t s = 0; s < l->max_conns; s++) {
        net_conn *c = &l->conns[s];
        if (c->used && !c->closing && c->deadline_ms != 0 && now >= c->deadline_ms) {
            c->deadline_ms = 0;
            __atomic_add_fetch(&l->st_timeouts, 1, __ATOMIC_RELAXED);
            if (l->server->app->on_timeout(l->app_ctx, c->app_state, (net_conn_ref){s, c->gen}) ==
                NET_CLOSE) {
                net_conn_shutdown(l, s);
            }
        }
        if (c->used && !c->closing && c->needs_rearm) {
            net_arm_recv(l, s);
        }
    }
    l->any_needs_rearm = false;
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
    CM_CHECK(slot < l->max_conns);
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
    l->conns = calloc(l->max_conns, sizeof(net_conn));
    CM_ENSURE(l->conns != NULL, CM_E_NOMEM);
    for (uint32_t s = 0; s < l->max_conns; s++) {
        l->conns[s].next_free = s + 1 < l->max_conns ? s + 1 : UINT32_MAX;
    }
    l->free_head = 0;
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
    if (l->bufs != NULL) {
        NET_UNPOISON(l->bufs, (size_t)l->num_bufs * l->buf_size);
    }
    free(l->bufs);
    l->bufs = NULL;
    free(l->br);
    l->br = NULL;
}

static void net_loop_serve(net_loop *l)
{
    l->last_tick_ms = net_now_ms();
    for (;;) {
        if (!l->stopping && __atomic_load_n(&l->server->stop, __ATOMIC_ACQUIRE) != 0) {
            net_begin_stop(l);
        }
        if (l->stopping && __atomic_load_n(&l->open, __ATOMIC_RELAXED) == 0 &&
            l->server->app->pending(l->app_ctx) == 0) {
            break;
        }
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = NET_TICK_MS * 1000000L};
        struct io_uring_cqe *cqe = NULL;
        int rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            cm_log(CM_LOG_ERROR, "net: loop %u: io_uring wait failed: %s", l->index, strerror(-rc));
        }
        unsigned seen = 0;
        unsigned head;
        io_uring_for_each_cqe(&l->ring, head, cqe) {
            net_dispatch(l, cqe);
            seen++;
        }
        io_uring_cq_advance(&l->ring, seen);
        const uint64_t now = net_now_ms();
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
    net_server *s = l->server;
    (void)pthread_mutex_lock(&s->mu);
    l->start_result = r;
    s->started++;
    (void)pthread_cond_broadcast(&s->cv);
    (void)pthread_mutex_unlock(&s->mu);
    if (cm_ok(r)) {
        net_loop_serve(l);
    }
    net_loop_teardown(l);
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

static cm_result net_bind_all(net_server *s)
{
    for (size_t i = 0; i < s->cfg.num_listen; i++) {
        struct sockaddr_storage addr;
        socklen_t len = 0;
        CM_TRY(net_parse_addr(s->cfg.listen[i], &addr, &len));
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
    free(s);
}

cm_result net_server_start(net_server **out, const net_server_config *cfg, const net_app *app,
                           void *app_arg)
{
    CM_ENSURE(cfg->num_listen >= 1 && cfg->num_listen <= NET_MAX_LISTEN, NET_E_ADDRESS);
    net_server *s = calloc(1, sizeof(*s));
    CM_ENSURE(s != NULL, CM_E_NOMEM);
    s->cfg = *cfg;
    s->app = app;
    s->app_arg = app_arg;
    if (s->cfg.io_threads == 0) {
        const long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->cfg.io_threads = n > 0 ? (uint32_t)n : 1;
    }
    if (s->cfg.ring_entries == 0) {
        s->cfg.ring_entries = 256;
    }
    if (s->cfg.recv_buffers == 0) {
        s->cfg.recv_buffers = 256;
    }
    if (s->cfg.recv_buffer_size == 0) {
        s->cfg.recv_buffer_size = 16 * 1024;
    }
    if (s->cfg.max_connections == 0) {
        s->cfg.max_connections = 4096;
    }
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
        net_server_free(s);
        return r;
    }
    // The loops own their listeners now; each closes its own in its teardown.
    *out = s;
    return cm_result_make(CM_OK);
}

uint16_t net_server_port(const net_server *s, size_t i)
{
    return i < s->cfg.num_listen ? s->ports[i] : 0;
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
    }
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
    CM_ENSURE(c != NULL && !c->closing, NET_E_GONE);
    CM_ENSURE(!c->send_active, NET_E_BUSY);
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
        net_conn_shutdown(l, ref.slot);
    }
}

void net_conn_set_deadline(net_loop *l, net_conn_ref ref, uint32_t ms_from_now)
{
    net_conn *c = net_conn_get(l, ref);
    if (c != NULL) {
        c->deadline_ms = ms_from_now == 0 ? 0 : net_now_ms() + ms_from_now;
    }
}
