// PKIBody: parse and marshal every body type a CA receives or sends (RFC 9810 §5.1.2, §5.3).
#include <string.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static cm_result ok(void)
{
    return cm_result_make(CM_OK);
}

// enter_seq_of enters a SEQUENCE OF, counts its elements (at most |cap|, at least |min|) and
// allocates |*out_items| of |elem_size| each from |arena|.
static cm_result enter_seq_of(cm_arena *arena, der_reader *r, der_reader *out_seq, size_t cap,
                              size_t min, size_t elem_size, void **out_items, size_t *out_num)
{
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, out_seq));
    der_reader c = *out_seq;
    size_t n = 0;
    while (!der_reader_empty(&c)) {
        CM_ENSURE(n < cap, CM_E_DER_TOO_MANY);
        CM_TRY(der_get_any(&c, NULL, NULL, NULL));
        n++;
    }
    CM_ENSURE(n >= min, CMP_E_EMPTY_SEQUENCE);
    // Never NULL, even for no elements (cm_arena_alloc(0) returns a valid pointer).
    void *items = cm_arena_alloc(arena, n * elem_size);
    CM_ENSURE(items != NULL, CM_E_NOMEM);
    memset(items, 0, n * elem_size);
    *out_items = items;
    *out_num = n;
    return ok();
}

// get_opt_element reads an OPTIONAL element of tag |tag| whole; |*out| is empty when absent.
static cm_result get_opt_element(der_reader *r, uint32_t tag, cm_span *out)
{
    *out = cm_span_make(NULL, 0);
    if (der_peek_is(r, tag)) {
        CM_TRY(der_get_element(r, tag, out));
    }
    return ok();
}

static cm_result get_opt_free_text(der_reader *r, cm_span *out)
{
    *out = cm_span_make(NULL, 0);
    if (der_peek_is(r, DER_TAG_SEQUENCE)) {
        CM_TRY(cmp_free_text_parse(out, r));
    }
    return ok();
}

// PKIStatusInfo ::= SEQUENCE { status PKIStatus, statusString PKIFreeText OPTIONAL,
//     failInfo PKIFailureInfo OPTIONAL }
// PKIStatus ::= INTEGER { accepted (0) .. keyUpdateWarning (6) }      (RFC 9810 §5.2.3)
CM_RESULT cmp_status_info_parse(cmp_status_info *out, der_reader *r)
{
    der_reader rr = *r;
    der_reader seq;
    cmp_status_info si = {0};
    CM_TRY(der_enter(&rr, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_i64(&seq, &si.status));
    CM_ENSURE(si.status >= CMP_STATUS_ACCEPTED && si.status <= CMP_STATUS_KEY_UPDATE_WARNING,
              CMP_E_BAD_STATUS);
    CM_TRY(get_opt_free_text(&seq, &si.status_string));
    if (der_peek_is(&seq, DER_TAG_BIT_STRING)) {
        CM_TRY(der_get_bitstring_flags(&seq, &si.fail_info));
        si.has_fail_info = true;
    }
    CM_TRY(der_expect_end(&seq));
    *out = si;
    *r = rr;
    return ok();
}

void cmp_status_info_marshal(der_builder *b, const cmp_status_info *si)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_i64(b, si->status);
    if (si->status_string.len > 0) {
        der_put_raw(b, si->status_string);
    }
    if (si->has_fail_info) {
        der_put_bitstring_flags(b, si->fail_info);
    }
    der_close(b, &m);
}

// ---------------------------------------------------------------------------------------------
// ip / cp / kup

