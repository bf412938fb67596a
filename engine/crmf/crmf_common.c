// engine/crmf: pieces shared by CRMF and PKCS#10 — failure-info mapping, Extensions, Names,
// GeneralName, AttributeTypeAndValue, CertId.
#include <string.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der_oid.h"

cm_result crmf_enter_whole(der_reader *r, uint32_t tag, der_reader *out_child, cm_span *out_whole)
{
    der_reader t = *r;
    cm_span whole;
    CM_TRY(der_get_element(&t, tag, &whole));
    t = *r;
    CM_TRY(der_enter(&t, tag, out_child));
    *out_whole = whole;
    *r = t;
    return cm_result_make(CM_OK);
}

// crmf_alg_id_check validates AlgorithmIdentifier content octets (OID, optional parameters).
cm_result crmf_alg_id_check(cm_span body)
{
    der_reader a;
    der_reader_init(&a, body);
    cm_span oid;
    CM_TRY(der_get_oid(&a, &oid));
    if (!der_reader_empty(&a)) {
        CM_TRY(der_get_any(&a, NULL, NULL, NULL));
    }
    return der_expect_end(&a);
}

// ---------------------------------------------------------------------------------------------
// Extensions (RFC 5280 §4.1)

void crmf_ext_iter_init(crmf_ext_iter *it, cm_span body)
{
    der_reader_init(&it->r, body);
}

// Extension ::= SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE,
//                          extnValue OCTET STRING }
cm_result crmf_ext_iter_next(crmf_ext_iter *it, crmf_extension *out, bool *out_found)
{
    *out_found = false;
    if (der_reader_empty(&it->r)) {
        return cm_result_make(CM_OK);
    }
    der_reader t = it->r;
    der_reader e;
    cm_span whole;
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &e, &whole));
    crmf_extension x = {.whole = whole};
    CM_TRY(der_get_oid(&e, &x.oid));
    if (der_peek_is(&e, DER_TAG_BOOLEAN)) {
        CM_TRY(der_get_bool(&e, &x.critical));
        // DER: a DEFAULT value is never encoded (X.690 §11.5).
        CM_ENSURE(x.critical, CM_E_DER_BOOLEAN);
    }
    CM_TRY(der_get_octets(&e, &x.value));
    CM_TRY(der_expect_end(&e));
    *out = x;
    *out_found = true;
    it->r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_extensions_find(cm_span body, cm_span oid, crmf_extension *out, bool *out_found)
{
    crmf_ext_iter it;
    crmf_ext_iter_init(&it, body);
    *out_found = false;
    for (;;) {
        crmf_extension x;
        bool found;
        CM_TRY(crmf_ext_iter_next(&it, &x, &found));
        if (!found) {
            return cm_result_make(CM_OK);
        }
        if (cm_span_eq(x.oid, oid)) {
            *out = x;
            *out_found = true;
            return cm_result_make(CM_OK);
        }
    }
}

// Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension (RFC 5280 §4.1); each extnID at most
// once (§4.2). The quadratic duplicate check is bounded by CRMF_MAX_EXTENSIONS.
cm_result crmf_extensions_check(cm_span body)
{
    cm_span seen[CRMF_MAX_EXTENSIONS];
    size_t n = 0;
    crmf_ext_iter it;
    crmf_ext_iter_init(&it, body);
    for (;;) {
        crmf_extension x;
        bool found;
        CM_TRY(crmf_ext_iter_next(&it, &x, &found));
        if (!found) {
            break;
        }
        CM_ENSURE(n < CRMF_MAX_EXTENSIONS, CM_E_DER_TOO_MANY);
        for (size_t i = 0; i < n; i++) {
            CM_ENSURE(!cm_span_eq(seen[i], x.oid), CRMF_E_DUPLICATE_EXTENSION);
        }
        seen[n++] = x.oid;
    }
    CM_ENSURE(n > 0, CRMF_E_EMPTY);
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// Name (RFC 5280 §4.1.2.4)

// AttributeTypeAndValue ::= SEQUENCE { type AttributeType, value AttributeValue }
static cm_result crmf_atv_check(der_reader *set)
{
    der_reader a;
    CM_TRY(der_enter(set, DER_TAG_SEQUENCE, &a));
    cm_span oid;
    CM_TRY(der_get_oid(&a, &oid));
    CM_TRY(der_get_any(&a, NULL, NULL, NULL));
    return der_expect_end(&a);
}

// Name ::= CHOICE { rdnSequence RDNSequence }
// RDNSequence ::= SEQUENCE OF RelativeDistinguishedName
// RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
cm_result crmf_name_check(cm_span whole)
{
    der_reader r;
    der_reader seq;
    der_reader_init(&r, whole);
    CM_ENSURE(der_peek_is(&r, DER_TAG_SEQUENCE), CRMF_E_BAD_NAME);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_expect_end(&r));
    size_t rdns = 0;
    while (!der_reader_empty(&seq)) {
        CM_ENSURE(++rdns <= CRMF_MAX_NAME_RDNS, CM_E_DER_TOO_MANY);
        der_reader set;
        CM_ENSURE(der_peek_is(&seq, DER_TAG_SET), CRMF_E_BAD_NAME);
        CM_TRY(der_enter(&seq, DER_TAG_SET, &set));
        CM_ENSURE(!der_reader_empty(&set), CRMF_E_BAD_NAME);
        size_t atvs = 0;
        while (!der_reader_empty(&set)) {
            CM_ENSURE(++atvs <= CRMF_MAX_RDN_ATVS, CM_E_DER_TOO_MANY);
            CM_ENSURE(der_peek_is(&set, DER_TAG_SEQUENCE), CRMF_E_BAD_NAME);
            CM_TRY(crmf_atv_check(&set));
        }
    }
    return cm_result_make(CM_OK);
}

