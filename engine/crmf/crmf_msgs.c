// engine/crmf: CertReqMessages, CertReqMsg, CertRequest, CertTemplate and ProofOfPossession
// (RFC 4211, a module with IMPLICIT TAGS: a tag on a CHOICE such as Name, Time or POPOPrivKey
// is nevertheless EXPLICIT, X.680 §31.2.7).
#include <string.h>

#include "engine/crmf/crmf.h"
#include "engine/crmf/crmf_internal.h"
#include "engine/der/der_oid.h"

// ---------------------------------------------------------------------------------------------
// CertTemplate (RFC 4211 §5)

// crmf_explicit_name reads [n] EXPLICIT Name: the tag holds exactly one valid Name.
static cm_result crmf_explicit_name(cm_span body, cm_span *out)
{
    der_reader in;
    der_reader_init(&in, body);
    CM_ENSURE(der_peek_is(&in, DER_TAG_SEQUENCE), CRMF_E_BAD_NAME);
    CM_TRY(der_get_element(&in, DER_TAG_SEQUENCE, out));
    CM_TRY(der_expect_end(&in));
    return crmf_name_check(*out);
}

// crmf_explicit_time reads [n] EXPLICIT Time (Time ::= CHOICE { utcTime UTCTime,
// generalTime GeneralizedTime }, RFC 5280 §4.1).
static cm_result crmf_explicit_time(der_reader *v, uint32_t n, bool *out_present, uint32_t *out_tag,
                                    int64_t *out_t)
{
    der_reader in;
    CM_TRY(der_enter_optional(v, DER_CONTEXT_CONS(n), &in, out_present));
    if (!*out_present) {
        return cm_result_make(CM_OK);
    }
    CM_TRY(der_peek_tag(&in, out_tag));
    CM_ENSURE(*out_tag == DER_TAG_UTC_TIME || *out_tag == DER_TAG_GENERALIZED_TIME,
              CRMF_E_BAD_CHOICE);
    CM_TRY(der_get_time(&in, out_t));
    return der_expect_end(&in);
}

// CertTemplate ::= SEQUENCE {
//     version      [0] Version               OPTIONAL,
//     serialNumber [1] INTEGER               OPTIONAL,
//     signingAlg   [2] AlgorithmIdentifier   OPTIONAL,
//     issuer       [3] Name                  OPTIONAL,
//     validity     [4] OptionalValidity      OPTIONAL,
//     subject      [5] Name                  OPTIONAL,
//     publicKey    [6] SubjectPublicKeyInfo  OPTIONAL,
//     issuerUID    [7] UniqueIdentifier      OPTIONAL,
//     subjectUID   [8] UniqueIdentifier      OPTIONAL,
//     extensions   [9] Extensions            OPTIONAL }
// OptionalValidity ::= SEQUENCE { notBefore [0] Time OPTIONAL, notAfter [1] Time OPTIONAL }
//     -- at least one MUST be present
cm_result crmf_template_parse(der_reader *r, crmf_template *out)
{
    der_reader t = *r;
    der_reader s;
    crmf_template tm;
    memset(&tm, 0, sizeof(tm));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &s, &tm.whole));
    cm_span body;
    bool present;

    CM_TRY(der_get_optional(&s, DER_CONTEXT(0), &body, &present));
    if (present) {
        // RFC 4211 §5 and RFC 9483 §4.1.1: version MUST be 2 (v3) if supplied.
        uint64_t v;
        CM_TRY(der_parse_int(body));
        CM_ENSURE(cm_ok(der_parse_u64(body, &v)) && v == 2, CRMF_E_TEMPLATE_VERSION);
        tm.has_version = true;
        tm.version = 2;
    }
    CM_TRY(der_get_optional(&s, DER_CONTEXT(1), &tm.serial, &present));
    if (present) {
        CM_TRY(der_parse_int(tm.serial));
    }
    CM_TRY(der_get_optional(&s, DER_CONTEXT_CONS(2), &tm.signing_alg, &present));
    if (present) {
        CM_TRY(crmf_alg_id_check(tm.signing_alg));
    }
    CM_TRY(der_get_optional(&s, DER_CONTEXT_CONS(3), &body, &present));
    if (present) {
        CM_TRY(crmf_explicit_name(body, &tm.issuer));
    }
    der_reader v;
    CM_TRY(der_enter_optional(&s, DER_CONTEXT_CONS(4), &v, &present));
    if (present) {
        CM_TRY(crmf_explicit_time(&v, 0, &tm.has_not_before, &tm.not_before_tag, &tm.not_before));
        CM_TRY(crmf_explicit_time(&v, 1, &tm.has_not_after, &tm.not_after_tag, &tm.not_after));
        CM_ENSURE(der_reader_empty(&v), CM_E_DER_UNEXPECTED_TAG);
        CM_ENSURE(tm.has_not_before || tm.has_not_after, CRMF_E_BAD_VALIDITY);
    }
    CM_TRY(der_get_optional(&s, DER_CONTEXT_CONS(5), &body, &present));
    if (present) {
        CM_TRY(crmf_explicit_name(body, &tm.subject));
    }
    CM_TRY(der_get_optional(&s, DER_CONTEXT_CONS(6), &tm.public_key, &present));
    if (present) {
        CM_TRY(crmf_spki_parse_body(&tm.spki, tm.public_key));
    }
    // issuerUID/subjectUID: deprecated by RFC 5280 §4.1.2.8 for CAs like us, and RFC 4211 §5
    // says they MUST be omitted. Either form of the tag is refused.
    uint32_t tag;
    if (cm_ok(der_peek_tag(&s, &tag))) {
        uint32_t n = tag & DER_TAG_NUMBER_MASK;
        CM_ENSURE(!((tag & DER_CLASS_MASK) == DER_CLASS_CONTEXT && (n == 7 || n == 8)),
                  CRMF_E_TEMPLATE_UID);
    }
    CM_TRY(der_get_optional(&s, DER_CONTEXT_CONS(9), &tm.extensions, &present));
    if (present) {
        CM_TRY(crmf_extensions_check(tm.extensions));
    }
    // Anything left is a field out of order or of the wrong form.
    CM_ENSURE(der_reader_empty(&s), CM_E_DER_UNEXPECTED_TAG);
    *out = tm;
    *r = t;
    return cm_result_make(CM_OK);
}

