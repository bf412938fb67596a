// Suite "cmp_protect": PKIMessage protection. Requests made by the real client (`openssl cmp
// -use_mock_srv -reqout`, PBM with several OWF/MAC pairs, signatures with EC P-256 and
// RSA-2048 keys, one with ecdsa-with-SHA1) verify with our code; every tampered byte fails
// with the exact code; bounds are enforced before any work. What we produce is checked by
// OpenSSL (d2i_OSSL_CMP_MSG + OSSL_CMP_validate_msg), and PBMAC1 (which OpenSSL 3.0's CMP does
// not implement) against PKCS5_PBKDF2_HMAC and HMAC computed independently here.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/cmp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "engine/cmp/cmp_protect.h"
#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

#define SECRET "factory-secret"

static char g_dir[256];
// OpenSSL's PBM defaults include HMAC-SHA1 and the requests below use SHA-1 pairs on purpose:
// g_ctx allows SHA-1 (allow_sha1 = on), g_strict is the default policy.
static cmp_protect_ctx *g_ctx;
static cmp_protect_ctx *g_strict;
static crmf_crypto g_crmf;

// A PKIMessage cut into the spans protection works on (all point into |buf|).
typedef struct test_msg {
    uint8_t *buf;
    size_t len;
    cm_span header;  // PKIHeader element
    cm_span body;    // PKIBody element
    cm_span content; // header through body: what ProtectedPart wraps
    cm_span alg;     // protectionAlg AlgorithmIdentifier element (len 0 when absent)
    cm_span prot;    // protection BIT STRING bytes
    uint8_t unused;
    cm_span certs; // extraCerts content (Certificate TLVs), len 0 when absent
} test_msg;

static const char *tpath(char *out, size_t cap, const char *name)
{
    return test_path(out, cap, g_dir, name);
}

// msg_split finds the spans of |m->buf| with the DER reader (independently of the codec).
static bool msg_split(test_msg *m)
{
    der_reader r;
    der_reader msg;
    der_reader hdr;
    der_reader_init(&r, cm_span_make(m->buf, m->len));
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &msg)) ||
        !cm_ok(der_get_element(&msg, DER_TAG_SEQUENCE, &m->header)) ||
        !cm_ok(der_get_any(&msg, NULL, NULL, &m->body))) {
        return false;
    }
    m->content = cm_span_make(m->header.p, (size_t)(m->body.p + m->body.len - m->header.p));
    der_reader_init(&hdr, m->header);
    der_reader h;
    uint64_t pvno;
    m->alg = cm_span_make(NULL, 0);
    if (!cm_ok(der_enter(&hdr, DER_TAG_SEQUENCE, &h)) || !cm_ok(der_get_u64(&h, &pvno)) ||
        !cm_ok(der_get_any(&h, NULL, NULL, NULL)) || !cm_ok(der_get_any(&h, NULL, NULL, NULL))) {
        return false;
    }
    bool present;
    cm_span skip;
    der_reader a;
    if (!cm_ok(der_get_optional(&h, DER_CONTEXT_CONS(0), &skip, &present)) ||
        !cm_ok(der_enter_optional(&h, DER_CONTEXT_CONS(1), &a, &present))) {
        return false;
    }
    if (present && !cm_ok(der_get_element(&a, DER_TAG_SEQUENCE, &m->alg))) {
        return false;
    }
    m->prot = cm_span_make(NULL, 0);
    m->certs = cm_span_make(NULL, 0);
    der_reader p;
    if (!cm_ok(der_enter_optional(&msg, DER_CONTEXT_CONS(0), &p, &present))) {
        return false;
    }
    if (present && !cm_ok(der_get_bitstring(&p, &m->prot, &m->unused))) {
        return false;
    }
    der_reader c;
    if (!cm_ok(der_enter_optional(&msg, DER_CONTEXT_CONS(1), &c, &present))) {
        return false;
    }
    if (present && !cm_ok(der_get_tlv(&c, DER_TAG_SEQUENCE, &m->certs))) {
        return false;
    }
    return cm_ok(der_expect_end(&msg));
}

static bool msg_load(test_msg *m, const char *name)
{
    char path[320];
    memset(m, 0, sizeof(*m));
    if (!test_read_file(tpath(path, sizeof(path), name), &m->buf, &m->len)) {
        (void)fprintf(stderr, "\n  cannot read %s\n", path);
        return false;
    }
    return msg_split(m);
}

static void msg_free(test_msg *m)
{
    free(m->buf);
    memset(m, 0, sizeof(*m));
}

static bool load_file(const char *name, uint8_t **out, size_t *out_len)
{
    char path[320];
    return test_read_file(tpath(path, sizeof(path), name), out, out_len);
}

static EVP_PKEY *load_key(const char *name)
{
    char path[320];
    FILE *f = fopen(tpath(path, sizeof(path), name), "r");
    if (f == NULL) {
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    (void)fclose(f);
    return k;
}

static X509 *load_cert(const char *name)
{
    uint8_t *buf;
    size_t len;
    if (!load_file(name, &buf, &len)) {
        return NULL;
    }
    const unsigned char *p = buf;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    free(buf);
    return x;
}

// msg_build writes SEQUENCE { content, [0] BIT STRING prot (if any), [1] SEQUENCE certs (if
// any) } into a heap builder; the caller finishes and cleans up |b|.
static void msg_build(der_builder *b, cm_span content, const cm_span *prot, cm_span certs)
{
    der_builder_init(b, 0);
    der_mark m;
    der_mark p;
    der_mark c;
    der_mark s;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    der_put_raw(b, content);
    if (prot != NULL) {
        der_open(b, &p, DER_CONTEXT_CONS(0));
        der_put_bitstring(b, *prot, 0);
        der_close(b, &p);
    }
    if (certs.len > 0) {
        der_open_hint(b, &c, DER_CONTEXT_CONS(1), 3);
        der_open_hint(b, &s, DER_TAG_SEQUENCE, 3);
        der_put_raw(b, certs);
        der_close(b, &s);
        der_close(b, &c);
    }
    der_close(b, &m);
}

// ossl_validate runs OpenSSL's own checks on a whole PKIMessage: d2i_OSSL_CMP_MSG, then
// OSSL_CMP_validate_msg with |secret| (MAC) or a trust store holding |trusted| (signature).
static bool ossl_validate(cm_span der, const char *secret, X509 *trusted)
{
    const unsigned char *p = der.p;
    OSSL_CMP_MSG *msg = d2i_OSSL_CMP_MSG(NULL, &p, (long)der.len);
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    bool ok = false;
    if (msg == NULL || ctx == NULL || p != der.p + der.len) {
        goto out;
    }
    if (secret != NULL && OSSL_CMP_CTX_set1_secretValue(ctx, (const unsigned char *)secret,
                                                        (int)strlen(secret)) != 1) {
        goto out;
    }
    if (trusted != NULL) {
        X509_STORE *st = X509_STORE_new();
        if (st == NULL || X509_STORE_add_cert(st, trusted) != 1 ||
            OSSL_CMP_CTX_set0_trustedStore(ctx, st) != 1) {
            X509_STORE_free(st);
            goto out;
        }
    }
    ok = OSSL_CMP_validate_msg(ctx, msg) == 1;
out:
    OSSL_CMP_CTX_free(ctx);
    OSSL_CMP_MSG_free(msg);
    ERR_clear_error();
    return ok;
}

// --- hand-built AlgorithmIdentifiers (independent of cmp_mac_key_put_alg) ------------------

static void put_algid(der_builder *b, cm_span oid, bool null_params)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, oid);
    if (null_params) {
        der_put_null(b);
    }
    der_close(b, &m);
}

#define OID(lit) cm_span_make((lit), sizeof(lit) - 1)

// make_pbm_alg: SEQUENCE { id-PasswordBasedMac, SEQUENCE { salt, owf, iter, mac } } into
// |buf|. |iter| is INTEGER content octets, so negative and huge counts can be written.
static cm_span make_pbm_alg(uint8_t *buf, size_t cap, size_t salt_len, cm_span owf, cm_span iter,
                            cm_span mac)
{
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    uint8_t salt[200];
    memset(salt, 0x5a, sizeof(salt));
    der_mark a;
    der_mark p;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PASSWORD_BASED_MAC);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_put_octets(&b, cm_span_make(salt, salt_len));
    put_algid(&b, owf, true);
    der_put_tlv(&b, DER_TAG_INTEGER, iter);
    put_algid(&b, mac, false);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span out = {NULL, 0};
    CU_ASSERT_FATAL(cm_ok(der_builder_finish(&b, &out)));
    return out;
}

