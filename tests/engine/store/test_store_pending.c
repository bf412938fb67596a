// Suites "store_pending" and "store_pending_pg": the pending table of schema 4 (delayed
// delivery, issue 16) on both backends: each STORE_OP_PENDING_* op with its good and refused
// cases, the reads, expiry, and the migration of a schema-3 store. A real SQLite store in a
// throwaway directory, and a real PostgreSQL cluster that the second suite starts in its init
// (tests/support/test_pg.h; one schema per test) and removes in its cleanup.
#include "tests/engine/store/test_store_pending.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "tests/support/test_pg.h"
#include "tests/support/test_support.h"

static char g_dir[256];
static bool g_pg;
static test_pg g_cluster;

static int pend_suite_init(void)
{
    g_pg = false;
    return test_tmpdir(g_dir, sizeof(g_dir), "store-pending") ? 0 : 1;
}

static int pend_suite_cleanup(void)
{
    return test_rmtree(g_dir) ? 0 : 1;
}

static int pend_pg_suite_init(void)
{
    g_pg = true;
    if (!test_tmpdir(g_dir, sizeof(g_dir), "store-pending")) {
        return 1;
    }
    return test_pg_start(&g_cluster) ? 0 : 1;
}

static int pend_pg_suite_cleanup(void)
{
    test_pg_destroy(&g_cluster);
    g_pg = false;
    return test_rmtree(g_dir) ? 0 : 1;
}

// pend_schema turns a test's store name ("flow.db") into a schema name ("p_flow_db").
static const char *pend_schema(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "p_%s", name);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
    for (char *c = out; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))) {
            *c = '_';
        }
    }
    return out;
}

static void pend_pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message; // "schema ... already exists, skipping"
}

// pend_pg_connect connects to the cluster with search_path |schema| (NULL: the default).
static PGconn *pend_pg_connect(const char *schema)
{
    char url[600];
    PGconn *pg = PQconnectdb(test_pg_url(&g_cluster, schema, url, sizeof(url)));
    CU_ASSERT_EQUAL_FATAL(PQstatus(pg), CONNECTION_OK);
    (void)PQsetNoticeProcessor(pg, pend_pg_quiet, NULL);
    return pg;
}

// pend_pg_sql runs |sql| and returns the first column of the last statement's first row as an
// integer (-1 when there is none); fails the test on error.
static int64_t pend_pg_sql(PGconn *pg, const char *sql)
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

// pend_url names the store |name| of the current backend: a file in the suite's directory, or
// a schema of the cluster (created when missing).
static const char *pend_url(char *out, size_t cap, const char *name)
{
    if (g_pg) {
        char schema[96];
        char sql[160];
        pend_schema(schema, sizeof(schema), name);
        (void)snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", schema);
        PGconn *pg = pend_pg_connect(NULL);
        (void)pend_pg_sql(pg, sql);
        PQfinish(pg);
        return test_pg_url(&g_cluster, schema, out, cap);
    }
    char path[512];
    int n = snprintf(out, cap, "sqlite:%s", test_path(path, sizeof(path), g_dir, name));
    CU_ASSERT_FATAL(n > 0 && (size_t)n < cap);
    return out;
}

static store *pend_open(const char *name)
{
    char url[600];
    store *s = NULL;
    store_options o = {.sync = STORE_SYNC_NORMAL};
    TEST_ASSERT_OK(store_open(&s, pend_url(url, sizeof(url), name), &o));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    return s;
}

// pend_item is one waiting enrolment: its PENDING_ADD job, the reservation made with it and
// the storage their spans point at.
typedef struct pend_item {
    store_job job;
    store_reservation rsv;
    uint8_t tid[16];
    uint8_t serial[16];
    uint8_t spki[32];
    uint8_t tbs[40];
    int64_t id; // after the ADD
} pend_item;

