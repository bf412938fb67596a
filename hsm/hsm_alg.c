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
// Names

typedef struct hsm_ckr_entry {
    unsigned long rv;
    const char *name;
} hsm_ckr_entry;

#define HSM_CKR(x) \
    {              \
        x, #x      \
    }
static const hsm_ckr_entry k_hsm_ckr_names[] = {
    HSM_CKR(CKR_OK),
    HSM_CKR(CKR_CANCEL),
    HSM_CKR(CKR_HOST_MEMORY),
    HSM_CKR(CKR_SLOT_ID_INVALID),
    HSM_CKR(CKR_GENERAL_ERROR),
    HSM_CKR(CKR_FUNCTION_FAILED),
    HSM_CKR(CKR_ARGUMENTS_BAD),
    HSM_CKR(CKR_NO_EVENT),
    HSM_CKR(CKR_NEED_TO_CREATE_THREADS),
    HSM_CKR(CKR_CANT_LOCK),
    HSM_CKR(CKR_ATTRIBUTE_READ_ONLY),
    HSM_CKR(CKR_ATTRIBUTE_SENSITIVE),
    HSM_CKR(CKR_ATTRIBUTE_TYPE_INVALID),
    HSM_CKR(CKR_ATTRIBUTE_VALUE_INVALID),
    HSM_CKR(CKR_ACTION_PROHIBITED),
    HSM_CKR(CKR_DATA_INVALID),
    HSM_CKR(CKR_DATA_LEN_RANGE),
    HSM_CKR(CKR_DEVICE_ERROR),
    HSM_CKR(CKR_DEVICE_MEMORY),
    HSM_CKR(CKR_DEVICE_REMOVED),
    HSM_CKR(CKR_FUNCTION_CANCELED),
    HSM_CKR(CKR_FUNCTION_NOT_PARALLEL),
    HSM_CKR(CKR_FUNCTION_NOT_SUPPORTED),
    HSM_CKR(CKR_KEY_HANDLE_INVALID),
    HSM_CKR(CKR_KEY_SIZE_RANGE),
    HSM_CKR(CKR_KEY_TYPE_INCONSISTENT),
    HSM_CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
    HSM_CKR(CKR_MECHANISM_INVALID),
    HSM_CKR(CKR_MECHANISM_PARAM_INVALID),
    HSM_CKR(CKR_OBJECT_HANDLE_INVALID),
    HSM_CKR(CKR_OPERATION_ACTIVE),
    HSM_CKR(CKR_OPERATION_NOT_INITIALIZED),
    HSM_CKR(CKR_PIN_INCORRECT),
    HSM_CKR(CKR_PIN_INVALID),
    HSM_CKR(CKR_PIN_LEN_RANGE),
    HSM_CKR(CKR_PIN_EXPIRED),
    HSM_CKR(CKR_PIN_LOCKED),
    HSM_CKR(CKR_SESSION_CLOSED),
    HSM_CKR(CKR_SESSION_COUNT),
    HSM_CKR(CKR_SESSION_HANDLE_INVALID),
    HSM_CKR(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    HSM_CKR(CKR_SESSION_READ_ONLY),
    HSM_CKR(CKR_SESSION_EXISTS),
    HSM_CKR(CKR_SESSION_READ_ONLY_EXISTS),
    HSM_CKR(CKR_SESSION_READ_WRITE_SO_EXISTS),
    HSM_CKR(CKR_SIGNATURE_INVALID),
    HSM_CKR(CKR_SIGNATURE_LEN_RANGE),
    HSM_CKR(CKR_TEMPLATE_INCOMPLETE),
    HSM_CKR(CKR_TEMPLATE_INCONSISTENT),
    HSM_CKR(CKR_TOKEN_NOT_PRESENT),
    HSM_CKR(CKR_TOKEN_NOT_RECOGNIZED),
    HSM_CKR(CKR_TOKEN_WRITE_PROTECTED),
    HSM_CKR(CKR_USER_ALREADY_LOGGED_IN),
    HSM_CKR(CKR_USER_NOT_LOGGED_IN),
    HSM_CKR(CKR_USER_PIN_NOT_INITIALIZED),
    HSM_CKR(CKR_USER_TYPE_INVALID),
    HSM_CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    HSM_CKR(CKR_USER_TOO_MANY_TYPES),
    HSM_CKR(CKR_DOMAIN_PARAMS_INVALID),
    HSM_CKR(CKR_CURVE_NOT_SUPPORTED),
    HSM_CKR(CKR_BUFFER_TOO_SMALL),
    HSM_CKR(CKR_RANDOM_NO_RNG),
    HSM_CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
    HSM_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    HSM_CKR(CKR_MUTEX_BAD),
    HSM_CKR(CKR_MUTEX_NOT_LOCKED),
    HSM_CKR(CKR_FUNCTION_REJECTED),
};
#undef HSM_CKR

const char *hsm_ckr_name(unsigned long rv)
{
    for (size_t i = 0; i < sizeof(k_hsm_ckr_names) / sizeof(k_hsm_ckr_names[0]); i++) {
        if (k_hsm_ckr_names[i].rv == rv) {
            return k_hsm_ckr_names[i].name;
        }
    }
    return rv >= CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "CKR_UNKNOWN";
}

static const char *const k_hsm_code_names[] = {
    [0x01] = "HSM_E_URI",
    [0x02] = "HSM_E_NO_MODULE",
    [0x03] = "HSM_E_MODULE_LOAD",
    [0x04] = "HSM_E_NO_TOKEN",
    [0x05] = "HSM_E_AMBIGUOUS_TOKEN",
    [0x06] = "HSM_E_NO_KEY",
    [0x07] = "HSM_E_AMBIGUOUS_KEY",
    [0x08] = "HSM_E_NO_PIN",
    [0x09] = "HSM_E_PIN_SOURCE",
    [0x0a] = "HSM_E_KEY_TYPE",
    [0x0b] = "HSM_E_ALG_MISMATCH",
    [0x0c] = "HSM_E_MECHANISM",
    [0x0d] = "HSM_E_SHUTDOWN",
    [0x0e] = "HSM_E_QUEUE_FULL",
    [0x0f] = "HSM_E_BAD_SIGNATURE",
    [0x10] = "HSM_E_KEY_EXISTS",
    [0x11] = "HSM_E_ALWAYS_AUTH",
    [0x12] = "HSM_E_NO_PUBLIC_KEY",
};

const char *hsm_result_name(cm_result r)
{
    uint32_t cls = cm_result_class(r);
    uint32_t detail = CM_CODE_DETAIL(r.code);
    if (cls == CM_CLASS_HSM) {
        return hsm_ckr_name(detail);
    }
    if (cls != CM_CLASS_OK && detail >= 0x400 &&
        detail < 0x400 + sizeof(k_hsm_code_names) / sizeof(k_hsm_code_names[0])) {
        const char *n = k_hsm_code_names[detail - 0x400];
        if (n != NULL) {
            return n;
        }
    }
    return cm_result_name(r);
}

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
    hsm_error_set(err, "%s: %s (0x%lx)", func, hsm_ckr_name(rv), (unsigned long)rv);
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
