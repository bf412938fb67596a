// engine/crmf: proof-of-possession checks (RFC 4211 §4, RFC 9483 §4.1.1) and the PKCS#10
// self-signature (RFC 2986 §4.2).
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/objects.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der_oid.h"

const char *crmf_oid_text(char *buf, size_t cap, cm_span oid)
{
    char dotted[96];
    der_oid_to_text(oid, dotted, sizeof(dotted));
    ASN1_OBJECT *obj = OBJ_txt2obj(dotted, 1);
    const int nid = obj != NULL ? OBJ_obj2nid(obj) : NID_undef;
    ASN1_OBJECT_free(obj);
    cm_ossl_clear_errors();
    const char *ln = nid != NID_undef ? OBJ_nid2ln(nid) : NULL;
    (void)snprintf(buf, cap, "%s", ln != NULL ? ln : dotted);
    return buf;
}

const char *crmf_alg_text(char *buf, size_t cap, cm_span alg_whole)
{
    der_reader r;
    der_reader a;
    cm_span oid;
    der_reader_init(&r, alg_whole);
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &a)) || !cm_ok(der_get_oid(&a, &oid))) {
        (void)snprintf(buf, cap, "a malformed algorithm");
        return buf;
    }
    return crmf_oid_text(buf, cap, oid);
}

const char *crmf_key_text(char *buf, size_t cap, const crmf_spki *spki)
{
    switch (spki->type) {
    case CRMF_KEY_RSA:
        (void)snprintf(buf, cap, "RSA");
        break;
    case CRMF_KEY_RSA_PSS:
        (void)snprintf(buf, cap, "RSA-PSS");
        break;
    case CRMF_KEY_EC:
        (void)snprintf(buf, cap, "EC %s", spki->ec_group != NULL ? spki->ec_group : "");
        break;
    case CRMF_KEY_ED25519:
        (void)snprintf(buf, cap, "Ed25519");
        break;
    case CRMF_KEY_ED448:
        (void)snprintf(buf, cap, "Ed448");
        break;
    case CRMF_KEY_X25519:
        (void)snprintf(buf, cap, "X25519");
        break;
    case CRMF_KEY_X448:
        (void)snprintf(buf, cap, "X448");
        break;
    default: {
        // An EC key on a curve we do not know: name the curve.
        der_reader r;
        cm_span curve;
        der_reader_init(&r, spki->alg_params);
        if (der_oid_is(spki->alg_oid, DER_OID_EC_PUBLIC_KEY) && cm_ok(der_get_oid(&r, &curve))) {
            char name[64];
            (void)snprintf(buf, cap, "EC %s", crmf_oid_text(name, sizeof(name), curve));
        } else {
            (void)crmf_oid_text(buf, cap, spki->alg_oid);
        }
        break;
    }
    }
    return buf;
}

// crmf_verify_with_spki builds the key of |spki| and verifies |sig| over |data| under the
// AlgorithmIdentifier |alg_whole|, which must be in the POPO policy (pop_algs). Algorithm/key
// mismatch is CRMF_E_KEY_ALG_MISMATCH. |what| names the signature in reasons ("the POPO
// signature").
static cm_result crmf_verify_with_spki(crmf_crypto *c, const crmf_spki *spki, cm_span alg_whole,
                                       cm_span data, cm_span sig, const char *what, cm_why *why)
{
    char alg_text[96];
    char key_text[96];
    crmf_sig_alg alg;
    cm_result r = crmf_sig_alg_decode(&alg, alg_whole, why);
    if (!cm_ok(r)) {
        if (why != NULL && (r.code == CRMF_E_ALG_UNSUPPORTED || r.code == CRMF_E_BAD_ALG_PARAMS)) {
            cm_why_set(why, "%s algorithm %s %s", what,
                       crmf_alg_text(alg_text, sizeof(alg_text), alg_whole),
                       r.code == CRMF_E_BAD_ALG_PARAMS ? "has wrong parameters"
                                                       : "is not supported");
        }
        return r;
    }
    const crmf_alg *row = crmf_sig_alg_row(&alg);
    CM_ENSURE(row != NULL, CRMF_E_ALG_UNSUPPORTED);
    if (!crmf_alg_policy_allows(&c->pop_policy, row->id)) {
        cm_why_set(why, "signature algorithm %s is not allowed (pop_algs)", row->asn1_name);
        CM_BAIL(row->sha1 ? CRMF_E_ALG_SHA1 : CRMF_E_ALG_POLICY);
    }
    if (spki->type == CRMF_KEY_UNKNOWN) {
        cm_why_set(why, "the public key (%s) is not supported",
                   crmf_key_text(key_text, sizeof(key_text), spki));
        CM_BAIL(CRMF_E_KEY_UNSUPPORTED);
    }
    if (!crmf_sig_alg_key_ok(&alg, spki->type)) {
        cm_why_set(why, "%s algorithm %s does not fit the %s key", what, row->asn1_name,
                   crmf_key_text(key_text, sizeof(key_text), spki));
        CM_BAIL(CRMF_E_KEY_ALG_MISMATCH);
    }
    EVP_PKEY *key = NULL;
    CM_TRY(crmf_crypto_key_from_spki(c, &key, spki));
    cm_result res = crmf_crypto_verify(c, &alg, key, data, sig);
    EVP_PKEY_free(key);
    if (res.code == CRMF_E_BAD_SIGNATURE) {
        cm_why_set(why, "%s (%s) does not verify with the %s public key", what, row->asn1_name,
                   crmf_key_text(key_text, sizeof(key_text), spki));
    }
    return res;
}

