// The event loop: one epoll set over C keep-alive connections, one transaction in flight on
// each; a certConf (ir-confirm) goes out on the same connection right after its ip. A request
// answered `waiting` (delayed delivery) is polled for: a pollReq after each checkAfter, on a new
// connection, until the certificate or a rejection comes (over HTTP; with --coap a waiting
// answer counts as rejected); the waiting is part of its latency. With --tls
// each connection makes its handshake before its first request (certmint_bench_tls.c). Every
// response is checked as it arrives (bench_check_response); a keep-alive connection the server
// closed before answering is retried once on a new one.
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include "bench/certmint_bench.h"

void bench_conn_close(bench_conn *c)
{
    bench_tls_close(c);
    if (c->fd >= 0) {
        (void)close(c->fd); // also leaves the epoll set
        c->fd = -1;
    }
    c->connecting = false;
    c->in_len = 0;
    c->used = 0;
}

static bool bench_epoll_set(bench_run *run, bench_conn *c, uint32_t events, int op)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - run->conns);
    return epoll_ctl(run->epfd, op, c->fd, &ev) == 0;
}

static bool bench_conn_open(bench_run *run, bench_conn *c)
{
    if (run->o->coap) {
        return bench_coap_open(run, c);
    }
    c->fd = socket(run->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return false;
    }
    c->gen++;
    if (!bench_bind_source(run->o, c->fd, run->ai->ai_family)) {
        bench_conn_close(c);
        return false;
    }
    const int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (run->o->reconnect) {
        // No TIME_WAIT per transaction on our side: thousands of connections a second would
        // exhaust the ephemeral ports within a run.
        const struct linger lg = {1, 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (connect(c->fd, run->ai->ai_addr, run->ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        bench_conn_close(c);
        return false;
    }
    c->connecting = true;
    c->used = 0;
    run->reconnects++;
    if (!bench_epoll_set(run, c, EPOLLOUT, EPOLL_CTL_ADD)) {
        bench_conn_close(c);
        return false;
    }
    return true;
}

void bench_save_serial(bench_run *run, cm_span der)
{
    const unsigned char *p = der.p;
    X509 *x = d2i_X509(NULL, &p, (long)der.len);
    unsigned char *tlv = NULL;
    const int n = x != NULL ? i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &tlv) : -1;
    // 02 LEN CONTENT, LEN in one octet: a serial has at most 20 octets (RFC 5280 §4.1.2.2).
    if (n < 3 || n > 2 + 127 || tlv[1] != n - 2) {
        bench_die("cannot read the serial number of a received certificate");
    }
    for (int i = 2; i < n; i++) {
        (void)fprintf(run->serials, "%02X", tlv[i]);
    }
    (void)fputc('\n', run->serials);
    OPENSSL_free(tlv);
    X509_free(x);
}

// bench_unsleep cancels |c|'s scheduled pollReq, if any.
static void bench_unsleep(bench_run *run, bench_conn *c)
{
    if (c->poll_at != 0) {
        c->poll_at = 0;
        run->sleeping--;
    }
}

void bench_finish_n(bench_run *run, bench_conn *c, const bench_fail *f, size_t n, bool keep_alive)
{
    bench_unsleep(run, c);
    const uint64_t now = bench_now();
    bool all_ok = true;
    for (size_t i = 0; i < n; i++) {
        run->fails[f[i]]++;
        all_ok &= f[i] == BENCH_OK;
        if (f[i] == BENCH_OK) {
            run->lat[run->num_lat++] = now - c->t0;
            if (run->stop_at == 0 || now <= run->stop_at) {
                run->ok_in_window++;
            }
        }
    }
    if (!all_ok || !keep_alive || run->o->reconnect) {
        bench_conn_close(c);
    }
    c->busy = false;
    run->busy--;
    // The loop starts the next transaction (bench_fill): no recursion through failures.
}

// bench_finish ends the transaction on |c| with |f| (for each inner request of a batch).
static void bench_finish(bench_run *run, bench_conn *c, bench_fail f, bool keep_alive)
{
    bench_fail fs[CMP_MAX_NESTED_LIMIT];
    const size_t n = run->o->batch > 1 ? run->o->batch : 1;
    for (size_t i = 0; i < n; i++) {
        fs[i] = f;
    }
    bench_finish_n(run, c, fs, n, keep_alive);
}

static void bench_conn_send(bench_run *run, bench_conn *c)
{
    while (c->out_off < c->out_len) {
        size_t n = 0;
        const bench_io io = bench_io_send(c, c->out + c->out_off, c->out_len - c->out_off, &n);
        if (io == BENCH_IO_DONE) {
            c->out_off += n;
            continue;
        }
        if (io == BENCH_IO_WANT_WRITE || io == BENCH_IO_WANT_READ) {
            (void)bench_epoll_set(run, c, io == BENCH_IO_WANT_WRITE ? EPOLLOUT : EPOLLIN,
                                  EPOLL_CTL_MOD);
            return;
        }
        bench_finish(run, c, BENCH_FAIL_IO, false);
        return;
    }
    if (!bench_epoll_set(run, c, EPOLLIN, EPOLL_CTL_MOD)) {
        bench_finish(run, c, BENCH_FAIL_IO, false);
    }
}

// bench_conn_handshake continues |c|'s TLS handshake; the request goes once it is done.
static void bench_conn_handshake(bench_run *run, bench_conn *c)
{
    const bench_io io = bench_tls_handshake(run, c);
    if (io == BENCH_IO_DONE) {
        bench_conn_send(run, c);
    } else if (io == BENCH_IO_WANT_READ || io == BENCH_IO_WANT_WRITE) {
        if (!bench_epoll_set(run, c, io == BENCH_IO_WANT_READ ? EPOLLIN : EPOLLOUT,
                             EPOLL_CTL_MOD)) {
            bench_finish(run, c, BENCH_FAIL_IO, false);
        }
    } else {
        bench_finish(run, c, BENCH_FAIL_TLS, false);
    }
}

void bench_conn_transmit(bench_run *run, bench_conn *c)
{
    c->out_off = 0;
    c->in_len = 0;
    if (run->o->coap) {
        if (c->fd < 0 && !bench_conn_open(run, c)) {
            bench_finish(run, c, BENCH_FAIL_CONNECT, false);
            return;
        }
        bench_coap_start(run, c);
        return;
    }
    if (c->fd < 0) {
        if (!bench_conn_open(run, c)) {
            bench_finish(run, c, BENCH_FAIL_CONNECT, false);
        }
        return; // sent once the connect completes
    }
    bench_conn_send(run, c);
}

static void bench_conn_start(bench_run *run, bench_conn *c)
{
    const size_t batch = run->o->batch > 1 ? run->o->batch : 1;
    c->req = run->next;
    run->next += batch;
    c->busy = true;
    run->busy++;
    c->phase = 0;
    c->retried = false;
    c->t0 = bench_now();
    if (bench_flow_is_nested(run->ctx->flow)) {
        const bench_batch *b = &run->ctx->batches[c->req / batch];
        c->out = b->http;
        c->out_len = b->http_len;
    } else {
        const bench_req *rq = &run->ctx->reqs[c->req];
        c->out = rq->http;
        c->out_len = rq->http_len;
    }
    bench_conn_transmit(run, c);
}

// bench_fill starts a transaction on every idle connection while requests are left (a whole
// batch of them for the nested flows).
static void bench_fill(bench_run *run)
{
    const size_t batch = run->o->batch > 1 ? run->o->batch : 1;
    for (size_t i = 0; i < run->o->connections; i++) {
        bench_conn *c = &run->conns[i];
        while (!c->busy && !run->stopping && run->next + batch <= run->limit) {
            bench_conn_start(run, c);
        }
    }
}

// bench_make_next builds the message |body| that continues |c|'s transaction after the
// response |prev|: a fresh senderNonce (into |nonce|), recipNonce = |prev|'s senderNonce, the
// same transactionID, protected like the request (the same derived PBM key: RFC 4210
// §5.1.3.1). |*out| is the HTTP request (heap; replaces what it held).
static bool bench_make_next(bench_run *run, bench_conn *c, const cmp_msg *prev,
                            const cmp_body *body, uint8_t nonce[BENCH_NONCE_LEN], uint8_t **out,
                            size_t *out_len)
{
    bench_ctx *ctx = run->ctx;
    const bench_req *rq = &ctx->reqs[c->req];
    if (!prev->header.f.sender_nonce.present ||
        prev->header.f.sender_nonce.v.len != sizeof(c->ip_nonce) ||
        RAND_bytes(nonce, BENCH_NONCE_LEN) != 1) {
        return false;
    }
    memcpy(c->ip_nonce, prev->header.f.sender_nonce.v.p, sizeof(c->ip_nonce));
    cmp_mac_key *mac = ctx->macs != NULL ? &ctx->macs[c->req] : NULL;
    cm_span prot_alg = ctx->prot_alg_der;
    // AES-GMAC: the certConf must not reuse the ir's nonce.
    if (mac != NULL && !cm_ok(cmp_mac_key_renew_nonce(mac))) {
        return false;
    }
    if (mac != NULL) {
        der_builder pb;
        der_builder_init_arena(&pb, &run->arena, 128);
        cmp_mac_key_put_alg(&pb, mac);
        if (!cm_ok(der_builder_finish(&pb, &prot_alg))) {
            return false;
        }
    }
    cmp_header_fields h;
    bench_header_init(ctx, &h, cm_span_make(rq->sender, rq->sender_len), prot_alg);
    h.transaction_id = (cmp_opt_span){true, cm_span_make(rq->tid, sizeof(rq->tid))};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(nonce, BENCH_NONCE_LEN)};
    h.recip_nonce = (cmp_opt_span){true, cm_span_make(c->ip_nonce, sizeof(c->ip_nonce))};
    der_builder b;
    der_builder_init_arena(&b, &run->arena, 1024);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, body);
    cm_span der;
    const bench_signer signer = bench_default_signer(ctx);
    if (!bench_protect_finish(ctx, &run->crypto, &run->arena, &w, mac, &signer) ||
        !cm_ok(der_builder_finish(&b, &der))) {
        return false;
    }
    free(*out);
    *out = bench_put_http(run->o, out_len, der);
    return *out != NULL;
}

