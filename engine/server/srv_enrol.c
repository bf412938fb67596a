// Enrolment (RFC 9483 §4.1): ir, cr, kur and p10cr. Authenticate, select the profile
// (certProfile), check the request against it and against what the sender may ask for, reserve
// the transactionID and the serial in the store (one store job that also applies the key-reuse,
// one-update-at-a-time and per-secret rules atomically), sign the TBSCertificate through the
// HSM, record the certificate and its transaction durably, and only then answer ip/cp/kup.
//
// The reservation comes before the signature so that a duplicate transactionID, a reused key or
// a used-up secret costs no HSM signature and leaves no certificate behind (issue 14 §8); a
// signature that fails gives the reservation back.
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "engine/server/srv_internal.h"

cm_result srv_enrol_collect_exts(srv_request *req, cm_span ext_content)
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
// CA and named by the oldCertID control when present. That it is valid in the store, not
// superseded and not being updated already was checked by srv_authenticate; the reservation
// checks the last two again atomically.
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
    store_cert_state old;
    cm_result r = store_cert_state_get(req->w->reader, &old, req->ca->name, serial);
    if (r.code == STORE_E_NOT_FOUND) {
        cm_why_set(&req->why, "this CA has no record of the certificate to update");
        CM_BAIL(SRV_E_OLD_CERT);
    }
    CM_TRY(r);
    req->replaces = serial;
    return cm_result_make(CM_OK);
}

// srv_select_profile applies certProfile (RFC 9483 §3.1, id-it 21): one name, for the one
// request; the CA's own profile or one its clients section offers (`profiles`). Without it the
// CA's profile.
static cm_result srv_select_profile(srv_request *req)
{
    const srv_ca *ca = req->ca;
    const cmp_header *h = &req->msg.header;
    req->profile = ca->profile;
    req->profile_name = ca->profile_name;
    req->policy = ca->policy;
    if (h->num_cert_profiles == 0) {
        return cm_result_make(CM_OK);
    }
    if (h->num_cert_profiles > 1) {
        cm_why_set(&req->why, "certProfile must name one profile (one per request), not %zu",
                   h->num_cert_profiles);
        CM_BAIL(SRV_E_PROFILE);
    }
    const cm_span want = h->cert_profiles[0];
    if (ca->profile_name != NULL && strlen(ca->profile_name) == want.len &&
        memcmp(ca->profile_name, want.p, want.len) == 0) {
        return cm_result_make(CM_OK);
    }
    for (size_t i = 0; i < ca->num_profiles; i++) {
        const srv_profile *p = &ca->profiles[i];
        if (strlen(p->name) == want.len && memcmp(p->name, want.p, want.len) == 0) {
            req->profile = p->profile;
            req->profile_name = p->name;
            req->policy = p->policy;
            return cm_result_make(CM_OK);
        }
    }
    // The offered names, for the reason.
    char offered[120] = "";
    size_t used = 0;
    for (size_t i = 0; i <= ca->num_profiles && used + 1 < sizeof(offered); i++) {
        const char *n = i == 0 ? ca->profile_name : ca->profiles[i - 1].name;
        if (n != NULL) {
            const int k =
                snprintf(offered + used, sizeof(offered) - used, "%s%s", used == 0 ? "" : ", ", n);
            used += k > 0 ? (size_t)k : 0;
        }
    }
    char got[64];
    const size_t n = want.len < sizeof(got) - 1 ? want.len : sizeof(got) - 1;
    for (size_t i = 0; i < n; i++) {
        got[i] = want.p[i] >= 0x20 && want.p[i] < 0x7f ? (char)want.p[i] : '?';
    }
    got[n] = '\0';
    cm_why_set(&req->why, "certProfile '%s' is not a profile this CA offers (offered: %s)", got,
               used == 0 ? "none by name" : offered);
    CM_BAIL(SRV_E_PROFILE);
}

