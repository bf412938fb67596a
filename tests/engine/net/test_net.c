// Suite "net": the io_uring transport with a line-echo application over real loopback
// sockets. A line "TEXT\n" is answered "TEXT\n" at once; a line "JTEXT\n" is answered after a
// worker thread finishes a job and pushes it into the loop's completion queue; a line "E\n" is
// answered "ERR\n" with close_after (an early error answer, like a 413).
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "engine/net/net.h"
#include "tests/support/test_support.h"

// --- the application -----------------------------------------------------------------------

typedef struct echo_conn {
    uint8_t *buf; // bytes received and not yet answered
    size_t len, cap;
    uint8_t *out; // response being sent
    bool busy;    // a job or a send is in progress
} echo_conn;

typedef struct echo_job {
    cm_cq_node node;
    net_loop *loop;
    net_conn_ref ref;
    echo_conn *conn; // only dereferenced on the loop thread, after checking the ref
    uint8_t *payload;
    size_t len;
    struct echo_job *next_pending;
} echo_job;

typedef struct echo_app_arg {
    uint32_t deadline_ms;
    unsigned job_delay_us;
    bool partial_busy;  // is_idle is false while a line is partly received
    int sends_to_gone;  // atomic
    int jobs_completed; // atomic
    int admin_opens;    // atomic: on_open calls for which net_conn_is_admin was true
    int eofs;           // atomic: on_eof calls
} echo_app_arg;

typedef struct echo_loop {
    net_loop *loop;
    echo_app_arg *arg;
    uint32_t pending;
} echo_loop;

typedef struct echo_worker_arg {
    echo_job *job;
    unsigned delay_us;
} echo_worker_arg;

static void *echo_worker(void *p)
{
    echo_worker_arg *w = p;
    usleep(w->delay_us);
    cm_cq_push(net_loop_cq(w->job->loop), &w->job->node);
    free(w);
    return NULL;
}

static void *echo_loop_init(void *arg, net_loop *loop)
{
    echo_loop *el = calloc(1, sizeof(*el));
    if (el != NULL) {
        el->loop = loop;
        el->arg = arg;
    }
    return el;
}

static void echo_loop_cleanup(void *ctx)
{
    free(ctx);
}

static void *echo_on_open(void *ctx, net_conn_ref ref, const struct sockaddr *peer)
{
    echo_loop *el = ctx;
    (void)peer;
    if (net_conn_is_admin(el->loop, ref)) {
        __atomic_add_fetch(&el->arg->admin_opens, 1, __ATOMIC_RELAXED);
    }
    if (el->arg->deadline_ms != 0) {
        net_conn_set_deadline(el->loop, ref, el->arg->deadline_ms);
    }
    return calloc(1, sizeof(echo_conn));
}

// echo_answer sends the first complete line of |c| (or starts its job).
static void echo_answer(echo_loop *el, echo_conn *c, net_conn_ref ref)
{
    if (c->busy) {
        return;
    }
    uint8_t *nl = memchr(c->buf, '\n', c->len);
    if (nl == NULL) {
        return;
    }
    const size_t line = (size_t)(nl - c->buf) + 1;
    uint8_t *copy = malloc(line);
    CM_CHECK(copy != NULL);
    memcpy(copy, c->buf, line);
    memmove(c->buf, c->buf + line, c->len - line);
    c->len -= line;
    c->busy = true;
    if (line == 2 && copy[0] == 'E') {
        free(copy);
        c->out = malloc(4);
        CM_CHECK(c->out != NULL);
        memcpy(c->out, "ERR\n", 4);
        CM_CHECK(cm_ok(net_conn_send(el->loop, ref, cm_span_make(c->out, 4), true)));
        return;
    }
    if (copy[0] == 'J') {
        echo_job *j = calloc(1, sizeof(*j));
        echo_worker_arg *w = malloc(sizeof(*w));
        CM_CHECK(j != NULL && w != NULL);
        j->node.kind = CM_CQ_KIND_USER;
        j->loop = el->loop;
        j->ref = ref;
        j->conn = c;
        j->payload = copy;
        j->len = line;
        w->job = j;
        w->delay_us = el->arg->job_delay_us;
        el->pending++;
        pthread_t t;
        CM_CHECK(pthread_create(&t, NULL, echo_worker, w) == 0);
        (void)pthread_detach(t);
        return;
    }
    c->out = copy;
    CM_CHECK(cm_ok(net_conn_send(el->loop, ref, cm_span_make(copy, line), false)));
}

static net_action echo_on_data(void *ctx, void *conn, net_conn_ref ref, cm_span data)
{
    echo_conn *c = conn;
    if (c->cap - c->len < data.len) {
        size_t cap = (c->cap + data.len) * 2;
        uint8_t *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            return NET_CLOSE;
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data.p, data.len);
    c->len += data.len;
    echo_answer(ctx, c, ref);
    return NET_CONTINUE;
}

static void echo_on_sent(void *ctx, void *conn, net_conn_ref ref, bool ok)
{
    echo_conn *c = conn;
    free(c->out);
    c->out = NULL;
    c->busy = false;
    if (ok) {
        echo_answer(ctx, c, ref);
    }
}

static void echo_on_close(void *ctx, void *conn)
{
    (void)ctx;
    echo_conn *c = conn;
    free(c->buf);
    free(c->out);
    // A job still out for this connection keeps its own payload; its completion finds the ref
    // stale and frees it.
    free(c);
}

