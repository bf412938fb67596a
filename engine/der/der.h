// engine/der: a strict, zero-copy DER reader and a DER builder with back-patched lengths.
//
// The reader walks a borrowed (pointer, length) view and hands out sub-views: it never copies,
// never allocates and never reads past its view. Only DER is accepted (X.690 §10): definite,
// minimal lengths of at most 4 octets, minimal INTEGERs, BOOLEAN 00/FF, BIT STRINGs with zero
// padding, primitive strings, strict UTCTime/GeneralizedTime. On failure a reader is left
// unchanged, so a caller may try an alternative.
//
// The builder follows the CBB model: it appends in schema order into a fixed caller buffer,
// a growing heap buffer or arena memory; der_open/der_close delimit a constructed element and
// its length is patched in on close. Errors are sticky: the der_put_* calls return nothing,
// the first failure poisons the builder and der_builder_finish reports it.
//
// This module knows nothing of CMP or X.509 and does not use OpenSSL.
#ifndef CERTMINT_ENGINE_DER_DER_H
#define CERTMINT_ENGINE_DER_DER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"

// ---------------------------------------------------------------------------------------------
// Tags
//
// A tag is a uint32_t: the identifier octet's class and constructed bits in the top three bits
// and the tag number in the low 29 bits (the BoringSSL CBS convention), so that
// DER_TAG_SEQUENCE == DER_CONSTRUCTED | 16 and [3] EXPLICIT == DER_CONTEXT_CONS(3).

#define DER_TAG_SHIFT       24
#define DER_CONSTRUCTED     (0x20u << DER_TAG_SHIFT)
#define DER_CLASS_UNIVERSAL (0x00u << DER_TAG_SHIFT)
#define DER_CLASS_APP       (0x40u << DER_TAG_SHIFT)
#define DER_CLASS_CONTEXT   (0x80u << DER_TAG_SHIFT)
#define DER_CLASS_PRIVATE   (0xc0u << DER_TAG_SHIFT)
#define DER_CLASS_MASK      (0xc0u << DER_TAG_SHIFT)
#define DER_TAG_NUMBER_MASK ((1u << 29) - 1)

#define DER_TAG_BOOLEAN          1u
#define DER_TAG_INTEGER          2u
#define DER_TAG_BIT_STRING       3u
#define DER_TAG_OCTET_STRING     4u
#define DER_TAG_NULL             5u
#define DER_TAG_OID              6u
#define DER_TAG_ENUMERATED       10u
#define DER_TAG_UTF8_STRING      12u
#define DER_TAG_SEQUENCE         (16u | DER_CONSTRUCTED)
#define DER_TAG_SET              (17u | DER_CONSTRUCTED)
#define DER_TAG_PRINTABLE_STRING 19u
#define DER_TAG_T61_STRING       20u
#define DER_TAG_IA5_STRING       22u
#define DER_TAG_UTC_TIME         23u
#define DER_TAG_GENERALIZED_TIME 24u
#define DER_TAG_VISIBLE_STRING   26u
#define DER_TAG_UNIVERSAL_STRING 28u
#define DER_TAG_BMP_STRING       30u

// [n] IMPLICIT on a primitive type, and [n] EXPLICIT (or IMPLICIT on a constructed type).
#define DER_CONTEXT(n)      (DER_CLASS_CONTEXT | (uint32_t)(n))
#define DER_CONTEXT_CONS(n) (DER_CLASS_CONTEXT | DER_CONSTRUCTED | (uint32_t)(n))

// The deepest nesting a reader accepts (each der_enter counts one level).
#define CM_DER_MAX_DEPTH 32u

// The largest INTEGER der_get_int_span returns when a caller asks for a serial number
// (RFC 5280 §4.1.2.2: at most 20 octets).
#define DER_MAX_SERIAL_LEN 20u

// ---------------------------------------------------------------------------------------------
// Reader

// der_reader is a cursor over borrowed bytes. Copy it to backtrack. |depth| counts how many
// der_enter calls led to it, bounded by CM_DER_MAX_DEPTH.
// Thread: value type; the bytes it views must outlive it.
typedef struct der_reader {
    const uint8_t *p;
    size_t len;
    uint32_t depth;
} der_reader;

// der_reader_init starts a reader at depth 0 over |in|.
void der_reader_init(der_reader *r, cm_span in);

