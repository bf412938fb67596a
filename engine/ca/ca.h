// engine/ca: what a CA decides and builds, without signing and without I/O on the request
// path. The only I/O is at start-up: ca_authority_load, ca_identity_load (ca_cert.c) and
// ca_trust_new (ca_trust.c) read PEM certificate files.
//
// - Profiles (ca_profile): validity, allowed key types, subject and SAN rules, and the
//   extensions of an `openssl ca` extensions section, encoded ONCE at start-up with OpenSSL's
//   X509V3 config API into DER Extension blobs that are spliced into every certificate.
// - The policy check of a request (ca_policy_check): subject Name, SubjectPublicKeyInfo,
//   requested validity and extensions against a profile, giving a ca_decision or a CA_E_* code.
// - Serial numbers, the TBSCertificate builder and the assembly of a signed certificate: our
//   DER builder only, no X509_* calls per certificate. The signature itself is made elsewhere
//   (the HSM pool) over the TBS bytes.
// - CA material (ca_authority): the CA certificate and chain read from PEM files once at
//   start-up, with the spans a TBSCertificate needs (subject Name, SKI, notAfter, SPKI).
// - Trust stores for signature-protected clients (ca_trust) with a bounded, thread-safe cache
//   of successful chain validations.
// - CRLs: the TBSCertList builder (RFC 5280 §5.1); assembly as for certificates.
// - Self-signed root CA TBSCertificates (ca_root_tbs_build, for `certmint init` and tests) and
//   Names as RFC 4514 text (ca_name_to_text, for listings and log lines).
//
// Choices made here, for reviewers:
// - SKI is RFC 5280 §4.2.1.2 method 1: SHA-1 over the subjectPublicKey BIT STRING contents
//   (without the unused-bits octet). It is what `openssl x509 ... subjectKeyIdentifier=hash`
//   writes, so certificates we issue can be compared with OpenSSL-made ones.
// - AKI carries only keyIdentifier = the CA's SKI (the CA certificate's SKI extension when it
//   has one, else computed by method 1).
// - Requested extensions (RFC 9483 §4.1.1 lets the client ask for them): subjectAltName is
//   checked against the profile's SAN types and copied. keyUsage and extendedKeyUsage are
//   honoured (the certificate gets the requested value in place of the profile's) when
//   every bit or purpose is within the profile's allowed set (key_usage_allowed /
//   eku_allowed; by default what the profile itself writes) and, for keyUsage, fits the key
//   type (RFC 3279, RFC 5480, RFC 8410: no keyEncipherment for EC or EdDSA keys, no
//   keyAgreement for RSA or EdDSA keys); otherwise they are refused (CA_E_KEY_USAGE,
//   CA_E_EKU) or, under replace_requested_exts, replaced by the profile's own.
//   basicConstraints asking for a CA (cA TRUE or a pathLenConstraint) is refused
//   (CA_E_EXT_CA_REQUESTED) unless the profile is a CA profile (its own basicConstraints
//   has cA TRUE); the profile's basicConstraints is what is written. Any other extension the
//   profile also writes is accepted and the profile's value used; every other requested
//   extension is refused (CA_E_EXT_UNACCEPTED).
// - What the certificate gets that was not asked for is recorded in ca_decision.mods
//   (validity capped, extensions replaced): the server then answers grantedWithMods with
//   ca_decision_mods_text as statusString (RFC 9810 §5.2.3).
// - A requested validity longer than the profile's max_days is shortened to it (RFC 9483
//   §4.1.1 lets the CA change the template), never beyond the CA's notAfter; an inverted or
//   already expired requested validity is refused.
//
// How codes map to PKIFailureInfo (the CA rows of engine/base/codes.def, cm_code_failinfo):
//   CA_E_KEY_TYPE, CA_E_KEY_SIZE, CA_E_SUBJECT_*, CA_E_SAN_*, CA_E_VALIDITY -> badCertTemplate
//   CA_E_SPKI_MALFORMED -> badCertTemplate (it arrived inside the template)
//   CA_E_EXT_DUPLICATE, CA_E_EXT_MALFORMED, CA_E_EXT_CA_REQUESTED, CA_E_KEY_USAGE,
//   CA_E_EKU -> badCertTemplate
//   CA_E_EXT_UNACCEPTED -> unacceptedExtension
//   CA_E_CA_EXPIRED -> systemUnavail (the CA cannot issue now: not the client's fault)
//   CA_E_UNTRUSTED, CA_E_CERT_EXPIRED, CA_E_CHAIN_KEY_USAGE -> signerNotTrusted;
//   CA_E_CERT_REVOKED -> certRevoked
//   CA_E_KEY_MISMATCH, CA_E_CONFIG -> systemFailure (ours, not the client's)
#ifndef CERTMINT_ENGINE_CA_CA_H
#define CERTMINT_ENGINE_CA_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "engine/base/base.h"
#include "engine/der/der.h"

