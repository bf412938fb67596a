// The CMP request state machine (see srv.h). One srv_request per message; everything derived
// from the message lives in the request's arena, so error paths simply return.
#include "engine/server/srv.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "engine/der/der_oid.h"

#define SRV_NONCE_LEN         16u
#define SRV_DEFAULT_ARENA_CAP ((size_t)1 << 20)
#define SRV_MAX_EXTRA_OUT     (2 * CA_MAX_CHAIN + 2)

// Transaction states kept in the store (store_txn.state).
enum {
    SRV_TXN_WAIT_CONF = 1, // a certificate waits for certConf
    SRV_TXN_IMPLICIT = 2,  // issued with implicitConfirm: nothing more to come
    SRV_TXN_CONFIRMED = 3, // certConf accepted it
    SRV_TXN_REJECTED = 4,  // certConf rejected it (revoked)
};

typedef enum srv_state {
    SRV_ST_NEW = 0,
    SRV_ST_SIGN_CERT, // the certificate's signature is with the HSM
    SRV_ST_STORE,     // records are with the store
    SRV_ST_SIGN_RESP, // the response's protection is with the HSM
    SRV_ST_DONE,
} srv_state;

struct srv_engine {
    srv_params p;
};

struct srv_worker {
    srv_engine *e;
    cm_cq *cq;
    crmf_crypto crypto;
    cmp_digests dig;
    store_reader *reader;
};

struct srv_request {
    srv_worker *w;
    void *user;
    cm_arena arena;
    const srv_ca *ca;
    srv_state state;
    uint32_t jobs_out;
    int64_t now;

    // The request.
    cm_span der;
    bool have_msg;
    cmp_msg msg;
    bool have_header; // msg.header usable for the response (even if the body failed)
    int body_type;

    // Authentication.
    cmp_prot_kind prot_kind;
    bool mac_ok;           // the MAC verified with mac_key
    cmp_mac_key mac_key;   // kept for the response (same salt and parameters)
    bool sig_ok;           // the signature verified with signer_cert
    bool signer_is_ra;     // signer_cert is one of the CA's configured RA certificates
    cm_span signer_cert;   // extraCerts[0]
    ca_cert_fields signer; // its fields, once sig_ok
    uint8_t signer_hash[32];

    // Issuance.
    bool implicit;
    int64_t cert_req_id;
    cmp_body_type resp_type;
    ca_request creq;
    ca_decision dec;
    ca_ext exts[CA_MAX_REQ_EXTS];
    uint8_t serial[CA_SERIAL_LEN];
    uint8_t spki_hash[32];
    cm_span tbs;
    cm_span cert;
    cm_span ca_sig_alg;
    uint8_t sig[HSM_MAX_SIG_LEN];
    hsm_job hjob;
    store_job sjobs[3];
    size_t num_sjobs;
    bool revoke_after_txn_failure;

    // certConf.
    bool conf_reject;
    store_txn txn;

    // The response.
    der_builder rb;
    cmp_msg_writer mw;
    cmp_header_fields rh;
    cmp_itav ginfo[1];
    uint8_t nonce[SRV_NONCE_LEN];
    bool nonce_set; // the nonce was drawn early (the transaction records it)
    cm_span extra[SRV_MAX_EXTRA_OUT];
    size_t num_extra;
    cm_span response;
    cm_result error;
    int fail_bit;
    uint64_t mark[SRV_STAGE_COUNT + 1]; // monotonic ns at the start and the end of each stage
};

// srv_mark records that |stage| ended now (stages not passed through stay 0).
static void srv_mark(srv_request *req, srv_stage stage)
{
    req->mark[stage + 1] = cm_time_mono_ns();
}

// --- failure mapping ----------------------------------------------------------------------

uint32_t srv_failinfo(cm_result r)
{
    switch (r.code) {
    case SRV_E_BAD_TIME:
        return CMP_FAIL_BAD_TIME;
    case SRV_E_RECIP_NONCE:
        return CMP_FAIL_BAD_RECIPIENT_NONCE;
    case SRV_E_UNPROTECTED:
    case SRV_E_UNKNOWN_SENDER:
    case SRV_E_SENDER_MISMATCH:
    case SRV_E_WRONG_CREDENTIAL:
        return CMP_FAIL_BAD_MESSAGE_CHECK;
    case SRV_E_UNTRUSTED:
        return CMP_FAIL_SIGNER_NOT_TRUSTED;
    case SRV_E_NOT_AUTHORIZED:
    case SRV_E_RA_VERIFIED:
        return CMP_FAIL_NOT_AUTHORIZED;
    case SRV_E_REQ_COUNT:
    case SRV_E_CERT_REQ_ID:
    case SRV_E_BODY:
    case SRV_E_UNKNOWN_TXN:
    case SRV_E_NO_CONFIRM_NEEDED:
        return CMP_FAIL_BAD_REQUEST;
    case SRV_E_TXN_IN_USE:
    case STORE_E_TXN_IN_USE:
        return CMP_FAIL_TRANSACTION_ID_IN_USE;
    case SRV_E_CONFIRMED:
    case STORE_E_ALREADY_CONFIRMED:
        return CMP_FAIL_CERT_CONFIRMED;
    case SRV_E_CERT_HASH:
    case SRV_E_OLD_CERT:
    case STORE_E_NOT_FOUND:
        return CMP_FAIL_BAD_CERT_ID;
    case SRV_E_OLD_CERT_REVOKED:
    case STORE_E_ALREADY_REVOKED:
        return CMP_FAIL_CERT_REVOKED;
    case STORE_E_CONFIRM_EXPIRED:
        return CMP_FAIL_BAD_REQUEST;
    case SRV_E_WRONG_AUTHORITY:
        return CMP_FAIL_WRONG_AUTHORITY;
    case SRV_E_OVERLOAD:
    case HSM_E_QUEUE_FULL:
        return CMP_FAIL_SYSTEM_UNAVAIL;
    default:
        break;
    }
    if (CM_CODE_DETAIL(r.code) >= 0x700 && CM_CODE_DETAIL(r.code) < 0x800) {
        const int ca_bit = ca_failinfo_bit(r);
        if (ca_bit >= 0) {
            return (uint32_t)ca_bit;
        }
    }
    const int crmf_bit = crmf_failinfo_bit(r.code);
    const int prot_bit = cmp_protect_failinfo(r.code);
    if (CM_CODE_DETAIL(r.code) >= 0x2c0 && CM_CODE_DETAIL(r.code) < 0x300 && prot_bit >= 0) {
        return (uint32_t)prot_bit;
    }
    if (CM_CODE_DETAIL(r.code) >= 0x100 && CM_CODE_DETAIL(r.code) < 0x200 && crmf_bit >= 0) {
        return (uint32_t)crmf_bit;
    }
    // cmp_failinfo_from_code answers with a mask; we keep one bit.
    const uint32_t mask = cmp_failinfo_from_code(r);
    return mask != 0 ? (uint32_t)__builtin_ctz(mask) : CMP_FAIL_SYSTEM_FAILURE;
}

// --- engine and workers -------------------------------------------------------------------

cm_result srv_engine_new(srv_engine **out, const srv_params *p)
{
    CM_ENSURE(p->hsm != NULL && p->store != NULL && p->prot != NULL && p->num_cas >= 1,
              CM_E_INVALID_ARG);
    srv_engine *e = calloc(1, sizeof(*e));
    CM_ENSURE(e != NULL, CM_E_NOMEM);
    e->p = *p;
    if (e->p.arena_cap == 0) {
        e->p.arena_cap = SRV_DEFAULT_ARENA_CAP;
    }
    *out = e;
    return cm_result_make(CM_OK);
}

void srv_engine_free(srv_engine *e)
{
    free(e);
}

