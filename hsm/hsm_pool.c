// The signing pool: one shared job queue (mutex + condition variable), N workers each owning
// one PKCS#11 session for its whole life, completions pushed back through the submitters'
// cm_cq in chains (one doorbell per cq per batch).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <p11-kit/p11-kit.h>

#include "engine/der/der.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"
#include "hsm/hsm_internal.h"

// SoftHSM 2.6.1 leaks an ASN1_OCTET_STRING in every CKM_EDDSA C_SignInit (its EdDSA private
// key decoding). Leaks inside the token are not ours to fix or to report, so sanitizer builds
// tell LeakSanitizer to ignore what this thread allocates during that one call.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define HSM_TOKEN_ALLOC_BEGIN() __lsan_disable()
#define HSM_TOKEN_ALLOC_END()   __lsan_enable()
#else
#define HSM_TOKEN_ALLOC_BEGIN() ((void)0)
#define HSM_TOKEN_ALLOC_END()   ((void)0)
#endif

// Thread: hsm-worker-owned (set up by hsm_pool_new before the thread starts).
typedef struct hsm_worker {
    hsm_pool *pool;
    pthread_t thread;
    bool thread_started;
    uint32_t index;
    CK_SESSION_HANDLE session;
    bool session_open;
    CK_OBJECT_HANDLE handles[HSM_MAX_KEYS_PER_TOKEN]; // 0: not looked up in this session
    EVP_MD_CTX *md_ctx;
    cm_result start_result; // written before |started| is counted, under pool->mu
    bool uncounted;         // calibration: its calls stay out of the pool's statistics
} hsm_worker;

struct hsm_pool {
    hsm_token *token;
    hsm_pool_opts opts;
    EVP_MD *md[3]; // SHA-256, SHA-384, SHA-512, fetched once

    pthread_mutex_t mu;
    pthread_cond_t cv; // workers wait for jobs; hsm_pool_new waits for starts
    hsm_job *head;     // guarded_by(mu): FIFO linked through node.next
    hsm_job *tail;     // guarded_by(mu)
    size_t depth;      // guarded_by(mu)
    bool stopping;     // guarded_by(mu)
    uint32_t started;  // guarded_by(mu): workers that finished their start-up

    hsm_worker *workers;
    uint32_t num_workers;
    int inline_on;         // atomic: 1 when submit_on signs on lanes (hsm_pool_calibrate)
    uint32_t inline_busy;  // atomic: lanes signing right now (at most opts.inline_max)
    uint64_t in_flight;    // atomic: jobs submitted to the workers and not yet completed
    uint32_t lanes_opened; // atomic: lanes ever opened, for their names in logs

    // Statistics, relaxed atomics.
    uint64_t st_ok, st_failed, st_retried, st_reopened, st_batches;
    uint64_t st_sign_calls_failed; // C_SignInit and C_Sign calls that failed
    uint64_t st_inline;            // jobs signed on a lane
    uint64_t st_inline_deferred;   // jobs a lane handed to the workers (inline_max busy)
};

// Thread: confined to its owner; |w| is a worker without a thread.
struct hsm_lane {
    hsm_worker w;
};

void hsm_pool_opts_default(hsm_pool_opts *o)
{
    o->sessions = 2;
    o->batch = 16;
    o->max_queue = 0;
    o->copy_key = true;
    o->dispatch = HSM_DISPATCH_AUTO;
    o->inline_max = 1;
}

static const char *const k_hsm_dispatch_names[] = {"auto", "inline", "pool"};

bool hsm_dispatch_parse(const char *name, hsm_dispatch *out)
{
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(name, k_hsm_dispatch_names[i]) == 0) {
            *out = (hsm_dispatch)i;
            return true;
        }
    }
    return false;
}

const char *hsm_dispatch_name(hsm_dispatch d)
{
    return (unsigned)d < 3 ? k_hsm_dispatch_names[d] : "?";
}

void hsm_job_init(hsm_job *j, cm_cq *cq, const hsm_key *key, hsm_sig_alg alg, cm_span msg,
                  uint8_t *sig, size_t sig_cap)
{
    j->node.next = NULL;
    j->node.kind = CM_CQ_KIND_HSM_JOB;
    j->cq = cq;
    j->key = key;
    j->alg = alg;
    j->msg = msg;
    j->sig = sig;
    j->sig_cap = sig_cap;
    j->sig_len = 0;
    j->result = cm_result_make(CM_OK);
    j->attempts = 0;
}

