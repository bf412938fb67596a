// Self-signed root CA certificates (RFC 5280 §4.1, §4.2.1.9, §4.2.1.3, §4.2.1.2), for
// `certmint init` and tests: the TBSCertificate only; the signature comes from the HSM.
#include <openssl/evp.h>

#include "engine/ca/ca.h"
#include "engine/der/der_oid.h"

static void ca_root_ext(der_builder *b, der_mark *outer, der_mark *value, cm_span oid,
                        bool critical)
{
    der_open(b, outer, DER_TAG_SEQUENCE);
    der_put_oid(b, oid);
    if (critical) {
        der_put_bool(b, true);
    }
    der_open(b, value, DER_TAG_OCTET_STRING);
}

cm_result ca_root_tbs_build(der_builder *b, cm_span name, cm_span spki, cm_span serial,
                            int64_t not_before, int64_t not_after, cm_span sig_alg)
{
    ca_key_info key;
    CM_TRY(ca_spki_parse(&key, spki));
    CM_ENSURE(not_after > not_before, CA_E_VALIDITY);
    // Key identifier: SHA-1 of the subjectPublicKey bits (§4.2.1.2 method 1), as for leaves.
    uint8_t ski[20];
    CM_ENSURE(EVP_Digest(key.key_bits.p, key.key_bits.len, ski, NULL, EVP_sha1(), NULL) == 1,
              CM_E_CRYPTO);
    der_mark tbs, m, exts, e, v, bc;
    der_open_hint(b, &tbs, DER_TAG_SEQUENCE, 3);
    der_open(b, &m, DER_CONTEXT_CONS(0));
    der_put_i64(b, 2); // v3
    der_close(b, &m);
    der_put_uint_bytes(b, serial);
    der_put_raw(b, sig_alg);
    der_put_raw(b, name); // issuer = subject
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_time(b, not_before);
    der_put_time(b, not_after);
    der_close(b, &m);
    der_put_raw(b, name);
    der_put_raw(b, spki);
    der_open(b, &m, DER_CONTEXT_CONS(3));
    der_open(b, &exts, DER_TAG_SEQUENCE);
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_BASIC_CONSTRAINTS), true);
    der_open(b, &bc, DER_TAG_SEQUENCE);
    der_put_bool(b, true); // cA
    der_close(b, &bc);
    der_close(b, &v);
    der_close(b, &e);
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_KEY_USAGE), true);
    der_put_bitstring_flags(b, 1u | (1u << 5) | (1u << 6)); // digitalSignature keyCertSign cRLSign
    der_close(b, &v);
    der_close(b, &e);
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_SUBJECT_KEY_ID), false);
    der_put_octets(b, cm_span_make(ski, sizeof(ski)));
    der_close(b, &v);
    der_close(b, &e);
    der_close(b, &exts);
    der_close(b, &m);
    der_close(b, &tbs);
    return der_builder_ok(b) ? cm_result_make(CM_OK) : cm_result_make(b->err);
}

cm_result ca_cmp_tbs_build(const ca_authority *ca, der_builder *b, cm_span name, cm_span spki,
                           cm_span serial, int64_t not_before, int64_t not_after, cm_span sig_alg)
{
    return ca_cmp_tbs_build_ex(ca, b, name, spki, serial, not_before, not_after, sig_alg, 0);
}

