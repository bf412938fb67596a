// engine/cmp message protection: the shared context, protectionAlg classification and the
// helpers the protection files share. PBM and PBMAC1 are in cmp_protect_kdf.c, the MACs over
// ProtectedPart in cmp_protect_mac.c, signatures in cmp_protect_sig.c.
#include "engine/cmp/cmp_protect.h"

#include <stdio.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "engine/cmp/cmp_protect_internal.h"
#include "engine/der/der_oid.h"

// The table's hash for each cmp_hash.
static const crmf_hash k_prot_hashes[CMP_HASH_COUNT] = {
    [CMP_HASH_SHA1] = CRMF_HASH_SHA1,     [CMP_HASH_SHA224] = CRMF_HASH_SHA224,
    [CMP_HASH_SHA256] = CRMF_HASH_SHA256, [CMP_HASH_SHA384] = CRMF_HASH_SHA384,
    [CMP_HASH_SHA512] = CRMF_HASH_SHA512,
};

crmf_hash cmp_prot_hash_crmf(cmp_hash h)
{
    return (unsigned)h < CMP_HASH_COUNT ? k_prot_hashes[h] : CRMF_HASH_NONE;
}

bool cmp_prot_hash_of(crmf_hash h, cmp_hash *out)
{
    for (size_t i = 0; i < CMP_HASH_COUNT; i++) {
        if (k_prot_hashes[i] == h) {
            *out = (cmp_hash)i;
            return true;
        }
    }
    return false;
}

size_t cmp_prot_hash_len(cmp_hash h)
{
    const crmf_alg *a = crmf_alg_digest(cmp_prot_hash_crmf(h));
    return a != NULL ? a->size : 0;
}

const crmf_alg *cmp_prot_hmac_row(cmp_hash h, bool ipsec_oid)
{
    if (ipsec_oid && h == CMP_HASH_SHA1) {
        return crmf_alg_get(CRMF_ALG_HMAC_SHA1_IPSEC);
    }
    return crmf_alg_hmac(cmp_prot_hash_crmf(h));
}

// ---------------------------------------------------------------------------------------------
// Context

void cmp_protect_limits_default(cmp_protect_limits *out)
{
    out->pbm_min_iterations = 100;
    out->pbm_max_iterations = 10000;
    out->pbmac1_min_iterations = 1000;
    out->pbmac1_max_iterations = 2500;
    out->max_salt_len = 64;
    out->pbmac1_min_key_len = 16;
    out->policy = NULL;
}

const cmp_protect_limits *cmp_protect_ctx_limits(const cmp_protect_ctx *ctx)
{
    return &ctx->limits;
}

void cmp_protect_ctx_free(cmp_protect_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    for (size_t i = 0; i < CMP_HASH_COUNT; i++) {
        EVP_MAC_CTX_free(ctx->hmac_tmpl[i]);
        if (ctx->owf[i].algs != NULL) {
            OSSL_PROVIDER_unquery_operation(ctx->owf[i].prov, OSSL_OP_DIGEST, ctx->owf[i].algs);
        }
        EVP_MD_free(ctx->md[i]);
    }
    for (size_t i = 0; i < CMP_PROT_NUM_GMAC; i++) {
        EVP_MAC_CTX_free(ctx->gmac_tmpl[i]);
    }
    for (size_t i = 0; i < CMP_PROT_NUM_KMAC; i++) {
        EVP_MAC_CTX_free(ctx->kmac_tmpl[i]);
        EVP_MAC_free(ctx->kmac[i]);
    }
    EVP_MAC_free(ctx->gmac);
    EVP_MAC_free(ctx->hmac);
    OPENSSL_free(ctx);
}

