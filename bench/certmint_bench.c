// certmint-bench: a CMP-over-HTTP load generator for any CMP server (certmintd, OpenSSL's
// `openssl cmp` mock server, a commercial CA).
//
//   certmint-bench --url http://127.0.0.1:8080/.well-known/cmp --secret demo-device:SECRET
//                  [--flow ir-implicit|ir-confirm|cr|p10cr] [-n COUNT | --duration S]
//                  [--connections C] [--key-type ec-p256|ec-p384|rsa2048|ed25519] ...
//   certmint-bench --limit [--token-uri PKCS11-URI] [--duration S]   (the physical limit)
//
// Every request is prepared before the clock starts (device keys, fresh transactionID and
// senderNonce, subject, POPO signature, PBM or signature protection), on all cores. The run
// is one epoll loop over C keep-alive connections with one request in flight on each; a
// certConf (ir-confirm) goes on the same connection right after its ip. Every response is
// checked (certmint_bench_check.c); --verify also checks the protection and the certificate's
// signature against --ca, after the clock stops. `--help` lists every option.
#include "bench/certmint_bench.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "engine/ca/ca.h"
#include "engine/cmp/cmp_protect.h"
#include "engine/crmf/crmf.h"
#include "engine/der/der_oid.h"
#include "hsm/hsm.h"

#define BENCH_NONCE_LEN    16u
#define BENCH_MAX_CONNS    4096u
#define BENCH_MAX_THREADS  64u
#define BENCH_HTTP_HDR_MAX 1024u

typedef enum bench_flow {
    BENCH_FLOW_IR_IMPLICIT = 0,
    BENCH_FLOW_IR_CONFIRM,
    BENCH_FLOW_CR,
    BENCH_FLOW_P10CR,
    BENCH_FLOW_GENM, // genm caCerts (RFC 9483 §4.3.1): no certificate is issued
    BENCH_FLOW_KUR,  // kur signed with a certificate enrolled (untimed) before the clock
    BENCH_FLOW_RR,   // rr of such a certificate, signed with it
} bench_flow;

#define BENCH_NUM_FLOWS 7u

static const char *const k_bench_flow_names[] = {"ir-implicit", "ir-confirm", "cr", "p10cr",
                                                 "genm",        "kur",        "rr"};

typedef enum bench_key_type {
    BENCH_KEY_EC_P256 = 0,
    BENCH_KEY_EC_P384,
    BENCH_KEY_RSA2048,
    BENCH_KEY_ED25519,
} bench_key_type;

static const char *const k_bench_key_names[] = {"ec-p256", "ec-p384", "rsa2048", "ed25519"};

// The options of one run. Thread: immutable after parsing.
typedef struct bench_opts {
    const char *url;
    char host[256];
    char port[16];
    char path[512];
    const char *secret_ref; // PBM: senderKID
    const char *secret;
    bool pbmac1;
    uint64_t pbm_iterations;
    const char *cert_path; // signature protection
    const char *key_path;
    bench_key_type key_type;
    size_t key_pool; // 0: a fresh key per request
    bench_flow flow;
    size_t count;
    double duration;
    size_t prepare; // requests prepared for a --duration run
    size_t connections;
    size_t warmup;
    const char *subject_template;
    bool reconnect;
    const char *json_path;
    bool no_key_check;
    const char *ca_path;
    bool verify;
    double timeout;
    size_t threads;
    bool limit;
    const char *token_uri;
} bench_opts;

// ---------------------------------------------------------------------------------------------
// Small helpers

_Noreturn static void bench_die(const char *what)
{
    (void)fprintf(stderr, "certmint-bench: %s\n", what);
    exit(2);
}

static uint64_t bench_now(void)
{
    return cm_time_mono_ns();
}

static double bench_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) {
        return 0;
    }
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static size_t bench_nproc(void)
{
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > (long)BENCH_MAX_THREADS ? BENCH_MAX_THREADS : (size_t)n);
}

static crmf_sig_alg bench_sig_alg_for(const EVP_PKEY *key)
{
    crmf_sig_alg a;
    memset(&a, 0, sizeof(a));
    switch (crmf_key_type_of(key)) {
    case CRMF_KEY_RSA:
        a.kind = CRMF_SIG_RSA_PKCS1;
        a.hash = CRMF_HASH_SHA256;
        break;
    case CRMF_KEY_ED25519:
        a.kind = CRMF_SIG_ED25519;
        a.hash = CRMF_HASH_NONE;
        break;
    case CRMF_KEY_ED448:
        a.kind = CRMF_SIG_ED448;
        a.hash = CRMF_HASH_NONE;
        break;
    default:
        a.kind = CRMF_SIG_ECDSA;
        a.hash = EVP_PKEY_get_bits(key) > 256 ? CRMF_HASH_SHA384 : CRMF_HASH_SHA256;
        break;
    }
    return a;
}

// bench_alg_der marshals |a| into a malloc'ed buffer.
static cm_span bench_alg_der(const crmf_sig_alg *a)
{
    der_builder b;
    der_builder_init(&b, 64);
    crmf_sig_alg_marshal(&b, a);
    uint8_t *p;
    size_t n;
    if (!cm_ok(der_builder_take(&b, &p, &n))) {
        bench_die("cannot encode a signature AlgorithmIdentifier");
    }
    return cm_span_make(p, n);
}

static EVP_PKEY *bench_keygen(bench_key_type t)
{
    switch (t) {
    case BENCH_KEY_EC_P384:
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    case BENCH_KEY_RSA2048:
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    case BENCH_KEY_ED25519:
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    default:
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
}

// ---------------------------------------------------------------------------------------------
// Subject names from the template: comma-separated KEY=VALUE with %d replaced by the index.

typedef struct bench_attr_type {
    const char *key;
    const char *oid; // content octets
    size_t oid_len;
    uint32_t tag;
} bench_attr_type;

static const bench_attr_type k_bench_attrs[] = {
    {"CN", "\x55\x04\x03", 3, DER_TAG_UTF8_STRING},
    {"C", "\x55\x04\x06", 3, DER_TAG_PRINTABLE_STRING},
    {"L", "\x55\x04\x07", 3, DER_TAG_UTF8_STRING},
    {"ST", "\x55\x04\x08", 3, DER_TAG_UTF8_STRING},
    {"O", "\x55\x04\x0a", 3, DER_TAG_UTF8_STRING},
    {"OU", "\x55\x04\x0b", 3, DER_TAG_UTF8_STRING},
    {"serialNumber", "\x55\x04\x05", 3, DER_TAG_PRINTABLE_STRING},
};

// bench_subject_marshal writes Name ::= SEQUENCE OF RelativeDistinguishedName (one
// AttributeTypeAndValue per RDN, RFC 5280 §4.1.2.4) for the template with index |idx|.
// Returns false for a template it does not understand.
static bool bench_subject_marshal(der_builder *b, const char *tmpl, size_t idx)
{
    char text[512];
    // The template is the user's; only one %d is allowed (checked in bench_opts_check).
    const char *pct = strstr(tmpl, "%d");
    if (pct != NULL) {
        (void)snprintf(text, sizeof(text), "%.*s%zu%s", (int)(pct - tmpl), tmpl, idx, pct + 2);
    } else {
        (void)snprintf(text, sizeof(text), "%s", tmpl);
    }
    der_mark name;
    der_open(b, &name, DER_TAG_SEQUENCE);
    char *save = NULL;
    for (char *part = strtok_r(text, ",", &save); part != NULL; part = strtok_r(NULL, ",", &save)) {
        while (*part == ' ' || *part == '/') {
            part++;
        }
        char *eq = strchr(part, '=');
        if (eq == NULL) {
            return false;
        }
        *eq = '\0';
        const bench_attr_type *at = NULL;
        for (size_t i = 0; i < sizeof(k_bench_attrs) / sizeof(k_bench_attrs[0]); i++) {
            if (strcmp(part, k_bench_attrs[i].key) == 0) {
                at = &k_bench_attrs[i];
            }
        }
        if (at == NULL || eq[1] == '\0') {
            return false;
        }
        der_mark rdn;
        der_mark atv;
        der_open(b, &rdn, DER_TAG_SET);
        der_open(b, &atv, DER_TAG_SEQUENCE);
        der_put_oid(b, cm_span_make(at->oid, at->oid_len));
        der_put_string(b, at->tag, cm_span_make(eq + 1, strlen(eq + 1)));
        der_close(b, &atv);
        der_close(b, &rdn);
    }
    der_close(b, &name);
    return der_builder_ok(b);
}

// ---------------------------------------------------------------------------------------------
// Prepared requests

// One device key of the pool. Thread: immutable after preparation.
typedef struct bench_key {
    EVP_PKEY *pkey;
    uint8_t *spki; // SubjectPublicKeyInfo DER (i2d_PUBKEY)
    size_t spki_len;
    cm_span spki_body; // its content octets (the template's [6])
} bench_key;

// One prepared transaction. Thread: written by one preparation thread, then read by the loop.
typedef struct bench_req {
    uint8_t *http; // the whole HTTP request (header and PKIMessage)
    size_t http_len;
    uint8_t tid[BENCH_NONCE_LEN];
    uint8_t nonce[BENCH_NONCE_LEN];
    uint8_t *sender; // the sender Name DER used in the header (certConf reuses it)
    size_t sender_len;
    size_t key; // index into the key pool: the requested key
    // kur/rr: the certificate enrolled for this request before the clock (DER, heap) and the
    // pool key it certifies, which signs the kur/rr.
    uint8_t *cert;
    size_t cert_len;
    size_t cert_key;
} bench_req;

// A signature-protection signer: the --cert/--key pair, or an enrolled certificate (kur/rr).
typedef struct bench_signer {
    EVP_PKEY *key;
    crmf_sig_alg alg;
    cm_span alg_der;
    cm_span cert; // DER, put in extraCerts
} bench_signer;

// Everything shared by the preparation threads, the loop and the verification.
// Thread: immutable while threads run, except each thread's own slice of |reqs|/|macs|.
typedef struct bench_ctx {
    const bench_opts *o;
    bench_flow flow; // the flow being prepared and run: ir-implicit while enrolling for kur/rr
    cmp_protect_ctx *prot;
    bench_key *keys;
    size_t num_keys;
    bench_req *reqs;
    cmp_mac_key *macs; // per request (PBM/PBMAC1); NULL for signature protection
    size_t num_reqs;
    // signature protection (--cert/--key)
    EVP_PKEY *prot_key;
    crmf_sig_alg prot_alg;
    cm_span prot_alg_der;
    cm_span prot_cert;   // DER
    cm_span prot_sender; // the certificate's subject Name DER
    // --ca
    X509 *ca;
    cm_span ca_der;
    cm_span ca_subject;
} bench_ctx;

// Per-thread state of request preparation.
typedef struct bench_prep {
    bench_ctx *ctx;
    size_t first;
    size_t step;
    crmf_crypto crypto;
    cm_arena arena;
    bool ok;
    char err[160];
} bench_prep;

// bench_put_http writes the HTTP request for |der| into a new buffer.
static uint8_t *bench_put_http(const bench_opts *o, size_t *out_len, cm_span der)
{
    char hdr[BENCH_HTTP_HDR_MAX];
    const int n =
        snprintf(hdr, sizeof(hdr),
                 "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/pkixcmp\r\n"
                 "Content-Length: %zu\r\n%s\r\n",
                 o->path, o->host, o->port, der.len, o->reconnect ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(hdr)) {
        return NULL;
    }
    uint8_t *p = malloc((size_t)n + der.len);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, hdr, (size_t)n);
    memcpy(p + n, der.p, der.len);
    *out_len = (size_t)n + der.len;
    return p;
}

