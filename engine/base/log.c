// Logging, time and the runtime singleton.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "engine/base/base.h"

// The one process-wide mutable object (STYLE.md §2.13).
static cm_runtime g_cm_runtime = {CM_LOG_INFO, 2, {{0, 0, 0, 0}}};

static const char *const k_level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

cm_result cm_runtime_init(void)
{
    if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1) {
        cm_ossl_clear_errors();
        return cm_result_make(CM_E_CRYPTO);
    }
    return cm_result_make(CM_OK);
}

void cm_runtime_set_log_level(cm_log_level level)
{
    __atomic_store_n(&g_cm_runtime.log_level, (int)level, __ATOMIC_RELAXED);
}

void cm_runtime_set_log_fd(int fd)
{
    __atomic_store_n(&g_cm_runtime.log_fd, fd, __ATOMIC_RELAXED);
}

const char *cm_log_quote(char *out, size_t cap, const char *in)
{
    if (cap == 0) {
        return out;
    }
    size_t used = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
        char esc[5];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p < 0x20 || *p >= 0x7f) {
            (void)snprintf(esc, sizeof(esc), "\\x%02x", *p);
            n = 4;
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (used + n >= cap) {
            break;
        }
        memcpy(out + used, esc, n);
        used += n;
    }
    out[used] = '\0';
    return out;
}

bool cm_log_enabled(cm_log_level level)
{
    return (int)level <= __atomic_load_n(&g_cm_runtime.log_level, __ATOMIC_RELAXED);
}

bool cm_log_level_parse(const char *name, cm_log_level *out_level)
{
    static const char *const k_names[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < sizeof(k_names) / sizeof(k_names[0]); i++) {
        if (strcmp(name, k_names[i]) == 0) {
            *out_level = (cm_log_level)i;
            return true;
        }
    }
    return false;
}

// This thread's line buffer (cm_log_buf_attach), NULL when lines are written at once.
static _Thread_local cm_log_buf *t_cm_log_buf;

// cm_log_write_all writes |n| bytes to the log descriptor, continuing after a short write or
// EINTR; any other error drops the rest (a log is not worth blocking or failing for).
static void cm_log_write_all(const char *p, size_t n)
{
    const int fd = __atomic_load_n(&g_cm_runtime.log_fd, __ATOMIC_RELAXED);
    for (int tries = 0; n > 0 && tries < 8; tries++) {
        const ssize_t w = write(fd, p, n);
        if (w < 0 && errno != EINTR) {
            return;
        }
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        }
    }
}

void cm_log_buf_attach(cm_log_buf *b)
{
    b->len = 0;
    t_cm_log_buf = b;
}

void cm_log_buf_flush(void)
{
    cm_log_buf *b = t_cm_log_buf;
    if (b != NULL && b->len > 0) {
        cm_log_write_all(b->data, b->len);
        b->len = 0;
    }
}

void cm_log_buf_detach(void)
{
    cm_log_buf_flush();
    t_cm_log_buf = NULL;
}

// cm_log_emit hands one finished line to the buffer or to the descriptor.
static void cm_log_emit(cm_log_level level, const char *line, size_t n)
{
    cm_log_buf *b = t_cm_log_buf;
    if (b == NULL || level == CM_LOG_ERROR) {
        cm_log_buf_flush();
        // One write per line; a short write of a single line is not worth a retry loop.
        const int fd = __atomic_load_n(&g_cm_runtime.log_fd, __ATOMIC_RELAXED);
        (void)!write(fd, line, n);
        return;
    }
    if (b->len + n > sizeof(b->data)) {
        cm_log_buf_flush();
    }
    memcpy(b->data + b->len, line, n); // n <= 1024 < sizeof(b->data)
    b->len += n;
}

// cm_log_write formats and writes one line; |suffix| (may be "") follows the message.
__attribute__((format(printf, 3, 0))) static void
cm_log_write(cm_log_level level, const char *suffix, const char *fmt, va_list ap)
{
    char line[1024];
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    int y, mo, d, h, mi, s;
    cm_time_to_civil((int64_t)ts.tv_sec, &y, &mo, &d, &h, &mi, &s);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", y, mo, d, h,
                     mi, s, ts.tv_nsec / 1000000, k_level_names[level]);
    if (n < 0) {
        return;
    }
    size_t used = (size_t)n;
    // Room is kept for the suffix (short: a count and a duration) and the newline.
    const size_t sl = strlen(suffix) < 128 ? strlen(suffix) : 0;
    const size_t room = sizeof(line) - used - sl - 1; // the message's bytes, NUL included
    int m = vsnprintf(line + used, room, fmt, ap);
    if (m < 0) {
        return;
    }
    used += (size_t)m < room ? (size_t)m : room - 1; // truncated: cut the message
    memcpy(line + used, suffix, sl);
    used += sl;
    line[used++] = '\n';
    cm_log_emit(level, line, used);
}

