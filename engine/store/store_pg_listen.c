// The PostgreSQL backend's listener: other nodes' (and the admin tool's) changes to what the
// signer-status cache holds. Schema 3's triggers announce every such change on channel
// certmint_status when its transaction commits (store_pg.c: certmint_announce); this thread
// keeps its own connection LISTENing and drops each announced certificate from the cache as the
// notification arrives (a few milliseconds after the other node's commit, before its client
// can have its answer and come here). Announcements of this node's own writer are skipped: the
// writer invalidated those before its jobs completed (store.c). While the listener has no
// connection it cannot hear anything, so it clears the whole cache at every turn (the cache
// then answers nothing from memory), and once more after it is listening again.
//
// Chosen over a bounded cache age: with an age limit, a certificate revoked on one node stays
// usable as a signer on the others for up to that age; with LISTEN/NOTIFY the window is the
// notification's delivery (measured by test_store_pg_status_reaches_other_nodes), and a lost
// listener degrades to no cache rather than to a stale one. store_options.status_cache_max_age_ms
// still bounds entries if set.
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_pg_internal.h"

#define STORE_PG_LISTEN_POLL_MS 500

// store_pg_listen_handle applies one announcement: "SCHEMA CA SERIALHEX".
static void store_pg_listen_handle(store_backend *b, const PGnotify *n)
{
    if (n->be_pid == atomic_load(&b->writer_pid)) {
        return; // this node's writer: invalidated before its jobs completed
    }
    const char *payload = n->extra != NULL ? n->extra : "";
    const char *sp1 = strchr(payload, ' ');
    const char *sp2 = strrchr(payload, ' ');
    if (sp1 == NULL || sp2 == sp1 || (size_t)(sp1 - payload) != strlen(b->schema) ||
        memcmp(payload, b->schema, (size_t)(sp1 - payload)) != 0) {
        return; // another schema's instance, or not ours
    }
    char ca[256];
    const size_t ca_len = (size_t)(sp2 - sp1 - 1);
    const char *hex = sp2 + 1;
    const size_t hex_len = strlen(hex);
    uint8_t serial[20];
    if (ca_len == 0 || ca_len >= sizeof(ca) || hex_len == 0 || hex_len % 2 != 0 ||
        hex_len / 2 > sizeof(serial)) {
        store_cache_invalidate_all(b->cache); // cannot tell which: forget everything
        return;
    }
    memcpy(ca, sp1 + 1, ca_len);
    ca[ca_len] = '\0';
    for (size_t i = 0; i < hex_len / 2; i++) {
        unsigned v = 0;
        for (size_t k = 0; k < 2; k++) {
            const char ch = hex[2 * i + k];
            v = v * 16u + (unsigned)(ch >= 'a'   ? ch - 'a' + 10
                                     : ch >= 'A' ? ch - 'A' + 10
                                                 : ch - '0');
        }
        serial[i] = (uint8_t)v;
    }
    store_cache_invalidate(b->cache, ca, cm_span_make(serial, hex_len / 2));
    atomic_fetch_add(&b->notifications, 1);
}

static void *store_pg_listen_main(void *arg)
{
    store_backend *b = arg;
    store_pg_conn *c = &b->lc;
    (void)pthread_setname_np(pthread_self(), "cm-pg-listen");
    bool listening = false;
    while (!atomic_load(&b->listen_stop)) {
        if (c->pg == NULL) {
            listening = false;
            store_cache_invalidate_all(b->cache);        // deaf: nothing cached may be trusted
            const cm_result cr = store_pg_conn_ready(c); // LISTENs (store_pg_conn.c) once up
            (void)cr;                                    // down: the next turn tries again
        }
        if (c->pg != NULL && !listening) {
            listening = true;
            store_cache_invalidate_all(b->cache); // whatever was announced while deaf
        }
        struct pollfd fds[2] = {{.fd = b->listen_wake, .events = POLLIN},
                                {.fd = c->pg != NULL ? PQsocket(c->pg) : -1, .events = POLLIN}};
        const int timeout = c->pg != NULL ? STORE_PG_LISTEN_POLL_MS : 100;
        const int rc = poll(fds, 2, timeout);
        if (rc < 0 && errno != EINTR) {
            break;
        }
        if (c->pg == NULL || rc <= 0 || (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) == 0) {
            continue;
        }
        if (PQconsumeInput(c->pg) != 1 || PQstatus(c->pg) == CONNECTION_BAD) {
            (void)store_pg_conn_lost(c, PQerrorMessage(c->pg));
            continue;
        }
        for (PGnotify *n = PQnotifies(c->pg); n != NULL; n = PQnotifies(c->pg)) {
            store_pg_listen_handle(b, n);
            PQfreemem(n);
        }
    }
    store_pg_conn_close(c);
    return NULL;
}

cm_result store_pg_attach_cache(store_backend *b, store_cache *cache)
{
    b->cache = cache;
    if (cache == NULL) {
        return cm_result_make(CM_OK); // nothing cached: nothing to hear
    }
    b->lc = (store_pg_conn){.b = b, .role = STORE_PG_LISTENER};
    b->listen_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->listen_wake < 0) {
        cm_log(CM_LOG_ERROR, "store: postgresql: no listener (eventfd: %s)", strerror(errno));
        CM_BAIL(CM_E_NOMEM);
    }
    // The first connection here, so that the listener hears from the start.
    if (!cm_ok(store_pg_conn_open(&b->lc, true))) {
        cm_log(CM_LOG_WARN, "store: postgresql: the listener cannot connect yet; it retries");
    }
    if (pthread_create(&b->listen_thread, NULL, store_pg_listen_main, b) != 0) {
        cm_log(CM_LOG_ERROR, "store: postgresql: cannot start the listener thread");
        store_pg_conn_close(&b->lc);
        (void)close(b->listen_wake);
        b->listen_wake = -1;
        CM_BAIL(CM_E_NOMEM);
    }
    b->listen_on = true;
    return cm_result_make(CM_OK);
}

void store_pg_listen_stop(store_backend *b)
{
    if (!b->listen_on) {
        return;
    }
    atomic_store(&b->listen_stop, true);
    const uint64_t one = 1;
    if (write(b->listen_wake, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
        cm_log(CM_LOG_DEBUG, "store: postgresql: cannot wake the listener; it stops at its poll");
    }
    (void)pthread_join(b->listen_thread, NULL);
    (void)close(b->listen_wake);
    b->listen_wake = -1;
    b->listen_on = false;
}
