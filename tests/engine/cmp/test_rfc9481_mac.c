// Suite "cmp_rfc9481", the MAC half: every key-based MAC row (HMAC, AES-GMAC, KMAC) and every
// PBM/PBMAC1 digest pair through cmp_protect_verify_mac and back out as a response; secret
// kinds; parameters that do not fit; KMAC (NIST SP 800-185 samples) and GMAC (NIST CAVP and the
// GCM specification's test cases with an empty plaintext) known answers against EVP_MAC.
#include <stdio.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "engine/der/der_oid.h"
#include "tests/engine/cmp/test_rfc9481.h"
#include "tests/support/test_support.h"

#define PASSWORD "factory-password"

// 32 distinct octets; the first 16/24/32 are the AES-GMAC keys.
static const uint8_t k_key[64] = {0x4b, 0x65, 0x79, 0x21, 0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc,
                                  0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x0f, 0x1e,
                                  0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4};

typedef struct mac_job {
    cmp_protect_ctx *ctx;
    const cmp_mac_key *key;
} mac_job;

static bool mac_protect(void *arg, uint8_t *out, size_t cap, size_t *out_len, cm_span content)
{
    const mac_job *j = arg;
    return cm_ok(cmp_mac_compute(j->ctx, out, cap, out_len, j->key, content));
}

static cm_span key_alg(const cmp_mac_key *k)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 256);
    cmp_mac_key_put_alg(&b, k);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

static cm_span mac_msg(cmp_protect_ctx *ctx, const cmp_mac_key *k, cm_span alg)
{
    mac_job j = {ctx, k};
    return test_rfc_build_msg(alg, CM_SPAN_LIT("line-7"), mac_protect, &j, NULL, 0);
}

static cm_result verify(cmp_protect_ctx *ctx, cmp_mac_key *out, const cmp_msg *m, cm_span secret,
                        cmp_secret_kind kind, cm_why *why)
{
    return cmp_protect_verify_mac(ctx, out, m->header.f.protection_alg, secret, kind,
                                  m->protected_part, m->protection, m->protection_unused, why);
}

// oracle_mac computes row |a|'s MAC with EVP_MAC over |data| (GMAC: |nonce|, truncated to
// |tag_len|).
static size_t oracle_mac(const crmf_alg *a, cm_span key, cm_span data, const uint8_t *nonce,
                         size_t tag_len, uint8_t *out)
{
    const bool gmac = strcmp(a->ossl, "AES-128-GCM") == 0 || strcmp(a->ossl, "AES-192-GCM") == 0 ||
                      strcmp(a->ossl, "AES-256-GCM") == 0;
    const bool kmac = strncmp(a->ossl, "KMAC", 4) == 0;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, gmac ? "GMAC" : kmac ? a->ossl : "HMAC", NULL);
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(mac);
    OSSL_PARAM p[3];
    size_t n = 0;
    size_t size = a->size;
    char name[32];
    uint8_t iv[12];
    if (gmac) {
        (void)snprintf(name, sizeof(name), "%s", a->ossl);
        memcpy(iv, nonce, sizeof(iv));
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, name, 0);
        p[n++] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_IV, iv, sizeof(iv));
    } else if (kmac) {
        p[n++] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size);
    } else {
        const char *md = a->hash == CRMF_HASH_SHA1     ? "SHA1"
                         : a->hash == CRMF_HASH_SHA224 ? "SHA224"
                         : a->hash == CRMF_HASH_SHA256 ? "SHA256"
                         : a->hash == CRMF_HASH_SHA384 ? "SHA384"
                                                       : "SHA512";
        (void)snprintf(name, sizeof(name), "%s", md);
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name, 0);
    }
    p[n] = OSSL_PARAM_construct_end();
    uint8_t full[64];
    size_t len = 0;
    CU_ASSERT_FATAL(c != NULL && EVP_MAC_init(c, key.p, key.len, p) == 1 &&
                    EVP_MAC_update(c, data.p, data.len) == 1 &&
                    EVP_MAC_final(c, full, &len, sizeof(full)) == 1);
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(mac);
    if (gmac) {
        len = tag_len;
    }
    memcpy(out, full, len);
    return len;
}

// gmac_nonce finds the nonce in an AES-GMAC protectionAlg.
static cm_span gmac_nonce(cm_span alg)
{
    der_reader r, s, p;
    cm_span oid, nonce = {NULL, 0};
    der_reader_init(&r, alg);
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &s));
    TEST_ASSERT_OK(der_get_oid(&s, &oid));
    TEST_ASSERT_OK(der_enter(&s, DER_TAG_SEQUENCE, &p));
    TEST_ASSERT_OK(der_get_octets(&p, &nonce));
    return nonce;
}

