// engine/crmf: signature verification and production for every signature row of the table.
//
// Hash-then-sign algorithms are done in two steps, the message hashed here with the row's
// digest and the digest signed or verified with EVP_PKEY_sign/EVP_PKEY_verify: that is the
// one shape that covers SHA-2, SHA-3 and SHAKE alike (OpenSSL 3.0's EVP_DigestSign refuses
// SHAKE with ECDSA, and cannot make a SHAKE digest of 256/512 bits there), and it lets a message
// in several pieces be verified without joining them. RSASSA-PSS-SHAKE128/256 (RFC 8702
// §3.2.1) uses SHAKE as its mask generation function, which OpenSSL 3.0 does not offer, so
// EMSA-PSS (RFC 8017 §9.1) is encoded and checked here around a raw RSA operation. EdDSA signs
// the message itself (one-shot EVP_DigestVerify/EVP_DigestSign).
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"

#define CRMF_MAX_PARTS  4u
#define CRMF_MAX_DIGEST 64u   // SHA-512, SHA3-512, SHAKE256 at 512 bits
#define CRMF_MAX_RSA    1024u // octets of the largest modulus (crmf_crypto.c's cap)

// crmf_digest_parts hashes |parts| with |h| into |out| (crmf_hash_len(h) octets).
static cm_result crmf_digest_parts(crmf_crypto *c, crmf_hash h, const cm_span *parts, size_t n,
                                   uint8_t *out, size_t *out_len)
{
    const size_t len = crmf_hash_len(h);
    CM_ENSURE(h > CRMF_HASH_NONE && h < CRMF_HASH_COUNT && c->md[h] != NULL && len > 0 &&
                  len <= CRMF_MAX_DIGEST,
              CRMF_E_ALG_UNSUPPORTED);
    bool ok = EVP_DigestInit_ex2(c->mdctx, c->md[h], NULL) == 1;
    for (size_t i = 0; ok && i < n; i++) {
        ok = parts[i].len == 0 || EVP_DigestUpdate(c->mdctx, parts[i].p, parts[i].len) == 1;
    }
    if (ok && crmf_hash_is_xof(h)) {
        ok = EVP_DigestFinalXOF(c->mdctx, out, len) == 1;
    } else if (ok) {
        unsigned int got = 0;
        ok = EVP_DigestFinal_ex(c->mdctx, out, &got) == 1 && got == len;
    }
    (void)EVP_MD_CTX_reset(c->mdctx);
    if (!ok) {
        cm_ossl_clear_errors();
        CM_BAIL(CRMF_E_CRYPTO);
    }
    *out_len = len;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// EMSA-PSS with SHAKE as hash and mask generation function (RFC 8017 §9.1, RFC 8702 §3.2.1)

// crmf_pss_geometry gives the modulus length |*out_k| and emBits/emLen of |key|.
static cm_result crmf_pss_geometry(EVP_PKEY *key, size_t *out_k, size_t *out_em_bits,
                                   size_t *out_em_len)
{
    const int bits = EVP_PKEY_get_bits(key);
    CM_ENSURE(bits > 0 && (size_t)bits <= 8 * CRMF_MAX_RSA, CRMF_E_KEY_UNSUPPORTED);
    *out_k = ((size_t)bits + 7) / 8;
    *out_em_bits = (size_t)bits - 1;
    *out_em_len = (*out_em_bits + 7) / 8;
    return cm_result_make(CM_OK);
}

// crmf_pss_mask XORs MGF(seed, len) = SHAKE(seed, len octets) into |db|.
static cm_result crmf_pss_mask(crmf_crypto *c, crmf_hash h, uint8_t *db, size_t len, cm_span seed)
{
    uint8_t mask[CRMF_MAX_RSA];
    CM_ENSURE(len <= sizeof(mask), CM_E_INVALID_ARG);
    bool ok = EVP_DigestInit_ex2(c->mdctx, c->md[h], NULL) == 1 &&
              EVP_DigestUpdate(c->mdctx, seed.p, seed.len) == 1 &&
              EVP_DigestFinalXOF(c->mdctx, mask, len) == 1;
    (void)EVP_MD_CTX_reset(c->mdctx);
    if (!ok) {
        cm_ossl_clear_errors();
        CM_BAIL(CRMF_E_CRYPTO);
    }
    for (size_t i = 0; i < len; i++) {
        db[i] ^= mask[i];
    }
    return cm_result_make(CM_OK);
}

// crmf_pss_hash computes H = SHAKE(0x00 * 8 || mHash || salt, hLen) (RFC 8017 §9.1.1 steps 5-6).
static cm_result crmf_pss_hash(crmf_crypto *c, crmf_hash h, uint8_t *out, cm_span mhash,
                               cm_span salt)
{
    static const uint8_t k_zeros[8] = {0};
    const cm_span parts[3] = {cm_span_make(k_zeros, 8), mhash, salt};
    size_t len = 0;
    return crmf_digest_parts(c, h, parts, 3, out, &len);
}

// crmf_pss_shake_verify checks |sig| over the digest |mhash| (EMSA-PSS-VERIFY, RFC 8017
// §9.1.2) with |key|'s public RSA operation (RSA_NO_PADDING).
static cm_result crmf_pss_shake_verify(crmf_crypto *c, const crmf_sig_alg *alg, EVP_PKEY *key,
                                       cm_span mhash, cm_span sig)
{
    size_t k = 0;
    size_t em_bits = 0;
    size_t em_len = 0;
    CM_TRY(crmf_pss_geometry(key, &k, &em_bits, &em_len));
    const size_t hlen = mhash.len;
    const size_t slen = alg->salt_len;
    CM_ENSURE(sig.len == k, CRMF_E_BAD_SIGNATURE);
    uint8_t buf[CRMF_MAX_RSA];
    size_t buf_len = sizeof(buf);
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, key, c->propq);
    const bool rsa_ok = pctx != NULL && EVP_PKEY_verify_recover_init(pctx) == 1 &&
                        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_NO_PADDING) == 1 &&
                        EVP_PKEY_verify_recover(pctx, buf, &buf_len, sig.p, sig.len) == 1;
    EVP_PKEY_CTX_free(pctx);
    cm_ossl_clear_errors();
    // A value >= n (not a signature at all) fails the raw operation: a bad signature.
    CM_ENSURE(rsa_ok && buf_len <= k, CRMF_E_BAD_SIGNATURE);
    // Left-pad to k octets, then EM is the last emLen of them (the first is 0 when emLen < k).
    uint8_t em_full[CRMF_MAX_RSA] = {0};
    memcpy(em_full + (k - buf_len), buf, buf_len);
    CM_ENSURE(em_len == k || em_full[0] == 0, CRMF_E_BAD_SIGNATURE);
    uint8_t *em = em_full + (k - em_len);
    CM_ENSURE(em_len >= hlen + slen + 2 && em[em_len - 1] == 0xbc, CRMF_E_BAD_SIGNATURE);
    const size_t db_len = em_len - hlen - 1;
    const uint8_t top_mask = (uint8_t)(0xffu >> (8 * em_len - em_bits));
    CM_ENSURE((em[0] & (uint8_t)~top_mask) == 0, CRMF_E_BAD_SIGNATURE);
    uint8_t *db = em;
    const cm_span h_seen = cm_span_make(em + db_len, hlen);
    CM_TRY(crmf_pss_mask(c, alg->hash, db, db_len, h_seen));
    db[0] &= top_mask;
    const size_t ps_len = db_len - slen - 1;
    uint8_t nonzero = 0;
    for (size_t i = 0; i < ps_len; i++) {
        nonzero |= db[i];
    }
    CM_ENSURE(nonzero == 0 && db[ps_len] == 0x01, CRMF_E_BAD_SIGNATURE);
    uint8_t h_want[CRMF_MAX_DIGEST];
    CM_TRY(crmf_pss_hash(c, alg->hash, h_want, mhash, cm_span_make(db + ps_len + 1, slen)));
    CM_ENSURE(CRYPTO_memcmp(h_want, h_seen.p, hlen) == 0, CRMF_E_BAD_SIGNATURE);
    return cm_result_make(CM_OK);
}

