// engine/front: the CoAP codec — messages (RFC 7252 §3), Block1/Block2 values and the
// reassembly of a block-wise request body (RFC 7959). Pure: bytes in, state out.
#include <stdlib.h>
#include <string.h>

#include "engine/front/front_coap_internal.h"

// front_coap_ext reads an option delta or length nibble |n| with its extension bytes
// (RFC 7252 §3.1: 13 takes one more byte, +13; 14 two more, +269; 15 is reserved).
static bool front_coap_ext(const uint8_t **p, const uint8_t *end, uint32_t n, uint32_t *out)
{
    if (n < 13) {
        *out = n;
        return true;
    }
    if (n == 13) {
        if (end - *p < 1) {
            return false;
        }
        *out = 13u + (*p)[0];
        *p += 1;
        return true;
    }
    if (n == 14) {
        if (end - *p < 2) {
            return false;
        }
        *out = 269u + ((uint32_t)(*p)[0] << 8 | (*p)[1]);
        *p += 2;
        return true;
    }
    return false; // 15 outside the payload marker is a format error
}

//   0                   1                   2                   3
//   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |Ver| T |  TKL  |      Code     |          Message ID           |
//  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//  |   Token (if any, TKL bytes) ...
//  |   Options (if any) ...
//  |1 1 1 1 1 1 1 1|    Payload (if any) ...                     (RFC 7252 §3)
front_coap_parsed front_coap_parse(front_coap_msg *out, cm_span d)
{
    memset(out, 0, sizeof(*out));
    if (d.len < 4 || (d.p[0] >> 6) != 1) {
        return FRONT_COAP_PARSED_IGNORE;
    }
    out->type = (uint8_t)((d.p[0] >> 4) & 3u);
    out->code = d.p[1];
    out->mid = (uint16_t)((uint16_t)d.p[2] << 8 | d.p[3]);
    const size_t tkl = d.p[0] & 0x0fu;
    if (tkl > FRONT_COAP_MAX_TOKEN || d.len < 4 + tkl) {
        return FRONT_COAP_PARSED_FORMAT_ERROR;
    }
    if (out->code == FRONT_COAP_EMPTY && (tkl != 0 || d.len != 4)) {
        return FRONT_COAP_PARSED_FORMAT_ERROR; // §4.1
    }
    out->token_len = (uint8_t)tkl;
    memcpy(out->token, d.p + 4, tkl);
    const uint8_t *p = d.p + 4 + tkl, *end = d.p + d.len;
    uint32_t num = 0;
    while (p < end) {
        const uint8_t b = *p++;
        if (b == 0xff) {
            if (p == end) {
                return FRONT_COAP_PARSED_FORMAT_ERROR; // a marker with no payload (§3)
            }
            out->payload = cm_span_make(p, (size_t)(end - p));
            break;
        }
        uint32_t delta = 0, len = 0;
        if (!front_coap_ext(&p, end, b >> 4, &delta) || !front_coap_ext(&p, end, b & 0x0fu, &len)) {
            return FRONT_COAP_PARSED_FORMAT_ERROR;
        }
        num += delta;
        if (num > UINT16_MAX || (size_t)(end - p) < len ||
            out->num_opts == FRONT_COAP_MAX_OPTIONS) {
            return FRONT_COAP_PARSED_FORMAT_ERROR;
        }
        out->opts[out->num_opts++] = (front_coap_opt){(uint16_t)num, cm_span_make(p, len)};
        p += len;
    }
    return FRONT_COAP_PARSED_OK;
}

const front_coap_opt *front_coap_find(const front_coap_msg *m, uint16_t num)
{
    for (size_t i = 0; i < m->num_opts; i++) {
        if (m->opts[i].num == num) {
            return &m->opts[i];
        }
        if (m->opts[i].num > num) {
            break;
        }
    }
    return NULL;
}

const front_coap_opt *front_coap_find_next(const front_coap_msg *m, const front_coap_opt *prev)
{
    const front_coap_opt *next = prev + 1;
    return next < m->opts + m->num_opts && next->num == prev->num ? next : NULL;
}

