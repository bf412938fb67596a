// The PostgreSQL backend's multi-row statements, on the writer thread: an enrolment is two jobs
// (its certificate, its transaction), and a batch of k enrolments sent as 2k statements costs
// the server 2k executor starts. store_pg_plan puts each run of consecutive certificate inserts
// and transaction creations into two statements, INSERT ... SELECT * FROM unnest(arrays) with
// one array element per job, the certificates first (a transaction row names its certificate:
// moving certificates ahead of transactions never breaks one, and neither kind depends on the
// other otherwise). ON CONFLICT DO NOTHING RETURNING names the rows that went in; a job whose
// row is not returned conflicted with a row already in the database. Two jobs of one run with
// the same key are decided here: the first goes to the database, the later ones conflict (as
// they would one statement after the other). An error in a multi-row statement cannot name its
// job, so the batch then runs again one statement per job (store_pg_write.c), which does.
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_pg_internal.h"

// store_pg_rows_op: the jobs multi-row statements carry (a kur's certificate has more to do).
static bool store_pg_rows_op(const store_job *j)
{
    return (j->op == STORE_OP_CERT_INSERT && j->u.cert.replaces.len == 0) ||
           j->op == STORE_OP_TXN_CREATE || j->op == STORE_OP_TXN_UPDATE;
}

// store_pg_same_key: two jobs on one row, (ca, serial) of a certificate or (ca,
// transactionID) of a transaction.
static bool store_pg_same_key(const store_job *a, const store_job *b)
{
    const bool cert = a->op == STORE_OP_CERT_INSERT;
    if (cert != (b->op == STORE_OP_CERT_INSERT)) {
        return false;
    }
    if (cert) {
        return strcmp(a->u.cert.ca, b->u.cert.ca) == 0 &&
               cm_span_eq(a->u.cert.serial, b->u.cert.serial);
    }
    return strcmp(a->u.txn.ca, b->u.txn.ca) == 0 &&
           cm_span_eq(a->u.txn.transaction_id, b->u.txn.transaction_id);
}

// store_pg_rows_kind is the multi-row statement a job of a run goes to.
static store_pg_stmt_kind store_pg_rows_kind(const store_job *j)
{
    return j->op == STORE_OP_CERT_INSERT  ? STORE_PG_CERTS
           : j->op == STORE_OP_TXN_CREATE ? STORE_PG_TXNS
                                          : STORE_PG_TXN_UPDS;
}

// store_pg_rows_decide: whether slot |s| can join the run [first, end): a second insert of a
// key in the run is decided here (the earlier one goes to the database and the later conflicts,
// as one job after the other); any other second job on one row (an update with an insert or
// another update) ends the run before it (false).
static bool store_pg_rows_decide(store_pg_slot *slots, size_t first, size_t end, store_pg_slot *s)
{
    for (size_t k = first; k < end; k++) {
        const store_pg_slot *o = &slots[k];
        if (!o->run || o->decided || !store_pg_same_key(o->job, s->job)) {
            continue;
        }
        if (o->job->op != s->job->op || s->job->op == STORE_OP_TXN_UPDATE) {
            return false;
        }
        s->decided = true;
        s->code =
            s->job->op == STORE_OP_CERT_INSERT ? STORE_E_DUPLICATE_SERIAL : STORE_E_TXN_IN_USE;
        s->value = 0;
        s->also_len = 0;
        s->many = false;
        return true;
    }
    return true;
}

