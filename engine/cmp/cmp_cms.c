// CMS EnvelopedData, SignedData and AsymmetricKeyPackage (see cmp_cms.h for why they are built
// here rather than with OpenSSL's CMS API). Every secret (content-encryption keys, shared
// secrets, derived keys, plaintext) lives in stack buffers or OPENSSL_malloc'ed memory that is
// wiped before it is released.
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"

#define CMS_CEK_LEN     32u   // AES-256
#define CMS_IV_LEN      16u   // AES block
#define CMS_MAX_Z_LEN   132u  // an ECDH shared secret on P-521 (66 octets), X448 (56)
#define CMS_MAX_KEY_LEN 1024u // an RSA-8192 encrypted key, a wrapped key
#define CMS_MAX_PUB_LEN 160u  // an uncompressed P-521 point (133 octets)

static cm_result cms_crypto_fail(void)
{
    cm_ossl_clear_errors();
    return cm_result_make(CMP_E_CMS_CRYPTO);
}

// OSSL_PARAM takes non-const buffers even for input; the bytes are only read.
static void *cms_unconst(const void *p)
{
    void *q;
    memcpy(&q, &p, sizeof(q));
    return q;
}

void cmp_cms_secret_free(uint8_t *p, size_t len)
{
    if (p != NULL) {
        OPENSSL_clear_free(p, len);
    }
}

// ---------------------------------------------------------------------------------------------
// Symmetric pieces

// cms_cbc runs AES-CBC (|key_len| 16, 24 or 32) over |in| into |out| (room for |in_len| + 16),
// with PKCS#7 padding when |pad|. On decryption a bad padding is CMP_E_CMS_DECRYPT.
static cm_result cms_cbc(bool enc, bool pad, const uint8_t *key, size_t key_len,
                         const uint8_t iv[CMS_IV_LEN], const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t *out_len)
{
    const EVP_CIPHER *ciph = key_len == 16   ? EVP_aes_128_cbc()
                             : key_len == 24 ? EVP_aes_192_cbc()
                             : key_len == 32 ? EVP_aes_256_cbc()
                                             : NULL;
    CM_ENSURE(ciph != NULL && in_len <= CMP_CMS_MAX_CONTENT + CMS_IV_LEN, CMP_E_CMS_UNSUPPORTED);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    bool ok = ctx != NULL && EVP_CipherInit_ex(ctx, ciph, NULL, key, iv, enc ? 1 : 0) == 1 &&
              EVP_CIPHER_CTX_set_padding(ctx, pad ? 1 : 0) == 1 &&
              EVP_CipherUpdate(ctx, out, &n1, in, (int)in_len) == 1;
    const bool final_ok = ok && EVP_CipherFinal_ex(ctx, out + n1, &n2) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        return cms_crypto_fail();
    }
    if (!final_ok) {
        cm_ossl_clear_errors();
        OPENSSL_cleanse(out, (size_t)n1);
        CM_BAIL(enc ? CMP_E_CMS_CRYPTO : CMP_E_CMS_DECRYPT);
    }
    *out_len = (size_t)n1 + (size_t)n2;
    return cm_result_make(CM_OK);
}

// cms_aes_wrap wraps (|enc|) or unwraps a key with AES-256 key wrap (RFC 3394, the default IV:
// id-aes256-wrap, RFC 3565 §2.3.2). An unwrap whose integrity check fails is CMP_E_CMS_DECRYPT.
static cm_result cms_aes_wrap(bool enc, const uint8_t kek[32], const uint8_t *in, size_t in_len,
                              uint8_t *out, size_t cap, size_t *out_len)
{
    CM_ENSURE(in_len >= 16 && in_len % 8 == 0 && in_len + 8 <= cap, CMP_E_CMS_MALFORMED);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    if (ctx == NULL) {
        return cms_crypto_fail();
    }
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    const bool init = EVP_CipherInit_ex(ctx, EVP_aes_256_wrap(), NULL, kek, NULL, enc ? 1 : 0) == 1;
    const bool ok = init && EVP_CipherUpdate(ctx, out, &n1, in, (int)in_len) == 1 &&
                    EVP_CipherFinal_ex(ctx, out + n1, &n2) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        cm_ossl_clear_errors();
        OPENSSL_cleanse(out, cap);
        CM_BAIL(init && !enc ? CMP_E_CMS_DECRYPT : CMP_E_CMS_CRYPTO);
    }
    *out_len = (size_t)n1 + (size_t)n2;
    return cm_result_make(CM_OK);
}

// cms_pwri_wrap is RFC 3211 §2.3.1: a length octet, three check octets (the complement of the
// key's first three), the key and random padding to a whole number of blocks (at least two),
// encrypted twice with AES-CBC under |kek|, the second pass chained on from the first.
static cm_result cms_pwri_wrap(const uint8_t *kek, size_t kek_len, const uint8_t iv[CMS_IV_LEN],
                               const uint8_t *cek, size_t cek_len, uint8_t *out, size_t cap,
                               size_t *out_len)
{
    size_t n = (cek_len + 4 + CMS_IV_LEN - 1) / CMS_IV_LEN * CMS_IV_LEN;
    n = n < 2 * CMS_IV_LEN ? 2 * CMS_IV_LEN : n;
    CM_ENSURE(cek_len >= 3 && cek_len <= 0xff && n <= cap && n <= 2 * CMS_MAX_KEY_LEN,
              CM_E_INVALID_ARG);
    uint8_t buf[2 * CMS_MAX_KEY_LEN];
    buf[0] = (uint8_t)cek_len;
    buf[1] = (uint8_t)~cek[0];
    buf[2] = (uint8_t)~cek[1];
    buf[3] = (uint8_t)~cek[2];
    memcpy(buf + 4, cek, cek_len);
    cm_result r = cm_result_make(CM_OK);
    if (n > cek_len + 4 && RAND_bytes(buf + 4 + cek_len, (int)(n - 4 - cek_len)) != 1) {
        r = cms_crypto_fail();
    }
    // Both passes in one CBC chain: the first pass's last block is the second pass's IV.
    size_t got = 0;
    if (cm_ok(r)) {
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        const EVP_CIPHER *ciph = kek_len == 16   ? EVP_aes_128_cbc()
                                 : kek_len == 24 ? EVP_aes_192_cbc()
                                                 : EVP_aes_256_cbc();
        int l1 = 0, l2 = 0;
        const bool ok = ctx != NULL && EVP_EncryptInit_ex(ctx, ciph, NULL, kek, iv) == 1 &&
                        EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
                        EVP_EncryptUpdate(ctx, out, &l1, buf, (int)n) == 1 &&
                        EVP_EncryptUpdate(ctx, out, &l2, out, l1) == 1;
        EVP_CIPHER_CTX_free(ctx);
        r = ok && (size_t)l1 == n && (size_t)l2 == n ? cm_result_make(CM_OK) : cms_crypto_fail();
        got = n;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    CM_TRY(r);
    *out_len = got;
    return cm_result_make(CM_OK);
}

// cms_pwri_unwrap is RFC 3211 §2.3.2: the second pass is undone with the first pass's last
// block as IV, which is the decryption of the last block chained on the one before it; then
// the first pass with |iv|; then the length and the check octets are verified.
static cm_result cms_pwri_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t iv[CMS_IV_LEN],
                                 cm_span in, uint8_t *out, size_t cap, size_t *out_len)
{
    const size_t n = in.len;
    CM_ENSURE(n >= 2 * CMS_IV_LEN && n % CMS_IV_LEN == 0 && n <= 2 * CMS_MAX_KEY_LEN,
              CMP_E_CMS_MALFORMED);
    uint8_t last[CMS_IV_LEN], mid[2 * CMS_MAX_KEY_LEN], plain[2 * CMS_MAX_KEY_LEN + CMS_IV_LEN];
    size_t l = 0;
    cm_result r = cms_cbc(false, false, kek, kek_len, in.p + n - 2 * CMS_IV_LEN,
                          in.p + n - CMS_IV_LEN, CMS_IV_LEN, last, &l);
    if (cm_ok(r)) {
        r = cms_cbc(false, false, kek, kek_len, last, in.p, n, mid, &l);
    }
    if (cm_ok(r)) {
        r = cms_cbc(false, false, kek, kek_len, iv, mid, n, plain, &l);
    }
    if (cm_ok(r)) {
        const size_t klen = plain[0];
        const bool check = (uint8_t)(plain[1] ^ plain[4]) == 0xff &&
                           (uint8_t)(plain[2] ^ plain[5]) == 0xff &&
                           (uint8_t)(plain[3] ^ plain[6]) == 0xff;
        if (!check || klen < 3 || klen + 4 > n || klen > cap) {
            r = cm_result_make(CMP_E_CMS_DECRYPT);
        } else {
            memcpy(out, plain + 4, klen);
            *out_len = klen;
        }
    }
    OPENSSL_cleanse(last, sizeof(last));
    OPENSSL_cleanse(mid, sizeof(mid));
    OPENSSL_cleanse(plain, sizeof(plain));
    return r;
}

