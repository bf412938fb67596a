// Suite "der": the strict DER reader and the builder. Every rejection rule is fed an
// offending encoding; OpenSSL is the oracle for integers, OIDs, times and whole structures,
// including a certificate, a CSR, a CRL and a CMP ir made by the openssl CLI during the run.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/CUnit.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/cmp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

#define SPAN(...) \
    cm_span_make((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

static char g_dir[256];

static der_reader reader_of(cm_span s)
{
    der_reader r;
    der_reader_init(&r, s);
    return r;
}

// expect_any_fails checks that reading one element of |in| fails with |code| and leaves the
// reader where it was.
static void expect_any_fails(cm_span in, uint32_t code)
{
    der_reader r = reader_of(in);
    uint32_t tag;
    cm_span body;
    TEST_ASSERT_CODE(der_get_any(&r, &tag, &body, NULL), code);
    CU_ASSERT_PTR_EQUAL(r.p, in.p);
    CU_ASSERT_EQUAL(r.len, in.len);
}

// --- headers ------------------------------------------------------------------------------

static void test_der_reads_short_and_long_lengths(void)
{
    uint8_t buf[300] = {0x04, 0x82, 0x01, 0x00};
    der_reader r = reader_of(cm_span_make(buf, 4 + 256));
    cm_span body;
    TEST_ASSERT_OK(der_get_octets(&r, &body));
    CU_ASSERT_EQUAL(body.len, 256);
    CU_ASSERT_PTR_EQUAL(body.p, buf + 4);
    TEST_ASSERT_OK(der_expect_end(&r));

    uint8_t b2[131] = {0x04, 0x81, 0x80};
    r = reader_of(cm_span_make(b2, sizeof(b2)));
    TEST_ASSERT_OK(der_get_octets(&r, &body));
    CU_ASSERT_EQUAL(body.len, 128);
}

static void test_der_rejects_indefinite_length(void)
{
    expect_any_fails(SPAN(0x30, 0x80, 0x02, 0x01, 0x00, 0x00, 0x00), CM_E_DER_INDEFINITE);
}

static void test_der_rejects_nonminimal_length(void)
{
    // Long form for a length below 128.
    expect_any_fails(SPAN(0x04, 0x81, 0x05, 1, 2, 3, 4, 5), CM_E_DER_LENGTH_NONMINIMAL);
    // Leading zero octet in a long-form length.
    uint8_t buf[4 + 200] = {0x04, 0x82, 0x00, 0xc8};
    expect_any_fails(cm_span_make(buf, sizeof(buf)), CM_E_DER_LENGTH_NONMINIMAL);
}

static void test_der_rejects_length_over_four_octets(void)
{
    expect_any_fails(SPAN(0x04, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00), CM_E_DER_LENGTH_TOO_LARGE);
    expect_any_fails(SPAN(0x04, 0xff), CM_E_DER_LENGTH_TOO_LARGE);
}

static void test_der_rejects_truncation_at_every_byte(void)
{
    // SEQUENCE { INTEGER 5, OCTET STRING 'ab' } with a long-form outer length.
    const uint8_t full[] = {0x30, 0x81, 0x81, 0x02, 0x01, 0x05, 0x04, 0x7c};
    uint8_t buf[3 + 129];
    memcpy(buf, full, sizeof(full));
    memset(buf + sizeof(full), 'a', sizeof(buf) - sizeof(full));
    der_reader r = reader_of(cm_span_make(buf, sizeof(buf)));
    TEST_ASSERT_OK(der_get_any(&r, NULL, NULL, NULL));
    for (size_t cut = 0; cut < sizeof(buf); cut++) {
        expect_any_fails(cm_span_make(buf, cut), CM_E_DER_TRUNCATED);
    }
}

static void test_der_rejects_content_past_input(void)
{
    expect_any_fails(SPAN(0x04, 0x05, 1, 2), CM_E_DER_TRUNCATED);
    expect_any_fails(SPAN(0x04, 0x82, 0x01), CM_E_DER_TRUNCATED);
}

static void test_der_rejects_bad_tags(void)
{
    // Universal tag 0 (end-of-contents).
    expect_any_fails(SPAN(0x00, 0x00), CM_E_DER_BAD_TAG);
    // High-tag form with a leading 0x80 octet.
    expect_any_fails(SPAN(0x9f, 0x80, 0x21, 0x00), CM_E_DER_BAD_TAG);
    // High-tag form for a number below 31.
    expect_any_fails(SPAN(0x9f, 0x10, 0x00), CM_E_DER_BAD_TAG);
    // A tag number over 29 bits.
    expect_any_fails(SPAN(0x9f, 0x8f, 0xff, 0xff, 0xff, 0x7f, 0x00), CM_E_DER_BAD_TAG);
    // Truncated inside a high tag.
    expect_any_fails(SPAN(0x9f, 0x81), CM_E_DER_TRUNCATED);
}

static void test_der_reads_high_tag_numbers(void)
{
    der_reader r = reader_of(SPAN(0x9f, 0x1f, 0x00, 0xbf, 0x81, 0x00, 0x00));
    cm_span body;
    TEST_ASSERT_OK(der_get_tlv(&r, DER_CONTEXT(31), &body));
    CU_ASSERT_EQUAL(body.len, 0);
    uint32_t tag;
    TEST_ASSERT_OK(der_peek_tag(&r, &tag));
    CU_ASSERT_EQUAL(tag, DER_CONTEXT_CONS(128));
    der_reader child;
    TEST_ASSERT_OK(der_enter(&r, DER_CONTEXT_CONS(128), &child));
    TEST_ASSERT_OK(der_expect_end(&child));
    TEST_ASSERT_OK(der_expect_end(&r));

    // And the builder writes them the same way.
    uint8_t out[16];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_put_tlv(&b, DER_CONTEXT(31), cm_span_make(NULL, 0));
    der_mark m;
    der_open(&b, &m, DER_CONTEXT_CONS(128));
    der_close(&b, &m);
    cm_span got;
    TEST_ASSERT_OK(der_builder_finish(&b, &got));
    CU_ASSERT_EQUAL(got.len, 7);
    CU_ASSERT_EQUAL(memcmp(got.p, (const uint8_t[]){0x9f, 0x1f, 0x00, 0xbf, 0x81, 0x00, 0x00}, 7),
                    0);
}

static void test_der_rejects_unexpected_tag_and_missing_element(void)
{
    der_reader r = reader_of(SPAN(0x02, 0x01, 0x05));
    cm_span body;
    TEST_ASSERT_CODE(der_get_tlv(&r, DER_TAG_OCTET_STRING, &body), CM_E_DER_UNEXPECTED_TAG);
    CU_ASSERT_EQUAL(r.len, 3);
    der_reader empty = reader_of(cm_span_make(NULL, 0));
    TEST_ASSERT_CODE(der_get_tlv(&empty, DER_TAG_INTEGER, &body), CM_E_DER_TRUNCATED);
    // A constructed OCTET STRING (BER only) is not the primitive one asked for.
    r = reader_of(SPAN(0x24, 0x03, 0x04, 0x01, 0x41));
    TEST_ASSERT_CODE(der_get_octets(&r, &body), CM_E_DER_UNEXPECTED_TAG);
}

static void test_der_rejects_trailing_bytes(void)
{
    der_reader r = reader_of(SPAN(0x30, 0x05, 0x02, 0x01, 0x01, 0x05, 0x00, 0x01));
    der_reader seq;
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    uint64_t v;
    TEST_ASSERT_OK(der_get_u64(&seq, &v));
    TEST_ASSERT_CODE(der_expect_end(&seq), CM_E_DER_TRAILING);
    TEST_ASSERT_OK(der_get_null(&seq));
    TEST_ASSERT_OK(der_expect_end(&seq));
    TEST_ASSERT_CODE(der_expect_end(&r), CM_E_DER_TRAILING);
}

static void test_der_rejects_nesting_beyond_depth_limit(void)
{
    // 40 nested SEQUENCEs.
    uint8_t buf[80];
    for (size_t i = 0; i < 40; i++) {
        buf[2 * i] = 0x30;
        buf[2 * i + 1] = (uint8_t)(2 * (40 - i - 1));
    }
    der_reader r = reader_of(cm_span_make(buf, sizeof(buf)));
    uint32_t levels = 0;
    cm_result res;
    for (;;) {
        der_reader child;
        res = der_enter(&r, DER_TAG_SEQUENCE, &child);
        if (!cm_ok(res)) {
            break;
        }
        r = child;
        levels++;
    }
    CU_ASSERT_EQUAL(res.code, CM_E_DER_DEPTH);
    CU_ASSERT_EQUAL(levels, CM_DER_MAX_DEPTH);
}

static void test_der_enter_requires_constructed_tag(void)
{
    der_reader r = reader_of(SPAN(0x04, 0x00));
    der_reader child;
    TEST_ASSERT_CODE(der_enter(&r, DER_TAG_OCTET_STRING, &child), CM_E_INVALID_ARG);
}

static void test_der_optional_elements(void)
{
    der_reader r = reader_of(SPAN(0xa0, 0x03, 0x02, 0x01, 0x02, 0x82, 0x01, 0x07));
    der_reader child;
    bool present;
    TEST_ASSERT_OK(der_enter_optional(&r, DER_CONTEXT_CONS(0), &child, &present));
    CU_ASSERT_TRUE(present);
    int64_t v;
    TEST_ASSERT_OK(der_get_i64(&child, &v));
    CU_ASSERT_EQUAL(v, 2);
    TEST_ASSERT_OK(der_enter_optional(&r, DER_CONTEXT_CONS(1), &child, &present));
    CU_ASSERT_FALSE(present);
    cm_span body;
    TEST_ASSERT_OK(der_get_optional(&r, DER_CONTEXT(1), &body, &present));
    CU_ASSERT_FALSE(present);
    TEST_ASSERT_OK(der_get_optional(&r, DER_CONTEXT(2), &body, &present));
    CU_ASSERT_TRUE(present);
    // [2] IMPLICIT INTEGER content, checked with the content-level parser.
    uint64_t u;
    TEST_ASSERT_OK(der_parse_u64(body, &u));
    CU_ASSERT_EQUAL(u, 7);
    TEST_ASSERT_OK(der_get_optional(&r, DER_CONTEXT(3), &body, &present));
    CU_ASSERT_FALSE(present);
    TEST_ASSERT_OK(der_expect_end(&r));
    // A malformed next element is an error, not "absent".
    r = reader_of(SPAN(0x82, 0x80));
    TEST_ASSERT_CODE(der_get_optional(&r, DER_CONTEXT(2), &body, &present), CM_E_DER_INDEFINITE);
}

// --- INTEGER, BOOLEAN, NULL, ENUMERATED --------------------------------------------------

static void test_der_integers_match_openssl(void)
{
    static const int64_t values[] = {
        0,       1,         -1,        127,           128,          -128,
        -129,    255,       256,       32767,         -32768,       65535,
        1000000, INT64_MAX, INT64_MIN, INT64_MIN + 1, 0x7fffffffLL, -0x80000000LL};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        ASN1_INTEGER *ai = ASN1_INTEGER_new();
        CU_ASSERT_FATAL(ai != NULL && ASN1_INTEGER_set_int64(ai, values[i]) == 1);
        unsigned char *der = NULL;
        int n = i2d_ASN1_INTEGER(ai, &der);
        CU_ASSERT_FATAL(n > 0);
        der_reader r = reader_of(cm_span_make(der, (size_t)n));
        int64_t v;
        TEST_ASSERT_OK(der_get_i64(&r, &v));
        CU_ASSERT_EQUAL(v, values[i]);
        // Our writer produces the identical encoding.
        uint8_t out[16];
        der_builder b;
        der_builder_init_fixed(&b, out, sizeof(out));
        der_put_i64(&b, values[i]);
        cm_span got;
        TEST_ASSERT_OK(der_builder_finish(&b, &got));
        CU_ASSERT_EQUAL(got.len, (size_t)n);
        CU_ASSERT_EQUAL(memcmp(got.p, der, (size_t)n), 0);
        OPENSSL_free(der);
        ASN1_INTEGER_free(ai);
    }
}

static void test_der_unsigned_integers(void)
{
    der_reader r =
        reader_of(SPAN(0x02, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    uint64_t v;
    TEST_ASSERT_OK(der_get_u64(&r, &v));
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    // 2^64 does not fit.
    r = reader_of(SPAN(0x02, 0x09, 0x01, 0, 0, 0, 0, 0, 0, 0, 0));
    TEST_ASSERT_CODE(der_get_u64(&r, &v), CM_E_DER_OVERFLOW);
    CU_ASSERT_EQUAL(r.len, 11); // unchanged on failure
    // Negative values are not unsigned.
    r = reader_of(SPAN(0x02, 0x01, 0xff));
    TEST_ASSERT_CODE(der_get_u64(&r, &v), CM_E_DER_OVERFLOW);
    int64_t s;
    r = reader_of(SPAN(0x02, 0x09, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0));
    TEST_ASSERT_CODE(der_get_i64(&r, &s), CM_E_DER_OVERFLOW);

    uint8_t out[16];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_put_u64(&b, UINT64_MAX);
    der_put_u64(&b, 0);
    cm_span got;
    TEST_ASSERT_OK(der_builder_finish(&b, &got));
    CU_ASSERT_EQUAL(got.len, 11 + 3);
    CU_ASSERT_EQUAL(memcmp(got.p, (const uint8_t[]){0x02, 0x09, 0x00, 0xff}, 4), 0);
    CU_ASSERT_EQUAL(memcmp(got.p + 11, (const uint8_t[]){0x02, 0x01, 0x00}, 3), 0);
}

static void test_der_rejects_nonminimal_integer(void)
{
    cm_span body;
    der_reader r = reader_of(SPAN(0x02, 0x02, 0x00, 0x01));
    TEST_ASSERT_CODE(der_get_int_span(&r, &body), CM_E_DER_INTEGER);
    r = reader_of(SPAN(0x02, 0x02, 0xff, 0x80));
    TEST_ASSERT_CODE(der_get_int_span(&r, &body), CM_E_DER_INTEGER);
    r = reader_of(SPAN(0x02, 0x00));
    TEST_ASSERT_CODE(der_get_int_span(&r, &body), CM_E_DER_INTEGER);
    int64_t v;
    r = reader_of(SPAN(0x02, 0x02, 0x00, 0x7f));
    TEST_ASSERT_CODE(der_get_i64(&r, &v), CM_E_DER_INTEGER);
    // Minimal forms with a sign octet are fine.
    r = reader_of(SPAN(0x02, 0x02, 0x00, 0x80));
    TEST_ASSERT_OK(der_get_int_span(&r, &body));
    CU_ASSERT_EQUAL(body.len, 2);
    // The builder refuses to copy a non-minimal INTEGER body.
    uint8_t out[8];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_put_int_span(&b, SPAN(0x00, 0x01));
    cm_span got;
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_DER_INTEGER);
}

static void test_der_big_integers_match_openssl_bignum(void)
{
    // Serial-number style 20-octet values, random, with and without the top bit.
    for (int i = 0; i < 64; i++) {
        uint8_t mag[20];
        for (size_t k = 0; k < sizeof(mag); k++) {
            mag[k] = (uint8_t)rand();
        }
        if (i % 4 == 0) {
            mag[0] = 0;
            mag[1] = (uint8_t)(i & 1 ? 0x80 : 0x01);
        }
        BIGNUM *bn = BN_bin2bn(mag, sizeof(mag), NULL);
        ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
        unsigned char *der = NULL;
        int n = i2d_ASN1_INTEGER(ai, &der);
        CU_ASSERT_FATAL(n > 0);
        uint8_t out[32];
        der_builder b;
        der_builder_init_fixed(&b, out, sizeof(out));
        der_put_uint_bytes(&b, cm_span_make(mag, sizeof(mag)));
        cm_span got;
        TEST_ASSERT_OK(der_builder_finish(&b, &got));
        CU_ASSERT_EQUAL(got.len, (size_t)n);
        CU_ASSERT_EQUAL(memcmp(got.p, der, (size_t)n), 0);
        der_reader r = reader_of(got);
        cm_span body;
        TEST_ASSERT_OK(der_get_int_span(&r, &body));
        BIGNUM *back = BN_bin2bn(body.p, (int)body.len, NULL);
        CU_ASSERT_EQUAL(BN_cmp(back, bn), 0);
        BN_free(back);
        OPENSSL_free(der);
        ASN1_INTEGER_free(ai);
        BN_free(bn);
    }
}

static void test_der_booleans_are_strict(void)
{
    bool v;
    der_reader r = reader_of(SPAN(0x01, 0x01, 0xff, 0x01, 0x01, 0x00));
    TEST_ASSERT_OK(der_get_bool(&r, &v));
    CU_ASSERT_TRUE(v);
    TEST_ASSERT_OK(der_get_bool(&r, &v));
    CU_ASSERT_FALSE(v);
    r = reader_of(SPAN(0x01, 0x01, 0x01));
    TEST_ASSERT_CODE(der_get_bool(&r, &v), CM_E_DER_BOOLEAN);
    r = reader_of(SPAN(0x01, 0x02, 0xff, 0xff));
    TEST_ASSERT_CODE(der_get_bool(&r, &v), CM_E_DER_BOOLEAN);
    r = reader_of(SPAN(0x01, 0x00));
    TEST_ASSERT_CODE(der_get_bool(&r, &v), CM_E_DER_BOOLEAN);
}

static void test_der_null_and_enumerated(void)
{
    der_reader r = reader_of(SPAN(0x05, 0x00, 0x0a, 0x01, 0x03));
    TEST_ASSERT_OK(der_get_null(&r));
    uint32_t e;
    TEST_ASSERT_OK(der_get_enum(&r, &e));
    CU_ASSERT_EQUAL(e, 3);
    r = reader_of(SPAN(0x05, 0x01, 0x00));
    TEST_ASSERT_CODE(der_get_null(&r), CM_E_DER_NULL);
    r = reader_of(SPAN(0x0a, 0x01, 0xff));
    TEST_ASSERT_CODE(der_get_enum(&r, &e), CM_E_DER_OVERFLOW);
}

// --- BIT STRING ---------------------------------------------------------------------------

static void test_der_bitstrings(void)
{
    cm_span bytes;
    uint8_t unused;
    der_reader r = reader_of(SPAN(0x03, 0x01, 0x00, 0x03, 0x03, 0x04, 0xab, 0xf0));
    TEST_ASSERT_OK(der_get_bitstring(&r, &bytes, &unused));
    CU_ASSERT_EQUAL(bytes.len, 0);
    TEST_ASSERT_OK(der_get_bitstring(&r, &bytes, &unused));
    CU_ASSERT_EQUAL(bytes.len, 2);
    CU_ASSERT_EQUAL(unused, 4);
}

static void test_der_rejects_bad_bitstrings(void)
{
    cm_span bytes;
    uint8_t unused;
    // No unused-bits octet.
    der_reader r = reader_of(SPAN(0x03, 0x00));
    TEST_ASSERT_CODE(der_get_bitstring(&r, &bytes, &unused), CM_E_DER_BITSTRING);
    // Unused bits with no content.
    r = reader_of(SPAN(0x03, 0x01, 0x01));
    TEST_ASSERT_CODE(der_get_bitstring(&r, &bytes, &unused), CM_E_DER_BITSTRING);
    // More than 7 unused bits.
    r = reader_of(SPAN(0x03, 0x02, 0x08, 0x00));
    TEST_ASSERT_CODE(der_get_bitstring(&r, &bytes, &unused), CM_E_DER_BITSTRING);
    // Non-zero padding bits.
    r = reader_of(SPAN(0x03, 0x02, 0x01, 0x01));
    TEST_ASSERT_CODE(der_get_bitstring(&r, &bytes, &unused), CM_E_DER_BITSTRING);
    // Constructed BIT STRING (BER).
    r = reader_of(SPAN(0x23, 0x04, 0x03, 0x02, 0x00, 0x01));
    TEST_ASSERT_CODE(der_get_bitstring(&r, &bytes, &unused), CM_E_DER_UNEXPECTED_TAG);
}

static void test_der_named_bit_lists(void)
{
    uint32_t flags;
    // keyUsage digitalSignature: 03 02 07 80.
    der_reader r = reader_of(SPAN(0x03, 0x02, 0x07, 0x80));
    TEST_ASSERT_OK(der_get_bitstring_flags(&r, &flags));
    CU_ASSERT_EQUAL(flags, 1u);
    // keyCertSign | cRLSign (bits 5 and 6): 03 02 01 06.
    r = reader_of(SPAN(0x03, 0x02, 0x01, 0x06));
    TEST_ASSERT_OK(der_get_bitstring_flags(&r, &flags));
    CU_ASSERT_EQUAL(flags, (1u << 5) | (1u << 6));
    // Trailing zero bits are not DER for a named bit list.
    r = reader_of(SPAN(0x03, 0x02, 0x00, 0x80));
    TEST_ASSERT_CODE(der_get_bitstring_flags(&r, &flags), CM_E_DER_BITSTRING);
    r = reader_of(SPAN(0x03, 0x03, 0x07, 0x80, 0x00));
    TEST_ASSERT_CODE(der_get_bitstring_flags(&r, &flags), CM_E_DER_BITSTRING);
    // More than 32 bits.
    r = reader_of(SPAN(0x03, 0x06, 0x07, 0, 0, 0, 0, 0x80));
    TEST_ASSERT_CODE(der_get_bitstring_flags(&r, &flags), CM_E_DER_OVERFLOW);

    // Writer: same encodings; PKIFailureInfo badPOP (bit 9) and empty.
    static const struct {
        uint32_t flags;
        uint8_t der[6];
        size_t len;
    } cases[] = {{1u, {0x03, 0x02, 0x07, 0x80}, 4},
                 {(1u << 5) | (1u << 6), {0x03, 0x02, 0x01, 0x06}, 4},
                 {1u << 9, {0x03, 0x03, 0x06, 0x00, 0x40}, 5},
                 {0, {0x03, 0x01, 0x00}, 3}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t out[8];
        der_builder b;
        der_builder_init_fixed(&b, out, sizeof(out));
        der_put_bitstring_flags(&b, cases[i].flags);
        cm_span got;
        TEST_ASSERT_OK(der_builder_finish(&b, &got));
        CU_ASSERT_EQUAL(got.len, cases[i].len);
        CU_ASSERT_EQUAL(memcmp(got.p, cases[i].der, cases[i].len), 0);
        r = reader_of(got);
        TEST_ASSERT_OK(der_get_bitstring_flags(&r, &flags));
        CU_ASSERT_EQUAL(flags, cases[i].flags);
    }
}

// --- OBJECT IDENTIFIER --------------------------------------------------------------------

static void test_der_oids_match_openssl(void)
{
    static const char *const dotted[] = {
        "2.16.840.1.101.3.4.2.1", "1.2.840.10045.3.1.7", "1.3.6.1.5.5.7.4.13",        "2.5.29.15",
        "1.2.840.113533.7.66.13", "2.999.1234567890123", "0.9.2342.19200300.100.1.25"};
    for (size_t i = 0; i < sizeof(dotted) / sizeof(dotted[0]); i++) {
        ASN1_OBJECT *o = OBJ_txt2obj(dotted[i], 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(o);
        unsigned char *der = NULL;
        int n = i2d_ASN1_OBJECT(o, &der);
        CU_ASSERT_FATAL(n > 0);
        der_reader r = reader_of(cm_span_make(der, (size_t)n));
        cm_span oid;
        TEST_ASSERT_OK(der_get_oid(&r, &oid));
        char text[64];
        der_oid_to_text(oid, text, sizeof(text));
        CU_ASSERT_STRING_EQUAL(text, dotted[i]);
        uint8_t out[32];
        der_builder b;
        der_builder_init_fixed(&b, out, sizeof(out));
        der_put_oid(&b, oid);
        cm_span got;
        TEST_ASSERT_OK(der_builder_finish(&b, &got));
        CU_ASSERT_EQUAL(got.len, (size_t)n);
        CU_ASSERT_EQUAL(memcmp(got.p, der, (size_t)n), 0);
        OPENSSL_free(der);
        ASN1_OBJECT_free(o);
    }
}

static void test_der_oid_table_matches_openssl(void)
{
    static const struct {
        const char *lit;
        size_t len;
        int nid;
    } table[] = {
        {DER_OID_SHA256, sizeof(DER_OID_SHA256) - 1, NID_sha256},
        {DER_OID_ECDSA_WITH_SHA256, sizeof(DER_OID_ECDSA_WITH_SHA256) - 1, NID_ecdsa_with_SHA256},
        {DER_OID_P256, sizeof(DER_OID_P256) - 1, NID_X9_62_prime256v1},
        {DER_OID_ED25519, sizeof(DER_OID_ED25519) - 1, NID_ED25519},
        {DER_OID_PASSWORD_BASED_MAC, sizeof(DER_OID_PASSWORD_BASED_MAC) - 1,
         NID_id_PasswordBasedMAC},
        {DER_OID_PBMAC1, sizeof(DER_OID_PBMAC1) - 1, NID_pbmac1},
        {DER_OID_IT_IMPLICIT_CONFIRM, sizeof(DER_OID_IT_IMPLICIT_CONFIRM) - 1,
         NID_id_it_implicitConfirm},
        {DER_OID_IT_CA_CERTS, sizeof(DER_OID_IT_CA_CERTS) - 1, NID_id_it_caCerts},
        {DER_OID_REGCTRL_OLD_CERT_ID, sizeof(DER_OID_REGCTRL_OLD_CERT_ID) - 1,
         NID_id_regCtrl_oldCertID},
        {DER_OID_CE_AUTHORITY_KEY_ID, sizeof(DER_OID_CE_AUTHORITY_KEY_ID) - 1,
         NID_authority_key_identifier},
        {DER_OID_KP_CMC_CA, sizeof(DER_OID_KP_CMC_CA) - 1, NID_cmcCA},
        {DER_OID_RSASSA_PSS, sizeof(DER_OID_RSASSA_PSS) - 1, NID_rsassaPss},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const ASN1_OBJECT *o = OBJ_nid2obj(table[i].nid);
        CU_ASSERT_FATAL(o != NULL);
        CU_ASSERT_EQUAL((size_t)OBJ_length(o), table[i].len);
        CU_ASSERT_EQUAL(memcmp(OBJ_get0_data(o), table[i].lit, table[i].len), 0);
    }
    cm_span sha256 = CM_SPAN_LIT(DER_OID_SHA256);
    CU_ASSERT_TRUE(der_oid_is(sha256, DER_OID_SHA256));
    CU_ASSERT_FALSE(der_oid_is(sha256, DER_OID_SHA384));
}

static void test_der_rejects_bad_oids(void)
{
    cm_span oid;
    der_reader r = reader_of(SPAN(0x06, 0x00));
    TEST_ASSERT_CODE(der_get_oid(&r, &oid), CM_E_DER_OID);
    r = reader_of(SPAN(0x06, 0x03, 0x2a, 0x80, 0x01));
    TEST_ASSERT_CODE(der_get_oid(&r, &oid), CM_E_DER_OID);
    r = reader_of(SPAN(0x06, 0x02, 0x2a, 0x86));
    TEST_ASSERT_CODE(der_get_oid(&r, &oid), CM_E_DER_OID);
    char text[8];
    der_oid_to_text(SPAN(0x2a, 0x86), text, sizeof(text));
    CU_ASSERT_STRING_EQUAL(text, "?");
    uint8_t out[8];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_put_oid(&b, SPAN(0x80, 0x01));
    cm_span got;
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_DER_OID);
}

// --- strings ------------------------------------------------------------------------------

static void test_der_strings(void)
{
    cm_span s;
    // "Grüße €" in UTF-8, a 4-byte character too.
    der_reader r =
        reader_of(SPAN(0x0c, 0x0a, 'G', 'r', 0xc3, 0xbc, 0xc3, 0x9f, 0xf0, 0x9f, 0x98, 0x80));
    TEST_ASSERT_OK(der_get_string(&r, DER_TAG_UTF8_STRING, &s));
    CU_ASSERT_EQUAL(s.len, 10);
    r = reader_of(SPAN(0x13, 0x05, 'A', 'b', ' ', '1', '?'));
    TEST_ASSERT_OK(der_get_string(&r, DER_TAG_PRINTABLE_STRING, &s));
    r = reader_of(SPAN(0x16, 0x03, 'a', '@', 'b'));
    TEST_ASSERT_OK(der_get_string(&r, DER_TAG_IA5_STRING, &s));
}

static void test_der_rejects_bad_strings(void)
{
    cm_span s;
    static const struct {
        uint32_t tag;
        uint8_t body[5];
        size_t len;
    } bad[] = {
        {DER_TAG_UTF8_STRING, {0xc0, 0x80}, 2},             // overlong NUL
        {DER_TAG_UTF8_STRING, {0xe0, 0x80, 0x80}, 3},       // overlong 3-byte
        {DER_TAG_UTF8_STRING, {0xed, 0xa0, 0x80}, 3},       // surrogate
        {DER_TAG_UTF8_STRING, {0xf4, 0x90, 0x80, 0x80}, 4}, // above U+10FFFF
        {DER_TAG_UTF8_STRING, {'a', 0xc3}, 2},              // truncated sequence
        {DER_TAG_UTF8_STRING, {0x80}, 1},                   // stray continuation
        {DER_TAG_PRINTABLE_STRING, {'a', '*'}, 2},
        {DER_TAG_PRINTABLE_STRING, {'a', '@'}, 2},
        {DER_TAG_PRINTABLE_STRING, {0x00}, 1},
        {DER_TAG_IA5_STRING, {'a', 0x80}, 2},
        {DER_TAG_VISIBLE_STRING, {'a', 0x0a}, 2},
        {DER_TAG_BMP_STRING, {0x00, 0x41, 0x00}, 3},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t buf[8] = {(uint8_t)bad[i].tag, (uint8_t)bad[i].len};
        memcpy(buf + 2, bad[i].body, bad[i].len);
        der_reader r = reader_of(cm_span_make(buf, 2 + bad[i].len));
        TEST_ASSERT_CODE(der_get_string(&r, bad[i].tag, &s), CM_E_DER_STRING);
        uint8_t out[16];
        der_builder b;
        der_builder_init_fixed(&b, out, sizeof(out));
        der_put_string(&b, bad[i].tag, cm_span_make(bad[i].body, bad[i].len));
        cm_span got;
        TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_DER_STRING);
    }
}

// --- times --------------------------------------------------------------------------------

static int64_t openssl_time(const char *text, int type)
{
    ASN1_TIME *t = ASN1_TIME_new();
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_FATAL(ASN1_STRING_set(t, text, (int)strlen(text)) == 1);
    t->type = type;
    struct tm tm;
    CU_ASSERT_FATAL(ASN1_TIME_to_tm(t, &tm) == 1);
    ASN1_TIME_free(t);
    return cm_time_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec);
}