// srv_check_subject: what the authenticated sender may ask for (issue 14 policy). A
// certificate-signed cr or kur asks for its signer's subject (an empty one means that one)
// unless the profile says subject_from = request; a MAC credential with a subject_pattern
// asks only for subjects matching it.
static cm_result srv_check_subject(srv_request *req, cmp_body_type t)
{
    if (req->sig_ok && !req->signer_is_ra && (t == CMP_BODY_CR || t == CMP_BODY_KUR)) {
        static const uint8_t k_empty_name[] = {0x30, 0x00};
        const cm_span empty = cm_span_make(k_empty_name, sizeof(k_empty_name));
        if (req->creq.subject.len == 0 || cm_span_eq(req->creq.subject, empty)) {
            req->creq.subject = req->signer.subject;
        } else if (!req->policy.subject_from_request &&
                   !cm_span_eq(req->creq.subject, req->signer.subject)) {
            char got[96], want[96];
            if (!ca_name_to_text(got, sizeof(got), req->creq.subject) && got[0] == '\0') {
                (void)snprintf(got, sizeof(got), "(unreadable name)");
            }
            if (!ca_name_to_text(want, sizeof(want), req->signer.subject) && want[0] == '\0') {
                (void)snprintf(want, sizeof(want), "(unreadable name)");
            }
            cm_why_set(&req->why,
                       "a %s signed by a certificate may only request its subject (%s), not %s "
                       "(profile %s: subject_from = signer)",
                       t == CMP_BODY_KUR ? "kur" : "cr", want, got,
                       req->profile_name != NULL ? req->profile_name : "default");
            CM_BAIL(SRV_E_SUBJECT_BINDING);
        }
    }
    if (req->mac_ok && req->secret != NULL && req->secret->subject_pattern != NULL) {
        char text[512];
        const bool whole = ca_name_to_text(text, sizeof(text), req->creq.subject);
        if (!whole || !ca_subject_match(req->secret->subject_pattern, text)) {
            cm_why_set(&req->why, "the subject %s does not match this secret's subject_pattern %s",
                       text[0] != '\0' ? text : "(empty or unreadable)",
                       req->secret->subject_pattern);
            CM_BAIL(SRV_E_SUBJECT_PATTERN);
        }
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
    req->resp_type =
        t == CMP_BODY_IR ? CMP_BODY_IP : (t == CMP_BODY_KUR ? CMP_BODY_KUP : CMP_BODY_CP);
    // The profile first: the content rules check against the one the request selected.
    CM_TRY(srv_select_profile(req));
    // Content rules, before POPO (srv_enrol_check.c): a kur signed, not MAC-protected; one
    // CertReqMsg with certReqId 0; the key the profile takes; raVerified only from an RA.
    CM_TRY(srv_enrol_check(req));
    if (t == CMP_BODY_P10CR) {
        const crmf_csr *csr = &m->body.u.p10;
        CM_TRY(crmf_csr_verify(&req->w->crypto, csr, &req->why));
        req->cert_req_id = -1;
        req->creq.subject = csr->subject;
        req->creq.spki = csr->spki.whole;
        if (csr->extensions.len != 0) {
            CM_TRY(srv_enrol_collect_exts(req, csr->extensions));
        }
    } else {
        // srv_enrol_check made sure of exactly one CertReqMsg with certReqId 0.
        const crmf_cert_req_msg *msg = &m->body.u.req.msgs[0];
        const crmf_cert_request *cr = &msg->req;
        req->cert_req_id = 0;
        // Central key generation, encrCert, encryptedKey (srv_ckg.c) or a signature POPO.
        CM_TRY(srv_ckg_classify(req, msg));
        if (req->ckg.kind == SRV_CKG_NONE) {
            cm_why popo_why; // raVerified below may still accept what crmf refused
            cm_why_clear(&popo_why);
            cm_result pr = crmf_popo_verify(&req->w->crypto, msg, &popo_why);
            // raVerified (RFC 4211 §4.1, RFC 9483 §5.2): an RA vouches for the POP;
            // srv_enrol_check accepted it only from a signer configured as an RA of this CA and
            // valid as one.
            if (pr.code == CRMF_E_POPO_RA_VERIFIED) {
                CM_ENSURE(req->sig_ok && req->signer_is_ra, SRV_E_RA_VERIFIED);
                pr = cm_result_make(CM_OK);
            }
            if (!cm_ok(pr) && cm_why_is_set(&popo_why)) {
                cm_why_set(&req->why, "%s", popo_why.text);
            }
            CM_TRY(pr);
        }
        if (t == CMP_BODY_KUR) {
            CM_TRY(srv_kur_check(req, cr));
        }
        const crmf_template *tm = &cr->tmpl;
        if (req->ckg.kind != SRV_CKG_NONE) {
            CM_TRY(srv_ckg_prepare(req, msg)); // sets creq.spki (a generated key's for KEYGEN)
        } else {
            CM_ENSURE(tm->public_key.len != 0, CRMF_E_POPO_NO_KEY);
            CM_TRY(crmf_spki_to_der(&req->arena, &req->creq.spki, tm->public_key));
        }
        if (t == CMP_BODY_KUR && cm_span_eq(req->creq.spki, req->signer.spki)) {
            cm_why_set(&req->why, "kur must certify a new key; the request has the key of the "
                                  "certificate it updates");
            CM_BAIL(SRV_E_SAME_KEY);
        }
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
            CM_TRY(srv_enrol_collect_exts(req, tm->extensions));
        }
    }
    CM_TRY(srv_check_subject(req, t));
    CM_TRY(
        ca_policy_check(req->profile, ca->authority, &req->dec, &req->creq, req->now, &req->why));
    // An encrypted certificate's certConf is its proof of possession: never implicit.
    req->implicit = m->header.implicit_confirm && ca_profile_implicit_confirm(req->profile) &&
                    req->ckg.kind != SRV_CKG_ENCR_CERT;
    CM_ENSURE(EVP_Digest(req->creq.spki.p, req->creq.spki.len, req->spki_hash, NULL,
                         req->w->dig.sha256, NULL) == 1,
              SRV_E_INTERNAL);
    return cm_result_make(CM_OK);
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

// srv_txn_expiry: how long the transaction row lives (the confirmation wait and the clock
// window after issuance; for a request that waits, its waiting time first).
static int64_t srv_txn_expiry(const srv_request *req)
{
    const int64_t wait = req->w->e->p.confirm_wait_time > 0 ? req->w->e->p.confirm_wait_time : 300;
    const int64_t win =
        req->w->e->p.message_time_window > 0 ? req->w->e->p.message_time_window : 300;
    if (req->wait != SRV_WAIT_NONE) {
        return req->now + req->w->e->p.waiting_timeout + wait + win;
    }
    return req->now + (req->implicit ? win : wait + win);
}

// srv_fill_reservation makes |j| the request's reservation (or, with STORE_OP_TXN_UNRESERVE,
// its undo).
static void srv_fill_reservation(srv_request *req, store_job *j, store_op op)
{
    const cmp_msg *m = &req->msg;
    store_job_init(j, op, req->w->cq);
    store_reservation *v = &j->u.rsv;
    v->ca = req->ca->name;
    v->transaction_id = m->header.f.transaction_id.v;
    v->serial = req->serial_content;
    v->state = SRV_TXN_RESERVED;
    v->protection = req->mac_ok ? STORE_AUTH_MAC : STORE_AUTH_SIGNATURE;
    v->credential = req->mac_ok ? m->header.f.sender_kid.v
                                : cm_span_make(req->signer_hash, sizeof(req->signer_hash));
    v->expires_at = srv_txn_expiry(req);
    v->spki_sha256 = cm_span_make(req->spki_hash, sizeof(req->spki_hash));
    v->check_key = !req->policy.allow_key_reuse;
    v->replaces = req->replaces;
    v->max_uses = req->mac_ok && req->secret != NULL ? req->secret->max_certs : 0;
}

// srv_enrol_tbs builds the TBSCertificate under the serial drawn (req->tbs).
static cm_result srv_enrol_tbs(srv_request *req)
{
    const srv_ca *ca = req->ca;
    der_builder alg;
    der_builder_init_arena(&alg, &req->arena, 64);
    hsm_sig_alg_marshal(&alg, ca->ca_sig_alg);
    cm_result r = der_builder_finish(&alg, &req->ca_sig_alg);
    der_builder tb;
    der_builder_init_arena(&tb, &req->arena, 2048);
    if (cm_ok(r)) {
        r = ca_tbs_build(ca->authority, &tb, req->profile, &req->dec, &req->creq,
                         cm_span_make(req->serial, sizeof(req->serial)), req->ca_sig_alg);
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&tb, &req->tbs);
    }
    return r;
}

