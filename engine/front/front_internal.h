// engine/front internals: the daemon, loop and connection structures and what the front's
// files call of each other. Only for engine/front/*.c and tests/engine/front.
#ifndef CERTMINT_ENGINE_FRONT_FRONT_INTERNAL_H
#define CERTMINT_ENGINE_FRONT_FRONT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/config/cfg.h"
#include "engine/front/front.h"
#include "engine/http/http.h"
#include "engine/net/net.h"
#include "engine/server/srv.h"

#define FRONT_BODY_TYPES  27     // cmp_body_type values
#define FRONT_HIST        24     // histogram buckets: le 2^0 .. 2^23 µs, then +Inf
#define FRONT_METRICS_CAP 32768u // the /metrics text
#define FRONT_HEAD_CAP    512u   // room for a response head (http_response_head_write)
#define FRONT_ERROR_CAP   512u   // an HTTP error answer (http_error_write)

// front_counters: what /metrics reports that the front counts itself. Thread: relaxed atomics.
typedef struct front_counters {
    uint64_t n_requests, n_ok, n_rejected, n_http_errors;
    uint64_t n_body[FRONT_BODY_TYPES][2]; // [cmp_body_type][0 ok, 1 rejected], all CAs
    uint64_t hsm_hist[FRONT_HIST];        // HSM stage latency (µs), log2 buckets
    uint64_t hsm_sum_us;
} front_counters;

// front_daemon: the daemon's state. Thread: built on the main thread, then read-only for the
// loops (except |counters|).
struct front_daemon {
    cfg_config *cfg;
    hsm_token *token;
    hsm_key **keys; // two per CA in configuration order: CA key, then CMP key (may be the same)
    size_t num_keys;
    hsm_pool *pool;
    store *store;
    cmp_protect_ctx *prot;
    // Per srv_ca, in the engine's order (the default CA first).
    srv_secret **secrets;
    cm_span **ra_certs;
    ca_trust **own_trust;
    ca_authority **cmp_ids; // a separate CMP protection certificate, or NULL
    srv_ca *cas;
    size_t num_cas;
    srv_engine *engine;
    http_limits limits;
    uint32_t head_timeout_ms; // a request (head and body) must arrive within this
    uint32_t idle_timeout_ms; // a keep-alive connection may idle this long
    net_server *net;          // NULL until front_daemon_serve (and in tests)
    front_counters counters;
};

// front_loop: one per I/O loop. Thread: loop-confined.
struct front_loop {
    front_daemon *d;
    const front_transport *tp;
    void *tp_arg;
    srv_worker *worker;
    uint32_t pending; // requests with jobs out
    char *metrics;    // FRONT_METRICS_CAP bytes: the /metrics text before it is answered
};

// front_conn: one per connection. Thread: loop-confined.
typedef struct front_conn {
    net_conn_ref ref;
    http_parser parser;
    uint8_t head[HTTP_DEFAULT_MAX_HEAD];
    char peer[64];
    srv_request *req; // the request being read or processed
    const srv_ca *ca;
    uint64_t start_ns;
    bool busy;        // a request is being processed or its answer sent
    bool close_after; // close once the current answer is sent
    bool keep_alive;
    bool http10;          // an HTTP/1.0 client: keep-alive must then be said explicitly
    bool jobs_out;        // the request waits for HSM or store jobs (front_loop.pending counts it)
    bool sending;         // a send is active in the transport
    bool continue_active; // ... and it is the interim 100 Continue of the request being read
    bool has_queued;      // an answer waits for the 100 Continue to be out:
    cm_span queued;       //   its bytes
    bool queued_close;    //   and whether the connection closes after it
    uint8_t *pending;     // bytes of following requests that arrived while busy
    size_t pending_len, pending_cap;
    uint8_t *out; // the answer's bytes when the request's arena could not hold them (heap)
    uint8_t err_out[FRONT_ERROR_CAP]; // an HTTP error's answer (sent without a request)
} front_conn;

// --- front_conn.c ----------------------------------------------------------------------------

// front_conn_send sends |data| as the answer to the connection's current request; the
// connection closes after it with |close_after|. The bytes must stay valid until on_sent:
// they live in the request's arena (freed on_sent), fc->out, fc->err_out or static memory.
void front_conn_send(front_loop *l, front_conn *fc, cm_span data, bool close_after);

// front_conn_respond sends a whole response: |status|, |type| (NULL for none), |body|, with the
// keep-alive fields the request asked for. Head and body are written into the request's arena
// (fc->req must be set), so |body| may be anything valid during the call.
void front_conn_respond(front_loop *l, front_conn *fc, uint16_t status, const char *type,
                        cm_span body, bool close_after);

// --- front_routes.c --------------------------------------------------------------------------

// front_route_request answers or starts one complete HTTP request |hr| on |fc|.
void front_route_request(front_loop *l, front_conn *fc, const http_request *hr);

// front_answer_cmp logs, counts and sends the finished CMP response of |fc|'s request.
void front_answer_cmp(front_loop *l, front_conn *fc);

// --- front_daemon.c --------------------------------------------------------------------------

// front_ca_order writes the engine's order of |cfg|'s CAs into |order| (room for num_cas
// indices): the default CA first (it answers /.well-known/cmp), then the others as configured.
// Returns how many it wrote: cfg->num_cas.
size_t front_ca_order(const cfg_config *cfg, size_t *order);

// --- front_metrics.c -------------------------------------------------------------------------

// front_body_name names a cmp_body_type ("ir"), "-" for anything else.
const char *front_body_name(int body_type);

// front_metrics_count records one finished CMP request described by |s|.
void front_metrics_count(front_daemon *d, const srv_summary *s);

// front_metrics_write writes the Prometheus text of |d| into |out| (at most |cap| bytes,
// truncated when full) and returns its length. Thread: any loop.
size_t front_metrics_write(front_daemon *d, char *out, size_t cap);

#endif // CERTMINT_ENGINE_FRONT_FRONT_INTERNAL_H
