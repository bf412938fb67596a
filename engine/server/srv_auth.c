// Authentication: the header rules every request passes, then MAC protection with the secret
// named by senderKID (PBM, PBMAC1) or signature protection by extraCerts[0] with its chain.
#include <openssl/evp.h>

#include "engine/server/srv_internal.h"

cm_result srv_check_header(srv_request *req)
{
    const cmp_header *h = &req->msg.header;
    CM_ENSURE(cmp_header_pvno_supported(h), CMP_E_UNSUPPORTED_VERSION);
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
        CM_ENSURE(ours, SRV_E_WRONG_AUTHORITY);
    }
    // The first message of a transaction carries no recipNonce (RFC 9810 §5.1.1).
    const srv_handler *row = srv_handler_get((int)req->msg.body.type);
    const bool first = row != NULL && row->opens_transaction;
    CM_ENSURE(!(first && h->f.recip_nonce.present), SRV_E_RECIP_NONCE);
    const int64_t win = req->w->e->p.message_time_window;
    if (win > 0) {
        CM_ENSURE(h->f.has_message_time, SRV_E_BAD_TIME);
        const int64_t d = h->f.message_time - req->now;
        CM_ENSURE(d <= win && d >= -win, SRV_E_BAD_TIME);
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
    CM_ENSURE(m->has_protection && m->header.protection_alg.whole.len != 0, SRV_E_UNPROTECTED);
    CM_TRY(cmp_protect_kind(&req->prot_kind, m->header.protection_alg.whole));
    if (req->prot_kind == CMP_PROT_PBM || req->prot_kind == CMP_PROT_PBMAC1) {
        CM_ENSURE(m->header.f.sender_kid.present, SRV_E_UNKNOWN_SENDER);
        const srv_secret *s = srv_find_secret(req->ca, m->header.f.sender_kid.v);
        CM_ENSURE(s != NULL, SRV_E_UNKNOWN_SENDER);
        CM_TRY(cmp_protect_verify_mac(req->w->e->p.prot, &req->mac_key,
                                      m->header.protection_alg.whole, s->secret, m->protected_part,
                                      m->protection, m->protection_unused, NULL));
        req->mac_ok = true;
        return cm_result_make(CM_OK);
    }
    CM_ENSURE(m->num_extra_certs >= 1, CMP_E_NO_EXTRA_CERTS);
    const cm_span signer = m->extra_certs[0];
    CM_TRY(cmp_protect_verify_sig(&req->w->crypto, m->header.protection_alg.whole,
                                  m->protected_part, m->protection, m->protection_unused, signer,
                                  NULL));
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, signer));
    CM_ENSURE(m->header.sender.tag == CRMF_GN_DIRECTORY_NAME &&
                  cm_span_eq(m->header.sender.name, f.subject),
              SRV_E_SENDER_MISMATCH);
    cm_result tr = cm_result_make(CA_E_UNTRUSTED);
    for (size_t i = 0; i < req->ca->num_ra_certs; i++) {
        // A configured RA certificate is trusted as itself (its signature verified above).
        if (cm_span_eq(req->ca->ra_certs[i], signer)) {
            req->signer_is_ra = true;
            tr = cm_result_make(CM_OK);
        }
    }
    if (!cm_ok(tr) && trust != NULL) {
        tr = ca_trust_verify(trust, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             NULL);
    }
    if (!cm_ok(tr) && trust2 != NULL) {
        tr = ca_trust_verify(trust2, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             NULL);
    }
    CM_ENSURE(cm_ok(tr), tr.code == CA_E_CERT_EXPIRED ? CA_E_CERT_EXPIRED : SRV_E_UNTRUSTED);
    req->signer_cert = signer;
    req->signer = f;
    CM_ENSURE(EVP_Digest(signer.p, signer.len, req->signer_hash, NULL, req->w->dig.sha256, NULL) ==
                  1,
              SRV_E_INTERNAL);
    req->sig_ok = true;
    return cm_result_make(CM_OK);
}
