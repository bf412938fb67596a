// engine/front: the connection state machine, certmintd's net_app. Bytes are fed to
// http_parser_feed; one request per connection is processed at a time, and bytes of
// pipelined requests that arrive meanwhile wait until its answer is sent, so answers go out
// in request order (RFC 9112 §9.3.2). Every transport call goes through the loop's
// front_transport.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "engine/front/front_internal.h"

// --- the engine/net transport ----------------------------------------------------------------

static cm_result front_net_send(void *arg, net_conn_ref ref, cm_span data, bool close_after)
{
    return net_conn_send(arg, ref, data, close_after);
}

static void front_net_close(void *arg, net_conn_ref ref)
{
    net_conn_close(arg, ref);
}

static void front_net_set_deadline(void *arg, net_conn_ref ref, uint32_t ms_from_now)
{
    net_conn_set_deadline(arg, ref, ms_from_now);
}

static bool front_net_is_admin(void *arg, net_conn_ref ref)
{
    return net_conn_is_admin(arg, ref);
}

static bool front_net_tls_info(void *arg, net_conn_ref ref, net_tls_info *out)
{
    return net_conn_tls_info(arg, ref, out);
}

static bool front_net_busy(void *arg)
{
    return net_loop_busy(arg);
}

static const front_transport k_front_net_transport = {
    .send = front_net_send,
    .close = front_net_close,
    .set_deadline = front_net_set_deadline,
    .is_admin = front_net_is_admin,
    .tls_info = front_net_tls_info,
    .busy = front_net_busy,
};

const front_transport *front_net_transport(void)
{
    return &k_front_net_transport;
}

// --- sending ---------------------------------------------------------------------------------

// front_conn_transmit hands |data| to the transport, or keeps it until the active send (the
// interim 100 Continue) is out: net_conn_send takes one send at a time.
static void front_conn_transmit(front_loop *l, front_conn *fc, cm_span data, bool close_after)
{
    if (fc->sending) {
        fc->has_queued = true;
        fc->queued = data;
        fc->queued_close = close_after;
        return;
    }
    fc->sending = true;
    if (!cm_ok(l->tp->send(l->tp_arg, fc->ref, data, close_after))) {
        fc->sending = false;
        l->tp->close(l->tp_arg, fc->ref);
    }
}

void front_conn_send(front_loop *l, front_conn *fc, cm_span data, bool close_after)
{
    fc->busy = true;
    fc->close_after = close_after;
    front_conn_transmit(l, fc, data, close_after);
}

// front_conn_continue sends the interim "100 Continue" to a client that waits for it before
// sending the body (http_feed.send_continue). Nothing else can be in flight then: answers are
// sent only between requests, and the parser asks at most once per request.
static void front_conn_continue(front_loop *l, front_conn *fc)
{
    if (fc->sending) {
        return;
    }
    fc->continue_active = true;
    front_conn_transmit(l, fc, http_continue_response(), false);
    if (!fc->sending) {
        fc->continue_active = false; // the send failed and the connection closes
    }
}

void front_conn_respond(front_loop *l, front_conn *fc, uint16_t status, const char *type,
                        cm_span body, bool close_after)
{
    const size_t cap = body.len + FRONT_HEAD_CAP;
    // The request's arena holds the answer until on_sent frees the request with it. Only a
    // request that filled its arena to the cap falls back to the heap.
    uint8_t *buf = cm_arena_alloc(srv_request_arena(fc->req), cap);
    if (buf == NULL) {
        free(fc->out);
        buf = fc->out = malloc(cap);
    }
    size_t len = 0;
    http_response resp = {.status = status,
                          .content_type = type,
                          .body_len = body.len,
                          .close = close_after,
                          .keep_alive_10 = fc->http10 && !close_after,
                          .no_cache = true,
                          .date = cm_time_now()};
    if (buf == NULL || !cm_ok(http_response_write(buf, cap, &len, &resp, body))) {
        l->tp->close(l->tp_arg, fc->ref);
        return;
    }
    front_conn_send(l, fc, cm_span_make(buf, len), close_after);
}