// crmf_pss_shake_sign makes EMSA-PSS-ENCODE(mhash) with a random salt (RFC 8017 §9.1.1) and
// applies |key|'s private RSA operation to it; the signature goes to |arena|.
static cm_result crmf_pss_shake_sign(crmf_crypto *c, cm_arena *arena, cm_span *out_sig,
                                     const crmf_sig_alg *alg, EVP_PKEY *key, cm_span mhash)
{
    size_t k = 0;
    size_t em_bits = 0;
    size_t em_len = 0;
    CM_TRY(crmf_pss_geometry(key, &k, &em_bits, &em_len));
    const size_t hlen = mhash.len;
    const size_t slen = alg->salt_len;
    CM_ENSURE(em_len >= hlen + slen + 2 && slen <= CRMF_MAX_DIGEST, CRMF_E_KEY_ALG_MISMATCH);
    uint8_t salt[CRMF_MAX_DIGEST];
    CM_TRY_OSSL(RAND_bytes(salt, (int)slen), CRMF_E_CRYPTO);
    uint8_t em_full[CRMF_MAX_RSA] = {0};
    uint8_t *em = em_full + (k - em_len);
    const size_t db_len = em_len - hlen - 1;
    uint8_t *h = em + db_len;
    CM_TRY(crmf_pss_hash(c, alg->hash, h, mhash, cm_span_make(salt, slen)));
    em[db_len - slen - 1] = 0x01;
    memcpy(em + db_len - slen, salt, slen);
    CM_TRY(crmf_pss_mask(c, alg->hash, em, db_len, cm_span_make(h, hlen)));
    em[0] &= (uint8_t)(0xffu >> (8 * em_len - em_bits));
    em[em_len - 1] = 0xbc;
    uint8_t *sig = cm_arena_alloc(arena, k);
    CM_ENSURE(sig != NULL, CM_E_NOMEM);
    size_t sig_len = k;
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, key, c->propq);
    const bool ok = pctx != NULL && EVP_PKEY_sign_init(pctx) == 1 &&
                    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_NO_PADDING) == 1 &&
                    EVP_PKEY_sign(pctx, sig, &sig_len, em_full, k) == 1;
    EVP_PKEY_CTX_free(pctx);
    if (!ok) {
        cm_ossl_clear_errors();
        CM_BAIL(CRMF_E_CRYPTO);
    }
    *out_sig = cm_span_make(sig, sig_len);
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// The generic paths

