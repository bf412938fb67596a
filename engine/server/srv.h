// engine/server: the CMP request state machine — the heart of certmint.
//
// Given the DER of a PKIMessage for one CA, a request decides, builds, signs (through the HSM
// pool) and records (through the store) and produces the protected response. It is
// transport-agnostic: the front end hands it bytes and gets bytes back, tests drive it
// directly. CPU work runs to completion on the calling thread; the two kinds of blocking work
// (PKCS#11 signatures, durable writes) go to the HSM pool and the store and come back through
// the caller's completion queue, after which the caller continues the request with
// srv_worker_on_completion. A certificate reaches the response only after its record
// committed (DESIGN.md: nothing issued is lost).
//
// Flows: ir, cr, kur, p10cr, ccr (implicitConfirm when asked and allowed, else certConf →
// pkiconf; any of them may be answered `waiting` and collected with pollReq: delayed delivery),
// certConf, rr → rp (by the certificate's own key or a configured RA), genm → genp (caCerts,
// rootCaCert, certReqTemplate, crlStatusList and the other RFC 4210 types), error (from a
// client) → pkiconf, nested (from an RA: every inner message handled as if it came alone, the
// batch's signatures and records submitted together) → nested. Trust and authorization (issue 14):
// a certificate this instance issued authenticates only while the store has it VALID; an enrolment
// reserves its transactionID and serial in the store before the HSM signs, and the store applies
// key reuse, per-secret limits and one key update at a time atomically at that reservation. Every
// refusal carries the PKIFailureInfo bit (cm_code_failinfo) in an error message, or, for a refused
// request content, in the ip/cp/kup/rp (RFC 9483 §3.6.4), and a statusString that tells an operator
// what to fix: the request's specifics when they are known and safe to show ("key type P-521
// not allowed by profile devices (allowed: P-256, P-384)", "no MAC secret for senderKID
// line-9"), else the code's explanation from the registry; never a secret. It is
// MAC-protected with the request's key when the request's MAC verified, otherwise signed with
// the CA's CMP protection key.
#ifndef CERTMINT_ENGINE_SERVER_SRV_H
#define CERTMINT_ENGINE_SERVER_SRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "engine/ca/ca.h"
#include "engine/cmp/cmp.h"
#include "engine/der/der.h"
#include "engine/store/store.h"
#include "hsm/hsm.h"

// Codes (srv range 0x800-0x8ff): the SRV rows of engine/base/codes.def, with their
// explanations and PKIFailureInfo bits (cm_code_failinfo maps every code the server answers).
enum {
#define CM_CODES_SRV CM_CODE_ENUM
#include "engine/base/codes.def"
};

// srv_secret is one MAC credential: senderKID bytes, the shared secret and its kind (a
// password for PBM/PBMAC1, or a key for the key-based MACs; cmp_secret_kind), and what it may
// enrol (for both kinds). Thread: immutable.
typedef struct srv_secret {
    cm_span ref;
    cm_span secret;
    cmp_secret_kind kind;
    uint32_t max_certs;          // > 0: at most this many certificates at this CA (once: 1),
                                 //   counted atomically in the store at reservation (either kind)
    const char *subject_pattern; // NULL: any subject; else ca_subject_match on its RFC 4514 text
    bool ra;                     // marked for RA use (ra.REF = on): may protect nested messages
} srv_secret;

// Central key generation (RFC 9483 §4.1.6; srv_policy.central_keygen).
typedef enum srv_ckg_mode {
    SRV_CKG_OFF = 0,  // a request without a public key is refused (the default)
    SRV_CKG_ALLOWED,  // the CA generates the key when the request has none
    SRV_CKG_REQUIRED, // the CA generates every key: a request with a public key is refused
} srv_ckg_mode;

// The defaults of srv_policy's central key generation numbers when they are 0.
#define SRV_CKG_DEFAULT_MIN_SECRET     16u    // octets
#define SRV_CKG_DEFAULT_KDF_ITERATIONS 10000u // PBKDF2 iterations