// der_reader_rest returns what remains unread.
cm_span der_reader_rest(const der_reader *r);

// der_reader_empty reports whether nothing remains.
bool der_reader_empty(const der_reader *r);

// der_expect_end succeeds only when nothing remains (CM_E_DER_TRAILING otherwise). Every
// SEQUENCE parser ends with it.
CM_RESULT der_expect_end(const der_reader *r);

// der_peek_tag sets |*out_tag| to the tag of the next element without consuming it. Fails
// on a malformed identifier or an empty reader.
CM_RESULT der_peek_tag(const der_reader *r, uint32_t *out_tag);

// der_peek_is reports whether the next element's tag is |tag| (false when empty or malformed).
bool der_peek_is(const der_reader *r, uint32_t tag);

// der_get_any reads the next element whatever its tag: |*out_tag| its tag, |*out_body| its
// content, |*out_whole| (may be NULL) the element with its header. Any output may be NULL.
CM_RESULT der_get_any(der_reader *r, uint32_t *out_tag, cm_span *out_body, cm_span *out_whole);

// der_get_tlv reads an element that must have tag |tag| and returns its content.
// CM_E_DER_UNEXPECTED_TAG when another tag is next, CM_E_DER_TRUNCATED when nothing is.
CM_RESULT der_get_tlv(der_reader *r, uint32_t tag, cm_span *out_body);

// der_get_element is der_get_tlv returning the whole element, header included (for hashing
// and for splicing pre-encoded TLVs into new structures).
CM_RESULT der_get_element(der_reader *r, uint32_t tag, cm_span *out_whole);

// der_get_optional reads an element of tag |tag| if it is next: |*out_present| says whether
// it was, and |*out_body| (may be NULL) is its content. Fails only on a malformed element.
CM_RESULT der_get_optional(der_reader *r, uint32_t tag, cm_span *out_body, bool *out_present);

// der_enter reads a constructed element of tag |tag| and sets |*out_child| to a reader over
// its content, one level deeper. CM_E_DER_DEPTH beyond CM_DER_MAX_DEPTH; |tag| must have the
// constructed bit (CM_E_INVALID_ARG otherwise).
CM_RESULT der_enter(der_reader *r, uint32_t tag, der_reader *out_child);

// der_enter_optional is der_enter for an OPTIONAL element; |*out_present| says whether it
// was there (|*out_child| is then empty when not).
CM_RESULT der_enter_optional(der_reader *r, uint32_t tag, der_reader *out_child, bool *out_present);

// der_get_bool reads a BOOLEAN (content exactly 0x00 or 0xFF).
CM_RESULT der_get_bool(der_reader *r, bool *out);

// der_get_int_span reads an INTEGER and returns its content octets (two's complement,
// validated as minimal and non-empty). Use for serial numbers and other big integers.
CM_RESULT der_get_int_span(der_reader *r, cm_span *out_body);

// der_get_u64 reads a non-negative INTEGER that fits in 64 bits (CM_E_DER_OVERFLOW when
// negative or too large).
CM_RESULT der_get_u64(der_reader *r, uint64_t *out);

// der_get_i64 reads an INTEGER that fits in a signed 64-bit value.
CM_RESULT der_get_i64(der_reader *r, int64_t *out);

// der_get_enum reads an ENUMERATED that fits a non-negative int32.
CM_RESULT der_get_enum(der_reader *r, uint32_t *out);

// der_get_null reads a NULL (empty content).
CM_RESULT der_get_null(der_reader *r);

// der_get_octets reads an OCTET STRING (primitive only) and returns its content.
CM_RESULT der_get_octets(der_reader *r, cm_span *out);

// der_get_bitstring reads a BIT STRING: |*out_bytes| is the content after the unused-bits
// octet, |*out_unused| that count. Rejects a count over 7, a non-zero count with no bytes and
// non-zero padding bits.
CM_RESULT der_get_bitstring(der_reader *r, cm_span *out_bytes, uint8_t *out_unused);

// der_get_bitstring_flags reads a named-bit-list BIT STRING (KeyUsage, PKIFailureInfo) of at
// most 32 bits into |*out|, bit 0 being the first (leftmost) bit. DER (X.690 §11.2.2) also
// forbids trailing zero bits, which is checked.
CM_RESULT der_get_bitstring_flags(der_reader *r, uint32_t *out);

