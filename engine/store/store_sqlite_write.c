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

// store_sq_cert_row is what the writer reads of a certificate before changing it.
typedef struct store_sq_cert_row {
    store_cert_status status;
    int64_t deadline;
    uint8_t replaces[20]; // the certificate it replaces (kur), replaces_len 0: none
    size_t replaces_len;
    bool revoke_replaced;
} store_sq_cert_row;

// store_sq_cert_status reads the status, confirm deadline and replaced certificate of
// (ca, serial).
static cm_result store_sq_cert_status(store_backend *b, const store_ref *ref,
                                      store_sq_cert_row *out)
{
    sqlite3_stmt *st = b->st[SQW_CERT_STATUS];
    store_sq_bind_text(st, 1, ref->ca);
    store_sq_bind_span(st, 2, ref->serial);
    memset(out, 0, sizeof(*out));
    out->status = STORE_CERT_ANY;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *status = (const char *)sqlite3_column_text(st, 0);
        for (int i = 0; i < 4; i++) {
            if (status != NULL && strcmp(status, store_sq_status_text[i]) == 0) {
                out->status = (store_cert_status)i;
            }
        }
        out->deadline = sqlite3_column_int64(st, 1);
        const void *rp = sqlite3_column_blob(st, 2);
        const size_t rn = (size_t)sqlite3_column_bytes(st, 2);
        if (rp != NULL && rn > 0 && rn <= sizeof(out->replaces)) {
            memcpy(out->replaces, rp, rn);
            out->replaces_len = rn;
        }
        out->revoke_replaced = sqlite3_column_int(st, 3) != 0;
    }
    store_sq_done(st);
    CM_ENSURE(rc != SQLITE_DONE, STORE_E_NOT_FOUND);
    if (rc != SQLITE_ROW) {
        return store_sq_fail(b->db, rc, "certificate status");
    }
    CM_ENSURE(out->status != STORE_CERT_ANY, STORE_E_CORRUPT);
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

// store_sq_revoke_row revokes (ca, serial), whose current status is |status|, at |time| with
// |reason| and bumps the CA's CRL revision.
cm_result store_sq_revoke_row(store_backend *b, const char *ca, cm_span serial,
                              store_cert_status status, int64_t time, int reason)
{
    bool hold = reason == STORE_REASON_CERTIFICATE_HOLD;
    // A held certificate may be revoked for good (RFC 5280 §5.3.1), not held twice.
    CM_ENSURE(status != STORE_CERT_REVOKED && !(status == STORE_CERT_HOLD && hold),
              STORE_E_ALREADY_REVOKED);
    sqlite3_stmt *st = b->st[SQW_CERT_REVOKE];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, serial);
    store_sq_bind_text(st, 3, store_sq_status_text[hold ? STORE_CERT_HOLD : STORE_CERT_REVOKED]);
    (void)sqlite3_bind_int64(st, 4, time);
    (void)sqlite3_bind_int(st, 5, reason);
    CM_TRY(store_sq_simple(b, SQW_CERT_REVOKE));
    return store_sq_crl_bump(b, ca);
}

// store_sq_supersede marks (ca, old) superseded at |time| now that the certificate replacing it
// is valid, and revokes it (reason superseded) when |revoke| and it is not revoked already. The
// job reports |old| for the status cache.
static cm_result store_sq_supersede(store_backend *b, store_job *job, const char *ca, cm_span old,
                                    int64_t time, bool revoke)
{
    CM_ENSURE(old.len <= sizeof(job->also_serial), STORE_E_INVALID);
    memcpy(job->also_serial, old.p, old.len);
    job->also_serial_len = old.len;
    sqlite3_stmt *st = b->st[SQW_SUPERSEDE];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, old);
    (void)sqlite3_bind_int64(st, 3, time);
    CM_TRY(store_sq_simple(b, SQW_SUPERSEDE));
    if (!revoke) {
        return cm_result_make(CM_OK);
    }
    const store_ref oref = {.ca = ca, .serial = old};
    store_sq_cert_row row;
    cm_result r = store_sq_cert_status(b, &oref, &row);
    if (r.code == STORE_E_NOT_FOUND) {
        return cm_result_make(CM_OK); // a replaced certificate this store does not hold
    }
    CM_TRY(r);
    if (row.status == STORE_CERT_REVOKED) {
        return cm_result_make(CM_OK);
    }
    return store_sq_revoke_row(b, ca, old, row.status, time, STORE_REASON_SUPERSEDED);
}

