// engine/crmf: the algorithm table (RFC 9481) and the policies built from it. The rows are
// engine/crmf/crmf_algs.def; everything else that names an algorithm looks it up here.
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der_oid.h"

static const crmf_alg k_crmf_algs[CRMF_ALG_COUNT] = {
#define CRMF_ALG(id_, name_, asn1_, oid_, kind_, sig_, hash_, params_, ossl_, size_, dflt_) \
    [CRMF_ALG_##id_] = {.id = CRMF_ALG_##id_,                                               \
                        .name = name_,                                                      \
                        .asn1_name = asn1_,                                                 \
                        .oid = {(const uint8_t *)(oid_), sizeof(oid_) - 1},                 \
                        .kind = CRMF_ALG_KIND_##kind_,                                      \
                        .sig = (crmf_sig_kind)(CRMF_SIG_##sig_ + 0),                        \
                        .hash = CRMF_HASH_##hash_,                                          \
                        .params = CRMF_PARAMS_##params_,                                    \
                        .ossl = ossl_,                                                      \
                        .size = size_,                                                      \
                        .sha1 = (dflt_) == 0},
// Rows without a signature kind write 0 in the SIG column: CRMF_SIG_0 + 0 is then 0.
#define CRMF_SIG_0 0
#include "engine/crmf/crmf_algs.def"
#undef CRMF_SIG_0
};

_Static_assert(CRMF_ALG_COUNT - 1 <= 64, "crmf_alg_policy holds at most 64 rows");

const crmf_alg *crmf_alg_get(crmf_alg_id id)
{
    if (id <= CRMF_ALG_NONE || id >= CRMF_ALG_COUNT) {
        return NULL;
    }
    return &k_crmf_algs[id];
}

const crmf_alg *crmf_alg_by_oid(cm_span oid)
{
    for (int i = CRMF_ALG_NONE + 1; i < CRMF_ALG_COUNT; i++) {
        if (cm_span_eq(k_crmf_algs[i].oid, oid)) {
            return &k_crmf_algs[i];
        }
    }
    return NULL;
}

const crmf_alg *crmf_alg_by_name(const char *name)
{
    for (int i = CRMF_ALG_NONE + 1; i < CRMF_ALG_COUNT; i++) {
        if (strcasecmp(k_crmf_algs[i].name, name) == 0) {
            return &k_crmf_algs[i];
        }
    }
    return NULL;
}

// crmf_alg_find returns the first row of |kind| with hash |h| (and signature kind |sig| for
// signatures), NULL when none.
static const crmf_alg *crmf_alg_find(crmf_alg_kind kind, crmf_sig_kind sig, crmf_hash h,
                                     const char *ossl)
{
    for (int i = CRMF_ALG_NONE + 1; i < CRMF_ALG_COUNT; i++) {
        const crmf_alg *a = &k_crmf_algs[i];
        if (a->kind == kind && a->sig == sig && a->hash == h &&
            (ossl == NULL || strcmp(a->ossl, ossl) == 0)) {
            return a;
        }
    }
    return NULL;
}

const crmf_alg *crmf_alg_digest(crmf_hash h)
{
    return h == CRMF_HASH_NONE ? NULL : crmf_alg_find(CRMF_ALG_KIND_DIGEST, 0, h, NULL);
}

const crmf_alg *crmf_alg_hmac(crmf_hash h)
{
    return h == CRMF_HASH_NONE ? NULL : crmf_alg_find(CRMF_ALG_KIND_KEY_MAC, 0, h, "HMAC");
}

const crmf_alg *crmf_alg_sig(crmf_sig_kind sig, crmf_hash hash)
{
    return sig == 0 ? NULL : crmf_alg_find(CRMF_ALG_KIND_SIGNATURE, sig, hash, NULL);
}

const char *crmf_hash_name(crmf_hash h)
{
    const crmf_alg *a = crmf_alg_digest(h);
    return a != NULL ? a->ossl : NULL;
}

size_t crmf_hash_len(crmf_hash h)
{
    const crmf_alg *a = crmf_alg_digest(h);
    return a != NULL ? a->size : 0;
}

bool crmf_hash_is_xof(crmf_hash h)
{
    return h == CRMF_HASH_SHAKE128 || h == CRMF_HASH_SHAKE256;
}

bool crmf_alg_params_ok(const crmf_alg *a, cm_span params)
{
    static const uint8_t k_null[] = {0x05, 0x00};
    const bool is_null = params.len == 2 && memcmp(params.p, k_null, 2) == 0;
    switch (a->params) {
    case CRMF_PARAMS_ABSENT:
        return params.len == 0;
    case CRMF_PARAMS_NULL_OK:
    case CRMF_PARAMS_NULL:
        return params.len == 0 || is_null;
    default:
        return true;
    }
}

// ---------------------------------------------------------------------------------------------
// Policies

static uint64_t crmf_alg_bit(crmf_alg_id id)
{
    return (uint64_t)1 << (unsigned)(id - 1);
}

void crmf_alg_policy_default(crmf_alg_policy *out, bool allow_sha1)
{
    out->allowed = 0;
    for (int i = CRMF_ALG_NONE + 1; i < CRMF_ALG_COUNT; i++) {
        if (allow_sha1 || !k_crmf_algs[i].sha1) {
            out->allowed |= crmf_alg_bit((crmf_alg_id)i);
        }
    }
}

bool crmf_alg_policy_allows(const crmf_alg_policy *p, crmf_alg_id id)
{
    if (id <= CRMF_ALG_NONE || id >= CRMF_ALG_COUNT) {
        return false;
    }
    if (p == NULL) {
        return !k_crmf_algs[id].sha1;
    }
    return (p->allowed & crmf_alg_bit(id)) != 0;
}

static const char *crmf_alg_kind_text(crmf_alg_kind k)
{
    switch (k) {
    case CRMF_ALG_KIND_DIGEST:
        return "a digest";
    case CRMF_ALG_KIND_SIGNATURE:
        return "a signature algorithm";
    case CRMF_ALG_KIND_PASSWORD_MAC:
        return "a password-based MAC";
    default:
        return "a key-based MAC";
    }
}

// crmf_alg_policy_add adds every row named |name| to |p|.
static cm_result crmf_alg_policy_add(crmf_alg_policy *p, char *err, size_t cap, const char *name,
                                     uint32_t kinds, bool allow_sha1)
{
    bool found = false;
    for (int i = CRMF_ALG_NONE + 1; i < CRMF_ALG_COUNT; i++) {
        const crmf_alg *a = &k_crmf_algs[i];
        if (strcasecmp(a->name, name) != 0) {
            continue;
        }
        found = true;
        if ((kinds & (1u << a->kind)) == 0) {
            (void)snprintf(err, cap, "'%s' is %s, which this setting does not take", name,
                           crmf_alg_kind_text(a->kind));
            CM_BAIL(CRMF_E_ALG_NAME);
        }
        if (a->sha1 && !allow_sha1) {
            (void)snprintf(err, cap, "'%s' is SHA-1 based: set allow_sha1 = on to allow it", name);
            CM_BAIL(CRMF_E_ALG_NAME);
        }
        p->allowed |= crmf_alg_bit(a->id);
    }
    if (!found) {
        (void)snprintf(err, cap, "'%s' is not an algorithm name (see the README's algorithm table)",
                       name);
        CM_BAIL(CRMF_E_ALG_NAME);
    }
    return cm_result_make(CM_OK);
}

cm_result crmf_alg_policy_parse(crmf_alg_policy *out, char *err, size_t cap, const char *list,
                                uint32_t kinds, bool allow_sha1)
{
    crmf_alg_policy p = {0};
    const char *c = list;
    size_t num = 0;
    while (*c != '\0') {
        while (*c == ',' || *c == ' ' || *c == '\t') {
            c++;
        }
        const size_t len = strcspn(c, ", \t");
        if (len == 0) {
            break;
        }
        char name[64];
        if (len >= sizeof(name)) {
            (void)snprintf(err, cap, "'%.*s...' is not an algorithm name", 16, c);
            CM_BAIL(CRMF_E_ALG_NAME);
        }
        memcpy(name, c, len);
        name[len] = '\0';
        CM_TRY(crmf_alg_policy_add(&p, err, cap, name, kinds, allow_sha1));
        num++;
        c += len;
    }
    if (num == 0) {
        (void)snprintf(err, cap, "the list is empty");
        CM_BAIL(CRMF_E_ALG_NAME);
    }
    *out = p;
    return cm_result_make(CM_OK);
}

size_t crmf_alg_sig_list(crmf_alg_id *out, size_t cap, const crmf_alg_policy *p, crmf_key_type key)
{
    size_t n = 0;
    for (int i = CRMF_ALG_NONE + 1; i < CRMF_ALG_COUNT && n < cap; i++) {
        const crmf_alg *a = &k_crmf_algs[i];
        crmf_sig_alg sa;
        if (a->kind != CRMF_ALG_KIND_SIGNATURE || !crmf_alg_policy_allows(p, a->id) ||
            !crmf_sig_alg_of(&sa, a->id)) {
            continue;
        }
        if (key == CRMF_KEY_UNKNOWN || crmf_sig_alg_key_ok(&sa, key)) {
            out[n++] = a->id;
        }
    }
    return n;
}

void crmf_alg_marshal(der_builder *b, crmf_alg_id id)
{
    const crmf_alg *a = crmf_alg_get(id);
    if (a == NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    crmf_sig_alg sa;
    if (a->kind == CRMF_ALG_KIND_SIGNATURE && crmf_sig_alg_of(&sa, id)) {
        crmf_sig_alg_marshal(b, &sa);
        return;
    }
    if (a->params != CRMF_PARAMS_ABSENT && a->params != CRMF_PARAMS_NULL_OK &&
        a->params != CRMF_PARAMS_NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, a->oid);
    if (a->params == CRMF_PARAMS_NULL) {
        der_put_null(b);
    }
    der_close(b, &m);
}
