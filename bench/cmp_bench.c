// cmp_bench: the per-request CPU path of a PBM-protected `ir` with an EC P-256 key and a
// signature POPO, through certmint (engine/cmp codec + cmp_protect + engine/crmf POPO, and
// marshalling a PBM-protected `ip` with the key kept from the request) and through OpenSSL's
// own CMP structures (d2i_OSSL_CMP_MSG, OSSL_CMP_validate_msg, OSSL_CRMF_MSGS_verify_popo,
// i2d_OSSL_CMP_MSG), in the same run, next to the bare crypto the path contains (PBM key
// derivation, the two HMACs, one ECDSA P-256 verification), each timed alone.
//
// The ir is made by OpenSSL's CMP client (OSSL_CMP_exec_IR_ses with a transfer callback that
// captures the request): 500 iterations of SHA-256 as OWF, HMAC-SHA1, as `openssl cmp` sends.
// Prints ns per operation (median over rounds; the operations are interleaved per round so
// machine noise hits all alike) and the ratios the issue sets targets for.
//
//   build/<dir>/bench/cmp_bench [rounds] [iterations-per-round]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cmp.h>
#include <openssl/core_names.h>
#include <openssl/crmf.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "engine/cmp/cmp.h"
#include "engine/cmp/cmp_protect.h"
#include "engine/crmf/crmf.h"

#define BENCH_SECRET "factory-secret"
#define BENCH_REF    "CN=device-line-7"

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a;
    const uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

_Noreturn static void bench_die(const char *what)
{
    (void)fprintf(stderr, "cmp_bench: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1); // NOLINT(concurrency-mt-unsafe): the bench is single-threaded
}

// --- inputs ---------------------------------------------------------------------------------

typedef struct bench_capture {
    unsigned char *der;
    int len;
} bench_capture;

// bench_capture_cb is OpenSSL's transfer callback: it keeps the request and answers nothing.
static OSSL_CMP_MSG *bench_capture_cb(OSSL_CMP_CTX *ctx, const OSSL_CMP_MSG *req)
{
    bench_capture *cap = OSSL_CMP_CTX_get_transfer_cb_arg(ctx);
    if (cap->der == NULL) {
        cap->len = i2d_OSSL_CMP_MSG(req, &cap->der);
    }
    return NULL;
}

// bench_make_ir has OpenSSL's client build an ir for |dev| (EC P-256): PBM-protected, or
// signed with |signer_key| when |signer| is not NULL.
static uint8_t *bench_make_ir(EVP_PKEY *dev, X509 *signer, EVP_PKEY *signer_key, size_t *out_len)
{
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);
    X509_NAME *subj = X509_NAME_new();
    X509_NAME *rcpt = X509_NAME_new();
    bench_capture cap = {NULL, 0};
    if (ctx == NULL || subj == NULL || rcpt == NULL ||
        X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_ASC,
                                   (const unsigned char *)"device-000123456", -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(rcpt, "CN", MBSTRING_ASC, (const unsigned char *)"Devices CA",
                                   -1, -1, 0) != 1 ||
        (signer == NULL && (OSSL_CMP_CTX_set1_referenceValue(ctx, (const unsigned char *)BENCH_REF,
                                                             (int)strlen(BENCH_REF)) != 1 ||
                            OSSL_CMP_CTX_set1_secretValue(ctx, (const unsigned char *)BENCH_SECRET,
                                                          (int)strlen(BENCH_SECRET)) != 1)) ||
        (signer != NULL && (OSSL_CMP_CTX_set1_cert(ctx, signer) != 1 ||
                            OSSL_CMP_CTX_set1_pkey(ctx, signer_key) != 1)) ||
        OSSL_CMP_CTX_set1_subjectName(ctx, subj) != 1 ||
        OSSL_CMP_CTX_set1_recipient(ctx, rcpt) != 1 || EVP_PKEY_up_ref(dev) != 1 ||
        OSSL_CMP_CTX_set0_newPkey(ctx, 1, dev) != 1 ||
        OSSL_CMP_CTX_set_transfer_cb(ctx, bench_capture_cb) != 1 ||
        OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &cap) != 1) {
        bench_die("cannot set up the OpenSSL CMP client");
    }
    (void)OSSL_CMP_exec_IR_ses(ctx); // fails by design: no response
    ERR_clear_error();
    OSSL_CMP_CTX_free(ctx);
    X509_NAME_free(subj);
    X509_NAME_free(rcpt);
    if (cap.der == NULL || cap.len <= 0) {
        bench_die("the OpenSSL client produced no ir");
    }
    uint8_t *out = malloc((size_t)cap.len);
    if (out == NULL) {
        bench_die("out of memory");
    }
    memcpy(out, cap.der, (size_t)cap.len);
    *out_len = (size_t)cap.len;
    OPENSSL_free(cap.der);
    return out;
}

