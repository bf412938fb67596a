// engine/cmp CMS structures (RFC 5652) for central key generation (RFC 9483 §4.1.6) and the
// encryption-based proofs of possession (RFC 4211 §4.2, RFC 9810 §5.2.8): an EnvelopedData
// to one recipient, a SignedData by the key generation authority (KGA) over an
// AsymmetricKeyPackage (RFC 5958), and their readers for the other side (a device, the load
// generator, tests) and for an encryptedKey proof of possession.
//
// Why not OpenSSL's CMS API: in OpenSSL 3.0 (checked with 3.0.19) a PasswordRecipientInfo
// always derives its key-encryption key with PBKDF2-HMAC-SHA1 and an 8-octet salt
// (CMS_add0_recipient_password ignores its pbe_nid; SHA-1 is off by default here), its
// KeyAgreeRecipientInfo does not support X25519/X448 (evp_pkey_asym_cipher_init: "operation not
// supported for this keytype"), and its encoder would need every recipient certificate as an
// X509 (d2i_X509 per request). So the structures are encoded with our DER builder and the
// cryptography is OpenSSL's EVP primitives: AES-256-CBC, RSAES-OAEP, ECDH / X25519 / X448
// with the ANSI X9.63 KDF, AES key wrap (RFC 3394), PBKDF2 and the RFC 3211 key wrap. The
// result is checked against OpenSSL's CMS_decrypt in the tests (X25519/X448 against these
// readers, OpenSSL 3.0 having none).
//
// Content encryption is AES-256-CBC (RFC 9481 §5, RFC 3565): CMP carries an EnvelopedData in
// EncryptedKey (RFC 9810 §5.2.2), and AES-GCM is defined for AuthEnvelopedData only (RFC 5084
// §1, RFC 5083), which that CHOICE cannot hold.
//
// Thread: every function is reentrant; crmf_crypto is its owner's (one per thread).
#ifndef CERTMINT_ENGINE_CMP_CMP_CMS_H
#define CERTMINT_ENGINE_CMP_CMP_CMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/crmf/crmf.h"
#include "engine/der/der.h"

// Limits of what the readers accept.
#define CMP_CMS_MAX_CONTENT   65536u // octets of encrypted content (a key package, a certificate)
#define CMP_CMS_MAX_SALT_LEN  64u    // octets of a PBKDF2 salt
#define CMP_CMS_PWRI_SALT_LEN 16u    // the salt cmp_cms_seal draws for a password recipient
#define CMP_CMS_MAX_CERTS     8u     // certificates in a SignedData
#define CMP_CMS_MAX_ATTRS_LEN 512u   // octets of the signed attributes cmp_cms writes

// ---------------------------------------------------------------------------------------------
// EnvelopedData (RFC 5652 §6)

// How the content-encryption key reaches the recipient (RFC 9483 §4.1.6.1-4.1.6.3).
typedef enum cmp_cms_recipient_kind {
    CMP_CMS_KTRI = 1, // KeyTransRecipientInfo: RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055)
    CMP_CMS_KARI,     // KeyAgreeRecipientInfo: ephemeral-static ECDH on P-256/P-384/P-521
                      //   (dhSinglePass-stdDH-sha256/384/512kdf-scheme, RFC 5753) or X25519/X448
                      //   (RFC 8418, the SHA-256/SHA-512 X9.63 KDF), key wrap id-aes256-wrap
    CMP_CMS_PWRI,     // PasswordRecipientInfo: PBKDF2-HMAC-SHA256 with a 16-octet salt gives the
                      //   key-encryption key, id-alg-PWRI-KEK with AES-256-CBC wraps (RFC 3211)
} cmp_cms_recipient_kind;

// cmp_cms_recipient names the one recipient of an EnvelopedData. Thread: value type; spans
// borrowed.
typedef struct cmp_cms_recipient {
    cmp_cms_recipient_kind kind;
    // KTRI, KARI: the recipient's public key and how the RecipientInfo names it: its subject
    // key identifier (KTRI version 2, KARI rKeyId) when |ski| is set, else its certificate's
    // issuer (a Name element) and serial number (INTEGER content octets).
    cm_span spki; // the whole SubjectPublicKeyInfo
    cm_span ski;
    cm_span issuer;
    cm_span serial;
    // PWRI: the shared secret and the PBKDF2 iteration count.
    cm_span password;
    uint64_t iterations;
} cmp_cms_recipient;

// cmp_cms_recipient_kind_for reports which recipient kind a key |spki| (whole
// SubjectPublicKeyInfo) receives with: KTRI for rsaEncryption, KARI for EC P-256/P-384/P-521,
// X25519 and X448; CMP_E_CMS_RECIPIENT_KEY (with a reason in |why|, e.g. "an Ed25519 key can
// neither transport nor agree a key") for any other, RSASSA-PSS-only keys included.
// Thread: any.
CM_RESULT cmp_cms_recipient_kind_for(cmp_cms_recipient_kind *out, cm_span spki, cm_why *why);

