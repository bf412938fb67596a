// The strict DER reader (X.690 §8 and §10, BER features rejected).
#include "engine/der/der.h"

#include <stdio.h>
#include <string.h>

void der_reader_init(der_reader *r, cm_span in)
{
    r->p = in.p;
    r->len = in.len;
    r->depth = 0;
}

cm_span der_reader_rest(const der_reader *r)
{
    return cm_span_make(r->p, r->len);
}

bool der_reader_empty(const der_reader *r)
{
    return r->len == 0;
}

cm_result der_expect_end(const der_reader *r)
{
    CM_ENSURE(r->len == 0, CM_E_DER_TRAILING);
    return cm_result_make(CM_OK);
}

// der_parse_header decodes the identifier and length octets at the start of |in|.
// X.690 §8.1.2 (identifier), §8.1.3 and §10.1 (definite, minimal length).
static cm_result der_parse_header(cm_span in, uint32_t *out_tag, size_t *out_header_len,
                                  size_t *out_body_len)
{
    CM_ENSURE(in.len >= 1, CM_E_DER_TRUNCATED);
    const uint8_t first = in.p[0];
    size_t pos = 1;
    uint32_t number = first & 0x1fu;
    if (number == 0x1fu) {
        // High-tag-number form: base-128, no leading 0x80, at most 29 bits, and only for
        // numbers that do not fit the low form.
        number = 0;
        for (;;) {
            CM_ENSURE(pos < in.len, CM_E_DER_TRUNCATED);
            const uint8_t c = in.p[pos++];
            CM_ENSURE(!(number == 0 && c == 0x80u), CM_E_DER_BAD_TAG);
            CM_ENSURE(number <= (DER_TAG_NUMBER_MASK >> 7), CM_E_DER_BAD_TAG);
            number = (number << 7) | (c & 0x7fu);
            if ((c & 0x80u) == 0) {
                break;
            }
        }
        CM_ENSURE(number >= 0x1fu, CM_E_DER_BAD_TAG);
    }
    const uint32_t cls_cons = (uint32_t)(first & 0xe0u) << DER_TAG_SHIFT;
    // Universal tag 0 is end-of-contents, which only BER's indefinite form uses.
    CM_ENSURE(!((cls_cons & DER_CLASS_MASK) == DER_CLASS_UNIVERSAL && number == 0),
              CM_E_DER_BAD_TAG);

    CM_ENSURE(pos < in.len, CM_E_DER_TRUNCATED);
    const uint8_t l0 = in.p[pos++];
    size_t body_len;
    if (l0 < 0x80u) {
        body_len = l0;
    } else {
        CM_ENSURE(l0 != 0x80u, CM_E_DER_INDEFINITE);
        const size_t n = l0 & 0x7fu;
        CM_ENSURE(n <= 4, CM_E_DER_LENGTH_TOO_LARGE);
        CM_ENSURE(in.len - pos >= n, CM_E_DER_TRUNCATED);
        CM_ENSURE(in.p[pos] != 0, CM_E_DER_LENGTH_NONMINIMAL);
        uint32_t v = 0;
        for (size_t i = 0; i < n; i++) {
            v = (v << 8) | in.p[pos + i];
        }
        pos += n;
        CM_ENSURE(v >= 0x80u, CM_E_DER_LENGTH_NONMINIMAL);
        body_len = v;
    }
    CM_ENSURE(in.len - pos >= body_len, CM_E_DER_TRUNCATED);
    *out_tag = cls_cons | number;
    *out_header_len = pos;
    *out_body_len = body_len;
    return cm_result_make(CM_OK);
}

cm_result der_peek_tag(const der_reader *r, uint32_t *out_tag)
{
    size_t hl, bl;
    return der_parse_header(der_reader_rest(r), out_tag, &hl, &bl);
}

bool der_peek_is(const der_reader *r, uint32_t tag)
{
    uint32_t t;
    return cm_ok(der_peek_tag(r, &t)) && t == tag;
}

