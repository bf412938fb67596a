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
    } else if (der_oid_is(k.alg_oid, DER_OID_X25519) || der_oid_is(k.alg_oid, DER_OID_X448)) {
        // RFC 8410 §3: parameters MUST be absent; the keys agree keys only (§5).
        bool x25519 = der_oid_is(k.alg_oid, DER_OID_X25519);
        CM_ENSURE(k.alg_params.len == 0, CRMF_E_BAD_SPKI);
        CM_ENSURE(!has_key || k.key.len == (x25519 ? 32u : 56u), CRMF_E_BAD_SPKI);
        k.type = x25519 ? CRMF_KEY_X25519 : CRMF_KEY_X448;
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

// HashAlgorithm ::= AlgorithmIdentifier (RFC 4055 §2.1: parameters NULL or absent): any
// digest row of the table; the caller judges which it may use.
static cm_result crmf_hash_alg_parse(der_reader *r, crmf_hash *out)
{
    der_reader a;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &a));
    cm_span oid;
    cm_span params;
    CM_TRY(crmf_alg_body(&a, &oid, &params));
    const crmf_alg *row = crmf_alg_by_oid(oid);
    CM_ENSURE(row != NULL && row->kind == CRMF_ALG_KIND_DIGEST, CRMF_E_ALG_UNSUPPORTED);
    CM_ENSURE(params.len == 0 || crmf_is_null(params), CRMF_E_BAD_ALG_PARAMS);
    *out = row->hash;
    return cm_result_make(CM_OK);
}

static const char *crmf_hash_text(crmf_hash h)
{
    const crmf_alg *a = crmf_alg_digest(h);
    return a != NULL ? a->name : "?";
}

// RSASSA-PSS-params ::= SEQUENCE {                              (RFC 4055 §3.1, EXPLICIT)
//     hashAlgorithm     [0] HashAlgorithm    DEFAULT sha1,
//     maskGenAlgorithm  [1] MaskGenAlgorithm DEFAULT mgf1SHA1,
//     saltLength        [2] INTEGER          DEFAULT 20,
//     trailerField      [3] TrailerField     DEFAULT trailerFieldBC }
// MaskGenAlgorithm ::= AlgorithmIdentifier { id-mgf1, HashAlgorithm }
// The hash must have an id-RSASSA-PSS row (SHA-2, or SHA-1), MGF1 must use the same hash
// (RFC 4056 §3) and the salt must be at least as long as the hash (RFC 4055 §3.1 recommends
// the hash's length; OpenSSL signs with the longest salt the key allows by default).
static cm_result crmf_pss_params_parse(cm_span params, crmf_sig_alg *out, cm_why *why)
{
    CM_ENSURE(params.len > 0, CRMF_E_BAD_ALG_PARAMS);
    der_reader p;
    der_reader s;
    der_reader tagged;
    der_reader_init(&p, params);
    CM_ENSURE(der_peek_is(&p, DER_TAG_SEQUENCE), CRMF_E_BAD_ALG_PARAMS);
    CM_TRY(der_enter(&p, DER_TAG_SEQUENCE, &s));
    crmf_hash hash = CRMF_HASH_SHA1;
    crmf_hash mgf_hash = CRMF_HASH_SHA1;
    uint64_t salt = 20;
    bool present;
    CM_TRY(der_enter_optional(&s, DER_CONTEXT_CONS(0), &tagged, &present));
    if (present) {
        CM_TRY(crmf_hash_alg_parse(&tagged, &hash));
        CM_TRY(der_expect_end(&tagged));
        // DER: the DEFAULT is never encoded.
        CM_ENSURE(hash != CRMF_HASH_SHA1, CRMF_E_BAD_ALG_PARAMS);
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
    const crmf_alg *row = crmf_alg_sig(CRMF_SIG_RSA_PSS, hash);
    if (row == NULL || row->params != CRMF_PARAMS_PSS) {
        cm_why_set(why, "RSASSA-PSS with the %s hash is not supported", crmf_hash_text(hash));
        CM_BAIL(CRMF_E_ALG_UNSUPPORTED);
    }
    if (mgf_hash != hash) {
        cm_why_set(why, "the RSASSA-PSS MGF1 hash (%s) differs from the message hash (%s)",
                   crmf_hash_text(mgf_hash), crmf_hash_text(hash));
        CM_BAIL(CRMF_E_BAD_ALG_PARAMS);
    }
    if (salt < crmf_hash_len(hash)) {
        cm_why_set(why, "the RSASSA-PSS saltLength %llu is shorter than the %s hash (%zu octets)",
                   (unsigned long long)salt, crmf_hash_text(hash), crmf_hash_len(hash));
        CM_BAIL(CRMF_E_BAD_ALG_PARAMS);
    }
    out->hash = hash;
    out->mgf1_hash = mgf_hash;
    out->salt_len = (uint32_t)salt;
    return cm_result_make(CM_OK);
}

// crmf_sig_alg_read is crmf_sig_alg_parse with reasons.
static cm_result crmf_sig_alg_read(der_reader *r, crmf_sig_alg *out, cm_why *why)
{
    der_reader t = *r;
    der_reader a;
    crmf_sig_alg alg;
    memset(&alg, 0, sizeof(alg));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &a, &alg.whole));
    cm_span oid;
    cm_span params;
    CM_TRY(crmf_alg_body(&a, &oid, &params));
    const crmf_alg *row = crmf_alg_by_oid(oid);
    CM_ENSURE(row != NULL && row->kind == CRMF_ALG_KIND_SIGNATURE, CRMF_E_ALG_UNSUPPORTED);
    alg.kind = row->sig;
    alg.hash = row->hash;
    if (row->params == CRMF_PARAMS_PSS) {
        CM_TRY(crmf_pss_params_parse(params, &alg, why));
    } else {
        // RFC 4055 §5 (RSA: NULL, absent accepted), RFC 5758 §3.2 (ECDSA), RFC 8410 §3
        // (EdDSA), RFC 8702 §3.2 (SHAKE variants), RFC 9688 (SHA3): absent.
        if (!crmf_alg_params_ok(row, params)) {
            cm_why_set(why, "%s takes %s parameters", row->asn1_name,
                       row->params == CRMF_PARAMS_ABSENT ? "no" : "NULL or no");
            CM_BAIL(CRMF_E_BAD_ALG_PARAMS);
        }
        if (alg.kind == CRMF_SIG_RSA_PSS) {
            // RSASSA-PSS-SHAKE: the SHAKE is the MGF and the salt is as long as its output.
            alg.mgf1_hash = alg.hash;
            alg.salt_len = (uint32_t)crmf_hash_len(alg.hash);
        }
    }
    *out = alg;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_sig_alg_parse(der_reader *r, crmf_sig_alg *out)
{
    return crmf_sig_alg_read(r, out, NULL);
}