// ---------------------------------------------------------------------------------------------
// Key agreement: ECDH / X25519 / X448, the X9.63 KDF and ECC-CMS-SharedInfo

// The KDF scheme for each curve (RFC 5753 §7.1.4 with RFC 9481 §4.1: the hash of the curve's
// size; RFC 8418 §2.2: SHA-256 for X25519, SHA-512 for X448).
static cm_span cms_kari_scheme(const crmf_spki *k, const char **out_md)
{
    if (k->type == CRMF_KEY_X448 || (k->type == CRMF_KEY_EC && k->ec_curve == CRMF_EC_P521)) {
        *out_md = "SHA512";
        return CM_SPAN_LIT(DER_OID_ECDH_SHA512_KDF);
    }
    if (k->type == CRMF_KEY_EC && k->ec_curve == CRMF_EC_P384) {
        *out_md = "SHA384";
        return CM_SPAN_LIT(DER_OID_ECDH_SHA384_KDF);
    }
    *out_md = "SHA256";
    return CM_SPAN_LIT(DER_OID_ECDH_SHA256_KDF);
}

// cms_kek_derive is ANSI X9.63 KDF(Z, SharedInfo) (RFC 5753 §7.2) into a 256-bit KEK, with
//   ECC-CMS-SharedInfo ::= SEQUENCE { keyInfo AlgorithmIdentifier,
//       entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL,
//       suppPubInfo [2] EXPLICIT OCTET STRING }  -- the KEK's length in bits, 32-bit big-endian
// keyInfo is id-aes256-wrap (parameters absent), entityUInfo the ukm when there is one.
static cm_result cms_kek_derive(crmf_crypto *c, uint8_t kek[32], const char *md, cm_span z,
                                cm_span ukm)
{
    uint8_t info_buf[128];
    der_builder b;
    der_builder_init_fixed(&b, info_buf, sizeof(info_buf));
    der_mark seq, m, alg;
    der_open(&b, &seq, DER_TAG_SEQUENCE);
    der_open(&b, &alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_AES256_WRAP);
    der_close(&b, &alg);
    if (ukm.len > 0) {
        der_open(&b, &m, DER_CONTEXT_CONS(0));
        der_put_octets(&b, ukm);
        der_close(&b, &m);
    }
    static const uint8_t k_bits[] = {0x00, 0x00, 0x01, 0x00}; // 256
    der_open(&b, &m, DER_CONTEXT_CONS(2));
    der_put_octets(&b, cm_span_make(k_bits, sizeof(k_bits)));
    der_close(&b, &m);
    der_close(&b, &seq);
    cm_span info;
    CM_ENSURE(cm_ok(der_builder_finish(&b, &info)), CMP_E_CMS_MALFORMED); // ukm too long
    EVP_KDF *kdf = EVP_KDF_fetch(c->libctx, "X963KDF", c->propq);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    OSSL_PARAM params[4];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, cms_unconst(md), 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, cms_unconst(z.p), z.len);
    params[2] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, cms_unconst(info.p), info.len);
    params[3] = OSSL_PARAM_construct_end();
    const bool ok = kctx != NULL && EVP_KDF_derive(kctx, kek, 32, params) == 1;
    EVP_KDF_CTX_free(kctx);
    return ok ? cm_result_make(CM_OK) : cms_crypto_fail();
}

// cms_derive computes the shared secret of |mine| (private) and |peer| into |z|.
static cm_result cms_derive(crmf_crypto *c, uint8_t z[CMS_MAX_Z_LEN], size_t *z_len, EVP_PKEY *mine,
                            EVP_PKEY *peer)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, mine, c->propq);
    size_t n = CMS_MAX_Z_LEN;
    const bool ok = ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 &&
                    EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, z, &n) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(z, CMS_MAX_Z_LEN);
        return cms_crypto_fail();
    }
    *z_len = n;
    return cm_result_make(CM_OK);
}

// cms_public_octets writes |key|'s public key as it goes into a BIT STRING: the uncompressed
// point of an EC key (SEC 1 §2.3.3), the raw key of X25519/X448 (RFC 8410 §4).
static cm_result cms_public_octets(EVP_PKEY *key, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t n = 0;
    if (EVP_PKEY_is_a(key, "EC")) {
        n = EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out, cap,
                                            &n) == 1
                ? n
                : 0;
    } else {
        n = cap;
        if (EVP_PKEY_get_raw_public_key(key, out, &n) != 1) {
            n = 0;
        }
    }
    if (n == 0) {
        return cms_crypto_fail();
    }
    *out_len = n;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Recipients: writing

cm_result cmp_cms_recipient_kind_for(cmp_cms_recipient_kind *out, cm_span spki, cm_why *why)
{
    crmf_spki k;
    CM_ENSURE(cm_ok(crmf_spki_from_der(&k, spki)), CMP_E_CMS_RECIPIENT_KEY);
    char text[64];
    switch (k.type) {
    case CRMF_KEY_RSA:
        *out = CMP_CMS_KTRI;
        return cm_result_make(CM_OK);
    case CRMF_KEY_EC:
    case CRMF_KEY_X25519:
    case CRMF_KEY_X448:
        if (k.type == CRMF_KEY_EC && k.ec_group == NULL) {
            break;
        }
        *out = CMP_CMS_KARI;
        return cm_result_make(CM_OK);
    default:
        break;
    }
    cm_why_set(why, "an %s key can neither transport nor agree a key",
               crmf_key_text(text, sizeof(text), &k));
    CM_BAIL(CMP_E_CMS_RECIPIENT_KEY);
}

// cms_put_rid writes the recipient's identifier: subjectKeyIdentifier [0] for KTRI (IMPLICIT
// OCTET STRING, RFC 5652 §6.2.1), rKeyId [0] { subjectKeyIdentifier } for KARI (§6.2.2), or
// IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER } for either.
static void cms_put_rid(der_builder *b, const cmp_cms_recipient *rcpt, bool kari)
{
    der_mark m;
    if (rcpt->ski.len > 0) {
        if (kari) {
            der_open(b, &m, DER_CONTEXT_CONS(0));
            der_put_octets(b, rcpt->ski);
            der_close(b, &m);
        } else {
            der_put_tlv(b, DER_CONTEXT(0), rcpt->ski);
        }
        return;
    }
    if (rcpt->issuer.len == 0 || rcpt->serial.len == 0) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_raw(b, rcpt->issuer);
    der_put_int_span(b, rcpt->serial);
    der_close(b, &m);
}