size_t store_pg_plan(store_backend *b, size_t n, bool single)
{
    store_pg_slot *slots = b->slots;
    size_t num = 0;
    size_t i = 0;
    while (i < n) {
        if (!slots[i].run || slots[i].decided) {
            i++;
            continue;
        }
        if (single || !store_pg_rows_op(slots[i].job)) {
            b->stmts[num++] = (store_pg_stmt){.kind = STORE_PG_ONE, .first = i, .end = i + 1};
            i++;
            continue;
        }
        // A run of enrolment jobs (skipping slots out of the batch), at most STORE_PG_ROWS of
        // each kind.
        size_t end = i;
        size_t count[3] = {0, 0, 0}; // by store_pg_rows_kind - STORE_PG_CERTS
        while (end < n) {
            store_pg_slot *s = &slots[end];
            if (s->run && !s->decided) {
                const size_t k = (size_t)(store_pg_rows_kind(s->job) - STORE_PG_CERTS);
                if (!store_pg_rows_op(s->job) || count[k] >= STORE_PG_ROWS ||
                    !store_pg_rows_decide(slots, i, end, s)) {
                    break;
                }
                count[k] += s->decided ? 0u : 1u;
            }
            end++;
        }
        static const store_pg_stmt_kind k_kinds[3] = {STORE_PG_CERTS, STORE_PG_TXNS,
                                                      STORE_PG_TXN_UPDS};
        for (size_t k = 0; k < 3; k++) {
            if (count[k] > 0) {
                b->stmts[num++] = (store_pg_stmt){.kind = k_kinds[k], .first = i, .end = end};
            }
        }
        i = end;
    }
    return num;
}
// ---------------------------------------------------------------------------------------------
// Arrays in PostgreSQL's binary format (array_send): int32 ndim = 1, int32 has-nulls, Oid of the
// element type, int32 length, int32 lower bound = 1, then per element int32 length (-1: NULL)
// and its bytes. Integers big-endian.

static bool store_pg_rows_room(store_backend *b, size_t extra)
{
    if (b->rows_len + extra <= b->rows_cap) {
        return true;
    }
    size_t cap = b->rows_cap == 0 ? 65536 : b->rows_cap;
    while (cap < b->rows_len + extra) {
        cap *= 2;
    }
    uint8_t *grown = realloc(b->rows, cap);
    if (grown == NULL) {
        return false;
    }
    b->rows = grown;
    b->rows_cap = cap;
    return true;
}

static void store_pg_rows_u32(store_backend *b, uint32_t v)
{
    uint8_t *p = b->rows + b->rows_len;
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    b->rows_len += 4;
}

// store_pg_array is one array being written into b->rows.
typedef struct store_pg_array {
    size_t start; // offset of its header in b->rows
    bool ok;      // false once b->rows could not grow
} store_pg_array;

static store_pg_array store_pg_array_begin(store_backend *b, uint32_t elem_oid, size_t count)
{
    store_pg_array a = {.start = b->rows_len, .ok = store_pg_rows_room(b, 20)};
    if (a.ok) {
        store_pg_rows_u32(b, 1);
        store_pg_rows_u32(b, 0); // has-nulls, set by the first NULL
        store_pg_rows_u32(b, elem_oid);
        store_pg_rows_u32(b, (uint32_t)count);
        store_pg_rows_u32(b, 1);
    }
    return a;
}

static void store_pg_array_bytes(store_backend *b, store_pg_array *a, const void *p, size_t len,
                                 bool null)
{
    if (!a->ok || !store_pg_rows_room(b, 4 + len)) {
        a->ok = false;
        return;
    }
    if (null) {
        store_pg_rows_u32(b, UINT32_MAX); // -1
        b->rows[a->start + 7] = 1;        // has-nulls
        return;
    }
    store_pg_rows_u32(b, (uint32_t)len);
    memcpy(b->rows + b->rows_len, p, len);
    b->rows_len += len;
}

// Optional spans (empty) and times (0) are NULL, as for single statements.
static void store_pg_array_span(store_backend *b, store_pg_array *a, cm_span s)
{
    store_pg_array_bytes(b, a, s.p, s.len, s.len == 0);
}

static void store_pg_array_text(store_backend *b, store_pg_array *a, const char *t)
{
    store_pg_array_bytes(b, a, t, t != NULL ? strlen(t) : 0, t == NULL);
}

static void store_pg_array_int(store_backend *b, store_pg_array *a, int64_t v, bool null)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++) {
        be[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    }
    store_pg_array_bytes(b, a, be, sizeof(be), null);
}

