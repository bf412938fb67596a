// Suite "crmf": CertReqMessages, PKCS#10, signature algorithms, key construction and POPO.
// Inputs are real requests made during suite init by `openssl cmp -reqout` (ir/cr/kur/p10cr
// with EC P-256, RSA-2048 and Ed25519 keys, against the in-process mock server) and CSRs made
// by `openssl req`; OpenSSL's own CRMF decoder and POPO check (d2i_OSSL_CRMF_MSGS,
// OSSL_CRMF_MSGS_verify_popo), d2i_PUBKEY and d2i_X509_REQ/X509_REQ_verify are the oracles.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/crmf.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

#define SPAN(...) \
    cm_span_make((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

// The requests made at suite init: a whole PKIMessage each, and the key it requests.
enum { REQ_IR_EC, REQ_IR_RSA, REQ_IR_ED, REQ_CR_EC, REQ_KUR_EC, REQ_COUNT };
enum { CSR_EC, CSR_RSA, CSR_ED, CSR_PSS, CSR_COUNT };

typedef struct test_blob {
    uint8_t *p;
    size_t len;
} test_blob;

static char g_dir[256];
static test_blob g_req[REQ_COUNT];     // PKIMessage DER
static test_blob g_req_key[REQ_COUNT]; // the requested public key, SPKI DER (oracle)
static test_blob g_p10cr;              // a p10cr PKIMessage
static test_blob g_ir_ra;              // an ir with raVerified POPO (-popo 0)
static test_blob g_csr[CSR_COUNT];
static test_blob g_csr_key[CSR_COUNT];
static test_blob g_k1_spki; // a secp256k1 key (valid, but not a curve we build)
static EVP_PKEY *g_ec_priv, *g_rsa_priv, *g_ed_priv;

static cm_arena g_arena;
static crmf_crypto g_crypto;

static const char *const k_req_name[REQ_COUNT] = {"ir-ec", "ir-rsa", "ir-ed", "cr-ec", "kur-ec"};

// --- helpers ------------------------------------------------------------------------------

// body_of returns the content of the PKIBody of a PKIMessage (the CertReqMessages of an
// ir/cr/kur, the CertificationRequest of a p10cr). PKIMessage ::= SEQUENCE { header
// PKIHeader, body PKIBody, ... }; PKIBody is an EXPLICIT-tagged CHOICE (RFC 9810 §5.1).
static cm_span body_of(cm_span msg, uint32_t *out_tag)
{
    der_reader r, m;
    der_reader_init(&r, msg);
    cm_span header, body = {NULL, 0};
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &m)) ||
        !cm_ok(der_get_tlv(&m, DER_TAG_SEQUENCE, &header)) ||
        !cm_ok(der_get_any(&m, out_tag, &body, NULL))) {
        CU_FAIL_FATAL("not a PKIMessage");
    }
    return body;
}

static cm_span req_body(int i)
{
    uint32_t tag;
    return body_of(cm_span_make(g_req[i].p, g_req[i].len), &tag);
}

static crmf_cert_req_msgs parse_req(int i)
{
    crmf_cert_req_msgs msgs;
    TEST_ASSERT_OK(crmf_msgs_from_der(&g_arena, &msgs, req_body(i)));
    return msgs;
}

static bool span_is(cm_span a, const uint8_t *p, size_t len)
{
    return a.len == len && (len == 0 || memcmp(a.p, p, len) == 0);
}

// marshal_msgs re-encodes |msgs| into arena memory.
static cm_span marshal_msgs(const crmf_cert_req_msgs *msgs)
{
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 256);
    crmf_msgs_marshal(&b, msgs);
    cm_span out = {NULL, 0};
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

// ossl_popo runs OpenSSL's POPO check over CertReqMessages DER: 1 verified, 0 refused, -1 not
// decodable by OpenSSL.
static int ossl_popo(cm_span der, int rid)
{
    const unsigned char *p = der.p;
    OSSL_CRMF_MSGS *m = d2i_OSSL_CRMF_MSGS(NULL, &p, (long)der.len);
    if (m == NULL) {
        ERR_clear_error();
        return -1;
    }
    int ok = OSSL_CRMF_MSGS_verify_popo(m, rid, 0, NULL, NULL);
    OSSL_CRMF_MSGS_free(m);
    ERR_clear_error();
    return ok == 1 ? 1 : 0;
}

static void crmf_setup(void)
{
    cm_arena_init(&g_arena, 0, 64u << 20);
}

static void crmf_teardown(void)
{
    cm_arena_cleanup(&g_arena);
}

// --- CertReqMessages from openssl cmp -------------------------------------------------------

static void test_crmf_parses_openssl_requests(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        crmf_cert_req_msgs msgs = parse_req(i);
        CU_ASSERT_EQUAL_FATAL(msgs.num_msgs, 1);
        const crmf_cert_req_msg *m = &msgs.msgs[0];
        CU_ASSERT_EQUAL(m->req.cert_req_id, 0);
        CU_ASSERT_EQUAL(m->popo.type, CRMF_POPO_SIGNATURE);
        CU_ASSERT_FALSE(m->popo.has_poposk_input);
        CU_ASSERT_EQUAL(m->num_reg_info, 0);
        const crmf_template *tm = &m->req.tmpl;
        CU_ASSERT(tm->subject.len > 0);
        TEST_ASSERT_OK(crmf_name_check(tm->subject));
        // The template's [6] body rebuilt as a SEQUENCE is the key's SPKI, byte for byte.
        cm_span spki;
        TEST_ASSERT_OK(crmf_spki_to_der(&g_arena, &spki, tm->public_key));
        CU_ASSERT(span_is(spki, g_req_key[i].p, g_req_key[i].len));
        // The OpenSSL decoder agrees on the subject.
        const unsigned char *p = req_body(i).p;
        OSSL_CRMF_MSGS *om = d2i_OSSL_CRMF_MSGS(NULL, &p, (long)req_body(i).len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(om);
        OSSL_CRMF_CERTTEMPLATE *ot = OSSL_CRMF_MSG_get0_tmpl(sk_OSSL_CRMF_MSG_value(om, 0));
        unsigned char *name_der = NULL;
        int name_len = i2d_X509_NAME(OSSL_CRMF_CERTTEMPLATE_get0_subject(ot), &name_der);
        CU_ASSERT(name_len > 0 && span_is(tm->subject, name_der, (size_t)name_len));
        OPENSSL_free(name_der);
        OSSL_CRMF_MSGS_free(om);
    }
    // The RSA ir asked for 30 days and a SAN; kur carries oldCertID, the others do not.
    crmf_cert_req_msgs rsa = parse_req(REQ_IR_RSA);
    const crmf_template *tm = &rsa.msgs[0].req.tmpl;
    CU_ASSERT_TRUE(tm->has_not_before && tm->has_not_after);
    CU_ASSERT_EQUAL(tm->not_after - tm->not_before, 30 * 86400LL);
    crmf_extension san;
    bool found;
    TEST_ASSERT_OK(crmf_extensions_find(tm->extensions, CM_SPAN_LIT(DER_OID_CE_SUBJECT_ALT_NAME),
                                        &san, &found));
    CU_ASSERT_TRUE(found);
    CU_ASSERT_EQUAL(tm->spki.type, CRMF_KEY_RSA);
    CU_ASSERT_FALSE(rsa.msgs[0].req.has_old_cert_id);

    crmf_cert_req_msgs kur = parse_req(REQ_KUR_EC);
    const crmf_cert_request *kr = &kur.msgs[0].req;
    CU_ASSERT_TRUE_FATAL(kr->has_old_cert_id);
    CU_ASSERT_EQUAL(kr->num_controls, 1);
    CU_ASSERT_EQUAL(kr->old_cert_id.issuer.tag, CRMF_GN_DIRECTORY_NAME);
    CU_ASSERT(kr->old_cert_id.serial.len > 0);
    CU_ASSERT_EQUAL(kr->tmpl.spki.type, CRMF_KEY_EC);
    CU_ASSERT_STRING_EQUAL(kr->tmpl.spki.ec_group, "P-256");
    CU_ASSERT_EQUAL(parse_req(REQ_IR_ED).msgs[0].req.tmpl.spki.type, CRMF_KEY_ED25519);
}

static void test_crmf_round_trips_openssl_requests(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        cm_span in = req_body(i);
        crmf_cert_req_msgs msgs = parse_req(i);
        cm_span out = marshal_msgs(&msgs);
        CU_ASSERT(span_is(out, in.p, in.len));
        // Each element's own marshal reproduces its whole span too.
        const crmf_cert_req_msg *m = &msgs.msgs[0];
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 64);
        crmf_cert_request_marshal(&b, &m->req);
        TEST_ASSERT_OK(der_builder_finish(&b, &out));
        CU_ASSERT(span_is(out, m->req.whole.p, m->req.whole.len));
        der_builder_init_arena(&b, &g_arena, 64);
        crmf_template_marshal(&b, &m->req.tmpl);
        TEST_ASSERT_OK(der_builder_finish(&b, &out));
        CU_ASSERT(span_is(out, m->req.tmpl.whole.p, m->req.tmpl.whole.len));
        der_builder_init_arena(&b, &g_arena, 64);
        crmf_popo_marshal(&b, &m->popo);
        TEST_ASSERT_OK(der_builder_finish(&b, &out));
        CU_ASSERT(span_is(out, m->popo.whole.p, m->popo.whole.len));
    }
}