const srv_ca *srv_engine_find_ca(const srv_engine *e, cm_span name)
{
    if (name.len == 0) {
        return &e->p.cas[0];
    }
    for (size_t i = 0; i < e->p.num_cas; i++) {
        const char *n = e->p.cas[i].name;
        if (strlen(n) == name.len && memcmp(n, name.p, name.len) == 0) {
            return &e->p.cas[i];
        }
    }
    return NULL;
}

cm_result srv_engine_maintain(srv_engine *e, int64_t now, uint64_t *out_revoked)
{
    store_job sweep, expire;
    store_job_init(&sweep, STORE_OP_SWEEP, NULL);
    sweep.u.ref.time = now;
    sweep.u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    store_job_init(&expire, STORE_OP_TXN_EXPIRE, NULL);
    expire.u.ref.time = now;
    CM_TRY(store_run(e->p.store, &sweep));
    CM_TRY(store_run(e->p.store, &expire));
    *out_revoked = sweep.out_value;
    return cm_result_make(CM_OK);
}

cm_result srv_worker_new(srv_worker **out, srv_engine *e, cm_cq *cq)
{
    srv_worker *w = calloc(1, sizeof(*w));
    CM_ENSURE(w != NULL, CM_E_NOMEM);
    w->e = e;
    w->cq = cq;
    cm_result r = crmf_crypto_init(&w->crypto, NULL, NULL);
    if (cm_ok(r)) {
        r = cmp_digests_init(&w->dig);
    }
    if (cm_ok(r)) {
        r = store_reader_open(e->p.store, &w->reader);
    }
    if (!cm_ok(r)) {
        srv_worker_free(w);
        return r;
    }
    *out = w;
    return cm_result_make(CM_OK);
}

cm_result srv_worker_crl(srv_worker *w, const srv_ca *ca, cm_arena *arena, cm_span *out_crl)
{
    store_crl crl;
    CM_TRY(store_crl_get(w->reader, arena, &crl, ca->name));
    CM_ENSURE(crl.crl_der.len != 0, STORE_E_NOT_FOUND);
    *out_crl = crl.crl_der;
    return cm_result_make(CM_OK);
}

void srv_worker_free(srv_worker *w)
{
    if (w == NULL) {
        return;
    }
    if (w->reader != NULL) {
        store_reader_close(w->reader);
    }
    cmp_digests_cleanup(&w->dig);
    crmf_crypto_cleanup(&w->crypto);
    free(w);
}

// --- requests -----------------------------------------------------------------------------

srv_request *srv_request_new(srv_worker *w, void *user)
{
    srv_request *req = calloc(1, sizeof(*req));
    if (req == NULL) {
        return NULL;
    }
    req->w = w;
    req->user = user;
    req->body_type = -1;
    req->fail_bit = -1;
    cm_arena_init(&req->arena, 16 * 1024, w->e->p.arena_cap);
    return req;
}

void srv_request_free(srv_request *req)
{
    if (req == NULL) {
        return;
    }
    cmp_mac_key_cleanse(&req->mac_key);
    cm_arena_cleanup(&req->arena);
    free(req);
}

void *srv_request_user(const srv_request *req)
{
    return req->user;
}

cm_arena *srv_request_arena(srv_request *req)
{
    return &req->arena;
}

void srv_request_set_user(srv_request *req, void *user)
{
    req->user = user;
}

uint8_t *srv_request_body(srv_request *req, size_t len)
{
    return cm_arena_alloc(&req->arena, len);
}

cm_span srv_request_response(const srv_request *req)
{
    return req->response;
}

void srv_request_summary(const srv_request *req, srv_summary *out)
{
    out->body_type = req->body_type;
    out->fail_bit = req->fail_bit;
    out->error = req->error;
    uint64_t prev = req->mark[0];
    for (int i = 0; i < SRV_STAGE_COUNT; i++) {
        const uint64_t end = req->mark[i + 1];
        out->stage_ns[i] = end != 0 && prev != 0 && end >= prev ? end - prev : 0;
        if (end != 0) {
            prev = end;
        }
    }
}

// --- responses ----------------------------------------------------------------------------

// srv_sign_submit hands |msg| to the HSM with |key|; the request continues on completion.
static void srv_sign_submit(srv_request *req, const hsm_key *key, hsm_sig_alg alg, cm_span msg,
                            srv_state next);

static void srv_finish_response(srv_request *req, const cm_span *prot)
{
    srv_mark(req, SRV_STAGE_RESPOND);
    cmp_msg_writer_finish(&req->mw, prot, 0, req->extra, req->num_extra);
    cm_span out;
    if (!cm_ok(der_builder_finish(&req->rb, &out))) {
        // The arena cap or an encoding bug: nothing sensible can be sent.
        req->response = cm_span_make(NULL, 0);
        req->error = cm_result_make(SRV_E_INTERNAL);
    } else {
        req->response = out;
    }
    req->state = SRV_ST_DONE;
}

// srv_add_extra_cert appends |c| to the response's extraCerts unless it is there already.
static void srv_add_extra_cert(srv_request *req, cm_span c)
{
    bool dup = false;
    for (size_t k = 0; k < req->num_extra; k++) {
        dup |= cm_span_eq(req->extra[k], c);
    }
    if (!dup && req->num_extra < SRV_MAX_EXTRA_OUT) {
        req->extra[req->num_extra++] = c;
    }
}

// srv_add_extra appends the certificates of |a| (its certificate, then its chain) to the
// response's extraCerts, skipping duplicates.
static void srv_add_extra(srv_request *req, const ca_authority *a)
{
    const size_t n = ca_authority_num_chain(a);
    for (size_t i = 0; i <= n; i++) {
        srv_add_extra_cert(req, i == 0 ? ca_authority_cert(a) : ca_authority_chain(a, i - 1));
    }
}

// srv_add_extra_first puts the certificates of |a| in front of the extraCerts gathered so far:
// the CMP protection certificate must come first (RFC 9483 §3.3, RFC 9810 §5.1).
static void srv_add_extra_first(srv_request *req, const ca_authority *a)
{
    cm_span prev[SRV_MAX_EXTRA_OUT];
    const size_t num_prev = req->num_extra;
    memcpy(prev, req->extra, num_prev * sizeof(prev[0]));
    req->num_extra = 0;
    srv_add_extra(req, a);
    for (size_t i = 0; i < num_prev; i++) {
        srv_add_extra_cert(req, prev[i]);
    }
}

