// The verification pool (issue 16): nested_threads threads that run the inner requests of
// nested messages in parallel, so that a batch's MAC, signature and POPO verifications are
// spread over all cores instead of done one after another on the I/O thread that received it.
//
// An inner request runs here from srv_request_start until it parks its first HSM or store
// job, or is answered (srv_nested.c): parsing, header rules, authentication, profile, content
// rules, POPO, policy. Its |w| is the thread's own worker meanwhile (crypto contexts, digests,
// a store reader); it gets its origin worker back and returns through that worker's cq. The
// origin thread touches neither the request nor its parent's fields the request reads while it
// is here; the queue's mutex orders the hand-over and the cq's push/drain the hand-back.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/server/srv_internal.h"

typedef struct srv_pool_thread {
    srv_pool *pool;
    srv_worker *w; // the thread's own (no cq: nothing is submitted from here)
    pthread_t thread;
    uint32_t index;
    bool started;
} srv_pool_thread;

// Thread: locked by |mu| (the queue and |stop|); |threads| immutable after srv_pool_new.
struct srv_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_request *head, *tail; // guarded_by(mu): linked through srv_request.task_next
    bool stop;                // guarded_by(mu)
    srv_pool_thread *threads;
    uint32_t num_threads;
};

static void srv_pool_run(srv_pool_thread *t, srv_request *req)
{
    srv_worker *origin = req->w;
    req->w = t->w;
    req->in_pool = true;
    (void)srv_request_start(req, req->ca, req->der);
    req->in_pool = false;
    req->w = origin;
    cm_cq_push(origin->cq, &req->task);
    // After the push: srv_worker_free waits for this before the cq may go away.
    __atomic_fetch_sub(&origin->tasks_out, 1, __ATOMIC_RELEASE);
}

static void *srv_pool_main(void *arg)
{
    srv_pool_thread *t = arg;
    srv_pool *p = t->pool;
    char name[16];
    (void)snprintf(name, sizeof(name), "cm-verify%u", t->index);
    (void)pthread_setname_np(pthread_self(), name);
    for (;;) {
        (void)pthread_mutex_lock(&p->mu);
        while (p->head == NULL && !p->stop) {
            (void)pthread_cond_wait(&p->cv, &p->mu);
        }
        srv_request *req = p->head;
        if (req != NULL) {
            p->head = req->task_next;
            if (p->head == NULL) {
                p->tail = NULL;
            }
            req->task_next = NULL;
        }
        (void)pthread_mutex_unlock(&p->mu);
        if (req == NULL) {
            break; // stopping, and nothing left
        }
        srv_pool_run(t, req);
    }
    return NULL;
}

cm_result srv_pool_new(srv_pool **out, srv_engine *e, uint32_t n)
{
    *out = NULL;
    srv_pool *p = calloc(1, sizeof(*p));
    CM_ENSURE(p != NULL, CM_E_NOMEM);
    p->threads = calloc(n, sizeof(*p->threads));
    if (p->threads == NULL || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->threads);
        free(p);
        CM_BAIL(CM_E_NOMEM);
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&p->mu);
        free(p->threads);
        free(p);
        CM_BAIL(CM_E_NOMEM);
    }
    p->num_threads = n;
    cm_result r = cm_result_make(CM_OK);
    for (uint32_t i = 0; i < n && cm_ok(r); i++) {
        srv_pool_thread *t = &p->threads[i];
        t->pool = p;
        t->index = i;
        r = srv_worker_new(&t->w, e, NULL);
        if (cm_ok(r) && pthread_create(&t->thread, NULL, srv_pool_main, t) != 0) {
            r = cm_result_make(CM_E_NOMEM);
        }
        t->started = cm_ok(r);
    }
    if (!cm_ok(r)) {
        srv_pool_free(p);
        return r;
    }
    *out = p;
    return cm_result_make(CM_OK);
}

void srv_pool_free(srv_pool *p)
{
    if (p == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&p->mu);
    p->stop = true;
    (void)pthread_cond_broadcast(&p->cv);
    (void)pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->num_threads; i++) {
        srv_pool_thread *t = &p->threads[i];
        if (t->started) {
            (void)pthread_join(t->thread, NULL);
        }
        srv_worker_free(t->w);
    }
    (void)pthread_cond_destroy(&p->cv);
    (void)pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

void srv_pool_submit(srv_pool *p, srv_request *const *reqs, size_t n)
{
    if (n == 0) {
        return;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        reqs[i]->task_next = reqs[i + 1];
    }
    reqs[n - 1]->task_next = NULL;
    (void)pthread_mutex_lock(&p->mu);
    if (p->tail != NULL) {
        p->tail->task_next = reqs[0];
    } else {
        p->head = reqs[0];
    }
    p->tail = reqs[n - 1];
    (void)pthread_cond_broadcast(&p->cv);
    (void)pthread_mutex_unlock(&p->mu);
}
