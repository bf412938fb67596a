// Suite "cmp_cms": the CMS structures of central key generation (engine/cmp/cmp_cms.c).
// OpenSSL's CMS implementation is the oracle: what cmp_cms_seal writes for key transport (RSA),
// key agreement (P-256, P-384) and a password must decrypt with CMS_decrypt, and what
// OpenSSL's CMS_encrypt writes must open with cmp_cms_open. X25519/X448, which OpenSSL 3.0's
// CMS cannot do, are checked against our own reader and a wrong key. The SignedData must
// verify with CMS_verify. Every reader has negative tests: a wrong key or secret, PBKDF2
// parameters outside the bounds, a SHA-1 PRF, truncation at every byte.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

static struct {
    crmf_crypto crypto;
    cm_arena arena;
    EVP_PKEY *rsa, *p256, *p384, *x25519, *x448, *ed25519;
    X509 *rsa_cert, *p256_cert;
} g;

static const uint8_t k_ski[20] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                  11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
static const char k_secret[] = "a line secret of some length";

// self_cert makes a self-signed certificate for |key| signed by |signer| (key usage as given;
// SKI k_ski), enough for CMS_decrypt and CMS_verify.
static X509 *self_cert(EVP_PKEY *key, EVP_PKEY *signer, const char *ku)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    bool ok = x != NULL && n != NULL && ski != NULL && X509_set_version(x, 2) == 1 &&
              ASN1_INTEGER_set(X509_get_serialNumber(x), 7) == 1 &&
              X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"cms", -1,
                                         -1, 0) == 1 &&
              X509_set_subject_name(x, n) == 1 && X509_set_issuer_name(x, n) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -60) != NULL &&
              X509_gmtime_adj(X509_getm_notAfter(x), 3600) != NULL &&
              X509_set_pubkey(x, key) == 1 &&
              ASN1_OCTET_STRING_set(ski, k_ski, sizeof(k_ski)) == 1 &&
              X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, 0) == 1;
    if (ok && ku != NULL) {
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, ku);
        ok = e != NULL && X509_add_ext(x, e, -1) == 1;
        X509_EXTENSION_free(e);
    }
    ok = ok && X509_sign(x, signer, EVP_sha256()) > 0;
    X509_NAME_free(n);
    ASN1_OCTET_STRING_free(ski);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int cms_init(void)
{
    cm_arena_init(&g.arena, 0, 0);
    g.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g.p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    g.x25519 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    g.x448 = EVP_PKEY_Q_keygen(NULL, NULL, "X448");
    g.ed25519 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!cm_ok(crmf_crypto_init(&g.crypto, NULL, NULL)) || g.rsa == NULL || g.p256 == NULL ||
        g.p384 == NULL || g.x25519 == NULL || g.x448 == NULL || g.ed25519 == NULL) {
        return 1;
    }
    g.rsa_cert = self_cert(g.rsa, g.rsa, "keyEncipherment");
    g.p256_cert = self_cert(g.p256, g.p256, "digitalSignature, keyAgreement");
    return g.rsa_cert != NULL && g.p256_cert != NULL ? 0 : 1;
}

static int cms_cleanup(void)
{
    crmf_crypto_cleanup(&g.crypto);
    cm_arena_cleanup(&g.arena);
    EVP_PKEY_free(g.rsa);
    EVP_PKEY_free(g.p256);
    EVP_PKEY_free(g.p384);
    EVP_PKEY_free(g.x25519);
    EVP_PKEY_free(g.x448);
    EVP_PKEY_free(g.ed25519);
    X509_free(g.rsa_cert);
    X509_free(g.p256_cert);
    return 0;
}

