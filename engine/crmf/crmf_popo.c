// engine/crmf: proof-of-possession checks (RFC 4211 §4, RFC 9483 §4.1.1) and the PKCS#10
// self-signature (RFC 2986 §4.2).
#include <openssl/evp.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"

// crmf_verify_with_spki builds the key of |spki| and verifies |sig| over |data| under the
// AlgorithmIdentifier |alg_whole|. Algorithm/key mismatch is CRMF_E_KEY_ALG_MISMATCH.
static cm_result crmf_verify_with_spki(crmf_crypto *c, const crmf_spki *spki, cm_span alg_whole,
                                       cm_span data, cm_span sig)
{
    crmf_sig_alg alg;
    CM_TRY(crmf_sig_alg_from_der(&alg, alg_whole));
    CM_ENSURE(spki->type != CRMF_KEY_UNKNOWN, CRMF_E_KEY_UNSUPPORTED);
    CM_ENSURE(crmf_sig_alg_key_ok(&alg, spki->type), CRMF_E_KEY_ALG_MISMATCH);
    EVP_PKEY *key = NULL;
    CM_TRY(crmf_crypto_key_from_spki(c, &key, spki));
    cm_result res = crmf_crypto_verify(c, &alg, key, data, sig);
    EVP_PKEY_free(key);
    return res;
}

cm_result crmf_popo_verify(crmf_crypto *c, const crmf_cert_req_msg *msg)
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
    cm_result res = crmf_verify_with_spki(c, &tm->spki, popo->alg, msg->req.whole, popo->signature);
    switch (res.code) {
    case CRMF_E_BAD_SIGNATURE:
        CM_BAIL(CRMF_E_POPO_BAD_SIGNATURE);
    case CRMF_E_KEY_ALG_MISMATCH:
        CM_BAIL(CRMF_E_POPO_KEY_MISMATCH);
    default:
        return res;
    }
}

cm_result crmf_csr_verify(crmf_crypto *c, const crmf_csr *csr)
{
    cm_result res = crmf_verify_with_spki(c, &csr->spki, csr->sig_alg, csr->info, csr->signature);
    if (res.code == CRMF_E_BAD_SIGNATURE) {
        CM_BAIL(CRMF_E_CSR_BAD_SIGNATURE);
    }
    return res;
}
