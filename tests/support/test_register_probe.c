// test_register_probe: test_register_suite outside a test run. CUnit refuses to add suites
// while a test runs (an assertion), so the support suite runs this program and checks its exit
// status and output.
//
// usage: test_register_probe CASE
//   ok           registers a suite of three tests with every callback and runs it; prints the
//                names in registration order and how often each callback ran
//   no-registry  registers before CUnit's registry exists
//   null-name, null-table, empty, null-fn, null-row-name, dup-test, dup-suite
//                one bad argument each
// Exit status: test_register_suite's return value (0 or 1), 2 on a usage error, 3 when the
// registered suite is not what the table said.
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "tests/support/test_support.h"

static int g_init, g_cleanup, g_setup, g_teardown, g_ran;

static int probe_init(void)
{
    g_init++;
    return 0;
}

static int probe_cleanup(void)
{
    g_cleanup++;
    return 0;
}

static void probe_setup(void)
{
    g_setup++;
}

static void probe_teardown(void)
{
    g_teardown++;
}

static void probe_first(void)
{
    g_ran++;
}

static void probe_second(void)
{
    g_ran++;
}

static void probe_third(void)
{
    g_ran++;
}

static const test_case k_good[] = {
    TEST_CASE(probe_first),
    TEST_CASE(probe_second),
    TEST_CASE(probe_third),
};

// probe_ok registers k_good, checks the registry against the table, runs the suite.
static int probe_ok(void)
{
    int rc = test_register_suite("probe", probe_init, probe_cleanup, probe_setup, probe_teardown,
                                 k_good, TEST_NUM_CASES(k_good));
    if (rc != 0) {
        return rc;
    }
    CU_pSuite s = CU_get_suite("probe");
    if (s == NULL || s->uiNumberOfTests != TEST_NUM_CASES(k_good)) {
        fprintf(stderr, "probe: suite missing or with the wrong number of tests\n");
        return 3;
    }
    size_t i = 0;
    for (CU_pTest t = s->pTest; t != NULL; t = t->pNext, i++) {
        if (i >= TEST_NUM_CASES(k_good) || strcmp(t->pName, k_good[i].name) != 0 ||
            t->pTestFunc != k_good[i].fn) {
            fprintf(stderr, "probe: test %zu is not the table's row\n", i);
            return 3;
        }
        printf("test %s\n", t->pName);
    }
    CU_basic_set_mode(CU_BRM_SILENT);
    (void)CU_basic_run_suite(s);
    printf("ran %d init %d cleanup %d setup %d teardown %d failures %u\n", g_ran, g_init, g_cleanup,
           g_setup, g_teardown, CU_get_number_of_failures());
    return 0;
}

static int probe_bad(const char *which)
{
    const test_case null_fn[] = {{"probe_first", probe_first}, {"probe_none", NULL}};
    const test_case null_row_name[] = {{NULL, probe_first}};
    const test_case dup[] = {TEST_CASE(probe_first), TEST_CASE(probe_first)};
    if (strcmp(which, "null-name") == 0) {
        return test_register_suite(NULL, NULL, NULL, NULL, NULL, k_good, TEST_NUM_CASES(k_good));
    }
    if (strcmp(which, "null-table") == 0) {
        return test_register_suite("probe", NULL, NULL, NULL, NULL, NULL, 3);
    }
    if (strcmp(which, "empty") == 0) {
        return test_register_suite("probe", NULL, NULL, NULL, NULL, k_good, 0);
    }
    if (strcmp(which, "null-fn") == 0) {
        return test_register_suite("probe", NULL, NULL, NULL, NULL, null_fn, 2);
    }
    if (strcmp(which, "null-row-name") == 0) {
        return test_register_suite("probe", NULL, NULL, NULL, NULL, null_row_name, 1);
    }
    if (strcmp(which, "dup-test") == 0) {
        return test_register_suite("probe", NULL, NULL, NULL, NULL, dup, 2);
    }
    if (strcmp(which, "dup-suite") == 0) {
        int first = test_register_suite("probe", NULL, NULL, NULL, NULL, k_good, 1);
        if (first != 0) {
            return 3;
        }
        return test_register_suite("probe", NULL, NULL, NULL, NULL, k_good, 1);
    }
    fprintf(stderr, "usage: test_register_probe CASE (see the source)\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_register_probe CASE\n");
        return 2;
    }
    if (strcmp(argv[1], "no-registry") == 0) {
        return test_register_suite("probe", NULL, NULL, NULL, NULL, k_good, TEST_NUM_CASES(k_good));
    }
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 3;
    }
    int rc = strcmp(argv[1], "ok") == 0 ? probe_ok() : probe_bad(argv[1]);
    CU_cleanup_registry();
    return rc;
}
