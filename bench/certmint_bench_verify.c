// --verify, after the clock stops: the protection of every kept response (a signature by
// extraCerts[0] or the CA, or the MAC with --secret) and the issued certificate's signature
// against --ca. A failure moves the transaction from ok to its failure's count.
#include <string.h>

#include <openssl/x509.h>

#include "bench/certmint_bench.h"

// bench_verify_protection parses the response |der| into |m| and checks its protection: a
// signature by extraCerts[0] (or the CA), or the MAC with --secret.
static bench_fail bench_verify_protection(bench_run *run, cmp_msg *out, cm_span der)
{
    bench_ctx *ctx = run->ctx;
    cm_arena_reset(&run->arena);
    cmp_msg m;
    if (!cm_ok(cmp_msg_from_der(&run->arena, &m, der, NULL)) || !m.has_protection) {
        return BENCH_FAIL_PROTECTION;
    }
    cmp_prot_kind kind;
    if (!cm_ok(cmp_protect_kind(&kind, m.header.f.protection_alg))) {
        return BENCH_FAIL_PROTECTION;
    }
    if (kind == CMP_PROT_SIGNATURE) {
        const cm_span signer = m.num_extra_certs > 0 ? m.extra_certs[0] : ctx->ca_der;
        if (!cm_ok(cmp_protect_verify_sig(&run->crypto, m.header.f.protection_alg, m.protected_part,
                                          m.protection, m.protection_unused, signer, NULL))) {
            return BENCH_FAIL_PROTECTION;
        }
    } else {
        if (ctx->o->secret == NULL) {
            return BENCH_FAIL_PROTECTION; // MAC-protected answer to a signed request
        }
        cmp_mac_key key;
        const cm_result r = cmp_protect_verify_mac(
            ctx->prot, &key, m.header.f.protection_alg, bench_mac_secret(ctx->o),
            bench_mac_kind(ctx->o), m.protected_part, m.protection, m.protection_unused, NULL);
        cmp_mac_key_cleanse(&key);
        if (!cm_ok(r)) {
            return BENCH_FAIL_PROTECTION;
        }
    }
    *out = m;
    return BENCH_OK;
}

// bench_verify_one checks the protection of the response |der| and the certificate's
// signature against --ca.
static bench_fail bench_verify_one(bench_run *run, cm_span der)
{
    cmp_msg m;
    const bench_fail pf = bench_verify_protection(run, &m, der);
    if (pf != BENCH_OK) {
        return pf;
    }
    if (m.body.type == CMP_BODY_GENP || m.body.type == CMP_BODY_RP) {
        return BENCH_OK; // no certificate to check
    }
    const cm_span cert = m.body.u.rep.responses[0].cert;
    const unsigned char *p = cert.p;
    X509 *x = d2i_X509(NULL, &p, (long)cert.len);
    const bool ok = x != NULL && X509_verify(x, X509_get0_pubkey(run->ctx->ca)) == 1;
    X509_free(x);
    return ok ? BENCH_OK : BENCH_FAIL_CERT_SIGNATURE;
}

void bench_verify(bench_run *run, size_t first, size_t end)
{
    for (size_t i = first; i < end; i++) {
        if (run->rsp[i] == NULL) {
            continue;
        }
        bench_fail f = bench_verify_one(run, cm_span_make(run->rsp[i], run->rsp_len[i]));
        if (f == BENCH_OK && run->conf_rsp != NULL) {
            // ir-confirm: the pkiConf must be protected too (RFC 9483 §4.1.1).
            cmp_msg m;
            f = run->conf_rsp[i] == NULL
                    ? BENCH_FAIL_PROTECTION
                    : bench_verify_protection(run, &m,
                                              cm_span_make(run->conf_rsp[i], run->conf_rsp_len[i]));
        }
        if (f != BENCH_OK) {
            run->fails[BENCH_OK]--;
            run->fails[f]++;
        }
    }
}
