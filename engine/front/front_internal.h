// engine/front internals: the daemon, loop and connection structures and what the front's
// files call of each other. Only for engine/front/*.c and tests/engine/front.
#ifndef CERTMINT_ENGINE_FRONT_FRONT_INTERNAL_H
#define CERTMINT_ENGINE_FRONT_FRONT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/config/cfg.h"
#include "engine/front/front.h"
#include "engine/front/front_coap_internal.h"
#include "engine/http/http.h"
#include "engine/net/net.h"
#include "engine/server/srv.h"

#define FRONT_BODY_TYPES 27 // cmp_body_type values
#define FRONT_FAILINFO   27 // PKIFailureInfo bits (RFC 9810 §5.2.3)
_Static_assert(FRONT_FAILINFO == CM_FAIL_MAX + 1, "one rejection counter per failInfo bit");
// MAC kinds counted in certmint_mac_failures_total (front_counters.n_mac_failed).
enum { FRONT_MAC_PBM = 0, FRONT_MAC_PBMAC1 = 1, FRONT_MAC_KEY = 2, FRONT_MAC_KINDS = 3 };
#define FRONT_HIST        24   // histogram buckets: le 2^0 .. 2^23 µs, then +Inf
#define FRONT_DUR_BUCKETS 15   // request duration buckets, le 250 µs .. 10 s, then +Inf
#define FRONT_MAX_LOOPS   256u // I/O loops the watchdog probes (io_threads is at most 256)
// cm_cq_node.kind of the watchdog's probe: a module's own value below CM_CQ_KIND_USER (net
// hands every node but CM_CQ_KIND_NONE to on_completion).
#define FRONT_CQ_KIND_PROBE 15u
#define FRONT_METRICS_CAP   65536u // the /metrics text
#define FRONT_HEAD_CAP      512u   // room for a response head (http_response_head_write)
#define FRONT_ERROR_CAP     512u   // an HTTP error answer (http_error_write)

// What a connection over a cap reads before it is closed (net_server_config.reject_response).
// Retry-After: 1 (RFC 9110 §10.2.3): a refusal costs the server an accept, one send and a
// close, and slots usually free within milliseconds (an enrolment takes a few), so an early
// retry is cheap for the server and quickest for a client that honours it; even while slow
// clients hold every slot until header_timeout, one retry a second per refused client is
// noise beside the connections being refused.
#define FRONT_REJECT_RESPONSE                                                     \
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n" \
    "Content-Length: 0\r\n\r\n"

// The descriptor check at start (front_fd_plan).
#define FRONT_MIN_CONNECTIONS 16u // per I/O thread: fewer and certmintd refuses to serve
#define FRONT_FD_RESERVE \
    64u                        // transient descriptors: SQLite temporary and journal files,
                               // a session the HSM reopens, a CRL write, a log reopen
#define FRONT_FD_PER_READER 3u // a store reader when it cannot be measured (no /proc)

// front_counters: what /metrics reports that the front counts itself. Thread: relaxed atomics.
typedef struct front_counters {
    uint64_t n_requests, n_ok, n_rejected, n_http_errors;
    uint64_t n_mac_failed[FRONT_MAC_KINDS]; // MACs that did not verify, by FRONT_MAC_* (issue 14)
    uint64_t n_body[FRONT_BODY_TYPES][2];   // [cmp_body_type][0 ok, 1 rejected], all CAs
    uint64_t hsm_hist[FRONT_HIST];          // HSM stage latency (µs), log2 buckets
    uint64_t hsm_sum_us;
    uint64_t
        stage_sum_us[SRV_STAGE_COUNT]; // time spent in each request stage (srv.h), all requests
    // Request duration (arrival of the request to its answer being queued) per body type and
    // outcome: counts per bucket (not cumulative; the last is +Inf) and the sum in µs.
    uint64_t dur_hist[FRONT_BODY_TYPES][2][FRONT_DUR_BUCKETS + 1];
    uint64_t dur_sum_us[FRONT_BODY_TYPES][2];
    uint64_t n_failinfo[FRONT_FAILINFO]; // rejections by PKIFailureInfo bit
    front_coap_counters coap;            // CMP over CoAP (front_coap.c)
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
    srv_profile **profiles; // the certProfile choices of each CA (issue 14)
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
    // The loops the watchdog probes (front_daemon_loops_alive): registered by each loop thread
    // as it starts (front_daemon_watch), cleared as it ends. Atomic.
    front_loop *loops[FRONT_MAX_LOOPS];
    uint32_t num_loops;
    // Limits and operations (issue 23).
    store_space space;       // the store's free space; checked before each new enrolment
    uint64_t fd_limit;       // atomic: the soft RLIMIT_NOFILE (raised at start)
    uint64_t fds_open;       // atomic: descriptors open at the last maintenance round
    uint32_t conns_per_loop; // max_connections in force (after the descriptor check)
    uint32_t admin_per_loop; // admin slots per I/O thread (0: no admin listener)
    uint32_t io_threads;     // of the running server
    front_coap *coap;        // the cm-coap thread (NULL: no coap_listen, or not serving)
    net_tls *tls;            // the https:// identity (front_tls_load); NULL without tls_cert
};