static void test_der_times_match_openssl(void)
{
    static const struct {
        const char *text;
        uint32_t tag;
    } cases[] = {
        {"491231235959Z", DER_TAG_UTC_TIME},
        {"500101000000Z", DER_TAG_UTC_TIME},
        {"240229120000Z", DER_TAG_UTC_TIME},
        {"20501231235959Z", DER_TAG_GENERALIZED_TIME},
        {"99991231235959Z", DER_TAG_GENERALIZED_TIME},
        {"19700101000000Z", DER_TAG_GENERALIZED_TIME},
        {"20000229000000Z", DER_TAG_GENERALIZED_TIME},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const size_t n = strlen(cases[i].text);
        uint8_t buf[32] = {(uint8_t)cases[i].tag, (uint8_t)n};
        memcpy(buf + 2, cases[i].text, n);
        der_reader r = reader_of(cm_span_make(buf, 2 + n));
        int64_t t;
        TEST_ASSERT_OK(der_get_time(&r, &t));
        const int type = cases[i].tag == DER_TAG_UTC_TIME ? V_ASN1_UTCTIME : V_ASN1_GENERALIZEDTIME;
        CU_ASSERT_EQUAL(t, openssl_time(cases[i].text, type));
        // The typed writer reproduces the encoding.
        uint8_t out[32];
        der_builder b;
        der_builder_init_fixed(&b, out, sizeof(out));
        if (cases[i].tag == DER_TAG_UTC_TIME) {
            der_put_utctime(&b, t);
        } else {
            der_put_gentime(&b, t);
        }
        cm_span got;
        TEST_ASSERT_OK(der_builder_finish(&b, &got));
        CU_ASSERT_EQUAL(got.len, 2 + n);
        CU_ASSERT_EQUAL(memcmp(got.p, buf, 2 + n), 0);
    }
    // X.509 Time: UTCTime through 2049, GeneralizedTime from 2050.
    uint8_t out[64];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_put_time(&b, cm_time_from_civil(2049, 12, 31, 23, 59, 59));
    der_put_time(&b, cm_time_from_civil(2050, 1, 1, 0, 0, 0));
    cm_span got;
    TEST_ASSERT_OK(der_builder_finish(&b, &got));
    CU_ASSERT_EQUAL(got.p[0], DER_TAG_UTC_TIME);
    CU_ASSERT_EQUAL(got.p[15], DER_TAG_GENERALIZED_TIME);
}

