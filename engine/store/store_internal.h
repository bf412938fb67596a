// engine/store internals: the backend interface. Only engine/store/*.c and its tests include
// this. A backend implements store_backend_ops; store.c owns the queue, the writer thread, the
// statistics and the URL dispatch, and calls the backend only from the writer thread (for
// writes) or from a reader's thread (for reads).
#ifndef CERTMINT_ENGINE_STORE_STORE_INTERNAL_H
#define CERTMINT_ENGINE_STORE_STORE_INTERNAL_H

#include "engine/store/store.h"

typedef struct store_backend store_backend;               // a backend's write connection
typedef struct store_cache store_cache;                   // the signer-status cache (below)
typedef struct store_backend_reader store_backend_reader; // a backend's read connection

// store_backend_ops is the interface every backend implements (SQLite, PostgreSQL). Write calls
// happen on the writer thread only: either exec_batch once per batch, or begin, exec*, commit
// or rollback. Read calls happen on the reader's thread. Thread: the table itself is immutable.
typedef struct store_backend_ops {
    const char *scheme; // URL scheme, without the colon

    // open connects to |location| (the URL after "scheme:"), creates or migrates the schema
    // and prepares the write statements. Logs the reason on failure.
    CM_RESULT (*open)(store_backend **out_b, const char *location, const store_options *opts);
    void (*close)(store_backend *b);

    // begin starts the batch's transaction; STORE_E_BUSY when another process holds the lock.
    CM_RESULT (*begin)(store_backend *b);
    // exec runs one job atomically inside the open transaction (its own savepoint): a POLICY or
    // USAGE result undoes that job only and the batch goes on; any other failure means the
    // transaction is unusable and the caller rolls back the whole batch.
    cm_result (*exec)(store_backend *b, store_job *job);
    CM_RESULT (*commit)(store_backend *b);
    void (*rollback)(store_backend *b);
    // exec_batch, when not NULL, is used instead of begin/exec/commit/rollback (which may then
    // be NULL): it runs every job of the chain |first| whose result is still CM_OK (store.c
    // validated them and set the others' results) in ONE transaction, sets each job's result
    // and out_value, and returns CM_OK once committed. Any other return means nothing was
    // committed (or the outcome is unknown): store.c fails every job of the batch with it.
    cm_result (*exec_batch)(store_backend *b, store_job *first);
    // idle runs on the writer thread when no job came for the time it returned last (the first
    // wait: STORE_IDLE_FIRST_MS): health checks and reconnection. Returns how long to wait
    // before the next call, in ms. May be NULL (the writer then waits for jobs only).
    uint32_t (*idle)(store_backend *b);
    // healthy reports whether the database can be reached (store_healthy). Thread: any; cheap.
    // May be NULL: always healthy.
    bool (*healthy)(store_backend *b);
    // leader_try is store_leader_try. Thread: one caller at a time. May be NULL: always leader.
    CM_RESULT (*leader_try)(store_backend *b, bool *out_is_leader);
    // after_batch runs on the writer thread after a batch's jobs have been completed (its
    // clients are answered): deferred maintenance such as WAL checkpoints. May be NULL.
    void (*after_batch)(store_backend *b);
    // stats adds the backend's own counters to |out|. Thread: any. May be NULL.
    void (*stats)(store_backend *b, store_stats *out);

    CM_RESULT (*reader_open)(store_backend *b, store_backend_reader **out_r);
    void (*reader_close)(store_backend_reader *r);
    CM_RESULT(*cert_get)
    (store_backend_reader *r, cm_arena *a, store_cert *out, const char *ca, cm_span serial);
    CM_RESULT(*cert_get_by_txn)
    (store_backend_reader *r, cm_arena *a, store_cert *out, const char *ca, cm_span transaction_id);
    CM_RESULT(*txn_get)
    (store_backend_reader *r, cm_arena *a, store_txn *out, const char *ca, cm_span transaction_id);
    CM_RESULT(*cert_list)
    (store_backend_reader *r, const store_filter *f, store_cert_fn fn, void *ctx);
    CM_RESULT (*cert_count)(store_backend_reader *r, const store_filter *f, uint64_t *out_count);
    CM_RESULT(*revoked_list)
    (store_backend_reader *r, const char *ca, int64_t not_after_min, store_revoked_fn fn,
     void *ctx);
    CM_RESULT (*crl_get)(store_backend_reader *r, cm_arena *a, store_crl *out, const char *ca);
    CM_RESULT (*txn_list)(store_backend_reader *r, store_txn_fn fn, void *ctx);
    CM_RESULT (*crl_list)(store_backend_reader *r, store_crl_fn fn, void *ctx);
    CM_RESULT (*use_list)(store_backend_reader *r, store_use_fn fn, void *ctx);
    // attach_cache gives the backend the store's signer-status cache (NULL when off) before
    // the writer starts, for changes other nodes make (PostgreSQL: LISTEN/NOTIFY); a failure
    // fails store_open. May be NULL.
    CM_RESULT (*attach_cache)(store_backend *b, store_cache *cache);
    CM_RESULT (*check)(store_backend_reader *r);
    // cert_state reads what store_cert_state_get returns (from_cache false); STORE_E_NOT_FOUND.
    CM_RESULT(*cert_state)
    (store_backend_reader *r, store_cert_state *out, const char *ca, cm_span serial);
    // changed_elsewhere runs on the writer thread right after begin: true when another process
    // or connection committed changes since the writer's previous batch (the status cache is
    // then cleared). May be NULL (a backend that reports changes through
    // store_status_invalidate*).
    bool (*changed_elsewhere)(store_backend *b);
    // The pending table (schema 4): what store_pending_get, store_pending_get_id and
    // store_pending_list return (STORE_E_PENDING_UNKNOWN when absent). Writes are the
    // STORE_OP_PENDING_* jobs through exec.
    CM_RESULT(*pending_get)
    (store_backend_reader *r, cm_arena *a, store_pending *out, const char *ca,
     cm_span transaction_id);
    CM_RESULT(*pending_get_id)
    (store_backend_reader *r, cm_arena *a, store_pending *out, int64_t id);
    CM_RESULT(*pending_list)
    (store_backend_reader *r, const store_pending_filter *f, store_pending_fn fn, void *ctx);
} store_backend_ops;

