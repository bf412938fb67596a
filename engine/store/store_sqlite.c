// The SQLite backend ("sqlite:PATH"): WAL journal, synchronous=FULL by default, foreign keys
// on, schema created and migrated here (PRAGMA user_version, a table of migrations), every
// statement prepared once per connection. This file has the schema, the statements' SQL, opening
// (write connection, migration) and the reader handles; store_sqlite_write.c runs the writer's
// jobs, store_sqlite_read.c the reads, store_sqlite_ckpt.c the background WAL checkpoints.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_sqlite_internal.h"

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

// Version 3 (issue 14): trust and authorization.
// - cert.replaces / revoke_replaced: a kur's certificate names the one it replaces; once it is
//   valid the replaced one gets superseded_at (and is revoked, reason superseded, when the
//   profile said revoke_on_update). cert_by_replaces (partial: kur certificates only) finds an
//   unconfirmed update of a certificate.
// - cert_by_key (ca, spki_sha256): the key-reuse rule's lookup on every enrolment. It costs
//   every insert a write to a random leaf page, as cert_by_txn did (see bench/store_bench.c's
//   key-index row and the branch report for the measured cost).
// - txn.reserved_serial / spki_sha256 / replaces: the reservation made before signing; the
//   serial is unique per CA among reservations (txn_reserved_serial) as it is among
//   certificates (UNIQUE (ca, serial)); txn_pending_key and txn_pending_update find
//   reservations that have no certificate yet (serial IS NULL), for the key-reuse and
//   one-update-at-a-time rules. ADD COLUMN keeps txn's foreign key on serial, which is only set
//   once the certificate exists.
// - credential_use: certificates reserved per MAC credential with a limit (max_certs, once).
// - txn.flags / request_nonce / signer_cert (issue 15): what a certConf must match besides the
//   credential (the server's request flags, the request's senderNonce, the certificate that
//   signed the request). Before these columns the server packed them into state (flags in the
//   bits above the low byte), sender_nonce (its own 16-octet nonce, then the request's) and
//   credential (a signature's 32-octet certificate hash, then the certificate); rows written
//   that way are unpacked here, so certConf of a transaction in flight across the upgrade still
//   matches. (The one place the store reads the server's values: it wrote the packing.)
// Existing rows: no certificate replaces another, none is superseded; nothing is counted.
static const char k_store_sq_schema_v3[] =
    "ALTER TABLE cert ADD COLUMN replaces BLOB;"
    "ALTER TABLE cert ADD COLUMN revoke_replaced INTEGER NOT NULL DEFAULT 0"
    " CHECK (revoke_replaced IN (0, 1));"
    "ALTER TABLE cert ADD COLUMN superseded_at INTEGER;"
    "CREATE INDEX cert_by_key ON cert (ca, spki_sha256);"
    "CREATE INDEX cert_by_replaces ON cert (ca, replaces) WHERE replaces IS NOT NULL;"
    "ALTER TABLE txn ADD COLUMN reserved_serial BLOB;"
    "ALTER TABLE txn ADD COLUMN spki_sha256 BLOB;"
    "ALTER TABLE txn ADD COLUMN replaces BLOB;"
    "CREATE UNIQUE INDEX txn_reserved_serial ON txn (ca, reserved_serial)"
    " WHERE reserved_serial IS NOT NULL;"
    "CREATE INDEX txn_pending_key ON txn (ca, spki_sha256)"
    " WHERE serial IS NULL AND spki_sha256 IS NOT NULL;"
    "CREATE INDEX txn_pending_update ON txn (ca, replaces)"
    " WHERE serial IS NULL AND replaces IS NOT NULL;"
    "CREATE TABLE credential_use ("
    " ca TEXT NOT NULL,"
    " kind INTEGER NOT NULL CHECK (kind IN (1, 2)),"
    " credential BLOB NOT NULL,"
    " used INTEGER NOT NULL CHECK (used >= 0),"
    " PRIMARY KEY (ca, kind, credential)) WITHOUT ROWID;"
    "ALTER TABLE txn ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE txn ADD COLUMN request_nonce BLOB;"
    "ALTER TABLE txn ADD COLUMN signer_cert BLOB;"
    "UPDATE txn SET flags = state >> 8, state = state & 255 WHERE state > 255;"
    "UPDATE txn SET request_nonce = substr(sender_nonce, 17),"
    " sender_nonce = substr(sender_nonce, 1, 16) WHERE length(sender_nonce) > 16;"
    "UPDATE txn SET signer_cert = substr(credential, 33), credential = substr(credential, 1, 32)"
    " WHERE protection = 2 AND length(credential) > 32;";