// make_pbmac1_alg writes PBMAC1 with PBKDF2 parameters; |key_len| 0 omits keyLength,
// |prf| len 0 omits the prf (the SHA-1 default).
static cm_span make_pbmac1_alg(uint8_t *buf, size_t cap, cm_span salt, uint64_t iter,
                               uint64_t key_len, cm_span prf, cm_span mac)
{
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_mark a;
    der_mark p;
    der_mark k;
    der_mark kp;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBMAC1);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_open(&b, &k, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBKDF2);
    der_open(&b, &kp, DER_TAG_SEQUENCE);
    der_put_octets(&b, salt);
    der_put_u64(&b, iter);
    if (key_len > 0) {
        der_put_u64(&b, key_len);
    }
    if (prf.len > 0) {
        put_algid(&b, prf, true);
    }
    der_close(&b, &kp);
    der_close(&b, &k);
    put_algid(&b, mac, true);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span out = {NULL, 0};
    CU_ASSERT_FATAL(cm_ok(der_builder_finish(&b, &out)));
    return out;
}

// protected_part copies SEQUENCE header || content into |out| (for the independent checks).
static size_t protected_part(uint8_t *out, size_t cap, cm_span content)
{
    der_builder b;
    der_builder_init_fixed(&b, out, cap);
    der_put_header(&b, DER_TAG_SEQUENCE, content.len);
    der_put_raw(&b, content);
    cm_span got = {NULL, 0};
    CU_ASSERT_FATAL(cm_ok(der_builder_finish(&b, &got)));
    return got.len;
}

// --- context, classification, failure info --------------------------------------------------

static void test_cmp_protect_ctx_rejects_bad_limits(void)
{
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    CU_ASSERT_EQUAL(lim.pbm_min_iterations, 100);
    CU_ASSERT_EQUAL(lim.pbm_max_iterations, 10000); // certmintd's defaults (issue 14)
    CU_ASSERT_EQUAL(lim.pbmac1_max_iterations, 2500);
    cmp_protect_ctx *c = NULL;
    lim.pbm_min_iterations = lim.pbm_max_iterations + 1;
    TEST_ASSERT_CODE(cmp_protect_ctx_new(&c, NULL, NULL, &lim), CM_E_INVALID_ARG);
    cmp_protect_limits_default(&lim);
    lim.max_salt_len = CMP_PROTECT_MAX_SALT_LEN + 1;
    TEST_ASSERT_CODE(cmp_protect_ctx_new(&c, NULL, NULL, &lim), CM_E_INVALID_ARG);
    CU_ASSERT_PTR_NULL(c);
    cmp_protect_ctx_free(NULL);
}

static void test_cmp_protect_kind_and_failinfo(void)
{
    uint8_t buf[256];
    cmp_prot_kind k;
    TEST_ASSERT_OK(
        cmp_protect_kind(&k, make_pbm_alg(buf, sizeof(buf), 16, OID(DER_OID_SHA256),
                                          cm_span_make("\x01\xf4", 2), OID(DER_OID_HMAC_SHA256))));
    CU_ASSERT_EQUAL(k, CMP_PROT_PBM);
    const uint8_t salt[16] = {1};
    TEST_ASSERT_OK(
        cmp_protect_kind(&k, make_pbmac1_alg(buf, sizeof(buf), cm_span_make(salt, 16), 1000, 32,
                                             OID(DER_OID_HMAC_SHA256), OID(DER_OID_HMAC_SHA256))));
    CU_ASSERT_EQUAL(k, CMP_PROT_PBMAC1);
    const uint8_t ecdsa[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                             0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
    TEST_ASSERT_OK(cmp_protect_kind(&k, cm_span_make(ecdsa, sizeof(ecdsa))));
    CU_ASSERT_EQUAL(k, CMP_PROT_SIGNATURE);
    const uint8_t dhmac[] = {0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48,
                             0x86, 0xf6, 0x7d, 0x07, 0x42, 0x1e};
    TEST_ASSERT_CODE(cmp_protect_kind(&k, cm_span_make(dhmac, sizeof(dhmac))),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    TEST_ASSERT_CODE(cmp_protect_kind(&k, cm_span_make(ecdsa, sizeof(ecdsa) - 1)),
                     CMP_E_PROT_PARAMS);

    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_ALG_WEAK), CM_FAIL_BAD_ALG);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_ALG_UNSUPPORTED), 0);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_ITERATIONS), 1);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_MAC_MISMATCH), 1);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_SIG_INVALID), 1);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_KEY_MISMATCH), 1);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_PARAMS), 5);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_E_DER_TRUNCATED), 5);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_E_NOMEM), CM_FAIL_SYSTEM_FAILURE);
}

static void test_cmp_protect_part_header(void)
{
    uint8_t h[6];
    size_t n;
    TEST_ASSERT_OK(cmp_protected_part_header(h, sizeof(h), &n, 0x7f));
    CU_ASSERT_TRUE(n == 2 && h[0] == 0x30 && h[1] == 0x7f);
    TEST_ASSERT_OK(cmp_protected_part_header(h, sizeof(h), &n, 0x1234));
    CU_ASSERT_TRUE(n == 4 && h[1] == 0x82 && h[2] == 0x12 && h[3] == 0x34);
    TEST_ASSERT_CODE(cmp_protected_part_header(h, 5, &n, 1), CM_E_BUFFER_TOO_SMALL);
}

// --- PasswordBasedMac ---------------------------------------------------------------------