bool front_coap_opt_uint(const front_coap_opt *o, uint32_t *out)
{
    if (o->val.len > 4) {
        return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < o->val.len; i++) {
        v = v << 8 | o->val.p[i];
    }
    *out = v;
    return true;
}

bool front_coap_critical(uint16_t num)
{
    return (num & 1u) != 0;
}

static void front_coap_put(front_coap_writer *w, const void *p, size_t n)
{
    if (w->failed || w->cap - w->len < n) {
        w->failed = true;
        return;
    }
    if (n > 0) {
        memcpy(w->buf + w->len, p, n);
    }
    w->len += n;
}

void front_coap_writer_init(front_coap_writer *w, uint8_t *buf, size_t cap, uint8_t type,
                            uint8_t code, uint16_t mid, const uint8_t *token, size_t token_len)
{
    *w = (front_coap_writer){.buf = buf, .cap = cap};
    if (token_len > FRONT_COAP_MAX_TOKEN) {
        w->failed = true;
        return;
    }
    const uint8_t h[4] = {(uint8_t)(0x40u | (unsigned)(type & 3u) << 4 | token_len), code,
                          (uint8_t)(mid >> 8), (uint8_t)mid};
    front_coap_put(w, h, sizeof(h));
    front_coap_put(w, token, token_len);
}

// front_coap_nibble splits |v| into its header nibble and extension bytes (RFC 7252 §3.1).
static uint8_t front_coap_nibble(uint32_t v, uint8_t *ext, size_t *ext_len)
{
    if (v < 13) {
        *ext_len = 0;
        return (uint8_t)v;
    }
    if (v < 269) {
        ext[0] = (uint8_t)(v - 13);
        *ext_len = 1;
        return 13;
    }
    ext[0] = (uint8_t)((v - 269) >> 8);
    ext[1] = (uint8_t)(v - 269);
    *ext_len = 2;
    return 14;
}

void front_coap_put_opt(front_coap_writer *w, uint16_t num, const uint8_t *val, size_t len)
{
    if (w->failed || w->payload || num < w->last_opt || len > 65535u + 269u) {
        w->failed = true;
        return;
    }
    uint8_t hdr[5], ext[2];
    size_t n = 1, el = 0;
    const uint8_t dn = front_coap_nibble((uint32_t)(num - w->last_opt), ext, &el);
    memcpy(hdr + n, ext, el);
    n += el;
    const uint8_t ln = front_coap_nibble((uint32_t)len, ext, &el);
    memcpy(hdr + n, ext, el);
    n += el;
    hdr[0] = (uint8_t)(dn << 4 | ln);
    front_coap_put(w, hdr, n);
    front_coap_put(w, val, len);
    w->last_opt = num;
}

void front_coap_put_uint(front_coap_writer *w, uint16_t num, uint32_t v)
{
    uint8_t b[4];
    size_t n = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        const uint8_t byte = (uint8_t)(v >> shift);
        if (n > 0 || byte != 0) {
            b[n++] = byte;
        }
    }
    front_coap_put_opt(w, num, b, n);
}

void front_coap_put_payload(front_coap_writer *w, cm_span p)
{
    if (w->payload) {
        w->failed = true;
        return;
    }
    if (p.len == 0) {
        return;
    }
    const uint8_t marker = 0xff;
    front_coap_put(w, &marker, 1);
    front_coap_put(w, p.p, p.len);
    w->payload = true;
}

bool front_coap_writer_finish(const front_coap_writer *w, size_t *out_len)
{
    *out_len = w->failed ? 0 : w->len;
    return !w->failed;
}

// Block1/Block2 value (RFC 7959 §2.2), 0-3 bytes:
//   0 1 2 3 4 5 6 7 ... NUM (4, 12 or 20 bits) | M | SZX (3 bits)
bool front_coap_block_parse(const front_coap_opt *o, front_coap_block *out)
{
    uint32_t v = 0;
    if (o->val.len > 3 || !front_coap_opt_uint(o, &v) || (v & 7u) == 7u) {
        return false;
    }
    *out = (front_coap_block){.num = v >> 4, .more = (v & 8u) != 0, .szx = (uint8_t)(v & 7u)};
    return true;
}

