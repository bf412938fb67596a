// The CMP request state machine (see srv.h): the engine, its workers, the request lifecycle,
// the handler table and the completions that continue a request. One srv_request per message;
// everything derived from the message lives in the request's arena, so error paths simply
// return. What each body type does is in its own file (srv_internal.h lists them).
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/server/srv_internal.h"

// --- engine ---------------------------------------------------------------------------------

// srv_engine_limits starts what srv_params asks of the abuse limits (issue 23): the KDF pool,
// the budgets (the senderKIDs of every CA numbered one after the other) and the cache.
static cm_result srv_engine_limits(srv_engine *e)
{
    const srv_params *p = &e->p;
    if (p->kdf_threads > 0) {
        CM_TRY(srv_kdf_pool_new(&e->kdf, p->kdf_threads,
                                p->kdf_max_queue != 0 ? p->kdf_max_queue : SRV_DEFAULT_KDF_QUEUE));
    }
    if (p->mac_failures_max > 0 || p->error_signatures_per_peer > 0) {
        e->kid_base = calloc(p->num_cas, sizeof(size_t));
        CM_ENSURE(e->kid_base != NULL, CM_E_NOMEM);
        size_t kids = 0;
        for (size_t i = 0; i < p->num_cas; i++) {
            e->kid_base[i] = kids;
            kids += p->cas[i].num_secrets;
        }
        const srv_budget_params bp = {
            .mac_failures_max = p->mac_failures_max,
            .mac_failure_window_ms = (uint64_t)p->mac_failure_window * 1000u,
            .mac_failure_backoff_ms = (uint64_t)p->mac_failure_backoff * 1000u,
            .error_signatures_per_peer = p->error_signatures_per_peer,
        };
        CM_TRY(srv_budget_new(&e->budget, &bp, kids));
    }
    if (p->retransmit_window != 0) {
        CM_ENSURE(p->retransmit_window > 0 || p->retransmit_window == SRV_RETRANSMIT_AUTO,
                  CM_E_INVALID_ARG);
        CM_TRY(srv_resend_new(
            &e->resend,
            p->retransmit_max_entries != 0 ? p->retransmit_max_entries : SRV_RESEND_DEFAULT_ENTRIES,
            p->retransmit_max_bytes != 0 ? p->retransmit_max_bytes : SRV_RESEND_DEFAULT_BYTES));
    }
    return cm_result_make(CM_OK);
}

cm_result srv_engine_new(srv_engine **out, const srv_params *p)
{
    CM_ENSURE(p->hsm != NULL && p->store != NULL && p->prot != NULL && p->num_cas >= 1,
              CM_E_INVALID_ARG);
    srv_engine *e = calloc(1, sizeof(*e));
    CM_ENSURE(e != NULL, CM_E_NOMEM);
    e->p = *p;
    if (e->p.arena_cap == 0) {
        e->p.arena_cap = SRV_DEFAULT_ARENA_CAP;
    }
    if (e->p.free_requests == 0) {
        e->p.free_requests = SRV_DEFAULT_FREE_REQUESTS;
    }
    // Delayed delivery (srv_pending.c).
    if (e->p.waiting_timeout <= 0) {
        e->p.waiting_timeout = 86400;
    }
    if (e->p.max_commit_latency == 0) {
        e->p.max_commit_latency = 250;
    }
    if (e->p.max_pending == 0) {
        e->p.max_pending = 10000;
    }
    if (e->p.approval_check_after <= 0) {
        e->p.approval_check_after = 60;
    }
    if (e->p.max_nested_messages == 0) {
        e->p.max_nested_messages = CMP_MAX_NESTED;
    }
    if (e->p.max_nested_messages > CMP_MAX_NESTED_LIMIT) {
        e->p.max_nested_messages = CMP_MAX_NESTED_LIMIT;
    }
    if (e->p.max_nested_depth > CMP_MAX_NESTING_LIMIT) {
        e->p.max_nested_depth = CMP_MAX_NESTING_LIMIT;
    }
    // srv_engine_free frees what was made when one of these fails.
    cm_result r = srv_engine_limits(e);
    if (cm_ok(r)) {
        r = srv_pending_new(&e->pend, &e->p);
    }
    if (cm_ok(r) && e->p.max_nested_depth > 0 && e->p.nested_threads > 0) {
        r = srv_pool_new(&e->pool, e, e->p.nested_threads);
    }
    if (!cm_ok(r)) {
        srv_engine_free(e);
        return r;
    }
    *out = e;
    return cm_result_make(CM_OK);
}

