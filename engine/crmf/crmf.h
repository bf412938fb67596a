// engine/crmf: certificate requests and proof of possession.
//
//  - CRMF (RFC 4211): CertReqMessages, CertReqMsg, CertRequest, CertTemplate, Controls,
//    ProofOfPossession, regInfo. Parse (zero-copy) and marshal (round-trip exact).
//  - PKCS#10 (RFC 2986): CertificationRequest parse, marshal and self-signature check.
//  - Shared public-key and signature helpers (RFC 9481): signature AlgorithmIdentifier
//    descriptors, SubjectPublicKeyInfo parsing, EVP_PKEY construction without d2i_PUBKEY
//    (EVP_PKEY_fromdata, DESIGN.md "Performance facts"), signature verify and sign. engine/cmp
//    uses these for signature-based message protection.
//  - POPO verification (RFC 4211 §4.1).
//
// Zero copy: every parsed structure holds cm_spans into the caller's input buffer, which must
// outlive it. "whole" spans are the exact DER of an element, header included (what is hashed,
// signed or spliced); "body" spans are an element's content octets only. A span field with
// len 0 means "absent" unless documented otherwise. Arrays (CertReqMsg, controls, regInfo) are
// allocated from a cm_arena passed in; every SEQUENCE OF is capped (CRMF_MAX_*).
//
// Marshal functions write into a der_builder and return nothing: the builder's errors are
// sticky (der_builder_finish reports them). Marshal emits the fields of the struct in schema
// order; for anything our parser accepted, parse -> marshal reproduces the input byte for byte.
// To build a request by hand, fill the struct (spans may point at any memory, such as other
// builders' output or an arena) and marshal it.
//
// Thread: parse/marshal functions are pure and may run on any thread. crmf_crypto is
// confined to the thread that owns it (make one per loop thread).
#ifndef CERTMINT_ENGINE_CRMF_CRMF_H
#define CERTMINT_ENGINE_CRMF_CRMF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/der/der.h"

// Forward declarations so this header does not pull in OpenSSL headers.
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct ossl_lib_ctx_st OSSL_LIB_CTX;

// ---------------------------------------------------------------------------------------------
// Error codes (detail range 0x100-0x1ff): the CRMF rows of engine/base/codes.def, with their
// explanations and PKIFailureInfo bits (cm_code_failinfo). Numbers are stable: append, never
// renumber. Codes of the DER reader (CM_E_DER_*, PROTO class) that a crmf parser passes
// through map to badDataFormat, CM_E_DER_TOO_MANY included (a SEQUENCE OF over its cap, e.g.
// more than CRMF_MAX_REQ_MSGS CertReqMsg). CRMF_E_BAD_SIGNATURE (badMessageCheck) is what the
// signature helpers return; crmf_popo_verify and crmf_csr_verify turn it into their badPOP
// codes.
enum {
#define CM_CODES_CRMF CM_CODE_ENUM
#include "engine/base/codes.def"
};

// ---------------------------------------------------------------------------------------------
// Limits: caps on every SEQUENCE OF (exceeding one is CM_E_DER_TOO_MANY).

#define CRMF_MAX_REQ_MSGS   16u // CertReqMsg per CertReqMessages (RFC 9483 wants exactly 1)
#define CRMF_MAX_CONTROLS   16u // AttributeTypeAndValue per Controls
#define CRMF_MAX_REG_INFO   16u // AttributeTypeAndValue per regInfo
#define CRMF_MAX_EXTENSIONS 64u // Extension per Extensions
#define CRMF_MAX_NAME_RDNS  32u // RelativeDistinguishedName per Name
#define CRMF_MAX_RDN_ATVS   8u  // AttributeTypeAndValue per RelativeDistinguishedName
#define CRMF_MAX_ATTRIBUTES 16u // Attribute per PKCS#10 attributes

// ---------------------------------------------------------------------------------------------
// Generic pieces

// crmf_attr is an AttributeTypeAndValue (a control or regInfo entry, RFC 4211 §6, §7) or a
// PKCS#10 Attribute (RFC 2986 §4.1; |value| is then the whole SET OF values).
typedef struct crmf_attr {
    cm_span whole; // the SEQUENCE
    cm_span oid;   // type, OID content octets
    cm_span value; // value: the whole TLV (ANY DEFINED BY type)
} crmf_attr;

// crmf_extension is one Extension (RFC 5280 §4.1):
//   Extension ::= SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE,
//                            extnValue OCTET STRING }
typedef struct crmf_extension {
    cm_span whole; // the SEQUENCE
    cm_span oid;   // extnID content octets
    bool critical; // false when absent (DER never encodes FALSE)
    cm_span value; // extnValue content (the DER of the extension's own value)
} crmf_extension;

// crmf_ext_iter walks the Extension elements of an Extensions body (the content of the SEQUENCE
// OF, or of CertTemplate [9]). Thread: value type.
typedef struct crmf_ext_iter {
    der_reader r;
} crmf_ext_iter;

// crmf_ext_iter_init starts an iterator over |body| (the content octets of Extensions: zero or
// more Extension TLVs back to back). Never fails.
void crmf_ext_iter_init(crmf_ext_iter *it, cm_span body);

// crmf_ext_iter_next reads the next Extension into |*out| and sets |*out_found|; at the end
// |*out_found| is false and CM_OK is returned. Fails with a PROTO code on a malformed
// Extension (never for extensions a crmf parser already accepted). Thread: value type.
CM_RESULT crmf_ext_iter_next(crmf_ext_iter *it, crmf_extension *out, bool *out_found);

// crmf_extensions_find looks up extension |oid| (content octets) in an Extensions |body|.
// |*out_found| says whether it is present. Fails only on malformed input.
CM_RESULT crmf_extensions_find(cm_span body, cm_span oid, crmf_extension *out, bool *out_found);

// crmf_extensions_check validates an Extensions |body|: every element an Extension, at least
// one (SIZE (1..MAX)), at most CRMF_MAX_EXTENSIONS, no extnID twice (RFC 5280 §4.2).
CM_RESULT crmf_extensions_check(cm_span body);