static cm_result store_sq_cert_insert(store_backend *b, store_job *job)
{
    return store_sq_insert_cert(b, job, &job->u.cert);
}

cm_result store_sq_insert_cert(store_backend *b, store_job *job, const store_cert *c)
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
    store_sq_bind_span(st, 15, c->replaces);
    (void)sqlite3_bind_int(st, 16, c->replaces.len != 0 && c->revoke_replaced ? 1 : 0);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_DUPLICATE_SERIAL, STORE_E_INVALID);
    }
    if (c->replaces.len == 0) {
        return cm_result_make(CM_OK);
    }
    if (c->status != STORE_CERT_VALID) {
        // An update now pending: the replaced certificate's status changed for the cache.
        memcpy(job->also_serial, c->replaces.p, c->replaces.len);
        job->also_serial_len = c->replaces.len;
        return cm_result_make(CM_OK);
    }
    // implicitConfirm: the update is complete at once.
    return store_sq_supersede(b, job, c->ca, c->replaces, c->issued_at, c->revoke_replaced);
}

// store_sq_note_replaced reports the certificate |row| replaces to the status cache: its update
// stopped being pending (the replacing certificate was revoked) or completed (confirmed).
static void store_sq_note_replaced(store_job *job, const store_sq_cert_row *row)
{
    memcpy(job->also_serial, row->replaces, row->replaces_len);
    job->also_serial_len = row->replaces_len;
}

static cm_result store_sq_cert_confirm(store_backend *b, store_job *job)
{
    const store_ref *ref = &job->u.ref;
    store_sq_cert_row row;
    CM_TRY(store_sq_cert_status(b, ref, &row));
    CM_ENSURE(row.status != STORE_CERT_VALID, STORE_E_ALREADY_CONFIRMED);
    CM_ENSURE(row.status == STORE_CERT_UNCONFIRMED, STORE_E_ALREADY_REVOKED);
    CM_ENSURE(ref->time == 0 || ref->time < row.deadline, STORE_E_CONFIRM_EXPIRED);
    CM_TRY(store_sq_update_ref(b, SQW_CERT_CONFIRM, ref));
    if (row.replaces_len == 0) {
        return cm_result_make(CM_OK);
    }
    // A confirmed kur: the certificate it replaces is superseded (RFC 9483 §4.1.3).
    return store_sq_supersede(b, job, ref->ca, cm_span_make(row.replaces, row.replaces_len),
                              ref->time != 0 ? ref->time : cm_time_now(), row.revoke_replaced);
}

static cm_result store_sq_cert_revoke(store_backend *b, store_job *job)
{
    const store_ref *ref = &job->u.ref;
    store_sq_cert_row row;
    CM_TRY(store_sq_cert_status(b, ref, &row));
    store_sq_note_replaced(job, &row);
    return store_sq_revoke_row(b, ref->ca, ref->serial, row.status, ref->time, ref->reason);
}

static cm_result store_sq_cert_release(store_backend *b, store_job *job)
{
    const store_ref *ref = &job->u.ref;
    store_sq_cert_row row;
    CM_TRY(store_sq_cert_status(b, ref, &row));
    CM_ENSURE(row.status == STORE_CERT_HOLD, STORE_E_NOT_ON_HOLD);
    store_sq_note_replaced(job, &row);
    CM_TRY(store_sq_update_ref(b, SQW_CERT_RELEASE, ref));
    return store_sq_crl_bump(b, ref->ca);
}

// store_sq_exists steps a one-row "SELECT 1 / SELECT EXISTS" statement already bound: true
// when it returned a row whose first column is non-zero.
static cm_result store_sq_exists(store_backend *b, int idx, bool *out)
{
    sqlite3_stmt *st = b->st[idx];
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
    store_sq_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return store_sq_fail(b->db, rc, store_sq_write_sql[idx]);
    }
    return cm_result_make(CM_OK);
}

// store_sq_reserve runs STORE_OP_TXN_RESERVE (store.h: store_reservation) inside the job's
// savepoint; any failure undoes all of it.
static cm_result store_sq_reserve(store_backend *b, store_job *job)
{
    return store_sq_reserve_rsv(b, job, &job->u.rsv);
}

