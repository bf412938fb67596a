// Suite "front": certmintd's HTTP front driven without sockets. A real daemon is wired by
// front_daemon_load/front_daemon_start from a generated configuration (a throwaway SoftHSM
// token holding the CA key, a self-signed root, a SQLite store, a MAC secret), and its net_app
// callbacks are called by hand with a fake transport that records what is sent and completes
// sends when the test says so. CMP requests are made by the real `openssl cmp` client against
// its own mock server (-reqout).
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/front/front.h"
#include "engine/front/front_internal.h"
#include "tests/support/test_support.h"

#define FRONT_SECRET_REF "line-3"
#define FRONT_SECRET     "front-secret"
#define FRONT_NUM_REQS   16
#define FAKE_CONNS       4
#define FAKE_OUT_CAP     (1u << 18)

// fake_conn: one connection of the fake transport. Sends are recorded as spans (not copied)
// and copied out only when the test completes them, as the kernel would read them.
typedef struct fake_conn {
    bool open;      // on_open was called, on_close not yet
    bool closed;    // the front asked to close
    bool sending;   // a send is active
    cm_span active; // its bytes
    size_t active_off;
    bool active_close;
    uint32_t deadline;
    unsigned sends;
    void *state; // the front's connection
    uint8_t *out;
    size_t out_len;
    bool admin; // accepted on an admin listener
    bool tls;   // a TLS connection with the client certificate below (fake_tls_info)
} fake_conn;

// What fake_tls_info says a TLS connection's client certificate is (bytes only: the front
// copies them and never parses them).
static const uint8_t k_fake_peer_der[] = {0x30, 0x03, 0x02, 0x01, 0x07};

static struct {
    char dir[256];
    test_token token;
    char uri[512];
    char conf[320];
    char log[320];
    char mock_key[320], mock_pem[320], dev_key[320];
    front_daemon *d;
    cm_cq cq;
    front_loop *loop;
    fake_conn conns[FAKE_CONNS];
    uint8_t *reqs[FRONT_NUM_REQS]; // CMP ir requests (DER), each its own transaction
    size_t req_lens[FRONT_NUM_REQS];
    int next_req;
} g;

// --- the fake transport ----------------------------------------------------------------------

static cm_result fake_send(void *arg, net_conn_ref ref, cm_span data, bool close_after)
{
    (void)arg;
    CU_ASSERT_FATAL(ref.slot < FAKE_CONNS);
    fake_conn *c = &g.conns[ref.slot];
    if (!c->open || c->closed) {
        return cm_result_make(NET_E_GONE);
    }
    if (c->sending) {
        return cm_result_make(NET_E_BUSY);
    }
    c->sending = true;
    c->active = data;
    c->active_off = 0;
    c->active_close = close_after;
    c->sends++;
    return cm_result_make(CM_OK);
}

static void fake_close(void *arg, net_conn_ref ref)
{
    (void)arg;
    CU_ASSERT_FATAL(ref.slot < FAKE_CONNS);
    g.conns[ref.slot].closed = true;
}

static void fake_set_deadline(void *arg, net_conn_ref ref, uint32_t ms)
{
    (void)arg;
    CU_ASSERT_FATAL(ref.slot < FAKE_CONNS);
    g.conns[ref.slot].deadline = ms;
}

static bool fake_is_admin(void *arg, net_conn_ref ref)
{
    (void)arg;
    CU_ASSERT_FATAL(ref.slot < FAKE_CONNS);
    return g.conns[ref.slot].admin;
}

static bool fake_tls_info(void *arg, net_conn_ref ref, net_tls_info *out)
{
    (void)arg;
    CU_ASSERT_FATAL(ref.slot < FAKE_CONNS);
    if (!g.conns[ref.slot].tls) {
        return false;
    }
    memset(out, 0, sizeof(*out));
    out->version = "TLSv1.3";
    out->cipher = "TLS_AES_128_GCM_SHA256";
    out->peer_cert = cm_span_make(k_fake_peer_der, sizeof(k_fake_peer_der));
    (void)snprintf(out->peer_subject, sizeof(out->peer_subject), "CN=ra \"front\",O=x");
    return true;
}

static const front_transport k_fake_transport = {.send = fake_send,
                                                 .close = fake_close,
                                                 .set_deadline = fake_set_deadline,
                                                 .is_admin = fake_is_admin,
                                                 .tls_info = fake_tls_info};

static net_conn_ref fake_ref(size_t i)
{
    return (net_conn_ref){(uint32_t)i, 7};
}

// fake_open_on opens connection |i| from 192.0.2.1:4711, on an admin listener when |admin|.
static fake_conn *fake_open_on(size_t i, bool admin)
{
    fake_conn *c = &g.conns[i];
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->admin = admin;
    c->out = malloc(FAKE_OUT_CAP);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->out);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(4711);
    a.sin_addr.s_addr = htonl(0xc0000201u);
    c->open = true;
    c->state = front_net_app()->on_open(g.loop, fake_ref(i), (const struct sockaddr *)&a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->state);
    return c;
}

// fake_open opens connection |i| on the main listener.
static fake_conn *fake_open(size_t i)
{
    return fake_open_on(i, false);
}

// fake_data delivers |data| as one receive.
static void fake_data(fake_conn *c, const void *data, size_t len)
{
    CU_ASSERT_FATAL(c->open);
    const size_t i = (size_t)(c - g.conns);
    const net_action a =
        front_net_app()->on_data(g.loop, c->state, fake_ref(i), cm_span_make(data, len));
    CU_ASSERT_EQUAL(a, NET_CONTINUE);
}

// fake_progress lets the "kernel" take |n| more bytes of the active send (copying them out).
static void fake_progress(fake_conn *c, size_t n)
{
    CU_ASSERT_FATAL(c->sending);
    if (n > c->active.len - c->active_off) {
        n = c->active.len - c->active_off;
    }
    CU_ASSERT_FATAL(c->out_len + n <= FAKE_OUT_CAP);
    memcpy(c->out + c->out_len, c->active.p + c->active_off, n);
    c->out_len += n;
    c->active_off += n;
}

// fake_drop ends the connection as engine/net does once its operations drained: a send still
// active completes with ok=false, then on_close.
static void fake_drop(fake_conn *c)
{
    if (!c->open) {
        return;
    }
    const size_t i = (size_t)(c - g.conns);
    if (c->sending) {
        c->sending = false;
        front_net_app()->on_sent(g.loop, c->state, fake_ref(i), false);
    }
    front_net_app()->on_close(g.loop, c->state);
    c->open = false;
    c->state = NULL;
}

// fake_complete finishes the active send: the rest of its bytes, then on_sent; a send with
// close_after then closes the connection.
static void fake_complete(fake_conn *c)
{
    fake_progress(c, c->active.len);
    const size_t i = (size_t)(c - g.conns);
    const bool close_after = c->active_close;
    c->sending = false;
    c->active = cm_span_make(NULL, 0);
    front_net_app()->on_sent(g.loop, c->state, fake_ref(i), true);
    if (close_after) {
        c->closed = true;
    }
}

// pump_once hands the completions that arrived within |ms| to the front.
static void pump_once(int ms)
{
    if (!cm_cq_wait(&g.cq, ms)) {
        return;
    }
    for (cm_cq_node *n = cm_cq_drain(&g.cq); n != NULL;) {
        cm_cq_node *next = n->next;
        front_net_app()->on_completion(g.loop, n);
        n = next;
    }
}

// drive completes sends and pumps completions until |c| has |num| responses in full (or
// 20 s pass); completes the sends of the other connections too.
static size_t count_responses(const fake_conn *c);
static void drive(fake_conn *c, size_t num)
{
    for (int spins = 0; spins < 2000 && count_responses(c) < num; spins++) {
        if (c->sending) {
            fake_complete(c);
            continue;
        }
        if (c->closed) {
            break;
        }
        pump_once(10);
    }
}

static uint32_t front_pending_jobs(void)
{
    return front_net_app()->pending(g.loop);
}

// --- reading what was sent -------------------------------------------------------------------

typedef struct http_answer {
    int status;
    char type[64];
    bool close;
    cm_span body;
} http_answer;

// parse_response reads the response starting at |*off| in |c|'s output; false when incomplete.
static bool parse_response(const fake_conn *c, size_t *off, http_answer *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = (const char *)c->out + *off;
    const size_t avail = c->out_len - *off;
    const char *end = memmem(p, avail, "\r\n\r\n", 4);
    if (avail < 12 || end == NULL || memcmp(p, "HTTP/1.1 ", 9) != 0) {
        return false;
    }
    out->status = atoi(p + 9);
    size_t clen = 0;
    for (const char *line = memmem(p, (size_t)(end - p), "\r\n", 2); line != NULL && line < end;
         line = memmem(line + 2, (size_t)(end - line), "\r\n", 2)) {
        const char *f = line + 2;
        if (strncasecmp(f, "Content-Length: ", 16) == 0) {
            clen = strtoul(f + 16, NULL, 10);
        } else if (strncasecmp(f, "Content-Type: ", 14) == 0) {
            const char *e = memchr(f, '\r', (size_t)(end + 2 - f));
            const size_t n = (size_t)(e - f - 14);
            memcpy(out->type, f + 14, n < sizeof(out->type) ? n : sizeof(out->type) - 1);
        } else if (strncasecmp(f, "Connection: close", 17) == 0) {
            out->close = true;
        }
    }
    const size_t head = (size_t)(end + 4 - p);
    if (out->status != 100 && avail < head + clen) {
        return false;
    }
    out->body = cm_span_make(p + head, out->status == 100 ? 0 : clen);
    *off += head + out->body.len;
    return true;
}