// Version 4 (issue 16): delayed delivery. One row per request that waits (store.h:
// store_pending): under load or for an operator's approval. Its enrolment's reservation is the
// txn row of the same (ca, transaction_id), made together with it; |counted| says whether that
// reservation counted a use of a limited credential (given back when the row is rejected or
// expires). pending_by_state serves the drains and `certmint pending`, pending_expiry the
// maintenance. Existing databases have no waiting request.
static const char k_store_sq_schema_v4[] =
    "CREATE TABLE pending ("
    " id INTEGER PRIMARY KEY,"
    " ca TEXT NOT NULL,"
    " transaction_id BLOB NOT NULL,"
    " body_type INTEGER NOT NULL,"
    " cert_req_id INTEGER NOT NULL,"
    " why INTEGER NOT NULL CHECK (why IN (1, 2)),"
    " state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 6),"
    " profile TEXT,"
    " subject TEXT NOT NULL,"
    " key_type TEXT NOT NULL,"
    " requester TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " claimed_at INTEGER,"
    " decided_at INTEGER,"
    " tbs BLOB NOT NULL,"
    " serial BLOB NOT NULL,"
    " flags INTEGER NOT NULL DEFAULT 0,"
    " fail_info INTEGER CHECK (fail_info IS NULL OR fail_info BETWEEN 0 AND 31),"
    " status_text TEXT,"
    " replaces BLOB,"
    " counted INTEGER NOT NULL DEFAULT 0 CHECK (counted IN (0, 1)),"
    " UNIQUE (ca, transaction_id),"
    " CHECK (state <> 3 OR claimed_at IS NOT NULL),"
    " CHECK (state <> 5 OR fail_info IS NOT NULL));"
    "CREATE INDEX pending_by_state ON pending (state, id);"
    "CREATE INDEX pending_expiry ON pending (expires_at);";

static const char *const k_store_sq_migrations[] = {
    k_store_sq_schema_v1, // 0 -> 1
    k_store_sq_schema_v2, // 1 -> 2
    k_store_sq_schema_v3, // 2 -> 3
    k_store_sq_schema_v4, // 3 -> 4
};

_Static_assert(sizeof(k_store_sq_migrations) / sizeof(k_store_sq_migrations[0]) ==
                   STORE_SCHEMA_VERSION,
               "one migration per schema version");

// ---------------------------------------------------------------------------------------------
// Statements

#define STORE_SQ_CERT_COLS                                                                    \
    "id, ca, serial, subject_der, subject_text, not_before, not_after, spki_sha256, status, " \
    "revoked_at, reason, transaction_id, requester_kind, requester, cert_der, issued_at, "    \
    "confirm_deadline, replaces, revoke_replaced, superseded_at"

// What decides whether a certificate may authenticate (store_cert_state): an update of it is
// pending while an unconfirmed certificate replaces it or a reservation (no certificate yet)
// names it. (INDEXED BY: the planner prefers txn's primary key, whose first column ca is all
// it can use, over the partial indexes; with one CA that would read every transaction.) Read by the
// request path (store_cert_state_get) and by the writer (a kur's reservation). Bound: ?1 ca, ?2
// serial.
#define STORE_SQ_CERT_STATE                                                                 \
    "SELECT c.status, c.not_after, c.reason, c.superseded_at, "                             \
    "EXISTS (SELECT 1 FROM cert n WHERE n.ca = c.ca AND n.replaces = c.serial "             \
    "AND n.status = 'unconfirmed') OR EXISTS (SELECT 1 FROM txn t INDEXED BY "              \
    "txn_pending_update WHERE t.ca = c.ca AND t.replaces = c.serial AND t.serial IS NULL) " \
    "FROM cert c WHERE c.ca = ?1 AND c.serial = ?2"