// ---------------------------------------------------------------------------------------------
// Codes (ca range 0x700-0x7ff): the CA rows of engine/base/codes.def, with their explanations.
// Numbers are stable: append, never renumber.

enum {
#define CM_CODES_CA CM_CODE_ENUM
#include "engine/base/codes.def"
};

// ---------------------------------------------------------------------------------------------
// Keys

// Key types a profile may allow (bit set).
enum {
    CA_KEY_EC_P256 = 1u << 0,
    CA_KEY_EC_P384 = 1u << 1,
    CA_KEY_EC_P521 = 1u << 2,
    CA_KEY_RSA = 1u << 3,
    CA_KEY_ED25519 = 1u << 4,
    CA_KEY_ED448 = 1u << 5,
    CA_KEY_X25519 = 1u << 6, // key agreement only (RFC 8410 §5): kem_key_types
    CA_KEY_X448 = 1u << 7,
};

// What a requested key will do (ca_request.key_use): sign (the proof of possession was a
// signature, or the key was generated centrally), or, for a key that proved possession
// otherwise (RFC 4211 §4.2, RFC 9810 §5.2.8: encrCert, encryptedKey), transport keys
// (keyEncipherment: RSA, the profile's encryption_key_types) or agree keys (keyAgreement:
// ECDH and X25519/X448, the profile's kem_key_types).
typedef enum ca_key_use {
    CA_KEY_USE_SIGN = 0,
    CA_KEY_USE_ENCIPHER,
    CA_KEY_USE_AGREE,
} ca_key_use;

// ca_key_info is what the policy needs from a SubjectPublicKeyInfo. Thread: value type.
typedef struct ca_key_info {
    uint32_t type;    // exactly one CA_KEY_* bit
    uint32_t bits;    // RSA modulus bits; the curve size otherwise
    cm_span key_bits; // the subjectPublicKey BIT STRING contents (borrowed from the SPKI)
} ca_key_info;

// ca_spki_parse reads |spki| (a whole SubjectPublicKeyInfo element) with the DER reader and
// fills |*out|: EC keys on P-256/P-384/P-521 (namedCurve parameters; uncompressed or
// compressed points of the curve's length), RSA (NULL parameters, RSAPublicKey with a
// positive odd modulus and an odd exponent >= 3), Ed25519 (32 octets), Ed448 (57 octets),
// X25519 (32 octets) and X448 (56 octets), all four without parameters. Any other algorithm is
// CA_E_KEY_TYPE; a malformed encoding CA_E_SPKI_MALFORMED. Allocation-free; |out->key_bits| borrows
// |spki|. Thread: any.
CM_RESULT ca_spki_parse(ca_key_info *out, cm_span spki);

// The TBSCertificate fields a certificate is named and checked by (RFC 5280 §4.1), as spans
// into the certificate. Thread: value type.
typedef struct ca_cert_fields {
    cm_span serial;   // serialNumber: INTEGER content octets (as the store keeps serials)
    cm_span issuer;   // Name element
    cm_span validity; // Validity element, not parsed
    cm_span subject;  // Name element
    cm_span spki;     // SubjectPublicKeyInfo element
} ca_cert_fields;

// ca_cert_fields_parse walks the Certificate element |cert| (nothing may follow it) to its
// TBSCertificate fields; a malformed certificate fails with the DER reader's code.
// Allocation-free. Thread: any.
CM_RESULT ca_cert_fields_parse(ca_cert_fields *out, cm_span cert);

// ca_name_to_text writes the Name element |name| as RFC 4514 text into |out| (|cap| bytes,
// always NUL-terminated): the last RDN first, "CN=dev-1,O=Example", multi-valued RDNs joined
// with '+', the usual short labels (CN, serialNumber, C, L, ST, O, OU, DC, UID, emailAddress)
// and dotted OIDs for other attribute types; string values escaped as RFC 4514 §2.4 says
// (control characters shown as '?'), other values as '#' and the hex of their DER. Returns
// false, with "" in |out|, when |name| is not a well-formed Name, and false with the text cut
// at |cap| when it does not fit. For listings and log lines only: never use the text for a
// decision. Allocation-free. Thread: any.
bool ca_name_to_text(char *out, size_t cap, cm_span name);

// ---------------------------------------------------------------------------------------------
// Profiles

// SAN GeneralName types a profile may accept from a request (bit set).
enum {
    CA_SAN_DNS = 1u << 0,
    CA_SAN_IP = 1u << 1,
    CA_SAN_EMAIL = 1u << 2,
    CA_SAN_URI = 1u << 3,
};

