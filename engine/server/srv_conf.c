// certConf (RFC 9483 §4.1.1, RFC 9810 §5.3.18): the client accepts or rejects the certificate
// its transaction issued. Accepted: the certificate becomes valid; rejected (or an empty
// CertConfirmContent): it is revoked. Either way the answer is pkiconf. The certConf must be
// protected like the request (the same kind and the same credential: the senderKID, or the
// certificate that signed the request, kept in the transaction), carry the certReqId of the
// issued certificate (-1 after p10cr), echo the server's senderNonce and bring a fresh one.
#include <string.h>

#include "engine/server/srv_internal.h"

// srv_conf_signer: a signature-protected certConf is verified with the certificate that
// signed the request (RFC 9483 §4.1.1: "the same credentials"), even when that certificate
// came from a manufacturer PKI this CA trusts only for ir (an IDevID) and even when the
// certConf carries no extraCerts: the transaction keeps the certificate (srv_enrol_txn_note).
// Either way the signer rules of srv_authenticate apply (srv_auth.c).
static cm_result srv_conf_signer(srv_request *req, const char *what)
{
    const cmp_msg *m = &req->msg;
    const cm_span cred = req->txn.credential;
    const cm_span kept = req->txn.signer_cert;
    // A cross-certification requester (srv_ccr.c) is trusted as itself: it has no chain to
    // check again.
    bool cross = false;
    for (size_t i = 0; i < req->ca->num_cross_requesters && kept.len != 0; i++) {
        cross |= cm_span_eq(req->ca->cross_requesters[i], kept);
    }
    if (m->num_extra_certs > 0 && !(cross && cm_span_eq(m->extra_certs[0], kept))) {
        // The full check, with the anchors the request itself may have used.
        CM_TRY(srv_authenticate(req, req->ca->client_trust, req->ca->own_trust));
    } else {
        // The certificate that signed the request (its chain verified then), from the
        // transaction: the store's view of it is checked again.
        if (kept.len == 0) {
            cm_why_set(&req->why,
                       "the signed %s carries no extraCerts and the transaction does not keep "
                       "the signer's certificate",
                       what);
            CM_BAIL(CMP_E_NO_EXTRA_CERTS);
        }
        CM_TRY(srv_authenticate_stored(req, kept));
    }
    if (cred.len != sizeof(req->signer_hash) ||
        !cm_span_eq(cm_span_make(req->signer_hash, sizeof(req->signer_hash)), cred)) {
        cm_why_set(&req->why, "%s must be signed by the same certificate as the request it %s",
                   what, req->msg.body.type == CMP_BODY_CERT_CONF ? "confirms" : "continues");
        CM_BAIL(SRV_E_WRONG_CREDENTIAL);
    }
    return cm_result_make(CM_OK);
}

// srv_conf_vouched: an unprotected certConf that the RA of its nested message vouched for
// confirms only a transaction that was authenticated with that RA's credential (its
// request came through the same RA, vouched for or protected with the same secret or
// certificate).
static cm_result srv_conf_vouched(srv_request *req)
{
    const bool mac = req->txn.protection == STORE_AUTH_MAC;
    const cm_span have = mac ? req->msg.header.f.sender_kid.v
                             : cm_span_make(req->signer_hash, sizeof(req->signer_hash));
    if (mac != req->mac_ok || !cm_span_eq(have, req->txn.credential)) {
        cm_why_set(&req->why, "the RA of the nested message vouches for this unprotected "
                              "certConf, but its request was authenticated with another "
                              "credential");
        CM_BAIL(SRV_E_WRONG_CREDENTIAL);
    }
    return cm_result_make(CM_OK);
}

// srv_txn_authenticate (srv_internal.h): the same kind of protection as the request (a MAC for a
// MAC, PBMAC1 for PBMAC1, a signature for a signature: wrongIntegrity otherwise) and the same
// credential (the senderKID, or the signer certificate), never the newly issued certificate.
cm_result srv_txn_authenticate(srv_request *req, cm_span issued)
{
    const cmp_msg *m = &req->msg;
    const srv_handler *row = srv_handler_get((int)m->body.type);
    const char *what = row != NULL ? row->name : "the message";
    if (!m->has_protection || m->header.protection_alg.whole.len == 0) {
        // "Not protected", unless the RA of a nested message vouches for it (srv_nested_vouch):
        // then the RA must hold the request's credential.
        CM_TRY(srv_authenticate(req, NULL, NULL));
        return srv_conf_vouched(req);
    }
    cmp_prot_kind kind;
    CM_TRY(cmp_protect_kind(&kind, m->header.protection_alg.whole));
    // Indexed by cmp_prot_kind; a kind this table does not know prints as "?".
    static const char *const k_kind[] = {"?", "PasswordBasedMac", "PBMAC1", "a signature",
                                         "a key-based MAC"};
    const size_t num_kinds = sizeof(k_kind) / sizeof(k_kind[0]);
    const char *kind_name = (size_t)kind < num_kinds ? k_kind[kind] : "?";
    if (req->txn.protection == STORE_AUTH_MAC) {
        const cmp_prot_kind want = (req->txn.flags & SRV_TXN_FLAG_PBMAC1) != 0    ? CMP_PROT_PBMAC1
                                   : (req->txn.flags & SRV_TXN_FLAG_KEY_MAC) != 0 ? CMP_PROT_KEY_MAC
                                                                                  : CMP_PROT_PBM;
        if (kind != want) {
            cm_why_set(&req->why, "%s must be protected like its request, with %s, not %s", what,
                       k_kind[want], kind_name);
            CM_BAIL(SRV_E_WRONG_INTEGRITY);
        }
        CM_TRY(srv_authenticate(req, NULL, NULL));
        if (!cm_span_eq(m->header.f.sender_kid.v, req->txn.credential)) {
            cm_why_set(&req->why,
                       "%s must be MAC-protected with the secret of its request (the same "
                       "senderKID)",
                       what);
            CM_BAIL(SRV_E_WRONG_CREDENTIAL);
        }
        return cm_result_make(CM_OK);
    }
    if (kind != CMP_PROT_SIGNATURE) {
        cm_why_set(&req->why, "%s must be signed like its request, not protected with %s", what,
                   kind_name);
        CM_BAIL(SRV_E_WRONG_INTEGRITY);
    }
    if (issued.len != 0 && m->num_extra_certs > 0 && cm_span_eq(m->extra_certs[0], issued)) {
        cm_why_set(&req->why,
                   "%s must be signed with the credential of its request, not with the "
                   "certificate it %s",
                   what, m->body.type == CMP_BODY_CERT_CONF ? "confirms" : "collects");
        CM_BAIL(SRV_E_CONF_BY_NEW_CERT);
    }
    return srv_conf_signer(req, what);
}

