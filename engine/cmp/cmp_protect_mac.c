// engine/cmp MAC protection: reading a MAC protectionAlg (PBM and PBMAC1 through
// cmp_protect_kdf.c; the key-based MACs of RFC 9481 §6.2 here), the shared secret's kind,
// the MAC over ProtectedPart (HMAC, AES-GMAC, KMAC), its check, and the protectionAlg of a
// response: the request's, byte for byte, except AES-GMAC's fresh nonce.
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "engine/cmp/cmp_protect.h"
#include "engine/cmp/cmp_protect_internal.h"
#include "engine/der/der_oid.h"

#define PROT_GMAC_DEFAULT_TAG 12u // GMACParameters' length DEFAULT (RFC 9044 §3)
#define PROT_GMAC_FULL_TAG    16u

// prot_gmac_index and prot_kmac_index give a row's template slot (-1: not one).
static int prot_gmac_index(crmf_alg_id id)
{
    const int i = (int)id - (int)CRMF_ALG_AES128_GMAC;
    return i >= 0 && i < (int)CMP_PROT_NUM_GMAC ? i : -1;
}

static int prot_kmac_index(crmf_alg_id id)
{
    const int i = (int)id - (int)CRMF_ALG_KMAC128;
    return i >= 0 && i < (int)CMP_PROT_NUM_KMAC ? i : -1;
}

