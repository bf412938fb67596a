// bench/certmint_bench_check.c: HTTP response parsing and CMP response checks of
// certmint-bench (see certmint_bench.h).
#include <ctype.h>
#include <string.h>

#include "bench/certmint_bench.h"
#include "engine/cmp/cmp_protect.h"

static const char *const k_bench_fail_names[BENCH_FAIL_COUNT] = {
    [BENCH_OK] = "ok",
    [BENCH_FAIL_CONNECT] = "connect",
    [BENCH_FAIL_IO] = "io",
    [BENCH_FAIL_TIMEOUT] = "timeout",
    [BENCH_FAIL_HTTP_MALFORMED] = "http_malformed",
    [BENCH_FAIL_HTTP_STATUS] = "http_status",
    [BENCH_FAIL_CONTENT_TYPE] = "content_type",
    [BENCH_FAIL_NOT_CMP] = "not_cmp",
    [BENCH_FAIL_TRANSACTION_ID] = "transaction_id",
    [BENCH_FAIL_RECIP_NONCE] = "recip_nonce",
    [BENCH_FAIL_CMP_ERROR] = "cmp_error",
    [BENCH_FAIL_BODY_TYPE] = "body_type",
    [BENCH_FAIL_REJECTED] = "rejected",
    [BENCH_FAIL_NO_CERT] = "no_cert",
    [BENCH_FAIL_WRONG_KEY] = "wrong_key",
    [BENCH_FAIL_PROTECTION] = "protection",
    [BENCH_FAIL_CERT_SIGNATURE] = "cert_signature",
    [BENCH_FAIL_TLS] = "tls",
    [BENCH_FAIL_PRIVATE_KEY] = "private_key",
};

const char *bench_fail_name(bench_fail f)
{
    if ((unsigned)f >= BENCH_FAIL_COUNT) {
        return "?";
    }
    return k_bench_fail_names[f];
}

// ---------------------------------------------------------------------------------------------
// HTTP

// bench_span_ieq compares |s| with the lower-case literal |lit| ignoring ASCII case.
static bool bench_span_ieq(cm_span s, const char *lit)
{
    const size_t n = strlen(lit);
    if (s.len != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (tolower(s.p[i]) != lit[i]) {
            return false;
        }
    }
    return true;
}

static cm_span bench_span_trim(cm_span s)
{
    while (s.len > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t')) {
        s.len--;
    }
    return s;
}

// bench_parse_size reads a decimal Content-Length (digits only, bounded).
static bool bench_parse_size(cm_span s, size_t *out)
{
    size_t v = 0;
    if (s.len == 0 || s.len > 10) {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9') {
            return false;
        }
        v = v * 10u + (size_t)(s.p[i] - '0');
    }
    *out = v;
    return true;
}

// bench_find_crlf returns the offset of the next "\r\n" at or after |from|, or |len|.
static size_t bench_find_crlf(const uint8_t *buf, size_t from, size_t len)
{
    for (size_t i = from; i + 1 < len; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n') {
            return i;
        }
    }
    return len;
}

// bench_http_status_line reads "HTTP/1.x NNN reason".
static bool bench_http_status_line(bench_http_rsp *out, cm_span line)
{
    if (line.len < 12 || memcmp(line.p, "HTTP/1.", 7) != 0 || !isdigit(line.p[7]) ||
        line.p[8] != ' ' || !isdigit(line.p[9]) || !isdigit(line.p[10]) || !isdigit(line.p[11]) ||
        (line.len > 12 && line.p[12] != ' ')) {
        return false;
    }
    out->minor = line.p[7] - '0';
    out->status = (line.p[9] - '0') * 100 + (line.p[10] - '0') * 10 + (line.p[11] - '0');
    return true;
}