static void test_crmf_popo_of_openssl_requests_verifies(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        crmf_cert_req_msgs msgs = parse_req(i);
        cm_result r = crmf_popo_verify(&g_crypto, &msgs.msgs[0], NULL);
        if (!cm_ok(r)) {
            fprintf(stderr, "\n  %s: %s\n", k_req_name[i], cm_result_name(r));
        }
        CU_ASSERT_TRUE(cm_ok(r));
        CU_ASSERT_EQUAL(ossl_popo(req_body(i), 0), 1);
    }
}

// Flipping any bit of the signed CertRequest must break the POPO: as a bad signature, or
// (where the flip hits the key or the structure) as a malformed key or request. OpenSSL must
// agree that the result does not verify.
static void test_crmf_popo_fails_on_any_flipped_byte(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        cm_span in = req_body(i);
        crmf_cert_req_msgs orig = parse_req(i);
        const cm_span cr = orig.msgs[0].req.whole;
        const cm_span sig = orig.msgs[0].popo.signature; // both point into g_req
        const size_t off = (size_t)(cr.p - in.p);
        uint8_t *copy = malloc(in.len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        size_t bad_sig = 0;
        for (size_t k = 0; k < cr.len; k++) {
            memcpy(copy, in.p, in.len);
            copy[off + k] ^= 0x01;
            cm_arena_reset(&g_arena);
            crmf_cert_req_msgs msgs;
            cm_result pr = crmf_msgs_from_der(&g_arena, &msgs, cm_span_make(copy, in.len));
            if (!cm_ok(pr)) {
                CU_ASSERT_EQUAL(cm_code_failinfo(pr.code) >= 0, true);
                continue;
            }
            cm_result vr = crmf_popo_verify(&g_crypto, &msgs.msgs[0], NULL);
            bool expected = vr.code == CRMF_E_POPO_BAD_SIGNATURE || vr.code == CRMF_E_BAD_SPKI ||
                            vr.code == CRMF_E_KEY_UNSUPPORTED;
            if (!expected) {
                fprintf(stderr, "\n  %s byte %zu: %s\n", k_req_name[i], k, cm_result_name(vr));
            }
            CU_ASSERT_TRUE(expected);
            bad_sig += vr.code == CRMF_E_POPO_BAD_SIGNATURE;
            CU_ASSERT_EQUAL(cm_code_failinfo(vr.code) == CM_FAIL_BAD_POP ||
                                cm_code_failinfo(vr.code) == CM_FAIL_BAD_DATA_FORMAT ||
                                cm_code_failinfo(vr.code) == CM_FAIL_BAD_ALG,
                            true);
            CU_ASSERT_NOT_EQUAL(ossl_popo(cm_span_make(copy, in.len), 0), 1);
        }
        // Flips in names, integers and (for RSA) the key give a bad signature; flips in an EC
        // or EdDSA point mostly a point that is not on the curve.
        CU_ASSERT(bad_sig >= 10);
        // And a flipped signature bit.
        memcpy(copy, in.p, in.len);
        copy[(size_t)(sig.p - in.p) + sig.len / 2] ^= 0x10;
        crmf_cert_req_msgs msgs;
        TEST_ASSERT_OK(crmf_msgs_from_der(&g_arena, &msgs, cm_span_make(copy, in.len)));
        TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &msgs.msgs[0], NULL),
                         CRMF_E_POPO_BAD_SIGNATURE);
        free(copy);
    }
}

static void test_crmf_rejects_truncation_at_every_byte(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        cm_span in = req_body(i);
        for (size_t cut = 0; cut < in.len; cut++) {
            crmf_cert_req_msgs msgs;
            cm_result r = crmf_msgs_from_der(&g_arena, &msgs, cm_span_make(in.p, cut));
            CU_ASSERT_EQUAL(cm_result_class(r), CM_CLASS_PROTO);
            CU_ASSERT_EQUAL(cm_code_failinfo(r.code), CM_FAIL_BAD_DATA_FORMAT);
        }
        // The reader is left unchanged on failure.
        der_reader r;
        der_reader_init(&r, cm_span_make(in.p, in.len - 1));
        crmf_cert_req_msgs msgs;
        TEST_ASSERT_CODE(crmf_msgs_parse(&g_arena, &r, &msgs), CM_E_DER_TRUNCATED);
        CU_ASSERT_PTR_EQUAL(r.p, in.p);
        // A trailing byte after CertReqMessages.
        uint8_t *longer = cm_arena_alloc(&g_arena, in.len + 1);
        memcpy(longer, in.p, in.len);
        longer[in.len] = 0;
        TEST_ASSERT_CODE(crmf_msgs_from_der(&g_arena, &msgs, cm_span_make(longer, in.len + 1)),
                         CM_E_DER_TRAILING);
    }
}

// --- CertReqMessages counts ----------------------------------------------------------------

// msgs_of_n builds CertReqMessages holding |n| copies of the EC ir's CertReqMsg.
static cm_span msgs_of_n(size_t n)
{
    crmf_cert_req_msgs one = parse_req(REQ_IR_EC);
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 512);
    der_mark m;
    der_open_hint(&b, &m, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < n; i++) {
        der_put_raw(&b, one.msgs[0].whole);
    }
    der_close(&b, &m);
    cm_span out = {NULL, 0};
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

static void test_crmf_caps_and_requires_cert_req_msgs(void)
{
    crmf_cert_req_msgs msgs;
    TEST_ASSERT_OK(crmf_msgs_from_der(&g_arena, &msgs, msgs_of_n(CRMF_MAX_REQ_MSGS)));
    CU_ASSERT_EQUAL(msgs.num_msgs, CRMF_MAX_REQ_MSGS);
    cm_span many = msgs_of_n(CRMF_MAX_REQ_MSGS);
    CU_ASSERT(span_is(marshal_msgs(&msgs), many.p, many.len));
    TEST_ASSERT_CODE(crmf_msgs_from_der(&g_arena, &msgs, msgs_of_n(CRMF_MAX_REQ_MSGS + 1)),
                     CM_E_DER_TOO_MANY);
    TEST_ASSERT_CODE(crmf_msgs_from_der(&g_arena, &msgs, SPAN(0x30, 0x00)), CRMF_E_EMPTY);
    TEST_ASSERT_CODE(crmf_msgs_from_der(&g_arena, &msgs, SPAN(0x31, 0x00)),
                     CM_E_DER_UNEXPECTED_TAG);
    // Marshalling nothing is a caller bug.
    crmf_cert_req_msgs none = {{NULL, 0}, 0, NULL};
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 16);
    crmf_msgs_marshal(&b, &none);
    cm_span out;
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_INVALID_ARG);
}

// --- CertTemplate rules -------------------------------------------------------------------

// tmpl_parse parses CertTemplate DER |der| made by the builder and, on success, checks that
// marshal reproduces it.
static cm_result tmpl_parse(cm_span der, crmf_template *out)
{
    der_reader r;
    der_reader_init(&r, der);
    cm_result res = crmf_template_parse(&r, out);
    if (cm_ok(res)) {
        CU_ASSERT_TRUE(der_reader_empty(&r));
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 64);
        crmf_template_marshal(&b, out);
        cm_span again;
        TEST_ASSERT_OK(der_builder_finish(&b, &again));
        CU_ASSERT(span_is(again, der.p, der.len));
    }
    return res;
}

// A CertTemplate SEQUENCE around |fields| (pre-encoded).
static cm_span tmpl_of(cm_span fields)
{
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 64);
    der_put_tlv(&b, DER_TAG_SEQUENCE, fields);
    cm_span out = {NULL, 0};
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

// [5] { Name CN=x }
#define SUBJECT_X \
    0xa5, 0x0e, 0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, 'x'

static void test_crmf_template_fields(void)
{
    crmf_template tm;
    // The empty template and each optional field.
    TEST_ASSERT_OK(tmpl_parse(SPAN(0x30, 0x00), &tm));
    TEST_ASSERT_OK(tmpl_parse(tmpl_of(SPAN(0x80, 0x01, 0x02, SUBJECT_X)), &tm));
    CU_ASSERT_TRUE(tm.has_version);
    CU_ASSERT_EQUAL(tm.version, 2);
    // serialNumber, signingAlg, issuer, validity (UTCTime and GeneralizedTime), subject.
    TEST_ASSERT_OK(tmpl_parse(
        tmpl_of(SPAN(0x81, 0x01, 0x05,                                                       //
                     0xa2, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, //
                     0xa3, 0x0e, 0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03,
                     0x0c, 0x01, 'i', //
                     0xa4, 0x24, 0xa0, 0x0f, 0x17, 0x0d, '2', '6', '0', '1', '0', '1', '0', '0',
                     '0', '0', '0', '0', 'Z', 0xa1, 0x11, 0x18, 0x0f, '2', '0', '6', '0', '0', '1',
                     '0', '1', '0', '0', '0', '0', '0', '0', 'Z', //
                     SUBJECT_X)),
        &tm));
    CU_ASSERT(span_is(tm.serial, (const uint8_t *)"\x05", 1));
    CU_ASSERT_EQUAL(tm.not_before_tag, DER_TAG_UTC_TIME);
    CU_ASSERT_EQUAL(tm.not_after_tag, DER_TAG_GENERALIZED_TIME);
    CU_ASSERT_EQUAL(tm.not_before, cm_time_from_civil(2026, 1, 1, 0, 0, 0));
    CU_ASSERT(tm.issuer.len == 14 && tm.subject.len == 14);
    // A hand-built template: validity with no Time form chosen takes RFC 5280's choice.
    crmf_template hand;
    memset(&hand, 0, sizeof(hand));
    hand.has_not_before = true;
    hand.not_before = cm_time_from_civil(2049, 12, 31, 23, 59, 59);
    hand.has_not_after = true;
    hand.not_after = cm_time_from_civil(2050, 1, 1, 0, 0, 0);
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 64);
    crmf_template_marshal(&b, &hand);
    cm_span der;
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    TEST_ASSERT_OK(tmpl_parse(der, &tm));
    CU_ASSERT_EQUAL(tm.not_before_tag, DER_TAG_UTC_TIME);
    CU_ASSERT_EQUAL(tm.not_after_tag, DER_TAG_GENERALIZED_TIME);
    CU_ASSERT_EQUAL(tm.not_after, hand.not_after);
    // The NULL-DN subject is a valid Name.
    TEST_ASSERT_OK(tmpl_parse(tmpl_of(SPAN(0xa5, 0x02, 0x30, 0x00)), &tm));
    CU_ASSERT_EQUAL(tm.subject.len, 2);
}