// GMACParameters ::= SEQUENCE {                            -- RFC 9044 §3
//     nonce        OCTET STRING, -- recommended size is 12 octets
//     length       MACLength DEFAULT 12 }
// MACLength ::= INTEGER (12 | 13 | 14 | 15 | 16)
// The nonce must be 12 octets (GCM's native IV; RFC 9481 and RFC 9044 recommend it, and
// another length would make GCM hash it into a counter block).
static CM_RESULT prot_parse_gmac(cmp_mac_key *k, const crmf_alg *a, der_reader *params,
                                 bool has_params, cm_why *why)
{
    CM_ENSURE(has_params, CMP_E_PROT_PARAMS);
    der_reader seq;
    CMP_PROT_DER(der_enter(params, DER_TAG_SEQUENCE, &seq));
    CMP_PROT_DER(der_expect_end(params));
    cm_span nonce;
    CMP_PROT_DER(der_get_octets(&seq, &nonce));
    uint64_t len = PROT_GMAC_DEFAULT_TAG;
    if (!der_reader_empty(&seq)) {
        CMP_PROT_DER(der_get_u64(&seq, &len));
        // DER never encodes the DEFAULT.
        CM_ENSURE(len != PROT_GMAC_DEFAULT_TAG, CMP_E_PROT_PARAMS);
    }
    CMP_PROT_DER(der_expect_end(&seq));
    if (nonce.len != CMP_PROTECT_GMAC_NONCE_LEN) {
        cm_why_set(why, "the %s nonce is %zu octets; it must be %u", a->asn1_name, nonce.len,
                   CMP_PROTECT_GMAC_NONCE_LEN);
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    if (len < PROT_GMAC_DEFAULT_TAG || len > PROT_GMAC_FULL_TAG) {
        cm_why_set(why, "the %s length %llu is outside 12..16 octets", a->asn1_name,
                   (unsigned long long)len);
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    memcpy(k->nonce, nonce.p, nonce.len);
    k->tag_len = (size_t)len;
    return cm_result_make(CM_OK);
}

// prot_parse_key_mac reads the parameters of a key-based MAC row |a|: HMAC (NULL or absent,
// RFC 4231 §3.1), AES-GMAC (GMACParameters), KMAC (absent: RFC 8702 §3.4 fixes the output
// length to 256/512 bits and the customization string to empty).
static CM_RESULT prot_parse_key_mac(const cmp_protect_ctx *ctx, cmp_mac_key *k, const crmf_alg *a,
                                    der_reader *params, bool has_params, cm_why *why)
{
    CM_TRY(cmp_prot_allowed(ctx, a, "MAC algorithm", why));
    const int g = prot_gmac_index(a->id);
    const int km = prot_kmac_index(a->id);
    cmp_hash h = CMP_HASH_SHA256;
    const bool hmac = g < 0 && km < 0;
    const bool available = hmac ? cmp_prot_hash_of(a->hash, &h) && ctx->hmac_tmpl[h] != NULL
                                : (g >= 0 ? ctx->gmac_tmpl[g] != NULL : ctx->kmac_tmpl[km] != NULL);
    if (!available) {
        cm_why_set(why, "MAC algorithm %s is not available in this OpenSSL", a->asn1_name);
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    if (g >= 0) {
        CM_TRY(prot_parse_gmac(k, a, params, has_params, why));
    } else if (km >= 0) {
        if (has_params) {
            cm_why_set(why,
                       "%s takes no parameters (RFC 8702 section 3.4: a %u-bit output and an "
                       "empty customization string)",
                       a->asn1_name, a->size * 8);
            CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
        }
        k->tag_len = a->size;
    } else {
        if (has_params) {
            CMP_PROT_DER(der_get_null(params));
            CMP_PROT_DER(der_expect_end(params));
        }
        k->mac = h;
        k->tag_len = a->size;
    }
    k->mac_alg = a->id;
    k->kind = CMP_PROT_KEY_MAC;
    return cm_result_make(CM_OK);
}

// prot_parse_mac_alg fills |k|'s parameters from the protectionAlg |alg| and keeps |alg| for
// the response, or fails; no key yet.
static CM_RESULT prot_parse_mac_alg(const cmp_protect_ctx *ctx, cmp_mac_key *k, cm_span alg,
                                    cm_why *why)
{
    der_reader r;
    der_reader_init(&r, alg);
    cm_span oid;
    der_reader params;
    bool has_params = false;
    CM_TRY(cmp_prot_get_algid(&r, &oid, &params, &has_params));
    CMP_PROT_DER(der_expect_end(&r));
    CM_ENSURE(alg.len <= sizeof(k->alg), CMP_E_PROT_PARAMS);
    const crmf_alg *a = crmf_alg_by_oid(oid);
    if (der_oid_is(oid, DER_OID_DH_BASED_MAC)) {
        cm_why_set(why, "DHBasedMac protection is not supported");
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    if (a == NULL || (a->kind != CRMF_ALG_KIND_PASSWORD_MAC && a->kind != CRMF_ALG_KIND_KEY_MAC)) {
        if (why != NULL) {
            char name[96];
            cm_why_set(why, "the message is protected with %s, not with a MAC",
                       a != NULL ? a->asn1_name : crmf_oid_text(name, sizeof(name), oid));
        }
        CM_BAIL(CMP_E_PROT_WRONG_KIND);
    }
    if (a->kind == CRMF_ALG_KIND_KEY_MAC) {
        CM_TRY(prot_parse_key_mac(ctx, k, a, &params, has_params, why));
    } else {
        CM_TRY(cmp_prot_allowed(ctx, a, "MAC algorithm", why));
        CM_ENSURE(has_params, CMP_E_PROT_PARAMS);
        CM_TRY(a->id == CRMF_ALG_PBM ? cmp_prot_parse_pbm(ctx, k, &params, why)
                                     : cmp_prot_parse_pbmac1(ctx, k, &params, why));
        k->mac_alg = cmp_prot_hmac_row(k->mac, false)->id;
        k->tag_len = cmp_prot_hash_len(k->mac);
    }
    memcpy(k->alg, alg.p, alg.len);
    k->alg_len = alg.len;
    return cm_result_make(CM_OK);
}

// prot_check_secret applies the secret-kind rule (cmp_secret_kind) and a key's length.
static CM_RESULT prot_check_secret(const cmp_mac_key *k, cm_span secret, cmp_secret_kind kind,
                                   cm_why *why)
{
    const crmf_alg *a = crmf_alg_get(k->mac_alg);
    if (k->kind != CMP_PROT_KEY_MAC) {
        if (kind == CMP_SECRET_KEY) {
            cm_why_set(why,
                       "%s is a password-based MAC and the secret for this senderKID is a key "
                       "(key.REF): protect with a key-based MAC (HMAC, AES-GMAC, KMAC)",
                       k->kind == CMP_PROT_PBM ? "PasswordBasedMac" : "PBMAC1");
            CM_BAIL(CMP_E_PROT_SECRET_KIND);
        }
        return cm_result_make(CM_OK);
    }
    if (kind != CMP_SECRET_KEY) {
        cm_why_set(why,
                   "%s needs a key (key.REF) and the secret for this senderKID is a password "
                   "(secret.REF): protect with PBM or PBMAC1",
                   a->asn1_name);
        CM_BAIL(CMP_E_PROT_SECRET_KIND);
    }
    const bool gmac = prot_gmac_index(k->mac_alg) >= 0;
    if (gmac ? secret.len != a->size
             : secret.len < CMP_PROTECT_MIN_KEY_LEN || secret.len > CMP_PROTECT_MAX_KEY_LEN) {
        if (gmac) {
            cm_why_set(why, "%s needs a %u-octet key; the key for this senderKID has %zu",
                       a->asn1_name, a->size, secret.len);
        } else {
            cm_why_set(why, "%s needs a key of %u..%u octets; the key for this senderKID has %zu",
                       a->asn1_name, CMP_PROTECT_MIN_KEY_LEN, CMP_PROTECT_MAX_KEY_LEN, secret.len);
        }
        CM_BAIL(CMP_E_PROT_SECRET_LEN);
    }
    return cm_result_make(CM_OK);
}

// prot_make_key checks the secret against |k|'s parameters and makes the key.
static CM_RESULT prot_make_key(const cmp_protect_ctx *ctx, cmp_mac_key *k, cm_span secret,
                               cmp_secret_kind kind, cm_why *why)
{
    cm_result r = prot_check_secret(k, secret, kind, why);
    if (cm_ok(r) && k->kind == CMP_PROT_KEY_MAC) {
        memcpy(k->key, secret.p, secret.len);
        k->key_len = secret.len;
    } else if (cm_ok(r)) {
        r = cmp_prot_derive(ctx, k, secret);
    }
    if (!cm_ok(r)) {
        cmp_mac_key_cleanse(k);
    }
    return r;
}

void cmp_mac_key_cleanse(cmp_mac_key *key)
{
    OPENSSL_cleanse(key, sizeof(*key));
}

CM_RESULT cmp_mac_key_derive(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span alg,
                             cm_span secret, cmp_secret_kind kind)
{
    cmp_mac_key_cleanse(out);
    cm_result r = prot_parse_mac_alg(ctx, out, alg, NULL); // every bound is checked here
    if (!cm_ok(r)) {
        cmp_mac_key_cleanse(out);
        return r;
    }
    return prot_make_key(ctx, out, secret, kind, NULL);
}

bool cmp_mac_key_matches(const cmp_protect_ctx *ctx, const cmp_mac_key *key, cm_span alg)
{
    cmp_mac_key tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (key->kind == 0 || !cm_ok(prot_parse_mac_alg(ctx, &tmp, alg, NULL))) {
        return false;
    }
    const bool same =
        tmp.kind == key->kind && tmp.mac_alg == key->mac_alg && tmp.tag_len == key->tag_len &&
        tmp.owf == key->owf && tmp.mac == key->mac && tmp.iterations == key->iterations &&
        (tmp.kind == CMP_PROT_KEY_MAC || tmp.key_len == key->key_len) &&
        tmp.salt_len == key->salt_len && memcmp(tmp.salt, key->salt, tmp.salt_len) == 0;
    cmp_mac_key_cleanse(&tmp);
    return same;
}

CM_RESULT cmp_mac_key_renew_nonce(cmp_mac_key *key)
{
    if (key->kind == CMP_PROT_KEY_MAC && prot_gmac_index(key->mac_alg) >= 0) {
        CM_TRY_OSSL(RAND_bytes(key->nonce, (int)sizeof(key->nonce)), CM_E_CRYPTO);
    }
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_mac_key_new_keyed(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                                crmf_alg_id mac)
{
    cmp_mac_key_cleanse(out);
    const crmf_alg *a = crmf_alg_get(mac);
    CM_ENSURE(a != NULL && a->kind == CRMF_ALG_KIND_KEY_MAC, CMP_E_PROT_ALG_UNSUPPORTED);
    // Parse an identifier of our own making, so a fresh key passes every check a received one
    // does (policy, availability), then forget it: the fields encode the response.
    uint8_t buf[64];
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_oid(&b, a->oid);
    if (prot_gmac_index(mac) >= 0) {
        uint8_t nonce[CMP_PROTECT_GMAC_NONCE_LEN] = {0};
        der_mark p;
        der_open(&b, &p, DER_TAG_SEQUENCE);
        der_put_octets(&b, cm_span_make(nonce, sizeof(nonce)));
        der_put_u64(&b, PROT_GMAC_FULL_TAG);
        der_close(&b, &p);
    }
    der_close(&b, &m);
    cm_span alg;
    CM_TRY(der_builder_finish(&b, &alg));
    CM_TRY(cmp_mac_key_derive(ctx, out, alg, secret, CMP_SECRET_KEY));
    out->alg_len = 0;
    cm_result r = cmp_mac_key_renew_nonce(out);
    if (!cm_ok(r)) {
        cmp_mac_key_cleanse(out);
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// protectionAlg of the next message

void cmp_mac_key_put_alg(der_builder *b, const cmp_mac_key *key)
{
    if (key->kind != CMP_PROT_PBM && key->kind != CMP_PROT_PBMAC1 &&
        key->kind != CMP_PROT_KEY_MAC) {
        der_builder_fail(b, CMP_E_PROT_KEY_STATE);
        return;
    }
    const bool gmac = key->kind == CMP_PROT_KEY_MAC && prot_gmac_index(key->mac_alg) >= 0;
    if (key->alg_len > 0 && !gmac) {
        der_put_raw(b, cm_span_make(key->alg, key->alg_len));
        return;
    }
    if (key->kind != CMP_PROT_KEY_MAC) {
        cmp_prot_put_pbm_alg(b, key);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, crmf_alg_get(key->mac_alg)->oid);
    if (gmac) {
        der_mark p;
        der_open(b, &p, DER_TAG_SEQUENCE);
        der_put_octets(b, cm_span_make(key->nonce, sizeof(key->nonce)));
        if (key->tag_len != PROT_GMAC_DEFAULT_TAG) {
            der_put_u64(b, key->tag_len);
        }
        der_close(b, &p);
    }
    der_close(b, &m);
}

// ---------------------------------------------------------------------------------------------
// MAC over ProtectedPart

// prot_mac_begin duplicates the template of |key|'s MAC and keys it (AES-GMAC: with the nonce
// as IV). NULL on failure.
static EVP_MAC_CTX *prot_mac_begin(const cmp_protect_ctx *ctx, const cmp_mac_key *key)
{
    const int g = prot_gmac_index(key->mac_alg);
    const int km = prot_kmac_index(key->mac_alg);
    const EVP_MAC_CTX *tmpl = g >= 0    ? ctx->gmac_tmpl[g]
                              : km >= 0 ? ctx->kmac_tmpl[km]
                                        : ctx->hmac_tmpl[key->mac];
    EVP_MAC_CTX *m = tmpl != NULL ? EVP_MAC_CTX_dup(tmpl) : NULL;
    if (m == NULL) {
        return NULL;
    }
    OSSL_PARAM iv[2];
    uint8_t nonce[CMP_PROTECT_GMAC_NONCE_LEN];
    memcpy(nonce, key->nonce, sizeof(nonce));
    iv[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_IV, nonce, sizeof(nonce));
    iv[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(m, key->key, key->key_len, g >= 0 ? iv : NULL) != 1) {
        EVP_MAC_CTX_free(m);
        return NULL;
    }
    return m;
}

CM_RESULT cmp_mac_compute(const cmp_protect_ctx *ctx, uint8_t *out, size_t cap, size_t *out_len,
                          const cmp_mac_key *key, cm_span protected_content)
{
    CM_ENSURE(cmp_prot_kind_is_mac(key->kind) && crmf_alg_get(key->mac_alg) != NULL,
              CMP_E_PROT_KEY_STATE);
    CM_ENSURE(cap >= key->tag_len && key->tag_len > 0, CM_E_BUFFER_TOO_SMALL);
    uint8_t hdr[6];
    size_t hdr_len = 0;
    CM_TRY(cmp_protected_part_header(hdr, sizeof(hdr), &hdr_len, protected_content.len));
    EVP_MAC_CTX *m = prot_mac_begin(ctx, key);
    uint8_t full[CMP_PROTECT_MAX_MAC_LEN];
    size_t n = 0;
    const bool ok = m != NULL && EVP_MAC_update(m, hdr, hdr_len) == 1 &&
                    EVP_MAC_update(m, protected_content.p, protected_content.len) == 1 &&
                    EVP_MAC_final(m, full, &n, sizeof(full)) == 1 && n >= key->tag_len;
    EVP_MAC_CTX_free(m);
    if (!ok) {
        OPENSSL_cleanse(full, sizeof(full));
        cm_ossl_clear_errors();
        CM_BAIL(CM_E_CRYPTO);
    }
    // AES-GMAC's MACLength keeps the leftmost octets of the tag (RFC 9044 §3, SP 800-38D §5.2).
    memcpy(out, full, key->tag_len);
    OPENSSL_cleanse(full, sizeof(full));
    *out_len = key->tag_len;
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_mac_verify(const cmp_protect_ctx *ctx, const cmp_mac_key *key,
                         cm_span protected_content, cm_span protection, uint8_t unused_bits)
{
    CM_ENSURE(unused_bits == 0, CMP_E_PROT_BITS);
    uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
    size_t mac_len = 0;
    CM_TRY(cmp_mac_compute(ctx, mac, sizeof(mac), &mac_len, key, protected_content));
    // The length is public (it follows from the algorithm); the bytes are compared in
    // constant time.
    const bool same = protection.len == mac_len && CRYPTO_memcmp(mac, protection.p, mac_len) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    CM_ENSURE(same, CMP_E_PROT_MAC_MISMATCH);
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_protect_verify_mac(const cmp_protect_ctx *ctx, cmp_mac_key *out_key, cm_span alg,
                                 cm_span secret, cmp_secret_kind kind, cm_span protected_content,
                                 cm_span protection, uint8_t unused_bits, cm_why *why)
{
    cmp_mac_key_cleanse(out_key);
    CM_ENSURE(unused_bits == 0, CMP_E_PROT_BITS);
    cm_result r = prot_parse_mac_alg(ctx, out_key, alg, why); // every bound is checked here
    if (cm_ok(r)) {
        r = prot_make_key(ctx, out_key, secret, kind, why);
    }
    if (cm_ok(r) && protection.len != out_key->tag_len) {
        cm_why_set(why, "the MAC value is %zu octets; %s gives %zu", protection.len,
                   crmf_alg_get(out_key->mac_alg)->asn1_name, out_key->tag_len);
        r = cm_result_make(CMP_E_PROT_MAC_MISMATCH);
    }
    if (cm_ok(r)) {
        r = cmp_mac_verify(ctx, out_key, protected_content, protection, unused_bits);
        if (r.code == CMP_E_PROT_MAC_MISMATCH) {
            cm_why_set(why, "the MAC does not verify: wrong shared secret for this senderKID?");
        }
    }
    if (cm_ok(r)) {
        // The response must not reuse the request's GMAC nonce with the same key.
        r = cmp_mac_key_renew_nonce(out_key);
    }
    if (!cm_ok(r)) {
        cmp_mac_key_cleanse(out_key);
    }
    return r;
}

CM_RESULT cmp_protect_put_mac(const cmp_protect_ctx *ctx, der_builder *b, const cmp_mac_key *key,
                              cm_span protected_content)
{
    uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
    size_t mac_len = 0;
    cm_result r = cmp_mac_compute(ctx, mac, sizeof(mac), &mac_len, key, protected_content);
    if (!cm_ok(r)) {
        der_builder_fail(b, r.code);
        return r;
    }
    cmp_prot_put_protection(b, cm_span_make(mac, mac_len));
    OPENSSL_cleanse(mac, sizeof(mac));
    return cm_result_make(der_builder_ok(b) ? CM_OK : b->err);
}
