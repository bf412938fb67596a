// The free-space watch of a store's filesystem (store.h, "Free space"). SQLite needs room
// beyond the rows it writes: the WAL grows to about 32 MB between restarts (store_sqlite_ckpt.c)
// and a checkpoint copies those pages into the database file, so a disk that fills up fails a
// commit half-way (SQLITE_FULL) after the certificate was already signed. Refusing new
// enrolments below a margin keeps that from happening while confirmations, revocations and
// CRLs (small updates) still go through.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "engine/store/store.h"

#define STORE_SPACE_WARN_MS 60000u // a WARN a minute while below store_min_free

// store_space_statvfs is the default probe.
static cm_result store_space_statvfs(void *arg, const char *dir, uint64_t *out_free)
{
    (void)arg;
    struct statvfs st;
    if (statvfs(dir, &st) != 0) {
        return cm_result_make(cm_code_from_errno(errno));
    }
    *out_free = (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
    return cm_result_make(CM_OK);
}

cm_result store_space_init(store_space *sp, const char *url, uint64_t min_free)
{
    memset(sp, 0, sizeof(*sp));
    sp->min_free = min_free;
    sp->free_bytes = STORE_SPACE_UNKNOWN;
    static const char k_sqlite[] = "sqlite:";
    if (url == NULL || strncmp(url, k_sqlite, sizeof(k_sqlite) - 1) != 0) {
        return cm_result_make(CM_OK); // no local database file: nothing to watch
    }
    const char *path = url + sizeof(k_sqlite) - 1;
    const char *slash = strrchr(path, '/');
    size_t len;
    if (slash == NULL) {
        path = ".";
        len = 1;
    } else {
        len = slash == path ? 1 : (size_t)(slash - path); // "/x.db" lives in "/"
    }
    CM_ENSURE(len > 0 && len < sizeof(sp->dir), STORE_E_URL);
    memcpy(sp->dir, path, len);
    sp->dir[len] = '\0';
    return cm_result_make(CM_OK);
}

const char *store_space_size_text(char *out, size_t cap, uint64_t bytes)
{
    const uint64_t mib = 1024u * 1024u;
    if (bytes < mib) {
        (void)snprintf(out, cap, "%llu KiB", (unsigned long long)(bytes / 1024u));
    } else if (bytes < 10u * 1024u * mib) {
        (void)snprintf(out, cap, "%llu MiB", (unsigned long long)(bytes / mib));
    } else {
        (void)snprintf(out, cap, "%.1f GiB", (double)bytes / (double)(1024u * mib));
    }
    return out;
}

cm_result store_space_refresh(store_space *sp)
{
    if (sp->dir[0] == '\0') {
        return cm_result_make(CM_OK);
    }
    uint64_t free_bytes = 0;
    const cm_result r =
        (sp->probe != NULL ? sp->probe : store_space_statvfs)(sp->probe_arg, sp->dir, &free_bytes);
    if (!cm_ok(r)) {
        __atomic_add_fetch(&sp->failures, 1, __ATOMIC_RELAXED);
        cm_log_ratelimited("store.space_probe", STORE_SPACE_WARN_MS, CM_LOG_WARN,
                           "store: cannot read the free space of %s: %s", sp->dir,
                           cm_result_text(r));
        return r;
    }
    __atomic_store_n(&sp->free_bytes, free_bytes, __ATOMIC_RELAXED);
    const bool low = sp->min_free > 0 && free_bytes < sp->min_free;
    const bool was = __atomic_exchange_n(&sp->low, low, __ATOMIC_RELAXED);
    char have[32], want[32];
    if (low) {
        (void)store_space_size_text(have, sizeof(have), free_bytes);
        (void)store_space_size_text(want, sizeof(want), sp->min_free);
        if (!was) {
            cm_log(CM_LOG_WARN,
                   "store: only %s free on %s, below store_min_free (%s): new enrolments are "
                   "refused until space is freed",
                   have, sp->dir, want);
        } else {
            cm_log_ratelimited("store.space_low", STORE_SPACE_WARN_MS, CM_LOG_WARN,
                               "store: still only %s free on %s, below store_min_free (%s): new "
                               "enrolments are refused",
                               have, sp->dir, want);
        }
    } else if (was) {
        (void)store_space_size_text(have, sizeof(have), free_bytes);
        cm_log(CM_LOG_INFO, "store: %s free on %s again: enrolments are accepted", have, sp->dir);
    }
    return cm_result_make(CM_OK);
}

cm_result store_space_check(store_space *sp, cm_why *why)
{
    if (sp == NULL || !__atomic_load_n(&sp->low, __ATOMIC_RELAXED)) {
        return cm_result_make(CM_OK);
    }
    __atomic_add_fetch(&sp->refused, 1, __ATOMIC_RELAXED);
    char have[32], want[32];
    cm_why_set(why, "store full: only %s free on %s, below store_min_free (%s)",
               store_space_size_text(have, sizeof(have),
                                     __atomic_load_n(&sp->free_bytes, __ATOMIC_RELAXED)),
               sp->dir, store_space_size_text(want, sizeof(want), sp->min_free));
    return cm_result_make(STORE_E_LOW_SPACE);
}

uint64_t store_space_free(const store_space *sp)
{
    return __atomic_load_n(&sp->free_bytes, __ATOMIC_RELAXED);
}

uint64_t store_space_refused(const store_space *sp)
{
    return __atomic_load_n(&sp->refused, __ATOMIC_RELAXED);
}
