// bench/certmint_bench.h: certmint-bench's shared header, in two parts.
//
// First the parts that tests link (the bench_check library, certmint_bench_check.c): a minimal
// HTTP/1.1 response parser and the CMP response checker that classifies every response of a
// run as a success or one kind of failure. Thread: everything there is pure and reentrant; the
// caller owns every buffer.
//
// Then the program's own state and the functions its files share (below the double rule).
#ifndef CERTMINT_BENCH_CERTMINT_BENCH_H
#define CERTMINT_BENCH_CERTMINT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/types.h>

#include "engine/base/base.h"
#include "engine/cmp/cmp.h"
#include "engine/cmp/cmp_protect.h"
#include "engine/crmf/crmf.h"

struct addrinfo;

// bench_fail is the outcome of one transaction: BENCH_OK or the first check that failed.
// Numbers are stable (they index the report's table and the JSON "errors" object).
typedef enum bench_fail {
    BENCH_OK = 0,
    BENCH_FAIL_CONNECT,        // TCP connect failed
    BENCH_FAIL_IO,             // send/recv failed or the peer closed mid-response
    BENCH_FAIL_TIMEOUT,        // no complete response within the timeout
    BENCH_FAIL_HTTP_MALFORMED, // not an HTTP/1.x response we can read (or chunked)
    BENCH_FAIL_HTTP_STATUS,    // a status other than 200
    BENCH_FAIL_CONTENT_TYPE,   // not application/pkixcmp
    BENCH_FAIL_NOT_CMP,        // the body is not a PKIMessage (cmp_msg_from_der failed)
    BENCH_FAIL_TRANSACTION_ID, // transactionID differs from the request's
    BENCH_FAIL_RECIP_NONCE,    // recipNonce absent or not the request's senderNonce
    BENCH_FAIL_CMP_ERROR,      // an error message (body error) instead of the answer
    BENCH_FAIL_BODY_TYPE,      // another body than the one the flow expects
    BENCH_FAIL_REJECTED,       // CertResponse status not accepted/grantedWithMods
    BENCH_FAIL_NO_CERT,        // accepted, but no certificate (or not exactly one response)
    BENCH_FAIL_WRONG_KEY,      // the certificate's public key is not the requested one
    BENCH_FAIL_PROTECTION,     // --verify: the response protection does not verify
    BENCH_FAIL_CERT_SIGNATURE, // --verify: the certificate does not verify against --ca
    BENCH_FAIL_TLS,            // --tls: the TLS handshake failed
    BENCH_FAIL_PRIVATE_KEY,    // ir-ckg: no privateKey, it does not decrypt, or not the cert's
    BENCH_FAIL_COUNT,
} bench_fail;

// bench_fail_name returns a short stable name ("ok", "http_status", "recip_nonce" ...), used in
// the table and as JSON keys. Thread: any.
const char *bench_fail_name(bench_fail f);

// ---------------------------------------------------------------------------------------------
// HTTP/1.x responses

typedef enum bench_http_state {
    BENCH_HTTP_NEED_MORE = 0, // headers or body incomplete: read more
    BENCH_HTTP_DONE = 1,      // one whole response: see bench_http_rsp
    BENCH_HTTP_BAD = 2,       // malformed, chunked, or without Content-Length
} bench_http_state;

// The largest header block bench_http_parse accepts before calling it malformed.
#define BENCH_HTTP_MAX_HEADER 8192u
// The largest body it accepts.
#define BENCH_HTTP_MAX_BODY (4u * 1024u * 1024u)

// One parsed response; spans point into the parsed buffer. Thread: value type.
typedef struct bench_http_rsp {
    int status;           // e.g. 200
    int minor;            // HTTP/1.|minor|
    cm_span content_type; // the Content-Type value (trimmed), len 0 when absent
    cm_span body;         // exactly Content-Length octets
    size_t consumed;      // header block + body: where a next response would start
    bool keep_alive;      // the connection may carry another request
} bench_http_rsp;

