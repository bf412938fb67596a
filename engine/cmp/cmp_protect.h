// engine/cmp message protection: PasswordBasedMac (RFC 4210 §5.1.3.1, RFC 9481 §6.1.1),
// PBMAC1 (RFC 9481 §6.1.3, RFC 8018 §7.1) and signatures (RFC 4210 §5.1.3.3, RFC 9481 §3),
// verified and produced over ProtectedPart without re-encoding the message.
//
//   PKIMessage ::= SEQUENCE {
//       header           PKIHeader,
//       body             PKIBody,
//       protection   [0] PKIProtection OPTIONAL,
//       extraCerts   [1] SEQUENCE SIZE (1..MAX) OF CMPCertificate OPTIONAL }
//   PKIProtection ::= BIT STRING
//   ProtectedPart ::= SEQUENCE { header PKIHeader, body PKIBody }
//
// Producing a response with the codec's cmp_msg_writer (engine/cmp/cmp.h):
//   MAC:        cmp_msg_writer_begin(&w, b, &hdr, &body);   // hdr.protection_alg from
//               cmp_mac_compute(ctx, mac, sizeof(mac), &n,  //   cmp_mac_key_put_alg, or the
//                               &key, cmp_msg_writer_protected_part(&w)); // request's alg
//               cmp_msg_writer_finish(&w, &(cm_span){mac, n}, 0, NULL, 0);
//   signature:  cmp_protect_sign_input(arena, &tbs, cmp_msg_writer_protected_part(&w));
//               ... HSM job signs tbs (the builder is left alone meanwhile) ...
//               cmp_msg_writer_finish(&w, &sig, 0, certs, num_certs);
// cmp_protect_put_mac / cmp_protect_put_signed do the same for callers with their own builder.
//
// Every function here works on spans, not on decoded messages. The "protected content" is the
// contiguous bytes from the first octet of the header element to the last octet of the body
// element, exactly as they appear in the received message (or in the builder of a response).
// The ProtectedPart DER is then a SEQUENCE header followed by those bytes; the MAC or
// signature is fed the two pieces one after the other, so the message is never copied
// (except for EdDSA, whose one-shot API needs contiguous input).
//
// Algorithm objects (EVP_MD, EVP_MAC with per-digest HMAC templates) are fetched once, in
// cmp_protect_ctx_new, and that context is immutable afterwards: all threads share it read-only.
//
// Failure codes and the PKIFailureInfo bit each maps to (cm_code_failinfo; the CMP_PROTECT rows
// of engine/base/codes.def):
//   badAlg          unknown or unsupported protectionAlg, OWF, MAC, PRF or KDF; SHA-1 based
//                   signature algorithms
//   badMessageCheck wrong MAC, wrong signature, key/algorithm mismatch, and PBM/PBMAC1
//                   parameters outside the configured bounds (iteration count, salt length,
//                   key length): such a message cannot be checked under our policy, and the
//                   bound is enforced before any key derivation work is done
//   badDataFormat   malformed AlgorithmIdentifier parameters, protection or certificate DER
#ifndef CERTMINT_ENGINE_CMP_CMP_PROTECT_H
#define CERTMINT_ENGINE_CMP_CMP_PROTECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "engine/base/base.h"
#include "engine/crmf/crmf.h"
#include "engine/der/der.h"

// ---------------------------------------------------------------------------------------------
// Codes (cmp's protection range 0x2c0-0x2ff): the CMP_PROTECT rows of engine/base/codes.def,
// with their explanations and PKIFailureInfo bits (cm_code_failinfo): badAlg for refused
// algorithms, badMessageCheck for bounds and failed checks, badDataFormat for malformed input.

enum {
#define CM_CODES_CMP_PROTECT CM_CODE_ENUM
#include "engine/base/codes.def"
};

// ---------------------------------------------------------------------------------------------
// Context

// Hard caps that configuration cannot raise.
#define CMP_PROTECT_MAX_SALT_LEN 128u // octets, PBM salt and PBKDF2 salt
#define CMP_PROTECT_MAX_KEY_LEN  64u  // octets, a derived MAC key (SHA-512 output)
#define CMP_PROTECT_MAX_MAC_LEN  64u  // octets, an HMAC value

// cmp_protect_limits bounds what a peer may make us compute: a PBM costs iterationCount
// digests, a PBMAC1 iterationCount x ceil(keyLength / PRF output) HMACs (at most twice the
// count, with a SHA-256 PRF and a 64-octet key). Thread: value type.
typedef struct cmp_protect_limits {
    uint64_t pbm_min_iterations;    // PasswordBasedMac iterationCount, default 100
    uint64_t pbm_max_iterations;    // default 100000
    uint64_t pbmac1_min_iterations; // PBKDF2 iterationCount, default 1000 (RFC 8018 §4.2)
    uint64_t pbmac1_max_iterations; // default 300000 (conformance suites use 262144)
    size_t max_salt_len;            // default 64, at most CMP_PROTECT_MAX_SALT_LEN
    size_t pbmac1_min_key_len;      // PBKDF2 keyLength, default 16
} cmp_protect_limits;

