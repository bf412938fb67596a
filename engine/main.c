// certmintd: the CMP CA daemon. Loads the configuration, opens the PKCS#11 token and the
// store, and serves CMP over HTTP/1.1 on io_uring loops (engine/net), parsing with
// engine/http and answering with engine/server.
//
//   certmintd -c FILE [--check]
//
// Runs in the foreground and logs to stderr. SIGTERM/SIGINT stop it gracefully (no new
// connections, requests in flight answered, the store flushed); SIGHUP is accepted (logging
// goes to stderr, there is no file to reopen).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/config/cfg.h"
#include "engine/http/http.h"
#include "engine/net/net.h"
#include "engine/server/srv.h"

#define MAIN_MAINTAIN_S 2 // the certConf sweep and transaction expiry period

#define MAIN_BODY_TYPES 27 // cmp_body_type values
#define MAIN_HIST       24 // histogram buckets: le 2^0 .. 2^23 µs, then +Inf

// The daemon's immutable state, shared read-only by the loops. Thread: immutable after start.
typedef struct main_daemon {
    cfg_config *cfg;
    hsm_token *token;
    hsm_key **keys; // one per CA: CA key, then CMP key (may be the same)
    size_t num_keys;
    hsm_pool *pool;
    store *store;
    cmp_protect_ctx *prot;
    srv_secret **secrets;   // per CA
    cm_span **ra_certs;     // per CA
    ca_trust **own_trust;   // per CA
    ca_authority **cmp_ids; // per CA: a separate CMP protection certificate, or NULL
    srv_ca *cas;
    size_t num_cas;
    srv_engine *engine;
    http_limits limits;
    uint32_t head_timeout_ms; // a request (head and body) must arrive within this
    uint32_t idle_timeout_ms; // a keep-alive connection may idle this long
    const char *log_path;     // --log FILE (reopened on SIGHUP), NULL: stderr
    net_server *net;
    // Counters, relaxed atomics.
    uint64_t n_requests, n_ok, n_rejected, n_http_errors;
    uint64_t n_body[MAIN_BODY_TYPES][2]; // [cmp_body_type][0 ok, 1 rejected], all CAs
    uint64_t hsm_hist[MAIN_HIST];        // HSM stage latency (µs), log2 buckets
    uint64_t hsm_sum_us;
} main_daemon;

// main_loop_ctx: one per I/O loop. Thread: loop-confined.
typedef struct main_loop_ctx {
    main_daemon *d;
    net_loop *loop;
    srv_worker *worker;
    uint32_t pending; // requests with jobs out
} main_loop_ctx;

// main_conn: one per connection. Thread: loop-confined.
typedef struct main_conn {
    net_conn_ref ref;
    http_parser parser;
    uint8_t head[HTTP_DEFAULT_MAX_HEAD];
    char peer[64];
    srv_request *req; // the request being read or processed
    bool busy;        // a request is being processed or its answer sent
    bool close_after; // close once the current answer is sent
    bool keep_alive;
    bool http10;      // an HTTP/1.0 client: keep-alive must then be said explicitly
    uint8_t *pending; // bytes of following requests that arrived while busy
    size_t pending_len, pending_cap;
    uint8_t *out; // the answer being sent (malloc'ed)
    uint64_t start_ns;
    const srv_ca *ca;
} main_conn;

static void main_conn_feed(main_loop_ctx *c, main_conn *mc, cm_span data);

static const char *main_body_name(int t)
{
    static const char *const k_names[] = {
        "ir",   "ip",     "cr",    "cp",       "p10cr",   "popdecc", "popdecr",
        "kur",  "kup",    "krr",   "krp",      "rr",      "rp",      "ccr",
        "ccp",  "ckuann", "cann",  "rann",     "crlann",  "pkiconf", "nested",
        "genm", "genp",   "error", "certConf", "pollReq", "pollRep"};
    return t >= 0 && (size_t)t < sizeof(k_names) / sizeof(k_names[0]) ? k_names[t] : "-";
}

// main_send_owned sends |buf| (malloc'ed, freed on_sent) on |mc|.
static void main_send_owned(main_loop_ctx *c, main_conn *mc, uint8_t *buf, size_t len,
                            bool close_after)
{
    mc->out = buf;
    mc->busy = true;
    mc->close_after = close_after;
    if (!cm_ok(net_conn_send(c->loop, mc->ref, cm_span_make(buf, len), close_after))) {
        free(buf);
        mc->out = NULL;
        net_conn_close(c->loop, mc->ref);
    }
}

static void main_send_simple(main_loop_ctx *c, main_conn *mc, uint16_t status, const char *type,
                             cm_span body, bool close_after)
{
    const size_t cap = body.len + 512;
    uint8_t *buf = malloc(cap);
    size_t len = 0;
    http_response resp = {.status = status,
                          .content_type = type,
                          .body_len = body.len,
                          .close = close_after,
                          .keep_alive_10 = mc->http10 && !close_after,
                          .no_cache = true,
                          .date = cm_time_now()};
    if (buf == NULL || !cm_ok(http_response_write(buf, cap, &len, &resp, body))) {
        free(buf);
        net_conn_close(c->loop, mc->ref);
        return;
    }
    main_send_owned(c, mc, buf, len, close_after);
}