// bench_http_parse reads one HTTP/1.x response from the |len| bytes at |buf|. Content-Length
// is required (a CMP server knows the length of its answer; Transfer-Encoding is refused);
// keep-alive is HTTP/1.1's default unless "Connection: close", HTTP/1.0's only with
// "Connection: keep-alive". Returns NEED_MORE while incomplete, DONE with |*out| filled, BAD
// otherwise. Thread: any; pure.
bench_http_state bench_http_parse(bench_http_rsp *out, const uint8_t *buf, size_t len);

// ---------------------------------------------------------------------------------------------
// CMP responses

// What a response must match: the request's transactionID and senderNonce, the body the flow
// expects next, and the requested public key. Thread: value type; spans borrowed.
typedef struct bench_expect {
    cm_span transaction_id;
    cm_span sender_nonce; // the request's senderNonce: the response's recipNonce
    cmp_body_type body;   // CMP_BODY_IP/CP/KUP, CMP_BODY_PKICONF, CMP_BODY_GENP or CMP_BODY_RP
    cm_span spki;         // the requested SubjectPublicKeyInfo DER; len 0: key not checked
} bench_expect;

// bench_check_http classifies the transport of |h|: BENCH_FAIL_HTTP_STATUS unless 200,
// BENCH_FAIL_CONTENT_TYPE unless application/pkixcmp (parameters and case ignored), else
// BENCH_OK. Thread: any; pure.
bench_fail bench_check_http(const bench_http_rsp *h);

// bench_check_cmp parses |body| into |*out| (arrays from |arena|, spans into |body|) and
// checks it against |e| in this order: parses (NOT_CMP), transactionID (TRANSACTION_ID),
// recipNonce (RECIP_NONCE), an error body (CMP_ERROR), the body type (BODY_TYPE); for ip/cp/kup:
// exactly one CertResponse with status accepted or grantedWithMods (REJECTED), holding a
// certificate (NO_CERT) whose SubjectPublicKeyInfo equals |e->spki| byte for byte
// (WRONG_KEY, skipped when |e->spki| is empty); for genp: one InfoTypeAndValue with a value
// (NO_CERT); for rp: exactly one PKIStatusInfo (BODY_TYPE), accepted or grantedWithMods
// (REJECTED). Protection is not checked here (see bench_verify_*). Thread: any.
bench_fail bench_check_cmp(cm_arena *arena, cmp_msg *out, const bench_expect *e, cm_span body);

// bench_check_nested checks the nested answer |body| to a batch (RFC 9810 §5.1.3.4) as
// bench_check_cmp checks a single one, in the same order: it parses (NOT_CMP; the inner
// messages only delimited, each a whole PKIMessage element in out->body.u.nested.ders, not
// parsed), transactionID and recipNonce of the nested message (TRANSACTION_ID, RECIP_NONCE),
// an error body (CMP_ERROR), a nested body (BODY_TYPE) of exactly |num| messages (BODY_TYPE).
// Each inner answer is then the caller's to check with bench_check_cmp. Thread: any.
bench_fail bench_check_nested(cm_arena *arena, cmp_msg *out, const bench_expect *e, cm_span body,
                              size_t num);

// bench_check_response is bench_check_http then bench_check_cmp on |h->body|.
bench_fail bench_check_response(cm_arena *arena, cmp_msg *out, const bench_expect *e,
                                const bench_http_rsp *h);

// =============================================================================================
// The certmint-bench program (bench/certmint_bench*.c; not in the bench_check library): the
// state its files share. Thread: the preparation runs on several threads (each writing its own
// slice of the requests); the loop, the verification and the report run on the main thread.

// Sizes: transactionID and senderNonce octets, --connections and --threads caps, the
// HTTP request header's buffer.
#define BENCH_NONCE_LEN    16u
#define BENCH_MAX_CONNS    4096u
#define BENCH_MAX_THREADS  64u
#define BENCH_HTTP_HDR_MAX 1024u

