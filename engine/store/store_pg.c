// The PostgreSQL backend ("postgresql://..." or "postgresql:KEY=VALUE ..."), through libpq.
// Several certmintd nodes may share one database: the schema's constraints and certmint's
// PL/pgSQL functions keep every job correct when jobs of several nodes interleave (a
// certificate's row is locked while a job decides on it; CRL numbers come from one UPDATE ...
// RETURNING). The schema lives in the connection's current schema (search_path), is versioned
// in certmint_meta and migrated like the SQLite one (store_sqlite.c), and a newer version is
// refused. This file has the schema, the statements' SQL, opening (migration under an advisory
// lock, so nodes starting together migrate once), the reader handles, health and the leader
// lock; store_pg_conn.c connects, store_pg_write.c runs the writer's batches, store_pg_read.c
// the reads.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_pg_internal.h"

// ---------------------------------------------------------------------------------------------
// Schema. k_store_pg_migrations[v] takes a schema from version v to v + 1; append only. The
// versions match SQLite's (store_sqlite.c) so that store copy and the tools speak of one schema.

// The statements inside the functions below, also listed (without INTO) for the EXPLAIN test.
#define STORE_PG_CERT_ROW  " FROM cert WHERE ca = $1 AND serial = $2"
#define STORE_PG_CERT_LOCK STORE_PG_CERT_ROW " FOR UPDATE"
#define STORE_PG_CRL_BUMP                                  \
    "INSERT INTO crl_state (ca, revision) VALUES ($1, 1) " \
    "ON CONFLICT (ca) DO UPDATE SET revision = crl_state.revision + 1"
#define STORE_PG_CERT_EXISTS "SELECT 1 FROM cert WHERE ca = $1 AND serial = $5"
// The replaced certificate's row, locked (a function's |sr|).
#define STORE_PG_CERT_LOCK2 " FROM cert WHERE ca = $1 AND serial = sr FOR UPDATE"
// Another update of certificate $9 in progress: an unconfirmed certificate replacing it, or a
// reservation other than this one ($2) without a certificate yet.
#define STORE_PG_UPDATE_BUSY                                                                   \
    "(EXISTS (SELECT 1 FROM cert WHERE ca = $1 AND replaces = $9 AND status = 'unconfirmed') " \
    "OR EXISTS (SELECT 1 FROM txn WHERE ca = $1 AND replaces = $9 AND serial IS NULL "         \
    "AND transaction_id <> $2))"
// Key $8 certified by this CA (certificates revoked cessationOfOperation, never accepted, do
// not count) or reserved by another pending enrolment.
#define STORE_PG_KEY_USED                                                                      \
    "(EXISTS (SELECT 1 FROM cert WHERE ca = $1 AND spki_sha256 = $8 "                          \
    "AND NOT (status = 'revoked' AND reason = 5)) OR EXISTS (SELECT 1 FROM txn WHERE ca = $1 " \
    "AND spki_sha256 = $8 AND serial IS NULL AND transaction_id <> $2))"
// Version 1's transaction update (its function; migrations never change).
#define STORE_PG_TXN_UPDATE_V1                                                     \
    "UPDATE txn SET state = $3, sender_nonce = $4, serial = $5, protection = $6, " \
    "credential = $7, expires_at = $8 WHERE ca = $1 AND transaction_id = $2"
// The transaction row as version 3 has it: $9 flags, $10 the request's nonce, $11 the signer.
#define STORE_PG_TXN_INSERT                                                           \
    "INSERT INTO txn (ca, transaction_id, state, sender_nonce, serial, protection, "  \
    "credential, expires_at, flags, request_nonce, signer_cert) VALUES ($1, $2, $3, " \
    "$4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (ca, transaction_id) DO NOTHING"
#define STORE_PG_TXN_UPDATE                                                        \
    "UPDATE txn SET state = $3, sender_nonce = $4, serial = $5, protection = $6, " \
    "credential = $7, expires_at = $8, flags = $9, request_nonce = $10, "          \
    "signer_cert = $11 WHERE ca = $1 AND transaction_id = $2"
#define STORE_PG_SWEEP_BUMP                                                 \
    "INSERT INTO crl_state (ca, revision) SELECT DISTINCT ca, 1 FROM cert " \
    "WHERE status = 'unconfirmed' AND confirm_deadline <= $1 "              \
    "ON CONFLICT (ca) DO UPDATE SET revision = crl_state.revision + 1"
#define STORE_PG_SWEEP                                                                           \
    "UPDATE cert SET status = 'revoked', revoked_at = $1, reason = $2, confirm_deadline = NULL " \
    "WHERE status = 'unconfirmed' AND confirm_deadline <= $1"

// Version 1 comes in two parts, version 3 and 4 in three (C99 compilers need not support longer
// string literals).
static const char k_store_pg_schema_v1[] =
    "CREATE TABLE certmint_meta (name text PRIMARY KEY, value text NOT NULL);"
    "INSERT INTO certmint_meta VALUES ('application', 'certmint');"
    // One row per issued certificate; the CHECKs keep status and revocation consistent, as in
    // SQLite. id orders certificates by issue (store_cert_list's cursor); store copy lets it
    // be generated again, in the source's order.
    "CREATE TABLE cert ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " ca text NOT NULL,"
    " serial bytea NOT NULL,"
    " subject_der bytea NOT NULL,"
    " subject_text text NOT NULL,"
    " not_before bigint NOT NULL,"
    " not_after bigint NOT NULL,"
    " spki_sha256 bytea NOT NULL CHECK (length(spki_sha256) = 32),"
    " status text NOT NULL CHECK (status IN ('unconfirmed', 'valid', 'revoked', 'hold')),"
    " revoked_at bigint,"
    " reason integer CHECK (reason IS NULL OR (reason BETWEEN 0 AND 10 AND reason NOT IN (7, 8))),"
    " transaction_id bytea,"
    " requester_kind integer NOT NULL CHECK (requester_kind IN (0, 1, 2)),"
    " requester bytea,"
    " cert_der bytea NOT NULL,"
    " issued_at bigint NOT NULL,"
    " confirm_deadline bigint,"
    " UNIQUE (ca, serial),"
    " CHECK ((status IN ('revoked', 'hold')) = (revoked_at IS NOT NULL AND reason IS NOT NULL)),"
    " CHECK (status <> 'hold' OR reason = 6),"
    " CHECK (status <> 'unconfirmed' OR confirm_deadline IS NOT NULL));"
    "CREATE INDEX cert_by_txn ON cert (ca, transaction_id) WHERE transaction_id IS NOT NULL;"
    "CREATE INDEX cert_unconfirmed ON cert (confirm_deadline) WHERE status = 'unconfirmed';"
    "CREATE INDEX cert_revoked ON cert (ca, id) WHERE status IN ('revoked', 'hold');"
    "CREATE TABLE txn ("
    " ca text NOT NULL,"
    " transaction_id bytea NOT NULL,"
    " state bigint NOT NULL,"
    " sender_nonce bytea,"
    " serial bytea,"
    " protection integer NOT NULL CHECK (protection IN (0, 1, 2)),"
    " credential bytea,"
    " expires_at bigint NOT NULL,"
    " PRIMARY KEY (ca, transaction_id),"
    " FOREIGN KEY (ca, serial) REFERENCES cert (ca, serial));"
    "CREATE INDEX txn_expiry ON txn (expires_at);"
    "CREATE TABLE crl_state ("
    " ca text PRIMARY KEY,"
    " numbers_issued bigint NOT NULL DEFAULT 0,"
    " revision bigint NOT NULL DEFAULT 0,"
    " built_revision bigint NOT NULL DEFAULT 0,"
    " crl_der bytea,"
    " crl_number bigint NOT NULL DEFAULT 0,"
    " this_update bigint,"
    " next_update bigint);";

