// Suite "cmp_rfc9481": the algorithm table (RFC 9481) row by row through the real code.
// Messages are built with the project's codec (cmp_msg_writer) and parsed with it, since
// OpenSSL 3.0's openssl cmp cannot make SHAKE, SHA-3 or key-based MAC protection; OpenSSL is
// the oracle where it can be (d2i_OSSL_CMP_MSG parses every message, EVP_DigestVerify checks
// every signature it knows, a SHAKE digest signed as it is for the SHAKE rows).
// This file: the fixture, signature rows (protection and POPO), RSASSA-PSS parameters, the
// policy and its readable refusals, the transactionID/senderNonce rule, the genm list helper.
// test_rfc9481_mac.c: the MAC rows and the KMAC/GMAC known answers.
#include "tests/engine/cmp/test_rfc9481.h"

#include <stdio.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/cmp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

cmp_protect_ctx *test_rfc_prot;
cmp_protect_ctx *test_rfc_prot_strict;
cm_arena test_rfc_arena;

static crmf_crypto g_all;    // policies: the whole table
static crmf_crypto g_strict; // the default policies

enum { K_RSA, K_EC, K_ED25519, K_ED448, K_COUNT };
static EVP_PKEY *g_keys[K_COUNT];
static uint8_t *g_cert_der[K_COUNT];
static cm_span g_certs[K_COUNT];

static int key_for(crmf_sig_kind k)
{
    switch (k) {
    case CRMF_SIG_RSA_PKCS1:
    case CRMF_SIG_RSA_PSS:
        return K_RSA;
    case CRMF_SIG_ECDSA:
        return K_EC;
    case CRMF_SIG_ED25519:
        return K_ED25519;
    default:
        return K_ED448;
    }
}

// ---------------------------------------------------------------------------------------------
// Message helpers

static cm_span build_msg(cm_span alg, cm_span kid, test_rfc_protect_fn protect, void *arg,
                         const cm_span *certs, size_t num_certs, size_t tid_len, size_t nonce_len)
{
    static const uint8_t k_tid[32] = {0x74, 0x69, 0x64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    static const uint8_t k_nonce[32] = {0x6e, 0x6f, 0x6e, 0x63, 0x65, 5, 6, 7, 8, 9, 10, 11, 12};
    cmp_itav itav = {CM_SPAN_LIT(DER_OID_IT_CA_CERTS), {NULL, 0}};
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENM;
    body.u.gen.items = &itav;
    body.u.gen.num = 1;
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.has_message_time = true;
    h.message_time = cm_time_now();
    h.protection_alg = alg;
    h.sender_kid = (cmp_opt_span){true, kid};
    h.transaction_id = (cmp_opt_span){true, cm_span_make(k_tid, tid_len)};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(k_nonce, nonce_len)};
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 4096);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    uint8_t prot[1024];
    size_t prot_len = 0;
    const cm_span pp = cmp_msg_writer_protected_part(&w);
    CU_ASSERT_FATAL(protect(arg, prot, sizeof(prot), &prot_len, pp));
    const cm_span p = cm_span_make(prot, prot_len);
    cmp_msg_writer_finish(&w, &p, 0, certs, num_certs);
    cm_span der;
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    return der;
}

cm_span test_rfc_build_msg(cm_span alg, cm_span kid, test_rfc_protect_fn protect, void *arg,
                           const cm_span *certs, size_t num_certs)
{
    return build_msg(alg, kid, protect, arg, certs, num_certs, 16, 16);
}

void test_rfc_parse(cmp_msg *out, cm_span der)
{
    TEST_ASSERT_OK(cmp_msg_from_der(&test_rfc_arena, out, der, NULL));
    // OpenSSL's decoder takes every message we build, whatever its protection algorithm.
    const unsigned char *p = der.p;
    OSSL_CMP_MSG *m = d2i_OSSL_CMP_MSG(NULL, &p, (long)der.len);
    CU_ASSERT_PTR_NOT_NULL(m);
    OSSL_CMP_MSG_free(m);
}

cm_span test_rfc_flip(cm_span der, cm_span part, size_t index)
{
    uint8_t *copy = cm_arena_alloc(&test_rfc_arena, der.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    memcpy(copy, der.p, der.len);
    copy[(size_t)(part.p - der.p) + index] ^= 0x01;
    return cm_span_make(copy, der.len);
}

cm_span test_rfc_protected_part_der(cm_span content)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, content.len + 8);
    der_put_tlv(&b, DER_TAG_SEQUENCE, content);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

static cm_span alg_der(const crmf_sig_alg *sa)
{
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 128);
    crmf_sig_alg_marshal(&b, sa);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

typedef struct sig_job {
    crmf_sig_alg alg;
    EVP_PKEY *key;
} sig_job;

