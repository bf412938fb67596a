// Revocation (RFC 9483 §4.2, RFC 9810 §5.3.9): rr → rp, signed by the certificate being
// revoked or by a configured RA; removeFromCRL releases a certificate on hold (revive: valid
// again, and off the next CRL). A refused revocation is answered in the rp (RFC 9483 §3.6.4)
// once the message itself passed its checks.
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv_internal.h"

// srv_reason_name names a CRLReason (RFC 5280 §5.3.1) for reasons.
static const char *srv_reason_name(int reason)
{
    static const char *const k_names[] = {
        "unspecified",   "keyCompromise",        "cACompromise",    "affiliationChanged",
        "superseded",    "cessationOfOperation", "certificateHold", "(7)",
        "removeFromCRL", "privilegeWithdrawn",   "aACompromise"};
    return reason >= 0 && reason <= 10 ? k_names[reason] : "(unknown)";
}

static const char *srv_status_name(store_cert_status st)
{
    switch (st) {
    case STORE_CERT_UNCONFIRMED:
        return "unconfirmed";
    case STORE_CERT_VALID:
        return "valid";
    case STORE_CERT_REVOKED:
        return "revoked";
    case STORE_CERT_HOLD:
        return "on hold";
    default:
        return "?";
    }
}

// srv_serial_hex writes up to 20 bytes of |serial| as hex into |buf|.
static const char *srv_serial_hex(char buf[48], cm_span serial)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < serial.len && i < 20; i++) {
        used += (size_t)snprintf(buf + used, 48 - used, "%02X", serial.p[i]);
    }
    return buf;
}

// srv_rr_matches: the certificate named by issuer and serial is the one the rest of the
// template describes: its subject and its public key, when given (RFC 9483 §4.2).
static cm_result srv_rr_matches(srv_request *req, const crmf_template *tm, const store_cert *c)
{
    if (tm->subject.len != 0 && !cm_span_eq(tm->subject, c->subject_der)) {
        cm_why_set(&req->why, "the rr's subject is not the subject of certificate %s",
                   c->subject_text);
        CM_BAIL(SRV_E_REV_MISMATCH);
    }
    if (tm->public_key.len != 0) {
        cm_span spki;
        uint8_t h[32];
        CM_TRY(crmf_spki_to_der(&req->arena, &spki, tm->public_key));
        CM_ENSURE(EVP_Digest(spki.p, spki.len, h, NULL, req->w->dig.sha256, NULL) == 1,
                  SRV_E_INTERNAL);
        if (!cm_span_eq(cm_span_make(h, sizeof(h)), c->spki_sha256)) {
            cm_why_set(&req->why, "the rr's public key is not the key of certificate %s",
                       c->subject_text);
            CM_BAIL(SRV_E_REV_MISMATCH);
        }
    }
    return cm_result_make(CM_OK);
}

// RevReqContent ::= SEQUENCE OF RevDetails; RevDetails ::= SEQUENCE { certDetails CertTemplate,
// crlEntryDetails Extensions OPTIONAL }: exactly one, naming issuer and serialNumber, with
// exactly one CRLReason (RFC 9483 §4.2; the parser refuses a repeated or unknown one).
static cm_result srv_rr_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    // Revocation is signature-protected: by the certificate being revoked or by an RA
    // (RFC 9483 §4.2); a MAC is the wrong kind of protection (wrongIntegrity).
    if (!req->sig_ok) {
        cm_why_set(&req->why, "rr must be signed by the certificate to revoke or by an RA of this "
                              "CA; a MAC is not accepted");
        CM_BAIL(SRV_E_WRONG_INTEGRITY);
    }
    req->content_stage = true; // refusals from here on go into the rp
    if (m->body.u.rr.num != 1) {
        cm_why_set(&req->why, "rr must carry exactly one RevDetails, not %zu", m->body.u.rr.num);
        CM_BAIL(SRV_E_REQ_COUNT);
    }
    const cmp_rev_details *rd = &m->body.u.rr.items[0];
    const crmf_template *tm = &rd->tmpl;
    if (tm->serial.len == 0 || tm->issuer.len == 0) {
        cm_why_set(&req->why,
                   "rr must name the certificate by issuer and serialNumber (%s "
                   "missing)",
                   tm->serial.len == 0 && tm->issuer.len == 0 ? "both"
                   : tm->serial.len == 0                      ? "serialNumber"
                                                              : "issuer");
        CM_BAIL(SRV_E_REV_DETAILS);
    }
    if (!cm_span_eq(tm->issuer, ca_authority_subject(ca->authority))) {
        char got[96], want[96];
        if (!ca_name_to_text(got, sizeof(got), tm->issuer) && got[0] == '\0') {
            (void)snprintf(got, sizeof(got), "(unreadable name)");
        }
        (void)ca_name_to_text(want, sizeof(want), ca_authority_subject(ca->authority));
        cm_why_set(&req->why, "the certificate to revoke was issued by %s, not by this CA (%s)",
                   got, want);
        CM_BAIL(SRV_E_OLD_CERT);
    }
    if (!req->signer_is_ra && (!cm_span_eq(req->signer.serial, tm->serial) ||
                               !cm_span_eq(req->signer.issuer, tm->issuer))) {
        cm_why_set(&req->why, "the signer may revoke only its own certificate; this rr names "
                              "another one (only an RA of this CA may)");
        CM_BAIL(SRV_E_NOT_AUTHORIZED);
    }
    if (!rd->has_reason) {
        cm_why_set(&req->why, "rr must carry exactly one CRLReason (reasonCode in "
                              "crlEntryDetails); it has none");
        CM_BAIL(SRV_E_REV_REASON);
    }
    const uint32_t reason = rd->reason;
    if (reason > STORE_REASON_AA_COMPROMISE || reason == 7) {
        cm_why_set(&req->why, "revocation reason %u is not a CRLReason", reason);
        CM_BAIL(SRV_E_REV_REASON);
    }
    store_cert c;
    char hex[48];
    cm_result r = store_cert_get(req->w->reader, &req->arena, &c, ca->name, tm->serial);
    if (r.code == STORE_E_NOT_FOUND) {
        cm_why_set(&req->why, "this CA issued no certificate with serial %s",
                   srv_serial_hex(hex, tm->serial));
        CM_BAIL(SRV_E_OLD_CERT);
    }
    CM_TRY(r);
    CM_TRY(srv_rr_matches(req, tm, &c));
    const bool release = reason == STORE_REASON_REMOVE_FROM_CRL;
    if (release && c.status != STORE_CERT_HOLD) {
        cm_why_set(&req->why,
                   "the certificate is not on hold, so it cannot be removed from the CRL (%s is "
                   "%s; removeFromCRL releases only a certificate revoked with certificateHold)",
                   srv_serial_hex(hex, tm->serial), srv_status_name(c.status));
        CM_BAIL(STORE_E_NOT_ON_HOLD);
    }
    if (c.status == STORE_CERT_REVOKED ||
        (c.status == STORE_CERT_HOLD && reason == STORE_REASON_CERTIFICATE_HOLD)) {
        cm_why_set(&req->why, "the certificate is already %s (reason %s)",
                   c.status == STORE_CERT_HOLD ? "on hold" : "revoked", srv_reason_name(c.reason));
        CM_BAIL(STORE_E_ALREADY_REVOKED);
    }
    store_job *j = &req->sjobs[0];
    store_job_init(j, release ? STORE_OP_CERT_RELEASE : STORE_OP_CERT_REVOKE, req->w->cq);
    j->u.ref.ca = ca->name;
    j->u.ref.serial = tm->serial;
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
