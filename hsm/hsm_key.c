// Keys: finding a private key by PKCS#11 URI on the open token, reading its type, size and
// public key (as a DER SubjectPublicKeyInfo), and the lookup of its handle in a worker's
// session. hsm_key_find runs on the admin session under admin_mu.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"

#define HSM_MAX_FOUND    16u   // objects listed in an error message
#define HSM_MAX_ATTR_LEN 4096u // largest attribute read (an RSA-16384 modulus is 2 KiB)

static void hsm_hex(char *out, size_t cap, const uint8_t *p, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < len && o + 3 <= cap; i++) {
        (void)snprintf(out + o, cap - o, "%02x", p[i]);
        o += 2;
    }
}

// ---------------------------------------------------------------------------------------------
// Attributes and SubjectPublicKeyInfo

// hsm_get_attr reads one attribute into a malloc'ed buffer (free() it).
static CK_RV hsm_get_attr(hsm_token *t, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, uint8_t **out,
                          size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV rv = t->f->C_GetAttributeValue(t->admin, obj, &a, 1);
    if (rv != CKR_OK) {
        return rv;
    }
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > HSM_MAX_ATTR_LEN) {
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    uint8_t *buf = malloc(a.ulValueLen + 1);
    if (buf == NULL) {
        return CKR_HOST_MEMORY;
    }
    a.pValue = buf;
    rv = t->f->C_GetAttributeValue(t->admin, obj, &a, 1);
    if (rv != CKR_OK) {
        free(buf);
        return rv;
    }
    *out = buf;
    *out_len = a.ulValueLen;
    return CKR_OK;
}

CK_RV hsm_find(hsm_token *t, CK_OBJECT_HANDLE *out, CK_ULONG cap, CK_ULONG *out_n,
               CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl, CK_SESSION_HANDLE s)
{
    *out_n = 0;
    CK_RV rv = t->f->C_FindObjectsInit(s, tmpl, ntmpl);
    if (rv != CKR_OK) {
        return rv;
    }
    rv = t->f->C_FindObjects(s, out, cap, out_n);
    CK_RV rv2 = t->f->C_FindObjectsFinal(s);
    return rv != CKR_OK ? rv : rv2;
}

cm_result hsm_find_key_handle(hsm_token *t, CK_OBJECT_HANDLE *out, CK_SESSION_HANDLE s,
                              const hsm_key *k)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL yes = CK_TRUE;
    // Token objects only: session copies (hsm_pool_opts.copy_key) are visible to every session
    // of the application and would otherwise make the lookup ambiguous.
    CK_ATTRIBUTE tmpl[4] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, sizeof(yes)}};
    CK_ULONG nt = 2;
    if (k->id_len > 0) {
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_ID, (void *)(uintptr_t)k->id, k->id_len};
    }
    if (k->label_len > 0) {
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)(uintptr_t)k->label, k->label_len};
    }
    CK_OBJECT_HANDLE h[4];
    CK_ULONG n;
    CK_RV rv = hsm_find(t, h, 4, &n, tmpl, nt, s);
    CM_ENSURE(rv == CKR_OK, cm_code_from_ckr(rv));
    CM_ENSURE(n != 0, HSM_E_NO_KEY);
    if (n > 1) {
        // SoftHSM 2.6.1 builds a C_CopyObject copy in place: while another session copies the
        // key, the half-made session object still carries the source's CKA_TOKEN=TRUE and
        // matches too. The object hsm_key_find selected is the one we want when it is there
        // (token object handles are application-wide).
        for (CK_ULONG i = 0; i < n; i++) {
            if (h[i] == k->handle) {
                *out = h[i];
                return cm_result_make(CM_OK);
            }
        }
        CM_BAIL(HSM_E_AMBIGUOUS_KEY);
    }
    *out = h[0];
    return cm_result_make(CM_OK);
}

