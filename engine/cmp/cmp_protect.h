// engine/cmp message protection (RFC 4210 §5.1.3, RFC 9481): password-based MACs
// (PasswordBasedMac, PBMAC1), key-based MACs (HMAC-SHA2, AES-GMAC, KMAC) and signatures,
// verified and produced over ProtectedPart without re-encoding the message. Every algorithm
// comes from engine/crmf's table (crmf_algs.def) and is checked against the protection policy
// (protection_algs) before any work.
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
//               cmp_mac_compute(ctx, mac, sizeof(mac), &n,  //   cmp_mac_key_put_alg
//                               &key, cmp_msg_writer_protected_part(&w));
//               cmp_msg_writer_finish(&w, &(cm_span){mac, n}, 0, NULL, 0);
//   signature:  cmp_protect_sign_input(arena, &tbs, cmp_msg_writer_protected_part(&w));
//               ... HSM job signs tbs (the builder is left alone meanwhile) ...
//               cmp_msg_writer_finish(&w, &sig, 0, certs, num_certs);
// cmp_protect_put_mac / cmp_protect_put_signed do the same for callers with their own builder.
// The key a request verified with protects its response with exactly the request's
// protectionAlg (RFC 9483 §3.2: PBM's salt, OWF, iteration count and MAC; PBMAC1's PBKDF2
// parameters and MAC; a key-based MAC's algorithm), except AES-GMAC, whose response gets a
// fresh nonce (a GMAC nonce is never used twice, RFC 9044 §5).
//
// Every function here works on spans, not on decoded messages. The "protected content" is the
// contiguous bytes from the first octet of the header element to the last octet of the body
// element, exactly as they appear in the received message (or in the builder of a response).
// The ProtectedPart DER is then a SEQUENCE header followed by those bytes; the MAC or
// signature is fed the two pieces one after the other, so the message is never copied
// (except for EdDSA, whose one-shot API needs contiguous input).
//
// Algorithm objects (EVP_MD, EVP_MAC with per-algorithm templates for HMAC, GMAC and KMAC) are
// fetched once, in cmp_protect_ctx_new, and that context is immutable afterwards: all threads
// share it read-only.
//
// Failure codes and the PKIFailureInfo bit each maps to (cm_code_failinfo; the CMP_PROTECT rows
// of engine/base/codes.def):
//   badAlg          unknown or unsupported protectionAlg, OWF, MAC, PRF or KDF, parameters that
//                   do not fit the algorithm (PSS salt, GMAC nonce, KMAC parameters, PBKDF2
//                   PRF); an algorithm outside protection_algs (CMP_E_PROT_ALG_POLICY, or
//                   CMP_E_PROT_ALG_WEAK for a SHA-1 based signature)
//   badMessageCheck wrong MAC, wrong signature, key/algorithm mismatch, and PBM/PBMAC1
//                   parameters outside the configured bounds (iteration count, salt length,
//                   key length): such a message cannot be checked under our policy, and the
//                   bound is enforced before any key derivation work is done; a shared key of
//                   a length the MAC cannot use
//   wrongIntegrity  a password under a key-based MAC, or a key under PBM/PBMAC1
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
#define CMP_PROTECT_MAX_SALT_LEN   128u // octets, PBM salt and PBKDF2 salt
#define CMP_PROTECT_MAX_KEY_LEN    64u  // octets, a derived MAC key (SHA-512 output), a shared key
#define CMP_PROTECT_MIN_KEY_LEN    16u  // octets, a shared key for a key-based MAC
#define CMP_PROTECT_MAX_MAC_LEN    64u  // octets, a MAC value (HMAC-SHA512, KMAC256)
#define CMP_PROTECT_GMAC_NONCE_LEN 12u  // octets, the AES-GMAC nonce (RFC 9044 §3)
#define CMP_PROTECT_MAX_ALG_LEN    256u // octets, a protectionAlg kept to be echoed

