// hsm internals: the token and key structures shared by the module's .c files, and a few
// accessors the hsm tests use to inspect what the token holds. Not for other modules.
#ifndef CERTMINT_HSM_HSM_INTERNAL_H
#define CERTMINT_HSM_HSM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "hsm/hsm.h"

// The printable curve name PKCS#11 allows in CKA_EC_PARAMS for Ed25519 keys.
#define HSM_ED25519_CURVE_NAME "edwards25519" // PKCS#11 3.0 §2.3.5 printable curve name

// Mechanism capability bits, filled from C_GetMechanismList at open.
enum {
    HSM_MECH_ECDSA = 1u << 0,
    HSM_MECH_ECDSA_SHA256 = 1u << 1,
    HSM_MECH_ECDSA_SHA384 = 1u << 2,
    HSM_MECH_ECDSA_SHA512 = 1u << 3,
    HSM_MECH_RSA_PKCS = 1u << 4,
    HSM_MECH_SHA256_RSA = 1u << 5,
    HSM_MECH_SHA384_RSA = 1u << 6,
    HSM_MECH_SHA512_RSA = 1u << 7,
    HSM_MECH_RSA_PSS = 1u << 8,
    HSM_MECH_SHA256_PSS = 1u << 9,
    HSM_MECH_SHA384_PSS = 1u << 10,
    HSM_MECH_SHA512_PSS = 1u << 11,
    HSM_MECH_EDDSA = 1u << 12,
};

// Thread: see hsm.h. Fields are immutable after hsm_token_open except those noted.
struct hsm_token {
    CK_FUNCTION_LIST *f; // p11-kit managed module
    bool initialized;    // p11_kit_module_initialize succeeded (finalize on free)
    CK_SLOT_ID slot;
    CK_TOKEN_INFO info;
    char label[33]; // token label, trailing blanks removed, for messages
    CK_SESSION_HANDLE admin;
    bool admin_open;
    pthread_mutex_t admin_mu; // serialises use of |admin|
    char *pin_path;           // pin-source file, read at each login (the PIN is not kept)
    char *pin;                // pin-value only: mlock'ed copy for re-login, wiped on free
    size_t pin_len;
    size_t pin_cap;
    uint32_t mechs;    // HSM_MECH_* bits
    uint32_t num_keys; // key indexes handed out; guarded_by(admin_mu)
};

// Thread: immutable after creation.
struct hsm_key {
    hsm_token *token;
    uint32_t index; // < HSM_MAX_KEYS_PER_TOKEN; slot in each worker's handle cache
    hsm_key_type type;
    uint32_t bits;
    CK_OBJECT_HANDLE handle; // in the admin session's view (token object)
    uint8_t id[64];
    size_t id_len;
    char label[65];
    size_t label_len;
    uint8_t *spki;
    size_t spki_len;
};

// hsm_login logs the user in on |s| with the token's PIN (re-reading the pin-source file, or
// the kept pin-value); CKR_USER_ALREADY_LOGGED_IN counts as success (the login is per
// application and token). HSM_E_PIN_SOURCE or the CKR of C_Login otherwise. Thread: any.
CM_RESULT hsm_login(hsm_token *t, CK_SESSION_HANDLE s);

// hsm_find_key_handle finds the one private key in |s| with |k|'s CKA_ID and CKA_LABEL.
// HSM_E_NO_KEY / HSM_E_AMBIGUOUS_KEY otherwise, or the CKR of a failed call.
// Thread: the session's owner.
CM_RESULT hsm_find_key_handle(hsm_token *t, CK_OBJECT_HANDLE *out, CK_SESSION_HANDLE s,
                              const hsm_key *k);

// hsm_key_get_bool_attr reads a CK_BBOOL attribute of the private key (for tests).
CM_RESULT hsm_key_get_bool_attr(hsm_key *k, bool *out, CK_ATTRIBUTE_TYPE type);

// hsm_ckr_fail fills |err| (may be NULL) with "FUNC: CKR_NAME (0x..)" and returns the
// HSM-class code of |rv|.
cm_result hsm_ckr_fail(hsm_error *err, const char *func, CK_RV rv);

// hsm_error_set writes a formatted message into |err| (may be NULL).
void hsm_error_set(hsm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif // CERTMINT_HSM_HSM_INTERNAL_H
