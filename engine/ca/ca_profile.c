// Profiles, SubjectPublicKeyInfo inspection and the policy check of a request.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "engine/ca/ca_internal.h"
#include "engine/der/der_oid.h"

// ---------------------------------------------------------------------------------------------
// SubjectPublicKeyInfo

// SubjectPublicKeyInfo ::= SEQUENCE {
//     algorithm            AlgorithmIdentifier,
//     subjectPublicKey     BIT STRING }                        -- RFC 5280 §4.1
// AlgorithmIdentifier ::= SEQUENCE {
//     algorithm  OBJECT IDENTIFIER, parameters ANY DEFINED BY algorithm OPTIONAL }
// ECParameters ::= CHOICE { namedCurve OBJECT IDENTIFIER, ... }  -- RFC 5480 §2.1.1 (only this)
// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } -- RFC 3279 §2.3.1
// Ed25519/Ed448: parameters MUST be absent                      -- RFC 8410 §3
static cm_result ca_rsa_key(ca_key_info *out, cm_span key)
{
    der_reader r, seq;
    der_reader_init(&r, key);
    cm_span n, e;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !cm_ok(der_expect_end(&r)) ||
        !cm_ok(der_get_int_span(&seq, &n)) || !cm_ok(der_get_int_span(&seq, &e)) ||
        !cm_ok(der_expect_end(&seq))) {
        CM_BAIL(CA_E_SPKI_MALFORMED);
    }
    // Both positive; the modulus odd; the exponent odd and at least 3.
    CM_ENSURE((n.p[0] & 0x80) == 0 && (e.p[0] & 0x80) == 0, CA_E_SPKI_MALFORMED);
    CM_ENSURE((n.p[n.len - 1] & 1) == 1 && (e.p[e.len - 1] & 1) == 1, CA_E_SPKI_MALFORMED);
    CM_ENSURE(e.len > 1 || e.p[0] >= 3, CA_E_SPKI_MALFORMED);
    if (n.p[0] == 0) {
        n.p++;
        n.len--;
    }
    CM_ENSURE(n.len > 0 && n.len <= 2048, CA_E_SPKI_MALFORMED); // up to 16384 bits
    uint32_t bits = (uint32_t)n.len * 8;
    for (uint8_t top = n.p[0]; (top & 0x80) == 0; top = (uint8_t)(top << 1)) {
        bits--;
    }
    out->type = CA_KEY_RSA;
    out->bits = bits;
    return cm_result_make(CM_OK);
}

static cm_result ca_ec_key(ca_key_info *out, cm_span curve, cm_span point)
{
    size_t field;
    if (der_oid_is(curve, DER_OID_P256)) {
        out->type = CA_KEY_EC_P256;
        out->bits = 256;
        field = 32;
    } else if (der_oid_is(curve, DER_OID_P384)) {
        out->type = CA_KEY_EC_P384;
        out->bits = 384;
        field = 48;
    } else if (der_oid_is(curve, DER_OID_P521)) {
        out->type = CA_KEY_EC_P521;
        out->bits = 521;
        field = 66;
    } else {
        CM_BAIL(CA_E_KEY_TYPE);
    }
    // SEC 1 §2.3.3: 04||X||Y uncompressed, 02/03||X compressed.
    const bool uncompressed = point.len == 1 + 2 * field && point.p[0] == 0x04;
    const bool compressed = point.len == 1 + field && (point.p[0] == 0x02 || point.p[0] == 0x03);
    CM_ENSURE(uncompressed || compressed, CA_E_SPKI_MALFORMED);
    return cm_result_make(CM_OK);
}

cm_result ca_spki_parse(ca_key_info *out, cm_span spki)
{
    der_reader r, seq, alg;
    der_reader_init(&r, spki);
    cm_span oid, key;
    uint8_t unused;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !cm_ok(der_expect_end(&r)) ||
        !cm_ok(der_enter(&seq, DER_TAG_SEQUENCE, &alg)) || !cm_ok(der_get_oid(&alg, &oid)) ||
        !cm_ok(der_get_bitstring(&seq, &key, &unused)) || !cm_ok(der_expect_end(&seq)) ||
        unused != 0 || key.len == 0) {
        CM_BAIL(CA_E_SPKI_MALFORMED);
    }
    ca_key_info info = {0, 0, key};
    if (der_oid_is(oid, DER_OID_EC_PUBLIC_KEY)) {
        cm_span curve;
        if (!cm_ok(der_get_oid(&alg, &curve)) || !cm_ok(der_expect_end(&alg))) {
            CM_BAIL(CA_E_SPKI_MALFORMED);
        }
        CM_TRY(ca_ec_key(&info, curve, key));
    } else if (der_oid_is(oid, DER_OID_RSA_ENCRYPTION)) {
        if (!cm_ok(der_get_null(&alg)) || !cm_ok(der_expect_end(&alg))) {
            CM_BAIL(CA_E_SPKI_MALFORMED);
        }
        CM_TRY(ca_rsa_key(&info, key));
    } else if (der_oid_is(oid, DER_OID_RSASSA_PSS)) {
        // An RSA key for RSASSA-PSS only: parameters absent or RSASSA-PSS-params restricting
        // its use (RFC 4055 §1.2); an RSA key to the profile.
        cm_span params;
        if (!der_reader_empty(&alg) && (!cm_ok(der_get_tlv(&alg, DER_TAG_SEQUENCE, &params)) ||
                                        !cm_ok(der_expect_end(&alg)))) {
            CM_BAIL(CA_E_SPKI_MALFORMED);
        }
        CM_TRY(ca_rsa_key(&info, key));
    } else if (der_oid_is(oid, DER_OID_ED25519) || der_oid_is(oid, DER_OID_ED448)) {
        const bool ed25519 = der_oid_is(oid, DER_OID_ED25519);
        CM_ENSURE(der_reader_empty(&alg), CA_E_SPKI_MALFORMED);
        CM_ENSURE(key.len == (ed25519 ? 32u : 57u), CA_E_SPKI_MALFORMED);
        info.type = ed25519 ? CA_KEY_ED25519 : CA_KEY_ED448;
        info.bits = ed25519 ? 256 : 456;
    } else if (der_oid_is(oid, DER_OID_X25519) || der_oid_is(oid, DER_OID_X448)) {
        const bool x25519 = der_oid_is(oid, DER_OID_X25519);
        CM_ENSURE(der_reader_empty(&alg), CA_E_SPKI_MALFORMED);
        CM_ENSURE(key.len == (x25519 ? 32u : 56u), CA_E_SPKI_MALFORMED);
        info.type = x25519 ? CA_KEY_X25519 : CA_KEY_X448;
        info.bits = x25519 ? 255 : 448;
    } else {
        CM_BAIL(CA_E_KEY_TYPE);
    }
    *out = info;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Profiles

void ca_errf(char *err, size_t err_cap, const char *fmt, ...)
{
    if (err == NULL || err_cap == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_cap, fmt, ap);
    va_end(ap);
}

// ca_ossl_reason puts the last OpenSSL error's reason text into |buf| and clears the queue.
static const char *ca_ossl_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        (void)snprintf(buf, cap, "rejected by OpenSSL");
    } else {
        const char *reason = ERR_reason_error_string(e);
        (void)snprintf(buf, cap, "%s", reason != NULL ? reason : "rejected by OpenSSL");
    }
    ERR_clear_error();
    return buf;
}

static cm_result ca_profile_rdns(ca_profile *pr, char *err, size_t err_cap,
                                 const ca_profile_params *p)
{
    const size_t total = p->num_required_rdns + p->num_allowed_rdns;
    if (total > CA_MAX_RDN_RULES) {
        ca_errf(err, err_cap, "more than %u subject RDN rules", CA_MAX_RDN_RULES);
        CM_BAIL(CA_E_CONFIG);
    }
    pr->rdn_buf = malloc(total * 64 + 1);
    CM_ENSURE(pr->rdn_buf != NULL, CM_E_NOMEM);
    size_t used = 0;
    for (size_t i = 0; i < total; i++) {
        const bool req = i < p->num_required_rdns;
        const char *name = req ? p->required_rdns[i] : p->allowed_rdns[i - p->num_required_rdns];
        ASN1_OBJECT *obj = name != NULL ? OBJ_txt2obj(name, 0) : NULL;
        const size_t len = obj != NULL ? OBJ_length(obj) : 0;
        if (obj == NULL || len == 0 || len > 64) {
            ASN1_OBJECT_free(obj);
            ERR_clear_error();
            ca_errf(err, err_cap, "'%s' is not an attribute type OpenSSL knows",
                    name != NULL ? name : "(null)");
            CM_BAIL(CA_E_CONFIG);
        }
        memcpy(pr->rdn_buf + used, OBJ_get0_data(obj), len);
        pr->rdn_oids[i] = cm_span_make(pr->rdn_buf + used, len);
        used += len;
        ASN1_OBJECT_free(obj);
    }
    pr->num_required = p->num_required_rdns;
    pr->num_allowed = p->num_allowed_rdns;
    return cm_result_make(CM_OK);
}

