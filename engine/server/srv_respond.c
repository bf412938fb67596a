// Responses: the header, the protection (the request's MAC, or a signature by the CMP key
// through the HSM), rejections (in an error message, or in the request's own response type:
// RFC 9483 §3.6.4) and extraCerts. Every answer the server sends is built here.
#include <string.h>

#include <openssl/rand.h>

#include "engine/server/srv_internal.h"

// --- extraCerts -----------------------------------------------------------------------------

cm_span srv_ca_root(const ca_authority *a)
{
    const size_t n = ca_authority_num_chain(a);
    return n == 0 ? ca_authority_cert(a) : ca_authority_chain(a, n - 1);
}

// srv_add_extra_cert appends |c| to the response's extraCerts unless it is there already.
static void srv_add_extra_cert(srv_request *req, cm_span c)
{
    bool dup = false;
    for (size_t k = 0; k < req->num_extra; k++) {
        dup |= cm_span_eq(req->extra[k], c);
    }
    if (!dup && req->num_extra < SRV_MAX_EXTRA_OUT) {
        req->extra[req->num_extra++] = c;
    }
}

void srv_add_extra(srv_request *req, const ca_authority *a)
{
    const size_t n = ca_authority_num_chain(a);
    for (size_t i = 0; i <= n; i++) {
        srv_add_extra_cert(req, i == 0 ? ca_authority_cert(a) : ca_authority_chain(a, i - 1));
    }
}

// srv_add_extra_first puts the certificates of |a| in front of the extraCerts gathered so far:
// the CMP protection certificate must come first (RFC 9483 §3.3, RFC 9810 §5.1).
static void srv_add_extra_first(srv_request *req, const ca_authority *a)
{
    cm_span prev[SRV_MAX_EXTRA_OUT];
    const size_t num_prev = req->num_extra;
    memcpy(prev, req->extra, num_prev * sizeof(prev[0]));
    req->num_extra = 0;
    srv_add_extra(req, a);
    for (size_t i = 0; i < num_prev; i++) {
        srv_add_extra_cert(req, prev[i]);
    }
}

// --- responses ----------------------------------------------------------------------------

void srv_finish_response(srv_request *req, const cm_span *prot)
{
    srv_mark(req, SRV_STAGE_RESPOND);
    cmp_msg_writer_finish(&req->mw, prot, 0, req->extra, req->num_extra);
    cm_span out;
    if (!cm_ok(der_builder_finish(&req->rb, &out))) {
        // The arena cap or an encoding bug: nothing sensible can be sent.
        req->response = cm_span_make(NULL, 0);
        req->error = cm_result_make(SRV_E_INTERNAL);
    } else {
        req->response = out;
        if (prot != NULL) {
            srv_resend_keep(req); // a resend of this request gets this answer (issue 23)
        }
    }
    req->state = SRV_ST_DONE;
}

// srv_error_unsigned reports whether the answer being built is an error to a message that
// could not be authenticated (nor parsed) whose peer has spent its error_signatures_per_peer:
// it then goes out without protection instead of costing an HSM signature. RFC 9810 §5.1.3
// makes protection optional in a PKIMessage and RFC 9483 §3.6.4 says an error SHOULD be
// protected; a forged or garbage request can be answered at the rate it is sent only by
// protecting the answer at a rate the HSM can afford, and the SHOULD's exception is that
// case. An authenticated request's rejection is always protected.
static bool srv_error_unsigned(srv_request *req)
{
    srv_budget *b = req->w->e->budget;
    if (b == NULL || !req->failing || req->sig_ok || req->mac_ok ||
        srv_budget_params_get(b)->error_signatures_per_peer == 0) {
        return false;
    }
    return !srv_budget_error_signature(b, req->peer, srv_now_ms());
}