// SubjectPublicKeyInfo  ::=  SEQUENCE  {
//      algorithm            AlgorithmIdentifier,
//      subjectPublicKey     BIT STRING  }                   -- RFC 5280 §4.1.2.7
// EC (RFC 5480 §2.1.1): id-ecPublicKey with the namedCurve OID; the key is the ECPoint.
// RSA (RFC 3279 §2.3.1): rsaEncryption with NULL; the key is
//      RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }.
// Ed25519, Ed448 (RFC 8410 §4): id-Ed25519 / id-Ed448 with absent parameters; the key is the
// 32 / 57 raw bytes.
static cm_result hsm_spki_build(hsm_key *k, cm_span curve_oid, cm_span point, cm_span modulus,
                                cm_span exponent)
{
    der_builder b;
    der_builder_init(&b, 600);
    der_mark spki, alg, bits, rsa;
    der_open_hint(&b, &spki, DER_TAG_SEQUENCE, 3);
    der_open(&b, &alg, DER_TAG_SEQUENCE);
    switch (k->type) {
    case HSM_KEY_RSA:
        der_put_oid_lit(&b, DER_OID_RSA_ENCRYPTION);
        der_put_null(&b);
        der_close(&b, &alg);
        // BIT STRING wrapping the DER RSAPublicKey: unused-bits octet, then the SEQUENCE.
        der_open_hint(&b, &bits, DER_TAG_BIT_STRING, 3);
        der_put_raw(&b, cm_span_make("", 1));
        der_open_hint(&b, &rsa, DER_TAG_SEQUENCE, 3);
        der_put_uint_bytes(&b, modulus);
        der_put_uint_bytes(&b, exponent);
        der_close(&b, &rsa);
        der_close(&b, &bits);
        break;
    case HSM_KEY_ED25519:
    case HSM_KEY_ED448:
        if (k->type == HSM_KEY_ED25519) {
            der_put_oid_lit(&b, DER_OID_ED25519);
        } else {
            der_put_oid_lit(&b, DER_OID_ED448);
        }
        der_close(&b, &alg);
        der_put_bitstring(&b, point, 0);
        break;
    default:
        der_put_oid_lit(&b, DER_OID_EC_PUBLIC_KEY);
        der_put_oid(&b, curve_oid);
        der_close(&b, &alg);
        der_put_bitstring(&b, point, 0);
        break;
    }
    der_close(&b, &spki);
    cm_result r = der_builder_take(&b, &k->spki, &k->spki_len);
    der_builder_cleanup(&b);
    return r;
}

// hsm_ec_point unwraps CKA_EC_POINT: PKCS#11 specifies the DER OCTET STRING of the point
// (SoftHSM does so for EC and EdDSA keys); some tokens return the raw point.
static cm_span hsm_ec_point(cm_span attr, size_t raw_len)
{
    der_reader r;
    der_reader_init(&r, attr);
    cm_span inner;
    if (cm_ok(der_get_octets(&r, &inner)) && cm_ok(der_expect_end(&r)) && inner.len == raw_len) {
        return inner;
    }
    return attr;
}

// hsm_key_curve classifies CKA_EC_PARAMS: a namedCurve OID, or for Edwards keys the OID or the
// PrintableString "edwards25519" / "edwards448" (PKCS#11 3.0 §2.3.5).
static cm_result hsm_key_curve(hsm_key *k, cm_span *out_oid, cm_span params, CK_KEY_TYPE kt)
{
    der_reader r;
    der_reader_init(&r, params);
    if (kt == CKK_EC_EDWARDS) {
        cm_span s;
        der_reader n = r;
        const bool by_oid = cm_ok(der_get_oid(&r, &s));
        const bool by_name = !by_oid && cm_ok(der_get_string(&n, DER_TAG_PRINTABLE_STRING, &s));
        if ((by_oid && der_oid_is(s, DER_OID_ED25519)) ||
            (by_name && cm_span_eq(s, CM_SPAN_LIT(HSM_ED25519_CURVE_NAME)))) {
            k->type = HSM_KEY_ED25519;
            k->bits = 256;
        } else if ((by_oid && der_oid_is(s, DER_OID_ED448)) ||
                   (by_name && cm_span_eq(s, CM_SPAN_LIT(HSM_ED448_CURVE_NAME)))) {
            k->type = HSM_KEY_ED448;
            k->bits = 448;
        } else {
            CM_BAIL(HSM_E_KEY_TYPE);
        }
        return cm_result_make(CM_OK);
    }
    CM_TRY(der_get_oid(&r, out_oid));
    if (der_oid_is(*out_oid, DER_OID_P256)) {
        k->type = HSM_KEY_EC_P256;
        k->bits = 256;
    } else if (der_oid_is(*out_oid, DER_OID_P384)) {
        k->type = HSM_KEY_EC_P384;
        k->bits = 384;
    } else if (der_oid_is(*out_oid, DER_OID_P521)) {
        k->type = HSM_KEY_EC_P521;
        k->bits = 521;
    } else {
        CM_BAIL(HSM_E_KEY_TYPE);
    }
    return cm_result_make(CM_OK);
}