static const char k_ca_forbidden[] =
    "not allowed in a profile (SKI and AKI are always added, SANs come from the request)";

static bool ca_ext_forbidden(int nid)
{
    return nid == NID_subject_key_identifier || nid == NID_authority_key_identifier ||
           nid == NID_subject_alt_name;
}

// ca_profile_exts encodes every "name = value" of |section| with X509V3_EXT_nconf.
static cm_result ca_profile_exts(ca_profile *pr, char *err, size_t err_cap, CONF *conf,
                                 const char *section)
{
    char why[160];
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(conf, section);
    if (vals == NULL) {
        ERR_clear_error();
        ca_errf(err, err_cap, "extensions section [%s] does not exist", section);
        CM_BAIL(CA_E_CONFIG);
    }
    der_builder b;
    der_builder_init(&b, 512);
    cm_result res = cm_result_make(CA_E_CONFIG);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, NULL, NULL, NULL, NULL, 0);
    X509V3_set_nconf(&ctx, conf);
    const int n = sk_CONF_VALUE_num(vals);
    if (n > (int)CA_MAX_PROFILE_EXTS) {
        ca_errf(err, err_cap, "[%s]: more than %u extensions", section, CA_MAX_PROFILE_EXTS);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(vals, i);
        if (ca_ext_forbidden(OBJ_txt2nid(v->name))) {
            ERR_clear_error();
            ca_errf(err, err_cap, "[%s] %s: %s", section, v->name, k_ca_forbidden);
            goto out;
        }
        X509_EXTENSION *ext = X509V3_EXT_nconf(conf, &ctx, v->name, v->value);
        if (ext == NULL) {
            ca_errf(err, err_cap, "[%s] %s: '%s' is not a valid extension value (%s)", section,
                    v->name, v->value, ca_ossl_reason(why, sizeof(why)));
            goto out;
        }
        if (ca_ext_forbidden(OBJ_obj2nid(X509_EXTENSION_get_object(ext)))) {
            X509_EXTENSION_free(ext);
            ca_errf(err, err_cap, "[%s] %s: %s", section, v->name, k_ca_forbidden);
            goto out;
        }
        unsigned char *der = NULL;
        const int len = i2d_X509_EXTENSION(ext, &der);
        X509_EXTENSION_free(ext);
        if (len <= 0) {
            ERR_clear_error();
            ca_errf(err, err_cap, "[%s] %s: cannot be encoded", section, v->name);
            goto out;
        }
        der_put_raw(&b, cm_span_make(der, (size_t)len));
        OPENSSL_free(der);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    res = der_builder_take(&b, &buf, &len);
    if (!cm_ok(res)) {
        goto out;
    }
    pr->ext_der = buf;
    pr->ext_der_len = len;
    // Read our own encoding back: each Extension's OID, and no OID twice.
    der_reader r;
    der_reader_init(&r, cm_span_make(buf, len));
    while (!der_reader_empty(&r)) {
        der_reader e;
        cm_span oid;
        if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &e)) || !cm_ok(der_get_oid(&e, &oid))) {
            res = cm_result_make(CA_E_CONFIG);
            ca_errf(err, err_cap, "[%s]: OpenSSL wrote an unreadable extension", section);
            goto out;
        }
        for (size_t j = 0; j < pr->num_exts; j++) {
            if (cm_span_eq(pr->ext_oids[j], oid)) {
                char txt[64];
                der_oid_to_text(oid, txt, sizeof(txt));
                res = cm_result_make(CA_E_CONFIG);
                ca_errf(err, err_cap, "[%s]: extension %s given twice", section, txt);
                goto out;
            }
        }
        pr->ext_oids[pr->num_exts++] = oid;
    }
    res = cm_result_make(CM_OK);
out:
    der_builder_cleanup(&b);
    return res;
}

// ca_profile_append_ext encodes |name| = |value| with X509V3_EXT_nconf (|conf| may be NULL for a
// value without @section references) and appends it to the profile's extensions.
static cm_result ca_profile_append_ext(ca_profile *pr, char *err, size_t err_cap, CONF *conf,
                                       const char *key, const char *name, const char *value)
{
    CM_ENSURE(pr->num_exts < CA_MAX_PROFILE_EXTS, CA_E_CONFIG);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, NULL, NULL, NULL, NULL, 0);
    if (conf != NULL) {
        X509V3_set_nconf(&ctx, conf);
    }
    char why[160];
    X509_EXTENSION *ext = X509V3_EXT_nconf(conf, &ctx, name, value);
    if (ext == NULL) {
        ca_errf(err, err_cap, "%s: '%s' is not a valid %s (%s)", key, value, name,
                ca_ossl_reason(why, sizeof(why)));
        CM_BAIL(CA_E_CONFIG);
    }
    unsigned char *der = NULL;
    const int len = i2d_X509_EXTENSION(ext, &der);
    X509_EXTENSION_free(ext);
    if (len <= 0) {
        ERR_clear_error();
        ca_errf(err, err_cap, "%s: cannot be encoded", key);
        CM_BAIL(CA_E_CONFIG);
    }
    uint8_t *buf = realloc(pr->ext_der, pr->ext_der_len + (size_t)len);
    if (buf == NULL) {
        OPENSSL_free(der);
        CM_BAIL(CM_E_NOMEM);
    }
    // The OIDs point into ext_der, which just moved: find them again afterwards.
    memcpy(buf + pr->ext_der_len, der, (size_t)len);
    OPENSSL_free(der);
    pr->ext_der = buf;
    pr->ext_der_len += (size_t)len;
    der_reader r;
    der_reader_init(&r, cm_span_make(pr->ext_der, pr->ext_der_len));
    pr->num_exts = 0;
    while (!der_reader_empty(&r) && pr->num_exts < CA_MAX_PROFILE_EXTS) {
        der_reader e;
        cm_span oid;
        CM_ENSURE(cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &e)) && cm_ok(der_get_oid(&e, &oid)),
                  CA_E_CONFIG);
        pr->ext_oids[pr->num_exts++] = oid;
    }
    return cm_result_make(CM_OK);
}

// ca_profile_ca_exts adds what a CA profile writes (ca_profile_params.is_ca): basicConstraints,
// keyUsage unless the extensions section has one, nameConstraints.
static cm_result ca_profile_ca_exts(ca_profile *pr, char *err, size_t err_cap,
                                    const ca_profile_params *p, CONF *conf)
{
    cm_span v;
    bool crit;
    if (!p->is_ca) {
        if (p->has_path_len || p->name_constraints != NULL) {
            ca_errf(err, err_cap, "%s needs ca = on (a CA profile)",
                    p->has_path_len ? "path_len" : "name_constraints");
            CM_BAIL(CA_E_CONFIG);
        }
        return cm_result_make(CM_OK);
    }
    if (ca_profile_find_ext(pr, CM_SPAN_LIT(DER_OID_CE_BASIC_CONSTRAINTS), &v, &crit)) {
        ca_errf(err, err_cap,
                "ca = on writes basicConstraints (with path_len): remove it from "
                "the extensions section");
        CM_BAIL(CA_E_CONFIG);
    }
    char bc[64];
    if (p->has_path_len) {
        (void)snprintf(bc, sizeof(bc), "critical, CA:TRUE, pathlen:%u", p->path_len);
    } else {
        (void)snprintf(bc, sizeof(bc), "critical, CA:TRUE");
    }
    CM_TRY(ca_profile_append_ext(pr, err, err_cap, NULL, "ca", "basicConstraints", bc));
    if (!ca_profile_find_ext(pr, CM_SPAN_LIT(DER_OID_CE_KEY_USAGE), &v, &crit)) {
        CM_TRY(ca_profile_append_ext(pr, err, err_cap, NULL, "ca", "keyUsage",
                                     "critical, keyCertSign, cRLSign"));
    }
    if (p->name_constraints != NULL) {
        if (ca_profile_find_ext(pr, CM_SPAN_LIT(DER_OID_CE_NAME_CONSTRAINTS), &v, &crit)) {
            ca_errf(err, err_cap,
                    "name_constraints and the extensions section's "
                    "nameConstraints: keep one");
            CM_BAIL(CA_E_CONFIG);
        }
        char nc[1100];
        const int n = snprintf(nc, sizeof(nc), "critical, %s", p->name_constraints);
        if (n < 0 || (size_t)n >= sizeof(nc)) {
            ca_errf(err, err_cap, "name_constraints: longer than %zu characters", sizeof(nc) - 12);
            CM_BAIL(CA_E_CONFIG);
        }
        CM_TRY(ca_profile_append_ext(pr, err, err_cap, conf, "name_constraints", "nameConstraints",
                                     nc));
    }
    return cm_result_make(CM_OK);
}