static const char k_store_pg_functions_v1[] =
    // The jobs that decide on a row they read. Each is one statement for the writer's
    // pipeline, returns a STORE_PG_FN_* code instead of raising (an error would abort the rest
    // of the batch), and locks the certificate's row first, so a job of another node on the
    // same certificate waits and then sees the result.
    "CREATE FUNCTION certmint_confirm(text, bytea, bigint) RETURNS integer "
    "LANGUAGE plpgsql AS $f$ DECLARE st text; dl bigint; BEGIN "
    " SELECT status, confirm_deadline INTO st, dl" STORE_PG_CERT_LOCK ";"
    " IF NOT FOUND THEN RETURN 1; END IF;"
    " IF st = 'valid' THEN RETURN 3; END IF;"
    " IF st <> 'unconfirmed' THEN RETURN 2; END IF;"
    " IF $3 <> 0 AND $3 >= dl THEN RETURN 5; END IF;"
    " UPDATE cert SET status = 'valid', confirm_deadline = NULL WHERE ca = $1 AND serial = $2;"
    " RETURN 0; END $f$;"
    // A held certificate may be revoked for good (RFC 5280 §5.3.1), not held twice.
    "CREATE FUNCTION certmint_revoke(text, bytea, bigint, bigint) RETURNS integer "
    "LANGUAGE plpgsql AS $f$ DECLARE st text; BEGIN "
    " SELECT status INTO st" STORE_PG_CERT_LOCK ";"
    " IF NOT FOUND THEN RETURN 1; END IF;"
    " IF st = 'revoked' OR (st = 'hold' AND $4 = 6) THEN RETURN 2; END IF;"
    " UPDATE cert SET status = CASE WHEN $4 = 6 THEN 'hold' ELSE 'revoked' END,"
    "  revoked_at = $3, reason = $4, confirm_deadline = NULL WHERE ca = $1 AND serial = $2;"
    " " STORE_PG_CRL_BUMP ";"
    " RETURN 0; END $f$;"
    "CREATE FUNCTION certmint_release(text, bytea) RETURNS integer "
    "LANGUAGE plpgsql AS $f$ DECLARE st text; BEGIN "
    " SELECT status INTO st" STORE_PG_CERT_LOCK ";"
    " IF NOT FOUND THEN RETURN 1; END IF;"
    " IF st <> 'hold' THEN RETURN 4; END IF;"
    " UPDATE cert SET status = 'valid', revoked_at = NULL, reason = NULL"
    "  WHERE ca = $1 AND serial = $2;"
    " " STORE_PG_CRL_BUMP ";"
    " RETURN 0; END $f$;"
    "CREATE FUNCTION certmint_txn_update(text, bytea, bigint, bytea, bytea, bigint, bytea, "
    "bigint) RETURNS integer LANGUAGE plpgsql AS $f$ BEGIN "
    " IF $5 IS NOT NULL AND NOT EXISTS (" STORE_PG_CERT_EXISTS ") THEN RETURN 1; END IF;"
    " " STORE_PG_TXN_UPDATE_V1 ";"
    " IF NOT FOUND THEN RETURN 6; END IF;"
    " RETURN 0; END $f$;"
    // Bump the revision of every CA that loses a certificate first, then revoke.
    "CREATE FUNCTION certmint_sweep(bigint, bigint) RETURNS bigint "
    "LANGUAGE plpgsql AS $f$ DECLARE n bigint; BEGIN "
    " " STORE_PG_SWEEP_BUMP ";"
    " " STORE_PG_SWEEP ";"
    " GET DIAGNOSTICS n = ROW_COUNT;"
    " RETURN n; END $f$;";

// Version 2 drops cert_by_txn, as SQLite's does (see store_sqlite.c).
static const char k_store_pg_schema_v2[] = "DROP INDEX cert_by_txn;";

// Version 3 (issue 14), as SQLite's (store_sqlite.c): which certificate a kur's replaces and
// when a certificate was superseded; reservations (a transaction row made before signing, with
// the serial the certificate will carry, its key's hash and the certificate it replaces); the
// (ca, spki_sha256) index of the key-reuse rule; per-credential counts of certificates; what a
// certConf must match (flags, the request's nonce, the signer's certificate), unpacked from
// where the server packed them in schema 2.
static const char k_store_pg_schema_v3[] =
    "ALTER TABLE cert ADD COLUMN replaces bytea,"
    " ADD COLUMN revoke_replaced boolean NOT NULL DEFAULT false,"
    " ADD COLUMN superseded_at bigint;"
    "CREATE INDEX cert_by_key ON cert (ca, spki_sha256);"
    "CREATE INDEX cert_by_replaces ON cert (ca, replaces) WHERE replaces IS NOT NULL;"
    "ALTER TABLE txn ADD COLUMN reserved_serial bytea, ADD COLUMN spki_sha256 bytea,"
    " ADD COLUMN replaces bytea, ADD COLUMN flags bigint NOT NULL DEFAULT 0,"
    " ADD COLUMN request_nonce bytea, ADD COLUMN signer_cert bytea;"
    "CREATE UNIQUE INDEX txn_reserved_serial ON txn (ca, reserved_serial)"
    " WHERE reserved_serial IS NOT NULL;"
    "CREATE INDEX txn_pending_key ON txn (ca, spki_sha256)"
    " WHERE serial IS NULL AND spki_sha256 IS NOT NULL;"
    "CREATE INDEX txn_pending_update ON txn (ca, replaces)"
    " WHERE serial IS NULL AND replaces IS NOT NULL;"
    "CREATE TABLE credential_use ("
    " ca text NOT NULL,"
    " kind integer NOT NULL CHECK (kind IN (1, 2)),"
    " credential bytea NOT NULL,"
    " used bigint NOT NULL CHECK (used >= 0),"
    " PRIMARY KEY (ca, kind, credential));"
    "UPDATE txn SET flags = state >> 8, state = state & 255 WHERE state > 255;"
    "UPDATE txn SET request_nonce = substring(sender_nonce FROM 17),"
    " sender_nonce = substring(sender_nonce FROM 1 FOR 16) WHERE length(sender_nonce) > 16;"
    "UPDATE txn SET signer_cert = substring(credential FROM 33),"
    " credential = substring(credential FROM 1 FOR 32)"
    " WHERE protection = 2 AND length(credential) > 32;"
    // Other nodes' signer-status caches: every change of what store_cert_state_get answers for
    // a certificate is announced (schema, CA, serial in hex) on channel certmint_status,
    // delivered at commit to every node's listener (store_pg_listen.c). Triggers, so that no
    // writer (a node, the admin tool, an operator's SQL) can change a status unannounced: a
    // certificate's status or supersession, a new certificate that replaces one (its update is
    // pending), a reservation that names one (made, given back, recorded, expired).
    "CREATE FUNCTION certmint_announce(text, bytea) RETURNS void LANGUAGE sql AS $f$"
    " SELECT pg_notify('certmint_status', current_schema() || ' ' || $1 || ' ' ||"
    " encode($2, 'hex')) $f$;"
    "CREATE FUNCTION certmint_cert_changed() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
    " IF TG_OP = 'UPDATE' THEN PERFORM certmint_announce(NEW.ca, NEW.serial); END IF;"
    " IF NEW.replaces IS NOT NULL THEN PERFORM certmint_announce(NEW.ca, NEW.replaces); END IF;"
    " RETURN NULL; END $f$;"
    "CREATE TRIGGER cert_status_changed AFTER UPDATE OF status, superseded_at ON cert"
    " FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR"
    " OLD.superseded_at IS DISTINCT FROM NEW.superseded_at)"
    " EXECUTE FUNCTION certmint_cert_changed();"
    "CREATE TRIGGER cert_replacing_inserted AFTER INSERT ON cert FOR EACH ROW"
    " WHEN (NEW.replaces IS NOT NULL) EXECUTE FUNCTION certmint_cert_changed();"
    "CREATE FUNCTION certmint_txn_changed() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
    " IF TG_OP <> 'INSERT' AND OLD.replaces IS NOT NULL THEN"
    "  PERFORM certmint_announce(OLD.ca, OLD.replaces); END IF;"
    " IF TG_OP <> 'DELETE' AND NEW.replaces IS NOT NULL THEN"
    "  PERFORM certmint_announce(NEW.ca, NEW.replaces); END IF;"
    " RETURN NULL; END $f$;"
    // Only rows that name a replaced certificate (WHEN): the enrolments' own rows pay nothing.
    "CREATE TRIGGER txn_reserved_update AFTER INSERT ON txn FOR EACH ROW"
    " WHEN (NEW.replaces IS NOT NULL) EXECUTE FUNCTION certmint_txn_changed();"
    "CREATE TRIGGER txn_dropped_update AFTER DELETE ON txn FOR EACH ROW"
    " WHEN (OLD.replaces IS NOT NULL) EXECUTE FUNCTION certmint_txn_changed();"
    "CREATE TRIGGER txn_recorded_update AFTER UPDATE OF serial, replaces ON txn FOR EACH ROW"
    " WHEN (OLD.replaces IS NOT NULL OR NEW.replaces IS NOT NULL)"
    " EXECUTE FUNCTION certmint_txn_changed();";

// The functions of version 3, replacing version 1's where their job grew: they return the
// job's code and the serial of another certificate whose status the job changed (hex, for
// the local status cache: store_job.also_serial).
#define STORE_PG_REVOKE_ROW                                                                   \
    " UPDATE cert SET status = CASE WHEN rsn = 6 THEN 'hold' ELSE 'revoked' END,"             \
    "  revoked_at = tm, reason = rsn, confirm_deadline = NULL WHERE ca = $1 AND serial = sr;" \
    " " STORE_PG_CRL_BUMP ";"