// bench_make_conf builds the certConf for the ip |ip| of |c|'s request (certHash of the
// certificate) into c->conf.
static bool bench_make_conf(bench_run *run, bench_conn *c, const cmp_msg *ip)
{
    const cm_span cert = ip->body.u.rep.responses[0].cert;
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len;
    if (!cm_ok(cmp_cert_hash(&run->digests, hash, &hash_len, cert, NULL))) {
        return false;
    }
    cmp_cert_status cs;
    memset(&cs, 0, sizeof(cs));
    cs.cert_hash = cm_span_make(hash, hash_len);
    cs.cert_req_id = 0;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_CERT_CONF;
    body.u.conf.items = &cs;
    body.u.conf.num = 1;
    return bench_make_next(run, c, ip, &body, c->conf_nonce, &c->conf, &c->conf_len);
}

// bench_waits reports whether |m| says the request waits (RFC 9483 §4.4): an ip/cp/kup with
// PKIStatus waiting, or a pollRep; |*out_after| is when to ask again (seconds; 0 at once).
static bool bench_waits(const cmp_msg *m, int64_t *out_after)
{
    *out_after = 0;
    const cmp_body *b = &m->body;
    if (b->type == CMP_BODY_POLL_REP) {
        if (b->u.poll_rep.num != 1) {
            return false;
        }
        const int64_t a = b->u.poll_rep.items[0].check_after;
        *out_after = a < 0 ? 0 : (a > 600 ? 600 : a);
        return true;
    }
    return (b->type == CMP_BODY_IP || b->type == CMP_BODY_CP || b->type == CMP_BODY_KUP) &&
           b->u.rep.num_responses == 1 && b->u.rep.responses[0].status.status == CMP_STATUS_WAITING;
}