static void test_der_rejects_bad_times(void)
{
    static const struct {
        const char *text;
        uint32_t tag;
    } bad[] = {
        {"4912312359Z", DER_TAG_UTC_TIME},               // no seconds
        {"491231235959", DER_TAG_UTC_TIME},              // no Z
        {"491231235959+0100", DER_TAG_UTC_TIME},         // offset
        {"491331235959Z", DER_TAG_UTC_TIME},             // month 13
        {"490230000000Z", DER_TAG_UTC_TIME},             // 30 February
        {"230229000000Z", DER_TAG_UTC_TIME},             // 29 February 2023
        {"491231245959Z", DER_TAG_UTC_TIME},             // hour 24
        {"491231236059Z", DER_TAG_UTC_TIME},             // minute 60
        {"491231235960Z", DER_TAG_UTC_TIME},             // leap second
        {"4912312359a9Z", DER_TAG_UTC_TIME},             // not a digit
        {"491200235959Z", DER_TAG_UTC_TIME},             // day 0
        {"20501231235959.5Z", DER_TAG_GENERALIZED_TIME}, // fraction
        {"20501231235959", DER_TAG_GENERALIZED_TIME},    // local time
        {"205012312359Z", DER_TAG_GENERALIZED_TIME},     // no seconds
        {"21000229000000Z", DER_TAG_GENERALIZED_TIME},   // 2100 is not a leap year
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const size_t n = strlen(bad[i].text);
        uint8_t buf[32] = {(uint8_t)bad[i].tag, (uint8_t)n};
        memcpy(buf + 2, bad[i].text, n);
        der_reader r = reader_of(cm_span_make(buf, 2 + n));
        int64_t t;
        TEST_ASSERT_CODE(der_get_time(&r, &t), CM_E_DER_TIME);
        CU_ASSERT_EQUAL(r.len, 2 + n);
    }
    der_reader r = reader_of(SPAN(0x04, 0x00));
    int64_t t;
    TEST_ASSERT_CODE(der_get_time(&r, &t), CM_E_DER_UNEXPECTED_TAG);
}