static cm_result ca_profile_req_exts(ca_profile *pr, char *err, size_t err_cap,
                                     const ca_profile_params *p);

cm_result ca_profile_new(ca_profile **out, char *err, size_t err_cap, const ca_profile_params *p,
                         CONF *conf, const char *ext_section)
{
    cm_result res = cm_result_make(CA_E_CONFIG);
    ca_profile *pr = calloc(1, sizeof(*pr));
    CM_ENSURE(pr != NULL, CM_E_NOMEM);
    if (p->default_days < 1 || p->max_days < p->default_days) {
        ca_errf(err, err_cap, "validity: default %u and max %u days are not 1 <= default <= max",
                p->default_days, p->max_days);
        goto out;
    }
    if (p->max_days > 36500) {
        ca_errf(err, err_cap, "validity: max %u days is over 100 years", p->max_days);
        goto out;
    }
    if (p->key_types == 0) {
        ca_errf(err, err_cap, "no key type is allowed");
        goto out;
    }
    const uint32_t agree =
        CA_KEY_EC_P256 | CA_KEY_EC_P384 | CA_KEY_EC_P521 | CA_KEY_X25519 | CA_KEY_X448;
    if ((p->key_types & (CA_KEY_X25519 | CA_KEY_X448)) != 0) {
        ca_errf(err, err_cap, "X25519 and X448 keys cannot sign: list them in kem_key_types");
        goto out;
    }
    if ((p->enc_key_types & ~(uint32_t)CA_KEY_RSA) != 0) {
        ca_errf(err, err_cap, "encryption_key_types: only RSA keys transport keys");
        goto out;
    }
    if ((p->kem_key_types & ~agree) != 0) {
        ca_errf(err, err_cap,
                "kem_key_types: only P-256, P-384, P-521, X25519 and X448 keys "
                "agree keys");
        goto out;
    }
    if (((p->key_types | p->enc_key_types) & CA_KEY_RSA) != 0 &&
        (p->rsa_min_bits < 1024 || p->rsa_max_bits < p->rsa_min_bits || p->rsa_max_bits > 16384)) {
        ca_errf(err, err_cap, "RSA sizes %u..%u are not 1024 <= min <= max <= 16384",
                p->rsa_min_bits, p->rsa_max_bits);
        goto out;
    }
    pr->p = *p;
    pr->p.required_rdns = NULL;
    pr->p.allowed_rdns = NULL;
    pr->p.eku_allowed = NULL;
    pr->p.name = NULL;
    pr->p.name_constraints = NULL;
    if (p->name != NULL) {
        pr->name = strdup(p->name);
        if (pr->name == NULL) {
            res = cm_result_make(CM_E_NOMEM);
            goto out;
        }
        pr->p.name = pr->name;
    }
    res = ca_profile_rdns(pr, err, err_cap, p);
    if (!cm_ok(res)) {
        goto out;
    }
    if (ext_section != NULL) {
        res = ca_profile_exts(pr, err, err_cap, conf, ext_section);
        if (!cm_ok(res)) {
            goto out;
        }
    }
    res = ca_profile_ca_exts(pr, err, err_cap, p, conf);
    if (!cm_ok(res)) {
        goto out;
    }
    res = ca_profile_req_exts(pr, err, err_cap, p);
    if (!cm_ok(res)) {
        goto out;
    }
    if (p->is_ca && (pr->own_ku & CA_KU_KEY_CERT_SIGN) == 0) {
        ca_errf(err, err_cap, "ca = on: the extensions section's keyUsage lacks keyCertSign");
        res = cm_result_make(CA_E_CONFIG);
        goto out;
    }
    *out = pr;
    pr = NULL;
    res = cm_result_make(CM_OK);
out:
    ca_profile_free(pr);
    return res;
}

void ca_profile_free(ca_profile *p)
{
    if (p == NULL) {
        return;
    }
    free(p->rdn_buf);
    free(p->eku_buf);
    free(p->ext_der);
    free(p->name);
    free(p);
}

uint32_t ca_profile_key_types(const ca_profile *p, uint32_t *out_rsa_min_bits)
{
    if (out_rsa_min_bits != NULL) {
        *out_rsa_min_bits = p->p.rsa_min_bits;
    }
    return p->p.key_types;
}

bool ca_profile_implicit_confirm(const ca_profile *p)
{
    return p->p.implicit_confirm;
}

cm_span ca_profile_extensions(const ca_profile *p)
{
    return cm_span_make(p->ext_der, p->ext_der_len);
}

bool ca_profile_is_ca(const ca_profile *p)
{
    return p->is_ca;
}

bool ca_profile_path_len(const ca_profile *p, uint32_t *out)
{
    // BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE,
    //                                 pathLenConstraint INTEGER (0..MAX) OPTIONAL } (§4.2.1.9)
    cm_span v;
    bool crit;
    if (!ca_profile_find_ext(p, CM_SPAN_LIT(DER_OID_CE_BASIC_CONSTRAINTS), &v, &crit)) {
        return false;
    }
    der_reader r, seq;
    der_reader_init(&r, v);
    bool ca = false;
    uint64_t n = 0;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) ||
        (der_peek_is(&seq, DER_TAG_BOOLEAN) && !cm_ok(der_get_bool(&seq, &ca))) ||
        !der_peek_is(&seq, DER_TAG_INTEGER) || !cm_ok(der_get_u64(&seq, &n)) || n > UINT32_MAX) {
        return false;
    }
    *out = (uint32_t)n;
    return true;
}

