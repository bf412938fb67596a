// Suite "hsm": the PKCS#11 module against a throwaway SoftHSM2 token. Every mechanism's
// signature is verified by OpenSSL against the exported SubjectPublicKeyInfo; AlgorithmIdentifier
// and SPKI bytes are compared with OpenSSL's own encodings; URIs that match nothing, too much,
// or carry a wrong PIN each fail with their own code; the pool is driven by several submitting
// threads, shut down with jobs queued, and fed faults through tests/support/p11shim.
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "engine/base/cq.h"
#include "engine/der/der.h"
#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"
#include "tests/support/test_support.h"

#define SPAN(...) \
    cm_span_make((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

enum { K_P256, K_P384, K_P521, K_RSA, K_ED25519, K_ED448, K_COUNT };

static test_token g_tt;
static char g_other_pin[32];
static char g_uri[1024]; // token URI with module-path and pin-value
static hsm_token *g_tok;
static hsm_key *g_keys[K_COUNT];
static hsm_pool *g_pool;

static const char *uri_fmt(char *out, size_t cap, const char *path_part, const char *query)
{
    int n = snprintf(out, cap, "pkcs11:%s?module-path=%s%s%s", path_part, g_tt.module,
                     query[0] ? "&" : "", query);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
    return out;
}

static int hsm_suite_init(void)
{
    if (!test_token_create(&g_tt, "hsm-test")) {
        return 1;
    }
    // A second token nobody logs into, for the wrong-PIN test (SoftHSM's login state is per
    // process and token, so the first token is logged in for the whole suite).
    uint32_t rnd = 0;
    if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1) {
        return 1;
    }
    (void)snprintf(g_other_pin, sizeof(g_other_pin), "other-%08x", rnd);
    const char *argv[] = {"softhsm2-util", "--init-token", "--free", "--label",   "hsm-other",
                          "--so-pin",      "so-other",     "--pin",  g_other_pin, NULL};
    if (test_run(argv, NULL) != 0) {
        return 1;
    }
    char q[128];
    (void)snprintf(q, sizeof(q), "pin-value=%s", g_tt.user_pin);
    (void)snprintf(g_uri, sizeof(g_uri), "pkcs11:token=hsm-test?module-path=%s&%s", g_tt.module, q);
    hsm_error err;
    cm_result r = hsm_token_open(&g_tok, &err, g_uri);
    if (!cm_ok(r)) {
        (void)fprintf(stderr, "hsm_token_open: %s: %s\n", cm_result_name(r), err.msg);
        return 1;
    }
    static const struct {
        hsm_keygen_type type;
        const char *label;
    } k_gen[K_COUNT] = {{HSM_KEYGEN_EC_P256, "k-p256"},
                        {HSM_KEYGEN_EC_P384, "k-p384"},
                        {HSM_KEYGEN_EC_P521, "k-p521"},
                        {HSM_KEYGEN_RSA_2048, "k-rsa2048"},
                        {HSM_KEYGEN_ED25519, "k-ed25519"},
                        // Ed448: CKK_EC_EDWARDS with the id-Ed448 curve, signed by CKM_EDDSA
                        // (SoftHSM 2.6.1 does both).
                        {HSM_KEYGEN_ED448, "k-ed448"}};
    for (int i = 0; i < K_COUNT; i++) {
        uint8_t id = (uint8_t)(i + 1);
        r = hsm_key_generate(g_tok, &g_keys[i], &err, k_gen[i].type, k_gen[i].label,
                             cm_span_make(&id, 1));
        if (!cm_ok(r)) {
            (void)fprintf(stderr, "hsm_key_generate %s: %s: %s\n", k_gen[i].label,
                          cm_result_name(r), err.msg);
            return 1;
        }
    }
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    r = hsm_pool_new(&g_pool, g_tok, &o);
    if (!cm_ok(r)) {
        (void)fprintf(stderr, "hsm_pool_new: %s\n", cm_result_name(r));
        return 1;
    }
    return 0;
}

static int hsm_suite_cleanup(void)
{
    hsm_pool_free(g_pool);
    g_pool = NULL;
    for (int i = 0; i < K_COUNT; i++) {
        hsm_key_free(g_keys[i]);
        g_keys[i] = NULL;
    }
    hsm_token_free(g_tok);
    g_tok = NULL;
    test_token_destroy(&g_tt);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// OpenSSL as the oracle

static EVP_PKEY *pkey_of(const hsm_key *k)
{
    cm_span spki = hsm_key_get0_spki(k);
    const unsigned char *p = spki.p;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki.len);
    CU_ASSERT_PTR_NOT_NULL(pk);
    CU_ASSERT_PTR_EQUAL(p, spki.p + spki.len);
    return pk;
}

static const char *md_of(hsm_sig_alg alg)
{
    switch (alg) {
    case HSM_SIG_ECDSA_SHA256:
    case HSM_SIG_RSA_PKCS1_SHA256:
    case HSM_SIG_RSA_PSS_SHA256:
        return "SHA256";
    case HSM_SIG_ECDSA_SHA384:
    case HSM_SIG_RSA_PKCS1_SHA384:
    case HSM_SIG_RSA_PSS_SHA384:
        return "SHA384";
    case HSM_SIG_ED25519:
    case HSM_SIG_ED448:
        return NULL;
    default:
        return "SHA512";
    }
}

static bool is_pss(hsm_sig_alg alg)
{
    return alg >= HSM_SIG_RSA_PSS_SHA256 && alg <= HSM_SIG_RSA_PSS_SHA512;
}

// verify_sig checks |sig| over |msg| with OpenSSL; PSS with the salt length fixed to the hash
// length, so a token using another salt length fails.
static bool verify_sig(EVP_PKEY *pk, hsm_sig_alg alg, cm_span msg, const uint8_t *sig,
                       size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = EVP_DigestVerifyInit_ex(ctx, &pctx, md_of(alg), NULL, NULL, pk, NULL) == 1;
    if (ok && is_pss(alg)) {
        int hlen = alg == HSM_SIG_RSA_PSS_SHA256 ? 32 : alg == HSM_SIG_RSA_PSS_SHA384 ? 48 : 64;
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, hlen) == 1;
    }
    ok = ok &&
         EVP_DigestVerify(ctx, sig, sig_len, msg.len ? msg.p : (const uint8_t *)"", msg.len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

// ---------------------------------------------------------------------------------------------
// Signatures

typedef struct key_alg {
    int key;
    hsm_sig_alg alg;
} key_alg;

static const key_alg k_matrix[] = {
    {K_P256, HSM_SIG_ECDSA_SHA256},    {K_P256, HSM_SIG_ECDSA_SHA384},
    {K_P256, HSM_SIG_ECDSA_SHA512},    {K_P384, HSM_SIG_ECDSA_SHA384},
    {K_P521, HSM_SIG_ECDSA_SHA512},    {K_P521, HSM_SIG_ECDSA_SHA256},
    {K_RSA, HSM_SIG_RSA_PKCS1_SHA256}, {K_RSA, HSM_SIG_RSA_PKCS1_SHA384},
    {K_RSA, HSM_SIG_RSA_PKCS1_SHA512}, {K_RSA, HSM_SIG_RSA_PSS_SHA256},
    {K_RSA, HSM_SIG_RSA_PSS_SHA384},   {K_RSA, HSM_SIG_RSA_PSS_SHA512},
    {K_ED25519, HSM_SIG_ED25519},      {K_ED448, HSM_SIG_ED448},
};

static void test_hsm_every_mechanism_verifies_with_openssl(void)
{
    static const size_t k_sizes[] = {0, 1, 55, 1000, 70000};
    uint8_t *msg = malloc(70000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    if (msg == NULL) {
        return;
    }
    for (size_t i = 0; i < 70000; i++) {
        msg[i] = (uint8_t)(i * 7 + 3);
    }
    for (size_t m = 0; m < sizeof(k_matrix) / sizeof(k_matrix[0]); m++) {
        const hsm_key *k = g_keys[k_matrix[m].key];
        hsm_sig_alg alg = k_matrix[m].alg;
        EVP_PKEY *pk = pkey_of(k);
        CU_ASSERT_PTR_NOT_NULL_FATAL(pk);
        for (size_t s = 0; s < sizeof(k_sizes) / sizeof(k_sizes[0]); s++) {
            cm_span in = cm_span_make(msg, k_sizes[s]);
            uint8_t sig[HSM_MAX_SIG_LEN];
            size_t sig_len = 0;
            TEST_ASSERT_OK(hsm_sign_sync(g_pool, &sig_len, sig, sizeof(sig), k, alg, in));
            bool ok = verify_sig(pk, alg, in, sig, sig_len);
            if (!ok) {
                (void)fprintf(stderr, "\n  %s with %s over %zu bytes does not verify\n",
                              hsm_sig_alg_name(alg), hsm_key_get0_label(k), in.len);
            }
            CU_ASSERT(ok);
            // The same signature over a different message must not verify.
            if (in.len > 0) {
                msg[0] ^= 1;
                CU_ASSERT_FALSE(verify_sig(pk, alg, in, sig, sig_len));
                msg[0] ^= 1;
            }
            if (alg <= HSM_SIG_ECDSA_SHA512) {
                // Strict DER: OpenSSL re-encodes the ECDSA-Sig-Value byte for byte.
                const unsigned char *p = sig;
                ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
                CU_ASSERT_PTR_NOT_NULL_FATAL(es);
                unsigned char *re = NULL;
                int rl = i2d_ECDSA_SIG(es, &re);
                CU_ASSERT(rl == (int)sig_len && memcmp(re, sig, sig_len) == 0);
                OPENSSL_free(re);
                ECDSA_SIG_free(es);
            }
        }
        EVP_PKEY_free(pk);
    }
    free(msg);
}

static void test_hsm_spki_matches_openssl_encoding(void)
{
    static const int k_types[K_COUNT] = {EVP_PKEY_EC,  EVP_PKEY_EC,      EVP_PKEY_EC,
                                         EVP_PKEY_RSA, EVP_PKEY_ED25519, EVP_PKEY_ED448};
    static const int k_bits[K_COUNT] = {256, 384, 521, 2048, 256, 456};
    for (int i = 0; i < K_COUNT; i++) {
        EVP_PKEY *pk = pkey_of(g_keys[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(pk);
        CU_ASSERT_EQUAL(EVP_PKEY_get_base_id(pk), k_types[i]);
        CU_ASSERT_EQUAL(EVP_PKEY_get_bits(pk), k_bits[i]);
        unsigned char *der = NULL;
        int len = i2d_PUBKEY(pk, &der);
        cm_span ours = hsm_key_get0_spki(g_keys[i]);
        CU_ASSERT(len > 0 && (size_t)len == ours.len && memcmp(der, ours.p, ours.len) == 0);
        OPENSSL_free(der);
        EVP_PKEY_free(pk);
    }
    CU_ASSERT_EQUAL(hsm_key_get_type(g_keys[K_P384]), HSM_KEY_EC_P384);
    CU_ASSERT_EQUAL(hsm_key_get_bits(g_keys[K_RSA]), 2048);
    CU_ASSERT_EQUAL(hsm_key_get_type(g_keys[K_ED25519]), HSM_KEY_ED25519);
    CU_ASSERT_EQUAL(hsm_key_get_type(g_keys[K_ED448]), HSM_KEY_ED448);
    CU_ASSERT_EQUAL(hsm_sig_alg_for_key(g_keys[K_ED448]), HSM_SIG_ED448);
}

// openssl_alg_id has OpenSSL sign a CSR with an in-memory key of the same kind and returns the
// DER of the signature AlgorithmIdentifier it wrote.
static int openssl_alg_id(unsigned char **out, EVP_PKEY *pk, hsm_sig_alg alg)
{
    X509_REQ *req = X509_REQ_new();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int len = -1;
    if (req == NULL || ctx == NULL || X509_REQ_set_pubkey(req, pk) != 1 ||
        EVP_DigestSignInit_ex(ctx, &pctx, md_of(alg), NULL, NULL, pk, NULL) != 1) {
        goto out;
    }
    if (is_pss(alg) && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
        goto out;
    }
    if (X509_REQ_sign_ctx(req, ctx) <= 0) {
        goto out;
    }
    const ASN1_BIT_STRING *sig;
    const X509_ALGOR *a;
    X509_REQ_get0_signature(req, &sig, &a);
    len = i2d_X509_ALGOR(a, out);
out:
    EVP_MD_CTX_free(ctx);
    X509_REQ_free(req);
    return len;
}

static void test_hsm_alg_ids_match_openssl(void)
{
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *ed448 = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
    CU_ASSERT_FATAL(ec != NULL && rsa != NULL && ed != NULL && ed448 != NULL);
    for (int a = HSM_SIG_ECDSA_SHA256; a < HSM_SIG_COUNT; a++) {
        hsm_sig_alg alg = (hsm_sig_alg)a;
        EVP_PKEY *pk = alg <= HSM_SIG_ECDSA_SHA512 ? ec
                       : alg == HSM_SIG_ED25519    ? ed
                       : alg == HSM_SIG_ED448      ? ed448
                                                   : rsa;
        unsigned char *want = NULL;
        int want_len = openssl_alg_id(&want, pk, alg);
        CU_ASSERT_FATAL(want_len > 0 && want != NULL);
        if (want == NULL) {
            return;
        }
        uint8_t buf[128];
        der_builder b;
        der_builder_init_fixed(&b, buf, sizeof(buf));
        hsm_sig_alg_marshal(&b, alg);
        cm_span got;
        TEST_ASSERT_OK(der_builder_finish(&b, &got));
        bool same = got.len == (size_t)want_len && memcmp(got.p, want, got.len) == 0;
        if (!same) {
            (void)fprintf(stderr, "\n  %s: AlgorithmIdentifier differs from OpenSSL's\n",
                          hsm_sig_alg_name(alg));
        }
        CU_ASSERT(same);
        OPENSSL_free(want);
    }
    // The RFC 5758 §3.2 encoding of ecdsa-with-SHA256, spelled out.
    uint8_t buf[32];
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    hsm_sig_alg_marshal(&b, HSM_SIG_ECDSA_SHA256);
    cm_span got;
    TEST_ASSERT_OK(der_builder_finish(&b, &got));
    CU_ASSERT(cm_span_eq(
        got, SPAN(0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02)));
    der_builder_init_fixed(&b, buf, sizeof(buf));
    hsm_sig_alg_marshal(&b, HSM_SIG_NONE);
    TEST_ASSERT_CODE(der_builder_finish(&b, &got), CM_E_INVALID_ARG);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(ed448);
}

// Every key type gets a signature algorithm that fits it; none for no key.
static void test_hsm_sig_alg_for_type(void)
{
    static const hsm_key_type k_types[] = {HSM_KEY_EC_P256, HSM_KEY_EC_P384, HSM_KEY_EC_P521,
                                           HSM_KEY_RSA, HSM_KEY_ED25519};
    for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++) {
        const hsm_sig_alg a = hsm_sig_alg_for_type(k_types[i]);
        CU_ASSERT_NOT_EQUAL(a, HSM_SIG_NONE);
        CU_ASSERT_TRUE(hsm_sig_alg_fits(a, k_types[i]));
    }
    CU_ASSERT_EQUAL(hsm_sig_alg_for_type(HSM_KEY_EC_P384), HSM_SIG_ECDSA_SHA384);
    CU_ASSERT_EQUAL(hsm_sig_alg_for_type(HSM_KEY_EC_P521), HSM_SIG_ECDSA_SHA512);
    CU_ASSERT_EQUAL(hsm_sig_alg_for_type(HSM_KEY_NONE), HSM_SIG_NONE);
}

static void test_hsm_ecdsa_sig_uses_minimal_integers(void)
{
    uint8_t buf[160];
    der_builder b;
    cm_span out;
    // r has its top bit set (gets a 0x00), s has leading zeros (stripped).
    der_builder_init_fixed(&b, buf, sizeof(buf));
    hsm_ecdsa_sig_marshal(&b, SPAN(0x80, 0x01, 0x00, 0x00, 0x00, 0x7f));
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    CU_ASSERT(
        cm_span_eq(out, SPAN(0x30, 0x09, 0x02, 0x04, 0x00, 0x80, 0x01, 0x00, 0x02, 0x01, 0x7f)));
    // All-zero halves are the INTEGER 0.
    der_builder_init_fixed(&b, buf, sizeof(buf));
    hsm_ecdsa_sig_marshal(&b, SPAN(0x00, 0x00, 0x00, 0x00));
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    CU_ASSERT(cm_span_eq(out, SPAN(0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00)));
    // Odd and empty lengths are not r || s.
    der_builder_init_fixed(&b, buf, sizeof(buf));
    hsm_ecdsa_sig_marshal(&b, SPAN(0x01, 0x02, 0x03));
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), HSM_E_BAD_SIGNATURE);
    der_builder_init_fixed(&b, buf, sizeof(buf));
    hsm_ecdsa_sig_marshal(&b, cm_span_make(buf, 0));
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), HSM_E_BAD_SIGNATURE);
    // A too-small output buffer.
    uint8_t tiny[4];
    der_builder_init_fixed(&b, tiny, sizeof(tiny));
    hsm_ecdsa_sig_marshal(&b, SPAN(0x11, 0x22, 0x33, 0x44));
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_BUFFER_TOO_SMALL);
}

