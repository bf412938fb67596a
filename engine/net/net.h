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
// When net closes a connection: only for the peer's EOF (once nothing is in progress, see
// net_app.on_eof), a transport error, the application's request (NET_CLOSE, net_conn_close,
// close_after, a deadline), a lingering close's end, or a limit (refused at accept). A
// multishot operation the kernel ends while the connection is still wanted is re-armed: the
// kernel ends a multishot recv with a last completion that still carries data when it cannot
// post more (a full completion queue), and that is not the peer leaving. Completions the
// kernel holds in its overflow list (IORING_FEAT_NODROP, required) are flushed by the next
// wait; both are counted in net_stats. A transport error that discards a request in progress
// is logged (WARN, rate-limited) and counted.
//
// TLS (net_tls.c): a listen address may speak TLS (net_server_config.tls_listen_mask). Its
// connections run OpenSSL over memory BIOs inside the same loop: the ciphertext arrives by the
// same multishot recv and leaves by the same sends as plain bytes, the handshake included, and
// the application sees plaintext exactly as on a plain connection (on_data gets decrypted
// bytes only after the handshake finished; net_conn_send takes plaintext; on_sent follows once
// the records holding it are sent). A handshake must finish within tls_handshake_ms, or the
// connection is closed and counted (net_stats); it holds its one slot until then.
//
// Ownership and threads: everything here is loop-confined except net_server_stop,
// net_server_stats, net_loop_cq (whose queue accepts pushes from any thread) and the net_tls
// functions (start-up; a net_tls is shared read-only by the loops).
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
typedef struct net_tls net_tls;

// net_conn_ref names a connection of one loop: its slot and the slot's generation. A ref to a
// closed connection is detected (the generation moved on). Thread: value type.
typedef struct net_conn_ref {
    uint32_t slot;
    uint32_t gen;
} net_conn_ref;

// What an application's on_data, on_timeout and on_eof return.
typedef enum net_action {
    NET_CONTINUE = 0, // keep the connection
    NET_CLOSE = 1,    // close it now (a queued send is abandoned)
} net_action;

// net_app is the application on top of the transport. The callbacks run on the loop thread
// that owns the connection; all are required except those marked optional (NULL allowed), which
// were added later and have a documented default. |ctx| is the application's per-loop context,
// returned by loop_init.
typedef struct net_app {
    // loop_init runs on each loop thread before it serves; returns the per-loop context or
    // NULL to fail the loop. |loop| may be kept (it outlives the context).
    void *(*loop_init)(void *app_arg, net_loop *loop);
    // loop_cleanup runs on the loop thread after its last connection is gone.
    void (*loop_cleanup)(void *ctx);
    // on_open: a connection was accepted; returns its per-connection state (may be NULL).
    // net_conn_is_admin(loop, ref) tells, already here, which kind of listener accepted it.
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
    // is_idle: whether |conn| has no request in progress (neither partly received nor being
    // processed or answered). Asked during shutdown (idle connections are closed at once, busy
    // ones after their answer), after the peer's EOF (see on_eof), and before net closes a
    // connection for a transport error (a busy one is logged and counted as closed_busy).
    bool (*is_idle)(void *ctx, void *conn);
    // pending: during shutdown, how many jobs this loop's context still waits for (HSM, store);
    // the loop exits only when this is 0 and no connection is left.
    uint32_t (*pending)(void *ctx);
    // on_eof (optional): the peer finished sending (TCP FIN; it may still read). Every byte it
    // sent went to on_data before. Return NET_CLOSE to close now (e.g. a request that was only
    // partly received and so can never complete), or NET_CONTINUE to finish what is in
    // progress: sends still work, and net closes the connection once no send is active and
    // is_idle() is true (checked after each on_sent and at every tick). NULL: net decides with
    // is_idle(): idle closes at once, busy continues as above (a partly received request then
    // waits for the application's own deadline).
    net_action (*on_eof)(void *ctx, void *conn, net_conn_ref ref);
} net_app;

// NET_DEFAULT_* are what a zero field of net_server_config means.
#define NET_DEFAULT_MAX_CONNECTIONS 4096u // per loop
// Per loop and per peer address (IPv4 address, IPv6 /64). With SO_REUSEPORT the kernel spreads
// one address's connections evenly over the loops, so N loops allow about 256 x N per address.
// 256 caps one address at 1/16 of a loop's default 4096 slots, so one client can no longer
// hold them all, and stays above what legitimate clients open from one address: a load
// generator or an RA's connection pool (the integration test runs certmint-bench with 200
// connections from 127.0.0.1, which 64 would break even on two loops), or many devices behind
// one NAT. Lower it where clients are known to be small.
#define NET_DEFAULT_MAX_CONNECTIONS_PER_PEER 256u
#define NET_DEFAULT_ADMIN_MAX_CONNECTIONS    16u        // per loop, on admin listeners only
#define NET_DEFAULT_LINGER_MS                2000u      // RFC 9112 §9.6 lingering close: time
#define NET_DEFAULT_LINGER_BYTES             262144u    // ... and input discarded (256 KiB)
#define NET_NO_LIMIT                         UINT32_MAX // max_connections_per_peer: no cap
#define NET_DEFAULT_TLS_HANDSHAKE_MS         10000u     // a TLS handshake must finish in this