// hsm_find_public finds the public key object sharing the private key's CKA_ID and label.
static cm_result hsm_find_public(hsm_token *t, CK_OBJECT_HANDLE *out, const hsm_key *k)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[4] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, sizeof(yes)}};
    CK_ULONG nt = 2;
    if (k->id_len > 0) {
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_ID, (void *)(uintptr_t)k->id, k->id_len};
    }
    if (k->label_len > 0) {
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)(uintptr_t)k->label, k->label_len};
    }
    CK_OBJECT_HANDLE h[2];
    CK_ULONG n;
    CK_RV rv = hsm_find(t, h, 2, &n, tmpl, nt, t->admin);
    CM_ENSURE(rv == CKR_OK, cm_code_from_ckr(rv));
    CM_ENSURE(n == 1, HSM_E_NO_PUBLIC_KEY);
    *out = h[0];
    return cm_result_make(CM_OK);
}

// hsm_key_load_rsa reads the modulus and exponent (SoftHSM keeps both on the private key).
static cm_result hsm_key_load_rsa(hsm_token *t, hsm_key *k, hsm_error *err)
{
    uint8_t *mod = NULL;
    uint8_t *exp = NULL;
    size_t mod_len = 0;
    size_t exp_len = 0;
    k->type = HSM_KEY_RSA;
    CK_RV rv = hsm_get_attr(t, k->handle, CKA_MODULUS, &mod, &mod_len);
    if (rv == CKR_OK) {
        rv = hsm_get_attr(t, k->handle, CKA_PUBLIC_EXPONENT, &exp, &exp_len);
    }
    cm_result r = rv == CKR_OK ? cm_result_make(CM_OK)
                               : hsm_ckr_fail(err, "C_GetAttributeValue(CKA_MODULUS)", rv);
    if (cm_ok(r)) {
        size_t z = 0;
        while (z < mod_len && mod[z] == 0) {
            z++;
        }
        k->bits = (uint32_t)((mod_len - z) * 8);
        if (z < mod_len) {
            for (uint8_t top = mod[z]; (top & 0x80) == 0; top = (uint8_t)(top << 1)) {
                k->bits--;
            }
        }
        r = hsm_spki_build(k, cm_span_make(NULL, 0), cm_span_make(NULL, 0),
                           cm_span_make(mod, mod_len), cm_span_make(exp, exp_len));
    }
    free(mod);
    free(exp);
    return r;
}

// hsm_key_load_ec reads the curve from the private key and the point from its public key.
static cm_result hsm_key_load_ec(hsm_token *t, hsm_key *k, hsm_error *err, CK_KEY_TYPE kt)
{
    uint8_t *params = NULL;
    uint8_t *pt = NULL;
    size_t params_len = 0;
    size_t pt_len = 0;
    cm_span curve = {NULL, 0};
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE;
    CK_RV rv = hsm_get_attr(t, k->handle, CKA_EC_PARAMS, &params, &params_len);
    cm_result r = rv == CKR_OK ? cm_result_make(CM_OK)
                               : hsm_ckr_fail(err, "C_GetAttributeValue(CKA_EC_PARAMS)", rv);
    if (!cm_ok(r)) {
        goto out;
    }
    r = hsm_key_curve(k, &curve, cm_span_make(params, params_len), kt);
    if (!cm_ok(r)) {
        hsm_error_set(err, "key '%s': curve not supported (P-256, P-384, P-521, Ed25519, Ed448)",
                      k->label);
        goto out;
    }
    r = hsm_find_public(t, &pub, k);
    if (!cm_ok(r)) {
        hsm_error_set(err, "key '%s': no single public key object with its CKA_ID/label", k->label);
        goto out;
    }
    rv = hsm_get_attr(t, pub, CKA_EC_POINT, &pt, &pt_len);
    if (rv != CKR_OK) {
        r = hsm_ckr_fail(err, "C_GetAttributeValue(CKA_EC_POINT)", rv);
        goto out;
    }
    size_t field = (k->bits + 7) / 8;
    size_t raw_len = k->type == HSM_KEY_ED25519 ? 32
                     : k->type == HSM_KEY_ED448 ? 57
                                                : 1 + 2 * field;
    cm_span point = hsm_ec_point(cm_span_make(pt, pt_len), raw_len);
    if (point.len != raw_len) {
        hsm_error_set(err, "key '%s': CKA_EC_POINT has an unexpected length %zu", k->label,
                      point.len);
        r = cm_result_make(HSM_E_NO_PUBLIC_KEY);
        goto out;
    }
    r = hsm_spki_build(k, curve, point, cm_span_make(NULL, 0), cm_span_make(NULL, 0));
out:
    free(params);
    free(pt);
    return r;
}

