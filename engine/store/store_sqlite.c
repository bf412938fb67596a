// The SQLite backend ("sqlite:PATH"): WAL journal, synchronous=FULL by default, foreign keys
// on, schema created and migrated here (PRAGMA user_version, a table of migrations), every
// statement prepared once per connection.
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"

// "CMNT": PRAGMA application_id marks the file as a certmint store.
#define STORE_SQ_APPLICATION_ID 0x434d4e54

// ---------------------------------------------------------------------------------------------
// Schema. k_store_sq_migrations[v] takes a database from user_version v to v + 1; append only.

static const char k_store_sq_schema_v1[] =
    // One row per issued certificate. status/revoked_at/reason are kept consistent by CHECKs so
    // that a bug in the engine cannot write a half-revoked row.
    "CREATE TABLE cert ("
    " id INTEGER PRIMARY KEY,"
    " ca TEXT NOT NULL,"
    " serial BLOB NOT NULL,"
    " subject_der BLOB NOT NULL,"
    " subject_text TEXT NOT NULL,"
    " not_before INTEGER NOT NULL,"
    " not_after INTEGER NOT NULL,"
    " spki_sha256 BLOB NOT NULL CHECK (length(spki_sha256) = 32),"
    " status TEXT NOT NULL CHECK (status IN ('unconfirmed', 'valid', 'revoked', 'hold')),"
    " revoked_at INTEGER,"
    " reason INTEGER CHECK (reason IS NULL OR (reason BETWEEN 0 AND 10 AND reason NOT IN (7, 8))),"
    " transaction_id BLOB,"
    " requester_kind INTEGER NOT NULL CHECK (requester_kind IN (0, 1, 2)),"
    " requester BLOB,"
    " cert_der BLOB NOT NULL,"
    " issued_at INTEGER NOT NULL,"
    " confirm_deadline INTEGER,"
    " UNIQUE (ca, serial),"
    " CHECK ((status IN ('revoked', 'hold')) = (revoked_at IS NOT NULL AND reason IS NOT NULL)),"
    " CHECK (status <> 'hold' OR reason = 6),"
    " CHECK (status <> 'unconfirmed' OR confirm_deadline IS NOT NULL));"
    "CREATE INDEX cert_by_txn ON cert (ca, transaction_id) WHERE transaction_id IS NOT NULL;"
    "CREATE INDEX cert_unconfirmed ON cert (confirm_deadline) WHERE status = 'unconfirmed';"
    "CREATE INDEX cert_revoked ON cert (ca, id) WHERE status IN ('revoked', 'hold');"
    // CMP transactions in flight; the issued serial must be a certificate of the same CA.
    "CREATE TABLE txn ("
    " ca TEXT NOT NULL,"
    " transaction_id BLOB NOT NULL,"
    " state INTEGER NOT NULL,"
    " sender_nonce BLOB,"
    " serial BLOB,"
    " protection INTEGER NOT NULL CHECK (protection IN (0, 1, 2)),"
    " credential BLOB,"
    " expires_at INTEGER NOT NULL,"
    " PRIMARY KEY (ca, transaction_id),"
    " FOREIGN KEY (ca, serial) REFERENCES cert (ca, serial)) WITHOUT ROWID;"
    "CREATE INDEX txn_expiry ON txn (expires_at);"
    // Per CA: CRL numbers handed out, revocation revision, the last CRL (issue 6).
    "CREATE TABLE crl_state ("
    " ca TEXT PRIMARY KEY NOT NULL,"
    " numbers_issued INTEGER NOT NULL DEFAULT 0,"
    " revision INTEGER NOT NULL DEFAULT 0,"
    " built_revision INTEGER NOT NULL DEFAULT 0,"
    " crl_der BLOB,"
    " crl_number INTEGER NOT NULL DEFAULT 0,"
    " this_update INTEGER,"
    " next_update INTEGER) WITHOUT ROWID;";

// Version 2 drops cert_by_txn. Only certConf read it, and certConf reads the transaction's row
// first, which names the serial. The index cost every insert a write to a random leaf page (the
// transactionID is random): without it store_bench's NORMAL rows (60,000 inserts, 1/4/16
// submitters) ran 20-90% faster. cert.transaction_id stays as a record.
static const char k_store_sq_schema_v2[] = "DROP INDEX cert_by_txn;";

static const char *const k_store_sq_migrations[] = {
    k_store_sq_schema_v1, // 0 -> 1
    k_store_sq_schema_v2, // 1 -> 2
};

_Static_assert(sizeof(k_store_sq_migrations) / sizeof(k_store_sq_migrations[0]) ==
                   STORE_SCHEMA_VERSION,
               "one migration per schema version");

// ---------------------------------------------------------------------------------------------
// Statements

#define STORE_SQ_CERT_COLS                                                                    \
    "id, ca, serial, subject_der, subject_text, not_before, not_after, spki_sha256, status, " \
    "revoked_at, reason, transaction_id, requester_kind, requester, cert_der, issued_at, "    \
    "confirm_deadline"

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
    SQW_COUNT,
};