#define STORE_SQ_PENDING_COLS                                                                    \
    "id, ca, transaction_id, body_type, cert_req_id, why, state, profile, subject, key_type, "   \
    "requester, created_at, expires_at, claimed_at, decided_at, tbs, serial, flags, fail_info, " \
    "status_text, replaces, counted"

const char *const store_sq_write_sql[SQW_COUNT] = {
    [SQW_BEGIN] = "BEGIN IMMEDIATE",
    [SQW_COMMIT] = "COMMIT",
    [SQW_ROLLBACK] = "ROLLBACK",
    [SQW_SAVEPOINT] = "SAVEPOINT job",
    [SQW_RELEASE] = "RELEASE job",
    [SQW_ROLLBACK_TO] = "ROLLBACK TO job",
    [SQW_CERT_INSERT] =
        "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after, "
        "spki_sha256, status, transaction_id, requester_kind, requester, cert_der, issued_at, "
        "confirm_deadline, replaces, revoke_replaced) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    [SQW_CERT_STATUS] = "SELECT status, confirm_deadline, replaces, revoke_replaced FROM cert "
                        "WHERE ca = ?1 AND serial = ?2",
    [SQW_CERT_CONFIRM] = "UPDATE cert SET status = 'valid', confirm_deadline = NULL "
                         "WHERE ca = ?1 AND serial = ?2",
    [SQW_CERT_REVOKE] = "UPDATE cert SET status = ?3, revoked_at = ?4, reason = ?5, "
                        "confirm_deadline = NULL WHERE ca = ?1 AND serial = ?2",
    [SQW_CERT_RELEASE] = "UPDATE cert SET status = 'valid', revoked_at = NULL, reason = NULL "
                         "WHERE ca = ?1 AND serial = ?2",
    [SQW_CRL_BUMP] = "INSERT INTO crl_state (ca, revision) VALUES (?1, 1) "
                     "ON CONFLICT (ca) DO UPDATE SET revision = revision + 1",
    [SQW_TXN_INSERT] = "INSERT INTO txn (ca, transaction_id, state, sender_nonce, serial, "
                       "protection, credential, expires_at, flags, request_nonce, signer_cert) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [SQW_TXN_UPDATE] = "UPDATE txn SET state = ?3, sender_nonce = ?4, serial = ?5, "
                       "protection = ?6, credential = ?7, expires_at = ?8, flags = ?9, "
                       "request_nonce = ?10, signer_cert = ?11 "
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
    [SQW_SUPERSEDE] = "UPDATE cert SET superseded_at = ?3 WHERE ca = ?1 AND serial = ?2 "
                      "AND superseded_at IS NULL",
    [SQW_CERT_STATE] = STORE_SQ_CERT_STATE,
    [SQW_TXN_RESERVE] = "INSERT INTO txn (ca, transaction_id, state, protection, credential, "
                        "expires_at, reserved_serial, spki_sha256, replaces) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [SQW_SERIAL_USED] = "SELECT 1 FROM cert WHERE ca = ?1 AND serial = ?2",
    [SQW_KEY_USED] = "SELECT 1 FROM cert WHERE ca = ?1 AND spki_sha256 = ?2 "
                     "AND NOT (status = 'revoked' AND reason = 5) "
                     "UNION ALL SELECT 1 FROM txn INDEXED BY txn_pending_key WHERE ca = ?1 "
                     "AND spki_sha256 = ?2 "
                     "AND serial IS NULL AND transaction_id <> ?3 LIMIT 1",
    [SQW_USE_COUNT] = "INSERT INTO credential_use (ca, kind, credential, used) "
                      "VALUES (?1, ?2, ?3, 1) ON CONFLICT (ca, kind, credential) "
                      "DO UPDATE SET used = used + 1 WHERE used < ?4 RETURNING used",
    [SQW_USE_RETURN] = "UPDATE credential_use SET used = used - 1 "
                       "WHERE ca = ?1 AND kind = ?2 AND credential = ?3 AND used > 0",
    [SQW_TXN_UNRESERVE] = "DELETE FROM txn WHERE ca = ?1 AND transaction_id = ?2 "
                          "AND serial IS NULL",
    [SQW_EXPIRE_PENDING] = "SELECT EXISTS (SELECT 1 FROM txn WHERE expires_at <= ?1 "
                           "AND serial IS NULL AND replaces IS NOT NULL)",
    [SQW_DATA_VERSION] = "PRAGMA data_version",
    [SQW_UPDATE_BUSY] = "SELECT EXISTS (SELECT 1 FROM cert WHERE ca = ?1 AND replaces = ?2 "
                        "AND status = 'unconfirmed') OR EXISTS (SELECT 1 FROM txn INDEXED BY "
                        "txn_pending_update WHERE ca = ?1 AND replaces = ?2 AND serial IS NULL "
                        "AND transaction_id <> ?3)",
    [SQW_COPY_CERT] =
        "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after, "
        "spki_sha256, status, revoked_at, reason, transaction_id, requester_kind, requester, "
        "cert_der, issued_at, confirm_deadline, replaces, revoke_replaced, superseded_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
        "?18, ?19)",
    [SQW_COPY_CRL] =
        "INSERT OR REPLACE INTO crl_state (ca, numbers_issued, revision, built_revision, "
        "crl_der, crl_number, this_update, next_update) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [SQW_COPY_USE] = "INSERT OR REPLACE INTO credential_use (ca, kind, credential, used) "
                     "VALUES (?1, ?2, ?3, ?4)",
    [SQW_COPY_TXN] =
        "INSERT INTO txn (ca, transaction_id, state, sender_nonce, serial, protection, "
        "credential, expires_at, flags, request_nonce, signer_cert, reserved_serial, "
        "spki_sha256, replaces) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
        "?11, ?12, ?13, ?14)",
    [SQW_COPY_PENDING] =
        "INSERT INTO pending (id, ca, transaction_id, body_type, cert_req_id, why, "
        "state, profile, subject, key_type, requester, created_at, expires_at, "
        "claimed_at, decided_at, tbs, serial, flags, fail_info, status_text, "
        "replaces, counted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
        "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
    // The pending table (store_sqlite_pending.c). States as store_pending_state numbers them.
    [SQW_PEND_INSERT] = "INSERT INTO pending (ca, transaction_id, body_type, cert_req_id, why, "
                        "state, profile, subject, key_type, requester, created_at, expires_at, "
                        "tbs, serial, flags, counted, status_text, replaces) VALUES (?1, ?2, ?3, "
                        "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    [SQW_PEND_TXN_NOTE] = "UPDATE txn SET flags = ?3, request_nonce = ?4, signer_cert = ?5 "
                          "WHERE ca = ?1 AND transaction_id = ?2",
    [SQW_PEND_ROW] = "SELECT state, ca, transaction_id, counted, serial FROM pending WHERE id = ?1",
    [SQW_PEND_ROW_TID] = "SELECT state, id, serial FROM pending WHERE ca = ?1 AND "
                         "transaction_id = ?2",
    [SQW_PEND_CLAIM] = "UPDATE pending SET state = 3, claimed_at = ?2 WHERE id = ?1 AND "
                       "(state IN (0, 2) OR (state = 3 AND claimed_at < ?3))",
    [SQW_PEND_APPROVE] = "UPDATE pending SET state = 2, decided_at = ?2 WHERE id = ?1 AND "
                         "state = 1",
    [SQW_PEND_REJECT] = "UPDATE pending SET state = 5, decided_at = ?2, fail_info = ?3, "
                        "status_text = ?4, expires_at = ?5 WHERE id = ?1 AND "
                        "state IN (0, 1, 2, 3, ?6)",
    [SQW_PEND_ISSUED] = "UPDATE pending SET state = 4 WHERE id = ?1 AND state = 3",
    [SQW_PEND_TXN_ISSUE] = "UPDATE txn SET state = ?3, serial = ?4, expires_at = ?5 "
                           "WHERE ca = ?1 AND transaction_id = ?2 AND serial IS NULL "
                           "AND reserved_serial = ?4",
    [SQW_PEND_DELIVER] = "UPDATE pending SET state = 6, expires_at = ?3 WHERE ca = ?1 AND "
                         "transaction_id = ?2 AND state IN (4, 5, 6)",
    [SQW_PEND_TXN_DELIVER] = "UPDATE txn SET sender_nonce = ?3, expires_at = ?4 WHERE ca = ?1 "
                             "AND transaction_id = ?2",
    [SQW_PEND_CERT_DEADLINE] = "UPDATE cert SET confirm_deadline = ?3 WHERE ca = ?1 AND "
                               "serial = ?2 AND status = 'unconfirmed'",
    [SQW_PEND_RSV] = "SELECT protection, credential, replaces FROM txn WHERE ca = ?1 AND "
                     "transaction_id = ?2 AND serial IS NULL AND reserved_serial IS NOT NULL",
    [SQW_PEND_UNRESERVE] = "UPDATE txn SET reserved_serial = NULL, spki_sha256 = NULL, "
                           "replaces = NULL WHERE ca = ?1 AND transaction_id = ?2 AND "
                           "serial IS NULL",
    [SQW_PEND_EXPIRED] = "SELECT id, state FROM pending WHERE expires_at <= ?1 AND state < 5 "
                         "ORDER BY expires_at LIMIT 1024",
    [SQW_PEND_PURGE] = "DELETE FROM pending WHERE expires_at <= ?1 AND state >= 5",
};

