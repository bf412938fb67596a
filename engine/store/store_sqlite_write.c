// The SQLite backend's writes: the batch transaction and each job's statements, run on the
// store's writer thread (store.c) inside the batch transaction.
#include <stdbool.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_sqlite_internal.h"

// ---------------------------------------------------------------------------------------------
// Write operations (writer thread, inside the batch transaction)

static cm_result store_sq_simple(store_backend *b, int idx)
{
    int rc = store_sq_step_done(b->st[idx]);
    if (rc != SQLITE_DONE) {
        return store_sq_fail(b->db, rc, store_sq_write_sql[idx]);
    }
    return cm_result_make(CM_OK);
}

cm_result store_sq_begin(store_backend *b)
{
    return store_sq_simple(b, SQW_BEGIN);
}

cm_result store_sq_commit(store_backend *b)
{
    return store_sq_simple(b, SQW_COMMIT);
}

void store_sq_rollback(store_backend *b)
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
    store_sq_bind_text(st, 8, store_sq_status_text[c->status]);
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
            if (status != NULL && strcmp(status, store_sq_status_text[i]) == 0) {
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
    store_sq_bind_text(st, 3, store_sq_status_text[hold ? STORE_CERT_HOLD : STORE_CERT_REVOKED]);
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

static cm_result store_sq_copy_cert(store_backend *b, const store_cert *c)
{
    sqlite3_stmt *st = b->st[SQW_COPY_CERT];
    const bool revoked = c->status == STORE_CERT_REVOKED || c->status == STORE_CERT_HOLD;
    store_sq_bind_text(st, 1, c->ca);
    store_sq_bind_span(st, 2, c->serial);
    store_sq_bind_span(st, 3, c->subject_der);
    store_sq_bind_text(st, 4, c->subject_text);
    (void)sqlite3_bind_int64(st, 5, c->not_before);
    (void)sqlite3_bind_int64(st, 6, c->not_after);
    store_sq_bind_span(st, 7, c->spki_sha256);
    store_sq_bind_text(st, 8, store_sq_status_text[c->status]);
    if (revoked) {
        (void)sqlite3_bind_int64(st, 9, c->revoked_at);
        (void)sqlite3_bind_int(st, 10, c->reason);
    } else {
        (void)sqlite3_bind_null(st, 9);
        (void)sqlite3_bind_null(st, 10);
    }
    store_sq_bind_span(st, 11, c->transaction_id);
    (void)sqlite3_bind_int(st, 12, (int)c->requester_kind);
    store_sq_bind_span(st, 13, c->requester);
    store_sq_bind_span(st, 14, c->cert_der);
    (void)sqlite3_bind_int64(st, 15, c->issued_at);
    store_sq_bind_time(st, 16, c->status == STORE_CERT_UNCONFIRMED ? c->confirm_deadline : 0);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_DUPLICATE_SERIAL, STORE_E_INVALID);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_copy_crl(store_backend *b, const store_crl *c)
{
    sqlite3_stmt *st = b->st[SQW_COPY_CRL];
    store_sq_bind_text(st, 1, c->ca);
    (void)sqlite3_bind_int64(st, 2, (int64_t)c->numbers_issued);
    (void)sqlite3_bind_int64(st, 3, (int64_t)c->revision);
    (void)sqlite3_bind_int64(st, 4, (int64_t)c->built_revision);
    store_sq_bind_span(st, 5, c->crl_der);
    (void)sqlite3_bind_int64(st, 6, (int64_t)c->crl_number);
    store_sq_bind_time(st, 7, c->this_update);
    store_sq_bind_time(st, 8, c->next_update);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_INVALID, STORE_E_INVALID);
    }
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
    case STORE_OP_COPY_CERT:
        return store_sq_copy_cert(b, &job->u.cert);
    case STORE_OP_COPY_CRL:
        return store_sq_copy_crl(b, &job->u.crl);
    case STORE_OP_COPY_CLEAR:
        return store_sq_exec(b->db, "DELETE FROM txn; DELETE FROM cert; DELETE FROM crl_state");
    }
    CM_BAIL(STORE_E_INVALID);
}

cm_result store_sq_exec_job(store_backend *b, store_job *job)
{
    // One statement is atomic by itself (a failed one is undone without touching the rest of
    // the transaction); ops made of several statements get a savepoint.
    bool multi = job->op == STORE_OP_CERT_CONFIRM || job->op == STORE_OP_CERT_REVOKE ||
                 job->op == STORE_OP_CERT_RELEASE || job->op == STORE_OP_SWEEP ||
                 job->op == STORE_OP_COPY_CLEAR;
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
