// Trust stores for signature-protected clients, with a bounded cache of successful chain
// validations keyed by SHA-256 of the leaf certificate.
//
// The cache is 4-way set associative with round-robin replacement inside a set: a fixed
// array allocated at start-up, so its size never depends on what peers send, and an entry
// is only written after OpenSSL's X509_verify_cert succeeded. An entry remembers the window
// in which every certificate of the verified chain is valid, so a hit at another time is
// only honoured inside that window.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "engine/ca/ca_internal.h"

#define CA_TRUST_WAYS      4u
#define CA_TRUST_MAX_EXTRA 16u

// ca_trust_entry is one cached verification. Thread: guarded by its ca_trust's |mu|.
typedef struct ca_trust_entry {
    uint8_t key[32]; // SHA-256 of the leaf DER
    int64_t not_before;
    int64_t not_after;
    bool used;
} ca_trust_entry;

// Thread: the store is shared read-only after ca_trust_new; the cache is locked by |mu|.
struct ca_trust {
    X509_STORE *store;
    EVP_MD *sha256;
    pthread_mutex_t mu;
    ca_trust_entry *entries; // guarded_by(mu); num_sets * CA_TRUST_WAYS
    uint8_t *next_way;       // guarded_by(mu); per set
    size_t num_sets;
    size_t num_entries; // guarded_by(mu)
    uint64_t hits;      // guarded_by(mu)
};

static cm_result ca_trust_load(ca_trust *t, char *err, size_t err_cap, const char *path)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        ca_errf(err, err_cap, "%s: cannot open the trust anchor file", path);
        CM_BAIL(CA_E_CONFIG);
    }
    size_t n = 0;
    cm_result res = cm_result_make(CM_OK);
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(t->store, x) != 1) {
            ca_errf(err, err_cap, "%s: certificate %zu cannot be added", path, n + 1);
            res = cm_result_make(CA_E_CONFIG);
        }
        X509_free(x);
        n++;
        if (!cm_ok(res)) {
            break;
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    if (cm_ok(res) && n == 0) {
        ca_errf(err, err_cap, "%s: no PEM certificate in the file", path);
        res = cm_result_make(CA_E_CONFIG);
    }
    return res;
}

cm_result ca_trust_new(ca_trust **out, char *err, size_t err_cap, const char *const *paths,
                       size_t num_paths, size_t cache_cap)
{
    cm_result res = cm_result_make(CM_E_NOMEM);
    ca_trust *t = calloc(1, sizeof(*t));
    CM_ENSURE(t != NULL, CM_E_NOMEM);
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t);
        CM_BAIL(CM_E_NOMEM);
    }
    t->store = X509_STORE_new();
    t->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (t->store == NULL || t->sha256 == NULL ||
        X509_STORE_set_flags(t->store, X509_V_FLAG_PARTIAL_CHAIN) != 1) {
        res = cm_result_make(CM_E_CRYPTO);
        goto out;
    }
    if (cache_cap > 0) {
        t->num_sets = (cache_cap + CA_TRUST_WAYS - 1) / CA_TRUST_WAYS;
        t->entries = calloc(t->num_sets * CA_TRUST_WAYS, sizeof(*t->entries));
        t->next_way = calloc(t->num_sets, 1);
        if (t->entries == NULL || t->next_way == NULL) {
            goto out;
        }
    }
    if (num_paths == 0) {
        ca_errf(err, err_cap, "no trust anchor file given");
        res = cm_result_make(CA_E_CONFIG);
        goto out;
    }
    for (size_t i = 0; i < num_paths; i++) {
        res = ca_trust_load(t, err, err_cap, paths[i]);
        if (!cm_ok(res)) {
            goto out;
        }
    }
    *out = t;
    t = NULL;
    res = cm_result_make(CM_OK);
out:
    ERR_clear_error();
    ca_trust_free(t);
    return res;
}

void ca_trust_free(ca_trust *t)
{
    if (t == NULL) {
        return;
    }
    X509_STORE_free(t->store);
    EVP_MD_free(t->sha256);
    free(t->entries);
    free(t->next_way);
    (void)pthread_mutex_destroy(&t->mu);
    free(t);
}

void ca_trust_cache_stats(ca_trust *t, uint64_t *out_hits, size_t *out_entries)
{
    (void)pthread_mutex_lock(&t->mu);
    *out_hits = t->hits;
    *out_entries = t->num_entries;
    (void)pthread_mutex_unlock(&t->mu);
}

static size_t ca_trust_set(const ca_trust *t, const uint8_t key[32])
{
    uint64_t h = 0;
    for (size_t i = 0; i < 8; i++) {
        h = (h << 8) | key[i];
    }
    return (size_t)(h % t->num_sets);
}

static bool ca_trust_lookup(ca_trust *t, const uint8_t key[32], int64_t at)
{
    const size_t set = ca_trust_set(t, key);
    bool hit = false;
    (void)pthread_mutex_lock(&t->mu);
    for (size_t w = 0; w < CA_TRUST_WAYS; w++) {
        const ca_trust_entry *e = &t->entries[set * CA_TRUST_WAYS + w];
        if (e->used && memcmp(e->key, key, 32) == 0 && at >= e->not_before && at <= e->not_after) {
            hit = true;
            t->hits++;
            break;
        }
    }
    (void)pthread_mutex_unlock(&t->mu);
    return hit;
}