static void test_cmp_protect_pbm_openssl_requests_verify(void)
{
    const struct {
        const char *file;
        cmp_hash owf, mac;
        bool ipsec;
    } cases[] = {
        {"ir_pbm.der", CMP_HASH_SHA256, CMP_HASH_SHA1, true}, // OpenSSL's defaults
        {"ir_pbm_sha512.der", CMP_HASH_SHA512, CMP_HASH_SHA512, false},
        {"ir_pbm_sha1.der", CMP_HASH_SHA1, CMP_HASH_SHA224, false},
        {"ir_pbm_sha384.der", CMP_HASH_SHA384, CMP_HASH_SHA1, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_msg m;
        CU_ASSERT_FATAL(msg_load(&m, cases[i].file));
        cmp_prot_kind kind;
        TEST_ASSERT_OK(cmp_protect_kind(&kind, m.alg));
        CU_ASSERT_EQUAL(kind, CMP_PROT_PBM);
        cmp_mac_key key;
        TEST_ASSERT_OK(cmp_protect_verify_mac(g_ctx, &key, m.alg, CM_SPAN_LIT(SECRET),
                                              CMP_SECRET_PASSWORD, m.content, m.prot, m.unused,
                                              NULL));
        CU_ASSERT_EQUAL(key.kind, CMP_PROT_PBM);
        CU_ASSERT_EQUAL(key.owf, cases[i].owf);
        // OpenSSL's MAC matched through the fast path (provider functions called directly).
        CU_ASSERT_TRUE(cmp_protect_owf_direct(g_ctx, cases[i].owf));
        CU_ASSERT_EQUAL(key.mac, cases[i].mac);
        CU_ASSERT_EQUAL(key.mac_ipsec_oid, cases[i].ipsec);
        CU_ASSERT_EQUAL(key.iterations, 500); // OpenSSL's default count
        CU_ASSERT_EQUAL(key.salt_len, 16);
        CU_ASSERT_TRUE(cmp_mac_key_matches(g_ctx, &key, m.alg));
        cmp_mac_key_cleanse(&key);
        CU_ASSERT_EQUAL(key.kind, 0);
        msg_free(&m);
    }
}

static void test_cmp_protect_pbm_wrong_secret_fails(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_pbm.der"));
    cmp_mac_key key;
    TEST_ASSERT_CODE(cmp_protect_verify_mac(g_ctx, &key, m.alg, CM_SPAN_LIT("factory-secreT"),
                                            CMP_SECRET_PASSWORD, m.content, m.prot, m.unused, NULL),
                     CMP_E_PROT_MAC_MISMATCH);
    CU_ASSERT_EQUAL(key.kind, 0); // cleansed on failure
    TEST_ASSERT_CODE(cmp_protect_verify_mac(g_ctx, &key, m.alg, cm_span_make("", 0),
                                            CMP_SECRET_PASSWORD, m.content, m.prot, m.unused, NULL),
                     CMP_E_PROT_MAC_MISMATCH);
    // Unused bits in the protection BIT STRING.
    TEST_ASSERT_CODE(cmp_protect_verify_mac(g_ctx, &key, m.alg, CM_SPAN_LIT(SECRET),
                                            CMP_SECRET_PASSWORD, m.content, m.prot, 1, NULL),
                     CMP_E_PROT_BITS);
    // A signature algorithm handed to the MAC verifier.
    const uint8_t ecdsa[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                             0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
    TEST_ASSERT_CODE(cmp_protect_verify_mac(g_ctx, &key, cm_span_make(ecdsa, sizeof(ecdsa)),
                                            CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD, m.content,
                                            m.prot, m.unused, NULL),
                     CMP_E_PROT_WRONG_KIND);
    msg_free(&m);
}

static void test_cmp_protect_pbm_tampering_fails(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_pbm.der"));
    cmp_mac_key key;
    TEST_ASSERT_OK(
        cmp_mac_key_derive(g_ctx, &key, m.alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
    TEST_ASSERT_OK(cmp_mac_verify(g_ctx, &key, m.content, m.prot, m.unused));
    uint8_t *content = (uint8_t *)(uintptr_t)m.content.p; // m.buf is ours
    size_t failures = 0;
    for (size_t i = 0; i < m.content.len; i++) {
        content[i] ^= 0x01;
        failures += cmp_mac_verify(g_ctx, &key, m.content, m.prot, m.unused).code ==
                    CMP_E_PROT_MAC_MISMATCH;
        content[i] ^= 0x01;
    }
    CU_ASSERT_EQUAL(failures, m.content.len);
    uint8_t *prot = (uint8_t *)(uintptr_t)m.prot.p;
    failures = 0;
    for (size_t i = 0; i < m.prot.len; i++) {
        prot[i] ^= 0x80;
        failures += cmp_mac_verify(g_ctx, &key, m.content, m.prot, m.unused).code ==
                    CMP_E_PROT_MAC_MISMATCH;
        prot[i] ^= 0x80;
    }
    CU_ASSERT_EQUAL(failures, m.prot.len);
    // A truncated or extended MAC.
    TEST_ASSERT_CODE(
        cmp_mac_verify(g_ctx, &key, m.content, cm_span_make(m.prot.p, m.prot.len - 1), 0),
        CMP_E_PROT_MAC_MISMATCH);
    // The whole path, with the tampered byte inside the header's protectionAlg parameters
    // (salt, iteration count): the message must never verify.
    const size_t alg_off = (size_t)(m.alg.p - m.content.p);
    for (size_t i = 0; i < m.alg.len; i++) {
        content[alg_off + i] ^= 0x01;
        cmp_mac_key k2;
        cm_result r =
            cmp_protect_verify_mac(g_ctx, &k2, m.alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD,
                                   m.content, m.prot, m.unused, NULL);
        CU_ASSERT_FALSE(cm_ok(r));
        content[alg_off + i] ^= 0x01;
    }
    TEST_ASSERT_OK(cmp_mac_verify(g_ctx, &key, m.content, m.prot, m.unused));
    cmp_mac_key_cleanse(&key);
    msg_free(&m);
}

static void test_cmp_protect_pbm_bounds_checked_before_work(void)
{
    uint8_t buf[512];
    cmp_mac_key key;
    const cm_span sha256 = OID(DER_OID_SHA256);
    const cm_span hmac = OID(DER_OID_HMAC_SHA256);
    const struct {
        const char *iter;
        size_t len;
        uint32_t want;
    } cases[] = {
        {"\x63", 1, CMP_E_PROT_ITERATIONS},                                 // 99
        {"\x64", 1, CM_OK},                                                 // 100
        {"\x01\x86\xa0", 3, CM_OK},                                         // 100000
        {"\x01\x86\xa1", 3, CMP_E_PROT_ITERATIONS},                         // 100001
        {"\x3b\x9a\xca\x00", 4, CMP_E_PROT_ITERATIONS},                     // 10^9
        {"\xff", 1, CMP_E_PROT_ITERATIONS},                                 // -1
        {"\x00", 1, CMP_E_PROT_ITERATIONS},                                 // 0
        {"\x01\x00\x00\x00\x00\x00\x00\x00\x00", 9, CMP_E_PROT_ITERATIONS}, // 2^64
        {"\x00\x64", 2, CMP_E_PROT_PARAMS},                                 // non-minimal
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cm_span alg = make_pbm_alg(buf, sizeof(buf), 16, sha256,
                                   cm_span_make(cases[i].iter, cases[i].len), hmac);
        // A count of 10^9 would take minutes of SHA-256 if it were not refused first; the
        // suite's ctest timeout would catch that.
        TEST_ASSERT_CODE(
            cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
            cases[i].want);
    }
    // Salt: 64 octets is the default maximum, 65 is refused, and so is a huge one.
    cm_span alg = make_pbm_alg(buf, sizeof(buf), 64, sha256, cm_span_make("\x64", 1), hmac);
    TEST_ASSERT_OK(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
    alg = make_pbm_alg(buf, sizeof(buf), 65, sha256, cm_span_make("\x64", 1), hmac);
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_SALT_LEN);
    alg = make_pbm_alg(buf, sizeof(buf), 200, sha256, cm_span_make("\x3b\x9a\xca\x00", 4), hmac);
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_SALT_LEN);
    CU_ASSERT_EQUAL(key.kind, 0);

    // Configured bounds are the ones applied.
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.pbm_min_iterations = 200;
    lim.pbm_max_iterations = 1000;
    cmp_protect_ctx *c = NULL;
    TEST_ASSERT_OK(cmp_protect_ctx_new(&c, NULL, NULL, &lim));
    alg = make_pbm_alg(buf, sizeof(buf), 16, sha256, cm_span_make("\x64", 1), hmac); // 100
    TEST_ASSERT_CODE(cmp_mac_key_derive(c, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ITERATIONS);
    alg = make_pbm_alg(buf, sizeof(buf), 16, sha256, cm_span_make("\x03\xe8", 2), hmac); // 1000
    TEST_ASSERT_OK(cmp_mac_key_derive(c, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
    alg = make_pbm_alg(buf, sizeof(buf), 16, sha256, cm_span_make("\x03\xe9", 2), hmac); // 1001
    TEST_ASSERT_CODE(cmp_mac_key_derive(c, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ITERATIONS);
    // And when producing.
    TEST_ASSERT_CODE(cmp_mac_key_new_pbm(c, &key, CM_SPAN_LIT(SECRET), CMP_HASH_SHA256,
                                         CMP_HASH_SHA256, 1001, 16),
                     CMP_E_PROT_ITERATIONS);
    TEST_ASSERT_CODE(cmp_mac_key_new_pbm(c, &key, CM_SPAN_LIT(SECRET), CMP_HASH_SHA256,
                                         CMP_HASH_SHA256, 500, 65),
                     CMP_E_PROT_SALT_LEN);
    cmp_protect_ctx_free(c);
    cmp_mac_key_cleanse(&key);
}

// check_mac_why runs the whole MAC check of ir_pbm.der's content under |alg| and |secret| and
// compares the code and the reason.
static void check_mac_why(const test_msg *m, cm_span alg, cm_span secret, uint32_t code,
                          const char *text)
{
    cmp_mac_key key;
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_protect_verify_mac(g_ctx, &key, alg, secret, CMP_SECRET_PASSWORD,
                                            m->content, m->prot, m->unused, &why),
                     code);
    if (strcmp(why.text, text) != 0) {
        fprintf(stderr, "\n  reason \"%s\"\n  wanted \"%s\"\n", why.text, text);
    }
    CU_ASSERT_STRING_EQUAL(why.text, text);
    CU_ASSERT_TRUE(code == CM_OK || key.kind == 0); // cleansed on failure
    cmp_mac_key_cleanse(&key);
}

static void test_cmp_protect_mac_reasons(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_pbm.der"));
    uint8_t buf[512];
    const cm_span sha256 = OID(DER_OID_SHA256);
    const cm_span hmac = OID(DER_OID_HMAC_SHA256);
    // Bounds, with both numbers and the setting to change.
    cm_span alg = make_pbm_alg(buf, sizeof(buf), 16, sha256, cm_span_make("\x03\x0d\x40", 3), hmac);
    check_mac_why(&m, alg, CM_SPAN_LIT(SECRET), CMP_E_PROT_ITERATIONS,
                  "PBM iteration count 200000 is above max_pbm_iterations (100000)");
    alg = make_pbm_alg(buf, sizeof(buf), 16, sha256, cm_span_make("\x63", 1), hmac);
    check_mac_why(&m, alg, CM_SPAN_LIT(SECRET), CMP_E_PROT_ITERATIONS,
                  "PBM iteration count 99 is below min_pbm_iterations (100)");
    alg = make_pbm_alg(buf, sizeof(buf), 16, sha256, cm_span_make("\xff", 1), hmac);
    check_mac_why(&m, alg, CM_SPAN_LIT(SECRET), CMP_E_PROT_ITERATIONS,
                  "PBM iteration count is negative or too large");
    alg = make_pbm_alg(buf, sizeof(buf), 65, sha256, cm_span_make("\x64", 1), hmac);
    check_mac_why(&m, alg, CM_SPAN_LIT(SECRET), CMP_E_PROT_SALT_LEN,
                  "the PBM salt of 65 octets is longer than the 64 allowed");
    // Algorithms by name.
    alg = make_pbm_alg(buf, sizeof(buf), 16, OID("\x2a\x86\x48\x86\xf7\x0d\x02\x05"),
                       cm_span_make("\x64", 1), hmac);
    check_mac_why(&m, alg, CM_SPAN_LIT(SECRET), CMP_E_PROT_ALG_UNSUPPORTED,
                  "the PBM one-way function md5 is not supported (SHA-2 is)");
    const uint8_t ecdsa[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                             0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
    check_mac_why(&m, cm_span_make(ecdsa, sizeof(ecdsa)), CM_SPAN_LIT(SECRET),
                  CMP_E_PROT_WRONG_KIND,
                  "the message is protected with ecdsa-with-SHA256, not with a MAC");
    // The wrong secret: the reason never shows it.
    check_mac_why(&m, m.alg, CM_SPAN_LIT("factory-secreT"), CMP_E_PROT_MAC_MISMATCH,
                  "the MAC does not verify: wrong shared secret for this senderKID?");
    // The right one: no reason.
    check_mac_why(&m, m.alg, CM_SPAN_LIT(SECRET), CM_OK, "");
    msg_free(&m);
}

static void test_cmp_protect_pbm_rejects_bad_parameters(void)
{
    uint8_t buf[512];
    cmp_mac_key key;
    const cm_span iter = cm_span_make("\x64", 1);
    const cm_span md5 = OID("\x2a\x86\x48\x86\xf7\x0d\x02\x05");
    const cm_span hmac_md5 = OID("\x2b\x06\x01\x05\x05\x08\x01\x01");
    cm_span alg = make_pbm_alg(buf, sizeof(buf), 16, md5, iter, OID(DER_OID_HMAC_SHA256));
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    alg = make_pbm_alg(buf, sizeof(buf), 16, OID(DER_OID_SHA256), iter, hmac_md5);
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    // An HMAC OID where the OWF belongs, and a hash OID where the MAC belongs.
    alg = make_pbm_alg(buf, sizeof(buf), 16, OID(DER_OID_HMAC_SHA256), iter,
                       OID(DER_OID_HMAC_SHA256));
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    alg = make_pbm_alg(buf, sizeof(buf), 16, OID(DER_OID_SHA256), iter, OID(DER_OID_SHA256));
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    // The IPsec HMAC-SHA1 OID is accepted and echoed.
    alg =
        make_pbm_alg(buf, sizeof(buf), 16, OID(DER_OID_SHA256), iter, OID(DER_OID_HMAC_SHA1_IPSEC));
    TEST_ASSERT_OK(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
    CU_ASSERT_TRUE(key.mac == CMP_HASH_SHA1 && key.mac_ipsec_oid);

    // Structural errors: no parameters, a trailing element, parameters that are not NULL.
    const uint8_t no_params[] = {0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48,
                                 0x86, 0xf6, 0x7d, 0x07, 0x42, 0x0d};
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, cm_span_make(no_params, sizeof(no_params)),
                                        CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_PARAMS);
    alg = make_pbm_alg(buf, sizeof(buf), 16, OID(DER_OID_SHA256), iter, OID(DER_OID_HMAC_SHA256));
    uint8_t longer[600];
    // Append NULL inside PBMParameter: rebuild with a trailing element.
    der_builder b;
    der_builder_init_fixed(&b, longer, sizeof(longer));
    der_mark a;
    der_mark p;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PASSWORD_BASED_MAC);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_put_octets(&b, cm_span_make(buf, 16));
    put_algid(&b, OID(DER_OID_SHA256), false);
    der_put_u64(&b, 100);
    put_algid(&b, OID(DER_OID_HMAC_SHA256), false);
    der_put_null(&b);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span trailing;
    TEST_ASSERT_OK(der_builder_finish(&b, &trailing));
    TEST_ASSERT_CODE(
        cmp_mac_key_derive(g_ctx, &key, trailing, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
        CMP_E_PROT_PARAMS);
    der_builder_init_fixed(&b, longer, sizeof(longer));
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PASSWORD_BASED_MAC);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_put_octets(&b, cm_span_make(buf, 16));
    der_mark o;
    der_open(&b, &o, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_SHA256);
    der_put_u64(&b, 1); // parameters must be NULL or absent
    der_close(&b, &o);
    der_put_u64(&b, 100);
    put_algid(&b, OID(DER_OID_HMAC_SHA256), false);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span bad_params;
    TEST_ASSERT_OK(der_builder_finish(&b, &bad_params));
    TEST_ASSERT_CODE(
        cmp_mac_key_derive(g_ctx, &key, bad_params, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
        CMP_E_PROT_PARAMS);
    cmp_mac_key_cleanse(&key);
}

// Strip the protection of an OpenSSL-made request and protect it again with our code:
// with the key kept from verifying it (the response case), and with fresh parameters and
// another secret. OpenSSL must accept both.
static void test_cmp_protect_pbm_produced_accepted_by_openssl(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_pbm.der"));
    cmp_mac_key key;
    TEST_ASSERT_OK(cmp_protect_verify_mac(g_ctx, &key, m.alg, CM_SPAN_LIT(SECRET),
                                          CMP_SECRET_PASSWORD, m.content, m.prot, m.unused, NULL));
    // Re-protecting with the kept key reproduces OpenSSL's MAC bit for bit: no new
    // derivation is needed for the response.
    uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
    size_t mac_len;
    TEST_ASSERT_OK(cmp_mac_compute(g_ctx, mac, sizeof(mac), &mac_len, &key, m.content));
    CU_ASSERT_TRUE(mac_len == m.prot.len && memcmp(mac, m.prot.p, mac_len) == 0);

    // cmp_protect_put_mac appends [0] PKIProtection to a builder holding the content.
    der_builder b;
    der_builder_init(&b, 0);
    der_mark outer;
    der_open_hint(&b, &outer, DER_TAG_SEQUENCE, 3);
    const size_t start = b.len;
    der_put_raw(&b, m.content);
    TEST_ASSERT_OK(
        cmp_protect_put_mac(g_ctx, &b, &key, cm_span_make(b.buf + start, b.len - start)));
    der_close(&b, &outer);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    CU_ASSERT_TRUE(out.len == m.len && memcmp(out.p, m.buf, m.len) == 0);
    CU_ASSERT_TRUE(ossl_validate(out, SECRET, NULL));
    CU_ASSERT_FALSE(ossl_validate(out, "other-secret", NULL));
    der_builder_cleanup(&b);

    // Fresh parameters (SHA-512 OWF, HMAC-SHA512, 1000 iterations, 24-octet salt) and another
    // secret: our protectionAlg goes into a rebuilt header.
    cmp_mac_key fresh;
    TEST_ASSERT_OK(cmp_mac_key_new_pbm(g_ctx, &fresh, CM_SPAN_LIT("line-8-secret"), CMP_HASH_SHA512,
                                       CMP_HASH_SHA512, 1000, 24));
    uint8_t algbuf[256];
    der_builder ab;
    der_builder_init_fixed(&ab, algbuf, sizeof(algbuf));
    cmp_mac_key_put_alg(&ab, &fresh);
    cm_span newalg;
    TEST_ASSERT_OK(der_builder_finish(&ab, &newalg));
    CU_ASSERT_TRUE(cmp_mac_key_matches(g_ctx, &fresh, newalg));
    CU_ASSERT_FALSE(cmp_mac_key_matches(g_ctx, &key, newalg));
    // header' = header with [1] replaced.
    der_builder hb;
    der_builder_init(&hb, 0);
    der_reader hr;
    der_reader h;
    der_reader_init(&hr, m.header);
    TEST_ASSERT_OK(der_enter(&hr, DER_TAG_SEQUENCE, &h));
    der_mark hm;
    der_open_hint(&hb, &hm, DER_TAG_SEQUENCE, 3);
    while (!der_reader_empty(&h)) {
        uint32_t tag;
        cm_span whole;
        TEST_ASSERT_OK(der_get_any(&h, &tag, NULL, &whole));
        if (tag == DER_CONTEXT_CONS(1)) {
            der_mark t;
            der_open(&hb, &t, DER_CONTEXT_CONS(1));
            der_put_raw(&hb, newalg);
            der_close(&hb, &t);
        } else {
            der_put_raw(&hb, whole);
        }
    }
    der_close(&hb, &hm);
    der_put_raw(&hb, m.body);
    cm_span content2;
    TEST_ASSERT_OK(der_builder_finish(&hb, &content2));
    TEST_ASSERT_OK(cmp_mac_compute(g_ctx, mac, sizeof(mac), &mac_len, &fresh, content2));
    CU_ASSERT_EQUAL(mac_len, 64);
    der_builder mb;
    const cm_span prot = cm_span_make(mac, mac_len);
    msg_build(&mb, content2, &prot, cm_span_make(NULL, 0));
    TEST_ASSERT_OK(der_builder_finish(&mb, &out));
    CU_ASSERT_TRUE(ossl_validate(out, "line-8-secret", NULL));
    CU_ASSERT_FALSE(ossl_validate(out, SECRET, NULL));
    // And we verify what we produced, from the bytes alone.
    test_msg m2;
    memset(&m2, 0, sizeof(m2));
    m2.buf = (uint8_t *)(uintptr_t)out.p;
    m2.len = out.len;
    CU_ASSERT_FATAL(msg_split(&m2));
    cmp_mac_key k2;
    TEST_ASSERT_OK(cmp_protect_verify_mac(g_ctx, &k2, m2.alg, CM_SPAN_LIT("line-8-secret"),
                                          CMP_SECRET_PASSWORD, m2.content, m2.prot, m2.unused,
                                          NULL));
    CU_ASSERT_TRUE(k2.key_len == fresh.key_len && memcmp(k2.key, fresh.key, k2.key_len) == 0);
    der_builder_cleanup(&mb);
    der_builder_cleanup(&hb);
    cmp_mac_key_cleanse(&k2);
    cmp_mac_key_cleanse(&fresh);
    cmp_mac_key_cleanse(&key);
    msg_free(&m);
}

// --- PBMAC1 -------------------------------------------------------------------------------

static void test_cmp_protect_pbmac1_matches_independent_computation(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_pbm.der"));
    const uint8_t salt[16] = {0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80,
                              0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x01};
    const struct {
        const char *prf_name, *mac_name;
        cm_span prf, mac;
        uint64_t iter, key_len;
        size_t want_key_len;
    } cases[] = {
        {"SHA256", "SHA256", OID(DER_OID_HMAC_SHA256), OID(DER_OID_HMAC_SHA256), 10000, 32, 32},
        {"SHA512", "SHA512", OID(DER_OID_HMAC_SHA512), OID(DER_OID_HMAC_SHA512), 262144, 64, 64},
        {"SHA384", "SHA256", OID(DER_OID_HMAC_SHA384), OID(DER_OID_HMAC_SHA256), 1000, 0, 32},
    };
    uint8_t pp[4096];
    const size_t pp_len = protected_part(pp, sizeof(pp), m.content);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[256];
        cm_span alg = make_pbmac1_alg(buf, sizeof(buf), cm_span_make(salt, sizeof(salt)),
                                      cases[i].iter, cases[i].key_len, cases[i].prf, cases[i].mac);
        cmp_mac_key key;
        TEST_ASSERT_OK(
            cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
        CU_ASSERT_EQUAL(key.kind, CMP_PROT_PBMAC1);
        CU_ASSERT_EQUAL(key.key_len, cases[i].want_key_len);
        // OpenSSL, independently: PBKDF2 then HMAC over the ProtectedPart DER.
        uint8_t want_key[64];
        CU_ASSERT_FATAL(PKCS5_PBKDF2_HMAC(SECRET, (int)strlen(SECRET), salt, sizeof(salt),
                                          (int)cases[i].iter,
                                          EVP_get_digestbyname(cases[i].prf_name),
                                          (int)cases[i].want_key_len, want_key) == 1);
        CU_ASSERT_EQUAL(memcmp(key.key, want_key, cases[i].want_key_len), 0);
        uint8_t want_mac[64];
        size_t want_mac_len = 0;
        CU_ASSERT_FATAL(EVP_Q_mac(NULL, "HMAC", NULL, cases[i].mac_name, NULL, want_key,
                                  cases[i].want_key_len, pp, pp_len, want_mac, sizeof(want_mac),
                                  &want_mac_len) != NULL);
        uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
        size_t mac_len;
        TEST_ASSERT_OK(cmp_mac_compute(g_ctx, mac, sizeof(mac), &mac_len, &key, m.content));
        CU_ASSERT_TRUE(mac_len == want_mac_len && memcmp(mac, want_mac, mac_len) == 0);
        // The whole verify path with that MAC; and a wrong secret.
        cmp_mac_key k2;
        TEST_ASSERT_OK(cmp_protect_verify_mac(g_ctx, &k2, alg, CM_SPAN_LIT(SECRET),
                                              CMP_SECRET_PASSWORD, m.content,
                                              cm_span_make(want_mac, want_mac_len), 0, NULL));
        CU_ASSERT_TRUE(cmp_mac_key_matches(g_ctx, &k2, alg));
        if (cases[i].iter <= 10000) {
            TEST_ASSERT_CODE(cmp_protect_verify_mac(g_ctx, &k2, alg, CM_SPAN_LIT("wrong"),
                                                    CMP_SECRET_PASSWORD, m.content,
                                                    cm_span_make(want_mac, want_mac_len), 0, NULL),
                             CMP_E_PROT_MAC_MISMATCH);
        }
        // The response's protectionAlg is the request's, byte for byte (RFC 9483 §3.2), and
        // a fresh key encodes the same parameters (keyLength always present).
        der_builder b;
        uint8_t enc[256];
        der_builder_init_fixed(&b, enc, sizeof(enc));
        cmp_mac_key_put_alg(&b, &key);
        cm_span ours;
        TEST_ASSERT_OK(der_builder_finish(&b, &ours));
        CU_ASSERT_TRUE(cm_span_eq(ours, alg));
        CU_ASSERT_TRUE(cmp_mac_key_matches(g_ctx, &key, ours));
        key.alg_len = 0; // forget the request's encoding: ours from the fields
        der_builder_init_fixed(&b, enc, sizeof(enc));
        cmp_mac_key_put_alg(&b, &key);
        TEST_ASSERT_OK(der_builder_finish(&b, &ours));
        CU_ASSERT_TRUE(cmp_mac_key_matches(g_ctx, &key, ours));
        if (cases[i].key_len != 0) {
            // Ours omits the NULL parameters of the HMAC AlgorithmIdentifiers.
            CU_ASSERT_EQUAL(alg.len, ours.len + 4);
        }
        cmp_mac_key_cleanse(&k2);
        cmp_mac_key_cleanse(&key);
    }
    // A fresh PBMAC1 key for a message we start, checked the same way.
    cmp_mac_key fresh;
    TEST_ASSERT_OK(cmp_mac_key_new_pbmac1(g_ctx, &fresh, CM_SPAN_LIT(SECRET), CMP_HASH_SHA256,
                                          CMP_HASH_SHA512, 2000, 16, 48));
    uint8_t want_key[64];
    CU_ASSERT_FATAL(PKCS5_PBKDF2_HMAC(SECRET, (int)strlen(SECRET), fresh.salt, 16, 2000,
                                      EVP_sha256(), 48, want_key) == 1);
    CU_ASSERT_EQUAL(memcmp(fresh.key, want_key, 48), 0);
    TEST_ASSERT_CODE(cmp_mac_key_new_pbmac1(g_ctx, &fresh, CM_SPAN_LIT(SECRET), CMP_HASH_SHA1,
                                            CMP_HASH_SHA256, 2000, 16, 32),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    cmp_mac_key_cleanse(&fresh);
    msg_free(&m);
}

static void test_cmp_protect_pbmac1_rejects_bad_parameters(void)
{
    const uint8_t salt[16] = {7};
    const cm_span s = cm_span_make(salt, sizeof(salt));
    const cm_span h256 = OID(DER_OID_HMAC_SHA256);
    const cm_span h512 = OID(DER_OID_HMAC_SHA512);
    uint8_t buf[512];
    cmp_mac_key key;
    const struct {
        cm_span salt;
        uint64_t iter, key_len;
        cm_span prf, mac;
        uint32_t want;
    } cases[] = {
        {s, 300001, 64, h512, h512, CMP_E_PROT_ITERATIONS},
        {s, 999, 32, h256, h256, CMP_E_PROT_ITERATIONS},
        {s, 1000000000, 32, h256, h256, CMP_E_PROT_ITERATIONS}, // refused before any work
        {s, 1000, 65, h256, h256, CMP_E_PROT_KEY_LEN},
        {s, 1000, 15, h256, h256, CMP_E_PROT_KEY_LEN},
        // SHA-1 needs allow_sha1 (the prf's default is HMAC-SHA1); SHA-224 is in the table.
        {s, 1000, 32, {NULL, 0}, h256, CMP_E_PROT_ALG_POLICY},
        {s, 1000, 32, OID(DER_OID_HMAC_SHA1), h256, CMP_E_PROT_ALG_POLICY},
        {s, 1000, 32, OID(DER_OID_HMAC_SHA224), h256, CM_OK},
        {s, 1000, 32, h256, OID(DER_OID_HMAC_SHA1), CMP_E_PROT_ALG_POLICY},
        {s, 1000, 32, h256, OID(DER_OID_SHA256), CMP_E_PROT_ALG_UNSUPPORTED},
        {{buf + 300, 65}, 1000, 32, h256, h256, CMP_E_PROT_SALT_LEN},
    };
    memset(buf + 300, 1, 100);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cm_span alg = make_pbmac1_alg(buf, 300, cases[i].salt, cases[i].iter, cases[i].key_len,
                                      cases[i].prf, cases[i].mac);
        TEST_ASSERT_CODE(
            cmp_mac_key_derive(g_strict, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
            cases[i].want);
    }
    // keyDerivationFunc other than PBKDF2 (scrypt, 1.3.6.1.4.1.11591.4.11).
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    der_mark a;
    der_mark p;
    der_mark k;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBMAC1);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_open(&b, &k, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, "\x2b\x06\x01\x04\x01\xda\x47\x04\x0b");
    der_put_null(&b);
    der_close(&b, &k);
    put_algid(&b, h256, false);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span alg;
    TEST_ASSERT_OK(der_builder_finish(&b, &alg));
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    // salt otherSource (an AlgorithmIdentifier) is not supported.
    der_builder_init_fixed(&b, buf, sizeof(buf));
    der_mark kp;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBMAC1);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_open(&b, &k, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBKDF2);
    der_open(&b, &kp, DER_TAG_SEQUENCE);
    put_algid(&b, OID(DER_OID_SHA256), false);
    der_put_u64(&b, 1000);
    der_close(&b, &kp);
    der_close(&b, &k);
    put_algid(&b, h256, false);
    der_close(&b, &p);
    der_close(&b, &a);
    TEST_ASSERT_OK(der_builder_finish(&b, &alg));
    TEST_ASSERT_CODE(cmp_mac_key_derive(g_ctx, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    // Own bounds: PBMAC1's maximum is separate from PBM's.
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.pbmac1_max_iterations = 5000;
    cmp_protect_ctx *c = NULL;
    TEST_ASSERT_OK(cmp_protect_ctx_new(&c, NULL, NULL, &lim));
    alg = make_pbmac1_alg(buf, sizeof(buf), s, 5001, 32, h256, h256);
    TEST_ASSERT_CODE(cmp_mac_key_derive(c, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD),
                     CMP_E_PROT_ITERATIONS);
    alg = make_pbmac1_alg(buf, sizeof(buf), s, 5000, 32, h256, h256);
    TEST_ASSERT_OK(cmp_mac_key_derive(c, &key, alg, CM_SPAN_LIT(SECRET), CMP_SECRET_PASSWORD));
    cmp_protect_ctx_free(c);
    cmp_mac_key_cleanse(&key);
}

// --- signatures ---------------------------------------------------------------------------

// The DER certificate used as extraCerts[0]: the message's own when present, else |file|.
static bool signer_cert(const test_msg *m, const char *file, uint8_t **out_buf, cm_span *out)
{
    *out_buf = NULL;
    if (m->certs.len > 0) {
        der_reader r;
        der_reader_init(&r, m->certs);
        return cm_ok(der_get_element(&r, DER_TAG_SEQUENCE, out));
    }
    size_t len;
    if (!load_file(file, out_buf, &len)) {
        return false;
    }
    *out = cm_span_make(*out_buf, len);
    return true;
}

static void test_cmp_protect_sig_openssl_requests_verify(void)
{
    const struct {
        const char *msg, *cert;
    } cases[] = {
        {"ir_sig_ec.der", "ec.der"},
        {"ir_sig_rsa.der", "rsa.der"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_msg m;
        CU_ASSERT_FATAL(msg_load(&m, cases[i].msg));
        cmp_prot_kind kind;
        TEST_ASSERT_OK(cmp_protect_kind(&kind, m.alg));
        CU_ASSERT_EQUAL(kind, CMP_PROT_SIGNATURE);
        uint8_t *cbuf;
        cm_span cert;
        CU_ASSERT_FATAL(signer_cert(&m, cases[i].cert, &cbuf, &cert));
        TEST_ASSERT_OK(
            cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused, cert, NULL));
        // Every flipped bit of the protected part, and of the signature, fails.
        uint8_t *content = (uint8_t *)(uintptr_t)m.content.p;
        size_t failures = 0;
        for (size_t j = 0; j < m.content.len; j++) {
            // Bytes of protectionAlg change the algorithm itself; skip them here (the
            // algorithm is judged separately below).
            if (content + j >= m.alg.p && content + j < m.alg.p + m.alg.len) {
                failures++;
                continue;
            }
            content[j] ^= 0x04;
            failures +=
                cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused, cert, NULL)
                    .code == CMP_E_PROT_SIG_INVALID;
            content[j] ^= 0x04;
        }
        CU_ASSERT_EQUAL(failures, m.content.len);
        uint8_t *prot = (uint8_t *)(uintptr_t)m.prot.p;
        failures = 0;
        for (size_t j = 0; j < m.prot.len; j++) {
            prot[j] ^= 0x10;
            failures +=
                cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused, cert, NULL)
                    .code == CMP_E_PROT_SIG_INVALID;
            prot[j] ^= 0x10;
        }
        CU_ASSERT_EQUAL(failures, m.prot.len);
        TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, m.alg, m.content,
                                                cm_span_make(m.prot.p, m.prot.len - 1), 0, cert,
                                                NULL),
                         CMP_E_PROT_SIG_INVALID);
        TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, 3, cert, NULL),
                         CMP_E_PROT_BITS);
        TEST_ASSERT_OK(
            cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused, cert, NULL));
        free(cbuf);
        msg_free(&m);
    }
}

static void test_cmp_protect_sig_sha1_is_bad_alg(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_sig_sha1.der")); // openssl cmp -digest sha1
    uint8_t *cbuf;
    cm_span cert;
    CU_ASSERT_FATAL(signer_cert(&m, "ec.der", &cbuf, &cert));
    TEST_ASSERT_CODE(
        cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused, cert, NULL),
        CMP_E_PROT_ALG_WEAK);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_ALG_WEAK), CM_FAIL_BAD_ALG);
    // sha1WithRSAEncryption by hand.
    const uint8_t sha1rsa[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                               0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00};
    TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, cm_span_make(sha1rsa, sizeof(sha1rsa)),
                                            m.content, m.prot, m.unused, cert, NULL),
                     CMP_E_PROT_ALG_WEAK);
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, cm_span_make(sha1rsa, sizeof(sha1rsa)),
                                            m.content, m.prot, m.unused, cert, &why),
                     CMP_E_PROT_ALG_WEAK);
    CU_ASSERT_STRING_EQUAL(
        why.text, "signature algorithm sha1WithRSAEncryption is not allowed (protection_algs)");
    // An unknown algorithm, named by its OID.
    const uint8_t unknown[] = {0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04};
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, cm_span_make(unknown, sizeof(unknown)),
                                            m.content, m.prot, m.unused, cert, &why),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    CU_ASSERT_STRING_EQUAL(why.text, "the protection algorithm 1.2.3.4 is not supported");
    free(cbuf);
    msg_free(&m);
}

