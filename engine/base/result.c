// Result codes: the registry (codes.def) with names, explanations and PKIFailureInfo bits,
// failure-site notes, the bail-out helpers and the reason buffer.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "engine/base/base.h"

// The registry: every row of codes.def, in file order.
static const cm_code_info k_codes[] = {
#define CM_CODE_DEF(mod, sym, cls, detail, fail, text) \
    {CM_CODE(CM_CLASS_##cls, detail),                  \
     #mod,                                             \
     #sym,                                             \
     (uint32_t)CM_CLASS_##cls,                         \
     (uint32_t)(detail),                               \
     CM_FAIL_##fail,                                   \
     text},
#include "engine/base/codes.def"
};

static const char *const k_class_names[] = {
    "OK", "USAGE", "PROTO", "POLICY", "RESOURCE", "AGAIN", "CRYPTO", "HSM", "IO",
};

// PKCS#11 return values (PKCS#11 v2.40 §11.1; the numbers are those of p11-kit's pkcs11.h, and
// tests/hsm checks the table against that header).
typedef struct cm_ckr_entry {
    unsigned long rv;
    const char *name;
} cm_ckr_entry;

static const cm_ckr_entry k_ckr_names[] = {
    {0x00000000ul, "CKR_OK"},
    {0x00000001ul, "CKR_CANCEL"},
    {0x00000002ul, "CKR_HOST_MEMORY"},
    {0x00000003ul, "CKR_SLOT_ID_INVALID"},
    {0x00000005ul, "CKR_GENERAL_ERROR"},
    {0x00000006ul, "CKR_FUNCTION_FAILED"},
    {0x00000007ul, "CKR_ARGUMENTS_BAD"},
    {0x00000008ul, "CKR_NO_EVENT"},
    {0x00000009ul, "CKR_NEED_TO_CREATE_THREADS"},
    {0x0000000aul, "CKR_CANT_LOCK"},
    {0x00000010ul, "CKR_ATTRIBUTE_READ_ONLY"},
    {0x00000011ul, "CKR_ATTRIBUTE_SENSITIVE"},
    {0x00000012ul, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {0x00000013ul, "CKR_ATTRIBUTE_VALUE_INVALID"},
    {0x0000001bul, "CKR_ACTION_PROHIBITED"},
    {0x00000020ul, "CKR_DATA_INVALID"},
    {0x00000021ul, "CKR_DATA_LEN_RANGE"},
    {0x00000030ul, "CKR_DEVICE_ERROR"},
    {0x00000031ul, "CKR_DEVICE_MEMORY"},
    {0x00000032ul, "CKR_DEVICE_REMOVED"},
    {0x00000050ul, "CKR_FUNCTION_CANCELED"},
    {0x00000051ul, "CKR_FUNCTION_NOT_PARALLEL"},
    {0x00000054ul, "CKR_FUNCTION_NOT_SUPPORTED"},
    {0x00000060ul, "CKR_KEY_HANDLE_INVALID"},
    {0x00000062ul, "CKR_KEY_SIZE_RANGE"},
    {0x00000063ul, "CKR_KEY_TYPE_INCONSISTENT"},
    {0x00000068ul, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
    {0x00000070ul, "CKR_MECHANISM_INVALID"},
    {0x00000071ul, "CKR_MECHANISM_PARAM_INVALID"},
    {0x00000082ul, "CKR_OBJECT_HANDLE_INVALID"},
    {0x00000090ul, "CKR_OPERATION_ACTIVE"},
    {0x00000091ul, "CKR_OPERATION_NOT_INITIALIZED"},
    {0x000000a0ul, "CKR_PIN_INCORRECT"},
    {0x000000a1ul, "CKR_PIN_INVALID"},
    {0x000000a2ul, "CKR_PIN_LEN_RANGE"},
    {0x000000a3ul, "CKR_PIN_EXPIRED"},
    {0x000000a4ul, "CKR_PIN_LOCKED"},
    {0x000000b0ul, "CKR_SESSION_CLOSED"},
    {0x000000b1ul, "CKR_SESSION_COUNT"},
    {0x000000b3ul, "CKR_SESSION_HANDLE_INVALID"},
    {0x000000b4ul, "CKR_SESSION_PARALLEL_NOT_SUPPORTED"},
    {0x000000b5ul, "CKR_SESSION_READ_ONLY"},
    {0x000000b6ul, "CKR_SESSION_EXISTS"},
    {0x000000b7ul, "CKR_SESSION_READ_ONLY_EXISTS"},
    {0x000000b8ul, "CKR_SESSION_READ_WRITE_SO_EXISTS"},
    {0x000000c0ul, "CKR_SIGNATURE_INVALID"},
    {0x000000c1ul, "CKR_SIGNATURE_LEN_RANGE"},
    {0x000000d0ul, "CKR_TEMPLATE_INCOMPLETE"},
    {0x000000d1ul, "CKR_TEMPLATE_INCONSISTENT"},
    {0x000000e0ul, "CKR_TOKEN_NOT_PRESENT"},
    {0x000000e1ul, "CKR_TOKEN_NOT_RECOGNIZED"},
    {0x000000e2ul, "CKR_TOKEN_WRITE_PROTECTED"},
    {0x00000100ul, "CKR_USER_ALREADY_LOGGED_IN"},
    {0x00000101ul, "CKR_USER_NOT_LOGGED_IN"},
    {0x00000102ul, "CKR_USER_PIN_NOT_INITIALIZED"},
    {0x00000103ul, "CKR_USER_TYPE_INVALID"},
    {0x00000104ul, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"},
    {0x00000105ul, "CKR_USER_TOO_MANY_TYPES"},
    {0x00000130ul, "CKR_DOMAIN_PARAMS_INVALID"},
    {0x00000140ul, "CKR_CURVE_NOT_SUPPORTED"},
    {0x00000150ul, "CKR_BUFFER_TOO_SMALL"},
    {0x00000121ul, "CKR_RANDOM_NO_RNG"},
    {0x00000190ul, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {0x00000191ul, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
    {0x000001a0ul, "CKR_MUTEX_BAD"},
    {0x000001a1ul, "CKR_MUTEX_NOT_LOCKED"},
    {0x00000200ul, "CKR_FUNCTION_REJECTED"},
};

#define CM_CKR_VENDOR_DEFINED 0x80000000ul

static _Thread_local char t_name_buf[64];
static _Thread_local char t_text_buf[128];
#ifndef NDEBUG
static _Thread_local char t_bail_site[128];
#endif

const cm_code_info *cm_code_registry(size_t *out_num)
{
    *out_num = sizeof(k_codes) / sizeof(k_codes[0]);
    return k_codes;
}

const cm_code_info *cm_code_find(uint32_t code)
{
    if (code == CM_OK) {
        return NULL;
    }
    // About 200 rows, scanned only when a request fails or a line is logged.
    for (size_t i = 0; i < sizeof(k_codes) / sizeof(k_codes[0]); i++) {
        if (k_codes[i].code == code) {
            return &k_codes[i];
        }
    }
    return NULL;
}

int cm_code_failinfo(uint32_t code)
{
    if (code == CM_OK) {
        return -1;
    }
    const cm_code_info *c = cm_code_find(code);
    if (c != NULL) {
        return c->failinfo;
    }
    switch (CM_CODE_CLASS(code)) {
    case CM_CLASS_PROTO:
        return CM_FAIL_BAD_DATA_FORMAT;
    case CM_CLASS_POLICY:
        return CM_FAIL_BAD_REQUEST;
    case CM_CLASS_AGAIN:
        return CM_FAIL_SYSTEM_UNAVAIL;
    default:
        return CM_FAIL_SYSTEM_FAILURE;
    }
}

const char *cm_ckr_name(unsigned long rv)
{
    for (size_t i = 0; i < sizeof(k_ckr_names) / sizeof(k_ckr_names[0]); i++) {
        if (k_ckr_names[i].rv == rv) {
            return k_ckr_names[i].name;
        }
    }
    return rv >= CM_CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "CKR_UNKNOWN";
}

// cm_code_ckr_name names the CK_RV an HSM-class code carries; cm_code_from_ckr collapses
// values above 24 bits (vendor defined) to 0xffffff.
static const char *cm_code_ckr_name(uint32_t code)
{
    const uint32_t detail = CM_CODE_DETAIL(code);
    return detail == 0xffffffu ? "CKR_VENDOR_DEFINED" : cm_ckr_name(detail);
}

static const char *cm_class_name(uint32_t code)
{
    const uint32_t cls = CM_CODE_CLASS(code);
    return cls < sizeof(k_class_names) / sizeof(k_class_names[0]) ? k_class_names[cls] : "UNKNOWN";
}

const char *cm_result_name(cm_result r)
{
    if (r.code == CM_OK) {
        return "OK";
    }
    const cm_code_info *c = cm_code_find(r.code);
    if (c != NULL) {
        return c->symbol;
    }
    const uint32_t cls = CM_CODE_CLASS(r.code);
    if (cls == CM_CLASS_HSM) {
        (void)snprintf(t_name_buf, sizeof(t_name_buf), "HSM/%s", cm_code_ckr_name(r.code));
        return t_name_buf;
    }
    if (cls == CM_CLASS_IO) {
        // strerrorname_np is glibc 2.32+; Debian 12 has 2.36.
        const char *en = strerrorname_np((int)CM_CODE_DETAIL(r.code));
        if (en != NULL) {
            (void)snprintf(t_name_buf, sizeof(t_name_buf), "IO/%s", en);
            return t_name_buf;
        }
    }
    (void)snprintf(t_name_buf, sizeof(t_name_buf), "%s/0x%06x", cm_class_name(r.code),
                   (unsigned)CM_CODE_DETAIL(r.code));
    return t_name_buf;
}

const char *cm_result_text(cm_result r)
{
    if (r.code == CM_OK) {
        return "success";
    }
    const cm_code_info *c = cm_code_find(r.code);
    if (c != NULL) {
        return c->text;
    }
    const uint32_t cls = CM_CODE_CLASS(r.code);
    if (cls == CM_CLASS_HSM) {
        (void)snprintf(t_text_buf, sizeof(t_text_buf), "the HSM failed: %s",
                       cm_code_ckr_name(r.code));
        return t_text_buf;
    }
    if (cls == CM_CLASS_IO) {
        // strerrordesc_np (glibc 2.32+) returns static text, unlike the thread-unsafe strerror.
        const char *desc = strerrordesc_np((int)CM_CODE_DETAIL(r.code));
        (void)snprintf(t_text_buf, sizeof(t_text_buf), "a system call failed: %s",
                       desc != NULL ? desc : "unknown error");
        return t_text_buf;
    }
    (void)snprintf(t_text_buf, sizeof(t_text_buf), "unexpected error %s/0x%06x",
                   cm_class_name(r.code), (unsigned)CM_CODE_DETAIL(r.code));
    return t_text_buf;
}

cm_result cm_bail_note(uint32_t code, const char *file, int line)
{
#ifndef NDEBUG
    (void)snprintf(t_bail_site, sizeof(t_bail_site), "%s:%d", file, line);
#else
    (void)file;
    (void)line;
#endif
    return cm_result_make(code);
}

const char *cm_bail_site(void)
{
#ifndef NDEBUG
    return t_bail_site;
#else
    return "";
#endif
}

void cm_check_failed(const char *what, const char *file, int line)
{
    cm_log(CM_LOG_ERROR, "invariant failed: %s at %s:%d", what, file, line);
    abort();
}

uint32_t cm_code_from_ckr(unsigned long rv)
{
    return CM_CODE(CM_CLASS_HSM, rv > 0xfffffful ? 0xffffffu : (uint32_t)rv);
}

uint32_t cm_code_from_errno(int err)
{
    return CM_CODE(CM_CLASS_IO, err > 0 ? (uint32_t)err : (uint32_t)EIO);
}

void cm_ossl_clear_errors(void)
{
    ERR_clear_error();
}

bool cm_span_eq(cm_span a, cm_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

void cm_why_set(cm_why *w, const char *fmt, ...)
{
    if (w == NULL || w->text[0] != '\0') {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(w->text, sizeof(w->text), fmt, ap);
    va_end(ap);
}

void cm_why_clear(cm_why *w)
{
    if (w != NULL) {
        w->text[0] = '\0';
    }
}

bool cm_why_is_set(const cm_why *w)
{
    return w != NULL && w->text[0] != '\0';
}

const char *cm_why_or_text(const cm_why *w, cm_result r)
{
    return cm_why_is_set(w) ? w->text : cm_result_text(r);
}
