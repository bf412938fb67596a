// Names, AlgorithmIdentifiers, the ECDSA signature conversion and SubjectPublicKeyInfo
// encoding: everything in hsm that is pure byte work.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
// Signature algorithms

const char *hsm_sig_alg_name(hsm_sig_alg alg)
{
    switch (alg) {
    case HSM_SIG_ECDSA_SHA256:
        return "ecdsa-with-SHA256";
    case HSM_SIG_ECDSA_SHA384:
        return "ecdsa-with-SHA384";
    case HSM_SIG_ECDSA_SHA512:
        return "ecdsa-with-SHA512";
    case HSM_SIG_RSA_PKCS1_SHA256:
        return "sha256WithRSAEncryption";
    case HSM_SIG_RSA_PKCS1_SHA384:
        return "sha384WithRSAEncryption";
    case HSM_SIG_RSA_PKCS1_SHA512:
        return "sha512WithRSAEncryption";
    case HSM_SIG_RSA_PSS_SHA256:
        return "RSASSA-PSS-SHA256";
    case HSM_SIG_RSA_PSS_SHA384:
        return "RSASSA-PSS-SHA384";
    case HSM_SIG_RSA_PSS_SHA512:
        return "RSASSA-PSS-SHA512";
    case HSM_SIG_ED25519:
        return "Ed25519";
    default:
        return "?";
    }
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
    switch (alg) {
    case HSM_SIG_ECDSA_SHA256:
    case HSM_SIG_ECDSA_SHA384:
    case HSM_SIG_ECDSA_SHA512:
        return type == HSM_KEY_EC_P256 || type == HSM_KEY_EC_P384 || type == HSM_KEY_EC_P521;
    case HSM_SIG_RSA_PKCS1_SHA256:
    case HSM_SIG_RSA_PKCS1_SHA384:
    case HSM_SIG_RSA_PKCS1_SHA512:
    case HSM_SIG_RSA_PSS_SHA256:
    case HSM_SIG_RSA_PSS_SHA384:
    case HSM_SIG_RSA_PSS_SHA512:
        return type == HSM_KEY_RSA;
    case HSM_SIG_ED25519:
        return type == HSM_KEY_ED25519;
    default:
        return false;
    }
}

// hsm_put_hash_alg_id writes the hash AlgorithmIdentifier RSASSA-PSS-params use. RFC 4055 §2.1
// defines them with NULL parameters ("sha256Identifier AlgorithmIdentifier ::= { id-sha256,
// NULL }"), which is also what OpenSSL writes; verifiers must accept NULL and absent alike.
static void hsm_put_hash_alg_id(der_builder *b, cm_span hash_oid)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, hash_oid);
    der_put_null(b);
    der_close(b, &m);
}

// RFC 4055 §3.1:
//   RSASSA-PSS-params  ::=  SEQUENCE  {
//       hashAlgorithm      [0] HashAlgorithm DEFAULT sha1Identifier,
//       maskGenAlgorithm   [1] MaskGenAlgorithm DEFAULT mgf1SHA1Identifier,
//       saltLength         [2] INTEGER DEFAULT 20,
//       trailerField       [3] INTEGER DEFAULT 1  }
//   MaskGenAlgorithm ::= AlgorithmIdentifier   -- id-mgf1 with a HashAlgorithm parameter
// DER omits trailerField (its default); the others differ from their SHA-1 defaults.
static void hsm_put_pss_params(der_builder *b, cm_span hash_oid, int64_t salt_len)
{
    der_mark params, h, mgf, mgf_alg, salt;
    der_open(b, &params, DER_TAG_SEQUENCE);
    der_open(b, &h, DER_CONTEXT_CONS(0));
    hsm_put_hash_alg_id(b, hash_oid);
    der_close(b, &h);
    der_open(b, &mgf, DER_CONTEXT_CONS(1));
    der_open(b, &mgf_alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_MGF1);
    hsm_put_hash_alg_id(b, hash_oid);
    der_close(b, &mgf_alg);
    der_close(b, &mgf);
    der_open(b, &salt, DER_CONTEXT_CONS(2));
    der_put_i64(b, salt_len);
    der_close(b, &salt);
    der_close(b, &params);
}

// AlgorithmIdentifier  ::=  SEQUENCE  {
//      algorithm               OBJECT IDENTIFIER,
//      parameters              ANY DEFINED BY algorithm OPTIONAL  }   -- RFC 5280 §4.1.1.2
void hsm_sig_alg_marshal(der_builder *b, hsm_sig_alg alg)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    switch (alg) {
    case HSM_SIG_ECDSA_SHA256: // RFC 5758 §3.2: parameters absent
        der_put_oid_lit(b, DER_OID_ECDSA_WITH_SHA256);
        break;
    case HSM_SIG_ECDSA_SHA384:
        der_put_oid_lit(b, DER_OID_ECDSA_WITH_SHA384);
        break;
    case HSM_SIG_ECDSA_SHA512:
        der_put_oid_lit(b, DER_OID_ECDSA_WITH_SHA512);
        break;
    case HSM_SIG_RSA_PKCS1_SHA256: // RFC 4055 §5: parameters NULL
        der_put_oid_lit(b, DER_OID_SHA256_WITH_RSA);
        der_put_null(b);
        break;
    case HSM_SIG_RSA_PKCS1_SHA384:
        der_put_oid_lit(b, DER_OID_SHA384_WITH_RSA);
        der_put_null(b);
        break;
    case HSM_SIG_RSA_PKCS1_SHA512:
        der_put_oid_lit(b, DER_OID_SHA512_WITH_RSA);
        der_put_null(b);
        break;
    case HSM_SIG_RSA_PSS_SHA256:
        der_put_oid_lit(b, DER_OID_RSASSA_PSS);
        hsm_put_pss_params(b, CM_SPAN_LIT(DER_OID_SHA256), 32);
        break;
    case HSM_SIG_RSA_PSS_SHA384:
        der_put_oid_lit(b, DER_OID_RSASSA_PSS);
        hsm_put_pss_params(b, CM_SPAN_LIT(DER_OID_SHA384), 48);
        break;
    case HSM_SIG_RSA_PSS_SHA512:
        der_put_oid_lit(b, DER_OID_RSASSA_PSS);
        hsm_put_pss_params(b, CM_SPAN_LIT(DER_OID_SHA512), 64);
        break;
    case HSM_SIG_ED25519: // RFC 8410 §3: parameters absent
        der_put_oid_lit(b, DER_OID_ED25519);
        break;
    default:
        der_builder_fail(b, CM_E_INVALID_ARG);
        break;
    }
    der_close(b, &m);
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
