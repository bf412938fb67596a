// The store suites' registration: test_store.c holds the tests of both backends and registers
// "store" (SQLite) and "store_pg" (PostgreSQL); test_store_pg.c gives the runner its entry
// point for the second.
#ifndef CERTMINT_TESTS_ENGINE_STORE_TEST_STORE_H
#define CERTMINT_TESTS_ENGINE_STORE_TEST_STORE_H

// test_store_register registers the suite "store" (the runner's entry point).
int test_store_register(void);

// test_store_pg_register_suite registers the suite "store_pg": the common tests on a
// PostgreSQL cluster its init starts, and PostgreSQL's own.
int test_store_pg_register_suite(void);

#endif // CERTMINT_TESTS_ENGINE_STORE_TEST_STORE_H