static void test_crmf_template_rejections(void)
{
    crmf_template tm;
    // version other than v3(2).
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0x80, 0x01, 0x01)), &tm), CRMF_E_TEMPLATE_VERSION);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0x80, 0x01, 0xff)), &tm), CRMF_E_TEMPLATE_VERSION);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0x80, 0x02, 0x00, 0x02)), &tm), CM_E_DER_INTEGER);
    // issuerUID [7] / subjectUID [8], primitive or constructed.
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(SUBJECT_X, 0x87, 0x02, 0x00, 0x01)), &tm),
                     CRMF_E_TEMPLATE_UID);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0x88, 0x02, 0x00, 0x01)), &tm), CRMF_E_TEMPLATE_UID);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa8, 0x00)), &tm), CRMF_E_TEMPLATE_UID);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_TEMPLATE_UID), CM_FAIL_BAD_CERT_TEMPLATE);
    // OptionalValidity with neither time.
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa4, 0x00)), &tm), CRMF_E_BAD_VALIDITY);
    // Time not a Time.
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa4, 0x05, 0xa0, 0x03, 0x02, 0x01, 0x00)), &tm),
                     CRMF_E_BAD_CHOICE);
    // Time with an IMPLICIT tag instead of EXPLICIT.
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa4, 0x0f, 0x80, 0x0d, '2', '6', '0', '1', '0', '1',
                                             '0', '0', '0', '0', '0', '0', 'Z')),
                                &tm),
                     CM_E_DER_UNEXPECTED_TAG);
    // subject with an IMPLICIT tag (a SET where the Name SEQUENCE should be).
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa5, 0x02, 0x31, 0x00)), &tm), CRMF_E_BAD_NAME);
    // subject Name: an RDN that is empty, or not a SET.
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa5, 0x04, 0x30, 0x02, 0x31, 0x00)), &tm),
                     CRMF_E_BAD_NAME);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa5, 0x04, 0x30, 0x02, 0x30, 0x00)), &tm),
                     CRMF_E_BAD_NAME);
    // Two Names inside [5].
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa5, 0x04, 0x30, 0x00, 0x30, 0x00)), &tm),
                     CM_E_DER_TRAILING);
    // Fields out of order (subject before issuer) and an unknown field [10].
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa5, 0x02, 0x30, 0x00, 0xa3, 0x02, 0x30, 0x00)), &tm),
                     CM_E_DER_UNEXPECTED_TAG);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xaa, 0x00)), &tm), CM_E_DER_UNEXPECTED_TAG);
    // Empty extensions, a duplicate extension, an explicit critical FALSE.
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa9, 0x00)), &tm), CRMF_E_EMPTY);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa9, 0x14,                               //
                                             0x30, 0x08, 0x06, 0x03, 0x55, 0x1d, 0x0f, //
                                             0x04, 0x01, 0x00,                         //
                                             0x30, 0x08, 0x06, 0x03, 0x55, 0x1d, 0x0f, //
                                             0x04, 0x01, 0x01)),
                                &tm),
                     CRMF_E_DUPLICATE_EXTENSION);
    TEST_ASSERT_CODE(tmpl_parse(tmpl_of(SPAN(0xa9, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x1d, 0x0f,
                                             0x01, 0x01, 0x00, 0x04, 0x01, 0x00)),
                                &tm),
                     CM_E_DER_BOOLEAN);
    // publicKey [6] with a malformed SPKI (an EC point of the wrong size).
    TEST_ASSERT_CODE(
        tmpl_parse(tmpl_of(SPAN(0xa6, 0x1a, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
                                0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
                                0x07, 0x03, 0x03, 0x00, 0x04, 0x01)),
                   &tm),
        CRMF_E_BAD_SPKI);
}

// --- Controls, POPO choices, certReqId ----------------------------------------------------

// remarshal_msg writes |m| as the only CertReqMsg of a CertReqMessages and parses that again.
static cm_result remarshal_msg(const crmf_cert_req_msg *m, crmf_cert_req_msgs *out)
{
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 512);
    der_mark seq;
    der_open(&b, &seq, DER_TAG_SEQUENCE);
    crmf_msg_marshal(&b, m);
    der_close(&b, &seq);
    cm_span der;
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    cm_result r = crmf_msgs_from_der(&g_arena, out, der);
    if (cm_ok(r)) {
        CU_ASSERT(span_is(marshal_msgs(out), der.p, der.len));
    }
    return r;
}

static void test_crmf_popo_choices_are_reported(void)
{
    crmf_cert_req_msgs msgs = parse_req(REQ_IR_EC);
    crmf_cert_req_msg m = msgs.msgs[0], *got;
    crmf_cert_req_msgs out;

    m.popo.type = CRMF_POPO_ABSENT;
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    got = &out.msgs[0];
    CU_ASSERT_EQUAL(got->popo.type, CRMF_POPO_ABSENT);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, got, NULL), CRMF_E_POPO_MISSING);

    m.popo.type = CRMF_POPO_RA_VERIFIED;
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL), CRMF_E_POPO_RA_VERIFIED);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_POPO_RA_VERIFIED), CM_FAIL_BAD_POP);

    // keyEncipherment with subsequentMessage encrCert(0); keyAgreement with dhMAC.
    m.popo.type = CRMF_POPO_KEY_ENCIPHERMENT;
    m.popo.priv_key = SPAN(0x81, 0x01, 0x00);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    CU_ASSERT_EQUAL(out.msgs[0].popo.priv_key_choice, 1);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL), CRMF_E_POPO_INDIRECT);
    m.popo.type = CRMF_POPO_KEY_AGREEMENT;
    m.popo.priv_key = SPAN(0x82, 0x02, 0x00, 0xaa);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    CU_ASSERT_EQUAL(out.msgs[0].popo.type, CRMF_POPO_KEY_AGREEMENT);
    // POPOPrivKey needs its EXPLICIT CHOICE tag: a bare BIT STRING is refused.
    m.popo.priv_key = SPAN(0x03, 0x01, 0x00);
    TEST_ASSERT_CODE(remarshal_msg(&m, &out), CRMF_E_BAD_CHOICE);
    m.popo.priv_key = SPAN(0x81, 0x01, 0x02); // SubsequentMessage 2 does not exist
    TEST_ASSERT_CODE(remarshal_msg(&m, &out), CRMF_E_BAD_CHOICE);

    // regInfo kept as spans, with or without a POPO before it.
    crmf_attr reg = {{NULL, 0}, CM_SPAN_LIT(DER_OID_REGINFO_UTF8_PAIRS), SPAN(0x0c, 0x01, 'a')};
    m.reg_info = &reg;
    m.num_reg_info = 1;
    m.popo.type = CRMF_POPO_ABSENT;
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    CU_ASSERT_EQUAL(out.msgs[0].num_reg_info, 1);
    CU_ASSERT(span_is(out.msgs[0].reg_info[0].value,
                      (const uint8_t *)"\x0c\x01"
                                       "a",
                      3));
}

static void test_crmf_ra_verified_from_openssl(void)
{
    uint32_t tag;
    cm_span body = body_of(cm_span_make(g_ir_ra.p, g_ir_ra.len), &tag);
    crmf_cert_req_msgs msgs;
    TEST_ASSERT_OK(crmf_msgs_from_der(&g_arena, &msgs, body));
    CU_ASSERT_EQUAL(msgs.msgs[0].popo.type, CRMF_POPO_RA_VERIFIED);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &msgs.msgs[0], NULL), CRMF_E_POPO_RA_VERIFIED);
    CU_ASSERT(span_is(marshal_msgs(&msgs), body.p, body.len));
    // OpenSSL refuses it too unless told to accept raVerified.
    CU_ASSERT_EQUAL(ossl_popo(body, 0), 0);
}