static void main_log_request(main_loop_ctx *c, main_conn *mc, srv_request *req)
{
    if (!cm_log_enabled(CM_LOG_INFO)) {
        return;
    }
    srv_summary s;
    srv_request_summary(req, &s);
    const uint64_t us = (cm_time_mono_ns() - mc->start_ns) / 1000u;
    (void)c;
    if (s.fail_bit < 0) {
        cm_log(CM_LOG_INFO, "peer=%s ca=%s body=%s outcome=ok us=%llu", mc->peer, mc->ca->name,
               main_body_name(s.body_type), (unsigned long long)us);
    } else {
        cm_log(CM_LOG_INFO, "peer=%s ca=%s body=%s outcome=rejected failinfo=%d error=%s us=%llu",
               mc->peer, mc->ca->name, main_body_name(s.body_type), s.fail_bit,
               cm_result_name(s.error), (unsigned long long)us);
    }
}

// main_answer_cmp sends the finished CMP response of |mc|'s request.
static void main_answer_cmp(main_loop_ctx *c, main_conn *mc)
{
    srv_request *req = mc->req;
    main_log_request(c, mc, req);
    srv_summary s;
    srv_request_summary(req, &s);
    __atomic_add_fetch(s.fail_bit < 0 ? &c->d->n_ok : &c->d->n_rejected, 1, __ATOMIC_RELAXED);
    if (s.body_type >= 0 && s.body_type < MAIN_BODY_TYPES) {
        __atomic_add_fetch(&c->d->n_body[s.body_type][s.fail_bit < 0 ? 0 : 1], 1, __ATOMIC_RELAXED);
    }
    if (s.stage_ns[SRV_STAGE_HSM] != 0) {
        const uint64_t us = s.stage_ns[SRV_STAGE_HSM] / 1000u;
        size_t b = 0;
        while (b + 1 < MAIN_HIST && (1ull << b) < us) {
            b++;
        }
        __atomic_add_fetch(&c->d->hsm_hist[b], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&c->d->hsm_sum_us, us, __ATOMIC_RELAXED);
    }
    const cm_span body = srv_request_response(req);
    if (body.len == 0) {
        main_send_simple(c, mc, 500, "text/plain", CM_SPAN_LIT("500 Internal Server Error\n"),
                         true);
        return;
    }
    // RFC 6712 §3.3: a CMP response, including a CMP error, is sent with 200.
    main_send_simple(c, mc, 200, HTTP_CONTENT_TYPE_PKIXCMP, body, !mc->keep_alive);
}

// main_hist appends a Prometheus histogram from log2 buckets (bucket i counts values <= 2^i).
static size_t main_hist(char *out, size_t cap, const char *name, const uint64_t *buckets, size_t n,
                        double scale, double sum)
{
    size_t used = 0;
    uint64_t cum = 0;
    int k = snprintf(out, cap, "# TYPE %s histogram\n", name);
    used += k > 0 ? (size_t)k : 0;
    for (size_t i = 0; i < n && used < cap; i++) {
        cum += buckets[i];
        k = snprintf(out + used, cap - used, "%s_bucket{le=\"%g\"} %llu\n", name,
                     (double)(1ull << i) * scale, (unsigned long long)cum);
        used += k > 0 ? (size_t)k : 0;
    }
    if (used < cap) {
        k = snprintf(out + used, cap - used,
                     "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name,
                     (unsigned long long)cum, name, sum, name, (unsigned long long)cum);
        used += k > 0 ? (size_t)k : 0;
    }
    return used < cap ? used : cap;
}

