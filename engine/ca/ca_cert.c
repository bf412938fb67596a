// CA material, serial numbers, the TBSCertificate builder and signed-object assembly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/ca/ca_internal.h"
#include "engine/der/der_oid.h"

// ---------------------------------------------------------------------------------------------
// Certificates as spans

// Certificate ::= SEQUENCE {
//     tbsCertificate       TBSCertificate,
//     signatureAlgorithm   AlgorithmIdentifier,
//     signatureValue       BIT STRING }
// TBSCertificate ::= SEQUENCE {
//     version         [0] EXPLICIT Version DEFAULT v1,
//     serialNumber         CertificateSerialNumber,
//     signature            AlgorithmIdentifier,
//     issuer               Name,
//     validity             Validity,
//     subject              Name,
//     subjectPublicKeyInfo SubjectPublicKeyInfo,
//     ... }                                                      -- RFC 5280 §4.1
cm_result ca_cert_fields_parse(ca_cert_fields *out, cm_span cert)
{
    der_reader r, c, tbs;
    der_reader_init(&r, cert);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &c));
    CM_TRY(der_expect_end(&r));
    CM_TRY(der_enter(&c, DER_TAG_SEQUENCE, &tbs));
    bool present;
    CM_TRY(der_get_optional(&tbs, DER_CONTEXT_CONS(0), NULL, &present));
    cm_span alg;
    CM_TRY(der_get_int_span(&tbs, &out->serial));
    CM_TRY(der_get_element(&tbs, DER_TAG_SEQUENCE, &alg));
    CM_TRY(der_get_element(&tbs, DER_TAG_SEQUENCE, &out->issuer));
    CM_TRY(der_get_element(&tbs, DER_TAG_SEQUENCE, &out->validity));
    CM_TRY(der_get_element(&tbs, DER_TAG_SEQUENCE, &out->subject));
    CM_TRY(der_get_element(&tbs, DER_TAG_SEQUENCE, &out->spki));
    return cm_result_make(CM_OK);
}

// ca_validity_parse reads Validity ::= SEQUENCE { notBefore Time, notAfter Time } (RFC 5280
// §4.1).
static cm_result ca_validity_parse(cm_span validity, int64_t *out_not_before,
                                   int64_t *out_not_after)
{
    der_reader r, v;
    der_reader_init(&r, validity);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &v));
    CM_TRY(der_expect_end(&r));
    CM_TRY(der_get_time(&v, out_not_before));
    CM_TRY(der_get_time(&v, out_not_after));
    return der_expect_end(&v);
}

void ca_put_extension(der_builder *b, cm_span oid, bool critical, cm_span value)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, oid);
    if (critical) {
        der_put_bool(b, true);
    }
    der_put_octets(b, value);
    der_close(b, &m);
}

// ca_key_bits returns the subjectPublicKey BIT STRING contents of any SPKI.
static cm_result ca_key_bits(cm_span spki, cm_span *out)
{
    der_reader r, seq;
    der_reader_init(&r, spki);
    cm_span alg;
    uint8_t unused;
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_element(&seq, DER_TAG_SEQUENCE, &alg));
    CM_TRY(der_get_bitstring(&seq, out, &unused));
    return der_expect_end(&seq);
}