cm_result ca_cmp_tbs_build_ex(const ca_authority *ca, der_builder *b, cm_span name, cm_span spki,
                              cm_span serial, int64_t not_before, int64_t not_after,
                              cm_span sig_alg, uint32_t flags)
{
    ca_key_info key;
    CM_TRY(ca_spki_parse(&key, spki));
    CM_ENSURE(not_after > not_before, CA_E_VALIDITY);
    uint8_t ski[20];
    CM_ENSURE(EVP_Digest(key.key_bits.p, key.key_bits.len, ski, NULL, EVP_sha1(), NULL) == 1,
              CM_E_CRYPTO);
    der_mark tbs, m, exts, e, v, seq, aki;
    der_open_hint(b, &tbs, DER_TAG_SEQUENCE, 3);
    der_open(b, &m, DER_CONTEXT_CONS(0));
    der_put_i64(b, 2);
    der_close(b, &m);
    der_put_uint_bytes(b, serial);
    der_put_raw(b, sig_alg);
    der_put_raw(b, ca_authority_subject(ca));
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_time(b, not_before);
    der_put_time(b,
                 not_after < ca_authority_not_after(ca) ? not_after : ca_authority_not_after(ca));
    der_close(b, &m);
    der_put_raw(b, name);
    der_put_raw(b, spki);
    der_open(b, &m, DER_CONTEXT_CONS(3));
    der_open(b, &exts, DER_TAG_SEQUENCE);
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_KEY_USAGE), true);
    der_put_bitstring_flags(b, 1u); // digitalSignature
    der_close(b, &v);
    der_close(b, &e);
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE), false);
    der_open(b, &seq, DER_TAG_SEQUENCE);
    der_put_oid_lit(b, DER_OID_KP_CMC_CA);
    if ((flags & CA_CMP_CERT_KGA) != 0) {
        der_put_oid_lit(b, DER_OID_KP_CM_KGA); // RFC 9480 §2.10: may sign generated keys
    }
    der_close(b, &seq);
    der_close(b, &v);
    der_close(b, &e);
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_SUBJECT_KEY_ID), false);
    der_put_octets(b, cm_span_make(ski, sizeof(ski)));
    der_close(b, &v);
    der_close(b, &e);
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] KeyIdentifier OPTIONAL, ... }
    ca_root_ext(b, &e, &v, CM_SPAN_LIT(DER_OID_CE_AUTHORITY_KEY_ID), false);
    der_open(b, &aki, DER_TAG_SEQUENCE);
    der_put_tlv(b, DER_CONTEXT(0), ca_authority_ski(ca));
    der_close(b, &aki);
    der_close(b, &v);
    der_close(b, &e);
    der_close(b, &exts);
    der_close(b, &m);
    der_close(b, &tbs);
    return der_builder_ok(b) ? cm_result_make(CM_OK) : cm_result_make(b->err);
}

cm_result ca_cert_find_ext(cm_span cert, cm_span oid, cm_span *out_value, bool *out_found)
{
    *out_found = false;
    // Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
    // TBSCertificate ::= SEQUENCE { version [0] EXPLICIT, serialNumber, signature, issuer,
    //     validity, subject, subjectPublicKeyInfo, issuerUniqueID [1] IMPLICIT OPTIONAL,
    //     subjectUniqueID [2] IMPLICIT OPTIONAL, extensions [3] EXPLICIT OPTIONAL } (RFC 5280)
    der_reader r, c, tbs, exts, list;
    der_reader_init(&r, cert);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &c));
    CM_TRY(der_enter(&c, DER_TAG_SEQUENCE, &tbs));
    bool present = false;
    while (!der_reader_empty(&tbs) && !present) {
        CM_TRY(der_enter_optional(&tbs, DER_CONTEXT_CONS(3), &exts, &present));
        if (!present) {
            uint32_t tag;
            cm_span body;
            CM_TRY(der_get_any(&tbs, &tag, &body, NULL));
        }
    }
    if (!present) {
        return cm_result_make(CM_OK);
    }
    CM_TRY(der_enter(&exts, DER_TAG_SEQUENCE, &list));
    while (!der_reader_empty(&list)) {
        der_reader e;
        cm_span id, value;
        bool critical = false;
        CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &e));
        CM_TRY(der_get_oid(&e, &id));
        if (der_peek_is(&e, DER_TAG_BOOLEAN)) {
            CM_TRY(der_get_bool(&e, &critical));
        }
        CM_TRY(der_get_octets(&e, &value));
        if (cm_span_eq(id, oid) && !*out_found) {
            *out_value = value;
            *out_found = true;
        }
    }
    return cm_result_make(CM_OK);
}

cm_result ca_cert_has_eku(cm_span cert, cm_span oid, bool *out_has)
{
    *out_has = false;
    cm_span value;
    bool found = false;
    CM_TRY(ca_cert_find_ext(cert, CM_SPAN_LIT(DER_OID_CE_EXT_KEY_USAGE), &value, &found));
    if (!found) {
        return cm_result_make(CM_OK);
    }
    // ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId (RFC 5280 §4.2.1.12)
    der_reader v, purposes;
    der_reader_init(&v, value);
    CM_TRY(der_enter(&v, DER_TAG_SEQUENCE, &purposes));
    while (!der_reader_empty(&purposes)) {
        cm_span p;
        CM_TRY(der_get_oid(&purposes, &p));
        if (cm_span_eq(p, oid)) {
            *out_has = true;
        }
    }
    return cm_result_make(CM_OK);
}