static void test_cmp_protect_sig_key_mismatch_and_bad_cert(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_sig_ec.der"));
    const char *others[] = {"rsa.der", "ed.der"};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *buf;
        size_t len;
        CU_ASSERT_FATAL(load_file(others[i], &buf, &len));
        TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused,
                                                cm_span_make(buf, len), NULL),
                         CMP_E_PROT_KEY_MISMATCH);
        // A truncated certificate.
        TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused,
                                                cm_span_make(buf, len - 1), NULL),
                         CMP_E_PROT_CERT);
        free(buf);
    }
    // Another EC key (the CA's) of the right type: the signature just does not verify.
    uint8_t *buf;
    size_t len;
    CU_ASSERT_FATAL(load_file("ca.der", &buf, &len));
    TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_crmf, m.alg, m.content, m.prot, m.unused,
                                            cm_span_make(buf, len), NULL),
                     CMP_E_PROT_SIG_INVALID);
    free(buf);
    msg_free(&m);
}

static void test_cmp_protect_cert_spki_matches_openssl(void)
{
    const char *files[] = {"ec.der", "rsa.der", "ed.der", "ca.der"};
    for (size_t i = 0; i < 4; i++) {
        uint8_t *buf;
        size_t len;
        CU_ASSERT_FATAL(load_file(files[i], &buf, &len));
        cm_span spki;
        TEST_ASSERT_OK(cmp_protect_cert_spki(&spki, cm_span_make(buf, len)));
        const unsigned char *p = buf;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        CU_ASSERT_FATAL(x != NULL);
        unsigned char *der = NULL;
        const int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
        CU_ASSERT_TRUE(n > 0 && (size_t)n == spki.len && memcmp(der, spki.p, spki.len) == 0);
        OPENSSL_free(der);
        X509_free(x);
        for (size_t cut = 0; cut < len; cut += 7) {
            TEST_ASSERT_CODE(cmp_protect_cert_spki(&spki, cm_span_make(buf, cut)), CMP_E_PROT_CERT);
        }
        free(buf);
    }
}