static size_t count_responses(const fake_conn *c)
{
    size_t off = 0, n = 0;
    http_answer a;
    while (parse_response(c, &off, &a)) {
        n += a.status != 100;
    }
    return n;
}

// nth_response returns the |n|-th final (non-100) response of |c|.
static http_answer nth_response(const fake_conn *c, size_t n)
{
    size_t off = 0;
    http_answer a;
    while (parse_response(c, &off, &a)) {
        if (a.status != 100 && n-- == 0) {
            return a;
        }
    }
    memset(&a, 0, sizeof(a));
    return a;
}

// transaction_id_of returns the transactionID of a PKIMessage (empty when unparseable), and
// its body type in |*out_type|.
static cm_span transaction_id_of(cm_arena *a, cm_span der, int *out_type)
{
    cmp_msg m;
    *out_type = -1;
    if (!cm_ok(cmp_msg_from_der(a, &m, der, NULL)) || !m.header.f.transaction_id.present) {
        return cm_span_make(NULL, 0);
    }
    *out_type = (int)m.body.type;
    return m.header.f.transaction_id.v;
}

// check_ip checks that |a| is a CMP ip answering request |req|.
static void check_ip(const http_answer *a, int req)
{
    CU_ASSERT_EQUAL(a->status, 200);
    CU_ASSERT_STRING_EQUAL(a->type, HTTP_CONTENT_TYPE_PKIXCMP);
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    int rt, qt;
    const cm_span got = transaction_id_of(&ar, a->body, &rt);
    const cm_span want = transaction_id_of(&ar, cm_span_make(g.reqs[req], g.req_lens[req]), &qt);
    CU_ASSERT_EQUAL(qt, CMP_BODY_IR);
    CU_ASSERT_EQUAL(rt, CMP_BODY_IP);
    CU_ASSERT_TRUE(got.len > 0 && got.len == want.len && memcmp(got.p, want.p, got.len) == 0);
    cm_arena_cleanup(&ar);
}

// cmp_post builds "POST ... Content-Length ... body" for request |req| into a malloc'ed buffer.
static uint8_t *cmp_post(size_t *out_len, int req, const char *extra_fields, bool with_body)
{
    char head[512];
    const int n = snprintf(head, sizeof(head),
                           "POST /.well-known/cmp/p/devices HTTP/1.1\r\nHost: ca\r\n"
                           "Content-Type: application/pkixcmp\r\nContent-Length: %zu\r\n%s\r\n",
                           g.req_lens[req], extra_fields);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof(head));
    const size_t body = with_body ? g.req_lens[req] : 0;
    uint8_t *buf = malloc((size_t)n + body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, g.reqs[req], body);
    *out_len = (size_t)n + body;
    return buf;
}

static int take_request(void)
{
    CU_ASSERT_FATAL(g.next_req < FRONT_NUM_REQS);
    return g.next_req++;
}

// --- fixture ---------------------------------------------------------------------------------

// make_root makes a self-signed root for the token's key "ca" and writes it as PEM.
static bool make_root(const char *pem_path)
{
    static const uint8_t k_name[] = {0x30, 0x18, 0x31, 0x16, 0x30, 0x14, 0x06, 0x03, 0x55,
                                     0x04, 0x03, 0x0c, 0x0d, 'f',  'r',  'o',  'n',  't',
                                     ' ',  't',  'e',  's',  't',  ' ',  'C',  'A'};
    static const uint8_t k_serial[] = {0x20, 0x01};
    hsm_token *tok = NULL;
    hsm_key *key = NULL;
    hsm_pool *pool = NULL;
    hsm_error err;
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = 1;
    if (!cm_ok(hsm_token_open(&tok, &err, g.uri)) ||
        !cm_ok(hsm_key_generate(tok, &key, &err, HSM_KEYGEN_EC_P256, "ca", CM_SPAN_LIT("\x01"))) ||
        !cm_ok(hsm_pool_new(&pool, tok, &po))) {
        fprintf(stderr, "hsm: %s\n", err.msg);
        hsm_key_free(key);
        hsm_token_free(tok);
        return false;
    }
    der_builder alg_b, tbs_b, cert_b;
    der_builder_init(&alg_b, 64);
    der_builder_init(&tbs_b, 1024);
    der_builder_init(&cert_b, 2048);
    hsm_sig_alg_marshal(&alg_b, HSM_SIG_ECDSA_SHA256);
    cm_span alg, tbs, cert;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    const int64_t now = cm_time_now();
    bool ok =
        cm_ok(der_builder_finish(&alg_b, &alg)) &&
        cm_ok(ca_root_tbs_build(&tbs_b, cm_span_make(k_name, sizeof(k_name)),
                                hsm_key_get0_spki(key), cm_span_make(k_serial, sizeof(k_serial)),
                                now - 3600, now + 3650 * 86400LL, alg)) &&
        cm_ok(der_builder_finish(&tbs_b, &tbs)) &&
        cm_ok(hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), key, HSM_SIG_ECDSA_SHA256, tbs)) &&
        cm_ok(ca_signed_assemble(&cert_b, tbs, alg, cm_span_make(sig, sig_len))) &&
        cm_ok(der_builder_finish(&cert_b, &cert));
    if (ok) {
        const unsigned char *q = cert.p;
        X509 *x = d2i_X509(NULL, &q, (long)cert.len);
        FILE *f = fopen(pem_path, "w");
        ok = x != NULL && f != NULL && PEM_write_X509(f, x) == 1;
        if (f != NULL) {
            ok &= fclose(f) == 0;
        }
        X509_free(x);
    }
    der_builder_cleanup(&alg_b);
    der_builder_cleanup(&tbs_b);
    der_builder_cleanup(&cert_b);
    hsm_pool_free(pool);
    hsm_key_free(key);
    hsm_token_free(tok);
    return ok;
}

// write_config writes a configuration with |num_cas| CAs into |path|: "devices" (the default)
// and, for num_cas > 1, ca0 .. ca(num_cas-2), "devices" placed after the first two thirds so
// the front has to move it first. All share the token key and the root.
static bool write_config(const char *path, const char *store_name, size_t num_cas)
{
    const size_t cap = 4096 + num_cas * 1024;
    char *text = malloc(cap);
    if (text == NULL) {
        return false;
    }
    size_t n = (size_t)snprintf(text, cap,
                                "[certmintd]\nlisten = 127.0.0.1:9\nio_threads = 1\n"
                                "hsm_sessions = 1\nstore = sqlite:%s/%s\ndefault_ca = devices\n"
                                "log_level = warn\n\n"
                                "[profile:devices]\nkey_types = P-256, P-384, RSA, Ed25519\n"
                                "implicit_confirm = on\nextensions = devices_ext\n"
                                "allow_key_reuse = on\n\n" // the requests share one key
                                "[devices_ext]\nbasicConstraints = critical, CA:FALSE\n"
                                "keyUsage = critical, digitalSignature\n\n"
                                "[clients:devices]\nsecret." FRONT_SECRET_REF " = secret\n\n",
                                g.dir, store_name);
    const size_t default_at = num_cas > 1 ? (num_cas - 1) * 2 / 3 : 0;
    for (size_t i = 0; i < num_cas && n < cap; i++) {
        char name[32];
        if (i == default_at) {
            (void)snprintf(name, sizeof(name), "devices");
        } else {
            (void)snprintf(name, sizeof(name), "ca%zu", i < default_at ? i : i - 1);
        }
        n += (size_t)snprintf(text + n, cap - n,
                              "[ca:%s]\nkey = %s\ncert = ca.pem\nprofile = devices\n"
                              "clients = devices\ncaPubs = on\n\n",
                              name, g.uri);
    }
    const bool ok = n < cap && test_write_file(path, text, n);
    free(text);
    return ok;
}

static bool run_quiet(const char *const *argv)
{
    const int rc = test_run(argv, g.log);
    if (rc != 0) {
        fprintf(stderr, "%s %s exited %d (log: %s)\n", argv[0], argv[1], rc, g.log);
    }
    return rc == 0;
}

// make_requests has `openssl cmp` write FRONT_NUM_REQS MAC-protected ir requests (each its own
// transaction, implicitConfirm), talking to its in-process mock server.
static bool make_requests(void)
{
    for (int i = 0; i < FRONT_NUM_REQS; i++) {
        char req[400], cert[400], subj[64];
        (void)snprintf(req, sizeof(req), "%s/req-%d.der", g.dir, i);
        (void)snprintf(cert, sizeof(cert), "%s/mock-%d.pem", g.dir, i);
        (void)snprintf(subj, sizeof(subj), "/CN=front-%d", i);
        const char *argv[] = {"openssl",
                              "cmp",
                              "-use_mock_srv",
                              "-srv_ref",
                              FRONT_SECRET_REF,
                              "-srv_secret",
                              "pass:" FRONT_SECRET,
                              "-srv_cert",
                              g.mock_pem,
                              "-srv_key",
                              g.mock_key,
                              "-rsp_cert",
                              g.mock_pem,
                              "-cmd",
                              "ir",
                              "-ref",
                              FRONT_SECRET_REF,
                              "-secret",
                              "pass:" FRONT_SECRET,
                              "-mac",
                              "hmacWithSHA256",
                              "-newkey",
                              g.dev_key,
                              "-subject",
                              subj,
                              "-implicit_confirm",
                              "-reqout",
                              req,
                              "-certout",
                              cert,
                              "-unprotected_errors",
                              NULL};
        (void)test_run(argv, g.log);
        if (!test_read_file(req, &g.reqs[i], &g.req_lens[i])) {
            fprintf(stderr, "openssl cmp wrote no request (log: %s)\n", g.log);
            return false;
        }
    }
    return true;
}