void test_rfc9481_key_macs_protect_and_echo(void)
{
    size_t rows = 0;
    for (int id = CRMF_ALG_NONE + 1; id < CRMF_ALG_COUNT; id++) {
        const crmf_alg *a = crmf_alg_get((crmf_alg_id)id);
        if (a->kind != CRMF_ALG_KIND_KEY_MAC) {
            continue;
        }
        rows++;
        const bool gmac = strstr(a->name, "gmac") != NULL;
        const cm_span secret = cm_span_make(k_key, gmac ? a->size : 32);
        cmp_mac_key k;
        TEST_ASSERT_OK(cmp_mac_key_new_keyed(test_rfc_prot, &k, secret, a->id));
        const cm_span alg = key_alg(&k);
        const cm_span der = mac_msg(test_rfc_prot, &k, alg);
        cmp_msg m;
        test_rfc_parse(&m, der);
        cmp_prot_kind kind;
        TEST_ASSERT_OK(cmp_protect_kind(&kind, m.header.f.protection_alg));
        CU_ASSERT_EQUAL(kind, CMP_PROT_KEY_MAC);
        CU_ASSERT_TRUE(cmp_prot_kind_is_mac(kind));
        CU_ASSERT_FALSE(cmp_is_signature_alg(m.header.protection_alg.oid));
        cmp_mac_key rk;
        cm_why why;
        cm_why_clear(&why);
        cm_result r = verify(test_rfc_prot, &rk, &m, secret, CMP_SECRET_KEY, &why);
        if (!cm_ok(r)) {
            (void)fprintf(stderr, "\n  %s: %s (%s)\n", a->name, cm_result_name(r), why.text);
        }
        CU_ASSERT_EQUAL_FATAL(r.code, CM_OK);
        // OpenSSL, independently, over the ProtectedPart DER.
        uint8_t want[64];
        const size_t want_len =
            oracle_mac(a, secret, test_rfc_protected_part_der(m.protected_part),
                       gmac ? gmac_nonce(m.header.f.protection_alg).p : NULL, 16, want);
        CU_ASSERT_TRUE(want_len == m.protection.len && memcmp(want, m.protection.p, want_len) == 0);
        // One flipped octet of the protection or of the protected content: refused.
        const cm_span spots[3] = {m.protection, m.protection, m.protected_part};
        const size_t at[3] = {0, m.protection.len - 1, m.protected_part.len - 3};
        for (size_t i = 0; i < 3; i++) {
            cmp_msg bad;
            test_rfc_parse(&bad, test_rfc_flip(der, spots[i], at[i]));
            cmp_mac_key bk;
            TEST_ASSERT_CODE(verify(test_rfc_prot, &bk, &bad, secret, CMP_SECRET_KEY, NULL),
                             CMP_E_PROT_MAC_MISMATCH);
        }
        // The response: the request's protectionAlg (AES-GMAC: a fresh nonce), and the client
        // checks it by deriving from what the response names.
        const cm_span resp_alg = key_alg(&rk);
        if (gmac) {
            CU_ASSERT_EQUAL(resp_alg.len, m.header.f.protection_alg.len);
            CU_ASSERT_FALSE(
                cm_span_eq(gmac_nonce(resp_alg), gmac_nonce(m.header.f.protection_alg)));
            // Each verification draws its own.
            cmp_mac_key rk2;
            TEST_ASSERT_OK(verify(test_rfc_prot, &rk2, &m, secret, CMP_SECRET_KEY, NULL));
            CU_ASSERT_FALSE(cm_span_eq(gmac_nonce(key_alg(&rk2)), gmac_nonce(resp_alg)));
            cmp_mac_key_cleanse(&rk2);
        } else {
            CU_ASSERT_TRUE(cm_span_eq(resp_alg, m.header.f.protection_alg));
        }
        CU_ASSERT_TRUE(cmp_mac_key_matches(test_rfc_prot, &rk, resp_alg));
        cmp_msg resp;
        test_rfc_parse(&resp, mac_msg(test_rfc_prot, &rk, resp_alg));
        cmp_mac_key ck;
        TEST_ASSERT_OK(cmp_mac_key_derive(test_rfc_prot, &ck, resp_alg, secret, CMP_SECRET_KEY));
        TEST_ASSERT_OK(cmp_mac_verify(test_rfc_prot, &ck, resp.protected_part, resp.protection,
                                      resp.protection_unused));
        // The default policy: every key-based MAC but HMAC-SHA1.
        cmp_mac_key sk;
        cm_why_clear(&why);
        r = verify(test_rfc_prot_strict, &sk, &m, secret, CMP_SECRET_KEY, &why);
        if (a->sha1) {
            CU_ASSERT_EQUAL(r.code, CMP_E_PROT_ALG_POLICY);
            char text[160];
            (void)snprintf(text, sizeof(text), "MAC algorithm %s is not allowed (protection_algs)",
                           a->asn1_name);
            CU_ASSERT_STRING_EQUAL(why.text, text);
        } else {
            CU_ASSERT_EQUAL(r.code, CM_OK);
        }
        cmp_mac_key_cleanse(&k);
        cmp_mac_key_cleanse(&rk);
        cmp_mac_key_cleanse(&ck);
        cmp_mac_key_cleanse(&sk);
        cm_arena_reset(&test_rfc_arena);
    }
    // HMAC-SHA1 (two OIDs), HMAC-SHA224/256/384/512, AES-GMAC 128/192/256, KMAC128/256.
    CU_ASSERT_EQUAL(rows, 11);
}