// crmf_name_check validates |whole| as exactly one X.501 Name (RFC 5280 §4.1.2.4):
//   Name ::= CHOICE { rdnSequence RDNSequence }  RDNSequence ::= SEQUENCE OF RDN
//   RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
//   AttributeTypeAndValue ::= SEQUENCE { type OID, value ANY }
// An empty RDNSequence (the NULL-DN) is valid. CRMF_E_BAD_NAME or a CM_E_DER_* code otherwise.
CM_RESULT crmf_name_check(cm_span whole);

// GeneralName (RFC 5280 §4.2.1.6). |tag| is the context tag number 0..8; |body| the content of
// that tag; for directoryName [4] (EXPLICIT, Name is a CHOICE) |name| is the whole Name inside.
typedef struct crmf_general_name {
    cm_span whole; // the [n] element
    uint32_t tag;  // 0 otherName .. 8 registeredID
    cm_span body;  // content octets of [n]
    cm_span name;  // directoryName only: the Name SEQUENCE (whole); len 0 for other choices
} crmf_general_name;

// GeneralName choice numbers.
enum {
    CRMF_GN_OTHER_NAME = 0,
    CRMF_GN_RFC822_NAME = 1,
    CRMF_GN_DNS_NAME = 2,
    CRMF_GN_X400_ADDRESS = 3,
    CRMF_GN_DIRECTORY_NAME = 4,
    CRMF_GN_EDI_PARTY_NAME = 5,
    CRMF_GN_URI = 6,
    CRMF_GN_IP_ADDRESS = 7,
    CRMF_GN_REGISTERED_ID = 8,
};

// crmf_general_name_parse reads one GeneralName from |r|: the tag must be [0]..[8] with the
// right form (constructed for 0, 3, 4, 5; primitive otherwise), a directoryName must hold one
// valid Name, IA5String choices are checked. CRMF_E_BAD_CHOICE for another tag.
CM_RESULT crmf_general_name_parse(der_reader *r, crmf_general_name *out);

// crmf_general_name_marshal writes |gn| (its tag and body; |name| is not consulted).
void crmf_general_name_marshal(der_builder *b, const crmf_general_name *gn);

// ---------------------------------------------------------------------------------------------
// Public keys (RFC 5280 §4.1.2.7, RFC 3279, RFC 4055, RFC 5480, RFC 8410)

typedef enum crmf_key_type {
    CRMF_KEY_UNKNOWN = 0, // well-formed SPKI of an algorithm we cannot use
    CRMF_KEY_RSA,         // rsaEncryption
    CRMF_KEY_RSA_PSS,     // id-RSASSA-PSS (parameters in the SPKI are kept, not enforced)
    CRMF_KEY_EC,          // id-ecPublicKey with a namedCurve
    CRMF_KEY_ED25519,
    CRMF_KEY_ED448,
    CRMF_KEY_X25519, // key agreement only (RFC 8410 §5): no signature POPO, no signatures
    CRMF_KEY_X448,
    CRMF_KEY_TYPE_COUNT,
} crmf_key_type;

// crmf_spki is a parsed SubjectPublicKeyInfo:
//   SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier,
//                                       subjectPublicKey BIT STRING }
// CertTemplate carries it as [6] IMPLICIT, so the SEQUENCE header is missing there: |whole| is
// then len 0 and crmf_spki_to_der() writes a proper SEQUENCE for callers that need one (e.g.
// to copy into a TBSCertificate or to hash for a SubjectKeyIdentifier).
// The EC curves crmf builds keys for (RFC 9481 §3.3 / RFC 5480).
enum {
    CRMF_EC_P256 = 0,
    CRMF_EC_P384,
    CRMF_EC_P521,
    CRMF_EC_CURVE_COUNT,
};

typedef struct crmf_spki {
    cm_span whole;      // the SEQUENCE, when parsed from one; len 0 from a [6] body
    cm_span body;       // content octets: AlgorithmIdentifier and BIT STRING TLVs
    cm_span alg_oid;    // algorithm OID content octets
    cm_span alg_params; // parameters, whole TLV, len 0 when absent
    cm_span key;        // subjectPublicKey bytes (after the unused-bits octet; may be empty)
    crmf_key_type type;
    const char *ec_group; // EC: OpenSSL group name ("P-256", "P-384", "P-521"), else NULL
    uint32_t ec_curve;    // EC with ec_group set: CRMF_EC_P256..CRMF_EC_P521
} crmf_spki;

// crmf_spki_parse_body parses SPKI content octets |body| (the content of the SEQUENCE, or of
// CertTemplate's [6]). Structure is checked: AlgorithmIdentifier, BIT STRING with no unused
// bits, nothing after. For known types the parameters are checked too (RSA: NULL; EC: a
// namedCurve OID; Ed25519/Ed448/X25519/X448: absent; key lengths 32/57/32/56, EC point uncompressed
// or compressed of the curve's size) -> CRMF_E_BAD_SPKI. An unknown algorithm or curve parses as
// CRMF_KEY_UNKNOWN (ec_group NULL) so a policy can decide. An empty BIT STRING (central key
// generation, RFC 9483 §4.1.6) parses with |key| len 0.
CM_RESULT crmf_spki_parse_body(crmf_spki *out, cm_span body);

// crmf_spki_from_der parses a whole SubjectPublicKeyInfo SEQUENCE (nothing may follow).
CM_RESULT crmf_spki_from_der(crmf_spki *out, cm_span whole);

// crmf_spki_to_der writes SEQUENCE { |body| } into |arena| and sets |*out_whole| to it
// (CM_E_NOMEM when the arena cannot hold it). Use it to turn a template's [6] body into a
// standalone SPKI.
CM_RESULT crmf_spki_to_der(cm_arena *arena, cm_span *out_whole, cm_span body);

// ---------------------------------------------------------------------------------------------
// The algorithm table (RFC 9481): every digest, signature and MAC algorithm identifier certmint
// knows, once, as data (engine/crmf/crmf_algs.def). Message protection (engine/cmp), POPO
// verification, response protection, certificate signing (hsm) and the genm signKeyPairTypes
// answer all look algorithms up here; the policy (protection_algs, pop_algs) is a set of rows.