static const char k_store_pg_functions_v3[] =
    "DROP FUNCTION certmint_confirm(text, bytea, bigint);"
    "DROP FUNCTION certmint_revoke(text, bytea, bigint, bigint);"
    "DROP FUNCTION certmint_release(text, bytea);"
    "DROP FUNCTION certmint_txn_update(text, bytea, bigint, bytea, bytea, bigint, bytea, bigint);"
    // A certificate replaced by a valid key update: superseded, and revoked (superseded) when
    // the update asked for it, unless revoked already.
    "CREATE FUNCTION certmint_supersede(text, bytea, bigint, boolean) RETURNS void"
    " LANGUAGE plpgsql AS $f$ DECLARE st text; sr bytea := $2; tm bigint := $3; rsn bigint := 4;"
    " BEGIN"
    " UPDATE cert SET superseded_at = $3 WHERE ca = $1 AND serial = $2 AND superseded_at IS NULL;"
    " IF NOT $4 THEN RETURN; END IF;"
    " SELECT status INTO st" STORE_PG_CERT_LOCK2 ";"
    " IF NOT FOUND OR st = 'revoked' THEN RETURN; END IF;" STORE_PG_REVOKE_ROW " END $f$;"
    "CREATE FUNCTION certmint_confirm(text, bytea, bigint, OUT code integer, OUT also text)"
    " LANGUAGE plpgsql AS $f$ DECLARE st text; dl bigint; rp bytea; rr boolean; BEGIN"
    " also := NULL;"
    " SELECT status, confirm_deadline, replaces, revoke_replaced INTO st, dl, rp, "
    "rr" STORE_PG_CERT_LOCK ";"
    " IF NOT FOUND THEN code := 1; RETURN; END IF;"
    " IF st = 'valid' THEN code := 3; RETURN; END IF;"
    " IF st <> 'unconfirmed' THEN code := 2; RETURN; END IF;"
    " IF $3 <> 0 AND $3 >= dl THEN code := 5; RETURN; END IF;"
    " UPDATE cert SET status = 'valid', confirm_deadline = NULL WHERE ca = $1 AND serial = $2;"
    " IF rp IS NOT NULL THEN"
    "  PERFORM certmint_supersede($1, rp, CASE WHEN $3 <> 0 THEN $3"
    "   ELSE extract(epoch FROM now())::bigint END, rr);"
    "  also := encode(rp, 'hex');"
    " END IF;"
    " code := 0; END $f$;"
    // A held certificate may be revoked for good (RFC 5280 §5.3.1), not held twice.
    "CREATE FUNCTION certmint_revoke(text, bytea, bigint, bigint, OUT code integer,"
    " OUT also text) LANGUAGE plpgsql AS $f$ DECLARE st text; rp bytea; sr bytea := $2;"
    " tm bigint := $3; rsn bigint := $4; BEGIN"
    " SELECT status, replaces INTO st, rp" STORE_PG_CERT_LOCK ";"
    " IF NOT FOUND THEN code := 1; RETURN; END IF;"
    " also := encode(rp, 'hex');"
    " IF st = 'revoked' OR (st = 'hold' AND $4 = 6) THEN code := 2; RETURN; END "
    "IF;" STORE_PG_REVOKE_ROW " code := 0; END $f$;"
    "CREATE FUNCTION certmint_release(text, bytea, OUT code integer, OUT also text)"
    " LANGUAGE plpgsql AS $f$ DECLARE st text; rp bytea; BEGIN"
    " SELECT status, replaces INTO st, rp" STORE_PG_CERT_LOCK ";"
    " IF NOT FOUND THEN code := 1; RETURN; END IF;"
    " also := encode(rp, 'hex');"
    " IF st <> 'hold' THEN code := 4; RETURN; END IF;"
    " UPDATE cert SET status = 'valid', revoked_at = NULL, reason = NULL"
    "  WHERE ca = $1 AND serial = $2;"
    " " STORE_PG_CRL_BUMP ";"
    " code := 0; END $f$;";

static const char k_store_pg_reservations_v3[] =
    // A kur's certificate: recorded, then (valid at once under implicitConfirm) the update is
    // complete; else it is pending until certConf.
    "CREATE FUNCTION certmint_insert_update(text, bytea, bytea, text, bigint, bigint, bytea,"
    " text, bytea, bigint, bytea, bytea, bigint, bigint, bytea, bigint, OUT code integer,"
    " OUT also text) LANGUAGE plpgsql AS $f$ BEGIN"
    " INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after,"
    "  spki_sha256, status, transaction_id, requester_kind, requester, cert_der, issued_at,"
    "  confirm_deadline, replaces, revoke_replaced) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
    "  $10, $11, $12, $13, $14, $15, $16 <> 0) ON CONFLICT (ca, serial) DO NOTHING;"
    " IF NOT FOUND THEN code := 8; RETURN; END IF;"
    " also := encode($15, 'hex');"
    " IF $8 = 'valid' THEN PERFORM certmint_supersede($1, $15, $13, $16 <> 0); END IF;"
    " code := 0; END $f$;"
    "CREATE FUNCTION certmint_txn_update(text, bytea, bigint, bytea, bytea, bigint, bytea,"
    " bigint, bigint, bytea, bytea) RETURNS integer LANGUAGE plpgsql AS $f$ BEGIN"
    " IF $5 IS NOT NULL AND NOT EXISTS (" STORE_PG_CERT_EXISTS ") THEN RETURN 1; END IF;"
    " " STORE_PG_TXN_UPDATE ";"
    " IF NOT FOUND THEN RETURN 6; END IF;"
    " RETURN 0; END $f$;"
    // The reservation (store.h: store_reservation), atomic across nodes: the transaction row
    // first (a duplicate transactionID is the common refusal; a reserved serial is unique), then
    // the rules, each refusal deleting that row again. A kur locks the certificate it replaces,
    // and a key's check runs under an advisory lock on (CA, key) held to the commit, so two
    // nodes cannot both pass a rule the other's reservation breaks.
    "CREATE FUNCTION certmint_reserve(text, bytea, bigint, bigint, bytea, bigint, bytea, bytea,"
    " bytea, bigint, bigint, OUT code integer, OUT also text) LANGUAGE plpgsql AS $f$"
    " DECLARE st text; sup bigint; BEGIN"
    " INSERT INTO txn (ca, transaction_id, state, protection, credential, expires_at,"
    "  reserved_serial, spki_sha256, replaces) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    "  ON CONFLICT DO NOTHING;"
    " IF NOT FOUND THEN"
    "  code := CASE WHEN EXISTS (SELECT 1 FROM txn WHERE ca = $1 AND transaction_id = $2)"
    "   THEN 7 ELSE 8 END; RETURN;"
    " END IF;"
    " code := 0;"
    " IF EXISTS (SELECT 1 FROM cert WHERE ca = $1 AND serial = $7) THEN code := 8;"
    " ELSIF $9 IS NOT NULL THEN"
    "  SELECT status, superseded_at INTO st, sup FROM cert WHERE ca = $1 AND serial = $9"
    "   FOR UPDATE;"
    "  IF NOT FOUND THEN code := 1;"
    "  ELSIF st IN ('revoked', 'hold') THEN code := 2;"
    "  ELSIF st <> 'valid' OR sup IS NOT NULL THEN code := 11;"
    "  ELSIF " STORE_PG_UPDATE_BUSY " THEN code := 11;"
    "  ELSE also := encode($9, 'hex'); END IF;"
    " END IF;"
    " IF code = 0 AND $10 <> 0 THEN"
    "  PERFORM pg_advisory_xact_lock(hashtext($1), hashtext(encode($8, 'hex')));"
    "  IF " STORE_PG_KEY_USED " THEN code := 9; END IF;"
    " END IF;"
    " IF code = 0 AND $11 > 0 THEN"
    "  INSERT INTO credential_use (ca, kind, credential, used) VALUES ($1, $4, $5, 1)"
    "   ON CONFLICT (ca, kind, credential) DO UPDATE SET used = credential_use.used + 1"
    "   WHERE credential_use.used < $11;"
    "  IF NOT FOUND THEN code := 10; END IF;"
    " END IF;"
    " IF code <> 0 THEN also := NULL;"
    "  DELETE FROM txn WHERE ca = $1 AND transaction_id = $2; END IF;"
    " END $f$;"
    // A reservation given back: its row (only while it has no certificate) and its count.
    "CREATE FUNCTION certmint_unreserve(text, bytea, bigint, bytea, bigint, OUT code integer,"
    " OUT also text) LANGUAGE plpgsql AS $f$ DECLARE rp bytea; BEGIN"
    " DELETE FROM txn WHERE ca = $1 AND transaction_id = $2 AND serial IS NULL"
    "  RETURNING replaces INTO rp;"
    " IF NOT FOUND THEN code := 6; RETURN; END IF;"
    " also := encode(rp, 'hex');"
    " IF $5 > 0 THEN UPDATE credential_use SET used = used - 1"
    "  WHERE ca = $1 AND kind = $3 AND credential = $4 AND used > 0; END IF;"
    " code := 0; END $f$;"
    // Expiry; |many| when an expiring reservation of a key update ends that update's pending
    // state (a crash between reservation and record): the local cache is then cleared.
    "CREATE FUNCTION certmint_txn_expire(bigint, OUT n bigint, OUT many boolean)"
    " LANGUAGE plpgsql AS $f$ BEGIN"
    " many := EXISTS (SELECT 1 FROM txn WHERE expires_at <= $1 AND serial IS NULL"
    "  AND replaces IS NOT NULL);"
    " DELETE FROM txn WHERE expires_at <= $1;"
    " GET DIAGNOSTICS n = ROW_COUNT; END $f$;";