// pend_fill makes |it| the ADD of transaction |n| (its serial, key and TBS derived from |n|) in
// |state|, from the MAC credential "line-7", expiring at |expires_at|.
static void pend_fill(pend_item *it, uint32_t n, store_pending_state state, int64_t expires_at)
{
    store_job_init(&it->job, STORE_OP_PENDING_ADD, NULL);
    memset(it->tid, 0x6b, sizeof(it->tid));
    memcpy(it->tid + 12, &n, sizeof(n));
    memset(it->serial, 0, sizeof(it->serial));
    it->serial[0] = 0x41;
    memcpy(it->serial + 8, &n, sizeof(n));
    for (size_t i = 0; i < sizeof(it->spki); i++) {
        it->spki[i] = (uint8_t)(n * 3 + i);
    }
    memset(it->tbs, (int)n, sizeof(it->tbs));
    it->rsv = (store_reservation){.ca = "devices",
                                  .transaction_id = cm_span_make(it->tid, sizeof(it->tid)),
                                  .serial = cm_span_make(it->serial, sizeof(it->serial)),
                                  .state = 5,
                                  .protection = STORE_AUTH_MAC,
                                  .credential = CM_SPAN_LIT("line-7"),
                                  .expires_at = expires_at + 600,
                                  .spki_sha256 = cm_span_make(it->spki, sizeof(it->spki)),
                                  .check_key = true};
    store_pending *p = &it->job.u.pend;
    p->ca = "devices";
    p->transaction_id = it->rsv.transaction_id;
    p->body_type = 0;
    p->cert_req_id = 0;
    p->why = state == STORE_PENDING_APPROVAL ? STORE_PENDING_WHY_APPROVAL : STORE_PENDING_WHY_LOAD;
    p->state = state;
    p->profile = "devices";
    p->subject = "CN=dev-1";
    p->key_type = "EC P-256";
    p->requester = "senderKID line-7";
    p->created_at = 1700000000;
    p->expires_at = expires_at;
    p->tbs = cm_span_make(it->tbs, sizeof(it->tbs));
    p->serial = it->rsv.serial;
    p->flags = 0x11;
    p->status_text = "granted with changes";
    p->replaces = CM_SPAN_LIT("\x42\x02"); // what the record will name (rsv.replaces is apart)
    p->rsv = &it->rsv;
    p->txn_flags = 2;
    p->request_nonce = CM_SPAN_LIT("0123456789abcdef");
}

static cm_result pend_add(store *s, pend_item *it)
{
    cm_result r = store_run(s, &it->job);
    it->id = cm_ok(r) ? (int64_t)it->job.out_value : 0;
    return r;
}

// pend_op runs one of the ops that take a store_pending_op.
static cm_result pend_op(store *s, store_op op, const store_pending_op *o)
{
    store_job j;
    store_job_init(&j, op, NULL);
    j.u.pop = *o;
    return store_run(s, &j);
}

static cm_result pend_get(store *s, cm_arena *a, store_pending *out, const pend_item *it)
{
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_result res = store_pending_get(r, a, out, "devices", cm_span_make(it->tid, 16));
    store_reader_close(r);
    return res;
}

static cm_result pend_txn(store *s, cm_arena *a, store_txn *out, const pend_item *it)
{
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    cm_result res = store_txn_get(r, a, out, "devices", cm_span_make(it->tid, 16));
    store_reader_close(r);
    return res;
}

// pend_cert is the certificate a drain records for |it|.
static store_cert pend_cert(const pend_item *it, store_cert_status status, int64_t deadline)
{
    static const uint8_t k_subject[] = {0x30, 0x00};
    static const uint8_t k_der[] = {0x30, 0x03, 0x02, 0x01, 0x01};
    return (store_cert){.ca = "devices",
                        .serial = cm_span_make(it->serial, sizeof(it->serial)),
                        .subject_der = cm_span_make(k_subject, sizeof(k_subject)),
                        .subject_text = "CN=dev-1",
                        .not_before = 1700000000,
                        .not_after = 1800000000,
                        .spki_sha256 = cm_span_make(it->spki, sizeof(it->spki)),
                        .status = status,
                        .transaction_id = cm_span_make(it->tid, sizeof(it->tid)),
                        .requester_kind = STORE_AUTH_MAC,
                        .requester = CM_SPAN_LIT("line-7"),
                        .cert_der = cm_span_make(k_der, sizeof(k_der)),
                        .issued_at = 1700000100,
                        .confirm_deadline = deadline};
}

typedef struct pend_listing {
    int64_t ids[8];
    size_t n;
} pend_listing;

static bool pend_collect(void *ctx, const store_pending *p)
{
    pend_listing *l = ctx;
    if (l->n < 8) {
        l->ids[l->n++] = p->id;
    }
    return true;
}

static size_t pend_list(store *s, uint32_t states, pend_listing *out)
{
    memset(out, 0, sizeof(*out));
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    const store_pending_filter f = {.ca = "devices", .states = states};
    TEST_ASSERT_OK(store_pending_list(r, &f, pend_collect, out));
    store_reader_close(r);
    return out->n;
}