cm_result store_sq_reserve_rsv(store_backend *b, store_job *job, const store_reservation *v)
{
    // The transaction row first: a duplicate transactionID is the common refusal.
    sqlite3_stmt *st = b->st[SQW_TXN_RESERVE];
    store_sq_bind_text(st, 1, v->ca);
    store_sq_bind_span(st, 2, v->transaction_id);
    (void)sqlite3_bind_int64(st, 3, v->state);
    (void)sqlite3_bind_int(st, 4, (int)v->protection);
    store_sq_bind_span(st, 5, v->credential);
    (void)sqlite3_bind_int64(st, 6, v->expires_at);
    store_sq_bind_span(st, 7, v->serial);
    store_sq_bind_span(st, 8, v->spki_sha256);
    store_sq_bind_span(st, 9, v->replaces);
    int rc = store_sq_step_done(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        CM_BAIL(STORE_E_DUPLICATE_SERIAL); // txn_reserved_serial: another reservation has it
    }
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_TXN_IN_USE, STORE_E_INVALID);
    }
    bool used = false;
    st = b->st[SQW_SERIAL_USED];
    store_sq_bind_text(st, 1, v->ca);
    store_sq_bind_span(st, 2, v->serial);
    CM_TRY(store_sq_exists(b, SQW_SERIAL_USED, &used));
    CM_ENSURE(!used, STORE_E_DUPLICATE_SERIAL);
    if (v->replaces.len != 0) {
        st = b->st[SQW_CERT_STATE];
        store_sq_bind_text(st, 1, v->ca);
        store_sq_bind_span(st, 2, v->replaces);
        rc = sqlite3_step(st);
        store_cert_state old;
        const bool row = rc == SQLITE_ROW && store_sq_row_state(st, &old);
        store_sq_done(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            return store_sq_fail(b->db, rc, "replaced certificate");
        }
        CM_ENSURE(rc == SQLITE_ROW, STORE_E_NOT_FOUND);
        CM_ENSURE(row, STORE_E_CORRUPT);
        CM_ENSURE(old.status != STORE_CERT_REVOKED && old.status != STORE_CERT_HOLD,
                  STORE_E_ALREADY_REVOKED);
        CM_ENSURE(old.status == STORE_CERT_VALID && old.superseded_at == 0, STORE_E_UPDATE_PENDING);
        // Another update of it: an unconfirmed certificate replacing it, or a reservation other
        // than ours without a certificate yet.
        st = b->st[SQW_UPDATE_BUSY];
        store_sq_bind_text(st, 1, v->ca);
        store_sq_bind_span(st, 2, v->replaces);
        store_sq_bind_span(st, 3, v->transaction_id);
        CM_TRY(store_sq_exists(b, SQW_UPDATE_BUSY, &used));
        CM_ENSURE(!used, STORE_E_UPDATE_PENDING);
        memcpy(job->also_serial, v->replaces.p, v->replaces.len);
        job->also_serial_len = v->replaces.len;
    }
    if (v->check_key) {
        st = b->st[SQW_KEY_USED];
        store_sq_bind_text(st, 1, v->ca);
        store_sq_bind_span(st, 2, v->spki_sha256);
        store_sq_bind_span(st, 3, v->transaction_id);
        CM_TRY(store_sq_exists(b, SQW_KEY_USED, &used));
        CM_ENSURE(!used, STORE_E_KEY_REUSED);
    }
    if (v->max_uses > 0) {
        st = b->st[SQW_USE_COUNT];
        store_sq_bind_text(st, 1, v->ca);
        (void)sqlite3_bind_int(st, 2, (int)v->protection);
        store_sq_bind_span(st, 3, v->credential);
        (void)sqlite3_bind_int64(st, 4, v->max_uses);
        rc = sqlite3_step(st);
        const bool counted = rc == SQLITE_ROW;
        if (counted) {
            rc = sqlite3_step(st);
        }
        store_sq_done(st);
        if (rc != SQLITE_DONE) {
            return store_sq_constraint(b, rc, STORE_E_INVALID, STORE_E_INVALID);
        }
        CM_ENSURE(counted, STORE_E_LIMIT);
    }
    return cm_result_make(CM_OK);
}

