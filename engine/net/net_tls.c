// The TLS layer (net.h, net_internal.h): the server context and its session ticket keys, and
// OpenSSL over memory BIOs per connection. Nothing here touches a socket: the loop moves the
// bytes (net_loop.c).
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "engine/net/net_internal.h"

// TLS 1.2 suites, in the server's order: forward secrecy (ECDHE) and AEAD only (RFC 9325 §4.2).
#define NET_TLS12_CIPHERS                                                                      \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define NET_TLS13_SUITES \
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define NET_TLS_GROUPS  "X25519:P-256:P-384"
#define NET_TLS_SID_CTX "certmint"

// One session ticket key (RFC 5077 §4's recommended construction, which OpenSSL's callback
// fills in: a 16-byte key name, AES-256-CBC and HMAC-SHA256).
typedef struct net_ticket_key {
    uint8_t name[16];
    uint8_t aes[32];
    uint8_t hmac[32];
    uint64_t born_ms; // 0: no key
} net_ticket_key;

// net_tls: the server context. Thread: immutable after net_tls_new, except the ticket keys.
struct net_tls {
    SSL_CTX *ctx;
    EVP_CIPHER *ticket_cipher;
    uint64_t ticket_ms; // key rotation period (0: no tickets)
    pthread_mutex_t mu;
    net_ticket_key cur;  // guarded_by(mu): seals new tickets
    net_ticket_key prev; // guarded_by(mu): still opens tickets (they are renewed)
};

// net_tls_conn: one connection. Thread: loop-confined.
struct net_tls_conn {
    SSL *ssl;
    BIO *rbio; // ciphertext from the peer (owned by ssl)
    BIO *wbio; // records to send (owned by ssl)
    bool open;
    bool failed;
    uint8_t *peer_der; // the client's certificate, once the handshake finished
    size_t peer_der_len;
};

static uint64_t net_tls_now_ms(void)
{
    return cm_time_mono_ns() / 1000000u;
}

__attribute__((format(printf, 3, 4))) static void net_tls_err(char *err, size_t cap,
                                                              const char *fmt, ...)
{
    if (cap == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

// net_tls_reason returns OpenSSL's reason for the last error on this thread (for messages),
// "-" when there is none; the queue is cleared.
static const char *net_tls_reason(void)
{
    const unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : "-";
}

// --- session tickets ---------------------------------------------------------------------------

static bool net_ticket_key_make(net_ticket_key *k, uint64_t now_ms)
{
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1) {
        ERR_clear_error();
        return false;
    }
    k->born_ms = now_ms != 0 ? now_ms : 1;
    return true;
}

static void net_ticket_key_wipe(net_ticket_key *k)
{
    OPENSSL_cleanse(k, sizeof(*k));
}

// net_tls_keys_rotate replaces the sealing key once its period is over; the one before is
// dropped once two periods passed since it was made (its tickets' lifetime has ended then).
// Called with t->mu held.
static void net_tls_keys_rotate(net_tls *t, uint64_t now)
{
    if (t->prev.born_ms != 0 && now - t->prev.born_ms >= 2 * t->ticket_ms) {
        net_ticket_key_wipe(&t->prev);
    }
    if (t->cur.born_ms != 0 && now - t->cur.born_ms < t->ticket_ms) {
        return;
    }
    net_ticket_key next;
    if (!net_ticket_key_make(&next, now)) {
        return; // keep sealing with the current key; retried at the next ticket
    }
    if (t->cur.born_ms != 0) {
        t->prev = t->cur;
    }
    t->cur = next;
    net_ticket_key_wipe(&next);
}

static bool net_ticket_mac_init(EVP_MAC_CTX *hctx, uint8_t key[32])
{
    char digest[] = "SHA256";
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

// net_tls_ticket_cb seals (enc = 1) or opens (enc = 0) a session ticket, as
// SSL_CTX_set_tlsext_ticket_key_evp_cb describes: 1 sealed or opened, 2 opened with the
// previous key (OpenSSL then issues a new ticket), 0 an unknown key (a full handshake
// follows), -1 an error.
static int net_tls_ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv,
                             EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    net_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    const uint64_t now = net_tls_now_ms();
    net_ticket_key k;
    int rc = 1;
    (void)pthread_mutex_lock(&t->mu);
    net_tls_keys_rotate(t, now);
    if (enc) {
        k = t->cur;
    } else if (t->cur.born_ms != 0 && memcmp(key_name, t->cur.name, 16) == 0) {
        k = t->cur;
    } else if (t->prev.born_ms != 0 && memcmp(key_name, t->prev.name, 16) == 0) {
        k = t->prev;
        rc = 2;
    } else {
        k.born_ms = 0;
    }
    (void)pthread_mutex_unlock(&t->mu);
    if (k.born_ms == 0) {
        rc = enc ? -1 : 0;
        goto out;
    }
    const int iv_len = EVP_CIPHER_get_iv_length(t->ticket_cipher);
    if (enc) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, iv_len) != 1 ||
            EVP_EncryptInit_ex(cctx, t->ticket_cipher, NULL, k.aes, iv) != 1 ||
            !net_ticket_mac_init(hctx, k.hmac)) {
            rc = -1;
        }
    } else if (EVP_DecryptInit_ex(cctx, t->ticket_cipher, NULL, k.aes, iv) != 1 ||
               !net_ticket_mac_init(hctx, k.hmac)) {
        rc = -1;
    }
