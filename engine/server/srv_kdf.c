// The KDF worker pool (srv_internal.h, "The KDF worker pool"): PBM and PBMAC1 verification on
// threads of their own, so a request whose MAC costs a key derivation never holds up the I/O
// loop that received it. One bounded FIFO queue (mutex + condition variable), one job per
// take, completions pushed to the submitter's cm_cq.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/server/srv_internal.h"

#define SRV_KDF_MAX_THREADS 64u

typedef struct srv_kdf_worker {
    struct srv_kdf_pool *pool;
    pthread_t thread;
    uint32_t index;
    bool started;
} srv_kdf_worker;

// Thread: the queue is locked by |mu|; the counters are relaxed atomics.
struct srv_kdf_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_kdf_job *head, *tail; // guarded_by(mu)
    size_t depth;             // guarded_by(mu)
    bool stopping;            // guarded_by(mu)
    uint32_t max_queue;
    srv_kdf_worker *workers;
    uint32_t num_workers;
    uint64_t done; // atomic
};

static void *srv_kdf_main(void *arg)
{
    srv_kdf_worker *w = arg;
    srv_kdf_pool *p = w->pool;
    char name[16];
    (void)snprintf(name, sizeof(name), "cm-kdf%u", w->index);
    (void)pthread_setname_np(pthread_self(), name);
    for (;;) {
        (void)pthread_mutex_lock(&p->mu);
        while (p->head == NULL && !p->stopping) {
            (void)pthread_cond_wait(&p->cv, &p->mu);
        }
        if (p->head == NULL) { // stopping, and nothing is left
            (void)pthread_mutex_unlock(&p->mu);
            break;
        }
        srv_kdf_job *j = p->head;
        p->head = j->qnext;
        if (p->head == NULL) {
            p->tail = NULL;
        }
        p->depth--;
        (void)pthread_mutex_unlock(&p->mu);
        cm_why_clear(&j->why);
        j->result =
            cmp_protect_verify_mac(j->prot, j->key, j->alg, j->secret, j->kind, j->protected_part,
                                   j->protection, j->unused_bits, &j->why);
        cm_ossl_clear_errors(); // the queue is per thread: nothing leaks into the next job
        __atomic_add_fetch(&p->done, 1, __ATOMIC_RELAXED);
        cm_cq_push(j->cq, &j->node);
    }
    return NULL;
}

// srv_kdf_pool_stop takes the queue away (its jobs complete with SRV_E_KDF_BUSY), wakes the
// workers and joins them.
static void srv_kdf_pool_stop(srv_kdf_pool *p)
{
    (void)pthread_mutex_lock(&p->mu);
    p->stopping = true;
    srv_kdf_job *left = p->head;
    p->head = p->tail = NULL;
    p->depth = 0;
    (void)pthread_cond_broadcast(&p->cv);
    (void)pthread_mutex_unlock(&p->mu);
    while (left != NULL) {
        srv_kdf_job *next = left->qnext;
        left->result = cm_result_make(SRV_E_KDF_BUSY);
        cm_cq_push(left->cq, &left->node);
        left = next;
    }
    for (uint32_t i = 0; i < p->num_workers; i++) {
        if (p->workers[i].started) {
            (void)pthread_join(p->workers[i].thread, NULL);
        }
    }
}

cm_result srv_kdf_pool_new(srv_kdf_pool **out, uint32_t threads, uint32_t max_queue)
{
    *out = NULL;
    CM_ENSURE(threads >= 1 && threads <= SRV_KDF_MAX_THREADS && max_queue >= 1, CM_E_INVALID_ARG);
    srv_kdf_pool *p = calloc(1, sizeof(*p));
    CM_ENSURE(p != NULL, CM_E_NOMEM);
    p->workers = calloc(threads, sizeof(*p->workers));
    if (p->workers == NULL || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->workers);
        free(p);
        CM_BAIL(CM_E_NOMEM);
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&p->mu);
        free(p->workers);
        free(p);
        CM_BAIL(CM_E_NOMEM);
    }
    p->max_queue = max_queue;
    p->num_workers = threads;
    cm_result r = cm_result_make(CM_OK);
    for (uint32_t i = 0; i < threads; i++) {
        srv_kdf_worker *w = &p->workers[i];
        w->pool = p;
        w->index = i;
        if (pthread_create(&w->thread, NULL, srv_kdf_main, w) != 0) {
            r = cm_result_make(CM_E_NOMEM);
            break;
        }
        w->started = true;
    }
    if (!cm_ok(r)) {
        srv_kdf_pool_free(p);
        return r;
    }
    *out = p;
    return cm_result_make(CM_OK);
}

void srv_kdf_pool_free(srv_kdf_pool *p)
{
    if (p == NULL) {
        return;
    }
    srv_kdf_pool_stop(p);
    (void)pthread_cond_destroy(&p->cv);
    (void)pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

cm_result srv_kdf_pool_submit(srv_kdf_pool *p, srv_kdf_job *j)
{
    j->node.kind = CM_CQ_KIND_KDF_JOB;
    j->node.next = NULL;
    j->qnext = NULL;
    (void)pthread_mutex_lock(&p->mu);
    if (p->stopping || p->depth >= p->max_queue) {
        (void)pthread_mutex_unlock(&p->mu);
        CM_BAIL(SRV_E_KDF_BUSY);
    }
    if (p->tail != NULL) {
        p->tail->qnext = j;
    } else {
        p->head = j;
    }
    p->tail = j;
    p->depth++;
    (void)pthread_mutex_unlock(&p->mu);
    (void)pthread_cond_signal(&p->cv);
    return cm_result_make(CM_OK);
}

size_t srv_kdf_pool_depth(srv_kdf_pool *p)
{
    (void)pthread_mutex_lock(&p->mu);
    const size_t d = p->depth;
    (void)pthread_mutex_unlock(&p->mu);
    return d;
}

uint32_t srv_kdf_pool_max_queue(const srv_kdf_pool *p)
{
    return p->max_queue;
}

uint64_t srv_kdf_pool_done(srv_kdf_pool *p)
{
    return __atomic_load_n(&p->done, __ATOMIC_RELAXED);
}
