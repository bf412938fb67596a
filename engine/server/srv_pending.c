// Delayed delivery (RFC 9483 §4.4, RFC 9810 §5.3.22; issue 16): when an enrolment waits and
// what finishes it.
//
// The decision (srv_pending_decide, on the worker that checked the request): a profile with
// approval = manual makes every request wait for an operator; otherwise a request waits when
// the CA is overloaded — the HSM pool's queue deeper than max_hsm_queue (by default what 100 ms
// of the pool's measured signing rate drains) or the store's recent commits slower than
// max_commit_latency — instead of queueing behind the HSM with its connection open. At most
// max_pending wait under load on one node; past that the answer is systemUnavail.
//
// A waiting request is checked exactly as one that does not wait (protection, POPO, profile,
// policy), reserved in the store (transactionID, serial, key, limits: srv_enrol.c), and its
// TBSCertificate is built; its reservation and its row (store_pending) go to the store as one
// job (STORE_OP_PENDING_ADD), and only once that is durable is it answered `waiting`, so a
// pollReq may reach any node sharing the store.
//
// The drain (a thread per engine, cm-pending) signs and records what waits: every 100 ms it
// measures the pool's signing rate and the store's commit latency (the decision's inputs), and
// as the HSM queue falls below its bound it takes this node's queue in arrival order; every
// second it also looks in the store for requests an operator approved and for those another
// node (or this one before a restart) left. Each request is claimed in the store first
// (STORE_OP_PENDING_CLAIM), so two drains never sign one; a claim older than a minute (a drain
// that died) may be taken again. A pass claims up to 64 requests, signs them in one HSM
// submission and records them in one store batch (STORE_OP_PENDING_ISSUE: the certificate,
// its transaction row, the row's state). The next pollReq delivers the answer (srv_poll.c).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "engine/server/srv_internal.h"

#define SRV_PEND_BATCH        64u
#define SRV_PEND_SAMPLE_NS    100000000ull  // the measurements' window
#define SRV_PEND_SCAN_NS      1000000000ull // how often the drain looks in the store
#define SRV_PEND_STALE_S      60            // a claim older than this may be taken again
#define SRV_PEND_DEFAULT_WAIT 86400
#define SRV_PEND_MIN_BOUND    8u // the smallest measured max_hsm_queue