static void echo_on_completion(void *ctx, cm_cq_node *node)
{
    echo_loop *el = ctx;
    echo_job *j = (echo_job *)node;
    el->pending--;
    __atomic_add_fetch(&el->arg->jobs_completed, 1, __ATOMIC_RELAXED);
    // The connection may have closed while the job was out: the ref says so.
    cm_result r = net_conn_send(el->loop, j->ref, cm_span_make(j->payload + 1, j->len - 1), false);
    if (!cm_ok(r)) {
        CM_CHECK(r.code == NET_E_GONE);
        __atomic_add_fetch(&el->arg->sends_to_gone, 1, __ATOMIC_RELAXED);
        free(j->payload);
    } else {
        // on_sent frees c->out; hand the payload over (the +1 offset is kept in the job).
        j->conn->out = j->payload;
    }
    free(j);
}

static net_action echo_on_timeout(void *ctx, void *conn, net_conn_ref ref)
{
    (void)ctx;
    (void)conn;
    (void)ref;
    return NET_CLOSE;
}

static bool echo_is_idle(void *ctx, void *conn)
{
    const echo_loop *el = ctx;
    const echo_conn *c = conn;
    return !c->busy && !(el->arg->partial_busy && c->len > 0);
}

// echo_on_eof closes at once when no line is being answered: a partial line can never
// complete once the peer has finished sending.
static net_action echo_on_eof(void *ctx, void *conn, net_conn_ref ref)
{
    const echo_loop *el = ctx;
    const echo_conn *c = conn;
    (void)ref;
    __atomic_add_fetch(&el->arg->eofs, 1, __ATOMIC_RELAXED);
    return c->busy ? NET_CONTINUE : NET_CLOSE;
}

static uint32_t echo_pending(void *ctx)
{
    return ((echo_loop *)ctx)->pending;
}

static const net_app k_echo_app = {
    .loop_init = echo_loop_init,
    .loop_cleanup = echo_loop_cleanup,
    .on_open = echo_on_open,
    .on_data = echo_on_data,
    .on_sent = echo_on_sent,
    .on_close = echo_on_close,
    .on_completion = echo_on_completion,
    .on_timeout = echo_on_timeout,
    .is_idle = echo_is_idle,
    .pending = echo_pending,
};

// The same application with the optional on_eof callback.
static const net_app k_echo_app_eof = {
    .loop_init = echo_loop_init,
    .loop_cleanup = echo_loop_cleanup,
    .on_open = echo_on_open,
    .on_data = echo_on_data,
    .on_sent = echo_on_sent,
    .on_close = echo_on_close,
    .on_completion = echo_on_completion,
    .on_timeout = echo_on_timeout,
    .is_idle = echo_is_idle,
    .pending = echo_pending,
    .on_eof = echo_on_eof,
};

// --- client helpers -------------------------------------------------------------------------

// client_connect_from connects to 127.0.0.1:|port| from the loopback address |src| (any
// 127.0.0.0/8 address works on Linux), so tests can play several peers.
static int client_connect_from(const char *src, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in from = {.sin_family = AF_INET};
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0 ||
        connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

static int client_connect(int family, uint16_t port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int rc;
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        a.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    }
    if (rc != 0) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

static bool client_send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k <= 0) {
            return false;
        }
        b += k;
        n -= (size_t)k;
    }
    return true;
}

// client_recv_exact reads exactly |n| bytes; false on EOF, error or the 10 s timeout.
static bool client_recv_exact(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t k = recv(fd, b, n, 0);
        if (k <= 0) {
            return false;
        }
        b += k;
        n -= (size_t)k;
    }
    return true;
}

// client_reset closes |fd| with a reset (SO_LINGER 0) instead of a FIN.
static void client_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    (void)close(fd);
}

// client_sees_eof waits up to |ms| for the server to close the connection.
static bool client_sees_eof(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0) {
        return false;
    }
    uint8_t b;
    return recv(fd, &b, 1, 0) == 0;
}

static net_server *start_server(const char *addr, uint32_t threads, uint32_t max_conns,
                                echo_app_arg *arg)
{
    const char *listen[] = {addr};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = threads,
                             .max_connections = max_conns,
                             .recv_buffers = 64,
                             .recv_buffer_size = 4096};
    net_server *s = NULL;
    cm_result r = net_server_start(&s, &cfg, &k_echo_app, arg);
    if (!cm_ok(r)) {
        fprintf(stderr, "net_server_start: %s\n", cm_result_name(r));
        return NULL;
    }
    return s;
}

static net_server *start_server_cfg(net_server_config *cfg, echo_app_arg *arg)
{
    net_server *s = NULL;
    cm_result r = net_server_start(&s, cfg, &k_echo_app, arg);
    if (!cm_ok(r)) {
        fprintf(stderr, "net_server_start: %s\n", cm_result_name(r));
        return NULL;
    }
    return s;
}

// --- tests ----------------------------------------------------------------------------------