static void main_metrics(main_loop_ctx *c, main_conn *mc)
{
    main_daemon *d = c->d;
    size_t cap = 32768, used = 0;
    char *text = malloc(cap);
    if (text == NULL) {
        net_conn_close(c->loop, mc->ref);
        return;
    }
    net_stats ns;
    net_server_stats(d->net, &ns);
    hsm_pool_stats hs;
    hsm_pool_get_stats(d->pool, &hs);
    store_stats ss;
    store_get_stats(d->store, &ss);
    int n = snprintf(
        text, cap,
        "# TYPE certmint_requests_total counter\n"
        "certmint_requests_total{outcome=\"ok\"} %llu\n"
        "certmint_requests_total{outcome=\"rejected\"} %llu\n"
        "# TYPE certmint_http_errors_total counter\ncertmint_http_errors_total %llu\n"
        "# TYPE certmint_connections_open gauge\ncertmint_connections_open %llu\n"
        "# TYPE certmint_connections_accepted_total counter\n"
        "certmint_connections_accepted_total %llu\n"
        "# TYPE certmint_connections_rejected_full_total counter\n"
        "certmint_connections_rejected_full_total %llu\n"
        "# TYPE certmint_connections_timeouts_total counter\n"
        "certmint_connections_timeouts_total %llu\n"
        "# TYPE certmint_hsm_queue_depth gauge\ncertmint_hsm_queue_depth %zu\n"
        "# TYPE certmint_hsm_signatures_total counter\ncertmint_hsm_signatures_total %llu\n"
        "# TYPE certmint_hsm_failures_total counter\ncertmint_hsm_failures_total %llu\n"
        "# TYPE certmint_hsm_sessions_reopened_total counter\n"
        "certmint_hsm_sessions_reopened_total %llu\n"
        "# TYPE certmint_store_jobs_total counter\ncertmint_store_jobs_total %llu\n"
        "# TYPE certmint_store_queue_depth gauge\ncertmint_store_queue_depth %llu\n"
        "# TYPE certmint_store_checkpoints_total counter\ncertmint_store_checkpoints_total %llu\n"
        "# TYPE certmint_store_wal_pages gauge\ncertmint_store_wal_pages %llu\n",
        (unsigned long long)__atomic_load_n(&d->n_ok, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&d->n_rejected, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&d->n_http_errors, __ATOMIC_RELAXED),
        (unsigned long long)ns.open, (unsigned long long)ns.accepted,
        (unsigned long long)ns.rejected_full, (unsigned long long)ns.timeouts,
        hsm_pool_depth(d->pool), (unsigned long long)hs.signed_ok, (unsigned long long)hs.failed,
        (unsigned long long)hs.reopened, (unsigned long long)ss.jobs,
        (unsigned long long)ss.queue_depth, (unsigned long long)ss.checkpoints,
        (unsigned long long)ss.wal_pages);
    used = n > 0 && (size_t)n < cap ? (size_t)n : 0;
    // Requests by body type and outcome, all CAs together.
    n = snprintf(text + used, cap - used, "# TYPE certmint_cmp_requests_total counter\n");
    used += n > 0 ? (size_t)n : 0;
    for (int t = 0; t < MAIN_BODY_TYPES && used < cap; t++) {
        for (int o = 0; o < 2 && used < cap; o++) {
            const uint64_t v = __atomic_load_n(&d->n_body[t][o], __ATOMIC_RELAXED);
            if (v == 0) {
                continue;
            }
            n = snprintf(text + used, cap - used,
                         "certmint_cmp_requests_total{body=\"%s\",outcome=\"%s\"} %llu\n",
                         main_body_name(t), o == 0 ? "ok" : "rejected", (unsigned long long)v);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    uint64_t hh[MAIN_HIST];
    for (size_t i = 0; i < MAIN_HIST; i++) {
        hh[i] = __atomic_load_n(&d->hsm_hist[i], __ATOMIC_RELAXED);
    }
    used += main_hist(text + used, cap - used, "certmint_hsm_sign_seconds", hh, MAIN_HIST, 1e-6,
                      (double)__atomic_load_n(&d->hsm_sum_us, __ATOMIC_RELAXED) / 1e6);
    used += main_hist(text + used, cap - used, "certmint_store_commit_seconds", ss.commit_us_hist,
                      STORE_HIST_BUCKETS, 1e-6, (double)ss.commit_ns_total / 1e9);
    used += main_hist(text + used, cap - used, "certmint_store_job_seconds", ss.job_us_hist,
                      STORE_HIST_BUCKETS, 1e-6, 0.0);
    used += main_hist(text + used, cap - used, "certmint_store_batch_size", ss.batch_hist,
                      STORE_HIST_BUCKETS, 1.0, 0.0);
    main_send_simple(c, mc, 200, "text/plain; version=0.0.4", cm_span_make(text, used),
                     !mc->keep_alive);
    free(text);
}

// main_crl serves GET /crl/NAME.crl: the CA's current CRL from the store (RFC 5280 §5,
// application/pkix-crl as RFC 2585 registers it).
static void main_crl(main_loop_ctx *c, main_conn *mc, cm_span name)
{
    const srv_ca *ca = name.len != 0 ? srv_engine_find_ca(c->d->engine, name) : NULL;
    cm_span crl;
    if (ca == NULL || !cm_ok(srv_worker_crl(c->worker, ca, srv_request_arena(mc->req), &crl))) {
        __atomic_add_fetch(&c->d->n_http_errors, 1, __ATOMIC_RELAXED);
        main_send_simple(c, mc, 404, "text/plain", CM_SPAN_LIT("404 Not Found: no such CRL\n"),
                         !mc->keep_alive);
        return;
    }
    main_send_simple(c, mc, 200, "application/pkix-crl", crl, !mc->keep_alive);
}

// main_on_request handles one complete HTTP request.
static void main_on_request(main_loop_ctx *c, main_conn *mc, const http_request *hr)
{
    mc->keep_alive = hr->keep_alive;
    mc->http10 = hr->version_minor == 0;
    mc->start_ns = cm_time_mono_ns();
    __atomic_add_fetch(&c->d->n_requests, 1, __ATOMIC_RELAXED);
    switch (hr->route.kind) {
    case HTTP_ROUTE_HEALTHZ:
        main_send_simple(c, mc, 200, "text/plain", CM_SPAN_LIT("ok\n"), !mc->keep_alive);
        return;
    case HTTP_ROUTE_METRICS:
        main_metrics(c, mc);
        return;
    case HTTP_ROUTE_CRL:
        main_crl(c, mc, hr->route.name);
        return;
    case HTTP_ROUTE_CMP:
        break;
    default:
        __atomic_add_fetch(&c->d->n_http_errors, 1, __ATOMIC_RELAXED);
        main_send_simple(c, mc, 404, "text/plain", CM_SPAN_LIT("404 Not Found\n"), !mc->keep_alive);
        return;
    }
    const srv_ca *ca = srv_engine_find_ca(c->d->engine, hr->route.name);
    if (ca == NULL) {
        __atomic_add_fetch(&c->d->n_http_errors, 1, __ATOMIC_RELAXED);
        main_send_simple(c, mc, 404, "text/plain", CM_SPAN_LIT("404 Not Found: no such CA\n"),
                         !mc->keep_alive);
        return;
    }
    mc->ca = ca;
    mc->busy = true;
    if (srv_request_start(mc->req, ca, hr->body)) {
        main_answer_cmp(c, mc);
    } else {
        c->pending++;
    }
}

static void main_on_http_error(main_loop_ctx *c, main_conn *mc, const http_feed *f)
{
    __atomic_add_fetch(&c->d->n_http_errors, 1, __ATOMIC_RELAXED);
    uint8_t *buf = malloc(512);
    size_t len = 0;
    if (buf == NULL || !cm_ok(http_error_write(buf, 512, &len, f, cm_time_now()))) {
        free(buf);
        net_conn_close(c->loop, mc->ref);
        return;
    }
    cm_log(CM_LOG_INFO, "peer=%s http=%u error=%s", mc->peer, (unsigned)f->status,
           cm_result_name(f->error));
    main_send_owned(c, mc, buf, len, f->close);
}

// main_conn_feed parses |data| (bytes that follow whatever was parsed before).
static void main_conn_feed(main_loop_ctx *c, main_conn *mc, cm_span data)
{
    while (data.len > 0) {
        if (mc->busy) {
            // Pipelined bytes wait until the current answer is out (one request at a time).
            const size_t limit = c->d->limits.max_body + c->d->limits.max_head;
            if (mc->pending_len + data.len > limit) {
                net_conn_close(c->loop, mc->ref);
                return;
            }
            if (mc->pending_cap - mc->pending_len < data.len) {
                size_t cap = (mc->pending_cap + data.len) * 2;
                uint8_t *nb = realloc(mc->pending, cap);
                if (nb == NULL) {
                    net_conn_close(c->loop, mc->ref);
                    return;
                }
                mc->pending = nb;
                mc->pending_cap = cap;
            }
            memcpy(mc->pending + mc->pending_len, data.p, data.len);
            mc->pending_len += data.len;
            return;
        }
        if (mc->req == NULL) {
            mc->req = srv_request_new(c->worker, mc);
            if (mc->req == NULL) {
                net_conn_close(c->loop, mc->ref);
                return;
            }
            net_conn_set_deadline(c->loop, mc->ref, c->d->head_timeout_ms);
        }
        http_feed f;
        // The outcome is in |f| (kind, error, status); the result code repeats it.
        const cm_result fr = http_parser_feed(&mc->parser, &f, srv_request_arena(mc->req), data);
        (void)fr;
        data.p += f.consumed;
        data.len -= f.consumed;
        if (f.kind == HTTP_FEED_NEED_MORE) {
            return;
        }
        if (f.kind == HTTP_FEED_ERROR) {
            srv_request_free(mc->req);
            mc->req = NULL;
            main_on_http_error(c, mc, &f);
            if (f.close) {
                return;
            }
            continue;
        }
        net_conn_set_deadline(c->loop, mc->ref, 0);
        main_on_request(c, mc, &f.request);
    }
}

// --- net_app callbacks ----------------------------------------------------------------------

static void *main_loop_init(void *arg, net_loop *loop)
{
    main_loop_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->d = arg;
    c->loop = loop;
    if (!cm_ok(srv_worker_new(&c->worker, c->d->engine, net_loop_cq(loop)))) {
        free(c);
        return NULL;
    }
    return c;
}

static void main_loop_cleanup(void *ctx)
{
    main_loop_ctx *c = ctx;
    srv_worker_free(c->worker);
    free(c);
}

static void *main_on_open(void *ctx, net_conn_ref ref, const struct sockaddr *peer)
{
    main_loop_ctx *c = ctx;
    main_conn *mc = calloc(1, sizeof(*mc));
    if (mc == NULL) {
        return NULL;
    }
    mc->ref = ref;
    if (!cm_ok(http_parser_init(&mc->parser, &c->d->limits, mc->head, sizeof(mc->head)))) {
        free(mc);
        return NULL;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)peer;
        (void)inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)peer;
        (void)inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    }
    (void)snprintf(mc->peer, sizeof(mc->peer), "%s:%u", host, (unsigned)port);
    net_conn_set_deadline(c->loop, ref, c->d->idle_timeout_ms);
    return mc;
}

