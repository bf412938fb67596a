// engine/net internals: what the loop (net_loop.c) calls of the TLS layer (net_tls.c). Only for
// engine/net/*.c and tests/engine/net.
//
// A net_tls_conn is one TLS connection's OpenSSL state over two memory BIOs: the loop writes
// the ciphertext it received into it (net_tls_conn_input), reads plaintext out of it
// (net_tls_conn_read), writes the application's plaintext into it (net_tls_conn_write), and
// takes the records to send out of it (net_tls_conn_pending, net_tls_conn_take) whenever no
// send of the connection is in the ring. Nothing here does I/O. Thread: loop-confined.
#ifndef CERTMINT_ENGINE_NET_NET_INTERNAL_H
#define CERTMINT_ENGINE_NET_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/net/net.h"

typedef struct net_tls_conn net_tls_conn;

// What net_tls_conn_input found.
typedef enum net_tls_status {
    NET_TLS_HANDSHAKING = 0, // the handshake goes on: more bytes from the peer are needed
    NET_TLS_OPEN = 1,        // the handshake is finished: read the plaintext
    NET_TLS_FAILED = 2,      // fatal: send what is pending (an alert), then close
} net_tls_status;

// What net_tls_conn_read found.
typedef enum net_tls_read {
    NET_TLS_READ_DATA = 0,   // plaintext bytes
    NET_TLS_READ_NONE = 1,   // no complete record: more bytes from the peer are needed
    NET_TLS_READ_CLOSED = 2, // the peer sent close_notify: it sends nothing more
    NET_TLS_READ_FAILED = 3, // fatal (a bad record): send what is pending, then close
} net_tls_read;

// net_tls_conn_new starts the server side of a TLS connection with |t|'s context; NULL when out
// of memory.
net_tls_conn *net_tls_conn_new(const net_tls *t);

// net_tls_conn_free releases |tc|; NULL is a no-op.
void net_tls_conn_free(net_tls_conn *tc);

// net_tls_conn_input adds |in| (ciphertext, copied) and, while the handshake is not finished,
// continues it; |*hs_ns| grows by the time its steps took. Returns the state after the call:
// once NET_TLS_OPEN it stays so (further input is read with net_tls_conn_read).
net_tls_status net_tls_conn_input(net_tls_conn *tc, cm_span in, uint64_t *hs_ns);

// net_tls_conn_read decrypts into |buf| (|cap| bytes, at most one record's 16 KiB is useful)
// and sets |*out_len| for NET_TLS_READ_DATA. Only after the handshake finished.
net_tls_read net_tls_conn_read(net_tls_conn *tc, uint8_t *buf, size_t cap, size_t *out_len);

// net_tls_conn_write encrypts |plain| whole into records waiting to be sent, followed by a
// close_notify alert with |close_notify|. False when the connection is not usable (its
// handshake unfinished, or failed).
bool net_tls_conn_write(net_tls_conn *tc, cm_span plain, bool close_notify);

// net_tls_conn_pending returns how many bytes of records wait to be sent.
size_t net_tls_conn_pending(const net_tls_conn *tc);

// net_tls_conn_take moves the first |len| (at most net_tls_conn_pending) waiting bytes into
// |buf|.
void net_tls_conn_take(net_tls_conn *tc, uint8_t *buf, size_t len);

// net_tls_conn_resumed reports whether the finished handshake resumed a session.
bool net_tls_conn_resumed(const net_tls_conn *tc);

// net_tls_conn_info fills |out| (net_conn_tls_info's contract) after the handshake finished.
void net_tls_conn_info(const net_tls_conn *tc, net_tls_info *out);

// net_tls_conn_why copies a short reason for the last failure (OpenSSL's reason text, e.g.
// "unsupported protocol") into |out| for a log line and clears the thread's error queue.
void net_tls_conn_why(char *out, size_t cap);

#endif // CERTMINT_ENGINE_NET_NET_INTERNAL_H