// STORE_IDLE_FIRST_MS is the writer's first idle wait before it calls ops->idle.
#define STORE_IDLE_FIRST_MS 1000u

// store_sqlite_ops is the SQLite backend ("sqlite:PATH"). Immutable.
extern const store_backend_ops store_sqlite_ops;

// store_pg_ops is the PostgreSQL backend ("postgresql:CONNINFO", see store_open; the scheme
// "postgres" is accepted too). Immutable.
extern const store_backend_ops store_pg_ops;

// store_pg_migration_sql returns part |part| of the SQL that takes a PostgreSQL schema from
// version |i| to |i| + 1 (run the parts in order), NULL past the last part or migration.
// certmint_meta's schema_version row is written by store_open, not by this SQL.
// Thread: any; static strings.
const char *store_pg_migration_sql(size_t i, size_t part);

// store_pg_sql is one statement and the types of its parameters, one letter each: 't' text,
// 'b' bytea, 'i' bigint, and 'T', 'B', 'I' for arrays of them.
typedef struct store_pg_sql {
    const char *sql;
    const char *types;
} store_pg_sql;

// store_pg_request_path_sql returns the |i|-th statement the PostgreSQL backend runs on the
// request path or per job (including the statements inside its PL/pgSQL functions, written
// with $n parameters), NULL past the last, so a test can check with EXPLAIN that none scans a
// whole table. Thread: any; static storage.
const store_pg_sql *store_pg_request_path_sql(size_t i);

// store_sqlite_migration_sql returns the SQL that takes a database from schema version |i| to
// |i| + 1, NULL past the last, so a test can build an old database. Thread: any; static strings.
const char *store_sqlite_migration_sql(size_t i);

// store_sqlite_request_path_sql returns the SQL text of the |i|-th statement the SQLite backend
// runs on the request path or per job (lookups, updates, deletes, the sweep), NULL past the
// last, so a test can check with EXPLAIN QUERY PLAN that none scans a whole table.
// Thread: any; static strings.
const char *store_sqlite_request_path_sql(size_t i);

// store_cache is the signer-status cache (store_cache.c; the design is at its top).
// store_cache_new allocates one of |entries| (rounded up to whole sets); store_cache_get copies a
// current entry into |out| (false on a miss); store_cache_generation is loaded before a database
// read whose answer store_cache_put may then insert (dropped when the generation moved);
// store_cache_invalidate / _all drop entries and move the generation; store_cache_stats fills
// the status_* fields of |out|. Thread: any (locked per shard; counters are atomics).
typedef struct store_cache store_cache;
CM_RESULT store_cache_new(store_cache **out, size_t entries, uint32_t max_age_ms);
void store_cache_free(store_cache *c);
bool store_cache_get(store_cache *c, const char *ca, cm_span serial, store_cert_state *out);
uint64_t store_cache_generation(store_cache *c);
void store_cache_put(store_cache *c, const char *ca, cm_span serial, const store_cert_state *st,
                     uint64_t generation);
void store_cache_invalidate(store_cache *c, const char *ca, cm_span serial);
void store_cache_invalidate_all(store_cache *c);
void store_cache_stats(store_cache *c, store_stats *out);

// store_job_durable reports whether |job| must be durable before it completes: every op but
// STORE_OP_TXN_RESERVE, which completes once its batch executed, before the batch's commit
// (store.c: store_execute_batch). Thread: any; pure.
bool store_job_durable(const store_job *job);

// store_job_validate checks the fields every backend relies on (required spans present,
// lengths, reasons, statuses): CM_OK or STORE_E_INVALID. Thread: any; pure.
CM_RESULT store_job_validate(const store_job *job);

#endif // CERTMINT_ENGINE_STORE_STORE_INTERNAL_H