static net_action main_on_data(void *ctx, void *conn, net_conn_ref ref, cm_span data)
{
    main_conn *mc = conn;
    if (mc == NULL) {
        return NET_CLOSE;
    }
    (void)ref;
    main_conn_feed(ctx, mc, data);
    return NET_CONTINUE;
}

static void main_on_sent(void *ctx, void *conn, net_conn_ref ref, bool ok)
{
    main_loop_ctx *c = ctx;
    main_conn *mc = conn;
    (void)ref;
    if (mc == NULL) {
        return;
    }
    free(mc->out);
    mc->out = NULL;
    srv_request_free(mc->req);
    mc->req = NULL;
    mc->busy = false;
    if (!ok || mc->close_after) {
        return; // the transport closes the connection
    }
    net_conn_set_deadline(c->loop, mc->ref, c->d->idle_timeout_ms);
    if (mc->pending_len > 0) {
        // Parse what the client pipelined meanwhile; the buffer is taken first because
        // parsing may queue more into a fresh one.
        uint8_t *p = mc->pending;
        const size_t n = mc->pending_len;
        mc->pending = NULL;
        mc->pending_len = 0;
        mc->pending_cap = 0;
        main_conn_feed(c, mc, cm_span_make(p, n));
        free(p);
    }
}

static void main_on_close(void *ctx, void *conn)
{
    main_loop_ctx *c = ctx;
    main_conn *mc = conn;
    if (mc == NULL) {
        return;
    }
    (void)c;
    if (mc->req != NULL && mc->busy && mc->out == NULL) {
        // HSM or store jobs are still out for this request: it is detached here and freed
        // when they come back (main_on_completion).
        srv_request_set_user(mc->req, NULL);
        mc->req = NULL;
    }
    srv_request_free(mc->req);
    free(mc->out);
    free(mc->pending);
    free(mc);
}

