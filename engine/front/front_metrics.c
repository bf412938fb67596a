// engine/front: the front's counters and the Prometheus text of GET /metrics (text exposition
// format 0.0.4).
#include <stdio.h>
#include <string.h>

#include "engine/front/front_internal.h"

const char *front_body_name(int body_type)
{
    static const char *const k_names[] = {
        "ir",   "ip",     "cr",    "cp",       "p10cr",   "popdecc", "popdecr",
        "kur",  "kup",    "krr",   "krp",      "rr",      "rp",      "ccr",
        "ccp",  "ckuann", "cann",  "rann",     "crlann",  "pkiconf", "nested",
        "genm", "genp",   "error", "certConf", "pollReq", "pollRep"};
    return body_type >= 0 && (size_t)body_type < sizeof(k_names) / sizeof(k_names[0])
               ? k_names[body_type]
               : "-";
}

void front_metrics_count(front_daemon *d, const srv_summary *s)
{
    front_counters *c = &d->counters;
    __atomic_add_fetch(s->fail_bit < 0 ? &c->n_ok : &c->n_rejected, 1, __ATOMIC_RELAXED);
    if (s->body_type >= 0 && s->body_type < FRONT_BODY_TYPES) {
        __atomic_add_fetch(&c->n_body[s->body_type][s->fail_bit < 0 ? 0 : 1], 1, __ATOMIC_RELAXED);
    }
    if (s->stage_ns[SRV_STAGE_HSM] != 0) {
        const uint64_t us = s->stage_ns[SRV_STAGE_HSM] / 1000u;
        size_t b = 0;
        while (b + 1 < FRONT_HIST && (1ull << b) < us) {
            b++;
        }
        __atomic_add_fetch(&c->hsm_hist[b], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&c->hsm_sum_us, us, __ATOMIC_RELAXED);
    }
}

// front_hist appends a Prometheus histogram from log2 buckets (bucket i counts values <= 2^i).
static size_t front_hist(char *out, size_t cap, const char *name, const uint64_t *buckets, size_t n,
                         double scale, double sum)
{
    size_t used = 0;
    uint64_t cum = 0;
    int k = snprintf(out, cap, "# TYPE %s histogram\n", name);
    used += k > 0 ? (size_t)k : 0;
    for (size_t i = 0; i < n && used < cap; i++) {
        cum += buckets[i];
        k = snprintf(out + used, cap - used, "%s_bucket{le=\"%g\"} %llu\n", name,
                     (double)(1ull << i) * scale, (unsigned long long)cum);
        used += k > 0 ? (size_t)k : 0;
    }
    if (used < cap) {
        k = snprintf(out + used, cap - used,
                     "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name,
                     (unsigned long long)cum, name, sum, name, (unsigned long long)cum);
        used += k > 0 ? (size_t)k : 0;
    }
    return used < cap ? used : cap;
}