bench_http_state bench_http_parse(bench_http_rsp *out, const uint8_t *buf, size_t len)
{
    memset(out, 0, sizeof(*out));
    size_t eol = bench_find_crlf(buf, 0, len);
    if (eol == len) {
        return len > BENCH_HTTP_MAX_HEADER ? BENCH_HTTP_BAD : BENCH_HTTP_NEED_MORE;
    }
    if (!bench_http_status_line(out, cm_span_make(buf, eol))) {
        return BENCH_HTTP_BAD;
    }
    bool have_length = false;
    size_t body_len = 0;
    int conn = 0; // 1 close, 2 keep-alive
    size_t pos = eol + 2;
    for (;;) {
        eol = bench_find_crlf(buf, pos, len);
        if (eol == len) {
            return len > BENCH_HTTP_MAX_HEADER ? BENCH_HTTP_BAD : BENCH_HTTP_NEED_MORE;
        }
        if (eol == pos) { // the empty line ends the header block
            pos += 2;
            break;
        }
        if (eol > BENCH_HTTP_MAX_HEADER) {
            return BENCH_HTTP_BAD;
        }
        const uint8_t *colon = memchr(buf + pos, ':', eol - pos);
        if (colon == NULL) {
            return BENCH_HTTP_BAD;
        }
        const cm_span name = cm_span_make(buf + pos, (size_t)(colon - (buf + pos)));
        const cm_span value =
            bench_span_trim(cm_span_make(colon + 1, (size_t)((buf + eol) - (colon + 1))));
        if (bench_span_ieq(name, "content-length")) {
            size_t v;
            if (have_length || !bench_parse_size(value, &v)) {
                return BENCH_HTTP_BAD;
            }
            have_length = true;
            body_len = v;
        } else if (bench_span_ieq(name, "content-type")) {
            out->content_type = value;
        } else if (bench_span_ieq(name, "transfer-encoding")) {
            return BENCH_HTTP_BAD;
        } else if (bench_span_ieq(name, "connection")) {
            if (bench_span_ieq(value, "close")) {
                conn = 1;
            } else if (bench_span_ieq(value, "keep-alive")) {
                conn = 2;
            }
        }
        pos = eol + 2;
    }
    if (!have_length || body_len > BENCH_HTTP_MAX_BODY) {
        return BENCH_HTTP_BAD;
    }
    if (len - pos < body_len) {
        return BENCH_HTTP_NEED_MORE;
    }
    out->body = cm_span_make(buf + pos, body_len);
    out->consumed = pos + body_len;
    out->keep_alive = out->minor >= 1 ? conn != 1 : conn == 2;
    return BENCH_HTTP_DONE;
}

bench_fail bench_check_http(const bench_http_rsp *h)
{
    if (h->status != 200) {
        return BENCH_FAIL_HTTP_STATUS;
    }
    cm_span ct = h->content_type;
    const uint8_t *semi = ct.len > 0 ? memchr(ct.p, ';', ct.len) : NULL;
    if (semi != NULL) {
        ct.len = (size_t)(semi - ct.p);
    }
    if (!bench_span_ieq(bench_span_trim(ct), "application/pkixcmp")) {
        return BENCH_FAIL_CONTENT_TYPE;
    }
    return BENCH_OK;
}

// ---------------------------------------------------------------------------------------------
// CMP

// bench_check_cert_rep checks the CertRepMessage of an ip/cp: one response, accepted, with the
// requested key.
static bench_fail bench_check_cert_rep(const cmp_cert_rep *rep, const bench_expect *e)
{
    if (rep->num_responses != 1) {
        return BENCH_FAIL_NO_CERT;
    }
    const cmp_cert_response *cr = &rep->responses[0];
    if (cr->status.status != CMP_STATUS_ACCEPTED &&
        cr->status.status != CMP_STATUS_GRANTED_WITH_MODS) {
        return BENCH_FAIL_REJECTED;
    }
    if (!cr->has_certified_key_pair || cr->cert.len == 0) {
        return BENCH_FAIL_NO_CERT;
    }
    if (e->spki.len == 0) {
        return BENCH_OK;
    }
    cm_span spki;
    if (!cm_ok(cmp_protect_cert_spki(&spki, cr->cert))) {
        return BENCH_FAIL_NO_CERT;
    }
    return cm_span_eq(spki, e->spki) ? BENCH_OK : BENCH_FAIL_WRONG_KEY;
}

