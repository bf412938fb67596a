// Suite "net", TLS cases (test_net.c registers them with its own): engine/net's TLS listeners
// with a line-echo application over real loopback sockets, driven by an in-process OpenSSL
// client on the test thread. A line "TEXT\n" is answered "TEXT\n"; "I\n" is answered with what
// net_conn_tls_info says ("subject|resumed|version\n"); "Q\n" is answered "BYE\n" as the last
// answer (close_after).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "engine/net/net.h"
#include "tests/support/test_support.h"

int test_net_tls_init(void);
int test_net_tls_cleanup(void);
size_t test_net_tls_cases(const test_case **out);

// --- the fixture: a CA, the server's certificate, a client certificate, a foreign one -------

typedef struct tls_fixture {
    char dir[128];
    char ca_key[192], ca_cert[192];
    char srv_key[192], srv_cert[192];
    char cli_key[192], cli_cert[192];
    char rogue_key[192], rogue_cert[192], rogue_cli_key[192], rogue_cli_cert[192];
    char other_key[192];
} tls_fixture;

static tls_fixture g_fx;

static void fx_path(char *out, const char *name)
{
    (void)snprintf(out, 192, "%s/%s", g_fx.dir, name);
}

int test_net_tls_init(void)
{
    if (!test_tmpdir(g_fx.dir, sizeof(g_fx.dir), "net-tls")) {
        return 1;
    }
    fx_path(g_fx.ca_key, "ca.key");
    fx_path(g_fx.ca_cert, "ca.pem");
    fx_path(g_fx.srv_key, "srv.key");
    fx_path(g_fx.srv_cert, "srv.pem");
    fx_path(g_fx.cli_key, "cli.key");
    fx_path(g_fx.cli_cert, "cli.pem");
    fx_path(g_fx.rogue_key, "rogue.key");
    fx_path(g_fx.rogue_cert, "rogue.pem");
    fx_path(g_fx.rogue_cli_key, "rogue-cli.key");
    fx_path(g_fx.rogue_cli_cert, "rogue-cli.pem");
    fx_path(g_fx.other_key, "other.key");
    const test_pki_cert_spec ca = {.subject = "/O=certmint tests/CN=net TLS CA", .days = 2};
    const test_pki_cert_spec srv = {.subject = "/CN=localhost", .days = 2};
    const test_pki_cert_spec cli = {.subject = "/O=certmint tests/CN=ra-front-end", .days = 2};
    const test_pki_cert_spec rogue = {.subject = "/CN=rogue CA", .days = 2};
    const test_pki_cert_spec rcli = {.subject = "/CN=ra-front-end", .days = 2};
    return test_pki_make_ca(g_fx.ca_key, g_fx.ca_cert, &ca, NULL) &&
                   test_pki_issue(g_fx.srv_key, g_fx.srv_cert, g_fx.ca_key, g_fx.ca_cert, &srv,
                                  NULL) &&
                   test_pki_issue(g_fx.cli_key, g_fx.cli_cert, g_fx.ca_key, g_fx.ca_cert, &cli,
                                  NULL) &&
                   test_pki_make_ca(g_fx.rogue_key, g_fx.rogue_cert, &rogue, NULL) &&
                   test_pki_issue(g_fx.rogue_cli_key, g_fx.rogue_cli_cert, g_fx.rogue_key,
                                  g_fx.rogue_cert, &rcli, NULL) &&
                   test_pki_make_key(g_fx.other_key, TEST_PKI_EC_P256, NULL)
               ? 0
               : 1;
}

int test_net_tls_cleanup(void)
{
    if (g_fx.dir[0] != '\0') {
        (void)test_rmtree(g_fx.dir);
    }
    return 0;
}

// --- the application -----------------------------------------------------------------------

typedef struct techo_conn {
    uint8_t *buf;
    size_t len, cap;
    uint8_t *out;
    bool busy;
} techo_conn;

typedef struct techo_arg {
    int data_calls; // atomic: on_data calls
} techo_arg;

typedef struct techo_loop {
    net_loop *loop;
    techo_arg *arg;
} techo_loop;

static void *techo_loop_init(void *arg, net_loop *loop)
{
    techo_loop *el = calloc(1, sizeof(*el));
    if (el != NULL) {
        el->loop = loop;
        el->arg = arg;
    }
    return el;
}

static void techo_loop_cleanup(void *ctx)
{
    free(ctx);
}