static void main_on_completion(void *ctx, cm_cq_node *node)
{
    main_loop_ctx *c = ctx;
    srv_request *req = srv_worker_on_completion(c->worker, node);
    if (req == NULL) {
        return;
    }
    c->pending--;
    main_conn *mc = srv_request_user(req);
    if (mc == NULL) {
        srv_request_free(req); // the connection went away meanwhile
        return;
    }
    main_answer_cmp(c, mc);
}

static net_action main_on_timeout(void *ctx, void *conn, net_conn_ref ref)
{
    main_loop_ctx *c = ctx;
    main_conn *mc = conn;
    (void)ref;
    if (mc == NULL || mc->busy || http_parser_idle(&mc->parser)) {
        return NET_CLOSE;
    }
    // A slow client in the middle of a request: 408 and close (RFC 9110 §15.5.9).
    http_feed f;
    memset(&f, 0, sizeof(f));
    f.status = 408;
    f.close = true;
    srv_request_free(mc->req);
    mc->req = NULL;
    main_on_http_error(c, mc, &f);
    return NET_CONTINUE;
}

static bool main_is_idle(void *ctx, void *conn)
{
    (void)ctx;
    const main_conn *mc = conn;
    return mc == NULL || (!mc->busy && http_parser_idle(&mc->parser));
}

static uint32_t main_pending(void *ctx)
{
    return ((main_loop_ctx *)ctx)->pending;
}

static const net_app k_main_app = {
    .loop_init = main_loop_init,
    .loop_cleanup = main_loop_cleanup,
    .on_open = main_on_open,
    .on_data = main_on_data,
    .on_sent = main_on_sent,
    .on_close = main_on_close,
    .on_completion = main_on_completion,
    .on_timeout = main_on_timeout,
    .is_idle = main_is_idle,
    .pending = main_pending,
};

// --- start-up ---------------------------------------------------------------------------------


static void main_daemon_free(main_daemon *d)
{
    srv_engine_free(d->engine);
    if (d->store != NULL) {
        store_close(d->store);
    }
    hsm_pool_free(d->pool);
    for (size_t i = 0; i < d->num_keys; i++) {
        hsm_key_free(d->keys[i]);
    }
    free(d->keys);
    hsm_token_free(d->token);
    for (size_t i = 0; i < d->num_cas; i++) {
        free(d->secrets != NULL ? d->secrets[i] : NULL);
        free(d->ra_certs != NULL ? d->ra_certs[i] : NULL);
        ca_trust_free(d->own_trust != NULL ? d->own_trust[i] : NULL);
        ca_authority_free(d->cmp_ids != NULL ? d->cmp_ids[i] : NULL);
    }
    free(d->secrets);
    free(d->ra_certs);
    free(d->own_trust);
    free(d->cmp_ids);
    free(d->cas);
    cmp_protect_ctx_free(d->prot);
    cfg_free(d->cfg);
}