typedef enum crmf_sig_kind {
    CRMF_SIG_RSA_PKCS1 = 1, // RSASSA-PKCS1-v1_5: sha*WithRSAEncryption, RSA with SHA3
    CRMF_SIG_RSA_PSS,       // RSASSA-PSS: id-RSASSA-PSS (SHA-2, SHA-1), id-RSASSA-PSS-SHAKE*
    CRMF_SIG_ECDSA,         // ecdsa-with-SHA*, id-ecdsa-with-sha3-*, id-ecdsa-with-shake*
    CRMF_SIG_ED25519,
    CRMF_SIG_ED448,
} crmf_sig_kind;

// The hash functions of the table's rows. SHAKE128/256 stand for their RFC 9481 §2.2 output
// lengths (256 and 512 bits). Values below CRMF_HASH_SHAKE128 are stable (older code indexes
// arrays with them).
typedef enum crmf_hash {
    CRMF_HASH_NONE = 0, // EdDSA, GMAC, PBM/PBMAC1: no one digest
    CRMF_HASH_SHA224,
    CRMF_HASH_SHA256,
    CRMF_HASH_SHA384,
    CRMF_HASH_SHA512,
    CRMF_HASH_SHAKE128,
    CRMF_HASH_SHAKE256,
    CRMF_HASH_SHA3_224,
    CRMF_HASH_SHA3_256,
    CRMF_HASH_SHA3_384,
    CRMF_HASH_SHA3_512,
    CRMF_HASH_SHA1, // only behind allow_sha1
    CRMF_HASH_COUNT,
} crmf_hash;

typedef enum crmf_alg_id {
    CRMF_ALG_NONE = 0,
#define CRMF_ALG(id, name, asn1, oid, kind, sig, hash, params, ossl, size, dflt) CRMF_ALG_##id,
#include "engine/crmf/crmf_algs.def"
    CRMF_ALG_COUNT,
} crmf_alg_id;

typedef enum crmf_alg_kind {
    CRMF_ALG_KIND_DIGEST = 1,   // message digest (certHash, PBM's OWF)
    CRMF_ALG_KIND_SIGNATURE,    // protection, POPO, certificates
    CRMF_ALG_KIND_PASSWORD_MAC, // PasswordBasedMac, PBMAC1: a password, stretched
    CRMF_ALG_KIND_KEY_MAC,      // HMAC, AES-GMAC, KMAC: a key with enough entropy, as it is
} crmf_alg_kind;

// How a row's AlgorithmIdentifier parameters must look.
typedef enum crmf_alg_params {
    CRMF_PARAMS_ABSENT = 1, // absent (ECDSA, EdDSA, SHAKE, SHA3, KMAC, RSASSA-PSS-SHAKE)
    CRMF_PARAMS_NULL_OK,    // NULL or absent accepted, written absent (SHA-2, HMAC)
    CRMF_PARAMS_NULL,       // NULL or absent accepted, written NULL (RFC 4055 §5: RSA PKCS#1)
    CRMF_PARAMS_PSS,        // RSASSA-PSS-params (RFC 4055 §3.1)
    CRMF_PARAMS_GMAC,       // GMACParameters (RFC 9044 §3)
    CRMF_PARAMS_PBM,        // PBMParameter (RFC 4210 §5.1.3.1)
    CRMF_PARAMS_PBMAC1,     // PBMAC1-params (RFC 8018 A.5)
} crmf_alg_params;

// crmf_alg is one row (see crmf_algs.def for what each field holds). Thread: immutable.
typedef struct crmf_alg {
    crmf_alg_id id;
    const char *name;      // short name for settings: "ecdsa-sha256"
    const char *asn1_name; // name for messages: "ecdsa-with-SHA256"
    cm_span oid;           // content octets
    crmf_alg_kind kind;
    crmf_sig_kind sig; // signatures only, else 0
    crmf_hash hash;    // CRMF_HASH_NONE when the algorithm has no one digest
    crmf_alg_params params;
    const char *ossl; // the OpenSSL name to fetch (digest, MAC, cipher or key type)
    uint32_t size;    // digest / MAC output, GMAC key length, in octets; 0 otherwise
    bool sha1;        // SHA-1 based: not allowed unless allow_sha1 = on
} crmf_alg;

// crmf_alg_get returns row |id| (NULL for CRMF_ALG_NONE or an id outside the table).
// crmf_alg_by_oid returns the first row with OID |oid| (content octets; for id-RSASSA-PSS the
// hash is in the parameters: see crmf_sig_alg_parse), NULL when the table has none.
// crmf_alg_by_name returns the first row named |name| (case-insensitive), NULL when none.
// Thread: any; pure.
const crmf_alg *crmf_alg_get(crmf_alg_id id);
const crmf_alg *crmf_alg_by_oid(cm_span oid);
const crmf_alg *crmf_alg_by_name(const char *name);

// crmf_alg_digest and crmf_alg_hmac return the digest row and the key-based HMAC row of |h|
// (NULL when the table has none, e.g. HMAC with SHAKE). Thread: any; pure.
const crmf_alg *crmf_alg_digest(crmf_hash h);
const crmf_alg *crmf_alg_hmac(crmf_hash h);

// crmf_alg_sig returns the signature row of kind |sig| with message digest |hash| (NULL when
// none). Thread: any; pure.
const crmf_alg *crmf_alg_sig(crmf_sig_kind sig, crmf_hash hash);

// crmf_alg_params_ok checks parameters |params| (the whole TLV, len 0 when absent) against the
// rules ABSENT, NULL_OK and NULL of |a|; structured rules (PSS, GMAC, PBM, PBMAC1) are their
// parsers' business and return true here. Thread: any; pure.
bool crmf_alg_params_ok(const crmf_alg *a, cm_span params);

// crmf_alg_policy is a set of rows allowed for one use (message protection, POPO).
// Thread: value type.
typedef struct crmf_alg_policy {
    uint64_t allowed; // bit id-1 for row id
} crmf_alg_policy;

