// engine/crmf: SubjectPublicKeyInfo and signature AlgorithmIdentifier descriptors
// (RFC 5280 §4.1.2.7, RFC 3279, RFC 4055, RFC 5480, RFC 8410, RFC 9481 §3).
#include <string.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der_oid.h"

static const uint8_t k_crmf_null[] = {0x05, 0x00};

static bool crmf_is_null(cm_span params)
{
    return params.len == sizeof(k_crmf_null) && memcmp(params.p, k_crmf_null, 2) == 0;
}

// AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }
// Reads the content of an AlgorithmIdentifier: |*out_params| is the whole parameters TLV or
// len 0.
static cm_result crmf_alg_body(der_reader *alg, cm_span *out_oid, cm_span *out_params)
{
    CM_TRY(der_get_oid(alg, out_oid));
    *out_params = cm_span_make(NULL, 0);
    if (!der_reader_empty(alg)) {
        CM_TRY(der_get_any(alg, NULL, NULL, out_params));
    }
    return der_expect_end(alg);
}

// ---------------------------------------------------------------------------------------------
// SubjectPublicKeyInfo

// The EC curves RFC 9481 §3.3 names that OpenSSL 3.0 supports by name, with their field size.
static bool crmf_ec_curve(cm_span oid, crmf_spki *k, size_t *out_field_len)
{
    if (der_oid_is(oid, DER_OID_P256)) {
        k->ec_curve = CRMF_EC_P256;
        *out_field_len = 32;
    } else if (der_oid_is(oid, DER_OID_P384)) {
        k->ec_curve = CRMF_EC_P384;
        *out_field_len = 48;
    } else if (der_oid_is(oid, DER_OID_P521)) {
        k->ec_curve = CRMF_EC_P521;
        *out_field_len = 66;
    } else {
        return false;
    }
    k->ec_group = crmf_ec_curve_name(k->ec_curve);
    return true;
}

const char *crmf_ec_curve_name(uint32_t curve)
{
    static const char *const names[CRMF_EC_CURVE_COUNT] = {"P-256", "P-384", "P-521"};
    return curve < CRMF_EC_CURVE_COUNT ? names[curve] : NULL;
}

// SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier,
//                                     subjectPublicKey BIT STRING }   (RFC 5280 §4.1)
cm_result crmf_spki_parse_body(crmf_spki *out, cm_span body)
{
    crmf_spki k;
    memset(&k, 0, sizeof(k));
    k.body = body;
    der_reader r;
    der_reader alg;
    der_reader_init(&r, body);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &alg));
    CM_TRY(crmf_alg_body(&alg, &k.alg_oid, &k.alg_params));
    uint8_t unused;
    CM_TRY(der_get_bitstring(&r, &k.key, &unused));
    CM_ENSURE(unused == 0, CRMF_E_BAD_SPKI);
    CM_TRY(der_expect_end(&r));

    const bool has_key = k.key.len > 0;
    if (der_oid_is(k.alg_oid, DER_OID_RSA_ENCRYPTION)) {
        // RFC 3279 §2.3.1: the parameters SHALL be NULL.
        CM_ENSURE(crmf_is_null(k.alg_params), CRMF_E_BAD_SPKI);
        k.type = CRMF_KEY_RSA;
    } else if (der_oid_is(k.alg_oid, DER_OID_RSASSA_PSS)) {
        // RFC 4055 §1.2: absent, or RSASSA-PSS-params restricting the key's use.
        CM_ENSURE(k.alg_params.len == 0 || k.alg_params.p[0] == 0x30, CRMF_E_BAD_SPKI);
        k.type = CRMF_KEY_RSA_PSS;
    } else if (der_oid_is(k.alg_oid, DER_OID_EC_PUBLIC_KEY)) {
        // RFC 5480 §2.1.1: namedCurve only (implicitCurve and specifiedCurve MUST NOT be used).
        der_reader p;
        der_reader_init(&p, k.alg_params);
        cm_span curve;
        CM_ENSURE(k.alg_params.len > 0, CRMF_E_BAD_SPKI);
        CM_ENSURE(der_peek_is(&p, DER_TAG_OID), CRMF_E_BAD_SPKI);
        CM_TRY(der_get_oid(&p, &curve));
        size_t field = 0;
        if (crmf_ec_curve(curve, &k, &field)) {
            k.type = CRMF_KEY_EC;
            if (has_key) {
                // RFC 5480 §2.2: uncompressed (04 X Y) or compressed (02/03 X).
                bool uncompressed = k.key.p[0] == 0x04 && k.key.len == 1 + 2 * field;
                bool compressed =
                    (k.key.p[0] == 0x02 || k.key.p[0] == 0x03) && k.key.len == 1 + field;
                CM_ENSURE(uncompressed || compressed, CRMF_E_BAD_SPKI);
            }
        } else {
            k.type = CRMF_KEY_UNKNOWN;
        }
    } else if (der_oid_is(k.alg_oid, DER_OID_ED25519) || der_oid_is(k.alg_oid, DER_OID_ED448)) {
        // RFC 8410 §3: parameters MUST be absent.
        bool ed25519 = der_oid_is(k.alg_oid, DER_OID_ED25519);
        CM_ENSURE(k.alg_params.len == 0, CRMF_E_BAD_SPKI);
        CM_ENSURE(!has_key || k.key.len == (ed25519 ? 32u : 57u), CRMF_E_BAD_SPKI);
        k.type = ed25519 ? CRMF_KEY_ED25519 : CRMF_KEY_ED448;
    } else {
        k.type = CRMF_KEY_UNKNOWN;
    }
    *out = k;
    return cm_result_make(CM_OK);
}