// main_open_keys opens the token of the first CA's key and finds every CA's keys in it.
static bool main_open_keys(main_daemon *d)
{
    const cfg_config *cfg = d->cfg;
    hsm_error err;
    memset(&err, 0, sizeof(err));
    cm_result r = hsm_token_open(&d->token, &err, cfg->cas[0].key_uri);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmintd: [ca:%s] key: %s (%s)\n", cfg->cas[0].name, err.msg,
                hsm_result_name(r));
        return false;
    }
    d->keys = calloc(2 * cfg->num_cas, sizeof(hsm_key *));
    if (d->keys == NULL) {
        return false;
    }
    for (size_t i = 0; i < cfg->num_cas; i++) {
        const cfg_ca *c = &cfg->cas[i];
        const char *uris[2] = {c->key_uri, c->cmp_key_uri != NULL ? c->cmp_key_uri : c->key_uri};
        for (size_t k = 0; k < 2; k++) {
            r = hsm_key_find(d->token, &d->keys[2 * i + k], &err, uris[k]);
            d->num_keys = 2 * i + k + 1;
            if (!cm_ok(r)) {
                fprintf(stderr, "certmintd: [ca:%s] %s: %s (%s)\n", c->name,
                        k == 0 ? "key" : "cmp_key", err.msg, hsm_result_name(r));
                return false;
            }
        }
        if (!cm_ok(ca_authority_matches_spki(c->authority, hsm_key_get0_spki(d->keys[2 * i])))) {
            fprintf(stderr, "certmintd: [ca:%s] cert %s does not hold the public key of %s\n",
                    c->name, c->cert_path, c->key_uri);
            return false;
        }
    }
    return true;
}

static bool main_build_engine(main_daemon *d)
{
    const cfg_config *cfg = d->cfg;
    char err[512];
    d->num_cas = cfg->num_cas;
    d->cas = calloc(cfg->num_cas, sizeof(srv_ca));
    d->secrets = calloc(cfg->num_cas, sizeof(srv_secret *));
    d->own_trust = calloc(cfg->num_cas, sizeof(ca_trust *));
    d->ra_certs = calloc(cfg->num_cas, sizeof(cm_span *));
    d->cmp_ids = calloc(cfg->num_cas, sizeof(ca_authority *));
    if (d->cas == NULL || d->secrets == NULL || d->own_trust == NULL || d->ra_certs == NULL ||
        d->cmp_ids == NULL) {
        return false;
    }
    // The default CA is answered at /.well-known/cmp: it goes first.
    size_t order[64];
    size_t n = 0;
    for (size_t i = 0; i < cfg->num_cas && n < 64; i++) {
        if (&cfg->cas[i] == cfg->default_ca) {
            order[n++] = i;
        }
    }
    for (size_t i = 0; i < cfg->num_cas && n < 64; i++) {
        if (&cfg->cas[i] != cfg->default_ca) {
            order[n++] = i;
        }
    }
    for (size_t k = 0; k < n; k++) {
        const size_t i = order[k];
        const cfg_ca *c = &cfg->cas[i];
        srv_ca *s = &d->cas[k];
        const cfg_clients *cl = c->clients;
        if (cl != NULL && cl->num_secrets > 0) {
            d->secrets[k] = calloc(cl->num_secrets, sizeof(srv_secret));
            if (d->secrets[k] == NULL) {
                return false;
            }
            for (size_t j = 0; j < cl->num_secrets; j++) {
                d->secrets[k][j].ref = cm_span_make(cl->secrets[j].kid, cl->secrets[j].kid_len);
                d->secrets[k][j].secret =
                    cm_span_make(cl->secrets[j].secret, cl->secrets[j].secret_len);
            }
        }
        if (cl != NULL && cl->num_ra_certs > 0) {
            d->ra_certs[k] = calloc(cl->num_ra_certs, sizeof(cm_span));
            if (d->ra_certs[k] == NULL) {
                return false;
            }
            for (size_t j = 0; j < cl->num_ra_certs; j++) {
                d->ra_certs[k][j] = cm_span_make(cl->ra_certs[j], cl->ra_cert_lens[j]);
            }
        }
        const char *own[] = {c->cert_path};
        if (!cm_ok(ca_trust_new(&d->own_trust[k], err, sizeof(err), own, 1, 4096))) {
            fprintf(stderr, "certmintd: [ca:%s] %s\n", c->name, err);
            return false;
        }
        hsm_key *ck = d->keys[2 * i], *pk = d->keys[2 * i + 1];
        const ca_authority *cmp_id = c->authority;
        if (c->cmp_cert_path != NULL && strcmp(c->cmp_cert_path, c->cert_path) != 0) {
            // A separate CMP protection certificate (id-kp-cmcCA), issued by this CA: its
            // chain for extraCerts is the CA certificate (and the CA's chain).
            if (!cm_ok(ca_identity_load(&d->cmp_ids[k], err, sizeof(err), c->cmp_cert_path,
                                        c->cert_path))) {
                fprintf(stderr, "certmintd: [ca:%s] cmp_cert: %s\n", c->name, err);
                return false;
            }
            if (!cm_ok(ca_authority_matches_spki(d->cmp_ids[k], hsm_key_get0_spki(pk)))) {
                fprintf(stderr,
                        "certmintd: [ca:%s] cmp_cert %s does not hold the public key of "
                        "%s\n",
                        c->name, c->cmp_cert_path, c->cmp_key_uri);
                return false;
            }
            cmp_id = d->cmp_ids[k];
        }
        *s = (srv_ca){.name = c->name,
                      .authority = c->authority,
                      .profile = c->profile->profile,
                      .ca_key = ck,
                      .ca_sig_alg = hsm_sig_alg_for_key(ck),
                      .cmp_cert = cmp_id,
                      .cmp_key = pk,
                      .cmp_sig_alg = hsm_sig_alg_for_key(pk),
                      .secrets = d->secrets[k],
                      .num_secrets = cl != NULL ? cl->num_secrets : 0,
                      .client_trust = cl != NULL ? cl->trust : NULL,
                      .own_trust = d->own_trust[k],
                      .ca_pubs = c->ca_pubs,
                      .sign_mac_responses = c->sign_mac_responses,
                      .unprotected_genm = c->unprotected_genm,
                      .ra_certs = d->ra_certs[k],
                      .num_ra_certs = cl != NULL ? cl->num_ra_certs : 0,
                      .root_update = {cm_span_make(c->root_update[0], c->root_update_len[0]),
                                      cm_span_make(c->root_update[1], c->root_update_len[1]),
                                      cm_span_make(c->root_update[2], c->root_update_len[2])},
                      .crl_min_interval = c->crl_min_interval,
                      .crl_validity = (int64_t)c->crl_validity_days * 86400};
        if (s->ca_sig_alg == HSM_SIG_NONE || s->cmp_sig_alg == HSM_SIG_NONE) {
            fprintf(stderr, "certmintd: [ca:%s] unsupported key type\n", c->name);
            return false;
        }
    }
    srv_params sp = {.hsm = d->pool,
                     .store = d->store,
                     .prot = d->prot,
                     .cas = d->cas,
                     .num_cas = d->num_cas,
                     .message_time_window = cfg->message_time_window,
                     .confirm_wait_time = cfg->confirm_wait_time,
                     .arena_cap = (size_t)cfg->max_request_bytes * 4 + (1u << 20)};
    return cm_ok(srv_engine_new(&d->engine, &sp));
}