typedef enum ca_subject_mode {
    CA_SUBJECT_COPY = 0,  // any well-formed subject is copied as requested
    CA_SUBJECT_RULES = 1, // required RDN types must appear; only required+allowed may appear
} ca_subject_mode;

// KeyUsage bits (RFC 5280 §4.2.1.3): bit i of the named-bit BIT STRING is 1u << i.
enum {
    CA_KU_DIGITAL_SIGNATURE = 1u << 0,
    CA_KU_NON_REPUDIATION = 1u << 1, // contentCommitment
    CA_KU_KEY_ENCIPHERMENT = 1u << 2,
    CA_KU_DATA_ENCIPHERMENT = 1u << 3,
    CA_KU_KEY_AGREEMENT = 1u << 4,
    CA_KU_KEY_CERT_SIGN = 1u << 5,
    CA_KU_CRL_SIGN = 1u << 6,
    CA_KU_ENCIPHER_ONLY = 1u << 7,
    CA_KU_DECIPHER_ONLY = 1u << 8,
};
#define CA_KU_ALL 0x1ffu

// ca_key_usage_bit returns the CA_KU_* bit named |name| as OpenSSL's configuration spells it
// (digitalSignature, nonRepudiation or contentCommitment, keyEncipherment, dataEncipherment,
// keyAgreement, keyCertSign, cRLSign, encipherOnly, decipherOnly; case-insensitive), 0 for
// any other name. Thread: any.
uint32_t ca_key_usage_bit(const char *name);

// ca_key_usage_text lists the names of the CA_KU_* bits in |bits| into |buf| ("none" when
// empty). Returns |buf|. Thread: any.
const char *ca_key_usage_text(char *buf, size_t cap, uint32_t bits);

// ca_profile_params is what ca_profile_new is given. The strings are borrowed for the call only
// (ca_profile_new copies |name|). RDN types are names OpenSSL knows ("CN", "O",
// "serialNumber", ...) or dotted OIDs. Thread: value type.
typedef struct ca_profile_params {
    const char *name;      // the profile's name, for reasons ("profile devices ..."); may be NULL
    uint32_t default_days; // validity when the request names none (>= 1)
    uint32_t max_days;     // the longest validity granted (>= default_days)
    uint32_t key_types;    // CA_KEY_* bits allowed
    uint32_t rsa_min_bits; // when CA_KEY_RSA is allowed
    uint32_t rsa_max_bits;
    ca_subject_mode subject_mode;
    const char *const *required_rdns;
    size_t num_required_rdns;
    const char *const *allowed_rdns;
    size_t num_allowed_rdns;
    uint32_t san_types;    // CA_SAN_* bits accepted from requests
    bool implicit_confirm; // whether implicitConfirm may be granted
    // What a request may ask for in keyUsage and extendedKeyUsage. Not set: what the profile's
    // own extensions hold (a request may narrow them, not widen them).
    bool has_key_usage_allowed;
    uint32_t key_usage_allowed;     // CA_KU_* bits
    bool has_eku_allowed;           // set with an empty list: no extendedKeyUsage requests
    const char *const *eku_allowed; // OpenSSL names ("clientAuth") or dotted OIDs
    size_t num_eku_allowed;
    // A requested keyUsage / extendedKeyUsage outside what is allowed is replaced by the
    // profile's own (true) instead of refused (false, the default).
    bool replace_requested_exts;
    // A CA profile (issue 16: cross-certificates): the profile writes basicConstraints
    // critical cA TRUE (with pathLenConstraint |path_len| when |has_path_len|), keyUsage critical
    // keyCertSign and cRLSign unless its extensions section has a keyUsage (which must then
    // hold keyCertSign), and nameConstraints critical |name_constraints| (OpenSSL's syntax,
    // "permitted;DNS:.example.com, excluded;IP:10.0.0.0/255.0.0.0"; NULL: none). Its extensions
    // section must not write basicConstraints, nor nameConstraints when |name_constraints| is
    // set. |has_path_len| and |name_constraints| need |is_ca|.
    bool is_ca;
    bool has_path_len;
    uint32_t path_len;
    const char *name_constraints;
    // Keys that prove possession without a signature (issue 19): CA_KEY_* bits certified for
    // key transport (CA_KEY_USE_ENCIPHER: RSA only) and for key agreement (CA_KEY_USE_AGREE:
    // P-256, P-384, P-521, X25519, X448); 0 (the default): none. Their certificates get
    // keyUsage keyEncipherment or keyAgreement in place of the profile's own keyUsage.
    uint32_t enc_key_types;
    uint32_t kem_key_types;
} ca_profile_params;

