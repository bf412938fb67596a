// engine/front: the front's counters and the Prometheus text of GET /metrics (text exposition
// format 0.0.4): every family with its HELP and TYPE. tools/monitoring/ holds the alert rules
// and the dashboard over these series; tests/monitoring checks them with `promtool check
// metrics` on a live instance.
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/front/front_internal.h"

// The request duration buckets' upper bounds in µs (FRONT_DUR_BUCKETS of them, then +Inf):
// an enrolment takes a millisecond on a local token and tens on a network HSM.
static const uint64_t k_front_dur_le_us[FRONT_DUR_BUCKETS] = {
    250,    500,    1000,   2500,    5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

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

// front_failinfo_name names a PKIFailureInfo bit as RFC 9810 §5.2.3 does.
static const char *front_failinfo_name(int bit)
{
    static const char *const k_names[FRONT_FAILINFO] = {"badAlg",
                                                        "badMessageCheck",
                                                        "badRequest",
                                                        "badTime",
                                                        "badCertId",
                                                        "badDataFormat",
                                                        "wrongAuthority",
                                                        "incorrectData",
                                                        "missingTimeStamp",
                                                        "badPOP",
                                                        "certRevoked",
                                                        "certConfirmed",
                                                        "wrongIntegrity",
                                                        "badRecipientNonce",
                                                        "timeNotAvailable",
                                                        "unacceptedPolicy",
                                                        "unacceptedExtension",
                                                        "addInfoNotAvailable",
                                                        "badSenderNonce",
                                                        "badCertTemplate",
                                                        "signerNotTrusted",
                                                        "transactionIdInUse",
                                                        "unsupportedVersion",
                                                        "notAuthorized",
                                                        "systemUnavail",
                                                        "systemFailure",
                                                        "duplicateCertReq"};
    return bit >= 0 && bit < FRONT_FAILINFO ? k_names[bit] : "-";
}

void front_metrics_count(front_daemon *d, const srv_summary *s, uint64_t us)
{
    front_counters *c = &d->counters;
    const int o = s->fail_bit < 0 ? 0 : 1;
    __atomic_add_fetch(o == 0 ? &c->n_ok : &c->n_rejected, 1, __ATOMIC_RELAXED);
    if (s->fail_bit >= 0 && s->fail_bit < FRONT_FAILINFO) {
        __atomic_add_fetch(&c->n_failinfo[s->fail_bit], 1, __ATOMIC_RELAXED);
    }
    if (s->body_type >= 0 && s->body_type < FRONT_BODY_TYPES) {
        __atomic_add_fetch(&c->n_body[s->body_type][o], 1, __ATOMIC_RELAXED);
        size_t b = 0;
        while (b < FRONT_DUR_BUCKETS && us > k_front_dur_le_us[b]) {
            b++;
        }
        __atomic_add_fetch(&c->dur_hist[s->body_type][o][b], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&c->dur_sum_us[s->body_type][o], us, __ATOMIC_RELAXED);
    }
    if (s->mac_failed) {
        // The KDF work an unauthenticated client made the server do (issue 14), by MAC kind.
        const size_t k = s->prot_kind == CMP_PROT_PBMAC1    ? FRONT_MAC_PBMAC1
                         : s->prot_kind == CMP_PROT_KEY_MAC ? FRONT_MAC_KEY
                                                            : FRONT_MAC_PBM;
        __atomic_add_fetch(&c->n_mac_failed[k], 1, __ATOMIC_RELAXED);
    }
    for (size_t i = 0; i < SRV_STAGE_COUNT; i++) {
        if (s->stage_ns[i] != 0) {
            __atomic_add_fetch(&c->stage_sum_us[i], s->stage_ns[i] / 1000u, __ATOMIC_RELAXED);
        }
    }
    if (s->stage_ns[SRV_STAGE_HSM] != 0) {
        const uint64_t hsm_us = s->stage_ns[SRV_STAGE_HSM] / 1000u;
        size_t b = 0;
        while (b + 1 < FRONT_HIST && (1ull << b) < hsm_us) {
            b++;
        }
        __atomic_add_fetch(&c->hsm_hist[b], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&c->hsm_sum_us, hsm_us, __ATOMIC_RELAXED);
    }
}

void front_daemon_status(const front_daemon *d, front_status *out)
{
    static const int k_enrol[] = {CMP_BODY_IR, CMP_BODY_CR, CMP_BODY_KUR, CMP_BODY_P10CR};
    const front_counters *c = &d->counters;
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < sizeof(k_enrol) / sizeof(k_enrol[0]); i++) {
        out->enrolments += __atomic_load_n(&c->n_body[k_enrol[i]][0], __ATOMIC_RELAXED);
    }
    out->requests = __atomic_load_n(&c->n_ok, __ATOMIC_RELAXED) +
                    __atomic_load_n(&c->n_rejected, __ATOMIC_RELAXED);
    out->hsm_sessions = d->cfg->hsm_sessions;
    out->hsm_queued = d->pool != NULL ? hsm_pool_depth(d->pool) : 0;
}

