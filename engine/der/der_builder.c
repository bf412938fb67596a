// The DER builder: schema-order appends, lengths patched on close, sticky errors.
#include "engine/der/der.h"

#include <stdlib.h>
#include <string.h>

#define DER_BUILDER_DEFAULT_CAP 256u

void der_builder_init_fixed(der_builder *b, uint8_t *buf, size_t cap)
{
    memset(b, 0, sizeof(*b));
    b->buf = buf;
    b->cap = cap;
}

void der_builder_init(der_builder *b, size_t initial_cap)
{
    memset(b, 0, sizeof(*b));
    b->heap = true;
    b->cap = initial_cap != 0 ? initial_cap : DER_BUILDER_DEFAULT_CAP;
    b->buf = malloc(b->cap);
    if (b->buf == NULL) {
        b->cap = 0;
        b->err = CM_E_NOMEM;
    }
}

void der_builder_init_arena(der_builder *b, cm_arena *arena, size_t initial_cap)
{
    memset(b, 0, sizeof(*b));
    b->arena = arena;
    b->cap = initial_cap != 0 ? initial_cap : DER_BUILDER_DEFAULT_CAP;
    b->buf = cm_arena_alloc(arena, b->cap);
    if (b->buf == NULL) {
        b->cap = 0;
        b->err = CM_E_NOMEM;
    }
}

void der_builder_cleanup(der_builder *b)
{
    if (b->heap) {
        free(b->buf);
    }
    b->buf = NULL;
    b->len = 0;
    b->cap = 0;
}

void der_builder_fail(der_builder *b, uint32_t code)
{
    if (b->err == CM_OK) {
        b->err = code;
    }
}

bool der_builder_ok(const der_builder *b)
{
    return b->err == CM_OK;
}

cm_result der_builder_finish(der_builder *b, cm_span *out)
{
    if (b->err == CM_OK && b->depth != 0) {
        b->err = CM_E_STATE; // an element was opened and never closed
    }
    CM_ENSURE(b->err == CM_OK, b->err);
    *out = cm_span_make(b->buf, b->len);
    return cm_result_make(CM_OK);
}

cm_result der_builder_take(der_builder *b, uint8_t **out_buf, size_t *out_len)
{
    CM_ENSURE(b->heap, CM_E_INVALID_ARG);
    cm_span s;
    CM_TRY(der_builder_finish(b, &s));
    *out_buf = b->buf;
    *out_len = b->len;
    b->buf = NULL;
    b->len = 0;
    b->cap = 0;
    return cm_result_make(CM_OK);
}

// der_grow makes room for |need| more bytes; false (and the builder poisoned) if it can't.
static bool der_grow(der_builder *b, size_t need)
{
    if (b->err != CM_OK) {
        return false;
    }
    if (b->cap - b->len >= need) {
        return true;
    }
    if (!b->heap && b->arena == NULL) {
        b->err = CM_E_BUFFER_TOO_SMALL;
        return false;
    }
    if (need > SIZE_MAX / 2 - b->len) {
        b->err = CM_E_NOMEM;
        return false;
    }
    size_t cap = b->cap * 2;
    if (cap < b->len + need) {
        cap = b->len + need;
    }
    uint8_t *nb;
    if (b->heap) {
        nb = realloc(b->buf, cap);
    } else {
        nb = cm_arena_alloc(b->arena, cap);
        if (nb != NULL && b->len != 0) {
            memcpy(nb, b->buf, b->len);
        }
    }
    if (nb == NULL) {
        b->err = CM_E_NOMEM;
        return false;
    }
    b->buf = nb;
    b->cap = cap;
    return true;
}

uint8_t *der_reserve(der_builder *b, size_t len)
{
    if (!der_grow(b, len)) {
        return NULL;
    }
    uint8_t *p = b->buf + b->len;
    b->len += len;
    return p;
}

void der_put_raw(der_builder *b, cm_span bytes)
{
    uint8_t *p = der_reserve(b, bytes.len);
    if (p != NULL && bytes.len != 0) {
        memcpy(p, bytes.p, bytes.len);
    }
}

static void der_put_tag(der_builder *b, uint32_t tag)
{
    const uint8_t first = (uint8_t)((tag >> DER_TAG_SHIFT) & 0xe0u);
    const uint32_t number = tag & DER_TAG_NUMBER_MASK;
    if (number < 0x1fu) {
        uint8_t *p = der_reserve(b, 1);
        if (p != NULL) {
            p[0] = (uint8_t)(first | number);
        }
        return;
    }
    uint8_t tmp[6];
    size_t n = 0;
    uint32_t v = number;
    do {
        tmp[n++] = (uint8_t)(v & 0x7fu);
        v >>= 7;
    } while (v != 0);
    uint8_t *p = der_reserve(b, n + 1);
    if (p == NULL) {
        return;
    }
    p[0] = (uint8_t)(first | 0x1fu);
    for (size_t i = 0; i < n; i++) {
        p[1 + i] = (uint8_t)(tmp[n - 1 - i] | (i + 1 < n ? 0x80u : 0));
    }
}

