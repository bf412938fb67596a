// The results of a load run: latency percentiles, the text report and the JSON record
// (bench/compare.sh reads it).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/certmint_bench.h"

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a;
    const uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double bench_pct_ms(const uint64_t *v, size_t n, double pct)
{
    if (n == 0) {
        return 0;
    }
    size_t k = (size_t)(pct / 100.0 * (double)n);
    if (k >= n) {
        k = n - 1;
    }
    return (double)v[k] / 1e6;
}

double bench_percentile_ms(const uint64_t *lat, size_t num, double pct)
{
    uint64_t *copy = num > 0 ? malloc(num * sizeof(*copy)) : NULL;
    if (copy == NULL) {
        return 0;
    }
    memcpy(copy, lat, num * sizeof(*copy));
    qsort(copy, num, sizeof(*copy), bench_cmp_u64);
    const double ms = bench_pct_ms(copy, num, pct);
    free(copy);
    return ms;
}

double bench_hist_bound_us(size_t i)
{
    // The Renard R10 series: ten steps of about 10^0.1 per decade, in round numbers.
    static const double k_r10[BENCH_HIST_PER_DECADE] = {1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8, 10};
    double v = BENCH_HIST_MIN_US * k_r10[i % BENCH_HIST_PER_DECADE];
    for (size_t d = 0; d < i / BENCH_HIST_PER_DECADE; d++) {
        v *= 10;
    }
    return v;
}

void bench_latency_summary(bench_result *r, uint64_t *lat, size_t num_lat)
{
    qsort(lat, num_lat, sizeof(*lat), bench_cmp_u64);
    r->p50 = bench_pct_ms(lat, num_lat, 50);
    r->p90 = bench_pct_ms(lat, num_lat, 90);
    r->p99 = bench_pct_ms(lat, num_lat, 99);
    r->max = num_lat > 0 ? (double)lat[num_lat - 1] / 1e6 : 0;
    memset(r->hist, 0, sizeof(r->hist));
    size_t b = 0;
    double bound_ns = bench_hist_bound_us(0) * 1e3;
    for (size_t i = 0; i < num_lat; i++) { // sorted: the bucket only moves up
        while ((double)lat[i] > bound_ns && b + 1 < BENCH_HIST_BUCKETS) {
            b++;
            bound_ns = bench_hist_bound_us(b) * 1e3;
        }
        r->hist[b]++;
    }
}

static const char *bench_protection_name(const bench_opts *o)
{
    if (o->flow == BENCH_FLOW_KUR || o->flow == BENCH_FLOW_RR) {
        return "signature"; // by the enrolled certificate
    }
    if (o->key_mac != 0) {
        return crmf_alg_get((crmf_alg_id)o->key_mac)->name;
    }
    return o->secret != NULL ? (o->pbmac1 ? "pbmac1" : "pbm") : "signature";
}

void bench_report(const bench_run *run, const bench_result *r)
{
    const bench_opts *o = run->o;
    char batch[48] = "";
    if (bench_flow_is_nested(o->flow)) {
        (void)snprintf(batch, sizeof(batch), " (batches of %zu)", o->batch);
    }
    printf("certmint-bench: %s%s, %s protection, %s keys, %zu connection%s (%s), %s\n",
           bench_flow_names[o->flow], batch, bench_protection_name(o), bench_key_names[o->key_type],
           o->connections, o->connections == 1 ? "" : "s",
           o->reconnect ? "new TCP connection per transaction" : "keep-alive", o->url);
    printf("  %-18s %llu ok, %llu failed in %.3f s%s\n", "enrolments", (unsigned long long)r->ok,
           (unsigned long long)r->failed, r->seconds,
           r->ran_out ? " (all prepared requests used: raise --prepare)" : "");
    printf("  %-18s %.1f enrolments/s\n", "rate", r->eps);
    if (run->unfinished != 0) {
        printf("  %-18s %llu transactions still unanswered %.1f s after the window closed\n",
               "unfinished", (unsigned long long)run->unfinished,
               o->timeout < 2 ? o->timeout : 2.0);
    }
    printf("  %-18s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", "latency ms", r->p50, r->p90, r->p99,
           r->max);
    printf("  %-18s %.2f s during the run (%.1f%% of one core); %.2f s preparing before it\n",
           "client CPU", r->cpu, r->seconds > 0 ? 100.0 * r->cpu / r->seconds : 0.0,
           r->prep_seconds);
    printf("  %-18s %zu\n", "TCP connects", run->reconnects);
    if (run->waiting != 0) {
        printf("  %-18s %llu answered waiting, %llu pollReqs (%.2f per waiting enrolment)\n",
               "delayed delivery", (unsigned long long)run->waiting, (unsigned long long)run->polls,
               (double)run->polls / (double)run->waiting);
        printf("  %-18s direct %zu: p50 %.2f  p99 %.2f; polled %zu: p50 %.2f  p99 %.2f\n",
               "latency ms", run->num_lat - run->num_polled, r->direct_p50, r->direct_p99,
               run->num_polled, r->polled_p50, r->polled_p99);
    }
    if (run->tls_ctx != NULL) {
        printf("  %-18s %llu full, %llu resumed\n", "TLS handshakes",
               (unsigned long long)run->tls_full, (unsigned long long)run->tls_resumed);
    }
    if (r->failed == 0) {
        printf("  %-18s none\n", "errors");
    }
    for (size_t f = 1; f < BENCH_FAIL_COUNT; f++) {
        if (run->fails[f] != 0) {
            printf("  %-18s %-16s %llu\n", "errors", bench_fail_name((bench_fail)f),
                   (unsigned long long)run->fails[f]);
        }
    }
}

