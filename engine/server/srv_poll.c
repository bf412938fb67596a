// pollReq (RFC 9483 §4.4, RFC 9810 §5.3.22; issue 16): the client of a request answered
// `waiting` asks for its answer. While the request waits the answer is a pollRep with the
// request's certReqId and a checkAfter (when to ask again) and a reason; once the drain issued
// the certificate (or the request was rejected) the answer is the request's own response type
// (ip, cp, kup, ccp) with the certificate or the rejection, as it would have been at once. The
// transaction's state is all in the store (store_pending, the txn row), so the pollReq may reach
// any node that shares it.
//
// A pollReq is authenticated like every message that continues a transaction (as certConf:
// srv_txn_authenticate): the same kind of protection and the same credential as the request.
// It names the request's certReqId (0; -1 for a p10cr, whose waiting cp carried -1; an empty
// PollReqContent counts as -1). Unknown transactions (never waited here, or expired) and
// finished ones (delivered and, unless implicitConfirm, confirmed or rejected) get a readable
// badRequest; a delivery whose certConf has not come yet is repeated for a pollReq that asks
// again (its answer was lost), and certConf then answers the latest delivery's senderNonce.
//
// The pollReq's recipNonce must be present but is not compared with the last pollRep's
// senderNonce: that would cost a store write per poll. A replayed pollReq can at most collect
// the answer again.
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

#include "engine/server/srv_internal.h"

// srv_poll_resp_type is the response type of the request body |t| that waited.
static cmp_body_type srv_poll_resp_type(uint32_t t)
{
    switch (t) {
    case CMP_BODY_IR:
        return CMP_BODY_IP;
    case CMP_BODY_KUR:
        return CMP_BODY_KUP;
    case CMP_BODY_CCR:
        return CMP_BODY_CCP;
    default:
        return CMP_BODY_CP; // cr, p10cr
    }
}

// srv_poll_free_text marshals |text| as a PKIFreeText into the arena (empty: no room).
static cm_span srv_poll_free_text(srv_request *req, const char *text)
{
    const cm_span t = cm_span_make(text, strlen(text));
    der_builder b;
    der_builder_init_arena(&b, &req->arena, t.len + 16);
    cmp_free_text_marshal(&b, &t, 1);
    cm_span out;
    return cm_ok(der_builder_finish(&b, &out)) ? out : cm_span_make(NULL, 0);
}

static cm_result srv_poll_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    const cm_span tid = m->header.f.transaction_id.v;
    char tid_text[80];
    cm_result r = store_pending_get(req->w->reader, &req->arena, &req->pend, ca->name, tid);
    if (r.code == STORE_E_PENDING_UNKNOWN) {
        // Nothing to authenticate against: the error is protected when the message itself is.
        CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
        cm_why_set(&req->why,
                   "pollReq for transaction %s, in which nothing waits at this CA (unknown, or it "
                   "expired)",
                   srv_bytes_text(tid_text, tid));
        CM_BAIL(SRV_E_POLL_UNKNOWN);
    }
    CM_TRY(r);
    r = store_txn_get(req->w->reader, &req->arena, &req->txn, ca->name, tid);
    if (r.code == STORE_E_TXN_NOT_FOUND) {
        CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
        cm_why_set(&req->why, "pollReq for transaction %s, which expired",
                   srv_bytes_text(tid_text, tid));
        CM_BAIL(SRV_E_POLL_UNKNOWN);
    }
    CM_TRY(r);
    req->have_txn = true;
    CM_TRY(srv_txn_authenticate(req, cm_span_make(NULL, 0)));
    // It continues the transaction (RFC 9810 §5.1.1): it answers one of the CA's messages and
    // brings a fresh nonce of its own.
    if (!m->header.f.recip_nonce.present) {
        cm_why_set(&req->why, "pollReq continues a transaction: it must carry a recipNonce (the "
                              "senderNonce of the CA's last answer)");
        CM_BAIL(SRV_E_RECIP_NONCE);
    }
    if (req->txn.request_nonce.len > 0 &&
        cm_span_eq(m->header.f.sender_nonce.v, req->txn.request_nonce)) {
        cm_why_set(&req->why, "pollReq's senderNonce repeats the request's; each message needs a "
                              "fresh one");
        CM_BAIL(SRV_E_SENDER_NONCE_REUSED);
    }
    const size_t num = m->body.u.poll_req.num;
    if (num > 1) {
        cm_why_set(&req->why, "pollReq must ask for the one request of its transaction, not %zu",
                   num);
        CM_BAIL(SRV_E_REQ_COUNT);
    }
    const int64_t want = num == 1 ? m->body.u.poll_req.cert_req_ids[0] : -1;
    if (want != req->pend.cert_req_id) {
        cm_why_set(&req->why,
                   "pollReq asks for certReqId %lld; the request waiting in transaction %s has "
                   "certReqId %lld",
                   (long long)want, srv_bytes_text(tid_text, tid),
                   (long long)req->pend.cert_req_id);
        CM_BAIL(SRV_E_POLL_CERT_REQ_ID);
    }
    return cm_result_make(CM_OK);
}