// srv_policy is what a profile decides about trust and authorization (issue 14); the zero value
// is the safe default. Thread: value type.
typedef struct srv_policy {
    bool allow_key_reuse;      // a key this CA certified before may be certified again
    bool revoke_on_update;     // a completed kur revokes the old certificate (reason superseded)
    bool subject_from_request; // a certificate-signed cr/kur may request another subject
    bool manual_approval;      // approval = manual: every request waits for an operator
                               //   (certmint approve / reject) and is answered waiting
    // Central key generation (issue 19): whether the CA generates keys, of which CA_KEY_*
    // types (a subset of the profile's key types; a request naming none gets the first of
    // P-256, P-384, P-521, Ed25519, Ed448, RSA listed), and for a MAC-protected request, whose
    // key goes back under a password recipient: the shortest shared secret accepted (0:
    // SRV_CKG_DEFAULT_MIN_SECRET octets) and the PBKDF2 iteration count (0:
    // SRV_CKG_DEFAULT_KDF_ITERATIONS).
    srv_ckg_mode central_keygen;
    uint32_t central_key_types;
    uint32_t central_keygen_min_secret;
    uint32_t central_keygen_kdf_iterations;
} srv_policy;

// srv_profile is a profile a request may select with certProfile (RFC 9483 §3.1, id-it 21).
// Thread: immutable.
typedef struct srv_profile {
    const char *name;
    const ca_profile *profile;
    srv_policy policy;
} srv_profile;

// srv_ca describes one CA the server answers for. Everything it points at is owned by the
// caller, immutable and must outlive the engine. Thread: immutable after srv_engine_new.
typedef struct srv_ca {
    const char *name;              // [ca:NAME]; the store's CA key
    const ca_authority *authority; // the issuing CA certificate (+ chain to the root)
    const ca_profile *profile;     // what it issues
    const hsm_key *ca_key;         // signs certificates
    hsm_sig_alg ca_sig_alg;        //
    const ca_authority *cmp_cert;  // the CMP protection certificate (may equal authority)
    const hsm_key *cmp_key;        // signs CMP messages
    hsm_sig_alg cmp_sig_alg;       //
    const srv_secret *secrets;     // MAC credentials
    size_t num_secrets;            //
    ca_trust *client_trust;        // anchors for signature-protected ir/p10cr (may be NULL)
    ca_trust *own_trust;           // this CA as anchor: cr/kur/certConf signers (may be NULL)
    bool ca_pubs;                  // send the root in caPubs of an ip
    bool sign_mac_responses;       // answer MAC requests with signatures instead
    bool unprotected_genm;         // answer an unprotected genm for caCerts (bootstrap)
    const cm_span *ra_certs;       // RA certificates (DER) allowed to revoke for others and
    size_t num_ra_certs;           //   to send raVerified, while valid, not revoked (the store
                                   //   when this CA issued one, client_trust's CRLs otherwise)
                                   //   and with extended key usage id-kp-cmcRA
    bool ra_cmcra_optional;        // ra_require_cmcra = off: an RA certificate needs no cmcRA
    const char *profile_name;      // |profile|'s name (a certProfile may name it); may be NULL
    srv_policy policy;             // |profile|'s trust settings
    const srv_profile *profiles;   // further profiles a certProfile may select (clients'
    size_t num_profiles;           //   `profiles`)
    cm_span root_update[3];        // newWithNew, newWithOld, oldWithNew (len 0: none)
    int64_t crl_min_interval;      // seconds (see srv_crl_due)
    int64_t crl_validity;          // seconds
    // Cross-certification (issue 16, RFC 9810 §5.3.11): the CA certificates (DER) that may send
    // a ccr, signed with their own key and trusted as themselves, and the profile (a CA
    // profile) their cross-certificates are issued under. None: ccr is refused.
    const cm_span *cross_requesters;
    size_t num_cross_requesters;
    const srv_profile *cross_profile;
    // The CMP key may act as key generation authority (RFC 9483 §4.1.6): its certificate
    // carries id-kp-cmKGA, or is the CA's own. Central key generation is refused without it.
    bool kga;
} srv_ca;