static bool crmf_is_eddsa(const crmf_sig_alg *alg)
{
    return alg->kind == CRMF_SIG_ED25519 || alg->kind == CRMF_SIG_ED448;
}

static bool crmf_is_pss_shake(const crmf_sig_alg *alg)
{
    return alg->kind == CRMF_SIG_RSA_PSS && crmf_hash_is_xof(alg->hash);
}

// crmf_pkey_setup prepares a sign or verify context for the digest of |alg|: the RSA padding
// (and the digest, whose DigestInfo PKCS#1 v1.5 encodes, and PSS's MGF1 and salt); ECDSA signs
// the digest as it is.
static bool crmf_pkey_setup(crmf_crypto *c, EVP_PKEY_CTX *pctx, const crmf_sig_alg *alg)
{
    if (alg->kind == CRMF_SIG_ECDSA) {
        return true;
    }
    if (EVP_PKEY_CTX_set_signature_md(pctx, c->md[alg->hash]) != 1) {
        return false;
    }
    if (alg->kind == CRMF_SIG_RSA_PKCS1) {
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    }
    return alg->salt_len <= 0x7fffffffu && c->md[alg->mgf1_hash] != NULL &&
           EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, c->md[alg->mgf1_hash]) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, (int)alg->salt_len) == 1;
}

// crmf_eddsa_verify verifies EdDSA over the joined parts (its API is one-shot).
static cm_result crmf_eddsa_verify(crmf_crypto *c, EVP_PKEY *key, const cm_span *parts, size_t n,
                                   cm_span sig)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        len += parts[i].len;
    }
    uint8_t *joined = NULL;
    const uint8_t *data = n == 1 ? parts[0].p : NULL;
    if (n != 1) {
        joined = OPENSSL_malloc(len > 0 ? len : 1);
        CM_ENSURE(joined != NULL, CM_E_NOMEM);
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            if (parts[i].len > 0) {
                memcpy(joined + at, parts[i].p, parts[i].len);
            }
            at += parts[i].len;
        }
        data = joined;
    }
    cm_result res = cm_result_make(CM_OK);
    if (EVP_DigestVerifyInit_ex(c->mdctx, NULL, NULL, c->libctx, c->propq, key, NULL) != 1) {
        res = cm_bail_note(CRMF_E_CRYPTO, __FILE__, __LINE__);
    } else if (EVP_DigestVerify(c->mdctx, sig.p, sig.len, data, len) != 1) {
        res = cm_bail_note(CRMF_E_BAD_SIGNATURE, __FILE__, __LINE__);
    }
    cm_ossl_clear_errors();
    (void)EVP_MD_CTX_reset(c->mdctx);
    OPENSSL_free(joined);
    return res;
}