bool ca_profile_find_ext(const ca_profile *pr, cm_span oid, cm_span *out_value, bool *out_critical)
{
    der_reader r;
    der_reader_init(&r, cm_span_make(pr->ext_der, pr->ext_der_len));
    while (!der_reader_empty(&r)) {
        der_reader e;
        cm_span id, value;
        bool critical = false;
        // Our own encoding (ca_profile_exts read it back once): well-formed.
        if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &e)) || !cm_ok(der_get_oid(&e, &id)) ||
            (der_peek_is(&e, DER_TAG_BOOLEAN) && !cm_ok(der_get_bool(&e, &critical))) ||
            !cm_ok(der_get_octets(&e, &value))) {
            return false;
        }
        if (cm_span_eq(id, oid)) {
            *out_value = value;
            *out_critical = critical;
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// Reasons: what a refusal names (profile, key types, attribute labels, dates)

typedef struct ca_bit_name {
    uint32_t bit;
    const char *name;
} ca_bit_name;

// As the configuration spells them (key_types, san_types).
static const ca_bit_name k_ca_key_names[] = {
    {CA_KEY_EC_P256, "P-256"}, {CA_KEY_EC_P384, "P-384"},   {CA_KEY_EC_P521, "P-521"},
    {CA_KEY_RSA, "RSA"},       {CA_KEY_ED25519, "Ed25519"}, {CA_KEY_ED448, "Ed448"},
    {CA_KEY_X25519, "X25519"}, {CA_KEY_X448, "X448"},
};
static const ca_bit_name k_ca_san_names[] = {
    {CA_SAN_DNS, "dns"}, {CA_SAN_IP, "ip"}, {CA_SAN_EMAIL, "email"}, {CA_SAN_URI, "uri"}};

static const char *ca_profile_label(const ca_profile *pr)
{
    return pr->p.name != NULL && pr->p.name[0] != '\0' ? pr->p.name : "(unnamed)";
}

// ca_text_add appends |s| to the list in |buf|, separated by ", ".
static void ca_text_add(char *buf, size_t cap, const char *s)
{
    const size_t used = strlen(buf);
    if (used < cap) {
        (void)snprintf(buf + used, cap - used, "%s%s", used > 0 ? ", " : "", s);
    }
}

// ca_text_join appends |s| to the sentence in |buf|, separated by "; ".
static void ca_text_join(char *buf, size_t cap, const char *s)
{
    const size_t used = strlen(buf);
    if (used < cap) {
        (void)snprintf(buf + used, cap - used, "%s%s", used > 0 ? "; " : "", s);
    }
}

// ca_bits_text lists the names of the bits set in |bits| ("none" when none is).
static const char *ca_bits_text(char *buf, size_t cap, uint32_t bits, const ca_bit_name *names,
                                size_t num)
{
    buf[0] = '\0';
    for (size_t i = 0; i < num; i++) {
        if ((bits & names[i].bit) != 0) {
            ca_text_add(buf, cap, names[i].name);
        }
    }
    if (buf[0] == '\0') {
        (void)snprintf(buf, cap, "none");
    }
    return buf;
}

static const char *ca_key_name(uint32_t type)
{
    for (size_t i = 0; i < sizeof(k_ca_key_names) / sizeof(k_ca_key_names[0]); i++) {
        if (k_ca_key_names[i].bit == type) {
            return k_ca_key_names[i].name;
        }
    }
    return "?";
}

const char *ca_key_type_name(uint32_t type)
{
    return ca_key_name(type);
}

// ca_oid_name writes OpenSSL's short name of |oid| ("basicConstraints"), followed by the
// dotted OID when |with_dotted|, or the dotted OID alone when OpenSSL has no name for it.
// Only for refusals: OBJ_txt2obj allocates.
static const char *ca_oid_name(char *buf, size_t cap, cm_span oid, bool with_dotted)
{
    char dotted[96];
    der_oid_to_text(oid, dotted, sizeof(dotted));
    ASN1_OBJECT *obj = OBJ_txt2obj(dotted, 1);
    const int nid = obj != NULL ? OBJ_obj2nid(obj) : NID_undef;
    ASN1_OBJECT_free(obj);
    ERR_clear_error();
    const char *sn = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
    if (sn == NULL) {
        (void)snprintf(buf, cap, "%s", dotted);
    } else if (with_dotted) {
        (void)snprintf(buf, cap, "%s (%s)", sn, dotted);
    } else {
        (void)snprintf(buf, cap, "%s", sn);
    }
    return buf;
}

// ca_spki_alg_text names the key algorithm of |spki| (the curve for EC keys) for a refusal of
// a key type ca_spki_parse does not know.
static const char *ca_spki_alg_text(char *buf, size_t cap, cm_span spki)
{
    der_reader r, seq, alg;
    der_reader_init(&r, spki);
    cm_span oid, curve;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) ||
        !cm_ok(der_enter(&seq, DER_TAG_SEQUENCE, &alg)) || !cm_ok(der_get_oid(&alg, &oid))) {
        (void)snprintf(buf, cap, "?");
        return buf;
    }
    if (der_oid_is(oid, DER_OID_EC_PUBLIC_KEY) && cm_ok(der_get_oid(&alg, &curve))) {
        return ca_oid_name(buf, cap, curve, false);
    }
    return ca_oid_name(buf, cap, oid, false);
}

// ca_time_text writes |t| as "2026-05-04 12:00:00 UTC".
static const char *ca_time_text(char *buf, size_t cap, int64_t t)
{
    int y, mo, d, h, mi, s;
    cm_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
    (void)snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d UTC", y, mo, d, h, mi, s);
    return buf;
}

// ca_rdn_rules_text lists the attribute types a rules-mode profile accepts (required first).
static const char *ca_rdn_rules_text(char *buf, size_t cap, const ca_profile *pr)
{
    buf[0] = '\0';
    for (size_t i = 0; i < pr->num_required + pr->num_allowed; i++) {
        char oid[64];
        ca_text_add(buf, cap, ca_attr_label_of(pr->rdn_oids[i], oid, sizeof(oid)));
    }
    return buf;
}

// ---------------------------------------------------------------------------------------------
// keyUsage, extendedKeyUsage, basicConstraints: the profile's own and what a request may ask

static const ca_bit_name k_ca_ku_names[] = {
    {CA_KU_DIGITAL_SIGNATURE, "digitalSignature"},
    {CA_KU_NON_REPUDIATION, "nonRepudiation"},
    {CA_KU_KEY_ENCIPHERMENT, "keyEncipherment"},
    {CA_KU_DATA_ENCIPHERMENT, "dataEncipherment"},
    {CA_KU_KEY_AGREEMENT, "keyAgreement"},
    {CA_KU_KEY_CERT_SIGN, "keyCertSign"},
    {CA_KU_CRL_SIGN, "cRLSign"},
    {CA_KU_ENCIPHER_ONLY, "encipherOnly"},
    {CA_KU_DECIPHER_ONLY, "decipherOnly"},
};
#define CA_NUM_KU_NAMES (sizeof(k_ca_ku_names) / sizeof(k_ca_ku_names[0]))

uint32_t ca_key_usage_bit(const char *name)
{
    if (strcasecmp(name, "contentCommitment") == 0) {
        return CA_KU_NON_REPUDIATION; // RFC 5280's later name for the same bit
    }
    for (size_t i = 0; i < CA_NUM_KU_NAMES; i++) {
        if (strcasecmp(name, k_ca_ku_names[i].name) == 0) {
            return k_ca_ku_names[i].bit;
        }
    }
    return 0;
}

const char *ca_key_usage_text(char *buf, size_t cap, uint32_t bits)
{
    return ca_bits_text(buf, cap, bits, k_ca_ku_names, CA_NUM_KU_NAMES);
}

// KeyUsage ::= BIT STRING { digitalSignature (0), nonRepudiation (1), keyEncipherment (2),
//     dataEncipherment (3), keyAgreement (4), keyCertSign (5), cRLSign (6), encipherOnly (7),
//     decipherOnly (8) }                                        -- RFC 5280 §4.2.1.3
// At least one bit is set (RFC 5280: "at least one of the bits MUST be set to 1").
static cm_result ca_ku_parse(cm_span value, uint32_t *out)
{
    der_reader r;
    der_reader_init(&r, value);
    uint32_t bits = 0;
    if (!cm_ok(der_get_bitstring_flags(&r, &bits)) || !der_reader_empty(&r) || bits == 0 ||
        (bits & ~(uint32_t)CA_KU_ALL) != 0) {
        CM_BAIL(CA_E_EXT_MALFORMED);
    }
    *out = bits;
    return cm_result_make(CM_OK);
}

// ca_ku_fit returns the keyUsage bits a key of |key_type| can carry: RSA (RFC 3279 §2.3.1) no
// keyAgreement; EC (RFC 5480 §3) no keyEncipherment or dataEncipherment; Ed25519/Ed448
// (RFC 8410 §5) signing bits only. encipherOnly/decipherOnly need keyAgreement (RFC 5280).
static uint32_t ca_ku_fit(uint32_t key_type, uint32_t bits)
{
    const uint32_t sign =
        CA_KU_DIGITAL_SIGNATURE | CA_KU_NON_REPUDIATION | CA_KU_KEY_CERT_SIGN | CA_KU_CRL_SIGN;
    uint32_t fit = sign;
    if (key_type == CA_KEY_RSA) {
        fit |= CA_KU_KEY_ENCIPHERMENT | CA_KU_DATA_ENCIPHERMENT;
    } else if (key_type == CA_KEY_EC_P256 || key_type == CA_KEY_EC_P384 ||
               key_type == CA_KEY_EC_P521) {
        fit |= CA_KU_KEY_AGREEMENT;
        if ((bits & CA_KU_KEY_AGREEMENT) != 0) {
            fit |= CA_KU_ENCIPHER_ONLY | CA_KU_DECIPHER_ONLY;
        }
    } else if (key_type == CA_KEY_X25519 || key_type == CA_KEY_X448) {
        // RFC 8410 §5: keyAgreement (with encipherOnly or decipherOnly), nothing that signs.
        fit = CA_KU_KEY_AGREEMENT;
        if ((bits & CA_KU_KEY_AGREEMENT) != 0) {
            fit |= CA_KU_ENCIPHER_ONLY | CA_KU_DECIPHER_ONLY;
        }
    }
    return fit;
}

// ca_ku_of_use returns the keyUsage bits a key of |use| may carry: keyEncipherment and
// dataEncipherment for key transport, keyAgreement with encipherOnly/decipherOnly for key
// agreement; every bit for a signing key (the profile and ca_ku_fit decide).
static uint32_t ca_ku_of_use(ca_key_use use)
{
    switch (use) {
    case CA_KEY_USE_ENCIPHER:
        return CA_KU_KEY_ENCIPHERMENT | CA_KU_DATA_ENCIPHERMENT;
    case CA_KEY_USE_AGREE:
        return CA_KU_KEY_AGREEMENT | CA_KU_ENCIPHER_ONLY | CA_KU_DECIPHER_ONLY;
    default:
        return CA_KU_ALL;
    }
}

