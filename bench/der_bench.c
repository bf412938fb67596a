// der_bench: decode and re-encode a typical certificate (~1 KiB: RSA-2048 key, subject,
// SAN, key usage, EKU, SKI/AKI, CRL DP), with certmint's DER reader/builder and with
// OpenSSL's d2i_X509/i2d_X509, in the same run. Prints ns per operation (median of rounds)
// and the ratios.
//
//   build/release/bench/der_bench [rounds] [iterations-per-round]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/der/der.h"

static uint64_t bench_now_ns(void)
{
    return cm_time_mono_ns();
}

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

static bool bench_add_ext(X509 *x, X509V3_CTX *ctx, const char *name, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf(NULL, ctx, name, value);
    if (e == NULL) {
        return false;
    }
    const bool ok = X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

// bench_make_cert builds the test certificate with OpenSSL and returns its DER (free()).
static uint8_t *bench_make_cert(size_t *out_len)
{
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    if (key == NULL || x == NULL || n == NULL) {
        return NULL;
    }
    (void)X509_NAME_add_entry_by_txt(n, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1, 0);
    (void)X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
                                     (const unsigned char *)"Example Devices GmbH", -1, -1, 0);
    (void)X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                     (const unsigned char *)"device-000123456", -1, -1, 0);
    (void)X509_set_version(x, 2);
    (void)ASN1_INTEGER_set_int64(X509_get_serialNumber(x), 0x1234567890abcdefLL);
    (void)X509_set_subject_name(x, n);
    (void)X509_set_issuer_name(x, n);
    (void)X509_gmtime_adj(X509_getm_notBefore(x), 0);
    (void)X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400);
    (void)X509_set_pubkey(x, key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    bool ok = bench_add_ext(x, &ctx, "basicConstraints", "critical,CA:FALSE") &&
              bench_add_ext(x, &ctx, "keyUsage", "critical,digitalSignature,keyEncipherment") &&
              bench_add_ext(x, &ctx, "extendedKeyUsage", "clientAuth,serverAuth") &&
              bench_add_ext(x, &ctx, "subjectKeyIdentifier", "hash") &&
              bench_add_ext(x, &ctx, "authorityKeyIdentifier", "keyid:always") &&
              bench_add_ext(x, &ctx, "subjectAltName",
                            "DNS:device-000123456.devices.example.com,IP:10.1.2.3") &&
              bench_add_ext(x, &ctx, "crlDistributionPoints",
                            "URI:http://ca.example.com/crl/devices.crl");
    ok = ok && X509_sign(x, key, EVP_sha256()) > 0;
    unsigned char *der = NULL;
    int len = ok ? i2d_X509(x, &der) : -1;
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(key);
    if (len <= 0) {
        return NULL;
    }
    uint8_t *out = malloc((size_t)len);
    if (out != NULL) {
        memcpy(out, der, (size_t)len);
        *out_len = (size_t)len;
    }
    OPENSSL_free(der);
    return out;
}

// bench_copy walks |r| and re-encodes every element into |b| (decode + encode of the whole
// structure); returns the number of elements or 0 on failure.
static size_t bench_copy(der_reader *r, der_builder *b)
{
    size_t n = 0;
    while (!der_reader_empty(r)) {
        der_reader before = *r;
        uint32_t tag;
        cm_span body;
        if (!cm_ok(der_get_any(r, &tag, &body, NULL))) {
            return 0;
        }
        n++;
        if ((tag & DER_CONSTRUCTED) != 0) {
            der_reader child;
            if (!cm_ok(der_enter(&before, tag, &child))) {
                return 0;
            }
            der_mark m;
            der_open(b, &m, tag);
            const size_t k = bench_copy(&child, b); // NOLINT(misc-no-recursion): depth-bounded
            if (k == 0 && !der_reader_empty(&child)) {
                return 0;
            }
            n += k;
            der_close(b, &m);
        } else {
            der_put_tlv(b, tag, body);
        }
    }
    return n;
}

typedef enum bench_op { BENCH_OURS, BENCH_OPENSSL } bench_op;

static uint64_t bench_round(bench_op op, const uint8_t *cert, size_t len, unsigned iters,
                            uint8_t *out, size_t out_cap)
{
    const uint64_t t0 = bench_now_ns();
    for (unsigned i = 0; i < iters; i++) {
        if (op == BENCH_OURS) {
            der_reader r;
            der_reader_init(&r, cm_span_make(cert, len));
            der_builder b;
            der_builder_init_fixed(&b, out, out_cap);
            cm_span got;
            if (bench_copy(&r, &b) == 0 || !cm_ok(der_builder_finish(&b, &got)) || got.len != len) {
                fprintf(stderr, "der_bench: round trip failed\n");
                exit(1);
            }
        } else {
            const unsigned char *q = cert;
            X509 *x = d2i_X509(NULL, &q, (long)len);
            unsigned char *p = out;
            if (x == NULL || i2d_X509(x, &p) != (int)len) {
                fprintf(stderr, "der_bench: OpenSSL round trip failed\n");
                exit(1);
            }
            X509_free(x);
        }
    }
    return (bench_now_ns() - t0) / iters;
}

int main(int argc, char **argv)
{
    const unsigned rounds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 11;
    const unsigned iters = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 2000;
    if (rounds == 0 || iters == 0 || rounds > 1000) {
        fprintf(stderr, "usage: der_bench [rounds 1..1000] [iterations]\n");
        return 2;
    }
    size_t len;
    uint8_t *cert = bench_make_cert(&len);
    if (cert == NULL) {
        fprintf(stderr, "der_bench: cannot build the test certificate\n");
        return 1;
    }
    uint8_t *out = malloc(len + 64);
    uint64_t *ours = calloc(rounds, sizeof(uint64_t));
    uint64_t *ossl = calloc(rounds, sizeof(uint64_t));
    if (out == NULL || ours == NULL || ossl == NULL) {
        return 1;
    }
    // Interleave the two so that machine noise hits both alike.
    for (unsigned k = 0; k < rounds; k++) {
        ours[k] = bench_round(BENCH_OURS, cert, len, iters, out, len + 64);
        ossl[k] = bench_round(BENCH_OPENSSL, cert, len, iters, out, len + 64);
    }
    qsort(ours, rounds, sizeof(uint64_t), bench_cmp_u64);
    qsort(ossl, rounds, sizeof(uint64_t), bench_cmp_u64);
    const uint64_t mo = ours[rounds / 2], mx = ossl[rounds / 2];
    printf("certificate: %zu bytes; %u rounds x %u iterations; medians\n", len, rounds, iters);
    printf("%-44s %10s\n", "operation", "ns/op");
    printf("%-44s %10llu\n", "certmint der: decode + re-encode (all TLVs)", (unsigned long long)mo);
    printf("%-44s %10llu\n", "OpenSSL d2i_X509 + i2d_X509", (unsigned long long)mx);
    printf("ratio OpenSSL / certmint: %.1fx\n", mo ? (double)mx / (double)mo : 0.0);
    free(cert);
    free(out);
    free(ours);
    free(ossl);
    return 0;
}