// KeyTransRecipientInfo ::= SEQUENCE { version CMSVersion (0 or 2), rid RecipientIdentifier,
//     keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier, encryptedKey EncryptedKey }
// RSAES-OAEP-params ::= SEQUENCE { hashFunc [0] AlgorithmIdentifier DEFAULT sha1,
//     maskGenFunc [1] AlgorithmIdentifier DEFAULT mgf1SHA1,
//     pSourceFunc [2] AlgorithmIdentifier DEFAULT pSpecifiedEmpty }   (RFC 4055 §4.1)
static cm_result cms_put_ktri(crmf_crypto *c, der_builder *b, const cmp_cms_recipient *rcpt,
                              const crmf_spki *k, const uint8_t cek[CMS_CEK_LEN])
{
    EVP_PKEY *pk = NULL;
    CM_TRY(crmf_crypto_key_from_spki(c, &pk, k));
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, pk, c->propq);
    uint8_t enc[CMS_MAX_KEY_LEN];
    size_t n = sizeof(enc);
    const bool ok = ctx != NULL && EVP_PKEY_encrypt_init(ctx) == 1 &&
                    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
                    EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) == 1 &&
                    EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) == 1 &&
                    EVP_PKEY_encrypt(ctx, enc, &n, cek, CMS_CEK_LEN) == 1;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    if (!ok) {
        return cms_crypto_fail();
    }
    der_mark ri, alg, params, m, mgf, h;
    der_open_hint(b, &ri, DER_TAG_SEQUENCE, 3);
    der_put_i64(b, rcpt->ski.len > 0 ? 2 : 0);
    cms_put_rid(b, rcpt, false);
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_RSAES_OAEP);
    der_open(b, &params, DER_TAG_SEQUENCE);
    der_open(b, &m, DER_CONTEXT_CONS(0));
    der_open(b, &h, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_SHA256);
    der_close(b, &h);
    der_close(b, &m);
    der_open(b, &m, DER_CONTEXT_CONS(1));
    der_open(b, &mgf, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_MGF1);
    der_open(b, &h, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_SHA256);
    der_close(b, &h);
    der_close(b, &mgf);
    der_close(b, &m);
    der_close(b, &params);
    der_close(b, &alg);
    der_put_octets(b, cm_span_make(enc, n));
    der_close(b, &ri);
    return cm_result_make(CM_OK);
}

// KeyAgreeRecipientInfo ::= SEQUENCE { version CMSVersion (3),
//     originator [0] EXPLICIT OriginatorIdentifierOrKey,
//     ukm [1] EXPLICIT UserKeyingMaterial OPTIONAL,
//     keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//     recipientEncryptedKeys RecipientEncryptedKeys }
// OriginatorIdentifierOrKey ::= CHOICE { ..., originatorKey [1] OriginatorPublicKey }
// OriginatorPublicKey ::= SEQUENCE { algorithm AlgorithmIdentifier, publicKey BIT STRING }
// RecipientEncryptedKeys ::= SEQUENCE OF RecipientEncryptedKey
// RecipientEncryptedKey ::= SEQUENCE { rid KeyAgreeRecipientIdentifier, encryptedKey }
// (RFC 5652 §6.2.2; the ephemeral key's algorithm is id-ecPublicKey without parameters, RFC
// 5753 §7.1.2, or id-X25519/id-X448, RFC 8418 §2; the keyEncryptionAlgorithm's parameters
// are the key wrap algorithm, id-aes256-wrap with absent parameters.)
static cm_result cms_put_kari(crmf_crypto *c, der_builder *b, const cmp_cms_recipient *rcpt,
                              const crmf_spki *k, const uint8_t cek[CMS_CEK_LEN])
{
    EVP_PKEY *peer = NULL, *eph = NULL;
    CM_TRY(crmf_crypto_key_from_spki(c, &peer, k));
    EVP_PKEY_CTX *gctx =
        k->type == CRMF_KEY_EC
            ? EVP_PKEY_CTX_new_from_pkey(c->libctx, peer, c->propq)
            : EVP_PKEY_CTX_new_from_name(c->libctx, k->type == CRMF_KEY_X25519 ? "X25519" : "X448",
                                         c->propq);
    cm_result r =
        gctx != NULL && EVP_PKEY_keygen_init(gctx) == 1 && EVP_PKEY_keygen(gctx, &eph) == 1
            ? cm_result_make(CM_OK)
            : cms_crypto_fail();
    EVP_PKEY_CTX_free(gctx);
    uint8_t z[CMS_MAX_Z_LEN], kek[32], wrapped[CMS_CEK_LEN + 8], pub[CMS_MAX_PUB_LEN];
    size_t z_len = 0, wrapped_len = 0, pub_len = 0;
    const char *md = NULL;
    const cm_span scheme = cms_kari_scheme(k, &md);
    if (cm_ok(r)) {
        r = cms_derive(c, z, &z_len, eph, peer);
    }
    if (cm_ok(r)) {
        r = cms_kek_derive(c, kek, md, cm_span_make(z, z_len), cm_span_make(NULL, 0));
    }
    if (cm_ok(r)) {
        r = cms_aes_wrap(true, kek, cek, CMS_CEK_LEN, wrapped, sizeof(wrapped), &wrapped_len);
    }
    if (cm_ok(r)) {
        r = cms_public_octets(eph, pub, sizeof(pub), &pub_len);
    }
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_cleanse(kek, sizeof(kek));
    EVP_PKEY_free(eph);
    EVP_PKEY_free(peer);
    CM_TRY(r);
    der_mark ri, orig, okey, alg, wrap, list, rek;
    der_open_hint(b, &ri, DER_CONTEXT_CONS(1), 2);
    der_put_i64(b, 3);
    der_open(b, &orig, DER_CONTEXT_CONS(0));
    der_open(b, &okey, DER_CONTEXT_CONS(1));
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid(b, k->alg_oid);
    der_close(b, &alg);
    der_put_bitstring(b, cm_span_make(pub, pub_len), 0);
    der_close(b, &okey);
    der_close(b, &orig);
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid(b, scheme);
    der_open(b, &wrap, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_AES256_WRAP);
    der_close(b, &wrap);
    der_close(b, &alg);
    der_open(b, &list, DER_TAG_SEQUENCE);
    der_open(b, &rek, DER_TAG_SEQUENCE);
    cms_put_rid(b, rcpt, true);
    der_put_octets(b, cm_span_make(wrapped, wrapped_len));
    der_close(b, &rek);
    der_close(b, &list);
    der_close(b, &ri);
    return cm_result_make(CM_OK);
}

// PasswordRecipientInfo ::= SEQUENCE { version CMSVersion (0),
//     keyDerivationAlgorithm [0] KeyDerivationAlgorithmIdentifier OPTIONAL,
//     keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier, encryptedKey EncryptedKey }
// PBKDF2-params ::= SEQUENCE { salt CHOICE { specified OCTET STRING, ... },
//     iterationCount INTEGER (1..MAX), keyLength INTEGER (1..MAX) OPTIONAL,
//     prf AlgorithmIdentifier DEFAULT algid-hmacWithSHA1 }               (RFC 8018 A.2)
// keyEncryptionAlgorithm: id-alg-PWRI-KEK with the KEK cipher, AES-256-CBC and its IV, as
// parameters (RFC 3211 §2.2, RFC 9481 §4.3).
static cm_result cms_put_pwri(der_builder *b, const cmp_cms_recipient *rcpt,
                              const uint8_t cek[CMS_CEK_LEN])
{
    CM_ENSURE(rcpt->password.len > 0 && rcpt->iterations > 0 && rcpt->iterations <= INT32_MAX,
              CM_E_INVALID_ARG);
    uint8_t salt[CMP_CMS_PWRI_SALT_LEN], iv[CMS_IV_LEN], kek[32], wrapped[2 * CMS_MAX_KEY_LEN];
    size_t wrapped_len = 0;
    cm_result r = RAND_bytes(salt, sizeof(salt)) == 1 && RAND_bytes(iv, sizeof(iv)) == 1
                      ? cm_result_make(CM_OK)
                      : cms_crypto_fail();
    if (cm_ok(r) && PKCS5_PBKDF2_HMAC((const char *)rcpt->password.p, (int)rcpt->password.len, salt,
                                      (int)sizeof(salt), (int)rcpt->iterations, EVP_sha256(),
                                      (int)sizeof(kek), kek) != 1) {
        r = cms_crypto_fail();
    }
    if (cm_ok(r)) {
        r = cms_pwri_wrap(kek, sizeof(kek), iv, cek, CMS_CEK_LEN, wrapped, sizeof(wrapped),
                          &wrapped_len);
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    CM_TRY(r);
    der_mark ri, kdf, params, prf, alg, kalg;
    der_open_hint(b, &ri, DER_CONTEXT_CONS(3), 2);
    der_put_i64(b, 0);
    der_open(b, &kdf, DER_CONTEXT_CONS(0));
    der_put_oid_lit(b, DER_OID_PBKDF2);
    der_open(b, &params, DER_TAG_SEQUENCE);
    der_put_octets(b, cm_span_make(salt, sizeof(salt)));
    der_put_u64(b, rcpt->iterations);
    der_open(b, &prf, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_HMAC_SHA256);
    der_put_null(b);
    der_close(b, &prf);
    der_close(b, &params);
    der_close(b, &kdf);
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_PWRI_KEK);
    der_open(b, &kalg, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_AES256_CBC);
    der_put_octets(b, cm_span_make(iv, sizeof(iv)));
    der_close(b, &kalg);
    der_close(b, &alg);
    der_put_octets(b, cm_span_make(wrapped, wrapped_len));
    der_close(b, &ri);
    return cm_result_make(CM_OK);
}

