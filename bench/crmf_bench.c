// crmf_bench: the per-request CRMF work of an ir with an EC P-256 key, with certmint's code and
// with OpenSSL's in the same run:
//   - parse CertReqMessages (crmf_msgs_from_der) and marshal it again;
//   - build the public key from the template's SPKI: EVP_PKEY_fromdata on a reused context
//     (crmf_crypto_key_from_spki) against d2i_PUBKEY, for P-256 and RSA-2048;
//   - the whole POPO check (crmf_popo_verify: algorithm, key, ECDSA verify) against the bare
//     ECDSA verification with a ready key, and against OpenSSL's d2i_OSSL_CRMF_MSGS +
//     OSSL_CRMF_MSGS_verify_popo.
// Prints ns per operation (median of rounds) and ratios. The request is built here with
// crmf's own marshal and signer, so the bench needs no files.
//
//   build/release/bench/crmf_bench [rounds] [iterations-per-round]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crmf.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "engine/crmf/crmf.h"
#include "engine/der/der_oid.h"

#define BENCH_MAX_ROUNDS 64

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

// Everything one measured operation needs.
typedef struct bench_ctx {
    crmf_crypto crypto;
    cm_arena arena;
    cm_span msgs_der;     // CertReqMessages
    cm_span ec_spki;      // SPKI DER of the P-256 key
    cm_span rsa_spki;     // SPKI DER of an RSA-2048 key
    EVP_PKEY *ec_key;     // private, for signing and for the bare verify
    cm_span tbs, sig;     // the signed CertRequest and its POPO signature
    volatile size_t sink; // keeps results alive
} bench_ctx;

typedef void (*bench_fn)(bench_ctx *);

static void bench_parse(bench_ctx *b)
{
    crmf_cert_req_msgs m;
    cm_arena_reset(&b->arena);
    if (!cm_ok(crmf_msgs_from_der(&b->arena, &m, b->msgs_der))) {
        abort();
    }
    b->sink += m.num_msgs;
}

static void bench_parse_marshal(bench_ctx *b)
{
    crmf_cert_req_msgs m;
    cm_arena_reset(&b->arena);
    uint8_t out[1024];
    der_builder d;
    der_builder_init_fixed(&d, out, sizeof(out));
    cm_span got;
    if (!cm_ok(crmf_msgs_from_der(&b->arena, &m, b->msgs_der))) {
        abort();
    }
    crmf_msgs_marshal(&d, &m);
    if (!cm_ok(der_builder_finish(&d, &got)) || got.len != b->msgs_der.len) {
        abort();
    }
    b->sink += got.len;
}

static void bench_key(bench_ctx *b, cm_span der)
{
    crmf_spki spki;
    EVP_PKEY *k = NULL;
    if (!cm_ok(crmf_spki_from_der(&spki, der)) ||
        !cm_ok(crmf_crypto_key_from_spki(&b->crypto, &k, &spki))) {
        abort();
    }
    EVP_PKEY_free(k);
    b->sink++;
}

static void bench_d2i(bench_ctx *b, cm_span der)
{
    const unsigned char *p = der.p;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)der.len);
    if (k == NULL) {
        abort();
    }
    EVP_PKEY_free(k);
    b->sink++;
}

static void bench_key_ec(bench_ctx *b)
{
    bench_key(b, b->ec_spki);
}

static void bench_d2i_ec(bench_ctx *b)
{
    bench_d2i(b, b->ec_spki);
}

static void bench_key_rsa(bench_ctx *b)
{
    bench_key(b, b->rsa_spki);
}

static void bench_d2i_rsa(bench_ctx *b)
{
    bench_d2i(b, b->rsa_spki);
}

static void bench_bare_verify(bench_ctx *b)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (m == NULL || EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, b->ec_key) != 1 ||
        EVP_DigestVerify(m, b->sig.p, b->sig.len, b->tbs.p, b->tbs.len) != 1) {
        abort();
    }
    EVP_MD_CTX_free(m);
    b->sink++;
}

