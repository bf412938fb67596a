// Suite "base": the code registry (names, explanations, failure bits), reasons, result naming,
// the arena (caps, alignment, reset), civil time, and the completion queue (order, batching,
// many producers, no lost wake-ups), and rate-limited logging.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "engine/ca/ca.h"
#include "engine/cmp/cmp.h"
#include "engine/cmp/cmp_protect.h"
#include "engine/config/cfg.h"
#include "engine/crmf/crmf.h"
#include "engine/http/http.h"
#include "engine/net/net.h"
#include "engine/server/srv.h"
#include "engine/store/store.h"
#include "hsm/hsm.h"
#include "tests/support/test_support.h"

static void test_base_result_names(void)
{
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CM_OK)), "OK");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CM_E_DER_INDEFINITE)),
                           "CM_E_DER_INDEFINITE");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CA_E_KEY_TYPE)), "CA_E_KEY_TYPE");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(SRV_E_REQ_COUNT)), "SRV_E_REQ_COUNT");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_errno(104))),
                           "IO/ECONNRESET");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_errno(ENOSPC))), "IO/ENOSPC");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(0xa0))),
                           "HSM/CKR_PIN_INCORRECT");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(0x30))),
                           "HSM/CKR_DEVICE_ERROR");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(0x80000001ul))),
                           "HSM/CKR_VENDOR_DEFINED");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(0x0777))),
                           "HSM/CKR_UNKNOWN");
    // Unregistered codes keep the class and the detail.
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CM_CODE(CM_CLASS_POLICY, 0x7ff))),
                           "POLICY/0x0007ff");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CM_CODE(12, 1))), "UNKNOWN/0x000001");
    CU_ASSERT_EQUAL(cm_result_class(cm_result_make(CM_E_NOMEM)), CM_CLASS_RESOURCE);
    CU_ASSERT_EQUAL(CM_CODE_DETAIL(cm_code_from_ckr(0x80000001ul)), 0xffffffu);
    CU_ASSERT_STRING_EQUAL(cm_ckr_name(0x80000001ul), "CKR_VENDOR_DEFINED");
    CU_ASSERT_STRING_EQUAL(cm_ckr_name(0), "CKR_OK");
}

static void test_base_result_texts(void)
{
    CU_ASSERT_STRING_EQUAL(cm_result_text(cm_result_make(CA_E_KEY_TYPE)),
                           "the request's key type is not allowed by the profile");
    CU_ASSERT_STRING_EQUAL(cm_result_text(cm_result_make(cm_code_from_ckr(0x30))),
                           "the HSM failed: CKR_DEVICE_ERROR");
    CU_ASSERT_STRING_EQUAL(cm_result_text(cm_result_make(cm_code_from_errno(ENOSPC))),
                           "a system call failed: No space left on device");
    CU_ASSERT_STRING_EQUAL(cm_result_text(cm_result_make(CM_OK)), "success");
    CU_ASSERT_STRING_EQUAL(cm_result_text(cm_result_make(CM_CODE(CM_CLASS_PROTO, 0x3ff))),
                           "unexpected error PROTO/0x0003ff");
    // Name and text use separate buffers, so one log line may hold both.
    const cm_result io = cm_result_make(cm_code_from_errno(ENOSPC));
    const char *name = cm_result_name(io);
    const char *text = cm_result_text(io);
    CU_ASSERT_STRING_EQUAL(name, "IO/ENOSPC");
    CU_ASSERT_PTR_NOT_EQUAL(name, text);
}

// Every module's constants, as its own header declares them, next to their names: the check
// that each header's enum is exactly its rows of the registry.
static const struct {
    uint32_t code;
    const char *symbol;
} k_header_codes[] = {
#define CM_CODE_DEF(mod, sym, cls, detail, fail, text) {sym, #sym},
#include "engine/base/codes.def"
};