static bool main_start(main_daemon *d, const char *path, bool check_only)
{
    char err[1024];
    cm_result r = cfg_load(&d->cfg, err, sizeof(err), path);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmintd: %s\n", err);
        return false;
    }
    cm_runtime_set_log_level(d->cfg->log_level);
    if (d->cfg->num_cas == 0) {
        fprintf(stderr, "certmintd: %s: no [ca:NAME] section\n", path);
        return false;
    }
    if (!main_open_keys(d)) {
        return false;
    }
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.pbm_min_iterations = d->cfg->min_pbm_iterations;
    lim.pbm_max_iterations = d->cfg->max_pbm_iterations;
    lim.pbmac1_max_iterations = d->cfg->max_pbmac1_iterations;
    r = cmp_protect_ctx_new(&d->prot, NULL, NULL, &lim);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmintd: PBM iteration limits rejected: %s\n", cm_result_name(r));
        return false;
    }
    if (check_only) {
        printf("certmintd: %s is valid\n", path);
        for (size_t i = 0; i < d->cfg->num_cas; i++) {
            const hsm_key *k = d->keys[2 * i];
            printf("  ca %-16s key %s (%u bits) %s\n", d->cfg->cas[i].name, hsm_key_get0_label(k),
                   hsm_key_get_bits(k), &d->cfg->cas[i] == d->cfg->default_ca ? "[default]" : "");
        }
        return true;
    }
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = d->cfg->hsm_sessions;
    r = hsm_pool_new(&d->pool, d->token, &po);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmintd: cannot start %u HSM sessions: %s\n", po.sessions,
                hsm_result_name(r));
        return false;
    }
    const char *url = d->cfg->store_url;
    store_options so = {.sync = d->cfg->store_sync_normal ? STORE_SYNC_NORMAL : STORE_SYNC_FULL};
    r = store_open(&d->store, url, &so);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmintd: cannot open the store %s: %s\n", url, store_result_name(r));
        return false;
    }
    if (!main_build_engine(d)) {
        return false;
    }
    d->head_timeout_ms = d->cfg->header_timeout * 1000u;
    d->idle_timeout_ms = d->cfg->idle_timeout * 1000u;
    d->limits = http_limits_default();
    d->limits.max_body = d->cfg->max_request_bytes;
    return true;
}

// main_crl_refresh issues a CRL for every CA that needs one (srv_crl_due). Blocking: the
// maintenance (main) thread only.
static void main_crl_refresh(main_daemon *d)
{
    store_reader *rd = NULL;
    if (!cm_ok(store_reader_open(d->store, &rd))) {
        return;
    }
    const int64_t now = cm_time_now();
    for (size_t i = 0; i < d->num_cas; i++) {
        const srv_ca *ca = &d->cas[i];
        bool due = false;
        cm_result r = srv_crl_due(rd, ca->name, now, ca->crl_min_interval, ca->crl_validity, &due);
        if (!cm_ok(r) || !due) {
            continue;
        }
        srv_crl_params cp = {.store = d->store,
                             .pool = d->pool,
                             .key = ca->ca_key,
                             .sig_alg = ca->ca_sig_alg,
                             .authority = ca->authority,
                             .ca_name = ca->name,
                             .validity_s = ca->crl_validity};
        cm_arena a;
        cm_arena_init(&a, 4096, 0);
        cm_span crl;
        r = srv_crl_issue(&cp, now, &a, &crl);
        if (cm_ok(r)) {
            cm_log(CM_LOG_INFO, "certmintd: [ca:%s] issued a CRL (%zu bytes)", ca->name, crl.len);
        } else {
            cm_log(CM_LOG_WARN, "certmintd: [ca:%s] cannot issue a CRL: %s", ca->name,
                   cm_result_name(r));
        }
        cm_arena_cleanup(&a);
    }
    store_reader_close(rd);
}

