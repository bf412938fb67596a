// engine/cmp signature protection: verification of a signed PKIMessage over ProtectedPart
// with the key of extraCerts[0] (RFC 4210 §5.1.3.3, RFC 9481 §3), and the two halves of
// signing a response. Algorithm descriptors, the policy, key construction and the signature
// operations come from engine/crmf.
#include <string.h>

#include <openssl/evp.h>

#include "engine/cmp/cmp_protect.h"
#include "engine/cmp/cmp_protect_internal.h"

// Certificate ::= SEQUENCE {                               -- RFC 5280 §4.1
//     tbsCertificate       TBSCertificate,
//     signatureAlgorithm   AlgorithmIdentifier,
//     signatureValue       BIT STRING }
// TBSCertificate ::= SEQUENCE {
//     version         [0]  EXPLICIT Version DEFAULT v1,
//     serialNumber         CertificateSerialNumber,
//     signature            AlgorithmIdentifier,
//     issuer               Name,
//     validity             Validity,
//     subject              Name,
//     subjectPublicKeyInfo SubjectPublicKeyInfo,
//     ... }
static CM_RESULT prot_cert_spki(cm_span *out_spki, cm_span cert)
{
    der_reader r;
    der_reader c;
    der_reader tbs;
    der_reader_init(&r, cert);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &c));
    CM_TRY(der_expect_end(&r));
    CM_TRY(der_enter(&c, DER_TAG_SEQUENCE, &tbs));
    bool present;
    cm_span skip;
    CM_TRY(der_get_optional(&tbs, DER_CONTEXT_CONS(0), &skip, &present));
    cm_span serial;
    CM_TRY(der_get_int_span(&tbs, &serial));
    CM_TRY(der_get_tlv(&tbs, DER_TAG_SEQUENCE, &skip));        // signature
    CM_TRY(der_get_tlv(&tbs, DER_TAG_SEQUENCE, &skip));        // issuer
    CM_TRY(der_get_tlv(&tbs, DER_TAG_SEQUENCE, &skip));        // validity
    CM_TRY(der_get_tlv(&tbs, DER_TAG_SEQUENCE, &skip));        // subject
    CM_TRY(der_get_element(&tbs, DER_TAG_SEQUENCE, out_spki)); // subjectPublicKeyInfo
    CM_TRY(der_get_tlv(&c, DER_TAG_SEQUENCE, &skip));          // signatureAlgorithm
    cm_span sig;
    uint8_t unused;
    CM_TRY(der_get_bitstring(&c, &sig, &unused));
    return der_expect_end(&c);
}

CM_RESULT cmp_protect_cert_spki(cm_span *out_spki, cm_span cert)
{
    cm_result r = prot_cert_spki(out_spki, cert);
    CM_ENSURE(cm_ok(r), CMP_E_PROT_CERT);
    return r;
}

// prot_map_crmf turns a crmf code from the algorithm or key helpers into a protection code.
static uint32_t prot_map_crmf(uint32_t code)
{
    switch (code) {
    case CRMF_E_ALG_SHA1:
        return CMP_E_PROT_ALG_WEAK;
    case CRMF_E_ALG_UNSUPPORTED:
    case CRMF_E_BAD_ALG_PARAMS:
    case CRMF_E_KEY_UNSUPPORTED:
        return CMP_E_PROT_ALG_UNSUPPORTED;
    case CRMF_E_KEY_ALG_MISMATCH:
        return CMP_E_PROT_KEY_MISMATCH;
    case CRMF_E_BAD_SIGNATURE:
        return CMP_E_PROT_SIG_INVALID;
    case CRMF_E_BAD_SPKI:
        return CMP_E_PROT_CERT;
    case CM_E_NOMEM:
        return CM_E_NOMEM;
    default:
        break;
    }
    if (CM_CODE_CLASS(code) == CM_CLASS_PROTO) {
        return CMP_E_PROT_PARAMS; // the DER reader rejected the AlgorithmIdentifier
    }
    return CM_E_CRYPTO;
}