// bench_schedule_poll builds the pollReq answering |m| (certReqId 0) and puts |c| to sleep
// until it is due: the connection is closed meanwhile (the poll goes on a new one).
static bool bench_schedule_poll(bench_run *run, bench_conn *c, const cmp_msg *m, int64_t after)
{
    int64_t id = 0;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_POLL_REQ;
    body.u.poll_req.cert_req_ids = &id;
    body.u.poll_req.num = 1;
    if (!bench_make_next(run, c, m, &body, c->poll_nonce, &c->poll, &c->poll_len)) {
        return false;
    }
    if (c->phase != 2) {
        run->waiting++;
    }
    bench_conn_close(c);
    c->phase = 2;
    c->poll_at = bench_now() + (uint64_t)after * 1000000000u;
    if (c->poll_at == 0) {
        c->poll_at = 1;
    }
    run->sleeping++;
    return true;
}

// bench_wake sends the pollReqs that are due.
static void bench_wake(bench_run *run, uint64_t now)
{
    for (size_t i = 0; i < run->o->connections && run->sleeping > 0; i++) {
        bench_conn *c = &run->conns[i];
        if (c->busy && c->poll_at != 0 && c->poll_at <= now) {
            c->poll_at = 0;
            run->sleeping--;
            run->polls++;
            c->retried = false;
            c->out = c->poll;
            c->out_len = c->poll_len;
            bench_conn_transmit(run, c);
        }
    }
}