// An in-process signer for the cmp_signer callback (the HSM takes this place in the server).
typedef struct test_signer_key {
    EVP_PKEY *key;
    bool pss; // RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32
} test_signer_key;

static cm_result test_sign(void *arg, uint8_t *out, size_t cap, size_t *out_len, cm_span tbs)
{
    const test_signer_key *k = arg;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const int id = EVP_PKEY_get_base_id(k->key);
    const char *md = (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) ? NULL : "SHA256";
    size_t n = cap;
    bool ok = m != NULL && EVP_DigestSignInit_ex(m, &pctx, md, NULL, NULL, k->key, NULL) == 1;
    if (ok && k->pss) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", NULL) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0;
    }
    ok = ok && EVP_DigestSign(m, out, &n, tbs.p, tbs.len) == 1;
    EVP_MD_CTX_free(m);
    *out_len = n;
    return cm_result_make(ok ? CM_OK : CM_E_CRYPTO);
}

// make_pss_alg writes id-RSASSA-PSS with { [0] sha256, [1] mgf1(sha256), [2] 32 } (RFC 4055).
static cm_span make_pss_alg(uint8_t *buf, size_t cap)
{
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_mark a;
    der_mark p;
    der_mark h;
    der_mark g;
    der_mark gp;
    der_mark sl;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_RSASSA_PSS);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_open(&b, &h, DER_CONTEXT_CONS(0));
    put_algid(&b, OID(DER_OID_SHA256), false);
    der_close(&b, &h);
    der_open(&b, &g, DER_CONTEXT_CONS(1));
    der_open(&b, &gp, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_MGF1);
    put_algid(&b, OID(DER_OID_SHA256), false);
    der_close(&b, &gp);
    der_close(&b, &g);
    der_open(&b, &sl, DER_CONTEXT_CONS(2));
    der_put_u64(&b, 32);
    der_close(&b, &sl);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span out = {NULL, 0};
    CU_ASSERT_FATAL(cm_ok(der_builder_finish(&b, &out)));
    return out;
}