static int front_suite_cleanup(void);

static bool front_suite_setup(void)
{
    if (!test_tmpdir(g.dir, sizeof(g.dir), "front") || !test_token_create(&g.token, "front-test")) {
        return false;
    }
    (void)snprintf(g.uri, sizeof(g.uri), "pkcs11:token=%s;object=ca?module-path=%s&pin-value=%s",
                   g.token.label, g.token.module, g.token.user_pin);
    char ca_pem[320], secret[320];
    test_path(g.log, sizeof(g.log), g.dir, "openssl.log");
    test_path(g.conf, sizeof(g.conf), g.dir, "certmint.cnf");
    test_path(ca_pem, sizeof(ca_pem), g.dir, "ca.pem");
    test_path(secret, sizeof(secret), g.dir, "secret");
    test_path(g.mock_key, sizeof(g.mock_key), g.dir, "mock.key");
    test_path(g.mock_pem, sizeof(g.mock_pem), g.dir, "mock.pem");
    test_path(g.dev_key, sizeof(g.dev_key), g.dir, "dev.key");
    const char *mock[] = {"openssl",
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:P-256",
                          "-nodes",
                          "-keyout",
                          g.mock_key,
                          "-out",
                          g.mock_pem,
                          "-subj",
                          "/CN=mock",
                          "-days",
                          "2",
                          NULL};
    const char *dev[] = {"openssl", "genpkey",  "-algorithm",
                         "EC",      "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-out",    g.dev_key,  NULL};
    if (!make_root(ca_pem) || !test_write_file(secret, FRONT_SECRET, strlen(FRONT_SECRET)) ||
        !write_config(g.conf, "front.db", 1) || !run_quiet(mock) || !run_quiet(dev) ||
        !make_requests()) {
        return false;
    }
    char err[1024];
    if (!cm_ok(front_daemon_load(&g.d, err, sizeof(err), g.conf)) ||
        !cm_ok(front_daemon_start(g.d, err, sizeof(err)))) {
        fprintf(stderr, "front: %s\n", err);
        return false;
    }
    cm_runtime_set_log_level(CM_LOG_WARN);
    if (!cm_ok(cm_cq_init(&g.cq)) ||
        !cm_ok(front_loop_new(&g.loop, g.d, &k_fake_transport, NULL, &g.cq))) {
        return false;
    }
    return true;
}

// front_suite_init sets the fixture up; CUnit does not call the cleanup after a failed init,
// so it is called here (the token directory would be left behind otherwise).
static int front_suite_init(void)
{
    if (!front_suite_setup()) {
        (void)front_suite_cleanup();
        return 1;
    }
    return 0;
}

static int front_suite_cleanup(void)
{
    for (size_t i = 0; i < FAKE_CONNS; i++) {
        fake_drop(&g.conns[i]);
        free(g.conns[i].out);
    }
    // Requests detached from closed connections come back before the loop goes.
    for (int i = 0; i < 2000 && g.loop != NULL && front_pending_jobs() > 0; i++) {
        pump_once(10);
    }
    front_loop_free(g.loop);
    front_daemon_free(g.d);
    cm_cq_cleanup(&g.cq);
    for (int i = 0; i < FRONT_NUM_REQS; i++) {
        free(g.reqs[i]);
    }
    test_token_destroy(&g.token);
    if (g.dir[0] != '\0') {
        (void)test_rmtree(g.dir);
    }
    return 0;
}

// --- tests -----------------------------------------------------------------------------------

static void test_front_pipelined_requests_answered_in_order(void)
{
    const int r1 = take_request(), r2 = take_request();
    size_t l1, l2;
    uint8_t *p1 = cmp_post(&l1, r1, "", true), *p2 = cmp_post(&l2, r2, "", true);
    static const char k_health[] = "GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n";
    static const char k_nope[] = "GET /nope HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n";
    const size_t total = l1 + l2 + strlen(k_health) + strlen(k_nope);
    uint8_t *all = malloc(total);
    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    size_t o = 0;
    memcpy(all + o, p1, l1), o += l1;
    memcpy(all + o, k_health, strlen(k_health)), o += strlen(k_health);
    memcpy(all + o, p2, l2), o += l2;
    memcpy(all + o, k_nope, strlen(k_nope));
    fake_conn *c = fake_open(0);
    fake_data(c, all, total); // four requests in one receive
    drive(c, 4);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 4);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r1);
    CU_ASSERT_FALSE(a.close);
    a = nth_response(c, 1);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_TRUE(a.body.len == 3 && memcmp(a.body.p, "ok\n", 3) == 0);
    a = nth_response(c, 2);
    check_ip(&a, r2);
    a = nth_response(c, 3);
    CU_ASSERT_EQUAL(a.status, 404);
    CU_ASSERT_TRUE(a.close); // Connection: close was asked: answered, then closed
    CU_ASSERT_TRUE(c->closed);
    CU_ASSERT_EQUAL(c->sends, 4);
    CU_ASSERT_EQUAL(front_pending_jobs(), 0);
    fake_drop(c);
    free(all);
    free(p1);
    free(p2);
}

static void test_front_request_one_byte_at_a_time(void)
{
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    fake_conn *c = fake_open(0);
    for (size_t i = 0; i < len; i++) {
        fake_data(c, p + i, 1);
        if (i + 1 < len) {
            CU_ASSERT_EQUAL_FATAL(c->sends, 0); // nothing is answered before the last byte
        }
    }
    drive(c, 1);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_FALSE(c->closed);
    fake_drop(c);
    free(p);
}

static void test_front_response_bigger_than_one_send(void)
{
    // /metrics (several KiB) taken by the "kernel" 100 bytes at a time, while a pipelined
    // request trickles in: the answer's bytes stay valid and intact until on_sent.
    static const char k_metrics[] = "GET /metrics HTTP/1.1\r\nHost: ca\r\n\r\n";
    static const char k_health[] = "GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n";
    fake_conn *c = fake_open(1);
    fake_data(c, k_metrics, strlen(k_metrics));
    CU_ASSERT_FATAL(c->sending);
    CU_ASSERT_TRUE(c->active.len > 2000);
    size_t fed = 0;
    while (c->active_off < c->active.len) {
        fake_progress(c, 100);
        if (fed < strlen(k_health)) {
            fake_data(c, k_health + fed, 1);
            fed++;
        }
    }
    CU_ASSERT_EQUAL(c->sends, 1); // the pipelined request waits for the answer to be out
    fake_data(c, k_health + fed, strlen(k_health) - fed);
    drive(c, 2);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 2);
    http_answer a = nth_response(c, 0);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_STRING_EQUAL(a.type, "text/plain; version=0.0.4");
    CU_ASSERT_PTR_NOT_NULL(memmem(a.body.p, a.body.len, "certmint_requests_total{outcome=\"ok\"}",
                                  strlen("certmint_requests_total{outcome=\"ok\"}")));
    CU_ASSERT_PTR_NOT_NULL(memmem(a.body.p, a.body.len, "certmint_store_batch_size_count",
                                  strlen("certmint_store_batch_size_count")));
    a = nth_response(c, 1);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_TRUE(a.body.len == 3 && memcmp(a.body.p, "ok\n", 3) == 0);
    fake_drop(c);
}

static void test_front_routes_and_errors(void)
{
    static const struct {
        const char *req;
        size_t len; // 0: strlen(req)
        int status;
        const char *body; // a prefix of the body, NULL to skip
    } k_cases[] = {
        {"GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n", 0, 200, "ok\n"},
        {"GET /healthz?probe=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 200, "ok\n"},
        {"GET /metrics HTTP/1.1\r\nHost: ca\r\n\r\n", 0, 200, "# HELP certmint_requests_total"},
        {"GET /nope HTTP/1.1\r\nHost: ca\r\n\r\n", 0, 404, "404 Not Found\n"},
        {"POST /.well-known/cmp/p/nope HTTP/1.1\r\nHost: ca\r\nContent-Type: "
         "application/pkixcmp\r\nContent-Length: 2\r\n\r\n0\x00",
         sizeof("POST /.well-known/cmp/p/nope HTTP/1.1\r\nHost: ca\r\nContent-Type: "
                "application/pkixcmp\r\nContent-Length: 2\r\n\r\n0\x00") -
             1,
         404, "404 Not Found: no such CA\n"},
        {"GET /crl/nope.crl HTTP/1.1\r\nHost: ca\r\n\r\n", 0, 404, "404 Not Found: no such CRL\n"},
        {"GET /.well-known/cmp HTTP/1.1\r\nHost: ca\r\n\r\n", 0, 405, NULL},
        {"POST /.well-known/cmp HTTP/1.1\r\nHost: ca\r\nContent-Type: text/plain\r\n"
         "Content-Length: 3\r\n\r\nabc",
         0, 415, NULL},
    };
    fake_conn *c = fake_open(2);
    const uint64_t errors0 = g.d->counters.n_http_errors;
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        const size_t len = k_cases[i].len != 0 ? k_cases[i].len : strlen(k_cases[i].req);
        fake_data(c, k_cases[i].req, len);
        drive(c, i + 1);
        CU_ASSERT_EQUAL_FATAL(count_responses(c), i + 1);
        const http_answer a = nth_response(c, i);
        CU_ASSERT_EQUAL(a.status, k_cases[i].status);
        if (k_cases[i].body != NULL) {
            CU_ASSERT_TRUE(a.body.len >= strlen(k_cases[i].body) &&
                           memcmp(a.body.p, k_cases[i].body, strlen(k_cases[i].body)) == 0);
        }
        CU_ASSERT_FALSE(a.close);
    }
    CU_ASSERT_EQUAL(g.d->counters.n_http_errors - errors0, 5);
    // Garbage: 400, and the connection closes after the answer.
    fake_data(c, "GARBAGE\r\n\r\n", 11);
    drive(c, sizeof(k_cases) / sizeof(k_cases[0]) + 1);
    const http_answer a = nth_response(c, sizeof(k_cases) / sizeof(k_cases[0]));
    CU_ASSERT_EQUAL(a.status, 400);
    CU_ASSERT_TRUE(a.close);
    CU_ASSERT_TRUE(c->closed);
    fake_drop(c);
}

