// engine/store: the durable record of everything the CA issued and of the CMP transactions in
// flight, behind a backend interface: SQLite ("sqlite:PATH", the embedded default) or
// PostgreSQL ("postgresql://...", shared by several certmintd nodes).
//
// Writes are jobs. A caller fills a store_job (an intrusive work item embedding a cm_cq_node),
// submits it — alone or as a batch under one lock — and gets it back through its own cm_cq once
// the job's effect is durable (or it failed). One writer thread owns the write connection: it
// takes every job that arrived while the previous commit ran, executes them in ONE transaction
// (each job inside its own savepoint, so a bad job fails alone), commits, and only then
// completes them (group commit). With the default synchronous=FULL a completed insert survives
// a crash or a power loss, which is what lets the server release a certificate to a client:
// DESIGN.md "Nothing issued is lost".
//
// Reads go through store_reader handles, each with its own read connection (WAL lets readers
// run beside the writer without blocking on it). A reader is confined to one thread; every I/O
// thread or tool opens its own.
//
// PostgreSQL (store_pg*.c): the writer sends each batch as one transaction through libpq's
// pipeline mode (one round trip per batch); several nodes may share the database. A lost
// connection fails the jobs and reads in flight with STORE_E_UNAVAILABLE (the server answers
// systemUnavail), store_healthy turns false, and the connections come back by themselves with
// backoff. Duties only one node may run (CRLs, the confirm sweep, transaction expiry) are gated
// by store_leader_try, a PostgreSQL advisory lock.
//
// Records (schema version STORE_SCHEMA_VERSION, created and migrated by store_open):
//   cert       one row per issued certificate, UNIQUE (ca, serial), status unconfirmed / valid /
//              revoked / hold, revocation time and CRLReason, requester identity, the DER
//   txn        CMP transaction state keyed by (ca, transactionID), so that a certConf or pollReq
//              can be answered by any node sharing the database
//   crl_state  per CA: the CRL number counter, a revision counter bumped by every revocation
//              change, and the last CRL (DER, number, thisUpdate, nextUpdate) — issue 6
//   credential_use  per CA and MAC credential: how many certificates it reserved (only for
//              credentials with a limit, max_certs / once) — issue 14
//
// Schema 3 (issue 14) adds: which certificate a kur's certificate replaces and when a
// certificate was superseded by a confirmed key update (cert.replaces, revoke_replaced,
// superseded_at); reservations (a txn row created before the certificate is signed, with the
// serial it will carry, the key's hash and the certificate it replaces); an index on
// (ca, spki_sha256) for the key-reuse rule; and what a certConf is checked against besides the
// credential (txn.flags, request_nonce, signer_cert: issue 15).
//
// Schema 4 (issue 16) adds the table pending: one row per request that waits (delayed delivery,
// RFC 9483 §4.4): accepted under load (the HSM queue or the commit latency over their bounds)
// or held for an operator's approval. The row keeps what is needed to finish the request on any
// node sharing the store (the TBSCertificate to sign, the reserved serial, for the listings the
// subject, key type and requester) and what its final answer is once known (the issued
// certificate's serial, or the rejection's failure bit and reason), so that a pollReq may reach
// any node. Its enrolment's reservation (a txn row, as for every enrolment) is made in the same
// store transaction as the row. The STORE_OP_PENDING_* ops below move a row through its states;
// store_pending_get / _get_id / _list read them.
//
// The signer-status cache. store_cert_state_get answers "may this certificate authenticate"
// (status, notAfter, superseded, update pending) for the request path from a bounded
// in-memory cache keyed by (CA, serial), falling back to one indexed read. The writer thread
// invalidates the entries of every certificate a committed job changed (confirm, revoke, hold,
// release, supersede, a kur's reservation or insert, the sweep) before the jobs complete, so a
// revocation is in force by the time its rp is sent. Changes made by another process (the
// `certmint revoke` tool, another node) are noticed by the writer at its next batch (SQLite:
// PRAGMA data_version; the daemon's maintenance writes every 2 s) and clear the whole cache;
// another backend may call store_status_invalidate / store_status_invalidate_all itself (e.g.
// on LISTEN/NOTIFY), and store_options.status_cache_max_age_ms bounds how old an entry may be.
#ifndef CERTMINT_ENGINE_STORE_STORE_H
#define CERTMINT_ENGINE_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"

// ---------------------------------------------------------------------------------------------
// Result codes (detail range 0x500-0x5ff): the STORE rows of engine/base/codes.def, with their
// explanations and the PKIFailureInfo bit the server answers each with.

enum {
#define CM_CODES_STORE CM_CODE_ENUM
#include "engine/base/codes.def"
};

// STORE_SCHEMA_VERSION is the schema this build writes (PRAGMA user_version for SQLite).
#define STORE_SCHEMA_VERSION 4

// ---------------------------------------------------------------------------------------------
// Records

// store_cert_status is a certificate's state. A certificate on hold (CRLReason certificateHold)
// is listed on the CRL like a revoked one but may be released back to valid.
typedef enum store_cert_status {
    STORE_CERT_UNCONFIRMED = 0, // issued, waiting for certConf (or the sweep)
    STORE_CERT_VALID = 1,       // confirmed (certConf) or implicitConfirm
    STORE_CERT_REVOKED = 2,     // permanently revoked
    STORE_CERT_HOLD = 3,        // revoked with certificateHold
    STORE_CERT_ANY = 4,         // only in store_filter: every status
} store_cert_status;