static uint64_t srv_ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void srv_add(uint64_t *p, uint64_t v)
{
    (void)__atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// --- state ----------------------------------------------------------------------------------

cm_result srv_pending_new(srv_pending **out, const srv_params *p)
{
    srv_pending *pd = calloc(1, sizeof(*pd));
    CM_ENSURE(pd != NULL, CM_E_NOMEM);
    pd->cap = p->max_pending;
    pd->queue = calloc(pd->cap, sizeof(*pd->queue));
    if (pd->queue == NULL) {
        free(pd);
        CM_BAIL(CM_E_NOMEM);
    }
    if (pthread_mutex_init(&pd->mu, NULL) != 0) {
        free(pd->queue);
        free(pd);
        CM_BAIL(CM_E_NOMEM);
    }
    if (pthread_cond_init(&pd->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&pd->mu);
        free(pd->queue);
        free(pd);
        CM_BAIL(CM_E_NOMEM);
    }
    pd->max_hsm_queue = p->max_hsm_queue != 0 ? p->max_hsm_queue : UINT32_MAX;
    *out = pd;
    return cm_result_make(CM_OK);
}

void srv_pending_free(srv_pending *pd)
{
    if (pd == NULL) {
        return;
    }
    (void)pthread_cond_destroy(&pd->cv);
    (void)pthread_mutex_destroy(&pd->mu);
    free(pd->queue);
    free(pd);
}

// srv_pending_push queues row |id| (this node accepted it under load) and wakes the drain.
static void srv_pending_push(srv_pending *pd, int64_t id)
{
    (void)pthread_mutex_lock(&pd->mu);
    if (pd->num < pd->cap) {
        pd->queue[(pd->head + pd->num) % pd->cap] = id;
        pd->num++;
    }
    // (A full ring cannot happen: it holds at most the places taken. Were it to, the row would
    // still be found by the drain's look in the store.)
    (void)pthread_cond_signal(&pd->cv);
    (void)pthread_mutex_unlock(&pd->mu);
}

// srv_pending_pop takes up to |max| ids from the queue, oldest first, and gives their places
// back.
static size_t srv_pending_pop(srv_pending *pd, int64_t *ids, size_t max)
{
    (void)pthread_mutex_lock(&pd->mu);
    size_t n = 0;
    while (n < max && pd->num > 0) {
        ids[n++] = pd->queue[pd->head];
        pd->head = (pd->head + 1) % pd->cap;
        pd->num--;
    }
    (void)pthread_mutex_unlock(&pd->mu);
    if (n > 0) {
        (void)__atomic_fetch_sub(&pd->waiting, (uint64_t)n, __ATOMIC_RELAXED);
    }
    return n;
}

void srv_engine_pending_stats(const srv_engine *e, srv_pending_stats *out)
{
    srv_pending *pd = e->pend;
    memset(out, 0, sizeof(*out));
    out->waiting = srv_ld(&pd->waiting);
    out->accepted = srv_ld(&pd->accepted);
    out->refused = srv_ld(&pd->refused);
    out->drained = srv_ld(&pd->drained);
    out->polls = srv_ld(&pd->polls);
    out->delivered = srv_ld(&pd->delivered);
    out->max_hsm_queue = __atomic_load_n(&pd->max_hsm_queue, __ATOMIC_RELAXED);
    out->commit_us = __atomic_load_n(&pd->commit_us, __ATOMIC_RELAXED);
    out->hsm_rate = srv_ld(&pd->hsm_rate_milli) / 1000u;
}

// --- the decision ---------------------------------------------------------------------------

cm_result srv_pending_decide(srv_request *req, srv_wait *out)
{
    *out = SRV_WAIT_NONE;
    srv_engine *e = req->w->e;
    srv_pending *pd = e->pend;
    if (req->policy.manual_approval) {
        *out = SRV_WAIT_APPROVAL;
        return cm_result_make(CM_OK);
    }
    const uint32_t bound = __atomic_load_n(&pd->max_hsm_queue, __ATOMIC_RELAXED);
    const uint32_t commit_us = __atomic_load_n(&pd->commit_us, __ATOMIC_RELAXED);
    const bool store_slow = commit_us > e->p.max_commit_latency * 1000u;
    const bool hsm_busy = bound != UINT32_MAX && hsm_pool_depth(e->p.hsm) > bound;
    if (!hsm_busy && !store_slow) {
        return cm_result_make(CM_OK);
    }
    uint64_t n = srv_ld(&pd->waiting);
    do {
        if (n >= e->p.max_pending) {
            srv_add(&pd->refused, 1);
            cm_why_set(&req->why,
                       "the CA is overloaded (%s) and %llu requests wait already (max_pending); "
                       "try again later",
                       hsm_busy ? "its HSM queue is full" : "its store commits slowly",
                       (unsigned long long)n);
            CM_BAIL(SRV_E_PENDING_FULL);
        }
    } while (!__atomic_compare_exchange_n(&pd->waiting, &n, n + 1, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    req->wait_place = true;
    *out = SRV_WAIT_LOAD;
    return cm_result_make(CM_OK);
}

void srv_pending_cancel(srv_request *req)
{
    if (req->wait_place) {
        req->wait_place = false;
        (void)__atomic_fetch_sub(&req->w->e->pend->waiting, 1, __ATOMIC_RELAXED);
    }
}

int64_t srv_pending_check_after(const srv_engine *e, store_pending_why why)
{
    if (why == STORE_PENDING_WHY_APPROVAL) {
        return e->p.approval_check_after;
    }
    srv_pending *pd = e->pend;
    uint64_t rate = srv_ld(&pd->drain_rate_milli);
    if (rate == 0) {
        rate = srv_ld(&pd->hsm_rate_milli);
    }
    const uint64_t waiting = srv_ld(&pd->waiting);
    // The queue drains at |rate| (per 1000 s); a second at least, ten minutes at most.
    uint64_t s = rate == 0 ? 1 : (waiting * 1000u + rate - 1) / rate;
    s = s < 1 ? 1 : (s > 600 ? 600 : s);
    return (int64_t)s;
}

// --- accepting a waiting request ------------------------------------------------------------

const char *srv_pending_key_text(char *buf, size_t cap, cm_span spki)
{
    ca_key_info k;
    if (!cm_ok(ca_spki_parse(&k, spki))) {
        (void)snprintf(buf, cap, "unknown");
        return buf;
    }
    switch (k.type) {
    case CA_KEY_EC_P256:
    case CA_KEY_EC_P384:
    case CA_KEY_EC_P521:
        (void)snprintf(buf, cap, "EC P-%u", k.bits);
        break;
    case CA_KEY_RSA:
        (void)snprintf(buf, cap, "RSA %u", k.bits);
        break;
    case CA_KEY_ED25519:
        (void)snprintf(buf, cap, "Ed25519");
        break;
    default:
        (void)snprintf(buf, cap, "Ed448");
        break;
    }
    return buf;
}

// srv_pending_text copies |name| as RFC 4514 text into the request's arena ("" when unreadable).
static const char *srv_pending_text(srv_request *req, cm_span name)
{
    const size_t cap = name.len * 6 + 16;
    char *out = cm_arena_alloc(&req->arena, cap);
    if (out == NULL) {
        return "";
    }
    (void)ca_name_to_text(out, cap, name);
    return out;
}

// srv_pending_requester says who asked, for the listing: the MAC credential, the RA or the
// signer.
static const char *srv_pending_requester(srv_request *req)
{
    char *out = cm_arena_alloc(&req->arena, 300);
    if (out == NULL) {
        return "";
    }
    char kid[80], sn[48];
    if (req->mac_ok) {
        (void)snprintf(out, 300, "senderKID %s",
                       srv_bytes_text(kid, req->msg.header.f.sender_kid.v));
    } else if (req->sig_ok) {
        char name[200];
        (void)ca_name_to_text(name, sizeof(name), req->signer.subject);
        (void)snprintf(out, 300, "%s%s (serial %s)", req->signer_is_ra ? "RA " : "", name,
                       srv_serial_text(sn, req->signer.serial));
    } else {
        (void)snprintf(out, 300, "unknown");
    }
    return out;
}

void srv_pending_fill(srv_request *req, store_job *j, const store_reservation *rsv)
{
    req->rsv = *rsv;
    store_job_init(j, STORE_OP_PENDING_ADD, req->w->cq);
    store_pending *p = &j->u.pend;
    const srv_params *ep = &req->w->e->p;
    p->ca = req->ca->name;
    p->transaction_id = req->msg.header.f.transaction_id.v;
    p->body_type = (uint32_t)req->msg.body.type;
    p->cert_req_id = req->cert_req_id;
    p->why = req->wait == SRV_WAIT_APPROVAL ? STORE_PENDING_WHY_APPROVAL : STORE_PENDING_WHY_LOAD;
    p->state = req->wait == SRV_WAIT_APPROVAL ? STORE_PENDING_APPROVAL : STORE_PENDING_QUEUED;
    p->profile = req->profile_name;
    p->subject = srv_pending_text(req, req->creq.subject);
    char *kt = cm_arena_alloc(&req->arena, 32);
    p->key_type = kt != NULL ? srv_pending_key_text(kt, 32, req->creq.spki) : "unknown";
    p->requester = srv_pending_requester(req);
    p->created_at = req->now;
    p->expires_at = req->now + ep->waiting_timeout;
    p->tbs = req->tbs;
    p->serial = req->serial_content;
    p->flags =
        (req->implicit ? SRV_PEND_FLAG_IMPLICIT : 0u) |
        (req->replaces.len != 0 && req->policy.revoke_on_update ? SRV_PEND_FLAG_REVOKE_REPLACED
                                                                : 0u);
    p->replaces = req->replaces;
    p->fail_info = -1;
    if (req->dec.mods != 0) {
        char mods[360];
        char *text = cm_arena_alloc(&req->arena, 400);
        if (text != NULL) {
            (void)snprintf(text, 400, "granted with changes: %s",
                           ca_decision_mods_text(mods, sizeof(mods), req->profile, &req->dec));
            p->status_text = text;
        }
    }
    p->rsv = &req->rsv;
    // What certConf must match, as for an enrolment answered at once (srv_enrol_check.c).
    store_txn t;
    memset(&t, 0, sizeof(t));
    t.protection = rsv->protection;
    srv_enrol_txn_note(req, &t);
    p->txn_flags = t.flags;
    p->request_nonce = t.request_nonce;
    p->signer_cert = t.signer_cert;
}

// srv_pending_free_text marshals |text| as a PKIFreeText into the request's arena (empty when
// there is no room).
static cm_span srv_pending_free_text(srv_request *req, const char *text)
{
    const cm_span t = cm_span_make(text, strlen(text));
    der_builder b;
    der_builder_init_arena(&b, &req->arena, t.len + 16);
    cmp_free_text_marshal(&b, &t, 1);
    cm_span out;
    return cm_ok(der_builder_finish(&b, &out)) ? out : cm_span_make(NULL, 0);
}

void srv_pending_accepted(srv_request *req)
{
    srv_engine *e = req->w->e;
    srv_pending *pd = e->pend;
    const int64_t id = (int64_t)req->sjobs[0].out_value;
    srv_mark(req, SRV_STAGE_BUILD);
    if (req->wait == SRV_WAIT_LOAD) {
        srv_pending_push(pd, id);
        req->wait_place = false; // the queue holds it now
    }
    srv_add(&pd->accepted, 1);
    const store_pending_why why =
        req->wait == SRV_WAIT_APPROVAL ? STORE_PENDING_WHY_APPROVAL : STORE_PENDING_WHY_LOAD;
    const int64_t after = srv_pending_check_after(e, why);
    char text[300];
    if (why == STORE_PENDING_WHY_APPROVAL) {
        (void)snprintf(text, sizeof(text),
                       "waiting: the request (pending %lld) needs the approval of the CA's "
                       "operator (profile %s: approval = manual); poll with pollReq (certReqId "
                       "%lld), first after %lld s",
                       (long long)id, req->profile_name != NULL ? req->profile_name : "default",
                       (long long)req->cert_req_id, (long long)after);
    } else {
        (void)snprintf(text, sizeof(text),
                       "waiting: the CA is busy and queued the request (pending %lld); poll with "
                       "pollReq (certReqId %lld), first after %lld s",
                       (long long)id, (long long)req->cert_req_id, (long long)after);
    }
    cm_log(CM_LOG_DEBUG, "srv: [ca:%s] request %lld waits (%s)", req->ca->name, (long long)id,
           why == STORE_PENDING_WHY_APPROVAL ? "approval" : "load");
    cmp_cert_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.cert_req_id = req->cert_req_id;
    resp.status.status = CMP_STATUS_WAITING;
    resp.status.status_string = srv_pending_free_text(req, text);
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = req->resp_type;
    body.u.rep.responses = &resp;
    body.u.rep.num_responses = 1;
    req->implicit = false; // granted with the certificate, when it is delivered
    srv_respond(req, &body);
}

// --- the drain ------------------------------------------------------------------------------

// srv_drain is one drain's working set: its worker (a store reader, digests), the queue its
// HSM jobs complete to, and the pass's arrays. Thread: the drain's.
typedef struct srv_drain {
    srv_engine *e;
    cm_cq cq;
    srv_worker *w;
    cm_arena arena; // reset per pass
    int64_t ids[SRV_PEND_BATCH];
    store_job claims[SRV_PEND_BATCH];
    store_job records[SRV_PEND_BATCH];
    store_pending rows[SRV_PEND_BATCH];
    store_txn txns[SRV_PEND_BATCH];
    const srv_ca *cas[SRV_PEND_BATCH];
    cm_result errs[SRV_PEND_BATCH];
    store_cert certs[SRV_PEND_BATCH];
    hsm_job hjobs[SRV_PEND_BATCH];
    uint8_t sigs[SRV_PEND_BATCH][HSM_MAX_SIG_LEN];
    char reasons[SRV_PEND_BATCH][200];
    // The measurements (srv_drain_sample).
    bool sampled;
    uint64_t s_ns, s_signed, s_commits, s_commit_ns, s_drained;
    size_t s_depth;
} srv_drain;

static void srv_drain_free(srv_drain *d)
{
    if (d == NULL) {
        return;
    }
    srv_worker_free(d->w);
    cm_cq_cleanup(&d->cq);
    cm_arena_cleanup(&d->arena);
    free(d);
}

static cm_result srv_drain_new(srv_drain **out, srv_engine *e)
{
    srv_drain *d = calloc(1, sizeof(*d));
    CM_ENSURE(d != NULL, CM_E_NOMEM);
    d->e = e;
    d->cq.efd = -1;
    cm_arena_init(&d->arena, 16384, 0);
    cm_result r = cm_cq_init(&d->cq);
    if (cm_ok(r)) {
        r = srv_worker_new(&d->w, e, &d->cq);
    }
    if (!cm_ok(r)) {
        srv_drain_free(d);
        return r;
    }
    *out = d;
    return cm_result_make(CM_OK);
}

// srv_drain_seen reports whether |id| is among the first |n| of |ids|.
static bool srv_drain_seen(const int64_t *ids, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

typedef struct srv_drain_scan_ctx {
    srv_drain *d;
    size_t n, max;
    int64_t stale_before;
} srv_drain_scan_ctx;

static bool srv_drain_scan_one(void *ctx, const store_pending *p)
{
    srv_drain_scan_ctx *c = ctx;
    if (p->state == STORE_PENDING_SIGNING && p->claimed_at >= c->stale_before) {
        return true; // another drain is at it
    }
    if (!srv_drain_seen(c->d->ids, c->n, p->id)) {
        c->d->ids[c->n++] = p->id;
    }
    return c->n < c->max;
}

// srv_drain_scan adds to d->ids (|n| there already, up to |max|) what waits in the store for any
// node: approved requests, queued ones, stale claims.
static size_t srv_drain_scan(srv_drain *d, int64_t now, size_t n, size_t max)
{
    srv_drain_scan_ctx c = {.d = d, .n = n, .max = max, .stale_before = now - SRV_PEND_STALE_S};
    const store_pending_filter f = {.states = (1u << STORE_PENDING_QUEUED) |
                                              (1u << STORE_PENDING_APPROVED) |
                                              (1u << STORE_PENDING_SIGNING),
                                    .limit = (uint32_t)(max * 2)};
    const cm_result r = store_pending_list(d->w->reader, &f, srv_drain_scan_one, &c);
    if (!cm_ok(r)) {
        cm_log_ratelimited("srv.pending.scan", 10000, CM_LOG_WARN,
                           "srv: cannot look for waiting requests in the store: %s",
                           cm_result_name(r));
    }
    return c.n;
}

// srv_drain_validity reads Validity ::= SEQUENCE { notBefore Time, notAfter Time }.
static cm_result srv_drain_validity(cm_span validity, int64_t *out_nb, int64_t *out_na)
{
    der_reader rd, seq;
    der_reader_init(&rd, validity);
    CM_TRY(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_time(&seq, out_nb));
    CM_TRY(der_get_time(&seq, out_na));
    return der_expect_end(&seq);
}

// srv_drain_record makes d->records[i] the record of row i, whose signature is back: the
// certificate assembled and recorded (PENDING_ISSUE), or, when anything failed, the row
// rejected with the reason.
static void srv_drain_record(srv_drain *d, size_t i, int64_t now)
{
    const srv_params *p = &d->e->p;
    const store_pending *row = &d->rows[i];
    store_job *j = &d->records[i];
    cm_result r = d->errs[i];
    const srv_ca *ca = d->cas[i];
    cm_span cert = cm_span_make(NULL, 0);
    if (cm_ok(r) && !cm_ok(d->hjobs[i].result)) {
        cm_why why;
        cm_why_clear(&why);
        hsm_job_why(&d->hjobs[i], &why);
        (void)snprintf(d->reasons[i], sizeof(d->reasons[i]), "%s", why.text);
        r = cm_result_make(SRV_E_INTERNAL);
    }
    if (cm_ok(r)) {
        der_builder alg, cb;
        der_builder_init_arena(&alg, &d->arena, 64);
        hsm_sig_alg_marshal(&alg, ca->ca_sig_alg);
        cm_span alg_der;
        r = der_builder_finish(&alg, &alg_der);
        der_builder_init_arena(&cb, &d->arena, row->tbs.len + 256);
        if (cm_ok(r)) {
            r = ca_signed_assemble(&cb, row->tbs, alg_der,
                                   cm_span_make(d->sigs[i], d->hjobs[i].sig_len));
        }
        if (cm_ok(r)) {
            r = der_builder_finish(&cb, &cert);
        }
        if (!cm_ok(r)) {
            (void)snprintf(d->reasons[i], sizeof(d->reasons[i]),
                           "the signed certificate could not be assembled (%s)", cm_result_name(r));
        }
    }
    ca_cert_fields f;
    store_cert *c = &d->certs[i];
    memset(c, 0, sizeof(*c));
    uint8_t *hash = cm_ok(r) ? cm_arena_alloc(&d->arena, 32) : NULL;
    if (cm_ok(r)) {
        r = ca_cert_fields_parse(&f, cert);
    }
    if (cm_ok(r)) {
        r = srv_drain_validity(f.validity, &c->not_before, &c->not_after);
    }
    if (cm_ok(r) && (hash == NULL ||
                     EVP_Digest(f.spki.p, f.spki.len, hash, NULL, d->w->dig.sha256, NULL) != 1)) {
        r = cm_result_make(SRV_E_INTERNAL);
    }
    if (!cm_ok(r)) {
        if (d->reasons[i][0] == '\0') {
            (void)snprintf(d->reasons[i], sizeof(d->reasons[i]),
                           "the waiting request could not be completed (%s)", cm_result_name(r));
        }
        cm_log(CM_LOG_WARN, "srv: pending %lld: %s", (long long)row->id, d->reasons[i]);
        store_job_init(j, STORE_OP_PENDING_DECIDE, NULL);
        j->u.pop = (store_pending_op){.id = row->id,
                                      .time = now,
                                      .fail_info = (int)cm_code_failinfo(r.code),
                                      .status_text = d->reasons[i],
                                      .keep_s = p->waiting_timeout};
        return;
    }
    const bool implicit = (row->flags & SRV_PEND_FLAG_IMPLICIT) != 0;
    const int64_t wait = p->confirm_wait_time > 0 ? p->confirm_wait_time : 300;
    const int64_t win = p->message_time_window > 0 ? p->message_time_window : 300;
    const size_t text_cap = f.subject.len * 6 + 16;
    char *text = cm_arena_alloc(&d->arena, text_cap);
    if (text != NULL) {
        (void)ca_name_to_text(text, text_cap, f.subject);
    }
    *c = (store_cert){.ca = ca->name,
                      .serial = f.serial,
                      .subject_der = f.subject,
                      .subject_text = text != NULL ? text : "",
                      .not_before = c->not_before,
                      .not_after = c->not_after,
                      .spki_sha256 = cm_span_make(hash, 32),
                      .status = implicit ? STORE_CERT_VALID : STORE_CERT_UNCONFIRMED,
                      .transaction_id = row->transaction_id,
                      .requester_kind = d->txns[i].protection,
                      .requester = d->txns[i].credential,
                      .cert_der = cert,
                      .issued_at = now,
                      // Until it is delivered; a delivery sets now + confirm_wait_time.
                      .confirm_deadline = implicit ? 0 : row->expires_at + wait,
                      .replaces = row->replaces,
                      .revoke_replaced = (row->flags & SRV_PEND_FLAG_REVOKE_REPLACED) != 0};
    store_job_init(j, STORE_OP_PENDING_ISSUE, NULL);
    j->u.pop = (store_pending_op){.id = row->id,
                                  .time = now,
                                  .cert = c,
                                  .txn_state = implicit ? SRV_TXN_IMPLICIT : SRV_TXN_WAIT_CONF,
                                  .txn_expires_at = row->expires_at + wait + win};
}

// srv_drain_claim claims d->ids[0 .. n) in one store batch and reads each claimed row, its
// transaction and its CA into d->rows, d->txns, d->cas (compacted); returns how many.
static size_t srv_drain_claim(srv_drain *d, int64_t now, size_t n)
{
    store_job *jobs[SRV_PEND_BATCH];
    for (size_t i = 0; i < n; i++) {
        store_job_init(&d->claims[i], STORE_OP_PENDING_CLAIM, NULL);
        d->claims[i].u.pop = (store_pending_op){
            .id = d->ids[i], .time = now, .stale_before = now - SRV_PEND_STALE_S};
        jobs[i] = &d->claims[i];
    }
    const cm_result rb = store_run_batch(d->e->p.store, jobs, n);
    (void)rb; // each job has its own result
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cm_ok(d->claims[i].result)) {
            continue; // decided, expired or taken by another drain meanwhile
        }
        store_pending *row = &d->rows[k];
        cm_result r = store_pending_get_id(d->w->reader, &d->arena, row, d->ids[i]);
        if (!cm_ok(r)) {
            // Left as claimed: taken again once the claim is stale.
            cm_log_ratelimited("srv.pending.read", 10000, CM_LOG_WARN,
                               "srv: pending %lld claimed but unreadable: %s", (long long)d->ids[i],
                               cm_result_name(r));
            continue;
        }
        d->reasons[k][0] = '\0';
        d->errs[k] = cm_result_make(CM_OK);
        d->cas[k] = srv_engine_find_ca(d->e, cm_span_make(row->ca, strlen(row->ca)));
        if (d->cas[k] == NULL) {
            (void)snprintf(d->reasons[k], sizeof(d->reasons[k]),
                           "the CA %s is no longer configured on this node", row->ca);
            d->errs[k] = cm_result_make(SRV_E_INTERNAL);
        } else {
            r = store_txn_get(d->w->reader, &d->arena, &d->txns[k], row->ca, row->transaction_id);
            if (!cm_ok(r)) {
                (void)snprintf(d->reasons[k], sizeof(d->reasons[k]),
                               "the request's transaction is gone (%s)", cm_result_name(r));
                d->errs[k] = cm_result_make(SRV_E_WAIT_EXPIRED);
            }
        }
        k++;
    }
    return k;
}

// srv_drain_sign signs the TBSCertificates of the |k| claimed rows without an error in one HSM
// submission and waits for every signature.
static void srv_drain_sign(srv_drain *d, size_t k)
{
    hsm_job *jobs[SRV_PEND_BATCH];
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        hsm_job_init(&d->hjobs[i], &d->cq, d->cas[i] != NULL ? d->cas[i]->ca_key : NULL,
                     d->cas[i] != NULL ? d->cas[i]->ca_sig_alg : HSM_SIG_NONE, d->rows[i].tbs,
                     d->sigs[i], sizeof(d->sigs[i]));
        d->hjobs[i].result = cm_result_make(CM_OK);
        if (cm_ok(d->errs[i])) {
            jobs[m++] = &d->hjobs[i];
        }
    }
    if (m == 0) {
        return;
    }
    const cm_result r = hsm_pool_submit(d->e->p.hsm, jobs, m);
    if (!cm_ok(r)) {
        for (size_t i = 0; i < m; i++) {
            jobs[i]->result = r;
        }
        return;
    }
    size_t back = 0;
    while (back < m) {
        (void)cm_cq_wait(&d->cq, 1000);
        for (cm_cq_node *node = cm_cq_drain(&d->cq); node != NULL; node = node->next) {
            back++;
        }
    }
}

// srv_drain_pass is one pass: claim, sign, record up to |max| waiting requests.
static cm_result srv_drain_pass(srv_drain *d, int64_t now, size_t max, bool scan, size_t *out_done)
{
    *out_done = 0;
    max = max > SRV_PEND_BATCH ? SRV_PEND_BATCH : max;
    size_t n = srv_pending_pop(d->e->pend, d->ids, max);
    if (scan && n < max) {
        n = srv_drain_scan(d, now, n, max);
    }
    if (n == 0) {
        return cm_result_make(CM_OK);
    }
    cm_arena_reset(&d->arena);
    const size_t k = srv_drain_claim(d, now, n);
    if (k == 0) {
        return cm_result_make(CM_OK);
    }
    srv_drain_sign(d, k);
    store_job *jobs[SRV_PEND_BATCH];
    for (size_t i = 0; i < k; i++) {
        srv_drain_record(d, i, now);
        jobs[i] = &d->records[i];
    }
    const cm_result rb = store_run_batch(d->e->p.store, jobs, k);
    (void)rb; // each job has its own result, logged below
    for (size_t i = 0; i < k; i++) {
        if (!cm_ok(d->records[i].result)) {
            cm_log_ratelimited(
                "srv.pending.record", 10000, CM_LOG_WARN,
                "srv: pending %lld: cannot record its %s: %s", (long long)d->rows[i].id,
                d->records[i].op == STORE_OP_PENDING_ISSUE ? "certificate" : "rejection",
                cm_result_name(d->records[i].result));
        }
    }
    srv_add(&d->e->pend->drained, k);
    *out_done = k;
    return cm_result_make(CM_OK);
}

cm_result srv_engine_drain(srv_engine *e, int64_t now, size_t max, size_t *out_done)
{
    *out_done = 0;
    srv_drain *d = NULL;
    CM_TRY(srv_drain_new(&d, e));
    size_t done = 0;
    cm_result r = cm_result_make(CM_OK);
    while (cm_ok(r) && *out_done < max) {
        const size_t left = max - *out_done;
        r = srv_drain_pass(d, now, left, true, &done);
        if (done == 0) {
            break;
        }
        *out_done += done;
    }
    srv_drain_free(d);
    return r;
}

// srv_drain_sample measures, over the window since the last call: the pool's signing rate when
// it was busy throughout (jobs waited at both ends: what it can do, not what it was asked),
// which sets max_hsm_queue when it is auto; the store's mean commit time (a window without a
// commit while jobs wait counts as one commit taking the whole window); the drain's rate.
static void srv_drain_sample(srv_drain *d, uint64_t now_ns)
{
    srv_pending *pd = d->e->pend;
    const srv_params *p = &d->e->p;
    hsm_pool_stats hs;
    hsm_pool_get_stats(p->hsm, &hs);
    const uint64_t signed_n = hs.signed_ok + hs.failed;
    const size_t depth = hsm_pool_depth(p->hsm);
    store_stats ss;
    store_get_stats(p->store, &ss);
    const uint64_t drained = srv_ld(&pd->drained);
    if (d->sampled) {
        const uint64_t dt = now_ns - d->s_ns;
        if (dt == 0) {
            return;
        }
        if (d->s_depth > 0 && depth > 0) {
            const uint64_t rate = (signed_n - d->s_signed) * 1000000000000ull / dt;
            const uint64_t est = srv_ld(&pd->hsm_rate_milli);
            __atomic_store_n(&pd->hsm_rate_milli, est == 0 ? rate : (est * 7 + rate * 3) / 10,
                             __ATOMIC_RELAXED);
        }
        const uint64_t est = srv_ld(&pd->hsm_rate_milli);
        uint32_t bound = p->max_hsm_queue;
        if (bound == 0) {
            const uint64_t b = est / 10000u; // what 100 ms drain
            bound = est == 0 ? UINT32_MAX
                             : (uint32_t)(b < SRV_PEND_MIN_BOUND ? SRV_PEND_MIN_BOUND
                                          : b > UINT32_MAX - 1   ? UINT32_MAX - 1
                                                                 : b);
        }
        __atomic_store_n(&pd->max_hsm_queue, bound, __ATOMIC_RELAXED);
        const uint64_t commits = ss.commits - d->s_commits;
        uint64_t commit_ns = commits > 0 ? (ss.commit_ns_total - d->s_commit_ns) / commits : 0;
        if (commits == 0 && ss.queue_depth > 0) {
            commit_ns = dt;
        }
        __atomic_store_n(&pd->commit_us, (uint32_t)(commit_ns / 1000u), __ATOMIC_RELAXED);
        const uint64_t drate = (drained - d->s_drained) * 1000000000000ull / dt;
        const uint64_t dest = srv_ld(&pd->drain_rate_milli);
        if (drate > 0 || srv_ld(&pd->waiting) > 0) {
            __atomic_store_n(&pd->drain_rate_milli, dest == 0 ? drate : (dest * 7 + drate * 3) / 10,
                             __ATOMIC_RELAXED);
        }
    }
    d->sampled = true;
    d->s_ns = now_ns;
    d->s_signed = signed_n;
    d->s_depth = depth;
    d->s_commits = ss.commits;
    d->s_commit_ns = ss.commit_ns_total;
    d->s_drained = drained;
}

static void *srv_drain_main(void *arg)
{
    srv_drain *d = arg;
    srv_pending *pd = d->e->pend;
    (void)pthread_setname_np(pthread_self(), "cm-pending");
    uint64_t last_scan = 0;
    uint64_t last_sample = 0;
    for (;;) {
        (void)pthread_mutex_lock(&pd->mu);
        const bool stop = pd->stop;
        const size_t queued = pd->num;
        (void)pthread_mutex_unlock(&pd->mu);
        if (stop) {
            break;
        }
        const uint64_t now_ns = cm_time_mono_ns();
        if (now_ns - last_sample >= SRV_PEND_SAMPLE_NS) {
            srv_drain_sample(d, now_ns);
            last_sample = now_ns;
        }
        // What the HSM can take now without queueing deeper than its bound.
        const uint32_t bound = __atomic_load_n(&pd->max_hsm_queue, __ATOMIC_RELAXED);
        const size_t depth = hsm_pool_depth(d->e->p.hsm);
        const size_t room = bound == UINT32_MAX ? SRV_PEND_BATCH
                            : depth < bound     ? (size_t)bound - depth
                                                : 0;
        const bool scan = now_ns - last_scan >= SRV_PEND_SCAN_NS;
        size_t done = 0;
        if (room > 0 && (queued > 0 || scan)) {
            (void)srv_drain_pass(d, cm_time_now(), room, scan, &done);
            if (scan) {
                last_scan = now_ns;
            }
        }
        if (done > 0) {
            continue;
        }
        // Nothing to do (or no room): wait for a request to queue, at most 20 ms.
        struct timespec ts;
        (void)clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        (void)pthread_mutex_lock(&pd->mu);
        if (!pd->stop && pd->num == queued) {
            (void)pthread_cond_timedwait(&pd->cv, &pd->mu, &ts);
        }
        (void)pthread_mutex_unlock(&pd->mu);
    }
    srv_drain_free(d);
    return NULL;
}

cm_result srv_engine_start_pending(srv_engine *e)
{
    srv_pending *pd = e->pend;
    CM_ENSURE(!pd->running, CM_E_STATE);
    srv_drain *d = NULL;
    CM_TRY(srv_drain_new(&d, e));
    pd->stop = false;
    if (pthread_create(&pd->thread, NULL, srv_drain_main, d) != 0) {
        srv_drain_free(d);
        CM_BAIL(CM_E_NOMEM);
    }
    pd->running = true;
    return cm_result_make(CM_OK);
}

void srv_engine_stop_pending(srv_engine *e)
{
    srv_pending *pd = e->pend;
    if (pd == NULL || !pd->running) {
        return;
    }
    (void)pthread_mutex_lock(&pd->mu);
    pd->stop = true;
    (void)pthread_cond_signal(&pd->cv);
    (void)pthread_mutex_unlock(&pd->mu);
    (void)pthread_join(pd->thread, NULL);
    pd->running = false;
}