const char *const store_sq_read_sql[SQR_COUNT] = {
    [SQR_CERT_GET] = "SELECT " STORE_SQ_CERT_COLS " FROM cert WHERE ca = ?1 AND serial = ?2",
    [SQR_CERT_BY_TXN] = "SELECT " STORE_SQ_CERT_COLS " FROM cert WHERE ca = ?1 AND serial = "
                        "(SELECT serial FROM txn WHERE ca = ?1 AND transaction_id = ?2)",
    [SQR_TXN_GET] = "SELECT state, sender_nonce, serial, protection, credential, expires_at, "
                    "flags, request_nonce, signer_cert "
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
    [SQR_CERT_STATE] = STORE_SQ_CERT_STATE,
    [SQR_TXN_LIST] = "SELECT ca, transaction_id, state, sender_nonce, serial, protection, "
                     "credential, expires_at, flags, request_nonce, signer_cert, "
                     "reserved_serial, spki_sha256, replaces FROM txn ORDER BY ca, transaction_id",
    [SQR_USE_LIST] = "SELECT ca, kind, credential, used FROM credential_use "
                     "ORDER BY ca, kind, credential",
    [SQR_CRL_LIST] = "SELECT ca, crl_number, numbers_issued, revision, built_revision, crl_der, "
                     "this_update, next_update FROM crl_state ORDER BY ca",
    [SQR_PEND_GET] = "SELECT " STORE_SQ_PENDING_COLS " FROM pending WHERE ca = ?1 AND "
                     "transaction_id = ?2",
    [SQR_PEND_GET_ID] = "SELECT " STORE_SQ_PENDING_COLS " FROM pending WHERE id = ?1",
    // The states are bound as ?1..?7 (-1 for those not selected).
    [SQR_PEND_LIST] = "SELECT " STORE_SQ_PENDING_COLS " FROM pending WHERE state IN (?1, ?2, ?3, "
                      "?4, ?5, ?6, ?7) AND id > ?8 AND (?9 IS NULL OR ca = ?9) ORDER BY id "
                      "LIMIT ?10",
};

