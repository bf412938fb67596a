// The content rules of an enrolment request (RFC 9483 §4.1, RFC 9810 §5.3.1-5.3.5) that the
// CA checks once the message as a whole is known to be good, before any expensive work, and
// what the answer says when the CA issued something other than what was asked. From here on a
// refusal is of the request's content: srv_fail answers it in the ip/cp/kup (RFC 9483 §3.6.4).
//
// origPKIMessage (RFC 9483 §5.2.3.2, RFC 9810 §5.1.1.3). An RA that replaced the end entity's
// proof of possession by raVerified SHOULD forward the original request in generalInfo. The
// CA cannot repeat the RA's authentication of the end entity (a MAC under a secret the CA does
// not share, a certificate chain to the RA's anchors), but it can check that the original is
// what the RA claims it verified. "Consistent" means, and each is refused with badPOP
// otherwise (SRV_E_ORIG_MESSAGE):
//   - origPKIMessage holds exactly one PKIMessage (outside nested, RFC 9810 §5.1.1.3), which
//     parses, of the same body type as the RA's request;
//   - the original is protected: the end entity authenticated itself to the RA. A signature is
//     verified with the original's extraCerts[0] (its trust was the RA's to judge); a MAC is
//     taken as the RA's to check;
//   - it carries exactly one CertReqMsg with a proof of possession of its own, not raVerified:
//     a signature POPO must verify; keyEncipherment / keyAgreement (indirect POP the RA ran
//     itself) are taken as verified by the RA;
//   - the RA's request asks for the same public key: raVerified vouches for possession of the
//     original's key, so the RA may have changed the subject or the extensions, never the key.
#include <stdio.h>
#include <string.h>

#include "engine/server/srv_internal.h"

// srv_hex_text writes up to 20 bytes of |b| as hex into |buf| ("..." when cut).
static const char *srv_hex_text(char buf[48], cm_span b)
{
    size_t used = 0;
    const size_t n = b.len > 20 ? 20 : b.len;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        used += (size_t)snprintf(buf + used, 48 - used, "%02X", b.p[i]);
    }
    if (b.len > n) {
        (void)snprintf(buf + used, 48 - used, "...");
    }
    return buf;
}

static const char *srv_type_name(cmp_body_type t)
{
    const srv_handler *h = srv_handler_get((int)t);
    return h != NULL ? h->name : "request";
}

// srv_check_old_cert_id: a kur's oldCertID (RFC 9483 §4.1.3) names a certificate of this CA
// that the store knows; whether it is the signer's is srv_enrol.c's kur check.
static cm_result srv_check_old_cert_id(srv_request *req, const crmf_cert_request *cr)
{
    if (!cr->has_old_cert_id) {
        return cm_result_make(CM_OK);
    }
    const crmf_cert_id *id = &cr->old_cert_id;
    const cm_span ours = ca_authority_subject(req->ca->authority);
    if (id->issuer.tag != CRMF_GN_DIRECTORY_NAME || !cm_span_eq(id->issuer.name, ours)) {
        char got[96], want[96];
        if (id->issuer.tag != CRMF_GN_DIRECTORY_NAME ||
            (!ca_name_to_text(got, sizeof(got), id->issuer.name) && got[0] == '\0')) {
            (void)snprintf(got, sizeof(got), "another name");
        }
        (void)ca_name_to_text(want, sizeof(want), ours);
        cm_why_set(&req->why, "the oldCertID names a certificate issued by %s, not by this CA (%s)",
                   got, want);
        CM_BAIL(SRV_E_OLD_CERT);
    }
    store_cert old;
    cm_result r = store_cert_get(req->w->reader, &req->arena, &old, req->ca->name, id->serial);
    if (r.code == STORE_E_NOT_FOUND) {
        char hex[48];
        cm_why_set(&req->why, "this CA issued no certificate with serial %s (the oldCertID)",
                   srv_hex_text(hex, id->serial));
        CM_BAIL(SRV_E_OLD_CERT);
    }
    return r;
}

// srv_orig_fail sets the reason and returns SRV_E_ORIG_MESSAGE.
#define SRV_ORIG_FAIL(req, ...)               \
    do {                                      \
        cm_why_set(&(req)->why, __VA_ARGS__); \
        CM_BAIL(SRV_E_ORIG_MESSAGE);          \
    } while (0)

