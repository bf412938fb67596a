// tests/bench/test_bench.c: certmint-bench's response checker (bench/certmint_bench_check.c).
// Responses are built with the engine's CMP marshal code around a real certificate (made with
// OpenSSL at suite init), framed as HTTP, and each must be classified as the right outcome.
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "bench/certmint_bench.h"
#include "tests/support/test_support.h"

static struct {
    EVP_PKEY *ca_key;
    EVP_PKEY *dev_key;   // the requested key
    EVP_PKEY *other_key; // a key nobody asked for
    uint8_t *cert;       // certificate for dev_key
    size_t cert_len;
    uint8_t *other_cert; // certificate for other_key
    size_t other_cert_len;
    uint8_t *spki; // dev_key's SubjectPublicKeyInfo
    size_t spki_len;
    cm_arena arena;
} g;

static const uint8_t k_tid[16] = {0x74, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t k_nonce[16] = {0x6e, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
                                    0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};
static const uint8_t k_srv_nonce[16] = {0x53, 0x52, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

// make_cert issues a certificate for |key| signed by the suite's CA key, as DER.
static uint8_t *make_cert(EVP_PKEY *key, size_t *out_len)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    uint8_t *der = NULL;
    if (x == NULL || n == NULL ||
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"bench test", -1,
                                   -1, 0) != 1 ||
        X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), 7) != 1 ||
        X509_set_subject_name(x, n) != 1 || X509_set_issuer_name(x, n) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 3600) == NULL || X509_set_pubkey(x, key) != 1 ||
        X509_sign(x, g.ca_key, EVP_sha256()) <= 0) {
        goto out;
    }
    const int len = i2d_X509(x, &der);
    if (len <= 0) {
        der = NULL;
        goto out;
    }
    *out_len = (size_t)len;
out:
    X509_NAME_free(n);
    X509_free(x);
    return der;
}

static int bench_suite_init(void)
{
    memset(&g, 0, sizeof(g));
    g.ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g.dev_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g.other_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (g.ca_key == NULL || g.dev_key == NULL || g.other_key == NULL) {
        return 1;
    }
    g.cert = make_cert(g.dev_key, &g.cert_len);
    g.other_cert = make_cert(g.other_key, &g.other_cert_len);
    unsigned char *spki = NULL;
    const int n = i2d_PUBKEY(g.dev_key, &spki);
    if (g.cert == NULL || g.other_cert == NULL || n <= 0) {
        return 1;
    }
    g.spki = spki;
    g.spki_len = (size_t)n;
    cm_arena_init(&g.arena, 16384, 0);
    return 0;
}

static int bench_suite_cleanup(void)
{
    EVP_PKEY_free(g.ca_key);
    EVP_PKEY_free(g.dev_key);
    EVP_PKEY_free(g.other_key);
    OPENSSL_free(g.cert);
    OPENSSL_free(g.other_cert);
    OPENSSL_free(g.spki);
    cm_arena_cleanup(&g.arena);
    return 0;
}

// How a response deviates from the right one.
typedef struct rsp_spec {
    cmp_body_type body;
    int64_t status;
    bool no_cert;
    bool other_key;
    bool wrong_tid;
    bool wrong_nonce;
    bool no_nonce;
    bool empty_genp; // genp: no InfoTypeAndValue
} rsp_spec;