// A request waiting under load: added with its reservation, read back by transactionID and by
// id, claimed once (a second claim is refused until the first goes stale), issued (the
// certificate recorded, the transaction row names it), delivered, and delivered again.
static void test_pending_load_flow(void)
{
    store *s = pend_open("flow.db");
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    pend_item it;
    pend_fill(&it, 1, STORE_PENDING_QUEUED, 1700086400);
    TEST_ASSERT_OK(pend_add(s, &it));
    CU_ASSERT(it.id > 0);
    store_pending p;
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.id, it.id);
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_QUEUED);
    CU_ASSERT_EQUAL(p.why, STORE_PENDING_WHY_LOAD);
    CU_ASSERT_STRING_EQUAL(p.subject, "CN=dev-1");
    CU_ASSERT_STRING_EQUAL(p.key_type, "EC P-256");
    CU_ASSERT_STRING_EQUAL(p.requester, "senderKID line-7");
    CU_ASSERT_STRING_EQUAL(p.profile, "devices");
    CU_ASSERT(cm_span_eq(p.tbs, cm_span_make(it.tbs, sizeof(it.tbs))));
    CU_ASSERT(cm_span_eq(p.serial, cm_span_make(it.serial, sizeof(it.serial))));
    CU_ASSERT_EQUAL(p.flags, 0x11);
    CU_ASSERT_EQUAL(p.fail_info, -1);
    CU_ASSERT_STRING_EQUAL(p.status_text, "granted with changes");
    // The reservation is its transaction row, with the certConf fields.
    store_txn t;
    TEST_ASSERT_OK(pend_txn(s, &a, &t, &it));
    CU_ASSERT_EQUAL(t.state, 5);
    CU_ASSERT_EQUAL(t.flags, 2);
    CU_ASSERT(cm_span_eq(t.request_nonce, CM_SPAN_LIT("0123456789abcdef")));
    CU_ASSERT_EQUAL(t.serial.len, 0);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    TEST_ASSERT_OK(store_pending_get_id(r, &a, &p, it.id));
    CU_ASSERT(cm_span_eq(p.transaction_id, cm_span_make(it.tid, 16)));
    TEST_ASSERT_CODE(store_pending_get_id(r, &a, &p, it.id + 100), STORE_E_PENDING_UNKNOWN);
    TEST_ASSERT_CODE(store_pending_get(r, &a, &p, "servers", cm_span_make(it.tid, 16)),
                     STORE_E_PENDING_UNKNOWN);
    store_reader_close(r);

    // The same transaction again: its reservation refuses it, and nothing is added.
    pend_item dup;
    pend_fill(&dup, 1, STORE_PENDING_QUEUED, 1700086400);
    dup.serial[15] = 9;
    dup.spki[0] ^= 0xff;
    TEST_ASSERT_CODE(pend_add(s, &dup), STORE_E_TXN_IN_USE);
    // Another transaction for the same key: the reservation's key rule refuses it, atomically.
    pend_item same_key;
    pend_fill(&same_key, 2, STORE_PENDING_QUEUED, 1700086400);
    memcpy(same_key.spki, it.spki, sizeof(it.spki));
    TEST_ASSERT_CODE(pend_add(s, &same_key), STORE_E_KEY_REUSED);
    TEST_ASSERT_CODE(pend_get(s, &a, &p, &same_key), STORE_E_PENDING_UNKNOWN);
    pend_listing l;
    CU_ASSERT_EQUAL(pend_list(s, 1u << STORE_PENDING_QUEUED, &l), 1);
    CU_ASSERT_EQUAL(l.ids[0], it.id);

    // Claimed by one drain; another's claim is refused until the first one is stale.
    store_pending_op o = {.id = it.id, .time = 1700000010, .stale_before = 1700000000};
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_CLAIM, &o));
    o.time = 1700000011;
    o.stale_before = 1700000010;
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_CLAIM, &o), STORE_E_PENDING_STATE);
    o.stale_before = 1700000011;
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_CLAIM, &o));
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_SIGNING);
    CU_ASSERT_EQUAL(p.claimed_at, 1700000011);
    o.id = it.id + 100;
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_CLAIM, &o), STORE_E_PENDING_UNKNOWN);
    // Delivering before the certificate exists is refused.
    store_pending_op d = {.ca = "devices",
                          .transaction_id = cm_span_make(it.tid, 16),
                          .time = 1700000012,
                          .sender_nonce = CM_SPAN_LIT("NONCE-NONCE-NONC"),
                          .txn_expires_at = 1700000900,
                          .confirm_deadline = 1700000312};
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DELIVER, &d), STORE_E_PENDING_STATE);

    // Issued: the certificate under the reserved serial, the transaction row names it.
    const store_cert c = pend_cert(&it, STORE_CERT_UNCONFIRMED, 1700087000);
    store_pending_op is = {
        .id = it.id, .time = 1700000012, .cert = &c, .txn_state = 1, .txn_expires_at = 1700087600};
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_ISSUE, &is));
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_ISSUE, &is), STORE_E_PENDING_STATE);
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_ISSUED);
    CU_ASSERT_STRING_EQUAL(p.status_text, "granted with changes");
    CU_ASSERT(cm_span_eq(p.replaces, CM_SPAN_LIT("\x42\x02")));
    TEST_ASSERT_OK(pend_txn(s, &a, &t, &it));
    CU_ASSERT_EQUAL(t.state, 1);
    CU_ASSERT(cm_span_eq(t.serial, cm_span_make(it.serial, 16)));
    CU_ASSERT_EQUAL(t.expires_at, 1700087600);
    // Delivered: certConf answers this senderNonce; the certificate waits for it from now on.
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DELIVER, &d));
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_DELIVERED);
    CU_ASSERT_EQUAL(p.expires_at, 1700000900);
    TEST_ASSERT_OK(pend_txn(s, &a, &t, &it));
    CU_ASSERT(cm_span_eq(t.sender_nonce, CM_SPAN_LIT("NONCE-NONCE-NONC")));
    CU_ASSERT_EQUAL(t.expires_at, 1700000900);
    TEST_ASSERT_OK(store_reader_open(s, &r));
    store_cert got;
    TEST_ASSERT_OK(store_cert_get(r, &a, &got, "devices", cm_span_make(it.serial, 16)));
    CU_ASSERT_EQUAL(got.confirm_deadline, 1700000312);
    CU_ASSERT_EQUAL(got.status, STORE_CERT_UNCONFIRMED);
    store_reader_close(r);
    // A lost answer: delivered again, with a new nonce.
    d.sender_nonce = CM_SPAN_LIT("SECOND-NONCE-012");
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DELIVER, &d));
    TEST_ASSERT_OK(pend_txn(s, &a, &t, &it));
    CU_ASSERT(cm_span_eq(t.sender_nonce, CM_SPAN_LIT("SECOND-NONCE-012")));
    d.transaction_id = CM_SPAN_LIT("no such transaction");
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DELIVER, &d), STORE_E_PENDING_UNKNOWN);
    cm_arena_cleanup(&a);
    store_close(s);
}

