// certmint-conform: builds the conformance cases of tests/integration/test_conformance.sh with
// the project's marshal code (tests/support/test_hand), and reads the answers back.
//
//   certmint-conform build CASE OUT.der --ca CA.pem --ref REF --secret SECRET
//                    [--newkey KEY.pem] [--key KEY.pem --cert CERT.pem] [--ip IP.der]
//       writes the request of CASE (the list: certmint-conform cases)
//   certmint-conform check RSP.der
//       prints "body=ip status=2 failinfo=badCertTemplate id=0 itavs=0 text=..." for the
//       response (the one CertResponse of an ip/cp/kup, the rp's first status, an error's);
//       exit 1 when our codec or OpenSSL's d2i_OSSL_CMP_MSG refuses it
//   certmint-conform ip-cert IP.der CERT.pem
//       writes the certificate of an ip/cp/kup as PEM
//
// Exit: 0 ok, 1 failed, 2 usage.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cmp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "engine/ca/ca.h"
#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_hand.h"
#include "tests/support/test_support.h"

typedef struct tool_opts {
    const char *ca, *ref, *secret, *newkey, *key, *cert, *ip;
} tool_opts;

typedef struct tool_ctx {
    tool_opts o;
    cmp_protect_ctx *prot;
    X509 *ca_x;
    uint8_t *ca_der;
    cm_span ca_subject;
    EVP_PKEY *newkey, *key;
    uint8_t *cert_der;
    cm_span cert;
    uint8_t *ip_der;
    cm_arena ip_arena;
    cmp_msg ip;
} tool_ctx;

static bool tool_fail(const char *what)
{
    fprintf(stderr, "certmint-conform: %s\n", what);
    return false;
}

static uint8_t *tool_x509_der(X509 *x, cm_span *out)
{
    unsigned char *der = NULL;
    const int len = x != NULL ? i2d_X509(x, &der) : -1;
    *out = len > 0 ? cm_span_make(der, (size_t)len) : cm_span_make(NULL, 0);
    return len > 0 ? der : NULL;
}

static bool tool_load(tool_ctx *c)
{
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    if (!cm_ok(cmp_protect_ctx_new(&c->prot, NULL, NULL, &lim))) {
        return tool_fail("cannot set up MAC protection");
    }
    c->ca_x = c->o.ca != NULL ? test_pki_read_cert(c->o.ca) : NULL;
    if (c->ca_x == NULL) {
        return tool_fail("--ca: cannot read the CA certificate");
    }
    cm_span ca;
    c->ca_der = tool_x509_der(c->ca_x, &ca);
    ca_cert_fields f;
    if (c->ca_der == NULL || !cm_ok(ca_cert_fields_parse(&f, ca))) {
        return tool_fail("--ca: not a certificate");
    }
    c->ca_subject = f.subject;
    if (c->o.newkey != NULL && (c->newkey = test_pki_read_key(c->o.newkey)) == NULL) {
        return tool_fail("--newkey: cannot read the key");
    }
    if (c->o.key != NULL && (c->key = test_pki_read_key(c->o.key)) == NULL) {
        return tool_fail("--key: cannot read the key");
    }
    if (c->o.cert != NULL) {
        X509 *x = test_pki_read_cert(c->o.cert);
        c->cert_der = tool_x509_der(x, &c->cert);
        X509_free(x);
        if (c->cert_der == NULL) {
            return tool_fail("--cert: cannot read the certificate");
        }
    }
    if (c->o.ip != NULL) {
        size_t len = 0;
        cm_arena_init(&c->ip_arena, 0, 0);
        if (!test_read_file(c->o.ip, &c->ip_der, &len) ||
            !cm_ok(cmp_msg_from_der(&c->ip_arena, &c->ip, cm_span_make(c->ip_der, len), NULL))) {
            return tool_fail("--ip: not a CMP message");
        }
    }
    return true;
}

static void tool_free(tool_ctx *c)
{
    cmp_protect_ctx_free(c->prot);
    X509_free(c->ca_x);
    OPENSSL_free(c->ca_der);
    EVP_PKEY_free(c->newkey);
    EVP_PKEY_free(c->key);
    OPENSSL_free(c->cert_der);
    if (c->ip_der != NULL) {
        cm_arena_cleanup(&c->ip_arena);
    }
    free(c->ip_der);
}