// CRLReason ::= ENUMERATED { unspecified (0), keyCompromise (1), cACompromise (2),
//     affiliationChanged (3), superseded (4), cessationOfOperation (5), certificateHold (6),
//     -- value 7 is not used
//     removeFromCRL (8), privilegeWithdrawn (9), aACompromise (10) }      -- RFC 5280 §5.3.1
enum {
    STORE_REASON_UNSPECIFIED = 0,
    STORE_REASON_KEY_COMPROMISE = 1,
    STORE_REASON_CA_COMPROMISE = 2,
    STORE_REASON_AFFILIATION_CHANGED = 3,
    STORE_REASON_SUPERSEDED = 4,
    STORE_REASON_CESSATION_OF_OPERATION = 5,
    STORE_REASON_CERTIFICATE_HOLD = 6,
    STORE_REASON_REMOVE_FROM_CRL = 8,
    STORE_REASON_PRIVILEGE_WITHDRAWN = 9,
    STORE_REASON_AA_COMPROMISE = 10,
};

// store_auth_kind says how a requester authenticated (and so what |requester| / |credential|
// holds): a MAC with a shared secret named by senderKID, or a signature by a certificate
// identified by the SHA-256 of its DER.
typedef enum store_auth_kind {
    STORE_AUTH_NONE = 0,
    STORE_AUTH_MAC = 1,       // the senderKID bytes
    STORE_AUTH_SIGNATURE = 2, // SHA-256 of the signer certificate
} store_auth_kind;

// store_cert is one issued certificate. For STORE_OP_CERT_INSERT the caller fills it (borrowed
// pointers, valid until the job completes); readers fill it with copies in the caller's arena.
// Times are seconds since the epoch; 0 means "none" for the optional ones.
// Thread: value type.
typedef struct store_cert {
    int64_t id;               // read only: row id, the cursor of store_cert_list
    const char *ca;           // CA name ([ca:NAME]); required
    cm_span serial;           // serialNumber INTEGER content octets as in the certificate
    cm_span subject_der;      // subject Name, DER; required
    const char *subject_text; // printable subject (RFC 4514 style) for listing; required
    int64_t not_before;       // validity
    int64_t not_after;        //
    cm_span spki_sha256;      // SHA-256 of the SubjectPublicKeyInfo DER: exactly 32 bytes
    store_cert_status status; // insert: UNCONFIRMED or VALID (implicitConfirm)
    int64_t revoked_at;       // read only: revocation time, 0 unless REVOKED/HOLD
    int reason;               // read only: CRLReason, -1 unless REVOKED/HOLD
    cm_span transaction_id;   // the CMP transactionID that issued it (may be empty)
    store_auth_kind requester_kind;
    cm_span requester;        // senderKID or signer certificate hash (may be empty)
    cm_span cert_der;         // the Certificate, DER; required
    int64_t issued_at;        // when it was signed
    int64_t confirm_deadline; // UNCONFIRMED: certConf must arrive before this; else 0
    // Key update (kur, RFC 9483 §4.1.3): the serial of the certificate this one replaces (empty:
    // none). Once this certificate is valid (inserted VALID under implicitConfirm, or confirmed)
    // the replaced one is marked superseded in the same store transaction, and also revoked with
    // reason superseded when |revoke_replaced| (the profile's revoke_on_update).
    cm_span replaces;
    bool revoke_replaced;
    int64_t superseded_at; // read only: when a confirmed key update replaced it, else 0
} store_cert;

// store_txn is the durable part of a CMP transaction, keyed by (ca, transaction_id). The store
// does not interpret |state|; the server defines its values. Borrowed on write, arena copies on
// read. Thread: value type.
typedef struct store_txn {
    const char *ca;             // required
    cm_span transaction_id;     // required
    uint32_t state;             // the server's state number
    cm_span sender_nonce;       // the server's last senderNonce (the client's next recipNonce)
    cm_span serial;             // serial of the certificate issued in it, empty before issuance
    store_auth_kind protection; // how the request was protected
    cm_span credential;         // senderKID or signer certificate hash
    int64_t expires_at;         // STORE_OP_TXN_EXPIRE deletes it at or after this time
    // What a certConf must match beyond the credential (schema 3; not interpreted either):
    uint32_t flags;        // the server's flags of the request (its body type, its MAC)
    cm_span request_nonce; // the request's senderNonce (empty: not recorded)
    cm_span signer_cert;   // the signer certificate's DER, for a signed request (else empty)
    // The reservation made with the row (store_reservation's serial, key and replaced
    // certificate; empty when there was none or it was given back): filled by store_txn_list
    // and written by STORE_OP_COPY_TXN only (store_txn_get, TXN_CREATE and TXN_UPDATE leave
    // them alone).
    cm_span reserved_serial;
    cm_span spki_sha256;
    cm_span replaces;
} store_txn;

// store_reservation is the first write of an enrolment, made before the certificate is signed
// (STORE_OP_TXN_RESERVE): it creates the transaction row (|state|, the credential, |expires_at|)
// with the serial the certificate will carry, so that a duplicate transactionID
// (STORE_E_TXN_IN_USE) or serial (STORE_E_DUPLICATE_SERIAL: draw another and retry) costs no
// signature. In the same store transaction it applies the rules that must hold atomically across
// concurrent requests and nodes: the key (|spki_sha256|) was not certified by this CA before nor
// is reserved by a pending enrolment (when |check_key|; STORE_E_KEY_REUSED); the certificate a
// kur replaces (|replaces|) exists (STORE_E_NOT_FOUND), was not superseded and has no other
// update pending (STORE_E_UPDATE_PENDING); and a credential with a limit (|max_uses| > 0) has
// reserved fewer than |max_uses| certificates of this CA (STORE_E_LIMIT; counted here).
// Certificates revoked with reason cessationOfOperation (what the sweep and a certConf rejection
// use for certificates never accepted) do not count as certifying their key. The server then
// records the certificate with STORE_OP_CERT_INSERT and STORE_OP_TXN_UPDATE (serial = the
// reserved one), or gives the reservation back with STORE_OP_TXN_UNRESERVE when signing failed.
// A reservation completes once its batch executed, before that batch commits: later jobs see
// it at once (one writer), readers once the batch committed a moment later (store.c).
// Borrowed on write. Thread: value type.
typedef struct store_reservation {
    const char *ca;             // required
    cm_span transaction_id;     // required
    cm_span serial;             // required: the serial the certificate will carry
    uint32_t state;             // the server's state number for the transaction row
    store_auth_kind protection; // how the request was protected
    cm_span credential;         // senderKID or signer certificate hash
    int64_t expires_at;         // the transaction row's expiry
    cm_span spki_sha256;        // 32 bytes: the certified key's hash
    bool check_key;             // refuse a key certified or reserved before
    cm_span replaces;           // kur: the serial of the certificate updated (empty: none)
    uint32_t max_uses;          // > 0: the credential's limit of certificates at this CA
} store_reservation;

