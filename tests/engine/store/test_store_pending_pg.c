// Suite "store_pending_pg": the runner's entry point for the pending-table tests on
// PostgreSQL, which live in test_store_pending.c with the SQLite ones (the same tests, run on
// both backends).
#include "tests/engine/store/test_store_pending.h"

int test_store_pending_pg_register(void);
int test_store_pending_pg_register(void)
{
    return test_store_pending_pg_register_suite();
}