// spki_of returns |key|'s SubjectPublicKeyInfo DER in the suite's arena.
static cm_span spki_of(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    const int n = i2d_PUBKEY(key, &der);
    CU_ASSERT_FATAL(n > 0);
    uint8_t *p = cm_arena_alloc(&g.arena, (size_t)n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memcpy(p, der, (size_t)n);
    OPENSSL_free(der);
    return cm_span_make(p, (size_t)n);
}

// seal envelopes |content| (type id-data) for |rcpt| and returns the EnvelopedData's body.
static cm_span seal(const cmp_cms_recipient *rcpt, cm_span content)
{
    der_builder b;
    der_builder_init_arena(&b, &g.arena, 1024);
    cm_why why;
    cm_why_clear(&why);
    cm_result r = cmp_cms_seal(&g.crypto, &b, DER_TAG_SEQUENCE, rcpt, CM_SPAN_LIT(DER_OID_CT_DATA),
                               content, &why);
    if (!cm_ok(r)) {
        fprintf(stderr, "\n  seal: %s (%s)\n", cm_result_name(r), why.text);
    }
    TEST_ASSERT_OK(r);
    cm_span env;
    TEST_ASSERT_OK(der_builder_finish(&b, &env));
    der_reader rd;
    cm_span body;
    der_reader_init(&rd, env);
    TEST_ASSERT_OK(der_get_tlv(&rd, DER_TAG_SEQUENCE, &body));
    CU_ASSERT_TRUE(der_reader_empty(&rd));
    return body;
}

// ossl_cms reads the EnvelopedData body |body| with OpenSSL (CMS_ContentInfo_free it).
static CMS_ContentInfo *ossl_cms(cm_span content_type, cm_span body)
{
    der_builder b;
    der_builder_init_arena(&b, &g.arena, body.len + 32);
    cmp_cms_content_info_marshal(&b, content_type, body);
    cm_span ci;
    TEST_ASSERT_OK(der_builder_finish(&b, &ci));
    const unsigned char *p = ci.p;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)ci.len);
    CU_ASSERT_PTR_NOT_NULL(cms);
    return cms;
}

// ossl_decrypt decrypts |body| with OpenSSL using |key| (or |password|) and compares the
// plaintext with |want|.
static bool ossl_decrypt(cm_span body, EVP_PKEY *key, const char *password, cm_span want)
{
    CMS_ContentInfo *cms = ossl_cms(CM_SPAN_LIT(DER_OID_CT_ENVELOPED_DATA), body);
    BIO *out = BIO_new(BIO_s_mem());
    bool ok = cms != NULL && out != NULL;
    if (ok && password != NULL) {
        ok = CMS_decrypt_set1_password(cms, (unsigned char *)(uintptr_t)password,
                                       (ossl_ssize_t)strlen(password)) == 1 &&
             CMS_decrypt(cms, NULL, NULL, NULL, out, CMS_BINARY) == 1;
    } else if (ok) {
        ok = CMS_decrypt(cms, key, NULL, NULL, out, CMS_BINARY) == 1;
    }
    char *data = NULL;
    const long n = ok ? BIO_get_mem_data(out, &data) : 0;
    ok = ok && (size_t)n == want.len && memcmp(data, want.p, want.len) == 0;
    BIO_free(out);
    CMS_ContentInfo_free(cms);
    ERR_clear_error();
    return ok;
}

// open_with opens |body| with |o| and returns the code; on success it compares the plaintext.
static cm_result open_with(cm_span body, const cmp_cms_opener *o, cm_span want)
{
    uint8_t *plain = NULL;
    size_t n = 0;
    cm_span ct;
    cm_why why;
    cm_why_clear(&why);
    cm_result r = cmp_cms_open(&g.crypto, &plain, &n, &ct, body, o, &why);
    if (cm_ok(r)) {
        CU_ASSERT_TRUE(der_oid_is(ct, DER_OID_CT_DATA));
        CU_ASSERT_EQUAL(n, want.len);
        CU_ASSERT_TRUE(n == want.len && memcmp(plain, want.p, n) == 0);
        cmp_cms_secret_free(plain, n);
    } else {
        if (getenv("CM_TEST_VERBOSE") != NULL) {
            fprintf(stderr, "\n  open: %s (%s)\n", cm_result_name(r), why.text);
        }
        CU_ASSERT_PTR_NULL(plain);
        CU_ASSERT_TRUE(why.text[0] != '\0' || r.code == CMP_E_CMS_MALFORMED ||
                       r.code == CMP_E_CMS_RECIPIENT_KEY);
    }
    return r;
}

static cmp_cms_recipient key_rcpt(cmp_cms_recipient_kind kind, EVP_PKEY *key)
{
    return (cmp_cms_recipient){
        .kind = kind, .spki = spki_of(key), .ski = cm_span_make(k_ski, sizeof(k_ski))};
}