void srv_engine_free(srv_engine *e)
{
    if (e == NULL) {
        return;
    }
    srv_engine_stop_pending(e);
    srv_pool_free(e->pool);
    srv_pending_free(e->pend);
    srv_kdf_pool_free(e->kdf);
    srv_budget_free(e->budget);
    srv_resend_free(e->resend);
    free(e->kid_base);
    free(e);
}

void srv_engine_get_stats(srv_engine *e, srv_engine_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (e->kdf != NULL) {
        out->kdf_done = srv_kdf_pool_done(e->kdf);
        out->kdf_queued = srv_kdf_pool_depth(e->kdf);
    }
    out->kdf_refused = __atomic_load_n(&e->n_kdf_refused, __ATOMIC_RELAXED);
    out->kdf_inline = __atomic_load_n(&e->n_kdf_inline, __ATOMIC_RELAXED);
    if (e->budget != NULL) {
        srv_budget_stats bs;
        srv_budget_get_stats(e->budget, &bs);
        out->mac_backoff_kid = bs.refused_kid;
        out->mac_backoff_peer = bs.refused_peer;
        out->error_signed = bs.error_signed;
        out->error_unprotected = bs.error_unprotected;
    }
    if (e->resend != NULL) {
        srv_resend_stats rs;
        srv_resend_get_stats(e->resend, &rs);
        out->resend_hits = rs.hits;
        out->resend_stored = rs.stored;
        out->resend_evicted = rs.evicted;
        out->resend_entries = rs.entries;
        out->resend_bytes = rs.bytes;
    }
}

const srv_ca *srv_engine_find_ca(const srv_engine *e, cm_span name)
{
    if (name.len == 0) {
        return &e->p.cas[0];
    }
    for (size_t i = 0; i < e->p.num_cas; i++) {
        const char *n = e->p.cas[i].name;
        if (strlen(n) == name.len && memcmp(n, name.p, name.len) == 0) {
            return &e->p.cas[i];
        }
    }
    return NULL;
}

cm_result srv_engine_maintain(srv_engine *e, int64_t now, uint64_t *out_revoked)
{
    store_job sweep, expire, waited;
    store_job_init(&sweep, STORE_OP_SWEEP, NULL);
    sweep.u.ref.time = now;
    sweep.u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    store_job_init(&expire, STORE_OP_TXN_EXPIRE, NULL);
    expire.u.ref.time = now;
    // Requests that waited too long are answered with a rejection (delayed delivery); the
    // rejection is kept for another waiting_timeout for the pollReq that collects it.
    char why[160];
    (void)snprintf(why, sizeof(why),
                   "the request waited longer than waiting_timeout (%lld s) without being "
                   "completed",
                   (long long)e->p.waiting_timeout);
    store_job_init(&waited, STORE_OP_PENDING_EXPIRE, NULL);
    waited.u.pop = (store_pending_op){.time = now,
                                      .fail_info = (int)cm_code_failinfo(SRV_E_WAIT_EXPIRED),
                                      .status_text = why,
                                      .keep_s = e->p.waiting_timeout};
    CM_TRY(store_run(e->p.store, &waited));
    CM_TRY(store_run(e->p.store, &sweep));
    CM_TRY(store_run(e->p.store, &expire));
    if (waited.out_value > 0) {
        cm_log(CM_LOG_DEBUG, "srv: %llu waiting request(s) expired or were forgotten",
               (unsigned long long)waited.out_value);
    }
    *out_revoked = sweep.out_value;
    return cm_result_make(CM_OK);
}

// --- workers --------------------------------------------------------------------------------

