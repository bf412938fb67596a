// fuzz_der: walks arbitrary input with the DER reader (a generic TLV walk down to the depth
// limit), re-encodes everything it accepted with the builder, and traps unless the output is
// byte-for-byte the input. Universal primitives also go through their typed getter and typed
// writer, which must reproduce the same content.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/der/der.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(c)         \
    do {                      \
        if (!(c)) {           \
            __builtin_trap(); \
        }                     \
    } while (0)

// fuzz_typed re-encodes one universal primitive with its typed API when the typed getter
// accepts it, and checks the result equals |whole|.
static void fuzz_typed(uint32_t tag, cm_span whole)
{
    uint8_t out[64];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_reader r;
    der_reader_init(&r, whole);
    bool wrote = false;
    switch (tag) {
    case DER_TAG_BOOLEAN: {
        bool v;
        if (cm_ok(der_get_bool(&r, &v))) {
            der_put_bool(&b, v);
            wrote = true;
        }
        break;
    }
    case DER_TAG_INTEGER: {
        int64_t v;
        if (cm_ok(der_get_i64(&r, &v))) {
            der_put_i64(&b, v);
            wrote = true;
        }
        break;
    }
    case DER_TAG_NULL:
        if (cm_ok(der_get_null(&r))) {
            der_put_null(&b);
            wrote = true;
        }
        break;
    case DER_TAG_BIT_STRING: {
        uint32_t flags;
        der_reader r2 = r;
        if (cm_ok(der_get_bitstring_flags(&r2, &flags))) {
            der_put_bitstring_flags(&b, flags);
            wrote = true;
        }
        break;
    }
    case DER_TAG_OID: {
        cm_span oid;
        if (cm_ok(der_get_oid(&r, &oid))) {
            der_put_oid(&b, oid);
            wrote = true;
            char text[128];
            der_oid_to_text(oid, text, sizeof(text));
        }
        break;
    }
    case DER_TAG_UTC_TIME:
    case DER_TAG_GENERALIZED_TIME: {
        int64_t t;
        if (cm_ok(der_get_time(&r, &t))) {
            if (tag == DER_TAG_UTC_TIME) {
                der_put_utctime(&b, t);
            } else {
                der_put_gentime(&b, t);
            }
            wrote = true;
        }
        break;
    }
    case DER_TAG_UTF8_STRING:
    case DER_TAG_PRINTABLE_STRING:
    case DER_TAG_IA5_STRING: {
        cm_span s;
        if (cm_ok(der_get_string(&r, tag, &s))) {
            der_put_string(&b, tag, s);
            wrote = true;
        }
        break;
    }
    default:
        break;
    }
    if (wrote && whole.len <= sizeof(out)) {
        cm_span got;
        FUZZ_CHECK(cm_ok(der_builder_finish(&b, &got)));
        FUZZ_CHECK(got.len == whole.len && memcmp(got.p, whole.p, got.len) == 0);
    }
}

// fuzz_walk copies every element of |r| into |b|, descending into constructed elements.
// Returns false if the reader rejects something.
static bool fuzz_walk(der_reader *r, der_builder *b)
{
    while (!der_reader_empty(r)) {
        uint32_t tag;
        cm_span body, whole;
        der_reader before = *r;
        if (!cm_ok(der_get_any(r, &tag, &body, &whole))) {
            // A failed read leaves the reader where it was.
            FUZZ_CHECK(r->p == before.p && r->len == before.len);
            return false;
        }
        if ((tag & DER_CONSTRUCTED) != 0) {
            der_reader child;
            if (!cm_ok(der_enter(&before, tag, &child))) {
                return false; // the depth limit
            }
            der_mark m;
            der_open(b, &m, tag);
            if (!fuzz_walk(&child, b)) { // NOLINT(misc-no-recursion): bounded by der_enter
                return false;
            }
            der_close(b, &m);
        } else {
            der_put_tlv(b, tag, body);
            if ((tag & DER_CLASS_MASK) == DER_CLASS_UNIVERSAL) {
                fuzz_typed(tag, whole);
            }
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    der_reader r;
    der_reader_init(&r, cm_span_make(data, size));
    der_builder b;
    der_builder_init(&b, size + 16);
    if (fuzz_walk(&r, &b)) {
        cm_span out;
        FUZZ_CHECK(cm_ok(der_builder_finish(&b, &out)));
        FUZZ_CHECK(out.len == size && (size == 0 || memcmp(out.p, data, size) == 0));
    }
    der_builder_cleanup(&b);
    return 0;
}
