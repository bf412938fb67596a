// The signer-status cache (store.h): a bounded, set-associative table of store_cert_state keyed
// by (CA, serial), shared by every reader of one store.
//
// Fixed size, allocated when the store opens; 4 ways per set, round-robin replacement inside a
// set; sets are spread over STORE_CACHE_SHARDS mutexes so loop threads rarely contend. An entry
// is only written from a database read, never from what a peer sent.
//
// Staleness is ruled out with a generation counter. A reader loads the generation before its
// database read and caches the answer only if the generation is unchanged when it inserts,
// under the shard lock. Every invalidation bumps the generation after its commit: a read that
// may have seen the state before the commit is then not cached, and an entry inserted before
// the invalidation took the shard lock is removed by it. Clearing everything bumps the
// generation first and the epoch second; an insert loads the epoch before it checks the
// generation, so an insert that still sees the old generation tags its entry with the old
// epoch, which the clear made invalid.
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine/store/store_internal.h"

#define STORE_CACHE_WAYS   4u
#define STORE_CACHE_SHARDS 16u
#define STORE_CACHE_CA_MAX 64u // CA names this long or longer are not cached
#define STORE_CACHE_SERIAL 20u

// store_cache_entry is one cached status. Thread: guarded by its shard's mutex.
typedef struct store_cache_entry {
    uint64_t epoch;       // valid while equal to the cache's epoch
    uint64_t inserted_ms; // monotonic, for max_age_ms
    char ca[STORE_CACHE_CA_MAX];
    uint8_t serial[STORE_CACHE_SERIAL];
    uint8_t serial_len;
    bool used;
    store_cert_state st;
} store_cache_entry;

// Thread: |entries| and |next_way| are guarded by the mutex of their set's shard; the counters
// are atomics; the rest is immutable after store_cache_new.
struct store_cache {
    pthread_mutex_t mu[STORE_CACHE_SHARDS];
    store_cache_entry *entries; // num_sets * STORE_CACHE_WAYS
    uint8_t *next_way;          // per set
    size_t num_sets;
    uint32_t max_age_ms;
    _Atomic uint64_t generation;
    _Atomic uint64_t epoch;
    _Atomic uint64_t hits, misses, invalidations, flushes;
};

cm_result store_cache_new(store_cache **out, size_t entries, uint32_t max_age_ms)
{
    *out = NULL;
    store_cache *c = calloc(1, sizeof(*c));
    CM_ENSURE(c != NULL, CM_E_NOMEM);
    c->num_sets = (entries + STORE_CACHE_WAYS - 1) / STORE_CACHE_WAYS;
    if (c->num_sets == 0) {
        c->num_sets = 1;
    }
    c->entries = calloc(c->num_sets * STORE_CACHE_WAYS, sizeof(*c->entries));
    c->next_way = calloc(c->num_sets, 1);
    size_t inited = 0;
    while (c->entries != NULL && c->next_way != NULL && inited < STORE_CACHE_SHARDS &&
           pthread_mutex_init(&c->mu[inited], NULL) == 0) {
        inited++;
    }
    if (inited < STORE_CACHE_SHARDS) {
        for (size_t i = 0; i < inited; i++) {
            (void)pthread_mutex_destroy(&c->mu[i]);
        }
        free(c->entries);
        free(c->next_way);
        free(c);
        CM_BAIL(CM_E_NOMEM);
    }
    c->max_age_ms = max_age_ms;
    atomic_init(&c->generation, 1);
    atomic_init(&c->epoch, 1);
    *out = c;
    return cm_result_make(CM_OK);
}

void store_cache_free(store_cache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < STORE_CACHE_SHARDS; i++) {
        (void)pthread_mutex_destroy(&c->mu[i]);
    }
    free(c->entries);
    free(c->next_way);
    free(c);
}

// store_cache_key_ok reports whether (ca, serial) fits an entry.
static bool store_cache_key_ok(const char *ca, cm_span serial)
{
    return ca != NULL && strlen(ca) < STORE_CACHE_CA_MAX && serial.len > 0 &&
           serial.len <= STORE_CACHE_SERIAL;
}

// store_cache_set picks the set of (ca, serial): FNV-1a over both (serials are random, CA names
// few; the hash only spreads, it is not a security boundary: a peer cannot choose a serial it
// was not issued).
static size_t store_cache_set(const store_cache *c, const char *ca, cm_span serial)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = ca; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    h = (h ^ 0xffu) * 1099511628211ull;
    for (size_t i = 0; i < serial.len; i++) {
        h = (h ^ serial.p[i]) * 1099511628211ull;
    }
    return (size_t)(h % c->num_sets);
}

static pthread_mutex_t *store_cache_lock_of(store_cache *c, size_t set)
{
    return &c->mu[set % STORE_CACHE_SHARDS];
}