// cmp_protect_limits bounds what a peer may make us compute: a PBM costs iterationCount
// digests, a PBMAC1 iterationCount x ceil(keyLength / PRF output) HMACs (at most twice the
// count, with a SHA-256 PRF and a 64-octet key). |policy| is protection_algs: the rows of the
// algorithm table a MAC-protected message may use (NULL: crmf_alg_policy_default without
// SHA-1); it is copied. The maxima bound what an unauthenticated client buys: the key is
// derived before the MAC is known to be good, and the defaults are about 1 ms of CPU each
// (bench/pbm_cost_bench; certmintd's max_pbm_iterations and max_pbmac1_iterations have the same
// defaults). Thread: value type.
typedef struct cmp_protect_limits {
    uint64_t pbm_min_iterations;    // PasswordBasedMac iterationCount, default 100
    uint64_t pbm_max_iterations;    // default 10000
    uint64_t pbmac1_min_iterations; // PBKDF2 iterationCount, default 1000 (RFC 8018 §4.2)
    uint64_t pbmac1_max_iterations; // default 2500 (conformance suites that use 262144 must
                                    //   raise it, as certmintd's max_pbmac1_iterations does)
    size_t max_salt_len;            // default 64, at most CMP_PROTECT_MAX_SALT_LEN
    size_t pbmac1_min_key_len;      // PBKDF2 keyLength, default 16
    const crmf_alg_policy *policy;  // default NULL
} cmp_protect_limits;

// cmp_protect_limits_default fills |out| with the defaults above. Thread: any.
void cmp_protect_limits_default(cmp_protect_limits *out);

// cmp_protect_ctx holds the fetched digests and MAC implementations (as pre-configured
// templates that each operation duplicates), the limits and the policy.
// Thread: immutable after cmp_protect_ctx_new; shared read-only by all threads.
typedef struct cmp_protect_ctx cmp_protect_ctx;

// cmp_protect_ctx_new fetches every algorithm once from |libctx| (NULL: the default library
// context) with property query |propq| (may be NULL) and copies |limits| (NULL: defaults).
// A MAC the provider lacks (GMAC, KMAC, a SHA-1) is left out and refused as unsupported.
// CM_E_INVALID_ARG for inconsistent limits, CM_E_CRYPTO if a required fetch (HMAC, SHA-2)
// fails, CM_E_NOMEM. The caller owns |*out| and releases it with cmp_protect_ctx_free. Call
// before threads start.
CM_RESULT cmp_protect_ctx_new(cmp_protect_ctx **out, OSSL_LIB_CTX *libctx, const char *propq,
                              const cmp_protect_limits *limits);

// cmp_protect_ctx_free releases |ctx| (NULL is fine), after every thread is done with it.
void cmp_protect_ctx_free(cmp_protect_ctx *ctx);

// cmp_protect_ctx_limits returns the limits |ctx| was made with (borrowed from |ctx|): the
// PBKDF2 bounds also bound the other key derivations a peer chooses the parameters of (an
// encryptedKey proof of possession's password recipient, engine/server). Thread: any.
const cmp_protect_limits *cmp_protect_ctx_limits(const cmp_protect_ctx *ctx);

// ---------------------------------------------------------------------------------------------
// Classifying protectionAlg

typedef enum cmp_prot_kind {
    CMP_PROT_PBM = 1,       // id-PasswordBasedMac
    CMP_PROT_PBMAC1 = 2,    // id-PBMAC1
    CMP_PROT_SIGNATURE = 3, // anything else: a signature algorithm (checked when verifying)
    CMP_PROT_KEY_MAC = 4,   // a key-based MAC of the table: HMAC, AES-GMAC, KMAC
} cmp_prot_kind;

// cmp_prot_kind_is_mac reports whether |k| is one of the MAC kinds (a shared secret
// authenticates the message, named by senderKID). Thread: any.
bool cmp_prot_kind_is_mac(cmp_prot_kind k);