static bool sig_protect(void *arg, uint8_t *out, size_t cap, size_t *out_len, cm_span content)
{
    const sig_job *j = arg;
    cm_span sig;
    if (!cm_ok(crmf_crypto_sign(&g_all, &test_rfc_arena, &sig, &j->alg, j->key,
                                test_rfc_protected_part_der(content))) ||
        sig.len > cap) {
        return false;
    }
    memcpy(out, sig.p, sig.len);
    *out_len = sig.len;
    return true;
}

// ---------------------------------------------------------------------------------------------
// OpenSSL as the oracle

static const char *ossl_md(crmf_hash h)
{
    switch (h) {
    case CRMF_HASH_SHA1:
        return "SHA1";
    case CRMF_HASH_SHA224:
        return "SHA224";
    case CRMF_HASH_SHA256:
        return "SHA256";
    case CRMF_HASH_SHA384:
        return "SHA384";
    case CRMF_HASH_SHA512:
        return "SHA512";
    case CRMF_HASH_SHA3_256:
        return "SHA3-256";
    case CRMF_HASH_SHA3_384:
        return "SHA3-384";
    case CRMF_HASH_SHA3_512:
        return "SHA3-512";
    case CRMF_HASH_SHAKE128:
        return "SHAKE128";
    case CRMF_HASH_SHAKE256:
        return "SHAKE256";
    default:
        return NULL;
    }
}

// shake computes SHAKE128/256 of |in| to |len| octets with OpenSSL.
static void shake(crmf_hash h, const uint8_t *in, size_t in_len, uint8_t *out, size_t len)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    CU_ASSERT_FATAL(c != NULL && EVP_DigestInit_ex2(c, EVP_get_digestbyname(ossl_md(h)), NULL) &&
                    EVP_DigestUpdate(c, in, in_len) && EVP_DigestFinalXOF(c, out, len));
    EVP_MD_CTX_free(c);
}

// pss_shake_oracle checks EMSA-PSS (RFC 8017 §9.1.2) with SHAKE as hash and MGF (RFC 8702
// §3.2.1) around OpenSSL's raw RSA public operation: written here, apart from crmf_sig.c.
static bool pss_shake_oracle(crmf_hash h, EVP_PKEY *key, cm_span data, cm_span sig)
{
    const size_t hlen = h == CRMF_HASH_SHAKE128 ? 32 : 64;
    uint8_t mhash[64];
    shake(h, data.p, data.len, mhash, hlen);
    uint8_t em[512];
    size_t em_len = sizeof(em);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(key, NULL);
    bool ok = EVP_PKEY_verify_recover_init(pc) == 1 &&
              EVP_PKEY_CTX_set_rsa_padding(pc, RSA_NO_PADDING) == 1 &&
              EVP_PKEY_verify_recover(pc, em, &em_len, sig.p, sig.len) == 1;
    EVP_PKEY_CTX_free(pc);
    // A 2048-bit key: emLen = 256, the top bit of EM is 0.
    if (!ok || em_len != 256 || em[255] != 0xbc) {
        return false;
    }
    const size_t db_len = 256 - hlen - 1;
    uint8_t mask[256];
    shake(h, em + db_len, hlen, mask, db_len);
    for (size_t i = 0; i < db_len; i++) {
        em[i] ^= mask[i];
    }
    em[0] &= 0x7f;
    const size_t slen = hlen, ps = db_len - slen - 1;
    for (size_t i = 0; i < ps; i++) {
        if (em[i] != 0) {
            return false;
        }
    }
    if (em[ps] != 0x01) {
        return false;
    }
    uint8_t mprime[8 + 64 + 64] = {0};
    memcpy(mprime + 8, mhash, hlen);
    memcpy(mprime + 8 + hlen, em + ps + 1, slen);
    uint8_t hh[64];
    shake(h, mprime, 8 + hlen + slen, hh, hlen);
    return memcmp(hh, em + db_len, hlen) == 0;
}

// ossl_verify checks |sig| over |data| under |sa| with OpenSSL alone.
static bool ossl_verify(const crmf_sig_alg *sa, EVP_PKEY *key, cm_span data, cm_span sig)
{
    if (sa->kind == CRMF_SIG_RSA_PSS &&
        (sa->hash == CRMF_HASH_SHAKE128 || sa->hash == CRMF_HASH_SHAKE256)) {
        return pss_shake_oracle(sa->hash, key, data, sig);
    }
    if (sa->hash == CRMF_HASH_SHAKE128 || sa->hash == CRMF_HASH_SHAKE256) {
        // ECDSA with SHAKE (RFC 8702 §3.2.2): the 256/512-bit SHAKE output is what is signed.
        uint8_t d[64];
        const size_t dl = sa->hash == CRMF_HASH_SHAKE128 ? 32 : 64;
        shake(sa->hash, data.p, data.len, d, dl);
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(key, NULL);
        const bool ok =
            EVP_PKEY_verify_init(pc) == 1 && EVP_PKEY_verify(pc, sig.p, sig.len, d, dl) == 1;
        EVP_PKEY_CTX_free(pc);
        return ok;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    bool ok = EVP_DigestVerifyInit_ex(c, &pc, ossl_md(sa->hash), NULL, NULL, key, NULL) == 1;
    if (ok && sa->kind == CRMF_SIG_RSA_PSS) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, ossl_md(sa->mgf1_hash), NULL) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, (int)sa->salt_len) == 1;
    }
    ok = ok && EVP_DigestVerify(c, sig.p, sig.len, data.p, data.len) == 1;
    EVP_MD_CTX_free(c);
    return ok;
}