// srv_enrol_reserve draws a serial and reserves it with the transactionID (one store job). A
// request that waits (srv_pending.c) also gets its TBSCertificate now: the reservation and the
// pending row that keeps it go to the store as one job (STORE_OP_PENDING_ADD).
static void srv_enrol_reserve(srv_request *req)
{
    cm_result r = ca_serial_new(req->serial);
    if (cm_ok(r)) {
        req->serial_content = srv_serial_content(req);
        r = cm_result_make(req->serial_content.len != 0 ? CM_OK : CM_E_NOMEM);
    }
    if (cm_ok(r) && req->wait != SRV_WAIT_NONE) {
        r = srv_enrol_tbs(req);
    }
    if (!cm_ok(r)) {
        srv_pending_cancel(req);
        srv_fail(req, r);
        return;
    }
    req->phase = SRV_ENROL_RESERVING;
    srv_fill_reservation(req, &req->sjobs[0], STORE_OP_TXN_RESERVE);
    if (req->wait != SRV_WAIT_NONE) {
        const store_reservation rsv = req->sjobs[0].u.rsv;
        srv_pending_fill(req, &req->sjobs[0], &rsv);
    }
    req->num_sjobs = 1;
    srv_store_submit(req);
}

// srv_enrol_sign builds the TBSCertificate under the reserved serial and hands it to the HSM.
static void srv_enrol_sign(srv_request *req)
{
    const srv_ca *ca = req->ca;
    const cm_result r = srv_enrol_tbs(req);
    if (!cm_ok(r)) {
        if (!srv_enrol_sign_failed(req, r)) {
            srv_fail(req, r);
        }
        return;
    }
    srv_mark(req, SRV_STAGE_BUILD);
    req->phase = SRV_ENROL_SIGNING;
    srv_sign_submit(req, ca->ca_key, ca->ca_sig_alg, req->tbs, SRV_ST_SIGN_CERT);
}