// srv_params: the engine's collaborators and limits. Thread: immutable after srv_engine_new.
typedef struct srv_params {
    hsm_pool *hsm;
    store *store;
    const cmp_protect_ctx *prot;
    const srv_ca *cas;
    size_t num_cas;
    int64_t message_time_window; // seconds; 0 disables the messageTime check
    int64_t confirm_wait_time;   // seconds a certificate waits for certConf
    size_t arena_cap;            // per-request arena cap; 0 picks 1 MiB
    size_t free_requests;        // freed requests each worker keeps for reuse; 0 picks 64
    // The store's free-space watch: a new enrolment is refused (STORE_E_LOW_SPACE, after its
    // request is authenticated and checked, before any signing) while it reads below
    // store_min_free. NULL: no check.
    store_space *space;
    const crmf_alg_policy *prot_algs; // signatures a message may be protected with (NULL:
                                      //   the default; MACs: the cmp_protect_ctx's policy)
    const crmf_alg_policy *pop_algs;  // signatures a POPO may use (NULL: the default)
    // Nested messages (issue 16, RFC 9483 §5.2.2): how many levels are accepted (0, the zero
    // value: a nested message is refused), how many inner messages one request may carry at
    // all levels together (0 picks 256; at most CMP_MAX_NESTED_LIMIT), and how many threads
    // verify a batch's inner messages (0: the thread that received the batch does, one after
    // another). Fixed at srv_engine_new.
    uint32_t max_nested_depth;
    uint32_t max_nested_messages;
    uint32_t nested_threads;
    // Delayed delivery (issue 16; srv_pending.c). A new enrolment waits (it is answered
    // `waiting` and collected with pollReq) when the HSM pool's queue is deeper than
    // |max_hsm_queue| or the store's recent commits took longer than |max_commit_latency| ms,
    // unless |max_pending| enrolments wait on this node already (systemUnavail then); and
    // always under a profile with manual approval. A request that waited |waiting_timeout|
    // seconds is rejected.
    int64_t waiting_timeout;      // seconds; 0 picks 86400
    uint32_t max_hsm_queue;       // 0: what 100 ms of the pool's measured signing rate drains
    uint32_t max_commit_latency;  // ms; 0 picks 250
    uint32_t max_pending;         // 0 picks 10000
    int64_t approval_check_after; // seconds: the checkAfter while an operator decides; 0: 60
    // What unauthenticated senders may cost, and resends (issue 23). The zero values turn each
    // off, as tools and most tests want; certmintd sets them from its configuration.
    // PBM and PBMAC1 verification on |kdf_threads| threads of the engine's KDF pool with a
    // queue of |kdf_max_queue| waiting requests (over it: SRV_E_KDF_BUSY, systemUnavail); 0
    // threads: verified on the calling thread. 0 queue picks SRV_DEFAULT_KDF_QUEUE.
    uint32_t kdf_threads;
    uint32_t kdf_max_queue;
    // kdf_inline: a PBM or PBMAC1 MAC from a good address of its senderKID (srv_budget: one that
    // proved the secret, no wrong MAC since) is checked on the I/O thread while no MAC check
    // waits for a KDF thread and the thread has no other work waiting (srv_worker_set_busy),
    // saving the two hand-offs; anything else goes to the pool.
    bool kdf_inline;
    // mac_failures_max wrong MACs within mac_failure_window seconds for one senderKID, or from
    // one peer address (srv_request_set_peer), refuse its MAC-protected requests for
    // mac_failure_backoff seconds without key derivation (SRV_E_MAC_BACKOFF); 0: no back-off.
    uint32_t mac_failures_max;
    uint32_t mac_failure_window;
    uint32_t mac_failure_backoff;
    // HSM signatures per second and peer address for the error answers to messages that cannot
    // be parsed or authenticated; beyond it the error is sent unprotected. 0: no limit.
    uint32_t error_signatures_per_peer;
    // The retransmission cache: how long an answer is kept for a resend of its request, in
    // seconds (SRV_RETRANSMIT_AUTO: confirm_wait_time for an ip/cp/kup that waits for
    // certConf, SRV_RESEND_IMPLICIT_WINDOW_S for everything else; 0: no cache), and its
    // bounds (0 picks SRV_RESEND_DEFAULT_ENTRIES and SRV_RESEND_DEFAULT_BYTES).
    int64_t retransmit_window;
    size_t retransmit_max_entries;
    size_t retransmit_max_bytes;
} srv_params;

#define SRV_RETRANSMIT_AUTO   (-1)
#define SRV_DEFAULT_KDF_QUEUE 1024u
#define SRV_PEER_KEY_LEN      16u // srv_request_set_peer


typedef struct srv_engine srv_engine;

// srv_engine_new builds the engine from |p| (copied; pointers borrowed) and starts its
// nested_threads verification threads (each with a store reader: the store must stay open
// until srv_engine_free). Thread: start-up.
CM_RESULT srv_engine_new(srv_engine **out, const srv_params *p);

// srv_engine_free stops the verification threads and frees the engine; every worker must have
// been freed before. NULL is a no-op. Thread: shut-down.
void srv_engine_free(srv_engine *e);