static void hsm_stat_add(uint64_t *c, uint64_t v)
{
    __atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

// hsm_worker_count counts what a worker or lane did (not a calibration's test signatures).
static void hsm_worker_count(const hsm_worker *w, uint64_t *c)
{
    if (!w->uncounted) {
        hsm_stat_add(c, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Signing one job on a worker's session

// hsm_is_session_death reports whether |r| means the session (or the login) is gone, so the
// worker must reopen it: CKR_SESSION_HANDLE_INVALID and CKR_DEVICE_* (STYLE.md §2.8), and
// likewise a closed session, a token no longer present and a lost login.
static bool hsm_is_session_death(cm_result r)
{
    if (cm_result_class(r) != CM_CLASS_HSM) {
        return false;
    }
    switch (CM_CODE_DETAIL(r.code)) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_USER_NOT_LOGGED_IN:
        return true;
    default:
        return false;
    }
}

// hsm_ck_fail logs a failed PKCS#11 call of a worker with the function and CKR names, and
// returns its HSM-class code. Never logs message or key material.
// Rate-limited per function (the key is |func|): a failing HSM fails every request.
static cm_result hsm_ck_fail(const hsm_worker *w, const char *func, CK_RV rv)
{
    cm_log_ratelimited(func, 10000, CM_LOG_WARN, "hsm: worker %u token '%s': %s: %s (0x%lx): %s",
                       w->index, w->pool->token->label, func, cm_ckr_name(rv), (unsigned long)rv,
                       p11_kit_strerror(rv));
    return cm_result_make(cm_code_from_ckr(rv));
}

static cm_result hsm_worker_open(hsm_worker *w)
{
    hsm_token *t = w->pool->token;
    memset(w->handles, 0, sizeof(w->handles));
    CK_RV rv = t->f->C_OpenSession(t->slot, CKF_SERIAL_SESSION, NULL, NULL, &w->session);
    if (rv != CKR_OK) {
        return hsm_ck_fail(w, "C_OpenSession", rv);
    }
    w->session_open = true;
    // Logged in already through the token's session in the normal case; after the token lost
    // its login (device reset) this logs in again.
    cm_result r = hsm_login(t, w->session);
    if (!cm_ok(r)) {
        cm_log_ratelimited("hsm.login", 10000, CM_LOG_WARN, "hsm: worker %u token '%s': login: %s",
                           w->index, t->label, cm_result_name(r));
    }
    return r;
}

static void hsm_worker_close(hsm_worker *w)
{
    if (w->session_open) {
        // Session objects (copied keys) are destroyed with the session.
        (void)w->pool->token->f->C_CloseSession(w->session);
        w->session_open = false;
    }
    memset(w->handles, 0, sizeof(w->handles));
}

static cm_result hsm_worker_reopen(hsm_worker *w)
{
    hsm_worker_close(w);
    hsm_worker_count(w, &w->pool->st_reopened);
    cm_log_ratelimited("hsm.reopen", 10000, CM_LOG_WARN,
                       "hsm: worker %u token '%s': reopening its session", w->index,
                       w->pool->token->label);
    return hsm_worker_open(w);
}

// hsm_worker_key returns the session's handle for |k|, looking it up (and copying it into a
// session object when configured) on first use in this session.
static cm_result hsm_worker_key(hsm_worker *w, CK_OBJECT_HANDLE *out, const hsm_key *k)
{
    CK_OBJECT_HANDLE *slot = &w->handles[k->index];
    if (*slot != 0) {
        *out = *slot;
        return cm_result_make(CM_OK);
    }
    hsm_token *t = w->pool->token;
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    cm_result r = hsm_find_key_handle(t, &h, w->session, k);
    if (!cm_ok(r)) {
        cm_log_ratelimited("hsm.key_lookup", 10000, CM_LOG_WARN,
                           "hsm: worker %u: key '%s' lookup: %s", w->index, k->label,
                           cm_result_name(r));
        return r;
    }
    if (w->pool->opts.copy_key) {
        // A session object skips SoftHSM's per-operation re-check of the token object on disk.
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof(no)}};
        CK_OBJECT_HANDLE copy;
        CK_RV rv = t->f->C_CopyObject(w->session, h, tmpl, 1, &copy);
        if (rv == CKR_OK) {
            h = copy;
        } else if (hsm_is_session_death(cm_result_make(cm_code_from_ckr(rv)))) {
            return hsm_ck_fail(w, "C_CopyObject", rv);
        } else {
            // Not copyable on this token: sign with the token object.
            cm_log(CM_LOG_INFO, "hsm: key '%s': C_CopyObject: %s; using the token object", k->label,
                   cm_ckr_name(rv));
        }
    }
    *slot = h;
    *out = h;
    return cm_result_make(CM_OK);
}

typedef struct hsm_alg_plan {
    int md;                  // index into pool->md, -1 for none (EdDSA)
    CK_MECHANISM_TYPE raw;   // mechanism over the digest (or the message for EdDSA)
    uint32_t raw_bit;        // HSM_MECH_* for |raw|
    CK_MECHANISM_TYPE whole; // mechanism that hashes inside the token, 0 for none
    uint32_t whole_bit;
    bool ecdsa, pkcs1, pss;
} hsm_alg_plan;

static hsm_alg_plan hsm_plan(hsm_sig_alg alg)
{
    hsm_alg_plan p = {-1, CKM_EDDSA, HSM_MECH_EDDSA, 0, 0, false, false, false};
    static const CK_MECHANISM_TYPE k_ecdsa[3] = {CKM_ECDSA_SHA256, CKM_ECDSA_SHA384,
                                                 CKM_ECDSA_SHA512};
    static const CK_MECHANISM_TYPE k_rsa[3] = {CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS,
                                               CKM_SHA512_RSA_PKCS};
    static const CK_MECHANISM_TYPE k_pss[3] = {CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS,
                                               CKM_SHA512_RSA_PKCS_PSS};
    static const uint32_t k_ecdsa_bit[3] = {HSM_MECH_ECDSA_SHA256, HSM_MECH_ECDSA_SHA384,
                                            HSM_MECH_ECDSA_SHA512};
    static const uint32_t k_rsa_bit[3] = {HSM_MECH_SHA256_RSA, HSM_MECH_SHA384_RSA,
                                          HSM_MECH_SHA512_RSA};
    static const uint32_t k_pss_bit[3] = {HSM_MECH_SHA256_PSS, HSM_MECH_SHA384_PSS,
                                          HSM_MECH_SHA512_PSS};
    if (alg >= HSM_SIG_ECDSA_SHA256 && alg <= HSM_SIG_ECDSA_SHA512) {
        p.md = (int)(alg - HSM_SIG_ECDSA_SHA256);
        p.raw = CKM_ECDSA, p.raw_bit = HSM_MECH_ECDSA;
        p.whole = k_ecdsa[p.md], p.whole_bit = k_ecdsa_bit[p.md];
        p.ecdsa = true;
    } else if (alg >= HSM_SIG_RSA_PKCS1_SHA256 && alg <= HSM_SIG_RSA_PKCS1_SHA512) {
        p.md = (int)(alg - HSM_SIG_RSA_PKCS1_SHA256);
        p.raw = CKM_RSA_PKCS, p.raw_bit = HSM_MECH_RSA_PKCS;
        p.whole = k_rsa[p.md], p.whole_bit = k_rsa_bit[p.md];
        p.pkcs1 = true;
    } else if (alg >= HSM_SIG_RSA_PSS_SHA256 && alg <= HSM_SIG_RSA_PSS_SHA512) {
        p.md = (int)(alg - HSM_SIG_RSA_PSS_SHA256);
        p.raw = CKM_RSA_PKCS_PSS, p.raw_bit = HSM_MECH_RSA_PSS;
        p.whole = k_pss[p.md], p.whole_bit = k_pss_bit[p.md];
        p.pss = true;
    }
    return p;
}

// DigestInfo ::= SEQUENCE {
//      digestAlgorithm AlgorithmIdentifier,   -- shaX with NULL parameters
//      digest OCTET STRING }                  -- RFC 8017 §9.2 (EMSA-PKCS1-v1_5)
static cm_result hsm_digest_info(cm_span *out, uint8_t *buf, size_t cap, int md, cm_span digest)
{
    static const char *const k_oids[3] = {DER_OID_SHA256, DER_OID_SHA384, DER_OID_SHA512};
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_mark di, alg;
    der_open(&b, &di, DER_TAG_SEQUENCE);
    der_open(&b, &alg, DER_TAG_SEQUENCE);
    der_put_oid(&b, cm_span_make(k_oids[md], 9));
    der_put_null(&b);
    der_close(&b, &alg);
    der_put_octets(&b, digest);
    der_close(&b, &di);
    return der_builder_finish(&b, out);
}

// hsm_worker_sign_once makes one attempt at |j| on the worker's current session.
static cm_result hsm_worker_sign_once(hsm_worker *w, hsm_job *j)
{
    hsm_pool *p = w->pool;
    hsm_token *t = p->token;
    j->attempts++;
    if (!w->session_open) {
        CM_TRY(hsm_worker_open(w));
    }
    hsm_alg_plan plan = hsm_plan(j->alg);
    bool use_whole = false;
    if ((t->mechs & plan.raw_bit) == 0) {
        CM_ENSURE(plan.whole != 0 && (t->mechs & plan.whole_bit) != 0, HSM_E_MECHANISM);
        use_whole = true;
    }

    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    uint8_t di_buf[EVP_MAX_MD_SIZE + 32];
    cm_span input = j->msg;
    if (plan.md >= 0 && !use_whole) {
        CM_TRY_OSSL(EVP_DigestInit_ex2(w->md_ctx, p->md[plan.md], NULL), CM_E_CRYPTO);
        CM_TRY_OSSL(EVP_DigestUpdate(w->md_ctx, j->msg.p, j->msg.len), CM_E_CRYPTO);
        CM_TRY_OSSL(EVP_DigestFinal_ex(w->md_ctx, digest, &digest_len), CM_E_CRYPTO);
        input = cm_span_make(digest, digest_len);
        if (plan.pkcs1) {
            CM_TRY(hsm_digest_info(&input, di_buf, sizeof(di_buf), plan.md, input));
        }
    }

    static const CK_MECHANISM_TYPE k_hash[3] = {CKM_SHA256, CKM_SHA384, CKM_SHA512};
    static const CK_RSA_PKCS_MGF_TYPE k_mgf[3] = {CKG_MGF1_SHA256, CKG_MGF1_SHA384,
                                                  CKG_MGF1_SHA512};
    static const CK_ULONG k_hlen[3] = {32, 48, 64};
    CK_RSA_PKCS_PSS_PARAMS pss;
    CK_MECHANISM mech = {use_whole ? plan.whole : plan.raw, NULL, 0};
    if (plan.pss) {
        pss.hashAlg = k_hash[plan.md];
        pss.mgf = k_mgf[plan.md];
        pss.sLen = k_hlen[plan.md];
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
    }

    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CM_TRY(hsm_worker_key(w, &h, j->key));
    HSM_TOKEN_ALLOC_BEGIN();
    CK_RV rv = t->f->C_SignInit(w->session, &mech, h);
    HSM_TOKEN_ALLOC_END();
    if (rv != CKR_OK) {
        hsm_worker_count(w, &p->st_sign_calls_failed);
        return hsm_ck_fail(w, "C_SignInit", rv);
    }
    uint8_t raw[HSM_MAX_SIG_LEN];
    CK_ULONG raw_len = sizeof(raw);
    rv = t->f->C_Sign(w->session, (CK_BYTE_PTR)(uintptr_t)input.p, input.len, raw, &raw_len);
    if (rv != CKR_OK) {
        hsm_worker_count(w, &p->st_sign_calls_failed);
        return hsm_ck_fail(w, "C_Sign", rv);
    }
    if (plan.ecdsa) {
        der_builder b;
        der_builder_init_fixed(&b, j->sig, j->sig_cap);
        hsm_ecdsa_sig_marshal(&b, cm_span_make(raw, raw_len));
        cm_span out;
        CM_TRY(der_builder_finish(&b, &out));
        j->sig_len = out.len;
    } else {
        CM_ENSURE(raw_len <= j->sig_cap, CM_E_BUFFER_TOO_SMALL);
        memcpy(j->sig, raw, raw_len);
        j->sig_len = raw_len;
    }
    return cm_result_make(CM_OK);
}

// hsm_is_stale_handle: the key handle cached for this session is no longer valid (the key
// object was re-created on the token, or the token dropped the session's copy of it).
static bool hsm_is_stale_handle(cm_result r)
{
    return cm_result_class(r) == CM_CLASS_HSM &&
           (CM_CODE_DETAIL(r.code) == CKR_KEY_HANDLE_INVALID ||
            CM_CODE_DETAIL(r.code) == CKR_OBJECT_HANDLE_INVALID);
}

// hsm_worker_sign signs |j|; a session death or a stale key handle reopens the session (which
// looks the key up again) and retries once.
static void hsm_worker_sign(hsm_worker *w, hsm_job *j)
{
    cm_result r = hsm_worker_sign_once(w, j);
    if (hsm_is_session_death(r) || hsm_is_stale_handle(r)) {
        cm_result ro = hsm_worker_reopen(w);
        if (cm_ok(ro)) {
            hsm_worker_count(w, &w->pool->st_retried);
            r = hsm_worker_sign_once(w, j);
            if (hsm_is_session_death(r) || hsm_is_stale_handle(r)) {
                // Leave the session for the next job to reopen.
                hsm_worker_close(w);
            }
        } else {
            hsm_worker_close(w);
            r = ro;
        }
    }
    j->result = r;
    if (!cm_ok(r)) {
        j->sig_len = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Completion and the worker loop

// hsm_complete pushes |jobs| back to their cqs: one chain (one atomic push, at most one
// doorbell) per run of consecutive jobs sharing a cq; |local| (a lane's jobs, completed by
// the cq's owner) pushes with cm_cq_push_local. The jobs belong to their submitters again as
// soon as they are pushed, so nothing here touches a job after its push.
static void hsm_complete_as(hsm_pool *p, hsm_job **jobs, size_t n, bool local)
{
    uint64_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        ok += cm_ok(jobs[i]->result) ? 1 : 0;
    }
    hsm_stat_add(&p->st_ok, ok);
    hsm_stat_add(&p->st_failed, n - ok);
    size_t start = 0;
    while (start < n) {
        size_t end = start + 1;
        while (end < n && jobs[end]->cq == jobs[start]->cq) {
            jobs[end - 1]->node.next = &jobs[end]->node;
            end++;
        }
        jobs[end - 1]->node.next = NULL;
        cm_cq *cq = jobs[start]->cq;
        if (local) {
            cm_cq_push_local(cq, &jobs[start]->node, &jobs[end - 1]->node);
        } else {
            cm_cq_push_chain(cq, &jobs[start]->node, &jobs[end - 1]->node);
        }
        start = end;
    }
}

static void hsm_complete(hsm_pool *p, hsm_job **jobs, size_t n)
{
    __atomic_sub_fetch(&p->in_flight, n, __ATOMIC_RELEASE);
    hsm_complete_as(p, jobs, n, false);
}

static void *hsm_worker_main(void *arg)
{
    hsm_worker *w = arg;
    hsm_pool *p = w->pool;
    char name[16];
    (void)snprintf(name, sizeof(name), "cm-hsm%u", w->index);
    (void)pthread_setname_np(pthread_self(), name);
    cm_result r = hsm_worker_open(w);
    (void)pthread_mutex_lock(&p->mu);
    w->start_result = r;
    p->started++;
    (void)pthread_cond_broadcast(&p->cv);
    (void)pthread_mutex_unlock(&p->mu);

    hsm_job *batch[HSM_MAX_BATCH];
    for (;;) {
        (void)pthread_mutex_lock(&p->mu);
        while (p->head == NULL && !p->stopping) {
            (void)pthread_cond_wait(&p->cv, &p->mu);
        }
        if (p->stopping) {
            (void)pthread_mutex_unlock(&p->mu);
            break;
        }
        // Take a fair share of what is queued, at most |batch|, so one worker does not
        // swallow a burst that several sessions could sign in parallel.
        size_t share = (p->depth + p->num_workers - 1) / p->num_workers;
        size_t take = share < p->opts.batch ? share : p->opts.batch;
        if (take == 0) {
            take = 1;
        }
        size_t n = 0;
        while (n < take && p->head != NULL) {
            hsm_job *j = p->head;
            p->head = (hsm_job *)(void *)j->node.next;
            batch[n++] = j;
        }
        if (p->head == NULL) {
            p->tail = NULL;
        }
        p->depth -= n;
        bool more = p->head != NULL;
        (void)pthread_mutex_unlock(&p->mu);
        if (more) {
            (void)pthread_cond_signal(&p->cv);
        }
        hsm_stat_add(&p->st_batches, 1);
        for (size_t i = 0; i < n; i++) {
            hsm_worker_sign(w, batch[i]);
        }
        hsm_complete(p, batch, n);
    }
    hsm_worker_close(w);
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Pool life cycle

static void hsm_pool_stop(hsm_pool *p)
{
    (void)pthread_mutex_lock(&p->mu);
    p->stopping = true;
    hsm_job *left = p->head;
    p->head = p->tail = NULL;
    p->depth = 0;
    (void)pthread_cond_broadcast(&p->cv);
    (void)pthread_mutex_unlock(&p->mu);

    // Fail what no worker took, in batches so each cq rings once per batch.
    hsm_job *batch[HSM_MAX_BATCH];
    size_t n = 0;
    while (left != NULL) {
        hsm_job *next = (hsm_job *)(void *)left->node.next;
        left->result = cm_result_make(HSM_E_SHUTDOWN);
        left->sig_len = 0;
        batch[n++] = left;
        if (n == HSM_MAX_BATCH) {
            hsm_complete(p, batch, n);
            n = 0;
        }
        left = next;
    }
    if (n > 0) {
        hsm_complete(p, batch, n);
    }
    for (uint32_t i = 0; i < p->num_workers; i++) {
        if (p->workers[i].thread_started) {
            (void)pthread_join(p->workers[i].thread, NULL);
            p->workers[i].thread_started = false;
        }
    }
}

static void hsm_pool_release(hsm_pool *p)
{
    for (uint32_t i = 0; i < p->num_workers; i++) {
        EVP_MD_CTX_free(p->workers[i].md_ctx);
    }
    for (size_t i = 0; i < 3; i++) {
        EVP_MD_free(p->md[i]);
    }
    free(p->workers);
    (void)pthread_cond_destroy(&p->cv);
    (void)pthread_mutex_destroy(&p->mu);
    free(p);
}

cm_result hsm_pool_new(hsm_pool **out, hsm_token *t, const hsm_pool_opts *opts)
{
    *out = NULL;
    CM_ENSURE(t != NULL && opts != NULL, CM_E_INVALID_ARG);
    CM_ENSURE(opts->sessions >= 1 && opts->sessions <= HSM_MAX_SESSIONS, CM_E_INVALID_ARG);
    CM_ENSURE(opts->batch >= 1 && opts->batch <= HSM_MAX_BATCH, CM_E_INVALID_ARG);
    hsm_pool *p = calloc(1, sizeof(*p));
    CM_ENSURE(p != NULL, CM_E_NOMEM);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        CM_BAIL(CM_E_NOMEM);
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&p->mu);
        free(p);
        CM_BAIL(CM_E_NOMEM);
    }
    p->token = t;
    p->opts = *opts;
    p->inline_on = opts->dispatch == HSM_DISPATCH_INLINE ? 1 : 0;
    cm_result r = cm_result_make(CM_OK);
    static const char *const k_md[3] = {"SHA2-256", "SHA2-384", "SHA2-512"};
    for (size_t i = 0; i < 3; i++) {
        p->md[i] = EVP_MD_fetch(NULL, k_md[i], NULL);
        if (p->md[i] == NULL) {
            cm_ossl_clear_errors();
            r = cm_result_make(CM_E_CRYPTO);
        }
    }
    p->workers = calloc(opts->sessions, sizeof(*p->workers));
    if (!cm_ok(r) || p->workers == NULL) {
        r = cm_ok(r) ? cm_result_make(CM_E_NOMEM) : r;
        hsm_pool_release(p);
        return r;
    }
    p->num_workers = opts->sessions;
    for (uint32_t i = 0; i < p->num_workers; i++) {
        hsm_worker *w = &p->workers[i];
        w->pool = p;
        w->index = i;
        w->md_ctx = EVP_MD_CTX_new();
        if (w->md_ctx == NULL) {
            r = cm_result_make(CM_E_NOMEM);
            break;
        }
        if (pthread_create(&w->thread, NULL, hsm_worker_main, w) != 0) {
            r = cm_result_make(CM_E_NOMEM);
            break;
        }
        w->thread_started = true;
    }
    // Wait for every started worker to have its session (or to fail opening it).
    uint32_t launched = 0;
    for (uint32_t i = 0; i < p->num_workers; i++) {
        launched += p->workers[i].thread_started ? 1 : 0;
    }
    (void)pthread_mutex_lock(&p->mu);
    while (p->started < launched) {
        (void)pthread_cond_wait(&p->cv, &p->mu);
    }
    (void)pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->num_workers && cm_ok(r); i++) {
        r = p->workers[i].start_result;
    }
    if (!cm_ok(r)) {
        hsm_pool_stop(p);
        hsm_pool_release(p);
        return r;
    }
    *out = p;
    return r;
}