static const char *const k_store_sq_write_sql[SQW_COUNT] = {
    [SQW_BEGIN] = "BEGIN IMMEDIATE",
    [SQW_COMMIT] = "COMMIT",
    [SQW_ROLLBACK] = "ROLLBACK",
    [SQW_SAVEPOINT] = "SAVEPOINT job",
    [SQW_RELEASE] = "RELEASE job",
    [SQW_ROLLBACK_TO] = "ROLLBACK TO job",
    [SQW_CERT_INSERT] =
        "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after, "
        "spki_sha256, status, transaction_id, requester_kind, requester, cert_der, issued_at, "
        "confirm_deadline) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [SQW_CERT_STATUS] = "SELECT status, confirm_deadline FROM cert WHERE ca = ?1 AND serial = ?2",
    [SQW_CERT_CONFIRM] = "UPDATE cert SET status = 'valid', confirm_deadline = NULL "
                         "WHERE ca = ?1 AND serial = ?2",
    [SQW_CERT_REVOKE] = "UPDATE cert SET status = ?3, revoked_at = ?4, reason = ?5, "
                        "confirm_deadline = NULL WHERE ca = ?1 AND serial = ?2",
    [SQW_CERT_RELEASE] = "UPDATE cert SET status = 'valid', revoked_at = NULL, reason = NULL "
                         "WHERE ca = ?1 AND serial = ?2",
    [SQW_CRL_BUMP] = "INSERT INTO crl_state (ca, revision) VALUES (?1, 1) "
                     "ON CONFLICT (ca) DO UPDATE SET revision = revision + 1",
    [SQW_TXN_INSERT] = "INSERT INTO txn (ca, transaction_id, state, sender_nonce, serial, "
                       "protection, credential, expires_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [SQW_TXN_UPDATE] = "UPDATE txn SET state = ?3, sender_nonce = ?4, serial = ?5, "
                       "protection = ?6, credential = ?7, expires_at = ?8 "
                       "WHERE ca = ?1 AND transaction_id = ?2",
    [SQW_TXN_DELETE] = "DELETE FROM txn WHERE ca = ?1 AND transaction_id = ?2",
    [SQW_TXN_EXPIRE] = "DELETE FROM txn WHERE expires_at <= ?1",
    [SQW_SWEEP_BUMP] = "INSERT INTO crl_state (ca, revision) SELECT DISTINCT ca, 1 FROM cert "
                       "WHERE status = 'unconfirmed' AND confirm_deadline <= ?1 "
                       "ON CONFLICT (ca) DO UPDATE SET revision = revision + 1",
    [SQW_SWEEP] = "UPDATE cert SET status = 'revoked', revoked_at = ?1, reason = ?2, "
                  "confirm_deadline = NULL "
                  "WHERE status = 'unconfirmed' AND confirm_deadline <= ?1",
    [SQW_CRL_NEXT] = "INSERT INTO crl_state (ca, numbers_issued) VALUES (?1, 1) "
                     "ON CONFLICT (ca) DO UPDATE SET numbers_issued = numbers_issued + 1 "
                     "RETURNING numbers_issued",
    [SQW_CRL_PUT] = "INSERT INTO crl_state (ca, crl_der, crl_number, this_update, next_update, "
                    "built_revision, numbers_issued) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?3) "
                    "ON CONFLICT (ca) DO UPDATE SET crl_der = excluded.crl_der, "
                    "crl_number = excluded.crl_number, this_update = excluded.this_update, "
                    "next_update = excluded.next_update, built_revision = excluded.built_revision "
                    "WHERE excluded.crl_number > crl_state.crl_number",
};

enum {
    SQR_CERT_GET,
    SQR_CERT_BY_TXN,
    SQR_TXN_GET,
    SQR_CERT_LIST,
    SQR_CERT_COUNT,
    SQR_REVOKED,
    SQR_CRL_GET,
    SQR_COUNT,
};

static const char *const k_store_sq_read_sql[SQR_COUNT] = {
    [SQR_CERT_GET] = "SELECT " STORE_SQ_CERT_COLS " FROM cert WHERE ca = ?1 AND serial = ?2",
    [SQR_CERT_BY_TXN] = "SELECT " STORE_SQ_CERT_COLS " FROM cert WHERE ca = ?1 AND serial = "
                        "(SELECT serial FROM txn WHERE ca = ?1 AND transaction_id = ?2)",
    [SQR_TXN_GET] = "SELECT state, sender_nonce, serial, protection, credential, expires_at "
                    "FROM txn WHERE ca = ?1 AND transaction_id = ?2",
    [SQR_CERT_LIST] = "SELECT " STORE_SQ_CERT_COLS " FROM cert "
                      "WHERE (?1 IS NULL OR ca = ?1) AND (?2 IS NULL OR status = ?2) "
                      "AND (?3 IS NULL OR instr(subject_text, ?3) > 0) AND id > ?4 "
                      "ORDER BY id LIMIT ?5",
    [SQR_CERT_COUNT] = "SELECT count(*) FROM cert "
                       "WHERE (?1 IS NULL OR ca = ?1) AND (?2 IS NULL OR status = ?2) "
                       "AND (?3 IS NULL OR instr(subject_text, ?3) > 0)",
    [SQR_REVOKED] = "SELECT serial, revoked_at, reason FROM cert "
                    "WHERE ca = ?1 AND status IN ('revoked', 'hold') AND not_after >= ?2 "
                    "ORDER BY id",
    [SQR_CRL_GET] = "SELECT crl_number, numbers_issued, revision, built_revision, crl_der, "
                    "this_update, next_update FROM crl_state WHERE ca = ?1",
};

static const char *const k_store_sq_status_text[] = {"unconfirmed", "valid", "revoked", "hold"};

// WAL checkpoints. SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past
// wal_autocheckpoint pages, on the writer thread: that commit also copies the WAL into the
// database file and syncs it (several ms with a 4 MB WAL), and every request in that batch and
// every job queued behind it waits. Instead the writer's WAL hook only notes the WAL's size, and
// after each batch (its clients already answered) store_sq_after_batch hands checkpoints to a
// checkpointer thread with its own connection, which runs PASSIVE checkpoints (they never block
// the writer) whenever ckpt_pages frames have not been copied yet. A passive checkpoint cannot
// restart the WAL while the writer keeps appending, so once the WAL is STORE_SQ_RESTART_FACTOR
// times that size the writer tops up after a pass: it checkpoints the few frames appended
// during the pass itself (which syncs the database file: ~10 ms on this machine's disk), and its
// next commit starts the WAL from the beginning. Topping up after every pass stalled the writer
// that long about ten times a second under load; now the WAL grows to about 32 MB between
// restarts instead of 4 MB. Without a checkpointer thread (it could not start), SQLite's
// automatic checkpoint stays on.
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
};

// store_backend_reader is one read connection. Thread: one at a time.
struct store_backend_reader {
    sqlite3 *db;
    sqlite3_stmt *st[SQR_COUNT];
};

// ---------------------------------------------------------------------------------------------
// Helpers

static uint32_t store_sq_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return STORE_E_BUSY;
    case SQLITE_FULL:
        return STORE_E_FULL;
    case SQLITE_CORRUPT:
        return STORE_E_CORRUPT;
    case SQLITE_NOTADB:
        return STORE_E_NOT_A_STORE;
    case SQLITE_NOMEM:
        return CM_E_NOMEM;
    default:
        return STORE_E_DB;
    }
}

// store_sq_fail logs the connection's message for |rc| and returns it as a store code.
static cm_result store_sq_fail(sqlite3 *db, int rc, const char *what)
{
    cm_log(CM_LOG_ERROR, "store: sqlite %s: %s (%s)", what, sqlite3_errstr(rc),
           db != NULL ? sqlite3_errmsg(db) : "no connection");
    return cm_bail_note(store_sq_code(rc), __FILE__, __LINE__);
}

static void store_sq_bind_span(sqlite3_stmt *st, int i, cm_span s)
{
    // Optional spans: empty means NULL. Required ones were checked non-empty by validation.
    // Binding cannot fail here: the index is in range and SQLITE_STATIC copies nothing.
    if (s.len == 0) {
        (void)sqlite3_bind_null(st, i);
    } else {
        (void)sqlite3_bind_blob64(st, i, s.p, s.len, SQLITE_STATIC);
    }
}

