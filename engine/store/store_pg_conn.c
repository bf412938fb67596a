// The PostgreSQL backend's connections: connecting with certmint's defaults, preparing each
// role's statements, losing a connection (logged once), reconnecting with backoff, and mapping
// libpq and SQLSTATE failures to store codes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/store/store.h"
#include "engine/store/store_internal.h"
#include "engine/store/store_pg_internal.h"

#define STORE_PG_BACKOFF_MIN_NS (100u * 1000000ull)  // 100 ms
#define STORE_PG_BACKOFF_MAX_NS (1000u * 1000000ull) // 1 s: back within a second of the server

static const char *const k_store_pg_role_name[] = {"writer", "reader", "leader", "listener"};

// Notices (e.g. "relation already exists, skipping") go to the debug log, not to stderr.
static void store_pg_notice(void *arg, const char *message)
{
    (void)arg;
    cm_log(CM_LOG_DEBUG, "store: postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

// store_pg_oid maps a parameter type letter to the type's OID (pg_type.h: text 25, bytea 17,
// int8 20; their arrays text[] 1009, bytea[] 1001, int8[] 1016).
static Oid store_pg_oid(char t)
{
    switch (t) {
    case 't':
        return 25;
    case 'b':
        return 17;
    case 'T':
        return 1009;
    case 'B':
        return 1001;
    case 'I':
        return 1016;
    default:
        return 20;
    }
}

static cm_result store_pg_prepare_all(store_pg_conn *c, const store_pg_sql *sql, size_t n,
                                      char prefix)
{
    for (size_t i = 0; i < n; i++) {
        Oid types[STORE_PG_MAX_PARAMS];
        const size_t num = strlen(sql[i].types);
        CM_CHECK(num <= STORE_PG_MAX_PARAMS);
        for (size_t k = 0; k < num; k++) {
            types[k] = store_pg_oid(sql[i].types[k]);
        }
        char name[32];
        (void)snprintf(name, sizeof(name), "cm_%c%zu", prefix, i);
        PGresult *res = PQprepare(c->pg, name, sql[i].sql, (int)num, types);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            cm_log(CM_LOG_ERROR, "store: cannot prepare \"%s\"", sql[i].sql);
            cm_result r = store_pg_fail(c, res, "prepare");
            PQclear(res);
            return r;
        }
        PQclear(res);
    }
    return cm_result_make(CM_OK);
}

// store_pg_session sets up a new connection for its role.
static cm_result store_pg_session(store_pg_conn *c)
{
    char sql[160];
    switch (c->role) {
    case STORE_PG_WRITER:
        // lock_timeout mirrors SQLite's busy timeout: a batch waiting longer for a row or table
        // lock held by another session fails with STORE_E_BUSY. Custom plans: a generic plan
        // made while a table was small (an UPDATE ... FROM unnest(...) joined by a sequential
        // scan) stayed cached as the table grew; the writer's few statements per batch are
        // planned each time instead (measured: PostgreSQL's CPU per enrolment 1507 -> 343 us).
        (void)snprintf(sql, sizeof(sql),
                       "SET synchronous_commit = on; SET plan_cache_mode = force_custom_plan; "
                       "SET lock_timeout = %d; "
                       "SET idle_in_transaction_session_timeout = 0",
                       c->b->lock_timeout_ms);
        break;
    case STORE_PG_READER:
        (void)snprintf(sql, sizeof(sql), "SET default_transaction_read_only = on");
        break;
    case STORE_PG_LISTENER:
        (void)snprintf(sql, sizeof(sql), "LISTEN certmint_status");
        break;
    default:
        return cm_result_make(CM_OK);
    }
    return store_pg_exec(c, sql, PGRES_COMMAND_OK, NULL);
}

cm_result store_pg_conn_open(store_pg_conn *c, bool prepare)
{
    store_pg_conn_close(c);
    char app[32];
    (void)snprintf(app, sizeof(app), "certmint-%s", k_store_pg_role_name[c->role]);
    // Later entries override earlier ones, and the conninfo (expanded from "dbname") comes last:
    // these are defaults the operator's URL may change. The keepalives and tcp_user_timeout
    // bound how long a dead peer can hold a blocking call on TCP (ignored on Unix sockets).
    const char *const keys[] = {"connect_timeout",  "keepalives",
                                "keepalives_idle",  "keepalives_interval",
                                "keepalives_count", "tcp_user_timeout",
                                "client_encoding",  "fallback_application_name",
                                "dbname",           NULL};
    const char *const values[] = {"5", "1", "5", "2", "3", "10000", "UTF8", app, c->b->conninfo,
                                  NULL};
    c->pg = PQconnectdbParams(keys, values, 1);
    if (c->pg == NULL) {
        CM_BAIL(CM_E_NOMEM);
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        const bool needs_password = PQconnectionNeedsPassword(c->pg) != 0;
        if (!c->down_logged) {
            cm_log(CM_LOG_ERROR, "store: postgresql (%s): cannot connect: %.*s%s",
                   k_store_pg_role_name[c->role], (int)strcspn(PQerrorMessage(c->pg), "\n"),
                   PQerrorMessage(c->pg),
                   needs_password ? " (put the password in a passfile: the passfile keyword of "
                                    "the URL or PGPASSFILE)"
                                  : "");
            c->down_logged = true;
        }
        PQfinish(c->pg);
        c->pg = NULL;
        CM_BAIL(needs_password ? STORE_E_DB : STORE_E_UNAVAILABLE);
    }
    (void)PQsetNoticeProcessor(c->pg, store_pg_notice, NULL);
    if (PQserverVersion(c->pg) < 100000) {
        cm_log(CM_LOG_ERROR, "store: postgresql server %d is too old: certmint needs 10 or later",
               PQserverVersion(c->pg));
        store_pg_conn_close(c);
        CM_BAIL(STORE_E_DB);
    }
    c->was_up = true;
    if (c->role == STORE_PG_WRITER) {
        atomic_store(&c->b->writer_pid, PQbackendPID(c->pg));
    }
    cm_result r = store_pg_session(c);
    if (cm_ok(r) && prepare) {
        if (c->role == STORE_PG_WRITER) {
            r = store_pg_prepare_all(c, store_pg_write_sql, PGW_COUNT, 'w');
        } else if (c->role == STORE_PG_READER) {
            r = store_pg_prepare_all(c, store_pg_read_sql, PGR_COUNT, 'r');
        }
    }
    if (!cm_ok(r)) {
        store_pg_conn_close(c);
        return r;
    }
    return cm_result_make(CM_OK);
}

void store_pg_conn_close(store_pg_conn *c)
{
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
}

cm_result store_pg_conn_lost(store_pg_conn *c, const char *why)
{
    if (!c->down_logged) {
        cm_log(CM_LOG_ERROR, "store: postgresql (%s): connection lost: %.*s; reconnecting",
               k_store_pg_role_name[c->role], (int)strcspn(why, "\n"), why);
        c->down_logged = true;
    }
    store_pg_conn_close(c);
    // Any connection's loss marks the store down (a load balancer stops sending at once); only
    // the writer's next successful round trip marks it up again.
    if (c->role != STORE_PG_LEADER) {
        atomic_store(&c->b->healthy, false);
    }
    // The first attempt after a loss may come at once (a restarted server, a killed session).
    if (c->backoff_ns == 0) {
        c->next_try_ns = 0;
    }
    return cm_bail_note(STORE_E_UNAVAILABLE, __FILE__, __LINE__);
}

cm_result store_pg_conn_ready(store_pg_conn *c)
{
    if (c->pg != NULL) {
        return cm_result_make(CM_OK);
    }
    const uint64_t now = cm_time_mono_ns();
    CM_ENSURE(now >= c->next_try_ns, STORE_E_UNAVAILABLE);
    const bool reconnect = c->was_up;
    cm_result r = store_pg_conn_open(c, true);
    if (!cm_ok(r)) {
        c->backoff_ns = c->backoff_ns == 0 ? STORE_PG_BACKOFF_MIN_NS : c->backoff_ns * 2;
        if (c->backoff_ns > STORE_PG_BACKOFF_MAX_NS) {
            c->backoff_ns = STORE_PG_BACKOFF_MAX_NS;
        }
        c->next_try_ns = cm_time_mono_ns() + c->backoff_ns;
        return r;
    }
    c->backoff_ns = 0;
    c->next_try_ns = 0;
    if (reconnect) {
        atomic_fetch_add(&c->b->reconnects, 1);
    }
    if (c->down_logged) {
        cm_log(CM_LOG_INFO, "store: postgresql (%s): reconnected", k_store_pg_role_name[c->role]);
        c->down_logged = false;
    }
    return cm_result_make(CM_OK);
}

uint32_t store_pg_code(PGconn *pg, const PGresult *res, bool *out_job)
{
    *out_job = false;
    if (pg == NULL || PQstatus(pg) == CONNECTION_BAD || res == NULL) {
        return STORE_E_UNAVAILABLE;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state == NULL) {
        // Made by libpq, not the server: a failed send or read ("server closed the connection
        // unexpectedly" can come before libpq marks the connection bad). Reconnect.
        return STORE_E_UNAVAILABLE;
    }
    if (strlen(state) != 5) {
        return STORE_E_DB;
    }
    // SQLSTATE classes, PostgreSQL Appendix A.
    if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
        strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0 || strcmp(state, "53300") == 0) {
        return STORE_E_UNAVAILABLE; // connection, shutdown, starting up, too many connections
    }
    if (strcmp(state, "55P03") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        return STORE_E_BUSY; // lock_timeout, serialization failure, deadlock
    }
    if (strcmp(state, "53100") == 0) {
        return STORE_E_FULL;
    }
    if (strncmp(state, "XX", 2) == 0) {
        return strcmp(state, "XX000") == 0 ? STORE_E_DB : STORE_E_CORRUPT;
    }
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0) {
        *out_job = true;
        if (strcmp(state, "23505") == 0) {
            return STORE_E_DUPLICATE_SERIAL; // the caller maps it per op
        }
        if (strcmp(state, "23503") == 0) {
            return STORE_E_NOT_FOUND;
        }
        return STORE_E_INVALID;
    }
    return STORE_E_DB;
}

