// hsm: every PKCS#11 call certmint makes. A token is opened by PKCS#11 URI (RFC 7512) through
// p11-kit and logged in once; keys on it are selected by URI, generated, and exported as
// SubjectPublicKeyInfo; signatures are made by a pool of worker threads, each owning one
// session for its whole life, fed by one shared queue that callers push batches of jobs into.
// Finished jobs come back through the submitter's cm_cq (engine/base/cq.h), never through a
// callback into the submitter's state.
//
// What a signature costs on SoftHSM 2.6.1 shapes the design (see the bench): hashing happens
// in the worker, in-process (SoftHSM has no CKM_ECDSA_SHA256), and only the digest crosses the
// PKCS#11 boundary; sessions are the unit of parallelism, so a network HSM with milliseconds
// of latency simply gets more of them.
#ifndef CERTMINT_HSM_HSM_H
#define CERTMINT_HSM_HSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"

typedef struct der_builder der_builder;

// ---------------------------------------------------------------------------------------------
// Result codes (detail range 0x400-0x4ff): the HSM rows of engine/base/codes.def, with their
// explanations. A failed PKCS#11 call is an HSM-class code carrying its CK_RV
// (cm_code_from_ckr), which cm_result_name prints as "HSM/CKR_PIN_INCORRECT".
enum {
#define CM_CODES_HSM CM_CODE_ENUM
#include "engine/base/codes.def"
};

// hsm_error carries a human-readable explanation of an open/find/keygen failure: which
// PKCS#11 function failed with which CKR, or which tokens and keys were found when a URI
// matched none or several. Never contains a PIN. Thread: value type.
typedef struct hsm_error {
    char msg[512];
} hsm_error;

// ---------------------------------------------------------------------------------------------
// Keys and signature algorithms

typedef enum hsm_key_type {
    HSM_KEY_NONE = 0,
    HSM_KEY_EC_P256,
    HSM_KEY_EC_P384,
    HSM_KEY_EC_P521,
    HSM_KEY_RSA,
    HSM_KEY_ED25519,
    HSM_KEY_ED448,
} hsm_key_type;

typedef enum hsm_sig_alg {
    HSM_SIG_NONE = 0,
    HSM_SIG_ECDSA_SHA256,
    HSM_SIG_ECDSA_SHA384,
    HSM_SIG_ECDSA_SHA512,
    HSM_SIG_RSA_PKCS1_SHA256,
    HSM_SIG_RSA_PKCS1_SHA384,
    HSM_SIG_RSA_PKCS1_SHA512,
    HSM_SIG_RSA_PSS_SHA256,
    HSM_SIG_RSA_PSS_SHA384,
    HSM_SIG_RSA_PSS_SHA512,
    HSM_SIG_ED25519,
    HSM_SIG_ED448,
    HSM_SIG_COUNT,
} hsm_sig_alg;

typedef enum hsm_keygen_type {
    HSM_KEYGEN_EC_P256 = 0,
    HSM_KEYGEN_EC_P384,
    HSM_KEYGEN_EC_P521,
    HSM_KEYGEN_RSA_2048,
    HSM_KEYGEN_RSA_3072,
    HSM_KEYGEN_RSA_4096,
    HSM_KEYGEN_ED25519,
    HSM_KEYGEN_ED448,
} hsm_keygen_type;

// The largest signature any supported key makes (RSA-4096: 512 bytes; ECDSA P-521 in DER: 139).
#define HSM_MAX_SIG_LEN 512u
// How many keys one token may have open at once (each worker caches one handle per key).
#define HSM_MAX_KEYS_PER_TOKEN 32u
// The largest pool: sessions (= worker threads) per token.
#define HSM_MAX_SESSIONS 256u
// The largest batch a worker takes from the queue at once.
#define HSM_MAX_BATCH 64u