void test_rfc9481_key_mac_secret_kinds(void)
{
    const cm_span key = cm_span_make(k_key, 32);
    cmp_mac_key k, out;
    cm_why why;
    // A password never under a key-based MAC.
    TEST_ASSERT_OK(cmp_mac_key_new_keyed(test_rfc_prot, &k, key, CRMF_ALG_HMAC_SHA256));
    cmp_msg m;
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, key_alg(&k)));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(verify(test_rfc_prot, &out, &m, key, CMP_SECRET_PASSWORD, &why),
                     CMP_E_PROT_SECRET_KIND);
    CU_ASSERT_STRING_EQUAL(why.text,
                           "id-hmacWithSHA256 needs a key (key.REF) and the secret for this "
                           "senderKID is a password (secret.REF): protect with PBM or PBMAC1");
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_SECRET_KIND), CM_FAIL_WRONG_INTEGRITY);
    CU_ASSERT_EQUAL(out.kind, 0); // cleansed
    // A key never under PBM or PBMAC1.
    cmp_mac_key pk;
    TEST_ASSERT_OK(
        cmp_mac_key_new_pbm(test_rfc_prot, &pk, key, CMP_HASH_SHA256, CMP_HASH_SHA256, 100, 16));
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &pk, key_alg(&pk)));
    TEST_ASSERT_OK(verify(test_rfc_prot, &out, &m, key, CMP_SECRET_PASSWORD, NULL));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(verify(test_rfc_prot, &out, &m, key, CMP_SECRET_KEY, &why),
                     CMP_E_PROT_SECRET_KIND);
    CU_ASSERT_PTR_NOT_NULL(strstr(why.text, "PasswordBasedMac is a password-based MAC"));
    TEST_ASSERT_OK(cmp_mac_key_new_pbmac1(test_rfc_prot, &pk, key, CMP_HASH_SHA256, CMP_HASH_SHA256,
                                          1000, 16, 32));
    TEST_ASSERT_CODE(cmp_mac_key_derive(test_rfc_prot, &out, key_alg(&pk), key, CMP_SECRET_KEY),
                     CMP_E_PROT_SECRET_KIND);
    // Key lengths: AES-GMAC takes exactly its key; the others 16..64 octets.
    TEST_ASSERT_OK(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(k_key, 32), CRMF_ALG_AES256_GMAC));
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, key_alg(&k)));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(verify(test_rfc_prot, &out, &m, cm_span_make(k_key, 16), CMP_SECRET_KEY, &why),
                     CMP_E_PROT_SECRET_LEN);
    CU_ASSERT_STRING_EQUAL(why.text, "id-aes256-GMAC needs a 32-octet key; the key for this "
                                     "senderKID has 16");
    TEST_ASSERT_CODE(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(k_key, 15), CRMF_ALG_HMAC_SHA512),
        CMP_E_PROT_SECRET_LEN);
    TEST_ASSERT_CODE(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(k_key, 65), CRMF_ALG_KMAC256),
        CMP_E_PROT_SECRET_LEN);
    TEST_ASSERT_CODE(cmp_mac_key_new_keyed(test_rfc_prot, &k, key, CRMF_ALG_PBM),
                     CMP_E_PROT_ALG_UNSUPPORTED);
    cmp_mac_key_cleanse(&k);
    cmp_mac_key_cleanse(&pk);
    cmp_mac_key_cleanse(&out);
}

// hand_alg writes SEQUENCE { |oid|, |params| (raw, may be empty) } into the arena.
static cm_span hand_alg(cm_span oid, cm_span params)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 256);
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_oid(&b, oid);
    der_put_raw(&b, params);
    der_close(&b, &m);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