static void store_sq_bind_text(sqlite3_stmt *st, int i, const char *text)
{
    if (text == NULL) {
        (void)sqlite3_bind_null(st, i);
    } else {
        (void)sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
    }
}

static void store_sq_bind_time(sqlite3_stmt *st, int i, int64_t t)
{
    if (t == 0) {
        (void)sqlite3_bind_null(st, i);
    } else {
        (void)sqlite3_bind_int64(st, i, t);
    }
}

// store_sq_done resets |st| and drops its bindings so no borrowed pointer outlives the call.
static void store_sq_done(sqlite3_stmt *st)
{
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

// store_sq_step_done steps a statement that returns no row and resets it; the SQLite result
// code is returned for the caller to map (constraints mean different things per op).
static int store_sq_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    store_sq_done(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static cm_result store_sq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out_st)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out_st, NULL);
    if (rc != SQLITE_OK) {
        cm_log(CM_LOG_ERROR, "store: cannot prepare \"%s\"", sql);
        return store_sq_fail(db, rc, "prepare");
    }
    return cm_result_make(CM_OK);
}

// store_sq_int_pragma reads an integer PRAGMA (user_version, application_id, ...).
static cm_result store_sq_int_pragma(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    CM_TRY(store_sq_prepare(db, sql, &st));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    (void)sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        return store_sq_fail(db, rc, sql);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return store_sq_fail(db, rc, sql);
    }
    return cm_result_make(CM_OK);
}

// store_sq_connect opens |path| with the settings every connection shares.
static cm_result store_sq_connect(sqlite3 **out_db, const char *path, int flags,
                                  int busy_timeout_ms)
{
    *out_db = NULL;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        cm_log(CM_LOG_ERROR, "store: cannot open sqlite:%s: %s", path,
               db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        (void)sqlite3_close(db);
        CM_BAIL(store_sq_code(rc));
    }
    (void)sqlite3_extended_result_codes(db, 1);
    (void)sqlite3_busy_timeout(db, busy_timeout_ms);
    *out_db = db;
    return cm_result_make(CM_OK);
}

// store_sq_migrate checks that |db| is a certmint store (or empty) no newer than this build,
// then applies the missing migrations in one transaction.
static cm_result store_sq_migrate(sqlite3 *db, const char *path)
{
    int64_t app_id = 0;
    int64_t version = 0;
    int64_t objects = 0;
    CM_TRY(store_sq_exec(db, "BEGIN IMMEDIATE"));
    cm_result r = store_sq_int_pragma(db, "PRAGMA application_id", &app_id);
    if (cm_ok(r)) {
        r = store_sq_int_pragma(db, "PRAGMA user_version", &version);
    }
    if (cm_ok(r)) {
        r = store_sq_int_pragma(db, "SELECT count(*) FROM sqlite_schema", &objects);
    }
    if (cm_ok(r) && (app_id != 0 || objects != 0) && app_id != STORE_SQ_APPLICATION_ID) {
        cm_log(CM_LOG_ERROR,
               "store: sqlite:%s is an SQLite database but not a certmint store "
               "(application_id 0x%llx)",
               path, (unsigned long long)app_id);
        r = cm_bail_note(STORE_E_NOT_A_STORE, __FILE__, __LINE__);
    }
    if (cm_ok(r) && (version > STORE_SCHEMA_VERSION || version < 0)) {
        cm_log(CM_LOG_ERROR,
               "store: sqlite:%s has schema version %lld, this certmint knows up "
               "to %d: refusing to open a store written by a newer version",
               path, (long long)version, STORE_SCHEMA_VERSION);
        r = cm_bail_note(STORE_E_SCHEMA_TOO_NEW, __FILE__, __LINE__);
    }
    for (int64_t v = version; cm_ok(r) && v < STORE_SCHEMA_VERSION; v++) {
        long long to = (long long)v + 1;
        cm_log(CM_LOG_INFO, "store: sqlite:%s: migrating schema %lld -> %lld", path, (long long)v,
               to);
        r = store_sq_exec(db, k_store_sq_migrations[v]);
    }
    if (cm_ok(r) && version < STORE_SCHEMA_VERSION) {
        char sql[96];
        (void)snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d",
                       STORE_SQ_APPLICATION_ID, STORE_SCHEMA_VERSION);
        r = store_sq_exec(db, sql);
    }
    if (cm_ok(r)) {
        r = store_sq_exec(db, "COMMIT");
    }
    if (!cm_ok(r)) {
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Open and close

// The checkpointer repeats a pass (at most STORE_SQ_CKPT_MAX_PASSES) until at most
// STORE_SQ_TOPUP_FRAMES frames are left for the writer's top-up; the writer tops up once the WAL
// holds STORE_SQ_RESTART_FACTOR x ckpt_pages frames.
#define STORE_SQ_CKPT_MAX_PASSES 8
#define STORE_SQ_TOPUP_FRAMES    64
#define STORE_SQ_RESTART_FACTOR  8

// store_sq_checkpointer_main is the checkpointer thread: PASSIVE checkpoints per request.
static void *store_sq_checkpointer_main(void *arg)
{
    store_backend *b = arg;
    store_sq_ckpt *c = &b->ckpt;
    (void)pthread_setname_np(pthread_self(), "cm-checkpoint");
    (void)pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->state != STORE_SQ_CKPT_REQUESTED && !c->stop) {
            (void)pthread_cond_wait(&c->cv, &c->mu);
        }
        if (c->stop) {
            break;
        }
        c->state = STORE_SQ_CKPT_RUNNING;
        (void)pthread_mutex_unlock(&c->mu);
        // Passes until what is left for the writer's top-up is small: while one pass copies,
        // the writer appends, and the top-up copies (and syncs) that on the writer's thread.
        int log_frames = 0;
        int done_frames = 0;
        int rc = SQLITE_OK;
        for (int pass = 0; pass < STORE_SQ_CKPT_MAX_PASSES; pass++) {
            const int before = done_frames;
            rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &done_frames);
            if (rc != SQLITE_OK || log_frames - done_frames <= STORE_SQ_TOPUP_FRAMES ||
                (pass > 0 && done_frames <= before)) {
                break; // failed, small enough, or a reader holds the rest
            }
        }
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
            cm_log(CM_LOG_WARN, "store: sqlite:%s: background checkpoint: %s", b->path,
                   sqlite3_errmsg(c->db));
        } else {
            cm_log(CM_LOG_DEBUG, "store: checkpoint copied %d of %d WAL frames", done_frames,
                   log_frames);
        }
        (void)pthread_mutex_lock(&c->mu);
        c->passes++;
        c->copied = rc == SQLITE_OK ? done_frames : c->copied;
        c->state = STORE_SQ_CKPT_PASSED;
    }
    (void)pthread_mutex_unlock(&c->mu);
    return NULL;
}

