// PKIMessage and PKIHeader: parse, header rules, marshal (RFC 9810 §5.1, Appendix F).
#include <string.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"

#define CMP_MAX_FREE_TEXT 16u

// ---------------------------------------------------------------------------------------------
// Small shared pieces

// AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER,
//                                    parameters ANY DEFINED BY algorithm OPTIONAL }
// (RFC 5280 §4.1.1.2)
CM_RESULT cmp_alg_id_parse(cmp_alg_id *out, der_reader *r)
{
    der_reader rr = *r;
    der_reader seq;
    cmp_alg_id a = {0};
    {
        der_reader copy = rr;
        CM_TRY(der_get_element(&copy, DER_TAG_SEQUENCE, &a.whole));
    }
    CM_TRY(der_enter(&rr, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_oid(&seq, &a.oid));
    if (!der_reader_empty(&seq)) {
        CM_TRY(der_get_any(&seq, NULL, NULL, &a.params));
    }
    CM_TRY(der_expect_end(&seq));
    *out = a;
    *r = rr;
    return cm_result_make(CM_OK);
}

// PKIFreeText ::= SEQUENCE SIZE (1..MAX) OF UTF8String (RFC 9810 §5.1.1)
CM_RESULT cmp_free_text_parse(cm_span *out_whole, der_reader *r)
{
    der_reader rr = *r;
    der_reader seq;
    cm_span whole;
    {
        der_reader copy = rr;
        CM_TRY(der_get_element(&copy, DER_TAG_SEQUENCE, &whole));
    }
    CM_TRY(der_enter(&rr, DER_TAG_SEQUENCE, &seq));
    size_t n = 0;
    while (!der_reader_empty(&seq)) {
        cm_span s;
        CM_ENSURE(++n <= CMP_MAX_FREE_TEXT, CM_E_DER_TOO_MANY);
        CM_TRY(der_get_string(&seq, DER_TAG_UTF8_STRING, &s));
    }
    CM_ENSURE(n > 0, CMP_E_EMPTY_SEQUENCE);
    *out_whole = whole;
    *r = rr;
    return cm_result_make(CM_OK);
}

void cmp_free_text_marshal(der_builder *b, const cm_span *texts, size_t num)
{
    if (num == 0) {
        der_builder_fail(b, CM_E_INVALID_ARG);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    for (size_t i = 0; i < num; i++) {
        der_put_string(b, DER_TAG_UTF8_STRING, texts[i]);
    }
    der_close(b, &m);
}

// InfoTypeAndValue ::= SEQUENCE { infoType OBJECT IDENTIFIER,
//                                 infoValue ANY DEFINED BY infoType OPTIONAL }
// (RFC 9810 §5.3.19)
CM_RESULT cmp_itav_parse(cmp_itav *out, der_reader *r)
{
    der_reader rr = *r;
    der_reader seq;
    cmp_itav it = {0};
    CM_TRY(der_enter(&rr, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_get_oid(&seq, &it.oid));
    if (!der_reader_empty(&seq)) {
        CM_TRY(der_get_any(&seq, NULL, NULL, &it.value));
    }
    CM_TRY(der_expect_end(&seq));
    *out = it;
    *r = rr;
    return cm_result_make(CM_OK);
}

void cmp_itav_marshal(der_builder *b, const cmp_itav *it)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    der_put_oid(b, it->oid);
    if (it->value.len > 0) {
        der_put_raw(b, it->value);
    }
    der_close(b, &m);
}

cmp_itav cmp_itav_implicit_confirm(void)
{
    static const uint8_t null_der[] = {0x05, 0x00};
    cmp_itav it = {CM_SPAN_LIT(DER_OID_IT_IMPLICIT_CONFIRM), cm_span_make(null_der, 2)};
    return it;
}

cmp_itav cmp_itav_confirm_wait_time(uint8_t buf[17], int64_t t)
{
    der_builder b;
    der_builder_init_fixed(&b, buf, 17);
    der_put_gentime(&b, t);
    cm_span v = {0};
    if (!cm_ok(der_builder_finish(&b, &v))) {
        v = cm_span_make(NULL, 0);
    }
    cmp_itav it = {CM_SPAN_LIT(DER_OID_IT_CONFIRM_WAIT_TIME), v};
    return it;
}

bool cmp_is_signature_alg(cm_span oid)
{
    const crmf_alg *a = crmf_alg_by_oid(oid);
    return a != NULL && a->kind == CRMF_ALG_KIND_SIGNATURE;
}

bool cmp_header_pvno_supported(const cmp_header *h)
{
    return h->f.pvno >= 1 && h->f.pvno <= 3;
}

// ---------------------------------------------------------------------------------------------
// Header

// parse_opt_octets reads [n] EXPLICIT OCTET STRING OPTIONAL.
static cm_result parse_opt_octets(der_reader *r, uint32_t n, cmp_opt_span *out)
{
    der_reader t;
    bool present;
    CM_TRY(der_enter_optional(r, DER_CONTEXT_CONS(n), &t, &present));
    out->present = present;
    out->v = cm_span_make(NULL, 0);
    if (present) {
        CM_TRY(der_get_octets(&t, &out->v));
        CM_TRY(der_expect_end(&t));
    }
    return cm_result_make(CM_OK);
}

// count_elements counts the elements left in |r| (a copy), failing over |cap|.
static cm_result count_elements(der_reader r, size_t cap, size_t *out)
{
    size_t n = 0;
    while (!der_reader_empty(&r)) {
        CM_ENSURE(n < cap, CM_E_DER_TOO_MANY);
        CM_TRY(der_get_any(&r, NULL, NULL, NULL));
        n++;
    }
    *out = n;
    return cm_result_make(CM_OK);
}

// certProfile value: CertProfileValue ::= SEQUENCE SIZE (1..MAX) OF UTF8String
// (RFC 9810 §5.1.1.4)
static cm_result parse_cert_profile(cm_arena *arena, cmp_header *h, cm_span value)
{
    der_reader r;
    der_reader seq;
    der_reader_init(&r, value);
    CM_ENSURE(cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) && der_reader_empty(&r),
              CMP_E_BAD_CERT_PROFILE);
    size_t n = 0;
    CM_TRY(count_elements(seq, CMP_MAX_CERT_PROFILES, &n));
    CM_ENSURE(n > 0, CMP_E_BAD_CERT_PROFILE);
    cm_span *names = cm_arena_alloc(arena, n * sizeof(*names));
    CM_ENSURE(names != NULL, CM_E_NOMEM);
    for (size_t i = 0; i < n; i++) {
        CM_ENSURE(cm_ok(der_get_string(&seq, DER_TAG_UTF8_STRING, &names[i])),
                  CMP_E_BAD_CERT_PROFILE);
    }
    h->cert_profiles = names;
    h->num_cert_profiles = n;
    return cm_result_make(CM_OK);
}

// decode_general_info interprets the generalInfo entries the CA acts on (RFC 9810 §5.1.1.1
// implicitConfirm, §5.1.1.2 confirmWaitTime, §5.1.1.3 origPKIMessage, §5.1.1.4 certProfile).
// Unknown types stay in f.general_info for a policy to decide.
static cm_result decode_general_info(cm_arena *arena, cmp_header *h)
{
    for (size_t i = 0; i < h->f.num_general_info; i++) {
        const cmp_itav *it = &h->f.general_info[i];
        if (der_oid_is(it->oid, DER_OID_IT_IMPLICIT_CONFIRM)) {
            // ImplicitConfirmValue ::= NULL
            CM_ENSURE(it->value.len == 2 && it->value.p[0] == 0x05 && it->value.p[1] == 0x00,
                      CMP_E_BAD_IMPLICIT_CONFIRM);
            h->implicit_confirm = true;
        } else if (der_oid_is(it->oid, DER_OID_IT_CONFIRM_WAIT_TIME)) {
            // ConfirmWaitTimeValue ::= GeneralizedTime
            der_reader v;
            der_reader_init(&v, it->value);
            CM_ENSURE(cm_ok(der_get_gentime(&v, &h->confirm_wait_time)) && der_reader_empty(&v),
                      CMP_E_BAD_CONFIRM_WAIT_TIME);
            h->has_confirm_wait_time = true;
        } else if (der_oid_is(it->oid, DER_OID_IT_CERT_PROFILE)) {
            CM_TRY(parse_cert_profile(arena, h, it->value));
        } else if (der_oid_is(it->oid, DER_OID_IT_ORIG_PKI_MESSAGE)) {
            // OrigPKIMessageValue ::= PKIMessages, kept as a span for the server to parse.
            CM_ENSURE(it->value.len > 0 && it->value.p[0] == 0x30, CM_E_DER_UNEXPECTED_TAG);
            h->orig_pki_message = it->value;
        }
    }
    // RFC 9483 §3.1: confirmWaitTime is for explicit confirmation; with implicitConfirm there
    // is nothing to wait for, so a header asking for both is contradictory.
    CM_ENSURE(!(h->implicit_confirm && h->has_confirm_wait_time), CMP_E_IMPLICIT_WITH_WAIT);
    return cm_result_make(CM_OK);
}

// PKIHeader: see cmp.h (RFC 9810 §5.1.1).
CM_RESULT cmp_header_parse(cm_arena *arena, cmp_header *out, der_reader *r)
{
    der_reader rr = *r;
    der_reader h;
    der_reader t;
    cmp_header hd;
    memset(&hd, 0, sizeof(hd));
    {
        der_reader copy = rr;
        CM_TRY(der_get_element(&copy, DER_TAG_SEQUENCE, &hd.whole));
    }
    CM_TRY(der_enter(&rr, DER_TAG_SEQUENCE, &h));
    cm_result res = der_get_i64(&h, &hd.f.pvno);
    CM_ENSURE(res.code != CM_E_DER_OVERFLOW, CMP_E_UNSUPPORTED_VERSION);
    CM_TRY(res);
    // sender, recipient: GeneralName (RFC 5280 §4.2.1.6), directoryName [4] the normal case.
    CM_TRY(crmf_general_name_parse(&h, &hd.sender));
    CM_TRY(crmf_general_name_parse(&h, &hd.recipient));
    hd.f.sender_gn = hd.sender.whole;
    hd.f.sender_name = hd.sender.name;
    hd.f.recipient_gn = hd.recipient.whole;
    hd.f.recipient_name = hd.recipient.name;

    bool present;
    CM_TRY(der_enter_optional(&h, DER_CONTEXT_CONS(0), &t, &present));
    if (present) {
        CM_TRY(der_get_gentime(&t, &hd.f.message_time));
        CM_TRY(der_expect_end(&t));
        hd.f.has_message_time = true;
    }
    CM_TRY(der_enter_optional(&h, DER_CONTEXT_CONS(1), &t, &present));
    if (present) {
        CM_TRY(cmp_alg_id_parse(&hd.protection_alg, &t));
        CM_TRY(der_expect_end(&t));
        hd.f.protection_alg = hd.protection_alg.whole;
    }
    CM_TRY(parse_opt_octets(&h, 2, &hd.f.sender_kid));
    CM_TRY(parse_opt_octets(&h, 3, &hd.f.recip_kid));
    CM_TRY(parse_opt_octets(&h, 4, &hd.f.transaction_id));
    CM_TRY(parse_opt_octets(&h, 5, &hd.f.sender_nonce));
    CM_TRY(parse_opt_octets(&h, 6, &hd.f.recip_nonce));
    CM_TRY(der_enter_optional(&h, DER_CONTEXT_CONS(7), &t, &present));
    if (present) {
        CM_TRY(cmp_free_text_parse(&hd.f.free_text, &t));
        CM_TRY(der_expect_end(&t));
    }
    CM_TRY(der_enter_optional(&h, DER_CONTEXT_CONS(8), &t, &present));
    if (present) {
        der_reader seq;
        CM_TRY(der_enter(&t, DER_TAG_SEQUENCE, &seq));
        CM_TRY(der_expect_end(&t));
        size_t n = 0;
        CM_TRY(count_elements(seq, CMP_MAX_GENERAL_INFO, &n));
        CM_ENSURE(n > 0, CMP_E_EMPTY_SEQUENCE);
        cmp_itav *items = cm_arena_alloc(arena, n * sizeof(*items));
        CM_ENSURE(items != NULL, CM_E_NOMEM);
        for (size_t i = 0; i < n; i++) {
            CM_TRY(cmp_itav_parse(&items[i], &seq));
        }
        hd.f.general_info = items;
        hd.f.num_general_info = n;
        CM_TRY(decode_general_info(arena, &hd));
    }
    CM_TRY(der_expect_end(&h));
    *out = hd;
    *r = rr;
    return cm_result_make(CM_OK);
}

static void put_general_name(der_builder *b, cm_span gn, cm_span name)
{
    if (gn.len > 0) {
        der_put_raw(b, gn);
        return;
    }
    der_mark m;
    der_open(b, &m, DER_CONTEXT_CONS(4));
    if (name.len > 0) {
        der_put_raw(b, name);
    } else {
        der_mark empty;
        der_open(b, &empty, DER_TAG_SEQUENCE); // NULL-DN
        der_close(b, &empty);
    }
    der_close(b, &m);
}

static void put_opt_octets(der_builder *b, uint32_t n, const cmp_opt_span *v)
{
    if (!v->present) {
        return;
    }
    der_mark m;
    der_open(b, &m, DER_CONTEXT_CONS(n));
    der_put_octets(b, v->v);
    der_close(b, &m);
}

// PKIHeader: see cmp.h (RFC 9810 §5.1.1).
void cmp_header_marshal(der_builder *b, const cmp_header_fields *h)
{
    der_mark hdr;
    der_mark t;
    der_open(b, &hdr, DER_TAG_SEQUENCE);
    der_put_i64(b, h->pvno);
    put_general_name(b, h->sender_gn, h->sender_name);
    put_general_name(b, h->recipient_gn, h->recipient_name);
    if (h->has_message_time) {
        der_open(b, &t, DER_CONTEXT_CONS(0));
        der_put_gentime(b, h->message_time);
        der_close(b, &t);
    }
    if (h->protection_alg.len > 0) {
        der_open(b, &t, DER_CONTEXT_CONS(1));
        der_put_raw(b, h->protection_alg);
        der_close(b, &t);
    }
    put_opt_octets(b, 2, &h->sender_kid);
    put_opt_octets(b, 3, &h->recip_kid);
    put_opt_octets(b, 4, &h->transaction_id);
    put_opt_octets(b, 5, &h->sender_nonce);
    put_opt_octets(b, 6, &h->recip_nonce);
    if (h->free_text.len > 0) {
        der_open(b, &t, DER_CONTEXT_CONS(7));
        der_put_raw(b, h->free_text);
        der_close(b, &t);
    }
    if (h->num_general_info > 0) {
        der_mark seq;
        der_open(b, &t, DER_CONTEXT_CONS(8));
        der_open(b, &seq, DER_TAG_SEQUENCE);
        for (size_t i = 0; i < h->num_general_info; i++) {
            cmp_itav_marshal(b, &h->general_info[i]);
        }
        der_close(b, &seq);
        der_close(b, &t);
    }
    der_close(b, &hdr);
}

// ---------------------------------------------------------------------------------------------
// Message

// check_header_rules applies the field rules of RFC 9483 §3.1-3.3 / RFC 9810 §5.1 that need
// the whole message.
static cm_result check_header_rules(const cmp_msg *m, const cmp_parse_opts *opts)
{
    const cmp_header *h = &m->header;
    bool has_alg = h->f.protection_alg.len > 0;
    CM_ENSURE(!m->has_protection || has_alg, CMP_E_PROTECTION_NO_ALG);
    CM_ENSURE(m->has_protection || !has_alg, CMP_E_ALG_NO_PROTECTION);
    if (opts != NULL && opts->require_protection_cert && has_alg &&
        cmp_is_signature_alg(h->protection_alg.oid)) {
        // The protection certificate is extraCerts[0] (RFC 9483 §3.3).
        CM_ENSURE(m->num_extra_certs > 0, CMP_E_NO_EXTRA_CERTS);
    }
    CM_ENSURE(h->f.transaction_id.present, CMP_E_NO_TRANSACTION_ID);
    CM_ENSURE(h->f.transaction_id.v.len >= CMP_MIN_NONCE_LEN, CMP_E_SHORT_TRANSACTION_ID);
    CM_ENSURE(h->f.sender_nonce.present && h->f.sender_nonce.v.len >= CMP_MIN_NONCE_LEN,
              CMP_E_BAD_SENDER_NONCE);
    CM_ENSURE(!h->f.recip_nonce.present || h->f.recip_nonce.v.len >= CMP_MIN_NONCE_LEN,
              CMP_E_BAD_RECIP_NONCE);
    return cm_result_make(CM_OK);
}

// parse_extra_certs reads extraCerts [1] SEQUENCE SIZE (1..MAX) OF CMPCertificate OPTIONAL;
// CMPCertificate ::= CHOICE { x509v3PKCert Certificate } (RFC 9810 §5.1).
static cm_result parse_extra_certs(cm_arena *arena, cmp_msg *m, der_reader *r, size_t cap)
{
    der_reader t;
    der_reader seq;
    bool present;
    CM_TRY(der_enter_optional(r, DER_CONTEXT_CONS(1), &t, &present));
    if (!present) {
        return cm_result_make(CM_OK);
    }
    CM_TRY(der_enter(&t, DER_TAG_SEQUENCE, &seq));
    CM_TRY(der_expect_end(&t));
    size_t n = 0;
    CM_TRY(count_elements(seq, cap, &n));
    CM_ENSURE(n > 0, CMP_E_EMPTY_SEQUENCE);
    cm_span *certs = cm_arena_alloc(arena, n * sizeof(*certs));
    CM_ENSURE(certs != NULL, CM_E_NOMEM);
    for (size_t i = 0; i < n; i++) {
        CM_TRY(der_get_element(&seq, DER_TAG_SEQUENCE, &certs[i]));
    }
    m->extra_certs = certs;
    m->num_extra_certs = n;
    return cm_result_make(CM_OK);
}

// parse_msg_inner is cmp_msg_parse without the unsupported-pvno mapping.
static cm_result parse_msg_inner(cm_arena *arena, cmp_msg *out, der_reader *r,
                                 const cmp_parse_opts *opts)
{
    der_reader rr = *r;
    der_reader m;
    cmp_msg msg;
    memset(&msg, 0, sizeof(msg));
    {
        der_reader copy = rr;
        CM_TRY(der_get_element(&copy, DER_TAG_SEQUENCE, &msg.whole));
    }
    CM_TRY(der_enter(&rr, DER_TAG_SEQUENCE, &m));
    CM_TRY(cmp_header_parse(arena, &msg.header, &m));
    CM_TRY(cmp_body_parse(arena, &msg.body, &m, msg.header.f.pvno, opts));
    // Header and body are adjacent: ProtectedPart's content is one contiguous span.
    const uint8_t *pp_end = msg.body.whole.p + msg.body.whole.len;
    msg.protected_part = cm_span_make(msg.header.whole.p, (size_t)(pp_end - msg.header.whole.p));

    der_reader t;
    bool present;
    CM_TRY(der_enter_optional(&m, DER_CONTEXT_CONS(0), &t, &present));
    if (present) {
        CM_TRY(der_get_bitstring(&t, &msg.protection, &msg.protection_unused));
        CM_TRY(der_expect_end(&t));
        msg.has_protection = true;
    }
    size_t cap = CMP_MAX_EXTRA_CERTS;
    if (opts != NULL && opts->max_extra_certs != 0 && opts->max_extra_certs < cap) {
        cap = opts->max_extra_certs;
    }
    CM_TRY(parse_extra_certs(arena, &msg, &m, cap));
    CM_TRY(der_expect_end(&m));
    CM_TRY(check_header_rules(&msg, opts));
    *out = msg;
    *r = rr;
    return cm_result_make(CM_OK);
}

// peek_pvno reads pvno without consuming anything; false when it is not reachable.
static bool peek_pvno(der_reader r, int64_t *out)
{
    der_reader m;
    der_reader h;
    return cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &m)) &&
           cm_ok(der_enter(&m, DER_TAG_SEQUENCE, &h)) && cm_ok(der_get_i64(&h, out));
}