static void *techo_on_open(void *ctx, net_conn_ref ref, const struct sockaddr *peer)
{
    (void)ctx;
    (void)ref;
    (void)peer;
    return calloc(1, sizeof(techo_conn));
}

static void techo_answer(techo_loop *el, techo_conn *c, net_conn_ref ref)
{
    uint8_t *nl = c->busy ? NULL : memchr(c->buf, '\n', c->len);
    if (nl == NULL) {
        return;
    }
    const size_t line = (size_t)(nl - c->buf) + 1;
    bool last = false;
    if (line == 2 && c->buf[0] == 'I') {
        net_tls_info info;
        char text[400];
        if (net_conn_tls_info(el->loop, ref, &info)) {
            (void)snprintf(text, sizeof(text), "%s|%d|%s|%zu\n", info.peer_subject,
                           info.resumed ? 1 : 0, info.version, info.peer_cert.len);
        } else {
            (void)snprintf(text, sizeof(text), "plain\n");
        }
        c->out = (uint8_t *)strdup(text);
    } else if (line == 2 && c->buf[0] == 'Q') {
        c->out = (uint8_t *)strdup("BYE\n");
        last = true;
    } else {
        c->out = malloc(line);
        CM_CHECK(c->out != NULL);
        memcpy(c->out, c->buf, line);
    }
    CM_CHECK(c->out != NULL);
    const size_t n = last || c->buf[0] == 'I' ? strlen((char *)c->out) : line;
    memmove(c->buf, c->buf + line, c->len - line);
    c->len -= line;
    c->busy = true;
    CM_CHECK(cm_ok(net_conn_send(el->loop, ref, cm_span_make(c->out, n), last)));
}

static net_action techo_on_data(void *ctx, void *conn, net_conn_ref ref, cm_span data)
{
    techo_loop *el = ctx;
    techo_conn *c = conn;
    __atomic_add_fetch(&el->arg->data_calls, 1, __ATOMIC_RELAXED);
    if (c->cap - c->len < data.len) {
        const size_t cap = (c->cap + data.len) * 2;
        uint8_t *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            return NET_CLOSE;
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data.p, data.len);
    c->len += data.len;
    techo_answer(el, c, ref);
    return NET_CONTINUE;
}

static void techo_on_sent(void *ctx, void *conn, net_conn_ref ref, bool ok)
{
    techo_conn *c = conn;
    free(c->out);
    c->out = NULL;
    c->busy = false;
    if (ok) {
        techo_answer(ctx, c, ref);
    }
}

static void techo_on_close(void *ctx, void *conn)
{
    (void)ctx;
    techo_conn *c = conn;
    if (c != NULL) {
        free(c->buf);
        free(c->out);
        free(c);
    }
}

static void techo_on_completion(void *ctx, cm_cq_node *node)
{
    (void)ctx;
    (void)node;
}

static net_action techo_on_timeout(void *ctx, void *conn, net_conn_ref ref)
{
    (void)ctx;
    (void)conn;
    (void)ref;
    return NET_CLOSE;
}

static bool techo_is_idle(void *ctx, void *conn)
{
    (void)ctx;
    const techo_conn *c = conn;
    return c == NULL || (!c->busy && c->len == 0);
}

static uint32_t techo_pending(void *ctx)
{
    (void)ctx;
    return 0;
}

static const net_app k_techo_app = {
    .loop_init = techo_loop_init,
    .loop_cleanup = techo_loop_cleanup,
    .on_open = techo_on_open,
    .on_data = techo_on_data,
    .on_sent = techo_on_sent,
    .on_close = techo_on_close,
    .on_completion = techo_on_completion,
    .on_timeout = techo_on_timeout,
    .is_idle = techo_is_idle,
    .pending = techo_pending,
};

// --- servers and clients ---------------------------------------------------------------------

typedef struct tls_server {
    net_tls *tls;
    net_server *net;
    techo_arg arg;
    uint16_t tls_port;
    uint16_t plain_port;
} tls_server;