// --- builder ------------------------------------------------------------------------------

static void test_der_builder_patches_lengths(void)
{
    // Contents of 0, 127, 128, 255, 256 and 70000 bytes in nested SEQUENCEs; OpenSSL's
    // ASN1_get_object must agree with every length we wrote.
    static const size_t sizes[] = {0, 127, 128, 255, 256, 65535, 70000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (uint8_t hint = 1; hint <= 4; hint++) {
            der_builder b;
            der_builder_init(&b, 0);
            der_mark outer, inner;
            der_open_hint(&b, &outer, DER_TAG_SEQUENCE, hint);
            der_open(&b, &inner, DER_TAG_SEQUENCE);
            uint8_t *p = der_reserve(&b, sizes[i]);
            CU_ASSERT_FATAL(p != NULL || sizes[i] == 0);
            if (sizes[i] != 0) {
                memset(p, 0x41, sizes[i]);
            }
            der_close(&b, &inner);
            der_put_null(&b);
            der_close(&b, &outer);
            cm_span got;
            TEST_ASSERT_OK(der_builder_finish(&b, &got));
            const unsigned char *q = got.p;
            long len;
            int tag, cls;
            int ret = ASN1_get_object(&q, &len, &tag, &cls, (long)got.len);
            CU_ASSERT_EQUAL(ret, V_ASN1_CONSTRUCTED);
            CU_ASSERT_EQUAL(tag, V_ASN1_SEQUENCE);
            CU_ASSERT_EQUAL((size_t)(q - got.p) + (size_t)len, got.len);
            ret = ASN1_get_object(&q, &len, &tag, &cls, len);
            CU_ASSERT_EQUAL(ret, V_ASN1_CONSTRUCTED);
            CU_ASSERT_EQUAL((size_t)len, sizes[i]);
            // And our reader takes it back.
            der_reader r = reader_of(got), seq, in;
            TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
            TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &in));
            CU_ASSERT_EQUAL(in.len, sizes[i]);
            TEST_ASSERT_OK(der_get_null(&seq));
            TEST_ASSERT_OK(der_expect_end(&seq));
            der_builder_cleanup(&b);
        }
    }
}

