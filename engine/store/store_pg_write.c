// The PostgreSQL backend's writes, on the store's writer thread (store.c): each batch is ONE
// transaction sent through libpq's pipeline mode — BEGIN, one statement per job, COMMIT and a
// sync point go out together and the results come back together, so a batch costs one round
// trip however many jobs it holds.
//
// A job must not raise an error for an expected outcome: in a pipeline an error skips every
// statement after it until the sync. So each job is one statement that reports its outcome in
// its result (ON CONFLICT DO NOTHING, RETURNING, or one of certmint's PL/pgSQL functions
// returning a STORE_PG_FN_* code). An error that does belong to one job (a constraint or a
// value the database refuses: SQLSTATE classes 22, 23) fails that job alone: the transaction
// is rolled back and the batch runs again without it. A deadlock or serialization failure
// (jobs of several nodes on the same rows) runs the batch again, at most STORE_PG_RETRIES
// times. Anything else fails the batch; a lost connection fails it with STORE_E_UNAVAILABLE —
// including a COMMIT whose answer was lost, whose outcome is unknown: its jobs are never
// reported done, so no certificate goes out without its record (it may have a record that no
// client saw, which is harmless).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_pg_internal.h"

#define STORE_PG_RETRIES 3
#define STORE_PG_PING_NS (1000u * 1000000ull) // idle: check the connection after 1 s
#define STORE_PG_IDLE_MS 1000u

// store_pg_cert_params adds a certificate's parameters as certmint_insert_update takes them
// (a certificate that replaces none passes NULL and false).
static void store_pg_cert_params(const store_cert *c, store_pg_params *p)
{
    store_pg_param_text(p, c->ca);
    store_pg_param_span(p, c->serial);
    store_pg_param_span(p, c->subject_der);
    store_pg_param_text(p, c->subject_text);
    store_pg_param_int(p, c->not_before);
    store_pg_param_int(p, c->not_after);
    store_pg_param_span(p, c->spki_sha256);
    store_pg_param_text(p, store_pg_status_text[c->status]);
    store_pg_param_span(p, c->transaction_id);
    store_pg_param_int(p, (int64_t)c->requester_kind);
    store_pg_param_span(p, c->requester);
    store_pg_param_span(p, c->cert_der);
    store_pg_param_int(p, c->issued_at);
    store_pg_param_time(p, c->status == STORE_CERT_UNCONFIRMED ? c->confirm_deadline : 0);
    store_pg_param_span(p, c->replaces);
    store_pg_param_int(p, c->replaces.len != 0 && c->revoke_replaced ? 1 : 0);
}