static void front_conn_http_error(front_loop *l, front_conn *fc, const http_feed *f)
{
    __atomic_add_fetch(&l->d->counters.n_http_errors, 1, __ATOMIC_RELAXED);
    // At most one answer is out per connection, so its own buffer can hold this one.
    size_t len = 0;
    if (!cm_ok(http_error_write(fc->err_out, sizeof(fc->err_out), &len, f, cm_time_now()))) {
        l->tp->close(l->tp_arg, fc->ref);
        return;
    }
    cm_log(CM_LOG_INFO, "peer=%s http=%u error=%s", fc->peer, (unsigned)f->status,
           cm_result_name(f->error));
    front_conn_send(l, fc, cm_span_make(fc->err_out, len), f->close);
}

// --- receiving -------------------------------------------------------------------------------

// front_conn_keep keeps |data| (pipelined bytes that arrived while busy) for later.
static void front_conn_keep(front_loop *l, front_conn *fc, cm_span data)
{
    const size_t limit = l->d->limits.max_body + l->d->limits.max_head;
    if (fc->pending_len + data.len > limit) {
        l->tp->close(l->tp_arg, fc->ref);
        return;
    }
    if (fc->pending_cap - fc->pending_len < data.len) {
        size_t cap = (fc->pending_cap + data.len) * 2;
        uint8_t *nb = realloc(fc->pending, cap);
        if (nb == NULL) {
            l->tp->close(l->tp_arg, fc->ref);
            return;
        }
        fc->pending = nb;
        fc->pending_cap = cap;
    }
    memcpy(fc->pending + fc->pending_len, data.p, data.len);
    fc->pending_len += data.len;
}

// front_conn_feed parses |data| (bytes that follow whatever was parsed before).
static void front_conn_feed(front_loop *l, front_conn *fc, cm_span data)
{
    while (data.len > 0) {
        if (fc->busy) {
            // Pipelined bytes wait until the current answer is out (one request at a time).
            front_conn_keep(l, fc, data);
            return;
        }
        if (fc->req == NULL) {
            fc->req = srv_request_new(l->worker, fc);
            if (fc->req == NULL) {
                l->tp->close(l->tp_arg, fc->ref);
                return;
            }
            l->tp->set_deadline(l->tp_arg, fc->ref, l->d->head_timeout_ms);
        }
        http_feed f;
        // The outcome is in |f| (kind, error, status); the result code repeats it.
        const cm_result fr = http_parser_feed(&fc->parser, &f, srv_request_arena(fc->req), data);
        (void)fr;
        data.p += f.consumed;
        data.len -= f.consumed;
        if (f.send_continue) {
            front_conn_continue(l, fc);
        }
        if (f.kind == HTTP_FEED_NEED_MORE) {
            return;
        }
        if (f.kind == HTTP_FEED_ERROR) {
            srv_request_free(fc->req);
            fc->req = NULL;
            front_conn_http_error(l, fc, &f);
            if (f.close) {
                return;
            }
            continue;
        }
        l->tp->set_deadline(l->tp_arg, fc->ref, 0);
        front_route_request(l, fc, &f.request);
    }
}

// --- net_app callbacks -----------------------------------------------------------------------

CM_RESULT front_loop_new(front_loop **out, front_daemon *d, const front_transport *tp, void *tp_arg,
                         cm_cq *cq)
{
    *out = NULL;
    CM_ENSURE(d != NULL && d->engine != NULL && tp != NULL && cq != NULL, CM_E_INVALID_ARG);
    front_loop *l = calloc(1, sizeof(*l));
    CM_ENSURE(l != NULL, CM_E_NOMEM);
    l->metrics = malloc(FRONT_METRICS_CAP);
    if (l->metrics == NULL) {
        free(l);
        return cm_result_make(CM_E_NOMEM);
    }
    l->d = d;
    l->tp = tp;
    l->tp_arg = tp_arg;
    l->cq = cq;
    l->watch_slot = FRONT_MAX_LOOPS;
    const cm_result r = srv_worker_new(&l->worker, d->engine, cq);
    if (!cm_ok(r)) {
        free(l->metrics);
        free(l);
        return r;
    }
    if (tp->busy != NULL) {
        srv_worker_set_busy(l->worker, tp->busy, tp_arg);
    }
    *out = l;
    return cm_result_make(CM_OK);
}

void front_loop_free(front_loop *l)
{
    if (l == NULL) {
        return;
    }
    srv_worker_free(l->worker);
    free(l->metrics);
    free(l);
}

// --- the watchdog's probe --------------------------------------------------------------------

void front_daemon_watch(front_daemon *d, front_loop *l)
{
    const uint32_t i = __atomic_fetch_add(&d->num_loops, 1, __ATOMIC_ACQ_REL);
    if (i >= FRONT_MAX_LOOPS) {
        return;
    }
    l->watch_slot = i;
    __atomic_store_n(&d->loops[i], l, __ATOMIC_RELEASE);
}

