// store_bench: certificate inserts per second through the store's group commit, with
// synchronous=FULL and NORMAL and 1/4/16 submitting threads. Each submitter behaves like an I/O
// thread: it keeps |window| inserts in flight, drains its completion queue and submits a new
// insert for each completion. Each row: a fresh database file, |jobs| inserts of a ~1 KiB
// certificate record. Prints inserts/s, transactions, batch sizes and latency percentiles
// (from the store's log2 histograms: upper bounds of the bucket), and the mean time of a
// request-path lookup (store_cert_get by serial) on the table just filled.
//
// Issue 14 adds two measurements. Every row runs twice, with schema 3's key index
// (cert_by_key on (ca, spki_sha256), which the key-reuse rule reads on every enrolment) and with
// it dropped, so the index's cost per insert is the difference of the two (the key hashes are
// pseudo-random, as SHA-256 values are). And the signer-status lookup (store_cert_state_get) is
// timed from the status cache (a working set that fits it, looked up before) and without the
// cache (the store reopened with status_cache_off).
//
//   build/release/bench/store_bench [jobs-per-run] [window-per-thread] [dir]
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "engine/store/store.h"

typedef struct bench_item {
    store_job job;
    uint8_t serial[16];
    uint8_t spki[32];
    char subject[48];
} bench_item;

typedef struct bench_thread {
    store *s;
    bench_item *items;
    uint32_t n;      // inserts this thread makes
    uint32_t window; // in flight at once
    uint32_t id;
    uint32_t failed;
    const uint8_t *cert_der;
    size_t cert_len;
} bench_thread;

static const uint8_t k_bench_subject[] = {0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55,
                                          0x04, 0x03, 0x0c, 0x04, 0x74, 0x65, 0x73, 0x74};

static void bench_fill(bench_thread *t, bench_item *it, cm_cq *q, uint32_t i)
{
    store_job_init(&it->job, STORE_OP_CERT_INSERT, q);
    memset(it->serial, 0, sizeof(it->serial));
    it->serial[0] = 0x41;
    memcpy(it->serial + 8, &i, sizeof(i));
    memcpy(it->serial + 12, &t->id, sizeof(t->id));
    // A pseudo-random key hash per row (splitmix64 of the row), spread like SHA-256 values.
    uint64_t z = ((uint64_t)t->id << 32 | i) + 0x9e3779b97f4a7c15ull;
    for (size_t k = 0; k < sizeof(it->spki); k += 8) {
        z += 0x9e3779b97f4a7c15ull;
        uint64_t v = z;
        v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
        v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
        v ^= v >> 31;
        memcpy(it->spki + k, &v, 8);
    }
    (void)snprintf(it->subject, sizeof(it->subject), "CN=device-%u-%u", t->id, i);
    store_cert *c = &it->job.u.cert;
    c->ca = "bench";
    c->serial = cm_span_make(it->serial, sizeof(it->serial));
    c->subject_der = cm_span_make(k_bench_subject, sizeof(k_bench_subject));
    c->subject_text = it->subject;
    c->not_before = 1700000000;
    c->not_after = 1700000000 + 365 * 86400;
    c->spki_sha256 = cm_span_make(it->spki, sizeof(it->spki));
    c->status = STORE_CERT_UNCONFIRMED;
    c->transaction_id = cm_span_make(it->serial, sizeof(it->serial));
    c->requester_kind = STORE_AUTH_MAC;
    c->requester = CM_SPAN_LIT("factory-line");
    c->cert_der = cm_span_make(t->cert_der, t->cert_len);
    c->issued_at = 1700000000;
    c->confirm_deadline = 1700000300;
}

static void *bench_submitter(void *arg)
{
    bench_thread *t = arg;
    cm_cq q = {NULL, -1};
    if (!cm_ok(cm_cq_init(&q))) {
        t->failed = t->n;
        return NULL;
    }
    uint32_t next = 0;
    uint32_t done = 0;
    while (next < t->n && next < t->window) {
        bench_fill(t, &t->items[next], &q, next);
        store_submit(t->s, &t->items[next].job);
        next++;
    }
    while (done < t->n) {
        (void)cm_cq_wait(&q, -1);
        for (cm_cq_node *n = cm_cq_drain(&q); n != NULL;) {
            cm_cq_node *after = n->next;
            t->failed += cm_ok(((store_job *)n)->result) ? 0u : 1u;
            done++;
            if (next < t->n) {
                bench_fill(t, &t->items[next], &q, next);
                store_submit(t->s, &t->items[next].job);
                next++;
            }
            n = after;
        }
    }
    cm_cq_cleanup(&q);
    return NULL;
}

// bench_percentile returns the upper bound (µs) of the bucket holding quantile |q|.
static uint64_t bench_percentile(const uint64_t *hist, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < STORE_HIST_BUCKETS; i++) {
        total += hist[i];
    }
    uint64_t want = (uint64_t)((double)total * q);
    uint64_t seen = 0;
    for (int i = 0; i < STORE_HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want) {
            return 1ull << i;
        }
    }
    return 1ull << (STORE_HIST_BUCKETS - 1);
}