cm_result der_get_any(der_reader *r, uint32_t *out_tag, cm_span *out_body, cm_span *out_whole)
{
    uint32_t tag;
    size_t hl, bl;
    CM_TRY(der_parse_header(der_reader_rest(r), &tag, &hl, &bl));
    if (out_tag != NULL) {
        *out_tag = tag;
    }
    if (out_body != NULL) {
        *out_body = cm_span_make(r->p + hl, bl);
    }
    if (out_whole != NULL) {
        *out_whole = cm_span_make(r->p, hl + bl);
    }
    r->p += hl + bl;
    r->len -= hl + bl;
    return cm_result_make(CM_OK);
}

cm_result der_get_element(der_reader *r, uint32_t tag, cm_span *out_whole)
{
    uint32_t t;
    size_t hl, bl;
    CM_TRY(der_parse_header(der_reader_rest(r), &t, &hl, &bl));
    CM_ENSURE(t == tag, CM_E_DER_UNEXPECTED_TAG);
    *out_whole = cm_span_make(r->p, hl + bl);
    r->p += hl + bl;
    r->len -= hl + bl;
    return cm_result_make(CM_OK);
}

cm_result der_get_tlv(der_reader *r, uint32_t tag, cm_span *out_body)
{
    uint32_t t;
    size_t hl, bl;
    CM_TRY(der_parse_header(der_reader_rest(r), &t, &hl, &bl));
    CM_ENSURE(t == tag, CM_E_DER_UNEXPECTED_TAG);
    *out_body = cm_span_make(r->p + hl, bl);
    r->p += hl + bl;
    r->len -= hl + bl;
    return cm_result_make(CM_OK);
}

cm_result der_get_optional(der_reader *r, uint32_t tag, cm_span *out_body, bool *out_present)
{
    *out_present = false;
    if (r->len == 0) {
        return cm_result_make(CM_OK);
    }
    uint32_t t;
    CM_TRY(der_peek_tag(r, &t));
    if (t != tag) {
        return cm_result_make(CM_OK);
    }
    cm_span body;
    CM_TRY(der_get_tlv(r, tag, &body));
    if (out_body != NULL) {
        *out_body = body;
    }
    *out_present = true;
    return cm_result_make(CM_OK);
}

cm_result der_enter(der_reader *r, uint32_t tag, der_reader *out_child)
{
    CM_ENSURE((tag & DER_CONSTRUCTED) != 0, CM_E_INVALID_ARG);
    CM_ENSURE(r->depth < CM_DER_MAX_DEPTH, CM_E_DER_DEPTH);
    cm_span body;
    CM_TRY(der_get_tlv(r, tag, &body));
    out_child->p = body.p;
    out_child->len = body.len;
    out_child->depth = r->depth + 1;
    return cm_result_make(CM_OK);
}

cm_result der_enter_optional(der_reader *r, uint32_t tag, der_reader *out_child, bool *out_present)
{
    *out_present = false;
    out_child->p = r->p;
    out_child->len = 0;
    out_child->depth = r->depth + 1;
    if (r->len == 0 || !der_peek_is(r, tag)) {
        // A malformed next element is reported by whoever reads it next.
        return cm_result_make(CM_OK);
    }
    CM_TRY(der_enter(r, tag, out_child));
    *out_present = true;
    return cm_result_make(CM_OK);
}

// --- primitive contents ------------------------------------------------------------------

cm_result der_parse_bool(cm_span body, bool *out)
{
    // X.690 §11.1: DER TRUE is 0xFF.
    CM_ENSURE(body.len == 1 && (body.p[0] == 0x00u || body.p[0] == 0xffu), CM_E_DER_BOOLEAN);
    *out = body.p[0] == 0xffu;
    return cm_result_make(CM_OK);
}

cm_result der_parse_int(cm_span body)
{
    // X.690 §8.3.2: the first nine bits are not all zero nor all one.
    CM_ENSURE(body.len >= 1, CM_E_DER_INTEGER);
    if (body.len >= 2) {
        CM_ENSURE(!(body.p[0] == 0x00u && (body.p[1] & 0x80u) == 0), CM_E_DER_INTEGER);
        CM_ENSURE(!(body.p[0] == 0xffu && (body.p[1] & 0x80u) != 0), CM_E_DER_INTEGER);
    }
    return cm_result_make(CM_OK);
}

