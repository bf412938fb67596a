// engine/front CoAP internals: CMP over CoAP (RFC 9482) for constrained devices.
//
// Two halves. The codec (front_coap_msg.c) is pure: it parses one datagram into a message
// (RFC 7252 §3), writes messages, reads Block1/Block2 option values (RFC 7959 §2.2), reassembles
// a Block1 request body under a size cap and cuts a response into Block2 slices. The server
// (front_coap.c) is the cm-coap thread: its UDP sockets, its peer table with the per-peer
// limits, message deduplication, separate responses with retransmission, and its own
// srv_worker whose HSM and store jobs come back through its own completion queue.
//
// Only for engine/front/*.c and tests/engine/front.
#ifndef CERTMINT_ENGINE_FRONT_FRONT_COAP_INTERNAL_H
#define CERTMINT_ENGINE_FRONT_FRONT_COAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"

typedef struct front_daemon front_daemon;

// The CoAP Content-Format of application/pkixcmp: 259, registered by RFC 9482 §5 (IANA "CoAP
// Content-Formats" registry, CoRE Parameters) and required for CMP messages by RFC 9482 §2.3.
#define FRONT_COAP_CT_PKIXCMP 259u
#define FRONT_COAP_CT_LINK    40u // application/link-format (RFC 6690), /.well-known/core

// Message types (RFC 7252 §3).
enum {
    FRONT_COAP_CON = 0,
    FRONT_COAP_NON = 1,
    FRONT_COAP_ACK = 2,
    FRONT_COAP_RST = 3,
};

// Codes: class << 5 | detail (RFC 7252 §12.1).
#define FRONT_COAP_CODE(c, d) ((uint8_t)(((c) << 5) | (d)))
enum {
    FRONT_COAP_EMPTY = 0,
    FRONT_COAP_GET = FRONT_COAP_CODE(0, 1),
    FRONT_COAP_POST = FRONT_COAP_CODE(0, 2),
    FRONT_COAP_CHANGED = FRONT_COAP_CODE(2, 4),
    FRONT_COAP_CONTENT = FRONT_COAP_CODE(2, 5),
    FRONT_COAP_CONTINUE = FRONT_COAP_CODE(2, 31), // RFC 7959 §2.9.1
    FRONT_COAP_BAD_REQUEST = FRONT_COAP_CODE(4, 0),
    FRONT_COAP_BAD_OPTION = FRONT_COAP_CODE(4, 2),
    FRONT_COAP_NOT_FOUND = FRONT_COAP_CODE(4, 4),
    FRONT_COAP_METHOD_NOT_ALLOWED = FRONT_COAP_CODE(4, 5),
    FRONT_COAP_INCOMPLETE = FRONT_COAP_CODE(4, 8), // RFC 7959 §2.9.2
    FRONT_COAP_TOO_LARGE = FRONT_COAP_CODE(4, 13),
    FRONT_COAP_UNSUPPORTED_FORMAT = FRONT_COAP_CODE(4, 15),
    FRONT_COAP_INTERNAL_ERROR = FRONT_COAP_CODE(5, 0),
    FRONT_COAP_UNAVAILABLE = FRONT_COAP_CODE(5, 3),
    FRONT_COAP_PROXYING_NOT_SUPPORTED = FRONT_COAP_CODE(5, 5),
};

// Option numbers (RFC 7252 §5.10, RFC 7959 §2.1 and §4, RFC 9175 §3.2).
enum {
    FRONT_COAP_OPT_IF_MATCH = 1,
    FRONT_COAP_OPT_URI_HOST = 3,
    FRONT_COAP_OPT_ETAG = 4,
    FRONT_COAP_OPT_URI_PORT = 7,
    FRONT_COAP_OPT_URI_PATH = 11,
    FRONT_COAP_OPT_CONTENT_FORMAT = 12,
    FRONT_COAP_OPT_MAX_AGE = 14,
    FRONT_COAP_OPT_URI_QUERY = 15,
    FRONT_COAP_OPT_ACCEPT = 17,
    FRONT_COAP_OPT_BLOCK2 = 23,
    FRONT_COAP_OPT_BLOCK1 = 27,
    FRONT_COAP_OPT_SIZE2 = 28,
    FRONT_COAP_OPT_PROXY_URI = 35,
    FRONT_COAP_OPT_PROXY_SCHEME = 39,
    FRONT_COAP_OPT_SIZE1 = 60,
    FRONT_COAP_OPT_REQUEST_TAG = 292,
};

