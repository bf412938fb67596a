// engine/cmp signature protection: verification of a signed PKIMessage over ProtectedPart
// with the key of extraCerts[0] (RFC 4210 §5.1.3.3, RFC 9481 §3). Algorithm descriptors, key
// construction and EdDSA verification come from engine/crmf.
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "engine/cmp/cmp_protect.h"

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

// prot_verify_streamed verifies a hash-then-sign signature (RSA PKCS#1 v1.5, RSASSA-PSS,
// ECDSA) over SEQUENCE header || content, feeding the two pieces without joining them.
static CM_RESULT prot_verify_streamed(crmf_crypto *c, const crmf_sig_alg *sa, EVP_PKEY *key,
                                      cm_span hdr, cm_span content, cm_span sig)
{
    const EVP_MD *md = c->md[sa->hash];
    CM_ENSURE(md != NULL, CMP_E_PROT_ALG_UNSUPPORTED);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    CM_ENSURE(mctx != NULL, CM_E_NOMEM);
    uint32_t code = CM_E_CRYPTO;
    EVP_PKEY_CTX *pctx = NULL; // owned by mctx
    if (EVP_DigestVerifyInit_ex(mctx, &pctx, EVP_MD_get0_name(md), c->libctx, c->propq, key,
                                NULL) != 1) {
        goto out;
    }
    if (sa->kind == CRMF_SIG_RSA_PSS) {
        const EVP_MD *mgf1 = c->md[sa->mgf1_hash];
        if (mgf1 == NULL || sa->salt_len > 0x7fffffffu ||
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, mgf1) <= 0 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, (int)sa->salt_len) <= 0) {
            goto out;
        }
    }
    if (EVP_DigestVerifyUpdate(mctx, hdr.p, hdr.len) != 1 ||
        EVP_DigestVerifyUpdate(mctx, content.p, content.len) != 1) {
        goto out;
    }
    // 1: valid; 0: wrong signature; negative: e.g. a malformed ECDSA-Sig-Value. All but 1
    // mean the protection does not verify.
    code = EVP_DigestVerifyFinal(mctx, sig.p, sig.len) == 1 ? CM_OK : CMP_E_PROT_SIG_INVALID;
out:
    EVP_MD_CTX_free(mctx);
    if (code != CM_OK) {
        cm_ossl_clear_errors();
        CM_BAIL(code);
    }
    return cm_result_make(CM_OK);
}

// prot_verify_oneshot joins ProtectedPart into one buffer (EdDSA has no streaming interface)
// and lets crmf verify it.
static CM_RESULT prot_verify_oneshot(crmf_crypto *c, const crmf_sig_alg *sa, EVP_PKEY *key,
                                     cm_span hdr, cm_span content, cm_span sig)
{
    const size_t len = hdr.len + content.len;
    uint8_t *buf = OPENSSL_malloc(len);
    CM_ENSURE(buf != NULL, CM_E_NOMEM);
    memcpy(buf, hdr.p, hdr.len);
    if (content.len > 0) {
        memcpy(buf + hdr.len, content.p, content.len);
    }
    cm_result r = crmf_crypto_verify(c, sa, key, cm_span_make(buf, len), sig);
    OPENSSL_free(buf);
    if (!cm_ok(r)) {
        CM_BAIL(prot_map_crmf(r.code));
    }
    return r;
}

CM_RESULT cmp_protect_verify_sig(crmf_crypto *c, cm_span alg, cm_span protected_content,
                                 cm_span protection, uint8_t unused_bits, cm_span signer_cert,
                                 cm_why *why)
{
    char alg_text[96];
    char key_text[96];
    crmf_sig_alg sa;
    cm_result r = crmf_sig_alg_from_der(&sa, alg);
    if (!cm_ok(r)) {
        const uint32_t code = prot_map_crmf(r.code);
        if (why != NULL && (code == CMP_E_PROT_ALG_WEAK || code == CMP_E_PROT_ALG_UNSUPPORTED)) {
            cm_why_set(why, "the protection algorithm %s %s",
                       crmf_alg_text(alg_text, sizeof(alg_text), alg),
                       code == CMP_E_PROT_ALG_WEAK ? "is based on SHA-1, which is not accepted"
                       : r.code == CRMF_E_BAD_ALG_PARAMS ? "has parameters that are not supported"
                                                         : "is not supported");
        }
        CM_BAIL(code);
    }
    CM_ENSURE(unused_bits == 0, CMP_E_PROT_BITS);
    cm_span spki_der = {NULL, 0};
    CM_TRY(cmp_protect_cert_spki(&spki_der, signer_cert));
    crmf_spki spki;
    CM_ENSURE(cm_ok(crmf_spki_from_der(&spki, spki_der)), CMP_E_PROT_CERT);
    // Key type against algorithm before any key construction or hashing.
    if (!crmf_sig_alg_key_ok(&sa, spki.type)) {
        cm_why_set(why, "the protection algorithm %s does not fit the signer's %s key",
                   crmf_alg_text(alg_text, sizeof(alg_text), alg),
                   crmf_key_text(key_text, sizeof(key_text), &spki));
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
        const cm_span hdr = cm_span_make(hdr_buf, hdr_len);
        if (sa.kind == CRMF_SIG_ED25519 || sa.kind == CRMF_SIG_ED448) {
            r = prot_verify_oneshot(c, &sa, key, hdr, protected_content, protection);
        } else {
            r = prot_verify_streamed(c, &sa, key, hdr, protected_content, protection);
        }
    }
    EVP_PKEY_free(key);
    if (r.code == CMP_E_PROT_SIG_INVALID) {
        cm_why_set(why, "the message signature (%s) does not verify with the signer's %s key",
                   crmf_alg_text(alg_text, sizeof(alg_text), alg),
                   crmf_key_text(key_text, sizeof(key_text), &spki));
    }
    return r;
}