// The cases. Each fills |x| (initialised as a PBM message of its body type) and returns CM_OK.
typedef cm_result (*tool_case_fn)(tool_ctx *c, test_hand *x);

static cm_result tool_need(bool ok)
{
    return cm_result_make(ok ? CM_OK : CM_E_INVALID_ARG);
}

static cm_result case_ir_san_email(tool_ctx *c, test_hand *x)
{
    static const char *const n[] = {"subjectAltName"}, *const v[] = {"email:dev@example.com"};
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-san"));
    return test_hand_extensions(x, n, v, 1);
}

static cm_result case_ir_ok(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    return test_hand_template(x, c->newkey, "/CN=conform-ok"); // explicit confirmation
}

static cm_result case_ir_two_msgs(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-two"));
    x->msgs[1] = x->msgs[0];
    x->body.u.req.num_msgs = 2;
    return cm_result_make(CM_OK);
}

static cm_result case_ir_cert_req_id(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-id"));
    x->msgs[0].req.cert_req_id = 3;
    return cm_result_make(CM_OK);
}

static cm_result case_ir_empty_subject(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    return test_hand_template(x, c->newkey, "");
}

static cm_result case_ir_popo_alg(tool_ctx *c, test_hand *x)
{
    // An EC key with a POPO labelled sha256WithRSAEncryption.
    static const uint8_t k_rsa_sha256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                           0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-popo"));
    x->popo_alg = cm_span_make(k_rsa_sha256, sizeof(k_rsa_sha256));
    return cm_result_make(CM_OK);
}

static cm_result case_ir_ra_verified(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-ra"));
    x->msgs[0].popo.type = CRMF_POPO_RA_VERIFIED;
    x->popo_key = NULL;
    return cm_result_make(CM_OK);
}

static cm_result case_ir_rsa_8192(tool_ctx *c, test_hand *x)
{
    // An 8192-bit RSA modulus with a POPO that cannot verify: refused for its size first.
    (void)c;
    uint8_t n[1 + 1024];
    CM_ENSURE(RAND_bytes(n + 1, 1024) == 1, CM_E_CRYPTO);
    n[0] = 0x00;
    n[1] |= 0x80;
    n[1024] |= 0x01;
    der_builder kb, sb;
    der_builder_init_arena(&kb, &x->a, 1100);
    der_mark seq, alg;
    der_open_hint(&kb, &seq, DER_TAG_SEQUENCE, 3);
    der_put_tlv(&kb, DER_TAG_INTEGER, cm_span_make(n, sizeof(n)));
    der_put_tlv(&kb, DER_TAG_INTEGER, CM_SPAN_LIT("\x01\x00\x01"));
    der_close(&kb, &seq);
    cm_span rsa, spki;
    CM_TRY(der_builder_finish(&kb, &rsa));
    der_builder_init_arena(&sb, &x->a, 1200);
    der_open_hint(&sb, &seq, DER_TAG_SEQUENCE, 3);
    der_open(&sb, &alg, DER_TAG_SEQUENCE);
    der_put_oid_lit(&sb, DER_OID_RSA_ENCRYPTION);
    der_put_tlv(&sb, DER_TAG_NULL, cm_span_make(NULL, 0));
    der_close(&sb, &alg);
    der_put_bitstring(&sb, rsa, 0);
    der_close(&sb, &seq);
    CM_TRY(der_builder_finish(&sb, &spki));
    static const uint8_t k_rsa_sha256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                           0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
    CM_TRY(test_hand_name(x, &x->msgs[0].req.tmpl.subject, "/CN=conform-huge"));
    x->msgs[0].req.tmpl.public_key = test_spki_body(spki);
    x->msgs[0].popo.type = CRMF_POPO_SIGNATURE;
    x->msgs[0].popo.alg = cm_span_make(k_rsa_sha256, sizeof(k_rsa_sha256));
    x->msgs[0].popo.signature = CM_SPAN_LIT("not a signature");
    return cm_result_make(CM_OK);
}

static cm_result case_ir_ca_request(tool_ctx *c, test_hand *x)
{
    static const char *const n[] = {"basicConstraints"}, *const v[] = {"critical, CA:TRUE"};
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-ca"));
    return test_hand_extensions(x, n, v, 1);
}