typedef enum bench_flow {
    BENCH_FLOW_IR_IMPLICIT = 0,
    BENCH_FLOW_IR_CONFIRM,
    BENCH_FLOW_CR,
    BENCH_FLOW_P10CR,
    BENCH_FLOW_GENM,           // genm caCerts (RFC 9483 §4.3.1): no certificate is issued
    BENCH_FLOW_KUR,            // kur signed with a certificate enrolled (untimed) before the clock
    BENCH_FLOW_RR,             // rr of such a certificate, signed with it
    BENCH_FLOW_NESTED,         // --batch ir-implicit in one nested message signed by --ra-cert
    BENCH_FLOW_NESTED_CONFIRM, // the same without implicitConfirm, then their certConfs nested
    BENCH_FLOW_IR_CKG,         // ir without a key: central key generation (RFC 9483 §4.1.6), PWRI
} bench_flow;

#define BENCH_NUM_FLOWS     10u
#define BENCH_NUM_KEY_TYPES 4u

// bench_flow_names and bench_key_names spell the flows and key types as the options do
// ("ir-implicit", "ec-p256" ...), indexed by bench_flow and bench_key_type.
extern const char *const bench_flow_names[BENCH_NUM_FLOWS];
extern const char *const bench_key_names[BENCH_NUM_KEY_TYPES];

typedef enum bench_key_type {
    BENCH_KEY_EC_P256 = 0,
    BENCH_KEY_EC_P384,
    BENCH_KEY_RSA2048,
    BENCH_KEY_ED25519,
} bench_key_type;

// The options of one run. Thread: immutable after parsing.
typedef struct bench_opts {
    const char *url;
    char host[256];
    char port[16];
    char path[512];
    const char *secret_ref; // PBM: senderKID
    const char *secret;
    bool pbmac1;
    const char *mac_name;                     // --mac: a key-based MAC (the secret is a hex key)
    int key_mac;                              // its crmf_alg_id; 0: PBM or PBMAC1
    uint8_t mac_key[CMP_PROTECT_MAX_KEY_LEN]; // --secret decoded from hex when --mac is given
    size_t mac_key_len;
    uint64_t pbm_iterations;
    const char *cert_path; // signature protection
    const char *key_path;
    bench_key_type key_type;
    size_t key_pool; // 0: a fresh key per request
    bench_flow flow;
    size_t count;
    double duration;
    size_t prepare; // requests prepared for a --duration run
    size_t connections;
    size_t warmup;
    const char *subject_template;
    bool reconnect;
    bool coap;         // --coap: CMP over CoAP (RFC 9482)
    bool coap_url;     // the --url is coap://
    unsigned coap_szx; // --coap-block: 16 << coap_szx bytes (default 6: 1024)
    const char *json_path;
    const char *serials_path; // --save-serials: one line per certificate received
    bool no_key_check;
    const char *ca_path;
    bool verify;
    double timeout;
    size_t threads;
    bool limit;
    const char *token_uri;
    bool quiet;    // --quiet: no progress line
    bool progress; // a progress line on stderr: a terminal and not --quiet
    // TLS (--tls, or an https:// --url): the server is verified against --tls-ca (not at all
    // without it), a client certificate is sent with --tls-cert/--tls-key; with --reconnect
    // sessions are resumed unless --tls-no-resume.
    bool tls;
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    bool tls_no_resume;
    // Nested messages (--flow nested, nested-confirm): |batch| inner requests in each, signed by
    // the RA's --ra-cert/--ra-key; every transaction count and rate is of inner requests.
    size_t batch; // 1 for the other flows
    const char *ra_cert_path;
    const char *ra_key_path;
    // --source ADDR: every socket binds this numeric address before it connects (a load from
    // another loopback address than an attacker's, so per-address limits tell them apart).
    const char *source;
} bench_opts;

// bench_flow_is_nested reports whether |f| sends nested batches.
static inline bool bench_flow_is_nested(bench_flow f)
{
    return f == BENCH_FLOW_NESTED || f == BENCH_FLOW_NESTED_CONFIRM;
}

// One device key of the pool. Thread: immutable after preparation.
typedef struct bench_key {
    EVP_PKEY *pkey;
    uint8_t *spki; // SubjectPublicKeyInfo DER (i2d_PUBKEY)
    size_t spki_len;
    cm_span spki_body; // its content octets (the template's [6])
} bench_key;