// hsm_sig_alg_row returns the row of engine/crmf's algorithm table |alg| is (CRMF_ALG_NONE
// for HSM_SIG_NONE or an unknown value): names, OIDs and parameters come from there.
// Thread: any; pure.
int hsm_sig_alg_row(hsm_sig_alg alg);

// hsm_sig_alg_of_row is the reverse: the hsm_sig_alg of table row |row| (a crmf_alg_id), or
// HSM_SIG_NONE when the token cannot make that signature (SHA-3, SHAKE, SHA-1, SHA-224).
hsm_sig_alg hsm_sig_alg_of_row(int row);

// hsm_sig_alg_name returns the table's ASN.1 name of |alg| such as "ecdsa-with-SHA256" ("?"
// when unknown).
const char *hsm_sig_alg_name(hsm_sig_alg alg);

// hsm_sig_alg_fits reports whether |alg| can be used with a key of type |type|.
bool hsm_sig_alg_fits(hsm_sig_alg alg, hsm_key_type type);

// hsm_sig_alg_for_type returns the signature algorithm certmint uses with a key of |type|
// unless configured otherwise (sig_alg): ECDSA with SHA-256/384/512 for P-256/P-384/P-521
// (the hash matching the curve, RFC 5480 §4), sha256WithRSAEncryption for RSA, Ed25519 and
// Ed448 for theirs; HSM_SIG_NONE for HSM_KEY_NONE.
// The daemon, the admin tool and the benchmarks all pick CA and CMP signature algorithms here.
// Thread: any; pure.
hsm_sig_alg hsm_sig_alg_for_type(hsm_key_type type);

// hsm_sig_alg_marshal appends the X.509 AlgorithmIdentifier of |alg| to |b|, as the algorithm
// table writes it (crmf_alg_marshal): RFC 5758 §3.2 ECDSA with absent parameters; RFC 4055 §5
// shaXWithRSAEncryption with NULL parameters; RFC 4055 §3.1 RSASSA-PSS with explicit
// RSASSA-PSS-params: the hash, MGF1 with the same hash (hash identifiers with NULL parameters,
// RFC 4055 §2.1), a salt as long as the hash, trailerField omitted; RFC 8410 §3 id-Ed25519 and
// id-Ed448 with absent parameters. Errors are sticky in |b| (CM_E_INVALID_ARG for an unknown
// |alg|).
// Thread: any.
void hsm_sig_alg_marshal(der_builder *b, hsm_sig_alg alg);

// hsm_ecdsa_sig_marshal appends the DER ECDSA-Sig-Value of a PKCS#11 raw signature |raw|
// (r || s, two equal halves, big-endian) to |b|, with minimal INTEGERs. An empty or odd-length
// |raw| poisons |b| with HSM_E_BAD_SIGNATURE. Thread: any.
void hsm_ecdsa_sig_marshal(der_builder *b, cm_span raw);

// ---------------------------------------------------------------------------------------------
// Tokens and keys

// hsm_token is one logged-in PKCS#11 token: the p11-kit module, the slot, a login session
// kept open so the login lasts, the mechanisms the token offers, and where the PIN comes from
// for a re-login after the token lost its login: the pin-source path (the file is read again
// for each login and the copy wiped right after), or for pin-value a copy in mlock'ed memory
// wiped on free (the URI is then the only source).
// Thread: open/free/key_find/keygen from one thread at a time (the admin session is locked);
// the pool's workers use it concurrently, read-only.
typedef struct hsm_token hsm_token;

// hsm_key is one private key (and its public half) on a token: its type, size, CKA_ID and
// CKA_LABEL, and its SubjectPublicKeyInfo. Thread: immutable after creation; must be freed
// before its token, and not while a pool has jobs for it.
typedef struct hsm_key hsm_key;

