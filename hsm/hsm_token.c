// Tokens and keys: module loading through p11-kit, selection by PKCS#11 URI (RFC 7512), login,
// key lookup, public key export and key generation. Everything here runs on the admin session
// under admin_mu; the signing hot path is in hsm_pool.c.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"

#define HSM_PIN_MAX      256u  // longest PIN accepted from a URI or pin file
#define HSM_MAX_SLOTS    64u   // slots looked at when matching a token
#define HSM_MAX_FOUND    16u   // objects listed in an error message
#define HSM_MAX_ATTR_LEN 4096u // largest attribute read (an RSA-16384 modulus is 2 KiB)

// hsm_trim copies a blank-padded PKCS#11 string of |len| bytes into |out| without the padding.
static void hsm_trim(char *out, size_t cap, const unsigned char *s, size_t len)
{
    while (len > 0 && s[len - 1] == ' ') {
        len--;
    }
    if (len >= cap) {
        len = cap - 1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
}

static void hsm_hex(char *out, size_t cap, const uint8_t *p, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < len && o + 3 <= cap; i++) {
        (void)snprintf(out + o, cap - o, "%02x", p[i]);
        o += 2;
    }
}

// hsm_append appends |text| to |err| (for lists of what was found), truncating.
static void hsm_append(hsm_error *err, const char *text)
{
    if (err == NULL) {
        return;
    }
    size_t used = strlen(err->msg);
    size_t n = strlen(text);
    if (n > sizeof(err->msg) - 1 - used) {
        n = sizeof(err->msg) - 1 - used;
    }
    memcpy(err->msg + used, text, n);
    err->msg[used + n] = '\0';
}

// hsm_pin_read_file reads the first line of |path| (the pin-source file) into |buf|, without
// its line end. HSM_E_PIN_SOURCE, with |err| naming the file, when it cannot.
static cm_result hsm_pin_read_file(char *buf, size_t cap, size_t *out_len, hsm_error *err,
                                   const char *path)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        char eb[128];
        hsm_error_set(err, "pin-source '%s': %s", path, strerror_r(errno, eb, sizeof(eb)));
        CM_BAIL(HSM_E_PIN_SOURCE);
    }
    size_t n = fread(buf, 1, cap, fp);
    bool read_err = ferror(fp) != 0;
    (void)fclose(fp);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }
    if (read_err || n == 0 || n >= cap || memchr(buf, '\n', n) != NULL) {
        OPENSSL_cleanse(buf, cap);
        hsm_error_set(err, "pin-source '%s': %s", path,
                      read_err ? "read error" : "not a single line of 1..255 bytes");
        CM_BAIL(HSM_E_PIN_SOURCE);
    }
    *out_len = n;
    return cm_result_make(CM_OK);
}

// hsm_login_err logs the user in on |s|. With a pin-source the file is read for this login
// and the copy wiped right after; with a pin-value the locked copy is used.
// CKR_USER_ALREADY_LOGGED_IN counts as success (the login is per application and token).
static cm_result hsm_login_err(hsm_token *t, hsm_error *err, CK_SESSION_HANDLE s)
{
    if (t->pin_path == NULL && t->pin == NULL) {
        return cm_result_make(CM_OK);
    }
    char buf[HSM_PIN_MAX + 2];
    const char *pin = t->pin;
    size_t pin_len = t->pin_len;
    if (t->pin_path != NULL) {
        CM_TRY(hsm_pin_read_file(buf, sizeof(buf), &pin_len, err, t->pin_path));
        pin = buf;
    }
    CK_RV rv = t->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)pin, (CK_ULONG)pin_len);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        return hsm_ckr_fail(err, "C_Login", rv);
    }
    return cm_result_make(CM_OK);
}

cm_result hsm_login(hsm_token *t, CK_SESSION_HANDLE s)
{
    return hsm_login_err(t, NULL, s);
}

// ---------------------------------------------------------------------------------------------
// PIN

