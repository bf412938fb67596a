// Result codes: names for logging, failure-site notes, the bail-out helpers.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "engine/base/base.h"

typedef struct cm_code_name {
    uint32_t code;
    const char *name;
} cm_code_name;

static const cm_code_name k_code_names[] = {
    {CM_OK, "OK"},
    {CM_E_INVALID_ARG, "USAGE/INVALID_ARG"},
    {CM_E_STATE, "USAGE/STATE"},
    {CM_E_DER_TRUNCATED, "PROTO/DER_TRUNCATED"},
    {CM_E_DER_UNEXPECTED_TAG, "PROTO/DER_UNEXPECTED_TAG"},
    {CM_E_DER_BAD_TAG, "PROTO/DER_BAD_TAG"},
    {CM_E_DER_INDEFINITE, "PROTO/DER_INDEFINITE"},
    {CM_E_DER_LENGTH_NONMINIMAL, "PROTO/DER_LENGTH_NONMINIMAL"},
    {CM_E_DER_LENGTH_TOO_LARGE, "PROTO/DER_LENGTH_TOO_LARGE"},
    {CM_E_DER_TRAILING, "PROTO/DER_TRAILING"},
    {CM_E_DER_DEPTH, "PROTO/DER_DEPTH"},
    {CM_E_DER_INTEGER, "PROTO/DER_INTEGER"},
    {CM_E_DER_OVERFLOW, "PROTO/DER_OVERFLOW"},
    {CM_E_DER_BOOLEAN, "PROTO/DER_BOOLEAN"},
    {CM_E_DER_BITSTRING, "PROTO/DER_BITSTRING"},
    {CM_E_DER_OID, "PROTO/DER_OID"},
    {CM_E_DER_STRING, "PROTO/DER_STRING"},
    {CM_E_DER_TIME, "PROTO/DER_TIME"},
    {CM_E_DER_NULL, "PROTO/DER_NULL"},
    {CM_E_DER_TOO_MANY, "PROTO/DER_TOO_MANY"},
    {CM_E_NOMEM, "RESOURCE/NOMEM"},
    {CM_E_BUFFER_TOO_SMALL, "RESOURCE/BUFFER_TOO_SMALL"},
    {CM_E_LIMIT, "RESOURCE/LIMIT"},
    {CM_E_CRYPTO, "CRYPTO/FAILED"},
};

static const char *const k_class_names[] = {
    "OK", "USAGE", "PROTO", "POLICY", "RESOURCE", "AGAIN", "CRYPTO", "HSM", "IO",
};

static _Thread_local char t_name_buf[64];
#ifndef NDEBUG
static _Thread_local char t_bail_site[128];
#endif

const char *cm_result_name(cm_result r)
{
    for (size_t i = 0; i < sizeof(k_code_names) / sizeof(k_code_names[0]); i++) {
        if (k_code_names[i].code == r.code) {
            return k_code_names[i].name;
        }
    }
    uint32_t cls = CM_CODE_CLASS(r.code);
    const char *cls_name =
        cls < sizeof(k_class_names) / sizeof(k_class_names[0]) ? k_class_names[cls] : "UNKNOWN";
    if (cls == CM_CLASS_IO) {
        // strerrorname_np is glibc 2.32+; Debian 12 has 2.36.
        const char *en = strerrorname_np((int)CM_CODE_DETAIL(r.code));
        if (en != NULL) {
            (void)snprintf(t_name_buf, sizeof(t_name_buf), "IO/%s", en);
            return t_name_buf;
        }
    }
    (void)snprintf(t_name_buf, sizeof(t_name_buf), "%s/0x%06x", cls_name,
                   (unsigned)CM_CODE_DETAIL(r.code));
    return t_name_buf;
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
