// The PostgreSQL backend's reads on a reader handle (store_pg.c opens them), with binary
// results: the request path's lookups, the listings for the admin tool, the CRL builder and
// store copy (paged, since libpq holds a result in memory whole), and the integrity check.
// A lost connection fails the read with STORE_E_UNAVAILABLE; the next read reconnects (with
// backoff).
#include <stdio.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_pg_internal.h"

// Rows per page of a listing.
#define STORE_PG_PAGE 500

// store_pg_query runs reader statement |idx| with |p| and expects rows (binary results).
static cm_result store_pg_query(store_backend_reader *r, int idx, const store_pg_params *p,
                                PGresult **out_res)
{
    *out_res = NULL;
    CM_TRY(store_pg_conn_ready(&r->c));
    char name[32];
    (void)snprintf(name, sizeof(name), "cm_r%d", idx);
    PGresult *res = PQexecPrepared(r->c.pg, name, p->n, p->values, p->lengths, p->formats, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cm_result f = store_pg_fail(&r->c, res, "read");
        PQclear(res);
        return f;
    }
    *out_res = res;
    return cm_result_make(CM_OK);
}

// Binary column values: integers big-endian (int4 or int8), text and bytea as their bytes
// (libpq appends a NUL to every value, so text is a C string).
static int64_t store_pg_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        return 0;
    }
    const uint8_t *v = (const uint8_t *)PQgetvalue(res, row, col);
    const int len = PQgetlength(res, row, col);
    uint64_t u = 0;
    for (int i = 0; i < len && i < 8; i++) {
        u = (u << 8) | v[i];
    }
    if (len == 4) {
        return (int64_t)(int32_t)(uint32_t)u;
    }
    return (int64_t)u;
}

// store_pg_col_span returns column |col| as a span into the result when |a| is NULL, else
// copied into |a|; empty for NULL.
static cm_result store_pg_col_span(const PGresult *res, int row, int col, cm_arena *a, cm_span *out)
{
    *out = cm_span_make(NULL, 0);
    if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) == 0) {
        return cm_result_make(CM_OK);
    }
    cm_span v = cm_span_make(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
    if (a == NULL) {
        *out = v;
        return cm_result_make(CM_OK);
    }
    uint8_t *copy = cm_arena_memdup(a, v);
    CM_ENSURE(copy != NULL, CM_E_NOMEM);
    *out = cm_span_make(copy, v.len);
    return cm_result_make(CM_OK);
}

static cm_result store_pg_col_text(const PGresult *res, int row, int col, cm_arena *a,
                                   const char **out)
{
    *out = "";
    if (PQgetisnull(res, row, col)) {
        return cm_result_make(CM_OK);
    }
    const char *v = PQgetvalue(res, row, col);
    if (a == NULL) {
        *out = v;
        return cm_result_make(CM_OK);
    }
    const size_t len = (size_t)PQgetlength(res, row, col);
    char *copy = cm_arena_alloc(a, len + 1);
    CM_ENSURE(copy != NULL, CM_E_NOMEM);
    memcpy(copy, v, len);
    copy[len] = '\0';
    *out = copy;
    return cm_result_make(CM_OK);
}

// store_pg_row_cert fills |c| from row |row| of STORE_PG_CERT_COLS.
static cm_result store_pg_row_cert(const PGresult *res, int row, cm_arena *a, store_cert *c)
{
    memset(c, 0, sizeof(*c));
    c->id = store_pg_i64(res, row, 0);
    CM_TRY(store_pg_col_text(res, row, 1, a, &c->ca));
    CM_TRY(store_pg_col_span(res, row, 2, a, &c->serial));
    CM_TRY(store_pg_col_span(res, row, 3, a, &c->subject_der));
    CM_TRY(store_pg_col_text(res, row, 4, a, &c->subject_text));
    c->not_before = store_pg_i64(res, row, 5);
    c->not_after = store_pg_i64(res, row, 6);
    CM_TRY(store_pg_col_span(res, row, 7, a, &c->spki_sha256));
    const char *status = PQgetvalue(res, row, 8);
    c->status = STORE_CERT_ANY;
    for (int i = 0; i < 4; i++) {
        if (strcmp(status, store_pg_status_text[i]) == 0) {
            c->status = (store_cert_status)i;
        }
    }
    CM_ENSURE(c->status != STORE_CERT_ANY, STORE_E_CORRUPT);
    c->revoked_at = store_pg_i64(res, row, 9);
    c->reason = PQgetisnull(res, row, 10) ? -1 : (int)store_pg_i64(res, row, 10);
    CM_TRY(store_pg_col_span(res, row, 11, a, &c->transaction_id));
    c->requester_kind = (store_auth_kind)store_pg_i64(res, row, 12);
    CM_TRY(store_pg_col_span(res, row, 13, a, &c->requester));
    CM_TRY(store_pg_col_span(res, row, 14, a, &c->cert_der));
    c->issued_at = store_pg_i64(res, row, 15);
    c->confirm_deadline = store_pg_i64(res, row, 16);
    CM_TRY(store_pg_col_span(res, row, 17, a, &c->replaces));
    c->revoke_replaced = store_pg_i64(res, row, 18) != 0;
    c->superseded_at = store_pg_i64(res, row, 19);
    return cm_result_make(CM_OK);
}