static void test_der_builder_fixed_buffer_errors_are_sticky(void)
{
    uint8_t out[8];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_put_octets(&b, SPAN(1, 2, 3, 4, 5, 6, 7, 8)); // 10 bytes: too many
    CU_ASSERT_FALSE(der_builder_ok(&b));
    der_put_null(&b); // would fit, but the builder is poisoned
    cm_span got;
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_BUFFER_TOO_SMALL);
    // A close that needs a longer length than the fixed buffer has room for.
    uint8_t small[130];
    der_builder_init_fixed(&b, small, sizeof(small));
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    CU_ASSERT_PTR_NOT_NULL(der_reserve(&b, 128));
    der_close(&b, &m);
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_BUFFER_TOO_SMALL);
}

static void test_der_builder_rejects_misnested_close(void)
{
    uint8_t out[32];
    der_builder b;
    der_builder_init_fixed(&b, out, sizeof(out));
    der_mark a, c;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_open(&b, &c, DER_TAG_SET);
    der_close(&b, &a); // closes the outer one first
    cm_span got;
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_STATE);

    der_builder_init_fixed(&b, out, sizeof(out));
    der_open(&b, &a, DER_TAG_SEQUENCE);
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_STATE); // never closed
}

static void test_der_builder_arena_mode_grows(void)
{
    cm_arena arena;
    cm_arena_init(&arena, 1024, 1u << 20);
    der_builder b;
    der_builder_init_arena(&b, &arena, 16);
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    for (int i = 0; i < 1000; i++) {
        der_put_i64(&b, i);
    }
    der_close(&b, &m);
    cm_span got;
    TEST_ASSERT_OK(der_builder_finish(&b, &got));
    der_reader r = reader_of(got), seq;
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    for (int i = 0; i < 1000; i++) {
        int64_t v;
        TEST_ASSERT_OK(der_get_i64(&seq, &v));
        CU_ASSERT_EQUAL(v, i);
    }
    TEST_ASSERT_OK(der_expect_end(&seq));
    cm_arena_cleanup(&arena);

    // The arena cap stops the growth with NOMEM, sticky.
    cm_arena_init(&arena, 256, 512);
    der_builder_init_arena(&b, &arena, 16);
    for (int i = 0; i < 1000; i++) {
        der_put_i64(&b, i);
    }
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_NOMEM);
    cm_arena_cleanup(&arena);
}