cm_result crmf_spki_read(der_reader *r, crmf_spki *out)
{
    der_reader t = *r;
    cm_span whole;
    cm_span body;
    der_reader w = t;
    CM_TRY(der_get_element(&w, DER_TAG_SEQUENCE, &whole));
    CM_TRY(der_get_tlv(&t, DER_TAG_SEQUENCE, &body));
    crmf_spki k;
    CM_TRY(crmf_spki_parse_body(&k, body));
    k.whole = whole;
    *out = k;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_spki_from_der(crmf_spki *out, cm_span whole)
{
    der_reader r;
    der_reader_init(&r, whole);
    crmf_spki k;
    CM_TRY(crmf_spki_read(&r, &k));
    CM_TRY(der_expect_end(&r));
    *out = k;
    return cm_result_make(CM_OK);
}

cm_result crmf_spki_to_der(cm_arena *arena, cm_span *out_whole, cm_span body)
{
    // Header at most 1 + 5 octets; a fixed builder over arena memory never reallocates.
    size_t cap = body.len + 6;
    uint8_t *buf = cm_arena_alloc(arena, cap);
    CM_ENSURE(buf != NULL, CM_E_NOMEM);
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_put_tlv(&b, DER_TAG_SEQUENCE, body);
    return der_builder_finish(&b, out_whole);
}

// ---------------------------------------------------------------------------------------------
// Signature algorithms

// Marks SHA-1 while parsing PSS parameters (it is refused, but only after the whole
// AlgorithmIdentifier was read).
#define CRMF_HASH_SHA1_SEEN CRMF_HASH_COUNT

static const struct {
    const char *oid;
    size_t oid_len;
    crmf_hash hash;
} k_crmf_hashes[] = {
#define H(o, h)             \
    {                       \
        o, sizeof(o) - 1, h \
    }
    H(DER_OID_SHA224, CRMF_HASH_SHA224),
    H(DER_OID_SHA256, CRMF_HASH_SHA256),
    H(DER_OID_SHA384, CRMF_HASH_SHA384),
    H(DER_OID_SHA512, CRMF_HASH_SHA512),
#undef H
};

static const char *crmf_hash_oid(crmf_hash h, size_t *out_len)
{
    for (size_t i = 0; i < sizeof(k_crmf_hashes) / sizeof(k_crmf_hashes[0]); i++) {
        if (k_crmf_hashes[i].hash == h) {
            *out_len = k_crmf_hashes[i].oid_len;
            return k_crmf_hashes[i].oid;
        }
    }
    *out_len = 0;
    return NULL;
}

const char *crmf_hash_name(crmf_hash h)
{
    switch (h) {
    case CRMF_HASH_SHA224:
        return "SHA2-224";
    case CRMF_HASH_SHA256:
        return "SHA2-256";
    case CRMF_HASH_SHA384:
        return "SHA2-384";
    case CRMF_HASH_SHA512:
        return "SHA2-512";
    default:
        return NULL;
    }
}

// HashAlgorithm ::= AlgorithmIdentifier { sha1 | sha224 | sha256 | sha384 | sha512 ... }
// (RFC 4055 §2.1: parameters NULL or absent.) SHA-1 yields CRMF_HASH_SHA1_SEEN.
static cm_result crmf_hash_alg_parse(der_reader *r, crmf_hash *out)
{
    der_reader a;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &a));
    cm_span oid;
    cm_span params;
    CM_TRY(crmf_alg_body(&a, &oid, &params));
    CM_ENSURE(params.len == 0 || crmf_is_null(params), CRMF_E_BAD_ALG_PARAMS);
    if (der_oid_is(oid, DER_OID_SHA1)) {
        *out = CRMF_HASH_SHA1_SEEN;
        return cm_result_make(CM_OK);
    }
    for (size_t i = 0; i < sizeof(k_crmf_hashes) / sizeof(k_crmf_hashes[0]); i++) {
        if (der_oid_eq(oid, (const uint8_t *)k_crmf_hashes[i].oid, k_crmf_hashes[i].oid_len)) {
            *out = k_crmf_hashes[i].hash;
            return cm_result_make(CM_OK);
        }
    }
    CM_BAIL(CRMF_E_ALG_UNSUPPORTED);
}