static void test_front_serves_the_crl(void)
{
    front_daemon_refresh_crls(g.d); // the first CRL of "devices"
    static const char k_crl[] = "GET /crl/devices.crl HTTP/1.1\r\nHost: ca\r\n\r\n";
    fake_conn *c = fake_open(0);
    fake_data(c, k_crl, strlen(k_crl));
    drive(c, 1);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    const http_answer a = nth_response(c, 0);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_STRING_EQUAL(a.type, "application/pkix-crl");
    const unsigned char *q = a.body.p;
    X509_CRL *crl = d2i_X509_CRL(NULL, &q, (long)a.body.len);
    CU_ASSERT_PTR_NOT_NULL(crl);
    X509_CRL_free(crl);
    fake_drop(c);
}

static void test_front_slow_request_times_out_with_408(void)
{
    static const char k_part[] = "POST /.well-known/cmp HTTP/1.1\r\nHost: ca\r\n";
    fake_conn *c = fake_open(0);
    CU_ASSERT_EQUAL(c->deadline, g.d->idle_timeout_ms);
    fake_data(c, k_part, strlen(k_part));
    CU_ASSERT_EQUAL(c->deadline, g.d->head_timeout_ms); // a request started: header timeout
    const net_action act = front_net_app()->on_timeout(g.loop, c->state, fake_ref(0));
    CU_ASSERT_EQUAL(act, NET_CONTINUE);
    drive(c, 1);
    const http_answer a = nth_response(c, 0);
    CU_ASSERT_EQUAL(a.status, 408);
    CU_ASSERT_TRUE(a.close);
    CU_ASSERT_TRUE(c->closed);
    fake_drop(c);
    // An idle connection is simply closed.
    c = fake_open(0);
    CU_ASSERT_EQUAL(front_net_app()->on_timeout(g.loop, c->state, fake_ref(0)), NET_CLOSE);
    fake_drop(c);
}

// A client that leaves while its request's jobs are out: the request is detached and freed
// when they come back, and the loop goes on serving. The certificate was issued meanwhile; a
// resend of the same request gets the answer that never reached the client (issue 23).
static void test_front_connection_closed_while_jobs_are_out(void)
{
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    fake_conn *c = fake_open(3);
    fake_data(c, p, len);
    CU_ASSERT_EQUAL_FATAL(front_pending_jobs(), 1); // the certificate's signature is out
    CU_ASSERT_FALSE(front_net_app()->is_idle(g.loop, c->state));
    fake_drop(c); // the client went away: the request is detached, freed when jobs return
    for (int i = 0; i < 2000 && front_pending_jobs() > 0; i++) {
        pump_once(10);
    }
    CU_ASSERT_EQUAL(front_pending_jobs(), 0);
    CU_ASSERT_EQUAL(c->sends, 0);
    // The loop still serves.
    c = fake_open(3);
    static const char k_health[] = "GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n";
    fake_data(c, k_health, strlen(k_health));
    drive(c, 1);
    CU_ASSERT_EQUAL(nth_response(c, 0).status, 200);
    fake_drop(c);
    // The client resends its request (issue 23): it gets the answer it lost, with the
    // certificate issued for it, not transactionIdInUse and not a second certificate.
    srv_engine_stats es0, es1;
    srv_engine_get_stats(g.d->engine, &es0);
    c = fake_open(3);
    fake_data(c, p, len);
    drive(c, 1);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_FALSE(a.close);
    srv_engine_get_stats(g.d->engine, &es1);
    CU_ASSERT_EQUAL(es1.resend_hits - es0.resend_hits, 1);
    CU_ASSERT_EQUAL(es1.kdf_done, es0.kdf_done); // answered without checking the MAC again
    // And again on the same connection: the same bytes.
    const cm_span first = a.body;
    fake_data(c, p, len);
    drive(c, 2);
    const http_answer b = nth_response(c, 1);
    CU_ASSERT_TRUE(b.body.len == first.len && memcmp(b.body.p, first.p, first.len) == 0);
    fake_drop(c);
    free(p);
}

// sent_continue reports whether the first thing |c| got was exactly the interim 100.
static bool sent_continue(const fake_conn *c)
{
    const cm_span k = http_continue_response();
    return c->out_len >= k.len && memcmp(c->out, k.p, k.len) == 0;
}

static void test_front_expect_100_continue(void)
{
    // The head alone: 100 Continue at once (RFC 9110 §10.1.1), then the body, then the answer.
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "Expect: 100-continue\r\n", false);
    fake_conn *c = fake_open(0);
    fake_data(c, p, len);
    CU_ASSERT_FATAL(c->sending);
    const cm_span k = http_continue_response();
    CU_ASSERT_TRUE(c->active.len == k.len && memcmp(c->active.p, k.p, k.len) == 0);
    fake_complete(c);
    CU_ASSERT_FALSE(c->closed);
    fake_data(c, g.reqs[r], g.req_lens[r]);
    drive(c, 1);
    CU_ASSERT_TRUE(sent_continue(c));
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_EQUAL(c->sends, 2);
    fake_drop(c);
    free(p);

    // The body arrives and is answered (404: no such CA) while the 100 is still being sent:
    // the answer waits for it instead of failing the connection.
    static const char k_head[] = "POST /.well-known/cmp/p/nope HTTP/1.1\r\nHost: ca\r\n"
                                 "Content-Type: application/pkixcmp\r\nContent-Length: 2\r\n"
                                 "Expect: 100-continue\r\n\r\n";
    c = fake_open(0);
    fake_data(c, k_head, strlen(k_head));
    CU_ASSERT_FATAL(c->sending);
    fake_data(c, "0\x01", 2);
    CU_ASSERT_FALSE(c->closed);
    CU_ASSERT_EQUAL(c->sends, 1);
    drive(c, 1);
    CU_ASSERT_TRUE(sent_continue(c));
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    CU_ASSERT_EQUAL(nth_response(c, 0).status, 404);
    CU_ASSERT_FALSE(c->closed);
    fake_drop(c);
}

static void test_front_no_100_continue_when_not_waiting(void)
{
    // Head and body together: the client did not wait, so no interim answer.
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "Expect: 100-continue\r\n", true);
    fake_conn *c = fake_open(0);
    fake_data(c, p, len);
    drive(c, 1);
    CU_ASSERT_FALSE(sent_continue(c));
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_EQUAL(c->sends, 1);
    fake_drop(c);
    free(p);
    // HTTP/1.0 knows no 100 (RFC 9110 §10.1.1): nothing is sent until the answer.
    static const char k_head10[] = "POST /.well-known/cmp/p/nope HTTP/1.0\r\n"
                                   "Content-Type: application/pkixcmp\r\nContent-Length: 2\r\n"
                                   "Expect: 100-continue\r\n\r\n";
    c = fake_open(0);
    fake_data(c, k_head10, strlen(k_head10));
    CU_ASSERT_EQUAL(c->sends, 0);
    fake_data(c, "0\x01", 2);
    drive(c, 1);
    CU_ASSERT_FALSE(sent_continue(c));
    CU_ASSERT_EQUAL(nth_response(c, 0).status, 404);
    fake_drop(c);
}

static void test_front_orders_100_cas_default_first(void)
{
    // More CAs than the 64 the wiring once had room for; the default one is the 67th.
    cfg_ca cas[100];
    memset(cas, 0, sizeof(cas));
    cfg_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.cas = cas;
    cfg.num_cas = 100;
    cfg.default_ca = &cas[66];
    size_t order[100];
    CU_ASSERT_EQUAL_FATAL(front_ca_order(&cfg, order), 100);
    CU_ASSERT_EQUAL(order[0], 66);
    bool seen[100] = {false};
    size_t prev = 0, ascending = 0;
    for (size_t k = 0; k < 100; k++) {
        CU_ASSERT_FATAL(order[k] < 100 && !seen[order[k]]);
        seen[order[k]] = true;
        if (k > 1) {
            ascending += order[k] > prev;
        }
        prev = order[k];
    }
    CU_ASSERT_EQUAL(ascending, 98); // the others keep their configured order
    // No default (several CAs, none named): the configured order.
    cfg.default_ca = NULL;
    CU_ASSERT_EQUAL_FATAL(front_ca_order(&cfg, order), 100);
    CU_ASSERT_TRUE(order[0] == 0 && order[99] == 99);
}

// load_and_start wires a daemon from a generated configuration with |num_cas| CAs.
static front_daemon *load_and_start(const char *name, size_t num_cas, char *err, size_t err_cap)
{
    char path[320], db[64];
    (void)snprintf(db, sizeof(db), "%s.db", name);
    test_path(path, sizeof(path), g.dir, name);
    CU_ASSERT_FATAL(write_config(path, db, num_cas));
    front_daemon *d = NULL;
    if (!cm_ok(front_daemon_load(&d, err, err_cap, path))) {
        return NULL;
    }
    cm_runtime_set_log_level(CM_LOG_WARN);
    if (!cm_ok(front_daemon_start(d, err, err_cap))) {
        front_daemon_free(d);
        return NULL;
    }
    return d;
}

