// ca_bench: the per-certificate CPU cost of building a certificate before signing, with
// engine/ca (policy check, serial, TBSCertificate with the DER builder, assembly) and with
// OpenSSL's X509_* API (d2i of the request's subject and key, X509_set_*, extensions, SKI and
// AKI, i2d_re_X509_tbs) for the same certificate. Signing is excluded from both (the HSM's
// job); the certmint assembly uses a fixed dummy signature. Prints medians of rounds.
//
//   build/release/bench/ca_bench [rounds] [iterations-per-round]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/ca/ca.h"
#include "engine/der/der_oid.h"

static const char k_bench_conf[] = "[ext]\n"
                                   "basicConstraints = critical, CA:FALSE\n"
                                   "keyUsage = critical, digitalSignature, keyAgreement\n"
                                   "extendedKeyUsage = clientAuth, serverAuth\n"
                                   "crlDistributionPoints = URI:http://ca.example.com/crl/d.crl\n";
static const char *const k_bench_ext_names[] = {"basicConstraints", "keyUsage", "extendedKeyUsage",
                                                "crlDistributionPoints"};
static const char *const k_bench_ext_values[] = {
    "critical, CA:FALSE", "critical, digitalSignature, keyAgreement", "clientAuth, serverAuth",
    "URI:http://ca.example.com/crl/d.crl"};
static const char k_bench_san[] = "DNS:device-000123456.devices.example.com,IP:10.1.2.3";
static const uint8_t k_bench_sigalg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                         0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};

typedef struct bench_env {
    ca_authority *ca;
    ca_profile *profile;
    X509 *ca_x509;
    X509_EXTENSION *profile_exts[4]; // encoded once, as certmint does
    uint8_t *subject;
    size_t subject_len;
    uint8_t *spki;
    size_t spki_len;
    X509_EXTENSION *san;
    ca_ext req_ext;
    ca_request req;
} bench_env;

// libcrypto's allocations, counted (set before OpenSSL allocates anything).
static _Atomic unsigned long g_bench_allocs;

static void *bench_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    g_bench_allocs++;
    return malloc(n);
}

static void *bench_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    g_bench_allocs++;
    return realloc(p, n);
}

static void bench_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

_Noreturn static void bench_die(const char *what)
{
    fprintf(stderr, "ca_bench: %s\n", what);
    exit(1);
}

// bench_make_ca builds a self-signed P-256 CA with OpenSSL and writes it to |path|.
static X509 *bench_make_ca(const char *path)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    if (key == NULL || x == NULL || n == NULL) {
        bench_die("keygen");
    }
    (void)X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Bench", -1, -1,
                                     0);
    (void)X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"Bench CA", -1,
                                     -1, 0);
    (void)X509_set_version(x, 2);
    (void)ASN1_INTEGER_set_int64(X509_get_serialNumber(x), 1);
    (void)X509_set_subject_name(x, n);
    (void)X509_set_issuer_name(x, n);
    (void)X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    (void)X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400);
    (void)X509_set_pubkey(x, key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_EXTENSION *ski = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
    if (bc == NULL || ski == NULL || X509_add_ext(x, bc, -1) != 1 ||
        X509_add_ext(x, ski, -1) != 1 || X509_sign(x, key, EVP_sha256()) <= 0) {
        bench_die("CA certificate");
    }
    X509_EXTENSION_free(bc);
    X509_EXTENSION_free(ski);
    BIO *b = BIO_new_file(path, "w");
    if (b == NULL || PEM_write_bio_X509(b, x) != 1) {
        bench_die("writing the CA certificate");
    }
    BIO_free(b);
    X509_NAME_free(n);
    EVP_PKEY_free(key);
    return x;
}