// ---------------------------------------------------------------------------------------------
// Signatures: message protection

static void test_rfc9481_signature_rows_protect(void)
{
    size_t rows = 0;
    for (int id = CRMF_ALG_NONE + 1; id < CRMF_ALG_COUNT; id++) {
        const crmf_alg *a = crmf_alg_get((crmf_alg_id)id);
        if (a->kind != CRMF_ALG_KIND_SIGNATURE) {
            continue;
        }
        rows++;
        const int k = key_for(a->sig);
        sig_job j = {.key = g_keys[k]};
        CU_ASSERT_FATAL(crmf_sig_alg_of(&j.alg, a->id));
        CU_ASSERT_PTR_EQUAL(crmf_sig_alg_row(&j.alg), a);
        const cm_span alg = alg_der(&j.alg);
        const cm_span der =
            test_rfc_build_msg(alg, CM_SPAN_LIT("signer"), sig_protect, &j, &g_certs[k], 1);
        cmp_msg m;
        test_rfc_parse(&m, der);
        cmp_prot_kind kind;
        TEST_ASSERT_OK(cmp_protect_kind(&kind, m.header.f.protection_alg));
        CU_ASSERT_EQUAL(kind, CMP_PROT_SIGNATURE);
        CU_ASSERT_TRUE(cmp_is_signature_alg(m.header.protection_alg.oid));
        cm_why why;
        cm_why_clear(&why);
        cm_result r =
            cmp_protect_verify_sig(&g_all, m.header.f.protection_alg, m.protected_part,
                                   m.protection, m.protection_unused, m.extra_certs[0], &why);
        if (!cm_ok(r)) {
            (void)fprintf(stderr, "\n  %s: %s (%s)\n", a->name, cm_result_name(r), why.text);
        }
        CU_ASSERT_EQUAL(r.code, CM_OK);
        const bool oracle =
            ossl_verify(&j.alg, j.key, test_rfc_protected_part_der(m.protected_part), m.protection);
        if (!oracle) {
            (void)fprintf(stderr, "\n  %s: OpenSSL does not verify our signature\n", a->name);
        }
        CU_ASSERT_TRUE(oracle);
        // One flipped octet of the protection, at its start, middle and end: refused.
        const size_t at[3] = {0, m.protection.len / 2, m.protection.len - 1};
        for (size_t i = 0; i < 3; i++) {
            cmp_msg bad;
            test_rfc_parse(&bad, test_rfc_flip(der, m.protection, at[i]));
            TEST_ASSERT_CODE(cmp_protect_verify_sig(
                                 &g_all, bad.header.f.protection_alg, bad.protected_part,
                                 bad.protection, bad.protection_unused, bad.extra_certs[0], NULL),
                             CMP_E_PROT_SIG_INVALID);
        }
        // The default policy: every row but the SHA-1 ones.
        cm_why_clear(&why);
        r = cmp_protect_verify_sig(&g_strict, m.header.f.protection_alg, m.protected_part,
                                   m.protection, m.protection_unused, m.extra_certs[0], &why);
        if (a->sha1) {
            CU_ASSERT_EQUAL(r.code, CMP_E_PROT_ALG_WEAK);
            char want[160];
            (void)snprintf(want, sizeof(want),
                           "signature algorithm %s is not allowed (protection_algs)", a->asn1_name);
            CU_ASSERT_STRING_EQUAL(why.text, want);
        } else {
            CU_ASSERT_EQUAL(r.code, CM_OK);
        }
        cm_arena_reset(&test_rfc_arena);
    }
    // RSA PKCS#1 v1.5 (SHA-1, 4 SHA-2, 3 SHA-3), PSS (SHA-1, 4 SHA-2, 2 SHAKE), ECDSA (SHA-1,
    // 4 SHA-2, 3 SHA-3, 2 SHAKE), Ed25519, Ed448.
    CU_ASSERT_EQUAL(rows, 27);
    // The brief's example, word for word.
    const crmf_alg *a = crmf_alg_get(CRMF_ALG_ECDSA_SHA1);
    CU_ASSERT_STRING_EQUAL(a->asn1_name, "ecdsa-with-SHA1");
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_ALG_WEAK), CM_FAIL_BAD_ALG);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_ALG_POLICY), CM_FAIL_BAD_ALG);
}