static void test_front_wires_many_cas(void)
{
    // 16 CAs, each with its key and CMP key (the token allows HSM_MAX_KEYS_PER_TOKEN open
    // keys): the default one, configured 11th, answers first; every CA is served.
    char err[1024];
    front_daemon *d = load_and_start("many.cnf", 16, err, sizeof(err));
    if (d == NULL) {
        fprintf(stderr, "\n  %s\n", err);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    const srv_engine *e = front_daemon_engine(d);
    CU_ASSERT_EQUAL(front_daemon_num_cas(d), 16);
    const srv_ca *def = srv_engine_find_ca(e, cm_span_make(NULL, 0));
    CU_ASSERT_FATAL(def != NULL);
    CU_ASSERT_STRING_EQUAL(def->name, "devices");
    size_t found = 0;
    for (size_t i = 0; i < 15; i++) {
        char name[32];
        (void)snprintf(name, sizeof(name), "ca%zu", i);
        const srv_ca *ca = srv_engine_find_ca(e, cm_span_make(name, strlen(name)));
        found += ca != NULL && strcmp(ca->name, name) == 0 && ca->ca_key != NULL;
    }
    CU_ASSERT_EQUAL(found, 15);
    CU_ASSERT_PTR_NULL(srv_engine_find_ca(e, CM_SPAN_LIT("ca15")));
    front_daemon_free(d);
    // One more CA needs more keys than the token opens: a clear error, nothing leaked.
    CU_ASSERT_PTR_NULL(load_and_start("toomany.cnf", 17, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "the most it allows"));
}

// The front's calls of srv_request_summary, counted: the suite links with
// -Wl,--wrap=srv_request_summary (tests/engine/front/CMakeLists.txt).
static unsigned g_summaries;
static uint8_t g_tls_peer[16]; // srv_request_tls_peer of the last request summarised
static size_t g_tls_peer_len;
void __real_srv_request_summary(const srv_request *req, srv_summary *out);
void __wrap_srv_request_summary(const srv_request *req, srv_summary *out);
void __wrap_srv_request_summary(const srv_request *req, srv_summary *out)
{
    g_summaries++;
    const cm_span tp = srv_request_tls_peer(req);
    g_tls_peer_len = tp.len;
    if (tp.len > 0) {
        memcpy(g_tls_peer, tp.p, tp.len < sizeof(g_tls_peer) ? tp.len : sizeof(g_tls_peer));
    }
    __real_srv_request_summary(req, out);
}

static void test_front_logs_each_request_once_with_one_summary(void)
{
    // With INFO logging (the request log line) the summary is computed once per request, for
    // the log line and the metrics together; the line has its usual fields.
    char log_path[320];
    test_path(log_path, sizeof(log_path), g.dir, "requests.log");
    const int saved = dup(2);
    const int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CU_ASSERT_FATAL(saved >= 0 && fd >= 0 && dup2(fd, 2) == 2);
    (void)close(fd);
    cm_runtime_set_log_level(CM_LOG_INFO);
    const uint64_t ok0 = g.d->counters.n_ok;
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    fake_conn *c = fake_open(0);
    g_summaries = 0;
    fake_data(c, p, len);
    drive(c, 1);
    const unsigned summaries = g_summaries;
    cm_runtime_set_log_level(CM_LOG_WARN);
    (void)dup2(saved, 2);
    (void)close(saved);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_EQUAL(summaries, 1);
    CU_ASSERT_EQUAL(g.d->counters.n_ok - ok0, 1);
    uint8_t *text;
    size_t text_len;
    CU_ASSERT_FATAL(test_read_file(log_path, &text, &text_len));
    static const char k_want[] = " peer=192.0.2.1:4711 ca=devices body=ir outcome=ok us=";
    CU_ASSERT_PTR_NOT_NULL(memmem(text, text_len, k_want, strlen(k_want)));
    free(text);
    fake_drop(c);
    free(p);
}

// After a rejection the connection closes once the answer is sent (RFC 9811 §5), after success
// it stays open; /metrics counts rejections by failInfo and MACs that did not verify (issue 14).
static void test_front_closes_after_a_rejection_and_counts_it(void)
{
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    const uint64_t tid_in_use0 = g.d->counters.n_failinfo[CM_FAIL_TRANSACTION_ID_IN_USE];
    const uint64_t mac0 = g.d->counters.n_mac_failed[0];
    // The same transaction on two connections at once: the first reserves its transactionID,
    // the second finds it in use (transactionIdInUse, and its connection closes after it);
    // the first gets its ip and stays open.
    fake_conn *c = fake_open(0);
    fake_conn *c2 = fake_open(1);
    fake_data(c, p, len);
    fake_data(c2, p, len);
    drive(c2, 1);
    http_answer a = nth_response(c2, 0);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_TRUE(a.close);
    CU_ASSERT_TRUE(c2->closed);
    fake_drop(c2);
    drive(c, 1);
    a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_FALSE(a.close);
    CU_ASSERT_FALSE(c->closed);
    fake_drop(c);
    CU_ASSERT_EQUAL(g.d->counters.n_failinfo[CM_FAIL_TRANSACTION_ID_IN_USE] - tid_in_use0, 1);
    // A request whose MAC does not verify (its last byte is the MAC's): counted as a PBM
    // failure, and closed too.
    p[len - 1] ^= 0x01;
    c = fake_open(1);
    fake_data(c, p, len);
    drive(c, 1);
    a = nth_response(c, 0);
    CU_ASSERT_TRUE(a.close);
    CU_ASSERT_TRUE(c->closed);
    fake_drop(c);
    CU_ASSERT_EQUAL(g.d->counters.n_mac_failed[0] - mac0, 1);
    static const char k_metrics[] = "GET /metrics HTTP/1.1\r\nHost: ca\r\n\r\n";
    c = fake_open(2);
    fake_data(c, k_metrics, strlen(k_metrics));
    drive(c, 1);
    a = nth_response(c, 0);
    static const char k_tid[] = "certmint_rejections_total{failinfo=\"transactionIdInUse\"} ";
    static const char k_bmc[] = "certmint_rejections_total{failinfo=\"badMessageCheck\"} ";
    static const char k_mac[] = "certmint_mac_failures_total{kind=\"pbm\"} ";
    CU_ASSERT_PTR_NOT_NULL(memmem(a.body.p, a.body.len, k_tid, strlen(k_tid)));
    CU_ASSERT_PTR_NOT_NULL(memmem(a.body.p, a.body.len, k_bmc, strlen(k_bmc)));
    CU_ASSERT_PTR_NOT_NULL(memmem(a.body.p, a.body.len, k_mac, strlen(k_mac)));
    // One family each (promtool refuses a family declared twice).
    static const char *const k_types[] = {"# TYPE certmint_rejections_total ",
                                          "# TYPE certmint_mac_failures_total "};
    for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++) {
        const uint8_t *first = memmem(a.body.p, a.body.len, k_types[i], strlen(k_types[i]));
        CU_ASSERT_PTR_NOT_NULL_FATAL(first);
        const size_t rest = a.body.len - (size_t)(first + 1 - a.body.p);
        CU_ASSERT_PTR_NULL(memmem(first + 1, rest, k_types[i], strlen(k_types[i])));
    }
    CU_ASSERT_FALSE(a.close); // not a CMP rejection
    fake_drop(c);
    free(p);
}

// The watchdog's probe (front_daemon_loops_alive): a loop that has not taken the previous probe
// is reported and is not sent another; once it turns (takes the probe from its queue) it is
// alive again and gets the next one. The probe never reaches the engine.
static void test_front_watchdog_probe_needs_the_loop_to_turn(void)
{
    front_daemon_watch(g.d, g.loop);
    CU_ASSERT_TRUE(front_daemon_loops_alive(g.d));  // nothing was outstanding: probe 1 sent
    CU_ASSERT_FALSE(front_daemon_loops_alive(g.d)); // the loop has not turned since
    CU_ASSERT_FALSE(front_daemon_loops_alive(g.d)); // still not; and no second probe queued
    pump_once(100);                                 // the loop turns and takes probe 1
    CU_ASSERT_TRUE(front_daemon_loops_alive(g.d));  // probe 2 sent
    pump_once(100);
    CU_ASSERT_EQUAL(front_pending_jobs(), 0);
    front_daemon_unwatch(g.d, g.loop);
    CU_ASSERT_TRUE(front_daemon_loops_alive(g.d)); // no loop watched: nothing to wait for
    CU_ASSERT_PTR_NULL(cm_cq_drain(&g.cq));        // and nothing was pushed
    // A fresh registration starts from the loop's own probe counters.
    front_daemon_watch(g.d, g.loop);
    CU_ASSERT_TRUE(front_daemon_loops_alive(g.d));
    pump_once(100);
    front_daemon_unwatch(g.d, g.loop);
    __atomic_store_n(&g.d->num_loops, 0, __ATOMIC_RELAXED);
}