static void test_der_builder_splices_raw_tlvs(void)
{
    // Copy a Name out of one structure into another verbatim.
    const cm_span src = SPAN(0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c,
                             0x04, 'd', 'e', 'v', '1');
    der_reader r = reader_of(src);
    cm_span name;
    TEST_ASSERT_OK(der_get_element(&r, DER_TAG_SEQUENCE, &name));
    CU_ASSERT_EQUAL(name.len, src.len);
    der_builder b;
    der_builder_init(&b, 4);
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_raw(&b, name);
    der_close(&b, &m);
    uint8_t *buf;
    size_t len;
    TEST_ASSERT_OK(der_builder_take(&b, &buf, &len));
    CU_ASSERT_EQUAL(len, 2 + src.len);
    CU_ASSERT_EQUAL(memcmp(buf + 2, src.p, src.len), 0);
    free(buf);
    der_builder_cleanup(&b); // a no-op after take
}

// --- real-world inputs made by the openssl CLI -------------------------------------------

// walk_copy re-encodes |r| generically into |b|; the depth is bounded by der_enter.
static bool walk_copy(der_reader *r, der_builder *b, size_t *count)
{
    while (!der_reader_empty(r)) {
        der_reader before = *r;
        uint32_t tag;
        cm_span body;
        if (!cm_ok(der_get_any(r, &tag, &body, NULL))) {
            return false;
        }
        (*count)++;
        if ((tag & DER_CONSTRUCTED) != 0) {
            der_reader child;
            if (!cm_ok(der_enter(&before, tag, &child))) {
                return false;
            }
            der_mark m;
            der_open(b, &m, tag);
            if (!walk_copy(&child, b, count)) { // NOLINT(misc-no-recursion)
                return false;
            }
            der_close(b, &m);
        } else {
            der_put_tlv(b, tag, body);
        }
    }
    return true;
}

static void assert_walk_roundtrip(const uint8_t *buf, size_t len, size_t min_elements)
{
    der_reader r = reader_of(cm_span_make(buf, len));
    der_builder b;
    der_builder_init(&b, 0);
    size_t count = 0;
    CU_ASSERT_TRUE_FATAL(walk_copy(&r, &b, &count));
    cm_span got;
    TEST_ASSERT_OK(der_builder_finish(&b, &got));
    CU_ASSERT_EQUAL(got.len, len);
    CU_ASSERT_EQUAL(memcmp(got.p, buf, len), 0);
    CU_ASSERT(count >= min_elements);
    der_builder_cleanup(&b);
}

static bool make_file(const char *name, uint8_t **out, size_t *out_len)
{
    char path[320];
    return test_read_file(test_path(path, sizeof(path), g_dir, name), out, out_len);
}

