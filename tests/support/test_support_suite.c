// Suite "support": the throwaway token helper works end to end through p11-kit — a token is
// created, a user logs in, an EC P-256 key pair is generated and signs; a wrong PIN is
// refused; destroy removes every file.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <CUnit/CUnit.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "tests/support/test_support.h"

static test_token g_token;
static CK_FUNCTION_LIST *g_p11;

static int support_init(void)
{
    if (!test_token_create(&g_token, "support-test")) {
        return 1;
    }
    g_p11 = p11_kit_module_load(g_token.module, 0);
    if (g_p11 == NULL) {
        fprintf(stderr, "p11_kit_module_load: %s\n", p11_kit_message());
        return 1;
    }
    CK_RV rv = p11_kit_module_initialize(g_p11);
    if (rv != CKR_OK) {
        fprintf(stderr, "p11_kit_module_initialize: %s\n", p11_kit_strerror(rv));
        return 1;
    }
    return 0;
}

static int support_cleanup(void)
{
    if (g_p11 != NULL) {
        (void)p11_kit_module_finalize(g_p11);
        p11_kit_module_release(g_p11);
        g_p11 = NULL;
    }
    test_token_destroy(&g_token);
    return 0;
}

// find_slot returns the slot whose token has label |label|.
static bool find_slot(const char *label, CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    if (g_p11->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) {
        return false;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (g_p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK) {
            continue;
        }
        size_t ll = strlen(label);
        if (memcmp(ti.label, label, ll) == 0 && (ll == 32 || ti.label[ll] == ' ')) {
            *out = slots[i];
            return true;
        }
    }
    return false;
}

static void test_support_token_login_and_ec_keygen(void)
{
    CK_SLOT_ID slot;
    CU_ASSERT_FATAL(find_slot(g_token.label, &slot));
    CK_SESSION_HANDLE s;
    CU_ASSERT_EQUAL_FATAL(
        g_p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(g_p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)g_token.user_pin,
                                         (CK_ULONG)strlen(g_token.user_pin)),
                          CKR_OK);

    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_BBOOL yes = CK_TRUE;
    CK_MECHANISM gen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pub[] = {{CKA_EC_PARAMS, (void *)(uintptr_t)p256, sizeof(p256)},
                          {CKA_VERIFY, &yes, sizeof(yes)}};
    CK_ATTRIBUTE priv[] = {{CKA_SIGN, &yes, sizeof(yes)},
                           {CKA_TOKEN, &yes, sizeof(yes)},
                           {CKA_PRIVATE, &yes, sizeof(yes)},
                           {CKA_SENSITIVE, &yes, sizeof(yes)}};
    CK_OBJECT_HANDLE hpub, hpriv;
    CU_ASSERT_EQUAL_FATAL(g_p11->C_GenerateKeyPair(s, &gen, pub, 2, priv, 4, &hpub, &hpriv),
                          CKR_OK);

    // The key signs: a 64-byte raw r||s for P-256.
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
    CK_BYTE digest[32] = {1, 2, 3};
    CK_BYTE sig[132];
    CK_ULONG sig_len = sizeof(sig);
    CU_ASSERT_EQUAL_FATAL(g_p11->C_SignInit(s, &ecdsa, hpriv), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(g_p11->C_Sign(s, digest, sizeof(digest), sig, &sig_len), CKR_OK);
    CU_ASSERT_EQUAL(sig_len, 64);
    CU_ASSERT_EQUAL(g_p11->C_Logout(s), CKR_OK);
    CU_ASSERT_EQUAL(g_p11->C_CloseSession(s), CKR_OK);
}

static void test_support_token_rejects_wrong_pin(void)
{
    CK_SLOT_ID slot;
    CU_ASSERT_FATAL(find_slot(g_token.label, &slot));
    CK_SESSION_HANDLE s;
    CU_ASSERT_EQUAL_FATAL(g_p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
    static const char bad[] = "not-the-pin";
    CU_ASSERT_EQUAL(g_p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)bad, sizeof(bad) - 1),
                    CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(g_p11->C_CloseSession(s), CKR_OK);
}

static void test_support_unknown_label_has_no_slot(void)
{
    CK_SLOT_ID slot;
    CU_ASSERT_FALSE(find_slot("no-such-token", &slot));
}

static void test_support_destroy_removes_directory(void)
{
    test_token t;
    CU_ASSERT_FATAL(test_token_create(&t, "second-token"));
    char dir[256];
    (void)snprintf(dir, sizeof(dir), "%s", t.dir);
    struct stat st;
    CU_ASSERT_EQUAL(stat(dir, &st), 0);
    test_token_destroy(&t);
    CU_ASSERT_NOT_EQUAL(stat(dir, &st), 0);
    // The suite's own token's configuration is back in force.
    const char *conf = getenv("SOFTHSM2_CONF");
    CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
    CU_ASSERT_STRING_EQUAL(conf, g_token.conf_path);
}

int test_support_register(void);
int test_support_register(void)
{
    CU_pSuite s = CU_add_suite("support", support_init, support_cleanup);
    if (s == NULL) {
        return 1;
    }
    if (CU_ADD_TEST(s, test_support_token_login_and_ec_keygen) == NULL ||
        CU_ADD_TEST(s, test_support_token_rejects_wrong_pin) == NULL ||
        CU_ADD_TEST(s, test_support_unknown_label_has_no_slot) == NULL ||
        CU_ADD_TEST(s, test_support_destroy_removes_directory) == NULL) {
        return 1;
    }
    return 0;
}