// /metrics: every family has HELP and TYPE, a request counts in its duration histogram, and a
// rejection under its PKIFailureInfo name.
static void test_front_metrics_histogram_and_rejections(void)
{
    srv_summary s;
    memset(&s, 0, sizeof(s));
    s.body_type = CMP_BODY_P10CR;
    s.fail_bit = CM_FAIL_BAD_POP;
    const uint64_t pop0 = g.d->counters.n_failinfo[CM_FAIL_BAD_POP];
    front_metrics_count(g.d, &s, 3000); // 3 ms: the 5 ms bucket and up
    CU_ASSERT_EQUAL(g.d->counters.n_failinfo[CM_FAIL_BAD_POP], pop0 + 1);
    char *text = malloc(FRONT_METRICS_CAP);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    const size_t n = front_metrics_write(g.d, text, FRONT_METRICS_CAP);
    CU_ASSERT_FATAL(n > 0 && n < FRONT_METRICS_CAP);
    text[n] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "certmint_rejections_total{failinfo=\"badPOP\"} "));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "certmint_request_duration_seconds_bucket{body=\"p10cr\","
                                        "outcome=\"rejected\",le=\"0.0025\"} 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "certmint_request_duration_seconds_bucket{body=\"p10cr\","
                                        "outcome=\"rejected\",le=\"0.005\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "certmint_request_duration_seconds_count{body=\"p10cr\","
                                        "outcome=\"rejected\"} 1\n"));
    // Each TYPE line follows the HELP line of the same family.
    size_t types = 0;
    for (const char *p = strstr(text, "# TYPE "); p != NULL; p = strstr(p + 1, "# TYPE ")) {
        const char *name = p + 7;
        const size_t len = strcspn(name, " ");
        char help[128];
        (void)snprintf(help, sizeof(help), "# HELP %.*s ", (int)len, name);
        CU_ASSERT_PTR_NOT_NULL(strstr(text, help));
        types++;
    }
    CU_ASSERT(types >= 20);
    free(text);
}

// --- limits and operations (issue 23) --------------------------------------------------------

// body_text returns a malloc'ed, NUL-terminated copy of |a|'s body.
static char *body_text(const http_answer *a)
{
    char *t = malloc(a->body.len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    memcpy(t, a->body.p, a->body.len);
    t[a->body.len] = '\0';
    return t;
}

// fetch_metrics returns the /metrics text of the fixture's loop (malloc'ed).
static char *fetch_metrics(void)
{
    static const char k_get[] = "GET /metrics HTTP/1.1\r\nHost: ca\r\n\r\n";
    fake_conn *c = fake_open(3);
    fake_data(c, k_get, strlen(k_get));
    drive(c, 1);
    const http_answer a = nth_response(c, 0);
    CU_ASSERT_EQUAL(a.status, 200);
    char *t = body_text(&a);
    fake_drop(c);
    return t;
}

// metric_of returns the value of the sample |series| (name and labels) in |text|, -1 if none.
static long long metric_of(const char *text, const char *series)
{
    const size_t n = strlen(series);
    for (const char *p = strstr(text, series); p != NULL; p = strstr(p + 1, series)) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') {
            return strtoll(p + n + 1, NULL, 10);
        }
    }
    return -1;
}

// status_of returns the PKIStatusInfo of a CMP error or of the first CertResponse of an ip,
// with the parsed message in |m|; NULL when |der| is neither.
static const cmp_status_info *status_of(cm_arena *a, cmp_msg *m, cm_span der)
{
    if (!cm_ok(cmp_msg_from_der(a, m, der, NULL))) {
        return NULL;
    }
    if (m->body.type == CMP_BODY_ERROR) {
        return &m->body.u.error.status;
    }
    if (m->body.type == CMP_BODY_IP && m->body.u.rep.num_responses > 0) {
        return &m->body.u.rep.responses[0].status;
    }
    return NULL;
}

// check_refused checks that |a| is a CMP rejection with failInfo |bit| whose statusString
// holds |text|.
static void check_refused(const http_answer *a, int bit, const char *text)
{
    CU_ASSERT_EQUAL(a->status, 200); // RFC 6712 §3.3: a CMP error travels in a 200
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    cmp_msg m;
    const cmp_status_info *st = status_of(&ar, &m, a->body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(st->status, CMP_STATUS_REJECTION);
    CU_ASSERT_TRUE(st->has_fail_info && st->fail_info == CMP_FAILINFO_BIT((uint32_t)bit));
    const bool has = st->status_string.len > 0 &&
                     memmem(st->status_string.p, st->status_string.len, text, strlen(text)) != NULL;
    if (!has) {
        fprintf(stderr, "\n  statusString without \"%s\"\n", text);
    }
    CU_ASSERT_TRUE(has);
    cm_arena_cleanup(&ar);
}

static void test_front_eof_closes_a_partial_request_at_once(void)
{
    // Churn: part of a request, then the peer leaves. The request can never complete, so the
    // connection closes now instead of holding its slot until the header timeout.
    static const char k_part[] =
        "POST /.well-known/cmp HTTP/1.1\r\nHost: ca\r\n"
        "Content-Type: application/pkixcmp\r\nContent-Length: 100\r\n\r\n0";
    const net_app *app = front_net_app();
    fake_conn *c = fake_open(0);
    fake_data(c, k_part, strlen(k_part));
    CU_ASSERT_FALSE(app->is_idle(g.loop, c->state));
    CU_ASSERT_EQUAL(app->on_eof(g.loop, c->state, fake_ref(0)), NET_CLOSE);
    CU_ASSERT_EQUAL(c->sends, 0);
    fake_drop(c);
    // An idle connection closes as well.
    c = fake_open(0);
    CU_ASSERT_EQUAL(app->on_eof(g.loop, c->state, fake_ref(0)), NET_CLOSE);
    fake_drop(c);

    // A request in progress is answered (the peer may only have shut down its sending side);
    // a pipelined request it left half-sent is then closed at once, not at its deadline.
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    static const char k_half[] = "GET /healthz HTTP/1.1\r\nHo";
    uint8_t *both = malloc(len + strlen(k_half));
    CU_ASSERT_PTR_NOT_NULL_FATAL(both);
    memcpy(both, p, len);
    memcpy(both + len, k_half, strlen(k_half));
    c = fake_open(1);
    fake_data(c, both, len + strlen(k_half));
    CU_ASSERT_EQUAL_FATAL(front_pending_jobs(), 1);
    CU_ASSERT_EQUAL(app->on_eof(g.loop, c->state, fake_ref(1)), NET_CONTINUE);
    drive(c, 1);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r);
    CU_ASSERT_TRUE(c->closed);
    fake_drop(c);

    // A whole pipelined request after the EOF is answered too; then the transport (which sees
    // the connection idle) closes it, not the front.
    static const char k_two[] = "GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n"
                                "GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n";
    c = fake_open(1);
    fake_data(c, k_two, strlen(k_two));
    CU_ASSERT_TRUE(c->sending);
    CU_ASSERT_EQUAL(app->on_eof(g.loop, c->state, fake_ref(1)), NET_CONTINUE);
    drive(c, 2);
    CU_ASSERT_EQUAL(count_responses(c), 2);
    CU_ASSERT_FALSE(c->closed);
    CU_ASSERT_TRUE(app->is_idle(g.loop, c->state));
    fake_drop(c);
    free(both);
    free(p);
}

static void test_front_admin_listener_serves_only_health_and_metrics(void)
{
    static const struct {
        const char *req;
        int status;
        const char *body;
    } k_cases[] = {
        {"GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n", 200, "ok\n"},
        {"GET /metrics HTTP/1.1\r\nHost: ca\r\n\r\n", 200, "# HELP certmint_requests_total"},
        {"GET /crl/devices.crl HTTP/1.1\r\nHost: ca\r\n\r\n", 404,
         "404 Not Found: the admin listener serves only /healthz and /metrics\n"},
        {"POST /.well-known/cmp HTTP/1.1\r\nHost: ca\r\nContent-Type: application/pkixcmp\r\n"
         "Content-Length: 2\r\n\r\n0\x03",
         404, "404 Not Found: the admin listener serves only"},
        {"GET /nope HTTP/1.1\r\nHost: ca\r\n\r\n", 404, "404 Not Found"}, // by the parser
    };
    fake_conn *c = fake_open_on(2, true);
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        fake_data(c, k_cases[i].req, strlen(k_cases[i].req));
        drive(c, i + 1);
        CU_ASSERT_EQUAL_FATAL(count_responses(c), i + 1);
        const http_answer a = nth_response(c, i);
        CU_ASSERT_EQUAL(a.status, k_cases[i].status);
        const bool body_ok = a.body.len >= strlen(k_cases[i].body) &&
                             memcmp(a.body.p, k_cases[i].body, strlen(k_cases[i].body)) == 0;
        if (!body_ok) {
            fprintf(stderr, "\n  case %zu: %d \"%.*s\"\n", i, a.status, (int)a.body.len,
                    (const char *)a.body.p);
        }
        CU_ASSERT_TRUE(body_ok);
        CU_ASSERT_FALSE(a.close);
    }
    CU_ASSERT_EQUAL(front_pending_jobs(), 0); // the CMP request never reached the engine
    fake_drop(c);
    // The main listener still serves everything.
    front_daemon_refresh_crls(g.d);
    c = fake_open(2);
    fake_data(c, k_cases[2].req, strlen(k_cases[2].req));
    drive(c, 1);
    CU_ASSERT_EQUAL(nth_response(c, 0).status, 200);
    fake_drop(c);
}