// srv_respond writes |body| under a response header and protects it like the request: the
// request's MAC key when its MAC verified (unless the CA signs all responses), otherwise a
// signature by the CMP key (an HSM job; the request then completes later).
static void srv_respond(srv_request *req, const cmp_body *body)
{
    const srv_ca *ca = req->ca;
    const cmp_header *h = req->have_header ? &req->msg.header : NULL;
    cmp_header_fields *rh = &req->rh;
    memset(rh, 0, sizeof(*rh));
    // Answer in the client's version; outside our range, the nearest we support (RFC 9810 §7).
    rh->pvno = h == NULL ? 2 : (h->f.pvno > 3 ? 3 : (h->f.pvno < 2 ? 2 : h->f.pvno));
    rh->sender_name = ca_authority_subject(ca->cmp_cert);
    if (h != NULL) {
        rh->recipient_gn = h->f.sender_gn;
        rh->recipient_name = h->f.sender_name;
        rh->transaction_id = h->f.transaction_id;
        if (h->f.sender_nonce.present) {
            rh->recip_nonce = h->f.sender_nonce;
        }
    }
    if (!rh->transaction_id.present) {
        // RFC 9810 §5.1.1: the server generates a transactionID when the client gave none.
        uint8_t *tid = cm_arena_alloc(&req->arena, SRV_NONCE_LEN);
        if (tid != NULL && RAND_bytes(tid, SRV_NONCE_LEN) == 1) {
            rh->transaction_id.present = true;
            rh->transaction_id.v = cm_span_make(tid, SRV_NONCE_LEN);
        }
    }
    if (!req->nonce_set) {
        (void)RAND_bytes(req->nonce, sizeof(req->nonce));
        req->nonce_set = true;
    }
    rh->sender_nonce.present = true;
    rh->sender_nonce.v = cm_span_make(req->nonce, sizeof(req->nonce));
    rh->has_message_time = true;
    rh->message_time = req->now;
    if (req->implicit &&
        (body->type == CMP_BODY_IP || body->type == CMP_BODY_CP || body->type == CMP_BODY_KUP)) {
        req->ginfo[0] = cmp_itav_implicit_confirm();
        rh->general_info = req->ginfo;
        rh->num_general_info = 1;
    }
    const bool use_mac = req->mac_ok && !ca->sign_mac_responses;
    // The protection algorithm goes into the header before the protected part is written.
    der_builder alg;
    der_builder_init_arena(&alg, &req->arena, 128);
    if (use_mac) {
        cmp_mac_key_put_alg(&alg, &req->mac_key);
        if (h != NULL && h->f.sender_kid.present) {
            rh->sender_kid = h->f.sender_kid; // names the shared secret
        }
    } else {
        hsm_sig_alg_marshal(&alg, ca->cmp_sig_alg);
        rh->sender_kid.present = true;
        rh->sender_kid.v = ca_authority_ski(ca->cmp_cert);
        srv_add_extra_first(req, ca->cmp_cert);
    }
    cm_span alg_der;
    if (!cm_ok(der_builder_finish(&alg, &alg_der))) {
        req->response = cm_span_make(NULL, 0);
        req->state = SRV_ST_DONE;
        return;
    }
    rh->protection_alg = alg_der;
    der_builder_init_arena(&req->rb, &req->arena, 4096);
    cmp_msg_writer_begin(&req->mw, &req->rb, rh, body);
    const cm_span pp = cmp_msg_writer_protected_part(&req->mw);
    if (use_mac) {
        uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
        size_t mac_len = 0;
        if (!cm_ok(cmp_mac_compute(req->w->e->p.prot, mac, sizeof(mac), &mac_len, &req->mac_key,
                                   pp))) {
            der_builder_fail(&req->rb, SRV_E_INTERNAL);
        }
        const cm_span prot = cm_span_make(mac, mac_len);
        srv_finish_response(req, &prot);
        return;
    }
    cm_span tbs;
    if (pp.len == 0 || !cm_ok(cmp_protect_sign_input(&req->arena, &tbs, pp))) {
        srv_finish_response(req, NULL);
        return;
    }
    srv_sign_submit(req, ca->cmp_key, ca->cmp_sig_alg, tbs, SRV_ST_SIGN_RESP);
}

// srv_fail answers |r| with an error message (RFC 9810 §5.3.21): status rejection, the
// failure bit and a short statusString naming the code.
static void srv_fail(srv_request *req, cm_result r)
{
    req->error = r;
    req->fail_bit = (int)srv_failinfo(r);
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_ERROR;
    body.u.error.status.status = CMP_STATUS_REJECTION;
    body.u.error.status.has_fail_info = true;
    body.u.error.status.fail_info = CMP_FAILINFO_BIT((uint32_t)req->fail_bit);
    der_builder t;
    der_builder_init_arena(&t, &req->arena, 128);
    const char *name = cm_result_name(r);
    const cm_span text = cm_span_make(name, strlen(name));
    cmp_free_text_marshal(&t, &text, 1);
    cm_span st;
    if (cm_ok(der_builder_finish(&t, &st))) {
        body.u.error.status.status_string = st;
    }
    req->implicit = false;
    srv_respond(req, &body);
}

// --- asynchronous steps -------------------------------------------------------------------

static void srv_sign_submit(srv_request *req, const hsm_key *key, hsm_sig_alg alg, cm_span msg,
                            srv_state next)
{
    hsm_job_init(&req->hjob, req->w->cq, key, alg, msg, req->sig, sizeof(req->sig));
    req->hjob.user = req;
    hsm_job *jobs[1] = {&req->hjob};
    cm_result r = hsm_pool_submit(req->w->e->p.hsm, jobs, 1);
    if (!cm_ok(r)) {
        if (next == SRV_ST_SIGN_RESP) {
            // Not even the error can be signed: answer without protection.
            srv_finish_response(req, NULL);
            return;
        }
        srv_fail(req, r.code == HSM_E_QUEUE_FULL ? cm_result_make(SRV_E_OVERLOAD) : r);
        return;
    }
    req->state = next;
    req->jobs_out = 1;
}

static void srv_store_submit(srv_request *req)
{
    store_job *jobs[3];
    for (size_t i = 0; i < req->num_sjobs; i++) {
        req->sjobs[i].user = req;
        jobs[i] = &req->sjobs[i];
    }
    req->state = SRV_ST_STORE;
    req->jobs_out = (uint32_t)req->num_sjobs;
    store_submit_batch(req->w->e->p.store, jobs, req->num_sjobs);
}

// --- header and protection ------------------------------------------------------------------

static cm_result srv_check_header(srv_request *req)
{
    const cmp_header *h = &req->msg.header;
    CM_ENSURE(cmp_header_pvno_supported(h), CMP_E_UNSUPPORTED_VERSION);
    // recipient (RFC 4210 §5.1.1): a directoryName other than the NULL-DN must name this CA,
    // its CMP protection certificate, or the issuer of the sender's protection certificate
    // (what clients such as openssl cmp put there by default, e.g. a device vendor's CA);
    // anything else means the message is meant for another authority.
    // A signature-protected message without extraCerts fails its protection check anyway.
    const bool unverifiable = req->msg.has_protection && req->msg.num_extra_certs == 0 &&
                              cmp_is_signature_alg(h->protection_alg.oid);
    if (h->recipient.tag == CRMF_GN_DIRECTORY_NAME && h->recipient.name.len > 2 && !unverifiable) {
        bool ours = cm_span_eq(h->recipient.name, ca_authority_subject(req->ca->authority)) ||
                    cm_span_eq(h->recipient.name, ca_authority_subject(req->ca->cmp_cert));
        ca_cert_fields f;
        if (!ours && req->msg.num_extra_certs > 0 &&
            cm_ok(ca_cert_fields_parse(&f, req->msg.extra_certs[0]))) {
            ours = cm_span_eq(h->recipient.name, f.issuer);
        }
        CM_ENSURE(ours, SRV_E_WRONG_AUTHORITY);
    }
    // The first message of a transaction carries no recipNonce (RFC 9810 §5.1.1).
    const cmp_body_type t = req->msg.body.type;
    const bool first = t == CMP_BODY_IR || t == CMP_BODY_CR || t == CMP_BODY_KUR ||
                       t == CMP_BODY_P10CR || t == CMP_BODY_RR || t == CMP_BODY_GENM;
    CM_ENSURE(!(first && h->f.recip_nonce.present), SRV_E_RECIP_NONCE);
    const int64_t win = req->w->e->p.message_time_window;
    if (win > 0) {
        CM_ENSURE(h->f.has_message_time, SRV_E_BAD_TIME);
        const int64_t d = h->f.message_time - req->now;
        CM_ENSURE(d <= win && d >= -win, SRV_E_BAD_TIME);
    }
    return cm_result_make(CM_OK);
}

static const srv_secret *srv_find_secret(const srv_ca *ca, cm_span ref)
{
    for (size_t i = 0; i < ca->num_secrets; i++) {
        if (cm_span_eq(ca->secrets[i].ref, ref)) {
            return &ca->secrets[i];
        }
    }
    return NULL;
}