// bench_protect_finish adds the protection of |w| (MAC with |mac| or the --key signature) and
// closes the message.
static bool bench_protect_finish(bench_ctx *ctx, crmf_crypto *c, cm_arena *arena, cmp_msg_writer *w,
                                 const cmp_mac_key *mac, const bench_signer *signer)
{
    const cm_span pp = cmp_msg_writer_protected_part(w);
    if (pp.len == 0) {
        return false;
    }
    if (mac != NULL) {
        uint8_t m[CMP_PROTECT_MAX_MAC_LEN];
        size_t mlen;
        if (!cm_ok(cmp_mac_compute(ctx->prot, m, sizeof(m), &mlen, mac, pp))) {
            return false;
        }
        cmp_msg_writer_finish(w, &(cm_span){m, mlen}, 0, NULL, 0);
        return true;
    }
    cm_span tbs;
    cm_span sig;
    if (!cm_ok(cmp_protect_sign_input(arena, &tbs, pp)) ||
        !cm_ok(crmf_crypto_sign(c, arena, &sig, &signer->alg, signer->key, tbs))) {
        return false;
    }
    cmp_msg_writer_finish(w, &sig, 0, &signer->cert, 1);
    return true;
}

// bench_default_signer is the --cert/--key signer of |ctx|.
static bench_signer bench_default_signer(const bench_ctx *ctx)
{
    return (bench_signer){ctx->prot_key, ctx->prot_alg, ctx->prot_alg_der, ctx->prot_cert};
}

// bench_header_init fills the header fields every request of |ctx| shares.
static void bench_header_init(const bench_ctx *ctx, cmp_header_fields *h, cm_span sender,
                              cm_span prot_alg)
{
    memset(h, 0, sizeof(*h));
    h->pvno = 2;
    h->sender_name = sender;
    h->recipient_name = ctx->ca_subject; // NULL-DN without --ca
    h->has_message_time = true;
    h->message_time = cm_time_now();
    h->protection_alg = prot_alg;
    if (ctx->macs != NULL) {
        h->sender_kid =
            (cmp_opt_span){true, cm_span_make(ctx->o->secret_ref, strlen(ctx->o->secret_ref))};
    }
}

// bench_rr_body builds RevReqContent with one RevDetails naming |rq|'s enrolled certificate
// by issuer and serialNumber (RFC 9483 §4.2), without a reason (unspecified).
static bool bench_rr_body(bench_prep *p, cmp_body *body, const bench_req *rq)
{
    cmp_rev_details *rd = cm_arena_alloc(&p->arena, sizeof(*rd));
    ca_cert_fields f;
    if (rd == NULL || !cm_ok(ca_cert_fields_parse(&f, cm_span_make(rq->cert, rq->cert_len)))) {
        return false;
    }
    memset(rd, 0, sizeof(*rd));
    rd->tmpl.issuer = f.issuer;
    rd->tmpl.serial = f.serial;
    memset(body, 0, sizeof(*body));
    body->type = CMP_BODY_RR;
    body->u.rr.items = rd;
    body->u.rr.num = 1;
    return true;
}

// bench_old_cert_id adds the oldCertID control naming |rq|'s enrolled certificate to |req|
// (RFC 4211 §6.5, RFC 9483 §4.1.3).
static bool bench_old_cert_id(bench_prep *p, crmf_cert_request *req, const bench_req *rq)
{
    ca_cert_fields f;
    if (!cm_ok(ca_cert_fields_parse(&f, cm_span_make(rq->cert, rq->cert_len)))) {
        return false;
    }
    crmf_cert_id id;
    memset(&id, 0, sizeof(id));
    id.issuer.tag = CRMF_GN_DIRECTORY_NAME;
    id.issuer.name = f.issuer;
    id.issuer.body = f.issuer; // [4] EXPLICIT: the Name inside
    id.serial = f.serial;
    der_builder b;
    der_builder_init_arena(&b, &p->arena, 256);
    crmf_cert_id_marshal(&b, &id);
    crmf_attr *ctl = cm_arena_alloc(&p->arena, sizeof(*ctl));
    if (ctl == NULL) {
        return false;
    }
    memset(ctl, 0, sizeof(*ctl));
    ctl->oid = CM_SPAN_LIT(DER_OID_REGCTRL_OLD_CERT_ID);
    if (!cm_ok(der_builder_finish(&b, &ctl->value))) {
        return false;
    }
    req->controls = ctl;
    req->num_controls = 1;
    return true;
}

// bench_body_for builds the request body of |p|'s flow for |key| and |subject| in |arena|
// (|rq|: the request, for kur/rr).
static bool bench_body_for(bench_prep *p, cmp_body *body, const bench_key *key, cm_span subject,
                           const bench_req *rq)
{
    const bench_flow flow = p->ctx->flow;
    if (flow == BENCH_FLOW_RR) {
        return bench_rr_body(p, body, rq);
    }
    const crmf_sig_alg alg = bench_sig_alg_for(key->pkey);
    der_builder ab;
    der_builder_init_arena(&ab, &p->arena, 64);
    crmf_sig_alg_marshal(&ab, &alg);
    cm_span alg_der;
    if (!cm_ok(der_builder_finish(&ab, &alg_der))) {
        return false;
    }
    memset(body, 0, sizeof(*body));
    if (flow == BENCH_FLOW_GENM) {
        // GenMsgContent with one InfoTypeAndValue: id-it-caCerts, value absent.
        static const cmp_itav k_ca_certs = {
            .oid = {(const uint8_t *)"\x2b\x06\x01\x05\x05\x07\x04\x11", 8}};
        body->type = CMP_BODY_GENM;
        body->u.gen.items = &k_ca_certs;
        body->u.gen.num = 1;
        return true;
    }
    if (flow == BENCH_FLOW_P10CR) {
        // CertificationRequestInfo ::= SEQUENCE { version INTEGER, subject Name,
        //     subjectPKInfo SubjectPublicKeyInfo, attributes [0] IMPLICIT SET OF Attribute }
        // (RFC 2986 §4.1): written here to be signed, then again by crmf_csr_marshal.
        der_builder ib;
        der_builder_init_arena(&ib, &p->arena, 512);
        der_mark info;
        der_mark attrs;
        der_open(&ib, &info, DER_TAG_SEQUENCE);
        der_put_i64(&ib, 0);
        der_put_raw(&ib, subject);
        der_put_raw(&ib, cm_span_make(key->spki, key->spki_len));
        der_open(&ib, &attrs, DER_CONTEXT_CONS(0));
        der_close(&ib, &attrs);
        der_close(&ib, &info);
        cm_span info_der;
        cm_span sig;
        if (!cm_ok(der_builder_finish(&ib, &info_der)) ||
            !cm_ok(crmf_crypto_sign(&p->crypto, &p->arena, &sig, &alg, key->pkey, info_der))) {
            return false;
        }
        body->type = CMP_BODY_P10CR;
        body->u.p10.subject = subject;
        body->u.p10.spki.body = key->spki_body;
        body->u.p10.sig_alg = alg_der;
        body->u.p10.signature = sig;
        return true;
    }
    crmf_cert_req_msg *msg = cm_arena_alloc(&p->arena, sizeof(*msg));
    if (msg == NULL) {
        return false;
    }
    memset(msg, 0, sizeof(*msg));
    msg->req.cert_req_id = 0;
    msg->req.tmpl.subject = subject;
    msg->req.tmpl.public_key = key->spki_body;
    if (flow == BENCH_FLOW_KUR && !bench_old_cert_id(p, &msg->req, rq)) {
        return false;
    }
    // POPOSigningKey over the DER of CertRequest (RFC 4211 §4.1, RFC 9483 §4.1.1).
    der_builder rb;
    der_builder_init_arena(&rb, &p->arena, 512);
    crmf_cert_request_marshal(&rb, &msg->req);
    cm_span req_der;
    cm_span sig;
    if (!cm_ok(der_builder_finish(&rb, &req_der)) ||
        !cm_ok(crmf_crypto_sign(&p->crypto, &p->arena, &sig, &alg, key->pkey, req_der))) {
        return false;
    }
    msg->popo.type = CRMF_POPO_SIGNATURE;
    msg->popo.alg = alg_der;
    msg->popo.signature = sig;
    body->type = flow == BENCH_FLOW_CR    ? CMP_BODY_CR
                 : flow == BENCH_FLOW_KUR ? CMP_BODY_KUR
                                          : CMP_BODY_IR;
    body->u.req.num_msgs = 1;
    body->u.req.msgs = msg;
    return true;
}