static void test_front_metrics_limits_and_operations(void)
{
    // Every family of the block has a # HELP and a # TYPE line, the rejections are one family
    // with a reason label, and the gauges hold real readings.
    static const char *const k_families[] = {
        "certmint_connections_rejected_total",
        "certmint_connections_max",
        "certmint_connections_admin_open",
        "certmint_accept_emfile_total",
        "certmint_cq_overflow_total",
        "certmint_cq_dropped_total",
        "certmint_recv_rearms_total",
        "certmint_connections_closed_busy_total",
        "certmint_connections_eof_busy_total",
        "certmint_connections_lingered_total",
        "certmint_hsm_sign_call_failures_total",
        "certmint_hsm_retries_total",
        "process_open_fds",
        "process_max_fds",
        "certmint_store_free_bytes",
        "certmint_store_min_free_bytes",
        "certmint_store_low_space_refusals_total",
        "certmint_mac_backoff_total",
        "certmint_unauthenticated_errors_total",
        "certmint_kdf_jobs_total",
        "certmint_kdf_queue_depth",
        "certmint_kdf_refused_total",
        "certmint_retransmissions_total",
        "certmint_retransmit_cache_entries",
        "certmint_retransmit_cache_bytes",
        "certmint_retransmit_cache_evictions_total",
    };
    front_daemon_refresh_gauges(g.d);
    char *t = fetch_metrics();
    for (size_t i = 0; i < sizeof(k_families) / sizeof(k_families[0]); i++) {
        char help[128], type[128];
        (void)snprintf(help, sizeof(help), "\n# HELP %s ", k_families[i]);
        (void)snprintf(type, sizeof(type), "\n# TYPE %s ", k_families[i]);
        const bool ok = strstr(t, help) != NULL && strstr(t, type) != NULL;
        if (!ok) {
            fprintf(stderr, "\n  %s: no HELP or TYPE line\n", k_families[i]);
        }
        CU_ASSERT_TRUE(ok);
    }
    CU_ASSERT_EQUAL(metric_of(t, "certmint_connections_rejected_total{reason=\"full\"}"), 0);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_connections_rejected_total{reason=\"peer\"}"), 0);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_connections_rejected_total{reason=\"admin\"}"), 0);
    uint64_t fds = 0;
    TEST_ASSERT_OK(front_fd_count(&fds));
    const long long open = metric_of(t, "process_open_fds");
    CU_ASSERT_TRUE(open > 3 && (uint64_t)open <= fds + 16 && (uint64_t)open + 16 >= fds);
    CU_ASSERT_TRUE(metric_of(t, "process_max_fds") >= open);
    CU_ASSERT_TRUE(metric_of(t, "certmint_store_free_bytes") > 0);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_store_min_free_bytes"), 256ll << 20);
    // The engine's abuse limits (issue 23): both labels of each labelled family, and the KDF
    // pool, which verified every PBM request of the suite so far, counted them.
    CU_ASSERT_TRUE(metric_of(t, "certmint_mac_backoff_total{by=\"senderKID\"}") >= 0);
    CU_ASSERT_TRUE(metric_of(t, "certmint_mac_backoff_total{by=\"peer\"}") >= 0);
    CU_ASSERT_TRUE(metric_of(t, "certmint_unauthenticated_errors_total{protection=\"signed\"}") >=
                   0);
    CU_ASSERT_TRUE(metric_of(t, "certmint_unauthenticated_errors_total{protection=\"none\"}") >= 0);
    CU_ASSERT_TRUE(metric_of(t, "certmint_kdf_jobs_total") > 0);
    free(t);
}

// fake_full is a store_space probe: a disk with 12 MiB free.
static cm_result fake_full(void *arg, const char *dir, uint64_t *out_free)
{
    (void)arg;
    (void)dir;
    *out_free = 12u << 20;
    return cm_result_make(CM_OK);
}

static void test_front_enrolment_refused_below_store_min_free(void)
{
    // The disk (faked) has 12 MiB left, below the default store_min_free: the enrolment is
    // refused with systemUnavail and a reason before anything is signed or written.
    hsm_pool_stats before, after;
    hsm_pool_get_stats(g.d->pool, &before);
    g.d->space.probe = fake_full;
    front_daemon_refresh_gauges(g.d);
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    fake_conn *c = fake_open(0);
    fake_data(c, p, len);
    drive(c, 1);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    char want[512];
    (void)snprintf(want, sizeof(want),
                   "store full: only 12 MiB free on %s, below store_min_free (256 MiB)", g.dir);
    http_answer a = nth_response(c, 0);
    check_refused(&a, CMP_FAIL_SYSTEM_UNAVAIL, want);
    hsm_pool_get_stats(g.d->pool, &after);
    CU_ASSERT_EQUAL(after.signed_ok, before.signed_ok); // no certificate was signed
    fake_drop(c);
    char *t = fetch_metrics();
    CU_ASSERT_EQUAL(metric_of(t, "certmint_store_low_space_refusals_total"), 1);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_store_free_bytes"), 12ll << 20);
    free(t);
    // Space again: enrolments go through. The refused request itself first: it reserved
    // nothing (the check comes before the reservation), so its transactionID and key are free.
    g.d->space.probe = NULL;
    front_daemon_refresh_gauges(g.d);
    c = fake_open(0);
    fake_data(c, p, len);
    drive(c, 1);
    a = nth_response(c, 0);
    check_ip(&a, r);
    fake_drop(c);
    free(p);
    const int r2 = take_request();
    p = cmp_post(&len, r2, "", true);
    c = fake_open(0);
    fake_data(c, p, len);
    drive(c, 1);
    a = nth_response(c, 0);
    check_ip(&a, r2);
    fake_drop(c);
    free(p);
}

static void test_front_fd_plan_lowers_or_refuses(void)
{
    const char *listen[] = {"127.0.0.1:0"};
    const char *admin[] = {"127.0.0.1:0"};
    net_server_config nc = {.listen = listen,
                            .num_listen = 1,
                            .io_threads = 2,
                            .max_connections = 4096,
                            .admin_listen = admin,
                            .num_admin_listen = 1,
                            .admin_max_connections = 16};
    front_fd_budget b = {.limit = 1u << 20,
                         .open_now = 40,
                         .per_reader = 2,
                         .readers = 4,
                         .reserve = FRONT_FD_RESERVE};
    const uint64_t others = 40 + 2 * 4 + FRONT_FD_RESERVE;
    uint64_t need = 0, fixed = 0;
    // Plenty: unchanged.
    TEST_ASSERT_OK(front_fd_plan(&nc, &b, &need, &fixed));
    CU_ASSERT_EQUAL(nc.max_connections, 4096);
    CU_ASSERT_EQUAL(need, net_server_fds_needed(&nc) + others);
    // systemd's default soft limit of 1,024 with the defaults: lowered to what fits exactly.
    b.limit = 1024;
    TEST_ASSERT_OK(front_fd_plan(&nc, &b, &need, &fixed));
    CU_ASSERT_TRUE(nc.max_connections >= FRONT_MIN_CONNECTIONS && nc.max_connections < 4096);
    CU_ASSERT_TRUE(need > 1024);
    CU_ASSERT_TRUE(net_server_fds_needed(&nc) + others <= 1024);
    nc.max_connections++;
    CU_ASSERT_TRUE(net_server_fds_needed(&nc) + others > 1024);
    nc.max_connections--;
    CU_ASSERT_EQUAL(fixed, net_server_fds_needed(&nc) + others - 2u * nc.max_connections);
    // Too few for even FRONT_MIN_CONNECTIONS per thread: refused, the config left alone.
    nc.max_connections = 4096;
    b.limit = fixed + 2 * FRONT_MIN_CONNECTIONS - 1;
    TEST_ASSERT_CODE(front_fd_plan(&nc, &b, &need, &fixed), CM_E_LIMIT);
    CU_ASSERT_EQUAL(nc.max_connections, 4096);
    b.limit += 1;
    TEST_ASSERT_OK(front_fd_plan(&nc, &b, &need, &fixed));
    CU_ASSERT_EQUAL(nc.max_connections, FRONT_MIN_CONNECTIONS);
    // A limit below what the rest alone needs.
    nc.max_connections = 10;
    b.limit = 10;
    TEST_ASSERT_CODE(front_fd_plan(&nc, &b, &need, &fixed), CM_E_LIMIT);
}

#ifdef CM_P11SHIM_PATH
static void test_front_hsm_failure_reads_as_such(void)
{
    // A daemon whose token sits behind the fault shim, every C_Sign failing with
    // CKR_DEVICE_ERROR: the enrolment is refused with a reason that names the PKCS#11 error and
    // the retry, and both failed calls are counted although it is one failed job.
    CU_ASSERT_FATAL(setenv("P11SHIM_MODULE", g.token.module, 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_EVERY", "1", 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_RV", "0x30", 1) == 0); // CKR_DEVICE_ERROR
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_CLOSE", "0", 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_SIGN_DELAY_US", "0", 1) == 0);
    char saved[sizeof(g.uri)];
    memcpy(saved, g.uri, sizeof(saved));
    (void)snprintf(g.uri, sizeof(g.uri), "pkcs11:token=%s;object=ca?module-path=%s&pin-value=%s",
                   g.token.label, CM_P11SHIM_PATH, g.token.user_pin);
    char err[1024];
    front_daemon *d = load_and_start("shim.cnf", 1, err, sizeof(err));
    memcpy(g.uri, saved, sizeof(saved));
    if (d == NULL) {
        fprintf(stderr, "\n  %s\n", err);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    front_loop *main_loop = g.loop, *l = NULL;
    TEST_ASSERT_OK(front_loop_new(&l, d, &k_fake_transport, NULL, &g.cq));
    g.loop = l;
    const int r = take_request();
    size_t len;
    uint8_t *p = cmp_post(&len, r, "", true);
    fake_conn *c = fake_open(0);
    fake_data(c, p, len);
    drive(c, 1);
    CU_ASSERT_EQUAL_FATAL(count_responses(c), 1);
    http_answer a = nth_response(c, 0);
    check_refused(&a, CMP_FAIL_SYSTEM_FAILURE,
                  "HSM signing failed: CKR_DEVICE_ERROR, retried once");
    fake_drop(c);
    char *t = fetch_metrics();
    CU_ASSERT_EQUAL(metric_of(t, "certmint_hsm_sign_call_failures_total"), 2);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_hsm_retries_total"), 1);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_hsm_failures_total"), 1);
    free(t);
    free(p);
    for (int i = 0; i < 2000 && front_pending_jobs() > 0; i++) {
        pump_once(10);
    }
    g.loop = main_loop;
    front_loop_free(l);
    front_daemon_free(d);
    CU_ASSERT_FATAL(unsetenv("P11SHIM_FAIL_EVERY") == 0);
}
#endif