static bool store_cache_match(const store_cache_entry *e, const char *ca, cm_span serial)
{
    return e->used && e->serial_len == serial.len && memcmp(e->serial, serial.p, serial.len) == 0 &&
           strcmp(e->ca, ca) == 0;
}

bool store_cache_get(store_cache *c, const char *ca, cm_span serial, store_cert_state *out)
{
    if (!store_cache_key_ok(ca, serial)) {
        return false;
    }
    const size_t set = store_cache_set(c, ca, serial);
    const uint64_t epoch = atomic_load(&c->epoch);
    const uint64_t now = c->max_age_ms != 0 ? cm_time_mono_ns() / 1000000u : 0;
    bool hit = false;
    pthread_mutex_t *mu = store_cache_lock_of(c, set);
    (void)pthread_mutex_lock(mu);
    for (size_t w = 0; w < STORE_CACHE_WAYS; w++) {
        const store_cache_entry *e = &c->entries[set * STORE_CACHE_WAYS + w];
        if (store_cache_match(e, ca, serial) && e->epoch == epoch &&
            (c->max_age_ms == 0 || now - e->inserted_ms <= c->max_age_ms)) {
            *out = e->st;
            hit = true;
            break;
        }
    }
    (void)pthread_mutex_unlock(mu);
    atomic_fetch_add_explicit(hit ? &c->hits : &c->misses, 1, memory_order_relaxed);
    return hit;
}

uint64_t store_cache_generation(store_cache *c)
{
    return atomic_load(&c->generation);
}

void store_cache_put(store_cache *c, const char *ca, cm_span serial, const store_cert_state *st,
                     uint64_t generation)
{
    if (!store_cache_key_ok(ca, serial)) {
        return;
    }
    const size_t set = store_cache_set(c, ca, serial);
    pthread_mutex_t *mu = store_cache_lock_of(c, set);
    (void)pthread_mutex_lock(mu);
    // The epoch first, then the generation (see the top of this file).
    const uint64_t epoch = atomic_load(&c->epoch);
    if (atomic_load(&c->generation) != generation) {
        (void)pthread_mutex_unlock(mu);
        return; // something changed since the caller's read: do not cache what it saw
    }
    store_cache_entry *slot = NULL;
    for (size_t w = 0; w < STORE_CACHE_WAYS && slot == NULL; w++) {
        store_cache_entry *e = &c->entries[set * STORE_CACHE_WAYS + w];
        if (store_cache_match(e, ca, serial)) {
            slot = e;
        }
    }
    for (size_t w = 0; w < STORE_CACHE_WAYS && slot == NULL; w++) {
        store_cache_entry *e = &c->entries[set * STORE_CACHE_WAYS + w];
        if (!e->used || e->epoch != epoch) {
            slot = e;
        }
    }
    if (slot == NULL) {
        slot = &c->entries[set * STORE_CACHE_WAYS + c->next_way[set]];
        c->next_way[set] = (uint8_t)((c->next_way[set] + 1) % STORE_CACHE_WAYS);
    }
    memset(slot, 0, sizeof(*slot));
    memcpy(slot->ca, ca, strlen(ca) + 1);
    memcpy(slot->serial, serial.p, serial.len);
    slot->serial_len = (uint8_t)serial.len;
    slot->st = *st;
    slot->st.from_cache = true;
    slot->epoch = epoch;
    slot->inserted_ms = cm_time_mono_ns() / 1000000u;
    slot->used = true;
    (void)pthread_mutex_unlock(mu);
}

void store_cache_invalidate(store_cache *c, const char *ca, cm_span serial)
{
    if (!store_cache_key_ok(ca, serial)) {
        // Never cached; still bump so an in-flight read of it is not cached either.
        atomic_fetch_add(&c->generation, 1);
        return;
    }
    const size_t set = store_cache_set(c, ca, serial);
    pthread_mutex_t *mu = store_cache_lock_of(c, set);
    (void)pthread_mutex_lock(mu);
    for (size_t w = 0; w < STORE_CACHE_WAYS; w++) {
        store_cache_entry *e = &c->entries[set * STORE_CACHE_WAYS + w];
        if (store_cache_match(e, ca, serial)) {
            e->used = false;
        }
    }
    atomic_fetch_add(&c->generation, 1);
    (void)pthread_mutex_unlock(mu);
    atomic_fetch_add_explicit(&c->invalidations, 1, memory_order_relaxed);
}

void store_cache_invalidate_all(store_cache *c)
{
    atomic_fetch_add(&c->generation, 1);
    atomic_fetch_add(&c->epoch, 1);
    atomic_fetch_add_explicit(&c->flushes, 1, memory_order_relaxed);
}

void store_cache_stats(store_cache *c, store_stats *out)
{
    out->status_hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
    out->status_misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
    out->status_invalidations = atomic_load_explicit(&c->invalidations, memory_order_relaxed);
    out->status_flushes = atomic_load_explicit(&c->flushes, memory_order_relaxed);
}
