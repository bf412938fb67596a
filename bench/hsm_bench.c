// hsm_bench: signatures per second through the hsm pool, against OpenSSL in-process with an
// in-memory key and against a plain C_SignInit+C_Sign loop (one session per thread, no pool),
// on a throwaway SoftHSM2 token; then the pool behind tests/support/p11shim with 2 ms per C_Sign,
// the stand-in for a network HSM. Medians of several runs; speed is measured here, never in tests.
//
// usage: hsm_bench [duration_ms [reps]]      (defaults 250 ms, 5 interleaved runs per cell)
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "hsm/hsm.h"
#include "tests/support/test_support.h"

#define BENCH_MSG_LEN  512
#define BENCH_MAX_REPS 9

typedef struct bench_mech {
    const char *name;
    hsm_keygen_type keygen;
    hsm_sig_alg alg;
    const char *evp_type; // EVP_PKEY_Q_keygen arguments
    const char *evp_curve;
    const char *md; // NULL for Ed25519
    CK_MECHANISM_TYPE ck_mech;
    bool pkcs1, pss;
} bench_mech;

static const bench_mech k_bench_mechs[] = {
    {"ecdsa-p256-sha256", HSM_KEYGEN_EC_P256, HSM_SIG_ECDSA_SHA256, "EC", "P-256", "SHA256",
     CKM_ECDSA, false, false},
    {"ecdsa-p384-sha384", HSM_KEYGEN_EC_P384, HSM_SIG_ECDSA_SHA384, "EC", "P-384", "SHA384",
     CKM_ECDSA, false, false},
    {"rsa2048-pkcs1-sha256", HSM_KEYGEN_RSA_2048, HSM_SIG_RSA_PKCS1_SHA256, "RSA", NULL, "SHA256",
     CKM_RSA_PKCS, true, false},
    {"rsa2048-pss-sha256", HSM_KEYGEN_RSA_2048, HSM_SIG_RSA_PSS_SHA256, "RSA", NULL, "SHA256",
     CKM_RSA_PKCS_PSS, false, true},
    {"ed25519", HSM_KEYGEN_ED25519, HSM_SIG_ED25519, "ED25519", NULL, NULL, CKM_EDDSA, false,
     false},
};
#define BENCH_NUM_MECHS (sizeof(k_bench_mechs) / sizeof(k_bench_mechs[0]))

typedef struct bench_env {
    test_token tt;
    hsm_token *tok;
    CK_FUNCTION_LIST *f; // direct module load for the plain loop
    CK_SLOT_ID slot;
    uint64_t duration_ns;
    int reps;
    uint8_t msg[BENCH_MSG_LEN];
} bench_env;

// bench_result is one timed run: operations, wall time and process CPU time. CPU per
// operation is the steadier number on a shared machine; signs/s is what a caller sees.
typedef struct bench_result {
    double ops;
    double wall_ns;
    double cpu_ns;
} bench_result;