// The element types (pg_type.h) and the columns of each statement, in parameter order.
#define STORE_PG_OID_TEXT  25u
#define STORE_PG_OID_BYTEA 17u
#define STORE_PG_OID_INT8  20u

enum { STORE_PG_CERT_COLS = 14, STORE_PG_TXN_COLS = 11 };

static const uint32_t k_store_pg_cert_oids[STORE_PG_CERT_COLS] = {
    STORE_PG_OID_TEXT,  STORE_PG_OID_BYTEA, STORE_PG_OID_BYTEA, STORE_PG_OID_TEXT,
    STORE_PG_OID_INT8,  STORE_PG_OID_INT8,  STORE_PG_OID_BYTEA, STORE_PG_OID_TEXT,
    STORE_PG_OID_BYTEA, STORE_PG_OID_INT8,  STORE_PG_OID_BYTEA, STORE_PG_OID_BYTEA,
    STORE_PG_OID_INT8,  STORE_PG_OID_INT8};
static const uint32_t k_store_pg_txn_oids[STORE_PG_TXN_COLS] = {
    STORE_PG_OID_TEXT,  STORE_PG_OID_BYTEA, STORE_PG_OID_INT8,  STORE_PG_OID_BYTEA,
    STORE_PG_OID_BYTEA, STORE_PG_OID_INT8,  STORE_PG_OID_BYTEA, STORE_PG_OID_INT8,
    STORE_PG_OID_INT8,  STORE_PG_OID_BYTEA, STORE_PG_OID_BYTEA};

// store_pg_rows_in reports whether slot |s| belongs to the multi-row statement |st|.
static bool store_pg_rows_in(const store_pg_slot *s, const store_pg_stmt *st)
{
    return s->run && !s->decided && store_pg_rows_op(s->job) &&
           store_pg_rows_kind(s->job) == st->kind;
}

// store_pg_rows_column writes column |col| of the statement's rows as one array.
static store_pg_array store_pg_rows_column(store_backend *b, const store_pg_stmt *st, int col,
                                           size_t count)
{
    const bool certs = st->kind == STORE_PG_CERTS;
    store_pg_array a = store_pg_array_begin(
        b, certs ? k_store_pg_cert_oids[col] : k_store_pg_txn_oids[col], count);
    for (size_t i = st->first; i < st->end; i++) {
        const store_pg_slot *s = &b->slots[i];
        if (!store_pg_rows_in(s, st)) {
            continue;
        }
        if (certs) {
            const store_cert *c = &s->job->u.cert;
            switch (col) {
            case 0:
                store_pg_array_text(b, &a, c->ca);
                break;
            case 1:
                store_pg_array_span(b, &a, c->serial);
                break;
            case 2:
                store_pg_array_span(b, &a, c->subject_der);
                break;
            case 3:
                store_pg_array_text(b, &a, c->subject_text);
                break;
            case 4:
                store_pg_array_int(b, &a, c->not_before, false);
                break;
            case 5:
                store_pg_array_int(b, &a, c->not_after, false);
                break;
            case 6:
                store_pg_array_span(b, &a, c->spki_sha256);
                break;
            case 7:
                store_pg_array_text(b, &a, store_pg_status_text[c->status]);
                break;
            case 8:
                store_pg_array_span(b, &a, c->transaction_id);
                break;
            case 9:
                store_pg_array_int(b, &a, (int64_t)c->requester_kind, false);
                break;
            case 10:
                store_pg_array_span(b, &a, c->requester);
                break;
            case 11:
                store_pg_array_span(b, &a, c->cert_der);
                break;
            case 12:
                store_pg_array_int(b, &a, c->issued_at, false);
                break;
            default: {
                const int64_t dl = c->status == STORE_CERT_UNCONFIRMED ? c->confirm_deadline : 0;
                store_pg_array_int(b, &a, dl, dl == 0);
                break;
            }
            }
        } else {
            const store_txn *t = &s->job->u.txn;
            switch (col) {
            case 0:
                store_pg_array_text(b, &a, t->ca);
                break;
            case 1:
                store_pg_array_span(b, &a, t->transaction_id);
                break;
            case 2:
                store_pg_array_int(b, &a, (int64_t)t->state, false);
                break;
            case 3:
                store_pg_array_span(b, &a, t->sender_nonce);
                break;
            case 4:
                store_pg_array_span(b, &a, t->serial);
                break;
            case 5:
                store_pg_array_int(b, &a, (int64_t)t->protection, false);
                break;
            case 6:
                store_pg_array_span(b, &a, t->credential);
                break;
            case 7:
                store_pg_array_int(b, &a, t->expires_at, false);
                break;
            case 8:
                store_pg_array_int(b, &a, (int64_t)t->flags, false);
                break;
            case 9:
                store_pg_array_span(b, &a, t->request_nonce);
                break;
            default:
                store_pg_array_span(b, &a, t->signer_cert);
                break;
            }
        }
    }
    return a;
}