static cm_result case_ir_key_agreement(tool_ctx *c, test_hand *x)
{
    // keyAgreement for an EC key, which init's profile (digitalSignature) does not allow.
    static const char *const n[] = {"keyUsage"}, *const v[] = {"critical, keyAgreement"};
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-ecdh"));
    return test_hand_extensions(x, n, v, 1);
}

static cm_result case_ir_implicit_and_wait(tool_ctx *c, test_hand *x)
{
    static uint8_t cwt[17];
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-hdr"));
    test_hand_add_info(x, cmp_itav_implicit_confirm());
    test_hand_add_info(x, cmp_itav_confirm_wait_time(cwt, cm_time_now() + 60));
    return cm_result_make(CM_OK);
}

static cm_result case_ir_prot_no_alg(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-prot"));
    x->prot_mode = TEST_PROT_BITS_ONLY;
    return cm_result_make(CM_OK);
}

static cm_result case_ir_long_validity(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-long"));
    x->msgs[0].req.tmpl.has_not_after = true;
    x->msgs[0].req.tmpl.not_after = cm_time_now() + 3000 * 86400LL;
    test_hand_add_info(x, cmp_itav_implicit_confirm());
    return cm_result_make(CM_OK);
}

static cm_result case_kur_mac(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL));
    return test_hand_template(x, c->newkey, "/CN=conform-kur");
}

static cm_result case_kur_unknown_old(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_need(c->newkey != NULL && c->key != NULL && c->cert.len > 0));
    CM_TRY(test_hand_template(x, c->newkey, "/CN=conform-kur"));
    CM_TRY(test_hand_sign(x, c->key, c->cert));
    return test_hand_old_cert_id(x, c->ca_subject, CM_SPAN_LIT("\x7f\x01\x02"));
}

static cm_result case_genm_empty(tool_ctx *c, test_hand *x)
{
    (void)c;
    x->body.u.gen.num = 0;
    return cm_result_make(CM_OK);
}

// tool_itavs copies |n| InfoTypeAndValues into the hand's arena as the genm's content.
static cm_result tool_itavs(test_hand *x, const cmp_itav *items, size_t n)
{
    cmp_itav *copy = cm_arena_alloc(&x->a, n * sizeof(*copy));
    CM_ENSURE(copy != NULL, CM_E_NOMEM);
    memcpy(copy, items, n * sizeof(*copy));
    x->body.u.gen.items = copy;
    x->body.u.gen.num = n;
    return cm_result_make(CM_OK);
}

static cm_result case_genm_all(tool_ctx *c, test_hand *x)
{
    (void)c;
    const cmp_itav all[] = {
        {CM_SPAN_LIT(DER_OID_IT_CA_PROT_ENC_CERT), {0}},
        {CM_SPAN_LIT(DER_OID_IT_SIGN_KEY_PAIR_TYPES), {0}},
        {CM_SPAN_LIT(DER_OID_IT_ENC_KEY_PAIR_TYPES), {0}},
        {CM_SPAN_LIT(DER_OID_IT_PREFERRED_SYMM_ALG), {0}},
        {CM_SPAN_LIT(DER_OID_IT_CURRENT_CRL), {0}},
        {CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS), CM_SPAN_LIT("\x30\x04\x0c\x02"
                                                             "en")},
        {CM_SPAN_LIT(DER_OID_IT_CA_CERTS), {0}},
        {CM_SPAN_LIT(DER_OID_IT_ROOT_CA_CERT), {0}},
        {CM_SPAN_LIT(DER_OID_IT_CERT_REQ_TEMPLATE), {0}},
    };
    return tool_itavs(x, all, sizeof(all) / sizeof(all[0]));
}

static cm_result case_genm_lang_none(tool_ctx *c, test_hand *x)
{
    const cmp_itav lang[] = {{CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS), {0}}};
    (void)c;
    return tool_itavs(x, lang, 1);
}

// tool_conf answers the ip of --ip for its certificate with certReqId |id|.
static cm_result tool_conf(tool_ctx *c, test_hand *x, int64_t id)
{
    CM_TRY(tool_need(c->o.ip != NULL && c->ip.body.type == CMP_BODY_IP &&
                     c->ip.body.u.rep.num_responses == 1));
    return test_hand_cert_conf(x, c->ip.header.f.transaction_id.v, c->ip.header.f.sender_nonce.v,
                               c->ip.body.u.rep.responses[0].cert, id);
}