cm_result srv_worker_new(srv_worker **out, srv_engine *e, cm_cq *cq)
{
    srv_worker *w = calloc(1, sizeof(*w));
    CM_ENSURE(w != NULL, CM_E_NOMEM);
    w->e = e;
    w->cq = cq;
    w->max_free = e->p.free_requests;
    cm_result r = crmf_crypto_init(&w->crypto, NULL, NULL);
    if (cm_ok(r)) {
        crmf_crypto_set_policies(&w->crypto, e->p.prot_algs, e->p.pop_algs);
        r = cmp_digests_init(&w->dig);
    }
    if (cm_ok(r)) {
        r = store_reader_open(e->p.store, &w->reader);
    }
    if (cm_ok(r) && e->p.hsm != NULL && cq != NULL) {
        // NULL unless the pool signs inline; a worker without a cq (cm-verify) never signs.
        r = hsm_lane_new(&w->lane, e->p.hsm);
    }
    if (!cm_ok(r)) {
        srv_worker_free(w);
        return r;
    }
    *out = w;
    return cm_result_make(CM_OK);
}

void srv_worker_set_busy(srv_worker *w, bool (*busy)(void *arg), void *arg)
{
    w->busy = busy;
    w->busy_arg = arg;
}

void srv_worker_free(srv_worker *w)
{
    if (w == NULL) {
        return;
    }
    // Inner requests the verification threads hold come back into |w->cq| soon (they only
    // compute and read): wait, so that no thread pushes into a queue that is gone.
    while (__atomic_load_n(&w->tasks_out, __ATOMIC_ACQUIRE) != 0) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
        (void)nanosleep(&ts, NULL);
    }
    // Requests still out may only be freed from now on; they go back to the heap.
    for (srv_request *req = w->live; req != NULL;) {
        srv_request *next = req->next;
        req->w = NULL;
        req->prev = req->next = NULL;
        req = next;
    }
    for (srv_request *req = w->free_list; req != NULL;) {
        srv_request *next = req->next;
        cm_arena_cleanup(&req->arena);
        free(req);
        req = next;
    }
    if (w->reader != NULL) {
        store_reader_close(w->reader);
    }
    hsm_lane_free(w->lane);
    cmp_digests_cleanup(&w->dig);
    crmf_crypto_cleanup(&w->crypto);
    free(w);
}

size_t srv_worker_num_free(const srv_worker *w)
{
    return w->num_free;
}

void srv_worker_get_stats(const srv_worker *w, srv_worker_stats *out)
{
    *out = w->stats;
}

// --- requests -------------------------------------------------------------------------------

srv_request *srv_request_new(srv_worker *w, void *user)
{
    srv_request *req = w->free_list;
    if (req != NULL) {
        // Zeroed by srv_request_free, its arena reset to its first block.
        w->free_list = req->next;
        w->num_free--;
        req->next = NULL;
    } else {
        req = calloc(1, sizeof(*req));
        if (req == NULL) {
            return NULL;
        }
        cm_arena_init(&req->arena, SRV_ARENA_BLOCK, w->e->p.arena_cap);
    }
    req->w = w;
    req->user = user;
    req->body_type = -1;
    req->fail_bit = -1;
    req->next = w->live;
    if (w->live != NULL) {
        w->live->prev = req;
    }
    w->live = req;
    return req;
}

void srv_request_free(srv_request *req)
{
    if (req == NULL) {
        return;
    }
    if (req->nest != NULL) {
        srv_nested_free_children(req); // the inner requests of a nested message go first
    }
    srv_worker *w = req->w;
    if (w != NULL) {
        if (req->prev != NULL) {
            req->prev->next = req->next;
        } else {
            w->live = req->next;
        }
        if (req->next != NULL) {
            req->next->prev = req->prev;
        }
    }
    cmp_mac_key_cleanse(&req->mac_key);
    srv_ckg_cleanup(req); // a centrally generated key still held (srv_ckg.c)
    if (w == NULL || w->num_free >= w->max_free) {
        cm_arena_cleanup(&req->arena);
        free(req);
        return;
    }
    // Recycle: everything but the arena's first block is released and the rest of the
    // request zeroed, so the next request starts exactly as a calloc'ed one would.
    cm_arena arena = req->arena;
    cm_arena_reset(&arena);
    memset(req, 0, sizeof(*req));
    req->arena = arena;
    req->next = w->free_list;
    w->free_list = req;
    w->num_free++;
}