// Every seed of the fuzz corpus is accepted by one of the parsers and round-trips (the fuzz
// replay only checks the round trip of what happens to be accepted).
static void test_crmf_fuzz_seeds_are_accepted(void)
{
    const char *seeds[] = {"ir-ec-msgs.der",  "ir-rsa-msgs.der", "ir-ed-msgs.der",
                           "kur-ec-msgs.der", "cr-ed-msgs.der",  "ir-raverified-msgs.der",
                           "csr-pss.der",     "csr-ed.der",      "p10cr-csr-ec.der"};
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        char path[512];
        (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/crmf/%s", CM_SOURCE_DIR, seeds[i]);
        uint8_t *buf;
        size_t len;
        CU_ASSERT_TRUE_FATAL(test_read_file(path, &buf, &len));
        crmf_cert_req_msgs msgs;
        crmf_csr csr;
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 256);
        if (strstr(seeds[i], "msgs") != NULL) {
            TEST_ASSERT_OK(crmf_msgs_from_der(&g_arena, &msgs, cm_span_make(buf, len)));
            crmf_msgs_marshal(&b, &msgs);
        } else {
            TEST_ASSERT_OK(crmf_csr_from_der(&csr, cm_span_make(buf, len)));
            TEST_ASSERT_OK(crmf_csr_verify(&g_crypto, &csr, NULL));
            crmf_csr_marshal(&b, &csr);
        }
        cm_span out;
        TEST_ASSERT_OK(der_builder_finish(&b, &out));
        CU_ASSERT(span_is(out, buf, len));
        free(buf);
    }
}

static void test_crmf_rejects_bad_popo_encodings(void)
{
    crmf_cert_req_msgs msgs = parse_req(REQ_IR_EC);
    const crmf_cert_req_msg *m = &msgs.msgs[0];
    // CertReqMsg with an unknown POPO choice [4], and raVerified with content.
    const uint8_t *tails[] = {(const uint8_t *)"\x84\x00", (const uint8_t *)"\x80\x01\x00",
                              (const uint8_t *)"\xa1\x00"};
    const uint32_t codes[] = {CRMF_E_BAD_CHOICE, CM_E_DER_NULL, CM_E_DER_TRUNCATED};
    const size_t tail_lens[] = {2, 3, 2};
    for (size_t i = 0; i < 3; i++) {
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 512);
        der_mark s1, s2;
        der_open(&b, &s1, DER_TAG_SEQUENCE);
        der_open(&b, &s2, DER_TAG_SEQUENCE);
        der_put_raw(&b, m->req.whole);
        der_put_raw(&b, cm_span_make(tails[i], tail_lens[i]));
        der_close(&b, &s2);
        der_close(&b, &s1);
        cm_span der;
        TEST_ASSERT_OK(der_builder_finish(&b, &der));
        crmf_cert_req_msgs out;
        cm_result r = crmf_msgs_from_der(&g_arena, &out, der);
        if (i == 2) {
            // POPOSigningKey with nothing in it: the AlgorithmIdentifier is missing.
            CU_ASSERT_EQUAL(cm_result_class(r), CM_CLASS_PROTO);
        } else {
            TEST_ASSERT_CODE(r, codes[i]);
        }
    }
}

static void test_crmf_popo_rules(void)
{
    crmf_cert_req_msgs msgs = parse_req(REQ_IR_EC);
    crmf_cert_req_msg m = msgs.msgs[0];
    crmf_cert_req_msgs out;

    // poposkInput while the template has subject and publicKey.
    // POPOSigningKeyInput { sender [0] { [4] { Name } }, publicKey SPKI }
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 256);
    der_mark t0, dn;
    der_open(&b, &t0, DER_CONTEXT_CONS(0));
    der_open(&b, &dn, DER_CONTEXT_CONS(4));
    der_put_raw(&b, m.req.tmpl.subject);
    der_close(&b, &dn);
    der_close(&b, &t0);
    cm_span spki;
    TEST_ASSERT_OK(crmf_spki_to_der(&g_arena, &spki, m.req.tmpl.public_key));
    der_put_raw(&b, spki);
    cm_span input;
    TEST_ASSERT_OK(der_builder_finish(&b, &input));
    m.popo.has_poposk_input = true;
    m.popo.poposk_input = input;
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    CU_ASSERT_TRUE(out.msgs[0].popo.has_poposk_input);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL), CRMF_E_POPO_INPUT_MISUSE);
    // Without a subject in the template, poposkInput is legitimate but not verified here.
    m.req.tmpl.subject = cm_span_make(NULL, 0);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL),
                     CRMF_E_POPO_INPUT_UNSUPPORTED);
    // A malformed poposkInput is refused at parse time.
    m.popo.poposk_input = SPAN(0x30, 0x00);
    CU_ASSERT_EQUAL(cm_result_class(remarshal_msg(&m, &out)), CM_CLASS_PROTO);

    // No publicKey in the template.
    m = msgs.msgs[0];
    m.req.tmpl.public_key = cm_span_make(NULL, 0);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL), CRMF_E_POPO_NO_KEY);

    // SHA-1 algorithms are refused as badAlg before any signature work (the default pop_algs
    // has no SHA-1 rows).
    m = msgs.msgs[0];
    m.popo.alg = SPAN(0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], &why), CRMF_E_ALG_SHA1);
    CU_ASSERT_STRING_EQUAL(why.text,
                           "signature algorithm ecdsa-with-SHA1 is not allowed (pop_algs)");
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_ALG_SHA1), CM_FAIL_BAD_ALG);
    // An RSA algorithm with the EC key: key/algorithm mismatch.
    m.popo.alg = SPAN(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
                      0x05, 0x00);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], &why), CRMF_E_POPO_KEY_MISMATCH);
    CU_ASSERT_STRING_EQUAL(why.text, "the POPO signature algorithm sha256WithRSAEncryption does "
                                     "not fit the EC P-256 key");
    // ECDSA with parameters; an unknown algorithm.
    m.popo.alg =
        SPAN(0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL), CRMF_E_BAD_ALG_PARAMS);
    m.popo.alg = SPAN(0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04);
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], &why), CRMF_E_ALG_UNSUPPORTED);
    CU_ASSERT_STRING_EQUAL(why.text, "the POPO signature algorithm 1.2.3.4 is not supported");
    // The Ed25519 request's signature with the EC key: the ECDSA-Sig-Value does not parse.
    m = msgs.msgs[0];
    crmf_cert_req_msgs ed = parse_req(REQ_IR_ED);
    m.popo.signature = ed.msgs[0].popo.signature;
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], &why), CRMF_E_POPO_BAD_SIGNATURE);
    CU_ASSERT_STRING_EQUAL(why.text, "the POPO signature (ecdsa-with-SHA256) does not verify with "
                                     "the EC P-256 public key");
}

static void test_crmf_controls(void)
{
    crmf_cert_req_msgs kur = parse_req(REQ_KUR_EC);
    crmf_cert_req_msg m = kur.msgs[0];
    crmf_cert_req_msgs out;
    crmf_attr ctl[3];
    ctl[0] = m.req.controls[0];
    ctl[1] = (crmf_attr){
        {NULL, 0}, CM_SPAN_LIT(DER_OID_REGCTRL_REG_TOKEN), SPAN(0x0c, 0x03, 't', 'o', 'k')};
    ctl[2] = (crmf_attr){{NULL, 0}, SPAN(0x2a, 0x03, 0x04), SPAN(0x05, 0x00)};
    m.req.controls = ctl;
    m.req.num_controls = 3;
    m.req.cert_req_id = -1;
    TEST_ASSERT_OK(remarshal_msg(&m, &out));
    const crmf_cert_request *r = &out.msgs[0].req;
    CU_ASSERT_EQUAL(r->cert_req_id, -1);
    CU_ASSERT_EQUAL(r->num_controls, 3);
    CU_ASSERT_TRUE(r->has_old_cert_id && r->has_reg_token);
    CU_ASSERT(span_is(r->reg_token, (const uint8_t *)"tok", 3));
    CU_ASSERT(cm_span_eq(r->old_cert_id.serial, kur.msgs[0].req.old_cert_id.serial));
    // The POPO covered certReqId 0 and one control: it no longer verifies.
    TEST_ASSERT_CODE(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL), CRMF_E_POPO_BAD_SIGNATURE);

    // The same control twice; a malformed regToken / oldCertID; an empty Controls.
    ctl[2] = ctl[1];
    TEST_ASSERT_CODE(remarshal_msg(&m, &out), CRMF_E_DUPLICATE_CONTROL);
    ctl[1].value = SPAN(0x04, 0x01, 'x');
    m.req.num_controls = 2;
    TEST_ASSERT_CODE(remarshal_msg(&m, &out), CRMF_E_BAD_CONTROL);
    ctl[0].value = SPAN(0x30, 0x03, 0x02, 0x01, 0x01); // CertId without the issuer
    m.req.num_controls = 1;
    TEST_ASSERT_CODE(remarshal_msg(&m, &out), CRMF_E_BAD_CONTROL);
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 512);
    der_mark s1, s2, s3;
    der_open(&b, &s1, DER_TAG_SEQUENCE);
    der_open(&b, &s2, DER_TAG_SEQUENCE);
    der_open(&b, &s3, DER_TAG_SEQUENCE);
    der_put_i64(&b, 0);
    crmf_template_marshal(&b, &kur.msgs[0].req.tmpl);
    der_put_tlv(&b, DER_TAG_SEQUENCE, cm_span_make(NULL, 0));
    der_close(&b, &s3);
    der_close(&b, &s2);
    der_close(&b, &s1);
    cm_span der;
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    TEST_ASSERT_CODE(crmf_msgs_from_der(&g_arena, &out, der), CRMF_E_EMPTY);
}

