// The completion queue: a Treiber stack plus an eventfd doorbell.
#include "engine/base/cq.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

cm_result cm_cq_init(cm_cq *q)
{
    q->head = NULL;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CM_ENSURE(q->efd >= 0, cm_code_from_errno(errno));
    return cm_result_make(CM_OK);
}

void cm_cq_cleanup(cm_cq *q)
{
    if (q->efd > 0) {
        (void)close(q->efd);
    }
    q->efd = -1;
    q->head = NULL;
}

int cm_cq_fd(const cm_cq *q)
{
    return q->efd;
}

// cm_cq_link pushes the chain and returns the head it replaced (NULL: the queue was empty).
static cm_cq_node *cm_cq_link(cm_cq *q, cm_cq_node *first, cm_cq_node *last)
{
    // The stack holds nodes newest first and drain reverses it; reverse the chain here (it is
    // still private to the pusher) so that it comes out in the caller's order.
    cm_cq_node *rev = NULL;
    for (cm_cq_node *n = first;;) {
        cm_cq_node *next = n->next;
        n->next = rev;
        rev = n;
        if (n == last) {
            break;
        }
        n = next;
    }
    // Now |last| heads the reversed chain and |first| ends it.
    cm_cq_node *old = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    do {
        first->next = old;
    } while (!__atomic_compare_exchange_n(&q->head, &old, rev, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    return old;
}

static void cm_cq_ring(cm_cq *q)
{
    const uint64_t one = 1;
    // EAGAIN means the counter is saturated, i.e. the doorbell is already ringing.
    (void)!write(q->efd, &one, sizeof(one));
}

void cm_cq_push_chain(cm_cq *q, cm_cq_node *first, cm_cq_node *last)
{
    // Ring only when the queue was empty: the consumer then drains everything pushed since.
    if (cm_cq_link(q, first, last) == NULL) {
        cm_cq_ring(q);
    }
}

// The cq the current thread drains before each wait (cm_cq_set_drains_before_wait): a
// per-thread promise, not shared state, so a thread-local rather than a field of the cq.
static _Thread_local const cm_cq *t_cm_cq_drained;

void cm_cq_set_drains_before_wait(cm_cq *q, bool on)
{
    if (on) {
        t_cm_cq_drained = q;
    } else if (t_cm_cq_drained == q) {
        t_cm_cq_drained = NULL;
    }
}

void cm_cq_push_local(cm_cq *q, cm_cq_node *first, cm_cq_node *last)
{
    // The owner is awake (it is the caller) and looks at the head before it sleeps, so the
    // doorbell would only cost a write now and a wasted completion and read later.
    if (cm_cq_link(q, first, last) == NULL && t_cm_cq_drained != q) {
        cm_cq_ring(q);
    }
}

bool cm_cq_pending(const cm_cq *q)
{
    return __atomic_load_n(&q->head, __ATOMIC_ACQUIRE) != NULL;
}

void cm_cq_push(cm_cq *q, cm_cq_node *node)
{
    cm_cq_push_chain(q, node, node);
}

cm_cq_node *cm_cq_drain_after_read(cm_cq *q)
{
    cm_cq_node *n = __atomic_exchange_n(&q->head, NULL, __ATOMIC_ACQUIRE);
    // The stack is newest first; reverse it so the consumer sees push order.
    cm_cq_node *fifo = NULL;
    while (n != NULL) {
        cm_cq_node *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }
    return fifo;
}

cm_cq_node *cm_cq_drain(cm_cq *q)
{
    uint64_t v;
    (void)!read(q->efd, &v, sizeof(v)); // EAGAIN when nothing rang: fine
    return cm_cq_drain_after_read(q);
}

bool cm_cq_wait(cm_cq *q, int timeout_ms)
{
    if (__atomic_load_n(&q->head, __ATOMIC_ACQUIRE) != NULL) {
        return true;
    }
    struct pollfd p = {.fd = q->efd, .events = POLLIN};
    int rc;
    do {
        rc = poll(&p, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    return rc > 0 || __atomic_load_n(&q->head, __ATOMIC_ACQUIRE) != NULL;
}