// bench_make_cert issues a certificate named |subject| for |dev|, signed by |ca| named "Devices
// CA" (the certificate the ip carries, or the CA's own self-signed one).
static uint8_t *bench_make_cert(EVP_PKEY *dev, EVP_PKEY *ca, const char *subject, size_t *out_len)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME *i = X509_NAME_new();
    if (x == NULL || n == NULL || i == NULL) {
        bench_die("out of memory");
    }
    (void)X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)subject, -1, -1,
                                     0);
    (void)X509_NAME_add_entry_by_txt(i, "CN", MBSTRING_ASC, (const unsigned char *)"Devices CA", -1,
                                     -1, 0);
    (void)X509_set_version(x, 2);
    (void)ASN1_INTEGER_set_int64(X509_get_serialNumber(x), 0x1234567890abcdefLL);
    (void)X509_set_subject_name(x, n);
    (void)X509_set_issuer_name(x, i);
    (void)X509_gmtime_adj(X509_getm_notBefore(x), 0);
    (void)X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400);
    (void)X509_set_pubkey(x, dev);
    if (X509_sign(x, ca, EVP_sha256()) <= 0) {
        bench_die("cannot sign the certificate");
    }
    unsigned char *der = NULL;
    const int len = i2d_X509(x, &der);
    X509_NAME_free(n);
    X509_NAME_free(i);
    X509_free(x);
    if (len <= 0) {
        bench_die("cannot encode the certificate");
    }
    uint8_t *out = malloc((size_t)len);
    memcpy(out, der, (size_t)len);
    OPENSSL_free(der);
    *out_len = (size_t)len;
    return out;
}

// --- the state every operation uses ---------------------------------------------------------

typedef struct bench_state {
    // inputs
    cm_span ir;
    cm_span cert; // issued certificate carried in the ip
    const uint8_t *ip_der;
    size_t ip_len;
    // certmint
    cmp_protect_ctx *pctx;
    crmf_crypto crmf;
    cm_arena arena;
    cmp_msg req;     // parsed once, for the per-step rows
    cmp_mac_key key; // derived once, for the ip rows
    cmp_msg sreq;    // a signature-protected ir (signer: the self-signed "Devices CA")
    cm_span signer;  // its certificate DER
    uint8_t out[8192];
    // OpenSSL
    OSSL_CMP_CTX *octx;
    OSSL_CMP_MSG *oreq; // decoded once, for the per-step rows
    OSSL_CRMF_MSGS *omsgs;
    OSSL_CMP_MSG *oip;
    OSSL_CMP_CTX *osctx; // trusted store: the signer certificate
    OSSL_CMP_MSG *osreq;
    // bare crypto
    EVP_MD *sha256;
    EVP_MAC_CTX *hmac_sha1; // template with the digest set
    EVP_PKEY *popo_key;
    EVP_MD_CTX *mdctx; // PBM iterations
    EVP_MD_CTX *vctx;  // ECDSA verification
    uint8_t pbm_key[32];
    size_t req_pp_len; // ProtectedPart DER sizes (what the HMACs cover)
    size_t ip_pp_len;
    uint8_t nonce[16];
} bench_state;