#define k_content CM_SPAN_LIT("a private key, say, of forty-odd octets")

static void test_cmp_cms_key_transport_decrypts_with_openssl(void)
{
    const cmp_cms_recipient rc = key_rcpt(CMP_CMS_KTRI, g.rsa);
    const cm_span body = seal(&rc, k_content);
    CU_ASSERT_TRUE(ossl_decrypt(body, g.rsa, NULL, k_content));
    const cmp_cms_opener o = {.key = g.rsa};
    TEST_ASSERT_OK(open_with(body, &o, k_content));
    // Another RSA key does not open it; an EC key is not a key transport key.
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    const cmp_cms_opener wrong = {.key = other};
    TEST_ASSERT_CODE(open_with(body, &wrong, k_content), CMP_E_CMS_DECRYPT);
    const cmp_cms_opener ec = {.key = g.p256};
    TEST_ASSERT_CODE(open_with(body, &ec, k_content), CMP_E_CMS_RECIPIENT_KEY);
    EVP_PKEY_free(other);
}

static void test_cmp_cms_key_agreement_decrypts_with_openssl(void)
{
    EVP_PKEY *keys[] = {g.p256, g.p384};
    for (size_t i = 0; i < 2; i++) {
        const cmp_cms_recipient rc = key_rcpt(CMP_CMS_KARI, keys[i]);
        const cm_span body = seal(&rc, k_content);
        CU_ASSERT_TRUE(ossl_decrypt(body, keys[i], NULL, k_content));
        const cmp_cms_opener o = {.key = keys[i]};
        TEST_ASSERT_OK(open_with(body, &o, k_content));
        const cmp_cms_opener wrong = {.key = keys[1 - i]};
        CU_ASSERT_FALSE(cm_ok(open_with(body, &wrong, k_content)));
    }
}

static void test_cmp_cms_x25519_and_x448_agree_keys(void)
{
    EVP_PKEY *keys[] = {g.x25519, g.x448};
    for (size_t i = 0; i < 2; i++) {
        const cmp_cms_recipient rc = key_rcpt(CMP_CMS_KARI, keys[i]);
        const cm_span body = seal(&rc, k_content);
        const cmp_cms_opener o = {.key = keys[i]};
        TEST_ASSERT_OK(open_with(body, &o, k_content));
        EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, i == 0 ? "X25519" : "X448");
        const cmp_cms_opener wrong = {.key = other};
        TEST_ASSERT_CODE(open_with(body, &wrong, k_content), CMP_E_CMS_DECRYPT);
        EVP_PKEY_free(other);
        // The other curve's key is not the recipient's kind.
        const cmp_cms_opener kind = {.key = keys[1 - i]};
        TEST_ASSERT_CODE(open_with(body, &kind, k_content), CMP_E_CMS_RECIPIENT_KEY);
    }
}

static void test_cmp_cms_password_decrypts_with_openssl(void)
{
    const cmp_cms_recipient rc = {
        .kind = CMP_CMS_PWRI, .password = CM_SPAN_LIT(k_secret), .iterations = 2000};
    const cm_span body = seal(&rc, k_content);
    CU_ASSERT_TRUE(ossl_decrypt(body, NULL, k_secret, k_content));
    CU_ASSERT_FALSE(ossl_decrypt(body, NULL, "not the secret", k_content));
    const cmp_cms_opener o = {
        .password = CM_SPAN_LIT(k_secret), .min_iterations = 1000, .max_iterations = 2500};
    TEST_ASSERT_OK(open_with(body, &o, k_content));
    const cmp_cms_opener wrong = {
        .password = CM_SPAN_LIT("not the secret"), .min_iterations = 1000, .max_iterations = 2500};
    TEST_ASSERT_CODE(open_with(body, &wrong, k_content), CMP_E_CMS_DECRYPT);
    // The bounds are checked before the derivation: above and below.
    const cmp_cms_opener low = {
        .password = CM_SPAN_LIT(k_secret), .min_iterations = 1, .max_iterations = 1999};
    TEST_ASSERT_CODE(open_with(body, &low, k_content), CMP_E_CMS_KDF_BOUNDS);
    const cmp_cms_opener high = {
        .password = CM_SPAN_LIT(k_secret), .min_iterations = 2001, .max_iterations = 9000};
    TEST_ASSERT_CODE(open_with(body, &high, k_content), CMP_E_CMS_KDF_BOUNDS);
    const cmp_cms_opener salt = {.password = CM_SPAN_LIT(k_secret),
                                 .min_iterations = 1000,
                                 .max_iterations = 2500,
                                 .max_salt_len = 15};
    TEST_ASSERT_CODE(open_with(body, &salt, k_content), CMP_E_CMS_KDF_BOUNDS);
}

