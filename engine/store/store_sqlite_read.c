// The SQLite backend's reads on a reader handle (store_sqlite.c opens them): the request path's
// lookups (certificate, transaction, CRL state), the listings for the admin tool and the CRL
// builder, and the integrity check. Each ends its statement, and so its read transaction,
// before returning.
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_sqlite_internal.h"

// store_sq_col_span returns column |i| as a span: pointing into the row when |a| is NULL
// (valid until the next step), else copied into |a|.
cm_result store_sq_col_span(sqlite3_stmt *st, int i, cm_arena *a, cm_span *out)
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
cm_result store_sq_col_text(sqlite3_stmt *st, int i, cm_arena *a, const char **out)
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
        if (status != NULL && strcmp(status, store_sq_status_text[i]) == 0) {
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
    CM_TRY(store_sq_col_span(st, 17, a, &c->replaces));
    c->revoke_replaced = sqlite3_column_int(st, 18) != 0;
    c->superseded_at = sqlite3_column_int64(st, 19);
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

cm_result store_sq_cert_get(store_backend_reader *r, cm_arena *a, store_cert *out, const char *ca,
                            cm_span serial)
{
    return store_sq_get_cert(r, SQR_CERT_GET, a, out, ca, serial);
}

cm_result store_sq_cert_get_by_txn(store_backend_reader *r, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span transaction_id)
{
    return store_sq_get_cert(r, SQR_CERT_BY_TXN, a, out, ca, transaction_id);
}

cm_result store_sq_txn_get(store_backend_reader *r, cm_arena *a, store_txn *out, const char *ca,
                           cm_span transaction_id)
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
        out->flags = (uint32_t)sqlite3_column_int64(st, 6);
        res = store_sq_col_span(st, 1, a, &out->sender_nonce);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 2, a, &out->serial);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 4, a, &out->credential);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 7, a, &out->request_nonce);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 8, a, &out->signer_cert);
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
    store_sq_bind_text(st, 2, f->status == STORE_CERT_ANY ? NULL : store_sq_status_text[f->status]);
    store_sq_bind_text(st, 3, f->subject_substr);
}

cm_result store_sq_cert_list(store_backend_reader *r, const store_filter *f, store_cert_fn fn,
                             void *ctx)
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

cm_result store_sq_cert_count(store_backend_reader *r, const store_filter *f, uint64_t *out_count)
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

cm_result store_sq_revoked_list(store_backend_reader *r, const char *ca, int64_t not_after_min,
                                store_revoked_fn fn, void *ctx)
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

cm_result store_sq_crl_get(store_backend_reader *r, cm_arena *a, store_crl *out, const char *ca)
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

bool store_sq_row_state(sqlite3_stmt *st, store_cert_state *out)
{
    memset(out, 0, sizeof(*out));
    const char *status = (const char *)sqlite3_column_text(st, 0);
    out->status = STORE_CERT_ANY;
    for (int i = 0; i < 4; i++) {
        if (status != NULL && strcmp(status, store_sq_status_text[i]) == 0) {
            out->status = (store_cert_status)i;
        }
    }
    out->not_after = sqlite3_column_int64(st, 1);
    out->reason = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 2);
    out->superseded_at = sqlite3_column_int64(st, 3);
    out->update_pending = sqlite3_column_int(st, 4) != 0;
    return out->status != STORE_CERT_ANY;
}

cm_result store_sq_cert_state(store_backend_reader *r, store_cert_state *out, const char *ca,
                              cm_span serial)
{
    sqlite3_stmt *st = r->st[SQR_CERT_STATE];
    store_sq_bind_text(st, 1, ca);
    store_sq_bind_span(st, 2, serial);
    int rc = sqlite3_step(st);
    cm_result res = cm_result_make(CM_OK);
    if (rc == SQLITE_ROW) {
        if (!store_sq_row_state(st, out)) {
            res = cm_bail_note(STORE_E_CORRUPT, __FILE__, __LINE__);
        }
    } else if (rc == SQLITE_DONE) {
        res = cm_bail_note(STORE_E_NOT_FOUND, __FILE__, __LINE__);
    } else {
        res = store_sq_fail(r->db, rc, "certificate state");
    }
    store_sq_done(st); // ends the read transaction
    return res;
}

cm_result store_sq_check(store_backend_reader *r)
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

cm_result store_sq_txn_list(store_backend_reader *r, store_txn_fn fn, void *ctx)
{
    sqlite3_stmt *st = r->st[SQR_TXN_LIST];
    cm_result res = cm_result_make(CM_OK);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_txn t;
        memset(&t, 0, sizeof(t));
        res = store_sq_col_text(st, 0, NULL, &t.ca);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 1, NULL, &t.transaction_id);
        }
        t.state = (uint32_t)sqlite3_column_int64(st, 2);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 3, NULL, &t.sender_nonce);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 4, NULL, &t.serial);
        }
        t.protection = (store_auth_kind)sqlite3_column_int(st, 5);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 6, NULL, &t.credential);
        }
        t.expires_at = sqlite3_column_int64(st, 7);
        t.flags = (uint32_t)sqlite3_column_int64(st, 8);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 9, NULL, &t.request_nonce);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 11, NULL, &t.reserved_serial);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 12, NULL, &t.spki_sha256);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 13, NULL, &t.replaces);
        }
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 10, NULL, &t.signer_cert);
        }
        if (!cm_ok(res) || !fn(ctx, &t)) {
            break;
        }
    }
    if (cm_ok(res) && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "transaction list");
    }
    store_sq_done(st);
    return res;
}

cm_result store_sq_crl_list(store_backend_reader *r, store_crl_fn fn, void *ctx)
{
    sqlite3_stmt *st = r->st[SQR_CRL_LIST];
    cm_result res = cm_result_make(CM_OK);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_crl c;
        memset(&c, 0, sizeof(c));
        res = store_sq_col_text(st, 0, NULL, &c.ca);
        c.crl_number = (uint64_t)sqlite3_column_int64(st, 1);
        c.numbers_issued = (uint64_t)sqlite3_column_int64(st, 2);
        c.revision = (uint64_t)sqlite3_column_int64(st, 3);
        c.built_revision = (uint64_t)sqlite3_column_int64(st, 4);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 5, NULL, &c.crl_der);
        }
        c.this_update = sqlite3_column_int64(st, 6);
        c.next_update = sqlite3_column_int64(st, 7);
        if (!cm_ok(res) || !fn(ctx, &c)) {
            break;
        }
    }
    if (cm_ok(res) && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "CRL state list");
    }
    store_sq_done(st);
    return res;
}

cm_result store_sq_use_list(store_backend_reader *r, store_use_fn fn, void *ctx)
{
    sqlite3_stmt *st = r->st[SQR_USE_LIST];
    cm_result res = cm_result_make(CM_OK);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_use u;
        memset(&u, 0, sizeof(u));
        res = store_sq_col_text(st, 0, NULL, &u.ca);
        u.kind = (store_auth_kind)sqlite3_column_int(st, 1);
        if (cm_ok(res)) {
            res = store_sq_col_span(st, 2, NULL, &u.credential);
        }
        const int64_t used = sqlite3_column_int64(st, 3);
        u.used = used > 0 ? (uint64_t)used : 0;
        if (!cm_ok(res) || !fn(ctx, &u)) {
            break;
        }
    }
    if (cm_ok(res) && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = store_sq_fail(r->db, rc, "credential use list");
    }
    store_sq_done(st);
    return res;
}
