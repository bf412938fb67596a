// Suite "store_pg": the runner's entry point for the store tests on PostgreSQL, which live in
// test_store.c with the SQLite ones (the same tests, run on both backends).
#include "tests/engine/store/test_store.h"

int test_store_pg_register(void);
int test_store_pg_register(void)
{
    return test_store_pg_register_suite();
}
