// cmp_failinfo_from_code: the one mapping from result codes to PKIFailureInfo bits
// (RFC 9810 §5.2.3), so every error response carries the bit its cause calls for.
#include "engine/cmp/cmp.h"

// cmp_fail_bit_of_cmp_code returns the bit number for a cmp code, -1 when |code| is not one.
static int cmp_fail_bit_of_cmp_code(uint32_t code)
{
    switch (code) {
    case CMP_E_UNSUPPORTED_VERSION:
        return CMP_FAIL_UNSUPPORTED_VERSION;
    case CMP_E_BAD_SENDER_NONCE:
        return CMP_FAIL_BAD_SENDER_NONCE;
    case CMP_E_BAD_RECIP_NONCE:
        return CMP_FAIL_BAD_RECIPIENT_NONCE;
    case CMP_E_PROTECTION_NO_ALG:
    case CMP_E_UNKNOWN_HASH_ALG:
        return CMP_FAIL_BAD_ALG;
    case CMP_E_ALG_NO_PROTECTION:
    case CMP_E_NO_EXTRA_CERTS:
        return CMP_FAIL_BAD_MESSAGE_CHECK;
    case CMP_E_UNSUPPORTED_BODY:
    case CMP_E_NESTING_DEPTH:
        return CMP_FAIL_BAD_REQUEST;
    case CMP_E_NO_TRANSACTION_ID:
    case CMP_E_UNKNOWN_BODY:
    case CMP_E_HASHALG_PVNO:
    case CMP_E_BAD_IMPLICIT_CONFIRM:
    case CMP_E_BAD_CONFIRM_WAIT_TIME:
    case CMP_E_EMPTY_SEQUENCE:
    case CMP_E_BAD_CERT_PROFILE:
    case CMP_E_BAD_CRL_REASON:
    case CMP_E_BAD_STATUS:
        return CMP_FAIL_BAD_DATA_FORMAT;
    default:
        return -1;
    }
}

uint32_t cmp_failinfo_from_code(cm_result r)
{
    if (cm_ok(r)) {
        return 0;
    }
    int bit = cmp_fail_bit_of_cmp_code(r.code);
    if (bit < 0) {
        // crmf codes and the DER reader's codes (which crmf maps to badDataFormat).
        bit = crmf_failinfo_bit(r.code);
    }
    if (bit < 0) {
        switch (cm_result_class(r)) {
        case CM_CLASS_PROTO:
            bit = CMP_FAIL_BAD_DATA_FORMAT;
            break;
        case CM_CLASS_POLICY:
            bit = CMP_FAIL_BAD_REQUEST;
            break;
        case CM_CLASS_AGAIN:
            bit = CMP_FAIL_SYSTEM_UNAVAIL;
            break;
        default:
            bit = CMP_FAIL_SYSTEM_FAILURE;
            break;
        }
    }
    return CMP_FAILINFO_BIT((uint32_t)bit);
}