void srv_respond(srv_request *req, const cmp_body *body)
{
    const srv_ca *ca = req->ca;
    req->resp_body = body; // srv_sign_submit may answer it again, MAC-protected
    const cmp_header *h = req->have_header ? &req->msg.header : NULL;
    cmp_header_fields *rh = &req->rh;
    memset(rh, 0, sizeof(*rh));
    // Answer in the client's version; outside our range, the nearest we support (RFC 9810 §7).
    rh->pvno = h == NULL ? 2 : (h->f.pvno > 3 ? 3 : (h->f.pvno < 2 ? 2 : h->f.pvno));
    if (req->pvno3) {
        rh->pvno = 3; // an EnvelopedData in the response needs cmp2021 (RFC 9810 §7)
    }
    rh->sender_name = ca_authority_subject(ca->cmp_cert);
    if (h != NULL) {
        rh->recipient_gn = h->f.sender_gn;
        rh->recipient_name = h->f.sender_name;
        rh->transaction_id = h->f.transaction_id;
        if (h->f.sender_nonce.present) {
            rh->recip_nonce = h->f.sender_nonce;
        }
    }
    if (!rh->transaction_id.present) {
        // RFC 9810 §5.1.1: the server generates a transactionID when the client gave none.
        uint8_t *tid = cm_arena_alloc(&req->arena, SRV_NONCE_LEN);
        if (tid != NULL && RAND_bytes(tid, SRV_NONCE_LEN) == 1) {
            rh->transaction_id.present = true;
            rh->transaction_id.v = cm_span_make(tid, SRV_NONCE_LEN);
        }
    }
    if (!req->nonce_set) {
        (void)RAND_bytes(req->nonce, sizeof(req->nonce));
        req->nonce_set = true;
    }
    rh->sender_nonce.present = true;
    rh->sender_nonce.v = cm_span_make(req->nonce, sizeof(req->nonce));
    rh->has_message_time = true;
    rh->message_time = req->now;
    if (req->implicit && (body->type == CMP_BODY_IP || body->type == CMP_BODY_CP ||
                          body->type == CMP_BODY_KUP || body->type == CMP_BODY_CCP)) {
        req->ginfo[0] = cmp_itav_implicit_confirm();
        rh->general_info = req->ginfo;
        rh->num_general_info = 1;
    }
    // A nested answer is signed by the CMP key even when the RA's MAC verified (force_sig).
    const bool use_mac =
        req->mac_ok && (req->force_mac || (!ca->sign_mac_responses && !req->force_sig));
    if (!use_mac && srv_error_unsigned(req)) {
        // Without protection: no protectionAlg, no senderKID, no extraCerts.
        der_builder_init_arena(&req->rb, &req->arena, 1024);
        cmp_msg_writer_begin(&req->mw, &req->rb, rh, body);
        srv_finish_response(req, NULL);
        return;
    }
    // The protection algorithm goes into the header before the protected part is written.
    der_builder alg;
    der_builder_init_arena(&alg, &req->arena, 128);
    if (use_mac) {
        cmp_mac_key_put_alg(&alg, &req->mac_key);
        if (h != NULL && h->f.sender_kid.present) {
            rh->sender_kid = h->f.sender_kid; // names the shared secret
        }
    } else {
        hsm_sig_alg_marshal(&alg, ca->cmp_sig_alg);
        rh->sender_kid.present = true;
        rh->sender_kid.v = ca_authority_ski(ca->cmp_cert);
        srv_add_extra_first(req, ca->cmp_cert);
    }
    cm_span alg_der;
    if (!cm_ok(der_builder_finish(&alg, &alg_der))) {
        req->response = cm_span_make(NULL, 0);
        req->state = SRV_ST_DONE;
        return;
    }
    rh->protection_alg = alg_der;
    der_builder_init_arena(&req->rb, &req->arena, req->resp_hint != 0 ? req->resp_hint : 4096);
    cmp_msg_writer_begin(&req->mw, &req->rb, rh, body);
    const cm_span pp = cmp_msg_writer_protected_part(&req->mw);
    if (use_mac) {
        uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
        size_t mac_len = 0;
        if (!cm_ok(cmp_mac_compute(req->w->e->p.prot, mac, sizeof(mac), &mac_len, &req->mac_key,
                                   pp))) {
            der_builder_fail(&req->rb, SRV_E_INTERNAL);
        }
        const cm_span prot = cm_span_make(mac, mac_len);
        srv_finish_response(req, &prot);
        return;
    }
    cm_span tbs;
    if (pp.len == 0 || !cm_ok(cmp_protect_sign_input(&req->arena, &tbs, pp))) {
        srv_finish_response(req, NULL);
        return;
    }
    srv_sign_submit(req, ca->cmp_key, ca->cmp_sig_alg, tbs, SRV_ST_SIGN_RESP);
    req->resp_body = NULL;
}

// srv_utf8_text copies |in| into |arena| as valid UTF-8 for a UTF8String: control characters
// and bytes that do not form a UTF-8 sequence become '?' (a reason cut to fit its buffer may
// end inside a sequence). Returns an empty span when the arena is full.
static cm_span srv_utf8_text(cm_arena *arena, const char *in)
{
    const size_t len = strlen(in);
    uint8_t *out = cm_arena_alloc(arena, len);
    if (out == NULL) {
        return cm_span_make(NULL, 0);
    }
    const uint8_t *p = (const uint8_t *)in;
    size_t i = 0;
    while (i < len) {
        const uint8_t c = p[i];
        size_t n = c < 0x80                   ? 1
                   : (c >= 0xc2 && c <= 0xdf) ? 2
                   : (c >= 0xe0 && c <= 0xef) ? 3
                   : (c >= 0xf0 && c <= 0xf4) ? 4
                                              : 0;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++) {
            ok = (p[i + k] & 0xc0) == 0x80;
        }
        // No overlong three- and four-byte forms, no surrogates, nothing above U+10FFFF.
        if (ok && n == 3) {
            ok = !(c == 0xe0 && p[i + 1] < 0xa0) && !(c == 0xed && p[i + 1] >= 0xa0);
        } else if (ok && n == 4) {
            ok = !(c == 0xf0 && p[i + 1] < 0x90) && !(c == 0xf4 && p[i + 1] >= 0x90);
        }
        if (!ok || (n == 1 && (c < 0x20 || c == 0x7f))) {
            out[i] = '?';
            i++;
            continue;
        }
        memcpy(out + i, p + i, n);
        i += n;
    }
    return cm_span_make(out, len);
}

