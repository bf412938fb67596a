// The pending-table suites' registration: test_store_pending.c holds the tests of both backends
// and registers "store_pending" (SQLite) and "store_pending_pg" (PostgreSQL);
// test_store_pending_pg.c gives the runner its entry point for the second.
#ifndef CERTMINT_TESTS_ENGINE_STORE_TEST_STORE_PENDING_H
#define CERTMINT_TESTS_ENGINE_STORE_TEST_STORE_PENDING_H

// test_store_pending_register registers the suite "store_pending" (the runner's entry point).
int test_store_pending_register(void);

// test_store_pending_pg_register_suite registers the suite "store_pending_pg": the same tests
// on a PostgreSQL cluster its init starts.
int test_store_pending_pg_register_suite(void);

#endif // CERTMINT_TESTS_ENGINE_STORE_TEST_STORE_PENDING_H
