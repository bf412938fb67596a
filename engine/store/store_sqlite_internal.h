// engine/store SQLite backend internals: the connections, the statement indexes and the helpers
// shared by store_sqlite.c (schema, SQL, open, reader handles), store_sqlite_ckpt.c (background
// WAL checkpoints), store_sqlite_write.c (the writer's jobs) and store_sqlite_read.c (reads).
// Only those files include this; store.c and the other backends see store_sqlite_ops only.
#ifndef CERTMINT_ENGINE_STORE_STORE_SQLITE_INTERNAL_H
#define CERTMINT_ENGINE_STORE_STORE_SQLITE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/store/store_internal.h"

// ---------------------------------------------------------------------------------------------
// Statements: one prepared statement per index and connection, the SQL text in store_sqlite.c.

// The write connection's statements (store_backend.st).
enum {
    SQW_BEGIN,
    SQW_COMMIT,
    SQW_ROLLBACK,
    SQW_SAVEPOINT,
    SQW_RELEASE,
    SQW_ROLLBACK_TO,
    SQW_CERT_INSERT,
    SQW_CERT_STATUS,
    SQW_CERT_CONFIRM,
    SQW_CERT_REVOKE,
    SQW_CERT_RELEASE,
    SQW_CRL_BUMP,
    SQW_TXN_INSERT,
    SQW_TXN_UPDATE,
    SQW_TXN_DELETE,
    SQW_TXN_EXPIRE,
    SQW_SWEEP_BUMP,
    SQW_SWEEP,
    SQW_CRL_NEXT,
    SQW_CRL_PUT,
    SQW_SUPERSEDE,
    SQW_CERT_STATE,
    SQW_TXN_RESERVE,
    SQW_SERIAL_USED,
    SQW_KEY_USED,
    SQW_USE_COUNT,
    SQW_USE_RETURN,
    SQW_TXN_UNRESERVE,
    SQW_EXPIRE_PENDING,
    SQW_DATA_VERSION,
    SQW_UPDATE_BUSY,
    SQW_COPY_CERT,
    SQW_COPY_CRL,
    SQW_COPY_USE,
    SQW_COPY_TXN,
    SQW_COPY_PENDING,
    // The pending table (schema 4; store_sqlite_pending.c).
    SQW_PEND_INSERT,
    SQW_PEND_TXN_NOTE,
    SQW_PEND_ROW,
    SQW_PEND_ROW_TID,
    SQW_PEND_CLAIM,
    SQW_PEND_APPROVE,
    SQW_PEND_REJECT,
    SQW_PEND_ISSUED,
    SQW_PEND_TXN_ISSUE,
    SQW_PEND_DELIVER,
    SQW_PEND_TXN_DELIVER,
    SQW_PEND_CERT_DEADLINE,
    SQW_PEND_RSV,
    SQW_PEND_UNRESERVE,
    SQW_PEND_EXPIRED,
    SQW_PEND_PURGE,
    SQW_COUNT,
};


// The statements of a reader handle (store_backend_reader.st).
enum {
    SQR_CERT_GET,
    SQR_CERT_BY_TXN,
    SQR_TXN_GET,
    SQR_CERT_LIST,
    SQR_CERT_COUNT,
    SQR_REVOKED,
    SQR_CRL_GET,
    SQR_CERT_STATE,
    SQR_TXN_LIST,
    SQR_CRL_LIST,
    SQR_USE_LIST,
    SQR_PEND_GET,
    SQR_PEND_GET_ID,
    SQR_PEND_LIST,
    SQR_COUNT,
};

// store_sq_write_sql[i] and store_sq_read_sql[i] are the SQL of statement i. Immutable.
extern const char *const store_sq_write_sql[SQW_COUNT];
extern const char *const store_sq_read_sql[SQR_COUNT];

// store_sq_status_text[s] is the cert.status text of store_cert_status |s| (not STORE_CERT_ANY).
extern const char *const store_sq_status_text[4];

// ---------------------------------------------------------------------------------------------
// Connections

// The background checkpointer's state; the design is described at the top of
// store_sqlite_ckpt.c.
typedef enum store_sq_ckpt_state {
    STORE_SQ_CKPT_IDLE,      // nothing asked
    STORE_SQ_CKPT_REQUESTED, // the writer asked for a pass
    STORE_SQ_CKPT_RUNNING,   // the checkpointer is copying
    STORE_SQ_CKPT_PASSED,    // a pass finished: the writer may top up after its next batch
} store_sq_ckpt_state;