// Version 4 (issue 16), as SQLite's (store_sqlite.c): the pending table of delayed delivery,
// one row per request that waits (store.h: store_pending), and the functions of its ops. Each
// function is one statement of the writer's pipeline and returns a STORE_PG_FN_* code; those
// that may refuse after writing run in a block with an exception handler (a subtransaction),
// which certmint's own SQLSTATE 'CMP00' leaves to undo everything the op did (the reservation
// included), as SQLite's savepoint does.
static const char k_store_pg_schema_v4[] =
    "CREATE TABLE pending ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " ca text NOT NULL,"
    " transaction_id bytea NOT NULL,"
    " body_type bigint NOT NULL,"
    " cert_req_id bigint NOT NULL,"
    " why integer NOT NULL CHECK (why IN (1, 2)),"
    " state integer NOT NULL CHECK (state BETWEEN 0 AND 6),"
    " profile text,"
    " subject text NOT NULL,"
    " key_type text NOT NULL,"
    " requester text NOT NULL,"
    " created_at bigint NOT NULL,"
    " expires_at bigint NOT NULL,"
    " claimed_at bigint,"
    " decided_at bigint,"
    " tbs bytea NOT NULL,"
    " serial bytea NOT NULL,"
    " flags bigint NOT NULL DEFAULT 0,"
    " fail_info integer CHECK (fail_info IS NULL OR fail_info BETWEEN 0 AND 31),"
    " status_text text,"
    " replaces bytea,"
    " counted boolean NOT NULL DEFAULT false,"
    " UNIQUE (ca, transaction_id),"
    " CHECK (state <> 3 OR claimed_at IS NOT NULL),"
    " CHECK (state <> 5 OR fail_info IS NOT NULL));"
    "CREATE INDEX pending_by_state ON pending (state, id);"
    "CREATE INDEX pending_expiry ON pending (expires_at);";

// The statements the functions below decide with (also listed for the EXPLAIN test).
#define STORE_PG_PEND_EXISTS "SELECT 1 FROM pending WHERE id = $1"
#define STORE_PG_PEND_RSV                                                 \
    "SELECT protection, credential, replaces FROM txn WHERE ca = $1 AND " \
    "transaction_id = $2 AND serial IS NULL AND reserved_serial IS NOT NULL"
#define STORE_PG_PEND_BY_TID \
    "SELECT state, serial FROM pending WHERE ca = $1 AND transaction_id = $2"
#define STORE_PG_PEND_EXPIRED                                                                    \
    "SELECT id, state, ca, transaction_id, serial, counted FROM pending WHERE expires_at <= $1 " \
    "AND state < 5 ORDER BY expires_at LIMIT 1024"

static const char k_store_pg_functions_v4[] =
    // What a waiting request reserved, given back when it is rejected (store.h): its serial,
    // key and the certificate it would replace are free again (only while it has no
    // certificate), and the credential's use when the reservation counted one; its txn row
    // stays (its credential authenticates the pollReq that collects the rejection). Returns the
    // replaced certificate's serial (hex) when it named one: that update is no longer pending.
    "CREATE FUNCTION certmint_pending_release(text, bytea, boolean) RETURNS text"
    " LANGUAGE plpgsql AS $f$ DECLARE pr integer; cr bytea; rp bytea; BEGIN"
    " " STORE_PG_PEND_RSV " FOR UPDATE INTO pr, cr, rp;"
    " IF NOT FOUND THEN RETURN NULL; END IF;"
    " UPDATE txn SET reserved_serial = NULL, spki_sha256 = NULL, replaces = NULL"
    "  WHERE ca = $1 AND transaction_id = $2 AND serial IS NULL;"
    " IF $3 THEN UPDATE credential_use SET used = used - 1"
    "  WHERE ca = $1 AND kind = pr AND credential = cr AND used > 0; END IF;"
    " RETURN encode(rp, 'hex'); END $f$;"
    // PENDING_ADD: the reservation ($1..$11 as certmint_reserve's), the certConf fields of its
    // row ($12..$14), the pending row ($15..$28; its serial is the reservation's).
    "CREATE FUNCTION certmint_pending_add(text, bytea, bigint, bigint, bytea, bigint, bytea,"
    " bytea, bytea, bigint, bigint, bigint, bytea, bytea, bigint, bigint, bigint, bigint, text,"
    " text, text, text, bigint, bigint, bytea, bigint, text, bytea, OUT code integer,"
    " OUT also text, OUT pid bigint) LANGUAGE plpgsql AS $f$ BEGIN"
    " SELECT r.code, r.also INTO code, also"
    "  FROM certmint_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) r;"
    " IF code <> 0 THEN RETURN; END IF;"
    " UPDATE txn SET flags = $12, request_nonce = $13, signer_cert = $14"
    "  WHERE ca = $1 AND transaction_id = $2;"
    // A row of this transaction exists (its reservation was given back and its txn row expired
    // meanwhile, so the reservation did not refuse): the transactionID is in use all the same.
    " INSERT INTO pending (ca, transaction_id, body_type, cert_req_id, why, state, profile,"
    "  subject, key_type, requester, created_at, expires_at, tbs, serial, flags, counted,"
    "  status_text, replaces) VALUES ($1, $2, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,"
    "  $25, $7, $26, $11 > 0, $27, $28) ON CONFLICT (ca, transaction_id) DO NOTHING"
    "  RETURNING pending.id INTO pid;"
    " IF NOT FOUND THEN code := 7; RAISE SQLSTATE 'CMP00'; END IF;"
    " EXCEPTION WHEN SQLSTATE 'CMP00' THEN also := NULL; pid := NULL; END $f$;"
    // PENDING_CLAIM: QUEUED or APPROVED, or SIGNING since before $3 -> SIGNING at $2.
    "CREATE FUNCTION certmint_pending_claim(bigint, bigint, bigint) RETURNS integer"
    " LANGUAGE plpgsql AS $f$ BEGIN"
    " UPDATE pending SET state = 3, claimed_at = $2 WHERE id = $1"
    "  AND (state IN (0, 2) OR (state = 3 AND claimed_at < $3));"
    " IF FOUND THEN RETURN 0; END IF;"
    " IF EXISTS (" STORE_PG_PEND_EXISTS ") THEN RETURN 12; END IF;"
    " RETURN 13; END $f$;"
    // PENDING_DECIDE: $2 <> 0 approves (APPROVAL -> APPROVED at $3); else a waiting row is
    // rejected ($4 failInfo bit, $5 reason, kept $6 s) and what it reserved given back. |many|:
    // a key update's pending state ended (the local status cache is cleared).
    "CREATE FUNCTION certmint_pending_decide(bigint, bigint, bigint, bigint, text, bigint,"
    " OUT code integer, OUT many boolean) LANGUAGE plpgsql AS $f$"
    " DECLARE st integer; pc text; pt bytea; pn boolean; BEGIN"
    " many := false;"
    " IF $2 <> 0 THEN"
    "  UPDATE pending SET state = 2, decided_at = $3 WHERE id = $1 AND state = 1;"
    "  IF FOUND THEN code := 0;"
    "  ELSIF EXISTS (" STORE_PG_PEND_EXISTS ") THEN code := 12;"
    "  ELSE code := 13; END IF;"
    "  RETURN;"
    " END IF;"
    " SELECT state, ca, transaction_id, counted INTO st, pc, pt, pn FROM pending WHERE id = $1"
    "  FOR UPDATE;"
    " IF NOT FOUND THEN code := 13; RETURN; END IF;"
    " IF st > 3 THEN code := 12; RETURN; END IF;"
    " UPDATE pending SET state = 5, decided_at = $3, fail_info = $4, status_text = $5,"
    "  expires_at = $3 + $6 WHERE id = $1;"
    " many := certmint_pending_release(pc, pt, pn) IS NOT NULL;"
    " code := 0; END $f$;";