// The keyUsage a key of a non-signing use gets when the request names none: the extnValue
// content, a BIT STRING with bit 2 (keyEncipherment: 0x20, 5 unused bits) or bit 4
// (keyAgreement: 0x08, 3 unused bits) set (RFC 5280 §4.2.1.3, DER: trailing zero bits cut).
static const uint8_t k_ca_ku_encipher[] = {0x03, 0x02, 0x05, 0x20};
static const uint8_t k_ca_ku_agree[] = {0x03, 0x02, 0x03, 0x08};

// ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId
// KeyPurposeId ::= OBJECT IDENTIFIER                            -- RFC 5280 §4.2.1.12
// Calls back for each purpose; at most CA_MAX_EKU of them.
static cm_result ca_eku_walk(cm_span value, cm_span *out_oids, size_t *out_num)
{
    der_reader r, seq;
    der_reader_init(&r, value);
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !der_reader_empty(&r) ||
        der_reader_empty(&seq)) {
        CM_BAIL(CA_E_EXT_MALFORMED);
    }
    size_t n = 0;
    while (!der_reader_empty(&seq)) {
        CM_ENSURE(n < CA_MAX_EKU, CM_E_DER_TOO_MANY);
        CM_ENSURE(cm_ok(der_get_oid(&seq, &out_oids[n])), CA_E_EXT_MALFORMED);
        n++;
    }
    *out_num = n;
    return cm_result_make(CM_OK);
}

// BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE,
//                                 pathLenConstraint INTEGER (0..MAX) OPTIONAL } -- §4.2.1.9
static cm_result ca_bc_parse(cm_span value, bool *out_ca, bool *out_path_len)
{
    der_reader r, seq;
    der_reader_init(&r, value);
    bool ca = false;
    uint64_t path = 0;
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !der_reader_empty(&r) ||
        (der_peek_is(&seq, DER_TAG_BOOLEAN) && (!cm_ok(der_get_bool(&seq, &ca)) || !ca))) {
        CM_BAIL(CA_E_EXT_MALFORMED); // DER never encodes the DEFAULT FALSE
    }
    *out_path_len = der_peek_is(&seq, DER_TAG_INTEGER);
    if ((*out_path_len && !cm_ok(der_get_u64(&seq, &path))) || !der_reader_empty(&seq)) {
        CM_BAIL(CA_E_EXT_MALFORMED);
    }
    *out_ca = ca;
    return cm_result_make(CM_OK);
}

// ca_profile_req_exts reads the profile's own keyUsage, extendedKeyUsage and basicConstraints
// back and sets what a request may ask for.
static cm_result ca_profile_req_exts(ca_profile *pr, char *err, size_t err_cap,
                                     const ca_profile_params *p)
{
    cm_span v;
    bool crit;
    if (ca_profile_find_ext(pr, CM_SPAN_LIT(DER_OID_CE_KEY_USAGE), &v, &crit) &&
        !cm_ok(ca_ku_parse(v, &pr->own_ku))) {
        ca_errf(err, err_cap, "keyUsage: OpenSSL wrote a value with no known bit");
        CM_BAIL(CA_E_CONFIG);
    }
    if (p->has_key_usage_allowed && (p->key_usage_allowed & ~(uint32_t)CA_KU_ALL) != 0) {
        ca_errf(err, err_cap, "key_usage_allowed: unknown keyUsage bits 0x%x",
                p->key_usage_allowed & ~(uint32_t)CA_KU_ALL);
        CM_BAIL(CA_E_CONFIG);
    }
    pr->ku_allowed = p->has_key_usage_allowed ? p->key_usage_allowed : pr->own_ku;
    if (p->has_eku_allowed) {
        if (p->num_eku_allowed > CA_MAX_EKU) {
            ca_errf(err, err_cap, "eku_allowed: more than %u purposes", CA_MAX_EKU);
            CM_BAIL(CA_E_CONFIG);
        }
        pr->eku_buf = malloc(p->num_eku_allowed * 64 + 1);
        CM_ENSURE(pr->eku_buf != NULL, CM_E_NOMEM);
        size_t used = 0;
        for (size_t i = 0; i < p->num_eku_allowed; i++) {
            const char *name = p->eku_allowed[i];
            ASN1_OBJECT *obj = name != NULL ? OBJ_txt2obj(name, 0) : NULL;
            const size_t len = obj != NULL ? OBJ_length(obj) : 0;
            if (obj == NULL || len == 0 || len > 64) {
                ASN1_OBJECT_free(obj);
                ERR_clear_error();
                ca_errf(err, err_cap, "eku_allowed: '%s' is not a purpose OpenSSL knows",
                        name != NULL ? name : "(null)");
                CM_BAIL(CA_E_CONFIG);
            }
            memcpy(pr->eku_buf + used, OBJ_get0_data(obj), len);
            pr->eku_allowed[i] = cm_span_make(pr->eku_buf + used, len);
            used += len;
            ASN1_OBJECT_free(obj);
        }
        pr->num_eku_allowed = p->num_eku_allowed;
    } else if (ca_profile_find_ext(pr, CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE), &v, &crit)) {
        // The purposes point into ext_der, which the profile owns.
        if (!cm_ok(ca_eku_walk(v, pr->eku_allowed, &pr->num_eku_allowed))) {
            ca_errf(err, err_cap, "extendedKeyUsage: more than %u purposes", CA_MAX_EKU);
            CM_BAIL(CA_E_CONFIG);
        }
    }
    bool path_len = false;
    if (ca_profile_find_ext(pr, CM_SPAN_LIT(DER_OID_CE_BASIC_CONSTRAINTS), &v, &crit) &&
        !cm_ok(ca_bc_parse(v, &pr->is_ca, &path_len))) {
        ca_errf(err, err_cap, "basicConstraints: OpenSSL wrote an unreadable value");
        CM_BAIL(CA_E_CONFIG);
    }
    return cm_result_make(CM_OK);
}

// ca_eku_allowed_text lists the purposes a request may ask for, by name.
static const char *ca_eku_allowed_text(char *buf, size_t cap, const ca_profile *pr)
{
    buf[0] = '\0';
    for (size_t i = 0; i < pr->num_eku_allowed; i++) {
        char name[96];
        ca_text_add(buf, cap, ca_oid_name(name, sizeof(name), pr->eku_allowed[i], false));
    }
    if (buf[0] == '\0') {
        (void)snprintf(buf, cap, "none");
    }
    return buf;
}

// ca_req_key_usage: a requested keyUsage is honoured when its bits are allowed and fit the key,
// else replaced by the profile's (replace mode) or refused.
static cm_result ca_req_key_usage(const ca_profile *pr, ca_decision *d, const ca_ext *x,
                                  ca_key_use use, cm_why *why)
{
    uint32_t bits = 0;
    if (!cm_ok(ca_ku_parse(x->value, &bits))) {
        cm_why_set(why, "the requested keyUsage is not a valid KeyUsage BIT STRING");
        CM_BAIL(CA_E_EXT_MALFORMED);
    }
    // A key that proved possession without a signature (ca_request.key_use) may not be
    // certified to sign: the use's bits take the place of the profile's allowed set.
    const uint32_t allowed = use == CA_KEY_USE_SIGN ? pr->ku_allowed : ca_ku_of_use(use);
    const uint32_t outside = bits & ~allowed;
    const uint32_t misfit = bits & ~ca_ku_fit(d->key.type, bits);
    if (outside == 0 && misfit == 0) {
        d->key_usage = x->value;
        d->key_usage_critical = x->critical;
        return cm_result_make(CM_OK);
    }
    if (pr->p.replace_requested_exts) {
        d->mods |= CA_MOD_KEY_USAGE;
        return cm_result_make(CM_OK);
    }
    char names[160], allowed_text[200];
    if (outside != 0 && use != CA_KEY_USE_SIGN) {
        cm_why_set(why,
                   "keyUsage %s not allowed for a key that proved possession without a "
                   "signature (allowed: %s)",
                   ca_key_usage_text(names, sizeof(names), outside),
                   ca_key_usage_text(allowed_text, sizeof(allowed_text), allowed));
    } else if (outside != 0) {
        cm_why_set(why, "keyUsage %s not allowed by profile %s (allowed: %s)",
                   ca_key_usage_text(names, sizeof(names), outside), ca_profile_label(pr),
                   ca_key_usage_text(allowed_text, sizeof(allowed_text), pr->ku_allowed));
    } else {
        cm_why_set(why, "keyUsage %s does not fit a %s key",
                   ca_key_usage_text(names, sizeof(names), misfit), ca_key_name(d->key.type));
    }
    CM_BAIL(CA_E_KEY_USAGE);
}