// ---------------------------------------------------------------------------------------------
// GeneralName (RFC 5280 §4.2.1.6, IMPLICIT TAGS)
//   GeneralName ::= CHOICE {
//       otherName [0] OtherName, rfc822Name [1] IA5String, dNSName [2] IA5String,
//       x400Address [3] ORAddress, directoryName [4] Name, ediPartyName [5] EDIPartyName,
//       uniformResourceIdentifier [6] IA5String, iPAddress [7] OCTET STRING,
//       registeredID [8] OBJECT IDENTIFIER }
cm_result crmf_general_name_parse(der_reader *r, crmf_general_name *out)
{
    der_reader t = *r;
    uint32_t tag;
    cm_span body;
    cm_span whole;
    CM_TRY(der_get_any(&t, &tag, &body, &whole));
    CM_ENSURE((tag & DER_CLASS_MASK) == DER_CLASS_CONTEXT, CRMF_E_BAD_CHOICE);
    uint32_t n = tag & DER_TAG_NUMBER_MASK;
    CM_ENSURE(n <= CRMF_GN_REGISTERED_ID, CRMF_E_BAD_CHOICE);
    bool cons = (tag & DER_CONSTRUCTED) != 0;
    bool want_cons = n == CRMF_GN_OTHER_NAME || n == CRMF_GN_X400_ADDRESS ||
                     n == CRMF_GN_DIRECTORY_NAME || n == CRMF_GN_EDI_PARTY_NAME;
    CM_ENSURE(cons == want_cons, CRMF_E_BAD_CHOICE);
    crmf_general_name gn = {.whole = whole, .tag = n, .body = body};
    switch (n) {
    case CRMF_GN_RFC822_NAME:
    case CRMF_GN_DNS_NAME:
    case CRMF_GN_URI:
        CM_TRY(der_parse_string(DER_TAG_IA5_STRING, body));
        break;
    case CRMF_GN_IP_ADDRESS:
        CM_ENSURE(body.len == 4 || body.len == 8 || body.len == 16 || body.len == 32,
                  CRMF_E_BAD_CHOICE);
        break;
    case CRMF_GN_REGISTERED_ID:
        CM_TRY(der_parse_oid(body));
        break;
    case CRMF_GN_DIRECTORY_NAME: {
        // Name is a CHOICE, so [4] is EXPLICIT: exactly one Name inside.
        der_reader in;
        der_reader_init(&in, body);
        CM_TRY(der_get_element(&in, DER_TAG_SEQUENCE, &gn.name));
        CM_TRY(der_expect_end(&in));
        CM_TRY(crmf_name_check(gn.name));
        break;
    }
    case CRMF_GN_OTHER_NAME: {
        // OtherName ::= SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY }
        der_reader in;
        der_reader_init(&in, body);
        cm_span oid;
        cm_span v;
        CM_TRY(der_get_oid(&in, &oid));
        CM_TRY(der_get_tlv(&in, DER_CONTEXT_CONS(0), &v));
        CM_TRY(der_expect_end(&in));
        break;
    }
    default:
        break; // x400Address, ediPartyName: kept as spans
    }
    *out = gn;
    *r = t;
    return cm_result_make(CM_OK);
}

