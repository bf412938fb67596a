// Suites "store" and "store_pg": the same tests on both backends — SQLite on real database
// files, and PostgreSQL on a throwaway cluster that the store_pg suite starts in its init
// (tests/support/test_pg.h) and removes in its cleanup; no mock anywhere. Schema creation,
// versioning and refusal of foreign or newer stores; every write op good and bad with its
// exact code; reads; group commit under concurrent submitters; durability across a crash;
// integrity; store copy. Then each backend's own: SQLite's WAL checkpoints and query plans;
// PostgreSQL's query plans, one round trip per batch, several nodes on one database, the
// leader lock, and a database that goes away and comes back.
#include "tests/engine/store/test_store.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "tests/support/test_pg.h"
#include "tests/support/test_support.h"

// The suite's directory (SQLite: one database file per test in it), and for store_pg the
// cluster (one schema per test, named after the test's "file").
static char g_store_dir[256];
static bool g_pg;
static test_pg g_cluster;

static int test_store_suite_init(void)
{
    g_pg = false;
    return test_tmpdir(g_store_dir, sizeof(g_store_dir), "store") ? 0 : 1;
}

static int test_store_suite_cleanup(void)
{
    return test_rmtree(g_store_dir) ? 0 : 1;
}

static int test_store_pg_suite_init(void)
{
    g_pg = true;
    if (!test_tmpdir(g_store_dir, sizeof(g_store_dir), "store")) {
        return 1;
    }
    return test_pg_start(&g_cluster) ? 0 : 1;
}

static int test_store_pg_suite_cleanup(void)
{
    test_pg_destroy(&g_cluster);
    g_pg = false;
    return test_rmtree(g_store_dir) ? 0 : 1;
}

static const char *test_store_path(char *out, size_t cap, const char *name)
{
    return test_path(out, cap, g_store_dir, name);
}

// test_store_schema turns a test's store name ("group.db") into a schema name ("t_group_db").
static const char *test_store_schema(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "t_%s", name);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
    for (char *c = out; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))) {
            *c = '_';
        }
    }
    return out;
}

static void test_store_pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message; // "schema ... already exists, skipping"
}

// test_store_pg_connect connects to the cluster with search_path |schema| (NULL: the default).
static PGconn *test_store_pg_connect(const char *schema)
{
    char url[600];
    PGconn *pg = PQconnectdb(test_pg_url(&g_cluster, schema, url, sizeof(url)));
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "\n  cannot connect to the test cluster: %s", PQerrorMessage(pg));
    }
    CU_ASSERT_EQUAL_FATAL(PQstatus(pg), CONNECTION_OK);
    (void)PQsetNoticeProcessor(pg, test_store_pg_quiet, NULL);
    return pg;
}

// test_store_pg_sql runs |sql| (one or more statements) and returns the first column of the
// last statement's first row as an integer (-1 when there is none); fails the test on error.
static int64_t test_store_pg_sql(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    const ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "\n  %s: %s", sql, PQresultErrorMessage(res));
    }
    CU_ASSERT(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK);
    int64_t v = -1;
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    return v;
}

// test_store_url names the store |name| of the current backend: a file in the suite's
// directory, or a schema of the cluster (created when missing).
static const char *test_store_url(char *out, size_t cap, const char *name)
{
    if (g_pg) {
        char schema[96];
        char sql[160];
        test_store_schema(schema, sizeof(schema), name);
        (void)snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", schema);
        PGconn *pg = test_store_pg_connect(NULL);
        (void)test_store_pg_sql(pg, sql);
        PQfinish(pg);
        return test_pg_url(&g_cluster, schema, out, cap);
    }
    char path[512];
    int n = snprintf(out, cap, "sqlite:%s", test_store_path(path, sizeof(path), name));
    CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
    return out;
}

// A Name with CN=test, DER; the store keeps it opaque.
static const uint8_t k_subject_der[] = {0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55,
                                        0x04, 0x03, 0x0c, 0x04, 0x74, 0x65, 0x73, 0x74};
static uint8_t g_cert_der[600]; // stands in for a certificate of realistic size

// test_item is one certificate insert with the storage its spans point at.
typedef struct test_item {
    store_job job;
    uint8_t serial[16];
    uint8_t spki[32];
    uint8_t tid[16];
    char subject[48];
    int completions;
} test_item;

// test_store_fill makes |it| an insert of the certificate numbered |n| (serial, key hash and
// transactionID derived from |n| and |salt|).
static void test_store_fill(test_item *it, cm_cq *cq, const char *ca, uint32_t n, uint32_t salt,
                            store_cert_status status, int64_t deadline)
{
    store_job_init(&it->job, STORE_OP_CERT_INSERT, cq);
    it->job.user = it;
    memset(it->serial, 0, sizeof(it->serial));
    it->serial[0] = 0x40; // positive, minimal
    memcpy(it->serial + 8, &n, sizeof(n));
    memcpy(it->serial + 12, &salt, sizeof(salt));
    for (size_t i = 0; i < sizeof(it->spki); i++) {
        it->spki[i] = (uint8_t)(n + i);
    }
    memcpy(it->tid, it->serial, sizeof(it->tid));
    it->tid[0] = 0x7e;
    (void)snprintf(it->subject, sizeof(it->subject), "CN=device-%u,O=line-%u", n, salt);
    store_cert *c = &it->job.u.cert;
    c->ca = ca;
    c->serial = cm_span_make(it->serial, sizeof(it->serial));
    c->subject_der = cm_span_make(k_subject_der, sizeof(k_subject_der));
    c->subject_text = it->subject;
    c->not_before = 1700000000;
    c->not_after = 1700000000 + 365 * 86400;
    c->spki_sha256 = cm_span_make(it->spki, sizeof(it->spki));
    c->status = status;
    c->transaction_id = cm_span_make(it->tid, sizeof(it->tid));
    c->requester_kind = STORE_AUTH_MAC;
    c->requester = CM_SPAN_LIT("factory-line-1");
    c->cert_der = cm_span_make(g_cert_der, sizeof(g_cert_der));
    c->issued_at = 1700000000;
    c->confirm_deadline = deadline;
}

// test_store_open_at opens the store |name| in the suite directory.
static store *test_store_open_at(const char *name, store_sync sync)
{
    char url[600];
    store *s = NULL;
    store_options o = {.sync = sync};
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), name), &o));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    return s;
}

// test_store_close_checked runs the integrity check, then closes.
static void test_store_close_checked(store *s)
{
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    TEST_ASSERT_OK(store_reader_check(r));
    store_reader_close(r);
    store_close(s);
}

static cm_result test_store_ref_op(store *s, store_op op, const char *ca, cm_span serial,
                                   int64_t time, int reason)
{
    store_job job;
    store_job_init(&job, op, NULL);
    job.u.ref.ca = ca;
    job.u.ref.serial = serial;
    job.u.ref.time = time;
    job.u.ref.reason = reason;
    return store_run(s, &job);
}

static uint64_t test_store_count(store_reader *r, const char *ca, store_cert_status status)
{
    store_filter f = {.ca = ca, .status = status};
    uint64_t n = 0;
    TEST_ASSERT_OK(store_cert_count(r, &f, &n));
    return n;
}

// test_store_db_int runs |sql| on the store |name| directly (not through the store) and
// returns the first column of its first row, -1 when there is none.
static int64_t test_store_db_int(const char *name, const char *sql)
{
    if (g_pg) {
        char schema[96];
        PGconn *pg = test_store_pg_connect(test_store_schema(schema, sizeof(schema), name));
        const int64_t v = test_store_pg_sql(pg, sql);
        PQfinish(pg);
        return v;
    }
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    CU_ASSERT_EQUAL_FATAL(
        sqlite3_open_v2(test_store_path(path, sizeof(path), name), &db, SQLITE_OPEN_READONLY, NULL),
        SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    (void)sqlite3_finalize(st);
    (void)sqlite3_close(db);
    return v;
}

static void test_store_db_exec(const char *name, const char *sql)
{
    if (g_pg) {
        (void)test_store_db_int(name, sql);
        return;
    }
    char path[512];
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(test_store_path(path, sizeof(path), name), &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    (void)sqlite3_close(db);
}

// The schema version, as each backend records it.
static const char *test_store_version_sql(void)
{
    return g_pg ? "SELECT value::bigint FROM certmint_meta WHERE name = 'schema_version'"
                : "PRAGMA user_version";
}

static void test_store_set_version(const char *name, int version)
{
    char sql[128];
    if (g_pg) {
        (void)snprintf(sql, sizeof(sql),
                       "UPDATE certmint_meta SET value = '%d' WHERE name = 'schema_version'",
                       version);
    } else {
        (void)snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
    }
    test_store_db_exec(name, sql);
}

// test_store_has_index counts the indexes named |index| of the store |name|.
static int64_t test_store_has_index(const char *name, const char *index)
{
    char sql[192];
    (void)snprintf(sql, sizeof(sql),
                   g_pg ? "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() "
                          "AND indexname = '%s'"
                        : "SELECT count(*) FROM sqlite_schema WHERE name = '%s'",
                   index);
    return test_store_db_int(name, sql);
}

// ---------------------------------------------------------------------------------------------

static void test_store_creates_schema_and_reopens(void)
{
    store *s = test_store_open_at("schema.db", STORE_SYNC_FULL);
    CU_ASSERT_STRING_EQUAL(store_backend_name(s), g_pg ? "postgresql" : "sqlite");
    test_item it;
    test_store_fill(&it, NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &it.job));
    test_store_close_checked(s);

    CU_ASSERT_EQUAL(test_store_db_int("schema.db", test_store_version_sql()), STORE_SCHEMA_VERSION);
    if (g_pg) {
        CU_ASSERT_EQUAL(test_store_db_int("schema.db",
                                          "SELECT count(*) FROM certmint_meta WHERE "
                                          "name = 'application' AND value = 'certmint'"),
                        1);
    } else {
        CU_ASSERT_EQUAL(test_store_db_int("schema.db", "PRAGMA application_id"), 0x434d4e54);
    }
    CU_ASSERT_EQUAL(test_store_db_int("schema.db", "SELECT count(*) FROM cert"), 1);

    // Reopening keeps the data and does not migrate again.
    s = test_store_open_at("schema.db", STORE_SYNC_NORMAL);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_ANY), 1);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_refuses_newer_schema(void)
{
    store *s = test_store_open_at("newer.db", STORE_SYNC_FULL);
    store_close(s);
    test_store_set_version("newer.db", STORE_SCHEMA_VERSION + 1);
    char url[600];
    s = NULL;
    TEST_ASSERT_CODE(store_open(&s, test_store_url(url, sizeof(url), "newer.db"), NULL),
                     STORE_E_SCHEMA_TOO_NEW);
    CU_ASSERT_PTR_NULL(s);
    // The refusal changed nothing.
    CU_ASSERT_EQUAL(test_store_db_int("newer.db", test_store_version_sql()),
                    STORE_SCHEMA_VERSION + 1);
}

// test_store_build_v1 writes a store of schema 1 (cert_by_txn present) with one unconfirmed
// certificate and its transaction, as certmint 1 would have left it.
static void test_store_build_v1(const char *name)
{
    if (g_pg) {
        char url[600];
        (void)test_store_url(url, sizeof(url), name); // creates the schema
        char schema[96];
        PGconn *pg = test_store_pg_connect(test_store_schema(schema, sizeof(schema), name));
        for (size_t part = 0; store_pg_migration_sql(0, part) != NULL; part++) {
            (void)test_store_pg_sql(pg, store_pg_migration_sql(0, part));
        }
        CU_ASSERT_PTR_NULL(store_pg_migration_sql(0, 9));
        (void)test_store_pg_sql(
            pg, "INSERT INTO certmint_meta VALUES ('schema_version', '1');"
                "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after,"
                " spki_sha256, status, transaction_id, requester_kind, cert_der, issued_at,"
                " confirm_deadline) VALUES ('devices', '\\x4101', '\\x3000', 'CN=old', 1, 2,"
                " decode(repeat('00', 32), 'hex'), 'unconfirmed', '\\x0102', 0, '\\x3000', 1, 5);"
                "INSERT INTO txn (ca, transaction_id, state, serial, protection, expires_at)"
                " VALUES ('devices', '\\x0102', 2, '\\x4101', 0, 9);");
        PQfinish(pg);
        return;
    }
    char path[512];
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(test_store_path(path, sizeof(path), name), &db), SQLITE_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(store_sqlite_migration_sql(0));
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, store_sqlite_migration_sql(0), NULL, NULL, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(
        sqlite3_exec(db,
                     "PRAGMA application_id = 1129139796; PRAGMA user_version = 1;"
                     "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before,"
                     " not_after, spki_sha256, status, transaction_id, requester_kind, cert_der,"
                     " issued_at, confirm_deadline) VALUES ('devices', X'4101', X'3000', 'CN=old',"
                     " 1, 2, zeroblob(32), 'unconfirmed', X'0102', 0, X'3000', 1, 5);"
                     "INSERT INTO txn (ca, transaction_id, state, serial, protection,"
                     " expires_at) VALUES ('devices', X'0102', 2, X'4101', 0, 9);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    (void)sqlite3_close(db);
}

// A store written by schema 1 (cert_by_txn present) is migrated on open: the index is gone,
// the rows are kept, and lookups by transaction work through the txn table.
static void test_store_migrates_schema_1(void)
{
    test_store_build_v1("v1.db");
    CU_ASSERT_EQUAL(test_store_has_index("v1.db", "cert_by_txn"), 1);

    store *s = test_store_open_at("v1.db", STORE_SYNC_NORMAL);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    static const uint8_t k_tid[] = {0x01, 0x02};
    TEST_ASSERT_OK(store_cert_get_by_txn(r, &a, &c, "devices", cm_span_make(k_tid, 2)));
    CU_ASSERT_STRING_EQUAL(c.subject_text, "CN=old");
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
    CU_ASSERT_EQUAL(test_store_db_int("v1.db", test_store_version_sql()), STORE_SCHEMA_VERSION);
    CU_ASSERT_EQUAL(test_store_has_index("v1.db", "cert_by_txn"), 0);
    CU_ASSERT_EQUAL(test_store_db_int("v1.db", "SELECT count(*) FROM cert"), 1);
}

// test_store_sqlite_foreign: files that are not certmint stores.
static void test_store_sqlite_foreign(void)
{
    store *s = NULL;
    char path[512];
    char url[600];
    // A file that is not SQLite at all.
    static const char junk[] = "this is not an SQLite database, it is a text file of junk....."
                               "................................................................";
    CU_ASSERT_FATAL(
        test_write_file(test_store_path(path, sizeof(path), "junk.db"), junk, sizeof(junk)));
    TEST_ASSERT_CODE(store_open(&s, test_store_url(url, sizeof(url), "junk.db"), NULL),
                     STORE_E_NOT_A_STORE);
    // An SQLite database of some other application.
    test_store_db_exec("other.db", "CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    TEST_ASSERT_CODE(store_open(&s, test_store_url(url, sizeof(url), "other.db"), NULL),
                     STORE_E_NOT_A_STORE);
    CU_ASSERT_EQUAL(test_store_db_int("other.db", "SELECT count(*) FROM t"), 1);
    // A directory that does not exist.
    TEST_ASSERT_CODE(store_open(&s, "sqlite:/nonexistent-dir/x/certmint.db", NULL), STORE_E_DB);
    CU_ASSERT_PTR_NULL(s);
}

// test_store_pg_foreign: schemas that are not certmint stores, and servers that are not there.
static void test_store_pg_foreign(void)
{
    store *s = NULL;
    char url[600];
    // A schema with another application's tables.
    (void)test_store_url(url, sizeof(url), "other.db");
    test_store_db_exec("other.db", "CREATE TABLE t (x integer); INSERT INTO t VALUES (1)");
    TEST_ASSERT_CODE(store_open(&s, url, NULL), STORE_E_NOT_A_STORE);
    CU_ASSERT_EQUAL(test_store_db_int("other.db", "SELECT count(*) FROM t"), 1);
    CU_ASSERT_EQUAL(test_store_db_int("other.db", "SELECT count(*) FROM pg_tables WHERE "
                                                  "schemaname = current_schema()"),
                    1);
    // Another application's certmint_meta.
    (void)test_store_url(url, sizeof(url), "meta.db");
    test_store_db_exec("meta.db", "CREATE TABLE certmint_meta (name text PRIMARY KEY, value text);"
                                  "INSERT INTO certmint_meta VALUES ('application', 'other')");
    TEST_ASSERT_CODE(store_open(&s, url, NULL), STORE_E_NOT_A_STORE);
    // A search_path naming no schema that exists: nowhere to create the tables.
    TEST_ASSERT_CODE(
        store_open(&s, test_pg_url(&g_cluster, "no_such_schema", url, sizeof(url)), NULL),
        STORE_E_DB);
    // No server at that socket, or at that port.
    char dir[300];
    (void)snprintf(dir, sizeof(dir), "%s/no-server", g_store_dir);
    (void)snprintf(url, sizeof(url), "postgresql://certmint@/certmint?host=%s&port=1", dir);
    TEST_ASSERT_CODE(store_open(&s, url, NULL), STORE_E_UNAVAILABLE);
    TEST_ASSERT_CODE(store_open(&s, "postgresql:host=127.0.0.1 port=1 dbname=certmint", NULL),
                     STORE_E_UNAVAILABLE);
    // The right server without the passfile: no password, which certmint never asks for.
    (void)snprintf(url, sizeof(url), "postgresql://certmint@/certmint?host=%s&port=%d&passfile=%s",
                   g_cluster.dir, g_cluster.port, "/nonexistent/pgpass");
    TEST_ASSERT_CODE(store_open(&s, url, NULL), STORE_E_DB);
    CU_ASSERT_PTR_NULL(s);
}

static void test_store_refuses_bad_urls_and_foreign_files(void)
{
    store *s = NULL;
    TEST_ASSERT_CODE(store_open(&s, NULL, NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "sqlite:", NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "/var/certmint.db", NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, ":x.db", NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "mysql:x", NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "postgresql:", NULL), STORE_E_URL);
    // A password in the URL is refused before any connection: it belongs in a passfile.
    TEST_ASSERT_CODE(
        store_open(&s, "postgresql://certmint:secret@/certmint?host=/nonexistent", NULL),
        STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "postgres://u@db/certmint?password=secret", NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "postgresql:host=/nonexistent password=secret", NULL),
                     STORE_E_URL);
    // Not a connection string libpq can parse.
    TEST_ASSERT_CODE(store_open(&s, "postgresql:host", NULL), STORE_E_URL);
    TEST_ASSERT_CODE(store_open(&s, "postgresql://u@db/certmint?nosuchoption=1", NULL),
                     STORE_E_URL);
    store_options bad_sync = {.sync = (store_sync)7};
    TEST_ASSERT_CODE(store_open(&s, "sqlite:/tmp/never.db", &bad_sync), STORE_E_INVALID);
    CU_ASSERT_PTR_NULL(s);
    if (g_pg) {
        test_store_pg_foreign();
    } else {
        test_store_sqlite_foreign();
    }
}

static void test_store_insert_lookup_and_duplicates(void)
{
    store *s = test_store_open_at("insert.db", STORE_SYNC_FULL);
    test_item it[4];
    test_store_fill(&it[0], NULL, "devices", 10, 0, STORE_CERT_UNCONFIRMED, 1700000300);
    test_store_fill(&it[1], NULL, "devices", 10, 0, STORE_CERT_VALID, 0); // same serial
    test_store_fill(&it[2], NULL, "devices", 11, 0, STORE_CERT_VALID, 0);
    test_store_fill(&it[3], NULL, "servers", 10, 0, STORE_CERT_VALID, 0); // same serial, other CA
    store_job *batch[4] = {&it[0].job, &it[1].job, &it[2].job, &it[3].job};
    TEST_ASSERT_CODE(store_run_batch(s, batch, 4), STORE_E_DUPLICATE_SERIAL);
    TEST_ASSERT_OK(it[0].job.result);
    TEST_ASSERT_CODE(it[1].job.result, STORE_E_DUPLICATE_SERIAL);
    TEST_ASSERT_OK(it[2].job.result);
    TEST_ASSERT_OK(it[3].job.result);
    // A duplicate in a later transaction fails the same way.
    test_store_fill(&it[1], NULL, "servers", 10, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_CODE(store_run(s, &it[1].job), STORE_E_DUPLICATE_SERIAL);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", it[0].job.u.cert.serial));
    CU_ASSERT_STRING_EQUAL(c.ca, "devices");
    CU_ASSERT(cm_span_eq(c.serial, it[0].job.u.cert.serial));
    CU_ASSERT(cm_span_eq(c.subject_der, cm_span_make(k_subject_der, sizeof(k_subject_der))));
    CU_ASSERT_STRING_EQUAL(c.subject_text, "CN=device-10,O=line-0");
    CU_ASSERT_EQUAL(c.not_before, 1700000000);
    CU_ASSERT_EQUAL(c.not_after, 1700000000 + 365 * 86400);
    CU_ASSERT(cm_span_eq(c.spki_sha256, cm_span_make(it[0].spki, 32)));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_UNCONFIRMED);
    CU_ASSERT_EQUAL(c.revoked_at, 0);
    CU_ASSERT_EQUAL(c.reason, -1);
    CU_ASSERT(cm_span_eq(c.transaction_id, cm_span_make(it[0].tid, 16)));
    CU_ASSERT_EQUAL(c.requester_kind, STORE_AUTH_MAC);
    CU_ASSERT(cm_span_eq(c.requester, CM_SPAN_LIT("factory-line-1")));
    CU_ASSERT(cm_span_eq(c.cert_der, cm_span_make(g_cert_der, sizeof(g_cert_der))));
    CU_ASSERT_EQUAL(c.issued_at, 1700000000);
    CU_ASSERT_EQUAL(c.confirm_deadline, 1700000300);

    // The first insert of serial 10 won: the duplicate's VALID status did not land.
    // Without a transaction row, the transactionID alone finds nothing (schema 2: the lookup
    // goes through the txn table).
    store_cert by_txn;
    TEST_ASSERT_CODE(store_cert_get_by_txn(r, &a, &by_txn, "devices", cm_span_make(it[0].tid, 16)),
                     STORE_E_NOT_FOUND);
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "servers", it[3].job.u.cert.serial));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_VALID);
    CU_ASSERT_EQUAL(c.confirm_deadline, 0);

    // Unknown serial, unknown CA, unknown transaction.
    test_item unknown;
    test_store_fill(&unknown, NULL, "devices", 999, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_CODE(store_cert_get(r, &a, &c, "devices", unknown.job.u.cert.serial),
                     STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(store_cert_get(r, &a, &c, "nobody", it[0].job.u.cert.serial),
                     STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(store_cert_get_by_txn(r, &a, &c, "devices", cm_span_make(unknown.tid, 16)),
                     STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(store_cert_get(r, &a, &c, "devices", cm_span_make(NULL, 0)), STORE_E_INVALID);
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_ANY), 3);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_rejects_invalid_jobs(void)
{
    store *s = test_store_open_at("invalid.db", STORE_SYNC_NORMAL);
    test_item it;
    // Each broken field alone, in one batch with a good job that must still land.
    enum { N = 9 };
    test_item bad[N];
    store_job *batch[N + 1];
    for (uint32_t i = 0; i < N; i++) {
        test_store_fill(&bad[i], NULL, "devices", 100 + i, 0, STORE_CERT_VALID, 0);
        batch[i] = &bad[i].job;
    }
    bad[0].job.u.cert.ca = NULL;
    bad[1].job.u.cert.serial = cm_span_make(NULL, 0);
    bad[2].job.u.cert.spki_sha256.len = 31;
    bad[3].job.u.cert.cert_der = cm_span_make(NULL, 0);
    bad[4].job.u.cert.status = STORE_CERT_REVOKED;
    bad[5].job.u.cert.status = STORE_CERT_UNCONFIRMED; // without a deadline
    bad[6].job.u.cert.subject_text = NULL;
    bad[7].job.u.cert.serial.len = 21; // longer than RFC 5280 allows
    bad[8].job.op = (store_op)99;
    test_store_fill(&it, NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    batch[N] = &it.job;
    TEST_ASSERT_CODE(store_run_batch(s, batch, N + 1), STORE_E_INVALID);
    for (uint32_t i = 0; i < N; i++) {
        TEST_ASSERT_CODE(bad[i].job.result, STORE_E_INVALID);
    }
    TEST_ASSERT_OK(it.job.result);

    // Revocation reasons that are not reasons for revoking.
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", it.job.u.cert.serial, 1,
                                       STORE_REASON_REMOVE_FROM_CRL),
                     STORE_E_INVALID);
    TEST_ASSERT_CODE(
        test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", it.job.u.cert.serial, 1, 7),
        STORE_E_INVALID);
    TEST_ASSERT_CODE(
        test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", it.job.u.cert.serial, 1, 11),
        STORE_E_INVALID);
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_SWEEP, NULL, cm_span_make(NULL, 0), 1, -1),
                     STORE_E_INVALID);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_ANY), 1);
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_VALID), 1);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_confirm(void)
{
    store *s = test_store_open_at("confirm.db", STORE_SYNC_FULL);
    test_item it[3];
    test_store_fill(&it[0], NULL, "devices", 1, 0, STORE_CERT_UNCONFIRMED, 1000);
    test_store_fill(&it[1], NULL, "devices", 2, 0, STORE_CERT_UNCONFIRMED, 1000);
    test_store_fill(&it[2], NULL, "devices", 3, 0, STORE_CERT_UNCONFIRMED, 1000);
    store_job *batch[3] = {&it[0].job, &it[1].job, &it[2].job};
    TEST_ASSERT_OK(store_run_batch(s, batch, 3));
    cm_span s1 = it[0].job.u.cert.serial;
    cm_span s2 = it[1].job.u.cert.serial;
    cm_span s3 = it[2].job.u.cert.serial;

    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "devices", s1, 999, 0));
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "devices", s1, 999, 0),
                     STORE_E_ALREADY_CONFIRMED);
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "devices", s2, 1000, 0),
                     STORE_E_CONFIRM_EXPIRED);
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "servers", s2, 999, 0),
                     STORE_E_NOT_FOUND);
    // certConf with status rejection: the certificate is revoked, and cannot be confirmed.
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s3, 500,
                                     STORE_REASON_CESSATION_OF_OPERATION));
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "devices", s3, 999, 0),
                     STORE_E_ALREADY_REVOKED);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", s1));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_VALID);
    CU_ASSERT_EQUAL(c.confirm_deadline, 0);
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", s2));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_UNCONFIRMED);
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", s3));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(c.revoked_at, 500);
    CU_ASSERT_EQUAL(c.reason, STORE_REASON_CESSATION_OF_OPERATION);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