static cm_result store_pg_get_cert(store_backend_reader *r, int idx, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span key)
{
    store_pg_params p = {0};
    store_pg_param_text(&p, ca);
    store_pg_param_span(&p, key);
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, idx, &p, &res));
    cm_result rc = PQntuples(res) == 0 ? cm_bail_note(STORE_E_NOT_FOUND, __FILE__, __LINE__)
                                       : store_pg_row_cert(res, 0, a, out);
    PQclear(res);
    return rc;
}

cm_result store_pg_cert_get(store_backend_reader *r, cm_arena *a, store_cert *out, const char *ca,
                            cm_span serial)
{
    return store_pg_get_cert(r, PGR_CERT_GET, a, out, ca, serial);
}

cm_result store_pg_cert_get_by_txn(store_backend_reader *r, cm_arena *a, store_cert *out,
                                   const char *ca, cm_span transaction_id)
{
    return store_pg_get_cert(r, PGR_CERT_BY_TXN, a, out, ca, transaction_id);
}

cm_result store_pg_txn_get(store_backend_reader *r, cm_arena *a, store_txn *out, const char *ca,
                           cm_span transaction_id)
{
    store_pg_params p = {0};
    store_pg_param_text(&p, ca);
    store_pg_param_span(&p, transaction_id);
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, PGR_TXN_GET, &p, &res));
    memset(out, 0, sizeof(*out));
    cm_result rc = cm_result_make(CM_OK);
    if (PQntuples(res) == 0) {
        rc = cm_bail_note(STORE_E_TXN_NOT_FOUND, __FILE__, __LINE__);
    } else {
        out->ca = ca;
        out->state = (uint32_t)store_pg_i64(res, 0, 0);
        out->protection = (store_auth_kind)store_pg_i64(res, 0, 3);
        out->expires_at = store_pg_i64(res, 0, 5);
        out->flags = (uint32_t)store_pg_i64(res, 0, 6);
        rc = store_pg_col_span(res, 0, 1, a, &out->sender_nonce);
        if (cm_ok(rc)) {
            rc = store_pg_col_span(res, 0, 7, a, &out->request_nonce);
        }
        if (cm_ok(rc)) {
            rc = store_pg_col_span(res, 0, 8, a, &out->signer_cert);
        }
        if (cm_ok(rc)) {
            rc = store_pg_col_span(res, 0, 2, a, &out->serial);
        }
        if (cm_ok(rc)) {
            rc = store_pg_col_span(res, 0, 4, a, &out->credential);
        }
        if (cm_ok(rc)) {
            uint8_t *tid = cm_arena_memdup(a, transaction_id);
            rc = cm_result_make(tid != NULL ? CM_OK : CM_E_NOMEM);
            out->transaction_id = cm_span_make(tid, transaction_id.len);
        }
    }
    PQclear(res);
    return rc;
}

static void store_pg_param_filter(store_pg_params *p, const store_filter *f)
{
    store_pg_param_text(p, f->ca);
    store_pg_param_text(p, f->status == STORE_CERT_ANY ? NULL : store_pg_status_text[f->status]);
    store_pg_param_text(p, f->subject_substr);
}