// RSASSA-PSS-params ::= SEQUENCE {                              (RFC 4055 §3.1, EXPLICIT)
//     hashAlgorithm     [0] HashAlgorithm    DEFAULT sha1,
//     maskGenAlgorithm  [1] MaskGenAlgorithm DEFAULT mgf1SHA1,
//     saltLength        [2] INTEGER          DEFAULT 20,
//     trailerField      [3] TrailerField     DEFAULT trailerFieldBC }
// MaskGenAlgorithm ::= AlgorithmIdentifier { id-mgf1, HashAlgorithm }
static cm_result crmf_pss_params_parse(cm_span params, crmf_sig_alg *out)
{
    CM_ENSURE(params.len > 0, CRMF_E_BAD_ALG_PARAMS);
    der_reader p;
    der_reader s;
    der_reader tagged;
    der_reader_init(&p, params);
    CM_ENSURE(der_peek_is(&p, DER_TAG_SEQUENCE), CRMF_E_BAD_ALG_PARAMS);
    CM_TRY(der_enter(&p, DER_TAG_SEQUENCE, &s));
    crmf_hash hash = CRMF_HASH_SHA1_SEEN;
    crmf_hash mgf_hash = CRMF_HASH_SHA1_SEEN;
    uint64_t salt = 20;
    bool present;
    CM_TRY(der_enter_optional(&s, DER_CONTEXT_CONS(0), &tagged, &present));
    if (present) {
        CM_TRY(crmf_hash_alg_parse(&tagged, &hash));
        CM_TRY(der_expect_end(&tagged));
    }
    CM_TRY(der_enter_optional(&s, DER_CONTEXT_CONS(1), &tagged, &present));
    if (present) {
        der_reader mgf;
        CM_TRY(der_enter(&tagged, DER_TAG_SEQUENCE, &mgf));
        CM_TRY(der_expect_end(&tagged));
        cm_span oid;
        CM_TRY(der_get_oid(&mgf, &oid));
        CM_ENSURE(der_oid_is(oid, DER_OID_MGF1), CRMF_E_ALG_UNSUPPORTED);
        CM_TRY(crmf_hash_alg_parse(&mgf, &mgf_hash));
        CM_TRY(der_expect_end(&mgf));
    }
    CM_TRY(der_enter_optional(&s, DER_CONTEXT_CONS(2), &tagged, &present));
    if (present) {
        CM_TRY(der_get_u64(&tagged, &salt));
        CM_TRY(der_expect_end(&tagged));
        // DER: the DEFAULT is never encoded; more than 1024 octets fits no RSA key we accept.
        CM_ENSURE(salt != 20 && salt <= 1024, CRMF_E_BAD_ALG_PARAMS);
    }
    // trailerField: only trailerFieldBC (1) exists, which is the DEFAULT, so DER omits it.
    CM_ENSURE(!der_peek_is(&s, DER_CONTEXT_CONS(3)), CRMF_E_BAD_ALG_PARAMS);
    CM_TRY(der_expect_end(&s));
    CM_TRY(der_expect_end(&p));
    CM_ENSURE(hash != CRMF_HASH_SHA1_SEEN && mgf_hash != CRMF_HASH_SHA1_SEEN, CRMF_E_ALG_SHA1);
    out->hash = hash;
    out->mgf1_hash = mgf_hash;
    out->salt_len = (uint32_t)salt;
    return cm_result_make(CM_OK);
}