static const char k_store_pg_functions_v4b[] =
    // PENDING_ISSUE: SIGNING -> ISSUED, the certificate ($2..$17 as certmint_insert_update's;
    // a serial recorded already means another drain recorded it: PENDING_STATE), the
    // reservation's row given its serial, state $18 and expiry $19.
    "CREATE FUNCTION certmint_pending_issue(bigint, text, bytea, bytea, text, bigint, bigint,"
    " bytea, text, bytea, bigint, bytea, bytea, bigint, bigint, bytea, bigint, bigint, bigint,"
    " OUT code integer, OUT also text) LANGUAGE plpgsql AS $f$ BEGIN"
    " UPDATE pending SET state = 4 WHERE id = $1 AND state = 3;"
    " IF NOT FOUND THEN"
    "  code := CASE WHEN EXISTS (" STORE_PG_PEND_EXISTS ") THEN 12 ELSE 13 END; RETURN;"
    " END IF;"
    " SELECT r.code, r.also INTO code, also FROM certmint_insert_update($2, $3, $4, $5, $6, $7,"
    "  $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) r;"
    " IF code = 8 THEN code := 12; END IF;"
    " IF code <> 0 THEN RAISE SQLSTATE 'CMP00'; END IF;"
    " UPDATE txn SET state = $18, serial = $3, expires_at = $19 WHERE ca = $2"
    "  AND transaction_id = $10 AND serial IS NULL AND reserved_serial = $3;"
    " IF NOT FOUND THEN code := 6; RAISE SQLSTATE 'CMP00'; END IF;"
    " EXCEPTION WHEN SQLSTATE 'CMP00' THEN also := NULL; END $f$;"
    // PENDING_DELIVER: ISSUED, REJECTED or DELIVERED -> DELIVERED expiring at $3; unless it is
    // a rejection, the txn row gets senderNonce $4 and expiry $3, an unconfirmed certificate
    // the deadline $5 (0: unchanged).
    "CREATE FUNCTION certmint_pending_deliver(text, bytea, bigint, bytea, bigint)"
    " RETURNS integer LANGUAGE plpgsql AS $f$ DECLARE st integer; sn bytea; BEGIN"
    " " STORE_PG_PEND_BY_TID " FOR UPDATE INTO st, sn;"
    " IF NOT FOUND THEN RETURN 13; END IF;"
    " IF st < 4 THEN RETURN 12; END IF;"
    " IF st <> 5 THEN"
    "  UPDATE txn SET sender_nonce = $4, expires_at = $3 WHERE ca = $1 AND transaction_id = $2;"
    "  IF NOT FOUND THEN RETURN 6; END IF;"
    "  IF $5 <> 0 THEN UPDATE cert SET confirm_deadline = $5"
    "   WHERE ca = $1 AND serial = sn AND status = 'unconfirmed'; END IF;"
    " END IF;"
    " UPDATE pending SET state = 6, expires_at = $3 WHERE ca = $1 AND transaction_id = $2;"
    " RETURN 0; END $f$;"
    // PENDING_EXPIRE at $1: final rows past their expiry are deleted; the others (at most 1024
    // per job, the next pass takes the rest) rejected ($2, $3, kept $4 s) with what they
    // reserved given back, an issued one's certificate revoked (cessationOfOperation: never
    // delivered). |n| rows changed; |many| when any was rejected.
    "CREATE FUNCTION certmint_pending_expire(bigint, bigint, text, bigint, OUT n bigint,"
    " OUT many boolean) LANGUAGE plpgsql AS $f$ DECLARE r record; k bigint := 0; cs text; BEGIN"
    " DELETE FROM pending WHERE expires_at <= $1 AND state >= 5;"
    " GET DIAGNOSTICS n = ROW_COUNT;"
    " FOR r IN " STORE_PG_PEND_EXPIRED " FOR UPDATE LOOP"
    "  IF r.state = 4 THEN"
    "   SELECT status INTO cs FROM cert WHERE ca = r.ca AND serial = r.serial FOR UPDATE;"
    "   IF FOUND AND cs IN ('unconfirmed', 'valid') THEN"
    "    UPDATE cert SET status = 'revoked', revoked_at = $1, reason = 5, confirm_deadline = NULL"
    "     WHERE ca = r.ca AND serial = r.serial;"
    "    INSERT INTO crl_state (ca, revision) VALUES (r.ca, 1)"
    "     ON CONFLICT (ca) DO UPDATE SET revision = crl_state.revision + 1;"
    "   END IF;"
    "  END IF;"
    "  UPDATE pending SET state = 5, decided_at = $1, fail_info = $2, status_text = $3,"
    "   expires_at = $1 + $4 WHERE id = r.id;"
    "  PERFORM certmint_pending_release(r.ca, r.transaction_id, r.counted);"
    "  k := k + 1;"
    " END LOOP;"
    " many := k > 0; n := n + k; END $f$;";

// Each migration is up to STORE_PG_MIGRATION_PARTS pieces of SQL, run in order in one
// transaction.
#define STORE_PG_MIGRATION_PARTS 3
static const char *const k_store_pg_migrations[][STORE_PG_MIGRATION_PARTS] = {
    {k_store_pg_schema_v1, k_store_pg_functions_v1, NULL},                       // 0 -> 1
    {k_store_pg_schema_v2, NULL, NULL},                                          // 1 -> 2
    {k_store_pg_schema_v3, k_store_pg_functions_v3, k_store_pg_reservations_v3}, // 2 -> 3
    {k_store_pg_schema_v4, k_store_pg_functions_v4, k_store_pg_functions_v4b},   // 3 -> 4
};

_Static_assert(sizeof(k_store_pg_migrations) / sizeof(k_store_pg_migrations[0]) ==
                   STORE_SCHEMA_VERSION,
               "one migration per schema version");

// ---------------------------------------------------------------------------------------------
// Statements

#define STORE_PG_CERT_COLS                                                                    \
    "id, ca, serial, subject_der, subject_text, not_before, not_after, spki_sha256, status, " \
    "revoked_at, reason, transaction_id, requester_kind, requester, cert_der, issued_at, "    \
    "confirm_deadline, replaces, revoke_replaced::int::int8, superseded_at"
// What decides whether a certificate may authenticate (store_cert_state): an update of it is
// pending while an unconfirmed certificate replaces it or a reservation (no certificate yet)
// names it.
#define STORE_PG_CERT_STATE                                                                   \
    "SELECT c.status, c.not_after, c.reason, c.superseded_at, (EXISTS (SELECT 1 FROM cert n " \
    "WHERE n.ca = c.ca AND n.replaces = c.serial AND n.status = 'unconfirmed') OR EXISTS "    \
    "(SELECT 1 FROM txn t WHERE t.ca = c.ca AND t.replaces = c.serial AND t.serial IS NULL))" \
    "::int::int8 FROM cert c WHERE c.ca = $1 AND c.serial = $2"

// A pending row as store_pg_pending_* read it (store_pg_read.c).
#define STORE_PG_PENDING_COLS                                                                    \
    "id, ca, transaction_id, body_type, cert_req_id, why::int8, state::int8, profile, subject, " \
    "key_type, requester, created_at, expires_at, claimed_at, decided_at, tbs, serial, flags, "  \
    "fail_info::int8, status_text, replaces, counted::int::int8"