static cm_result test_sign_fails(void *arg, uint8_t *out, size_t cap, size_t *out_len, cm_span tbs)
{
    (void)arg, (void)out, (void)cap, (void)tbs;
    *out_len = 0;
    return cm_result_make(CM_CODE(CM_CLASS_HSM, 0x30)); // CKR_DEVICE_ERROR
}

// resign strips |m|'s protection, optionally swaps protectionAlg (|new_alg| len > 0, which
// also drops senderKID), signs with |signer| and adds |cert| as extraCerts[0].
static cm_span resign(der_builder *out, const test_msg *m, cm_span new_alg,
                      const cmp_signer *signer, cm_span cert, cm_arena *arena)
{
    der_builder hb;
    der_builder_init(&hb, 0);
    if (new_alg.len > 0) {
        der_reader hr;
        der_reader h;
        der_reader_init(&hr, m->header);
        CU_ASSERT_FATAL(cm_ok(der_enter(&hr, DER_TAG_SEQUENCE, &h)));
        der_mark hm;
        der_mark t;
        der_open_hint(&hb, &hm, DER_TAG_SEQUENCE, 3);
        while (!der_reader_empty(&h)) {
            uint32_t tag;
            cm_span whole;
            CU_ASSERT_FATAL(cm_ok(der_get_any(&h, &tag, NULL, &whole)));
            if (tag == DER_CONTEXT_CONS(1)) {
                der_open(&hb, &t, DER_CONTEXT_CONS(1));
                der_put_raw(&hb, new_alg);
                der_close(&hb, &t);
            } else if (tag != DER_CONTEXT_CONS(2)) {
                der_put_raw(&hb, whole);
            }
        }
        der_close(&hb, &hm);
        der_put_raw(&hb, m->body);
    } else {
        der_put_raw(&hb, m->content);
    }
    cm_span content;
    CU_ASSERT_FATAL(cm_ok(der_builder_finish(&hb, &content)));
    // Build SEQUENCE { content, protection, extraCerts } with the protection from our code.
    der_builder_init(out, 0);
    der_mark outer;
    der_mark c;
    der_mark s;
    der_open_hint(out, &outer, DER_TAG_SEQUENCE, 3);
    const size_t start = out->len;
    der_put_raw(out, content);
    der_builder_cleanup(&hb);
    TEST_ASSERT_OK(cmp_protect_put_signed(out, arena, signer,
                                          cm_span_make(out->buf + start, out->len - start)));
    der_open_hint(out, &c, DER_CONTEXT_CONS(1), 3);
    der_open_hint(out, &s, DER_TAG_SEQUENCE, 3);
    der_put_raw(out, cert);
    der_close(out, &s);
    der_close(out, &c);
    der_close(out, &outer);
    cm_span got = {NULL, 0};
    TEST_ASSERT_OK(der_builder_finish(out, &got));
    return got;
}

