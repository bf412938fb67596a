// engine/server internals: the request, its states, the handler table and the functions the
// server's files share. Only for engine/server/*.c and its tests.
//
// Where things are:
//   srv.c          engine, workers, request lifecycle and recycling, the handler table,
//                  dispatch, HSM and store submission, completions
//   srv_respond.c  the response header and protection, error messages, extraCerts
//   srv_auth.c     header rules, MAC and signature authentication
//   srv_enrol.c    ir, cr, kur, p10cr
//   srv_enrol_check.c  the content rules of ir, cr, kur, p10cr; grantedWithMods
//   srv_conf.c     certConf
//   srv_rr.c       rr
//   srv_genm.c     genm
//   srv_error.c    error (from a client)
//   srv_crl.c      CRLs
#ifndef CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H
#define CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H

#include "engine/server/srv.h"

#define SRV_NONCE_LEN             16u
#define SRV_DEFAULT_ARENA_CAP     ((size_t)1 << 20)
#define SRV_ARENA_BLOCK           ((size_t)16 * 1024)
#define SRV_DEFAULT_FREE_REQUESTS 64u
#define SRV_MAX_EXTRA_OUT         (2 * CA_MAX_CHAIN + 2)
#define SRV_NUM_BODY_TYPES        (CMP_BODY_POLL_REP + 1)
#define SRV_MAX_STORE_JOBS        3u

// Transaction states kept in the store (store_txn.state).
enum {
    SRV_TXN_WAIT_CONF = 1, // a certificate waits for certConf
    SRV_TXN_IMPLICIT = 2,  // issued with implicitConfirm: nothing more to come
    SRV_TXN_CONFIRMED = 3, // certConf accepted it
    SRV_TXN_REJECTED = 4,  // certConf rejected it (revoked)
    SRV_TXN_RESERVED = 5,  // reserved before signing; the certificate is not recorded yet
};

// Where an enrolment is (srv_enrol.c): its reservation is with the store, its certificate with
// the HSM, its records with the store.
typedef enum srv_enrol_phase {
    SRV_ENROL_NONE = 0,
    SRV_ENROL_RESERVING,
    SRV_ENROL_SIGNING,
    SRV_ENROL_RECORDING,
} srv_enrol_phase;

// What certConf must match, in store_txn.flags (srv_enrol_txn_note, srv_conf.c): the request
// was a p10cr (its certReqId is -1), the request's MAC was PBMAC1 or a key-based MAC (neither:
// PasswordBasedMac). The values are those of the store's schema-3 migration, which unpacks
// them from the state of rows written before the column (state >> 8).
enum {
    SRV_TXN_FLAG_P10CR = 1u << 0,
    SRV_TXN_FLAG_PBMAC1 = 1u << 1,
    SRV_TXN_FLAG_KEY_MAC = 1u << 2,
};

typedef enum srv_state {
    SRV_ST_NEW = 0,
    SRV_ST_SIGN_CERT, // the certificate's signature is with the HSM
    SRV_ST_STORE,     // records are with the store
    SRV_ST_UNDO,      // a store job undoing part of a failed batch is out (srv_undo_submit)
    SRV_ST_SIGN_RESP, // the response's protection is with the HSM
    SRV_ST_DONE,
} srv_state;

// Thread: immutable after srv_engine_new.
struct srv_engine {
    srv_params p;
};

// Thread: confined to its thread.
struct srv_worker {
    srv_engine *e;
    cm_cq *cq;
    crmf_crypto crypto;
    cmp_digests dig;
    store_reader *reader;
    hsm_lane *lane; // this thread's own HSM session when the pool signs inline, else NULL
    // Recycling (srv_request_new / srv_request_free): freed requests wait here, zeroed but
    // for their arena's first block, up to |max_free|.
    srv_request *free_list; // singly linked through srv_request.next
    size_t num_free;
    size_t max_free;
    // Every request handed out and not yet freed (doubly linked through prev/next), so that
    // srv_worker_free can detach them.
    srv_request *live;
};

// srv_request: one message and everything derived from it. Thread: confined to its worker's
// thread (handed to the HSM or the store only through its embedded jobs).
struct srv_request {
    srv_worker *w;            // NULL once the worker was freed (the request may then only be freed)
    srv_request *prev, *next; // the worker's live list, or (next) its free list
    void *user;
    cm_arena arena;
    const srv_ca *ca;
    srv_state state;
    uint32_t jobs_out;
    int64_t now;