// srv_authenticate verifies the protection: a MAC with the secret named by senderKID, or a
// signature by extraCerts[0], whose subject must be the sender and whose chain must reach
// |trust| (NULL: signatures are not accepted here).
static cm_result srv_authenticate(srv_request *req, ca_trust *trust, ca_trust *trust2)
{
    const cmp_msg *m = &req->msg;
    CM_ENSURE(m->has_protection && m->header.protection_alg.whole.len != 0, SRV_E_UNPROTECTED);
    CM_TRY(cmp_protect_kind(&req->prot_kind, m->header.protection_alg.whole));
    if (req->prot_kind == CMP_PROT_PBM || req->prot_kind == CMP_PROT_PBMAC1) {
        CM_ENSURE(m->header.f.sender_kid.present, SRV_E_UNKNOWN_SENDER);
        const srv_secret *s = srv_find_secret(req->ca, m->header.f.sender_kid.v);
        CM_ENSURE(s != NULL, SRV_E_UNKNOWN_SENDER);
        CM_TRY(cmp_protect_verify_mac(req->w->e->p.prot, &req->mac_key,
                                      m->header.protection_alg.whole, s->secret, m->protected_part,
                                      m->protection, m->protection_unused, NULL));
        req->mac_ok = true;
        return cm_result_make(CM_OK);
    }
    CM_ENSURE(m->num_extra_certs >= 1, CMP_E_NO_EXTRA_CERTS);
    const cm_span signer = m->extra_certs[0];
    CM_TRY(cmp_protect_verify_sig(&req->w->crypto, m->header.protection_alg.whole,
                                  m->protected_part, m->protection, m->protection_unused, signer,
                                  NULL));
    ca_cert_fields f;
    CM_TRY(ca_cert_fields_parse(&f, signer));
    CM_ENSURE(m->header.sender.tag == CRMF_GN_DIRECTORY_NAME &&
                  cm_span_eq(m->header.sender.name, f.subject),
              SRV_E_SENDER_MISMATCH);
    cm_result tr = cm_result_make(CA_E_UNTRUSTED);
    for (size_t i = 0; i < req->ca->num_ra_certs; i++) {
        // A configured RA certificate is trusted as itself (its signature verified above).
        if (cm_span_eq(req->ca->ra_certs[i], signer)) {
            req->signer_is_ra = true;
            tr = cm_result_make(CM_OK);
        }
    }
    if (!cm_ok(tr) && trust != NULL) {
        tr = ca_trust_verify(trust, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             NULL);
    }
    if (!cm_ok(tr) && trust2 != NULL) {
        tr = ca_trust_verify(trust2, signer, m->extra_certs + 1, m->num_extra_certs - 1, req->now,
                             NULL);
    }
    CM_ENSURE(cm_ok(tr), tr.code == CA_E_CERT_EXPIRED ? CA_E_CERT_EXPIRED : SRV_E_UNTRUSTED);
    req->signer_cert = signer;
    req->signer = f;
    CM_ENSURE(EVP_Digest(signer.p, signer.len, req->signer_hash, NULL, req->w->dig.sha256, NULL) ==
                  1,
              SRV_E_INTERNAL);
    req->sig_ok = true;
    return cm_result_make(CM_OK);
}

// --- enrolment ------------------------------------------------------------------------------

static cm_result srv_collect_exts(srv_request *req, cm_span ext_content)
{
    crmf_ext_iter it;
    crmf_ext_iter_init(&it, ext_content);
    size_t n = 0;
    for (;;) {
        crmf_extension e;
        bool found;
        CM_TRY(crmf_ext_iter_next(&it, &e, &found));
        if (!found) {
            break;
        }
        CM_ENSURE(n < CA_MAX_REQ_EXTS, CM_E_DER_TOO_MANY);
        req->exts[n].oid = e.oid;
        req->exts[n].critical = e.critical;
        req->exts[n].value = e.value;
        n++;
    }
    req->creq.exts = req->exts;
    req->creq.num_exts = n;
    return cm_result_make(CM_OK);
}

// srv_kur_check: the signer is the certificate being updated (RFC 9483 §4.1.3): issued by this
// CA, known to the store and valid, and named by the oldCertID control when present.
static cm_result srv_kur_check(srv_request *req, const crmf_cert_request *cr)
{
    const cm_span issuer = req->signer.issuer;
    const cm_span serial = req->signer.serial;
    CM_ENSURE(cm_span_eq(issuer, ca_authority_subject(req->ca->authority)), SRV_E_OLD_CERT);
    if (cr->has_old_cert_id) {
        CM_ENSURE(cm_span_eq(cr->old_cert_id.serial, serial) &&
                      cr->old_cert_id.issuer.tag == CRMF_GN_DIRECTORY_NAME &&
                      cm_span_eq(cr->old_cert_id.issuer.name, issuer),
                  SRV_E_OLD_CERT);
    }
    // The store keeps serials as the certificate's INTEGER content octets.
    store_cert old;
    cm_result r = store_cert_get(req->w->reader, &req->arena, &old, req->ca->name, serial);
    CM_ENSURE(r.code != STORE_E_NOT_FOUND, SRV_E_OLD_CERT);
    CM_TRY(r);
    CM_ENSURE(old.status != STORE_CERT_REVOKED && old.status != STORE_CERT_HOLD,
              SRV_E_OLD_CERT_REVOKED);
    CM_ENSURE(old.status == STORE_CERT_VALID, SRV_E_OLD_CERT);
    return cm_result_make(CM_OK);
}

static cm_result srv_enrol_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    const cmp_body_type t = m->body.type;
    ca_trust *trust = t == CMP_BODY_IR || t == CMP_BODY_P10CR ? ca->client_trust : NULL;
    ca_trust *trust2 = ca->own_trust;
    CM_TRY(srv_authenticate(req, trust, trust2));
    if (t == CMP_BODY_KUR) {
        CM_ENSURE(req->sig_ok, SRV_E_NOT_AUTHORIZED); // kur must be signed by the old cert
    }
    req->resp_type =
        t == CMP_BODY_IR ? CMP_BODY_IP : (t == CMP_BODY_KUR ? CMP_BODY_KUP : CMP_BODY_CP);
    if (t == CMP_BODY_P10CR) {
        const crmf_csr *csr = &m->body.u.p10;
        CM_TRY(crmf_csr_verify(&req->w->crypto, csr, NULL));
        req->cert_req_id = -1;
        req->creq.subject = csr->subject;
        req->creq.spki = csr->spki.whole;
        if (csr->extensions.len != 0) {
            CM_TRY(srv_collect_exts(req, csr->extensions));
        }
    } else {
        const crmf_cert_req_msgs *msgs = &m->body.u.req;
        CM_ENSURE(msgs->num_msgs == 1, SRV_E_REQ_COUNT);
        const crmf_cert_req_msg *msg = &msgs->msgs[0];
        const crmf_cert_request *cr = &msg->req;
        CM_ENSURE(cr->cert_req_id == 0, SRV_E_CERT_REQ_ID);
        req->cert_req_id = 0;
        cm_result pr = crmf_popo_verify(&req->w->crypto, msg, NULL);
        // raVerified (RFC 4211 §4.1, RFC 9483 §5.2): an RA vouches for the POP; accepted only
        // from a signer configured as an RA of this CA (ra_certs).
        if (pr.code == CRMF_E_POPO_RA_VERIFIED) {
            CM_ENSURE(req->sig_ok && req->signer_is_ra, SRV_E_RA_VERIFIED);
            pr = cm_result_make(CM_OK);
        }
        CM_TRY(pr);
        if (t == CMP_BODY_KUR) {
            CM_TRY(srv_kur_check(req, cr));
        }
        const crmf_template *tm = &cr->tmpl;
        CM_ENSURE(tm->public_key.len != 0, CRMF_E_POPO_NO_KEY);
        CM_TRY(crmf_spki_to_der(&req->arena, &req->creq.spki, tm->public_key));
        if (tm->subject.len != 0) {
            req->creq.subject = tm->subject;
        } else if (t == CMP_BODY_KUR) {
            req->creq.subject = req->signer.subject;
        } else {
            static const uint8_t k_empty_name[] = {0x30, 0x00};
            req->creq.subject = cm_span_make(k_empty_name, sizeof(k_empty_name));
        }
        req->creq.not_before = tm->has_not_before ? tm->not_before : 0;
        req->creq.not_after = tm->has_not_after ? tm->not_after : 0;
        if (tm->extensions.len != 0) {
            CM_TRY(srv_collect_exts(req, tm->extensions));
        }
    }
    CM_TRY(ca_policy_check(ca->profile, ca->authority, &req->dec, &req->creq, req->now, NULL));
    req->implicit = m->header.implicit_confirm && ca_profile_implicit_confirm(ca->profile);
    // A transactionID already known: a replay or a collision (RFC 9810 §5.1.1).
    store_txn old;
    cm_result tr =
        store_txn_get(req->w->reader, &req->arena, &old, ca->name, m->header.f.transaction_id.v);
    CM_ENSURE(tr.code == STORE_E_TXN_NOT_FOUND, cm_ok(tr) ? SRV_E_TXN_IN_USE : tr.code);
    return cm_result_make(CM_OK);
}