// srv_check_orig: the original request an RA forwarded with its raVerified is consistent with
// what the RA claims (see the top of this file).
static cm_result srv_check_orig(srv_request *req, const crmf_cert_req_msg *msg)
{
    const cmp_msg *m = &req->msg;
    der_reader r, list;
    der_reader_init(&r, m->header.orig_pki_message);
    cmp_parse_opts opts = {.max_nesting = 0};
    cmp_msg orig;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &list)) || !der_reader_empty(&r) ||
        !cm_ok(cmp_msg_parse(&req->arena, &orig, &list, &opts)) || !der_reader_empty(&list)) {
        SRV_ORIG_FAIL(req, "origPKIMessage must hold exactly one readable PKIMessage, the "
                           "original request the RA verified");
    }
    if (orig.body.type != m->body.type) {
        SRV_ORIG_FAIL(req, "origPKIMessage holds a %s, not the original of this %s",
                      srv_type_name(orig.body.type), srv_type_name(m->body.type));
    }
    if (!orig.has_protection || orig.header.protection_alg.whole.len == 0) {
        SRV_ORIG_FAIL(req, "the original request in origPKIMessage is not protected, so nothing "
                           "shows that the end entity asked for this certificate");
    }
    cmp_prot_kind kind;
    CM_ENSURE(cm_ok(cmp_protect_kind(&kind, orig.header.protection_alg.whole)), SRV_E_ORIG_MESSAGE);
    if (kind == CMP_PROT_SIGNATURE) {
        cm_why why;
        cm_why_clear(&why);
        if (orig.num_extra_certs == 0 ||
            !cm_ok(cmp_protect_verify_sig(&req->w->crypto, orig.header.protection_alg.whole,
                                          orig.protected_part, orig.protection,
                                          orig.protection_unused, orig.extra_certs[0], &why))) {
            SRV_ORIG_FAIL(req, "the original request's signature does not verify%s%s",
                          cm_why_is_set(&why) ? ": " : "", why.text);
        }
    }
    if (orig.body.u.req.num_msgs != 1) {
        SRV_ORIG_FAIL(req, "the original request carries %zu CertReqMsg, not one",
                      orig.body.u.req.num_msgs);
    }
    const crmf_cert_req_msg *om = &orig.body.u.req.msgs[0];
    switch (om->popo.type) {
    case CRMF_POPO_SIGNATURE: {
        cm_why why;
        cm_why_clear(&why);
        if (!cm_ok(crmf_popo_verify(&req->w->crypto, om, &why))) {
            SRV_ORIG_FAIL(req, "the original request's proof of possession does not verify%s%s",
                          cm_why_is_set(&why) ? ": " : "", why.text);
        }
        break;
    }
    case CRMF_POPO_KEY_ENCIPHERMENT:
    case CRMF_POPO_KEY_AGREEMENT:
        break; // indirect POP: the RA ran the challenge itself
    default:
        SRV_ORIG_FAIL(req, "the original request has no proof of possession of its own (%s)",
                      om->popo.type == CRMF_POPO_RA_VERIFIED ? "it claims raVerified too"
                                                             : "none at all");
    }
    if (!cm_span_eq(om->req.tmpl.public_key, msg->req.tmpl.public_key)) {
        SRV_ORIG_FAIL(req, "the RA asks for another public key than the original request, so "
                           "its raVerified does not cover it");
    }
    return cm_result_make(CM_OK);
}