static void test_rfc9481_signature_key_must_fit(void)
{
    // ECDSA by an RSA signer, Ed448 by an Ed25519 signer, RSA by an EC signer: refused before
    // any work.
    const struct {
        crmf_alg_id alg;
        int cert;
    } cases[] = {{CRMF_ALG_ECDSA_SHAKE256, K_RSA},
                 {CRMF_ALG_ED448, K_ED25519},
                 {CRMF_ALG_RSA_PSS_SHAKE128, K_EC}};
    for (size_t i = 0; i < TEST_NUM_CASES(cases); i++) {
        sig_job j = {.key = g_keys[key_for(crmf_alg_get(cases[i].alg)->sig)]};
        CU_ASSERT_FATAL(crmf_sig_alg_of(&j.alg, cases[i].alg));
        const cm_span der = test_rfc_build_msg(alg_der(&j.alg), CM_SPAN_LIT("signer"), sig_protect,
                                               &j, &g_certs[cases[i].cert], 1);
        cmp_msg m;
        test_rfc_parse(&m, der);
        cm_why why;
        cm_why_clear(&why);
        TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_all, m.header.f.protection_alg, m.protected_part,
                                                m.protection, m.protection_unused, m.extra_certs[0],
                                                &why),
                         CMP_E_PROT_KEY_MISMATCH);
        CU_ASSERT_PTR_NOT_NULL(strstr(why.text, "does not fit the signer's"));
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures: proof of possession

// a Name: SEQUENCE { SET { SEQUENCE { id-at-commonName, UTF8String "rfc9481" } } }
static const uint8_t k_name[] = {0x30, 0x12, 0x31, 0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04,
                                 0x03, 0x0c, 0x07, 'r',  'f',  'c',  '9',  '4',  '8',  '1'};

// popo_msgs builds CertReqMessages with one request for |key| whose signature POPO uses |sa|
// (signed by |signer|, which may differ from |key| to make a wrong signature).
static cm_span popo_msgs(const crmf_sig_alg *sa, EVP_PKEY *key)
{
    unsigned char *spki = NULL;
    const int spki_len = i2d_PUBKEY(key, &spki);
    CU_ASSERT_FATAL(spki_len > 0);
    uint8_t *spki_copy = cm_arena_alloc(&test_rfc_arena, (size_t)spki_len);
    memcpy(spki_copy, spki, (size_t)spki_len);
    OPENSSL_free(spki);
    der_reader r;
    cm_span spki_body;
    der_reader_init(&r, cm_span_make(spki_copy, (size_t)spki_len));
    TEST_ASSERT_OK(der_get_tlv(&r, DER_TAG_SEQUENCE, &spki_body));
    crmf_cert_req_msg msg;
    memset(&msg, 0, sizeof(msg));
    msg.req.cert_req_id = 0;
    msg.req.tmpl.subject = cm_span_make(k_name, sizeof(k_name));
    msg.req.tmpl.public_key = spki_body;
    der_builder b;
    der_builder_init_arena(&b, &test_rfc_arena, 1024);
    crmf_cert_request_marshal(&b, &msg.req);
    cm_span req;
    TEST_ASSERT_OK(der_builder_finish(&b, &req));
    msg.popo.type = CRMF_POPO_SIGNATURE;
    msg.popo.alg = alg_der(sa);
    TEST_ASSERT_OK(crmf_crypto_sign(&g_all, &test_rfc_arena, &msg.popo.signature, sa, key, req));
    crmf_cert_req_msgs msgs = {.num_msgs = 1, .msgs = &msg};
    der_builder_init_arena(&b, &test_rfc_arena, 2048);
    crmf_msgs_marshal(&b, &msgs);
    cm_span der;
    TEST_ASSERT_OK(der_builder_finish(&b, &der));
    return der;
}