// store_crl is a CA's CRL state (issue 6). crl_number counts numbers handed out by
// STORE_OP_CRL_NEXT_NUMBER; revision counts revocation changes (revoke, hold, release, sweep)
// of the CA; a CRL built from revision R is stale once revision > R. Thread: value type.
typedef struct store_crl {
    const char *ca;          // required
    uint64_t crl_number;     // the number of |crl_der| (0 when none was stored)
    uint64_t numbers_issued; // read only: the last number STORE_OP_CRL_NEXT_NUMBER handed out
    uint64_t revision;       // read only
    uint64_t built_revision; // the revision the stored CRL reflects
    cm_span crl_der;         // the last CRL, DER (empty when none was stored)
    int64_t this_update;     //
    int64_t next_update;     //
} store_crl;

// store_pending_state is where a request that waits is (the pending table, schema 4). The
// numbers are stored; append only.
//
//   QUEUED ──claim──▶ SIGNING ──issue──▶ ISSUED ──deliver──▶ DELIVERED
//   APPROVAL ──approve──▶ APPROVED ──claim──▶ SIGNING      REJECTED ──deliver──▶ DELIVERED
//   QUEUED, APPROVAL, APPROVED, SIGNING ──reject or expire──▶ REJECTED
typedef enum store_pending_state {
    STORE_PENDING_QUEUED = 0,    // accepted under load: a drain signs it as capacity frees
    STORE_PENDING_APPROVAL = 1,  // held for an operator (certmint approve / reject)
    STORE_PENDING_APPROVED = 2,  // approved: a drain signs it
    STORE_PENDING_SIGNING = 3,   // claimed by a drain at claimed_at; its signature is being made
    STORE_PENDING_ISSUED = 4,    // its certificate is recorded (serial); the next pollReq gets it
    STORE_PENDING_REJECTED = 5,  // rejected (fail_info, status_text); the next pollReq gets that
    STORE_PENDING_DELIVERED = 6, // the final answer went out (a pollReq may get it again)
    STORE_PENDING_NUM_STATES = 7,
} store_pending_state;

// store_pending_why says why a request waits.
typedef enum store_pending_why {
    STORE_PENDING_WHY_LOAD = 1,     // backpressure: the HSM queue or the commit latency
    STORE_PENDING_WHY_APPROVAL = 2, // the profile's approval = manual
} store_pending_why;

// store_pending is one request that waits, keyed by its id and by (ca, transaction_id).
// Borrowed on write (STORE_OP_PENDING_ADD), arena copies on read. The store interprets only
// |state|, |expires_at| and the reservation it made with the row; the server defines
// |body_type|, |flags| and what |tbs| is. Thread: value type.
typedef struct store_pending {
    int64_t id;                // read only: PENDING_ADD returns it in store_job.out_value
    const char *ca;            // required
    cm_span transaction_id;    // required
    uint32_t body_type;        // the request's PKIBody type (the server's number)
    int64_t cert_req_id;       // the certReqId a pollReq for it names (-1: none, p10cr)
    store_pending_why why;     //
    store_pending_state state; // PENDING_ADD: QUEUED or APPROVAL
    const char *profile;       // for listings: the profile it is issued under (NULL: none)
    const char *subject;       // for listings: the requested subject as RFC 4514 text; required
    const char *key_type;      // for listings: "EC P-256", "RSA 2048"; required
    const char *requester;     // for listings: who asked ("senderKID line-7", a signer's name)
    int64_t created_at;        //
    int64_t expires_at;        // PENDING_EXPIRE rejects it (or, once final, deletes it) then
    int64_t claimed_at;        // read only: when a drain claimed it (SIGNING), else 0
    int64_t decided_at;        // read only: when it was approved, rejected or expired, else 0
    cm_span tbs;               // the TBSCertificate a drain signs; required
    cm_span serial;            // the serial it carries (the reservation's); required
    uint32_t flags;            // the server's flags (what the certificate's record needs)
    cm_span replaces;          // kur: the serial of the certificate it replaces (empty: none)
    int fail_info;             // REJECTED: the PKIFailureInfo bit; -1 otherwise
    const char *status_text;   // ADD: the text an accepted answer will carry (grantedWithMods;
                               //   NULL: none); REJECTED: the reason
    // PENDING_ADD only: the reservation made in the same store transaction, with its rules and
    // refusals (store_reservation; required), and the certConf fields of its transaction row
    // (store_txn's flags, request_nonce and signer_cert, borrowed).
    const store_reservation *rsv;
    uint32_t txn_flags;
    cm_span request_nonce;
    cm_span signer_cert;
    // Read only (written by STORE_OP_COPY_PENDING only, with |id|): whether the reservation
    // counted a use of a limited credential (given back when the row is rejected or expires).
    bool counted;
} store_pending;