// srv_engine_stats: what the abuse limits did (issue 23), for /metrics. Thread: value type.
typedef struct srv_engine_stats {
    uint64_t kdf_done;          // PBM/PBMAC1 verifications the KDF pool made
    uint64_t kdf_refused;       // refused because its queue was full (SRV_E_KDF_BUSY)
    uint64_t kdf_inline;        // checked on the I/O thread instead (kdf_inline)
    uint64_t kdf_queued;        // waiting for a KDF thread now
    uint64_t mac_backoff_kid;   // MAC-protected requests refused: senderKID in back-off
    uint64_t mac_backoff_peer;  // ... the peer address in back-off
    uint64_t error_signed;      // errors to unauthenticated messages, signed
    uint64_t error_unprotected; // ... sent unprotected (error_signatures_per_peer spent)
    uint64_t resend_hits;       // requests answered from the retransmission cache
    uint64_t resend_stored;     // answers kept
    uint64_t resend_evicted;    // answers dropped for room before they expired
    uint64_t resend_entries;    // answers held now
    uint64_t resend_bytes;      // their memory
} srv_engine_stats;

// srv_engine_get_stats fills |out| (zeros for limits that are off). Thread: any.
void srv_engine_get_stats(srv_engine *e, srv_engine_stats *out);

// srv_engine_find_ca returns the CA named |name| (NULL or empty: the first, the default).
const srv_ca *srv_engine_find_ca(const srv_engine *e, cm_span name);

// srv_engine_maintain runs the background duties once, synchronously: expire transactions,
// revoke certificates whose certConf never came (reason cessationOfOperation), and reject the
// requests that waited longer than waiting_timeout (STORE_OP_PENDING_EXPIRE). Returns the
// number of certificates revoked. Thread: a maintenance thread (blocks on the store).
CM_RESULT srv_engine_maintain(srv_engine *e, int64_t now, uint64_t *out_revoked);

// ---------------------------------------------------------------------------------------------
// Delayed delivery (issue 16; srv_pending.c)
//
// A request that waits has a row in the store (store_pending) from before it is answered
// `waiting`, so any node sharing the store can finish it and answer its pollReq. A drain signs
// and records the waiting requests: those this node accepted under load (in memory, FIFO: as
// the HSM queue falls below its bound), and what it finds in the store every second (requests
// an operator approved with `certmint approve`, requests of a node that stopped). Claims in the
// store keep two drains from signing one request.

// srv_engine_start_pending starts the engine's drain on its own thread (cm-pending): every
// 100 ms it also measures the HSM pool's signing rate (max_hsm_queue auto) and the store's
// commit latency, the inputs of the waiting decision; without it nothing waits under load.
// CM_E_NOMEM or the store reader's failure. Thread: start-up; once.
CM_RESULT srv_engine_start_pending(srv_engine *e);

// srv_engine_stop_pending stops the drain (it finishes the pass it is in) and joins it; a
// no-op when it is not running. srv_engine_free calls it. Thread: the owner.
void srv_engine_stop_pending(srv_engine *e);

// srv_engine_drain runs one drain pass on the calling thread: claims up to |max| waiting
// requests (this node's queue first, then the store's approved, queued and stale ones), signs
// them through the pool (one submission), records them (one store batch) and returns how many
// were issued or rejected. Blocks on the HSM and the store. For tests and tools; the daemon's
// drain runs it on its own thread.
CM_RESULT srv_engine_drain(srv_engine *e, int64_t now, size_t max, size_t *out_done);

// srv_pending_stats is what /metrics shows of delayed delivery. Thread: value type.
typedef struct srv_pending_stats {
    uint64_t waiting;       // enrolments this node accepted under load and has not drained
    uint64_t accepted;      // requests answered `waiting` (load and approval)
    uint64_t refused;       // enrolments refused because max_pending wait already
    uint64_t drained;       // waiting requests this node's drain issued or rejected
    uint64_t polls;         // pollReq answered with pollRep
    uint64_t delivered;     // final answers delivered to a pollReq
    uint32_t max_hsm_queue; // the bound in force (UINT32_MAX: not measured yet)
    uint32_t commit_us;     // the store's recent commit latency
    uint64_t hsm_rate;      // signatures per second the pool was measured to drain
} srv_pending_stats;

// srv_engine_pending_stats fills |out| (relaxed reads). Thread: any.
void srv_engine_pending_stats(const srv_engine *e, srv_pending_stats *out);

