// engine/front: what each route answers. CMP (RFC 9811 §3) at /.well-known/cmp[/p/NAME],
// /healthz, /metrics, and /crl/NAME.crl; anything else is 404. A connection of an admin
// listener is answered /healthz and /metrics only (404 for the rest).
#include "engine/front/front_internal.h"

// front_log_request writes the request's log line from its summary |s| and its duration |us|. A
// rejection names the code (for grep) and quotes the reason the client was sent (cm_log_quote: a
// peer's text can neither end the field nor forge a line).
static void front_log_request(const front_conn *fc, const srv_summary *s, uint64_t us)
{
    if (!cm_log_enabled(CM_LOG_INFO)) {
        return;
    }
    // A TLS client certificate's subject, quoted like the reason (issue 18).
    char tls[4 * sizeof(fc->tls_peer) + 16] = "";
    if (fc->tls_peer[0] != '\0') {
        char q[4 * sizeof(fc->tls_peer)];
        (void)snprintf(tls, sizeof(tls), " tls_peer=\"%s\"",
                       cm_log_quote(q, sizeof(q), fc->tls_peer));
    }
    if (s->fail_bit < 0) {
        cm_log(CM_LOG_INFO, "peer=%s%s ca=%s body=%s outcome=ok us=%llu", fc->peer, tls,
               fc->ca->name, front_body_name(s->body_type), (unsigned long long)us);
    } else {
        char reason[4 * sizeof(((cm_why *)NULL)->text)];
        cm_log(CM_LOG_INFO,
               "peer=%s%s ca=%s body=%s outcome=rejected failinfo=%d error=%s reason=\"%s\" "
               "us=%llu",
               fc->peer, tls, fc->ca->name, front_body_name(s->body_type), s->fail_bit,
               cm_result_name(s->error), cm_log_quote(reason, sizeof(reason), s->reason),
               (unsigned long long)us);
    }
}

void front_answer_cmp(front_loop *l, front_conn *fc)
{
    srv_request *req = fc->req;
    srv_summary s; // once per request, for the log line and the metrics
    srv_request_summary(req, &s);
    const uint64_t us = (cm_time_mono_ns() - fc->start_ns) / 1000u;
    front_log_request(fc, &s, us);
    front_metrics_count(l->d, &s, us);
    const cm_span body = srv_request_response(req);
    if (body.len == 0) {
        front_conn_respond(l, fc, 500, "text/plain", CM_SPAN_LIT("500 Internal Server Error\n"),
                           true);
        return;
    }
    // RFC 6712 §3.3: a CMP response, including a CMP error, is sent with 200. After a
    // rejection (a failure bit; "waiting" is none) the connection closes once it is sent
    // (RFC 9811 §5 SHOULD): the transaction ended, and a client that sends garbage or fails
    // authentication keeps no connection open; after success it stays open.
    front_conn_respond(l, fc, 200, HTTP_CONTENT_TYPE_PKIXCMP, body,
                       !fc->keep_alive || s.fail_bit >= 0);
}

static void front_metrics(front_loop *l, front_conn *fc)
{
    // The text is made in the loop's buffer and copied into the answer (the request's arena),
    // so several connections of one loop may be sending /metrics at once.
    const size_t used = front_metrics_write(l->d, l->metrics, FRONT_METRICS_CAP);
    front_conn_respond(l, fc, 200, "text/plain; version=0.0.4", cm_span_make(l->metrics, used),
                       !fc->keep_alive);
}

// front_crl serves GET /crl/NAME.crl: the CA's current CRL from the store (RFC 5280 §5,
// application/pkix-crl as RFC 2585 registers it).
static void front_crl(front_loop *l, front_conn *fc, cm_span name)
{
    const srv_ca *ca = name.len != 0 ? srv_engine_find_ca(l->d->engine, name) : NULL;
    cm_span crl;
    if (ca == NULL || !cm_ok(srv_worker_crl(l->worker, ca, srv_request_arena(fc->req), &crl))) {
        __atomic_add_fetch(&l->d->counters.n_http_errors, 1, __ATOMIC_RELAXED);
        front_conn_respond(l, fc, 404, "text/plain", CM_SPAN_LIT("404 Not Found: no such CRL\n"),
                           !fc->keep_alive);
        return;
    }
    front_conn_respond(l, fc, 200, "application/pkix-crl", crl, !fc->keep_alive);
}

void front_route_request(front_loop *l, front_conn *fc, const http_request *hr)
{
    front_daemon *d = l->d;
    fc->keep_alive = hr->keep_alive;
    fc->http10 = hr->version_minor == 0;
    fc->start_ns = cm_time_mono_ns();
    __atomic_add_fetch(&d->counters.n_requests, 1, __ATOMIC_RELAXED);
    if (fc->admin && hr->route.kind != HTTP_ROUTE_HEALTHZ && hr->route.kind != HTTP_ROUTE_METRICS) {
        __atomic_add_fetch(&d->counters.n_http_errors, 1, __ATOMIC_RELAXED);
        front_conn_respond(l, fc, 404, "text/plain",
                           CM_SPAN_LIT("404 Not Found: the admin listener serves only /healthz "
                                       "and /metrics\n"),
                           !fc->keep_alive);
        return;
    }
    switch (hr->route.kind) {
    case HTTP_ROUTE_HEALTHZ:
        // A node whose database cannot be reached answers nothing useful: a load balancer's
        // health check takes it out of rotation until the store has reconnected.
        if (!store_healthy(d->store)) {
            front_conn_respond(l, fc, 503, "text/plain", CM_SPAN_LIT("store unavailable\n"),
                               !fc->keep_alive);
            return;
        }
        front_conn_respond(l, fc, 200, "text/plain", CM_SPAN_LIT("ok\n"), !fc->keep_alive);
        return;
    case HTTP_ROUTE_METRICS:
        front_metrics(l, fc);
        return;
    case HTTP_ROUTE_CRL:
        front_crl(l, fc, hr->route.name);
        return;
    case HTTP_ROUTE_CMP:
        break;
    default:
        __atomic_add_fetch(&d->counters.n_http_errors, 1, __ATOMIC_RELAXED);
        front_conn_respond(l, fc, 404, "text/plain", CM_SPAN_LIT("404 Not Found\n"),
                           !fc->keep_alive);
        return;
    }
    const srv_ca *ca = srv_engine_find_ca(d->engine, hr->route.name);
    if (ca == NULL) {
        __atomic_add_fetch(&d->counters.n_http_errors, 1, __ATOMIC_RELAXED);
        front_conn_respond(l, fc, 404, "text/plain", CM_SPAN_LIT("404 Not Found: no such CA\n"),
                           !fc->keep_alive);
        return;
    }
    fc->ca = ca;
    fc->busy = true;
    front_tls_pass(fc);
    srv_request_set_peer(fc->req, fc->peer_key);
    if (srv_request_start(fc->req, ca, hr->body)) {
        front_answer_cmp(l, fc);
    } else {
        fc->jobs_out = true;
        l->pending++;
    }
}
