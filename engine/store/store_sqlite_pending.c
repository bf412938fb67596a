// The SQLite backend's pending table (schema 4, issue 16): the STORE_OP_PENDING_* jobs, run by
// the writer inside the batch transaction (each in its own savepoint: store_sqlite_write.c),
// and the reads of store_pending_get / _get_id / _list on a reader handle. What each op does is
// in store.h (store_op); the SQL is in store_sqlite.c.
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_sqlite_internal.h"

// store_sq_pend_simple steps write statement |idx| (already bound) and returns how many rows it
// changed.
static cm_result store_sq_pend_simple(store_backend *b, int idx, int64_t *out_changes)
{
    const int rc = store_sq_step_done(b->st[idx]);
    if (rc != SQLITE_DONE) {
        return store_sq_fail(b->db, rc, store_sq_write_sql[idx]);
    }
    if (out_changes != NULL) {
        *out_changes = sqlite3_changes64(b->db);
    }
    return cm_result_make(CM_OK);
}

// store_sq_pend_row is what the writer reads of a row before changing it.
typedef struct store_sq_pend_row {
    int state;
    int64_t id;
    char ca[256];
    uint8_t tid[64];
    size_t tid_len;
    uint8_t serial[20];
    size_t serial_len;
    bool counted;
} store_sq_pend_row;

// store_sq_pend_read reads row |id| (SQW_PEND_ROW): STORE_E_PENDING_UNKNOWN when absent.
static cm_result store_sq_pend_read(store_backend *b, int64_t id, store_sq_pend_row *out)
{
    sqlite3_stmt *st = b->st[SQW_PEND_ROW];
    (void)sqlite3_bind_int64(st, 1, id);
    memset(out, 0, sizeof(*out));
    out->id = id;
    const int rc = sqlite3_step(st);
    bool fits = true;
    if (rc == SQLITE_ROW) {
        out->state = sqlite3_column_int(st, 0);
        const char *ca = (const char *)sqlite3_column_text(st, 1);
        const size_t ca_len = (size_t)sqlite3_column_bytes(st, 1);
        const void *tid = sqlite3_column_blob(st, 2);
        const size_t tid_len = (size_t)sqlite3_column_bytes(st, 2);
        out->counted = sqlite3_column_int(st, 3) != 0;
        const void *sn = sqlite3_column_blob(st, 4);
        const size_t sn_len = (size_t)sqlite3_column_bytes(st, 4);
        fits = ca != NULL && ca_len < sizeof(out->ca) && tid != NULL &&
               tid_len <= sizeof(out->tid) && sn != NULL && sn_len <= sizeof(out->serial);
        if (fits) {
            memcpy(out->ca, ca, ca_len);
            out->ca[ca_len] = '\0';
            memcpy(out->tid, tid, tid_len);
            out->tid_len = tid_len;
            memcpy(out->serial, sn, sn_len);
            out->serial_len = sn_len;
        }
    }
    store_sq_done(st);
    CM_ENSURE(rc != SQLITE_DONE, STORE_E_PENDING_UNKNOWN);
    if (rc != SQLITE_ROW) {
        return store_sq_fail(b->db, rc, "pending row");
    }
    CM_ENSURE(fits, STORE_E_CORRUPT); // written by PENDING_ADD within these bounds
    return cm_result_make(CM_OK);
}

