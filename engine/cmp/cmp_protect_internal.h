// engine/cmp protection internals shared by cmp_protect.c (context, classification),
// cmp_protect_kdf.c (PBM and PBMAC1 parameters and key derivation), cmp_protect_mac.c (the
// MACs over ProtectedPart) and cmp_protect_sig.c (signatures). Only engine/cmp/*.c and its
// tests include this.
#ifndef CERTMINT_ENGINE_CMP_CMP_PROTECT_INTERNAL_H
#define CERTMINT_ENGINE_CMP_CMP_PROTECT_INTERNAL_H

#include <openssl/core_dispatch.h>

#include "engine/cmp/cmp_protect.h"

// cmp_prot_owf is a hash called through its provider's dispatch table, for PasswordBasedMac's
// iterated OWF: it hashes a 20..64-byte value hundreds of times per request, and on OpenSSL 3.0
// EVP_DigestInit_ex2 + Update + Final cost about 190 ns per round on this machine against 80 ns
// for the same provider functions called directly (a 500,000-round loop; cmp_bench's PBM verify
// went from about 120 us to 44 us). The functions are the provider's implementation of the
// digest EVP_MD_fetch returned (same provider, looked up by the digest's name); |newctx| NULL
// means they could not be found and the EVP calls are used.
typedef struct cmp_prot_owf {
    void *provctx;
    const OSSL_PROVIDER *prov;
    const OSSL_ALGORITHM *algs; // from OSSL_PROVIDER_query_operation, handed back at free
    OSSL_FUNC_digest_newctx_fn *newctx;
    OSSL_FUNC_digest_init_fn *init;
    OSSL_FUNC_digest_update_fn *update;
    OSSL_FUNC_digest_final_fn *final;
    OSSL_FUNC_digest_freectx_fn *freectx;
} cmp_prot_owf;

// The AES-GMAC rows (aes128, aes192, aes256) and the KMAC rows (128, 256), in table order.
#define CMP_PROT_NUM_GMAC 3u
#define CMP_PROT_NUM_KMAC 2u

// The fetched algorithms. Templates are configured once (digest, cipher or size set, no key)
// and duplicated per operation, so no operation fetches or looks up anything by name. A NULL
// template is an algorithm the provider lacks.
struct cmp_protect_ctx {
    cmp_protect_limits limits;
    crmf_alg_policy policy; // limits.policy copied (limits.policy then points here)
    EVP_MD *md[CMP_HASH_COUNT];
    cmp_prot_owf owf[CMP_HASH_COUNT];
    EVP_MAC *hmac;
    EVP_MAC_CTX *hmac_tmpl[CMP_HASH_COUNT];
    EVP_MAC *gmac;
    EVP_MAC_CTX *gmac_tmpl[CMP_PROT_NUM_GMAC];
    EVP_MAC *kmac[CMP_PROT_NUM_KMAC];
    EVP_MAC_CTX *kmac_tmpl[CMP_PROT_NUM_KMAC];
};

// Any DER failure inside protection parameters is badDataFormat.
#define CMP_PROT_DER(expr)              \
    do {                                \
        if (!cm_ok(expr)) {             \
            CM_BAIL(CMP_E_PROT_PARAMS); \
        }                               \
    } while (0)

// cmp_prot_hash_crmf maps a cmp_hash to the table's crmf_hash; cmp_prot_hash_of the reverse
// (false when |h| has no cmp_hash). cmp_prot_hash_len is the output length in octets.
crmf_hash cmp_prot_hash_crmf(cmp_hash h);
bool cmp_prot_hash_of(crmf_hash h, cmp_hash *out);
size_t cmp_prot_hash_len(cmp_hash h);

// cmp_prot_hmac_row returns the table row of HMAC-|h| (PBM with |ipsec_oid| names HMAC-SHA1 by
// RFC 4211's OID).
const crmf_alg *cmp_prot_hmac_row(cmp_hash h, bool ipsec_oid);

// cmp_prot_get_algid reads one AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters
// ANY OPTIONAL } (RFC 5280 §4.1.1.2); |*out_params| is a reader over the parameters (empty
// when absent), |*out_has_params| whether they are there. CMP_E_PROT_PARAMS when malformed.
CM_RESULT cmp_prot_get_algid(der_reader *r, cm_span *out_oid, der_reader *out_params,
                             bool *out_has_params);

// cmp_prot_allowed checks row |a| against the context's policy: CMP_E_PROT_ALG_POLICY with
// "|role| |a->asn1_name| is not allowed (protection_algs)" in |why| when it is not.
CM_RESULT cmp_prot_allowed(const cmp_protect_ctx *ctx, const crmf_alg *a, const char *role,
                           cm_why *why);

// cmp_prot_get_hmac reads an HMAC AlgorithmIdentifier (parameters NULL or absent) that must be
// a row of the table (the RFC 4211 OID hmac-sha1 only when |allow_ipsec|) and allowed by the
// policy. |what| names its role in a reason ("the PBM MAC"). Sets |*out| and |*out_ipsec|.
CM_RESULT cmp_prot_get_hmac(const cmp_protect_ctx *ctx, der_reader *r, bool allow_ipsec,
                            cmp_hash *out, bool *out_ipsec, const char *what, cm_why *why);

// cmp_prot_parse_pbm and cmp_prot_parse_pbmac1 fill |k|'s parameters from the parameters of a
// PBM / PBMAC1 protectionAlg, checking algorithms, policy and bounds (cmp_protect_kdf.c).
CM_RESULT cmp_prot_parse_pbm(const cmp_protect_ctx *ctx, cmp_mac_key *k, der_reader *params,
                             cm_why *why);
CM_RESULT cmp_prot_parse_pbmac1(const cmp_protect_ctx *ctx, cmp_mac_key *k, der_reader *params,
                                cm_why *why);

// cmp_prot_derive derives |k|'s key from the password |secret| (PBM or PBMAC1, parameters set);
// |k| is cleansed on failure.
CM_RESULT cmp_prot_derive(const cmp_protect_ctx *ctx, cmp_mac_key *k, cm_span secret);

// cmp_prot_put_pbm_alg writes the PBM or PBMAC1 protectionAlg of |key|'s fields.
void cmp_prot_put_pbm_alg(der_builder *b, const cmp_mac_key *key);

// cmp_prot_put_protection appends "[0] PKIProtection" (a BIT STRING of |bits|, EXPLICIT).
void cmp_prot_put_protection(der_builder *b, cm_span bits);

#endif // CERTMINT_ENGINE_CMP_CMP_PROTECT_INTERNAL_H