void front_daemon_unwatch(front_daemon *d, front_loop *l)
{
    if (l->watch_slot < FRONT_MAX_LOOPS) {
        __atomic_store_n(&d->loops[l->watch_slot], NULL, __ATOMIC_RELEASE);
        l->watch_slot = FRONT_MAX_LOOPS;
    }
}

bool front_daemon_loops_alive(front_daemon *d)
{
    uint32_t n = __atomic_load_n(&d->num_loops, __ATOMIC_ACQUIRE);
    n = n < FRONT_MAX_LOOPS ? n : FRONT_MAX_LOOPS;
    bool alive = true;
    for (uint32_t i = 0; i < n; i++) {
        front_loop *l = __atomic_load_n(&d->loops[i], __ATOMIC_ACQUIRE);
        if (l == NULL) {
            continue; // stopped
        }
        // Only the main thread writes probe_sent; the loop copies it into probe_seen when it
        // takes the probe, after which the node is free to be pushed again.
        if (__atomic_load_n(&l->probe_seen, __ATOMIC_ACQUIRE) != l->probe_sent) {
            alive = false; // the previous probe is still queued: the loop has not turned
            continue;
        }
        __atomic_store_n(&l->probe_sent, l->probe_sent + 1, __ATOMIC_RELEASE);
        l->probe.kind = FRONT_CQ_KIND_PROBE;
        cm_cq_push(l->cq, &l->probe);
    }
    return alive;
}

static void *front_loop_init(void *arg, net_loop *loop)
{
    front_loop *l = NULL;
    if (!cm_ok(front_loop_new(&l, arg, &k_front_net_transport, loop, net_loop_cq(loop)))) {
        return NULL;
    }
    front_daemon_watch(arg, l);
    return l;
}

static void front_loop_cleanup(void *ctx)
{
    front_loop *l = ctx;
    front_daemon_unwatch(l->d, l);
    front_loop_free(l);
}

void front_peer_key(uint8_t out[SRV_PEER_KEY_LEN], const struct sockaddr *sa)
{
    memset(out, 0, SRV_PEER_KEY_LEN);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &a->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        // An IPv4-mapped address keeps all of itself; any other IPv6 address its /64 (one host
        // usually owns a whole /64, as engine/net counts connections).
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
        const bool mapped = IN6_IS_ADDR_V4MAPPED(&a->sin6_addr);
        memcpy(out, &a->sin6_addr, mapped ? 16 : 8);
    }
}