// EnvelopedData ::= SEQUENCE { version CMSVersion,
//     originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
//     recipientInfos RecipientInfos, encryptedContentInfo EncryptedContentInfo,
//     unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }
// RecipientInfos ::= SET SIZE (1..MAX) OF RecipientInfo
// RecipientInfo ::= CHOICE { ktri KeyTransRecipientInfo, kari [1] KeyAgreeRecipientInfo,
//     kekri [2] KEKRecipientInfo, pwri [3] PasswordRecipientinfo, ori [4] OtherRecipientInfo }
// EncryptedContentInfo ::= SEQUENCE { contentType ContentType,
//     contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
//     encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }     (RFC 5652 §6.1, IMPLICIT)
cm_result cmp_cms_seal(crmf_crypto *c, der_builder *b, uint32_t tag, const cmp_cms_recipient *rcpt,
                       cm_span content_type, cm_span content, cm_why *why)
{
    CM_ENSURE(content.len <= CMP_CMS_MAX_CONTENT, CM_E_INVALID_ARG);
    crmf_spki k;
    memset(&k, 0, sizeof(k));
    if (rcpt->kind != CMP_CMS_PWRI) {
        cmp_cms_recipient_kind kind;
        CM_TRY(cmp_cms_recipient_kind_for(&kind, rcpt->spki, why));
        if (kind != rcpt->kind) {
            cm_why_set(why, "the recipient's key cannot be used for %s",
                       rcpt->kind == CMP_CMS_KTRI ? "key transport" : "key agreement");
            CM_BAIL(CMP_E_CMS_RECIPIENT_KEY);
        }
        CM_TRY(crmf_spki_from_der(&k, rcpt->spki));
    }
    uint8_t cek[CMS_CEK_LEN], iv[CMS_IV_LEN];
    if (RAND_priv_bytes(cek, sizeof(cek)) != 1 || RAND_bytes(iv, sizeof(iv)) != 1) {
        OPENSSL_cleanse(cek, sizeof(cek));
        return cms_crypto_fail();
    }
    der_mark env, set, eci, alg;
    der_open_hint(b, &env, tag, 3);
    der_put_i64(b, rcpt->kind == CMP_CMS_PWRI
                       ? 3
                       : (rcpt->kind == CMP_CMS_KTRI && rcpt->ski.len == 0 ? 0 : 2));
    der_open_hint(b, &set, DER_TAG_SET, 3);
    cm_result r;
    switch (rcpt->kind) {
    case CMP_CMS_KTRI:
        r = cms_put_ktri(c, b, rcpt, &k, cek);
        break;
    case CMP_CMS_KARI:
        r = cms_put_kari(c, b, rcpt, &k, cek);
        break;
    case CMP_CMS_PWRI:
        r = cms_put_pwri(b, rcpt, cek);
        break;
    default:
        r = cm_result_make(CM_E_INVALID_ARG);
        break;
    }
    der_close(b, &set);
    der_open_hint(b, &eci, DER_TAG_SEQUENCE, 3);
    der_put_oid(b, content_type);
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_AES256_CBC);
    der_put_octets(b, cm_span_make(iv, sizeof(iv)));
    der_close(b, &alg);
    const size_t ct_len = (content.len / CMS_IV_LEN + 1) * CMS_IV_LEN;
    der_put_header(b, DER_CONTEXT(0), ct_len);
    uint8_t *ct = der_reserve(b, ct_len);
    size_t got = 0;
    if (cm_ok(r) && ct != NULL) {
        r = cms_cbc(true, true, cek, sizeof(cek), iv, content.p, content.len, ct, &got);
        if (cm_ok(r) && got != ct_len) {
            r = cm_result_make(CMP_E_CMS_CRYPTO);
        }
    }
    OPENSSL_cleanse(cek, sizeof(cek));
    der_close(b, &eci);
    der_close(b, &env);
    if (!cm_ok(r)) {
        der_builder_fail(b, r.code);
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Recipients: reading

// The parts of an EnvelopedData cmp_cms_open needs, as views into the body.
typedef struct cms_env {
    uint32_t ri_tag;    // the RecipientInfo's tag: SEQUENCE (ktri), [1] kari, [3] pwri
    cm_span ri;         // its content octets
    cm_span ctype;      // contentType
    size_t cek_len;     // the content cipher's key length
    cm_span iv;         // its IV
    cm_span ciphertext; // encryptedContent
} cms_env;

static cm_result cms_env_parse(cms_env *out, cm_span body, cm_why *why)
{
    der_reader r, set, eci, alg;
    der_reader_init(&r, body);
    int64_t version;
    CM_TRY(der_get_i64(&r, &version));
    CM_ENSURE(version >= 0 && version <= 4, CMP_E_CMS_MALFORMED);
    cm_span skip;
    bool present;
    CM_TRY(der_get_optional(&r, DER_CONTEXT_CONS(0), &skip, &present)); // originatorInfo
    CM_TRY(der_enter(&r, DER_TAG_SET, &set));
    cm_span whole;
    CM_TRY(der_get_any(&set, &out->ri_tag, &out->ri, &whole));
    if (!der_reader_empty(&set)) {
        cm_why_set(why, "the EnvelopedData has more than one RecipientInfo");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &eci));
    CM_TRY(der_get_oid(&eci, &out->ctype));
    CM_TRY(der_enter(&eci, DER_TAG_SEQUENCE, &alg));
    cm_span oid;
    CM_TRY(der_get_oid(&alg, &oid));
    if (der_oid_is(oid, DER_OID_AES256_CBC)) {
        out->cek_len = 32;
    } else if (der_oid_is(oid, DER_OID_AES192_CBC)) {
        out->cek_len = 24;
    } else if (der_oid_is(oid, DER_OID_AES128_CBC)) {
        out->cek_len = 16;
    } else {
        char name[64];
        cm_why_set(why, "the content encryption algorithm %s is not supported (AES-CBC is)",
                   crmf_oid_text(name, sizeof(name), oid));
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(der_get_octets(&alg, &out->iv));
    CM_ENSURE(out->iv.len == CMS_IV_LEN, CMP_E_CMS_MALFORMED);
    CM_TRY(der_expect_end(&alg));
    CM_TRY(der_get_tlv(&eci, DER_CONTEXT(0), &out->ciphertext));
    CM_TRY(der_expect_end(&eci));
    CM_TRY(der_get_optional(&r, DER_CONTEXT_CONS(1), &skip, &present)); // unprotectedAttrs
    CM_TRY(der_expect_end(&r));
    CM_ENSURE(out->ciphertext.len > 0 && out->ciphertext.len % CMS_IV_LEN == 0 &&
                  out->ciphertext.len <= CMP_CMS_MAX_CONTENT + CMS_IV_LEN,
              CMP_E_CMS_MALFORMED);
    return cm_result_make(CM_OK);
}

// cms_alg_oid reads AlgorithmIdentifier ::= SEQUENCE { algorithm, parameters ANY OPTIONAL }
// from |r|, with |out_params| the parameters' reader.
static cm_result cms_alg_oid(der_reader *r, cm_span *out_oid, der_reader *out_params)
{
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, out_params));
    return der_get_oid(out_params, out_oid);
}

