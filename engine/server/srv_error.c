// error from a client (RFC 9810 §5.3.21): "the receiver ... MUST respond with a pkiconf
// message, or with another error message if any part of the header is not valid". An error ends
// the transaction it belongs to: when that transaction's certificate waits for certConf, the
// error rejects it as a rejecting certConf would (the certificate is revoked, reason
// cessationOfOperation, and the transaction is closed), provided the error comes with the
// request's credentials and answers the certificate's response (recipNonce). An error for a
// transaction this CA does not know, or one already complete, has nothing to end and gets its
// pkiconf all the same. The message must be protected: the CA acts only on what it can
// attribute.
#include <string.h>

#include "engine/server/srv_internal.h"

static cm_result srv_error_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    if (!m->header.f.transaction_id.present) {
        return cm_result_make(CM_OK);
    }
    cm_result r = store_txn_get(req->w->reader, &req->arena, &req->txn, ca->name,
                                m->header.f.transaction_id.v);
    if (r.code == STORE_E_TXN_NOT_FOUND) {
        return cm_result_make(CM_OK);
    }
    CM_TRY(r);
    if (req->txn.state != SRV_TXN_WAIT_CONF || req->txn.serial.len == 0) {
        return cm_result_make(CM_OK); // complete, or not issued yet: nothing to end
    }
    const bool same =
        req->txn.protection == STORE_AUTH_MAC
            ? req->mac_ok && cm_span_eq(m->header.f.sender_kid.v, req->txn.credential)
            : req->sig_ok && cm_span_eq(cm_span_make(req->signer_hash, 32), req->txn.credential);
    if (!same) {
        cm_why_set(&req->why,
                   "an error ending a transaction must be protected like its request: "
                   "%s",
                   req->txn.protection == STORE_AUTH_MAC ? "a MAC with the same senderKID"
                                                         : "a signature by the same certificate");
        CM_BAIL(SRV_E_WRONG_CREDENTIAL);
    }
    if (!m->header.f.recip_nonce.present ||
        !cm_span_eq(m->header.f.recip_nonce.v, req->txn.sender_nonce)) {
        cm_why_set(&req->why,
                   "the error's recipNonce %s the senderNonce of the certificate's "
                   "response",
                   m->header.f.recip_nonce.present ? "does not match" : "is missing; it must echo");
        CM_BAIL(SRV_E_RECIP_NONCE);
    }
    store_job *cj = &req->sjobs[0];
    store_job_init(cj, STORE_OP_CERT_REVOKE, req->w->cq);
    cj->u.ref.ca = ca->name;
    cj->u.ref.serial = req->txn.serial;
    cj->u.ref.time = req->now;
    cj->u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    store_job *tj = &req->sjobs[1];
    store_job_init(tj, STORE_OP_TXN_UPDATE, req->w->cq);
    tj->u.txn = req->txn;
    tj->u.txn.state = SRV_TXN_REJECTED;
    req->num_sjobs = 2;
    return cm_result_make(CM_OK);
}

void srv_error_start(srv_request *req)
{
    cm_result r = srv_error_prepare(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    if (req->num_sjobs > 0) {
        srv_store_submit(req);
        return;
    }
    srv_error_respond(req);
}

void srv_error_respond(srv_request *req)
{
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_PKICONF;
    srv_respond(req, &body);
}