// store_pg_pending_params fills |p| for a STORE_OP_PENDING_* job (the functions of schema 4 in
// store_pg.c) and returns its statement index.
static int store_pg_pending_params(const store_job *job, store_pg_params *p)
{
    const store_pending_op *o = &job->u.pop;
    switch (job->op) {
    case STORE_OP_PENDING_ADD: {
        const store_pending *pd = &job->u.pend;
        const store_reservation *v = pd->rsv;
        store_pg_param_text(p, v->ca);
        store_pg_param_span(p, v->transaction_id);
        store_pg_param_int(p, (int64_t)v->state);
        store_pg_param_int(p, (int64_t)v->protection);
        store_pg_param_span(p, v->credential);
        store_pg_param_int(p, v->expires_at);
        store_pg_param_span(p, v->serial);
        store_pg_param_span(p, v->spki_sha256);
        store_pg_param_span(p, v->replaces);
        store_pg_param_int(p, v->check_key ? 1 : 0);
        store_pg_param_int(p, (int64_t)v->max_uses);
        store_pg_param_int(p, (int64_t)pd->txn_flags);
        store_pg_param_span(p, pd->request_nonce);
        store_pg_param_span(p, pd->signer_cert);
        store_pg_param_int(p, (int64_t)pd->body_type);
        store_pg_param_int(p, pd->cert_req_id);
        store_pg_param_int(p, (int64_t)pd->why);
        store_pg_param_int(p, (int64_t)pd->state);
        store_pg_param_text(p, pd->profile);
        store_pg_param_text(p, pd->subject);
        store_pg_param_text(p, pd->key_type);
        store_pg_param_text(p, pd->requester);
        store_pg_param_int(p, pd->created_at);
        store_pg_param_int(p, pd->expires_at);
        store_pg_param_span(p, pd->tbs);
        store_pg_param_int(p, (int64_t)pd->flags);
        store_pg_param_text(p, pd->status_text);
        store_pg_param_span(p, pd->replaces);
        return PGW_PEND_ADD;
    }
    case STORE_OP_PENDING_CLAIM:
        store_pg_param_int(p, o->id);
        store_pg_param_int(p, o->time);
        store_pg_param_int(p, o->stale_before);
        return PGW_PEND_CLAIM;
    case STORE_OP_PENDING_DECIDE:
        store_pg_param_int(p, o->id);
        store_pg_param_int(p, o->approve ? 1 : 0);
        store_pg_param_int(p, o->time);
        store_pg_param_int(p, o->approve ? 0 : o->fail_info);
        store_pg_param_text(p, o->status_text);
        store_pg_param_int(p, o->keep_s);
        return PGW_PEND_DECIDE;
    case STORE_OP_PENDING_ISSUE:
        store_pg_param_int(p, o->id);
        store_pg_cert_params(o->cert, p);
        store_pg_param_int(p, (int64_t)o->txn_state);
        store_pg_param_int(p, o->txn_expires_at);
        return PGW_PEND_ISSUE;
    case STORE_OP_PENDING_DELIVER:
        store_pg_param_text(p, o->ca);
        store_pg_param_span(p, o->transaction_id);
        store_pg_param_int(p, o->txn_expires_at);
        store_pg_param_span(p, o->sender_nonce);
        store_pg_param_int(p, o->confirm_deadline);
        return PGW_PEND_DELIVER;
    case STORE_OP_PENDING_EXPIRE:
        store_pg_param_int(p, o->time);
        store_pg_param_int(p, o->fail_info);
        store_pg_param_text(p, o->status_text);
        store_pg_param_int(p, o->keep_s);
        return PGW_PEND_EXPIRE;
    default:
        return -1;
    }
}

