// engine/store PostgreSQL backend internals: the connections with their reconnection state,
// the statement tables, parameters and results, shared by store_pg.c (schema, migration, open,
// reader handles, the leader lock), store_pg_conn.c (connecting, reconnecting with backoff,
// error mapping), store_pg_write.c (the writer's pipelined batches) and store_pg_read.c
// (reads). Only those files include this; store.c sees store_pg_ops only.
#ifndef CERTMINT_ENGINE_STORE_STORE_PG_INTERNAL_H
#define CERTMINT_ENGINE_STORE_STORE_PG_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "engine/store/store_internal.h"

// ---------------------------------------------------------------------------------------------
// Statements: prepared once per connection (again after each reconnect), named "cm_w<i>" and
// "cm_r<i>", the SQL and parameter types in store_pg.c.

// The writer's statements (text results), one per job op.
enum {
    PGW_CERT_INSERT,
    PGW_CONFIRM,
    PGW_REVOKE,
    PGW_RELEASE,
    PGW_TXN_CREATE,
    PGW_TXN_UPDATE,
    PGW_TXN_DELETE,
    PGW_TXN_EXPIRE,
    PGW_SWEEP,
    PGW_CRL_NEXT,
    PGW_CRL_PUT,
    PGW_COPY_CERT,
    PGW_COPY_CRL,
    PGW_COPY_CLEAR,
    PGW_COPY_USE,
    PGW_COPY_TXN,
    PGW_COPY_PENDING,
    PGW_CERT_INSERT_UPDATE, // a STORE_OP_CERT_INSERT of a kur's certificate (|replaces|)
    PGW_RESERVE,
    PGW_UNRESERVE,
    PGW_CERT_ROWS,    // many STORE_OP_CERT_INSERTs in one statement (store_pg_rows.c)
    PGW_TXN_ROWS,     // many STORE_OP_TXN_CREATEs in one statement
    PGW_TXN_UPD_ROWS, // many STORE_OP_TXN_UPDATEs in one statement
    // The pending table (schema 4): one function per STORE_OP_PENDING_* op.
    PGW_PEND_ADD,
    PGW_PEND_CLAIM,
    PGW_PEND_DECIDE,
    PGW_PEND_ISSUE,
    PGW_PEND_DELIVER,
    PGW_PEND_EXPIRE,
    PGW_COUNT,
};

// A reader's statements (binary results).
enum {
    PGR_CERT_GET,
    PGR_CERT_BY_TXN,
    PGR_TXN_GET,
    PGR_CERT_LIST,
    PGR_CERT_COUNT,
    PGR_REVOKED,
    PGR_CRL_GET,
    PGR_TXN_LIST,
    PGR_CRL_LIST,
    PGR_CERT_STATE,
    PGR_USE_LIST,
    PGR_PEND_GET,
    PGR_PEND_GET_ID,
    PGR_PEND_LIST,
    PGR_COUNT,
};

extern const store_pg_sql store_pg_write_sql[PGW_COUNT];
extern const store_pg_sql store_pg_read_sql[PGR_COUNT];

// store_pg_status_text[s] is the cert.status text of store_cert_status |s| (not ANY).
extern const char *const store_pg_status_text[4];

// The codes certmint's PL/pgSQL functions return (store_pg.c), mapped by store_pg_fn_code.
enum {
    STORE_PG_FN_OK = 0,
    STORE_PG_FN_NOT_FOUND = 1,
    STORE_PG_FN_ALREADY_REVOKED = 2,
    STORE_PG_FN_ALREADY_CONFIRMED = 3,
    STORE_PG_FN_NOT_ON_HOLD = 4,
    STORE_PG_FN_CONFIRM_EXPIRED = 5,
    STORE_PG_FN_TXN_NOT_FOUND = 6,
    STORE_PG_FN_TXN_IN_USE = 7,
    STORE_PG_FN_DUPLICATE_SERIAL = 8,
    STORE_PG_FN_KEY_REUSED = 9,
    STORE_PG_FN_LIMIT = 10,
    STORE_PG_FN_UPDATE_PENDING = 11,
    STORE_PG_FN_PENDING_STATE = 12,
    STORE_PG_FN_PENDING_UNKNOWN = 13,
};