// gmac_params writes GMACParameters with a |nonce_len|-octet nonce and |len| (0: absent).
static cm_span gmac_params(size_t nonce_len, uint64_t len)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 64);
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_octets(&b, cm_span_make(k_key, nonce_len));
    if (len > 0) {
        der_put_u64(&b, len);
    }
    der_close(&b, &m);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

// pbmac1_alg writes a PBMAC1 protectionAlg whose PBKDF2 PRF is |prf| (an AlgorithmIdentifier
// element) and whose MAC is |mac|.
static cm_span pbmac1_alg(cm_span prf, cm_span mac)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 256);
    der_mark a, p, k, kp;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBMAC1);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_open(&b, &k, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PBKDF2);
    der_open(&b, &kp, DER_TAG_SEQUENCE);
    der_put_octets(&b, cm_span_make(k_key, 16));
    der_put_u64(&b, 1000);
    der_put_u64(&b, 32);
    der_put_raw(&b, prf);
    der_close(&b, &kp);
    der_close(&b, &k);
    der_put_raw(&b, mac);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

void test_rfc9481_key_mac_parameters_refused(void)
{
    const cm_span key = cm_span_make(k_key, 16);
    const cm_span gmac = CM_SPAN_LIT(DER_OID_AES128_GMAC);
    const cm_span kmac = CM_SPAN_LIT(DER_OID_KMAC_SHAKE128);
    const struct {
        cm_span alg;
        cmp_protect_ctx **ctx;
        uint32_t code;
        const char *why; // NULL: any
    } cases[] = {
        {hand_alg(gmac, gmac_params(16, 0)), &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED,
         "the id-aes128-GMAC nonce is 16 octets; it must be 12"},
        {hand_alg(gmac, gmac_params(8, 0)), &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED,
         "the id-aes128-GMAC nonce is 8 octets; it must be 12"},
        {hand_alg(gmac, gmac_params(12, 17)), &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED,
         "the id-aes128-GMAC length 17 is outside 12..16 octets"},
        {hand_alg(gmac, gmac_params(12, 11)), &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED, NULL},
        {hand_alg(gmac, gmac_params(12, 12)), &test_rfc_prot, CMP_E_PROT_PARAMS, NULL}, // DEFAULT
        {hand_alg(gmac, cm_span_make(NULL, 0)), &test_rfc_prot, CMP_E_PROT_PARAMS, NULL},
        {hand_alg(kmac, CM_SPAN_LIT("\x30\x04\x02\x02\x01\x00")), &test_rfc_prot,
         CMP_E_PROT_ALG_UNSUPPORTED,
         "id-KMACWithSHAKE128 takes no parameters (RFC 8702 section 3.4: a 256-bit output and "
         "an empty customization string)"},
        {hand_alg(CM_SPAN_LIT(DER_OID_HMAC_SHA256), CM_SPAN_LIT("\x02\x01\x00")), &test_rfc_prot,
         CMP_E_PROT_PARAMS, NULL},
        // PBKDF2's PRF must be an HMAC (RFC 9481: AES-GMAC MUST NOT be used with PBKDF2).
        {pbmac1_alg(hand_alg(gmac, gmac_params(12, 0)),
                    hand_alg(CM_SPAN_LIT(DER_OID_HMAC_SHA256), cm_span_make(NULL, 0))),
         &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED,
         "the PBKDF2 PRF id-aes128-GMAC is not supported (it must be an HMAC with SHA-2)"},
        {pbmac1_alg(hand_alg(kmac, cm_span_make(NULL, 0)),
                    hand_alg(CM_SPAN_LIT(DER_OID_HMAC_SHA256), cm_span_make(NULL, 0))),
         &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED, NULL},
        {pbmac1_alg(hand_alg(CM_SPAN_LIT(DER_OID_HMAC_SHA1), cm_span_make(NULL, 0)),
                    hand_alg(CM_SPAN_LIT(DER_OID_HMAC_SHA256), cm_span_make(NULL, 0))),
         &test_rfc_prot_strict, CMP_E_PROT_ALG_POLICY,
         "the PBKDF2 PRF hmacWithSHA1 is not allowed (protection_algs)"},
        // ...and PBMAC1's messageAuthScheme an HMAC too.
        {pbmac1_alg(hand_alg(CM_SPAN_LIT(DER_OID_HMAC_SHA256), cm_span_make(NULL, 0)),
                    hand_alg(kmac, cm_span_make(NULL, 0))),
         &test_rfc_prot, CMP_E_PROT_ALG_UNSUPPORTED,
         "the PBMAC1 MAC id-KMACWithSHAKE128 is not supported (it must be an HMAC with SHA-2)"},
    };
    for (size_t i = 0; i < TEST_NUM_CASES(cases); i++) {
        cmp_mac_key k;
        cm_why why;
        cm_why_clear(&why);
        TEST_ASSERT_CODE(cmp_protect_verify_mac(*cases[i].ctx, &k, cases[i].alg, key,
                                                CMP_SECRET_KEY, CM_SPAN_LIT("x"),
                                                CM_SPAN_LIT("0123456789abcdef"), 0, &why),
                         cases[i].code);
        if (cases[i].why != NULL) {
            CU_ASSERT_STRING_EQUAL(why.text, cases[i].why);
        }
    }
    // A MACLength of 13: 13 octets of tag; a full 16-octet tag is refused by its length.
    cmp_mac_key k;
    const cm_span alg13 = hand_alg(gmac, gmac_params(12, 13));
    TEST_ASSERT_OK(cmp_mac_key_derive(test_rfc_prot, &k, alg13, key, CMP_SECRET_KEY));
    CU_ASSERT_EQUAL(k.tag_len, 13);
    cmp_msg m;
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, alg13));
    CU_ASSERT_EQUAL(m.protection.len, 13);
    cmp_mac_key rk;
    TEST_ASSERT_OK(verify(test_rfc_prot, &rk, &m, key, CMP_SECRET_KEY, NULL));
    uint8_t full[16];
    CU_ASSERT_EQUAL(oracle_mac(crmf_alg_get(CRMF_ALG_AES128_GMAC), key,
                               test_rfc_protected_part_der(m.protected_part), k_key, 16, full),
                    16);
    CU_ASSERT_EQUAL(memcmp(full, m.protection.p, 13), 0); // the leftmost octets
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_protect_verify_mac(test_rfc_prot, &rk, alg13, key, CMP_SECRET_KEY,
                                            m.protected_part, cm_span_make(full, 16), 0, &why),
                     CMP_E_PROT_MAC_MISMATCH);
    CU_ASSERT_STRING_EQUAL(why.text, "the MAC value is 16 octets; id-aes128-GMAC gives 13");
    // A KMAC128 value of 16 octets (a KMAC with L = 128): refused, the length named.
    TEST_ASSERT_OK(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(k_key, 32), CRMF_ALG_KMAC128));
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, key_alg(&k)));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_protect_verify_mac(test_rfc_prot, &rk, m.header.f.protection_alg,
                                            cm_span_make(k_key, 32), CMP_SECRET_KEY,
                                            m.protected_part, cm_span_make(m.protection.p, 16), 0,
                                            &why),
                     CMP_E_PROT_MAC_MISMATCH);
    CU_ASSERT_STRING_EQUAL(why.text, "the MAC value is 16 octets; id-KMACWithSHAKE128 gives 32");
    // protection_algs without the MAC: refused with the setting named.
    crmf_alg_policy p;
    char err[160];
    TEST_ASSERT_OK(
        crmf_alg_policy_parse(&p, err, sizeof(err), "kmac128", 1u << CRMF_ALG_KIND_KEY_MAC, false));
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.policy = &p;
    cmp_protect_ctx *only = NULL;
    TEST_ASSERT_OK(cmp_protect_ctx_new(&only, NULL, NULL, &lim));
    TEST_ASSERT_OK(verify(only, &rk, &m, cm_span_make(k_key, 32), CMP_SECRET_KEY, NULL));
    TEST_ASSERT_OK(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(k_key, 32), CRMF_ALG_HMAC_SHA256));
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, key_alg(&k)));
    cm_why_clear(&why);
    TEST_ASSERT_CODE(verify(only, &rk, &m, cm_span_make(k_key, 32), CMP_SECRET_KEY, &why),
                     CMP_E_PROT_ALG_POLICY);
    CU_ASSERT_STRING_EQUAL(why.text, "MAC algorithm id-hmacWithSHA256 is not allowed "
                                     "(protection_algs)");
    cmp_protect_ctx_free(only);
    cmp_mac_key_cleanse(&k);
    cmp_mac_key_cleanse(&rk);
}

