// pbm_cost_bench: what a MAC-protected request costs the server before its MAC is known to be
// good (issue 14): the key derivation of PasswordBasedMac (iterated SHA-256, HMAC-SHA256) and
// of PBMAC1 (PBKDF2-HMAC-SHA256, 32-octet key, HMAC-SHA256) at several iteration counts, each
// checked against a wrong secret (what a client without the secret, or an attacker, makes the
// server do) over a 1 KiB ProtectedPart. Prints the median µs per request and ns per
// iteration, and the iteration count that one millisecond buys.
//
//   build/release/bench/pbm_cost_bench [rounds]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/base/base.h"
#include "engine/cmp/cmp_protect.h"
#include "engine/der/der.h"

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

// bench_one times |rounds| verifications of a |kind| MAC with |iterations| under a wrong
// secret; returns the median in ns (0 on a failure).
static uint64_t bench_one(const cmp_protect_ctx *ctx, bool pbmac1, uint64_t iterations, int rounds)
{
    cmp_mac_key key;
    const cm_span secret = CM_SPAN_LIT("the-line-secret");
    cm_result r = pbmac1 ? cmp_mac_key_new_pbmac1(ctx, &key, secret, CMP_HASH_SHA256,
                                                  CMP_HASH_SHA256, iterations, 16, 32)
                         : cmp_mac_key_new_pbm(ctx, &key, secret, CMP_HASH_SHA256, CMP_HASH_SHA256,
                                               iterations, 16);
    if (!cm_ok(r)) {
        return 0;
    }
    der_builder ab;
    der_builder_init(&ab, 256);
    cmp_mac_key_put_alg(&ab, &key);
    cm_span alg;
    if (!cm_ok(der_builder_finish(&ab, &alg))) {
        return 0;
    }
    static uint8_t content[1024];
    uint8_t mac[32] = {0};
    uint64_t *ns = calloc((size_t)rounds, sizeof(uint64_t));
    if (ns == NULL) {
        return 0;
    }
    for (int i = 0; i < rounds; i++) {
        cmp_mac_key out;
        const uint64_t t0 = cm_time_mono_ns();
        r = cmp_protect_verify_mac(ctx, &out, alg, CM_SPAN_LIT("guessed-secret"),
                                   CMP_SECRET_PASSWORD, cm_span_make(content, sizeof(content)),
                                   cm_span_make(mac, sizeof(mac)), 0, NULL);
        ns[i] = cm_time_mono_ns() - t0;
        if (r.code != CMP_E_PROT_MAC_MISMATCH) {
            free(ns);
            return 0;
        }
    }
    qsort(ns, (size_t)rounds, sizeof(ns[0]), bench_cmp_u64);
    const uint64_t med = ns[rounds / 2];
    free(ns);
    der_builder_cleanup(&ab);
    cmp_mac_key_cleanse(&key);
    return med;
}

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 31;
    if (rounds < 1 || !cm_ok(cm_runtime_init())) {
        (void)fprintf(stderr, "usage: pbm_cost_bench [rounds >= 1]\n");
        return 2;
    }
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.pbm_max_iterations = 1000000;
    lim.pbmac1_max_iterations = 1000000;
    cmp_protect_ctx *ctx = NULL;
    if (!cm_ok(cmp_protect_ctx_new(&ctx, NULL, NULL, &lim))) {
        return 1;
    }
    static const uint64_t k_iters[] = {1000, 2000, 10000, 100000};
    printf("pbm_cost_bench: median of %d verifications with a wrong secret, 1 KiB protected\n\n",
           rounds);
    printf("| kind   | iterations | µs/request | ns/iteration |\n");
    printf("|--------|-----------:|-----------:|-------------:|\n");
    int rc = 0;
    for (int k = 0; k < 2; k++) {
        double per_iter = 0;
        for (size_t i = 0; i < sizeof(k_iters) / sizeof(k_iters[0]); i++) {
            const uint64_t ns = bench_one(ctx, k == 1, k_iters[i], rounds);
            if (ns == 0) {
                (void)fprintf(stderr, "pbm_cost_bench: %s at %llu failed\n",
                              k == 1 ? "PBMAC1" : "PBM", (unsigned long long)k_iters[i]);
                rc = 1;
                continue;
            }
            per_iter = (double)ns / (double)k_iters[i];
            printf("| %-6s | %10llu | %10.1f | %12.1f |\n", k == 1 ? "PBMAC1" : "PBM",
                   (unsigned long long)k_iters[i], (double)ns / 1000.0, per_iter);
        }
        if (per_iter > 0) {
            printf("| %-6s | 1 ms buys about %.0f iterations |\n", k == 1 ? "PBMAC1" : "PBM",
                   1e6 / per_iter);
        }
    }
    cmp_protect_ctx_free(ctx);
    return rc;
}