// bench_prepare_one builds request |i|: subject, body with POPO, header with fresh
// transactionID and senderNonce, protection, HTTP framing.
static bool bench_prepare_one(bench_prep *p, size_t i)
{
    bench_ctx *ctx = p->ctx;
    const bench_opts *o = ctx->o;
    bench_req *rq = &ctx->reqs[i];
    rq->key = i % ctx->num_keys;
    // kur/rr: signed with the enrolled certificate and its key; kur asks for the next key of
    // the pool (the same one with a pool of one).
    const bool by_cert = ctx->flow == BENCH_FLOW_KUR || ctx->flow == BENCH_FLOW_RR;
    bench_signer signer = bench_default_signer(ctx);
    if (by_cert) {
        rq->cert_key = rq->key;
        rq->key = ctx->flow == BENCH_FLOW_KUR ? (rq->key + 1) % ctx->num_keys : rq->key;
        signer.key = ctx->keys[rq->cert_key].pkey;
        signer.alg = bench_sig_alg_for(signer.key);
        signer.cert = cm_span_make(rq->cert, rq->cert_len);
    }
    const bench_key *key = &ctx->keys[rq->key];
    cm_arena_reset(&p->arena);
    if (by_cert) {
        der_builder ab;
        der_builder_init_arena(&ab, &p->arena, 64);
        crmf_sig_alg_marshal(&ab, &signer.alg);
        if (!cm_ok(der_builder_finish(&ab, &signer.alg_der))) {
            return false;
        }
    }
    if (RAND_bytes(rq->tid, sizeof(rq->tid)) != 1 ||
        RAND_bytes(rq->nonce, sizeof(rq->nonce)) != 1) {
        return false;
    }
    der_builder nb;
    der_builder_init_arena(&nb, &p->arena, 128);
    if (!bench_subject_marshal(&nb, o->subject_template, i)) {
        return false;
    }
    cm_span subject;
    if (!cm_ok(der_builder_finish(&nb, &subject))) {
        return false;
    }
    cm_span sender = ctx->macs != NULL ? subject : ctx->prot_sender;
    if (by_cert) {
        // The sender is the subject of the signing certificate; kur asks for the same subject.
        ca_cert_fields f;
        if (!cm_ok(ca_cert_fields_parse(&f, signer.cert))) {
            return false;
        }
        sender = f.subject;
        subject = f.subject;
    }
    rq->sender = malloc(sender.len);
    if (rq->sender == NULL) {
        return false;
    }
    memcpy(rq->sender, sender.p, sender.len);
    rq->sender_len = sender.len;
    cmp_body body;
    if (!bench_body_for(p, &body, key, subject, rq)) {
        return false;
    }
    cm_span prot_alg = signer.alg_der;
    cmp_mac_key *mac = NULL;
    if (ctx->macs != NULL) {
        mac = &ctx->macs[i];
        const cm_span secret = cm_span_make(o->secret, strlen(o->secret));
        const cm_result r = o->pbmac1
                                ? cmp_mac_key_new_pbmac1(ctx->prot, mac, secret, CMP_HASH_SHA256,
                                                         CMP_HASH_SHA256, o->pbm_iterations, 16, 32)
                                : cmp_mac_key_new_pbm(ctx->prot, mac, secret, CMP_HASH_SHA256,
                                                      CMP_HASH_SHA256, o->pbm_iterations, 16);
        if (!cm_ok(r)) {
            return false;
        }
        der_builder pb;
        der_builder_init_arena(&pb, &p->arena, 128);
        cmp_mac_key_put_alg(&pb, mac);
        if (!cm_ok(der_builder_finish(&pb, &prot_alg))) {
            return false;
        }
    }
    cmp_header_fields h;
    bench_header_init(ctx, &h, sender, prot_alg);
    h.transaction_id = (cmp_opt_span){true, cm_span_make(rq->tid, sizeof(rq->tid))};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(rq->nonce, sizeof(rq->nonce))};
    const cmp_itav ic = cmp_itav_implicit_confirm();
    if (ctx->flow != BENCH_FLOW_IR_CONFIRM && ctx->flow != BENCH_FLOW_GENM &&
        ctx->flow != BENCH_FLOW_RR) {
        h.general_info = &ic;
        h.num_general_info = 1;
    }
    der_builder b;
    der_builder_init_arena(&b, &p->arena, 2048);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    if (!bench_protect_finish(ctx, &p->crypto, &p->arena, &w, mac, &signer)) {
        return false;
    }
    cm_span der;
    if (!cm_ok(der_builder_finish(&b, &der))) {
        return false;
    }
    rq->http = bench_put_http(o, &rq->http_len, der);
    return rq->http != NULL;
}

static void *bench_prep_keys_thread(void *arg)
{
    bench_prep *p = arg;
    bench_ctx *ctx = p->ctx;
    for (size_t i = p->first; i < ctx->num_keys; i += p->step) {
        bench_key *k = &ctx->keys[i];
        k->pkey = bench_keygen(ctx->o->key_type);
        unsigned char *der = NULL;
        const int n = k->pkey != NULL ? i2d_PUBKEY(k->pkey, &der) : -1;
        crmf_spki spki;
        if (n <= 0 || !cm_ok(crmf_spki_from_der(&spki, cm_span_make(der, (size_t)n)))) {
            OPENSSL_free(der);
            (void)snprintf(p->err, sizeof(p->err), "key generation failed");
            p->ok = false;
            return NULL;
        }
        k->spki = der;
        k->spki_len = (size_t)n;
        k->spki_body = spki.body;
    }
    return NULL;
}

static void *bench_prep_reqs_thread(void *arg)
{
    bench_prep *p = arg;
    for (size_t i = p->first; i < p->ctx->num_reqs; i += p->step) {
        if (!bench_prepare_one(p, i)) {
            (void)snprintf(p->err, sizeof(p->err), "preparing request %zu failed", i);
            p->ok = false;
            return NULL;
        }
    }
    return NULL;
}

// bench_parallel runs |fn| on |n| bench_prep slices.
static void bench_parallel(bench_ctx *ctx, size_t n, void *(*fn)(void *))
{
    bench_prep *preps = calloc(n, sizeof(*preps));
    pthread_t tids[BENCH_MAX_THREADS];
    if (preps == NULL) {
        bench_die("out of memory");
    }
    for (size_t t = 0; t < n; t++) {
        bench_prep *p = &preps[t];
        memset(p, 0, sizeof(*p));
        p->ctx = ctx;
        p->first = t;
        p->step = n;
        p->ok = true;
        cm_arena_init(&p->arena, 16384, 0);
        if (!cm_ok(crmf_crypto_init(&p->crypto, NULL, NULL)) ||
            pthread_create(&tids[t], NULL, fn, p) != 0) {
            bench_die("cannot start a preparation thread");
        }
    }
    for (size_t t = 0; t < n; t++) {
        (void)pthread_join(tids[t], NULL);
        crmf_crypto_cleanup(&preps[t].crypto);
        cm_arena_cleanup(&preps[t].arena);
        if (!preps[t].ok) {
            bench_die(preps[t].err);
        }
    }
    free(preps);
}

static cm_span bench_read_der_cert(const char *path, X509 **out_x)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        bench_die("cannot open a certificate file");
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    (void)fclose(f);
    unsigned char *der = NULL;
    const int n = x != NULL ? i2d_X509(x, &der) : -1;
    if (n <= 0) {
        bench_die("cannot read a PEM certificate");
    }
    *out_x = x;
    return cm_span_make(der, (size_t)n);
}

static cm_span bench_name_der(const X509_NAME *name)
{
    unsigned char *der = NULL;
    const int n = i2d_X509_NAME(name, &der);
    if (n <= 0) {
        bench_die("cannot encode a Name");
    }
    return cm_span_make(der, (size_t)n);
}

// bench_ctx_setup loads --ca and --cert/--key, generates the key pool and prepares |num|
// requests on all cores.
static void bench_ctx_setup(bench_ctx *ctx, const bench_opts *o, size_t num)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->o = o;
    // kur/rr: first the enrolments they need (bench_run_main re-prepares afterwards).
    ctx->flow =
        o->flow == BENCH_FLOW_KUR || o->flow == BENCH_FLOW_RR ? BENCH_FLOW_IR_IMPLICIT : o->flow;
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.pbm_min_iterations = 1;
    lim.pbmac1_min_iterations = 1;
    if (!cm_ok(cmp_protect_ctx_new(&ctx->prot, NULL, NULL, &lim))) {
        bench_die("cmp_protect_ctx_new failed");
    }
    if (o->ca_path != NULL) {
        ctx->ca_der = bench_read_der_cert(o->ca_path, &ctx->ca);
        ctx->ca_subject = bench_name_der(X509_get_subject_name(ctx->ca));
    }
    if (o->cert_path != NULL) {
        X509 *x;
        ctx->prot_cert = bench_read_der_cert(o->cert_path, &x);
        ctx->prot_sender = bench_name_der(X509_get_subject_name(x));
        X509_free(x);
        FILE *f = fopen(o->key_path, "r");
        ctx->prot_key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
        if (f != NULL) {
            (void)fclose(f);
        }
        if (ctx->prot_key == NULL) {
            bench_die("cannot read --key");
        }
        ctx->prot_alg = bench_sig_alg_for(ctx->prot_key);
        ctx->prot_alg_der = bench_alg_der(&ctx->prot_alg);
    }
    ctx->num_reqs = num;
    ctx->num_keys = o->key_pool == 0 || o->key_pool > num ? num : o->key_pool;
    ctx->keys = calloc(ctx->num_keys, sizeof(*ctx->keys));
    ctx->reqs = calloc(num, sizeof(*ctx->reqs));
    if (o->secret != NULL) {
        ctx->macs = calloc(num, sizeof(*ctx->macs));
    }
    if (ctx->keys == NULL || ctx->reqs == NULL || (o->secret != NULL && ctx->macs == NULL)) {
        bench_die("out of memory");
    }
    const size_t threads = o->threads;
    bench_parallel(ctx, threads < ctx->num_keys ? threads : ctx->num_keys, bench_prep_keys_thread);
    bench_parallel(ctx, threads < num ? threads : num, bench_prep_reqs_thread);
}

// bench_ctx_reprepare prepares the kur/rr requests of |ctx| once each request holds its
// enrolled certificate: new transactionIDs and nonces, signed with the certificate's key.
static void bench_ctx_reprepare(bench_ctx *ctx)
{
    for (size_t i = 0; i < ctx->num_reqs; i++) {
        free(ctx->reqs[i].http);
        free(ctx->reqs[i].sender);
        ctx->reqs[i].http = NULL;
        ctx->reqs[i].sender = NULL;
        if (ctx->macs != NULL) {
            cmp_mac_key_cleanse(&ctx->macs[i]);
        }
    }
    free(ctx->macs);
    ctx->macs = NULL; // signature-protected from now on
    ctx->flow = ctx->o->flow;
    const size_t threads = ctx->o->threads;
    bench_parallel(ctx, threads < ctx->num_reqs ? threads : ctx->num_reqs, bench_prep_reqs_thread);
}

static void bench_ctx_cleanup(bench_ctx *ctx)
{
    for (size_t i = 0; i < ctx->num_keys; i++) {
        EVP_PKEY_free(ctx->keys[i].pkey);
        OPENSSL_free(ctx->keys[i].spki);
    }
    for (size_t i = 0; i < ctx->num_reqs; i++) {
        free(ctx->reqs[i].http);
        free(ctx->reqs[i].sender);
        free(ctx->reqs[i].cert);
        if (ctx->macs != NULL) {
            cmp_mac_key_cleanse(&ctx->macs[i]);
        }
    }
    free(ctx->keys);
    free(ctx->reqs);
    free(ctx->macs);
    EVP_PKEY_free(ctx->prot_key);
    free((void *)(uintptr_t)ctx->prot_alg_der.p);
    OPENSSL_free((void *)(uintptr_t)ctx->prot_cert.p);
    OPENSSL_free((void *)(uintptr_t)ctx->prot_sender.p);
    OPENSSL_free((void *)(uintptr_t)ctx->ca_der.p);
    OPENSSL_free((void *)(uintptr_t)ctx->ca_subject.p);
    X509_free(ctx->ca);
    cmp_protect_ctx_free(ctx->prot);
}

// ---------------------------------------------------------------------------------------------
// The event loop

// One client connection. Thread: loop-confined.
typedef struct bench_conn {
    int fd;          // -1 when closed
    uint32_t gen;    // bumped per socket, so stale epoll events are dropped
    bool busy;       // a transaction is in flight
    bool connecting; // non-blocking connect pending
    int phase;       // 0: the request, 1: its certConf
    bool retried;    // the request was already resent once on a new connection
    unsigned used;   // responses received on this socket
    size_t req;
    const uint8_t *out;
    size_t out_len;
    size_t out_off;
    uint8_t *in;
    size_t in_len;
    size_t in_cap;
    uint8_t *conf; // the HTTP certConf (ir-confirm), heap
    size_t conf_len;
    uint8_t conf_nonce[BENCH_NONCE_LEN];
    uint8_t ip_nonce[BENCH_NONCE_LEN]; // the ip's senderNonce
    uint64_t t0;
} bench_conn;