// pbm_alg_with_nulls writes a PBM protectionAlg whose OWF and MAC identifiers carry NULL
// parameters (allowed, RFC 5754 §2), as some clients send them.
static cm_span pbm_alg_with_nulls(void)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 256);
    der_mark a, p, o, m;
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_PASSWORD_BASED_MAC);
    der_open(&b, &p, DER_TAG_SEQUENCE);
    der_put_octets(&b, cm_span_make(k_key, 16));
    der_open(&b, &o, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_SHA512);
    der_put_null(&b);
    der_close(&b, &o);
    der_put_u64(&b, 1000);
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_HMAC_SHA384);
    der_put_null(&b);
    der_close(&b, &m);
    der_close(&b, &p);
    der_close(&b, &a);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

// pw_roundtrip protects a message with |k|, verifies it as a request, checks the response's
// protectionAlg is the request's byte for byte (RFC 9483 §3.2) and that a flipped octet fails.
static void pw_roundtrip(const cmp_mac_key *k, cm_span alg, const char *what)
{
    const cm_span pw = CM_SPAN_LIT(PASSWORD);
    const cm_span der = mac_msg(test_rfc_prot, k, alg);
    cmp_msg m;
    test_rfc_parse(&m, der);
    cmp_mac_key rk;
    cm_why why;
    cm_why_clear(&why);
    cm_result r = verify(test_rfc_prot, &rk, &m, pw, CMP_SECRET_PASSWORD, &why);
    if (!cm_ok(r)) {
        (void)fprintf(stderr, "\n  %s: %s (%s)\n", what, cm_result_name(r), why.text);
    }
    CU_ASSERT_EQUAL_FATAL(r.code, CM_OK);
    CU_ASSERT_TRUE(cm_span_eq(key_alg(&rk), m.header.f.protection_alg));
    cmp_msg bad;
    test_rfc_parse(&bad, test_rfc_flip(der, m.protection, 1));
    cmp_mac_key bk;
    TEST_ASSERT_CODE(verify(test_rfc_prot, &bk, &bad, pw, CMP_SECRET_PASSWORD, NULL),
                     CMP_E_PROT_MAC_MISMATCH);
    cmp_mac_key_cleanse(&rk);
}

