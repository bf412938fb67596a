// nested (RFC 9810 §5.1.3.4, §5.3.23; RFC 9483 §5.2.2.1 adding protection, §5.2.2.2 batching):
// an RA forwards several PKIMessages in one, protected by itself. The outer protection is
// verified once; it must be an RA's: a signature by a configured RA certificate valid as one
// (ra_certs, srv_auth.c's RA rules), or a MAC with a secret marked for RA use (ra.REF = on).
// Each inner message then becomes a request of its own and is handled exactly as if it had
// arrived alone, through the same handler table (header rules, protection, POPO or
// raVerified, profile, store); one that fails fails alone. The answer is a nested message
// with one response per inner message, in order, each protected as it would be alone, and is
// itself signed by the CA's CMP key.
//
// Unprotected inner messages (RFC 9483 §5.2.2.1): an inner message without protection is
// accepted exactly when the nested message around it was protected by an RA as above; it is
// then authenticated as if that RA had protected it itself (srv_nested_vouch): signed by the
// RA certificate, or MAC-protected with the RA's secret (its senderKID, its limits, and its
// key for the response). So the RA's own rules decide what it may ask for: a certificate RA
// may send raVerified and request any subject; a MAC RA only what its secret's
// subject_pattern and max_certs allow, and never raVerified; a kur always needs its own
// signature by the certificate it updates; a certConf confirms only a transaction whose
// request came with the same credential. Nothing else vouches: an unprotected message outside
// a nested one is refused as before.
//
// The batching is real. An inner request parks its HSM and store submissions instead of
// making them (srv.c: req->root set): the outermost nested request, the root, submits what its
// inner requests parked once none of them is running or waiting (a barrier per phase), so the
// N reservations go to the store as one store_submit_batch, the N certificate signatures to
// the HSM pool as one hsm_pool_submit, the 2N records as one store_submit_batch (one group
// commit), the responses' signatures (for signature-protected inner messages) as one more
// hsm_pool_submit. The CPU-heavy part of each inner request (parsing, MAC or signature
// verification, POPO verification, the policy checks) runs on the verification threads
// (srv_pool.c, nested_threads) in parallel, not one after another on the thread that received
// the batch; everything after (TBS, assembly, the response) is cheap and runs there.
//
// Limits, checked before any work: max_nested_depth levels (0 refuses nested messages) and
// max_nested_messages inner messages in one request at all levels together.
#include <string.h>

#include "engine/server/srv_internal.h"

// A nested request's batch. Thread: its root's worker's.
struct srv_nest {
    srv_request **children; // the inner requests, in message order
    size_t num;
    size_t num_done; // answered
    // The root's only:
    size_t total;        // inner messages of the whole request, every level (the limit)
    uint32_t out;        // inner requests with a verification thread or with jobs submitted
    srv_request *parked; // inner requests whose jobs wait for the next joint submission
};

// --- authentication -------------------------------------------------------------------------

cm_result srv_nested_vouch(srv_request *req)
{
    const srv_request *ra = req->parent;
    if (ra == NULL || (!ra->sig_ok && !ra->mac_ok)) {
        cm_why_set(&req->why, "the message is not protected; protect it with a MAC (shared "
                              "secret) or a signature");
        CM_BAIL(SRV_E_UNPROTECTED);
    }
    // RFC 9483 §5.2.2.1: the RA's protection of the nested message stands for this one.
    req->vouched = true;
    req->prot_kind = ra->prot_kind;
    req->prot_known = ra->prot_known;
    if (ra->sig_ok) {
        req->sig_ok = true;
        req->signer_is_ra = ra->signer_is_ra;
        req->signer_cert = ra->signer_cert; // spans into the parent's message, which outlives us
        req->signer = ra->signer;
        memcpy(req->signer_hash, ra->signer_hash, sizeof(req->signer_hash));
        return cm_result_make(CM_OK);
    }
    // The RA's secret: its senderKID names the credential in the transaction and the response,
    // its key MACs the response (a fresh AES-GMAC nonce for each inner response).
    req->mac_ok = true;
    req->secret = ra->secret;
    req->mac_key = ra->mac_key;
    req->msg.header.f.sender_kid = ra->msg.header.f.sender_kid;
    return cmp_mac_key_renew_nonce(&req->mac_key);
}

