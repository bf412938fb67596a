// engine/crmf: public keys from SubjectPublicKeyInfo without the OpenSSL decoder framework,
// and signature verification/production through EVP_DigestVerify/EVP_DigestSign.
//
// Why not d2i_PUBKEY: on OpenSSL 3.0 it runs the generic decoder chain, which costs about two
// ECDSA P-256 verifications per key (DESIGN.md). EVP_PKEY_fromdata on a context kept per key
// type costs a fraction of that (bench/crmf_bench measures both).
#include <stdint.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"

// The largest RSA modulus and public exponent we build keys for (8192-bit moduli; exponents of
// up to 64 octets are far beyond anything real, RFC 8017 only needs e odd and 3 <= e < n).
#define CRMF_RSA_MAX_N_LEN 1024u
#define CRMF_RSA_MAX_E_LEN 64u

static const char *const k_crmf_key_names[CRMF_KEY_TYPE_COUNT] = {
    [CRMF_KEY_RSA] = "RSA",         [CRMF_KEY_RSA_PSS] = "RSA-PSS", [CRMF_KEY_EC] = "EC",
    [CRMF_KEY_ED25519] = "ED25519", [CRMF_KEY_ED448] = "ED448",     [CRMF_KEY_X25519] = "X25519",
    [CRMF_KEY_X448] = "X448",
};

// OSSL_PARAM takes non-const buffers even for input; the bytes are only read.
static void *crmf_unconst(const void *p)
{
    void *q;
    memcpy(&q, &p, sizeof(q));
    return q;
}

void crmf_crypto_set_policies(crmf_crypto *c, const crmf_alg_policy *prot,
                              const crmf_alg_policy *pop)
{
    if (prot != NULL) {
        c->prot_policy = *prot;
    } else {
        crmf_alg_policy_default(&c->prot_policy, false);
    }
    if (pop != NULL) {
        c->pop_policy = *pop;
    } else {
        crmf_alg_policy_default(&c->pop_policy, false);
    }
}

void crmf_crypto_cleanup(crmf_crypto *c)
{
    for (size_t i = 0; i < CRMF_HASH_COUNT; i++) {
        EVP_MD_free(c->md[i]);
        c->md[i] = NULL;
    }
    for (size_t i = 0; i < CRMF_KEY_TYPE_COUNT; i++) {
        EVP_PKEY_CTX_free(c->fromdata[i]);
        c->fromdata[i] = NULL;
    }
    for (size_t i = 0; i < CRMF_EC_CURVE_COUNT; i++) {
        EVP_PKEY_free(c->ec_params[i]);
        c->ec_params[i] = NULL;
    }
    EVP_MD_CTX_free(c->mdctx);
    c->mdctx = NULL;
}

cm_result crmf_crypto_init(crmf_crypto *c, OSSL_LIB_CTX *libctx, const char *propq)
{
    memset(c, 0, sizeof(*c));
    c->libctx = libctx;
    c->propq = propq;
    crmf_alg_policy_default(&c->prot_policy, false);
    crmf_alg_policy_default(&c->pop_policy, false);
    for (int h = CRMF_HASH_SHA224; h < CRMF_HASH_COUNT; h++) {
        c->md[h] = EVP_MD_fetch(libctx, crmf_hash_name((crmf_hash)h), propq);
        // SHA-2 is required; a provider without SHA-3, SHAKE or SHA-1 leaves those slots NULL
        // and their algorithms are then refused as unsupported.
        if (c->md[h] == NULL && h <= CRMF_HASH_SHA512) {
            crmf_crypto_cleanup(c);
            cm_ossl_clear_errors();
            CM_BAIL(CRMF_E_CRYPTO);
        }
    }
    // A provider without some key type (a FIPS provider without Ed448, say) leaves that slot
    // NULL: keys of that type are then CRMF_E_KEY_UNSUPPORTED rather than a start-up failure.
    for (int t = CRMF_KEY_RSA; t < CRMF_KEY_TYPE_COUNT; t++) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(libctx, k_crmf_key_names[t], propq);
        if (ctx != NULL && EVP_PKEY_fromdata_init(ctx) != 1) {
            EVP_PKEY_CTX_free(ctx);
            ctx = NULL;
        }
        c->fromdata[t] = ctx;
    }
    // Domain parameters per curve, built once (see crmf_crypto in crmf.h for why).
    for (uint32_t i = 0; i < CRMF_EC_CURVE_COUNT && c->fromdata[CRMF_KEY_EC] != NULL; i++) {
        OSSL_PARAM params[2];
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                     crmf_unconst(crmf_ec_curve_name(i)), 0);
        params[1] = OSSL_PARAM_construct_end();
        if (EVP_PKEY_fromdata(c->fromdata[CRMF_KEY_EC], &c->ec_params[i], EVP_PKEY_KEY_PARAMETERS,
                              params) != 1) {
            c->ec_params[i] = NULL;
        }
    }
    cm_ossl_clear_errors();
    c->mdctx = EVP_MD_CTX_new();
    if (c->mdctx == NULL || c->fromdata[CRMF_KEY_EC] == NULL || c->fromdata[CRMF_KEY_RSA] == NULL) {
        crmf_crypto_cleanup(c);
        CM_BAIL(CRMF_E_CRYPTO);
    }
    return cm_result_make(CM_OK);
}