// tls_server_start serves TLS with |tc| (the fixture's identity when its paths are NULL) on
// one port and plain TCP on another, on |threads| loops.
static bool tls_server_start(tls_server *s, net_tls_config tc, uint32_t threads,
                             uint32_t handshake_ms)
{
    memset(s, 0, sizeof(*s));
    if (tc.cert_path == NULL) {
        tc.cert_path = g_fx.srv_cert;
        tc.key_path = g_fx.srv_key;
    }
    char err[256] = "";
    const cm_result r = net_tls_new(&s->tls, err, sizeof(err), &tc);
    if (!cm_ok(r)) {
        fprintf(stderr, "net_tls_new: %s\n", err);
        return false;
    }
    const char *listen[] = {"127.0.0.1:0", "127.0.0.1:0"};
    net_server_config cfg = {.listen = listen,
                             .num_listen = 2,
                             .io_threads = threads,
                             .max_connections = 64,
                             .recv_buffers = 64,
                             .recv_buffer_size = 4096,
                             .tls = s->tls,
                             .tls_listen_mask = 1u,
                             .tls_handshake_ms = handshake_ms};
    if (!cm_ok(net_server_start(&s->net, &cfg, &k_techo_app, &s->arg))) {
        net_tls_free(s->tls);
        return false;
    }
    s->tls_port = net_server_port(s->net, 0);
    s->plain_port = net_server_port(s->net, 1);
    return true;
}

static void tls_server_stop(tls_server *s)
{
    if (s->net != NULL) {
        net_server_stop(s->net);
        net_server_wait(s->net);
    }
    net_tls_free(s->tls);
    memset(s, 0, sizeof(*s));
}

// tls_wait_stats waits up to 2 s until |pred| holds for the server's counters.
static bool tls_wait_stats(tls_server *s, bool (*pred)(const net_stats *, uint64_t), uint64_t want)
{
    for (int i = 0; i < 200; i++) {
        net_stats st;
        net_server_stats(s->net, &st);
        if (pred(&st, want)) {
            return true;
        }
        usleep(10000);
    }
    return false;
}

static bool st_failed(const net_stats *st, uint64_t want)
{
    return st->tls_failed == want;
}

static bool st_timeouts(const net_stats *st, uint64_t want)
{
    return st->tls_timeouts == want;
}

static bool st_no_tls_open(const net_stats *st, uint64_t want)
{
    (void)want;
    return st->tls_open == 0;
}

static int tls_tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

// What the in-process client does; a zeroed struct is a TLS 1.2/1.3 client trusting the
// fixture's CA, without a certificate, without ALPN.
typedef struct tls_client_opts {
    int min_version, max_version; // 0: TLS 1.2 .. TLS 1.3
    const char *cert, *key;       // a client certificate
    SSL_SESSION *session;         // resume it
    const unsigned char *alpn;    // wire format
    unsigned alpn_len;
    const char *ciphers12; // the TLS 1.2 cipher list offered
} tls_client_opts;

typedef struct tls_client {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
} tls_client;

static void tls_client_close(tls_client *c)
{
    // A connection freed without its close_notify marks its session not resumable.
    if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
        (void)SSL_shutdown(c->ssl);
    }
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0) {
        (void)close(c->fd);
    }
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    ERR_clear_error();
}

// tls_client_open connects and handshakes; false when the handshake fails (the client stays
// open for the test to look at, close it anyway).
static bool tls_client_open(tls_client *c, uint16_t port, const tls_client_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->fd = tls_tcp_connect(port);
    c->ctx = SSL_CTX_new(TLS_client_method());
    CU_ASSERT_FATAL(c->fd >= 0 && c->ctx != NULL);
    (void)SSL_CTX_set_min_proto_version(c->ctx, o->min_version ? o->min_version : TLS1_2_VERSION);
    (void)SSL_CTX_set_max_proto_version(c->ctx, o->max_version ? o->max_version : TLS1_3_VERSION);
    if (o->min_version != 0 && o->min_version < TLS1_2_VERSION) {
        SSL_CTX_set_security_level(c->ctx, 0); // let the client offer what the server refuses
    }
    CU_ASSERT_FATAL(SSL_CTX_load_verify_locations(c->ctx, g_fx.ca_cert, NULL) == 1);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if (o->cert != NULL) {
        CU_ASSERT_FATAL(SSL_CTX_use_certificate_file(c->ctx, o->cert, SSL_FILETYPE_PEM) == 1);
        CU_ASSERT_FATAL(SSL_CTX_use_PrivateKey_file(c->ctx, o->key, SSL_FILETYPE_PEM) == 1);
    }
    if (o->ciphers12 != NULL) {
        CU_ASSERT_FATAL(SSL_CTX_set_cipher_list(c->ctx, o->ciphers12) == 1);
    }
    c->ssl = SSL_new(c->ctx);
    CU_ASSERT_FATAL(c->ssl != NULL);
    if (o->alpn != NULL) {
        CU_ASSERT_FATAL(SSL_set_alpn_protos(c->ssl, o->alpn, o->alpn_len) == 0);
    }
    if (o->session != NULL) {
        CU_ASSERT_FATAL(SSL_set_session(c->ssl, o->session) == 1);
    }
    (void)SSL_set_fd(c->ssl, c->fd);
    return SSL_connect(c->ssl) == 1;
}

