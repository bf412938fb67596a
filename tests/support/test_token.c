// The throwaway SoftHSM2 token.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/test_support.h"

bool test_token_create(test_token *t, const char *label)
{
    memset(t, 0, sizeof(*t));
    t->module = CM_SOFTHSM2_MODULE;
    (void)snprintf(t->label, sizeof(t->label), "%s", label);
    (void)snprintf(t->so_pin, sizeof(t->so_pin), "so-%08x", (unsigned)rand());
    (void)snprintf(t->user_pin, sizeof(t->user_pin), "user-%08x", (unsigned)rand());
    if (!test_tmpdir(t->dir, sizeof(t->dir), "token")) {
        fprintf(stderr, "test_token: cannot create a temporary directory\n");
        return false;
    }
    char tokens[300];
    test_path(tokens, sizeof(tokens), t->dir, "tokens");
    test_path(t->conf_path, sizeof(t->conf_path), t->dir, "softhsm2.conf");
    char conf[512];
    int n = snprintf(conf, sizeof(conf),
                     "directories.tokendir = %s\nobjectstore.backend = file\n"
                     "log.level = ERROR\nslots.removable = false\n",
                     tokens);
    if (n < 0 || (size_t)n >= sizeof(conf) || !test_write_file(t->conf_path, conf, (size_t)n)) {
        fprintf(stderr, "test_token: cannot write %s\n", t->conf_path);
        return false;
    }
    char mk[320];
    const char *mkargv[] = {"mkdir", "-p", test_path(mk, sizeof(mk), t->dir, "tokens"), NULL};
    if (test_run(mkargv, NULL) != 0) {
        return false;
    }
    const char *old = getenv("SOFTHSM2_CONF");
    if (old != NULL) {
        t->saved_conf = strdup(old);
        t->had_conf = true;
    }
    if (setenv("SOFTHSM2_CONF", t->conf_path, 1) != 0) {
        return false;
    }
    char log[320];
    test_path(log, sizeof(log), t->dir, "init.log");
    const char *argv[] = {"softhsm2-util", "--init-token", "--free", "--label",   t->label,
                          "--so-pin",      t->so_pin,      "--pin",  t->user_pin, NULL};
    int rc = test_run(argv, log);
    if (rc != 0) {
        fprintf(stderr, "test_token: softhsm2-util --init-token exited %d (log in %s)\n", rc, log);
        return false;
    }
    return true;
}

void test_token_destroy(test_token *t)
{
    if (t->dir[0] != '\0') {
        (void)test_rmtree(t->dir);
        t->dir[0] = '\0';
    }
    if (t->had_conf) {
        (void)setenv("SOFTHSM2_CONF", t->saved_conf, 1);
    } else {
        (void)unsetenv("SOFTHSM2_CONF");
    }
    free(t->saved_conf);
    t->saved_conf = NULL;
    t->had_conf = false;
}