static uint8_t der_len_octets(size_t len)
{
    if (len < 0x80u) {
        return 1;
    }
    uint8_t n = 1;
    for (size_t v = len; v != 0; v >>= 8) {
        n++;
    }
    return n;
}

static void der_write_len(uint8_t *p, size_t len, uint8_t octets)
{
    if (octets == 1) {
        p[0] = (uint8_t)len;
        return;
    }
    p[0] = (uint8_t)(0x80u | (uint8_t)(octets - 1));
    for (uint8_t i = 1; i < octets; i++) {
        p[i] = (uint8_t)(len >> (8u * (unsigned)(octets - 1 - i)));
    }
}

void der_put_header(der_builder *b, uint32_t tag, size_t content_len)
{
    if (content_len > 0xffffffffu) {
        der_builder_fail(b, CM_E_LIMIT);
        return;
    }
    der_put_tag(b, tag);
    const uint8_t n = der_len_octets(content_len);
    uint8_t *p = der_reserve(b, n);
    if (p != NULL) {
        der_write_len(p, content_len, n);
    }
}

void der_put_tlv(der_builder *b, uint32_t tag, cm_span body)
{
    der_put_header(b, tag, body.len);
    der_put_raw(b, body);
}

void der_open_hint(der_builder *b, der_mark *out_mark, uint32_t tag, uint8_t len_octets)
{
    if (len_octets < 1 || len_octets > 5) {
        len_octets = 1;
    }
    out_mark->header_pos = b->len;
    der_put_tag(b, tag);
    (void)der_reserve(b, len_octets);
    out_mark->content_pos = b->len;
    out_mark->reserved = len_octets;
    b->depth++;
    out_mark->depth = b->depth;
}

void der_open(der_builder *b, der_mark *out_mark, uint32_t tag)
{
    der_open_hint(b, out_mark, tag, 1);
}

void der_close(der_builder *b, const der_mark *mark)
{
    if (b->err != CM_OK) {
        return;
    }
    if (mark->depth != b->depth || mark->content_pos > b->len) {
        b->err = CM_E_STATE;
        return;
    }
    const size_t content_len = b->len - mark->content_pos;
    if (content_len > 0xffffffffu) {
        b->err = CM_E_LIMIT;
        return;
    }
    const uint8_t need = der_len_octets(content_len);
    size_t len_pos = mark->content_pos - mark->reserved;
    if (need > mark->reserved) {
        const size_t extra = (size_t)(need - mark->reserved);
        if (!der_grow(b, extra)) {
            return;
        }
        memmove(b->buf + mark->content_pos + extra, b->buf + mark->content_pos, content_len);
        b->len += extra;
    } else if (need < mark->reserved) {
        const size_t less = (size_t)(mark->reserved - need);
        memmove(b->buf + mark->content_pos - less, b->buf + mark->content_pos, content_len);
        b->len -= less;
    }
    der_write_len(b->buf + len_pos, content_len, need);
    b->depth--;
}

void der_put_bool(der_builder *b, bool v)
{
    const uint8_t c = v ? 0xffu : 0x00u;
    der_put_tlv(b, DER_TAG_BOOLEAN, cm_span_make(&c, 1));
}

void der_put_null(der_builder *b)
{
    der_put_header(b, DER_TAG_NULL, 0);
}

// der_i64_content writes the minimal two's complement octets of |v| into |out| (9 bytes).
static size_t der_i64_content(int64_t v, uint8_t out[9])
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    uint8_t tmp[8];
    for (int i = 7; i >= 0; i--) {
        tmp[i] = (uint8_t)u;
        u >>= 8;
    }
    size_t start = 0;
    while (start < 7 && ((tmp[start] == 0x00u && (tmp[start + 1] & 0x80u) == 0) ||
                         (tmp[start] == 0xffu && (tmp[start + 1] & 0x80u) != 0))) {
        start++;
    }
    memcpy(out, tmp + start, 8 - start);
    return 8 - start;
}

void der_put_i64_tagged(der_builder *b, uint32_t tag, int64_t v)
{
    uint8_t c[9];
    const size_t n = der_i64_content(v, c);
    der_put_tlv(b, tag, cm_span_make(c, n));
}

void der_put_i64(der_builder *b, int64_t v)
{
    der_put_i64_tagged(b, DER_TAG_INTEGER, v);
}

void der_put_u64(der_builder *b, uint64_t v)
{
    uint8_t mag[8];
    for (int i = 7; i >= 0; i--) {
        mag[i] = (uint8_t)v;
        v >>= 8;
    }
    der_put_uint_bytes(b, cm_span_make(mag, sizeof(mag)));
}