void *srv_request_user(const srv_request *req)
{
    return req->user;
}

cm_arena *srv_request_arena(srv_request *req)
{
    return &req->arena;
}

void srv_request_set_user(srv_request *req, void *user)
{
    req->user = user;
}

void srv_request_set_peer(srv_request *req, const uint8_t *key)
{
    memcpy(req->peer, key, SRV_PEER_KEY_LEN);
}

void srv_request_set_tls_peer(srv_request *req, cm_span cert_der)
{
    req->tls_peer = cert_der;
}

cm_span srv_request_tls_peer(const srv_request *req)
{
    return req->tls_peer;
}

uint8_t *srv_request_body(srv_request *req, size_t len)
{
    return cm_arena_alloc(&req->arena, len);
}

cm_span srv_request_response(const srv_request *req)
{
    return req->response;
}

void srv_request_summary(const srv_request *req, srv_summary *out)
{
    out->body_type = req->body_type;
    out->fail_bit = req->fail_bit;
    out->prot_kind = req->prot_known ? (int)req->prot_kind : -1;
    out->mac_failed = req->mac_failed;
    out->error = req->error;
    out->reason = req->fail_bit >= 0 ? req->why.text : "";
    out->resent = req->resent;
    uint64_t prev = req->mark[0];
    for (int i = 0; i < SRV_STAGE_COUNT; i++) {
        const uint64_t end = req->mark[i + 1];
        out->stage_ns[i] = end != 0 && prev != 0 && end >= prev ? end - prev : 0;
        if (end != 0) {
            prev = end;
        }
    }
}

// --- the handler table ----------------------------------------------------------------------

void srv_refuse_start(srv_request *req)
{
    // Authenticate first, so the error can carry the request's MAC.
    cm_result r = srv_authenticate(req, req->ca->client_trust, req->ca->own_trust);
    if (cm_ok(r)) {
        const srv_handler *h = srv_handler_get((int)req->msg.body.type);
        cm_why_set(&req->why, "this CA does not accept %s messages", h != NULL ? h->name : "such");
        r = cm_result_make(SRV_E_BODY);
    }
    srv_fail(req, r);
}

// One row per PKIBody type (RFC 9810 §5.1.2), indexed by cmp_body_type: what runs when the
// message arrives (start), when the certificate's signature is back (after_sign), when its
// records committed (after_store) and when one of them failed (store_failed).
//
// A new body type (pollReq, ccr ...) is one new file and one row: srv_TYPE.c with its handler
// functions (declared in srv_internal.h), and its row here in place of SRV_REFUSE. The inner
// messages of a nested message come through this table too, each as a request of its own.
#define SRV_REFUSE(n)                          \
    {                                          \
        .name = (n), .start = srv_refuse_start \
    }
#define SRV_ENROL(n)                                                                 \
    {                                                                                \
        .name = (n), .opens_transaction = true, .start = srv_enrol_start,            \
        .after_sign = srv_enrol_record, .after_store = srv_enrol_respond,            \
        .store_failed = srv_enrol_store_failed, .sign_failed = srv_enrol_sign_failed \
    }