static cm_result case_certconf_minus_1(tool_ctx *c, test_hand *x)
{
    return tool_conf(c, x, -1);
}

static cm_result case_certconf_pbmac1(tool_ctx *c, test_hand *x)
{
    x->pbmac1 = true;
    return tool_conf(c, x, 0);
}

static cm_result case_certconf_ok(tool_ctx *c, test_hand *x)
{
    return tool_conf(c, x, 0);
}

// tool_rr: an rr of --cert signed by --key with |reason| (-1: none).
static cm_result tool_rr(tool_ctx *c, test_hand *x, int reason)
{
    CM_TRY(tool_need(c->key != NULL && c->cert.len > 0));
    CM_TRY(test_hand_rr(x, c->cert, reason));
    return test_hand_sign(x, c->key, c->cert);
}

static cm_result case_rr_no_reason(tool_ctx *c, test_hand *x)
{
    return tool_rr(c, x, -1);
}

static cm_result case_rr_no_serial(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_rr(c, x, 1));
    x->rd.tmpl.serial = cm_span_make(NULL, 0);
    return cm_result_make(CM_OK);
}

static cm_result case_rr_other_subject(tool_ctx *c, test_hand *x)
{
    CM_TRY(tool_rr(c, x, 1));
    return test_hand_name(x, &x->rd.tmpl.subject, "/CN=someone-else");
}

static cm_result case_rr_remove_valid(tool_ctx *c, test_hand *x)
{
    return tool_rr(c, x, 8);
}

static const struct {
    const char *name;
    cmp_body_type type;
    tool_case_fn fn;
} k_cases[] = {
    {"ir-ok", CMP_BODY_IR, case_ir_ok},
    {"ir-san-email", CMP_BODY_IR, case_ir_san_email},
    {"ir-two-msgs", CMP_BODY_IR, case_ir_two_msgs},
    {"ir-cert-req-id", CMP_BODY_IR, case_ir_cert_req_id},
    {"ir-empty-subject", CMP_BODY_IR, case_ir_empty_subject},
    {"ir-popo-alg", CMP_BODY_IR, case_ir_popo_alg},
    {"ir-ra-verified", CMP_BODY_IR, case_ir_ra_verified},
    {"ir-rsa-8192", CMP_BODY_IR, case_ir_rsa_8192},
    {"ir-ca-request", CMP_BODY_IR, case_ir_ca_request},
    {"ir-key-agreement", CMP_BODY_IR, case_ir_key_agreement},
    {"ir-implicit-and-wait", CMP_BODY_IR, case_ir_implicit_and_wait},
    {"ir-prot-no-alg", CMP_BODY_IR, case_ir_prot_no_alg},
    {"ir-long-validity", CMP_BODY_IR, case_ir_long_validity},
    {"cr-san-email", CMP_BODY_CR, case_ir_san_email},
    {"kur-mac", CMP_BODY_KUR, case_kur_mac},
    {"kur-unknown-old", CMP_BODY_KUR, case_kur_unknown_old},
    {"genm-empty", CMP_BODY_GENM, case_genm_empty},
    {"genm-all", CMP_BODY_GENM, case_genm_all},
    {"genm-lang-none", CMP_BODY_GENM, case_genm_lang_none},
    {"certconf-minus-1", CMP_BODY_CERT_CONF, case_certconf_minus_1},
    {"certconf-pbmac1", CMP_BODY_CERT_CONF, case_certconf_pbmac1},
    {"certconf-ok", CMP_BODY_CERT_CONF, case_certconf_ok},
    {"rr-no-reason", CMP_BODY_RR, case_rr_no_reason},
    {"rr-no-serial", CMP_BODY_RR, case_rr_no_serial},
    {"rr-other-subject", CMP_BODY_RR, case_rr_other_subject},
    {"rr-remove-valid", CMP_BODY_RR, case_rr_remove_valid},
};

#define TOOL_NUM_CASES (sizeof(k_cases) / sizeof(k_cases[0]))

