// Enrolment (RFC 9483 §4.1): ir, cr, kur and p10cr. Authenticate, check the request against
// the profile, sign the TBSCertificate through the HSM, record the certificate and its
// transaction durably, and only then answer ip/cp/kup with it.
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "engine/server/srv_internal.h"

static cm_result srv_collect_exts(srv_request *req, cm_span ext_content)
{
    crmf_ext_iter it;
    crmf_ext_iter_init(&it, ext_content);
    size_t n = 0;
    for (;;) {
        crmf_extension e;
        bool found;
        CM_TRY(crmf_ext_iter_next(&it, &e, &found));
        if (!found) {
            break;
        }
        CM_ENSURE(n < CA_MAX_REQ_EXTS, CM_E_DER_TOO_MANY);
        req->exts[n].oid = e.oid;
        req->exts[n].critical = e.critical;
        req->exts[n].value = e.value;
        n++;
    }
    req->creq.exts = req->exts;
    req->creq.num_exts = n;
    return cm_result_make(CM_OK);
}

// srv_kur_check: the signer is the certificate being updated (RFC 9483 §4.1.3): issued by this
// CA, known to the store and valid, and named by the oldCertID control when present.
static cm_result srv_kur_check(srv_request *req, const crmf_cert_request *cr)
{
    const cm_span issuer = req->signer.issuer;
    const cm_span serial = req->signer.serial;
    if (!cm_span_eq(issuer, ca_authority_subject(req->ca->authority))) {
        cm_why_set(&req->why, "kur must be signed by the certificate to update, issued by this "
                              "CA; the signer's certificate was issued by another CA");
        CM_BAIL(SRV_E_OLD_CERT);
    }
    if (cr->has_old_cert_id) {
        if (!cm_span_eq(cr->old_cert_id.serial, serial) ||
            cr->old_cert_id.issuer.tag != CRMF_GN_DIRECTORY_NAME ||
            !cm_span_eq(cr->old_cert_id.issuer.name, issuer)) {
            cm_why_set(&req->why,
                       "the oldCertID control names another certificate than the signer's");
            CM_BAIL(SRV_E_OLD_CERT);
        }
    }
    // The store keeps serials as the certificate's INTEGER content octets.
    store_cert old;
    cm_result r = store_cert_get(req->w->reader, &req->arena, &old, req->ca->name, serial);
    if (r.code == STORE_E_NOT_FOUND) {
        cm_why_set(&req->why, "this CA has no record of the certificate to update");
        CM_BAIL(SRV_E_OLD_CERT);
    }
    CM_TRY(r);
    if (old.status == STORE_CERT_REVOKED || old.status == STORE_CERT_HOLD) {
        cm_why_set(&req->why, "the certificate to update was %s",
                   old.status == STORE_CERT_HOLD ? "put on hold" : "revoked");
        CM_BAIL(SRV_E_OLD_CERT_REVOKED);
    }
    if (old.status != STORE_CERT_VALID) {
        cm_why_set(&req->why, "the certificate to update was never confirmed (certConf)");
        CM_BAIL(SRV_E_OLD_CERT);
    }
    return cm_result_make(CM_OK);
}