static int der_suite_init(void)
{
    if (!test_tmpdir(g_dir, sizeof(g_dir), "der")) {
        return 1;
    }
    char key[320], cert[320], certder[320], csr[320], crl_conf[320], log[320], dev[320], ir[320];
    char index[320], crlnum[320], crl[320], serial[320], ext[320], certout[320];
    test_path(certout, sizeof(certout), g_dir, "enrolled.pem");
    test_path(key, sizeof(key), g_dir, "ca.key");
    test_path(cert, sizeof(cert), g_dir, "ca.pem");
    test_path(certder, sizeof(certder), g_dir, "ca.der");
    test_path(csr, sizeof(csr), g_dir, "req.der");
    test_path(dev, sizeof(dev), g_dir, "dev.key");
    test_path(ir, sizeof(ir), g_dir, "ir.der");
    test_path(log, sizeof(log), g_dir, "openssl.log");
    test_path(crl_conf, sizeof(crl_conf), g_dir, "ca.cnf");
    test_path(index, sizeof(index), g_dir, "index.txt");
    test_path(crlnum, sizeof(crlnum), g_dir, "crlnumber");
    test_path(crl, sizeof(crl), g_dir, "crl.der");
    test_path(serial, sizeof(serial), g_dir, "serial");
    test_path(ext, sizeof(ext), g_dir, "ext.cnf");

    const char *const san[] = {"subjectAltName=DNS:ca.example,IP:127.0.0.1", NULL};
    const test_pki_cert_spec ca_spec = {.subject = "/C=DE/O=certmint test/CN=DER Test CA",
                                        .days = 30,
                                        .addext = san,
                                        .der_path = certder};
    const char *mkcsr[] = {"openssl",  "req",
                           "-new",     "-newkey",
                           "rsa:2048", "-nodes",
                           "-keyout",  dev,
                           "-subj",    "/CN=device-0001/serialNumber=0001",
                           "-addext",  "subjectAltName=DNS:device-0001.example",
                           "-outform", "DER",
                           "-out",     csr,
                           NULL};
    if (!test_pki_make_ca(key, cert, &ca_spec, log) || test_run(mkcsr, log) != 0) {
        fprintf(stderr, "openssl failed; see %s\n", log);
        return 1;
    }
    // A CRL with one revoked entry and a reason code.
    char conf[2048];
    int n = snprintf(conf, sizeof(conf),
                     "[ca]\ndefault_ca=d\n[d]\ndatabase=%s\ncrlnumber=%s\ndefault_md=sha256\n"
                     "default_crl_days=7\ncertificate=%s\nprivate_key=%s\nserial=%s\n"
                     "new_certs_dir=%s\npolicy=p\n[p]\ncommonName=supplied\n",
                     index, crlnum, cert, key, serial, g_dir);
    if (n < 0 || (size_t)n >= sizeof(conf) || !test_write_file(crl_conf, conf, (size_t)n) ||
        !test_write_file(index, "", 0) || !test_write_file(crlnum, "1000\n", 5) ||
        !test_write_file(serial, "01\n", 3)) {
        return 1;
    }
    const char *revoke[] = {"openssl", "ca",          "-config",       crl_conf, "-revoke",
                            cert,      "-crl_reason", "keyCompromise", NULL};
    char crlpem[320];
    test_path(crlpem, sizeof(crlpem), g_dir, "crl.pem");
    const char *gencrl[] = {"openssl", "ca", "-config", crl_conf, "-gencrl", "-out", crlpem, NULL};
    const char *crlder[] = {"openssl", "crl", "-in", crlpem, "-outform", "DER", "-out", crl, NULL};
    if (test_run(revoke, log) != 0 || test_run(gencrl, log) != 0 || test_run(crlder, log) != 0) {
        fprintf(stderr, "openssl ca failed; see %s\n", log);
        return 1;
    }
    // A CMP ir from the real client (its in-process mock server answers it).
    const char *mkdev[] = {"openssl", "genpkey",  "-algorithm",
                           "EC",      "-pkeyopt", "ec_paramgen_curve:P-256",
                           "-out",    dev,        NULL};
    const char *cmp[] = {"openssl",
                         "cmp",
                         "-cmd",
                         "ir",
                         "-use_mock_srv",
                         "-ref",
                         "line-7",
                         "-secret",
                         "pass:factory-secret",
                         "-srv_ref",
                         "line-7",
                         "-srv_secret",
                         "pass:factory-secret",
                         "-srv_cert",
                         cert,
                         "-srv_key",
                         key,
                         "-rsp_cert",
                         cert,
                         "-newkey",
                         dev,
                         "-subject",
                         "/CN=device-0002",
                         "-reqout",
                         ir,
                         "-certout",
                         certout,
                         "-unprotected_errors",
                         NULL};
    if (test_run(mkdev, log) != 0) {
        return 1;
    }
    (void)test_run(cmp, log); // the mock returns its own fixed cert; the ir is what we want
    uint8_t *tmp;
    size_t tmp_len;
    if (!test_read_file(ir, &tmp, &tmp_len)) {
        fprintf(stderr, "openssl cmp wrote no request; see %s\n", log);
        return 1;
    }
    free(tmp);
    return 0;
}

static int der_suite_cleanup(void)
{
    (void)test_rmtree(g_dir);
    return 0;
}

static void test_der_certificate_from_openssl(void)
{
    uint8_t *buf;
    size_t len;
    CU_ASSERT_TRUE_FATAL(make_file("ca.der", &buf, &len));
    assert_walk_roundtrip(buf, len, 20);

    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    // RFC 5280 §4.1, read field by field and compared with OpenSSL's view.
    const unsigned char *q = buf;
    X509 *x = d2i_X509(NULL, &q, (long)len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    der_reader r = reader_of(cm_span_make(buf, len)), cert, tbs, ver, sigalg, validity;
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &cert));
    TEST_ASSERT_OK(der_expect_end(&r));
    TEST_ASSERT_OK(der_enter(&cert, DER_TAG_SEQUENCE, &tbs));
    bool present;
    TEST_ASSERT_OK(der_enter_optional(&tbs, DER_CONTEXT_CONS(0), &ver, &present));
    CU_ASSERT_TRUE(present);
    int64_t version;
    TEST_ASSERT_OK(der_get_i64(&ver, &version));
    CU_ASSERT_EQUAL(version, X509_get_version(x));
    cm_span serial;
    TEST_ASSERT_OK(der_get_int_span(&tbs, &serial));
    CU_ASSERT(serial.len <= DER_MAX_SERIAL_LEN);
    const ASN1_INTEGER *ossl_serial = X509_get0_serialNumber(x);
    BIGNUM *bn = ASN1_INTEGER_to_BN(ossl_serial, NULL);
    BIGNUM *ours = BN_bin2bn(serial.p, (int)serial.len, NULL);
    CU_ASSERT_EQUAL(BN_cmp(bn, ours), 0);
    BN_free(bn);
    BN_free(ours);
    TEST_ASSERT_OK(der_enter(&tbs, DER_TAG_SEQUENCE, &sigalg));
    cm_span oid;
    TEST_ASSERT_OK(der_get_oid(&sigalg, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_ECDSA_WITH_SHA256));
    cm_span issuer, subject, spki;
    TEST_ASSERT_OK(der_get_element(&tbs, DER_TAG_SEQUENCE, &issuer));
    TEST_ASSERT_OK(der_enter(&tbs, DER_TAG_SEQUENCE, &validity));
    int64_t nb, na;
    TEST_ASSERT_OK(der_get_time(&validity, &nb));
    TEST_ASSERT_OK(der_get_time(&validity, &na));
    TEST_ASSERT_OK(der_expect_end(&validity));
    int pday, psec;
    CU_ASSERT_EQUAL(ASN1_TIME_diff(&pday, &psec, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
    CU_ASSERT_EQUAL(na - nb, (int64_t)pday * 86400 + psec);
    CU_ASSERT(llabs((long long)(nb - (int64_t)time(NULL))) < 3600);
    TEST_ASSERT_OK(der_get_element(&tbs, DER_TAG_SEQUENCE, &subject));
    CU_ASSERT_TRUE(cm_span_eq(issuer, subject)); // self-signed
    // The subject bytes are exactly what OpenSSL encodes for the name.
    unsigned char *name_der = NULL;
    int nl = i2d_X509_NAME(X509_get_subject_name(x), &name_der);
    CU_ASSERT_EQUAL((size_t)nl, subject.len);
    CU_ASSERT_EQUAL(memcmp(name_der, subject.p, subject.len), 0);
    OPENSSL_free(name_der);
    TEST_ASSERT_OK(der_get_element(&tbs, DER_TAG_SEQUENCE, &spki));
    unsigned char *spki_der = NULL;
    int sl = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki_der);
    CU_ASSERT_EQUAL((size_t)sl, spki.len);
    CU_ASSERT_EQUAL(memcmp(spki_der, spki.p, spki.len), 0);
    OPENSSL_free(spki_der);
    der_reader exts_wrap, exts;
    TEST_ASSERT_OK(der_enter(&tbs, DER_CONTEXT_CONS(3), &exts_wrap));
    TEST_ASSERT_OK(der_enter(&exts_wrap, DER_TAG_SEQUENCE, &exts));
    int num_ext = 0;
    bool saw_san = false;
    while (!der_reader_empty(&exts)) {
        der_reader ext;
        TEST_ASSERT_OK(der_enter(&exts, DER_TAG_SEQUENCE, &ext));
        TEST_ASSERT_OK(der_get_oid(&ext, &oid));
        saw_san |= der_oid_is(oid, DER_OID_CE_SUBJECT_ALT_NAME);
        if (der_peek_is(&ext, DER_TAG_BOOLEAN)) {
            bool critical;
            TEST_ASSERT_OK(der_get_bool(&ext, &critical));
            CU_ASSERT_TRUE(critical); // DEFAULT FALSE is never encoded in DER
        }
        cm_span value;
        TEST_ASSERT_OK(der_get_octets(&ext, &value));
        TEST_ASSERT_OK(der_expect_end(&ext));
        num_ext++;
    }
    CU_ASSERT_EQUAL(num_ext, X509_get_ext_count(x));
    CU_ASSERT_TRUE(saw_san);
    TEST_ASSERT_OK(der_expect_end(&tbs));
    der_reader outer_alg;
    TEST_ASSERT_OK(der_enter(&cert, DER_TAG_SEQUENCE, &outer_alg));
    cm_span sig;
    uint8_t unused;
    TEST_ASSERT_OK(der_get_bitstring(&cert, &sig, &unused));
    CU_ASSERT_EQUAL(unused, 0);
    TEST_ASSERT_OK(der_expect_end(&cert));
    X509_free(x);

    // Any single corrupted length byte makes the strict walk fail or change the bytes.
    for (size_t i = 0; i < len; i += 7) {
        buf[i] ^= 0x80;
        der_reader rr = reader_of(cm_span_make(buf, len));
        der_builder b;
        der_builder_init(&b, 0);
        size_t count = 0;
        if (walk_copy(&rr, &b, &count)) {
            cm_span got;
            TEST_ASSERT_OK(der_builder_finish(&b, &got));
            CU_ASSERT_TRUE(got.len == len && memcmp(got.p, buf, len) == 0);
        }
        der_builder_cleanup(&b);
        buf[i] ^= 0x80;
    }
    free(buf);
}