// store_pending_op carries the arguments of the other STORE_OP_PENDING_* ops (see store_op).
// Borrowed on write. Thread: value type.
typedef struct store_pending_op {
    int64_t id;               // CLAIM, DECIDE, ISSUE: the row
    const char *ca;           // DELIVER: the row, by (ca, transaction_id)
    cm_span transaction_id;   //
    int64_t time;             // every op: now
    int64_t stale_before;     // CLAIM: a SIGNING row claimed before this is claimed again
    bool approve;             // DECIDE: APPROVAL -> APPROVED; false: reject
    int fail_info;            // DECIDE (reject), EXPIRE: the PKIFailureInfo bit of the rejection
    const char *status_text;  // DECIDE (reject), EXPIRE: its reason
    int64_t keep_s;           // DECIDE (reject), EXPIRE: how long an undelivered rejection stays
    const store_cert *cert;   // ISSUE: the signed certificate, as for STORE_OP_CERT_INSERT
    uint32_t txn_state;       // ISSUE: the transaction row's new state (the server's number)
    int64_t txn_expires_at;   // ISSUE, DELIVER: the transaction row's (and DELIVER: the row's)
                              //   new expiry
    cm_span sender_nonce;     // DELIVER: the senderNonce of the answer that delivers it
    int64_t confirm_deadline; // DELIVER: the certificate's confirmation deadline from now on
} store_pending_op;

// ---------------------------------------------------------------------------------------------
// Write jobs

typedef enum store_op {
    STORE_OP_CERT_INSERT = 1, // u.cert: a new certificate (UNCONFIRMED or VALID)
    STORE_OP_CERT_CONFIRM,    // u.ref: UNCONFIRMED → VALID; u.ref.time is now (0: no check)
    STORE_OP_CERT_REVOKE,     // u.ref: → REVOKED (or HOLD for certificateHold) at u.ref.time
    STORE_OP_CERT_RELEASE,    // u.ref: HOLD → VALID (removeFromCRL)
    STORE_OP_TXN_CREATE,      // u.txn: a new transaction; STORE_E_TXN_IN_USE if it exists
    STORE_OP_TXN_UPDATE,      // u.txn: replace an existing transaction's state
    STORE_OP_TXN_DELETE,      // u.ref (ca, transaction_id)
    STORE_OP_TXN_EXPIRE,      // u.ref.time: delete every transaction expired at that time
    STORE_OP_SWEEP,           // u.ref.time, u.ref.reason: revoke UNCONFIRMED past deadline
    STORE_OP_CRL_NEXT_NUMBER, // u.ref.ca: increment and return the CA's CRL number
    STORE_OP_CRL_PUT,         // u.crl: record the CRL just built (its number must be newer)
    STORE_OP_TXN_RESERVE,     // u.rsv: a transaction and its serial, before signing (above)
    STORE_OP_TXN_UNRESERVE,   // u.rsv: give a reservation back (ca, transaction_id, credential,
                              //   max_uses): its row goes, its use is no longer counted;
                              //   STORE_E_TXN_NOT_FOUND when no reservation without a
                              //   certificate exists
    // store_copy only: a row exactly as another store holds it.
    STORE_OP_COPY_CERT,    // u.cert: any status, with revoked_at, reason and confirm_deadline
    STORE_OP_COPY_CRL,     // u.crl: every field, numbers_issued and revision included (replaces)
    STORE_OP_COPY_CLEAR,   // delete every certificate, transaction, CRL state, count and
                           //   pending row
    STORE_OP_COPY_USE,     // u.use: a credential's count of certificates (replaces)
    STORE_OP_COPY_TXN,     // u.txn: a transaction with its reservation (reserved_serial,
                           //   spki_sha256, replaces); STORE_E_TXN_IN_USE if it exists
    STORE_OP_COPY_PENDING, // u.pend: a waiting request in any state, |id| and |counted|
                           //   included (rsv and the txn fields unused: its reservation is
                           //   the txn row copied before it); STORE_E_TXN_IN_USE if it exists
    // Delayed delivery (schema 4; store_pending). Every one is atomic (its own savepoint) and
    // durable. STORE_E_PENDING_UNKNOWN when the row does not exist, STORE_E_PENDING_STATE when
    // it is not in a state the op applies to (decided meanwhile, claimed by another node).
    STORE_OP_PENDING_ADD,     // u.pend: the reservation u.pend.rsv (its refusals as for
                              //   TXN_RESERVE; its txn row gets txn_flags, request_nonce,
                              //   signer_cert) and the row; out_value = its id;
                              //   STORE_E_TXN_IN_USE when the transaction has a row already
    STORE_OP_PENDING_CLAIM,   // u.pop (id, time, stale_before): QUEUED, APPROVED, or SIGNING
                              //   since before stale_before -> SIGNING at time
    STORE_OP_PENDING_DECIDE,  // u.pop (id, approve, time; fail_info, status_text, keep_s):
                              //   APPROVAL -> APPROVED, or QUEUED, APPROVAL, APPROVED,
                              //   SIGNING -> REJECTED (expires at time + keep_s) with what the
                              //   reservation held given back (serial, key, credential use);
                              //   its txn row stays, with its credential
    STORE_OP_PENDING_ISSUE,   // u.pop (id, cert, txn_state, txn_expires_at):
                              //   SIGNING -> ISSUED: the certificate inserted (as CERT_INSERT),
                              //   the reservation's txn row given its serial, txn_state and
                              //   expiry (STORE_E_TXN_NOT_FOUND when the reservation is gone)
    STORE_OP_PENDING_DELIVER, // u.pop (ca, transaction_id, time, sender_nonce, txn_expires_at,
                              //   confirm_deadline): ISSUED, REJECTED or DELIVERED ->
                              //   DELIVERED, expiring at txn_expires_at; for an issued one the
                              //   txn row's sender_nonce and expiry, and an unconfirmed
                              //   certificate's deadline, are set
    STORE_OP_PENDING_EXPIRE,  // u.pop (time, fail_info, status_text, keep_s): every row past its
                              //   expiry: DELIVERED and REJECTED ones are deleted; the others
                              //   become REJECTED (expiring at time + keep_s), what their
                              //   reservations held given back, and an ISSUED one's certificate
                              //   revoked (cessationOfOperation: never delivered); out_value =
                              //   rows changed
} store_op;

