// fuzz_cmp_msg: parses arbitrary input as a PKIMessage (nesting allowed two levels deep so the
// recursive path is reached), re-marshals every accepted message and traps unless the output
// is byte for byte what was consumed. The ProtectedPart span must also equal what the writer
// reports for the same header and body.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cmp/cmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(c)         \
    do {                      \
        if (!(c)) {           \
            __builtin_trap(); \
        }                     \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cm_arena arena;
    cm_arena_init(&arena, 0, 8u << 20);
    der_reader r;
    der_reader_init(&r, cm_span_make(data, size));
    der_reader before = r;
    cmp_msg m;
    cmp_parse_opts opts = {2, 0, false, 0, false};
    cm_result res = cmp_msg_parse(&arena, &m, &r, &opts);
    if (!cm_ok(res)) {
        // A failed parse leaves the reader where it was.
        FUZZ_CHECK(r.p == before.p && r.len == before.len);
        // Every failure maps to some PKIFailureInfo bit.
        FUZZ_CHECK(cm_code_failinfo(res.code) >= 0 && cm_code_failinfo(res.code) <= CM_FAIL_MAX);
    } else {
        FUZZ_CHECK(m.whole.p == data && m.whole.len <= size);
        der_builder b;
        der_builder_init(&b, m.whole.len + 16);
        cmp_msg_writer w;
        cmp_msg_writer_begin(&w, &b, &m.header.f, &m.body);
        cm_span pp = cmp_msg_writer_protected_part(&w);
        FUZZ_CHECK(pp.len == m.protected_part.len && memcmp(pp.p, m.protected_part.p, pp.len) == 0);
        cmp_msg_writer_finish(&w, m.has_protection ? &m.protection : NULL, m.protection_unused,
                              m.extra_certs, m.num_extra_certs);
        cm_span out;
        FUZZ_CHECK(cm_ok(der_builder_finish(&b, &out)));
        FUZZ_CHECK(out.len == m.whole.len && memcmp(out.p, m.whole.p, out.len) == 0);
        der_builder_cleanup(&b);
    }
    cm_arena_cleanup(&arena);
    return 0;
}