static cm_result srv_enrol_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    const cmp_body_type t = m->body.type;
    ca_trust *trust = t == CMP_BODY_IR || t == CMP_BODY_P10CR ? ca->client_trust : NULL;
    ca_trust *trust2 = ca->own_trust;
    CM_TRY(srv_authenticate(req, trust, trust2));
    CM_TRY(srv_enrol_check(req)); // content rules, before POPO (srv_enrol_check.c)
    if (t == CMP_BODY_KUR && !req->sig_ok) {
        // kur must be signed by the old certificate (RFC 9483 §4.1.3).
        cm_why_set(&req->why,
                   "kur must be signed with the certificate to update, not MAC-protected");
        CM_BAIL(SRV_E_NOT_AUTHORIZED);
    }
    req->resp_type =
        t == CMP_BODY_IR ? CMP_BODY_IP : (t == CMP_BODY_KUR ? CMP_BODY_KUP : CMP_BODY_CP);
    if (t == CMP_BODY_P10CR) {
        const crmf_csr *csr = &m->body.u.p10;
        CM_TRY(crmf_csr_verify(&req->w->crypto, csr, &req->why));
        req->cert_req_id = -1;
        req->creq.subject = csr->subject;
        req->creq.spki = csr->spki.whole;
        if (csr->extensions.len != 0) {
            CM_TRY(srv_collect_exts(req, csr->extensions));
        }
    } else {
        const crmf_cert_req_msgs *msgs = &m->body.u.req;
        if (msgs->num_msgs != 1) {
            cm_why_set(&req->why, "the request must carry exactly one CertReqMsg, not %zu",
                       msgs->num_msgs);
            CM_BAIL(SRV_E_REQ_COUNT);
        }
        const crmf_cert_req_msg *msg = &msgs->msgs[0];
        const crmf_cert_request *cr = &msg->req;
        if (cr->cert_req_id != 0) {
            cm_why_set(&req->why, "the certReqId must be 0, not %lld", (long long)cr->cert_req_id);
            CM_BAIL(SRV_E_CERT_REQ_ID);
        }
        req->cert_req_id = 0;
        cm_why popo_why; // raVerified below may still accept what crmf refused
        cm_why_clear(&popo_why);
        cm_result pr = crmf_popo_verify(&req->w->crypto, msg, &popo_why);
        // raVerified (RFC 4211 §4.1, RFC 9483 §5.2): an RA vouches for the POP; accepted only
        // from a signer configured as an RA of this CA (ra_certs).
        if (pr.code == CRMF_E_POPO_RA_VERIFIED) {
            CM_ENSURE(req->sig_ok && req->signer_is_ra, SRV_E_RA_VERIFIED);
            pr = cm_result_make(CM_OK);
        }
        if (!cm_ok(pr) && cm_why_is_set(&popo_why)) {
            cm_why_set(&req->why, "%s", popo_why.text);
        }
        CM_TRY(pr);
        if (t == CMP_BODY_KUR) {
            CM_TRY(srv_kur_check(req, cr));
        }
        const crmf_template *tm = &cr->tmpl;
        CM_ENSURE(tm->public_key.len != 0, CRMF_E_POPO_NO_KEY);
        CM_TRY(crmf_spki_to_der(&req->arena, &req->creq.spki, tm->public_key));
        if (tm->subject.len != 0) {
            req->creq.subject = tm->subject;
        } else if (t == CMP_BODY_KUR) {
            req->creq.subject = req->signer.subject;
        } else {
            static const uint8_t k_empty_name[] = {0x30, 0x00};
            req->creq.subject = cm_span_make(k_empty_name, sizeof(k_empty_name));
        }
        req->creq.not_before = tm->has_not_before ? tm->not_before : 0;
        req->creq.not_after = tm->has_not_after ? tm->not_after : 0;
        if (tm->extensions.len != 0) {
            CM_TRY(srv_collect_exts(req, tm->extensions));
        }
    }
    CM_TRY(ca_policy_check(ca->profile, ca->authority, &req->dec, &req->creq, req->now, &req->why));
    req->implicit = m->header.implicit_confirm && ca_profile_implicit_confirm(ca->profile);
    // A transactionID already known: a replay or a collision (RFC 9810 §5.1.1).
    store_txn old;
    cm_result tr =
        store_txn_get(req->w->reader, &req->arena, &old, ca->name, m->header.f.transaction_id.v);
    if (cm_ok(tr)) {
        cm_why_set(&req->why, "transactionID already in use: use a fresh one for each enrolment");
        CM_BAIL(SRV_E_TXN_IN_USE);
    }
    CM_ENSURE(tr.code == STORE_E_TXN_NOT_FOUND, tr.code);
    return cm_result_make(CM_OK);
}