    // The request.
    cm_span der;
    bool have_msg;
    cmp_msg msg;
    bool have_header; // msg.header usable for the response (even if the body failed)
    int body_type;

    // The message as a whole passed (parse, header, protection and authentication): a refusal
    // from here on is of the request's content, answered for ir/cr/p10cr/kur/rr in the
    // matching ip/cp/kup/rp (RFC 9483 §3.6.4; srv_fail). Set by srv_enrol_check and srv_rr.
    bool content_stage;

    // Authentication.
    cmp_prot_kind prot_kind;
    bool prot_known;          // prot_kind was read from protectionAlg
    bool mac_failed;          // the MAC was checked and refused (srv_summary)
    const srv_secret *secret; // the MAC credential named by senderKID, once mac_ok
    bool mac_ok;              // the MAC verified with mac_key
    cmp_mac_key mac_key;      // kept for the response (same salt and parameters); secret
    bool sig_ok;              // the signature verified with signer_cert
    bool signer_is_ra;        // signer_cert is one of the CA's RA certificates, and valid as one
    cm_why ra_why;            // why a configured RA certificate may not act as one (empty: none)
    cm_span signer_cert;      // extraCerts[0]
    ca_cert_fields signer;    // its fields, once sig_ok
    uint8_t signer_hash[32];

    // Issuance.
    const ca_profile *profile; // the profile the request is issued under (certProfile)
    const char *profile_name;  //   its name, for reasons
    srv_policy policy;         //   its trust settings
    srv_enrol_phase phase;
    uint32_t serial_tries; // reservations refused for a serial already in use
    bool implicit;
    int64_t cert_req_id;
    cmp_body_type resp_type;
    ca_request creq;
    ca_decision dec;
    ca_ext exts[CA_MAX_REQ_EXTS];
    uint8_t serial[CA_SERIAL_LEN];
    cm_span serial_content; // |serial| as the certificate's INTEGER content octets
    cm_span replaces;       // kur: the serial (content octets) of the certificate updated
    uint8_t spki_hash[32];
    cm_span tbs;
    cm_span cert;
    cm_span ca_sig_alg;
    uint8_t sig[HSM_MAX_SIG_LEN];
    hsm_job hjob;
    store_job sjobs[SRV_MAX_STORE_JOBS];
    size_t num_sjobs;
    cm_result undo_error;  // SRV_ST_UNDO: what the request answers once the undo is back
    const char *undo_what; // SRV_ST_UNDO: logged with the result when the undo fails

    // certConf.
    bool conf_reject;
    store_txn txn;

    // The response.
    der_builder rb;
    cmp_msg_writer mw;
    cmp_header_fields rh;
    cmp_itav ginfo[1];
    uint8_t nonce[SRV_NONCE_LEN];
    bool nonce_set; // the nonce was drawn early (the transaction records it)
    cm_span extra[SRV_MAX_EXTRA_OUT];
    size_t num_extra;
    cm_span response;
    const cmp_body *resp_body; // srv_respond's body while it runs (to answer again with the MAC)
    bool force_mac;            // the response's signature could not be queued: MAC it instead
    cm_result error;
    int fail_bit;
    cm_why why; // the refusal's specifics, set by the step that refused (base.h's convention)
    uint64_t mark[SRV_STAGE_COUNT + 1]; // monotonic ns at the start and the end of each stage

    // The transport (issue 18): the client certificate a TLS handshake verified (DER in the
    // arena, empty when none), informational only (srv_request_set_tls_peer).
    cm_span tls_peer;
};

// srv_mark records that |stage| ended now (stages not passed through stay 0).
static inline void srv_mark(srv_request *req, srv_stage stage)
{
    req->mark[stage + 1] = cm_time_mono_ns();
}

// ---------------------------------------------------------------------------------------------
// The handler table (srv.c)