size_t front_metrics_write(front_daemon *d, char *out, size_t cap)
{
    const front_counters *c = &d->counters;
    net_stats ns;
    memset(&ns, 0, sizeof(ns));
    if (d->net != NULL) {
        net_server_stats(d->net, &ns);
    }
    hsm_pool_stats hs;
    hsm_pool_get_stats(d->pool, &hs);
    store_stats ss;
    store_get_stats(d->store, &ss);
    int n = snprintf(
        out, cap,
        "# TYPE certmint_requests_total counter\n"
        "certmint_requests_total{outcome=\"ok\"} %llu\n"
        "certmint_requests_total{outcome=\"rejected\"} %llu\n"
        "# TYPE certmint_http_errors_total counter\ncertmint_http_errors_total %llu\n"
        "# TYPE certmint_connections_open gauge\ncertmint_connections_open %llu\n"
        "# TYPE certmint_connections_accepted_total counter\n"
        "certmint_connections_accepted_total %llu\n"
        "# TYPE certmint_connections_rejected_full_total counter\n"
        "certmint_connections_rejected_full_total %llu\n"
        "# TYPE certmint_connections_timeouts_total counter\n"
        "certmint_connections_timeouts_total %llu\n"
        "# TYPE certmint_hsm_queue_depth gauge\ncertmint_hsm_queue_depth %zu\n"
        "# TYPE certmint_hsm_signatures_total counter\ncertmint_hsm_signatures_total %llu\n"
        "# TYPE certmint_hsm_failures_total counter\ncertmint_hsm_failures_total %llu\n"
        "# TYPE certmint_hsm_sessions_reopened_total counter\n"
        "certmint_hsm_sessions_reopened_total %llu\n"
        "# TYPE certmint_store_jobs_total counter\ncertmint_store_jobs_total %llu\n"
        "# TYPE certmint_store_queue_depth gauge\ncertmint_store_queue_depth %llu\n"
        "# TYPE certmint_store_checkpoints_total counter\ncertmint_store_checkpoints_total %llu\n"
        "# TYPE certmint_store_wal_pages gauge\ncertmint_store_wal_pages %llu\n",
        (unsigned long long)__atomic_load_n(&c->n_ok, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&c->n_rejected, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&c->n_http_errors, __ATOMIC_RELAXED),
        (unsigned long long)ns.open, (unsigned long long)ns.accepted,
        (unsigned long long)ns.rejected_full, (unsigned long long)ns.timeouts,
        hsm_pool_depth(d->pool), (unsigned long long)hs.signed_ok, (unsigned long long)hs.failed,
        (unsigned long long)hs.reopened, (unsigned long long)ss.jobs,
        (unsigned long long)ss.queue_depth, (unsigned long long)ss.checkpoints,
        (unsigned long long)ss.wal_pages);
    size_t used = n > 0 && (size_t)n < cap ? (size_t)n : 0;
    // The store's database connection (PostgreSQL; SQLite is always up and never reconnects).
    n = snprintf(out + used, cap - used,
                 "# TYPE certmint_store_up gauge\ncertmint_store_up %d\n"
                 "# TYPE certmint_store_reconnects_total counter\n"
                 "certmint_store_reconnects_total %llu\n"
                 "# TYPE certmint_store_round_trips_total counter\n"
                 "certmint_store_round_trips_total %llu\n",
                 store_healthy(d->store) ? 1 : 0, (unsigned long long)ss.reconnects,
                 (unsigned long long)ss.round_trips);
    used += n > 0 && (size_t)n < cap - used ? (size_t)n : 0;
    // Requests by body type and outcome, all CAs together.
    n = snprintf(out + used, cap - used, "# TYPE certmint_cmp_requests_total counter\n");
    used += n > 0 ? (size_t)n : 0;
    for (int t = 0; t < FRONT_BODY_TYPES && used < cap; t++) {
        for (int o = 0; o < 2 && used < cap; o++) {
            const uint64_t v = __atomic_load_n(&c->n_body[t][o], __ATOMIC_RELAXED);
            if (v == 0) {
                continue;
            }
            n = snprintf(out + used, cap - used,
                         "certmint_cmp_requests_total{body=\"%s\",outcome=\"%s\"} %llu\n",
                         front_body_name(t), o == 0 ? "ok" : "rejected", (unsigned long long)v);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    if (used >= cap) {
        return cap;
    }
    uint64_t hh[FRONT_HIST];
    for (size_t i = 0; i < FRONT_HIST; i++) {
        hh[i] = __atomic_load_n(&c->hsm_hist[i], __ATOMIC_RELAXED);
    }
    used += front_hist(out + used, cap - used, "certmint_hsm_sign_seconds", hh, FRONT_HIST, 1e-6,
                       (double)__atomic_load_n(&c->hsm_sum_us, __ATOMIC_RELAXED) / 1e6);
    used += front_hist(out + used, cap - used, "certmint_store_commit_seconds", ss.commit_us_hist,
                       STORE_HIST_BUCKETS, 1e-6, (double)ss.commit_ns_total / 1e9);
    used += front_hist(out + used, cap - used, "certmint_store_job_seconds", ss.job_us_hist,
                       STORE_HIST_BUCKETS, 1e-6, 0.0);
    used += front_hist(out + used, cap - used, "certmint_store_batch_size", ss.batch_hist,
                       STORE_HIST_BUCKETS, 1.0, 0.0);
    return used;
}