static void test_net_echo_keepalive_1000_round_trips(void)
{
    echo_app_arg arg = {0};
    net_server *s = start_server("127.0.0.1:0", 2, 64, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    bool all_ok = true;
    for (int i = 0; i < 1000 && all_ok; i++) {
        char line[32], back[32];
        int n = snprintf(line, sizeof(line), "request-%04d\n", i);
        all_ok = client_send_all(fd, line, (size_t)n) && client_recv_exact(fd, back, (size_t)n) &&
                 memcmp(line, back, (size_t)n) == 0;
    }
    CU_ASSERT_TRUE(all_ok);
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_large_payload_partial_sends(void)
{
    echo_app_arg arg = {0};
    net_server *s = start_server("127.0.0.1:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    // 4 MiB: many 4 KiB receive buffers (and ENOBUFS re-arms with 64 of them), and a send the
    // kernel cannot take at once while the client is still sending.
    const size_t n = 4u << 20;
    uint8_t *out = malloc(n), *back = malloc(n);
    CU_ASSERT_FATAL(out != NULL && back != NULL);
    for (size_t i = 0; i < n - 1; i++) {
        out[i] = (uint8_t)('a' + i % 26);
    }
    out[n - 1] = '\n';
    CU_ASSERT_TRUE(client_send_all(fd, out, n));
    CU_ASSERT_TRUE(client_recv_exact(fd, back, n));
    CU_ASSERT_EQUAL(memcmp(out, back, n), 0);
    free(out);
    free(back);
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_200_concurrent_connections(void)
{
    echo_app_arg arg = {0};
    const char *listen[] = {"127.0.0.1:0"};
    // All from 127.0.0.1: the per-peer cap (256 per loop by default) is lifted here.
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 2,
                             .max_connections = 256,
                             .max_connections_per_peer = NET_NO_LIMIT,
                             .recv_buffers = 64,
                             .recv_buffer_size = 4096};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    enum { N = 200 };
    int fds[N];
    int ok = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = client_connect(AF_INET, net_server_port(s, 0));
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            char line[32];
            int n = snprintf(line, sizeof(line), "c%03d-r%d\n", i, round);
            (void)client_send_all(fds[i], line, (size_t)n);
        }
        for (int i = 0; i < N; i++) {
            char line[32], back[32];
            int n = snprintf(line, sizeof(line), "c%03d-r%d\n", i, round);
            ok += client_recv_exact(fds[i], back, (size_t)n) && memcmp(back, line, (size_t)n) == 0;
        }
    }
    CU_ASSERT_EQUAL(ok, 3 * N);
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.accepted, N);
    CU_ASSERT_EQUAL(st.open, N);
    for (int i = 0; i < N; i++) {
        (void)close(fds[i]);
    }
    net_server_stop(s);
    net_server_wait(s);
}

// Connections are balanced over the loops: SO_REUSEPORT alone places them by a hash of their
// addresses (for 32 connections an even split comes out about one time in seven); a loop that
// accepts while another has fewer hands the new connection over. 32 connections opened one
// after another end up 16 and 16, some of them handed over, every one echoing on the loop
// that took it.
static bool wait_open(net_server *s, uint64_t want);

