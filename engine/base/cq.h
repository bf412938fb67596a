// engine/base completion queue: how blocking work done elsewhere (HSM signatures, store
// commits) comes back to the thread that owns the request.
//
// A cm_cq belongs to one consumer thread (an I/O loop, a tool's main thread). Any thread may
// push finished work items into it; pushing never blocks and never calls into the consumer's
// state. The consumer learns that work is waiting through an eventfd, which an io_uring loop
// reads like any other descriptor, and takes everything waiting in one cm_cq_drain call, in the
// order it was pushed. The items are intrusive: a job embeds a cm_cq_node, so no allocation
// happens per completion, and the item's owner decides its lifetime.
#ifndef CERTMINT_ENGINE_BASE_CQ_H
#define CERTMINT_ENGINE_BASE_CQ_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/base/base.h"

// cm_cq_node is embedded in every work item that completes through a cm_cq. |kind| tells the
// consumer what the containing item is (each module defines its kinds: CM_CQ_KIND_*).
// Thread: owned by whoever holds the item; the queue touches |next| only while it is queued.
typedef struct cm_cq_node {
    struct cm_cq_node *next;
    uint32_t kind;
} cm_cq_node;

enum {
    CM_CQ_KIND_NONE = 0,
    CM_CQ_KIND_HSM_JOB = 1,
    CM_CQ_KIND_STORE_JOB = 2,
    CM_CQ_KIND_SRV_TASK = 3, // an inner request of a nested message, back from engine/server's pool
    CM_CQ_KIND_KDF_JOB = 4,  // engine/server's KDF pool (srv_internal.h)
    CM_CQ_KIND_NET_ADOPT = 5, // a connection another I/O loop accepted (engine/net, internal)
    CM_CQ_KIND_USER = 16,     // first value free for tests and tools
};

// cm_cq is a multi-producer, single-consumer queue with an eventfd doorbell.
// Thread: push from any thread; drain, wait and cleanup from the owning thread only.
typedef struct cm_cq {
    cm_cq_node *head; // LIFO stack of pushed nodes, reversed on drain; atomic
    int efd;          // eventfd, non-blocking, close-on-exec
} cm_cq;

// cm_cq_init creates the eventfd. IO-class code on failure.
CM_RESULT cm_cq_init(cm_cq *q);

// cm_cq_cleanup closes the eventfd. Items still queued are not touched (their owner must have
// drained them). Safe after a failed init when |q| was zeroed.
void cm_cq_cleanup(cm_cq *q);

// cm_cq_fd returns the eventfd to wait on (readable when work is waiting).
int cm_cq_fd(const cm_cq *q);

// cm_cq_push_chain queues |first| .. |last| (already linked through |next|, |last->next|
// ignored) with one atomic operation and at most one eventfd write. Thread: any.
void cm_cq_push_chain(cm_cq *q, cm_cq_node *first, cm_cq_node *last);

// cm_cq_push queues one node. Thread: any.
void cm_cq_push(cm_cq *q, cm_cq_node *node);

// cm_cq_set_drains_before_wait declares that the calling thread, |q|'s owner, checks
// cm_cq_pending (and drains) before every wait, so its own cm_cq_push_local into |q| may skip
// the eventfd write; |on| false withdraws it. The promise is the thread's (a thread-local
// pointer, one cq per thread): an I/O loop makes it; a consumer that only waits on the eventfd
// must not. Thread: the owner only.
void cm_cq_set_drains_before_wait(cm_cq *q, bool on);

// cm_cq_push_local is cm_cq_push_chain for the owner thread itself (work it finished inline):
// without the doorbell when this thread declared that it drains |q| before it waits, with it
// otherwise. Other threads
// may push at the same time. Thread: the owner only.
void cm_cq_push_local(cm_cq *q, cm_cq_node *first, cm_cq_node *last);

// cm_cq_pending reports whether nodes are queued (an acquire load of the head). Thread: the
// owner only (for anyone else the answer is stale at once).
bool cm_cq_pending(const cm_cq *q);

// cm_cq_drain takes every queued node and returns them oldest first, linked through |next|
// (NULL when none). It first clears the eventfd, then takes the list, so a push that races
// with it either lands in this drain or rings the doorbell again: no wake-up is lost.
// Thread: the owner only.
cm_cq_node *cm_cq_drain(cm_cq *q);

// cm_cq_drain_after_read is cm_cq_drain for a consumer that has already consumed the eventfd
// counter itself (an io_uring read on cm_cq_fd completed). Thread: the owner only.
cm_cq_node *cm_cq_drain_after_read(cm_cq *q);

// cm_cq_wait blocks until work is waiting or |timeout_ms| passes (-1: no timeout); true if
// work is waiting. For tools and tests, never for I/O loops. Thread: the owner only.
bool cm_cq_wait(cm_cq *q, int timeout_ms);

#endif // CERTMINT_ENGINE_BASE_CQ_H