// ---------------------------------------------------------------------------------------------
// Key generation

static void test_hsm_keygen_sets_protective_attributes(void)
{
    static const struct {
        CK_ATTRIBUTE_TYPE type;
        bool want;
    } k_attrs[] = {{CKA_TOKEN, true},
                   {CKA_PRIVATE, true},
                   {CKA_SENSITIVE, true},
                   {CKA_SIGN, true},
                   {CKA_EXTRACTABLE, false},
                   {CKA_ALWAYS_AUTHENTICATE, false},
                   {CKA_NEVER_EXTRACTABLE, true}};
    for (int i = 0; i < K_COUNT; i++) {
        for (size_t a = 0; a < sizeof(k_attrs) / sizeof(k_attrs[0]); a++) {
            bool v = !k_attrs[a].want;
            TEST_ASSERT_OK(hsm_key_get_bool_attr(g_keys[i], &v, k_attrs[a].type));
            CU_ASSERT_EQUAL(v, k_attrs[a].want);
        }
        CU_ASSERT_EQUAL(hsm_key_get0_id(g_keys[i]).len, 1);
        CU_ASSERT_EQUAL(hsm_key_get0_id(g_keys[i]).p[0], i + 1);
    }
    CU_ASSERT_STRING_EQUAL(hsm_key_get0_label(g_keys[K_P521]), "k-p521");
    // The mechanisms the pool relies on are detected; a made-up one is not.
    CU_ASSERT(hsm_token_has_mechanism(g_tok, CKM_ECDSA));
    CU_ASSERT(hsm_token_has_mechanism(g_tok, CKM_RSA_PKCS_PSS));
    CU_ASSERT(hsm_token_has_mechanism(g_tok, CKM_EDDSA));
    CU_ASSERT_FALSE(hsm_token_has_mechanism(g_tok, CKM_VENDOR_DEFINED | 0x1234));
}