// make_rsp builds an unprotected PKIMessage answering the test request as |s| says; the
// caller frees the DER.
static uint8_t *make_rsp(size_t *out_len, const rsp_spec *s)
{
    uint8_t bad[16];
    memcpy(bad, k_nonce, sizeof(bad));
    bad[15] ^= 1;
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.transaction_id = (cmp_opt_span){true, cm_span_make(s->wrong_tid ? bad : k_tid, 16)};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(k_srv_nonce, 16)};
    if (!s->no_nonce) {
        h.recip_nonce = (cmp_opt_span){true, cm_span_make(s->wrong_nonce ? bad : k_nonce, 16)};
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = s->body;
    cmp_cert_response cr;
    memset(&cr, 0, sizeof(cr));
    if (s->body == CMP_BODY_IP || s->body == CMP_BODY_CP || s->body == CMP_BODY_KUP) {
        cr.cert_req_id = 0;
        cr.status.status = s->status;
        if (s->status == CMP_STATUS_REJECTION) {
            cr.status.has_fail_info = true;
            cr.status.fail_info = CMP_FAILINFO_BIT(CMP_FAIL_BAD_POP);
        } else if (!s->no_cert) {
            cr.has_certified_key_pair = true;
            cr.cert = s->other_key ? cm_span_make(g.other_cert, g.other_cert_len)
                                   : cm_span_make(g.cert, g.cert_len);
        }
        body.u.rep.responses = &cr;
        body.u.rep.num_responses = 1;
    } else if (s->body == CMP_BODY_RP) {
        static cmp_status_info st;
        memset(&st, 0, sizeof(st));
        st.status = s->status;
        if (s->status == CMP_STATUS_REJECTION) {
            st.has_fail_info = true;
            st.fail_info = CMP_FAILINFO_BIT(CMP_FAIL_BAD_CERT_ID);
        }
        body.u.rp.status = &st;
        body.u.rp.num_status = 1;
    } else if (s->body == CMP_BODY_GENP) {
        // caCerts answered with the test certificate as the one CA certificate.
        static cmp_itav itav;
        itav.oid = CM_SPAN_LIT("\x2b\x06\x01\x05\x05\x07\x04\x11");
        itav.value = cm_span_make(g.cert, g.cert_len);
        body.u.gen.items = &itav;
        body.u.gen.num = s->empty_genp ? 0 : 1;
    } else if (s->body == CMP_BODY_ERROR) {
        body.u.error.status.status = CMP_STATUS_REJECTION;
        body.u.error.status.has_fail_info = true;
        body.u.error.status.fail_info = CMP_FAILINFO_BIT(CMP_FAIL_BAD_MESSAGE_CHECK);
    }
    der_builder b;
    der_builder_init(&b, 2048);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cmp_msg_writer_finish(&w, NULL, 0, NULL, 0);
    uint8_t *out = NULL;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    return out;
}

// http_wrap frames |body| as an HTTP response with |status| and |ctype| (NULL: no header).
static uint8_t *http_wrap(size_t *out_len, int status, const char *ctype, const uint8_t *body,
                          size_t body_len)
{
    char hdr[256];
    const int n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d X\r\n%s%s%sContent-Length: %zu\r\n\r\n",
                           status, ctype != NULL ? "Content-Type: " : "",
                           ctype != NULL ? ctype : "", ctype != NULL ? "\r\n" : "", body_len);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof(hdr));
    uint8_t *p = malloc((size_t)n + body_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memcpy(p, hdr, (size_t)n);
    if (body_len > 0) {
        memcpy(p + n, body, body_len);
    }
    *out_len = (size_t)n + body_len;
    return p;
}

static bench_expect expect_for(cmp_body_type body, bool check_key)
{
    bench_expect e;
    memset(&e, 0, sizeof(e));
    e.transaction_id = cm_span_make(k_tid, sizeof(k_tid));
    e.sender_nonce = cm_span_make(k_nonce, sizeof(k_nonce));
    e.body = body;
    e.spki = check_key ? cm_span_make(g.spki, g.spki_len) : cm_span_make(NULL, 0);
    return e;
}

// classify runs the whole checker on the HTTP bytes |http|, as the bench loop does.
static bench_fail classify(const uint8_t *http, size_t len, const bench_expect *e)
{
    bench_http_rsp h;
    if (bench_http_parse(&h, http, len) != BENCH_HTTP_DONE) {
        return BENCH_FAIL_HTTP_MALFORMED;
    }
    CU_ASSERT_EQUAL(h.consumed, len);
    cm_arena_reset(&g.arena);
    cmp_msg m;
    return bench_check_response(&g.arena, &m, e, &h);
}

// outcome builds a response per |s|, frames it as a 200 application/pkixcmp, and classifies
// it against |e|.
static bench_fail outcome(const rsp_spec *s, const bench_expect *e)
{
    size_t der_len;
    uint8_t *der = make_rsp(&der_len, s);
    size_t len;
    uint8_t *http = http_wrap(&len, 200, "application/pkixcmp", der, der_len);
    const bench_fail f = classify(http, len, e);
    free(http);
    free(der);
    return f;
}

static void test_bench_accepts_good_ip_cp_and_pkiconf(void)
{
    const bench_expect ip = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP}, &ip), BENCH_OK);
    CU_ASSERT_EQUAL(
        outcome(&(rsp_spec){.body = CMP_BODY_IP, .status = CMP_STATUS_GRANTED_WITH_MODS}, &ip),
        BENCH_OK);
    const bench_expect cp = expect_for(CMP_BODY_CP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_CP}, &cp), BENCH_OK);
    const bench_expect conf = expect_for(CMP_BODY_PKICONF, false);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_PKICONF}, &conf), BENCH_OK);
}

