// Hand-built CMP requests (see test_hand.h).
#include "tests/support/test_hand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/ca/ca.h"
#include "engine/der/der_oid.h"

void test_hand_init(test_hand *x, cmp_body_type t, const cmp_protect_ctx *prot, cm_span recipient,
                    cm_span sender_kid, const char *secret)
{
    memset(x, 0, sizeof(*x));
    cm_arena_init(&x->a, 0, 0);
    x->prot = prot;
    if (RAND_bytes(x->tid, 16) != 1 || RAND_bytes(x->nonce, 16) != 1) {
        memset(x->tid, 0x5a, 16); // never happens; the builder still works
    }
    cmp_header_fields *h = &x->h;
    h->pvno = 2;
    h->recipient_name = recipient;
    h->has_message_time = true;
    h->message_time = cm_time_now();
    h->sender_kid = (cmp_opt_span){true, sender_kid};
    h->transaction_id = (cmp_opt_span){true, cm_span_make(x->tid, 16)};
    h->sender_nonce = (cmp_opt_span){true, cm_span_make(x->nonce, 16)};
    x->secret = secret;
    x->body.type = t;
    if (t == CMP_BODY_IR || t == CMP_BODY_CR || t == CMP_BODY_KUR || t == CMP_BODY_CCR) {
        x->body.u.req.msgs = x->msgs;
        x->body.u.req.num_msgs = 1;
    }
}

void test_hand_free(test_hand *x)
{
    cm_arena_cleanup(&x->a);
}

cm_span test_hand_copy(test_hand *x, const void *p, size_t len)
{
    uint8_t *c = cm_arena_alloc(&x->a, len > 0 ? len : 1);
    if (c == NULL) {
        return cm_span_make(NULL, 0);
    }
    memcpy(c, p, len);
    return cm_span_make(c, len);
}

cm_result test_hand_name(test_hand *x, cm_span *out, const char *dn)
{
    X509_NAME *n = X509_NAME_new();
    CM_ENSURE(n != NULL, CM_E_NOMEM);
    char buf[256];
    (void)snprintf(buf, sizeof(buf), "%s", dn);
    bool ok = true;
    for (char *save = NULL, *tok = strtok_r(buf, "/", &save); ok && tok != NULL;
         tok = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(tok, '=');
        ok = eq != NULL;
        if (ok) {
            *eq = '\0';
            ok = X509_NAME_add_entry_by_txt(n, tok, MBSTRING_UTF8, (const unsigned char *)eq + 1,
                                            -1, -1, 0) == 1;
        }
    }
    unsigned char *der = NULL;
    const int len = ok ? i2d_X509_NAME(n, &der) : -1;
    X509_NAME_free(n);
    CM_ENSURE(len > 0, CM_E_INVALID_ARG);
    *out = test_hand_copy(x, der, (size_t)len);
    OPENSSL_free(der);
    return cm_result_make(out->p != NULL ? CM_OK : CM_E_NOMEM);
}

cm_result test_hand_spki(test_hand *x, cm_span *out, EVP_PKEY *key)
{
    unsigned char *der = NULL;
    const int len = i2d_PUBKEY(key, &der);
    CM_ENSURE(len > 0, CM_E_CRYPTO);
    *out = test_hand_copy(x, der, (size_t)len);
    OPENSSL_free(der);
    return cm_result_make(out->p != NULL ? CM_OK : CM_E_NOMEM);
}

cm_span test_spki_body(cm_span spki)
{
    der_reader r, body;
    der_reader_init(&r, spki);
    if (!cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &body))) {
        return cm_span_make(NULL, 0);
    }
    return der_reader_rest(&body);
}

cm_result test_hand_sig_alg(test_hand *x, cm_span *out, EVP_PKEY *key)
{
    crmf_sig_alg alg;
    memset(&alg, 0, sizeof(alg));
    const crmf_key_type t = crmf_key_type_of(key);
    alg.kind = t == CRMF_KEY_ED25519 ? CRMF_SIG_ED25519
               : t == CRMF_KEY_RSA   ? CRMF_SIG_RSA_PKCS1
                                     : CRMF_SIG_ECDSA;
    alg.hash = t == CRMF_KEY_ED25519 ? CRMF_HASH_NONE : CRMF_HASH_SHA256;
    der_builder b;
    der_builder_init_arena(&b, &x->a, 64);
    crmf_sig_alg_marshal(&b, &alg);
    return der_builder_finish(&b, out);
}

