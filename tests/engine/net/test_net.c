// Suite "net": the io_uring transport with a line-echo application over real loopback
// sockets. A line "TEXT\n" is answered "TEXT\n" at once; a line "JTEXT\n" is answered after a
// worker thread finishes a job and pushes it into the loop's completion queue.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
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
    int sends_to_gone;  // atomic
    int jobs_completed; // atomic
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
    (void)ctx;
    const echo_conn *c = conn;
    return !c->busy;
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

// --- client helpers -------------------------------------------------------------------------

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
    net_server *s = start_server("127.0.0.1:0", 2, 256, &arg);
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
    // A job whose connection went away: the completion's send finds the ref stale.
    arg.job_delay_us = 200000;
    int fd2 = client_connect(AF_INET, net_server_port(s, 0));
    CU_ASSERT_TRUE(client_send_all(fd2, "Jlost\n", 6));
    usleep(50000);
    (void)close(fd2);
    for (int i = 0; i < 100 && __atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED) == 0; i++) {
        usleep(20000);
    }
    CU_ASSERT_EQUAL(__atomic_load_n(&arg.sends_to_gone, __ATOMIC_RELAXED), 1);
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

int test_net_register(void);
int test_net_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_net_echo_keepalive_1000_round_trips),
        TEST_CASE(test_net_large_payload_partial_sends),
        TEST_CASE(test_net_200_concurrent_connections),
        TEST_CASE(test_net_excess_connections_closed_at_once),
        TEST_CASE(test_net_deadline_closes_idle_connection),
        TEST_CASE(test_net_completions_from_other_threads),
        TEST_CASE(test_net_graceful_stop_answers_work_in_flight),
        TEST_CASE(test_net_ipv6_loopback),
        TEST_CASE(test_net_rejects_bad_listen_addresses),
    };
    return test_register_suite("net", NULL, NULL, NULL, NULL, tests, TEST_NUM_CASES(tests));
}