const store_pg_sql store_pg_write_sql[PGW_COUNT] = {
    [PGW_CERT_INSERT] =
        {"INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after, "
         "spki_sha256, status, transaction_id, requester_kind, requester, cert_der, issued_at, "
         "confirm_deadline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
         "ON CONFLICT (ca, serial) DO NOTHING RETURNING id",
         "tbbtiibtbibbii"},
    [PGW_CONFIRM] = {"SELECT * FROM certmint_confirm($1, $2, $3)", "tbi"},
    [PGW_REVOKE] = {"SELECT * FROM certmint_revoke($1, $2, $3, $4)", "tbii"},
    [PGW_RELEASE] = {"SELECT * FROM certmint_release($1, $2)", "tb"},
    // transactionID reserved with ON CONFLICT: of two nodes creating the same transaction, the
    // second waits for the first to commit and then finds it in use (no row returned). An
    // unknown serial violates the foreign key: that job fails alone (STORE_E_NOT_FOUND).
    [PGW_TXN_CREATE] = {STORE_PG_TXN_INSERT " RETURNING 1", "tbibbibiibb"},
    [PGW_TXN_UPDATE] = {"SELECT certmint_txn_update($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        "tbibbibiibb"},
    [PGW_TXN_DELETE] = {"DELETE FROM txn WHERE ca = $1 AND transaction_id = $2 RETURNING 1", "tb"},
    [PGW_TXN_EXPIRE] = {"SELECT * FROM certmint_txn_expire($1)", "i"},
    [PGW_SWEEP] = {"SELECT certmint_sweep($1, $2)", "ii"},
    // One statement allocates the number: nodes allocating at once get distinct numbers.
    [PGW_CRL_NEXT] =
        {"INSERT INTO crl_state (ca, numbers_issued) VALUES ($1, 1) "
         "ON CONFLICT (ca) DO UPDATE SET numbers_issued = crl_state.numbers_issued + 1 "
         "RETURNING numbers_issued",
         "t"},
    [PGW_CRL_PUT] = {"INSERT INTO crl_state (ca, crl_der, crl_number, this_update, next_update, "
                     "built_revision, numbers_issued) VALUES ($1, $2, $3, $4, $5, $6, $3) "
                     "ON CONFLICT (ca) DO UPDATE SET crl_der = excluded.crl_der, "
                     "crl_number = excluded.crl_number, this_update = excluded.this_update, "
                     "next_update = excluded.next_update, built_revision = excluded.built_revision "
                     "WHERE excluded.crl_number > crl_state.crl_number RETURNING 1",
                     "tbiiii"},
    [PGW_COPY_CERT] =
        {"INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after, "
         "spki_sha256, status, revoked_at, reason, transaction_id, requester_kind, requester, "
         "cert_der, issued_at, confirm_deadline, replaces, revoke_replaced, superseded_at) "
         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
         "$18 <> 0, $19) ON CONFLICT (ca, serial) DO NOTHING RETURNING id",
         "tbbtiibtiibibbiibii"},
    [PGW_COPY_CRL] = {"INSERT INTO crl_state (ca, numbers_issued, revision, built_revision, "
                      "crl_der, crl_number, this_update, next_update) "
                      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ca) DO UPDATE SET "
                      "numbers_issued = excluded.numbers_issued, revision = excluded.revision, "
                      "built_revision = excluded.built_revision, crl_der = excluded.crl_der, "
                      "crl_number = excluded.crl_number, this_update = excluded.this_update, "
                      "next_update = excluded.next_update",
                      "tiiibiii"},
    [PGW_COPY_CLEAR] = {"TRUNCATE pending, txn, cert, crl_state, credential_use RESTART IDENTITY",
                        ""},
    [PGW_COPY_USE] = {"INSERT INTO credential_use (ca, kind, credential, used) "
                      "VALUES ($1, $2, $3, $4) ON CONFLICT (ca, kind, credential) "
                      "DO UPDATE SET used = excluded.used",
                      "tibi"},
    // A transaction with its reservation; in use (no row returned) when its transactionID or
    // reserved serial is.
    [PGW_COPY_TXN] = {"INSERT INTO txn (ca, transaction_id, state, sender_nonce, serial, "
                      "protection, credential, expires_at, flags, request_nonce, signer_cert, "
                      "reserved_serial, spki_sha256, replaces) VALUES ($1, $2, $3, $4, $5, $6, "
                      "$7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING RETURNING 1",
                      "tbibbibiibbbbb"},
    // A pending row with its id; the identity then continues after the highest id copied.
    [PGW_COPY_PENDING] = {"WITH ins AS (INSERT INTO pending (id, ca, transaction_id, body_type, "
                          "cert_req_id, why, state, profile, subject, key_type, requester, "
                          "created_at, expires_at, claimed_at, decided_at, tbs, serial, flags, "
                          "fail_info, status_text, replaces, counted) VALUES ($1, $2, $3, $4, "
                          "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
                          "$20, $21, $22 <> 0) ON CONFLICT DO NOTHING RETURNING id) "
                          "SELECT setval(pg_get_serial_sequence('pending', 'id'), "
                          "greatest(ins.id, (SELECT max(id) FROM pending))) FROM ins",
                          "itbiiii"
                          "tttt"
                          "iiiibbiitbi"},
    [PGW_CERT_INSERT_UPDATE] = {"SELECT * FROM certmint_insert_update($1, $2, $3, $4, $5, $6, $7, "
                                "$8, $9, $10, $11, $12, $13, $14, $15, $16)",
                                "tbbtiibtbibbiibi"},
    [PGW_RESERVE] = {"SELECT * FROM certmint_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                     "$11)",
                     "tbiibibbbii"},
    [PGW_UNRESERVE] = {"SELECT * FROM certmint_unreserve($1, $2, $3, $4, $5)", "tbibi"},
    // The jobs of many enrolments in two statements (arrays, one element per job, in batch
    // order); what each returns names the rows inserted, the others conflicted.
    [PGW_CERT_ROWS] =
        {"INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after, "
         "spki_sha256, status, transaction_id, requester_kind, requester, cert_der, issued_at, "
         "confirm_deadline) SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
         "$12, $13, $14) ON CONFLICT (ca, serial) DO NOTHING RETURNING ca, serial",
         "TBBTIIBTBIBBII"},
    [PGW_TXN_ROWS] = {"INSERT INTO txn (ca, transaction_id, state, sender_nonce, serial, "
                      "protection, credential, expires_at, flags, request_nonce, signer_cert) "
                      "SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                      "ON CONFLICT (ca, transaction_id) DO NOTHING RETURNING ca, transaction_id",
                      "TBIBBIBIIBB"},
    // Updates of many transactions (an enrolment records its certificate's serial in the
    // reservation's row); a row not returned names no transaction.
    [PGW_TXN_UPD_ROWS] =
        {"UPDATE txn AS t SET state = u.state, sender_nonce = u.sender_nonce, "
         "serial = u.serial, protection = u.protection, credential = u.credential, "
         "expires_at = u.expires_at, flags = u.flags, "
         "request_nonce = u.request_nonce, signer_cert = u.signer_cert "
         "FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) AS u (ca, "
         "transaction_id, state, sender_nonce, serial, protection, credential, "
         "expires_at, flags, request_nonce, signer_cert) WHERE t.ca = u.ca AND "
         "t.transaction_id = u.transaction_id RETURNING t.ca, t.transaction_id",
         "TBIBBIBIIBB"}, // The pending table's ops (schema 4), one function each.
    [PGW_PEND_ADD] = {"SELECT * FROM certmint_pending_add($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                      "$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, "
                      "$24, $25, $26, $27, $28)",
                      "tbiibibbbii"
                      "ibb"
                      "iiiittttiibitb"},
    [PGW_PEND_CLAIM] = {"SELECT certmint_pending_claim($1, $2, $3)", "iii"},
    [PGW_PEND_DECIDE] = {"SELECT * FROM certmint_pending_decide($1, $2, $3, $4, $5, $6)", "iiiiti"},
    [PGW_PEND_ISSUE] = {"SELECT * FROM certmint_pending_issue($1, $2, $3, $4, $5, $6, $7, $8, "
                        "$9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                        "i"
                        "tbbtiibtbibbiibi"
                        "ii"},
    [PGW_PEND_DELIVER] = {"SELECT certmint_pending_deliver($1, $2, $3, $4, $5)", "tbibi"},
    [PGW_PEND_EXPIRE] = {"SELECT * FROM certmint_pending_expire($1, $2, $3, $4)", "iiti"},
};

