// engine/http: the HTTP/1.1 request parser and response writer of CMP over HTTP (RFC 9811,
// which obsoletes RFC 6712; HTTP/1.1 framing per RFC 9112, semantics per RFC 9110).
//
// Pure code: no I/O, no locks, no heap. The parser works on bytes as they arrive (any split),
// keeps a partial request head in a caller-provided buffer and copies the request body, once,
// into the request's cm_arena. The writer formats responses into caller buffers. engine/net
// feeds it what recv() returned and sends what it writes.
//
// Decisions (each is tested in tests/engine/http/test_http.c):
// - Bodies: Content-Length, or "Transfer-Encoding: chunked" in HTTP/1.1 (RFC 9112 §7.1: Java
//   and Go clients stream with it). Any other transfer coding, or chunked with another coding,
//   is 501; Transfer-Encoding together with Content-Length 400 (§6.3: a smuggling attempt);
//   any Transfer-Encoding in an HTTP/1.0 request 400; a CMP POST with neither 411. All of these
//   close the connection.
// - Chunked decoding is strict: chunk-size is 1*HEXDIG (leading zeros allowed, at most 16
//   significant digits, else 400), then optional chunk extensions, which are ignored (optional
//   SP/HTAB, ';', then visible characters, SP and HTAB only), then CR LF; chunk data must be
//   followed by CR LF; the trailer section after the last chunk is read with the field-line
//   rules of the head and ignored. Malformed framing is HTTP_E_BAD_CHUNK (400, close). The
//   decoded body is bounded by max_body: each chunk size is checked when its line ends,
//   before any of its data is copied (413, close). The framing itself (every chunk line with
//   its CR LF, the CR LF after each chunk's data, the trailer section) counts against max_head
//   like a second head (431 beyond it), and trailer lines against max_fields (431). An error
//   status for a chunked request (404, 405, 415, ...) always closes: its body is not skipped.
// - Body copy: when the head is complete and the request is acceptable, the parser allocates
//   exactly Content-Length bytes from the cm_arena passed to http_parser_feed and copies body
//   bytes into it as they arrive (the one copy engine/net is allowed: its receive buffers can be
//   recycled right after each feed). A chunked body is decoded into one contiguous arena buffer
//   sized from the chunk sizes as they arrive; when a chunk does not fit, a buffer twice as
//   large (at most max_body) is taken from the arena and the bytes so far are moved into it,
//   so the arena holds at most about twice max_body for it. The target and Host value are copied
//   into the same arena, so a completed http_request never points into the caller's receive buffer
//   or the parser.
// - Strictness (request smuggling): CR LF line ends only (bare CR and bare LF are 400), no
//   obs-fold, no whitespace between a field name and its colon, field names are tokens, field
//   values have no control characters, Content-Length is 1*DIGIT below 2^63 (no lists, no sign),
//   repeated Content-Length fields must agree, HTTP/1.1 needs exactly one Host, a second
//   Content-Type is 400, the target is origin-form ("/path") or absolute-form ("http://host/path")
//   with only visible ASCII. No leading empty lines are skipped before the request line.
// - Query strings: ignored for routing ("/healthz?x=1" is /healthz), kept in http_request.target.
//   A '#' in the target is 400.
// - Methods: POST for the CMP paths, GET for /healthz, /metrics and /crl/NAME.crl; any other
//   method on those paths is 405 (with Allow), an unknown path is 404 whatever the method.
//   A GET with a non-zero Content-Length is 400 (close).
// - Content-Type of a CMP POST: application/pkixcmp or application/pkixcmp-poll (RFC 6712's
//   polling type, treated the same), case-insensitive, parameters after ';' ignored; otherwise
//   (or missing) 415.
// - Connection: HTTP/1.1 keeps alive unless "Connection: close"; HTTP/1.0 closes unless
//   "Connection: keep-alive". Versions other than 1.0 and 1.1 are 505.
// - After an error the caller answers http_feed.status and, when http_feed.close is set, closes
//   the connection once the answer is sent. Errors found in the request head's syntax or framing
//   always close. 404/405/415 on a request whose body can be skipped safely (a Content-Length
//   within the body limit, no Expect: 100-continue still waiting for the body, no
//   "Connection: close") keep the connection: the parser then discards that body silently and
//   goes on with the next request.
// - Expect: 100-continue on an acceptable request with a body sets http_feed.send_continue once,
//   when the head completes before the body has arrived; the caller then sends
//   http_continue_response(). Other expectations are ignored (RFC 9110 §10.1.1 allows it).
#ifndef CERTMINT_ENGINE_HTTP_HTTP_H
#define CERTMINT_ENGINE_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"

