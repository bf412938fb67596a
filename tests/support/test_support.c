// Process, file and directory helpers for tests.
#include "tests/support/test_support.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int test_run(const char *const argv[], const char *log_path)
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) {
        return -1;
    }
    const char *out = log_path != NULL ? log_path : "/dev/null";
    const int flags = O_WRONLY | O_CREAT | (log_path != NULL ? O_APPEND : 0);
    (void)posix_spawn_file_actions_addopen(&fa, 1, out, flags, 0600);
    (void)posix_spawn_file_actions_adddup2(&fa, 1, 2);
    (void)posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    // posix_spawnp takes char *const argv[]; it does not modify the strings.
    char *const *args = (char *const *)(uintptr_t)argv;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool test_tmpdir(char *out, size_t cap, const char *prefix)
{
    int n = snprintf(out, cap, "/tmp/certmint-%s-XXXXXX", prefix);
    if (n < 0 || (size_t)n >= cap) {
        return false;
    }
    return mkdtemp(out) != NULL;
}

static int test_rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 ? 0 : -1;
}

bool test_rmtree(const char *dir)
{
    if (dir == NULL || dir[0] == '\0') {
        return true;
    }
    return nftw(dir, test_rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

bool test_read_file(const char *path, uint8_t **out_buf, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return false;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap * 2 + 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                (void)fclose(f);
                return false;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    const bool ok = ferror(f) == 0;
    (void)fclose(f);
    if (!ok) {
        free(buf);
        return false;
    }
    *out_buf = buf;
    *out_len = len;
    return true;
}

bool test_write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return false;
    }
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            (void)close(fd);
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd) == 0;
}

const char *test_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "test_path: path too long: %s/%s\n", dir, name);
        abort();
    }
    return out;
}

int test_register_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc cleanup,
                        CU_SetUpFunc setup, CU_TearDownFunc teardown, const test_case *tests,
                        size_t num_tests)
{
    if (name == NULL || tests == NULL || num_tests == 0) {
        fprintf(stderr, "test_register_suite: %s: a name and a non-empty table are required\n",
                name != NULL ? name : "(no name)");
        return 1;
    }
    // CUnit 2.1-3 accepts duplicate names, but `--suite NAME` and the reports need them unique.
    if (CU_get_registry() != NULL && CU_get_suite(name) != NULL) {
        fprintf(stderr, "test_register_suite: a suite named %s is already registered\n", name);
        return 1;
    }
    CU_pSuite s = CU_add_suite_with_setup_and_teardown(name, init, cleanup, setup, teardown);
    if (s == NULL) {
        fprintf(stderr, "test_register_suite: %s: %s\n", name, CU_get_error_msg());
        return 1;
    }
    for (size_t i = 0; i < num_tests; i++) {
        if (tests[i].name == NULL || tests[i].fn == NULL) {
            fprintf(stderr, "test_register_suite: %s: row %zu has no name or no function\n", name,
                    i);
            return 1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(tests[j].name, tests[i].name) == 0) {
                fprintf(stderr, "test_register_suite: %s: test %s is in the table twice\n", name,
                        tests[i].name);
                return 1;
            }
        }
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL) {
            fprintf(stderr, "test_register_suite: %s: test %s: %s\n", name, tests[i].name,
                    CU_get_error_msg());
            return 1;
        }
    }
    return 0;
}
