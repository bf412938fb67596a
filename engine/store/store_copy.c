// store_copy: every row of one store into another, through the public reads of the source and
// STORE_OP_COPY_* jobs on the target, whatever the two backends are (certmint store copy).
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"

// STORE_COPY_BATCH rows go into one transaction of the target.
#define STORE_COPY_BATCH 256

// store_copy_ctx gathers rows (copied into |a|, since a listing's rows are valid only during
// its callback) into jobs and runs them STORE_COPY_BATCH at a time. Thread: the caller's.
typedef struct store_copy_ctx {
    store *dst;
    cm_arena a;
    store_job jobs[STORE_COPY_BATCH];
    size_t num_jobs;
    cm_result result;
    store_copy_counts *counts;
    uint64_t *counter; // the member of |counts| the current listing adds to
} store_copy_ctx;

static bool store_copy_flush(store_copy_ctx *c)
{
    if (c->num_jobs == 0 || !cm_ok(c->result)) {
        return cm_ok(c->result);
    }
    store_job *batch[STORE_COPY_BATCH];
    for (size_t i = 0; i < c->num_jobs; i++) {
        batch[i] = &c->jobs[i];
    }
    c->result = store_run_batch(c->dst, batch, c->num_jobs);
    if (cm_ok(c->result)) {
        *c->counter += c->num_jobs;
    }
    c->num_jobs = 0;
    cm_arena_reset(&c->a);
    return cm_ok(c->result);
}

// store_copy_span and store_copy_text copy a row's field (a NULL text stays NULL) into the
// batch's arena; false (with c->result CM_E_NOMEM) when it is full.
static bool store_copy_span(store_copy_ctx *c, cm_span *s)
{
    if (s->len == 0) {
        *s = cm_span_make(NULL, 0);
        return true;
    }
    uint8_t *p = cm_arena_memdup(&c->a, *s);
    if (p == NULL) {
        c->result = cm_result_make(CM_E_NOMEM);
        return false;
    }
    *s = cm_span_make(p, s->len);
    return true;
}

static bool store_copy_text(store_copy_ctx *c, const char **t)
{
    if (*t == NULL) {
        return true;
    }
    cm_span s = cm_span_make(*t, strlen(*t) + 1);
    if (!store_copy_span(c, &s)) {
        return false;
    }
    *t = (const char *)s.p;
    return true;
}

static store_job *store_copy_next(store_copy_ctx *c, store_op op)
{
    store_job *j = &c->jobs[c->num_jobs++];
    store_job_init(j, op, NULL);
    return j;
}

static bool store_copy_cert_row(void *ctx, const store_cert *row)
{
    store_copy_ctx *c = ctx;
    store_job *j = store_copy_next(c, STORE_OP_COPY_CERT);
    store_cert *d = &j->u.cert;
    *d = *row;
    d->id = 0;
    if (!store_copy_text(c, &d->ca) || !store_copy_span(c, &d->serial) ||
        !store_copy_span(c, &d->subject_der) || !store_copy_text(c, &d->subject_text) ||
        !store_copy_span(c, &d->spki_sha256) || !store_copy_span(c, &d->transaction_id) ||
        !store_copy_span(c, &d->requester) || !store_copy_span(c, &d->cert_der) ||
        !store_copy_span(c, &d->replaces)) {
        return false;
    }
    return c->num_jobs < STORE_COPY_BATCH || store_copy_flush(c);
}

static bool store_copy_txn_row(void *ctx, const store_txn *row)
{
    store_copy_ctx *c = ctx;
    store_job *j = store_copy_next(c, STORE_OP_COPY_TXN);
    store_txn *d = &j->u.txn;
    *d = *row;
    if (!store_copy_text(c, &d->ca) || !store_copy_span(c, &d->transaction_id) ||
        !store_copy_span(c, &d->sender_nonce) || !store_copy_span(c, &d->serial) ||
        !store_copy_span(c, &d->credential) || !store_copy_span(c, &d->request_nonce) ||
        !store_copy_span(c, &d->signer_cert) || !store_copy_span(c, &d->reserved_serial) ||
        !store_copy_span(c, &d->spki_sha256) || !store_copy_span(c, &d->replaces)) {
        return false;
    }
    return c->num_jobs < STORE_COPY_BATCH || store_copy_flush(c);
}