static bool tls_write_all(tls_client *c, const void *p, size_t n)
{
    size_t done = 0;
    return SSL_write_ex(c->ssl, p, n, &done) == 1 && done == n;
}

// tls_read_line reads one line (with its '\n') into |out|; false on EOF or an error.
static bool tls_read_line(tls_client *c, char *out, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        size_t got = 0;
        if (SSL_read_ex(c->ssl, out + n, 1, &got) != 1 || got != 1) {
            out[n] = '\0';
            return false;
        }
        if (out[n++] == '\n') {
            break;
        }
    }
    out[n] = '\0';
    return true;
}

// tls_client_works: the connection answers an echo (the handshake, as TLS 1.3 clients see
// a refused client certificate only at their first read, is really done).
static bool tls_client_works(tls_client *c)
{
    char line[64];
    return tls_write_all(c, "ping\n", 5) && tls_read_line(c, line, sizeof(line)) &&
           strcmp(line, "ping\n") == 0;
}

// tls_session_of does a round trip (TLS 1.3 tickets come after the handshake) and returns the
// client's session for resumption (SSL_SESSION_free it).
static SSL_SESSION *tls_session_of(tls_client *c)
{
    CU_ASSERT(tls_client_works(c));
    return SSL_get1_session(c->ssl);
}

// tls_ask_info sends "I" and parses the answer: subject, resumed, version, DER length.
static bool tls_ask_info(tls_client *c, char *subject, size_t cap, int *resumed)
{
    char line[512];
    if (!tls_write_all(c, "I\n", 2) || !tls_read_line(c, line, sizeof(line))) {
        return false;
    }
    char *bar = strchr(line, '|');
    if (bar == NULL) {
        return false;
    }
    *bar = '\0';
    const size_t n = strnlen(line, cap - 1);
    memcpy(subject, line, n);
    subject[n] = '\0';
    *resumed = bar[1] - '0';
    return true;
}

// peer_closes: the server closes |fd| within |ms| (EOF or a reset, after any bytes it sent,
// such as an alert).
static bool peer_closes(int fd, int ms)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0) {
            return false;
        }
        uint8_t b[4096];
        const ssize_t k = recv(fd, b, sizeof(b), 0);
        if (k <= 0) {
            return true;
        }
    }
}

// --- tests -----------------------------------------------------------------------------------

static void test_net_tls_echo_and_large_answers(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){0}, 2, 0));
    tls_client c;
    const tls_client_opts o = {0};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT_STRING_EQUAL(SSL_get_version(c.ssl), "TLSv1.3");
    for (int i = 0; i < 200; i++) {
        char msg[32], line[32];
        const int n = snprintf(msg, sizeof(msg), "line %d\n", i);
        CU_ASSERT_FATAL(tls_write_all(&c, msg, (size_t)n));
        CU_ASSERT_FATAL(tls_read_line(&c, line, sizeof(line)));
        CU_ASSERT_STRING_EQUAL(line, msg);
    }
    // 300 KB in one line: many records in, one large answer (partial sends) out.
    const size_t big = 300 * 1024;
    char *p = malloc(big);
    char *q = malloc(big);
    CU_ASSERT_FATAL(p != NULL && q != NULL);
    for (size_t i = 0; i < big - 1; i++) {
        p[i] = (char)('a' + i % 26);
    }
    p[big - 1] = '\n';
    CU_ASSERT_FATAL(tls_write_all(&c, p, big));
    size_t got = 0;
    while (got < big) {
        size_t k = 0;
        if (SSL_read_ex(c.ssl, q + got, big - got, &k) != 1) {
            break;
        }
        got += k;
    }
    CU_ASSERT_EQUAL(got, big);
    CU_ASSERT(memcmp(p, q, big) == 0);
    free(p);
    free(q);
    // The plain listener of the same server is unaffected.
    const int fd = tls_tcp_connect(s.plain_port);
    CU_ASSERT_FATAL(fd >= 0);
    char line[16] = "";
    CU_ASSERT(send(fd, "I\n", 2, MSG_NOSIGNAL) == 2 && recv(fd, line, sizeof(line) - 1, 0) == 6);
    CU_ASSERT_STRING_EQUAL(line, "plain\n");
    (void)close(fd);
    tls_client_close(&c);
    net_stats st;
    net_server_stats(s.net, &st);
    CU_ASSERT_EQUAL(st.tls_full, 1);
    CU_ASSERT(st.tls_handshake_ns > 0);
    tls_server_stop(&s);
}

