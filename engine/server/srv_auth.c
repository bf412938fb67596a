// Authentication: the header rules every request passes, then MAC protection with the secret
// named by senderKID (PBM, PBMAC1, the key-based MACs) or signature protection by extraCerts[0]
// with its chain, and what the CA knows of the signer: a certificate this instance issued
// authenticates only while it is VALID in the store (issue 14). Every body type authenticates
// here, so nested messages and pollReq inherit the rules when they come.
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv_internal.h"

const char *srv_bytes_text(char buf[80], cm_span b)
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

const char *srv_serial_text(char buf[48], cm_span serial)
{
    const size_t n = serial.len > 20 ? 20 : serial.len;
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        used += (size_t)snprintf(buf + used, 48 - used, "%02X", serial.p[i]);
    }
    return buf;
}

cm_result srv_check_header(srv_request *req)
{
    const cmp_header *h = &req->msg.header;
    // RFC 9483 §3.1: pvno is cmp2000 (2), or cmp2021 (3) when CMP v3 features are used; cmp1999
    // (1) is not supported. srv_respond answers in the nearest supported version (RFC 9810 §7).
    if (h->f.pvno != 2 && h->f.pvno != 3) {
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

// --- the signer's certificate -----------------------------------------------------------

// srv_cert_extensions finds the Extensions content of Certificate |cert| (RFC 5280 §4.1:
// tbsCertificate ... extensions [3] EXPLICIT Extensions OPTIONAL); empty when it has none.
static cm_result srv_cert_extensions(cm_span cert, cm_span *out)
{
    der_reader rd, c, tbs, ext;
    cm_span skip;
    bool present = false;
    *out = cm_span_make(NULL, 0);
    der_reader_init(&rd, cert);
    CM_TRY(der_enter(&rd, DER_TAG_SEQUENCE, &c));
    CM_TRY(der_enter(&c, DER_TAG_SEQUENCE, &tbs));
    CM_TRY(der_get_optional(&tbs, DER_CONTEXT_CONS(0), &skip, &present)); // version
    CM_TRY(der_get_tlv(&tbs, DER_TAG_INTEGER, &skip));                    // serialNumber
    for (int i = 0; i < 5; i++) { // signature, issuer, validity, subject, subjectPublicKeyInfo
        CM_TRY(der_get_tlv(&tbs, DER_TAG_SEQUENCE, &skip));
    }
    CM_TRY(der_get_optional(&tbs, DER_CONTEXT(1), &skip, &present)); // issuerUniqueID
    CM_TRY(der_get_optional(&tbs, DER_CONTEXT(2), &skip, &present)); // subjectUniqueID
    CM_TRY(der_enter_optional(&tbs, DER_CONTEXT_CONS(3), &ext, &present));
    if (present) {
        CM_TRY(der_get_tlv(&ext, DER_TAG_SEQUENCE, out));
    }
    return cm_result_make(CM_OK);
}

// srv_cert_ski finds the signer's subjectKeyIdentifier (RFC 5280 §4.2.1.2: KeyIdentifier ::=
// OCTET STRING); *out_found false when the certificate has none.
static cm_result srv_cert_ski(cm_span cert, cm_span *out, bool *out_found)
{
    cm_span exts;
    crmf_extension e;
    *out_found = false;
    CM_TRY(srv_cert_extensions(cert, &exts));
    CM_TRY(crmf_extensions_find(exts, CM_SPAN_LIT(DER_OID_CE_SUBJECT_KEY_ID), &e, out_found));
    if (*out_found) {
        der_reader rd;
        der_reader_init(&rd, e.value);
        CM_TRY(der_get_octets(&rd, out));
        CM_TRY(der_expect_end(&rd));
    }
    return cm_result_make(CM_OK);
}

// srv_cert_has_eku reports whether the certificate's extendedKeyUsage (RFC 5280 §4.2.1.12:
// SEQUENCE SIZE (1..MAX) OF KeyPurposeId) lists |oid| (content octets).
static cm_result srv_cert_has_eku(cm_span cert, cm_span oid, bool *out)
{
    cm_span exts;
    crmf_extension e;
    bool found = false;
    *out = false;
    CM_TRY(srv_cert_extensions(cert, &exts));
    CM_TRY(crmf_extensions_find(exts, CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE), &e, &found));
    if (!found) {
        return cm_result_make(CM_OK);
    }
    der_reader rd, seq;
    der_reader_init(&rd, e.value);
    CM_TRY(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    while (!der_reader_empty(&seq)) {
        cm_span kp;
        CM_TRY(der_get_oid(&seq, &kp));
        *out |= cm_span_eq(kp, oid);
    }
    return cm_result_make(CM_OK);
}

// srv_cert_validity reads Validity ::= SEQUENCE { notBefore Time, notAfter Time }.
static cm_result srv_cert_validity(cm_span validity, int64_t *out_nb, int64_t *out_na)
{
    der_reader rd, seq;
    der_reader_init(&rd, validity);
    CM_TRY(der_enter(&rd, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_time(&seq, out_nb));
    CM_TRY(der_get_time(&seq, out_na));
    return der_expect_end(&seq);
}

// srv_issuing_ca returns the CA of this instance whose subject is |issuer|, or NULL.
static const srv_ca *srv_issuing_ca(const srv_request *req, cm_span issuer)
{
    const srv_params *p = &req->w->e->p;
    for (size_t i = 0; i < p->num_cas; i++) {
        if (cm_span_eq(ca_authority_subject(p->cas[i].authority), issuer)) {
            return &p->cas[i];
        }
    }
    return NULL;
}

// srv_ra_valid decides whether the configured RA certificate |cert| may act as an RA now
// (RFC 9483 §3.3, §5): valid at the message's time, with extended key usage id-kp-cmcRA
// unless the clients section made that optional, and not revoked by its issuer's CRL when
// another CA issued it (a certificate of this instance is checked in the store like every
// signer: srv_signer_check). When it may not, |req->ra_why| says why.
static bool srv_ra_valid(srv_request *req, cm_span cert, const ca_cert_fields *f)
{
    const srv_ca *ca = req->ca;
    int64_t nb = 0, na = 0;
    if (!cm_ok(srv_cert_validity(f->validity, &nb, &na)) || req->now < nb || req->now > na) {
        cm_why_set(&req->ra_why, "the RA certificate is %s",
                   req->now < nb ? "not valid yet" : "expired or unreadable");
        return false;
    }
    bool cmcra = false;
    if (!ca->ra_cmcra_optional &&
        (!cm_ok(srv_cert_has_eku(cert, CM_SPAN_LIT(DER_OID_KP_CMC_RA), &cmcra)) || !cmcra)) {
        cm_why_set(&req->ra_why, "the RA certificate lacks extended key usage id-kp-cmcRA "
                                 "(ra_require_cmcra)");
        return false;
    }
    if (srv_issuing_ca(req, f->issuer) == NULL && ca->client_trust != NULL) {
        cm_why crl_why;
        cm_why_clear(&crl_why);
        if (!cm_ok(ca_trust_check_crls(ca->client_trust, cert, req->now, &crl_why))) {
            cm_why_set(&req->ra_why, "the RA %s", crl_why.text);
            return false;
        }
    }
    return true;
}

// srv_signer_check applies what the store knows to a signer certificate issued by one of this
// instance's CAs (issue 14 §1): it must be VALID — not revoked or on hold (certRevoked), not
// unconfirmed, not expired, not superseded by a key update, and without an update of it waiting
// for certConf (notAuthorized). The messages that continue a transaction (certConf, error) may
// still be signed while the update they complete is pending. A certificate under this CA's name
// that the store does not know is refused when the CA's own trust store verified it (a
// certificate from another installation, or a forgery with this CA's key stolen); one that a
// client trust store verified belongs to another CA that happens to share the name. The status
// comes from the store's signer-status cache: no database read when the cache can answer.
static cm_result srv_signer_check(srv_request *req, const ca_cert_fields *f, bool via_client_trust)
{
    const srv_ca *issuer = srv_issuing_ca(req, f->issuer);
    if (issuer == NULL) {
        return cm_result_make(CM_OK);
    }
    char sn[48];
    store_cert_state st;
    cm_result r = store_cert_state_get(req->w->reader, &st, issuer->name, f->serial);
    if (r.code == STORE_E_NOT_FOUND) {
        if (via_client_trust) {
            return cm_result_make(CM_OK);
        }
        cm_why_set(&req->why,
                   "the signer's certificate (serial %s) names this CA as issuer, but this CA "
                   "has no record of it",
                   srv_serial_text(sn, f->serial));
        CM_BAIL(SRV_E_SIGNER_UNKNOWN);
    }
    CM_TRY(r);
    if (st.status == STORE_CERT_REVOKED || st.status == STORE_CERT_HOLD) {
        cm_why_set(&req->why, "the signer's certificate (serial %s) %s",
                   srv_serial_text(sn, f->serial),
                   st.status == STORE_CERT_HOLD           ? "is on hold"
                   : st.reason == STORE_REASON_SUPERSEDED ? "was revoked: superseded by a key "
                                                            "update"
                                                          : "was revoked");
        CM_BAIL(SRV_E_SIGNER_REVOKED);
    }
    if (st.status != STORE_CERT_VALID) {
        cm_why_set(&req->why,
                   "the signer's certificate (serial %s) was never confirmed with certConf",
                   srv_serial_text(sn, f->serial));
        CM_BAIL(SRV_E_SIGNER_UNCONFIRMED);
    }
    if (st.not_after < req->now) {
        cm_why_set(&req->why, "the signer's certificate (serial %s) has expired",
                   srv_serial_text(sn, f->serial));
        CM_BAIL(CA_E_CERT_EXPIRED);
    }
    if (st.superseded_at != 0) {
        cm_why_set(&req->why,
                   "the signer's certificate (serial %s) was replaced by a key update; sign "
                   "with the new certificate",
                   srv_serial_text(sn, f->serial));
        CM_BAIL(SRV_E_SIGNER_SUPERSEDED);
    }
    const srv_handler *row = srv_handler_get((int)req->msg.body.type);
    if (st.update_pending && row != NULL && row->opens_transaction) {
        cm_why_set(&req->why,
                   "an update of the signer's certificate (serial %s) waits for its "
                   "confirmation; confirm or reject it first",
                   srv_serial_text(sn, f->serial));
        CM_BAIL(SRV_E_SIGNER_UPDATING);
    }
    return cm_result_make(CM_OK);
}

// srv_check_sender_kid: with signature protection senderKID identifies the protection key,
// the SubjectKeyIdentifier of the protection certificate (RFC 9483 §3.1), and a first message
// must carry it (issue 15 §3). A certificate without an SKI extension cannot be named by one:
// its senderKID, when present, must be the method-1 key identifier (SHA-1 of the key bits,
// RFC 5280 §4.2.1.2), which is what such a certificate's SKI would be.
static cm_result srv_check_sender_kid(srv_request *req, cm_span signer, const ca_cert_fields *f)
{
    const cmp_header *h = &req->msg.header;
    cm_span ski;
    bool has_ski = false;
    uint8_t computed[20];
    CM_TRY(srv_cert_ski(signer, &ski, &has_ski));
    if (!has_ski && h->f.sender_kid.present) {
        ca_key_info ki;
        unsigned int n = 0;
        if (cm_ok(ca_spki_parse(&ki, f->spki)) &&
            EVP_Digest(ki.key_bits.p, ki.key_bits.len, computed, &n, EVP_sha1(), NULL) == 1) {
            ski = cm_span_make(computed, n);
            has_ski = true;
        }
    }
    const srv_handler *row = srv_handler_get((int)req->msg.body.type);
    if (!h->f.sender_kid.present) {
        if (has_ski && row != NULL && row->opens_transaction) {
            cm_why_set(&req->why,
                       "the %s message is signed but has no senderKID; it must be the "
                       "subject key identifier of the signer's certificate",
                       row->name);
            CM_BAIL(SRV_E_NO_SENDER_KID);
        }
        return cm_result_make(CM_OK);
    }
    if (!has_ski || !cm_span_eq(h->f.sender_kid.v, ski)) {
        char got[80], want[80];
        cm_why_set(&req->why,
                   "the senderKID %s is not the subject key identifier of the signer's "
                   "certificate (%s)",
                   srv_bytes_text(got, h->f.sender_kid.v),
                   has_ski ? srv_bytes_text(want, ski) : "none");
        CM_BAIL(SRV_E_SENDER_KID);
    }
    return cm_result_make(CM_OK);
}

// srv_check_sender: the header's sender names the signer (RFC 9483 §3.1: its subject).
static cm_result srv_check_sender(srv_request *req, const ca_cert_fields *f)
{
    const cmp_msg *m = &req->msg;
    if (m->header.sender.tag != CRMF_GN_DIRECTORY_NAME ||
        !cm_span_eq(m->header.sender.name, f->subject)) {
        char sender[96], subject[96];
        cm_why_set(&req->why, "the header's sender (%s) is not the signer's subject (%s)",
                   m->header.sender.tag == CRMF_GN_DIRECTORY_NAME
                       ? srv_name_text(sender, m->header.sender.name)
                       : "not a directoryName",
                   srv_name_text(subject, f->subject));
        CM_BAIL(SRV_E_SENDER_MISMATCH);
    }
    return cm_result_make(CM_OK);
}

// srv_signer_accept records the authenticated signer |cert| (fields |f|) in the request.
static cm_result srv_signer_accept(srv_request *req, cm_span cert, const ca_cert_fields *f)
{
    req->signer_cert = cert;
    req->signer = *f;
    CM_ENSURE(EVP_Digest(cert.p, cert.len, req->signer_hash, NULL, req->w->dig.sha256, NULL) == 1,
              SRV_E_INTERNAL);
    req->sig_ok = true;
    return cm_result_make(CM_OK);
}

// --- what a MAC may cost (issue 23) --------------------------------------------------------

// srv_kid_index numbers |s| (a secret of the request's CA) for the budget.
static size_t srv_kid_index(const srv_request *req, const srv_secret *s)
{
    const srv_engine *e = req->w->e;
    return e->kid_base[(size_t)(req->ca - e->p.cas)] + (size_t)(s - req->ca->secrets);
}

// srv_mac_note records once per request whether the MAC for |s| verified (the back-off's
// failure counts and good pairs).
static void srv_mac_note(srv_request *req, const srv_secret *s, bool ok)
{
    srv_budget *b = req->w->e->budget;
    if (b == NULL || req->mac_noted) {
        return;
    }
    req->mac_noted = true;
    srv_budget_mac_outcome(b, srv_kid_index(req, s), req->peer, ok, srv_now_ms());
}

bool srv_mac_begin(srv_request *req)
{
    srv_engine *e = req->w->e;
    const cmp_msg *m = &req->msg;
    if ((e->budget == NULL && e->kdf == NULL) || !m->has_protection ||
        m->header.protection_alg.whole.len == 0) {
        return true;
    }
    cmp_prot_kind kind;
    if (!cm_ok(cmp_protect_kind(&kind, m->header.protection_alg.whole)) ||
        !cmp_prot_kind_is_mac(kind)) {
        return true; // not a MAC: the handler's srv_authenticate says what it is
    }
    // What srv_authenticate_mac refuses before any work, it refuses there.
    if (m->header.sender.tag != CRMF_GN_DIRECTORY_NAME || !m->header.f.sender_kid.present) {
        return true;
    }
    const srv_secret *s = srv_find_secret(req->ca, m->header.f.sender_kid.v);
    if (s == NULL) {
        return true;
    }
    req->prot_kind = kind;
    req->prot_known = true;
    bool good = false; // a good address of this senderKID (srv_budget), for kdf_inline below
    if (e->budget != NULL) {
        uint64_t wait_ms = 0;
        const srv_mac_gate g = srv_budget_mac_check(e->budget, srv_kid_index(req, s), req->peer,
                                                    srv_now_ms(), &wait_ms, &good);
        if (g != SRV_MAC_GO) {
            const srv_budget_params *bp = srv_budget_params_get(e->budget);
            const unsigned long long wait_s = (wait_ms + 999u) / 1000u;
            char kid[80];
            if (g == SRV_MAC_KID_BACKOFF) {
                cm_why_set(&req->why,
                           "too many wrong MACs for senderKID %s (%u within %llu s): its "
                           "MAC-protected requests are refused for %llu s more",
                           srv_bytes_text(kid, m->header.f.sender_kid.v), bp->mac_failures_max,
                           (unsigned long long)(bp->mac_failure_window_ms / 1000u), wait_s);
            } else {
                cm_why_set(&req->why,
                           "too many wrong MACs from this address (%u within %llu s): its "
                           "MAC-protected requests are refused for %llu s more",
                           bp->mac_failures_max,
                           (unsigned long long)(bp->mac_failure_window_ms / 1000u), wait_s);
            }
            srv_fail(req, cm_result_make(SRV_E_MAC_BACKOFF));
            return false;
        }
    }
    if (e->kdf == NULL || (kind != CMP_PROT_PBM && kind != CMP_PROT_PBMAC1)) {
        return true; // key-based MACs cost microseconds: checked inline by the handler
    }
    if (req->parent != NULL) {
        // An inner message of a nested batch whose RA is authenticated: it runs on a cm-verify
        // thread (which has no cq for the KDF pool to answer on) or, with nested_threads = 0,
        // where its operator chose; its handler checks the MAC there.
        return true;
    }
    if (e->p.kdf_inline && good && srv_kdf_pool_depth(e->kdf) == 0 &&
        (req->w->busy == NULL || !req->w->busy(req->w->busy_arg))) {
        // This address proved this secret and sent no wrong MAC since, no check waits for a
        // KDF thread and nothing else waits on this thread (under a flood of other work the
        // loop is what is short, and the KDF thread may have a core): the handler verifies
        // here (srv_authenticate_mac), without two hand-offs.
        // A wrong MAC ends the address's good standing (srv_mac_note), so a forger behind it
        // costs this thread at most one derivation before its checks go to the pool again.
        __atomic_add_fetch(&e->n_kdf_inline, 1, __ATOMIC_RELAXED);
        return true;
    }
    srv_kdf_job *j = &req->kjob;
    memset(j, 0, sizeof(*j));
    j->cq = req->w->cq;
    j->prot = e->p.prot;
    j->key = &req->mac_key;
    j->alg = m->header.protection_alg.whole;
    j->secret = s->secret;
    j->kind = s->kind;
    j->protected_part = m->protected_part;
    j->protection = m->protection;
    j->unused_bits = m->protection_unused;
    j->user = req;
    req->kdf_secret = s;
    const cm_result r = srv_kdf_pool_submit(e->kdf, j);
    if (!cm_ok(r)) {
        __atomic_add_fetch(&e->n_kdf_refused, 1, __ATOMIC_RELAXED);
        cm_why_set(&req->why,
                   "the server is busy checking password-based MACs (%u requests wait); try "
                   "again later",
                   srv_kdf_pool_max_queue(e->kdf));
        srv_fail(req, r);
        return false;
    }
    req->state = SRV_ST_KDF;
    req->jobs_out = 1;
    return false;
}

void srv_mac_end(srv_request *req)
{
    req->kdf_done = true;
    const bool ok = cm_ok(req->kjob.result);
    if (!ok) {
        req->mac_failed = true; // the KDF work went for nothing (srv_summary)
    }
    srv_mac_note(req, req->kdf_secret, ok);
}

// srv_authenticate_mac checks a MAC-protected message (RFC 9483 §4.1.5): the sender is a
// directoryName (the NULL-DN allowed), senderKID names a secret (a password or a key; the
// secret's limits in req->secret apply to both kinds), the MAC verifies.
static cm_result srv_authenticate_mac(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    if (m->header.sender.tag != CRMF_GN_DIRECTORY_NAME) {
        cm_why_set(&req->why, "a MAC-protected message must name its sender as a directoryName "
                              "(the NULL-DN is allowed)");
        CM_BAIL(SRV_E_SENDER_NOT_DN);
    }
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
    cm_result r;
    if (req->kdf_done && req->kdf_secret == s) {
        // The KDF pool checked it already (srv_mac_begin); its reason comes with the verdict.
        r = req->kjob.result;
        if (!cm_ok(r) && cm_why_is_set(&req->kjob.why)) {
            cm_why_set(&req->why, "%s", req->kjob.why.text);
        }
    } else {
        r = cmp_protect_verify_mac(req->w->e->p.prot, &req->mac_key, m->header.protection_alg.whole,
                                   s->secret, s->kind, m->protected_part, m->protection,
                                   m->protection_unused, &req->why);
        srv_mac_note(req, s, cm_ok(r));
    }
    if (!cm_ok(r)) {
        req->mac_failed = true;
        return r;
    }
    req->mac_ok = true;
    req->secret = s;
    return cm_result_make(CM_OK);
}

cm_result srv_authenticate(srv_request *req, ca_trust *trust, ca_trust *trust2)
{
    const cmp_msg *m = &req->msg;
    if (req->parent != NULL && !m->has_protection && m->header.protection_alg.whole.len == 0) {
        return srv_nested_vouch(req); // inside a nested message: its RA may vouch (srv_nested.c)
    }
    if (!m->has_protection || m->header.protection_alg.whole.len == 0) {
        const srv_handler *row = srv_handler_get((int)m->body.type);
        cm_why_set(&req->why,
                   "the %s message is not protected; protect it with a MAC (shared secret) or "
                   "a signature",
                   row != NULL ? row->name : "request");
        CM_BAIL(SRV_E_UNPROTECTED);
    }
    CM_TRY(cmp_protect_kind(&req->prot_kind, m->header.protection_alg.whole));
    req->prot_known = true;
    if (cmp_prot_kind_is_mac(req->prot_kind)) {
        return srv_authenticate_mac(req);
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
    CM_TRY(srv_check_sender(req, &f));
    CM_TRY(srv_check_sender_kid(req, signer, &f));
    cm_result tr = cm_result_make(CA_E_UNTRUSTED);
    for (size_t i = 0; i < req->ca->num_ra_certs && !cm_ok(tr); i++) {
        // A configured RA certificate is trusted as itself (its signature verified above),
        // while it is valid as an RA; otherwise it is just another signer.
        if (cm_span_eq(req->ca->ra_certs[i], signer) && srv_ra_valid(req, signer, &f)) {
            req->signer_is_ra = true;
            tr = cm_result_make(CM_OK);
        }
    }
    // The first trust store's reason is the one reported when neither accepts the signer.
    cm_why trust_why;
    cm_why_clear(&trust_why);
    bool via_client_trust = false;
    cm_result first = cm_result_make(CM_OK); // the first trust store's refusal is the one told
    if (!cm_ok(tr) && trust != NULL) {
        tr = ca_trust_verify(trust, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             &trust_why);
        via_client_trust = cm_ok(tr) && trust != req->ca->own_trust;
        first = tr;
    }
    if (!cm_ok(tr) && trust2 != NULL) {
        tr = ca_trust_verify(trust2, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             &trust_why);
        via_client_trust = cm_ok(tr) && trust2 != req->ca->own_trust;
        if (!cm_ok(tr) && !cm_ok(first)) {
            tr = first;
        }
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
        CM_BAIL(tr.code == CA_E_CERT_EXPIRED   ? CA_E_CERT_EXPIRED
                : tr.code == CA_E_CERT_REVOKED ? CA_E_CERT_REVOKED
                                               : SRV_E_UNTRUSTED);
    }
    CM_TRY(srv_signer_check(req, &f, via_client_trust));
    return srv_signer_accept(req, signer, &f);
}

cm_result srv_authenticate_stored(srv_request *req, cm_span cert)
{
    const cmp_msg *m = &req->msg;
    CM_TRY(cmp_protect_kind(&req->prot_kind, m->header.protection_alg.whole));
    req->prot_known = true;
    CM_TRY(cmp_protect_verify_sig(&req->w->crypto, m->header.protection_alg.whole,
                                  m->protected_part, m->protection, m->protection_unused, cert,
                                  &req->why));
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, cert));
    CM_TRY(srv_check_sender(req, &f));
    CM_TRY(srv_check_sender_kid(req, cert, &f));
    // The chain verified when the request came. A certificate under this CA's name that the
    // store did not know was refused then unless a client trust store accepted it, so a
    // certificate the store does not know now is the latter (certificates are never deleted).
    CM_TRY(srv_signer_check(req, &f, true));
    return srv_signer_accept(req, cert, &f);
}

cm_result srv_authenticate_listed(srv_request *req, const cm_span *certs, size_t num_certs,
                                  bool *out_listed)
{
    const cmp_msg *m = &req->msg;
    *out_listed = false;
    if (m->num_extra_certs == 0) {
        cm_why_set(&req->why,
                   "the message is signed but extraCerts does not carry the signer's certificate");
        CM_BAIL(CMP_E_NO_EXTRA_CERTS);
    }
    const cm_span signer = m->extra_certs[0];
    CM_TRY(cmp_protect_kind(&req->prot_kind, m->header.protection_alg.whole));
    req->prot_known = true;
    CM_TRY(cmp_protect_verify_sig(&req->w->crypto, m->header.protection_alg.whole,
                                  m->protected_part, m->protection, m->protection_unused, signer,
                                  &req->why));
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, signer));
    CM_TRY(srv_check_sender(req, &f));
    CM_TRY(srv_check_sender_kid(req, signer, &f));
    for (size_t i = 0; i < num_certs && !*out_listed; i++) {
        *out_listed = cm_span_eq(certs[i], signer);
    }
    if (!*out_listed) {
        req->signer = f; // for the caller's reason
        return cm_result_make(CM_OK);
    }
    int64_t nb = 0, na = 0;
    if (!cm_ok(srv_cert_validity(f.validity, &nb, &na)) || req->now < nb || req->now > na) {
        char subject[96];
        cm_why_set(&req->why, "the signer's certificate (%s) is %s",
                   srv_name_text(subject, f.subject), req->now < nb ? "not valid yet" : "expired");
        CM_BAIL(CA_E_CERT_EXPIRED);
    }
    return srv_signer_accept(req, signer, &f);
}