cm_result crmf_popo_verify(crmf_crypto *c, const crmf_cert_req_msg *msg, cm_why *why)
{
    const crmf_popo *popo = &msg->popo;
    const crmf_template *tm = &msg->req.tmpl;
    switch (popo->type) {
    case CRMF_POPO_ABSENT:
        CM_BAIL(CRMF_E_POPO_MISSING);
    case CRMF_POPO_RA_VERIFIED:
        CM_BAIL(CRMF_E_POPO_RA_VERIFIED);
    case CRMF_POPO_KEY_ENCIPHERMENT:
    case CRMF_POPO_KEY_AGREEMENT:
        CM_BAIL(CRMF_E_POPO_INDIRECT);
    case CRMF_POPO_SIGNATURE:
        break;
    default:
        CM_BAIL(CM_E_INVALID_ARG);
    }
    // RFC 4211 §4.1: poposkInput MUST be omitted when the template holds both the subject and
    // the public key (the signature then covers the CertRequest itself).
    if (popo->has_poposk_input) {
        CM_ENSURE(!(tm->subject.len > 0 && tm->public_key.len > 0), CRMF_E_POPO_INPUT_MISUSE);
        CM_BAIL(CRMF_E_POPO_INPUT_UNSUPPORTED);
    }
    CM_ENSURE(tm->public_key.len > 0, CRMF_E_POPO_NO_KEY);
    cm_result res = crmf_verify_with_spki(c, &tm->spki, popo->alg, msg->req.whole, popo->signature,
                                          "the POPO signature", why);
    switch (res.code) {
    case CRMF_E_BAD_SIGNATURE:
        CM_BAIL(CRMF_E_POPO_BAD_SIGNATURE);
    case CRMF_E_KEY_ALG_MISMATCH:
        CM_BAIL(CRMF_E_POPO_KEY_MISMATCH);
    default:
        return res;
    }
}

// crmf_popo_priv_key_body returns the content of the POPOPrivKey alternative |choice| of
// |popo| (the parser checked its form).
static cm_result crmf_popo_priv_key_body(const crmf_popo *popo, uint32_t choice, cm_span *out)
{
    CM_ENSURE(popo->type == CRMF_POPO_KEY_ENCIPHERMENT || popo->type == CRMF_POPO_KEY_AGREEMENT,
              CM_E_INVALID_ARG);
    CM_ENSURE(popo->priv_key_choice == choice, CM_E_INVALID_ARG);
    der_reader r;
    uint32_t tag;
    cm_span whole;
    der_reader_init(&r, popo->priv_key);
    CM_TRY(der_get_any(&r, &tag, out, &whole));
    return der_expect_end(&r);
}

cm_result crmf_popo_subsequent(const crmf_popo *popo, uint64_t *out)
{
    cm_span body;
    CM_TRY(crmf_popo_priv_key_body(popo, CRMF_PRIV_SUBSEQUENT, &body));
    return der_parse_u64(body, out);
}

cm_result crmf_popo_encrypted_key(const crmf_popo *popo, cm_span *out_body)
{
    return crmf_popo_priv_key_body(popo, CRMF_PRIV_ENCRYPTED_KEY, out_body);
}

cm_result crmf_csr_verify(crmf_crypto *c, const crmf_csr *csr, cm_why *why)
{
    cm_result res = crmf_verify_with_spki(c, &csr->spki, csr->sig_alg, csr->info, csr->signature,
                                          "the PKCS#10 self-signature", why);
    if (res.code == CRMF_E_BAD_SIGNATURE) {
        CM_BAIL(CRMF_E_CSR_BAD_SIGNATURE);
    }
    return res;
}