// bench_keep: out of memory leaves the slot NULL: an ip is then not verified, a pkiConf counts
// as unprotected (bench_verify).
void bench_keep(uint8_t **slot, size_t *len, cm_span body)
{
    *slot = malloc(body.len);
    if (*slot != NULL) {
        memcpy(*slot, body.p, body.len);
        *len = body.len;
    }
}

void bench_on_response(bench_run *run, bench_conn *c, const bench_http_rsp *h)
{
    if (bench_flow_is_nested(run->ctx->flow)) {
        bench_nested_on_response(run, c, h);
        return;
    }
    const bench_req *rq = &run->ctx->reqs[c->req];
    bench_expect e;
    memset(&e, 0, sizeof(e));
    e.transaction_id = cm_span_make(rq->tid, sizeof(rq->tid));
    // The request's answer (phase 0), or after a pollReq (phase 2) that answer or a pollRep.
    const bool first = c->phase == 0 || c->phase == 2;
    if (first) {
        e.sender_nonce = c->phase == 0 ? cm_span_make(rq->nonce, sizeof(rq->nonce))
                                       : cm_span_make(c->poll_nonce, sizeof(c->poll_nonce));
        const bench_flow flow = run->ctx->flow;
        e.body = flow == BENCH_FLOW_IR_IMPLICIT || flow == BENCH_FLOW_IR_CONFIRM ||
                         flow == BENCH_FLOW_IR_CKG
                     ? CMP_BODY_IP
                 : flow == BENCH_FLOW_GENM ? CMP_BODY_GENP
                 : flow == BENCH_FLOW_KUR  ? CMP_BODY_KUP
                 : flow == BENCH_FLOW_RR   ? CMP_BODY_RP
                                           : CMP_BODY_CP;
        if (!run->o->no_key_check && flow != BENCH_FLOW_GENM && flow != BENCH_FLOW_RR &&
            flow != BENCH_FLOW_IR_CKG) {
            const bench_key *k = &run->ctx->keys[rq->key];
            e.spki = cm_span_make(k->spki, k->spki_len);
        }
    } else {
        e.sender_nonce = cm_span_make(c->conf_nonce, sizeof(c->conf_nonce));
        e.body = CMP_BODY_PKICONF;
    }
    cm_arena_reset(&run->arena);
    cmp_msg m;
    bench_fail f = bench_check_response(&run->arena, &m, &e, h);
    if (f == BENCH_OK && c->phase == 0 && run->ctx->flow == BENCH_FLOW_IR_CKG &&
        !run->o->no_key_check) {
        f = bench_check_ckg(run, &m); // the generated key, decrypted, is the certificate's
    }
    c->used++;
    int64_t after = 0;
    if (first && !run->o->coap && (f == BENCH_FAIL_REJECTED || f == BENCH_FAIL_BODY_TYPE) &&
        bench_waits(&m, &after)) {
        if (!bench_schedule_poll(run, c, &m, after)) {
            bench_die("cannot build a pollReq");
        }
        return;
    }
    if (f == BENCH_OK && first && run->rsp != NULL && !run->capture) {
        bench_keep(&run->rsp[c->req], &run->rsp_len[c->req], h->body);
    }
    if (f == BENCH_OK && c->phase == 1 && run->conf_rsp != NULL) {
        bench_keep(&run->conf_rsp[c->req], &run->conf_rsp_len[c->req], h->body);
    }
    if (f == BENCH_OK && first && run->serials != NULL &&
        (e.body == CMP_BODY_IP || e.body == CMP_BODY_CP || e.body == CMP_BODY_KUP)) {
        bench_save_serial(run, m.body.u.rep.responses[0].cert);
    }
    if (f == BENCH_OK && run->capture) {
        // Enrolling for a kur/rr run: keep the certificate.
        bench_req *w = &run->ctx->reqs[c->req];
        const cm_span cert = m.body.u.rep.responses[0].cert;
        w->cert = malloc(cert.len);
        if (w->cert == NULL) {
            bench_die("out of memory");
        }
        memcpy(w->cert, cert.p, cert.len);
        w->cert_len = cert.len;
    }
    if (f == BENCH_OK && first && run->ctx->flow == BENCH_FLOW_IR_CONFIRM) {
        if (!bench_make_conf(run, c, &m)) {
            bench_die("cannot build a certConf");
        }
        if (!h->keep_alive) {
            bench_conn_close(c);
        }
        c->phase = 1;
        c->retried = false;
        c->out = c->conf;
        c->out_len = c->conf_len;
        bench_conn_transmit(run, c);
        return;
    }
    bench_finish(run, c, f, h->keep_alive);
}