uint32_t front_coap_block_value(const front_coap_block *b)
{
    return b->num << 4 | (b->more ? 8u : 0u) | (b->szx & 7u);
}

size_t front_coap_block_size(uint8_t szx)
{
    return (size_t)16u << (szx & 7u);
}

void front_coap_asm_zero(front_coap_asm *a, size_t max)
{
    *a = (front_coap_asm){.max = max};
}

void front_coap_asm_cleanup(front_coap_asm *a)
{
    free(a->buf);
    front_coap_asm_zero(a, a->max);
}

front_coap_asm_result front_coap_asm_add(front_coap_asm *a, const front_coap_block *b,
                                         cm_span payload, uint32_t size1)
{
    if (size1 > a->max) {
        return FRONT_COAP_ASM_TOO_LARGE; // RFC 7959 §4: refuse what is announced too large
    }
    const size_t bs = front_coap_block_size(b->szx);
    if (b->more && payload.len != bs) {
        return FRONT_COAP_ASM_BAD_SIZE; // §2.2: only the last block may be shorter
    }
    if (!b->more && payload.len > bs) {
        return FRONT_COAP_ASM_BAD_SIZE;
    }
    const uint64_t off = (uint64_t)b->num * bs;
    if (off < a->len) {
        return FRONT_COAP_ASM_DUPLICATE;
    }
    if (off > a->len) {
        return FRONT_COAP_ASM_GAP;
    }
    if (payload.len > a->max - a->len) {
        return FRONT_COAP_ASM_TOO_LARGE;
    }
    if (a->cap - a->len < payload.len) {
        // Grow to the announced size, else double: a 4 KiB request grows three times.
        size_t cap = a->cap > 0 ? a->cap * 2 : 2048;
        if (size1 > 0 && size1 > cap) {
            cap = size1;
        }
        if (cap < a->len + payload.len) {
            cap = a->len + payload.len;
        }
        if (cap > a->max) {
            cap = a->max;
        }
        uint8_t *nb = realloc(a->buf, cap);
        if (nb == NULL) {
            return FRONT_COAP_ASM_NOMEM;
        }
        a->buf = nb;
        a->cap = cap;
    }
    if (payload.len > 0) {
        memcpy(a->buf + a->len, payload.p, payload.len);
    }
    a->len += payload.len;
    return b->more ? FRONT_COAP_ASM_MORE : FRONT_COAP_ASM_DONE;
}

bool front_coap_block2_slice(cm_span body, uint32_t num, uint8_t szx, cm_span *out, bool *more)
{
    const size_t bs = front_coap_block_size(szx);
    const uint64_t off = (uint64_t)num * bs;
    if (off > body.len || (off == body.len && num > 0)) {
        return false;
    }
    const size_t n = body.len - (size_t)off < bs ? body.len - (size_t)off : bs;
    *out = cm_span_make(body.p + off, n);
    *more = off + n < body.len;
    return true;
}

bool front_coap_path_write(const front_coap_msg *m, char *out, size_t cap, size_t *out_len)
{
    size_t n = 0;
    for (const front_coap_opt *o = front_coap_find(m, FRONT_COAP_OPT_URI_PATH); o != NULL;
         o = front_coap_find_next(m, o)) {
        if (o->val.len == 0 || cap - n < o->val.len + 2) {
            return false;
        }
        out[n++] = '/';
        for (size_t i = 0; i < o->val.len; i++) {
            const uint8_t c = o->val.p[i];
            if (c < 0x21 || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '%') {
                return false;
            }
            out[n++] = (char)c;
        }
    }
    if (n == 0) {
        if (cap < 2) {
            return false;
        }
        out[n++] = '/';
    }
    out[n] = '\0';
    *out_len = n;
    return true;
}