// HTTPS (issue 18): the client certificate of a TLS connection is in each request's log line
// (its subject quoted) and given to the request; a plain connection's request has none.
static void test_front_tls_peer_logged_and_given_to_the_request(void)
{
    char log_path[320];
    test_path(log_path, sizeof(log_path), g.dir, "tls-requests.log");
    const int saved = dup(2);
    const int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CU_ASSERT_FATAL(saved >= 0 && fd >= 0 && dup2(fd, 2) == 2);
    (void)close(fd);
    cm_runtime_set_log_level(CM_LOG_INFO);
    const int r1 = take_request(), r2 = take_request();
    size_t len1, len2;
    uint8_t *p1 = cmp_post(&len1, r1, "", true);
    uint8_t *p2 = cmp_post(&len2, r2, "", true);
    fake_conn *c = fake_open(1);
    c->tls = true;
    g_tls_peer_len = 0;
    fake_data(c, p1, len1);
    drive(c, 1);
    const size_t tls_len = g_tls_peer_len;
    const bool same = tls_len == sizeof(k_fake_peer_der) &&
                      memcmp(g_tls_peer, k_fake_peer_der, sizeof(k_fake_peer_der)) == 0;
    fake_conn *plain = fake_open(2);
    fake_data(plain, p2, len2);
    drive(plain, 1);
    const size_t plain_len = g_tls_peer_len;
    cm_runtime_set_log_level(CM_LOG_WARN);
    (void)dup2(saved, 2);
    (void)close(saved);
    http_answer a = nth_response(c, 0);
    check_ip(&a, r1);
    http_answer b = nth_response(plain, 0);
    check_ip(&b, r2);
    CU_ASSERT_TRUE(same);
    CU_ASSERT_EQUAL(plain_len, 0);
    uint8_t *text;
    size_t text_len;
    CU_ASSERT_FATAL(test_read_file(log_path, &text, &text_len));
    static const char k_tls[] =
        " peer=192.0.2.1:4711 tls_peer=\"CN=ra \\\"front\\\",O=x\" ca=devices body=ir outcome=ok";
    static const char k_plain[] = " peer=192.0.2.1:4711 ca=devices body=ir outcome=ok";
    CU_ASSERT_PTR_NOT_NULL(memmem(text, text_len, k_tls, strlen(k_tls)));
    CU_ASSERT_PTR_NOT_NULL(memmem(text, text_len, k_plain, strlen(k_plain)));
    free(text);
    fake_drop(c);
    fake_drop(plain);
    free(p1);
    free(p2);
}

// write_tls_config writes the fixture's configuration with an https:// address and |extra|.
static bool write_tls_config(const char *path, const char *db, const char *extra)
{
    if (!write_config(path, db, 1)) {
        return false;
    }
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        return false;
    }
    fprintf(f, "\n[certmintd]\nlisten = 127.0.0.1:9, https://127.0.0.1:10\ntls_cert = %s\n%s\n",
            g.mock_pem, extra);
    return fclose(f) == 0;
}

// HTTPS (issue 18): front_daemon_load loads the TLS identity (so --check validates it) and
// reports it; a key that is not the certificate's is refused with a reason; /metrics has the
// TLS families once TLS is configured.
static void test_front_tls_identity_loaded_and_reported(void)
{
    CU_ASSERT_FATAL(chmod(g.mock_key, 0600) == 0 && chmod(g.dev_key, 0600) == 0);
    char path[320], extra[1024], err[1024] = "";
    test_path(path, sizeof(path), g.dir, "tls.cnf");
    (void)snprintf(extra, sizeof(extra), "tls_key = %s\n", g.dev_key);
    CU_ASSERT_FATAL(write_tls_config(path, "tls.db", extra));
    front_daemon *d = NULL;
    CU_ASSERT_FALSE(cm_ok(front_daemon_load(&d, err, sizeof(err), path)));
    CU_ASSERT_PTR_NULL(d);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "tls_key"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "does not hold the public key of tls_cert"));
    (void)snprintf(extra, sizeof(extra),
                   "tls_key = %s\ntls_client_auth = optional\n"
                   "tls_client_ca = %s\n",
                   g.mock_key, g.mock_pem);
    CU_ASSERT_FATAL(write_tls_config(path, "tls.db", extra));
    err[0] = '\0';
    TEST_ASSERT_OK(front_daemon_load(&d, err, sizeof(err), path));
    cm_runtime_set_log_level(CM_LOG_WARN);
    CU_ASSERT_PTR_NOT_NULL(d->tls);
    char report[320];
    test_path(report, sizeof(report), g.dir, "tls-report.txt");
    FILE *f = fopen(report, "w");
    CU_ASSERT_FATAL(f != NULL);
    front_daemon_report(d, f);
    (void)fclose(f);
    uint8_t *text;
    size_t text_len;
    CU_ASSERT_FATAL(test_read_file(report, &text, &text_len));
    static const char k_line[] = "(1 https:// address(es)), client certificates optional\n";
    CU_ASSERT_PTR_NOT_NULL(memmem(text, text_len, k_line, strlen(k_line)));
    free(text);
    front_daemon_free(d);
    // The fixture's daemon has no TLS: no TLS family. With one, each has HELP and TYPE.
    char *t = fetch_metrics();
    CU_ASSERT_PTR_NULL(strstr(t, "certmint_tls_"));
    free(t);
    net_tls *tls = NULL;
    const net_tls_config tc = {.cert_path = g.mock_pem, .key_path = g.mock_key};
    TEST_ASSERT_OK(net_tls_new(&tls, err, sizeof(err), &tc));
    g.d->tls = tls;
    t = fetch_metrics();
    g.d->tls = NULL;
    net_tls_free(tls);
    static const char *const k_fams[] = {"certmint_tls_handshakes_total",
                                         "certmint_tls_handshake_seconds",
                                         "certmint_tls_connections_open"};
    for (size_t i = 0; i < 3; i++) {
        char help[128], type[128];
        (void)snprintf(help, sizeof(help), "\n# HELP %s ", k_fams[i]);
        (void)snprintf(type, sizeof(type), "\n# TYPE %s ", k_fams[i]);
        CU_ASSERT_TRUE(strstr(t, help) != NULL && strstr(t, type) != NULL);
    }
    CU_ASSERT_EQUAL(metric_of(t, "certmint_tls_handshakes_total{result=\"full\"}"), 0);
    CU_ASSERT_EQUAL(metric_of(t, "certmint_tls_handshake_seconds_count"), 0);
    free(t);
}

int test_front_register(void);
int test_front_coap_add(CU_pSuite s, front_daemon **d); // test_front_coap.c
int test_front_register(void)
{
    CU_pSuite s = CU_add_suite("front", front_suite_init, front_suite_cleanup);
    if (s == NULL || CU_ADD_TEST(s, test_front_pipelined_requests_answered_in_order) == NULL ||
        CU_ADD_TEST(s, test_front_request_one_byte_at_a_time) == NULL ||
        CU_ADD_TEST(s, test_front_response_bigger_than_one_send) == NULL ||
        CU_ADD_TEST(s, test_front_routes_and_errors) == NULL ||
        CU_ADD_TEST(s, test_front_serves_the_crl) == NULL ||
        CU_ADD_TEST(s, test_front_slow_request_times_out_with_408) == NULL ||
        CU_ADD_TEST(s, test_front_connection_closed_while_jobs_are_out) == NULL ||
        CU_ADD_TEST(s, test_front_expect_100_continue) == NULL ||
        CU_ADD_TEST(s, test_front_no_100_continue_when_not_waiting) == NULL ||
        CU_ADD_TEST(s, test_front_orders_100_cas_default_first) == NULL ||
        CU_ADD_TEST(s, test_front_wires_many_cas) == NULL ||
        CU_ADD_TEST(s, test_front_logs_each_request_once_with_one_summary) == NULL ||
        CU_ADD_TEST(s, test_front_closes_after_a_rejection_and_counts_it) == NULL ||
        CU_ADD_TEST(s, test_front_watchdog_probe_needs_the_loop_to_turn) == NULL ||
        CU_ADD_TEST(s, test_front_metrics_histogram_and_rejections) == NULL ||
        CU_ADD_TEST(s, test_front_eof_closes_a_partial_request_at_once) == NULL ||
        CU_ADD_TEST(s, test_front_admin_listener_serves_only_health_and_metrics) == NULL ||
        CU_ADD_TEST(s, test_front_metrics_limits_and_operations) == NULL ||
        CU_ADD_TEST(s, test_front_enrolment_refused_below_store_min_free) == NULL ||
        CU_ADD_TEST(s, test_front_fd_plan_lowers_or_refuses) == NULL ||
        CU_ADD_TEST(s, test_front_tls_peer_logged_and_given_to_the_request) == NULL ||
        CU_ADD_TEST(s, test_front_tls_identity_loaded_and_reported) == NULL ||
        test_front_coap_add(s, &g.d) != 0) {
        return 1;
    }
#ifdef CM_P11SHIM_PATH
    if (CU_ADD_TEST(s, test_front_hsm_failure_reads_as_such) == NULL) {
        return 1;
    }
#endif
    return 0;
}