// crmf_alg_policy_default fills |out| with every row of the table except the SHA-1 based ones,
// which |allow_sha1| adds. Thread: any.
void crmf_alg_policy_default(crmf_alg_policy *out, bool allow_sha1);

// crmf_alg_policy_allows reports whether row |id| is in |p| (NULL: the default policy without
// SHA-1). Thread: any.
bool crmf_alg_policy_allows(const crmf_alg_policy *p, crmf_alg_id id);

// crmf_alg_policy_parse reads |list| (names from the table, separated by commas or blanks)
// into |*out|. Only rows whose kind is in |kinds| (a mask of 1u << crmf_alg_kind) may be named;
// a name matching several rows (hmac-sha1) adds all of them. SHA-1 based rows need
// |allow_sha1|. On failure returns CRMF_E_ALG_NAME and writes a reason for an operator into
// |err| (|cap| bytes): "'sha257' is not an algorithm name (see the README's algorithm table)",
// "'ecdsa-sha1' is SHA-1 based: set allow_sha1 = on to allow it", "'pbm' is not a signature
// algorithm". An empty list is refused too. Thread: any.
CM_RESULT crmf_alg_policy_parse(crmf_alg_policy *out, char *err, size_t cap, const char *list,
                                uint32_t kinds, bool allow_sha1);

// crmf_alg_sig_list writes to |out| (at most |cap| entries) the signature rows of |p| (NULL:
// the default policy) usable with a key of |key| (crmf_sig_alg_key_ok; CRMF_KEY_UNKNOWN: any
// key), in table order, and returns how many. For the genm signKeyPairTypes answer (RFC 9810
// §5.3.19.2), with crmf_alg_marshal writing each AlgorithmIdentifier. Thread: any.
size_t crmf_alg_sig_list(crmf_alg_id *out, size_t cap, const crmf_alg_policy *p, crmf_key_type key);

// crmf_alg_marshal writes the AlgorithmIdentifier of row |id| with its usual parameters: NULL
// for the NULL rule, RSASSA-PSS-params with MGF1 over the same hash and a salt as long as the
// hash (RFC 4055 §3.1) for PSS rows, nothing else. GMAC, PBM and PBMAC1 rows need parameters
// this cannot choose and poison |b| with CM_E_INVALID_ARG, as does an unknown |id|.
// Errors are sticky in |b|. Thread: any.
void crmf_alg_marshal(der_builder *b, crmf_alg_id id);

// crmf_sig_alg describes a signature AlgorithmIdentifier. Thread: value type.
typedef struct crmf_sig_alg {
    cm_span whole; // the AlgorithmIdentifier SEQUENCE (len 0 when built by hand)
    crmf_sig_kind kind;
    crmf_hash hash;      // message digest (NONE for EdDSA)
    crmf_hash mgf1_hash; // RSA-PSS only: the MGF1 digest
    uint32_t salt_len;   // RSA-PSS only: saltLength
} crmf_sig_alg;

// crmf_sig_alg_parse reads one signature AlgorithmIdentifier from |r|:
//   AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }
//   RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] HashAlgorithm DEFAULT sha1,
//       maskGenAlgorithm [1] MaskGenAlgorithm DEFAULT mgf1SHA1,
//       saltLength [2] INTEGER DEFAULT 20, trailerField [3] TrailerField DEFAULT trailerFieldBC }
// Accepted: every signature row of the table (SHA-1 based ones too: whether they may be used
// is the policy's decision, crmf_alg_policy_allows), with the row's parameters rule:
// RSA PKCS#1 v1.5 NULL or absent (RFC 4055 §5); ECDSA, EdDSA and RSASSA-PSS-SHAKE absent
// (RFC 5758 §3.2, RFC 8410 §3, RFC 8702 §3.2); RSASSA-PSS (RFC 4055 §3.1, RFC 4056) with a
// SHA-2 (or SHA-1) hash whose AlgorithmIdentifier has NULL or absent parameters, MGF1 over the
// same hash, a saltLength of at least the hash's length (at most 1024) and no trailerField.
// RSASSA-PSS-SHAKE128/256 set |mgf1_hash| to the SHAKE itself (it is the MGF, RFC 8702
// §3.2.1) and |salt_len| to 32/64. Unknown OIDs: CRMF_E_ALG_UNSUPPORTED. Wrong parameters:
// CRMF_E_BAD_ALG_PARAMS. On failure |r| is unchanged.
CM_RESULT crmf_sig_alg_parse(der_reader *r, crmf_sig_alg *out);

// crmf_sig_alg_from_der parses a whole AlgorithmIdentifier (nothing may follow).
CM_RESULT crmf_sig_alg_from_der(crmf_sig_alg *out, cm_span whole);

// crmf_sig_alg_decode is crmf_sig_alg_from_der with a reason in |why| (may be NULL) when the
// parameters are refused: "the RSASSA-PSS saltLength 16 is shorter than the SHA-256 hash (32
// octets)", "the RSASSA-PSS MGF1 hash (SHA-1) differs from the message hash (SHA-256)".
CM_RESULT crmf_sig_alg_decode(crmf_sig_alg *out, cm_span whole, cm_why *why);

// crmf_sig_alg_row returns the table row of |alg| (by kind and hash; NULL for an impossible
// combination). Thread: any; pure.
const crmf_alg *crmf_sig_alg_row(const crmf_sig_alg *alg);

// crmf_sig_alg_of writes the descriptor of signature row |id| with its usual parameters (PSS:
// MGF1 over the same hash, salt as long as the hash) into |*out| and returns true; false for a
// row that is not a signature. Thread: any; pure.
bool crmf_sig_alg_of(crmf_sig_alg *out, crmf_alg_id id);

// crmf_sig_alg_marshal writes the AlgorithmIdentifier for |alg| (|whole| is ignored): NULL
// parameters for RSA PKCS#1 v1.5, full explicit RSASSA-PSS-params for PSS with SHA-2 or SHA-1
// (DEFAULT values omitted), none otherwise (RSASSA-PSS-SHAKE included). An impossible
// combination poisons |b| with CM_E_INVALID_ARG.
void crmf_sig_alg_marshal(der_builder *b, const crmf_sig_alg *alg);

