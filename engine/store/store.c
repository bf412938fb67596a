// The backend-independent half of the store: URL dispatch, the job queue, the group-commit
// writer thread, statistics, the blocking helpers and store_copy.
#include "engine/store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/store/store_internal.h"

#define STORE_DEFAULT_MAX_BATCH     4096
#define STORE_DEFAULT_CACHE_ENTRIES 16384

// STORE_DEFER_NS bounds how long a transaction that holds only reservations stays open waiting
// for the records that will follow them (store_execute_batch): after it, the writer commits it
// even while reservations keep arriving, and an idle writer commits it when it runs out.
// store_options.reservation_defer_ms overrides it.
#define STORE_DEFER_NS 2000000u

// store is the open store. Thread: |mu| guards the queue, |stopping|, |stats| and |readers|;
// |backend| belongs to the writer thread after store_open returns; the rest is immutable.
struct store {
    const store_backend_ops *ops;
    store_backend *backend;
    size_t max_batch;
    pthread_t writer;

    pthread_mutex_t mu;
    pthread_cond_t cv;   // signalled when jobs arrive or stopping is set
    store_job *head;     // guarded_by(mu): FIFO of submitted jobs, linked through node.next
    store_job *tail;     // guarded_by(mu)
    size_t depth;        // guarded_by(mu)
    bool stopping;       // guarded_by(mu)
    bool writer_waiting; // guarded_by(mu): the writer sleeps on |cv|
    size_t readers;      // guarded_by(mu): open readers
    store_stats stats;   // guarded_by(mu), written by the writer
    store_cache *cache;  // the signer-status cache (internally locked); NULL when off
    // Writer thread only: a transaction is open that holds executed, completed reservations and
    // nothing durable (store_execute_batch), since |txn_open_ns|.
    bool txn_open;
    uint64_t txn_open_ns;
    uint64_t defer_ns; // immutable: STORE_DEFER_NS or the option
};

// store_reader pairs the backend's read connection with its store. Thread: one at a time.
struct store_reader {
    store *s;
    store_backend_reader *r;
};

void store_job_init(store_job *job, store_op op, cm_cq *cq)
{
    memset(job, 0, sizeof(*job));
    job->node.kind = CM_CQ_KIND_STORE_JOB;
    job->op = op;
    job->cq = cq;
    job->result = cm_result_make(CM_OK);
}

static bool store_span_ok(cm_span s, bool required)
{
    if (s.len == 0) {
        return !required;
    }
    return s.p != NULL;
}

static bool store_reason_ok(int reason)
{
    return reason >= STORE_REASON_UNSPECIFIED && reason <= STORE_REASON_AA_COMPROMISE &&
           reason != 7 && reason != STORE_REASON_REMOVE_FROM_CRL;
}

static bool store_cert_fields_ok(const store_cert *c)
{
    return c->ca != NULL && c->ca[0] != '\0' && store_span_ok(c->serial, true) &&
           c->serial.len <= 20 && store_span_ok(c->subject_der, true) && c->subject_text != NULL &&
           c->spki_sha256.len == 32 && c->spki_sha256.p != NULL &&
           store_span_ok(c->transaction_id, false) && store_span_ok(c->requester, false) &&
           store_span_ok(c->cert_der, true) && c->requester_kind <= STORE_AUTH_SIGNATURE &&
           store_span_ok(c->replaces, false) && c->replaces.len <= 20 &&
           (c->status == STORE_CERT_VALID ||
            (c->status == STORE_CERT_UNCONFIRMED && c->confirm_deadline != 0));
}

// store_copy_cert_ok checks a STORE_OP_COPY_CERT row: the insert's fields, any status, and
// the revocation fields the status needs (the schema's CHECKs).
static bool store_copy_cert_ok(const store_cert *c)
{
    store_cert base = *c;
    base.status = STORE_CERT_VALID;
    if (!store_cert_fields_ok(&base) || c->status > STORE_CERT_HOLD) {
        return false;
    }
    switch (c->status) {
    case STORE_CERT_UNCONFIRMED:
        return c->confirm_deadline != 0;
    case STORE_CERT_REVOKED:
        return store_reason_ok(c->reason) && c->reason != STORE_REASON_CERTIFICATE_HOLD;
    case STORE_CERT_HOLD:
        return c->reason == STORE_REASON_CERTIFICATE_HOLD;
    default:
        return true;
    }
}

static bool store_rsv_fields_ok(const store_reservation *v, bool reserve)
{
    return v->ca != NULL && v->ca[0] != '\0' && store_span_ok(v->transaction_id, true) &&
           store_span_ok(v->credential, false) && v->protection <= STORE_AUTH_SIGNATURE &&
           (!reserve || (store_span_ok(v->serial, true) && v->serial.len <= 20 &&
                         v->spki_sha256.len == 32 && v->spki_sha256.p != NULL &&
                         store_span_ok(v->replaces, false) && v->replaces.len <= 20));
}