// hsm_uri_wipe_pin wipes p11-kit's copy of a pin-value before the URI is freed (p11-kit frees
// without wiping; the buffer is its own and about to be released).
static void hsm_uri_wipe_pin(P11KitUri *uri)
{
    if (uri == NULL) {
        return;
    }
    const char *value = p11_kit_uri_get_pin_value(uri);
    if (value != NULL) {
        OPENSSL_cleanse((void *)(uintptr_t)value, strlen(value));
    }
}

// hsm_pin_load records where the PIN comes from: the pin-source path (read at each login, so
// no copy of the PIN outlives a login), or a copy of pin-value in locked memory (it is the only
// source for a later re-login after the token lost its login). The URI's own copy of
// pin-value is wiped.
static cm_result hsm_pin_load(hsm_token *t, hsm_error *err, P11KitUri *uri)
{
    const char *value = p11_kit_uri_get_pin_value(uri);
    const char *source = p11_kit_uri_get_pin_source(uri);
    if (value != NULL) {
        size_t n = strlen(value);
        cm_result r = cm_result_make(CM_OK);
        if (n >= HSM_PIN_MAX) {
            hsm_error_set(err, "pin-value is longer than %u bytes", HSM_PIN_MAX - 1);
            r = cm_result_make(HSM_E_URI);
        } else if ((t->pin = malloc(HSM_PIN_MAX)) == NULL) {
            r = cm_result_make(CM_E_NOMEM);
        } else {
            t->pin_cap = HSM_PIN_MAX;
            // Best effort: keep the PIN out of swap. Failing (RLIMIT_MEMLOCK) is not fatal.
            (void)mlock(t->pin, t->pin_cap);
            memcpy(t->pin, value, n);
            t->pin_len = n;
        }
        hsm_uri_wipe_pin(uri);
        return r;
    }
    if (source == NULL) {
        return cm_result_make(CM_OK);
    }
    const char *path = source;
    if (strncmp(path, "file:", 5) == 0) {
        path += 5;
    }
    if (path[0] == '|') {
        hsm_error_set(err, "pin-source '%s': commands are not supported, name a file", source);
        CM_BAIL(HSM_E_PIN_SOURCE);
    }
    t->pin_path = strdup(path);
    CM_ENSURE(t->pin_path != NULL, CM_E_NOMEM);
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Module and token

// hsm_module_load loads the module the URI names: module-path directly, module-name from
// p11-kit's configured modules (RFC 7512 §2.3 query attributes).
static cm_result hsm_module_load(CK_FUNCTION_LIST **out, hsm_error *err, P11KitUri *uri)
{
    const char *path = p11_kit_uri_get_module_path(uri);
    const char *name = p11_kit_uri_get_module_name(uri);
    if (path != NULL) {
        *out = p11_kit_module_load(path, 0);
        if (*out == NULL) {
            hsm_error_set(err, "module-path '%s': %s", path, p11_kit_message());
            CM_BAIL(HSM_E_MODULE_LOAD);
        }
        return cm_result_make(CM_OK);
    }
    if (name == NULL) {
        hsm_error_set(err, "the URI names no module-path or module-name");
        CM_BAIL(HSM_E_NO_MODULE);
    }
    CK_FUNCTION_LIST **mods = p11_kit_modules_load(NULL, 0);
    if (mods == NULL) {
        hsm_error_set(err, "p11-kit cannot load its configured modules: %s", p11_kit_message());
        CM_BAIL(HSM_E_MODULE_LOAD);
    }
    CK_FUNCTION_LIST *pick = p11_kit_module_for_name(mods, name);
    for (size_t i = 0; mods[i] != NULL; i++) {
        if (mods[i] != pick) {
            p11_kit_module_release(mods[i]);
        }
    }
    free(mods);
    if (pick == NULL) {
        hsm_error_set(err, "module-name '%s' is not configured in p11-kit", name);
        CM_BAIL(HSM_E_MODULE_LOAD);
    }
    *out = pick;
    return cm_result_make(CM_OK);
}

static void hsm_token_info_text(char *out, size_t cap, const CK_TOKEN_INFO *ti)
{
    char label[33], manuf[33], model[17], serial[17];
    hsm_trim(label, sizeof(label), ti->label, sizeof(ti->label));
    hsm_trim(manuf, sizeof(manuf), ti->manufacturerID, sizeof(ti->manufacturerID));
    hsm_trim(model, sizeof(model), ti->model, sizeof(ti->model));
    hsm_trim(serial, sizeof(serial), ti->serialNumber, sizeof(ti->serialNumber));
    (void)snprintf(out, cap, "token=%s manufacturer=%s model=%s serial=%s", label, manuf, model,
                   serial);
}

// hsm_token_select finds the one slot whose slot and token information match the URI.
static cm_result hsm_token_select(hsm_token *t, hsm_error *err, P11KitUri *uri)
{
    CK_SLOT_ID slots[HSM_MAX_SLOTS];
    CK_ULONG n = HSM_MAX_SLOTS;
    CK_RV rv = t->f->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK) {
        return hsm_ckr_fail(err, "C_GetSlotList", rv);
    }
    size_t matches = 0;
    hsm_error found = {""};
    for (CK_ULONG i = 0; i < n; i++) {
        CK_SLOT_INFO si;
        CK_TOKEN_INFO ti;
        if (t->f->C_GetSlotInfo(slots[i], &si) != CKR_OK ||
            t->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) {
            continue;
        }
        char text[160];
        hsm_token_info_text(text, sizeof(text), &ti);
        hsm_append(&found, " [");
        hsm_append(&found, text);
        hsm_append(&found, "]");
        if (p11_kit_uri_match_slot_info(uri, &si) == 1 &&
            p11_kit_uri_match_token_info(uri, &ti) == 1) {
            if (matches == 0) {
                t->slot = slots[i];
                t->info = ti;
            }
            matches++;
        }
    }
    if (matches == 0) {
        hsm_error_set(err, "no token matches the URI; the module has:%s",
                      n == 0 ? " no tokens" : found.msg);
        CM_BAIL(HSM_E_NO_TOKEN);
    }
    if (matches > 1) {
        hsm_error_set(err, "%zu tokens match the URI (add token= or serial=):%s", matches,
                      found.msg);
        CM_BAIL(HSM_E_AMBIGUOUS_TOKEN);
    }
    hsm_trim(t->label, sizeof(t->label), t->info.label, sizeof(t->info.label));
    return cm_result_make(CM_OK);
}