// A run's state and counters. Thread: loop-confined.
typedef struct bench_run {
    bench_ctx *ctx;
    const bench_opts *o;
    struct addrinfo *ai;
    int epfd;
    bench_conn *conns;
    size_t next;  // next request to send
    size_t limit; // requests this phase may start
    size_t busy;  // connections with a transaction in flight
    uint64_t stop_at;
    bool stopping;
    cm_arena arena; // response parsing, reset per response
    cmp_digests digests;
    crmf_crypto crypto;
    // results (reset after warm-up)
    uint64_t fails[BENCH_FAIL_COUNT];
    uint64_t *lat; // ns per successful enrolment
    size_t num_lat;
    uint64_t ok_in_window; // successes completed before stop_at (--duration)
    uint64_t unfinished;   // in flight when the grace period after stop_at ended
    size_t reconnects;
    uint8_t **rsp; // --verify: response DER per request (heap), NULL otherwise
    size_t *rsp_len;
    uint8_t **conf_rsp; // --verify with ir-confirm: the pkiConf per request, NULL otherwise
    size_t *conf_rsp_len;
    bool capture; // keep each issued certificate in its bench_req (enrolling for kur/rr)
} bench_run;

static void bench_conn_close(bench_conn *c)
{
    if (c->fd >= 0) {
        (void)close(c->fd); // also leaves the epoll set
        c->fd = -1;
    }
    c->connecting = false;
    c->in_len = 0;
    c->used = 0;
}

static bool bench_epoll_set(bench_run *run, bench_conn *c, uint32_t events, int op)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - run->conns);
    return epoll_ctl(run->epfd, op, c->fd, &ev) == 0;
}

static bool bench_conn_open(bench_run *run, bench_conn *c)
{
    c->fd = socket(run->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return false;
    }
    c->gen++;
    const int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (run->o->reconnect) {
        // No TIME_WAIT per transaction on our side: thousands of connections a second would
        // exhaust the ephemeral ports within a run.
        const struct linger lg = {1, 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (connect(c->fd, run->ai->ai_addr, run->ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        bench_conn_close(c);
        return false;
    }
    c->connecting = true;
    c->used = 0;
    run->reconnects++;
    if (!bench_epoll_set(run, c, EPOLLOUT, EPOLL_CTL_ADD)) {
        bench_conn_close(c);
        return false;
    }
    return true;
}

// bench_finish ends the transaction on |c| with |f|.
static void bench_finish(bench_run *run, bench_conn *c, bench_fail f, bool keep_alive)
{
    run->fails[f]++;
    if (f == BENCH_OK) {
        const uint64_t now = bench_now();
        run->lat[run->num_lat++] = now - c->t0;
        if (run->stop_at == 0 || now <= run->stop_at) {
            run->ok_in_window++;
        }
    }
    if (f != BENCH_OK || !keep_alive || run->o->reconnect) {
        bench_conn_close(c);
    }
    c->busy = false;
    run->busy--;
    // The loop starts the next transaction (bench_fill): no recursion through failures.
}

static void bench_conn_send(bench_run *run, bench_conn *c)
{
    while (c->out_off < c->out_len) {
        const ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            (void)bench_epoll_set(run, c, EPOLLOUT, EPOLL_CTL_MOD);
            return;
        }
        bench_finish(run, c, BENCH_FAIL_IO, false);
        return;
    }
    if (!bench_epoll_set(run, c, EPOLLIN, EPOLL_CTL_MOD)) {
        bench_finish(run, c, BENCH_FAIL_IO, false);
    }
}

// bench_conn_transmit sends |c|'s current message, opening a socket first when needed.
static void bench_conn_transmit(bench_run *run, bench_conn *c)
{
    c->out_off = 0;
    c->in_len = 0;
    if (c->fd < 0) {
        if (!bench_conn_open(run, c)) {
            bench_finish(run, c, BENCH_FAIL_CONNECT, false);
        }
        return; // sent once the connect completes
    }
    bench_conn_send(run, c);
}

static void bench_conn_start(bench_run *run, bench_conn *c)
{
    c->req = run->next++;
    c->busy = true;
    run->busy++;
    c->phase = 0;
    c->retried = false;
    c->t0 = bench_now();
    const bench_req *rq = &run->ctx->reqs[c->req];
    c->out = rq->http;
    c->out_len = rq->http_len;
    bench_conn_transmit(run, c);
}

// bench_fill starts a transaction on every idle connection while requests are left.
static void bench_fill(bench_run *run)
{
    for (size_t i = 0; i < run->o->connections; i++) {
        bench_conn *c = &run->conns[i];
        while (!c->busy && !run->stopping && run->next < run->limit) {
            bench_conn_start(run, c);
        }
    }
}

// bench_make_conf builds the certConf for the ip |ip| of |c|'s request: certHash of the
// certificate, a fresh senderNonce, recipNonce = the ip's senderNonce, the same
// transactionID, protected like the request (the same derived PBM key: RFC 4210 §5.1.3.1).
static bool bench_make_conf(bench_run *run, bench_conn *c, const cmp_msg *ip)
{
    bench_ctx *ctx = run->ctx;
    const bench_req *rq = &ctx->reqs[c->req];
    const cm_span cert = ip->body.u.rep.responses[0].cert;
    uint8_t hash[CMP_MAX_CERT_HASH_LEN];
    size_t hash_len;
    if (!cm_ok(cmp_cert_hash(&run->digests, hash, &hash_len, cert, NULL)) ||
        !ip->header.f.sender_nonce.present ||
        ip->header.f.sender_nonce.v.len != sizeof(c->ip_nonce) ||
        RAND_bytes(c->conf_nonce, sizeof(c->conf_nonce)) != 1) {
        return false;
    }
    memcpy(c->ip_nonce, ip->header.f.sender_nonce.v.p, sizeof(c->ip_nonce));
    cmp_cert_status cs;
    memset(&cs, 0, sizeof(cs));
    cs.cert_hash = cm_span_make(hash, hash_len);
    cs.cert_req_id = 0;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_CERT_CONF;
    body.u.conf.items = &cs;
    body.u.conf.num = 1;
    const cmp_mac_key *mac = ctx->macs != NULL ? &ctx->macs[c->req] : NULL;
    cm_span prot_alg = ctx->prot_alg_der;
    if (mac != NULL) {
        der_builder pb;
        der_builder_init_arena(&pb, &run->arena, 128);
        cmp_mac_key_put_alg(&pb, mac);
        if (!cm_ok(der_builder_finish(&pb, &prot_alg))) {
            return false;
        }
    }
    cmp_header_fields h;
    bench_header_init(ctx, &h, cm_span_make(rq->sender, rq->sender_len), prot_alg);
    h.transaction_id = (cmp_opt_span){true, cm_span_make(rq->tid, sizeof(rq->tid))};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(c->conf_nonce, sizeof(c->conf_nonce))};
    h.recip_nonce = (cmp_opt_span){true, cm_span_make(c->ip_nonce, sizeof(c->ip_nonce))};
    der_builder b;
    der_builder_init_arena(&b, &run->arena, 1024);
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cm_span der;
    const bench_signer signer = bench_default_signer(ctx);
    if (!bench_protect_finish(ctx, &run->crypto, &run->arena, &w, mac, &signer) ||
        !cm_ok(der_builder_finish(&b, &der))) {
        return false;
    }
    free(c->conf);
    c->conf = bench_put_http(run->o, &c->conf_len, der);
    return c->conf != NULL;
}

// bench_keep copies a response body for --verify. Out of memory leaves the slot NULL: an ip is
// then not verified, a pkiConf counts as unprotected (bench_verify).
static void bench_keep(uint8_t **slot, size_t *len, cm_span body)
{
    *slot = malloc(body.len);
    if (*slot != NULL) {
        memcpy(*slot, body.p, body.len);
        *len = body.len;
    }
}

// bench_on_response handles one complete HTTP response on |c|.
static void bench_on_response(bench_run *run, bench_conn *c, const bench_http_rsp *h)
{
    const bench_req *rq = &run->ctx->reqs[c->req];
    bench_expect e;
    memset(&e, 0, sizeof(e));
    e.transaction_id = cm_span_make(rq->tid, sizeof(rq->tid));
    if (c->phase == 0) {
        e.sender_nonce = cm_span_make(rq->nonce, sizeof(rq->nonce));
        const bench_flow flow = run->ctx->flow;
        e.body = flow == BENCH_FLOW_IR_IMPLICIT || flow == BENCH_FLOW_IR_CONFIRM ? CMP_BODY_IP
                 : flow == BENCH_FLOW_GENM                                       ? CMP_BODY_GENP
                 : flow == BENCH_FLOW_KUR                                        ? CMP_BODY_KUP
                 : flow == BENCH_FLOW_RR                                         ? CMP_BODY_RP
                                                                                 : CMP_BODY_CP;
        if (!run->o->no_key_check && flow != BENCH_FLOW_GENM && flow != BENCH_FLOW_RR) {
            const bench_key *k = &run->ctx->keys[rq->key];
            e.spki = cm_span_make(k->spki, k->spki_len);
        }
    } else {
        e.sender_nonce = cm_span_make(c->conf_nonce, sizeof(c->conf_nonce));
        e.body = CMP_BODY_PKICONF;
    }
    cm_arena_reset(&run->arena);
    cmp_msg m;
    const bench_fail f = bench_check_response(&run->arena, &m, &e, h);
    c->used++;
    if (f == BENCH_OK && c->phase == 0 && run->rsp != NULL && !run->capture) {
        bench_keep(&run->rsp[c->req], &run->rsp_len[c->req], h->body);
    }
    if (f == BENCH_OK && c->phase == 1 && run->conf_rsp != NULL) {
        bench_keep(&run->conf_rsp[c->req], &run->conf_rsp_len[c->req], h->body);
    }
    if (f == BENCH_OK && run->capture) {
        // Enrolling for a kur/rr run: keep the certificate.
        bench_req *w = &run->ctx->reqs[c->req];
        const cm_span cert = m.body.u.rep.responses[0].cert;
        w->cert = malloc(cert.len);
        if (w->cert == NULL) {
            bench_die("out of memory");
        }
        memcpy(w->cert, cert.p, cert.len);
        w->cert_len = cert.len;
    }
    if (f == BENCH_OK && c->phase == 0 && run->ctx->flow == BENCH_FLOW_IR_CONFIRM) {
        if (!bench_make_conf(run, c, &m)) {
            bench_die("cannot build a certConf");
        }
        if (!h->keep_alive) {
            bench_conn_close(c);
        }
        c->phase = 1;
        c->retried = false;
        c->out = c->conf;
        c->out_len = c->conf_len;
        bench_conn_transmit(run, c);
        return;
    }
    bench_finish(run, c, f, h->keep_alive);
}

static void bench_on_readable(bench_run *run, bench_conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            const size_t cap = c->in_cap == 0 ? 16384 : c->in_cap * 2;
            if (cap > BENCH_HTTP_MAX_BODY + 2 * BENCH_HTTP_MAX_HEADER) {
                bench_finish(run, c, BENCH_FAIL_HTTP_MALFORMED, false);
                return;
            }
            uint8_t *p = realloc(c->in, cap);
            if (p == NULL) {
                bench_die("out of memory");
            }
            c->in = p;
            c->in_cap = cap;
        }
        const ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            // A keep-alive connection the server closed before answering: resend once on a
            // new connection (nothing of this request was answered).
            if (c->in_len == 0 && c->used > 0 && !c->retried) {
                c->retried = true;
                bench_conn_close(c);
                bench_conn_transmit(run, c);
                return;
            }
            bench_finish(run, c, BENCH_FAIL_IO, false);
            return;
        }
        c->in_len += (size_t)n;
        bench_http_rsp h;
        const bench_http_state st = bench_http_parse(&h, c->in, c->in_len);
        if (st == BENCH_HTTP_BAD) {
            bench_finish(run, c, BENCH_FAIL_HTTP_MALFORMED, false);
            return;
        }
        if (st == BENCH_HTTP_DONE) {
            bench_on_response(run, c, &h);
            return;
        }
    }
}