// CertifiedKeyPair ::= SEQUENCE { certOrEncCert CertOrEncCert,
//     privateKey [0] EncryptedKey OPTIONAL, publicationInfo [1] PKIPublicationInfo OPTIONAL }
// CertOrEncCert ::= CHOICE { certificate [0] CMPCertificate, encryptedCert [1] EncryptedKey }
// (RFC 9810 §5.3.4; EXPLICIT TAGS)
static cm_result parse_certified_key_pair(cmp_cert_response *cr, der_reader *r)
{
    der_reader seq;
    der_reader t;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &seq));
    if (der_peek_is(&seq, DER_CONTEXT_CONS(0))) {
        CM_TRY(der_enter(&seq, DER_CONTEXT_CONS(0), &t));
        CM_TRY(der_get_element(&t, DER_TAG_SEQUENCE, &cr->cert));
        CM_TRY(der_expect_end(&t));
    } else {
        CM_TRY(der_get_element(&seq, DER_CONTEXT_CONS(1), &cr->encrypted_cert));
    }
    CM_TRY(get_opt_element(&seq, DER_CONTEXT_CONS(0), &cr->private_key));
    CM_TRY(get_opt_element(&seq, DER_CONTEXT_CONS(1), &cr->publication_info));
    CM_TRY(der_expect_end(&seq));
    cr->has_certified_key_pair = true;
    return ok();
}

// CertResponse ::= SEQUENCE { certReqId INTEGER, status PKIStatusInfo,
//     certifiedKeyPair CertifiedKeyPair OPTIONAL, rspInfo OCTET STRING OPTIONAL }
static cm_result parse_cert_response(cmp_cert_response *cr, der_reader *r)
{
    der_reader seq;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_i64(&seq, &cr->cert_req_id));
    CM_TRY(cmp_status_info_parse(&cr->status, &seq));
    if (der_peek_is(&seq, DER_TAG_SEQUENCE)) {
        CM_TRY(parse_certified_key_pair(cr, &seq));
    }
    if (der_peek_is(&seq, DER_TAG_OCTET_STRING)) {
        CM_TRY(der_get_octets(&seq, &cr->rsp_info.v));
        cr->rsp_info.present = true;
    }
    return der_expect_end(&seq);
}

// CertRepMessage ::= SEQUENCE {
//     caPubs   [1] SEQUENCE SIZE (1..MAX) OF CMPCertificate OPTIONAL,
//     response     SEQUENCE OF CertResponse }                      (RFC 9810 §5.3.4)
static cm_result parse_cert_rep(cm_arena *arena, cmp_cert_rep *out, der_reader *r)
{
    der_reader seq;
    der_reader t;
    der_reader list;
    void *items = NULL;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &seq));
    bool present;
    CM_TRY(der_enter_optional(&seq, DER_CONTEXT_CONS(1), &t, &present));
    if (present) {
        CM_TRY(enter_seq_of(arena, &t, &list, CMP_MAX_CA_PUBS, 1, sizeof(cm_span), &items,
                            &out->num_ca_pubs));
        CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
        CM_TRY(der_expect_end(&t));
        cm_span *certs = items;
        for (size_t i = 0; i < out->num_ca_pubs; i++) {
            CM_TRY(der_get_element(&list, DER_TAG_SEQUENCE, &certs[i]));
        }
        out->ca_pubs = certs;
    }
    CM_TRY(enter_seq_of(arena, &seq, &list, CMP_MAX_RESPONSES, 0, sizeof(cmp_cert_response), &items,
                        &out->num_responses));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    cmp_cert_response *rs = items;
    for (size_t i = 0; i < out->num_responses; i++) {
        CM_TRY(parse_cert_response(&rs[i], &list));
    }
    out->responses = rs;
    return der_expect_end(&seq);
}

