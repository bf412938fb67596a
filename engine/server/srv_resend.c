// The retransmission cache (srv_internal.h, "The retransmission cache"): the answers to
// authenticated requests, kept by the SHA-256 of the request so that a client that resends a
// request whose answer it never received gets that answer again. A chained hash table over a
// FIFO of entries, one allocation per entry (the entry and the response's bytes), one mutex.
// Answers are copied in outside the lock; the lock covers only linking, unlinking and the
// copy out of a hit (a few KiB at most).
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "engine/server/srv_internal.h"

typedef struct srv_resend_entry {
    struct srv_resend_entry *hnext; // the bucket's chain
    struct srv_resend_entry *older; // the FIFO, oldest first
    struct srv_resend_entry *newer;
    uint8_t key[SRV_RESEND_KEY_LEN];
    uint64_t expires_ms;
    int fail_bit;
    cm_result error;
    size_t size; // what it counts against max_bytes
    size_t len;
    uint8_t rsp[]; // the response's DER
} srv_resend_entry;

struct srv_resend {
    pthread_mutex_t mu;
    srv_resend_entry **buckets; // guarded_by(mu)
    uint32_t mask;
    srv_resend_entry *oldest, *newest; // guarded_by(mu)
    size_t max_entries, max_bytes;
    srv_resend_stats st; // guarded_by(mu)
};

cm_result srv_resend_new(srv_resend **out, size_t max_entries, size_t max_bytes)
{
    *out = NULL;
    CM_ENSURE(max_entries > 0 && max_bytes > 0 && max_entries <= (1u << 24), CM_E_INVALID_ARG);
    srv_resend *c = calloc(1, sizeof(*c));
    CM_ENSURE(c != NULL, CM_E_NOMEM);
    uint32_t n = 16;
    while (n < max_entries) {
        n <<= 1;
    }
    c->buckets = calloc(n, sizeof(*c->buckets));
    if (c->buckets == NULL || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->buckets);
        free(c);
        CM_BAIL(CM_E_NOMEM);
    }
    c->mask = n - 1;
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    *out = c;
    return cm_result_make(CM_OK);
}

void srv_resend_free(srv_resend *c)
{
    if (c == NULL) {
        return;
    }
    for (srv_resend_entry *e = c->oldest; e != NULL;) {
        srv_resend_entry *next = e->newer;
        free(e);
        e = next;
    }
    (void)pthread_mutex_destroy(&c->mu);
    free(c->buckets);
    free(c);
}

// srv_resend_bucket: the key is a SHA-256 output, so any four of its octets spread evenly.
static srv_resend_entry **srv_resend_bucket(srv_resend *c, const uint8_t *key)
{
    uint32_t h;
    memcpy(&h, key, sizeof(h));
    return &c->buckets[h & c->mask];
}

static srv_resend_entry *srv_resend_find(srv_resend *c, const uint8_t *key)
{
    for (srv_resend_entry *e = *srv_resend_bucket(c, key); e != NULL; e = e->hnext) {
        if (memcmp(e->key, key, SRV_RESEND_KEY_LEN) == 0) {
            return e;
        }
    }
    return NULL;
}

// srv_resend_unlink takes |e| out of its bucket and the FIFO; the caller frees it.
static void srv_resend_unlink(srv_resend *c, srv_resend_entry *e)
{
    for (srv_resend_entry **pp = srv_resend_bucket(c, e->key); *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    if (e->older != NULL) {
        e->older->newer = e->newer;
    } else {
        c->oldest = e->newer;
    }
    if (e->newer != NULL) {
        e->newer->older = e->older;
    } else {
        c->newest = e->older;
    }
    c->st.entries--;
    c->st.bytes -= e->size;
}

bool srv_resend_get(srv_resend *c, const uint8_t key[SRV_RESEND_KEY_LEN], uint64_t now_ms,
                    cm_arena *arena, cm_span *out, int *out_fail_bit, cm_result *out_error)
{
    bool hit = false;
    (void)pthread_mutex_lock(&c->mu);
    const srv_resend_entry *e = srv_resend_find(c, key);
    if (e != NULL && e->expires_ms > now_ms) {
        uint8_t *p = cm_arena_alloc(arena, e->len);
        if (p != NULL) {
            memcpy(p, e->rsp, e->len);
            *out = cm_span_make(p, e->len);
            *out_fail_bit = e->fail_bit;
            *out_error = e->error;
            c->st.hits++;
            hit = true;
        }
    }
    (void)pthread_mutex_unlock(&c->mu);
    return hit;
}

void srv_resend_put(srv_resend *c, const uint8_t key[SRV_RESEND_KEY_LEN], uint64_t expires_ms,
                    cm_span rsp, int fail_bit, cm_result error)
{
    const size_t size = sizeof(srv_resend_entry) + rsp.len;
    if (rsp.len == 0 || size > c->max_bytes) {
        return;
    }
    srv_resend_entry *e = malloc(size);
    if (e == NULL) {
        return;
    }
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, SRV_RESEND_KEY_LEN);
    e->expires_ms = expires_ms;
    e->fail_bit = fail_bit;
    e->error = error;
    e->size = size;
    e->len = rsp.len;
    memcpy(e->rsp, rsp.p, rsp.len);
    srv_resend_entry *drop = NULL; // freed after the lock: a list through hnext
    const uint64_t now_ms = srv_now_ms();
    (void)pthread_mutex_lock(&c->mu);
    srv_resend_entry *old = srv_resend_find(c, key);
    if (old != NULL && old->expires_ms > now_ms) {
        // The first answer wins (a concurrent copy of the same request answered later).
        (void)pthread_mutex_unlock(&c->mu);
        free(e);
        return;
    }
    if (old != NULL) {
        srv_resend_unlink(c, old);
        old->hnext = drop;
        drop = old;
    }
    // Room: the expired at the old end go first, then the oldest of all.
    while (c->oldest != NULL &&
           (c->oldest->expires_ms <= now_ms || c->st.entries + 1 > c->max_entries ||
            c->st.bytes + size > c->max_bytes)) {
        srv_resend_entry *v = c->oldest;
        if (v->expires_ms > now_ms) {
            c->st.evicted++;
        }
        srv_resend_unlink(c, v);
        v->hnext = drop;
        drop = v;
    }
    srv_resend_entry **b = srv_resend_bucket(c, key);
    e->hnext = *b;
    *b = e;
    e->older = c->newest;
    if (c->newest != NULL) {
        c->newest->newer = e;
    } else {
        c->oldest = e;
    }
    c->newest = e;
    c->st.entries++;
    c->st.bytes += size;
    c->st.stored++;
    (void)pthread_mutex_unlock(&c->mu);
    while (drop != NULL) {
        srv_resend_entry *next = drop->hnext;
        free(drop);
        drop = next;
    }
}