// crmf_uint_le reads a positive INTEGER from |r| and writes its magnitude little-endian (the
// native order OSSL_PARAM BIGNUM data use on the hosts we build for) into |buf|.
static cm_result crmf_uint_le(der_reader *r, uint8_t *buf, size_t cap, size_t *out_len)
{
    cm_span v;
    CM_TRY(der_get_int_span(r, &v));
    // Negative or zero values are not RSA parameters.
    CM_ENSURE((v.p[0] & 0x80u) == 0, CRMF_E_BAD_SPKI);
    if (v.p[0] == 0) {
        v.p++;
        v.len--;
    }
    CM_ENSURE(v.len > 0, CRMF_E_BAD_SPKI);
    CM_ENSURE(v.len <= cap, CRMF_E_KEY_UNSUPPORTED);
    for (size_t i = 0; i < v.len; i++) {
        buf[i] = v.p[v.len - 1 - i];
    }
    *out_len = v.len;
    return cm_result_make(CM_OK);
}

// crmf_rsa_public_key reads RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent
// INTEGER } (RFC 8017 A.1.1) into little-endian magnitudes. Any flaw is CRMF_E_BAD_SPKI (the
// key is the peer's), except a modulus over CRMF_RSA_MAX_N_LEN (CRMF_E_KEY_UNSUPPORTED).
static cm_result crmf_rsa_public_key(cm_span key, uint8_t *n_le, size_t *out_n_len, uint8_t *e_le,
                                     size_t *out_e_len)
{
    der_reader r;
    der_reader seq;
    der_reader_init(&r, key);
    CM_ENSURE(cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) && der_reader_empty(&r),
              CRMF_E_BAD_SPKI);
    cm_result res = crmf_uint_le(&seq, n_le, CRMF_RSA_MAX_N_LEN, out_n_len);
    if (cm_ok(res)) {
        res = crmf_uint_le(&seq, e_le, CRMF_RSA_MAX_E_LEN, out_e_len);
    }
    if (res.code == CRMF_E_KEY_UNSUPPORTED) {
        return res;
    }
    CM_ENSURE(cm_ok(res) && der_reader_empty(&seq), CRMF_E_BAD_SPKI);
    // RFC 8017 §3.1: n is a product of odd primes, e is odd.
    CM_ENSURE((n_le[0] & 1u) == 1u && (e_le[0] & 1u) == 1u, CRMF_E_BAD_SPKI);
    return cm_result_make(CM_OK);
}

// crmf_ec_key copies the curve's parameters-only key and sets the encoded point, which OpenSSL
// decodes and checks to be on the curve.
static cm_result crmf_ec_key(crmf_crypto *c, EVP_PKEY **out, const crmf_spki *spki)
{
    CM_ENSURE(spki->ec_group != NULL && spki->ec_curve < CRMF_EC_CURVE_COUNT &&
                  c->ec_params[spki->ec_curve] != NULL,
              CRMF_E_KEY_UNSUPPORTED);
    EVP_PKEY *pkey = EVP_PKEY_dup(c->ec_params[spki->ec_curve]);
    if (pkey == NULL) {
        cm_ossl_clear_errors();
        CM_BAIL(CRMF_E_CRYPTO);
    }
    if (EVP_PKEY_set1_encoded_public_key(pkey, spki->key.p, spki->key.len) != 1) {
        EVP_PKEY_free(pkey);
        cm_ossl_clear_errors();
        CM_BAIL(CRMF_E_BAD_SPKI);
    }
    *out = pkey;
    return cm_result_make(CM_OK);
}

cm_result crmf_crypto_key_from_spki(crmf_crypto *c, EVP_PKEY **out, const crmf_spki *spki)
{
    *out = NULL;
    CM_ENSURE(spki->type > CRMF_KEY_UNKNOWN && spki->type < CRMF_KEY_TYPE_COUNT,
              CRMF_E_KEY_UNSUPPORTED);
    CM_ENSURE(spki->key.len > 0, CRMF_E_KEY_UNSUPPORTED);
    EVP_PKEY_CTX *ctx = c->fromdata[spki->type];
    CM_ENSURE(ctx != NULL, CRMF_E_KEY_UNSUPPORTED);

    if (spki->type == CRMF_KEY_EC) {
        return crmf_ec_key(c, out, spki);
    }
    OSSL_PARAM params[3];
    uint8_t n_le[CRMF_RSA_MAX_N_LEN] = {0};
    uint8_t e_le[CRMF_RSA_MAX_E_LEN] = {0};
    switch (spki->type) {
    case CRMF_KEY_RSA:
    case CRMF_KEY_RSA_PSS: {
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 A.1.1)
        size_t n_len = 0;
        size_t e_len = 0;
        CM_TRY(crmf_rsa_public_key(spki->key, n_le, &n_len, e_le, &e_len));
        params[0] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_RSA_N, n_le, n_len);
        params[1] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_RSA_E, e_le, e_len);
        params[2] = OSSL_PARAM_construct_end();
        break;
    }
    default: // Ed25519, Ed448, X25519, X448: the raw key (RFC 8410 §4)
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                      crmf_unconst(spki->key.p), spki->key.len);
        params[1] = OSSL_PARAM_construct_end();
        break;
    }
    EVP_PKEY *pkey = NULL;
    // The peer chose the bytes: a failure here (a point off the curve, say) is malformed input.
    CM_TRY_OSSL(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), CRMF_E_BAD_SPKI);
    *out = pkey;
    return cm_result_make(CM_OK);
}

crmf_key_type crmf_key_type_of(const EVP_PKEY *key)
{
    for (int t = CRMF_KEY_RSA; t < CRMF_KEY_TYPE_COUNT; t++) {
        if (EVP_PKEY_is_a(key, k_crmf_key_names[t])) {
            return (crmf_key_type)t;
        }
    }
    return CRMF_KEY_UNKNOWN;
}
