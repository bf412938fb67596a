// hsm internals: the token and key structures shared by the module's .c files, the helpers
// hsm_token.c, hsm_key.c, hsm_keygen.c and hsm_pool.c share, and a few accessors the hsm tests
// use to inspect what the token holds. Not for other modules.
#ifndef CERTMINT_HSM_HSM_INTERNAL_H
#define CERTMINT_HSM_HSM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "hsm/hsm.h"

struct p11_kit_uri; // P11KitUri, <p11-kit/uri.h>

// The printable curve name PKCS#11 allows in CKA_EC_PARAMS for Ed25519 keys.
#define HSM_ED25519_CURVE_NAME "edwards25519" // PKCS#11 3.0 §2.3.5 printable curve name
#define HSM_ED448_CURVE_NAME   "edwards448"

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

// hsm_find runs C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal with |tmpl| on session |s|
// (the admin session, or a worker's for hsm_find_key_handle); |*out_n| is the number of matches
// returned (at most |cap| handles). Returns the first failing CKR. Thread: the session's owner.
CK_RV hsm_find(hsm_token *t, CK_OBJECT_HANDLE *out, CK_ULONG cap, CK_ULONG *out_n,
               CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl, CK_SESSION_HANDLE s);

// hsm_key_load fills |k| from the private key object |h| of the admin session: identity, type
// and public key (|k->spki|, malloc'ed, freed by hsm_key_free). HSM_E_ALWAYS_AUTH,
// HSM_E_KEY_TYPE, HSM_E_NO_PUBLIC_KEY or the CKR of a failed call, with |err| saying why.
// Thread: start-up, with admin_mu held.
CM_RESULT hsm_key_load(hsm_token *t, hsm_key *k, hsm_error *err, CK_OBJECT_HANDLE h);

// hsm_key_register gives |k| its per-token index (the slot in each worker's handle cache);
// CM_E_LIMIT past HSM_MAX_KEYS_PER_TOKEN. Thread: with admin_mu held.
CM_RESULT hsm_key_register(hsm_token *t, hsm_key *k);

// hsm_uri_wipe_pin wipes p11-kit's copy of a pin-value in |uri| (may be NULL) before the URI is
// freed: p11-kit frees without wiping, and the buffer is its own and about to be released.
void hsm_uri_wipe_pin(struct p11_kit_uri *uri);

// hsm_ckr_fail fills |err| (may be NULL) with "FUNC: CKR_NAME (0x..)" and returns the
// HSM-class code of |rv|.
cm_result hsm_ckr_fail(hsm_error *err, const char *func, CK_RV rv);

// hsm_error_set writes a formatted message into |err| (may be NULL).
void hsm_error_set(hsm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// hsm_error_append appends |text| to |err| (may be NULL), truncating at its size: for lists of
// what was found (tokens, keys).
void hsm_error_append(hsm_error *err, const char *text);

#endif // CERTMINT_HSM_HSM_INTERNAL_H