// cmp_protect_limits_default fills |out| with the defaults above. Thread: any.
void cmp_protect_limits_default(cmp_protect_limits *out);

// cmp_protect_ctx holds the fetched digests and HMAC implementation (as
// pre-configured templates that each operation duplicates) and the limits.
// Thread: immutable after cmp_protect_ctx_new; shared read-only by all threads.
typedef struct cmp_protect_ctx cmp_protect_ctx;

// cmp_protect_ctx_new fetches every algorithm once from |libctx| (NULL: the default library
// context) with property query |propq| (may be NULL) and copies |limits| (NULL: defaults).
// CM_E_INVALID_ARG for inconsistent limits, CM_E_CRYPTO if a fetch fails, CM_E_NOMEM.
// The caller owns |*out| and releases it with cmp_protect_ctx_free. Call before threads start.
CM_RESULT cmp_protect_ctx_new(cmp_protect_ctx **out, OSSL_LIB_CTX *libctx, const char *propq,
                              const cmp_protect_limits *limits);

// cmp_protect_ctx_free releases |ctx| (NULL is fine), after every thread is done with it.
void cmp_protect_ctx_free(cmp_protect_ctx *ctx);

// ---------------------------------------------------------------------------------------------
// Classifying protectionAlg

typedef enum cmp_prot_kind {
    CMP_PROT_PBM = 1,       // id-PasswordBasedMac
    CMP_PROT_PBMAC1 = 2,    // id-PBMAC1
    CMP_PROT_SIGNATURE = 3, // anything else: a signature algorithm (checked when verifying)
} cmp_prot_kind;

// cmp_protect_kind reads the protectionAlg AlgorithmIdentifier |alg| (the whole element,
// header included) and reports which kind of protection it names. Fails only on malformed
// DER (CMP_E_PROT_PARAMS) or id-DHBasedMac (CMP_E_PROT_ALG_UNSUPPORTED). Thread: any.
CM_RESULT cmp_protect_kind(cmp_prot_kind *out, cm_span alg);

// cmp_protected_part_header writes the SEQUENCE header of ProtectedPart for a protected
// content of |content_len| octets into |buf| (at most 6 octets) and sets |*out_len|.
// CM_E_BUFFER_TOO_SMALL when |cap| < 6. Thread: any; pure.
CM_RESULT cmp_protected_part_header(uint8_t *buf, size_t cap, size_t *out_len, size_t content_len);

// ---------------------------------------------------------------------------------------------
// MAC protection: PasswordBasedMac and PBMAC1

// Hash functions used by OWFs, HMACs and PRFs.
typedef enum cmp_hash {
    CMP_HASH_SHA1 = 0,
    CMP_HASH_SHA224 = 1,
    CMP_HASH_SHA256 = 2,
    CMP_HASH_SHA384 = 3,
    CMP_HASH_SHA512 = 4,
    CMP_HASH_COUNT = 5,
} cmp_hash;

// cmp_protect_owf_direct tells whether PasswordBasedMac's iterated one-way function |h| runs
// through the provider's digest functions directly (the fast path) rather than through
// EVP_Digest*; both give the same key. For tests and diagnostics. Thread: any.
bool cmp_protect_owf_direct(const cmp_protect_ctx *ctx, cmp_hash h);

// cmp_mac_key is a MAC key derived from a shared secret, together with the parameters it was
// derived with, so the response of an exchange is protected without deriving again (the same
// salt and parameters, RFC 4210 §5.1.3.1). It holds copies, not spans, so it may outlive the
// request buffer; wipe it with cmp_mac_key_cleanse when the transaction ends.
// Thread: confined to the request that owns it.
typedef struct cmp_mac_key {
    cmp_prot_kind kind;  // CMP_PROT_PBM or CMP_PROT_PBMAC1; 0 while empty
    cmp_hash owf;        // PBM: the OWF; PBMAC1: the PBKDF2 PRF's hash
    cmp_hash mac;        // the HMAC's hash
    bool mac_ipsec_oid;  // PBM HMAC-SHA1 named by 1.3.6.1.5.5.8.1.2 (echoed in responses)
    uint64_t iterations; // iterationCount
    size_t salt_len;
    uint8_t salt[CMP_PROTECT_MAX_SALT_LEN];
    size_t key_len;
    uint8_t key[CMP_PROTECT_MAX_KEY_LEN]; // secret: wiped by cmp_mac_key_cleanse
} cmp_mac_key;