cm_result der_parse_u64(cm_span body, uint64_t *out)
{
    CM_TRY(der_parse_int(body));
    CM_ENSURE((body.p[0] & 0x80u) == 0, CM_E_DER_OVERFLOW);
    size_t start = 0;
    if (body.p[0] == 0 && body.len > 1) {
        start = 1; // the sign octet of a value with its top bit set
    }
    CM_ENSURE(body.len - start <= 8, CM_E_DER_OVERFLOW);
    uint64_t v = 0;
    for (size_t i = start; i < body.len; i++) {
        v = (v << 8) | body.p[i];
    }
    *out = v;
    return cm_result_make(CM_OK);
}

static cm_result der_parse_i64(cm_span body, int64_t *out)
{
    CM_TRY(der_parse_int(body));
    CM_ENSURE(body.len <= 8, CM_E_DER_OVERFLOW);
    uint64_t v = (body.p[0] & 0x80u) != 0 ? UINT64_MAX : 0;
    for (size_t i = 0; i < body.len; i++) {
        v = (v << 8) | body.p[i];
    }
    // Two's complement reinterpretation, defined behaviour via memcpy.
    int64_t s;
    memcpy(&s, &v, sizeof(s));
    *out = s;
    return cm_result_make(CM_OK);
}

cm_result der_parse_bitstring(cm_span body, cm_span *out_bytes, uint8_t *out_unused)
{
    // X.690 §8.6.2 and §11.2.1: unused bits 0..7, zero when empty, padding bits zero.
    CM_ENSURE(body.len >= 1, CM_E_DER_BITSTRING);
    const uint8_t unused = body.p[0];
    CM_ENSURE(unused <= 7, CM_E_DER_BITSTRING);
    CM_ENSURE(!(body.len == 1 && unused != 0), CM_E_DER_BITSTRING);
    if (unused != 0) {
        const uint8_t mask = (uint8_t)((1u << unused) - 1u);
        CM_ENSURE((body.p[body.len - 1] & mask) == 0, CM_E_DER_BITSTRING);
    }
    *out_bytes = cm_span_make(body.p + 1, body.len - 1);
    *out_unused = unused;
    return cm_result_make(CM_OK);
}

cm_result der_parse_oid(cm_span body)
{
    // X.690 §8.19: each subidentifier is base-128 with no leading 0x80 octet.
    CM_ENSURE(body.len >= 1, CM_E_DER_OID);
    CM_ENSURE((body.p[body.len - 1] & 0x80u) == 0, CM_E_DER_OID);
    bool at_start = true;
    for (size_t i = 0; i < body.len; i++) {
        CM_ENSURE(!(at_start && body.p[i] == 0x80u), CM_E_DER_OID);
        at_start = (body.p[i] & 0x80u) == 0;
    }
    return cm_result_make(CM_OK);
}

static bool der_printable_char(uint8_t c)
{
    // X.680 §41.4 Table 10.
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return strchr(" '()+,-./:=?", c) != NULL && c != 0;
}