const store_pg_sql store_pg_read_sql[PGR_COUNT] = {
    [PGR_CERT_GET] = {"SELECT " STORE_PG_CERT_COLS STORE_PG_CERT_ROW, "tb"},
    [PGR_CERT_BY_TXN] = {"SELECT " STORE_PG_CERT_COLS " FROM cert WHERE ca = $1 AND serial = "
                         "(SELECT serial FROM txn WHERE ca = $1 AND transaction_id = $2)",
                         "tb"},
    [PGR_TXN_GET] = {"SELECT state, sender_nonce, serial, protection, credential, expires_at, "
                     "flags, request_nonce, signer_cert "
                     "FROM txn WHERE ca = $1 AND transaction_id = $2",
                     "tb"},
    // Listings page internally ($4 the last id seen, $5 the page size): a result is held in
    // memory whole.
    [PGR_CERT_LIST] = {"SELECT " STORE_PG_CERT_COLS " FROM cert "
                       "WHERE ($1::text IS NULL OR ca = $1) AND ($2::text IS NULL OR status = $2) "
                       "AND ($3::text IS NULL OR strpos(subject_text, $3) > 0) AND id > $4 "
                       "ORDER BY id LIMIT $5",
                       "tttii"},
    [PGR_CERT_COUNT] = {"SELECT count(*) FROM cert "
                        "WHERE ($1::text IS NULL OR ca = $1) AND ($2::text IS NULL OR status = $2) "
                        "AND ($3::text IS NULL OR strpos(subject_text, $3) > 0)",
                        "ttt"},
    [PGR_REVOKED] = {"SELECT id, serial, revoked_at, reason FROM cert "
                     "WHERE ca = $1 AND status IN ('revoked', 'hold') AND not_after >= $2 "
                     "AND id > $3 ORDER BY id LIMIT $4",
                     "tiii"},
    [PGR_CRL_GET] = {"SELECT crl_number, numbers_issued, revision, built_revision, crl_der, "
                     "this_update, next_update FROM crl_state WHERE ca = $1",
                     "t"},
    [PGR_TXN_LIST] = {"SELECT ca, transaction_id, state, sender_nonce, serial, protection, "
                      "credential, expires_at, flags, request_nonce, signer_cert, reserved_serial, "
                      "spki_sha256, replaces FROM txn "
                      "WHERE (ca, transaction_id) > ($1, $2) ORDER BY ca, transaction_id "
                      "LIMIT $3",
                      "tbi"},
    [PGR_CERT_STATE] = {STORE_PG_CERT_STATE, "tb"},
    [PGR_USE_LIST] = {"SELECT ca, kind, credential, used FROM credential_use "
                      "ORDER BY ca, kind, credential",
                      ""},
    [PGR_CRL_LIST] = {"SELECT ca, crl_number, numbers_issued, revision, built_revision, crl_der, "
                      "this_update, next_update FROM crl_state ORDER BY ca",
                      ""},
    [PGR_PEND_GET] = {"SELECT " STORE_PG_PENDING_COLS " FROM pending WHERE ca = $1 AND "
                      "transaction_id = $2",
                      "tb"},
    [PGR_PEND_GET_ID] = {"SELECT " STORE_PG_PENDING_COLS " FROM pending WHERE id = $1", "i"},
    // The states selected as $1..$7 (-1 for those not), paged ($8 the last id seen, $10 the
    // page size), of CA $9 (NULL: every CA).
    [PGR_PEND_LIST] = {"SELECT " STORE_PG_PENDING_COLS " FROM pending WHERE state IN ($1, $2, "
                       "$3, $4, $5, $6, $7) AND id > $8 AND ($9::text IS NULL OR ca = $9) "
                       "ORDER BY id LIMIT $10",
                       "iiiiiiiiti"},
};

const char *const store_pg_status_text[4] = {"unconfirmed", "valid", "revoked", "hold"};

// The statements inside the functions, with the parameters as the functions have them.
static const store_pg_sql k_store_pg_inner_sql[] = {
    {"SELECT status, confirm_deadline" STORE_PG_CERT_LOCK, "tb"},
    {"UPDATE cert SET status = 'valid', confirm_deadline = NULL WHERE ca = $1 AND serial = $2",
     "tb"},
    {STORE_PG_CRL_BUMP, "t"},
    {"SELECT 1 FROM cert WHERE ca = $1 AND serial = $2", "tb"},
    {STORE_PG_TXN_UPDATE, "tbibbibiibb"},
    {STORE_PG_SWEEP_BUMP, "i"},
    {STORE_PG_SWEEP, "ii"},
    // The reservation's rules (certmint_reserve's parameters).
    {"SELECT " STORE_PG_KEY_USED, "tbiibibb"},
    {"SELECT " STORE_PG_UPDATE_BUSY, "tbiibibbb"},
    {"SELECT 1 FROM txn WHERE ca = $1 AND reserved_serial = $2",
     "tb"}, // The pending table's functions.
    {STORE_PG_PEND_EXISTS, "i"},
    {STORE_PG_PEND_RSV, "tb"},
    {STORE_PG_PEND_BY_TID, "tb"},
    {STORE_PG_PEND_EXPIRED, "i"},
    {"UPDATE pending SET state = 3, claimed_at = $2 WHERE id = $1 AND (state IN (0, 2) OR "
     "(state = 3 AND claimed_at < $3))",
     "iii"},
    {"UPDATE txn SET state = $3, serial = $4, expires_at = $5 WHERE ca = $1 AND "
     "transaction_id = $2 AND serial IS NULL AND reserved_serial = $4",
     "tbibi"},
    {"DELETE FROM pending WHERE expires_at <= $1 AND state >= 5", "i"},
};

const store_pg_sql *store_pg_request_path_sql(size_t i)
{
    static const int k_write[] = {PGW_CERT_INSERT, PGW_TXN_CREATE, PGW_TXN_DELETE,
                                  PGW_TXN_EXPIRE,  PGW_CRL_NEXT,   PGW_CRL_PUT};
    static const int k_read[] = {PGR_CERT_GET, PGR_CERT_BY_TXN, PGR_TXN_GET,
                                 PGR_REVOKED,  PGR_CRL_GET,     PGR_CERT_STATE,
                                 PGR_PEND_GET, PGR_PEND_GET_ID, PGR_PEND_LIST};
    const size_t nw = sizeof(k_write) / sizeof(k_write[0]);
    const size_t nr = sizeof(k_read) / sizeof(k_read[0]);
    const size_t ni = sizeof(k_store_pg_inner_sql) / sizeof(k_store_pg_inner_sql[0]);
    if (i < nw) {
        return &store_pg_write_sql[k_write[i]];
    }
    if (i - nw < nr) {
        return &store_pg_read_sql[k_read[i - nw]];
    }
    return i - nw - nr < ni ? &k_store_pg_inner_sql[i - nw - nr] : NULL;
}

const char *store_pg_migration_sql(size_t i, size_t part)
{
    return i < sizeof(k_store_pg_migrations) / sizeof(k_store_pg_migrations[0]) &&
                   part < STORE_PG_MIGRATION_PARTS
               ? k_store_pg_migrations[i][part]
               : NULL;
}

// ---------------------------------------------------------------------------------------------
// Migration

