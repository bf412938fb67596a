// What unauthenticated senders may cost (srv_internal.h, "What unauthenticated senders may
// cost"): the MAC-failure back-off per senderKID and per peer address, the good pairs exempt
// from it, and the error-signature token bucket per peer address. One mutex over small
// fixed-size tables; every operation is a handful of comparisons.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "engine/server/srv_internal.h"

// One peer address. Thread: locked by srv_budget.mu.
typedef struct srv_budget_peer {
    uint8_t key[SRV_PEER_KEY_LEN];
    bool used;
    uint64_t seen_ms;          // last touched (the eviction order)
    uint32_t fails;            // wrong MACs in the window that began at window_ms
    uint64_t window_ms;        //
    uint64_t backoff_until_ms; // in back-off while now < this
    uint64_t tokens;           // error signatures left, in thousandths
    uint64_t refill_ms;        // when |tokens| was last refilled
} srv_budget_peer;

// One senderKID (a configured secret). Thread: locked by srv_budget.mu.
typedef struct srv_budget_kid {
    uint32_t fails;
    uint64_t window_ms;
    uint64_t backoff_until_ms;
    // Addresses from which this senderKID's MAC verified (exempt from both back-offs).
    uint8_t good[SRV_BUDGET_GOOD_PEERS][SRV_PEER_KEY_LEN];
    uint32_t num_good;
    uint32_t next_good; // the slot a new good address takes when all are used
} srv_budget_kid;

struct srv_budget {
    pthread_mutex_t mu;
    srv_budget_params p;
    srv_budget_kid *kids; // guarded_by(mu)
    size_t num_kids;
    srv_budget_peer *peers; // guarded_by(mu)
    uint32_t peer_mask;
    uint64_t seed[2]; // the peer hash's key (random, so addresses cannot be chosen to collide)
    srv_budget_stats stats; // guarded_by(mu)
};

cm_result srv_budget_new(srv_budget **out, const srv_budget_params *p, size_t num_kids)
{
    *out = NULL;
    CM_ENSURE(p->mac_failures_max == 0 ||
                  (p->mac_failure_window_ms > 0 && p->mac_failure_backoff_ms > 0),
              CM_E_INVALID_ARG);
    srv_budget *b = calloc(1, sizeof(*b));
    CM_ENSURE(b != NULL, CM_E_NOMEM);
    b->p = *p;
    uint32_t slots = p->peer_slots != 0 ? p->peer_slots : SRV_BUDGET_DEFAULT_PEERS;
    uint32_t n = SRV_BUDGET_PROBE;
    while (n < slots && n < (1u << 24)) {
        n <<= 1;
    }
    b->p.peer_slots = n;
    b->peer_mask = n - 1;
    b->num_kids = num_kids;
    b->kids = calloc(num_kids > 0 ? num_kids : 1, sizeof(*b->kids));
    b->peers = calloc(n, sizeof(*b->peers));
    if (b->kids == NULL || b->peers == NULL ||
        RAND_bytes((unsigned char *)b->seed, sizeof(b->seed)) != 1 ||
        pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b->kids);
        free(b->peers);
        free(b);
        return cm_result_make(CM_E_NOMEM);
    }
    *out = b;
    return cm_result_make(CM_OK);
}

void srv_budget_free(srv_budget *b)
{
    if (b == NULL) {
        return;
    }
    (void)pthread_mutex_destroy(&b->mu);
    free(b->kids);
    free(b->peers);
    free(b);
}

const srv_budget_params *srv_budget_params_get(const srv_budget *b)
{
    return &b->p;
}

// srv_budget_hash mixes the peer key with the seed (two rounds of a 64-bit multiply-xorshift
// per word: not a MAC, but an address chosen without the seed lands anywhere).
static uint32_t srv_budget_hash(const srv_budget *b, const uint8_t *key)
{
    uint64_t w[2];
    memcpy(w, key, sizeof(w));
    uint64_t h = b->seed[0];
    for (size_t i = 0; i < 2; i++) {
        h ^= w[i] + b->seed[1];
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
        h *= 0xbf58476d1ce4e5b9ull;
        h ^= h >> 32;
    }
    return (uint32_t)h;
}