cm_result test_hand_sign_data(test_hand *x, cm_span *out, EVP_PKEY *key, cm_span data)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    const EVP_MD *md = crmf_key_type_of(key) == CRMF_KEY_ED25519 ? NULL : EVP_sha256();
    size_t len = 0;
    uint8_t *sig = NULL;
    bool ok = m != NULL && EVP_DigestSignInit(m, NULL, md, NULL, key) == 1 &&
              EVP_DigestSign(m, NULL, &len, data.p, data.len) == 1;
    if (ok) {
        sig = cm_arena_alloc(&x->a, len);
        ok = sig != NULL && EVP_DigestSign(m, sig, &len, data.p, data.len) == 1;
    }
    EVP_MD_CTX_free(m);
    CM_ENSURE(ok, CM_E_CRYPTO);
    *out = cm_span_make(sig, len);
    return cm_result_make(CM_OK);
}

cm_result test_hand_template(test_hand *x, EVP_PKEY *key, const char *dn)
{
    crmf_cert_req_msg *m = &x->msgs[0];
    cm_span spki = {NULL, 0};
    CM_TRY(test_hand_name(x, &m->req.tmpl.subject, dn));
    CM_TRY(test_hand_spki(x, &spki, key));
    m->req.tmpl.public_key = test_spki_body(spki);
    m->popo.type = CRMF_POPO_SIGNATURE;
    x->popo_key = key;
    return cm_result_make(CM_OK);
}

cm_result test_hand_ckg(test_hand *x, EVP_PKEY *alg_of, const char *dn)
{
    crmf_cert_req_msg *m = &x->msgs[0];
    CM_TRY(test_hand_name(x, &m->req.tmpl.subject, dn));
    m->req.tmpl.public_key = cm_span_make(NULL, 0);
    if (alg_of != NULL) {
        // SubjectPublicKeyInfo's body: the key's AlgorithmIdentifier and an empty BIT STRING.
        cm_span spki = {NULL, 0};
        CM_TRY(test_hand_spki(x, &spki, alg_of));
        der_reader r, seq;
        cm_span alg;
        der_reader_init(&r, spki);
        CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &seq));
        CM_TRY(der_get_element(&seq, DER_TAG_SEQUENCE, &alg));
        der_builder b;
        der_builder_init_arena(&b, &x->a, alg.len + 4);
        der_put_raw(&b, alg);
        der_put_bitstring(&b, cm_span_make(NULL, 0), 0);
        CM_TRY(der_builder_finish(&b, &m->req.tmpl.public_key));
    }
    m->popo.type = CRMF_POPO_ABSENT;
    x->popo_key = NULL;
    return cm_result_make(CM_OK);
}

cm_result test_hand_priv_key_popo(test_hand *x, EVP_PKEY *key, const char *dn, bool agreement,
                                  uint32_t choice, cm_span body)
{
    CM_TRY(test_hand_template(x, key, dn));
    crmf_cert_req_msg *m = &x->msgs[0];
    der_builder b;
    der_builder_init_arena(&b, &x->a, body.len + 8);
    // thisMessage, subsequentMessage and dhMAC are primitive, agreeMAC and encryptedKey
    // constructed (RFC 4211 §4.2, IMPLICIT TAGS).
    if (choice >= CRMF_PRIV_AGREE_MAC) {
        der_put_header(&b, DER_CONTEXT_CONS(choice), body.len);
        der_put_raw(&b, body);
    } else {
        der_put_tlv(&b, DER_CONTEXT(choice), body);
    }
    CM_TRY(der_builder_finish(&b, &m->popo.priv_key));
    m->popo.type = agreement ? CRMF_POPO_KEY_AGREEMENT : CRMF_POPO_KEY_ENCIPHERMENT;
    m->popo.priv_key_choice = choice;
    x->popo_key = NULL;
    return cm_result_make(CM_OK);
}