// ---------------------------------------------------------------------------------------------
// Result codes (detail range 0x300-0x3ff): the HTTP rows of engine/base/codes.def, with their
// explanations. http_status_of() maps each to the HTTP status to
// answer. Numbers are stable: append, never renumber.
enum {
#define CM_CODES_HTTP CM_CODE_ENUM
#include "engine/base/codes.def"
};

// http_status_of returns the HTTP status code to answer for |code|: the ones above map as their
// comments say, CM_E_NOMEM and CM_E_LIMIT (the request arena is full) to 503, anything else
// that is not CM_OK to 500, and CM_OK to 200. Thread: any; pure.
uint16_t http_status_of(uint32_t code);

// ---------------------------------------------------------------------------------------------
// Limits

// Defaults. The head is the request line, the field lines and the empty line, CR LFs included.
#define HTTP_DEFAULT_MAX_REQUEST_LINE 1024u
#define HTTP_DEFAULT_MAX_HEAD         8192u
#define HTTP_DEFAULT_MAX_FIELDS       32u
#define HTTP_DEFAULT_MAX_BODY         262144u // 256 KiB, CM_MAX_MSG_LEN in DESIGN.md
#define HTTP_MAX_NAME_LEN             64u     // CA and CRL names in paths

// http_limits bounds what one request may use. A request line of exactly max_request_line bytes
// (CR LF not counted) is accepted, one more is 414; a head of exactly max_head bytes (every CR
// LF counted) is accepted, one more is 431; exactly max_fields field lines are accepted, one
// more is 431; a Content-Length of exactly max_body is accepted, one more is 413.
// Thread: value type.
typedef struct http_limits {
    size_t max_request_line;
    size_t max_head; // must not exceed the head buffer given to http_parser_init
    uint32_t max_fields;
    uint64_t max_body;
} http_limits;

// http_limits_default returns the HTTP_DEFAULT_* limits. Thread: any.
http_limits http_limits_default(void);

// ---------------------------------------------------------------------------------------------
// Requests

typedef enum http_method {
    HTTP_METHOD_OTHER = 0, // a valid token we do not serve (405 where the path exists)
    HTTP_METHOD_GET = 1,
    HTTP_METHOD_POST = 2,
} http_method;

typedef enum http_route_kind {
    HTTP_ROUTE_NONE = 0, // not one of ours (404)
    HTTP_ROUTE_CMP = 1,  // POST /.well-known/cmp[/p/NAME][/OPERATION]
    HTTP_ROUTE_HEALTHZ = 2,
    HTTP_ROUTE_METRICS = 3,
    HTTP_ROUTE_CRL = 4, // GET /crl/NAME.crl
} http_route_kind;

// http_route is what a target names. |name| is the CA name for CMP (empty for the default CA)
// or the CRL name without ".crl"; |operation| is the RFC 9811 §3.3 / RFC 9483 operation label
// (e.g. "initialization"), empty when absent, accepted for any label made of name characters
// and not used for routing. Both point into the target given to http_route_classify.
// Thread: value type.
typedef struct http_route {
    http_route_kind kind;
    cm_span name;
    cm_span operation;
} http_route;

typedef enum http_content_type {
    HTTP_CONTENT_NONE = 0,   // no Content-Type field
    HTTP_CONTENT_OTHER = 1,  // something else
    HTTP_CONTENT_PKIXCMP = 2 // application/pkixcmp or application/pkixcmp-poll
} http_content_type;

// http_request is one complete, accepted request. Every span points into the cm_arena given to
// http_parser_feed, so it lives as long as that arena's contents.
// Thread: confined to the request's owner.
typedef struct http_request {
    http_method method;
    uint8_t version_minor; // 0 for HTTP/1.0, 1 for HTTP/1.1
    cm_span target;        // path and query as sent (absolute-form reduced to them)
    http_route route;      // classified from target (spans into target)
    cm_span host;          // the Host value, empty when absent (HTTP/1.0)
    http_content_type content_type;
    bool keep_alive;      // false: answer with http_response.close and close after it;
                          // true with version_minor 0: answer with keep_alive_10
    bool expect_continue; // "Expect: 100-continue" was present
    cm_span body;         // exactly Content-Length bytes, or the decoded chunked body (empty
                          // without a body; never NULL)
} http_request;