static void test_der_csr_crl_and_cmp_request_from_openssl(void)
{
    static const char *const files[] = {"req.der", "crl.der", "ir.der"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        uint8_t *buf;
        size_t len;
        CU_ASSERT_TRUE_FATAL(make_file(files[i], &buf, &len));
        assert_walk_roundtrip(buf, len, 10);
        free(buf);
    }
    // PKIMessage ::= SEQUENCE { header PKIHeader, body PKIBody, protection [0], extraCerts [1] }
    // RFC 4210 §5.1; the header begins with pvno, sender, recipient (RFC 4210 §5.1.1).
    uint8_t *buf;
    size_t len;
    CU_ASSERT_TRUE_FATAL(make_file("ir.der", &buf, &len));
    const unsigned char *q = buf;
    OSSL_CMP_MSG *msg = d2i_OSSL_CMP_MSG(NULL, &q, (long)len);
    CU_ASSERT_PTR_NOT_NULL(msg);
    CU_ASSERT_EQUAL(OSSL_CMP_MSG_get_bodytype(msg), 0); // ir (RFC 4210 §5.1.2: [0])
    OSSL_CMP_MSG_free(msg);
    der_reader r = reader_of(cm_span_make(buf, len)), pkimsg, hdr;
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &pkimsg));
    TEST_ASSERT_OK(der_enter(&pkimsg, DER_TAG_SEQUENCE, &hdr));
    uint64_t pvno;
    TEST_ASSERT_OK(der_get_u64(&hdr, &pvno));
    CU_ASSERT_EQUAL(pvno, 2);
    uint32_t tag;
    TEST_ASSERT_OK(der_peek_tag(&pkimsg, &tag));
    CU_ASSERT_EQUAL(tag, DER_CONTEXT_CONS(0)); // body: ir [0] CertReqMessages
    cm_span body, prot;
    TEST_ASSERT_OK(der_get_tlv(&pkimsg, DER_CONTEXT_CONS(0), &body));
    der_reader pw;
    TEST_ASSERT_OK(der_enter(&pkimsg, DER_CONTEXT_CONS(0), &pw));
    uint8_t unused;
    TEST_ASSERT_OK(der_get_bitstring(&pw, &prot, &unused));
    CU_ASSERT_EQUAL(prot.len, 20); // OpenSSL 3.0 PBM default MAC: HMAC-SHA1
    free(buf);
}

int test_der_register(void);
int test_der_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_der_reads_short_and_long_lengths),
        TEST_CASE(test_der_rejects_indefinite_length),
        TEST_CASE(test_der_rejects_nonminimal_length),
        TEST_CASE(test_der_rejects_length_over_four_octets),
        TEST_CASE(test_der_rejects_truncation_at_every_byte),
        TEST_CASE(test_der_rejects_content_past_input),
        TEST_CASE(test_der_rejects_bad_tags),
        TEST_CASE(test_der_reads_high_tag_numbers),
        TEST_CASE(test_der_rejects_unexpected_tag_and_missing_element),
        TEST_CASE(test_der_rejects_trailing_bytes),
        TEST_CASE(test_der_rejects_nesting_beyond_depth_limit),
        TEST_CASE(test_der_enter_requires_constructed_tag),
        TEST_CASE(test_der_optional_elements),
        TEST_CASE(test_der_integers_match_openssl),
        TEST_CASE(test_der_unsigned_integers),
        TEST_CASE(test_der_rejects_nonminimal_integer),
        TEST_CASE(test_der_big_integers_match_openssl_bignum),
        TEST_CASE(test_der_booleans_are_strict),
        TEST_CASE(test_der_null_and_enumerated),
        TEST_CASE(test_der_bitstrings),
        TEST_CASE(test_der_rejects_bad_bitstrings),
        TEST_CASE(test_der_named_bit_lists),
        TEST_CASE(test_der_oids_match_openssl),
        TEST_CASE(test_der_oid_table_matches_openssl),
        TEST_CASE(test_der_rejects_bad_oids),
        TEST_CASE(test_der_strings),
        TEST_CASE(test_der_rejects_bad_strings),
        TEST_CASE(test_der_times_match_openssl),
        TEST_CASE(test_der_rejects_bad_times),
        TEST_CASE(test_der_builder_patches_lengths),
        TEST_CASE(test_der_builder_fixed_buffer_errors_are_sticky),
        TEST_CASE(test_der_builder_rejects_misnested_close),
        TEST_CASE(test_der_builder_arena_mode_grows),
        TEST_CASE(test_der_builder_splices_raw_tlvs),
        TEST_CASE(test_der_certificate_from_openssl),
        TEST_CASE(test_der_csr_crl_and_cmp_request_from_openssl),
    };
    return test_register_suite("der", der_suite_init, der_suite_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