// hsm_token_open loads the module the URI names (module-path, or module-name from p11-kit's
// configuration), initialises it for multi-threaded use, selects the one token matching the
// URI's token attributes (token, manufacturer, serial, model; slot-* too) and logs in with
// the user PIN from pin-value or pin-source (a file; "file:" prefix optional). Object
// attributes in the URI are ignored here, so the same URI can be passed to hsm_key_find.
// On success |*out| is owned by the caller (hsm_token_free). On failure |*out| is NULL, the
// code says what went wrong (HSM_E_* or the CKR of the failed call, e.g. CKR_PIN_INCORRECT)
// and |err| (may be NULL) explains it. The PIN is never logged; temporary copies (and
// p11-kit's copy of a pin-value) are wiped with OPENSSL_cleanse; the caller's |uri| string is
// the caller's to wipe.
// Thread: any, but not concurrently with another open of the same module.
CM_RESULT hsm_token_open(hsm_token **out, hsm_error *err, const char *uri);

// hsm_token_free closes the login session (which ends the login once no other session of the
// process is open on the token), wipes any kept PIN and finalises the module (p11-kit
// reference counts initialisation). Any pool on |t| must be freed first. NULL is a no-op.
void hsm_token_free(hsm_token *t);

// hsm_token_has_mechanism reports whether the token listed |mech| (a CKM_* value) in
// C_GetMechanismList at open. Thread: any.
bool hsm_token_has_mechanism(const hsm_token *t, unsigned long mech);

// hsm_key_find selects the one private key on |t| matching the URI's object attributes
// (object = CKA_LABEL, id = CKA_ID, type must be "private" when given) and reads its public
// half. HSM_E_NO_KEY or HSM_E_AMBIGUOUS_KEY (with |err| listing what the token holds) when
// not exactly one matches; HSM_E_NO_TOKEN when the URI names another token; HSM_E_KEY_TYPE for
// unsupported key types; HSM_E_ALWAYS_AUTH for a key that needs a login per signature.
// |*out| is owned by the caller (hsm_key_free). Thread: as hsm_token.
CM_RESULT hsm_key_find(hsm_token *t, hsm_key **out, hsm_error *err, const char *uri);

// hsm_key_generate creates a key pair in |t|: private key CKA_TOKEN, CKA_PRIVATE,
// CKA_SENSITIVE, CKA_SIGN, not CKA_EXTRACTABLE, not CKA_ALWAYS_AUTHENTICATE; public key
// CKA_TOKEN, CKA_VERIFY; both with CKA_LABEL |label| and CKA_ID |id|. HSM_E_KEY_EXISTS when a
// private key with that label or id exists. |*out| is the new key (hsm_key_free).
// Thread: as hsm_token.
CM_RESULT hsm_key_generate(hsm_token *t, hsm_key **out, hsm_error *err, hsm_keygen_type type,
                           const char *label, cm_span id);

// hsm_key_free releases |k| (the key stays on the token). NULL is a no-op.
void hsm_key_free(hsm_key *k);

// hsm_sig_alg_for_key is hsm_sig_alg_for_type(hsm_key_get_type(k)).
hsm_sig_alg hsm_sig_alg_for_key(const hsm_key *k);

// hsm_key_get_type and hsm_key_get_bits describe the key (bits: modulus or field size).
hsm_key_type hsm_key_get_type(const hsm_key *k);
uint32_t hsm_key_get_bits(const hsm_key *k);

// hsm_key_get0_spki returns the DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), owned by |k|.
cm_span hsm_key_get0_spki(const hsm_key *k);

// hsm_key_get0_label and hsm_key_get0_id return the key's CKA_LABEL (NUL-terminated) and
// CKA_ID, owned by |k|.
const char *hsm_key_get0_label(const hsm_key *k);
cm_span hsm_key_get0_id(const hsm_key *k);

// ---------------------------------------------------------------------------------------------
// The signing pool