// cmp_cms_seal writes an EnvelopedData of |content| (content type |content_type|, OID content
// octets) for |rcpt| under tag |tag|: DER_TAG_SEQUENCE for a plain EnvelopedData,
// DER_CONTEXT_CONS(0) for EncryptedKey's envelopedData [0] and DER_CONTEXT_CONS(4) for
// POPOPrivKey's encryptedKey [4] (the CRMF module's IMPLICIT tags). A fresh 256-bit
// content-encryption key and IV are drawn, encrypted with AES-256-CBC, and the key goes to the
// one RecipientInfo; version 2 (KTRI with a key identifier, KARI) or 3 (PWRI), RFC 5652 §6.1.
// The content-encryption key, the shared secrets and the derived keys are wiped before return.
// |content| may be secret: it is only read. CMP_E_CMS_RECIPIENT_KEY for a key that cannot
// receive, CM_E_INVALID_ARG for a PWRI without a password or iterations, CMP_E_CMS_CRYPTO when
// OpenSSL fails; the builder's errors are sticky (check der_builder_finish). Thread: |c|'s
// owner.
CM_RESULT cmp_cms_seal(crmf_crypto *c, der_builder *b, uint32_t tag, const cmp_cms_recipient *rcpt,
                       cm_span content_type, cm_span content, cm_why *why);

// What cmp_cms_open decrypts with: the recipient's private key (KTRI, KARI), or the shared
// secret (PWRI) and the bounds its PBKDF2 parameters must lie within (a peer chose them: the
// iteration count is checked before any derivation). Thread: value type.
typedef struct cmp_cms_opener {
    EVP_PKEY *key; // borrowed; NULL for PWRI
    cm_span password;
    uint64_t min_iterations;
    uint64_t max_iterations;
    size_t max_salt_len; // at most CMP_CMS_MAX_SALT_LEN; 0 picks it
} cmp_cms_opener;

// cmp_cms_open reads the EnvelopedData whose content octets are |body| (the inside of the
// SEQUENCE or of the IMPLICIT [0]/[4] tag), which must hold exactly one RecipientInfo of a
// kind cmp_cms_seal writes (KTRI with RSAES-OAEP over SHA-256, KARI as above, PWRI with PBKDF2
// over HMAC-SHA-256/384/512 and id-alg-PWRI-KEK over AES-CBC) and AES-128/192/256-CBC content,
// and decrypts it with |o|. On success |*out| is the plaintext in heap memory (|*out_len|
// octets; release it with cmp_cms_secret_free) and |*out_content_type| the content type's OID
// content octets (into |body|). Failures: CMP_E_CMS_MALFORMED, CMP_E_CMS_UNSUPPORTED (another
// algorithm, recipient type or count; a SHA-1 PRF), CMP_E_CMS_KDF_BOUNDS (iterations or salt
// outside |o|'s bounds, before any work), CMP_E_CMS_DECRYPT (wrong key or secret: the key
// unwrap, its check bytes or the content padding fail), CMP_E_CMS_RECIPIENT_KEY (|o| has no key
// of the recipient's kind), CMP_E_CMS_CRYPTO; |why| (may be NULL) says which. Thread: |c|'s
// owner.
CM_RESULT cmp_cms_open(crmf_crypto *c, uint8_t **out, size_t *out_len, cm_span *out_content_type,
                       cm_span body, const cmp_cms_opener *o, cm_why *why);

// cmp_cms_secret_free wipes |len| octets at |p| and frees them (OPENSSL_clear_free); NULL is a
// no-op. Thread: any.
void cmp_cms_secret_free(uint8_t *p, size_t len);

// cmp_encrypted_key_body finds the EnvelopedData in the element |elem|: a CertifiedKeyPair's
// privateKey [0] or CertOrEncCert's encryptedCert [1] (EXPLICIT, RFC 9810 §5.3.4) holding
// EncryptedKey ::= CHOICE { encryptedValue EncryptedValue, envelopedData [0] EnvelopedData }
// (RFC 9810 §5.2.2), and sets |*out_body| to the EnvelopedData's content octets.
// CMP_E_CMS_UNSUPPORTED for the deprecated encryptedValue, CMP_E_CMS_MALFORMED otherwise.
// Thread: any.
CM_RESULT cmp_encrypted_key_body(cm_span *out_body, cm_span elem);

// cmp_cms_content_info_marshal writes ContentInfo ::= SEQUENCE { contentType ContentType,
// content [0] EXPLICIT ANY } (RFC 5652 §3) of type |content_type| (OID content octets, e.g.
// id-envelopedData) around a SEQUENCE whose content octets are |body| (an EnvelopedData's
// body as cmp_encrypted_key_body finds it, a SignedData's): what OpenSSL's
// d2i_CMS_ContentInfo and `openssl cms -inform DER` read. For clients and tests. Errors are
// sticky in |b|.
void cmp_cms_content_info_marshal(der_builder *b, cm_span content_type, cm_span body);