static void bench_on_event(bench_run *run, const struct epoll_event *ev)
{
    const size_t idx = (size_t)(ev->data.u64 & 0xffffffffu);
    bench_conn *c = &run->conns[idx];
    if (c->fd < 0 || c->gen != (uint32_t)(ev->data.u64 >> 32)) {
        return;
    }
    if (!c->busy) {
        // An idle keep-alive connection the server closed (or wrote to): drop it, or the
        // level-triggered EPOLLIN would wake the loop again and again.
        bench_conn_close(c);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            bench_finish(run, c, BENCH_FAIL_CONNECT, false);
            return;
        }
        c->connecting = false;
        bench_conn_send(run, c);
        return;
    }
    if (c->out_off < c->out_len) {
        bench_conn_send(run, c);
        return;
    }
    bench_on_readable(run, c);
}

static void bench_progress(const bench_run *run, uint64_t t_start, uint64_t *last_t,
                           uint64_t *last_done)
{
    const uint64_t now = bench_now();
    uint64_t done = 0;
    uint64_t failed = 0;
    for (size_t f = 0; f < BENCH_FAIL_COUNT; f++) {
        done += run->fails[f];
        failed += f == BENCH_OK ? 0 : run->fails[f];
    }
    const double rate = (double)(done - *last_done) / ((double)(now - *last_t) / 1e9);
    (void)fprintf(stderr, "\r  %6.1f s  %9llu done  %9.0f/s  %llu errors   ",
                  (double)(now - t_start) / 1e9, (unsigned long long)done, rate,
                  (unsigned long long)failed);
    *last_t = now;
    *last_done = done;
}

// bench_abandon ends every transaction still in flight after the grace period of a --duration
// run: counted as unfinished, not as failures (a server that serves one keep-alive connection
// at a time leaves the others waiting for the whole run).
static void bench_abandon(bench_run *run)
{
    for (size_t i = 0; i < run->o->connections; i++) {
        bench_conn *c = &run->conns[i];
        if (c->busy) {
            bench_conn_close(c);
            c->busy = false;
            run->busy--;
            run->unfinished++;
        }
    }
}