// store_pg_job_params fills |p| with the job's parameters and returns its statement index.
static int store_pg_job_params(const store_job *job, store_pg_params *p)
{
    p->n = 0;
    const store_ref *ref = &job->u.ref;
    const store_cert *c = &job->u.cert;
    const store_txn *t = &job->u.txn;
    const store_crl *crl = &job->u.crl;
    switch (job->op) {
    case STORE_OP_CERT_INSERT:
    case STORE_OP_COPY_CERT: {
        const bool copy = job->op == STORE_OP_COPY_CERT;
        const bool revoked = c->status == STORE_CERT_REVOKED || c->status == STORE_CERT_HOLD;
        store_pg_param_text(p, c->ca);
        store_pg_param_span(p, c->serial);
        store_pg_param_span(p, c->subject_der);
        store_pg_param_text(p, c->subject_text);
        store_pg_param_int(p, c->not_before);
        store_pg_param_int(p, c->not_after);
        store_pg_param_span(p, c->spki_sha256);
        store_pg_param_text(p, store_pg_status_text[c->status]);
        if (copy && revoked) {
            store_pg_param_int(p, c->revoked_at);
            store_pg_param_int(p, c->reason);
        } else if (copy) {
            store_pg_param_null(p);
            store_pg_param_null(p);
        }
        store_pg_param_span(p, c->transaction_id);
        store_pg_param_int(p, (int64_t)c->requester_kind);
        store_pg_param_span(p, c->requester);
        store_pg_param_span(p, c->cert_der);
        store_pg_param_int(p, c->issued_at);
        store_pg_param_time(p, c->status == STORE_CERT_UNCONFIRMED ? c->confirm_deadline : 0);
        const bool kur = c->replaces.len != 0;
        if (copy || kur) {
            store_pg_param_span(p, c->replaces);
            store_pg_param_int(p, kur && c->revoke_replaced ? 1 : 0);
        }
        if (copy) {
            store_pg_param_time(p, c->superseded_at);
            return PGW_COPY_CERT;
        }
        return kur ? PGW_CERT_INSERT_UPDATE : PGW_CERT_INSERT;
    }
    case STORE_OP_CERT_CONFIRM:
        store_pg_param_text(p, ref->ca);
        store_pg_param_span(p, ref->serial);
        store_pg_param_int(p, ref->time);
        return PGW_CONFIRM;
    case STORE_OP_CERT_REVOKE:
        store_pg_param_text(p, ref->ca);
        store_pg_param_span(p, ref->serial);
        store_pg_param_int(p, ref->time);
        store_pg_param_int(p, ref->reason);
        return PGW_REVOKE;
    case STORE_OP_CERT_RELEASE:
        store_pg_param_text(p, ref->ca);
        store_pg_param_span(p, ref->serial);
        return PGW_RELEASE;
    case STORE_OP_TXN_CREATE:
    case STORE_OP_TXN_UPDATE:
    case STORE_OP_COPY_TXN:
        store_pg_param_text(p, t->ca);
        store_pg_param_span(p, t->transaction_id);
        store_pg_param_int(p, (int64_t)t->state);
        store_pg_param_span(p, t->sender_nonce);
        store_pg_param_span(p, t->serial);
        store_pg_param_int(p, (int64_t)t->protection);
        store_pg_param_span(p, t->credential);
        store_pg_param_int(p, t->expires_at);
        store_pg_param_int(p, (int64_t)t->flags);
        store_pg_param_span(p, t->request_nonce);
        store_pg_param_span(p, t->signer_cert);
        if (job->op == STORE_OP_COPY_TXN) {
            store_pg_param_span(p, t->reserved_serial);
            store_pg_param_span(p, t->spki_sha256);
            store_pg_param_span(p, t->replaces);
            return PGW_COPY_TXN;
        }
        return job->op == STORE_OP_TXN_CREATE ? PGW_TXN_CREATE : PGW_TXN_UPDATE;
    case STORE_OP_TXN_RESERVE: {
        const store_reservation *v = &job->u.rsv;
        store_pg_param_text(p, v->ca);
        store_pg_param_span(p, v->transaction_id);
        store_pg_param_int(p, (int64_t)v->state);
        store_pg_param_int(p, (int64_t)v->protection);
        store_pg_param_span(p, v->credential);
        store_pg_param_int(p, v->expires_at);
        store_pg_param_span(p, v->serial);
        store_pg_param_span(p, v->spki_sha256);
        store_pg_param_span(p, v->replaces);
        store_pg_param_int(p, v->check_key ? 1 : 0);
        store_pg_param_int(p, (int64_t)v->max_uses);
        return PGW_RESERVE;
    }
    case STORE_OP_TXN_UNRESERVE: {
        const store_reservation *v = &job->u.rsv;
        store_pg_param_text(p, v->ca);
        store_pg_param_span(p, v->transaction_id);
        store_pg_param_int(p, (int64_t)v->protection);
        store_pg_param_span(p, v->credential);
        store_pg_param_int(p, (int64_t)v->max_uses);
        return PGW_UNRESERVE;
    }
    case STORE_OP_COPY_USE:
        store_pg_param_text(p, job->u.use.ca);
        store_pg_param_int(p, (int64_t)job->u.use.kind);
        store_pg_param_span(p, job->u.use.credential);
        store_pg_param_int(p, (int64_t)job->u.use.used);
        return PGW_COPY_USE;
    case STORE_OP_TXN_DELETE:
        store_pg_param_text(p, ref->ca);
        store_pg_param_span(p, ref->transaction_id);
        return PGW_TXN_DELETE;
    case STORE_OP_TXN_EXPIRE:
        store_pg_param_int(p, ref->time);
        return PGW_TXN_EXPIRE;
    case STORE_OP_SWEEP:
        store_pg_param_int(p, ref->time);
        store_pg_param_int(p, ref->reason);
        return PGW_SWEEP;
    case STORE_OP_CRL_NEXT_NUMBER:
        store_pg_param_text(p, ref->ca);
        return PGW_CRL_NEXT;
    case STORE_OP_CRL_PUT:
        store_pg_param_text(p, crl->ca);
        store_pg_param_span(p, crl->crl_der);
        store_pg_param_int(p, (int64_t)crl->crl_number);
        store_pg_param_time(p, crl->this_update);
        store_pg_param_time(p, crl->next_update);
        store_pg_param_int(p, (int64_t)crl->built_revision);
        return PGW_CRL_PUT;
    case STORE_OP_COPY_CRL:
        store_pg_param_text(p, crl->ca);
        store_pg_param_int(p, (int64_t)crl->numbers_issued);
        store_pg_param_int(p, (int64_t)crl->revision);
        store_pg_param_int(p, (int64_t)crl->built_revision);
        store_pg_param_span(p, crl->crl_der);
        store_pg_param_int(p, (int64_t)crl->crl_number);
        store_pg_param_time(p, crl->this_update);
        store_pg_param_time(p, crl->next_update);
        return PGW_COPY_CRL;
    case STORE_OP_COPY_CLEAR:
        return PGW_COPY_CLEAR;
    case STORE_OP_COPY_PENDING: {
        const store_pending *pd = &job->u.pend;
        store_pg_param_int(p, pd->id);
        store_pg_param_text(p, pd->ca);
        store_pg_param_span(p, pd->transaction_id);
        store_pg_param_int(p, (int64_t)pd->body_type);
        store_pg_param_int(p, pd->cert_req_id);
        store_pg_param_int(p, (int64_t)pd->why);
        store_pg_param_int(p, (int64_t)pd->state);
        store_pg_param_text(p, pd->profile);
        store_pg_param_text(p, pd->subject);
        store_pg_param_text(p, pd->key_type);
        store_pg_param_text(p, pd->requester);
        store_pg_param_int(p, pd->created_at);
        store_pg_param_int(p, pd->expires_at);
        store_pg_param_time(p, pd->claimed_at);
        store_pg_param_time(p, pd->decided_at);
        store_pg_param_span(p, pd->tbs);
        store_pg_param_span(p, pd->serial);
        store_pg_param_int(p, (int64_t)pd->flags);
        if (pd->fail_info < 0) {
            store_pg_param_null(p);
        } else {
            store_pg_param_int(p, pd->fail_info);
        }
        store_pg_param_text(p, pd->status_text);
        store_pg_param_span(p, pd->replaces);
        store_pg_param_int(p, pd->counted ? 1 : 0);
        return PGW_COPY_PENDING;
    }
    case STORE_OP_PENDING_ADD:
    case STORE_OP_PENDING_CLAIM:
    case STORE_OP_PENDING_DECIDE:
    case STORE_OP_PENDING_ISSUE:
    case STORE_OP_PENDING_DELIVER:
    case STORE_OP_PENDING_EXPIRE:
        return store_pg_pending_params(job, p);
    }
    return -1; // validation refused unknown ops before
}

