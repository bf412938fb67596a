// Authentication: the header rules every request passes, then MAC protection with the secret
// named by senderKID (PBM, PBMAC1) or signature protection by extraCerts[0] with its chain.
#include <stdio.h>

#include <openssl/evp.h>

#include "engine/server/srv_internal.h"

// srv_bytes_text writes |b| for a reason: as text when every byte is printable ASCII (a
// senderKID such as "line-9"), else as hex; cut to at most 32 bytes. Returns |buf|.
static const char *srv_bytes_text(char buf[80], cm_span b)
{
    const size_t n = b.len > 32 ? 32 : b.len;
    bool printable = n > 0;
    for (size_t i = 0; i < n; i++) {
        printable &= b.p[i] >= 0x20 && b.p[i] < 0x7f;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        used += (size_t)snprintf(buf + used, 80 - used, printable ? "%c" : "%02x", b.p[i]);
    }
    (void)snprintf(buf + used, 80 - used, "%s", b.len > n ? "..." : "");
    if (b.len == 0) {
        (void)snprintf(buf, 80, "(empty)");
    }
    return buf;
}

// srv_name_text renders a Name element for a reason (RFC 4514, ca_name_to_text).
static const char *srv_name_text(char buf[96], cm_span name)
{
    if (!ca_name_to_text(buf, 96, name) && buf[0] == '\0') {
        (void)snprintf(buf, 96, "(unreadable name)");
    } else if (buf[0] == '\0') {
        (void)snprintf(buf, 96, "(empty name)");
    }
    return buf;
}

cm_result srv_check_header(srv_request *req)
{
    const cmp_header *h = &req->msg.header;
    if (!cmp_header_pvno_supported(h)) {
        cm_why_set(&req->why, "CMP version (pvno) %lld is not supported; use 2 or 3",
                   (long long)h->f.pvno);
        CM_BAIL(CMP_E_UNSUPPORTED_VERSION);
    }
    // recipient (RFC 4210 §5.1.1): a directoryName other than the NULL-DN must name this CA,
    // its CMP protection certificate, or the issuer of the sender's protection certificate
    // (what clients such as openssl cmp put there by default, e.g. a device vendor's CA);
    // anything else means the message is meant for another authority.
    // A signature-protected message without extraCerts fails its protection check anyway.
    const bool unverifiable = req->msg.has_protection && req->msg.num_extra_certs == 0 &&
                              cmp_is_signature_alg(h->protection_alg.oid);
    if (h->recipient.tag == CRMF_GN_DIRECTORY_NAME && h->recipient.name.len > 2 && !unverifiable) {
        bool ours = cm_span_eq(h->recipient.name, ca_authority_subject(req->ca->authority)) ||
                    cm_span_eq(h->recipient.name, ca_authority_subject(req->ca->cmp_cert));
        ca_cert_fields f;
        if (!ours && req->msg.num_extra_certs > 0 &&
            cm_ok(ca_cert_fields_parse(&f, req->msg.extra_certs[0]))) {
            ours = cm_span_eq(h->recipient.name, f.issuer);
        }
        if (!ours) {
            char got[96], want[96];
            cm_why_set(&req->why, "the message is addressed to %s, not to this CA (%s)",
                       srv_name_text(got, h->recipient.name),
                       srv_name_text(want, ca_authority_subject(req->ca->authority)));
            CM_BAIL(SRV_E_WRONG_AUTHORITY);
        }
    }
    // The first message of a transaction carries no recipNonce (RFC 9810 §5.1.1).
    const srv_handler *row = srv_handler_get((int)req->msg.body.type);
    const bool first = row != NULL && row->opens_transaction;
    if (first && h->f.recip_nonce.present) {
        cm_why_set(&req->why, "the first message of a transaction (%s) must not carry a recipNonce",
                   row->name);
        CM_BAIL(SRV_E_RECIP_NONCE);
    }
    const int64_t win = req->w->e->p.message_time_window;
    if (win > 0) {
        if (!h->f.has_message_time) {
            cm_why_set(&req->why, "the message has no messageTime, which this CA requires");
            CM_BAIL(SRV_E_BAD_TIME);
        }
        const int64_t d = h->f.message_time - req->now;
        if (d > win || d < -win) {
            cm_why_set(&req->why,
                       "the messageTime is %lld s %s the server's clock (allowed: %lld s); "
                       "check the client's clock",
                       (long long)(d < 0 ? -d : d), d < 0 ? "behind" : "ahead of", (long long)win);
            CM_BAIL(SRV_E_BAD_TIME);
        }
    }
    return cm_result_make(CM_OK);
}