static void test_net_connections_balanced_over_loops(void)
{
    echo_app_arg arg = {0};
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 2,
                             .max_connections = 64,
                             .max_connections_per_peer = NET_NO_LIMIT,
                             .recv_buffers = 64,
                             .recv_buffer_size = 4096};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    enum { N = 32 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = client_connect(AF_INET, net_server_port(s, 0));
        CU_ASSERT_TRUE(fds[i] >= 0 && wait_open(s, (uint64_t)i + 1));
    }
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.open, N);
    CU_ASSERT_EQUAL(st.open_loop_min, N / 2);
    CU_ASSERT_EQUAL(st.open_loop_max, N / 2);
    CU_ASSERT_TRUE(st.handed_off >= 1);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        char line[16], back[16];
        const int n = snprintf(line, sizeof(line), "b%02d\n", i);
        ok += client_send_all(fds[i], line, (size_t)n) &&
              client_recv_exact(fds[i], back, (size_t)n) && memcmp(back, line, (size_t)n) == 0;
    }
    CU_ASSERT_EQUAL(ok, N);
    for (int i = 0; i < N; i++) {
        (void)close(fds[i]);
    }
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_excess_connections_closed_at_once(void)
{
    echo_app_arg arg = {0};
    net_server *s = start_server("127.0.0.1:0", 1, 4, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fds[6];
    for (int i = 0; i < 6; i++) {
        fds[i] = client_connect(AF_INET, net_server_port(s, 0));
        CU_ASSERT(fds[i] >= 0);
    }
    // The first four are served; the last two are closed without a byte.
    for (int i = 0; i < 4; i++) {
        char back[3];
        CU_ASSERT_TRUE(client_send_all(fds[i], "ok\n", 3) && client_recv_exact(fds[i], back, 3));
    }
    CU_ASSERT_TRUE(client_sees_eof(fds[4], 5000));
    CU_ASSERT_TRUE(client_sees_eof(fds[5], 5000));
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.rejected_full, 2);
    for (int i = 0; i < 6; i++) {
        (void)close(fds[i]);
    }
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_deadline_closes_idle_connection(void)
{
    echo_app_arg arg = {.deadline_ms = 300};
    net_server *s = start_server("127.0.0.1:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_TRUE(client_sees_eof(fd, 5000));
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.timeouts, 1);
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_completions_from_other_threads(void)
{
    echo_app_arg arg = {.job_delay_us = 2000};
    net_server *s = start_server("127.0.0.1:0", 2, 64, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    int ok = 0;
    for (int i = 0; i < 50; i++) {
        char back[16];
        ok += client_send_all(fd, "Jhello-job\n", 11) && client_recv_exact(fd, back, 10) &&
              memcmp(back, "hello-job\n", 10) == 0;
    }
    CU_ASSERT_EQUAL(ok, 50);
    // A job whose connection went away (reset by the peer): the completion's send finds the
    // ref stale. (A plain close is only an EOF: the answer would still be sent.)
    arg.job_delay_us = 200000;
    int fd2 = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_TRUE(client_send_all(fd2, "Jlost\n", 6));
    usleep(50000);
    client_reset(fd2);
    for (int i = 0; i < 100 && __atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED) == 0; i++) {
        usleep(20000);
    }
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED), 1);
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.closed_busy, 1); // the reset discarded a request in progress (logged)
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_graceful_stop_answers_work_in_flight(void)
{
    echo_app_arg arg = {.job_delay_us = 300000};
    net_server *s = start_server("127.0.0.1:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const uint16_t port = net_server_port(s, 0);
    int busy = client_connect(AF_INET, port);
    int idle = client_connect(AF_INET, port);
    CU_ASSERT_FATAL(busy >= 0 && idle >= 0);
    char back[8];
    CU_ASSERT_TRUE(client_send_all(idle, "x\n", 2) && client_recv_exact(idle, back, 2));
    CU_ASSERT_TRUE(client_send_all(busy, "Jslow\n", 6));
    usleep(50000); // the job is out
    net_server_stop(s);
    // The idle connection is closed; the busy one still gets its answer, then EOF.
    CU_ASSERT_TRUE(client_sees_eof(idle, 5000));
    CU_ASSERT_TRUE(client_recv_exact(busy, back, 5));
    CU_ASSERT_EQUAL(memcmp(back, "slow\n", 5), 0);
    CU_ASSERT_TRUE(client_sees_eof(busy, 5000));
    net_server_wait(s);
    // New connections are refused once stopped.
    CU_ASSERT_EQUAL(client_connect(AF_INET, port), -1);
    (void)close(busy);
    (void)close(idle);
}


// churn_arg drives connections from 127.0.0.2 that connect, send a partial line and close,
// until |stop|.
typedef struct churn_arg {
    uint16_t port;
    int stop;        // atomic
    unsigned opened; // atomic: connections made
} churn_arg;

static void *churn_main(void *p)
{
    churn_arg *a = p;
    while (__atomic_load_n(&a->stop, __ATOMIC_RELAXED) == 0) {
        int fd = client_connect_from("127.0.0.2", a->port);
        if (fd < 0) {
            usleep(1000);
            continue;
        }
        (void)send(fd, "partial", 7, MSG_NOSIGNAL);
        (void)close(fd);
        __atomic_add_fetch(&a->opened, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

// The lost answers of issue 23: a ring whose completion queue is tiny (16 entries), many
// keep-alive connections whose requests are answered from another thread, and churn beside
// them. Every request on a keep-alive connection must get its answer: when the kernel cannot
// post a completion it ends the multishot recv with a last completion that still carries data,
// and that is not the peer leaving.
static void test_net_no_answer_lost_under_cq_pressure(void)
{
    echo_app_arg arg = {.job_delay_us = 500};
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 1,
                             .max_connections = 512,
                             .ring_entries = 4,
                             .recv_buffers = 64,
                             .recv_buffer_size = 4096};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const uint16_t port = net_server_port(s, 0);
    enum { N = 48, ROUNDS = 40, CHURNERS = 2 };
    churn_arg churn = {.port = port};
    pthread_t ct[CHURNERS];
    for (int i = 0; i < CHURNERS; i++) {
        CU_ASSERT_FATAL(pthread_create(&ct[i], NULL, churn_main, &churn) == 0);
    }
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = client_connect(AF_INET, port);
        CU_ASSERT_FATAL(fds[i] >= 0);
    }
    int answered = 0, lost = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < N; i++) {
            char line[32];
            int n = snprintf(line, sizeof(line), "Jc%03d-r%03d\n", i, round);
            (void)client_send_all(fds[i], line, (size_t)n);
        }
        for (int i = 0; i < N; i++) {
            char line[32], back[32];
            int n = snprintf(line, sizeof(line), "c%03d-r%03d\n", i, round);
            if (fds[i] < 0) {
                continue;
            }
            if (client_recv_exact(fds[i], back, (size_t)n) && memcmp(back, line, (size_t)n) == 0) {
                answered++;
            } else {
                lost++; // the connection closed (or failed) without this answer
                (void)close(fds[i]);
                fds[i] = client_connect(AF_INET, port);
            }
        }
    }
    __atomic_store_n(&churn.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < CHURNERS; i++) {
        (void)pthread_join(ct[i], NULL);
    }
    net_stats st;
    net_server_stats(s, &st);
    fprintf(stderr,
            "\n  answered %d lost %d (sends to gone %d), churn %u connections; cq_overflow %llu "
            "recv_rearms %llu closed_busy %llu\n",
            answered, lost, __atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED), churn.opened,
            (unsigned long long)st.cq_overflow, (unsigned long long)st.recv_rearms,
            (unsigned long long)st.closed_busy);
    CU_ASSERT(st.cq_overflow > 0); // the pressure this test is about did happen
    CU_ASSERT_EQUAL(st.closed_busy, 0);
    CU_ASSERT_EQUAL(lost, 0);
    CU_ASSERT_EQUAL(answered, N * ROUNDS);
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED), 0);
    for (int i = 0; i < N; i++) {
        if (fds[i] >= 0) {
            (void)close(fds[i]);
        }
    }
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_half_closed_peer_gets_its_answers(void)
{
    echo_app_arg arg = {.job_delay_us = 100000};
    net_server *s = start_server("127.0.0.1:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    // Two requests, then the peer shuts down its writing side while the first is out: both
    // are still answered, then the server closes.
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_TRUE(client_send_all(fd, "Jone\nJtwo\n", 10));
    CU_ASSERT_EQUAL(shutdown(fd, SHUT_WR), 0);
    char back[8];
    CU_ASSERT_TRUE(client_recv_exact(fd, back, 8));
    CU_ASSERT_EQUAL(memcmp(back, "one\ntwo\n", 8), 0);
    CU_ASSERT_TRUE(client_sees_eof(fd, 5000));
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.eof_busy, 1);
    CU_ASSERT_EQUAL(st.closed_busy, 0);
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED), 0);
    (void)close(fd);
    // An idle connection that sees EOF is closed at once.
    fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_TRUE(client_send_all(fd, "x\n", 2) && client_recv_exact(fd, back, 2));
    CU_ASSERT_EQUAL(shutdown(fd, SHUT_WR), 0);
    CU_ASSERT_TRUE(client_sees_eof(fd, 2000));
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_on_eof_closes_a_partial_request(void)
{
    echo_app_arg arg = {.partial_busy = true};
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen, .num_listen = 1, .io_threads = 1};
    net_server *s = NULL;
    TEST_ASSERT_OK(net_server_start(&s, &cfg, &k_echo_app_eof, &arg));
    // A partial line is "busy" for is_idle, but the application's on_eof knows it can never
    // complete and closes at once.
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_TRUE(client_send_all(fd, "partial", 7));
    CU_ASSERT_EQUAL(shutdown(fd, SHUT_WR), 0);
    CU_ASSERT_TRUE(client_sees_eof(fd, 2000));
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.eofs, __ATOMIC_RELAXED), 1);
    (void)close(fd);
    // With a line being answered, on_eof keeps the connection for its answer.
    arg.job_delay_us = 50000;
    fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_TRUE(client_send_all(fd, "Jkept\n", 6));
    usleep(10000);
    CU_ASSERT_EQUAL(shutdown(fd, SHUT_WR), 0);
    char back[5];
    CU_ASSERT_TRUE(client_recv_exact(fd, back, 5) && memcmp(back, "kept\n", 5) == 0);
    CU_ASSERT_TRUE(client_sees_eof(fd, 2000));
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.eofs, __ATOMIC_RELAXED), 2);
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