static void test_hsm_keygen_large_rsa_and_duplicates(void)
{
    hsm_error err;
    static const struct {
        hsm_keygen_type type;
        const char *label;
        uint32_t bits;
    } k_rsa[] = {{HSM_KEYGEN_RSA_3072, "k-rsa3072", 3072},
                 {HSM_KEYGEN_RSA_4096, "k-rsa4096", 4096}};
    for (size_t i = 0; i < 2; i++) {
        uint8_t id = (uint8_t)(0x30 + i);
        hsm_key *k = NULL;
        TEST_ASSERT_OK(
            hsm_key_generate(g_tok, &k, &err, k_rsa[i].type, k_rsa[i].label, cm_span_make(&id, 1)));
        CU_ASSERT_EQUAL(hsm_key_get_type(k), HSM_KEY_RSA);
        CU_ASSERT_EQUAL(hsm_key_get_bits(k), k_rsa[i].bits);
        EVP_PKEY *pk = pkey_of(k);
        CU_ASSERT_EQUAL(EVP_PKEY_get_bits(pk), (int)k_rsa[i].bits);
        uint8_t sig[HSM_MAX_SIG_LEN];
        size_t sig_len;
        cm_span msg = CM_SPAN_LIT("large rsa");
        TEST_ASSERT_OK(
            hsm_sign_sync(g_pool, &sig_len, sig, sizeof(sig), k, HSM_SIG_RSA_PSS_SHA512, msg));
        CU_ASSERT_EQUAL(sig_len, k_rsa[i].bits / 8);
        CU_ASSERT(verify_sig(pk, HSM_SIG_RSA_PSS_SHA512, msg, sig, sig_len));
        EVP_PKEY_free(pk);
        hsm_key_free(k);
    }
    hsm_key *k = NULL;
    uint8_t fresh_id = 0x77, old_id = 2;
    TEST_ASSERT_CODE(
        hsm_key_generate(g_tok, &k, &err, HSM_KEYGEN_EC_P256, "k-p256", cm_span_make(&fresh_id, 1)),
        HSM_E_KEY_EXISTS);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "k-p256"));
    TEST_ASSERT_CODE(
        hsm_key_generate(g_tok, &k, &err, HSM_KEYGEN_EC_P256, "k-new", cm_span_make(&old_id, 1)),
        HSM_E_KEY_EXISTS);
    TEST_ASSERT_CODE(
        hsm_key_generate(g_tok, &k, &err, HSM_KEYGEN_EC_P256, "", cm_span_make(&fresh_id, 1)),
        CM_E_INVALID_ARG);
}

// ---------------------------------------------------------------------------------------------
// URIs

static void test_hsm_uri_selects_keys(void)
{
    char uri[1024], q[128];
    hsm_error err;
    hsm_key *k = NULL;
    (void)snprintf(q, sizeof(q), "pin-value=%s", g_tt.user_pin);
    static const char *const k_paths[] = {
        "token=hsm-test;object=k-p384",
        "token=hsm-test;id=%02",
        "token=hsm-test;object=k-p384;type=private",
        "manufacturer=SoftHSM%20project;model=SoftHSM%20v2;token=hsm-test;object=k-p384;id=%02",
    };
    for (size_t i = 0; i < sizeof(k_paths) / sizeof(k_paths[0]); i++) {
        (void)uri_fmt(uri, sizeof(uri), k_paths[i], q);
        // The same URI opens the token and selects the key.
        hsm_token *t = NULL;
        cm_result r = hsm_token_open(&t, &err, uri);
        if (!cm_ok(r)) {
            (void)fprintf(stderr, "\n  %s: %s\n", k_paths[i], err.msg);
        }
        TEST_ASSERT_OK(r);
        TEST_ASSERT_OK(hsm_key_find(t, &k, &err, uri));
        CU_ASSERT_STRING_EQUAL(hsm_key_get0_label(k), "k-p384");
        CU_ASSERT(cm_span_eq(hsm_key_get0_spki(k), hsm_key_get0_spki(g_keys[K_P384])));
        hsm_key_free(k);
        hsm_token_free(t);
    }
    // The serial number the token reports selects it too.
    char serial[17];
    size_t sl = sizeof(g_tok->info.serialNumber);
    memcpy(serial, g_tok->info.serialNumber, sl);
    while (sl > 0 && serial[sl - 1] == ' ') {
        sl--;
    }
    serial[sl] = '\0';
    char path[128];
    (void)snprintf(path, sizeof(path), "serial=%s;object=k-ed25519", serial);
    TEST_ASSERT_OK(hsm_key_find(g_tok, &k, &err, uri_fmt(uri, sizeof(uri), path, q)));
    CU_ASSERT_EQUAL(hsm_key_get_type(k), HSM_KEY_ED25519);
    hsm_key_free(k);
}

static void test_hsm_uri_pin_source_file(void)
{
    char dir[256], pin_path[300], uri[1024], q[400];
    CU_ASSERT_FATAL(test_tmpdir(dir, sizeof(dir), "hsm-pin"));
    test_path(pin_path, sizeof(pin_path), dir, "pin");
    char line[40];
    int n = snprintf(line, sizeof(line), "%s\n", g_tt.user_pin);
    CU_ASSERT_FATAL(test_write_file(pin_path, line, (size_t)n));
    hsm_error err;
    hsm_token *t = NULL;
    (void)snprintf(q, sizeof(q), "pin-source=file:%s", pin_path);
    TEST_ASSERT_OK(hsm_token_open(&t, &err, uri_fmt(uri, sizeof(uri), "token=hsm-test", q)));
    // The pool's sessions log in from the same file.
    hsm_key *k = NULL;
    hsm_pool *p = NULL;
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 1;
    char kuri[1100];
    (void)snprintf(kuri, sizeof(kuri), "%s;object=k-p256?module-path=%s", "pkcs11:token=hsm-test",
                   g_tt.module);
    TEST_ASSERT_OK(hsm_key_find(t, &k, &err, kuri));
    TEST_ASSERT_OK(hsm_pool_new(&p, t, &o));
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    TEST_ASSERT_OK(hsm_sign_sync(p, &sig_len, sig, sizeof(sig), k, HSM_SIG_ECDSA_SHA256,
                                 CM_SPAN_LIT("pin file")));
    CU_ASSERT(sig_len > 0);
    hsm_pool_free(p);
    hsm_key_free(k);
    hsm_token_free(t);
    // Without the file: its own code, and the message names the file.
    CU_ASSERT_FATAL(test_rmtree(dir));
    TEST_ASSERT_CODE(hsm_token_open(&t, &err, uri), HSM_E_PIN_SOURCE);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, pin_path));
    // The PIN never appears in a message.
    CU_ASSERT_PTR_NULL(strstr(err.msg, g_tt.user_pin));
}

static void test_hsm_uri_errors_are_distinct(void)
{
    char uri[1024], q[128];
    hsm_error err;
    hsm_token *t = NULL;
    hsm_key *k = NULL;
    (void)snprintf(q, sizeof(q), "pin-value=%s", g_tt.user_pin);

    TEST_ASSERT_CODE(hsm_token_open(&t, &err, "http://example.com/"), HSM_E_URI);
    TEST_ASSERT_CODE(hsm_token_open(&t, &err, "pkcs11:token=hsm-test"), HSM_E_NO_MODULE);
    TEST_ASSERT_CODE(hsm_token_open(&t, &err, "pkcs11:?module-path=/nonexistent/libnone.so"),
                     HSM_E_MODULE_LOAD);

    TEST_ASSERT_CODE(hsm_token_open(&t, &err, uri_fmt(uri, sizeof(uri), "token=no-such", q)),
                     HSM_E_NO_TOKEN);
    // The message lists what the module has.
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "hsm-test"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "hsm-other"));
    TEST_ASSERT_CODE(hsm_token_open(&t, &err, uri_fmt(uri, sizeof(uri), "model=SoftHSM%20v2", q)),
                     HSM_E_AMBIGUOUS_TOKEN);
    TEST_ASSERT_CODE(hsm_token_open(&t, &err, uri_fmt(uri, sizeof(uri), "token=hsm-test", "")),
                     HSM_E_NO_PIN);

    // Wrong PIN, on the token nobody is logged into.
    TEST_ASSERT_CODE(
        hsm_token_open(&t, &err, uri_fmt(uri, sizeof(uri), "token=hsm-other", "pin-value=wrong")),
        cm_code_from_ckr(CKR_PIN_INCORRECT));
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "C_Login"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "CKR_PIN_INCORRECT"));
    CU_ASSERT_PTR_NULL(strstr(err.msg, "wrong"));
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(CKR_PIN_INCORRECT))),
                           "HSM/CKR_PIN_INCORRECT");
    // ... and the right one works.
    char q2[128];
    (void)snprintf(q2, sizeof(q2), "pin-value=%s", g_other_pin);
    TEST_ASSERT_OK(hsm_token_open(&t, &err, uri_fmt(uri, sizeof(uri), "token=hsm-other", q2)));
    // That token has no keys: the key lookup says so.
    TEST_ASSERT_CODE(hsm_key_find(t, &k, &err, uri), HSM_E_NO_KEY);
    hsm_token_free(t);
    t = NULL;

    // Key selection on the suite's token.
    TEST_ASSERT_CODE(
        hsm_key_find(g_tok, &k, &err, uri_fmt(uri, sizeof(uri), "token=hsm-test;object=nope", q)),
        HSM_E_NO_KEY);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "k-p256")); // lists what the token holds
    TEST_ASSERT_CODE(hsm_key_find(g_tok, &k, &err, uri_fmt(uri, sizeof(uri), "token=hsm-test", q)),
                     HSM_E_AMBIGUOUS_KEY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "several"));
    TEST_ASSERT_CODE(
        hsm_key_find(g_tok, &k, &err,
                     uri_fmt(uri, sizeof(uri), "token=hsm-test;id=%01;object=k-p384", q)),
        HSM_E_NO_KEY);
    TEST_ASSERT_CODE(
        hsm_key_find(g_tok, &k, &err, uri_fmt(uri, sizeof(uri), "object=k-p256;type=cert", q)),
        HSM_E_URI);
    TEST_ASSERT_CODE(hsm_key_find(g_tok, &k, &err,
                                  uri_fmt(uri, sizeof(uri), "token=hsm-other;object=k-p256", q)),
                     HSM_E_NO_TOKEN);
    TEST_ASSERT_CODE(hsm_key_find(g_tok, &k, &err, "pkcs11:object=%zz"), HSM_E_URI);
}