typedef enum http_feed_kind {
    HTTP_FEED_NEED_MORE = 0, // all bytes consumed, the request is not complete yet
    HTTP_FEED_REQUEST = 1,   // http_feed.request is complete
    HTTP_FEED_ERROR = 2,     // answer http_feed.status, close if http_feed.close
} http_feed_kind;

// http_feed is what one http_parser_feed call reports. Thread: value type.
typedef struct http_feed {
    http_feed_kind kind;
    size_t consumed;      // bytes of the input used; the rest belong to the next request
    bool send_continue;   // send "100 Continue" now (see the decisions above)
    cm_result error;      // HTTP_E_* (or CM_E_NOMEM/CM_E_LIMIT) when kind is ERROR
    uint16_t status;      // http_status_of(error.code) when kind is ERROR
    bool close;           // after an ERROR: the connection must be closed after the answer
    http_method allow;    // with HTTP_E_METHOD: the one method the path accepts (Allow:)
    http_request request; // when kind is REQUEST
} http_feed;

typedef enum http_parser_state {
    HTTP_PARSER_HEAD = 0,    // reading the request line and fields
    HTTP_PARSER_BODY = 1,    // copying Content-Length bytes
    HTTP_PARSER_SKIP = 2,    // discarding the body of a request answered with an error
    HTTP_PARSER_DEAD = 3,    // an error that closes the connection was reported
    HTTP_PARSER_CHUNKED = 4, // decoding a chunked body (and its trailer section)
} http_parser_state;

// http_parser parses the requests of one connection, one after another. It holds no pointers
// into fed data between calls: a partial head is copied into |head_buf|.
// Thread: confined to the connection's loop.
typedef struct http_parser {
    http_limits limits;
    uint8_t *head_buf; // caller-provided, |head_cap| >= limits.max_head
    size_t head_cap;
    http_parser_state state;
    // Head scanning (prefix-decided, so any split of the input gives the same answer).
    size_t head_len;    // bytes of the current head seen so far (buffered ones included)
    size_t buffered;    // bytes of the head copied into head_buf
    size_t line_len;    // bytes of the current line, CR LF excluded
    uint32_t num_lines; // completed lines (the request line is line 0)
    bool prev_cr;
    // Body.
    uint64_t body_left;
    uint8_t *body; // arena memory of the request being read
    http_request pending;
    // Chunked body (state CHUNKED): pending.body.len bytes decoded so far into |body|, which
    // has room for |body_cap|.
    size_t body_cap;
    uint8_t chunk_state;   // where in the chunk grammar the next byte falls (parser-private)
    uint64_t chunk_size;   // the size being read, then the bytes of the chunk still to come
    uint32_t chunk_digits; // hex digits of the size seen (significant ones in chunk_sig)
    uint32_t chunk_sig;
    size_t framing;         // bytes of chunk lines and trailer section so far (<= max_head)
    uint32_t trailer_lines; // trailer field lines so far (<= max_fields)
} http_parser;

// http_parser_init prepares |p| to read the first request of a connection. |head_buf| holds
// a partial request head across feeds; it must have at least |limits->max_head| bytes and
// outlive the parser (one per connection slot). Fails with CM_E_INVALID_ARG when it is too
// small or a limit is zero. Never allocates. Thread: any (then confined).
CM_RESULT http_parser_init(http_parser *p, const http_limits *limits, uint8_t *head_buf,
                           size_t head_cap);

// http_parser_feed parses |in|, bytes just received, and fills |out|. |arena| belongs to the
// request being read: the body, the target and the Host value are allocated from it, so pass
// the same arena until the request completes (or fails). It reports one request at most: when
// out->kind is HTTP_FEED_REQUEST, out->consumed may be less than |in.len| and the remaining bytes
// are the start of the next request (pipelining): feed them again, with the next request's
// arena. The parser resets itself after a request or a keep-alive error. Returns CM_OK for
// NEED_MORE and REQUEST, the HTTP_E_* code for ERROR (also in out->error), CM_E_NOMEM/CM_E_LIMIT
// when |arena| cannot hold the body (ERROR 503, close), and CM_E_STATE after an error that
// closed the connection, CM_E_INVALID_ARG for a NULL |p|, |out| or |arena|. Never reads beyond
// |in|, never keeps pointers into it.
// Thread: the parser's.
CM_RESULT http_parser_feed(http_parser *p, http_feed *out, cm_arena *arena, cm_span in);