#define TEST_REJECT                                                               \
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n" \
    "Content-Length: 0\r\n\r\n"

// client_reads_reject checks that |fd| receives exactly the reject bytes, then EOF.
static bool client_reads_reject(int fd)
{
    char back[sizeof(TEST_REJECT) - 1];
    return fd >= 0 && client_recv_exact(fd, back, sizeof(back)) &&
           memcmp(back, TEST_REJECT, sizeof(back)) == 0 && client_sees_eof(fd, 5000);
}

static bool client_echo_ok(int fd)
{
    char back[3];
    return fd >= 0 && client_send_all(fd, "ok\n", 3) && client_recv_exact(fd, back, 3) &&
           memcmp(back, "ok\n", 3) == 0;
}

// wait_open waits up to 2 s until the server has |want| connections open.
static bool wait_open(net_server *s, uint64_t want)
{
    for (int i = 0; i < 200; i++) {
        net_stats st;
        net_server_stats(s, &st);
        if (st.open == want) {
            return true;
        }
        usleep(10000);
    }
    return false;
}

static void test_net_full_loop_sends_reject_response(void)
{
    echo_app_arg arg = {0};
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 1,
                             .max_connections = 2,
                             .reject_response = CM_SPAN_LIT(TEST_REJECT)};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const uint16_t port = net_server_port(s, 0);
    int a = client_connect(AF_INET, port), b = client_connect(AF_INET, port);
    CU_ASSERT_TRUE(client_echo_ok(a) && client_echo_ok(b));
    int c = client_connect(AF_INET, port);
    CU_ASSERT_TRUE(client_reads_reject(c));
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.rejected_full, 1);
    CU_ASSERT_EQUAL(st.rejected_peer, 0);
    CU_ASSERT_EQUAL(st.open, 2);
    (void)close(a);
    (void)close(b);
    (void)close(c);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_per_peer_cap(void)
{
    echo_app_arg arg = {0};
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 1,
                             .max_connections = 16,
                             .max_connections_per_peer = 2,
                             .reject_response = CM_SPAN_LIT(TEST_REJECT)};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const uint16_t port = net_server_port(s, 0);
    int a = client_connect_from("127.0.0.1", port), b = client_connect_from("127.0.0.1", port);
    CU_ASSERT_TRUE(client_echo_ok(a) && client_echo_ok(b));
    // A third from the same address is refused with the reject bytes; other addresses are not.
    int c = client_connect_from("127.0.0.1", port);
    CU_ASSERT_TRUE(client_reads_reject(c));
    (void)close(c);
    int d = client_connect_from("127.0.0.3", port), e = client_connect_from("127.0.0.3", port);
    CU_ASSERT_TRUE(client_echo_ok(d) && client_echo_ok(e));
    int f = client_connect_from("127.0.0.3", port);
    CU_ASSERT_TRUE(client_reads_reject(f));
    (void)close(f);
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.rejected_peer, 2);
    CU_ASSERT_EQUAL(st.rejected_full, 0);
    // A closed connection gives its place back to its address.
    (void)close(a);
    CU_ASSERT_TRUE(wait_open(s, 3));
    a = client_connect_from("127.0.0.1", port);
    CU_ASSERT_TRUE(client_echo_ok(a));
    (void)close(a);
    (void)close(b);
    (void)close(d);
    (void)close(e);
    CU_ASSERT_TRUE(wait_open(s, 0));
    // Many addresses come and go: the table's deletions keep every count right.
    for (int round = 0; round < 3; round++) {
        int fds[12];
        for (int i = 0; i < 12; i++) {
            char src[32];
            (void)snprintf(src, sizeof(src), "127.0.%d.%d", 1 + i % 6, 10 + round);
            fds[i] = client_connect_from(src, port);
            CU_ASSERT_TRUE(client_echo_ok(fds[i])); // two per address: all within the cap
        }
        for (int i = 0; i < 12; i += 2) {
            (void)close(fds[i]);
        }
        CU_ASSERT_TRUE(wait_open(s, 6));
        for (int i = 1; i < 12; i += 2) {
            (void)close(fds[i]);
        }
        CU_ASSERT_TRUE(wait_open(s, 0));
    }
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.rejected_peer, 2);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_admin_listener_has_its_own_budget(void)
{
    echo_app_arg arg = {0};
    const char *listen[] = {"127.0.0.1:0"};
    const char *admin[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 1,
                             .max_connections = 1,
                             .admin_listen = admin,
                             .num_admin_listen = 1,
                             .admin_max_connections = 1,
                             .reject_response = CM_SPAN_LIT(TEST_REJECT)};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const uint16_t port = net_server_port(s, 0), aport = net_server_admin_port(s, 0);
    CU_ASSERT(aport != 0 && aport != port);
    CU_ASSERT_EQUAL(net_server_admin_port(s, 1), 0);
    int m1 = client_connect(AF_INET, port);
    CU_ASSERT_TRUE(client_echo_ok(m1));
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.admin_opens, __ATOMIC_RELAXED), 0);
    int m2 = client_connect(AF_INET, port);
    CU_ASSERT_TRUE(client_reads_reject(m2));
    // The main slots are full; monitoring still gets in on the admin listener.
    int a1 = client_connect(AF_INET, aport);
    CU_ASSERT_TRUE(client_echo_ok(a1));
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.admin_opens, __ATOMIC_RELAXED), 1);
    int a2 = client_connect(AF_INET, aport);
    CU_ASSERT_TRUE(client_reads_reject(a2));
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.rejected_full, 1);
    CU_ASSERT_EQUAL(st.rejected_admin, 1);
    CU_ASSERT_EQUAL(st.open, 2);
    CU_ASSERT_EQUAL(st.admin_open, 1);
    (void)close(m1);
    (void)close(m2);
    (void)close(a1);
    (void)close(a2);
    CU_ASSERT_TRUE(wait_open(s, 0));
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.admin_open, 0);
    net_server_stop(s);
    net_server_wait(s);
}