out:
    net_ticket_key_wipe(&k);
    if (rc < 0) {
        ERR_clear_error();
    }
    return rc;
}

// --- the context ---------------------------------------------------------------------------

// net_tls_alpn_cb picks "http/1.1" from the client's list (RFC 7301 §3.2: no overlap is the
// fatal no_application_protocol alert).
static int net_tls_alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char k_ours[] = "\x08http/1.1";
    (void)s;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, k_ours, sizeof(k_ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

// net_tls_load_chain adds every certificate of |path| to the chain sent after the server's.
static bool net_tls_load_chain(SSL_CTX *ctx, const char *path, char *err, size_t err_cap)
{
    BIO *b = BIO_new_file(path, "r");
    if (b == NULL) {
        net_tls_err(err, err_cap, "tls_chain %s: cannot be read (%s)", path, strerror(errno));
        ERR_clear_error();
        return false;
    }
    size_t n = 0;
    bool ok = true;
    for (X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL); x != NULL;
         x = PEM_read_bio_X509(b, NULL, NULL, NULL)) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            ok = false;
            break;
        }
        n++;
    }
    ERR_clear_error(); // the loop ends on "no start line"
    BIO_free(b);
    if (!ok || n == 0) {
        net_tls_err(err, err_cap, "tls_chain %s: %s", path,
                    ok ? "holds no PEM certificate" : "a certificate cannot be added");
        return false;
    }
    return true;
}

static bool net_tls_load_identity(SSL_CTX *ctx, const net_tls_config *cfg, char *err,
                                  size_t err_cap)
{
    if (cfg->cert_path == NULL || cfg->key_path == NULL) {
        net_tls_err(err, err_cap, "tls_cert and tls_key are both required");
        return false;
    }
    if (SSL_CTX_use_certificate_file(ctx, cfg->cert_path, SSL_FILETYPE_PEM) != 1) {
        net_tls_err(err, err_cap, "tls_cert %s: not a usable PEM certificate (%s)", cfg->cert_path,
                    net_tls_reason());
        return false;
    }
    BIO *b = BIO_new_file(cfg->key_path, "r");
    EVP_PKEY *key = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (key == NULL) {
        net_tls_err(err, err_cap, "tls_key %s: not an unencrypted PEM private key (%s)",
                    cfg->key_path, net_tls_reason());
        return false;
    }
    const bool ok = SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    if (!ok) {
        net_tls_err(err, err_cap, "tls_key %s does not hold the public key of tls_cert %s",
                    cfg->key_path, cfg->cert_path);
        ERR_clear_error();
        return false;
    }
    return cfg->chain_path == NULL || net_tls_load_chain(ctx, cfg->chain_path, err, err_cap);
}

static bool net_tls_load_client_auth(SSL_CTX *ctx, const net_tls_config *cfg, char *err,
                                     size_t err_cap)
{
    if (cfg->client_auth == NET_TLS_CLIENT_AUTH_OFF) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return true;
    }
    if (cfg->client_ca_path == NULL) {
        net_tls_err(err, err_cap, "tls_client_auth needs tls_client_ca");
        return false;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca_path);
    if (names == NULL || SSL_CTX_load_verify_locations(ctx, cfg->client_ca_path, NULL) != 1) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        net_tls_err(err, err_cap, "tls_client_ca %s: holds no usable PEM certificate (%s)",
                    cfg->client_ca_path, net_tls_reason());
        return false;
    }
    SSL_CTX_set_client_CA_list(ctx, names); // takes |names|
    int mode = SSL_VERIFY_PEER;
    if (cfg->client_auth == NET_TLS_CLIENT_AUTH_REQUIRED) {
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_CTX_set_verify(ctx, mode, NULL);
    SSL_CTX_set_verify_depth(ctx, 8);
    return true;
}