// store_ref names a certificate or transaction and carries the few scalars an op needs.
typedef struct store_ref {
    const char *ca;
    cm_span serial;         // CONFIRM, REVOKE, RELEASE
    cm_span transaction_id; // TXN_DELETE
    int64_t time;           // CONFIRM: now; REVOKE: revocation time; TXN_EXPIRE, SWEEP: now
    int reason;             // REVOKE, SWEEP: CRLReason (not removeFromCRL)
} store_ref;

// store_use is a credential's count of the certificates it reserved (credential_use: only for
// credentials with a limit). Thread: value type.
typedef struct store_use {
    const char *ca;
    store_auth_kind kind;
    cm_span credential;
    uint64_t used;
} store_use;

// store_job is one write. Embed it in a request or allocate it; fill it with store_job_init
// and the op's member of |u|; keep everything it points at alive until it comes back through
// |cq|. On completion |result| and |out_value| are set, then the node is pushed into |cq| (kind
// CM_CQ_KIND_STORE_JOB); the cast from the drained cm_cq_node* to store_job* is valid because
// |node| is the first member. Thread: the submitter's until submitted, the store's until
// completed, then the submitter's again.
typedef struct store_job {
    cm_cq_node node; // first member
    cm_cq *cq;       // where the job completes
    void *user;      // the submitter's cookie; untouched by the store
    store_op op;
    cm_result result;   // set at completion
    uint64_t out_value; // CRL_NEXT_NUMBER: the number; SWEEP, TXN_EXPIRE, PENDING_EXPIRE: rows
                        //   changed; PENDING_ADD: the row's id
    uint64_t submit_ns; // set by submit, for the latency histogram
    union {
        store_cert cert;
        store_ref ref;
        store_txn txn;
        store_crl crl;
        store_reservation rsv;
        store_use use;
        store_pending pend;
        store_pending_op pop;
    } u;
    // Set by the backend while the job runs, for the signer-status cache (store.c invalidates
    // after the commit): another certificate of the job's CA whose status the job changed (the
    // one a kur replaces), and whether it may have changed certificates it does not name
    // (sweep, expiry of a pending key update). Not for submitters.
    uint8_t also_serial[20];
    size_t also_serial_len;
    bool changed_many;
} store_job;

// store_job_init zeroes |job| and sets its node kind, |op| and |cq|. Thread: any.
void store_job_init(store_job *job, store_op op, cm_cq *cq);

// ---------------------------------------------------------------------------------------------
// The store

typedef enum store_sync {
    STORE_SYNC_FULL = 0,   // default: fsync the WAL at every commit (survives power loss)
    STORE_SYNC_NORMAL = 1, // fsync only at checkpoints (survives a process crash only)
    // PostgreSQL ignores the choice: its server's settings (fsync, synchronous_commit) decide,
    // and certmint sets synchronous_commit = on for its sessions.
} store_sync;

// store_options configures store_open. Zero values pick the defaults. Thread: value type.
typedef struct store_options {
    store_sync sync;
    int busy_timeout_ms; // how long to wait for a lock held by another process; 0: 5000
                         // (PostgreSQL: the writer's lock_timeout)
    size_t max_batch;    // most jobs per transaction; 0: 4096
    // WAL frames not yet copied into the database at which a background checkpoint starts;
    // 0: 1000 (SQLite's default). The WAL restarts once it holds 8 times as many.
    uint32_t checkpoint_pages;
    // The signer-status cache (store_cert_state_get): entries (0: 16384; rounded up to a
    // multiple of 4), or off with |status_cache_off|; entries older than
    // |status_cache_max_age_ms| are not used (0: no age limit).
    size_t status_cache_entries;
    bool status_cache_off;
    uint32_t status_cache_max_age_ms;
    // How long a transaction holding only reservations stays open for the batch that normally
    // brings their records (store.c: store_execute_batch), in ms; 0: 2 ms. Tests set it long.
    uint32_t reservation_defer_ms;
} store_options;

// store_stats is a snapshot of the writer's counters, for /metrics and the bench. Histogram
// bucket i of a *_us_hist counts values v (µs) with 2^(i-1) <= v < 2^i (bucket 0: v < 1, the
// last bucket: everything above); batch_hist bucket i counts batches of 2^i .. 2^(i+1)-1 jobs.
#define STORE_HIST_BUCKETS 24
typedef struct store_stats {
    uint64_t jobs;            // jobs completed
    uint64_t jobs_failed;     // of which failed
    uint64_t commits;         // transactions committed
    uint64_t commit_failures; // transactions that failed as a whole (every job failed)
    uint64_t commit_ns_total; // time from BEGIN to COMMIT done, summed
    uint64_t max_batch;       // largest batch seen
    uint64_t queue_depth;     // jobs waiting at the time of the snapshot
    uint64_t commit_us_hist[STORE_HIST_BUCKETS]; // BEGIN .. COMMIT
    uint64_t job_us_hist[STORE_HIST_BUCKETS];    // submit .. completion
    uint64_t batch_hist[STORE_HIST_BUCKETS];
    // WAL checkpoints (SQLite): passes by the background checkpointer, the writer's top-ups
    // (after a pass once the WAL is large; they let the next commit restart the WAL), and the
    // WAL's size in pages after the last commit.
    uint64_t checkpoints;
    uint64_t checkpoint_topups;
    uint64_t wal_pages;
    // The signer-status cache: lookups answered from it, lookups that read the database,
    // invalidations (one certificate, or the whole cache).
    uint64_t status_hits;
    uint64_t status_misses;
    uint64_t status_invalidations;
    uint64_t status_flushes;
    // Connections to a database server (PostgreSQL): reconnects after a lost connection (the
    // writer's, the readers' and the leader lock's), and the writer's round trips for batches
    // (one per committed batch, more when a job the database refused made it run again).
    uint64_t reconnects;
    uint64_t round_trips;
} store_stats;