// thread_stat_open opens /proc/self/task/TID/stat of this process's thread named |name|
// (pthread_setname_np); -1 when there is none. Kept open, it can be read without a new
// descriptor (thread_cpu_ticks).
static int thread_stat_open(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) {
        return -1;
    }
    int fd = -1;
    for (struct dirent *e = readdir(d); e != NULL && fd < 0; e = readdir(d)) {
        char path[300], buf[64];
        if (e->d_name[0] == '.') {
            continue;
        }
        (void)snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        const size_t n = strlen(name);
        const bool match =
            fgets(buf, sizeof(buf), f) != NULL && strncmp(buf, name, n) == 0 && buf[n] == '\n';
        (void)fclose(f);
        if (match) {
            (void)snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
            fd = open(path, O_RDONLY | O_CLOEXEC);
        }
    }
    (void)closedir(d);
    return fd;
}

// thread_cpu_ticks returns the thread's CPU time (user + system, in clock ticks), or -1.
static long thread_cpu_ticks(int stat_fd)
{
    char buf[1024];
    const ssize_t n = pread(stat_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    // After the command's closing parenthesis: state (field 3) ... utime (14), stime (15).
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
        return -1;
    }
    return (long)(ut + st);
}

// With no descriptor left, the loop pauses accepting (about 10 times a second) instead of
// re-arming the accept at once, which spun a core while the backlog waited.
static void test_net_accept_backs_off_on_emfile(void)
{
    struct rlimit old;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &old) == 0);
    // The accept takes the limit in force when it is armed: lower it before the server starts.
    const int lowest = dup(0);
    CU_ASSERT_FATAL(lowest >= 0);
    (void)close(lowest);
    struct rlimit low = old;
    low.rlim_cur = (rlim_t)lowest + 64;
    CU_ASSERT_FATAL(low.rlim_cur <= old.rlim_max && setrlimit(RLIMIT_NOFILE, &low) == 0);
    echo_app_arg arg = {0};
    net_server *s = start_server("127.0.0.1:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const uint16_t port = net_server_port(s, 0);
    const int stat_fd = thread_stat_open("cm-io0");
    CU_ASSERT_FATAL(stat_fd >= 0);
    enum { CLIENTS = 3 };
    int cl[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CU_ASSERT_FATAL(cl[i] >= 0);
        struct timeval tv = {.tv_sec = 10};
        (void)setsockopt(cl[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    // Use up every descriptor the process has left.
    int fill[64];
    int num_fill = 0;
    while (num_fill < 64) {
        const int fd = dup(0);
        if (fd < 0) {
            break;
        }
        fill[num_fill++] = fd;
    }
    CU_ASSERT_FATAL(errno == EMFILE && num_fill < 64);
    const long cpu0 = thread_cpu_ticks(stat_fd);
    for (int i = 0; i < CLIENTS; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CU_ASSERT(connect(cl[i], (struct sockaddr *)&a, sizeof(a)) == 0); // in the backlog
    }
    usleep(600000);
    const long cpu1 = thread_cpu_ticks(stat_fd);
    net_stats st;
    net_server_stats(s, &st);
    fprintf(stderr, "\n  accept_emfile %llu in 600 ms, loop cpu %ld ticks\n",
            (unsigned long long)st.accept_emfile, cpu1 - cpu0);
    CU_ASSERT(st.accept_emfile >= 2 && st.accept_emfile <= 12);
    CU_ASSERT(cpu0 >= 0 && cpu1 - cpu0 <= 15); // at most 150 ms of 600: not spinning
    CU_ASSERT_EQUAL(st.accepted, 0);
    // Descriptors come back: the waiting connections are accepted and served.
    for (int i = 0; i < num_fill; i++) {
        (void)close(fill[i]);
    }
    for (int i = 0; i < CLIENTS; i++) {
        CU_ASSERT_TRUE(client_echo_ok(cl[i]));
        (void)close(cl[i]);
    }
    (void)close(stat_fd);
    net_server_stop(s);
    net_server_wait(s);
    CU_ASSERT(setrlimit(RLIMIT_NOFILE, &old) == 0);
}

static void test_net_fd_limit_raise(void)
{
    struct rlimit old;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &old) == 0);
    CU_ASSERT_FATAL(old.rlim_max != RLIM_INFINITY && old.rlim_max >= 1024);
    struct rlimit low = {.rlim_cur = 512, .rlim_max = old.rlim_max};
    CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &low) == 0);
    uint64_t got = 0;
    TEST_ASSERT_OK(net_fd_limit_raise(1000, &got));
    CU_ASSERT_EQUAL(got, 1000);
    struct rlimit now;
    CU_ASSERT(getrlimit(RLIMIT_NOFILE, &now) == 0 && now.rlim_cur == 1000);
    // Never lowered.
    TEST_ASSERT_OK(net_fd_limit_raise(100, &got));
    CU_ASSERT_EQUAL(got, 1000);
    // Bounded by the hard limit, and 0 means as high as allowed.
    TEST_ASSERT_OK(net_fd_limit_raise((uint64_t)old.rlim_max + 1000, &got));
    CU_ASSERT_EQUAL(got, (uint64_t)old.rlim_max);
    CU_ASSERT(setrlimit(RLIMIT_NOFILE, &low) == 0);
    TEST_ASSERT_OK(net_fd_limit_raise(0, &got));
    CU_ASSERT_EQUAL(got, (uint64_t)old.rlim_max);
    CU_ASSERT(setrlimit(RLIMIT_NOFILE, &old) == 0);
}