static void bench_on_readable(bench_run *run, bench_conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            const size_t cap = c->in_cap == 0 ? 16384 : c->in_cap * 2;
            if (cap > BENCH_HTTP_MAX_BODY + 2 * BENCH_HTTP_MAX_HEADER) {
                bench_finish(run, c, BENCH_FAIL_HTTP_MALFORMED, false);
                return;
            }
            uint8_t *p = realloc(c->in, cap);
            if (p == NULL) {
                bench_die("out of memory");
            }
            c->in = p;
            c->in_cap = cap;
        }
        size_t n = 0;
        const bench_io io = bench_io_recv(c, c->in + c->in_len, c->in_cap - c->in_len, &n);
        if (io == BENCH_IO_WANT_READ) {
            return;
        }
        if (io == BENCH_IO_WANT_WRITE) {
            (void)bench_epoll_set(run, c, EPOLLOUT, EPOLL_CTL_MOD);
            return;
        }
        if (io != BENCH_IO_DONE) {
            // A keep-alive connection the server closed before answering: resend once on a
            // new connection (nothing of this request was answered).
            if (c->in_len == 0 && c->used > 0 && !c->retried) {
                c->retried = true;
                bench_conn_close(c);
                bench_conn_transmit(run, c);
                return;
            }
            bench_finish(run, c, BENCH_FAIL_IO, false);
            return;
        }
        c->in_len += n;
        bench_http_rsp h;
        const bench_http_state st = bench_http_parse(&h, c->in, c->in_len);
        if (st == BENCH_HTTP_BAD) {
            bench_finish(run, c, BENCH_FAIL_HTTP_MALFORMED, false);
            return;
        }
        if (st == BENCH_HTTP_DONE) {
            bench_on_response(run, c, &h);
            return;
        }
    }
}

static void bench_on_event(bench_run *run, const struct epoll_event *ev)
{
    const size_t idx = (size_t)(ev->data.u64 & 0xffffffffu);
    bench_conn *c = &run->conns[idx];
    if (c->fd < 0 || c->gen != (uint32_t)(ev->data.u64 >> 32)) {
        return;
    }
    if (run->o->coap) {
        bench_coap_on_readable(run, c); // datagrams for an idle transfer are read and dropped
        return;
    }
    if (!c->busy) {
        // An idle keep-alive connection the server closed (or wrote to): drop it, or the
        // level-triggered EPOLLIN would wake the loop again and again.
        bench_conn_close(c);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            bench_finish(run, c, BENCH_FAIL_CONNECT, false);
            return;
        }
        c->connecting = false;
        if (run->tls_ctx != NULL) {
            if (!bench_tls_start(run, c)) {
                bench_finish(run, c, BENCH_FAIL_TLS, false);
                return;
            }
            bench_conn_handshake(run, c);
            return;
        }
        bench_conn_send(run, c);
        return;
    }
    if (c->handshaking) {
        bench_conn_handshake(run, c);
        return;
    }
    if (c->out_off < c->out_len) {
        bench_conn_send(run, c);
        return;
    }
    bench_on_readable(run, c);
}