// PKIMessage: see cmp.h (RFC 9810 §5.1).
CM_RESULT cmp_msg_parse(cm_arena *arena, cmp_msg *out, der_reader *r, const cmp_parse_opts *opts)
{
    cm_result res = parse_msg_inner(arena, out, r, opts);
    uint32_t cls = cm_result_class(res);
    if (cls == CM_CLASS_PROTO || cls == CM_CLASS_POLICY) {
        // A peer speaking another version gets unsupportedVersion, whatever else is wrong
        // (RFC 9810 §7).
        int64_t pvno;
        if (peek_pvno(*r, &pvno) && (pvno < 1 || pvno > 3)) {
            CM_BAIL(CMP_E_UNSUPPORTED_VERSION);
        }
    }
    return res;
}

CM_RESULT cmp_msg_from_der(cm_arena *arena, cmp_msg *out, cm_span der, const cmp_parse_opts *opts)
{
    der_reader r;
    der_reader_init(&r, der);
    CM_TRY(cmp_msg_parse(arena, out, &r, opts));
    return der_expect_end(&r);
}

// ProtectedPart ::= SEQUENCE { header PKIHeader, body PKIBody }     (RFC 9810 §5.1.3)
void cmp_protected_part_marshal(der_builder *b, const cmp_header_fields *h, const cmp_body *body)
{
    der_mark m;
    der_open_hint(b, &m, DER_TAG_SEQUENCE, 3);
    cmp_header_marshal(b, h);
    cmp_body_marshal(b, body, CMP_MAX_NESTING_LIMIT);
    der_close(b, &m);
}