static void put_cert_rep(der_builder *b, const cmp_cert_rep *rep)
{
    der_mark seq;
    der_mark t;
    der_mark list;
    der_mark ckp;
    der_open_hint(b, &seq, DER_TAG_SEQUENCE, 3);
    if (rep->num_ca_pubs > 0) {
        der_open_hint(b, &t, DER_CONTEXT_CONS(1), 3);
        der_open_hint(b, &list, DER_TAG_SEQUENCE, 3);
        for (size_t i = 0; i < rep->num_ca_pubs; i++) {
            der_put_raw(b, rep->ca_pubs[i]);
        }
        der_close(b, &list);
        der_close(b, &t);
    }
    der_open_hint(b, &list, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < rep->num_responses; i++) {
        const cmp_cert_response *cr = &rep->responses[i];
        der_mark resp;
        der_open_hint(b, &resp, DER_TAG_SEQUENCE, 3);
        der_put_i64(b, cr->cert_req_id);
        cmp_status_info_marshal(b, &cr->status);
        if (cr->has_certified_key_pair) {
            der_open_hint(b, &ckp, DER_TAG_SEQUENCE, 3);
            if (cr->cert.len > 0) {
                der_open_hint(b, &t, DER_CONTEXT_CONS(0), 3);
                der_put_raw(b, cr->cert); // spliced, never re-encoded
                der_close(b, &t);
            } else {
                der_put_raw(b, cr->encrypted_cert);
            }
            der_put_raw(b, cr->private_key);
            der_put_raw(b, cr->publication_info);
            der_close(b, &ckp);
        }
        if (cr->rsp_info.present) {
            der_put_octets(b, cr->rsp_info.v);
        }
        der_close(b, &resp);
    }
    der_close(b, &list);
    der_close(b, &seq);
}

// ---------------------------------------------------------------------------------------------
// rr / rp

// crlEntryDetails: Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
// Extension ::= SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE,
//     extnValue OCTET STRING }                                         (RFC 5280 §4.1)
// with the reason code CRLReason ::= ENUMERATED under id-ce-cRLReasons (RFC 5280 §5.3.1).
static cm_result parse_crl_entry_details(cmp_rev_details *rd, der_reader *r)
{
    CM_TRY(der_get_element(r, DER_TAG_SEQUENCE, &rd->crl_entry_details));
    der_reader outer;
    der_reader exts;
    der_reader_init(&outer, rd->crl_entry_details);
    CM_TRY(der_enter(&outer, DER_TAG_SEQUENCE, &exts));
    size_t n = 0;
    while (!der_reader_empty(&exts)) {
        CM_ENSURE(++n <= CMP_MAX_CRL_ENTRY_EXTS, CM_E_DER_TOO_MANY);
        der_reader ext;
        cm_span oid;
        cm_span value;
        CM_TRY(der_enter(&exts, DER_TAG_SEQUENCE, &ext));
        CM_TRY(der_get_oid(&ext, &oid));
        if (der_peek_is(&ext, DER_TAG_BOOLEAN)) {
            bool critical;
            CM_TRY(der_get_bool(&ext, &critical));
            CM_ENSURE(critical, CM_E_DER_BOOLEAN); // DER: the DEFAULT FALSE is never encoded
        }
        CM_TRY(der_get_octets(&ext, &value));
        CM_TRY(der_expect_end(&ext));
        if (der_oid_is(oid, DER_OID_CE_CRL_REASON)) {
            der_reader v;
            der_reader_init(&v, value);
            CM_ENSURE(!rd->has_reason, CMP_E_BAD_CRL_REASON);
            CM_ENSURE(cm_ok(der_get_enum(&v, &rd->reason)) && der_reader_empty(&v) &&
                          rd->reason <= 10 && rd->reason != 7,
                      CMP_E_BAD_CRL_REASON);
            rd->has_reason = true;
        }
    }
    CM_ENSURE(n > 0, CMP_E_EMPTY_SEQUENCE);
    return ok();
}

