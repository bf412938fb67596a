// engine/cmp password-based MACs: the parameters of PasswordBasedMac (RFC 4210 §5.1.3.1,
// RFC 9481 §6.1.1) and PBMAC1 (RFC 8018 §7.1, RFC 9481 §6.1.3), checked against the policy and
// the bounds before any work, and the key derivations (the PBM OWF iteration, PBKDF2).
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "engine/cmp/cmp_protect.h"
#include "engine/cmp/cmp_protect_internal.h"
#include "engine/der/der_oid.h"

// prot_iter_bounds names the limits a MAC's iteration count is checked against, as the
// configuration calls them (engine/config: min_pbm_iterations ...), for reasons.
typedef struct prot_iter_bounds {
    const char *what;    // "PBM", "PBMAC1"
    uint64_t lo, hi;     // the limits
    const char *lo_name; // the setting for |lo|, or NULL when it is a fixed minimum
    const char *hi_name; // the setting for |hi|
} prot_iter_bounds;

// prot_get_iterations reads iterationCount and checks it against the bounds. A negative or
// oversized INTEGER is out of range too (CMP_E_PROT_ITERATIONS), not a format error.
static CM_RESULT prot_get_iterations(der_reader *r, const prot_iter_bounds *b, uint64_t *out,
                                     cm_why *why)
{
    cm_span body;
    CMP_PROT_DER(der_get_int_span(r, &body));
    uint64_t v = 0;
    if ((body.p[0] & 0x80u) != 0 || !cm_ok(der_parse_u64(body, &v))) {
        cm_why_set(why, "%s iteration count is negative or too large", b->what);
        CM_BAIL(CMP_E_PROT_ITERATIONS);
    }
    if (v > b->hi) {
        cm_why_set(why, "%s iteration count %llu is above %s (%llu)", b->what,
                   (unsigned long long)v, b->hi_name, (unsigned long long)b->hi);
        CM_BAIL(CMP_E_PROT_ITERATIONS);
    }
    if (v < b->lo) {
        cm_why_set(why, "%s iteration count %llu is below %s (%llu)", b->what,
                   (unsigned long long)v, b->lo_name != NULL ? b->lo_name : "the minimum",
                   (unsigned long long)b->lo);
        CM_BAIL(CMP_E_PROT_ITERATIONS);
    }
    *out = v;
    return cm_result_make(CM_OK);
}

// prot_check_salt checks a salt's length against the configured cap.
static CM_RESULT prot_check_salt(const cmp_protect_limits *lim, const char *what, cm_span salt,
                                 cm_why *why)
{
    if (salt.len > lim->max_salt_len) {
        cm_why_set(why, "the %s salt of %zu octets is longer than the %zu allowed", what, salt.len,
                   lim->max_salt_len);
        CM_BAIL(CMP_E_PROT_SALT_LEN);
    }
    return cm_result_make(CM_OK);
}