typedef struct test_revoked {
    uint32_t n;
    uint32_t serial_no[8];
    int reason[8];
    int64_t revoked_at[8];
} test_revoked;

static bool test_store_collect_revoked(void *ctx, cm_span serial, int64_t revoked_at, int reason)
{
    test_revoked *t = ctx;
    CU_ASSERT_FATAL(t->n < 8 && serial.len == 16);
    memcpy(&t->serial_no[t->n], serial.p + 8, sizeof(uint32_t));
    t->reason[t->n] = reason;
    t->revoked_at[t->n] = revoked_at;
    t->n++;
    return true;
}

static void test_store_revoke_hold_and_release(void)
{
    store *s = test_store_open_at("revoke.db", STORE_SYNC_FULL);
    test_item it[4];
    store_job *batch[4];
    for (uint32_t i = 0; i < 4; i++) {
        test_store_fill(&it[i], NULL, "devices", i + 1, 0, STORE_CERT_VALID, 0);
        batch[i] = &it[i].job;
    }
    TEST_ASSERT_OK(store_run_batch(s, batch, 4));
    cm_span s1 = it[0].job.u.cert.serial;
    cm_span s2 = it[1].job.u.cert.serial;
    cm_span s3 = it[2].job.u.cert.serial;
    test_item unknown;
    test_store_fill(&unknown, NULL, "devices", 77, 0, STORE_CERT_VALID, 0);
    cm_span s_unknown = unknown.job.u.cert.serial;

    // Revoke, then revoke again: the second maps to certRevoked.
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s1, 2000,
                                     STORE_REASON_KEY_COMPROMISE));
    TEST_ASSERT_CODE(
        test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s1, 2001, STORE_REASON_SUPERSEDED),
        STORE_E_ALREADY_REVOKED);
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s_unknown, 2000,
                                       STORE_REASON_UNSPECIFIED),
                     STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(
        test_store_ref_op(s, STORE_OP_CERT_REVOKE, "servers", s1, 2000, STORE_REASON_UNSPECIFIED),
        STORE_E_NOT_FOUND);
    // Hold, hold again, release, release again.
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s2, 3000,
                                     STORE_REASON_CERTIFICATE_HOLD));
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s2, 3001,
                                       STORE_REASON_CERTIFICATE_HOLD),
                     STORE_E_ALREADY_REVOKED);
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_RELEASE, "devices", s2, 0, 0));
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_RELEASE, "devices", s2, 0, 0),
                     STORE_E_NOT_ON_HOLD);
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_RELEASE, "devices", s1, 0, 0),
                     STORE_E_NOT_ON_HOLD);
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_RELEASE, "devices", s_unknown, 0, 0),
                     STORE_E_NOT_FOUND);
    // A held certificate can be revoked for good; then it cannot be released.
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s3, 4000,
                                     STORE_REASON_CERTIFICATE_HOLD));
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", s3, 4100,
                                     STORE_REASON_AFFILIATION_CHANGED));
    TEST_ASSERT_CODE(test_store_ref_op(s, STORE_OP_CERT_RELEASE, "devices", s3, 0, 0),
                     STORE_E_NOT_ON_HOLD);
    // Certificate 4 ends on hold.
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", it[3].job.u.cert.serial,
                                     5000, STORE_REASON_CERTIFICATE_HOLD));

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", s2));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_VALID);
    CU_ASSERT_EQUAL(c.revoked_at, 0);
    CU_ASSERT_EQUAL(c.reason, -1);
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", it[3].job.u.cert.serial));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_HOLD);

    // The CRL entries: 1 (keyCompromise), 3 (affiliationChanged), 4 (hold), in issue order.
    test_revoked got = {0};
    TEST_ASSERT_OK(store_revoked_list(r, "devices", 0, test_store_collect_revoked, &got));
    CU_ASSERT_EQUAL_FATAL(got.n, 3);
    CU_ASSERT_EQUAL(got.serial_no[0], 1);
    CU_ASSERT_EQUAL(got.reason[0], STORE_REASON_KEY_COMPROMISE);
    CU_ASSERT_EQUAL(got.revoked_at[0], 2000);
    CU_ASSERT_EQUAL(got.serial_no[1], 3);
    CU_ASSERT_EQUAL(got.reason[1], STORE_REASON_AFFILIATION_CHANGED);
    CU_ASSERT_EQUAL(got.revoked_at[1], 4100);
    CU_ASSERT_EQUAL(got.serial_no[2], 4);
    CU_ASSERT_EQUAL(got.reason[2], STORE_REASON_CERTIFICATE_HOLD);
    // Expired certificates may be left off; another CA has no entries.
    memset(&got, 0, sizeof(got));
    TEST_ASSERT_OK(store_revoked_list(r, "devices", 1700000000 + 365 * 86400 + 1,
                                      test_store_collect_revoked, &got));
    CU_ASSERT_EQUAL(got.n, 0);
    TEST_ASSERT_OK(store_revoked_list(r, "servers", 0, test_store_collect_revoked, &got));
    CU_ASSERT_EQUAL(got.n, 0);

    // Every successful revocation change bumped the CA's revision: revoke 1, hold 2, release
    // 2, hold 3, revoke 3, hold 4. Refused ones did not.
    store_crl crl;
    TEST_ASSERT_OK(store_crl_get(r, &a, &crl, "devices"));
    CU_ASSERT_EQUAL(crl.revision, 6);
    CU_ASSERT_EQUAL(crl.built_revision, 0);
    TEST_ASSERT_CODE(store_crl_get(r, &a, &crl, "servers"), STORE_E_NOT_FOUND);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

static cm_result test_store_txn_op(store *s, store_op op, const char *ca, const char *tid,
                                   uint32_t state, cm_span serial, int64_t expires_at)
{
    store_job job;
    store_job_init(&job, op, NULL);
    job.u.txn.ca = ca;
    job.u.txn.transaction_id = cm_span_make(tid, strlen(tid));
    job.u.txn.state = state;
    job.u.txn.sender_nonce = CM_SPAN_LIT("nonce-0123456789");
    job.u.txn.serial = serial;
    job.u.txn.protection = STORE_AUTH_SIGNATURE;
    job.u.txn.credential = CM_SPAN_LIT("0123456789abcdef0123456789abcdef");
    job.u.txn.expires_at = expires_at;
    return store_run(s, &job);
}