// store_sq_wal_hook records the WAL's size after each commit (writer thread, inside COMMIT).
static int store_sq_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    store_backend *b = arg;
    b->wal_pages = pages;
    (void)pthread_mutex_lock(&b->ckpt.mu);
    b->ckpt.wal_pages = (uint64_t)pages;
    (void)pthread_mutex_unlock(&b->ckpt.mu);
    return SQLITE_OK;
}

// store_sq_after_batch asks for a background checkpoint when ckpt_pages frames are waiting to
// be copied, and tops up after a finished pass once the WAL is large (see store_sq_ckpt).
static void store_sq_after_batch(store_backend *b)
{
    if (!b->ckpt_on) {
        return;
    }
    store_sq_ckpt *c = &b->ckpt;
    const int pages = b->wal_pages;
    bool topup = false;
    (void)pthread_mutex_lock(&c->mu);
    if (pages < c->copied) {
        c->copied = 0; // the WAL restarted since the last pass
    }
    const store_sq_ckpt_state state = c->state;
    if (state == STORE_SQ_CKPT_IDLE || state == STORE_SQ_CKPT_PASSED) {
        if (state == STORE_SQ_CKPT_PASSED &&
            (int64_t)pages >= (int64_t)b->ckpt_pages * STORE_SQ_RESTART_FACTOR) {
            topup = true;
            c->state = STORE_SQ_CKPT_IDLE;
            c->topups++;
        } else if (pages - c->copied >= (int)b->ckpt_pages) {
            c->state = STORE_SQ_CKPT_REQUESTED;
            (void)pthread_cond_signal(&c->cv);
        } else {
            c->state = STORE_SQ_CKPT_IDLE;
        }
    }
    (void)pthread_mutex_unlock(&c->mu);
    if (topup) {
        // The checkpointer is idle, so this cannot be busy with it; a reader still on an old
        // snapshot only shortens what it copies.
        (void)sqlite3_wal_checkpoint_v2(b->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
}

static void store_sq_stats(store_backend *b, store_stats *out)
{
    if (!b->ckpt_on) {
        return;
    }
    (void)pthread_mutex_lock(&b->ckpt.mu);
    out->checkpoints = b->ckpt.passes;
    out->checkpoint_topups = b->ckpt.topups;
    out->wal_pages = b->ckpt.wal_pages;
    (void)pthread_mutex_unlock(&b->ckpt.mu);
}

// store_sq_ckpt_start opens the checkpointer's connection and starts its thread. On failure
// SQLite's automatic checkpoint stays on and the store works as before.
static void store_sq_ckpt_start(store_backend *b, const store_options *opts)
{
    store_sq_ckpt *c = &b->ckpt;
    c->state = STORE_SQ_CKPT_IDLE;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        return;
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&c->mu);
        return;
    }
    cm_result r = store_sq_connect(&c->db, b->path, SQLITE_OPEN_READWRITE, b->busy_timeout_ms);
    if (cm_ok(r)) {
        // A checkpoint syncs as its connection's synchronous setting says.
        r = store_sq_exec(c->db, opts->sync == STORE_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                                 : "PRAGMA synchronous = FULL");
    }
    if (cm_ok(r) && pthread_create(&c->thread, NULL, store_sq_checkpointer_main, b) == 0) {
        b->ckpt_on = true;
        (void)sqlite3_wal_hook(b->db, store_sq_wal_hook, b); // replaces the automatic checkpoint
        return;
    }
    cm_log(CM_LOG_WARN, "store: sqlite:%s: no background checkpointer; checkpoints run in commits",
           b->path);
    (void)sqlite3_close(c->db);
    c->db = NULL;
    (void)pthread_cond_destroy(&c->cv);
    (void)pthread_mutex_destroy(&c->mu);
}

static void store_sq_ckpt_stop(store_backend *b)
{
    if (!b->ckpt_on) {
        return;
    }
    store_sq_ckpt *c = &b->ckpt;
    (void)pthread_mutex_lock(&c->mu);
    c->stop = true;
    (void)pthread_cond_signal(&c->cv);
    (void)pthread_mutex_unlock(&c->mu);
    (void)pthread_join(c->thread, NULL);
    (void)sqlite3_close(c->db);
    (void)pthread_cond_destroy(&c->cv);
    (void)pthread_mutex_destroy(&c->mu);
    b->ckpt_on = false;
}

static void store_sq_close(store_backend *b)
{
    if (b == NULL) {
        return;
    }
    store_sq_ckpt_stop(b);
    for (size_t i = 0; i < SQW_COUNT; i++) {
        (void)sqlite3_finalize(b->st[i]);
    }
    // Closing the last connection checkpoints the WAL into the database file.
    if (sqlite3_close(b->db) != SQLITE_OK) {
        cm_log(CM_LOG_ERROR, "store: sqlite close: %s", sqlite3_errmsg(b->db));
    }
    free(b->path);
    free(b);
}