// cmp_mac_key_derive parses the PBM or PBMAC1 protectionAlg |alg| (whole AlgorithmIdentifier
// element), checks its algorithms and bounds, and only then derives the key from |secret|
// into |*out| (which is cleansed first and on failure).
// Failures: CMP_E_PROT_WRONG_KIND (a signature alg), CMP_E_PROT_ALG_UNSUPPORTED,
// CMP_E_PROT_PARAMS, CMP_E_PROT_ITERATIONS, CMP_E_PROT_SALT_LEN, CMP_E_PROT_KEY_LEN,
// CM_E_CRYPTO. Thread: any (|ctx| read-only).
CM_RESULT cmp_mac_key_derive(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span alg,
                             cm_span secret);

// cmp_mac_key_matches reports whether |key| was derived with exactly the parameters of the
// protectionAlg |alg| (so it can be reused for the message |alg| protects). Malformed or
// other-kind |alg| is simply "no". The caller still must know the secret is the same one.
bool cmp_mac_key_matches(const cmp_protect_ctx *ctx, const cmp_mac_key *key, cm_span alg);

// cmp_mac_key_new_pbm derives a fresh PasswordBasedMac key from |secret| with a random salt
// of |salt_len| octets, OWF |owf|, HMAC |mac| and |iterations| (all within the limits, else
// the same codes as cmp_mac_key_derive), for a message we start (not a response).
CM_RESULT cmp_mac_key_new_pbm(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                              cmp_hash owf, cmp_hash mac, uint64_t iterations, size_t salt_len);

// cmp_mac_key_new_pbmac1 is the PBMAC1 counterpart: PBKDF2 with PRF HMAC-|prf|, a random salt,
// |iterations|, a key of |key_len| octets, and HMAC-|mac| as messageAuthScheme (SHA-256/384/512
// only, else CMP_E_PROT_ALG_UNSUPPORTED).
CM_RESULT cmp_mac_key_new_pbmac1(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                                 cmp_hash prf, cmp_hash mac, uint64_t iterations, size_t salt_len,
                                 size_t key_len);

// cmp_mac_key_cleanse wipes |key| (OPENSSL_cleanse). Safe on a zeroed key.
void cmp_mac_key_cleanse(cmp_mac_key *key);

// cmp_mac_key_put_alg writes the protectionAlg AlgorithmIdentifier describing |key|'s
// parameters into |b| (for the header of the message |key| will protect). Errors are sticky
// in |b|; CMP_E_PROT_KEY_STATE poisons it for an empty key.
void cmp_mac_key_put_alg(der_builder *b, const cmp_mac_key *key);

// cmp_mac_compute computes the MAC of ProtectedPart (SEQUENCE header + |protected_content|)
// with |key| into |out| (|cap| >= CMP_PROTECT_MAX_MAC_LEN is always enough) and sets
// |*out_len|. CMP_E_PROT_KEY_STATE for an empty key, CM_E_CRYPTO.
CM_RESULT cmp_mac_compute(const cmp_protect_ctx *ctx, uint8_t *out, size_t cap, size_t *out_len,
                          const cmp_mac_key *key, cm_span protected_content);

// cmp_mac_verify checks that the PKIProtection BIT STRING content |protection| (the bytes
// after the unused-bits octet) with |unused_bits| equals the MAC of ProtectedPart under |key|,
// in constant time. CMP_E_PROT_BITS if |unused_bits| != 0, CMP_E_PROT_MAC_MISMATCH.
CM_RESULT cmp_mac_verify(const cmp_protect_ctx *ctx, const cmp_mac_key *key,
                         cm_span protected_content, cm_span protection, uint8_t unused_bits);

// cmp_protect_verify_mac is the whole check of a MAC-protected request: derive the key for
// protectionAlg |alg| from |secret| (bounds first), then cmp_mac_verify. On success the key is
// left in |*out_key| for the response (it is cleansed on failure). On a refusal |why| (may be
// NULL; base.h) says what: an iteration count outside the bounds with both numbers and the
// setting's name ("PBM iteration count 200000 is above max_pbm_iterations (100000)"), a salt
// or key length over its limit, an algorithm that is not supported by name or OID, "the MAC
// does not verify: wrong shared secret for this senderKID?". Never the secret or the key.
// Thread: any.
CM_RESULT cmp_protect_verify_mac(const cmp_protect_ctx *ctx, cmp_mac_key *out_key, cm_span alg,
                                 cm_span secret, cm_span protected_content, cm_span protection,
                                 uint8_t unused_bits, cm_why *why);