static void crmf_time_marshal(der_builder *b, uint32_t n, uint32_t tag, int64_t v)
{
    der_mark m;
    der_open(b, &m, DER_CONTEXT_CONS(n));
    if (tag == DER_TAG_UTC_TIME) {
        der_put_utctime(b, v);
    } else if (tag == DER_TAG_GENERALIZED_TIME) {
        der_put_gentime(b, v);
    } else {
        der_put_time(b, v);
    }
    der_close(b, &m);
}

static void crmf_explicit_marshal(der_builder *b, uint32_t n, cm_span whole)
{
    der_mark m;
    der_open(b, &m, DER_CONTEXT_CONS(n));
    der_put_raw(b, whole);
    der_close(b, &m);
}

void crmf_template_marshal(der_builder *b, const crmf_template *tm)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 2);
    if (tm->has_version) {
        der_put_i64_tagged(b, DER_CONTEXT(0), tm->version);
    }
    if (tm->serial.len > 0) {
        der_put_tlv(b, DER_CONTEXT(1), tm->serial);
    }
    if (tm->signing_alg.len > 0) {
        der_put_tlv(b, DER_CONTEXT_CONS(2), tm->signing_alg);
    }
    if (tm->issuer.len > 0) {
        crmf_explicit_marshal(b, 3, tm->issuer);
    }
    if (tm->has_not_before || tm->has_not_after) {
        der_mark v;
        der_open(b, &v, DER_CONTEXT_CONS(4));
        if (tm->has_not_before) {
            crmf_time_marshal(b, 0, tm->not_before_tag, tm->not_before);
        }
        if (tm->has_not_after) {
            crmf_time_marshal(b, 1, tm->not_after_tag, tm->not_after);
        }
        der_close(b, &v);
    }
    if (tm->subject.len > 0) {
        crmf_explicit_marshal(b, 5, tm->subject);
    }
    if (tm->public_key.len > 0) {
        der_put_tlv(b, DER_CONTEXT_CONS(6), tm->public_key);
    }
    if (tm->extensions.len > 0) {
        der_put_tlv(b, DER_CONTEXT_CONS(9), tm->extensions);
    }
    der_close(b, &m);
}

// ---------------------------------------------------------------------------------------------
// CertRequest (RFC 4211 §5) and Controls (§6)