static cm_result store_sq_open(store_backend **out_b, const char *location,
                               const store_options *opts)
{
    *out_b = NULL;
    store_backend *b = calloc(1, sizeof(*b));
    CM_ENSURE(b != NULL, CM_E_NOMEM);
    b->busy_timeout_ms = opts->busy_timeout_ms;
    b->path = strdup(location);
    cm_result r = cm_result_make(b->path != NULL ? CM_OK : CM_E_NOMEM);
    if (cm_ok(r)) {
        r = store_sq_connect(&b->db, location, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                             opts->busy_timeout_ms);
    }
    // journal_mode is the first statement that reads the file: a non-database fails here.
    sqlite3_stmt *st = NULL;
    if (cm_ok(r)) {
        r = store_sq_prepare(b->db, "PRAGMA journal_mode = WAL", &st);
    }
    if (cm_ok(r)) {
        int rc = sqlite3_step(st);
        if ((rc & 0xff) == SQLITE_NOTADB) {
            cm_log(CM_LOG_ERROR, "store: sqlite:%s is not an SQLite database", location);
            r = cm_bail_note(STORE_E_NOT_A_STORE, __FILE__, __LINE__);
        } else if (rc != SQLITE_ROW) {
            r = store_sq_fail(b->db, rc, "PRAGMA journal_mode");
        } else if (strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
            cm_log(CM_LOG_ERROR, "store: sqlite:%s cannot use WAL mode", location);
            r = cm_bail_note(STORE_E_DB, __FILE__, __LINE__);
        }
        (void)sqlite3_finalize(st);
    }
    if (cm_ok(r)) {
        r = store_sq_exec(b->db, opts->sync == STORE_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                                 : "PRAGMA synchronous = FULL");
    }
    if (cm_ok(r)) {
        r = store_sq_exec(b->db, "PRAGMA foreign_keys = ON");
    }
    if (cm_ok(r)) {
        r = store_sq_migrate(b->db, location);
    }
    for (size_t i = 0; cm_ok(r) && i < SQW_COUNT; i++) {
        r = store_sq_prepare(b->db, k_store_sq_write_sql[i], &b->st[i]);
    }
    if (!cm_ok(r)) {
        store_sq_close(b);
        return r;
    }
    b->ckpt_pages = opts->checkpoint_pages != 0 ? opts->checkpoint_pages : 1000u;
    store_sq_ckpt_start(b, opts);
    *out_b = b;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Write operations (writer thread, inside the batch transaction)

static cm_result store_sq_simple(store_backend *b, int idx)
{
    int rc = store_sq_step_done(b->st[idx]);
    if (rc != SQLITE_DONE) {
        return store_sq_fail(b->db, rc, k_store_sq_write_sql[idx]);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_begin(store_backend *b)
{
    return store_sq_simple(b, SQW_BEGIN);
}

static cm_result store_sq_commit(store_backend *b)
{
    return store_sq_simple(b, SQW_COMMIT);
}

static void store_sq_rollback(store_backend *b)
{
    if (!sqlite3_get_autocommit(b->db)) {
        (void)store_sq_step_done(b->st[SQW_ROLLBACK]);
    }
}

// store_sq_constraint maps a constraint failure of one job to its code; any other failure is a
// backend failure that makes the transaction unusable.
static cm_result store_sq_constraint(store_backend *b, int rc, uint32_t unique_code,
                                     uint32_t fk_code)
{
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        CM_BAIL(unique_code);
    }
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        CM_BAIL(fk_code);
    }
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        cm_log(CM_LOG_WARN, "store: job refused by the schema: %s", sqlite3_errmsg(b->db));
        CM_BAIL(STORE_E_INVALID);
    }
    return store_sq_fail(b->db, rc, "write");
}

static cm_result store_sq_cert_insert(store_backend *b, const store_cert *c)
{
    sqlite3_stmt *st = b->st[SQW_CERT_INSERT];
    store_sq_bind_text(st, 1, c->ca);
    store_sq_bind_span(st, 2, c->serial);
    store_sq_bind_span(st, 3, c->subject_der);
    store_sq_bind_text(st, 4, c->subject_text);
    (void)sqlite3_bind_int64(st, 5, c->not_before);
    (void)sqlite3_bind_int64(st, 6, c->not_after);
    store_sq_bind_span(st, 7, c->spki_sha256);
    store_sq_bind_text(st, 8, k_store_sq_status_text[c->status]);
    store_sq_bind_span(st, 9, c->transaction_id);
    (void)sqlite3_bind_int(st, 10, (int)c->requester_kind);
    store_sq_bind_span(st, 11, c->requester);
    store_sq_bind_span(st, 12, c->cert_der);
    (void)sqlite3_bind_int64(st, 13, c->issued_at);
    store_sq_bind_time(st, 14, c->status == STORE_CERT_UNCONFIRMED ? c->confirm_deadline : 0);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_DUPLICATE_SERIAL, STORE_E_INVALID);
    }
    return cm_result_make(CM_OK);
}

// store_sq_cert_status reads the status and confirm deadline of (ca, serial).
static cm_result store_sq_cert_status(store_backend *b, const store_ref *ref,
                                      store_cert_status *out_status, int64_t *out_deadline)
{
    sqlite3_stmt *st = b->st[SQW_CERT_STATUS];
    store_sq_bind_text(st, 1, ref->ca);
    store_sq_bind_span(st, 2, ref->serial);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *status = (const char *)sqlite3_column_text(st, 0);
        *out_status = STORE_CERT_ANY;
        for (int i = 0; i < 4; i++) {
            if (status != NULL && strcmp(status, k_store_sq_status_text[i]) == 0) {
                *out_status = (store_cert_status)i;
            }
        }
        *out_deadline = sqlite3_column_int64(st, 1);
    }
    store_sq_done(st);
    CM_ENSURE(rc != SQLITE_DONE, STORE_E_NOT_FOUND);
    if (rc != SQLITE_ROW) {
        return store_sq_fail(b->db, rc, "certificate status");
    }
    CM_ENSURE(*out_status != STORE_CERT_ANY, STORE_E_CORRUPT);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_update_ref(store_backend *b, int idx, const store_ref *ref)
{
    sqlite3_stmt *st = b->st[idx];
    store_sq_bind_text(st, 1, ref->ca);
    store_sq_bind_span(st, 2, ref->serial);
    return store_sq_simple(b, idx);
}

static cm_result store_sq_crl_bump(store_backend *b, const char *ca)
{
    store_sq_bind_text(b->st[SQW_CRL_BUMP], 1, ca);
    return store_sq_simple(b, SQW_CRL_BUMP);
}

static cm_result store_sq_cert_confirm(store_backend *b, const store_ref *ref)
{
    store_cert_status status = STORE_CERT_ANY;
    int64_t deadline = 0;
    CM_TRY(store_sq_cert_status(b, ref, &status, &deadline));
    CM_ENSURE(status != STORE_CERT_VALID, STORE_E_ALREADY_CONFIRMED);
    CM_ENSURE(status == STORE_CERT_UNCONFIRMED, STORE_E_ALREADY_REVOKED);
    CM_ENSURE(ref->time == 0 || ref->time < deadline, STORE_E_CONFIRM_EXPIRED);
    return store_sq_update_ref(b, SQW_CERT_CONFIRM, ref);
}

static cm_result store_sq_cert_revoke(store_backend *b, const store_ref *ref)
{
    store_cert_status status = STORE_CERT_ANY;
    int64_t deadline = 0;
    CM_TRY(store_sq_cert_status(b, ref, &status, &deadline));
    bool hold = ref->reason == STORE_REASON_CERTIFICATE_HOLD;
    // A held certificate may be revoked for good (RFC 5280 §5.3.1), not held twice.
    CM_ENSURE(status != STORE_CERT_REVOKED && !(status == STORE_CERT_HOLD && hold),
              STORE_E_ALREADY_REVOKED);
    sqlite3_stmt *st = b->st[SQW_CERT_REVOKE];
    store_sq_bind_text(st, 1, ref->ca);
    store_sq_bind_span(st, 2, ref->serial);
    store_sq_bind_text(st, 3, k_store_sq_status_text[hold ? STORE_CERT_HOLD : STORE_CERT_REVOKED]);
    (void)sqlite3_bind_int64(st, 4, ref->time);
    (void)sqlite3_bind_int(st, 5, ref->reason);
    CM_TRY(store_sq_simple(b, SQW_CERT_REVOKE));
    return store_sq_crl_bump(b, ref->ca);
}

