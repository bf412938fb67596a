// Revocation (RFC 9483 §4.2, RFC 9810 §5.3.9): rr → rp, signed by the certificate being
// revoked or by a configured RA; removeFromCRL releases a certificate on hold.
#include <string.h>

#include "engine/server/srv_internal.h"

// RevReqContent ::= SEQUENCE OF RevDetails; RevDetails ::= SEQUENCE { certDetails CertTemplate,
// crlEntryDetails Extensions OPTIONAL }: exactly one, naming issuer and serialNumber.
static cm_result srv_rr_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    // Revocation is signature-protected: by the certificate being revoked or by an RA.
    if (!req->sig_ok) {
        cm_why_set(&req->why, "rr must be signed by the certificate to revoke or by an RA of this "
                              "CA; a MAC is not accepted");
        CM_BAIL(SRV_E_NOT_AUTHORIZED);
    }
    if (m->body.u.rr.num != 1) {
        cm_why_set(&req->why, "rr must carry exactly one RevDetails, not %zu", m->body.u.rr.num);
        CM_BAIL(SRV_E_REQ_COUNT);
    }
    const cmp_rev_details *rd = &m->body.u.rr.items[0];
    if (rd->tmpl.serial.len == 0 || rd->tmpl.issuer.len == 0) {
        cm_why_set(&req->why, "rr must name the certificate by issuer and serialNumber");
        CM_BAIL(SRV_E_BODY);
    }
    if (!cm_span_eq(rd->tmpl.issuer, ca_authority_subject(ca->authority))) {
        cm_why_set(&req->why, "the certificate to revoke was not issued by this CA");
        CM_BAIL(SRV_E_OLD_CERT);
    }
    if (!req->signer_is_ra && (!cm_span_eq(req->signer.serial, rd->tmpl.serial) ||
                               !cm_span_eq(req->signer.issuer, rd->tmpl.issuer))) {
        cm_why_set(&req->why, "the signer may revoke only its own certificate; this rr names "
                              "another one (only an RA of this CA may)");
        CM_BAIL(SRV_E_NOT_AUTHORIZED);
    }
    const uint32_t reason = rd->has_reason ? rd->reason : STORE_REASON_UNSPECIFIED;
    if (reason > STORE_REASON_AA_COMPROMISE || reason == 7) {
        cm_why_set(&req->why, "revocation reason %u is not a CRLReason", reason);
        CM_BAIL(SRV_E_BODY);
    }
    store_job *j = &req->sjobs[0];
    store_job_init(
        j, reason == STORE_REASON_REMOVE_FROM_CRL ? STORE_OP_CERT_RELEASE : STORE_OP_CERT_REVOKE,
        req->w->cq);
    j->u.ref.ca = ca->name;
    j->u.ref.serial = rd->tmpl.serial;
    j->u.ref.time = req->now;
    j->u.ref.reason = (int)reason;
    req->num_sjobs = 1;
    return cm_result_make(CM_OK);
}

void srv_rr_start(srv_request *req)
{
    cm_result r = srv_rr_prepare(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_store_submit(req);
}

void srv_rr_respond(srv_request *req)
{
    cmp_status_info st;
    memset(&st, 0, sizeof(st));
    st.status = CMP_STATUS_ACCEPTED;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_RP;
    body.u.rp.status = &st;
    body.u.rp.num_status = 1;
    srv_respond(req, &body);
}