// crmf_sig_alg_key_ok reports whether |alg| can be used with a key of |type| (RSA PKCS#1 v1.5
// needs RSA; PSS needs RSA or RSA-PSS; ECDSA needs EC; EdDSA its own curve).
bool crmf_sig_alg_key_ok(const crmf_sig_alg *alg, crmf_key_type type);

// crmf_oid_text writes a readable name of the OID |oid| (content octets) into |buf| (|cap|
// bytes, NUL-terminated) for reasons and logs: OpenSSL's long name ("ecdsa-with-SHA256",
// "sha1WithRSAEncryption"), or the dotted OID when OpenSSL has no name for it. Returns |buf|.
// Not for the hot path (the lookup allocates). Thread: any.
const char *crmf_oid_text(char *buf, size_t cap, cm_span oid);

// crmf_alg_text is crmf_oid_text for the OID of the AlgorithmIdentifier element |alg_whole|
// ("a malformed algorithm" when it does not parse).
const char *crmf_alg_text(char *buf, size_t cap, cm_span alg_whole);

// crmf_key_text writes what kind of key |spki| holds ("RSA", "EC P-256", "Ed25519", or the
// algorithm's name for other keys) into |buf|, for reasons. Returns |buf|. Thread: any.
const char *crmf_key_text(char *buf, size_t cap, const crmf_spki *spki);

// ---------------------------------------------------------------------------------------------
// crmf_crypto: what key construction and signature checks reuse across requests: the library
// context, pre-fetched digests, one EVP_PKEY_CTX per key type initialised for fromdata, one
// parameters-only EVP_PKEY per EC curve (an EC key is a copy of it plus the point: about a
// third of the cost of fromdata with a group name, which rebuilds the group every time), a
// reusable EVP_MD_CTX, and the algorithm policies the checks apply (prot_policy for signed
// messages, engine/cmp; pop_policy for POPO and PKCS#10 self-signatures). Thread: confined to
// its owner (one per loop thread); nothing in it depends on a request.
typedef struct crmf_crypto {
    OSSL_LIB_CTX *libctx;                        // borrowed; NULL is the default context
    const char *propq;                           // borrowed property query, may be NULL
    EVP_MD *md[CRMF_HASH_COUNT];                 // md[CRMF_HASH_NONE] stays NULL
    EVP_PKEY_CTX *fromdata[CRMF_KEY_TYPE_COUNT]; // [UNKNOWN] stays NULL
    EVP_MD_CTX *mdctx;
    EVP_PKEY *ec_params[CRMF_EC_CURVE_COUNT]; // P-256, P-384, P-521 domain parameters
    crmf_alg_policy prot_policy;              // protection_algs (default: no SHA-1)
    crmf_alg_policy pop_policy;               // pop_algs (default: no SHA-1)
} crmf_crypto;

// crmf_crypto_init fetches the digests and prepares the fromdata contexts; both policies start
// as the default (crmf_alg_policy_default without SHA-1). |libctx| and |propq| are borrowed and
// must outlive |c|. Fails with CRMF_E_CRYPTO (|c| is then cleaned up). Call
// crmf_crypto_cleanup in any case; it is safe on a zeroed struct.
CM_RESULT crmf_crypto_init(crmf_crypto *c, OSSL_LIB_CTX *libctx, const char *propq);

// crmf_crypto_set_policies copies |prot| and |pop| (either may be NULL: the default) into |c|.
// Thread: |c|'s owner.
void crmf_crypto_set_policies(crmf_crypto *c, const crmf_alg_policy *prot,
                              const crmf_alg_policy *pop);

// crmf_crypto_cleanup releases everything |c| holds; safe on a zeroed or cleaned struct.
void crmf_crypto_cleanup(crmf_crypto *c);

// crmf_crypto_key_from_spki builds a public EVP_PKEY from a parsed SPKI with EVP_PKEY_fromdata
// (no d2i_PUBKEY): EC as a copy of the curve's parameters plus the encoded point (checked to be
// on the curve), RSA/RSA-PSS from n and e read with
// the DER reader (RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }, both
// positive), Ed25519/Ed448 from the raw key. The caller owns |*out| (EVP_PKEY_free).
// CRMF_E_KEY_UNSUPPORTED for CRMF_KEY_UNKNOWN or an empty key, CRMF_E_BAD_SPKI when the key
// material is rejected (an EC point not on the curve, a malformed RSAPublicKey).
CM_RESULT crmf_crypto_key_from_spki(crmf_crypto *c, EVP_PKEY **out, const crmf_spki *spki);

// crmf_crypto_verify_parts checks |sig| over the concatenation of |parts| (|num_parts| spans,
// at most 4: a message need not be joined to be verified) with |key| under |alg|. Hash-then-
// sign algorithms hash the parts with the row's digest (SHAKE128/256 to 32/64 octets) and
// verify the digest: ECDSA directly, RSA PKCS#1 v1.5 and RSASSA-PSS with SHA-2/SHA-1 through
// OpenSSL (padding, MGF1 digest and salt length of |alg|), RSASSA-PSS-SHAKE by decoding EMSA-PSS
// here with SHAKE as the MGF (RFC 8702 §3.2.1; OpenSSL 3.0 has no SHAKE MGF). EdDSA, which
// signs the message itself, gets one contiguous copy. A key whose type does not fit |alg|
// (crmf_key_type_of, crmf_sig_alg_key_ok) is CRMF_E_KEY_ALG_MISMATCH before any work.
// CRMF_E_BAD_SIGNATURE when the signature does not verify (including a malformed ECDSA
// signature), CM_E_NOMEM, CRMF_E_CRYPTO when OpenSSL fails otherwise. The policy is not
// consulted here. Thread: |c|'s owner.
CM_RESULT crmf_crypto_verify_parts(crmf_crypto *c, const crmf_sig_alg *alg, EVP_PKEY *key,
                                   const cm_span *parts, size_t num_parts, cm_span sig);