void der_put_enum(der_builder *b, uint32_t v)
{
    der_put_i64_tagged(b, DER_TAG_ENUMERATED, (int64_t)v);
}

void der_put_uint_bytes(der_builder *b, cm_span mag)
{
    size_t start = 0;
    while (start + 1 < mag.len && mag.p[start] == 0) {
        start++;
    }
    if (mag.len == 0) {
        const uint8_t zero = 0;
        der_put_tlv(b, DER_TAG_INTEGER, cm_span_make(&zero, 1));
        return;
    }
    const bool pad = (mag.p[start] & 0x80u) != 0;
    const size_t n = mag.len - start;
    der_put_header(b, DER_TAG_INTEGER, n + (pad ? 1 : 0));
    if (pad) {
        uint8_t *p = der_reserve(b, 1);
        if (p != NULL) {
            p[0] = 0;
        }
    }
    der_put_raw(b, cm_span_make(mag.p + start, n));
}

void der_put_int_span(der_builder *b, cm_span body)
{
    if (!cm_ok(der_parse_int(body))) {
        der_builder_fail(b, CM_E_DER_INTEGER);
        return;
    }
    der_put_tlv(b, DER_TAG_INTEGER, body);
}

void der_put_octets(der_builder *b, cm_span v)
{
    der_put_tlv(b, DER_TAG_OCTET_STRING, v);
}

void der_put_bitstring(der_builder *b, cm_span bytes, uint8_t unused)
{
    if (unused > 7 || (bytes.len == 0 && unused != 0) ||
        (unused != 0 && (bytes.p[bytes.len - 1] & ((1u << unused) - 1u)) != 0)) {
        der_builder_fail(b, CM_E_DER_BITSTRING);
        return;
    }
    der_put_header(b, DER_TAG_BIT_STRING, bytes.len + 1);
    uint8_t *p = der_reserve(b, 1);
    if (p != NULL) {
        p[0] = unused;
    }
    der_put_raw(b, bytes);
}

void der_put_bitstring_flags(der_builder *b, uint32_t flags)
{
    uint8_t bytes[4] = {0};
    int highest = -1;
    for (int i = 0; i < 32; i++) {
        if ((flags & (1u << i)) != 0) {
            bytes[i / 8] |= (uint8_t)(0x80u >> (i % 8));
            highest = i;
        }
    }
    const size_t n = highest < 0 ? 0 : (size_t)(highest / 8 + 1);
    const uint8_t unused = (uint8_t)(highest < 0 ? 0 : 7 - highest % 8);
    der_put_bitstring(b, cm_span_make(bytes, n), unused);
}

void der_put_oid(der_builder *b, cm_span oid)
{
    if (!cm_ok(der_parse_oid(oid))) {
        der_builder_fail(b, CM_E_DER_OID);
        return;
    }
    der_put_tlv(b, DER_TAG_OID, oid);
}

void der_put_string(der_builder *b, uint32_t tag, cm_span s)
{
    if (!cm_ok(der_parse_string(tag, s))) {
        der_builder_fail(b, CM_E_DER_STRING);
        return;
    }
    der_put_tlv(b, tag, s);
}

static void der_put_2(uint8_t *p, int v)
{
    p[0] = (uint8_t)('0' + v / 10);
    p[1] = (uint8_t)('0' + v % 10);
}

static void der_put_time_tag(der_builder *b, uint32_t tag, int64_t t)
{
    int y, mo, d, h, mi, s;
    cm_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
    uint8_t buf[15];
    size_t n;
    if (tag == DER_TAG_UTC_TIME) {
        if (y < 1950 || y > 2049) {
            der_builder_fail(b, CM_E_DER_TIME);
            return;
        }
        der_put_2(buf, y % 100);
        n = 2;
    } else {
        if (y < 0 || y > 9999) {
            der_builder_fail(b, CM_E_DER_TIME);
            return;
        }
        der_put_2(buf, y / 100);
        der_put_2(buf + 2, y % 100);
        n = 4;
    }
    der_put_2(buf + n, mo);
    der_put_2(buf + n + 2, d);
    der_put_2(buf + n + 4, h);
    der_put_2(buf + n + 6, mi);
    der_put_2(buf + n + 8, s);
    buf[n + 10] = 'Z';
    der_put_tlv(b, tag, cm_span_make(buf, n + 11));
}

void der_put_utctime(der_builder *b, int64_t t)
{
    der_put_time_tag(b, DER_TAG_UTC_TIME, t);
}

void der_put_gentime(der_builder *b, int64_t t)
{
    der_put_time_tag(b, DER_TAG_GENERALIZED_TIME, t);
}

void der_put_time(der_builder *b, int64_t t)
{
    // 2050-01-01T00:00:00Z and 1950-01-01T00:00:00Z.
    if (t >= -631152000 && t < 2524608000) {
        der_put_utctime(b, t);
    } else {
        der_put_gentime(b, t);
    }
}
