// certmint-bench's transport: plain TCP, or TLS (--tls, or an https:// --url) with OpenSSL on
// the same non-blocking sockets. With --reconnect each connection slot keeps the session of
// its last connection and resumes it (a session ticket) unless --tls-no-resume, so a run
// measures either resumed or full handshakes.
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench/certmint_bench.h"

SSL_CTX *bench_tls_ctx_new(const bench_opts *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        bench_die("cannot make a TLS context");
    }
    // A request is written in pieces as the socket takes them.
    (void)SSL_CTX_set_mode(ctx,
                           SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->tls_ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, o->tls_ca, NULL) != 1) {
            bench_die("cannot read --tls-ca");
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (o->tls_cert != NULL &&
        (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        bench_die("cannot use --tls-cert/--tls-key");
    }
    static const unsigned char k_alpn[] = "\x08http/1.1";
    if (SSL_CTX_set_alpn_protos(ctx, k_alpn, sizeof(k_alpn) - 1) != 0) {
        bench_die("cannot set ALPN");
    }
    return ctx;
}

bool bench_tls_start(bench_run *run, bench_conn *c)
{
    c->ssl = SSL_new(run->tls_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        ERR_clear_error();
        return false;
    }
    // The certificate must name the --url host (an IP address in its SAN for an address);
    // a name also goes out as SNI.
    const char *host = run->o->host;
    uint8_t addr[16];
    const bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    bool ok = true;
    if (run->o->tls_ca != NULL) {
        ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) == 1
                   : SSL_set1_host(c->ssl, host) == 1;
    }
    if (ok && !is_ip) {
        // SSL_set_tlsext_host_name is a macro that casts its name to void *: a copy keeps the
        // const host const (clang's -Wcast-qual in the tsan preset).
        char sni[256];
        const int n = snprintf(sni, sizeof(sni), "%s", host);
        ok = n > 0 && (size_t)n < sizeof(sni) && SSL_set_tlsext_host_name(c->ssl, sni) == 1;
    }
    if (!ok) {
        ERR_clear_error();
        return false;
    }
    if (c->sess != NULL && !run->o->tls_no_resume) {
        (void)SSL_set_session(c->ssl, c->sess);
    }
    SSL_set_connect_state(c->ssl);
    c->handshaking = true;
    return true;
}

// bench_tls_want maps an OpenSSL failure of |rc| to what the loop waits for.
static bench_io bench_tls_want(bench_conn *c, int rc)
{
    const int e = SSL_get_error(c->ssl, rc);
    ERR_clear_error();
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return BENCH_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return BENCH_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return BENCH_IO_EOF;
    case SSL_ERROR_SYSCALL:
        return errno == 0 || errno == ECONNRESET || errno == EPIPE ? BENCH_IO_EOF : BENCH_IO_ERROR;
    default:
        return BENCH_IO_ERROR;
    }
}

bench_io bench_tls_handshake(bench_run *run, bench_conn *c)
{
    const int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->handshaking = false;
        if (SSL_session_reused(c->ssl) == 1) {
            run->tls_resumed++;
        } else {
            run->tls_full++;
        }
        return BENCH_IO_DONE;
    }
    return bench_tls_want(c, rc);
}

bench_io bench_io_send(bench_conn *c, const uint8_t *p, size_t n, size_t *out_sent)
{
    *out_sent = 0;
    if (c->ssl != NULL) {
        const int rc = SSL_write_ex(c->ssl, p, n, out_sent);
        return rc == 1 ? BENCH_IO_DONE : bench_tls_want(c, rc);
    }
    for (;;) {
        const ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            *out_sent = (size_t)k;
            return BENCH_IO_DONE;
        }
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return BENCH_IO_WANT_WRITE;
        }
        return BENCH_IO_ERROR;
    }
}

bench_io bench_io_recv(bench_conn *c, uint8_t *p, size_t cap, size_t *out_got)
{
    *out_got = 0;
    if (c->ssl != NULL) {
        const int rc = SSL_read_ex(c->ssl, p, cap, out_got);
        return rc == 1 ? BENCH_IO_DONE : bench_tls_want(c, rc);
    }
    for (;;) {
        const ssize_t k = recv(c->fd, p, cap, 0);
        if (k > 0) {
            *out_got = (size_t)k;
            return BENCH_IO_DONE;
        }
        if (k == 0) {
            return BENCH_IO_EOF;
        }
        if (errno == EINTR) {
            continue;
        }
        return errno == EAGAIN || errno == EWOULDBLOCK ? BENCH_IO_WANT_READ : BENCH_IO_ERROR;
    }
}

void bench_tls_close(bench_conn *c)
{
    if (c->ssl == NULL) {
        return;
    }
    if (!c->handshaking && SSL_is_init_finished(c->ssl)) {
        // Keep the session for the next connection of this slot; a connection freed without
        // its close_notify would make it unresumable.
        SSL_SESSION *s = SSL_get1_session(c->ssl);
        (void)SSL_shutdown(c->ssl);
        if (s != NULL) {
            SSL_SESSION_free(c->sess);
            c->sess = s;
        }
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->handshaking = false;
    ERR_clear_error();
}