// bench_ours_ip marshals the ip answering |req| with the request's PBM key (no derivation)
// and returns its length. |with_mac| false writes a dummy protection (marshal cost alone).
static size_t bench_ours_ip(bench_state *s, const cmp_msg *req, const cmp_mac_key *key,
                            bool with_mac)
{
    const cmp_header_fields *rq = &req->header.f;
    cmp_header_fields h;
    memset(&h, 0, sizeof(h));
    h.pvno = 2;
    h.sender_gn = rq->recipient_gn;
    h.sender_name = rq->recipient_name;
    h.recipient_gn = rq->sender_gn;
    h.recipient_name = rq->sender_name;
    h.has_message_time = true;
    h.message_time = 1764000000;
    h.protection_alg = rq->protection_alg; // the same PBM parameters: the key is reused
    h.sender_kid = rq->sender_kid;
    h.transaction_id = rq->transaction_id;
    h.sender_nonce.present = true;
    h.sender_nonce.v = cm_span_make(s->nonce, sizeof(s->nonce));
    h.recip_nonce = rq->sender_nonce;
    cmp_cert_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.cert_req_id = 0;
    resp.status.status = CMP_STATUS_ACCEPTED;
    resp.has_certified_key_pair = true;
    resp.cert = s->cert;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_IP;
    body.u.rep.responses = &resp;
    body.u.rep.num_responses = 1;

    der_builder b;
    der_builder_init_fixed(&b, s->out, sizeof(s->out));
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    uint8_t mac[CMP_PROTECT_MAX_MAC_LEN] = {0};
    size_t mac_len = 20;
    if (with_mac && !cm_ok(cmp_mac_compute(s->pctx, mac, sizeof(mac), &mac_len, key,
                                           cmp_msg_writer_protected_part(&w)))) {
        bench_die("cmp_mac_compute failed");
    }
    const cm_span prot = cm_span_make(mac, mac_len);
    cmp_msg_writer_finish(&w, &prot, 0, NULL, 0);
    cm_span got;
    if (!cm_ok(der_builder_finish(&b, &got))) {
        bench_die("ip marshal failed");
    }
    return got.len;
}

// The certmint path for one request, start to end.
static void bench_ours_whole(bench_state *s)
{
    cm_arena_reset(&s->arena);
    cmp_msg m;
    if (!cm_ok(cmp_msg_from_der(&s->arena, &m, s->ir, NULL))) {
        bench_die("parse failed");
    }
    cmp_mac_key key;
    if (!cm_ok(cmp_protect_verify_mac(s->pctx, &key, m.header.f.protection_alg,
                                      CM_SPAN_LIT(BENCH_SECRET), CMP_SECRET_PASSWORD,
                                      m.protected_part, m.protection, m.protection_unused, NULL))) {
        bench_die("PBM verify failed");
    }
    if (m.body.type != CMP_BODY_IR || m.body.u.req.num_msgs != 1 ||
        !cm_ok(crmf_popo_verify(&s->crmf, &m.body.u.req.msgs[0], NULL))) {
        bench_die("POPO verify failed");
    }
    (void)bench_ours_ip(s, &m, &key, true);
    cmp_mac_key_cleanse(&key);
}

// The OpenSSL path for the same request: decode, validate protection, verify the POPO
// (CertReqMessages taken from the decoded request's DER, outside the timing: 3.0 has no
// accessor), encode the ip.
static void bench_ossl_whole(bench_state *s)
{
    const unsigned char *p = s->ir.p;
    OSSL_CMP_MSG *m = d2i_OSSL_CMP_MSG(NULL, &p, (long)s->ir.len);
    if (m == NULL || OSSL_CMP_validate_msg(s->octx, m) != 1 ||
        OSSL_CRMF_MSGS_verify_popo(s->omsgs, 0, 0, NULL, NULL) != 1) {
        bench_die("OpenSSL path failed");
    }
    unsigned char *q = s->out;
    if (i2d_OSSL_CMP_MSG(s->oip, &q) <= 0) {
        bench_die("i2d_OSSL_CMP_MSG failed");
    }
    OSSL_CMP_MSG_free(m);
}