static int tool_build(const char *name, const char *out, const tool_opts *o)
{
    size_t i = 0;
    while (i < TOOL_NUM_CASES && strcmp(k_cases[i].name, name) != 0) {
        i++;
    }
    if (i == TOOL_NUM_CASES) {
        fprintf(stderr, "certmint-conform: no case '%s' (certmint-conform cases)\n", name);
        return 2;
    }
    tool_ctx c;
    memset(&c, 0, sizeof(c));
    c.o = *o;
    int rc = 1;
    test_hand x;
    bool have_hand = false;
    if (o->ref == NULL || o->secret == NULL) {
        fprintf(stderr, "certmint-conform: build needs --ref and --secret\n");
        rc = 2;
        goto out;
    }
    if (!tool_load(&c)) {
        goto out;
    }
    test_hand_init(&x, k_cases[i].type, c.prot, c.ca_subject, cm_span_make(o->ref, strlen(o->ref)),
                   o->secret);
    have_hand = true;
    uint8_t *der = NULL;
    size_t len = 0;
    cm_result r = k_cases[i].fn(&c, &x);
    if (cm_ok(r)) {
        r = test_hand_build(&x, &der, &len);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint-conform: building %s failed: %s (missing an option?)\n", name,
                cm_result_name(r));
        goto out;
    }
    rc = test_write_file(out, der, len) ? 0 : 1;
    free(der);
out:
    if (have_hand) {
        test_hand_free(&x);
    }
    tool_free(&c);
    return rc;
}

static const char *tool_body_name(cmp_body_type t)
{
    static const char *const k_names[] = {
        "ir",   "ip",     "cr",    "cp",       "p10cr",   "popdecc", "popdecr",
        "kur",  "kup",    "krr",   "krp",      "rr",      "rp",      "ccr",
        "ccp",  "ckuann", "cann",  "rann",     "crlann",  "pkiconf", "nested",
        "genm", "genp",   "error", "certConf", "pollReq", "pollRep"};
    return (size_t)t < sizeof(k_names) / sizeof(k_names[0]) ? k_names[t] : "?";
}

static const char *tool_failinfo_name(uint32_t fi)
{
    static const char *const k_names[] = {"badAlg",
                                          "badMessageCheck",
                                          "badRequest",
                                          "badTime",
                                          "badCertId",
                                          "badDataFormat",
                                          "wrongAuthority",
                                          "incorrectData",
                                          "missingTimeStamp",
                                          "badPOP",
                                          "certRevoked",
                                          "certConfirmed",
                                          "wrongIntegrity",
                                          "badRecipientNonce",
                                          "timeNotAvailable",
                                          "unacceptedPolicy",
                                          "unacceptedExtension",
                                          "addInfoNotAvailable",
                                          "badSenderNonce",
                                          "badCertTemplate",
                                          "signerNotTrusted",
                                          "transactionIdInUse",
                                          "unsupportedVersion",
                                          "notAuthorized",
                                          "systemUnavail",
                                          "systemFailure",
                                          "duplicateCertReq"};
    for (size_t b = 0; b < sizeof(k_names) / sizeof(k_names[0]); b++) {
        if (fi == (1u << b)) {
            return k_names[b];
        }
    }
    return fi == 0 ? "-" : "several";
}