static bool der_utf8_valid(cm_span s)
{
    // RFC 3629 §4: no overlong forms, no surrogates, nothing above U+10FFFF.
    size_t i = 0;
    while (i < s.len) {
        const uint8_t c = s.p[i];
        uint32_t cp;
        size_t n;
        if (c < 0x80u) {
            i++;
            continue;
        } else if (c >= 0xc2u && c <= 0xdfu) {
            n = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0u && c <= 0xefu) {
            n = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0u && c <= 0xf4u) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (s.len - i - 1 < n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            const uint8_t cc = s.p[i + k];
            if ((cc & 0xc0u) != 0x80u) {
                return false;
            }
            cp = (cp << 6) | (cc & 0x3fu);
        }
        if ((n == 2 && cp < 0x800u) || (n == 3 && cp < 0x10000u) || cp > 0x10ffffu ||
            (cp >= 0xd800u && cp <= 0xdfffu)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

cm_result der_parse_string(uint32_t tag, cm_span body)
{
    switch (tag) {
    case DER_TAG_UTF8_STRING:
        CM_ENSURE(der_utf8_valid(body), CM_E_DER_STRING);
        break;
    case DER_TAG_PRINTABLE_STRING:
        for (size_t i = 0; i < body.len; i++) {
            CM_ENSURE(der_printable_char(body.p[i]), CM_E_DER_STRING);
        }
        break;
    case DER_TAG_IA5_STRING:
        for (size_t i = 0; i < body.len; i++) {
            CM_ENSURE(body.p[i] < 0x80u, CM_E_DER_STRING);
        }
        break;
    case DER_TAG_VISIBLE_STRING:
        for (size_t i = 0; i < body.len; i++) {
            CM_ENSURE(body.p[i] >= 0x20u && body.p[i] <= 0x7eu, CM_E_DER_STRING);
        }
        break;
    case DER_TAG_BMP_STRING:
        CM_ENSURE(body.len % 2 == 0, CM_E_DER_STRING);
        break;
    case DER_TAG_UNIVERSAL_STRING:
        CM_ENSURE(body.len % 4 == 0, CM_E_DER_STRING);
        break;
    default:
        break;
    }
    return cm_result_make(CM_OK);
}

static bool der_digits(const uint8_t *p, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

static bool der_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

cm_result der_parse_time(uint32_t tag, cm_span body, int64_t *out)
{
    int year, mon, day, hour, min, sec;
    const uint8_t *p = body.p;
    if (tag == DER_TAG_UTC_TIME) {
        // X.690 §11.8 and RFC 5280 §4.1.2.5.1: YYMMDDHHMMSSZ.
        CM_ENSURE(body.len == 13 && p[12] == 'Z', CM_E_DER_TIME);
        CM_ENSURE(der_digits(p, 2, &year), CM_E_DER_TIME);
        year += year >= 50 ? 1900 : 2000;
        p += 2;
    } else if (tag == DER_TAG_GENERALIZED_TIME) {
        // X.690 §11.7 and RFC 5280 §4.1.2.5.2: YYYYMMDDHHMMSSZ, no fractions.
        CM_ENSURE(body.len == 15 && p[14] == 'Z', CM_E_DER_TIME);
        CM_ENSURE(der_digits(p, 4, &year), CM_E_DER_TIME);
        p += 4;
    } else {
        CM_BAIL(CM_E_DER_UNEXPECTED_TAG);
    }
    CM_ENSURE(der_digits(p, 2, &mon) && der_digits(p + 2, 2, &day) && der_digits(p + 4, 2, &hour) &&
                  der_digits(p + 6, 2, &min) && der_digits(p + 8, 2, &sec),
              CM_E_DER_TIME);
    static const int k_mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    CM_ENSURE(mon >= 1 && mon <= 12, CM_E_DER_TIME);
    const int mdays = k_mdays[mon - 1] + (mon == 2 && der_leap(year) ? 1 : 0);
    CM_ENSURE(day >= 1 && day <= mdays && hour <= 23 && min <= 59 && sec <= 59, CM_E_DER_TIME);
    *out = cm_time_from_civil(year, mon, day, hour, min, sec);
    return cm_result_make(CM_OK);
}

// --- typed getters -----------------------------------------------------------------------
//
// Each reads into a copy of the reader and commits only on success, so a failed call leaves
// the reader unchanged.

cm_result der_get_bool(der_reader *r, bool *out)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_BOOLEAN, &body));
    CM_TRY(der_parse_bool(body, out));
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_int_span(der_reader *r, cm_span *out_body)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_INTEGER, &body));
    CM_TRY(der_parse_int(body));
    *out_body = body;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_u64(der_reader *r, uint64_t *out)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_INTEGER, &body));
    CM_TRY(der_parse_u64(body, out));
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_i64(der_reader *r, int64_t *out)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_INTEGER, &body));
    CM_TRY(der_parse_i64(body, out));
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_enum(der_reader *r, uint32_t *out)
{
    der_reader t = *r;
    cm_span body;
    uint64_t v;
    CM_TRY(der_get_tlv(&t, DER_TAG_ENUMERATED, &body));
    CM_TRY(der_parse_u64(body, &v));
    CM_ENSURE(v <= INT32_MAX, CM_E_DER_OVERFLOW);
    *out = (uint32_t)v;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_null(der_reader *r)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_NULL, &body));
    CM_ENSURE(body.len == 0, CM_E_DER_NULL);
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_octets(der_reader *r, cm_span *out)
{
    return der_get_tlv(r, DER_TAG_OCTET_STRING, out);
}