// One prepared transaction. Thread: written by one preparation thread, then read by the loop.
typedef struct bench_req {
    uint8_t *http; // the whole HTTP request (header and PKIMessage)
    size_t http_len;
    uint8_t tid[BENCH_NONCE_LEN];
    uint8_t nonce[BENCH_NONCE_LEN];
    uint8_t *sender; // the sender Name DER used in the header (certConf reuses it)
    size_t sender_len;
    size_t key; // index into the key pool: the requested key
    // kur/rr: the certificate enrolled for this request before the clock (DER, heap) and the
    // pool key it certifies, which signs the kur/rr.
    uint8_t *cert;
    size_t cert_len;
    size_t cert_key;
    // Nested flows: the inner PKIMessage (DER, heap; |http| is NULL then), and for
    // nested-confirm the senderNonces of its ip and of its certConf.
    uint8_t *inner;
    size_t inner_len;
    uint8_t ip_nonce[BENCH_NONCE_LEN];
    uint8_t conf_nonce[BENCH_NONCE_LEN];
} bench_req;

// One prepared nested message (nested flows): bench_opts.batch inner requests. Thread: as
// bench_req.
typedef struct bench_batch {
    uint8_t *http; // the whole HTTP request
    size_t http_len;
    uint8_t tid[BENCH_NONCE_LEN];
    uint8_t nonce[BENCH_NONCE_LEN];
} bench_batch;

// A signature-protection signer: the --cert/--key pair, or an enrolled certificate (kur/rr).
typedef struct bench_signer {
    EVP_PKEY *key;
    crmf_sig_alg alg;
    cm_span alg_der;
    cm_span cert; // DER, put in extraCerts
} bench_signer;

// Everything shared by the preparation threads, the loop and the verification.
// Thread: immutable while threads run, except each thread's own slice of |reqs|/|macs|.
typedef struct bench_ctx {
    const bench_opts *o;
    bench_flow flow; // the flow being prepared and run: ir-implicit while enrolling for kur/rr
    cmp_protect_ctx *prot;
    bench_key *keys;
    size_t num_keys;
    size_t num_all_keys; // num_keys, twice as many for kur (each update certifies a new key)
    bench_req *reqs;
    cmp_mac_key *macs; // per request (PBM/PBMAC1); NULL for signature protection
    size_t num_reqs;
    // signature protection (--cert/--key)
    EVP_PKEY *prot_key;
    crmf_sig_alg prot_alg;
    cm_span prot_alg_der;
    cm_span prot_cert;   // DER
    cm_span prot_sender; // the certificate's subject Name DER
    // --ca
    X509 *ca;
    cm_span ca_der;
    cm_span ca_subject;
    // preparation progress: items done by the threads of the current step (atomic)
    size_t prep_done;
    // Nested flows: the batches (request i is inner request i % batch of batch i / batch) and
    // the RA that signs them (--ra-cert/--ra-key).
    bench_batch *batches;
    size_t num_batches;
    bench_signer ra;
    cm_span ra_sender; // the RA certificate's subject
    EVP_PKEY *ra_key_owned;
} bench_ctx;