// cms_is_sha256 accepts the AlgorithmIdentifier of SHA-256 with absent or NULL parameters.
static bool cms_is_sha256(der_reader *r)
{
    der_reader a;
    cm_span oid;
    if (!cm_ok(cms_alg_oid(r, &oid, &a)) || !der_oid_is(oid, DER_OID_SHA256)) {
        return false;
    }
    if (!der_reader_empty(&a) && !cm_ok(der_get_null(&a))) {
        return false;
    }
    return der_reader_empty(&a);
}

// cms_skip_rid steps over a RecipientIdentifier / KeyAgreeRecipientIdentifier.
static cm_result cms_skip_rid(der_reader *r)
{
    uint32_t tag;
    cm_span body;
    CM_TRY(der_get_any(r, &tag, &body, NULL));
    CM_ENSURE(tag == DER_TAG_SEQUENCE || tag == DER_CONTEXT(0) || tag == DER_CONTEXT_CONS(0),
              CMP_E_CMS_MALFORMED);
    return cm_result_make(CM_OK);
}

static cm_result cms_open_ktri(crmf_crypto *c, uint8_t *cek, size_t *cek_len, cm_span ri,
                               const cmp_cms_opener *o, cm_why *why)
{
    der_reader r, p, params, m;
    der_reader_init(&r, ri);
    int64_t version;
    cm_span oid, enc;
    CM_TRY(der_get_i64(&r, &version));
    CM_ENSURE(version == 0 || version == 2, CMP_E_CMS_MALFORMED);
    CM_TRY(cms_skip_rid(&r));
    CM_TRY(cms_alg_oid(&r, &oid, &p));
    if (!der_oid_is(oid, DER_OID_RSAES_OAEP)) {
        char name[64];
        cm_why_set(why, "the key transport algorithm %s is not supported (RSAES-OAEP is)",
                   crmf_oid_text(name, sizeof(name), oid));
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    // RSAES-OAEP with SHA-256 and MGF1-SHA-256, the default (empty) label.
    CM_TRY(der_enter(&p, DER_TAG_SEQUENCE, &params));
    CM_TRY(der_expect_end(&p));
    bool ok = cm_ok(der_enter(&params, DER_CONTEXT_CONS(0), &m)) && cms_is_sha256(&m) &&
              der_reader_empty(&m);
    der_reader mgf;
    cm_span mgf_oid;
    ok = ok && cm_ok(der_enter(&params, DER_CONTEXT_CONS(1), &m)) &&
         cm_ok(cms_alg_oid(&m, &mgf_oid, &mgf)) && der_oid_is(mgf_oid, DER_OID_MGF1) &&
         der_reader_empty(&m) && cms_is_sha256(&mgf) && der_reader_empty(&mgf) &&
         der_reader_empty(&params);
    if (!ok) {
        cm_why_set(why, "RSAES-OAEP is supported with SHA-256 and MGF1-SHA-256 only");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(der_get_octets(&r, &enc));
    CM_TRY(der_expect_end(&r));
    CM_ENSURE(o->key != NULL && EVP_PKEY_is_a(o->key, "RSA"), CMP_E_CMS_RECIPIENT_KEY);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, o->key, c->propq);
    size_t n = CMS_MAX_KEY_LEN;
    const bool dec = ctx != NULL && EVP_PKEY_decrypt_init(ctx) == 1 &&
                     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
                     EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) == 1 &&
                     EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) == 1 &&
                     EVP_PKEY_decrypt(ctx, cek, &n, enc.p, enc.len) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!dec) {
        cm_ossl_clear_errors();
        CM_BAIL(CMP_E_CMS_DECRYPT);
    }
    *cek_len = n;
    return cm_result_make(CM_OK);
}

// cms_peer_key builds the originator's ephemeral public key from |pub| on |mine|'s curve (EC)
// or of |mine|'s type (X25519, X448).
static cm_result cms_peer_key(crmf_crypto *c, EVP_PKEY **out, EVP_PKEY *mine, cm_span alg_oid,
                              cm_span pub)
{
    *out = NULL;
    if (der_oid_is(alg_oid, DER_OID_EC_PUBLIC_KEY) && EVP_PKEY_is_a(mine, "EC")) {
        EVP_PKEY *k = EVP_PKEY_new();
        if (k == NULL || EVP_PKEY_copy_parameters(k, mine) != 1 ||
            EVP_PKEY_set1_encoded_public_key(k, pub.p, pub.len) != 1) {
            EVP_PKEY_free(k);
            cm_ossl_clear_errors();
            CM_BAIL(CMP_E_CMS_MALFORMED);
        }
        *out = k;
        return cm_result_make(CM_OK);
    }
    const char *name = der_oid_is(alg_oid, DER_OID_X25519) ? "X25519"
                       : der_oid_is(alg_oid, DER_OID_X448) ? "X448"
                                                           : NULL;
    CM_ENSURE(name != NULL && EVP_PKEY_is_a(mine, name), CMP_E_CMS_RECIPIENT_KEY);
    *out = EVP_PKEY_new_raw_public_key_ex(c->libctx, name, c->propq, pub.p, pub.len);
    if (*out == NULL) {
        cm_ossl_clear_errors();
        CM_BAIL(CMP_E_CMS_MALFORMED);
    }
    return cm_result_make(CM_OK);
}

static cm_result cms_open_kari(crmf_crypto *c, uint8_t *cek, size_t *cek_len, cm_span ri,
                               const cmp_cms_opener *o, cm_why *why)
{
    der_reader r, orig, okey, alg, kalg, wrap, list, rek;
    der_reader_init(&r, ri);
    int64_t version;
    CM_TRY(der_get_i64(&r, &version));
    CM_ENSURE(version == 3, CMP_E_CMS_MALFORMED);
    CM_TRY(der_enter(&r, DER_CONTEXT_CONS(0), &orig));
    if (!der_peek_is(&orig, DER_CONTEXT_CONS(1))) {
        cm_why_set(why, "only an ephemeral originator key (originatorKey) is supported");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(der_enter(&orig, DER_CONTEXT_CONS(1), &okey));
    CM_TRY(der_expect_end(&orig));
    cm_span okey_oid, pub, ukm = cm_span_make(NULL, 0);
    uint8_t unused;
    CM_TRY(cms_alg_oid(&okey, &okey_oid, &alg));
    CM_ENSURE(der_reader_empty(&alg) || cm_ok(der_get_null(&alg)) || der_peek_is(&alg, DER_TAG_OID),
              CMP_E_CMS_MALFORMED); // absent, NULL or the curve (RFC 5753 §7.1.2)
    CM_TRY(der_get_bitstring(&okey, &pub, &unused));
    CM_ENSURE(unused == 0 && pub.len > 0 && pub.len <= CMS_MAX_PUB_LEN, CMP_E_CMS_MALFORMED);
    CM_TRY(der_expect_end(&okey));
    der_reader u;
    bool has_ukm;
    CM_TRY(der_enter_optional(&r, DER_CONTEXT_CONS(1), &u, &has_ukm));
    if (has_ukm) {
        CM_TRY(der_get_octets(&u, &ukm));
        CM_TRY(der_expect_end(&u));
        CM_ENSURE(ukm.len <= 64, CMP_E_CMS_UNSUPPORTED);
    }
    cm_span scheme, wrap_oid, wrapped;
    CM_TRY(cms_alg_oid(&r, &scheme, &kalg));
    const char *md = der_oid_is(scheme, DER_OID_ECDH_SHA256_KDF)   ? "SHA256"
                     : der_oid_is(scheme, DER_OID_ECDH_SHA384_KDF) ? "SHA384"
                     : der_oid_is(scheme, DER_OID_ECDH_SHA512_KDF) ? "SHA512"
                                                                   : NULL;
    if (md == NULL) {
        char name[64];
        cm_why_set(why, "the key agreement scheme %s is not supported",
                   crmf_oid_text(name, sizeof(name), scheme));
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(cms_alg_oid(&kalg, &wrap_oid, &wrap));
    if (!der_oid_is(wrap_oid, DER_OID_AES256_WRAP)) {
        cm_why_set(why, "the key wrap algorithm must be id-aes256-wrap");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &list));
    CM_TRY(der_expect_end(&r));
    CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &rek));
    CM_ENSURE(der_reader_empty(&list), CMP_E_CMS_UNSUPPORTED);
    CM_TRY(cms_skip_rid(&rek));
    CM_TRY(der_get_octets(&rek, &wrapped));
    CM_TRY(der_expect_end(&rek));
    CM_ENSURE(o->key != NULL, CMP_E_CMS_RECIPIENT_KEY);
    EVP_PKEY *peer = NULL;
    CM_TRY(cms_peer_key(c, &peer, o->key, okey_oid, pub));
    uint8_t z[CMS_MAX_Z_LEN], kek[32];
    size_t z_len = 0;
    cm_result res = cms_derive(c, z, &z_len, o->key, peer);
    EVP_PKEY_free(peer);
    if (cm_ok(res)) {
        res = cms_kek_derive(c, kek, md, cm_span_make(z, z_len), ukm);
    }
    if (cm_ok(res)) {
        res = cms_aes_wrap(false, kek, wrapped.p, wrapped.len, cek, CMS_MAX_KEY_LEN, cek_len);
    }
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_cleanse(kek, sizeof(kek));
    return res;
}