// srv_nested_check_ra: the nested message's protection must be an RA's (see the top).
static cm_result srv_nested_check_ra(srv_request *req)
{
    if (req->vouched) {
        return cm_result_make(CM_OK); // inside a nested message, by that one's RA
    }
    if (req->sig_ok) {
        if (req->signer_is_ra) {
            return cm_result_make(CM_OK);
        }
        if (cm_why_is_set(&req->ra_why)) {
            cm_why_set(&req->why, "a nested message must be protected by an RA of this CA: %s",
                       req->ra_why.text);
        } else {
            cm_why_set(&req->why, "a nested message must be signed by an RA certificate of this "
                                  "CA (ra_certs), not by another certificate");
        }
        CM_BAIL(SRV_E_NESTED_NOT_RA);
    }
    if (req->mac_ok && req->secret != NULL && req->secret->ra) {
        return cm_result_make(CM_OK);
    }
    char kid[80];
    cm_why_set(&req->why,
               "the MAC secret of senderKID %s is not marked for RA use (ra.REF = on in its "
               "clients section), so it may not protect nested messages",
               srv_bytes_text(kid, req->msg.header.f.sender_kid.v));
    CM_BAIL(SRV_E_NESTED_NOT_RA);
}

// --- the batch ------------------------------------------------------------------------------

// srv_nested_respond answers nested request |req| once all its inner requests are answered:
// their responses, in order, in a nested body signed by the CMP key.
static void srv_nested_respond(srv_request *req)
{
    srv_nest *nest = req->nest;
    cm_span *ders = cm_arena_alloc(&req->arena, nest->num * sizeof(cm_span));
    if (ders == NULL) {
        srv_fail(req, cm_result_make(CM_E_NOMEM));
        return;
    }
    size_t total = 0;
    for (size_t i = 0; i < nest->num; i++) {
        const srv_request *c = nest->children[i];
        if (c->response.len == 0) {
            // Its response could not even be encoded (the arena cap): nothing to put there.
            cm_why_set(&req->why, "inner message %zu of %zu has no answer (server failure)", i + 1,
                       nest->num);
            srv_fail(req, cm_result_make(SRV_E_INTERNAL));
            return;
        }
        if (c->fail_bit >= 0) {
            cm_log(CM_LOG_INFO, "srv: nested message %zu/%zu refused: error=%s reason=\"%s\"",
                   i + 1, nest->num, cm_result_name(c->error), c->why.text);
        }
        ders[i] = c->response;
        total += c->response.len;
    }
    // The answer is built in the arena, whose cap is fixed (srv_params.arena_cap): refuse
    // readably rather than run out of room half-way.
    const size_t need = total + 16384;
    if (req->arena.cap != 0 && req->arena.total + need > req->arena.cap) {
        cm_why_set(&req->why,
                   "the answers to the %zu inner messages (%zu bytes) do not fit this server's "
                   "response limit; send smaller batches",
                   nest->num, total);
        srv_fail(req, cm_result_make(SRV_E_INTERNAL));
        return;
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_NESTED;
    body.u.nested.ders = ders;
    body.u.nested.num = nest->num;
    req->resp_hint = total + 4096; // the header, the signature and the CMP certificate
    req->force_sig = true;         // "the outer protected by the CA's CMP key"
    srv_mark(req, SRV_STAGE_STORE);
    srv_respond(req, &body);
}

// srv_nested_note takes what inner request |req| did when it last ran on the origin thread:
// jobs it parked join the root's list; an answer counts for its parent, and the last answer
// of a nested request answers that one (which may park its signature, or answer its parent).
static void srv_nested_note(srv_request *req)
{
    srv_request *root = req->root;
    while (req != root) {
        if (req->parked) {
            req->parked = false;
            req->park_next = root->nest->parked;
            root->nest->parked = req;
            return;
        }
        if (req->state != SRV_ST_DONE || req->counted) {
            return; // running elsewhere, waiting for its own inner requests, or counted
        }
        req->counted = true;
        srv_request *p = req->parent;
        if (++p->nest->num_done < p->nest->num) {
            return;
        }
        srv_nested_respond(p);
        req = p;
    }
}

// srv_nested_submit_hsm hands |n| parked signature jobs to the pool in one submission; when
// the pool refuses them, each request answers as srv_sign_submit's refusal would.
static void srv_nested_submit_hsm(srv_request *root, srv_request *const *reqs, hsm_job **jobs,
                                  size_t n)
{
    srv_worker *w = root->w;
    const cm_result r = hsm_pool_submit(w->e->p.hsm, jobs, n);
    w->stats.hsm_submits++;
    w->stats.hsm_jobs += n;
    if (cm_ok(r)) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        srv_request *c = reqs[i];
        root->nest->out--;
        c->jobs_out = 0;
        srv_sign_refused(c, r, c->state);
        srv_nested_note(c);
    }
}

