// Files and random text for the admin tool.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "tools/certmint/tool.h"

bool tool_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "certmint: cannot create %s: %s\n", path, strerror(errno));
        return false;
    }
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "certmint: cannot write %s: %s\n", path, strerror(errno));
            (void)close(fd);
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd) == 0;
}

bool tool_write_replace(const char *cmd, const char *path, const void *data, size_t len,
                        mode_t mode)
{
    char tmp[PATH_MAX + 16];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        fprintf(stderr, "%s: path too long: %s\n", cmd, path);
        return false;
    }
    (void)unlink(tmp);
    if (!tool_write_file(tmp, data, len, mode)) {
        return false;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "%s: cannot write %s: %s\n", cmd, path, strerror(errno));
        (void)unlink(tmp);
        return false;
    }
    return true;
}

bool tool_read_all(const char *path, uint8_t **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    bool ok = f != NULL;
    while (ok) {
        if (cap - len < 4096) {
            cap = cap * 2 + 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                ok = false;
                break;
            }
            buf = nb;
        }
        const size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            ok = ferror(f) == 0;
            break;
        }
    }
    if (f != NULL) {
        (void)fclose(f);
    }
    if (!ok) {
        fprintf(stderr, "certmint: cannot read %s\n", path);
        free(buf);
        return false;
    }
    *out = buf;
    *out_len = len;
    return true;
}

const char *tool_path(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

bool tool_random_text(char *out, size_t n)
{
    static const char k_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t i = 0;
    while (i < n) {
        uint8_t b[32];
        if (RAND_bytes(b, sizeof(b)) != 1) {
            return false;
        }
        for (size_t k = 0; k < sizeof(b) && i < n; k++) {
            if (b[k] < 248) {
                out[i++] = k_alpha[b[k] % 62];
            }
        }
    }
    out[n] = '\0';
    return true;
}