// prot_owf_find looks up the dispatch functions of the implementation behind |md| (see
// cmp_prot_owf). Leaves |o| zeroed when anything is missing.
static void prot_owf_find(cmp_prot_owf *o, const EVP_MD *md)
{
    memset(o, 0, sizeof(*o));
    const OSSL_PROVIDER *prov = EVP_MD_get0_provider(md);
    if (prov == NULL) {
        return;
    }
    int no_store = 0;
    const OSSL_ALGORITHM *algs = OSSL_PROVIDER_query_operation(prov, OSSL_OP_DIGEST, &no_store);
    const OSSL_DISPATCH *d = NULL;
    for (const OSSL_ALGORITHM *a = algs; a != NULL && a->algorithm_names != NULL && d == NULL;
         a++) {
        // The implementation is the one whose first name the fetched digest answers to.
        char first[64];
        const size_t len = strcspn(a->algorithm_names, ":");
        if (len == 0 || len >= sizeof(first)) {
            continue;
        }
        memcpy(first, a->algorithm_names, len);
        first[len] = '\0';
        if (EVP_MD_is_a(md, first)) {
            d = a->implementation;
        }
    }
    cmp_prot_owf f;
    memset(&f, 0, sizeof(f));
    for (; d != NULL && d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_DIGEST_NEWCTX:
            f.newctx = OSSL_FUNC_digest_newctx(d);
            break;
        case OSSL_FUNC_DIGEST_INIT:
            f.init = OSSL_FUNC_digest_init(d);
            break;
        case OSSL_FUNC_DIGEST_UPDATE:
            f.update = OSSL_FUNC_digest_update(d);
            break;
        case OSSL_FUNC_DIGEST_FINAL:
            f.final = OSSL_FUNC_digest_final(d);
            break;
        case OSSL_FUNC_DIGEST_FREECTX:
            f.freectx = OSSL_FUNC_digest_freectx(d);
            break;
        default:
            break;
        }
    }
    f.prov = prov;
    f.algs = algs;
    f.provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
    if (f.newctx == NULL || f.init == NULL || f.update == NULL || f.final == NULL ||
        f.freectx == NULL) {
        if (algs != NULL) {
            OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_DIGEST, algs);
        }
        return;
    }
    *o = f;
}

bool cmp_protect_owf_direct(const cmp_protect_ctx *ctx, cmp_hash h)
{
    return (size_t)h < CMP_HASH_COUNT && ctx->owf[h].newctx != NULL;
}

// OSSL_PARAM wants mutable strings; the provider copies them during set_params.
static char *prot_unconst(const char *s)
{
    char *p;
    memcpy(&p, &s, sizeof(p));
    return p;
}

// prot_mac_tmpl makes a template of |mac| with the string parameter |key| = |value| (NULL:
// none) and, when non-zero, the size |size|. NULL when the provider refuses.
static EVP_MAC_CTX *prot_mac_tmpl(EVP_MAC *mac, const char *key, const char *value, size_t size,
                                  const char *propq)
{
    EVP_MAC_CTX *t = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    if (t == NULL) {
        return NULL;
    }
    OSSL_PARAM mp[4];
    size_t n = 0;
    if (key != NULL) {
        mp[n++] = OSSL_PARAM_construct_utf8_string(key, prot_unconst(value), 0);
    }
    if (size > 0) {
        mp[n++] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size);
    }
    if (propq != NULL && key != NULL) {
        mp[n++] =
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_PROPERTIES, prot_unconst(propq), 0);
    }
    mp[n] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(t, mp) != 1) {
        EVP_MAC_CTX_free(t);
        return NULL;
    }
    return t;
}