cm_result test_hand_encr_cert(test_hand *x, EVP_PKEY *key, const char *dn, bool agreement)
{
    static const uint8_t k_encr_cert[] = {0x00}; // SubsequentMessage encrCert (0)
    return test_hand_priv_key_popo(x, key, dn, agreement, CRMF_PRIV_SUBSEQUENT,
                                   cm_span_make(k_encr_cert, sizeof(k_encr_cert)));
}

cm_result test_hand_encrypted_key(test_hand *x, EVP_PKEY *key, EVP_PKEY *package_key,
                                  const char *dn, bool agreement, const char *password,
                                  uint64_t iterations)
{
    uint8_t *pkg = NULL;
    size_t pkg_len = 0;
    CM_TRY(cmp_key_package_new(&pkg, &pkg_len, package_key != NULL ? package_key : key));
    crmf_crypto c;
    cm_result r = crmf_crypto_init(&c, NULL, NULL);
    der_builder b;
    der_builder_init_arena(&b, &x->a, pkg_len + 512);
    const cmp_cms_recipient rc = {.kind = CMP_CMS_PWRI,
                                  .password = cm_span_make(password, strlen(password)),
                                  .iterations = iterations};
    cm_span env = {NULL, 0};
    if (cm_ok(r)) {
        r = cmp_cms_seal(&c, &b, DER_TAG_SEQUENCE, &rc, CM_SPAN_LIT(DER_OID_CT_KP_AKEY_PACKAGE),
                         cm_span_make(pkg, pkg_len), NULL);
    }
    crmf_crypto_cleanup(&c);
    cmp_cms_secret_free(pkg, pkg_len);
    if (cm_ok(r)) {
        r = der_builder_finish(&b, &env);
    }
    CM_TRY(r);
    der_reader rd;
    cm_span body;
    der_reader_init(&rd, env);
    CM_TRY(der_get_tlv(&rd, DER_TAG_SEQUENCE, &body));
    return test_hand_priv_key_popo(x, key, dn, agreement, CRMF_PRIV_ENCRYPTED_KEY, body);
}

cm_result test_hand_extensions(test_hand *x, const char *const *names, const char *const *values,
                               size_t n)
{
    der_builder b;
    der_builder_init_arena(&b, &x->a, 256);
    for (size_t i = 0; i < n; i++) {
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, NULL, names[i], values[i]);
        unsigned char *der = NULL;
        const int len = e != NULL ? i2d_X509_EXTENSION(e, &der) : -1;
        X509_EXTENSION_free(e);
        CM_ENSURE(len > 0, CM_E_INVALID_ARG);
        der_put_raw(&b, cm_span_make(der, (size_t)len));
        OPENSSL_free(der);
    }
    return der_builder_finish(&b, &x->msgs[0].req.tmpl.extensions);
}

cm_result test_hand_sign(test_hand *x, EVP_PKEY *key, cm_span cert)
{
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, cert));
    x->sig_key = key;
    x->certs[0] = cert;
    x->num_certs = 1;
    x->h.sender_name = f.subject;
    // senderKID: the certificate's subject key identifier when it has one (RFC 9483 §3.1), as
    // openssl cmp sends it; none otherwise.
    x->h.sender_kid.present = false;
    const unsigned char *q = cert.p;
    X509 *xc = d2i_X509(NULL, &q, (long)cert.len);
    CM_ENSURE(xc != NULL, CM_E_INVALID_ARG);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(xc);
    if (ski != NULL && ASN1_STRING_length(ski) > 0) {
        const size_t n = (size_t)ASN1_STRING_length(ski);
        uint8_t *kid = cm_arena_alloc(&x->a, n);
        if (kid == NULL) {
            X509_free(xc);
            CM_BAIL(CM_E_NOMEM);
        }
        memcpy(kid, ASN1_STRING_get0_data(ski), n);
        x->h.sender_kid = (cmp_opt_span){true, cm_span_make(kid, n)};
    }
    X509_free(xc);
    return cm_result_make(CM_OK);
}

