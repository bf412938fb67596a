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

// Transaction states kept in the store (store_txn.state): the low byte is one of these, the
// bits above are SRV_TXN_FLAG_*; read the state with SRV_TXN_STATE.
enum {
    SRV_TXN_WAIT_CONF = 1, // a certificate waits for certConf
    SRV_TXN_IMPLICIT = 2,  // issued with implicitConfirm: nothing more to come
    SRV_TXN_CONFIRMED = 3, // certConf accepted it
    SRV_TXN_REJECTED = 4,  // certConf rejected it (revoked)
};

// What certConf must match (srv_enrol_txn_note, srv_conf.c): the request was a p10cr (its
// certReqId is -1), the request's MAC was PBMAC1 or a key-based MAC (neither: PasswordBasedMac).
enum {
    SRV_TXN_FLAG_P10CR = 1u << 8,
    SRV_TXN_FLAG_PBMAC1 = 1u << 9,
    SRV_TXN_FLAG_KEY_MAC = 1u << 10,
};
#define SRV_TXN_STATE(s) ((uint32_t)(s)&0xffu)

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
    bool mac_ok;           // the MAC verified with mac_key
    cmp_mac_key mac_key;   // kept for the response (same salt and parameters); secret
    bool sig_ok;           // the signature verified with signer_cert
    bool signer_is_ra;     // signer_cert is one of the CA's configured RA certificates
    cm_span signer_cert;   // extraCerts[0]
    ca_cert_fields signer; // its fields, once sig_ok
    uint8_t signer_hash[32];

    // Issuance.
    bool implicit;
    int64_t cert_req_id;
    cmp_body_type resp_type;
    ca_request creq;
    ca_decision dec;
    ca_ext exts[CA_MAX_REQ_EXTS];
    uint8_t serial[CA_SERIAL_LEN];
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
    cm_result error;
    int fail_bit;
    cm_why why; // the refusal's specifics, set by the step that refused (base.h's convention)
    uint64_t mark[SRV_STAGE_COUNT + 1]; // monotonic ns at the start and the end of each stage
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

// srv_authenticate verifies the protection: a MAC with the secret named by senderKID, or a
// signature by extraCerts[0], whose subject must be the sender and whose chain must reach
// |trust| or |trust2| (either may be NULL) unless it is a configured RA certificate.
CM_RESULT srv_authenticate(srv_request *req, ca_trust *trust, ca_trust *trust2);

// ---------------------------------------------------------------------------------------------
// Body handlers (one file each)

void srv_enrol_start(srv_request *req);   // ir, cr, kur, p10cr (srv_enrol.c)
void srv_enrol_record(srv_request *req);  //   the certificate is signed
void srv_enrol_respond(srv_request *req); //   its records committed
bool srv_enrol_store_failed(srv_request *req, size_t i, cm_result r);
void srv_conf_start(srv_request *req);   // certConf (srv_conf.c)
void srv_conf_respond(srv_request *req); //   its records committed
void srv_rr_start(srv_request *req);     // rr (srv_rr.c)
void srv_rr_respond(srv_request *req);   //   the revocation committed
void srv_genm_start(srv_request *req);   // genm (srv_genm.c)

// ---------------------------------------------------------------------------------------------
// Request content rules (srv_enrol_check.c, RFC 9483 §4.1)

// srv_enrol_check applies the content rules of an authenticated ir, cr, kur or p10cr before
// any expensive work (it runs before POPO verification): sets req->content_stage; then kur
// protected by a MAC (wrongIntegrity); exactly one CertReqMsg with certReqId 0; the key
// type and size the profile allows (parsed, not built); raVerified only from a configured
// RA, and an original message forwarded in origPKIMessage that backs it; a kur's oldCertID
// naming a certificate of this CA that the store knows (badCertId). Fails with the rule's
// code and a reason in req->why. One store read for a kur with oldCertID; one signature
// check per signed original message.
CM_RESULT srv_enrol_check(srv_request *req);

// srv_enrol_check_status turns the accepted status of the response being built into
// grantedWithMods, with a statusString saying what changed, when the CA issued something
// other than what was asked (req->dec.mods: validity capped, extensions replaced by the
// profile's). The string lives in the request's arena.
void srv_enrol_check_status(srv_request *req, cmp_status_info *st);

// srv_enrol_txn_note completes the transaction row |t| for certConf (srv_conf.c): the
// SRV_TXN_FLAG_* of the request in the state, the request's senderNonce after the server's
// in sender_nonce (so certConf can refuse it repeated), and for a signature-protected
// request the signer certificate after its SHA-256 in credential (so certConf can be
// verified with the same certificate when it carries no extraCerts). Call it after the
// certificate record took the credential (its requester keeps the hash alone).
void srv_enrol_txn_note(srv_request *req, store_txn *t);

#endif // CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H
