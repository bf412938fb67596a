// libmalloc_count.so: an LD_PRELOAD allocation counter for measuring how many heap calls a
// program makes (issue 13: allocations per enrolment in certmintd). It counts malloc, calloc,
// realloc, posix_memalign, aligned_alloc and free (relaxed atomics, so any thread may call) and
// forwards each to glibc's __libc_* functions, which avoids dlsym (which itself allocates).
//
//   MALLOC_COUNT_OUT=FILE LD_PRELOAD=build/release/bench/libmalloc_count.so certmintd ...
//
// At exit it writes one line "malloc=N calloc=N realloc=N memalign=N free=N" to FILE (appended),
// or to stderr without MALLOC_COUNT_OUT. With MALLOC_COUNT_THREADS=PREFIX (e.g. cm-io) a second
// line counts only the calls made on threads whose name starts with PREFIX (the thread's name
// is read at every call, so threads named after they started are counted right).
// Per-request figures: run the same workload with two request counts and divide the difference
// of the totals by the difference of the counts, which cancels start-up and shutdown.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

// glibc's own entry points (exported by libc.so.6).
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);

enum { BENCH_MALLOC, BENCH_CALLOC, BENCH_REALLOC, BENCH_MEMALIGN, BENCH_FREE, BENCH_KINDS };

static uint64_t bench_all[BENCH_KINDS];    // every thread
static uint64_t bench_thread[BENCH_KINDS]; // threads named MALLOC_COUNT_THREADS*
static char bench_prefix[16];
static size_t bench_prefix_len;

__attribute__((constructor)) static void bench_init(void)
{
    const char *p = getenv("MALLOC_COUNT_THREADS");
    if (p != NULL && p[0] != '\0') {
        bench_prefix_len =
            strlen(p) < sizeof(bench_prefix) - 1 ? strlen(p) : sizeof(bench_prefix) - 1;
        memcpy(bench_prefix, p, bench_prefix_len);
    }
}

static void bench_count(int kind)
{
    __atomic_add_fetch(&bench_all[kind], 1, __ATOMIC_RELAXED);
    if (bench_prefix_len == 0) {
        return;
    }
    char name[17] = {0};
    if (prctl(PR_GET_NAME, name, 0, 0, 0) == 0 &&
        strncmp(name, bench_prefix, bench_prefix_len) == 0) {
        __atomic_add_fetch(&bench_thread[kind], 1, __ATOMIC_RELAXED);
    }
}

__attribute__((visibility("default"))) void *malloc(size_t n)
{
    bench_count(BENCH_MALLOC);
    return __libc_malloc(n);
}

__attribute__((visibility("default"))) void *calloc(size_t n, size_t size)
{
    bench_count(BENCH_CALLOC);
    return __libc_calloc(n, size);
}

__attribute__((visibility("default"))) void *realloc(void *p, size_t n)
{
    bench_count(BENCH_REALLOC);
    return __libc_realloc(p, n);
}

__attribute__((visibility("default"))) int posix_memalign(void **out, size_t align, size_t n)
{
    bench_count(BENCH_MEMALIGN);
    if (align < sizeof(void *) || (align & (align - 1)) != 0) {
        return EINVAL;
    }
    void *p = __libc_memalign(align, n);
    if (p == NULL) {
        return ENOMEM;
    }
    *out = p;
    return 0;
}

__attribute__((visibility("default"))) void *aligned_alloc(size_t align, size_t n)
{
    bench_count(BENCH_MEMALIGN);
    return __libc_memalign(align, n);
}

__attribute__((visibility("default"))) void free(void *p)
{
    if (p != NULL) {
        bench_count(BENCH_FREE);
    }
    __libc_free(p);
}

// bench_line formats one report line of |c| into |line|; returns its length (0 on overflow).
static size_t bench_line(char *line, size_t cap, const char *what, const uint64_t *c)
{
    unsigned long long v[BENCH_KINDS];
    for (int k = 0; k < BENCH_KINDS; k++) {
        v[k] = (unsigned long long)__atomic_load_n(&c[k], __ATOMIC_RELAXED);
    }
    const int n = snprintf(
        line, cap, "%smalloc=%llu calloc=%llu realloc=%llu memalign=%llu free=%llu\n", what,
        v[BENCH_MALLOC], v[BENCH_CALLOC], v[BENCH_REALLOC], v[BENCH_MEMALIGN], v[BENCH_FREE]);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

// bench_report writes the totals with write(2) only: stdio streams may allocate.
__attribute__((destructor)) static void bench_report(void)
{
    char line[512];
    size_t n = bench_line(line, sizeof(line), "", bench_all);
    if (bench_prefix_len != 0 && n != 0) {
        char what[40];
        (void)snprintf(what, sizeof(what), "threads=%s* ", bench_prefix);
        n += bench_line(line + n, sizeof(line) - n, what, bench_thread);
    }
    if (n == 0) {
        return;
    }
    const char *path = getenv("MALLOC_COUNT_OUT");
    int fd = 2;
    if (path != NULL) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            return;
        }
    }
    (void)!write(fd, line, n);
    if (fd != 2) {
        (void)close(fd);
    }
}