static void hsm_token_load_mechanisms(hsm_token *t)
{
    static const struct {
        CK_MECHANISM_TYPE mech;
        uint32_t bit;
    } k_map[] = {
        {CKM_ECDSA, HSM_MECH_ECDSA},
        {CKM_ECDSA_SHA256, HSM_MECH_ECDSA_SHA256},
        {CKM_ECDSA_SHA384, HSM_MECH_ECDSA_SHA384},
        {CKM_ECDSA_SHA512, HSM_MECH_ECDSA_SHA512},
        {CKM_RSA_PKCS, HSM_MECH_RSA_PKCS},
        {CKM_SHA256_RSA_PKCS, HSM_MECH_SHA256_RSA},
        {CKM_SHA384_RSA_PKCS, HSM_MECH_SHA384_RSA},
        {CKM_SHA512_RSA_PKCS, HSM_MECH_SHA512_RSA},
        {CKM_RSA_PKCS_PSS, HSM_MECH_RSA_PSS},
        {CKM_SHA256_RSA_PKCS_PSS, HSM_MECH_SHA256_PSS},
        {CKM_SHA384_RSA_PKCS_PSS, HSM_MECH_SHA384_PSS},
        {CKM_SHA512_RSA_PKCS_PSS, HSM_MECH_SHA512_PSS},
        {CKM_EDDSA, HSM_MECH_EDDSA},
    };
    CK_MECHANISM_TYPE list[256];
    CK_ULONG n = 256;
    if (t->f->C_GetMechanismList(t->slot, list, &n) != CKR_OK) {
        n = 0;
    }
    t->mechs = 0;
    for (CK_ULONG i = 0; i < n; i++) {
        for (size_t j = 0; j < sizeof(k_map) / sizeof(k_map[0]); j++) {
            if (list[i] == k_map[j].mech) {
                t->mechs |= k_map[j].bit;
            }
        }
    }
}