static uint64_t bench_cpu_ns(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double bench_rate(bench_result r)
{
    return r.wall_ns > 0 ? r.ops * 1e9 / r.wall_ns : 0;
}

static double bench_cpu_us(bench_result r)
{
    return r.ops > 0 ? r.cpu_ns / r.ops / 1e3 : 0;
}

static double bench_median(double *v, int n)
{
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// ---------------------------------------------------------------------------------------------
// (a) OpenSSL in-process

static bench_result bench_evp_once(const bench_env *e, const bench_mech *m, EVP_PKEY *pk)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t sig[HSM_MAX_SIG_LEN];
    bench_result res = {0, 0, 0};
    uint64_t c0 = bench_cpu_ns();
    uint64_t n = 0, t0 = cm_time_mono_ns(), t1 = t0;
    while (t1 - t0 < e->duration_ns) {
        for (int i = 0; i < 8; i++) {
            EVP_PKEY_CTX *pctx = NULL;
            size_t sl = sizeof(sig);
            if (EVP_DigestSignInit_ex(ctx, &pctx, m->md, NULL, NULL, pk, NULL) != 1 ||
                (m->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) ||
                EVP_DigestSign(ctx, sig, &sl, e->msg, sizeof(e->msg)) != 1) {
                (void)fprintf(stderr, "EVP sign failed for %s\n", m->name);
                EVP_MD_CTX_free(ctx);
                return res;
            }
            (void)EVP_MD_CTX_reset(ctx);
            n++;
        }
        t1 = cm_time_mono_ns();
    }
    res.cpu_ns = (double)(bench_cpu_ns() - c0);
    EVP_MD_CTX_free(ctx);
    res.ops = (double)n;
    res.wall_ns = (double)(t1 - t0);
    return res;
}

// ---------------------------------------------------------------------------------------------
// (b) the plain C_Sign loop: one session per thread, no pool

typedef struct bench_loop {
    const bench_env *e;
    const bench_mech *m;
    const char *label;
    CK_MECHANISM_TYPE combined; // nonzero: the token hashes (CKM_SHA256_RSA_PKCS)
    pthread_barrier_t *start;
    uint64_t count;
    uint64_t elapsed_ns;
    bool failed;
} bench_loop;

static void *bench_loop_main(void *arg)
{
    bench_loop *l = arg;
    const bench_env *e = l->e;
    CK_FUNCTION_LIST *f = e->f;
    CK_SESSION_HANDLE s = 0;
    CK_OBJECT_HANDLE h = 0;
    CK_ULONG n = 0;
    EVP_MD_CTX *mdc = EVP_MD_CTX_new();
    EVP_MD *md = l->m->md ? EVP_MD_fetch(NULL, l->m->md, NULL) : NULL;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_TOKEN, &yes, sizeof(yes)},
                           {CKA_LABEL, (void *)(uintptr_t)l->label, strlen(l->label)}};
    l->failed = f->C_OpenSession(e->slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK ||
                f->C_FindObjectsInit(s, tmpl, 3) != CKR_OK ||
                f->C_FindObjects(s, &h, 1, &n) != CKR_OK || f->C_FindObjectsFinal(s) != CKR_OK ||
                n != 1;
    (void)pthread_barrier_wait(l->start);
    // SHA-256 DigestInfo prefix (RFC 8017 §9.2 note 1).
    static const uint8_t k_di[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_MECHANISM mech = {l->combined ? l->combined : l->m->ck_mech, NULL, 0};
    if (l->m->pss) {
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
    }
    uint64_t t0 = cm_time_mono_ns(), t1 = t0;
    while (!l->failed && t1 - t0 < e->duration_ns) {
        uint8_t in[sizeof(k_di) + EVP_MAX_MD_SIZE];
        unsigned int dl = 0;
        const uint8_t *data = e->msg;
        size_t data_len = sizeof(e->msg);
        if (md != NULL && l->combined == 0) {
            size_t off = l->m->pkcs1 ? sizeof(k_di) : 0;
            memcpy(in, k_di, off);
            if (EVP_DigestInit_ex2(mdc, md, NULL) != 1 ||
                EVP_DigestUpdate(mdc, e->msg, sizeof(e->msg)) != 1 ||
                EVP_DigestFinal_ex(mdc, in + off, &dl) != 1) {
                l->failed = true;
                break;
            }
            data = in;
            data_len = off + dl;
        }
        uint8_t sig[HSM_MAX_SIG_LEN];
        CK_ULONG sl = sizeof(sig);
        if (f->C_SignInit(s, &mech, h) != CKR_OK ||
            f->C_Sign(s, (CK_BYTE_PTR)(uintptr_t)data, data_len, sig, &sl) != CKR_OK) {
            l->failed = true;
            break;
        }
        l->count++;
        t1 = cm_time_mono_ns();
    }
    l->elapsed_ns = t1 - t0;
    if (s != 0) {
        (void)f->C_CloseSession(s);
    }
    EVP_MD_free(md);
    EVP_MD_CTX_free(mdc);
    return NULL;
}

static bench_result bench_loop_once(const bench_env *e, const bench_mech *m, const char *label,
                                    int threads, CK_MECHANISM_TYPE combined)
{
    uint64_t c0 = bench_cpu_ns();
    pthread_barrier_t start;
    (void)pthread_barrier_init(&start, NULL, (unsigned)threads);
    bench_loop l[8];
    pthread_t th[8];
    for (int i = 0; i < threads; i++) {
        l[i] = (bench_loop){e, m, label, combined, &start, 0, 0, false};
        (void)pthread_create(&th[i], NULL, bench_loop_main, &l[i]);
    }
    bench_result res = {0, 0, 0};
    for (int i = 0; i < threads; i++) {
        (void)pthread_join(th[i], NULL);
        if (l[i].failed) {
            (void)fprintf(stderr, "plain loop failed for %s\n", m->name);
        }
        res.ops += (double)l[i].count;
        res.wall_ns = (double)l[i].elapsed_ns > res.wall_ns ? (double)l[i].elapsed_ns : res.wall_ns;
    }
    res.cpu_ns = (double)(bench_cpu_ns() - c0);
    (void)pthread_barrier_destroy(&start);
    return res;
}

// ---------------------------------------------------------------------------------------------
// (c) the pool

static bench_result bench_pool_once(const bench_env *e, hsm_token *tok, const hsm_key *k,
                                    hsm_sig_alg alg, uint32_t sessions, bool copy, uint64_t dur_ns)
{
    hsm_pool_opts o;
    hsm_pool_opts_default(&o);
    o.sessions = sessions;
    o.copy_key = copy;
    hsm_pool *p = NULL;
    if (!cm_ok(hsm_pool_new(&p, tok, &o))) {
        (void)fprintf(stderr, "hsm_pool_new(%u) failed\n", sessions);
        return (bench_result){0, 0, 0};
    }
    // Keep every session busy with a full batch queued behind it.
    size_t window = (size_t)sessions * o.batch * 2;
    if (window < 64) {
        window = 64;
    }
    hsm_job *jobs = calloc(window, sizeof(*jobs));
    hsm_job **ptrs = calloc(window, sizeof(*ptrs));
    uint8_t(*sigs)[HSM_MAX_SIG_LEN] = calloc(window, HSM_MAX_SIG_LEN);
    cm_cq cq = {NULL, -1};
    if (jobs == NULL || ptrs == NULL || sigs == NULL || !cm_ok(cm_cq_init(&cq))) {
        abort();
    }
    for (size_t i = 0; i < window; i++) {
        hsm_job_init(&jobs[i], &cq, k, alg, cm_span_make(e->msg, sizeof(e->msg)), sigs[i],
                     HSM_MAX_SIG_LEN);
        ptrs[i] = &jobs[i];
    }
    // Submit until the deadline, then let the queue drain and count everything: total signed
    // over total time, so batch-sized completion bursts do not bias short runs.
    uint64_t c0 = bench_cpu_ns();
    uint64_t t0 = cm_time_mono_ns();
    size_t outstanding = window, done = 0, failed = 0;
    if (!cm_ok(hsm_pool_submit(p, ptrs, window))) {
        abort();
    }
    while (outstanding > 0) {
        (void)cm_cq_wait(&cq, 1000);
        size_t n = 0;
        for (cm_cq_node *nd = cm_cq_drain(&cq); nd != NULL; nd = nd->next) {
            hsm_job *j = (hsm_job *)(void *)nd;
            failed += !cm_ok(j->result);
            ptrs[n++] = j;
        }
        outstanding -= n;
        done += n;
        if (n > 0 && cm_time_mono_ns() - t0 < dur_ns) {
            if (!cm_ok(hsm_pool_submit(p, ptrs, n))) {
                abort();
            }
            outstanding += n;
        }
    }
    uint64_t t1 = cm_time_mono_ns();
    uint64_t c1 = bench_cpu_ns();
    hsm_pool_free(p);
    cm_cq_cleanup(&cq);
    free(sigs);
    free(ptrs);
    free(jobs);
    if (failed > 0) {
        (void)fprintf(stderr, "pool: %zu jobs failed\n", failed);
    }
    return (bench_result){(double)done, (double)(t1 - t0), (double)(c1 - c0)};
}

// ---------------------------------------------------------------------------------------------

typedef struct bench_cell {
    const bench_mech *m;
    EVP_PKEY *pk;
    const hsm_key *k;
    int kind; // 0 evp, 1 loop, 2 pool, 3 pool with copy, 4 loop with combined mechanism
    int n;
} bench_cell;

static bench_result bench_cell_once(const bench_env *e, const bench_cell *c)
{
    switch (c->kind) {
    case 0:
        return bench_evp_once(e, c->m, c->pk);
    case 1:
        return bench_loop_once(e, c->m, hsm_key_get0_label(c->k), c->n, 0);
    case 4:
        return bench_loop_once(e, c->m, hsm_key_get0_label(c->k), c->n, CKM_SHA256_RSA_PKCS);
    default:
        return bench_pool_once(e, e->tok, c->k, c->m->alg, (uint32_t)c->n, c->kind == 3,
                               e->duration_ns);
    }
}

#define BENCH_CELLS 11 // evp, loop1/2/4, pool1/2/4, copy1/2/4, combined-mechanism loop1

// bench_row measures every cell of one mechanism, interleaving the repetitions (rep 1 of every
// cell, then rep 2, ...) so that load from other processes spreads over all cells alike.
static void bench_row(const bench_env *e, double *out_rate, double *out_cpu, int num_cells,
                      const bench_cell *cells)
{
    double rate[BENCH_CELLS][BENCH_MAX_REPS], cpu[BENCH_CELLS][BENCH_MAX_REPS];
    for (int r = 0; r < e->reps; r++) {
        for (int c = 0; c < num_cells; c++) {
            bench_result res = bench_cell_once(e, &cells[c]);
            rate[c][r] = bench_rate(res);
            cpu[c][r] = bench_cpu_us(res);
        }
    }
    for (int c = 0; c < num_cells; c++) {
        out_rate[c] = bench_median(rate[c], e->reps);
        out_cpu[c] = bench_median(cpu[c], e->reps);
    }
}

static bool bench_setup(bench_env *e)
{
    if (!test_token_create(&e->tt, "hsm-bench")) {
        return false;
    }
    char uri[1024];
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=hsm-bench?module-path=%s&pin-value=%s",
                   e->tt.module, e->tt.user_pin);
    hsm_error err;
    cm_result r = hsm_token_open(&e->tok, &err, uri);
    if (!cm_ok(r)) {
        (void)fprintf(stderr, "hsm_token_open: %s: %s\n", cm_result_name(r), err.msg);
        return false;
    }
    // The plain loop talks to SoftHSM directly (another p11-kit handle on the same module,
    // sharing the login the hsm token holds).
    e->f = p11_kit_module_load(e->tt.module, 0);
    if (e->f == NULL || p11_kit_module_initialize(e->f) != CKR_OK) {
        return false;
    }
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    if (e->f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) {
        return false;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (e->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
            memcmp(ti.label, "hsm-bench ", 10) == 0) {
            e->slot = slots[i];
            return true;
        }
    }
    return false;
}