static void test_net_tls_resumes_with_tickets(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){.ticket_lifetime_s = 3600}, 2, 0));
    const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (size_t v = 0; v < 2; v++) {
        tls_client c;
        tls_client_opts o = {.min_version = versions[v], .max_version = versions[v]};
        CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
        SSL_SESSION *sess = tls_session_of(&c);
        CU_ASSERT_FATAL(sess != NULL);
        CU_ASSERT_FALSE(SSL_session_reused(c.ssl));
        tls_client_close(&c);
        o.session = sess;
        // Twice with the same ticket: any loop opens it (the keys are shared).
        for (int k = 0; k < 2; k++) {
            CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
            char subject[256];
            int resumed = -1;
            CU_ASSERT(tls_ask_info(&c, subject, sizeof(subject), &resumed));
            CU_ASSERT_EQUAL(resumed, 1);
            CU_ASSERT(SSL_session_reused(c.ssl) == 1);
            tls_client_close(&c);
        }
        SSL_SESSION_free(sess);
    }
    net_stats st;
    net_server_stats(s.net, &st);
    CU_ASSERT_EQUAL(st.tls_full, 2);
    CU_ASSERT_EQUAL(st.tls_resumed, 4);
    tls_server_stop(&s);
    // Without tickets every connection is a full handshake.
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){.ticket_lifetime_s = 0}, 1, 0));
    tls_client c;
    tls_client_opts o = {0};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    SSL_SESSION *sess = tls_session_of(&c);
    tls_client_close(&c);
    o.session = sess;
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT(tls_client_works(&c));
    CU_ASSERT_FALSE(SSL_session_reused(c.ssl));
    tls_client_close(&c);
    SSL_SESSION_free(sess);
    tls_server_stop(&s);
}

// tls_ticket_name returns the first byte of |sess|'s ticket key name (the ticket's first 16
// octets), -1 when it has no ticket.
static int tls_ticket_name(const SSL_SESSION *sess, uint8_t name[16])
{
    const unsigned char *t = NULL;
    size_t len = 0;
    SSL_SESSION_get0_ticket(sess, &t, &len);
    if (t == NULL || len < 16) {
        return -1;
    }
    memcpy(name, t, 16);
    return 0;
}

static void test_net_tls_ticket_key_rotates(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){.ticket_lifetime_s = 1}, 1, 0));
    tls_client c;
    tls_client_opts o = {0};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    SSL_SESSION *a = tls_session_of(&c);
    tls_client_close(&c);
    uint8_t na[16], nb[16], nc[16];
    CU_ASSERT_FATAL(a != NULL && tls_ticket_name(a, na) == 0);
    // Within the period the key stays; after it a new key seals the tickets.
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    SSL_SESSION *b = tls_session_of(&c);
    tls_client_close(&c);
    CU_ASSERT_FATAL(b != NULL && tls_ticket_name(b, nb) == 0);
    CU_ASSERT(memcmp(na, nb, 16) == 0);
    usleep(1200 * 1000);
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    SSL_SESSION *d = tls_session_of(&c);
    tls_client_close(&c);
    CU_ASSERT_FATAL(d != NULL && tls_ticket_name(d, nc) == 0);
    CU_ASSERT(memcmp(na, nc, 16) != 0);
    // A ticket of the new key resumes.
    o.session = d;
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT(tls_client_works(&c));
    CU_ASSERT(SSL_session_reused(c.ssl) == 1);
    tls_client_close(&c);
    // Past the lifetime (1 s; OpenSSL counts whole seconds) and two key periods, the first
    // ticket makes a full handshake.
    usleep(1600 * 1000);
    o.session = a;
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT(tls_client_works(&c));
    CU_ASSERT_FALSE(SSL_session_reused(c.ssl));
    tls_client_close(&c);
    SSL_SESSION_free(a);
    SSL_SESSION_free(b);
    SSL_SESSION_free(d);
    tls_server_stop(&s);
}