// srv_worker is one thread's working set: crypto contexts, digests, a store reader and the
// completion queue its jobs come back to. Thread: confined to its thread.
typedef struct srv_worker srv_worker;

CM_RESULT srv_worker_new(srv_worker **out, srv_engine *e, cm_cq *cq);

// srv_worker_set_busy gives the worker a probe for its thread's other work (an I/O loop's
// net_loop_busy): while it returns true, a MAC check that kdf_inline would run on this thread
// goes to the KDF threads. Without one the thread counts as idle. Thread: the worker's.
void srv_worker_set_busy(srv_worker *w, bool (*busy)(void *arg), void *arg);

// srv_worker_free releases the worker and the requests it keeps for reuse. Requests still out
// (not yet srv_request_free'd) are detached: from then on they may only be freed, which
// returns them to the heap. No request may have HSM or store jobs out; inner requests of a
// nested message that the verification threads still hold are waited for. NULL is a no-op.
void srv_worker_free(srv_worker *w);

// srv_worker_stats counts how a worker handed work off: HSM submissions and their jobs,
// store submissions (store_submit_batch or store_submit) and their jobs, and the nested
// requests it served with their inner messages. A nested batch submits the signatures and
// the records of all its inner messages together (one submission each), so for a batch these
// stay flat while the jobs grow. Thread: value type.
typedef struct srv_worker_stats {
    uint64_t hsm_submits;
    uint64_t hsm_jobs;
    uint64_t store_submits;
    uint64_t store_jobs;
    uint64_t nested;     // nested requests started (every level)
    uint64_t inner;      // inner messages they carried
    uint64_t pool_tasks; // inner requests handed to the verification threads
} srv_worker_stats;

// srv_worker_get_stats copies |w|'s counters into |*out|. Thread: the worker's.
void srv_worker_get_stats(const srv_worker *w, srv_worker_stats *out);

// srv_worker_num_free returns how many freed requests the worker keeps for reuse (at most
// srv_params.free_requests). Thread: the worker's.
size_t srv_worker_num_free(const srv_worker *w);

// srv_request is one request in flight. It owns an arena for everything derived from the
// message. Thread: its worker's.
typedef struct srv_request srv_request;

// srv_request_new returns a request for |w|; |user| is the caller's cookie (srv_request_user).
// It reuses one the worker kept (h2o-style recycling: in a steady stream neither the request
// nor its arena's first block is allocated), else allocates one; NULL when out of memory.
// Either way the request starts zeroed, with an empty arena. Thread: the worker's.
srv_request *srv_request_new(srv_worker *w, void *user);

// srv_request_free ends |req|: its MAC key is wiped, everything in its arena released, and the
// request kept for reuse by its worker (zeroed, its arena's first block kept) unless the
// worker keeps srv_params.free_requests already or was freed, in which case it goes back to
// the heap. |req| must have no HSM or store jobs out. NULL is a no-op. Thread: the worker's
// (any thread once the worker was freed).
void srv_request_free(srv_request *req);
void *srv_request_user(const srv_request *req);

// srv_request_set_user replaces the cookie (a front end whose connection closed while jobs
// were out sets NULL, and frees the request when srv_worker_on_completion returns it).
void srv_request_set_user(srv_request *req, void *user);

// srv_request_set_tls_peer records the client certificate the transport's TLS handshake
// verified (DER; it must stay valid until the request is freed: copy it into the request's
// arena). It says who holds the TLS connection (an RA front end, say), not who protected the
// CMP message: the engine authenticates every message by its CMP protection alone, as
// RFC 9811 requires, whatever TLS established. srv_request_tls_peer returns it (empty: none).
void srv_request_set_tls_peer(srv_request *req, cm_span cert_der);
cm_span srv_request_tls_peer(const srv_request *req);

// srv_request_set_peer records who sent the request, as the key the per-peer budgets count
// under (SRV_PEER_KEY_LEN octets, copied): an IPv4 address as IPv4-mapped IPv6
// (::ffff:a.b.c.d), an IPv6 address as its /64 prefix with the rest zero, as engine/net counts
// connections. Unset (zero), every such request shares one budget. Call before
// srv_request_start.
void srv_request_set_peer(srv_request *req, const uint8_t *key);

// srv_request_arena returns the request's arena: a front end may parse the transport into it
// (the HTTP parser copies the body there), so the body is copied once. Freed with the request.
cm_arena *srv_request_arena(srv_request *req);

