// --verify, after the clock stops: the protection of every kept response (a signature by
// extraCerts[0] or the CA, or the MAC with --secret) and the issued certificate's signature
// against --ca. A failure moves the transaction from ok to its failure's count.
#include <string.h>

#include <openssl/x509.h>

#include "bench/certmint_bench.h"
#include "engine/ca/ca.h"
#include "engine/der/der_oid.h"

bench_fail bench_check_ckg(bench_run *run, const cmp_msg *m)
{
    const cmp_cert_response *cr = &m->body.u.rep.responses[0];
    ca_cert_fields f;
    cm_span env;
    if (cr->private_key.len == 0 || !cm_ok(ca_cert_fields_parse(&f, cr->cert)) ||
        !cm_ok(cmp_encrypted_key_body(&env, cr->private_key))) {
        return BENCH_FAIL_PRIVATE_KEY;
    }
    // The range certmint's central_keygen_kdf_iterations takes (not the MAC's limits: a key
    // is worth more iterations than a message).
    const cmp_cms_opener o = {
        .password = bench_mac_secret(run->o), .min_iterations = 1000, .max_iterations = 10000000};
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    cm_span ctype, pkg_type, pkg;
    cm_result r = cmp_cms_open(&run->crypto, &plain, &plain_len, &ctype, env, &o, NULL);
    if (cm_ok(r) && !der_oid_is(ctype, DER_OID_CT_SIGNED_DATA)) {
        r = cm_result_make(CMP_E_CMS_MALFORMED);
    }
    if (cm_ok(r)) {
        r = cmp_signed_data_content(&pkg_type, &pkg, cm_span_make(plain, plain_len));
    }
    if (cm_ok(r) && !der_oid_is(pkg_type, DER_OID_CT_KP_AKEY_PACKAGE)) {
        r = cm_result_make(CMP_E_CMS_MALFORMED);
    }
    EVP_PKEY *key = NULL;
    if (cm_ok(r)) {
        r = cmp_key_package_key(&run->crypto, &key, pkg, f.spki); // the certificate's key?
    }
    EVP_PKEY_free(key);
    cmp_cms_secret_free(plain, plain_len);
    return cm_ok(r) ? BENCH_OK : BENCH_FAIL_PRIVATE_KEY;
}

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