// ---------------------------------------------------------------------------------------------
// The pool

// drain_count takes every completion waiting on |cq|, adding one to |counts[job - base]|.
static size_t drain_count(cm_cq *cq, hsm_job *base, size_t n, uint32_t *counts)
{
    size_t got = 0;
    for (cm_cq_node *nd = cm_cq_drain(cq); nd != NULL;) {
        cm_cq_node *next = nd->next;
        CU_ASSERT_EQUAL(nd->kind, CM_CQ_KIND_HSM_JOB);
        hsm_job *j = (hsm_job *)(void *)nd;
        size_t idx = (size_t)(j - base);
        CU_ASSERT_FATAL(idx < n);
        counts[idx]++;
        got++;
        nd = next;
    }
    return got;
}

#define STRESS_THREADS 4
#define STRESS_JOBS    600

typedef struct stress_ctx {
    hsm_pool *pool;
    int thread;
    hsm_job jobs[STRESS_JOBS];
    uint8_t msgs[STRESS_JOBS][48];
    uint8_t sigs[STRESS_JOBS][HSM_MAX_SIG_LEN];
    uint32_t counts[STRESS_JOBS];
    size_t completed;
    bool submit_failed;
} stress_ctx;

// stress_main submits its jobs in batches of 1..23 while at most 128 are in flight, and
// drains its own cq until every job has come back.
static void *stress_main(void *arg)
{
    stress_ctx *c = arg;
    cm_cq cq = {NULL, -1};
    if (!cm_ok(cm_cq_init(&cq))) {
        c->submit_failed = true;
        return NULL;
    }
    for (size_t i = 0; i < STRESS_JOBS; i++) {
        int n = snprintf((char *)c->msgs[i], sizeof(c->msgs[i]), "thread %d job %zu", c->thread, i);
        bool ed = (i + (size_t)c->thread) % 3 == 0;
        hsm_job_init(&c->jobs[i], &cq, g_keys[ed ? K_ED25519 : K_P256],
                     ed ? HSM_SIG_ED25519 : HSM_SIG_ECDSA_SHA256,
                     cm_span_make(c->msgs[i], (size_t)n), c->sigs[i], sizeof(c->sigs[i]));
    }
    size_t next = 0, batch = 1;
    while (c->completed < STRESS_JOBS) {
        if (next < STRESS_JOBS && next - c->completed < 128) {
            size_t n = batch < STRESS_JOBS - next ? batch : STRESS_JOBS - next;
            hsm_job *ptrs[32];
            for (size_t i = 0; i < n; i++) {
                ptrs[i] = &c->jobs[next + i];
            }
            if (!cm_ok(hsm_pool_submit(c->pool, ptrs, n))) {
                c->submit_failed = true;
                break;
            }
            next += n;
            batch = batch % 23 + 1;
            c->completed += drain_count(&cq, c->jobs, STRESS_JOBS, c->counts);
            continue;
        }
        (void)cm_cq_wait(&cq, 1000);
        c->completed += drain_count(&cq, c->jobs, STRESS_JOBS, c->counts);
    }
    cm_cq_cleanup(&cq);
    return NULL;
}

static void check_stress(stress_ctx *c, EVP_PKEY *ec, EVP_PKEY *ed)
{
    CU_ASSERT_FALSE(c->submit_failed);
    CU_ASSERT_EQUAL(c->completed, STRESS_JOBS);
    size_t bad = 0;
    for (size_t i = 0; i < STRESS_JOBS; i++) {
        hsm_job *j = &c->jobs[i];
        bad += c->counts[i] != 1;
        bad += !cm_ok(j->result);
        bad += !verify_sig(j->alg == HSM_SIG_ED25519 ? ed : ec, j->alg, j->msg, j->sig, j->sig_len);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_hsm_pool_many_submitters_complete_exactly_once(void)
{
    hsm_pool *p = NULL;
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 3;
    o.batch = 8;
    o.copy_key = false; // the suite's pool copies keys; this one signs with the token objects
    TEST_ASSERT_OK(hsm_pool_new(&p, g_tok, &o));
    stress_ctx *c = calloc(STRESS_THREADS, sizeof(*c));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    pthread_t th[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        c[i].pool = p;
        c[i].thread = i;
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, stress_main, &c[i]) == 0);
    }
    for (int i = 0; i < STRESS_THREADS; i++) {
        (void)pthread_join(th[i], NULL);
    }
    hsm_pool_stats st;
    hsm_pool_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.signed_ok, STRESS_THREADS * STRESS_JOBS);
    CU_ASSERT_EQUAL(st.failed, 0);
    CU_ASSERT_EQUAL(hsm_pool_depth(p), 0);
    hsm_pool_free(p);
    EVP_PKEY *ec = pkey_of(g_keys[K_P256]);
    EVP_PKEY *ed = pkey_of(g_keys[K_ED25519]);
    for (int i = 0; i < STRESS_THREADS; i++) {
        check_stress(&c[i], ec, ed);
    }
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ed);
    free(c);
}

#define SHUTDOWN_JOBS 300

static void test_hsm_pool_shutdown_fails_queued_jobs(void)
{
    hsm_pool *p = NULL;
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 1;
    o.batch = 4;
    TEST_ASSERT_OK(hsm_pool_new(&p, g_tok, &o));
    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    hsm_job *jobs = calloc(SHUTDOWN_JOBS, sizeof(*jobs));
    hsm_job **ptrs = calloc(SHUTDOWN_JOBS, sizeof(*ptrs));
    uint8_t(*sigs)[HSM_MAX_SIG_LEN] = calloc(SHUTDOWN_JOBS, HSM_MAX_SIG_LEN);
    uint32_t counts[SHUTDOWN_JOBS] = {0};
    CU_ASSERT_FATAL(jobs != NULL && ptrs != NULL && sigs != NULL);
    cm_span msg = CM_SPAN_LIT("queued at shutdown");
    for (size_t i = 0; i < SHUTDOWN_JOBS; i++) {
        hsm_job_init(&jobs[i], &cq, g_keys[K_RSA], HSM_SIG_RSA_PKCS1_SHA256, msg, sigs[i],
                     HSM_MAX_SIG_LEN);
        ptrs[i] = &jobs[i];
    }
    TEST_ASSERT_OK(hsm_pool_submit(p, ptrs, SHUTDOWN_JOBS));
    hsm_pool_stats st;
    hsm_pool_free(p);
    size_t got = drain_count(&cq, jobs, SHUTDOWN_JOBS, counts);
    CU_ASSERT_EQUAL(got, SHUTDOWN_JOBS);
    EVP_PKEY *pk = pkey_of(g_keys[K_RSA]);
    size_t ok = 0, shut = 0, other = 0;
    for (size_t i = 0; i < SHUTDOWN_JOBS; i++) {
        CU_ASSERT_EQUAL(counts[i], 1);
        if (cm_ok(jobs[i].result)) {
            ok++;
            CU_ASSERT(verify_sig(pk, jobs[i].alg, msg, jobs[i].sig, jobs[i].sig_len));
        } else if (jobs[i].result.code == HSM_E_SHUTDOWN) {
            shut++;
            CU_ASSERT_EQUAL(jobs[i].sig_len, 0);
        } else {
            other++;
        }
    }
    CU_ASSERT_EQUAL(ok + shut, SHUTDOWN_JOBS);
    CU_ASSERT_EQUAL(other, 0);
    (void)st;
    EVP_PKEY_free(pk);
    cm_cq_cleanup(&cq);
    free(sigs);
    free(ptrs);
    free(jobs);
}

static void test_hsm_job_why_names_the_failure(void)
{
    hsm_job j;
    uint8_t sig[8];
    hsm_job_init(&j, NULL, NULL, HSM_SIG_ECDSA_SHA256, CM_SPAN_LIT("x"), sig, sizeof(sig));
    cm_why w;
    // A CK_RV, with and without the retry; vendor-defined values; other codes by their text.
    j.result = cm_result_make(cm_code_from_ckr(CKR_DEVICE_ERROR));
    j.attempts = 2;
    cm_why_clear(&w);
    hsm_job_why(&j, &w);
    CU_ASSERT_STRING_EQUAL(w.text, "HSM signing failed: CKR_DEVICE_ERROR, retried once");
    j.attempts = 1;
    cm_why_clear(&w);
    hsm_job_why(&j, &w);
    CU_ASSERT_STRING_EQUAL(w.text, "HSM signing failed: CKR_DEVICE_ERROR");
    j.result = cm_result_make(cm_code_from_ckr(CKR_VENDOR_DEFINED + 5));
    cm_why_clear(&w);
    hsm_job_why(&j, &w);
    CU_ASSERT_STRING_EQUAL(w.text, "HSM signing failed: CKR_VENDOR_DEFINED");
    j.result = cm_result_make(CM_E_BUFFER_TOO_SMALL);
    cm_why_clear(&w);
    hsm_job_why(&j, &w);
    CU_ASSERT_STRING_EQUAL(w.text, "HSM signing failed: a result did not fit its buffer or the "
                                   "request's memory limit");
    // A reason already set is kept (cm_why: the innermost wins).
    hsm_job_why(&j, &w);
    j.result = cm_result_make(cm_code_from_ckr(CKR_DEVICE_ERROR));
    hsm_job_why(&j, &w);
    CU_ASSERT_PTR_NOT_NULL(strstr(w.text, "did not fit"));
}