// The detail range each module reserves (base.h).
static bool base_detail_in_range(const char *module, uint32_t detail)
{
    static const struct {
        const char *module;
        uint32_t lo, hi;
    } k_ranges[] = {
        {"BASE", 0x000, 0x0ff},        {"CRMF", 0x100, 0x1ff}, {"CMP", 0x200, 0x2bf},
        {"CMP_PROTECT", 0x2c0, 0x2ff}, {"HTTP", 0x300, 0x3ff}, {"HSM", 0x400, 0x4ff},
        {"STORE", 0x500, 0x5ff},       {"CFG", 0x600, 0x6ff},  {"CA", 0x700, 0x7ff},
        {"SRV", 0x800, 0x8ff},         {"NET", 0x900, 0x9ff},
    };
    for (size_t i = 0; i < sizeof(k_ranges) / sizeof(k_ranges[0]); i++) {
        if (strcmp(k_ranges[i].module, module) == 0) {
            return detail >= k_ranges[i].lo && detail <= k_ranges[i].hi;
        }
    }
    return false;
}

static void test_base_registry_is_complete_and_unique(void)
{
    size_t n = 0;
    const cm_code_info *reg = cm_code_registry(&n);
    CU_ASSERT_FATAL(n == sizeof(k_header_codes) / sizeof(k_header_codes[0]));
    CU_ASSERT(n > 190); // every module's codes, not a subset
    for (size_t i = 0; i < n; i++) {
        const cm_code_info *c = &reg[i];
        const bool ok = c->code != CM_OK && c->symbol != NULL && c->symbol[0] != '\0' &&
                        c->text != NULL && strlen(c->text) >= 10 && c->failinfo >= 0 &&
                        c->failinfo <= CM_FAIL_MAX && CM_CODE_CLASS(c->code) == c->cls &&
                        CM_CODE_DETAIL(c->code) == c->detail && c->cls >= CM_CLASS_USAGE &&
                        c->cls <= CM_CLASS_CRYPTO && base_detail_in_range(c->module, c->detail) &&
                        // The header constant has the registry's value, and the name is the symbol.
                        k_header_codes[i].code == c->code &&
                        strcmp(k_header_codes[i].symbol, c->symbol) == 0 &&
                        strcmp(cm_result_name(cm_result_make(c->code)), c->symbol) == 0 &&
                        strcmp(cm_result_text(cm_result_make(c->code)), c->text) == 0 &&
                        cm_code_find(c->code) == c && cm_code_failinfo(c->code) == c->failinfo;
        if (!ok) {
            fprintf(stderr, "\n  registry row %zu (%s) is incomplete or inconsistent\n", i,
                    c->symbol != NULL ? c->symbol : "?");
        }
        CU_ASSERT(ok);
        for (size_t j = i + 1; j < n; j++) {
            if (reg[j].code == c->code || strcmp(reg[j].symbol, c->symbol) == 0) {
                fprintf(stderr, "\n  %s and %s share a value or a symbol\n", c->symbol,
                        reg[j].symbol);
                CU_FAIL("duplicate registry row");
            }
        }
    }
}