// bench_loop runs until requests up to |limit| are all answered, or |stop_at| passes and the
// transactions in flight are answered.
static void bench_loop(bench_run *run, size_t limit, uint64_t stop_at, bool progress)
{
    run->limit = limit;
    run->stop_at = stop_at;
    run->stopping = false;
    const uint64_t t_start = bench_now();
    uint64_t last_t = t_start;
    uint64_t last_done = 0;
    uint64_t last_check = t_start;
    bench_fill(run);
    struct epoll_event evs[256];
    const uint64_t timeout_ns = (uint64_t)(run->o->timeout * 1e9);
    // After a --duration run's window, transactions in flight get this long to finish.
    const uint64_t grace_ns = timeout_ns < 2000000000u ? timeout_ns : 2000000000u;
    while (run->busy > 0) {
        const int n = epoll_wait(run->epfd, evs, 256, 100);
        if (n < 0 && errno != EINTR) {
            bench_die("epoll_wait failed");
        }
        for (int i = 0; i < n; i++) {
            bench_on_event(run, &evs[i]);
        }
        const uint64_t now = bench_now();
        if (stop_at != 0 && now >= stop_at) {
            run->stopping = true;
            if (now - stop_at >= grace_ns) {
                bench_abandon(run);
            }
        }
        if (now - last_check >= 100000000u) {
            last_check = now;
            for (size_t i = 0; i < run->o->connections; i++) {
                bench_conn *c = &run->conns[i];
                if (c->busy && now - c->t0 > timeout_ns) {
                    bench_finish(run, c, BENCH_FAIL_TIMEOUT, false);
                }
            }
        }
        bench_fill(run);
        if (progress && now - last_t >= 1000000000u) {
            bench_progress(run, t_start, &last_t, &last_done);
        }
    }
    if (progress) {
        (void)fputc('\n', stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// --verify (after the clock stops)

// bench_verify_protection parses the response |der| into |m| and checks its protection: a
// signature by extraCerts[0] (or the CA), or the MAC with --secret.
static bench_fail bench_verify_protection(bench_run *run, cmp_msg *out, cm_span der)
{
    bench_ctx *ctx = run->ctx;
    cm_arena_reset(&run->arena);
    cmp_msg m;
    if (!cm_ok(cmp_msg_from_der(&run->arena, &m, der, NULL)) || !m.has_protection) {
        return BENCH_FAIL_PROTECTION;
    }
    cmp_prot_kind kind;
    if (!cm_ok(cmp_protect_kind(&kind, m.header.f.protection_alg))) {
        return BENCH_FAIL_PROTECTION;
    }
    if (kind == CMP_PROT_SIGNATURE) {
        const cm_span signer = m.num_extra_certs > 0 ? m.extra_certs[0] : ctx->ca_der;
        if (!cm_ok(cmp_protect_verify_sig(&run->crypto, m.header.f.protection_alg, m.protected_part,
                                          m.protection, m.protection_unused, signer, NULL))) {
            return BENCH_FAIL_PROTECTION;
        }
    } else {
        if (ctx->o->secret == NULL) {
            return BENCH_FAIL_PROTECTION; // MAC-protected answer to a signed request
        }
        cmp_mac_key key;
        const cm_result r =
            cmp_protect_verify_mac(ctx->prot, &key, m.header.f.protection_alg,
                                   cm_span_make(ctx->o->secret, strlen(ctx->o->secret)),
                                   m.protected_part, m.protection, m.protection_unused, NULL);
        cmp_mac_key_cleanse(&key);
        if (!cm_ok(r)) {
            return BENCH_FAIL_PROTECTION;
        }
    }
    *out = m;
    return BENCH_OK;
}

// bench_verify_one checks the protection of the response |der| and the certificate's
// signature against --ca.
static bench_fail bench_verify_one(bench_run *run, cm_span der)
{
    cmp_msg m;
    const bench_fail pf = bench_verify_protection(run, &m, der);
    if (pf != BENCH_OK) {
        return pf;
    }
    if (m.body.type == CMP_BODY_GENP || m.body.type == CMP_BODY_RP) {
        return BENCH_OK; // no certificate to check
    }
    const cm_span cert = m.body.u.rep.responses[0].cert;
    const unsigned char *p = cert.p;
    X509 *x = d2i_X509(NULL, &p, (long)cert.len);
    const bool ok = x != NULL && X509_verify(x, X509_get0_pubkey(run->ctx->ca)) == 1;
    X509_free(x);
    return ok ? BENCH_OK : BENCH_FAIL_CERT_SIGNATURE;
}

static void bench_verify(bench_run *run, size_t first, size_t end)
{
    for (size_t i = first; i < end; i++) {
        if (run->rsp[i] == NULL) {
            continue;
        }
        bench_fail f = bench_verify_one(run, cm_span_make(run->rsp[i], run->rsp_len[i]));
        if (f == BENCH_OK && run->conf_rsp != NULL) {
            // ir-confirm: the pkiConf must be protected too (RFC 9483 §4.1.1).
            cmp_msg m;
            f = run->conf_rsp[i] == NULL
                    ? BENCH_FAIL_PROTECTION
                    : bench_verify_protection(run, &m,
                                              cm_span_make(run->conf_rsp[i], run->conf_rsp_len[i]));
        }
        if (f != BENCH_OK) {
            run->fails[BENCH_OK]--;
            run->fails[f]++;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

static int bench_cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a;
    const uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double bench_pct_ms(const uint64_t *v, size_t n, double pct)
{
    if (n == 0) {
        return 0;
    }
    size_t k = (size_t)(pct / 100.0 * (double)n);
    if (k >= n) {
        k = n - 1;
    }
    return (double)v[k] / 1e6;
}

typedef struct bench_result {
    double seconds;
    double cpu;
    double prep_seconds;
    uint64_t ok;
    uint64_t failed;
    double eps;
    double p50, p90, p99, max;
    bool ran_out; // --duration ended early: every prepared request was used
} bench_result;

static const char *bench_protection_name(const bench_opts *o)
{
    if (o->flow == BENCH_FLOW_KUR || o->flow == BENCH_FLOW_RR) {
        return "signature"; // by the enrolled certificate
    }
    return o->secret != NULL ? (o->pbmac1 ? "pbmac1" : "pbm") : "signature";
}

static void bench_report(const bench_run *run, const bench_result *r)
{
    const bench_opts *o = run->o;
    printf("certmint-bench: %s, %s protection, %s keys, %zu connection%s (%s), %s\n",
           k_bench_flow_names[o->flow], bench_protection_name(o), k_bench_key_names[o->key_type],
           o->connections, o->connections == 1 ? "" : "s",
           o->reconnect ? "new TCP connection per transaction" : "keep-alive", o->url);
    printf("  %-18s %llu ok, %llu failed in %.3f s%s\n", "enrolments", (unsigned long long)r->ok,
           (unsigned long long)r->failed, r->seconds,
           r->ran_out ? " (all prepared requests used: raise --prepare)" : "");
    printf("  %-18s %.1f enrolments/s\n", "rate", r->eps);
    if (run->unfinished != 0) {
        printf("  %-18s %llu transactions still unanswered %.1f s after the window closed\n",
               "unfinished", (unsigned long long)run->unfinished,
               o->timeout < 2 ? o->timeout : 2.0);
    }
    printf("  %-18s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", "latency ms", r->p50, r->p90, r->p99,
           r->max);
    printf("  %-18s %.2f s during the run (%.1f%% of one core); %.2f s preparing before it\n",
           "client CPU", r->cpu, r->seconds > 0 ? 100.0 * r->cpu / r->seconds : 0.0,
           r->prep_seconds);
    printf("  %-18s %zu\n", "TCP connects", run->reconnects);
    if (r->failed == 0) {
        printf("  %-18s none\n", "errors");
    }
    for (size_t f = 1; f < BENCH_FAIL_COUNT; f++) {
        if (run->fails[f] != 0) {
            printf("  %-18s %-16s %llu\n", "errors", bench_fail_name((bench_fail)f),
                   (unsigned long long)run->fails[f]);
        }
    }
}

static void bench_write_json(const bench_run *run, const bench_result *r)
{
    const bench_opts *o = run->o;
    FILE *f = strcmp(o->json_path, "-") == 0 ? stdout : fopen(o->json_path, "w");
    if (f == NULL) {
        bench_die("cannot write --json");
    }
    (void)fprintf(f,
                  "{\"url\": \"%s\", \"flow\": \"%s\", \"protection\": \"%s\", \"key_type\": "
                  "\"%s\", \"connections\": %zu, \"reconnect\": %s, \"ok\": %llu, \"failed\": "
                  "%llu, \"seconds\": %.3f, \"eps\": %.1f, \"latency_ms\": {\"p50\": %.3f, "
                  "\"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}, \"client_cpu_s\": %.3f, "
                  "\"prepare_s\": %.3f, \"ran_out\": %s, \"tcp_connects\": %zu, \"unfinished\": "
                  "%llu, \"errors\": {",
                  o->url, k_bench_flow_names[o->flow], bench_protection_name(o),
                  k_bench_key_names[o->key_type], o->connections, o->reconnect ? "true" : "false",
                  (unsigned long long)r->ok, (unsigned long long)r->failed, r->seconds, r->eps,
                  r->p50, r->p90, r->p99, r->max, r->cpu, r->prep_seconds,
                  r->ran_out ? "true" : "false", run->reconnects,
                  (unsigned long long)run->unfinished);
    for (size_t k = 1; k < BENCH_FAIL_COUNT; k++) {
        (void)fprintf(f, "%s\"%s\": %llu", k == 1 ? "" : ", ", bench_fail_name((bench_fail)k),
                      (unsigned long long)run->fails[k]);
    }
    (void)fprintf(f, "}}\n");
    if (f != stdout) {
        (void)fclose(f);
    }
}

// bench_run_main prepares, warms up, measures, verifies and reports. Returns the exit code.
static int bench_run_main(const bench_opts *o)
{
    const size_t measured = o->count != 0 ? o->count : o->prepare;
    const size_t total = o->warmup + measured;
    bench_ctx ctx;
    const uint64_t t_prep = bench_now();
    bench_ctx_setup(&ctx, o, total);
    const double prep_seconds = (double)(bench_now() - t_prep) / 1e9;

    bench_run run;
    memset(&run, 0, sizeof(run));
    run.ctx = &ctx;
    run.o = o;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(o->host, o->port, &hints, &run.ai) != 0) {
        bench_die("cannot resolve the --url host");
    }
    run.epfd = epoll_create1(EPOLL_CLOEXEC);
    run.conns = calloc(o->connections, sizeof(*run.conns));
    run.lat = calloc(total, sizeof(*run.lat));
    if (run.epfd < 0 || run.conns == NULL || run.lat == NULL) {
        bench_die("cannot set up the event loop");
    }
    if (o->verify) {
        run.rsp = calloc(total, sizeof(*run.rsp));
        run.rsp_len = calloc(total, sizeof(*run.rsp_len));
        if (run.rsp == NULL || run.rsp_len == NULL) {
            bench_die("out of memory");
        }
        if (ctx.flow == BENCH_FLOW_IR_CONFIRM) {
            run.conf_rsp = calloc(total, sizeof(*run.conf_rsp));
            run.conf_rsp_len = calloc(total, sizeof(*run.conf_rsp_len));
            if (run.conf_rsp == NULL || run.conf_rsp_len == NULL) {
                bench_die("out of memory");
            }
        }
    }
    for (size_t i = 0; i < o->connections; i++) {
        run.conns[i].fd = -1;
    }
    cm_arena_init(&run.arena, 65536, 0);
    if (!cm_ok(cmp_digests_init(&run.digests)) ||
        !cm_ok(crmf_crypto_init(&run.crypto, NULL, NULL))) {
        bench_die("cannot initialise the digests");
    }
    const bool tty = isatty(STDERR_FILENO) == 1;
    if (ctx.flow != o->flow) {
        // kur/rr: enrol every request's certificate first, untimed.
        const uint64_t te = bench_now();
        run.capture = true;
        bench_loop(&run, total, 0, false);
        run.capture = false;
        const uint64_t enrolled = run.fails[BENCH_OK];
        if (enrolled != total) {
            (void)fprintf(stderr, "certmint-bench: enrolling for the %s run: %llu of %zu ok;",
                          k_bench_flow_names[o->flow], (unsigned long long)enrolled, total);
            for (size_t f = 1; f < BENCH_FAIL_COUNT; f++) {
                if (run.fails[f] != 0) {
                    (void)fprintf(stderr, " %s %llu", bench_fail_name((bench_fail)f),
                                  (unsigned long long)run.fails[f]);
                }
            }
            (void)fputc('\n', stderr);
            bench_die("the enrolments a kur/rr run needs failed");
        }
        bench_ctx_reprepare(&ctx);
        (void)fprintf(stderr,
                      "certmint-bench: enrolled %zu certificates for the %s run in %.2f s\n", total,
                      k_bench_flow_names[o->flow], (double)(bench_now() - te) / 1e9);
        memset(run.fails, 0, sizeof(run.fails));
        run.next = 0;
        run.num_lat = 0;
        run.ok_in_window = 0;
        run.unfinished = 0;
        run.reconnects = 0;
    }
    if (o->warmup > 0) {
        bench_loop(&run, o->warmup, 0, false);
        memset(run.fails, 0, sizeof(run.fails));
        run.num_lat = 0;
        run.ok_in_window = 0;
        run.reconnects = 0;
    }
    // The clock.
    const double cpu0 = bench_cpu_seconds();
    const uint64_t t0 = bench_now();
    const uint64_t stop_at = o->count != 0 ? 0 : t0 + (uint64_t)(o->duration * 1e9);
    bench_loop(&run, total, stop_at, tty);
    const uint64_t t1 = bench_now();
    bench_result r;
    memset(&r, 0, sizeof(r));
    r.cpu = bench_cpu_seconds() - cpu0;
    r.seconds = (double)(t1 - t0) / 1e9;
    r.prep_seconds = prep_seconds;
    r.ran_out = o->count == 0 && run.next >= total && t1 < stop_at;
    if (o->verify) {
        bench_verify(&run, o->warmup, total);
    }
    r.ok = run.fails[BENCH_OK];
    for (size_t f = 1; f < BENCH_FAIL_COUNT; f++) {
        r.failed += run.fails[f];
    }
    // -n: all of them over the whole time; --duration: those done within the window.
    if (o->count != 0 || r.ran_out) {
        r.eps = r.seconds > 0 ? (double)r.ok / r.seconds : 0;
    } else {
        r.eps = (double)run.ok_in_window / o->duration;
    }
    qsort(run.lat, run.num_lat, sizeof(*run.lat), bench_cmp_u64);
    r.p50 = bench_pct_ms(run.lat, run.num_lat, 50);
    r.p90 = bench_pct_ms(run.lat, run.num_lat, 90);
    r.p99 = bench_pct_ms(run.lat, run.num_lat, 99);
    r.max = run.num_lat > 0 ? (double)run.lat[run.num_lat - 1] / 1e6 : 0;
    bench_report(&run, &r);
    if (o->json_path != NULL) {
        bench_write_json(&run, &r);
    }

    for (size_t i = 0; i < o->connections; i++) {
        bench_conn_close(&run.conns[i]);
        free(run.conns[i].in);
        free(run.conns[i].conf);
    }
    if (run.rsp != NULL) {
        for (size_t i = 0; i < total; i++) {
            free(run.rsp[i]);
        }
    }
    if (run.conf_rsp != NULL) {
        for (size_t i = 0; i < total; i++) {
            free(run.conf_rsp[i]);
        }
    }
    free(run.rsp);
    free(run.rsp_len);
    free(run.conf_rsp);
    free(run.conf_rsp_len);
    free(run.conns);
    free(run.lat);
    (void)close(run.epfd);
    freeaddrinfo(run.ai);
    cm_arena_cleanup(&run.arena);
    cmp_digests_cleanup(&run.digests);
    crmf_crypto_cleanup(&run.crypto);
    bench_ctx_cleanup(&ctx);
    return r.failed == 0 && r.ok > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// --limit: the physical limit of this machine, in process

typedef enum bench_limit_sign {
    BENCH_LIMIT_NONE = 0, // the common part only (for the per-step timing)
    BENCH_LIMIT_TOKEN,
    BENCH_LIMIT_MEMORY,
} bench_limit_sign;

// Shared, read-only while the threads run.
typedef struct bench_limit_env {
    bench_ctx *ctx;
    cmp_msg req;        // the prepared ir, parsed
    cm_span tbs;        // bytes signed as "the certificate" (the request's protected part)
    hsm_pool *pool;     // NULL without --token-uri
    const hsm_key *key; // the CA key on the token
    hsm_sig_alg alg;
    EVP_PKEY *mem_key; // an in-memory key of the same type
    const EVP_MD *mem_md;
} bench_limit_env;

typedef struct bench_limit_thread {
    const bench_limit_env *env;
    bench_limit_sign sign;
    uint64_t stop_at;
    uint64_t ops;
    bool ok;
} bench_limit_thread;

// bench_limit_op does the crypto of one enrolment: POPO verification, PBM key derivation and
// MAC check of the request, the response's MAC, and the certificate signature.
static bool bench_limit_op(const bench_limit_env *env, crmf_crypto *c, EVP_MD_CTX *mdctx,
                           bench_limit_sign sign)
{
    const bench_opts *o = env->ctx->o;
    const cmp_msg *m = &env->req;
    if (!cm_ok(crmf_popo_verify(c, &m->body.u.req.msgs[0], NULL))) {
        return false;
    }
    cmp_mac_key key;
    if (!cm_ok(cmp_protect_verify_mac(env->ctx->prot, &key, m->header.f.protection_alg,
                                      cm_span_make(o->secret, strlen(o->secret)), m->protected_part,
                                      m->protection, m->protection_unused, NULL))) {
        return false;
    }
    uint8_t mac[CMP_PROTECT_MAX_MAC_LEN];
    size_t mac_len;
    const bool mac_ok =
        cm_ok(cmp_mac_compute(env->ctx->prot, mac, sizeof(mac), &mac_len, &key, m->whole));
    cmp_mac_key_cleanse(&key);
    if (!mac_ok) {
        return false;
    }
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = sizeof(sig);
    if (sign == BENCH_LIMIT_TOKEN) {
        return cm_ok(
            hsm_sign_sync(env->pool, &sig_len, sig, sizeof(sig), env->key, env->alg, env->tbs));
    }
    if (sign == BENCH_LIMIT_MEMORY) {
        return EVP_DigestSignInit(mdctx, NULL, env->mem_md, NULL, env->mem_key) == 1 &&
               EVP_DigestSign(mdctx, sig, &sig_len, env->tbs.p, env->tbs.len) == 1;
    }
    return true;
}

static void *bench_limit_thread_main(void *arg)
{
    bench_limit_thread *t = arg;
    crmf_crypto c;
    EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
    t->ok = mdctx != NULL && cm_ok(crmf_crypto_init(&c, NULL, NULL));
    while (t->ok && bench_now() < t->stop_at) {
        for (int i = 0; i < 16 && t->ok; i++) {
            t->ok = bench_limit_op(t->env, &c, mdctx, t->sign);
            t->ops++;
        }
    }
    crmf_crypto_cleanup(&c);
    EVP_MD_CTX_free(mdctx);
    return NULL;
}

// bench_limit_rate runs |sign| enrolments on |threads| threads for |seconds| and returns the
// rate.
static double bench_limit_rate(const bench_limit_env *env, bench_limit_sign sign, size_t threads,
                               double seconds)
{
    bench_limit_thread th[BENCH_MAX_THREADS];
    pthread_t tid[BENCH_MAX_THREADS];
    const uint64_t t0 = bench_now();
    for (size_t i = 0; i < threads; i++) {
        th[i] = (bench_limit_thread){env, sign, t0 + (uint64_t)(seconds * 1e9), 0, true};
        if (pthread_create(&tid[i], NULL, bench_limit_thread_main, &th[i]) != 0) {
            bench_die("cannot start a thread");
        }
    }
    uint64_t ops = 0;
    for (size_t i = 0; i < threads; i++) {
        (void)pthread_join(tid[i], NULL);
        if (!th[i].ok) {
            bench_die("an in-process operation failed");
        }
        ops += th[i].ops;
    }
    return (double)ops / ((double)(bench_now() - t0) / 1e9);
}

// bench_limit_us times |n| single-threaded operations of one kind, in microseconds each.
static double bench_limit_step_us(const bench_limit_env *env, int step, int n)
{
    crmf_crypto c;
    EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL || !cm_ok(crmf_crypto_init(&c, NULL, NULL))) {
        bench_die("crmf_crypto_init failed");
    }
    const bench_opts *o = env->ctx->o;
    const cmp_msg *m = &env->req;
    const uint64_t t0 = bench_now();
    for (int i = 0; i < n; i++) {
        bool ok = true;
        uint8_t buf[HSM_MAX_SIG_LEN];
        size_t len = sizeof(buf);
        cmp_mac_key key;
        switch (step) {
        case 0:
            ok = cm_ok(crmf_popo_verify(&c, &m->body.u.req.msgs[0], NULL));
            break;
        case 1:
            ok = cm_ok(cmp_protect_verify_mac(env->ctx->prot, &key, m->header.f.protection_alg,
                                              cm_span_make(o->secret, strlen(o->secret)),
                                              m->protected_part, m->protection,
                                              m->protection_unused, NULL));
            cmp_mac_key_cleanse(&key);
            break;
        case 2:
            ok = cm_ok(cmp_mac_compute(env->ctx->prot, buf, sizeof(buf), &len, &env->ctx->macs[0],
                                       m->whole));
            break;
        case 3:
            ok = cm_ok(
                hsm_sign_sync(env->pool, &len, buf, sizeof(buf), env->key, env->alg, env->tbs));
            break;
        default:
            ok = EVP_DigestSignInit(mdctx, NULL, env->mem_md, NULL, env->mem_key) == 1 &&
                 EVP_DigestSign(mdctx, buf, &len, env->tbs.p, env->tbs.len) == 1;
            break;
        }
        if (!ok) {
            bench_die("an in-process operation failed");
        }
    }
    crmf_crypto_cleanup(&c);
    EVP_MD_CTX_free(mdctx);
    return (double)(bench_now() - t0) / 1e3 / n;
}

static hsm_sig_alg bench_hsm_alg_for(hsm_key_type t, const EVP_MD **out_md, bench_key_type *out_mem)
{
    switch (t) {
    case HSM_KEY_EC_P384:
        *out_md = EVP_sha384();
        *out_mem = BENCH_KEY_EC_P384;
        break;
    case HSM_KEY_RSA:
        *out_md = EVP_sha256();
        *out_mem = BENCH_KEY_RSA2048;
        break;
    case HSM_KEY_ED25519:
        *out_md = NULL;
        *out_mem = BENCH_KEY_ED25519;
        break;
    default:
        *out_md = EVP_sha256();
        *out_mem = BENCH_KEY_EC_P256;
        return HSM_SIG_ECDSA_SHA256;
    }
    return hsm_sig_alg_for_type(t);
}

static int bench_limit_main(const bench_opts *o)
{
    bench_ctx ctx;
    bench_ctx_setup(&ctx, o, 1);
    bench_limit_env env;
    memset(&env, 0, sizeof(env));
    env.ctx = &ctx;
    const bench_req *rq = &ctx.reqs[0];
    const uint8_t *sep = memmem(rq->http, rq->http_len, "\r\n\r\n", 4);
    cm_arena arena;
    cm_arena_init(&arena, 16384, 0);
    if (sep == NULL ||
        !cm_ok(cmp_msg_from_der(&arena, &env.req,
                                cm_span_make(sep + 4, rq->http_len - (size_t)(sep + 4 - rq->http)),
                                NULL))) {
        bench_die("cannot parse the prepared request");
    }
    env.tbs = env.req.protected_part;
    hsm_token *tok = NULL;
    hsm_key *hkey = NULL;
    bench_key_type mem_type = o->key_type;
    env.mem_md = EVP_sha256();
    if (o->token_uri != NULL) {
        hsm_error err;
        memset(&err, 0, sizeof(err));
        hsm_pool_opts po;
        hsm_pool_opts_default(&po);
        po.sessions = (uint32_t)o->threads;
        if (!cm_ok(hsm_token_open(&tok, &err, o->token_uri)) ||
            !cm_ok(hsm_key_find(tok, &hkey, &err, o->token_uri)) ||
            !cm_ok(hsm_pool_new(&env.pool, tok, &po))) {
            (void)fprintf(stderr, "certmint-bench: PKCS#11: %s\n", err.msg);
            return 2;
        }
        env.key = hkey;
        env.alg = bench_hsm_alg_for(hsm_key_get_type(hkey), &env.mem_md, &mem_type);
    }
    env.mem_key = bench_keygen(mem_type);
    if (env.mem_key == NULL) {
        bench_die("key generation failed");
    }
    const int n = 200;
    const double popo_us = bench_limit_step_us(&env, 0, n);
    const double pbm_us = bench_limit_step_us(&env, 1, n);
    const double mac_us = bench_limit_step_us(&env, 2, n);
    const double tok_us = env.pool != NULL ? bench_limit_step_us(&env, 3, n) : 0;
    const double mem_us = bench_limit_step_us(&env, 4, n);
    const double secs = o->duration > 0 ? o->duration : 3.0;
    const double tok_eps =
        env.pool != NULL ? bench_limit_rate(&env, BENCH_LIMIT_TOKEN, o->threads, secs) : 0;
    const double mem_eps = bench_limit_rate(&env, BENCH_LIMIT_MEMORY, o->threads, secs);
    printf("certmint-bench --limit: the crypto of one %s enrolment (%s keys, PBM %llu iterations), "
           "in process\n",
           k_bench_flow_names[o->flow], k_bench_key_names[o->key_type],
           (unsigned long long)o->pbm_iterations);
    printf("  %-34s %8.1f us\n", "POPO verify (device key)", popo_us);
    printf("  %-34s %8.1f us\n", "PBM derive + request MAC check", pbm_us);
    printf("  %-34s %8.1f us\n", "response MAC", mac_us);
    if (env.pool != NULL) {
        printf("  %-34s %8.1f us\n", "certificate signature (token)", tok_us);
    }
    printf("  %-34s %8.1f us\n", "certificate signature (memory)", mem_us);
    if (env.pool != NULL) {
        printf("  %-34s %8.0f enrolments/s (%zu threads)\n", "limit via the token", tok_eps,
               o->threads);
    }
    printf("  %-34s %8.0f enrolments/s (%zu threads)\n", "limit with in-memory keys", mem_eps,
           o->threads);
    if (o->json_path != NULL) {
        FILE *f = strcmp(o->json_path, "-") == 0 ? stdout : fopen(o->json_path, "w");
        if (f == NULL) {
            bench_die("cannot write --json");
        }
        (void)fprintf(f,
                      "{\"threads\": %zu, \"popo_us\": %.2f, \"pbm_us\": %.2f, \"mac_us\": %.2f, "
                      "\"sign_token_us\": %.2f, \"sign_memory_us\": %.2f, \"limit_token_eps\": "
                      "%.1f, \"limit_memory_eps\": %.1f}\n",
                      o->threads, popo_us, pbm_us, mac_us, tok_us, mem_us, tok_eps, mem_eps);
        if (f != stdout) {
            (void)fclose(f);
        }
    }
    EVP_PKEY_free(env.mem_key);
    hsm_pool_free(env.pool);
    hsm_key_free(hkey);
    hsm_token_free(tok);
    cm_arena_cleanup(&arena);
    bench_ctx_cleanup(&ctx);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Options

static void bench_usage(FILE *f)
{
    (void)fprintf(
        f,
        "usage: certmint-bench --url http://HOST:PORT/PATH (--secret REF:SECRET [--pbmac1] |\n"
        "                      --cert CERT.pem --key KEY.pem) [options]\n"
        "       certmint-bench --limit [--token-uri PKCS11-URI] [--duration S] [options]\n"
        "  --flow F              ir-implicit (default) | ir-confirm | cr | p10cr | genm |\n"
        "                        kur | rr (each request enrols a certificate before the clock\n"
        "                        with the given protection, then updates / revokes it, signed\n"
        "                        with that certificate)\n"
        "  --key-type T          ec-p256 (default) | ec-p384 | rsa2048 | ed25519\n"
        "  --key-pool N          N device keys reused round-robin (default: one per request)\n"
        "  -n COUNT              transactions to measure (default 1000)\n"
        "  --duration S          measure for S seconds instead (see --prepare)\n"
        "  --prepare N           requests prepared for a --duration run (default 5000*S)\n"
        "  --connections C       keep-alive connections, one request in flight each (default 1)\n"
        "  --reconnect           a new TCP connection per transaction\n"
        "  --warmup N            transactions before the clock starts (default 0)\n"
        "  --subject-template T  e.g. 'CN=dev-%%d' (default), %%d is the request number\n"
        "  --pbm-iterations N    iteration count (default 500 for PBM, 1000 for PBMAC1)\n"
        "  --no-key-check        do not compare the certificate's key (OpenSSL's mock server)\n"
        "  --ca CA.pem           the CA: recipient name, and --verify's trust anchor\n"
        "  --verify              after the clock: check response protection and certificates\n"
        "  --timeout S           per transaction (default 30)\n"
        "  --threads N           preparation / --limit threads (default: online cores)\n"
        "  --json FILE           results as JSON ('-': stdout)\n");
}

static bool bench_parse_size_arg(const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return false;
    }
    *out = (size_t)v;
    return true;
}

static bool bench_pick(const char *s, const char *const *names, size_t n, int *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return true;
        }
    }
    return false;
}

// bench_parse_url splits http://HOST[:PORT]/PATH.
static bool bench_parse_url(bench_opts *o)
{
    const char *u = o->url;
    if (strncmp(u, "http://", 7) != 0) {
        return false;
    }
    u += 7;
    const char *slash = strchr(u, '/');
    const size_t hostport = slash != NULL ? (size_t)(slash - u) : strlen(u);
    (void)snprintf(o->path, sizeof(o->path), "%s", slash != NULL ? slash : "/");
    const char *colon = memchr(u, ':', hostport);
    const size_t hl = colon != NULL ? (size_t)(colon - u) : hostport;
    if (hl == 0 || hl >= sizeof(o->host)) {
        return false;
    }
    memcpy(o->host, u, hl);
    o->host[hl] = '\0';
    if (colon != NULL) {
        const size_t pl = hostport - hl - 1;
        if (pl == 0 || pl >= sizeof(o->port)) {
            return false;
        }
        memcpy(o->port, colon + 1, pl);
        o->port[pl] = '\0';
    } else {
        (void)snprintf(o->port, sizeof(o->port), "80");
    }
    return true;
}

enum {
    BENCH_OPT_URL = 256,
    BENCH_OPT_SECRET,
    BENCH_OPT_PBMAC1,
    BENCH_OPT_CERT,
    BENCH_OPT_KEY,
    BENCH_OPT_KEY_TYPE,
    BENCH_OPT_KEY_POOL,
    BENCH_OPT_FLOW,
    BENCH_OPT_DURATION,
    BENCH_OPT_PREPARE,
    BENCH_OPT_CONNECTIONS,
    BENCH_OPT_WARMUP,
    BENCH_OPT_SUBJECT,
    BENCH_OPT_RECONNECT,
    BENCH_OPT_JSON,
    BENCH_OPT_NO_KEY_CHECK,
    BENCH_OPT_CA,
    BENCH_OPT_VERIFY,
    BENCH_OPT_TIMEOUT,
    BENCH_OPT_THREADS,
    BENCH_OPT_LIMIT,
    BENCH_OPT_TOKEN_URI,
    BENCH_OPT_PBM_ITER,
    BENCH_OPT_HELP,
};

static const struct option k_bench_long_opts[] = {
    {"url", required_argument, NULL, BENCH_OPT_URL},
    {"secret", required_argument, NULL, BENCH_OPT_SECRET},
    {"pbmac1", no_argument, NULL, BENCH_OPT_PBMAC1},
    {"cert", required_argument, NULL, BENCH_OPT_CERT},
    {"key", required_argument, NULL, BENCH_OPT_KEY},
    {"key-type", required_argument, NULL, BENCH_OPT_KEY_TYPE},
    {"key-pool", required_argument, NULL, BENCH_OPT_KEY_POOL},
    {"flow", required_argument, NULL, BENCH_OPT_FLOW},
    {"duration", required_argument, NULL, BENCH_OPT_DURATION},
    {"prepare", required_argument, NULL, BENCH_OPT_PREPARE},
    {"connections", required_argument, NULL, BENCH_OPT_CONNECTIONS},
    {"warmup", required_argument, NULL, BENCH_OPT_WARMUP},
    {"subject-template", required_argument, NULL, BENCH_OPT_SUBJECT},
    {"reconnect", no_argument, NULL, BENCH_OPT_RECONNECT},
    {"json", required_argument, NULL, BENCH_OPT_JSON},
    {"no-key-check", no_argument, NULL, BENCH_OPT_NO_KEY_CHECK},
    {"ca", required_argument, NULL, BENCH_OPT_CA},
    {"verify", no_argument, NULL, BENCH_OPT_VERIFY},
    {"timeout", required_argument, NULL, BENCH_OPT_TIMEOUT},
    {"threads", required_argument, NULL, BENCH_OPT_THREADS},
    {"limit", no_argument, NULL, BENCH_OPT_LIMIT},
    {"token-uri", required_argument, NULL, BENCH_OPT_TOKEN_URI},
    {"pbm-iterations", required_argument, NULL, BENCH_OPT_PBM_ITER},
    {"help", no_argument, NULL, BENCH_OPT_HELP},
    {NULL, 0, NULL, 0},
};

static bool bench_parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0)) {
        return false;
    }
    *out = v;
    return true;
}