// openssl_envelope makes an EnvelopedData with OpenSSL's CMS_encrypt for |cert| (or the
// password) and returns its body in the arena.
static cm_span openssl_envelope(X509 *cert, const char *password, cm_span content)
{
    BIO *in = BIO_new_mem_buf(content.p, (int)content.len);
    CMS_ContentInfo *cms = NULL;
    const int flags = CMS_BINARY | CMS_PARTIAL | CMS_USE_KEYID | CMS_KEY_PARAM;
    if (cert != NULL) {
        STACK_OF(X509) *rc = sk_X509_new_null();
        CU_ASSERT_FATAL(rc != NULL && sk_X509_push(rc, cert) > 0);
        cms = CMS_encrypt(rc, NULL, EVP_aes_256_cbc(), flags);
        sk_X509_free(rc);
        CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value(CMS_get0_RecipientInfos(cms), 0);
        EVP_PKEY_CTX *pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
        if (CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_TRANS) {
            CU_ASSERT_FATAL(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) == 1);
            CU_ASSERT_FATAL(EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) == 1);
            CU_ASSERT_FATAL(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1);
        } else {
            CU_ASSERT_FATAL(EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) == 1);
        }
    } else {
        cms = CMS_encrypt(NULL, NULL, EVP_aes_256_cbc(), CMS_BINARY | CMS_PARTIAL);
        CU_ASSERT_FATAL(CMS_add0_recipient_password(cms, 2048, NID_id_alg_PWRI_KEK, NID_id_pbkdf2,
                                                    (unsigned char *)OPENSSL_strdup(password), -1,
                                                    NULL) != NULL);
    }
    CU_ASSERT_FATAL(cms != NULL && CMS_final(cms, in, NULL, CMS_BINARY) == 1);
    unsigned char *der = NULL;
    const int n = i2d_CMS_ContentInfo(cms, &der);
    CU_ASSERT_FATAL(n > 0);
    // ContentInfo { OID, [0] { SEQUENCE { body } } }: the body into the arena.
    der_reader r, ci, m;
    cm_span oid, body;
    der_reader_init(&r, cm_span_make(der, (size_t)n));
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &ci));
    TEST_ASSERT_OK(der_get_oid(&ci, &oid));
    TEST_ASSERT_OK(der_enter(&ci, DER_CONTEXT_CONS(0), &m));
    TEST_ASSERT_OK(der_get_tlv(&m, DER_TAG_SEQUENCE, &body));
    uint8_t *copy = cm_arena_alloc(&g.arena, body.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    memcpy(copy, body.p, body.len);
    OPENSSL_free(der);
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    return cm_span_make(copy, body.len);
}

static void test_cmp_cms_opens_what_openssl_sealed(void)
{
    const cmp_cms_opener rsa = {.key = g.rsa};
    TEST_ASSERT_OK(open_with(openssl_envelope(g.rsa_cert, NULL, k_content), &rsa, k_content));
    const cmp_cms_opener ec = {.key = g.p256};
    TEST_ASSERT_OK(open_with(openssl_envelope(g.p256_cert, NULL, k_content), &ec, k_content));
    // OpenSSL 3.0's password recipient derives with PBKDF2-HMAC-SHA1 (the prf field absent):
    // refused, SHA-1 being off.
    const cmp_cms_opener pw = {
        .password = CM_SPAN_LIT(k_secret), .min_iterations = 1000, .max_iterations = 4096};
    TEST_ASSERT_CODE(open_with(openssl_envelope(NULL, k_secret, k_content), &pw, k_content),
                     CMP_E_CMS_UNSUPPORTED);
}