// ca_req_eku: a requested extendedKeyUsage is honoured when every purpose is allowed.
static cm_result ca_req_eku(const ca_profile *pr, ca_decision *d, const ca_ext *x, cm_why *why)
{
    cm_span oids[CA_MAX_EKU];
    size_t n = 0;
    cm_result r = ca_eku_walk(x->value, oids, &n);
    if (!cm_ok(r)) {
        cm_why_set(why,
                   "the requested extendedKeyUsage is not a valid list of purposes (at "
                   "most %u)",
                   CA_MAX_EKU);
        return r;
    }
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        for (size_t k = 0; k < pr->num_eku_allowed && !ok; k++) {
            ok = cm_span_eq(oids[i], pr->eku_allowed[k]);
        }
        if (ok) {
            continue;
        }
        if (pr->p.replace_requested_exts) {
            d->mods |= CA_MOD_EKU;
            return cm_result_make(CM_OK);
        }
        char name[128], allowed[200];
        cm_why_set(why, "extendedKeyUsage %s not allowed by profile %s (allowed: %s)",
                   ca_oid_name(name, sizeof(name), oids[i], false), ca_profile_label(pr),
                   ca_eku_allowed_text(allowed, sizeof(allowed), pr));
        CM_BAIL(CA_E_EKU);
    }
    d->eku = x->value;
    d->eku_critical = x->critical;
    return cm_result_make(CM_OK);
}

// ca_req_basic_constraints: asking for a CA certificate is refused by an end-entity profile; the
// profile's basicConstraints is what the certificate gets.
static cm_result ca_req_basic_constraints(const ca_profile *pr, ca_decision *d, const ca_ext *x,
                                          cm_why *why)
{
    bool is_ca = false, path_len = false;
    if (!cm_ok(ca_bc_parse(x->value, &is_ca, &path_len))) {
        cm_why_set(why, "the requested basicConstraints is not a valid BasicConstraints");
        CM_BAIL(CA_E_EXT_MALFORMED);
    }
    if ((is_ca || path_len) && !pr->is_ca) {
        cm_why_set(why,
                   "profile %s issues end-entity certificates: the request asks for "
                   "basicConstraints %s",
                   ca_profile_label(pr), is_ca ? "cA:TRUE" : "with a pathLenConstraint");
        CM_BAIL(CA_E_EXT_CA_REQUESTED);
    }
    cm_span own;
    bool crit;
    if (ca_profile_find_ext(pr, x->oid, &own, &crit) && !cm_span_eq(own, x->value)) {
        d->mods |= CA_MOD_EXTENSION;
        if (d->mod_ext_oid.len == 0) {
            d->mod_ext_oid = x->oid;
        }
    }
    return cm_result_make(CM_OK);
}

const char *ca_decision_mods_text(char *buf, size_t cap, const ca_profile *p, const ca_decision *d)
{
    buf[0] = '\0';
    char t[32], part[200], names[160];
    if ((d->mods & CA_MOD_VALIDITY_PROFILE) != 0) {
        (void)snprintf(
            part, sizeof(part), "notAfter shortened to %s (profile %s grants at most %u days)",
            ca_time_text(t, sizeof(t), d->not_after), ca_profile_label(p), p->p.max_days);
        ca_text_join(buf, cap, part);
    }
    if ((d->mods & CA_MOD_VALIDITY_CA) != 0) {
        (void)snprintf(part, sizeof(part),
                       "notAfter shortened to %s, when the CA certificate expires",
                       ca_time_text(t, sizeof(t), d->not_after));
        ca_text_join(buf, cap, part);
    }
    if ((d->mods & CA_MOD_SUBJECT) != 0) {
        ca_text_join(buf, cap, "the subject was set by the CA");
    }
    if ((d->mods & CA_MOD_KEY_USAGE) != 0) {
        if (p->own_ku != 0) {
            (void)snprintf(part, sizeof(part), "keyUsage replaced by profile %s's (%s)",
                           ca_profile_label(p), ca_key_usage_text(names, sizeof(names), p->own_ku));
        } else {
            (void)snprintf(part, sizeof(part),
                           "the requested keyUsage left out (profile %s sets none)",
                           ca_profile_label(p));
        }
        ca_text_join(buf, cap, part);
    }
    if ((d->mods & CA_MOD_EKU) != 0) {
        cm_span v;
        bool crit;
        const bool own = ca_profile_find_ext(p, CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE), &v, &crit);
        (void)snprintf(part, sizeof(part),
                       own ? "extendedKeyUsage replaced by profile %s's"
                           : "the requested extendedKeyUsage left out (profile %s sets none)",
                       ca_profile_label(p));
        ca_text_join(buf, cap, part);
    }
    if ((d->mods & CA_MOD_EXTENSION) != 0) {
        char name[96];
        (void)snprintf(part, sizeof(part), "%s set to profile %s's value",
                       d->mod_ext_oid.len > 0
                           ? ca_oid_name(name, sizeof(name), d->mod_ext_oid, false)
                           : "an extension",
                       ca_profile_label(p));
        ca_text_join(buf, cap, part);
    }
    return buf;
}

// ---------------------------------------------------------------------------------------------
// Requested extensions

// Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
// Extension ::= SEQUENCE {
//     extnID      OBJECT IDENTIFIER,
//     critical    BOOLEAN DEFAULT FALSE,
//     extnValue   OCTET STRING }                                 -- RFC 5280 §4.1
cm_result ca_extensions_parse(ca_ext *out, size_t *out_num, size_t cap, cm_span body)
{
    der_reader seq;
    der_reader_init(&seq, body);
    CM_ENSURE(!der_reader_empty(&seq), CA_E_EXT_MALFORMED);
    size_t n = 0;
    while (!der_reader_empty(&seq)) {
        CM_ENSURE(n < cap && n < CA_MAX_REQ_EXTS, CM_E_DER_TOO_MANY);
        der_reader e;
        ca_ext x = {{NULL, 0}, false, {NULL, 0}};
        CM_TRY(der_enter(&seq, DER_TAG_SEQUENCE, &e));
        if (!cm_ok(der_get_oid(&e, &x.oid))) {
            CM_BAIL(CA_E_EXT_MALFORMED);
        }
        if (der_peek_is(&e, DER_TAG_BOOLEAN)) {
            // DER: a DEFAULT value is never encoded, so an explicit FALSE is an error.
            if (!cm_ok(der_get_bool(&e, &x.critical)) || !x.critical) {
                CM_BAIL(CA_E_EXT_MALFORMED);
            }
        }
        if (!cm_ok(der_get_octets(&e, &x.value)) || !cm_ok(der_expect_end(&e))) {
            CM_BAIL(CA_E_EXT_MALFORMED);
        }
        for (size_t i = 0; i < n; i++) {
            CM_ENSURE(!cm_span_eq(out[i].oid, x.oid), CA_E_EXT_DUPLICATE);
        }
        out[n++] = x;
    }
    *out_num = n;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Subject

static bool ca_is_string_tag(uint32_t tag)
{
    switch (tag) {
    case DER_TAG_UTF8_STRING:
    case DER_TAG_PRINTABLE_STRING:
    case DER_TAG_T61_STRING:
    case DER_TAG_IA5_STRING:
    case DER_TAG_VISIBLE_STRING:
    case DER_TAG_UNIVERSAL_STRING:
    case DER_TAG_BMP_STRING:
        return true;
    default:
        return false;
    }
}

// Name ::= CHOICE { rdnSequence RDNSequence }
// RDNSequence ::= SEQUENCE OF RelativeDistinguishedName
// RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
// AttributeTypeAndValue ::= SEQUENCE { type AttributeType, value AttributeValue }
//                                                               -- RFC 5280 §4.1.2.4
// Sets |*out_empty| when the RDNSequence is empty.
static cm_result ca_check_subject(const ca_profile *pr, bool *out_empty, cm_span name, cm_why *why)
{
    der_reader r, seq;
    der_reader_init(&r, name);
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !cm_ok(der_expect_end(&r))) {
        CM_BAIL(CA_E_SUBJECT_MALFORMED);
    }
    uint32_t seen_required = 0; // bit i: required rule i matched
    size_t count = 0;
    const bool rules = pr->p.subject_mode == CA_SUBJECT_RULES;
    while (!der_reader_empty(&seq)) {
        der_reader set;
        CM_ENSURE(cm_ok(der_enter(&seq, DER_TAG_SET, &set)), CA_E_SUBJECT_MALFORMED);
        CM_ENSURE(!der_reader_empty(&set), CA_E_SUBJECT_MALFORMED);
        while (!der_reader_empty(&set)) {
            CM_ENSURE(++count <= CA_MAX_RDNS, CM_E_DER_TOO_MANY);
            der_reader atv;
            cm_span type, value;
            uint32_t tag;
            if (!cm_ok(der_enter(&set, DER_TAG_SEQUENCE, &atv)) ||
                !cm_ok(der_get_oid(&atv, &type)) || !cm_ok(der_get_any(&atv, &tag, &value, NULL)) ||
                !cm_ok(der_expect_end(&atv)) || !ca_is_string_tag(tag) ||
                !cm_ok(der_parse_string(tag, value))) {
                CM_BAIL(CA_E_SUBJECT_MALFORMED);
            }
            if (!rules) {
                continue;
            }
            bool known = false;
            for (size_t i = 0; i < pr->num_required + pr->num_allowed; i++) {
                if (cm_span_eq(pr->rdn_oids[i], type)) {
                    known = true;
                    if (i < pr->num_required) {
                        seen_required |= 1u << i;
                    }
                }
            }
            if (!known) {
                char oid[64], allowed[128];
                cm_why_set(why, "subject attribute %s not allowed by profile %s (allowed: %s)",
                           ca_attr_label_of(type, oid, sizeof(oid)), ca_profile_label(pr),
                           ca_rdn_rules_text(allowed, sizeof(allowed), pr));
                CM_BAIL(CA_E_SUBJECT_RDN);
            }
        }
    }
    if (rules && pr->num_required > 0) {
        const uint32_t all = pr->num_required >= 32 ? 0xffffffffu : (1u << pr->num_required) - 1;
        if (seen_required != all) {
            char missing[128] = "";
            for (size_t i = 0; i < pr->num_required; i++) {
                if ((seen_required & (1u << i)) == 0) {
                    char oid[64];
                    ca_text_add(missing, sizeof(missing),
                                ca_attr_label_of(pr->rdn_oids[i], oid, sizeof(oid)));
                }
            }
            cm_why_set(why, "subject lacks %s, required by profile %s", missing,
                       ca_profile_label(pr));
            CM_BAIL(CA_E_SUBJECT_MISSING);
        }
    }
    *out_empty = count == 0;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Subject alternative names

static bool ca_dns_ok(cm_span s)
{
    if (s.len == 0 || s.len > 253) {
        return false;
    }
    size_t label = 0;
    for (size_t i = 0; i < s.len; i++) {
        const uint8_t c = s.p[i];
        if (c == '.') {
            if (label == 0 || s.p[i - 1] == '-') {
                return false;
            }
            label = 0;
            continue;
        }
        const bool alnum =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0)) {
            return false;
        }
        if (++label > 63) {
            return false;
        }
    }
    return label > 0 && s.p[s.len - 1] != '-';
}