// Requests one joint submission takes when the root's arena has no room for arrays of them
// all (then the rest waits for the next round).
#define SRV_NESTED_CHUNK 32u

// srv_nested_flush submits everything parked, once nothing of the batch is running or out:
// the store jobs in one store_submit_batch, the HSM jobs in one hsm_pool_submit. Requests
// that park again meanwhile (an undo after a refused signature) wait for the next round.
static void srv_nested_flush(srv_request *root)
{
    srv_nest *rn = root->nest;
    srv_worker *w = root->w;
    while (rn->out == 0 && rn->parked != NULL) {
        size_t num = 0;
        for (const srv_request *c = rn->parked; c != NULL; c = c->park_next) {
            num++;
        }
        hsm_job **hj = cm_arena_alloc(&root->arena, num * sizeof(hsm_job *));
        srv_request **hr = cm_arena_alloc(&root->arena, num * sizeof(srv_request *));
        store_job **sj = cm_arena_alloc(&root->arena, num * SRV_MAX_STORE_JOBS * sizeof(void *));
        hsm_job *hj_chunk[SRV_NESTED_CHUNK];
        srv_request *hr_chunk[SRV_NESTED_CHUNK];
        store_job *sj_chunk[SRV_NESTED_CHUNK * SRV_MAX_STORE_JOBS];
        if (hj == NULL || hr == NULL || sj == NULL) {
            hj = hj_chunk;
            hr = hr_chunk;
            sj = sj_chunk;
            num = num < SRV_NESTED_CHUNK ? num : SRV_NESTED_CHUNK;
        }
        size_t ih = 0, is = 0;
        for (size_t i = 0; i < num; i++) {
            srv_request *c = rn->parked;
            rn->parked = c->park_next;
            c->park_next = NULL;
            rn->out++;
            if (c->state == SRV_ST_SIGN_CERT || c->state == SRV_ST_SIGN_RESP) {
                c->hjob.cq = w->cq; // parked on a verification thread, maybe: ours now
                hr[ih] = c;
                hj[ih++] = &c->hjob;
            } else if (c->state == SRV_ST_UNDO) {
                c->park_job->cq = w->cq;
                sj[is++] = c->park_job;
            } else {
                for (size_t k = 0; k < c->num_sjobs; k++) {
                    c->sjobs[k].cq = w->cq;
                    sj[is++] = &c->sjobs[k];
                }
            }
        }
        if (is > 0) {
            w->stats.store_submits++;
            w->stats.store_jobs += is;
            store_submit_batch(w->e->p.store, sj, is);
        }
        if (ih > 0) {
            srv_nested_submit_hsm(root, hr, hj, ih);
        }
    }
}

// srv_nested_settle: after an event of the batch, submit when the batch is idle; the root
// when its response is ready.
static srv_request *srv_nested_settle(srv_request *root)
{
    if (root->nest != NULL && root->nest->out == 0) {
        srv_nested_flush(root);
    }
    return root->state == SRV_ST_DONE ? root : NULL;
}

srv_request *srv_nested_event(srv_request *req)
{
    srv_request *root = req->root;
    root->nest->out--;
    srv_nested_note(req);
    return srv_nested_settle(root);
}

srv_request *srv_nested_task_back(srv_request *req)
{
    if (req->deferred) {
        // A nested message inside the batch: it makes inner requests of its own, here.
        req->deferred = false;
        srv_handler_get((int)req->msg.body.type)->start(req);
    }
    return srv_nested_event(req);
}

void srv_nested_free_children(srv_request *req)
{
    srv_nest *nest = req->nest;
    req->nest = NULL;
    for (size_t i = 0; i < nest->num; i++) {
        srv_request_free(nest->children[i]); // NOLINT(misc-no-recursion): max_nested_depth
    }
}

// --- start ----------------------------------------------------------------------------------

