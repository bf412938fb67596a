// engine/net: the io_uring front end's transport layer.
//
// One net_loop per I/O thread, each with its own ring, its own listening sockets (SO_REUSEPORT,
// multishot accept), a provided-buffer ring for multishot recv, and a connection table whose
// slots carry generation numbers so stale completions are recognised and dropped. The loop
// knows nothing of HTTP or CMP: it hands received bytes to an application (net_app) and sends
// what the application gives it. Work the application hands to other threads (HSM signatures,
// store commits) comes back through the loop's completion queue (engine/base/cq.h), whose
// eventfd the ring polls, and is given to the application on the loop thread.
//
// Ownership and threads: everything here is loop-confined except net_server_stop and
// net_loop_cq (whose queue accepts pushes from any thread).
#ifndef CERTMINT_ENGINE_NET_NET_H
#define CERTMINT_ENGINE_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"

struct sockaddr;

// Codes (net range 0x900-0x9ff): the NET rows of engine/base/codes.def.
enum {
#define CM_CODES_NET CM_CODE_ENUM
#include "engine/base/codes.def"
};

typedef struct net_loop net_loop;
typedef struct net_server net_server;

// net_conn_ref names a connection of one loop: its slot and the slot's generation. A ref to a
// closed connection is detected (the generation moved on). Thread: value type.
typedef struct net_conn_ref {
    uint32_t slot;
    uint32_t gen;
} net_conn_ref;

// What an application's on_data and on_timeout return.
typedef enum net_action {
    NET_CONTINUE = 0, // keep the connection
    NET_CLOSE = 1,    // close it now (a queued send is abandoned)
} net_action;

// net_app is the application on top of the transport. All callbacks are required and run on
// the loop thread that owns the connection. |ctx| is the application's per-loop context,
// returned by loop_init.
typedef struct net_app {
    // loop_init runs on each loop thread before it serves; returns the per-loop context or
    // NULL to fail the loop. |loop| may be kept (it outlives the context).
    void *(*loop_init)(void *app_arg, net_loop *loop);
    // loop_cleanup runs on the loop thread after its last connection is gone.
    void (*loop_cleanup)(void *ctx);
    // on_open: a connection was accepted; returns its per-connection state (may be NULL).
    void *(*on_open)(void *ctx, net_conn_ref ref, const struct sockaddr *peer);
    // on_data: |data| arrived; it is valid only during the call (the receive buffer is
    // recycled right after), so copy what must be kept.
    net_action (*on_data)(void *ctx, void *conn, net_conn_ref ref, cm_span data);
    // on_sent: the send queued with net_conn_send completed (|ok| false if the peer went away).
    // The application may free the sent bytes now.
    void (*on_sent)(void *ctx, void *conn, net_conn_ref ref, bool ok);
    // on_close: the connection is gone; free |conn|. Called exactly once per on_open.
    void (*on_close)(void *ctx, void *conn);
    // on_completion: a node pushed into net_loop_cq() from any thread, delivered in push order.
    void (*on_completion)(void *ctx, cm_cq_node *node);
    // on_timeout: the deadline set with net_conn_set_deadline passed. Return NET_CLOSE to close,
    // or queue a response (e.g. 408 with close) and return NET_CONTINUE.
    net_action (*on_timeout)(void *ctx, void *conn, net_conn_ref ref);
    // is_idle: during shutdown, whether |conn| has no request in progress (it is then closed at
    // once; busy connections are closed after their response is sent).
    bool (*is_idle)(void *ctx, void *conn);
    // pending: during shutdown, how many jobs this loop's context still waits for (HSM, store);
    // the loop exits only when this is 0 and no connection is left.
    uint32_t (*pending)(void *ctx);
} net_app;

// net_server_config: what net_server_start needs. Thread: read during start only.
typedef struct net_server_config {
    const char *const *listen; // "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0" (0 = any port)
    size_t num_listen;
    uint32_t io_threads;       // loops; 0 means the number of online CPUs
    uint32_t max_connections;  // per loop; excess connections are accepted and closed at once
    uint32_t ring_entries;     // SQ entries per ring (CQ is 4x); 0 picks 256
    uint32_t recv_buffers;     // provided buffers per loop (power of two); 0 picks 256
    uint32_t recv_buffer_size; // bytes per buffer; 0 picks 16 KiB
} net_server_config;

// net_server_start binds every listen address once per loop (SO_REUSEPORT; a port 0 is
// resolved by the first bind and reused by the others), starts the loop threads and returns
// when all of them serve, or fails with the first error (everything started is stopped).
// |app| and |app_arg| must outlive the server. Thread: the caller's (not a loop).
CM_RESULT net_server_start(net_server **out, const net_server_config *cfg, const net_app *app,
                           void *app_arg);

// net_server_port returns the port the |i|-th listen address is bound to.
uint16_t net_server_port(const net_server *s, size_t i);

// net_server_stop asks every loop to stop gracefully (no new connections; idle connections
// closed; requests in flight finished and answered) and returns at once. Thread: any, also
// a signal-handling thread (it only writes eventfds and atomics).
void net_server_stop(net_server *s);

// net_server_wait joins the loop threads after net_server_stop and frees the server.
void net_server_wait(net_server *s);

// net_server_stats: counters summed over the loops (atomically read, approximate).
typedef struct net_stats {
    uint64_t accepted;
    uint64_t rejected_full; // accepted and closed at once because the loop was full
    uint64_t open;          // connections open now
    uint64_t timeouts;
} net_stats;
void net_server_stats(const net_server *s, net_stats *out);

// net_loop_cq returns the loop's completion queue: push work items finished on other threads
// here. Thread: any.
cm_cq *net_loop_cq(net_loop *loop);

// net_loop_index returns the loop's number (0 .. io_threads-1).
uint32_t net_loop_index(const net_loop *loop);

// net_conn_send queues |data| to be sent in full (partial sends are continued). The bytes must
// stay valid until on_sent. With |close_after|, the connection closes once it is sent.
// NET_E_BUSY while another send is active, NET_E_GONE for a stale ref. Thread: the loop's.
CM_RESULT net_conn_send(net_loop *loop, net_conn_ref ref, cm_span data, bool close_after);

// net_conn_close closes the connection (on_close follows once its operations drain).
void net_conn_close(net_loop *loop, net_conn_ref ref);

// net_conn_set_deadline arms (|ms_from_now| > 0) or clears (0) the connection's deadline;
// on_timeout fires within about 250 ms after it passes. Thread: the loop's.
void net_conn_set_deadline(net_loop *loop, net_conn_ref ref, uint32_t ms_from_now);

#endif // CERTMINT_ENGINE_NET_NET_H