// bench_progress refreshes the progress line: the rate and the p99 latency are those of the
// transactions completed since the last refresh (|*last_lat| onwards in run->lat).
static void bench_progress(const bench_run *run, uint64_t t_start, uint64_t *last_t,
                           uint64_t *last_done, size_t *last_lat)
{
    const uint64_t now = bench_now();
    uint64_t done = 0;
    uint64_t failed = 0;
    for (size_t f = 0; f < BENCH_FAIL_COUNT; f++) {
        done += run->fails[f];
        failed += f == BENCH_OK ? 0 : run->fails[f];
    }
    const double rate = (double)(done - *last_done) / ((double)(now - *last_t) / 1e9);
    const size_t first = *last_lat <= run->num_lat ? *last_lat : 0;
    const double p99 = bench_percentile_ms(run->lat + first, run->num_lat - first, 99);
    (void)fprintf(stderr, "\r  %6.1f s  %9llu done  %9.0f/s  p99 %8.2f ms  %llu errors   ",
                  (double)(now - t_start) / 1e9, (unsigned long long)done, rate, p99,
                  (unsigned long long)failed);
    *last_t = now;
    *last_done = done;
    *last_lat = run->num_lat;
}

// bench_abandon ends every transaction still in flight after the grace period of a --duration
// run: counted as unfinished, not as failures (a server that serves one keep-alive connection
// at a time leaves the others waiting for the whole run).
static void bench_abandon(bench_run *run)
{
    for (size_t i = 0; i < run->o->connections; i++) {
        bench_conn *c = &run->conns[i];
        if (c->busy) {
            bench_unsleep(run, c);
            bench_conn_close(c);
            c->busy = false;
            run->busy--;
            run->unfinished++;
        }
    }
}

void bench_loop(bench_run *run, size_t limit, uint64_t stop_at, bool progress)
{
    run->limit = limit;
    run->stop_at = stop_at;
    run->stopping = false;
    const uint64_t t_start = bench_now();
    uint64_t last_t = t_start;
    uint64_t last_done = 0;
    size_t last_lat = run->num_lat;
    uint64_t last_check = t_start;
    bench_fill(run);
    struct epoll_event evs[256];
    const uint64_t timeout_ns = (uint64_t)(run->o->timeout * 1e9);
    // After a --duration run's window, transactions in flight get this long to finish.
    const uint64_t grace_ns = timeout_ns < 2000000000u ? timeout_ns : 2000000000u;
    while (run->busy > 0) {
        const int n = epoll_wait(run->epfd, evs, 256, 100);
        if (n < 0 && errno != EINTR) {
            bench_die("epoll_wait failed");
        }
        for (int i = 0; i < n; i++) {
            bench_on_event(run, &evs[i]);
        }
        const uint64_t now = bench_now();
        if (stop_at != 0 && now >= stop_at) {
            run->stopping = true;
            if (now - stop_at >= grace_ns) {
                bench_abandon(run);
            }
        }
        if (now - last_check >= 100000000u) {
            last_check = now;
            for (size_t i = 0; i < run->o->connections; i++) {
                bench_conn *c = &run->conns[i];
                if (c->busy && now - c->t0 > timeout_ns) {
                    bench_finish(run, c, BENCH_FAIL_TIMEOUT, false);
                } else if (c->busy && run->o->coap) {
                    bench_coap_tick(run, c, now);
                }
            }
        }
        if (run->sleeping > 0) {
            bench_wake(run, now);
        }
        bench_fill(run);
        if (progress && now - last_t >= 1000000000u) {
            bench_progress(run, t_start, &last_t, &last_done, &last_lat);
        }
    }
    if (progress) {
        bench_progress(run, t_start, &last_t, &last_done, &last_lat); // the final count
        (void)fputc('\n', stderr);
    }
}