// Bare crypto: PBM key derivation = SHA-256 over secret||salt, then 499 more SHA-256.
static void bench_bare_pbm(bench_state *s)
{
    unsigned int n = 0;
    const cmp_mac_key *k = &s->key;
    if (EVP_DigestInit_ex2(s->mdctx, s->sha256, NULL) != 1 ||
        EVP_DigestUpdate(s->mdctx, BENCH_SECRET, strlen(BENCH_SECRET)) != 1 ||
        EVP_DigestUpdate(s->mdctx, k->salt, k->salt_len) != 1 ||
        EVP_DigestFinal_ex(s->mdctx, s->pbm_key, &n) != 1) {
        bench_die("digest failed");
    }
    for (uint64_t i = 1; i < k->iterations; i++) {
        (void)EVP_DigestInit_ex2(s->mdctx, s->sha256, NULL);
        (void)EVP_DigestUpdate(s->mdctx, s->pbm_key, n);
        (void)EVP_DigestFinal_ex(s->mdctx, s->pbm_key, &n);
    }
}

// Bare crypto: one HMAC-SHA1 over |len| bytes with the PBM key.
static void bench_bare_hmac(bench_state *s, const uint8_t *data, size_t len)
{
    EVP_MAC_CTX *m = EVP_MAC_CTX_dup(s->hmac_sha1);
    uint8_t out[64];
    size_t n;
    if (m == NULL || EVP_MAC_init(m, s->pbm_key, sizeof(s->pbm_key), NULL) != 1 ||
        EVP_MAC_update(m, data, len) != 1 || EVP_MAC_final(m, out, &n, sizeof(out)) != 1) {
        bench_die("HMAC failed");
    }
    EVP_MAC_CTX_free(m);
}

// Bare crypto: one ECDSA P-256 verification (the POPO's) with a ready EVP_PKEY.
static void bench_bare_ecdsa(bench_state *s)
{
    const crmf_cert_req_msg *msg = &s->req.body.u.req.msgs[0];
    if (EVP_DigestVerifyInit(s->vctx, NULL, s->sha256, NULL, s->popo_key) != 1 ||
        EVP_DigestVerify(s->vctx, msg->popo.signature.p, msg->popo.signature.len, msg->req.whole.p,
                         msg->req.whole.len) != 1) {
        bench_die("ECDSA verify failed");
    }
}

typedef enum bench_op {
    OP_OURS_PARSE,
    OP_OSSL_PARSE,
    OP_OURS_PBM,
    OP_OSSL_VALIDATE,
    OP_OURS_POPO,
    OP_OSSL_POPO,
    OP_OURS_IP_MARSHAL,
    OP_OURS_IP,
    OP_OSSL_IP,
    OP_OURS_WHOLE,
    OP_OSSL_WHOLE,
    OP_OURS_SIG,
    OP_OSSL_SIG,
    OP_BARE_PBM,
    OP_BARE_HMAC_REQ,
    OP_BARE_HMAC_IP,
    OP_BARE_ECDSA,
    OP_COUNT,
} bench_op;

static const char *const k_bench_names[OP_COUNT] = {
    "certmint: parse ir (cmp_msg_from_der)",
    "OpenSSL:  d2i_OSSL_CMP_MSG",
    "certmint: verify PBM (derive + HMAC)",
    "OpenSSL:  OSSL_CMP_validate_msg (PBM)",
    "certmint: verify POPO (crmf_popo_verify)",
    "OpenSSL:  OSSL_CRMF_MSGS_verify_popo",
    "certmint: marshal ip, no MAC",
    "certmint: marshal ip + PBM MAC (key reused)",
    "OpenSSL:  i2d_OSSL_CMP_MSG(ip) (no MAC)",
    "certmint: whole request path",
    "OpenSSL:  whole request path",
    "certmint: verify signature protection (P-256)",
    "OpenSSL:  OSSL_CMP_validate_msg (signature)",
    "bare: PBM key derivation (500 x SHA-256)",
    "bare: HMAC-SHA1 over ProtectedPart (ir)",
    "bare: HMAC-SHA1 over ProtectedPart (ip)",
    "bare: ECDSA P-256 verify (POPO)",
};