void net_tls_free(net_tls *t)
{
    if (t == NULL) {
        return;
    }
    SSL_CTX_free(t->ctx);
    EVP_CIPHER_free(t->ticket_cipher);
    net_ticket_key_wipe(&t->cur);
    net_ticket_key_wipe(&t->prev);
    (void)pthread_mutex_destroy(&t->mu);
    free(t);
}

cm_result net_tls_new(net_tls **out, char *err, size_t err_cap, const net_tls_config *cfg)
{
    *out = NULL;
    net_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        net_tls_err(err, err_cap, "out of memory");
        return cm_result_make(CM_E_NOMEM);
    }
    (void)pthread_mutex_init(&t->mu, NULL);
    t->ticket_ms = (uint64_t)cfg->ticket_lifetime_s * 1000u;
    t->ctx = SSL_CTX_new(TLS_server_method());
    t->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    SSL_CTX *ctx = t->ctx;
    if (ctx == NULL || t->ticket_cipher == NULL) {
        net_tls_err(err, err_cap, "cannot make a TLS context (%s)", net_tls_reason());
        goto fail;
    }
    SSL_CTX_set_app_data(ctx, t);
    uint64_t opts =
        SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
    if (t->ticket_ms == 0) {
        opts |= SSL_OP_NO_TICKET;
    }
    (void)SSL_CTX_set_options(ctx, opts);
    // Idle connections give their record buffers back (about 34 KiB each).
    (void)SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    char groups[] = NET_TLS_GROUPS; // the macro casts away const (clang's -Wcast-qual)
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, NET_TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, NET_TLS13_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(ctx, groups) != 1 ||
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)NET_TLS_SID_CTX,
                                       sizeof(NET_TLS_SID_CTX) - 1) != 1) {
        net_tls_err(err, err_cap, "cannot set the TLS versions and cipher suites (%s)",
                    net_tls_reason());
        goto fail;
    }
    // Stateless tickets only: no session is kept on the server (any loop, any restart of the
    // cache, resumes a ticket sealed by this process).
    (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (t->ticket_ms != 0) {
        (void)SSL_CTX_set_timeout(ctx, (long)cfg->ticket_lifetime_s);
        (void)SSL_CTX_set_num_tickets(ctx, 1);
        if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, net_tls_ticket_cb) != 1) {
            net_tls_err(err, err_cap, "cannot install the session ticket keys");
            goto fail;
        }
    } else {
        (void)SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_alpn_select_cb(ctx, net_tls_alpn_cb, NULL);
    if (!net_tls_load_identity(ctx, cfg, err, err_cap) ||
        !net_tls_load_client_auth(ctx, cfg, err, err_cap)) {
        goto fail;
    }
    ERR_clear_error();
    *out = t;
    return cm_result_make(CM_OK);
fail:
    ERR_clear_error();
    net_tls_free(t);
    return cm_result_make(NET_E_TLS);
}

// --- connections -----------------------------------------------------------------------------

net_tls_conn *net_tls_conn_new(const net_tls *t)
{
    net_tls_conn *tc = calloc(1, sizeof(*tc));
    if (tc == NULL) {
        return NULL;
    }
    tc->ssl = SSL_new(t->ctx);
    tc->rbio = BIO_new(BIO_s_mem());
    tc->wbio = BIO_new(BIO_s_mem());
    if (tc->ssl == NULL || tc->rbio == NULL || tc->wbio == NULL) {
        BIO_free(tc->rbio);
        BIO_free(tc->wbio);
        SSL_free(tc->ssl);
        free(tc);
        ERR_clear_error();
        return NULL;
    }
    // An empty memory BIO reads as "retry" rather than EOF: more bytes may come.
    BIO_set_mem_eof_return(tc->rbio, -1);
    SSL_set_bio(tc->ssl, tc->rbio, tc->wbio);
    SSL_set_accept_state(tc->ssl);
    return tc;
}

void net_tls_conn_free(net_tls_conn *tc)
{
    if (tc == NULL) {
        return;
    }
    SSL_free(tc->ssl); // frees both BIOs
    free(tc->peer_der);
    free(tc);
}