static void test_bench_genm_expects_a_genp_with_ca_certs(void)
{
    const bench_expect genp = expect_for(CMP_BODY_GENP, false);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_GENP}, &genp), BENCH_OK);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_GENP, .empty_genp = true}, &genp),
                    BENCH_FAIL_NO_CERT);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP}, &genp), BENCH_FAIL_BODY_TYPE);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_ERROR}, &genp), BENCH_FAIL_CMP_ERROR);
}

static void test_bench_kur_and_rr_expect_kup_and_accepting_rp(void)
{
    const bench_expect rp = expect_for(CMP_BODY_RP, false);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_RP}, &rp), BENCH_OK);
    // kur: a kup with the new key, checked like an ip.
    const bench_expect kup = expect_for(CMP_BODY_KUP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_KUP}, &kup), BENCH_OK);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_KUP, .other_key = true}, &kup),
                    BENCH_FAIL_WRONG_KEY);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_RP, .status = CMP_STATUS_REJECTION}, &rp),
                    BENCH_FAIL_REJECTED);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP}, &rp), BENCH_FAIL_BODY_TYPE);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_ERROR}, &rp), BENCH_FAIL_CMP_ERROR);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_RP, .wrong_nonce = true}, &rp),
                    BENCH_FAIL_RECIP_NONCE);
}

static void test_bench_counts_wrong_nonce(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .wrong_nonce = true}, &e),
                    BENCH_FAIL_RECIP_NONCE);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .no_nonce = true}, &e),
                    BENCH_FAIL_RECIP_NONCE);
}

static void test_bench_counts_wrong_transaction_id(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .wrong_tid = true}, &e),
                    BENCH_FAIL_TRANSACTION_ID);
}

static void test_bench_counts_rejection_and_error(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .status = CMP_STATUS_REJECTION}, &e),
                    BENCH_FAIL_REJECTED);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .status = CMP_STATUS_WAITING}, &e),
                    BENCH_FAIL_REJECTED);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_ERROR}, &e), BENCH_FAIL_CMP_ERROR);
    // An error answering a certConf is also an error, not a body mismatch.
    const bench_expect conf = expect_for(CMP_BODY_PKICONF, false);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_ERROR}, &conf), BENCH_FAIL_CMP_ERROR);
}

static void test_bench_counts_unexpected_body(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_CP}, &e), BENCH_FAIL_BODY_TYPE);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_PKICONF}, &e), BENCH_FAIL_BODY_TYPE);
    const bench_expect conf = expect_for(CMP_BODY_PKICONF, false);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP}, &conf), BENCH_FAIL_BODY_TYPE);
}

static void test_bench_counts_missing_cert(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .no_cert = true}, &e),
                    BENCH_FAIL_NO_CERT);
}

static void test_bench_counts_wrong_key_unless_not_checked(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .other_key = true}, &e),
                    BENCH_FAIL_WRONG_KEY);
    // --no-key-check (OpenSSL's mock server answers with a fixed certificate).
    const bench_expect nk = expect_for(CMP_BODY_IP, false);
    CU_ASSERT_EQUAL(outcome(&(rsp_spec){.body = CMP_BODY_IP, .other_key = true}, &nk), BENCH_OK);
}

static void test_bench_counts_http_errors(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    size_t der_len;
    uint8_t *der = make_rsp(&der_len, &(rsp_spec){.body = CMP_BODY_IP});
    size_t len;
    uint8_t *http = http_wrap(&len, 500, "application/pkixcmp", der, der_len);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_HTTP_STATUS);
    free(http);
    http = http_wrap(&len, 404, "text/plain", (const uint8_t *)"nope", 4);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_HTTP_STATUS);
    free(http);
    http = http_wrap(&len, 200, "text/plain", der, der_len);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_CONTENT_TYPE);
    free(http);
    http = http_wrap(&len, 200, NULL, der, der_len);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_CONTENT_TYPE);
    free(http);
    // Case and parameters of the media type do not matter.
    http = http_wrap(&len, 200, "Application/PKIXCMP; charset=binary", der, der_len);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_OK);
    free(http);
    free(der);
}

static void test_bench_counts_non_cmp_body(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    size_t len;
    uint8_t *http = http_wrap(&len, 200, "application/pkixcmp", (const uint8_t *)"<html>", 6);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_NOT_CMP);
    free(http);
    // A certificate is DER but no PKIMessage; so is a PKIMessage with bytes after it.
    http = http_wrap(&len, 200, "application/pkixcmp", g.cert, g.cert_len);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_NOT_CMP);
    free(http);
    size_t der_len;
    uint8_t *der = make_rsp(&der_len, &(rsp_spec){.body = CMP_BODY_IP});
    uint8_t *longer = malloc(der_len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(longer);
    memcpy(longer, der, der_len);
    longer[der_len] = 0;
    http = http_wrap(&len, 200, "application/pkixcmp", longer, der_len + 1);
    CU_ASSERT_EQUAL(classify(http, len, &e), BENCH_FAIL_NOT_CMP);
    free(http);
    free(longer);
    free(der);
}