static bool ca_visible_ascii(cm_span s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] <= 0x20 || s.p[i] >= 0x7f) {
            return false;
        }
    }
    return s.len > 0;
}

static bool ca_email_ok(cm_span s)
{
    size_t at = s.len;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] == '@') {
            if (at != s.len) {
                return false;
            }
            at = i;
        }
    }
    return ca_visible_ascii(s) && at > 0 && at < s.len &&
           ca_dns_ok(cm_span_make(s.p + at + 1, s.len - at - 1));
}

static bool ca_uri_ok(cm_span s)
{
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
    if (!ca_visible_ascii(s)) {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        const uint8_t c = s.p[i];
        if (c == ':') {
            return i > 0;
        }
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!(alpha || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.')))) {
            return false;
        }
    }
    return false;
}

// GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName
// GeneralName ::= CHOICE {
//     otherName                 [0] OtherName,
//     rfc822Name                [1] IA5String,
//     dNSName                   [2] IA5String,
//     x400Address               [3] ORAddress,
//     directoryName             [4] Name,
//     ediPartyName              [5] EDIPartyName,
//     uniformResourceIdentifier [6] IA5String,
//     iPAddress                 [7] OCTET STRING,
//     registeredID              [8] OBJECT IDENTIFIER }            -- RFC 5280 §4.2.1.6
static cm_result ca_check_san(const ca_profile *pr, cm_span value, cm_why *why)
{
    der_reader r, seq;
    der_reader_init(&r, value);
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !cm_ok(der_expect_end(&r)) ||
        der_reader_empty(&seq)) {
        CM_BAIL(CA_E_SAN_MALFORMED);
    }
    size_t count = 0;
    while (!der_reader_empty(&seq)) {
        CM_ENSURE(++count <= CA_MAX_SAN_NAMES, CM_E_DER_TOO_MANY);
        uint32_t tag;
        cm_span body;
        CM_ENSURE(cm_ok(der_get_any(&seq, &tag, &body, NULL)), CA_E_SAN_MALFORMED);
        uint32_t type = 0;
        bool ok = false;
        const char *type_name;
        switch (tag) {
        case DER_CONTEXT(1):
            type = CA_SAN_EMAIL;
            type_name = "email";
            ok = ca_email_ok(body);
            break;
        case DER_CONTEXT(2):
            type = CA_SAN_DNS;
            type_name = "dns";
            ok = ca_dns_ok(body);
            break;
        case DER_CONTEXT(6):
            type = CA_SAN_URI;
            type_name = "uri";
            ok = ca_uri_ok(body);
            break;
        case DER_CONTEXT(7):
            type = CA_SAN_IP;
            type_name = "ip";
            ok = body.len == 4 || body.len == 16;
            break;
        case DER_CONTEXT_CONS(0):
            type_name = "otherName";
            break;
        case DER_CONTEXT_CONS(3):
            type_name = "x400Address";
            break;
        case DER_CONTEXT_CONS(4):
            type_name = "directoryName";
            break;
        case DER_CONTEXT_CONS(5):
            type_name = "ediPartyName";
            break;
        case DER_CONTEXT(8):
            type_name = "registeredID";
            break;
        default:
            type_name = "unknown";
            break;
        }
        if ((pr->p.san_types & type) == 0) {
            char allowed[64];
            cm_why_set(why, "profile %s does not allow subjectAltName type %s (allowed: %s)",
                       ca_profile_label(pr), type_name,
                       ca_bits_text(allowed, sizeof(allowed), pr->p.san_types, k_ca_san_names,
                                    sizeof(k_ca_san_names) / sizeof(k_ca_san_names[0])));
            CM_BAIL(CA_E_SAN_TYPE);
        }
        if (!ok) {
            cm_why_set(why, "subjectAltName entry %zu (type %s) is not a valid %s", count,
                       type_name,
                       type == CA_SAN_IP      ? "IPv4 or IPv6 address"
                       : type == CA_SAN_DNS   ? "DNS name"
                       : type == CA_SAN_EMAIL ? "email address"
                                              : "URI");
            CM_BAIL(CA_E_SAN_MALFORMED);
        }
    }
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Policy

cm_result ca_profile_check_key(const ca_profile *pr, ca_key_info *out, cm_span spki, cm_why *why)
{
    char allowed[96], alg[96];
    ca_key_info key;
    memset(&key, 0, sizeof(key));
    cm_result kr = ca_spki_parse(&key, spki);
    if (kr.code == CA_E_KEY_TYPE) {
        cm_why_set(why, "key type %s not allowed by profile %s (allowed: %s)",
                   ca_spki_alg_text(alg, sizeof(alg), spki), ca_profile_label(pr),
                   ca_bits_text(allowed, sizeof(allowed), pr->p.key_types, k_ca_key_names,
                                sizeof(k_ca_key_names) / sizeof(k_ca_key_names[0])));
    }
    CM_TRY(kr);
    if ((pr->p.key_types & key.type) == 0) {
        cm_why_set(why, "key type %s not allowed by profile %s (allowed: %s)",
                   ca_key_name(key.type), ca_profile_label(pr),
                   ca_bits_text(allowed, sizeof(allowed), pr->p.key_types, k_ca_key_names,
                                sizeof(k_ca_key_names) / sizeof(k_ca_key_names[0])));
        CM_BAIL(CA_E_KEY_TYPE);
    }
    if (key.type == CA_KEY_RSA &&
        (key.bits < pr->p.rsa_min_bits || key.bits > pr->p.rsa_max_bits)) {
        cm_why_set(why, "RSA key of %u bits not allowed by profile %s (allowed: %u to %u bits)",
                   key.bits, ca_profile_label(pr), pr->p.rsa_min_bits, pr->p.rsa_max_bits);
        CM_BAIL(CA_E_KEY_SIZE);
    }
    *out = key;
    return cm_result_make(CM_OK);
}