cm_result hsm_key_load(hsm_token *t, hsm_key *k, hsm_error *err, CK_OBJECT_HANDLE h)
{
    k->token = t;
    k->handle = h;
    CK_KEY_TYPE kt = 0;
    CK_BBOOL always = CK_FALSE;
    CK_ATTRIBUTE a[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)},
                        {CKA_ID, k->id, sizeof(k->id)},
                        {CKA_LABEL, k->label, sizeof(k->label) - 1}};
    CK_RV rv = t->f->C_GetAttributeValue(t->admin, h, a, 3);
    if (rv != CKR_OK) {
        return hsm_ckr_fail(err, "C_GetAttributeValue", rv);
    }
    k->id_len = a[1].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0 : a[1].ulValueLen;
    k->label_len = a[2].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0 : a[2].ulValueLen;
    k->label[k->label_len] = '\0';
    CK_ATTRIBUTE aa = {CKA_ALWAYS_AUTHENTICATE, &always, sizeof(always)};
    if (t->f->C_GetAttributeValue(t->admin, h, &aa, 1) == CKR_OK && always == CK_TRUE) {
        hsm_error_set(err,
                      "key '%s' has CKA_ALWAYS_AUTHENTICATE: every signature would need a "
                      "login; regenerate it without",
                      k->label);
        CM_BAIL(HSM_E_ALWAYS_AUTH);
    }

    if (kt == CKK_RSA) {
        return hsm_key_load_rsa(t, k, err);
    }
    if (kt == CKK_EC || kt == CKK_EC_EDWARDS) {
        return hsm_key_load_ec(t, k, err, kt);
    }
    hsm_error_set(err, "key '%s': CKA_KEY_TYPE 0x%lx is not RSA, EC or EC_EDWARDS", k->label,
                  (unsigned long)kt);
    CM_BAIL(HSM_E_KEY_TYPE);
}

// hsm_list_keys appends " [object=LABEL id=HEX]" for up to HSM_MAX_FOUND private keys to |err|.
static void hsm_list_keys(hsm_token *t, hsm_error *err, const CK_OBJECT_HANDLE *h, CK_ULONG n)
{
    for (CK_ULONG i = 0; i < n && i < HSM_MAX_FOUND; i++) {
        char label[65] = "", id[64] = "";
        uint8_t idb[32];
        CK_ATTRIBUTE a[] = {{CKA_LABEL, label, sizeof(label) - 1}, {CKA_ID, idb, sizeof(idb)}};
        if (t->f->C_GetAttributeValue(t->admin, h[i], a, 2) == CKR_OK) {
            label[a[0].ulValueLen < sizeof(label) ? a[0].ulValueLen : 0] = '\0';
            hsm_hex(id, sizeof(id), idb, a[1].ulValueLen <= sizeof(idb) ? a[1].ulValueLen : 0);
        }
        char item[160];
        (void)snprintf(item, sizeof(item), " [object=%s id=%s]", label, id);
        hsm_error_append(err, item);
    }
}

cm_result hsm_key_register(hsm_token *t, hsm_key *k)
{
    CM_ENSURE(t->num_keys < HSM_MAX_KEYS_PER_TOKEN, CM_E_LIMIT);
    k->index = t->num_keys++;
    return cm_result_make(CM_OK);
}

// hsm_key_match_error explains a key URI that matched |n| != 1 private keys: the ambiguous
// ones, or (none matched) every private key on the token, so the operator sees the labels and
// ids to choose from. |tmpl| starts with the class and CKA_TOKEN attributes.
static cm_result hsm_key_match_error(hsm_token *t, hsm_error *err, CK_OBJECT_HANDLE *h, CK_ULONG n,
                                     CK_ATTRIBUTE *tmpl)
{
    if (n > 1) {
        hsm_error_set(err, "several private keys on token '%s' match the URI:", t->label);
        hsm_list_keys(t, err, h, n);
        CM_BAIL(HSM_E_AMBIGUOUS_KEY);
    }
    hsm_error_set(err, "no private key on token '%s' matches the URI; it holds:", t->label);
    if (hsm_find(t, h, HSM_MAX_FOUND, &n, tmpl, 2, t->admin) != CKR_OK) {
        n = 0;
    }
    hsm_list_keys(t, err, h, n);
    CM_BAIL(HSM_E_NO_KEY);
}