// crmf_crypto_verify is crmf_crypto_verify_parts over the single part |data|.
CM_RESULT crmf_crypto_verify(crmf_crypto *c, const crmf_sig_alg *alg, EVP_PKEY *key, cm_span data,
                             cm_span sig);

// crmf_crypto_sign signs |data| with the private |key| under |alg| (every signature row,
// RSASSA-PSS-SHAKE included) and returns the signature in |arena| memory (|*out_sig|). For
// tests, the load generator, and in-process signers; CRMF_E_CRYPTO on failure,
// CRMF_E_KEY_ALG_MISMATCH when |alg| does not fit |key|.
CM_RESULT crmf_crypto_sign(crmf_crypto *c, cm_arena *arena, cm_span *out_sig,
                           const crmf_sig_alg *alg, EVP_PKEY *key, cm_span data);

// crmf_key_type_of reports the crmf_key_type of an EVP_PKEY (CRMF_KEY_UNKNOWN for others).
crmf_key_type crmf_key_type_of(const EVP_PKEY *key);

// ---------------------------------------------------------------------------------------------
// CRMF (RFC 4211, IMPLICIT TAGS)

// CertTemplate (RFC 4211 §5):
//   CertTemplate ::= SEQUENCE {
//       version      [0] Version               OPTIONAL,
//       serialNumber [1] INTEGER               OPTIONAL,
//       signingAlg   [2] AlgorithmIdentifier   OPTIONAL,
//       issuer       [3] Name                  OPTIONAL,
//       validity     [4] OptionalValidity      OPTIONAL,
//       subject      [5] Name                  OPTIONAL,
//       publicKey    [6] SubjectPublicKeyInfo  OPTIONAL,
//       issuerUID    [7] UniqueIdentifier      OPTIONAL,
//       subjectUID   [8] UniqueIdentifier      OPTIONAL,
//       extensions   [9] Extensions            OPTIONAL }
//   OptionalValidity ::= SEQUENCE { notBefore [0] Time OPTIONAL, notAfter [1] Time OPTIONAL }
// Name and Time are CHOICEs, so [3], [5] and the Time tags are EXPLICIT; the others IMPLICIT.
// A span with len 0 is an absent field. serialNumber and signingAlg are kept for the caller's
// policy (RFC 4211 says the CA assigns them); issuerUID/subjectUID are rejected.
typedef struct crmf_template {
    cm_span whole; // the CertTemplate SEQUENCE
    bool has_version;
    int64_t version;     // must be 2 (v3) when present (RFC 4211 §5, RFC 9483 §4.1.1)
    cm_span serial;      // [1] INTEGER content octets
    cm_span signing_alg; // [2] content: AlgorithmIdentifier content (OID + params TLVs)
    cm_span issuer;      // [3] the Name SEQUENCE inside (whole)
    bool has_not_before;
    uint32_t not_before_tag; // DER_TAG_UTC_TIME or DER_TAG_GENERALIZED_TIME; 0 in a hand-built
                             // template means "pick per RFC 5280" when marshalled
    int64_t not_before;      // seconds since the epoch
    bool has_not_after;
    uint32_t not_after_tag;
    int64_t not_after;
    cm_span subject;    // [5] the Name SEQUENCE inside (whole)
    cm_span public_key; // [6] content octets (SPKI body); see crmf_spki_to_der
    crmf_spki spki;     // parsed from public_key when present (ignored by marshal)
    cm_span extensions; // [9] content octets: Extension TLVs; walk with crmf_ext_iter
} crmf_template;

// CertId (RFC 4211 §6.5): CertId ::= SEQUENCE { issuer GeneralName, serialNumber INTEGER }
typedef struct crmf_cert_id {
    cm_span whole;
    crmf_general_name issuer;
    cm_span serial; // INTEGER content octets
} crmf_cert_id;

// crmf_cert_id_parse reads a CertId SEQUENCE from |r|.
CM_RESULT crmf_cert_id_parse(der_reader *r, crmf_cert_id *out);

// crmf_cert_id_marshal writes a CertId.
void crmf_cert_id_marshal(der_builder *b, const crmf_cert_id *id);

// CertRequest (RFC 4211 §5):
//   CertRequest ::= SEQUENCE { certReqId INTEGER, certTemplate CertTemplate,
//                              controls Controls OPTIONAL }
//   Controls ::= SEQUENCE SIZE(1..MAX) OF AttributeTypeAndValue
// Known controls (RFC 4211 §6) are decoded too: regToken (UTF8String), oldCertID (CertId).
// Each control type may appear once. Others are kept as crmf_attr for a policy to judge.
typedef struct crmf_cert_request {
    cm_span whole;       // the CertRequest SEQUENCE: what a signature POPO signs
    int64_t cert_req_id; // any INTEGER that fits int64 (0 for ir/cr/kur; -1 for p10cr)
    crmf_template tmpl;
    size_t num_controls;  // 0 when Controls is absent
    crmf_attr *controls;  // arena array, |num_controls| entries
    bool has_old_cert_id; // id-regCtrl-oldCertID (kur, RFC 9483 §4.1.3)
    crmf_cert_id old_cert_id;
    bool has_reg_token; // id-regCtrl-regToken
    cm_span reg_token;  // UTF8String content
} crmf_cert_request;

// ProofOfPossession (RFC 4211 §4):
//   ProofOfPossession ::= CHOICE {
//       raVerified      [0] NULL,
//       signature       [1] POPOSigningKey,
//       keyEncipherment [2] POPOPrivKey,
//       keyAgreement    [3] POPOPrivKey }
//   POPOSigningKey ::= SEQUENCE { poposkInput [0] POPOSigningKeyInput OPTIONAL,
//       algorithmIdentifier AlgorithmIdentifier, signature BIT STRING }
//   POPOPrivKey ::= CHOICE { thisMessage [0] BIT STRING, subsequentMessage [1] SubsequentMessage,
//       dhMAC [2] BIT STRING, agreeMAC [3] PKMACValue, encryptedKey [4] EnvelopedData }
// POPOPrivKey is a CHOICE, so [2]/[3] are EXPLICIT: they hold one [0]..[4] element.
typedef enum crmf_popo_type {
    CRMF_POPO_ABSENT = 0,
    CRMF_POPO_RA_VERIFIED = 1,      // [0]
    CRMF_POPO_SIGNATURE = 2,        // [1]
    CRMF_POPO_KEY_ENCIPHERMENT = 3, // [2]
    CRMF_POPO_KEY_AGREEMENT = 4,    // [3]
} crmf_popo_type;