// http_parser_idle reports whether |p| is between requests (no byte of a next request seen):
// where engine/net may apply its idle timeout rather than its header timeout.
bool http_parser_idle(const http_parser *p);

// http_route_classify classifies a request target (origin-form, query allowed) into |out|.
// Paths (RFC 9811 §3.3): /.well-known/cmp, /.well-known/cmp/OPERATION, /.well-known/cmp/p/NAME,
// /.well-known/cmp/p/NAME/OPERATION (a trailing '/' accepted on each), /healthz, /metrics,
// /crl/NAME.crl. NAME and OPERATION are 1..HTTP_MAX_NAME_LEN of [A-Za-z0-9._-], not starting
// with '.'; no percent-decoding is done, so an encoded name is not found. Returns CM_OK, or
// HTTP_E_NOT_FOUND with out->kind HTTP_ROUTE_NONE. Thread: any; pure.
CM_RESULT http_route_classify(http_route *out, cm_span target);

// ---------------------------------------------------------------------------------------------
// Responses

// http_response describes a response head. The body is sent by the caller after the head
// (two iovecs, no copy) or written together with http_response_write. Set no_cache on CMP
// and /metrics answers: CMP answers are one-off transaction replies (openssl cmp itself sends
// "Pragma: no-cache"). Thread: value type.
typedef struct http_response {
    uint16_t status;          // 100..599
    const char *content_type; // NUL-terminated, NULL for none (e.g. "application/pkixcmp")
    size_t body_len;          // the Content-Length sent (also sent when 0)
    bool close;               // add "Connection: close"
    bool keep_alive_10;       // add "Connection: keep-alive" (an HTTP/1.0 client that asked)
    bool no_cache;            // add "Cache-Control: no-cache" (see above)
    http_method allow;        // non-OTHER: add "Allow: GET" or "Allow: POST" (405)
    int64_t date;             // seconds since the epoch for the Date field, 0 for none
} http_response;

// HTTP_CONTENT_TYPE_PKIXCMP is the CMP media type (RFC 9811 §3.4).
#define HTTP_CONTENT_TYPE_PKIXCMP "application/pkixcmp"

// http_status_reason returns the reason phrase of |status| ("Not Found"), "Unknown" for codes
// it does not know. Static string. Thread: any.
const char *http_status_reason(uint16_t status);

// http_response_head_write writes the status line and the fields of |resp| (HTTP/1.1, CR LF,
// ending with the empty line) into |buf|. Sets |*out_len| to the bytes written. Fails with
// CM_E_BUFFER_TOO_SMALL when |cap| is too small (256 bytes always suffice for a content type of
// up to 64 characters) and CM_E_INVALID_ARG for a status outside 100..599 or a content type
// containing control characters. Thread: any; pure.
CM_RESULT http_response_head_write(uint8_t *buf, size_t cap, size_t *out_len,
                                   const http_response *resp);

// http_response_write writes the head of |resp| followed by |body| (resp->body_len is taken
// from |body|.len) into |buf|. Same failures as http_response_head_write. Thread: any; pure.
CM_RESULT http_response_write(uint8_t *buf, size_t cap, size_t *out_len, const http_response *resp,
                              cm_span body);

// http_error_write writes the whole answer to a failed feed: the status of |feed|, a short
// text/plain body ("404 Not Found\n"), "Connection: close" when feed->close, Allow for 405,
// and the Date |date| (0 for none). 512 bytes always suffice. Thread: any; pure.
CM_RESULT http_error_write(uint8_t *buf, size_t cap, size_t *out_len, const http_feed *feed,
                           int64_t date);

// http_continue_response returns the interim "HTTP/1.1 100 Continue" response (static bytes).
cm_span http_continue_response(void);

#endif // CERTMINT_ENGINE_HTTP_HTTP_H