// The advisory lock keys, (class, hashtext(current_schema())) so that instances in different
// schemas of one database do not share them: STORE_PG_LOCK_MIGRATE serialises the schema
// migrations of nodes starting together, STORE_PG_LOCK_LEADER is the leader lock. "CMNT", "CMNU".
#define STORE_PG_LOCK_MIGRATE 1129139796
#define STORE_PG_LOCK_LEADER  1129139797

// ---------------------------------------------------------------------------------------------
// Connections

typedef enum store_pg_role {
    STORE_PG_WRITER,
    STORE_PG_READER,
    STORE_PG_LEADER,
    STORE_PG_LISTENER,
} store_pg_role;

// store_pg_conn is one connection and its reconnection state: after a loss the next attempt
// waits |backoff_ns| (100 ms, doubling up to 1 s, reset by a success). Thread: its owner's (the
// writer, the reader handle's thread, or whoever holds the leader mutex).
typedef struct store_pg_conn {
    PGconn *pg; // NULL while lost
    store_backend *b;
    store_pg_role role;
    uint64_t next_try_ns; // no reconnection attempt before this (monotonic)
    uint64_t backoff_ns;
    bool down_logged; // the loss was logged; the next success logs the recovery
    bool was_up;      // connected once: a later connection is a reconnect (counted)
} store_pg_conn;

// store_pg_slot is one job of the batch being run: whether it is still to run, and the outcome
// of the current attempt (applied to the job only once the batch committed).
typedef struct store_pg_slot {
    store_job *job;
    bool run;     // false: failed alone for good (its result is set)
    bool decided; // its outcome is known without the database (a duplicate within the batch)
    uint32_t code;
    uint64_t value;
    uint8_t also[20]; // store_job.also_serial of the attempt
    size_t also_len;
    bool many; // store_job.changed_many of the attempt
} store_pg_slot;

// store_pg_stmt is one statement of a batch's pipeline: one job (slot |first|), or the
// certificate inserts (CERTS), transaction creations (TXNS) or transaction updates (TXN_UPDS)
// among slots [first, end) as one multi-row statement (store_pg_rows.c).
typedef enum store_pg_stmt_kind {
    STORE_PG_ONE,
    STORE_PG_CERTS,
    STORE_PG_TXNS,
    STORE_PG_TXN_UPDS,
} store_pg_stmt_kind;

typedef struct store_pg_stmt {
    store_pg_stmt_kind kind;
    size_t first;
    size_t end;
} store_pg_stmt;

// The most rows one multi-row statement carries.
#define STORE_PG_ROWS 256

// store_backend is the PostgreSQL store. Thread: |w|, |last_ok_ns| and |slots| belong to the
// writer thread; |leader| and |leader_held| are guarded by |leader_mu|; the atomics are read
// anywhere; the rest is immutable after open.
struct store_backend {
    char *conninfo;      // the URL or keyword/value string given to store_open
    int lock_timeout_ms; // the writer's lock_timeout (store_options.busy_timeout_ms)
    store_pg_conn w;
    uint64_t last_ok_ns;  // the writer's last successful round trip
    store_pg_slot *slots; // the batch's jobs, grown as needed
    size_t slots_cap;
    store_pg_stmt *stmts; // the batch's statements, as many as slots at most
    uint8_t *rows;        // the arrays of a multi-row statement being built
    size_t rows_len;
    size_t rows_cap;
    atomic_bool healthy;
    atomic_uint_fast64_t reconnects;
    atomic_uint_fast64_t round_trips;
    pthread_mutex_t leader_mu;
    store_pg_conn leader; // guarded_by(leader_mu)
    bool leader_held;     // guarded_by(leader_mu)
    // Other nodes' status changes (store_pg_listen.c): the store's cache, the listener's
    // thread and connection (its own), a wake-up for its poll, the writer's backend pid (whose
    // announcements the listener skips) and the schema announcements must name.
    store_cache *cache;
    store_pg_conn lc; // the listener thread's
    pthread_t listen_thread;
    atomic_bool listen_stop;
    int listen_wake;
    bool listen_on;
    atomic_int writer_pid;
    atomic_uint_fast64_t notifications; // announcements applied to the cache
    char schema[64];
};