// A request held for approval: a drain cannot claim it before it is approved; approval once;
// a rejection gives the reservation back (transactionID, key, the credential's use) and is
// delivered like an issued certificate.
static void test_pending_approval_and_rejection(void)
{
    store *s = pend_open("approve.db");
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    pend_item it, other;
    pend_fill(&it, 1, STORE_PENDING_APPROVAL, 1700086400);
    TEST_ASSERT_OK(pend_add(s, &it));
    store_pending_op o = {.id = it.id, .time = 1700000010};
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_CLAIM, &o), STORE_E_PENDING_STATE);
    o.approve = true;
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DECIDE, &o));
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DECIDE, &o), STORE_E_PENDING_STATE);
    store_pending p;
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_APPROVED);
    CU_ASSERT_EQUAL(p.decided_at, 1700000010);
    pend_listing l;
    CU_ASSERT_EQUAL(pend_list(s, 1u << STORE_PENDING_APPROVAL, &l), 0);
    CU_ASSERT_EQUAL(pend_list(s, (1u << STORE_PENDING_QUEUED) | (1u << STORE_PENDING_APPROVED), &l),
                    1);
    TEST_ASSERT_OK(
        pend_op(s, STORE_OP_PENDING_CLAIM, &(store_pending_op){.id = it.id, .time = 1700000011}));

    // A limited credential's use is counted by the reservation and given back by a rejection.
    pend_fill(&other, 2, STORE_PENDING_APPROVAL, 1700086400);
    other.rsv.max_uses = 1;
    TEST_ASSERT_OK(pend_add(s, &other));
    pend_item third;
    pend_fill(&third, 3, STORE_PENDING_APPROVAL, 1700086400);
    third.rsv.max_uses = 1;
    TEST_ASSERT_CODE(pend_add(s, &third), STORE_E_LIMIT);
    store_pending_op rj = {.id = other.id,
                           .time = 1700000020,
                           .fail_info = 23,
                           .status_text = "rejected by the operator: no",
                           .keep_s = 86400};
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DECIDE, &rj));
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DECIDE, &rj), STORE_E_PENDING_STATE);
    TEST_ASSERT_OK(pend_get(s, &a, &p, &other));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_REJECTED);
    CU_ASSERT_EQUAL(p.fail_info, 23);
    CU_ASSERT_STRING_EQUAL(p.status_text, "rejected by the operator: no");
    CU_ASSERT_EQUAL(p.expires_at, 1700000020 + 86400);
    store_txn t;
    TEST_ASSERT_OK(pend_txn(s, &a, &t, &other)); // kept for the credential, nothing reserved
    CU_ASSERT(cm_span_eq(t.credential, CM_SPAN_LIT("line-7")));
    TEST_ASSERT_OK(pend_add(s, &third)); // the use came back
    // Its key is free again too: an ordinary reservation of it passes.
    store_job rv;
    store_job_init(&rv, STORE_OP_TXN_RESERVE, NULL);
    rv.u.rsv = other.rsv;
    rv.u.rsv.transaction_id = CM_SPAN_LIT("another-transaction");
    rv.u.rsv.max_uses = 0;
    TEST_ASSERT_OK(store_run(s, &rv));
    // The rejection is delivered (no transaction row to touch), once finished it stays so.
    store_pending_op d = {.ca = "devices",
                          .transaction_id = cm_span_make(other.tid, 16),
                          .time = 1700000030,
                          .txn_expires_at = 1700000900};
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DELIVER, &d));
    TEST_ASSERT_OK(pend_get(s, &a, &p, &other));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_DELIVERED);
    CU_ASSERT_EQUAL(p.fail_info, 23);
    // Nothing to decide about a row that does not exist or is no longer waiting.
    rj.id = 999;
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DECIDE, &rj), STORE_E_PENDING_UNKNOWN);
    rj.id = other.id;
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DECIDE, &rj), STORE_E_PENDING_STATE);
    // A malformed job: no reservation, a rejection without a reason.
    pend_item bad;
    pend_fill(&bad, 4, STORE_PENDING_QUEUED, 1700086400);
    bad.job.u.pend.rsv = NULL;
    TEST_ASSERT_CODE(pend_add(s, &bad), STORE_E_INVALID);
    rj.status_text = NULL;
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_DECIDE, &rj), STORE_E_INVALID);
    cm_arena_cleanup(&a);
    store_close(s);
}