// net_tls_conn_opened keeps the client certificate's DER once the handshake finished.
static void net_tls_conn_opened(net_tls_conn *tc)
{
    tc->open = true;
    X509 *peer = SSL_get0_peer_certificate(tc->ssl);
    if (peer == NULL) {
        return;
    }
    const int n = i2d_X509(peer, NULL);
    if (n <= 0) {
        ERR_clear_error();
        return;
    }
    tc->peer_der = malloc((size_t)n);
    if (tc->peer_der == NULL) {
        return;
    }
    uint8_t *p = tc->peer_der;
    if (i2d_X509(peer, &p) != n) {
        free(tc->peer_der);
        tc->peer_der = NULL;
        ERR_clear_error();
        return;
    }
    tc->peer_der_len = (size_t)n;
}

net_tls_status net_tls_conn_input(net_tls_conn *tc, cm_span in, uint64_t *hs_ns)
{
    if (tc->failed) {
        return NET_TLS_FAILED;
    }
    size_t written = 0;
    if (in.len > 0 && (BIO_write_ex(tc->rbio, in.p, in.len, &written) != 1 || written != in.len)) {
        tc->failed = true;
        return NET_TLS_FAILED;
    }
    if (tc->open) {
        return NET_TLS_OPEN;
    }
    const uint64_t t0 = cm_time_mono_ns();
    const int rc = SSL_do_handshake(tc->ssl);
    *hs_ns += cm_time_mono_ns() - t0;
    if (rc == 1) {
        net_tls_conn_opened(tc);
        return NET_TLS_OPEN;
    }
    const int e = SSL_get_error(tc->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return NET_TLS_HANDSHAKING;
    }
    tc->failed = true;
    return NET_TLS_FAILED;
}

net_tls_read net_tls_conn_read(net_tls_conn *tc, uint8_t *buf, size_t cap, size_t *out_len)
{
    *out_len = 0;
    if (tc->failed || !tc->open) {
        return tc->failed ? NET_TLS_READ_FAILED : NET_TLS_READ_NONE;
    }
    size_t n = 0;
    const int rc = SSL_read_ex(tc->ssl, buf, cap, &n);
    if (rc == 1) {
        *out_len = n;
        return NET_TLS_READ_DATA;
    }
    const int e = SSL_get_error(tc->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return NET_TLS_READ_NONE;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        return NET_TLS_READ_CLOSED;
    }
    tc->failed = true;
    return NET_TLS_READ_FAILED;
}

bool net_tls_conn_write(net_tls_conn *tc, cm_span plain, bool close_notify)
{
    if (tc->failed || !tc->open) {
        return false;
    }
    size_t n = 0;
    // A memory BIO takes every record, so one call writes all of |plain|.
    if (plain.len > 0 && (SSL_write_ex(tc->ssl, plain.p, plain.len, &n) != 1 || n != plain.len)) {
        tc->failed = true;
        ERR_clear_error();
        return false;
    }
    if (close_notify) {
        (void)SSL_shutdown(tc->ssl); // 0: sent, the peer's not yet seen; that is all we need
        ERR_clear_error();
    }
    return true;
}

size_t net_tls_conn_pending(const net_tls_conn *tc)
{
    return BIO_ctrl_pending(tc->wbio);
}

void net_tls_conn_take(net_tls_conn *tc, uint8_t *buf, size_t len)
{
    size_t got = 0;
    if (len > 0) {
        (void)BIO_read_ex(tc->wbio, buf, len, &got);
    }
    CM_CHECK(got == len);
}

bool net_tls_conn_resumed(const net_tls_conn *tc)
{
    return SSL_session_reused(tc->ssl) == 1;
}

void net_tls_conn_info(const net_tls_conn *tc, net_tls_info *out)
{
    memset(out, 0, sizeof(*out));
    out->resumed = net_tls_conn_resumed(tc);
    out->version = SSL_get_version(tc->ssl);
    out->cipher = SSL_get_cipher_name(tc->ssl);
    out->peer_cert = cm_span_make(tc->peer_der, tc->peer_der_len);
    X509 *peer = SSL_get0_peer_certificate(tc->ssl);
    if (peer == NULL) {
        return;
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (b != NULL && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
        const int n = BIO_read(b, out->peer_subject, (int)sizeof(out->peer_subject) - 1);
        out->peer_subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    ERR_clear_error();
}

void net_tls_conn_why(char *out, size_t cap)
{
    (void)snprintf(out, cap, "%s", net_tls_reason());
}