#define FRONT_COAP_MAX_TOKEN   8u  // RFC 7252 §3: token lengths 9-15 are reserved
#define FRONT_COAP_MAX_OPTIONS 32u // more in one message is treated as a format error
#define FRONT_COAP_MAX_SZX     6u  // 1024-byte blocks; 7 is reserved on UDP (RFC 7959 §2.2)

// front_coap_opt is one option: its number and a view of its value in the datagram.
// Thread: value type.
typedef struct front_coap_opt {
    uint16_t num;
    cm_span val;
} front_coap_opt;

// front_coap_msg is one parsed message; spans point into the datagram. Thread: value type.
typedef struct front_coap_msg {
    uint8_t type; // FRONT_COAP_CON ..
    uint8_t code;
    uint16_t mid;
    uint8_t token_len;
    uint8_t token[FRONT_COAP_MAX_TOKEN];
    front_coap_opt opts[FRONT_COAP_MAX_OPTIONS]; // in ascending number order, as on the wire
    size_t num_opts;
    cm_span payload; // len 0 when none
} front_coap_msg;

// What front_coap_parse found: a message, something to drop silently (shorter than a header,
// or another protocol version: RFC 7252 §3), or a message format error (answered with a Reset
// when it was Confirmable, RFC 7252 §4.2; dropped otherwise, §4.3).
typedef enum front_coap_parsed {
    FRONT_COAP_PARSED_OK = 0,
    FRONT_COAP_PARSED_IGNORE = 1,
    FRONT_COAP_PARSED_FORMAT_ERROR = 2,
} front_coap_parsed;

// front_coap_parse parses the datagram |d| into |*out| (RFC 7252 §3: the 4-byte header, the
// token, delta-encoded options, the payload after the 0xFF marker). Format errors: a token
// length of 9-15, an option delta or length nibble of 15 outside the payload marker, an
// option number above 65535, an option or token running past the end, a payload marker with
// nothing after it, an Empty message (code 0.00) with anything after its header (§4.1), more
// than FRONT_COAP_MAX_OPTIONS options. Thread: any; pure.
front_coap_parsed front_coap_parse(front_coap_msg *out, cm_span d);

// front_coap_find returns the first option numbered |num| of |m| (NULL when absent);
// front_coap_find_next the next one after |prev| with the same number (repeated options such
// as Uri-Path). Thread: any; pure.
const front_coap_opt *front_coap_find(const front_coap_msg *m, uint16_t num);
const front_coap_opt *front_coap_find_next(const front_coap_msg *m, const front_coap_opt *prev);

// front_coap_opt_uint reads a uint option value (RFC 7252 §3.2: big-endian, leading zero bytes
// allowed, empty is 0) of at most 4 bytes into |*out|; false when longer. Thread: any; pure.
bool front_coap_opt_uint(const front_coap_opt *o, uint32_t *out);

// front_coap_critical is true for an option number the recipient must understand (RFC 7252
// §5.4.1: odd numbers). Thread: any; pure.
bool front_coap_critical(uint16_t num);

// front_coap_writer builds one message into caller memory: the header and token first, then
// options in ascending number order, then the payload. Errors are sticky (the der_builder
// model): a write past |cap| or an option out of order marks the writer failed and
// front_coap_writer_finish reports it. Thread: value type; the caller owns |buf|.
typedef struct front_coap_writer {
    uint8_t *buf;
    size_t cap, len;
    uint16_t last_opt;
    bool payload; // the payload was written: nothing may follow
    bool failed;
} front_coap_writer;