static cm_result store_sq_cert_release(store_backend *b, const store_ref *ref)
{
    store_cert_status status = STORE_CERT_ANY;
    int64_t deadline = 0;
    CM_TRY(store_sq_cert_status(b, ref, &status, &deadline));
    CM_ENSURE(status == STORE_CERT_HOLD, STORE_E_NOT_ON_HOLD);
    CM_TRY(store_sq_update_ref(b, SQW_CERT_RELEASE, ref));
    return store_sq_crl_bump(b, ref->ca);
}

static cm_result store_sq_txn_put(store_backend *b, const store_txn *t, bool create)
{
    int idx = create ? SQW_TXN_INSERT : SQW_TXN_UPDATE;
    sqlite3_stmt *st = b->st[idx];
    store_sq_bind_text(st, 1, t->ca);
    store_sq_bind_span(st, 2, t->transaction_id);
    (void)sqlite3_bind_int64(st, 3, t->state);
    store_sq_bind_span(st, 4, t->sender_nonce);
    store_sq_bind_span(st, 5, t->serial);
    (void)sqlite3_bind_int(st, 6, (int)t->protection);
    store_sq_bind_span(st, 7, t->credential);
    (void)sqlite3_bind_int64(st, 8, t->expires_at);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_TXN_IN_USE, STORE_E_NOT_FOUND);
    }
    CM_ENSURE(create || sqlite3_changes64(b->db) == 1, STORE_E_TXN_NOT_FOUND);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_txn_delete(store_backend *b, const store_ref *ref)
{
    sqlite3_stmt *st = b->st[SQW_TXN_DELETE];
    store_sq_bind_text(st, 1, ref->ca);
    store_sq_bind_span(st, 2, ref->transaction_id);
    CM_TRY(store_sq_simple(b, SQW_TXN_DELETE));
    CM_ENSURE(sqlite3_changes64(b->db) == 1, STORE_E_TXN_NOT_FOUND);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_txn_expire(store_backend *b, store_job *job)
{
    (void)sqlite3_bind_int64(b->st[SQW_TXN_EXPIRE], 1, job->u.ref.time);
    CM_TRY(store_sq_simple(b, SQW_TXN_EXPIRE));
    job->out_value = (uint64_t)sqlite3_changes64(b->db);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_sweep(store_backend *b, store_job *job)
{
    // Bump the revision of every CA that loses a certificate first, then revoke.
    (void)sqlite3_bind_int64(b->st[SQW_SWEEP_BUMP], 1, job->u.ref.time);
    CM_TRY(store_sq_simple(b, SQW_SWEEP_BUMP));
    (void)sqlite3_bind_int64(b->st[SQW_SWEEP], 1, job->u.ref.time);
    (void)sqlite3_bind_int(b->st[SQW_SWEEP], 2, job->u.ref.reason);
    CM_TRY(store_sq_simple(b, SQW_SWEEP));
    job->out_value = (uint64_t)sqlite3_changes64(b->db);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_crl_next(store_backend *b, store_job *job)
{
    sqlite3_stmt *st = b->st[SQW_CRL_NEXT];
    store_sq_bind_text(st, 1, job->u.ref.ca);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        job->out_value = (uint64_t)sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    store_sq_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_fail(b->db, rc, "CRL number");
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_crl_put(store_backend *b, const store_crl *c)
{
    sqlite3_stmt *st = b->st[SQW_CRL_PUT];
    store_sq_bind_text(st, 1, c->ca);
    store_sq_bind_span(st, 2, c->crl_der);
    (void)sqlite3_bind_int64(st, 3, (int64_t)c->crl_number);
    store_sq_bind_time(st, 4, c->this_update);
    store_sq_bind_time(st, 5, c->next_update);
    (void)sqlite3_bind_int64(st, 6, (int64_t)c->built_revision);
    CM_TRY(store_sq_simple(b, SQW_CRL_PUT));
    CM_ENSURE(sqlite3_changes64(b->db) == 1, STORE_E_STALE);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_exec_op(store_backend *b, store_job *job)
{
    switch (job->op) {
    case STORE_OP_CERT_INSERT:
        return store_sq_cert_insert(b, &job->u.cert);
    case STORE_OP_CERT_CONFIRM:
        return store_sq_cert_confirm(b, &job->u.ref);
    case STORE_OP_CERT_REVOKE:
        return store_sq_cert_revoke(b, &job->u.ref);
    case STORE_OP_CERT_RELEASE:
        return store_sq_cert_release(b, &job->u.ref);
    case STORE_OP_TXN_CREATE:
        return store_sq_txn_put(b, &job->u.txn, true);
    case STORE_OP_TXN_UPDATE:
        return store_sq_txn_put(b, &job->u.txn, false);
    case STORE_OP_TXN_DELETE:
        return store_sq_txn_delete(b, &job->u.ref);
    case STORE_OP_TXN_EXPIRE:
        return store_sq_txn_expire(b, job);
    case STORE_OP_SWEEP:
        return store_sq_sweep(b, job);
    case STORE_OP_CRL_NEXT_NUMBER:
        return store_sq_crl_next(b, job);
    case STORE_OP_CRL_PUT:
        return store_sq_crl_put(b, &job->u.crl);
    }
    CM_BAIL(STORE_E_INVALID);
}

static cm_result store_sq_exec_job(store_backend *b, store_job *job)
{
    // One statement is atomic by itself (a failed one is undone without touching the rest of
    // the transaction); ops made of several statements get a savepoint.
    bool multi = job->op == STORE_OP_CERT_CONFIRM || job->op == STORE_OP_CERT_REVOKE ||
                 job->op == STORE_OP_CERT_RELEASE || job->op == STORE_OP_SWEEP;
    if (!multi) {
        return store_sq_exec_op(b, job);
    }
    CM_TRY(store_sq_simple(b, SQW_SAVEPOINT));
    cm_result r = store_sq_exec_op(b, job);
    if (!cm_ok(r)) {
        cm_result undo = store_sq_simple(b, SQW_ROLLBACK_TO);
        if (!cm_ok(undo)) {
            return undo;
        }
    }
    cm_result rel = store_sq_simple(b, SQW_RELEASE);
    return cm_ok(rel) ? r : rel;
}

// ---------------------------------------------------------------------------------------------
// Reads

static void store_sq_reader_close(store_backend_reader *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < SQR_COUNT; i++) {
        (void)sqlite3_finalize(r->st[i]);
    }
    (void)sqlite3_close(r->db);
    free(r);
}

static cm_result store_sq_reader_open(store_backend *b, store_backend_reader **out_r)
{
    *out_r = NULL;
    store_backend_reader *r = calloc(1, sizeof(*r));
    CM_ENSURE(r != NULL, CM_E_NOMEM);
    cm_result res = store_sq_connect(&r->db, b->path, SQLITE_OPEN_READONLY, b->busy_timeout_ms);
    for (size_t i = 0; cm_ok(res) && i < SQR_COUNT; i++) {
        res = store_sq_prepare(r->db, k_store_sq_read_sql[i], &r->st[i]);
    }
    if (!cm_ok(res)) {
        store_sq_reader_close(r);
        return res;
    }
    *out_r = r;
    return cm_result_make(CM_OK);
}

// store_sq_col_span returns column |i| as a span: pointing into the row when |a| is NULL
// (valid until the next step), else copied into |a|.
static cm_result store_sq_col_span(sqlite3_stmt *st, int i, cm_arena *a, cm_span *out)
{
    const void *p = sqlite3_column_blob(st, i);
    size_t len = (size_t)sqlite3_column_bytes(st, i);
    *out = cm_span_make(NULL, 0);
    if (p == NULL || len == 0) {
        return cm_result_make(CM_OK);
    }
    if (a == NULL) {
        *out = cm_span_make(p, len);
        return cm_result_make(CM_OK);
    }
    uint8_t *copy = cm_arena_memdup(a, cm_span_make(p, len));
    CM_ENSURE(copy != NULL, CM_E_NOMEM);
    *out = cm_span_make(copy, len);
    return cm_result_make(CM_OK);
}

// store_sq_col_text is store_sq_col_span for NUL-terminated text ("" for NULL).
static cm_result store_sq_col_text(sqlite3_stmt *st, int i, cm_arena *a, const char **out)
{
    const char *p = (const char *)sqlite3_column_text(st, i);
    size_t len = (size_t)sqlite3_column_bytes(st, i);
    *out = "";
    if (p == NULL) {
        return cm_result_make(CM_OK);
    }
    if (a == NULL) {
        *out = p;
        return cm_result_make(CM_OK);
    }
    char *copy = cm_arena_alloc(a, len + 1);
    CM_ENSURE(copy != NULL, CM_E_NOMEM);
    memcpy(copy, p, len);
    copy[len] = '\0';
    *out = copy;
    return cm_result_make(CM_OK);
}

// store_sq_row_cert fills |c| from a row of STORE_SQ_CERT_COLS.
static cm_result store_sq_row_cert(sqlite3_stmt *st, cm_arena *a, store_cert *c)
{
    memset(c, 0, sizeof(*c));
    c->id = sqlite3_column_int64(st, 0);
    CM_TRY(store_sq_col_text(st, 1, a, &c->ca));
    CM_TRY(store_sq_col_span(st, 2, a, &c->serial));
    CM_TRY(store_sq_col_span(st, 3, a, &c->subject_der));
    CM_TRY(store_sq_col_text(st, 4, a, &c->subject_text));
    c->not_before = sqlite3_column_int64(st, 5);
    c->not_after = sqlite3_column_int64(st, 6);
    CM_TRY(store_sq_col_span(st, 7, a, &c->spki_sha256));
    const char *status = (const char *)sqlite3_column_text(st, 8);
    c->status = STORE_CERT_ANY;
    for (int i = 0; i < 4; i++) {
        if (status != NULL && strcmp(status, k_store_sq_status_text[i]) == 0) {
            c->status = (store_cert_status)i;
        }
    }
    CM_ENSURE(c->status != STORE_CERT_ANY, STORE_E_CORRUPT);
    c->revoked_at = sqlite3_column_int64(st, 9);
    c->reason = sqlite3_column_type(st, 10) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 10);
    CM_TRY(store_sq_col_span(st, 11, a, &c->transaction_id));
    c->requester_kind = (store_auth_kind)sqlite3_column_int(st, 12);
    CM_TRY(store_sq_col_span(st, 13, a, &c->requester));
    CM_TRY(store_sq_col_span(st, 14, a, &c->cert_der));
    c->issued_at = sqlite3_column_int64(st, 15);
    c->confirm_deadline = sqlite3_column_int64(st, 16);
    return cm_result_make(CM_OK);
}

// store_sq_get_cert runs a one-row certificate lookup bound with (ca, key).
static cm_result store_sq_get_cert(store_backend_reader *r, int idx, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span key)
{
    sqlite3_stmt *st = r->st[idx];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, key);
    int rc = sqlite3_step(st);
    cm_result res;
    if (rc == SQLITE_ROW) {
        res = store_sq_row_cert(st, a, out);
    } else if (rc == SQLITE_DONE) {
        res = cm_bail_note(STORE_E_NOT_FOUND, __FILE__, __LINE__);
    } else {
        res = store_sq_fail(r->db, rc, "certificate lookup");
    }
    store_sq_done(st); // ends the read transaction so checkpoints can advance
    return res;
}

static cm_result store_sq_cert_get(store_backend_reader *r, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span serial)
{
    return store_sq_get_cert(r, SQR_CERT_GET, a, out, ca, serial);
}

static cm_result store_sq_cert_get_by_txn(store_backend_reader *r, cm_arena *a, store_cert *out,
                                          const char *ca, cm_span transaction_id)
{
    return store_sq_get_cert(r, SQR_CERT_BY_TXN, a, out, ca, transaction_id);
}

static cm_result store_sq_txn_get(store_backend_reader *r, cm_arena *a, store_txn *out,
                                  const char *ca, cm_span transaction_id)
{
    sqlite3_stmt *st = r->st[SQR_TXN_GET];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, transaction_id);
    int rc = sqlite3_step(st);
    cm_result res;
    memset(out, 0, sizeof(*out));
    if (rc == SQLITE_ROW) {
        out->ca = ca;
        out->state = (uint32_t)sqlite3_column_int64(st, 0);
        out->protection = (store_auth_kind)sqlite3_column_int(st, 3);
        out->expires_at = sqlite3_column_int64(st, 5);
        res = store_sq_col_span(st, 1, a, &out->sender_nonce);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 2, a, &out->serial);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 4, a, &out->credential);
        }
        if (cm_ok(res)) {
            uint8_t *tid = cm_arena_memdup(a, transaction_id);
            res = cm_result_make(tid != NULL ? CM_OK : CM_E_NOMEM);
            out->transaction_id = cm_span_make(tid, transaction_id.len);
        }
    } else if (rc == SQLITE_DONE) {
        res = cm_bail_note(STORE_E_TXN_NOT_FOUND, __FILE__, __LINE__);
    } else {
        res = store_sq_fail(r->db, rc, "transaction lookup");
    }
    store_sq_done(st);
    return res;
}