// RevReqContent ::= SEQUENCE OF RevDetails
// RevDetails ::= SEQUENCE { certDetails CertTemplate,
//     crlEntryDetails Extensions{{...}} OPTIONAL }                    (RFC 9810 §5.3.9)
static cm_result parse_rev_req(cm_arena *arena, cmp_body *out, der_reader *r)
{
    der_reader list;
    void *items = NULL;
    CM_TRY(enter_seq_of(arena, r, &list, CMP_MAX_REV_DETAILS, 0, sizeof(cmp_rev_details), &items,
                        &out->u.rr.num));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    cmp_rev_details *rds = items;
    for (size_t i = 0; i < out->u.rr.num; i++) {
        der_reader seq;
        CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &seq));
        CM_TRY(crmf_template_parse(&seq, &rds[i].tmpl));
        if (!der_reader_empty(&seq)) {
            CM_TRY(parse_crl_entry_details(&rds[i], &seq));
        }
        CM_TRY(der_expect_end(&seq));
    }
    out->u.rr.items = rds;
    return ok();
}

static void put_rev_req(der_builder *b, const cmp_body *body)
{
    der_mark list;
    der_mark seq;
    der_open_hint(b, &list, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < body->u.rr.num; i++) {
        const cmp_rev_details *rd = &body->u.rr.items[i];
        der_open_hint(b, &seq, DER_TAG_SEQUENCE, 3);
        crmf_template_marshal(b, &rd->tmpl);
        der_put_raw(b, rd->crl_entry_details);
        der_close(b, &seq);
    }
    der_close(b, &list);
}

// RevRepContent ::= SEQUENCE { status SEQUENCE SIZE (1..MAX) OF PKIStatusInfo,
//     revCerts [0] SEQUENCE SIZE (1..MAX) OF CertId OPTIONAL,
//     crls     [1] SEQUENCE SIZE (1..MAX) OF CertificateList OPTIONAL } (RFC 9810 §5.3.10)
static cm_result parse_rev_rep(cm_arena *arena, cmp_rev_rep *out, der_reader *r)
{
    der_reader seq;
    der_reader list;
    void *items = NULL;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &seq));
    CM_TRY(enter_seq_of(arena, &seq, &list, CMP_MAX_REV_DETAILS, 1, sizeof(cmp_status_info), &items,
                        &out->num_status));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    cmp_status_info *st = items;
    for (size_t i = 0; i < out->num_status; i++) {
        CM_TRY(cmp_status_info_parse(&st[i], &list));
    }
    out->status = st;
    CM_TRY(get_opt_element(&seq, DER_CONTEXT_CONS(0), &out->rev_certs));
    CM_TRY(get_opt_element(&seq, DER_CONTEXT_CONS(1), &out->crls));
    return der_expect_end(&seq);
}

static void put_rev_rep(der_builder *b, const cmp_rev_rep *rp)
{
    der_mark seq;
    der_mark list;
    der_open_hint(b, &seq, DER_TAG_SEQUENCE, 3);
    der_open(b, &list, DER_TAG_SEQUENCE);
    for (size_t i = 0; i < rp->num_status; i++) {
        cmp_status_info_marshal(b, &rp->status[i]);
    }
    der_close(b, &list);
    der_put_raw(b, rp->rev_certs);
    der_put_raw(b, rp->crls);
    der_close(b, &seq);
}

// ---------------------------------------------------------------------------------------------
// certConf, pollReq, pollRep, genm/genp, error