// store_sq_pend_release gives back the reservation of the transaction (ca, tid) as
// STORE_OP_TXN_UNRESERVE does, but keeps its txn row (its credential): the serial, the key and
// the certificate a kur replaces are free again (only while it has no certificate) and, when the
// row's reservation counted a use of a limited credential, that use. A reservation already gone
// (expired) is not an error. A kur's pending update ends: the job reports it to the cache.
static cm_result store_sq_pend_release(store_backend *b, store_job *job, const char *ca,
                                       cm_span tid, bool counted)
{
    sqlite3_stmt *st = b->st[SQW_PEND_RSV];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, tid);
    int rc = sqlite3_step(st);
    int protection = 0;
    uint8_t cred[512];
    size_t cred_len = 0;
    bool replaces = false;
    if (rc == SQLITE_ROW) {
        protection = sqlite3_column_int(st, 0);
        const void *c = sqlite3_column_blob(st, 1);
        const size_t n = (size_t)sqlite3_column_bytes(st, 1);
        if (c != NULL && n <= sizeof(cred)) {
            memcpy(cred, c, n);
            cred_len = n;
        }
        replaces = sqlite3_column_type(st, 2) != SQLITE_NULL;
    }
    store_sq_done(st);
    if (rc == SQLITE_DONE) {
        return cm_result_make(CM_OK);
    }
    if (rc != SQLITE_ROW) {
        return store_sq_fail(b->db, rc, "pending reservation");
    }
    // The row stays (its credential authenticates the pollReq that collects the rejection);
    // what it reserved goes: the serial, the key, the certificate it would have replaced.
    st = b->st[SQW_PEND_UNRESERVE];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, tid);
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_UNRESERVE, NULL));
    if (replaces) {
        job->changed_many = true; // rare: a rejected key update; its serial is not at hand here
    }
    if (counted) {
        st = b->st[SQW_USE_RETURN];
        store_sq_bind_text(st, 1, ca);
        (void)sqlite3_bind_int(st, 2, protection);
        store_sq_bind_span(st, 3, cm_span_make(cred, cred_len));
        CM_TRY(store_sq_pend_simple(b, SQW_USE_RETURN, NULL));
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_pend_add(store_backend *b, store_job *job)
{
    const store_pending *p = &job->u.pend;
    CM_TRY(store_sq_reserve_rsv(b, job, p->rsv));
    sqlite3_stmt *st = b->st[SQW_PEND_TXN_NOTE];
    store_sq_bind_text(st, 1, p->ca);
    store_sq_bind_span(st, 2, p->transaction_id);
    (void)sqlite3_bind_int64(st, 3, p->txn_flags);
    store_sq_bind_span(st, 4, p->request_nonce);
    store_sq_bind_span(st, 5, p->signer_cert);
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_TXN_NOTE, NULL));
    st = b->st[SQW_PEND_INSERT];
    store_sq_bind_text(st, 1, p->ca);
    store_sq_bind_span(st, 2, p->transaction_id);
    (void)sqlite3_bind_int64(st, 3, p->body_type);
    (void)sqlite3_bind_int64(st, 4, p->cert_req_id);
    (void)sqlite3_bind_int(st, 5, (int)p->why);
    (void)sqlite3_bind_int(st, 6, (int)p->state);
    store_sq_bind_text(st, 7, p->profile);
    store_sq_bind_text(st, 8, p->subject);
    store_sq_bind_text(st, 9, p->key_type);
    store_sq_bind_text(st, 10, p->requester);
    (void)sqlite3_bind_int64(st, 11, p->created_at);
    (void)sqlite3_bind_int64(st, 12, p->expires_at);
    store_sq_bind_span(st, 13, p->tbs);
    store_sq_bind_span(st, 14, p->serial);
    (void)sqlite3_bind_int64(st, 15, p->flags);
    (void)sqlite3_bind_int(st, 16, p->rsv->max_uses > 0 ? 1 : 0);
    store_sq_bind_text(st, 17, p->status_text);
    store_sq_bind_span(st, 18, p->replaces);
    const int rc = store_sq_step_done(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        // A row of this transaction exists (its reservation was given back meanwhile, so the
        // txn row did not refuse): the transactionID is in use all the same.
        CM_BAIL(STORE_E_TXN_IN_USE);
    }
    if (rc != SQLITE_DONE) {
        cm_log(CM_LOG_WARN, "store: pending row refused: %s", sqlite3_errmsg(b->db));
        CM_BAIL((rc & 0xff) == SQLITE_CONSTRAINT ? STORE_E_INVALID : STORE_E_DB);
    }
    job->out_value = (uint64_t)sqlite3_last_insert_rowid(b->db);
    return cm_result_make(CM_OK);
}