// cmp_protect_kind reads the protectionAlg AlgorithmIdentifier |alg| (the whole element,
// header included) and reports which kind of protection it names. Fails only on malformed
// DER (CMP_E_PROT_PARAMS) or id-DHBasedMac (CMP_E_PROT_ALG_UNSUPPORTED). Thread: any.
CM_RESULT cmp_protect_kind(cmp_prot_kind *out, cm_span alg);

// cmp_protected_part_header writes the SEQUENCE header of ProtectedPart for a protected
// content of |content_len| octets into |buf| (at most 6 octets) and sets |*out_len|.
// CM_E_BUFFER_TOO_SMALL when |cap| < 6. Thread: any; pure.
CM_RESULT cmp_protected_part_header(uint8_t *buf, size_t cap, size_t *out_len, size_t content_len);

// ---------------------------------------------------------------------------------------------
// MAC protection: PasswordBasedMac, PBMAC1 and key-based MACs

// Hash functions used by PBM's OWF, PBKDF2's PRF and the HMACs of PBM and PBMAC1.
typedef enum cmp_hash {
    CMP_HASH_SHA1 = 0,
    CMP_HASH_SHA224 = 1,
    CMP_HASH_SHA256 = 2,
    CMP_HASH_SHA384 = 3,
    CMP_HASH_SHA512 = 4,
    CMP_HASH_COUNT = 5,
} cmp_hash;

// What a shared secret is (the `secret.REF` / `key.REF` entries of a [clients:NAME] section):
// a password, which only the password-based MACs (PBM, PBMAC1) stretch before use, or a key of
// at least CMP_PROTECT_MIN_KEY_LEN octets with the entropy of a random key, which the
// key-based MACs use as it is. A password is never accepted under a key-based MAC (one
// captured message would allow an offline guessing attack at MAC speed), and a key never under
// PBM or PBMAC1 (one secret, one use: the operator said how the secret is used, and a device
// sending PBM with a key is misconfigured).
typedef enum cmp_secret_kind {
    CMP_SECRET_PASSWORD = 0,
    CMP_SECRET_KEY = 1,
} cmp_secret_kind;

// cmp_protect_owf_direct tells whether PasswordBasedMac's iterated one-way function |h| runs
// through the provider's digest functions directly (the fast path) rather than through
// EVP_Digest*; both give the same key. For tests and diagnostics. Thread: any.
bool cmp_protect_owf_direct(const cmp_protect_ctx *ctx, cmp_hash h);

// cmp_mac_key is a MAC key (derived from a password, or a shared key as it is) together with
// the parameters it was made with, so the response of an exchange is protected without
// deriving again and with exactly the request's protectionAlg (RFC 4210 §5.1.3.1, RFC 9483
// §3.2). It holds copies, not spans, so it may outlive the request buffer; wipe it with
// cmp_mac_key_cleanse when the transaction ends. Thread: confined to the request that owns it.
typedef struct cmp_mac_key {
    cmp_prot_kind kind;  // CMP_PROT_PBM, CMP_PROT_PBMAC1 or CMP_PROT_KEY_MAC; 0 while empty
    cmp_hash owf;        // PBM: the OWF; PBMAC1: the PBKDF2 PRF's hash
    cmp_hash mac;        // PBM, PBMAC1: the HMAC's hash
    bool mac_ipsec_oid;  // PBM HMAC-SHA1 named by 1.3.6.1.5.5.8.1.2
    uint64_t iterations; // iterationCount
    size_t salt_len;
    uint8_t salt[CMP_PROTECT_MAX_SALT_LEN];
    size_t key_len;
    uint8_t key[CMP_PROTECT_MAX_KEY_LEN];      // secret: wiped by cmp_mac_key_cleanse
    crmf_alg_id mac_alg;                       // the MAC over ProtectedPart (a KEY_MAC row)
    size_t tag_len;                            // its output length in octets
    uint8_t nonce[CMP_PROTECT_GMAC_NONCE_LEN]; // AES-GMAC: the nonce of the next MAC
    size_t alg_len;                            // the protectionAlg to write, when taken from
    uint8_t alg[CMP_PROTECT_MAX_ALG_LEN];      //   a request (0: encode from the fields)
} cmp_mac_key;