// The most RDN rules, requested extensions and SAN entries this module handles.
#define CA_MAX_RDN_RULES    32u
#define CA_MAX_PROFILE_EXTS 32u
#define CA_MAX_REQ_EXTS     32u
#define CA_MAX_SAN_NAMES    64u
#define CA_MAX_RDNS         32u
#define CA_MAX_CHAIN        16u
#define CA_MAX_EKU          16u // purposes in eku_allowed or a profile's extendedKeyUsage

// ca_profile is a frozen issuance profile. Thread: immutable after ca_profile_new.
typedef struct ca_profile ca_profile;

// ca_profile_new validates |p| and encodes the extensions of section |ext_section| of |conf|
// (written as for `openssl ca`: "keyUsage = critical, digitalSignature", references to other
// sections with @name) with X509V3_EXT_nconf into DER Extension blobs. |ext_section| may be
// NULL for none. subjectKeyIdentifier and authorityKeyIdentifier are refused there (they are
// always added by the builder), as is subjectAltName (it comes from the request). On failure
// returns CA_E_CONFIG (or CM_E_NOMEM) and writes a one-line reason naming the key into |err|.
// The caller frees |*out| with ca_profile_free. Thread: start-up.
CM_RESULT ca_profile_new(ca_profile **out, char *err, size_t err_cap, const ca_profile_params *p,
                         CONF *conf, const char *ext_section);

// ca_profile_free releases |p|; NULL is a no-op.
void ca_profile_free(ca_profile *p);

// ca_profile_implicit_confirm reports whether the profile grants implicitConfirm.
bool ca_profile_implicit_confirm(const ca_profile *p);

// ca_profile_key_types returns the CA_KEY_* bits the profile allows, and |*out_rsa_min_bits|
// (may be NULL) the smallest RSA modulus it accepts.
uint32_t ca_profile_key_types(const ca_profile *p, uint32_t *out_rsa_min_bits);

// ca_profile_extensions returns the concatenated DER Extension elements the profile writes,
// borrowed from |p|.
cm_span ca_profile_extensions(const ca_profile *p);

// ca_profile_is_ca reports whether the profile issues CA certificates: its own
// basicConstraints has cA TRUE.
bool ca_profile_is_ca(const ca_profile *p);

// ca_profile_path_len reports whether the profile's basicConstraints has a pathLenConstraint
// (the longest chain of CAs below a certificate it issues), and its value in |*out|.
bool ca_profile_path_len(const ca_profile *p, uint32_t *out);

// ca_profile_check_key checks the key type and size of |spki| (a whole SubjectPublicKeyInfo)
// against |p| with the DER reader alone (no key is built), so a server can refuse an
// unwanted key before any signature work: the part of ca_policy_check about the key.
// CA_E_KEY_TYPE, CA_E_KEY_SIZE, CA_E_SPKI_MALFORMED with the reason in |why| (may be NULL).
// Thread: any.
CM_RESULT ca_profile_check_key(const ca_profile *p, ca_key_info *out, cm_span spki, cm_why *why);

// ca_profile_check_key_use is ca_profile_check_key for a key of use |use|: CA_KEY_USE_SIGN is
// ca_profile_check_key itself; CA_KEY_USE_ENCIPHER checks the key against the profile's
// enc_key_types and CA_KEY_USE_AGREE against its kem_key_types (the RSA size bounds apply to
// both uses), naming the setting in the reason ("key type X25519 not allowed without a
// signature proof of possession by profile devices (kem_key_types: none)"). Thread: any.
CM_RESULT ca_profile_check_key_use(const ca_profile *p, ca_key_info *out, cm_span spki,
                                   ca_key_use use, cm_why *why);

// ca_profile_key_use_types returns the CA_KEY_* bits |p| certifies for |use| (key_types for
// CA_KEY_USE_SIGN). Thread: any.
uint32_t ca_profile_key_use_types(const ca_profile *p, ca_key_use use);

// ca_key_type_name returns the configuration's name of the one CA_KEY_* bit |type| ("P-256",
// "X25519"), "?" for anything else. Thread: any.
const char *ca_key_type_name(uint32_t type);

// ---------------------------------------------------------------------------------------------
// CA material

// ca_authority is a CA certificate with its chain, loaded once. Thread: immutable after load.
typedef struct ca_authority ca_authority;

// ca_authority_load reads the CA certificate (PEM, the first certificate of |cert_path|) and
// optionally its chain (|chain_path|, zero or more PEM certificates up to the root; NULL for
// none). Checks that the certificate is a CA (basicConstraints cA) and keeps its DER, subject
// Name, SPKI, SKI and validity. On failure returns CA_E_CONFIG/CM_E_NOMEM and writes the reason
// (with the path) into |err|. Free with ca_authority_free. Thread: start-up.
CM_RESULT ca_authority_load(ca_authority **out, char *err, size_t err_cap, const char *cert_path,
                            const char *chain_path);