void bench_write_json(const bench_run *run, const bench_result *r)
{
    const bench_opts *o = run->o;
    FILE *f = strcmp(o->json_path, "-") == 0 ? stdout : fopen(o->json_path, "w");
    if (f == NULL) {
        bench_die("cannot write --json");
    }
    (void)fprintf(
        f,
        "{\"url\": \"%s\", \"flow\": \"%s\", \"protection\": \"%s\", \"key_type\": "
        "\"%s\", \"connections\": %zu, \"reconnect\": %s, \"ok\": %llu, \"failed\": "
        "%llu, \"seconds\": %.3f, \"eps\": %.1f, \"latency_ms\": {\"p50\": %.3f, "
        "\"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}, \"client_cpu_s\": %.3f, "
        "\"prepare_s\": %.3f, \"ran_out\": %s, \"tcp_connects\": %zu, \"unfinished\": "
        "%llu, \"tls\": %s, \"tls_full\": %llu, \"tls_resumed\": %llu, \"batch\": %zu, "
        "\"errors\": {",
        o->url, bench_flow_names[o->flow], bench_protection_name(o), bench_key_names[o->key_type],
        o->connections, o->reconnect ? "true" : "false", (unsigned long long)r->ok,
        (unsigned long long)r->failed, r->seconds, r->eps, r->p50, r->p90, r->p99, r->max, r->cpu,
        r->prep_seconds, r->ran_out ? "true" : "false", run->reconnects,
        (unsigned long long)run->unfinished, run->tls_ctx != NULL ? "true" : "false",
        (unsigned long long)run->tls_full, (unsigned long long)run->tls_resumed, o->batch);
    for (size_t k = 1; k < BENCH_FAIL_COUNT; k++) {
        (void)fprintf(f, "%s\"%s\": %llu", k == 1 ? "" : ", ", bench_fail_name((bench_fail)k),
                      (unsigned long long)run->fails[k]);
    }
    (void)fprintf(f,
                  "}, \"waiting\": %llu, \"polls\": %llu, \"latency_direct_ms\": {\"n\": %zu, "
                  "\"p50\": %.3f, \"p99\": %.3f}, \"latency_polled_ms\": {\"n\": %zu, \"p50\": "
                  "%.3f, \"p99\": %.3f}",
                  (unsigned long long)run->waiting, (unsigned long long)run->polls,
                  run->num_lat - run->num_polled, r->direct_p50, r->direct_p99, run->num_polled,
                  r->polled_p50, r->polled_p99);
    // The histogram, up to its last non-empty bucket: upper bounds in ms and counts.
    size_t last = 0;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        last = r->hist[i] != 0 ? i + 1 : last;
    }
    (void)fprintf(f, ", \"latency_histogram\": {\"le_ms\": [");
    for (size_t i = 0; i < last; i++) {
        (void)fprintf(f, "%s%.4g", i == 0 ? "" : ", ", bench_hist_bound_us(i) / 1e3);
    }
    (void)fprintf(f, "], \"count\": [");
    for (size_t i = 0; i < last; i++) {
        (void)fprintf(f, "%s%llu", i == 0 ? "" : ", ", (unsigned long long)r->hist[i]);
    }
    (void)fprintf(f, "]}}\n");
    if (f != stdout) {
        (void)fclose(f);
    }
}