static void srv_enrol_sign(srv_request *req)
{
    const srv_ca *ca = req->ca;
    cm_result r = ca_serial_new(req->serial);
    der_builder alg;
    der_builder_init_arena(&alg, &req->arena, 64);
    hsm_sig_alg_marshal(&alg, ca->ca_sig_alg);
    if (cm_ok(r)) {
        r = der_builder_finish(&alg, &req->ca_sig_alg);
    }
    der_builder tb;
    der_builder_init_arena(&tb, &req->arena, 2048);
    if (cm_ok(r)) {
        r = ca_tbs_build(ca->authority, &tb, ca->profile, &req->dec, &req->creq,
                         cm_span_make(req->serial, sizeof(req->serial)), req->ca_sig_alg);
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&tb, &req->tbs);
    }
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_mark(req, SRV_STAGE_BUILD);
    srv_sign_submit(req, ca->ca_key, ca->ca_sig_alg, req->tbs, SRV_ST_SIGN_CERT);
}

void srv_enrol_start(srv_request *req)
{
    cm_result r = srv_enrol_prepare(req);
    r = cm_ok(r) ? store_space_check(req->w->e->p.space, &req->why) : r; // disk nearly full
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_mark(req, SRV_STAGE_VERIFY);
    srv_enrol_sign(req);
}

// srv_subject_text renders the subject as RFC 4514 text for listings (ca_name_to_text), in
// |arena|; "" when the Name cannot be read or the arena is full.
static const char *srv_subject_text(cm_arena *arena, cm_span name)
{
    // Each byte of the Name gives at most a few characters: labels and dotted OIDs are shorter
    // than their DER, hex values take two characters per byte, escapes one more.
    const size_t cap = name.len * 6 + 16;
    char *out = cm_arena_alloc(arena, cap);
    if (out == NULL) {
        return "";
    }
    (void)ca_name_to_text(out, cap, name);
    return out;
}

// srv_serial_content returns the serial as the certificate's INTEGER content octets (the form
// the store keys on): the 16 random bytes, with a leading zero when the top bit is set.
static cm_span srv_serial_content(srv_request *req)
{
    const bool pad = (req->serial[0] & 0x80u) != 0;
    uint8_t *p = cm_arena_alloc(&req->arena, sizeof(req->serial) + 1);
    if (p == NULL) {
        return cm_span_make(NULL, 0);
    }
    size_t n = 0;
    if (pad) {
        p[n++] = 0;
    }
    size_t start = 0;
    while (!pad && start + 1 < sizeof(req->serial) && req->serial[start] == 0 &&
           (req->serial[start + 1] & 0x80u) == 0) {
        start++;
    }
    memcpy(p + n, req->serial + start, sizeof(req->serial) - start);
    return cm_span_make(p, n + sizeof(req->serial) - start);
}

