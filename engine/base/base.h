// engine/base: what every certmint module shares — the must-use result type and its
// error classes, the six error-propagation macros, the borrowed byte span, the
// per-request arena, logging, time and the runtime singleton.
//
// Keep this module small: a thing moves here only when a second module needs it.
#ifndef CERTMINT_ENGINE_BASE_BASE_H
#define CERTMINT_ENGINE_BASE_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// Results

#define CM_MUST_USE __attribute__((warn_unused_result))

// cm_result is the one fallible return type. |code| 0 is success. The top byte of a non-zero
// code is its class (CM_CLASS_*), the low 24 bits the detail: one of the CM_E_* values below
// for USAGE/PROTO/POLICY/RESOURCE/AGAIN/CRYPTO, a CK_RV for HSM, an errno value for IO.
// Thread: value type.
typedef struct cm_result {
    uint32_t code;
} cm_result;

#define CM_RESULT CM_MUST_USE cm_result

enum {
    CM_CLASS_OK = 0,
    CM_CLASS_USAGE = 1,    // our bug: a caller broke an API contract
    CM_CLASS_PROTO = 2,    // the peer sent bad DER, HTTP or CMP
    CM_CLASS_POLICY = 3,   // well formed but refused
    CM_CLASS_RESOURCE = 4, // limits, out of memory, buffer too small
    CM_CLASS_AGAIN = 5,    // retry later (backpressure)
    CM_CLASS_CRYPTO = 6,   // an OpenSSL call failed
    CM_CLASS_HSM = 7,      // a PKCS#11 call failed; CK_RV in the low 24 bits
    CM_CLASS_IO = 8,       // a system call failed; errno in the low 24 bits
};

#define CM_CODE(cls, detail) ((((uint32_t)(cls)) << 24) | ((uint32_t)(detail)&0xffffffu))
#define CM_CODE_CLASS(code)  ((uint32_t)(code) >> 24)
#define CM_CODE_DETAIL(code) ((uint32_t)(code)&0xffffffu)

// The named codes. Every module's codes are rows of one registry, engine/base/codes.def (module,
// symbol, class, detail, PKIFailureInfo bit, explanation); each module header declares its own
// constants from it (CM_CODE_ENUM below) and engine/base/result.c builds the name table from
// it, so a code has one name, one explanation and one failure bit everywhere. Detail ranges
// keep modules from colliding:
//   base/der 0x000-0x0ff  crmf 0x100-0x1ff  cmp 0x200-0x2ff  http 0x300-0x3ff
//   hsm 0x400-0x4ff       store 0x500-0x5ff cfg 0x600-0x6ff  ca 0x700-0x7ff
//   srv 0x800-0x8ff       net 0x900-0x9ff   tools/bench 0xa00-0xaff
// (HSM-class codes carry a CK_RV and IO-class codes an errno instead.) Numbers are stable:
// append, never renumber.

// CM_CODE_ENUM is what a module header defines CM_CODES_<MODULE> as before it includes
// codes.def inside an enum: one "SYMBOL = value," per row of that module.
#define CM_CODE_ENUM(sym, cls, detail) sym = CM_CODE(CM_CLASS_##cls, detail),

// The codes of base and der.
enum {
    CM_OK = 0,
#define CM_CODES_BASE CM_CODE_ENUM
#include "engine/base/codes.def"
};

// PKIFailureInfo bit numbers (RFC 9810 §5.2.3). They live here because the registry names
// one for every code; engine/cmp's CMP_FAIL_* are the same numbers.
typedef enum cm_failinfo {
    CM_FAIL_BAD_ALG = 0,
    CM_FAIL_BAD_MESSAGE_CHECK = 1,
    CM_FAIL_BAD_REQUEST = 2,
    CM_FAIL_BAD_TIME = 3,
    CM_FAIL_BAD_CERT_ID = 4,
    CM_FAIL_BAD_DATA_FORMAT = 5,
    CM_FAIL_WRONG_AUTHORITY = 6,
    CM_FAIL_INCORRECT_DATA = 7,
    CM_FAIL_MISSING_TIME_STAMP = 8,
    CM_FAIL_BAD_POP = 9,
    CM_FAIL_CERT_REVOKED = 10,
    CM_FAIL_CERT_CONFIRMED = 11,
    CM_FAIL_WRONG_INTEGRITY = 12,
    CM_FAIL_BAD_RECIPIENT_NONCE = 13,
    CM_FAIL_TIME_NOT_AVAILABLE = 14,
    CM_FAIL_UNACCEPTED_POLICY = 15,
    CM_FAIL_UNACCEPTED_EXTENSION = 16,
    CM_FAIL_ADD_INFO_NOT_AVAILABLE = 17,
    CM_FAIL_BAD_SENDER_NONCE = 18,
    CM_FAIL_BAD_CERT_TEMPLATE = 19,
    CM_FAIL_SIGNER_NOT_TRUSTED = 20,
    CM_FAIL_TRANSACTION_ID_IN_USE = 21,
    CM_FAIL_UNSUPPORTED_VERSION = 22,
    CM_FAIL_NOT_AUTHORIZED = 23,
    CM_FAIL_SYSTEM_UNAVAIL = 24,
    CM_FAIL_SYSTEM_FAILURE = 25,
    CM_FAIL_DUPLICATE_CERT_REQ = 26,
} cm_failinfo;