static void bench_one(bench_state *s, bench_op op)
{
    switch (op) {
    case OP_OURS_PARSE: {
        cm_arena_reset(&s->arena);
        cmp_msg m;
        if (!cm_ok(cmp_msg_from_der(&s->arena, &m, s->ir, NULL))) {
            bench_die("parse failed");
        }
        break;
    }
    case OP_OSSL_PARSE: {
        const unsigned char *p = s->ir.p;
        OSSL_CMP_MSG *m = d2i_OSSL_CMP_MSG(NULL, &p, (long)s->ir.len);
        if (m == NULL) {
            bench_die("d2i failed");
        }
        OSSL_CMP_MSG_free(m);
        break;
    }
    case OP_OURS_PBM: {
        cmp_mac_key key;
        if (!cm_ok(cmp_protect_verify_mac(s->pctx, &key, s->req.header.f.protection_alg,
                                          CM_SPAN_LIT(BENCH_SECRET), CMP_SECRET_PASSWORD,
                                          s->req.protected_part, s->req.protection,
                                          s->req.protection_unused, NULL))) {
            bench_die("PBM verify failed");
        }
        cmp_mac_key_cleanse(&key);
        break;
    }
    case OP_OSSL_VALIDATE:
        if (OSSL_CMP_validate_msg(s->octx, s->oreq) != 1) {
            bench_die("OSSL_CMP_validate_msg failed");
        }
        break;
    case OP_OURS_POPO:
        if (!cm_ok(crmf_popo_verify(&s->crmf, &s->req.body.u.req.msgs[0], NULL))) {
            bench_die("POPO failed");
        }
        break;
    case OP_OSSL_POPO:
        if (OSSL_CRMF_MSGS_verify_popo(s->omsgs, 0, 0, NULL, NULL) != 1) {
            bench_die("OSSL_CRMF_MSGS_verify_popo failed");
        }
        break;
    case OP_OURS_IP_MARSHAL:
        (void)bench_ours_ip(s, &s->req, &s->key, false);
        break;
    case OP_OURS_IP:
        (void)bench_ours_ip(s, &s->req, &s->key, true);
        break;
    case OP_OSSL_IP: {
        unsigned char *q = s->out;
        if (i2d_OSSL_CMP_MSG(s->oip, &q) <= 0) {
            bench_die("i2d failed");
        }
        break;
    }
    case OP_OURS_WHOLE:
        bench_ours_whole(s);
        break;
    case OP_OSSL_WHOLE:
        bench_ossl_whole(s);
        break;
    case OP_OURS_SIG:
        if (!cm_ok(cmp_protect_verify_sig(&s->crmf, s->sreq.header.f.protection_alg,
                                          s->sreq.protected_part, s->sreq.protection,
                                          s->sreq.protection_unused, s->signer, NULL))) {
            bench_die("signature protection failed");
        }
        break;
    case OP_OSSL_SIG:
        if (OSSL_CMP_validate_msg(s->osctx, s->osreq) != 1) {
            bench_die("OSSL_CMP_validate_msg (signature) failed");
        }
        break;
    case OP_BARE_PBM:
        bench_bare_pbm(s);
        break;
    case OP_BARE_HMAC_REQ:
        bench_bare_hmac(s, s->ir.p, s->req_pp_len);
        break;
    case OP_BARE_HMAC_IP:
        bench_bare_hmac(s, s->ip_der, s->ip_pp_len);
        break;
    case OP_BARE_ECDSA:
        bench_bare_ecdsa(s);
        break;
    case OP_COUNT:
        break;
    }
}

