// bench/certmint_bench.h: the parts of certmint-bench that tests link (the bench_check library):
// a minimal HTTP/1.1 response parser and the CMP response checker that classifies every
// response of a run as a success or one kind of failure.
//
// Thread: everything here is pure and reentrant; the caller owns every buffer.
#ifndef CERTMINT_BENCH_CERTMINT_BENCH_H
#define CERTMINT_BENCH_CERTMINT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/cmp/cmp.h"

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

// bench_check_response is bench_check_http then bench_check_cmp on |h->body|.
bench_fail bench_check_response(cm_arena *arena, cmp_msg *out, const bench_expect *e,
                                const bench_http_rsp *h);

#endif // CERTMINT_BENCH_CERTMINT_BENCH_H