// store_sq_pend_changed explains an UPDATE that changed no row: the row is gone, or in another
// state than the op allows.
static cm_result store_sq_pend_changed(store_backend *b, int64_t id, int64_t changes)
{
    if (changes == 1) {
        return cm_result_make(CM_OK);
    }
    store_sq_pend_row row;
    CM_TRY(store_sq_pend_read(b, id, &row));
    CM_BAIL(STORE_E_PENDING_STATE);
}

static cm_result store_sq_pend_claim(store_backend *b, const store_pending_op *o)
{
    sqlite3_stmt *st = b->st[SQW_PEND_CLAIM];
    (void)sqlite3_bind_int64(st, 1, o->id);
    (void)sqlite3_bind_int64(st, 2, o->time);
    (void)sqlite3_bind_int64(st, 3, o->stale_before);
    int64_t n = 0;
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_CLAIM, &n));
    return store_sq_pend_changed(b, o->id, n);
}

// store_sq_pend_reject rejects |row| (one of |states_also|, -1 for none, besides the waiting
// states) with the op's failure and gives its reservation back.
static cm_result store_sq_pend_reject(store_backend *b, store_job *job,
                                      const store_sq_pend_row *row, const store_pending_op *o,
                                      int state_also)
{
    sqlite3_stmt *st = b->st[SQW_PEND_REJECT];
    (void)sqlite3_bind_int64(st, 1, row->id);
    (void)sqlite3_bind_int64(st, 2, o->time);
    (void)sqlite3_bind_int(st, 3, o->fail_info);
    store_sq_bind_text(st, 4, o->status_text);
    (void)sqlite3_bind_int64(st, 5, o->time + o->keep_s);
    (void)sqlite3_bind_int(st, 6, state_also);
    int64_t n = 0;
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_REJECT, &n));
    CM_ENSURE(n == 1, STORE_E_PENDING_STATE);
    return store_sq_pend_release(b, job, row->ca, cm_span_make(row->tid, row->tid_len),
                                 row->counted);
}

static cm_result store_sq_pend_decide(store_backend *b, store_job *job)
{
    const store_pending_op *o = &job->u.pop;
    if (o->approve) {
        sqlite3_stmt *st = b->st[SQW_PEND_APPROVE];
        (void)sqlite3_bind_int64(st, 1, o->id);
        (void)sqlite3_bind_int64(st, 2, o->time);
        int64_t n = 0;
        CM_TRY(store_sq_pend_simple(b, SQW_PEND_APPROVE, &n));
        return store_sq_pend_changed(b, o->id, n);
    }
    store_sq_pend_row row;
    CM_TRY(store_sq_pend_read(b, o->id, &row));
    CM_ENSURE(row.state <= STORE_PENDING_SIGNING, STORE_E_PENDING_STATE);
    return store_sq_pend_reject(b, job, &row, o, -1);
}

static cm_result store_sq_pend_issue(store_backend *b, store_job *job)
{
    const store_pending_op *o = &job->u.pop;
    const store_cert *c = o->cert;
    sqlite3_stmt *st = b->st[SQW_PEND_ISSUED];
    (void)sqlite3_bind_int64(st, 1, o->id);
    int64_t n = 0;
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_ISSUED, &n));
    CM_TRY(store_sq_pend_changed(b, o->id, n));
    // The certificate first: the transaction row then names it (its foreign key).
    cm_result r = store_sq_insert_cert(b, job, c);
    if (r.code == STORE_E_DUPLICATE_SERIAL) {
        // Another drain recorded it (this one's claim went stale meanwhile): this record fails,
        // the other stands.
        CM_BAIL(STORE_E_PENDING_STATE);
    }
    CM_TRY(r);
    st = b->st[SQW_PEND_TXN_ISSUE];
    store_sq_bind_text(st, 1, c->ca);
    store_sq_bind_span(st, 2, c->transaction_id);
    (void)sqlite3_bind_int64(st, 3, o->txn_state);
    store_sq_bind_span(st, 4, c->serial);
    (void)sqlite3_bind_int64(st, 5, o->txn_expires_at);
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_TXN_ISSUE, &n));
    CM_ENSURE(n == 1, STORE_E_TXN_NOT_FOUND);
    return cm_result_make(CM_OK);
}