static void *front_on_open(void *ctx, net_conn_ref ref, const struct sockaddr *peer)
{
    front_loop *l = ctx;
    front_conn *fc = calloc(1, sizeof(*fc));
    if (fc == NULL) {
        return NULL;
    }
    fc->ref = ref;
    fc->admin = l->tp->is_admin != NULL && l->tp->is_admin(l->tp_arg, ref);
    if (!cm_ok(http_parser_init(&fc->parser, &l->d->limits, fc->head, sizeof(fc->head)))) {
        free(fc);
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
    (void)snprintf(fc->peer, sizeof(fc->peer), "%s:%u", host, (unsigned)port);
    front_peer_key(fc->peer_key, peer);
    l->tp->set_deadline(l->tp_arg, ref, l->d->idle_timeout_ms);
    return fc;
}

static net_action front_on_data(void *ctx, void *conn, net_conn_ref ref, cm_span data)
{
    front_conn *fc = conn;
    if (fc == NULL) {
        return NET_CLOSE;
    }
    (void)ref;
    front_tls_learn(ctx, fc);
    front_conn_feed(ctx, fc, data);
    return NET_CONTINUE;
}

static void front_on_sent(void *ctx, void *conn, net_conn_ref ref, bool ok)
{
    front_loop *l = ctx;
    front_conn *fc = conn;
    (void)ref;
    if (fc == NULL) {
        return;
    }
    fc->sending = false;
    if (fc->continue_active) {
        // The 100 Continue is out; the request is still being read or processed, unless its
        // answer was ready meanwhile and waits.
        fc->continue_active = false;
        if (ok && fc->has_queued) {
            fc->has_queued = false;
            front_conn_transmit(l, fc, fc->queued, fc->queued_close);
        }
        return;
    }
    free(fc->out);
    fc->out = NULL;
    srv_request_free(fc->req);
    fc->req = NULL;
    fc->busy = false;
    if (!ok || fc->close_after) {
        return; // the transport closes the connection
    }
    l->tp->set_deadline(l->tp_arg, fc->ref, l->d->idle_timeout_ms);
    if (fc->pending_len > 0) {
        // Parse what the client pipelined meanwhile; the buffer is taken first because
        // parsing may queue more into a fresh one.
        uint8_t *p = fc->pending;
        const size_t n = fc->pending_len;
        fc->pending = NULL;
        fc->pending_len = 0;
        fc->pending_cap = 0;
        front_conn_feed(l, fc, cm_span_make(p, n));
        free(p);
    }
    if (fc->peer_eof && !fc->busy && !http_parser_idle(&fc->parser)) {
        // The peer stopped sending in the middle of a pipelined request: it cannot complete.
        l->tp->close(l->tp_arg, fc->ref);
    }
}

static void front_on_close(void *ctx, void *conn)
{
    front_conn *fc = conn;
    (void)ctx;
    if (fc == NULL) {
        return;
    }
    if (fc->req != NULL && fc->jobs_out) {
        // HSM or store jobs are still out for this request: it is detached here and freed
        // when they come back (front_on_completion).
        srv_request_set_user(fc->req, NULL);
        fc->req = NULL;
    }
    srv_request_free(fc->req);
    free(fc->out);
    free(fc->pending);
    free(fc);
}

static void front_on_completion(void *ctx, cm_cq_node *node)
{
    front_loop *l = ctx;
    if (node == &l->probe) { // the watchdog's: this loop turns
        __atomic_store_n(&l->probe_seen, __atomic_load_n(&l->probe_sent, __ATOMIC_ACQUIRE),
                         __ATOMIC_RELEASE);
        return;
    }
    srv_request *req = srv_worker_on_completion(l->worker, node);
    if (req == NULL) {
        return;
    }
    l->pending--;
    front_conn *fc = srv_request_user(req);
    if (fc == NULL) {
        srv_request_free(req); // the connection went away meanwhile
        return;
    }
    fc->jobs_out = false;
    front_answer_cmp(l, fc);
}

static net_action front_on_timeout(void *ctx, void *conn, net_conn_ref ref)
{
    front_loop *l = ctx;
    front_conn *fc = conn;
    (void)ref;
    if (fc == NULL || fc->busy || http_parser_idle(&fc->parser)) {
        return NET_CLOSE;
    }
    // A slow client in the middle of a request: 408 and close (RFC 9110 §15.5.9).
    http_feed f;
    memset(&f, 0, sizeof(f));
    f.status = 408;
    f.close = true;
    srv_request_free(fc->req);
    fc->req = NULL;
    front_conn_http_error(l, fc, &f);
    return NET_CONTINUE;
}

// front_on_eof: the peer finished sending. With nothing being processed or answered the
// connection closes now, also when a request was only partly received: HTTP requests are never
// delimited by the end of the connection (RFC 9112 §6.3), so it can never complete, and a
// client that sends part of a request and leaves (churn) must not hold its slot until the
// header timeout. A request being processed is still answered (the peer may only have shut
// down its sending side); pipelined bytes after it are parsed once it is sent (front_on_sent).
static net_action front_on_eof(void *ctx, void *conn, net_conn_ref ref)
{
    front_conn *fc = conn;
    (void)ctx;
    (void)ref;
    if (fc == NULL || !fc->busy) {
        return NET_CLOSE;
    }
    fc->peer_eof = true;
    return NET_CONTINUE;
}

static bool front_is_idle(void *ctx, void *conn)
{
    (void)ctx;
    const front_conn *fc = conn;
    return fc == NULL || (!fc->busy && http_parser_idle(&fc->parser));
}

static uint32_t front_pending(void *ctx)
{
    return ((const front_loop *)ctx)->pending;
}

static const net_app k_front_app = {
    .loop_init = front_loop_init,
    .loop_cleanup = front_loop_cleanup,
    .on_open = front_on_open,
    .on_data = front_on_data,
    .on_sent = front_on_sent,
    .on_close = front_on_close,
    .on_completion = front_on_completion,
    .on_timeout = front_on_timeout,
    .is_idle = front_is_idle,
    .pending = front_pending,
    .on_eof = front_on_eof,
};

const net_app *front_net_app(void)
{
    return &k_front_app;
}
