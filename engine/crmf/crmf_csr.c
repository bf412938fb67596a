// engine/crmf: PKCS#10 CertificationRequest (RFC 2986 §4) parse and marshal.
#include <string.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der_oid.h"

// crmf_csr_attributes_check walks the attributes, enforcing the cap and a non-empty SET of
// values for each, and finds extensionRequest (PKCS#9 §5.4.2: ExtensionRequest ::=
// Extensions, one value), which may appear once.
static cm_result crmf_csr_attributes_check(cm_span body, cm_span *out_extensions)
{
    crmf_attr_iter it;
    crmf_attr_iter_init(&it, body);
    size_t n = 0;
    bool have_ext = false;
    for (;;) {
        crmf_attr a;
        bool found;
        CM_TRY(crmf_attr_iter_next(&it, &a, &found));
        if (!found) {
            break;
        }
        CM_ENSURE(++n <= CRMF_MAX_ATTRIBUTES, CM_E_DER_TOO_MANY);
        if (!der_oid_is(a.oid, DER_OID_PKCS9_EXTENSION_REQUEST)) {
            continue;
        }
        CM_ENSURE(!have_ext, CRMF_E_DUPLICATE_EXTENSION);
        have_ext = true;
        der_reader v;
        der_reader set;
        der_reader exts;
        der_reader_init(&v, a.value);
        CM_TRY(der_enter(&v, DER_TAG_SET, &set));
        cm_span ext_body;
        exts = set;
        CM_TRY(der_get_tlv(&exts, DER_TAG_SEQUENCE, &ext_body));
        CM_TRY(der_expect_end(&exts));
        CM_TRY(crmf_extensions_check(ext_body));
        *out_extensions = ext_body;
    }
    return cm_result_make(CM_OK);
}

// CertificationRequest ::= SEQUENCE {
//     certificationRequestInfo CertificationRequestInfo,
//     signatureAlgorithm AlgorithmIdentifier{{ SignatureAlgorithms }},
//     signature          BIT STRING }
// CertificationRequestInfo ::= SEQUENCE {
//     version       INTEGER { v1(0) } (v1,...),
//     subject       Name,
//     subjectPKInfo SubjectPublicKeyInfo{{ PKInfoAlgorithms }},
//     attributes    [0] Attributes{{ CRIAttributes }} }
// Attributes ::= SET OF Attribute (IMPLICIT under [0])
cm_result crmf_csr_parse(der_reader *r, crmf_csr *out)
{
    der_reader t = *r;
    der_reader s;
    der_reader info;
    crmf_csr csr;
    memset(&csr, 0, sizeof(csr));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &s, &csr.whole));
    CM_TRY(crmf_enter_whole(&s, DER_TAG_SEQUENCE, &info, &csr.info));
    uint64_t version;
    CM_TRY(der_get_u64(&info, &version));
    CM_ENSURE(version == 0, CRMF_E_CSR_VERSION);
    CM_ENSURE(der_peek_is(&info, DER_TAG_SEQUENCE), CRMF_E_BAD_NAME);
    CM_TRY(der_get_element(&info, DER_TAG_SEQUENCE, &csr.subject));
    CM_TRY(crmf_name_check(csr.subject));
    CM_TRY(crmf_spki_read(&info, &csr.spki));
    CM_TRY(der_get_tlv(&info, DER_CONTEXT_CONS(0), &csr.attributes));
    CM_TRY(crmf_csr_attributes_check(csr.attributes, &csr.extensions));
    CM_TRY(der_expect_end(&info));
    der_reader q = s;
    cm_span alg_body;
    CM_TRY(der_get_tlv(&q, DER_TAG_SEQUENCE, &alg_body));
    CM_TRY(crmf_alg_id_check(alg_body));
    CM_TRY(der_get_element(&s, DER_TAG_SEQUENCE, &csr.sig_alg));
    uint8_t unused;
    CM_TRY(der_get_bitstring(&s, &csr.signature, &unused));
    CM_ENSURE(unused == 0, CM_E_DER_BITSTRING);
    CM_TRY(der_expect_end(&s));
    *out = csr;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_csr_from_der(crmf_csr *out, cm_span der)
{
    der_reader r;
    der_reader_init(&r, der);
    crmf_csr csr;
    CM_TRY(crmf_csr_parse(&r, &csr));
    CM_TRY(der_expect_end(&r));
    *out = csr;
    return cm_result_make(CM_OK);
}

void crmf_csr_marshal(der_builder *b, const crmf_csr *csr)
{
    der_mark m;
    der_mark info;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    der_open_hint(b, &info, DER_TAG_SEQUENCE, 3);
    der_put_u64(b, 0);
    der_put_raw(b, csr->subject);
    der_put_tlv(b, DER_TAG_SEQUENCE, csr->spki.body);
    der_put_tlv(b, DER_CONTEXT_CONS(0), csr->attributes);
    der_close(b, &info);
    der_put_raw(b, csr->sig_alg);
    der_put_bitstring(b, csr->signature, 0);
    der_close(b, &m);
}
