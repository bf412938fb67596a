// libmalloc_count.so: an LD_PRELOAD allocation counter for measuring how many heap calls a
// program makes (issue 13: allocations per enrolment in certmintd). It counts malloc, calloc,
// realloc, posix_memalign, aligned_alloc and free (relaxed atomics, so any thread may call) and
// forwards each to glibc's __libc_* functions, which avoids dlsym (which itself allocates).
//
//   MALLOC_COUNT_OUT=FILE LD_PRELOAD=build/release/bench/libmalloc_count.so certmintd ...
//
// At exit it writes one line "malloc=N calloc=N realloc=N memalign=N free=N" to FILE (appended),
// or to stderr without MALLOC_COUNT_OUT. Per-request figures: run the same workload with two
// request counts and divide the difference of the totals by the difference of the counts, which
// cancels start-up and shutdown.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// glibc's own entry points (exported by libc.so.6).
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);

static uint64_t bench_n_malloc, bench_n_calloc, bench_n_realloc, bench_n_memalign, bench_n_free;

static void bench_count(uint64_t *c)
{
    __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

__attribute__((visibility("default"))) void *malloc(size_t n)
{
    bench_count(&bench_n_malloc);
    return __libc_malloc(n);
}

__attribute__((visibility("default"))) void *calloc(size_t n, size_t size)
{
    bench_count(&bench_n_calloc);
    return __libc_calloc(n, size);
}

__attribute__((visibility("default"))) void *realloc(void *p, size_t n)
{
    bench_count(&bench_n_realloc);
    return __libc_realloc(p, n);
}

__attribute__((visibility("default"))) int posix_memalign(void **out, size_t align, size_t n)
{
    bench_count(&bench_n_memalign);
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
    bench_count(&bench_n_memalign);
    return __libc_memalign(align, n);
}

__attribute__((visibility("default"))) void free(void *p)
{
    if (p != NULL) {
        bench_count(&bench_n_free);
    }
    __libc_free(p);
}

// bench_report writes the totals with write(2) only: stdio may allocate.
__attribute__((destructor)) static void bench_report(void)
{
    char line[256];
    const int n = snprintf(line, sizeof(line),
                           "malloc=%llu calloc=%llu realloc=%llu memalign=%llu free=%llu\n",
                           (unsigned long long)__atomic_load_n(&bench_n_malloc, __ATOMIC_RELAXED),
                           (unsigned long long)__atomic_load_n(&bench_n_calloc, __ATOMIC_RELAXED),
                           (unsigned long long)__atomic_load_n(&bench_n_realloc, __ATOMIC_RELAXED),
                           (unsigned long long)__atomic_load_n(&bench_n_memalign, __ATOMIC_RELAXED),
                           (unsigned long long)__atomic_load_n(&bench_n_free, __ATOMIC_RELAXED));
    if (n <= 0 || (size_t)n >= sizeof(line)) {
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
    (void)!write(fd, line, (size_t)n);
    if (fd != 2) {
        (void)close(fd);
    }
}