static void srv_enrol_sign(srv_request *req)
{
    const srv_ca *ca = req->ca;
    cm_result r = ca_serial_new(req->serial);
    der_builder alg;
    der_builder_init_arena(&alg, &req->arena, 64);
    hsm_sig_alg_marshal(&alg, ca->ca_sig_alg);
    if (cm_ok(r)) {
        r = der_builder_finish(&alg, &req->ca_sig_alg);
    }
    der_builder tb;
    der_builder_init_arena(&tb, &req->arena, 2048);
    if (cm_ok(r)) {
        r = ca_tbs_build(ca->authority, &tb, ca->profile, &req->dec, &req->creq,
                         cm_span_make(req->serial, sizeof(req->serial)), req->ca_sig_alg);
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&tb, &req->tbs);
    }
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    srv_mark(req, SRV_STAGE_BUILD);
    srv_sign_submit(req, ca->ca_key, ca->ca_sig_alg, req->tbs, SRV_ST_SIGN_CERT);
}

// srv_subject_text renders the subject as RFC 4514 text for listings (ca_name_to_text), in
// |arena|; "" when the Name cannot be read or the arena is full.
static const char *srv_subject_text(cm_arena *arena, cm_span name)
{
    // Each byte of the Name gives at most a few characters: labels and dotted OIDs are shorter
    // than their DER, hex values take two characters per byte, escapes one more.
    const size_t cap = name.len * 6 + 16;
    char *out = cm_arena_alloc(arena, cap);
    if (out == NULL) {
        return "";
    }
    (void)ca_name_to_text(out, cap, name);
    return out;
}

// srv_serial_content returns the serial as the certificate's INTEGER content octets (the form
// the store keys on): the 16 random bytes, with a leading zero when the top bit is set.
static cm_span srv_serial_content(srv_request *req)
{
    const bool pad = (req->serial[0] & 0x80u) != 0;
    uint8_t *p = cm_arena_alloc(&req->arena, sizeof(req->serial) + 1);
    if (p == NULL) {
        return cm_span_make(NULL, 0);
    }
    size_t n = 0;
    if (pad) {
        p[n++] = 0;
    }
    size_t start = 0;
    while (!pad && start + 1 < sizeof(req->serial) && req->serial[start] == 0 &&
           (req->serial[start + 1] & 0x80u) == 0) {
        start++;
    }
    memcpy(p + n, req->serial + start, sizeof(req->serial) - start);
    return cm_span_make(p, n + sizeof(req->serial) - start);
}

// srv_enrol_record: the certificate is signed; assemble it and make it durable together with
// the transaction before anything is sent.
static void srv_enrol_record(srv_request *req)
{
    srv_mark(req, SRV_STAGE_HSM);
    const srv_ca *ca = req->ca;
    const cmp_msg *m = &req->msg;
    der_builder cb;
    der_builder_init_arena(&cb, &req->arena, req->tbs.len + 256);
    cm_result r = ca_signed_assemble(&cb, req->tbs, req->ca_sig_alg,
                                     cm_span_make(req->sig, req->hjob.sig_len));
    if (cm_ok(r)) {
        r = der_builder_finish(&cb, &req->cert);
    }
    if (cm_ok(r) && EVP_Digest(req->creq.spki.p, req->creq.spki.len, req->spki_hash, NULL,
                               req->w->dig.sha256, NULL) != 1) {
        r = cm_result_make(SRV_E_INTERNAL);
    }
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    const cm_span serial = srv_serial_content(req);
    // The certificate first: the transaction row refers to it.
    store_job *tj = &req->sjobs[1];
    store_job_init(tj, STORE_OP_TXN_CREATE, req->w->cq);
    tj->u.txn.ca = ca->name;
    tj->u.txn.transaction_id = m->header.f.transaction_id.v;
    tj->u.txn.state = req->implicit ? SRV_TXN_IMPLICIT : SRV_TXN_WAIT_CONF;
    // The response's senderNonce is drawn now so the transaction records the one it carries.
    (void)RAND_bytes(req->nonce, sizeof(req->nonce));
    req->nonce_set = true;
    tj->u.txn.sender_nonce = cm_span_make(req->nonce, sizeof(req->nonce));
    tj->u.txn.serial = serial;
    tj->u.txn.protection = req->mac_ok ? STORE_AUTH_MAC : STORE_AUTH_SIGNATURE;
    tj->u.txn.credential = req->mac_ok ? m->header.f.sender_kid.v
                                       : cm_span_make(req->signer_hash, sizeof(req->signer_hash));
    const int64_t wait = req->w->e->p.confirm_wait_time > 0 ? req->w->e->p.confirm_wait_time : 300;
    const int64_t win =
        req->w->e->p.message_time_window > 0 ? req->w->e->p.message_time_window : 300;
    tj->u.txn.expires_at = req->now + (req->implicit ? win : wait + win);

    store_job *cj = &req->sjobs[0];
    store_job_init(cj, STORE_OP_CERT_INSERT, req->w->cq);
    store_cert *c = &cj->u.cert;
    c->ca = ca->name;
    c->serial = serial;
    c->subject_der = req->creq.subject;
    c->subject_text = srv_subject_text(&req->arena, req->creq.subject);
    c->not_before = req->dec.not_before;
    c->not_after = req->dec.not_after;
    c->spki_sha256 = cm_span_make(req->spki_hash, sizeof(req->spki_hash));
    c->status = req->implicit ? STORE_CERT_VALID : STORE_CERT_UNCONFIRMED;
    c->transaction_id = m->header.f.transaction_id.v;
    c->requester_kind = tj->u.txn.protection;
    c->requester = tj->u.txn.credential;
    c->cert_der = req->cert;
    c->issued_at = req->now;
    c->confirm_deadline = req->implicit ? 0 : req->now + wait;
    req->num_sjobs = 2;
    srv_store_submit(req);
}

static void srv_enrol_respond(srv_request *req)
{
    const srv_ca *ca = req->ca;
    cmp_cert_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.cert_req_id = req->cert_req_id;
    resp.status.status = CMP_STATUS_ACCEPTED;
    resp.has_certified_key_pair = true;
    resp.cert = req->cert;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = req->resp_type;
    body.u.rep.responses = &resp;
    body.u.rep.num_responses = 1;
    cm_span root;
    if (ca->ca_pubs && req->resp_type == CMP_BODY_IP) {
        const size_t n = ca_authority_num_chain(ca->authority);
        root = n == 0 ? ca_authority_cert(ca->authority) : ca_authority_chain(ca->authority, n - 1);
        body.u.rep.ca_pubs = &root;
        body.u.rep.num_ca_pubs = 1;
    }
    // The issuing chain goes to extraCerts so the client can validate its new certificate.
    srv_add_extra(req, ca->authority);
    srv_respond(req, &body);
}