static void test_store_transactions(void)
{
    store *s = test_store_open_at("txn.db", STORE_SYNC_FULL);
    test_item it;
    test_store_fill(&it, NULL, "devices", 1, 0, STORE_CERT_UNCONFIRMED, 5000);
    TEST_ASSERT_OK(store_run(s, &it.job));
    cm_span none = cm_span_make(NULL, 0);
    cm_span serial = it.job.u.cert.serial;
    test_item other;
    test_store_fill(&other, NULL, "devices", 2, 0, STORE_CERT_VALID, 0);

    TEST_ASSERT_OK(
        test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-A-0123456789", 1, none, 100));
    TEST_ASSERT_CODE(
        test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-A-0123456789", 1, none, 100),
        STORE_E_TXN_IN_USE);
    TEST_ASSERT_OK(
        test_store_txn_op(s, STORE_OP_TXN_CREATE, "servers", "tid-A-0123456789", 1, none, 100));
    TEST_ASSERT_OK(
        test_store_txn_op(s, STORE_OP_TXN_UPDATE, "devices", "tid-A-0123456789", 2, serial, 200));
    // The issued serial must be a certificate of that CA (foreign key).
    TEST_ASSERT_CODE(test_store_txn_op(s, STORE_OP_TXN_UPDATE, "devices", "tid-A-0123456789", 3,
                                       other.job.u.cert.serial, 200),
                     STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(
        test_store_txn_op(s, STORE_OP_TXN_UPDATE, "servers", "tid-A-0123456789", 3, serial, 200),
        STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(
        test_store_txn_op(s, STORE_OP_TXN_UPDATE, "devices", "tid-unknown-00000", 2, none, 200),
        STORE_E_TXN_NOT_FOUND);
    // A new transaction naming a certificate that does not exist fails alone.
    TEST_ASSERT_CODE(test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-fk-0123456789", 1,
                                       other.job.u.cert.serial, 200),
                     STORE_E_NOT_FOUND);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_txn t;
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-A-0123456789")));
    CU_ASSERT_EQUAL(t.state, 2);
    CU_ASSERT(cm_span_eq(t.serial, serial));
    // The transaction's certificate, through its row; none yet for the other CA's transaction
    // (no serial) and none for an unknown one.
    store_cert issued;
    TEST_ASSERT_OK(
        store_cert_get_by_txn(r, &a, &issued, "devices", CM_SPAN_LIT("tid-A-0123456789")));
    CU_ASSERT(cm_span_eq(issued.serial, serial));
    CU_ASSERT_EQUAL(issued.status, STORE_CERT_UNCONFIRMED);
    TEST_ASSERT_CODE(
        store_cert_get_by_txn(r, &a, &issued, "servers", CM_SPAN_LIT("tid-A-0123456789")),
        STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(
        store_cert_get_by_txn(r, &a, &issued, "devices", CM_SPAN_LIT("tid-unknown-00000")),
        STORE_E_NOT_FOUND);
    CU_ASSERT(cm_span_eq(t.sender_nonce, CM_SPAN_LIT("nonce-0123456789")));
    CU_ASSERT(cm_span_eq(t.transaction_id, CM_SPAN_LIT("tid-A-0123456789")));
    CU_ASSERT_EQUAL(t.protection, STORE_AUTH_SIGNATURE);
    CU_ASSERT(cm_span_eq(t.credential, CM_SPAN_LIT("0123456789abcdef0123456789abcdef")));
    CU_ASSERT_EQUAL(t.expires_at, 200);
    // Schema 3's columns for certConf: none written, none read.
    CU_ASSERT_EQUAL(t.flags, 0);
    CU_ASSERT_EQUAL(t.request_nonce.len, 0);
    CU_ASSERT_EQUAL(t.signer_cert.len, 0);
    // Written with an update, read back as written; the next update without them clears them.
    store_job up;
    store_job_init(&up, STORE_OP_TXN_UPDATE, NULL);
    up.u.txn = t;
    up.u.txn.flags = 0x5;
    up.u.txn.request_nonce = CM_SPAN_LIT("request-nonce-01");
    up.u.txn.signer_cert = CM_SPAN_LIT("\x30\x03\x02\x01\x07");
    TEST_ASSERT_OK(store_run(s, &up));
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-A-0123456789")));
    CU_ASSERT_EQUAL(t.flags, 0x5);
    CU_ASSERT(cm_span_eq(t.request_nonce, CM_SPAN_LIT("request-nonce-01")));
    CU_ASSERT(cm_span_eq(t.signer_cert, CM_SPAN_LIT("\x30\x03\x02\x01\x07")));
    CU_ASSERT(cm_span_eq(t.sender_nonce, CM_SPAN_LIT("nonce-0123456789")));
    CU_ASSERT_EQUAL(t.state, 2);
    TEST_ASSERT_OK(
        test_store_txn_op(s, STORE_OP_TXN_UPDATE, "devices", "tid-A-0123456789", 2, serial, 200));
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-A-0123456789")));
    CU_ASSERT_TRUE(t.flags == 0 && t.request_nonce.len == 0 && t.signer_cert.len == 0);
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "servers", CM_SPAN_LIT("tid-A-0123456789")));
    CU_ASSERT_EQUAL(t.state, 1);
    CU_ASSERT_EQUAL(t.serial.len, 0);
    TEST_ASSERT_CODE(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-B")),
                     STORE_E_TXN_NOT_FOUND);

    // Delete, delete again.
    store_job del;
    store_job_init(&del, STORE_OP_TXN_DELETE, NULL);
    del.u.ref.ca = "servers";
    del.u.ref.transaction_id = CM_SPAN_LIT("tid-A-0123456789");
    TEST_ASSERT_OK(store_run(s, &del));
    TEST_ASSERT_CODE(store_run(s, &del), STORE_E_TXN_NOT_FOUND);
    TEST_ASSERT_CODE(store_txn_get(r, &a, &t, "servers", CM_SPAN_LIT("tid-A-0123456789")),
                     STORE_E_TXN_NOT_FOUND);

    // Expiry: "devices"/A expires at 200, B at 300, C at 400; expiring at 300 removes two.
    TEST_ASSERT_OK(test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-B", 1, none, 300));
    TEST_ASSERT_OK(test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-C", 1, none, 400));
    store_job exp;
    store_job_init(&exp, STORE_OP_TXN_EXPIRE, NULL);
    exp.u.ref.time = 300;
    TEST_ASSERT_OK(store_run(s, &exp));
    CU_ASSERT_EQUAL(exp.out_value, 2);
    TEST_ASSERT_CODE(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-B")),
                     STORE_E_TXN_NOT_FOUND);
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-C")));
    TEST_ASSERT_OK(store_run(s, &exp));
    CU_ASSERT_EQUAL(exp.out_value, 0);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_sweep_revokes_unconfirmed_past_deadline(void)
{
    store *s = test_store_open_at("sweep.db", STORE_SYNC_FULL);
    test_item it[5];
    test_store_fill(&it[0], NULL, "devices", 1, 0, STORE_CERT_UNCONFIRMED, 100);
    test_store_fill(&it[1], NULL, "devices", 2, 0, STORE_CERT_UNCONFIRMED, 200);
    test_store_fill(&it[2], NULL, "servers", 3, 0, STORE_CERT_UNCONFIRMED, 250);
    test_store_fill(&it[3], NULL, "devices", 4, 0, STORE_CERT_UNCONFIRMED, 300);
    test_store_fill(&it[4], NULL, "devices", 5, 0, STORE_CERT_VALID, 0);
    store_job *batch[5] = {&it[0].job, &it[1].job, &it[2].job, &it[3].job, &it[4].job};
    TEST_ASSERT_OK(store_run_batch(s, batch, 5));

    store_job sw;
    store_job_init(&sw, STORE_OP_SWEEP, NULL);
    sw.u.ref.time = 250;
    sw.u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    TEST_ASSERT_OK(store_run(s, &sw));
    CU_ASSERT_EQUAL(sw.out_value, 3);
    TEST_ASSERT_OK(store_run(s, &sw));
    CU_ASSERT_EQUAL(sw.out_value, 0);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_REVOKED), 3);
    CU_ASSERT_EQUAL(test_store_count(r, "devices", STORE_CERT_REVOKED), 2);
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_UNCONFIRMED), 1);
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_VALID), 1);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", it[1].job.u.cert.serial));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(c.revoked_at, 250);
    CU_ASSERT_EQUAL(c.reason, STORE_REASON_CESSATION_OF_OPERATION);
    CU_ASSERT_EQUAL(c.confirm_deadline, 0);
    // A swept certificate can no longer be confirmed.
    TEST_ASSERT_CODE(
        test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "devices", it[0].job.u.cert.serial, 0, 0),
        STORE_E_ALREADY_REVOKED);
    // Both CAs that lost certificates have a new revision.
    store_crl crl;
    TEST_ASSERT_OK(store_crl_get(r, &a, &crl, "devices"));
    CU_ASSERT_EQUAL(crl.revision, 1);
    TEST_ASSERT_OK(store_crl_get(r, &a, &crl, "servers"));
    CU_ASSERT_EQUAL(crl.revision, 1);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_crl_numbers_and_state(void)
{
    store *s = test_store_open_at("crl.db", STORE_SYNC_FULL);
    store_job next[4];
    store_job *batch[4];
    for (int i = 0; i < 4; i++) {
        store_job_init(&next[i], STORE_OP_CRL_NEXT_NUMBER, NULL);
        next[i].u.ref.ca = i == 2 ? "servers" : "devices";
        batch[i] = &next[i];
    }
    TEST_ASSERT_OK(store_run_batch(s, batch, 4));
    CU_ASSERT_EQUAL(next[0].out_value, 1);
    CU_ASSERT_EQUAL(next[1].out_value, 2);
    CU_ASSERT_EQUAL(next[2].out_value, 1);
    CU_ASSERT_EQUAL(next[3].out_value, 3);

    static const uint8_t crl3[] = {0x30, 0x03, 0x02, 0x01, 0x03};
    static const uint8_t crl2[] = {0x30, 0x03, 0x02, 0x01, 0x02};
    store_job put;
    store_job_init(&put, STORE_OP_CRL_PUT, NULL);
    put.u.crl.ca = "devices";
    put.u.crl.crl_number = 3;
    put.u.crl.crl_der = cm_span_make(crl3, sizeof(crl3));
    put.u.crl.this_update = 10000;
    put.u.crl.next_update = 20000;
    put.u.crl.built_revision = 0;
    TEST_ASSERT_OK(store_run(s, &put));
    // An older CRL (another node was slower) does not replace a newer one.
    put.u.crl.crl_number = 2;
    put.u.crl.crl_der = cm_span_make(crl2, sizeof(crl2));
    TEST_ASSERT_CODE(store_run(s, &put), STORE_E_STALE);
    put.u.crl.crl_der = cm_span_make(NULL, 0);
    TEST_ASSERT_CODE(store_run(s, &put), STORE_E_INVALID);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_crl crl;
    TEST_ASSERT_OK(store_crl_get(r, &a, &crl, "devices"));
    CU_ASSERT_EQUAL(crl.crl_number, 3);
    CU_ASSERT_EQUAL(crl.numbers_issued, 3);
    CU_ASSERT(cm_span_eq(crl.crl_der, cm_span_make(crl3, sizeof(crl3))));
    CU_ASSERT_EQUAL(crl.this_update, 10000);
    CU_ASSERT_EQUAL(crl.next_update, 20000);
    TEST_ASSERT_OK(store_crl_get(r, &a, &crl, "servers"));
    CU_ASSERT_EQUAL(crl.numbers_issued, 1);
    CU_ASSERT_EQUAL(crl.crl_number, 0);
    CU_ASSERT_EQUAL(crl.crl_der.len, 0);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

typedef struct test_listing {
    uint32_t n;
    int64_t last_id;
    bool ordered;
} test_listing;

static bool test_store_collect_list(void *ctx, const store_cert *c)
{
    test_listing *l = ctx;
    l->ordered &= c->id > l->last_id;
    l->last_id = c->id;
    l->n++;
    return true;
}

static void test_store_list_filters_and_paging(void)
{
    store *s = test_store_open_at("list.db", STORE_SYNC_NORMAL);
    enum { N = 30 };
    test_item it[N];
    store_job *batch[N];
    for (uint32_t i = 0; i < N; i++) {
        // Serial numbers 0..29; every third unconfirmed; lines 0/1 alternate.
        test_store_fill(&it[i], NULL, "devices", i, i % 2,
                        i % 3 == 0 ? STORE_CERT_UNCONFIRMED : STORE_CERT_VALID,
                        i % 3 == 0 ? 9999 : 0);
        batch[i] = &it[i].job;
    }
    TEST_ASSERT_OK(store_run_batch(s, batch, N));
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));

    store_filter f = {.status = STORE_CERT_ANY};
    test_listing l = {.ordered = true};
    TEST_ASSERT_OK(store_cert_list(r, &f, test_store_collect_list, &l));
    CU_ASSERT_EQUAL(l.n, N);
    CU_ASSERT_TRUE(l.ordered);

    f.status = STORE_CERT_UNCONFIRMED;
    l = (test_listing){.ordered = true};
    TEST_ASSERT_OK(store_cert_list(r, &f, test_store_collect_list, &l));
    CU_ASSERT_EQUAL(l.n, 10);

    // "device-1" matches 1 and 10..19; "O=line-1" the 15 odd numbers.
    f.status = STORE_CERT_ANY;
    f.subject_substr = "device-1";
    l = (test_listing){.ordered = true};
    TEST_ASSERT_OK(store_cert_list(r, &f, test_store_collect_list, &l));
    CU_ASSERT_EQUAL(l.n, 11);
    f.subject_substr = "O=line-1";
    uint64_t count = 0;
    TEST_ASSERT_OK(store_cert_count(r, &f, &count));
    CU_ASSERT_EQUAL(count, 15);
    f.subject_substr = "%"; // not a pattern: nothing contains a percent sign
    TEST_ASSERT_OK(store_cert_count(r, &f, &count));
    CU_ASSERT_EQUAL(count, 0);

    // Paging: 7 rows at a time until the end.
    f = (store_filter){.status = STORE_CERT_ANY, .limit = 7};
    uint32_t pages = 0;
    uint32_t total = 0;
    for (;;) {
        l = (test_listing){.ordered = true, .last_id = f.after_id};
        TEST_ASSERT_OK(store_cert_list(r, &f, test_store_collect_list, &l));
        CU_ASSERT_TRUE(l.ordered);
        if (l.n == 0) {
            break;
        }
        total += l.n;
        pages++;
        f.after_id = l.last_id;
    }
    CU_ASSERT_EQUAL(total, N);
    CU_ASSERT_EQUAL(pages, 5);
    f = (store_filter){.ca = "servers", .status = STORE_CERT_ANY};
    TEST_ASSERT_OK(store_cert_count(r, &f, &count));
    CU_ASSERT_EQUAL(count, 0);
    f.status = (store_cert_status)9;
    TEST_ASSERT_CODE(store_cert_count(r, &f, &count), STORE_E_INVALID);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_batch_with_mixed_outcomes(void)
{
    store *s = test_store_open_at("mixed.db", STORE_SYNC_FULL);
    test_item it[3];
    store_job *ins[3];
    for (uint32_t i = 0; i < 3; i++) {
        test_store_fill(&it[i], NULL, "devices", i + 1, 0, STORE_CERT_UNCONFIRMED, 1000);
        ins[i] = &it[i].job;
    }
    TEST_ASSERT_OK(store_run_batch(s, ins, 3));
    cm_span s1 = it[0].job.u.cert.serial;
    cm_span s2 = it[1].job.u.cert.serial;
    cm_span s3 = it[2].job.u.cert.serial;

    // One transaction: each job sees the effects of the successful jobs before it, and a
    // failed multi-statement job leaves nothing behind.
    enum { N = 7 };
    store_job j[N];
    store_job *batch[N];
    const store_op ops[N] = {STORE_OP_CERT_REVOKE,  STORE_OP_CERT_REVOKE,  STORE_OP_CERT_REVOKE,
                             STORE_OP_CERT_RELEASE, STORE_OP_CERT_RELEASE, STORE_OP_CERT_CONFIRM,
                             STORE_OP_CERT_CONFIRM};
    const cm_span serials[N] = {s1, s1, s2, s2, s2, s3, s3};
    const int reasons[N] = {STORE_REASON_SUPERSEDED,
                            STORE_REASON_SUPERSEDED,
                            STORE_REASON_CERTIFICATE_HOLD,
                            0,
                            0,
                            0,
                            0};
    const uint32_t want[N] = {CM_OK, STORE_E_ALREADY_REVOKED,  CM_OK, CM_OK, STORE_E_NOT_ON_HOLD,
                              CM_OK, STORE_E_ALREADY_CONFIRMED};
    for (int i = 0; i < N; i++) {
        store_job_init(&j[i], ops[i], NULL);
        j[i].u.ref.ca = "devices";
        j[i].u.ref.serial = serials[i];
        j[i].u.ref.time = 900;
        j[i].u.ref.reason = reasons[i];
        batch[i] = &j[i];
    }
    TEST_ASSERT_CODE(store_run_batch(s, batch, N), STORE_E_ALREADY_REVOKED);
    for (int i = 0; i < N; i++) {
        TEST_ASSERT_CODE(j[i].result, want[i]);
    }
    store_stats st;
    store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.commit_failures, 0);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_REVOKED), 1);
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_VALID), 2);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_crl crl;
    TEST_ASSERT_OK(store_crl_get(r, &a, &crl, "devices"));
    CU_ASSERT_EQUAL(crl.revision, 3); // revoke 1, hold 2, release 2
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

// The jobs of enrolments in one batch (certificate, transaction, certificate, ... as the
// server submits them), with every outcome a batch of them can have: a serial taken earlier
// in the batch or already in the store, a transactionID taken earlier in the batch or already
// in the store, a transaction naming a certificate of the same batch. PostgreSQL sends them as
// multi-row statements: the outcomes, the rows that landed and their order must be what one
// job after the other gives (SQLite), in one round trip.
static void test_store_enrolment_batch_outcomes(void)
{
    store *s = test_store_open_at("enrol-batch.db", STORE_SYNC_FULL);
    test_item old;
    test_store_fill(&old, NULL, "devices", 500, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &old.job));
    TEST_ASSERT_OK(test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-old-000000000", 1,
                                     cm_span_make(NULL, 0), 9000));
    store_stats before;
    store_get_stats(s, &before);

    enum { N = 6 };
    test_item it[N];
    store_job tx[N];
    char tids[N][24];
    store_job *batch[2 * N];
    for (uint32_t i = 0; i < N; i++) {
        // Certificate 3 repeats certificate 1's serial; certificate 4 repeats the stored one.
        const uint32_t n = i == 3 ? 502 : i == 4 ? 500 : 501 + i;
        test_store_fill(&it[i], NULL, "devices", n, 0, STORE_CERT_VALID, 0);
        (void)snprintf(it[i].subject, sizeof(it[i].subject), "CN=batch-%u", i);
        // Transaction 2 repeats transaction 0's ID; transaction 5 repeats the stored one.
        if (i == 2) {
            (void)snprintf(tids[i], sizeof(tids[i]), "tid-batch-%07u", 0u);
        } else if (i == 5) {
            (void)snprintf(tids[i], sizeof(tids[i]), "tid-old-000000000");
        } else {
            (void)snprintf(tids[i], sizeof(tids[i]), "tid-batch-%07u", i);
        }
        store_job_init(&tx[i], STORE_OP_TXN_CREATE, NULL);
        tx[i].u.txn = (store_txn){.ca = "devices",
                                  .transaction_id = cm_span_make(tids[i], strlen(tids[i])),
                                  .state = 2,
                                  .serial = it[i].job.u.cert.serial,
                                  .protection = STORE_AUTH_MAC,
                                  .expires_at = 9000};
        batch[2 * i] = &it[i].job;
        batch[2 * i + 1] = &tx[i];
    }
    TEST_ASSERT_CODE(store_run_batch(s, batch, 2 * N), STORE_E_TXN_IN_USE); // the first failure
    const uint32_t want_cert[N] = {
        CM_OK, CM_OK, CM_OK, STORE_E_DUPLICATE_SERIAL, STORE_E_DUPLICATE_SERIAL, CM_OK};
    const uint32_t want_txn[N] = {CM_OK, CM_OK, STORE_E_TXN_IN_USE,
                                  CM_OK, CM_OK, STORE_E_TXN_IN_USE};
    for (uint32_t i = 0; i < N; i++) {
        TEST_ASSERT_CODE(it[i].job.result, want_cert[i]);
        TEST_ASSERT_CODE(tx[i].result, want_txn[i]);
    }
    store_stats after;
    store_get_stats(s, &after);
    CU_ASSERT_EQUAL(after.commits - before.commits, 1);
    CU_ASSERT_EQUAL(after.round_trips - before.round_trips, g_pg ? 1 : 0);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    // The first job of a repeated serial wrote its row; the stored certificate is untouched.
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", it[1].job.u.cert.serial));
    CU_ASSERT_STRING_EQUAL(c.subject_text, "CN=batch-1");
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", old.job.u.cert.serial));
    CU_ASSERT_STRING_EQUAL(c.subject_text, "CN=device-500,O=line-0");
    // Transaction 3 landed and names the serial its certificate lost to certificate 1: the row
    // one job after the other leaves.
    store_cert by_txn;
    TEST_ASSERT_OK(
        store_cert_get_by_txn(r, &a, &by_txn, "devices", CM_SPAN_LIT("tid-batch-0000003")));
    CU_ASSERT_STRING_EQUAL(by_txn.subject_text, "CN=batch-1");
    store_txn t;
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("tid-old-000000000")));
    CU_ASSERT_EQUAL(t.state, 1); // the stored transaction is untouched
    // Issue order is submission order.
    test_listing l = {.ordered = true};
    store_filter f = {.status = STORE_CERT_ANY, .subject_substr = "CN=batch-"};
    TEST_ASSERT_OK(store_cert_list(r, &f, test_store_collect_list, &l));
    CU_ASSERT_EQUAL(l.n, 4);
    CU_ASSERT(l.ordered);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_locked_database_fails_the_whole_batch(void)
{
    char url[600];
    char path[512];
    store *s = NULL;
    store_options o = {.busy_timeout_ms = 50};
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), "locked.db"), &o));

    // Another process (here: another connection) holds the write lock: SQLite's database
    // lock, or a PostgreSQL table lock that blocks inserts past the writer's lock_timeout.
    sqlite3 *other = NULL;
    PGconn *other_pg = NULL;
    if (g_pg) {
        char schema[96];
        other_pg = test_store_pg_connect(test_store_schema(schema, sizeof(schema), "locked.db"));
        (void)test_store_pg_sql(other_pg, "BEGIN; LOCK TABLE cert IN EXCLUSIVE MODE");
    } else {
        CU_ASSERT_EQUAL_FATAL(
            sqlite3_open(test_store_path(path, sizeof(path), "locked.db"), &other), SQLITE_OK);
        CU_ASSERT_EQUAL_FATAL(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    }
    test_item it[2];
    test_store_fill(&it[0], NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    test_store_fill(&it[1], NULL, "devices", 2, 0, STORE_CERT_VALID, 0);
    store_job *batch[2] = {&it[0].job, &it[1].job};
    TEST_ASSERT_CODE(store_run_batch(s, batch, 2), STORE_E_BUSY);
    TEST_ASSERT_CODE(it[0].job.result, STORE_E_BUSY);
    TEST_ASSERT_CODE(it[1].job.result, STORE_E_BUSY);
    if (g_pg) {
        (void)test_store_pg_sql(other_pg, "COMMIT");
        PQfinish(other_pg);
    } else {
        CU_ASSERT_EQUAL(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        (void)sqlite3_close(other);
    }

    // The store recovers: the same jobs succeed once the lock is gone.
    TEST_ASSERT_OK(store_run_batch(s, batch, 2));
    store_stats st;
    store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.commit_failures, 1);
    CU_ASSERT_EQUAL(st.commits, 1);
    CU_ASSERT_EQUAL(st.jobs, 4);
    CU_ASSERT_EQUAL(st.jobs_failed, 2);
    CU_ASSERT(store_healthy(s)); // a busy database is not a lost one
    test_store_close_checked(s);
    CU_ASSERT_EQUAL(test_store_db_int("locked.db", "SELECT count(*) FROM cert"), 2);
}

// Request-path statements must use an index: a full "SCAN cert" or "SCAN txn" would grow with
// the number of certificates ever issued.
static void test_store_sqlite_request_path_queries_use_indexes(void)
{
    store *s = test_store_open_at("plan.db", STORE_SYNC_NORMAL);
    store_close(s);
    char path[512];
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(test_store_path(path, sizeof(path), "plan.db"), &db),
                          SQLITE_OK);
    size_t checked = 0;
    for (size_t i = 0; store_sqlite_request_path_sql(i) != NULL; i++) {
        char sql[2048];
        int n =
            snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", store_sqlite_request_path_sql(i));
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof(sql));
        sqlite3_stmt *st = NULL;
        CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *detail = (const char *)sqlite3_column_text(st, 3);
            // ("SCAN CONSTANT ROW" is the one row of SELECT EXISTS (...), not a table.)
            bool full_scan = strncmp(detail, "SCAN ", 5) == 0 && strstr(detail, "INDEX") == NULL &&
                             strcmp(detail, "SCAN CONSTANT ROW") != 0;
            // A search on txn by its primary key prefix (ca) alone reads every transaction of
            // the CA: as bad as a scan.
            full_scan |= strcmp(detail, "SEARCH txn USING PRIMARY KEY (ca=?)") == 0;
            if (full_scan) {
                fprintf(stderr, "\n  full scan: %s\n  in: %s\n", detail,
                        store_sqlite_request_path_sql(i));
            }
            CU_ASSERT_FALSE(full_scan);
        }
        (void)sqlite3_finalize(st);
        checked++;
    }
    CU_ASSERT(checked >= 15);
    (void)sqlite3_close(db);
}