cm_result test_hand_old_cert_id(test_hand *x, cm_span issuer, cm_span serial)
{
    // CertId ::= SEQUENCE { issuer GeneralName, serialNumber INTEGER }  (RFC 4211 §6.5)
    der_builder b;
    der_builder_init_arena(&b, &x->a, 256);
    der_mark seq, gn;
    der_open(&b, &seq, DER_TAG_SEQUENCE);
    der_open(&b, &gn, DER_CONTEXT_CONS(4));
    der_put_raw(&b, issuer);
    der_close(&b, &gn);
    der_put_tlv(&b, DER_TAG_INTEGER, serial);
    der_close(&b, &seq);
    CM_TRY(der_builder_finish(&b, &x->ctrl[0].value));
    x->ctrl[0].oid = CM_SPAN_LIT(DER_OID_REGCTRL_OLD_CERT_ID);
    x->msgs[0].req.controls = x->ctrl;
    x->msgs[0].req.num_controls = 1;
    return cm_result_make(CM_OK);
}

void test_hand_add_info(test_hand *x, cmp_itav it)
{
    if (x->h.num_general_info < sizeof(x->ginfo) / sizeof(x->ginfo[0])) {
        x->ginfo[x->h.num_general_info++] = it;
        x->h.general_info = x->ginfo;
    }
}

cm_result test_hand_orig(test_hand *x, cm_span orig)
{
    // OrigPKIMessageValue ::= PKIMessages ::= SEQUENCE SIZE (1..MAX) OF PKIMessage
    der_builder b;
    der_builder_init_arena(&b, &x->a, orig.len + 8);
    der_mark m;
    der_open_hint(&b, &m, DER_TAG_SEQUENCE, 3);
    der_put_raw(&b, orig);
    der_close(&b, &m);
    cm_span v;
    CM_TRY(der_builder_finish(&b, &v));
    test_hand_add_info(x, (cmp_itav){CM_SPAN_LIT(DER_OID_IT_ORIG_PKI_MESSAGE), v});
    return cm_result_make(CM_OK);
}

cm_result test_hand_rr(test_hand *x, cm_span cert, int reason)
{
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, cert));
    x->rd.tmpl.issuer = f.issuer;
    x->rd.tmpl.serial = f.serial;
    if (reason >= 0) {
        // Extensions { Extension { id-ce-cRLReasons, OCTET STRING { ENUMERATED reason } } }
        der_builder b;
        der_builder_init_arena(&b, &x->a, 32);
        der_mark exts, ext, os;
        der_open(&b, &exts, DER_TAG_SEQUENCE);
        der_open(&b, &ext, DER_TAG_SEQUENCE);
        der_put_oid_lit(&b, DER_OID_CE_CRL_REASON);
        der_open(&b, &os, DER_TAG_OCTET_STRING);
        const uint8_t e = (uint8_t)reason;
        der_put_tlv(&b, DER_TAG_ENUMERATED, cm_span_make(&e, 1));
        der_close(&b, &os);
        der_close(&b, &ext);
        der_close(&b, &exts);
        CM_TRY(der_builder_finish(&b, &x->rd.crl_entry_details));
    }
    x->body.u.rr.items = &x->rd;
    x->body.u.rr.num = 1;
    return cm_result_make(CM_OK);
}

cm_result test_hand_cert_conf(test_hand *x, cm_span tid, cm_span recip_nonce, cm_span cert,
                              int64_t id)
{
    cmp_digests d;
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len = 0;
    cm_result r = cmp_digests_init(&d);
    if (cm_ok(r)) {
        r = cmp_cert_hash(&d, hash, &hash_len, cert, NULL);
    }
    cmp_digests_cleanup(&d);
    CM_TRY(r);
    x->cs.cert_hash = test_hand_copy(x, hash, hash_len);
    x->cs.cert_req_id = id;
    x->body.u.conf.items = &x->cs;
    x->body.u.conf.num = 1;
    x->h.transaction_id = (cmp_opt_span){true, tid};
    x->h.recip_nonce = (cmp_opt_span){true, recip_nonce};
    return cm_result_make(CM_OK);
}