cm_result crmf_sig_alg_decode(crmf_sig_alg *out, cm_span whole, cm_why *why)
{
    der_reader r;
    der_reader_init(&r, whole);
    crmf_sig_alg alg;
    CM_TRY(crmf_sig_alg_read(&r, &alg, why));
    CM_TRY(der_expect_end(&r));
    *out = alg;
    return cm_result_make(CM_OK);
}

cm_result crmf_sig_alg_from_der(crmf_sig_alg *out, cm_span whole)
{
    return crmf_sig_alg_decode(out, whole, NULL);
}

const crmf_alg *crmf_sig_alg_row(const crmf_sig_alg *alg)
{
    return crmf_alg_sig(alg->kind, alg->hash);
}

bool crmf_sig_alg_of(crmf_sig_alg *out, crmf_alg_id id)
{
    const crmf_alg *a = crmf_alg_get(id);
    if (a == NULL || a->kind != CRMF_ALG_KIND_SIGNATURE) {
        return false;
    }
    memset(out, 0, sizeof(*out));
    out->kind = a->sig;
    out->hash = a->hash;
    if (a->sig == CRMF_SIG_RSA_PSS) {
        out->mgf1_hash = a->hash;
        out->salt_len = (uint32_t)crmf_hash_len(a->hash);
    }
    return true;
}

// HashAlgorithm with NULL parameters, as RFC 4055 §2.1 defines sha256Identifier and friends.
static void crmf_hash_alg_marshal(der_builder *b, crmf_hash h)
{
    const crmf_alg *a = crmf_alg_digest(h);
    if (a == NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, a->oid);
    der_put_null(b);
    der_close(b, &m);
}

void crmf_sig_alg_marshal(der_builder *b, const crmf_sig_alg *alg)
{
    const crmf_alg *row = crmf_sig_alg_row(alg);
    if (row == NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, row->oid);
    if (row->params == CRMF_PARAMS_PSS) {
        der_mark p;
        der_mark t;
        der_mark mgf;
        der_open(b, &p, DER_TAG_SEQUENCE);
        if (alg->hash != CRMF_HASH_SHA1) {
            der_open(b, &t, DER_CONTEXT_CONS(0));
            crmf_hash_alg_marshal(b, alg->hash);
            der_close(b, &t);
        }
        if (alg->mgf1_hash != CRMF_HASH_SHA1) {
            der_open(b, &t, DER_CONTEXT_CONS(1));
            der_open(b, &mgf, DER_TAG_SEQUENCE);
            der_put_oid_lit(b, DER_OID_MGF1);
            crmf_hash_alg_marshal(b, alg->mgf1_hash);
            der_close(b, &mgf);
            der_close(b, &t);
        }
        if (alg->salt_len != 20) {
            der_open(b, &t, DER_CONTEXT_CONS(2));
            der_put_u64(b, alg->salt_len);
            der_close(b, &t);
        }
        der_close(b, &p);
    } else if (row->params == CRMF_PARAMS_NULL) {
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