// cms_pbkdf2_md maps a PBKDF2 prf AlgorithmIdentifier to its HMAC digest: SHA-256/384/512
// (the SHA-1 default, when the field is absent, is refused).
static const EVP_MD *cms_pbkdf2_md(cm_span prf_oid)
{
    if (der_oid_is(prf_oid, DER_OID_HMAC_SHA256)) {
        return EVP_sha256();
    }
    if (der_oid_is(prf_oid, DER_OID_HMAC_SHA384)) {
        return EVP_sha384();
    }
    if (der_oid_is(prf_oid, DER_OID_HMAC_SHA512)) {
        return EVP_sha512();
    }
    return NULL;
}

static cm_result cms_open_pwri(uint8_t *cek, size_t *cek_len, cm_span ri, const cmp_cms_opener *o,
                               cm_why *why)
{
    der_reader r, kdf, params, prf, kalg, kek_alg;
    der_reader_init(&r, ri);
    int64_t version;
    CM_TRY(der_get_i64(&r, &version));
    CM_ENSURE(version == 0, CMP_E_CMS_MALFORMED);
    bool present;
    CM_TRY(der_enter_optional(&r, DER_CONTEXT_CONS(0), &kdf, &present));
    if (!present) {
        cm_why_set(why, "the PasswordRecipientInfo names no key derivation algorithm");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    cm_span oid, salt, prf_oid = cm_span_make(NULL, 0);
    uint64_t iterations = 0, key_len = 0;
    CM_TRY(der_get_oid(&kdf, &oid));
    if (!der_oid_is(oid, DER_OID_PBKDF2)) {
        cm_why_set(why, "the password key derivation must be PBKDF2");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    CM_TRY(der_enter(&kdf, DER_TAG_SEQUENCE, &params));
    CM_TRY(der_expect_end(&kdf));
    CM_TRY(der_get_octets(&params, &salt));
    CM_TRY(der_get_u64(&params, &iterations));
    if (der_peek_is(&params, DER_TAG_INTEGER)) {
        CM_TRY(der_get_u64(&params, &key_len));
    }
    if (!der_reader_empty(&params)) {
        CM_TRY(cms_alg_oid(&params, &prf_oid, &prf));
        CM_ENSURE(der_reader_empty(&prf) || (cm_ok(der_get_null(&prf)) && der_reader_empty(&prf)),
                  CMP_E_CMS_MALFORMED);
    }
    CM_TRY(der_expect_end(&params));
    const EVP_MD *md = prf_oid.len > 0 ? cms_pbkdf2_md(prf_oid) : NULL;
    if (md == NULL) {
        cm_why_set(why, "the PBKDF2 PRF must be HMAC with SHA-256, SHA-384 or SHA-512");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    // The bounds before any work: a peer chose these.
    const size_t max_salt = o->max_salt_len == 0 || o->max_salt_len > CMP_CMS_MAX_SALT_LEN
                                ? CMP_CMS_MAX_SALT_LEN
                                : o->max_salt_len;
    if (iterations < o->min_iterations || iterations > o->max_iterations || iterations == 0 ||
        iterations > INT32_MAX) {
        cm_why_set(why, "the PBKDF2 iteration count %llu is outside %llu..%llu",
                   (unsigned long long)iterations, (unsigned long long)o->min_iterations,
                   (unsigned long long)o->max_iterations);
        CM_BAIL(CMP_E_CMS_KDF_BOUNDS);
    }
    if (salt.len < 8 || salt.len > max_salt) {
        cm_why_set(why, "the PBKDF2 salt of %zu octets is outside 8..%zu", salt.len, max_salt);
        CM_BAIL(CMP_E_CMS_KDF_BOUNDS);
    }
    CM_TRY(cms_alg_oid(&r, &oid, &kalg));
    if (!der_oid_is(oid, DER_OID_PWRI_KEK)) {
        cm_why_set(why, "the password key encryption must be id-alg-PWRI-KEK");
        CM_BAIL(CMP_E_CMS_UNSUPPORTED);
    }
    cm_span kek_oid, kek_iv, wrapped;
    CM_TRY(cms_alg_oid(&kalg, &kek_oid, &kek_alg));
    CM_TRY(der_expect_end(&kalg));
    const size_t kek_len = der_oid_is(kek_oid, DER_OID_AES256_CBC)   ? 32
                           : der_oid_is(kek_oid, DER_OID_AES192_CBC) ? 24
                           : der_oid_is(kek_oid, DER_OID_AES128_CBC) ? 16
                                                                     : 0;
    CM_ENSURE(kek_len != 0, CMP_E_CMS_UNSUPPORTED);
    CM_ENSURE(key_len == 0 || key_len == kek_len, CMP_E_CMS_MALFORMED);
    CM_TRY(der_get_octets(&kek_alg, &kek_iv));
    CM_ENSURE(kek_iv.len == CMS_IV_LEN, CMP_E_CMS_MALFORMED);
    CM_TRY(der_expect_end(&kek_alg));
    CM_TRY(der_get_octets(&r, &wrapped));
    CM_TRY(der_expect_end(&r));
    CM_ENSURE(o->password.len > 0 && o->password.len <= INT32_MAX, CMP_E_CMS_RECIPIENT_KEY);
    uint8_t kek[32];
    cm_result res = PKCS5_PBKDF2_HMAC((const char *)o->password.p, (int)o->password.len, salt.p,
                                      (int)salt.len, (int)iterations, md, (int)kek_len, kek) == 1
                        ? cm_result_make(CM_OK)
                        : cms_crypto_fail();
    if (cm_ok(res)) {
        res = cms_pwri_unwrap(kek, kek_len, kek_iv.p, wrapped, cek, CMS_MAX_KEY_LEN, cek_len);
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    return res;
}

cm_result cmp_cms_open(crmf_crypto *c, uint8_t **out, size_t *out_len, cm_span *out_content_type,
                       cm_span body, const cmp_cms_opener *o, cm_why *why)
{
    *out = NULL;
    *out_len = 0;
    cms_env env;
    memset(&env, 0, sizeof(env));
    cm_result r = cms_env_parse(&env, body, why);
    if (!cm_ok(r)) {
        // Structure errors of the reader become the module's one code for a malformed CMS.
        return cm_result_class(r) == CM_CLASS_PROTO ? cm_result_make(CMP_E_CMS_MALFORMED) : r;
    }
    uint8_t cek[CMS_MAX_KEY_LEN];
    size_t cek_len = 0;
    switch (env.ri_tag) {
    case DER_TAG_SEQUENCE:
        r = cms_open_ktri(c, cek, &cek_len, env.ri, o, why);
        break;
    case DER_CONTEXT_CONS(1):
        r = cms_open_kari(c, cek, &cek_len, env.ri, o, why);
        break;
    case DER_CONTEXT_CONS(3):
        r = cms_open_pwri(cek, &cek_len, env.ri, o, why);
        break;
    default:
        cm_why_set(why, "only key transport, key agreement and password recipients are "
                        "supported");
        r = cm_result_make(CMP_E_CMS_UNSUPPORTED);
        break;
    }
    if (cm_ok(r) && cek_len != env.cek_len) {
        r = cm_result_make(CMP_E_CMS_DECRYPT); // a wrong key unwrapped to garbage of the wrong size
    }
    if (cm_result_class(r) == CM_CLASS_PROTO) {
        r = cm_result_make(CMP_E_CMS_MALFORMED); // the DER reader's codes: a malformed CMS
    }
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    if (cm_ok(r)) {
        plain = OPENSSL_malloc(env.ciphertext.len + CMS_IV_LEN);
        r = plain != NULL ? cms_cbc(false, true, cek, cek_len, env.iv.p, env.ciphertext.p,
                                    env.ciphertext.len, plain, &plain_len)
                          : cm_result_make(CM_E_NOMEM);
    }
    OPENSSL_cleanse(cek, sizeof(cek));
    if (!cm_ok(r)) {
        cmp_cms_secret_free(plain, env.ciphertext.len + CMS_IV_LEN);
        if (r.code == CMP_E_CMS_DECRYPT) {
            cm_why_set(why, "the EnvelopedData does not decrypt with this %s",
                       env.ri_tag == DER_CONTEXT_CONS(3) ? "shared secret" : "private key");
        }
        return r;
    }
    *out = plain;
    *out_len = plain_len;
    *out_content_type = env.ctype;
    return cm_result_make(CM_OK);
}

cm_result cmp_encrypted_key_body(cm_span *out_body, cm_span elem)
{
    der_reader r, outer;
    der_reader_init(&r, elem);
    uint32_t tag;
    CM_ENSURE(cm_ok(der_peek_tag(&r, &tag)) &&
                  (tag == DER_CONTEXT_CONS(0) || tag == DER_CONTEXT_CONS(1)),
              CMP_E_CMS_MALFORMED);
    CM_ENSURE(cm_ok(der_enter(&r, tag, &outer)) && der_reader_empty(&r), CMP_E_CMS_MALFORMED);
    if (der_peek_is(&outer, DER_TAG_SEQUENCE)) {
        CM_BAIL(CMP_E_CMS_UNSUPPORTED); // EncryptedValue (RFC 4211 §2.1, deprecated by RFC 9480)
    }
    cm_span body;
    CM_ENSURE(cm_ok(der_get_tlv(&outer, DER_CONTEXT_CONS(0), &body)) && der_reader_empty(&outer),
              CMP_E_CMS_MALFORMED);
    *out_body = body;
    return cm_result_make(CM_OK);
}

void cmp_cms_content_info_marshal(der_builder *b, cm_span content_type, cm_span body)
{
    // ContentInfo ::= SEQUENCE { contentType ContentType, content [0] EXPLICIT ANY }
    der_mark ci, m, seq;
    der_open_hint(b, &ci, DER_TAG_SEQUENCE, 3);
    der_put_oid(b, content_type);
    der_open_hint(b, &m, DER_CONTEXT_CONS(0), 3);
    der_open_hint(b, &seq, DER_TAG_SEQUENCE, 3);
    der_put_raw(b, body);
    der_close(b, &seq);
    der_close(b, &m);
    der_close(b, &ci);
}

// ---------------------------------------------------------------------------------------------
// AsymmetricKeyPackage

cm_result cmp_key_package_new(uint8_t **out, size_t *out_len, EVP_PKEY *key)
{
    *out = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    const int n = p8 != NULL ? i2d_PKCS8_PRIV_KEY_INFO(p8, NULL) : -1;
    if (n <= 0) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        return cms_crypto_fail();
    }
    // SEQUENCE header (at most 5 octets) + the one OneAsymmetricKey, written in place so no
    // copy of the key is left anywhere but |buf|.
    const size_t cap = (size_t)n + 6;
    uint8_t *buf = OPENSSL_malloc(cap);
    if (buf == NULL) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        CM_BAIL(CM_E_NOMEM);
    }
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_put_header(&b, DER_TAG_SEQUENCE, (size_t)n);
    uint8_t *p = der_reserve(&b, (size_t)n);
    const bool ok = p != NULL && i2d_PKCS8_PRIV_KEY_INFO(p8, &p) == n;
    PKCS8_PRIV_KEY_INFO_free(p8); // its key octets are wiped on free (OpenSSL's pkey callback)
    cm_span whole;
    if (!ok || !cm_ok(der_builder_finish(&b, &whole))) {
        cmp_cms_secret_free(buf, cap);
        return cms_crypto_fail();
    }
    *out = buf;
    *out_len = whole.len;
    return cm_result_make(CM_OK);
}

cm_result cmp_key_package_parse(cm_span *out_key, cm_span der)
{
    der_reader r, seq, k;
    der_reader_init(&r, der);
    cm_span whole;
    int64_t version;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !der_reader_empty(&r) ||
        !cm_ok(der_get_element(&seq, DER_TAG_SEQUENCE, &whole)) || !der_reader_empty(&seq)) {
        CM_BAIL(CMP_E_CMS_MALFORMED);
    }
    der_reader_init(&k, whole);
    der_reader body;
    if (!cm_ok(der_enter(&k, DER_TAG_SEQUENCE, &body)) || !cm_ok(der_get_i64(&body, &version)) ||
        (version != 0 && version != 1)) {
        CM_BAIL(CMP_E_CMS_MALFORMED);
    }
    *out_key = whole;
    return cm_result_make(CM_OK);
}

cm_result cmp_key_package_key(crmf_crypto *c, EVP_PKEY **out, cm_span der, cm_span spki)
{
    *out = NULL;
    cm_span key;
    CM_TRY(cmp_key_package_parse(&key, der));
    const unsigned char *p = key.p;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)key.len);
    EVP_PKEY *pkey = p8 != NULL && p == key.p + key.len ? EVP_PKCS82PKEY(p8) : NULL;
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (pkey == NULL) {
        cm_ossl_clear_errors();
        CM_BAIL(CMP_E_CMS_MALFORMED);
    }
    if (spki.len > 0) {
        crmf_spki k;
        EVP_PKEY *pub = NULL;
        const bool same = cm_ok(crmf_spki_from_der(&k, spki)) &&
                          cm_ok(crmf_crypto_key_from_spki(c, &pub, &k)) &&
                          EVP_PKEY_eq(pub, pkey) == 1;
        EVP_PKEY_free(pub);
        cm_ossl_clear_errors();
        if (!same) {
            EVP_PKEY_free(pkey);
            CM_BAIL(CMP_E_CMS_DECRYPT);
        }
    }
    *out = pkey;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// SignedData