// prot_ctx_fetch fetches and configures everything |ctx| holds. HMAC with SHA-2 is required;
// the rest (SHA-1, GMAC, KMAC) is optional.
static CM_RESULT prot_ctx_fetch(cmp_protect_ctx *ctx, OSSL_LIB_CTX *libctx, const char *propq)
{
    ctx->hmac = EVP_MAC_fetch(libctx, OSSL_MAC_NAME_HMAC, propq);
    CM_TRY_OSSL(ctx->hmac != NULL, CM_E_CRYPTO);
    for (size_t i = 0; i < CMP_HASH_COUNT; i++) {
        const char *name = crmf_alg_digest(k_prot_hashes[i])->ossl;
        ctx->md[i] = EVP_MD_fetch(libctx, name, propq);
        if (ctx->md[i] != NULL) {
            ctx->hmac_tmpl[i] = prot_mac_tmpl(ctx->hmac, OSSL_MAC_PARAM_DIGEST, name, 0, propq);
            prot_owf_find(&ctx->owf[i], ctx->md[i]);
        }
        if (i != CMP_HASH_SHA1) {
            CM_TRY_OSSL(ctx->md[i] != NULL && ctx->hmac_tmpl[i] != NULL, CM_E_CRYPTO);
        }
    }
    ctx->gmac = EVP_MAC_fetch(libctx, OSSL_MAC_NAME_GMAC, propq);
    for (size_t i = 0; i < CMP_PROT_NUM_GMAC; i++) {
        const crmf_alg *a = crmf_alg_get((crmf_alg_id)(CRMF_ALG_AES128_GMAC + i));
        ctx->gmac_tmpl[i] = prot_mac_tmpl(ctx->gmac, OSSL_MAC_PARAM_CIPHER, a->ossl, 0, propq);
    }
    for (size_t i = 0; i < CMP_PROT_NUM_KMAC; i++) {
        // RFC 8702 §3.4: output L = 256 / 512 bits, customization string S empty (OpenSSL's
        // default; its function name N is "KMAC", which RFC 8702's 0xD2B282C2 spells bitwise).
        const crmf_alg *a = crmf_alg_get((crmf_alg_id)(CRMF_ALG_KMAC128 + i));
        ctx->kmac[i] = EVP_MAC_fetch(libctx, a->ossl, propq);
        ctx->kmac_tmpl[i] = prot_mac_tmpl(ctx->kmac[i], NULL, NULL, a->size, propq);
    }
    cm_ossl_clear_errors();
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_protect_ctx_new(cmp_protect_ctx **out, OSSL_LIB_CTX *libctx, const char *propq,
                              const cmp_protect_limits *limits)
{
    *out = NULL;
    cmp_protect_limits lim;
    if (limits != NULL) {
        lim = *limits;
    } else {
        cmp_protect_limits_default(&lim);
    }
    CM_ENSURE(lim.pbm_min_iterations >= 1 && lim.pbm_min_iterations <= lim.pbm_max_iterations &&
                  lim.pbmac1_min_iterations >= 1 &&
                  lim.pbmac1_min_iterations <= lim.pbmac1_max_iterations &&
                  lim.max_salt_len <= CMP_PROTECT_MAX_SALT_LEN && lim.pbmac1_min_key_len >= 1 &&
                  lim.pbmac1_min_key_len <= CMP_PROTECT_MAX_KEY_LEN,
              CM_E_INVALID_ARG);
    cmp_protect_ctx *ctx = OPENSSL_zalloc(sizeof(*ctx));
    CM_ENSURE(ctx != NULL, CM_E_NOMEM);
    ctx->limits = lim;
    if (lim.policy != NULL) {
        ctx->policy = *lim.policy;
    } else {
        crmf_alg_policy_default(&ctx->policy, false);
    }
    ctx->limits.policy = &ctx->policy;
    cm_result r = prot_ctx_fetch(ctx, libctx, propq);
    if (!cm_ok(r)) {
        cmp_protect_ctx_free(ctx);
        return r;
    }
    *out = ctx;
    return r;
}

// ---------------------------------------------------------------------------------------------
// AlgorithmIdentifier helpers

CM_RESULT cmp_prot_get_algid(der_reader *r, cm_span *out_oid, der_reader *out_params,
                             bool *out_has_params)
{
    der_reader seq;
    CMP_PROT_DER(der_enter(r, DER_TAG_SEQUENCE, &seq));
    CMP_PROT_DER(der_get_oid(&seq, out_oid));
    *out_has_params = !der_reader_empty(&seq);
    *out_params = seq;
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_prot_allowed(const cmp_protect_ctx *ctx, const crmf_alg *a, const char *role,
                           cm_why *why)
{
    if (!crmf_alg_policy_allows(&ctx->policy, a->id)) {
        cm_why_set(why, "%s %s is not allowed (protection_algs)", role, a->asn1_name);
        CM_BAIL(CMP_E_PROT_ALG_POLICY);
    }
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_prot_get_hmac(const cmp_protect_ctx *ctx, der_reader *r, bool allow_ipsec,
                            cmp_hash *out, bool *out_ipsec, const char *what, cm_why *why)
{
    cm_span oid;
    der_reader params;
    bool has_params = false;
    CM_TRY(cmp_prot_get_algid(r, &oid, &params, &has_params));
    const crmf_alg *a = crmf_alg_by_oid(oid);
    const bool ipsec = a != NULL && a->id == CRMF_ALG_HMAC_SHA1_IPSEC;
    cmp_hash h = CMP_HASH_SHA256;
    if (a == NULL || strcmp(a->ossl, "HMAC") != 0 || (ipsec && !allow_ipsec) ||
        !cmp_prot_hash_of(a->hash, &h) || ctx->hmac_tmpl[h] == NULL) {
        if (why != NULL) {
            char name[96];
            cm_why_set(why, "%s %s is not supported (it must be an HMAC with SHA-2)", what,
                       a != NULL ? a->asn1_name : crmf_oid_text(name, sizeof(name), oid));
        }
        CM_BAIL(CMP_E_PROT_ALG_UNSUPPORTED);
    }
    if (has_params) {
        CMP_PROT_DER(der_get_null(&params));
        CMP_PROT_DER(der_expect_end(&params));
    }
    CM_TRY(cmp_prot_allowed(ctx, a, what, why));
    *out = h;
    if (out_ipsec != NULL) {
        *out_ipsec = ipsec;
    }
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Classification

bool cmp_prot_kind_is_mac(cmp_prot_kind k)
{
    return k == CMP_PROT_PBM || k == CMP_PROT_PBMAC1 || k == CMP_PROT_KEY_MAC;
}

CM_RESULT cmp_protect_kind(cmp_prot_kind *out, cm_span alg)
{
    der_reader r;
    der_reader_init(&r, alg);
    cm_span oid;
    der_reader params;
    bool has_params = false;
    CM_TRY(cmp_prot_get_algid(&r, &oid, &params, &has_params));
    CMP_PROT_DER(der_expect_end(&r));
    CM_ENSURE(!der_oid_is(oid, DER_OID_DH_BASED_MAC), CMP_E_PROT_ALG_UNSUPPORTED);
    const crmf_alg *a = crmf_alg_by_oid(oid);
    if (a != NULL && a->id == CRMF_ALG_PBM) {
        *out = CMP_PROT_PBM;
    } else if (a != NULL && a->id == CRMF_ALG_PBMAC1) {
        *out = CMP_PROT_PBMAC1;
    } else if (a != NULL && a->kind == CRMF_ALG_KIND_KEY_MAC) {
        *out = CMP_PROT_KEY_MAC;
    } else {
        *out = CMP_PROT_SIGNATURE;
    }
    return cm_result_make(CM_OK);
}

CM_RESULT cmp_protected_part_header(uint8_t *buf, size_t cap, size_t *out_len, size_t content_len)
{
    CM_ENSURE(cap >= 6, CM_E_BUFFER_TOO_SMALL);
    CM_ENSURE(content_len <= 0xffffffffu, CM_E_LIMIT);
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_put_header(&b, DER_TAG_SEQUENCE, content_len);
    cm_span got;
    CM_TRY(der_builder_finish(&b, &got));
    *out_len = got.len;
    return cm_result_make(CM_OK);
}

// PKIMessage field: protection [0] PKIProtection OPTIONAL, PKIProtection ::= BIT STRING
// (RFC 4210 §5.1). The [0] is EXPLICIT: the module uses EXPLICIT TAGS.
void cmp_prot_put_protection(der_builder *b, cm_span bits)
{
    der_mark m;
    der_open(b, &m, DER_CONTEXT_CONS(0));
    der_put_bitstring(b, bits, 0);
    der_close(b, &m);
}