// --- certConf -------------------------------------------------------------------------------

static cm_result srv_conf_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    cm_result r = store_txn_get(req->w->reader, &req->arena, &req->txn, ca->name,
                                m->header.f.transaction_id.v);
    CM_ENSURE(r.code != STORE_E_TXN_NOT_FOUND, SRV_E_UNKNOWN_TXN);
    CM_TRY(r);
    CM_ENSURE(req->txn.state != SRV_TXN_IMPLICIT, SRV_E_NO_CONFIRM_NEEDED);
    CM_ENSURE(req->txn.state == SRV_TXN_WAIT_CONF, SRV_E_CONFIRMED);
    // The same credentials as the request (RFC 9483 §4.1.1): never the new certificate.
    CM_TRY(srv_authenticate(req, NULL, ca->own_trust));
    if (req->txn.protection == STORE_AUTH_MAC) {
        CM_ENSURE(req->mac_ok && cm_span_eq(m->header.f.sender_kid.v, req->txn.credential),
                  SRV_E_WRONG_CREDENTIAL);
    } else {
        CM_ENSURE(req->sig_ok &&
                      cm_span_eq(cm_span_make(req->signer_hash, 32), req->txn.credential),
                  SRV_E_WRONG_CREDENTIAL);
    }
    CM_ENSURE(m->header.f.recip_nonce.present &&
                  cm_span_eq(m->header.f.recip_nonce.v, req->txn.sender_nonce),
              SRV_E_RECIP_NONCE);
    // Exactly one CertStatus for the one certificate (an empty list rejects it).
    CM_ENSURE(m->body.u.conf.num <= 1, SRV_E_REQ_COUNT);
    store_cert issued;
    CM_TRY(store_cert_get_by_txn(req->w->reader, &req->arena, &issued, ca->name,
                                 m->header.f.transaction_id.v));
    if (m->body.u.conf.num == 0) {
        req->conf_reject = true;
        return cm_result_make(CM_OK);
    }
    const cmp_cert_status *cs = &m->body.u.conf.items[0];
    CM_ENSURE(cs->cert_req_id == 0 || cs->cert_req_id == -1, SRV_E_CERT_REQ_ID);
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len = 0;
    CM_TRY(cmp_cert_hash(&req->w->dig, hash, &hash_len, issued.cert_der,
                         cs->has_hash_alg ? &cs->hash_alg : NULL));
    CM_ENSURE(cm_span_eq(cs->cert_hash, cm_span_make(hash, hash_len)), SRV_E_CERT_HASH);
    req->conf_reject = cs->has_status_info && cs->status_info.status == CMP_STATUS_REJECTION;
    CM_ENSURE(!(cs->has_status_info && cs->status_info.status == CMP_STATUS_ACCEPTED &&
                cs->status_info.has_fail_info && cs->status_info.fail_info != 0),
              SRV_E_BODY);
    return cm_result_make(CM_OK);
}

static void srv_conf_record(srv_request *req)
{
    const srv_ca *ca = req->ca;
    store_job *cj = &req->sjobs[0];
    store_job_init(cj, req->conf_reject ? STORE_OP_CERT_REVOKE : STORE_OP_CERT_CONFIRM, req->w->cq);
    cj->u.ref.ca = ca->name;
    cj->u.ref.serial = req->txn.serial;
    cj->u.ref.time = req->now;
    cj->u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
    store_job *tj = &req->sjobs[1];
    store_job_init(tj, STORE_OP_TXN_UPDATE, req->w->cq);
    tj->u.txn = req->txn;
    tj->u.txn.state = req->conf_reject ? SRV_TXN_REJECTED : SRV_TXN_CONFIRMED;
    req->num_sjobs = 2;
    srv_store_submit(req);
}

// --- revocation (RFC 9483 §4.2) -------------------------------------------------------------

// RevReqContent ::= SEQUENCE OF RevDetails; RevDetails ::= SEQUENCE { certDetails CertTemplate,
// crlEntryDetails Extensions OPTIONAL }: exactly one, naming issuer and serialNumber.
static cm_result srv_rr_prepare(srv_request *req)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    // Revocation is signature-protected: by the certificate being revoked or by an RA.
    CM_ENSURE(req->sig_ok, SRV_E_NOT_AUTHORIZED);
    CM_ENSURE(m->body.u.rr.num == 1, SRV_E_REQ_COUNT);
    const cmp_rev_details *rd = &m->body.u.rr.items[0];
    CM_ENSURE(rd->tmpl.serial.len != 0 && rd->tmpl.issuer.len != 0, SRV_E_BODY);
    CM_ENSURE(cm_span_eq(rd->tmpl.issuer, ca_authority_subject(ca->authority)), SRV_E_OLD_CERT);
    if (!req->signer_is_ra) {
        CM_ENSURE(cm_span_eq(req->signer.serial, rd->tmpl.serial) &&
                      cm_span_eq(req->signer.issuer, rd->tmpl.issuer),
                  SRV_E_NOT_AUTHORIZED);
    }
    const uint32_t reason = rd->has_reason ? rd->reason : STORE_REASON_UNSPECIFIED;
    CM_ENSURE(reason <= STORE_REASON_AA_COMPROMISE && reason != 7, SRV_E_BODY);
    store_job *j = &req->sjobs[0];
    store_job_init(
        j, reason == STORE_REASON_REMOVE_FROM_CRL ? STORE_OP_CERT_RELEASE : STORE_OP_CERT_REVOKE,
        req->w->cq);
    j->u.ref.ca = ca->name;
    j->u.ref.serial = rd->tmpl.serial;
    j->u.ref.time = req->now;
    j->u.ref.reason = (int)reason;
    req->num_sjobs = 1;
    return cm_result_make(CM_OK);
}

static void srv_rr_respond(srv_request *req)
{
    cmp_status_info st;
    memset(&st, 0, sizeof(st));
    st.status = CMP_STATUS_ACCEPTED;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_RP;
    body.u.rp.status = &st;
    body.u.rp.num_status = 1;
    srv_respond(req, &body);
}

// --- general messages (RFC 9483 §4.3, RFC 9810 §5.3.19) -------------------------------------

// srv_seq_of wraps DER elements in a SEQUENCE in the arena.
static cm_span srv_seq_of(srv_request *req, const cm_span *els, size_t n)
{
    der_builder b;
    der_builder_init_arena(&b, &req->arena, 2048);
    der_mark m;
    der_open_hint(&b, &m, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < n; i++) {
        der_put_raw(&b, els[i]);
    }
    der_close(&b, &m);
    cm_span out;
    return cm_ok(der_builder_finish(&b, &out)) ? out : cm_span_make(NULL, 0);
}