typedef struct crmf_popo {
    cm_span whole; // the [n] element; len 0 when absent
    crmf_popo_type type;
    // signature:
    cm_span poposk_input; // [0] content octets (POPOSigningKeyInput body); len 0 when absent
    bool has_poposk_input;
    cm_span alg;       // the AlgorithmIdentifier SEQUENCE (whole); parse with
                       // crmf_sig_alg_from_der (not judged at parse time)
    cm_span signature; // BIT STRING bytes (no unused bits)
    // keyEncipherment / keyAgreement:
    uint32_t priv_key_choice; // POPOPrivKey alternative 0..4
    cm_span priv_key;         // that alternative's whole TLV
} crmf_popo;

// CertReqMsg (RFC 4211 §3):
//   CertReqMsg ::= SEQUENCE { certReq CertRequest, popo ProofOfPossession OPTIONAL,
//                             regInfo SEQUENCE SIZE(1..MAX) OF AttributeTypeAndValue OPTIONAL }
typedef struct crmf_cert_req_msg {
    cm_span whole;
    crmf_cert_request req;
    crmf_popo popo;
    size_t num_reg_info; // 0 when regInfo is absent
    crmf_attr *reg_info; // arena array
} crmf_cert_req_msg;

// CertReqMessages ::= SEQUENCE SIZE (1..MAX) OF CertReqMsg (RFC 4211 §3)
typedef struct crmf_cert_req_msgs {
    cm_span whole;
    size_t num_msgs;         // 1..CRMF_MAX_REQ_MSGS
    crmf_cert_req_msg *msgs; // arena array
} crmf_cert_req_msgs;

// crmf_msgs_parse reads one CertReqMessages SEQUENCE from |r| (engine/cmp: after entering the
// body's EXPLICIT [0]/[2]/[7]). Arrays come from |arena|; spans point into |r|'s bytes.
// Fails with a PROTO code (badDataFormat), CM_E_DER_TOO_MANY over CRMF_MAX_REQ_MSGS,
// CRMF_E_TEMPLATE_UID/CRMF_E_TEMPLATE_VERSION (badCertTemplate), CM_E_NOMEM. The POPO is only
// parsed structurally here; crmf_popo_verify judges it. On failure |r| is unchanged and
// |*out| unspecified.
CM_RESULT crmf_msgs_parse(cm_arena *arena, der_reader *r, crmf_cert_req_msgs *out);

// crmf_msgs_from_der is crmf_msgs_parse over all of |der| (CM_E_DER_TRAILING otherwise).
CM_RESULT crmf_msgs_from_der(cm_arena *arena, crmf_cert_req_msgs *out, cm_span der);

// crmf_msg_parse reads one CertReqMsg SEQUENCE from |r|.
CM_RESULT crmf_msg_parse(cm_arena *arena, der_reader *r, crmf_cert_req_msg *out);

// crmf_cert_request_parse reads one CertRequest SEQUENCE from |r|.
CM_RESULT crmf_cert_request_parse(cm_arena *arena, der_reader *r, crmf_cert_request *out);

// crmf_template_parse reads one CertTemplate SEQUENCE from |r| (also usable for the
// certDetails of an rr, RFC 9810 §5.3.9, and for certReqTemplate).
CM_RESULT crmf_template_parse(der_reader *r, crmf_template *out);

// Marshal: each writes the element from the struct fields (never from |whole|).
// crmf_cert_request_marshal writes controls from |controls| (has_old_cert_id/has_reg_token are
// derived views and not consulted). Invalid structs (an unknown popo type, an empty SIZE(1..MAX)
// array with a non-NULL pointer...) poison |b| with CM_E_INVALID_ARG.
void crmf_msgs_marshal(der_builder *b, const crmf_cert_req_msgs *msgs);
void crmf_msg_marshal(der_builder *b, const crmf_cert_req_msg *msg);
void crmf_cert_request_marshal(der_builder *b, const crmf_cert_request *req);
void crmf_template_marshal(der_builder *b, const crmf_template *tmpl);
void crmf_popo_marshal(der_builder *b, const crmf_popo *popo);
void crmf_attr_marshal(der_builder *b, const crmf_attr *attr);

// The alternatives of POPOPrivKey (crmf_popo.priv_key_choice) and the values of
// SubsequentMessage (RFC 4211 §4.2).
enum {
    CRMF_PRIV_THIS_MESSAGE = 0,  // deprecated (RFC 9810 §5.2.8.3)
    CRMF_PRIV_SUBSEQUENT = 1,    // the CA answers with a challenge or an encrypted certificate
    CRMF_PRIV_DH_MAC = 2,        // deprecated
    CRMF_PRIV_AGREE_MAC = 3,     // a MAC under a key agreed with the CA's key
    CRMF_PRIV_ENCRYPTED_KEY = 4, // the private key in an EnvelopedData to the CA
};
enum {
    CRMF_SUBSEQUENT_ENCR_CERT = 0,      // encrCert: the certificate goes out encrypted
    CRMF_SUBSEQUENT_CHALLENGE_RESP = 1, // challengeResp: popdecc/popdecr
};

// crmf_popo_subsequent reads the SubsequentMessage value of a keyEncipherment/keyAgreement
// POPO whose choice is subsequentMessage [1] into |*out| (0 or 1: the parser accepted no
// other); CM_E_INVALID_ARG for another POPO. Thread: any; pure.
CM_RESULT crmf_popo_subsequent(const crmf_popo *popo, uint64_t *out);