bool hsm_token_has_mechanism(const hsm_token *t, unsigned long mech)
{
    CK_MECHANISM_INFO mi;
    return t->f->C_GetMechanismInfo(t->slot, mech, &mi) == CKR_OK;
}

// hsm_token_attach loads and initialises the module the URI names and checks the URI's
// library attributes against it.
static cm_result hsm_token_attach(hsm_token *t, hsm_error *err, P11KitUri *uri)
{
    CM_TRY(hsm_module_load(&t->f, err, uri));
    // p11-kit initialises a managed module with CKF_OS_LOCKING_OK and reference counts it, so
    // several tokens of one module (and other p11-kit users in the process) coexist.
    CK_RV rv = p11_kit_module_initialize(t->f);
    if (rv != CKR_OK) {
        return hsm_ckr_fail(err, "C_Initialize", rv);
    }
    t->initialized = true;
    CK_INFO mi;
    rv = t->f->C_GetInfo(&mi);
    if (rv != CKR_OK) {
        return hsm_ckr_fail(err, "C_GetInfo", rv);
    }
    if (p11_kit_uri_match_module_info(uri, &mi) != 1) {
        hsm_error_set(err, "the module does not match the URI's library attributes");
        CM_BAIL(HSM_E_NO_TOKEN);
    }
    return cm_result_make(CM_OK);
}

cm_result hsm_token_open(hsm_token **out, hsm_error *err, const char *uri_text)
{
    *out = NULL;
    hsm_error_set(err, "%s", "");
    hsm_token *t = calloc(1, sizeof(*t));
    P11KitUri *uri = p11_kit_uri_new();
    cm_result r = cm_result_make(t == NULL || uri == NULL ? CM_E_NOMEM : CM_OK);
    if (!cm_ok(r)) {
        goto out;
    }
    if (pthread_mutex_init(&t->admin_mu, NULL) != 0) {
        free(t);
        t = NULL;
        r = cm_result_make(CM_E_NOMEM);
        goto out;
    }
    int ur = p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_ANY, uri);
    if (ur != P11_KIT_URI_OK) {
        hsm_error_set(err, "not a PKCS#11 URI: %s", p11_kit_uri_message(ur));
        r = cm_result_make(HSM_E_URI);
        goto out;
    }
    r = hsm_token_attach(t, err, uri);
    if (!cm_ok(r)) {
        goto out;
    }
    r = hsm_token_select(t, err, uri);
    if (!cm_ok(r)) {
        goto out;
    }
    r = hsm_pin_load(t, err, uri);
    if (!cm_ok(r)) {
        goto out;
    }
    if (t->pin == NULL && t->pin_path == NULL && (t->info.flags & CKF_LOGIN_REQUIRED) != 0) {
        hsm_error_set(err, "token '%s' requires a login: add pin-source or pin-value", t->label);
        r = cm_result_make(HSM_E_NO_PIN);
        goto out;
    }
    CK_RV rv =
        t->f->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &t->admin);
    if (rv != CKR_OK) {
        r = hsm_ckr_fail(err, "C_OpenSession", rv);
        goto out;
    }
    t->admin_open = true;
    r = hsm_login_err(t, err, t->admin);
    if (!cm_ok(r)) {
        if (cm_result_class(r) == CM_CLASS_HSM) {
            char note[64];
            (void)snprintf(note, sizeof(note), " on token '%s'", t->label);
            hsm_append(err, note);
        }
        goto out;
    }
    hsm_token_load_mechanisms(t);
out:
    hsm_uri_wipe_pin(uri);
    p11_kit_uri_free(uri);
    if (!cm_ok(r)) {
        hsm_token_free(t);
        return r;
    }
    *out = t;
    return r;
}