static void bench_setup(bench_state *s)
{
    memset(s, 0, sizeof(*s));
    EVP_PKEY *dev = EVP_EC_gen("P-256");
    EVP_PKEY *ca = EVP_EC_gen("P-256");
    if (dev == NULL || ca == NULL) {
        bench_die("key generation failed");
    }
    size_t ir_len = 0;
    size_t cert_len = 0;
    size_t ca_len = 0;
    size_t sir_len = 0;
    uint8_t *ir = bench_make_ir(dev, NULL, NULL, &ir_len);
    uint8_t *cert = bench_make_cert(dev, ca, "device-000123456", &cert_len);
    uint8_t *ca_der = bench_make_cert(ca, ca, "Devices CA", &ca_len);
    const unsigned char *cp = ca_der;
    X509 *ca_x = d2i_X509(NULL, &cp, (long)ca_len);
    if (ca_x == NULL) {
        bench_die("CA certificate");
    }
    uint8_t *sir = bench_make_ir(dev, ca_x, ca, &sir_len);
    s->signer = cm_span_make(ca_der, ca_len);
    s->ir = cm_span_make(ir, ir_len);
    s->cert = cm_span_make(cert, cert_len);
    for (size_t i = 0; i < sizeof(s->nonce); i++) {
        s->nonce[i] = (uint8_t)(0xa5 ^ i);
    }
    // certmint, start-up objects
    cm_arena_init(&s->arena, 0, 1u << 20);
    if (!cm_ok(cmp_protect_ctx_new(&s->pctx, NULL, NULL, NULL)) ||
        !cm_ok(crmf_crypto_init(&s->crmf, NULL, NULL))) {
        bench_die("start-up contexts failed");
    }
    static cm_arena req_arena; // the parsed request used by the per-step rows
    cm_arena_init(&req_arena, 0, 1u << 20);
    if (!cm_ok(cmp_msg_from_der(&req_arena, &s->req, s->ir, NULL)) ||
        s->req.body.type != CMP_BODY_IR || s->req.body.u.req.num_msgs != 1 ||
        !cm_ok(cmp_protect_verify_mac(s->pctx, &s->key, s->req.header.f.protection_alg,
                                      CM_SPAN_LIT(BENCH_SECRET), CMP_SECRET_PASSWORD,
                                      s->req.protected_part, s->req.protection,
                                      s->req.protection_unused, NULL))) {
        bench_die("the OpenSSL-made ir does not parse or verify with certmint");
    }
    if (!cm_ok(cmp_msg_from_der(&req_arena, &s->sreq, cm_span_make(sir, sir_len), NULL)) ||
        !cm_ok(cmp_protect_verify_sig(&s->crmf, s->sreq.header.f.protection_alg,
                                      s->sreq.protected_part, s->sreq.protection,
                                      s->sreq.protection_unused, s->signer, NULL))) {
        bench_die("the OpenSSL-made signed ir does not parse or verify with certmint");
    }
    s->osctx = OSSL_CMP_CTX_new(NULL, NULL);
    X509_STORE *st = X509_STORE_new();
    cp = sir;
    s->osreq = d2i_OSSL_CMP_MSG(NULL, &cp, (long)sir_len);
    if (s->osctx == NULL || st == NULL || s->osreq == NULL || X509_STORE_add_cert(st, ca_x) != 1 ||
        OSSL_CMP_CTX_set0_trustedStore(s->osctx, st) != 1 ||
        OSSL_CMP_validate_msg(s->osctx, s->osreq) != 1) {
        bench_die("OpenSSL does not accept its own signed ir");
    }
    X509_free(ca_x);
    s->ip_len = bench_ours_ip(s, &s->req, &s->key, true);
    uint8_t *ip = malloc(s->ip_len);
    memcpy(ip, s->out, s->ip_len);
    s->ip_der = ip;
    cmp_msg ipm;
    uint8_t hdr[6];
    size_t hdr_len;
    if (!cm_ok(cmp_msg_from_der(&req_arena, &ipm, cm_span_make(ip, s->ip_len), NULL)) ||
        !cm_ok(cmp_protected_part_header(hdr, sizeof(hdr), &hdr_len, ipm.protected_part.len))) {
        bench_die("our ip does not parse");
    }
    s->ip_pp_len = hdr_len + ipm.protected_part.len;
    if (!cm_ok(cmp_protected_part_header(hdr, sizeof(hdr), &hdr_len, s->req.protected_part.len))) {
        bench_die("header");
    }
    s->req_pp_len = hdr_len + s->req.protected_part.len;
    // OpenSSL
    s->octx = OSSL_CMP_CTX_new(NULL, NULL);
    const unsigned char *p = s->ir.p;
    s->oreq = d2i_OSSL_CMP_MSG(NULL, &p, (long)s->ir.len);
    p = s->req.body.content.p;
    s->omsgs = d2i_OSSL_CRMF_MSGS(NULL, &p, (long)s->req.body.content.len);
    p = s->ip_der;
    s->oip = d2i_OSSL_CMP_MSG(NULL, &p, (long)s->ip_len);
    if (s->octx == NULL || s->oreq == NULL || s->omsgs == NULL || s->oip == NULL ||
        OSSL_CMP_CTX_set1_secretValue(s->octx, (const unsigned char *)BENCH_SECRET,
                                      (int)strlen(BENCH_SECRET)) != 1 ||
        OSSL_CMP_validate_msg(s->octx, s->oip) != 1) {
        bench_die("OpenSSL does not accept the inputs (or our ip)");
    }
    // bare crypto objects
    s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    s->hmac_sha1 = hmac != NULL ? EVP_MAC_CTX_new(hmac) : NULL;
    EVP_MAC_free(hmac);
    char sha1_name[] = "SHA1";
    OSSL_PARAM mp[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, sha1_name, 0),
                        OSSL_PARAM_construct_end()};
    s->mdctx = EVP_MD_CTX_new();
    s->vctx = EVP_MD_CTX_new();
    if (s->sha256 == NULL || s->hmac_sha1 == NULL || s->mdctx == NULL || s->vctx == NULL ||
        EVP_MAC_CTX_set_params(s->hmac_sha1, mp) != 1) {
        bench_die("bare crypto set-up failed");
    }
    s->popo_key = dev;
    EVP_PKEY_free(ca);
}

