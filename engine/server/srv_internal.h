// engine/server internals: the request, its states, the handler table and the functions the
// server's files share. Only for engine/server/*.c and its tests.
//
// Where things are:
//   srv.c          engine, workers, request lifecycle and recycling, the handler table,
//                  dispatch, HSM and store submission, completions
//   srv_respond.c  the response header and protection, error messages, extraCerts
//   srv_auth.c     header rules, MAC and signature authentication
//   srv_enrol.c    ir, cr, kur, p10cr
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

// Transaction states kept in the store (store_txn.state).
enum {
    SRV_TXN_WAIT_CONF = 1, // a certificate waits for certConf
    SRV_TXN_IMPLICIT = 2,  // issued with implicitConfirm: nothing more to come
    SRV_TXN_CONFIRMED = 3, // certConf accepted it
    SRV_TXN_REJECTED = 4,  // certConf rejected it (revoked)
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

// srv_fail answers |r| with an error message (RFC 9810 §5.3.21): status rejection, the failure
// bit of |r| (cm_code_failinfo) and as statusString the request's reason (req->why) when a
// step set one, else |r|'s registry explanation.
void srv_fail(srv_request *req, cm_result r);

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

#endif // CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H