#define CM_FAIL_MAX CM_FAIL_DUPLICATE_CERT_REQ

static inline cm_result cm_result_make(uint32_t code)
{
    cm_result r = {code};
    return r;
}

static inline bool cm_ok(cm_result r)
{
    return r.code == CM_OK;
}

static inline uint32_t cm_result_class(cm_result r)
{
    return CM_CODE_CLASS(r.code);
}

// cm_code_info is one row of the registry (engine/base/codes.def). Thread: immutable.
typedef struct cm_code_info {
    uint32_t code;      // CM_CODE(cls, detail)
    const char *module; // "BASE", "CRMF", "CMP", "CMP_PROTECT", "HTTP", "HSM", "STORE", ...
    const char *symbol; // "CA_E_KEY_TYPE"
    uint32_t cls;       // the row's class, CM_CLASS_*
    uint32_t detail;    // the row's detail as written (CM_CODE keeps its low 24 bits)
    int failinfo;       // PKIFailureInfo bit, a cm_failinfo
    const char *text;   // the one-line explanation
} cm_code_info;

// cm_code_registry returns every registered code (|*out_num| rows, in file order). The rows
// are static. Thread: any.
const cm_code_info *cm_code_registry(size_t *out_num);

// cm_code_find returns the registry row of |code|, or NULL when it is not registered (CM_OK,
// HSM- and IO-class codes, unknown codes). Thread: any.
const cm_code_info *cm_code_find(uint32_t code);

// cm_code_failinfo is THE mapping from a result code to the PKIFailureInfo bit number
// (RFC 9810 §5.2.3) a CMP error answering it carries: the registry's bit for registered
// codes; else by class: PROTO badDataFormat, POLICY badRequest, AGAIN systemUnavail,
// anything else (RESOURCE, CRYPTO, HSM, IO, USAGE) systemFailure. -1 for CM_OK.
// Thread: any; pure.
int cm_code_failinfo(uint32_t code);

// cm_result_name returns a static name for |r|: the registry symbol ("CA_E_KEY_TYPE"), "OK",
// "HSM/CKR_DEVICE_ERROR" for HSM-class codes, "IO/ENOSPC" for IO-class codes, and
// "CLASS/0xDETAIL" for unregistered codes. Never NULL. The HSM/IO/unregistered forms are
// built in a thread-local buffer, valid until the thread's next call. Thread: any.
const char *cm_result_name(cm_result r);

// cm_result_text returns the one-line English explanation of |r| for an operator: the
// registry text ("the request's key type is not allowed by the profile"), "the HSM failed:
// CKR_DEVICE_ERROR" for HSM-class codes, "a system call failed: No space left on device" for
// IO-class codes, "success" for CM_OK, and a sentence naming the code otherwise. Never NULL;
// thread-local storage as cm_result_name (a separate buffer). Thread: any.
const char *cm_result_text(cm_result r);

// cm_ckr_name returns the PKCS#11 name of a CK_RV ("CKR_SESSION_CLOSED"), or
// "CKR_VENDOR_DEFINED" / "CKR_UNKNOWN" for values not in its table (about 70 common ones).
// Static storage. Thread: any.
const char *cm_ckr_name(unsigned long rv);

// cm_bail_note records the first failure site of the current thread in debug builds (used by
// CM_BAIL for logging only) and returns |code| as a result. Thread: any.
cm_result cm_bail_note(uint32_t code, const char *file, int line);