// Expiry: a row still waiting past its expiry is rejected (its reservation given back), an
// issued one never delivered is rejected and its certificate revoked, final rows past theirs
// are deleted; rows not yet due stay.
static void test_pending_expiry(void)
{
    store *s = pend_open("expire.db");
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    pend_item waiting, issued, done, young;
    pend_fill(&waiting, 1, STORE_PENDING_QUEUED, 1700000100);
    pend_fill(&issued, 2, STORE_PENDING_QUEUED, 1700000100);
    pend_fill(&done, 3, STORE_PENDING_APPROVAL, 1700000100);
    pend_fill(&young, 4, STORE_PENDING_APPROVAL, 1700086400);
    TEST_ASSERT_OK(pend_add(s, &waiting));
    TEST_ASSERT_OK(pend_add(s, &issued));
    TEST_ASSERT_OK(pend_add(s, &done));
    TEST_ASSERT_OK(pend_add(s, &young));
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_CLAIM,
                           &(store_pending_op){.id = issued.id, .time = 1700000010}));
    const store_cert c = pend_cert(&issued, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_ISSUE,
                           &(store_pending_op){.id = issued.id,
                                               .time = 1700000011,
                                               .cert = &c,
                                               .txn_state = 2,
                                               .txn_expires_at = 1700090000}));
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DECIDE,
                           &(store_pending_op){.id = done.id,
                                               .time = 1700000012,
                                               .fail_info = 23,
                                               .status_text = "no",
                                               .keep_s = 10}));
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_DELIVER,
                           &(store_pending_op){.ca = "devices",
                                               .transaction_id = cm_span_make(done.tid, 16),
                                               .time = 1700000013,
                                               .txn_expires_at = 1700000050}));
    store_job ex;
    store_job_init(&ex, STORE_OP_PENDING_EXPIRE, NULL);
    ex.u.pop = (store_pending_op){
        .time = 1700000200, .fail_info = 24, .status_text = "waited too long", .keep_s = 3600};
    TEST_ASSERT_OK(store_run(s, &ex));
    CU_ASSERT_EQUAL(ex.out_value, 3);
    store_pending p;
    TEST_ASSERT_OK(pend_get(s, &a, &p, &waiting));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_REJECTED);
    CU_ASSERT_EQUAL(p.fail_info, 24);
    CU_ASSERT_STRING_EQUAL(p.status_text, "waited too long");
    CU_ASSERT_EQUAL(p.expires_at, 1700000200 + 3600);
    store_txn t;
    TEST_ASSERT_OK(pend_txn(s, &a, &t, &waiting));
    // What it reserved is free: its key may be reserved by another transaction.
    store_job rv;
    store_job_init(&rv, STORE_OP_TXN_RESERVE, NULL);
    rv.u.rsv = waiting.rsv;
    rv.u.rsv.transaction_id = CM_SPAN_LIT("another-transaction");
    TEST_ASSERT_OK(store_run(s, &rv));
    TEST_ASSERT_OK(pend_get(s, &a, &p, &issued));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_REJECTED);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    store_cert got;
    TEST_ASSERT_OK(store_cert_get(r, &a, &got, "devices", cm_span_make(issued.serial, 16)));
    CU_ASSERT_EQUAL(got.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(got.reason, STORE_REASON_CESSATION_OF_OPERATION);
    store_reader_close(r);
    TEST_ASSERT_CODE(pend_get(s, &a, &p, &done), STORE_E_PENDING_UNKNOWN);
    TEST_ASSERT_OK(pend_get(s, &a, &p, &young));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_APPROVAL);
    // Nothing more is due at the same time; the rejections go once they were kept long enough.
    TEST_ASSERT_OK(store_run(s, &ex));
    CU_ASSERT_EQUAL(ex.out_value, 0);
    ex.u.pop.time = 1700000200 + 3600;
    TEST_ASSERT_OK(store_run(s, &ex));
    CU_ASSERT_EQUAL(ex.out_value, 2);
    TEST_ASSERT_CODE(pend_get(s, &a, &p, &waiting), STORE_E_PENDING_UNKNOWN);
    cm_arena_cleanup(&a);
    store_close(s);
}