// store_pg_scalar runs |sql| and copies the first column of its only row into |out| ("" for
// NULL or no row).
static cm_result store_pg_scalar(store_pg_conn *c, const char *sql, char *out, size_t cap)
{
    PGresult *res = NULL;
    CM_TRY(store_pg_exec(c, sql, PGRES_TUPLES_OK, &res));
    out[0] = '\0';
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        (void)snprintf(out, cap, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return cm_result_make(CM_OK);
}

// store_pg_read_version finds out what the current schema holds: |*out_version| 0 for an
// empty schema, NOT_A_STORE for one with other tables or another application's meta table.
static cm_result store_pg_read_version(store_pg_conn *c, int64_t *out_version)
{
    char v[64];
    CM_TRY(store_pg_scalar(c, "SELECT current_schema()", v, sizeof(v)));
    if (v[0] == '\0') {
        cm_log(CM_LOG_ERROR, "store: postgresql: no schema to create certmint's tables in (the "
                             "search_path names none that exists)");
        CM_BAIL(STORE_E_DB);
    }
    CM_TRY(store_pg_scalar(c,
                           "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                           "AND tablename = 'certmint_meta'",
                           v, sizeof(v)));
    if (strcmp(v, "0") == 0) {
        CM_TRY(store_pg_scalar(
            c, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()", v, sizeof(v)));
        if (strcmp(v, "0") != 0) {
            cm_log(CM_LOG_ERROR,
                   "store: postgresql: the schema holds %s tables but no "
                   "certmint_meta: not a certmint store",
                   v);
            CM_BAIL(STORE_E_NOT_A_STORE);
        }
        *out_version = 0;
        return cm_result_make(CM_OK);
    }
    CM_TRY(store_pg_scalar(c, "SELECT value FROM certmint_meta WHERE name = 'application'", v,
                           sizeof(v)));
    if (strcmp(v, "certmint") != 0) {
        cm_log(CM_LOG_ERROR,
               "store: postgresql: certmint_meta names application '%s': not a "
               "certmint store",
               v);
        CM_BAIL(STORE_E_NOT_A_STORE);
    }
    CM_TRY(store_pg_scalar(c, "SELECT value FROM certmint_meta WHERE name = 'schema_version'", v,
                           sizeof(v)));
    char *end = NULL;
    const long long n = strtoll(v, &end, 10);
    if (v[0] == '\0' || end == NULL || *end != '\0' || n < 0) {
        cm_log(CM_LOG_ERROR, "store: postgresql: certmint_meta has no valid schema_version");
        CM_BAIL(STORE_E_NOT_A_STORE);
    }
    *out_version = n;
    return cm_result_make(CM_OK);
}

// store_pg_migrate applies the missing migrations in one transaction, under an advisory lock
// so that nodes starting together do not race; a schema written by a newer certmint is
// refused.
static cm_result store_pg_migrate(store_pg_conn *c)
{
    char sql[160];
    (void)snprintf(sql, sizeof(sql),
                   "BEGIN; SELECT pg_advisory_xact_lock(%d, hashtext(current_schema()))",
                   STORE_PG_LOCK_MIGRATE);
    CM_TRY(store_pg_exec(c, sql, PGRES_TUPLES_OK, NULL));
    int64_t version = 0;
    cm_result r = store_pg_read_version(c, &version);
    if (cm_ok(r) && version > STORE_SCHEMA_VERSION) {
        cm_log(CM_LOG_ERROR,
               "store: postgresql schema has version %lld, this certmint knows up to %d: "
               "refusing to open a store written by a newer version",
               (long long)version, STORE_SCHEMA_VERSION);
        r = cm_bail_note(STORE_E_SCHEMA_TOO_NEW, __FILE__, __LINE__);
    }
    for (int64_t v = version; cm_ok(r) && v < STORE_SCHEMA_VERSION; v++) {
        cm_log(CM_LOG_INFO, "store: postgresql: migrating schema %lld -> %lld", (long long)v,
               (long long)v + 1);
        for (size_t part = 0; cm_ok(r) && store_pg_migration_sql((size_t)v, part) != NULL; part++) {
            r = store_pg_exec(c, store_pg_migration_sql((size_t)v, part), PGRES_COMMAND_OK, NULL);
        }
    }
    if (cm_ok(r) && version < STORE_SCHEMA_VERSION) {
        (void)snprintf(sql, sizeof(sql),
                       "INSERT INTO certmint_meta VALUES ('schema_version', '%d') "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                       STORE_SCHEMA_VERSION);
        r = store_pg_exec(c, sql, PGRES_COMMAND_OK, NULL);
    }
    if (cm_ok(r)) {
        r = store_pg_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL);
    }
    if (!cm_ok(r) && c->pg != NULL) {
        PQclear(PQexec(c->pg, "ROLLBACK"));
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Open and close

static void store_pg_close(store_backend *b)
{
    if (b == NULL) {
        return;
    }
    store_pg_listen_stop(b);
    store_pg_conn_close(&b->w);
    store_pg_conn_close(&b->leader); // ends the session: the leader lock goes with it
    (void)pthread_mutex_destroy(&b->leader_mu);
    free(b->slots);
    free(b->stmts);
    free(b->rows);
    free(b->conninfo);
    free(b);
}

// store_pg_conninfo_ok refuses what libpq cannot parse and a password in the conninfo.
static cm_result store_pg_conninfo_ok(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (opts == NULL) {
        cm_log(CM_LOG_ERROR, "store: postgresql: cannot parse the connection string: %.*s",
               err != NULL ? (int)strcspn(err, "\n") : 0, err != NULL ? err : "");
        PQfreemem(err);
        CM_BAIL(STORE_E_URL);
    }
    bool password = false;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        password |= strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0';
    }
    PQconninfoFree(opts);
    if (password) {
        cm_log(CM_LOG_ERROR, "store: postgresql: the store URL holds a password: put it in a "
                             "passfile instead (the passfile keyword or PGPASSFILE)");
        CM_BAIL(STORE_E_URL);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_pg_open(store_backend **out_b, const char *location,
                               const store_options *opts)
{
    *out_b = NULL;
    CM_TRY(store_pg_conninfo_ok(location));
    if (opts->sync == STORE_SYNC_NORMAL) {
        cm_log(CM_LOG_INFO, "store: postgresql: store_sync = normal is ignored; the server's "
                            "settings decide durability (certmint asks for synchronous_commit)");
    }
    store_backend *b = calloc(1, sizeof(*b));
    CM_ENSURE(b != NULL, CM_E_NOMEM);
    b->conninfo = strdup(location);
    if (b->conninfo == NULL || pthread_mutex_init(&b->leader_mu, NULL) != 0) {
        free(b->conninfo);
        free(b);
        CM_BAIL(CM_E_NOMEM);
    }
    b->lock_timeout_ms = opts->busy_timeout_ms;
    b->w = (store_pg_conn){.b = b, .role = STORE_PG_WRITER};
    b->leader = (store_pg_conn){.b = b, .role = STORE_PG_LEADER};
    b->listen_wake = -1;
    cm_result r = store_pg_conn_open(&b->w, false);
    if (cm_ok(r)) {
        r = store_pg_migrate(&b->w);
    }
    if (cm_ok(r)) {
        r = store_pg_conn_open(&b->w, true); // a fresh session prepares on the migrated schema
    }
    if (cm_ok(r)) {
        r = store_pg_scalar(&b->w, "SELECT current_schema()", b->schema, sizeof(b->schema));
    }
    if (!cm_ok(r)) {
        store_pg_close(b);
        return r;
    }
    b->last_ok_ns = cm_time_mono_ns();
    atomic_store(&b->healthy, true);
    *out_b = b;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Reader handles, health, statistics, the leader lock

static void store_pg_reader_close(store_backend_reader *r)
{
    if (r == NULL) {
        return;
    }
    store_pg_conn_close(&r->c);
    free(r);
}

static cm_result store_pg_reader_open(store_backend *b, store_backend_reader **out_r)
{
    *out_r = NULL;
    store_backend_reader *r = calloc(1, sizeof(*r));
    CM_ENSURE(r != NULL, CM_E_NOMEM);
    r->c = (store_pg_conn){.b = b, .role = STORE_PG_READER};
    cm_result res = store_pg_conn_open(&r->c, true);
    if (!cm_ok(res)) {
        free(r);
        return res;
    }
    *out_r = r;
    return cm_result_make(CM_OK);
}

static bool store_pg_healthy(store_backend *b)
{
    return atomic_load(&b->healthy);
}

static void store_pg_stats(store_backend *b, store_stats *out)
{
    out->reconnects = (uint64_t)atomic_load(&b->reconnects);
    out->round_trips = (uint64_t)atomic_load(&b->round_trips);
}

static cm_result store_pg_leader_try(store_backend *b, bool *out_is_leader)
{
    *out_is_leader = false;
    (void)pthread_mutex_lock(&b->leader_mu);
    store_pg_conn *c = &b->leader;
    const bool was = b->leader_held;
    cm_result r = store_pg_conn_ready(c);
    if (!cm_ok(r)) {
        b->leader_held = false; // a lost session took the lock with it
    } else if (b->leader_held) {
        // The lock lives as long as the session: one round trip proves both.
        r = store_pg_exec(c, "SELECT 1", PGRES_TUPLES_OK, NULL);
        b->leader_held = cm_ok(r);
    } else {
        char sql[96];
        (void)snprintf(sql, sizeof(sql),
                       "SELECT pg_try_advisory_lock(%d, hashtext(current_schema()))",
                       STORE_PG_LOCK_LEADER);
        PGresult *res = NULL;
        r = store_pg_exec(c, sql, PGRES_TUPLES_OK, &res);
        b->leader_held = cm_ok(r) && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
    }
    if (b->leader_held != was) {
        cm_log(CM_LOG_INFO, "store: postgresql: this node %s the leader lock",
               b->leader_held ? "now holds" : "no longer holds");
    }
    *out_is_leader = b->leader_held;
    (void)pthread_mutex_unlock(&b->leader_mu);
    return r;
}

const store_backend_ops store_pg_ops = {
    .scheme = "postgresql",
    .open = store_pg_open,
    .close = store_pg_close,
    .exec_batch = store_pg_exec_batch,
    .idle = store_pg_idle,
    .healthy = store_pg_healthy,
    .leader_try = store_pg_leader_try,
    .stats = store_pg_stats,
    .reader_open = store_pg_reader_open,
    .reader_close = store_pg_reader_close,
    .cert_get = store_pg_cert_get,
    .cert_get_by_txn = store_pg_cert_get_by_txn,
    .txn_get = store_pg_txn_get,
    .cert_list = store_pg_cert_list,
    .cert_count = store_pg_cert_count,
    .revoked_list = store_pg_revoked_list,
    .crl_get = store_pg_crl_get,
    .check = store_pg_check,
    .txn_list = store_pg_txn_list,
    .crl_list = store_pg_crl_list,
    .use_list = store_pg_use_list,
    .cert_state = store_pg_cert_state,
    .attach_cache = store_pg_attach_cache,
    .pending_get = store_pg_pending_get,
    .pending_get_id = store_pg_pending_get_id,
    .pending_list = store_pg_pending_list,
};