void test_rfc9481_password_macs_every_pair(void)
{
    const cm_span pw = CM_SPAN_LIT(PASSWORD);
    const cmp_hash hashes[] = {CMP_HASH_SHA1, CMP_HASH_SHA224, CMP_HASH_SHA256, CMP_HASH_SHA384,
                               CMP_HASH_SHA512};
    char what[64];
    for (size_t o = 0; o < TEST_NUM_CASES(hashes); o++) {
        for (size_t mac = 0; mac < TEST_NUM_CASES(hashes); mac++) {
            // PasswordBasedMac: OWF x HMAC, and HMAC-SHA1 also by RFC 4211's OID.
            cmp_mac_key k;
            TEST_ASSERT_OK(
                cmp_mac_key_new_pbm(test_rfc_prot, &k, pw, hashes[o], hashes[mac], 100, 16));
            k.mac_ipsec_oid = hashes[mac] == CMP_HASH_SHA1 && o % 2 == 0;
            (void)snprintf(what, sizeof(what), "PBM owf %zu mac %zu", o, mac);
            const cm_span alg = key_alg(&k);
            pw_roundtrip(&k, alg, what);
            // The default policy refuses the SHA-1 pairs, and only those.
            cmp_msg m;
            test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, alg));
            cmp_mac_key sk;
            const cm_result r =
                verify(test_rfc_prot_strict, &sk, &m, pw, CMP_SECRET_PASSWORD, NULL);
            CU_ASSERT_EQUAL(r.code, o == 0 || mac == 0 ? CMP_E_PROT_ALG_POLICY : CM_OK);
            cmp_mac_key_cleanse(&sk);
            // PBMAC1: PBKDF2 over HMAC-SHA-2 x HMAC-SHA-2.
            if (o > 0 && mac > 0) {
                TEST_ASSERT_OK(cmp_mac_key_new_pbmac1(test_rfc_prot, &k, pw, hashes[o], hashes[mac],
                                                      1000, 16, 32));
                (void)snprintf(what, sizeof(what), "PBMAC1 prf %zu mac %zu", o, mac);
                pw_roundtrip(&k, key_alg(&k), what);
            }
            cmp_mac_key_cleanse(&k);
            cm_arena_reset(&test_rfc_arena);
        }
    }
    // A request whose OWF and MAC identifiers carry NULL parameters gets them back in the
    // response: exactly the request's protectionAlg (before, the response dropped the NULLs).
    const cm_span alg = pbm_alg_with_nulls();
    cmp_mac_key k;
    TEST_ASSERT_OK(cmp_mac_key_derive(test_rfc_prot, &k, alg, pw, CMP_SECRET_PASSWORD));
    CU_ASSERT_EQUAL(k.owf, CMP_HASH_SHA512);
    CU_ASSERT_EQUAL(k.mac, CMP_HASH_SHA384);
    CU_ASSERT_EQUAL(k.iterations, 1000);
    pw_roundtrip(&k, alg, "PBM with NULL parameters");
    cmp_mac_key_cleanse(&k);
}