#ifdef CM_P11SHIM_PATH
static void bench_shim(bench_env *e, const char *shim_path)
{
    char uri[1024];
    (void)setenv("P11SHIM_MODULE", e->tt.module, 1);
    (void)setenv("P11SHIM_SIGN_DELAY_US", "2000", 1);
    (void)unsetenv("P11SHIM_FAIL_EVERY");
    (void)snprintf(uri, sizeof(uri),
                   "pkcs11:token=hsm-bench;object=ecdsa-p256-sha256?module-path=%s&pin-value=%s",
                   shim_path, e->tt.user_pin);
    hsm_error err;
    hsm_token *t = NULL;
    hsm_key *k = NULL;
    if (!cm_ok(hsm_token_open(&t, &err, uri)) || !cm_ok(hsm_key_find(t, &k, &err, uri))) {
        (void)fprintf(stderr, "shim: %s\n", err.msg);
        hsm_token_free(t);
        return;
    }
    (void)printf("\nThrough p11shim, 2 ms per C_Sign (ECDSA P-256, %d runs of %.0f ms, median):\n",
                 e->reps, 2.5 * (double)e->duration_ns / 1e6);
    static const uint32_t k_sessions[] = {1, 8, 32, 64};
    enum { NS = sizeof(k_sessions) / sizeof(k_sessions[0]) };
    double rate[NS][BENCH_MAX_REPS], cores[NS][BENCH_MAX_REPS], cpu[NS][BENCH_MAX_REPS];
    for (int r = 0; r < e->reps; r++) {
        for (size_t i = 0; i < NS; i++) {
            // Longer runs: a 2 ms operation needs more samples to settle.
            bench_result res = bench_pool_once(e, t, k, HSM_SIG_ECDSA_SHA256, k_sessions[i], false,
                                               e->duration_ns * 5 / 2);
            rate[i][r] = bench_rate(res);
            cores[i][r] = res.cpu_ns / res.wall_ns;
            cpu[i][r] = bench_cpu_us(res);
        }
    }
    // "of ideal" compares with sessions / 2 ms; "scaling" with N times the one-session rate
    // (which also pays the token's own signing time and the sleep's wake-up latency).
    (void)printf("%-10s %10s %10s %9s %9s %10s %10s\n", "sessions", "signs/s", "ideal/s",
                 "of ideal", "scaling", "CPU cores", "us CPU/op");
    double one = bench_median(rate[0], e->reps);
    for (size_t i = 0; i < NS; i++) {
        double v = bench_median(rate[i], e->reps);
        double ideal = k_sessions[i] / 0.002;
        (void)printf("%-10u %10.0f %10.0f %8.0f%% %8.0f%% %10.2f %10.1f\n", k_sessions[i], v, ideal,
                     100 * v / ideal, 100 * v / (one * k_sessions[i]),
                     bench_median(cores[i], e->reps), bench_median(cpu[i], e->reps));
    }
    hsm_key_free(k);
    hsm_token_free(t);
}
#endif