// --- A request built by hand, signed with RSA-PSS -------------------------------------------

static void test_crmf_builds_and_signs_requests(void)
{
    crmf_cert_req_msgs ir = parse_req(REQ_IR_RSA);
    crmf_cert_req_msg m = ir.msgs[0];
    const crmf_sig_alg algs[] = {
        {{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 32},
        {{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA384, CRMF_HASH_SHA384, 64},
        {{NULL, 0}, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA512, CRMF_HASH_NONE, 0},
    };
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        // CertRequest: certReqId 0, the RSA ir's template.
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 512);
        crmf_cert_request_marshal(&b, &m.req);
        cm_span req;
        TEST_ASSERT_OK(der_builder_finish(&b, &req));
        der_builder_init_arena(&b, &g_arena, 64);
        crmf_sig_alg_marshal(&b, &algs[i]);
        TEST_ASSERT_OK(der_builder_finish(&b, &m.popo.alg));
        crmf_sig_alg back;
        TEST_ASSERT_OK(crmf_sig_alg_from_der(&back, m.popo.alg));
        CU_ASSERT_EQUAL(back.kind, algs[i].kind);
        CU_ASSERT_EQUAL(back.hash, algs[i].hash);
        CU_ASSERT_EQUAL(back.mgf1_hash, algs[i].mgf1_hash);
        CU_ASSERT_EQUAL(back.salt_len, algs[i].salt_len);
        TEST_ASSERT_OK(
            crmf_crypto_sign(&g_crypto, &g_arena, &m.popo.signature, &algs[i], g_rsa_priv, req));
        crmf_cert_req_msgs out;
        TEST_ASSERT_OK(remarshal_msg(&m, &out));
        TEST_ASSERT_OK(crmf_popo_verify(&g_crypto, &out.msgs[0], NULL));
        CU_ASSERT_EQUAL(ossl_popo(out.whole, 0), 1);
        // Signing with a key of the wrong type is refused.
        cm_span sig;
        TEST_ASSERT_CODE(crmf_crypto_sign(&g_crypto, &g_arena, &sig, &algs[i], g_ec_priv, req),
                         CRMF_E_KEY_ALG_MISMATCH);
    }
}

// --- Signature algorithm descriptors ------------------------------------------------------

static void test_crmf_sig_alg_table(void)
{
    struct {
        cm_span der;
        uint32_t code;
        crmf_sig_kind kind;
        crmf_hash hash;
    } cases[] = {
        // sha256WithRSAEncryption with NULL and with absent parameters
        {SPAN(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
              0x00),
         CM_OK, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA256},
        {SPAN(0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e), CM_OK,
         CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA224},
        // with an INTEGER as parameters
        {SPAN(0x30, 0x0e, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x02,
              0x01, 0x00),
         CRMF_E_BAD_ALG_PARAMS, 0, 0},
        // sha1WithRSAEncryption: a row of the table (the policy, not the parser, refuses it)
        {SPAN(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05,
              0x00),
         CM_OK, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA1},
        // ecdsa-with-SHA384, SHA512
        {SPAN(0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03), CM_OK,
         CRMF_SIG_ECDSA, CRMF_HASH_SHA384},
        {SPAN(0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04), CM_OK,
         CRMF_SIG_ECDSA, CRMF_HASH_SHA512},
        // Ed25519, Ed448; Ed25519 with NULL parameters
        {SPAN(0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70), CM_OK, CRMF_SIG_ED25519, CRMF_HASH_NONE},
        {SPAN(0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x71), CM_OK, CRMF_SIG_ED448, CRMF_HASH_NONE},
        {SPAN(0x30, 0x07, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x05, 0x00), CRMF_E_BAD_ALG_PARAMS, 0, 0},
        // RSASSA-PSS with no parameters, with all DEFAULTs (SHA-1), with a trailerField
        {SPAN(0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a),
         CRMF_E_BAD_ALG_PARAMS, 0, 0},
        {SPAN(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
              0x00),
         CM_OK, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA1},
        {SPAN(0x30, 0x12, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
              0x05, 0xa3, 0x03, 0x02, 0x01, 0x01),
         CRMF_E_BAD_ALG_PARAMS, 0, 0},
        // id-ecdsa-with-shake256, SHA-1 ECDSA, an OID outside the table (1.2.3.4)
        {SPAN(0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x06, 0x21), CM_OK,
         CRMF_SIG_ECDSA, CRMF_HASH_SHAKE256},
        {SPAN(0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01), CM_OK,
         CRMF_SIG_ECDSA, CRMF_HASH_SHA1},
        {SPAN(0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04), CRMF_E_ALG_UNSUPPORTED, 0, 0},
        // not an AlgorithmIdentifier
        {SPAN(0x30, 0x00), CM_E_DER_TRUNCATED, 0, 0},
        {SPAN(0x31, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70), CM_E_DER_UNEXPECTED_TAG, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        crmf_sig_alg alg;
        cm_result r = crmf_sig_alg_from_der(&alg, cases[i].der);
        if (r.code != cases[i].code) {
            fprintf(stderr, "\n  case %zu: %s\n", i, cm_result_name(r));
        }
        CU_ASSERT_EQUAL(r.code, cases[i].code);
        if (cm_ok(r)) {
            CU_ASSERT_EQUAL(alg.kind, cases[i].kind);
            CU_ASSERT_EQUAL(alg.hash, cases[i].hash);
            CU_ASSERT(cm_span_eq(alg.whole, cases[i].der));
            // Our marshal of a descriptor parsed from DER with NULL or absent parameters
            // parses back to the same descriptor.
            der_builder b;
            der_builder_init_arena(&b, &g_arena, 64);
            crmf_sig_alg_marshal(&b, &alg);
            cm_span again;
            TEST_ASSERT_OK(der_builder_finish(&b, &again));
            crmf_sig_alg alg2;
            TEST_ASSERT_OK(crmf_sig_alg_from_der(&alg2, again));
            CU_ASSERT_EQUAL(alg2.kind, alg.kind);
            CU_ASSERT_EQUAL(alg2.hash, alg.hash);
        }
    }
    // Key compatibility.
    crmf_sig_alg pss = {{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 32};
    crmf_sig_alg pkcs1 = {{NULL, 0}, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA256, CRMF_HASH_NONE, 0};
    CU_ASSERT_TRUE(crmf_sig_alg_key_ok(&pss, CRMF_KEY_RSA));
    CU_ASSERT_TRUE(crmf_sig_alg_key_ok(&pss, CRMF_KEY_RSA_PSS));
    CU_ASSERT_FALSE(crmf_sig_alg_key_ok(&pkcs1, CRMF_KEY_RSA_PSS));
    CU_ASSERT_FALSE(crmf_sig_alg_key_ok(&pkcs1, CRMF_KEY_EC));
}

// --- Keys ---------------------------------------------------------------------------------

static void expect_key_matches(cm_span spki_der)
{
    crmf_spki spki;
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, spki_der));
    EVP_PKEY *ours = NULL;
    TEST_ASSERT_OK(crmf_crypto_key_from_spki(&g_crypto, &ours, &spki));
    const unsigned char *p = spki_der.p;
    EVP_PKEY *theirs = d2i_PUBKEY(NULL, &p, (long)spki_der.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(theirs);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(ours, theirs), 1);
    CU_ASSERT_EQUAL(crmf_key_type_of(ours), spki.type);
    EVP_PKEY_free(ours);
    EVP_PKEY_free(theirs);
}

static void test_crmf_keys_match_d2i_pubkey(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        expect_key_matches(cm_span_make(g_req_key[i].p, g_req_key[i].len));
    }
    for (int i = 0; i < CSR_COUNT; i++) {
        expect_key_matches(cm_span_make(g_csr_key[i].p, g_csr_key[i].len));
    }
}

static void test_crmf_builds_compressed_ec_keys(void)
{
    EVP_PKEY *k = EVP_PKEY_dup(g_ec_priv);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(EVP_PKEY_set_utf8_string_param(k, "point-format", "compressed"), 1);
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(k, &der);
    CU_ASSERT_FATAL(len > 0);
    crmf_spki spki;
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(der, (size_t)len)));
    CU_ASSERT_EQUAL(spki.key.len, 33);
    expect_key_matches(cm_span_make(der, (size_t)len));
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

// Key-agreement keys (X25519, X448: issue 19's non-signing keys) parse with their own types and
// are built like OpenSSL's; X25519 of 31 octets, or with parameters, is malformed.
static void test_crmf_key_agreement_keys(void)
{
    const char *names[] = {"X25519", "X448"};
    const crmf_key_type types[] = {CRMF_KEY_X25519, CRMF_KEY_X448};
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, names[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        unsigned char *der = NULL;
        const int len = i2d_PUBKEY(k, &der);
        CU_ASSERT_FATAL(len > 0);
        crmf_spki spki;
        TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(der, (size_t)len)));
        CU_ASSERT_EQUAL(spki.type, types[i]);
        expect_key_matches(cm_span_make(der, (size_t)len));
        char text[32];
        CU_ASSERT_STRING_EQUAL(crmf_key_text(text, sizeof(text), &spki), names[i]);
        OPENSSL_free(der);
        EVP_PKEY_free(k);
    }
    crmf_spki spki;
    uint8_t x[12 + 31] = {0x30, 0x29, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x20, 0x00};
    TEST_ASSERT_CODE(crmf_spki_from_der(&spki, cm_span_make(x, sizeof(x))), CRMF_E_BAD_SPKI);
    // Central key generation names the algorithm with an empty key: it parses, key len 0.
    TEST_ASSERT_OK(crmf_spki_from_der(
        &spki, SPAN(0x30, 0x0a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x01, 0x00)));
    CU_ASSERT_EQUAL(spki.type, CRMF_KEY_X25519);
    CU_ASSERT_EQUAL(spki.key.len, 0);
}