// ---------------------------------------------------------------------------------------------
// Known answers

static void hex(uint8_t *out, const char *s)
{
    for (size_t i = 0; s[2 * i] != '\0'; i++) {
        unsigned v = 0;
        CU_ASSERT_FATAL(sscanf(s + 2 * i, "%2x", &v) == 1);
        out[i] = (uint8_t)v;
    }
}

// evp_mac computes |name| (with |cipher|, |iv| for GMAC; |custom|, |size| for KMAC) with
// EVP_MAC.
static size_t evp_mac(const char *name, const char *cipher, cm_span key, cm_span iv, cm_span custom,
                      bool set_custom, size_t size, cm_span data, uint8_t *out)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, name, NULL);
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(mac);
    OSSL_PARAM p[4];
    size_t n = 0;
    char cname[32];
    uint8_t ivb[16], cb[64];
    if (cipher != NULL) {
        (void)snprintf(cname, sizeof(cname), "%s", cipher);
        memcpy(ivb, iv.p, iv.len);
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cname, 0);
        p[n++] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_IV, ivb, iv.len);
    } else {
        p[n++] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size);
        if (set_custom) {
            if (custom.len > 0) {
                memcpy(cb, custom.p, custom.len);
            }
            p[n++] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_CUSTOM, cb, custom.len);
        }
    }
    p[n] = OSSL_PARAM_construct_end();
    size_t len = 0;
    CU_ASSERT_FATAL(c != NULL && EVP_MAC_init(c, key.p, key.len, p) == 1 &&
                    EVP_MAC_update(c, data.p, data.len) == 1 &&
                    EVP_MAC_final(c, out, &len, 64) == 1);
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(mac);
    return len;
}

// NIST SP 800-185 KMAC samples (csrc.nist.gov, KMAC_samples.pdf): K = 40..5F, X = 00010203 or
// 00..C7, S = "" or "My Tagged Application". RFC 8702 §3.4 fixes S = "" and L = 256/512 with
// KMAC's function name "KMAC" (its 0xD2B282C2 is those octets bit-reversed, erratum 6188):
// OpenSSL's KMAC-128/KMAC-256 with the default (empty) customization string and size 32/64.
void test_rfc9481_kmac_known_answers(void)
{
    uint8_t key[32], x200[200], out[64], want[64];
    for (size_t i = 0; i < 32; i++) {
        key[i] = (uint8_t)(0x40 + i);
    }
    for (size_t i = 0; i < 200; i++) {
        x200[i] = (uint8_t)i;
    }
    static const uint8_t k_x4[4] = {0, 1, 2, 3};
    const cm_span tag = CM_SPAN_LIT("My Tagged Application");
    const struct {
        const char *name;
        bool long_x;
        bool tagged;
        size_t size;
        const char *want;
    } samples[] = {
        {"KMAC-128", false, false, 32,
         "e5780b0d3ea6f7d3a429c5706aa43a00fadbd7d49628839e3187243f456ee14e"},
        {"KMAC-128", false, true, 32,
         "3b1fba963cd8b0b59e8c1a6d71888b7143651af8ba0a7070c0979e2811324aa5"},
        {"KMAC-128", true, true, 32,
         "1f5b4e6cca02209e0dcb5ca635b89a15e271ecc760071dfd805faa38f9729230"},
        {"KMAC-256", false, true, 64,
         "20c570c31346f703c9ac36c61c03cb64c3970d0cfc787e9b79599d273a68d2f7f69d4cc3de9d104a351689"
         "f27cf6f5951f0103f33f4f24871024d9c27773a8dd"},
        {"KMAC-256", true, false, 64,
         "75358cf39e41494e949707927cee0af20a3ff553904c86b08f21cc414bcfd691589d27cf5e15369cbbff8b"
         "9a4c2eb17800855d0235ff635da82533ec6b759b69"},
        {"KMAC-256", true, true, 64,
         "b58618f71f92e1d56c1b8c55ddd7cd188b97b4ca4d99831eb2699a837da2e4d970fbacfde50033aea585f1"
         "a2708510c32d07880801bd182898fe476876fc8965"},
    };
    for (size_t i = 0; i < TEST_NUM_CASES(samples); i++) {
        const cm_span x = samples[i].long_x ? cm_span_make(x200, 200) : cm_span_make(k_x4, 4);
        const size_t n =
            evp_mac(samples[i].name, NULL, cm_span_make(key, 32), cm_span_make(NULL, 0),
                    samples[i].tagged ? tag : cm_span_make(NULL, 0), samples[i].tagged,
                    samples[i].size, x, out);
        hex(want, samples[i].want);
        CU_ASSERT_EQUAL(n, samples[i].size);
        CU_ASSERT_EQUAL(memcmp(out, want, n), 0);
    }
    // RFC 8702's S = "": the same whether the customization string is left out or set empty.
    const size_t n = evp_mac("KMAC-128", NULL, cm_span_make(key, 32), cm_span_make(NULL, 0),
                             cm_span_make(NULL, 0), true, 32, cm_span_make(k_x4, 4), out);
    hex(want, samples[0].want);
    CU_ASSERT_TRUE(n == 32 && memcmp(out, want, 32) == 0);
    // And certmint's KMAC over a message is that function: the table's KMAC rows use it.
    cmp_mac_key k;
    TEST_ASSERT_OK(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(key, 32), CRMF_ALG_KMAC256));
    cmp_msg m;
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, key_alg(&k)));
    CU_ASSERT_EQUAL(evp_mac("KMAC-256", NULL, cm_span_make(key, 32), cm_span_make(NULL, 0),
                            cm_span_make(NULL, 0), false, 64,
                            test_rfc_protected_part_der(m.protected_part), out),
                    64);
    CU_ASSERT_TRUE(m.protection.len == 64 && memcmp(out, m.protection.p, 64) == 0);
    cmp_mac_key_cleanse(&k);
}