void crmf_general_name_marshal(der_builder *b, const crmf_general_name *gn)
{
    if (gn->tag > CRMF_GN_REGISTERED_ID) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    bool cons = gn->tag == CRMF_GN_OTHER_NAME || gn->tag == CRMF_GN_X400_ADDRESS ||
                gn->tag == CRMF_GN_DIRECTORY_NAME || gn->tag == CRMF_GN_EDI_PARTY_NAME;
    der_put_tlv(b, cons ? DER_CONTEXT_CONS(gn->tag) : DER_CONTEXT(gn->tag), gn->body);
}

// ---------------------------------------------------------------------------------------------
// AttributeTypeAndValue (RFC 4211 §6, §7) and CertId (§6.5)

cm_result crmf_attr_parse(der_reader *r, crmf_attr *out)
{
    der_reader t = *r;
    crmf_attr a;
    der_reader e;
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &e, &a.whole));
    CM_TRY(der_get_oid(&e, &a.oid));
    CM_TRY(der_get_any(&e, NULL, NULL, &a.value));
    CM_TRY(der_expect_end(&e));
    *out = a;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_attr_seq_parse(cm_arena *arena, der_reader *r, size_t cap, crmf_attr **out,
                              size_t *out_num)
{
    der_reader t = *r;
    der_reader seq;
    CM_TRY(der_enter(&t, DER_TAG_SEQUENCE, &seq));
    // Count first so the array is allocated once and exactly.
    size_t n = 0;
    der_reader probe = seq;
    while (!der_reader_empty(&probe)) {
        CM_ENSURE(n < cap, CM_E_DER_TOO_MANY);
        CM_TRY(der_get_any(&probe, NULL, NULL, NULL));
        n++;
    }
    CM_ENSURE(n > 0, CRMF_E_EMPTY);
    crmf_attr *attrs = cm_arena_alloc(arena, n * sizeof(*attrs));
    CM_ENSURE(attrs != NULL, CM_E_NOMEM);
    for (size_t i = 0; i < n; i++) {
        CM_TRY(crmf_attr_parse(&seq, &attrs[i]));
    }
    CM_TRY(der_expect_end(&seq));
    *out = attrs;
    *out_num = n;
    *r = t;
    return cm_result_make(CM_OK);
}

void crmf_attr_marshal(der_builder *b, const crmf_attr *attr)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, attr->oid);
    der_put_raw(b, attr->value);
    der_close(b, &m);
}

void crmf_attr_seq_marshal(der_builder *b, const crmf_attr *attrs, size_t num)
{
    if (num == 0 || attrs == NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 2);
    for (size_t i = 0; i < num; i++) {
        crmf_attr_marshal(b, &attrs[i]);
    }
    der_close(b, &m);
}

// CertId ::= SEQUENCE { issuer GeneralName, serialNumber INTEGER }
cm_result crmf_cert_id_parse(der_reader *r, crmf_cert_id *out)
{
    der_reader t = *r;
    crmf_cert_id id;
    memset(&id, 0, sizeof(id));
    der_reader s;
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &s, &id.whole));
    CM_TRY(crmf_general_name_parse(&s, &id.issuer));
    CM_TRY(der_get_int_span(&s, &id.serial));
    CM_TRY(der_expect_end(&s));
    *out = id;
    *r = t;
    return cm_result_make(CM_OK);
}

void crmf_cert_id_marshal(der_builder *b, const crmf_cert_id *id)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    crmf_general_name_marshal(b, &id->issuer);
    der_put_int_span(b, id->serial);
    der_close(b, &m);
}

// ---------------------------------------------------------------------------------------------
// PKCS#10 attributes (RFC 2986 §4.1)

void crmf_attr_iter_init(crmf_attr_iter *it, cm_span body)
{
    der_reader_init(&it->r, body);
}

// Attribute ::= SEQUENCE { type OID, values SET SIZE(1..MAX) OF AttributeValue }
cm_result crmf_attr_iter_next(crmf_attr_iter *it, crmf_attr *out, bool *out_found)
{
    *out_found = false;
    if (der_reader_empty(&it->r)) {
        return cm_result_make(CM_OK);
    }
    der_reader t = it->r;
    crmf_attr a;
    CM_TRY(crmf_attr_parse(&t, &a));
    der_reader v;
    der_reader set;
    der_reader_init(&v, a.value);
    CM_TRY(der_enter(&v, DER_TAG_SET, &set));
    CM_ENSURE(!der_reader_empty(&set), CRMF_E_EMPTY);
    *out = a;
    *out_found = true;
    it->r = t;
    return cm_result_make(CM_OK);
}