// store_backend_reader is one read connection. Thread: one at a time.
struct store_backend_reader {
    store_pg_conn c;
};

// store_pg_conn_open connects |c| (role and backend set) with certmint's defaults before the
// conninfo's own settings, sets up the session for its role and, unless |prepare| is false,
// prepares the role's statements. CM_OK, STORE_E_UNAVAILABLE when the server cannot be reached,
// STORE_E_URL for a conninfo libpq cannot parse, STORE_E_DB otherwise; logged. Counts no
// reconnect. Thread: |c|'s owner.
CM_RESULT store_pg_conn_open(store_pg_conn *c, bool prepare);

// store_pg_conn_ready makes sure |c| is connected: CM_OK when it is, else one connection
// attempt if the backoff allows it (counted in b->reconnects when it succeeds and |c| had been
// connected before), else
// STORE_E_UNAVAILABLE at once. Thread: |c|'s owner.
CM_RESULT store_pg_conn_ready(store_pg_conn *c);

// store_pg_conn_lost closes |c| after a lost connection (logged once with |why|), schedules the
// next attempt and, for the writer or a reader, clears b->healthy (which the writer's next
// successful round trip sets again). Returns STORE_E_UNAVAILABLE.
cm_result store_pg_conn_lost(store_pg_conn *c, const char *why);

// store_pg_conn_close closes |c| (NULL pg is fine).
void store_pg_conn_close(store_pg_conn *c);

// store_pg_fail maps a failed result (|res| may be NULL) on |c| to a store code and logs it:
// a lost connection closes |c| (store_pg_conn_lost) and gives STORE_E_UNAVAILABLE.
cm_result store_pg_fail(store_pg_conn *c, const PGresult *res, const char *what);

// store_pg_code maps an error result's SQLSTATE to a store code without logging; |*out_job|
// says whether the error belongs to one job (a constraint or a bad value: classes 22 and 23)
// rather than to the batch. |res| may be NULL (no result: the connection is gone).
uint32_t store_pg_code(PGconn *pg, const PGresult *res, bool *out_job);

// store_pg_exec runs |sql| (no parameters, text results) with PQexec and expects |want|
// (PGRES_COMMAND_OK or PGRES_TUPLES_OK); |*out_res| gets the result when non-NULL (the caller
// PQclears it), else it is cleared here. Failures as store_pg_fail.
CM_RESULT store_pg_exec(store_pg_conn *c, const char *sql, ExecStatusType want, PGresult **out_res);

// ---------------------------------------------------------------------------------------------
// Parameters: binary format, types as prepared (store_pg_sql.types).

#define STORE_PG_MAX_PARAMS 28 // certmint_pending_add's

typedef struct store_pg_params {
    int n;
    const char *values[STORE_PG_MAX_PARAMS];
    int lengths[STORE_PG_MAX_PARAMS];
    int formats[STORE_PG_MAX_PARAMS];
    uint8_t ints[STORE_PG_MAX_PARAMS][8];
} store_pg_params;

static inline void store_pg_param_null(store_pg_params *p)
{
    p->values[p->n] = NULL;
    p->lengths[p->n] = 0;
    p->formats[p->n] = 1;
    p->n++;
}

// Optional spans: empty means NULL (required ones were checked non-empty by validation).
static inline void store_pg_param_span(store_pg_params *p, cm_span s)
{
    if (s.len == 0) {
        store_pg_param_null(p);
        return;
    }
    p->values[p->n] = (const char *)s.p;
    p->lengths[p->n] = (int)s.len;
    p->formats[p->n] = 1;
    p->n++;
}

static inline void store_pg_param_text(store_pg_params *p, const char *t)
{
    if (t == NULL) {
        store_pg_param_null(p);
        return;
    }
    // A text parameter in binary format is its bytes, without the NUL.
    p->values[p->n] = t;
    p->lengths[p->n] = (int)strlen(t);
    p->formats[p->n] = 1;
    p->n++;
}