bench_fail bench_check_cmp(cm_arena *arena, cmp_msg *out, const bench_expect *e, cm_span body)
{
    if (!cm_ok(cmp_msg_from_der(arena, out, body, NULL))) {
        return BENCH_FAIL_NOT_CMP;
    }
    const cmp_header_fields *h = &out->header.f;
    if (!h->transaction_id.present || !cm_span_eq(h->transaction_id.v, e->transaction_id)) {
        return BENCH_FAIL_TRANSACTION_ID;
    }
    if (!h->recip_nonce.present || !cm_span_eq(h->recip_nonce.v, e->sender_nonce)) {
        return BENCH_FAIL_RECIP_NONCE;
    }
    if (out->body.type == CMP_BODY_ERROR) {
        return BENCH_FAIL_CMP_ERROR;
    }
    if (out->body.type != e->body) {
        return BENCH_FAIL_BODY_TYPE;
    }
    if (e->body == CMP_BODY_IP || e->body == CMP_BODY_CP || e->body == CMP_BODY_KUP) {
        return bench_check_cert_rep(&out->body.u.rep, e);
    }
    if (e->body == CMP_BODY_RP) {
        // rr of one certificate: one PKIStatusInfo, accepted (RFC 9483 §4.2).
        const cmp_rev_rep *rp = &out->body.u.rp;
        if (rp->num_status != 1) {
            return BENCH_FAIL_BODY_TYPE;
        }
        const int64_t st = rp->status[0].status;
        return st == CMP_STATUS_ACCEPTED || st == CMP_STATUS_GRANTED_WITH_MODS
                   ? BENCH_OK
                   : BENCH_FAIL_REJECTED;
    }
    if (e->body == CMP_BODY_GENP) {
        // genm caCerts: exactly one InfoTypeAndValue carrying the certificates (RFC 9483 §4.3.1).
        const bool ok = out->body.u.gen.num == 1 && out->body.u.gen.items[0].value.len > 0;
        return ok ? BENCH_OK : BENCH_FAIL_NO_CERT;
    }
    return BENCH_OK;
}

bench_fail bench_check_nested(cm_arena *arena, cmp_msg *out, const bench_expect *e, cm_span body,
                              size_t num)
{
    // The inner answers are only delimited here; each is parsed once, by bench_check_cmp.
    const cmp_parse_opts shallow = {
        .max_nesting = 1, .max_nested = CMP_MAX_NESTED_LIMIT, .nested_shallow = true};
    if (!cm_ok(cmp_msg_from_der(arena, out, body, &shallow))) {
        return BENCH_FAIL_NOT_CMP;
    }
    const cmp_header_fields *h = &out->header.f;
    if (!h->transaction_id.present || !cm_span_eq(h->transaction_id.v, e->transaction_id)) {
        return BENCH_FAIL_TRANSACTION_ID;
    }
    if (!h->recip_nonce.present || !cm_span_eq(h->recip_nonce.v, e->sender_nonce)) {
        return BENCH_FAIL_RECIP_NONCE;
    }
    if (out->body.type == CMP_BODY_ERROR) {
        return BENCH_FAIL_CMP_ERROR;
    }
    if (out->body.type != CMP_BODY_NESTED || out->body.u.nested.num != num) {
        return BENCH_FAIL_BODY_TYPE;
    }
    return BENCH_OK;
}

bench_fail bench_check_response(cm_arena *arena, cmp_msg *out, const bench_expect *e,
                                const bench_http_rsp *h)
{
    const bench_fail f = bench_check_http(h);
    if (f != BENCH_OK) {
        return f;
    }
    return bench_check_cmp(arena, out, e, h->body);
}