// crmf_controls_decode decodes the controls certmint understands and refuses a control type
// that appears twice (the quadratic check is bounded by CRMF_MAX_CONTROLS).
static cm_result crmf_controls_decode(crmf_cert_request *req)
{
    for (size_t i = 0; i < req->num_controls; i++) {
        const crmf_attr *a = &req->controls[i];
        for (size_t j = 0; j < i; j++) {
            CM_ENSURE(!cm_span_eq(req->controls[j].oid, a->oid), CRMF_E_DUPLICATE_CONTROL);
        }
        der_reader v;
        der_reader_init(&v, a->value);
        if (der_oid_is(a->oid, DER_OID_REGCTRL_OLD_CERT_ID)) {
            // id-regCtrl-oldCertID: OldCertId ::= CertId (§6.5)
            CM_ENSURE(cm_ok(crmf_cert_id_parse(&v, &req->old_cert_id)), CRMF_E_BAD_CONTROL);
            req->has_old_cert_id = true;
        } else if (der_oid_is(a->oid, DER_OID_REGCTRL_REG_TOKEN)) {
            // id-regCtrl-regToken: RegToken ::= UTF8String (§6.1)
            CM_ENSURE(cm_ok(der_get_string(&v, DER_TAG_UTF8_STRING, &req->reg_token)),
                      CRMF_E_BAD_CONTROL);
            req->has_reg_token = true;
        }
    }
    return cm_result_make(CM_OK);
}

// CertRequest ::= SEQUENCE {
//     certReqId     INTEGER,
//     certTemplate  CertTemplate,
//     controls      Controls OPTIONAL }
// Controls ::= SEQUENCE SIZE(1..MAX) OF AttributeTypeAndValue
cm_result crmf_cert_request_parse(cm_arena *arena, der_reader *r, crmf_cert_request *out)
{
    der_reader t = *r;
    der_reader s;
    crmf_cert_request req;
    memset(&req, 0, sizeof(req));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &s, &req.whole));
    CM_TRY(der_get_i64(&s, &req.cert_req_id));
    CM_TRY(crmf_template_parse(&s, &req.tmpl));
    if (!der_reader_empty(&s)) {
        CM_TRY(crmf_attr_seq_parse(arena, &s, CRMF_MAX_CONTROLS, &req.controls, &req.num_controls));
        CM_TRY(crmf_controls_decode(&req));
    }
    CM_TRY(der_expect_end(&s));
    *out = req;
    *r = t;
    return cm_result_make(CM_OK);
}

void crmf_cert_request_marshal(der_builder *b, const crmf_cert_request *req)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 2);
    der_put_i64(b, req->cert_req_id);
    crmf_template_marshal(b, &req->tmpl);
    if (req->num_controls > 0) {
        crmf_attr_seq_marshal(b, req->controls, req->num_controls);
    }
    der_close(b, &m);
}

// ---------------------------------------------------------------------------------------------
// ProofOfPossession (RFC 4211 §4)

// POPOSigningKeyInput ::= SEQUENCE {
//     authInfo CHOICE { sender [0] GeneralName, publicKeyMAC PKMACValue },
//     publicKey SubjectPublicKeyInfo }
// PKMACValue ::= SEQUENCE { algId AlgorithmIdentifier, value BIT STRING }
static cm_result crmf_poposk_input_check(cm_span body)
{
    der_reader in;
    der_reader_init(&in, body);
    if (der_peek_is(&in, DER_CONTEXT_CONS(0))) {
        der_reader gn;
        crmf_general_name sender;
        CM_TRY(der_enter(&in, DER_CONTEXT_CONS(0), &gn));
        CM_TRY(crmf_general_name_parse(&gn, &sender));
        CM_TRY(der_expect_end(&gn));
    } else {
        der_reader mac;
        der_reader alg;
        cm_span bits;
        uint8_t unused;
        CM_TRY(der_enter(&in, DER_TAG_SEQUENCE, &mac));
        CM_TRY(der_enter(&mac, DER_TAG_SEQUENCE, &alg));
        CM_TRY(der_get_bitstring(&mac, &bits, &unused));
        CM_TRY(der_expect_end(&mac));
    }
    crmf_spki key;
    CM_TRY(crmf_spki_read(&in, &key));
    return der_expect_end(&in);
}

// POPOSigningKey ::= SEQUENCE {
//     poposkInput         [0] POPOSigningKeyInput OPTIONAL,
//     algorithmIdentifier AlgorithmIdentifier,
//     signature           BIT STRING }
static cm_result crmf_poposk_parse(der_reader *p, crmf_popo *popo)
{
    CM_TRY(der_get_optional(p, DER_CONTEXT_CONS(0), &popo->poposk_input, &popo->has_poposk_input));
    if (popo->has_poposk_input) {
        CM_TRY(crmf_poposk_input_check(popo->poposk_input));
    }
    der_reader q = *p;
    cm_span alg_body;
    CM_TRY(der_get_tlv(&q, DER_TAG_SEQUENCE, &alg_body));
    CM_TRY(crmf_alg_id_check(alg_body));
    CM_TRY(der_get_element(p, DER_TAG_SEQUENCE, &popo->alg));
    uint8_t unused;
    CM_TRY(der_get_bitstring(p, &popo->signature, &unused));
    CM_ENSURE(unused == 0, CM_E_DER_BITSTRING);
    return der_expect_end(p);
}