// hsm_dispatch says where the signatures of hsm_pool_submit_on are made (hsm_dispatch).
//  - HSM_DISPATCH_POOL: always by the pool's workers (a network HSM: milliseconds of waiting
//    per signature, which only many sessions in parallel hide).
//  - HSM_DISPATCH_INLINE: on the submitting thread's own session (an hsm_lane), when it has
//    one: for a token whose C_Sign is CPU work in this process (SoftHSM), this saves two
//    thread hand-offs and their wake-ups per signature.
//  - HSM_DISPATCH_AUTO: hsm_pool_calibrate measures and picks one of the two; the pool until
//    it has.
typedef enum hsm_dispatch {
    HSM_DISPATCH_AUTO = 0,
    HSM_DISPATCH_INLINE,
    HSM_DISPATCH_POOL,
} hsm_dispatch;

// hsm_dispatch_parse maps "auto", "inline", "pool" to |*out|; false when unknown.
CM_MUST_USE bool hsm_dispatch_parse(const char *name, hsm_dispatch *out);

// hsm_dispatch_name is the reverse ("?" for an unknown value).
const char *hsm_dispatch_name(hsm_dispatch d);

// hsm_pool_opts configures a pool. Thread: value type.
typedef struct hsm_pool_opts {
    uint32_t sessions;     // worker threads, one session each (1..HSM_MAX_SESSIONS)
    uint32_t batch;        // most jobs a worker takes per wake-up (1..HSM_MAX_BATCH)
    uint32_t max_queue;    // submit fails with HSM_E_QUEUE_FULL beyond this depth; 0 = no limit
    bool copy_key;         // C_CopyObject each key into a session object (CKA_TOKEN=FALSE)
    hsm_dispatch dispatch; // where hsm_pool_submit_on signs (see hsm_dispatch)
    uint32_t inline_max;   // lanes that may sign at once; a lane finding them all busy hands
                           //   its jobs to the workers (0: 1)
} hsm_pool_opts;

// hsm_pool_opts_default fills |o| with 2 sessions, batch 16, no queue limit, dispatch auto,
// one lane signing at a time (SoftHSM serialises much of a signature: bench/hsm_bench) and
// copy_key on:
// on SoftHSM 2.6.1 a session copy saves about a quarter of the CPU of an ECDSA P-256
// signature (no re-check of the token object on disk per operation) and costs nothing
// measurable for slower keys (bench/hsm_bench); a token that refuses the copy falls back to
// the token object.
void hsm_pool_opts_default(hsm_pool_opts *o);

// hsm_job is one signature request, owned by the caller and embedded wherever it likes (no
// allocation per job). Fill it with hsm_job_init, submit it, and it comes back through |cq|
// as a cm_cq_node of kind CM_CQ_KIND_HSM_JOB (|node| is the first member, so the node pointer
// is the job pointer). |result| and |sig_len| are valid only after it comes back.
// Thread: owned by the submitter except between submit and completion, when the pool owns it
// and the submitter must not touch it.
typedef struct hsm_job {
    cm_cq_node node;    // must stay first
    cm_cq *cq;          // where the job completes
    const hsm_key *key; // the signing key (its token must be the pool's)
    hsm_sig_alg alg;    // signature algorithm; must fit the key
    cm_span msg;        // the whole message to sign (hashed by the worker unless EdDSA)
    uint8_t *sig;       // output buffer (HSM_MAX_SIG_LEN always suffices)
    size_t sig_cap;     // its size
    void *user;         // the submitter's own pointer; never touched by the pool
    size_t sig_len;     // out: signature length (X.509 encoding: DER for ECDSA)
    cm_result result;   // out: CM_OK, or why the job failed
    uint32_t attempts;  // out: how many times a session tried it (2 after a retry)
} hsm_job;

// hsm_job_init fills |j| for submission; |user| is left for the caller. Never fails.
void hsm_job_init(hsm_job *j, cm_cq *cq, const hsm_key *key, hsm_sig_alg alg, cm_span msg,
                  uint8_t *sig, size_t sig_cap);

