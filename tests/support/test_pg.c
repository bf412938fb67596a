// The throwaway PostgreSQL cluster of tests/support/test_pg.h, driven through pg_cluster.sh.
#include "tests/support/test_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/test_support.h"

#define TEST_PG_SCRIPT CM_SOURCE_DIR "/tests/support/pg_cluster.sh"

// test_pg_script runs pg_cluster.sh CMD DIR [ARG], its output into DIR/script.log, printed on
// failure.
static bool test_pg_script(test_pg *pg, const char *cmd, const char *arg)
{
    char log[192];
    (void)snprintf(log, sizeof(log), "%s.log", pg->dir);
    const char *argv[] = {TEST_PG_SCRIPT, cmd, pg->dir, arg, NULL};
    const int rc = test_run(argv, log);
    if (rc != 0) {
        fprintf(stderr, "\n  pg_cluster.sh %s %s failed (%d):\n", cmd, pg->dir, rc);
        FILE *f = fopen(log, "re");
        if (f != NULL) {
            char line[512];
            while (fgets(line, sizeof(line), f) != NULL) {
                fprintf(stderr, "    %s", line);
            }
            (void)fclose(f);
        }
    }
    (void)remove(log);
    return rc == 0;
}

bool test_pg_start(test_pg *pg)
{
    memset(pg, 0, sizeof(*pg));
    if (!test_tmpdir(pg->dir, sizeof(pg->dir), "pg")) {
        return false;
    }
    if (!test_pg_script(pg, "start", NULL)) {
        return false;
    }
    char path[192];
    FILE *f = fopen(test_path(path, sizeof(path), pg->dir, "port"), "re");
    if (f == NULL) {
        return false;
    }
    const bool ok = fscanf(f, "%d", &pg->port) == 1 && pg->port > 0;
    (void)fclose(f);
    return ok;
}

bool test_pg_stop(test_pg *pg, bool immediate)
{
    return test_pg_script(pg, "stop", immediate ? "--immediate" : NULL);
}

bool test_pg_resume(test_pg *pg)
{
    return test_pg_script(pg, "start", NULL);
}

void test_pg_destroy(test_pg *pg)
{
    if (pg->dir[0] != '\0') {
        (void)test_pg_script(pg, "destroy", NULL);
        (void)test_rmtree(pg->dir);
        pg->dir[0] = '\0';
    }
}

const char *test_pg_url(const test_pg *pg, const char *schema, char *out, size_t cap)
{
    int n = schema != NULL
                ? snprintf(out, cap,
                           "postgresql://certmint@/certmint?host=%s&port=%d&passfile=%s/pgpass"
                           "&options=-csearch_path%%3D%s",
                           pg->dir, pg->port, pg->dir, schema)
                : snprintf(out, cap,
                           "postgresql://certmint@/certmint?host=%s&port=%d&passfile=%s/pgpass",
                           pg->dir, pg->port, pg->dir);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "test_pg_url: URL too long\n");
        abort();
    }
    return out;
}
