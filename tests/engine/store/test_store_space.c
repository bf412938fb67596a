// Suite "store_space": the free-space watch of the store's filesystem (engine/store/
// store_space.c). A fake probe plays a filling disk (no small tmpfs is available here); one
// test reads the real filesystem of the suite's directory with statvfs. Its own suite, beside
// "store", so the two files change independently.
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include <CUnit/CUnit.h>

#include "engine/base/base.h"
#include "engine/store/store.h"
#include "tests/support/test_support.h"

#define MIB (1024ull * 1024ull)

static char g_dir[256];

static int space_suite_init(void)
{
    return test_tmpdir(g_dir, sizeof(g_dir), "store-space") ? 0 : 1;
}

static int space_suite_cleanup(void)
{
    return test_rmtree(g_dir) ? 0 : 1;
}

// fake_disk is the fake probe's state: the free bytes it reports, or a failure.
typedef struct fake_disk {
    uint64_t free_bytes;
    bool fail;
    char seen_dir[1024];
    unsigned calls;
} fake_disk;

static cm_result fake_probe(void *arg, const char *dir, uint64_t *out_free)
{
    fake_disk *f = arg;
    f->calls++;
    (void)snprintf(f->seen_dir, sizeof(f->seen_dir), "%s", dir);
    if (f->fail) {
        return cm_result_make(cm_code_from_errno(5)); // EIO
    }
    *out_free = f->free_bytes;
    return cm_result_make(CM_OK);
}

static void test_store_space_directory_of_the_database(void)
{
    store_space sp;
    TEST_ASSERT_OK(store_space_init(&sp, "sqlite:/var/lib/certmint/certmint.db", 256 * MIB));
    CU_ASSERT_STRING_EQUAL(sp.dir, "/var/lib/certmint");
    CU_ASSERT_EQUAL(store_space_free(&sp), STORE_SPACE_UNKNOWN); // no reading yet
    TEST_ASSERT_OK(store_space_init(&sp, "sqlite:certmint.db", 0));
    CU_ASSERT_STRING_EQUAL(sp.dir, ".");
    TEST_ASSERT_OK(store_space_init(&sp, "sqlite:/certmint.db", 0));
    CU_ASSERT_STRING_EQUAL(sp.dir, "/");
    // A store without a local file: the watch is off, every check passes.
    TEST_ASSERT_OK(store_space_init(&sp, "postgresql://db.example/certmint", 256 * MIB));
    CU_ASSERT_STRING_EQUAL(sp.dir, "");
    fake_disk f = {.free_bytes = 0};
    sp.probe = fake_probe;
    sp.probe_arg = &f;
    TEST_ASSERT_OK(store_space_refresh(&sp));
    CU_ASSERT_EQUAL(f.calls, 0);
    TEST_ASSERT_OK(store_space_check(&sp, NULL));
    TEST_ASSERT_OK(store_space_check(NULL, NULL));
    // A directory too long for the watch is refused, not cut.
    char url[2048] = "sqlite:/";
    memset(url + 8, 'd', 1500);
    memcpy(url + 1508, "/x.db", 6);
    TEST_ASSERT_CODE(store_space_init(&sp, url, 0), STORE_E_URL);
}