cm_result srv_enrol_check(srv_request *req)
{
    req->content_stage = true;
    const cmp_msg *m = &req->msg;
    const cmp_body_type t = m->body.type;
    if (t == CMP_BODY_KUR && !req->sig_ok) {
        // RFC 9483 §4.1.3: signed with the certificate being updated; RFC 9810 §5.2.3:
        // wrongIntegrity is "password based instead of signature or vice versa".
        cm_why_set(&req->why, "kur must be signed with the certificate to update, not "
                              "MAC-protected");
        CM_BAIL(SRV_E_WRONG_INTEGRITY);
    }
    cm_span spki = cm_span_make(NULL, 0);
    const crmf_cert_req_msg *msg = NULL;
    if (t == CMP_BODY_P10CR) {
        spki = m->body.u.p10.spki.whole;
    } else {
        const crmf_cert_req_msgs *msgs = &m->body.u.req;
        if (msgs->num_msgs != 1) {
            cm_why_set(&req->why, "the request must carry exactly one CertReqMsg, not %zu",
                       msgs->num_msgs);
            CM_BAIL(SRV_E_REQ_COUNT);
        }
        msg = &msgs->msgs[0];
        if (msg->req.cert_req_id != 0) {
            cm_why_set(&req->why, "the certReqId must be 0, not %lld",
                       (long long)msg->req.cert_req_id);
            CM_BAIL(SRV_E_CERT_REQ_ID);
        }
        // An empty key asks for central key generation: srv_ckg.c checks its algorithm.
        if (msg->req.tmpl.public_key.len != 0 && msg->req.tmpl.spki.key.len != 0) {
            CM_TRY(crmf_spki_to_der(&req->arena, &spki, msg->req.tmpl.public_key));
        }
    }
    // The key the profile takes, read from its DER alone: an oversized RSA key costs nothing
    // before it is refused (its POPO would be checked next). A key that proves possession
    // without a signature is checked against the types the profile takes for its use.
    if (spki.len != 0) {
        ca_key_info key;
        const ca_key_use use = msg != NULL ? srv_ckg_key_use(msg) : CA_KEY_USE_SIGN;
        CM_TRY(ca_profile_check_key_use(req->profile, &key, spki, use, &req->why));
    }
    if (msg == NULL) {
        return cm_result_make(CM_OK);
    }
    if (msg->popo.type == CRMF_POPO_RA_VERIFIED) {
        // RFC 4211 §4.1, RFC 9483 §5.2.3.2: only an RA of this CA may vouch for the POP.
        if (!req->sig_ok || !req->signer_is_ra) {
            if (cm_why_is_set(&req->ra_why)) {
                // A configured RA certificate that may not act as one now (srv_auth.c).
                cm_why_set(&req->why, "raVerified is accepted only from an RA of this CA: %s",
                           req->ra_why.text);
            } else {
                cm_why_set(&req->why, "raVerified proof of possession is accepted only from an "
                                      "RA of this CA; this request comes from an end entity");
            }
            CM_BAIL(SRV_E_RA_VERIFIED);
        }
    }
    if (t == CMP_BODY_KUR) {
        CM_TRY(srv_check_old_cert_id(req, &msg->req));
    }
    if (msg->popo.type == CRMF_POPO_RA_VERIFIED && m->header.orig_pki_message.len != 0) {
        CM_TRY(srv_check_orig(req, msg));
    }
    return cm_result_make(CM_OK);
}

void srv_enrol_check_status(srv_request *req, cmp_status_info *st)
{
    if (req->dec.mods == 0) {
        return;
    }
    char text[400];
    char mods[360];
    (void)snprintf(text, sizeof(text), "granted with changes: %s",
                   ca_decision_mods_text(mods, sizeof(mods), req->profile, &req->dec));
    const cm_span t = cm_span_make(text, strlen(text));
    der_builder b;
    der_builder_init_arena(&b, &req->arena, t.len + 16);
    cmp_free_text_marshal(&b, &t, 1);
    cm_span out;
    st->status = CMP_STATUS_GRANTED_WITH_MODS;
    if (cm_ok(der_builder_finish(&b, &out))) {
        st->status_string = out;
    }
}

void srv_enrol_txn_note(srv_request *req, store_txn *t)
{
    const cmp_header_fields *h = &req->msg.header.f;
    t->flags = 0;
    if (req->msg.body.type == CMP_BODY_P10CR) {
        t->flags |= SRV_TXN_FLAG_P10CR;
    }
    if (req->ckg.kind == SRV_CKG_ENCR_CERT) {
        t->flags |= SRV_TXN_FLAG_ENCR_CERT; // certConf's certHash is the proof of possession
    }
    if (req->mac_ok && req->prot_kind == CMP_PROT_PBMAC1) {
        t->flags |= SRV_TXN_FLAG_PBMAC1;
    } else if (req->mac_ok && req->prot_kind == CMP_PROT_KEY_MAC) {
        t->flags |= SRV_TXN_FLAG_KEY_MAC;
    }
    // certConf must not repeat the request's senderNonce as its own.
    t->request_nonce = h->sender_nonce.v;
    // certConf is verified with the same certificate, whether or not it carries it again
    // (RFC 9483 §4.1.1; issue 14 item 4).
    t->signer_cert = req->sig_ok && t->protection == STORE_AUTH_SIGNATURE ? req->signer_cert
                                                                          : cm_span_make(NULL, 0);
}