cm_result store_pg_cert_list(store_backend_reader *r, const store_filter *f, store_cert_fn fn,
                             void *ctx)
{
    int64_t after = f->after_id;
    uint64_t left = f->limit == 0 ? UINT64_MAX : f->limit;
    for (;;) {
        const int64_t page = left < STORE_PG_PAGE ? (int64_t)left : STORE_PG_PAGE;
        store_pg_params p = {0};
        store_pg_param_filter(&p, f);
        store_pg_param_int(&p, after);
        store_pg_param_int(&p, page);
        PGresult *res = NULL;
        CM_TRY(store_pg_query(r, PGR_CERT_LIST, &p, &res));
        const int rows = PQntuples(res);
        cm_result rc = cm_result_make(CM_OK);
        bool go_on = true;
        for (int i = 0; i < rows && go_on; i++) {
            store_cert c;
            rc = store_pg_row_cert(res, i, NULL, &c);
            go_on = cm_ok(rc) && fn(ctx, &c);
            after = c.id;
        }
        PQclear(res);
        left -= (uint64_t)rows;
        if (!cm_ok(rc) || !go_on || rows < page || left == 0) {
            return rc;
        }
    }
}

cm_result store_pg_cert_count(store_backend_reader *r, const store_filter *f, uint64_t *out_count)
{
    store_pg_params p = {0};
    store_pg_param_filter(&p, f);
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, PGR_CERT_COUNT, &p, &res));
    *out_count = PQntuples(res) == 1 ? (uint64_t)store_pg_i64(res, 0, 0) : 0;
    PQclear(res);
    return cm_result_make(CM_OK);
}

cm_result store_pg_revoked_list(store_backend_reader *r, const char *ca, int64_t not_after_min,
                                store_revoked_fn fn, void *ctx)
{
    int64_t after = 0;
    for (;;) {
        store_pg_params p = {0};
        store_pg_param_text(&p, ca);
        store_pg_param_int(&p, not_after_min);
        store_pg_param_int(&p, after);
        store_pg_param_int(&p, STORE_PG_PAGE);
        PGresult *res = NULL;
        CM_TRY(store_pg_query(r, PGR_REVOKED, &p, &res));
        const int rows = PQntuples(res);
        bool go_on = true;
        for (int i = 0; i < rows && go_on; i++) {
            cm_span serial;
            (void)store_pg_col_span(res, i, 1, NULL, &serial); // borrowing cannot fail
            after = store_pg_i64(res, i, 0);
            go_on = fn(ctx, serial, store_pg_i64(res, i, 2), (int)store_pg_i64(res, i, 3));
        }
        PQclear(res);
        if (!go_on || rows < STORE_PG_PAGE) {
            return cm_result_make(CM_OK);
        }
    }
}

// store_pg_row_crl fills |c| from columns |col|.. (crl_number, numbers_issued, revision,
// built_revision, crl_der, this_update, next_update).
static cm_result store_pg_row_crl(const PGresult *res, int row, int col, cm_arena *a, store_crl *c)
{
    c->crl_number = (uint64_t)store_pg_i64(res, row, col);
    c->numbers_issued = (uint64_t)store_pg_i64(res, row, col + 1);
    c->revision = (uint64_t)store_pg_i64(res, row, col + 2);
    c->built_revision = (uint64_t)store_pg_i64(res, row, col + 3);
    c->this_update = store_pg_i64(res, row, col + 5);
    c->next_update = store_pg_i64(res, row, col + 6);
    return store_pg_col_span(res, row, col + 4, a, &c->crl_der);
}

cm_result store_pg_crl_get(store_backend_reader *r, cm_arena *a, store_crl *out, const char *ca)
{
    store_pg_params p = {0};
    store_pg_param_text(&p, ca);
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, PGR_CRL_GET, &p, &res));
    memset(out, 0, sizeof(*out));
    cm_result rc = cm_result_make(CM_OK);
    if (PQntuples(res) == 0) {
        rc = cm_bail_note(STORE_E_NOT_FOUND, __FILE__, __LINE__);
    } else {
        out->ca = ca;
        rc = store_pg_row_crl(res, 0, 0, a, out);
    }
    PQclear(res);
    return rc;
}

