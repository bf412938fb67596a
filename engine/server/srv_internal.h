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
//   srv_nested.c   nested (an RA's batch): inner requests, their joint HSM and store submissions
//   srv_pool.c     the threads that verify a batch's inner requests (nested_threads)
//   srv_crl.c      CRLs
//   srv_pending.c  delayed delivery: the waiting decision (load, approval), the waiting answer,
//                  the drain that signs and records what waits
//   srv_poll.c     pollReq
//   srv_ccr.c      ccr (cross-certification)
//   srv_budget.c   what unauthenticated senders may cost: MAC-failure back-off per senderKID
//                  and per peer address, error signatures per peer (issue 23)
//   srv_kdf.c      the KDF worker pool: PBM and PBMAC1 verification off the I/O loops
//   srv_resend.c   the retransmission cache: a resent request gets the answer again
//   srv_ckg.c      central key generation, encrCert and encryptedKey proofs of possession
#ifndef CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H
#define CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H

#include <pthread.h>

#include "engine/server/srv.h"

#define SRV_NONCE_LEN             16u
#define SRV_DEFAULT_ARENA_CAP     ((size_t)1 << 20)
#define SRV_ARENA_BLOCK           ((size_t)16 * 1024)
#define SRV_DEFAULT_FREE_REQUESTS 64u
#define SRV_MAX_EXTRA_OUT         (2 * CA_MAX_CHAIN + 2)
#define SRV_NUM_BODY_TYPES        (CMP_BODY_POLL_REP + 1)
#define SRV_MAX_STORE_JOBS        3u
#define SRV_RESEND_KEY_LEN        32u // SHA-256

// The abuse limits' state (issue 23; their sections at the end of this file).
typedef struct srv_budget srv_budget;     // srv_budget.c
typedef struct srv_kdf_pool srv_kdf_pool; // srv_kdf.c
typedef struct srv_resend srv_resend;     // srv_resend.c

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
    SRV_TXN_FLAG_ENCR_CERT = 1u << 3, // the certificate went out encrypted: certConf is the POP
};

// What srv_ckg.c does for an enrolment (srv_ckg.kind).
typedef enum srv_ckg_kind {
    SRV_CKG_NONE = 0,      // a signature proof of possession (or raVerified): nothing
    SRV_CKG_KEYGEN,        // central key generation (RFC 9483 §4.1.6)
    SRV_CKG_ENCR_CERT,     // indirect POP: the certificate goes out encrypted to the key
    SRV_CKG_ENCRYPTED_KEY, // direct POP: the private key came encrypted to the CA (PWRI)
} srv_ckg_kind;

// srv_ckg is an enrolment's state for srv_ckg.c: the generated key and what the KGA's
// SignedData is made of while its signature is with the HSM, and the encrypted elements the
// response carries. The key, its package and every plaintext copy are wiped and freed as
// soon as the EnvelopedData is made, and by srv_ckg_cleanup whenever the request ends.
// Thread: confined to its request.
typedef struct srv_ckg {
    srv_ckg_kind kind;
    ca_key_use key_use;     // ENCR_CERT, ENCRYPTED_KEY: what the key does
    cmp_cms_recipient rcpt; // KEYGEN: who receives the key (spans borrow the request)
    EVP_PKEY *key;          // KEYGEN: the generated key
    uint8_t *package;       // KEYGEN: its AsymmetricKeyPackage (heap, wiped on free)
    size_t package_len;     //
    cmp_signed_data sd;     // KEYGEN: the KGA's SignedData while its signature is out
    cm_span certs[CMP_CMS_MAX_CERTS];
    cm_span attrs;          //   its signed attributes (what the HSM signs)
    bool kga_signing;       //   the KGA's signature is with the HSM
    cm_span private_key;    // KEYGEN: the response's privateKey [0] element (arena)
    cm_span encrypted_cert; // ENCR_CERT: the response's encryptedCert [1] element (arena)
} srv_ckg;

typedef enum srv_state {
    SRV_ST_NEW = 0,
    SRV_ST_SIGN_CERT, // the certificate's signature is with the HSM
    SRV_ST_STORE,     // records are with the store
    SRV_ST_UNDO,      // a store job undoing part of a failed batch is out (srv_undo_submit)
    SRV_ST_SIGN_RESP, // the response's protection is with the HSM
    SRV_ST_DONE,
    SRV_ST_NESTED, // a nested request waits for its inner requests (srv_nested.c)
    SRV_ST_KDF,    // the MAC's key derivation is with the KDF pool (srv_mac_begin)
} srv_state;