static const struct {
    const char *oid;
    size_t oid_len;
    crmf_sig_kind kind;
    crmf_hash hash;
} k_crmf_sig_algs[] = {
#define S(o, k, h)             \
    {                          \
        o, sizeof(o) - 1, k, h \
    }
    S(DER_OID_SHA224_WITH_RSA, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA224),
    S(DER_OID_SHA256_WITH_RSA, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA256),
    S(DER_OID_SHA384_WITH_RSA, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA384),
    S(DER_OID_SHA512_WITH_RSA, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA512),
    S(DER_OID_ECDSA_WITH_SHA224, CRMF_SIG_ECDSA, CRMF_HASH_SHA224),
    S(DER_OID_ECDSA_WITH_SHA256, CRMF_SIG_ECDSA, CRMF_HASH_SHA256),
    S(DER_OID_ECDSA_WITH_SHA384, CRMF_SIG_ECDSA, CRMF_HASH_SHA384),
    S(DER_OID_ECDSA_WITH_SHA512, CRMF_SIG_ECDSA, CRMF_HASH_SHA512),
    S(DER_OID_ED25519, CRMF_SIG_ED25519, CRMF_HASH_NONE),
    S(DER_OID_ED448, CRMF_SIG_ED448, CRMF_HASH_NONE),
#undef S
};