static cm_result store_sq_pend_deliver(store_backend *b, const store_pending_op *o)
{
    sqlite3_stmt *st = b->st[SQW_PEND_ROW_TID];
    store_sq_bind_text(st, 1, o->ca);
    store_sq_bind_span(st, 2, o->transaction_id);
    int rc = sqlite3_step(st);
    int state = -1;
    uint8_t serial[20];
    size_t serial_len = 0;
    if (rc == SQLITE_ROW) {
        state = sqlite3_column_int(st, 0);
        const void *sn = sqlite3_column_blob(st, 2);
        const size_t n = (size_t)sqlite3_column_bytes(st, 2);
        if (sn != NULL && n <= sizeof(serial)) {
            memcpy(serial, sn, n);
            serial_len = n;
        }
    }
    store_sq_done(st);
    CM_ENSURE(rc != SQLITE_DONE, STORE_E_PENDING_UNKNOWN);
    if (rc != SQLITE_ROW) {
        return store_sq_fail(b->db, rc, "pending row");
    }
    CM_ENSURE(state >= STORE_PENDING_ISSUED, STORE_E_PENDING_STATE);
    st = b->st[SQW_PEND_DELIVER];
    store_sq_bind_text(st, 1, o->ca);
    store_sq_bind_span(st, 2, o->transaction_id);
    (void)sqlite3_bind_int64(st, 3, o->txn_expires_at);
    int64_t n = 0;
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_DELIVER, &n));
    CM_ENSURE(n == 1, STORE_E_PENDING_STATE);
    if (state == STORE_PENDING_REJECTED) {
        return cm_result_make(CM_OK);
    }
    // Issued (or delivered again): certConf answers this delivery's senderNonce, and the
    // certificate waits for it from now on.
    st = b->st[SQW_PEND_TXN_DELIVER];
    store_sq_bind_text(st, 1, o->ca);
    store_sq_bind_span(st, 2, o->transaction_id);
    store_sq_bind_span(st, 3, o->sender_nonce);
    (void)sqlite3_bind_int64(st, 4, o->txn_expires_at);
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_TXN_DELIVER, &n));
    CM_ENSURE(n == 1, STORE_E_TXN_NOT_FOUND);
    if (o->confirm_deadline != 0) {
        st = b->st[SQW_PEND_CERT_DEADLINE];
        store_sq_bind_text(st, 1, o->ca);
        store_sq_bind_span(st, 2, cm_span_make(serial, serial_len));
        (void)sqlite3_bind_int64(st, 3, o->confirm_deadline);
        CM_TRY(store_sq_pend_simple(b, SQW_PEND_CERT_DEADLINE, NULL));
    }
    return cm_result_make(CM_OK);
}

// store_sq_pend_expire_one rejects one row past its expiry; an issued one's certificate was
// never delivered, so it is revoked (reason cessationOfOperation, as the sweep does).
static cm_result store_sq_pend_expire_one(store_backend *b, store_job *job, int64_t id)
{
    const store_pending_op *o = &job->u.pop;
    store_sq_pend_row row;
    CM_TRY(store_sq_pend_read(b, id, &row));
    if (row.state == STORE_PENDING_ISSUED) {
        sqlite3_stmt *st = b->st[SQW_CERT_STATUS];
        store_sq_bind_text(st, 1, row.ca);
        store_sq_bind_span(st, 2, cm_span_make(row.serial, row.serial_len));
        const int rc = sqlite3_step(st);
        const char *status = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        int cs = -1;
        for (int i = 0; i < 4 && status != NULL; i++) {
            if (strcmp(status, store_sq_status_text[i]) == 0) {
                cs = i;
            }
        }
        store_sq_done(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            return store_sq_fail(b->db, rc, "pending certificate");
        }
        if (cs == STORE_CERT_UNCONFIRMED || cs == STORE_CERT_VALID) {
            CM_TRY(store_sq_revoke_row(b, row.ca, cm_span_make(row.serial, row.serial_len),
                                       (store_cert_status)cs, o->time,
                                       STORE_REASON_CESSATION_OF_OPERATION));
        }
    }
    job->changed_many = true;
    return store_sq_pend_reject(b, job, &row, o, STORE_PENDING_ISSUED);
}