typedef struct srv_pool srv_pool;
typedef struct srv_nest srv_nest;

// What a waiting enrolment's record needs besides its row (store_pending.flags).
enum {
    SRV_PEND_FLAG_IMPLICIT = 1u << 0,        // implicitConfirm granted
    SRV_PEND_FLAG_REVOKE_REPLACED = 1u << 1, // a kur whose profile revokes the old certificate
};

// Why an enrolment waits (srv_request.wait).
typedef enum srv_wait {
    SRV_WAIT_NONE = 0,
    SRV_WAIT_LOAD,     // backpressure: answered waiting, drained as capacity frees
    SRV_WAIT_APPROVAL, // the profile's approval = manual
} srv_wait;

// srv_pending is the engine's delayed-delivery state (srv_pending.c): this node's queue of
// requests accepted under load, the drain thread, and the measurements the waiting decision
// reads. Thread: |mu| guards the queue and |stop|; |thread| and |running| are the owner's; the
// measurements and counters are atomics (relaxed), written by the drain and the workers.
typedef struct srv_pending {
    pthread_mutex_t mu;
    pthread_cond_t cv; // signalled when the queue grows or |stop| is set
    int64_t *queue;    // guarded_by(mu): ids of the rows accepted under load, a FIFO ring
    size_t cap;        // immutable: max_pending
    size_t head, num;  // guarded_by(mu)
    bool stop;         // guarded_by(mu)
    bool running;
    pthread_t thread;
    // The waiting decision's inputs (srv_pending_decide), measured by the drain every 100 ms.
    uint32_t max_hsm_queue;    // in force; UINT32_MAX until measured (auto)
    uint32_t commit_us;        // the store's mean commit time over the last window
    uint64_t hsm_rate_milli;   // signatures per second (x 1000) the pool drains when busy
    uint64_t drain_rate_milli; // waiting requests per second (x 1000) the drain finishes
    uint64_t waiting;          // places taken in the queue (the bound of max_pending)
    uint64_t accepted, refused, drained, polls, delivered; // srv_pending_stats
} srv_pending;


// srv_kdf_job is one MAC verification (cmp_protect_verify_mac), embedded in its request. The
// pool owns it between submit and completion. Thread: as hsm_job.
typedef struct srv_kdf_job {
    cm_cq_node node; // must stay first; kind CM_CQ_KIND_KDF_JOB
    struct srv_kdf_job *qnext;
    cm_cq *cq;
    const cmp_protect_ctx *prot;
    cmp_mac_key *key; // out: the key, ready for the response (cleansed on failure)
    cm_span alg;      // the protectionAlg element
    cm_span secret;
    cmp_secret_kind kind;
    cm_span protected_part;
    cm_span protection;
    uint8_t unused_bits;
    void *user;
    cm_result result; // out
    cm_why why;       // out: why it failed
} srv_kdf_job;

// Thread: immutable after srv_engine_new (the pool, the budgets and the cache lock themselves;
// |pend| points at mutable, self-locked state).
struct srv_engine {
    srv_params p;
    srv_pool *pool; // the nested_threads verification threads; NULL: none (srv_pool.c)
    srv_pending *pend;
    // Abuse limits (issue 23); each NULL when srv_params leaves it off.
    srv_kdf_pool *kdf;      // PBM/PBMAC1 verification (NULL: inline)
    srv_budget *budget;     // MAC-failure back-off and error signatures
    size_t *kid_base;       // per CA: the budget's index of its first secret
    srv_resend *resend;     // the retransmission cache
    uint64_t n_kdf_refused; // atomic: refused with SRV_E_KDF_BUSY
    uint64_t n_kdf_inline;  // atomic: PBM/PBMAC1 checked on the I/O thread (kdf_inline)
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
    srv_worker_stats stats;
    uint32_t tasks_out;      // this worker's inner requests with the verification threads (atomic)
    bool (*busy)(void *arg); // srv_worker_set_busy; NULL: idle
    void *busy_arg;
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

    // Central key generation and the proofs of possession of keys that cannot sign (issue
    // 19, srv_ckg.c); |pvno3|: the response carries an EnvelopedData, so it is pvno 3
    // (cmp2021, RFC 9810 §7; set by srv_enrol_respond).
    srv_ckg ckg;
    bool pvno3;