// cms_digest_alg returns the digest algorithm row's OID for |h| (SHA-256/384/512), or an empty
// span.
static cm_span cms_digest_oid(crmf_hash h, const char **out_name)
{
    switch (h) {
    case CRMF_HASH_SHA256:
        *out_name = "SHA256";
        return CM_SPAN_LIT(DER_OID_SHA256);
    case CRMF_HASH_SHA384:
        *out_name = "SHA384";
        return CM_SPAN_LIT(DER_OID_SHA384);
    case CRMF_HASH_SHA512:
        *out_name = "SHA512";
        return CM_SPAN_LIT(DER_OID_SHA512);
    default:
        *out_name = NULL;
        return cm_span_make(NULL, 0);
    }
}

// cms_set_less orders two DER encodings as X.690 §11.6 sorts a SET OF: as octet strings, the
// shorter padded with zero octets.
static bool cms_set_less(cm_span a, cm_span b)
{
    const size_t n = a.len > b.len ? a.len : b.len;
    for (size_t i = 0; i < n; i++) {
        const uint8_t x = i < a.len ? a.p[i] : 0;
        const uint8_t y = i < b.len ? b.p[i] : 0;
        if (x != y) {
            return x < y;
        }
    }
    return false;
}

// Attribute ::= SEQUENCE { attrType OBJECT IDENTIFIER, attrValues SET OF AttributeValue }
// SignedAttributes ::= SET SIZE (1..MAX) OF Attribute                   (RFC 5652 §5.3)
cm_result cmp_signed_data_attrs(crmf_crypto *c, der_builder *b, const cmp_signed_data *sd)
{
    const char *md_name = NULL;
    const cm_span md_oid = cms_digest_oid(sd->digest, &md_name);
    CM_ENSURE(md_oid.len > 0, CMP_E_CMS_UNSUPPORTED);
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    const EVP_MD *md = c->md[sd->digest];
    if (md == NULL || EVP_Digest(sd->content.p, sd->content.len, digest, &dlen, md, NULL) != 1) {
        return cms_crypto_fail();
    }
    uint8_t bufs[3][96];
    cm_span attrs[3];
    for (size_t i = 0; i < 3; i++) {
        der_builder a;
        der_builder_init_fixed(&a, bufs[i], sizeof(bufs[i]));
        der_mark seq, set;
        der_open(&a, &seq, DER_TAG_SEQUENCE);
        der_put_oid(&a, i == 0   ? CM_SPAN_LIT(DER_OID_AA_CONTENT_TYPE)
                        : i == 1 ? CM_SPAN_LIT(DER_OID_AA_SIGNING_TIME)
                                 : CM_SPAN_LIT(DER_OID_AA_MESSAGE_DIGEST));
        der_open(&a, &set, DER_TAG_SET);
        if (i == 0) {
            der_put_oid(&a, sd->content_type);
        } else if (i == 1) {
            der_put_time(&a, sd->signing_time); // RFC 5652 §11.3: UTCTime through 2049
        } else {
            der_put_octets(&a, cm_span_make(digest, dlen));
        }
        der_close(&a, &set);
        der_close(&a, &seq);
        CM_ENSURE(cm_ok(der_builder_finish(&a, &attrs[i])), CM_E_INVALID_ARG);
    }
    // DER order of the SET OF (three elements: a small sort).
    for (size_t i = 1; i < 3; i++) {
        for (size_t j = i; j > 0 && cms_set_less(attrs[j], attrs[j - 1]); j--) {
            const cm_span t = attrs[j];
            attrs[j] = attrs[j - 1];
            attrs[j - 1] = t;
        }
    }
    der_mark set;
    der_open(b, &set, DER_TAG_SET);
    for (size_t i = 0; i < 3; i++) {
        der_put_raw(b, attrs[i]);
    }
    der_close(b, &set);
    return cm_result_make(CM_OK);
}