// srv_poll_rep answers a request that still waits: pollRep with its certReqId, when to ask
// again and why it waits.
static void srv_poll_rep(srv_request *req)
{
    const store_pending *p = &req->pend;
    srv_engine *e = req->w->e;
    int64_t after = srv_pending_check_after(e, p->why);
    char text[200];
    switch (p->state) {
    case STORE_PENDING_APPROVAL:
        (void)snprintf(text, sizeof(text),
                       "waiting for the approval of the CA's operator (pending %lld)",
                       (long long)p->id);
        break;
    case STORE_PENDING_APPROVED:
    case STORE_PENDING_SIGNING:
        (void)snprintf(text, sizeof(text), "%s; the certificate is being signed (pending %lld)",
                       p->why == STORE_PENDING_WHY_APPROVAL ? "approved" : "dequeued",
                       (long long)p->id);
        after = 1;
        break;
    default:
        (void)snprintf(text, sizeof(text), "queued: the CA is busy (pending %lld)",
                       (long long)p->id);
        break;
    }
    cmp_poll_rep item = {.cert_req_id = p->cert_req_id,
                         .check_after = after,
                         .reason = srv_poll_free_text(req, text)};
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_POLL_REP;
    body.u.poll_rep.items = &item;
    body.u.poll_rep.num = 1;
    (void)__atomic_fetch_add(&e->pend->polls, 1, __ATOMIC_RELAXED);
    srv_respond(req, &body);
}

// srv_poll_deliver records that the final answer goes out (STORE_OP_PENDING_DELIVER: for an
// issued certificate the senderNonce certConf must answer and the confirmation deadline from
// now on), then srv_poll_respond sends it.
static void srv_poll_deliver(srv_request *req)
{
    const srv_params *p = &req->w->e->p;
    const bool issued = req->pend.fail_info < 0;
    req->implicit = issued && (req->pend.flags & SRV_PEND_FLAG_IMPLICIT) != 0;
    if (issued) {
        store_cert c;
        const cm_result r =
            store_cert_get(req->w->reader, &req->arena, &c, req->ca->name, req->pend.serial);
        if (!cm_ok(r)) {
            srv_fail(req, r.code == STORE_E_NOT_FOUND ? cm_result_make(SRV_E_INTERNAL) : r);
            return;
        }
        req->cert = c.cert_der;
    }
    const int64_t wait = p->confirm_wait_time > 0 ? p->confirm_wait_time : 300;
    const int64_t win = p->message_time_window > 0 ? p->message_time_window : 300;
    (void)RAND_bytes(req->nonce, sizeof(req->nonce));
    req->nonce_set = true;
    store_job *j = &req->sjobs[0];
    store_job_init(j, STORE_OP_PENDING_DELIVER, req->w->cq);
    j->u.pop = (store_pending_op){
        .ca = req->ca->name,
        .transaction_id = req->msg.header.f.transaction_id.v,
        .time = req->now,
        .sender_nonce = cm_span_make(req->nonce, sizeof(req->nonce)),
        .txn_expires_at = req->now + (req->implicit || !issued ? win : wait + win),
        .confirm_deadline = issued && !req->implicit ? req->now + wait : 0};
    req->num_sjobs = 1;
    srv_store_submit(req);
}

void srv_poll_start(srv_request *req)
{
    cm_result r = srv_poll_prepare(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_mark(req, SRV_STAGE_VERIFY);
    const store_pending *p = &req->pend;
    char tid[80];
    switch (p->state) {
    case STORE_PENDING_QUEUED:
    case STORE_PENDING_APPROVAL:
    case STORE_PENDING_APPROVED:
    case STORE_PENDING_SIGNING:
        srv_poll_rep(req);
        return;
    case STORE_PENDING_ISSUED:
    case STORE_PENDING_REJECTED:
        srv_poll_deliver(req);
        return;
    case STORE_PENDING_DELIVERED:
        // Delivered before: again while its certificate waits for certConf (the answer was
        // lost), else the transaction is over.
        if (p->fail_info < 0 && req->txn.state == SRV_TXN_WAIT_CONF) {
            srv_poll_deliver(req);
            return;
        }
        break;
    default:
        break;
    }
    cm_why_set(&req->why, "pollReq for transaction %s, which is finished: its %s was delivered%s",
               srv_bytes_text(tid, req->msg.header.f.transaction_id.v),
               p->fail_info < 0 ? "certificate" : "rejection",
               p->fail_info < 0 && req->txn.state != SRV_TXN_IMPLICIT ? " and answered by certConf"
                                                                      : "");
    srv_fail(req, cm_result_make(SRV_E_POLL_FINISHED));
}

void srv_poll_respond(srv_request *req)
{
    const store_pending *p = &req->pend;
    const srv_ca *ca = req->ca;
    cmp_cert_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.cert_req_id = p->cert_req_id;
    if (p->fail_info >= 0) {
        resp.status.status = CMP_STATUS_REJECTION;
        resp.status.has_fail_info = true;
        resp.status.fail_info = CMP_FAILINFO_BIT((uint32_t)p->fail_info);
        resp.status.status_string =
            srv_poll_free_text(req, p->status_text != NULL ? p->status_text : "rejected");
        // For the log line: what the request got.
        req->fail_bit = p->fail_info;
        cm_why_set(&req->why, "%s", p->status_text != NULL ? p->status_text : "rejected");
    } else {
        resp.status.status = CMP_STATUS_ACCEPTED;
        if (p->status_text != NULL) {
            resp.status.status = CMP_STATUS_GRANTED_WITH_MODS;
            resp.status.status_string = srv_poll_free_text(req, p->status_text);
        }
        resp.has_certified_key_pair = true;
        resp.cert = req->cert;
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = srv_poll_resp_type(p->body_type);
    body.u.rep.responses = &resp;
    body.u.rep.num_responses = 1;
    cm_span root;
    if (p->fail_info < 0 && ca->ca_pubs && body.type == CMP_BODY_IP) {
        root = srv_ca_root(ca->authority);
        body.u.rep.ca_pubs = &root;
        body.u.rep.num_ca_pubs = 1;
    }
    if (p->fail_info < 0) {
        srv_add_extra(req, ca->authority);
    }
    (void)__atomic_fetch_add(&req->w->e->pend->delivered, 1, __ATOMIC_RELAXED);
    srv_respond(req, &body);
}
