// Request preparation, before the clock starts and on all cores: the device key pool, then per
// request a subject from the template, the body with its POPO (ir/cr/kur, p10cr, genm, rr), a
// fresh transactionID and senderNonce, the protection and the HTTP framing. kur and rr runs are
// prepared twice: first as the ir-implicit enrolments they need, then (bench_ctx_reprepare)
// signed with the enrolled certificates.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "bench/certmint_bench.h"
#include "engine/ca/ca.h"
#include "engine/der/der_oid.h"

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

// bench_rr_body builds RevReqContent with one RevDetails naming |rq|'s enrolled certificate
// by issuer and serialNumber, with the one CRLReason RFC 9483 §4.2 requires (unspecified).
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
    // Extensions { Extension { id-ce-cRLReasons, OCTET STRING { ENUMERATED unspecified } } }
    static const uint8_t k_reason[] = {0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55,
                                       0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, 0x00};
    rd->crl_entry_details = cm_span_make(k_reason, sizeof(k_reason));
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
    if (flow == BENCH_FLOW_IR_CKG) {
        // Central key generation (RFC 9483 §4.1.6): no publicKey and no POPO.
        msg->popo.type = CRMF_POPO_ABSENT;
        body->type = CMP_BODY_IR;
        body->u.req.num_msgs = 1;
        body->u.req.msgs = msg;
        return true;
    }
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
    // kur/rr: signed with the enrolled certificate and its key; kur asks for a key of the
    // second half of the pool, which no certificate holds yet (a CA may refuse to certify a
    // key twice, as certmint does by default).
    const bool by_cert = ctx->flow == BENCH_FLOW_KUR || ctx->flow == BENCH_FLOW_RR;
    bench_signer signer = bench_default_signer(ctx);
    if (by_cert) {
        rq->cert_key = rq->key;
        rq->key = ctx->flow == BENCH_FLOW_KUR ? rq->key + ctx->num_keys : rq->key;
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
        const cm_span secret = bench_mac_secret(o);
        const cm_result r =
            o->key_mac != 0 ? cmp_mac_key_new_keyed(ctx->prot, mac, secret, (crmf_alg_id)o->key_mac)
            : o->pbmac1     ? cmp_mac_key_new_pbmac1(ctx->prot, mac, secret, CMP_HASH_SHA256,
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
    // A signed request names its key by the certificate's SKI (RFC 9483 §3.1).
    uint8_t ski[64];
    const size_t ski_len = ctx->macs == NULL ? bench_cert_ski(signer.cert, ski, sizeof(ski)) : 0;
    if (ski_len > 0) {
        h.sender_kid = (cmp_opt_span){true, cm_span_make(ski, ski_len)};
    }
    h.transaction_id = (cmp_opt_span){true, cm_span_make(rq->tid, sizeof(rq->tid))};
    h.sender_nonce = (cmp_opt_span){true, cm_span_make(rq->nonce, sizeof(rq->nonce))};
    const cmp_itav ic = cmp_itav_implicit_confirm();
    if (ctx->flow != BENCH_FLOW_IR_CONFIRM && ctx->flow != BENCH_FLOW_GENM &&
        ctx->flow != BENCH_FLOW_RR && ctx->flow != BENCH_FLOW_NESTED_CONFIRM) {
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
    if (bench_flow_is_nested(ctx->flow)) {
        // An inner request: its batch goes out (bench_nested_prepare), not it.
        rq->inner = malloc(der.len);
        if (rq->inner == NULL) {
            return false;
        }
        memcpy(rq->inner, der.p, der.len);
        rq->inner_len = der.len;
        return true;
    }
    rq->http = bench_put_http(o, &rq->http_len, der);
    return rq->http != NULL;
}

static void *bench_prep_keys_thread(void *arg)
{
    bench_prep *p = arg;
    bench_ctx *ctx = p->ctx;
    for (size_t i = p->first; i < ctx->num_all_keys; i += p->step) {
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
        __atomic_add_fetch(&ctx->prep_done, 1, __ATOMIC_RELAXED);
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
        __atomic_add_fetch(&p->ctx->prep_done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

// bench_prep_wait joins the |n| threads of |tids|. With a progress line (bench_opts.progress)
// it polls them instead, refreshing "|what|: done of |total|" on stderr every 200 ms from
// ctx->prep_done, and ends the line when all are joined.
static void bench_prep_wait(bench_ctx *ctx, pthread_t *tids, size_t n, const char *what,
                            size_t total)
{
    if (!ctx->o->progress) {
        for (size_t t = 0; t < n; t++) {
            (void)pthread_join(tids[t], NULL);
        }
        return;
    }
    bool joined[BENCH_MAX_THREADS] = {false};
    const uint64_t t0 = bench_now();
    for (size_t left = n; left > 0;) {
        const struct timespec pause = {0, 200000000};
        (void)nanosleep(&pause, NULL);
        for (size_t t = 0; t < n; t++) {
            if (!joined[t] && pthread_tryjoin_np(tids[t], NULL) != EBUSY) {
                joined[t] = true;
                left--;
            }
        }
        const size_t done = __atomic_load_n(&ctx->prep_done, __ATOMIC_RELAXED);
        (void)fprintf(stderr, "\r  %s: %zu of %zu (%.0f%%), %.1f s   ", what, done, total,
                      total > 0 ? 100.0 * (double)done / (double)total : 100.0,
                      (double)(bench_now() - t0) / 1e9);
    }
    (void)fputc('\n', stderr);
}

// bench_parallel runs |fn| on |n| bench_prep slices; |what| and |total| name the work and its
// number of items for the progress line.
static void bench_parallel(bench_ctx *ctx, size_t n, void *(*fn)(void *), const char *what,
                           size_t total)
{
    bench_prep *preps = calloc(n, sizeof(*preps));
    pthread_t tids[BENCH_MAX_THREADS];
    if (preps == NULL) {
        bench_die("out of memory");
    }
    __atomic_store_n(&ctx->prep_done, 0, __ATOMIC_RELAXED);
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
    bench_prep_wait(ctx, tids, n, what, total);
    for (size_t t = 0; t < n; t++) {
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

void bench_ctx_setup(bench_ctx *ctx, const bench_opts *o, size_t num)
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
    if (bench_flow_is_nested(o->flow)) {
        bench_nested_setup(ctx);
    }
    ctx->num_reqs = num;
    ctx->num_keys = o->key_pool == 0 || o->key_pool > num ? num : o->key_pool;
    ctx->num_all_keys = o->flow == BENCH_FLOW_KUR ? 2 * ctx->num_keys : ctx->num_keys;
    ctx->keys = calloc(ctx->num_all_keys, sizeof(*ctx->keys));
    ctx->reqs = calloc(num, sizeof(*ctx->reqs));
    if (o->secret != NULL) {
        ctx->macs = calloc(num, sizeof(*ctx->macs));
    }
    if (ctx->keys == NULL || ctx->reqs == NULL || (o->secret != NULL && ctx->macs == NULL)) {
        bench_die("out of memory");
    }
    const size_t threads = o->threads;
    char what[64];
    (void)snprintf(what, sizeof(what), "generating %zu device keys", ctx->num_all_keys);
    bench_parallel(ctx, threads < ctx->num_all_keys ? threads : ctx->num_all_keys,
                   bench_prep_keys_thread, what, ctx->num_all_keys);
    (void)snprintf(what, sizeof(what), "preparing %zu requests", num);
    bench_parallel(ctx, threads < num ? threads : num, bench_prep_reqs_thread, what, num);
    if (bench_flow_is_nested(o->flow)) {
        bench_nested_prepare(ctx);
    }
}

void bench_ctx_reprepare(bench_ctx *ctx)
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
    char what[64];
    (void)snprintf(what, sizeof(what), "preparing %zu %s requests", ctx->num_reqs,
                   bench_flow_names[ctx->flow]);
    bench_parallel(ctx, threads < ctx->num_reqs ? threads : ctx->num_reqs, bench_prep_reqs_thread,
                   what, ctx->num_reqs);
}

void bench_ctx_cleanup(bench_ctx *ctx)
{
    for (size_t i = 0; i < ctx->num_all_keys; i++) {
        EVP_PKEY_free(ctx->keys[i].pkey);
        OPENSSL_free(ctx->keys[i].spki);
    }
    for (size_t i = 0; i < ctx->num_reqs; i++) {
        free(ctx->reqs[i].http);
        free(ctx->reqs[i].sender);
        free(ctx->reqs[i].cert);
        free(ctx->reqs[i].inner);
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
    if (bench_flow_is_nested(ctx->o->flow)) {
        bench_nested_cleanup(ctx);
    }
}