cm_result store_pg_fail(store_pg_conn *c, const PGresult *res, const char *what)
{
    bool job = false;
    const uint32_t code = store_pg_code(c->pg, res, &job);
    const char *msg = res != NULL ? PQresultErrorMessage(res) : "";
    if (msg[0] == '\0' && c->pg != NULL) {
        msg = PQerrorMessage(c->pg);
    }
    if (code == STORE_E_UNAVAILABLE) {
        char why[256];
        (void)snprintf(why, sizeof(why), "%s: %s", what, msg[0] != '\0' ? msg : "no result");
        return store_pg_conn_lost(c, why);
    }
    if (!job) {
        cm_log(CM_LOG_ERROR, "store: postgresql %s: %.*s", what, (int)strcspn(msg, "\n"), msg);
    }
    return cm_bail_note(code, __FILE__, __LINE__);
}

cm_result store_pg_exec(store_pg_conn *c, const char *sql, ExecStatusType want, PGresult **out_res)
{
    if (out_res != NULL) {
        *out_res = NULL;
    }
    CM_ENSURE(c->pg != NULL, STORE_E_UNAVAILABLE);
    PGresult *res = PQexec(c->pg, sql);
    if (PQresultStatus(res) != want) {
        cm_result r = store_pg_fail(c, res, sql);
        PQclear(res);
        return r;
    }
    if (out_res != NULL) {
        *out_res = res;
    } else {
        PQclear(res);
    }
    return cm_result_make(CM_OK);
}