CM_RESULT cmp_protect_verify_sig(crmf_crypto *c, cm_span alg, cm_span protected_content,
                                 cm_span protection, uint8_t unused_bits, cm_span signer_cert,
                                 cm_why *why)
{
    char alg_text[96];
    char key_text[96];
    crmf_sig_alg sa;
    cm_result r = crmf_sig_alg_decode(&sa, alg, why);
    if (!cm_ok(r)) {
        const uint32_t code = prot_map_crmf(r.code);
        if (why != NULL && code == CMP_E_PROT_ALG_UNSUPPORTED) {
            cm_why_set(why, "the protection algorithm %s %s",
                       crmf_alg_text(alg_text, sizeof(alg_text), alg),
                       r.code == CRMF_E_BAD_ALG_PARAMS ? "has parameters that are not supported"
                                                       : "is not supported");
        }
        CM_BAIL(code);
    }
    const crmf_alg *row = crmf_sig_alg_row(&sa);
    CM_ENSURE(row != NULL, CMP_E_PROT_ALG_UNSUPPORTED);
    if (!crmf_alg_policy_allows(&c->prot_policy, row->id)) {
        cm_why_set(why, "signature algorithm %s is not allowed (protection_algs)", row->asn1_name);
        CM_BAIL(row->sha1 ? CMP_E_PROT_ALG_WEAK : CMP_E_PROT_ALG_POLICY);
    }
    CM_ENSURE(unused_bits == 0, CMP_E_PROT_BITS);
    cm_span spki_der = {NULL, 0};
    CM_TRY(cmp_protect_cert_spki(&spki_der, signer_cert));
    crmf_spki spki;
    CM_ENSURE(cm_ok(crmf_spki_from_der(&spki, spki_der)), CMP_E_PROT_CERT);
    // Key type against algorithm before any key construction or hashing.
    if (!crmf_sig_alg_key_ok(&sa, spki.type)) {
        cm_why_set(why, "the protection algorithm %s does not fit the signer's %s key",
                   row->asn1_name, crmf_key_text(key_text, sizeof(key_text), &spki));
        CM_BAIL(CMP_E_PROT_KEY_MISMATCH);
    }
    EVP_PKEY *key = NULL;
    r = crmf_crypto_key_from_spki(c, &key, &spki);
    if (!cm_ok(r)) {
        const uint32_t code = prot_map_crmf(r.code);
        if (code == CMP_E_PROT_ALG_UNSUPPORTED) {
            cm_why_set(why, "the signer's key (%s) is not supported",
                       crmf_key_text(key_text, sizeof(key_text), &spki));
        }
        CM_BAIL(code);
    }
    uint8_t hdr_buf[6];
    size_t hdr_len = 0;
    r = cmp_protected_part_header(hdr_buf, sizeof(hdr_buf), &hdr_len, protected_content.len);
    if (cm_ok(r)) {
        // ProtectedPart in two pieces: its SEQUENCE header and the message's own bytes.
        const cm_span parts[2] = {cm_span_make(hdr_buf, hdr_len), protected_content};
        r = crmf_crypto_verify_parts(c, &sa, key, parts, 2, protection);
        if (!cm_ok(r)) {
            r = cm_result_make(prot_map_crmf(r.code));
        }
    }
    EVP_PKEY_free(key);
    if (r.code == CMP_E_PROT_SIG_INVALID) {
        cm_why_set(why, "the message signature (%s) does not verify with the signer's %s key",
                   row->asn1_name, crmf_key_text(key_text, sizeof(key_text), &spki));
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Signature production

CM_RESULT cmp_protect_sign_input(cm_arena *arena, cm_span *out, cm_span protected_content)
{
    uint8_t hdr[6];
    size_t hdr_len = 0;
    CM_TRY(cmp_protected_part_header(hdr, sizeof(hdr), &hdr_len, protected_content.len));
    uint8_t *buf = cm_arena_alloc(arena, hdr_len + protected_content.len);
    CM_ENSURE(buf != NULL, CM_E_NOMEM);
    memcpy(buf, hdr, hdr_len);
    if (protected_content.len > 0) {
        memcpy(buf + hdr_len, protected_content.p, protected_content.len);
    }
    *out = cm_span_make(buf, hdr_len + protected_content.len);
    return cm_result_make(CM_OK);
}

void cmp_protect_put_signature(der_builder *b, cm_span signature)
{
    cmp_prot_put_protection(b, signature);
}

CM_RESULT cmp_protect_put_signed(der_builder *b, cm_arena *arena, const cmp_signer *signer,
                                 cm_span protected_content)
{
    cm_span tbs = {NULL, 0};
    cm_result r = cmp_protect_sign_input(arena, &tbs, protected_content);
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    if (cm_ok(r)) {
        sig = cm_arena_alloc(arena, CMP_PROTECT_MAX_SIG_LEN);
        r = cm_result_make(sig != NULL ? CM_OK : CM_E_NOMEM);
    }
    if (cm_ok(r)) {
        r = signer->sign(signer->arg, sig, CMP_PROTECT_MAX_SIG_LEN, &sig_len, tbs);
    }
    if (cm_ok(r) && sig_len > CMP_PROTECT_MAX_SIG_LEN) {
        r = cm_result_make(CM_E_INVALID_ARG); // the signer broke its contract
    }
    if (!cm_ok(r)) {
        der_builder_fail(b, r.code);
        return r;
    }
    cmp_prot_put_protection(b, cm_span_make(sig, sig_len));
    return cm_result_make(der_builder_ok(b) ? CM_OK : b->err);
}
