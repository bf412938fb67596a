// fuzz_crmf: parses arbitrary input as CertReqMessages (RFC 4211) and as a PKCS#10
// CertificationRequest (RFC 2986). Whatever a parser accepts is marshalled again and must be
// the input byte for byte (the round-trip law, STYLE.md §2.6); so must every element whose
// whole span the parser kept (CertRequest, CertTemplate, POPO). Also feeds the input to the
// AlgorithmIdentifier and SubjectPublicKeyInfo parsers. No signatures are checked: those need
// keys the fuzzer cannot produce.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/crmf/crmf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(c)         \
    do {                      \
        if (!(c)) {           \
            __builtin_trap(); \
        }                     \
    } while (0)

// fuzz_same traps unless |b| finished cleanly with exactly |want|.
static void fuzz_same(der_builder *b, cm_span want)
{
    cm_span got;
    FUZZ_CHECK(cm_ok(der_builder_finish(b, &got)));
    FUZZ_CHECK(got.len == want.len && memcmp(got.p, want.p, want.len) == 0);
}

static void fuzz_msgs(cm_arena *arena, cm_span in)
{
    crmf_cert_req_msgs msgs;
    if (!cm_ok(crmf_msgs_from_der(arena, &msgs, in))) {
        return;
    }
    der_builder b;
    der_builder_init_arena(&b, arena, in.len + 16);
    crmf_msgs_marshal(&b, &msgs);
    fuzz_same(&b, in);
    for (size_t i = 0; i < msgs.num_msgs; i++) {
        const crmf_cert_req_msg *m = &msgs.msgs[i];
        der_builder_init_arena(&b, arena, m->req.whole.len);
        crmf_cert_request_marshal(&b, &m->req);
        fuzz_same(&b, m->req.whole);
        der_builder_init_arena(&b, arena, m->req.tmpl.whole.len);
        crmf_template_marshal(&b, &m->req.tmpl);
        fuzz_same(&b, m->req.tmpl.whole);
        if (m->popo.type != CRMF_POPO_ABSENT) {
            der_builder_init_arena(&b, arena, m->popo.whole.len);
            crmf_popo_marshal(&b, &m->popo);
            fuzz_same(&b, m->popo.whole);
        }
        // Walk the extensions the parser validated: the iterator must agree with it.
        crmf_ext_iter it;
        crmf_ext_iter_init(&it, m->req.tmpl.extensions);
        for (;;) {
            crmf_extension x;
            bool found;
            FUZZ_CHECK(cm_ok(crmf_ext_iter_next(&it, &x, &found)));
            if (!found) {
                break;
            }
        }
        if (m->req.tmpl.public_key.len > 0) {
            cm_span spki;
            crmf_spki again;
            FUZZ_CHECK(cm_ok(crmf_spki_to_der(arena, &spki, m->req.tmpl.public_key)));
            FUZZ_CHECK(cm_ok(crmf_spki_from_der(&again, spki)));
            FUZZ_CHECK(again.type == m->req.tmpl.spki.type);
        }
        crmf_sig_alg alg;
        if (m->popo.type == CRMF_POPO_SIGNATURE &&
            cm_ok(crmf_sig_alg_from_der(&alg, m->popo.alg))) {
            FUZZ_CHECK(alg.whole.len == m->popo.alg.len);
        }
    }
}

static void fuzz_csr(cm_arena *arena, cm_span in)
{
    crmf_csr csr;
    if (!cm_ok(crmf_csr_from_der(&csr, in))) {
        return;
    }
    der_builder b;
    der_builder_init_arena(&b, arena, in.len + 16);
    crmf_csr_marshal(&b, &csr);
    fuzz_same(&b, in);
    crmf_attr_iter it;
    crmf_attr_iter_init(&it, csr.attributes);
    for (;;) {
        crmf_attr a;
        bool found;
        FUZZ_CHECK(cm_ok(crmf_attr_iter_next(&it, &a, &found)));
        if (!found) {
            break;
        }
    }
}

static void fuzz_alg(cm_arena *arena, cm_span in)
{
    crmf_sig_alg alg;
    if (cm_ok(crmf_sig_alg_from_der(&alg, in))) {
        // Our own encoding of the descriptor parses back to the same descriptor.
        der_builder b;
        der_builder_init_arena(&b, arena, 64);
        crmf_sig_alg_marshal(&b, &alg);
        cm_span out;
        crmf_sig_alg back;
        FUZZ_CHECK(cm_ok(der_builder_finish(&b, &out)));
        FUZZ_CHECK(cm_ok(crmf_sig_alg_from_der(&back, out)));
        FUZZ_CHECK(back.kind == alg.kind && back.hash == alg.hash &&
                   back.mgf1_hash == alg.mgf1_hash && back.salt_len == alg.salt_len);
    }
    crmf_spki spki;
    if (cm_ok(crmf_spki_from_der(&spki, in))) {
        FUZZ_CHECK(spki.whole.len == in.len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cm_arena arena;
    cm_arena_init(&arena, 0, 16u << 20);
    cm_span in = cm_span_make(data, size);
    fuzz_msgs(&arena, in);
    fuzz_csr(&arena, in);
    fuzz_alg(&arena, in);
    cm_arena_cleanup(&arena);
    return 0;
}