int main(int argc, char **argv)
{
    const unsigned rounds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 11;
    const unsigned iters = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 200;
    if (rounds == 0 || iters == 0 || rounds > 1000) {
        (void)fprintf(stderr, "usage: cmp_bench [rounds 1..1000] [iterations]\n");
        return 2;
    }
    static bench_state s;
    bench_setup(&s);
    uint64_t *t = calloc((size_t)rounds * OP_COUNT, sizeof(uint64_t));
    if (t == NULL) {
        return 1;
    }
    for (unsigned k = 0; k < rounds; k++) {
        for (unsigned op = 0; op < OP_COUNT; op++) {
            const uint64_t t0 = cm_time_mono_ns();
            for (unsigned i = 0; i < iters; i++) {
                bench_one(&s, (bench_op)op);
            }
            t[(size_t)op * rounds + k] = (cm_time_mono_ns() - t0) / iters;
        }
    }
    uint64_t med[OP_COUNT];
    for (unsigned op = 0; op < OP_COUNT; op++) {
        qsort(t + (size_t)op * rounds, rounds, sizeof(uint64_t), bench_cmp_u64);
        med[op] = t[(size_t)op * rounds + rounds / 2];
    }
    printf("ir: %zu bytes (PBM: %llu x SHA-256, HMAC-SHA1; EC P-256 signature POPO); ip: %zu "
           "bytes; %u rounds x %u iterations; medians\n",
           s.ir.len, (unsigned long long)s.key.iterations, s.ip_len, rounds, iters);
    printf("%-46s %10s\n", "operation", "ns/op");
    for (unsigned op = 0; op < OP_COUNT; op++) {
        printf("%-46s %10llu\n", k_bench_names[op], (unsigned long long)med[op]);
    }
    const double bare = (double)(med[OP_BARE_PBM] + med[OP_BARE_HMAC_REQ] + med[OP_BARE_HMAC_IP] +
                                 med[OP_BARE_ECDSA]);
    const double ecdsa = (double)med[OP_BARE_ECDSA];
    printf("bare crypto total (derivation + 2 HMAC + ECDSA verify): %.0f ns\n", bare);
    printf("certmint parse + marshal (no crypto) / ECDSA verify: %.1f%% (target < 5%%)\n",
           100.0 * (double)(med[OP_OURS_PARSE] + med[OP_OURS_IP_MARSHAL]) / ecdsa);
    printf("certmint whole path / bare crypto: %.2fx (target <= 1.3x)\n",
           (double)med[OP_OURS_WHOLE] / bare);
    printf("certmint whole path / OpenSSL whole path: %.2f (target <= 0.33)\n",
           (double)med[OP_OURS_WHOLE] / (double)med[OP_OSSL_WHOLE]);
    free(t);
    return 0;
}