// One client connection. Thread: loop-confined.
typedef struct bench_conn {
    int fd;          // -1 when closed
    uint32_t gen;    // bumped per socket, so stale epoll events are dropped
    bool busy;       // a transaction is in flight
    bool connecting; // non-blocking connect pending
    int phase;       // 0: the request, 1: its certConf, 2: polling for the request's answer
    bool retried;    // the request was already resent once on a new connection
    unsigned used;   // responses received on this socket
    size_t req;
    const uint8_t *out;
    size_t out_len;
    size_t out_off;
    uint8_t *in;
    size_t in_len;
    size_t in_cap;
    uint8_t *conf; // the HTTP certConf (ir-confirm), heap
    size_t conf_len;
    uint8_t conf_nonce[BENCH_NONCE_LEN];
    uint8_t ip_nonce[BENCH_NONCE_LEN]; // the ip's senderNonce
    uint64_t t0;
    // CoAP (--coap): the transfer in flight on this connection's UDP socket.
    cm_span coap_body;      // the request's DER (in the prepared HTTP request or c->conf)
    uint32_t coap_num1;     // the Block1 being sent
    uint32_t coap_num2;     // the Block2 being fetched
    uint16_t coap_mid;      // of the Confirmable request in flight
    uint16_t coap_sep_mid;  // of the last separate response acknowledged
    bool coap_acked;        // the request was acknowledged (Empty ACK): a separate response comes
    uint8_t coap_out[1400]; // the request in flight, for retransmission
    size_t coap_out_len;
    uint64_t coap_sent_at, coap_rto;
    unsigned coap_tries;
    uint8_t *coap_rsp; // the response, reassembled from Block2 slices
    size_t coap_rsp_len, coap_rsp_cap;
    SSL *ssl;                    // --tls: the connection's TLS state, NULL when closed
    struct ssl_session_st *sess; // --tls: the session of this slot's last connection (resumed next)
    bool handshaking;            // --tls: the handshake is in progress
    uint8_t conf_tid[BENCH_NONCE_LEN]; // nested-confirm: the certConf batch's transactionID
    bench_fail *nested_fails;          // nested-confirm: the ips' outcomes (heap, --batch)
    // Delayed delivery (phase 2): the request was answered `waiting`; a pollReq goes at
    // poll_at (on a new connection) until the answer is the certificate or a rejection.
    uint8_t *poll; // the HTTP pollReq, heap
    size_t poll_len;
    uint8_t poll_nonce[BENCH_NONCE_LEN];
    uint64_t poll_at; // bench_now() time of the next pollReq; 0: none scheduled
    bool waited;      // this transaction was answered `waiting` (its latency: lat_polled)
} bench_conn;

// A run's state and counters. Thread: loop-confined.
typedef struct bench_run {
    bench_ctx *ctx;
    const bench_opts *o;
    struct addrinfo *ai;
    int epfd;
    bench_conn *conns;
    size_t next;  // next request to send
    size_t limit; // requests this phase may start
    size_t busy;  // connections with a transaction in flight
    uint64_t stop_at;
    bool stopping;
    cm_arena arena; // response parsing, reset per response
    cmp_digests digests;
    crmf_crypto crypto;
    // results (reset after warm-up)
    uint64_t fails[BENCH_FAIL_COUNT];
    uint64_t *lat; // ns per successful enrolment answered directly (all of them at the end)
    size_t num_lat;
    uint64_t *lat_polled; // ns per successful enrolment that polled (delayed delivery)
    size_t num_polled;
    uint64_t ok_in_window; // successes completed before stop_at (--duration)
    uint64_t unfinished;   // in flight when the grace period after stop_at ended
    size_t reconnects;
    uint8_t **rsp; // --verify: response DER per request (heap), NULL otherwise
    size_t *rsp_len;
    uint8_t **conf_rsp; // --verify with ir-confirm: the pkiConf per request, NULL otherwise
    size_t *conf_rsp_len;
    bool capture;      // keep each issued certificate in its bench_req (enrolling for kur/rr)
    SSL_CTX *tls_ctx;  // --tls
    uint64_t tls_full; // handshakes, full and resumed (reset after warm-up)
    uint64_t tls_resumed;
    FILE *serials;    // --save-serials, NULL otherwise
    uint64_t polls;   // pollReqs sent (delayed delivery)
    uint64_t waiting; // transactions answered `waiting` at least once
    size_t sleeping;  // connections waiting for their poll_at
} bench_run;

// The latency histogram of --json: BENCH_HIST_PER_DECADE log-spaced buckets per decade above
// BENCH_HIST_MIN_US microseconds (the R10 series: 12.5, 16, 20, 25, 31.5, 40, 50, 63, 80, 100
// us, then 125 ...); bucket i counts latencies at most bench_hist_bound_us(i) and above the
// previous bound (the first also counts everything below, the last everything above).
#define BENCH_HIST_MIN_US     10.0
#define BENCH_HIST_PER_DECADE 10
#define BENCH_HIST_BUCKETS    70 // 10 us .. 100 s