typedef struct store store;
typedef struct store_reader store_reader;

// store_open opens (creating if needed) the store at |url|, creates or migrates its schema, and
// starts the writer thread. |url| is "sqlite:PATH", or "postgresql://..." / "postgres://..." (a
// libpq URI) or "postgresql:KEY=VALUE ..." (a libpq keyword/value string): the password must
// come from a passfile (the passfile keyword or PGPASSFILE), never the URL (STORE_E_URL).
// Every PostgreSQL connection gets connect_timeout=5, TCP keepalives and
// fallback_application_name certmint-writer/-reader/-leader unless the URL sets its own.
// |opts| may be NULL. Fails with STORE_E_URL or STORE_E_UNSUPPORTED for a bad URL,
// STORE_E_UNAVAILABLE when the database server cannot be reached, STORE_E_SCHEMA_TOO_NEW for a
// database written by a newer certmint, STORE_E_NOT_A_STORE for a foreign file,
// STORE_E_DB/STORE_E_BUSY otherwise; every failure is logged with the URL and the reason. The
// caller owns |*out_store| and frees it with store_close. Thread: any; blocks for the open and
// migration.
CM_RESULT store_open(store **out_store, const char *url, const store_options *opts);

// store_close stops accepting jobs (later submissions complete with STORE_E_CLOSED), commits
// and completes everything already queued, stops the writer and closes the database. Every
// reader must have been closed. NULL is a no-op. Thread: the owner; blocks until the writer
// finished.
void store_close(store *s);

// store_submit queues |job| for the writer. It never blocks on I/O (only on the queue lock for
// a few instructions) and never fails: every job comes back through job->cq exactly once.
// Thread: any.
void store_submit(store *s, store_job *job);

// store_submit_batch queues |n| jobs under one lock with at most one wake-up of the writer; they
// execute in array order (and usually in the same transaction). Thread: any.
void store_submit_batch(store *s, store_job *const *jobs, size_t n);

// store_run submits |job| and waits for it: the blocking convenience for tools and tests (never
// an I/O loop). job->cq is replaced by a private queue. Returns job->result. Thread: any;
// blocks for one group commit (a few ms with synchronous=FULL on a disk).
CM_RESULT store_run(store *s, store_job *job);

// store_run_batch is store_run for |n| jobs submitted as one batch. Returns CM_OK when all
// succeeded, otherwise the first failing job's result; each job's own result is in the job.
CM_RESULT store_run_batch(store *s, store_job *const *jobs, size_t n);

// store_get_stats copies the writer's counters into |out|. Thread: any; takes the queue lock.
void store_get_stats(store *s, store_stats *out);

// store_backend_name is "sqlite" or "postgresql". Static storage. Thread: any.
const char *store_backend_name(const store *s);

// store_healthy reports whether the store can reach its database: false from the moment the
// writer or a reader lost its connection (or the writer's check after 1 s idle failed) until
// the writer's next successful round trip (within about a second when idle). While a
// connection is lost its jobs or reads fail fast with STORE_E_UNAVAILABLE. SQLite is always
// healthy. Thread: any; an atomic load, cheap enough for every /healthz request.
bool store_healthy(const store *s);

// store_leader_try reports in |*out_is_leader| whether this store holds the leader lock: the
// right to run the duties only one node sharing the database may run (issuing CRLs, the
// confirm-timeout sweep, transaction expiry). PostgreSQL: a session advisory lock on a
// dedicated connection, taken when free and confirmed with a round trip while held; when the
// holder dies its session ends and another node's next call takes the lock. Call it before
// each round of duties (every few seconds). A lost connection gives up the lock (false) and
// the next call reconnects. SQLite: always the leader. Fails (with *out_is_leader false) with
// STORE_E_UNAVAILABLE when the database cannot be reached. Thread: one caller at a time (the
// maintenance thread); blocks for one round trip.
CM_RESULT store_leader_try(store *s, bool *out_is_leader);

// ---------------------------------------------------------------------------------------------
// Reads
//
// Request-path reads (store_cert_get, store_cert_get_by_txn, store_txn_get, store_crl_get) are
// single lookups on a primary key or index: O(log n) page reads, tens of µs when the pages are
// cached. They never wait for the writer (WAL); they block only on disk reads of uncached pages
// and, rarely, for up to busy_timeout_ms while another connection recovers the WAL index.
// store_cert_list, store_cert_count, store_revoked_list and store_reader_check scan tables and
// are for tools, the CRL builder and tests, not for the request path.

// store_reader_open opens a read connection for the calling thread. The caller owns
// |*out_reader| and closes it with store_reader_close before store_close. STORE_E_DB on failure.
// Thread: the returned reader is confined to one thread at a time.
CM_RESULT store_reader_open(store *s, store_reader **out_reader);

// store_reader_close closes |r|. NULL is a no-op.
void store_reader_close(store_reader *r);

// store_cert_get looks the certificate up by (ca, serial) and fills |out| with copies in |a|.
// STORE_E_NOT_FOUND when absent, CM_E_NOMEM when |a| is full.
CM_RESULT store_cert_get(store_reader *r, cm_arena *a, store_cert *out, const char *ca,
                         cm_span serial);

