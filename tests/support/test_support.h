// tests/support: helpers every suite may use — running a program (openssl, softhsm2-util)
// without a shell, temporary directories, file reading, result assertions, and a throwaway
// SoftHSM2 token per suite.
#ifndef CERTMINT_TESTS_SUPPORT_TEST_SUPPORT_H
#define CERTMINT_TESTS_SUPPORT_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <CUnit/CUnit.h>

#include "engine/base/base.h"

// TEST_ASSERT_OK fails the test (fatally) when |expr| is not CM_OK, naming the code.
#define TEST_ASSERT_OK(expr)                                                    \
    do {                                                                        \
        cm_result test_r_ = (expr);                                             \
        if (!cm_ok(test_r_)) {                                                  \
            fprintf(stderr, "\n  %s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, \
                    cm_result_name(test_r_));                                   \
        }                                                                       \
        CU_ASSERT_FATAL(cm_ok(test_r_));                                        \
    } while (0)

// TEST_ASSERT_CODE checks that |expr| fails with exactly |code|.
#define TEST_ASSERT_CODE(expr, want)                                                            \
    do {                                                                                        \
        cm_result test_r_ = (expr);                                                             \
        if (test_r_.code != (uint32_t)(want)) {                                                 \
            fprintf(stderr, "\n  %s:%d: %s -> %s, expected %s\n", __FILE__, __LINE__, #expr,    \
                    cm_result_name(test_r_), cm_result_name(cm_result_make((uint32_t)(want)))); \
        }                                                                                       \
        CU_ASSERT_EQUAL(test_r_.code, (uint32_t)(want));                                        \
    } while (0)

// test_run runs argv[0] (looked up in PATH) with |argv| and waits. stdout and stderr go to
// |log_path| when non-NULL (appended), else to /dev/null. Returns the exit status, or -1 if the
// program could not be started or was killed by a signal.
int test_run(const char *const argv[], const char *log_path);

// test_tmpdir creates a fresh private directory named /tmp/certmint-PREFIX-XXXXXX into |out|.
bool test_tmpdir(char *out, size_t cap, const char *prefix);

// test_rmtree removes |dir| and everything in it; false if something could not be removed.
bool test_rmtree(const char *dir);

// test_read_file reads a whole file into a malloc'ed buffer (free() it).
bool test_read_file(const char *path, uint8_t **out_buf, size_t *out_len);

// test_write_file writes |len| bytes to |path| (created 0600, truncated).
bool test_write_file(const char *path, const void *buf, size_t len);

// test_path joins |dir| and |name| into |out|; aborts the test run on truncation.
const char *test_path(char *out, size_t cap, const char *dir, const char *name);

// test_token is a throwaway SoftHSM2 token: its own directory and softhsm2.conf, SOFTHSM2_CONF
// pointed at it for this process, initialised with an SO PIN and a user PIN.
typedef struct test_token {
    char dir[256];       // /tmp/certmint-token-XXXXXX
    char conf_path[320]; // dir/softhsm2.conf
    char label[33];      // token label
    char so_pin[32];
    char user_pin[32];
    const char *module; // path of the SoftHSM2 PKCS#11 module
    char *saved_conf;   // the SOFTHSM2_CONF value before create (restored by destroy)
    bool had_conf;
} test_token;

// test_token_create makes and initialises a token labelled |label| (softhsm2-util
// --init-token). Returns false, after printing why, on any failure.
bool test_token_create(test_token *t, const char *label);

// test_token_destroy removes the token's directory and restores SOFTHSM2_CONF. Safe on a
// zeroed or failed token.
void test_token_destroy(test_token *t);

#endif // CERTMINT_TESTS_SUPPORT_TEST_SUPPORT_H