// srv_budget_peer_find returns |key|'s entry, or NULL when it has none.
static srv_budget_peer *srv_budget_peer_find(srv_budget *b, const uint8_t *key)
{
    const uint32_t home = srv_budget_hash(b, key);
    for (uint32_t k = 0; k < SRV_BUDGET_PROBE; k++) {
        srv_budget_peer *e = &b->peers[(home + k) & b->peer_mask];
        if (e->used && memcmp(e->key, key, SRV_PEER_KEY_LEN) == 0) {
            return e;
        }
    }
    return NULL;
}

// srv_budget_peer_get returns |key|'s entry, making one at |now_ms| when it has none: a free
// slot of its window, else the least recently seen entry not in back-off, else the least
// recently seen one.
static srv_budget_peer *srv_budget_peer_get(srv_budget *b, const uint8_t *key, uint64_t now_ms)
{
    srv_budget_peer *e = srv_budget_peer_find(b, key);
    if (e != NULL) {
        e->seen_ms = now_ms;
        return e;
    }
    const uint32_t home = srv_budget_hash(b, key);
    srv_budget_peer *free_slot = NULL, *calm = NULL, *oldest = NULL;
    for (uint32_t k = 0; k < SRV_BUDGET_PROBE; k++) {
        srv_budget_peer *c = &b->peers[(home + k) & b->peer_mask];
        if (!c->used) {
            free_slot = free_slot != NULL ? free_slot : c;
            continue;
        }
        if (c->backoff_until_ms <= now_ms && (calm == NULL || c->seen_ms < calm->seen_ms)) {
            calm = c;
        }
        if (oldest == NULL || c->seen_ms < oldest->seen_ms) {
            oldest = c;
        }
    }
    e = free_slot != NULL ? free_slot : calm != NULL ? calm : oldest;
    if (free_slot == NULL) {
        b->stats.peers_evicted++;
    } else {
        b->stats.peers_tracked++;
    }
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, SRV_PEER_KEY_LEN);
    e->used = true;
    e->seen_ms = now_ms;
    e->tokens = (uint64_t)b->p.error_signatures_per_peer * 1000u;
    e->refill_ms = now_ms;
    return e;
}

// srv_budget_good_find returns the slot of |peer| among |k|'s good addresses, or -1.
static int srv_budget_good_find(const srv_budget_kid *k, const uint8_t *peer)
{
    for (uint32_t i = 0; i < k->num_good; i++) {
        if (memcmp(k->good[i], peer, SRV_PEER_KEY_LEN) == 0) {
            return (int)i;
        }
    }
    return -1;
}

// srv_budget_fail counts one wrong MAC in a failure window (|fails|, |window_ms|) and starts a
// back-off when it reaches mac_failures_max; true when it did.
static bool srv_budget_fail(const srv_budget *b, uint32_t *fails, uint64_t *window_ms,
                            uint64_t *backoff_until_ms, uint64_t now_ms)
{
    if (*fails == 0 || now_ms - *window_ms >= b->p.mac_failure_window_ms) {
        *fails = 0;
        *window_ms = now_ms;
    }
    if (++*fails < b->p.mac_failures_max) {
        return false;
    }
    *fails = 0;
    *backoff_until_ms = now_ms + b->p.mac_failure_backoff_ms;
    return true;
}