cm_result test_hand_nested(test_hand *x, const cm_span *inner, size_t n)
{
    cm_span *ders = cm_arena_alloc(&x->a, (n > 0 ? n : 1) * sizeof(cm_span));
    CM_ENSURE(ders != NULL, CM_E_NOMEM);
    for (size_t i = 0; i < n; i++) {
        ders[i] = test_hand_copy(x, inner[i].p, inner[i].len);
        CM_ENSURE(ders[i].p != NULL, CM_E_NOMEM);
    }
    x->body.type = CMP_BODY_NESTED;
    x->body.u.nested.msgs = NULL;
    x->body.u.nested.ders = ders;
    x->body.u.nested.num = n;
    return cm_result_make(CM_OK);
}

cm_result test_hand_poll(test_hand *x, cm_span tid, cm_span recip_nonce, int64_t id, size_t num)
{
    CM_ENSURE(num <= 2, CM_E_INVALID_ARG);
    x->body.type = CMP_BODY_POLL_REQ;
    x->poll_ids[0] = id;
    x->poll_ids[1] = id;
    x->body.u.poll_req.cert_req_ids = x->poll_ids;
    x->body.u.poll_req.num = num;
    x->h.transaction_id = (cmp_opt_span){true, tid};
    x->h.recip_nonce = (cmp_opt_span){recip_nonce.len > 0, recip_nonce};
    return cm_result_make(CM_OK);
}

// test_hand_sign_popos signs each CertRequest whose POPO waits for it.
static cm_result test_hand_sign_popos(test_hand *x)
{
    for (size_t i = 0; i < x->body.u.req.num_msgs; i++) {
        crmf_cert_req_msg *m = &x->msgs[i];
        if (m->popo.type != CRMF_POPO_SIGNATURE || m->popo.signature.len != 0 ||
            x->popo_key == NULL) {
            continue;
        }
        der_builder b;
        der_builder_init_arena(&b, &x->a, 512);
        crmf_cert_request_marshal(&b, &m->req);
        cm_span cr = {NULL, 0}, sig = {NULL, 0};
        CM_TRY(der_builder_finish(&b, &cr));
        if (x->popo_alg.len != 0) {
            m->popo.alg = x->popo_alg;
        } else {
            CM_TRY(test_hand_sig_alg(x, &m->popo.alg, x->popo_key));
        }
        CM_TRY(test_hand_sign_data(x, &sig, x->popo_key, cr));
        if (x->popo_corrupt && sig.p != NULL && sig.len > 0) {
            ((uint8_t *)(uintptr_t)sig.p)[sig.len / 2] ^= 0x01;
        }
        m->popo.signature = sig;
    }
    return cm_result_make(CM_OK);
}

cm_result test_hand_build(test_hand *x, uint8_t **out, size_t *out_len)
{
    const cmp_body_type t = x->body.type;
    if (t == CMP_BODY_IR || t == CMP_BODY_CR || t == CMP_BODY_KUR || t == CMP_BODY_CCR) {
        CM_TRY(test_hand_sign_popos(x));
    }
    cmp_mac_key key;
    memset(&key, 0, sizeof(key));
    const bool mac = x->sig_key == NULL;
    cm_result r = cm_result_make(CM_OK);
    if (x->prot_mode != TEST_PROT_NONE) {
        der_builder ab;
        der_builder_init_arena(&ab, &x->a, 256);
        if (mac) {
            const cm_span s = cm_span_make(x->secret, strlen(x->secret));
            const uint64_t it = x->mac_iterations != 0 ? x->mac_iterations : x->pbmac1 ? 2000 : 500;
            r = x->pbmac1 ? cmp_mac_key_new_pbmac1(x->prot, &key, s, CMP_HASH_SHA256,
                                                   CMP_HASH_SHA256, it, 16, 32)
                          : cmp_mac_key_new_pbm(x->prot, &key, s, CMP_HASH_SHA256, CMP_HASH_SHA256,
                                                it, 16);
            cmp_mac_key_put_alg(&ab, &key);
        } else {
            cm_span alg;
            r = test_hand_sig_alg(x, &alg, x->sig_key);
            der_put_raw(&ab, alg);
        }
        if (cm_ok(r)) {
            r = der_builder_finish(&ab, &x->h.protection_alg);
        }
    }
    const cm_span alg = x->h.protection_alg;
    if (x->prot_mode == TEST_PROT_BITS_ONLY) {
        x->h.protection_alg = cm_span_make(NULL, 0);
    }
    der_builder b;
    der_builder_init(&b, 4096);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &x->h, &x->body);
    const cm_span pp = cmp_msg_writer_protected_part(&w);
    cm_span prot = cm_span_make(NULL, 0);
    const bool with_prot = x->prot_mode == TEST_PROT_NORMAL || x->prot_mode == TEST_PROT_BITS_ONLY;
    if (cm_ok(r) && pp.len == 0) {
        r = cm_result_make(CM_E_INVALID_ARG); // the body did not marshal
    }
    if (cm_ok(r) && with_prot) {
        if (mac) {
            uint8_t m[64];
            size_t m_len = 0;
            r = cmp_mac_compute(x->prot, m, sizeof(m), &m_len, &key, pp);
            prot = test_hand_copy(x, m, m_len);
        } else {
            cm_span tbs;
            r = cmp_protect_sign_input(&x->a, &tbs, pp);
            if (cm_ok(r)) {
                r = test_hand_sign_data(x, &prot, x->sig_key, tbs);
            }
        }
    }
    x->h.protection_alg = alg;
    cmp_msg_writer_finish(&w, with_prot ? &prot : NULL, 0, x->certs, x->num_certs);
    cmp_mac_key_cleanse(&key);
    if (!cm_ok(r)) {
        der_builder_cleanup(&b);
        return r;
    }
    return der_builder_take(&b, out, out_len);
}