// ca_identity_load is ca_authority_load for a certificate that need not be a CA: the CMP
// protection certificate (RFC 9483 §3.1: extended key usage id-kp-cmcCA) and its chain.
CM_RESULT ca_identity_load(ca_authority **out, char *err, size_t err_cap, const char *cert_path,
                           const char *chain_path);

// ca_authority_free releases |ca|; NULL is a no-op.
void ca_authority_free(ca_authority *ca);

// ca_authority_matches_spki succeeds when the CA certificate holds exactly the public key
// |spki| (a whole SubjectPublicKeyInfo, e.g. read from the HSM), else CA_E_KEY_MISMATCH.
CM_RESULT ca_authority_matches_spki(const ca_authority *ca, cm_span spki);

// Accessors; every span is borrowed from |ca| and lives as long as it.
cm_span ca_authority_cert(const ca_authority *ca);    // the certificate DER
cm_span ca_authority_subject(const ca_authority *ca); // its subject Name element
cm_span ca_authority_spki(const ca_authority *ca);    // its SubjectPublicKeyInfo element
cm_span ca_authority_ski(const ca_authority *ca);     // its key identifier (20 octets)
int64_t ca_authority_not_before(const ca_authority *ca);
int64_t ca_authority_not_after(const ca_authority *ca);
size_t ca_authority_num_chain(const ca_authority *ca);
cm_span ca_authority_chain(const ca_authority *ca, size_t i); // i < num_chain

// ---------------------------------------------------------------------------------------------
// Policy check

// ca_ext is one Extension (RFC 5280 §4.1): extnID content octets, critical, and extnValue's
// OCTET STRING content. Thread: value type; spans borrowed.
typedef struct ca_ext {
    cm_span oid;
    bool critical;
    cm_span value;
} ca_ext;

// ca_extensions_parse reads the content octets of an Extensions value (SEQUENCE SIZE (1..MAX)
// OF Extension), i.e. the Extension TLVs one after the other — what a CertTemplate's
// [9] IMPLICIT extensions holds — into |out| (room for |cap|; at most CA_MAX_REQ_EXTS are
// accepted: CM_E_DER_TOO_MANY beyond). CA_E_EXT_MALFORMED for a bad Extension or an empty
// body, CA_E_EXT_DUPLICATE for an OID seen twice, the reader's CM_E_DER_* code when an element
// is not a well-formed SEQUENCE. Spans borrow |body|. Thread: any.
CM_RESULT ca_extensions_parse(ca_ext *out, size_t *out_num, size_t cap, cm_span body);

// ca_request is what a client asked for, as spans into the request. |not_before|/|not_after|
// are 0 when not requested. Thread: value type.
typedef struct ca_request {
    cm_span subject; // Name element (SEQUENCE), may be an empty SEQUENCE
    cm_span spki;    // SubjectPublicKeyInfo element
    int64_t not_before;
    int64_t not_after;
    const ca_ext *exts;
    size_t num_exts;
    ca_key_use key_use; // CA_KEY_USE_SIGN (0) unless the key proved possession otherwise
} ca_request;

// How an issued certificate differs from the request (ca_decision.mods).
enum {
    CA_MOD_VALIDITY_PROFILE = 1u << 0, // notAfter shortened to the profile's max_days
    CA_MOD_VALIDITY_CA = 1u << 1,      // notAfter shortened to the CA certificate's
    CA_MOD_KEY_USAGE = 1u << 2,        // the requested keyUsage replaced by the profile's
    CA_MOD_EKU = 1u << 3,              // the requested extendedKeyUsage replaced likewise
    CA_MOD_EXTENSION = 1u << 4,        // another requested extension set to the profile's value
    CA_MOD_SUBJECT = 1u << 5,          // the subject is not the one requested (set by a caller)
};

// ca_decision is what the policy granted. Thread: value type; spans borrow the request.
typedef struct ca_decision {
    int64_t not_before;
    int64_t not_after;
    ca_key_info key;
    cm_span san;       // the requested subjectAltName extnValue content, empty when none
    bool san_critical; // written critical (always when the subject is empty, RFC 5280 §4.2.1.6)
    // A requested keyUsage / extendedKeyUsage honoured in place of the profile's (extnValue
    // content; empty: the profile's own, if any, is written).
    cm_span key_usage;
    bool key_usage_critical;
    cm_span eku;
    bool eku_critical;
    uint32_t mods;       // CA_MOD_* bits
    cm_span mod_ext_oid; // CA_MOD_EXTENSION: the first extension set to the profile's value
} ca_decision;