// CertConfirmContent ::= SEQUENCE OF CertStatus
// CertStatus ::= SEQUENCE { certHash OCTET STRING, certReqId INTEGER,
//     statusInfo PKIStatusInfo OPTIONAL,
//     hashAlg [0] AlgorithmIdentifier{DIGEST-ALGORITHM, {...}} OPTIONAL } (RFC 9810 §5.3.18)
// "The hashAlg field SHOULD be used only in exceptional cases ... only with cmp2021(3)".
static cm_result parse_cert_conf(cm_arena *arena, cmp_body *out, der_reader *r, int64_t pvno)
{
    der_reader list;
    void *items = NULL;
    CM_TRY(enter_seq_of(arena, r, &list, CMP_MAX_RESPONSES, 0, sizeof(cmp_cert_status), &items,
                        &out->u.conf.num));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    cmp_cert_status *cs = items;
    for (size_t i = 0; i < out->u.conf.num; i++) {
        der_reader seq;
        der_reader t;
        CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &seq));
        CM_TRY(der_get_octets(&seq, &cs[i].cert_hash));
        CM_TRY(der_get_i64(&seq, &cs[i].cert_req_id));
        if (der_peek_is(&seq, DER_TAG_SEQUENCE)) {
            CM_TRY(cmp_status_info_parse(&cs[i].status_info, &seq));
            cs[i].has_status_info = true;
        }
        bool present;
        CM_TRY(der_enter_optional(&seq, DER_CONTEXT_CONS(0), &t, &present));
        if (present) {
            CM_TRY(cmp_alg_id_parse(&cs[i].hash_alg, &t));
            CM_TRY(der_expect_end(&t));
            CM_ENSURE(pvno == 3, CMP_E_HASHALG_PVNO);
            cs[i].has_hash_alg = true;
        }
        CM_TRY(der_expect_end(&seq));
    }
    out->u.conf.items = cs;
    return ok();
}

static void put_cert_conf(der_builder *b, const cmp_body *body)
{
    der_mark list;
    der_mark seq;
    der_mark t;
    der_open(b, &list, DER_TAG_SEQUENCE);
    for (size_t i = 0; i < body->u.conf.num; i++) {
        const cmp_cert_status *cs = &body->u.conf.items[i];
        der_open(b, &seq, DER_TAG_SEQUENCE);
        der_put_octets(b, cs->cert_hash);
        der_put_i64(b, cs->cert_req_id);
        if (cs->has_status_info) {
            cmp_status_info_marshal(b, &cs->status_info);
        }
        if (cs->has_hash_alg) {
            der_open(b, &t, DER_CONTEXT_CONS(0));
            der_put_raw(b, cs->hash_alg.whole);
            der_close(b, &t);
        }
        der_close(b, &seq);
    }
    der_close(b, &list);
}

// PollReqContent ::= SEQUENCE OF SEQUENCE { certReqId INTEGER }     (RFC 9810 §5.3.22)
static cm_result parse_poll_req(cm_arena *arena, cmp_body *out, der_reader *r)
{
    der_reader list;
    void *items = NULL;
    CM_TRY(enter_seq_of(arena, r, &list, CMP_MAX_RESPONSES, 0, sizeof(int64_t), &items,
                        &out->u.poll_req.num));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    int64_t *ids = items;
    for (size_t i = 0; i < out->u.poll_req.num; i++) {
        der_reader seq;
        CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &seq));
        CM_TRY(der_get_i64(&seq, &ids[i]));
        CM_TRY(der_expect_end(&seq));
    }
    out->u.poll_req.cert_req_ids = ids;
    return ok();
}

static void put_poll_req(der_builder *b, const cmp_body *body)
{
    der_mark list;
    der_mark seq;
    der_open(b, &list, DER_TAG_SEQUENCE);
    for (size_t i = 0; i < body->u.poll_req.num; i++) {
        der_open(b, &seq, DER_TAG_SEQUENCE);
        der_put_i64(b, body->u.poll_req.cert_req_ids[i]);
        der_close(b, &seq);
    }
    der_close(b, &list);
}

// PollRepContent ::= SEQUENCE OF SEQUENCE { certReqId INTEGER, checkAfter INTEGER,
//     reason PKIFreeText OPTIONAL }                                   (RFC 9810 §5.3.22)
static cm_result parse_poll_rep(cm_arena *arena, cmp_body *out, der_reader *r)
{
    der_reader list;
    void *items = NULL;
    CM_TRY(enter_seq_of(arena, r, &list, CMP_MAX_RESPONSES, 0, sizeof(cmp_poll_rep), &items,
                        &out->u.poll_rep.num));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    cmp_poll_rep *pr = items;
    for (size_t i = 0; i < out->u.poll_rep.num; i++) {
        der_reader seq;
        CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &seq));
        CM_TRY(der_get_i64(&seq, &pr[i].cert_req_id));
        CM_TRY(der_get_i64(&seq, &pr[i].check_after));
        CM_TRY(get_opt_free_text(&seq, &pr[i].reason));
        CM_TRY(der_expect_end(&seq));
    }
    out->u.poll_rep.items = pr;
    return ok();
}