static void test_crmf_rejects_bad_keys(void)
{
    // A P-256 point off the curve: flip a bit of Y.
    crmf_spki spki;
    cm_span ec = cm_span_make(g_req_key[REQ_IR_EC].p, g_req_key[REQ_IR_EC].len);
    uint8_t *copy = cm_arena_memdup(&g_arena, ec);
    copy[ec.len - 1] ^= 0x01;
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(copy, ec.len)));
    EVP_PKEY *k = NULL;
    TEST_ASSERT_CODE(crmf_crypto_key_from_spki(&g_crypto, &k, &spki), CRMF_E_BAD_SPKI);
    CU_ASSERT_PTR_NULL(k);
    // secp256k1 parses (a policy may look at it) but is not built.
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(g_k1_spki.p, g_k1_spki.len)));
    CU_ASSERT_EQUAL(spki.type, CRMF_KEY_UNKNOWN);
    TEST_ASSERT_CODE(crmf_crypto_key_from_spki(&g_crypto, &k, &spki), CRMF_E_KEY_UNSUPPORTED);
    // An EC key without a namedCurve; RSA without NULL parameters; Ed25519 of 31 octets.
    TEST_ASSERT_CODE(
        crmf_spki_from_der(&spki, SPAN(0x30, 0x0f, 0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
                                       0x3d, 0x02, 0x01, 0x03, 0x02, 0x00, 0x04)),
        CRMF_E_BAD_SPKI);
    TEST_ASSERT_CODE(
        crmf_spki_from_der(&spki, SPAN(0x30, 0x10, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                       0xf7, 0x0d, 0x01, 0x01, 0x01, 0x03, 0x01, 0x00)),
        CRMF_E_BAD_SPKI);
    uint8_t ed[12 + 31] = {0x30, 0x29, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x20, 0x00};
    TEST_ASSERT_CODE(crmf_spki_from_der(&spki, cm_span_make(ed, sizeof(ed))), CRMF_E_BAD_SPKI);
    // An RSA key whose BIT STRING is not an RSAPublicKey, or has an even modulus.
    uint8_t rsa[] = {0x30, 0x1a, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                     0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00, 0x03, 0x09, 0x00,
                     0x30, 0x06, 0x02, 0x01, 0x0e, 0x02, 0x01, 0x03};
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(rsa, sizeof(rsa))));
    TEST_ASSERT_CODE(crmf_crypto_key_from_spki(&g_crypto, &k, &spki), CRMF_E_BAD_SPKI);
    rsa[24] = 0xf1; // negative modulus
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(rsa, sizeof(rsa))));
    TEST_ASSERT_CODE(crmf_crypto_key_from_spki(&g_crypto, &k, &spki), CRMF_E_BAD_SPKI);
    rsa[20] = 0x31;
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, cm_span_make(rsa, sizeof(rsa))));
    TEST_ASSERT_CODE(crmf_crypto_key_from_spki(&g_crypto, &k, &spki), CRMF_E_BAD_SPKI);
    // An empty key (central key generation) parses but builds nothing.
    TEST_ASSERT_OK(crmf_spki_from_der(
        &spki, SPAN(0x30, 0x0a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x01, 0x00)));
    CU_ASSERT_EQUAL(spki.key.len, 0);
    TEST_ASSERT_CODE(crmf_crypto_key_from_spki(&g_crypto, &k, &spki), CRMF_E_KEY_UNSUPPORTED);
}

static void test_crmf_verify_checks_key_against_alg(void)
{
    crmf_spki spki;
    cm_span ec = cm_span_make(g_req_key[REQ_IR_EC].p, g_req_key[REQ_IR_EC].len);
    TEST_ASSERT_OK(crmf_spki_from_der(&spki, ec));
    EVP_PKEY *key = NULL;
    TEST_ASSERT_OK(crmf_crypto_key_from_spki(&g_crypto, &key, &spki));
    const crmf_sig_alg rsa = {{NULL, 0}, CRMF_SIG_RSA_PKCS1, CRMF_HASH_SHA256, 0, 0};
    const crmf_sig_alg ed = {{NULL, 0}, CRMF_SIG_ED25519, CRMF_HASH_NONE, 0, 0};
    TEST_ASSERT_CODE(crmf_crypto_verify(&g_crypto, &rsa, key, SPAN(1), SPAN(2)),
                     CRMF_E_KEY_ALG_MISMATCH);
    TEST_ASSERT_CODE(crmf_crypto_verify(&g_crypto, &ed, key, SPAN(1), SPAN(2)),
                     CRMF_E_KEY_ALG_MISMATCH);
    EVP_PKEY_free(key);
    // Ed25519 sign/verify round trip with our helpers.
    cm_span sig;
    TEST_ASSERT_OK(crmf_crypto_sign(&g_crypto, &g_arena, &sig, &ed, g_ed_priv, SPAN(1, 2, 3)));
    TEST_ASSERT_OK(crmf_crypto_verify(&g_crypto, &ed, g_ed_priv, SPAN(1, 2, 3), sig));
    TEST_ASSERT_CODE(crmf_crypto_verify(&g_crypto, &ed, g_ed_priv, SPAN(1, 2, 4), sig),
                     CRMF_E_BAD_SIGNATURE);
}

// --- PKCS#10 ------------------------------------------------------------------------------

static void test_crmf_csrs_from_openssl(void)
{
    const crmf_key_type types[CSR_COUNT] = {CRMF_KEY_EC, CRMF_KEY_RSA, CRMF_KEY_ED25519,
                                            CRMF_KEY_RSA};
    for (int i = 0; i < CSR_COUNT; i++) {
        cm_span in = cm_span_make(g_csr[i].p, g_csr[i].len);
        crmf_csr csr;
        TEST_ASSERT_OK(crmf_csr_from_der(&csr, in));
        CU_ASSERT_EQUAL(csr.spki.type, types[i]);
        CU_ASSERT(span_is(csr.spki.whole, g_csr_key[i].p, g_csr_key[i].len));
        TEST_ASSERT_OK(crmf_csr_verify(&g_crypto, &csr, NULL));
        crmf_extension san;
        bool found;
        TEST_ASSERT_OK(crmf_extensions_find(
            csr.extensions, CM_SPAN_LIT(DER_OID_CE_SUBJECT_ALT_NAME), &san, &found));
        CU_ASSERT_TRUE(found);
        // Round trip.
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 256);
        crmf_csr_marshal(&b, &csr);
        cm_span out;
        TEST_ASSERT_OK(der_builder_finish(&b, &out));
        CU_ASSERT(span_is(out, in.p, in.len));
    }
    // The PSS CSR's algorithm.
    crmf_csr csr;
    TEST_ASSERT_OK(crmf_csr_from_der(&csr, cm_span_make(g_csr[CSR_PSS].p, g_csr[CSR_PSS].len)));
    crmf_sig_alg alg;
    TEST_ASSERT_OK(crmf_sig_alg_from_der(&alg, csr.sig_alg));
    CU_ASSERT_EQUAL(alg.kind, CRMF_SIG_RSA_PSS);
    CU_ASSERT_EQUAL(alg.hash, CRMF_HASH_SHA256);
    CU_ASSERT_EQUAL(alg.mgf1_hash, CRMF_HASH_SHA256);
    CU_ASSERT_EQUAL(alg.salt_len, 32);
    // A p10cr from openssl cmp carries the CSR as its body.
    uint32_t tag;
    cm_span body = body_of(cm_span_make(g_p10cr.p, g_p10cr.len), &tag);
    CU_ASSERT_EQUAL(tag, DER_CONTEXT_CONS(4));
    TEST_ASSERT_OK(crmf_csr_from_der(&csr, body));
    TEST_ASSERT_OK(crmf_csr_verify(&g_crypto, &csr, NULL));
}