uint32_t ca_profile_key_use_types(const ca_profile *p, ca_key_use use)
{
    switch (use) {
    case CA_KEY_USE_ENCIPHER:
        return p->p.enc_key_types;
    case CA_KEY_USE_AGREE:
        return p->p.kem_key_types;
    default:
        return p->p.key_types;
    }
}

cm_result ca_profile_check_key_use(const ca_profile *pr, ca_key_info *out, cm_span spki,
                                   ca_key_use use, cm_why *why)
{
    if (use == CA_KEY_USE_SIGN) {
        return ca_profile_check_key(pr, out, spki, why);
    }
    const bool enc = use == CA_KEY_USE_ENCIPHER;
    const uint32_t types = ca_profile_key_use_types(pr, use);
    const char *setting = enc ? "encryption_key_types" : "kem_key_types";
    char allowed[96], alg[96];
    ca_key_info key;
    memset(&key, 0, sizeof(key));
    cm_result kr = ca_spki_parse(&key, spki);
    if (kr.code == CA_E_KEY_TYPE) {
        cm_why_set(why,
                   "key type %s not allowed without a signature proof of possession by "
                   "profile %s (%s: %s)",
                   ca_spki_alg_text(alg, sizeof(alg), spki), ca_profile_label(pr), setting,
                   ca_bits_text(allowed, sizeof(allowed), types, k_ca_key_names,
                                sizeof(k_ca_key_names) / sizeof(k_ca_key_names[0])));
    }
    CM_TRY(kr);
    if ((types & key.type) == 0) {
        cm_why_set(why,
                   "key type %s not allowed to %s without a signature proof of possession by "
                   "profile %s (%s: %s)",
                   ca_key_name(key.type), enc ? "transport keys" : "agree keys",
                   ca_profile_label(pr), setting,
                   ca_bits_text(allowed, sizeof(allowed), types, k_ca_key_names,
                                sizeof(k_ca_key_names) / sizeof(k_ca_key_names[0])));
        CM_BAIL(CA_E_KEY_TYPE);
    }
    if (key.type == CA_KEY_RSA &&
        (key.bits < pr->p.rsa_min_bits || key.bits > pr->p.rsa_max_bits)) {
        cm_why_set(why, "RSA key of %u bits not allowed by profile %s (allowed: %u to %u bits)",
                   key.bits, ca_profile_label(pr), pr->p.rsa_min_bits, pr->p.rsa_max_bits);
        CM_BAIL(CA_E_KEY_SIZE);
    }
    *out = key;
    return cm_result_make(CM_OK);
}

cm_result ca_policy_check(const ca_profile *profile, const ca_authority *ca, ca_decision *out,
                          const ca_request *req, int64_t now, cm_why *why)
{
    const ca_profile *pr = profile;
    ca_decision d;
    memset(&d, 0, sizeof(d));
    char t1[32], t2[32];

    // The CA itself must be able to issue now.
    if (now < ca->not_before || now >= ca->not_after) {
        cm_why_set(why, "the CA certificate is not valid now (valid from %s to %s)",
                   ca_time_text(t1, sizeof(t1), ca->not_before),
                   ca_time_text(t2, sizeof(t2), ca->not_after));
        CM_BAIL(CA_E_CA_EXPIRED);
    }

    CM_TRY(ca_profile_check_key_use(pr, &d.key, req->spki, req->key_use, why));
    if (req->key_use != CA_KEY_USE_SIGN) {
        // keyEncipherment or keyAgreement in place of the profile's keyUsage, unless the
        // request narrows it (ca_req_key_usage below).
        const bool enc = req->key_use == CA_KEY_USE_ENCIPHER;
        d.key_usage = enc ? cm_span_make(k_ca_ku_encipher, sizeof(k_ca_ku_encipher))
                          : cm_span_make(k_ca_ku_agree, sizeof(k_ca_ku_agree));
        d.key_usage_critical = true;
    }

    bool empty_subject = false;
    CM_TRY(ca_check_subject(pr, &empty_subject, req->subject, why));

    CM_ENSURE(req->num_exts <= CA_MAX_REQ_EXTS, CM_E_DER_TOO_MANY);
    for (size_t i = 0; i < req->num_exts; i++) {
        const ca_ext *x = &req->exts[i];
        char ext[128];
        for (size_t j = 0; j < i; j++) {
            if (cm_span_eq(req->exts[j].oid, x->oid)) {
                cm_why_set(why, "the request lists extension %s twice",
                           ca_oid_name(ext, sizeof(ext), x->oid, true));
                CM_BAIL(CA_E_EXT_DUPLICATE);
            }
        }
        cm_span own;
        bool own_critical;
        if (der_oid_is(x->oid, DER_OID_CE_SUBJECT_ALT_NAME)) {
            CM_TRY(ca_check_san(pr, x->value, why));
            d.san = x->value;
            d.san_critical = x->critical;
        } else if (der_oid_is(x->oid, DER_OID_CE_SUBJECT_KEY_ID) ||
                   der_oid_is(x->oid, DER_OID_CE_AUTHORITY_KEY_ID)) {
            // Computed by us from the key and the CA, whatever was asked.
            continue;
        } else if (der_oid_is(x->oid, DER_OID_CE_KEY_USAGE)) {
            CM_TRY(ca_req_key_usage(pr, &d, x, req->key_use, why));
        } else if (der_oid_is(x->oid, DER_OID_CE_EXT_KEY_USAGE)) {
            CM_TRY(ca_req_eku(pr, &d, x, why));
        } else if (der_oid_is(x->oid, DER_OID_CE_BASIC_CONSTRAINTS)) {
            CM_TRY(ca_req_basic_constraints(pr, &d, x, why));
        } else if (ca_profile_find_ext(pr, x->oid, &own, &own_critical)) {
            // Written as the profile says; a different value asked for is a modification.
            if (!cm_span_eq(own, x->value)) {
                d.mods |= CA_MOD_EXTENSION;
                if (d.mod_ext_oid.len == 0) {
                    d.mod_ext_oid = x->oid;
                }
            }
        } else {
            cm_why_set(why, "profile %s does not accept the requested extension %s",
                       ca_profile_label(pr), ca_oid_name(ext, sizeof(ext), x->oid, true));
            CM_BAIL(CA_E_EXT_UNACCEPTED);
        }
    }
    if (empty_subject && d.san.len == 0) {
        // RFC 5280 §4.2.1.6: an empty subject needs a critical subjectAltName.
        cm_why_set(why, "the requested subject is empty and there is no subjectAltName "
                        "(RFC 5280 4.2.1.6)");
        CM_BAIL(CA_E_SUBJECT_EMPTY);
    }
    if (empty_subject) {
        d.san_critical = true;
    }

    // Validity: a request within max_days is honoured, longer ones are shortened, nothing
    // outlives the CA certificate.
    const int64_t day = 86400;
    if (req->not_after != 0 && req->not_after <= now) {
        cm_why_set(why, "the requested notAfter %s is not in the future",
                   ca_time_text(t1, sizeof(t1), req->not_after));
        CM_BAIL(CA_E_VALIDITY);
    }
    if (req->not_after != 0 && req->not_before != 0 && req->not_after <= req->not_before) {
        cm_why_set(why, "the requested notAfter %s is not after notBefore %s",
                   ca_time_text(t1, sizeof(t1), req->not_after),
                   ca_time_text(t2, sizeof(t2), req->not_before));
        CM_BAIL(CA_E_VALIDITY);
    }
    d.not_before = req->not_before > now ? req->not_before : now;
    d.not_after =
        req->not_after != 0 ? req->not_after : d.not_before + (int64_t)pr->p.default_days * day;
    const int64_t longest = d.not_before + (int64_t)pr->p.max_days * day;
    if (d.not_after > longest) {
        d.not_after = longest;
    }
    if (d.not_after > ca->not_after) {
        d.not_after = ca->not_after;
    }
    if (req->not_after != 0 && d.not_after < req->not_after) {
        // The requested notAfter was capped (RFC 9483 §4.1.1 lets the CA change it): reported
        // as grantedWithMods. A notBefore in the past simply starts now.
        d.mods |= d.not_after == ca->not_after ? CA_MOD_VALIDITY_CA : CA_MOD_VALIDITY_PROFILE;
    }
    if (d.not_before >= d.not_after) {
        cm_why_set(why, "the requested notBefore %s is not before the CA certificate expires (%s)",
                   ca_time_text(t1, sizeof(t1), d.not_before),
                   ca_time_text(t2, sizeof(t2), ca->not_after));
        CM_BAIL(CA_E_VALIDITY);
    }
    *out = d;
    return cm_result_make(CM_OK);
}
