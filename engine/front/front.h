// engine/front: certmintd's HTTP front — what sits between the transport (engine/net) and the
// CMP engine (engine/server).
//
// Two halves. The daemon (front_daemon_*) is the wiring: it loads the configuration, opens the
// CA keys in the token, builds one srv_ca per [ca:NAME], starts the HSM pool, the store and the
// engine, serves them through engine/net, and runs the maintenance duties (certConf sweep,
// transaction expiry, CRL refresh) when main asks. The connection state machine (front_loop and
// the net_app of front_net_app) turns bytes into HTTP requests with http_parser_feed, answers
// one request at a time per connection in order (pipelined requests wait), routes them
// (/.well-known/cmp…, /healthz, /metrics, /crl/NAME.crl) and sends the responses.
//
// The state machine reaches the transport only through a front_transport, so tests drive the
// net_app callbacks without sockets: front_loop_new with a fake transport and a completion
// queue of their own, then on_open, on_data, on_sent, on_close and on_completion by hand.
//
// Threads: the daemon functions run on the main thread; the loop callbacks on the loop thread
// that owns the connection. The daemon is read-only once front_daemon_serve started; its
// counters are relaxed atomics.
#ifndef CERTMINT_ENGINE_FRONT_FRONT_H
#define CERTMINT_ENGINE_FRONT_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "engine/net/net.h"
#include "engine/server/srv.h"

typedef struct front_daemon front_daemon;
typedef struct front_loop front_loop;

// ---------------------------------------------------------------------------------------------
// The daemon

// front_daemon_load reads the configuration at |path| (cfg_load), applies its log level, opens
// the token of the first CA's key, finds every CA's key and CMP key in it and checks each
// certificate holds its key, builds the CMP protection context, and loads the TLS identity
// (tls_cert, tls_key, tls_chain, tls_client_ca) when tls_cert is set: everything
// `certmintd --check` validates. On success |*out| is the daemon (free with
// front_daemon_free). On failure writes one line into |err| (without a "certmintd: " prefix,
// e.g. "[ca:devices] key: ..."), frees what it made and returns the failing code.
// Thread: start-up (file and token I/O).
CM_RESULT front_daemon_load(front_daemon **out, char *err, size_t err_cap, const char *path);

// front_daemon_report prints what --check found to |f|: the configuration's path and one line
// per CA (its key's label and size, [default] on the default CA).
void front_daemon_report(const front_daemon *d, FILE *f);

// front_daemon_start starts what serving needs after front_daemon_load: it raises the soft
// RLIMIT_NOFILE to the hard limit (before anything opens descriptors), then starts the HSM
// pool, the store and its free-space watch (store_min_free; one reading now), one srv_ca per
// configured CA (the default CA first, any number of CAs), the engine and the HTTP limits. On
// failure writes one line into |err| and returns the failing code; the daemon must then only
// be freed. Thread: start-up.
CM_RESULT front_daemon_start(front_daemon *d, char *err, size_t err_cap);

// front_daemon_serve starts engine/net on the configured listen addresses, or on
// |listen_override| alone when it is not NULL (https://ADDR for HTTPS, which needs tls_cert),
// and on the admin_listen addresses, with front_net_app, and logs one "serving CMP" line per
// address. The https:// addresses speak TLS with the loaded identity, tls_handshake_timeout
// bounding each handshake. A connection over a cap
// (max_connections, max_connections_per_peer, admin_max_connections) is answered with
// FRONT_REJECT_RESPONSE and closed. Before that it checks the descriptors: the connections of
// every I/O thread and the admin slots, plus what the store (measured per reader), the HSM and
// the log hold, must fit in RLIMIT_NOFILE (raised by front_daemon_start); when they do not,
// max_connections is lowered with a WARN naming the numbers, and serving is refused when fewer
// than FRONT_MIN_CONNECTIONS per I/O thread would be left. On failure writes one line into
// |err|. Thread: the main thread.
CM_RESULT front_daemon_serve(front_daemon *d, char *err, size_t err_cap,
                             const char *listen_override);

// front_daemon_refresh_crls issues a CRL for every CA that needs one (srv_crl_due) and logs
// the outcome per CA, when this node holds the store's leader lock (store_leader_try: nodes
// sharing a PostgreSQL store issue each CRL once). Blocks on the store and the HSM: the
// maintenance (main) thread only.
void front_daemon_refresh_crls(front_daemon *d);

// front_daemon_maintain runs one maintenance round at |now|: when this node holds the store's
// leader lock, the certConf sweep and transaction expiry (srv_engine_maintain), then the CRLs,
// logging what happened; on every node, it then refreshes the gauges read elsewhere (the
// store's free space, which also decides whether enrolments are refused, and the process's open
// descriptors). Blocking: the maintenance (main) thread only.
void front_daemon_maintain(front_daemon *d, int64_t now);