static void test_rfc9481_signature_rows_as_popo(void)
{
    for (int id = CRMF_ALG_NONE + 1; id < CRMF_ALG_COUNT; id++) {
        const crmf_alg *a = crmf_alg_get((crmf_alg_id)id);
        if (a->kind != CRMF_ALG_KIND_SIGNATURE) {
            continue;
        }
        crmf_sig_alg sa;
        CU_ASSERT_FATAL(crmf_sig_alg_of(&sa, a->id));
        const cm_span der = popo_msgs(&sa, g_keys[key_for(a->sig)]);
        crmf_cert_req_msgs got;
        TEST_ASSERT_OK(crmf_msgs_from_der(&test_rfc_arena, &got, der));
        cm_why why;
        cm_why_clear(&why);
        cm_result r = crmf_popo_verify(&g_all, &got.msgs[0], &why);
        if (!cm_ok(r)) {
            (void)fprintf(stderr, "\n  POPO %s: %s (%s)\n", a->name, cm_result_name(r), why.text);
        }
        CU_ASSERT_EQUAL(r.code, CM_OK);
        // One flipped octet of the POPO signature: badPOP.
        const cm_span sig = got.msgs[0].popo.signature;
        crmf_cert_req_msgs bad;
        TEST_ASSERT_OK(
            crmf_msgs_from_der(&test_rfc_arena, &bad, test_rfc_flip(der, sig, sig.len / 2)));
        TEST_ASSERT_CODE(crmf_popo_verify(&g_all, &bad.msgs[0], NULL), CRMF_E_POPO_BAD_SIGNATURE);
        CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_POPO_BAD_SIGNATURE), CM_FAIL_BAD_POP);
        // pop_algs by default: no SHA-1.
        cm_why_clear(&why);
        r = crmf_popo_verify(&g_strict, &got.msgs[0], &why);
        if (a->sha1) {
            CU_ASSERT_EQUAL(r.code, CRMF_E_ALG_SHA1);
            char want[160];
            (void)snprintf(want, sizeof(want), "signature algorithm %s is not allowed (pop_algs)",
                           a->asn1_name);
            CU_ASSERT_STRING_EQUAL(why.text, want);
        } else {
            CU_ASSERT_EQUAL(r.code, CM_OK);
        }
        cm_arena_reset(&test_rfc_arena);
    }
    // A pop_algs without the algorithm: CRMF_E_ALG_POLICY (badAlg) with the setting named.
    crmf_alg_policy only;
    char err[160];
    TEST_ASSERT_OK(crmf_alg_policy_parse(&only, err, sizeof(err), "ed25519",
                                         1u << CRMF_ALG_KIND_SIGNATURE, false));
    crmf_crypto c = g_all;
    crmf_crypto_set_policies(&c, NULL, &only);
    crmf_sig_alg sa;
    CU_ASSERT_FATAL(crmf_sig_alg_of(&sa, CRMF_ALG_ECDSA_SHA3_256));
    crmf_cert_req_msgs got;
    TEST_ASSERT_OK(crmf_msgs_from_der(&test_rfc_arena, &got, popo_msgs(&sa, g_keys[K_EC])));
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(crmf_popo_verify(&c, &got.msgs[0], &why), CRMF_E_ALG_POLICY);
    CU_ASSERT_STRING_EQUAL(why.text,
                           "signature algorithm id-ecdsa-with-sha3-256 is not allowed (pop_algs)");
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_ALG_POLICY), CM_FAIL_BAD_ALG);
}

// ---------------------------------------------------------------------------------------------
// RSASSA-PSS parameters

static cm_result pss_verify(const crmf_sig_alg *claimed, const crmf_sig_alg *signed_with,
                            cm_why *why)
{
    sig_job j = {.alg = *signed_with, .key = g_keys[K_RSA]};
    const cm_span der = test_rfc_build_msg(alg_der(claimed), CM_SPAN_LIT("signer"), sig_protect, &j,
                                           &g_certs[K_RSA], 1);
    cmp_msg m;
    test_rfc_parse(&m, der);
    return cmp_protect_verify_sig(&g_all, m.header.f.protection_alg, m.protected_part, m.protection,
                                  m.protection_unused, m.extra_certs[0], why);
}

