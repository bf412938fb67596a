// Replay driver (the p11-kit idea): feeds every file named on the command line, or found in a
// directory named there, to LLVMFuzzerTestOneInput once. Built without libFuzzer so that gcc
// builds run the corpora as ordinary ctest tests. Fails if no input was found.
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/support/test_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path, unsigned *count)
{
    uint8_t *buf;
    size_t len;
    if (!test_read_file(path, &buf, &len)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return 1;
    }
    (void)LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    (*count)++;
    return 0;
}

static int replay_path(const char *path, unsigned *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: no such file or directory: %s\n", path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        return replay_file(path, count);
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        return 1;
    }
    int rc = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char full[4096];
        int n = snprintf(full, sizeof(full), "%s/%s", path, e->d_name);
        if (n < 0 || (size_t)n >= sizeof(full)) {
            rc = 1;
            continue;
        }
        struct stat fst;
        if (stat(full, &fst) == 0 && S_ISREG(fst.st_mode)) {
            rc |= replay_file(full, count);
        }
    }
    (void)closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        rc |= replay_path(argv[i], &count);
    }
    printf("replay: %u inputs, %s\n", count, rc == 0 && count > 0 ? "ok" : "FAILED");
    return rc == 0 && count > 0 ? 0 : 1;
}
