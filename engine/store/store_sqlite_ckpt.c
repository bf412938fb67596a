// The SQLite backend's background WAL checkpointer, started by store_sq_open and stopped by
// store_sq_close (store_sqlite.c).
//
// WAL checkpoints. SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past
// wal_autocheckpoint pages, on the writer thread: that commit also copies the WAL into the
// database file and syncs it (several ms with a 4 MB WAL), and every request in that batch and
// every job queued behind it waits. Instead the writer's WAL hook only notes the WAL's size, and
// after each batch (its clients already answered) store_sq_after_batch hands checkpoints to a
// checkpointer thread with its own connection, which runs PASSIVE checkpoints (they never block
// the writer) whenever ckpt_pages frames have not been copied yet. A passive checkpoint cannot
// restart the WAL while the writer keeps appending, so once the WAL is STORE_SQ_RESTART_FACTOR
// times that size the writer tops up after a pass: it checkpoints the few frames appended
// during the pass itself (which syncs the database file: ~10 ms on this machine's disk), and its
// next commit starts the WAL from the beginning. Topping up after every pass stalled the writer
// that long about ten times a second under load; now the WAL grows to about 32 MB between
// restarts instead of 4 MB. Without a checkpointer thread (it could not start), SQLite's
// automatic checkpoint stays on.
#include <pthread.h>
#include <stdint.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_sqlite_internal.h"

// The checkpointer repeats a pass (at most STORE_SQ_CKPT_MAX_PASSES) until at most
// STORE_SQ_TOPUP_FRAMES frames are left for the writer's top-up; the writer tops up once the WAL
// holds STORE_SQ_RESTART_FACTOR x ckpt_pages frames.
#define STORE_SQ_CKPT_MAX_PASSES 8
#define STORE_SQ_TOPUP_FRAMES    64
#define STORE_SQ_RESTART_FACTOR  8

// store_sq_checkpointer_main is the checkpointer thread: PASSIVE checkpoints per request.
static void *store_sq_checkpointer_main(void *arg)
{
    store_backend *b = arg;
    store_sq_ckpt *c = &b->ckpt;
    (void)pthread_setname_np(pthread_self(), "cm-checkpoint");
    (void)pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->state != STORE_SQ_CKPT_REQUESTED && !c->stop) {
            (void)pthread_cond_wait(&c->cv, &c->mu);
        }
        if (c->stop) {
            break;
        }
        c->state = STORE_SQ_CKPT_RUNNING;
        (void)pthread_mutex_unlock(&c->mu);
        // Passes until what is left for the writer's top-up is small: while one pass copies,
        // the writer appends, and the top-up copies (and syncs) that on the writer's thread.
        int log_frames = 0;
        int done_frames = 0;
        int rc = SQLITE_OK;
        for (int pass = 0; pass < STORE_SQ_CKPT_MAX_PASSES; pass++) {
            const int before = done_frames;
            rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &done_frames);
            if (rc != SQLITE_OK || log_frames - done_frames <= STORE_SQ_TOPUP_FRAMES ||
                (pass > 0 && done_frames <= before)) {
                break; // failed, small enough, or a reader holds the rest
            }
        }
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
            cm_log_ratelimited("store.checkpoint", 10000, CM_LOG_WARN,
                               "store: sqlite:%s: background checkpoint: %s", b->path,
                               sqlite3_errmsg(c->db));
        } else {
            cm_log(CM_LOG_DEBUG, "store: checkpoint copied %d of %d WAL frames", done_frames,
                   log_frames);
        }
        (void)pthread_mutex_lock(&c->mu);
        c->passes++;
        c->copied = rc == SQLITE_OK ? done_frames : c->copied;
        c->state = STORE_SQ_CKPT_PASSED;
    }
    (void)pthread_mutex_unlock(&c->mu);
    return NULL;
}