cm_result der_get_bitstring(der_reader *r, cm_span *out_bytes, uint8_t *out_unused)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_BIT_STRING, &body));
    CM_TRY(der_parse_bitstring(body, out_bytes, out_unused));
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_bitstring_flags(der_reader *r, uint32_t *out)
{
    der_reader t = *r;
    cm_span bytes;
    uint8_t unused;
    CM_TRY(der_get_bitstring(&t, &bytes, &unused));
    if (bytes.len > 0) {
        // X.690 §11.2.2: a named bit list has no trailing zero bits.
        CM_ENSURE((bytes.p[bytes.len - 1] & (1u << unused)) != 0, CM_E_DER_BITSTRING);
    }
    CM_ENSURE(bytes.len <= 4, CM_E_DER_OVERFLOW);
    uint32_t v = 0;
    for (size_t i = 0; i < bytes.len; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            if ((bytes.p[i] & (0x80u >> bit)) != 0) {
                v |= 1u << (i * 8 + bit);
            }
        }
    }
    *out = v;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_oid(der_reader *r, cm_span *out)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, DER_TAG_OID, &body));
    CM_TRY(der_parse_oid(body));
    *out = body;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_string(der_reader *r, uint32_t tag, cm_span *out)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, tag, &body));
    CM_TRY(der_parse_string(tag, body));
    *out = body;
    *r = t;
    return cm_result_make(CM_OK);
}

static cm_result der_get_time_tag(der_reader *r, uint32_t tag, int64_t *out)
{
    der_reader t = *r;
    cm_span body;
    CM_TRY(der_get_tlv(&t, tag, &body));
    CM_TRY(der_parse_time(tag, body, out));
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result der_get_utctime(der_reader *r, int64_t *out)
{
    return der_get_time_tag(r, DER_TAG_UTC_TIME, out);
}

cm_result der_get_gentime(der_reader *r, int64_t *out)
{
    return der_get_time_tag(r, DER_TAG_GENERALIZED_TIME, out);
}

cm_result der_get_time(der_reader *r, int64_t *out)
{
    if (der_peek_is(r, DER_TAG_UTC_TIME)) {
        return der_get_utctime(r, out);
    }
    return der_get_gentime(r, out);
}

void der_oid_to_text(cm_span oid, char *buf, size_t cap)
{
    if (cap == 0) {
        return;
    }
    buf[0] = '\0';
    if (!cm_ok(der_parse_oid(oid))) {
        (void)snprintf(buf, cap, "?");
        return;
    }
    size_t used = 0;
    uint64_t v = 0;
    bool first = true;
    for (size_t i = 0; i < oid.len; i++) {
        if (v > (UINT64_MAX >> 7)) {
            (void)snprintf(buf, cap, "?");
            return;
        }
        v = (v << 7) | (oid.p[i] & 0x7fu);
        if ((oid.p[i] & 0x80u) != 0) {
            continue;
        }
        int n;
        if (first) {
            // X.690 §8.19.4: the first subidentifier packs two arcs.
            const uint64_t a = v < 40 ? 0 : (v < 80 ? 1 : 2);
            n = snprintf(buf + used, cap - used, "%llu.%llu", (unsigned long long)a,
                         (unsigned long long)(v - a * 40));
            first = false;
        } else {
            n = snprintf(buf + used, cap - used, ".%llu", (unsigned long long)v);
        }
        if (n < 0 || (size_t)n >= cap - used) {
            return; // truncated, still NUL-terminated
        }
        used += (size_t)n;
        v = 0;
    }
}