cm_result hsm_key_find(hsm_token *t, hsm_key **out, hsm_error *err, const char *uri_text)
{
    *out = NULL;
    hsm_error_set(err, "%s", "");
    P11KitUri *uri = p11_kit_uri_new();
    CM_ENSURE(uri != NULL, CM_E_NOMEM);
    hsm_key *k = NULL;
    (void)pthread_mutex_lock(&t->admin_mu);
    int ur = p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_ANY, uri);
    cm_result r = cm_result_make(ur == P11_KIT_URI_OK ? CM_OK : HSM_E_URI);
    if (!cm_ok(r)) {
        hsm_error_set(err, "not a PKCS#11 URI: %s", p11_kit_uri_message(ur));
        goto out;
    }
    if (p11_kit_uri_match_token_info(uri, &t->info) != 1) {
        hsm_error_set(err, "the URI names another token than the open one (token=%s)", t->label);
        r = cm_result_make(HSM_E_NO_TOKEN);
        goto out;
    }
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[4] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, sizeof(yes)}};
    CK_ULONG nt = 2;
    CK_ATTRIBUTE *ucls = p11_kit_uri_get_attribute(uri, CKA_CLASS);
    if (ucls != NULL && (ucls->ulValueLen != sizeof(CK_OBJECT_CLASS) ||
                         *(CK_OBJECT_CLASS *)ucls->pValue != CKO_PRIVATE_KEY)) {
        hsm_error_set(err, "type= must be 'private': only private keys sign");
        r = cm_result_make(HSM_E_URI);
        goto out;
    }
    CK_ATTRIBUTE *ulabel = p11_kit_uri_get_attribute(uri, CKA_LABEL);
    CK_ATTRIBUTE *uid = p11_kit_uri_get_attribute(uri, CKA_ID);
    if (ulabel != NULL) {
        tmpl[nt++] = *ulabel;
    }
    if (uid != NULL) {
        tmpl[nt++] = *uid;
    }
    CK_OBJECT_HANDLE h[HSM_MAX_FOUND];
    CK_ULONG n;
    CK_RV rv = hsm_find(t, h, HSM_MAX_FOUND, &n, tmpl, nt, t->admin);
    if (rv != CKR_OK) {
        r = hsm_ckr_fail(err, "C_FindObjects", rv);
        goto out;
    }
    if (n != 1) {
        r = hsm_key_match_error(t, err, h, n, tmpl);
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        r = cm_result_make(CM_E_NOMEM);
        goto out;
    }
    r = hsm_key_load(t, k, err, h[0]);
    if (cm_ok(r)) {
        r = hsm_key_register(t, k);
    }
out:
    (void)pthread_mutex_unlock(&t->admin_mu);
    hsm_uri_wipe_pin(uri);
    p11_kit_uri_free(uri);
    if (!cm_ok(r)) {
        hsm_key_free(k);
        return r;
    }
    *out = k;
    return r;
}

void hsm_key_free(hsm_key *k)
{
    if (k == NULL) {
        return;
    }
    free(k->spki);
    free(k);
}

hsm_key_type hsm_key_get_type(const hsm_key *k)
{
    return k->type;
}

uint32_t hsm_key_get_bits(const hsm_key *k)
{
    return k->bits;
}

cm_span hsm_key_get0_spki(const hsm_key *k)
{
    return cm_span_make(k->spki, k->spki_len);
}

const char *hsm_key_get0_label(const hsm_key *k)
{
    return k->label;
}

cm_span hsm_key_get0_id(const hsm_key *k)
{
    return cm_span_make(k->id, k->id_len);
}

cm_result hsm_key_get_bool_attr(hsm_key *k, bool *out, CK_ATTRIBUTE_TYPE type)
{
    hsm_token *t = k->token;
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a = {type, &v, sizeof(v)};
    (void)pthread_mutex_lock(&t->admin_mu);
    CK_RV rv = t->f->C_GetAttributeValue(t->admin, k->handle, &a, 1);
    (void)pthread_mutex_unlock(&t->admin_mu);
    CM_ENSURE(rv == CKR_OK, cm_code_from_ckr(rv));
    *out = v == CK_TRUE;
    return cm_result_make(CM_OK);
}