// srv_handler says how the CA answers one PKIBody type; k_srv_handlers in srv.c has one row per
// cmp_body_type. Every function ends in one of: an answer (srv_respond or srv_fail, which may
// itself wait for the HSM), an HSM job (srv_sign_submit) or store jobs (srv_store_submit).
// Thread: immutable.
typedef struct srv_handler {
    const char *name; // the body type's ASN.1 name
    // The first message of a transaction: it must not carry a recipNonce (RFC 9810 §5.1.1).
    bool opens_transaction;
    // start runs once the message parsed and its header rules held.
    void (*start)(srv_request *req);
    // after_sign runs when the certificate's signature is back from the HSM (SRV_ST_SIGN_CERT);
    // NULL for bodies that sign nothing but their response.
    void (*after_sign)(srv_request *req);
    // after_store runs when every store job succeeded; NULL for bodies that record nothing.
    void (*after_store)(srv_request *req);
    // store_failed runs when store job |i| failed with |r| (the first failure): it returns
    // true when it submitted an undo (srv_undo_submit; the request then answers |r| once that
    // is back), false to answer |r| now. NULL: always answer |r| now.
    bool (*store_failed)(srv_request *req, size_t i, cm_result r);
    // sign_failed runs when the certificate's signature could not be made or queued (|r|): it
    // returns true when it submitted an undo (srv_undo_submit; the request then answers |r| once
    // that is back). NULL: answer |r| now.
    bool (*sign_failed)(srv_request *req, cm_result r);
} srv_handler;

// srv_handler_get returns the row for |body_type|, or NULL outside cmp_body_type.
const srv_handler *srv_handler_get(int body_type);

// srv_refuse_start answers a body type this CA does not serve: it authenticates first, so the
// error carries the request's MAC, then answers SRV_E_BODY (badRequest).
void srv_refuse_start(srv_request *req);

// ---------------------------------------------------------------------------------------------
// Asynchronous steps (srv.c)

// srv_sign_submit hands |msg| to the HSM with |key|; the request continues in |next| when the
// signature is back. A refused submission answers at once (unprotected for SRV_ST_SIGN_RESP).
void srv_sign_submit(srv_request *req, const hsm_key *key, hsm_sig_alg alg, cm_span msg,
                     srv_state next);

// srv_store_submit hands sjobs[0 .. num_sjobs) to the store as one batch (SRV_ST_STORE).
void srv_store_submit(srv_request *req);

// srv_undo_submit hands |job| (one of req->sjobs, filled) to the store to undo part of a
// failed batch; the request answers |r| once it is back, logging |what| if the undo failed.
void srv_undo_submit(srv_request *req, store_job *job, cm_result r, const char *what);

// ---------------------------------------------------------------------------------------------
// Responses (srv_respond.c)

// srv_respond writes |body| under a response header and protects it like the request: the
// request's MAC key when its MAC verified (unless the CA signs all responses), otherwise a
// signature by the CMP key (an HSM job; the request then completes later).
void srv_respond(srv_request *req, const cmp_body *body);

// srv_fail answers |r| as a rejection: status rejection, the failure bit of |r|
// (cm_code_failinfo) and as statusString the request's reason (req->why) when a step set one,
// else |r|'s registry explanation. Where it goes (RFC 9483 §3.6.4, srv_rejects_content): a
// refusal of an ir/cr/p10cr/kur/rr's content (req->content_stage set, and a code that is not
// about the message as a whole) goes into the matching ip/cp/kup (one CertResponse) or rp
// (one PKIStatusInfo); everything else into an error message (RFC 9810 §5.3.21).
void srv_fail(srv_request *req, cm_result r);

// srv_rejects_content reports whether srv_fail answers |r| in the request's own response type
// rather than an error message: the message passed its checks as a whole
// (req->content_stage), the body is ir, cr, p10cr, kur or rr, and |r| is neither a server
// failure (USAGE, RESOURCE, AGAIN, CRYPTO, HSM, IO classes) nor one of the failure bits about
// the message as a whole: badMessageCheck, badTime, badSenderNonce, badRecipientNonce,
// transactionIdInUse, unsupportedVersion, wrongAuthority, wrongIntegrity, signerNotTrusted.
bool srv_rejects_content(const srv_request *req, cm_result r);

// srv_finish_response appends |prot| (NULL: none) and the extraCerts and closes the response.
void srv_finish_response(srv_request *req, const cm_span *prot);

// srv_add_extra appends the certificates of |a| (its certificate, then its chain) to the
// response's extraCerts, skipping duplicates.
void srv_add_extra(srv_request *req, const ca_authority *a);

// srv_ca_root returns the root of |a|'s chain (|a|'s own certificate without one).
cm_span srv_ca_root(const ca_authority *a);

// ---------------------------------------------------------------------------------------------
// Authentication (srv_auth.c)

// srv_check_header applies the header rules every request must pass (pvno, recipient,
// recipNonce of a transaction's first message, messageTime).
CM_RESULT srv_check_header(srv_request *req);