// srv_genm_crls answers crlStatusList (id-it 22) with crls (id-it 23): the current CRL when the
// client's (CRLStatus.thisUpdate) is older or absent; an absent value when it is current.
static cm_result srv_genm_crls(srv_request *req, cmp_itav *out, cm_span status_list)
{
    // CRLStatusList ::= SEQUENCE SIZE (1..MAX) OF CRLStatus
    // CRLStatus ::= SEQUENCE { source CRLSource, thisUpdate Time OPTIONAL }
    der_reader r, list, status;
    der_reader_init(&r, status_list);
    CM_TRY(der_enter(&r, DER_TAG_SEQUENCE, &list));
    CM_TRY(der_expect_end(&r));
    CM_TRY(der_enter(&list, DER_TAG_SEQUENCE, &status));
    uint32_t tag;
    CM_TRY(der_get_any(&status, &tag, NULL, NULL)); // source: [0] dpn or [1] issuer
    CM_ENSURE(tag == DER_CONTEXT_CONS(0) || tag == DER_CONTEXT_CONS(1), SRV_E_BODY);
    int64_t theirs = 0;
    if (!der_reader_empty(&status)) {
        CM_TRY(der_get_time(&status, &theirs));
    }
    CM_TRY(der_expect_end(&status));
    store_crl crl;
    cm_result r2 = store_crl_get(req->w->reader, &req->arena, &crl, req->ca->name);
    out->oid = CM_SPAN_LIT(DER_OID_IT_CRLS);
    if (r2.code == STORE_E_NOT_FOUND || (cm_ok(r2) && crl.crl_der.len == 0)) {
        return cm_result_make(CM_OK); // no CRL yet: absent value
    }
    CM_TRY(r2);
    if (theirs == 0 || theirs < crl.this_update) {
        out->value = srv_seq_of(req, &crl.crl_der, 1);
        CM_ENSURE(out->value.len != 0, CM_E_NOMEM);
    }
    return cm_result_make(CM_OK);
}

// srv_put_key_alg writes the AlgorithmIdentifier of one CA_KEY_* type (RFC 5480, RFC 8410).
static void srv_put_key_alg(der_builder *b, uint32_t type)
{
    der_mark m;
    der_open(b, &m, DER_TAG_SEQUENCE);
    switch (type) {
    case CA_KEY_EC_P256:
    case CA_KEY_EC_P384:
    case CA_KEY_EC_P521:
        der_put_oid_lit(b, DER_OID_EC_PUBLIC_KEY);
        if (type == CA_KEY_EC_P256) {
            der_put_oid_lit(b, DER_OID_P256);
        } else if (type == CA_KEY_EC_P384) {
            der_put_oid_lit(b, DER_OID_P384);
        } else {
            der_put_oid_lit(b, DER_OID_P521);
        }
        break;
    case CA_KEY_RSA:
        der_put_oid_lit(b, DER_OID_RSA_ENCRYPTION);
        der_put_null(b);
        break;
    case CA_KEY_ED25519:
        der_put_oid_lit(b, DER_OID_ED25519);
        break;
    default:
        der_put_oid_lit(b, DER_OID_ED448);
        break;
    }
    der_close(b, &m);
}

// srv_key_spec writes the certReqTemplate keySpec Controls for the profile's preferred key:
// id-regCtrl-algId for the first allowed curve or EdDSA, or id-regCtrl-rsaKeyLen for RSA.
static void srv_key_spec(der_builder *b, const ca_profile *profile)
{
    uint32_t rsa_min = 0;
    const uint32_t types = ca_profile_key_types(profile, &rsa_min);
    static const uint32_t k_pref[] = {CA_KEY_EC_P256, CA_KEY_EC_P384, CA_KEY_EC_P521,
                                      CA_KEY_ED25519, CA_KEY_ED448};
    der_mark ctrls, atv;
    der_open(b, &ctrls, DER_TAG_SEQUENCE);
    der_open(b, &atv, DER_TAG_SEQUENCE);
    bool done = false;
    for (size_t i = 0; i < sizeof(k_pref) / sizeof(k_pref[0]) && !done; i++) {
        if ((types & k_pref[i]) != 0) {
            der_put_oid_lit(b, DER_OID_REGCTRL_ALG_ID);
            srv_put_key_alg(b, k_pref[i]);
            done = true;
        }
    }
    if (!done) {
        der_put_oid_lit(b, DER_OID_REGCTRL_RSA_KEY_LEN);
        der_put_u64(b, rsa_min != 0 ? rsa_min : 2048);
    }
    der_close(b, &atv);
    der_close(b, &ctrls);
}

static cm_result srv_genm_answer(srv_request *req, cmp_itav *out, bool *out_empty)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    CM_ENSURE(m->body.u.gen.num == 1, SRV_E_REQ_COUNT); // RFC 9483 §4.3: one InfoTypeAndValue
    const cmp_itav *q = &m->body.u.gen.items[0];
    const bool ca_certs = der_oid_is(q->oid, DER_OID_IT_CA_CERTS);
    if (!(ca_certs && ca->unprotected_genm && !m->has_protection)) {
        CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    }
    memset(out, 0, sizeof(*out));
    *out_empty = false;
    if (ca_certs) {
        // caCerts: the CA's certificate and its chain (RFC 9483 §4.3.1).
        CM_ENSURE(q->value.len == 0, SRV_E_BODY);
        cm_span certs[CA_MAX_CHAIN + 1];
        size_t n = 0;
        certs[n++] = ca_authority_cert(ca->authority);
        for (size_t i = 0; i < ca_authority_num_chain(ca->authority) && n <= CA_MAX_CHAIN; i++) {
            certs[n++] = ca_authority_chain(ca->authority, i);
        }
        out->oid = CM_SPAN_LIT(DER_OID_IT_CA_CERTS);
        out->value = srv_seq_of(req, certs, n);
        CM_ENSURE(out->value.len != 0, CM_E_NOMEM);
        return cm_result_make(CM_OK);
    }
    if (der_oid_is(q->oid, DER_OID_IT_ROOT_CA_CERT)) {
        // rootCaCert (the client's current root, optional) → rootCaKeyUpdate (§4.3.2):
        // RootCaKeyUpdateContent ::= SEQUENCE { newWithNew CMPCertificate,
        //     newWithOld [0] CMPCertificate OPTIONAL, oldWithNew [1] CMPCertificate OPTIONAL }
        // when an update is configured and the client's root is ours; else absent.
        out->oid = CM_SPAN_LIT(DER_OID_IT_ROOT_CA_KEY_UPDATE);
        const size_t n = ca_authority_num_chain(ca->authority);
        const cm_span root =
            n == 0 ? ca_authority_cert(ca->authority) : ca_authority_chain(ca->authority, n - 1);
        if (ca->root_update[0].len != 0 && (q->value.len == 0 || cm_span_eq(q->value, root))) {
            der_builder b;
            der_builder_init_arena(&b, &req->arena, 4096);
            der_mark m2, t;
            der_open_hint(&b, &m2, DER_TAG_SEQUENCE, 3);
            der_put_raw(&b, ca->root_update[0]);
            for (uint32_t i = 1; i < 3; i++) {
                if (ca->root_update[i].len != 0) {
                    der_open_hint(&b, &t, DER_CONTEXT_CONS(i - 1), 3);
                    der_put_raw(&b, ca->root_update[i]);
                    der_close(&b, &t);
                }
            }
            der_close(&b, &m2);
            return der_builder_finish(&b, &out->value);
        }
        return cm_result_make(CM_OK);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CERT_REQ_TEMPLATE)) {
        // certReqTemplate: CertReqTemplateContent ::= SEQUENCE { certTemplate CertTemplate,
        // keySpec Controls OPTIONAL } — the profile's extensions as the template (§4.3.3).
        CM_ENSURE(q->value.len == 0, SRV_E_BODY);
        crmf_template t;
        memset(&t, 0, sizeof(t));
        t.extensions = ca_profile_extensions(ca->profile);
        der_builder b;
        der_builder_init_arena(&b, &req->arena, 1024);
        der_mark m2;
        der_open(&b, &m2, DER_TAG_SEQUENCE);
        crmf_template_marshal(&b, &t);
        srv_key_spec(&b, ca->profile);
        der_close(&b, &m2);
        out->oid = CM_SPAN_LIT(DER_OID_IT_CERT_REQ_TEMPLATE);
        return der_builder_finish(&b, &out->value);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CRL_STATUS_LIST)) {
        CM_ENSURE(q->value.len != 0, SRV_E_BODY);
        return srv_genm_crls(req, out, q->value);
    }
    if (der_oid_is(q->oid, DER_OID_IT_SIGN_KEY_PAIR_TYPES)) {
        // signKeyPairTypes: SEQUENCE OF AlgorithmIdentifier the profile accepts (§5.3.19.2).
        uint32_t rsa_min = 0;
        const uint32_t types = ca_profile_key_types(ca->profile, &rsa_min);
        der_builder b;
        der_builder_init_arena(&b, &req->arena, 256);
        der_mark m2;
        der_open(&b, &m2, DER_TAG_SEQUENCE);
        for (uint32_t bit = 1; bit <= CA_KEY_ED448; bit <<= 1) {
            if ((types & bit) != 0) {
                srv_put_key_alg(&b, bit);
            }
        }
        der_close(&b, &m2);
        out->oid = CM_SPAN_LIT(DER_OID_IT_SIGN_KEY_PAIR_TYPES);
        return der_builder_finish(&b, &out->value);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CURRENT_CRL)) {
        // currentCRL: the CA's latest CRL, absent when none was issued (§5.3.19.6).
        store_crl crl;
        cm_result r2 = store_crl_get(req->w->reader, &req->arena, &crl, ca->name);
        out->oid = CM_SPAN_LIT(DER_OID_IT_CURRENT_CRL);
        if (cm_ok(r2) && crl.crl_der.len != 0) {
            out->value = crl.crl_der;
        } else if (r2.code != STORE_E_NOT_FOUND) {
            CM_TRY(r2);
        }
        return cm_result_make(CM_OK);
    }
    // Anything else: an empty genp (RFC 9810 §5.3.19: the CA need not answer every type).
    *out_empty = true;
    return cm_result_make(CM_OK);
}