void srv_enrol_proceed(srv_request *req)
{
    cm_result r = store_space_check(req->w->e->p.space, &req->why); // disk nearly full
    srv_wait wait = SRV_WAIT_NONE;
    if (cm_ok(r)) {
        r = srv_pending_decide(req, &wait); // delayed delivery (srv_pending.c)
    }
    if (cm_ok(r) && wait != SRV_WAIT_NONE) {
        r = srv_ckg_may_wait(req, wait); // a generated key or an encrCert cannot wait
        if (!cm_ok(r)) {
            srv_pending_cancel(req);
        }
    }
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    req->wait = wait;
    srv_mark(req, SRV_STAGE_VERIFY);
    srv_enrol_reserve(req);
}

void srv_enrol_start(srv_request *req)
{
    cm_result r = srv_enrol_prepare(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_enrol_proceed(req);
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

// srv_enrol_record: the certificate is signed; assemble it and make it durable together with
// the transaction before anything is sent.
static void srv_enrol_store(srv_request *req);

void srv_enrol_record(srv_request *req)
{
    if (req->ckg.kga_signing) {
        // The KGA's signature over the generated key's package is back (srv_ckg.c).
        cm_result r = srv_ckg_after_kga(req);
        if (!cm_ok(r)) {
            if (!srv_enrol_sign_failed(req, r)) {
                srv_fail(req, r);
            }
            return;
        }
        srv_enrol_store(req);
        return;
    }
    srv_mark(req, SRV_STAGE_HSM);
    der_builder cb;
    der_builder_init_arena(&cb, &req->arena, req->tbs.len + 256);
    cm_result r = ca_signed_assemble(&cb, req->tbs, req->ca_sig_alg,
                                     cm_span_make(req->sig, req->hjob.sig_len));
    if (cm_ok(r)) {
        r = der_builder_finish(&cb, &req->cert);
    }
    bool submitted = false;
    if (cm_ok(r) && req->ckg.kind != SRV_CKG_NONE) {
        r = srv_ckg_after_cert(req, &submitted); // KEYGEN: the KGA's signature goes to the HSM
    }
    if (!cm_ok(r)) {
        if (!srv_enrol_sign_failed(req, r)) {
            srv_fail(req, r);
        }
        return;
    }
    if (!submitted) {
        srv_enrol_store(req);
    }
}

// srv_enrol_store makes the certificate durable together with its transaction.
static void srv_enrol_store(srv_request *req)
{
    const srv_ca *ca = req->ca;
    const cmp_msg *m = &req->msg;
    const cm_span serial = req->serial_content;
    // The certificate first: the transaction row then names it (its foreign key).
    store_job *tj = &req->sjobs[1];
    store_job_init(tj, STORE_OP_TXN_UPDATE, req->w->cq);
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
    tj->u.txn.expires_at = srv_txn_expiry(req);
    const int64_t wait = req->w->e->p.confirm_wait_time > 0 ? req->w->e->p.confirm_wait_time : 300;

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
    // A kur replaces the signer's certificate: superseded once this one is valid (at once under
    // implicitConfirm, else at certConf), revoked too with the profile's revoke_on_update.
    c->replaces = req->replaces;
    c->revoke_replaced = req->replaces.len != 0 && req->policy.revoke_on_update;
    srv_enrol_txn_note(req, &tj->u.txn); // what certConf must match (srv_enrol_check.c)
    req->num_sjobs = 2;
    req->phase = SRV_ENROL_RECORDING;
    srv_store_submit(req);
}

void srv_enrol_respond(srv_request *req)
{
    if (req->phase == SRV_ENROL_RESERVING && req->wait != SRV_WAIT_NONE) {
        srv_pending_accepted(req); // reserved and recorded as waiting: answer `waiting`
        return;
    }
    if (req->phase == SRV_ENROL_RESERVING) {
        srv_enrol_sign(req); // reserved: now the signature
        return;
    }
    const srv_ca *ca = req->ca;
    cmp_cert_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.cert_req_id = req->cert_req_id;
    resp.status.status = CMP_STATUS_ACCEPTED;
    srv_enrol_check_status(req, &resp.status); // grantedWithMods (srv_enrol_check.c)
    resp.has_certified_key_pair = true;
    resp.cert = req->cert;
    if (req->ckg.kind == SRV_CKG_ENCR_CERT) {
        resp.cert = cm_span_make(NULL, 0); // CertOrEncCert.encryptedCert (srv_ckg.c)
        resp.encrypted_cert = req->ckg.encrypted_cert;
    }
    resp.private_key = req->ckg.private_key; // central key generation: the key, encrypted
    req->pvno3 = resp.private_key.len != 0 || resp.encrypted_cert.len != 0;
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

// srv_enrol_reservation_failed explains a refused reservation, or draws another serial when
// the one drawn was taken (a 128-bit collision: practically never, but the serial is unique per
// CA by construction, also across nodes sharing the store). Returns true when it resubmitted.
static bool srv_enrol_reservation_failed(srv_request *req, cm_result r)
{
    char sn[48];
    switch (r.code) {
    case STORE_E_DUPLICATE_SERIAL:
        if (++req->serial_tries < 4) {
            srv_enrol_reserve(req);
            return true;
        }
        break;
    case STORE_E_TXN_IN_USE:
        cm_why_set(&req->why, "transactionID already in use: use a fresh one for each enrolment");
        break;
    case STORE_E_KEY_REUSED:
        cm_why_set(&req->why,
                   "this CA already certified the requested public key, or an enrolment of it "
                   "is in progress; generate a new key (profile %s: allow_key_reuse = off)",
                   req->profile_name != NULL ? req->profile_name : "default");
        break;
    case STORE_E_LIMIT: {
        char kid[80];
        cm_why_set(&req->why,
                   "the secret of senderKID %s has enrolled all the certificates it may (%u: "
                   "max_certs / once)",
                   srv_bytes_text(kid, req->msg.header.f.sender_kid.v),
                   req->secret != NULL ? req->secret->max_certs : 0);
        break;
    }
    case STORE_E_UPDATE_PENDING:
        cm_why_set(&req->why,
                   "the certificate to update (serial %s) was already updated, or another "
                   "update of it is in progress",
                   srv_serial_text(sn, req->replaces));
        break;
    case STORE_E_ALREADY_REVOKED:
        cm_why_set(&req->why, "the certificate to update (serial %s) was revoked",
                   srv_serial_text(sn, req->replaces));
        break;
    default:
        break;
    }
    return false;
}

// srv_enrol_store_failed: a refused reservation is answered (see above). A record that failed
// after its certificate was inserted (the transaction row could not be updated) leaves a
// certificate that was never delivered: it is revoked rather than left valid. A record that
// failed before gives the reservation back.
bool srv_enrol_store_failed(srv_request *req, size_t i, cm_result r)
{
    if (req->phase == SRV_ENROL_RESERVING) {
        const bool again = srv_enrol_reservation_failed(req, r);
        if (!again) {
            srv_pending_cancel(req); // it does not wait after all
        }
        return again;
    }
    store_job *rj = &req->sjobs[2];
    if (i == 1 && cm_ok(req->sjobs[0].result)) {
        store_job_init(rj, STORE_OP_CERT_REVOKE, req->w->cq);
        rj->u.ref.ca = req->ca->name;
        rj->u.ref.serial = req->sjobs[0].u.cert.serial;
        rj->u.ref.time = req->now;
        rj->u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
        srv_undo_submit(req, rj, r, "cannot revoke undelivered certificate");
        return true;
    }
    srv_fill_reservation(req, rj, STORE_OP_TXN_UNRESERVE);
    srv_undo_submit(req, rj, r, "cannot give back the reservation of an unrecorded certificate");
    return true;
}

bool srv_enrol_sign_failed(srv_request *req, cm_result r)
{
    if (req->phase != SRV_ENROL_SIGNING) {
        return false;
    }
    // Nothing was signed: the transactionID, the key and the secret's use are free again.
    store_job *rj = &req->sjobs[2];
    srv_fill_reservation(req, rj, STORE_OP_TXN_UNRESERVE);
    srv_undo_submit(req, rj, r, "cannot give back the reservation of an unsigned certificate");
    return true;
}