// main_log_open sends log lines to |path| (appended). The file takes over descriptor 2 with
// dup2, so a SIGHUP after log rotation swaps the file under the same descriptor number while
// other threads may be writing: no write can ever land in a reused descriptor.
static bool main_log_open(const char *path)
{
    const int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "certmintd: cannot open log %s: %s\n", path, strerror(errno));
        return false;
    }
    const bool ok = dup2(fd, 2) == 2;
    (void)close(fd);
    return ok;
}

static void main_usage(FILE *f)
{
    fprintf(f, "usage: certmintd -c FILE [--check]\n"
               "  -c FILE   the configuration (OpenSSL config syntax, see README)\n"
               "  --check   validate the configuration and the HSM keys, then exit\n"
               "  --log FILE  append log lines to FILE (reopened on SIGHUP) instead of stderr\n"
               "  --listen ADDR  serve on ADDR (host:port, [v6]:port) instead of the configured\n"
               "                 listen addresses\n");
}

int main(int argc, char **argv)
{
    const char *conf = NULL;
    const char *listen_override = NULL;
    const char *log_path = NULL;
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
            log_path = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_override = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            main_usage(stdout);
            return 0;
        } else {
            main_usage(stderr);
            return 2;
        }
    }
    if (conf == NULL) {
        main_usage(stderr);
        return 2;
    }
    if (!cm_ok(cm_runtime_init())) {
        fprintf(stderr, "certmintd: cannot initialise OpenSSL\n");
        return 1;
    }
    // Signals are taken by sigtimedwait below; every thread inherits the blocked mask.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    (void)pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    (void)signal(SIGPIPE, SIG_IGN);

    main_daemon d;
    memset(&d, 0, sizeof(d));
    d.log_path = log_path;
    if (log_path != NULL && !main_log_open(log_path)) {
        return 1;
    }
    if (!main_start(&d, conf, check_only)) {
        main_daemon_free(&d);
        return 1;
    }
    if (check_only) {
        main_daemon_free(&d);
        return 0;
    }
    const char *listen[CFG_MAX_LISTEN];
    char addrs[CFG_MAX_LISTEN][64];
    for (size_t i = 0; i < d.cfg->num_listen; i++) {
        const cfg_listen *l = &d.cfg->listen[i];
        (void)snprintf(addrs[i], sizeof(addrs[i]), l->ipv6 ? "[%s]:%u" : "%s:%u", l->host,
                       (unsigned)l->port);
        listen[i] = addrs[i];
    }
    size_t num_listen = d.cfg->num_listen;
    if (listen_override != NULL) {
        listen[0] = listen_override;
        num_listen = 1;
    }
    net_server_config nc = {.listen = listen,
                            .num_listen = num_listen,
                            .io_threads = d.cfg->io_threads,
                            .max_connections = d.cfg->max_connections};
    cm_result r = net_server_start(&d.net, &nc, &k_main_app, &d);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmintd: cannot listen on %s: %s\n", listen[0], cm_result_name(r));
        main_daemon_free(&d);
        return 1;
    }
    for (size_t i = 0; i < num_listen; i++) {
        cm_log(CM_LOG_INFO,
               "certmintd: serving CMP on http://%s (port %u), %zu CA(s), %u HSM "
               "session(s)",
               listen[i], (unsigned)net_server_port(d.net, i), d.num_cas, d.cfg->hsm_sessions);
    }
    main_crl_refresh(&d);
    // The main thread: signals, CRLs, and the certConf sweep / transaction expiry.
    for (;;) {
        struct timespec ts = {.tv_sec = MAIN_MAINTAIN_S, .tv_nsec = 0};
        const int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            cm_log(CM_LOG_INFO, "certmintd: %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) {
            if (d.log_path != NULL && main_log_open(d.log_path)) {
                cm_log(CM_LOG_INFO, "certmintd: SIGHUP: reopened %s", d.log_path);
            }
            continue;
        }
        uint64_t revoked = 0;
        r = srv_engine_maintain(d.engine, cm_time_now(), &revoked);
        main_crl_refresh(&d);
        if (!cm_ok(r)) {
            cm_log(CM_LOG_WARN, "certmintd: maintenance: %s", cm_result_name(r));
        } else if (revoked > 0) {
            cm_log(CM_LOG_INFO, "certmintd: revoked %llu certificate(s) never confirmed",
                   (unsigned long long)revoked);
        }
    }
    net_server_stop(d.net);
    net_server_wait(d.net);
    d.net = NULL;
    main_daemon_free(&d); // closes the store after everything queued committed
    cm_log(CM_LOG_INFO, "certmintd: stopped");
    return 0;
}