void hsm_pool_free(hsm_pool *p)
{
    if (p == NULL) {
        return;
    }
    hsm_pool_stop(p);
    hsm_pool_release(p);
}

// hsm_jobs_check validates a submission as a whole (hsm_pool_submit).
static cm_result hsm_jobs_check(const hsm_pool *p, hsm_job *const *jobs, size_t num_jobs)
{
    for (size_t i = 0; i < num_jobs; i++) {
        const hsm_job *j = jobs[i];
        CM_ENSURE(j != NULL && j->cq != NULL && j->sig != NULL && j->key != NULL, CM_E_INVALID_ARG);
        CM_ENSURE(j->key->token == p->token, CM_E_INVALID_ARG);
        CM_ENSURE(j->msg.p != NULL || j->msg.len == 0, CM_E_INVALID_ARG);
        CM_ENSURE(hsm_sig_alg_fits(j->alg, j->key->type), HSM_E_ALG_MISMATCH);
    }
    return cm_result_make(CM_OK);
}

cm_result hsm_pool_submit(hsm_pool *p, hsm_job *const *jobs, size_t num_jobs)
{
    if (num_jobs == 0) {
        return cm_result_make(CM_OK);
    }
    CM_TRY(hsm_jobs_check(p, jobs, num_jobs));
    // Link the batch outside the lock; the pool owns the jobs from here on.
    for (size_t i = 0; i < num_jobs; i++) {
        jobs[i]->node.kind = CM_CQ_KIND_HSM_JOB;
        jobs[i]->node.next = i + 1 < num_jobs ? &jobs[i + 1]->node : NULL;
        jobs[i]->attempts = 0;
    }
    (void)pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        (void)pthread_mutex_unlock(&p->mu);
        CM_BAIL(HSM_E_SHUTDOWN);
    }
    if (p->opts.max_queue != 0 && p->depth + num_jobs > p->opts.max_queue) {
        (void)pthread_mutex_unlock(&p->mu);
        CM_BAIL(HSM_E_QUEUE_FULL);
    }
    if (p->tail != NULL) {
        p->tail->node.next = &jobs[0]->node;
    } else {
        p->head = jobs[0];
    }
    p->tail = jobs[num_jobs - 1];
    p->depth += num_jobs;
    __atomic_add_fetch(&p->in_flight, num_jobs, __ATOMIC_RELEASE);
    (void)pthread_mutex_unlock(&p->mu);
    if (num_jobs == 1) {
        (void)pthread_cond_signal(&p->cv);
    } else {
        (void)pthread_cond_broadcast(&p->cv);
    }
    return cm_result_make(CM_OK);
}