// front_text is the /metrics text being written: appends are cut off (and |full| set) at cap.
typedef struct front_text {
    char *p;
    size_t cap, used;
    bool full;
} front_text;

static void front_put(front_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void front_put(front_text *t, const char *fmt, ...)
{
    if (t->full) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(t->p + t->used, t->cap - t->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= t->cap - t->used) {
        t->full = true; // the last line is cut; the caller returns what fits
        t->used = t->cap;
        return;
    }
    t->used += (size_t)n;
}

// front_family writes a metric family's HELP and TYPE lines.
static void front_family(front_text *t, const char *name, const char *type, const char *help)
{
    front_put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

// front_scalar writes a family of one unlabelled sample.
static void front_scalar(front_text *t, const char *name, const char *type, const char *help,
                         uint64_t v)
{
    front_family(t, name, type, help);
    front_put(t, "%s %llu\n", name, (unsigned long long)v);
}

// front_hist writes a histogram family from log2 buckets: bucket i counts values up to
// 2^i (|batch|: batches of 2^i .. 2^(i+1)-1, so up to 2^(i+1)-1), times |scale|.
static void front_hist(front_text *t, const char *name, const char *help, const uint64_t *buckets,
                       size_t n, double scale, double sum, bool batch)
{
    front_family(t, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += buckets[i];
        const double le = batch ? (double)((2ull << i) - 1) : (double)(1ull << i);
        front_put(t, "%s_bucket{le=\"%g\"} %llu\n", name, le * scale, (unsigned long long)cum);
    }
    front_put(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name,
              (unsigned long long)cum, name, sum, name, (unsigned long long)cum);
}

// front_mac_failures writes certmint_mac_failures_total: MACs that did not verify, by kind (a
// PBM or PBMAC1 failure cost its key derivation before the MAC was known to be bad).
static void front_mac_failures(front_text *t, const front_counters *c)
{
    static const char *const k_kinds[FRONT_MAC_KINDS] = {"pbm", "pbmac1", "key"};
    front_family(t, "certmint_mac_failures_total", "counter",
                 "MAC-protected requests whose MAC did not verify, by MAC kind (pbm and pbmac1 "
                 "paid their key derivation first).");
    for (size_t k = 0; k < FRONT_MAC_KINDS; k++) {
        front_put(t, "certmint_mac_failures_total{kind=\"%s\"} %llu\n", k_kinds[k],
                  (unsigned long long)__atomic_load_n(&c->n_mac_failed[k], __ATOMIC_RELAXED));
    }
}

// front_stages writes certmint_request_stage_seconds_total: where the requests' time went, by
// stage (srv.h: srv_stage); divided by the requests, the mean time a request spends in each.
static void front_stages(front_text *t, const front_counters *c)
{
    static const char *const k_stages[SRV_STAGE_COUNT] = {"parse", "verify", "build",
                                                          "hsm",   "store",  "respond"};
    front_family(t, "certmint_request_stage_seconds_total", "counter",
                 "Time requests spent in each stage, summed over requests: parse, verify "
                 "(protection, POPO, policy), build (the reservation, the TBSCertificate), hsm "
                 "(the signature), store (the durable record), respond.");
    for (size_t i = 0; i < SRV_STAGE_COUNT; i++) {
        front_put(t, "certmint_request_stage_seconds_total{stage=\"%s\"} %g\n", k_stages[i],
                  (double)__atomic_load_n(&c->stage_sum_us[i], __ATOMIC_RELAXED) / 1e6);
    }
}

// front_durations writes certmint_request_duration_seconds: one labelled histogram per body
// type and outcome that has seen a request.
static void front_durations(front_text *t, const front_counters *c)
{
    static const char k_name[] = "certmint_request_duration_seconds";
    front_family(t, k_name, "histogram",
                 "Time from a CMP request's arrival to its answer, by body type and outcome.");
    for (int b = 0; b < FRONT_BODY_TYPES; b++) {
        for (int o = 0; o < 2; o++) {
            uint64_t counts[FRONT_DUR_BUCKETS + 1], total = 0;
            for (size_t i = 0; i <= FRONT_DUR_BUCKETS; i++) {
                counts[i] = __atomic_load_n(&c->dur_hist[b][o][i], __ATOMIC_RELAXED);
                total += counts[i];
            }
            if (total == 0) {
                continue;
            }
            const char *body = front_body_name(b), *outcome = o == 0 ? "ok" : "rejected";
            uint64_t cum = 0;
            for (size_t i = 0; i < FRONT_DUR_BUCKETS; i++) {
                cum += counts[i];
                front_put(t, "%s_bucket{body=\"%s\",outcome=\"%s\",le=\"%g\"} %llu\n", k_name, body,
                          outcome, (double)k_front_dur_le_us[i] / 1e6, (unsigned long long)cum);
            }
            const double sum =
                (double)__atomic_load_n(&c->dur_sum_us[b][o], __ATOMIC_RELAXED) / 1e6;
            front_put(t,
                      "%s_bucket{body=\"%s\",outcome=\"%s\",le=\"+Inf\"} %llu\n"
                      "%s_sum{body=\"%s\",outcome=\"%s\"} %g\n"
                      "%s_count{body=\"%s\",outcome=\"%s\"} %llu\n",
                      k_name, body, outcome, (unsigned long long)total, k_name, body, outcome, sum,
                      k_name, body, outcome, (unsigned long long)total);
        }
    }
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

// front_metrics_write_abuse writes what the engine's abuse limits did (issue 23): the KDF
// pool, the MAC-failure back-off, the error-signature budget and the retransmission cache.
static void front_metrics_write_abuse(front_daemon *d, char *out, size_t cap, size_t *used)
{
    srv_engine_stats es;
    memset(&es, 0, sizeof(es));
    if (d->engine != NULL) {
        srv_engine_get_stats(d->engine, &es);
    }
    front_ops_put(out, cap, used,
                  "# HELP certmint_mac_backoff_total MAC-protected requests refused without key "
                  "derivation (systemUnavail) because their senderKID, or the address they came "
                  "from, had mac_failures_max wrong MACs within mac_failure_window.\n"
                  "# TYPE certmint_mac_backoff_total counter\n"
                  "certmint_mac_backoff_total{by=\"senderKID\"} %llu\n"
                  "certmint_mac_backoff_total{by=\"peer\"} %llu\n",
                  (unsigned long long)es.mac_backoff_kid, (unsigned long long)es.mac_backoff_peer);
    front_ops_put(out, cap, used,
                  "# HELP certmint_unauthenticated_errors_total Error answers to messages that "
                  "could not be parsed or authenticated, by protection: signed (an HSM "
                  "signature), or none once the peer spent error_signatures_per_peer.\n"
                  "# TYPE certmint_unauthenticated_errors_total counter\n"
                  "certmint_unauthenticated_errors_total{protection=\"signed\"} %llu\n"
                  "certmint_unauthenticated_errors_total{protection=\"none\"} %llu\n",
                  (unsigned long long)es.error_signed, (unsigned long long)es.error_unprotected);
    front_ops_family(out, cap, used, "certmint_kdf_jobs_total", "counter",
                     "PBM and PBMAC1 MAC verifications done by the KDF threads (kdf_threads).",
                     es.kdf_done);
    front_ops_family(out, cap, used, "certmint_kdf_inline_total", "counter",
                     "PBM and PBMAC1 MAC verifications done on the I/O thread instead: a good "
                     "address of the senderKID while no check waited (kdf_inline).",
                     es.kdf_inline);
    front_ops_family(out, cap, used, "certmint_kdf_queue_depth", "gauge",
                     "MAC verifications waiting for a KDF thread now.", es.kdf_queued);
    front_ops_family(out, cap, used, "certmint_kdf_refused_total", "counter",
                     "MAC-protected requests refused (systemUnavail) because kdf_max_queue "
                     "verifications were waiting.",
                     es.kdf_refused);
    front_ops_family(out, cap, used, "certmint_retransmissions_total", "counter",
                     "Resent requests answered from the retransmission cache with the answer "
                     "the same request got before.",
                     es.resend_hits);
    front_ops_family(out, cap, used, "certmint_retransmit_cache_entries", "gauge",
                     "Answers held for resends now (retransmit_cache_entries at most).",
                     es.resend_entries);
    front_ops_family(out, cap, used, "certmint_retransmit_cache_bytes", "gauge",
                     "Memory of the answers held for resends (retransmit_cache_bytes at most).",
                     es.resend_bytes);
    front_ops_family(out, cap, used, "certmint_retransmit_cache_evictions_total", "counter",
                     "Answers dropped from the retransmission cache for room before their "
                     "retransmit_window ended.",
                     es.resend_evicted);
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
    front_metrics_write_abuse(d, out, cap, &used);
    if (used < cap) {
        used += front_tls_metrics_write(d, &ns, out + used, cap - used);
    }
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
    front_text t = {out, cap, 0, false};

    front_family(&t, "certmint_requests_total", "counter",
                 "CMP requests answered, by outcome (rejected: answered with a CMP error).");
    front_put(&t,
              "certmint_requests_total{outcome=\"ok\"} %llu\n"
              "certmint_requests_total{outcome=\"rejected\"} %llu\n",
              (unsigned long long)__atomic_load_n(&c->n_ok, __ATOMIC_RELAXED),
              (unsigned long long)__atomic_load_n(&c->n_rejected, __ATOMIC_RELAXED));
    // Requests by body type and outcome, all CAs together.
    front_family(&t, "certmint_cmp_requests_total", "counter",
                 "CMP requests answered, by request body type and outcome.");
    for (int b = 0; b < FRONT_BODY_TYPES; b++) {
        for (int o = 0; o < 2; o++) {
            const uint64_t v = __atomic_load_n(&c->n_body[b][o], __ATOMIC_RELAXED);
            if (v != 0) {
                front_put(&t, "certmint_cmp_requests_total{body=\"%s\",outcome=\"%s\"} %llu\n",
                          front_body_name(b), o == 0 ? "ok" : "rejected", (unsigned long long)v);
            }
        }
    }
    front_family(&t, "certmint_rejections_total", "counter",
                 "CMP requests rejected, by the PKIFailureInfo bit of the error answer.");
    for (int f = 0; f < FRONT_FAILINFO; f++) {
        const uint64_t v = __atomic_load_n(&c->n_failinfo[f], __ATOMIC_RELAXED);
        if (v != 0) {
            front_put(&t, "certmint_rejections_total{failinfo=\"%s\"} %llu\n",
                      front_failinfo_name(f), (unsigned long long)v);
        }
    }
    front_mac_failures(&t, c);
    front_stages(&t, c);
    front_durations(&t, c);
    front_scalar(&t, "certmint_http_errors_total", "counter",
                 "HTTP requests answered with an HTTP error instead of CMP.",
                 __atomic_load_n(&c->n_http_errors, __ATOMIC_RELAXED));
    front_scalar(&t, "certmint_connections_open", "gauge", "Connections open now.", ns.open);
    front_scalar(&t, "certmint_connections_accepted_total", "counter",
                 "Connections accepted, refused ones included.", ns.accepted);
    front_scalar(&t, "certmint_connections_rejected_full_total", "counter",
                 "Connections refused because the I/O loop had max_connections open.",
                 ns.rejected_full);
    front_scalar(&t, "certmint_connections_timeouts_total", "counter",
                 "Connections that missed header_timeout or idle_timeout.", ns.timeouts);
    front_scalar(&t, "certmint_hsm_sessions", "gauge",
                 "PKCS#11 sessions, one signing thread each (hsm_sessions).", d->cfg->hsm_sessions);
    front_scalar(&t, "certmint_hsm_queue_depth", "gauge", "Signatures waiting for an HSM session.",
                 hsm_pool_depth(d->pool));
    front_scalar(&t, "certmint_hsm_signatures_total", "counter", "Signatures the HSM made.",
                 hs.signed_ok);
    front_scalar(&t, "certmint_hsm_failures_total", "counter",
                 "Signature jobs that failed (shutdown included).", hs.failed);
    front_scalar(&t, "certmint_hsm_sessions_reopened_total", "counter",
                 "HSM sessions reopened after a session or device error.", hs.reopened);
    front_scalar(&t, "certmint_store_jobs_total", "counter", "Store jobs completed.", ss.jobs);
    front_scalar(&t, "certmint_store_jobs_failed_total", "counter",
                 "Store jobs completed with an error.", ss.jobs_failed);
    front_scalar(&t, "certmint_store_commit_failures_total", "counter",
                 "Store transactions that failed as a whole.", ss.commit_failures);
    front_scalar(&t, "certmint_store_queue_depth", "gauge", "Store jobs waiting for the writer.",
                 ss.queue_depth);
    front_scalar(&t, "certmint_store_checkpoints_total", "counter",
                 "WAL checkpoint passes of the background checkpointer.", ss.checkpoints);
    front_scalar(&t, "certmint_store_wal_pages", "gauge",
                 "Size of the store's WAL in pages after the last commit.", ss.wal_pages);
    // The store's database connection (PostgreSQL; SQLite is always up and never reconnects).
    front_scalar(&t, "certmint_store_up", "gauge",
                 "1 while the store reaches its database, 0 while it cannot (/healthz is 503).",
                 store_healthy(d->store) ? 1 : 0);
    front_scalar(&t, "certmint_store_reconnects_total", "counter",
                 "Database connections re-established after a loss (PostgreSQL).", ss.reconnects);
    front_scalar(&t, "certmint_store_status_cache_hits_total", "counter",
                 "Signer-status lookups answered from the cache.", ss.status_hits);
    front_scalar(&t, "certmint_store_status_cache_misses_total", "counter",
                 "Signer-status lookups that read the database.", ss.status_misses);
    front_scalar(&t, "certmint_store_status_cache_invalidations_total", "counter",
                 "Cached signer statuses dropped after a change (this node's or, announced, "
                 "another's).",
                 ss.status_invalidations);
    front_scalar(&t, "certmint_store_status_cache_flushes_total", "counter",
                 "Times the whole signer-status cache was dropped.", ss.status_flushes);
    front_scalar(&t, "certmint_store_round_trips_total", "counter",
                 "Round trips the store's writer made for batches (PostgreSQL: one per batch).",
                 ss.round_trips);
    uint64_t hh[FRONT_HIST];
    for (size_t i = 0; i < FRONT_HIST; i++) {
        hh[i] = __atomic_load_n(&c->hsm_hist[i], __ATOMIC_RELAXED);
    }
    front_hist(&t, "certmint_hsm_sign_seconds",
               "Time a request's certificate signature took, queueing for a session included.", hh,
               FRONT_HIST, 1e-6, (double)__atomic_load_n(&c->hsm_sum_us, __ATOMIC_RELAXED) / 1e6,
               false);
    front_hist(&t, "certmint_store_commit_seconds",
               "Time from BEGIN to COMMIT of a store transaction.", ss.commit_us_hist,
               STORE_HIST_BUCKETS, 1e-6, (double)ss.commit_ns_total / 1e9, false);
    front_hist(&t, "certmint_store_job_seconds",
               "Time from a store job's submission to its completion (the sum is not kept).",
               ss.job_us_hist, STORE_HIST_BUCKETS, 1e-6, 0.0, false);
    front_hist(&t, "certmint_store_batch_size", "Jobs per store transaction (the sum is not kept).",
               ss.batch_hist, STORE_HIST_BUCKETS, 1.0, 0.0, true);
    if (!t.full) {
        t.used += front_metrics_write_ops(d, t.p + t.used, t.cap - t.used);
        front_coap_metrics_write(&d->counters.coap, t.p, t.cap, &t.used); // CMP over CoAP
    }
    return t.used;
}