// POPOPrivKey ::= CHOICE {
//     thisMessage       [0] BIT STRING,   -- deprecated
//     subsequentMessage [1] SubsequentMessage,
//     dhMAC             [2] BIT STRING,   -- deprecated
//     agreeMAC          [3] PKMACValue,
//     encryptedKey      [4] EnvelopedData }
// SubsequentMessage ::= INTEGER { encrCert (0), challengeResp (1) }
static cm_result crmf_popo_priv_key_parse(der_reader *p, crmf_popo *popo)
{
    uint32_t tag;
    cm_span body;
    CM_TRY(der_get_any(p, &tag, &body, &popo->priv_key));
    CM_ENSURE((tag & DER_CLASS_MASK) == DER_CLASS_CONTEXT, CRMF_E_BAD_CHOICE);
    uint32_t n = tag & DER_TAG_NUMBER_MASK;
    CM_ENSURE(n <= 4, CRMF_E_BAD_CHOICE);
    bool cons = (tag & DER_CONSTRUCTED) != 0;
    CM_ENSURE(cons == (n >= 3), CRMF_E_BAD_CHOICE);
    if (n == 0 || n == 2) {
        cm_span bits;
        uint8_t unused;
        CM_TRY(der_parse_bitstring(body, &bits, &unused));
    } else if (n == 1) {
        uint64_t v;
        CM_TRY(der_parse_int(body));
        CM_ENSURE(cm_ok(der_parse_u64(body, &v)) && v <= 1, CRMF_E_BAD_CHOICE);
    }
    popo->priv_key_choice = n;
    return der_expect_end(p);
}

// ProofOfPossession ::= CHOICE {
//     raVerified      [0] NULL,
//     signature       [1] POPOSigningKey,
//     keyEncipherment [2] POPOPrivKey,
//     keyAgreement    [3] POPOPrivKey }
static cm_result crmf_popo_parse(der_reader *r, crmf_popo *out)
{
    der_reader t = *r;
    der_reader p;
    crmf_popo popo;
    memset(&popo, 0, sizeof(popo));
    uint32_t tag;
    CM_TRY(der_peek_tag(&t, &tag));
    if (tag == DER_CONTEXT(0)) {
        cm_span body;
        CM_TRY(der_get_element(&t, tag, &popo.whole));
        der_reader w;
        der_reader_init(&w, popo.whole);
        CM_TRY(der_get_tlv(&w, tag, &body));
        CM_ENSURE(body.len == 0, CM_E_DER_NULL);
        popo.type = CRMF_POPO_RA_VERIFIED;
    } else if (tag == DER_CONTEXT_CONS(1)) {
        CM_TRY(crmf_enter_whole(&t, tag, &p, &popo.whole));
        popo.type = CRMF_POPO_SIGNATURE;
        CM_TRY(crmf_poposk_parse(&p, &popo));
    } else if (tag == DER_CONTEXT_CONS(2) || tag == DER_CONTEXT_CONS(3)) {
        CM_TRY(crmf_enter_whole(&t, tag, &p, &popo.whole));
        popo.type =
            tag == DER_CONTEXT_CONS(2) ? CRMF_POPO_KEY_ENCIPHERMENT : CRMF_POPO_KEY_AGREEMENT;
        CM_TRY(crmf_popo_priv_key_parse(&p, &popo));
    } else {
        CM_BAIL(CRMF_E_BAD_CHOICE);
    }
    *out = popo;
    *r = t;
    return cm_result_make(CM_OK);
}