static uint32_t store_pg_fn_code(long long v)
{
    switch (v) {
    case STORE_PG_FN_OK:
        return CM_OK;
    case STORE_PG_FN_NOT_FOUND:
        return STORE_E_NOT_FOUND;
    case STORE_PG_FN_ALREADY_REVOKED:
        return STORE_E_ALREADY_REVOKED;
    case STORE_PG_FN_ALREADY_CONFIRMED:
        return STORE_E_ALREADY_CONFIRMED;
    case STORE_PG_FN_NOT_ON_HOLD:
        return STORE_E_NOT_ON_HOLD;
    case STORE_PG_FN_CONFIRM_EXPIRED:
        return STORE_E_CONFIRM_EXPIRED;
    case STORE_PG_FN_TXN_NOT_FOUND:
        return STORE_E_TXN_NOT_FOUND;
    case STORE_PG_FN_TXN_IN_USE:
        return STORE_E_TXN_IN_USE;
    case STORE_PG_FN_DUPLICATE_SERIAL:
        return STORE_E_DUPLICATE_SERIAL;
    case STORE_PG_FN_KEY_REUSED:
        return STORE_E_KEY_REUSED;
    case STORE_PG_FN_LIMIT:
        return STORE_E_LIMIT;
    case STORE_PG_FN_UPDATE_PENDING:
        return STORE_E_UPDATE_PENDING;
    case STORE_PG_FN_PENDING_STATE:
        return STORE_E_PENDING_STATE;
    case STORE_PG_FN_PENDING_UNKNOWN:
        return STORE_E_PENDING_UNKNOWN;
    default:
        return STORE_E_DB;
    }
}

