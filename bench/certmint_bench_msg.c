// What every CMP message of a run is made of: device keys and their signature algorithms, the
// header fields the requests share, the protection (PBM/PBMAC1 MAC or signature), and the HTTP
// framing. Used by the preparation (certmint_bench_prepare.c) and by the loop's certConf.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "bench/certmint_bench.h"

cm_span bench_mac_secret(const bench_opts *o)
{
    if (o->key_mac != 0) {
        return cm_span_make(o->mac_key, o->mac_key_len);
    }
    return cm_span_make(o->secret, o->secret != NULL ? strlen(o->secret) : 0);
}

cmp_secret_kind bench_mac_kind(const bench_opts *o)
{
    return o->key_mac != 0 ? CMP_SECRET_KEY : CMP_SECRET_PASSWORD;
}

crmf_sig_alg bench_sig_alg_for(const EVP_PKEY *key)
{
    crmf_sig_alg a;
    memset(&a, 0, sizeof(a));
    switch (crmf_key_type_of(key)) {
    case CRMF_KEY_RSA:
        a.kind = CRMF_SIG_RSA_PKCS1;
        a.hash = CRMF_HASH_SHA256;
        break;
    case CRMF_KEY_RSA_PSS:
        // An id-RSASSA-PSS key signs only with PSS: SHA-256, MGF1-SHA-256, a 32-octet salt.
        (void)crmf_sig_alg_of(&a, CRMF_ALG_RSA_PSS_SHA256);
        break;
    case CRMF_KEY_ED25519:
        a.kind = CRMF_SIG_ED25519;
        a.hash = CRMF_HASH_NONE;
        break;
    case CRMF_KEY_ED448:
        a.kind = CRMF_SIG_ED448;
        a.hash = CRMF_HASH_NONE;
        break;
    default:
        a.kind = CRMF_SIG_ECDSA;
        a.hash = EVP_PKEY_get_bits(key) > 384   ? CRMF_HASH_SHA512
                 : EVP_PKEY_get_bits(key) > 256 ? CRMF_HASH_SHA384
                                                : CRMF_HASH_SHA256;
        break;
    }
    return a;
}

cm_span bench_alg_der(const crmf_sig_alg *a)
{
    der_builder b;
    der_builder_init(&b, 64);
    crmf_sig_alg_marshal(&b, a);
    uint8_t *p;
    size_t n;
    if (!cm_ok(der_builder_take(&b, &p, &n))) {
        bench_die("cannot encode a signature AlgorithmIdentifier");
    }
    return cm_span_make(p, n);
}

EVP_PKEY *bench_keygen(bench_key_type t)
{
    switch (t) {
    case BENCH_KEY_EC_P384:
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    case BENCH_KEY_RSA2048:
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    case BENCH_KEY_ED25519:
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    default:
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
}

uint8_t *bench_put_http(const bench_opts *o, size_t *out_len, cm_span der)
{
    char hdr[BENCH_HTTP_HDR_MAX];
    const int n =
        snprintf(hdr, sizeof(hdr),
                 "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/pkixcmp\r\n"
                 "Content-Length: %zu\r\n%s\r\n",
                 o->path, o->host, o->port, der.len, o->reconnect ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(hdr)) {
        return NULL;
    }
    uint8_t *p = malloc((size_t)n + der.len);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, hdr, (size_t)n);
    memcpy(p + n, der.p, der.len);
    *out_len = (size_t)n + der.len;
    return p;
}

bool bench_protect_finish(bench_ctx *ctx, crmf_crypto *c, cm_arena *arena, cmp_msg_writer *w,
                          const cmp_mac_key *mac, const bench_signer *signer)
{
    const cm_span pp = cmp_msg_writer_protected_part(w);
    if (pp.len == 0) {
        return false;
    }
    if (mac != NULL) {
        uint8_t m[CMP_PROTECT_MAX_MAC_LEN];
        size_t mlen;
        if (!cm_ok(cmp_mac_compute(ctx->prot, m, sizeof(m), &mlen, mac, pp))) {
            return false;
        }
        cmp_msg_writer_finish(w, &(cm_span){m, mlen}, 0, NULL, 0);
        return true;
    }
    cm_span tbs;
    cm_span sig;
    if (!cm_ok(cmp_protect_sign_input(arena, &tbs, pp)) ||
        !cm_ok(crmf_crypto_sign(c, arena, &sig, &signer->alg, signer->key, tbs))) {
        return false;
    }
    cmp_msg_writer_finish(w, &sig, 0, &signer->cert, 1);
    return true;
}

bench_signer bench_default_signer(const bench_ctx *ctx)
{
    return (bench_signer){ctx->prot_key, ctx->prot_alg, ctx->prot_alg_der, ctx->prot_cert};
}

size_t bench_cert_ski(cm_span cert, uint8_t *out, size_t cap)
{
    const unsigned char *q = cert.p;
    X509 *x = cert.len > 0 ? d2i_X509(NULL, &q, (long)cert.len) : NULL;
    const ASN1_OCTET_STRING *ski = x != NULL ? X509_get0_subject_key_id(x) : NULL;
    size_t n = 0;
    if (ski != NULL && (size_t)ASN1_STRING_length(ski) <= cap) {
        n = (size_t)ASN1_STRING_length(ski);
        memcpy(out, ASN1_STRING_get0_data(ski), n);
    }
    X509_free(x);
    return n;
}

void bench_header_init(const bench_ctx *ctx, cmp_header_fields *h, cm_span sender, cm_span prot_alg)
{
    memset(h, 0, sizeof(*h));
    h->pvno = 2;
    h->sender_name = sender;
    h->recipient_name = ctx->ca_subject; // NULL-DN without --ca
    h->has_message_time = true;
    h->message_time = cm_time_now();
    h->protection_alg = prot_alg;
    if (ctx->macs != NULL) {
        h->sender_kid =
            (cmp_opt_span){true, cm_span_make(ctx->o->secret_ref, strlen(ctx->o->secret_ref))};
    }
}