cm_result store_pg_txn_list(store_backend_reader *r, store_txn_fn fn, void *ctx)
{
    // Keyset paging on the primary key; the cursor is copied out of each page before it goes.
    char after_ca[256] = "";
    uint8_t after_tid[256];
    size_t after_tid_len = 0;
    for (;;) {
        store_pg_params p = {0};
        store_pg_param_text(&p, after_ca);
        // An empty bytea, not NULL: every transactionID is greater.
        p.values[p.n] = (const char *)after_tid;
        p.lengths[p.n] = (int)after_tid_len;
        p.formats[p.n] = 1;
        p.n++;
        store_pg_param_int(&p, STORE_PG_PAGE);
        PGresult *res = NULL;
        CM_TRY(store_pg_query(r, PGR_TXN_LIST, &p, &res));
        const int rows = PQntuples(res);
        cm_result rc = cm_result_make(CM_OK);
        bool go_on = true;
        for (int i = 0; i < rows && go_on && cm_ok(rc); i++) {
            store_txn t;
            memset(&t, 0, sizeof(t));
            rc = store_pg_col_text(res, i, 0, NULL, &t.ca);
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 1, NULL, &t.transaction_id);
            }
            t.state = (uint32_t)store_pg_i64(res, i, 2);
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 3, NULL, &t.sender_nonce);
            }
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 4, NULL, &t.serial);
            }
            t.protection = (store_auth_kind)store_pg_i64(res, i, 5);
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 6, NULL, &t.credential);
            }
            t.expires_at = store_pg_i64(res, i, 7);
            t.flags = (uint32_t)store_pg_i64(res, i, 8);
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 9, NULL, &t.request_nonce);
            }
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 10, NULL, &t.signer_cert);
            }
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 11, NULL, &t.reserved_serial);
            }
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 12, NULL, &t.spki_sha256);
            }
            if (cm_ok(rc)) {
                rc = store_pg_col_span(res, i, 13, NULL, &t.replaces);
            }
            if (cm_ok(rc) &&
                (strlen(t.ca) >= sizeof(after_ca) || t.transaction_id.len > sizeof(after_tid))) {
                rc = cm_bail_note(STORE_E_INVALID, __FILE__, __LINE__);
            }
            if (cm_ok(rc)) {
                (void)snprintf(after_ca, sizeof(after_ca), "%s", t.ca);
                memcpy(after_tid, t.transaction_id.p, t.transaction_id.len);
                after_tid_len = t.transaction_id.len;
                go_on = fn(ctx, &t);
            }
        }
        PQclear(res);
        if (!cm_ok(rc) || !go_on || rows < STORE_PG_PAGE) {
            return rc;
        }
    }
}

cm_result store_pg_crl_list(store_backend_reader *r, store_crl_fn fn, void *ctx)
{
    store_pg_params p = {0};
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, PGR_CRL_LIST, &p, &res));
    cm_result rc = cm_result_make(CM_OK);
    for (int i = 0; i < PQntuples(res) && cm_ok(rc); i++) {
        store_crl c;
        memset(&c, 0, sizeof(c));
        rc = store_pg_col_text(res, i, 0, NULL, &c.ca);
        if (cm_ok(rc)) {
            rc = store_pg_row_crl(res, i, 1, NULL, &c);
        }
        if (cm_ok(rc) && !fn(ctx, &c)) {
            break;
        }
    }
    PQclear(res);
    return rc;
}

cm_result store_pg_use_list(store_backend_reader *r, store_use_fn fn, void *ctx)
{
    store_pg_params p = {0};
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, PGR_USE_LIST, &p, &res));
    cm_result rc = cm_result_make(CM_OK);
    for (int i = 0; i < PQntuples(res) && cm_ok(rc); i++) {
        store_use u;
        memset(&u, 0, sizeof(u));
        rc = store_pg_col_text(res, i, 0, NULL, &u.ca);
        u.kind = (store_auth_kind)store_pg_i64(res, i, 1);
        if (cm_ok(rc)) {
            rc = store_pg_col_span(res, i, 2, NULL, &u.credential);
        }
        const int64_t used = store_pg_i64(res, i, 3);
        u.used = used > 0 ? (uint64_t)used : 0;
        if (cm_ok(rc) && !fn(ctx, &u)) {
            break;
        }
    }
    PQclear(res);
    return rc;
}