static inline void store_pg_param_int(store_pg_params *p, int64_t v)
{
    uint8_t *b = p->ints[p->n];
    const uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(u >> (56 - 8 * i)); // int8 in binary: big-endian
    }
    p->values[p->n] = (const char *)b;
    p->lengths[p->n] = 8;
    p->formats[p->n] = 1;
    p->n++;
}

// Optional times: 0 means NULL.
static inline void store_pg_param_time(store_pg_params *p, int64_t t)
{
    if (t == 0) {
        store_pg_param_null(p);
    } else {
        store_pg_param_int(p, t);
    }
}

// ---------------------------------------------------------------------------------------------
// The store_backend_ops functions, by file.

// store_pg_rows.c. Thread: the writer. store_pg_plan turns the slots still to run into
// statements (b->stmts), one per job except that each run of consecutive certificate inserts
// and transaction creations (the jobs of enrolments) becomes two multi-row statements, the
// certificates first, unless |single|; it decides duplicates within such a run. Returns the
// number of statements. store_pg_rows_params fills |p| with the arrays of a CERTS or TXNS
// statement (in b->rows: valid until the next call); STORE_E_INVALID / CM_E_NOMEM on failure.
// store_pg_rows_outcome sets the outcome of each of its slots from the rows it returned.
size_t store_pg_plan(store_backend *b, size_t n, bool single);
CM_RESULT store_pg_rows_params(store_backend *b, const store_pg_stmt *st, store_pg_params *p);
void store_pg_rows_outcome(store_backend *b, const store_pg_stmt *st, const PGresult *res);

// store_pg_write.c. Thread: the writer.
cm_result store_pg_exec_batch(store_backend *b, store_job *first);
uint32_t store_pg_idle(store_backend *b);

// store_pg_read.c. Thread: the reader handle's.
CM_RESULT store_pg_cert_get(store_backend_reader *r, cm_arena *a, store_cert *out, const char *ca,
                            cm_span serial);
CM_RESULT store_pg_cert_get_by_txn(store_backend_reader *r, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span transaction_id);
CM_RESULT store_pg_txn_get(store_backend_reader *r, cm_arena *a, store_txn *out, const char *ca,
                           cm_span transaction_id);
CM_RESULT store_pg_cert_list(store_backend_reader *r, const store_filter *f, store_cert_fn fn,
                             void *ctx);
CM_RESULT store_pg_cert_count(store_backend_reader *r, const store_filter *f, uint64_t *out_count);
CM_RESULT store_pg_revoked_list(store_backend_reader *r, const char *ca, int64_t not_after_min,
                                store_revoked_fn fn, void *ctx);
CM_RESULT store_pg_crl_get(store_backend_reader *r, cm_arena *a, store_crl *out, const char *ca);
CM_RESULT store_pg_check(store_backend_reader *r);
CM_RESULT store_pg_txn_list(store_backend_reader *r, store_txn_fn fn, void *ctx);
CM_RESULT store_pg_crl_list(store_backend_reader *r, store_crl_fn fn, void *ctx);
CM_RESULT store_pg_use_list(store_backend_reader *r, store_use_fn fn, void *ctx);
CM_RESULT store_pg_cert_state(store_backend_reader *r, store_cert_state *out, const char *ca,
                              cm_span serial);
CM_RESULT store_pg_pending_get(store_backend_reader *r, cm_arena *a, store_pending *out,
                               const char *ca, cm_span transaction_id);
CM_RESULT store_pg_pending_get_id(store_backend_reader *r, cm_arena *a, store_pending *out,
                                  int64_t id);
CM_RESULT store_pg_pending_list(store_backend_reader *r, const store_pending_filter *f,
                                store_pending_fn fn, void *ctx);

// store_pg_listen.c: the listener of other nodes' status changes. store_pg_attach_cache starts
// it (a thread with its own connection) when the store has a status cache: CM_E_NOMEM when it
// cannot (the store then does not open: a cache nobody invalidates for the other nodes would go
// stale); store_pg_listen_stop stops it (a no-op when it did not start). Thread: store_open /
// the closer.
CM_RESULT store_pg_attach_cache(store_backend *b, store_cache *cache);
void store_pg_listen_stop(store_backend *b);

#endif // CERTMINT_ENGINE_STORE_STORE_PG_INTERNAL_H