srv_mac_gate srv_budget_mac_check(srv_budget *b, size_t kid, const uint8_t *peer, uint64_t now_ms,
                                  uint64_t *out_wait_ms, bool *out_good)
{
    *out_wait_ms = 0;
    if (out_good != NULL) {
        *out_good = false; // no memory of addresses without the back-off
    }
    if (b->p.mac_failures_max == 0 || kid >= b->num_kids) {
        return SRV_MAC_GO;
    }
    srv_mac_gate gate = SRV_MAC_GO;
    (void)pthread_mutex_lock(&b->mu);
    const srv_budget_kid *k = &b->kids[kid];
    const bool good = srv_budget_good_find(k, peer) >= 0;
    if (out_good != NULL) {
        *out_good = good;
    }
    if (!good) {
        const srv_budget_peer *e = srv_budget_peer_find(b, peer);
        if (k->backoff_until_ms > now_ms) {
            gate = SRV_MAC_KID_BACKOFF;
            *out_wait_ms = k->backoff_until_ms - now_ms;
            b->stats.refused_kid++;
        } else if (e != NULL && e->backoff_until_ms > now_ms) {
            gate = SRV_MAC_PEER_BACKOFF;
            *out_wait_ms = e->backoff_until_ms - now_ms;
            b->stats.refused_peer++;
        }
    }
    (void)pthread_mutex_unlock(&b->mu);
    return gate;
}

void srv_budget_mac_outcome(srv_budget *b, size_t kid, const uint8_t *peer, bool ok,
                            uint64_t now_ms)
{
    if (b->p.mac_failures_max == 0 || kid >= b->num_kids) {
        return;
    }
    (void)pthread_mutex_lock(&b->mu);
    srv_budget_kid *k = &b->kids[kid];
    const int g = srv_budget_good_find(k, peer);
    if (ok) {
        if (g < 0) {
            // Remember the address; with every slot taken, the oldest remembered makes room.
            const uint32_t slot =
                k->num_good < SRV_BUDGET_GOOD_PEERS ? k->num_good++ : k->next_good;
            memcpy(k->good[slot], peer, SRV_PEER_KEY_LEN);
            if (k->num_good == SRV_BUDGET_GOOD_PEERS) {
                k->next_good = (slot + 1) % SRV_BUDGET_GOOD_PEERS;
            }
        }
    } else {
        if (g >= 0) {
            // A wrong MAC from a good address for this senderKID: no longer exempt (the last
            // slot moves into its place).
            k->num_good--;
            if ((uint32_t)g != k->num_good) {
                memcpy(k->good[g], k->good[k->num_good], SRV_PEER_KEY_LEN);
            }
            k->next_good = 0;
        }
        if (srv_budget_fail(b, &k->fails, &k->window_ms, &k->backoff_until_ms, now_ms)) {
            b->stats.backoffs_kid++;
        }
        srv_budget_peer *e = srv_budget_peer_get(b, peer, now_ms);
        if (srv_budget_fail(b, &e->fails, &e->window_ms, &e->backoff_until_ms, now_ms)) {
            b->stats.backoffs_peer++;
        }
    }
    (void)pthread_mutex_unlock(&b->mu);
}

bool srv_budget_error_signature(srv_budget *b, const uint8_t *peer, uint64_t now_ms)
{
    const uint64_t rate = b->p.error_signatures_per_peer;
    (void)pthread_mutex_lock(&b->mu);
    bool ok = true;
    if (rate != 0) {
        srv_budget_peer *e = srv_budget_peer_get(b, peer, now_ms);
        // Refill: |rate| tokens a second, at most one second's worth (the bucket's depth).
        const uint64_t cap = rate * 1000u;
        const uint64_t elapsed = now_ms - e->refill_ms;
        e->tokens = elapsed >= 1000u || e->tokens + elapsed * rate >= cap
                        ? cap
                        : e->tokens + elapsed * rate;
        e->refill_ms = now_ms;
        ok = e->tokens >= 1000u;
        if (ok) {
            e->tokens -= 1000u;
        }
    }
    if (ok) {
        b->stats.error_signed++;
    } else {
        b->stats.error_unprotected++;
    }
    (void)pthread_mutex_unlock(&b->mu);
    return ok;
}

void srv_budget_get_stats(srv_budget *b, srv_budget_stats *out)
{
    (void)pthread_mutex_lock(&b->mu);
    *out = b->stats;
    (void)pthread_mutex_unlock(&b->mu);
}