static const srv_handler k_srv_handlers[SRV_NUM_BODY_TYPES] = {
    [CMP_BODY_IR] = SRV_ENROL("ir"),
    [CMP_BODY_IP] = SRV_REFUSE("ip"),
    [CMP_BODY_CR] = SRV_ENROL("cr"),
    [CMP_BODY_CP] = SRV_REFUSE("cp"),
    [CMP_BODY_P10CR] = SRV_ENROL("p10cr"),
    [CMP_BODY_POPDECC] = SRV_REFUSE("popdecc"),
    [CMP_BODY_POPDECR] = SRV_REFUSE("popdecr"),
    [CMP_BODY_KUR] = SRV_ENROL("kur"),
    [CMP_BODY_KUP] = SRV_REFUSE("kup"),
    [CMP_BODY_KRR] = SRV_REFUSE("krr"),
    [CMP_BODY_KRP] = SRV_REFUSE("krp"),
    [CMP_BODY_RR] = {.name = "rr",
                     .opens_transaction = true,
                     .start = srv_rr_start,
                     .after_store = srv_rr_respond},
    [CMP_BODY_RP] = SRV_REFUSE("rp"),
    [CMP_BODY_CCR] = {.name = "ccr",
                      .opens_transaction = true,
                      .start = srv_ccr_start,
                      .after_sign = srv_enrol_record,
                      .after_store = srv_enrol_respond,
                      .store_failed = srv_enrol_store_failed,
                      .sign_failed = srv_enrol_sign_failed},
    [CMP_BODY_CCP] = SRV_REFUSE("ccp"),
    [CMP_BODY_CKUANN] = SRV_REFUSE("ckuann"),
    [CMP_BODY_CANN] = SRV_REFUSE("cann"),
    [CMP_BODY_RANN] = SRV_REFUSE("rann"),
    [CMP_BODY_CRLANN] = SRV_REFUSE("crlann"),
    [CMP_BODY_PKICONF] = SRV_REFUSE("pkiconf"),
    [CMP_BODY_NESTED] = {.name = "nested", .opens_transaction = true, .start = srv_nested_start},
    [CMP_BODY_GENM] = {.name = "genm", .opens_transaction = true, .start = srv_genm_start},
    [CMP_BODY_GENP] = SRV_REFUSE("genp"),
    [CMP_BODY_ERROR] = {.name = "error",
                        .start = srv_error_start,
                        .after_store = srv_error_respond},
    [CMP_BODY_CERT_CONF] = {.name = "certConf",
                            .start = srv_conf_start,
                            .after_store = srv_conf_respond},
    [CMP_BODY_POLL_REQ] = {.name = "pollReq",
                           .start = srv_poll_start,
                           .after_store = srv_poll_respond},
    [CMP_BODY_POLL_REP] = SRV_REFUSE("pollRep"),
};

const srv_handler *srv_handler_get(int body_type)
{
    if (body_type < 0 || body_type >= SRV_NUM_BODY_TYPES) {
        return NULL;
    }
    return &k_srv_handlers[body_type];
}

// srv_handler_of returns the row of the request's (parsed) body.
static const srv_handler *srv_handler_of(const srv_request *req)
{
    const srv_handler *h = srv_handler_get((int)req->msg.body.type);
    CM_CHECK(h != NULL && h->start != NULL); // the parser only returns CHOICE members
    return h;
}

// --- asynchronous steps -------------------------------------------------------------------

void srv_sign_submit(srv_request *req, const hsm_key *key, hsm_sig_alg alg, cm_span msg,
                     srv_state next)
{
    hsm_job_init(&req->hjob, req->w->cq, key, alg, msg, req->sig, sizeof(req->sig));
    req->hjob.user = req;
    if (req->root != NULL) {
        // An inner message of a nested batch: its root submits it with the others.
        req->state = next;
        req->jobs_out = 1;
        req->parked = true;
        return;
    }
    hsm_job *jobs[1] = {&req->hjob};
    cm_result r = hsm_pool_submit_on(req->w->e->p.hsm, req->w->lane, jobs, 1);
    req->w->stats.hsm_submits++;
    req->w->stats.hsm_jobs++;
    if (!cm_ok(r)) {
        srv_sign_refused(req, r, next);
        return;
    }
    req->state = next;
    req->jobs_out = 1;
}