// ca_decision_mods_text writes what |d|'s certificate got other than requested, for the
// statusString of a grantedWithMods answer: "notAfter shortened to 2027-05-04 12:00:00 UTC
// (profile devices grants at most 730 days); keyUsage replaced by profile devices' own".
// Returns |buf| ("" when d->mods is 0). Thread: any.
const char *ca_decision_mods_text(char *buf, size_t cap, const ca_profile *p, const ca_decision *d);

// ca_policy_check checks |req| against |profile| for CA |ca| at time |now| and fills |*out|.
// A key of use CA_KEY_USE_ENCIPHER or CA_KEY_USE_AGREE (req->key_use) is checked with
// ca_profile_check_key_use, and its certificate gets keyUsage keyEncipherment or keyAgreement
// (critical) in place of the profile's own: a requested keyUsage must then be within the bits
// that use allows (keyEncipherment and dataEncipherment; keyAgreement, encipherOnly and
// decipherOnly), never a signing bit, since the key's signature was never seen (CA_E_KEY_USAGE).
// Fails with the specific CA_E_* code (see the mapping at the top of this header) or a DER
// code, and then writes what was refused into |why| (may be NULL; base.h's convention), with
// the profile's name and what it allows: "key type P-521 not allowed by profile devices
// (allowed: P-256, P-384, RSA, Ed25519)", the RSA size and bounds, missing or forbidden
// subject attributes by label, "profile devices does not allow subjectAltName type uri
// (allowed: dns, ip)", the validity problem with the dates, a refused extension by name or
// dotted OID. Allocation-free except for naming a refused extension's OID (OpenSSL's object
// table). Thread: any (profile and CA are immutable).
CM_RESULT ca_policy_check(const ca_profile *profile, const ca_authority *ca, ca_decision *out,
                          const ca_request *req, int64_t now, cm_why *why);

// ---------------------------------------------------------------------------------------------
// Serial numbers and certificates

#define CA_SERIAL_LEN      16u
#define CA_SERIAL_TIME_LEN 8u // the time-ordered prefix; the other 8 octets are random

// ca_serial_new fills |out| with a serial that sorts by issuance time: 0x40, the wall clock in
// microseconds since the epoch (7 octets, big-endian), then 8 octets (64 bits) from the
// thread's public DRBG (the one RAND_bytes uses, called through EVP_RAND_generate so that
// nothing is allocated). Positive and minimal as an INTEGER (the first octet is 0x40), never
// zero; two serials of the same microsecond differ in their random half. Appending in time
// order keeps the store's inserts at the right edge of its serial index. CM_E_CRYPTO when the
// DRBG fails. Thread: any.
CM_RESULT ca_serial_new(uint8_t out[CA_SERIAL_LEN]);

// ca_serial_new_at is ca_serial_new at |now_us| (microseconds since the epoch; for tests).
CM_RESULT ca_serial_new_at(uint8_t out[CA_SERIAL_LEN], uint64_t now_us);

// ca_tbs_build appends a TBSCertificate (RFC 5280 §4.1) to |b|: v3, |serial| (unsigned
// magnitude, written as a minimal positive INTEGER), |sig_alg| (a whole AlgorithmIdentifier
// element, given by the signer), the CA's subject as issuer, |d|'s validity, the request's
// subject and SPKI verbatim, and extensions: the profile's (with a keyUsage or
// extendedKeyUsage that |d| honoured in place of the profile's own), then SKI, AKI and the
// SAN. Errors
// are the builder's (CM_E_BUFFER_TOO_SMALL for a full fixed buffer) or CM_E_CRYPTO. The only
// allocation is the builder's own (use an arena or fixed builder on the hot path).
// Thread: any.
CM_RESULT ca_tbs_build(const ca_authority *ca, der_builder *b, const ca_profile *profile,
                       const ca_decision *d, const ca_request *req, cm_span serial,
                       cm_span sig_alg);

// ca_root_tbs_build appends the TBSCertificate of a self-signed root CA to |b|: v3, |serial|
// (unsigned magnitude), |sig_alg| (the signer's AlgorithmIdentifier element), issuer and
// subject |name| (a Name element), the validity, |spki|, and basicConstraints cA (critical),
// keyUsage digitalSignature+keyCertSign+cRLSign (critical) and the subject key identifier.
// CA_E_SPKI_MALFORMED/CA_E_KEY_TYPE for a bad key, CA_E_VALIDITY when not_after <= not_before,
// the builder's error otherwise. For `certmint init` and tests. Thread: any.
CM_RESULT ca_root_tbs_build(der_builder *b, cm_span name, cm_span spki, cm_span serial,
                            int64_t not_before, int64_t not_after, cm_span sig_alg);