bool test_hand_make_root(X509 **out, hsm_pool *pool, const hsm_key *key, const char *cn,
                         uint16_t serial, const char *pem_path)
{
    if (out != NULL) {
        *out = NULL;
    }
    // The subject: CN=|cn|, as OpenSSL encodes it (a UTF8String).
    X509_NAME *xn = X509_NAME_new();
    unsigned char *name = NULL;
    const int name_len =
        xn != NULL && X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_UTF8, (const unsigned char *)cn,
                                                 -1, -1, 0) == 1
            ? i2d_X509_NAME(xn, &name)
            : -1;
    X509_NAME_free(xn);
    const uint8_t k_serial[] = {(uint8_t)(serial >> 8), (uint8_t)serial};
    der_builder alg_b, tbs_b, cert_b;
    der_builder_init(&alg_b, 64);
    der_builder_init(&tbs_b, 1024);
    der_builder_init(&cert_b, 2048);
    hsm_sig_alg_marshal(&alg_b, HSM_SIG_ECDSA_SHA256);
    cm_span alg, tbs, cert;
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    const int64_t now = cm_time_now();
    bool ok =
        name_len > 0 && serial < 0x8000 && cm_ok(der_builder_finish(&alg_b, &alg)) &&
        cm_ok(ca_root_tbs_build(&tbs_b, cm_span_make(name, (size_t)name_len),
                                hsm_key_get0_spki(key), cm_span_make(k_serial, sizeof(k_serial)),
                                now - 3600, now + 3650 * 86400LL, alg)) &&
        cm_ok(der_builder_finish(&tbs_b, &tbs)) &&
        cm_ok(hsm_sign_sync(pool, &sig_len, sig, sizeof(sig), key, HSM_SIG_ECDSA_SHA256, tbs)) &&
        cm_ok(ca_signed_assemble(&cert_b, tbs, alg, cm_span_make(sig, sig_len))) &&
        cm_ok(der_builder_finish(&cert_b, &cert));
    X509 *x = NULL;
    if (ok) {
        const unsigned char *q = cert.p;
        x = d2i_X509(NULL, &q, (long)cert.len);
        FILE *f = fopen(pem_path, "w");
        ok = x != NULL && f != NULL && PEM_write_X509(f, x) == 1;
        if (f != NULL) {
            ok &= fclose(f) == 0;
        }
    }
    OPENSSL_free(name);
    der_builder_cleanup(&alg_b);
    der_builder_cleanup(&tbs_b);
    der_builder_cleanup(&cert_b);
    if (ok && out != NULL) {
        *out = x;
    } else {
        X509_free(x);
    }
    return ok;
}