// cmp_mac_key_derive parses the MAC protectionAlg |alg| (whole AlgorithmIdentifier element),
// checks its algorithms against the policy and the bounds, checks that a secret of |kind|
// may be used with it, and only then makes the key from |secret| into |*out| (which is
// cleansed first and on failure): PBM/PBMAC1 derive it, key-based MACs take |secret| (16..64
// octets; AES-GMAC exactly its key length). |*out| keeps |alg| to be echoed (AES-GMAC: the
// nonce is replaced when the response is protected, see cmp_protect_verify_mac).
// Failures: CMP_E_PROT_WRONG_KIND (a signature alg), CMP_E_PROT_ALG_UNSUPPORTED,
// CMP_E_PROT_ALG_POLICY, CMP_E_PROT_PARAMS, CMP_E_PROT_ITERATIONS, CMP_E_PROT_SALT_LEN,
// CMP_E_PROT_KEY_LEN, CMP_E_PROT_SECRET_KIND, CMP_E_PROT_SECRET_LEN, CM_E_CRYPTO.
// Thread: any (|ctx| read-only).
CM_RESULT cmp_mac_key_derive(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span alg,
                             cm_span secret, cmp_secret_kind kind);

// cmp_mac_key_matches reports whether |key| was made with exactly the parameters of the
// protectionAlg |alg| (so it can be reused for the message |alg| protects; an AES-GMAC nonce
// is not a parameter of the key). Malformed or other-kind |alg| is simply "no". The caller
// still must know the secret is the same one.
bool cmp_mac_key_matches(const cmp_protect_ctx *ctx, const cmp_mac_key *key, cm_span alg);

// cmp_mac_key_new_pbm derives a fresh PasswordBasedMac key from |secret| with a random salt
// of |salt_len| octets, OWF |owf|, HMAC |mac| and |iterations| (all within the limits and the
// policy, else the same codes as cmp_mac_key_derive), for a message we start (not a response).
CM_RESULT cmp_mac_key_new_pbm(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                              cmp_hash owf, cmp_hash mac, uint64_t iterations, size_t salt_len);

// cmp_mac_key_new_pbmac1 is the PBMAC1 counterpart: PBKDF2 with PRF HMAC-|prf|, a random salt,
// |iterations|, a key of |key_len| octets, and HMAC-|mac| as messageAuthScheme (SHA-2 only,
// else CMP_E_PROT_ALG_UNSUPPORTED).
CM_RESULT cmp_mac_key_new_pbmac1(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                                 cmp_hash prf, cmp_hash mac, uint64_t iterations, size_t salt_len,
                                 size_t key_len);

// cmp_mac_key_new_keyed makes a key-based MAC key for a message we start: |mac| a KEY_MAC row
// of the table (HMAC-SHA2, AES-GMAC with a fresh nonce and a 16-octet tag, KMAC), |secret| the
// shared key as cmp_mac_key_derive takes it. Same codes.
CM_RESULT cmp_mac_key_new_keyed(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                                crmf_alg_id mac);

// cmp_mac_key_renew_nonce draws a fresh AES-GMAC nonce for the next message |key| protects
// (no-op for other MACs). CM_E_CRYPTO if the random generator fails.
CM_RESULT cmp_mac_key_renew_nonce(cmp_mac_key *key);

// cmp_mac_key_cleanse wipes |key| (OPENSSL_cleanse). Safe on a zeroed key.
void cmp_mac_key_cleanse(cmp_mac_key *key);