// front_coap_writer_init starts a message of |type|, |code|, |mid| and the |token_len| bytes of
// |token| (at most FRONT_COAP_MAX_TOKEN) in the |cap| bytes at |buf|.
void front_coap_writer_init(front_coap_writer *w, uint8_t *buf, size_t cap, uint8_t type,
                            uint8_t code, uint16_t mid, const uint8_t *token, size_t token_len);

// front_coap_put_opt appends option |num| with the |len| bytes at |val| (at most 65535 + 269),
// front_coap_put_uint one whose value is the shortest encoding of |v| (0 is empty).
void front_coap_put_opt(front_coap_writer *w, uint16_t num, const uint8_t *val, size_t len);
void front_coap_put_uint(front_coap_writer *w, uint16_t num, uint32_t v);

// front_coap_put_payload appends the payload marker and |p| (nothing when |p| is empty).
void front_coap_put_payload(front_coap_writer *w, cm_span p);

// front_coap_writer_finish returns true and the message's length in |*out_len| unless a write
// failed. Thread: any; pure.
bool front_coap_writer_finish(const front_coap_writer *w, size_t *out_len);

// front_coap_block is a Block1 or Block2 option's value (RFC 7959 §2.2). Thread: value type.
typedef struct front_coap_block {
    uint32_t num; // block number, at most 2^20 - 1
    bool more;    // M: more blocks follow (Block1) or are available (Block2)
    uint8_t szx;  // block size 2^(szx + 4), 0..6
} front_coap_block;

// front_coap_block_parse reads the value of |o| (0..3 bytes); false when longer, or for the
// reserved SZX 7 (RFC 7959 §2.2: BERT is for reliable transports only, RFC 8323).
// front_coap_block_value encodes |b| as an option value (the inverse). front_coap_block_size
// is the block size of |szx| in bytes. Thread: any; pure.
bool front_coap_block_parse(const front_coap_opt *o, front_coap_block *out);
uint32_t front_coap_block_value(const front_coap_block *b);
size_t front_coap_block_size(uint8_t szx);

// front_coap_asm reassembles one Block1 request body (RFC 7959 §2.5) into a heap buffer that
// grows block by block up to |max| bytes. Thread: owned by one transfer; _zero then _cleanup.
typedef struct front_coap_asm {
    uint8_t *buf;
    size_t len, cap;
    size_t max; // the body may not be longer (max_request_bytes)
} front_coap_asm;

// What front_coap_asm_add did with one block.
typedef enum front_coap_asm_result {
    FRONT_COAP_ASM_MORE = 0,      // appended; more blocks expected (answer 2.31 Continue)
    FRONT_COAP_ASM_DONE = 1,      // appended the last block: the body is complete
    FRONT_COAP_ASM_DUPLICATE = 2, // a block already received: nothing appended (2.31 again)
    FRONT_COAP_ASM_GAP = 3,       // a block after a missing one (4.08 Request Entity Incomplete)
    FRONT_COAP_ASM_TOO_LARGE = 4, // the body would pass |max| (4.13, with Size1 = max)
    FRONT_COAP_ASM_BAD_SIZE = 5,  // M set but the payload is not exactly one block (4.00)
    FRONT_COAP_ASM_NOMEM = 6,     // the buffer could not grow (5.03)
} front_coap_asm_result;

// front_coap_asm_zero makes |a| an empty reassembly of at most |max| bytes (no allocation).
// front_coap_asm_cleanup frees its buffer and zeroes it again; safe to repeat.
void front_coap_asm_zero(front_coap_asm *a, size_t max);
void front_coap_asm_cleanup(front_coap_asm *a);

// front_coap_asm_add adds the block |b| carrying |payload|. The block's place is
// b->num * block size: it must be where the body ends now (a block of another size than the
// previous is fine as long as it starts there: RFC 7959 §2.5 lets the client follow a smaller
// size the server asked for). A block that starts before the end is a duplicate, one that
// starts after it leaves a gap. |size1| (the Size1 option's value, 0 when absent) refuses a
// body announced above |max| at once. Thread: the transfer's owner.
front_coap_asm_result front_coap_asm_add(front_coap_asm *a, const front_coap_block *b,
                                         cm_span payload, uint32_t size1);