// store_sq_wal_hook records the WAL's size after each commit (writer thread, inside COMMIT).
static int store_sq_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    store_backend *b = arg;
    b->wal_pages = pages;
    (void)pthread_mutex_lock(&b->ckpt.mu);
    b->ckpt.wal_pages = (uint64_t)pages;
    (void)pthread_mutex_unlock(&b->ckpt.mu);
    return SQLITE_OK;
}

void store_sq_after_batch(store_backend *b)
{
    if (!b->ckpt_on) {
        return;
    }
    store_sq_ckpt *c = &b->ckpt;
    const int pages = b->wal_pages;
    bool topup = false;
    (void)pthread_mutex_lock(&c->mu);
    if (pages < c->copied) {
        c->copied = 0; // the WAL restarted since the last pass
    }
    const store_sq_ckpt_state state = c->state;
    if (state == STORE_SQ_CKPT_IDLE || state == STORE_SQ_CKPT_PASSED) {
        if (state == STORE_SQ_CKPT_PASSED &&
            (int64_t)pages >= (int64_t)b->ckpt_pages * STORE_SQ_RESTART_FACTOR) {
            topup = true;
            c->state = STORE_SQ_CKPT_IDLE;
            c->topups++;
        } else if (pages - c->copied >= (int)b->ckpt_pages) {
            c->state = STORE_SQ_CKPT_REQUESTED;
            (void)pthread_cond_signal(&c->cv);
        } else {
            c->state = STORE_SQ_CKPT_IDLE;
        }
    }
    (void)pthread_mutex_unlock(&c->mu);
    if (topup) {
        // The checkpointer is idle, so this cannot be busy with it; a reader still on an old
        // snapshot only shortens what it copies.
        (void)sqlite3_wal_checkpoint_v2(b->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
}

void store_sq_stats(store_backend *b, store_stats *out)
{
    if (!b->ckpt_on) {
        return;
    }
    (void)pthread_mutex_lock(&b->ckpt.mu);
    out->checkpoints = b->ckpt.passes;
    out->checkpoint_topups = b->ckpt.topups;
    out->wal_pages = b->ckpt.wal_pages;
    (void)pthread_mutex_unlock(&b->ckpt.mu);
}

void store_sq_ckpt_start(store_backend *b, const store_options *opts)
{
    store_sq_ckpt *c = &b->ckpt;
    c->state = STORE_SQ_CKPT_IDLE;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        return;
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&c->mu);
        return;
    }
    cm_result r = store_sq_connect(&c->db, b->path, SQLITE_OPEN_READWRITE, b->busy_timeout_ms);
    if (cm_ok(r)) {
        // A checkpoint syncs as its connection's synchronous setting says.
        r = store_sq_exec(c->db, opts->sync == STORE_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                                 : "PRAGMA synchronous = FULL");
    }
    if (cm_ok(r) && pthread_create(&c->thread, NULL, store_sq_checkpointer_main, b) == 0) {
        b->ckpt_on = true;
        (void)sqlite3_wal_hook(b->db, store_sq_wal_hook, b); // replaces the automatic checkpoint
        return;
    }
    cm_log(CM_LOG_WARN, "store: sqlite:%s: no background checkpointer; checkpoints run in commits",
           b->path);
    (void)sqlite3_close(c->db);
    c->db = NULL;
    (void)pthread_cond_destroy(&c->cv);
    (void)pthread_mutex_destroy(&c->mu);
}

void store_sq_ckpt_stop(store_backend *b)
{
    if (!b->ckpt_on) {
        return;
    }
    store_sq_ckpt *c = &b->ckpt;
    (void)pthread_mutex_lock(&c->mu);
    c->stop = true;
    (void)pthread_cond_signal(&c->cv);
    (void)pthread_mutex_unlock(&c->mu);
    (void)pthread_join(c->thread, NULL);
    (void)sqlite3_close(c->db);
    (void)pthread_cond_destroy(&c->cv);
    (void)pthread_mutex_destroy(&c->mu);
    b->ckpt_on = false;
}