void srv_resend_get_stats(srv_resend *c, srv_resend_stats *out)
{
    (void)pthread_mutex_lock(&c->mu);
    *out = c->st;
    (void)pthread_mutex_unlock(&c->mu);
}

// --- where the engine uses it ---------------------------------------------------------------

// srv_resend_body_kept: the bodies whose answers a resend must get again: those that change
// what the store holds (an enrolment, a confirmation, a revocation, a client's error ending a
// transaction). genm is answered afresh (it changes nothing, and its answer may).
static bool srv_resend_body_kept(int body_type)
{
    switch (body_type) {
    case CMP_BODY_IR:
    case CMP_BODY_CR:
    case CMP_BODY_KUR:
    case CMP_BODY_P10CR:
    case CMP_BODY_CERT_CONF:
    case CMP_BODY_RR:
    case CMP_BODY_ERROR:
        return true;
    default:
        return false;
    }
}

bool srv_resend_lookup(srv_request *req)
{
    srv_engine *e = req->w->e;
    if (e->resend == NULL || !srv_resend_body_kept(req->body_type)) {
        return false;
    }
    // The key: SHA-256 over the CA's name and the SHA-256 of the request (the same bytes sent
    // to another CA are another request).
    const size_t name_len = strlen(req->ca->name);
    uint8_t *in = cm_arena_alloc(&req->arena, name_len + 1 + 32);
    if (in == NULL) {
        return false;
    }
    memcpy(in, req->ca->name, name_len);
    in[name_len] = 0;
    unsigned int n = 0;
    if (EVP_Digest(req->der.p, req->der.len, in + name_len + 1, &n, req->w->dig.sha256, NULL) !=
            1 ||
        EVP_Digest(in, name_len + 1 + 32, req->resend_key, &n, req->w->dig.sha256, NULL) != 1) {
        cm_ossl_clear_errors();
        return false;
    }
    req->resend_key_set = true;
    int fail_bit = -1;
    cm_result error = cm_result_make(CM_OK);
    if (!srv_resend_get(e->resend, req->resend_key, srv_now_ms(), &req->arena, &req->response,
                        &fail_bit, &error)) {
        return false;
    }
    req->resent = true;
    req->fail_bit = fail_bit;
    req->error = error;
    if (fail_bit >= 0) {
        cm_why_set(&req->why, "a resend of a request answered before: the same rejection again");
    }
    srv_mark(req, SRV_STAGE_PARSE);
    srv_mark(req, SRV_STAGE_RESPOND);
    req->state = SRV_ST_DONE;
    return true;
}

void srv_resend_keep(srv_request *req)
{
    srv_engine *e = req->w->e;
    if (e->resend == NULL || !req->resend_key_set || req->resent || req->response.len == 0 ||
        !(req->mac_ok || req->sig_ok)) {
        return;
    }
    if (req->fail_bit >= 0) {
        const uint32_t cls = cm_result_class(req->error);
        if ((cls != CM_CLASS_PROTO && cls != CM_CLASS_POLICY) ||
            req->fail_bit == CM_FAIL_TRANSACTION_ID_IN_USE) {
            return; // a server failure (a retry may succeed), or a copy of one still in flight
        }
    }
    int64_t window = e->p.retransmit_window;
    if (window == SRV_RETRANSMIT_AUTO) {
        // A certificate that waits for certConf is revoked after confirm_wait_time: a resend
        // after that would get a revoked certificate. Everything else: five minutes.
        const bool waits = req->fail_bit < 0 && !req->implicit &&
                           (req->body_type == CMP_BODY_IR || req->body_type == CMP_BODY_CR ||
                            req->body_type == CMP_BODY_KUR || req->body_type == CMP_BODY_P10CR);
        window = waits && e->p.confirm_wait_time > 0 ? e->p.confirm_wait_time
                                                     : SRV_RESEND_IMPLICIT_WINDOW_S;
    }
    srv_resend_put(e->resend, req->resend_key, srv_now_ms() + (uint64_t)window * 1000u,
                   req->response, req->fail_bit, req->error);
}
