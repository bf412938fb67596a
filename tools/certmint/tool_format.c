// Serial numbers, times, CRLReason and status names, JSON strings.
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tools/certmint/tool.h"

void tool_time_text(char *out, size_t cap, int64_t t)
{
    if (t == 0) {
        (void)snprintf(out, cap, "-");
        return;
    }
    int y, mo, d, h, mi, s;
    cm_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
    (void)snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, s);
}

bool tool_serial_parse(const char *text, uint8_t out[TOOL_SERIAL_MAX], size_t *out_len)
{
    const char *p = text;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
    }
    uint8_t nib[2 * TOOL_SERIAL_MAX];
    size_t n = 0, digits = 0;
    for (; *p != '\0'; p++) {
        const char c = *p;
        int v;
        if (c >= '0' && c <= '9') {
            v = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v = c - 'A' + 10;
        } else if (c == ':' || c == ' ') {
            continue;
        } else {
            return false;
        }
        digits++;
        if (n == 0 && v == 0) {
            continue; // leading zeros are not part of the value
        }
        if (n == sizeof(nib)) {
            return false;
        }
        nib[n++] = (uint8_t)v;
    }
    if (digits == 0) {
        return false;
    }
    if (n == 0) {
        out[0] = 0; // the value 0
        *out_len = 1;
        return true;
    }
    if ((n + 1) / 2 > TOOL_SERIAL_MAX - 1) {
        return false;
    }
    // The magnitude, then a 00 sign octet in front when its top bit is set.
    uint8_t mag[TOOL_SERIAL_MAX];
    size_t k = 0, i = 0;
    if (n % 2 == 1) {
        mag[k++] = nib[i++];
    }
    for (; i < n; i += 2) {
        mag[k++] = (uint8_t)(nib[i] << 4 | nib[i + 1]);
    }
    size_t o = 0;
    if (mag[0] & 0x80) {
        out[o++] = 0;
    }
    memcpy(out + o, mag, k);
    *out_len = o + k;
    return true;
}

void tool_serial_text(char *out, size_t cap, cm_span serial)
{
    size_t i = 0;
    while (serial.len - i > 1 && serial.p[i] == 0) {
        i++;
    }
    size_t o = 0;
    for (; i < serial.len && o + 3 <= cap; i++) {
        (void)snprintf(out + o, cap - o, "%02X", serial.p[i]);
        o += 2;
    }
    out[o < cap ? o : cap - 1] = '\0';
}

static const char *const k_tool_reasons[] = {
    [STORE_REASON_UNSPECIFIED] = "unspecified",
    [STORE_REASON_KEY_COMPROMISE] = "keyCompromise",
    [STORE_REASON_CA_COMPROMISE] = "cACompromise",
    [STORE_REASON_AFFILIATION_CHANGED] = "affiliationChanged",
    [STORE_REASON_SUPERSEDED] = "superseded",
    [STORE_REASON_CESSATION_OF_OPERATION] = "cessationOfOperation",
    [STORE_REASON_CERTIFICATE_HOLD] = "certificateHold",
    [STORE_REASON_REMOVE_FROM_CRL] = "removeFromCRL",
    [STORE_REASON_PRIVILEGE_WITHDRAWN] = "privilegeWithdrawn",
    [STORE_REASON_AA_COMPROMISE] = "aACompromise",
};
#define TOOL_NUM_REASONS (sizeof(k_tool_reasons) / sizeof(k_tool_reasons[0]))

const char *tool_reason_name(int reason)
{
    if (reason < 0 || (size_t)reason >= TOOL_NUM_REASONS || k_tool_reasons[reason] == NULL) {
        return "-";
    }
    return k_tool_reasons[reason];
}

int tool_reason_parse(const char *name)
{
    for (size_t i = 0; i < TOOL_NUM_REASONS; i++) {
        if (k_tool_reasons[i] != NULL && strcasecmp(k_tool_reasons[i], name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

void tool_reasons_print(FILE *f)
{
    for (size_t i = 0; i < TOOL_NUM_REASONS; i++) {
        if (k_tool_reasons[i] != NULL) {
            fprintf(f, " %s", k_tool_reasons[i]);
        }
    }
}

const char *tool_status_name(store_cert_status s)
{
    switch (s) {
    case STORE_CERT_UNCONFIRMED:
        return "unconfirmed";
    case STORE_CERT_VALID:
        return "valid";
    case STORE_CERT_REVOKED:
        return "revoked";
    case STORE_CERT_HOLD:
        return "hold";
    default:
        return "?";
    }
}

void tool_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(f, "\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}