// store_sq_unreserve gives a reservation back: its row (only while it has no certificate) and
// the use it counted.
static cm_result store_sq_unreserve(store_backend *b, store_job *job)
{
    const store_reservation *v = &job->u.rsv;
    sqlite3_stmt *st = b->st[SQW_TXN_UNRESERVE];
    store_sq_bind_text(st, 1, v->ca);
    store_sq_bind_span(st, 2, v->transaction_id);
    CM_TRY(store_sq_simple(b, SQW_TXN_UNRESERVE));
    CM_ENSURE(sqlite3_changes64(b->db) == 1, STORE_E_TXN_NOT_FOUND);
    if (v->replaces.len != 0 && v->replaces.len <= sizeof(job->also_serial)) {
        memcpy(job->also_serial, v->replaces.p, v->replaces.len);
        job->also_serial_len = v->replaces.len;
    }
    if (v->max_uses > 0) {
        st = b->st[SQW_USE_RETURN];
        store_sq_bind_text(st, 1, v->ca);
        (void)sqlite3_bind_int(st, 2, (int)v->protection);
        store_sq_bind_span(st, 3, v->credential);
        CM_TRY(store_sq_simple(b, SQW_USE_RETURN));
    }
    return cm_result_make(CM_OK);
}

bool store_sq_changed_elsewhere(store_backend *b)
{
    sqlite3_stmt *st = b->st[SQW_DATA_VERSION];
    int rc = sqlite3_step(st);
    const int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    store_sq_done(st);
    // A failed read counts as a change: clearing the cache is always safe.
    const bool changed = v < 0 || v != b->data_version;
    b->data_version = v;
    return changed;
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
    (void)sqlite3_bind_int64(st, 9, t->flags);
    store_sq_bind_span(st, 10, t->request_nonce);
    store_sq_bind_span(st, 11, t->signer_cert);
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
    // An expiring reservation of a key update ends that update's pending state (a crash
    // between reservation and record): rare, so the whole status cache is cleared then.
    bool pending = false;
    (void)sqlite3_bind_int64(b->st[SQW_EXPIRE_PENDING], 1, job->u.ref.time);
    CM_TRY(store_sq_exists(b, SQW_EXPIRE_PENDING, &pending));
    job->changed_many = pending;
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
    job->changed_many = job->out_value != 0;
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
    store_sq_bind_span(st, 17, c->replaces);
    (void)sqlite3_bind_int(st, 18, c->replaces.len != 0 && c->revoke_replaced ? 1 : 0);
    store_sq_bind_time(st, 19, c->superseded_at);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_DUPLICATE_SERIAL, STORE_E_INVALID);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_copy_use(store_backend *b, const store_use *u)
{
    sqlite3_stmt *st = b->st[SQW_COPY_USE];
    store_sq_bind_text(st, 1, u->ca);
    (void)sqlite3_bind_int(st, 2, (int)u->kind);
    store_sq_bind_span(st, 3, u->credential);
    (void)sqlite3_bind_int64(st, 4, (int64_t)u->used);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_INVALID, STORE_E_INVALID);
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