// cm_bail_site returns the "file:line" of the last failure noted on this thread, or "" when
// none was noted or in release builds. Thread: any; the string is thread-local.
const char *cm_bail_site(void);

// The six error-propagation macros (STYLE.md §2.4). Each returns from the enclosing function,
// so use them only where nothing unowned is live.
#define CM_TRY(expr)                   \
    do {                               \
        cm_result cm_try_r_ = (expr);  \
        if (cm_try_r_.code != CM_OK) { \
            return cm_try_r_;          \
        }                              \
    } while (0)

#define CM_BAIL(c) return cm_bail_note((c), __FILE__, __LINE__)

#define CM_ENSURE(cond, c) \
    do {                   \
        if (!(cond)) {     \
            CM_BAIL(c);    \
        }                  \
    } while (0)

// CM_TRY_OSSL expects an OpenSSL call that returns 1 on success. The thread's OpenSSL error
// queue is cleared on failure so it cannot leak into the next request on this thread.
#define CM_TRY_OSSL(expr, c)        \
    do {                            \
        if ((expr) != 1) {          \
            cm_ossl_clear_errors(); \
            CM_BAIL(c);             \
        }                           \
    } while (0)

// CM_TRY_CK expects a PKCS#11 call returning CKR_OK (0); the CK_RV becomes an HSM-class code.
#define CM_TRY_CK(rv_expr, c)                                \
    do {                                                     \
        unsigned long cm_try_rv_ = (unsigned long)(rv_expr); \
        if (cm_try_rv_ != 0ul) {                             \
            (void)(c);                                       \
            CM_BAIL(cm_code_from_ckr(cm_try_rv_));           \
        }                                                    \
    } while (0)

// CM_TRY_SYS expects the liburing convention: negative means -errno.
#define CM_TRY_SYS(expr)                                             \
    do {                                                             \
        long cm_try_sys_ = (long)(expr);                             \
        if (cm_try_sys_ < 0) {                                       \
            CM_BAIL(CM_CODE(CM_CLASS_IO, (uint32_t)(-cm_try_sys_))); \
        }                                                            \
    } while (0)