// cmp_protect_put_mac computes the MAC over ProtectedPart with |key| and appends the
// PKIMessage field "[0] PKIProtection" (the context tag, then the BIT STRING) to |b|.
// |protected_content| may point into |b|'s own buffer: the MAC is computed before anything is
// appended. Errors are returned and also poison |b|.
CM_RESULT cmp_protect_put_mac(const cmp_protect_ctx *ctx, der_builder *b, const cmp_mac_key *key,
                              cm_span protected_content);

// ---------------------------------------------------------------------------------------------
// Signature protection

// cmp_protect_cert_spki finds the SubjectPublicKeyInfo element (header included) inside the
// DER certificate |cert| with the DER reader (no d2i_X509). CMP_E_PROT_CERT when malformed.
// Thread: any; |*out_spki| points into |cert|.
CM_RESULT cmp_protect_cert_spki(cm_span *out_spki, cm_span cert);

// cmp_protect_verify_sig verifies signature protection: |alg| is protectionAlg (whole
// AlgorithmIdentifier, judged by crmf_sig_alg_from_der), |protection| the BIT STRING content
// and |unused_bits| its count, |signer_cert| the DER of extraCerts[0], whose
// SubjectPublicKeyInfo is found with the DER reader and turned into a key by
// crmf_crypto_key_from_spki (no d2i_X509, no d2i_PUBKEY). The algorithm and the key type are
// matched before any work. RSA and ECDSA signatures are computed over the two pieces of
// ProtectedPart without a copy; EdDSA (one-shot only) gets one contiguous copy.
// Failures: CMP_E_PROT_ALG_WEAK (SHA-1 based), CMP_E_PROT_ALG_UNSUPPORTED (unknown algorithm,
// bad algorithm parameters, unusable key type), CMP_E_PROT_KEY_MISMATCH (key type vs
// algorithm), CMP_E_PROT_SIG_INVALID, CMP_E_PROT_CERT (certificate or its key malformed),
// CMP_E_PROT_BITS, CM_E_NOMEM, CM_E_CRYPTO. Trust in the certificate is the caller's business.
// On a refused algorithm, a key that does not fit it or a signature that does not verify,
// |why| (may be NULL; base.h) names the algorithm by name or OID and the signer's key type:
// "the protection algorithm 1.2.3.4 is not supported".
// Thread: the owner of |c| (crmf_crypto is per thread).
CM_RESULT cmp_protect_verify_sig(crmf_crypto *c, cm_span alg, cm_span protected_content,
                                 cm_span protection, uint8_t unused_bits, cm_span signer_cert,
                                 cm_why *why);

// cmp_signer produces signatures for response protection: an HSM job or an in-process key,
// as the caller decides. |alg| is the signature AlgorithmIdentifier DER (whole element) the
// signer uses, written as protectionAlg into the header. Thread: the callback is called on
// the thread calling cmp_protect_put_signed.
typedef struct cmp_signer {
    cm_span alg;
    // sign signs |tbs| (the whole ProtectedPart DER) into |out| (|cap| bytes), sets |*out_len|
    // and returns CM_OK, or a failure that cmp_protect_put_signed passes on.
    cm_result (*sign)(void *arg, uint8_t *out, size_t cap, size_t *out_len, cm_span tbs);
    void *arg;
} cmp_signer;

// The largest signature cmp_protect_put_signed accepts from a signer (RSA-8192).
#define CMP_PROTECT_MAX_SIG_LEN 1024u

// cmp_protect_sign_input is the first half of asynchronous signing: it writes the bytes to
// sign (ProtectedPart: SEQUENCE header + |protected_content|) into |arena| and sets |*out|.
// CM_E_NOMEM when the arena is full. The copy keeps the input stable while an HSM job runs.
CM_RESULT cmp_protect_sign_input(cm_arena *arena, cm_span *out, cm_span protected_content);

// cmp_protect_put_signature is the second half: it appends "[0] PKIProtection" holding
// |signature| (a BIT STRING with no unused bits) to |b|. Errors are sticky in |b|.
void cmp_protect_put_signature(der_builder *b, cm_span signature);

// cmp_protect_put_signed does both halves synchronously: it builds the bytes to sign in
// |arena|, calls |signer|, and appends the protection to |b|. |protected_content| may point
// into |b|. Returns the signer's failure or the builder's; the builder is poisoned on failure.
CM_RESULT cmp_protect_put_signed(der_builder *b, cm_arena *arena, const cmp_signer *signer,
                                 cm_span protected_content);

#endif // CERTMINT_ENGINE_CMP_CMP_PROTECT_H
