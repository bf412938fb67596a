// Certificates and requests built with the ca and der modules and signed through the token.
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tools/certmint/tool.h"

bool tool_parse_dn(const char *text, uint8_t **out, size_t *out_len)
{
    X509_NAME *n = X509_NAME_new();
    char *copy = strdup(text);
    bool ok = n != NULL && copy != NULL && text[0] == '/';
    char *save = NULL;
    for (char *part = ok ? strtok_r(copy + 1, "/", &save) : NULL; ok && part != NULL;
         part = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(part, '=');
        ok = eq != NULL && eq != part && eq[1] != '\0';
        if (ok) {
            *eq = '\0';
            ok = X509_NAME_add_entry_by_txt(n, part, MBSTRING_UTF8, (unsigned char *)(eq + 1), -1,
                                            -1, 0) == 1;
        }
    }
    unsigned char *der = NULL;
    int len = ok ? i2d_X509_NAME(n, &der) : -1;
    X509_NAME_free(n);
    free(copy);
    if (len <= 2) {
        OPENSSL_free(der);
        fprintf(stderr, "certmint: --subject '%s' is not a DN like /CN=Example Root CA/O=Example\n",
                text);
        return false;
    }
    *out = (uint8_t *)der;
    *out_len = (size_t)len;
    return true;
}

bool tool_issue(hsm_pool *pool, const hsm_key *signer, hsm_sig_alg alg, const ca_authority *ca,
                const hsm_key *subject_key, cm_span name, int days, uint32_t cmp_flags,
                uint8_t **out, size_t *out_len)
{
    uint8_t serial[CA_SERIAL_LEN];
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    const int64_t now = cm_time_now();
    der_builder ab, tb, cb;
    der_builder_init(&ab, 64);
    der_builder_init(&tb, 1024);
    der_builder_init(&cb, 2048);
    hsm_sig_alg_marshal(&ab, alg);
    cm_span alg_der, tbs;
    cm_result res = ca_serial_new(serial);
    if (cm_ok(res)) {
        res = der_builder_finish(&ab, &alg_der);
    }
    if (cm_ok(res)) {
        const cm_span sn = cm_span_make(serial, sizeof(serial));
        const cm_span spki = hsm_key_get0_spki(subject_key);
        const int64_t nb = now - 300, na = now + (int64_t)days * 86400;
        res = ca == NULL ? ca_root_tbs_build(&tb, name, spki, sn, nb, na, alg_der)
                         : ca_cmp_tbs_build_ex(ca, &tb, name, spki, sn, nb, na, alg_der, cmp_flags);
    }
    if (cm_ok(res)) {
        res = der_builder_finish(&tb, &tbs);
    }
    if (cm_ok(res)) {
        res = hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), signer, alg, tbs);
    }
    if (cm_ok(res)) {
        res = ca_signed_assemble(&cb, tbs, alg_der, cm_span_make(sig, sig_len));
    }
    uint8_t *buf = NULL;
    if (cm_ok(res)) {
        res = der_builder_take(&cb, &buf, out_len);
    }
    der_builder_cleanup(&ab);
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    if (!cm_ok(res)) {
        fprintf(stderr, "certmint: cannot build the %s certificate: %s\n",
                ca == NULL ? "root" : "CMP protection", cm_result_name(res));
        return false;
    }
    *out = buf;
    return true;
}

bool tool_csr_write(hsm_pool *pool, const hsm_key *key, hsm_sig_alg alg, cm_span name,
                    const char *path)
{
    der_builder ib, ab, cb;
    der_builder_init(&ib, 1024);
    der_builder_init(&ab, 64);
    der_builder_init(&cb, 2048);
    // CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) }, subject Name,
    //     subjectPKInfo SubjectPublicKeyInfo, attributes [0] Attributes }
    der_mark m;
    der_open(&ib, &m, DER_TAG_SEQUENCE);
    der_put_i64(&ib, 0);
    der_put_raw(&ib, name);
    der_put_raw(&ib, hsm_key_get0_spki(key));
    der_put_tlv(&ib, DER_CONTEXT_CONS(0), cm_span_make(NULL, 0));
    der_close(&ib, &m);
    hsm_sig_alg_marshal(&ab, alg);
    cm_span info, alg_der, csr;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    cm_result r = der_builder_finish(&ib, &info);
    if (cm_ok(r)) {
        r = der_builder_finish(&ab, &alg_der);
    }
    if (cm_ok(r)) {
        r = hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), key, alg, info);
    }
    if (cm_ok(r)) {
        // CertificationRequest has the shape of a Certificate: SEQUENCE { info, alg, BIT STRING }.
        r = ca_signed_assemble(&cb, info, alg_der, cm_span_make(sig, sig_len));
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&cb, &csr);
    }
    bool ok = false;
    if (cm_ok(r)) {
        const unsigned char *q = csr.p;
        X509_REQ *req = d2i_X509_REQ(NULL, &q, (long)csr.len);
        BIO *bio = BIO_new(BIO_s_mem());
        char *pem = NULL;
        ok = req != NULL && bio != NULL && PEM_write_bio_X509_REQ(bio, req) == 1;
        const long n = ok ? BIO_get_mem_data(bio, &pem) : 0;
        ok = ok && n > 0 && tool_write_file(path, pem, (size_t)n, 0644);
        BIO_free(bio);
        X509_REQ_free(req);
    }
    der_builder_cleanup(&ib);
    der_builder_cleanup(&ab);
    der_builder_cleanup(&cb);
    if (!ok) {
        fprintf(stderr, "certmint init: cannot write the CA request %s: %s\n", path,
                cm_result_name(r));
    }
    return ok;
}

bool tool_write_pem_cert(const char *path, const uint8_t *der, size_t len)
{
    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, (long)len);
    BIO *bio = BIO_new(BIO_s_mem());
    bool ok = x != NULL && bio != NULL && PEM_write_bio_X509(bio, x) == 1;
    char *pem = NULL;
    long n = ok ? BIO_get_mem_data(bio, &pem) : 0;
    ok = ok && n > 0 && tool_write_file(path, pem, (size_t)n, 0644);
    BIO_free(bio);
    X509_free(x);
    return ok;
}