// crmf_popo_encrypted_key sets |*out_body| to the content octets of the EnvelopedData of a
// keyEncipherment/keyAgreement POPO whose choice is encryptedKey [4] (IMPLICIT in the CRMF
// module: the [4] holds the EnvelopedData's fields); CM_E_INVALID_ARG for another POPO.
// Thread: any; pure.
CM_RESULT crmf_popo_encrypted_key(const crmf_popo *popo, cm_span *out_body);

// crmf_popo_verify checks the proof of possession of |msg| (RFC 4211 §4.1, RFC 9483 §4.1.1):
//  - absent: CRMF_E_POPO_MISSING (the caller may accept that for keys that cannot sign);
//  - raVerified: CRMF_E_POPO_RA_VERIFIED, reported not judged: only the server knows whether
//    the sender is an RA authorised to assert it;
//  - keyEncipherment/keyAgreement: CRMF_E_POPO_INDIRECT (not verified here);
//  - signature: poposkInput present while the template has subject and publicKey:
//    CRMF_E_POPO_INPUT_MISUSE; poposkInput otherwise: CRMF_E_POPO_INPUT_UNSUPPORTED; no
//    publicKey in the template: CRMF_E_POPO_NO_KEY; algorithm refused: CRMF_E_ALG_UNSUPPORTED,
//    CRMF_E_BAD_ALG_PARAMS, or outside c->pop_policy: CRMF_E_ALG_SHA1 for a SHA-1 based one,
//    CRMF_E_ALG_POLICY otherwise ("signature algorithm ecdsa-with-SHA1 is not allowed
//    (pop_algs)" in |why|) (all badAlg); algorithm vs key type:
//    CRMF_E_POPO_KEY_MISMATCH; key unusable: CRMF_E_KEY_UNSUPPORTED / CRMF_E_BAD_SPKI;
//    signature over req.whole (the DER of CertRequest) wrong: CRMF_E_POPO_BAD_SIGNATURE.
// CM_OK only for a verified signature POPO. For a refused algorithm, a key that does not fit
// it or a signature that does not verify, |why| (may be NULL; base.h) names the algorithm and
// the key: "the POPO signature algorithm ecdsa-with-SHA256 does not fit the template's RSA
// key". Thread: |c|'s owner.
CM_RESULT crmf_popo_verify(crmf_crypto *c, const crmf_cert_req_msg *msg, cm_why *why);

// ---------------------------------------------------------------------------------------------
// PKCS#10 (RFC 2986 §4)
//   CertificationRequest ::= SEQUENCE { certificationRequestInfo CertificationRequestInfo,
//       signatureAlgorithm AlgorithmIdentifier, signature BIT STRING }
//   CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) }, subject Name,
//       subjectPKInfo SubjectPublicKeyInfo, attributes [0] IMPLICIT SET OF Attribute }
//   Attribute ::= SEQUENCE { type OID, values SET SIZE(1..MAX) OF AttributeValue }
// extensionRequest (PKCS#9 1.2.840.113549.1.9.14) holds one Extensions.
typedef struct crmf_csr {
    cm_span whole;      // the CertificationRequest SEQUENCE
    cm_span info;       // certificationRequestInfo SEQUENCE (whole): what is signed
    cm_span subject;    // the Name SEQUENCE (whole)
    crmf_spki spki;     // spki.whole is the SubjectPublicKeyInfo SEQUENCE
    cm_span attributes; // content octets of [0]: Attribute TLVs (may be empty)
    cm_span extensions; // extensionRequest's Extensions content octets; len 0 when none
    cm_span sig_alg;    // signatureAlgorithm SEQUENCE (whole); judged by crmf_csr_verify
    cm_span signature;  // BIT STRING bytes
} crmf_csr;

// crmf_csr_parse reads one CertificationRequest from |r|. Checks: version 0
// (CRMF_E_CSR_VERSION), a valid Name, a structurally valid SPKI, at most CRMF_MAX_ATTRIBUTES
// attributes, each with a non-empty SET of values; extensionRequest at most once, holding
// exactly one valid Extensions. The algorithm is not judged here. On failure |r| is unchanged.
CM_RESULT crmf_csr_parse(der_reader *r, crmf_csr *out);

// crmf_csr_from_der is crmf_csr_parse over all of |der|.
CM_RESULT crmf_csr_from_der(crmf_csr *out, cm_span der);

// crmf_csr_marshal writes a CertificationRequest from |info| parts: SEQUENCE { SEQUENCE {
// INTEGER 0, subject, SEQUENCE { spki.body }, [0] { attributes } }, sig_alg, BIT STRING
// signature } (|whole|, |info|, |extensions| not consulted).
void crmf_csr_marshal(der_builder *b, const crmf_csr *csr);

// crmf_csr_verify checks the self-signature over |csr->info| with the CSR's own key.
// CRMF_E_CSR_BAD_SIGNATURE (badPOP) when wrong; algorithm refusals as crmf_popo_verify's
// (c->pop_policy applies: the self-signature is p10cr's proof of possession);
// CRMF_E_KEY_ALG_MISMATCH (badAlg) when the algorithm does not fit the key; key errors as
// crmf_crypto_key_from_spki. Reasons in |why| as crmf_popo_verify's. Thread: |c|'s owner.
CM_RESULT crmf_csr_verify(crmf_crypto *c, const crmf_csr *csr, cm_why *why);

// crmf_attr_iter walks Attribute TLVs (PKCS#10 attributes). Thread: value type.
typedef struct crmf_attr_iter {
    der_reader r;
} crmf_attr_iter;

// crmf_attr_iter_init starts at |body| (the content of [0] attributes).
void crmf_attr_iter_init(crmf_attr_iter *it, cm_span body);

// crmf_attr_iter_next reads the next Attribute (|value| = the whole SET of values);
// |*out_found| false at the end.
CM_RESULT crmf_attr_iter_next(crmf_attr_iter *it, crmf_attr *out, bool *out_found);

#endif // CERTMINT_ENGINE_CRMF_CRMF_H