// bench_lookups times store_cert_get on serials that exist (the request-path read certConf,
// kur and rr need), spread over the table; returns ns per lookup, or -1 on a failure.
static double bench_lookups(store *s, uint32_t threads, uint32_t per_thread)
{
    store_reader *r = NULL;
    if (!cm_ok(store_reader_open(s, &r))) {
        return -1;
    }
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    const uint32_t n = 20000;
    uint32_t found = 0;
    uint64_t t0 = cm_time_mono_ns();
    for (uint32_t k = 0; k < n; k++) {
        uint8_t serial[16] = {0x41};
        uint32_t i = (k * 7919u) % per_thread;
        uint32_t id = k % threads;
        memcpy(serial + 8, &i, sizeof(i));
        memcpy(serial + 12, &id, sizeof(id));
        store_cert c;
        found += cm_ok(store_cert_get(r, &a, &c, "bench", cm_span_make(serial, sizeof(serial))))
                     ? 1u
                     : 0u;
        cm_arena_reset(&a);
    }
    uint64_t t1 = cm_time_mono_ns();
    cm_arena_cleanup(&a);
    store_reader_close(r);
    return found == n ? (double)(t1 - t0) / n : -1;
}

// bench_state_lookups times store_cert_state_get on |n| lookups over the first |distinct|
// serials of submitter 0; |warm| looks each up once first (so the cache holds them). Returns ns
// per lookup, -1 on a failure.
static double bench_state_lookups(store *s, uint32_t distinct, uint32_t n, bool warm)
{
    store_reader *r = NULL;
    if (!cm_ok(store_reader_open(s, &r))) {
        return -1;
    }
    uint32_t found = 0;
    for (int pass = warm ? 0 : 1; pass < 2; pass++) {
        const uint64_t t0 = cm_time_mono_ns();
        const uint32_t count = pass == 0 ? distinct : n;
        found = 0;
        for (uint32_t k = 0; k < count; k++) {
            uint8_t serial[16] = {0x41};
            const uint32_t i = (k * 7919u) % distinct;
            const uint32_t id = 0;
            memcpy(serial + 8, &i, sizeof(i));
            memcpy(serial + 12, &id, sizeof(id));
            store_cert_state st;
            found +=
                cm_ok(store_cert_state_get(r, &st, "bench", cm_span_make(serial, sizeof(serial))))
                    ? 1u
                    : 0u;
        }
        if (pass == 1) {
            const uint64_t t1 = cm_time_mono_ns();
            store_reader_close(r);
            return found == n ? (double)(t1 - t0) / n : -1;
        }
    }
    store_reader_close(r);
    return -1;
}

// bench_drop_key_index removes schema 3's cert_by_key from the database at |path|.
static bool bench_drop_key_index(const char *path)
{
    sqlite3 *db = NULL;
    const bool ok = sqlite3_open(path, &db) == SQLITE_OK &&
                    sqlite3_exec(db, "DROP INDEX cert_by_key", NULL, NULL, NULL) == SQLITE_OK;
    (void)sqlite3_close(db);
    return ok;
}