// hsm_pool signs jobs for the keys of one token with |sessions| worker threads. The queue is
// the only shared structure (one mutex, one condition variable). Each worker opens its own
// session at start, looks key handles up once per session (or copies the key into a session
// object), and reopens its session and logs in again when a call reports
// CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED,
// CKR_TOKEN_NOT_PRESENT or CKR_USER_NOT_LOGGED_IN; the job that saw it is retried once on the
// new session, and fails with the code of the retry (or of the reopen) otherwise. A job is
// completed exactly once. Thread: submit from any thread.
typedef struct hsm_pool hsm_pool;

// hsm_pool_new starts the workers and waits until each has its session. On failure nothing
// is left running and the code of the first worker that failed is returned. |*out| is owned by
// the caller (hsm_pool_free). |t| must outlive the pool. Thread: any.
CM_RESULT hsm_pool_new(hsm_pool **out, hsm_token *t, const hsm_pool_opts *opts);

// hsm_pool_free stops the pool: jobs still queued complete with HSM_E_SHUTDOWN, jobs a worker
// already took complete normally, then the workers close their sessions and exit. Every job
// submitted has been pushed to its cq when this returns (the caller still has to drain).
// NULL is a no-op. Thread: any but a worker; not concurrently with submit.
void hsm_pool_free(hsm_pool *p);

// hsm_pool_submit queues |num_jobs| jobs with one lock and one wake-up. All are checked
// first: CM_E_INVALID_ARG (no cq, no output buffer, a key of another token) or
// HSM_E_ALG_MISMATCH rejects the whole array and queues none; so does HSM_E_QUEUE_FULL. On
// success the pool owns the jobs until each comes back through its cq. Thread: any.
CM_RESULT hsm_pool_submit(hsm_pool *p, hsm_job *const *jobs, size_t num_jobs);

// hsm_lane is a PKCS#11 session of one submitting thread (an I/O loop) for inline signing:
// its own key handles and digest context, used only by the thread that owns it, never by the
// pool's workers. Thread: confined to its owner (one thread at a time).
typedef struct hsm_lane hsm_lane;

// hsm_lane_new opens a session for inline signing on |p|'s token and logs it in (a login is
// per token, so normally it already is). When |p| does not sign inline (dispatch pool, or auto
// before or against calibration) |*out| is NULL and the result CM_OK: hsm_pool_submit_on with
// a NULL lane uses the workers. The lane is owned by the caller (hsm_lane_free, before the
// pool). The CKR of C_OpenSession or of the login on failure. Thread: any, once the pool's
// dispatch is settled (after hsm_pool_calibrate).
CM_RESULT hsm_lane_new(hsm_lane **out, hsm_pool *p);

// hsm_lane_free closes the lane's session. NULL is a no-op. Thread: the lane's owner.
void hsm_lane_free(hsm_lane *l);

// hsm_pool_submit_on is hsm_pool_submit for a thread that may own a lane: with |lane|
// non-NULL, unless the token is busy at this moment (jobs given to the workers not yet back, or
// opts.inline_max lanes signing: then the jobs go to the workers, counted in inline_deferred),
// every job is signed right here on the lane's session (the calling thread blocks
// for the C_Sign calls; a session death reopens the lane's session and retries once, as a
// worker would), and each comes back through its cq by cm_cq_push_local, so a cq whose owner
// drains before it waits sees no doorbell. The jobs' cqs must belong to the calling thread.
// With |lane| NULL it is hsm_pool_submit. Validation and its errors are hsm_pool_submit's
// (the queue limit does not apply inline). Thread: the lane's owner.
CM_RESULT hsm_pool_submit_on(hsm_pool *p, hsm_lane *lane, hsm_job *const *jobs, size_t num_jobs);