static void test_net_tls_refuses_old_versions_and_weak_suites(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){0}, 1, 0));
    tls_client c;
    tls_client_opts o = {.min_version = TLS1_VERSION, .max_version = TLS1_1_VERSION};
    CU_ASSERT_FALSE(tls_client_open(&c, s.tls_port, &o));
    tls_client_close(&c);
    // TLS 1.2 without forward secrecy or AEAD.
    o = (tls_client_opts){.max_version = TLS1_2_VERSION,
                          .ciphers12 = "AES128-SHA:AES256-GCM-SHA384"};
    CU_ASSERT_FALSE(tls_client_open(&c, s.tls_port, &o));
    tls_client_close(&c);
    CU_ASSERT(tls_wait_stats(&s, st_failed, 2));
    // The server prefers its own order: AES-128-GCM before ChaCha20 whatever the client says.
    o = (tls_client_opts){.max_version = TLS1_2_VERSION,
                          .ciphers12 =
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT_STRING_EQUAL(SSL_get_cipher_name(c.ssl), "ECDHE-ECDSA-AES128-GCM-SHA256");
    CU_ASSERT(tls_client_works(&c));
    tls_client_close(&c);
    tls_server_stop(&s);
}

static void test_net_tls_alpn(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){0}, 1, 0));
    static const unsigned char k_both[] = "\x02h2\x08http/1.1";
    static const unsigned char k_h2[] = "\x02h2";
    tls_client c;
    tls_client_opts o = {.alpn = k_both, .alpn_len = sizeof(k_both) - 1};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    const unsigned char *sel = NULL;
    unsigned sel_len = 0;
    SSL_get0_alpn_selected(c.ssl, &sel, &sel_len);
    CU_ASSERT(sel_len == 8 && memcmp(sel, "http/1.1", 8) == 0);
    CU_ASSERT(tls_client_works(&c));
    tls_client_close(&c);
    o = (tls_client_opts){.alpn = k_h2, .alpn_len = sizeof(k_h2) - 1};
    CU_ASSERT_FALSE(tls_client_open(&c, s.tls_port, &o));
    tls_client_close(&c);
    tls_server_stop(&s);
}

static void test_net_tls_garbage_and_plain_http_fail_safely(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){0}, 1, 0));
    static const struct {
        const char *p;
        size_t len;
    } k_inputs[] = {
        // plain HTTP on the TLS port
        {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 35},
        // a ClientHello record whose handshake message is cut short
        {"\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff", 10},
        // a record over the maximum length
        {"\x16\x03\x03\xff\xff garbage garbage garbage", 29},
        // an alert before any hello
        {"\x15\x03\x03\x00\x02\x02\x28", 7},
    };
    for (size_t i = 0; i < sizeof(k_inputs) / sizeof(k_inputs[0]); i++) {
        const int fd = tls_tcp_connect(s.tls_port);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT(send(fd, k_inputs[i].p, k_inputs[i].len, MSG_NOSIGNAL) ==
                  (ssize_t)k_inputs[i].len);
        CU_ASSERT(peer_closes(fd, 3000));
        (void)close(fd);
    }
    CU_ASSERT(tls_wait_stats(&s, st_failed, 4));
    CU_ASSERT_EQUAL(__atomic_load_n(&s.arg.data_calls, __ATOMIC_RELAXED), 0);
    // Still serving.
    tls_client c;
    const tls_client_opts o = {0};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT(tls_client_works(&c));
    tls_client_close(&c);
    tls_server_stop(&s);
}

static void test_net_tls_stalled_handshake_times_out(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){0}, 1, 300));
    // Nothing at all, and half a ClientHello: each holds its one slot until the deadline.
    const int quiet = tls_tcp_connect(s.tls_port);
    const int half = tls_tcp_connect(s.tls_port);
    CU_ASSERT_FATAL(quiet >= 0 && half >= 0);
    CU_ASSERT(send(half, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11, MSG_NOSIGNAL) == 11);
    const uint64_t t0 = cm_time_mono_ns();
    CU_ASSERT(peer_closes(quiet, 3000));
    CU_ASSERT(peer_closes(half, 3000));
    const uint64_t ms = (cm_time_mono_ns() - t0) / 1000000u;
    CU_ASSERT(ms >= 200 && ms < 2000);
    (void)close(quiet);
    (void)close(half);
    CU_ASSERT(tls_wait_stats(&s, st_timeouts, 2));
    CU_ASSERT(tls_wait_stats(&s, st_no_tls_open, 0));
    net_stats st;
    net_server_stats(s.net, &st);
    CU_ASSERT_EQUAL(st.tls_failed, 0);
    CU_ASSERT_EQUAL(st.open, 0);
    tls_server_stop(&s);
}