// ca_cmp_tbs_build appends the TBSCertificate of a CMP protection certificate issued by |ca|
// (RFC 9483 §3.1, RFC 9810 §4.5): v3, |serial|, |sig_alg|, issuer = the CA's subject,
// subject |name|, the validity, |spki|, keyUsage digitalSignature (critical), extended key
// usage id-kp-cmcCA, SKI and AKI. Errors as ca_root_tbs_build. Thread: any.
CM_RESULT ca_cmp_tbs_build(const ca_authority *ca, der_builder *b, cm_span name, cm_span spki,
                           cm_span serial, int64_t not_before, int64_t not_after, cm_span sig_alg);

// Flags of ca_cmp_tbs_build_ex.
enum {
    CA_CMP_CERT_KGA = 1u << 0, // extended key usage id-kp-cmKGA too (RFC 9480 §2.10): the key
                               //   may sign centrally generated keys (RFC 9483 §4.1.6)
};

// ca_cmp_tbs_build_ex is ca_cmp_tbs_build with |flags| (CA_CMP_CERT_KGA).
CM_RESULT ca_cmp_tbs_build_ex(const ca_authority *ca, der_builder *b, cm_span name, cm_span spki,
                              cm_span serial, int64_t not_before, int64_t not_after,
                              cm_span sig_alg, uint32_t flags);

// ca_cert_find_ext finds extension |oid| (content octets) of the Certificate |cert| (DER) with
// the DER reader: |*out_found| says whether it is there, |*out_value| is its extnValue content
// (into |cert|). A malformed certificate fails with the DER reader's code. Thread: any.
CM_RESULT ca_cert_find_ext(cm_span cert, cm_span oid, cm_span *out_value, bool *out_found);

// ca_cert_has_eku reads the extendedKeyUsage of the Certificate |cert| (DER) with the DER
// reader and sets |*out_has| when it lists purpose |oid| (content octets); false without the
// extension. A malformed certificate fails with the DER reader's code. Thread: any.
CM_RESULT ca_cert_has_eku(cm_span cert, cm_span oid, bool *out_has);

// ca_signed_assemble appends SEQUENCE { tbs, sig_alg, BIT STRING signature } to |b|: a
// Certificate (RFC 5280 §4.1) or a CertificateList (§5.1). Errors are the builder's.
CM_RESULT ca_signed_assemble(der_builder *b, cm_span tbs, cm_span sig_alg, cm_span signature);

// ---------------------------------------------------------------------------------------------
// Trust stores

// ca_trust holds trust anchors for signature-protected clients and a cache of leaf
// certificates whose chain verified. Thread: verify from any thread; the cache is locked.
typedef struct ca_trust ca_trust;

// ca_trust_new loads every certificate of the PEM files |paths| as trust anchors (an anchor
// need not be self-signed: X509_V_FLAG_PARTIAL_CHAIN) with a cache of at most |cache_cap|
// entries (0 disables caching). CA_E_CONFIG with a reason in |err| when a file cannot be read
// or holds no certificate. Free with ca_trust_free. Thread: start-up.
CM_RESULT ca_trust_new(ca_trust **out, char *err, size_t err_cap, const char *const *paths,
                       size_t num_paths, size_t cache_cap);

// ca_trust_free releases |t|; NULL is a no-op.
void ca_trust_free(ca_trust *t);

// ca_trust_verify checks that |leaf| (certificate DER) chains to an anchor at time |at|, with
// |extra| as untrusted intermediates (e.g. a message's extraCerts). A leaf whose verification
// succeeded before and whose chain is still valid at |at| is answered from the cache (keyed by
// SHA-256 of the DER) without OpenSSL's chain building. CA_E_CERT_EXPIRED when a certificate
// of the chain is not valid at |at|, CA_E_CERT_REVOKED, CA_E_UNTRUSTED for every other failure
// (CM_E_DER_* style garbage included). Only successes enter the cache. On failure |why| (may
// be NULL) gets which check failed, from OpenSSL's verify error text, and the subject of the
// certificate it failed on: "certificate is not trusted: unable to get local issuer
// certificate (CN=dev-1)". The reason starts with "certificate" so that a caller may name the
// certificate's role in front of it ("the signer's "). The leaf signs (CMP protection): when it
// has a keyUsage extension it must allow digitalSignature, and every CA of the chain with one
// must allow keyCertSign (CA_E_CHAIN_KEY_USAGE). With CRLs (ca_trust_set_crls) every certificate of
// the chain but the anchor is checked against its issuer's CRL when the set has one
// (CA_E_CERT_REVOKED; an expired or badly signed CRL: CA_E_UNTRUSTED), and a cached success is
// honoured only until the set's earliest nextUpdate and only for the set it was checked
// against. Thread: any.
CM_RESULT ca_trust_verify(ca_trust *t, cm_span leaf, const cm_span *extra, size_t num_extra,
                          int64_t at, cm_why *why);