// bench_opt_one applies option |c| with argument |arg|; false for a bad value.
static bool bench_opt_one(bench_opts *o, int c, const char *arg, char *secret_buf, size_t cap)
{
    int pick;
    size_t v;
    switch (c) {
    case 'n':
        return bench_parse_size_arg(arg, &o->count) && o->count > 0;
    case BENCH_OPT_URL:
        o->url = arg;
        return bench_parse_url(o);
    case BENCH_OPT_SECRET: {
        const char *colon = strchr(arg, ':');
        if (colon == NULL || colon == arg || strlen(arg) >= cap) {
            return false;
        }
        memcpy(secret_buf, arg, strlen(arg) + 1);
        secret_buf[colon - arg] = '\0';
        o->secret_ref = secret_buf;
        o->secret = secret_buf + (colon - arg) + 1;
        return true;
    }
    case BENCH_OPT_PBMAC1:
        o->pbmac1 = true;
        return true;
    case BENCH_OPT_CERT:
        o->cert_path = arg;
        return true;
    case BENCH_OPT_KEY:
        o->key_path = arg;
        return true;
    case BENCH_OPT_KEY_TYPE:
        if (!bench_pick(arg, k_bench_key_names, 4, &pick)) {
            return false;
        }
        o->key_type = (bench_key_type)pick;
        return true;
    case BENCH_OPT_KEY_POOL:
        return bench_parse_size_arg(arg, &o->key_pool);
    case BENCH_OPT_FLOW:
        if (!bench_pick(arg, k_bench_flow_names, BENCH_NUM_FLOWS, &pick)) {
            return false;
        }
        o->flow = (bench_flow)pick;
        return true;
    case BENCH_OPT_DURATION:
        return bench_parse_double(arg, &o->duration);
    case BENCH_OPT_PREPARE:
        return bench_parse_size_arg(arg, &o->prepare) && o->prepare > 0;
    case BENCH_OPT_CONNECTIONS:
        return bench_parse_size_arg(arg, &o->connections) && o->connections > 0 &&
               o->connections <= BENCH_MAX_CONNS;
    case BENCH_OPT_WARMUP:
        return bench_parse_size_arg(arg, &o->warmup);
    case BENCH_OPT_SUBJECT:
        o->subject_template = arg;
        return true;
    case BENCH_OPT_RECONNECT:
        o->reconnect = true;
        return true;
    case BENCH_OPT_JSON:
        o->json_path = arg;
        return true;
    case BENCH_OPT_NO_KEY_CHECK:
        o->no_key_check = true;
        return true;
    case BENCH_OPT_CA:
        o->ca_path = arg;
        return true;
    case BENCH_OPT_VERIFY:
        o->verify = true;
        return true;
    case BENCH_OPT_TIMEOUT:
        return bench_parse_double(arg, &o->timeout);
    case BENCH_OPT_THREADS:
        if (!bench_parse_size_arg(arg, &v) || v == 0 || v > BENCH_MAX_THREADS) {
            return false;
        }
        o->threads = v;
        return true;
    case BENCH_OPT_LIMIT:
        o->limit = true;
        return true;
    case BENCH_OPT_TOKEN_URI:
        o->token_uri = arg;
        return true;
    case BENCH_OPT_PBM_ITER:
        return bench_parse_size_arg(arg, &v) && v > 0 && (o->pbm_iterations = v) > 0;
    default:
        return false;
    }
}