static void test_store_space_refuses_below_min_free_with_reason(void)
{
    store_space sp;
    TEST_ASSERT_OK(store_space_init(&sp, "sqlite:/var/lib/certmint/certmint.db", 256 * MIB));
    fake_disk f = {.free_bytes = 300 * MIB};
    sp.probe = fake_probe;
    sp.probe_arg = &f;
    // Nothing is refused before the first reading, nor above the margin.
    TEST_ASSERT_OK(store_space_check(&sp, NULL));
    TEST_ASSERT_OK(store_space_refresh(&sp));
    CU_ASSERT_STRING_EQUAL(f.seen_dir, "/var/lib/certmint");
    CU_ASSERT_EQUAL(store_space_free(&sp), 300 * MIB);
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_OK(store_space_check(&sp, &why));
    CU_ASSERT_FALSE(cm_why_is_set(&why));
    // The disk fills up: refused with the code, the failure bit and the reason.
    f.free_bytes = 12 * MIB + 5000;
    TEST_ASSERT_OK(store_space_refresh(&sp));
    cm_why_clear(&why);
    const cm_result r = store_space_check(&sp, &why);
    TEST_ASSERT_CODE(r, STORE_E_LOW_SPACE);
    CU_ASSERT_EQUAL(cm_code_failinfo(r.code), CM_FAIL_SYSTEM_UNAVAIL);
    CU_ASSERT_STRING_EQUAL(why.text, "store full: only 12 MiB free on /var/lib/certmint, below "
                                     "store_min_free (256 MiB)");
    TEST_ASSERT_CODE(store_space_check(&sp, NULL), STORE_E_LOW_SPACE);
    CU_ASSERT_EQUAL(store_space_refused(&sp), 2);
    // Exactly at the margin is enough; a failed reading keeps the last one in force.
    f.free_bytes = 256 * MIB;
    TEST_ASSERT_OK(store_space_refresh(&sp));
    TEST_ASSERT_OK(store_space_check(&sp, NULL));
    f.free_bytes = 1;
    TEST_ASSERT_OK(store_space_refresh(&sp));
    f.fail = true;
    TEST_ASSERT_CODE(store_space_refresh(&sp), cm_code_from_errno(5));
    CU_ASSERT_EQUAL(sp.failures, 1);
    CU_ASSERT_EQUAL(store_space_free(&sp), 1);
    TEST_ASSERT_CODE(store_space_check(&sp, NULL), STORE_E_LOW_SPACE);
    // Space freed: accepted again.
    f.fail = false;
    f.free_bytes = 1024 * MIB;
    TEST_ASSERT_OK(store_space_refresh(&sp));
    TEST_ASSERT_OK(store_space_check(&sp, NULL));
    CU_ASSERT_EQUAL(store_space_refused(&sp), 3);
    // store_min_free = 0: watched (the gauge), never refused.
    TEST_ASSERT_OK(store_space_init(&sp, "sqlite:/var/lib/certmint/certmint.db", 0));
    sp.probe = fake_probe;
    sp.probe_arg = &f;
    f.free_bytes = 0;
    TEST_ASSERT_OK(store_space_refresh(&sp));
    CU_ASSERT_EQUAL(store_space_free(&sp), 0);
    TEST_ASSERT_OK(store_space_check(&sp, NULL));
}

static void test_store_space_reads_the_real_filesystem(void)
{
    char db[320], url[400];
    test_path(db, sizeof(db), g_dir, "certmint.db");
    (void)snprintf(url, sizeof(url), "sqlite:%s", db);
    store_space sp;
    TEST_ASSERT_OK(store_space_init(&sp, url, 0));
    CU_ASSERT_STRING_EQUAL(sp.dir, g_dir);
    TEST_ASSERT_OK(store_space_refresh(&sp));
    struct statvfs st;
    CU_ASSERT_FATAL(statvfs(g_dir, &st) == 0);
    const uint64_t want = (uint64_t)st.f_bavail * st.f_frsize;
    const uint64_t got = store_space_free(&sp);
    CU_ASSERT_TRUE(got != STORE_SPACE_UNKNOWN && got > 0);
    // Other processes write meanwhile: within 256 MiB of our own reading.
    CU_ASSERT_TRUE(got + 256 * MIB >= want && want + 256 * MIB >= got);
    // A margin above any disk refuses; the reason names the directory.
    TEST_ASSERT_OK(store_space_init(&sp, url, UINT64_MAX - 1));
    TEST_ASSERT_OK(store_space_refresh(&sp));
    cm_why why;
    cm_why_clear(&why);
    TEST_ASSERT_CODE(store_space_check(&sp, &why), STORE_E_LOW_SPACE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why.text, g_dir));
    // A directory that does not exist: the reading fails with its errno, nothing is refused.
    TEST_ASSERT_OK(store_space_init(&sp, "sqlite:/nonexistent-certmint-dir/x.db", 1));
    TEST_ASSERT_CODE(store_space_refresh(&sp), cm_code_from_errno(2)); // ENOENT
    CU_ASSERT_EQUAL(store_space_free(&sp), STORE_SPACE_UNKNOWN);
    TEST_ASSERT_OK(store_space_check(&sp, NULL));
}

static void test_store_space_size_text(void)
{
    char b[32];
    CU_ASSERT_STRING_EQUAL(store_space_size_text(b, sizeof(b), 0), "0 KiB");
    CU_ASSERT_STRING_EQUAL(store_space_size_text(b, sizeof(b), 512 * 1024), "512 KiB");
    CU_ASSERT_STRING_EQUAL(store_space_size_text(b, sizeof(b), 12 * MIB), "12 MiB");
    CU_ASSERT_STRING_EQUAL(store_space_size_text(b, sizeof(b), 10239 * MIB), "10239 MiB");
    CU_ASSERT_STRING_EQUAL(store_space_size_text(b, sizeof(b), 37 * 1024 * MIB + 512 * MIB),
                           "37.5 GiB");
}

int test_store_space_register(void);
int test_store_space_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_store_space_directory_of_the_database),
        TEST_CASE(test_store_space_refuses_below_min_free_with_reason),
        TEST_CASE(test_store_space_reads_the_real_filesystem),
        TEST_CASE(test_store_space_size_text),
    };
    return test_register_suite("store_space", space_suite_init, space_suite_cleanup, NULL, NULL,
                               tests, TEST_NUM_CASES(tests));
}