static void test_hsm_pool_rejects_bad_jobs(void)
{
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    cm_span msg = CM_SPAN_LIT("x");
    TEST_ASSERT_CODE(hsm_sign_sync(g_pool, &sig_len, sig, sizeof(sig), g_keys[K_P256],
                                   HSM_SIG_RSA_PSS_SHA256, msg),
                     HSM_E_ALG_MISMATCH);
    TEST_ASSERT_CODE(
        hsm_sign_sync(g_pool, &sig_len, sig, sizeof(sig), g_keys[K_RSA], HSM_SIG_ED25519, msg),
        HSM_E_ALG_MISMATCH);
    TEST_ASSERT_CODE(
        hsm_sign_sync(g_pool, &sig_len, sig, sizeof(sig), g_keys[K_RSA], HSM_SIG_NONE, msg),
        HSM_E_ALG_MISMATCH);
    // The output buffer is too small: the job itself fails with the code.
    TEST_ASSERT_CODE(
        hsm_sign_sync(g_pool, &sig_len, sig, 100, g_keys[K_RSA], HSM_SIG_RSA_PKCS1_SHA256, msg),
        CM_E_BUFFER_TOO_SMALL);
    TEST_ASSERT_CODE(
        hsm_sign_sync(g_pool, &sig_len, sig, 20, g_keys[K_P256], HSM_SIG_ECDSA_SHA256, msg),
        CM_E_BUFFER_TOO_SMALL);
    CU_ASSERT_EQUAL(sig_len, 0);

    // Without a cq, and with a key of another token handle: nothing is queued.
    hsm_job j;
    hsm_job_init(&j, NULL, g_keys[K_P256], HSM_SIG_ECDSA_SHA256, msg, sig, sizeof(sig));
    hsm_job *jp = &j;
    TEST_ASSERT_CODE(hsm_pool_submit(g_pool, &jp, 1), CM_E_INVALID_ARG);
    hsm_error err;
    hsm_token *t2 = NULL;
    hsm_key *k2 = NULL;
    char uri[1024];
    (void)snprintf(uri, sizeof(uri), "%s", g_uri);
    TEST_ASSERT_OK(hsm_token_open(&t2, &err, uri));
    char kuri[1100];
    (void)snprintf(kuri, sizeof(kuri), "pkcs11:token=hsm-test;object=k-p256?module-path=%s",
                   g_tt.module);
    TEST_ASSERT_OK(hsm_key_find(t2, &k2, &err, kuri));
    TEST_ASSERT_CODE(
        hsm_sign_sync(g_pool, &sig_len, sig, sizeof(sig), k2, HSM_SIG_ECDSA_SHA256, msg),
        CM_E_INVALID_ARG);
    hsm_key_free(k2);
    hsm_token_free(t2);

    // A bounded queue refuses a batch that does not fit, whole.
    hsm_pool *p = NULL;
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 1;
    o.max_queue = 4;
    TEST_ASSERT_OK(hsm_pool_new(&p, g_tok, &o));
    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    hsm_job jobs[5];
    hsm_job *ptrs[5];
    uint8_t sigs[5][HSM_MAX_SIG_LEN];
    for (int i = 0; i < 5; i++) {
        hsm_job_init(&jobs[i], &cq, g_keys[K_P256], HSM_SIG_ECDSA_SHA256, msg, sigs[i],
                     sizeof(sigs[i]));
        ptrs[i] = &jobs[i];
    }
    TEST_ASSERT_CODE(hsm_pool_submit(p, ptrs, 5), HSM_E_QUEUE_FULL);
    CU_ASSERT_PTR_NULL(cm_cq_drain(&cq));
    hsm_pool_free(p);
    cm_cq_cleanup(&cq);

    // Bad options.
    o.sessions = 0;
    TEST_ASSERT_CODE(hsm_pool_new(&p, g_tok, &o), CM_E_INVALID_ARG);
    o.sessions = 1;
    o.batch = HSM_MAX_BATCH + 1;
    TEST_ASSERT_CODE(hsm_pool_new(&p, g_tok, &o), CM_E_INVALID_ARG);
}

static void test_hsm_pool_with_session_copies_signs(void)
{
    hsm_pool *p = NULL;
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.copy_key = true;
    TEST_ASSERT_OK(hsm_pool_new(&p, g_tok, &o));
    for (int i = 0; i < K_COUNT; i++) {
        hsm_sig_alg alg = i == K_RSA       ? HSM_SIG_RSA_PSS_SHA256
                          : i == K_ED25519 ? HSM_SIG_ED25519
                          : i == K_ED448   ? HSM_SIG_ED448
                                           : HSM_SIG_ECDSA_SHA384;
        EVP_PKEY *pk = pkey_of(g_keys[i]);
        for (int n = 0; n < 4; n++) {
            uint8_t sig[HSM_MAX_SIG_LEN];
            size_t sig_len;
            cm_span msg = CM_SPAN_LIT("session copy");
            TEST_ASSERT_OK(hsm_sign_sync(p, &sig_len, sig, sizeof(sig), g_keys[i], alg, msg));
            CU_ASSERT(verify_sig(pk, alg, msg, sig, sig_len));
        }
        EVP_PKEY_free(pk);
    }
    hsm_pool_free(p);
    // The copies were session objects: the token still holds exactly one key per label.
    hsm_error err;
    hsm_key *k = NULL;
    char uri[1024], q[128];
    (void)snprintf(q, sizeof(q), "pin-value=%s", g_tt.user_pin);
    TEST_ASSERT_OK(hsm_key_find(g_tok, &k, &err, uri_fmt(uri, sizeof(uri), "object=k-p256", q)));
    hsm_key_free(k);
}

// ---------------------------------------------------------------------------------------------
// Inline dispatch: lanes

// efd_rang reports whether |cq|'s doorbell is readable right now.
static bool efd_rang(const cm_cq *cq)
{
    struct pollfd pf = {.fd = cm_cq_fd(cq), .events = POLLIN};
    return poll(&pf, 1, 0) == 1;
}

static hsm_pool *pool_with(hsm_dispatch d)
{
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 1;
    o.dispatch = d;
    hsm_pool *p = NULL;
    TEST_ASSERT_OK(hsm_pool_new(&p, g_tok, &o));
    return p;
}

static void test_hsm_lane_signs_on_the_callers_session_without_doorbell(void)
{
    hsm_pool *p = pool_with(HSM_DISPATCH_INLINE);
    CU_ASSERT(hsm_pool_inline(p));
    hsm_lane *lane = NULL;
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    CU_ASSERT_FATAL(lane != NULL);
    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    cm_cq_set_drains_before_wait(&cq, true);

    static const int k_which[3] = {K_P256, K_RSA, K_ED25519};
    hsm_job jobs[3];
    hsm_job *ptrs[3];
    uint8_t sigs[3][HSM_MAX_SIG_LEN];
    const cm_span msg = cm_span_make((const uint8_t *)"inline", 6);
    for (size_t i = 0; i < 3; i++) {
        const hsm_key *k = g_keys[k_which[i]];
        hsm_job_init(&jobs[i], &cq, k, hsm_sig_alg_for_key(k), msg, sigs[i], sizeof(sigs[i]));
        ptrs[i] = &jobs[i];
    }
    TEST_ASSERT_OK(hsm_pool_submit_on(p, lane, ptrs, 3));
    // Signed before the call returned, queued for this thread, and no doorbell rang.
    CU_ASSERT(cm_cq_pending(&cq));
    CU_ASSERT(!efd_rang(&cq));
    size_t n = 0;
    for (cm_cq_node *nd = cm_cq_drain(&cq); nd != NULL; nd = nd->next) {
        CU_ASSERT_PTR_EQUAL(nd, &jobs[n].node); // in submission order
        n++;
    }
    CU_ASSERT_EQUAL(n, 3);
    for (size_t i = 0; i < 3; i++) {
        TEST_ASSERT_OK(jobs[i].result);
        EVP_PKEY *pk = pkey_of(g_keys[k_which[i]]);
        CU_ASSERT(verify_sig(pk, jobs[i].alg, msg, sigs[i], jobs[i].sig_len));
        EVP_PKEY_free(pk);
    }
    hsm_pool_stats st;
    hsm_pool_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.signed_inline, 3);
    CU_ASSERT_EQUAL(st.signed_ok, 3);
    CU_ASSERT_EQUAL(st.batches, 0); // no worker was involved

    // A consumer that waits on the eventfd (no promise to drain first) gets its doorbell.
    cm_cq_set_drains_before_wait(&cq, false);
    TEST_ASSERT_OK(hsm_pool_submit_on(p, lane, ptrs, 1));
    CU_ASSERT(efd_rang(&cq));
    CU_ASSERT_PTR_EQUAL(cm_cq_drain(&cq), &jobs[0].node);
    TEST_ASSERT_OK(jobs[0].result);
    cm_cq_cleanup(&cq);
    hsm_lane_free(lane);
    hsm_pool_free(p);
}