void hsm_token_free(hsm_token *t)
{
    if (t == NULL) {
        return;
    }
    if (t->admin_open) {
        // Closing the last session logs out (PKCS#11 §5.6); closing explicitly keeps it tidy.
        (void)t->f->C_CloseSession(t->admin);
    }
    if (t->initialized) {
        (void)p11_kit_module_finalize(t->f);
    }
    if (t->f != NULL) {
        p11_kit_module_release(t->f);
    }
    if (t->pin != NULL) {
        OPENSSL_cleanse(t->pin, t->pin_cap);
        (void)munlock(t->pin, t->pin_cap);
        free(t->pin);
    }
    free(t->pin_path);
    (void)pthread_mutex_destroy(&t->admin_mu);
    free(t);
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

// hsm_find runs C_FindObjects* with |tmpl| on the admin session; |*out_n| matches (at most
// |cap| handles are returned).
static CK_RV hsm_find(hsm_token *t, CK_OBJECT_HANDLE *out, CK_ULONG cap, CK_ULONG *out_n,
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
// Ed25519 (RFC 8410 §4): id-Ed25519 with absent parameters; the key is the 32 raw bytes.
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
        der_put_oid_lit(&b, DER_OID_ED25519);
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
// PrintableString "edwards25519" (PKCS#11 3.0 §2.3.5).
static cm_result hsm_key_curve(hsm_key *k, cm_span *out_oid, cm_span params, CK_KEY_TYPE kt)
{
    der_reader r;
    der_reader_init(&r, params);
    if (kt == CKK_EC_EDWARDS) {
        cm_span s;
        bool by_oid = cm_ok(der_get_oid(&r, &s)) && der_oid_is(s, DER_OID_ED25519);
        bool by_name = !by_oid && cm_ok(der_get_string(&r, DER_TAG_PRINTABLE_STRING, &s)) &&
                       s.len == strlen(HSM_ED25519_CURVE_NAME) &&
                       memcmp(s.p, HSM_ED25519_CURVE_NAME, s.len) == 0;
        CM_ENSURE(by_oid || by_name, HSM_E_KEY_TYPE);
        k->type = HSM_KEY_ED25519;
        k->bits = 256;
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
        hsm_error_set(err, "key '%s': curve not supported (P-256, P-384, P-521, Ed25519)",
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
    size_t raw_len = k->type == HSM_KEY_ED25519 ? 32 : 1 + 2 * field;
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

// hsm_key_load fills |k| from the private key object |h|: identity, type and public key.
// Called with admin_mu held.
static cm_result hsm_key_load(hsm_token *t, hsm_key *k, hsm_error *err, CK_OBJECT_HANDLE h)
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

// hsm_list_keys appends "label(id hex)" of up to HSM_MAX_FOUND private keys to |err|.
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
        hsm_append(err, item);
    }
}

// hsm_key_register gives |k| its per-token index (the slot in each worker's handle cache).
static cm_result hsm_key_register(hsm_token *t, hsm_key *k)
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

// ---------------------------------------------------------------------------------------------
// Key generation

// hsm_key_exists reports whether a private key with CKA_LABEL |label| or CKA_ID |id| exists.
static CK_RV hsm_key_exists(hsm_token *t, bool *out, const char *label, cm_span id)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_OBJECT_HANDLE h;
    CK_ULONG n = 0;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE by_label[] = {{CKA_CLASS, &cls, sizeof(cls)},
                               {CKA_TOKEN, &yes, sizeof(yes)},
                               {CKA_LABEL, (void *)(uintptr_t)label, strlen(label)}};
    CK_RV rv = hsm_find(t, &h, 1, &n, by_label, 3, t->admin);
    if (rv == CKR_OK && n == 0 && id.len > 0) {
        CK_ATTRIBUTE by_id[] = {{CKA_CLASS, &cls, sizeof(cls)},
                                {CKA_TOKEN, &yes, sizeof(yes)},
                                {CKA_ID, (void *)(uintptr_t)id.p, id.len}};
        rv = hsm_find(t, &h, 1, &n, by_id, 3, t->admin);
    }
    *out = n > 0;
    return rv;
}

cm_result hsm_key_generate(hsm_token *t, hsm_key **out, hsm_error *err, hsm_keygen_type type,
                           const char *label, cm_span id)
{
    *out = NULL;
    hsm_error_set(err, "%s", "");
    CM_ENSURE(label != NULL && label[0] != '\0' && strlen(label) < 65 && id.len <= 64,
              CM_E_INVALID_ARG);
    static const uint8_t k_p256[] = DER_OID_P256, k_p384[] = DER_OID_P384, k_p521[] = DER_OID_P521,
                         k_ed[] = DER_OID_ED25519;
    // CKA_EC_PARAMS is the DER of the curve OID: 06 len content.
    uint8_t ec_params[16];
    size_t ec_len = 0;
    CK_ULONG mod_bits = 0;
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    const uint8_t *oid = NULL;
    size_t oid_len = 0;
    switch (type) {
    case HSM_KEYGEN_EC_P256:
        oid = k_p256, oid_len = sizeof(k_p256) - 1;
        break;
    case HSM_KEYGEN_EC_P384:
        oid = k_p384, oid_len = sizeof(k_p384) - 1;
        break;
    case HSM_KEYGEN_EC_P521:
        oid = k_p521, oid_len = sizeof(k_p521) - 1;
        break;
    case HSM_KEYGEN_ED25519:
        oid = k_ed, oid_len = sizeof(k_ed) - 1;
        mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
        break;
    case HSM_KEYGEN_RSA_2048:
        mod_bits = 2048;
        break;
    case HSM_KEYGEN_RSA_3072:
        mod_bits = 3072;
        break;
    case HSM_KEYGEN_RSA_4096:
        mod_bits = 4096;
        break;
    default:
        CM_BAIL(CM_E_INVALID_ARG);
    }
    if (oid != NULL) {
        ec_params[0] = DER_TAG_OID;
        ec_params[1] = (uint8_t)oid_len;
        memcpy(ec_params + 2, oid, oid_len);
        ec_len = oid_len + 2;
    } else {
        mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    }
    static const CK_BYTE k_f4[] = {0x01, 0x00, 0x01};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG label_len = strlen(label);
    CK_ATTRIBUTE pub[6] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_LABEL, (void *)(uintptr_t)label, label_len},
        {CKA_ID, (void *)(uintptr_t)id.p, id.len},
    };
    CK_ULONG npub = 4;
    if (oid != NULL) {
        pub[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, ec_params, ec_len};
    } else {
        pub[npub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &mod_bits, sizeof(mod_bits)};
        pub[npub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)(uintptr_t)k_f4, sizeof(k_f4)};
    }
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_ALWAYS_AUTHENTICATE, &no, sizeof(no)},
        {CKA_LABEL, (void *)(uintptr_t)label, label_len},
        {CKA_ID, (void *)(uintptr_t)id.p, id.len},
    };

    hsm_key *k = NULL;
    (void)pthread_mutex_lock(&t->admin_mu);
    bool exists = false;
    CK_RV rv = hsm_key_exists(t, &exists, label, id);
    cm_result r = rv == CKR_OK ? cm_result_make(CM_OK) : hsm_ckr_fail(err, "C_FindObjects", rv);
    if (!cm_ok(r)) {
        goto out;
    }
    if (exists) {
        hsm_error_set(err, "token '%s' already has a private key with label '%s' or that id",
                      t->label, label);
        r = cm_result_make(HSM_E_KEY_EXISTS);
        goto out;
    }
    CK_OBJECT_HANDLE hpub, hpriv;
    rv = t->f->C_GenerateKeyPair(t->admin, &mech, pub, npub, priv, sizeof(priv) / sizeof(priv[0]),
                                 &hpub, &hpriv);
    if (rv != CKR_OK) {
        r = hsm_ckr_fail(err, "C_GenerateKeyPair", rv);
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        r = cm_result_make(CM_E_NOMEM);
        goto out;
    }
    r = hsm_key_load(t, k, err, hpriv);
    if (cm_ok(r)) {
        r = hsm_key_register(t, k);
    }
out:
    (void)pthread_mutex_unlock(&t->admin_mu);
    if (!cm_ok(r)) {
        hsm_key_free(k);
        return r;
    }
    *out = k;
    return r;
}