// net_server_config: what net_server_start needs. Thread: read during start only (the
// reject_response bytes are copied).
//
// Limits. Each loop has max_connections slots for connections accepted on the |listen|
// addresses and admin_max_connections more for the |admin_listen| ones, counted apart, so a
// full server still lets monitoring in. A connection over a cap (the loop full, the peer at
// max_connections_per_peer, the admin slots full, or the server stopping) is accepted and
// refused: net sends |reject_response| once, best effort (non-blocking, whatever the socket
// takes), then closes; the reason is counted in net_stats. The peer address is the IPv4
// address, or the /64 prefix for IPv6 (one host usually owns a whole /64). The per-peer cap
// applies to the main listeners only (admin listeners should be bound to a private address).
//
// Descriptors: each loop holds 2 fixed descriptors (its ring and its completion eventfd), one
// per listen address of either kind, and one per connection; see net_server_fds_needed.
typedef struct net_server_config {
    const char *const *listen; // "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0" (0 = any port)
    size_t num_listen;         // at least 1; together with num_admin_listen at most 8
    uint32_t io_threads;       // loops; 0 means the number of online CPUs
    uint32_t max_connections;  // per loop on |listen|; 0 picks NET_DEFAULT_MAX_CONNECTIONS
    uint32_t ring_entries;     // SQ entries per ring (CQ is 4x); 0 picks 256
    uint32_t recv_buffers;     // provided buffers per loop (power of two); 0 picks 256
    uint32_t recv_buffer_size; // bytes per buffer; 0 picks 16 KiB
    // Connections per peer address per loop on |listen|; 0 picks
    // NET_DEFAULT_MAX_CONNECTIONS_PER_PEER, NET_NO_LIMIT for none.
    uint32_t max_connections_per_peer;
    // Sent to a refused connection (e.g. "HTTP/1.1 503 Service Unavailable\r\nRetry-After:
    // 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"); empty: close without a byte.
    cm_span reject_response;
    // Admin listeners (e.g. for /healthz and /metrics), bound like |listen|.
    const char *const *admin_listen;
    size_t num_admin_listen;
    uint32_t admin_max_connections; // per loop; 0 picks NET_DEFAULT_ADMIN_MAX_CONNECTIONS
    // Lingering close after a send with close_after (RFC 9112 §9.6): net shuts down writing,
    // then reads and discards input until the peer closes, linger_ms pass or linger_bytes
    // arrive (counted from when the last answer was queued), and only then closes, so a client
    // still sending a body reads the answer instead of a reset. 0 picks NET_DEFAULT_LINGER_MS /
    // NET_DEFAULT_LINGER_BYTES.
    uint32_t linger_ms;
    uint32_t linger_bytes;
    // TLS (net_tls.c): bit i of tls_listen_mask makes the i-th |listen| address speak TLS with
    // |tls| (required then; it must outlive the server). Admin listeners are always plain.
    // tls_handshake_ms: a TLS connection whose handshake has not finished this long after its
    // accept is closed (counted as a timeout); 0 picks NET_DEFAULT_TLS_HANDSHAKE_MS.
    const net_tls *tls;
    uint32_t tls_listen_mask;
    uint32_t tls_handshake_ms;
} net_server_config;

// net_server_start binds every listen address (main and admin) once per loop (SO_REUSEPORT; a
// port 0 is resolved by the first bind and reused by the others), starts the loop threads and
// returns when all of them serve, or fails with the first error (everything started is
// stopped). NET_E_ADDRESS for a bad address or a bad number of them, NET_E_FEATURE when the
// kernel lacks an io_uring operation or IORING_FEAT_NODROP (completions must never be dropped).
// |app| and |app_arg| must outlive the server. |*out| is written before the loops start, so
// the application's callbacks may read it (set back to NULL on a failure after that).
// Thread: the caller's (not a loop).
CM_RESULT net_server_start(net_server **out, const net_server_config *cfg, const net_app *app,
                           void *app_arg);

// net_server_port returns the port the |i|-th |listen| address is bound to (0 if none).
uint16_t net_server_port(const net_server *s, size_t i);