// srv_nested_limits applies max_nested_depth and max_nested_messages to |req| (|root| its
// outermost nested request, itself at the top).
static cm_result srv_nested_limits(srv_request *req, const srv_request *root, size_t n)
{
    const srv_params *p = &req->w->e->p;
    if (p->max_nested_depth == 0) {
        cm_why_set(&req->why, "this CA does not accept nested messages (max_nested_depth = 0)");
        CM_BAIL(SRV_E_NESTED_DEPTH);
    }
    if (req->depth >= p->max_nested_depth) {
        cm_why_set(&req->why,
                   "a nested message at level %u: this CA accepts nested messages %u level%s "
                   "deep (max_nested_depth)",
                   req->depth + 1, p->max_nested_depth, p->max_nested_depth == 1 ? "" : "s");
        CM_BAIL(SRV_E_NESTED_DEPTH);
    }
    const size_t before = root->nest != NULL ? root->nest->total : 0;
    if (before + n > p->max_nested_messages) {
        if (before > 0) {
            cm_why_set(&req->why,
                       "the nested message carries %zu inner messages, %zu with those of the "
                       "batch around it; at most %u are accepted in one request "
                       "(max_nested_messages)",
                       n, before + n, p->max_nested_messages);
        } else {
            cm_why_set(&req->why,
                       "the nested message carries %zu inner messages; at most %u are accepted "
                       "(max_nested_messages)",
                       n, p->max_nested_messages);
        }
        CM_BAIL(SRV_E_NESTED_COUNT);
    }
    return cm_result_make(CM_OK);
}

// srv_nested_make creates |req|'s inner requests (not started yet).
static cm_result srv_nested_make(srv_request *req, srv_request *root)
{
    const size_t n = req->msg.body.u.nested.num;
    srv_nest *nest = cm_arena_alloc(&req->arena, sizeof(*nest));
    srv_request **children = cm_arena_alloc(&req->arena, n * sizeof(srv_request *));
    CM_ENSURE(nest != NULL && children != NULL, CM_E_NOMEM);
    memset(nest, 0, sizeof(*nest));
    nest->children = children;
    req->nest = nest;
    root->nest->total += n; // the root's nest counts every level (for the root: this one)
    for (size_t i = 0; i < n; i++) {
        srv_request *c = srv_request_new(req->w, NULL);
        CM_ENSURE(c != NULL, CM_E_NOMEM); // the ones made so far are freed with |req|
        c->parent = req;
        c->root = root;
        c->depth = req->depth + 1;
        c->ca = req->ca;
        c->der = req->msg.body.u.nested.ders[i];
        c->task.kind = CM_CQ_KIND_SRV_TASK;
        // The abuse budgets count an inner message against the RA's address (issue 23).
        memcpy(c->peer, req->peer, sizeof(c->peer));
        children[nest->num++] = c;
    }
    req->w->stats.nested++;
    req->w->stats.inner += n;
    return cm_result_make(CM_OK);
}

void srv_nested_start(srv_request *req)
{
    srv_request *root = req->root != NULL ? req->root : req;
    // The limits first: nothing is verified or allocated for a batch over them.
    cm_result r = srv_nested_limits(req, root, req->msg.body.u.nested.num);
    // The RA's protection, verified once for the whole batch.
    if (cm_ok(r)) {
        r = srv_authenticate(req, req->ca->client_trust, req->ca->own_trust);
    }
    if (cm_ok(r)) {
        r = srv_nested_check_ra(req);
    }
    if (cm_ok(r)) {
        r = srv_nested_make(req, root);
    }
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_mark(req, SRV_STAGE_VERIFY);
    req->state = SRV_ST_NESTED;
    srv_nest *nest = req->nest;
    srv_pool *pool = req->w->e->pool;
    if (pool != NULL) {
        root->nest->out += (uint32_t)nest->num;
        __atomic_fetch_add(&req->w->tasks_out, (uint32_t)nest->num, __ATOMIC_RELAXED);
        req->w->stats.pool_tasks += nest->num;
        srv_pool_submit(pool, nest->children, nest->num);
        return;
    }
    // No verification threads: one after another, here.
    for (size_t i = 0; i < nest->num; i++) {
        srv_request *c = nest->children[i];
        (void)srv_request_start(c, c->ca, c->der); // NOLINT(misc-no-recursion): the depth limit
        srv_nested_note(c);
    }
    if (req == root) {
        (void)srv_nested_settle(root);
    }
}