static void test_crmf_csr_tampering_and_truncation(void)
{
    for (int i = 0; i < CSR_COUNT; i++) {
        cm_span in = cm_span_make(g_csr[i].p, g_csr[i].len);
        crmf_csr orig;
        TEST_ASSERT_OK(crmf_csr_from_der(&orig, in));
        for (size_t cut = 0; cut < in.len; cut++) {
            crmf_csr csr;
            cm_result r = crmf_csr_from_der(&csr, cm_span_make(in.p, cut));
            CU_ASSERT_EQUAL(cm_result_class(r), CM_CLASS_PROTO);
        }
        uint8_t *copy = malloc(in.len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        const size_t off = (size_t)(orig.info.p - in.p);
        for (size_t k = 0; k < orig.info.len; k++) {
            memcpy(copy, in.p, in.len);
            copy[off + k] ^= 0x01;
            crmf_csr csr;
            if (!cm_ok(crmf_csr_from_der(&csr, cm_span_make(copy, in.len)))) {
                continue;
            }
            cm_result r = crmf_csr_verify(&g_crypto, &csr, NULL);
            bool expected = r.code == CRMF_E_CSR_BAD_SIGNATURE || r.code == CRMF_E_BAD_SPKI ||
                            r.code == CRMF_E_KEY_UNSUPPORTED;
            if (!expected) {
                fprintf(stderr, "\n  csr %d byte %zu: %s\n", i, k, cm_result_name(r));
            }
            CU_ASSERT_TRUE(expected);
            // The oracle agrees.
            const unsigned char *p = copy;
            X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)in.len);
            if (req != NULL) {
                EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
                CU_ASSERT_NOT_EQUAL(pk != NULL ? X509_REQ_verify(req, pk) : 0, 1);
                X509_REQ_free(req);
            }
            ERR_clear_error();
        }
        free(copy);
    }
}

static void test_crmf_csr_rejections(void)
{
    crmf_csr csr;
    // version 1; attributes missing; attribute with an empty SET; a duplicate extensionRequest.
    // CertificationRequestInfo built around the EC CSR's subject and key.
    crmf_csr ec;
    TEST_ASSERT_OK(crmf_csr_from_der(&ec, cm_span_make(g_csr[CSR_EC].p, g_csr[CSR_EC].len)));
    const struct {
        int version;
        cm_span attrs;
        bool has_attrs;
        uint32_t code;
    } cases[] = {
        {1, {NULL, 0}, true, CRMF_E_CSR_VERSION},
        {0, {NULL, 0}, false, CM_E_DER_TRUNCATED},
        {0,
         SPAN(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07, 0x31,
              0x00),
         true, CRMF_E_EMPTY},
        {0,
         SPAN(0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e, 0x31,
              0x00),
         true, CRMF_E_EMPTY},
        {0,
         SPAN(0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e, 0x31,
              0x02, 0x30, 0x00),
         true, CRMF_E_EMPTY},
        {0, {NULL, 0}, true, CM_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 512);
        der_mark m, info;
        der_open(&b, &m, DER_TAG_SEQUENCE);
        der_open(&b, &info, DER_TAG_SEQUENCE);
        der_put_i64(&b, cases[i].version);
        der_put_raw(&b, ec.subject);
        der_put_raw(&b, ec.spki.whole);
        if (cases[i].has_attrs) {
            der_put_tlv(&b, DER_CONTEXT_CONS(0), cases[i].attrs);
        }
        der_close(&b, &info);
        der_put_raw(&b, ec.sig_alg);
        der_put_bitstring(&b, ec.signature, 0);
        der_close(&b, &m);
        cm_span der;
        TEST_ASSERT_OK(der_builder_finish(&b, &der));
        TEST_ASSERT_CODE(crmf_csr_from_der(&csr, der), cases[i].code);
        if (cases[i].code == CM_OK) {
            // Attributes dropped: the signature no longer matches.
            CU_ASSERT_EQUAL(csr.extensions.len, 0);
            cm_why why;
            cm_why_clear(&why);
            TEST_ASSERT_CODE(crmf_csr_verify(&g_crypto, &csr, &why), CRMF_E_CSR_BAD_SIGNATURE);
            CU_ASSERT_PTR_NOT_NULL(strstr(why.text, "the PKCS#10 self-signature ("));
            CU_ASSERT_PTR_NOT_NULL(strstr(why.text, ") does not verify with the "));
            CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_CSR_BAD_SIGNATURE), CM_FAIL_BAD_POP);
        }
    }
}

// --- GeneralName, failinfo ----------------------------------------------------------------

static void test_crmf_general_names(void)
{
    const struct {
        cm_span der;
        uint32_t code;
    } cases[] = {
        {SPAN(0x82, 0x03, 'a', '.', 'b'), CM_OK},
        {SPAN(0x87, 0x04, 127, 0, 0, 1), CM_OK},
        {SPAN(0x87, 0x03, 127, 0, 0), CRMF_E_BAD_CHOICE},
        {SPAN(0xa4, 0x02, 0x30, 0x00), CM_OK},
        {SPAN(0xa4, 0x02, 0x31, 0x00), CM_E_DER_UNEXPECTED_TAG},
        {SPAN(0x84, 0x02, 0x30, 0x00), CRMF_E_BAD_CHOICE},
        {SPAN(0x89, 0x01, 0x00), CRMF_E_BAD_CHOICE},
        {SPAN(0x30, 0x00), CRMF_E_BAD_CHOICE},
        {SPAN(0x88, 0x03, 0x2a, 0x03, 0x04), CM_OK},
        {SPAN(0x86, 0x01, 0x80), CM_E_DER_STRING},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        der_reader r;
        der_reader_init(&r, cases[i].der);
        crmf_general_name gn;
        TEST_ASSERT_CODE(crmf_general_name_parse(&r, &gn), cases[i].code);
        if (cases[i].code == CM_OK) {
            der_builder b;
            der_builder_init_arena(&b, &g_arena, 16);
            crmf_general_name_marshal(&b, &gn);
            cm_span out;
            TEST_ASSERT_OK(der_builder_finish(&b, &out));
            CU_ASSERT(cm_span_eq(out, cases[i].der));
        } else {
            CU_ASSERT_PTR_EQUAL(r.p, cases[i].der.p);
        }
    }
}

static void test_crmf_failinfo_mapping(void)
{
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_OK), -1);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_E_DER_TRUNCATED), CM_FAIL_BAD_DATA_FORMAT);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_E_DER_TOO_MANY), CM_FAIL_BAD_DATA_FORMAT);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_BAD_NAME), CM_FAIL_BAD_DATA_FORMAT);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_BAD_ALG_PARAMS), CM_FAIL_BAD_ALG);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_POPO_MISSING), CM_FAIL_BAD_POP);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_POPO_BAD_SIGNATURE), CM_FAIL_BAD_POP);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_TEMPLATE_VERSION), CM_FAIL_BAD_CERT_TEMPLATE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_BAD_SIGNATURE), CM_FAIL_BAD_MESSAGE_CHECK);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_CRYPTO), CM_FAIL_SYSTEM_FAILURE);
    // Codes of other modules map by the same registry; unregistered ones by class.
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_CODE(CM_CLASS_PROTO, 0x202)), CM_FAIL_BAD_SENDER_NONCE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_CODE(CM_CLASS_PROTO, 0x1ff)), CM_FAIL_BAD_DATA_FORMAT);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_E_NOMEM), CM_FAIL_SYSTEM_FAILURE);
}

// --- suite --------------------------------------------------------------------------------

static bool load(const char *name, test_blob *out)
{
    char path[320];
    test_path(path, sizeof(path), g_dir, name);
    return test_read_file(path, &out->p, &out->len);
}

// spki_of writes the SPKI DER of key file |key| to |out_name| (openssl pkey -pubout).
static bool spki_of(const char *key, const char *out_name, const char *log)
{
    char in[320], out[320];
    test_path(in, sizeof(in), g_dir, key);
    test_path(out, sizeof(out), g_dir, out_name);
    const char *argv[] = {"openssl",  "pkey", "-in",  in,  "-pubout",
                          "-outform", "DER",  "-out", out, NULL};
    return test_run(argv, log) == 0;
}