// store_pg_job_outcome reads the slot's outcome (code and out_value) from its statement's
// result.
// store_pg_slot_also records, for the status cache, the other certificate a function says the
// job changed (column |col|: its serial in hex, NULL for none).
static void store_pg_slot_also(store_pg_slot *slot, const PGresult *res, int col)
{
    slot->also_len = 0;
    if (PQntuples(res) != 1 || PQnfields(res) <= col || PQgetisnull(res, 0, col)) {
        return;
    }
    const char *hex = PQgetvalue(res, 0, col);
    const size_t n = strlen(hex) / 2;
    if (n == 0 || n > sizeof(slot->also)) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            const char ch = hex[2 * i + (size_t)k];
            v = v * 16u + (unsigned)(ch >= 'a'   ? ch - 'a' + 10
                                     : ch >= 'A' ? ch - 'A' + 10
                                                 : ch - '0');
        }
        slot->also[i] = (uint8_t)v;
    }
    slot->also_len = n;
}

// store_pg_job_outcome reads the slot's outcome (code, out_value and what the status cache must
// forget) from its statement's result.
static void store_pg_job_outcome(store_pg_slot *slot, const PGresult *res)
{
    const int rows = PQntuples(res);
    const bool one = rows == 1 && PQnfields(res) >= 1 && !PQgetisnull(res, 0, 0);
    const long long v = one ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    uint32_t code = CM_OK;
    slot->value = 0;
    slot->also_len = 0;
    slot->many = false;
    switch (slot->job->op) {
    case STORE_OP_CERT_INSERT:
        if (slot->job->u.cert.replaces.len != 0) {
            code = one ? store_pg_fn_code(v) : STORE_E_DB;
            store_pg_slot_also(slot, res, 1);
        } else {
            code = rows == 1 ? CM_OK : STORE_E_DUPLICATE_SERIAL;
        }
        break;
    case STORE_OP_COPY_CERT:
        code = rows == 1 ? CM_OK : STORE_E_DUPLICATE_SERIAL;
        break;
    case STORE_OP_CERT_CONFIRM:
    case STORE_OP_CERT_REVOKE:
    case STORE_OP_CERT_RELEASE:
    case STORE_OP_TXN_RESERVE:
    case STORE_OP_TXN_UNRESERVE:
        code = one ? store_pg_fn_code(v) : STORE_E_DB;
        store_pg_slot_also(slot, res, 1);
        break;
    case STORE_OP_TXN_UPDATE:
        code = one ? store_pg_fn_code(v) : STORE_E_DB;
        break;
    case STORE_OP_TXN_CREATE:
    case STORE_OP_COPY_TXN:
    case STORE_OP_COPY_PENDING:
        code = rows == 1 ? CM_OK : STORE_E_TXN_IN_USE;
        break;
    case STORE_OP_TXN_DELETE:
        code = rows == 1 ? CM_OK : STORE_E_TXN_NOT_FOUND;
        break;
    case STORE_OP_TXN_EXPIRE:
        // (rows deleted, whether a pending key update's reservation went with them)
        slot->many = rows == 1 && PQnfields(res) >= 2 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        code = one && v >= 0 ? CM_OK : STORE_E_DB;
        slot->value = one && v >= 0 ? (uint64_t)v : 0;
        break;
    case STORE_OP_SWEEP:
    case STORE_OP_CRL_NEXT_NUMBER:
        code = one && v >= 0 ? CM_OK : STORE_E_DB;
        slot->value = one && v >= 0 ? (uint64_t)v : 0;
        slot->many = slot->job->op == STORE_OP_SWEEP && slot->value != 0;
        break;
    case STORE_OP_CRL_PUT:
        code = rows == 1 ? CM_OK : STORE_E_STALE;
        break;
    case STORE_OP_COPY_CRL:
    case STORE_OP_COPY_CLEAR:
    case STORE_OP_COPY_USE:
        break;
    case STORE_OP_PENDING_ADD:
        // (code, the replaced certificate a kur's reservation names, the row's id)
        code = one ? store_pg_fn_code(v) : STORE_E_DB;
        store_pg_slot_also(slot, res, 1);
        if (code == CM_OK) {
            const bool id = PQnfields(res) >= 3 && !PQgetisnull(res, 0, 2);
            slot->value = id ? strtoull(PQgetvalue(res, 0, 2), NULL, 10) : 0;
            code = id ? CM_OK : STORE_E_DB;
        }
        break;
    case STORE_OP_PENDING_ISSUE:
        code = one ? store_pg_fn_code(v) : STORE_E_DB;
        store_pg_slot_also(slot, res, 1);
        break;
    case STORE_OP_PENDING_DECIDE:
        // (code, whether a key update's pending state ended)
        code = one ? store_pg_fn_code(v) : STORE_E_DB;
        slot->many = one && PQnfields(res) >= 2 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        break;
    case STORE_OP_PENDING_CLAIM:
    case STORE_OP_PENDING_DELIVER:
        code = one ? store_pg_fn_code(v) : STORE_E_DB;
        break;
    case STORE_OP_PENDING_EXPIRE:
        // (rows changed, whether any was rejected)
        slot->many = rows == 1 && PQnfields(res) >= 2 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        code = one && v >= 0 ? CM_OK : STORE_E_DB;
        slot->value = one && v >= 0 ? (uint64_t)v : 0;
        break;
    }
    slot->code = code;
}