static void test_hsm_lane_rejects_bad_jobs_and_foreign_pools(void)
{
    hsm_pool *p = pool_with(HSM_DISPATCH_INLINE);
    hsm_pool *q = pool_with(HSM_DISPATCH_INLINE);
    hsm_lane *lane = NULL;
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    cm_cq_set_drains_before_wait(&cq, true);
    uint8_t sig[HSM_MAX_SIG_LEN];
    hsm_job j;
    hsm_job *jp = &j;
    const cm_span msg = cm_span_make((const uint8_t *)"x", 1);
    hsm_job_init(&j, &cq, g_keys[K_P256], HSM_SIG_ECDSA_SHA256, msg, sig, sizeof(sig));
    TEST_ASSERT_CODE(hsm_pool_submit_on(q, lane, &jp, 1), CM_E_INVALID_ARG); // another pool's
    hsm_job_init(&j, &cq, g_keys[K_P256], HSM_SIG_RSA_PKCS1_SHA256, msg, sig, sizeof(sig));
    TEST_ASSERT_CODE(hsm_pool_submit_on(p, lane, &jp, 1), HSM_E_ALG_MISMATCH);
    hsm_job_init(&j, &cq, g_keys[K_P256], HSM_SIG_ECDSA_SHA256, msg, NULL, 0);
    TEST_ASSERT_CODE(hsm_pool_submit_on(p, lane, &jp, 1), CM_E_INVALID_ARG);
    CU_ASSERT(!cm_cq_pending(&cq)); // a refused submission completes nothing
    hsm_pool_stats st;
    hsm_pool_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.signed_inline, 0);
    cm_cq_cleanup(&cq);
    hsm_lane_free(lane);
    hsm_pool_free(q);
    hsm_pool_free(p);
}

static void test_hsm_pool_dispatch_gives_no_lane_and_uses_workers(void)
{
    hsm_pool *p = pool_with(HSM_DISPATCH_POOL);
    CU_ASSERT(!hsm_pool_inline(p));
    hsm_lane *lane = (hsm_lane *)(uintptr_t)1;
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    CU_ASSERT_PTR_NULL(lane);
    hsm_calibration c;
    TEST_ASSERT_OK(hsm_pool_calibrate(p, &c, g_keys[K_P256], HSM_SIG_ECDSA_SHA256));
    CU_ASSERT(!c.measured);
    CU_ASSERT_EQUAL(c.dispatch, HSM_DISPATCH_POOL);
    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    uint8_t sig[HSM_MAX_SIG_LEN];
    hsm_job j;
    hsm_job *jp = &j;
    hsm_job_init(&j, &cq, g_keys[K_P256], HSM_SIG_ECDSA_SHA256,
                 cm_span_make((const uint8_t *)"pool", 4), sig, sizeof(sig));
    TEST_ASSERT_OK(hsm_pool_submit_on(p, NULL, &jp, 1));
    while (!cm_cq_wait(&cq, 1000)) {
    }
    CU_ASSERT_PTR_EQUAL(cm_cq_drain(&cq), &j.node);
    TEST_ASSERT_OK(j.result);
    hsm_pool_stats st;
    hsm_pool_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.signed_inline, 0);
    CU_ASSERT_EQUAL(st.batches, 1);
    cm_cq_cleanup(&cq);
    hsm_pool_free(p);
}

static void test_hsm_auto_dispatch_is_pool_until_calibrated_then_inline_for_softhsm(void)
{
    hsm_pool *p = pool_with(HSM_DISPATCH_AUTO);
    CU_ASSERT(!hsm_pool_inline(p));
    hsm_lane *lane = NULL;
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    CU_ASSERT_PTR_NULL(lane);
    // Bad calibration input: refused, and the pool keeps signing in its workers.
    hsm_calibration c;
    TEST_ASSERT_CODE(hsm_pool_calibrate(p, &c, NULL, HSM_SIG_ECDSA_SHA256), CM_E_INVALID_ARG);
    TEST_ASSERT_CODE(hsm_pool_calibrate(p, &c, g_keys[K_P256], HSM_SIG_ED25519),
                     HSM_E_ALG_MISMATCH);
    CU_ASSERT(!hsm_pool_inline(p));
    // SoftHSM computes in this process: the thread is on the CPU for the whole signature.
    TEST_ASSERT_OK(hsm_pool_calibrate(p, &c, g_keys[K_P256], HSM_SIG_ECDSA_SHA256));
    CU_ASSERT(c.measured);
    CU_ASSERT(c.signs >= 1 && c.signs <= HSM_CALIBRATE_SIGNS);
    CU_ASSERT(c.wall_ns > 0 && c.cpu_ns > 0);
    CU_ASSERT(c.cpu_permille >= HSM_INLINE_MIN_CPU_PERMILLE);
    CU_ASSERT_EQUAL(c.dispatch, HSM_DISPATCH_INLINE);
    CU_ASSERT(hsm_pool_inline(p));
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    CU_ASSERT_PTR_NOT_NULL(lane);
    hsm_lane_free(lane);
    hsm_pool_free(p);
}

static void test_hsm_dispatch_names_parse(void)
{
    hsm_dispatch d = HSM_DISPATCH_AUTO;
    CU_ASSERT(hsm_dispatch_parse("inline", &d) && d == HSM_DISPATCH_INLINE);
    CU_ASSERT(hsm_dispatch_parse("pool", &d) && d == HSM_DISPATCH_POOL);
    CU_ASSERT(hsm_dispatch_parse("auto", &d) && d == HSM_DISPATCH_AUTO);
    CU_ASSERT(!hsm_dispatch_parse("Inline", &d));
    CU_ASSERT(!hsm_dispatch_parse("", &d));
    CU_ASSERT_STRING_EQUAL(hsm_dispatch_name(HSM_DISPATCH_POOL), "pool");
    CU_ASSERT_STRING_EQUAL(hsm_dispatch_name((hsm_dispatch)7), "?");
}

// ---------------------------------------------------------------------------------------------
// Faults through the shim

#ifdef CM_P11SHIM_PATH

typedef struct shim_run {
    size_t ok, failed_with_want, failed_other, not_once;
    hsm_pool_stats st;
    cm_why first_why; // hsm_job_why of the first failed job
} shim_run;

// shim_sign opens the token through the shim configured to fail every |every|th C_Sign with
// |rv| (closing the real session first when |close|), signs |n| jobs on |sessions| sessions
// in batches of 10, and reports how they ended.
static void shim_sign(shim_run *out, uint32_t sessions, unsigned every, CK_RV rv, bool close,
                      size_t n)
{
    memset(out, 0, sizeof(*out));
    char v[32];
    CU_ASSERT_FATAL(setenv("P11SHIM_MODULE", g_tt.module, 1) == 0);
    (void)snprintf(v, sizeof(v), "%u", every);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_EVERY", v, 1) == 0);
    (void)snprintf(v, sizeof(v), "0x%lx", (unsigned long)rv);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_RV", v, 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_CLOSE", close ? "1" : "0", 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_SIGN_DELAY_US", "0", 1) == 0);
    char uri[1024];
    (void)snprintf(uri, sizeof(uri),
                   "pkcs11:token=hsm-test;object=k-p256?module-path=%s&pin-value=%s",
                   CM_P11SHIM_PATH, g_tt.user_pin);
    hsm_error err;
    hsm_token *t = NULL;
    hsm_key *k = NULL;
    hsm_pool *p = NULL;
    cm_result r = hsm_token_open(&t, &err, uri);
    if (!cm_ok(r)) {
        (void)fprintf(stderr, "\n  shim open: %s: %s\n", cm_result_name(r), err.msg);
    }
    TEST_ASSERT_OK(r);
    TEST_ASSERT_OK(hsm_key_find(t, &k, &err, uri));
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = sessions;
    o.batch = 4;
    TEST_ASSERT_OK(hsm_pool_new(&p, t, &o));

    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    hsm_job *jobs = calloc(n, sizeof(*jobs));
    uint8_t(*sigs)[HSM_MAX_SIG_LEN] = calloc(n, HSM_MAX_SIG_LEN);
    uint8_t(*msgs)[32] = calloc(n, 32);
    uint32_t *counts = calloc(n, sizeof(*counts));
    CU_ASSERT_FATAL(jobs != NULL && sigs != NULL && msgs != NULL && counts != NULL);
    size_t done = 0;
    for (size_t i = 0; i < n; i += 10) {
        hsm_job *ptrs[10];
        size_t m = n - i < 10 ? n - i : 10;
        for (size_t x = 0; x < m; x++) {
            int len = snprintf((char *)msgs[i + x], 32, "shim job %zu", i + x);
            hsm_job_init(&jobs[i + x], &cq, k, HSM_SIG_ECDSA_SHA256,
                         cm_span_make(msgs[i + x], (size_t)len), sigs[i + x], HSM_MAX_SIG_LEN);
            ptrs[x] = &jobs[i + x];
        }
        TEST_ASSERT_OK(hsm_pool_submit(p, ptrs, m));
    }
    while (done < n) {
        (void)cm_cq_wait(&cq, 1000);
        done += drain_count(&cq, jobs, n, counts);
    }
    hsm_pool_get_stats(p, &out->st);
    hsm_pool_free(p);
    done += drain_count(&cq, jobs, n, counts); // nothing more may arrive
    CU_ASSERT_EQUAL(done, n);
    EVP_PKEY *pk = pkey_of(k);
    for (size_t i = 0; i < n; i++) {
        out->not_once += counts[i] != 1;
        if (cm_ok(jobs[i].result)) {
            out->ok++;
            CU_ASSERT(verify_sig(pk, jobs[i].alg, jobs[i].msg, jobs[i].sig, jobs[i].sig_len));
        } else if (jobs[i].result.code == cm_code_from_ckr(rv)) {
            out->failed_with_want++;
            hsm_job_why(&jobs[i], &out->first_why);
        } else {
            out->failed_other++;
            (void)fprintf(stderr, "\n  shim job %zu: unexpected %s\n", i,
                          cm_result_name(jobs[i].result));
        }
    }
    EVP_PKEY_free(pk);
    cm_cq_cleanup(&cq);
    free(counts);
    free(msgs);
    free(sigs);
    free(jobs);
    hsm_key_free(k);
    hsm_token_free(t);
    CU_ASSERT_FATAL(unsetenv("P11SHIM_FAIL_EVERY") == 0);
}