// The same on PostgreSQL: every request-path statement, and every statement inside certmint's
// functions, as a generic plan (as the prepared statements run) with sequential scans made as
// expensive as the planner allows — a "Seq Scan on cert|txn" left means no index can serve it.
// Checked: with cert_unconfirmed dropped, the sweep fails this.
static void test_store_pg_request_path_queries_use_indexes(void)
{
    store *s = test_store_open_at("plan.db", STORE_SYNC_NORMAL);
    store_close(s);
    char schema[96];
    PGconn *pg = test_store_pg_connect(test_store_schema(schema, sizeof(schema), "plan.db"));
    (void)test_store_pg_sql(pg, "SET enable_seqscan = off; SET plan_cache_mode = "
                                "force_generic_plan");
    size_t checked = 0;
    for (size_t i = 0; store_pg_request_path_sql(i) != NULL; i++) {
        const store_pg_sql *q = store_pg_request_path_sql(i);
        Oid types[16];
        const size_t n = strlen(q->types);
        CU_ASSERT_FATAL(n <= 16);
        for (size_t k = 0; k < n; k++) {
            types[k] = q->types[k] == 't' ? 25 : q->types[k] == 'b' ? 17 : 20;
        }
        char name[32];
        (void)snprintf(name, sizeof(name), "plan%zu", i);
        PGresult *res = PQprepare(pg, name, q->sql, (int)n, types);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "\n  %s: %s", q->sql, PQresultErrorMessage(res));
        }
        CU_ASSERT_EQUAL_FATAL(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        char sql[256];
        int len = snprintf(sql, sizeof(sql), "EXPLAIN EXECUTE %s(", name);
        for (size_t k = 0; k < n; k++) {
            len += snprintf(sql + len, sizeof(sql) - (size_t)len, "%sNULL", k == 0 ? "" : ", ");
        }
        (void)snprintf(sql + len, sizeof(sql) - (size_t)len, ")");
        res = PQexec(pg, n == 0 ? "SELECT 1" : sql);
        const ExecStatusType explained = PQresultStatus(res);
        if (explained != PGRES_TUPLES_OK) {
            fprintf(stderr, "\n  %s: %s", sql, PQresultErrorMessage(res));
            PQclear(res);
            PQfinish(pg);
        }
        CU_ASSERT_EQUAL_FATAL(explained, PGRES_TUPLES_OK);
        for (int row = 0; row < PQntuples(res); row++) {
            const char *line = PQgetvalue(res, row, 0);
            const bool full_scan = strstr(line, "Seq Scan on cert") != NULL ||
                                   strstr(line, "Seq Scan on txn") != NULL ||
                                   strstr(line, "Seq Scan on pending") != NULL;
            if (full_scan) {
                fprintf(stderr, "\n  full scan: %s\n  in: %s\n", line, q->sql);
            }
            CU_ASSERT_FALSE(full_scan);
        }
        PQclear(res);
        checked++;
    }
    CU_ASSERT(checked >= 15);
    PQfinish(pg);
}

// ---------------------------------------------------------------------------------------------
// Group commit under concurrent submitters

#define TEST_STORE_THREADS    4
#define TEST_STORE_PER_THREAD 2000

typedef struct test_submitter {
    store *s;
    test_item *items;
    uint32_t id;
    uint32_t completed;
    uint32_t failed;
    uint32_t twice;
} test_submitter;

static void test_store_drain(test_submitter *t, cm_cq *q)
{
    for (cm_cq_node *n = cm_cq_drain(q); n != NULL;) {
        cm_cq_node *next = n->next;
        CU_ASSERT_EQUAL(n->kind, CM_CQ_KIND_STORE_JOB);
        test_item *it = ((store_job *)n)->user;
        it->completions++;
        t->twice += it->completions > 1 ? 1u : 0u;
        t->failed += cm_ok(it->job.result) ? 0u : 1u;
        t->completed++;
        n = next;
    }
}

static void *test_store_submit_main(void *arg)
{
    test_submitter *t = arg;
    cm_cq q = {NULL, -1};
    if (!cm_ok(cm_cq_init(&q))) {
        return NULL;
    }
    // Singles and batches of 8 alternate, and completions are drained as they come, like an
    // I/O loop would.
    uint32_t i = 0;
    while (i < TEST_STORE_PER_THREAD) {
        if ((i / 8) % 2 == 0 || i + 8 > TEST_STORE_PER_THREAD) {
            test_store_fill(&t->items[i], &q, "devices", i, t->id, STORE_CERT_VALID, 0);
            store_submit(t->s, &t->items[i].job);
            i++;
        } else {
            store_job *batch[8];
            for (uint32_t k = 0; k < 8; k++) {
                test_store_fill(&t->items[i + k], &q, "devices", i + k, t->id,
                                STORE_CERT_UNCONFIRMED, 5000);
                batch[k] = &t->items[i + k].job;
            }
            store_submit_batch(t->s, batch, 8);
            i += 8;
        }
        test_store_drain(t, &q);
    }
    while (t->completed < TEST_STORE_PER_THREAD && cm_cq_wait(&q, 30000)) {
        test_store_drain(t, &q);
    }
    cm_cq_cleanup(&q);
    return NULL;
}

static void test_store_group_commit_concurrent_submitters(void)
{
    store *s = test_store_open_at("group.db", STORE_SYNC_FULL);
    test_submitter sub[TEST_STORE_THREADS];
    pthread_t th[TEST_STORE_THREADS];
    for (uint32_t i = 0; i < TEST_STORE_THREADS; i++) {
        sub[i] = (test_submitter){.s = s, .id = i};
        sub[i].items = calloc(TEST_STORE_PER_THREAD, sizeof(test_item));
        CU_ASSERT_PTR_NOT_NULL_FATAL(sub[i].items);
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, test_store_submit_main, &sub[i]), 0);
    }
    uint32_t completed = 0;
    for (uint32_t i = 0; i < TEST_STORE_THREADS; i++) {
        (void)pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(sub[i].completed, TEST_STORE_PER_THREAD);
        CU_ASSERT_EQUAL(sub[i].failed, 0);
        CU_ASSERT_EQUAL(sub[i].twice, 0);
        for (uint32_t k = 0; k < TEST_STORE_PER_THREAD; k++) {
            completed += sub[i].items[k].completions == 1 ? 1u : 0u;
        }
        free(sub[i].items);
    }
    const uint32_t jobs = TEST_STORE_THREADS * TEST_STORE_PER_THREAD;
    CU_ASSERT_EQUAL(completed, jobs);

    store_stats st;
    store_get_stats(s, &st);
    printf("\n    group commit: %llu jobs in %llu commits (avg batch %.1f, max %llu), "
           "commit time total %.1f ms ",
           (unsigned long long)st.jobs, (unsigned long long)st.commits,
           st.commits ? (double)st.jobs / (double)st.commits : 0.0,
           (unsigned long long)st.max_batch, (double)st.commit_ns_total / 1e6);
    CU_ASSERT_EQUAL(st.jobs, jobs);
    CU_ASSERT_EQUAL(st.jobs_failed, 0);
    CU_ASSERT_EQUAL(st.commit_failures, 0);
    CU_ASSERT_EQUAL(st.queue_depth, 0);
    // Batching happened: far fewer transactions than jobs (batches of 8 alone guarantee < 1/2).
    CU_ASSERT(st.commits < jobs / 2);
    uint64_t hist_commits = 0;
    uint64_t hist_jobs = 0;
    for (int b = 0; b < STORE_HIST_BUCKETS; b++) {
        hist_commits += st.batch_hist[b];
        hist_jobs += st.job_us_hist[b];
    }
    CU_ASSERT_EQUAL(hist_commits, st.commits);
    CU_ASSERT_EQUAL(hist_jobs, st.jobs);
    // PostgreSQL: one round trip per batch, however many jobs it held (pipeline mode).
    CU_ASSERT_EQUAL(st.round_trips, g_pg ? st.commits : 0);
    CU_ASSERT_EQUAL(st.reconnects, 0);

    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, NULL, STORE_CERT_ANY), jobs);
    store_reader_close(r);
    test_store_close_checked(s);
}

static void test_store_close_commits_everything_queued(void)
{
    store *s = test_store_open_at("close.db", STORE_SYNC_NORMAL);
    enum { N = 1000 };
    test_item *items = calloc(N, sizeof(test_item));
    CU_ASSERT_PTR_NOT_NULL_FATAL(items);
    cm_cq q = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&q));
    for (uint32_t i = 0; i < N; i++) {
        test_store_fill(&items[i], &q, "devices", i, 0, STORE_CERT_VALID, 0);
        store_submit(s, &items[i].job);
    }
    store_close(s); // returns only after every job completed
    uint32_t ok = 0;
    for (cm_cq_node *n = cm_cq_drain(&q); n != NULL; n = n->next) {
        ok += cm_ok(((store_job *)n)->result) ? 1u : 0u;
    }
    CU_ASSERT_EQUAL(ok, N);
    cm_cq_cleanup(&q);
    free(items);
    CU_ASSERT_EQUAL(test_store_db_int("close.db", "SELECT count(*) FROM cert"), N);
}

// The child of the crash test: submit, wait for every completion, then vanish without closing
// anything (no checkpoint, no destructor), with the writer thread still running.
static void test_store_crash_child(const char *url)
{
    store *s = NULL;
    if (!cm_ok(store_open(&s, url, NULL))) {
        _exit(2);
    }
    enum { N = 600, B = 50 };
    static test_item items[N];
    for (uint32_t base = 0; base < N; base += B) {
        store_job *batch[B];
        for (uint32_t k = 0; k < B; k++) {
            test_store_fill(&items[base + k], NULL, "devices", base + k, 7, STORE_CERT_VALID, 0);
            batch[k] = &items[base + k].job;
        }
        if (!cm_ok(store_run_batch(s, batch, B))) {
            _exit(3);
        }
    }
    _exit(0);
}

static void test_store_completed_records_survive_a_crash(void)
{
    char url[600];
    test_store_url(url, sizeof(url), "crash.db");
    (void)fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        test_store_crash_child(url);
    }
    int status = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_FATAL(WIFEXITED(status));
    CU_ASSERT_EQUAL_FATAL(WEXITSTATUS(status), 0);
    if (g_pg) {
        // The database server crashes too (no shutdown checkpoint): its next start replays
        // the WAL, which must hold every commit the child saw completed.
        CU_ASSERT_FATAL(test_pg_stop(&g_cluster, true));
        CU_ASSERT_FATAL(test_pg_resume(&g_cluster));
    }

    // The child never closed: its commits sit in the WAL, which recovery replays.
    store *s = test_store_open_at("crash.db", STORE_SYNC_FULL);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, "devices", STORE_CERT_VALID), 600);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    test_item last;
    test_store_fill(&last, NULL, "devices", 599, 7, STORE_CERT_VALID, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", last.job.u.cert.serial));
    CU_ASSERT(cm_span_eq(c.cert_der, cm_span_make(g_cert_der, sizeof(g_cert_der))));
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

// test_store_insert_range inserts certificates |from| .. |to|-1 in batches of |batch| (one
// commit each).
static void test_store_insert_range(store *s, uint32_t from, uint32_t to, uint32_t batch,
                                    uint32_t salt)
{
    enum { MAX_BATCH = 16 };
    CU_ASSERT_FATAL(batch >= 1 && batch <= MAX_BATCH);
    test_item items[MAX_BATCH];
    for (uint32_t n = from; n < to; n += batch) {
        store_job *jobs[MAX_BATCH];
        uint32_t k = 0;
        for (; k < batch && n + k < to; k++) {
            test_store_fill(&items[k], NULL, "devices", n + k, salt, STORE_CERT_VALID, 0);
            jobs[k] = &items[k].job;
        }
        TEST_ASSERT_OK(store_run_batch(s, jobs, k));
    }
}

// test_store_wait_checkpoint commits single certificates (numbered from |*next|) until the
// background checkpointer has finished a pass and the writer has topped it up, at most 10 s.
static void test_store_wait_checkpoint(store *s, uint64_t topups_before, uint32_t *next,
                                       uint32_t salt)
{
    store_stats st;
    for (int i = 0; i < 10000; i++) {
        store_get_stats(s, &st);
        if (st.checkpoint_topups > topups_before) {
            return;
        }
        test_store_insert_range(s, *next, *next + 1, 1, salt);
        (*next)++;
        (void)usleep(1000);
    }
    CU_FAIL_FATAL("no background checkpoint within 10 s");
}

static void test_store_background_checkpoints_restart_the_wal(void)
{
    char url[600];
    store *s = NULL;
    store_options o = {.sync = STORE_SYNC_NORMAL, .checkpoint_pages = 64};
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), "ckpt.db"), &o));

    // 600 certificates in commits of 4: the WAL passes 64 pages many times over.
    test_store_insert_range(s, 0, 600, 4, 11);
    uint32_t next = 600;
    store_stats st;
    store_get_stats(s, &st);
    // The checkpointer is a thread of its own: on a loaded machine its first pass may still be
    // on the way (seen in CI-like runs beside other builds), so wait for it, bounded.
    for (int i = 0; i < 1000 && st.checkpoints == 0; i++) {
        (void)usleep(10000);
        store_get_stats(s, &st);
    }
    CU_ASSERT(st.checkpoints >= 1);
    // A pass may be running now; wait for the next top-up.
    test_store_wait_checkpoint(s, st.checkpoint_topups, &next, 11);
    // After the top-up the WAL is fully copied: the next commit starts it from the beginning.
    test_store_insert_range(s, next, next + 1, 1, 11);
    next++;
    store_get_stats(s, &st);
    CU_ASSERT(st.wal_pages < 64);
    CU_ASSERT(st.wal_pages > 0);
    // Nothing is lost: every row is there after close (which checkpoints the rest).
    test_store_close_checked(s);
    CU_ASSERT_EQUAL(test_store_db_int("ckpt.db", "SELECT count(*) FROM cert"), (int64_t)next);

    // Without background checkpoints the same WAL would hold hundreds of pages: the default
    // (1000 pages) does not trigger one in 100 commits of one certificate.
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), "ckpt-default.db"), NULL));
    test_store_insert_range(s, 0, 100, 1, 12);
    store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.checkpoints, 0);
    CU_ASSERT(st.wal_pages > 64);
    test_store_close_checked(s);
}

// A reader that keeps an old snapshot stops the WAL from restarting: writes go on, nothing is
// lost, and once the reader lets go the next pass and top-up restart the WAL again.
static void test_store_checkpoint_waits_for_a_long_reader(void)
{
    char url[600];
    char path[512];
    store *s = NULL;
    store_options o = {.sync = STORE_SYNC_NORMAL, .checkpoint_pages = 32};
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), "ckpt-reader.db"), &o));
    test_store_insert_range(s, 0, 50, 5, 13);

    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(test_store_path(path, sizeof(path), "ckpt-reader.db"),
                                          &db, SQLITE_OPEN_READONLY, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, "BEGIN; SELECT count(*) FROM cert;", NULL, NULL, NULL),
                          SQLITE_OK);

    uint32_t next = 50;
    store_stats st;
    store_get_stats(s, &st);
    uint64_t topups = st.checkpoint_topups;
    test_store_insert_range(s, next, next + 400, 4, 13);
    next += 400;
    test_store_wait_checkpoint(s, topups, &next, 13);
    test_store_insert_range(s, next, next + 1, 1, 13);
    next++;
    store_get_stats(s, &st);
    CU_ASSERT(st.wal_pages >= 32); // the old snapshot pins the WAL: it could not restart

    // The reader still sees its snapshot, not the rows written since.
    sqlite3_stmt *q = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "SELECT count(*) FROM cert", -1, &q, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT_EQUAL(sqlite3_column_int64(q, 0), 50);
    (void)sqlite3_finalize(q);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    (void)sqlite3_close(db);

    store_get_stats(s, &st);
    test_store_wait_checkpoint(s, st.checkpoint_topups, &next, 13);
    test_store_insert_range(s, next, next + 1, 1, 13);
    next++;
    store_get_stats(s, &st);
    CU_ASSERT(st.wal_pages < 32);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    CU_ASSERT_EQUAL(test_store_count(r, "devices", STORE_CERT_VALID), next);
    store_reader_close(r);
    test_store_close_checked(s);
}

// ---------------------------------------------------------------------------------------------
// Schema 3 (issue 14): reservations, key reuse, supersede, per-credential limits, the status
// cache.

// test_rsv is one reservation job with the storage its spans point at.
typedef struct test_rsv {
    store_job job;
    uint8_t tid[16];
    uint8_t serial[16];
    uint8_t spki[32];
} test_rsv;

// test_store_rsv makes |v| a reservation of transaction |tid_n| with serial |serial_n| for the
// key numbered |key_n| (the same numbering as test_store_fill's spki), credential "line-7".
static void test_store_rsv(test_rsv *v, store_op op, const char *ca, uint32_t tid_n,
                           uint32_t serial_n, uint32_t key_n)
{
    store_job_init(&v->job, op, NULL);
    memset(v->tid, 0x5a, sizeof(v->tid));
    memcpy(v->tid + 12, &tid_n, sizeof(tid_n));
    memset(v->serial, 0, sizeof(v->serial));
    v->serial[0] = 0x40;
    memcpy(v->serial + 8, &serial_n, sizeof(serial_n));
    for (size_t i = 0; i < sizeof(v->spki); i++) {
        v->spki[i] = (uint8_t)(key_n + i);
    }
    store_reservation *r = &v->job.u.rsv;
    r->ca = ca;
    r->transaction_id = cm_span_make(v->tid, sizeof(v->tid));
    r->serial = cm_span_make(v->serial, sizeof(v->serial));
    r->state = 5;
    r->protection = STORE_AUTH_MAC;
    r->credential = CM_SPAN_LIT("line-7");
    r->expires_at = 1700000900;
    r->spki_sha256 = cm_span_make(v->spki, sizeof(v->spki));
    r->check_key = true;
}

// test_store_record_rsv records the certificate of reservation |v| (at CA "devices", key
// |key_n|) as the server does: the certificate under the reserved serial and the transaction
// row updated to name it, in one batch.
static cm_result test_store_record_rsv(store *s, const test_rsv *v, uint32_t key_n)
{
    test_item rec;
    test_store_fill(&rec, NULL, "devices", key_n, 0, STORE_CERT_VALID, 0);
    memcpy(rec.serial, v->serial, sizeof(rec.serial));
    store_job tu;
    store_job_init(&tu, STORE_OP_TXN_UPDATE, NULL);
    tu.u.txn = (store_txn){.ca = "devices",
                           .transaction_id = cm_span_make(v->tid, 16),
                           .state = 2,
                           .serial = cm_span_make(v->serial, 16),
                           .protection = STORE_AUTH_MAC,
                           .expires_at = 1700000900};
    store_job *rb[2] = {&rec.job, &tu};
    return store_run_batch(s, rb, 2);
}

// test_store_sync waits until everything submitted before committed: a reservation completes
// before its batch's commit (store_job_durable), a durable job after it completes after it.
static void test_store_sync(store *s)
{
    store_job j;
    store_job_init(&j, STORE_OP_TXN_EXPIRE, NULL);
    j.u.ref.time = 1;
    TEST_ASSERT_OK(store_run(s, &j));
}

static cm_result test_store_state(store *s, const char *ca, cm_span serial, store_cert_state *out)
{
    test_store_sync(s);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_result res = store_cert_state_get(r, out, ca, serial);
    store_reader_close(r);
    return res;
}