static void test_rfc9481_pss_parameters_checked(void)
{
    const crmf_sig_alg good = {{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 32};
    TEST_ASSERT_OK(pss_verify(&good, &good, NULL));
    // OpenSSL's default salt for an unrestricted RSA-PSS key: the longest the key allows.
    const crmf_sig_alg max = {{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 222};
    TEST_ASSERT_OK(pss_verify(&max, &max, NULL));
    // The parameters are applied: a salt of 32 signed, 48 claimed.
    const crmf_sig_alg salt48 = {
        {NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 48};
    TEST_ASSERT_CODE(pss_verify(&salt48, &good, NULL), CMP_E_PROT_SIG_INVALID);
    const struct {
        crmf_sig_alg alg;
        const char *why; // a part of the reason
    } bad[] = {
        {{{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 16},
         "the RSASSA-PSS saltLength 16 is shorter than the sha256 hash (32 octets)"},
        {{{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA512, CRMF_HASH_SHA512, 0}, "saltLength 0"},
        {{{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA1, 32},
         "the RSASSA-PSS MGF1 hash (sha1) differs from the message hash (sha256)"},
        {{{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA384, CRMF_HASH_SHA256, 48}, "MGF1 hash"},
        {{{NULL, 0}, CRMF_SIG_RSA_PSS, CRMF_HASH_SHA256, CRMF_HASH_SHA256, 1025}, NULL},
    };
    for (size_t i = 0; i < TEST_NUM_CASES(bad); i++) {
        cm_why why;
        cm_why_clear(&why);
        TEST_ASSERT_CODE(pss_verify(&bad[i].alg, &good, &why), CMP_E_PROT_ALG_UNSUPPORTED);
        CU_ASSERT_TRUE(bad[i].why == NULL || strstr(why.text, bad[i].why) != NULL);
        if (bad[i].why != NULL && strstr(why.text, bad[i].why) == NULL) {
            (void)fprintf(stderr, "\n  reason \"%s\" lacks \"%s\"\n", why.text, bad[i].why);
        }
    }
    // Hand-made: a SHA3-256 hash (no id-RSASSA-PSS row), an explicit trailerField, parameters
    // on RSASSA-PSS-SHAKE128 (RFC 8702: absent).
    static const uint8_t k_sha3[] = {0x30, 0x1c, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
                                     0x01, 0x01, 0x0a, 0x30, 0x0f, 0xa0, 0x0d, 0x30, 0x0b, 0x06,
                                     0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x08};
    static const uint8_t k_trailer[] = {0x30, 0x12, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
                                        0x01, 0x01, 0x0a, 0x30, 0x05, 0xa3, 0x03, 0x02, 0x01, 0x01};
    static const uint8_t k_shake_params[] = {0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01,
                                             0x05, 0x05, 0x07, 0x06, 0x1e, 0x05, 0x00};
    const cm_span hand[] = {cm_span_make(k_sha3, sizeof(k_sha3)),
                            cm_span_make(k_trailer, sizeof(k_trailer)),
                            cm_span_make(k_shake_params, sizeof(k_shake_params))};
    for (size_t i = 0; i < TEST_NUM_CASES(hand); i++) {
        crmf_sig_alg out;
        CU_ASSERT_FALSE(cm_ok(crmf_sig_alg_from_der(&out, hand[i])));
        sig_job j = {.alg = good, .key = g_keys[K_RSA]};
        cmp_msg m;
        test_rfc_parse(&m, test_rfc_build_msg(hand[i], CM_SPAN_LIT("signer"), sig_protect, &j,
                                              &g_certs[K_RSA], 1));
        TEST_ASSERT_CODE(cmp_protect_verify_sig(&g_all, m.header.f.protection_alg, m.protected_part,
                                                m.protection, m.protection_unused, m.extra_certs[0],
                                                NULL),
                         CMP_E_PROT_ALG_UNSUPPORTED);
    }
}

// ---------------------------------------------------------------------------------------------
// The policy

static void test_rfc9481_policy_names_and_refusals(void)
{
    const uint32_t all = (1u << CRMF_ALG_KIND_DIGEST) | (1u << CRMF_ALG_KIND_SIGNATURE) |
                         (1u << CRMF_ALG_KIND_PASSWORD_MAC) | (1u << CRMF_ALG_KIND_KEY_MAC);
    crmf_alg_policy p;
    char err[200];
    TEST_ASSERT_OK(crmf_alg_policy_parse(&p, err, sizeof(err),
                                         "ecdsa-sha256, Ed448 pbm,hmac-sha256", all, false));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&p, CRMF_ALG_ECDSA_SHA256));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&p, CRMF_ALG_ED448));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&p, CRMF_ALG_PBM));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&p, CRMF_ALG_HMAC_SHA256));
    CU_ASSERT_FALSE(crmf_alg_policy_allows(&p, CRMF_ALG_RSA_SHA256));
    CU_ASSERT_FALSE(crmf_alg_policy_allows(&p, CRMF_ALG_SHA256));
    const struct {
        const char *list;
        uint32_t kinds;
        bool sha1;
        const char *err;
    } bad[] = {
        {"sha257", all, false,
         "'sha257' is not an algorithm name (see the README's algorithm "
         "table)"},
        {"ecdsa-sha1", all, false, "'ecdsa-sha1' is SHA-1 based: set allow_sha1 = on to allow it"},
        {"ed25519, pbm", 1u << CRMF_ALG_KIND_SIGNATURE, false,
         "'pbm' is a password-based MAC, which this setting does not take"},
        {" , ", all, false, "the list is empty"},
    };
    for (size_t i = 0; i < TEST_NUM_CASES(bad); i++) {
        TEST_ASSERT_CODE(
            crmf_alg_policy_parse(&p, err, sizeof(err), bad[i].list, bad[i].kinds, bad[i].sha1),
            CRMF_E_ALG_NAME);
        CU_ASSERT_STRING_EQUAL(err, bad[i].err);
    }
    // One name, two OIDs: hmac-sha1 covers id-hmacWithSHA1 and RFC 4211's hmac-sha1.
    TEST_ASSERT_OK(crmf_alg_policy_parse(&p, err, sizeof(err), "hmac-sha1", all, true));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&p, CRMF_ALG_HMAC_SHA1));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&p, CRMF_ALG_HMAC_SHA1_IPSEC));
    // The default: everything but the six SHA-1 rows; allow_sha1 adds them.
    crmf_alg_policy d;
    crmf_alg_policy_default(&d, false);
    size_t n = 0, sha1 = 0;
    for (int id = CRMF_ALG_NONE + 1; id < CRMF_ALG_COUNT; id++) {
        n += crmf_alg_policy_allows(&d, (crmf_alg_id)id) ? 1 : 0;
        sha1 += crmf_alg_get((crmf_alg_id)id)->sha1 ? 1 : 0;
        CU_ASSERT_EQUAL(crmf_alg_policy_allows(NULL, (crmf_alg_id)id),
                        crmf_alg_policy_allows(&d, (crmf_alg_id)id));
    }
    CU_ASSERT_EQUAL(sha1, 6);
    CU_ASSERT_EQUAL(n, CRMF_ALG_COUNT - 1 - sha1);
    crmf_alg_policy_default(&d, true);
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&d, CRMF_ALG_ECDSA_SHA1));

    // protection_algs = ecdsa-sha256: an ECDSA-SHA384 message is refused, the setting named.
    TEST_ASSERT_OK(crmf_alg_policy_parse(&p, err, sizeof(err), "ecdsa-sha256", all, false));
    crmf_crypto c = g_all;
    crmf_crypto_set_policies(&c, &p, NULL);
    sig_job j = {.key = g_keys[K_EC]};
    CU_ASSERT_FATAL(crmf_sig_alg_of(&j.alg, CRMF_ALG_ECDSA_SHA384));
    cmp_msg m;
    test_rfc_parse(&m, test_rfc_build_msg(alg_der(&j.alg), CM_SPAN_LIT("signer"), sig_protect, &j,
                                          &g_certs[K_EC], 1));
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(cmp_protect_verify_sig(&c, m.header.f.protection_alg, m.protected_part,
                                            m.protection, m.protection_unused, m.extra_certs[0],
                                            &why),
                     CMP_E_PROT_ALG_POLICY);
    CU_ASSERT_STRING_EQUAL(
        why.text, "signature algorithm ecdsa-with-SHA384 is not allowed (protection_algs)");
    // ... while ECDSA-SHA256 passes.
    CU_ASSERT_FATAL(crmf_sig_alg_of(&j.alg, CRMF_ALG_ECDSA_SHA256));
    test_rfc_parse(&m, test_rfc_build_msg(alg_der(&j.alg), CM_SPAN_LIT("signer"), sig_protect, &j,
                                          &g_certs[K_EC], 1));
    TEST_ASSERT_OK(cmp_protect_verify_sig(&c, m.header.f.protection_alg, m.protected_part,
                                          m.protection, m.protection_unused, m.extra_certs[0],
                                          NULL));
}