static void test_cmp_cms_recipient_kind_follows_the_key(void)
{
    cmp_cms_recipient_kind k;
    TEST_ASSERT_OK(cmp_cms_recipient_kind_for(&k, spki_of(g.rsa), NULL));
    CU_ASSERT_EQUAL(k, CMP_CMS_KTRI);
    TEST_ASSERT_OK(cmp_cms_recipient_kind_for(&k, spki_of(g.p384), NULL));
    CU_ASSERT_EQUAL(k, CMP_CMS_KARI);
    TEST_ASSERT_OK(cmp_cms_recipient_kind_for(&k, spki_of(g.x448), NULL));
    CU_ASSERT_EQUAL(k, CMP_CMS_KARI);
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_cms_recipient_kind_for(&k, spki_of(g.ed25519), &why),
                     CMP_E_CMS_RECIPIENT_KEY);
    CU_ASSERT_STRING_EQUAL(why.text, "an Ed25519 key can neither transport nor agree a key");
    // A key of the wrong kind for the recipient asked for is refused before anything is drawn.
    der_builder b;
    der_builder_init_arena(&b, &g.arena, 256);
    const cmp_cms_recipient wrong = key_rcpt(CMP_CMS_KTRI, g.p256);
    TEST_ASSERT_CODE(cmp_cms_seal(&g.crypto, &b, DER_TAG_SEQUENCE, &wrong,
                                  CM_SPAN_LIT(DER_OID_CT_DATA), k_content, NULL),
                     CMP_E_CMS_RECIPIENT_KEY);
}