static void bench_setup(bench_env *e)
{
    char path[] = "/tmp/certmint-ca-bench-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        bench_die("mkstemp");
    }
    (void)close(fd);
    e->ca_x509 = bench_make_ca(path);
    char err[256];
    if (!cm_ok(ca_authority_load(&e->ca, err, sizeof(err), path, NULL))) {
        bench_die(err);
    }
    (void)unlink(path);

    CONF *conf = NCONF_new(NULL);
    BIO *b = BIO_new_mem_buf(k_bench_conf, (int)sizeof(k_bench_conf) - 1);
    long line = 0;
    if (conf == NULL || b == NULL || NCONF_load_bio(conf, b, &line) != 1) {
        bench_die("NCONF");
    }
    BIO_free(b);
    ca_profile_params p;
    memset(&p, 0, sizeof(p));
    p.default_days = 365;
    p.max_days = 365;
    p.key_types = CA_KEY_EC_P256 | CA_KEY_RSA;
    p.rsa_min_bits = 2048;
    p.rsa_max_bits = 4096;
    p.subject_mode = CA_SUBJECT_COPY;
    p.san_types = CA_SAN_DNS | CA_SAN_IP;
    if (!cm_ok(ca_profile_new(&e->profile, err, sizeof(err), &p, conf, "ext"))) {
        bench_die(err);
    }
    NCONF_free(conf);
    for (size_t i = 0; i < 4; i++) {
        e->profile_exts[i] =
            X509V3_EXT_conf(NULL, NULL, k_bench_ext_names[i], k_bench_ext_values[i]);
        if (e->profile_exts[i] == NULL) {
            bench_die("profile extension");
        }
    }

    // The request: a P-256 device key, a subject and SANs, as DER (what a CertTemplate gives).
    EVP_PKEY *dev = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char *der = NULL;
    int len = dev != NULL ? i2d_PUBKEY(dev, &der) : -1;
    if (len <= 0) {
        bench_die("device key");
    }
    e->spki = der;
    e->spki_len = (size_t)len;
    EVP_PKEY_free(dev);
    X509_NAME *n = X509_NAME_new();
    (void)X509_NAME_add_entry_by_txt(n, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1, 0);
    (void)X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
                                     (const unsigned char *)"Example Devices GmbH", -1, -1, 0);
    (void)X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                     (const unsigned char *)"device-000123456", -1, -1, 0);
    der = NULL;
    len = i2d_X509_NAME(n, &der);
    X509_NAME_free(n);
    if (len <= 0) {
        bench_die("subject");
    }
    e->subject = der;
    e->subject_len = (size_t)len;
    e->san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, k_bench_san);
    if (e->san == NULL) {
        bench_die("SAN");
    }
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(e->san);
    e->req_ext.oid = CM_SPAN_LIT(DER_OID_CE_SUBJECT_ALT_NAME);
    e->req_ext.critical = false;
    e->req_ext.value = cm_span_make(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
    e->req.subject = cm_span_make(e->subject, e->subject_len);
    e->req.spki = cm_span_make(e->spki, e->spki_len);
    e->req.exts = &e->req_ext;
    e->req.num_exts = 1;
}

// bench_ours: policy check, serial, TBS and assembly with a dummy 72-byte signature.
static size_t bench_ours(const bench_env *e, uint8_t *buf, size_t cap, uint8_t *out, size_t out_cap)
{
    static const uint8_t k_sig[72] = {0x30, 0x46};
    ca_decision d;
    uint8_t serial[CA_SERIAL_LEN];
    if (!cm_ok(ca_policy_check(e->profile, e->ca, &d, &e->req, cm_time_now(), NULL)) ||
        !cm_ok(ca_serial_new(serial))) {
        bench_die("policy/serial");
    }
    der_builder b, c;
    der_builder_init_fixed(&b, buf, cap);
    cm_span tbs, cert;
    if (!cm_ok(ca_tbs_build(e->ca, &b, e->profile, &d, &e->req,
                            cm_span_make(serial, sizeof(serial)),
                            cm_span_make(k_bench_sigalg, sizeof(k_bench_sigalg)))) ||
        !cm_ok(der_builder_finish(&b, &tbs))) {
        bench_die("tbs");
    }
    der_builder_init_fixed(&c, out, out_cap);
    if (!cm_ok(ca_signed_assemble(&c, tbs, cm_span_make(k_bench_sigalg, sizeof(k_bench_sigalg)),
                                  cm_span_make(k_sig, sizeof(k_sig)))) ||
        !cm_ok(der_builder_finish(&c, &cert))) {
        bench_die("assemble");
    }
    return cert.len;
}

// bench_openssl: the same certificate's TBS through X509_* and i2d_re_X509_tbs.
static size_t bench_openssl(const bench_env *e)
{
    X509 *x = X509_new();
    const unsigned char *p = e->subject;
    X509_NAME *subj = d2i_X509_NAME(NULL, &p, (long)e->subject_len);
    p = e->spki;
    EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)e->spki_len);
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    uint8_t serial[CA_SERIAL_LEN];
    if (x == NULL || subj == NULL || key == NULL || sn == NULL ||
        RAND_bytes(serial, sizeof(serial)) != 1) {
        bench_die("OpenSSL objects");
    }
    serial[0] &= 0x7f;
    (void)ASN1_STRING_set(sn, serial, sizeof(serial));
    (void)X509_set_version(x, 2);
    (void)X509_set_serialNumber(x, sn);
    (void)X509_set_issuer_name(x, X509_get_subject_name(e->ca_x509));
    (void)X509_set_subject_name(x, subj);
    (void)X509_gmtime_adj(X509_getm_notBefore(x), 0);
    (void)X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400);
    (void)X509_set_pubkey(x, key);
    for (size_t i = 0; i < 4; i++) {
        (void)X509_add_ext(x, e->profile_exts[i], -1);
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, e->ca_x509, x, NULL, NULL, 0);
    X509_EXTENSION *ski = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
    X509_EXTENSION *aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid");
    if (ski == NULL || aki == NULL || X509_add_ext(x, ski, -1) != 1 ||
        X509_add_ext(x, aki, -1) != 1 || X509_add_ext(x, e->san, -1) != 1) {
        bench_die("OpenSSL extensions");
    }
    // The signature algorithm goes into the TBS too. X509_sign would set it, but also sign;
    // OpenSSL 3.0 has no setter, so write it through the (const) accessor's pointer.
    const X509_ALGOR *calg = X509_get0_tbs_sigalg(x);
    X509_ALGOR *alg;
    memcpy(&alg, &calg, sizeof(alg));
    (void)X509_ALGOR_set0(alg, OBJ_nid2obj(NID_ecdsa_with_SHA256), V_ASN1_UNDEF, NULL);
    unsigned char *tbs = NULL;
    const int len = i2d_re_X509_tbs(x, &tbs);
    if (len <= 0) {
        bench_die("i2d_re_X509_tbs");
    }
    OPENSSL_free(tbs);
    X509_EXTENSION_free(ski);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(sn);
    EVP_PKEY_free(key);
    X509_NAME_free(subj);
    X509_free(x);
    return (size_t)len;
}