typedef struct store_sq_ckpt {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sqlite3 *db;               // the checkpointer's connection; thread: the checkpointer
    store_sq_ckpt_state state; // guarded_by(mu)
    bool stop;                 // guarded_by(mu)
    uint64_t passes;           // guarded_by(mu)
    uint64_t topups;           // guarded_by(mu)
    uint64_t wal_pages;        // guarded_by(mu): the WAL's size after the last commit
    int copied;                // guarded_by(mu): WAL frames copied as of the last pass
} store_sq_ckpt;

// store_backend is the write connection. Thread: the writer thread (after open).
struct store_backend {
    sqlite3 *db;
    char *path;          // immutable: readers open the same file
    int busy_timeout_ms; // immutable
    sqlite3_stmt *st[SQW_COUNT];
    uint32_t ckpt_pages; // immutable: WAL pages that start a background checkpoint
    int wal_pages;       // written by the WAL hook on the writer thread
    bool ckpt_on;        // immutable after open: the checkpointer thread runs
    store_sq_ckpt ckpt;
    int64_t data_version; // PRAGMA data_version after the previous batch (changed_elsewhere)
};

// store_backend_reader is one read connection. Thread: one at a time.
struct store_backend_reader {
    sqlite3 *db;
    sqlite3_stmt *st[SQR_COUNT];
};

// ---------------------------------------------------------------------------------------------
// Helpers

// store_sq_fail logs the connection's message for |rc| (|db| may be NULL) and returns it as a
// store code (STORE_E_BUSY, STORE_E_FULL, STORE_E_CORRUPT, STORE_E_NOT_A_STORE, CM_E_NOMEM or
// STORE_E_DB). Thread: the connection's.
cm_result store_sq_fail(sqlite3 *db, int rc, const char *what);

// store_sq_prepare prepares |sql| once for the life of the connection (SQLITE_PREPARE_PERSISTENT);
// logs the SQL and fails as store_sq_fail does.
CM_RESULT store_sq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out_st);

// store_sq_exec runs |sql| (one or more statements without results).
CM_RESULT store_sq_exec(sqlite3 *db, const char *sql);

// store_sq_connect opens |path| with the settings every connection shares (no mutex, extended
// result codes, |busy_timeout_ms|); |flags| are sqlite3_open_v2's. Logs the reason on failure.
CM_RESULT store_sq_connect(sqlite3 **out_db, const char *path, int flags, int busy_timeout_ms);

static inline void store_sq_bind_span(sqlite3_stmt *st, int i, cm_span s)
{
    // Optional spans: empty means NULL. Required ones were checked non-empty by validation.
    // Binding cannot fail here: the index is in range and SQLITE_STATIC copies nothing.
    if (s.len == 0) {
        (void)sqlite3_bind_null(st, i);
    } else {
        (void)sqlite3_bind_blob64(st, i, s.p, s.len, SQLITE_STATIC);
    }
}

static inline void store_sq_bind_text(sqlite3_stmt *st, int i, const char *text)
{
    if (text == NULL) {
        (void)sqlite3_bind_null(st, i);
    } else {
        (void)sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
    }
}

static inline void store_sq_bind_time(sqlite3_stmt *st, int i, int64_t t)
{
    if (t == 0) {
        (void)sqlite3_bind_null(st, i);
    } else {
        (void)sqlite3_bind_int64(st, i, t);
    }
}