// front_loop: one per I/O loop. Thread: loop-confined.
struct front_loop {
    front_daemon *d;
    const front_transport *tp;
    void *tp_arg;
    srv_worker *worker;
    uint32_t pending; // requests with jobs out
    char *metrics;    // FRONT_METRICS_CAP bytes: the /metrics text before it is answered
    // The watchdog's probe: pushed into |cq| by the main thread, taken by on_completion, which
    // sets probe_seen to probe_sent (atomics) to say the loop turned.
    cm_cq *cq;
    cm_cq_node probe;
    uint64_t probe_sent;
    uint64_t probe_seen;
    uint32_t watch_slot; // its index in front_daemon.loops, FRONT_MAX_LOOPS when not watched
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
    bool admin;           // accepted on an admin listener: /healthz and /metrics only
    bool peer_eof;        // the peer finished sending (net_app.on_eof)
    bool has_queued;      // an answer waits for the 100 Continue to be out:
    cm_span queued;       //   its bytes
    bool queued_close;    //   and whether the connection closes after it
    uint8_t *pending;     // bytes of following requests that arrived while busy
    size_t pending_len, pending_cap;
    uint8_t *out; // the answer's bytes when the request's arena could not hold them (heap)
    uint8_t err_out[FRONT_ERROR_CAP]; // an HTTP error's answer (sent without a request)
    // TLS (front_tls.c): asked of the transport at the connection's first bytes.
    bool tls_known;     // the transport was asked
    bool tls;           // a TLS connection
    cm_span tls_der;    // the verified client certificate (the transport's copy), or empty
    char tls_peer[256]; // its subject (RFC 2253), "" when none
    uint8_t peer_key[SRV_PEER_KEY_LEN]; // the per-peer budgets' key (front_peer_key)
} front_conn;

// front_peer_key writes the key the engine's per-peer budgets count |sa| under
// (srv_request_set_peer): an IPv4 address as IPv4-mapped IPv6, an IPv6 address as its /64;
// zero for other families (front_conn.c).
void front_peer_key(uint8_t out[SRV_PEER_KEY_LEN], const struct sockaddr *sa);

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

// front_fd_budget is what the descriptor check weighs besides the server's own (pure data).
typedef struct front_fd_budget {
    uint64_t limit;      // the soft RLIMIT_NOFILE in force
    uint64_t open_now;   // descriptors open before serving: store writer and checkpointer, HSM
                         // module and sessions, log, standard streams
    uint64_t per_reader; // descriptors one store reader holds (measured)
    uint64_t readers;    // store readers open at once: one per I/O thread, two for maintenance
    uint64_t reserve;    // FRONT_FD_RESERVE
} front_fd_budget;

// front_fd_plan fits |nc| into |b|: the server's descriptors (net_server_fds_needed) plus the
// budget's. When they fit, CM_OK and |nc| unchanged. Otherwise lowers nc->max_connections to
// what fits and returns CM_OK, or, when fewer than FRONT_MIN_CONNECTIONS would be left,
// CM_E_LIMIT. |*out_need| is the total needed with the max_connections asked for, |*out_fixed|
// what is needed besides the main connections. Thread: any; pure.
CM_RESULT front_fd_plan(net_server_config *nc, const front_fd_budget *b, uint64_t *out_need,
                        uint64_t *out_fixed);

// front_fd_count counts the process's open descriptors (/proc/self/fd). IO-class code when it
// cannot be read. Thread: any.
CM_RESULT front_fd_count(uint64_t *out);

// front_daemon_refresh_gauges reads the store's free space (store_space_refresh: below
// store_min_free enrolments are refused from now on) and the process's open descriptors and
// limit, for /metrics. Blocking (statvfs, /proc): the maintenance thread, or start-up.
void front_daemon_refresh_gauges(front_daemon *d);

// --- front_tls.c -----------------------------------------------------------------------------

// front_tls_load builds d->tls from the configuration's tls_ keys when tls_cert is set
// (net_tls_new); nothing when it is not. On failure writes "TLS: ..." into |err| and returns
// the code. Thread: start-up.
CM_RESULT front_tls_load(front_daemon *d, char *err, size_t err_cap);

// front_tls_learn asks the transport, once, what TLS established for |fc| (front_conn's tls_
// fields). Thread: the loop's.
void front_tls_learn(front_loop *l, front_conn *fc);

// front_tls_pass gives |fc|'s verified client certificate, if any, to its request (copied into
// the request's arena; srv_request_set_tls_peer). Thread: the loop's.
void front_tls_pass(front_conn *fc);

// front_tls_metrics_write appends the TLS families (handshakes by result, their loop time, TLS
// connections open) to |out| when TLS is configured; returns the bytes written (at most
// |cap|). Thread: any loop.
size_t front_tls_metrics_write(const front_daemon *d, const net_stats *ns, char *out, size_t cap);

// --- front_metrics.c -------------------------------------------------------------------------

// front_body_name names a cmp_body_type ("ir"), "-" for anything else.
const char *front_body_name(int body_type);

// front_metrics_count records one finished CMP request described by |s| that took |us|
// microseconds from its arrival to its answer.
void front_metrics_count(front_daemon *d, const srv_summary *s, uint64_t us);

// --- the watchdog (front_conn.c) -------------------------------------------------------------

// front_daemon_watch registers |l| for front_daemon_loops_alive; a no-op (the loop is then not
// watched) when FRONT_MAX_LOOPS are registered. front_daemon_unwatch takes it out again.
// Thread: |l|'s loop thread (net_app's loop_init and loop_cleanup), or a test's.
void front_daemon_watch(front_daemon *d, front_loop *l);
void front_daemon_unwatch(front_daemon *d, front_loop *l);

// front_metrics_write writes the Prometheus text of |d| into |out| (at most |cap| bytes,
// truncated when full) and returns its length. Thread: any loop.
size_t front_metrics_write(front_daemon *d, char *out, size_t cap);

#endif // CERTMINT_ENGINE_FRONT_FRONT_INTERNAL_H