// store_cert_get_by_txn returns the certificate that the transaction (ca, tid) issued, through
// the transaction's row: STORE_E_NOT_FOUND when the transaction is unknown, was swept, or has
// no certificate yet.
CM_RESULT store_cert_get_by_txn(store_reader *r, cm_arena *a, store_cert *out, const char *ca,
                                cm_span transaction_id);

// store_txn_get looks a transaction up. Expired transactions not yet deleted are returned as
// they are (check expires_at). STORE_E_TXN_NOT_FOUND when absent.
CM_RESULT store_txn_get(store_reader *r, cm_arena *a, store_txn *out, const char *ca,
                        cm_span transaction_id);

// store_filter selects certificates for store_cert_list and store_cert_count. NULL/ANY/0 fields
// do not filter.
typedef struct store_filter {
    const char *ca;
    store_cert_status status;   // STORE_CERT_ANY for every status
    const char *subject_substr; // case-sensitive substring of subject_text
    int64_t after_id;           // only rows with id > after_id (paging cursor)
    uint32_t limit;             // at most this many rows; 0: no limit
} store_filter;

// store_cert_fn receives one row; |c| and everything it points at are valid only during the
// call. Return false to stop the listing early.
typedef bool (*store_cert_fn)(void *ctx, const store_cert *c);

// store_cert_list calls |fn| for each certificate matching |f|, in id (issue) order.
// Thread: the reader's. Scans: for tools.
CM_RESULT store_cert_list(store_reader *r, const store_filter *f, store_cert_fn fn, void *ctx);

// store_cert_count counts the certificates matching |f| (after_id and limit are ignored).
CM_RESULT store_cert_count(store_reader *r, const store_filter *f, uint64_t *out_count);

// store_revoked_fn receives one CRL entry (revoked or held certificate); |serial| is valid only
// during the call. Return false to stop.
typedef bool (*store_revoked_fn)(void *ctx, cm_span serial, int64_t revoked_at, int reason);

// store_revoked_list calls |fn| for every certificate of |ca| that is REVOKED or on HOLD and
// whose notAfter is at or after |not_after_min| (0: all; RFC 5280 §3.3 lets a CRL drop entries
// of expired certificates). Served by a partial index on revoked rows.
CM_RESULT store_revoked_list(store_reader *r, const char *ca, int64_t not_after_min,
                             store_revoked_fn fn, void *ctx);

// store_crl_get returns the CRL state of |ca|. STORE_E_NOT_FOUND when the CA never revoked a
// certificate nor took a CRL number.
CM_RESULT store_crl_get(store_reader *r, cm_arena *a, store_crl *out, const char *ca);

// store_pending_get reads the pending row of the transaction (ca, transaction_id), copies in
// |a|; store_pending_get_id the row |id|. STORE_E_PENDING_UNKNOWN when absent. One lookup on a
// unique index (the request path: pollReq). Thread: the reader's.
CM_RESULT store_pending_get(store_reader *r, cm_arena *a, store_pending *out, const char *ca,
                            cm_span transaction_id);
CM_RESULT store_pending_get_id(store_reader *r, cm_arena *a, store_pending *out, int64_t id);

// store_pending_filter selects rows for store_pending_list: of |ca| (NULL: every CA), in one of
// the states whose bit (1u << state) is set in |states| (0: every state), with id > |after_id|,
// at most |limit| (0: no limit), in id (arrival) order. Thread: value type.
typedef struct store_pending_filter {
    const char *ca;
    uint32_t states;
    int64_t after_id;
    uint32_t limit;
} store_pending_filter;

// store_pending_fn receives one row; |p| and everything it points at are valid only during the
// call. Return false to stop.
typedef bool (*store_pending_fn)(void *ctx, const store_pending *p);

// store_pending_list calls |fn| for each row matching |f| (an index on (state, id) serves it):
// for `certmint pending` and for the drains looking for work. Thread: the reader's.
CM_RESULT store_pending_list(store_reader *r, const store_pending_filter *f, store_pending_fn fn,
                             void *ctx);

// store_cert_state is what decides whether a certificate may authenticate a request: its
// status and notAfter, whether a confirmed key update superseded it, and whether an update of it
// waits (a reservation or an unconfirmed certificate replacing it). Thread: value type.
typedef struct store_cert_state {
    store_cert_status status;
    int reason; // CRLReason when REVOKED/HOLD, else -1
    int64_t not_after;
    int64_t superseded_at; // 0: not superseded
    bool update_pending;
    bool from_cache; // answered without a database read
} store_cert_state;

// store_cert_state_get fills |out| for the certificate (ca, serial) from the signer-status cache
// or, on a miss, with one indexed read whose answer it then caches (unless a write changed the
// cache meanwhile: the generation check below). STORE_E_NOT_FOUND when the store has no such
// certificate (not cached). Thread: the reader's; the cache is shared and locked per shard.
CM_RESULT store_cert_state_get(store_reader *r, store_cert_state *out, const char *ca,
                               cm_span serial);

// store_status_invalidate drops the cached status of (ca, serial); store_status_invalidate_all
// drops every entry. Both bump the cache's generation, so a status read from the database
// before the call is not cached after it. The writer calls them for every committed change;
// a backend shared by several nodes calls them for the changes other nodes make.
// Thread: any.
void store_status_invalidate(store *s, const char *ca, cm_span serial);
void store_status_invalidate_all(store *s);

// store_status_generation returns the cache's generation: it changes with every invalidation.
// Thread: any.
uint64_t store_status_generation(store *s);

// store_txn_fn receives one transaction; |t| is valid only during the call. Return false to
// stop.
typedef bool (*store_txn_fn)(void *ctx, const store_txn *t);

// store_txn_list calls |fn| for every transaction of every CA. Scans: store copy and tests.
CM_RESULT store_txn_list(store_reader *r, store_txn_fn fn, void *ctx);

