// General message contents (RFC 9483 §4.3, RFC 9810 §5.3.19): the infoValues of a genm the CA
// reads (crlStatusList) and of the genp it writes (caCerts, rootCaKeyUpdate, certReqTemplate,
// signKeyPairTypes, crls) that are more than one spliced element.
#include <string.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"

#define CMP_MAX_RDN_ATVS 16u // AttributeTypeAndValues in nameRelativeToCRLIssuer

// ---------------------------------------------------------------------------------------------
// crlStatusList (id-it 22)

// general_names_check reads GeneralName elements until |r| is empty: at least one, each valid.
//   GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName           (RFC 5280 §4.2.1.6)
static cm_result general_names_check(der_reader r)
{
    size_t n = 0;
    while (!der_reader_empty(&r)) {
        CM_ENSURE(++n <= CMP_MAX_CRL_STATUS, CM_E_DER_TOO_MANY);
        crmf_general_name gn;
        CM_TRY(crmf_general_name_parse(&r, &gn));
    }
    CM_ENSURE(n >= 1, CMP_E_EMPTY_SEQUENCE);
    return cm_result_make(CM_OK);
}

// rdn_check reads the content of a RelativeDistinguishedName:
//   RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
//   AttributeTypeAndValue ::= SEQUENCE { type AttributeType, value AttributeValue }
//   AttributeType ::= OBJECT IDENTIFIER                                    (RFC 5280 §4.1.2.4)
static cm_result rdn_check(der_reader r)
{
    size_t n = 0;
    while (!der_reader_empty(&r)) {
        CM_ENSURE(++n <= CMP_MAX_RDN_ATVS, CM_E_DER_TOO_MANY);
        der_reader atv;
        cm_span oid;
        CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &atv));
        CM_TRY(der_get_oid(&atv, &oid));
        CM_TRY(der_get_any(&atv, NULL, NULL, NULL));
        CM_TRY(der_expect_end(&atv));
    }
    CM_ENSURE(n >= 1, CMP_E_EMPTY_SEQUENCE);
    return cm_result_make(CM_OK);
}

// crl_source_parse reads the CRLSource of one CRLStatus. The module is EXPLICIT TAGS (RFC 9810
// Appendix F); DistributionPointName comes from PKIX1Implicit88 (IMPLICIT TAGS):
//   CRLSource ::= CHOICE { dpn [0] DistributionPointName, issuer [1] GeneralNames }
//   DistributionPointName ::= CHOICE {
//       fullName                [0] GeneralNames,
//       nameRelativeToCRLIssuer [1] RelativeDistinguishedName }          (RFC 5280 §4.2.1.13)
static cm_result crl_source_parse(cmp_crl_status *out, der_reader *r)
{
    der_reader t = *r;
    der_reader src;
    if (der_peek_is(&t, DER_CONTEXT_CONS(0))) {
        CM_TRY(der_enter(&t, DER_CONTEXT_CONS(0), &src));
        cm_span whole;
        uint32_t tag;
        der_reader name = src;
        CM_TRY(der_get_any(&name, &tag, NULL, &whole));
        CM_TRY(der_expect_end(&name));
        der_reader content;
        if (tag == DER_CONTEXT_CONS(0)) {
            CM_TRY(der_enter(&src, DER_CONTEXT_CONS(0), &content));
            CM_TRY(general_names_check(content));
        } else {
            CM_ENSURE(tag == DER_CONTEXT_CONS(1), CM_E_DER_UNEXPECTED_TAG);
            CM_TRY(der_enter(&src, DER_CONTEXT_CONS(1), &content));
            CM_TRY(rdn_check(content));
        }
        out->source_kind = CMP_CRL_SOURCE_DPN;
        out->source = whole;
    } else {
        CM_ENSURE(der_peek_is(&t, DER_CONTEXT_CONS(1)), CM_E_DER_UNEXPECTED_TAG);
        CM_TRY(der_enter(&t, DER_CONTEXT_CONS(1), &src));
        // [1] EXPLICIT wraps the GeneralNames SEQUENCE; GeneralName tags are all context-class,
        // so a universal SEQUENCE here can only be that wrapper. Without it the GeneralName
        // elements sit directly in [1] (the IMPLICIT reading some encoders use).
        if (der_peek_is(&src, DER_TAG_SEQUENCE)) {
            der_reader names;
            CM_TRY(der_enter(&src, DER_TAG_SEQUENCE, &names));
            CM_TRY(der_expect_end(&src));
            src = names;
        }
        CM_TRY(general_names_check(src));
        out->source_kind = CMP_CRL_SOURCE_ISSUER;
        out->source = der_reader_rest(&src);
    }
    *r = t;
    return cm_result_make(CM_OK);
}

// CRLStatusList ::= SEQUENCE SIZE (1..MAX) OF CRLStatus
// CRLStatus ::= SEQUENCE { source CRLSource, thisUpdate Time OPTIONAL }
// Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime }
//                                                  (RFC 9810 §5.3.19.16, RFC 9483 §4.3.4)
cm_result cmp_crl_status_list_from_der(cm_arena *arena, const cmp_crl_status **out_items,
                                       size_t *out_num, cm_span der)
{
    der_reader r, list;
    der_reader_init(&r, der);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &list));
    CM_TRY(der_expect_end(&r));
    cmp_crl_status items[CMP_MAX_CRL_STATUS];
    size_t n = 0;
    while (!der_reader_empty(&list)) {
        CM_ENSURE(n < CMP_MAX_CRL_STATUS, CM_E_DER_TOO_MANY);
        cmp_crl_status *st = &items[n];
        memset(st, 0, sizeof(*st));
        der_reader seq;
        CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &seq));
        CM_TRY(crl_source_parse(st, &seq));
        if (!der_reader_empty(&seq)) {
            CM_TRY(der_get_time(&seq, &st->this_update));
            st->has_this_update = true;
        }
        CM_TRY(der_expect_end(&seq));
        n++;
    }
    CM_ENSURE(n >= 1, CMP_E_EMPTY_SEQUENCE);
    cmp_crl_status *out = cm_arena_alloc(arena, n * sizeof(*out));
    CM_ENSURE(out != NULL, CM_E_NOMEM);
    memcpy(out, items, n * sizeof(*out));
    *out_items = out;
    *out_num = n;
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// genp contents