// A client that sends close_notify after its request still gets the answer... and the last
// answer of the server ends with a close_notify.
static void test_net_tls_last_answer_sends_close_notify(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s, (net_tls_config){0}, 1, 0));
    tls_client c;
    const tls_client_opts o = {0};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    char line[16];
    CU_ASSERT(tls_write_all(&c, "Q\n", 2));
    CU_ASSERT(tls_read_line(&c, line, sizeof(line)));
    CU_ASSERT_STRING_EQUAL(line, "BYE\n");
    size_t got = 0;
    const int rc = SSL_read_ex(c.ssl, line, sizeof(line), &got);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(SSL_get_error(c.ssl, rc), SSL_ERROR_ZERO_RETURN);
    tls_client_close(&c);
    tls_server_stop(&s);
}

static void test_net_tls_client_auth_required(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s,
                                     (net_tls_config){.client_ca_path = g_fx.ca_cert,
                                                      .client_auth = NET_TLS_CLIENT_AUTH_REQUIRED,
                                                      .ticket_lifetime_s = 3600},
                                     1, 0));
    const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (size_t v = 0; v < 2; v++) {
        tls_client c;
        tls_client_opts o = {
            .max_version = versions[v], .cert = g_fx.cli_cert, .key = g_fx.cli_key};
        CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
        char subject[256] = "";
        int resumed = -1;
        CU_ASSERT(tls_ask_info(&c, subject, sizeof(subject), &resumed));
        CU_ASSERT_STRING_EQUAL(subject, "CN=ra-front-end,O=certmint tests");
        // Resumed: the session still names the client.
        SSL_SESSION *sess = SSL_get1_session(c.ssl);
        tls_client_close(&c);
        o.session = sess;
        CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
        CU_ASSERT(tls_ask_info(&c, subject, sizeof(subject), &resumed));
        CU_ASSERT_EQUAL(resumed, 1);
        CU_ASSERT_STRING_EQUAL(subject, "CN=ra-front-end,O=certmint tests");
        tls_client_close(&c);
        SSL_SESSION_free(sess);
        // Without a certificate, and with one of a foreign CA: refused (TLS 1.3 clients see it
        // at their first read).
        const char *certs[][2] = {{NULL, NULL}, {g_fx.rogue_cli_cert, g_fx.rogue_cli_key}};
        for (size_t k = 0; k < 2; k++) {
            o = (tls_client_opts){
                .max_version = versions[v], .cert = certs[k][0], .key = certs[k][1]};
            const bool hs = tls_client_open(&c, s.tls_port, &o);
            CU_ASSERT_FALSE(hs && tls_client_works(&c));
            tls_client_close(&c);
        }
    }
    CU_ASSERT(tls_wait_stats(&s, st_failed, 4));
    tls_server_stop(&s);
}

static void test_net_tls_client_auth_optional(void)
{
    tls_server s;
    CU_ASSERT_FATAL(tls_server_start(&s,
                                     (net_tls_config){.client_ca_path = g_fx.ca_cert,
                                                      .client_auth = NET_TLS_CLIENT_AUTH_OPTIONAL},
                                     1, 0));
    tls_client c;
    tls_client_opts o = {0};
    char subject[256] = "x";
    int resumed = -1;
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT(tls_ask_info(&c, subject, sizeof(subject), &resumed));
    CU_ASSERT_STRING_EQUAL(subject, "");
    tls_client_close(&c);
    o = (tls_client_opts){.cert = g_fx.cli_cert, .key = g_fx.cli_key};
    CU_ASSERT_FATAL(tls_client_open(&c, s.tls_port, &o));
    CU_ASSERT(tls_ask_info(&c, subject, sizeof(subject), &resumed));
    CU_ASSERT_STRING_EQUAL(subject, "CN=ra-front-end,O=certmint tests");
    tls_client_close(&c);
    // A certificate that does not verify is refused even though none would be accepted.
    o = (tls_client_opts){.cert = g_fx.rogue_cli_cert, .key = g_fx.rogue_cli_key};
    const bool hs = tls_client_open(&c, s.tls_port, &o);
    CU_ASSERT_FALSE(hs && tls_client_works(&c));
    tls_client_close(&c);
    tls_server_stop(&s);
}