// store_crl_fn receives one CA's CRL state; |c| is valid only during the call.
typedef bool (*store_crl_fn)(void *ctx, const store_crl *c);

// store_crl_list calls |fn| for the CRL state of every CA that has one.
CM_RESULT store_crl_list(store_reader *r, store_crl_fn fn, void *ctx);

// store_use_fn receives one credential's count; |u| is valid only during the call.
typedef bool (*store_use_fn)(void *ctx, const store_use *u);

// store_use_list calls |fn| for every credential_use row (store copy, tests).
CM_RESULT store_use_list(store_reader *r, store_use_fn fn, void *ctx);

// store_copy_counts counts rows by table.
typedef struct store_copy_counts {
    uint64_t certs;
    uint64_t txns;
    uint64_t crl_states;
    uint64_t uses;
    uint64_t pending; // waiting requests (schema 4)
} store_copy_counts;

// store_copy_count counts the rows of every table through |r| (scans: tools).
CM_RESULT store_copy_count(store_reader *r, store_copy_counts *out);

// store_copy copies every certificate (in issue order, statuses, revocations and key updates
// as they are), every transaction (with the reservation it holds: serial, key and replaced
// certificate), every CRL state, every credential's count and every waiting request (the
// pending table, with its ids) from |src| into |dst| (copy a stopped instance), in batches of
// one transaction each (STORE_OP_COPY_*), and adds what it wrote to |out_copied|. With |clear| it
// first empties |dst| (STORE_OP_COPY_CLEAR). It does not check that |dst| was empty nor verify the
// result: the caller compares store_copy_count of both (certmint store copy does). Stops at the
// first failed job and returns its result. Thread: the caller's (|src|'s); blocks.
CM_RESULT store_copy(store *dst, store_reader *src, bool clear, store_copy_counts *out_copied);

// store_reader_check runs the backend's full integrity check (SQLite PRAGMA integrity_check and
// foreign_key_check; PostgreSQL: the schema version and certmint's invariants over every row).
// CM_OK when it reports ok, STORE_E_CORRUPT (logged with the first problem) otherwise.
// Reads the whole database: tools and tests only.
CM_RESULT store_reader_check(store_reader *r);

// ---------------------------------------------------------------------------------------------
// Free space (store_space.c)
//
// store_space watches the free space of the filesystem that holds a store's database, so the
// server refuses new enrolments with a readable reason while there is still room to commit
// what is already in flight, instead of SQLite failing in the middle of a commit. A
// maintenance thread refreshes the reading (store_space_refresh: one statvfs); the request path
// only reads it (store_space_check: a few atomic loads), so no request pays for a system call.

// store_space_probe_fn reads the free bytes of the filesystem holding |dir| (the default is
// statvfs: blocks available to unprivileged users times the fragment size). IO-class code on
// failure. A test replaces it to fake a full disk.
typedef cm_result (*store_space_probe_fn)(void *arg, const char *dir, uint64_t *out_free);

#define STORE_SPACE_UNKNOWN UINT64_MAX // store_space_free before the first reading

// store_space: the watch of one store. Thread: |dir|, |min_free|, |probe| and |probe_arg| are
// immutable after store_space_init (set |probe| before the first refresh); the rest are
// atomics written by the refreshing thread and read by any.
typedef struct store_space {
    char dir[1024];             // the database's directory; "" when the store has none
    uint64_t min_free;          // bytes; 0: watch only, never refuse
    store_space_probe_fn probe; // NULL: statvfs
    void *probe_arg;
    uint64_t free_bytes; // the last reading, STORE_SPACE_UNKNOWN before the first
    uint64_t refused;    // enrolments refused by store_space_check
    uint64_t failures;   // readings that failed (the previous one stays in force)
    bool low;            // free_bytes < min_free at the last reading
} store_space;

// store_space_init prepares |sp| for the store at |url|: for "sqlite:PATH" the directory of
// PATH; for a store without a local file (another backend) the watch stays off (dir "", every
// check passes, no reading). Takes no reading yet. STORE_E_URL when the directory does not fit
// |dir|. Thread: start-up.
CM_RESULT store_space_init(store_space *sp, const char *url, uint64_t min_free);

// store_space_refresh reads the free space now and updates the watch. Crossing below
// |min_free| logs a WARN ("store: only 12 MiB free on /var/lib/certmint, below store_min_free
// (256 MiB): new enrolments are refused"), repeated (rate-limited) while it lasts; going back
// above logs an INFO. A failed reading is counted, logged (rate-limited) and leaves the last
// reading in force; its code is returned. Thread: one refreshing thread (maintenance).
CM_RESULT store_space_refresh(store_space *sp);

// store_space_check is the request path's check before a new enrolment: CM_OK, or, when the
// last reading was below |min_free|, STORE_E_LOW_SPACE (failInfo systemUnavail) with the
// reason in |why| ("store full: only 12 MiB free on /var/lib/certmint, below store_min_free
// (256 MiB)") and the refusal counted. |sp| NULL: CM_OK. Thread: any.
CM_RESULT store_space_check(store_space *sp, cm_why *why);

// store_space_free returns the last reading in bytes (STORE_SPACE_UNKNOWN before the first or
// when the watch is off). Thread: any.
uint64_t store_space_free(const store_space *sp);

// store_space_refused returns how many enrolments store_space_check refused. Thread: any.
uint64_t store_space_refused(const store_space *sp);

// store_space_size_text writes |bytes| for an operator: "512 KiB", "12 MiB", "37.5 GiB".
// Returns |out|. Thread: any; pure.
const char *store_space_size_text(char *out, size_t cap, uint64_t bytes);

#endif // CERTMINT_ENGINE_STORE_STORE_H
