// tests/support: a throwaway PostgreSQL cluster for the suites that need one (the store suite's
// PostgreSQL run), through tests/support/pg_cluster.sh: its own folder in /tmp, a Unix socket
// there and a free loopback port, scram-sha-256 with the password in a passfile, stopped and
// removed by test_pg_destroy. No mock: the real server the tests talk to.
#ifndef CERTMINT_TESTS_SUPPORT_TEST_PG_H
#define CERTMINT_TESTS_SUPPORT_TEST_PG_H

#include <stdbool.h>
#include <stddef.h>

// test_pg is one running cluster. Thread: the suite's.
typedef struct test_pg {
    char dir[128]; // /tmp/certmint-pg-XXXXXX: data/, the socket, pgpass, env, postgres.log
    int port;
} test_pg;

// test_pg_start creates the folder, runs initdb and starts the server (a few seconds). False,
// after printing the script's output, on failure (no PostgreSQL installed, no free port).
bool test_pg_start(test_pg *pg);

// test_pg_stop stops the server; |immediate| stops it as a crash would (the next start replays
// the WAL). test_pg_resume starts it again on the same port and socket.
bool test_pg_stop(test_pg *pg, bool immediate);
bool test_pg_resume(test_pg *pg);

// test_pg_destroy stops the server and removes the folder. Safe to call when start failed.
void test_pg_destroy(test_pg *pg);

// test_pg_url writes certmint's store URL for the cluster's database into |out|, with
// search_path |schema| when non-NULL; aborts the run on truncation.
const char *test_pg_url(const test_pg *pg, const char *schema, char *out, size_t cap);

#endif // CERTMINT_TESTS_SUPPORT_TEST_PG_H
