// Names, AlgorithmIdentifiers, the ECDSA signature conversion and SubjectPublicKeyInfo
// encoding: everything in hsm that is pure byte work.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/crmf/crmf.h"
#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"

// ---------------------------------------------------------------------------------------------
// Errors

void hsm_error_set(hsm_error *err, const char *fmt, ...)
{
    if (err == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

cm_result hsm_ckr_fail(hsm_error *err, const char *func, CK_RV rv)
{
    hsm_error_set(err, "%s: %s (0x%lx)", func, cm_ckr_name(rv), (unsigned long)rv);
    return cm_result_make(cm_code_from_ckr(rv));
}

// ---------------------------------------------------------------------------------------------
// Signature algorithms: each hsm_sig_alg is a row of engine/crmf's algorithm table, which gives
// its names and its AlgorithmIdentifier; what is hsm's is which mechanism makes it
// (hsm_pool.c) and which keys it fits.

static const crmf_alg_id k_hsm_sig_rows[HSM_SIG_COUNT] = {
    [HSM_SIG_ECDSA_SHA256] = CRMF_ALG_ECDSA_SHA256,
    [HSM_SIG_ECDSA_SHA384] = CRMF_ALG_ECDSA_SHA384,
    [HSM_SIG_ECDSA_SHA512] = CRMF_ALG_ECDSA_SHA512,
    [HSM_SIG_RSA_PKCS1_SHA256] = CRMF_ALG_RSA_SHA256,
    [HSM_SIG_RSA_PKCS1_SHA384] = CRMF_ALG_RSA_SHA384,
    [HSM_SIG_RSA_PKCS1_SHA512] = CRMF_ALG_RSA_SHA512,
    [HSM_SIG_RSA_PSS_SHA256] = CRMF_ALG_RSA_PSS_SHA256,
    [HSM_SIG_RSA_PSS_SHA384] = CRMF_ALG_RSA_PSS_SHA384,
    [HSM_SIG_RSA_PSS_SHA512] = CRMF_ALG_RSA_PSS_SHA512,
    [HSM_SIG_ED25519] = CRMF_ALG_ED25519,
    [HSM_SIG_ED448] = CRMF_ALG_ED448,
};

int hsm_sig_alg_row(hsm_sig_alg alg)
{
    return (unsigned)alg < HSM_SIG_COUNT ? (int)k_hsm_sig_rows[alg] : (int)CRMF_ALG_NONE;
}

hsm_sig_alg hsm_sig_alg_of_row(int row)
{
    for (int i = HSM_SIG_NONE + 1; i < HSM_SIG_COUNT; i++) {
        if ((int)k_hsm_sig_rows[i] == row) {
            return (hsm_sig_alg)i;
        }
    }
    return HSM_SIG_NONE;
}

const char *hsm_sig_alg_name(hsm_sig_alg alg)
{
    const crmf_alg *a = crmf_alg_get((crmf_alg_id)hsm_sig_alg_row(alg));
    return a != NULL ? a->asn1_name : "?";
}

hsm_sig_alg hsm_sig_alg_for_type(hsm_key_type type)
{
    switch (type) {
    case HSM_KEY_EC_P256:
        return HSM_SIG_ECDSA_SHA256;
    case HSM_KEY_EC_P384:
        return HSM_SIG_ECDSA_SHA384;
    case HSM_KEY_EC_P521:
        return HSM_SIG_ECDSA_SHA512;
    case HSM_KEY_RSA:
        return HSM_SIG_RSA_PKCS1_SHA256;
    case HSM_KEY_ED25519:
        return HSM_SIG_ED25519;
    case HSM_KEY_ED448:
        return HSM_SIG_ED448;
    default:
        return HSM_SIG_NONE;
    }
}

hsm_sig_alg hsm_sig_alg_for_key(const hsm_key *k)
{
    return hsm_sig_alg_for_type(hsm_key_get_type(k));
}

bool hsm_sig_alg_fits(hsm_sig_alg alg, hsm_key_type type)
{
    const crmf_alg *a = crmf_alg_get((crmf_alg_id)hsm_sig_alg_row(alg));
    if (a == NULL) {
        return false;
    }
    switch (a->sig) {
    case CRMF_SIG_ECDSA:
        return type == HSM_KEY_EC_P256 || type == HSM_KEY_EC_P384 || type == HSM_KEY_EC_P521;
    case CRMF_SIG_RSA_PKCS1:
    case CRMF_SIG_RSA_PSS:
        return type == HSM_KEY_RSA;
    case CRMF_SIG_ED25519:
        return type == HSM_KEY_ED25519;
    case CRMF_SIG_ED448:
        return type == HSM_KEY_ED448;
    default:
        return false;
    }
}

// AlgorithmIdentifier  ::=  SEQUENCE  {
//      algorithm               OBJECT IDENTIFIER,
//      parameters              ANY DEFINED BY algorithm OPTIONAL  }   -- RFC 5280 §4.1.1.2
void hsm_sig_alg_marshal(der_builder *b, hsm_sig_alg alg)
{
    const crmf_alg_id row = (crmf_alg_id)hsm_sig_alg_row(alg);
    if (row == CRMF_ALG_NONE) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    crmf_alg_marshal(b, row);
}

#define HSM_ECDSA_MAX_RAW 132u // P-521: two 66-byte halves

// Ecdsa-Sig-Value  ::=  SEQUENCE  {
//      r     INTEGER,
//      s     INTEGER  }                                     -- RFC 3279 §2.2.3
// PKCS#11 (CKM_ECDSA) returns r and s as two big-endian halves of equal length.
void hsm_ecdsa_sig_marshal(der_builder *b, cm_span raw)
{
    if (raw.len == 0 || raw.len % 2 != 0 || raw.len > HSM_ECDSA_MAX_RAW) {
        der_builder_fail(b, HSM_E_BAD_SIGNATURE);
        return;
    }
    size_t half = raw.len / 2;
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_uint_bytes(b, cm_span_make(raw.p, half));
    der_put_uint_bytes(b, cm_span_make(raw.p + half, half));
    der_close(b, &m);
}