static void ca_trust_insert(ca_trust *t, const uint8_t key[32], int64_t nb, int64_t na)
{
    const size_t set = ca_trust_set(t, key);
    (void)pthread_mutex_lock(&t->mu);
    ca_trust_entry *slot = NULL;
    for (size_t w = 0; w < CA_TRUST_WAYS && slot == NULL; w++) {
        ca_trust_entry *e = &t->entries[set * CA_TRUST_WAYS + w];
        if (e->used && memcmp(e->key, key, 32) == 0) {
            slot = e; // refresh in place
        }
    }
    for (size_t w = 0; w < CA_TRUST_WAYS && slot == NULL; w++) {
        ca_trust_entry *e = &t->entries[set * CA_TRUST_WAYS + w];
        if (!e->used) {
            slot = e;
            t->num_entries++;
        }
    }
    if (slot == NULL) {
        slot = &t->entries[set * CA_TRUST_WAYS + t->next_way[set]];
        t->next_way[set] = (uint8_t)((t->next_way[set] + 1) % CA_TRUST_WAYS);
    }
    memcpy(slot->key, key, 32);
    slot->not_before = nb;
    slot->not_after = na;
    slot->used = true;
    (void)pthread_mutex_unlock(&t->mu);
}

static bool ca_asn1_time(const ASN1_TIME *a, int64_t *out)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(a, &tm) != 1) {
        return false;
    }
    *out = cm_time_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec);
    return true;
}

static X509 *ca_d2i(cm_span der)
{
    const unsigned char *p = der.p;
    if (der.len > 0x7fffffff) {
        return NULL;
    }
    X509 *x = d2i_X509(NULL, &p, (long)der.len);
    if (x != NULL && p != der.p + der.len) {
        X509_free(x);
        return NULL;
    }
    return x;
}

// ca_trust_why explains a failed X509_verify_cert: OpenSSL's verify error text and the subject
// of the certificate it failed on.
static void ca_trust_why(cm_why *why, X509_STORE_CTX *ctx, int err)
{
    if (why == NULL) {
        return;
    }
    char subject[96] = "";
    const X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
    const unsigned char *der = NULL;
    size_t der_len = 0;
    if (cur != NULL && X509_NAME_get0_der(X509_get_subject_name(cur), &der, &der_len) == 1) {
        (void)ca_name_to_text(subject, sizeof(subject), cm_span_make(der, der_len));
    }
    cm_why_set(why, "certificate is not trusted: %s (%s)", X509_verify_cert_error_string(err),
               subject[0] != '\0' ? subject : "empty subject");
}

cm_result ca_trust_verify(ca_trust *t, cm_span leaf, const cm_span *extra, size_t num_extra,
                          int64_t at, cm_why *why)
{
    uint8_t key[32];
    unsigned int key_len = 0;
    if (t->entries != NULL) {
        CM_TRY_OSSL(EVP_Digest(leaf.p, leaf.len, key, &key_len, t->sha256, NULL), CM_E_CRYPTO);
        if (ca_trust_lookup(t, key, at)) {
            return cm_result_make(CM_OK);
        }
    }
    cm_result res = cm_result_make(CA_E_UNTRUSTED);
    X509 *x = ca_d2i(leaf);
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (chain == NULL || ctx == NULL) {
        goto out;
    }
    if (x == NULL) {
        cm_why_set(why, "certificate is not trusted: it cannot be parsed");
        goto out;
    }
    if (num_extra > CA_TRUST_MAX_EXTRA) {
        cm_why_set(why, "certificate is not trusted: more than %u extra certificates",
                   (unsigned)CA_TRUST_MAX_EXTRA);
        goto out;
    }
    for (size_t i = 0; i < num_extra; i++) {
        X509 *e = ca_d2i(extra[i]);
        if (e == NULL) {
            cm_why_set(why, "certificate is not trusted: extra certificate %zu cannot be parsed",
                       i + 1);
            goto out;
        }
        if (sk_X509_push(chain, e) <= 0) {
            X509_free(e);
            goto out;
        }
    }
    if (X509_STORE_CTX_init(ctx, t->store, x, chain) != 1) {
        res = cm_result_make(CM_E_CRYPTO);
        goto out;
    }
    X509_STORE_CTX_set_time(ctx, 0, (time_t)at);
    if (X509_verify_cert(ctx) != 1) {
        const int err = X509_STORE_CTX_get_error(ctx);
        ca_trust_why(why, ctx, err);
        switch (err) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
            res = cm_result_make(CA_E_CERT_EXPIRED);
            break;
        case X509_V_ERR_CERT_REVOKED:
            res = cm_result_make(CA_E_CERT_REVOKED);
            break;
        default:
            res = cm_result_make(CA_E_UNTRUSTED);
            break;
        }
        goto out;
    }
    if (t->entries != NULL) {
        int64_t lo = INT64_MIN, hi = INT64_MAX;
        STACK_OF(X509) *verified = X509_STORE_CTX_get0_chain(ctx);
        bool ok = verified != NULL;
        for (int i = 0; ok && i < sk_X509_num(verified); i++) {
            const X509 *c = sk_X509_value(verified, i);
            int64_t nb = 0, na = 0;
            ok = ca_asn1_time(X509_get0_notBefore(c), &nb) &&
                 ca_asn1_time(X509_get0_notAfter(c), &na);
            lo = ok && nb > lo ? nb : lo;
            hi = ok && na < hi ? na : hi;
        }
        if (ok) {
            ca_trust_insert(t, key, lo, hi);
        }
    }
    res = cm_result_make(CM_OK);
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(chain, X509_free);
    X509_free(x);
    return res;
}