static bool store_txn_fields_ok(const store_txn *t)
{
    return t->ca != NULL && t->ca[0] != '\0' && store_span_ok(t->transaction_id, true) &&
           store_span_ok(t->sender_nonce, false) && store_span_ok(t->serial, false) &&
           store_span_ok(t->credential, false) && t->protection <= STORE_AUTH_SIGNATURE &&
           store_span_ok(t->request_nonce, false) && store_span_ok(t->signer_cert, false);
}

static bool store_pending_fields_ok(const store_pending *p)
{
    return p->ca != NULL && p->ca[0] != '\0' && store_span_ok(p->transaction_id, true) &&
           (p->state == STORE_PENDING_QUEUED || p->state == STORE_PENDING_APPROVAL) &&
           (p->why == STORE_PENDING_WHY_LOAD || p->why == STORE_PENDING_WHY_APPROVAL) &&
           p->subject != NULL && p->key_type != NULL && p->requester != NULL &&
           store_span_ok(p->tbs, true) && store_span_ok(p->serial, true) && p->serial.len <= 20 &&
           p->rsv != NULL && store_rsv_fields_ok(p->rsv, true) && p->rsv->ca != NULL &&
           strcmp(p->rsv->ca, p->ca) == 0 &&
           cm_span_eq(p->rsv->transaction_id, p->transaction_id) &&
           cm_span_eq(p->rsv->serial, p->serial) && store_span_ok(p->request_nonce, false) &&
           store_span_ok(p->signer_cert, false);
}

// store_copy_txn_ok checks a STORE_OP_COPY_TXN row: the transaction's fields and its
// reservation's (a key hash has 32 bytes).
static bool store_copy_txn_ok(const store_txn *t)
{
    return store_txn_fields_ok(t) && store_span_ok(t->reserved_serial, false) &&
           t->reserved_serial.len <= 20 && (t->spki_sha256.len == 0 || t->spki_sha256.len == 32) &&
           store_span_ok(t->spki_sha256, false) && store_span_ok(t->replaces, false) &&
           t->replaces.len <= 20;
}

// store_copy_pending_ok checks a STORE_OP_COPY_PENDING row against the schema's rules (a
// SIGNING row was claimed, a REJECTED one has its failInfo).
static bool store_copy_pending_ok(const store_pending *p)
{
    return p->id > 0 && p->ca != NULL && p->ca[0] != '\0' &&
           store_span_ok(p->transaction_id, true) && p->state < STORE_PENDING_NUM_STATES &&
           (p->why == STORE_PENDING_WHY_LOAD || p->why == STORE_PENDING_WHY_APPROVAL) &&
           p->subject != NULL && p->key_type != NULL && p->requester != NULL &&
           store_span_ok(p->tbs, true) && store_span_ok(p->serial, true) && p->serial.len <= 20 &&
           store_span_ok(p->replaces, false) && p->replaces.len <= 20 && p->fail_info >= -1 &&
           p->fail_info < 32 && (p->state != STORE_PENDING_SIGNING || p->claimed_at != 0) &&
           (p->state != STORE_PENDING_REJECTED || p->fail_info >= 0);
}

