// Suite "base": result naming, the arena (caps, alignment, reset), civil time, and the
// completion queue (order, batching, many producers, no lost wake-ups).
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "engine/base/base.h"
#include "engine/base/cq.h"
#include "tests/support/test_support.h"

static void test_base_result_names(void)
{
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CM_OK)), "OK");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(CM_E_DER_INDEFINITE)),
                           "PROTO/DER_INDEFINITE");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_errno(104))),
                           "IO/ECONNRESET");
    CU_ASSERT_STRING_EQUAL(cm_result_name(cm_result_make(cm_code_from_ckr(0xa0))), "HSM/0x0000a0");
    CU_ASSERT_EQUAL(cm_result_class(cm_result_make(CM_E_NOMEM)), CM_CLASS_RESOURCE);
    CU_ASSERT_EQUAL(CM_CODE_DETAIL(cm_code_from_ckr(0x80000001ul)), 0xffffffu);
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

int test_base_register(void);
int test_base_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_base_result_names),
        TEST_CASE(test_base_arena_alignment_cap_and_reset),
        TEST_CASE(test_base_civil_time_round_trip),
        TEST_CASE(test_base_cq_many_producers_in_order_exactly_once),
    };
    return test_register_suite("base", NULL, NULL, NULL, NULL, tests, TEST_NUM_CASES(tests));
}