static cm_result store_sq_copy_txn(store_backend *b, const store_txn *t)
{
    sqlite3_stmt *st = b->st[SQW_COPY_TXN];
    store_sq_bind_text(st, 1, t->ca);
    store_sq_bind_span(st, 2, t->transaction_id);
    (void)sqlite3_bind_int64(st, 3, t->state);
    store_sq_bind_span(st, 4, t->sender_nonce);
    store_sq_bind_span(st, 5, t->serial);
    (void)sqlite3_bind_int(st, 6, (int)t->protection);
    store_sq_bind_span(st, 7, t->credential);
    (void)sqlite3_bind_int64(st, 8, t->expires_at);
    (void)sqlite3_bind_int64(st, 9, t->flags);
    store_sq_bind_span(st, 10, t->request_nonce);
    store_sq_bind_span(st, 11, t->signer_cert);
    store_sq_bind_span(st, 12, t->reserved_serial);
    store_sq_bind_span(st, 13, t->spki_sha256);
    store_sq_bind_span(st, 14, t->replaces);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_TXN_IN_USE, STORE_E_NOT_FOUND);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_copy_pending(store_backend *b, const store_pending *p)
{
    sqlite3_stmt *st = b->st[SQW_COPY_PENDING];
    (void)sqlite3_bind_int64(st, 1, p->id);
    store_sq_bind_text(st, 2, p->ca);
    store_sq_bind_span(st, 3, p->transaction_id);
    (void)sqlite3_bind_int64(st, 4, (int64_t)p->body_type);
    (void)sqlite3_bind_int64(st, 5, p->cert_req_id);
    (void)sqlite3_bind_int(st, 6, (int)p->why);
    (void)sqlite3_bind_int(st, 7, (int)p->state);
    store_sq_bind_text(st, 8, p->profile);
    store_sq_bind_text(st, 9, p->subject);
    store_sq_bind_text(st, 10, p->key_type);
    store_sq_bind_text(st, 11, p->requester);
    (void)sqlite3_bind_int64(st, 12, p->created_at);
    (void)sqlite3_bind_int64(st, 13, p->expires_at);
    store_sq_bind_time(st, 14, p->claimed_at);
    store_sq_bind_time(st, 15, p->decided_at);
    store_sq_bind_span(st, 16, p->tbs);
    store_sq_bind_span(st, 17, p->serial);
    (void)sqlite3_bind_int64(st, 18, (int64_t)p->flags);
    if (p->fail_info < 0) {
        (void)sqlite3_bind_null(st, 19);
    } else {
        (void)sqlite3_bind_int(st, 19, p->fail_info);
    }
    store_sq_bind_text(st, 20, p->status_text);
    store_sq_bind_span(st, 21, p->replaces);
    (void)sqlite3_bind_int(st, 22, p->counted ? 1 : 0);
    int rc = store_sq_step_done(st);
    if (rc != SQLITE_DONE) {
        return store_sq_constraint(b, rc, STORE_E_TXN_IN_USE, STORE_E_INVALID);
    }
    return cm_result_make(CM_OK);
}

static cm_result store_sq_exec_op(store_backend *b, store_job *job)
{
    switch (job->op) {
    case STORE_OP_CERT_INSERT:
        return store_sq_cert_insert(b, job);
    case STORE_OP_CERT_CONFIRM:
        return store_sq_cert_confirm(b, job);
    case STORE_OP_CERT_REVOKE:
        return store_sq_cert_revoke(b, job);
    case STORE_OP_CERT_RELEASE:
        return store_sq_cert_release(b, job);
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
    case STORE_OP_TXN_RESERVE:
        return store_sq_reserve(b, job);
    case STORE_OP_TXN_UNRESERVE:
        return store_sq_unreserve(b, job);
    case STORE_OP_COPY_CERT:
        return store_sq_copy_cert(b, &job->u.cert);
    case STORE_OP_COPY_CRL:
        return store_sq_copy_crl(b, &job->u.crl);
    case STORE_OP_COPY_CLEAR:
        return store_sq_exec(b->db, "DELETE FROM pending; DELETE FROM txn; DELETE FROM cert; "
                                    "DELETE FROM crl_state; DELETE FROM credential_use");
    case STORE_OP_COPY_USE:
        return store_sq_copy_use(b, &job->u.use);
    case STORE_OP_COPY_TXN:
        return store_sq_copy_txn(b, &job->u.txn);
    case STORE_OP_COPY_PENDING:
        return store_sq_copy_pending(b, &job->u.pend);
    case STORE_OP_PENDING_ADD:
    case STORE_OP_PENDING_CLAIM:
    case STORE_OP_PENDING_DECIDE:
    case STORE_OP_PENDING_ISSUE:
    case STORE_OP_PENDING_DELIVER:
    case STORE_OP_PENDING_EXPIRE:
        return store_sq_pending_exec(b, job);
    }
    CM_BAIL(STORE_E_INVALID);
}

cm_result store_sq_exec_job(store_backend *b, store_job *job)
{
    // One statement is atomic by itself (a failed one is undone without touching the rest of
    // the transaction); ops made of several statements get a savepoint.
    bool multi = job->op == STORE_OP_CERT_CONFIRM || job->op == STORE_OP_CERT_REVOKE ||
                 job->op == STORE_OP_CERT_RELEASE || job->op == STORE_OP_SWEEP ||
                 job->op == STORE_OP_TXN_RESERVE || job->op == STORE_OP_TXN_UNRESERVE ||
                 (job->op == STORE_OP_CERT_INSERT && job->u.cert.replaces.len != 0) ||
                 job->op == STORE_OP_COPY_CLEAR || store_sq_pending_multi(job->op);
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