static void test_net_fds_needed(void)
{
    const char *listen[] = {"127.0.0.1:0", "[::1]:0"};
    const char *admin[] = {"127.0.0.1:0"};
    net_server_config cfg = {
        .listen = listen, .num_listen = 2, .io_threads = 2, .max_connections = 100};
    // Per loop: ring + eventfd, 2 listeners, 100 connections, 64 refused in flight.
    CU_ASSERT_EQUAL(net_server_fds_needed(&cfg), 2u * (2 + 2 + 100 + 64));
    cfg.admin_listen = admin;
    cfg.num_admin_listen = 1;
    CU_ASSERT_EQUAL(net_server_fds_needed(&cfg),
                    2u * (2 + 3 + 100 + NET_DEFAULT_ADMIN_MAX_CONNECTIONS + 64));
    cfg.max_connections = 0;
    cfg.admin_max_connections = 4;
    CU_ASSERT_EQUAL(net_server_fds_needed(&cfg),
                    2u * (2 + 3 + NET_DEFAULT_MAX_CONNECTIONS + 4 + 64));
}

// A client that sends a large body gets an early close_after answer, and can still send its
// whole body and read the whole answer: the server shuts down writing and drains the input
// instead of closing (a close with unread input sends a reset).
static void test_net_lingering_close_after_early_answer(void)
{
    echo_app_arg arg = {0};
    net_server *s = start_server("127.0.0.1:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_TRUE(client_send_all(fd, "E\n", 2));
    usleep(50000); // the answer is sent and the server is done with the connection
    static uint8_t piece[4096];
    memset(piece, 'b', sizeof(piece));
    bool sent = true;
    for (int i = 0; i < 50 && sent; i++) { // 200 KiB, still within the 256 KiB budget
        sent = client_send_all(fd, piece, sizeof(piece));
        usleep(1000);
    }
    CU_ASSERT_TRUE(sent);
    char back[4];
    CU_ASSERT_TRUE(client_recv_exact(fd, back, 4) && memcmp(back, "ERR\n", 4) == 0);
    CU_ASSERT_EQUAL(recv(fd, back, 1, 0), 0); // a clean end, not a reset
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.lingered, 1);
    CU_ASSERT_EQUAL(st.open, 1); // still draining until we close
    (void)close(fd);
    CU_ASSERT_TRUE(wait_open(s, 0));
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_lingering_close_is_bounded(void)
{
    echo_app_arg arg = {0};
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 1,
                             .io_threads = 1,
                             .max_connections = 8,
                             .linger_ms = 300,
                             .linger_bytes = 65536};
    net_server *s = start_server_cfg(&cfg, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    // In time: a peer that neither sends nor closes is closed once linger_ms pass.
    int fd = client_connect(AF_INET, net_server_port(s, 0));
    char back[4];
    CU_ASSERT_TRUE(client_send_all(fd, "E\n", 2) && client_recv_exact(fd, back, 4));
    CU_ASSERT_TRUE(wait_open(s, 1));
    const uint64_t t0 = cm_time_mono_ns();
    CU_ASSERT_TRUE(wait_open(s, 0));
    const uint64_t ms = (cm_time_mono_ns() - t0) / 1000000u;
    CU_ASSERT(ms >= 100 && ms <= 1000);
    (void)close(fd);
    // In size: a peer that keeps sending is cut off after linger_bytes.
    fd = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_TRUE(client_send_all(fd, "E\n", 2) && client_recv_exact(fd, back, 4));
    static uint8_t piece[4096];
    memset(piece, 'b', sizeof(piece));
    int pieces = 0;
    while (pieces < 1024 && client_send_all(fd, piece, sizeof(piece))) {
        pieces++; // 4 MiB at most; the reset stops it much earlier
        usleep(100);
    }
    CU_ASSERT(pieces < 1024);
    CU_ASSERT_TRUE(wait_open(s, 0));
    (void)close(fd);
    net_stats st;
    net_server_stats(s, &st);
    CU_ASSERT_EQUAL(st.lingered, 2);
    CU_ASSERT_EQUAL(st.timeouts, 0); // a linger's end is not an application timeout
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_ipv6_loopback(void)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(probe >= 0); // the test machines have IPv6 loopback
    (void)close(probe);
    echo_app_arg arg = {0};
    net_server *s = start_server("[::1]:0", 1, 8, &arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int fd = client_connect(AF_INET6, net_server_port(s, 0));
    CU_ASSERT_FATAL(fd >= 0);
    char back[4];
    CU_ASSERT_TRUE(client_send_all(fd, "v6\n", 3) && client_recv_exact(fd, back, 3));
    (void)close(fd);
    net_server_stop(s);
    net_server_wait(s);
}

static void test_net_rejects_bad_listen_addresses(void)
{
    static const char *const bad[] = {"127.0.0.1", "localhost:80", "127.0.0.1:99999",
                                      "[::1:80",   "1.2.3.4:",     ":80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *listen[] = {bad[i]};
        net_server_config cfg = {.listen = listen, .num_listen = 1, .io_threads = 1};
        net_server *s = NULL;
        TEST_ASSERT_CODE(net_server_start(&s, &cfg, &k_echo_app, NULL), NET_E_ADDRESS);
        CU_ASSERT_PTR_NULL(s);
    }
    // A port already bound by another (non-reuseport) socket.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 1) == 0);
    socklen_t len = sizeof(a);
    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    char addr[32];
    (void)snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(a.sin_port));
    const char *listen[] = {addr};
    net_server_config cfg = {.listen = listen, .num_listen = 1, .io_threads = 1};
    net_server *s = NULL;
    TEST_ASSERT_CODE(net_server_start(&s, &cfg, &k_echo_app, NULL), cm_code_from_errno(EADDRINUSE));
    (void)close(fd);
}

// The TLS cases (test_net_tls.c) and their fixture (a test PKI made once for the suite).
int test_net_tls_init(void);
int test_net_tls_cleanup(void);
size_t test_net_tls_cases(const test_case **out);

int test_net_register(void);
int test_net_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_net_echo_keepalive_1000_round_trips),
        TEST_CASE(test_net_large_payload_partial_sends),
        TEST_CASE(test_net_200_concurrent_connections),
        TEST_CASE(test_net_connections_balanced_over_loops),
        TEST_CASE(test_net_excess_connections_closed_at_once),
        TEST_CASE(test_net_deadline_closes_idle_connection),
        TEST_CASE(test_net_completions_from_other_threads),
        TEST_CASE(test_net_graceful_stop_answers_work_in_flight),
        TEST_CASE(test_net_ipv6_loopback),
        TEST_CASE(test_net_rejects_bad_listen_addresses),
        TEST_CASE(test_net_no_answer_lost_under_cq_pressure),
        TEST_CASE(test_net_half_closed_peer_gets_its_answers),
        TEST_CASE(test_net_on_eof_closes_a_partial_request),
        TEST_CASE(test_net_full_loop_sends_reject_response),
        TEST_CASE(test_net_per_peer_cap),
        TEST_CASE(test_net_admin_listener_has_its_own_budget),
        TEST_CASE(test_net_accept_backs_off_on_emfile),
        TEST_CASE(test_net_fd_limit_raise),
        TEST_CASE(test_net_fds_needed),
        TEST_CASE(test_net_lingering_close_after_early_answer),
        TEST_CASE(test_net_lingering_close_is_bounded),
    };
    const test_case *tls = NULL;
    const size_t num_tls = test_net_tls_cases(&tls);
    const size_t n = TEST_NUM_CASES(tests);
    static test_case all[TEST_NUM_CASES(tests) + 16];
    if (num_tls > sizeof(all) / sizeof(all[0]) - n) {
        fprintf(stderr, "test_net_register: too many TLS cases\n");
        return 1;
    }
    memcpy(all, tests, sizeof(tests));
    memcpy(all + n, tls, num_tls * sizeof(*tls));
    return test_register_suite("net", test_net_tls_init, test_net_tls_cleanup, NULL, NULL, all,
                               n + num_tls);
}