// ---------------------------------------------------------------------------------------------
// RFC 9483 §3.1: transactionID and senderNonce of at least 128 bits

static bool no_protect(void *arg, uint8_t *out, size_t cap, size_t *out_len, cm_span content)
{
    (void)arg;
    (void)content;
    CU_ASSERT_FATAL(cap >= 1);
    out[0] = 0;
    *out_len = 1;
    return true;
}

static void test_rfc9481_short_transaction_id_and_nonce(void)
{
    static const uint8_t k_alg[] = {0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70};
    const cm_span alg = cm_span_make(k_alg, sizeof(k_alg));
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(
        &test_rfc_arena, &m, build_msg(alg, CM_SPAN_LIT("k"), no_protect, NULL, NULL, 0, 16, 16),
        NULL));
    cm_result r =
        cmp_msg_from_der(&test_rfc_arena, &m,
                         build_msg(alg, CM_SPAN_LIT("k"), no_protect, NULL, NULL, 0, 15, 16), NULL);
    CU_ASSERT_EQUAL(r.code, CMP_E_SHORT_TRANSACTION_ID);
    CU_ASSERT_EQUAL(cm_code_failinfo(r.code), CM_FAIL_BAD_REQUEST);
    CU_ASSERT_STRING_EQUAL(cm_result_text(r),
                           "the transactionID is shorter than 128 bits (16 octets, RFC 9483 "
                           "section 3.1)");
    r = cmp_msg_from_der(&test_rfc_arena, &m,
                         build_msg(alg, CM_SPAN_LIT("k"), no_protect, NULL, NULL, 0, 16, 15), NULL);
    CU_ASSERT_EQUAL(r.code, CMP_E_BAD_SENDER_NONCE);
    CU_ASSERT_EQUAL(cm_code_failinfo(r.code), CM_FAIL_BAD_SENDER_NONCE);
    CU_ASSERT_STRING_EQUAL(cm_result_text(r),
                           "the senderNonce is missing or shorter than 16 octets");
}

// ---------------------------------------------------------------------------------------------
// The signKeyPairTypes helper

static void test_rfc9481_sig_list_for_genm(void)
{
    crmf_alg_id ids[64];
    const struct {
        crmf_key_type key;
        size_t n;
        crmf_sig_kind kind; // 0: RSA (PKCS#1 or PSS)
    } cases[] = {{CRMF_KEY_EC, 9, CRMF_SIG_ECDSA},
                 {CRMF_KEY_RSA, 13, 0},
                 {CRMF_KEY_ED25519, 1, CRMF_SIG_ED25519},
                 {CRMF_KEY_ED448, 1, CRMF_SIG_ED448}};
    for (size_t i = 0; i < TEST_NUM_CASES(cases); i++) {
        const size_t n = crmf_alg_sig_list(ids, 64, NULL, cases[i].key);
        CU_ASSERT_EQUAL(n, cases[i].n);
        for (size_t k = 0; k < n; k++) {
            const crmf_alg *a = crmf_alg_get(ids[k]);
            CU_ASSERT_FALSE(a->sha1);
            CU_ASSERT_TRUE(cases[i].kind == 0
                               ? a->sig == CRMF_SIG_RSA_PKCS1 || a->sig == CRMF_SIG_RSA_PSS
                               : a->sig == cases[i].kind);
            der_builder b;
            der_builder_init_arena(&b, &test_rfc_arena, 128);
            crmf_alg_marshal(&b, ids[k]);
            cm_span der;
            TEST_ASSERT_OK(der_builder_finish(&b, &der));
            crmf_sig_alg back;
            TEST_ASSERT_OK(crmf_sig_alg_from_der(&back, der));
            CU_ASSERT_PTR_EQUAL(crmf_sig_alg_row(&back), a);
        }
    }
    CU_ASSERT_EQUAL(crmf_alg_sig_list(ids, 64, NULL, CRMF_KEY_UNKNOWN), 24);
    CU_ASSERT_EQUAL(crmf_alg_sig_list(ids, 2, NULL, CRMF_KEY_UNKNOWN), 2);
}

