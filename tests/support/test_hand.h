// tests/support/test_hand: CMP requests built by hand with the project's marshal code, for the
// requests a conforming client never sends (conformance tests: the srv_conform suite and the
// certmint-conform tool of tests/integration). A test_hand starts as a valid PBM-protected
// message of one body type; the test changes the fields its rule is about, then builds it.
// Everything built lives in the hand's arena until test_hand_free. Every function returns
// CM_OK or the failing step's code (a malformed input, an OpenSSL failure). Thread: one hand
// per thread.
#ifndef CERTMINT_TESTS_SUPPORT_TEST_HAND_H
#define CERTMINT_TESTS_SUPPORT_TEST_HAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "engine/base/base.h"
#include "engine/cmp/cmp.h"
#include "engine/crmf/crmf.h"
#include "hsm/hsm.h"

// How the message is protected (test_hand.prot_mode).
enum {
    TEST_PROT_NORMAL = 0, // a MAC with |secret|, or a signature with |sig_key|
    TEST_PROT_NONE,       // neither protectionAlg nor protection
    TEST_PROT_ALG_ONLY,   // protectionAlg without protection
    TEST_PROT_BITS_ONLY,  // protection without protectionAlg
};

typedef struct test_hand {
    cm_arena a;
    const cmp_protect_ctx *prot;
    cmp_header_fields h;
    cmp_body body;
    crmf_cert_req_msg msgs[2]; // ir, cr, kur, ccr: msgs[0] is the one CertReqMsg
    crmf_attr ctrl[1];
    cmp_itav ginfo[4];
    cmp_cert_status cs;  // certConf
    cmp_rev_details rd;  // rr
    int64_t poll_ids[2]; // pollReq
    uint8_t tid[16], nonce[16];
    const char *secret; // MAC secret (PBM, or PBMAC1 when |pbmac1|), unless |sig_key| is set
    bool pbmac1;
    EVP_PKEY *sig_key; // signature protection (ECDSA/RSA with SHA-256, Ed25519)
    cm_span certs[3];  // extraCerts
    size_t num_certs;
    int prot_mode;           // TEST_PROT_*
    EVP_PKEY *popo_key;      // msgs[i]'s signature POPO is made with it when built
    cm_span popo_alg;        // the POPO's algorithm when set (else the key's own)
    bool popo_corrupt;       // flip a bit of the POPO signature
    uint64_t mac_iterations; // PBM/PBMAC1 iteration count; 0: 500 (PBM), 2000 (PBMAC1)
} test_hand;

// test_hand_init starts |x| as a message of type |t| to |recipient| (a Name element) from the
// MAC client |sender_kid| with |secret| (both borrowed): pvno 2, messageTime now, a random
// transactionID and senderNonce, for ir/cr/kur/ccr one CertReqMsg with certReqId 0 (no template
// yet: test_hand_template). |prot| computes the MACs.
void test_hand_init(test_hand *x, cmp_body_type t, const cmp_protect_ctx *prot, cm_span recipient,
                    cm_span sender_kid, const char *secret);

// test_hand_free releases everything |x| built.
void test_hand_free(test_hand *x);

// test_hand_copy copies |len| bytes into the hand's arena (NULL span on exhaustion).
cm_span test_hand_copy(test_hand *x, const void *p, size_t len);

// test_hand_name writes the DER of the Name |dn| ("/O=x/CN=y"; "" for the NULL-DN).
CM_RESULT test_hand_name(test_hand *x, cm_span *out, const char *dn);

// test_hand_spki writes the whole SubjectPublicKeyInfo of |key|.
CM_RESULT test_hand_spki(test_hand *x, cm_span *out, EVP_PKEY *key);

// test_spki_body returns the content of the SPKI SEQUENCE |spki| (what CertTemplate's [6]
// holds); an empty span when |spki| is not a SEQUENCE.
cm_span test_spki_body(cm_span spki);

// test_hand_sig_alg writes the AlgorithmIdentifier the helpers sign with for |key|.
CM_RESULT test_hand_sig_alg(test_hand *x, cm_span *out, EVP_PKEY *key);

// test_hand_sign_data signs |data| with |key| as test_hand_sig_alg says.
CM_RESULT test_hand_sign_data(test_hand *x, cm_span *out, EVP_PKEY *key, cm_span data);

// test_hand_template gives msgs[0] a template for |key| with subject |dn| and a signature POPO
// by |key| (made at test_hand_build).
CM_RESULT test_hand_template(test_hand *x, EVP_PKEY *key, const char *dn);

// test_hand_ckg gives msgs[0] a template asking for central key generation (RFC 9483 §4.1.6):
// subject |dn|, no POPO, and no public key, or when |alg_of| is non-NULL that key's algorithm
// with an empty subjectPublicKey.
CM_RESULT test_hand_ckg(test_hand *x, EVP_PKEY *alg_of, const char *dn);