static void test_base_failinfo_mapping(void)
{
    // Registry rows, the server's overrides among them.
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_KEY_TYPE), CM_FAIL_BAD_CERT_TEMPLATE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CA_E_EXT_UNACCEPTED), CM_FAIL_UNACCEPTED_EXTENSION);
    CU_ASSERT_EQUAL(cm_code_failinfo(STORE_E_NOT_FOUND), CM_FAIL_BAD_CERT_ID);
    CU_ASSERT_EQUAL(cm_code_failinfo(STORE_E_TXN_IN_USE), CM_FAIL_TRANSACTION_ID_IN_USE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_PROT_MAC_MISMATCH), CM_FAIL_BAD_MESSAGE_CHECK);
    CU_ASSERT_EQUAL(cm_code_failinfo(CRMF_E_POPO_BAD_SIGNATURE), CM_FAIL_BAD_POP);
    CU_ASSERT_EQUAL(cm_code_failinfo(SRV_E_WRONG_AUTHORITY), CM_FAIL_WRONG_AUTHORITY);
    CU_ASSERT_EQUAL(cm_code_failinfo(HSM_E_QUEUE_FULL), CM_FAIL_SYSTEM_UNAVAIL);
    // Unregistered codes by class.
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_CODE(CM_CLASS_PROTO, 0x3ff)), CM_FAIL_BAD_DATA_FORMAT);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_CODE(CM_CLASS_POLICY, 0x7ff)), CM_FAIL_BAD_REQUEST);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_CODE(CM_CLASS_AGAIN, 0xfff)), CM_FAIL_SYSTEM_UNAVAIL);
    CU_ASSERT_EQUAL(cm_code_failinfo(cm_code_from_ckr(0x30)), CM_FAIL_SYSTEM_FAILURE);
    CU_ASSERT_EQUAL(cm_code_failinfo(cm_code_from_errno(ENOSPC)), CM_FAIL_SYSTEM_FAILURE);
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_OK), -1);
    CU_ASSERT_PTR_NULL(cm_code_find(CM_OK));
    CU_ASSERT_PTR_NULL(cm_code_find(cm_code_from_ckr(0x30)));
}

static void test_base_why_innermost_wins(void)
{
    cm_why w;
    cm_why_clear(&w);
    CU_ASSERT_FALSE(cm_why_is_set(&w));
    CU_ASSERT_STRING_EQUAL(cm_why_or_text(&w, cm_result_make(CA_E_SAN_TYPE)),
                           "the request has a subjectAltName type the profile does not allow");
    cm_why_set(&w, "key type %s not allowed by profile %s", "P-521", "devices");
    cm_why_set(&w, "an outer, vaguer reason"); // ignored: the first (innermost) one stays
    CU_ASSERT_TRUE(cm_why_is_set(&w));
    CU_ASSERT_STRING_EQUAL(w.text, "key type P-521 not allowed by profile devices");
    CU_ASSERT_STRING_EQUAL(cm_why_or_text(&w, cm_result_make(CA_E_KEY_TYPE)), w.text);
    cm_why_clear(&w);
    CU_ASSERT_STRING_EQUAL(w.text, "");
    // Too long: cut to the buffer, still NUL-terminated.
    char big[400];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cm_why_set(&w, "%s", big);
    CU_ASSERT_EQUAL(strlen(w.text), sizeof(w.text) - 1);
    // NULL is a no-op everywhere.
    cm_why_set(NULL, "ignored %d", 1);
    cm_why_clear(NULL);
    CU_ASSERT_FALSE(cm_why_is_set(NULL));
    CU_ASSERT_STRING_EQUAL(cm_why_or_text(NULL, cm_result_make(CM_E_NOMEM)),
                           "the server ran out of memory");
}

static void test_base_log_quote_escapes_peer_text(void)
{
    char out[64];
    CU_ASSERT_STRING_EQUAL(cm_log_quote(out, sizeof(out), "no MAC secret for senderKID line-9"),
                           "no MAC secret for senderKID line-9");
    // A quote, a backslash, a newline and a non-ASCII byte cannot end the field or the line.
    CU_ASSERT_STRING_EQUAL(cm_log_quote(out, sizeof(out), "a\"b\\c\nd\xc3\xbc"),
                           "a\\\"b\\\\c\\x0ad\\xc3\\xbc");
    // Cut at a whole escape.
    char small[6];
    CU_ASSERT_STRING_EQUAL(cm_log_quote(small, sizeof(small), "ab\ncd"), "ab");
    CU_ASSERT_STRING_EQUAL(cm_log_quote(small, sizeof(small), ""), "");
}