// A database written by schema 2 is migrated on open: its rows are kept and read as before
// (nothing replaces, nothing superseded), a transaction packed for certConf is unpacked into
// the new columns, the new indexes exist, and the new operations work on the old rows.
// test_store_build_v2 writes a store of schema 2 as main's certmint left it: a certificate, a
// plain transaction and one whose certConf data the server packed (flags in the state's bits
// 8.. (p10cr, PBMAC1 -> 3), the request's nonce after the server's, the signer certificate
// after its hash).
static void test_store_build_v2(const char *name)
{
    if (g_pg) {
        char url[600];
        (void)test_store_url(url, sizeof(url), name); // creates the schema
        char schema[96];
        PGconn *pg = test_store_pg_connect(test_store_schema(schema, sizeof(schema), name));
        for (size_t i = 0; i < 2; i++) {
            for (size_t part = 0; store_pg_migration_sql(i, part) != NULL; part++) {
                (void)test_store_pg_sql(pg, store_pg_migration_sql(i, part));
            }
        }
        (void)test_store_pg_sql(
            pg, "INSERT INTO certmint_meta VALUES ('schema_version', '2');"
                "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after,"
                " spki_sha256, status, transaction_id, requester_kind, cert_der, issued_at)"
                " VALUES ('devices', '\\x4101', '\\x3000', 'CN=old', 1, 4000000000,"
                " decode(repeat('00', 32), 'hex'), 'valid', '\\x0102', 1, '\\x3000', 1);"
                "INSERT INTO txn (ca, transaction_id, state, serial, protection, expires_at)"
                " VALUES ('devices', '\\x0102', 2, '\\x4101', 1, 9);"
                "INSERT INTO txn (ca, transaction_id, state, sender_nonce, protection,"
                " credential, expires_at) VALUES ('devices', '\\x0103', 769,"
                " decode(repeat('00', 16) || repeat('11', 16), 'hex'), 2,"
                " decode(repeat('22', 32) || '3003020107', 'hex'), 4000000000);");
        PQfinish(pg);
        return;
    }
    char path[512];
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(test_store_path(path, sizeof(path), name), &db), SQLITE_OK);
    for (size_t i = 0; i < 2; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(store_sqlite_migration_sql(i));
        CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, store_sqlite_migration_sql(i), NULL, NULL, NULL),
                              SQLITE_OK);
    }
    test_item it;
    test_store_fill(&it, NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    CU_ASSERT_EQUAL_FATAL(
        sqlite3_exec(db,
                     "PRAGMA application_id = 1129139796; PRAGMA user_version = 2;"
                     "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before,"
                     " not_after, spki_sha256, status, transaction_id, requester_kind, cert_der,"
                     " issued_at) VALUES ('devices', X'4101', X'3000', 'CN=old', 1, 4000000000,"
                     " zeroblob(32), 'valid', X'0102', 1, X'3000', 1);"
                     "INSERT INTO txn (ca, transaction_id, state, serial, protection,"
                     " expires_at) VALUES ('devices', X'0102', 2, X'4101', 1, 9);"
                     // A transaction main's schema 2 packed for certConf: flags in the state's
                     // bits 8.. (p10cr, PBMAC1 -> 3), the request's nonce after the server's,
                     // the signer certificate after its hash.
                     "INSERT INTO txn (ca, transaction_id, state, sender_nonce, protection,"
                     " credential, expires_at) VALUES ('devices', X'0103', 769,"
                     " X'0000000000000000000000000000000011111111111111111111111111111111', 2,"
                     " X'2222222222222222222222222222222222222222222222222222222222222222"
                     "3003020107', 4000000000);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    (void)sqlite3_close(db);
}

static void test_store_migrates_schema_2(void)
{
    test_store_build_v2("v2.db");
    CU_ASSERT_EQUAL(test_store_has_index("v2.db", "cert_by_key"), 0);

    store *s = test_store_open_at("v2.db", STORE_SYNC_NORMAL);
    static const uint8_t k_old[] = {0x41, 0x01};
    const cm_span old = cm_span_make(k_old, sizeof(k_old));
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", old));
    CU_ASSERT_STRING_EQUAL(c.subject_text, "CN=old");
    CU_ASSERT_EQUAL(c.replaces.len, 0);
    CU_ASSERT_EQUAL(c.superseded_at, 0);
    CU_ASSERT_FALSE(c.revoke_replaced);
    store_cert_state st;
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", old));
    CU_ASSERT_EQUAL(st.status, STORE_CERT_VALID);
    CU_ASSERT_FALSE(st.update_pending);
    // The unpacked transaction: each part in its column; the plain one untouched.
    store_txn t;
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("\x01\x03")));
    CU_ASSERT_EQUAL(t.state, 1);
    CU_ASSERT_EQUAL(t.flags, 3);
    static const uint8_t k_zero[16] = {0},
                         k_ones[16] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                                       0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11};
    CU_ASSERT(cm_span_eq(t.sender_nonce, cm_span_make(k_zero, sizeof(k_zero))));
    CU_ASSERT(cm_span_eq(t.request_nonce, cm_span_make(k_ones, sizeof(k_ones))));
    CU_ASSERT_EQUAL(t.credential.len, 32);
    CU_ASSERT_TRUE(t.credential.len == 32 && t.credential.p[0] == 0x22 &&
                   t.credential.p[31] == 0x22);
    CU_ASSERT(cm_span_eq(t.signer_cert, CM_SPAN_LIT("\x30\x03\x02\x01\x07")));
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("\x01\x02")));
    CU_ASSERT_TRUE(t.state == 2 && t.flags == 0 && t.request_nonce.len == 0 &&
                   t.signer_cert.len == 0 && t.sender_nonce.len == 0);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    // The old row's key (32 zero bytes) counts for the key-reuse rule; a kur of it reserves.
    test_rsv v;
    test_store_rsv(&v, STORE_OP_TXN_RESERVE, "devices", 1, 1, 0);
    memset(v.spki, 0, sizeof(v.spki));
    TEST_ASSERT_CODE(store_run(s, &v.job), STORE_E_KEY_REUSED);
    test_store_rsv(&v, STORE_OP_TXN_RESERVE, "devices", 1, 1, 7);
    v.job.u.rsv.replaces = old;
    TEST_ASSERT_OK(store_run(s, &v.job));
    test_store_close_checked(s);
    CU_ASSERT_EQUAL(test_store_db_int("v2.db", test_store_version_sql()), STORE_SCHEMA_VERSION);
    CU_ASSERT(STORE_SCHEMA_VERSION >= 3); // 3 and later migrations on top
    static const char *const k_new[] = {"cert_by_key", "cert_by_replaces", "txn_reserved_serial",
                                        "txn_pending_key", "txn_pending_update"};
    for (size_t i = 0; i < sizeof(k_new) / sizeof(k_new[0]); i++) {
        CU_ASSERT_EQUAL(test_store_has_index("v2.db", k_new[i]), 1);
    }
    CU_ASSERT_EQUAL(test_store_db_int("v2.db", "SELECT count(*) FROM credential_use"), 0);
    CU_ASSERT_EQUAL(test_store_db_int("v2.db", "SELECT count(*) FROM cert"), 1);
    CU_ASSERT_EQUAL(test_store_db_int("v2.db", "SELECT count(*) FROM txn"), 3);
}

static void test_store_reservations(void)
{
    store *s = test_store_open_at("reserve.db", STORE_SYNC_NORMAL);
    test_item issued;
    test_store_fill(&issued, NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &issued.job));
    test_rsv v, w;

    // A fresh transaction, serial and key: reserved; the same transactionID again: in use.
    test_store_rsv(&v, STORE_OP_TXN_RESERVE, "devices", 1, 100, 50);
    TEST_ASSERT_OK(store_run(s, &v.job));
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 1, 101, 51);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_TXN_IN_USE);
    // The same transactionID at another CA is another transaction.
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "servers", 1, 101, 51);
    TEST_ASSERT_OK(store_run(s, &w.job));
    // A serial already reserved, or already on a certificate of the CA: draw another.
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 100, 52);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_DUPLICATE_SERIAL);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 0, 52);
    memcpy(w.serial, issued.serial, sizeof(w.serial));
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_DUPLICATE_SERIAL);
    // A key this CA certified, or one a pending reservation holds: refused; allowed without
    // the check (allow_key_reuse); another CA's key is not this CA's business.
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 102, 1);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_KEY_REUSED);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 102, 50);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_KEY_REUSED);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 102, 50);
    w.job.u.rsv.check_key = false;
    TEST_ASSERT_OK(store_run(s, &w.job));
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "servers", 3, 103, 1);
    TEST_ASSERT_OK(store_run(s, &w.job));
    // A refused reservation left nothing behind: the transactionID of one is still free.
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 4, 104, 54);
    TEST_ASSERT_OK(store_run(s, &w.job));

    // Recording: the certificate under the reserved serial, the transaction row updated to
    // name it (its foreign key holds), in one batch; the key is then the certificate's.
    TEST_ASSERT_OK(test_store_record_rsv(s, &v, 50));
    // Unreserving it now fails (it has its certificate); its key stays certified.
    test_store_rsv(&w, STORE_OP_TXN_UNRESERVE, "devices", 1, 100, 50);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_TXN_NOT_FOUND);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 5, 105, 50);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_KEY_REUSED);
    // A reservation given back frees its transactionID and its key.
    test_store_rsv(&w, STORE_OP_TXN_UNRESERVE, "devices", 4, 104, 54);
    TEST_ASSERT_OK(store_run(s, &w.job));
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 4, 104, 54);
    TEST_ASSERT_OK(store_run(s, &w.job));

    // Certificates the CA revoked as never accepted (cessationOfOperation: the sweep, a
    // certConf rejection) do not hold their key; any other revocation does.
    test_item gone;
    test_store_fill(&gone, NULL, "devices", 60, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &gone.job));
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", gone.job.u.cert.serial,
                                     1700000100, STORE_REASON_CESSATION_OF_OPERATION));
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 6, 106, 60);
    TEST_ASSERT_OK(store_run(s, &w.job));
    test_store_fill(&gone, NULL, "devices", 61, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &gone.job));
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", gone.job.u.cert.serial,
                                     1700000100, STORE_REASON_KEY_COMPROMISE));
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 7, 107, 61);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_KEY_REUSED);
    test_store_close_checked(s);
}

// A batch of reservations only is not committed on its own (store.c: store_execute_batch): its
// transaction stays open for the next batch, so the reservation and the record that follows it
// cost one commit, and a reader (another connection) sees the reservation only with it. A
// reservation nothing follows is committed when the writer has waited reservation_defer_ms
// (here long, so the test does not race the writer), or when the store closes.
static void test_store_reservation_shares_the_record_commit(void)
{
    char url[600];
    store *s = NULL;
    store_options o = {.sync = STORE_SYNC_FULL, .reservation_defer_ms = 60000};
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), "defer.db"), &o));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    store_stats st0, st1;
    store_get_stats(s, &st0);
    test_rsv v;
    test_store_rsv(&v, STORE_OP_TXN_RESERVE, "devices", 1, 100, 50);
    TEST_ASSERT_OK(store_run(s, &v.job));
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_txn t;
    TEST_ASSERT_CODE(store_txn_get(r, &a, &t, "devices", cm_span_make(v.tid, 16)),
                     STORE_E_TXN_NOT_FOUND); // executed and reported, not committed yet
    // The writer's own rules see it: the same transactionID again is in use.
    test_rsv w;
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 1, 101, 51);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_TXN_IN_USE);
    store_get_stats(s, &st1);
    CU_ASSERT_EQUAL(st1.commits, st0.commits);
    // The record: one commit for it and the reservation.
    TEST_ASSERT_OK(test_store_record_rsv(s, &v, 50));
    store_get_stats(s, &st1);
    CU_ASSERT_EQUAL(st1.commits - st0.commits, 1);
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", cm_span_make(v.tid, 16)));
    CU_ASSERT(cm_span_eq(t.serial, cm_span_make(v.serial, 16)));
    // A reservation left open when the store closes is committed by the close.
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 102, 52);
    TEST_ASSERT_OK(store_run(s, &w.job));
    TEST_ASSERT_CODE(store_txn_get(r, &a, &t, "devices", cm_span_make(w.tid, 16)),
                     STORE_E_TXN_NOT_FOUND);
    cm_arena_cleanup(&a);
    store_reader_close(r);
    store_close(s);
    CU_ASSERT_EQUAL(test_store_db_int("defer.db", "SELECT count(*) FROM txn"), 2);
    CU_ASSERT_EQUAL(test_store_db_int("defer.db", "SELECT count(*) FROM cert"), 1);
}

static void test_store_credential_limits(void)
{
    store *s = test_store_open_at("limits.db", STORE_SYNC_NORMAL);
    // A limit of 2, with three requests in one batch (as concurrent requests would arrive):
    // exactly two reserve.
    test_rsv v[4];
    store_job *batch[3];
    for (uint32_t i = 0; i < 3; i++) {
        test_store_rsv(&v[i], STORE_OP_TXN_RESERVE, "devices", 10 + i, 10 + i, 10 + i);
        v[i].job.u.rsv.max_uses = 2;
        batch[i] = &v[i].job;
    }
    TEST_ASSERT_CODE(store_run_batch(s, batch, 3), STORE_E_LIMIT);
    TEST_ASSERT_OK(v[0].job.result);
    TEST_ASSERT_OK(v[1].job.result);
    TEST_ASSERT_CODE(v[2].job.result, STORE_E_LIMIT);
    test_store_sync(s);
    CU_ASSERT_EQUAL(test_store_db_int("limits.db", "SELECT used FROM credential_use"), 2);
    // Another credential, and the same one at another CA, count separately.
    test_store_rsv(&v[3], STORE_OP_TXN_RESERVE, "devices", 20, 20, 20);
    v[3].job.u.rsv.max_uses = 2;
    v[3].job.u.rsv.credential = CM_SPAN_LIT("line-8");
    TEST_ASSERT_OK(store_run(s, &v[3].job));
    test_store_rsv(&v[3], STORE_OP_TXN_RESERVE, "servers", 21, 21, 21);
    v[3].job.u.rsv.max_uses = 2;
    TEST_ASSERT_OK(store_run(s, &v[3].job));
    // A reservation given back returns its use: one more may reserve, then the limit holds.
    test_store_rsv(&v[3], STORE_OP_TXN_UNRESERVE, "devices", 10, 10, 10);
    v[3].job.u.rsv.max_uses = 2;
    TEST_ASSERT_OK(store_run(s, &v[3].job));
    test_store_rsv(&v[3], STORE_OP_TXN_RESERVE, "devices", 30, 30, 30);
    v[3].job.u.rsv.max_uses = 2;
    TEST_ASSERT_OK(store_run(s, &v[3].job));
    test_store_rsv(&v[3], STORE_OP_TXN_RESERVE, "devices", 31, 31, 31);
    v[3].job.u.rsv.max_uses = 2;
    TEST_ASSERT_CODE(store_run(s, &v[3].job), STORE_E_LIMIT);
    // A one-time credential (limit 1).
    test_store_rsv(&v[3], STORE_OP_TXN_RESERVE, "devices", 40, 40, 40);
    v[3].job.u.rsv.max_uses = 1;
    v[3].job.u.rsv.credential = CM_SPAN_LIT("once-1");
    TEST_ASSERT_OK(store_run(s, &v[3].job));
    test_store_rsv(&v[3], STORE_OP_TXN_RESERVE, "devices", 41, 41, 41);
    v[3].job.u.rsv.max_uses = 1;
    v[3].job.u.rsv.credential = CM_SPAN_LIT("once-1");
    TEST_ASSERT_CODE(store_run(s, &v[3].job), STORE_E_LIMIT);
    test_store_close_checked(s);
}

static void test_store_key_update_supersedes(void)
{
    store *s = test_store_open_at("supersede.db", STORE_SYNC_NORMAL);
    test_item old[3];
    for (uint32_t i = 0; i < 3; i++) {
        test_store_fill(&old[i], NULL, "devices", 1 + i, 0, STORE_CERT_VALID, 0);
        TEST_ASSERT_OK(store_run(s, &old[i].job));
    }
    store_cert_state st;
    // (1) An update of old[0] under explicit confirmation: reserved, then its certificate
    // inserted unconfirmed; the old one is "update pending" throughout and refuses another
    // reservation; the confirmation supersedes it (not revoked: revoke_replaced is off).
    test_rsv v, w;
    test_store_rsv(&v, STORE_OP_TXN_RESERVE, "devices", 1, 11, 11);
    v.job.u.rsv.replaces = old[0].job.u.cert.serial;
    TEST_ASSERT_OK(store_run(s, &v.job));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[0].job.u.cert.serial, &st));
    CU_ASSERT_TRUE(st.update_pending);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 2, 12, 12);
    w.job.u.rsv.replaces = old[0].job.u.cert.serial;
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_UPDATE_PENDING);
    test_item neu;
    test_store_fill(&neu, NULL, "devices", 11, 0, STORE_CERT_UNCONFIRMED, 1700000300);
    memcpy(neu.serial, v.serial, sizeof(neu.serial));
    neu.job.u.cert.replaces = old[0].job.u.cert.serial;
    store_job tu;
    store_job_init(&tu, STORE_OP_TXN_UPDATE, NULL);
    tu.u.txn = (store_txn){.ca = "devices",
                           .transaction_id = cm_span_make(v.tid, 16),
                           .state = 1,
                           .serial = cm_span_make(v.serial, 16),
                           .protection = STORE_AUTH_MAC,
                           .expires_at = 1700000900};
    store_job *rec[2] = {&neu.job, &tu};
    TEST_ASSERT_OK(store_run_batch(s, rec, 2));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[0].job.u.cert.serial, &st));
    CU_ASSERT_TRUE(st.update_pending);
    CU_ASSERT_EQUAL(st.superseded_at, 0);
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_UPDATE_PENDING);
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_CONFIRM, "devices", neu.job.u.cert.serial,
                                     1700000100, 0));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[0].job.u.cert.serial, &st));
    CU_ASSERT_EQUAL(st.superseded_at, 1700000100);
    CU_ASSERT_EQUAL(st.status, STORE_CERT_VALID);
    CU_ASSERT_FALSE(st.update_pending);
    // Superseded: no second update.
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 3, 13, 13);
    w.job.u.rsv.replaces = old[0].job.u.cert.serial;
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_UPDATE_PENDING);

    // (2) implicitConfirm with revoke_on_update: the old certificate is superseded and revoked
    // (superseded) in the insert's own transaction.
    test_item imp;
    test_store_fill(&imp, NULL, "devices", 21, 0, STORE_CERT_VALID, 0);
    imp.job.u.cert.replaces = old[1].job.u.cert.serial;
    imp.job.u.cert.revoke_replaced = true;
    TEST_ASSERT_OK(store_run(s, &imp.job));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[1].job.u.cert.serial, &st));
    CU_ASSERT_EQUAL(st.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(st.reason, STORE_REASON_SUPERSEDED);
    CU_ASSERT_EQUAL(st.superseded_at, 1700000000);

    // (3) A rejected update (the new certificate revoked at certConf) leaves the old one valid,
    // not pending, and updatable again; the revocation of a replaced certificate is a
    // revocation like any (revoked old: the update is refused as revoked).
    test_item rej;
    test_store_fill(&rej, NULL, "devices", 31, 0, STORE_CERT_UNCONFIRMED, 1700000300);
    rej.job.u.cert.replaces = old[2].job.u.cert.serial;
    TEST_ASSERT_OK(store_run(s, &rej.job));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[2].job.u.cert.serial, &st));
    CU_ASSERT_TRUE(st.update_pending);
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", rej.job.u.cert.serial,
                                     1700000100, STORE_REASON_CESSATION_OF_OPERATION));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[2].job.u.cert.serial, &st));
    CU_ASSERT_FALSE(st.update_pending);
    CU_ASSERT_EQUAL(st.status, STORE_CERT_VALID);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 4, 14, 14);
    w.job.u.rsv.replaces = old[2].job.u.cert.serial;
    TEST_ASSERT_OK(store_run(s, &w.job));
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 5, 15, 15);
    w.job.u.rsv.replaces = old[1].job.u.cert.serial;
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_ALREADY_REVOKED);
    test_store_rsv(&w, STORE_OP_TXN_RESERVE, "devices", 6, 16, 16);
    w.job.u.rsv.replaces = CM_SPAN_LIT("\x40\x77");
    TEST_ASSERT_CODE(store_run(s, &w.job), STORE_E_NOT_FOUND);
    // The sweep revokes an unconfirmed update: the old certificate is no longer pending.
    test_store_rsv(&w, STORE_OP_TXN_UNRESERVE, "devices", 4, 14, 14);
    TEST_ASSERT_OK(store_run(s, &w.job));
    test_store_fill(&rej, NULL, "devices", 32, 0, STORE_CERT_UNCONFIRMED, 1700000300);
    rej.job.u.cert.replaces = old[2].job.u.cert.serial;
    TEST_ASSERT_OK(store_run(s, &rej.job));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[2].job.u.cert.serial, &st));
    CU_ASSERT_TRUE(st.update_pending);
    store_job sweep;
    store_job_init(&sweep, STORE_OP_SWEEP, NULL);
    sweep.u.ref.time = 1700000400;
    sweep.u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    TEST_ASSERT_OK(store_run(s, &sweep));
    TEST_ASSERT_OK(test_store_state(s, "devices", old[2].job.u.cert.serial, &st));
    CU_ASSERT_FALSE(st.update_pending);
    test_store_close_checked(s);
}