typedef struct bench_result {
    double seconds;
    double cpu;
    double prep_seconds;
    uint64_t ok;
    uint64_t failed;
    double eps;
    double p50, p90, p99, max;
    double direct_p50, direct_p99; // of the enrolments answered directly
    double polled_p50, polled_p99; // of those answered `waiting` that polled
    bool ran_out;                  // --duration ended early: every prepared request was used
    uint64_t hist[BENCH_HIST_BUCKETS];
} bench_result;

// ---------------------------------------------------------------------------------------------
// certmint_bench.c

// bench_die prints "certmint-bench: |what|" and exits with status 2 (set-up failures only;
// failures of the server under test are counted, never fatal).
_Noreturn void bench_die(const char *what);

// bench_now is the monotonic clock in nanoseconds.
uint64_t bench_now(void);

// bench_bind_source binds |fd| (of address family |family|) to --source with port 0 (the
// port is picked at connect: IP_BIND_ADDRESS_NO_PORT); true without --source. False when the
// address is not of |family| or the bind fails.
bool bench_bind_source(const bench_opts *o, int fd, int family);

// ---------------------------------------------------------------------------------------------
// certmint_bench_msg.c: the pieces of every message.

// bench_sig_alg_for picks the signature algorithm a device key of |key|'s type signs with:
// RSA PKCS#1 v1.5 with SHA-256, Ed25519, Ed448, ECDSA with SHA-384 above 256 bits, else SHA-256.
// bench_mac_secret returns the shared secret of --secret: the --mac key, or the password;
// bench_mac_kind says which. Thread: any.
cm_span bench_mac_secret(const bench_opts *o);
cmp_secret_kind bench_mac_kind(const bench_opts *o);

crmf_sig_alg bench_sig_alg_for(const EVP_PKEY *key);

// bench_alg_der marshals |a| into a malloc'ed buffer (free the span's p); dies on failure.
cm_span bench_alg_der(const crmf_sig_alg *a);

// bench_keygen generates an in-memory key of type |t|; NULL on failure.
EVP_PKEY *bench_keygen(bench_key_type t);

// bench_put_http writes the HTTP POST of |der| to --url (Connection: close with --reconnect)
// into a new malloc'ed buffer of |*out_len| bytes; NULL when it does not fit or on no memory.
uint8_t *bench_put_http(const bench_opts *o, size_t *out_len, cm_span der);

// bench_protect_finish adds the protection of |w| — the MAC with |mac| when non-NULL, else
// |signer|'s signature (its certificate in extraCerts) — and closes the message. Scratch
// memory comes from |arena|. False on any failure.
bool bench_protect_finish(bench_ctx *ctx, crmf_crypto *c, cm_arena *arena, cmp_msg_writer *w,
                          const cmp_mac_key *mac, const bench_signer *signer);

// bench_default_signer is the --cert/--key signer of |ctx| (empty with MAC protection).
bench_signer bench_default_signer(const bench_ctx *ctx);

// bench_cert_ski copies the subjectKeyIdentifier of certificate |cert| (DER) into |out| and
// returns its length, 0 when it has none: the senderKID of a signed request (RFC 9483 §3.1).
size_t bench_cert_ski(cm_span cert, uint8_t *out, size_t cap);

// bench_header_init fills the header fields every request of |ctx| shares: pvno 2, |sender|,
// the CA as recipient (NULL-DN without --ca), messageTime now, |prot_alg|, and senderKID with
// MAC protection. The caller sets transactionID, the nonces and generalInfo.
void bench_header_init(const bench_ctx *ctx, cmp_header_fields *h, cm_span sender,
                       cm_span prot_alg);

// ---------------------------------------------------------------------------------------------
// certmint_bench_prepare.c

// bench_ctx_setup loads --ca and --cert/--key, generates the key pool and prepares |num|
// requests on o->threads threads (kur/rr: the ir-implicit enrolments they need first). Dies on
// any failure. |o| must outlive |ctx|.
void bench_ctx_setup(bench_ctx *ctx, const bench_opts *o, size_t num);

// bench_ctx_reprepare prepares the kur/rr requests of |ctx| once each request holds its
// enrolled certificate: new transactionIDs and nonces, signed with the certificate's key.
void bench_ctx_reprepare(bench_ctx *ctx);