static void bench_popo(bench_ctx *b)
{
    crmf_cert_req_msgs m;
    cm_arena_reset(&b->arena);
    if (!cm_ok(crmf_msgs_from_der(&b->arena, &m, b->msgs_der)) ||
        !cm_ok(crmf_popo_verify(&b->crypto, &m.msgs[0], NULL))) {
        abort();
    }
    b->sink++;
}

static void bench_ossl_popo(bench_ctx *b)
{
    const unsigned char *p = b->msgs_der.p;
    OSSL_CRMF_MSGS *m = d2i_OSSL_CRMF_MSGS(NULL, &p, (long)b->msgs_der.len);
    if (m == NULL || OSSL_CRMF_MSGS_verify_popo(m, 0, 0, NULL, NULL) != 1) {
        abort();
    }
    OSSL_CRMF_MSGS_free(m);
    b->sink++;
}

// bench_run returns the median ns per call of |fn| over |rounds| rounds of |iters| calls.
static double bench_run(bench_ctx *b, bench_fn fn, int rounds, int iters)
{
    uint64_t t[BENCH_MAX_ROUNDS];
    for (int i = 0; i < iters / 10 + 1; i++) {
        fn(b); // warm up
    }
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = cm_time_mono_ns();
        for (int i = 0; i < iters; i++) {
            fn(b);
        }
        t[r] = (cm_time_mono_ns() - t0) / (uint64_t)iters;
    }
    qsort(t, (size_t)rounds, sizeof(t[0]), bench_cmp_u64);
    return (double)t[rounds / 2];
}

static cm_span bench_spki_of(cm_arena *a, EVP_PKEY *k)
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(k, &der);
    if (len <= 0) {
        abort();
    }
    uint8_t *copy = cm_arena_memdup(a, cm_span_make(der, (size_t)len));
    OPENSSL_free(der);
    return cm_span_make(copy, (size_t)len);
}