// The status cache answers repeated lookups without the database, and every change the store
// commits (or another process makes) is seen by the next lookup.
static void test_store_status_cache(void)
{
    store *s = test_store_open_at("cache.db", STORE_SYNC_NORMAL);
    test_item it[2];
    for (uint32_t i = 0; i < 2; i++) {
        test_store_fill(&it[i], NULL, "devices", 1 + i, 0, STORE_CERT_VALID, 0);
        TEST_ASSERT_OK(store_run(s, &it[i].job));
    }
    const cm_span serial = it[0].job.u.cert.serial;
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    store_cert_state st;
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_FALSE(st.from_cache);
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_TRUE(st.from_cache);
    CU_ASSERT_EQUAL(st.status, STORE_CERT_VALID);
    CU_ASSERT_EQUAL(st.not_after, 1700000000 + 365 * 86400);
    // Unknown certificates are not cached; another CA's serial is another key.
    TEST_ASSERT_CODE(store_cert_state_get(r, &st, "servers", serial), STORE_E_NOT_FOUND);
    TEST_ASSERT_CODE(store_cert_state_get(r, &st, "servers", serial), STORE_E_NOT_FOUND);

    // Hold, release, revoke: each committed change is seen at once.
    const uint64_t gen = store_status_generation(s);
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", serial, 1700000100,
                                     STORE_REASON_CERTIFICATE_HOLD));
    CU_ASSERT_NOT_EQUAL(store_status_generation(s), gen);
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_FALSE(st.from_cache);
    CU_ASSERT_EQUAL(st.status, STORE_CERT_HOLD);
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_TRUE(st.from_cache);
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_RELEASE, "devices", serial, 0, 0));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_EQUAL(st.status, STORE_CERT_VALID);
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_TRUE(st.from_cache);
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", serial, 1700000100,
                                     STORE_REASON_KEY_COMPROMISE));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_EQUAL(st.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(st.reason, STORE_REASON_KEY_COMPROMISE);

    // Another process revokes (the certmint tool, another node): the writer notices at its
    // next batch and clears the cache before that batch's jobs complete.
    const cm_span other = it[1].job.u.cert.serial;
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", other));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", other));
    CU_ASSERT_TRUE(st.from_cache);
    const uint64_t before_other = store_status_generation(s);
    test_store_db_exec("cache.db", "UPDATE cert SET status = 'revoked', revoked_at = 5, "
                                   "reason = 1 WHERE serial = (SELECT serial FROM cert "
                                   "WHERE status = 'valid')");
    // PostgreSQL hears of it at once (LISTEN/NOTIFY, store_pg_listen.c), before any batch.
    for (int i = 0; g_pg && i < 200 && store_status_generation(s) == before_other; i++) {
        (void)usleep(10 * 1000);
    }
    CU_ASSERT(!g_pg || store_status_generation(s) != before_other);
    store_job expire;
    store_job_init(&expire, STORE_OP_TXN_EXPIRE, NULL);
    expire.u.ref.time = 1;
    TEST_ASSERT_OK(store_run(s, &expire));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", other));
    CU_ASSERT_FALSE(st.from_cache);
    CU_ASSERT_EQUAL(st.status, STORE_CERT_REVOKED);
    // store_status_invalidate: what another backend's change notification calls.
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", other));
    CU_ASSERT_TRUE(st.from_cache);
    store_status_invalidate(s, "devices", other);
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", other));
    CU_ASSERT_FALSE(st.from_cache);
    store_status_invalidate_all(s);
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", other));
    CU_ASSERT_FALSE(st.from_cache);
    store_stats stats;
    store_get_stats(s, &stats);
    CU_ASSERT(stats.status_hits >= 5);
    CU_ASSERT(stats.status_misses >= 7);
    CU_ASSERT(stats.status_flushes >= 2);
    store_reader_close(r);
    test_store_close_checked(s);

    // Off: every lookup reads the database.
    char url[600];
    store_options o = {.sync = STORE_SYNC_NORMAL, .status_cache_off = true};
    TEST_ASSERT_OK(store_open(&s, test_store_url(url, sizeof(url), "cache.db"), &o));
    TEST_ASSERT_OK(store_reader_open(s, &r));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", serial));
    CU_ASSERT_FALSE(st.from_cache);
    store_reader_close(r);
    store_close(s);
}

// The cache's own rules: a read older than an invalidation is not cached; a full set evicts
// round-robin; entries past max_age are not used.
static void test_store_status_cache_rules(void)
{
    store_cache *c = NULL;
    TEST_ASSERT_OK(store_cache_new(&c, 4, 0)); // one set of four
    store_cert_state st = {.status = STORE_CERT_VALID, .reason = -1, .not_after = 9};
    store_cert_state got;
    uint8_t serial[8][2];
    for (uint8_t i = 0; i < 8; i++) {
        serial[i][0] = 0x40;
        serial[i][1] = i;
    }
    // A status read before an invalidation of anything is dropped.
    uint64_t gen = store_cache_generation(c);
    store_cache_invalidate(c, "devices", cm_span_make(serial[7], 2));
    store_cache_put(c, "devices", cm_span_make(serial[0], 2), &st, gen);
    CU_ASSERT_FALSE(store_cache_get(c, "devices", cm_span_make(serial[0], 2), &got));
    gen = store_cache_generation(c);
    store_cache_invalidate_all(c);
    store_cache_put(c, "devices", cm_span_make(serial[0], 2), &st, gen);
    CU_ASSERT_FALSE(store_cache_get(c, "devices", cm_span_make(serial[0], 2), &got));
    // Five entries in a set of four: the first one inserted goes.
    for (uint8_t i = 0; i < 5; i++) {
        store_cache_put(c, "devices", cm_span_make(serial[i], 2), &st, store_cache_generation(c));
    }
    CU_ASSERT_FALSE(store_cache_get(c, "devices", cm_span_make(serial[0], 2), &got));
    for (uint8_t i = 1; i < 5; i++) {
        CU_ASSERT_TRUE(store_cache_get(c, "devices", cm_span_make(serial[i], 2), &got));
        CU_ASSERT_TRUE(got.from_cache);
        CU_ASSERT_EQUAL(got.not_after, 9);
    }
    CU_ASSERT_FALSE(store_cache_get(c, "servers", cm_span_make(serial[1], 2), &got));
    store_cache_free(c);
    // max_age: an entry older than 1 ms is not used.
    TEST_ASSERT_OK(store_cache_new(&c, 64, 1));
    store_cache_put(c, "devices", cm_span_make(serial[0], 2), &st, store_cache_generation(c));
    CU_ASSERT_TRUE(store_cache_get(c, "devices", cm_span_make(serial[0], 2), &got));
    (void)usleep(5000);
    CU_ASSERT_FALSE(store_cache_get(c, "devices", cm_span_make(serial[0], 2), &got));
    store_cache_free(c);
}

static void test_store_result_names(void)
{
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(STORE_E_DUPLICATE_SERIAL)),
                           "STORE_E_DUPLICATE_SERIAL");
    CU_ASSERT_STRING_EQUAL(cm_result_text(cm_result_make(STORE_E_TXN_IN_USE)),
                           "transactionID already in use");
    CU_ASSERT_EQUAL(cm_result_class(cm_result_make(STORE_E_BUSY)), CM_CLASS_AGAIN);
    CU_ASSERT_EQUAL(CM_CODE_DETAIL(STORE_E_FULL) >> 8, 0x5);
    // A database that cannot be reached: retry later, answered systemUnavail.
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(STORE_E_UNAVAILABLE)),
                           "STORE_E_UNAVAILABLE");
    CU_ASSERT_EQUAL(cm_result_class(cm_result_make(STORE_E_UNAVAILABLE)), CM_CLASS_AGAIN);
    CU_ASSERT_EQUAL(cm_code_failinfo(STORE_E_UNAVAILABLE), CM_FAIL_SYSTEM_UNAVAIL);
}

// ---------------------------------------------------------------------------------------------
// Health, the leader lock, store copy (both backends)

static void test_store_leader_and_health(void)
{
    store *s = test_store_open_at("leader1.db", STORE_SYNC_FULL);
    CU_ASSERT(store_healthy(s));
    bool leader = false;
    TEST_ASSERT_OK(store_leader_try(s, &leader));
    CU_ASSERT(leader); // the only node (SQLite: always)
    TEST_ASSERT_OK(store_leader_try(s, &leader));
    CU_ASSERT(leader);
    store_stats st;
    store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.reconnects, 0);
    test_store_close_checked(s);
}

// test_copy_wait is an enrolment that a store copy must carry on: its reservation, and (for the
// waiting ones) its pending row. The copy tests keep three in g_copy_waits: [0] waits under load
// (QUEUED), [1] was approved and is not delivered yet (APPROVED, its reservation counted a use of
// the limited credential "line-9"), [2] is a plain reservation (no pending row) of a key update
// of a valid certificate, whose certificate is being signed.
typedef struct test_copy_wait {
    store_reservation rsv;
    store_pending pend;
    uint8_t tid[16];
    uint8_t serial[16];
    uint8_t spki[32];
    uint8_t tbs[24];
    int64_t id; // the pending row's, after the ADD
} test_copy_wait;

static test_copy_wait g_copy_waits[3];

// test_copy_wait_fill makes |w| the enrolment numbered |n| (transactionID, serial, key and TBS
// derived from it) of CA "devices", from the MAC credential |credential| (limited to
// |max_uses| certificates when > 0), waiting in |state|.
static void test_copy_wait_fill(test_copy_wait *w, uint8_t n, const char *credential,
                                uint32_t max_uses, store_pending_state state)
{
    memset(w, 0, sizeof(*w));
    memset(w->tid, 0x5c, sizeof(w->tid));
    w->tid[15] = n;
    w->serial[0] = 0x52;
    w->serial[15] = n;
    for (size_t i = 0; i < sizeof(w->spki); i++) {
        w->spki[i] = (uint8_t)(0xa0 + n * 7 + i);
    }
    memset(w->tbs, 0x30 + n, sizeof(w->tbs));
    w->rsv = (store_reservation){.ca = "devices",
                                 .transaction_id = cm_span_make(w->tid, sizeof(w->tid)),
                                 .serial = cm_span_make(w->serial, sizeof(w->serial)),
                                 .state = 5,
                                 .protection = STORE_AUTH_MAC,
                                 .credential = cm_span_make(credential, strlen(credential)),
                                 .expires_at = 1800000000,
                                 .spki_sha256 = cm_span_make(w->spki, sizeof(w->spki)),
                                 .check_key = true,
                                 .max_uses = max_uses};
    store_pending *p = &w->pend;
    p->ca = "devices";
    p->transaction_id = w->rsv.transaction_id;
    p->body_type = 2;
    p->cert_req_id = n;
    p->why = state == STORE_PENDING_APPROVAL ? STORE_PENDING_WHY_APPROVAL : STORE_PENDING_WHY_LOAD;
    p->state = state;
    p->profile = state == STORE_PENDING_APPROVAL ? "manual" : NULL;
    p->subject = "CN=waiting,O=line-9";
    p->key_type = "EC P-256";
    p->requester = credential;
    p->created_at = 1700000500 + n;
    p->expires_at = 1700086400 + n;
    p->tbs = cm_span_make(w->tbs, sizeof(w->tbs));
    p->serial = w->rsv.serial;
    p->flags = 0x21;
    p->rsv = &w->rsv;
    p->txn_flags = 3;
    p->request_nonce = CM_SPAN_LIT("request-nonce-16");
}

// test_copy_waits_make adds g_copy_waits to |s| (whose certificate |kur_of| [2] updates).
static void test_copy_waits_make(store *s, cm_span kur_of)
{
    test_copy_wait *w = g_copy_waits;
    test_copy_wait_fill(&w[0], 1, "line-8", 0, STORE_PENDING_QUEUED);
    test_copy_wait_fill(&w[1], 2, "line-9", 1, STORE_PENDING_APPROVAL);
    test_copy_wait_fill(&w[2], 3, "line-8", 0, STORE_PENDING_QUEUED);
    w[2].rsv.replaces = kur_of;
    for (int i = 0; i < 2; i++) {
        store_job add;
        store_job_init(&add, STORE_OP_PENDING_ADD, NULL);
        add.u.pend = w[i].pend;
        TEST_ASSERT_OK(store_run(s, &add));
        w[i].id = (int64_t)add.out_value;
    }
    store_job job;
    store_job_init(&job, STORE_OP_PENDING_DECIDE, NULL);
    job.u.pop = (store_pending_op){.id = w[1].id, .approve = true, .time = 1700000600};
    TEST_ASSERT_OK(store_run(s, &job));
    store_job_init(&job, STORE_OP_TXN_RESERVE, NULL);
    job.u.rsv = w[2].rsv;
    TEST_ASSERT_OK(store_run(s, &job));
}

// test_copy_txns collects every transaction row, with copies in |a|.
typedef struct test_copy_txns {
    cm_arena *a;
    store_txn t[8];
    size_t n;
} test_copy_txns;

static bool test_copy_txn_span(cm_arena *a, cm_span *s)
{
    if (s->len == 0) {
        return true;
    }
    uint8_t *p = cm_arena_memdup(a, *s);
    *s = cm_span_make(p, s->len);
    return p != NULL;
}

static bool test_copy_txn_collect(void *ctx, const store_txn *t)
{
    test_copy_txns *l = ctx;
    if (l->n == 8) {
        return false;
    }
    store_txn *d = &l->t[l->n++];
    *d = *t;
    d->ca = (const char *)cm_arena_memdup(l->a, cm_span_make(t->ca, strlen(t->ca) + 1));
    return d->ca != NULL && test_copy_txn_span(l->a, &d->transaction_id) &&
           test_copy_txn_span(l->a, &d->sender_nonce) && test_copy_txn_span(l->a, &d->serial) &&
           test_copy_txn_span(l->a, &d->credential) &&
           test_copy_txn_span(l->a, &d->request_nonce) &&
           test_copy_txn_span(l->a, &d->signer_cert) &&
           test_copy_txn_span(l->a, &d->reserved_serial) &&
           test_copy_txn_span(l->a, &d->spki_sha256) && test_copy_txn_span(l->a, &d->replaces);
}

static bool test_copy_txn_eq(const store_txn *x, const store_txn *y)
{
    return strcmp(x->ca, y->ca) == 0 && cm_span_eq(x->transaction_id, y->transaction_id) &&
           x->state == y->state && cm_span_eq(x->sender_nonce, y->sender_nonce) &&
           cm_span_eq(x->serial, y->serial) && x->protection == y->protection &&
           cm_span_eq(x->credential, y->credential) && x->expires_at == y->expires_at &&
           x->flags == y->flags && cm_span_eq(x->request_nonce, y->request_nonce) &&
           cm_span_eq(x->signer_cert, y->signer_cert) &&
           cm_span_eq(x->reserved_serial, y->reserved_serial) &&
           cm_span_eq(x->spki_sha256, y->spki_sha256) && cm_span_eq(x->replaces, y->replaces);
}

static bool test_copy_text_eq(const char *x, const char *y)
{
    return (x == NULL && y == NULL) || (x != NULL && y != NULL && strcmp(x, y) == 0);
}

static bool test_copy_pending_eq(const store_pending *x, const store_pending *y)
{
    return x->id == y->id && strcmp(x->ca, y->ca) == 0 &&
           cm_span_eq(x->transaction_id, y->transaction_id) && x->body_type == y->body_type &&
           x->cert_req_id == y->cert_req_id && x->why == y->why && x->state == y->state &&
           test_copy_text_eq(x->profile, y->profile) && strcmp(x->subject, y->subject) == 0 &&
           strcmp(x->key_type, y->key_type) == 0 && strcmp(x->requester, y->requester) == 0 &&
           x->created_at == y->created_at && x->expires_at == y->expires_at &&
           x->claimed_at == y->claimed_at && x->decided_at == y->decided_at &&
           cm_span_eq(x->tbs, y->tbs) && cm_span_eq(x->serial, y->serial) && x->flags == y->flags &&
           x->fail_info == y->fail_info && test_copy_text_eq(x->status_text, y->status_text) &&
           cm_span_eq(x->replaces, y->replaces) && x->counted == y->counted;
}

// test_copy_same_waits checks that |dst| holds the transactions (reservations included) and the
// pending rows of |src|, column by column.
static void test_copy_same_waits(store_reader *src, store_reader *dst)
{
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    test_copy_txns tx = {.a = &ar};
    test_copy_txns ty = {.a = &ar};
    TEST_ASSERT_OK(store_txn_list(src, test_copy_txn_collect, &tx));
    TEST_ASSERT_OK(store_txn_list(dst, test_copy_txn_collect, &ty));
    CU_ASSERT_EQUAL(tx.n, 5);
    CU_ASSERT_EQUAL_FATAL(ty.n, tx.n);
    size_t reserved = 0;
    for (size_t i = 0; i < tx.n; i++) {
        CU_ASSERT(test_copy_txn_eq(&tx.t[i], &ty.t[i]));
        reserved += ty.t[i].reserved_serial.len != 0 ? 1 : 0;
    }
    CU_ASSERT_EQUAL(reserved, 3);
    for (int i = 0; i < 2; i++) {
        const test_copy_wait *w = &g_copy_waits[i];
        store_pending x;
        store_pending y;
        TEST_ASSERT_OK(store_pending_get(src, &ar, &x, "devices", w->pend.transaction_id));
        TEST_ASSERT_OK(store_pending_get(dst, &ar, &y, "devices", w->pend.transaction_id));
        CU_ASSERT(test_copy_pending_eq(&x, &y));
        CU_ASSERT_EQUAL(y.id, w->id);
        CU_ASSERT_EQUAL(y.state, i == 0 ? STORE_PENDING_QUEUED : STORE_PENDING_APPROVED);
        CU_ASSERT_EQUAL(y.counted, i == 1);
    }
    cm_arena_cleanup(&ar);
}

