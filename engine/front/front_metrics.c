// engine/front: the front's counters and the Prometheus text of GET /metrics (text exposition
// format 0.0.4).
#include <stdarg.h>
#include <stddef.h>
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

// --- limits and operations (issue 23): transport counters, refusals by reason, descriptors,
// the store's free space, failed HSM calls. Every family has a # HELP line.

// front_ops_put appends to |out| (|*used| of |cap| bytes taken; stops once full).
__attribute__((format(printf, 4, 5))) static void front_ops_put(char *out, size_t cap, size_t *used,
                                                                const char *fmt, ...)
{
    if (*used >= cap) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(out + *used, cap - *used, fmt, ap);
    va_end(ap);
    *used = n < 0 ? cap : *used + (size_t)n > cap ? cap : *used + (size_t)n;
}

// front_ops_family appends one single-sample family: HELP, TYPE and the value.
static void front_ops_family(char *out, size_t cap, size_t *used, const char *name,
                             const char *type, const char *help, uint64_t v)
{
    front_ops_put(out, cap, used, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
                  name, (unsigned long long)v);
}

// front_metrics_write_ops writes the families of the limits and operations into |out|.
static size_t front_metrics_write_ops(front_daemon *d, char *out, size_t cap)
{
    size_t used = 0;
    net_stats ns;
    memset(&ns, 0, sizeof(ns));
    if (d->net != NULL) {
        net_server_stats(d->net, &ns);
    }
    front_ops_put(out, cap, &used,
                  "# HELP certmint_connections_rejected_total Connections refused at accept with "
                  "503 and Retry-After, by the cap they hit: full (max_connections of an I/O "
                  "thread, or stopping), peer (max_connections_per_peer), admin "
                  "(admin_max_connections).\n"
                  "# TYPE certmint_connections_rejected_total counter\n"
                  "certmint_connections_rejected_total{reason=\"full\"} %llu\n"
                  "certmint_connections_rejected_total{reason=\"peer\"} %llu\n"
                  "certmint_connections_rejected_total{reason=\"admin\"} %llu\n",
                  (unsigned long long)ns.rejected_full, (unsigned long long)ns.rejected_peer,
                  (unsigned long long)ns.rejected_admin);
    front_ops_put(out, cap, &used,
                  "# HELP certmint_connections_max Connections the server accepts at once, all "
                  "I/O threads together (max_connections after the descriptor check at start; "
                  "admin_max_connections).\n"
                  "# TYPE certmint_connections_max gauge\n"
                  "certmint_connections_max{listener=\"main\"} %llu\n"
                  "certmint_connections_max{listener=\"admin\"} %llu\n",
                  (unsigned long long)d->conns_per_loop * d->io_threads,
                  (unsigned long long)d->admin_per_loop * d->io_threads);
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } k_net[] = {
        {"certmint_connections_admin_open", "gauge",
         "Connections open now on the admin listeners (also in certmint_connections_open).",
         offsetof(net_stats, admin_open)},
        {"certmint_accept_emfile_total", "counter",
         "Times accepting paused for 100 ms because no descriptor was left (EMFILE, ENFILE).",
         offsetof(net_stats, accept_emfile)},
        {"certmint_cq_overflow_total", "counter",
         "I/O loop turns that found completions in the kernel's overflow list (the completion "
         "queue was full); none is lost.",
         offsetof(net_stats, cq_overflow)},
        {"certmint_cq_dropped_total", "counter",
         "Completions the kernel dropped (it ran out of memory for its overflow list); each is "
         "logged as an error.",
         offsetof(net_stats, cq_dropped)},
        {"certmint_recv_rearms_total", "counter",
         "Multishot receives the kernel ended while data still came (completion queue "
         "pressure), re-armed.",
         offsetof(net_stats, recv_rearms)},
        {"certmint_connections_closed_busy_total", "counter",
         "Connections closed by a transport error with a request in progress (each is logged).",
         offsetof(net_stats, closed_busy)},
        {"certmint_connections_eof_busy_total", "counter",
         "Peers that stopped sending with a request in progress, which was still answered.",
         offsetof(net_stats, eof_busy)},
        {"certmint_connections_lingered_total", "counter",
         "Lingering closes after a last answer, so a client still sending reads the status "
         "(RFC 9112 9.6).",
         offsetof(net_stats, lingered)},
    };
    for (size_t i = 0; i < sizeof(k_net) / sizeof(k_net[0]); i++) {
        uint64_t v;
        memcpy(&v, (const uint8_t *)&ns + k_net[i].off, sizeof(v));
        front_ops_family(out, cap, &used, k_net[i].name, k_net[i].type, k_net[i].help, v);
    }
    hsm_pool_stats hs;
    hsm_pool_get_stats(d->pool, &hs);
    front_ops_family(out, cap, &used, "certmint_hsm_sign_call_failures_total", "counter",
                     "Failed C_SignInit and C_Sign calls, also those whose job then succeeded on "
                     "a reopened session (certmint_hsm_failures_total counts failed jobs).",
                     hs.sign_calls_failed);
    front_ops_family(out, cap, &used, "certmint_hsm_retries_total", "counter",
                     "Signing jobs retried once on a reopened session after a session or device "
                     "error.",
                     hs.retried);
    front_ops_family(out, cap, &used, "process_open_fds", "gauge",
                     "Open file descriptors (read by the maintenance loop every 2 s).",
                     __atomic_load_n(&d->fds_open, __ATOMIC_RELAXED));
    front_ops_family(out, cap, &used, "process_max_fds", "gauge",
                     "The soft RLIMIT_NOFILE, raised to the hard limit at start.",
                     __atomic_load_n(&d->fd_limit, __ATOMIC_RELAXED));
    const uint64_t free_bytes = store_space_free(&d->space);
    if (free_bytes != STORE_SPACE_UNKNOWN) {
        front_ops_family(out, cap, &used, "certmint_store_free_bytes", "gauge",
                         "Free space of the filesystem holding the store (statvfs, read by the "
                         "maintenance loop every 2 s).",
                         free_bytes);
    }
    front_ops_family(out, cap, &used, "certmint_store_min_free_bytes", "gauge",
                     "store_min_free: below it new enrolments are refused (0: never).",
                     d->space.min_free);
    front_ops_family(out, cap, &used, "certmint_store_low_space_refusals_total", "counter",
                     "Enrolments refused (systemUnavail) because the store's filesystem had less "
                     "free space than store_min_free.",
                     store_space_refused(&d->space));
    return used;
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
    used += used < cap ? front_metrics_write_ops(d, out + used, cap - used) : 0;
    return used;
}