static void put_poll_rep(der_builder *b, const cmp_body *body)
{
    der_mark list;
    der_mark seq;
    der_open(b, &list, DER_TAG_SEQUENCE);
    for (size_t i = 0; i < body->u.poll_rep.num; i++) {
        const cmp_poll_rep *pr = &body->u.poll_rep.items[i];
        der_open(b, &seq, DER_TAG_SEQUENCE);
        der_put_i64(b, pr->cert_req_id);
        der_put_i64(b, pr->check_after);
        der_put_raw(b, pr->reason);
        der_close(b, &seq);
    }
    der_close(b, &list);
}

// GenMsgContent ::= SEQUENCE OF InfoTypeAndValue
// GenRepContent ::= SEQUENCE OF InfoTypeAndValue                     (RFC 9810 §5.3.19-20)
static cm_result parse_gen(cm_arena *arena, cmp_body *out, der_reader *r)
{
    der_reader list;
    void *items = NULL;
    CM_TRY(
        enter_seq_of(arena, r, &list, CMP_MAX_ITAVS, 0, sizeof(cmp_itav), &items, &out->u.gen.num));
    cmp_itav *it = items;
    for (size_t i = 0; i < out->u.gen.num; i++) {
        CM_TRY(cmp_itav_parse(&it[i], &list));
    }
    out->u.gen.items = it;
    return ok();
}

static void put_gen(der_builder *b, const cmp_body *body)
{
    der_mark list;
    der_open_hint(b, &list, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < body->u.gen.num; i++) {
        cmp_itav_marshal(b, &body->u.gen.items[i]);
    }
    der_close(b, &list);
}

// ErrorMsgContent ::= SEQUENCE { pKIStatusInfo PKIStatusInfo, errorCode INTEGER OPTIONAL,
//     errorDetails PKIFreeText OPTIONAL }                             (RFC 9810 §5.3.21)
static cm_result parse_error(cmp_error_msg *out, der_reader *r)
{
    der_reader seq;
    CM_TRY(der_enter(r, DER_TAG_SEQUENCE, &seq));
    CM_TRY(cmp_status_info_parse(&out->status, &seq));
    if (der_peek_is(&seq, DER_TAG_INTEGER)) {
        CM_TRY(der_get_i64(&seq, &out->error_code));
        out->has_error_code = true;
    }
    CM_TRY(get_opt_free_text(&seq, &out->error_details));
    return der_expect_end(&seq);
}

static void put_error(der_builder *b, const cmp_error_msg *e)
{
    der_mark seq;
    der_open(b, &seq, DER_TAG_SEQUENCE);
    cmp_status_info_marshal(b, &e->status);
    if (e->has_error_code) {
        der_put_i64(b, e->error_code);
    }
    der_put_raw(b, e->error_details);
    der_close(b, &seq);
}