static const srv_secret *srv_find_secret(const srv_ca *ca, cm_span ref)
{
    for (size_t i = 0; i < ca->num_secrets; i++) {
        if (cm_span_eq(ca->secrets[i].ref, ref)) {
            return &ca->secrets[i];
        }
    }
    return NULL;
}

cm_result srv_authenticate(srv_request *req, ca_trust *trust, ca_trust *trust2)
{
    const cmp_msg *m = &req->msg;
    if (!m->has_protection || m->header.protection_alg.whole.len == 0) {
        const srv_handler *row = srv_handler_get((int)m->body.type);
        cm_why_set(&req->why,
                   "the %s message is not protected; protect it with a MAC (shared secret) or "
                   "a signature",
                   row != NULL ? row->name : "request");
        CM_BAIL(SRV_E_UNPROTECTED);
    }
    CM_TRY(cmp_protect_kind(&req->prot_kind, m->header.protection_alg.whole));
    if (cmp_prot_kind_is_mac(req->prot_kind)) {
        if (!m->header.f.sender_kid.present) {
            cm_why_set(&req->why, "the MAC-protected message has no senderKID naming its secret");
            CM_BAIL(SRV_E_UNKNOWN_SENDER);
        }
        const srv_secret *s = srv_find_secret(req->ca, m->header.f.sender_kid.v);
        if (s == NULL) {
            char kid[80];
            cm_why_set(&req->why, "no MAC secret for senderKID %s",
                       srv_bytes_text(kid, m->header.f.sender_kid.v));
            CM_BAIL(SRV_E_UNKNOWN_SENDER);
        }
        CM_TRY(cmp_protect_verify_mac(
            req->w->e->p.prot, &req->mac_key, m->header.protection_alg.whole, s->secret, s->kind,
            m->protected_part, m->protection, m->protection_unused, &req->why));
        req->mac_ok = true;
        return cm_result_make(CM_OK);
    }
    if (m->num_extra_certs == 0) {
        cm_why_set(&req->why,
                   "the message is signed but extraCerts does not carry the signer's certificate");
        CM_BAIL(CMP_E_NO_EXTRA_CERTS);
    }
    const cm_span signer = m->extra_certs[0];
    CM_TRY(cmp_protect_verify_sig(&req->w->crypto, m->header.protection_alg.whole,
                                  m->protected_part, m->protection, m->protection_unused, signer,
                                  &req->why));
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, signer));
    if (m->header.sender.tag != CRMF_GN_DIRECTORY_NAME ||
        !cm_span_eq(m->header.sender.name, f.subject)) {
        char sender[96], subject[96];
        cm_why_set(&req->why, "the header's sender (%s) is not the signer's subject (%s)",
                   m->header.sender.tag == CRMF_GN_DIRECTORY_NAME
                       ? srv_name_text(sender, m->header.sender.name)
                       : "not a directoryName",
                   srv_name_text(subject, f.subject));
        CM_BAIL(SRV_E_SENDER_MISMATCH);
    }
    cm_result tr = cm_result_make(CA_E_UNTRUSTED);
    for (size_t i = 0; i < req->ca->num_ra_certs; i++) {
        // A configured RA certificate is trusted as itself (its signature verified above).
        if (cm_span_eq(req->ca->ra_certs[i], signer)) {
            req->signer_is_ra = true;
            tr = cm_result_make(CM_OK);
        }
    }
    // The first trust store's reason is the one reported when neither accepts the signer.
    cm_why trust_why;
    cm_why_clear(&trust_why);
    if (!cm_ok(tr) && trust != NULL) {
        tr = ca_trust_verify(trust, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             &trust_why);
    }
    if (!cm_ok(tr) && trust2 != NULL) {
        tr = ca_trust_verify(trust2, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             &trust_why);
    }
    if (!cm_ok(tr)) {
        // ca_trust_verify's reasons start with "certificate": name whose it is.
        if (cm_why_is_set(&trust_why)) {
            cm_why_set(&req->why, "the signer's %s", trust_why.text);
        } else {
            char subject[96];
            cm_why_set(&req->why, "the signer's certificate (%s) is not trusted by this CA",
                       srv_name_text(subject, f.subject));
        }
        CM_BAIL(tr.code == CA_E_CERT_EXPIRED ? CA_E_CERT_EXPIRED : SRV_E_UNTRUSTED);
    }
    req->signer_cert = signer;
    req->signer = f;
    CM_ENSURE(EVP_Digest(signer.p, signer.len, req->signer_hash, NULL, req->w->dig.sha256, NULL) ==
                  1,
              SRV_E_INTERNAL);
    req->sig_ok = true;
    return cm_result_make(CM_OK);
}