static void test_hsm_shim_closed_session_is_reopened_and_retried(void)
{
    // One session: the calls are sequential, so every fault is followed by a successful retry.
    shim_run run;
    shim_sign(&run, 1, 3, CKR_DEVICE_ERROR, true, 60);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.ok, 60);
    CU_ASSERT(run.st.reopened >= 20);
    CU_ASSERT_EQUAL(run.st.retried, run.st.reopened);
    // Every failed C_Sign is counted although every job succeeded in the end (issue 23:
    // certmint_hsm_failures_total, which counts failed jobs, stayed 0).
    CU_ASSERT_EQUAL(run.st.sign_calls_failed, run.st.reopened);
    CU_ASSERT_EQUAL(run.st.failed, 0);

    shim_sign(&run, 1, 2, CKR_SESSION_HANDLE_INVALID, true, 30);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.ok, 30);
    CU_ASSERT_EQUAL(run.st.reopened, 29); // every job but the first hits one fault

    shim_sign(&run, 1, 4, CKR_USER_NOT_LOGGED_IN, true, 40);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.ok, 40);
    CU_ASSERT(run.st.reopened >= 10);

    // A stale key handle (the key object re-created, or the token dropped the session's copy):
    // looked up again in a fresh session, and the job retried.
    shim_sign(&run, 1, 3, CKR_KEY_HANDLE_INVALID, false, 30);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.ok, 30);
    CU_ASSERT(run.st.reopened >= 5);
    shim_sign(&run, 1, 3, CKR_OBJECT_HANDLE_INVALID, false, 30);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.ok, 30);
}

static void test_hsm_shim_failing_sign_fails_only_that_job(void)
{
    // CKR_FUNCTION_FAILED is not a dead session: the job fails with it, the session stays.
    shim_run run;
    shim_sign(&run, 1, 4, CKR_FUNCTION_FAILED, false, 40);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.failed_with_want, 10);
    CU_ASSERT_EQUAL(run.ok, 30);
    CU_ASSERT_EQUAL(run.failed_other, 0);
    CU_ASSERT_EQUAL(run.st.reopened, 0);
    CU_ASSERT_EQUAL(run.st.sign_calls_failed, 10);
    CU_ASSERT_EQUAL(run.st.failed, 10);
    // Not retried: the reason says so by not claiming a retry.
    CU_ASSERT_STRING_EQUAL(run.first_why.text, "HSM signing failed: CKR_FUNCTION_FAILED");
}

static void test_hsm_shim_dead_device_fails_after_one_retry_with_reason(void)
{
    // Every C_Sign fails with CKR_DEVICE_ERROR: each job is tried, its session reopened, tried
    // again, and fails; both calls are counted, and the reason names the error and the retry.
    shim_run run;
    shim_sign(&run, 1, 1, CKR_DEVICE_ERROR, false, 5);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.failed_with_want, 5);
    CU_ASSERT_EQUAL(run.st.failed, 5);
    CU_ASSERT_EQUAL(run.st.sign_calls_failed, 10);
    CU_ASSERT_EQUAL(run.st.retried, 5);
    CU_ASSERT_STRING_EQUAL(run.first_why.text,
                           "HSM signing failed: CKR_DEVICE_ERROR, retried once");
}

static void test_hsm_shim_faults_on_many_sessions_lose_nothing(void)
{
    // Four sessions racing: a retry may itself land on a faulting call, so a job may fail, but
    // only with the injected code, and every job comes back exactly once.
    shim_run run;
    shim_sign(&run, 4, 5, CKR_SESSION_CLOSED, true, 400);
    CU_ASSERT_EQUAL(run.not_once, 0);
    CU_ASSERT_EQUAL(run.failed_other, 0);
    CU_ASSERT_EQUAL(run.ok + run.failed_with_want, 400);
    CU_ASSERT(run.ok >= 300);
    CU_ASSERT_EQUAL(run.st.signed_ok, run.ok);
    CU_ASSERT(run.st.reopened >= 1);
}

// shim_calibrate opens the token through the shim with every C_Sign delayed |delay_us| and
// calibrates an auto pool on it.
static void shim_calibrate(hsm_calibration *c, const char *delay_us)
{
    CU_ASSERT_FATAL(setenv("P11SHIM_MODULE", g_tt.module, 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_EVERY", "0", 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_SIGN_DELAY_US", delay_us, 1) == 0);
    char uri[1024];
    (void)snprintf(uri, sizeof(uri),
                   "pkcs11:token=hsm-test;object=k-p256?module-path=%s&pin-value=%s",
                   CM_P11SHIM_PATH, g_tt.user_pin);
    hsm_error err;
    hsm_token *t = NULL;
    hsm_key *k = NULL;
    hsm_pool *p = NULL;
    TEST_ASSERT_OK(hsm_token_open(&t, &err, uri));
    TEST_ASSERT_OK(hsm_key_find(t, &k, &err, uri));
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 1;
    TEST_ASSERT_OK(hsm_pool_new(&p, t, &o));
    TEST_ASSERT_OK(hsm_pool_calibrate(p, c, k, HSM_SIG_ECDSA_SHA256));
    hsm_lane *lane = NULL;
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    CU_ASSERT_EQUAL(lane == NULL, c->dispatch == HSM_DISPATCH_POOL);
    hsm_lane_free(lane);
    hsm_pool_free(p);
    hsm_key_free(k);
    hsm_token_free(t);
    CU_ASSERT_FATAL(setenv("P11SHIM_SIGN_DELAY_US", "0", 1) == 0);
}

static void test_hsm_shim_auto_dispatch_keeps_a_waiting_hsm_in_the_pool(void)
{
    // A network HSM: every C_Sign waits 2 ms and costs this thread almost no CPU.
    hsm_calibration c;
    shim_calibrate(&c, "2000");
    CU_ASSERT(c.measured);
    CU_ASSERT(c.signs >= 1);
    CU_ASSERT(c.wall_ns >= 2000000u);
    CU_ASSERT(c.cpu_permille < HSM_INLINE_MIN_CPU_PERMILLE);
    CU_ASSERT_EQUAL(c.dispatch, HSM_DISPATCH_POOL);
    // A slow one (80 ms a signature) costs the start-up one signature, not fifteen.
    shim_calibrate(&c, "80000");
    CU_ASSERT_EQUAL(c.signs, 1);
    CU_ASSERT(c.wall_ns >= 80000000u);
    CU_ASSERT_EQUAL(c.dispatch, HSM_DISPATCH_POOL);
}

static void test_hsm_shim_lane_defers_to_the_workers_while_the_token_is_busy(void)
{
    // Every C_Sign takes 50 ms: while a worker signs, a lane's job goes to the workers too
    // (a loop must not wait for a busy token); once they are idle, the lane signs itself.
    CU_ASSERT_FATAL(setenv("P11SHIM_MODULE", g_tt.module, 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_FAIL_EVERY", "0", 1) == 0);
    CU_ASSERT_FATAL(setenv("P11SHIM_SIGN_DELAY_US", "50000", 1) == 0);
    char uri[1024];
    (void)snprintf(uri, sizeof(uri),
                   "pkcs11:token=hsm-test;object=k-p256?module-path=%s&pin-value=%s",
                   CM_P11SHIM_PATH, g_tt.user_pin);
    hsm_error err;
    hsm_token *t = NULL;
    hsm_key *k = NULL;
    hsm_pool *p = NULL;
    TEST_ASSERT_OK(hsm_token_open(&t, &err, uri));
    TEST_ASSERT_OK(hsm_key_find(t, &k, &err, uri));
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = 1;
    o.dispatch = HSM_DISPATCH_INLINE;
    TEST_ASSERT_OK(hsm_pool_new(&p, t, &o));
    hsm_lane *lane = NULL;
    TEST_ASSERT_OK(hsm_lane_new(&lane, p));
    CU_ASSERT_PTR_NOT_NULL_FATAL(lane);
    cm_cq cq = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&cq));
    cm_cq_set_drains_before_wait(&cq, true);
    hsm_job jobs[3];
    hsm_job *ptrs[3];
    uint8_t sigs[3][HSM_MAX_SIG_LEN];
    const cm_span msg = cm_span_make((const uint8_t *)"busy", 4);
    for (size_t i = 0; i < 3; i++) {
        hsm_job_init(&jobs[i], &cq, k, HSM_SIG_ECDSA_SHA256, msg, sigs[i], sizeof(sigs[i]));
        ptrs[i] = &jobs[i];
    }
    TEST_ASSERT_OK(hsm_pool_submit(p, &ptrs[0], 1));          // the worker: 50 ms
    TEST_ASSERT_OK(hsm_pool_submit_on(p, lane, &ptrs[1], 1)); // busy: to the worker as well
    hsm_pool_stats st;
    hsm_pool_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.inline_deferred, 1);
    CU_ASSERT_EQUAL(st.signed_inline, 0);
    size_t back = 0;
    while (back < 2) {
        (void)cm_cq_wait(&cq, 1000);
        for (cm_cq_node *nd = cm_cq_drain(&cq); nd != NULL; nd = nd->next) {
            back++;
        }
    }
    TEST_ASSERT_OK(jobs[0].result);
    TEST_ASSERT_OK(jobs[1].result);
    TEST_ASSERT_OK(hsm_pool_submit_on(p, lane, &ptrs[2], 1)); // idle again: inline
    CU_ASSERT(cm_cq_pending(&cq));
    CU_ASSERT_PTR_EQUAL(cm_cq_drain(&cq), &jobs[2].node);
    TEST_ASSERT_OK(jobs[2].result);
    hsm_pool_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.signed_inline, 1);
    CU_ASSERT_EQUAL(st.inline_deferred, 1);
    EVP_PKEY *pk = pkey_of(k);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT(verify_sig(pk, HSM_SIG_ECDSA_SHA256, msg, sigs[i], jobs[i].sig_len));
    }
    EVP_PKEY_free(pk);
    cm_cq_cleanup(&cq);
    hsm_lane_free(lane);
    hsm_pool_free(p);
    hsm_key_free(k);
    hsm_token_free(t);
    CU_ASSERT_FATAL(setenv("P11SHIM_SIGN_DELAY_US", "0", 1) == 0);
}