// SignedData ::= SEQUENCE { version CMSVersion,
//     digestAlgorithms SET OF DigestAlgorithmIdentifier,
//     encapContentInfo EncapsulatedContentInfo,
//     certificates [0] IMPLICIT CertificateSet OPTIONAL,
//     crls [1] IMPLICIT RevocationInfoChoices OPTIONAL,
//     signerInfos SET OF SignerInfo }
// EncapsulatedContentInfo ::= SEQUENCE { eContentType ContentType,
//     eContent [0] EXPLICIT OCTET STRING OPTIONAL }
// SignerInfo ::= SEQUENCE { version CMSVersion, sid SignerIdentifier,
//     digestAlgorithm DigestAlgorithmIdentifier, signedAttrs [0] IMPLICIT SignedAttributes
//     OPTIONAL, signatureAlgorithm SignatureAlgorithmIdentifier, signature SignatureValue,
//     unsignedAttrs [1] IMPLICIT UnsignedAttributes OPTIONAL }
// SignerIdentifier ::= CHOICE { issuerAndSerialNumber, subjectKeyIdentifier [0] }
// (RFC 5652 §5.1-5.3; version 3 for both: the content is not id-data and sid is the SKI.)
void cmp_signed_data_marshal(der_builder *b, const cmp_signed_data *sd, cm_span attrs,
                             cm_span signature)
{
    const char *md_name = NULL;
    const cm_span md_oid = cms_digest_oid(sd->digest, &md_name);
    if (md_oid.len == 0 || sd->num_certs == 0 || sd->num_certs > CMP_CMS_MAX_CERTS) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark sdm, set, alg, eci, m, si;
    der_open_hint(b, &sdm, DER_TAG_SEQUENCE, 3);
    der_put_i64(b, 3);
    der_open(b, &set, DER_TAG_SET);
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid(b, md_oid);
    der_close(b, &alg);
    der_close(b, &set);
    der_open_hint(b, &eci, DER_TAG_SEQUENCE, 3);
    der_put_oid(b, sd->content_type);
    der_open_hint(b, &m, DER_CONTEXT_CONS(0), 3);
    der_put_octets(b, sd->content);
    der_close(b, &m);
    der_close(b, &eci);
    // CertificateSet ::= SET OF CertificateChoices: the certificates in their given order (a
    // SET OF in BER; OpenSSL and RFC 9483's readers take the signer from the sid).
    der_open_hint(b, &m, DER_CONTEXT_CONS(0), 3);
    for (size_t i = 0; i < sd->num_certs; i++) {
        der_put_raw(b, sd->certs[i]);
    }
    der_close(b, &m);
    der_open_hint(b, &set, DER_TAG_SET, 3);
    der_open_hint(b, &si, DER_TAG_SEQUENCE, 3);
    der_put_i64(b, 3);
    der_put_tlv(b, DER_CONTEXT(0), sd->ski);
    der_open(b, &alg, DER_TAG_SEQUENCE);
    der_put_oid(b, md_oid);
    der_close(b, &alg);
    // The signed attributes again, under [0] IMPLICIT: the SET's content.
    der_reader r;
    der_reader_init(&r, attrs);
    cm_span content;
    if (!cm_ok(der_get_tlv(&r, DER_TAG_SET, &content)) || !der_reader_empty(&r)) {
        der_builder_fail(b, CM_E_INVALID_ARG);
    }
    der_put_header(b, DER_CONTEXT_CONS(0), content.len);
    der_put_raw(b, content);
    der_put_raw(b, sd->sig_alg);
    der_put_octets(b, signature);
    der_close(b, &si);
    der_close(b, &set);
    der_close(b, &sdm);
}

cm_result cmp_signed_data_content(cm_span *out_type, cm_span *out_content, cm_span der)
{
    der_reader r, sdr, set, eci, m;
    der_reader_init(&r, der);
    int64_t version;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &sdr)) || !der_reader_empty(&r) ||
        !cm_ok(der_get_i64(&sdr, &version)) || !cm_ok(der_enter(&sdr, DER_TAG_SET, &set)) ||
        !cm_ok(der_enter(&sdr, DER_TAG_SEQUENCE, &eci)) || !cm_ok(der_get_oid(&eci, out_type)) ||
        !cm_ok(der_enter(&eci, DER_CONTEXT_CONS(0), &m)) ||
        !cm_ok(der_get_octets(&m, out_content)) || !der_reader_empty(&m) ||
        !der_reader_empty(&eci)) {
        CM_BAIL(CMP_E_CMS_MALFORMED);
    }
    return cm_result_make(CM_OK);
}