const char *const store_sq_status_text[4] = {"unconfirmed", "valid", "revoked", "hold"};

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

cm_result store_sq_fail(sqlite3 *db, int rc, const char *what)
{
    cm_log_ratelimited("store.sqlite", 10000, CM_LOG_ERROR, "store: sqlite %s: %s (%s)", what,
                       sqlite3_errstr(rc), db != NULL ? sqlite3_errmsg(db) : "no connection");
    return cm_bail_note(store_sq_code(rc), __FILE__, __LINE__);
}

cm_result store_sq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out_st)
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

cm_result store_sq_exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return store_sq_fail(db, rc, sql);
    }
    return cm_result_make(CM_OK);
}

cm_result store_sq_connect(sqlite3 **out_db, const char *path, int flags, int busy_timeout_ms)
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
        r = store_sq_prepare(b->db, store_sq_write_sql[i], &b->st[i]);
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
// Reader handles

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
        res = store_sq_prepare(r->db, store_sq_read_sql[i], &r->st[i]);
    }
    if (!cm_ok(res)) {
        store_sq_reader_close(r);
        return res;
    }
    *out_r = r;
    return cm_result_make(CM_OK);
}

const char *store_sqlite_migration_sql(size_t i)
{
    return i < sizeof(k_store_sq_migrations) / sizeof(k_store_sq_migrations[0])
               ? k_store_sq_migrations[i]
               : NULL;
}