static void test_base_arena_alignment_cap_and_reset(void)
{
    cm_arena a;
    cm_arena_init(&a, 256, 4096);
    for (int i = 1; i < 50; i++) {
        uint8_t *p = cm_arena_alloc(&a, (size_t)i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL((uintptr_t)p % _Alignof(max_align_t), 0);
        memset(p, 0xab, (size_t)i);
    }
    // A request bigger than a block gets its own block; one past the cap fails.
    CU_ASSERT_PTR_NOT_NULL(cm_arena_alloc(&a, 1000));
    CU_ASSERT_PTR_NULL(cm_arena_alloc(&a, 5000));
    CU_ASSERT_PTR_NOT_NULL(cm_arena_alloc(&a, 0));
    cm_arena_reset(&a);
    CU_ASSERT(a.total <= 256);
    uint8_t *dup = cm_arena_memdup(&a, CM_SPAN_LIT("hello"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(dup);
    CU_ASSERT_EQUAL(memcmp(dup, "hello", 5), 0);
    cm_arena_cleanup(&a);
    CU_ASSERT_EQUAL(a.total, 0);
}

static void test_base_civil_time_round_trip(void)
{
    CU_ASSERT_EQUAL(cm_time_from_civil(1970, 1, 1, 0, 0, 0), 0);
    CU_ASSERT_EQUAL(cm_time_from_civil(2000, 3, 1, 0, 0, 0), 951868800);
    CU_ASSERT_EQUAL(cm_time_from_civil(1950, 1, 1, 0, 0, 0), -631152000);
    for (int64_t t = -2000000000LL; t < 4000000000LL; t += 86399 * 97) {
        int y, mo, d, h, mi, s;
        cm_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
        CU_ASSERT_EQUAL(cm_time_from_civil(y, mo, d, h, mi, s), t);
    }
}

typedef struct base_item {
    cm_cq_node node;
    uint32_t producer;
    uint32_t seq;
} base_item;

#define BASE_PRODUCERS    4
#define BASE_PER_PRODUCER 20000

typedef struct base_producer {
    cm_cq *q;
    base_item *items;
    uint32_t id;
} base_producer;

static void *base_produce(void *arg)
{
    base_producer *p = arg;
    for (uint32_t i = 0; i < BASE_PER_PRODUCER; i += 4) {
        // Batches of four: one chain push.
        for (uint32_t k = 0; k < 4; k++) {
            base_item *it = &p->items[i + k];
            it->node.kind = CM_CQ_KIND_USER;
            it->producer = p->id;
            it->seq = i + k;
            it->node.next = k < 3 ? &p->items[i + k + 1].node : NULL;
        }
        cm_cq_push_chain(p->q, &p->items[i].node, &p->items[i + 3].node);
    }
    return NULL;
}

static void test_base_cq_many_producers_in_order_exactly_once(void)
{
    cm_cq q;
    TEST_ASSERT_OK(cm_cq_init(&q));
    CU_ASSERT_PTR_NULL(cm_cq_drain(&q));
    CU_ASSERT_FALSE(cm_cq_wait(&q, 0));
    base_producer prod[BASE_PRODUCERS];
    pthread_t th[BASE_PRODUCERS];
    for (uint32_t i = 0; i < BASE_PRODUCERS; i++) {
        prod[i].q = &q;
        prod[i].id = i;
        prod[i].items = calloc(BASE_PER_PRODUCER, sizeof(base_item));
        CU_ASSERT_PTR_NOT_NULL_FATAL(prod[i].items);
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, base_produce, &prod[i]), 0);
    }
    uint32_t next_seq[BASE_PRODUCERS] = {0};
    uint32_t total = 0;
    bool in_order = true;
    while (total < BASE_PRODUCERS * BASE_PER_PRODUCER) {
        // A lost wake-up would hang here; the 5 s timeout turns it into a failure.
        if (!cm_cq_wait(&q, 5000)) {
            break;
        }
        for (cm_cq_node *n = cm_cq_drain(&q); n != NULL; n = n->next) {
            const base_item *it = (const base_item *)n;
            in_order &= it->seq == next_seq[it->producer];
            next_seq[it->producer] = it->seq + 1;
            total++;
        }
    }
    for (uint32_t i = 0; i < BASE_PRODUCERS; i++) {
        (void)pthread_join(th[i], NULL);
        free(prod[i].items);
    }
    CU_ASSERT_EQUAL(total, BASE_PRODUCERS * BASE_PER_PRODUCER);
    CU_ASSERT_TRUE(in_order);
    CU_ASSERT_PTR_NULL(cm_cq_drain(&q));
    cm_cq_cleanup(&q);
}

static bool cq_rang(const cm_cq *q)
{
    struct pollfd pf = {.fd = cm_cq_fd(q), .events = POLLIN};
    return poll(&pf, 1, 0) == 1;
}

static void test_base_cq_local_push_skips_the_doorbell_only_when_promised(void)
{
    cm_cq q;
    TEST_ASSERT_OK(cm_cq_init(&q));
    cm_cq_node a = {NULL, CM_CQ_KIND_USER}, b = {NULL, CM_CQ_KIND_USER},
               c = {NULL, CM_CQ_KIND_USER};
    // No promise to drain before waiting: a local push rings like any other.
    CU_ASSERT_FALSE(cm_cq_pending(&q));
    cm_cq_push_local(&q, &a, &a);
    CU_ASSERT_TRUE(cq_rang(&q));
    CU_ASSERT_PTR_EQUAL(cm_cq_drain(&q), &a);
    CU_ASSERT_FALSE(cq_rang(&q));
    // Promised: the owner's pushes are silent and only cm_cq_pending shows them; a push by
    // anyone onto the non-empty queue stays silent too, and the drain returns push order.
    cm_cq_set_drains_before_wait(&q, true);
    cm_cq_push_local(&q, &a, &a);
    CU_ASSERT_TRUE(cm_cq_pending(&q));
    CU_ASSERT_FALSE(cq_rang(&q));
    cm_cq_push(&q, &b);
    CU_ASSERT_FALSE(cq_rang(&q));
    cm_cq_node *n = cm_cq_drain_after_read(&q);
    CU_ASSERT_PTR_EQUAL(n, &a);
    CU_ASSERT_PTR_EQUAL(n->next, &b);
    CU_ASSERT_PTR_NULL(n->next->next);
    CU_ASSERT_FALSE(cm_cq_pending(&q));
    // A push from another producer onto the empty queue still rings.
    cm_cq_push(&q, &c);
    CU_ASSERT_TRUE(cq_rang(&q));
    CU_ASSERT_PTR_EQUAL(cm_cq_drain(&q), &c);
    // Withdrawn: rings again.
    cm_cq_set_drains_before_wait(&q, false);
    cm_cq_push_local(&q, &a, &a);
    CU_ASSERT_TRUE(cq_rang(&q));
    CU_ASSERT_PTR_EQUAL(cm_cq_drain(&q), &a);
    cm_cq_cleanup(&q);
}

// --- cm_log_ratelimited -----------------------------------------------------------------------

static int g_log_fd = -1;

// log_capture sends log lines to a fresh file in |dir| and returns its path in |path|.
static void log_capture(char *dir, size_t dir_cap, char *path, size_t path_cap)
{
    CU_ASSERT_FATAL(test_tmpdir(dir, dir_cap, "base-log"));
    test_path(path, path_cap, dir, "log");
    g_log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CU_ASSERT_FATAL(g_log_fd >= 0);
    cm_runtime_set_log_fd(g_log_fd);
}

// log_release sends log lines back to stderr and returns what was captured (NUL-terminated,
// malloc'ed), removing the file.
static char *log_release(const char *dir, const char *path)
{
    cm_runtime_set_log_fd(2);
    (void)close(g_log_fd);
    g_log_fd = -1;
    uint8_t *buf = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(test_read_file(path, &buf, &len));
    char *text = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    memcpy(text, buf, len);
    text[len] = '\0';
    free(buf);
    (void)test_rmtree(dir);
    return text;
}

// log_tally counts the lines of |text| that contain |what| and adds up the "(and N more"
// counts they carry (N may have thousands separators).
static size_t log_tally(const char *text, const char *what, uint64_t *out_more)
{
    size_t lines = 0;
    *out_more = 0;
    for (const char *l = text; *l != '\0';) {
        const char *end = strchr(l, '\n');
        const size_t n = end != NULL ? (size_t)(end - l) : strlen(l);
        const char *hit = memmem(l, n, what, strlen(what));
        if (hit != NULL) {
            lines++;
            const char *more = memmem(l, n, "(and ", 5);
            if (more != NULL) {
                uint64_t v = 0;
                for (const char *q = more + 5; *q == ',' || (*q >= '0' && *q <= '9'); q++) {
                    v = *q == ',' ? v : v * 10 + (uint64_t)(*q - '0');
                }
                *out_more += v;
            }
        }
        l += n + (end != NULL);
    }
    return lines;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    (void)nanosleep(&ts, NULL);
}

static size_t file_size(int fd)
{
    const off_t end = lseek(fd, 0, SEEK_END);
    return end > 0 ? (size_t)end : 0;
}

static void test_base_log_buf_writes_once_per_flush_and_loses_nothing(void)
{
    char dir[256], path[320];
    log_capture(dir, sizeof(dir), path, sizeof(path));
    cm_runtime_set_log_level(CM_LOG_INFO); // the runner's is WARN
    static cm_log_buf buf;                 // 16 KiB: not on the test's stack
    cm_log_buf_attach(&buf);
    cm_log(CM_LOG_INFO, "turn1 line a");
    cm_log(CM_LOG_WARN, "turn1 line b");
    CU_ASSERT_EQUAL(file_size(g_log_fd), 0); // held until the flush
    cm_log_buf_flush();
    const size_t after1 = file_size(g_log_fd);
    CU_ASSERT(after1 > 0);
    cm_log_buf_flush(); // nothing buffered: nothing written
    CU_ASSERT_EQUAL(file_size(g_log_fd), after1);
    // An ERROR line goes out at once, after what was buffered before it.
    cm_log(CM_LOG_INFO, "turn2 before the error");
    cm_log(CM_LOG_ERROR, "turn2 the error");
    CU_ASSERT(file_size(g_log_fd) > after1);
    // More lines than the buffer holds: full buffers are written, none is dropped or cut.
    char pad[301];
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < 200; i++) {
        cm_log(CM_LOG_INFO, "bulk %03d %s", i, pad);
    }
    cm_log(CM_LOG_INFO, "last before detach");
    cm_log_buf_detach(); // flushes
    cm_log(CM_LOG_INFO, "unbuffered again");
    cm_runtime_set_log_level(CM_LOG_WARN);
    char *text = log_release(dir, path);
    uint64_t more = 0;
    CU_ASSERT_EQUAL(log_tally(text, "bulk ", &more), 200);
    CU_ASSERT_EQUAL(log_tally(text, pad, &more), 200); // every bulk line whole
    const char *order[] = {"turn1 line a",       "turn1 line b",    "turn2 before the error",
                           "turn2 the error",    "bulk 000",        "bulk 199",
                           "last before detach", "unbuffered again"};
    const char *at = text;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const char *hit = strstr(at, order[i]);
        CU_ASSERT_PTR_NOT_NULL(hit);
        at = hit != NULL ? hit : at;
    }
    free(text);
}