// bench_opts_check rejects inconsistent combinations; returns a message or NULL.
static const char *bench_opts_check(bench_opts *o)
{
    const char *pct = strstr(o->subject_template, "%");
    if (pct != NULL && (pct[1] != 'd' || strchr(pct + 1, '%') != NULL)) {
        return "--subject-template takes at most one %d and no other %";
    }
    if (o->limit) {
        if (o->secret == NULL) {
            o->secret_ref = "limit";
            o->secret = "limit-secret";
        }
        o->cert_path = NULL;
        o->flow = BENCH_FLOW_IR_IMPLICIT;
        if (o->url == NULL) {
            o->url = "http://127.0.0.1:1/";
            (void)bench_parse_url(o);
        }
        return NULL;
    }
    if (o->url == NULL) {
        return "--url is required";
    }
    if ((o->secret != NULL) == (o->cert_path != NULL)) {
        return "give exactly one of --secret and --cert/--key";
    }
    if ((o->cert_path != NULL) != (o->key_path != NULL)) {
        return "--cert and --key go together";
    }
    if (o->verify && o->ca_path == NULL) {
        return "--verify needs --ca";
    }
    if ((o->flow == BENCH_FLOW_KUR || o->flow == BENCH_FLOW_RR) && o->no_key_check) {
        return "kur and rr need certificates for the requested keys (not --no-key-check)";
    }
    if (o->count != 0 && o->duration > 0) {
        return "give -n or --duration, not both";
    }
    if (o->count == 0 && o->duration <= 0) {
        o->count = 1000;
    }
    if (o->duration > 0 && o->prepare == 0) {
        o->prepare = (size_t)(o->duration * 5000.0) + 1;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_opts o;
    memset(&o, 0, sizeof(o));
    o.connections = 1;
    o.subject_template = "CN=dev-%d";
    o.pbm_iterations = 0; // 500 for PBM, 1000 for PBMAC1 (RFC 8018 §4.2)
    o.timeout = 30;
    o.threads = bench_nproc();
    char secret_buf[1024];
    int c;
    while ((c = getopt_long(argc, argv, "n:h", k_bench_long_opts, NULL)) != -1) {
        if (c == 'h' || c == BENCH_OPT_HELP) {
            bench_usage(stdout);
            return 0;
        }
        if (c == '?' || !bench_opt_one(&o, c, optarg, secret_buf, sizeof(secret_buf))) {
            if (c != '?') {
                (void)fprintf(stderr, "certmint-bench: bad value for %s\n", argv[optind - 1]);
            }
            bench_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        bench_usage(stderr);
        return 2;
    }
    if (o.pbm_iterations == 0) {
        o.pbm_iterations = o.pbmac1 ? 1000 : 500;
    }
    const char *why = bench_opts_check(&o);
    if (why != NULL) {
        (void)fprintf(stderr, "certmint-bench: %s\n", why);
        return 2;
    }
    if (!cm_ok(cm_runtime_init())) {
        bench_die("cm_runtime_init failed");
    }
    const int rc = o.limit ? bench_limit_main(&o) : bench_run_main(&o);
    OPENSSL_cleanse(secret_buf, sizeof(secret_buf));
    return rc;
}
