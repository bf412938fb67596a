// Trust stores for signature-protected clients, with a bounded cache of successful chain
// validations keyed by SHA-256 of the leaf certificate, and the anchors' CRLs.
//
// CRLs (trust_crls) are an immutable, reference-counted set: ca_trust_set_crls builds a new set
// and swaps it in under |mu|, so a SIGHUP reload is safe while loop threads verify (each verify
// holds a reference to the set it started with). The swap bumps the CRL generation, which
// every cache entry records: after a reload, each leaf is verified again against the new CRLs.
// A certificate whose issuer has no CRL in the set is not checked for revocation (the set holds
// the CRLs the operator has); an expired or badly signed CRL fails the verification.
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
#include <openssl/x509v3.h>

#include "engine/ca/ca_internal.h"

#define CA_TRUST_WAYS      4u
#define CA_TRUST_MAX_EXTRA 16u

// ca_trust_entry is one cached verification. Thread: guarded by its ca_trust's |mu|.
typedef struct ca_trust_entry {
    uint8_t key[32]; // SHA-256 of the leaf DER
    int64_t not_before;
    int64_t not_after;
    uint64_t crl_gen; // the CRL set it was verified against
    bool used;
} ca_trust_entry;

// ca_crl_set is one generation of CRLs. Thread: immutable once built; |refs| is atomic.
typedef struct ca_crl_set {
    STACK_OF(X509_CRL) * crls;
    int64_t next_update; // the earliest nextUpdate of the set (INT64_MAX: none)
    int refs;            // atomic
} ca_crl_set;

// Thread: the store is shared read-only after ca_trust_new; the cache and the CRL set pointer
// are locked by |mu|.
struct ca_trust {
    X509_STORE *store;
    EVP_MD *sha256;
    pthread_mutex_t mu;
    ca_trust_entry *entries; // guarded_by(mu); num_sets * CA_TRUST_WAYS
    uint8_t *next_way;       // guarded_by(mu); per set
    size_t num_sets;
    size_t num_entries; // guarded_by(mu)
    uint64_t hits;      // guarded_by(mu)
    ca_crl_set *crls;   // guarded_by(mu); NULL: none configured
    uint64_t crl_gen;   // guarded_by(mu)
};

static void ca_crl_set_put(ca_crl_set *set)
{
    if (set != NULL && __atomic_sub_fetch(&set->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        sk_X509_CRL_pop_free(set->crls, X509_CRL_free);
        free(set);
    }
}

// ca_trust_crls_get returns a reference to the current CRL set (NULL: none) and its generation.
static ca_crl_set *ca_trust_crls_get(ca_trust *t, uint64_t *out_gen)
{
    (void)pthread_mutex_lock(&t->mu);
    ca_crl_set *set = t->crls;
    if (set != NULL) {
        __atomic_add_fetch(&set->refs, 1, __ATOMIC_RELAXED);
    }
    *out_gen = t->crl_gen;
    (void)pthread_mutex_unlock(&t->mu);
    return set;
}

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
    ca_crl_set_put(t->crls);
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
        if (e->used && e->crl_gen == t->crl_gen && memcmp(e->key, key, 32) == 0 &&
            at >= e->not_before && at <= e->not_after) {
            hit = true;
            t->hits++;
            break;
        }
    }
    (void)pthread_mutex_unlock(&t->mu);
    return hit;
}