// prot_get_owf reads PBM's owf: a digest of the table (parameters NULL or absent, RFC 5754
// §2) with a fixed output (no SHAKE), allowed by the policy.
static CM_RESULT prot_get_owf(const cmp_protect_ctx *ctx, der_reader *r, cmp_hash *out, cm_why *why)
{
    cm_span oid;
    der_reader params;
    bool has_params = false;
    CM_TRY(cmp_prot_get_algid(r, &oid, &params, &has_params));
    if (has_params) {
        CMP_PROT_DER(der_get_null(&params));
        CMP_PROT_DER(der_expect_end(&params));
    }
    const crmf_alg *a = crmf_alg_by_oid(oid);
    cmp_hash h = CMP_HASH_SHA256;
    if (a == NULL || a->kind != CRMF_ALG_KIND_DIGEST || !cmp_prot_hash_of(a->hash, &h) ||
        ctx->md[h] == NULL) {
        if (why != NULL) {
            char name[96];
            cm_why_set(why, "the PBM one-way function %s is not supported (SHA-2 is)",
                       a != NULL ? a->asn1_name : crmf_oid_text(name, sizeof(name), oid));
        }
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    CM_TRY(cmp_prot_allowed(ctx, a, "the PBM one-way function", why));
    *out = h;
    return cm_result_make(CM_OK);
}

// PBMParameter ::= SEQUENCE {                              -- RFC 4210 §5.1.3.1
//     salt                OCTET STRING,
//     owf                 AlgorithmIdentifier,
//     iterationCount      INTEGER,
//     mac                 AlgorithmIdentifier }
CM_RESULT cmp_prot_parse_pbm(const cmp_protect_ctx *ctx, cmp_mac_key *k, der_reader *params,
                             cm_why *why)
{
    const cmp_protect_limits *lim = &ctx->limits;
    der_reader seq;
    CMP_PROT_DER(der_enter(params, DER_TAG_SEQUENCE, &seq));
    CMP_PROT_DER(der_expect_end(params));
    cm_span salt;
    CMP_PROT_DER(der_get_octets(&seq, &salt));
    CM_TRY(prot_check_salt(lim, "PBM", salt, why));
    CM_TRY(prot_get_owf(ctx, &seq, &k->owf, why));
    const prot_iter_bounds bounds = {"PBM", lim->pbm_min_iterations, lim->pbm_max_iterations,
                                     "min_pbm_iterations", "max_pbm_iterations"};
    CM_TRY(prot_get_iterations(&seq, &bounds, &k->iterations, why));
    CM_TRY(cmp_prot_get_hmac(ctx, &seq, true, &k->mac, &k->mac_ipsec_oid, "the PBM MAC", why));
    CMP_PROT_DER(der_expect_end(&seq));
    memcpy(k->salt, salt.p, salt.len);
    k->salt_len = salt.len;
    k->key_len = cmp_prot_hash_len(k->owf);
    k->kind = CMP_PROT_PBM;
    return cm_result_make(CM_OK);
}

// PBKDF2-params ::= SEQUENCE {                             -- RFC 8018 Appendix A.2
//     salt CHOICE {
//         specified OCTET STRING,
//         otherSource AlgorithmIdentifier {{PBKDF2-SaltSources}} },
//     iterationCount INTEGER (1..MAX),
//     keyLength INTEGER (1..MAX) OPTIONAL,
//     prf AlgorithmIdentifier {{PBKDF2-PRFs}} DEFAULT algid-hmacWithSHA1 }
// The PRF must be an HMAC (RFC 9481 §4.4.1; AES-GMAC MUST NOT be used with PBKDF2, §6.2.2).
static CM_RESULT prot_parse_pbkdf2(const cmp_protect_ctx *ctx, cmp_mac_key *k, der_reader *params,
                                   bool *out_has_key_len, cm_why *why)
{
    const cmp_protect_limits *lim = &ctx->limits;
    der_reader seq;
    CMP_PROT_DER(der_enter(params, DER_TAG_SEQUENCE, &seq));
    CMP_PROT_DER(der_expect_end(params));
    CM_ENSURE(der_peek_is(&seq, DER_TAG_OCTET_STRING) || !der_peek_is(&seq, DER_TAG_SEQUENCE),
              CMP_E_PROT_ALG_UNSUPPORTED); // otherSource: reserved, no sources defined
    cm_span salt;
    CMP_PROT_DER(der_get_octets(&seq, &salt));
    CM_TRY(prot_check_salt(lim, "PBMAC1", salt, why));
    const prot_iter_bounds bounds = {"PBMAC1", lim->pbmac1_min_iterations,
                                     lim->pbmac1_max_iterations, NULL, "max_pbmac1_iterations"};
    CM_TRY(prot_get_iterations(&seq, &bounds, &k->iterations, why));
    *out_has_key_len = der_peek_is(&seq, DER_TAG_INTEGER);
    k->key_len = 0;
    if (*out_has_key_len) {
        cm_span body;
        CMP_PROT_DER(der_get_int_span(&seq, &body));
        uint64_t v = 0;
        if ((body.p[0] & 0x80u) != 0 || !cm_ok(der_parse_u64(body, &v)) ||
            v < lim->pbmac1_min_key_len || v > CMP_PROTECT_MAX_KEY_LEN) {
            cm_why_set(why, "the PBMAC1 key length is outside %zu..%u octets",
                       lim->pbmac1_min_key_len, CMP_PROTECT_MAX_KEY_LEN);
            CM_BAIL(CMP_E_PROT_KEY_LEN);
        }
        k->key_len = (size_t)v;
    }
    if (der_reader_empty(&seq)) {
        // The DEFAULT: HMAC-SHA1, which only allow_sha1 admits.
        k->owf = CMP_HASH_SHA1;
        CM_TRY(cmp_prot_allowed(ctx, crmf_alg_get(CRMF_ALG_HMAC_SHA1),
                                "the PBKDF2 PRF (absent: the default)", why));
        CM_ENSURE(ctx->hmac_tmpl[CMP_HASH_SHA1] != NULL, CMP_E_PROT_ALG_UNSUPPORTED);
    } else {
        CM_TRY(cmp_prot_get_hmac(ctx, &seq, false, &k->owf, NULL, "the PBKDF2 PRF", why));
    }
    CMP_PROT_DER(der_expect_end(&seq));
    memcpy(k->salt, salt.p, salt.len);
    k->salt_len = salt.len;
    return cm_result_make(CM_OK);
}

// PBMAC1-params ::= SEQUENCE {                             -- RFC 8018 Appendix A.5
//     keyDerivationFunc AlgorithmIdentifier {{PBMAC1-KDFs}},
//     messageAuthScheme AlgorithmIdentifier {{PBMAC1-MACs}} }
// RFC 9481 §6.1.3: PBKDF2 with an HMAC as PRF and an HMAC as MAC (SHA-2; SHA-1 only when the
// policy has it).
CM_RESULT cmp_prot_parse_pbmac1(const cmp_protect_ctx *ctx, cmp_mac_key *k, der_reader *params,
                                cm_why *why)
{
    der_reader seq;
    CMP_PROT_DER(der_enter(params, DER_TAG_SEQUENCE, &seq));
    CMP_PROT_DER(der_expect_end(params));
    cm_span kdf_oid;
    der_reader kdf_params;
    bool has_kdf_params = false;
    CM_TRY(cmp_prot_get_algid(&seq, &kdf_oid, &kdf_params, &has_kdf_params));
    if (!der_oid_is(kdf_oid, DER_OID_PBKDF2)) {
        if (why != NULL) {
            char name[96];
            cm_why_set(why, "the PBMAC1 key derivation %s is not supported (only PBKDF2 is)",
                       crmf_oid_text(name, sizeof(name), kdf_oid));
        }
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    CM_ENSURE(has_kdf_params, CMP_E_PROT_PARAMS);
    bool has_key_len = false;
    CM_TRY(prot_parse_pbkdf2(ctx, k, &kdf_params, &has_key_len, why));
    CM_TRY(cmp_prot_get_hmac(ctx, &seq, false, &k->mac, NULL, "the PBMAC1 MAC", why));
    CMP_PROT_DER(der_expect_end(&seq));
    if (!has_key_len) {
        k->key_len = cmp_prot_hash_len(k->mac);
    }
    k->kind = CMP_PROT_PBMAC1;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Key derivation

// prot_derive_pbm: BASEKEY = OWF(secret || salt), then OWF applied again until it has been
// applied iterationCount times in all; the key is the last output (RFC 4210 §5.1.3.1).
static CM_RESULT prot_derive_pbm(const cmp_protect_ctx *ctx, cmp_mac_key *k, cm_span secret)
{
    const cmp_prot_owf *o = &ctx->owf[k->owf];
    if (o->newctx != NULL) {
        void *d = o->newctx(o->provctx);
        size_t n = 0;
        bool ok = d != NULL && o->init(d, NULL) == 1 && o->update(d, secret.p, secret.len) == 1 &&
                  o->update(d, k->salt, k->salt_len) == 1 &&
                  o->final(d, k->key, &n, sizeof(k->key)) == 1;
        for (uint64_t i = 1; ok && i < k->iterations; i++) {
            ok = o->init(d, NULL) == 1 && o->update(d, k->key, n) == 1 &&
                 o->final(d, k->key, &n, sizeof(k->key)) == 1;
        }
        if (d != NULL) {
            o->freectx(d); // the provider cleanses the hash state
        }
        if (!ok || n != k->key_len) {
            cm_ossl_clear_errors();
            CM_BAIL(CM_E_CRYPTO);
        }
        return cm_result_make(CM_OK);
    }
    const EVP_MD *md = ctx->md[k->owf];
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    CM_ENSURE(c != NULL, CM_E_NOMEM);
    uint32_t code = CM_E_CRYPTO;
    unsigned int n = 0;
    if (EVP_DigestInit_ex2(c, md, NULL) != 1 || EVP_DigestUpdate(c, secret.p, secret.len) != 1 ||
        EVP_DigestUpdate(c, k->salt, k->salt_len) != 1 || EVP_DigestFinal_ex(c, k->key, &n) != 1) {
        goto out;
    }
    for (uint64_t i = 1; i < k->iterations; i++) {
        if (EVP_DigestInit_ex2(c, md, NULL) != 1 || EVP_DigestUpdate(c, k->key, n) != 1 ||
            EVP_DigestFinal_ex(c, k->key, &n) != 1) {
            goto out;
        }
    }
    CM_CHECK(n == k->key_len);
    code = CM_OK;
out:
    EVP_MD_CTX_free(c);
    if (code != CM_OK) {
        cm_ossl_clear_errors();
        CM_BAIL(code);
    }
    return cm_result_make(CM_OK);
}

// prot_derive_pbkdf2: key = PBKDF2(PRF, secret, salt, iterationCount, keyLength)
// (RFC 8018 §5.2), with HMAC-PRF from the context's template. OpenSSL 3.0's PBKDF2 KDF cannot
// be duplicated from a pre-configured template (no dupctx) and would look its digest up by
// name per derivation, so the construction is done here:
//   T_i = U_1 ^ U_2 ^ ... ^ U_c,  U_1 = PRF(P, S || INT(i)),  U_j = PRF(P, U_{j-1})
// Re-initialising the keyed HMAC context with a NULL key restarts it with the same key
// without recomputing the pads.
static CM_RESULT prot_derive_pbkdf2(const cmp_protect_ctx *ctx, cmp_mac_key *k, cm_span secret)
{
    const size_t hlen = cmp_prot_hash_len(k->owf);
    static const uint8_t k_empty[1] = {0};
    const uint8_t *pass = secret.len > 0 ? secret.p : k_empty;
    uint8_t u[CMP_PROTECT_MAX_MAC_LEN];
    uint8_t t[CMP_PROTECT_MAX_MAC_LEN];
    EVP_MAC_CTX *m = EVP_MAC_CTX_dup(ctx->hmac_tmpl[k->owf]);
    bool ok = m != NULL && EVP_MAC_init(m, pass, secret.len, NULL) == 1;
    size_t done = 0;
    for (uint32_t block = 1; ok && done < k->key_len; block++) {
        const uint8_t be[4] = {(uint8_t)(block >> 24), (uint8_t)(block >> 16),
                               (uint8_t)(block >> 8), (uint8_t)block};
        size_t n = 0;
        ok = EVP_MAC_init(m, NULL, 0, NULL) == 1 && EVP_MAC_update(m, k->salt, k->salt_len) == 1 &&
             EVP_MAC_update(m, be, sizeof(be)) == 1 && EVP_MAC_final(m, u, &n, sizeof(u)) == 1 &&
             n == hlen;
        memcpy(t, u, hlen);
        for (uint64_t it = 1; ok && it < k->iterations; it++) {
            ok = EVP_MAC_init(m, NULL, 0, NULL) == 1 && EVP_MAC_update(m, u, hlen) == 1 &&
                 EVP_MAC_final(m, u, &n, sizeof(u)) == 1;
            for (size_t i = 0; i < hlen; i++) {
                t[i] ^= u[i];
            }
        }
        const size_t take = k->key_len - done < hlen ? k->key_len - done : hlen;
        memcpy(k->key + done, t, take);
        done += take;
    }
    EVP_MAC_CTX_free(m);
    OPENSSL_cleanse(u, sizeof(u));
    OPENSSL_cleanse(t, sizeof(t));
    CM_TRY_OSSL(ok ? 1 : 0, CM_E_CRYPTO);
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_prot_derive(const cmp_protect_ctx *ctx, cmp_mac_key *k, cm_span secret)
{
    cm_result r = k->kind == CMP_PROT_PBM ? prot_derive_pbm(ctx, k, secret)
                                          : prot_derive_pbkdf2(ctx, k, secret);
    if (!cm_ok(r)) {
        cmp_mac_key_cleanse(k);
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Fresh keys for messages we start

// prot_fresh_key checks a locally chosen parameter set like a received one and draws a salt.
static CM_RESULT prot_fresh_key(const cmp_protect_ctx *ctx, cmp_mac_key *k, size_t salt_len)
{
    CM_ENSURE(salt_len <= ctx->limits.max_salt_len, CMP_E_PROT_SALT_LEN);
    k->salt_len = salt_len;
    if (salt_len > 0) {
        CM_TRY_OSSL(RAND_bytes(k->salt, (int)salt_len), CM_E_CRYPTO);
    }
    return cm_result_make(CM_OK);
}

// prot_fresh_allowed checks that the digest and HMAC rows a fresh key uses are in the policy.
static CM_RESULT prot_fresh_allowed(const cmp_protect_ctx *ctx, crmf_alg_id kind, cmp_hash owf,
                                    bool owf_is_hmac, cmp_hash mac)
{
    const crmf_alg *o =
        owf_is_hmac ? cmp_prot_hmac_row(owf, false) : crmf_alg_digest(cmp_prot_hash_crmf(owf));
    const crmf_alg *m = cmp_prot_hmac_row(mac, false);
    CM_ENSURE(o != NULL && m != NULL && ctx->md[owf] != NULL && ctx->hmac_tmpl[mac] != NULL,
              CMP_E_PROT_ALG_UNSUPPORTED);
    CM_TRY(cmp_prot_allowed(ctx, crmf_alg_get(kind), "MAC algorithm", NULL));
    CM_TRY(cmp_prot_allowed(ctx, o, "", NULL));
    return cmp_prot_allowed(ctx, m, "", NULL);
}

CM_RESULT cmp_mac_key_new_pbm(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                              cmp_hash owf, cmp_hash mac, uint64_t iterations, size_t salt_len)
{
    cmp_mac_key_cleanse(out);
    CM_ENSURE((unsigned)owf < CMP_HASH_COUNT && (unsigned)mac < CMP_HASH_COUNT,
              CMP_E_PROT_ALG_UNSUPPORTED);
    CM_TRY(prot_fresh_allowed(ctx, CRMF_ALG_PBM, owf, false, mac));
    CM_ENSURE(iterations >= ctx->limits.pbm_min_iterations &&
                  iterations <= ctx->limits.pbm_max_iterations,
              CMP_E_PROT_ITERATIONS);
    CM_TRY(prot_fresh_key(ctx, out, salt_len));
    out->kind = CMP_PROT_PBM;
    out->owf = owf;
    out->mac = mac;
    out->iterations = iterations;
    out->key_len = cmp_prot_hash_len(owf);
    out->mac_alg = cmp_prot_hmac_row(mac, false)->id;
    out->tag_len = cmp_prot_hash_len(mac);
    return cmp_prot_derive(ctx, out, secret);
}

CM_RESULT cmp_mac_key_new_pbmac1(const cmp_protect_ctx *ctx, cmp_mac_key *out, cm_span secret,
                                 cmp_hash prf, cmp_hash mac, uint64_t iterations, size_t salt_len,
                                 size_t key_len)
{
    cmp_mac_key_cleanse(out);
    CM_ENSURE((unsigned)prf < CMP_HASH_COUNT && (unsigned)mac < CMP_HASH_COUNT &&
                  prf != CMP_HASH_SHA1 && mac != CMP_HASH_SHA1,
              CMP_E_PROT_ALG_UNSUPPORTED);
    CM_TRY(prot_fresh_allowed(ctx, CRMF_ALG_PBMAC1, prf, true, mac));
    CM_ENSURE(iterations >= ctx->limits.pbmac1_min_iterations &&
                  iterations <= ctx->limits.pbmac1_max_iterations,
              CMP_E_PROT_ITERATIONS);
    CM_ENSURE(key_len >= ctx->limits.pbmac1_min_key_len && key_len <= CMP_PROTECT_MAX_KEY_LEN,
              CMP_E_PROT_KEY_LEN);
    CM_TRY(prot_fresh_key(ctx, out, salt_len));
    out->kind = CMP_PROT_PBMAC1;
    out->owf = prf;
    out->mac = mac;
    out->iterations = iterations;
    out->key_len = key_len;
    out->mac_alg = cmp_prot_hmac_row(mac, false)->id;
    out->tag_len = cmp_prot_hash_len(mac);
    return cmp_prot_derive(ctx, out, secret);
}

// ---------------------------------------------------------------------------------------------
// Encoding protectionAlg for PBM and PBMAC1

// prot_put_algid writes SEQUENCE { |oid| } (hash and HMAC identifiers without parameters,
// RFC 5754 §2, RFC 9481 §6.2.1).
static void prot_put_algid(der_builder *b, const crmf_alg *a)
{
    if (a == NULL) {
        der_builder_fail(b, CMP_E_PROT_KEY_STATE);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, a->oid);
    der_close(b, &m);
}

// Writes, for PBM (RFC 4210 §5.1.3.1):
//   SEQUENCE { id-PasswordBasedMac, PBMParameter { salt, owf, iterationCount, mac } }
// and for PBMAC1 (RFC 9481 §6.1.3):
//   SEQUENCE { id-PBMAC1, PBMAC1-params {
//       SEQUENCE { id-PBKDF2, PBKDF2-params { salt, iterationCount, keyLength, prf } },
//       messageAuthScheme } }
void cmp_prot_put_pbm_alg(der_builder *b, const cmp_mac_key *key)
{
    const cm_span salt = cm_span_make(key->salt, key->salt_len);
    der_mark alg;
    der_mark params;
    der_open(b, &alg, DER_TAG_SEQUENCE);
    if (key->kind == CMP_PROT_PBM) {
        der_put_oid_lit(b, DER_OID_PASSWORD_BASED_MAC);
        der_open(b, &params, DER_TAG_SEQUENCE);
        der_put_octets(b, salt);
        prot_put_algid(b, crmf_alg_digest(cmp_prot_hash_crmf(key->owf)));
        der_put_u64(b, key->iterations);
        prot_put_algid(b, cmp_prot_hmac_row(key->mac, key->mac_ipsec_oid));
        der_close(b, &params);
    } else {
        der_put_oid_lit(b, DER_OID_PBMAC1);
        der_open(b, &params, DER_TAG_SEQUENCE);
        der_mark kdf;
        der_mark kdf_params;
        der_open(b, &kdf, DER_TAG_SEQUENCE);
        der_put_oid_lit(b, DER_OID_PBKDF2);
        der_open(b, &kdf_params, DER_TAG_SEQUENCE);
        der_put_octets(b, salt);
        der_put_u64(b, key->iterations);
        der_put_u64(b, key->key_len);
        prot_put_algid(b, cmp_prot_hmac_row(key->owf, false));
        der_close(b, &kdf_params);
        der_close(b, &kdf);
        prot_put_algid(b, cmp_prot_hmac_row(key->mac, false));
        der_close(b, &params);
    }
    der_close(b, &alg);
}