cm_result crmf_crypto_verify_parts(crmf_crypto *c, const crmf_sig_alg *alg, EVP_PKEY *key,
                                   const cm_span *parts, size_t num_parts, cm_span sig)
{
    CM_ENSURE(num_parts <= CRMF_MAX_PARTS, CM_E_INVALID_ARG);
    CM_ENSURE(crmf_sig_alg_key_ok(alg, crmf_key_type_of(key)), CRMF_E_KEY_ALG_MISMATCH);
    CM_ENSURE(crmf_is_eddsa(alg) == (alg->hash == CRMF_HASH_NONE), CM_E_INVALID_ARG);
    if (crmf_is_eddsa(alg)) {
        return crmf_eddsa_verify(c, key, parts, num_parts, sig);
    }
    uint8_t digest[CRMF_MAX_DIGEST];
    size_t dlen = 0;
    CM_TRY(crmf_digest_parts(c, alg->hash, parts, num_parts, digest, &dlen));
    if (crmf_is_pss_shake(alg)) {
        return crmf_pss_shake_verify(c, alg, key, cm_span_make(digest, dlen), sig);
    }
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, key, c->propq);
    cm_result res = cm_result_make(CM_OK);
    if (pctx == NULL || EVP_PKEY_verify_init(pctx) != 1 || !crmf_pkey_setup(c, pctx, alg)) {
        res = cm_bail_note(CRMF_E_CRYPTO, __FILE__, __LINE__);
    } else if (EVP_PKEY_verify(pctx, sig.p, sig.len, digest, dlen) != 1) {
        // 0: wrong signature; negative: e.g. a malformed ECDSA-Sig-Value. Both fail.
        res = cm_bail_note(CRMF_E_BAD_SIGNATURE, __FILE__, __LINE__);
    }
    EVP_PKEY_CTX_free(pctx);
    cm_ossl_clear_errors();
    return res;
}

cm_result crmf_crypto_verify(crmf_crypto *c, const crmf_sig_alg *alg, EVP_PKEY *key, cm_span data,
                             cm_span sig)
{
    return crmf_crypto_verify_parts(c, alg, key, &data, 1, sig);
}

// crmf_eddsa_sign signs |data| with EdDSA into |arena| memory.
static cm_result crmf_eddsa_sign(crmf_crypto *c, cm_arena *arena, cm_span *out_sig, EVP_PKEY *key,
                                 cm_span data)
{
    cm_result res = cm_result_make(CM_OK);
    size_t len = 0;
    uint8_t *buf = NULL;
    if (EVP_DigestSignInit_ex(c->mdctx, NULL, NULL, c->libctx, c->propq, key, NULL) != 1 ||
        EVP_DigestSign(c->mdctx, NULL, &len, data.p, data.len) != 1) {
        res = cm_bail_note(CRMF_E_CRYPTO, __FILE__, __LINE__);
    } else if ((buf = cm_arena_alloc(arena, len)) == NULL) {
        res = cm_bail_note(CM_E_NOMEM, __FILE__, __LINE__);
    } else if (EVP_DigestSign(c->mdctx, buf, &len, data.p, data.len) != 1) {
        res = cm_bail_note(CRMF_E_CRYPTO, __FILE__, __LINE__);
    } else {
        *out_sig = cm_span_make(buf, len);
    }
    cm_ossl_clear_errors();
    (void)EVP_MD_CTX_reset(c->mdctx);
    return res;
}

cm_result crmf_crypto_sign(crmf_crypto *c, cm_arena *arena, cm_span *out_sig,
                           const crmf_sig_alg *alg, EVP_PKEY *key, cm_span data)
{
    CM_ENSURE(crmf_sig_alg_key_ok(alg, crmf_key_type_of(key)), CRMF_E_KEY_ALG_MISMATCH);
    if (crmf_is_eddsa(alg)) {
        return crmf_eddsa_sign(c, arena, out_sig, key, data);
    }
    uint8_t digest[CRMF_MAX_DIGEST];
    size_t dlen = 0;
    CM_TRY(crmf_digest_parts(c, alg->hash, &data, 1, digest, &dlen));
    if (crmf_is_pss_shake(alg)) {
        return crmf_pss_shake_sign(c, arena, out_sig, alg, key, cm_span_make(digest, dlen));
    }
    cm_result res = cm_result_make(CM_OK);
    size_t len = 0;
    uint8_t *buf = NULL;
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(c->libctx, key, c->propq);
    if (pctx == NULL || EVP_PKEY_sign_init(pctx) != 1 || !crmf_pkey_setup(c, pctx, alg) ||
        EVP_PKEY_sign(pctx, NULL, &len, digest, dlen) != 1) {
        res = cm_bail_note(CRMF_E_CRYPTO, __FILE__, __LINE__);
    } else if ((buf = cm_arena_alloc(arena, len)) == NULL) {
        res = cm_bail_note(CM_E_NOMEM, __FILE__, __LINE__);
    } else if (EVP_PKEY_sign(pctx, buf, &len, digest, dlen) != 1) {
        res = cm_bail_note(CRMF_E_CRYPTO, __FILE__, __LINE__);
    } else {
        *out_sig = cm_span_make(buf, len);
    }
    EVP_PKEY_CTX_free(pctx);
    cm_ossl_clear_errors();
    return res;
}