static void test_net_tls_config_errors(void)
{
    char missing[256];
    (void)snprintf(missing, sizeof(missing), "%s/nope.pem", g_fx.dir);
    const struct {
        net_tls_config c;
        const char *words;
    } k_bad[] = {
        {{.cert_path = NULL, .key_path = g_fx.srv_key}, "tls_cert and tls_key are both required"},
        {{.cert_path = missing, .key_path = g_fx.srv_key}, "tls_cert"},
        {{.cert_path = g_fx.srv_cert, .key_path = missing}, "tls_key"},
        {{.cert_path = g_fx.srv_key, .key_path = g_fx.srv_key}, "tls_cert"},
        {{.cert_path = g_fx.srv_cert, .key_path = g_fx.other_key}, "does not hold the public key"},
        {{.cert_path = g_fx.srv_cert, .key_path = g_fx.srv_key, .chain_path = missing},
         "tls_chain"},
        {{.cert_path = g_fx.srv_cert, .key_path = g_fx.srv_key, .chain_path = g_fx.srv_key},
         "holds no PEM certificate"},
        {{.cert_path = g_fx.srv_cert,
          .key_path = g_fx.srv_key,
          .client_auth = NET_TLS_CLIENT_AUTH_REQUIRED},
         "needs tls_client_ca"},
        {{.cert_path = g_fx.srv_cert,
          .key_path = g_fx.srv_key,
          .client_ca_path = g_fx.srv_key,
          .client_auth = NET_TLS_CLIENT_AUTH_OPTIONAL},
         "tls_client_ca"},
    };
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        net_tls *t = NULL;
        char err[256] = "";
        TEST_ASSERT_CODE(net_tls_new(&t, err, sizeof(err), &k_bad[i].c), NET_E_TLS);
        CU_ASSERT_PTR_NULL(t);
        if (strstr(err, k_bad[i].words) == NULL) {
            fprintf(stderr, "\n  case %zu: \"%s\" lacks \"%s\"\n", i, err, k_bad[i].words);
            CU_FAIL("message");
        }
    }
    // A chain file, and a TLS mask without a context or beyond the listen addresses.
    net_tls *t = NULL;
    char err[256] = "";
    const net_tls_config good = {
        .cert_path = g_fx.srv_cert, .key_path = g_fx.srv_key, .chain_path = g_fx.ca_cert};
    TEST_ASSERT_OK(net_tls_new(&t, err, sizeof(err), &good));
    const char *listen[] = {"127.0.0.1:0"};
    net_server_config cfg = {
        .listen = listen, .num_listen = 1, .io_threads = 1, .tls_listen_mask = 1u};
    net_server *srv = NULL;
    TEST_ASSERT_CODE(net_server_start(&srv, &cfg, &k_techo_app, NULL), NET_E_TLS);
    cfg.tls = t;
    cfg.tls_listen_mask = 2u;
    TEST_ASSERT_CODE(net_server_start(&srv, &cfg, &k_techo_app, NULL), NET_E_TLS);
    net_tls_free(t);
}

size_t test_net_tls_cases(const test_case **out)
{
    static const test_case tests[] = {
        TEST_CASE(test_net_tls_echo_and_large_answers),
        TEST_CASE(test_net_tls_resumes_with_tickets),
        TEST_CASE(test_net_tls_ticket_key_rotates),
        TEST_CASE(test_net_tls_refuses_old_versions_and_weak_suites),
        TEST_CASE(test_net_tls_alpn),
        TEST_CASE(test_net_tls_garbage_and_plain_http_fail_safely),
        TEST_CASE(test_net_tls_stalled_handshake_times_out),
        TEST_CASE(test_net_tls_last_answer_sends_close_notify),
        TEST_CASE(test_net_tls_client_auth_required),
        TEST_CASE(test_net_tls_client_auth_optional),
        TEST_CASE(test_net_tls_config_errors),
    };
    *out = tests;
    return TEST_NUM_CASES(tests);
}