static void writer_begin(cmp_msg_writer *w, der_builder *b, const cmp_header_fields *h,
                         const cmp_body *body, uint32_t max_nesting)
{
    w->b = b;
    der_open_hint(b, &w->outer, DER_TAG_SEQUENCE, 3);
    w->pp_start = b->len;
    cmp_header_marshal(b, h);
    cmp_body_marshal(b, body, max_nesting);
}

void cmp_msg_writer_begin(cmp_msg_writer *w, der_builder *b, const cmp_header_fields *h,
                          const cmp_body *body)
{
    writer_begin(w, b, h, body, CMP_MAX_NESTING_LIMIT);
}

cm_span cmp_msg_writer_protected_part(const cmp_msg_writer *w)
{
    if (!der_builder_ok(w->b) || w->b->len < w->pp_start) {
        return cm_span_make(NULL, 0);
    }
    return cm_span_make(w->b->buf + w->pp_start, w->b->len - w->pp_start);
}

void cmp_msg_writer_finish(cmp_msg_writer *w, const cm_span *protection, uint8_t unused,
                           const cm_span *extra_certs, size_t num_extra_certs)
{
    der_builder *b = w->b;
    der_mark t;
    der_mark seq;
    if (protection != NULL) {
        der_open(b, &t, DER_CONTEXT_CONS(0));
        der_put_bitstring(b, *protection, unused);
        der_close(b, &t);
    }
    if (num_extra_certs > 0) {
        der_open_hint(b, &t, DER_CONTEXT_CONS(1), 3);
        der_open_hint(b, &seq, DER_TAG_SEQUENCE, 3);
        for (size_t i = 0; i < num_extra_certs; i++) {
            der_put_raw(b, extra_certs[i]); // spliced, never re-encoded
        }
        der_close(b, &seq);
        der_close(b, &t);
    }
    der_close(b, &w->outer);
}

// PKIMessage: see cmp.h (RFC 9810 §5.1).
void cmp_msg_marshal_bounded(der_builder *b, const cmp_msg *m, uint32_t max_nesting)
{
    cmp_msg_writer w;
    writer_begin(&w, b, &m->header.f, &m->body, max_nesting);
    cmp_msg_writer_finish(&w, m->has_protection ? &m->protection : NULL, m->protection_unused,
                          m->extra_certs, m->num_extra_certs);
}

void cmp_msg_marshal(der_builder *b, const cmp_msg *m)
{
    cmp_msg_marshal_bounded(b, m, CMP_MAX_NESTING_LIMIT);
}