static cm_result store_sq_pend_expire(store_backend *b, store_job *job)
{
    const store_pending_op *o = &job->u.pop;
    sqlite3_stmt *st = b->st[SQW_PEND_PURGE];
    (void)sqlite3_bind_int64(st, 1, o->time);
    int64_t purged = 0;
    CM_TRY(store_sq_pend_simple(b, SQW_PEND_PURGE, &purged));
    // The rows to reject are read first (at most 1024 per job; the next maintenance pass takes
    // the rest), then changed: a statement is not stepped while its table changes.
    int64_t ids[1024];
    size_t n = 0;
    st = b->st[SQW_PEND_EXPIRED];
    (void)sqlite3_bind_int64(st, 1, o->time);
    int rc;
    while (n < sizeof(ids) / sizeof(ids[0]) && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        ids[n++] = sqlite3_column_int64(st, 0);
    }
    if (n < sizeof(ids) / sizeof(ids[0]) && rc != SQLITE_DONE) {
        store_sq_done(st);
        return store_sq_fail(b->db, rc, "pending expiry");
    }
    store_sq_done(st);
    for (size_t i = 0; i < n; i++) {
        CM_TRY(store_sq_pend_expire_one(b, job, ids[i]));
    }
    job->out_value = (uint64_t)purged + n;
    return cm_result_make(CM_OK);
}

bool store_sq_pending_multi(store_op op)
{
    // Only the claim is a single statement (the rest read, then write, or write several rows).
    return op == STORE_OP_PENDING_ADD || op == STORE_OP_PENDING_DECIDE ||
           op == STORE_OP_PENDING_ISSUE || op == STORE_OP_PENDING_DELIVER ||
           op == STORE_OP_PENDING_EXPIRE;
}