// test_hand_priv_key_popo gives msgs[0] a template for |key| with subject |dn| and a
// keyEncipherment (|agreement| false) or keyAgreement POPO whose POPOPrivKey is |choice|
// (CRMF_PRIV_*) with content |body| (for subsequentMessage the INTEGER's content octets, for
// encryptedKey the EnvelopedData's fields), tagged as RFC 4211 §4.2's CRMF module does
// (IMPLICIT [choice]).
CM_RESULT test_hand_priv_key_popo(test_hand *x, EVP_PKEY *key, const char *dn, bool agreement,
                                  uint32_t choice, cm_span body);

// test_hand_encr_cert is test_hand_priv_key_popo with subsequentMessage encrCert (0): the
// indirect proof of possession of a key that cannot sign.
CM_RESULT test_hand_encr_cert(test_hand *x, EVP_PKEY *key, const char *dn, bool agreement);

// test_hand_encrypted_key is test_hand_priv_key_popo with encryptedKey: the private key of
// |key| in an AsymmetricKeyPackage, enveloped for a password recipient under |password| with
// |iterations| PBKDF2 iterations (engine/cmp/cmp_cms.c). |package_key| (NULL: |key|) is the
// private key put in the package, so a test can send another key than the template's.
CM_RESULT test_hand_encrypted_key(test_hand *x, EVP_PKEY *key, EVP_PKEY *package_key,
                                  const char *dn, bool agreement, const char *password,
                                  uint64_t iterations);

// test_hand_extensions sets msgs[0]'s template extensions from OpenSSL's v3 syntax:
// names[i] = values[i] ("keyUsage" = "critical, keyAgreement").
CM_RESULT test_hand_extensions(test_hand *x, const char *const *names, const char *const *values,
                               size_t n);

// test_hand_sign protects the message with a signature by |key|, |cert| (DER, borrowed) as
// extraCerts[0], its subject as the sender and its subject key identifier as senderKID (none
// when it has no SKI extension).
CM_RESULT test_hand_sign(test_hand *x, EVP_PKEY *key, cm_span cert);

// test_hand_old_cert_id puts an oldCertID control {directoryName |issuer|, |serial|} on msgs[0].
CM_RESULT test_hand_old_cert_id(test_hand *x, cm_span issuer, cm_span serial);

// test_hand_add_info appends |it| to the header's generalInfo (at most 4).
void test_hand_add_info(test_hand *x, cmp_itav it);

// test_hand_orig appends origPKIMessage (PKIMessages of the one message |orig|, DER).
CM_RESULT test_hand_orig(test_hand *x, cm_span orig);

// test_hand_rr makes the rr's one RevDetails name |cert| (issuer and serial) with CRLReason
// |reason| (-1: no crlEntryDetails).
CM_RESULT test_hand_rr(test_hand *x, cm_span cert, int reason);

// test_hand_cert_conf makes the certConf's one CertStatus confirm |cert| with certReqId |id|,
// in the transaction |tid| answering the server's senderNonce |recip_nonce| (borrowed).
CM_RESULT test_hand_cert_conf(test_hand *x, cm_span tid, cm_span recip_nonce, cm_span cert,
                              int64_t id);

// test_hand_nested makes the body a nested message (RFC 9810 §5.3.23) of the |n| PKIMessages
// |inner| (whole DER elements, copied into the hand's arena), protected like any other body.
CM_RESULT test_hand_nested(test_hand *x, const cm_span *inner, size_t n);
// test_hand_poll makes the message a pollReq (RFC 9810 §5.3.22) in the transaction |tid|
// answering the server's senderNonce |recip_nonce| (both borrowed), asking for |num| (0..2)
// requests, each certReqId |id|.
CM_RESULT test_hand_poll(test_hand *x, cm_span tid, cm_span recip_nonce, int64_t id, size_t num);

// test_hand_build signs the POPOs, protects the message and returns its DER in |*out| (heap;
// free() it).
CM_RESULT test_hand_build(test_hand *x, uint8_t **out, size_t *out_len);

// test_hand_make_root makes a self-signed root CA certificate for the token key |key|
// (ca_root_tbs_build, ECDSA with SHA-256 signed through |pool|; subject CN=|cn|, serial
// |serial| (positive, two octets), valid from an hour ago for ten years), writes it as PEM to
// |pem_path| and returns it in |*out| (the caller X509_frees it; NULL |out|: not kept).
// Returns false on any failure. The server and front suites share it.
bool test_hand_make_root(X509 **out, hsm_pool *pool, const hsm_key *key, const char *cn,
                         uint16_t serial, const char *pem_path);

#endif // CERTMINT_TESTS_SUPPORT_TEST_HAND_H