// cmp_mac_key_put_alg writes the protectionAlg AlgorithmIdentifier for the next message |key|
// protects into |b|: the kept request protectionAlg byte for byte, AES-GMAC's with the current
// nonce, or one encoded from the fields (PBM, RFC 4210 §5.1.3.1; PBMAC1, RFC 9481 §6.1.3;
// hash and HMAC identifiers without parameters, RFC 5754 §2). Errors are sticky in |b|;
// CMP_E_PROT_KEY_STATE poisons it for an empty key.
void cmp_mac_key_put_alg(der_builder *b, const cmp_mac_key *key);

// cmp_mac_compute computes the MAC of ProtectedPart (SEQUENCE header + |protected_content|)
// with |key| into |out| (|cap| >= CMP_PROTECT_MAX_MAC_LEN is always enough) and sets
// |*out_len|. CMP_E_PROT_KEY_STATE for an empty key, CM_E_CRYPTO.
CM_RESULT cmp_mac_compute(const cmp_protect_ctx *ctx, uint8_t *out, size_t cap, size_t *out_len,
                          const cmp_mac_key *key, cm_span protected_content);

// cmp_mac_verify checks that the PKIProtection BIT STRING content |protection| (the bytes
// after the unused-bits octet) with |unused_bits| equals the MAC of ProtectedPart under |key|,
// in constant time. CMP_E_PROT_BITS if |unused_bits| != 0, CMP_E_PROT_MAC_MISMATCH (a value
// of another length than the algorithm's output included).
CM_RESULT cmp_mac_verify(const cmp_protect_ctx *ctx, const cmp_mac_key *key,
                         cm_span protected_content, cm_span protection, uint8_t unused_bits);

// cmp_protect_verify_mac is the whole check of a MAC-protected request: cmp_mac_key_derive
// (policy, bounds and the secret's kind first), then cmp_mac_verify. On success the key is
// left in |*out_key| ready for the response: the request's protectionAlg is kept to be echoed,
// and for AES-GMAC a fresh nonce is already drawn. It is cleansed on failure. On a refusal
// |why| (may be NULL; base.h) says what: an algorithm outside the policy ("MAC algorithm
// hmac-sha1 is not allowed (protection_algs)"), an iteration count outside the bounds with
// both numbers and the setting's name ("PBM iteration count 200000 is above
// max_pbm_iterations (10000)"), a salt, key or nonce length that does not fit, a secret of the
// wrong kind ("... needs a key (key.REF), and the secret for this senderKID is a password"),
// "the MAC does not verify: wrong shared secret for this senderKID?". Never the secret or the
// key. Thread: any.
CM_RESULT cmp_protect_verify_mac(const cmp_protect_ctx *ctx, cmp_mac_key *out_key, cm_span alg,
                                 cm_span secret, cmp_secret_kind kind, cm_span protected_content,
                                 cm_span protection, uint8_t unused_bits, cm_why *why);

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
// AlgorithmIdentifier, judged by crmf_sig_alg_decode and c->prot_policy), |protection| the BIT
// STRING content and |unused_bits| its count, |signer_cert| the DER of extraCerts[0], whose
// SubjectPublicKeyInfo is found with the DER reader and turned into a key by
// crmf_crypto_key_from_spki (no d2i_X509, no d2i_PUBKEY). The algorithm and the key type are
// matched before any work. RSA and ECDSA signatures are computed over the two pieces of
// ProtectedPart without a copy; EdDSA (one-shot only) gets one contiguous copy.
// Failures: CMP_E_PROT_ALG_WEAK (SHA-1 based and not allowed), CMP_E_PROT_ALG_POLICY (outside
// protection_algs: "signature algorithm ecdsa-with-SHA1 is not allowed (protection_algs)" in
// |why|), CMP_E_PROT_ALG_UNSUPPORTED (unknown algorithm,
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