cm_result store_pg_rows_params(store_backend *b, const store_pg_stmt *st, store_pg_params *p)
{
    size_t count = 0;
    for (size_t i = st->first; i < st->end; i++) {
        count += store_pg_rows_in(&b->slots[i], st) ? 1u : 0u;
    }
    CM_ENSURE(count > 0 && count <= STORE_PG_ROWS, STORE_E_INVALID);
    const int cols = st->kind == STORE_PG_CERTS ? STORE_PG_CERT_COLS : STORE_PG_TXN_COLS;
    size_t start[STORE_PG_CERT_COLS];
    b->rows_len = 0;
    for (int col = 0; col < cols; col++) {
        const store_pg_array a = store_pg_rows_column(b, st, col, count);
        CM_ENSURE(a.ok, CM_E_NOMEM);
        start[col] = a.start;
    }
    // Pointers only now: b->rows may have moved while it grew.
    p->n = 0;
    for (int col = 0; col < cols; col++) {
        const size_t end = col + 1 < cols ? start[col + 1] : b->rows_len;
        p->values[col] = (const char *)b->rows + start[col];
        p->lengths[col] = (int)(end - start[col]);
        p->formats[col] = 1;
    }
    p->n = cols;
    return cm_result_make(CM_OK);
}

void store_pg_rows_outcome(store_backend *b, const store_pg_stmt *st, const PGresult *res)
{
    const bool certs = st->kind == STORE_PG_CERTS;
    // A row not returned: a certificate's serial or a new transaction's ID was taken, or an
    // updated transaction does not exist.
    const uint32_t conflict = certs                       ? STORE_E_DUPLICATE_SERIAL
                              : st->kind == STORE_PG_TXNS ? STORE_E_TXN_IN_USE
                                                          : STORE_E_TXN_NOT_FOUND;
    for (size_t i = st->first; i < st->end; i++) {
        store_pg_slot *s = &b->slots[i];
        if (store_pg_rows_in(s, st)) {
            s->code = conflict;
            s->value = 0;
            s->also_len = 0;
            s->many = false;
        }
    }
    // Each returned row (binary: ca as its bytes, the key as its bytes) is a job's row that
    // went in. Keys are unique within the statement (store_pg_plan).
    for (int row = 0; row < PQntuples(res); row++) {
        const char *ca = PQgetvalue(res, row, 0);
        const cm_span key = cm_span_make(PQgetvalue(res, row, 1), (size_t)PQgetlength(res, row, 1));
        for (size_t i = st->first; i < st->end; i++) {
            store_pg_slot *s = &b->slots[i];
            if (!store_pg_rows_in(s, st) || s->code == CM_OK) {
                continue;
            }
            const char *sca = certs ? s->job->u.cert.ca : s->job->u.txn.ca;
            const cm_span skey = certs ? s->job->u.cert.serial : s->job->u.txn.transaction_id;
            if (strcmp(sca, ca) == 0 && cm_span_eq(skey, key)) {
                s->code = CM_OK;
                break;
            }
        }
    }
}