static void srv_genm(srv_request *req)
{
    cmp_itav *itav = cm_arena_alloc(&req->arena, sizeof(cmp_itav));
    bool empty = false;
    cm_result r = itav != NULL ? srv_genm_answer(req, itav, &empty) : cm_result_make(CM_E_NOMEM);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENP;
    body.u.gen.items = itav;
    body.u.gen.num = empty ? 0 : 1;
    srv_respond(req, &body);
}

// --- dispatch -------------------------------------------------------------------------------

static void srv_after_store(srv_request *req)
{
    srv_mark(req, SRV_STAGE_STORE);
    // Every job is back. The first failure decides.
    for (size_t i = 0; i < req->num_sjobs; i++) {
        if (!cm_ok(req->sjobs[i].result)) {
            cm_result r = req->sjobs[i].result;
            if (req->sjobs[0].op == STORE_OP_CERT_INSERT && i == 1 && cm_ok(req->sjobs[0].result)) {
                // The certificate was recorded but its transaction collided: it was never
                // delivered, so revoke it rather than leave it valid.
                store_job rj;
                store_job_init(&rj, STORE_OP_CERT_REVOKE, NULL);
                rj.u.ref.ca = req->ca->name;
                rj.u.ref.serial = req->sjobs[0].u.cert.serial;
                rj.u.ref.time = req->now;
                rj.u.ref.reason = STORE_REASON_CESSATION_OF_OPERATION;
                cm_result rr = store_run(req->w->e->p.store, &rj);
                if (!cm_ok(rr)) {
                    cm_log(CM_LOG_ERROR, "srv: cannot revoke undelivered certificate: %s",
                           cm_result_name(rr));
                }
            }
            srv_fail(req, r);
            return;
        }
    }
    if (req->msg.body.type == CMP_BODY_RR) {
        srv_rr_respond(req);
        return;
    }
    if (req->msg.body.type == CMP_BODY_CERT_CONF) {
        cmp_body body;
        memset(&body, 0, sizeof(body));
        body.type = CMP_BODY_PKICONF;
        srv_respond(req, &body);
        return;
    }
    srv_enrol_respond(req);
}

static void srv_dispatch(srv_request *req)
{
    const cmp_body_type t = req->msg.body.type;
    cm_result r;
    switch (t) {
    case CMP_BODY_IR:
    case CMP_BODY_CR:
    case CMP_BODY_KUR:
    case CMP_BODY_P10CR:
        r = srv_enrol_prepare(req);
        if (!cm_ok(r)) {
            srv_fail(req, r);
            return;
        }
        srv_mark(req, SRV_STAGE_VERIFY);
        srv_enrol_sign(req);
        return;
    case CMP_BODY_CERT_CONF:
        r = srv_conf_prepare(req);
        if (!cm_ok(r)) {
            srv_fail(req, r);
            return;
        }
        srv_conf_record(req);
        return;
    case CMP_BODY_RR:
        r = srv_rr_prepare(req);
        if (!cm_ok(r)) {
            srv_fail(req, r);
            return;
        }
        srv_store_submit(req);
        return;
    case CMP_BODY_GENM:
        srv_genm(req);
        return;
    default:
        // Authenticate first, so the error can carry the request's MAC.
        r = srv_authenticate(req, req->ca->client_trust, req->ca->own_trust);
        srv_fail(req, cm_ok(r) ? cm_result_make(SRV_E_BODY) : r);
        return;
    }
}

bool srv_request_start(srv_request *req, const srv_ca *ca, cm_span der)
{
    req->ca = ca;
    req->der = der;
    req->now = cm_time_now();
    req->mark[0] = cm_time_mono_ns();
    cmp_parse_opts opts = {.max_nesting = CMP_DEFAULT_MAX_NESTING};
    cm_result r = cmp_msg_from_der(&req->arena, &req->msg, der, &opts);
    if (!cm_ok(r)) {
        // Keep what can be read of the header so the error echoes tid and nonce.
        der_reader rd, msg;
        der_reader_init(&rd, der);
        if (cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &msg)) &&
            cm_ok(cmp_header_parse(&req->arena, &req->msg.header, &msg))) {
            req->have_header = true;
        }
        srv_fail(req, r);
        return req->state == SRV_ST_DONE;
    }
    req->have_msg = true;
    req->have_header = true;
    req->body_type = (int)req->msg.body.type;
    r = srv_check_header(req);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return req->state == SRV_ST_DONE;
    }
    srv_mark(req, SRV_STAGE_PARSE);
    srv_dispatch(req);
    return req->state == SRV_ST_DONE;
}

srv_request *srv_worker_on_completion(srv_worker *w, cm_cq_node *node)
{
    (void)w;
    srv_request *req;
    if (node->kind == CM_CQ_KIND_HSM_JOB) {
        hsm_job *j = (hsm_job *)node;
        req = j->user;
        req->jobs_out--;
        if (req->state == SRV_ST_SIGN_RESP) {
            if (!cm_ok(j->result)) {
                srv_finish_response(req, NULL); // the answer goes out unprotected
            } else {
                const cm_span sig = cm_span_make(req->sig, j->sig_len);
                srv_finish_response(req, &sig);
            }
        } else if (!cm_ok(j->result)) {
            srv_fail(req, j->result.code == HSM_E_QUEUE_FULL ? cm_result_make(SRV_E_OVERLOAD)
                                                             : cm_result_make(SRV_E_INTERNAL));
        } else {
            srv_enrol_record(req);
        }
    } else if (node->kind == CM_CQ_KIND_STORE_JOB) {
        store_job *j = (store_job *)node;
        req = j->user;
        if (--req->jobs_out != 0) {
            return NULL;
        }
        srv_after_store(req);
    } else {
        return NULL;
    }
    return req->state == SRV_ST_DONE ? req : NULL;
}

cm_span srv_request_run(srv_request *req, const srv_ca *ca, cm_span der)
{
    if (srv_request_start(req, ca, der)) {
        return req->response;
    }
    while (req->state != SRV_ST_DONE) {
        (void)cm_cq_wait(req->w->cq, 1000);
        for (cm_cq_node *n = cm_cq_drain(req->w->cq); n != NULL;) {
            cm_cq_node *next = n->next;
            (void)srv_worker_on_completion(req->w, n);
            n = next;
        }
    }
    return req->response;
}