static int bench_run(const char *dir, store_sync sync, uint32_t threads, uint32_t jobs,
                     uint32_t window, const uint8_t *cert, size_t cert_len, bool key_index)
{
    char path[512];
    char url[600];
    int n = snprintf(path, sizeof(path), "%s/bench-%s-%u-%d.db", dir,
                     sync == STORE_SYNC_FULL ? "full" : "normal", threads, key_index);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return 1;
    }
    (void)snprintf(url, sizeof(url), "sqlite:%s", path);
    store *s = NULL;
    store_options o = {.sync = sync};
    if (!key_index) {
        // Create the schema, then take the index away before the inserts.
        if (!cm_ok(store_open(&s, url, &o))) {
            (void)fprintf(stderr, "store_bench: cannot open %s\n", url);
            return 1;
        }
        store_close(s);
        s = NULL;
        if (!bench_drop_key_index(path)) {
            (void)fprintf(stderr, "store_bench: cannot drop cert_by_key in %s\n", path);
            return 1;
        }
    }
    if (!cm_ok(store_open(&s, url, &o))) {
        (void)fprintf(stderr, "store_bench: cannot open %s\n", url);
        return 1;
    }
    bench_thread t[16];
    pthread_t th[16];
    uint64_t t0 = cm_time_mono_ns();
    for (uint32_t i = 0; i < threads; i++) {
        t[i] = (bench_thread){.s = s,
                              .n = jobs / threads,
                              .window = window,
                              .id = i,
                              .cert_der = cert,
                              .cert_len = cert_len};
        t[i].items = calloc(t[i].n, sizeof(bench_item));
        if (t[i].items == NULL || pthread_create(&th[i], NULL, bench_submitter, &t[i]) != 0) {
            (void)fprintf(stderr, "store_bench: cannot start a submitter\n");
            exit(1);
        }
    }
    uint32_t failed = 0;
    uint32_t total = 0;
    for (uint32_t i = 0; i < threads; i++) {
        (void)pthread_join(th[i], NULL);
        failed += t[i].failed;
        total += t[i].n;
        free(t[i].items);
    }
    uint64_t t1 = cm_time_mono_ns();
    store_stats st;
    store_get_stats(s, &st);
    double lookup_ns = bench_lookups(s, threads, jobs / threads);
    // The signer-status lookup: from the cache (4096 certificates: they fit), then without it.
    const uint32_t distinct = jobs / threads < 4096 ? jobs / threads : 4096;
    double state_hit_ns = bench_state_lookups(s, distinct, 20000, true);
    store_close(s);
    store_options off = {.sync = sync, .status_cache_off = true};
    double state_db_ns = -1;
    if (cm_ok(store_open(&s, url, &off))) {
        state_db_ns = bench_state_lookups(s, distinct, 20000, false);
        store_close(s);
    }
    for (const char *suffix = ""; suffix != NULL;
         suffix = suffix[0] == '\0' ? "-wal" : (suffix[1] == 'w' ? "-shm" : NULL)) {
        char f[600];
        (void)snprintf(f, sizeof(f), "%s%s", path, suffix);
        (void)unlink(f);
    }
    double secs = (double)(t1 - t0) / 1e9;
    printf("| %-6s | %-3s | %7u | %8.0f | %6.2f | %7llu | %9.1f | %9llu | %10llu | %10llu | "
           "%7llu | %7llu | %9.1f | %9.2f | %9.1f |%s\n",
           sync == STORE_SYNC_FULL ? "FULL" : "NORMAL", key_index ? "on" : "off", threads,
           (double)total / secs, (double)(t1 - t0) / 1000.0 / total, (unsigned long long)st.commits,
           st.commits ? (double)st.jobs / (double)st.commits : 0.0,
           (unsigned long long)st.max_batch,
           (unsigned long long)bench_percentile(st.commit_us_hist, 0.5),
           (unsigned long long)bench_percentile(st.commit_us_hist, 0.99),
           (unsigned long long)bench_percentile(st.job_us_hist, 0.5),
           (unsigned long long)bench_percentile(st.job_us_hist, 0.99), lookup_ns / 1000.0,
           state_hit_ns / 1000.0, state_db_ns / 1000.0, failed != 0 ? " FAILURES" : "");
    return failed != 0 || lookup_ns < 0 || state_hit_ns < 0 || state_db_ns < 0;
}

int main(int argc, char **argv)
{
    uint32_t jobs = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 32000;
    uint32_t window = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 64;
    char tmp[] = "/tmp/certmint-store-bench-XXXXXX";
    const char *dir = argc > 3 ? argv[3] : NULL;
    if (jobs < 16 || window < 1 || argc > 4) {
        (void)fprintf(stderr,
                      "usage: store_bench [jobs-per-run >= 16] [window-per-thread] [dir]\n");
        return 2;
    }
    if (dir == NULL) {
        dir = mkdtemp(tmp);
        if (dir == NULL) {
            perror("store_bench: mkdtemp");
            return 1;
        }
    }
    if (!cm_ok(cm_runtime_init())) {
        return 1;
    }
    cm_runtime_set_log_level(CM_LOG_WARN);
    // A ~1 KiB stand-in certificate: the store does not parse it.
    uint8_t cert[1024];
    for (size_t i = 0; i < sizeof(cert); i++) {
        cert[i] = (uint8_t)(i * 13 + 5);
    }
    printf("store_bench: %u inserts per run, %u in flight per submitter, files in %s\n", jobs,
           window, dir);
    printf("latencies in µs: upper bound of the log2 histogram bucket\n\n");
    printf("key idx: schema 3's cert_by_key; µs/ins: wall time per insert (all submitters); "
           "state hit / state db: store_cert_state_get from the status cache / without it\n\n");
    printf("| sync   | key | threads | insert/s | µs/ins | commits | avg batch | max batch "
           "| commit p50 | commit p99 | job p50 | job p99 | lookup µs | state hit | state db |\n");
    printf("|--------|-----|--------:|---------:|-------:|--------:|----------:|----------:"
           "|-----------:|-----------:|--------:|--------:|----------:|----------:|---------:|\n");
    static const uint32_t k_threads[] = {1, 4, 16};
    int rc = 0;
    for (int sync = 0; sync < 2; sync++) {
        for (size_t i = 0; i < sizeof(k_threads) / sizeof(k_threads[0]); i++) {
            for (int key_index = 1; key_index >= 0; key_index--) {
                rc |= bench_run(dir, (store_sync)sync, k_threads[i], jobs, window, cert,
                                sizeof(cert), key_index != 0);
            }
        }
    }
    if (argc <= 3) {
        (void)rmdir(dir);
    }
    return rc;
}