void crmf_popo_marshal(der_builder *b, const crmf_popo *popo)
{
    der_mark m;
    switch (popo->type) {
    case CRMF_POPO_ABSENT:
        break;
    case CRMF_POPO_RA_VERIFIED:
        der_put_tlv(b, DER_CONTEXT(0), cm_span_make(NULL, 0));
        break;
    case CRMF_POPO_SIGNATURE:
        der_open(b, &m, DER_CONTEXT_CONS(1));
        if (popo->has_poposk_input) {
            der_put_tlv(b, DER_CONTEXT_CONS(0), popo->poposk_input);
        }
        der_put_raw(b, popo->alg);
        der_put_bitstring(b, popo->signature, 0);
        der_close(b, &m);
        break;
    case CRMF_POPO_KEY_ENCIPHERMENT:
    case CRMF_POPO_KEY_AGREEMENT:
        der_open(b, &m, DER_CONTEXT_CONS(popo->type == CRMF_POPO_KEY_ENCIPHERMENT ? 2 : 3));
        der_put_raw(b, popo->priv_key);
        der_close(b, &m);
        break;
    default:
        der_builder_fail(b, CM_E_INVALID_ARG);
        break;
    }
}

// ---------------------------------------------------------------------------------------------
// CertReqMsg and CertReqMessages (RFC 4211 §3)

// CertReqMsg ::= SEQUENCE {
//     certReq   CertRequest,
//     popo      ProofOfPossession  OPTIONAL,
//     regInfo   SEQUENCE SIZE(1..MAX) OF AttributeTypeAndValue OPTIONAL }
cm_result crmf_msg_parse(cm_arena *arena, der_reader *r, crmf_cert_req_msg *out)
{
    der_reader t = *r;
    der_reader s;
    crmf_cert_req_msg msg;
    memset(&msg, 0, sizeof(msg));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &s, &msg.whole));
    CM_TRY(crmf_cert_request_parse(arena, &s, &msg.req));
    if (!der_reader_empty(&s) && !der_peek_is(&s, DER_TAG_SEQUENCE)) {
        CM_TRY(crmf_popo_parse(&s, &msg.popo));
    }
    if (!der_reader_empty(&s)) {
        CM_TRY(crmf_attr_seq_parse(arena, &s, CRMF_MAX_REG_INFO, &msg.reg_info, &msg.num_reg_info));
    }
    CM_TRY(der_expect_end(&s));
    *out = msg;
    *r = t;
    return cm_result_make(CM_OK);
}

void crmf_msg_marshal(der_builder *b, const crmf_cert_req_msg *msg)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 2);
    crmf_cert_request_marshal(b, &msg->req);
    crmf_popo_marshal(b, &msg->popo);
    if (msg->num_reg_info > 0) {
        crmf_attr_seq_marshal(b, msg->reg_info, msg->num_reg_info);
    }
    der_close(b, &m);
}

// CertReqMessages ::= SEQUENCE SIZE (1..MAX) OF CertReqMsg
cm_result crmf_msgs_parse(cm_arena *arena, der_reader *r, crmf_cert_req_msgs *out)
{
    der_reader t = *r;
    der_reader s;
    crmf_cert_req_msgs msgs;
    memset(&msgs, 0, sizeof(msgs));
    CM_TRY(crmf_enter_whole(&t, DER_TAG_SEQUENCE, &s, &msgs.whole));
    size_t n = 0;
    der_reader probe = s;
    while (!der_reader_empty(&probe)) {
        CM_ENSURE(n < CRMF_MAX_REQ_MSGS, CM_E_DER_TOO_MANY);
        CM_TRY(der_get_any(&probe, NULL, NULL, NULL));
        n++;
    }
    CM_ENSURE(n > 0, CRMF_E_EMPTY);
    msgs.msgs = cm_arena_alloc(arena, n * sizeof(*msgs.msgs));
    CM_ENSURE(msgs.msgs != NULL, CM_E_NOMEM);
    for (size_t i = 0; i < n; i++) {
        CM_TRY(crmf_msg_parse(arena, &s, &msgs.msgs[i]));
    }
    CM_TRY(der_expect_end(&s));
    msgs.num_msgs = n;
    *out = msgs;
    *r = t;
    return cm_result_make(CM_OK);
}

cm_result crmf_msgs_from_der(cm_arena *arena, crmf_cert_req_msgs *out, cm_span der)
{
    der_reader r;
    der_reader_init(&r, der);
    crmf_cert_req_msgs msgs;
    CM_TRY(crmf_msgs_parse(arena, &r, &msgs));
    CM_TRY(der_expect_end(&r));
    *out = msgs;
    return cm_result_make(CM_OK);
}

void crmf_msgs_marshal(der_builder *b, const crmf_cert_req_msgs *msgs)
{
    if (msgs->num_msgs == 0 || msgs->msgs == NULL) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 2);
    for (size_t i = 0; i < msgs->num_msgs; i++) {
        crmf_msg_marshal(b, &msgs->msgs[i]);
    }
    der_close(b, &m);
}