static void ca_trust_insert(ca_trust *t, const uint8_t key[32], int64_t nb, int64_t na,
                            uint64_t crl_gen)
{
    const size_t set = ca_trust_set(t, key);
    (void)pthread_mutex_lock(&t->mu);
    if (crl_gen != t->crl_gen) {
        (void)pthread_mutex_unlock(&t->mu);
        return; // verified against CRLs that were replaced meanwhile
    }
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
    slot->crl_gen = crl_gen;
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

// ca_trust_verify_cb lets a certificate whose issuer has no CRL in the set pass the CRL check:
// the set holds the CRLs the operator configured, not one for every CA.
static int ca_trust_verify_cb(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNABLE_TO_GET_CRL) {
        X509_STORE_CTX_set_error(ctx, X509_V_OK);
        return 1;
    }
    return ok;
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
    uint64_t crl_gen = 0;
    ca_crl_set *crls = ca_trust_crls_get(t, &crl_gen);
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
    // The signer signs CMP messages: a keyUsage extension must allow digitalSignature (RFC 5280
    // §4.2.1.3). The CAs of the chain need keyCertSign, which X509_verify_cert checks.
    if ((X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE) == 0) {
        char subject[96] = "";
        const unsigned char *der = NULL;
        size_t der_len = 0;
        if (X509_NAME_get0_der(X509_get_subject_name(x), &der, &der_len) == 1) {
            (void)ca_name_to_text(subject, sizeof(subject), cm_span_make(der, der_len));
        }
        cm_why_set(why,
                   "certificate is not trusted: its keyUsage does not allow digitalSignature "
                   "(%s)",
                   subject[0] != '\0' ? subject : "empty subject");
        res = cm_result_make(CA_E_CHAIN_KEY_USAGE);
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
    if (crls != NULL) {
        X509_STORE_CTX_set0_crls(ctx, crls->crls);
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
        X509_STORE_CTX_set_verify_cb(ctx, ca_trust_verify_cb);
    }
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
        case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
            res = cm_result_make(CA_E_CHAIN_KEY_USAGE);
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
        // Not past the CRLs' nextUpdate: a later verification needs fresh CRLs.
        if (crls != NULL && crls->next_update < hi) {
            hi = crls->next_update;
        }
        if (ok) {
            ca_trust_insert(t, key, lo, hi, crl_gen);
        }
    }
    res = cm_result_make(CM_OK);
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(chain, X509_free);
    X509_free(x);
    ca_crl_set_put(crls);
    return res;
}

// ca_crl_load appends every CRL of |path| (PEM, one or more; or one DER) to |crls|.
static cm_result ca_crl_load(STACK_OF(X509_CRL) * crls, char *err, size_t err_cap, const char *path)
{
    BIO *bio = BIO_new_file(path, "rb");
    if (bio == NULL) {
        ERR_clear_error();
        ca_errf(err, err_cap, "%s: cannot open the CRL file", path);
        CM_BAIL(CA_E_CONFIG);
    }
    size_t n = 0;
    X509_CRL *c;
    while ((c = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_CRL_push(crls, c) <= 0) {
            X509_CRL_free(c);
            BIO_free(bio);
            CM_BAIL(CM_E_NOMEM);
        }
        n++;
    }
    ERR_clear_error();
    if (n == 0 && BIO_reset(bio) == 0 && (c = d2i_X509_CRL_bio(bio, NULL)) != NULL) {
        if (sk_X509_CRL_push(crls, c) <= 0) {
            X509_CRL_free(c);
            BIO_free(bio);
            CM_BAIL(CM_E_NOMEM);
        }
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    if (n == 0) {
        ca_errf(err, err_cap, "%s: no CRL in the file (PEM or DER)", path);
        CM_BAIL(CA_E_CONFIG);
    }
    return cm_result_make(CM_OK);
}

// ca_crl_check_anchor checks |crl| against the anchor that issued it, when one of |t|'s anchors
// has its issuer's name: signed by that anchor's key. (A CRL of an intermediate CA is checked
// when a chain through that CA is verified.)
static cm_result ca_crl_check_anchor(ca_trust *t, X509_CRL *crl, char *err, size_t err_cap,
                                     const char *path)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(t->store);
    const X509_NAME *issuer = X509_CRL_get_issuer(crl);
    bool found = false;
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *a = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (a == NULL || X509_NAME_cmp(X509_get_subject_name(a), issuer) != 0) {
            continue;
        }
        found = true;
        EVP_PKEY *k = X509_get0_pubkey(a);
        if (k != NULL && X509_CRL_verify(crl, k) == 1) {
            ERR_clear_error();
            return cm_result_make(CM_OK);
        }
    }
    ERR_clear_error();
    if (!found) {
        return cm_result_make(CM_OK);
    }
    char name[96] = "";
    const unsigned char *der = NULL;
    size_t der_len = 0;
    if (X509_NAME_get0_der(issuer, &der, &der_len) == 1) {
        (void)ca_name_to_text(name, sizeof(name), cm_span_make(der, der_len));
    }
    ca_errf(err, err_cap, "%s: the CRL of %s is not signed by that trust anchor's key", path, name);
    CM_BAIL(CA_E_CONFIG);
}