// front_daemon_reload_crls reads every client group's trust_crls files again and swaps them in
// (cfg_clients_reload_crls: safe while the loops verify), logging the outcome per group; a
// group whose files fail keeps its CRLs. For SIGHUP. Thread: the main thread (file I/O).
void front_daemon_reload_crls(front_daemon *d);

// front_daemon_stop stops serving gracefully (requests in flight answered) and waits for the
// loops to finish. No-op when front_daemon_serve did not succeed. Thread: the main thread.
void front_daemon_stop(front_daemon *d);

// front_daemon_free releases everything (stopping the server first if it still runs); the
// store is closed after everything queued committed. NULL is a no-op.
void front_daemon_free(front_daemon *d);

// front_daemon_loops_alive is the watchdog's probe of the I/O loops: true when every loop has
// taken the probe the previous call sent it (or was never sent one), false when one has not
// (it has not turned its event loop since: it is wedged, or busier than the probe period).
// Each loop that answered is sent the next probe, which it takes at its next turn (the push
// wakes an idle loop). Call it periodically while serving; systemd's WATCHDOG=1 should follow
// only a true. Thread: the main thread (one caller).
bool front_daemon_loops_alive(front_daemon *d);

// front_status: the one-line summary of the daemon (systemd's STATUS=). Thread: value type.
typedef struct front_status {
    uint64_t enrolments; // certificates issued so far: ok answers to ir, cr, kur and p10cr
    uint64_t requests;   // CMP requests answered so far
    uint32_t hsm_sessions;
    size_t hsm_queued; // signatures waiting for a session now
} front_status;

// front_daemon_status fills |out| from the daemon's counters. Thread: any (relaxed reads).
void front_daemon_status(const front_daemon *d, front_status *out);

// front_daemon_engine returns the engine (NULL before front_daemon_start). Borrowed.
srv_engine *front_daemon_engine(const front_daemon *d);

// front_daemon_num_cas returns how many CAs the engine answers for.
size_t front_daemon_num_cas(const front_daemon *d);

// ---------------------------------------------------------------------------------------------
// The connection state machine

// front_transport is how the state machine reaches the connections of one loop; |arg| is the
// loop's transport (a net_loop for engine/net). The functions have net_conn_send's,
// net_conn_close's, net_conn_set_deadline's and net_conn_is_admin's contracts: send queues
// bytes that must stay valid until on_sent and fails while another send is active; close is
// followed by on_close once the connection's operations drained; is_admin tells whether an
// admin listener accepted the connection (it then serves only /healthz and /metrics); tls_info
// (optional, NULL: no TLS) has net_conn_tls_info's: it is asked once per connection, at its
// first bytes (which arrive after the handshake).
// Thread: value type, immutable.
typedef struct front_transport {
    cm_result (*send)(void *arg, net_conn_ref ref, cm_span data, bool close_after);
    void (*close)(void *arg, net_conn_ref ref);
    void (*set_deadline)(void *arg, net_conn_ref ref, uint32_t ms_from_now);
    bool (*is_admin)(void *arg, net_conn_ref ref);
    bool (*tls_info)(void *arg, net_conn_ref ref, net_tls_info *out);
    // busy: other work waits on the loop now (net_loop_busy); may be NULL (never busy).
    bool (*busy)(void *arg);
} front_transport;

// front_net_transport returns the engine/net transport (net_conn_send, net_conn_close,
// net_conn_set_deadline, net_conn_is_admin, net_conn_tls_info; |arg| is the net_loop). Static.
const front_transport *front_net_transport(void);

// front_net_app returns the net_app certmintd serves with: its app_arg is a front_daemon after
// front_daemon_start, its per-loop context a front_loop. Static.
const net_app *front_net_app(void);

// front_loop_new makes the per-loop context of |d| (which must be started and outlive it): an
// srv_worker whose jobs come back to |cq|, sends through |tp| with |tp_arg|. net_app's
// loop_init calls it with front_net_transport() and the loop's queue; tests call it with a
// fake transport and pass the result as |ctx| to front_net_app()'s callbacks. Fails with
// CM_E_NOMEM or the worker's code. Thread: the loop's (then confined to it).
CM_RESULT front_loop_new(front_loop **out, front_daemon *d, const front_transport *tp, void *tp_arg,
                         cm_cq *cq);

// front_loop_free releases the context once its last connection is closed and no job is
// pending (front_net_app()->pending returns 0). NULL is a no-op.
void front_loop_free(front_loop *l);

#endif // CERTMINT_ENGINE_FRONT_FRONT_H