static bool store_copy_pending_row(void *ctx, const store_pending *row)
{
    store_copy_ctx *c = ctx;
    store_job *j = store_copy_next(c, STORE_OP_COPY_PENDING);
    store_pending *d = &j->u.pend;
    *d = *row;
    d->rsv = NULL;
    d->txn_flags = 0;
    d->request_nonce = cm_span_make(NULL, 0);
    d->signer_cert = cm_span_make(NULL, 0);
    if (!store_copy_text(c, &d->ca) || !store_copy_span(c, &d->transaction_id) ||
        !store_copy_text(c, &d->profile) || !store_copy_text(c, &d->subject) ||
        !store_copy_text(c, &d->key_type) || !store_copy_text(c, &d->requester) ||
        !store_copy_span(c, &d->tbs) || !store_copy_span(c, &d->serial) ||
        !store_copy_text(c, &d->status_text) || !store_copy_span(c, &d->replaces)) {
        return false;
    }
    return c->num_jobs < STORE_COPY_BATCH || store_copy_flush(c);
}

static bool store_copy_crl_row(void *ctx, const store_crl *row)
{
    store_copy_ctx *c = ctx;
    store_job *j = store_copy_next(c, STORE_OP_COPY_CRL);
    store_crl *d = &j->u.crl;
    *d = *row;
    if (!store_copy_text(c, &d->ca) || !store_copy_span(c, &d->crl_der)) {
        return false;
    }
    return c->num_jobs < STORE_COPY_BATCH || store_copy_flush(c);
}

static bool store_copy_use_row(void *ctx, const store_use *row)
{
    store_copy_ctx *c = ctx;
    store_job *j = store_copy_next(c, STORE_OP_COPY_USE);
    store_use *d = &j->u.use;
    *d = *row;
    if (!store_copy_text(c, &d->ca) || !store_copy_span(c, &d->credential)) {
        return false;
    }
    return c->num_jobs < STORE_COPY_BATCH || store_copy_flush(c);
}

// The CM_OK-returning listings stop early when a callback returns false; the failure is in
// c->result then.
static cm_result store_copy_finish(store_copy_ctx *c, cm_result listed)
{
    if (cm_ok(listed)) {
        (void)store_copy_flush(c);
    }
    return cm_ok(listed) ? c->result : listed;
}

cm_result store_copy(store *dst, store_reader *src, bool clear, store_copy_counts *out_copied)
{
    store_copy_ctx *c = calloc(1, sizeof(*c));
    CM_ENSURE(c != NULL, CM_E_NOMEM);
    c->dst = dst;
    c->counts = out_copied;
    c->result = cm_result_make(CM_OK);
    cm_arena_init(&c->a, 64 * 1024, 0);
    cm_result r = cm_result_make(CM_OK);
    if (clear) {
        store_job wipe;
        store_job_init(&wipe, STORE_OP_COPY_CLEAR, NULL);
        r = store_run(dst, &wipe);
    }
    // Certificates first: the transactions' serials refer to them; the pending rows after the
    // transactions holding their reservations.
    if (cm_ok(r)) {
        c->counter = &out_copied->certs;
        store_filter all = {.status = STORE_CERT_ANY};
        r = store_copy_finish(c, store_cert_list(src, &all, store_copy_cert_row, c));
    }
    if (cm_ok(r)) {
        c->counter = &out_copied->txns;
        r = store_copy_finish(c, store_txn_list(src, store_copy_txn_row, c));
    }
    if (cm_ok(r)) {
        c->counter = &out_copied->pending;
        store_pending_filter every = {0};
        r = store_copy_finish(c, store_pending_list(src, &every, store_copy_pending_row, c));
    }
    if (cm_ok(r)) {
        c->counter = &out_copied->crl_states;
        r = store_copy_finish(c, store_crl_list(src, store_copy_crl_row, c));
    }
    if (cm_ok(r)) {
        c->counter = &out_copied->uses;
        r = store_copy_finish(c, store_use_list(src, store_copy_use_row, c));
    }
    cm_arena_cleanup(&c->a);
    free(c);
    return r;
}

static bool store_copy_count_txn(void *ctx, const store_txn *t)
{
    (void)t;
    (*(uint64_t *)ctx)++;
    return true;
}

static bool store_copy_count_crl(void *ctx, const store_crl *c)
{
    (void)c;
    (*(uint64_t *)ctx)++;
    return true;
}

static bool store_copy_count_pending(void *ctx, const store_pending *p)
{
    (void)p;
    (*(uint64_t *)ctx)++;
    return true;
}

static bool store_copy_count_use(void *ctx, const store_use *u)
{
    (void)u;
    (*(uint64_t *)ctx)++;
    return true;
}

cm_result store_copy_count(store_reader *r, store_copy_counts *out)
{
    memset(out, 0, sizeof(*out));
    store_filter all = {.status = STORE_CERT_ANY};
    CM_TRY(store_cert_count(r, &all, &out->certs));
    CM_TRY(store_txn_list(r, store_copy_count_txn, &out->txns));
    CM_TRY(store_crl_list(r, store_copy_count_crl, &out->crl_states));
    store_pending_filter every = {0};
    CM_TRY(store_pending_list(r, &every, store_copy_count_pending, &out->pending));
    return store_use_list(r, store_copy_count_use, &out->uses);
}