// der_get_oid reads an OBJECT IDENTIFIER and returns its content octets, validated: non-empty,
// no 0x80 leading octet in a subidentifier, last octet complete. Compare with der_oid_is.
CM_RESULT der_get_oid(der_reader *r, cm_span *out);

// der_get_string reads a string of universal type |tag| (UTF8String, PrintableString,
// IA5String, VisibleString) and validates its characters; other string tags are returned as
// content without validation.
CM_RESULT der_get_string(der_reader *r, uint32_t tag, cm_span *out);

// der_get_utctime / der_get_gentime read the strict forms "YYMMDDHHMMSSZ" and
// "YYYYMMDDHHMMSSZ" (no fractions, no offsets: RFC 5280 §4.1.2.5) as seconds since the epoch.
// UTCTime years 50..99 are 19xx, 00..49 are 20xx.
CM_RESULT der_get_utctime(der_reader *r, int64_t *out);
CM_RESULT der_get_gentime(der_reader *r, int64_t *out);

// der_get_time reads either form (X.509 Time).
CM_RESULT der_get_time(der_reader *r, int64_t *out);

// Content-level checks, for [n] IMPLICIT primitives read with der_get_tlv.
CM_RESULT der_parse_int(cm_span body);
CM_RESULT der_parse_u64(cm_span body, uint64_t *out);
CM_RESULT der_parse_bool(cm_span body, bool *out);
CM_RESULT der_parse_bitstring(cm_span body, cm_span *out_bytes, uint8_t *out_unused);
CM_RESULT der_parse_oid(cm_span body);
CM_RESULT der_parse_string(uint32_t tag, cm_span body);
CM_RESULT der_parse_time(uint32_t tag, cm_span body, int64_t *out);

// ---------------------------------------------------------------------------------------------
// OIDs
//
// OID constants are string literals of content octets (see der_oid.h); der_oid_is compares a
// parsed OID against one without decoding to text.
#define der_oid_is(span, lit) der_oid_eq((span), (const uint8_t *)(lit), sizeof(lit) - 1)

static inline bool der_oid_eq(cm_span oid, const uint8_t *lit, size_t lit_len)
{
    if (oid.len != lit_len) {
        return false;
    }
    for (size_t i = 0; i < lit_len; i++) {
        if (oid.p[i] != lit[i]) {
            return false;
        }
    }
    return true;
}

// der_oid_to_text writes dotted-decimal text for |oid| into |buf| (always NUL-terminated when
// |cap| > 0; "?" for a malformed OID or one whose arcs exceed 64 bits). For logs and errors.
void der_oid_to_text(cm_span oid, char *buf, size_t cap);

// ---------------------------------------------------------------------------------------------
// Builder

// der_builder appends DER. Three storage modes: fixed (caller buffer, never grows), heap
// (realloc) and arena (new arena memory and a copy on growth; nothing to free). Errors are
// sticky. Thread: confined to its user.
typedef struct der_builder {
    uint8_t *buf;
    size_t len;
    size_t cap;
    cm_arena *arena; // arena mode when non-NULL
    bool heap;       // heap mode: buf is malloc'ed and owned
    uint32_t err;    // first error code, CM_OK while healthy
    uint32_t depth;  // number of elements opened and not yet closed
} der_builder;

// der_mark remembers an open constructed element until der_close. Thread: value type.
typedef struct der_mark {
    size_t header_pos;  // where the tag starts
    size_t content_pos; // where the content starts (after the reserved length octets)
    uint32_t depth;     // builder depth after opening; closes must nest
    uint8_t reserved;   // length octets reserved
} der_mark;

// der_builder_init_fixed writes into |buf| of |cap| bytes; exceeding it is
// CM_E_BUFFER_TOO_SMALL. The caller owns |buf|.
void der_builder_init_fixed(der_builder *b, uint8_t *buf, size_t cap);

// der_builder_init starts a growing heap buffer (|initial_cap| 0 picks 256 bytes). Release it
// with der_builder_cleanup, or keep it with der_builder_take.
void der_builder_init(der_builder *b, size_t initial_cap);

// der_builder_init_arena grows in |arena| memory (initial capacity |initial_cap|); there is
// nothing to release but the arena.
void der_builder_init_arena(der_builder *b, cm_arena *arena, size_t initial_cap);

