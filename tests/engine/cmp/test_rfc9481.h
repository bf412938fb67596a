// Suite "cmp_rfc9481": every row of the algorithm table (RFC 9481) through the real
// verification and protection code. test_rfc9481.c holds the fixture, the signature rows
// (protection and POPO), the policy and the header rules; test_rfc9481_mac.c the MAC rows and
// the known-answer tests of KMAC and GMAC.
#ifndef CERTMINT_TESTS_ENGINE_CMP_TEST_RFC9481_H
#define CERTMINT_TESTS_ENGINE_CMP_TEST_RFC9481_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "engine/cmp/cmp.h"
#include "engine/cmp/cmp_protect.h"

// The fixture (test_rfc9481.c): contexts that allow every row (SHA-1 included) and contexts
// with the default policy.
extern cmp_protect_ctx *test_rfc_prot;        // policy: the whole table
extern cmp_protect_ctx *test_rfc_prot_strict; // the default policy
extern cm_arena test_rfc_arena;               // reset before every test

// test_rfc_build_msg writes a genm PKIMessage (a valid header: 16-octet transactionID and
// senderNonce, senderKID |kid|) whose header carries protectionAlg |alg|, protected by
// |protect| over ProtectedPart, with |certs| as extraCerts, into |test_rfc_arena|.
typedef bool (*test_rfc_protect_fn)(void *arg, uint8_t *out, size_t cap, size_t *out_len,
                                    cm_span protected_content);
cm_span test_rfc_build_msg(cm_span alg, cm_span kid, test_rfc_protect_fn protect, void *arg,
                           const cm_span *certs, size_t num_certs);

// test_rfc_parse parses |der| with the codec (CU-asserting success) into |out|, from the arena.
void test_rfc_parse(cmp_msg *out, cm_span der);

// test_rfc_flip returns a copy of |der| (in the arena) with one octet of |part| (a span inside
// |der|) at |index| XORed with 0x01.
cm_span test_rfc_flip(cm_span der, cm_span part, size_t index);

// test_rfc_protected_part_der returns SEQUENCE { |content| } (the ProtectedPart DER) in the arena.
cm_span test_rfc_protected_part_der(cm_span content);

// The MAC tests (test_rfc9481_mac.c).
void test_rfc9481_key_macs_protect_and_echo(void);
void test_rfc9481_key_mac_secret_kinds(void);
void test_rfc9481_key_mac_parameters_refused(void);
void test_rfc9481_password_macs_every_pair(void);
void test_rfc9481_kmac_known_answers(void);
void test_rfc9481_gmac_known_answers(void);

#endif // CERTMINT_TESTS_ENGINE_CMP_TEST_RFC9481_H