static void test_cmp_protect_sig_produced_accepted_by_openssl(void)
{
    cm_arena arena;
    cm_arena_init(&arena, 0, 1u << 20);
    uint8_t pss[128];
    const cm_span pss_alg = make_pss_alg(pss, sizeof(pss));
    const struct {
        const char *msg, *key, *cert;
        const uint8_t *alg; // NULL: keep the request's protectionAlg
        size_t alg_len;
        bool pss;
    } cases[] = {
        {"ir_sig_ec.der", "ec.key", "ec.der", NULL, 0, false},
        {"ir_sig_rsa.der", "rsa.key", "rsa.der", NULL, 0, false},
        // RSASSA-PSS: the header is rewritten to the PSS AlgorithmIdentifier.
        {"ir_sig_rsa.der", "rsa.key", "rsa.der", pss_alg.p, pss_alg.len, true},
        // OpenSSL 3.0's client cannot sign CMP with Ed25519; the header is rewritten to id-Ed25519.
        {"ir_sig_ec.der", "ed.key", "ed.der", (const uint8_t *)"\x30\x05\x06\x03\x2b\x65\x70", 7,
         false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_msg m;
        CU_ASSERT_FATAL(msg_load(&m, cases[i].msg));
        EVP_PKEY *key = load_key(cases[i].key);
        X509 *x = load_cert(cases[i].cert);
        uint8_t *cbuf = NULL;
        size_t clen = 0;
        CU_ASSERT_FATAL(key != NULL && x != NULL && load_file(cases[i].cert, &cbuf, &clen));
        const cm_span cert = cm_span_make(cbuf, clen);
        test_signer_key sk = {key, cases[i].pss};
        cm_span alg = cm_span_make(cases[i].alg, cases[i].alg_len);
        cmp_signer signer = {alg.len > 0 ? alg : m.alg, test_sign, &sk};
        der_builder b;
        cm_span out = resign(&b, &m, alg, &signer, cert, &arena);
        // Accepted by OpenSSL with the signer certificate as trust anchor, and by us.
        CU_ASSERT_TRUE(ossl_validate(out, NULL, x));
        test_msg m2;
        memset(&m2, 0, sizeof(m2));
        m2.buf = (uint8_t *)(uintptr_t)out.p;
        m2.len = out.len;
        CU_ASSERT_FATAL(msg_split(&m2));
        uint8_t *c2buf;
        cm_span c2;
        CU_ASSERT_FATAL(signer_cert(&m2, "", &c2buf, &c2));
        CU_ASSERT_TRUE(c2.len == cert.len && memcmp(c2.p, cert.p, cert.len) == 0);
        TEST_ASSERT_OK(
            cmp_protect_verify_sig(&g_crmf, m2.alg, m2.content, m2.prot, m2.unused, c2, NULL));
        // A tampered body byte is refused by both.
        uint8_t *last = (uint8_t *)(uintptr_t)(m2.content.p + m2.content.len - 1);
        *last ^= 1;
        TEST_ASSERT_CODE(
            cmp_protect_verify_sig(&g_crmf, m2.alg, m2.content, m2.prot, m2.unused, c2, NULL),
            CMP_E_PROT_SIG_INVALID);
        CU_ASSERT_FALSE(ossl_validate(out, NULL, x));
        *last ^= 1;
        // The asynchronous halves give the same bytes to sign; RSA PKCS#1 v1.5 is
        // deterministic, so the result must be identical there.
        cm_span tbs;
        TEST_ASSERT_OK(cmp_protect_sign_input(&arena, &tbs, m2.content));
        uint8_t pp[4096];
        const size_t pp_len = protected_part(pp, sizeof(pp), m2.content);
        CU_ASSERT_TRUE(tbs.len == pp_len && memcmp(tbs.p, pp, pp_len) == 0);
        if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA && !cases[i].pss) {
            uint8_t sig[512];
            size_t sig_len;
            TEST_ASSERT_OK(test_sign(&sk, sig, sizeof(sig), &sig_len, tbs));
            der_builder pb;
            der_builder_init(&pb, 0);
            cmp_protect_put_signature(&pb, cm_span_make(sig, sig_len));
            cm_span protection;
            TEST_ASSERT_OK(der_builder_finish(&pb, &protection));
            const uint8_t *in_msg = m2.prot.p - (protection.len - m2.prot.len);
            CU_ASSERT_EQUAL(memcmp(in_msg, protection.p, protection.len), 0);
            der_builder_cleanup(&pb);
        }
        free(c2buf);
        der_builder_cleanup(&b);
        free(cbuf);
        X509_free(x);
        EVP_PKEY_free(key);
        msg_free(&m);
        cm_arena_reset(&arena);
    }
    // A failing signer's code comes back and poisons the builder.
    der_builder b;
    der_builder_init(&b, 0);
    cmp_signer bad = {cm_span_make(NULL, 0), test_sign_fails, NULL};
    TEST_ASSERT_CODE(cmp_protect_put_signed(&b, &arena, &bad, CM_SPAN_LIT("\x02\x01\x00")),
                     CM_CODE(CM_CLASS_HSM, 0x30));
    CU_ASSERT_FALSE(der_builder_ok(&b));
    der_builder_cleanup(&b);
    cm_arena_cleanup(&arena);
}

// --- the shared context from several threads --------------------------------------------

typedef struct test_thread_job {
    const test_msg *m;
    size_t ok;
} test_thread_job;