// ---------------------------------------------------------------------------------------------
// AsymmetricKeyPackage (RFC 5958)
//   AsymmetricKeyPackage ::= SEQUENCE SIZE (1..MAX) OF OneAsymmetricKey
//   OneAsymmetricKey ::= SEQUENCE { version Version, privateKeyAlgorithm AlgorithmIdentifier,
//       privateKey OCTET STRING, attributes [0] Attributes OPTIONAL, ...,
//       [[2: publicKey [1] PublicKey OPTIONAL ]], ... }

// cmp_key_package_new writes the AsymmetricKeyPackage of the one private key |key| (its PKCS#8
// PrivateKeyInfo, which is OneAsymmetricKey version v1; an EC key's ECPrivateKey carries its
// public key) into fresh heap memory: |*out| (|*out_len| octets), to be released with
// cmp_cms_secret_free; OpenSSL's own copies are wiped. CMP_E_CMS_CRYPTO when OpenSSL cannot
// encode the key, CM_E_NOMEM. Thread: any.
CM_RESULT cmp_key_package_new(uint8_t **out, size_t *out_len, EVP_PKEY *key);

// cmp_key_package_parse reads an AsymmetricKeyPackage |der| that holds exactly one
// OneAsymmetricKey (version v1 or v2) and sets |*out_key| to its whole element (into |der|).
// CMP_E_CMS_MALFORMED otherwise. Thread: any.
CM_RESULT cmp_key_package_parse(cm_span *out_key, cm_span der);

// cmp_key_package_key reads the one key of the AsymmetricKeyPackage |der| into a private
// EVP_PKEY (|*out|, EVP_PKEY_free it) and checks that its public key is |spki| (a whole
// SubjectPublicKeyInfo; len 0: not checked): CMP_E_CMS_MALFORMED when it cannot be read,
// CMP_E_CMS_DECRYPT when it is another key than |spki|'s. Thread: any.
CM_RESULT cmp_key_package_key(crmf_crypto *c, EVP_PKEY **out, cm_span der, cm_span spki);

// ---------------------------------------------------------------------------------------------
// SignedData (RFC 5652 §5) by the KGA (RFC 9483 §4.1.6): one SignerInfo named by the signer
// certificate's subject key identifier, the signed attributes contentType, signingTime and
// messageDigest, encapsulated content of type id-ct-KP-aKeyPackage (RFC 5958 §3), the KGA's
// certificate and chain in certificates. Signed in two steps, so the signature can come from
// an HSM job: cmp_signed_data_attrs writes the DER the signature covers, then
// cmp_signed_data_marshal writes the SignedData with the signature.

// cmp_signed_data describes a SignedData to write. Thread: value type; spans borrowed.
typedef struct cmp_signed_data {
    cm_span content_type; // eContentType, OID content octets
    cm_span content;      // eContent octets (may be secret: only read)
    crmf_hash digest;     // the message digest: SHA-256/384/512
    cm_span sig_alg;      // the signatureAlgorithm AlgorithmIdentifier element
    cm_span ski;          // the signer certificate's subject key identifier (sid)
    const cm_span *certs; // certificates, the signer's first (whole elements)
    size_t num_certs;     // 1..CMP_CMS_MAX_CERTS
    int64_t signing_time; // seconds since the epoch
} cmp_signed_data;

// cmp_signed_data_attrs writes into |b| the DER of the signed attributes as they are signed:
// SET OF Attribute (RFC 5652 §5.4: the EXPLICIT SET OF tag, not [0]), in DER order: contentType
// (|sd->content_type|), signingTime and messageDigest (|sd->digest| over |sd->content|).
// CMP_E_CMS_UNSUPPORTED for a digest other than SHA-256/384/512, CMP_E_CMS_CRYPTO; the
// builder's errors are sticky. Thread: |c|'s owner.
CM_RESULT cmp_signed_data_attrs(crmf_crypto *c, der_builder *b, const cmp_signed_data *sd);

// cmp_signed_data_marshal writes the SignedData SEQUENCE (version 3, RFC 5652 §5.1) with the
// signed attributes |attrs| (as cmp_signed_data_attrs wrote them; written back under [0]) and
// |signature| (the signature algorithm's encoding: DER ECDSA-Sig-Value, RSA, EdDSA octets).
// Errors are sticky in |b|. Thread: any.
void cmp_signed_data_marshal(der_builder *b, const cmp_signed_data *sd, cm_span attrs,
                             cm_span signature);

// cmp_signed_data_content reads the SignedData SEQUENCE |der| far enough for a client: its
// eContentType (|*out_type|, OID content octets) and eContent octets (|*out_content|), both
// into |der|. The signature is not checked here (the tests check it with OpenSSL's
// CMS_verify). CMP_E_CMS_MALFORMED when it is not one. Thread: any.
CM_RESULT cmp_signed_data_content(cm_span *out_type, cm_span *out_content, cm_span der);

#endif // CERTMINT_ENGINE_CMP_CMP_CMS_H