// srv_authenticate verifies the protection: a MAC with the secret named by senderKID (the
// sender must be a directoryName), or a signature by extraCerts[0], whose subject must be the
// sender, whose SKI must be the senderKID (present in every first message of a transaction when
// the certificate has an SKI), and whose chain must reach |trust| or |trust2| (either may be
// NULL) unless it is a configured RA certificate valid as one (srv_ca.ra_certs). A signer this
// instance's CAs issued must then be VALID in the store (srv_signer_check): the one
// authentication path every body type goes through.
CM_RESULT srv_authenticate(srv_request *req, ca_trust *trust, ca_trust *trust2);

// srv_authenticate_stored authenticates a signature-protected message that continues a
// transaction (a certConf without extraCerts) with |cert|, the signer certificate the
// transaction kept: the signature verifies with it, and the signer rules of srv_authenticate
// apply (the sender is its subject, the senderKID its SKI, and a certificate of this instance
// must still be VALID in the store: srv_signer_check). Its chain is not built again (it
// verified when the request came). Sets sig_ok and the signer fields as srv_authenticate does.
CM_RESULT srv_authenticate_stored(srv_request *req, cm_span cert);

// ---------------------------------------------------------------------------------------------
// Body handlers (one file each)

void srv_enrol_start(srv_request *req);   // ir, cr, kur, p10cr (srv_enrol.c)
void srv_enrol_record(srv_request *req);  //   the certificate is signed
void srv_enrol_respond(srv_request *req); //   its records committed
bool srv_enrol_store_failed(srv_request *req, size_t i, cm_result r);
void srv_conf_start(srv_request *req);    // certConf (srv_conf.c)
void srv_conf_respond(srv_request *req);  //   its records committed
void srv_rr_start(srv_request *req);      // rr (srv_rr.c)
void srv_rr_respond(srv_request *req);    //   the revocation committed
void srv_genm_start(srv_request *req);    // genm (srv_genm.c)
void srv_error_start(srv_request *req);   // error (srv_error.c)
void srv_error_respond(srv_request *req); //   the transaction's end committed
// srv_enrol_sign_failed is the enrolment's srv_handler.sign_failed (srv_enrol.c): the
// certificate could not be signed, so its reservation is given back (STORE_OP_TXN_UNRESERVE,
// through srv_undo_submit) and |r| answered once that is back. Returns false outside the
// signing phase (nothing reserved to give back).
bool srv_enrol_sign_failed(srv_request *req, cm_result r);

// srv_bytes_text writes |b| for a reason: as text when every byte is printable ASCII (a
// senderKID such as "line-9"), else as hex; cut to at most 32 bytes. Returns |buf|
// (srv_auth.c).
const char *srv_bytes_text(char buf[80], cm_span b);

// srv_serial_text writes |serial| (INTEGER content octets) as hex for a reason, cut to 20
// octets, into |buf|; returns it (srv_auth.c).
const char *srv_serial_text(char buf[48], cm_span serial);

// ---------------------------------------------------------------------------------------------
// Request content rules (srv_enrol_check.c, RFC 9483 §4.1)

// srv_enrol_check applies the content rules of an authenticated ir, cr, kur or p10cr before
// any expensive work (it runs before POPO verification): sets req->content_stage; then kur
// protected by a MAC (wrongIntegrity); exactly one CertReqMsg with certReqId 0; the key
// type and size the request's profile allows (req->profile, which srv_select_profile chose
// before; parsed, not built); raVerified only from a configured RA valid as one (the reason
// says why a configured RA certificate was not: req->ra_why), and an original message
// forwarded in origPKIMessage that backs it; a kur's oldCertID
// naming a certificate of this CA that the store knows (badCertId). Fails with the rule's
// code and a reason in req->why. One store read for a kur with oldCertID; one signature
// check per signed original message.
CM_RESULT srv_enrol_check(srv_request *req);

// srv_enrol_check_status turns the accepted status of the response being built into
// grantedWithMods, with a statusString saying what changed, when the CA issued something
// other than what was asked (req->dec.mods: validity capped, extensions replaced by the
// request's profile's). The string lives in the request's arena.
void srv_enrol_check_status(srv_request *req, cmp_status_info *st);

// srv_enrol_txn_note completes the transaction row |t| for certConf (srv_conf.c): the
// SRV_TXN_FLAG_* of the request in flags, the request's senderNonce in request_nonce (so
// certConf can refuse it repeated), and for a signature-protected request the signer
// certificate in signer_cert (so certConf can be verified with the same certificate when it
// carries no extraCerts). The spans borrow from the request.
void srv_enrol_txn_note(srv_request *req, store_txn *t);

#endif // CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H