cm_result store_pg_cert_state(store_backend_reader *r, store_cert_state *out, const char *ca,
                              cm_span serial)
{
    store_pg_params p = {0};
    store_pg_param_text(&p, ca);
    store_pg_param_span(&p, serial);
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, PGR_CERT_STATE, &p, &res));
    memset(out, 0, sizeof(*out));
    cm_result rc = cm_result_make(CM_OK);
    if (PQntuples(res) == 0) {
        rc = cm_bail_note(STORE_E_NOT_FOUND, __FILE__, __LINE__);
    } else {
        const char *status = PQgetvalue(res, 0, 0);
        out->status = STORE_CERT_ANY;
        for (int i = 0; i < 4; i++) {
            if (strcmp(status, store_pg_status_text[i]) == 0) {
                out->status = (store_cert_status)i;
            }
        }
        out->not_after = store_pg_i64(res, 0, 1);
        out->reason = PQgetisnull(res, 0, 2) ? -1 : (int)store_pg_i64(res, 0, 2);
        out->superseded_at = store_pg_i64(res, 0, 3);
        out->update_pending = store_pg_i64(res, 0, 4) != 0;
        if (out->status == STORE_CERT_ANY) {
            rc = cm_bail_note(STORE_E_CORRUPT, __FILE__, __LINE__);
        }
    }
    PQclear(res);
    return rc;
}

// store_pg_count_bad runs a count that must be 0; STORE_E_CORRUPT (logged with |what|) if not.
static cm_result store_pg_count_bad(store_backend_reader *r, const char *sql, const char *what)
{
    PGresult *res = NULL;
    CM_TRY(store_pg_conn_ready(&r->c));
    CM_TRY(store_pg_exec(&r->c, sql, PGRES_TUPLES_OK, &res));
    const char *n = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "?";
    cm_result rc = cm_result_make(CM_OK);
    if (strcmp(n, "0") != 0) {
        cm_log(CM_LOG_ERROR, "store: check: %s rows %s", n, what);
        rc = cm_bail_note(STORE_E_CORRUPT, __FILE__, __LINE__);
    }
    PQclear(res);
    return rc;
}

cm_result store_pg_check(store_backend_reader *r)
{
    // PostgreSQL keeps its own pages consistent (and checks them with data checksums when the
    // cluster has them); this checks certmint's side: the schema version and the invariants
    // the constraints stand for, over every row.
    char sql[160];
    (void)snprintf(sql, sizeof(sql),
                   "SELECT count(*) FROM certmint_meta WHERE name = 'schema_version' AND "
                   "value <> '%d'",
                   STORE_SCHEMA_VERSION);
    CM_TRY(store_pg_count_bad(r, sql, "of certmint_meta name another schema version"));
    CM_TRY(
        store_pg_count_bad(r,
                           "SELECT count(*) FROM txn t WHERE t.serial IS NOT NULL AND NOT EXISTS "
                           "(SELECT 1 FROM cert c WHERE c.ca = t.ca AND c.serial = t.serial)",
                           "of txn name a certificate that does not exist"));
    CM_TRY(store_pg_count_bad(
        r,
        "SELECT count(*) FROM cert WHERE (status IN ('revoked', 'hold')) <> "
        "(revoked_at IS NOT NULL AND reason IS NOT NULL) OR (status = 'hold' AND reason <> 6) "
        "OR (status = 'unconfirmed' AND confirm_deadline IS NULL) OR length(spki_sha256) <> 32",
        "of cert break the status rules"));
    return store_pg_count_bad(
        r,
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated AND connamespace = "
        "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
        "of pg_constraint are not validated");
}

// ---------------------------------------------------------------------------------------------
// The pending table (schema 4)