// GMAC is GCM with an empty plaintext: NIST CAVP gcmEncryptExtIV128.rsp [PTlen = 0,
// AADlen = 128] Count 0 and 1, and the GCM specification's (McGrew-Viega) test cases 1, 7 and
// 13 (zero key, zero 96-bit IV, nothing to authenticate) for AES-128, -192 and -256.
void test_rfc9481_gmac_known_answers(void)
{
    const struct {
        const char *cipher, *key, *iv, *aad, *tag;
    } v[] = {
        {"AES-128-GCM", "77be63708971c4e240d1cb79e8d77feb", "e0e00f19fed7ba0136a797f3",
         "7a43ec1d9c0a5a78a0b16533a6213cab", "209fcc8d3675ed938e9c7166709dd946"},
        {"AES-128-GCM", "7680c5d3ca6154758e510f4d25b98820", "f8f105f9c3df4965780321f8",
         "c94c410194c765e3dcc7964379758ed3", "94dca8edfcf90bb74b153c8d48a17930"},
        {"AES-128-GCM", "00000000000000000000000000000000", "000000000000000000000000", "",
         "58e2fccefa7e3061367f1d57a4e7455a"},
        {"AES-192-GCM", "000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "cd33b28ac773f74ba00ed1f312572435"},
        {"AES-256-GCM", "0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    };
    for (size_t i = 0; i < TEST_NUM_CASES(v); i++) {
        uint8_t key[32], iv[12], aad[16], tag[16], out[64];
        hex(key, v[i].key);
        hex(iv, v[i].iv);
        hex(aad, v[i].aad);
        hex(tag, v[i].tag);
        const size_t n = evp_mac("GMAC", v[i].cipher, cm_span_make(key, strlen(v[i].key) / 2),
                                 cm_span_make(iv, 12), cm_span_make(NULL, 0), false, 0,
                                 cm_span_make(aad, strlen(v[i].aad) / 2), out);
        CU_ASSERT_EQUAL(n, 16);
        CU_ASSERT_EQUAL(memcmp(out, tag, 16), 0);
    }
    // certmint's AES-GMAC over a message is that GMAC with the message's nonce.
    cmp_mac_key k;
    TEST_ASSERT_OK(
        cmp_mac_key_new_keyed(test_rfc_prot, &k, cm_span_make(k_key, 24), CRMF_ALG_AES192_GMAC));
    cmp_msg m;
    test_rfc_parse(&m, mac_msg(test_rfc_prot, &k, key_alg(&k)));
    uint8_t out[64];
    CU_ASSERT_EQUAL(evp_mac("GMAC", "AES-192-GCM", cm_span_make(k_key, 24),
                            gmac_nonce(m.header.f.protection_alg), cm_span_make(NULL, 0), false, 0,
                            test_rfc_protected_part_der(m.protected_part), out),
                    16);
    CU_ASSERT_TRUE(m.protection.len == 16 && memcmp(out, m.protection.p, 16) == 0);
    cmp_mac_key_cleanse(&k);
}