static void store_sq_bind_filter(sqlite3_stmt *st, const store_filter *f)
{
    store_sq_bind_text(st, 1, f->ca);
    store_sq_bind_text(st, 2,
                       f->status == STORE_CERT_ANY ? NULL : k_store_sq_status_text[f->status]);
    store_sq_bind_text(st, 3, f->subject_substr);
}

static cm_result store_sq_cert_list(store_backend_reader *r, const store_filter *f,
                                    store_cert_fn fn, void *ctx)
{
    sqlite3_stmt *st = r->st[SQR_CERT_LIST];
    store_sq_bind_filter(st, f);
    (void)sqlite3_bind_int64(st, 4, f->after_id);
    (void)sqlite3_bind_int64(st, 5, f->limit == 0 ? -1 : (int64_t)f->limit);
    cm_result res = cm_result_make(CM_OK);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_cert c;
        res = store_sq_row_cert(st, NULL, &c);
        if (!cm_ok(res) || !fn(ctx, &c)) {
            break;
        }
    }
    if (cm_ok(res) && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "certificate list");
    }
    store_sq_done(st);
    return res;
}

static cm_result store_sq_cert_count(store_backend_reader *r, const store_filter *f,
                                     uint64_t *out_count)
{
    sqlite3_stmt *st = r->st[SQR_CERT_COUNT];
    store_sq_bind_filter(st, f);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out_count = (uint64_t)sqlite3_column_int64(st, 0);
    }
    store_sq_done(st);
    if (rc != SQLITE_ROW) {
        return store_sq_fail(r->db, rc, "certificate count");
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_revoked_list(store_backend_reader *r, const char *ca,
                                       int64_t not_after_min, store_revoked_fn fn, void *ctx)
{
    sqlite3_stmt *st = r->st[SQR_REVOKED];
    store_sq_bind_text(st, 1, ca);
    (void)sqlite3_bind_int64(st, 2, not_after_min);
    cm_result res = cm_result_make(CM_OK);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cm_span serial;
        res = store_sq_col_span(st, 0, NULL, &serial);
        if (!cm_ok(res) ||
            !fn(ctx, serial, sqlite3_column_int64(st, 1), sqlite3_column_int(st, 2))) {
            break;
        }
    }
    if (cm_ok(res) && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "revoked list");
    }
    store_sq_done(st);
    return res;
}