size_t hsm_pool_depth(hsm_pool *p)
{
    (void)pthread_mutex_lock(&p->mu);
    size_t d = p->depth;
    (void)pthread_mutex_unlock(&p->mu);
    return d;
}

void hsm_pool_get_stats(hsm_pool *p, hsm_pool_stats *out)
{
    out->signed_ok = __atomic_load_n(&p->st_ok, __ATOMIC_RELAXED);
    out->failed = __atomic_load_n(&p->st_failed, __ATOMIC_RELAXED);
    out->retried = __atomic_load_n(&p->st_retried, __ATOMIC_RELAXED);
    out->reopened = __atomic_load_n(&p->st_reopened, __ATOMIC_RELAXED);
    out->batches = __atomic_load_n(&p->st_batches, __ATOMIC_RELAXED);
    out->sign_calls_failed = __atomic_load_n(&p->st_sign_calls_failed, __ATOMIC_RELAXED);
    out->signed_inline = __atomic_load_n(&p->st_inline, __ATOMIC_RELAXED);
    out->inline_deferred = __atomic_load_n(&p->st_inline_deferred, __ATOMIC_RELAXED);
}

void hsm_job_why(const hsm_job *j, cm_why *why)
{
    const cm_result r = j->result;
    const uint32_t detail = CM_CODE_DETAIL(r.code);
    const char *what = cm_result_class(r) != CM_CLASS_HSM ? cm_result_text(r)
                       : detail == 0xffffffu              ? "CKR_VENDOR_DEFINED" // cm_code_from_ckr
                                                          : cm_ckr_name(detail);
    cm_why_set(why, "HSM signing failed: %s%s", what, j->attempts > 1 ? ", retried once" : "");
}