cm_result store_job_validate(const store_job *job)
{
    const store_ref *ref = &job->u.ref;
    bool ok = false;
    switch (job->op) {
    case STORE_OP_CERT_INSERT:
        ok = store_cert_fields_ok(&job->u.cert);
        break;
    case STORE_OP_CERT_CONFIRM:
    case STORE_OP_CERT_RELEASE:
        ok = ref->ca != NULL && store_span_ok(ref->serial, true);
        break;
    case STORE_OP_CERT_REVOKE:
        ok = ref->ca != NULL && store_span_ok(ref->serial, true) && store_reason_ok(ref->reason);
        break;
    case STORE_OP_TXN_CREATE:
    case STORE_OP_TXN_UPDATE:
        ok = store_txn_fields_ok(&job->u.txn);
        break;
    case STORE_OP_TXN_DELETE:
        ok = ref->ca != NULL && store_span_ok(ref->transaction_id, true);
        break;
    case STORE_OP_TXN_EXPIRE:
        ok = true;
        break;
    case STORE_OP_SWEEP:
        ok = store_reason_ok(ref->reason);
        break;
    case STORE_OP_CRL_NEXT_NUMBER:
        ok = ref->ca != NULL && ref->ca[0] != '\0';
        break;
    case STORE_OP_CRL_PUT:
        ok = job->u.crl.ca != NULL && job->u.crl.ca[0] != '\0' &&
             store_span_ok(job->u.crl.crl_der, true) && job->u.crl.crl_number <= INT64_MAX &&
             job->u.crl.built_revision <= INT64_MAX;
        break;
    case STORE_OP_COPY_CERT:
        ok = store_copy_cert_ok(&job->u.cert);
        break;
    case STORE_OP_COPY_CRL:
        ok = job->u.crl.ca != NULL && job->u.crl.ca[0] != '\0' &&
             store_span_ok(job->u.crl.crl_der, false) && job->u.crl.crl_number <= INT64_MAX &&
             job->u.crl.built_revision <= INT64_MAX && job->u.crl.numbers_issued <= INT64_MAX &&
             job->u.crl.revision <= INT64_MAX;
        break;
    case STORE_OP_COPY_CLEAR:
        ok = true;
        break;
    case STORE_OP_COPY_USE:
        ok = job->u.use.ca != NULL && job->u.use.ca[0] != '\0' &&
             (job->u.use.kind == STORE_AUTH_MAC || job->u.use.kind == STORE_AUTH_SIGNATURE) &&
             store_span_ok(job->u.use.credential, true) && job->u.use.used <= INT64_MAX;
        break;
    case STORE_OP_COPY_TXN:
        ok = store_copy_txn_ok(&job->u.txn);
        break;
    case STORE_OP_COPY_PENDING:
        ok = store_copy_pending_ok(&job->u.pend);
        break;
    case STORE_OP_TXN_RESERVE:
    case STORE_OP_TXN_UNRESERVE:
        ok = store_rsv_fields_ok(&job->u.rsv, job->op == STORE_OP_TXN_RESERVE);
        break;
    case STORE_OP_PENDING_ADD:
        ok = store_pending_fields_ok(&job->u.pend);
        break;
    case STORE_OP_PENDING_CLAIM:
        ok = job->u.pop.id > 0;
        break;
    case STORE_OP_PENDING_DECIDE:
        ok = job->u.pop.id > 0 &&
             (job->u.pop.approve || (job->u.pop.fail_info >= 0 && job->u.pop.fail_info < 32 &&
                                     job->u.pop.status_text != NULL));
        break;
    case STORE_OP_PENDING_ISSUE:
        ok = job->u.pop.id > 0 && job->u.pop.cert != NULL &&
             store_cert_fields_ok(job->u.pop.cert) && job->u.pop.cert->transaction_id.len != 0;
        break;
    case STORE_OP_PENDING_DELIVER:
        ok = job->u.pop.ca != NULL && store_span_ok(job->u.pop.transaction_id, true) &&
             store_span_ok(job->u.pop.sender_nonce, false);
        break;
    case STORE_OP_PENDING_EXPIRE:
        ok = job->u.pop.fail_info >= 0 && job->u.pop.fail_info < 32 &&
             job->u.pop.status_text != NULL;
        break;
    }
    CM_ENSURE(ok, STORE_E_INVALID);
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Statistics

static unsigned store_log2_bucket(uint64_t v)
{
    // Bucket i holds 2^(i-1) <= v < 2^i, i.e. i is the bit length of v.
    unsigned b = v == 0 ? 0u : 64u - (unsigned)__builtin_clzll(v);
    return b < STORE_HIST_BUCKETS ? b : STORE_HIST_BUCKETS - 1;
}

// ---------------------------------------------------------------------------------------------
// The writer

// store_complete pushes the finished jobs first..(n jobs) to their queues, one chain per run of
// jobs sharing a queue. The jobs may be freed by their owners as soon as they are pushed, so
// every field is read before the push.
static void store_complete(store_job *first)
{
    store_job *j = first;
    while (j != NULL) {
        store_job *run_last = j;
        while (run_last->node.next != NULL && ((store_job *)run_last->node.next)->cq == j->cq) {
            run_last = (store_job *)run_last->node.next;
        }
        store_job *next = (store_job *)run_last->node.next;
        cm_cq_push_chain(j->cq, &j->node, &run_last->node);
        j = next;
    }
}

// store_note_job invalidates the cached status of what a committed job changed. Plain inserts
// change nothing cached: a certificate not yet in the store is never cached.
static void store_note_job(store *s, const store_job *j)
{
    const store_ref *ref = &j->u.ref;
    if (j->changed_many) {
        store_cache_invalidate_all(s->cache);
        return;
    }
    const char *ca = NULL;
    cm_span other = cm_span_make(NULL, 0);
    switch (j->op) {
    case STORE_OP_CERT_CONFIRM:
    case STORE_OP_CERT_REVOKE:
    case STORE_OP_CERT_RELEASE:
        ca = ref->ca;
        store_cache_invalidate(s->cache, ca, ref->serial);
        break;
    case STORE_OP_CERT_INSERT:
        ca = j->u.cert.ca;
        other = j->u.cert.replaces;
        break;
    case STORE_OP_TXN_RESERVE:
    case STORE_OP_TXN_UNRESERVE:
        ca = j->u.rsv.ca;
        break;
    case STORE_OP_PENDING_ADD:
        ca = j->u.pend.ca;
        break;
    case STORE_OP_PENDING_ISSUE:
        ca = j->u.pop.cert->ca;
        other = j->u.pop.cert->replaces;
        break;
    default:
        break;
    }
    if (j->also_serial_len != 0) {
        other = cm_span_make(j->also_serial, j->also_serial_len);
    }
    if (ca != NULL && other.len != 0) {
        store_cache_invalidate(s->cache, ca, other);
    }
}

bool store_job_durable(const store_job *job)
{
    return job->op != STORE_OP_TXN_RESERVE;
}

// store_count_jobs adds the chain |first|, completed at |now|, to the job statistics. Called
// with |mu| held.
static void store_count_jobs(store_stats *st, const store_job *first, uint64_t now)
{
    for (const store_job *j = first; j != NULL; j = (const store_job *)j->node.next) {
        st->jobs++;
        st->jobs_failed += cm_ok(j->result) ? 0u : 1u;
        const uint64_t waited = now > j->submit_ns ? now - j->submit_ns : 0;
        st->job_us_hist[store_log2_bucket(waited / 1000u)]++;
    }
}

// store_execute_batch runs the jobs of |*first| in one transaction and sets each job's result.
// Returns false when the transaction failed as a whole. After a commit, and before any durable
// job completes, the status cache forgets what the batch changed.
//
// Jobs that need no durability (store_job_durable: reservations) complete as soon as the batch
// has executed, before its COMMIT and its fsync: they leave the chain (|*first|) and go to
// their queues, so a request waits for the execution of its reservation, not for the commit of
// the batch it shares with other requests' records. The cost of completing early: when the
// COMMIT itself then fails (an I/O error, a full disk), the reservation is gone although it was
// reported made; its request signs and its record fails (the transaction row is missing), and
// the certificate it recorded is revoked as undelivered (srv_enrol.c). Their effect on the
// status cache (a kur's pending update) is noted after the commit like every job's.
//
// A batch of reservations only (nothing durable, nothing for the status cache) is not committed
// when |may_defer|: the transaction stays open (|s->txn_open|, |*deferred|) and the next batch
// runs in it, so a reservation and its record cost one commit and one fsync, not two, and the
// transaction row is written to the WAL once. Nothing waits for that commit; the reservations
// are visible to the writer's own connection, where every rule that reads them runs (a repeated
// transactionID, key reuse, a credential's count), and to readers once committed. A later
// failure that rolls the transaction back loses them as a failed COMMIT would (above). The
// writer commits an open transaction when no job arrives within STORE_DEFER_NS of its begin,
// when it is older than that, and before it stops.
static bool store_execute_batch(store *s, store_job **first, bool may_defer, bool *deferred)
{
    *deferred = false;
    // Noted after the commit: the early jobs' copies (they may be freed once completed).
    store_job early_notes[8];
    size_t num_notes = 0;
    bool notes_overflow = false;
    cm_result r;
    if (s->ops->exec_batch != NULL) {
        // One call runs and commits the whole batch (PostgreSQL's pipeline: the jobs' results
        // and the COMMIT's come back in one round trip, so no job completes before the commit;
        // other nodes' changes reach the status cache through the backend itself).
        for (store_job *j = *first; j != NULL; j = (store_job *)j->node.next) {
            j->out_value = 0;
            j->also_serial_len = 0;
            j->changed_many = false;
            j->result = store_job_validate(j);
        }
        r = s->ops->exec_batch(s->backend, *first);
    } else if (!s->txn_open) {
        r = s->ops->begin(s->backend);
        if (cm_ok(r) && s->cache != NULL && s->ops->changed_elsewhere != NULL &&
            s->ops->changed_elsewhere(s->backend)) {
            store_cache_invalidate_all(s->cache); // another process wrote: nothing cached holds
        }
        s->txn_open_ns = cm_time_mono_ns();
    } else {
        r = cm_result_make(CM_OK); // the batch joins the transaction a previous batch left open
    }
    s->txn_open = false; // until this batch leaves it open again
    if (cm_ok(r) && s->ops->exec_batch == NULL) {
        for (store_job *j = *first; j != NULL; j = (store_job *)j->node.next) {
            j->out_value = 0;
            j->also_serial_len = 0;
            j->changed_many = false;
            j->result = store_job_validate(j);
            if (cm_ok(j->result)) {
                j->result = s->ops->exec(s->backend, j);
            }
            uint32_t cls = cm_result_class(j->result);
            if (!cm_ok(j->result) && cls != CM_CLASS_POLICY && cls != CM_CLASS_USAGE) {
                r = j->result; // the transaction is unusable
                break;
            }
        }
        if (cm_ok(r)) {
            // Complete the jobs that need no durability now (see above).
            store_job *early = NULL, **early_tail = &early;
            store_job **link = first;
            const uint64_t t1 = cm_time_mono_ns();
            (void)pthread_mutex_lock(&s->mu);
            while (*link != NULL) {
                store_job *j = *link;
                if (store_job_durable(j)) {
                    link = (store_job **)&j->node.next;
                    continue;
                }
                *link = (store_job *)j->node.next;
                j->node.next = NULL;
                *early_tail = j;
                early_tail = (store_job **)&j->node.next;
                if (cm_ok(j->result) && j->also_serial_len != 0) {
                    if (num_notes < sizeof(early_notes) / sizeof(early_notes[0])) {
                        early_notes[num_notes++] = *j;
                    } else {
                        notes_overflow = true;
                    }
                }
            }
            store_count_jobs(&s->stats, early, t1);
            (void)pthread_mutex_unlock(&s->mu);
            if (early != NULL) {
                store_complete(early);
            }
            if (*first == NULL && num_notes == 0 && !notes_overflow && may_defer) {
                // Nothing left waits for this commit (see above): leave the transaction open
                // for the next batch, which normally brings these reservations' records.
                s->txn_open = true;
                *deferred = true;
                return true;
            }
            r = s->ops->commit(s->backend);
        }
        if (!cm_ok(r)) {
            s->ops->rollback(s->backend);
        }
    }
    if (cm_ok(r) && s->cache != NULL) {
        if (notes_overflow) {
            store_cache_invalidate_all(s->cache);
        }
        for (size_t i = 0; i < num_notes; i++) {
            store_note_job(s, &early_notes[i]);
        }
        for (store_job *j = *first; j != NULL; j = (store_job *)j->node.next) {
            if (cm_ok(j->result)) {
                store_note_job(s, j);
            }
        }
    }
    if (!cm_ok(r)) {
        // While the database is down every batch fails this way; the backend logged the loss.
        if (r.code == STORE_E_UNAVAILABLE) {
            cm_log(CM_LOG_DEBUG, "store: batch failed, every job in it fails: %s",
                   cm_result_name(r));
        } else {
            cm_log_ratelimited("store.batch", 10000, CM_LOG_ERROR,
                               "store: batch failed, every job in it fails: %s", cm_result_name(r));
        }
        for (store_job *j = *first; j != NULL; j = (store_job *)j->node.next) {
            j->result = r;
            j->out_value = 0;
        }
        return false;
    }
    return true;
}

// store_commit_open commits the transaction the last batch left open (store_execute_batch).
// Called with |mu| held; releases it while committing.
static void store_commit_open(store *s)
{
    (void)pthread_mutex_unlock(&s->mu);
    const uint64_t t0 = cm_time_mono_ns();
    cm_result r = s->ops->commit(s->backend);
    if (!cm_ok(r)) {
        s->ops->rollback(s->backend);
        cm_log_ratelimited("store.batch", 10000, CM_LOG_ERROR,
                           "store: commit of reservations failed, they are lost: %s",
                           cm_result_name(r));
    }
    s->txn_open = false;
    const uint64_t t1 = cm_time_mono_ns();
    if (s->ops->after_batch != NULL) {
        s->ops->after_batch(s->backend);
    }
    (void)pthread_mutex_lock(&s->mu);
    s->stats.commits += cm_ok(r) ? 1u : 0u;
    s->stats.commit_failures += cm_ok(r) ? 0u : 1u;
    s->stats.commit_ns_total += t1 - t0;
    s->stats.commit_us_hist[store_log2_bucket((t1 - t0) / 1000u)]++;
}

// store_timespec_at converts a CLOCK_MONOTONIC time in ns (cm_time_mono_ns) for |cv|.
static struct timespec store_timespec_at(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

// store_writer_wait sleeps on |cv| until a job arrives or the store stops. With a transaction
// left open it waits at most until STORE_DEFER_NS after its begin, then commits it. With an idle
// op, it wakes after the backend's idle interval, runs the op unlocked and goes on waiting.
static void store_writer_wait(store *s, uint32_t *idle_ms)
{
    if (s->txn_open) {
        const struct timespec until = store_timespec_at(s->txn_open_ns + s->defer_ns);
        int rc = 0;
        while (s->head == NULL && !s->stopping && rc != ETIMEDOUT) {
            s->writer_waiting = true;
            rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
            s->writer_waiting = false;
        }
        if (s->head != NULL && !s->stopping) {
            return; // the next batch joins the open transaction
        }
        store_commit_open(s);
    }
    while (s->head == NULL && !s->stopping) {
        s->writer_waiting = true;
        if (s->ops->idle == NULL) {
            (void)pthread_cond_wait(&s->cv, &s->mu);
            s->writer_waiting = false;
            continue;
        }
        struct timespec until;
        (void)clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(*idle_ms / 1000u);
        until.tv_nsec += (long)(*idle_ms % 1000u) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (s->head == NULL && !s->stopping && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
        }
        s->writer_waiting = false;
        if (rc == ETIMEDOUT && s->head == NULL && !s->stopping) {
            (void)pthread_mutex_unlock(&s->mu);
            *idle_ms = s->ops->idle(s->backend);
            (void)pthread_mutex_lock(&s->mu);
        }
    }
}

static void *store_writer_main(void *arg)
{
    store *s = arg;
    (void)pthread_setname_np(pthread_self(), "cm-store");
    uint32_t idle_ms = STORE_IDLE_FIRST_MS;
    (void)pthread_mutex_lock(&s->mu);
    for (;;) {
        store_writer_wait(s, &idle_ms);
        if (s->head == NULL) {
            break; // stopping, and everything queued has been committed
        }
        // Take every job that arrived while the previous commit ran, up to max_batch.
        store_job *first = s->head;
        store_job *last = first;
        size_t n = 1;
        while (n < s->max_batch && last->node.next != NULL) {
            last = (store_job *)last->node.next;
            n++;
        }
        s->head = (store_job *)last->node.next;
        if (s->head == NULL) {
            s->tail = NULL;
        }
        s->depth -= n;
        last->node.next = NULL;
        (void)pthread_mutex_unlock(&s->mu);

        uint64_t t0 = cm_time_mono_ns();
        const bool may_defer = !s->txn_open || t0 - s->txn_open_ns < s->defer_ns;
        bool deferred = false;
        // May complete some jobs early, and leave the transaction open (|deferred|).
        bool committed = store_execute_batch(s, &first, may_defer, &deferred);
        uint64_t t1 = cm_time_mono_ns();

        (void)pthread_mutex_lock(&s->mu);
        store_stats *st = &s->stats;
        if (!deferred) {
            st->commits += committed ? 1u : 0u;
            st->commit_failures += committed ? 0u : 1u;
            st->commit_ns_total += t1 - t0;
            st->commit_us_hist[store_log2_bucket((t1 - t0) / 1000u)]++;
        }
        st->batch_hist[store_log2_bucket(n) - 1u]++;
        if (n > st->max_batch) {
            st->max_batch = n;
        }
        store_count_jobs(st, first, t1);
        (void)pthread_mutex_unlock(&s->mu);

        if (first != NULL) {
            store_complete(first);
        }
        if (s->ops->after_batch != NULL && !deferred) {
            s->ops->after_batch(s->backend);
        }
        (void)pthread_mutex_lock(&s->mu);
    }
    (void)pthread_mutex_unlock(&s->mu);
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Open, close, submit

static const store_backend_ops *const k_store_backends[] = {&store_sqlite_ops, &store_pg_ops};

static cm_result store_pick_backend(const char *url, const store_backend_ops **out_ops,
                                    const char **out_location)
{
    CM_ENSURE(url != NULL, STORE_E_URL);
    const char *colon = strchr(url, ':');
    CM_ENSURE(colon != NULL && colon != url && colon[1] != '\0', STORE_E_URL);
    size_t scheme_len = (size_t)(colon - url);
    for (size_t i = 0; i < sizeof(k_store_backends) / sizeof(k_store_backends[0]); i++) {
        const char *scheme = k_store_backends[i]->scheme;
        if (strlen(scheme) == scheme_len && memcmp(scheme, url, scheme_len) == 0) {
            *out_ops = k_store_backends[i];
            // libpq parses its URIs whole ("postgresql://..."); a keyword/value string follows
            // the colon ("postgresql:host=... dbname=...").
            *out_location = strncmp(colon, "://", 3) == 0 ? url : colon + 1;
            return cm_result_make(CM_OK);
        }
    }
    if (scheme_len == 8 && memcmp(url, "postgres", 8) == 0) {
        *out_ops = &store_pg_ops;
        *out_location = strncmp(colon, "://", 3) == 0 ? url : colon + 1;
        return cm_result_make(CM_OK);
    }
    CM_BAIL(STORE_E_URL);
}

cm_result store_open(store **out_store, const char *url, const store_options *opts)
{
    *out_store = NULL;
    store_options o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    if (o.busy_timeout_ms <= 0) {
        o.busy_timeout_ms = 5000;
    }
    if (o.max_batch == 0) {
        o.max_batch = STORE_DEFAULT_MAX_BATCH;
    }
    CM_ENSURE(o.sync == STORE_SYNC_FULL || o.sync == STORE_SYNC_NORMAL, STORE_E_INVALID);

    const store_backend_ops *ops = NULL;
    const char *location = NULL;
    cm_result r = store_pick_backend(url, &ops, &location);
    if (!cm_ok(r) || ops == NULL) {
        cm_log(CM_LOG_ERROR, "store: '%s': %s (want sqlite:PATH or postgresql://...)",
               url != NULL ? url : "(null)",
               r.code == STORE_E_UNSUPPORTED ? "this build has no backend for that scheme"
                                             : "not a store URL");
        return r;
    }
    store *s = calloc(1, sizeof(*s));
    CM_ENSURE(s != NULL, CM_E_NOMEM);
    s->ops = ops;
    s->max_batch = o.max_batch;
    s->defer_ns =
        o.reservation_defer_ms != 0 ? (uint64_t)o.reservation_defer_ms * 1000000u : STORE_DEFER_NS;
    if (!o.status_cache_off) {
        r = store_cache_new(&s->cache,
                            o.status_cache_entries != 0 ? o.status_cache_entries
                                                        : STORE_DEFAULT_CACHE_ENTRIES,
                            o.status_cache_max_age_ms);
        if (!cm_ok(r)) {
            free(s);
            return r;
        }
    }
    r = ops->open(&s->backend, location, &o);
    if (!cm_ok(r)) {
        store_cache_free(s->cache);
        free(s);
        return r;
    }
    if (ops->attach_cache != NULL) {
        r = ops->attach_cache(s->backend, s->cache); // before any thread uses the cache
        if (!cm_ok(r)) {
            ops->close(s->backend);
            store_cache_free(s->cache);
            free(s);
            return r;
        }
    }
    bool mu_ok = false;
    bool cv_ok = false;
    mu_ok = pthread_mutex_init(&s->mu, NULL) == 0;
    pthread_condattr_t ca;
    if (mu_ok && pthread_condattr_init(&ca) == 0) {
        // The writer's idle waits are measured on the monotonic clock.
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                pthread_cond_init(&s->cv, &ca) == 0;
        (void)pthread_condattr_destroy(&ca);
    }
    if (!cv_ok || pthread_create(&s->writer, NULL, store_writer_main, s) != 0) {
        if (cv_ok) {
            (void)pthread_cond_destroy(&s->cv);
        }
        if (mu_ok) {
            (void)pthread_mutex_destroy(&s->mu);
        }
        ops->close(s->backend);
        store_cache_free(s->cache);
        free(s);
        CM_BAIL(CM_E_NOMEM);
    }
    *out_store = s;
    return cm_result_make(CM_OK);
}

void store_close(store *s)
{
    if (s == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&s->mu);
    CM_CHECK(s->readers == 0);
    s->stopping = true;
    (void)pthread_cond_signal(&s->cv);
    (void)pthread_mutex_unlock(&s->mu);
    (void)pthread_join(s->writer, NULL);
    s->ops->close(s->backend);
    store_cache_free(s->cache);
    (void)pthread_cond_destroy(&s->cv);
    (void)pthread_mutex_destroy(&s->mu);
    free(s);
}

// store_enqueue appends the chain first..last (n jobs) or, once stopping, completes it with
// STORE_E_CLOSED.
static void store_enqueue(store *s, store_job *first, store_job *last, size_t n)
{
    (void)pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        (void)pthread_mutex_unlock(&s->mu);
        for (store_job *j = first; j != NULL; j = (store_job *)j->node.next) {
            j->result = cm_result_make(STORE_E_CLOSED);
            j->out_value = 0;
        }
        store_complete(first);
        return;
    }
    if (s->tail != NULL) {
        s->tail->node.next = &first->node;
    } else {
        s->head = first;
    }
    s->tail = last;
    s->depth += n;
    bool wake = s->writer_waiting;
    (void)pthread_mutex_unlock(&s->mu);
    if (wake) {
        (void)pthread_cond_signal(&s->cv);
    }
}

void store_submit(store *s, store_job *job)
{
    CM_CHECK(job->cq != NULL);
    job->node.next = NULL;
    job->node.kind = CM_CQ_KIND_STORE_JOB;
    job->submit_ns = cm_time_mono_ns();
    store_enqueue(s, job, job, 1);
}

void store_submit_batch(store *s, store_job *const *jobs, size_t n)
{
    if (n == 0) {
        return;
    }
    uint64_t now = cm_time_mono_ns();
    for (size_t i = 0; i < n; i++) {
        CM_CHECK(jobs[i]->cq != NULL);
        jobs[i]->node.kind = CM_CQ_KIND_STORE_JOB;
        jobs[i]->node.next = i + 1 < n ? &jobs[i + 1]->node : NULL;
        jobs[i]->submit_ns = now;
    }
    store_enqueue(s, jobs[0], jobs[n - 1], n);
}

cm_result store_run_batch(store *s, store_job *const *jobs, size_t n)
{
    cm_cq q = {NULL, -1};
    CM_TRY(cm_cq_init(&q));
    for (size_t i = 0; i < n; i++) {
        jobs[i]->cq = &q;
    }
    store_submit_batch(s, jobs, n);
    size_t done = 0;
    while (done < n) {
        (void)cm_cq_wait(&q, -1);
        for (cm_cq_node *node = cm_cq_drain(&q); node != NULL; node = node->next) {
            done++;
        }
    }
    cm_cq_cleanup(&q);
    for (size_t i = 0; i < n; i++) {
        if (!cm_ok(jobs[i]->result)) {
            return jobs[i]->result;
        }
    }
    return cm_result_make(CM_OK);
}

cm_result store_run(store *s, store_job *job)
{
    store_job *one[1] = {job};
    return store_run_batch(s, one, 1);
}

void store_get_stats(store *s, store_stats *out)
{
    (void)pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->queue_depth = s->depth;
    (void)pthread_mutex_unlock(&s->mu);
    if (s->ops->stats != NULL) {
        s->ops->stats(s->backend, out);
    }
    if (s->cache != NULL) {
        store_cache_stats(s->cache, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Readers

const char *store_backend_name(const store *s)
{
    return s->ops->scheme;
}

bool store_healthy(const store *s)
{
    return s->ops->healthy == NULL || s->ops->healthy(s->backend);
}

cm_result store_leader_try(store *s, bool *out_is_leader)
{
    *out_is_leader = false;
    if (s->ops->leader_try == NULL) {
        *out_is_leader = true;
        return cm_result_make(CM_OK);
    }
    return s->ops->leader_try(s->backend, out_is_leader);
}

cm_result store_reader_open(store *s, store_reader **out_reader)
{
    *out_reader = NULL;
    store_reader *rd = calloc(1, sizeof(*rd));
    CM_ENSURE(rd != NULL, CM_E_NOMEM);
    rd->s = s;
    cm_result r = s->ops->reader_open(s->backend, &rd->r);
    if (!cm_ok(r)) {
        free(rd);
        return r;
    }
    (void)pthread_mutex_lock(&s->mu);
    s->readers++;
    (void)pthread_mutex_unlock(&s->mu);
    *out_reader = rd;
    return cm_result_make(CM_OK);
}

void store_reader_close(store_reader *r)
{
    if (r == NULL) {
        return;
    }
    r->s->ops->reader_close(r->r);
    (void)pthread_mutex_lock(&r->s->mu);
    r->s->readers--;
    (void)pthread_mutex_unlock(&r->s->mu);
    free(r);
}

cm_result store_cert_get(store_reader *r, cm_arena *a, store_cert *out, const char *ca,
                         cm_span serial)
{
    CM_ENSURE(ca != NULL && store_span_ok(serial, true), STORE_E_INVALID);
    return r->s->ops->cert_get(r->r, a, out, ca, serial);
}

cm_result store_cert_get_by_txn(store_reader *r, cm_arena *a, store_cert *out, const char *ca,
                                cm_span transaction_id)
{
    CM_ENSURE(ca != NULL && store_span_ok(transaction_id, true), STORE_E_INVALID);
    return r->s->ops->cert_get_by_txn(r->r, a, out, ca, transaction_id);
}

cm_result store_txn_get(store_reader *r, cm_arena *a, store_txn *out, const char *ca,
                        cm_span transaction_id)
{
    CM_ENSURE(ca != NULL && store_span_ok(transaction_id, true), STORE_E_INVALID);
    return r->s->ops->txn_get(r->r, a, out, ca, transaction_id);
}

cm_result store_cert_list(store_reader *r, const store_filter *f, store_cert_fn fn, void *ctx)
{
    CM_ENSURE(f != NULL && fn != NULL && f->status <= STORE_CERT_ANY, STORE_E_INVALID);
    return r->s->ops->cert_list(r->r, f, fn, ctx);
}

cm_result store_cert_count(store_reader *r, const store_filter *f, uint64_t *out_count)
{
    *out_count = 0;
    CM_ENSURE(f != NULL && f->status <= STORE_CERT_ANY, STORE_E_INVALID);
    return r->s->ops->cert_count(r->r, f, out_count);
}

cm_result store_revoked_list(store_reader *r, const char *ca, int64_t not_after_min,
                             store_revoked_fn fn, void *ctx)
{
    CM_ENSURE(ca != NULL && fn != NULL, STORE_E_INVALID);
    return r->s->ops->revoked_list(r->r, ca, not_after_min, fn, ctx);
}

cm_result store_crl_get(store_reader *r, cm_arena *a, store_crl *out, const char *ca)
{
    CM_ENSURE(ca != NULL, STORE_E_INVALID);
    return r->s->ops->crl_get(r->r, a, out, ca);
}

cm_result store_reader_check(store_reader *r)
{
    return r->s->ops->check(r->r);
}

cm_result store_txn_list(store_reader *r, store_txn_fn fn, void *ctx)
{
    CM_ENSURE(fn != NULL, STORE_E_INVALID);
    return r->s->ops->txn_list(r->r, fn, ctx);
}

cm_result store_crl_list(store_reader *r, store_crl_fn fn, void *ctx)
{
    CM_ENSURE(fn != NULL, STORE_E_INVALID);
    return r->s->ops->crl_list(r->r, fn, ctx);
}

cm_result store_use_list(store_reader *r, store_use_fn fn, void *ctx)
{
    CM_ENSURE(fn != NULL, STORE_E_INVALID);
    return r->s->ops->use_list(r->r, fn, ctx);
}

cm_result store_cert_state_get(store_reader *r, store_cert_state *out, const char *ca,
                               cm_span serial)
{
    CM_ENSURE(ca != NULL && store_span_ok(serial, true), STORE_E_INVALID);
    store_cache *c = r->s->cache;
    if (c != NULL && store_cache_get(c, ca, serial, out)) {
        return cm_result_make(CM_OK);
    }
    const uint64_t gen = c != NULL ? store_cache_generation(c) : 0;
    CM_TRY(r->s->ops->cert_state(r->r, out, ca, serial));
    out->from_cache = false;
    if (c != NULL) {
        store_cache_put(c, ca, serial, out, gen);
    }
    return cm_result_make(CM_OK);
}

void store_status_invalidate(store *s, const char *ca, cm_span serial)
{
    if (s->cache != NULL) {
        store_cache_invalidate(s->cache, ca, serial);
    }
}

void store_status_invalidate_all(store *s)
{
    if (s->cache != NULL) {
        store_cache_invalidate_all(s->cache);
    }
}

uint64_t store_status_generation(store *s)
{
    return s->cache != NULL ? store_cache_generation(s->cache) : 0;
}

cm_result store_pending_get(store_reader *r, cm_arena *a, store_pending *out, const char *ca,
                            cm_span transaction_id)
{
    CM_ENSURE(ca != NULL && store_span_ok(transaction_id, true), STORE_E_INVALID);
    return r->s->ops->pending_get(r->r, a, out, ca, transaction_id);
}

cm_result store_pending_get_id(store_reader *r, cm_arena *a, store_pending *out, int64_t id)
{
    CM_ENSURE(id > 0, STORE_E_INVALID);
    return r->s->ops->pending_get_id(r->r, a, out, id);
}

cm_result store_pending_list(store_reader *r, const store_pending_filter *f, store_pending_fn fn,
                             void *ctx)
{
    CM_ENSURE(f != NULL && fn != NULL &&
                  (f->states & ~((1u << STORE_PENDING_NUM_STATES) - 1u)) == 0,
              STORE_E_INVALID);
    return r->s->ops->pending_list(r->r, f, fn, ctx);
}