static cm_result store_sq_crl_get(store_backend_reader *r, cm_arena *a, store_crl *out,
                                  const char *ca)
{
    sqlite3_stmt *st = r->st[SQR_CRL_GET];
    store_sq_bind_text(st, 1, ca);
    int rc = sqlite3_step(st);
    cm_result res;
    memset(out, 0, sizeof(*out));
    if (rc == SQLITE_ROW) {
        out->ca = ca;
        out->crl_number = (uint64_t)sqlite3_column_int64(st, 0);
        out->numbers_issued = (uint64_t)sqlite3_column_int64(st, 1);
        out->revision = (uint64_t)sqlite3_column_int64(st, 2);
        out->built_revision = (uint64_t)sqlite3_column_int64(st, 3);
        out->this_update = sqlite3_column_int64(st, 5);
        out->next_update = sqlite3_column_int64(st, 6);
        res = store_sq_col_span(st, 4, a, &out->crl_der);
    } else if (rc == SQLITE_DONE) {
        res = cm_bail_note(STORE_E_NOT_FOUND, __FILE__, __LINE__);
    } else {
        res = store_sq_fail(r->db, rc, "CRL state");
    }
    store_sq_done(st);
    return res;
}

// store_sq_check runs PRAGMA integrity_check (want one row "ok") and PRAGMA
// foreign_key_check (want no row).
static cm_result store_sq_check(store_backend_reader *r)
{
    sqlite3_stmt *st = NULL;
    CM_TRY(store_sq_prepare(r->db, "PRAGMA integrity_check", &st));
    int rc = sqlite3_step(st);
    cm_result res = cm_result_make(CM_OK);
    if (rc != SQLITE_ROW) {
        res = store_sq_fail(r->db, rc, "integrity_check");
    } else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
        cm_log(CM_LOG_ERROR, "store: integrity_check: %s", sqlite3_column_text(st, 0));
        res = cm_bail_note(STORE_E_CORRUPT, __FILE__, __LINE__);
    }
    (void)sqlite3_finalize(st);
    CM_TRY(res);
    CM_TRY(store_sq_prepare(r->db, "PRAGMA foreign_key_check", &st));
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        cm_log(CM_LOG_ERROR, "store: foreign_key_check: a %s row breaks its foreign key",
               sqlite3_column_text(st, 0));
        res = cm_bail_note(STORE_E_CORRUPT, __FILE__, __LINE__);
    } else if (rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "foreign_key_check");
    }
    (void)sqlite3_finalize(st);
    return res;
}

const char *store_sqlite_migration_sql(size_t i)
{
    return i < sizeof(k_store_sq_migrations) / sizeof(k_store_sq_migrations[0])
               ? k_store_sq_migrations[i]
               : NULL;
}

const char *store_sqlite_request_path_sql(size_t i)
{
    static const int k_write[] = {SQW_CERT_STATUS,  SQW_CERT_CONFIRM, SQW_CERT_REVOKE,
                                  SQW_CERT_RELEASE, SQW_CRL_BUMP,     SQW_TXN_UPDATE,
                                  SQW_TXN_DELETE,   SQW_TXN_EXPIRE,   SQW_SWEEP_BUMP,
                                  SQW_SWEEP,        SQW_CRL_NEXT,     SQW_CRL_PUT};
    static const int k_read[] = {SQR_CERT_GET, SQR_CERT_BY_TXN, SQR_TXN_GET, SQR_REVOKED,
                                 SQR_CRL_GET};
    const size_t nw = sizeof(k_write) / sizeof(k_write[0]);
    const size_t nr = sizeof(k_read) / sizeof(k_read[0]);
    if (i < nw) {
        return k_store_sq_write_sql[k_write[i]];
    }
    return i - nw < nr ? k_store_sq_read_sql[k_read[i - nw]] : NULL;
}

const store_backend_ops store_sqlite_ops = {
    .scheme = "sqlite",
    .open = store_sq_open,
    .close = store_sq_close,
    .begin = store_sq_begin,
    .exec = store_sq_exec_job,
    .commit = store_sq_commit,
    .rollback = store_sq_rollback,
    .after_batch = store_sq_after_batch,
    .stats = store_sq_stats,
    .reader_open = store_sq_reader_open,
    .reader_close = store_sq_reader_close,
    .cert_get = store_sq_cert_get,
    .cert_get_by_txn = store_sq_cert_get_by_txn,
    .txn_get = store_sq_txn_get,
    .cert_list = store_sq_cert_list,
    .cert_count = store_sq_cert_count,
    .revoked_list = store_sq_revoked_list,
    .crl_get = store_sq_crl_get,
    .check = store_sq_check,
};