cm_result hsm_sign_sync(hsm_pool *p, size_t *out_len, uint8_t *sig, size_t sig_cap,
                        const hsm_key *key, hsm_sig_alg alg, cm_span msg)
{
    *out_len = 0;
    cm_cq cq = {NULL, -1};
    CM_TRY(cm_cq_init(&cq));
    hsm_job job;
    hsm_job_init(&job, &cq, key, alg, msg, sig, sig_cap);
    hsm_job *jp = &job;
    cm_result r = hsm_pool_submit(p, &jp, 1);
    if (cm_ok(r)) {
        bool done = false;
        while (!done) {
            (void)cm_cq_wait(&cq, -1);
            for (cm_cq_node *n = cm_cq_drain(&cq); n != NULL; n = n->next) {
                done = done || n == &job.node;
            }
        }
        r = job.result;
        *out_len = job.sig_len;
    }
    cm_cq_cleanup(&cq);
    return r;
}

// ---------------------------------------------------------------------------------------------
// Inline signing: lanes and the calibration that decides for them

bool hsm_pool_inline(const hsm_pool *p)
{
    return __atomic_load_n(&p->inline_on, __ATOMIC_ACQUIRE) != 0;
}

// hsm_lane_open sets up |l| as a thread-less worker of |p| with its own session.
static cm_result hsm_lane_open(hsm_lane *l, hsm_pool *p)
{
    l->w.pool = p;
    l->w.index = p->num_workers + __atomic_fetch_add(&p->lanes_opened, 1, __ATOMIC_RELAXED);
    l->w.md_ctx = EVP_MD_CTX_new();
    CM_ENSURE(l->w.md_ctx != NULL, CM_E_NOMEM);
    return hsm_worker_open(&l->w);
}