static void test_cmp_cms_open_rejects_truncation_at_every_byte(void)
{
    const cmp_cms_recipient kinds[] = {
        key_rcpt(CMP_CMS_KTRI, g.rsa),
        key_rcpt(CMP_CMS_KARI, g.p256),
        {.kind = CMP_CMS_PWRI, .password = CM_SPAN_LIT(k_secret), .iterations = 1000},
    };
    const cmp_cms_opener openers[] = {
        {.key = g.rsa},
        {.key = g.p256},
        {.password = CM_SPAN_LIT(k_secret), .min_iterations = 1000, .max_iterations = 1000},
    };
    for (size_t k = 0; k < 3; k++) {
        const cm_span body = seal(&kinds[k], k_content);
        for (size_t n = 0; n < body.len; n++) {
            uint8_t *copy = malloc(n + 1); // a heap copy of exactly n octets: ASan sees overreads
            CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
            memcpy(copy, body.p, n);
            uint8_t *plain = NULL;
            size_t len = 0;
            cm_span ct;
            const cm_result r = cmp_cms_open(&g.crypto, &plain, &len, &ct, cm_span_make(copy, n),
                                             &openers[k], NULL);
            CU_ASSERT_FALSE(cm_ok(r));
            CU_ASSERT_PTR_NULL(plain);
            free(copy);
        }
        // One flipped octet of the ciphertext's last block breaks the padding or the content;
        // never a crash, never a success with other content.
        uint8_t *copy = malloc(body.len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        memcpy(copy, body.p, body.len);
        copy[body.len - 1] ^= 0x01;
        uint8_t *plain = NULL;
        size_t len = 0;
        cm_span ct;
        const cm_result r = cmp_cms_open(&g.crypto, &plain, &len, &ct, cm_span_make(copy, body.len),
                                         &openers[k], NULL);
        CU_ASSERT_TRUE(!cm_ok(r) || len != k_content.len || memcmp(plain, k_content.p, len) != 0);
        cmp_cms_secret_free(plain, len);
        free(copy);
    }
}

static void test_cmp_cms_encrypted_key_choice(void)
{
    const cmp_cms_recipient rc = key_rcpt(CMP_CMS_KARI, g.p256);
    der_builder b;
    der_builder_init_arena(&b, &g.arena, 512);
    der_mark outer;
    der_open(&b, &outer, DER_CONTEXT_CONS(0)); // privateKey [0]
    TEST_ASSERT_OK(cmp_cms_seal(&g.crypto, &b, DER_CONTEXT_CONS(0), &rc,
                                CM_SPAN_LIT(DER_OID_CT_DATA), k_content, NULL));
    der_close(&b, &outer);
    cm_span elem, body;
    TEST_ASSERT_OK(der_builder_finish(&b, &elem));
    TEST_ASSERT_OK(cmp_encrypted_key_body(&body, elem));
    const cmp_cms_opener o = {.key = g.p256};
    TEST_ASSERT_OK(open_with(body, &o, k_content));
    // encryptedValue (a SEQUENCE inside, RFC 4211) is deprecated and refused; junk is malformed.
    static const uint8_t k_ev[] = {0xa1, 0x05, 0x30, 0x03, 0x03, 0x01, 0x00};
    TEST_ASSERT_CODE(cmp_encrypted_key_body(&body, cm_span_make(k_ev, sizeof(k_ev))),
                     CMP_E_CMS_UNSUPPORTED);
    static const uint8_t k_junk[] = {0xa0, 0x02, 0x04, 0x00};
    TEST_ASSERT_CODE(cmp_encrypted_key_body(&body, cm_span_make(k_junk, sizeof(k_junk))),
                     CMP_E_CMS_MALFORMED);
    static const uint8_t k_tag[] = {0xa2, 0x02, 0xa0, 0x00};
    TEST_ASSERT_CODE(cmp_encrypted_key_body(&body, cm_span_make(k_tag, sizeof(k_tag))),
                     CMP_E_CMS_MALFORMED);
}

static void test_cmp_cms_key_package_round_trip(void)
{
    EVP_PKEY *keys[] = {g.p256, g.rsa, g.ed25519, g.x25519};
    for (size_t i = 0; i < 4; i++) {
        uint8_t *pkg = NULL;
        size_t len = 0;
        TEST_ASSERT_OK(cmp_key_package_new(&pkg, &len, keys[i]));
        cm_span one;
        TEST_ASSERT_OK(cmp_key_package_parse(&one, cm_span_make(pkg, len)));
        EVP_PKEY *back = NULL;
        TEST_ASSERT_OK(
            cmp_key_package_key(&g.crypto, &back, cm_span_make(pkg, len), spki_of(keys[i])));
        CU_ASSERT_EQUAL(EVP_PKEY_eq(back, keys[i]), 1);
        EVP_PKEY_free(back);
        // Another key's public half does not match.
        TEST_ASSERT_CODE(cmp_key_package_key(&g.crypto, &back, cm_span_make(pkg, len),
                                             spki_of(i == 0 ? g.p384 : g.p256)),
                         CMP_E_CMS_DECRYPT);
        CU_ASSERT_PTR_NULL(back);
        cmp_cms_secret_free(pkg, len);
    }
    static const uint8_t k_two[] = {0x30, 0x0a, 0x30, 0x03, 0x02, 0x01,
                                    0x00, 0x30, 0x03, 0x02, 0x01, 0x00};
    cm_span one;
    TEST_ASSERT_CODE(cmp_key_package_parse(&one, cm_span_make(k_two, sizeof(k_two))),
                     CMP_E_CMS_MALFORMED);
    static const uint8_t k_v5[] = {0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x05};
    TEST_ASSERT_CODE(cmp_key_package_parse(&one, cm_span_make(k_v5, sizeof(k_v5))),
                     CMP_E_CMS_MALFORMED);
}

static void test_cmp_cms_signed_data_verifies_with_openssl(void)
{
    unsigned char *cert_der = NULL;
    const int cert_len = i2d_X509(g.p256_cert, &cert_der);
    CU_ASSERT_FATAL(cert_len > 0);
    const cm_span cert = cm_span_make(cert_der, (size_t)cert_len);
    static const uint8_t k_alg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                    0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}; // ecdsa-with-SHA256
    const cmp_signed_data sd = {.content_type = CM_SPAN_LIT(DER_OID_CT_KP_AKEY_PACKAGE),
                                .content = k_content,
                                .digest = CRMF_HASH_SHA256,
                                .sig_alg = cm_span_make(k_alg, sizeof(k_alg)),
                                .ski = cm_span_make(k_ski, sizeof(k_ski)),
                                .certs = &cert,
                                .num_certs = 1,
                                .signing_time = cm_time_now()};
    der_builder ab;
    der_builder_init_arena(&ab, &g.arena, 256);
    TEST_ASSERT_OK(cmp_signed_data_attrs(&g.crypto, &ab, &sd));
    cm_span attrs;
    TEST_ASSERT_OK(der_builder_finish(&ab, &attrs));
    // The signature an HSM would make: ECDSA-SHA256 over the attributes' DER.
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    uint8_t sig[128];
    size_t sig_len = sizeof(sig);
    CU_ASSERT_FATAL(EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, g.p256) == 1 &&
                    EVP_DigestSign(mctx, sig, &sig_len, attrs.p, attrs.len) == 1);
    EVP_MD_CTX_free(mctx);
    der_builder b;
    der_builder_init_arena(&b, &g.arena, 1024);
    cmp_signed_data_marshal(&b, &sd, attrs, cm_span_make(sig, sig_len));
    cm_span der;
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    cm_span type, content;
    TEST_ASSERT_OK(cmp_signed_data_content(&type, &content, der));
    CU_ASSERT_TRUE(der_oid_is(type, DER_OID_CT_KP_AKEY_PACKAGE));
    CU_ASSERT_TRUE(cm_span_eq(content, k_content));
    // OpenSSL verifies it with the signer certificate as trust anchor.
    der_reader rd;
    cm_span body;
    der_reader_init(&rd, der);
    TEST_ASSERT_OK(der_get_tlv(&rd, DER_TAG_SEQUENCE, &body));
    CMS_ContentInfo *cms = ossl_cms(CM_SPAN_LIT(DER_OID_CT_SIGNED_DATA), body);
    X509_STORE *st = X509_STORE_new();
    BIO *out = BIO_new(BIO_s_mem());
    CU_ASSERT_FATAL(st != NULL && X509_STORE_add_cert(st, g.p256_cert) == 1);
    CU_ASSERT_EQUAL(CMS_verify(cms, NULL, st, NULL, out, CMS_BINARY), 1);
    char *data = NULL;
    const long n = BIO_get_mem_data(out, &data);
    CU_ASSERT_TRUE((size_t)n == k_content.len && memcmp(data, k_content.p, k_content.len) == 0);
    BIO_free(out);
    CMS_ContentInfo_free(cms);
    // A changed content does not verify: the messageDigest covers it.
    const cmp_signed_data other = {.content_type = sd.content_type,
                                   .content = CM_SPAN_LIT("another key package"),
                                   .digest = sd.digest,
                                   .sig_alg = sd.sig_alg,
                                   .ski = sd.ski,
                                   .certs = &cert,
                                   .num_certs = 1};
    der_builder_init_arena(&b, &g.arena, 1024);
    cmp_signed_data_marshal(&b, &other, attrs, cm_span_make(sig, sig_len));
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    der_reader_init(&rd, der);
    TEST_ASSERT_OK(der_get_tlv(&rd, DER_TAG_SEQUENCE, &body));
    cms = ossl_cms(CM_SPAN_LIT(DER_OID_CT_SIGNED_DATA), body);
    out = BIO_new(BIO_s_mem());
    CU_ASSERT_NOT_EQUAL(CMS_verify(cms, NULL, st, NULL, out, CMS_BINARY), 1);
    ERR_clear_error();
    BIO_free(out);
    CMS_ContentInfo_free(cms);
    X509_STORE_free(st);
    OPENSSL_free(cert_der);
    // A digest this writer does not know is refused.
    const cmp_signed_data bad = {
        .content_type = sd.content_type, .content = k_content, .digest = CRMF_HASH_SHA1};
    der_builder_init_arena(&ab, &g.arena, 256);
    TEST_ASSERT_CODE(cmp_signed_data_attrs(&g.crypto, &ab, &bad), CMP_E_CMS_UNSUPPORTED);
}

int test_cmp_cms_register(void);
int test_cmp_cms_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_cmp_cms_key_transport_decrypts_with_openssl),
        TEST_CASE(test_cmp_cms_key_agreement_decrypts_with_openssl),
        TEST_CASE(test_cmp_cms_x25519_and_x448_agree_keys),
        TEST_CASE(test_cmp_cms_password_decrypts_with_openssl),
        TEST_CASE(test_cmp_cms_opens_what_openssl_sealed),
        TEST_CASE(test_cmp_cms_recipient_kind_follows_the_key),
        TEST_CASE(test_cmp_cms_open_rejects_truncation_at_every_byte),
        TEST_CASE(test_cmp_cms_encrypted_key_choice),
        TEST_CASE(test_cmp_cms_key_package_round_trip),
        TEST_CASE(test_cmp_cms_signed_data_verifies_with_openssl),
    };
    return test_register_suite("cmp_cms", cms_init, cms_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