static void test_base_log_ratelimited_one_line_per_interval_with_count(void)
{
    char dir[256], path[320];
    log_capture(dir, sizeof(dir), path, sizeof(path));
    // 3,211 repeats within one interval: one line now ...
    for (int i = 0; i < 3211; i++) {
        cm_log_ratelimited("test.repeat", 300, CM_LOG_WARN, "disk full: attempt %d", i);
    }
    // ... another key has its own budget ...
    cm_log_ratelimited("test.other", 300, CM_LOG_WARN, "another warning");
    // ... and after the interval, one line that counts the 3,210 held back.
    sleep_ms(350);
    cm_log_ratelimited("test.repeat", 300, CM_LOG_WARN, "disk full: attempt %d", 3211);
    // Below the log level: neither written nor counted.
    cm_runtime_set_log_level(CM_LOG_ERROR);
    cm_log_ratelimited("test.quiet", 0, CM_LOG_WARN, "never written");
    cm_runtime_set_log_level(CM_LOG_INFO);
    char *text = log_release(dir, path);
    uint64_t more = 0;
    CU_ASSERT_EQUAL(log_tally(text, "disk full: attempt", &more), 2);
    CU_ASSERT_EQUAL(more, 3210);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "WARN disk full: attempt 0\n"));
    // The quiet spell was ~0.35 s: written with one decimal.
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "disk full: attempt 3211 (and 3,210 more in the last 0."));
    CU_ASSERT_EQUAL(log_tally(text, "another warning", &more), 1);
    CU_ASSERT_EQUAL(more, 0);
    CU_ASSERT_PTR_NULL(strstr(text, "never written"));
    // The message is cut rather than the count when it is too long for a line.
    free(text);
    log_capture(dir, sizeof(dir), path, sizeof(path));
    char big[1500];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cm_log_ratelimited("test.long", 50, CM_LOG_WARN, "long %s", big);
    cm_log_ratelimited("test.long", 50, CM_LOG_WARN, "long %s", big);
    sleep_ms(80);
    cm_log_ratelimited("test.long", 50, CM_LOG_WARN, "long %s", big);
    text = log_release(dir, path);
    CU_ASSERT_EQUAL(log_tally(text, "long xxx", &more), 2);
    CU_ASSERT_EQUAL(more, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "x (and 1 more in the last 0."));
    free(text);
}