static void hsm_lane_close(hsm_lane *l)
{
    hsm_worker_close(&l->w);
    EVP_MD_CTX_free(l->w.md_ctx);
    l->w.md_ctx = NULL;
}

cm_result hsm_lane_new(hsm_lane **out, hsm_pool *p)
{
    *out = NULL;
    if (!hsm_pool_inline(p)) {
        return cm_result_make(CM_OK);
    }
    hsm_lane *l = calloc(1, sizeof(*l));
    CM_ENSURE(l != NULL, CM_E_NOMEM);
    const cm_result r = hsm_lane_open(l, p);
    if (!cm_ok(r)) {
        hsm_lane_close(l);
        free(l);
        return r;
    }
    *out = l;
    return r;
}

void hsm_lane_free(hsm_lane *l)
{
    if (l == NULL) {
        return;
    }
    hsm_lane_close(l);
    free(l);
}

cm_result hsm_pool_submit_on(hsm_pool *p, hsm_lane *lane, hsm_job *const *jobs, size_t num_jobs)
{
    if (lane == NULL) {
        return hsm_pool_submit(p, jobs, num_jobs);
    }
    CM_ENSURE(lane->w.pool == p, CM_E_INVALID_ARG);
    if (num_jobs == 0) {
        return cm_result_make(CM_OK);
    }
    CM_TRY(hsm_jobs_check(p, jobs, num_jobs));
    // While the token is busy (inline_max lanes signing, or jobs with the workers) this lane
    // hands its jobs to the workers instead of waiting for it: SoftHSM serialises much of a
    // signature on a lock of its own (two threads sign only ~1.35 times as fast as one), and a
    // loop blocked there stalls every connection it serves, while the workers overlap the
    // signatures with the loops' other work. An idle token signs inline, without hand-offs.
    const uint32_t max = p->opts.inline_max != 0 ? p->opts.inline_max : 1;
    bool take = __atomic_load_n(&p->in_flight, __ATOMIC_ACQUIRE) == 0;
    if (take && __atomic_add_fetch(&p->inline_busy, 1, __ATOMIC_ACQ_REL) > max) {
        __atomic_sub_fetch(&p->inline_busy, 1, __ATOMIC_RELEASE);
        take = false;
    }
    if (!take) {
        hsm_stat_add(&p->st_inline_deferred, num_jobs);
        return hsm_pool_submit(p, jobs, num_jobs);
    }
    hsm_job *batch[HSM_MAX_BATCH];
    size_t done = 0;
    while (done < num_jobs) {
        size_t n = num_jobs - done < HSM_MAX_BATCH ? num_jobs - done : HSM_MAX_BATCH;
        for (size_t i = 0; i < n; i++) {
            batch[i] = jobs[done + i];
            batch[i]->node.kind = CM_CQ_KIND_HSM_JOB;
            batch[i]->attempts = 0;
            hsm_worker_sign(&lane->w, batch[i]);
        }
        hsm_stat_add(&p->st_inline, n);
        hsm_complete_as(p, batch, n, true);
        done += n;
    }
    __atomic_sub_fetch(&p->inline_busy, 1, __ATOMIC_RELEASE);
    return cm_result_make(CM_OK);
}