int main(int argc, char **argv)
{
    if (!cm_ok(cm_runtime_init())) {
        return 1;
    }
    cm_runtime_set_log_level(CM_LOG_ERROR);
    static bench_env env;
    bench_env *e = &env;
    long dur_ms = argc > 1 ? strtol(argv[1], NULL, 10) : 250;
    long reps = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
    if (dur_ms < 10 || dur_ms > 60000 || reps < 1 || reps > BENCH_MAX_REPS) {
        (void)fprintf(stderr, "usage: %s [duration_ms 10..60000 [reps 1..%d]]\n", argv[0],
                      BENCH_MAX_REPS);
        return 2;
    }
    e->duration_ns = (uint64_t)dur_ms * 1000000u;
    e->reps = (int)reps;
    for (size_t i = 0; i < sizeof(e->msg); i++) {
        e->msg[i] = (uint8_t)(i * 31 + 7);
    }
    int rc = 1;
    hsm_key *keys[BENCH_NUM_MECHS] = {NULL};
    if (!bench_setup(e)) {
        (void)fprintf(stderr, "token setup failed\n");
        goto out;
    }
    for (size_t i = 0; i < BENCH_NUM_MECHS; i++) {
        hsm_error err;
        uint8_t id = (uint8_t)(i + 1);
        if (!cm_ok(hsm_key_generate(e->tok, &keys[i], &err, k_bench_mechs[i].keygen,
                                    k_bench_mechs[i].name, cm_span_make(&id, 1)))) {
            (void)fprintf(stderr, "keygen %s: %s\n", k_bench_mechs[i].name, err.msg);
            goto out;
        }
    }
    (void)printf(
        "hsm_bench: SoftHSM2 token, %d-byte message, %d interleaved runs of %ld ms per cell, "
        "medians\n",
        BENCH_MSG_LEN, e->reps, dur_ms);
    (void)printf(
        "evp = OpenSSL EVP_DigestSign, in-memory key, 1 thread; loopN = hash + C_SignInit + "
        "C_Sign on N sessions/threads, no pool;\npoolN = hsm pool with N sessions; copyN = "
        "pool with C_CopyObject session keys; signs/s, then process CPU us per signature\n\n");
    (void)printf(
        "%-20s %6s %6s %6s %6s %6s %6s %6s %6s %6s %6s | %5s %5s %5s %5s | %6s %6s %6s %6s "
        "| %5s %5s\n",
        "signs/s", "evp", "loop1", "loop2", "loop4", "pool1", "pool2", "pool4", "copy1", "copy2",
        "copy4", "p1/l1", "p2/l2", "p4/l4", "c2/p2", "us:evp", "loop1", "pool1", "copy1", "p1/l1",
        "c1/p1");
    for (size_t i = 0; i < BENCH_NUM_MECHS; i++) {
        const bench_mech *m = &k_bench_mechs[i];
        EVP_PKEY *pk = m->evp_curve ? EVP_PKEY_Q_keygen(NULL, NULL, m->evp_type, m->evp_curve)
                       : strcmp(m->evp_type, "RSA") == 0
                           ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                           : EVP_PKEY_Q_keygen(NULL, NULL, m->evp_type);
        static const int k_kind[BENCH_CELLS] = {0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4};
        static const int k_n[BENCH_CELLS] = {1, 1, 2, 4, 1, 2, 4, 1, 2, 4, 1};
        bench_cell cells[BENCH_CELLS];
        for (int c = 0; c < BENCH_CELLS; c++) {
            cells[c] = (bench_cell){m, pk, keys[i], k_kind[c], k_n[c]};
        }
        double v[BENCH_CELLS], u[BENCH_CELLS];
        bench_row(e, v, u, m->pkcs1 ? BENCH_CELLS : BENCH_CELLS - 1, cells);
        (void)printf(
            "%-20s %6.0f %6.0f %6.0f %6.0f %6.0f %6.0f %6.0f %6.0f %6.0f %6.0f | %5.2f %5.2f "
            "%5.2f %5.2f | %6.1f %6.1f %6.1f %6.1f | %5.2f %5.2f\n",
            m->name, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[4] / v[1],
            v[5] / v[2], v[6] / v[3], v[8] / v[5], u[0], u[1], u[4], u[7], u[4] / u[1],
            u[7] / u[4]);
        if (m->pkcs1) {
            (void)printf(
                "%-20s loop1 with CKM_SHA256_RSA_PKCS (token hashes): %.0f signs/s, %.1f us "
                "CPU (%.2f / %.2f of DigestInfo + CKM_RSA_PKCS)\n",
                "", v[10], u[10], v[10] / v[1], u[10] / u[1]);
        }
        (void)fflush(stdout);
        EVP_PKEY_free(pk);
    }
#ifdef CM_P11SHIM_PATH
    bench_shim(e, CM_P11SHIM_PATH);
#endif
    rc = 0;
out:
    for (size_t i = 0; i < BENCH_NUM_MECHS; i++) {
        hsm_key_free(keys[i]);
    }
    if (e->f != NULL) {
        (void)p11_kit_module_finalize(e->f);
        p11_kit_module_release(e->f);
    }
    hsm_token_free(e->tok);
    test_token_destroy(&e->tt);
    return rc;
}