void cm_log(cm_log_level level, const char *fmt, ...)
{
    if (!cm_log_enabled(level)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    cm_log_write(level, "", fmt, ap);
    va_end(ap);
}

// cm_log_key_hash is FNV-1a over |key|, never 0 (0 marks a free gate).
static uint64_t cm_log_key_hash(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 0x100000001b3ull;
    }
    return h != 0 ? h : 1;
}

// cm_log_gate_of returns |key|'s gate, claiming a free one the first time; NULL when the
// table is full.
static cm_log_gate *cm_log_gate_of(const char *key)
{
    const uint64_t h = cm_log_key_hash(key);
    for (size_t i = 0; i < CM_LOG_GATES; i++) {
        cm_log_gate *g = &g_cm_runtime.log_gates[(h + i) % CM_LOG_GATES];
        uint64_t k = __atomic_load_n(&g->key, __ATOMIC_ACQUIRE);
        if (k == 0) {
            // Claim it; if another thread claimed it first, |k| is now its key.
            if (__atomic_compare_exchange_n(&g->key, &k, h, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                return g;
            }
        }
        if (k == h) {
            return g;
        }
    }
    return NULL;
}

// cm_log_count_text writes |n| with thousands separators ("3,210").
static void cm_log_count_text(char *out, size_t cap, uint64_t n)
{
    char digits[24];
    const int len = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0) {
            out[o++] = ',';
        }
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

void cm_log_ratelimited(const char *key, uint32_t interval_ms, cm_log_level level, const char *fmt,
                        ...)
{
    if (!cm_log_enabled(level)) {
        return;
    }
    char suffix[96] = "";
    cm_log_gate *g = cm_log_gate_of(key);
    if (g != NULL) {
        const uint64_t now = cm_time_mono_ns();
        uint64_t next = __atomic_load_n(&g->next_ns, __ATOMIC_ACQUIRE);
        // Exactly one caller wins the turn after |next|; everyone else is counted, so every
        // call is either written or counted in a later line.
        if (now < next ||
            !__atomic_compare_exchange_n(&g->next_ns, &next, now + (uint64_t)interval_ms * 1000000u,
                                         false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            __atomic_add_fetch(&g->suppressed, 1, __ATOMIC_RELAXED);
            return;
        }
        const uint64_t held = __atomic_exchange_n(&g->suppressed, 0, __ATOMIC_ACQ_REL);
        const uint64_t last = __atomic_exchange_n(&g->last_ns, now, __ATOMIC_ACQ_REL);
        if (held > 0) {
            char count[32];
            cm_log_count_text(count, sizeof(count), held);
            if (last == 0) {
                // Callers that raced the very first line.
                (void)snprintf(suffix, sizeof(suffix), " (and %s more)", count);
            } else {
                const double s = (double)(now - last) / 1e9;
                (void)snprintf(suffix, sizeof(suffix), " (and %s more in the last %.*f s)", count,
                               s < 10.0 ? 1 : 0, s);
            }
        }
    }
    va_list ap;
    va_start(ap, fmt);
    cm_log_write(level, suffix, fmt, ap);
    va_end(ap);
}

uint64_t cm_time_mono_ns(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t cm_time_real_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t cm_time_now(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

// Days from 1970-01-01 for a civil date (H. Hinnant's algorithm, public domain description).
static int64_t cm_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t cm_time_from_civil(int year, int month, int day, int hour, int min, int sec)
{
    return cm_days_from_civil(year, month, day) * 86400 + (int64_t)hour * 3600 + (int64_t)min * 60 +
           sec;
}

void cm_time_to_civil(int64_t t, int *out_year, int *out_month, int *out_day, int *out_hour,
                      int *out_min, int *out_sec)
{
    int64_t days = t / 86400;
    int64_t rem = t % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    days += 719468;
    const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const int64_t doe = days - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    const int64_t d = doy - (153 * mp + 2) / 5 + 1;
    const int64_t m = mp < 10 ? mp + 3 : mp - 9;
    *out_year = (int)(yoe + era * 400 + (m <= 2));
    *out_month = (int)m;
    *out_day = (int)d;
    *out_hour = (int)(rem / 3600);
    *out_min = (int)(rem % 3600 / 60);
    *out_sec = (int)(rem % 60);
}