// hsm_calibration is what hsm_pool_calibrate measured. Thread: value type.
typedef struct hsm_calibration {
    uint32_t signs;        // signatures timed (1..HSM_CALIBRATE_SIGNS)
    uint64_t wall_ns;      // median wall time of one signature (digest, C_SignInit, C_Sign)
    uint64_t cpu_ns;       // median CPU time of the calling thread for the same
    uint32_t cpu_permille; // the calling thread's CPU share of the best signature (highest)
    hsm_dispatch dispatch; // what the pool now does (INLINE or POOL)
    bool measured;         // false when the dispatch was configured, not measured
} hsm_calibration;

// Auto dispatch signs inline when, in the least disturbed of the timed signatures (the one with
// the highest share), the calling thread was on the CPU for at least half of its wall time: the
// token computes in this process. A token that waits (on a network, on a device) scores near 0
// in every sample; a loaded machine that preempts the thread lowers some samples, not all.
#define HSM_INLINE_MIN_CPU_PERMILLE 500u
#define HSM_CALIBRATE_SIGNS         15u
// The calibration stops after this long (once it has one signature), so a slow HSM costs the
// start-up one signature, not fifteen.
#define HSM_CALIBRATE_BUDGET_NS 50000000u

// hsm_pool_calibrate settles |p|'s dispatch: for HSM_DISPATCH_AUTO it signs up to
// HSM_CALIBRATE_SIGNS test messages (within HSM_CALIBRATE_BUDGET_NS) with |key| (|alg|) on a
// session of the calling thread and decides by the rule above; INLINE and POOL are kept as
// configured (|out->measured| false). |out| (may be NULL) receives the figures. Must run before any
// hsm_lane_new and before the pool's first submit_on. The CKR of a failed signature on failure (the
// dispatch then stays with the pool). Thread: start-up.
CM_RESULT hsm_pool_calibrate(hsm_pool *p, hsm_calibration *out, const hsm_key *key,
                             hsm_sig_alg alg);

// hsm_pool_inline reports whether |p| signs inline for threads with a lane. Thread: any.
bool hsm_pool_inline(const hsm_pool *p);

// hsm_pool_depth returns the number of queued jobs not yet taken by a worker (for metrics
// and backpressure). Thread: any.
size_t hsm_pool_depth(hsm_pool *p);

// hsm_pool_stats counts what the workers did. Thread: value type.
typedef struct hsm_pool_stats {
    uint64_t signed_ok; // jobs completed with CM_OK
    uint64_t failed;    // jobs completed with an error (shutdown included)
    uint64_t retried;   // jobs retried after a session was reopened
    uint64_t reopened;  // sessions reopened
    uint64_t batches;   // queue takes by workers
    // C_SignInit and C_Sign calls that failed, whether or not the job's retry then succeeded
    // (|failed| counts only jobs that failed in the end).
    uint64_t sign_calls_failed;
    uint64_t signed_inline;   // jobs signed on a submitter's lane (in signed_ok / failed too)
    uint64_t inline_deferred; // jobs a lane gave to the workers: the token was busy
} hsm_pool_stats;

// hsm_pool_get_stats copies the counters into |*out| (relaxed reads). Thread: any.
void hsm_pool_get_stats(hsm_pool *p, hsm_pool_stats *out);

// hsm_job_why writes into |why| (cm_why_set: only when no reason is set yet) what a failed
// job's result means for an operator, naming the PKCS#11 error and whether the job was retried
// on a reopened session: "HSM signing failed: CKR_DEVICE_ERROR, retried once". Thread: any.
void hsm_job_why(const hsm_job *j, cm_why *why);

// hsm_sign_sync signs |msg| with |key| through the pool and waits: |sig| receives the
// signature (|*out_len| bytes). The job's result is returned. For tools and tests, never for
// I/O loops. Thread: any but a worker.
CM_RESULT hsm_sign_sync(hsm_pool *p, size_t *out_len, uint8_t *sig, size_t sig_cap,
                        const hsm_key *key, hsm_sig_alg alg, cm_span msg);

#endif // CERTMINT_HSM_HSM_H