// A refusal after the op has written undoes all of it: a certificate whose reservation expired
// meanwhile is not recorded (the row stays SIGNING, no certificate), and a transaction whose
// pending row outlived its txn row is refused with its new reservation undone (no txn row, the
// key free again).
static void test_pending_refusals_undo_the_op(void)
{
    store *s = pend_open("undo.db");
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    pend_item it;
    pend_fill(&it, 1, STORE_PENDING_QUEUED, 1700086400);
    TEST_ASSERT_OK(pend_add(s, &it));
    TEST_ASSERT_OK(
        pend_op(s, STORE_OP_PENDING_CLAIM, &(store_pending_op){.id = it.id, .time = 1700000010}));
    // The reservation expires (its txn row goes) while the row waits.
    store_job ex;
    store_job_init(&ex, STORE_OP_TXN_EXPIRE, NULL);
    ex.u.ref.time = it.rsv.expires_at;
    TEST_ASSERT_OK(store_run(s, &ex));
    CU_ASSERT_EQUAL(ex.out_value, 1);
    const store_cert c = pend_cert(&it, STORE_CERT_UNCONFIRMED, 1700087000);
    store_pending_op is = {
        .id = it.id, .time = 1700000012, .cert = &c, .txn_state = 1, .txn_expires_at = 1700087600};
    TEST_ASSERT_CODE(pend_op(s, STORE_OP_PENDING_ISSUE, &is), STORE_E_TXN_NOT_FOUND);
    store_pending p;
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_SIGNING);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    store_cert got;
    TEST_ASSERT_CODE(store_cert_get(r, &a, &got, "devices", cm_span_make(it.serial, 16)),
                     STORE_E_NOT_FOUND);
    store_reader_close(r);

    // The same transaction again: its txn row is gone, so the reservation passes, but the row
    // refuses it, and the reservation goes with the refusal.
    pend_item again;
    pend_fill(&again, 1, STORE_PENDING_QUEUED, 1700086400);
    again.serial[15] = 9;
    TEST_ASSERT_CODE(pend_add(s, &again), STORE_E_TXN_IN_USE);
    store_txn t;
    TEST_ASSERT_CODE(pend_txn(s, &a, &t, &again), STORE_E_TXN_NOT_FOUND);
    store_job rv;
    store_job_init(&rv, STORE_OP_TXN_RESERVE, NULL);
    rv.u.rsv = again.rsv;
    rv.u.rsv.transaction_id = CM_SPAN_LIT("another-transaction");
    TEST_ASSERT_OK(store_run(s, &rv)); // the key and the serial were not kept
    TEST_ASSERT_OK(store_reader_open(s, &r));
    TEST_ASSERT_OK(store_reader_check(r));
    store_reader_close(r);
    cm_arena_cleanup(&a);
    store_close(s);
}

// pend_state reads what the status cache answers for the certificate of |it|.
static store_cert_state pend_state(store *s, const pend_item *it)
{
    store_reader *r = NULL;
    store_cert_state st = {0};
    TEST_ASSERT_OK(store_reader_open(s, &r));
    TEST_ASSERT_OK(store_cert_state_get(r, &st, "devices", cm_span_make(it->serial, 16)));
    store_reader_close(r);
    return st;
}

// A key update that waits: its reservation makes the replaced certificate's update pending
// (a second update of it is refused), a rejection ends that (the cached answer too), and an
// issued update that is valid at once supersedes and revokes the old certificate.
static void test_pending_key_update(void)
{
    store *s = pend_open("kur.db");
    pend_item old, it, second, third;
    pend_fill(&old, 10, STORE_PENDING_QUEUED, 1700086400);
    store_job ins;
    store_job_init(&ins, STORE_OP_CERT_INSERT, NULL);
    ins.u.cert = pend_cert(&old, STORE_CERT_VALID, 0);
    TEST_ASSERT_OK(store_run(s, &ins));
    const cm_span old_serial = cm_span_make(old.serial, sizeof(old.serial));
    CU_ASSERT_FALSE(pend_state(s, &old).update_pending); // now cached

    pend_fill(&it, 11, STORE_PENDING_APPROVAL, 1700086400);
    it.rsv.replaces = old_serial;
    TEST_ASSERT_OK(pend_add(s, &it));
    CU_ASSERT_TRUE(pend_state(s, &old).update_pending);
    pend_fill(&second, 12, STORE_PENDING_APPROVAL, 1700086400);
    second.rsv.replaces = old_serial;
    TEST_ASSERT_CODE(pend_add(s, &second), STORE_E_UPDATE_PENDING);
    TEST_ASSERT_OK(pend_op(
        s, STORE_OP_PENDING_DECIDE,
        &(store_pending_op){
            .id = it.id, .time = 1700000020, .fail_info = 23, .status_text = "no", .keep_s = 60}));
    CU_ASSERT_FALSE(pend_state(s, &old).update_pending);

    pend_fill(&third, 13, STORE_PENDING_QUEUED, 1700086400);
    third.rsv.replaces = old_serial;
    TEST_ASSERT_OK(pend_add(s, &third));
    CU_ASSERT_TRUE(pend_state(s, &old).update_pending);
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_CLAIM,
                           &(store_pending_op){.id = third.id, .time = 1700000030}));
    store_cert c = pend_cert(&third, STORE_CERT_VALID, 0);
    c.replaces = old_serial;
    c.revoke_replaced = true;
    TEST_ASSERT_OK(pend_op(s, STORE_OP_PENDING_ISSUE,
                           &(store_pending_op){.id = third.id,
                                               .time = 1700000031,
                                               .cert = &c,
                                               .txn_state = 2,
                                               .txn_expires_at = 1700090000}));
    const store_cert_state st = pend_state(s, &old);
    CU_ASSERT_EQUAL(st.status, STORE_CERT_REVOKED);
    CU_ASSERT_EQUAL(st.reason, 4); // superseded
    CU_ASSERT_NOT_EQUAL(st.superseded_at, 0);
    CU_ASSERT_FALSE(st.update_pending);
    CU_ASSERT_EQUAL(pend_state(s, &third).status, STORE_CERT_VALID);
    store_close(s);
}