// ca_trust_set_crls replaces |t|'s CRLs with every CRL of the files |paths| (PEM, one or more
// per file, or one DER); |num_paths| 0 removes them. A CRL issued by one of |t|'s anchors must
// verify with that anchor's key. The new set replaces the old atomically: verifications running
// on other threads finish with the set they started with, later ones use the new set, and
// cached verifications are redone. On failure (CA_E_CONFIG with the file and the reason in
// |err|, CM_E_NOMEM) |t| keeps its current CRLs. Thread: any (the SIGHUP reload).
CM_RESULT ca_trust_set_crls(ca_trust *t, char *err, size_t err_cap, const char *const *paths,
                            size_t num_paths);

// ca_trust_num_crls returns how many CRLs |t| holds now. Thread: any.
size_t ca_trust_num_crls(ca_trust *t);

// ca_trust_check_crls checks |cert| (DER) against the CRL of its issuer in |t|'s set, without
// a chain (for a certificate trusted as itself, such as a configured RA certificate): CM_OK when
// the set has no CRL of that issuer or the CRL does not list it, CA_E_CERT_REVOKED when it
// does, CA_E_UNTRUSTED when that CRL's nextUpdate is before |at| or |cert| cannot be parsed;
// |why| says which. Thread: any.
CM_RESULT ca_trust_check_crls(ca_trust *t, cm_span cert, int64_t at, cm_why *why);

// ca_trust_cache_stats reports cache hits and the current number of entries (tests and
// metrics). Thread: any.
void ca_trust_cache_stats(ca_trust *t, uint64_t *out_hits, size_t *out_entries);

// ---------------------------------------------------------------------------------------------
// CRLs

// CRLReason values (RFC 5280 §5.3.1); CA_REASON_NONE writes no reasonCode entry extension.
enum {
    CA_REASON_NONE = -1,
    CA_REASON_UNSPECIFIED = 0,
    CA_REASON_KEY_COMPROMISE = 1,
    CA_REASON_CA_COMPROMISE = 2,
    CA_REASON_AFFILIATION_CHANGED = 3,
    CA_REASON_SUPERSEDED = 4,
    CA_REASON_CESSATION_OF_OPERATION = 5,
    CA_REASON_CERTIFICATE_HOLD = 6,
    CA_REASON_REMOVE_FROM_CRL = 8,
    CA_REASON_PRIVILEGE_WITHDRAWN = 9,
    CA_REASON_AA_COMPROMISE = 10,
};

// ca_crl_entry is one revoked certificate. Thread: value type.
typedef struct ca_crl_entry {
    cm_span serial;     // unsigned magnitude, as given to ca_tbs_build
    int64_t revoked_at; // revocationDate
    int reason;         // CA_REASON_*
} ca_crl_entry;

// ca_crl_tbs_build appends a TBSCertList (RFC 5280 §5.1) to |b|: v2, |sig_alg|, the CA's
// subject as issuer, |this_update|, |next_update|, the entries (omitted when none, as §5.1.2.6
// requires) with a reasonCode extension unless the reason is NONE or unspecified (§5.3.1
// says SHOULD be absent), and crlExtensions with AKI and cRLNumber |crl_number|.
// removeFromCRL (delta CRLs only) or an unknown reason is CM_E_INVALID_ARG; a next_update not
// after this_update too. Thread: any.
CM_RESULT ca_crl_tbs_build(const ca_authority *ca, der_builder *b, cm_span sig_alg,
                           int64_t this_update, int64_t next_update, uint64_t crl_number,
                           const ca_crl_entry *entries, size_t num_entries);

// ---------------------------------------------------------------------------------------------
// Subject patterns (ca_pattern.c)

#define CA_MAX_PATTERN 256u // characters of a subject pattern

// ca_subject_match reports whether |subject| (RFC 4514 text from ca_name_to_text: the last RDN
// first, "CN=dev-1,O=Example") matches |pattern| as a whole, case-sensitively: '*' matches any
// run of characters (also none) that contains no RDN or attribute separator (an unescaped ','
// or '+'), so it never crosses into another attribute; '?' matches one such character; '\'
// makes the next pattern character literal (so "\*" is a star, "\," an escaped comma as the
// text writes it); every other character matches itself. Thread: any; pure.
bool ca_subject_match(const char *pattern, const char *subject);

// ca_subject_pattern_valid reports whether |pattern| is one ca_subject_match accepts:
// non-empty, at most CA_MAX_PATTERN characters, not ending in a lone '\'.
bool ca_subject_pattern_valid(const char *pattern);

#endif // CERTMINT_ENGINE_CA_CA_H