// net_server_admin_port returns the port the |i|-th |admin_listen| address is bound to.
uint16_t net_server_admin_port(const net_server *s, size_t i);

// net_server_stop asks every loop to stop gracefully (no new connections; idle connections
// closed; requests in flight finished and answered) and returns at once. Thread: any, also
// a signal-handling thread (it only writes eventfds and atomics).
void net_server_stop(net_server *s);

// net_server_wait joins the loop threads after net_server_stop and frees the server.
void net_server_wait(net_server *s);

// net_server_stats: counters summed over the loops (atomically read, approximate).
typedef struct net_stats {
    uint64_t accepted;       // every accepted socket, refused ones included
    uint64_t rejected_full;  // refused: the loop's main slots were full (or it was stopping)
    uint64_t open;           // connections open now (admin ones included)
    uint64_t timeouts;       // application deadlines that passed
    uint64_t rejected_peer;  // refused: the peer address had max_connections_per_peer
    uint64_t rejected_admin; // refused on an admin listener: its slots were full
    uint64_t admin_open;     // connections open now on admin listeners
    // Accepting paused for 100 ms because the process or system had no descriptor left
    // (EMFILE, ENFILE); other accept failures also pause but are not counted here.
    uint64_t accept_emfile;
    // Loop turns that found completions held in the kernel's overflow list (the completion
    // queue was full). They are not lost (IORING_FEAT_NODROP): the next wait flushes them.
    uint64_t cq_overflow;
    uint64_t cq_dropped;  // completions the kernel dropped (cq.koverflow; 0 unless it ran
                          // out of memory for its overflow list), logged as an error
    uint64_t recv_rearms; // multishot recvs that ended with data (no F_MORE) and were
                          // re-armed; the kernel ends them so when the CQ is full
    uint64_t closed_busy; // connections closed by a transport error with a request in
                          // progress (each is logged, rate-limited, with its reason)
    uint64_t eof_busy;    // EOFs that arrived with a request in progress, which was still
                          // answered (the peer had only shut down its writing side)
    uint64_t lingered;    // lingering closes begun after a close_after send
    // Connections a loop accepted and gave to a loop with fewer (net_loop.c: net_hand_off),
    // and the fewest and the most connections open on one loop now.
    uint64_t handed_off;
    uint64_t open_loop_min;
    uint64_t open_loop_max;
    // TLS handshakes by outcome: finished with a full handshake, finished by resuming a
    // session (a ticket), failed (a protocol error, an unacceptable ClientHello or client
    // certificate, or the peer left before it finished), timed out (tls_handshake_ms).
    uint64_t tls_full;
    uint64_t tls_resumed;
    uint64_t tls_failed;
    uint64_t tls_timeouts;
    uint64_t tls_handshake_ns; // loop time spent in OpenSSL's handshake steps, all outcomes
    uint64_t tls_open;         // TLS connections open now
} net_stats;
void net_server_stats(const net_server *s, net_stats *out);

// net_server_fds_needed returns how many descriptors a server with |cfg| holds at most once
// full: per loop 2 + the listen addresses + max_connections + admin_max_connections (when
// admin addresses are given) + 64 of slack for refused sockets that are accepted and closed
// at once. Zero fields count as their defaults. Add what the rest of the process needs (store,
// HSM, logs). Thread: any; pure.
uint64_t net_server_fds_needed(const net_server_config *cfg);

// net_fd_limit_raise raises the soft RLIMIT_NOFILE to |want| (0: as high as allowed), bounded
// by the hard limit, and never lowers it. |*out_limit| is the soft limit in force afterwards,
// which may be less than |want| (the caller decides whether that is enough). IO-class code if
// getrlimit or setrlimit fails. Thread: any (the limit is process-wide: call before starting
// threads that open descriptors).
CM_RESULT net_fd_limit_raise(uint64_t want, uint64_t *out_limit);

// net_loop_cq returns the loop's completion queue: push work items finished on other threads
// here. Thread: any.
cm_cq *net_loop_cq(net_loop *loop);

// net_loop_busy reports whether other work waits on |loop| right now: completions of this turn
// not yet dispatched, or work items in its queue. A callback uses it to decide whether a slow
// step may run here or should go to another thread. Thread: the loop's.
bool net_loop_busy(const net_loop *loop);

// net_loop_index returns the loop's number (0 .. io_threads-1).
uint32_t net_loop_index(const net_loop *loop);