cm_result ca_trust_set_crls(ca_trust *t, char *err, size_t err_cap, const char *const *paths,
                            size_t num_paths)
{
    ca_crl_set *set = NULL;
    if (num_paths > 0) {
        set = calloc(1, sizeof(*set));
        CM_ENSURE(set != NULL, CM_E_NOMEM);
        set->refs = 1;
        set->next_update = INT64_MAX;
        set->crls = sk_X509_CRL_new_null();
        cm_result r = cm_result_make(set->crls != NULL ? CM_OK : CM_E_NOMEM);
        for (size_t i = 0; cm_ok(r) && i < num_paths; i++) {
            const int before = sk_X509_CRL_num(set->crls);
            r = ca_crl_load(set->crls, err, err_cap, paths[i]);
            for (int k = before; cm_ok(r) && k < sk_X509_CRL_num(set->crls); k++) {
                X509_CRL *c = sk_X509_CRL_value(set->crls, k);
                r = ca_crl_check_anchor(t, c, err, err_cap, paths[i]);
                const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(c);
                int64_t when = 0;
                if (cm_ok(r) && nu != NULL && ca_asn1_time(nu, &when) && when < set->next_update) {
                    set->next_update = when;
                }
            }
        }
        if (!cm_ok(r)) {
            ca_crl_set_put(set);
            return r;
        }
    }
    (void)pthread_mutex_lock(&t->mu);
    ca_crl_set *old = t->crls;
    t->crls = set;
    t->crl_gen++;
    (void)pthread_mutex_unlock(&t->mu);
    ca_crl_set_put(old);
    return cm_result_make(CM_OK);
}

size_t ca_trust_num_crls(ca_trust *t)
{
    uint64_t gen = 0;
    ca_crl_set *set = ca_trust_crls_get(t, &gen);
    const size_t n = set != NULL ? (size_t)sk_X509_CRL_num(set->crls) : 0;
    ca_crl_set_put(set);
    return n;
}

cm_result ca_trust_check_crls(ca_trust *t, cm_span cert, int64_t at, cm_why *why)
{
    uint64_t gen = 0;
    ca_crl_set *set = ca_trust_crls_get(t, &gen);
    if (set == NULL) {
        return cm_result_make(CM_OK);
    }
    cm_result res = cm_result_make(CM_OK);
    X509 *x = ca_d2i(cert);
    if (x == NULL) {
        cm_why_set(why, "certificate is not trusted: it cannot be parsed");
        res = cm_result_make(CA_E_UNTRUSTED);
        goto out;
    }
    for (int i = 0; i < sk_X509_CRL_num(set->crls); i++) {
        X509_CRL *c = sk_X509_CRL_value(set->crls, i);
        if (X509_NAME_cmp(X509_CRL_get_issuer(c), X509_get_issuer_name(x)) != 0) {
            continue;
        }
        const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(c);
        int64_t when = 0;
        if (nu != NULL && ca_asn1_time(nu, &when) && when < at) {
            cm_why_set(why, "certificate is not trusted: the CRL of its issuer has expired");
            res = cm_result_make(CA_E_UNTRUSTED);
            goto out;
        }
        X509_REVOKED *rev = NULL;
        if (X509_CRL_get0_by_cert(c, &rev, x) == 1) {
            cm_why_set(why, "certificate is revoked: its issuer's CRL lists it");
            res = cm_result_make(CA_E_CERT_REVOKED);
            goto out;
        }
    }
out:
    ERR_clear_error();
    X509_free(x);
    ca_crl_set_put(set);
    return res;
}