bool srv_rejects_content(const srv_request *req, cm_result r)
{
    if (!req->content_stage || !req->have_msg) {
        return false;
    }
    switch (req->msg.body.type) {
    case CMP_BODY_IR:
    case CMP_BODY_CR:
    case CMP_BODY_P10CR:
    case CMP_BODY_KUR:
    case CMP_BODY_RR:
    case CMP_BODY_CCR:
        break;
    default:
        return false;
    }
    const uint32_t cls = cm_result_class(r);
    if (cls != CM_CLASS_PROTO && cls != CM_CLASS_POLICY) {
        return false; // the server failed, not the request
    }
    switch (cm_code_failinfo(r.code)) {
    case CM_FAIL_BAD_MESSAGE_CHECK:
    case CM_FAIL_BAD_TIME:
    case CM_FAIL_BAD_SENDER_NONCE:
    case CM_FAIL_BAD_RECIPIENT_NONCE:
    case CM_FAIL_TRANSACTION_ID_IN_USE:
    case CM_FAIL_UNSUPPORTED_VERSION:
    case CM_FAIL_WRONG_AUTHORITY:
    case CM_FAIL_WRONG_INTEGRITY:
    case CM_FAIL_SIGNER_NOT_TRUSTED:
    case CM_FAIL_SYSTEM_UNAVAIL:
    case CM_FAIL_SYSTEM_FAILURE:
        return false; // about the message as a whole (RFC 9483 §3.5)
    default:
        return true;
    }
}

// srv_status_text marshals |text| as a PKIFreeText of one UTF8String into the arena; an
// empty span when there is nothing to say or no room.
static cm_span srv_status_text(srv_request *req, const char *text)
{
    const cm_span t = srv_utf8_text(&req->arena, text);
    if (t.len == 0) {
        return t;
    }
    der_builder b;
    der_builder_init_arena(&b, &req->arena, t.len + 16);
    cmp_free_text_marshal(&b, &t, 1);
    cm_span out;
    return cm_ok(der_builder_finish(&b, &out)) ? out : cm_span_make(NULL, 0);
}

// srv_reject_body fills |body| with the request's own response type carrying |st|: one
// CertResponse (the request's certReqId; -1 for p10cr) in an ip/cp/kup, or one PKIStatusInfo
// in an rp. |resp| is the caller's storage for the CertResponse.
static void srv_reject_body(const srv_request *req, cmp_body *body, cmp_cert_response *resp,
                            cmp_status_info *st)
{
    const cmp_body_type t = req->msg.body.type;
    if (t == CMP_BODY_RR) {
        body->type = CMP_BODY_RP;
        body->u.rp.status = st;
        body->u.rp.num_status = 1;
        return;
    }
    memset(resp, 0, sizeof(*resp));
    resp->status = *st;
    resp->cert_req_id = -1;
    if (t != CMP_BODY_P10CR) {
        const crmf_cert_req_msgs *msgs = &req->msg.body.u.req;
        resp->cert_req_id = msgs->num_msgs > 0 ? msgs->msgs[0].req.cert_req_id : 0;
    }
    body->type = t == CMP_BODY_IR    ? CMP_BODY_IP
                 : t == CMP_BODY_KUR ? CMP_BODY_KUP
                 : t == CMP_BODY_CCR ? CMP_BODY_CCP
                                     : CMP_BODY_CP;
    body->u.rep.responses = resp;
    body->u.rep.num_responses = 1;
}

void srv_fail(srv_request *req, cm_result r)
{
    if (cm_ok(r)) {
        r = cm_result_make(SRV_E_INTERNAL); // a handler bug: never answer "rejected, OK"
    }
    req->error = r;
    req->fail_bit = cm_code_failinfo(r.code);
    // The reason a step set, else the code's explanation; kept for the log line.
    cm_why_set(&req->why, "%s", cm_result_text(r));
    cmp_status_info st;
    memset(&st, 0, sizeof(st));
    st.status = CMP_STATUS_REJECTION;
    st.has_fail_info = true;
    st.fail_info = CMP_FAILINFO_BIT((uint32_t)req->fail_bit);
    st.status_string = srv_status_text(req, req->why.text);
    cmp_body body;
    memset(&body, 0, sizeof(body));
    cmp_cert_response resp;
    if (srv_rejects_content(req, r)) {
        srv_reject_body(req, &body, &resp, &st);
    } else {
        body.type = CMP_BODY_ERROR;
        body.u.error.status = st;
    }
    req->implicit = false;
    req->failing = true;
    srv_respond(req, &body);
}