// store_pg_job_error maps an error that belongs to one job to that job's code.
static uint32_t store_pg_job_error(const store_job *job, uint32_t code)
{
    if (code == STORE_E_DUPLICATE_SERIAL) {
        // A unique violation: the serial for certificates, the transactionID for transactions.
        if (job->op == STORE_OP_TXN_CREATE || job->op == STORE_OP_COPY_TXN ||
            job->op == STORE_OP_COPY_PENDING) {
            return STORE_E_TXN_IN_USE;
        }
        return job->op == STORE_OP_CERT_INSERT || job->op == STORE_OP_COPY_CERT
                   ? STORE_E_DUPLICATE_SERIAL
                   : STORE_E_INVALID;
    }
    return code;
}

// store_pg_take returns the next query's result (the caller PQclears it) and consumes the
// NULL that ends it; NULL when there is none (the connection is gone or out of step).
static PGresult *store_pg_take(PGconn *pg)
{
    PGresult *res = PQgetResult(pg);
    if (res == NULL || PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
        return res;
    }
    for (PGresult *extra = PQgetResult(pg); extra != NULL; extra = PQgetResult(pg)) {
        PQclear(extra); // a query has one result; anything more is drained here
    }
    return res;
}

// store_pg_send sends BEGIN, with |lazy| a SET LOCAL synchronous_commit = off, the |num|
// statements of b->stmts, COMMIT and the sync.
static cm_result store_pg_send(store_backend *b, size_t num, bool lazy)
{
    store_pg_conn *c = &b->w;
    PGconn *pg = c->pg;
    bool ok = PQenterPipelineMode(pg) == 1 &&
              PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) == 1;
    if (ok && lazy) {
        ok = PQsendQueryParams(pg, "SET LOCAL synchronous_commit = off", 0, NULL, NULL, NULL, NULL,
                               0) == 1;
    }
    for (size_t i = 0; ok && i < num; i++) {
        const store_pg_stmt *st = &b->stmts[i];
        store_pg_params p;
        int idx = 0;
        int format = 0; // text results for one job, binary for the rows' keys
        if (st->kind == STORE_PG_ONE) {
            idx = store_pg_job_params(b->slots[st->first].job, &p);
            CM_CHECK(idx >= 0); // validation refused unknown ops
        } else {
            CM_TRY(store_pg_rows_params(b, st, &p));
            idx = st->kind == STORE_PG_CERTS  ? PGW_CERT_ROWS
                  : st->kind == STORE_PG_TXNS ? PGW_TXN_ROWS
                                              : PGW_TXN_UPD_ROWS;
            format = 1;
        }
        char name[32];
        (void)snprintf(name, sizeof(name), "cm_w%d", idx);
        ok = PQsendQueryPrepared(pg, name, p.n, p.values, p.lengths, p.formats, format) == 1;
    }
    ok = ok && PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
         PQpipelineSync(pg) == 1;
    if (!ok) {
        return store_pg_fail(c, NULL, "sending a batch");
    }
    return cm_result_make(CM_OK);
}