// front_coap_block2_slice sets |*out| to block |num| of size 2^(szx + 4) of |body| and
// |*more| to whether blocks follow it; false when the block starts past the end of |body|
// (block 0 of an empty body is the empty slice). Thread: any; pure.
bool front_coap_block2_slice(cm_span body, uint32_t num, uint8_t szx, cm_span *out, bool *more);

// front_coap_path_write joins the Uri-Path options of |m| into "/seg/seg" in |out| (at most
// |cap| bytes with the NUL) and returns its length; no Uri-Path is "/". False when a segment is
// empty or holds '/', '?', '#', '%' or a control byte (so the joined path names exactly the
// segments given), or when it does not fit. Thread: any; pure.
bool front_coap_path_write(const front_coap_msg *m, char *out, size_t cap, size_t *out_len);

// ---------------------------------------------------------------------------------------------
// The server (front_coap.c)

typedef struct front_coap front_coap;

// front_coap_counters: what /metrics reports of CoAP. Thread: relaxed atomics (the cm-coap
// thread writes, /metrics reads on the I/O loops).
typedef struct front_coap_counters {
    uint64_t received;     // datagrams read
    uint64_t garbage;      // not CoAP: too short, another version, format errors, truncated
    uint64_t rate_limited; // dropped: the peer was over coap_peer_rate
    uint64_t duplicates;   // retransmissions answered from the deduplication cache
    uint64_t refused[6];   // by FRONT_COAP_REFUSED_*
    uint64_t expired;      // block-wise transfers freed by coap_transfer_timeout
    uint64_t separate;     // separate responses (an Empty ACK first, then the response)
    uint64_t retransmits;  // Confirmable separate responses sent again
    uint64_t gave_up;      // ... never acknowledged after the last retransmission
    uint64_t transfers;    // gauge: transfers open now
    uint64_t peers;        // gauge: peers in the table now
} front_coap_counters;

// Why a request was refused before the CMP engine saw it (front_coap_counters.refused).
enum {
    FRONT_COAP_REFUSED_TOO_LARGE = 0,  // 4.13: the body passes max_request_bytes
    FRONT_COAP_REFUSED_TRANSFERS = 1,  // 5.03: coap_max_transfers_per_peer open already
    FRONT_COAP_REFUSED_BUSY = 2,       // 5.03: coap_max_requests in the engine already
    FRONT_COAP_REFUSED_PEERS = 3,      // dropped: the peer table is full of busy peers
    FRONT_COAP_REFUSED_INCOMPLETE = 4, // 4.08: a block after a missing one, or no transfer
    FRONT_COAP_REFUSED_BAD = 5,        // 4.00, 4.02, 4.04, 4.05, 4.15, 5.05: not a CMP request
    FRONT_COAP_REFUSED_COUNT = 6,
};

// front_coap_start opens the coap_listen sockets of |d| (which must be started), makes the
// thread's completion queue and srv_worker and starts the cm-coap thread. |*out| is NULL and
// CM_OK when no coap_listen is configured. On failure writes one line into |err| and returns
// the failing code (nothing is left running). Thread: the main thread.
CM_RESULT front_coap_start(front_coap **out, front_daemon *d, char *err, size_t err_cap);

// front_coap_port returns the UDP port listening socket |i| is bound to (0 past the last).
uint16_t front_coap_port(const front_coap *s, size_t i);

// front_coap_stop stops the thread gracefully (it stops reading, answers the requests whose
// jobs are out, then ends) and frees everything. NULL is a no-op. Thread: the main thread.
void front_coap_stop(front_coap *s);

// front_coap_metrics_write appends the CoAP families of |c| to |out| (|*used| of |cap| bytes
// taken; stops when full). Thread: any.
void front_coap_metrics_write(const front_coap_counters *c, char *out, size_t cap, size_t *used);

#endif // CERTMINT_ENGINE_FRONT_FRONT_COAP_INTERNAL_H