#define BASE_LOG_THREADS 4
#define BASE_LOG_CALLS   20000

static void *log_hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < BASE_LOG_CALLS; i++) {
        cm_log_ratelimited("test.threads", 20, CM_LOG_WARN, "hammered");
        if (i % 2000 == 0) {
            sleep_ms(5); // let some intervals pass while others hammer
        }
    }
    return NULL;
}

static void test_base_log_ratelimited_threads_lose_no_count(void)
{
    // Every call is either written or counted in a later line, also when threads race.
    char dir[256], path[320];
    log_capture(dir, sizeof(dir), path, sizeof(path));
    pthread_t t[BASE_LOG_THREADS];
    for (int i = 0; i < BASE_LOG_THREADS; i++) {
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, log_hammer, NULL) == 0);
    }
    for (int i = 0; i < BASE_LOG_THREADS; i++) {
        (void)pthread_join(t[i], NULL);
    }
    sleep_ms(30);
    cm_log_ratelimited("test.threads", 20, CM_LOG_WARN, "hammered"); // reports the rest
    char *text = log_release(dir, path);
    uint64_t more = 0;
    const size_t lines = log_tally(text, "hammered", &more);
    CU_ASSERT_TRUE(lines >= 2 && lines < 1000);
    CU_ASSERT_EQUAL(lines + more, (uint64_t)BASE_LOG_THREADS * BASE_LOG_CALLS + 1);
    free(text);
}

int test_base_register(void);
int test_base_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_base_result_names),
        TEST_CASE(test_base_result_texts),
        TEST_CASE(test_base_registry_is_complete_and_unique),
        TEST_CASE(test_base_failinfo_mapping),
        TEST_CASE(test_base_why_innermost_wins),
        TEST_CASE(test_base_log_quote_escapes_peer_text),
        TEST_CASE(test_base_arena_alignment_cap_and_reset),
        TEST_CASE(test_base_civil_time_round_trip),
        TEST_CASE(test_base_cq_many_producers_in_order_exactly_once),
        TEST_CASE(test_base_cq_local_push_skips_the_doorbell_only_when_promised),
        TEST_CASE(test_base_log_buf_writes_once_per_flush_and_loses_nothing),
        TEST_CASE(test_base_log_ratelimited_one_line_per_interval_with_count),
        TEST_CASE(test_base_log_ratelimited_threads_lose_no_count),
    };
    return test_register_suite("base", NULL, NULL, NULL, NULL, tests, TEST_NUM_CASES(tests));
}