// store_pg_error handles an error result inside the pipeline: an error of one job fails that
// slot for good (|*out_retry|: the batch runs again without it); the same in a multi-row
// statement (|st| not NULL) asks for a retry one statement per job (|*out_single|), which names
// the job; a deadlock or serialization failure asks for a retry; anything else fails the batch
// (a lost connection closes the writer's connection).
static cm_result store_pg_error(store_backend *b, const store_pg_stmt *st, const PGresult *res,
                                const char *what, bool *out_retry, bool *out_single)
{
    store_pg_conn *c = &b->w;
    bool job_error = false;
    const uint32_t code = store_pg_code(c->pg, res, &job_error);
    if (job_error && st != NULL) {
        cm_log(CM_LOG_WARN, "store: job refused by the database: %.*s",
               (int)strcspn(PQresultErrorMessage(res), "\n"), PQresultErrorMessage(res));
        *out_retry = true;
        if (st->kind == STORE_PG_ONE) {
            store_pg_slot *slot = &b->slots[st->first];
            slot->run = false;
            slot->job->result =
                cm_bail_note(store_pg_job_error(slot->job, code), __FILE__, __LINE__);
        } else {
            *out_single = true;
        }
        return cm_bail_note(STORE_E_DB, __FILE__, __LINE__);
    }
    // Only a deadlock or a serialization failure (SQLSTATE class 40) is worth running again;
    // a lock_timeout is the answer.
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    *out_retry = code == STORE_E_BUSY && state != NULL && strncmp(state, "40", 2) == 0;
    return store_pg_fail(c, res, what);
}

// store_pg_pipeline runs the statements of the slots still to run once (one statement per job
// when |single|) and reads their outcomes. On a job's own error it fails that slot, or asks for
// a single-statement run (|*out_single|), and sets |*out_retry|; on a deadlock or serialization
// failure it sets |*out_retry| and returns STORE_E_BUSY. Leaves the connection out of pipeline
// mode and out of any transaction, or closed (then STORE_E_UNAVAILABLE).
static cm_result store_pg_pipeline(store_backend *b, size_t n, bool single, bool *out_retry,
                                   bool *out_single)
{
    store_pg_conn *c = &b->w;
    *out_retry = false;
    *out_single = false;
    const size_t num = store_pg_plan(b, n, single);
    if (num == 0) {
        return cm_result_make(CM_OK); // every job was decided without the database
    }
    // A batch of reservations only (store_job_durable: they need no durability; on SQLite they
    // complete before the commit) commits without waiting for the WAL's flush: a crash may lose
    // them, with the same consequence (the record then finds no reservation and the server
    // revokes the undelivered certificate). Any durable job makes the batch wait as always.
    bool lazy = true;
    for (size_t i = 0; i < n && lazy; i++) {
        const store_pg_slot *sl = &b->slots[i];
        lazy = !sl->run || sl->decided || !store_job_durable(sl->job);
    }
    CM_TRY(store_pg_send(b, num, lazy));
    PGconn *pg = c->pg;
    cm_result r = cm_result_make(CM_OK);
    // BEGIN (and the SET), one result per statement, COMMIT, then the sync. After an error the
    // server skips the rest (PGRES_PIPELINE_ABORTED) up to the sync; |r| keeps the first error.
    const size_t head = lazy ? 2 : 1;
    for (size_t i = 0; c->pg != NULL && i < head + num + 1; i++) {
        const store_pg_stmt *st = i >= head && i < head + num ? &b->stmts[i - head] : NULL;
        const char *what = i < head ? "BEGIN" : st != NULL ? "batch" : "COMMIT";
        PGresult *res = store_pg_take(pg);
        const ExecStatusType status = PQresultStatus(res);
        if (res == NULL) {
            r = store_pg_fail(c, NULL, what); // the connection is gone: closes it
        } else if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
            if (st != NULL && st->kind == STORE_PG_ONE) {
                store_pg_job_outcome(&b->slots[st->first], res);
            } else if (st != NULL) {
                store_pg_rows_outcome(b, st, res);
            }
        } else if (status == PGRES_PIPELINE_ABORTED || !cm_ok(r)) {
            // skipped after the first error
        } else {
            r = store_pg_error(b, st, res, what, out_retry, out_single);
        }
        PQclear(res);
    }
    if (c->pg != NULL) {
        PGresult *res = store_pg_take(pg);
        const bool synced = res != NULL && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
        PQclear(res);
        if (!synced || PQexitPipelineMode(pg) != 1) {
            r = store_pg_conn_lost(c, "batch out of step with the server");
        }
    }
    if (c->pg != NULL) {
        atomic_fetch_add(&c->b->round_trips, 1);
        if (PQtransactionStatus(pg) == PQTRANS_INERROR) {
            PQclear(PQexec(pg, "ROLLBACK"));
            atomic_fetch_add(&c->b->round_trips, 1);
        }
        if (PQtransactionStatus(pg) != PQTRANS_IDLE) {
            r = store_pg_conn_lost(c, "session not idle after a batch");
        }
    }
    if (c->pg == NULL) {
        *out_retry = false;
        if (cm_ok(r)) {
            r = cm_bail_note(STORE_E_UNAVAILABLE, __FILE__, __LINE__);
        }
    }
    return r;
}