static cm_result srv_conf_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    // A transactionID is required of every message (the parser: CMP_E_NO_TRANSACTION_ID).
    cm_result r = store_txn_get(req->w->reader, &req->arena, &req->txn, ca->name,
                                m->header.f.transaction_id.v);
    if (r.code == STORE_E_TXN_NOT_FOUND) {
        cm_why_set(&req->why, "certConf for a transactionID this CA does not know (or no "
                              "longer: the confirmation wait expired)");
        CM_BAIL(SRV_E_UNKNOWN_TXN);
    }
    CM_TRY(r);
    const uint32_t state = req->txn.state;
    if (state == SRV_TXN_RESERVED) {
        // Reserved before signing: nothing was issued (yet, or ever) to confirm.
        cm_why_set(&req->why, "certConf for a transaction whose certificate was not issued (its "
                              "enrolment has not completed)");
        CM_BAIL(SRV_E_UNKNOWN_TXN);
    }
    CM_ENSURE(state != SRV_TXN_IMPLICIT, SRV_E_NO_CONFIRM_NEEDED);
    CM_ENSURE(state == SRV_TXN_WAIT_CONF, SRV_E_CONFIRMED);
    store_cert issued;
    CM_TRY(store_cert_get_by_txn(req->w->reader, &req->arena, &issued, ca->name,
                                 m->header.f.transaction_id.v));
    // The same credentials as the request (RFC 9483 §4.1.1): never the new certificate.
    CM_TRY(srv_txn_authenticate(req, issued.cert_der));
    const cm_span server_nonce = req->txn.sender_nonce;
    if (!m->header.f.recip_nonce.present || !cm_span_eq(m->header.f.recip_nonce.v, server_nonce)) {
        cm_why_set(&req->why,
                   "certConf's recipNonce %s the senderNonce of the certificate's "
                   "response",
                   m->header.f.recip_nonce.present ? "does not match" : "is missing; it must echo");
        CM_BAIL(SRV_E_RECIP_NONCE);
    }
    // A fresh senderNonce (RFC 9810 §5.1.1): not the server's, not the request's again.
    const cm_span sn = m->header.f.sender_nonce.v;
    const cm_span request_nonce = req->txn.request_nonce;
    if (cm_span_eq(sn, server_nonce) || (request_nonce.len > 0 && cm_span_eq(sn, request_nonce))) {
        cm_why_set(&req->why,
                   "certConf's senderNonce repeats the %s's; each message needs a "
                   "fresh one",
                   cm_span_eq(sn, server_nonce) ? "server's response" : "request");
        CM_BAIL(SRV_E_SENDER_NONCE_REUSED);
    }
    // Exactly one CertStatus for the one certificate (an empty list rejects it).
    if (m->body.u.conf.num > 1) {
        cm_why_set(&req->why, "certConf must carry one CertStatus, not %zu", m->body.u.conf.num);
        CM_BAIL(SRV_E_REQ_COUNT);
    }
    if (m->body.u.conf.num == 0) {
        req->conf_reject = true;
        return cm_result_make(CM_OK);
    }
    const cmp_cert_status *cs = &m->body.u.conf.items[0];
    const int64_t want_id = (req->txn.flags & SRV_TXN_FLAG_P10CR) != 0 ? -1 : 0;
    if (cs->cert_req_id != want_id) {
        cm_why_set(&req->why,
                   "the CertStatus certReqId must be %lld, the certificate's (%s), not %lld",
                   (long long)want_id, want_id == -1 ? "issued for a p10cr" : "certReqId 0",
                   (long long)cs->cert_req_id);
        CM_BAIL(SRV_E_CERT_REQ_ID);
    }
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len = 0;
    CM_TRY(cmp_cert_hash(&req->w->dig, hash, &hash_len, issued.cert_der,
                         cs->has_hash_alg ? &cs->hash_alg : NULL));
    if (!cm_span_eq(cs->cert_hash, cm_span_make(hash, hash_len))) {
        if ((req->txn.flags & SRV_TXN_FLAG_ENCR_CERT) != 0) {
            // RFC 4211 §4.2, RFC 9810 §5.2.8.3.2: only the key's holder could decrypt the
            // certificate and hash it.
            cm_why_set(&req->why, "the certHash is not the hash of the certificate this CA "
                                  "encrypted to the requested key: possession not proven");
            CM_BAIL(SRV_E_POP_CERT_HASH);
        }
        CM_BAIL(SRV_E_CERT_HASH);
    }
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