// store_pg_row_pending fills |p| from row |row| of STORE_PG_PENDING_COLS, copies in |a| (NULL:
// views into the result).
static cm_result store_pg_row_pending(const PGresult *res, int row, cm_arena *a, store_pending *p)
{
    memset(p, 0, sizeof(*p));
    p->id = store_pg_i64(res, row, 0);
    CM_TRY(store_pg_col_text(res, row, 1, a, &p->ca));
    CM_TRY(store_pg_col_span(res, row, 2, a, &p->transaction_id));
    p->body_type = (uint32_t)store_pg_i64(res, row, 3);
    p->cert_req_id = store_pg_i64(res, row, 4);
    p->why = (store_pending_why)store_pg_i64(res, row, 5);
    const int64_t state = store_pg_i64(res, row, 6);
    CM_ENSURE(state >= 0 && state < STORE_PENDING_NUM_STATES, STORE_E_CORRUPT);
    p->state = (store_pending_state)state;
    if (!PQgetisnull(res, row, 7)) {
        CM_TRY(store_pg_col_text(res, row, 7, a, &p->profile));
    }
    CM_TRY(store_pg_col_text(res, row, 8, a, &p->subject));
    CM_TRY(store_pg_col_text(res, row, 9, a, &p->key_type));
    CM_TRY(store_pg_col_text(res, row, 10, a, &p->requester));
    p->created_at = store_pg_i64(res, row, 11);
    p->expires_at = store_pg_i64(res, row, 12);
    p->claimed_at = store_pg_i64(res, row, 13);
    p->decided_at = store_pg_i64(res, row, 14);
    CM_TRY(store_pg_col_span(res, row, 15, a, &p->tbs));
    CM_TRY(store_pg_col_span(res, row, 16, a, &p->serial));
    p->flags = (uint32_t)store_pg_i64(res, row, 17);
    p->fail_info = PQgetisnull(res, row, 18) ? -1 : (int)store_pg_i64(res, row, 18);
    if (!PQgetisnull(res, row, 19)) {
        CM_TRY(store_pg_col_text(res, row, 19, a, &p->status_text));
    }
    CM_TRY(store_pg_col_span(res, row, 20, a, &p->replaces));
    p->counted = store_pg_i64(res, row, 21) != 0;
    return cm_result_make(CM_OK);
}

// store_pg_pending_one runs the one-row lookup |idx| with |p|.
static cm_result store_pg_pending_one(store_backend_reader *r, int idx, const store_pg_params *p,
                                      cm_arena *a, store_pending *out)
{
    PGresult *res = NULL;
    CM_TRY(store_pg_query(r, idx, p, &res));
    cm_result rc = PQntuples(res) == 0 ? cm_bail_note(STORE_E_PENDING_UNKNOWN, __FILE__, __LINE__)
                                       : store_pg_row_pending(res, 0, a, out);
    PQclear(res);
    return rc;
}

cm_result store_pg_pending_get(store_backend_reader *r, cm_arena *a, store_pending *out,
                               const char *ca, cm_span transaction_id)
{
    store_pg_params p = {0};
    store_pg_param_text(&p, ca);
    store_pg_param_span(&p, transaction_id);
    return store_pg_pending_one(r, PGR_PEND_GET, &p, a, out);
}

cm_result store_pg_pending_get_id(store_backend_reader *r, cm_arena *a, store_pending *out,
                                  int64_t id)
{
    store_pg_params p = {0};
    store_pg_param_int(&p, id);
    return store_pg_pending_one(r, PGR_PEND_GET_ID, &p, a, out);
}

cm_result store_pg_pending_list(store_backend_reader *r, const store_pending_filter *f,
                                store_pending_fn fn, void *ctx)
{
    int64_t after = f->after_id;
    uint64_t left = f->limit == 0 ? UINT64_MAX : f->limit;
    for (;;) {
        const int64_t page = left < STORE_PG_PAGE ? (int64_t)left : STORE_PG_PAGE;
        store_pg_params p = {0};
        for (int i = 0; i < STORE_PENDING_NUM_STATES; i++) {
            const bool on = f->states == 0 || (f->states & (1u << i)) != 0;
            store_pg_param_int(&p, on ? i : -1);
        }
        store_pg_param_int(&p, after);
        store_pg_param_text(&p, f->ca);
        store_pg_param_int(&p, page);
        PGresult *res = NULL;
        CM_TRY(store_pg_query(r, PGR_PEND_LIST, &p, &res));
        const int rows = PQntuples(res);
        cm_result rc = cm_result_make(CM_OK);
        bool go_on = true;
        for (int i = 0; i < rows && go_on; i++) {
            store_pending pd;
            rc = store_pg_row_pending(res, i, NULL, &pd);
            go_on = cm_ok(rc) && fn(ctx, &pd);
            after = pd.id;
        }
        PQclear(res);
        left -= (uint64_t)rows;
        if (!cm_ok(rc) || !go_on || rows < page || left == 0) {
            return rc;
        }
    }
}