// NestedMessageContent ::= PKIMessages
// PKIMessages ::= SEQUENCE SIZE (1..MAX) OF PKIMessage               (RFC 9810 §5.3.23)
// Each inner message is parsed by cmp_msg_parse one nesting level down, so the recursion is
// bounded by opts->max_nesting (at most CMP_MAX_NESTING_LIMIT).
static cm_result parse_nested(cm_arena *arena, cmp_body *out, der_reader *r,
                              const cmp_parse_opts *opts)
{
    cmp_parse_opts down = {CMP_DEFAULT_MAX_NESTING, 0, false, 0, false};
    if (opts != NULL) {
        down = *opts;
    }
    if (down.max_nesting > CMP_MAX_NESTING_LIMIT) {
        down.max_nesting = CMP_MAX_NESTING_LIMIT;
    }
    CM_ENSURE(down.max_nesting > 0, CMP_E_NESTING_DEPTH);
    down.max_nesting--;
    size_t cap = down.max_nested == 0 ? CMP_MAX_NESTED : down.max_nested;
    cap = cap > CMP_MAX_NESTED_LIMIT ? CMP_MAX_NESTED_LIMIT : cap;
    const bool shallow = down.nested_shallow;
    // Deeper nested bodies get the default count and are parsed (see cmp_parse_opts).
    down.max_nested = 0;
    down.nested_shallow = false;
    der_reader list;
    void *items = NULL;
    CM_TRY(enter_seq_of(arena, r, &list, cap, 1, shallow ? sizeof(cm_span) : sizeof(cmp_msg),
                        &items, &out->u.nested.num));
    CM_ENSURE(items != NULL, CM_E_STATE); // for the analyzer: never NULL on success
    if (shallow) {
        cm_span *ders = items;
        for (size_t i = 0; i < out->u.nested.num; i++) {
            CM_TRY(der_get_element(&list, DER_TAG_SEQUENCE, &ders[i]));
        }
        out->u.nested.ders = ders;
        return ok();
    }
    cmp_msg *msgs = items;
    for (size_t i = 0; i < out->u.nested.num; i++) {
        CM_TRY(cmp_msg_parse(arena, &msgs[i], &list, &down)); // NOLINT(misc-no-recursion)
    }
    out->u.nested.msgs = msgs;
    return ok();
}

// ---------------------------------------------------------------------------------------------
// PKIBody

// parse_content reads the element inside the [n] tag according to |type|.
static cm_result parse_content(cm_arena *arena, cmp_body *out, der_reader *r, int64_t pvno,
                               const cmp_parse_opts *opts)
{
    switch (out->type) {
    case CMP_BODY_IR:
    case CMP_BODY_CR:
    case CMP_BODY_KUR:
    case CMP_BODY_CCR: // CertReqMessages (RFC 9810 §5.3.11)
        return crmf_msgs_parse(arena, r, &out->u.req);
    case CMP_BODY_P10CR:
        return crmf_csr_parse(r, &out->u.p10);
    case CMP_BODY_IP:
    case CMP_BODY_CP:
    case CMP_BODY_KUP:
    case CMP_BODY_CCP: // CertRepMessage (RFC 9810 §5.3.11)
        return parse_cert_rep(arena, &out->u.rep, r);
    case CMP_BODY_RR:
        return parse_rev_req(arena, out, r);
    case CMP_BODY_RP:
        return parse_rev_rep(arena, &out->u.rp, r);
    case CMP_BODY_PKICONF:
        // PKIConfirmContent ::= NULL
        return der_get_null(r);
    case CMP_BODY_NESTED:
        return parse_nested(arena, out, r, opts); // NOLINT(misc-no-recursion)
    case CMP_BODY_GENM:
    case CMP_BODY_GENP:
        return parse_gen(arena, out, r);
    case CMP_BODY_ERROR:
        return parse_error(&out->u.error, r);
    case CMP_BODY_CERT_CONF:
        return parse_cert_conf(arena, out, r, pvno);
    case CMP_BODY_POLL_REQ:
        return parse_poll_req(arena, out, r);
    case CMP_BODY_POLL_REP:
        return parse_poll_rep(arena, out, r);
    default:
        CM_BAIL(CMP_E_UNSUPPORTED_BODY);
    }
}