// der_builder_cleanup frees a heap builder's buffer; a no-op for other modes.
void der_builder_cleanup(der_builder *b);

// der_builder_finish reports the first error, or checks that every der_open was closed and
// sets |*out| to the bytes written (owned by the builder's storage).
CM_RESULT der_builder_finish(der_builder *b, cm_span *out);

// der_builder_take is der_builder_finish for a heap builder that hands the malloc'ed buffer to
// the caller (free() it). The builder is left empty.
CM_RESULT der_builder_take(der_builder *b, uint8_t **out_buf, size_t *out_len);

// der_builder_fail poisons |b| with |code| if it is still healthy (for callers that detect an
// error mid-encoding, so one check at finish still catches it).
void der_builder_fail(der_builder *b, uint32_t code);

// der_builder_ok reports whether no error has happened yet.
bool der_builder_ok(const der_builder *b);

// der_open starts a constructed element with tag |tag| and reserves one length octet;
// der_open_hint reserves |len_octets| (1..5) for a large element, saving a memmove on close.
void der_open(der_builder *b, der_mark *out_mark, uint32_t tag);
void der_open_hint(der_builder *b, der_mark *out_mark, uint32_t tag, uint8_t len_octets);

// der_close ends the element opened with |mark| and patches its length. Closing out of order
// poisons the builder with CM_E_STATE.
void der_close(der_builder *b, const der_mark *mark);

// der_put_raw appends pre-encoded bytes verbatim (spliced TLVs, never re-encoded).
void der_put_raw(der_builder *b, cm_span bytes);

// der_put_tlv appends a primitive element of tag |tag| with content |body|.
void der_put_tlv(der_builder *b, uint32_t tag, cm_span body);

// der_reserve appends |len| uninitialised bytes and returns where they start (NULL once the
// builder has failed). The pointer is valid until the next append.
uint8_t *der_reserve(der_builder *b, size_t len);

void der_put_bool(der_builder *b, bool v);
void der_put_null(der_builder *b);
void der_put_u64(der_builder *b, uint64_t v);
void der_put_i64(der_builder *b, int64_t v);
void der_put_enum(der_builder *b, uint32_t v);

// der_put_int_tagged writes |v| as INTEGER content under |tag| (for [n] IMPLICIT INTEGER).
void der_put_i64_tagged(der_builder *b, uint32_t tag, int64_t v);

// der_put_uint_bytes writes the unsigned big-endian magnitude |mag| as a minimal INTEGER
// (leading zeros stripped, a 0x00 added when the top bit is set): serials, RSA moduli.
void der_put_uint_bytes(der_builder *b, cm_span mag);

// der_put_int_span writes INTEGER content that is already minimal two's complement (as
// returned by der_get_int_span).
void der_put_int_span(der_builder *b, cm_span body);

void der_put_octets(der_builder *b, cm_span v);

// der_put_bitstring writes a BIT STRING of |bytes| with |unused| padding bits (0..7), which
// must already be zero.
void der_put_bitstring(der_builder *b, cm_span bytes, uint8_t unused);

// der_put_bitstring_flags writes a named-bit-list BIT STRING (bit 0 = first bit), with
// trailing zero bits removed as DER requires.
void der_put_bitstring_flags(der_builder *b, uint32_t flags);

// der_put_oid writes an OBJECT IDENTIFIER from its content octets (e.g. a der_oid.h literal).
void der_put_oid(der_builder *b, cm_span oid);
#define der_put_oid_lit(b, lit) der_put_oid((b), cm_span_make((lit), sizeof(lit) - 1))

// der_put_string writes a string of universal type |tag|, validating its characters like
// der_get_string (CM_E_DER_STRING poisons the builder otherwise).
void der_put_string(der_builder *b, uint32_t tag, cm_span s);

// der_put_utctime / der_put_gentime write strict DER times; der_put_time writes the X.509
// choice (UTCTime through 2049, GeneralizedTime from 2050, RFC 5280 §4.1.2.5).
void der_put_utctime(der_builder *b, int64_t t);
void der_put_gentime(der_builder *b, int64_t t);
void der_put_time(der_builder *b, int64_t t);

// der_put_header writes just a tag and a definite length (for a caller that then writes
// |content_len| bytes itself).
void der_put_header(der_builder *b, uint32_t tag, size_t content_len);

#endif // CERTMINT_ENGINE_DER_DER_H