// bench_openssl_key: the part of bench_openssl that handles the public key alone (OpenSSL
// 3.0's decoder and encoder framework), for context.
static void bench_openssl_key(const bench_env *e)
{
    X509 *x = X509_new();
    const unsigned char *p = e->spki;
    EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)e->spki_len);
    if (x == NULL || key == NULL || X509_set_pubkey(x, key) != 1) {
        bench_die("OpenSSL key");
    }
    EVP_PKEY_free(key);
    X509_free(x);
}

int main(int argc, char **argv)
{
    const unsigned rounds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 11;
    const unsigned iters = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 2000;
    if (rounds == 0 || iters == 0 || rounds > 1000) {
        fprintf(stderr, "usage: ca_bench [rounds 1..1000] [iterations]\n");
        return 2;
    }
    if (CRYPTO_set_mem_functions(bench_malloc, bench_realloc, bench_free) != 1) {
        bench_die("CRYPTO_set_mem_functions");
    }
    bench_env e;
    memset(&e, 0, sizeof(e));
    bench_setup(&e);
    uint8_t buf[4096], out[4096];
    uint64_t *ours = calloc(rounds, sizeof(uint64_t));
    uint64_t *ossl = calloc(rounds, sizeof(uint64_t));
    uint64_t *okey = calloc(rounds, sizeof(uint64_t));
    if (ours == NULL || ossl == NULL || okey == NULL) {
        return 1;
    }
    size_t cert_len = 0, tbs_len = 0;
    unsigned long ours_allocs = 0, ossl_allocs = 0;
    // Interleave the two so that machine noise hits both alike.
    for (unsigned k = 0; k < rounds; k++) {
        unsigned long a0 = g_bench_allocs;
        uint64_t t0 = cm_time_mono_ns();
        for (unsigned i = 0; i < iters; i++) {
            cert_len = bench_ours(&e, buf, sizeof(buf), out, sizeof(out));
        }
        ours[k] = (cm_time_mono_ns() - t0) / iters;
        ours_allocs = (g_bench_allocs - a0) / iters;
        a0 = g_bench_allocs;
        t0 = cm_time_mono_ns();
        for (unsigned i = 0; i < iters; i++) {
            tbs_len = bench_openssl(&e);
        }
        ossl[k] = (cm_time_mono_ns() - t0) / iters;
        ossl_allocs = (g_bench_allocs - a0) / iters;
        t0 = cm_time_mono_ns();
        for (unsigned i = 0; i < iters; i++) {
            bench_openssl_key(&e);
        }
        okey[k] = (cm_time_mono_ns() - t0) / iters;
    }
    qsort(ours, rounds, sizeof(uint64_t), bench_cmp_u64);
    qsort(ossl, rounds, sizeof(uint64_t), bench_cmp_u64);
    qsort(okey, rounds, sizeof(uint64_t), bench_cmp_u64);
    const uint64_t mo = ours[rounds / 2], mx = ossl[rounds / 2];
    printf("P-256 subject key, 4 profile extensions + SKI + AKI + SAN; %u rounds x %u; medians\n",
           rounds, iters);
    printf("%-60s %10s\n", "operation", "ns/cert");
    printf("%-60s %10llu\n", "certmint: policy + serial + TBS + assembly (no signing)",
           (unsigned long long)mo);
    printf("%-60s %10llu\n", "OpenSSL: d2i name/key + X509_set_* + exts + i2d_re_X509_tbs",
           (unsigned long long)mx);
    printf("%-60s %10llu\n", "  of which d2i_PUBKEY + X509_set_pubkey alone",
           (unsigned long long)okey[rounds / 2]);
    printf("certificate %zu bytes (dummy signature), OpenSSL TBS %zu bytes\n", cert_len, tbs_len);
    printf("ratio OpenSSL / certmint: %.1fx\n", mo ? (double)mx / (double)mo : 0.0);
    printf("libcrypto allocations per certificate: certmint %lu, OpenSSL %lu\n", ours_allocs,
           ossl_allocs);
    for (size_t i = 0; i < 4; i++) {
        X509_EXTENSION_free(e.profile_exts[i]);
    }
    X509_EXTENSION_free(e.san);
    OPENSSL_free(e.subject);
    OPENSSL_free(e.spki);
    X509_free(e.ca_x509);
    ca_profile_free(e.profile);
    ca_authority_free(e.ca);
    free(ours);
    free(ossl);
    free(okey);
    return 0;
}
