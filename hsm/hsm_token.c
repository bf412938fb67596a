// Tokens: module loading through p11-kit, token selection by PKCS#11 URI (RFC 7512), the PIN
// (pin-source or pin-value) and login. hsm_token_open and hsm_token_free run at start-up and
// shutdown; hsm_login also runs on the workers' sessions (hsm_pool.c). Keys are in hsm_key.c,
// key generation in hsm_keygen.c, the signing hot path in hsm_pool.c.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"

#define HSM_PIN_MAX   256u // longest PIN accepted from a URI or pin file
#define HSM_MAX_SLOTS 64u  // slots looked at when matching a token

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

void hsm_error_append(hsm_error *err, const char *text)
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

void hsm_uri_wipe_pin(P11KitUri *uri)
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
        hsm_error_append(&found, " [");
        hsm_error_append(&found, text);
        hsm_error_append(&found, "]");
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
            hsm_error_append(err, note);
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