const char *store_sqlite_request_path_sql(size_t i)
{
    static const int k_write[] = {
        SQW_CERT_STATUS,    SQW_CERT_CONFIRM,   SQW_CERT_REVOKE,      SQW_CERT_RELEASE,
        SQW_CRL_BUMP,       SQW_TXN_UPDATE,     SQW_TXN_DELETE,       SQW_TXN_EXPIRE,
        SQW_SWEEP_BUMP,     SQW_SWEEP,          SQW_CRL_NEXT,         SQW_CRL_PUT,
        SQW_SUPERSEDE,      SQW_CERT_STATE,     SQW_SERIAL_USED,      SQW_KEY_USED,
        SQW_USE_COUNT,      SQW_USE_RETURN,     SQW_TXN_UNRESERVE,    SQW_EXPIRE_PENDING,
        SQW_UPDATE_BUSY,    SQW_PEND_TXN_NOTE,  SQW_PEND_ROW,         SQW_PEND_ROW_TID,
        SQW_PEND_CLAIM,     SQW_PEND_APPROVE,   SQW_PEND_REJECT,      SQW_PEND_ISSUED,
        SQW_PEND_TXN_ISSUE, SQW_PEND_DELIVER,   SQW_PEND_TXN_DELIVER, SQW_PEND_CERT_DEADLINE,
        SQW_PEND_RSV,       SQW_PEND_UNRESERVE, SQW_PEND_EXPIRED,     SQW_PEND_PURGE};
    static const int k_read[] = {SQR_CERT_GET, SQR_CERT_BY_TXN, SQR_TXN_GET,
                                 SQR_REVOKED,  SQR_CRL_GET,     SQR_CERT_STATE,
                                 SQR_PEND_GET, SQR_PEND_GET_ID, SQR_PEND_LIST};
    const size_t nw = sizeof(k_write) / sizeof(k_write[0]);
    const size_t nr = sizeof(k_read) / sizeof(k_read[0]);
    if (i < nw) {
        return store_sq_write_sql[k_write[i]];
    }
    return i - nw < nr ? store_sq_read_sql[k_read[i - nw]] : NULL;
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
    .cert_state = store_sq_cert_state,
    .changed_elsewhere = store_sq_changed_elsewhere,
    .txn_list = store_sq_txn_list,
    .crl_list = store_sq_crl_list,
    .use_list = store_sq_use_list,
    .pending_get = store_sq_pending_get,
    .pending_get_id = store_sq_pending_get_id,
    .pending_list = store_sq_pending_list,
};