static uint64_t hsm_clock_ns(clockid_t id)
{
    struct timespec ts;
    (void)clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int hsm_u64_cmp(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// hsm_calibrate_measure signs up to HSM_CALIBRATE_SIGNS messages on a fresh lane of the
// calling thread, stopping once HSM_CALIBRATE_BUDGET_NS have passed (after the first: a slow
// HSM must not hold up the start), and fills the figures.
static cm_result hsm_calibrate_measure(hsm_pool *p, hsm_calibration *c, const hsm_key *key,
                                       hsm_sig_alg alg)
{
    hsm_lane lane;
    memset(&lane, 0, sizeof(lane));
    lane.w.uncounted = true;
    cm_result r = hsm_lane_open(&lane, p);
    uint64_t wall[HSM_CALIBRATE_SIGNS], cpu[HSM_CALIBRATE_SIGNS];
    uint32_t best = 0, n = 0;
    uint8_t msg[64], sig[HSM_MAX_SIG_LEN];
    memset(msg, 0x5a, sizeof(msg));
    const uint64_t start = hsm_clock_ns(CLOCK_MONOTONIC);
    while (cm_ok(r) && n < HSM_CALIBRATE_SIGNS &&
           (n == 0 || hsm_clock_ns(CLOCK_MONOTONIC) - start < HSM_CALIBRATE_BUDGET_NS)) {
        hsm_job j;
        hsm_job_init(&j, NULL, key, alg, cm_span_make(msg, sizeof(msg)), sig, sizeof(sig));
        const uint64_t w0 = hsm_clock_ns(CLOCK_MONOTONIC);
        const uint64_t c0 = hsm_clock_ns(CLOCK_THREAD_CPUTIME_ID);
        hsm_worker_sign(&lane.w, &j);
        const uint64_t c1 = hsm_clock_ns(CLOCK_THREAD_CPUTIME_ID);
        const uint64_t w1 = hsm_clock_ns(CLOCK_MONOTONIC);
        r = j.result;
        wall[n] = w1 > w0 ? w1 - w0 : 1;
        cpu[n] = c1 - c0;
        const uint64_t share = 1000u * cpu[n] / wall[n];
        best = share > best ? (uint32_t)(share < 1000u ? share : 1000u) : best;
        n++;
    }
    hsm_lane_close(&lane);
    CM_TRY(r);
    qsort(wall, n, sizeof(wall[0]), hsm_u64_cmp);
    qsort(cpu, n, sizeof(cpu[0]), hsm_u64_cmp);
    c->signs = n;
    c->wall_ns = wall[n / 2];
    c->cpu_ns = cpu[n / 2];
    c->cpu_permille = best;
    c->measured = true;
    return r;
}

cm_result hsm_pool_calibrate(hsm_pool *p, hsm_calibration *out, const hsm_key *key, hsm_sig_alg alg)
{
    hsm_calibration c;
    memset(&c, 0, sizeof(c));
    cm_result r = cm_result_make(CM_OK);
    if (p->opts.dispatch == HSM_DISPATCH_AUTO) {
        CM_ENSURE(key != NULL && key->token == p->token, CM_E_INVALID_ARG);
        CM_ENSURE(hsm_sig_alg_fits(alg, key->type), HSM_E_ALG_MISMATCH);
        r = hsm_calibrate_measure(p, &c, key, alg);
        const bool local = cm_ok(r) && c.cpu_permille >= HSM_INLINE_MIN_CPU_PERMILLE;
        __atomic_store_n(&p->inline_on, local ? 1 : 0, __ATOMIC_RELEASE);
    }
    c.dispatch = hsm_pool_inline(p) ? HSM_DISPATCH_INLINE : HSM_DISPATCH_POOL;
    if (out != NULL) {
        *out = c;
    }
    return r;
}