// SEQUENCE SIZE (1..MAX) OF CMPCertificate      (caCerts, RFC 9483 §4.3.1)
// SEQUENCE SIZE (1..MAX) OF CertificateList     (crls, RFC 9483 §4.3.4)
void cmp_seq_of_marshal(der_builder *b, const cm_span *els, size_t num)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < num; i++) {
        der_put_raw(b, els[i]);
    }
    der_close(b, &m);
}

// RootCaKeyUpdateContent ::= SEQUENCE {
//     newWithNew       CMPCertificate,
//     newWithOld   [0] CMPCertificate OPTIONAL,
//     oldWithNew   [1] CMPCertificate OPTIONAL }              (RFC 9810 §5.3.19.15, EXPLICIT)
void cmp_root_ca_key_update_marshal(der_builder *b, const cmp_root_ca_key_update *u)
{
    if (u->new_with_new.len == 0) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m, t;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    der_put_raw(b, u->new_with_new);
    if (u->new_with_old.len != 0) {
        der_open_hint(b, &t, DER_CONTEXT_CONS(0), 3);
        der_put_raw(b, u->new_with_old);
        der_close(b, &t);
    }
    if (u->old_with_new.len != 0) {
        der_open_hint(b, &t, DER_CONTEXT_CONS(1), 3);
        der_put_raw(b, u->old_with_new);
        der_close(b, &t);
    }
    der_close(b, &m);
}

// AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }
//   id-ecPublicKey, parameters ECParameters { namedCurve }          (RFC 5480 §2.1.1)
//   rsaEncryption, parameters NULL                                  (RFC 3279 §2.3.1)
//   id-Ed25519 / id-Ed448, parameters absent                        (RFC 8410 §3)
void cmp_key_alg_marshal(der_builder *b, cmp_key_type type)
{
    if ((unsigned)type >= CMP_KEY_TYPE_COUNT) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    switch (type) {
    case CMP_KEY_EC_P256:
        der_put_oid_lit(b, DER_OID_EC_PUBLIC_KEY);
        der_put_oid_lit(b, DER_OID_P256);
        break;
    case CMP_KEY_EC_P384:
        der_put_oid_lit(b, DER_OID_EC_PUBLIC_KEY);
        der_put_oid_lit(b, DER_OID_P384);
        break;
    case CMP_KEY_EC_P521:
        der_put_oid_lit(b, DER_OID_EC_PUBLIC_KEY);
        der_put_oid_lit(b, DER_OID_P521);
        break;
    case CMP_KEY_RSA:
        der_put_oid_lit(b, DER_OID_RSA_ENCRYPTION);
        der_put_null(b);
        break;
    case CMP_KEY_ED25519:
        der_put_oid_lit(b, DER_OID_ED25519);
        break;
    case CMP_KEY_ED448:
    case CMP_KEY_TYPE_COUNT:
        der_put_oid_lit(b, DER_OID_ED448);
        break;
    }
    der_close(b, &m);
}

// SignKeyPairTypesValue ::= SEQUENCE SIZE (1..MAX) OF AlgorithmIdentifier{PUBLIC-KEY, {...}}
//                                                                  (RFC 9810 §5.3.19.2)
void cmp_key_alg_list_marshal(der_builder *b, const cmp_key_type *types, size_t num)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    for (size_t i = 0; i < num; i++) {
        cmp_key_alg_marshal(b, types[i]);
    }
    der_close(b, &m);
}

// CertReqTemplateContent ::= SEQUENCE {
//     certTemplate  CertTemplate,
//     keySpec       Controls OPTIONAL }
// Controls ::= SEQUENCE SIZE (1..MAX) OF AttributeTypeAndValue
// AttributeTypeAndValue ::= SEQUENCE { type OBJECT IDENTIFIER, value ANY DEFINED BY type }
// id-regCtrl-algId     OBJECT IDENTIFIER ::= { id-regCtrl 11 }  -- AlgorithmIdentifier
// id-regCtrl-rsaKeyLen OBJECT IDENTIFIER ::= { id-regCtrl 12 }  -- INTEGER (1..MAX)
//                                          (RFC 9810 §5.3.19.14, RFC 9483 §4.3.3)
void cmp_cert_req_template_marshal(der_builder *b, const crmf_template *tmpl,
                                   const cmp_key_spec *key_spec)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    crmf_template_marshal(b, tmpl);
    if (key_spec != NULL) {
        der_mark ctrls, atv;
        der_open(b, &ctrls, DER_TAG_SEQUENCE);
        der_open(b, &atv, DER_TAG_SEQUENCE);
        if (key_spec->type == CMP_KEY_RSA) {
            if (key_spec->rsa_key_len == 0) {
                der_builder_fail(b, CM_E_INVALID_ARG);
            }
            der_put_oid_lit(b, DER_OID_REGCTRL_RSA_KEY_LEN);
            der_put_u64(b, key_spec->rsa_key_len);
        } else {
            der_put_oid_lit(b, DER_OID_REGCTRL_ALG_ID);
            cmp_key_alg_marshal(b, key_spec->type);
        }
        der_close(b, &atv);
        der_close(b, &ctrls);
    }
    der_close(b, &m);
}