cm_result store_sq_pending_exec(store_backend *b, store_job *job)
{
    switch (job->op) {
    case STORE_OP_PENDING_ADD:
        return store_sq_pend_add(b, job);
    case STORE_OP_PENDING_CLAIM:
        return store_sq_pend_claim(b, &job->u.pop);
    case STORE_OP_PENDING_DECIDE:
        return store_sq_pend_decide(b, job);
    case STORE_OP_PENDING_ISSUE:
        return store_sq_pend_issue(b, job);
    case STORE_OP_PENDING_DELIVER:
        return store_sq_pend_deliver(b, &job->u.pop);
    case STORE_OP_PENDING_EXPIRE:
        return store_sq_pend_expire(b, job);
    default:
        CM_BAIL(STORE_E_INVALID);
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

// store_sq_pend_row_read fills |p| from a row of STORE_SQ_PENDING_COLS, copies in |a| (NULL:
// views into the row).
static cm_result store_sq_pend_row_read(sqlite3_stmt *st, cm_arena *a, store_pending *p)
{
    memset(p, 0, sizeof(*p));
    p->id = sqlite3_column_int64(st, 0);
    CM_TRY(store_sq_col_text(st, 1, a, &p->ca));
    CM_TRY(store_sq_col_span(st, 2, a, &p->transaction_id));
    p->body_type = (uint32_t)sqlite3_column_int64(st, 3);
    p->cert_req_id = sqlite3_column_int64(st, 4);
    p->why = (store_pending_why)sqlite3_column_int(st, 5);
    const int state = sqlite3_column_int(st, 6);
    CM_ENSURE(state >= 0 && state < STORE_PENDING_NUM_STATES, STORE_E_CORRUPT);
    p->state = (store_pending_state)state;
    if (sqlite3_column_type(st, 7) != SQLITE_NULL) {
        CM_TRY(store_sq_col_text(st, 7, a, &p->profile));
    }
    CM_TRY(store_sq_col_text(st, 8, a, &p->subject));
    CM_TRY(store_sq_col_text(st, 9, a, &p->key_type));
    CM_TRY(store_sq_col_text(st, 10, a, &p->requester));
    p->created_at = sqlite3_column_int64(st, 11);
    p->expires_at = sqlite3_column_int64(st, 12);
    p->claimed_at = sqlite3_column_int64(st, 13);
    p->decided_at = sqlite3_column_int64(st, 14);
    CM_TRY(store_sq_col_span(st, 15, a, &p->tbs));
    CM_TRY(store_sq_col_span(st, 16, a, &p->serial));
    p->flags = (uint32_t)sqlite3_column_int64(st, 17);
    p->fail_info = sqlite3_column_type(st, 18) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 18);
    if (sqlite3_column_type(st, 19) != SQLITE_NULL) {
        CM_TRY(store_sq_col_text(st, 19, a, &p->status_text));
    }
    CM_TRY(store_sq_col_span(st, 20, a, &p->replaces));
    p->counted = sqlite3_column_int(st, 21) != 0;
    return cm_result_make(CM_OK);
}

// store_sq_pend_one runs a one-row lookup already bound on |st|.
static cm_result store_sq_pend_one(store_backend_reader *r, sqlite3_stmt *st, cm_arena *a,
                                   store_pending *out)
{
    const int rc = sqlite3_step(st);
    cm_result res;
    if (rc == SQLITE_ROW) {
        res = store_sq_pend_row_read(st, a, out);
    } else if (rc == SQLITE_DONE) {
        res = cm_bail_note(STORE_E_PENDING_UNKNOWN, __FILE__, __LINE__);
    } else {
        res = store_sq_fail(r->db, rc, "pending lookup");
    }
    store_sq_done(st); // ends the read transaction
    return res;
}

cm_result store_sq_pending_get(store_backend_reader *r, cm_arena *a, store_pending *out,
                               const char *ca, cm_span transaction_id)
{
    sqlite3_stmt *st = r->st[SQR_PEND_GET];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, transaction_id);
    return store_sq_pend_one(r, st, a, out);
}

cm_result store_sq_pending_get_id(store_backend_reader *r, cm_arena *a, store_pending *out,
                                  int64_t id)
{
    sqlite3_stmt *st = r->st[SQR_PEND_GET_ID];
    (void)sqlite3_bind_int64(st, 1, id);
    return store_sq_pend_one(r, st, a, out);
}

cm_result store_sq_pending_list(store_backend_reader *r, const store_pending_filter *f,
                                store_pending_fn fn, void *ctx)
{
    sqlite3_stmt *st = r->st[SQR_PEND_LIST];
    for (int i = 0; i < STORE_PENDING_NUM_STATES; i++) {
        const bool on = f->states == 0 || (f->states & (1u << i)) != 0;
        (void)sqlite3_bind_int(st, i + 1, on ? i : -1);
    }
    (void)sqlite3_bind_int64(st, 8, f->after_id);
    store_sq_bind_text(st, 9, f->ca);
    (void)sqlite3_bind_int64(st, 10, f->limit == 0 ? -1 : (int64_t)f->limit);
    cm_result res = cm_result_make(CM_OK);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_pending p;
        res = store_sq_pend_row_read(st, NULL, &p);
        if (!cm_ok(res) || !fn(ctx, &p)) {
            break;
        }
    }
    if (cm_ok(res) && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "pending list");
    }
    store_sq_done(st);
    return res;
}