// srv_request_body returns arena memory of |len| bytes for the request body (so the front end
// copies the body once, straight into the request), or NULL over the arena cap.
uint8_t *srv_request_body(srv_request *req, size_t len);

// srv_request_start processes |der| (which must stay valid until the request is done; use
// srv_request_body) for |ca|. Returns true when the response is ready now (srv_request_response),
// false when jobs are out: continue with srv_worker_on_completion. Never fails: errors become
// CMP error responses.
bool srv_request_start(srv_request *req, const srv_ca *ca, cm_span der);

// srv_worker_on_completion continues the request a completed HSM or store job belongs to and
// returns it when its response is ready, or NULL when more jobs are out. Thread: the worker's.
srv_request *srv_worker_on_completion(srv_worker *w, cm_cq_node *node);

// srv_request_response returns the DER response (valid until srv_request_free).
cm_span srv_request_response(const srv_request *req);

// The stages of a request, timed with the monotonic clock (srv_summary.stage_ns). HSM and
// STORE include the time the job waited in its queue; RESPOND includes the response's MAC or
// signature.
typedef enum srv_stage {
    SRV_STAGE_PARSE = 0, // DER → cmp_msg, header rules
    SRV_STAGE_VERIFY,    // protection, POPO, profile policy, transaction lookup
    SRV_STAGE_BUILD,     // the reservation (a store round trip), TBSCertificate
    SRV_STAGE_HSM,       // the certificate's signature
    SRV_STAGE_STORE,     // assembly, durable record (group commit)
    SRV_STAGE_RESPOND,   // response encoding and protection
    SRV_STAGE_COUNT,
} srv_stage;

// srv_request_summary describes the outcome for the log line: the request body type, whether
// it was rejected, with which failure bit (-1: none), code and reason, and where the time went.
typedef struct srv_summary {
    int body_type;                      // cmp_body_type of the request, -1 when unparseable
    int fail_bit;                       // -1 when accepted
    int prot_kind;                      // cmp_prot_kind of the request's protection, -1: none
                                        //   or unknown
    bool mac_failed;                    // a MAC was checked and did not verify (or its
                                        //   parameters were refused) — KDF work for nothing
    cm_result error;                    // why it was rejected (its name goes into the log line)
    const char *reason;                 // the statusString sent, "" when accepted; owned by the
                                        // request (valid until srv_request_free)
    uint64_t stage_ns[SRV_STAGE_COUNT]; // 0 for stages the request did not reach
    bool resent;                        // answered from the retransmission cache (the answer
                                        //   the same request got before)
} srv_summary;
void srv_request_summary(const srv_request *req, srv_summary *out);

// srv_request_run is start + wait + completions, for tools and tests (blocks on the worker's
// completion queue). Returns the response.
cm_span srv_request_run(srv_request *req, const srv_ca *ca, cm_span der);

// ---------------------------------------------------------------------------------------------
// CRLs (RFC 5280 §5)

// srv_crl_params: what one CA's CRL is made from. Thread: value type.
typedef struct srv_crl_params {
    store *store;
    hsm_pool *pool;
    const hsm_key *key; // the CA key
    hsm_sig_alg sig_alg;
    const ca_authority *authority;
    const char *ca_name;
    int64_t validity_s; // nextUpdate - thisUpdate
} srv_crl_params;

// srv_crl_issue builds a v2 CRL of every revoked or held, unexpired certificate of the CA
// (reason codes as entry extensions, the next CRL number, AKI), signs it through the pool,
// records it in the store and returns its DER in |arena|. Blocks on the store and the HSM:
// for the maintenance thread and tools only.
CM_RESULT srv_crl_issue(const srv_crl_params *p, int64_t now, cm_arena *arena, cm_span *out_crl);

// srv_worker_crl returns the CA's current CRL (DER, copied into |arena|), or
// STORE_E_NOT_FOUND when none was issued yet. One indexed store read. Thread: the worker's.
CM_RESULT srv_worker_crl(srv_worker *w, const srv_ca *ca, cm_arena *arena, cm_span *out_crl);

// srv_crl_due reports whether the CA needs a new CRL: none yet; revocations since the last one
// and at least |min_interval_s| since it was issued; or less than a quarter of |validity_s|
// left before its nextUpdate.
CM_RESULT srv_crl_due(store_reader *rd, const char *ca_name, int64_t now, int64_t min_interval_s,
                      int64_t validity_s, bool *out_due);

#endif // CERTMINT_ENGINE_SERVER_SRV_H