static void test_bench_http_needs_more_until_complete(void)
{
    size_t der_len;
    uint8_t *der = make_rsp(&der_len, &(rsp_spec){.body = CMP_BODY_IP});
    size_t len;
    uint8_t *http = http_wrap(&len, 200, "application/pkixcmp", der, der_len);
    bench_http_rsp h;
    for (size_t i = 0; i < len; i++) {
        CU_ASSERT_EQUAL(bench_http_parse(&h, http, i), BENCH_HTTP_NEED_MORE);
    }
    CU_ASSERT_EQUAL(bench_http_parse(&h, http, len), BENCH_HTTP_DONE);
    CU_ASSERT_EQUAL(h.status, 200);
    CU_ASSERT_EQUAL(h.body.len, der_len);
    CU_ASSERT_EQUAL(memcmp(h.body.p, der, der_len), 0);
    CU_ASSERT_TRUE(h.keep_alive);
    free(http);
    free(der);
}

static bench_http_state parse_text(bench_http_rsp *h, const char *text)
{
    return bench_http_parse(h, (const uint8_t *)text, strlen(text));
}

static void test_bench_http_keep_alive_rules(void)
{
    bench_http_rsp h;
    CU_ASSERT_EQUAL(
        parse_text(&h, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
        BENCH_HTTP_DONE);
    CU_ASSERT_FALSE(h.keep_alive);
    CU_ASSERT_EQUAL(parse_text(&h, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
                    BENCH_HTTP_DONE);
    CU_ASSERT_FALSE(h.keep_alive);
    CU_ASSERT_EQUAL(
        parse_text(&h, "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nab"),
        BENCH_HTTP_DONE);
    CU_ASSERT_TRUE(h.keep_alive);
    CU_ASSERT_EQUAL(h.body.len, 2);
}

static void test_bench_http_rejects_malformed(void)
{
    bench_http_rsp h;
    CU_ASSERT_EQUAL(parse_text(&h, "GARBAGE\r\n\r\n"), BENCH_HTTP_BAD);
    CU_ASSERT_EQUAL(parse_text(&h, "HTTP/1.1 2x0 OK\r\n\r\n"), BENCH_HTTP_BAD);
    CU_ASSERT_EQUAL(parse_text(&h, "HTTP/1.1 200 OK\r\n\r\n"), BENCH_HTTP_BAD); // no length
    CU_ASSERT_EQUAL(
        parse_text(&h, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        BENCH_HTTP_BAD);
    CU_ASSERT_EQUAL(parse_text(&h, "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
                    BENCH_HTTP_BAD);
    CU_ASSERT_EQUAL(
        parse_text(&h, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"),
        BENCH_HTTP_BAD);
    CU_ASSERT_EQUAL(parse_text(&h, "HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n"),
                    BENCH_HTTP_BAD);
    CU_ASSERT_EQUAL(parse_text(&h, "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"),
                    BENCH_HTTP_BAD);
    // A header block that never ends is malformed once it passes the limit.
    char big[BENCH_HTTP_MAX_HEADER + 64];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    CU_ASSERT_EQUAL(parse_text(&h, big), BENCH_HTTP_BAD);
}

// make_nested wraps |n| answers made per |inner| (their DER) in an unprotected nested answer
// whose header is made per |outer| (its transactionID and recipNonce; the body is ignored).
static uint8_t *make_nested(size_t *out_len, const rsp_spec *outer, const rsp_spec *inner, size_t n)
{
    uint8_t *ders[4];
    cm_span spans[4];
    CU_ASSERT_FATAL(n <= 4);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        ders[i] = make_rsp(&len, inner);
        spans[i] = cm_span_make(ders[i], len);
    }
    // The nested header as make_rsp writes it, around a nested body.
    uint8_t bad[16];
    memcpy(bad, k_nonce, sizeof(bad));
    bad[15] ^= 1;
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.transaction_id = (cmp_opt_span){true, cm_span_make(outer->wrong_tid ? bad : k_tid, 16)};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(k_srv_nonce, 16)};
    h.recip_nonce = (cmp_opt_span){true, cm_span_make(outer->wrong_nonce ? bad : k_nonce, 16)};
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_NESTED;
    body.u.nested.ders = spans;
    body.u.nested.num = n;
    der_builder b;
    der_builder_init(&b, 8192);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cmp_msg_writer_finish(&w, NULL, 0, NULL, 0);
    uint8_t *out = NULL;
    TEST_ASSERT_OK(der_builder_take(&b, &out, out_len));
    for (size_t i = 0; i < n; i++) {
        free(ders[i]);
    }
    return out;
}

// A nested answer is checked as a whole (transactionID, recipNonce, body, count), then each
// inner answer as a single one; the outer checks come first.
static void test_bench_nested_answers(void)
{
    const bench_expect e = expect_for(CMP_BODY_IP, true);
    size_t len = 0;
    uint8_t *der = make_nested(&len, &(rsp_spec){0}, &(rsp_spec){.body = CMP_BODY_IP}, 3);
    cmp_msg out;
    cm_arena_reset(&g.arena);
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(der, len), 3), BENCH_OK);
    CU_ASSERT_PTR_NULL(out.body.u.nested.msgs); // delimited only
    for (size_t i = 0; i < 3; i++) {
        cmp_msg m;
        CU_ASSERT_EQUAL(bench_check_cmp(&g.arena, &m, &e, out.body.u.nested.ders[i]), BENCH_OK);
    }
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(der, len), 2),
                    BENCH_FAIL_BODY_TYPE); // one answer per inner request, no more
    free(der);
    der = make_nested(&len, &(rsp_spec){.wrong_tid = true}, &(rsp_spec){.body = CMP_BODY_IP}, 1);
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(der, len), 1),
                    BENCH_FAIL_TRANSACTION_ID);
    free(der);
    der = make_nested(&len, &(rsp_spec){.wrong_nonce = true}, &(rsp_spec){.body = CMP_BODY_IP}, 1);
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(der, len), 1),
                    BENCH_FAIL_RECIP_NONCE);
    free(der);
    // A single answer, or an error, where a nested one belongs.
    der = make_rsp(&len, &(rsp_spec){.body = CMP_BODY_IP});
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(der, len), 1),
                    BENCH_FAIL_BODY_TYPE);
    free(der);
    der = make_rsp(&len, &(rsp_spec){.body = CMP_BODY_ERROR});
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(der, len), 1),
                    BENCH_FAIL_CMP_ERROR);
    free(der);
    static const uint8_t k_junk[] = {0x30, 0x01, 0x00};
    CU_ASSERT_EQUAL(bench_check_nested(&g.arena, &out, &e, cm_span_make(k_junk, 3), 1),
                    BENCH_FAIL_NOT_CMP);
}