// PostgreSQL: two nodes on one database. A request that waits on one node is seen by the
// other (a pollReq may reach any node), one claim wins, the other node records and delivers.
static void test_pending_pg_two_nodes(void)
{
    store *a = pend_open("nodes.db");
    store *b = pend_open("nodes.db");
    cm_arena ar;
    cm_arena_init(&ar, 0, 0);
    pend_item it;
    pend_fill(&it, 1, STORE_PENDING_QUEUED, 1700086400);
    TEST_ASSERT_OK(pend_add(a, &it));
    store_pending p;
    TEST_ASSERT_OK(pend_get(b, &ar, &p, &it));
    CU_ASSERT_EQUAL(p.id, it.id);
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_QUEUED);
    const store_pending_op claim = {.id = it.id, .time = 1700000010, .stale_before = 1700000000};
    TEST_ASSERT_OK(pend_op(b, STORE_OP_PENDING_CLAIM, &claim));
    TEST_ASSERT_CODE(pend_op(a, STORE_OP_PENDING_CLAIM, &claim), STORE_E_PENDING_STATE);
    const store_cert c = pend_cert(&it, STORE_CERT_UNCONFIRMED, 1700087000);
    TEST_ASSERT_OK(pend_op(b, STORE_OP_PENDING_ISSUE,
                           &(store_pending_op){.id = it.id,
                                               .time = 1700000011,
                                               .cert = &c,
                                               .txn_state = 1,
                                               .txn_expires_at = 1700087600}));
    TEST_ASSERT_OK(pend_op(a, STORE_OP_PENDING_DELIVER,
                           &(store_pending_op){.ca = "devices",
                                               .transaction_id = cm_span_make(it.tid, 16),
                                               .time = 1700000012,
                                               .sender_nonce = CM_SPAN_LIT("NONCE-NONCE-NONC"),
                                               .txn_expires_at = 1700000900}));
    TEST_ASSERT_OK(pend_get(b, &ar, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_DELIVERED);
    cm_arena_cleanup(&ar);
    store_close(b);
    store_close(a);
}