// bench_make_request builds CertReqMessages { CertReqMsg { CertRequest { 0, template with
// subject CN=device-000123456, the P-256 key and a SAN }, signature POPO } } in |keep|.
static bool bench_make_request(bench_ctx *b, cm_arena *keep)
{
    static const uint8_t subject[] = {0x30, 0x1b, 0x31, 0x19, 0x30, 0x17, 0x06, 0x03, 0x55, 0x04,
                                      0x03, 0x0c, 0x10, 'd',  'e',  'v',  'i',  'c',  'e',  '-',
                                      '0',  '0',  '0',  '1',  '2',  '3',  '4',  '5',  '6'};
    static const uint8_t san_ext[] = {0x30, 0x1b, 0x06, 0x03, 0x55, 0x1d, 0x11, 0x04, 0x14, 0x30,
                                      0x12, 0x82, 0x10, 'd',  'e',  'v',  '1',  '.',  'e',  'x',
                                      'a',  'm',  'p',  'l',  'e',  '.',  'c',  'o',  'm'};
    crmf_cert_req_msg msg;
    memset(&msg, 0, sizeof(msg));
    crmf_template *tm = &msg.req.tmpl;
    tm->subject = cm_span_make(subject, sizeof(subject));
    der_reader r;
    der_reader_init(&r, b->ec_spki);
    if (!cm_ok(der_get_tlv(&r, DER_TAG_SEQUENCE, &tm->public_key))) { // [6] is IMPLICIT
        return false;
    }
    tm->extensions = cm_span_make(san_ext, sizeof(san_ext));
    der_builder d;
    der_builder_init_arena(&d, keep, 512);
    crmf_cert_request_marshal(&d, &msg.req);
    if (!cm_ok(der_builder_finish(&d, &b->tbs))) {
        return false;
    }
    const crmf_sig_alg alg = {{NULL, 0}, CRMF_SIG_ECDSA, CRMF_HASH_SHA256, CRMF_HASH_NONE, 0};
    msg.popo.type = CRMF_POPO_SIGNATURE;
    der_builder_init_arena(&d, keep, 32);
    crmf_sig_alg_marshal(&d, &alg);
    if (!cm_ok(der_builder_finish(&d, &msg.popo.alg)) ||
        !cm_ok(crmf_crypto_sign(&b->crypto, keep, &b->sig, &alg, b->ec_key, b->tbs))) {
        return false;
    }
    msg.popo.signature = b->sig;
    crmf_cert_req_msgs msgs = {{NULL, 0}, 1, &msg};
    der_builder_init_arena(&d, keep, 512);
    crmf_msgs_marshal(&d, &msgs);
    return cm_ok(der_builder_finish(&d, &b->msgs_der));
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 15;
    int iters = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 2000;
    if (rounds < 1 || rounds > BENCH_MAX_ROUNDS || iters < 1) {
        fprintf(stderr, "usage: crmf_bench [rounds 1..%d] [iterations]\n", BENCH_MAX_ROUNDS);
        return 2;
    }
    bench_ctx b;
    memset(&b, 0, sizeof(b));
    cm_arena keep;
    cm_arena_init(&keep, 0, 0);
    cm_arena_init(&b.arena, 0, 0);
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    b.ec_key = EVP_EC_gen("P-256");
    if (rsa == NULL || b.ec_key == NULL || !cm_ok(crmf_crypto_init(&b.crypto, NULL, NULL))) {
        fprintf(stderr, "set-up failed\n");
        return 1;
    }
    b.ec_spki = bench_spki_of(&keep, b.ec_key);
    b.rsa_spki = bench_spki_of(&keep, rsa);
    if (!bench_make_request(&b, &keep)) {
        fprintf(stderr, "building the request failed\n");
        return 1;
    }
    const struct {
        const char *name;
        bench_fn fn;
    } cases[] = {
        {"crmf parse CertReqMessages", bench_parse},
        {"crmf parse + marshal", bench_parse_marshal},
        {"crmf key from SPKI, P-256 (params copy)", bench_key_ec},
        {"d2i_PUBKEY, P-256", bench_d2i_ec},
        {"crmf key from SPKI, RSA-2048 (fromdata)", bench_key_rsa},
        {"d2i_PUBKEY, RSA-2048", bench_d2i_rsa},
        {"bare ECDSA P-256 verify (ready key)", bench_bare_verify},
        {"crmf parse + POPO verify", bench_popo},
        {"OpenSSL d2i_OSSL_CRMF_MSGS + verify_popo", bench_ossl_popo},
    };
    double ns[sizeof(cases) / sizeof(cases[0])];
    printf("crmf_bench: %d rounds x %d iterations, median ns/op; request %zu bytes\n", rounds,
           iters, b.msgs_der.len);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ns[i] = bench_run(&b, cases[i].fn, rounds, iters);
        printf("  %-44s %10.0f\n", cases[i].name, ns[i]);
    }
    printf("ratios:\n");
    printf("  d2i_PUBKEY / crmf, P-256          %6.2f\n", ns[3] / ns[2]);
    printf("  d2i_PUBKEY / fromdata, RSA-2048   %6.2f\n", ns[5] / ns[4]);
    printf("  parse+marshal / ECDSA verify      %6.3f\n", ns[1] / ns[6]);
    printf("  crmf POPO path / ECDSA verify     %6.2f\n", ns[7] / ns[6]);
    printf("  OpenSSL POPO path / crmf POPO     %6.2f\n", ns[8] / ns[7]);
    crmf_crypto_cleanup(&b.crypto);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(b.ec_key);
    cm_arena_cleanup(&b.arena);
    cm_arena_cleanup(&keep);
    return (int)(b.sink & 0);
}