// ca_sha1 computes a method-1 key identifier (RFC 5280 §4.2.1.2).
static cm_result ca_sha1(const EVP_MD *md, uint8_t out[20], cm_span data)
{
    unsigned int len = 0;
    CM_TRY_OSSL(EVP_Digest(data.p, data.len, out, &len, md, NULL), CM_E_CRYPTO);
    CM_ENSURE(len == 20, CM_E_CRYPTO);
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// CA material

static uint8_t *ca_x509_der(X509 *x, size_t *out_len)
{
    unsigned char *der = NULL;
    const int len = i2d_X509(x, &der);
    if (len <= 0) {
        return NULL;
    }
    uint8_t *copy = malloc((size_t)len);
    if (copy != NULL) {
        memcpy(copy, der, (size_t)len);
        *out_len = (size_t)len;
    }
    OPENSSL_free(der);
    return copy;
}

// AuthorityKeyIdentifier ::= SEQUENCE {
//     keyIdentifier             [0] KeyIdentifier            OPTIONAL,
//     authorityCertIssuer       [1] GeneralNames             OPTIONAL,
//     authorityCertSerialNumber [2] CertificateSerialNumber  OPTIONAL }
//                                                             -- RFC 5280 §4.2.1.1
static cm_result ca_make_aki(ca_authority *ca)
{
    uint8_t value[80];
    der_builder vb;
    der_builder_init_fixed(&vb, value, sizeof(value));
    der_mark m;
    der_open(&vb, &m, DER_TAG_SEQUENCE);
    der_put_tlv(&vb, DER_CONTEXT(0), cm_span_make(ca->ski, ca->ski_len));
    der_close(&vb, &m);
    cm_span v;
    CM_TRY(der_builder_finish(&vb, &v));
    der_builder b;
    der_builder_init_fixed(&b, ca->aki_ext, sizeof(ca->aki_ext));
    ca_put_extension(&b, CM_SPAN_LIT(DER_OID_CE_AUTHORITY_KEY_ID), false, v);
    cm_span e;
    CM_TRY(der_builder_finish(&b, &e));
    ca->aki_ext_len = e.len;
    return cm_result_make(CM_OK);
}

static cm_result ca_load_chain(ca_authority *ca, char *err, size_t err_cap, const char *path)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        ca_errf(err, err_cap, "%s: cannot open the chain file", path);
        CM_BAIL(CA_E_CONFIG);
    }
    cm_result res = cm_result_make(CM_OK);
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (ca->num_chain == CA_MAX_CHAIN) {
            ca_errf(err, err_cap, "%s: more than %u certificates", path, CA_MAX_CHAIN);
            res = cm_result_make(CA_E_CONFIG);
        } else {
            size_t len = 0;
            ca->chain[ca->num_chain] = ca_x509_der(x, &len);
            ca->chain_len[ca->num_chain] = len;
            if (ca->chain[ca->num_chain] == NULL) {
                res = cm_result_make(CM_E_NOMEM);
            } else {
                ca->num_chain++;
            }
        }
        X509_free(x);
        if (!cm_ok(res)) {
            break;
        }
    }
    ERR_clear_error(); // the PEM reader ends with "no start line"
    BIO_free(bio);
    return res;
}

static cm_result ca_cert_load(ca_authority **out, char *err, size_t err_cap, const char *cert_path,
                              const char *chain_path, bool require_ca);

cm_result ca_authority_load(ca_authority **out, char *err, size_t err_cap, const char *cert_path,
                            const char *chain_path)
{
    return ca_cert_load(out, err, err_cap, cert_path, chain_path, true);
}

cm_result ca_identity_load(ca_authority **out, char *err, size_t err_cap, const char *cert_path,
                           const char *chain_path)
{
    return ca_cert_load(out, err, err_cap, cert_path, chain_path, false);
}

