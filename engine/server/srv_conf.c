// certConf (RFC 9483 §4.1.1, RFC 9810 §5.3.18): the client accepts or rejects the certificate
// its transaction issued. Accepted: the certificate becomes valid; rejected (or an empty
// CertConfirmContent): it is revoked. Either way the answer is pkiconf.
#include <string.h>

#include "engine/server/srv_internal.h"

static cm_result srv_conf_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    cm_result r = store_txn_get(req->w->reader, &req->arena, &req->txn, ca->name,
                                m->header.f.transaction_id.v);
    if (r.code == STORE_E_TXN_NOT_FOUND) {
        cm_why_set(&req->why, "certConf for a transactionID this CA does not know (or no "
                              "longer: the confirmation wait expired)");
        CM_BAIL(SRV_E_UNKNOWN_TXN);
    }
    CM_TRY(r);
    CM_ENSURE(req->txn.state != SRV_TXN_IMPLICIT, SRV_E_NO_CONFIRM_NEEDED);
    CM_ENSURE(req->txn.state == SRV_TXN_WAIT_CONF, SRV_E_CONFIRMED);
    // The same credentials as the request (RFC 9483 §4.1.1): never the new certificate.
    CM_TRY(srv_authenticate(req, NULL, ca->own_trust));
    const bool same =
        req->txn.protection == STORE_AUTH_MAC
            ? req->mac_ok && cm_span_eq(m->header.f.sender_kid.v, req->txn.credential)
            : req->sig_ok && cm_span_eq(cm_span_make(req->signer_hash, 32), req->txn.credential);
    if (!same) {
        cm_why_set(&req->why, "certConf must be protected like its request: %s",
                   req->txn.protection == STORE_AUTH_MAC ? "a MAC with the same senderKID"
                                                         : "a signature by the same certificate");
        CM_BAIL(SRV_E_WRONG_CREDENTIAL);
    }
    if (!m->header.f.recip_nonce.present ||
        !cm_span_eq(m->header.f.recip_nonce.v, req->txn.sender_nonce)) {
        cm_why_set(&req->why,
                   "certConf's recipNonce %s the senderNonce of the certificate's "
                   "response",
                   m->header.f.recip_nonce.present ? "does not match" : "is missing; it must echo");
        CM_BAIL(SRV_E_RECIP_NONCE);
    }
    // Exactly one CertStatus for the one certificate (an empty list rejects it).
    if (m->body.u.conf.num > 1) {
        cm_why_set(&req->why, "certConf must carry one CertStatus, not %zu", m->body.u.conf.num);
        CM_BAIL(SRV_E_REQ_COUNT);
    }
    store_cert issued;
    CM_TRY(store_cert_get_by_txn(req->w->reader, &req->arena, &issued, ca->name,
                                 m->header.f.transaction_id.v));
    if (m->body.u.conf.num == 0) {
        req->conf_reject = true;
        return cm_result_make(CM_OK);
    }
    const cmp_cert_status *cs = &m->body.u.conf.items[0];
    if (cs->cert_req_id != 0 && cs->cert_req_id != -1) {
        cm_why_set(&req->why, "the CertStatus certReqId must be 0 (-1 after p10cr), not %lld",
                   (long long)cs->cert_req_id);
        CM_BAIL(SRV_E_CERT_REQ_ID);
    }
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len = 0;
    CM_TRY(cmp_cert_hash(&req->w->dig, hash, &hash_len, issued.cert_der,
                         cs->has_hash_alg ? &cs->hash_alg : NULL));
    CM_ENSURE(cm_span_eq(cs->cert_hash, cm_span_make(hash, hash_len)), SRV_E_CERT_HASH);
    req->conf_reject = cs->has_status_info && cs->status_info.status == CMP_STATUS_REJECTION;
    if (cs->has_status_info && cs->status_info.status == CMP_STATUS_ACCEPTED &&
        cs->status_info.has_fail_info && cs->status_info.fail_info != 0) {
        cm_why_set(&req->why, "certConf accepts the certificate but carries a failInfo");
        CM_BAIL(SRV_E_BODY);
    }
    return cm_result_make(CM_OK);
}

static void srv_conf_record(srv_request *req)
{
    const srv_ca *ca = req->ca;
    store_job *cj = &req->sjobs[0];
    store_job_init(cj, req->conf_reject ? STORE_OP_CERT_REVOKE : STORE_OP_CERT_CONFIRM, req->w->cq);
    cj->u.ref.ca = ca->name;
    cj->u.ref.serial = req->txn.serial;
    cj->u.ref.time = req->now;
    cj->u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    store_job *tj = &req->sjobs[1];
    store_job_init(tj, STORE_OP_TXN_UPDATE, req->w->cq);
    tj->u.txn = req->txn;
    tj->u.txn.state = req->conf_reject ? SRV_TXN_REJECTED : SRV_TXN_CONFIRMED;
    req->num_sjobs = 2;
    srv_store_submit(req);
}

void srv_conf_start(srv_request *req)
{
    cm_result r = srv_conf_prepare(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_conf_record(req);
}

void srv_conf_respond(srv_request *req)
{
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_PKICONF;
    srv_respond(req, &body);
}