cm_result crmf_sig_alg_parse(der_reader *r, crmf_sig_alg *out)
{
    der_reader t = *r;
    der_reader a;
    crmf_sig_alg alg;
    memset(&alg, 0, sizeof(alg));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &a, &alg.whole));
    cm_span oid;
    cm_span params;
    CM_TRY(crmf_alg_body(&a, &oid, &params));
    if (der_oid_is(oid, DER_OID_SHA1_WITH_RSA) || der_oid_is(oid, DER_OID_ECDSA_WITH_SHA1)) {
        CM_BAIL(CRMF_E_ALG_SHA1);
    }
    if (der_oid_is(oid, DER_OID_RSASSA_PSS)) {
        alg.kind = CRMF_SIG_RSA_PSS;
        CM_TRY(crmf_pss_params_parse(params, &alg));
        *out = alg;
        *r = t;
        return cm_result_make(CM_OK);
    }
    size_t i = 0;
    const size_t n = sizeof(k_crmf_sig_algs) / sizeof(k_crmf_sig_algs[0]);
    while (i < n &&
           !der_oid_eq(oid, (const uint8_t *)k_crmf_sig_algs[i].oid, k_crmf_sig_algs[i].oid_len)) {
        i++;
    }
    CM_ENSURE(i < n, CRMF_E_ALG_UNSUPPORTED);
    alg.kind = k_crmf_sig_algs[i].kind;
    alg.hash = k_crmf_sig_algs[i].hash;
    if (alg.kind == CRMF_SIG_RSA_PKCS1) {
        // RFC 4055 §5: NULL, and implementations MUST accept it absent.
        CM_ENSURE(params.len == 0 || crmf_is_null(params), CRMF_E_BAD_ALG_PARAMS);
    } else {
        // RFC 5758 §3.2 (ECDSA) and RFC 8410 §3 (EdDSA): parameters absent.
        CM_ENSURE(params.len == 0, CRMF_E_BAD_ALG_PARAMS);
    }
    *out = alg;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_sig_alg_from_der(crmf_sig_alg *out, cm_span whole)
{
    der_reader r;
    der_reader_init(&r, whole);
    crmf_sig_alg alg;
    CM_TRY(crmf_sig_alg_parse(&r, &alg));
    CM_TRY(der_expect_end(&r));
    *out = alg;
    return cm_result_make(CM_OK);
}

static void crmf_hash_alg_marshal(der_builder *b, crmf_hash h)
{
    size_t len;
    const char *oid = crmf_hash_oid(h, &len);
    if (oid == NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, cm_span_make(oid, len));
    der_put_null(b);
    der_close(b, &m);
}

void crmf_sig_alg_marshal(der_builder *b, const crmf_sig_alg *alg)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    if (alg->kind == CRMF_SIG_RSA_PSS) {
        der_put_oid_lit(b, DER_OID_RSASSA_PSS);
        der_mark p;
        der_mark t;
        der_mark mgf;
        der_open(b, &p, DER_TAG_SEQUENCE);
        der_open(b, &t, DER_CONTEXT_CONS(0));
        crmf_hash_alg_marshal(b, alg->hash);
        der_close(b, &t);
        der_open(b, &t, DER_CONTEXT_CONS(1));
        der_open(b, &mgf, DER_TAG_SEQUENCE);
        der_put_oid_lit(b, DER_OID_MGF1);
        crmf_hash_alg_marshal(b, alg->mgf1_hash);
        der_close(b, &mgf);
        der_close(b, &t);
        if (alg->salt_len != 20) {
            der_open(b, &t, DER_CONTEXT_CONS(2));
            der_put_u64(b, alg->salt_len);
            der_close(b, &t);
        }
        der_close(b, &p);
        der_close(b, &m);
        return;
    }
    size_t i = 0;
    const size_t n = sizeof(k_crmf_sig_algs) / sizeof(k_crmf_sig_algs[0]);
    while (i < n &&
           !(k_crmf_sig_algs[i].kind == alg->kind && k_crmf_sig_algs[i].hash == alg->hash)) {
        i++;
    }
    if (i == n) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_put_oid(b, cm_span_make(k_crmf_sig_algs[i].oid, k_crmf_sig_algs[i].oid_len));
    if (alg->kind == CRMF_SIG_RSA_PKCS1) {
        der_put_null(b);
    }
    der_close(b, &m);
}

bool crmf_sig_alg_key_ok(const crmf_sig_alg *alg, crmf_key_type type)
{
    switch (alg->kind) {
    case CRMF_SIG_RSA_PKCS1:
        return type == CRMF_KEY_RSA;
    case CRMF_SIG_RSA_PSS:
        return type == CRMF_KEY_RSA || type == CRMF_KEY_RSA_PSS;
    case CRMF_SIG_ECDSA:
        return type == CRMF_KEY_EC;
    case CRMF_SIG_ED25519:
        return type == CRMF_KEY_ED25519;
    case CRMF_SIG_ED448:
        return type == CRMF_KEY_ED448;
    default:
        return false;
    }
}