#endif // CM_P11SHIM_PATH

// The CK_RV names moved to engine/base (cm_ckr_name), which does not see pkcs11.h: check its
// table against the header's numbers.
static void test_hsm_ckr_names_match_pkcs11_h(void)
{
#define HSM_CKR_CASE(x) \
    {                   \
        x, #x           \
    }
    static const struct {
        CK_RV rv;
        const char *name;
    } k_cases[] = {
        HSM_CKR_CASE(CKR_OK),
        HSM_CKR_CASE(CKR_CANCEL),
        HSM_CKR_CASE(CKR_HOST_MEMORY),
        HSM_CKR_CASE(CKR_SLOT_ID_INVALID),
        HSM_CKR_CASE(CKR_GENERAL_ERROR),
        HSM_CKR_CASE(CKR_FUNCTION_FAILED),
        HSM_CKR_CASE(CKR_ARGUMENTS_BAD),
        HSM_CKR_CASE(CKR_NO_EVENT),
        HSM_CKR_CASE(CKR_NEED_TO_CREATE_THREADS),
        HSM_CKR_CASE(CKR_CANT_LOCK),
        HSM_CKR_CASE(CKR_ATTRIBUTE_READ_ONLY),
        HSM_CKR_CASE(CKR_ATTRIBUTE_SENSITIVE),
        HSM_CKR_CASE(CKR_ATTRIBUTE_TYPE_INVALID),
        HSM_CKR_CASE(CKR_ATTRIBUTE_VALUE_INVALID),
        HSM_CKR_CASE(CKR_ACTION_PROHIBITED),
        HSM_CKR_CASE(CKR_DATA_INVALID),
        HSM_CKR_CASE(CKR_DATA_LEN_RANGE),
        HSM_CKR_CASE(CKR_DEVICE_ERROR),
        HSM_CKR_CASE(CKR_DEVICE_MEMORY),
        HSM_CKR_CASE(CKR_DEVICE_REMOVED),
        HSM_CKR_CASE(CKR_FUNCTION_CANCELED),
        HSM_CKR_CASE(CKR_FUNCTION_NOT_PARALLEL),
        HSM_CKR_CASE(CKR_FUNCTION_NOT_SUPPORTED),
        HSM_CKR_CASE(CKR_KEY_HANDLE_INVALID),
        HSM_CKR_CASE(CKR_KEY_SIZE_RANGE),
        HSM_CKR_CASE(CKR_KEY_TYPE_INCONSISTENT),
        HSM_CKR_CASE(CKR_KEY_FUNCTION_NOT_PERMITTED),
        HSM_CKR_CASE(CKR_MECHANISM_INVALID),
        HSM_CKR_CASE(CKR_MECHANISM_PARAM_INVALID),
        HSM_CKR_CASE(CKR_OBJECT_HANDLE_INVALID),
        HSM_CKR_CASE(CKR_OPERATION_ACTIVE),
        HSM_CKR_CASE(CKR_OPERATION_NOT_INITIALIZED),
        HSM_CKR_CASE(CKR_PIN_INCORRECT),
        HSM_CKR_CASE(CKR_PIN_INVALID),
        HSM_CKR_CASE(CKR_PIN_LEN_RANGE),
        HSM_CKR_CASE(CKR_PIN_EXPIRED),
        HSM_CKR_CASE(CKR_PIN_LOCKED),
        HSM_CKR_CASE(CKR_SESSION_CLOSED),
        HSM_CKR_CASE(CKR_SESSION_COUNT),
        HSM_CKR_CASE(CKR_SESSION_HANDLE_INVALID),
        HSM_CKR_CASE(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
        HSM_CKR_CASE(CKR_SESSION_READ_ONLY),
        HSM_CKR_CASE(CKR_SESSION_EXISTS),
        HSM_CKR_CASE(CKR_SESSION_READ_ONLY_EXISTS),
        HSM_CKR_CASE(CKR_SESSION_READ_WRITE_SO_EXISTS),
        HSM_CKR_CASE(CKR_SIGNATURE_INVALID),
        HSM_CKR_CASE(CKR_SIGNATURE_LEN_RANGE),
        HSM_CKR_CASE(CKR_TEMPLATE_INCOMPLETE),
        HSM_CKR_CASE(CKR_TEMPLATE_INCONSISTENT),
        HSM_CKR_CASE(CKR_TOKEN_NOT_PRESENT),
        HSM_CKR_CASE(CKR_TOKEN_NOT_RECOGNIZED),
        HSM_CKR_CASE(CKR_TOKEN_WRITE_PROTECTED),
        HSM_CKR_CASE(CKR_USER_ALREADY_LOGGED_IN),
        HSM_CKR_CASE(CKR_USER_NOT_LOGGED_IN),
        HSM_CKR_CASE(CKR_USER_PIN_NOT_INITIALIZED),
        HSM_CKR_CASE(CKR_USER_TYPE_INVALID),
        HSM_CKR_CASE(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
        HSM_CKR_CASE(CKR_USER_TOO_MANY_TYPES),
        HSM_CKR_CASE(CKR_DOMAIN_PARAMS_INVALID),
        HSM_CKR_CASE(CKR_CURVE_NOT_SUPPORTED),
        HSM_CKR_CASE(CKR_BUFFER_TOO_SMALL),
        HSM_CKR_CASE(CKR_RANDOM_NO_RNG),
        HSM_CKR_CASE(CKR_CRYPTOKI_NOT_INITIALIZED),
        HSM_CKR_CASE(CKR_CRYPTOKI_ALREADY_INITIALIZED),
        HSM_CKR_CASE(CKR_MUTEX_BAD),
        HSM_CKR_CASE(CKR_MUTEX_NOT_LOCKED),
        HSM_CKR_CASE(CKR_FUNCTION_REJECTED),
    };
#undef HSM_CKR_CASE
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        CU_ASSERT_STRING_EQUAL(cm_ckr_name(k_cases[i].rv), k_cases[i].name);
    }
    CU_ASSERT_STRING_EQUAL(cm_ckr_name(CKR_VENDOR_DEFINED + 5), "CKR_VENDOR_DEFINED");
    CU_ASSERT_STRING_EQUAL(cm_ckr_name(0x0777), "CKR_UNKNOWN");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(CKR_DEVICE_ERROR))),
                           "HSM/CKR_DEVICE_ERROR");
}

int test_hsm_register(void);
int test_hsm_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_hsm_ckr_names_match_pkcs11_h),
        TEST_CASE(test_hsm_every_mechanism_verifies_with_openssl),
        TEST_CASE(test_hsm_spki_matches_openssl_encoding),
        TEST_CASE(test_hsm_alg_ids_match_openssl),
        TEST_CASE(test_hsm_sig_alg_for_type),
        TEST_CASE(test_hsm_ecdsa_sig_uses_minimal_integers),
        TEST_CASE(test_hsm_keygen_sets_protective_attributes),
        TEST_CASE(test_hsm_keygen_large_rsa_and_duplicates),
        TEST_CASE(test_hsm_uri_selects_keys),
        TEST_CASE(test_hsm_uri_pin_source_file),
        TEST_CASE(test_hsm_uri_errors_are_distinct),
        TEST_CASE(test_hsm_pool_many_submitters_complete_exactly_once),
        TEST_CASE(test_hsm_pool_shutdown_fails_queued_jobs),
        TEST_CASE(test_hsm_pool_rejects_bad_jobs),
        TEST_CASE(test_hsm_job_why_names_the_failure),
        TEST_CASE(test_hsm_pool_with_session_copies_signs),
        TEST_CASE(test_hsm_lane_signs_on_the_callers_session_without_doorbell),
        TEST_CASE(test_hsm_lane_rejects_bad_jobs_and_foreign_pools),
        TEST_CASE(test_hsm_pool_dispatch_gives_no_lane_and_uses_workers),
        TEST_CASE(test_hsm_auto_dispatch_is_pool_until_calibrated_then_inline_for_softhsm),
        TEST_CASE(test_hsm_dispatch_names_parse),
#ifdef CM_P11SHIM_PATH
        TEST_CASE(test_hsm_shim_auto_dispatch_keeps_a_waiting_hsm_in_the_pool),
        TEST_CASE(test_hsm_shim_lane_defers_to_the_workers_while_the_token_is_busy),
        TEST_CASE(test_hsm_shim_closed_session_is_reopened_and_retried),
        TEST_CASE(test_hsm_shim_failing_sign_fails_only_that_job),
        TEST_CASE(test_hsm_shim_faults_on_many_sessions_lose_nothing),
        TEST_CASE(test_hsm_shim_dead_device_fails_after_one_retry_with_reason),
#endif
    };
    return test_register_suite("hsm", hsm_suite_init, hsm_suite_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