// bench_ctx_cleanup frees everything bench_ctx_setup made.
void bench_ctx_cleanup(bench_ctx *ctx);

// ---------------------------------------------------------------------------------------------
// certmint_bench_run.c

// bench_conn_close closes |c|'s socket (if open) and forgets its partial input.
void bench_conn_close(bench_conn *c);

// bench_loop runs until requests up to |limit| are all answered, or |stop_at| (bench_now
// time; 0: none) passes and the transactions in flight are answered (after a grace period of
// at most 2 s those still open count as unfinished). With |progress| a line on stderr is
// refreshed every second: the time, transactions done, the rate and p99 latency of the last
// second, and the errors.
void bench_loop(bench_run *run, size_t limit, uint64_t stop_at, bool progress);

// bench_on_response handles one complete response |h| on |c| (CoAP answers are handed over as
// a 200 application/pkixcmp response).
void bench_on_response(bench_run *run, bench_conn *c, const bench_http_rsp *h);

// bench_save_serial writes the serial number of the certificate |der| (received: the response
// was checked) to --save-serials: the serialNumber INTEGER's content octets in upper-case hex,
// as the store keeps them (a leading 00 included). Dies when |der| is not a certificate.
void bench_save_serial(bench_run *run, cm_span der);

// bench_finish_n ends the transaction on |c| with outcome |f[i]| for each of its |n| requests
// (one, or the inner requests of a batch): counted, each success with the transaction's
// latency; the connection closes unless |keep_alive| and all succeeded.
void bench_finish_n(bench_run *run, bench_conn *c, const bench_fail *f, size_t n, bool keep_alive);

// bench_conn_transmit sends |c|'s current message (c->out), opening a socket first when needed.
void bench_conn_transmit(bench_run *run, bench_conn *c);

// bench_keep copies a response body for --verify into |*slot| (NULL when out of memory).
void bench_keep(uint8_t **slot, size_t *len, cm_span body);

// ---------------------------------------------------------------------------------------------
// certmint_bench_nested.c: nested batches (--flow nested, nested-confirm).

// bench_nested_setup loads --ra-cert/--ra-key into |ctx| (dies on failure).
void bench_nested_setup(bench_ctx *ctx);

// bench_nested_prepare wraps the prepared inner requests of |ctx| into its batches: a nested
// message each (a fresh transactionID and senderNonce, the CA as recipient) signed by the RA.
void bench_nested_prepare(bench_ctx *ctx);

// bench_nested_cleanup frees what the two above made.
void bench_nested_cleanup(bench_ctx *ctx);

// bench_nested_on_response checks the nested answer |h| on |c| and each inner answer in it as
// a single answer is checked; for nested-confirm, after the ips it sends the batch's certConfs
// nested (each protected like its ir) and then checks their pkiconfs.
void bench_nested_on_response(bench_run *run, bench_conn *c, const bench_http_rsp *h);

// ---------------------------------------------------------------------------------------------
// certmint_bench_coap.c: the CoAP client (RFC 7252, RFC 7959 block-wise, RFC 9482).

// bench_coap_open opens |c|'s UDP socket, connected to the --url address, in the epoll set.
bool bench_coap_open(bench_run *run, bench_conn *c);

// bench_coap_start sends the PKIMessage that |c->out| carries (an HTTP request: its body) as a
// Confirmable POST, in Block1 blocks when it is longer than one block.
void bench_coap_start(bench_run *run, bench_conn *c);

// bench_coap_on_readable reads the datagrams waiting on |c|: ACKs, 2.31 Continue, separate
// responses (acknowledged), Block2 slices (the next one asked for); the whole response goes to
// bench_on_response.
void bench_coap_on_readable(bench_run *run, bench_conn *c);

// bench_coap_tick retransmits |c|'s request when no ACK came within its timeout (RFC 7252
// §4.2: 2 s, doubled each time, 4 times), then fails the transaction.
void bench_coap_tick(bench_run *run, bench_conn *c, uint64_t now);

// bench_coap_cleanup frees |c|'s CoAP buffers.
void bench_coap_cleanup(bench_conn *c);

// ---------------------------------------------------------------------------------------------
// certmint_bench_tls.c: the transport under the loop, plain or TLS.