    // Nested messages (issue 16, srv_nested.c). An inner message is a request of its own with
    // |parent| set: it runs exactly like one that arrived alone, except that its HSM and store
    // submissions are parked (|parked|: srv_sign_submit, srv_store_submit, srv_undo_submit set
    // its state and jobs as usual, but submit nothing) and |root|, the outermost nested
    // request, submits what all its inner requests parked together once none of them is
    // running or waiting (srv_nested_event). Completions still come to the request's own jobs.
    srv_request *parent;    // the nested request this is an inner message of; NULL: none
    srv_request *root;      // the outermost nested request above it; NULL: none
    srv_nest *nest;         // a nested request's batch (in its arena); NULL otherwise
    uint32_t depth;         // nesting level of the message: 0 outermost, 1 inside one nested ...
    bool parked;            // it parked jobs the root has not taken yet
    bool in_pool;           // a verification thread runs it (|w| is that thread's worker)
    bool deferred;          // the pool parsed a nested body: its start runs on the origin thread
    bool vouched;           // unprotected, authenticated by the enclosing RA (srv_nested_vouch)
    bool counted;           // its answer was counted by its parent
    bool force_sig;         // the response is signed even after a verified MAC (a nested answer)
    size_t resp_hint;       // the response's expected size (0: srv_respond's default)
    store_job *park_job;    // the parked undo job (srv_undo_submit)
    srv_request *park_next; // the root's list of parked requests
    srv_request *task_next; // the verification pool's queue
    cm_cq_node task;        // comes back to the origin thread's cq (CM_CQ_KIND_SRV_TASK)
    // Delayed delivery (issue 16; srv_pending.c, srv_poll.c).
    srv_wait wait;         // why this enrolment waits (SRV_WAIT_NONE: it does not)
    bool wait_place;       // it holds a place in the engine's queue (srv_pending_decide)
    store_reservation rsv; // a waiting enrolment's reservation (its PENDING_ADD's)
    store_pending pend;    // pollReq: the row polled
    bool have_txn;         // pollReq: req->txn was read
    // Abuse limits (issue 23).
    uint8_t peer[SRV_PEER_KEY_LEN]; // the sender's address key (srv_request_set_peer); zero:
                                    //   unknown (every unknown sender shares one budget)
    srv_kdf_job kjob;               // the MAC's key derivation (SRV_ST_KDF)
    const srv_secret *kdf_secret;   //   for the secret senderKID named
    bool kdf_done;                  // kjob came back: srv_authenticate_mac uses its verdict
    bool mac_noted;                 // the MAC's outcome went into the budget
    bool failing;                   // srv_fail is answering (the error-signature budget)
    bool resent;                    // answered from the retransmission cache
    bool resend_key_set;            // resend_key holds the request's key
    uint8_t resend_key[SRV_RESEND_KEY_LEN];
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

// srv_sign_refused answers for |req| when its signature for |next| could not be queued (|r|,
// the pool's refusal): a response is MAC-protected instead when it can be, else sent
// unprotected; a certificate's refusal goes to the handler's sign_failed or is answered.
// srv_sign_submit and the nested batch's joint submission (srv_nested.c) share it.
void srv_sign_refused(srv_request *req, cm_result r, srv_state next);

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
// refusal of an ir/cr/p10cr/kur/ccr/rr's content (req->content_stage set, and a code that is
// not about the message as a whole) goes into the matching ip/cp/kup/ccp (one CertResponse) or rp
// (one PKIStatusInfo); everything else into an error message (RFC 9810 §5.3.21).
void srv_fail(srv_request *req, cm_result r);

// srv_rejects_content reports whether srv_fail answers |r| in the request's own response type
// rather than an error message: the message passed its checks as a whole
// (req->content_stage), the body is ir, cr, p10cr, kur, ccr or rr, and |r| is neither a server
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

// srv_authenticate_listed verifies a signature-protected message whose signer must be one of
// |certs| (DER), trusted as itself with no chain (a cross-certification requester: another CA's
// certificate): the signature by extraCerts[0], the sender and senderKID rules of
// srv_authenticate, and, when the signer is listed (|*out_listed|), its validity now, after
// which sig_ok and the signer fields are set. An unlisted signer is CM_OK with |*out_listed|
// false and req->signer filled for the caller's reason. Fails as srv_authenticate does.
CM_RESULT srv_authenticate_listed(srv_request *req, const cm_span *certs, size_t num_certs,
                                  bool *out_listed);

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
void srv_nested_start(srv_request *req);  // nested (srv_nested.c)

// ---------------------------------------------------------------------------------------------
// Nested messages (srv_nested.c, srv_pool.c)

// srv_nested_vouch authenticates an unprotected inner message by the RA that protected the
// nested message around it (RFC 9483 §5.2.2.1): the request then stands as if the RA had
// protected it itself: its signer is the RA certificate (an RA valid as one), or its MAC
// credential is the RA's secret (senderKID, key and limits; the response is MAC-protected
// with it). Fails with SRV_E_UNPROTECTED outside a nested message. srv_authenticate calls it
// for every unprotected message with a parent.
CM_RESULT srv_nested_vouch(srv_request *req);

// srv_nested_event continues the batch of inner request |req| after it ran on the worker's
// thread (one of its jobs came back, or the pool returned it): takes what it parked, answers
// a nested request whose inner requests are all answered, and when nothing of the batch is
// running or out any more, submits everything parked: all HSM jobs in one hsm_pool_submit,
// all store jobs in one store_submit_batch. Returns the root when its response is ready,
// else NULL. Thread: the root's worker's.
srv_request *srv_nested_event(srv_request *req);

// srv_nested_task_back takes back inner request |req| from the verification pool (its cq node
// |req->task| came back): a deferred nested body starts now; then as srv_nested_event.
srv_request *srv_nested_task_back(srv_request *req);

// srv_nested_free_children frees the inner requests of nested request |req| (all answered).
void srv_nested_free_children(srv_request *req);

// srv_pool_new starts |n| verification threads for |e|, each with its own worker (crypto
// contexts and a store reader; no cq: an inner request's jobs are parked, never submitted
// there). Fails with CM_E_NOMEM, or the worker's code. Thread: start-up.
CM_RESULT srv_pool_new(srv_pool **out, srv_engine *e, uint32_t n);

// srv_pool_free stops and joins the threads (none may hold a request any more); NULL is a
// no-op.
void srv_pool_free(srv_pool *p);

// srv_pool_submit hands the |n| inner requests of |reqs| (their |der| and |ca| set, |w| their
// origin worker) to the threads, under one lock: each runs srv_request_start there with the
// thread's worker in |w|, gets its origin worker back and comes home through that worker's cq
// as |task| (CM_CQ_KIND_SRV_TASK). Never fails. Thread: any.
void srv_pool_submit(srv_pool *p, srv_request *const *reqs, size_t n);
void srv_poll_start(srv_request *req);   // pollReq (srv_poll.c)
void srv_poll_respond(srv_request *req); //   its delivery committed
void srv_ccr_start(srv_request *req);    // ccr (srv_ccr.c)
// ---------------------------------------------------------------------------------------------
// Central key generation and the encryption-based proofs of possession (srv_ckg.c)

// srv_ckg_key_use returns what the key of |msg| proves possession as: CA_KEY_USE_ENCIPHER for
// a keyEncipherment POPO, CA_KEY_USE_AGREE for keyAgreement, CA_KEY_USE_SIGN otherwise (the
// key the content rules check it against: srv_enrol_check).
ca_key_use srv_ckg_key_use(const crmf_cert_req_msg *msg);

// srv_ckg_classify decides what srv_ckg.c does for the one CertReqMsg |msg| of an ir/cr/kur
// (req->ckg.kind): a template without a public key (or with an algorithm and an empty key) and
// no POPO asks for central key generation, refused with SRV_E_CKG_OFF unless the profile
// allows it; with central_keygen = required any other request is SRV_E_CKG_REQUIRED; a
// keyEncipherment/keyAgreement POPO is subsequentMessage encrCert or encryptedKey, and every
// other such POPO (challengeResp, agreeMAC, the deprecated thisMessage and dhMAC) is
// SRV_E_POP_METHOD with a reason saying what to send instead. SRV_CKG_NONE leaves the POPO to
// crmf_popo_verify.
CM_RESULT srv_ckg_classify(srv_request *req, const crmf_cert_req_msg *msg);

// srv_ckg_prepare does what the request's kind needs before the reservation and sets
// req->creq.spki and key_use: KEYGEN checks the KGA, the key type (SRV_E_CKG_KEY_TYPE) and the
// requester's credential (a MAC secret of central_keygen_min_secret octets: PWRI; a signer
// certificate whose key can transport (RSA, KTRI) or agree (EC, KARI) keys and whose keyUsage
// allows it: SRV_E_CKG_RECIPIENT otherwise, as for an RA) and only then generates the key;
// ENCRYPTED_KEY decrypts the POPO's EnvelopedData with the request's shared secret (PBKDF2
// within the protection limits) and checks the private key is the template's; ENCR_CERT checks
// the key can receive the certificate.
CM_RESULT srv_ckg_prepare(srv_request *req, const crmf_cert_req_msg *msg);

// srv_ckg_after_cert runs once the certificate is assembled (req->cert): KEYGEN packages the
// key and hands the KGA's SignedData to the HSM (|*out_submitted|: the request continues in
// srv_enrol_record when the signature is back, with ckg.kga_signing set); ENCR_CERT encrypts
// the certificate to its own key. A failure leaves nothing submitted.
CM_RESULT srv_ckg_after_cert(srv_request *req, bool *out_submitted);

// srv_ckg_after_kga completes the KGA's SignedData with the HSM's signature and encrypts it to
// the requester into ckg.private_key, then wipes and frees the key and its copies.
CM_RESULT srv_ckg_after_kga(srv_request *req);

// srv_ckg_may_wait is called when the request would wait (|wait|: for an operator's approval or
// under load): a waiting request is signed and delivered later from the store, which never
// holds a centrally generated key, and would hand out an encrCert's certificate in clear, so
// those two are refused with SRV_E_CKG_WAIT and a reason (encryptedKey may wait).
CM_RESULT srv_ckg_may_wait(srv_request *req, srv_wait wait);

// srv_ckg_cleanup wipes and frees whatever key material the request still holds (idempotent;
// srv_request_free calls it).
void srv_ckg_cleanup(srv_request *req);

// srv_enrol_sign_failed is the enrolment's srv_handler.sign_failed (srv_enrol.c): the
// certificate could not be signed, so its reservation is given back (STORE_OP_TXN_UNRESERVE,
// through srv_undo_submit) and |r| answered once that is back. Returns false outside the
// signing phase (nothing reserved to give back).
bool srv_enrol_sign_failed(srv_request *req, cm_result r);

// srv_enrol_proceed continues an enrolment whose request passed every check (ir, cr, kur,
// p10cr: srv_enrol_start; ccr: srv_ccr.c): the store's free-space check, the waiting decision
// (srv_pending_decide), then the reservation (or, when it waits, the reservation and its
// pending row: STORE_OP_PENDING_ADD). Answers the request itself on a refusal.
void srv_enrol_proceed(srv_request *req);

// srv_enrol_collect_exts reads a template's or a CSR's Extensions content into req->exts and
// points req->creq at them: CM_E_DER_TOO_MANY over CA_MAX_REQ_EXTS, the reader's code when
// malformed.
CM_RESULT srv_enrol_collect_exts(srv_request *req, cm_span ext_content);

// srv_txn_authenticate checks that a message continuing the transaction in req->txn (certConf,
// pollReq) is protected like the request that opened it: the same kind of protection (a MAC of
// the same kind, or a signature: wrongIntegrity otherwise) and the same credential (the
// senderKID, or the certificate that signed the request, which the transaction keeps, so the
// message may come without extraCerts). |issued| (may be empty) is the certificate the
// transaction issued: a signature by it is refused. srv_conf.c; the reasons name the
// message's body type.
CM_RESULT srv_txn_authenticate(srv_request *req, cm_span issued);

// ---------------------------------------------------------------------------------------------
// Delayed delivery (srv_pending.c)

// srv_pending_new allocates the engine's state for |p| (the queue holds p->max_pending ids);
// srv_pending_free stops the drain and releases it (NULL: no-op).
CM_RESULT srv_pending_new(srv_pending **out, const srv_params *p);
void srv_pending_free(srv_pending *pd);

// srv_pending_decide decides whether the enrolment |req| (checked, its profile chosen) waits:
// SRV_WAIT_APPROVAL under a profile with manual approval; SRV_WAIT_LOAD when the HSM queue is
// deeper than its bound or the store's commits are slower than theirs, taking a place in the
// engine's queue (SRV_E_PENDING_FULL, with a reason, when max_pending are taken); else
// SRV_WAIT_NONE. Thread: the worker's (one hsm_pool_depth: a lock).
CM_RESULT srv_pending_decide(srv_request *req, srv_wait *out);

// srv_pending_cancel gives back the place srv_pending_decide took when the request does not
// wait after all (its PENDING_ADD was refused). Idempotent.
void srv_pending_cancel(srv_request *req);

// srv_pending_fill makes |j| the PENDING_ADD of the waiting enrolment |req|: its reservation
// |rsv| (filled by the caller, copied into req->rsv), its TBSCertificate (req->tbs), and what
// the listing and the record need.
void srv_pending_fill(srv_request *req, store_job *j, const store_reservation *rsv);

// srv_pending_accepted answers the enrolment whose PENDING_ADD committed (req->sjobs[0]):
// queued on this node when it waits under load, then `waiting` in the request's own response
// type (one CertResponse with its certReqId) with a statusString saying why and when to poll.
void srv_pending_accepted(srv_request *req);

// srv_pending_check_after returns the checkAfter (seconds) for a row waiting |why|: for load
// the time this node's queue takes to drain at the measured rate (at least 1 s), for approval
// srv_params.approval_check_after.
int64_t srv_pending_check_after(const srv_engine *e, store_pending_why why);

// srv_pending_key_text writes the key type of SubjectPublicKeyInfo |spki| for listings ("EC
// P-256", "RSA 2048", "Ed25519") into |buf|; returns it ("unknown" when unreadable).
const char *srv_pending_key_text(char *buf, size_t cap, cm_span spki);

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

// ---------------------------------------------------------------------------------------------
// What unauthenticated senders may cost (srv_budget.c, issue 23)
//
// Two budgets, both engine-wide (every loop, the CoAP thread) under one mutex, all O(1):
//   - MAC failures: a MAC that does not verify counts against its senderKID (the configured
//     secret it names) and against the peer address it came from. mac_failures_max of them
//     within mac_failure_window puts that senderKID, and separately that address, in back-off
//     for mac_failure_backoff: its MAC-protected requests are then refused (SRV_E_MAC_BACKOFF)
//     before any key derivation. A correct MAC cannot be told from a wrong one without the
//     derivation, so a senderKID in back-off refuses correct MACs too; otherwise the back-off
//     would cost the attacker nothing and the server all its KDF work. What keeps the device
//     that owns a senderKID working while someone else guesses at it is the pair exemption: an
//     address from which the senderKID authenticated (the last SRV_BUDGET_GOOD_PEERS of them;
//     a wrong MAC from that address for that senderKID drops it) is exempt from both back-offs
//     for that senderKID. Only a correct MAC makes a pair good, so an attacker gains nothing
//     from it, and one behind the same address as the device costs at most one KDF run per
//     good pair before the exemption is gone.
//   - Error signatures: the error answer to a message that cannot be parsed or authenticated
//     is signed by the CMP key (an HSM signature) at most error_signatures_per_peer times a
//     second per address (a token bucket one second deep); beyond that it goes out without
//     protection (srv_respond).
// Peers are keyed like engine/net's per-peer cap: the IPv4 address (as IPv4-mapped IPv6), or
// the IPv6 /64. The peer table is fixed-size (nothing an unauthenticated sender does grows
// memory): open addressing over a seeded hash with a probe window of SRV_BUDGET_PROBE slots;
// a new address takes a free slot of its window, else the least recently seen entry that is
// not in back-off, else the least recently seen one (counted as evicted).

#define SRV_BUDGET_GOOD_PEERS    4u    // exempt addresses remembered per senderKID
#define SRV_BUDGET_PROBE         8u    // peer table probe window
#define SRV_BUDGET_DEFAULT_PEERS 8192u // peer table slots (a power of two)

// srv_budget_params: the limits. Thread: value type.
typedef struct srv_budget_params {
    uint32_t mac_failures_max;          // 0: no back-off
    uint64_t mac_failure_window_ms;     // failures older than this are forgotten
    uint64_t mac_failure_backoff_ms;    // how long a back-off lasts
    uint32_t error_signatures_per_peer; // per second; 0: no limit
    uint32_t peer_slots;                // 0: SRV_BUDGET_DEFAULT_PEERS (rounded up to 2^k)
} srv_budget_params;

// srv_mac_gate is what srv_budget_mac_check decides for a MAC-protected request.
typedef enum srv_mac_gate {
    SRV_MAC_GO = 0,       // check the MAC
    SRV_MAC_KID_BACKOFF,  // refuse: its senderKID is in back-off
    SRV_MAC_PEER_BACKOFF, // refuse: its address is in back-off
} srv_mac_gate;

// srv_budget_stats: what the budgets did. Thread: value type.
typedef struct srv_budget_stats {
    uint64_t refused_kid;       // requests refused because their senderKID was in back-off
    uint64_t refused_peer;      // ... because their address was
    uint64_t backoffs_kid;      // back-offs started, per senderKID
    uint64_t backoffs_peer;     // ... per address
    uint64_t error_signed;      // error answers to unauthenticated messages signed
    uint64_t error_unprotected; // ... sent without protection (over the budget)
    uint64_t peers_evicted;     // peer entries taken over by another address
    uint64_t peers_tracked;     // peer entries in use now
} srv_budget_stats;

// srv_budget (typedef at the top) is the state above. Thread: locked by its mutex; every
// function may be called from any thread.

// srv_budget_new makes the budgets for |num_kids| senderKIDs (the caller numbers the
// configured secrets 0 .. num_kids-1) with |p| (copied). CM_E_NOMEM, or CM_E_INVALID_ARG for
// a zero window or back-off while mac_failures_max is set. Thread: start-up.
CM_RESULT srv_budget_new(srv_budget **out, const srv_budget_params *p, size_t num_kids);

// srv_budget_free releases |b| (NULL: no-op).
void srv_budget_free(srv_budget *b);

// srv_budget_mac_check decides whether a MAC-protected request naming senderKID |kid| from
// address |peer| (SRV_PEER_KEY_LEN octets) may have its MAC checked at |now_ms| (monotonic).
// A refusal is counted, and |*out_wait_ms| says how long the back-off still lasts (0 for GO).
// |*out_good| (when not NULL) says whether |peer| is a good address of |kid|: a MAC of its
// verified there and none failed since (the addresses exempt from the back-offs; kdf_inline).
// Adds nothing to the tables.
srv_mac_gate srv_budget_mac_check(srv_budget *b, size_t kid, const uint8_t *peer, uint64_t now_ms,
                                  uint64_t *out_wait_ms, bool *out_good);

// srv_budget_mac_outcome records that the MAC of a request naming |kid| from |peer| verified
// (|ok|: the pair becomes good) or did not (counted against both, which may start their
// back-offs; the pair is no longer good).
void srv_budget_mac_outcome(srv_budget *b, size_t kid, const uint8_t *peer, bool ok,
                            uint64_t now_ms);

// srv_budget_error_signature takes one error signature from |peer|'s budget at |now_ms|: true
// when it may be signed (always without a limit), false when the error goes out unprotected.
// Counted either way.
bool srv_budget_error_signature(srv_budget *b, const uint8_t *peer, uint64_t now_ms);

// srv_budget_get_stats copies the counters. Thread: any.
void srv_budget_get_stats(srv_budget *b, srv_budget_stats *out);

// srv_budget_params_get returns the limits |b| was made with.
const srv_budget_params *srv_budget_params_get(const srv_budget *b);

// ---------------------------------------------------------------------------------------------
// The KDF worker pool (srv_kdf.c, issue 23)
//
// PBM and PBMAC1 derive a key from the password before the MAC can be checked: up to
// max_pbm_iterations digests or max_pbmac1_iterations HMACs, paid before the sender is known
// to hold the secret. That work runs on a few threads of its own (cm-kdf0 ...), never on an I/O
// loop, so a stream of forged MACs cannot delay the other connections' requests. Like the HSM
// pool: one queue (mutex + condition variable) bounded at max_queue waiting jobs (one more is
// refused at once with SRV_E_KDF_BUSY, systemUnavail, without KDF work), workers take one job
// at a time, and a finished job comes back through the submitter's cm_cq as a node of kind
// CM_CQ_KIND_KDF_JOB. Key-based MACs cost microseconds and stay inline. srv_kdf_job is
// defined with the request, which embeds it.

// srv_kdf_pool_new starts |threads| workers (1..64) with a queue of at most |max_queue| (>= 1)
// waiting jobs. CM_E_INVALID_ARG, CM_E_NOMEM or an IO-class code when a thread cannot start
// (nothing is left running then). Thread: start-up.
CM_RESULT srv_kdf_pool_new(srv_kdf_pool **out, uint32_t threads, uint32_t max_queue);

// srv_kdf_pool_free stops the workers: queued jobs complete with SRV_E_KDF_BUSY, a job a worker
// holds completes normally, then the threads are joined. NULL is a no-op. Thread: not a worker.
void srv_kdf_pool_free(srv_kdf_pool *p);

// srv_kdf_pool_submit queues |j|: SRV_E_KDF_BUSY when max_queue jobs wait already (|j| is then
// not queued and stays the caller's). Thread: any.
CM_RESULT srv_kdf_pool_submit(srv_kdf_pool *p, srv_kdf_job *j);

// srv_kdf_pool_depth returns the jobs waiting for a worker now. Thread: any.
size_t srv_kdf_pool_depth(srv_kdf_pool *p);

// srv_kdf_pool_max_queue returns the queue bound.
uint32_t srv_kdf_pool_max_queue(const srv_kdf_pool *p);

// srv_kdf_pool_done returns how many jobs the workers finished. Thread: any (relaxed).
uint64_t srv_kdf_pool_done(srv_kdf_pool *p);

// ---------------------------------------------------------------------------------------------
// The retransmission cache (srv_resend.c, issue 23)
//
// A client whose answer was lost (its connection dropped) sends the same request again; a
// request byte for byte identical to one answered (same transactionID, senderNonce and
// protection) gets the stored answer again instead of a second certificate or
// transactionIdInUse. Keyed by SHA-256 over the CA's name and the request's DER; holding the
// response's DER. Filled only after the protected answer to an authenticated request was
// built (srv_finish_response), so nothing an unauthenticated sender sends is kept. Not kept:
// transactionIdInUse answers (a byte-identical request refused as in use is a resend of one
// still in flight, whose own answer is the one to keep) and answers to server failures
// (resource, HSM, store: a retry may succeed). The first answer kept for a key stays until it
// expires or is evicted. Bounded by entries and bytes: the oldest entry goes first. One mutex,
// engine-wide.

#define SRV_RESEND_DEFAULT_ENTRIES 65536u
#define SRV_RESEND_DEFAULT_BYTES   ((size_t)64 << 20)
#define SRV_RESEND_IMPLICIT_WINDOW_S \
    300 // the default window for all but ip/cp/kup waiting
        //   for certConf (those: confirm_wait_time)


// srv_resend_stats: the cache's counters and size. Thread: value type.
typedef struct srv_resend_stats {
    uint64_t hits;    // requests answered from the cache
    uint64_t stored;  // answers put in
    uint64_t evicted; // answers dropped for room before they expired
    uint64_t entries; // answers held now
    uint64_t bytes;   // their size, with the entries' own
} srv_resend_stats;

// srv_resend_new makes a cache of at most |max_entries| answers and |max_bytes| bytes (each
// entry counts its response and its own struct). CM_E_NOMEM, CM_E_INVALID_ARG for zero
// bounds. Thread: start-up.
CM_RESULT srv_resend_new(srv_resend **out, size_t max_entries, size_t max_bytes);

// srv_resend_free releases the cache (NULL: no-op).
void srv_resend_free(srv_resend *c);

// srv_resend_get looks |key| up at |now_ms|: when a live answer is held it is copied into
// |arena| (|*out|), with the failure bit and code it was sent with, and true is returned;
// false when none is (or the arena is full). Thread: any.
bool srv_resend_get(srv_resend *c, const uint8_t key[SRV_RESEND_KEY_LEN], uint64_t now_ms,
                    cm_arena *arena, cm_span *out, int *out_fail_bit, cm_result *out_error);

// srv_resend_put keeps a copy of |rsp| under |key| until |expires_ms| (the first answer for a
// key wins while it lives), evicting the oldest entries while over a bound. An answer larger
// than the byte bound, or no memory, is simply not kept. Thread: any.
void srv_resend_put(srv_resend *c, const uint8_t key[SRV_RESEND_KEY_LEN], uint64_t expires_ms,
                    cm_span rsp, int fail_bit, cm_result error);

// srv_resend_get_stats copies the counters. Thread: any.
void srv_resend_get_stats(srv_resend *c, srv_resend_stats *out);

// ---------------------------------------------------------------------------------------------
// Where the engine applies them (srv_auth.c, srv.c, srv_respond.c)

// srv_now_ms is the monotonic clock in milliseconds, the budgets' and the cache's time.
static inline uint64_t srv_now_ms(void)
{
    return cm_time_mono_ns() / 1000000u;
}

// srv_mac_begin runs before the handler of a MAC-protected message whose senderKID names a
// configured secret: the back-off gate (refused: srv_fail with SRV_E_MAC_BACKOFF), then for PBM
// and PBMAC1 with a KDF pool the verification is handed to the pool (SRV_ST_KDF; refused when
// its queue is full: SRV_E_KDF_BUSY). Returns true when the handler should start now (no MAC,
// another protection, a key-based MAC, no pool: the handler's srv_authenticate checks it
// inline), false when the request was answered or waits for the pool.
bool srv_mac_begin(srv_request *req);

// srv_mac_end takes the KDF pool's verdict back into the request (req->kdf_done; the handler's
// srv_authenticate then uses it) and records it in the budget.
void srv_mac_end(srv_request *req);

// srv_resend_lookup answers a request from the retransmission cache (true: the response is
// ready) after computing its key; false when the cache is off or holds no answer for it.
bool srv_resend_lookup(srv_request *req);

// srv_resend_keep puts the request's finished, protected response into the cache when it may be
// kept (see the cache's rules above). Called by srv_finish_response.
void srv_resend_keep(srv_request *req);

#endif // CERTMINT_ENGINE_SERVER_SRV_INTERNAL_H