// net_conn_send queues |data| to be sent in full (partial sends are continued). The bytes must
// stay valid until on_sent. With |close_after|, it is the last answer: input arriving from now
// on is discarded (on_data is not called again) and the connection closes once it is sent,
// with a lingering close (see net_server_config). NET_E_BUSY while another send is active,
// NET_E_GONE for a stale ref or a connection that is closing (or already sent its last
// answer). Thread: the loop's.
CM_RESULT net_conn_send(net_loop *loop, net_conn_ref ref, cm_span data, bool close_after);

// net_conn_close closes the connection (on_close follows once its operations drain).
void net_conn_close(net_loop *loop, net_conn_ref ref);

// net_conn_set_deadline arms (|ms_from_now| > 0) or clears (0) the connection's deadline;
// on_timeout fires within about 250 ms after it passes. Thread: the loop's.
void net_conn_set_deadline(net_loop *loop, net_conn_ref ref, uint32_t ms_from_now);

// net_conn_is_admin reports whether the connection was accepted on an admin listener (false
// for a stale ref). Thread: the loop's.
bool net_conn_is_admin(const net_loop *loop, net_conn_ref ref);

// ---------------------------------------------------------------------------------------------
// TLS (net_tls.c)

// net_tls_client_auth: whether a TLS client is asked for a certificate.
typedef enum net_tls_client_auth {
    NET_TLS_CLIENT_AUTH_OFF = 0,      // not asked
    NET_TLS_CLIENT_AUTH_OPTIONAL = 1, // asked; one it presents must verify, none is accepted
    NET_TLS_CLIENT_AUTH_REQUIRED = 2, // asked; the handshake fails without one that verifies
} net_tls_client_auth;

// NET_TLS_DEFAULT_TICKET_LIFETIME_S: the default of net_tls_config.ticket_lifetime_s.
#define NET_TLS_DEFAULT_TICKET_LIFETIME_S 3600u

// net_tls_config: what net_tls_new reads. Thread: read during net_tls_new only.
typedef struct net_tls_config {
    const char *cert_path;  // PEM: the server certificate (required)
    const char *key_path;   // PEM: its private key, unencrypted (required)
    const char *chain_path; // PEM: the intermediate certificates sent after it; NULL: none
    // PEM: the CA certificates a client certificate must chain to (required unless
    // client_auth is OFF); their subjects are sent as the acceptable CA names.
    const char *client_ca_path;
    net_tls_client_auth client_auth;
    // Session tickets (RFC 8446 §4.6.1, RFC 5077): a ticket is valid this long, and the key
    // that seals tickets is replaced by a fresh random one this often (the one before still
    // opens tickets for one more period, and those are renewed). 0: no tickets (every
    // connection makes a full handshake).
    uint32_t ticket_lifetime_s;
} net_tls_config;

// net_tls_new builds the TLS server context of |cfg|: TLS 1.2 and 1.3 only; the server's
// order of cipher suites (TLS 1.3: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; TLS 1.2:
// ECDHE with ECDSA or RSA and AES-GCM or ChaCha20-Poly1305, nothing else); groups X25519,
// P-256, P-384; no renegotiation, no compression; ALPN "http/1.1" (a client offering only
// other protocols gets the no_application_protocol alert, RFC 7301 §3.2; one offering none is
// served); stateless session tickets (TLS 1.3 tickets, TLS 1.2 RFC 5077 tickets) under keys
// rotated as described above; no server-side session cache. On failure writes one line into
// |err| naming the file and what is wrong and returns NET_E_TLS (nothing is kept).
// Thread: start-up (reads files).
CM_RESULT net_tls_new(net_tls **out, char *err, size_t err_cap, const net_tls_config *cfg);

// net_tls_free releases |t| once no server uses it any more (after net_server_wait). NULL is
// a no-op.
void net_tls_free(net_tls *t);

// net_tls_info: what a finished handshake established. Thread: value type; |peer_cert|
// borrows the connection's copy (valid until the connection closes: copy it to keep it).
typedef struct net_tls_info {
    bool resumed;           // the session was resumed from a ticket
    const char *version;    // "TLSv1.3", "TLSv1.2" (static)
    const char *cipher;     // the cipher suite's OpenSSL name (static)
    cm_span peer_cert;      // DER of the client's verified certificate; empty when none
    char peer_subject[256]; // its subject, RFC 2253 text (truncated); "" when none
} net_tls_info;

// net_conn_tls_info fills |out| for a TLS connection whose handshake finished and returns
// true; false for a plain connection, a stale ref or a handshake in progress. The client
// certificate is verified against client_ca_path by the handshake; it says who holds the TLS
// connection, nothing about the CMP messages it carries (RFC 9811: transport information must
// not replace the CMP-level protection checks). Thread: the loop's.
bool net_conn_tls_info(net_loop *loop, net_conn_ref ref, net_tls_info *out);

#endif // CERTMINT_ENGINE_NET_NET_H