// What a transport step found.
typedef enum bench_io {
    BENCH_IO_DONE = 0,       // done (bytes moved, or the handshake finished)
    BENCH_IO_WANT_READ = 1,  // wait until the socket is readable
    BENCH_IO_WANT_WRITE = 2, // wait until the socket is writable
    BENCH_IO_EOF = 3,        // the peer closed
    BENCH_IO_ERROR = 4,      // failed
} bench_io;

// bench_tls_ctx_new makes the client context of |o| (TLS 1.2 and 1.3, ALPN http/1.1,
// --tls-ca, --tls-cert/--tls-key); dies on failure.
SSL_CTX *bench_tls_ctx_new(const bench_opts *o);

// bench_tls_start begins TLS on |c|'s connected socket (resuming the slot's session unless
// --tls-no-resume); false on failure.
bool bench_tls_start(bench_run *run, bench_conn *c);

// bench_tls_handshake continues |c|'s handshake; DONE once finished (counted as full or
// resumed in |run|).
bench_io bench_tls_handshake(bench_run *run, bench_conn *c);

// bench_io_send writes up to |n| bytes of |p| (|*out_sent| of them), bench_io_recv reads up to
// |cap| into |p| (|*out_got|): over TLS when |c| has it, else the socket.
bench_io bench_io_send(bench_conn *c, const uint8_t *p, size_t n, size_t *out_sent);
bench_io bench_io_recv(bench_conn *c, uint8_t *p, size_t cap, size_t *out_got);

// bench_tls_close ends |c|'s TLS (a close_notify, the session kept for the slot); a no-op
// without TLS.
void bench_tls_close(bench_conn *c);

// ---------------------------------------------------------------------------------------------
// certmint_bench_verify.c

// bench_check_ckg checks the ip |m| of an ir-ckg request (central key generation): its
// privateKey is an EnvelopedData that opens with the --secret (password recipient, PBKDF2
// with 1000..10000000 iterations), holding a SignedData over an AsymmetricKeyPackage whose
// private key is the certificate's. BENCH_FAIL_PRIVATE_KEY otherwise. The decrypted key is
// wiped and freed. (The KGA's signature is not verified here.) Thread: the loop's.
bench_fail bench_check_ckg(bench_run *run, const cmp_msg *m);

// bench_verify checks the kept responses of requests [first, end) (--verify): protection, and
// the certificate's signature against --ca; ir-confirm's pkiConf must be protected too. Each
// failure moves one count from BENCH_OK to its bench_fail.
void bench_verify(bench_run *run, size_t first, size_t end);

// ---------------------------------------------------------------------------------------------
// certmint_bench_report.c

// bench_latency_summary sorts the |num_lat| latencies (ns) of |lat| and sets |r|'s p50, p90,
// p99 and max in milliseconds (0 when there are none).
void bench_latency_summary(bench_result *r, uint64_t *lat, size_t num_lat);

// bench_hist_bound_us is the upper bound of histogram bucket |i| in microseconds.
double bench_hist_bound_us(size_t i);

// bench_percentile_ms returns the |pct| percentile (0..100, as bench_latency_summary picks
// them) of the |num| latencies (ns) at |lat| in milliseconds, sorting a copy (|lat| is left as
// it is); 0 when there are none or no memory.
double bench_percentile_ms(const uint64_t *lat, size_t num, double pct);

// bench_report prints the text report of |run| and |r| to stdout.
void bench_report(const bench_run *run, const bench_result *r);

// bench_write_json writes the JSON record of |run| and |r| to --json ('-': stdout); dies when
// the file cannot be written.
void bench_write_json(const bench_run *run, const bench_result *r);

// ---------------------------------------------------------------------------------------------
// certmint_bench_limit.c

// bench_limit_main runs --limit: the crypto of one ir-implicit PBM enrolment in process, each
// step timed alone, then the enrolment rate on o->threads threads with the certificate signed
// by --token-uri's key (when given) and by an in-memory key. Returns the exit code.
int bench_limit_main(const bench_opts *o);

#endif // CERTMINT_BENCH_CERTMINT_BENCH_H