void srv_sign_refused(srv_request *req, cm_result r, srv_state next)
{
    if (next == SRV_ST_SIGN_RESP) {
        // The response's signature cannot be queued (queue full, pool stopped): when the
        // request's MAC verified, the same answer goes out MAC-protected instead (issue 14
        // §12); otherwise it goes out unprotected, and the log says so.
        if (req->mac_ok && !req->force_mac && req->resp_body != NULL) {
            req->force_mac = true;
            srv_respond(req, req->resp_body);
            return;
        }
        cm_log(CM_LOG_WARN, "srv: the HSM cannot sign the response (%s): sent unprotected",
               cm_result_name(r));
        srv_finish_response(req, NULL);
        return;
    }
    const cm_result why = r.code == HSM_E_QUEUE_FULL ? cm_result_make(SRV_E_OVERLOAD) : r;
    const srv_handler *h = srv_handler_get((int)req->msg.body.type);
    if (h != NULL && h->sign_failed != NULL && h->sign_failed(req, why)) {
        return;
    }
    srv_fail(req, why);
}

void srv_store_submit(srv_request *req)
{
    store_job *jobs[SRV_MAX_STORE_JOBS];
    CM_CHECK(req->num_sjobs >= 1 && req->num_sjobs <= SRV_MAX_STORE_JOBS);
    for (size_t i = 0; i < req->num_sjobs; i++) {
        req->sjobs[i].user = req;
        jobs[i] = &req->sjobs[i];
    }
    req->state = SRV_ST_STORE;
    req->jobs_out = (uint32_t)req->num_sjobs;
    if (req->root != NULL) {
        req->parked = true; // the nested batch's root submits it with the others
        return;
    }
    req->w->stats.store_submits++;
    req->w->stats.store_jobs += req->num_sjobs;
    store_submit_batch(req->w->e->p.store, jobs, req->num_sjobs);
}

void srv_undo_submit(srv_request *req, store_job *job, cm_result r, const char *what)
{
    job->user = req;
    req->undo_error = r;
    req->undo_what = what;
    req->state = SRV_ST_UNDO;
    req->jobs_out = 1;
    if (req->root != NULL) {
        req->park_job = job; // the nested batch's root submits it with the others
        req->parked = true;
        return;
    }
    req->w->stats.store_submits++;
    req->w->stats.store_jobs++;
    store_submit(req->w->e->p.store, job);
}

// srv_after_store: every store job of the batch is back. The first failure decides.
static void srv_after_store(srv_request *req)
{
    srv_mark(req, SRV_STAGE_STORE);
    const srv_handler *h = srv_handler_of(req);
    for (size_t i = 0; i < req->num_sjobs; i++) {
        const cm_result r = req->sjobs[i].result;
        if (!cm_ok(r)) {
            if (h->store_failed == NULL || !h->store_failed(req, i, r)) {
                srv_fail(req, r);
            }
            return;
        }
    }
    CM_CHECK(h->after_store != NULL);
    h->after_store(req);
}

// srv_after_undo: the undo job is back; the request answers the failure it undid.
static void srv_after_undo(srv_request *req, const store_job *job)
{
    srv_mark(req, SRV_STAGE_STORE);
    if (!cm_ok(job->result)) {
        cm_log_ratelimited("srv.undo", 10000, CM_LOG_ERROR, "srv: %s: %s", req->undo_what,
                           cm_result_name(job->result));
    }
    srv_fail(req, req->undo_error);
}

// --- lifecycle ------------------------------------------------------------------------------

bool srv_request_start(srv_request *req, const srv_ca *ca, cm_span der)
{
    req->ca = ca;
    req->der = der;
    req->now = cm_time_now();
    req->mark[0] = cm_time_mono_ns();
    // A nested body's inner messages are only delimited here: each becomes a request of its own
    // (srv_nested.c), which parses it with its own limits; their count is checked there.
    cmp_parse_opts opts = {
        .max_nesting = 1, .max_nested = CMP_MAX_NESTED_LIMIT, .nested_shallow = true};
    cm_result r = cmp_msg_from_der(&req->arena, &req->msg, der, &opts);
    if (!cm_ok(r)) {
        // Keep what can be read of the header so the error echoes tid and nonce.
        der_reader rd, msg;
        der_reader_init(&rd, der);
        if (cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &msg)) &&
            cm_ok(cmp_header_parse(&req->arena, &req->msg.header, &msg))) {
            req->have_header = true;
        }
        srv_fail(req, r);
        return req->state == SRV_ST_DONE;
    }
    req->have_msg = true;
    req->have_header = true;
    req->body_type = (int)req->msg.body.type;
    // A resend of a request already answered gets that answer (before the header rules: its
    // messageTime may have aged meanwhile).
    if (srv_resend_lookup(req)) {
        return true;
    }
    r = srv_check_header(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return req->state == SRV_ST_DONE;
    }
    srv_mark(req, SRV_STAGE_PARSE);
    if (req->in_pool && req->msg.body.type == CMP_BODY_NESTED) {
        // A nested message inside a batch makes requests of its own: on the origin thread.
        req->deferred = true;
        return false;
    }
    // The MAC's back-off gate, and its key derivation on the KDF pool (issue 23).
    if (!srv_mac_begin(req)) {
        return req->state == SRV_ST_DONE;
    }
    srv_handler_of(req)->start(req);
    return req->state == SRV_ST_DONE;
}