// test_copy_continue carries on in the copy |s| where the source stopped: the queued request
// is claimed, issued under its reserved serial and delivered; the approved one is claimed, and
// its rejection gives back the use it counted; the reservation still holds its transactionID,
// serial, key and key update; a new waiting request gets an id after the copied ones.
static void test_copy_continue(store *s)
{
    static const uint8_t k_der[] = {0x30, 0x03, 0x02, 0x01, 0x07};
    const test_copy_wait *w = g_copy_waits;
    store_job j;
    store_job_init(&j, STORE_OP_PENDING_CLAIM, NULL);
    j.u.pop = (store_pending_op){.id = w[0].id, .time = 1700000700, .stale_before = 1700000000};
    TEST_ASSERT_OK(store_run(s, &j));
    const store_cert c = {.ca = "devices",
                          .serial = w[0].rsv.serial,
                          .subject_der = cm_span_make(k_subject_der, sizeof(k_subject_der)),
                          .subject_text = "CN=waiting,O=line-9",
                          .not_before = 1700000000,
                          .not_after = 1800000000,
                          .spki_sha256 = w[0].rsv.spki_sha256,
                          .status = STORE_CERT_UNCONFIRMED,
                          .transaction_id = w[0].rsv.transaction_id,
                          .requester_kind = STORE_AUTH_MAC,
                          .requester = w[0].rsv.credential,
                          .cert_der = cm_span_make(k_der, sizeof(k_der)),
                          .issued_at = 1700000701,
                          .confirm_deadline = 1700087000};
    store_job_init(&j, STORE_OP_PENDING_ISSUE, NULL);
    j.u.pop = (store_pending_op){.id = w[0].id,
                                 .time = 1700000701,
                                 .cert = &c,
                                 .txn_state = 1,
                                 .txn_expires_at = 1700090000};
    TEST_ASSERT_OK(store_run(s, &j));
    store_job_init(&j, STORE_OP_PENDING_DELIVER, NULL);
    j.u.pop = (store_pending_op){.ca = "devices",
                                 .transaction_id = w[0].rsv.transaction_id,
                                 .time = 1700000702,
                                 .sender_nonce = CM_SPAN_LIT("delivered-nonce!"),
                                 .txn_expires_at = 1700001000,
                                 .confirm_deadline = 1700000999};
    TEST_ASSERT_OK(store_run(s, &j));
    // The approved one: claimable; until its rejection the credential's only use is taken.
    store_job_init(&j, STORE_OP_PENDING_CLAIM, NULL);
    j.u.pop = (store_pending_op){.id = w[1].id, .time = 1700000703, .stale_before = 1700000000};
    TEST_ASSERT_OK(store_run(s, &j));
    test_copy_wait more;
    test_copy_wait_fill(&more, 4, "line-9", 1, STORE_PENDING_QUEUED);
    store_job_init(&j, STORE_OP_TXN_RESERVE, NULL);
    j.u.rsv = more.rsv;
    TEST_ASSERT_CODE(store_run(s, &j), STORE_E_LIMIT);
    store_job_init(&j, STORE_OP_PENDING_DECIDE, NULL);
    j.u.pop = (store_pending_op){
        .id = w[1].id, .time = 1700000704, .fail_info = 2, .status_text = "no", .keep_s = 60};
    TEST_ASSERT_OK(store_run(s, &j));
    store_job_init(&j, STORE_OP_PENDING_ADD, NULL);
    j.u.pend = more.pend;
    TEST_ASSERT_OK(store_run(s, &j));
    CU_ASSERT((int64_t)j.out_value > w[1].id);
    // The reservation: its transactionID, serial, key and key update are still taken.
    test_copy_wait other;
    test_copy_wait_fill(&other, 5, "line-8", 0, STORE_PENDING_QUEUED);
    store_reservation v = w[2].rsv;
    v.serial = other.rsv.serial;
    v.spki_sha256 = other.rsv.spki_sha256;
    v.replaces = cm_span_make(NULL, 0);
    store_job_init(&j, STORE_OP_TXN_RESERVE, NULL);
    j.u.rsv = v;
    TEST_ASSERT_CODE(store_run(s, &j), STORE_E_TXN_IN_USE);
    v = other.rsv;
    v.serial = w[2].rsv.serial;
    j.u.rsv = v;
    TEST_ASSERT_CODE(store_run(s, &j), STORE_E_DUPLICATE_SERIAL);
    v = other.rsv;
    v.spki_sha256 = w[2].rsv.spki_sha256;
    j.u.rsv = v;
    TEST_ASSERT_CODE(store_run(s, &j), STORE_E_KEY_REUSED);
    v = other.rsv;
    v.replaces = w[2].rsv.replaces;
    j.u.rsv = v;
    TEST_ASSERT_CODE(store_run(s, &j), STORE_E_UPDATE_PENDING);
    j.u.rsv = other.rsv;
    TEST_ASSERT_OK(store_run(s, &j));
    // What the flow wrote reads back.
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    store_pending p;
    TEST_ASSERT_OK(store_pending_get(r, &ar, &p, "devices", w[0].rsv.transaction_id));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_DELIVERED);
    TEST_ASSERT_OK(store_pending_get(r, &ar, &p, "devices", w[1].rsv.transaction_id));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_REJECTED);
    store_txn t;
    TEST_ASSERT_OK(store_txn_get(r, &ar, &t, "devices", w[0].rsv.transaction_id));
    CU_ASSERT(cm_span_eq(t.serial, w[0].rsv.serial));
    CU_ASSERT(cm_span_eq(t.sender_nonce, CM_SPAN_LIT("delivered-nonce!")));
    TEST_ASSERT_OK(store_reader_check(r));
    cm_arena_cleanup(&ar);
    store_reader_close(r);
}

// test_store_fill_instance gives |s| a bit of everything: certificates in every status (with
// revocation times and reasons), transactions with and without a certificate, two CAs' CRL
// states (numbers handed out, a stored CRL, revisions), a credential's count, and the waiting
// enrolments of g_copy_waits (two pending rows, one reservation).
static void test_store_fill_instance(store *s, test_item *it, size_t n)
{
    CU_ASSERT_FATAL(n >= 10);
    store_job *batch[16];
    for (uint32_t i = 0; i < n; i++) {
        test_store_fill(&it[i], NULL, i % 4 == 3 ? "servers" : "devices", i + 1, 5,
                        i % 2 == 0 ? STORE_CERT_UNCONFIRMED : STORE_CERT_VALID, 4000 + i);
        batch[i] = &it[i].job;
    }
    TEST_ASSERT_OK(store_run_batch(s, batch, n));
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", it[1].job.u.cert.serial,
                                     1234, STORE_REASON_KEY_COMPROMISE));
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "devices", it[5].job.u.cert.serial,
                                     1240, STORE_REASON_CERTIFICATE_HOLD));
    TEST_ASSERT_OK(test_store_ref_op(s, STORE_OP_CERT_REVOKE, "servers", it[3].job.u.cert.serial,
                                     1250, STORE_REASON_SUPERSEDED));
    TEST_ASSERT_OK(test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-copy-1", 2,
                                     it[0].job.u.cert.serial, 9000));
    TEST_ASSERT_OK(test_store_txn_op(s, STORE_OP_TXN_CREATE, "devices", "tid-copy-2", 1,
                                     cm_span_make(NULL, 0), 9100));
    store_job next;
    store_job_init(&next, STORE_OP_CRL_NEXT_NUMBER, NULL);
    next.u.ref.ca = "devices";
    TEST_ASSERT_OK(store_run(s, &next));
    TEST_ASSERT_OK(store_run(s, &next));
    static const uint8_t crl[] = {0x30, 0x03, 0x02, 0x01, 0x02};
    store_job put;
    store_job_init(&put, STORE_OP_CRL_PUT, NULL);
    put.u.crl.ca = "devices";
    put.u.crl.crl_number = 2;
    put.u.crl.crl_der = cm_span_make(crl, sizeof(crl));
    put.u.crl.this_update = 1300;
    put.u.crl.next_update = 1400;
    put.u.crl.built_revision = 1;
    TEST_ASSERT_OK(store_run(s, &put));
    test_copy_waits_make(s, it[9].job.u.cert.serial);
}

static bool test_store_cert_eq(const store_cert *a, const store_cert *b)
{
    return strcmp(a->ca, b->ca) == 0 && cm_span_eq(a->serial, b->serial) &&
           cm_span_eq(a->subject_der, b->subject_der) &&
           strcmp(a->subject_text, b->subject_text) == 0 && a->not_before == b->not_before &&
           a->not_after == b->not_after && cm_span_eq(a->spki_sha256, b->spki_sha256) &&
           a->status == b->status && a->revoked_at == b->revoked_at && a->reason == b->reason &&
           cm_span_eq(a->transaction_id, b->transaction_id) &&
           a->requester_kind == b->requester_kind && cm_span_eq(a->requester, b->requester) &&
           cm_span_eq(a->cert_der, b->cert_der) && a->issued_at == b->issued_at &&
           a->confirm_deadline == b->confirm_deadline;
}

// test_store_same_contents checks that |dst| holds exactly what |src| holds (the rows made by
// test_store_fill_instance).
static void test_store_same_contents(store_reader *src, store_reader *dst, const test_item *it,
                                     size_t n)
{
    store_copy_counts a;
    store_copy_counts b;
    TEST_ASSERT_OK(store_copy_count(src, &a));
    TEST_ASSERT_OK(store_copy_count(dst, &b));
    CU_ASSERT_EQUAL(a.certs, n);
    CU_ASSERT_EQUAL(a.txns, 5);
    CU_ASSERT_EQUAL(a.crl_states, 2);
    CU_ASSERT_EQUAL(a.uses, 1);
    CU_ASSERT_EQUAL(a.pending, 2);
    CU_ASSERT_EQUAL(b.certs, a.certs);
    CU_ASSERT_EQUAL(b.txns, a.txns);
    CU_ASSERT_EQUAL(b.crl_states, a.crl_states);
    CU_ASSERT_EQUAL(b.uses, a.uses);
    CU_ASSERT_EQUAL(b.pending, a.pending);
    test_copy_same_waits(src, dst);
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    for (size_t i = 0; i < n; i++) {
        store_cert x;
        store_cert y;
        const store_cert *c = &it[i].job.u.cert;
        TEST_ASSERT_OK(store_cert_get(src, &ar, &x, c->ca, c->serial));
        TEST_ASSERT_OK(store_cert_get(dst, &ar, &y, c->ca, c->serial));
        CU_ASSERT(test_store_cert_eq(&x, &y));
    }
    store_txn tx;
    store_txn ty;
    TEST_ASSERT_OK(store_txn_get(src, &ar, &tx, "devices", CM_SPAN_LIT("tid-copy-1")));
    TEST_ASSERT_OK(store_txn_get(dst, &ar, &ty, "devices", CM_SPAN_LIT("tid-copy-1")));
    CU_ASSERT(tx.state == ty.state && tx.expires_at == ty.expires_at &&
              cm_span_eq(tx.serial, ty.serial) && cm_span_eq(tx.sender_nonce, ty.sender_nonce) &&
              tx.protection == ty.protection && cm_span_eq(tx.credential, ty.credential));
    store_cert by_txn;
    TEST_ASSERT_OK(store_cert_get_by_txn(dst, &ar, &by_txn, "devices", CM_SPAN_LIT("tid-copy-1")));
    CU_ASSERT(cm_span_eq(by_txn.serial, it[0].job.u.cert.serial));
    store_crl cx;
    store_crl cy;
    TEST_ASSERT_OK(store_crl_get(src, &ar, &cx, "devices"));
    TEST_ASSERT_OK(store_crl_get(dst, &ar, &cy, "devices"));
    CU_ASSERT(cx.crl_number == cy.crl_number && cx.numbers_issued == cy.numbers_issued &&
              cx.revision == cy.revision && cx.built_revision == cy.built_revision &&
              cm_span_eq(cx.crl_der, cy.crl_der) && cx.this_update == cy.this_update &&
              cx.next_update == cy.next_update);
    CU_ASSERT_EQUAL(cy.numbers_issued, 2);
    CU_ASSERT_EQUAL(cy.revision, 2);
    // The CRL entries come out the same, in the same (issue) order.
    test_revoked ra = {0};
    test_revoked rb = {0};
    TEST_ASSERT_OK(store_revoked_list(src, "devices", 0, test_store_collect_revoked, &ra));
    TEST_ASSERT_OK(store_revoked_list(dst, "devices", 0, test_store_collect_revoked, &rb));
    CU_ASSERT_EQUAL(ra.n, 2);
    CU_ASSERT_EQUAL(rb.n, ra.n);
    CU_ASSERT(memcmp(ra.serial_no, rb.serial_no, sizeof(ra.serial_no)) == 0);
    cm_arena_cleanup(&ar);
}

// test_store_copy_check copies |src| into a fresh |dst| (refused twice without clear: the rows
// are there), then with clear, and compares.
static void test_store_copy_check(store *src, store *dst, const test_item *it, size_t n)
{
    store_reader *rs = NULL;
    store_reader *rd = NULL;
    TEST_ASSERT_OK(store_reader_open(src, &rs));
    TEST_ASSERT_OK(store_reader_open(dst, &rd));
    store_copy_counts done = {0};
    TEST_ASSERT_OK(store_copy(dst, rs, false, &done));
    CU_ASSERT_EQUAL(done.certs, n);
    CU_ASSERT_EQUAL(done.txns, 5);
    CU_ASSERT_EQUAL(done.crl_states, 2);
    CU_ASSERT_EQUAL(done.pending, 2);
    test_store_same_contents(rs, rd, it, n);
    // Again without clearing: the certificates collide.
    memset(&done, 0, sizeof(done));
    TEST_ASSERT_CODE(store_copy(dst, rs, false, &done), STORE_E_DUPLICATE_SERIAL);
    CU_ASSERT_EQUAL(done.certs, 0);
    // With clearing: the same result as the first time.
    memset(&done, 0, sizeof(done));
    TEST_ASSERT_OK(store_copy(dst, rs, true, &done));
    CU_ASSERT_EQUAL(done.certs, n);
    CU_ASSERT_EQUAL(done.pending, 2);
    test_store_same_contents(rs, rd, it, n);
    TEST_ASSERT_OK(store_reader_check(rd));
    store_reader_close(rs);
    store_reader_close(rd);
}

static void test_store_copy_moves_every_row(void)
{
    test_item it[12];
    store *src = test_store_open_at("copy-src.db", STORE_SYNC_NORMAL);
    test_store_fill_instance(src, it, 12);
    store *dst = test_store_open_at("copy-dst.db", STORE_SYNC_NORMAL);
    test_store_copy_check(src, dst, it, 12);
    // A copy row that breaks the schema's rules is refused before it reaches the database.
    store_job bad;
    store_job_init(&bad, STORE_OP_COPY_CERT, NULL);
    bad.u.cert = it[0].job.u.cert;
    bad.u.cert.status = STORE_CERT_HOLD;
    bad.u.cert.reason = STORE_REASON_KEY_COMPROMISE;
    TEST_ASSERT_CODE(store_run(dst, &bad), STORE_E_INVALID);
    store_job_init(&bad, STORE_OP_COPY_PENDING, NULL);
    bad.u.pend = g_copy_waits[0].pend;
    bad.u.pend.id = 99;
    bad.u.pend.state = STORE_PENDING_REJECTED; // without its failInfo
    bad.u.pend.fail_info = -1;
    TEST_ASSERT_CODE(store_run(dst, &bad), STORE_E_INVALID);
    bad.u.pend.state = STORE_PENDING_SIGNING; // never claimed
    TEST_ASSERT_CODE(store_run(dst, &bad), STORE_E_INVALID);
    store_job_init(&bad, STORE_OP_COPY_TXN, NULL);
    bad.u.txn = (store_txn){.ca = "devices",
                            .transaction_id = CM_SPAN_LIT("tid-bad"),
                            .spki_sha256 = CM_SPAN_LIT("short key hash")};
    TEST_ASSERT_CODE(store_run(dst, &bad), STORE_E_INVALID);
    // The copy carries on where the source stopped.
    test_copy_continue(dst);
    test_store_close_checked(dst);
    test_store_close_checked(src);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only

// store copy between the backends: SQLite into PostgreSQL (moving an instance) and back.
static void test_store_pg_copy_from_and_to_sqlite(void)
{
    char path[512];
    char url[600];
    test_item it[12];
    store *lite = NULL;
    (void)snprintf(url, sizeof(url), "sqlite:%s",
                   test_store_path(path, sizeof(path), "copy-lite.db"));
    TEST_ASSERT_OK(store_open(&lite, url, NULL));
    test_store_fill_instance(lite, it, 12);
    store *pg = test_store_open_at("copy-pg.db", STORE_SYNC_FULL);
    test_store_copy_check(lite, pg, it, 12);

    store *back = NULL;
    (void)snprintf(url, sizeof(url), "sqlite:%s",
                   test_store_path(path, sizeof(path), "copy-back.db"));
    TEST_ASSERT_OK(store_open(&back, url, NULL));
    test_store_copy_check(pg, back, it, 12);
    // The certificate ids follow the source's order, so listings page the same way.
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(pg, &r));
    test_listing l = {.ordered = true};
    store_filter f = {.status = STORE_CERT_ANY};
    TEST_ASSERT_OK(store_cert_list(r, &f, test_store_collect_list, &l));
    CU_ASSERT_EQUAL(l.n, 12);
    CU_ASSERT(l.ordered);
    store_reader_close(r);
    // Each copy carries on where its source stopped.
    test_copy_continue(back);
    test_copy_continue(pg);
    test_store_close_checked(back);
    test_store_close_checked(pg);
    test_store_close_checked(lite);
}

// A job the database itself refuses (here: a subject that is not valid UTF-8, which SQLite
// would store as it is) fails alone; the rest of its batch commits, in a few more round trips.
static void test_store_pg_job_refused_by_the_database_fails_alone(void)
{
    store *s = test_store_open_at("refused.db", STORE_SYNC_FULL);
    test_item it[3];
    store_job *batch[3];
    for (uint32_t i = 0; i < 3; i++) {
        test_store_fill(&it[i], NULL, "devices", i + 1, 0, STORE_CERT_VALID, 0);
        batch[i] = &it[i].job;
    }
    static const char k_bad_utf8[] = "CN=\xff\xfe";
    it[1].job.u.cert.subject_text = k_bad_utf8;
    TEST_ASSERT_CODE(store_run_batch(s, batch, 3), STORE_E_INVALID);
    TEST_ASSERT_OK(it[0].job.result);
    TEST_ASSERT_CODE(it[1].job.result, STORE_E_INVALID);
    TEST_ASSERT_OK(it[2].job.result);
    store_stats st;
    store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.commits, 1);
    CU_ASSERT_EQUAL(st.commit_failures, 0);
    // The multi-row attempt and its rollback, the attempt one statement per job (which names
    // the job) and its rollback, the batch without the job.
    CU_ASSERT_EQUAL(st.round_trips, 5);
    CU_ASSERT(store_healthy(s));
    test_store_close_checked(s);
    CU_ASSERT_EQUAL(test_store_db_int("refused.db", "SELECT count(*) FROM cert"), 2);
}

typedef struct test_crl_numbers {
    store *s;
    uint64_t got[100];
    int failed;
} test_crl_numbers;

static void *test_store_crl_numbers_main(void *arg)
{
    test_crl_numbers *t = arg;
    for (int i = 0; i < 100; i++) {
        store_job j;
        store_job_init(&j, STORE_OP_CRL_NEXT_NUMBER, NULL);
        j.u.ref.ca = "devices";
        t->failed += cm_ok(store_run(t->s, &j)) ? 0 : 1;
        t->got[i] = j.out_value;
    }
    return NULL;
}