static int tool_check(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!test_read_file(path, &buf, &len)) {
        fprintf(stderr, "certmint-conform: cannot read %s\n", path);
        return 1;
    }
    const unsigned char *q = buf;
    OSSL_CMP_MSG *om = d2i_OSSL_CMP_MSG(NULL, &q, (long)len);
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    const bool ours = cm_ok(cmp_msg_from_der(&a, &m, cm_span_make(buf, len), NULL));
    int rc = 1;
    if (om == NULL || !ours) {
        fprintf(stderr, "certmint-conform: %s is refused by %s\n", path,
                om == NULL ? "d2i_OSSL_CMP_MSG" : "certmint's codec");
        goto out;
    }
    const cmp_status_info *st = NULL;
    long long id = 0;
    size_t itavs = 0;
    const cmp_body *b = &m.body;
    switch (b->type) {
    case CMP_BODY_ERROR:
        st = &b->u.error.status;
        break;
    case CMP_BODY_IP:
    case CMP_BODY_CP:
    case CMP_BODY_KUP:
        if (b->u.rep.num_responses == 1) {
            st = &b->u.rep.responses[0].status;
            id = (long long)b->u.rep.responses[0].cert_req_id;
        }
        break;
    case CMP_BODY_RP:
        st = b->u.rp.num_status >= 1 ? &b->u.rp.status[0] : NULL;
        break;
    case CMP_BODY_GENP:
        itavs = b->u.gen.num;
        break;
    default:
        break;
    }
    char text[512] = "";
    if (st != NULL && st->status_string.len > 0) {
        der_reader rd, seq;
        cm_span s;
        der_reader_init(&rd, st->status_string);
        if (cm_ok(der_enter(&rd, DER_TAG_SEQUENCE, &seq)) &&
            cm_ok(der_get_tlv(&seq, DER_TAG_UTF8_STRING, &s)) && s.len < sizeof(text)) {
            memcpy(text, s.p, s.len);
            text[s.len] = '\0';
        }
    }
    printf("body=%s status=%lld failinfo=%s id=%lld itavs=%zu text=%s\n", tool_body_name(b->type),
           st != NULL ? (long long)st->status : -1LL,
           st != NULL && st->has_fail_info ? tool_failinfo_name(st->fail_info) : "-", id, itavs,
           text);
    rc = 0;
out:
    OSSL_CMP_MSG_free(om);
    cm_arena_cleanup(&a);
    free(buf);
    return rc;
}

static int tool_ip_cert(const char *path, const char *out)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    cmp_msg m;
    int rc = 1;
    if (test_read_file(path, &buf, &len) &&
        cm_ok(cmp_msg_from_der(&a, &m, cm_span_make(buf, len), NULL)) &&
        (m.body.type == CMP_BODY_IP || m.body.type == CMP_BODY_CP || m.body.type == CMP_BODY_KUP) &&
        m.body.u.rep.num_responses == 1 && m.body.u.rep.responses[0].cert.len > 0) {
        const cm_span c = m.body.u.rep.responses[0].cert;
        const unsigned char *q = c.p;
        X509 *x = d2i_X509(NULL, &q, (long)c.len);
        FILE *f = x != NULL ? fopen(out, "w") : NULL;
        rc = f != NULL && PEM_write_X509(f, x) == 1 ? 0 : 1;
        if (f != NULL && fclose(f) != 0) {
            rc = 1;
        }
        X509_free(x);
    }
    if (rc != 0) {
        fprintf(stderr, "certmint-conform: %s holds no certificate\n", path);
    }
    cm_arena_cleanup(&a);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "cases") == 0) {
        for (size_t i = 0; i < TOOL_NUM_CASES; i++) {
            printf("%s\n", k_cases[i].name);
        }
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0) {
        return tool_check(argv[2]);
    }
    if (argc == 4 && strcmp(argv[1], "ip-cert") == 0) {
        return tool_ip_cert(argv[2], argv[3]);
    }
    if (argc < 4 || strcmp(argv[1], "build") != 0) {
        fprintf(stderr, "usage: certmint-conform build CASE OUT.der --ca CA.pem --ref REF "
                        "--secret SECRET [--newkey K] [--key K --cert C] [--ip IP.der]\n"
                        "       certmint-conform check RSP.der | ip-cert IP.der OUT.pem | cases\n");
        return 2;
    }
    tool_opts o;
    memset(&o, 0, sizeof(o));
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        const char **slot = strcmp(k, "--ca") == 0       ? &o.ca
                            : strcmp(k, "--ref") == 0    ? &o.ref
                            : strcmp(k, "--secret") == 0 ? &o.secret
                            : strcmp(k, "--newkey") == 0 ? &o.newkey
                            : strcmp(k, "--key") == 0    ? &o.key
                            : strcmp(k, "--cert") == 0   ? &o.cert
                            : strcmp(k, "--ip") == 0     ? &o.ip
                                                         : NULL;
        if (slot == NULL) {
            fprintf(stderr, "certmint-conform: unknown option %s\n", k);
            return 2;
        }
        *slot = v;
    }
    if (!cm_ok(cm_runtime_init())) {
        fprintf(stderr, "certmint-conform: cannot initialise OpenSSL\n");
        return 1;
    }
    return tool_build(argv[2], argv[3], &o);
}