// srv_enrol_record: the certificate is signed; assemble it and make it durable together with
// the transaction before anything is sent.
void srv_enrol_record(srv_request *req)
{
    srv_mark(req, SRV_STAGE_HSM);
    const srv_ca *ca = req->ca;
    const cmp_msg *m = &req->msg;
    der_builder cb;
    der_builder_init_arena(&cb, &req->arena, req->tbs.len + 256);
    cm_result r = ca_signed_assemble(&cb, req->tbs, req->ca_sig_alg,
                                     cm_span_make(req->sig, req->hjob.sig_len));
    if (cm_ok(r)) {
        r = der_builder_finish(&cb, &req->cert);
    }
    if (cm_ok(r) && EVP_Digest(req->creq.spki.p, req->creq.spki.len, req->spki_hash, NULL,
                               req->w->dig.sha256, NULL) != 1) {
        r = cm_result_make(SRV_E_INTERNAL);
    }
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    const cm_span serial = srv_serial_content(req);
    // The certificate first: the transaction row refers to it.
    store_job *tj = &req->sjobs[1];
    store_job_init(tj, STORE_OP_TXN_CREATE, req->w->cq);
    tj->u.txn.ca = ca->name;
    tj->u.txn.transaction_id = m->header.f.transaction_id.v;
    tj->u.txn.state = req->implicit ? SRV_TXN_IMPLICIT : SRV_TXN_WAIT_CONF;
    // The response's senderNonce is drawn now so the transaction records the one it carries.
    (void)RAND_bytes(req->nonce, sizeof(req->nonce));
    req->nonce_set = true;
    tj->u.txn.sender_nonce = cm_span_make(req->nonce, sizeof(req->nonce));
    tj->u.txn.serial = serial;
    tj->u.txn.protection = req->mac_ok ? STORE_AUTH_MAC : STORE_AUTH_SIGNATURE;
    tj->u.txn.credential = req->mac_ok ? m->header.f.sender_kid.v
                                       : cm_span_make(req->signer_hash, sizeof(req->signer_hash));
    const int64_t wait = req->w->e->p.confirm_wait_time > 0 ? req->w->e->p.confirm_wait_time : 300;
    const int64_t win =
        req->w->e->p.message_time_window > 0 ? req->w->e->p.message_time_window : 300;
    tj->u.txn.expires_at = req->now + (req->implicit ? win : wait + win);

    store_job *cj = &req->sjobs[0];
    store_job_init(cj, STORE_OP_CERT_INSERT, req->w->cq);
    store_cert *c = &cj->u.cert;
    c->ca = ca->name;
    c->serial = serial;
    c->subject_der = req->creq.subject;
    c->subject_text = srv_subject_text(&req->arena, req->creq.subject);
    c->not_before = req->dec.not_before;
    c->not_after = req->dec.not_after;
    c->spki_sha256 = cm_span_make(req->spki_hash, sizeof(req->spki_hash));
    c->status = req->implicit ? STORE_CERT_VALID : STORE_CERT_UNCONFIRMED;
    c->transaction_id = m->header.f.transaction_id.v;
    c->requester_kind = tj->u.txn.protection;
    c->requester = tj->u.txn.credential;
    c->cert_der = req->cert;
    c->issued_at = req->now;
    c->confirm_deadline = req->implicit ? 0 : req->now + wait;
    srv_enrol_txn_note(req, &tj->u.txn); // what certConf must match (srv_enrol_check.c)
    req->num_sjobs = 2;
    srv_store_submit(req);
}

void srv_enrol_respond(srv_request *req)
{
    const srv_ca *ca = req->ca;
    cmp_cert_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.cert_req_id = req->cert_req_id;
    resp.status.status = CMP_STATUS_ACCEPTED;
    srv_enrol_check_status(req, &resp.status); // grantedWithMods (srv_enrol_check.c)
    resp.has_certified_key_pair = true;
    resp.cert = req->cert;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = req->resp_type;
    body.u.rep.responses = &resp;
    body.u.rep.num_responses = 1;
    cm_span root;
    if (ca->ca_pubs && req->resp_type == CMP_BODY_IP) {
        root = srv_ca_root(ca->authority);
        body.u.rep.ca_pubs = &root;
        body.u.rep.num_ca_pubs = 1;
    }
    // The issuing chain goes to extraCerts so the client can validate its new certificate.
    srv_add_extra(req, ca->authority);
    srv_respond(req, &body);
}

// srv_enrol_store_failed: when the certificate was recorded but its transaction collided (two
// requests with one transactionID both passed srv_enrol_prepare's lookup before either was
// recorded), the certificate was never delivered: revoke it rather than leave it valid, then
// answer transactionIdInUse.
bool srv_enrol_store_failed(srv_request *req, size_t i, cm_result r)
{
    if (i != 1 || !cm_ok(req->sjobs[0].result)) {
        return false;
    }
    store_job *rj = &req->sjobs[2];
    store_job_init(rj, STORE_OP_CERT_REVOKE, req->w->cq);
    rj->u.ref.ca = req->ca->name;
    rj->u.ref.serial = req->sjobs[0].u.cert.serial;
    rj->u.ref.time = req->now;
    rj->u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    srv_undo_submit(req, rj, r, "cannot revoke undelivered certificate");
    return true;
}