// ---------------------------------------------------------------------------------------------
// Fixture

static cm_span self_signed(EVP_PKEY *key, uint8_t **out_der)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    const bool ok =
        x != NULL && n != NULL && X509_set_version(x, 2) == 1 &&
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"rfc9481 signer",
                                   -1, -1, 0) == 1 &&
        X509_set_subject_name(x, n) == 1 && X509_set_issuer_name(x, n) == 1 &&
        X509_gmtime_adj(X509_getm_notBefore(x), -60) != NULL &&
        X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL && X509_set_pubkey(x, key) == 1 &&
        X509_sign(x, key,
                  EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448") ? NULL
                                                                               : EVP_sha256()) > 0;
    unsigned char *der = NULL;
    const int len = ok ? i2d_X509(x, &der) : -1;
    X509_NAME_free(n);
    X509_free(x);
    *out_der = der;
    return len > 0 ? cm_span_make(der, (size_t)len) : cm_span_make(NULL, 0);
}

static int rfc9481_suite_init(void)
{
    crmf_alg_policy all;
    crmf_alg_policy_default(&all, true);
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.policy = &all;
    if (!cm_ok(cmp_protect_ctx_new(&test_rfc_prot, NULL, NULL, &lim)) ||
        !cm_ok(cmp_protect_ctx_new(&test_rfc_prot_strict, NULL, NULL, NULL)) ||
        !cm_ok(crmf_crypto_init(&g_all, NULL, NULL)) ||
        !cm_ok(crmf_crypto_init(&g_strict, NULL, NULL))) {
        return 1;
    }
    crmf_crypto_set_policies(&g_all, &all, &all);
    g_keys[K_RSA] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g_keys[K_EC] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g_keys[K_ED25519] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    g_keys[K_ED448] = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
    for (int i = 0; i < K_COUNT; i++) {
        if (g_keys[i] == NULL) {
            return 1;
        }
        g_certs[i] = self_signed(g_keys[i], &g_cert_der[i]);
        if (g_certs[i].len == 0) {
            return 1;
        }
    }
    cm_arena_init(&test_rfc_arena, 16 * 1024, 16u << 20);
    return 0;
}

static int rfc9481_suite_cleanup(void)
{
    for (int i = 0; i < K_COUNT; i++) {
        EVP_PKEY_free(g_keys[i]);
        OPENSSL_free(g_cert_der[i]);
        g_keys[i] = NULL;
        g_cert_der[i] = NULL;
    }
    cmp_protect_ctx_free(test_rfc_prot);
    cmp_protect_ctx_free(test_rfc_prot_strict);
    test_rfc_prot = test_rfc_prot_strict = NULL;
    crmf_crypto_cleanup(&g_all);
    crmf_crypto_cleanup(&g_strict);
    cm_arena_cleanup(&test_rfc_arena);
    return 0;
}

static void rfc9481_setup(void)
{
    cm_arena_reset(&test_rfc_arena);
}

int test_cmp_rfc9481_register(void);
int test_cmp_rfc9481_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_rfc9481_signature_rows_protect),
        TEST_CASE(test_rfc9481_signature_key_must_fit),
        TEST_CASE(test_rfc9481_signature_rows_as_popo),
        TEST_CASE(test_rfc9481_pss_parameters_checked),
        TEST_CASE(test_rfc9481_policy_names_and_refusals),
        TEST_CASE(test_rfc9481_short_transaction_id_and_nonce),
        TEST_CASE(test_rfc9481_sig_list_for_genm),
        TEST_CASE(test_rfc9481_key_macs_protect_and_echo),
        TEST_CASE(test_rfc9481_key_mac_secret_kinds),
        TEST_CASE(test_rfc9481_key_mac_parameters_refused),
        TEST_CASE(test_rfc9481_password_macs_every_pair),
        TEST_CASE(test_rfc9481_kmac_known_answers),
        TEST_CASE(test_rfc9481_gmac_known_answers),
    };
    return test_register_suite("cmp_rfc9481", rfc9481_suite_init, rfc9481_suite_cleanup,
                               rfc9481_setup, NULL, tests, TEST_NUM_CASES(tests));
}