// store_pg_slots fills b->slots with the jobs still CM_OK (and makes room for as many
// statements); returns how many, or SIZE_MAX when the arrays cannot grow.
static size_t store_pg_slots(store_backend *b, store_job *first)
{
    size_t n = 0;
    for (store_job *j = first; j != NULL; j = (store_job *)j->node.next) {
        n += cm_ok(j->result) ? 1u : 0u;
    }
    if (n > b->slots_cap) {
        store_pg_slot *grown = realloc(b->slots, n * sizeof(*grown));
        if (grown == NULL) {
            return SIZE_MAX;
        }
        b->slots = grown;
        store_pg_stmt *stmts = realloc(b->stmts, n * sizeof(*stmts));
        if (stmts == NULL) {
            return SIZE_MAX; // slots_cap stays: both grow again next time
        }
        b->stmts = stmts;
        b->slots_cap = n;
    }
    size_t i = 0;
    for (store_job *j = first; j != NULL; j = (store_job *)j->node.next) {
        if (cm_ok(j->result)) {
            b->slots[i++] = (store_pg_slot){.job = j, .run = true};
        }
    }
    return n;
}

cm_result store_pg_exec_batch(store_backend *b, store_job *first)
{
    const size_t n = store_pg_slots(b, first);
    CM_ENSURE(n != SIZE_MAX, CM_E_NOMEM);
    if (n == 0) {
        return cm_result_make(CM_OK); // every job was refused by validation
    }
    CM_TRY(store_pg_conn_ready(&b->w));
    int busy_retries = 0;
    bool single = false;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++) {
            left += b->slots[i].run ? 1u : 0u;
        }
        if (left == 0) {
            return cm_result_make(CM_OK); // every job failed alone: nothing to commit
        }
        bool retry = false;
        bool need_single = false;
        cm_result r = store_pg_pipeline(b, n, single, &retry, &need_single);
        if (cm_ok(r)) {
            for (size_t i = 0; i < n; i++) {
                store_pg_slot *sl = &b->slots[i];
                if (sl->run) {
                    sl->job->result = sl->code == CM_OK
                                          ? cm_result_make(CM_OK)
                                          : cm_bail_note(sl->code, __FILE__, __LINE__);
                    sl->job->out_value = sl->value;
                    memcpy(sl->job->also_serial, sl->also, sl->also_len);
                    sl->job->also_serial_len = sl->also_len;
                    sl->job->changed_many = sl->many;
                }
            }
            b->last_ok_ns = cm_time_mono_ns();
            atomic_store(&b->healthy, true);
            return r;
        }
        if (!retry || (r.code == STORE_E_BUSY && ++busy_retries > STORE_PG_RETRIES)) {
            return r;
        }
        single |= need_single;
    }
}

uint32_t store_pg_idle(store_backend *b)
{
    store_pg_conn *c = &b->w;
    if (c->pg == NULL) {
        if (cm_ok(store_pg_conn_ready(c))) {
            b->last_ok_ns = cm_time_mono_ns();
            atomic_store(&b->healthy, true);
            return STORE_PG_IDLE_MS;
        }
        const uint64_t now = cm_time_mono_ns();
        const uint64_t wait_ms = c->next_try_ns > now ? (c->next_try_ns - now) / 1000000u : 0;
        return wait_ms < 10 ? 10u
                            : (uint32_t)(wait_ms < STORE_PG_IDLE_MS ? wait_ms : STORE_PG_IDLE_MS);
    }
    // A round trip now and then, so that a database gone away is noticed (and /healthz says
    // so) before the next job arrives.
    if (!atomic_load(&b->healthy) || cm_time_mono_ns() - b->last_ok_ns >= STORE_PG_PING_NS) {
        if (cm_ok(store_pg_exec(c, "SELECT 1", PGRES_TUPLES_OK, NULL))) {
            b->last_ok_ns = cm_time_mono_ns();
            atomic_store(&b->healthy, true);
        }
    }
    return STORE_PG_IDLE_MS;
}