// CM_CHECK aborts on a broken invariant (a programmer error, never peer input).
#define CM_CHECK(cond)                                  \
    do {                                                \
        if (!(cond)) {                                  \
            cm_check_failed(#cond, __FILE__, __LINE__); \
        }                                               \
    } while (0)

#ifdef NDEBUG
#define CM_DASSERT(cond) ((void)0)
#else
#define CM_DASSERT(cond) CM_CHECK(cond)
#endif

// cm_check_failed logs the failed invariant and aborts. Only CM_CHECK calls it.
_Noreturn void cm_check_failed(const char *what, const char *file, int line);

// cm_code_from_ckr maps a CK_RV to an HSM-class code. CK_RV values above 24 bits (vendor
// defined) collapse to 0xffffff. Thread: any.
uint32_t cm_code_from_ckr(unsigned long rv);

// cm_code_from_errno maps an errno value to an IO-class code. Thread: any.
uint32_t cm_code_from_errno(int err);

// cm_ossl_clear_errors clears this thread's OpenSSL error queue. Thread: any.
void cm_ossl_clear_errors(void);

// ---------------------------------------------------------------------------------------------
// Reasons

// cm_why is a caller-owned buffer for the specifics of a refusal, written for an operator:
// "key type P-521 not allowed by profile devices (allowed: P-256, P-384, RSA, Ed25519)". The
// code still travels in the cm_result; the reason only says more about it.
//
// The convention: a function that can refuse with specifics takes `cm_why *why` as its LAST
// parameter. |why| may be NULL (the caller does not care). The function writes a reason with
// cm_why_set on the failure paths where it knows something the code alone does not say, and
// passes |why| down to the functions it calls. cm_why_set is a no-op once a reason is set, so
// the innermost (most specific) explanation wins; a caller clears the buffer (cm_why_clear or
// zero-initialisation) before the call. A reason never holds a secret, a PIN, key material or
// internal detail such as file:line or a stack of OpenSSL errors: it may be sent to the peer.
// Thread: value type, confined to the request that owns it.
typedef struct cm_why {
    char text[192]; // NUL-terminated; "" while unset
} cm_why;

// cm_why_set formats a reason into |w| (printf-style, cut to fit), unless |w| is NULL or
// already holds a reason.
void cm_why_set(cm_why *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// cm_why_clear empties |w| (NULL is a no-op).
void cm_why_clear(cm_why *w);

// cm_why_is_set reports whether |w| holds a reason (false for NULL).
bool cm_why_is_set(const cm_why *w);

// cm_why_or_text returns |w|'s reason when one is set, else cm_result_text(r). Never NULL.
const char *cm_why_or_text(const cm_why *w, cm_result r);

// ---------------------------------------------------------------------------------------------
// Spans

// cm_span is a borrowed view of bytes: it never owns what it points at. Passed by value.
// Thread: value type.
typedef struct cm_span {
    const uint8_t *p;
    size_t len;
} cm_span;

static inline cm_span cm_span_make(const void *p, size_t len)
{
    cm_span s = {(const uint8_t *)p, len};
    return s;
}

// cm_span_eq reports whether |a| and |b| hold the same bytes (not constant time).
bool cm_span_eq(cm_span a, cm_span b);

// CM_SPAN_LIT makes a span from a string literal, without its terminating NUL.
#define CM_SPAN_LIT(s) cm_span_make((s), sizeof(s) - 1)

// ---------------------------------------------------------------------------------------------
// Arena

// cm_arena is a bump allocator made of chained blocks: everything one request parses, decodes
// and answers lives in it and is released as one unit by cm_arena_reset or cm_arena_cleanup.
// A cap bounds the total it may hold, so a hostile request cannot grow it without limit.
// Thread: confined to the thread that owns the request.
typedef struct cm_arena_block cm_arena_block;
typedef struct cm_arena {
    cm_arena_block *head; // block being filled; older blocks chain behind it
    size_t block_size;    // size of new blocks (a larger request gets a block of its own)
    size_t cap;           // most bytes the arena may hold, 0 for no cap
    size_t total;         // bytes currently reserved from malloc
} cm_arena;

// cm_arena_init prepares |a| with no memory reserved yet. |block_size| is the size of each new
// block (0 picks 16 KiB), |cap| the most the arena may hold (0 means no cap). Never fails.
void cm_arena_init(cm_arena *a, size_t block_size, size_t cap);

// cm_arena_alloc returns |len| bytes aligned for any type, valid until the next reset or
// cleanup, or NULL if the cap would be exceeded or malloc fails. |len| 0 returns a valid
// non-NULL pointer.
void *cm_arena_alloc(cm_arena *a, size_t len);

// cm_arena_memdup copies |s| into |a|; NULL on failure.
uint8_t *cm_arena_memdup(cm_arena *a, cm_span s);

// cm_arena_reset releases everything but the first block, for reuse by the next request.
void cm_arena_reset(cm_arena *a);

// cm_arena_cleanup releases all memory. |a| may then be initialised again.
void cm_arena_cleanup(cm_arena *a);

// ---------------------------------------------------------------------------------------------
// Logging

typedef enum cm_log_level {
    CM_LOG_ERROR = 0,
    CM_LOG_WARN = 1,
    CM_LOG_INFO = 2,
    CM_LOG_DEBUG = 3,
} cm_log_level;

// cm_log writes one line "TIME LEVEL message" to the runtime's log file descriptor (stderr by
// default) with a single write(2), so lines from different threads never interleave (or, on a
// thread with a cm_log_buf attached, appends it there for the next flush). Lines
// above the runtime's level are dropped before formatting. Never log secrets.
// Thread: any.
void cm_log(cm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// cm_log_quote writes |in| into |out| (|cap| bytes, NUL-terminated when |cap| > 0) for a
// quoted log field (key="..."): '"' and '\' get a backslash, bytes outside printable ASCII
// become \xNN, so a value that came from a peer can neither end the field nor forge a line.
// Cut at a whole escape when it does not fit. Returns |out|. Thread: any.
const char *cm_log_quote(char *out, size_t cap, const char *in);

// cm_log_enabled reports whether a line at |level| would be written.
bool cm_log_enabled(cm_log_level level);

// cm_log_ratelimited is cm_log for a warning that may repeat many times a second (one per
// request or per commit while a disk is full, an HSM is down, a peer floods): it writes at
// most one line per |interval_ms| for each |key|, and the line after a quiet spell says how
// many were held back since the previous one: "... (and 3,210 more in the last 10 s)". |key|
// names the kind of warning (a string constant such as "store.checkpoint"), not the instance:
// every caller with the same key shares one budget. The keys live in the runtime's table of
// CM_LOG_GATES entries (two keys with the same 64-bit hash share one); once it is full, further
// keys are logged without a limit. Lines above the runtime's level are neither written nor
// counted. Thread: any (lock-free).
void cm_log_ratelimited(const char *key, uint32_t interval_ms, cm_log_level level, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

// cm_log_level_parse maps "error", "warn", "info", "debug" to a level; false when unknown.
CM_MUST_USE bool cm_log_level_parse(const char *name, cm_log_level *out_level);

// cm_log_buf gathers the log lines of one thread (an I/O loop) so that a turn of the loop,
// however many requests it finished, costs at most one write(2): with a buffer attached,
// cm_log and cm_log_ratelimited on that thread append their line here instead of writing it,
// still one whole line per call; the line goes out at the next cm_log_buf_flush, or earlier
// when the buffer has no room for the next line. An ERROR line flushes what is buffered and
// is written at once, so an abort after it loses nothing. Thread: confined to its thread.
#define CM_LOG_BUF_CAP 16384u
typedef struct cm_log_buf {
    size_t len;
    char data[CM_LOG_BUF_CAP];
} cm_log_buf;

// cm_log_buf_attach sends this thread's log lines into |b| (emptied) until cm_log_buf_detach.
// Thread: the calling thread; |b| must outlive the attachment.
void cm_log_buf_attach(cm_log_buf *b);

// cm_log_buf_flush writes the lines buffered on this thread, in order, with one write(2)
// (retried on a short write); nothing when none are buffered or no buffer is attached.
// Thread: the calling thread.
void cm_log_buf_flush(void);

// cm_log_buf_detach flushes and detaches this thread's buffer (no-op without one).
void cm_log_buf_detach(void);

// ---------------------------------------------------------------------------------------------
// Time

// cm_time_mono_ns returns CLOCK_MONOTONIC in nanoseconds. Thread: any.
uint64_t cm_time_mono_ns(void);

// cm_time_now returns the wall clock in whole seconds since the epoch. Thread: any.
int64_t cm_time_now(void);

// cm_time_real_us returns the wall clock in microseconds since the epoch. Thread: any.
uint64_t cm_time_real_us(void);

// cm_time_from_civil converts a proleptic Gregorian UTC date and time to seconds since the
// epoch. The caller validates the ranges. Thread: any; pure.
int64_t cm_time_from_civil(int year, int month, int day, int hour, int min, int sec);

// cm_time_to_civil is the inverse of cm_time_from_civil.
void cm_time_to_civil(int64_t t, int *out_year, int *out_month, int *out_day, int *out_hour,
                      int *out_min, int *out_sec);

// ---------------------------------------------------------------------------------------------
// Runtime

// cm_runtime is the one piece of process-wide mutable state (STYLE.md §2.13): the log level and
// log descriptor, set up once in main() before threads start, and the budgets of
// cm_log_ratelimited. Thread: written only before threads start, through cm_runtime_set_log_*
// or (the gates) with atomics; read by any thread.
#define CM_LOG_GATES 64 // distinct cm_log_ratelimited keys

// cm_log_gate is one key's budget of cm_log_ratelimited. Thread: atomics only.
typedef struct cm_log_gate {
    uint64_t key;        // hash of the key (never 0); 0 while the entry is free
    uint64_t next_ns;    // CLOCK_MONOTONIC: no line for this key before this
    uint64_t last_ns;    // when the last line for it was written
    uint64_t suppressed; // lines held back since then
} cm_log_gate;

typedef struct cm_runtime {
    int log_level;                       // a cm_log_level; read with relaxed atomics
    int log_fd;                          // descriptor log lines go to
    cm_log_gate log_gates[CM_LOG_GATES]; // cm_log_ratelimited's keys (atomics)
} cm_runtime;

// cm_runtime_init initialises OpenSSL and the runtime defaults (level info, fd 2). Call once
// from main (or a test runner) before any thread starts. Returns a CRYPTO code if OpenSSL
// could not be initialised.
CM_RESULT cm_runtime_init(void);

// cm_runtime_set_log_level and cm_runtime_set_log_fd change where and what is logged.
void cm_runtime_set_log_level(cm_log_level level);
void cm_runtime_set_log_fd(int fd);

#endif // CERTMINT_ENGINE_BASE_BASE_H