// store_sq_done resets |st| and drops its bindings so no borrowed pointer outlives the call.
static inline void store_sq_done(sqlite3_stmt *st)
{
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

// store_sq_step_done steps a statement that returns no row and resets it; the SQLite result
// code is returned for the caller to map (constraints mean different things per op).
static inline int store_sq_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    store_sq_done(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

// ---------------------------------------------------------------------------------------------
// The store_backend_ops functions, by file (see store_internal.h for what each does).

// store_sqlite_ckpt.c. store_sq_ckpt_start opens the checkpointer's connection and starts its
// thread; on failure SQLite's automatic checkpoint stays on and the store works as before.
// store_sq_ckpt_stop stops and joins it (a no-op when it did not start). store_sq_after_batch
// asks for a background checkpoint when ckpt_pages frames are waiting to be copied, and tops up
// after a finished pass once the WAL is large. Thread: the writer (stats: any).
void store_sq_ckpt_start(store_backend *b, const store_options *opts);
void store_sq_ckpt_stop(store_backend *b);
void store_sq_after_batch(store_backend *b);
void store_sq_stats(store_backend *b, store_stats *out);

// store_sqlite_write.c. Thread: the writer.
CM_RESULT store_sq_begin(store_backend *b);
CM_RESULT store_sq_commit(store_backend *b);
void store_sq_rollback(store_backend *b);
cm_result store_sq_exec_job(store_backend *b, store_job *job);
bool store_sq_changed_elsewhere(store_backend *b);
// The pieces of the writer's ops that the pending ops reuse: a certificate inserted as
// STORE_OP_CERT_INSERT does (|job| gets what the status cache must forget), a reservation made
// as STORE_OP_TXN_RESERVE does, and a certificate whose status is |status| revoked.
CM_RESULT store_sq_insert_cert(store_backend *b, store_job *job, const store_cert *c);
CM_RESULT store_sq_reserve_rsv(store_backend *b, store_job *job, const store_reservation *v);
CM_RESULT store_sq_revoke_row(store_backend *b, const char *ca, cm_span serial,
                              store_cert_status status, int64_t time, int reason);

// store_sqlite_pending.c: the STORE_OP_PENDING_* jobs (store_sq_pending_exec, inside the job's
// savepoint when store_sq_pending_multi says it has several statements) and the pending reads.
// Thread: the writer (exec), the reader handle's (reads).
cm_result store_sq_pending_exec(store_backend *b, store_job *job);
bool store_sq_pending_multi(store_op op);
CM_RESULT store_sq_pending_get(store_backend_reader *r, cm_arena *a, store_pending *out,
                               const char *ca, cm_span transaction_id);
CM_RESULT store_sq_pending_get_id(store_backend_reader *r, cm_arena *a, store_pending *out,
                                  int64_t id);
CM_RESULT store_sq_pending_list(store_backend_reader *r, const store_pending_filter *f,
                                store_pending_fn fn, void *ctx);

// store_sq_col_span returns column |i| of |st|'s row as a span: pointing into the row when |a|
// is NULL (valid until the next step), else copied into |a| (CM_E_NOMEM when full);
// store_sq_col_text the same for NUL-terminated text ("" for NULL). Thread: the statement's.
CM_RESULT store_sq_col_span(sqlite3_stmt *st, int i, cm_arena *a, cm_span *out);
CM_RESULT store_sq_col_text(sqlite3_stmt *st, int i, cm_arena *a, const char **out);

// store_sqlite_read.c. Thread: the reader handle's. store_sq_check runs PRAGMA integrity_check
// (want one row "ok") and PRAGMA foreign_key_check (want no row): STORE_E_CORRUPT otherwise.
CM_RESULT store_sq_cert_get(store_backend_reader *r, cm_arena *a, store_cert *out, const char *ca,
                            cm_span serial);
CM_RESULT store_sq_cert_get_by_txn(store_backend_reader *r, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span transaction_id);
CM_RESULT store_sq_txn_get(store_backend_reader *r, cm_arena *a, store_txn *out, const char *ca,
                           cm_span transaction_id);
CM_RESULT store_sq_cert_list(store_backend_reader *r, const store_filter *f, store_cert_fn fn,
                             void *ctx);
CM_RESULT store_sq_cert_count(store_backend_reader *r, const store_filter *f, uint64_t *out_count);
CM_RESULT store_sq_revoked_list(store_backend_reader *r, const char *ca, int64_t not_after_min,
                                store_revoked_fn fn, void *ctx);
CM_RESULT store_sq_crl_get(store_backend_reader *r, cm_arena *a, store_crl *out, const char *ca);
CM_RESULT store_sq_check(store_backend_reader *r);
CM_RESULT store_sq_cert_state(store_backend_reader *r, store_cert_state *out, const char *ca,
                              cm_span serial);

// store_sq_row_state fills |out| from a row of STORE_SQ_CERT_STATE (store_sqlite.c's SQL; used
// by the reader and the writer's reservation); false
// when the status column holds no known status.
bool store_sq_row_state(sqlite3_stmt *st, store_cert_state *out);
CM_RESULT store_sq_txn_list(store_backend_reader *r, store_txn_fn fn, void *ctx);
CM_RESULT store_sq_crl_list(store_backend_reader *r, store_crl_fn fn, void *ctx);
CM_RESULT store_sq_use_list(store_backend_reader *r, store_use_fn fn, void *ctx);

#endif // CERTMINT_ENGINE_STORE_STORE_SQLITE_INTERNAL_H
