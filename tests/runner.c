// certmint_tests: the one CUnit runner. Every suite registers through test_<name>_register();
// `--suite NAME` runs one suite (what ctest does), no argument runs them all, `--list` names
// them. The exit status is non-zero when any test or any suite set-up/tear-down failed.
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "engine/base/base.h"

#define CM_SUITE(name) int test_##name##_register(void);
#include "cm_suites.h"
#undef CM_SUITE

typedef struct test_suite_entry {
    const char *name;
    int (*reg)(void);
} test_suite_entry;

static const test_suite_entry k_suites[] = {
#define CM_SUITE(name) {#name, test_##name##_register},
#include "cm_suites.h"
#undef CM_SUITE
};

int main(int argc, char **argv)
{
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--suite") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--list") == 0) {
            for (size_t k = 0; k < sizeof(k_suites) / sizeof(k_suites[0]); k++) {
                printf("%s\n", k_suites[k].name);
            }
            return 0;
        } else {
            fprintf(stderr, "usage: %s [--suite NAME] [--list]\n", argv[0]);
            return 2;
        }
    }
    if (!cm_ok(cm_runtime_init())) {
        fprintf(stderr, "cannot initialise OpenSSL\n");
        return 1;
    }
    cm_runtime_set_log_level(CM_LOG_WARN);
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 1;
    }
    bool found = only == NULL;
    for (size_t k = 0; k < sizeof(k_suites) / sizeof(k_suites[0]); k++) {
        if (only != NULL && strcmp(only, k_suites[k].name) != 0) {
            continue;
        }
        found = true;
        if (k_suites[k].reg() != 0) {
            fprintf(stderr, "cannot register suite %s: %s\n", k_suites[k].name, CU_get_error_msg());
            CU_cleanup_registry();
            return 1;
        }
    }
    if (!found) {
        fprintf(stderr, "no suite named '%s' (try --list)\n", only);
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (only != NULL) {
        CU_pSuite s = CU_get_suite(only);
        if (s == NULL) {
            fprintf(stderr, "suite '%s' registered no CUnit suite of that name\n", only);
            CU_cleanup_registry();
            return 1;
        }
        (void)CU_basic_run_suite(s);
    } else {
        (void)CU_basic_run_tests();
    }
    // Summary lines are printed by CU_basic_run_*; suite init/cleanup failures are counted
    // apart from test failures, and both must fail the run.
    const unsigned failures = CU_get_number_of_failures();
    const unsigned suites_failed = CU_get_number_of_suites_failed();
    const unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    printf("\n");
    if (ran == 0) {
        fprintf(stderr, "no test ran\n");
        return 1;
    }
    return (failures + suites_failed) != 0 ? 1 : 0;
}