static cm_result ca_cert_load(ca_authority **out, char *err, size_t err_cap, const char *cert_path,
                              const char *chain_path, bool require_ca)
{
    cm_result res = cm_result_make(CA_E_CONFIG);
    X509 *x = NULL;
    ca_authority *ca = calloc(1, sizeof(*ca));
    CM_ENSURE(ca != NULL, CM_E_NOMEM);
    BIO *bio = BIO_new_file(cert_path, "r");
    if (bio != NULL) {
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    if (x == NULL) {
        ca_errf(err, err_cap, "%s: cannot read a PEM certificate", cert_path);
        goto out;
    }
    if (require_ca && X509_check_ca(x) < 1) {
        ca_errf(err, err_cap, "%s: not a CA certificate (no basicConstraints cA)", cert_path);
        goto out;
    }
    ca->der = ca_x509_der(x, &ca->der_len);
    if (ca->der == NULL) {
        res = cm_result_make(CM_E_NOMEM);
        goto out;
    }
    cm_span key_bits;
    ca_cert_fields f;
    if (!cm_ok(ca_cert_fields_parse(&f, cm_span_make(ca->der, ca->der_len))) ||
        !cm_ok(ca_validity_parse(f.validity, &ca->not_before, &ca->not_after)) ||
        !cm_ok(ca_key_bits(f.spki, &key_bits))) {
        ca_errf(err, err_cap, "%s: the certificate is not strict DER", cert_path);
        goto out;
    }
    ca->subject = f.subject;
    ca->spki = f.spki;
    ca->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    if (ca->sha1 == NULL) {
        ca_errf(err, err_cap, "SHA-1 is not available");
        res = cm_result_make(CM_E_CRYPTO);
        goto out;
    }
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    if (ski != NULL && ASN1_STRING_length(ski) > 0 &&
        (size_t)ASN1_STRING_length(ski) <= sizeof(ca->ski)) {
        ca->ski_len = (size_t)ASN1_STRING_length(ski);
        memcpy(ca->ski, ASN1_STRING_get0_data(ski), ca->ski_len);
    } else {
        res = ca_sha1(ca->sha1, ca->ski, key_bits);
        if (!cm_ok(res)) {
            goto out;
        }
        ca->ski_len = 20;
    }
    res = ca_make_aki(ca);
    if (!cm_ok(res)) {
        goto out;
    }
    if (chain_path != NULL) {
        res = ca_load_chain(ca, err, err_cap, chain_path);
        if (!cm_ok(res)) {
            goto out;
        }
    }
    *out = ca;
    ca = NULL;
    res = cm_result_make(CM_OK);
out:
    ERR_clear_error();
    X509_free(x);
    ca_authority_free(ca);
    return res;
}

void ca_authority_free(ca_authority *ca)
{
    if (ca == NULL) {
        return;
    }
    for (size_t i = 0; i < ca->num_chain; i++) {
        free(ca->chain[i]);
    }
    EVP_MD_free(ca->sha1);
    free(ca->der);
    free(ca);
}

cm_result ca_authority_matches_spki(const ca_authority *ca, cm_span spki)
{
    CM_ENSURE(cm_span_eq(ca->spki, spki), CA_E_KEY_MISMATCH);
    return cm_result_make(CM_OK);
}

cm_span ca_authority_cert(const ca_authority *ca)
{
    return cm_span_make(ca->der, ca->der_len);
}

cm_span ca_authority_subject(const ca_authority *ca)
{
    return ca->subject;
}

cm_span ca_authority_spki(const ca_authority *ca)
{
    return ca->spki;
}

cm_span ca_authority_ski(const ca_authority *ca)
{
    return cm_span_make(ca->ski, ca->ski_len);
}

int64_t ca_authority_not_before(const ca_authority *ca)
{
    return ca->not_before;
}

int64_t ca_authority_not_after(const ca_authority *ca)
{
    return ca->not_after;
}

size_t ca_authority_num_chain(const ca_authority *ca)
{
    return ca->num_chain;
}

cm_span ca_authority_chain(const ca_authority *ca, size_t i)
{
    CM_CHECK(i < ca->num_chain);
    return cm_span_make(ca->chain[i], ca->chain_len[i]);
}

// ---------------------------------------------------------------------------------------------
// Serial numbers

cm_result ca_serial_new(uint8_t out[CA_SERIAL_LEN])
{
    return ca_serial_new_at(out, cm_time_real_us());
}

cm_result ca_serial_new_at(uint8_t out[CA_SERIAL_LEN], uint64_t now_us)
{
    // The prefix: 0x40, then the time in microseconds in 7 big-endian octets (2^56 us is over
    // 2,000 years). The constant first octet keeps the INTEGER positive and minimal (RFC 5280
    // §4.1.2.2); the time makes serials, and the store's serial index, grow at the right edge
    // instead of touching a random B-tree page per insert.
    out[0] = 0x40;
    for (size_t i = 0; i < CA_SERIAL_TIME_LEN - 1; i++) {
        out[CA_SERIAL_TIME_LEN - 1 - i] = (uint8_t)(now_us >> (8 * i));
    }
    // The thread's public DRBG, which RAND_bytes also draws from: asked directly it allocates
    // nothing, where OpenSSL 3.0's RAND_bytes makes ~25 allocations per call. 64 bits of it
    // make the serial unpredictable (CA/Browser Forum BR §7.1).
    EVP_RAND_CTX *drbg = RAND_get0_public(NULL);
    CM_ENSURE(drbg != NULL, CM_E_CRYPTO);
    CM_TRY_OSSL(EVP_RAND_generate(drbg, out + CA_SERIAL_TIME_LEN,
                                  CA_SERIAL_LEN - CA_SERIAL_TIME_LEN, 128, 0, NULL, 0),
                CM_E_CRYPTO);
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// TBSCertificate

// ca_put_profile_exts writes the profile's extensions with the keyUsage / extendedKeyUsage
// the decision honoured in place of the profile's own (keeping the profile's criticality and
// position), or after them when the profile writes none.
static void ca_put_profile_exts(der_builder *b, const ca_profile *profile, const ca_decision *d)
{
    const cm_span ku_oid = CM_SPAN_LIT(DER_OID_CE_KEY_USAGE);
    const cm_span eku_oid = CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE);
    bool ku_done = d->key_usage.len == 0, eku_done = d->eku.len == 0;
    der_reader r;
    der_reader_init(&r, ca_profile_extensions(profile));
    while (!der_reader_empty(&r)) {
        cm_span whole, oid;
        der_reader copy = r, e;
        bool critical = false;
        if (!cm_ok(der_get_element(&r, DER_TAG_SEQUENCE, &whole)) ||
            !cm_ok(der_enter(&copy, DER_TAG_SEQUENCE, &e)) || !cm_ok(der_get_oid(&e, &oid)) ||
            (der_peek_is(&e, DER_TAG_BOOLEAN) && !cm_ok(der_get_bool(&e, &critical)))) {
            der_builder_fail(b, CM_E_INVALID_ARG); // our own encoding: cannot happen
            return;
        }
        if (!ku_done && cm_span_eq(oid, ku_oid)) {
            ca_put_extension(b, oid, critical, d->key_usage);
            ku_done = true;
        } else if (!eku_done && cm_span_eq(oid, eku_oid)) {
            ca_put_extension(b, oid, critical, d->eku);
            eku_done = true;
        } else {
            der_put_raw(b, whole);
        }
    }
    if (!ku_done) {
        ca_put_extension(b, ku_oid, d->key_usage_critical, d->key_usage);
    }
    if (!eku_done) {
        ca_put_extension(b, eku_oid, d->eku_critical, d->eku);
    }
}

// TBSCertificate ::= SEQUENCE {
//     version         [0]  EXPLICIT Version DEFAULT v1,
//     serialNumber         CertificateSerialNumber,
//     signature            AlgorithmIdentifier,
//     issuer               Name,
//     validity             Validity,
//     subject              Name,
//     subjectPublicKeyInfo SubjectPublicKeyInfo,
//     issuerUniqueID  [1]  IMPLICIT UniqueIdentifier OPTIONAL,
//     subjectUniqueID [2]  IMPLICIT UniqueIdentifier OPTIONAL,
//     extensions      [3]  EXPLICIT Extensions OPTIONAL }
// Version ::= INTEGER { v1(0), v2(1), v3(2) }
// Validity ::= SEQUENCE { notBefore Time, notAfter Time }
// SubjectKeyIdentifier ::= KeyIdentifier ::= OCTET STRING          -- RFC 5280 §4.1, §4.2.1.2
cm_result ca_tbs_build(const ca_authority *ca, der_builder *b, const ca_profile *profile,
                       const ca_decision *d, const ca_request *req, cm_span serial, cm_span sig_alg)
{
    // SKI value: OCTET STRING { SHA-1(subjectPublicKey) }.
    uint8_t ski[2 + 20] = {DER_TAG_OCTET_STRING, 20};
    CM_TRY(ca_sha1(ca->sha1, ski + 2, d->key.key_bits));

    der_mark tbs, ver, validity, exts_tag, exts;
    der_open_hint(b, &tbs, DER_TAG_SEQUENCE, 3);
    der_open(b, &ver, DER_CONTEXT_CONS(0));
    der_put_u64(b, 2);
    der_close(b, &ver);
    der_put_uint_bytes(b, serial);
    der_put_raw(b, sig_alg);
    der_put_raw(b, ca->subject);
    der_open(b, &validity, DER_TAG_SEQUENCE);
    der_put_time(b, d->not_before);
    der_put_time(b, d->not_after);
    der_close(b, &validity);
    der_put_raw(b, req->subject);
    der_put_raw(b, req->spki);
    der_open_hint(b, &exts_tag, DER_CONTEXT_CONS(3), 3);
    der_open_hint(b, &exts, DER_TAG_SEQUENCE, 3);
    if (d->key_usage.len == 0 && d->eku.len == 0) {
        der_put_raw(b, ca_profile_extensions(profile)); // the common case: spliced as encoded
    } else {
        ca_put_profile_exts(b, profile, d);
    }
    ca_put_extension(b, CM_SPAN_LIT(DER_OID_CE_SUBJECT_KEY_ID), false,
                     cm_span_make(ski, sizeof(ski)));
    der_put_raw(b, cm_span_make(ca->aki_ext, ca->aki_ext_len));
    if (d->san.len > 0) {
        ca_put_extension(b, CM_SPAN_LIT(DER_OID_CE_SUBJECT_ALT_NAME), d->san_critical, d->san);
    }
    der_close(b, &exts);
    der_close(b, &exts_tag);
    der_close(b, &tbs);
    return der_builder_ok(b) ? cm_result_make(CM_OK) : cm_result_make(b->err);
}

// Certificate  ::= SEQUENCE { tbsCertificate TBSCertificate,
//                             signatureAlgorithm AlgorithmIdentifier, signatureValue BIT STRING }
// CertificateList ::= SEQUENCE { tbsCertList TBSCertList,
//                             signatureAlgorithm AlgorithmIdentifier, signatureValue BIT STRING }
//                                                                  -- RFC 5280 §4.1, §5.1
cm_result ca_signed_assemble(der_builder *b, cm_span tbs, cm_span sig_alg, cm_span signature)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    der_put_raw(b, tbs);
    der_put_raw(b, sig_alg);
    der_put_bitstring(b, signature, 0);
    der_close(b, &m);
    return der_builder_ok(b) ? cm_result_make(CM_OK) : cm_result_make(b->err);
}