static EVP_PKEY *load_priv(const char *name)
{
    char path[320];
    test_path(path, sizeof(path), g_dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    (void)fclose(f);
    return k;
}

static int crmf_suite_init(void)
{
    if (!test_tmpdir(g_dir, sizeof(g_dir), "crmf")) {
        return 1;
    }
    char log[320], p[8][320];
    test_path(log, sizeof(log), g_dir, "openssl.log");
    const char *names[] = {"ca.key", "ca.pem",  "ec.key", "rsa.key",
                           "ed.key", "out.pem", "k1.key", "ec2.key"};
    for (int i = 0; i < 8; i++) {
        test_path(p[i], sizeof(p[i]), g_dir, names[i]);
    }
    const test_pki_cert_spec ca_spec = {.subject = "/CN=CRMF Test CA", .days = 30};
    if (!test_pki_make_ca(p[0], p[1], &ca_spec, log) ||
        !test_pki_make_key(p[2], TEST_PKI_EC_P256, log) ||
        !test_pki_make_key(p[3], TEST_PKI_RSA_2048, log) ||
        !test_pki_make_key(p[4], TEST_PKI_ED25519, log) ||
        !test_pki_make_key(p[6], TEST_PKI_EC_SECP256K1, log) ||
        !test_pki_make_key(p[7], TEST_PKI_EC_P256, log)) {
        return 1;
    }
    // The requests. The mock server answers with its own fixed certificate, which the client
    // then rejects; the saved first request is all we need.
    struct {
        const char *cmd, *key, *subject, *out;
        bool kur;
    } reqs[REQ_COUNT] = {
        {"ir", p[2], "/CN=dev-ec/O=certmint", "ir-ec.der", false},
        {"ir", p[3], "/CN=dev-rsa", "ir-rsa.der", false},
        {"ir", p[4], "/CN=dev-ed", "ir-ed.der", false},
        {"cr", p[2], "/CN=dev-ec-cr", "cr-ec.der", false},
        {"kur", p[7], NULL, "kur-ec.der", true},
    };
    const char *key_files[REQ_COUNT] = {"ec.key", "rsa.key", "ed.key", "ec.key", "ec2.key"};
    for (int i = 0; i < REQ_COUNT; i++) {
        char out[320], out2[320], reqout[700];
        test_path(out, sizeof(out), g_dir, reqs[i].out);
        test_path(out2, sizeof(out2), g_dir, "second.der");
        (void)snprintf(reqout, sizeof(reqout), "%s,%s", out, out2);
        const char *argv[40];
        int n = 0;
        const char *common[] = {"openssl",
                                "cmp",
                                "-cmd",
                                reqs[i].cmd,
                                "-use_mock_srv",
                                "-srv_ref",
                                "line-7",
                                "-srv_secret",
                                "pass:factory-secret",
                                "-srv_cert",
                                p[1],
                                "-srv_key",
                                p[0],
                                "-rsp_cert",
                                p[1],
                                "-newkey",
                                reqs[i].key,
                                "-reqout",
                                reqout,
                                "-certout",
                                p[5],
                                "-unprotected_errors"};
        for (size_t j = 0; j < sizeof(common) / sizeof(common[0]); j++) {
            argv[n++] = common[j];
        }
        if (reqs[i].kur) {
            const char *kur[] = {"-cert", p[1], "-key", p[0], "-oldcert", p[1]};
            for (size_t j = 0; j < 6; j++) {
                argv[n++] = kur[j];
            }
        } else {
            const char *mac[] = {"-ref",     "line-7",       "-secret", "pass:factory-secret",
                                 "-subject", reqs[i].subject};
            for (size_t j = 0; j < 6; j++) {
                argv[n++] = mac[j];
            }
        }
        if (i == REQ_IR_RSA) {
            argv[n++] = "-days";
            argv[n++] = "30";
            argv[n++] = "-sans";
            argv[n++] = "DNS:dev-rsa.example";
        }
        argv[n] = NULL;
        (void)test_run(argv, log);
        char spki_name[64];
        (void)snprintf(spki_name, sizeof(spki_name), "%s.spki", reqs[i].out);
        if (!load(reqs[i].out, &g_req[i]) || !spki_of(key_files[i], spki_name, log) ||
            !load(spki_name, &g_req_key[i])) {
            fprintf(stderr, "openssl cmp %s failed; see %s\n", reqs[i].cmd, log);
            return 1;
        }
    }
    // CSRs: EC, RSA, Ed25519, RSA-PSS; and a p10cr carrying the EC one.
    const char *csr_keys[CSR_COUNT] = {"ec.key", "rsa.key", "ed.key", "rsa.key"};
    const char *csr_names[CSR_COUNT] = {"csr-ec.der", "csr-rsa.der", "csr-ed.der", "csr-pss.der"};
    for (int i = 0; i < CSR_COUNT; i++) {
        char key[320], out[320];
        test_path(key, sizeof(key), g_dir, csr_keys[i]);
        test_path(out, sizeof(out), g_dir, csr_names[i]);
        const char *argv[] = {"openssl",
                              "req",
                              "-new",
                              "-key",
                              key,
                              "-subj",
                              "/CN=csr-device",
                              "-addext",
                              "subjectAltName=DNS:csr.example",
                              "-outform",
                              "DER",
                              "-out",
                              out,
                              i == CSR_PSS ? "-sigopt" : NULL,
                              "rsa_padding_mode:pss",
                              "-sigopt",
                              "rsa_pss_saltlen:32",
                              NULL};
        char spki_name[64];
        (void)snprintf(spki_name, sizeof(spki_name), "%s.spki", csr_names[i]);
        if (test_run(argv, log) != 0 || !load(csr_names[i], &g_csr[i]) ||
            !spki_of(csr_keys[i], spki_name, log) || !load(spki_name, &g_csr_key[i])) {
            fprintf(stderr, "openssl req failed; see %s\n", log);
            return 1;
        }
    }
    char csr[320], p10[320];
    test_path(csr, sizeof(csr), g_dir, "csr-ec.der");
    test_path(p10, sizeof(p10), g_dir, "p10cr.der");
    char reqout[700];
    (void)snprintf(reqout, sizeof(reqout), "%s,%s/second.der", p10, g_dir);
    const char *mkp10[] = {"openssl",
                           "cmp",
                           "-cmd",
                           "p10cr",
                           "-use_mock_srv",
                           "-srv_ref",
                           "line-7",
                           "-srv_secret",
                           "pass:factory-secret",
                           "-srv_cert",
                           p[1],
                           "-srv_key",
                           p[0],
                           "-rsp_cert",
                           p[1],
                           "-ref",
                           "line-7",
                           "-secret",
                           "pass:factory-secret",
                           "-csr",
                           csr,
                           "-reqout",
                           reqout,
                           "-certout",
                           p[5],
                           "-unprotected_errors",
                           NULL};
    (void)test_run(mkp10, log);
    char ra[320];
    test_path(ra, sizeof(ra), g_dir, "ir-ra.der");
    (void)snprintf(reqout, sizeof(reqout), "%s,%s/second.der", ra, g_dir);
    const char *mkra[] = {"openssl",
                          "cmp",
                          "-cmd",
                          "ir",
                          "-use_mock_srv",
                          "-srv_ref",
                          "line-7",
                          "-srv_secret",
                          "pass:factory-secret",
                          "-srv_cert",
                          p[1],
                          "-srv_key",
                          p[0],
                          "-rsp_cert",
                          p[1],
                          "-ref",
                          "line-7",
                          "-secret",
                          "pass:factory-secret",
                          "-newkey",
                          p[2],
                          "-subject",
                          "/CN=dev-ra",
                          "-popo",
                          "0",
                          "-reqout",
                          reqout,
                          "-certout",
                          p[5],
                          "-unprotected_errors",
                          NULL};
    (void)test_run(mkra, log);
    if (!load("ir-ra.der", &g_ir_ra) || !load("p10cr.der", &g_p10cr) ||
        !spki_of("k1.key", "k1.spki", log) || !load("k1.spki", &g_k1_spki)) {
        fprintf(stderr, "openssl cmp p10cr failed; see %s\n", log);
        return 1;
    }
    g_ec_priv = load_priv("ec.key");
    g_rsa_priv = load_priv("rsa.key");
    g_ed_priv = load_priv("ed.key");
    if (g_ec_priv == NULL || g_rsa_priv == NULL || g_ed_priv == NULL) {
        return 1;
    }
    if (!cm_ok(crmf_crypto_init(&g_crypto, NULL, NULL))) {
        return 1;
    }
    return 0;
}

static int crmf_suite_cleanup(void)
{
    for (int i = 0; i < REQ_COUNT; i++) {
        free(g_req[i].p);
        free(g_req_key[i].p);
    }
    for (int i = 0; i < CSR_COUNT; i++) {
        free(g_csr[i].p);
        free(g_csr_key[i].p);
    }
    free(g_p10cr.p);
    free(g_ir_ra.p);
    free(g_k1_spki.p);
    EVP_PKEY_free(g_ec_priv);
    EVP_PKEY_free(g_rsa_priv);
    EVP_PKEY_free(g_ed_priv);
    crmf_crypto_cleanup(&g_crypto);
    if (g_dir[0] != '\0') {
        (void)test_rmtree(g_dir);
    }
    return 0;
}

int test_crmf_register(void);
int test_crmf_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_crmf_parses_openssl_requests),
        TEST_CASE(test_crmf_round_trips_openssl_requests),
        TEST_CASE(test_crmf_popo_of_openssl_requests_verifies),
        TEST_CASE(test_crmf_popo_fails_on_any_flipped_byte),
        TEST_CASE(test_crmf_rejects_truncation_at_every_byte),
        TEST_CASE(test_crmf_caps_and_requires_cert_req_msgs),
        TEST_CASE(test_crmf_template_fields),
        TEST_CASE(test_crmf_template_rejections),
        TEST_CASE(test_crmf_popo_choices_are_reported),
        TEST_CASE(test_crmf_ra_verified_from_openssl),
        TEST_CASE(test_crmf_rejects_bad_popo_encodings),
        TEST_CASE(test_crmf_fuzz_seeds_are_accepted),
        TEST_CASE(test_crmf_popo_rules),
        TEST_CASE(test_crmf_controls),
        TEST_CASE(test_crmf_builds_and_signs_requests),
        TEST_CASE(test_crmf_sig_alg_table),
        TEST_CASE(test_crmf_keys_match_d2i_pubkey),
        TEST_CASE(test_crmf_builds_compressed_ec_keys),
        TEST_CASE(test_crmf_key_agreement_keys),
        TEST_CASE(test_crmf_rejects_bad_keys),
        TEST_CASE(test_crmf_verify_checks_key_against_alg),
        TEST_CASE(test_crmf_csrs_from_openssl),
        TEST_CASE(test_crmf_csr_tampering_and_truncation),
        TEST_CASE(test_crmf_csr_rejections),
        TEST_CASE(test_crmf_general_names),
        TEST_CASE(test_crmf_failinfo_mapping),
    };
    return test_register_suite("crmf", crmf_suite_init, crmf_suite_cleanup, crmf_setup,
                               crmf_teardown, tests, TEST_NUM_CASES(tests));
}