// pend_db_int runs |sql| on the store |name| directly (not through the store) and returns the
// first column of its first row, -1 when there is none.
static int64_t pend_db_int(const char *name, const char *sql)
{
    if (g_pg) {
        char schema[96];
        PGconn *pg = pend_pg_connect(pend_schema(schema, sizeof(schema), name));
        const int64_t v = pend_pg_sql(pg, sql);
        PQfinish(pg);
        return v;
    }
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(test_path(path, sizeof(path), g_dir, name), &db,
                                          SQLITE_OPEN_READONLY, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    (void)sqlite3_finalize(st);
    (void)sqlite3_close(db);
    return v;
}

// pend_build_v3 makes the store |name| a schema-3 store (migrations 0..2 as the backend has
// them) holding one certificate and its transaction.
static void pend_build_v3(const char *name)
{
    if (g_pg) {
        char url[600];
        char schema[96];
        (void)pend_url(url, sizeof(url), name); // creates the schema
        PGconn *pg = pend_pg_connect(pend_schema(schema, sizeof(schema), name));
        for (size_t i = 0; i < 3; i++) {
            CU_ASSERT_PTR_NOT_NULL_FATAL(store_pg_migration_sql(i, 0));
            for (size_t part = 0; store_pg_migration_sql(i, part) != NULL; part++) {
                (void)pend_pg_sql(pg, store_pg_migration_sql(i, part));
            }
        }
        (void)pend_pg_sql(
            pg, "INSERT INTO certmint_meta VALUES ('schema_version', '3');"
                "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before, not_after,"
                " spki_sha256, status, transaction_id, requester_kind, cert_der, issued_at)"
                " VALUES ('devices', '\\x4101', '\\x3000', 'CN=old', 1, 4000000000,"
                " decode(repeat('00', 32), 'hex'), 'valid', '\\x0102', 1, '\\x3000', 1);"
                "INSERT INTO txn (ca, transaction_id, state, serial, protection, expires_at)"
                " VALUES ('devices', '\\x0102', 2, '\\x4101', 1, 4000000000);");
        PQfinish(pg);
        return;
    }
    char path[512];
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(test_path(path, sizeof(path), g_dir, name), &db), SQLITE_OK);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(store_sqlite_migration_sql(i));
        CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, store_sqlite_migration_sql(i), NULL, NULL, NULL),
                              SQLITE_OK);
    }
    CU_ASSERT_EQUAL_FATAL(
        sqlite3_exec(db,
                     "PRAGMA application_id = 1129139796; PRAGMA user_version = 3;"
                     "INSERT INTO cert (ca, serial, subject_der, subject_text, not_before,"
                     " not_after, spki_sha256, status, transaction_id, requester_kind, cert_der,"
                     " issued_at) VALUES ('devices', X'4101', X'3000', 'CN=old', 1, 4000000000,"
                     " zeroblob(32), 'valid', X'0102', 1, X'3000', 1);"
                     "INSERT INTO txn (ca, transaction_id, state, serial, protection,"
                     " expires_at) VALUES ('devices', X'0102', 2, X'4101', 1, 4000000000);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    (void)sqlite3_close(db);
}

// What each backend's catalogue says: the schema version, and how many of the pending table and
// its two indexes exist.
static const char *pend_version_sql(void)
{
    return g_pg ? "SELECT value::bigint FROM certmint_meta WHERE name = 'schema_version'"
                : "PRAGMA user_version";
}

static const char *pend_objects_sql(void)
{
    return g_pg ? "SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND "
                  "tablename = 'pending') + (SELECT count(*) FROM pg_indexes WHERE schemaname = "
                  "current_schema() AND indexname IN ('pending_by_state', 'pending_expiry'))"
                : "SELECT count(*) FROM sqlite_schema WHERE name IN ('pending', "
                  "'pending_by_state', 'pending_expiry')";
}

// A schema-3 store is migrated to 4 on open: the pending table and its indexes appear, the old
// rows stay, and a request can wait in it.
static void test_pending_migrates_schema_3(void)
{
    pend_build_v3("v3.db");
    CU_ASSERT_EQUAL(pend_db_int("v3.db", pend_version_sql()), 3);
    CU_ASSERT_EQUAL(pend_db_int("v3.db", pend_objects_sql()), 0);

    store *s = pend_open("v3.db");
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    store_reader *r = NULL;
    TEST_ASSERT_OK(store_reader_open(s, &r));
    store_cert c;
    TEST_ASSERT_OK(store_cert_get(r, &a, &c, "devices", CM_SPAN_LIT("\x41\x01")));
    CU_ASSERT_STRING_EQUAL(c.subject_text, "CN=old");
    store_txn t;
    TEST_ASSERT_OK(store_txn_get(r, &a, &t, "devices", CM_SPAN_LIT("\x01\x02")));
    CU_ASSERT_EQUAL(t.state, 2);
    store_reader_close(r);
    pend_item it;
    pend_fill(&it, 7, STORE_PENDING_APPROVAL, 1700086400);
    TEST_ASSERT_OK(pend_add(s, &it));
    store_pending p;
    TEST_ASSERT_OK(pend_get(s, &a, &p, &it));
    CU_ASSERT_EQUAL(p.state, STORE_PENDING_APPROVAL);
    TEST_ASSERT_OK(store_reader_open(s, &r));
    TEST_ASSERT_OK(store_reader_check(r));
    store_reader_close(r);
    store_close(s);
    cm_arena_cleanup(&a);

    CU_ASSERT_EQUAL(pend_db_int("v3.db", pend_version_sql()), 4);
    CU_ASSERT_EQUAL(pend_db_int("v3.db", pend_objects_sql()), 3);
    CU_ASSERT_EQUAL(pend_db_int("v3.db", "SELECT count(*) FROM cert"), 1);
    CU_ASSERT_EQUAL(pend_db_int("v3.db", "SELECT count(*) FROM pending"), 1);
    CU_ASSERT_EQUAL(STORE_SCHEMA_VERSION, 4);
}

#define PEND_CASES                                                                     \
    TEST_CASE(test_pending_load_flow), TEST_CASE(test_pending_approval_and_rejection), \
        TEST_CASE(test_pending_expiry), TEST_CASE(test_pending_refusals_undo_the_op),  \
        TEST_CASE(test_pending_key_update), TEST_CASE(test_pending_migrates_schema_3)

int test_store_pending_register(void)
{
    static const test_case tests[] = {PEND_CASES};
    return test_register_suite("store_pending", pend_suite_init, pend_suite_cleanup, NULL, NULL,
                               tests, TEST_NUM_CASES(tests));
}

int test_store_pending_pg_register_suite(void)
{
    static const test_case tests[] = {PEND_CASES, TEST_CASE(test_pending_pg_two_nodes)};
    return test_register_suite("store_pending_pg", pend_pg_suite_init, pend_pg_suite_cleanup, NULL,
                               NULL, tests, TEST_NUM_CASES(tests));
}
