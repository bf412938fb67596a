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
    CM_ENSURE(r.code != STORE_E_TXN_NOT_FOUND, SRV_E_UNKNOWN_TXN);
    CM_TRY(r);
    CM_ENSURE(req->txn.state != SRV_TXN_IMPLICIT, SRV_E_NO_CONFIRM_NEEDED);
    CM_ENSURE(req->txn.state == SRV_TXN_WAIT_CONF, SRV_E_CONFIRMED);
    // The same credentials as the request (RFC 9483 §4.1.1): never the new certificate.
    CM_TRY(srv_authenticate(req, NULL, ca->own_trust));
    if (req->txn.protection == STORE_AUTH_MAC) {
        CM_ENSURE(req->mac_ok && cm_span_eq(m->header.f.sender_kid.v, req->txn.credential),
                  SRV_E_WRONG_CREDENTIAL);
    } else {
        CM_ENSURE(req->sig_ok &&
                      cm_span_eq(cm_span_make(req->signer_hash, 32), req->txn.credential),
                  SRV_E_WRONG_CREDENTIAL);
    }
    CM_ENSURE(m->header.f.recip_nonce.present &&
                  cm_span_eq(m->header.f.recip_nonce.v, req->txn.sender_nonce),
              SRV_E_RECIP_NONCE);
    // Exactly one CertStatus for the one certificate (an empty list rejects it).
    CM_ENSURE(m->body.u.conf.num <= 1, SRV_E_REQ_COUNT);
    store_cert issued;
    CM_TRY(store_cert_get_by_txn(req->w->reader, &req->arena, &issued, ca->name,
                                 m->header.f.transaction_id.v));
    if (m->body.u.conf.num == 0) {
        req->conf_reject = true;
        return cm_result_make(CM_OK);
    }
    const cmp_cert_status *cs = &m->body.u.conf.items[0];
    CM_ENSURE(cs->cert_req_id == 0 || cs->cert_req_id == -1, SRV_E_CERT_REQ_ID);
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len = 0;
    CM_TRY(cmp_cert_hash(&req->w->dig, hash, &hash_len, issued.cert_der,
                         cs->has_hash_alg ? &cs->hash_alg : NULL));
    CM_ENSURE(cm_span_eq(cs->cert_hash, cm_span_make(hash, hash_len)), SRV_E_CERT_HASH);
    req->conf_reject = cs->has_status_info && cs->status_info.status == CMP_STATUS_REJECTION;
    CM_ENSURE(!(cs->has_status_info && cs->status_info.status == CMP_STATUS_ACCEPTED &&
                cs->status_info.has_fail_info && cs->status_info.fail_info != 0),
              SRV_E_BODY);
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