static void test_bench_fail_names_are_distinct(void)
{
    for (int a = 0; a < BENCH_FAIL_COUNT; a++) {
        CU_ASSERT_STRING_NOT_EQUAL(bench_fail_name((bench_fail)a), "?");
        for (int b = a + 1; b < BENCH_FAIL_COUNT; b++) {
            CU_ASSERT_STRING_NOT_EQUAL(bench_fail_name((bench_fail)a),
                                       bench_fail_name((bench_fail)b));
        }
    }
    CU_ASSERT_STRING_EQUAL(bench_fail_name(BENCH_FAIL_COUNT), "?");
}

int test_bench_register(void);
int test_bench_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_bench_accepts_good_ip_cp_and_pkiconf),
        TEST_CASE(test_bench_genm_expects_a_genp_with_ca_certs),
        TEST_CASE(test_bench_kur_and_rr_expect_kup_and_accepting_rp),
        TEST_CASE(test_bench_counts_wrong_nonce),
        TEST_CASE(test_bench_counts_wrong_transaction_id),
        TEST_CASE(test_bench_counts_rejection_and_error),
        TEST_CASE(test_bench_counts_unexpected_body),
        TEST_CASE(test_bench_counts_missing_cert),
        TEST_CASE(test_bench_counts_wrong_key_unless_not_checked),
        TEST_CASE(test_bench_counts_http_errors),
        TEST_CASE(test_bench_counts_non_cmp_body),
        TEST_CASE(test_bench_http_needs_more_until_complete),
        TEST_CASE(test_bench_http_keep_alive_rules),
        TEST_CASE(test_bench_http_rejects_malformed),
        TEST_CASE(test_bench_fail_names_are_distinct),
        TEST_CASE(test_bench_nested_answers),
    };
    return test_register_suite("bench", bench_suite_init, bench_suite_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