// Two stores on one database act as two nodes: serials unique per CA across them, a
// transactionID reserved once, a certificate confirmed or revoked on the other node than the
// one that issued it, CRL numbers allocated by both at once without a duplicate or a gap.
static void test_store_pg_nodes_share_one_database(void)
{
    store *a = test_store_open_at("nodes.db", STORE_SYNC_FULL);
    store *b = test_store_open_at("nodes.db", STORE_SYNC_FULL);
    test_item ia;
    test_item ib;
    test_store_fill(&ia, NULL, "devices", 1, 0, STORE_CERT_UNCONFIRMED, 5000);
    test_store_fill(&ib, NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(a, &ia.job));
    TEST_ASSERT_CODE(store_run(b, &ib.job), STORE_E_DUPLICATE_SERIAL);
    cm_span serial = ia.job.u.cert.serial;
    TEST_ASSERT_OK(test_store_ref_op(b, STORE_OP_CERT_CONFIRM, "devices", serial, 100, 0));
    TEST_ASSERT_CODE(test_store_ref_op(a, STORE_OP_CERT_CONFIRM, "devices", serial, 100, 0),
                     STORE_E_ALREADY_CONFIRMED);
    TEST_ASSERT_OK(test_store_txn_op(a, STORE_OP_TXN_CREATE, "devices", "tid-nodes", 1,
                                     cm_span_make(NULL, 0), 9000));
    TEST_ASSERT_CODE(test_store_txn_op(b, STORE_OP_TXN_CREATE, "devices", "tid-nodes", 1,
                                       cm_span_make(NULL, 0), 9000),
                     STORE_E_TXN_IN_USE);
    TEST_ASSERT_OK(
        test_store_txn_op(b, STORE_OP_TXN_UPDATE, "devices", "tid-nodes", 2, serial, 9000));
    store_reader *ra = NULL;
    TEST_ASSERT_OK(store_reader_open(a, &ra));
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    store_cert c;
    TEST_ASSERT_OK(store_cert_get_by_txn(ra, &ar, &c, "devices", CM_SPAN_LIT("tid-nodes")));
    CU_ASSERT_EQUAL(c.status, STORE_CERT_VALID);

    // Both nodes revoke the same certificate: one wins, the other is told it is revoked, and
    // the CA's revision moves once.
    test_item more[2];
    for (uint32_t i = 0; i < 2; i++) {
        test_store_fill(&more[i], NULL, "devices", 10 + i, 0, STORE_CERT_VALID, 0);
        TEST_ASSERT_OK(store_run(a, &more[i].job));
    }
    store_job ra_job;
    store_job rb_job;
    store_job_init(&ra_job, STORE_OP_CERT_REVOKE, NULL);
    ra_job.u.ref = (store_ref){.ca = "devices",
                               .serial = more[0].job.u.cert.serial,
                               .time = 10,
                               .reason = STORE_REASON_KEY_COMPROMISE};
    rb_job = ra_job;
    cm_cq qa = {NULL, -1};
    cm_cq qb = {NULL, -1};
    TEST_ASSERT_OK(cm_cq_init(&qa));
    TEST_ASSERT_OK(cm_cq_init(&qb));
    ra_job.cq = &qa;
    rb_job.cq = &qb;
    store_submit(a, &ra_job);
    store_submit(b, &rb_job);
    while (cm_cq_drain(&qa) == NULL) {
        (void)cm_cq_wait(&qa, 1000);
    }
    while (cm_cq_drain(&qb) == NULL) {
        (void)cm_cq_wait(&qb, 1000);
    }
    cm_cq_cleanup(&qa);
    cm_cq_cleanup(&qb);
    CU_ASSERT((cm_ok(ra_job.result) && rb_job.result.code == STORE_E_ALREADY_REVOKED) ||
              (cm_ok(rb_job.result) && ra_job.result.code == STORE_E_ALREADY_REVOKED));
    store_crl crl;
    TEST_ASSERT_OK(store_crl_get(ra, &ar, &crl, "devices"));
    CU_ASSERT_EQUAL(crl.revision, 1);

    // CRL numbers from both nodes at once.
    test_crl_numbers na = {.s = a};
    test_crl_numbers nb = {.s = b};
    pthread_t ta;
    pthread_t tb;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&ta, NULL, test_store_crl_numbers_main, &na), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tb, NULL, test_store_crl_numbers_main, &nb), 0);
    (void)pthread_join(ta, NULL);
    (void)pthread_join(tb, NULL);
    CU_ASSERT_EQUAL(na.failed + nb.failed, 0);
    bool seen[201] = {false};
    int distinct = 0;
    for (int i = 0; i < 100; i++) {
        const uint64_t v[2] = {na.got[i], nb.got[i]};
        for (int k = 0; k < 2; k++) {
            CU_ASSERT_FATAL(v[k] >= 1 && v[k] <= 200);
            distinct += seen[v[k]] ? 0 : 1;
            seen[v[k]] = true;
        }
    }
    CU_ASSERT_EQUAL(distinct, 200);
    cm_arena_cleanup(&ar);
    store_reader_close(ra);
    test_store_close_checked(b);
    test_store_close_checked(a);
}

static int64_t test_store_pg_terminate(const char *sql_where);

// Two stores as two nodes: a revocation committed by one reaches the other's signer-status
// cache through LISTEN/NOTIFY within milliseconds (measured); a change made with plain SQL
// (an operator) too; and while the other's listener is cut off it trusts nothing it cached.
static void test_store_pg_status_reaches_other_nodes(void)
{
    store *a = test_store_open_at("notify.db", STORE_SYNC_FULL);
    store *b = test_store_open_at("notify.db", STORE_SYNC_FULL);
    test_item it[3];
    for (uint32_t i = 0; i < 3; i++) {
        test_store_fill(&it[i], NULL, "devices", 1 + i, 0, STORE_CERT_VALID, 0);
        TEST_ASSERT_OK(store_run(a, &it[i].job));
    }
    store_reader *rb = NULL;
    TEST_ASSERT_OK(store_reader_open(b, &rb));
    store_cert_state st;
    const cm_span s1 = it[0].job.u.cert.serial;
    TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s1));
    TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s1));
    CU_ASSERT(st.from_cache && st.status == STORE_CERT_VALID);
    // Node a revokes; node b's cache forgets within the notification's delivery.
    TEST_ASSERT_OK(test_store_ref_op(a, STORE_OP_CERT_REVOKE, "devices", s1, 1700000100,
                                     STORE_REASON_KEY_COMPROMISE));
    const uint64_t t0 = cm_time_mono_ns();
    bool seen = false;
    while (!seen && cm_time_mono_ns() - t0 < 2000000000ull) {
        TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s1));
        seen = st.status == STORE_CERT_REVOKED;
        if (!seen) {
            (void)usleep(200);
        }
    }
    CU_ASSERT(seen);
    printf("\n    a revocation on one node reached the other's cache after %.2f ms ",
           (double)(cm_time_mono_ns() - t0) / 1e6);
    // An operator's SQL: the triggers announce it as well.
    const cm_span s2 = it[1].job.u.cert.serial;
    TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s2));
    TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s2));
    CU_ASSERT(st.from_cache);
    const uint64_t gen = store_status_generation(b);
    test_store_db_exec("notify.db", "UPDATE cert SET status = 'hold', revoked_at = 5, reason = 6 "
                                    "WHERE subject_text = 'CN=device-2,O=line-0'");
    for (int i = 0; i < 200 && store_status_generation(b) == gen; i++) {
        (void)usleep(10 * 1000);
    }
    TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s2));
    CU_ASSERT_EQUAL(st.status, STORE_CERT_HOLD);
    // b's listener loses its session: until it listens again nothing stays cached.
    const cm_span s3 = it[2].job.u.cert.serial;
    CU_ASSERT(test_store_pg_terminate("application_name = 'certmint-listener'") >= 1);
    (void)usleep(300 * 1000);
    TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s3));
    (void)usleep(200 * 1000); // a turn of the listener's loop
    store_stats stb;
    store_get_stats(b, &stb);
    CU_ASSERT(stb.status_flushes >= 1);
    // Listening again (it reconnects by itself), a change is heard once more.
    for (int i = 0; i < 50; i++) {
        TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s3));
        TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s3));
        if (st.from_cache) {
            break;
        }
        (void)usleep(100 * 1000);
    }
    CU_ASSERT(st.from_cache);
    TEST_ASSERT_OK(test_store_ref_op(a, STORE_OP_CERT_REVOKE, "devices", s3, 1700000200,
                                     STORE_REASON_SUPERSEDED));
    seen = false;
    for (int i = 0; i < 400 && !seen; i++) {
        TEST_ASSERT_OK(store_cert_state_get(rb, &st, "devices", s3));
        seen = st.status == STORE_CERT_REVOKED;
        if (!seen) {
            (void)usleep(5 * 1000);
        }
    }
    CU_ASSERT(seen);
    store_reader_close(rb);
    test_store_close_checked(b);
    test_store_close_checked(a);
}

// test_store_pg_terminate ends the sessions that |sql_where| selects from pg_stat_activity
// (as an administrator or a crashed network would) and returns how many.
static int64_t test_store_pg_terminate(const char *sql_where)
{
    char sql[512];
    (void)snprintf(sql, sizeof(sql),
                   "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE %s "
                   "AND pid <> pg_backend_pid()",
                   sql_where);
    PGconn *pg = test_store_pg_connect(NULL);
    const int64_t n = test_store_pg_sql(pg, sql);
    PQfinish(pg);
    return n;
}

// The leader lock: one store holds it; when its session dies (its node crashed) another store
// takes it within seconds, and the old holder, back, does not.
static void test_store_pg_leader_lock_moves_when_its_holder_dies(void)
{
    store *a = test_store_open_at("leader.db", STORE_SYNC_FULL);
    store *b = test_store_open_at("leader.db", STORE_SYNC_FULL);
    bool la = false;
    bool lb = true;
    TEST_ASSERT_OK(store_leader_try(a, &la));
    TEST_ASSERT_OK(store_leader_try(b, &lb));
    CU_ASSERT(la);
    CU_ASSERT(!lb);
    TEST_ASSERT_OK(store_leader_try(a, &la));
    CU_ASSERT(la);
    // Another instance in another schema of the same database has its own leader.
    store *other = test_store_open_at("leader-other.db", STORE_SYNC_FULL);
    bool lo = false;
    TEST_ASSERT_OK(store_leader_try(other, &lo));
    CU_ASSERT(lo);
    store_close(other);

    // a's leader session dies: the session that holds the advisory lock.
    CU_ASSERT_EQUAL(test_store_pg_terminate("pid IN (SELECT pid FROM pg_locks WHERE "
                                            "locktype = 'advisory' AND granted)"),
                    1);
    const uint64_t t0 = cm_time_mono_ns();
    while (!lb && cm_time_mono_ns() - t0 < 10ull * 1000000000ull) {
        (void)usleep(100 * 1000);
        TEST_ASSERT_OK(store_leader_try(b, &lb));
    }
    CU_ASSERT(lb);
    printf("\n    leader lock taken over in %.0f ms ", (double)(cm_time_mono_ns() - t0) / 1e6);
    // a notices the loss (its session is gone), reconnects, and finds the lock taken.
    for (int i = 0; i < 3; i++) {
        cm_result lr = store_leader_try(a, &la); // UNAVAILABLE while it finds out
        CU_ASSERT(cm_ok(lr) || lr.code == STORE_E_UNAVAILABLE);
        CU_ASSERT(!la);
        (void)usleep(200 * 1000);
    }
    TEST_ASSERT_OK(store_leader_try(a, &la));
    CU_ASSERT(!la);
    store_stats st;
    store_get_stats(a, &st);
    CU_ASSERT(st.reconnects >= 1);
    // b closes (a clean shutdown): a takes over once b's session has ended on the server
    // (the server releases the lock as the session exits, just after b's close returns).
    store_close(b);
    for (int i = 0; i < 50 && !la; i++) {
        TEST_ASSERT_OK(store_leader_try(a, &la));
        if (!la) {
            (void)usleep(100 * 1000);
        }
    }
    CU_ASSERT(la);
    test_store_close_checked(a);
}

// test_insertor inserts certificates one by one while the database goes away and comes back,
// and remembers which inserts the store reported done.
typedef struct test_insertor {
    store *s;
    int stop; // atomic
    uint32_t n;
    uint32_t ok;
    uint32_t unavailable;
    uint32_t other;
    bool done[4000];
} test_insertor;

static void *test_store_insertor_main(void *arg)
{
    test_insertor *t = arg;
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE) && t->n < 4000) {
        test_item it;
        test_store_fill(&it, NULL, "devices", t->n, 99, STORE_CERT_VALID, 0);
        cm_result r = store_run(t->s, &it.job);
        t->done[t->n] = cm_ok(r);
        t->ok += cm_ok(r) ? 1u : 0u;
        t->unavailable += r.code == STORE_E_UNAVAILABLE ? 1u : 0u;
        t->other += !cm_ok(r) && r.code != STORE_E_UNAVAILABLE ? 1u : 0u;
        t->n++;
        if (!cm_ok(r)) {
            (void)usleep(20 * 1000);
        }
    }
    return NULL;
}

static bool test_store_wait_healthy(store *s, bool want, int max_ms)
{
    for (int waited = 0; waited < max_ms; waited += 50) {
        if (store_healthy(s) == want) {
            return true;
        }
        (void)usleep(50 * 1000);
    }
    return store_healthy(s) == want;
}

// The database goes away (a crash of the server) under load and comes back: jobs in flight and
// while it is down fail with STORE_E_UNAVAILABLE (the server answers systemUnavail), fast;
// store_healthy says so; readers fail the same way; after the restart the writer and the readers
// reconnect by themselves. Every insert the store reported done is in the database.
static void test_store_pg_database_down_fails_fast_and_recovers(void)
{
    store *s = test_store_open_at("down.db", STORE_SYNC_FULL);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    test_item first;
    test_store_fill(&first, NULL, "devices", 100000, 1, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &first.job));
    CU_ASSERT(store_healthy(s));

    static test_insertor ins;
    memset(&ins, 0, sizeof(ins));
    ins.s = s;
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, test_store_insertor_main, &ins), 0);
    (void)usleep(300 * 1000);
    CU_ASSERT_FATAL(test_pg_stop(&g_cluster, true));
    CU_ASSERT(test_store_wait_healthy(s, false, 3000));

    // While it is down: every job and read fails at once with the AGAIN code.
    test_item it;
    test_store_fill(&it, NULL, "devices", 100001, 1, STORE_CERT_VALID, 0);
    const uint64_t t0 = cm_time_mono_ns();
    cm_result down = store_run(s, &it.job);
    const uint64_t took_ms = (cm_time_mono_ns() - t0) / 1000000u;
    TEST_ASSERT_CODE(down, STORE_E_UNAVAILABLE);
    CU_ASSERT_EQUAL(cm_result_class(down), CM_CLASS_AGAIN);
    CU_ASSERT(took_ms < 1000);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_cert c;
    TEST_ASSERT_CODE(store_cert_get(r, &a, &c, "devices", first.job.u.cert.serial),
                     STORE_E_UNAVAILABLE);
    CU_ASSERT(!store_healthy(s));
    (void)usleep(500 * 1000);

    CU_ASSERT_FATAL(test_pg_resume(&g_cluster));
    CU_ASSERT(test_store_wait_healthy(s, true, 10000));
    (void)usleep(300 * 1000);
    __atomic_store_n(&ins.stop, 1, __ATOMIC_RELEASE);
    (void)pthread_join(th, NULL);
    printf("\n    under the outage: %u inserts, %u done, %u unavailable, %u other ", ins.n, ins.ok,
           ins.unavailable, ins.other);
    CU_ASSERT(ins.unavailable > 0);
    CU_ASSERT_EQUAL(ins.other, 0);

    // Back: the writer takes jobs, the reader reconnects at its next read.
    test_store_fill(&it, NULL, "devices", 100001, 1, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &it.job));
    cm_result rr = store_cert_get(r, &a, &c, "devices", first.job.u.cert.serial);
    for (int i = 0; i < 20 && rr.code == STORE_E_UNAVAILABLE; i++) {
        (void)usleep(100 * 1000); // the reader's backoff
        rr = store_cert_get(r, &a, &c, "devices", first.job.u.cert.serial);
    }
    TEST_ASSERT_OK(rr);
    // Nothing reported done is missing.
    uint32_t missing = 0;
    for (uint32_t i = 0; i < ins.n; i++) {
        if (!ins.done[i]) {
            continue;
        }
        test_item want;
        test_store_fill(&want, NULL, "devices", i, 99, STORE_CERT_VALID, 0);
        missing += cm_ok(store_cert_get(r, &a, &c, "devices", want.job.u.cert.serial)) ? 0u : 1u;
    }
    CU_ASSERT_EQUAL(missing, 0);
    store_stats st;
    store_get_stats(s, &st);
    CU_ASSERT(st.reconnects >= 2); // the writer and the reader
    cm_arena_cleanup(&a);
    store_reader_close(r);
    test_store_close_checked(s);
}

// A killed session (an administrator's pg_terminate_backend, a proxy restart): the writer
// notices within its idle check, reconnects, and /healthz would have said so meanwhile.
static void test_store_pg_killed_session_reconnects(void)
{
    store *s = test_store_open_at("killed.db", STORE_SYNC_FULL);
    test_item it;
    test_store_fill(&it, NULL, "devices", 1, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &it.job));
    CU_ASSERT_EQUAL(test_store_pg_terminate("application_name = 'certmint-writer'"), 1);
    // The idle check finds the session gone and reconnects at once (first attempt after a
    // loss), so the next job succeeds.
    for (int i = 0; i < 40; i++) {
        store_stats st;
        store_get_stats(s, &st);
        if (st.reconnects >= 1) {
            break;
        }
        (void)usleep(100 * 1000);
    }
    store_stats st;
    store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.reconnects, 1);
    CU_ASSERT(store_healthy(s));
    test_store_fill(&it, NULL, "devices", 2, 0, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &it.job));
    test_store_close_checked(s);
    CU_ASSERT_EQUAL(test_store_db_int("killed.db", "SELECT count(*) FROM cert"), 2);
}

static void test_store_init_cert_der(void)
{
    for (size_t i = 0; i < sizeof(g_cert_der); i++) {
        g_cert_der[i] = (uint8_t)(i * 7 + 3);
    }
}

// The tests both backends run.
#define TEST_STORE_COMMON_CASES                                                              \
    TEST_CASE(test_store_result_names), TEST_CASE(test_store_creates_schema_and_reopens),    \
        TEST_CASE(test_store_refuses_newer_schema), TEST_CASE(test_store_migrates_schema_1), \
        TEST_CASE(test_store_refuses_bad_urls_and_foreign_files),                            \
        TEST_CASE(test_store_insert_lookup_and_duplicates),                                  \
        TEST_CASE(test_store_rejects_invalid_jobs), TEST_CASE(test_store_confirm),           \
        TEST_CASE(test_store_revoke_hold_and_release), TEST_CASE(test_store_transactions),   \
        TEST_CASE(test_store_sweep_revokes_unconfirmed_past_deadline),                       \
        TEST_CASE(test_store_crl_numbers_and_state),                                         \
        TEST_CASE(test_store_list_filters_and_paging),                                       \
        TEST_CASE(test_store_batch_with_mixed_outcomes),                                     \
        TEST_CASE(test_store_enrolment_batch_outcomes),                                      \
        TEST_CASE(test_store_locked_database_fails_the_whole_batch),                         \
        TEST_CASE(test_store_group_commit_concurrent_submitters),                            \
        TEST_CASE(test_store_close_commits_everything_queued),                               \
        TEST_CASE(test_store_completed_records_survive_a_crash),                             \
        TEST_CASE(test_store_leader_and_health), TEST_CASE(test_store_copy_moves_every_row), \
        TEST_CASE(test_store_reservations), TEST_CASE(test_store_credential_limits),         \
        TEST_CASE(test_store_key_update_supersedes), TEST_CASE(test_store_status_cache),     \
        TEST_CASE(test_store_status_cache_rules), TEST_CASE(test_store_migrates_schema_2)

int test_store_register(void)
{
    test_store_init_cert_der();
    static const test_case tests[] = {
        TEST_STORE_COMMON_CASES,
        TEST_CASE(test_store_sqlite_request_path_queries_use_indexes),
        TEST_CASE(test_store_reservation_shares_the_record_commit),
        TEST_CASE(test_store_background_checkpoints_restart_the_wal),
        TEST_CASE(test_store_checkpoint_waits_for_a_long_reader),
    };
    return test_register_suite("store", test_store_suite_init, test_store_suite_cleanup, NULL, NULL,
                               tests, TEST_NUM_CASES(tests));
}

int test_store_pg_register_suite(void)
{
    test_store_init_cert_der();
    static const test_case tests[] = {
        TEST_STORE_COMMON_CASES,
        TEST_CASE(test_store_pg_request_path_queries_use_indexes),
        TEST_CASE(test_store_pg_copy_from_and_to_sqlite),
        TEST_CASE(test_store_pg_job_refused_by_the_database_fails_alone),
        TEST_CASE(test_store_pg_nodes_share_one_database),
        TEST_CASE(test_store_pg_status_reaches_other_nodes),
        TEST_CASE(test_store_pg_leader_lock_moves_when_its_holder_dies),
        TEST_CASE(test_store_pg_killed_session_reconnects),
        TEST_CASE(test_store_pg_database_down_fails_fast_and_recovers),
    };
    return test_register_suite("store_pg", test_store_pg_suite_init, test_store_pg_suite_cleanup,
                               NULL, NULL, tests, TEST_NUM_CASES(tests));
}