// PKIBody ::= CHOICE { ir [0] CertReqMessages, ip [1] CertRepMessage, ... ,
//     pollRep [26] PollRepContent }                 (RFC 9810 §5.1.2; EXPLICIT TAGS)
CM_RESULT cmp_body_parse(cm_arena *arena, cmp_body *out, der_reader *r, int64_t pvno,
                         const cmp_parse_opts *opts)
{
    der_reader rr = *r;
    der_reader inner;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    uint32_t tag;
    {
        der_reader copy = rr;
        CM_TRY(der_get_any(&copy, &tag, NULL, &body.whole));
    }
    CM_ENSURE((tag & (DER_CLASS_MASK | DER_CONSTRUCTED)) == (DER_CLASS_CONTEXT | DER_CONSTRUCTED),
              CMP_E_UNKNOWN_BODY);
    uint32_t n = tag & DER_TAG_NUMBER_MASK;
    CM_ENSURE(n <= CMP_BODY_POLL_REP, CMP_E_UNKNOWN_BODY);
    body.type = (cmp_body_type)n;
    CM_TRY(der_enter(&rr, tag, &inner));
    {
        der_reader copy = inner;
        CM_TRY(der_get_any(&copy, NULL, NULL, &body.content));
    }
    CM_TRY(parse_content(arena, &body, &inner, pvno, opts)); // NOLINT(misc-no-recursion)
    CM_TRY(der_expect_end(&inner));
    *out = body;
    *r = rr;
    return ok();
}

static void put_nested(der_builder *b, const cmp_body *body, uint32_t max_nesting)
{
    if (max_nesting == 0) {
        der_builder_fail(b, CMP_E_NESTING_DEPTH);
        return;
    }
    der_mark list;
    der_open_hint(b, &list, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < body->u.nested.num; i++) {
        if (body->u.nested.msgs == NULL) {
            der_put_raw(b, body->u.nested.ders[i]); // whole PKIMessage elements, verbatim
            continue;
        }
        // NOLINTNEXTLINE(misc-no-recursion): bounded by max_nesting
        cmp_msg_marshal_bounded(b, &body->u.nested.msgs[i], max_nesting - 1);
    }
    der_close(b, &list);
}

void cmp_body_marshal(der_builder *b, const cmp_body *body, uint32_t max_nesting)
{
    der_mark t;
    if ((uint32_t)body->type > CMP_BODY_POLL_REP) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_open_hint(b, &t, DER_CONTEXT_CONS((uint32_t)body->type), 3);
    switch (body->type) {
    case CMP_BODY_IR:
    case CMP_BODY_CR:
    case CMP_BODY_KUR:
    case CMP_BODY_CCR:
        crmf_msgs_marshal(b, &body->u.req);
        break;
    case CMP_BODY_P10CR:
        crmf_csr_marshal(b, &body->u.p10);
        break;
    case CMP_BODY_IP:
    case CMP_BODY_CP:
    case CMP_BODY_KUP:
    case CMP_BODY_CCP:
        put_cert_rep(b, &body->u.rep);
        break;
    case CMP_BODY_RR:
        put_rev_req(b, body);
        break;
    case CMP_BODY_RP:
        put_rev_rep(b, &body->u.rp);
        break;
    case CMP_BODY_PKICONF:
        der_put_null(b);
        break;
    case CMP_BODY_NESTED:
        put_nested(b, body, max_nesting); // NOLINT(misc-no-recursion)
        break;
    case CMP_BODY_GENM:
    case CMP_BODY_GENP:
        put_gen(b, body);
        break;
    case CMP_BODY_ERROR:
        put_error(b, &body->u.error);
        break;
    case CMP_BODY_CERT_CONF:
        put_cert_conf(b, body);
        break;
    case CMP_BODY_POLL_REQ:
        put_poll_req(b, body);
        break;
    case CMP_BODY_POLL_REP:
        put_poll_rep(b, body);
        break;
    default:
        der_builder_fail(b, CMP_E_UNSUPPORTED_BODY);
        return;
    }
    der_close(b, &t);
}
