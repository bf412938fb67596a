// Key generation on the open token (C_GenerateKeyPair on the admin session under admin_mu), for
// `certmint init`, the tests and the benchmarks.
#include <stdlib.h>
#include <string.h>

#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"

// hsm_key_exists reports whether a private key with CKA_LABEL |label| or CKA_ID |id| exists.
static CK_RV hsm_key_exists(hsm_token *t, bool *out, const char *label, cm_span id)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_OBJECT_HANDLE h;
    CK_ULONG n = 0;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE by_label[] = {{CKA_CLASS, &cls, sizeof(cls)},
                               {CKA_TOKEN, &yes, sizeof(yes)},
                               {CKA_LABEL, (void *)(uintptr_t)label, strlen(label)}};
    CK_RV rv = hsm_find(t, &h, 1, &n, by_label, 3, t->admin);
    if (rv == CKR_OK && n == 0 && id.len > 0) {
        CK_ATTRIBUTE by_id[] = {{CKA_CLASS, &cls, sizeof(cls)},
                                {CKA_TOKEN, &yes, sizeof(yes)},
                                {CKA_ID, (void *)(uintptr_t)id.p, id.len}};
        rv = hsm_find(t, &h, 1, &n, by_id, 3, t->admin);
    }
    *out = n > 0;
    return rv;
}

cm_result hsm_key_generate(hsm_token *t, hsm_key **out, hsm_error *err, hsm_keygen_type type,
                           const char *label, cm_span id)
{
    *out = NULL;
    hsm_error_set(err, "%s", "");
    CM_ENSURE(label != NULL && label[0] != '\0' && strlen(label) < 65 && id.len <= 64,
              CM_E_INVALID_ARG);
    static const uint8_t k_p256[] = DER_OID_P256, k_p384[] = DER_OID_P384, k_p521[] = DER_OID_P521,
                         k_ed[] = DER_OID_ED25519, k_ed448[] = DER_OID_ED448;
    // CKA_EC_PARAMS is the DER of the curve OID: 06 len content.
    uint8_t ec_params[16];
    size_t ec_len = 0;
    CK_ULONG mod_bits = 0;
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    const uint8_t *oid = NULL;
    size_t oid_len = 0;
    switch (type) {
    case HSM_KEYGEN_EC_P256:
        oid = k_p256, oid_len = sizeof(k_p256) - 1;
        break;
    case HSM_KEYGEN_EC_P384:
        oid = k_p384, oid_len = sizeof(k_p384) - 1;
        break;
    case HSM_KEYGEN_EC_P521:
        oid = k_p521, oid_len = sizeof(k_p521) - 1;
        break;
    case HSM_KEYGEN_ED25519:
        oid = k_ed, oid_len = sizeof(k_ed) - 1;
        mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
        break;
    case HSM_KEYGEN_ED448:
        // CKK_EC_EDWARDS with the curve's OID in CKA_EC_PARAMS (PKCS#11 3.0 §2.3.5), which
        // SoftHSM 2.6.1 accepts for both Edwards curves.
        oid = k_ed448, oid_len = sizeof(k_ed448) - 1;
        mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
        break;
    case HSM_KEYGEN_RSA_2048:
        mod_bits = 2048;
        break;
    case HSM_KEYGEN_RSA_3072:
        mod_bits = 3072;
        break;
    case HSM_KEYGEN_RSA_4096:
        mod_bits = 4096;
        break;
    default:
        CM_BAIL(CM_E_INVALID_ARG);
    }
    if (oid != NULL) {
        ec_params[0] = DER_TAG_OID;
        ec_params[1] = (uint8_t)oid_len;
        memcpy(ec_params + 2, oid, oid_len);
        ec_len = oid_len + 2;
    } else {
        mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    }
    static const CK_BYTE k_f4[] = {0x01, 0x00, 0x01};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG label_len = strlen(label);
    CK_ATTRIBUTE pub[6] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_LABEL, (void *)(uintptr_t)label, label_len},
        {CKA_ID, (void *)(uintptr_t)id.p, id.len},
    };
    CK_ULONG npub = 4;
    if (oid != NULL) {
        pub[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, ec_params, ec_len};
    } else {
        pub[npub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &mod_bits, sizeof(mod_bits)};
        pub[npub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)(uintptr_t)k_f4, sizeof(k_f4)};
    }
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_ALWAYS_AUTHENTICATE, &no, sizeof(no)},
        {CKA_LABEL, (void *)(uintptr_t)label, label_len},
        {CKA_ID, (void *)(uintptr_t)id.p, id.len},
    };

    hsm_key *k = NULL;
    (void)pthread_mutex_lock(&t->admin_mu);
    bool exists = false;
    CK_RV rv = hsm_key_exists(t, &exists, label, id);
    cm_result r = rv == CKR_OK ? cm_result_make(CM_OK) : hsm_ckr_fail(err, "C_FindObjects", rv);
    if (!cm_ok(r)) {
        goto out;
    }
    if (exists) {
        hsm_error_set(err, "token '%s' already has a private key with label '%s' or that id",
                      t->label, label);
        r = cm_result_make(HSM_E_KEY_EXISTS);
        goto out;
    }
    CK_OBJECT_HANDLE hpub, hpriv;
    rv = t->f->C_GenerateKeyPair(t->admin, &mech, pub, npub, priv, sizeof(priv) / sizeof(priv[0]),
                                 &hpub, &hpriv);
    if (rv != CKR_OK) {
        r = hsm_ckr_fail(err, "C_GenerateKeyPair", rv);
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        r = cm_result_make(CM_E_NOMEM);
        goto out;
    }
    r = hsm_key_load(t, k, err, hpriv);
    if (cm_ok(r)) {
        r = hsm_key_register(t, k);
    }
out:
    (void)pthread_mutex_unlock(&t->admin_mu);
    if (!cm_ok(r)) {
        hsm_key_free(k);
        return r;
    }
    *out = k;
    return r;
}