static void *test_verify_thread(void *arg)
{
    test_thread_job *job = arg;
    for (int i = 0; i < 40; i++) {
        cmp_mac_key key;
        job->ok += cm_ok(cmp_protect_verify_mac(g_ctx, &key, job->m->alg, CM_SPAN_LIT(SECRET),
                                                CMP_SECRET_PASSWORD, job->m->content, job->m->prot,
                                                job->m->unused, NULL));
        cmp_mac_key_cleanse(&key);
    }
    return NULL;
}

// cmp_protect_ctx is shared read-only: four threads verify with it at once.
static void test_cmp_protect_ctx_shared_by_threads(void)
{
    test_msg m;
    CU_ASSERT_FATAL(msg_load(&m, "ir_pbm_sha512.der"));
    pthread_t th[4];
    test_thread_job jobs[4];
    for (size_t i = 0; i < 4; i++) {
        jobs[i].m = &m;
        jobs[i].ok = 0;
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, test_verify_thread, &jobs[i]) == 0);
    }
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_FATAL(pthread_join(th[i], NULL) == 0);
        CU_ASSERT_EQUAL(jobs[i].ok, 40);
    }
    msg_free(&m);
}

// --- suite --------------------------------------------------------------------------------

// mk_signer makes a self-signed certificate NAME.pem, and its DER copy NAME.der, for a new key
// NAME.key of |type|.
static int mk_signer(const char *name, test_pki_key_type type, const char *subj, const char *log)
{
    char key[320];
    char pem[320];
    char der[320];
    char fk[64];
    char fp[64];
    char fd[64];
    (void)snprintf(fk, sizeof(fk), "%s.key", name);
    (void)snprintf(fp, sizeof(fp), "%s.pem", name);
    (void)snprintf(fd, sizeof(fd), "%s.der", name);
    tpath(key, sizeof(key), fk);
    tpath(pem, sizeof(pem), fp);
    tpath(der, sizeof(der), fd);
    const test_pki_cert_spec spec = {
        .subject = subj, .days = 30, .key_type = type, .der_path = der};
    return test_pki_make_ca(key, pem, &spec, log) ? 0 : 1;
}

// mk_request runs the real client against its in-process mock server and keeps the ir.
static int mk_request(const char *out_name, const char *const extra[], const char *log)
{
    char ca[320];
    char cakey[320];
    char dev[320];
    char out[320];
    char certout[320];
    tpath(ca, sizeof(ca), "ca.pem");
    tpath(cakey, sizeof(cakey), "ca.key");
    tpath(dev, sizeof(dev), "dev.key");
    tpath(out, sizeof(out), out_name);
    tpath(certout, sizeof(certout), "enrolled.pem");
    const char *argv[48] = {"openssl",   "cmp",     "-cmd",     "ir",       "-use_mock_srv",
                            "-srv_cert", ca,        "-srv_key", cakey,      "-rsp_cert",
                            ca,          "-newkey", dev,        "-subject", "/CN=device-0042",
                            "-reqout",   out,       "-certout", certout,    "-unprotected_errors"};
    size_t n = 20;
    for (size_t i = 0; extra[i] != NULL && n < 47; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    (void)test_run(argv, log); // the mock answers with its own certificate; the ir is the point
    uint8_t *buf;
    size_t len;
    if (!test_read_file(out, &buf, &len)) {
        (void)fprintf(stderr, "openssl cmp wrote no %s; see %s\n", out_name, log);
        return 1;
    }
    free(buf);
    return 0;
}

static int cmp_protect_suite_init(void)
{
    crmf_alg_policy sha1;
    crmf_alg_policy_default(&sha1, true);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.policy = &sha1;
    // The fixtures and the conformance vectors use counts up to 262144: the bounds raised as an
    // operator would (max_pbm_iterations, max_pbmac1_iterations); g_strict keeps the defaults.
    lim.pbm_max_iterations = 100000;
    lim.pbmac1_max_iterations = 300000;
    if (!test_tmpdir(g_dir, sizeof(g_dir), "cmp-protect") ||
        !cm_ok(cmp_protect_ctx_new(&g_ctx, NULL, NULL, &lim)) ||
        !cm_ok(cmp_protect_ctx_new(&g_strict, NULL, NULL, NULL)) ||
        !cm_ok(crmf_crypto_init(&g_crmf, NULL, NULL))) {
        return 1;
    }
    char log[320];
    tpath(log, sizeof(log), "openssl.log");
    char dev[320];
    if (mk_signer("ca", TEST_PKI_EC_P256, "/CN=certmint protect test CA", log) != 0 ||
        mk_signer("ec", TEST_PKI_EC_P256, "/O=certmint test/CN=device-signer", log) != 0 ||
        mk_signer("rsa", TEST_PKI_RSA_2048, "/O=certmint test/CN=rsa-signer", log) != 0 ||
        mk_signer("ed", TEST_PKI_ED25519, "/O=certmint test/CN=device-signer", log) != 0 ||
        !test_pki_make_key(tpath(dev, sizeof(dev), "dev.key"), TEST_PKI_EC_P256, log)) {
        return 1;
    }
    const char *pbm_common[] = {"-ref",     "CN=device-line-7", "-secret",     "pass:" SECRET,
                                "-srv_ref", "CN=device-line-7", "-srv_secret", "pass:" SECRET};
    struct {
        const char *out;
        const char *args[8];
    } reqs[] = {
        {"ir_pbm.der", {NULL}},
        {"ir_pbm_sha512.der", {"-digest", "sha512", "-mac", "hmacWithSHA512", NULL}},
        {"ir_pbm_sha1.der", {"-digest", "sha1", "-mac", "hmacWithSHA224", NULL}},
        {"ir_pbm_sha384.der", {"-digest", "sha384", "-mac", "hmacWithSHA1", NULL}},
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        const char *args[20];
        size_t n = 0;
        for (size_t j = 0; j < 8; j++) {
            args[n++] = pbm_common[j];
        }
        for (size_t j = 0; reqs[i].args[j] != NULL; j++) {
            args[n++] = reqs[i].args[j];
        }
        args[n] = NULL;
        if (mk_request(reqs[i].out, args, log) != 0) {
            return 1;
        }
    }
    const struct {
        const char *out, *name, *digest;
    } sreqs[] = {
        {"ir_sig_ec.der", "ec", "sha256"},
        {"ir_sig_rsa.der", "rsa", "sha256"},
        {"ir_sig_sha1.der", "ec", "sha1"},
    };
    for (size_t i = 0; i < sizeof(sreqs) / sizeof(sreqs[0]); i++) {
        char cert[320];
        char key[320];
        char fc[64];
        char fk[64];
        (void)snprintf(fc, sizeof(fc), "%s.pem", sreqs[i].name);
        (void)snprintf(fk, sizeof(fk), "%s.key", sreqs[i].name);
        const char *args[] = {"-cert",
                              tpath(cert, sizeof(cert), fc),
                              "-key",
                              tpath(key, sizeof(key), fk),
                              "-srv_trusted",
                              cert,
                              "-digest",
                              sreqs[i].digest,
                              NULL};
        if (mk_request(sreqs[i].out, args, log) != 0) {
            return 1;
        }
    }
    return 0;
}

static int cmp_protect_suite_cleanup(void)
{
    cmp_protect_ctx_free(g_ctx);
    cmp_protect_ctx_free(g_strict);
    g_ctx = NULL;
    g_strict = NULL;
    crmf_crypto_cleanup(&g_crmf);
    (void)test_rmtree(g_dir);
    return 0;
}

int test_cmp_protect_register(void);
int test_cmp_protect_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_cmp_protect_ctx_rejects_bad_limits),
        TEST_CASE(test_cmp_protect_kind_and_failinfo),
        TEST_CASE(test_cmp_protect_part_header),
        TEST_CASE(test_cmp_protect_pbm_openssl_requests_verify),
        TEST_CASE(test_cmp_protect_pbm_wrong_secret_fails),
        TEST_CASE(test_cmp_protect_pbm_tampering_fails),
        TEST_CASE(test_cmp_protect_pbm_bounds_checked_before_work),
        TEST_CASE(test_cmp_protect_mac_reasons),
        TEST_CASE(test_cmp_protect_pbm_rejects_bad_parameters),
        TEST_CASE(test_cmp_protect_pbm_produced_accepted_by_openssl),
        TEST_CASE(test_cmp_protect_pbmac1_matches_independent_computation),
        TEST_CASE(test_cmp_protect_pbmac1_rejects_bad_parameters),
        TEST_CASE(test_cmp_protect_sig_openssl_requests_verify),
        TEST_CASE(test_cmp_protect_sig_sha1_is_bad_alg),
        TEST_CASE(test_cmp_protect_sig_key_mismatch_and_bad_cert),
        TEST_CASE(test_cmp_protect_cert_spki_matches_openssl),
        TEST_CASE(test_cmp_protect_sig_produced_accepted_by_openssl),
        TEST_CASE(test_cmp_protect_ctx_shared_by_threads),
    };
    return test_register_suite("cmp_protect", cmp_protect_suite_init, cmp_protect_suite_cleanup,
                               NULL, NULL, tests, TEST_NUM_CASES(tests));
}