srv_request *srv_worker_on_completion(srv_worker *w, cm_cq_node *node)
{
    (void)w;
    srv_request *req;
    if (node->kind == CM_CQ_KIND_HSM_JOB) {
        hsm_job *j = (hsm_job *)node;
        req = j->user;
        req->jobs_out--;
        if (req->state == SRV_ST_SIGN_RESP) {
            if (!cm_ok(j->result)) {
                // The response body is gone by now: the answer goes out unprotected.
                cm_log(CM_LOG_WARN,
                       "srv: the HSM failed to sign the response (%s): sent "
                       "unprotected",
                       cm_result_name(j->result));
                srv_finish_response(req, NULL);
            } else {
                const cm_span sig = cm_span_make(req->sig, j->sig_len);
                srv_finish_response(req, &sig);
            }
        } else if (!cm_ok(j->result)) {
            hsm_job_why(j, &req->why); // "HSM signing failed: CKR_DEVICE_ERROR, retried once"
            const cm_result why = j->result.code == HSM_E_QUEUE_FULL
                                      ? cm_result_make(SRV_E_OVERLOAD)
                                      : cm_result_make(SRV_E_INTERNAL);
            const srv_handler *h = srv_handler_of(req);
            if (h->sign_failed == NULL || !h->sign_failed(req, why)) {
                srv_fail(req, why);
            }
        } else {
            const srv_handler *h = srv_handler_of(req);
            CM_CHECK(h->after_sign != NULL);
            h->after_sign(req);
        }
    } else if (node->kind == CM_CQ_KIND_KDF_JOB) {
        srv_kdf_job *j = (srv_kdf_job *)node;
        req = j->user;
        req->jobs_out--;
        req->state = SRV_ST_NEW;
        if (j->result.code == SRV_E_KDF_BUSY) {
            // The pool stopped before a worker took it: no MAC was checked.
            srv_fail(req, j->result);
        } else {
            srv_mac_end(req);
            srv_handler_of(req)->start(req);
        }
    } else if (node->kind == CM_CQ_KIND_STORE_JOB) {
        store_job *j = (store_job *)node;
        req = j->user;
        if (--req->jobs_out != 0) {
            return NULL;
        }
        if (req->state == SRV_ST_UNDO) {
            srv_after_undo(req, j);
        } else {
            srv_after_store(req);
        }
    } else if (node->kind == CM_CQ_KIND_SRV_TASK) {
        // An inner request of a nested message, back from a verification thread.
        return srv_nested_task_back((srv_request *)((char *)node - offsetof(srv_request, task)));
    } else {
        return NULL;
    }
    if (req->root != NULL) {
        return srv_nested_event(req); // an inner request: its batch decides what is ready
    }
    return req->state == SRV_ST_DONE ? req : NULL;
}

cm_span srv_request_run(srv_request *req, const srv_ca *ca, cm_span der)
{
    if (srv_request_start(req, ca, der)) {
        return req->response;
    }
    while (req->state != SRV_ST_DONE) {
        (void)cm_cq_wait(req->w->cq, 1000);
        for (cm_cq_node *n = cm_cq_drain(req->w->cq); n != NULL;) {
            cm_cq_node *next = n->next;
            (void)srv_worker_on_completion(req->w, n);
            n = next;
        }
    }
    return req->response;
}
