// Suite "cmp": the PKIMessage codec. OpenSSL is the oracle: the real client (`openssl cmp`
// against its built-in mock server) makes ir/cr/kur/p10cr/rr/genm/certConf/pollReq requests
// with PBM and signature protection and EC, RSA and Ed25519 keys, and the mock server's
// responses (ip/cp/kup/rp/genp/pkiconf/pollRep/error); every one must parse, agree with
// OpenSSL's accessors and re-encode byte for byte. Messages we marshal for every body type must
// be accepted by d2i_OSSL_CMP_MSG with the same fields. Every field rule has a negative test
// with its exact code.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/asn1.h>
#include <openssl/cmp.h>
#include <openssl/crmf.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine/cmp/cmp.h"
#include "engine/der/der_oid.h"
#include "tests/support/test_support.h"

static char g_dir[256];
static cm_arena g_arena;
static cmp_digests g_digests;

// --- fixtures ----------------------------------------------------------------------------

// One message written by `openssl cmp` during suite init.
typedef struct msg_case {
    const char *file;
    cmp_body_type type;
    bool signature; // signature-protected (else PBM)
} msg_case;

static const msg_case k_msgs[] = {
    {"ir_pbm.der", CMP_BODY_IR, false},
    {"ip_pbm.der", CMP_BODY_IP, false},
    {"cc_pbm.der", CMP_BODY_CERT_CONF, false},
    {"pc_pbm.der", CMP_BODY_PKICONF, false},
    {"cr.der", CMP_BODY_CR, true},
    {"cp.der", CMP_BODY_CP, true},
    {"cc_cr.der", CMP_BODY_CERT_CONF, true},
    {"pc_cr.der", CMP_BODY_PKICONF, true},
    {"kur.der", CMP_BODY_KUR, true},
    {"kup.der", CMP_BODY_KUP, true},
    {"cc_kur.der", CMP_BODY_CERT_CONF, true},
    {"pc_kur.der", CMP_BODY_PKICONF, true},
    {"p10cr.der", CMP_BODY_P10CR, true},
    {"cp_p10.der", CMP_BODY_CP, true},
    {"cc_p10.der", CMP_BODY_CERT_CONF, true},
    {"pc_p10.der", CMP_BODY_PKICONF, true},
    {"rr.der", CMP_BODY_RR, true},
    {"rp.der", CMP_BODY_RP, true},
    {"genm.der", CMP_BODY_GENM, true},
    {"genp.der", CMP_BODY_GENP, true},
    {"ir_imp.der", CMP_BODY_IR, true},
    {"ip_imp.der", CMP_BODY_IP, true},
    {"ir_poll.der", CMP_BODY_IR, true},
    {"ip_wait.der", CMP_BODY_IP, true},
    {"pollreq1.der", CMP_BODY_POLL_REQ, true},
    {"pollrep.der", CMP_BODY_POLL_REP, true},
    {"pollreq2.der", CMP_BODY_POLL_REQ, true},
    {"ip_poll.der", CMP_BODY_IP, true},
    {"ir_err.der", CMP_BODY_IR, true},
    {"err.der", CMP_BODY_ERROR, true},
};

// Request/response pairs of one exchange step.
static const char *const k_pairs[][2] = {
    {"ir_pbm.der", "ip_pbm.der"},
    {"cc_pbm.der", "pc_pbm.der"},
    {"cr.der", "cp.der"},
    {"cc_cr.der", "pc_cr.der"},
    {"kur.der", "kup.der"},
    {"p10cr.der", "cp_p10.der"},
    {"rr.der", "rp.der"},
    {"genm.der", "genp.der"},
    {"ir_imp.der", "ip_imp.der"},
    {"ir_poll.der", "ip_wait.der"},
    {"pollreq1.der", "pollrep.der"},
    {"pollreq2.der", "ip_poll.der"},
    {"ir_err.der", "err.der"},
};

static bool load(const char *name, uint8_t **out, size_t *out_len)
{
    char path[320];
    return test_read_file(test_path(path, sizeof(path), g_dir, name), out, out_len);
}

// load_cert_der reads a PEM certificate from the suite directory as DER (free() it).
static bool load_cert_der(const char *name, uint8_t **out, size_t *out_len, X509 **out_x509)
{
    char path[320];
    FILE *f = fopen(test_path(path, sizeof(path), g_dir, name), "r");
    if (f == NULL) {
        return false;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    (void)fclose(f);
    if (x == NULL) {
        return false;
    }
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) {
        X509_free(x);
        return false;
    }
    *out = malloc((size_t)n);
    memcpy(*out, der, (size_t)n);
    *out_len = (size_t)n;
    OPENSSL_free(der);
    if (out_x509 != NULL) {
        *out_x509 = x;
    } else {
        X509_free(x);
    }
    return true;
}

static int cmp_suite_init(void)
{
    if (!test_tmpdir(g_dir, sizeof(g_dir), "cmp") || !cm_ok(cmp_digests_init(&g_digests))) {
        return 1;
    }
    char log[320], ca_key[320], ca[320], cl_key[320], cl[320];
    char new_key[320], rsa_key[320], ed_key[320], p10[320], certout[320], ed_cert[320];
    char ed448_cert[320], ed448_key[320];
    test_path(log, sizeof(log), g_dir, "openssl.log");
    test_path(ca_key, sizeof(ca_key), g_dir, "ca.key");
    test_path(ca, sizeof(ca), g_dir, "ca.pem");
    test_path(cl_key, sizeof(cl_key), g_dir, "cl.key");
    test_path(cl, sizeof(cl), g_dir, "cl.pem");
    test_path(new_key, sizeof(new_key), g_dir, "new.key");
    test_path(rsa_key, sizeof(rsa_key), g_dir, "rsa.key");
    test_path(ed_key, sizeof(ed_key), g_dir, "ed.key");
    test_path(p10, sizeof(p10), g_dir, "p10.csr");
    test_path(certout, sizeof(certout), g_dir, "out.pem");
    test_path(ed_cert, sizeof(ed_cert), g_dir, "ed.pem");
    test_path(ed448_key, sizeof(ed448_key), g_dir, "ed448.key");
    test_path(ed448_cert, sizeof(ed448_cert), g_dir, "ed448.pem");

    const test_pki_cert_spec ca_spec = {.subject = "/O=certmint test/CN=CMP Mock CA", .days = 30};
    const test_pki_cert_spec cl_spec = {.subject = "/CN=client-1", .days = 30};
    const test_pki_cert_spec ed_spec = {
        .subject = "/CN=ed25519", .days = 30, .key_type = TEST_PKI_ED25519};
    const test_pki_cert_spec ed448_spec = {
        .subject = "/CN=ed448", .days = 30, .key_type = TEST_PKI_ED448};
    const char *mkp10[] = {"openssl",        "req",      "-new", "-key", rsa_key, "-subj",
                           "/CN=p10-device", "-outform", "DER",  "-out", p10,     NULL};
    if (!test_pki_make_ca(ca_key, ca, &ca_spec, log) ||
        !test_pki_issue(cl_key, cl, ca_key, ca, &cl_spec, log) ||
        !test_pki_make_key(rsa_key, TEST_PKI_RSA_2048, log) ||
        !test_pki_make_ca(ed_key, ed_cert, &ed_spec, log) ||
        !test_pki_make_ca(ed448_key, ed448_cert, &ed448_spec, log) || test_run(mkp10, log) != 0) {
        fprintf(stderr, "fixture set-up failed; see %s\n", log);
        return 1;
    }

    // Paths of the request/response files, comma-separated as -reqout/-rspout want them.
    char f[24][640];
    const char *names[][2] = {
        {"ir_pbm.der,cc_pbm.der", "ip_pbm.der,pc_pbm.der"},
        {"cr.der,cc_cr.der", "cp.der,pc_cr.der"},
        {"kur.der,cc_kur.der", "kup.der,pc_kur.der"},
        {"p10cr.der,cc_p10.der", "cp_p10.der,pc_p10.der"},
        {"rr.der", "rp.der"},
        {"genm.der", "genp.der"},
        {"ir_imp.der", "ip_imp.der"},
        {"ir_poll.der,pollreq1.der,pollreq2.der,cc_poll.der",
         "ip_wait.der,pollrep.der,ip_poll.der,pc_poll.der"},
        {"ir_err.der", "err.der"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (size_t j = 0; j < 2; j++) {
            // Prefix every comma-separated name with the directory.
            char *out = f[2 * i + j];
            size_t used = 0;
            const char *p = names[i][j];
            while (*p != '\0') {
                const char *comma = strchr(p, ',');
                size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
                int n = snprintf(out + used, sizeof(f[0]) - used, "%s%s/%.*s", used ? "," : "",
                                 g_dir, (int)len, p);
                if (n < 0 || (size_t)n >= sizeof(f[0]) - used) {
                    return 1;
                }
                used += (size_t)n;
                p = comma != NULL ? comma + 1 : p + len;
            }
        }
    }
#define SIG_OPTS                                                                              \
    "-use_mock_srv", "-srv_cert", ca, "-srv_key", ca_key, "-srv_trusted", ca, "-trusted", ca, \
        "-cert", cl, "-key", cl_key, "-unprotected_errors", "-certout", certout, "-rsp_cert", cl
    // ir, PBM-protected, EC key (the enrolled cert matches, so certConf accepts it).
    const char *ir[] = {"openssl",
                        "cmp",
                        "-cmd",
                        "ir",
                        "-use_mock_srv",
                        "-ref",
                        "line-7",
                        "-secret",
                        "pass:factory-secret",
                        "-srv_ref",
                        "line-7",
                        "-srv_secret",
                        "pass:factory-secret",
                        "-srv_cert",
                        ca,
                        "-srv_key",
                        ca_key,
                        "-rsp_cert",
                        cl,
                        "-newkey",
                        cl_key,
                        "-subject",
                        "/CN=device-1",
                        "-certout",
                        certout,
                        "-unprotected_errors",
                        "-reqout",
                        f[0],
                        "-rspout",
                        f[1],
                        NULL};
    // cr, signature-protected, RSA key (the mock's cert does not match: certConf rejects).
    const char *cr[] = {"openssl",  "cmp",          "-cmd",    "cr", SIG_OPTS,  "-newkey", rsa_key,
                        "-subject", "/CN=device-2", "-reqout", f[2], "-rspout", f[3],      NULL};
    // kur, signature-protected, Ed25519 key.
    const char *kur[] = {"openssl", "cmp",  "-cmd",    "kur", SIG_OPTS,  "-oldcert", cl,
                         "-newkey", ed_key, "-reqout", f[4],  "-rspout", f[5],       NULL};
    const char *p10cr[] = {"openssl", "cmp",     "-cmd", "p10cr",   SIG_OPTS, "-csr",
                           p10,       "-reqout", f[6],   "-rspout", f[7],     NULL};
    const char *rr[] = {"openssl",    "cmp", "-cmd",    "rr", SIG_OPTS,  "-oldcert", cl,
                        "-revreason", "1",   "-reqout", f[8], "-rspout", f[9],       NULL};
    const char *genm[] = {"openssl",          "cmp",     "-cmd", "genm",    SIG_OPTS, "-infotype",
                          "signKeyPairTypes", "-reqout", f[10],  "-rspout", f[11],    NULL};
    const char *imp[] = {"openssl",
                         "cmp",
                         "-cmd",
                         "ir",
                         SIG_OPTS,
                         "-newkey",
                         cl_key,
                         "-subject",
                         "/CN=device-3",
                         "-implicit_confirm",
                         "-grant_implicitconf",
                         "-reqout",
                         f[12],
                         "-rspout",
                         f[13],
                         NULL};
    const char *poll[] = {"openssl", "cmp",          "-cmd",     "ir",           SIG_OPTS,
                          "-newkey", cl_key,         "-subject", "/CN=device-4", "-poll_count",
                          "2",       "-check_after", "0",        "-reqout",      f[14],
                          "-rspout", f[15],          NULL};
    const char *err[] = {"openssl", "cmp",  "-cmd",     "ir",           SIG_OPTS,
                         "-newkey", cl_key, "-subject", "/CN=device-5", "-send_error",
                         "-reqout", f[16],  "-rspout",  f[17],          NULL};
#undef SIG_OPTS
    // Some exchanges end in a rejection (cr, err): the files are what we want, not the status.
    const char *const *flows[] = {ir, cr, kur, p10cr, rr, genm, imp, poll, err};
    for (size_t i = 0; i < sizeof(flows) / sizeof(flows[0]); i++) {
        (void)test_run(flows[i], log);
    }
    for (size_t i = 0; i < sizeof(k_msgs) / sizeof(k_msgs[0]); i++) {
        uint8_t *buf;
        size_t len;
        if (!load(k_msgs[i].file, &buf, &len)) {
            fprintf(stderr, "openssl cmp wrote no %s; see %s\n", k_msgs[i].file, log);
            return 1;
        }
        free(buf);
    }
    return 0;
}

static int cmp_suite_cleanup(void)
{
    cmp_digests_cleanup(&g_digests);
    (void)test_rmtree(g_dir);
    return 0;
}

static void cmp_test_setup(void)
{
    cm_arena_init(&g_arena, 0, 4u << 20);
}

static void cmp_test_teardown(void)
{
    cm_arena_cleanup(&g_arena);
}

// --- helpers -----------------------------------------------------------------------------

static OSSL_CMP_MSG *ossl_parse(cm_span der)
{
    const unsigned char *q = der.p;
    OSSL_CMP_MSG *m = d2i_OSSL_CMP_MSG(NULL, &q, (long)der.len);
    if (m != NULL && q != der.p + der.len) {
        OSSL_CMP_MSG_free(m);
        return NULL;
    }
    return m;
}

static bool span_is_asn1(cm_span s, bool present, const ASN1_OCTET_STRING *o)
{
    if (!present || o == NULL) {
        return !present && o == NULL;
    }
    return s.len == (size_t)ASN1_STRING_length(o) &&
           (s.len == 0 || memcmp(s.p, ASN1_STRING_get0_data(o), s.len) == 0);
}

static void free_span(cm_span s)
{
    free((void *)(uintptr_t)s.p);
}

// marshal_heap encodes |m| into a malloc'ed buffer (free() it).
static cm_span marshal_heap(const cmp_msg *m)
{
    der_builder b;
    der_builder_init(&b, 0);
    cmp_msg_marshal(&b, m);
    uint8_t *buf = NULL;
    size_t len = 0;
    TEST_ASSERT_OK(der_builder_take(&b, &buf, &len));
    return cm_span_make(buf, len);
}

// assert_roundtrip checks that |m| (parsed from |in|) marshals back to |in| exactly.
static void assert_roundtrip(const cmp_msg *m, cm_span in)
{
    cm_span out = marshal_heap(m);
    CU_ASSERT_EQUAL(out.len, in.len);
    CU_ASSERT(out.len == in.len && memcmp(out.p, in.p, in.len) == 0);
    free_span(out);
}

// assert_matches_openssl checks the fields OpenSSL 3.0 exposes, and that OpenSSL re-encodes
// the same bytes.
static void assert_matches_openssl(const cmp_msg *m, cm_span der)
{
    OSSL_CMP_MSG *o = ossl_parse(der);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(OSSL_CMP_MSG_get_bodytype(o), (int)m->body.type);
    OSSL_CMP_PKIHEADER *h = OSSL_CMP_MSG_get0_header(o);
    CU_ASSERT_TRUE(span_is_asn1(m->header.f.transaction_id.v, m->header.f.transaction_id.present,
                                OSSL_CMP_HDR_get0_transactionID(h)));
    CU_ASSERT_TRUE(span_is_asn1(m->header.f.recip_nonce.v, m->header.f.recip_nonce.present,
                                OSSL_CMP_HDR_get0_recipNonce(h)));
    unsigned char *back = NULL;
    int n = i2d_OSSL_CMP_MSG(o, &back);
    CU_ASSERT_TRUE(n > 0 && (size_t)n == der.len && memcmp(back, der.p, der.len) == 0);
    OPENSSL_free(back);
    OSSL_CMP_MSG_free(o);
}

static void parse_file(const char *name, uint8_t **buf, size_t *len, cmp_msg *m)
{
    CU_ASSERT_TRUE_FATAL(load(name, buf, len));
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, m, cm_span_make(*buf, *len), NULL));
}

// --- messages from the real client and the mock server -----------------------------------

static bool is_first_request(cmp_body_type t)
{
    return t == CMP_BODY_IR || t == CMP_BODY_CR || t == CMP_BODY_KUR || t == CMP_BODY_P10CR ||
           t == CMP_BODY_RR || t == CMP_BODY_GENM;
}

static void test_cmp_parses_and_roundtrips_openssl_messages(void)
{
    for (size_t i = 0; i < sizeof(k_msgs) / sizeof(k_msgs[0]); i++) {
        uint8_t *buf;
        size_t len;
        cmp_msg m;
        parse_file(k_msgs[i].file, &buf, &len, &m);
        cm_span in = cm_span_make(buf, len);
        CU_ASSERT_EQUAL(m.body.type, k_msgs[i].type);
        CU_ASSERT_EQUAL(m.header.f.pvno, 2);
        CU_ASSERT_TRUE(cmp_header_pvno_supported(&m.header));
        CU_ASSERT_TRUE(m.has_protection);
        CU_ASSERT_EQUAL(cmp_is_signature_alg(m.header.protection_alg.oid), k_msgs[i].signature);
        if (!k_msgs[i].signature) {
            CU_ASSERT_TRUE(der_oid_is(m.header.protection_alg.oid, DER_OID_PASSWORD_BASED_MAC));
            // -ref is the senderKID, byte for byte.
            CU_ASSERT_TRUE(m.header.f.sender_kid.present &&
                           cm_span_eq(m.header.f.sender_kid.v, CM_SPAN_LIT("line-7")));
        } else if (is_first_request(k_msgs[i].type)) {
            // The client's first message carries its protection certificate (RFC 9483 §3.3);
            // the mock server's responses leave extraCerts out.
            CU_ASSERT_TRUE(m.num_extra_certs >= 1);
            cmp_parse_opts first = {CMP_DEFAULT_MAX_NESTING, 0, true, 0, false};
            cmp_msg again;
            TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &again, in, &first));
        }
        CU_ASSERT_TRUE(m.header.f.has_message_time);
        CU_ASSERT_EQUAL(m.header.f.sender_nonce.v.len, 16);
        CU_ASSERT_EQUAL(m.header.sender.tag, CRMF_GN_DIRECTORY_NAME);
        // ProtectedPart: from the header's first byte to the body's last byte.
        CU_ASSERT_PTR_EQUAL(m.protected_part.p, m.header.whole.p);
        CU_ASSERT_EQUAL(m.protected_part.len, m.header.whole.len + m.body.whole.len);
        CU_ASSERT_PTR_EQUAL(m.whole.p, buf);
        CU_ASSERT_EQUAL(m.whole.len, len);
        assert_matches_openssl(&m, in);
        assert_roundtrip(&m, in);
        free(buf);
        cm_arena_reset(&g_arena);
    }
}

// The protected_part span is exactly what the sender MACed: OpenSSL's own PBM
// (OSSL_CRMF_pbm_new, with the PBMParameter from our protectionAlg params) over
// SEQUENCE { protected_part } gives the protection bits of every PBM message.
static void test_cmp_protected_part_is_what_openssl_maced(void)
{
    static const char *const files[] = {"ir_pbm.der", "ip_pbm.der", "cc_pbm.der", "pc_pbm.der"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        uint8_t *buf;
        size_t len;
        cmp_msg m;
        parse_file(files[i], &buf, &len, &m);
        CU_ASSERT_TRUE_FATAL(der_oid_is(m.header.protection_alg.oid, DER_OID_PASSWORD_BASED_MAC));
        const unsigned char *q = m.header.protection_alg.params.p;
        OSSL_CRMF_PBMPARAMETER *pbm =
            d2i_OSSL_CRMF_PBMPARAMETER(NULL, &q, (long)m.header.protection_alg.params.len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(pbm);
        // SEQUENCE header + content, built by the DER builder.
        der_builder b;
        der_builder_init(&b, m.protected_part.len + 8);
        der_put_header(&b, DER_TAG_SEQUENCE, m.protected_part.len);
        der_put_raw(&b, m.protected_part);
        cm_span pp;
        TEST_ASSERT_OK(der_builder_finish(&b, &pp));
        unsigned char *mac = NULL;
        size_t mac_len = 0;
        static const char secret[] = "factory-secret";
        CU_ASSERT_EQUAL(OSSL_CRMF_pbm_new(NULL, NULL, pbm, pp.p, pp.len,
                                          (const unsigned char *)secret, sizeof(secret) - 1, &mac,
                                          &mac_len),
                        1);
        CU_ASSERT_TRUE(mac != NULL && cm_span_eq(m.protection, cm_span_make(mac, mac_len)));
        // One flipped bit in the body changes the MAC: the span is not a copy.
        OPENSSL_free(mac);
        buf[(size_t)(m.body.whole.p - buf) + m.body.whole.len - 1] ^= 1;
        der_builder_cleanup(&b);
        der_builder_init(&b, m.protected_part.len + 8);
        der_put_header(&b, DER_TAG_SEQUENCE, m.protected_part.len);
        der_put_raw(&b, m.protected_part);
        TEST_ASSERT_OK(der_builder_finish(&b, &pp));
        mac = NULL;
        CU_ASSERT_EQUAL(OSSL_CRMF_pbm_new(NULL, NULL, pbm, pp.p, pp.len,
                                          (const unsigned char *)secret, sizeof(secret) - 1, &mac,
                                          &mac_len),
                        1);
        CU_ASSERT_FALSE(mac != NULL && cm_span_eq(m.protection, cm_span_make(mac, mac_len)));
        OPENSSL_free(mac);
        der_builder_cleanup(&b);
        OSSL_CRMF_PBMPARAMETER_free(pbm);
        free(buf);
    }
}

static void test_cmp_request_and_response_headers_agree(void)
{
    for (size_t i = 0; i < sizeof(k_pairs) / sizeof(k_pairs[0]); i++) {
        uint8_t *qb, *rb;
        size_t ql, rl;
        cmp_msg q, r;
        parse_file(k_pairs[i][0], &qb, &ql, &q);
        parse_file(k_pairs[i][1], &rb, &rl, &r);
        CU_ASSERT_TRUE(cm_span_eq(q.header.f.transaction_id.v, r.header.f.transaction_id.v));
        CU_ASSERT_EQUAL(q.header.f.transaction_id.v.len, 16);
        // OpenSSL's view of the response's recipNonce is our view of the request's senderNonce.
        OSSL_CMP_MSG *o = ossl_parse(cm_span_make(rb, rl));
        CU_ASSERT_PTR_NOT_NULL_FATAL(o);
        CU_ASSERT_TRUE(span_is_asn1(q.header.f.sender_nonce.v, true,
                                    OSSL_CMP_HDR_get0_recipNonce(OSSL_CMP_MSG_get0_header(o))));
        OSSL_CMP_MSG_free(o);
        free(qb);
        free(rb);
    }
}

static void test_cmp_ip_carries_the_issued_certificate(void)
{
    uint8_t *buf, *cert;
    size_t len, cert_len;
    cmp_msg m;
    parse_file("ip_pbm.der", &buf, &len, &m);
    CU_ASSERT_TRUE_FATAL(load_cert_der("cl.pem", &cert, &cert_len, NULL));
    CU_ASSERT_EQUAL_FATAL(m.body.u.rep.num_responses, 1);
    const cmp_cert_response *cr = &m.body.u.rep.responses[0];
    CU_ASSERT_EQUAL(cr->cert_req_id, 0);
    CU_ASSERT_EQUAL(cr->status.status, CMP_STATUS_ACCEPTED);
    CU_ASSERT_TRUE(cr->has_certified_key_pair);
    CU_ASSERT_TRUE(cm_span_eq(cr->cert, cm_span_make(cert, cert_len)));
    free(buf);

    // The waiting ip of the polling flow has a status and no certificate.
    parse_file("ip_wait.der", &buf, &len, &m);
    CU_ASSERT_EQUAL_FATAL(m.body.u.rep.num_responses, 1);
    CU_ASSERT_EQUAL(m.body.u.rep.responses[0].status.status, CMP_STATUS_WAITING);
    CU_ASSERT_FALSE(m.body.u.rep.responses[0].has_certified_key_pair);
    free(buf);
    free(cert);
}

static void test_cmp_cert_conf_hash_matches_openssl(void)
{
    uint8_t *buf, *cert;
    size_t len, cert_len;
    X509 *x;
    cmp_msg m;
    parse_file("cc_pbm.der", &buf, &len, &m);
    CU_ASSERT_TRUE_FATAL(load_cert_der("cl.pem", &cert, &cert_len, &x));
    CU_ASSERT_EQUAL_FATAL(m.body.u.conf.num, 1);
    const cmp_cert_status *cs = &m.body.u.conf.items[0];
    CU_ASSERT_EQUAL(cs->cert_req_id, 0);
    CU_ASSERT_FALSE(cs->has_hash_alg);
    ASN1_OCTET_STRING *want = X509_digest_sig(x, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    CU_ASSERT_TRUE(span_is_asn1(cs->cert_hash, true, want));
    uint8_t got[CMP_MAX_CERT_HASH_LEN];
    size_t got_len;
    TEST_ASSERT_OK(cmp_cert_hash(&g_digests, got, &got_len, cm_span_make(cert, cert_len), NULL));
    CU_ASSERT_TRUE(span_is_asn1(cm_span_make(got, got_len), true, want));
    ASN1_OCTET_STRING_free(want);
    X509_free(x);
    free(buf);
    free(cert);

    // The cr flow's client rejected the certificate: a statusInfo with rejection.
    parse_file("cc_cr.der", &buf, &len, &m);
    CU_ASSERT_EQUAL_FATAL(m.body.u.conf.num, 1);
    CU_ASSERT_TRUE(m.body.u.conf.items[0].has_status_info);
    CU_ASSERT_EQUAL(m.body.u.conf.items[0].status_info.status, CMP_STATUS_REJECTION);
    free(buf);
}

static void test_cmp_cert_hash_follows_signature_and_hash_alg(void)
{
    static const char *const certs[] = {"ed.pem", "ed448.pem", "ca.pem"};
    for (size_t i = 0; i < sizeof(certs) / sizeof(certs[0]); i++) {
        uint8_t *cert;
        size_t cert_len;
        X509 *x;
        CU_ASSERT_TRUE_FATAL(load_cert_der(certs[i], &cert, &cert_len, &x));
        ASN1_OCTET_STRING *want = X509_digest_sig(x, NULL, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(want);
        uint8_t got[CMP_MAX_CERT_HASH_LEN];
        size_t got_len;
        TEST_ASSERT_OK(
            cmp_cert_hash(&g_digests, got, &got_len, cm_span_make(cert, cert_len), NULL));
        if (i == 1) {
            // Ed448: SHAKE256 with 512 bits (RFC 9481/RFC 8419); OpenSSL 3.0's X509_digest_sig
            // stops at SHAKE256's default 256 bits, which are the first half of ours (an XOF).
            CU_ASSERT_EQUAL(got_len, 64);
            CU_ASSERT_EQUAL(ASN1_STRING_length(want), 32);
            CU_ASSERT_EQUAL(memcmp(got, ASN1_STRING_get0_data(want), 32), 0);
        } else {
            CU_ASSERT_TRUE(span_is_asn1(cm_span_make(got, got_len), true, want));
        }
        ASN1_OCTET_STRING_free(want);

        // hashAlg SHA-384 wins over the signature algorithm.
        static const uint8_t sha384_alg[] = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                             0x01, 0x65, 0x03, 0x04, 0x02, 0x02};
        cmp_alg_id alg;
        der_reader r;
        der_reader_init(&r, cm_span_make(sha384_alg, sizeof(sha384_alg)));
        TEST_ASSERT_OK(cmp_alg_id_parse(&alg, &r));
        TEST_ASSERT_OK(
            cmp_cert_hash(&g_digests, got, &got_len, cm_span_make(cert, cert_len), &alg));
        uint8_t md[64];
        unsigned int md_len;
        CU_ASSERT_EQUAL(EVP_Digest(cert, cert_len, md, &md_len, EVP_sha384(), NULL), 1);
        CU_ASSERT_TRUE(got_len == md_len && memcmp(got, md, md_len) == 0);
        // An unknown hashAlg (SHA-1).
        static const uint8_t sha1_alg[] = {0x30, 0x07, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a};
        der_reader_init(&r, cm_span_make(sha1_alg, sizeof(sha1_alg)));
        TEST_ASSERT_OK(cmp_alg_id_parse(&alg, &r));
        TEST_ASSERT_CODE(
            cmp_cert_hash(&g_digests, got, &got_len, cm_span_make(cert, cert_len), &alg),
            CMP_E_UNKNOWN_HASH_ALG);
        X509_free(x);
        free(cert);
    }
}

static void test_cmp_rr_names_the_certificate_and_reason(void)
{
    uint8_t *buf, *cert;
    size_t len, cert_len;
    X509 *x;
    cmp_msg m;
    parse_file("rr.der", &buf, &len, &m);
    CU_ASSERT_TRUE_FATAL(load_cert_der("cl.pem", &cert, &cert_len, &x));
    CU_ASSERT_EQUAL_FATAL(m.body.u.rr.num, 1);
    const cmp_rev_details *rd = &m.body.u.rr.items[0];
    CU_ASSERT_TRUE(rd->has_reason);
    CU_ASSERT_EQUAL(rd->reason, 1); // -revreason 1: keyCompromise
    unsigned char *ser = NULL;
    int n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &ser);
    CU_ASSERT_TRUE(n > 2 && rd->tmpl.serial.len == (size_t)n - 2 &&
                   memcmp(rd->tmpl.serial.p, ser + 2, rd->tmpl.serial.len) == 0);
    OPENSSL_free(ser);
    unsigned char *issuer = NULL;
    n = i2d_X509_NAME(X509_get_issuer_name(x), &issuer);
    CU_ASSERT_TRUE(n > 0 && cm_span_eq(rd->tmpl.issuer, cm_span_make(issuer, (size_t)n)));
    OPENSSL_free(issuer);
    X509_free(x);
    free(cert);
    free(buf);

    parse_file("rp.der", &buf, &len, &m);
    CU_ASSERT_EQUAL(m.body.u.rp.num_status, 1);
    free(buf);
}

static void test_cmp_body_details_from_openssl(void)
{
    uint8_t *buf, *csr;
    size_t len, csr_len;
    cmp_msg m;
    // p10cr carries the CSR verbatim.
    parse_file("p10cr.der", &buf, &len, &m);
    CU_ASSERT_TRUE_FATAL(load("p10.csr", &csr, &csr_len));
    CU_ASSERT_TRUE(cm_span_eq(m.body.u.p10.whole, cm_span_make(csr, csr_len)));
    CU_ASSERT_TRUE(cm_span_eq(m.body.content, cm_span_make(csr, csr_len)));
    free(csr);
    free(buf);
    // ir: one CertReqMsg with certReqId 0.
    parse_file("ir_pbm.der", &buf, &len, &m);
    CU_ASSERT_EQUAL(m.body.u.req.num_msgs, 1);
    CU_ASSERT_EQUAL(m.body.u.req.msgs[0].req.cert_req_id, 0);
    CU_ASSERT_FALSE(m.header.implicit_confirm);
    free(buf);
    // implicitConfirm requested and granted.
    parse_file("ir_imp.der", &buf, &len, &m);
    CU_ASSERT_TRUE(m.header.implicit_confirm);
    free(buf);
    parse_file("ip_imp.der", &buf, &len, &m);
    CU_ASSERT_TRUE(m.header.implicit_confirm);
    free(buf);
    // genm asks for signKeyPairTypes without a value; genp answers.
    parse_file("genm.der", &buf, &len, &m);
    CU_ASSERT_EQUAL_FATAL(m.body.u.gen.num, 1);
    CU_ASSERT_TRUE(der_oid_is(m.body.u.gen.items[0].oid, DER_OID_IT_SIGN_KEY_PAIR_TYPES));
    CU_ASSERT_EQUAL(m.body.u.gen.items[0].value.len, 0);
    free(buf);
    parse_file("genp.der", &buf, &len, &m);
    CU_ASSERT_TRUE(m.body.u.gen.num >= 1);
    free(buf);
    // pollReq / pollRep.
    parse_file("pollreq1.der", &buf, &len, &m);
    CU_ASSERT_EQUAL_FATAL(m.body.u.poll_req.num, 1);
    CU_ASSERT_EQUAL(m.body.u.poll_req.cert_req_ids[0], 0);
    free(buf);
    parse_file("pollrep.der", &buf, &len, &m);
    CU_ASSERT_EQUAL_FATAL(m.body.u.poll_rep.num, 1);
    CU_ASSERT_EQUAL(m.body.u.poll_rep.items[0].cert_req_id, 0);
    CU_ASSERT_EQUAL(m.body.u.poll_rep.items[0].check_after, 0);
    free(buf);
    // The mock's error: rejection, badRequest, errorCode and errorDetails.
    parse_file("err.der", &buf, &len, &m);
    CU_ASSERT_EQUAL(m.body.u.error.status.status, CMP_STATUS_REJECTION);
    CU_ASSERT_TRUE(m.body.u.error.status.has_fail_info);
    CU_ASSERT_EQUAL(m.body.u.error.status.fail_info, CMP_FAILINFO_BIT(CMP_FAIL_BAD_REQUEST));
    CU_ASSERT_TRUE(m.body.u.error.status.status_string.len > 0);
    CU_ASSERT_TRUE(m.body.u.error.has_error_code);
    CU_ASSERT_TRUE(m.body.u.error.error_details.len > 0);
    free(buf);
}

// --- our marshal code, checked by OpenSSL ------------------------------------------------

// A header for hand-built messages: PBM-style (senderKID) or unprotected.
typedef struct hdr_bufs {
    uint8_t tid[16], snonce[16], rnonce[16], cwt[17];
    cmp_itav info[3];
    uint8_t sender[64], recipient[64];
} hdr_bufs;

static cm_span name_der(uint8_t *buf, size_t cap, const char *cn)
{
    // Name ::= SEQUENCE { SET { SEQUENCE { id-at-commonName, UTF8String cn } } }
    der_builder b;
    der_builder_init_fixed(&b, buf, cap);
    der_mark n, s, a;
    der_open(&b, &n, DER_TAG_SEQUENCE);
    der_open(&b, &s, DER_TAG_SET);
    der_open(&b, &a, DER_TAG_SEQUENCE);
    der_put_oid_lit(&b, DER_OID_AT_COMMON_NAME);
    der_put_string(&b, DER_TAG_UTF8_STRING, cm_span_make(cn, strlen(cn)));
    der_close(&b, &a);
    der_close(&b, &s);
    der_close(&b, &n);
    cm_span out = {0};
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    return out;
}

static void make_header(cmp_header_fields *h, hdr_bufs *hb, int64_t pvno)
{
    memset(h, 0, sizeof(*h));
    for (size_t i = 0; i < 16; i++) {
        hb->tid[i] = (uint8_t)(0xa0 + i);
        hb->snonce[i] = (uint8_t)(0x10 + i);
        hb->rnonce[i] = (uint8_t)(0x70 + i);
    }
    h->pvno = pvno;
    h->sender_name = name_der(hb->sender, sizeof(hb->sender), "certmint CA");
    h->recipient_name = name_der(hb->recipient, sizeof(hb->recipient), "device-9");
    h->has_message_time = true;
    h->message_time = 1767225600; // 2026-01-01T00:00:00Z
    h->sender_kid = (cmp_opt_span){true, CM_SPAN_LIT("line-7")};
    h->transaction_id = (cmp_opt_span){true, cm_span_make(hb->tid, 16)};
    h->sender_nonce = (cmp_opt_span){true, cm_span_make(hb->snonce, 16)};
    h->recip_nonce = (cmp_opt_span){true, cm_span_make(hb->rnonce, 16)};
    // confirmWaitTime and a certProfile (implicitConfirm excludes confirmWaitTime, RFC 9483
    // §3.1: test_cmp_rejects_bad_general_info).
    hb->info[0] = cmp_itav_confirm_wait_time(hb->cwt, 1767225600 + 300);
    hb->info[1] = (cmp_itav){CM_SPAN_LIT(DER_OID_IT_CERT_PROFILE), CM_SPAN_LIT("\x30\x07\x0c\x05"
                                                                               "fleet")};
    h->general_info = hb->info;
    h->num_general_info = 2;
}

// build_and_check marshals header + |body| (unprotected) and checks OpenSSL reads the same
// message, re-encodes it identically, and our parser returns it unchanged.
static void build_and_check(const cmp_body *body, const char *seed_name)
{
    hdr_bufs hb;
    cmp_header_fields h;
    make_header(&h, &hb, 2);
    static uint8_t buf[16384];
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, body);
    cm_span pp = cmp_msg_writer_protected_part(&w);
    CU_ASSERT_TRUE(pp.len > 0);
    size_t pp_len = pp.len;
    cmp_msg_writer_finish(&w, NULL, 0, NULL, 0);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));

    const char *seed_dir = getenv("CM_CMP_SEED_DIR");
    if (seed_dir != NULL && seed_name != NULL) {
        char path[512];
        (void)test_write_file(test_path(path, sizeof(path), seed_dir, seed_name), out.p, out.len);
    }

    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &m, out, NULL));
    CU_ASSERT_EQUAL(m.body.type, body->type);
    CU_ASSERT_EQUAL(m.protected_part.len, pp_len);
    CU_ASSERT_FALSE(m.header.implicit_confirm);
    CU_ASSERT_TRUE(m.header.has_confirm_wait_time);
    CU_ASSERT_EQUAL(m.header.confirm_wait_time, 1767225600 + 300);
    CU_ASSERT_EQUAL(m.header.num_cert_profiles, 1);
    CU_ASSERT_TRUE(cm_span_eq(m.header.f.sender_kid.v, CM_SPAN_LIT("line-7")));
    CU_ASSERT_TRUE(cm_span_eq(m.header.sender.name, h.sender_name));
    assert_matches_openssl(&m, out);
    assert_roundtrip(&m, out);
}

static void test_cmp_marshals_every_body_accepted_by_openssl(void)
{
    uint8_t *cert, *ir_buf, *rr_buf, *p10_buf, *cc_buf;
    size_t cert_len, ir_len, rr_len, p10_len, cc_len;
    cmp_msg ir, rr, p10, cc;
    CU_ASSERT_TRUE_FATAL(load_cert_der("cl.pem", &cert, &cert_len, NULL));
    parse_file("ir_pbm.der", &ir_buf, &ir_len, &ir);
    parse_file("rr.der", &rr_buf, &rr_len, &rr);
    parse_file("p10cr.der", &p10_buf, &p10_len, &p10);
    parse_file("cc_cr.der", &cc_buf, &cc_len, &cc);
    cm_span c = cm_span_make(cert, cert_len);
    cm_span texts[] = {CM_SPAN_LIT("issued"), CM_SPAN_LIT("by certmint")};
    uint8_t ft_buf[64];
    der_builder fb;
    der_builder_init_fixed(&fb, ft_buf, sizeof(ft_buf));
    cmp_free_text_marshal(&fb, texts, 2);
    cm_span free_text;
    TEST_ASSERT_OK(der_builder_finish(&fb, &free_text));

    cmp_body body;
    // ir / cr / kur from a parsed CertReqMessages.
    const cmp_body_type req_types[] = {CMP_BODY_IR, CMP_BODY_CR, CMP_BODY_KUR};
    for (size_t i = 0; i < 3; i++) {
        body = ir.body;
        body.type = req_types[i];
        build_and_check(&body, NULL);
    }
    body = p10.body;
    build_and_check(&body, NULL);

    // ip / cp / kup with one certificate, caPubs and a status string.
    cmp_cert_response resp = {0};
    resp.cert_req_id = 0;
    resp.status.status = CMP_STATUS_GRANTED_WITH_MODS;
    resp.status.status_string = free_text;
    resp.has_certified_key_pair = true;
    resp.cert = c;
    cmp_cert_response rej = {0};
    rej.cert_req_id = 1;
    rej.status.status = CMP_STATUS_REJECTION;
    rej.status.has_fail_info = true;
    rej.status.fail_info =
        CMP_FAILINFO_BIT(CMP_FAIL_BAD_POP) | CMP_FAILINFO_BIT(CMP_FAIL_BAD_CERT_TEMPLATE);
    cmp_cert_response resps[] = {resp, rej};
    const cmp_body_type rep_types[] = {CMP_BODY_IP, CMP_BODY_CP, CMP_BODY_KUP};
    for (size_t i = 0; i < 3; i++) {
        memset(&body, 0, sizeof(body));
        body.type = rep_types[i];
        body.u.rep.ca_pubs = &c;
        body.u.rep.num_ca_pubs = 1;
        body.u.rep.responses = resps;
        body.u.rep.num_responses = 2;
        build_and_check(&body, i == 0 ? "ours-ip.der" : NULL);
    }
    // rr from a parsed one; rp with two statuses.
    build_and_check(&rr.body, NULL);
    cmp_status_info st[2] = {
        {CMP_STATUS_ACCEPTED, {0}, false, 0},
        {CMP_STATUS_REJECTION, free_text, true, CMP_FAILINFO_BIT(CMP_FAIL_BAD_CERT_ID)}};
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_RP;
    body.u.rp.status = st;
    body.u.rp.num_status = 2;
    build_and_check(&body, "ours-rp.der");
    // certConf (pvno 2: no hashAlg), from the parsed one plus an accepting entry.
    cmp_cert_status cs[2];
    memset(cs, 0, sizeof(cs));
    cs[0] = cc.body.u.conf.items[0];
    cs[1].cert_hash = CM_SPAN_LIT("0123456789abcdef0123456789abcdef");
    cs[1].cert_req_id = -1;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_CERT_CONF;
    body.u.conf.items = cs;
    body.u.conf.num = 2;
    build_and_check(&body, "ours-certconf.der");
    // pollReq, pollRep.
    int64_t ids[] = {0, -1};
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_POLL_REQ;
    body.u.poll_req.cert_req_ids = ids;
    body.u.poll_req.num = 2;
    build_and_check(&body, "ours-pollreq.der");
    cmp_poll_rep pr[] = {{0, 30, free_text}, {-1, 5, {0}}};
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_POLL_REP;
    body.u.poll_rep.items = pr;
    body.u.poll_rep.num = 2;
    build_and_check(&body, "ours-pollrep.der");
    // genm (a value-less caCerts request), genp (caCerts answer: SEQUENCE OF CMPCertificate).
    uint8_t seq_cert[4096];
    der_builder sb;
    der_builder_init_fixed(&sb, seq_cert, sizeof(seq_cert));
    der_mark sm;
    der_open(&sb, &sm, DER_TAG_SEQUENCE);
    der_put_raw(&sb, c);
    der_close(&sb, &sm);
    cm_span ca_certs;
    TEST_ASSERT_OK(der_builder_finish(&sb, &ca_certs));
    cmp_itav genm_items[] = {{CM_SPAN_LIT(DER_OID_IT_CA_CERTS), {0}}};
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENM;
    body.u.gen.items = genm_items;
    body.u.gen.num = 1;
    build_and_check(&body, "ours-genm.der");
    cmp_itav genp_items[] = {{CM_SPAN_LIT(DER_OID_IT_CA_CERTS), ca_certs}};
    body.type = CMP_BODY_GENP;
    body.u.gen.items = genp_items;
    build_and_check(&body, "ours-genp.der");
    // error, pkiconf.
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_ERROR;
    body.u.error.status = st[1];
    body.u.error.has_error_code = true;
    body.u.error.error_code = 42;
    body.u.error.error_details = free_text;
    build_and_check(&body, "ours-error.der");
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_PKICONF;
    build_and_check(&body, "ours-pkiconf.der");
    // nested: two OpenSSL-made requests in one RA batch.
    cmp_msg inner[] = {ir, rr};
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_NESTED;
    body.u.nested.msgs = inner;
    body.u.nested.num = 2;
    build_and_check(&body, "ours-nested.der");

    free(cert);
    free(ir_buf);
    free(rr_buf);
    free(p10_buf);
    free(cc_buf);
}

static void test_cmp_typical_ip_fits_a_fixed_buffer_with_protection_and_extra_certs(void)
{
    uint8_t *cert;
    size_t cert_len;
    CU_ASSERT_TRUE_FATAL(load_cert_der("cl.pem", &cert, &cert_len, NULL));
    cm_span c = cm_span_make(cert, cert_len);
    hdr_bufs hb;
    cmp_header_fields h;
    make_header(&h, &hb, 2);
    // protectionAlg: ecdsa-with-SHA256 (signature), so extraCerts must follow.
    static const uint8_t alg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                  0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
    h.protection_alg = cm_span_make(alg, sizeof(alg));
    cmp_cert_response resp = {0};
    resp.has_certified_key_pair = true;
    resp.cert = c;
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_IP;
    body.u.rep.responses = &resp;
    body.u.rep.num_responses = 1;
    uint8_t buf[2048]; // the stack, no allocation
    der_builder b;
    der_builder_init_fixed(&b, buf, sizeof(buf));
    cmp_msg_writer w;
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cm_span pp = cmp_msg_writer_protected_part(&w);
    // A stand-in for a signature over ProtectedPart (the protect engineer's code signs).
    uint8_t sig[72];
    for (size_t i = 0; i < sizeof(sig); i++) {
        sig[i] = pp.p[i % pp.len];
    }
    cm_span sig_span = cm_span_make(sig, sizeof(sig));
    cm_span extra[] = {c, c};
    cmp_msg_writer_finish(&w, &sig_span, 0, extra, 2);
    cm_span out;
    TEST_ASSERT_OK(der_builder_finish(&b, &out));
    cmp_msg m;
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &m, out, NULL));
    CU_ASSERT_TRUE(m.has_protection);
    CU_ASSERT_TRUE(cm_span_eq(m.protection, sig_span));
    CU_ASSERT_EQUAL(m.num_extra_certs, 2);
    CU_ASSERT_TRUE(cm_span_eq(m.extra_certs[1], c));
    CU_ASSERT_TRUE(cm_span_eq(m.body.u.rep.responses[0].cert, c));
    assert_matches_openssl(&m, out);
    assert_roundtrip(&m, out);

    // The same into a buffer one byte too small fails cleanly.
    der_builder_init_fixed(&b, buf, out.len - 1);
    cmp_msg_writer_begin(&w, &b, &h, &body);
    cmp_msg_writer_finish(&w, &sig_span, 0, extra, 2);
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_BUFFER_TOO_SMALL);
    free(cert);
}

// --- negative tests ----------------------------------------------------------------------

// remarshal_and_parse marshals |m| and parses the result with |opts|.
static cm_result remarshal_and_parse(const cmp_msg *m, const cmp_parse_opts *opts, cmp_msg *out,
                                     cm_span *out_der)
{
    cm_span der = marshal_heap(m);
    cm_result r = cmp_msg_from_der(&g_arena, out, der, opts);
    if (out_der != NULL) {
        *out_der = der;
    } else {
        free_span(der);
    }
    return r;
}

static void test_cmp_rejects_truncation_at_every_byte(void)
{
    static const char *const files[] = {"ir_pbm.der", "ip_pbm.der", "cc_pbm.der", "genp.der",
                                        "rr.der",     "err.der",    "pollrep.der"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        uint8_t *buf;
        size_t len;
        CU_ASSERT_TRUE_FATAL(load(files[i], &buf, &len));
        for (size_t cut = 0; cut < len; cut++) {
            cmp_msg m;
            TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &m, cm_span_make(buf, cut), NULL),
                             CM_E_DER_TRUNCATED);
        }
        // Trailing bytes after a whole message.
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, buf, len);
        longer[len] = 0;
        cmp_msg m;
        TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &m, cm_span_make(longer, len + 1), NULL),
                         CM_E_DER_TRAILING);
        free(longer);
        free(buf);
        cm_arena_reset(&g_arena);
    }
}

static void test_cmp_rejects_header_rule_violations(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m, out;
    parse_file("ir_pbm.der", &buf, &len, &m);
    TEST_ASSERT_OK(remarshal_and_parse(&m, NULL, &out, NULL));

    cmp_msg t = m;
    t.header.f.transaction_id.present = false;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_NO_TRANSACTION_ID);

    t = m;
    t.header.f.sender_nonce.v.len = 15;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_BAD_SENDER_NONCE);
    t = m;
    t.header.f.sender_nonce.present = false;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_BAD_SENDER_NONCE);
    t = m;
    t.header.f.recip_nonce = (cmp_opt_span){true, cm_span_make(m.header.f.sender_nonce.v.p, 8)};
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_BAD_RECIP_NONCE);

    t = m;
    t.header.f.protection_alg = cm_span_make(NULL, 0);
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_PROTECTION_NO_ALG);
    t = m;
    t.has_protection = false;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_ALG_NO_PROTECTION);
    // Neither: an unprotected message is structurally fine.
    t.header.f.protection_alg = cm_span_make(NULL, 0);
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, NULL));
    free(buf);

    // Signature protection without extraCerts.
    parse_file("cr.der", &buf, &len, &m);
    cmp_parse_opts first = {CMP_DEFAULT_MAX_NESTING, 0, true, 0, false};
    TEST_ASSERT_OK(remarshal_and_parse(&m, &first, &out, NULL));
    t = m;
    t.num_extra_certs = 0;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, &first, &out, NULL), CMP_E_NO_EXTRA_CERTS);
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, NULL)); // a later message may omit it
    // A MAC-protected message needs none.
    uint8_t *pbm_buf;
    size_t pbm_len;
    cmp_msg pbm;
    parse_file("ir_pbm.der", &pbm_buf, &pbm_len, &pbm);
    CU_ASSERT_EQUAL(pbm.num_extra_certs, 0);
    TEST_ASSERT_OK(remarshal_and_parse(&pbm, &first, &out, NULL));
    free(pbm_buf);
    // Too many extraCerts: over the hard cap, and over a configured one.
    cm_span many[CMP_MAX_EXTRA_CERTS + 1];
    for (size_t i = 0; i < CMP_MAX_EXTRA_CERTS + 1; i++) {
        many[i] = m.extra_certs[0];
    }
    t = m;
    t.extra_certs = many;
    t.num_extra_certs = CMP_MAX_EXTRA_CERTS + 1;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CM_E_DER_TOO_MANY);
    t.num_extra_certs = CMP_MAX_EXTRA_CERTS;
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, NULL));
    cmp_parse_opts opts = {CMP_DEFAULT_MAX_NESTING, 2, false, 0, false};
    t.num_extra_certs = 3;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, &opts, &out, NULL), CM_E_DER_TOO_MANY);
    t.num_extra_certs = 2;
    TEST_ASSERT_OK(remarshal_and_parse(&t, &opts, &out, NULL));
    free(buf);
}

// with_general_info replaces the generalInfo of |m| by one entry and reparses.
static cm_result with_general_info(const cmp_msg *m, cm_span oid, cm_span value)
{
    cmp_itav it = {oid, value};
    cmp_msg t = *m;
    t.header.f.general_info = &it;
    t.header.f.num_general_info = 1;
    cmp_msg out;
    return remarshal_and_parse(&t, NULL, &out, NULL);
}

static void test_cmp_rejects_bad_general_info(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m;
    parse_file("ir_pbm.der", &buf, &len, &m);
    cm_span ic = CM_SPAN_LIT(DER_OID_IT_IMPLICIT_CONFIRM);
    cm_span cwt = CM_SPAN_LIT(DER_OID_IT_CONFIRM_WAIT_TIME);
    cm_span prof = CM_SPAN_LIT(DER_OID_IT_CERT_PROFILE);
    TEST_ASSERT_OK(with_general_info(&m, ic, CM_SPAN_LIT("\x05\x00")));
    TEST_ASSERT_CODE(with_general_info(&m, ic, CM_SPAN_LIT("\x02\x01\x01")),
                     CMP_E_BAD_IMPLICIT_CONFIRM);
    TEST_ASSERT_CODE(with_general_info(&m, ic, cm_span_make(NULL, 0)), CMP_E_BAD_IMPLICIT_CONFIRM);
    TEST_ASSERT_OK(with_general_info(&m, cwt,
                                     CM_SPAN_LIT("\x18\x0f"
                                                 "20260101000000Z")));
    TEST_ASSERT_CODE(with_general_info(&m, cwt,
                                       CM_SPAN_LIT("\x17\x0d"
                                                   "260101000000Z")),
                     CMP_E_BAD_CONFIRM_WAIT_TIME);
    // implicitConfirm together with confirmWaitTime: contradictory (RFC 9483 §3.1), in either
    // order.
    cmp_itav both[2] = {{ic, CM_SPAN_LIT("\x05\x00")},
                        {cwt, CM_SPAN_LIT("\x18\x0f"
                                          "20260101000000Z")}};
    cmp_msg t = m, out;
    t.header.f.general_info = both;
    t.header.f.num_general_info = 2;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_IMPLICIT_WITH_WAIT);
    const cmp_itav swapped[2] = {both[1], both[0]};
    t.header.f.general_info = swapped;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_IMPLICIT_WITH_WAIT);
    CU_ASSERT_EQUAL(cm_code_failinfo(CMP_E_IMPLICIT_WITH_WAIT), CMP_FAIL_BAD_DATA_FORMAT);
    // certProfile: SEQUENCE SIZE (1..MAX) OF UTF8String.
    cmp_itav it = {prof, CM_SPAN_LIT("\x30\x07\x0c\x05"
                                     "fleet")};
    t.header.f.general_info = &it;
    t.header.f.num_general_info = 1;
    cm_span der;
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, &der));
    CU_ASSERT_EQUAL(out.header.num_cert_profiles, 1);
    CU_ASSERT_TRUE(out.header.num_cert_profiles == 1 &&
                   cm_span_eq(out.header.cert_profiles[0], CM_SPAN_LIT("fleet")));
    free_span(der);
    TEST_ASSERT_CODE(with_general_info(&m, prof, CM_SPAN_LIT("\x30\x03\x02\x01\x01")),
                     CMP_E_BAD_CERT_PROFILE);
    TEST_ASSERT_CODE(with_general_info(&m, prof, CM_SPAN_LIT("\x30\x00")), CMP_E_BAD_CERT_PROFILE);
    // An unknown infoType is kept with its value.
    cmp_itav unk = {CM_SPAN_LIT("\x2b\x06\x01\x04\x01\x82\x37\x01"), CM_SPAN_LIT("\x04\x01\x07")};
    t.header.f.general_info = &unk;
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, &der));
    CU_ASSERT_TRUE(cm_span_eq(out.header.f.general_info[0].value, unk.value));
    free_span(der);
    free(buf);
}

static void test_cmp_rejects_unknown_and_unsupported_bodies(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m;
    parse_file("pc_pbm.der", &buf, &len, &m);
    size_t at = (size_t)(m.body.whole.p - buf);
    CU_ASSERT_EQUAL_FATAL(buf[at], 0xb3); // pkiconf [19]
    const struct {
        uint8_t tag;
        uint32_t code;
    } cases[] = {
        {0xbb, CMP_E_UNKNOWN_BODY},     // [27]
        {0x93, CMP_E_UNKNOWN_BODY},     // [19] primitive
        {0x30, CMP_E_UNKNOWN_BODY},     // universal SEQUENCE
        {0x73, CMP_E_UNKNOWN_BODY},     // [APPLICATION 19]
        {0xa5, CMP_E_UNSUPPORTED_BODY}, // popdecc [5]
        {0xaf, CMP_E_UNSUPPORTED_BODY}, // ckuann [15]
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t saved = buf[at];
        buf[at] = cases[i].tag;
        cmp_msg out;
        TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, cm_span_make(buf, len), NULL),
                         cases[i].code);
        buf[at] = saved;
    }
    // pkiconf with content other than NULL.
    buf[at + 2] = 0x04; // OCTET STRING of length 0
    cmp_msg out;
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, cm_span_make(buf, len), NULL),
                     CM_E_DER_UNEXPECTED_TAG);
    free(buf);
}

// ccr and ccp (RFC 9810 §5.3.11) have the syntax of ir and ip: the same bytes under tags [13]
// and [14] parse as CertReqMessages and CertRepMessage and marshal back unchanged.
static void test_cmp_ccr_and_ccp(void)
{
    static const struct {
        const char *file;
        uint8_t tag;
        cmp_body_type type;
    } k_cases[] = {{"ir_pbm.der", 0xad, CMP_BODY_CCR}, {"ip_pbm.der", 0xae, CMP_BODY_CCP}};
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        uint8_t *buf;
        size_t len;
        cmp_msg m;
        parse_file(k_cases[i].file, &buf, &len, &m);
        const size_t at = (size_t)(m.body.whole.p - buf);
        buf[at] = k_cases[i].tag;
        cmp_msg out;
        TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &out, cm_span_make(buf, len), NULL));
        CU_ASSERT_EQUAL(out.body.type, k_cases[i].type);
        if (k_cases[i].type == CMP_BODY_CCR) {
            CU_ASSERT_EQUAL(out.body.u.req.num_msgs, m.body.u.req.num_msgs);
        } else {
            CU_ASSERT_EQUAL(out.body.u.rep.num_responses, 1);
            CU_ASSERT(out.body.u.rep.responses[0].cert.len > 0);
        }
        assert_roundtrip(&out, cm_span_make(buf, len));
        free(buf);
    }
}

static void test_cmp_nested_depth_is_limited(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg ir;
    parse_file("ir_pbm.der", &buf, &len, &ir);
    // One level: accepted by default, refused with max_nesting 0.
    cmp_msg outer = ir;
    outer.body.type = CMP_BODY_NESTED;
    outer.body.u.nested.msgs = &ir;
    outer.body.u.nested.num = 1;
    cmp_msg out;
    TEST_ASSERT_OK(remarshal_and_parse(&outer, NULL, &out, NULL));
    CU_ASSERT_EQUAL(out.body.type, CMP_BODY_NESTED); // |out|'s spans are dangling now
    cmp_parse_opts none = {0, 0, false, 0, false};
    TEST_ASSERT_CODE(remarshal_and_parse(&outer, &none, &out, NULL), CMP_E_NESTING_DEPTH);
    // Two levels: refused by default, accepted when configured.
    cmp_msg outer2 = ir;
    outer2.body.type = CMP_BODY_NESTED;
    outer2.body.u.nested.msgs = &outer;
    outer2.body.u.nested.num = 1;
    TEST_ASSERT_CODE(remarshal_and_parse(&outer2, NULL, &out, NULL), CMP_E_NESTING_DEPTH);
    cmp_parse_opts two = {2, 0, false, 0, false};
    cm_span der;
    TEST_ASSERT_OK(remarshal_and_parse(&outer2, &two, &out, &der));
    assert_roundtrip(&out, der);
    free_span(der);
    // An inner message breaking a header rule fails the batch.
    cmp_msg bad = ir;
    bad.header.f.transaction_id.present = false;
    outer.body.u.nested.msgs = &bad;
    TEST_ASSERT_CODE(remarshal_and_parse(&outer, NULL, &out, NULL), CMP_E_NO_TRANSACTION_ID);
    // Empty PKIMessages (SIZE (1..MAX)).
    outer.body.u.nested.num = 0;
    TEST_ASSERT_CODE(remarshal_and_parse(&outer, NULL, &out, NULL), CMP_E_EMPTY_SEQUENCE);
    // Marshalling deeper than allowed poisons the builder.
    der_builder b;
    der_builder_init(&b, 0);
    outer.body.u.nested.msgs = &ir;
    outer.body.u.nested.num = 1;
    cmp_msg_marshal_bounded(&b, &outer, 0);
    cm_span junk;
    TEST_ASSERT_CODE(der_builder_finish(&b, &junk), CMP_E_NESTING_DEPTH);
    der_builder_cleanup(&b);
    free(buf);
}

// A shallow parse (cmp_parse_opts.nested_shallow) delimits the inner messages without parsing
// them: each is the whole inner PKIMessage element, and marshalling them back from those spans
// gives the same bytes. max_nested bounds the count.
static void test_cmp_nested_shallow_and_count(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg ir;
    parse_file("ir_pbm.der", &buf, &len, &ir);
    cmp_msg inner[3] = {ir, ir, ir};
    inner[1].header.f.transaction_id.present = false; // a bad inner message: not parsed
    cmp_msg outer = ir;
    outer.body.type = CMP_BODY_NESTED;
    outer.body.u.nested.msgs = inner;
    outer.body.u.nested.num = 3;
    cm_span der = marshal_heap(&outer);
    cmp_msg out;
    // Parsed in full the bad inner message fails the whole; shallow it does not.
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, der, NULL), CMP_E_NO_TRANSACTION_ID);
    cmp_parse_opts shallow = {.max_nesting = 1, .nested_shallow = true};
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &out, der, &shallow));
    CU_ASSERT_EQUAL_FATAL(out.body.u.nested.num, 3);
    CU_ASSERT_PTR_NULL(out.body.u.nested.msgs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out.body.u.nested.ders);
    CU_ASSERT_TRUE(cm_span_eq(out.body.u.nested.ders[0], cm_span_make(buf, len)));
    CU_ASSERT_TRUE(cm_span_eq(out.body.u.nested.ders[2], cm_span_make(buf, len)));
    cmp_msg m0;
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &m0, out.body.u.nested.ders[0], NULL));
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &m0, out.body.u.nested.ders[1], NULL),
                     CMP_E_NO_TRANSACTION_ID);
    assert_roundtrip(&out, der); // from the spans, verbatim
    // The count: 3 is over a cap of 2, not over 3; the hard limit caps a larger setting.
    cmp_parse_opts two = shallow, three = shallow, huge = shallow;
    two.max_nested = 2;
    three.max_nested = 3;
    huge.max_nested = CMP_MAX_NESTED_LIMIT * 2;
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, der, &two), CM_E_DER_TOO_MANY);
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &out, der, &three));
    TEST_ASSERT_OK(cmp_msg_from_der(&g_arena, &out, der, &huge));
    // An inner element that is not a SEQUENCE fails even a shallow parse.
    cmp_msg not_seq = outer;
    const uint8_t k_int[] = {0x02, 0x01, 0x05};
    const cm_span junk[1] = {cm_span_make(k_int, sizeof(k_int))};
    not_seq.body.u.nested.msgs = NULL;
    not_seq.body.u.nested.ders = junk;
    not_seq.body.u.nested.num = 1;
    cm_span der2 = marshal_heap(&not_seq);
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, der2, &shallow), CM_E_DER_UNEXPECTED_TAG);
    free_span(der2);
    free_span(der);
    free(buf);
}

static void test_cmp_hash_alg_needs_pvno_3(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m;
    parse_file("cc_pbm.der", &buf, &len, &m);
    static const uint8_t sha512_alg[] = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                         0x01, 0x65, 0x03, 0x04, 0x02, 0x03};
    cmp_cert_status cs = m.body.u.conf.items[0];
    der_reader r;
    der_reader_init(&r, cm_span_make(sha512_alg, sizeof(sha512_alg)));
    TEST_ASSERT_OK(cmp_alg_id_parse(&cs.hash_alg, &r));
    cs.has_hash_alg = true;
    cmp_msg t = m, out;
    t.body.u.conf.items = &cs;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_HASHALG_PVNO);
    t.header.f.pvno = 3;
    cm_span der;
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, &der));
    CU_ASSERT_TRUE(out.body.u.conf.items[0].has_hash_alg);
    CU_ASSERT_TRUE(der_oid_is(out.body.u.conf.items[0].hash_alg.oid, DER_OID_SHA512));
    assert_roundtrip(&out, der);
    free_span(der);
    free(buf);
}

static void test_cmp_unsupported_pvno_is_reported_not_rejected(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m, out;
    parse_file("genm.der", &buf, &len, &m);
    cmp_msg t = m;
    t.header.f.pvno = 4;
    cm_span der;
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, &der));
    CU_ASSERT_EQUAL(out.header.f.pvno, 4);
    CU_ASSERT_FALSE(cmp_header_pvno_supported(&out.header));
    assert_roundtrip(&out, der);
    free_span(der);
    t.header.f.pvno = 0;
    TEST_ASSERT_OK(remarshal_and_parse(&t, NULL, &out, NULL));
    CU_ASSERT_FALSE(cmp_header_pvno_supported(&out.header));
    // With an unsupported pvno any later failure is reported as unsupportedVersion.
    t.header.f.pvno = 99;
    t.header.f.transaction_id.present = false;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_UNSUPPORTED_VERSION);
    // A pvno too large for any integer type.
    der_builder b;
    der_builder_init(&b, 0);
    der_mark msg, hdr;
    der_open(&b, &msg, DER_TAG_SEQUENCE);
    der_open(&b, &hdr, DER_TAG_SEQUENCE);
    der_put_raw(&b, CM_SPAN_LIT("\x02\x09\x01\x00\x00\x00\x00\x00\x00\x00\x00"));
    der_close(&b, &hdr);
    der_close(&b, &msg);
    cm_span bad;
    TEST_ASSERT_OK(der_builder_finish(&b, &bad));
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, bad, NULL), CMP_E_UNSUPPORTED_VERSION);
    der_builder_cleanup(&b);
    free(buf);
}

static void test_cmp_rejects_bad_status_and_reason(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m, out;
    parse_file("err.der", &buf, &len, &m);
    cmp_msg t = m;
    t.body.u.error.status.status = 7;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_BAD_STATUS);
    t.body.u.error.status.status = -1;
    TEST_ASSERT_CODE(remarshal_and_parse(&t, NULL, &out, NULL), CMP_E_BAD_STATUS);
    free(buf);

    // A reason code outside CRLReason, and a reason that is not an ENUMERATED.
    parse_file("rr.der", &buf, &len, &m);
    const cmp_rev_details *rd = &m.body.u.rr.items[0];
    size_t at = (size_t)(rd->crl_entry_details.p - buf);
    // ... SEQUENCE { SEQUENCE { OID 2.5.29.21, OCTET STRING { ENUMERATED 1 } } }: the last
    // byte of crlEntryDetails is the reason value.
    size_t last = at + rd->crl_entry_details.len - 1;
    CU_ASSERT_EQUAL_FATAL(buf[last], 1);
    CU_ASSERT_EQUAL_FATAL(buf[last - 2], 0x0a);
    buf[last] = 11;
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, cm_span_make(buf, len), NULL),
                     CMP_E_BAD_CRL_REASON);
    buf[last] = 1;
    buf[last - 2] = 0x02; // INTEGER instead of ENUMERATED
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, cm_span_make(buf, len), NULL),
                     CMP_E_BAD_CRL_REASON);
    free(buf);
}

static void test_cmp_rejects_empty_sequences(void)
{
    uint8_t *buf;
    size_t len;
    cmp_msg m, out;
    parse_file("cr.der", &buf, &len, &m);
    // extraCerts [1] { SEQUENCE {} } violates SIZE (1..MAX): the message without protection and
    // certificates, with an empty extraCerts appended.
    cmp_msg t = m;
    t.num_extra_certs = 0;
    t.header.f.protection_alg = cm_span_make(NULL, 0);
    t.has_protection = false;
    cm_span der = marshal_heap(&t);
    uint8_t *bad = malloc(der.len + 4);
    memcpy(bad, der.p, der.len);
    memcpy(bad + der.len, "\xa1\x02\x30\x00", 4);
    // The outer SEQUENCE uses a 2-octet length for this size.
    CU_ASSERT_EQUAL_FATAL(bad[1], 0x82);
    size_t outer = ((size_t)bad[2] << 8 | bad[3]) + 4;
    bad[2] = (uint8_t)(outer >> 8);
    bad[3] = (uint8_t)outer;
    TEST_ASSERT_CODE(cmp_msg_from_der(&g_arena, &out, cm_span_make(bad, der.len + 4), NULL),
                     CMP_E_EMPTY_SEQUENCE);
    free(bad);
    free_span(der);
    free(buf);
}

static void test_cmp_failinfo_mapping(void)
{
    const struct {
        uint32_t code;
        uint32_t bit;
    } cases[] = {
        {CMP_E_UNSUPPORTED_VERSION, CMP_FAIL_UNSUPPORTED_VERSION},
        {CMP_E_NO_TRANSACTION_ID, CMP_FAIL_BAD_DATA_FORMAT},
        {CMP_E_BAD_SENDER_NONCE, CMP_FAIL_BAD_SENDER_NONCE},
        {CMP_E_BAD_RECIP_NONCE, CMP_FAIL_BAD_RECIPIENT_NONCE},
        {CMP_E_PROTECTION_NO_ALG, CMP_FAIL_BAD_MESSAGE_CHECK},
        {CMP_E_PROT_WRONG_KIND, CMP_FAIL_WRONG_INTEGRITY},
        {CMP_E_IMPLICIT_WITH_WAIT, CMP_FAIL_BAD_DATA_FORMAT},
        {CMP_E_ALG_NO_PROTECTION, CMP_FAIL_BAD_MESSAGE_CHECK},
        {CMP_E_NO_EXTRA_CERTS, CMP_FAIL_BAD_MESSAGE_CHECK},
        {CMP_E_UNKNOWN_BODY, CMP_FAIL_BAD_DATA_FORMAT},
        {CMP_E_UNSUPPORTED_BODY, CMP_FAIL_BAD_REQUEST},
        {CMP_E_NESTING_DEPTH, CMP_FAIL_BAD_REQUEST},
        {CMP_E_HASHALG_PVNO, CMP_FAIL_BAD_DATA_FORMAT},
        {CMP_E_BAD_IMPLICIT_CONFIRM, CMP_FAIL_BAD_DATA_FORMAT},
        {CMP_E_BAD_CONFIRM_WAIT_TIME, CMP_FAIL_BAD_DATA_FORMAT},
        {CMP_E_UNKNOWN_HASH_ALG, CMP_FAIL_BAD_ALG},
        {CM_E_DER_TRUNCATED, CMP_FAIL_BAD_DATA_FORMAT},
        {CM_E_DER_TOO_MANY, CMP_FAIL_BAD_DATA_FORMAT},
        {CRMF_E_POPO_BAD_SIGNATURE, CMP_FAIL_BAD_POP},
        {CRMF_E_TEMPLATE_UID, CMP_FAIL_BAD_CERT_TEMPLATE},
        {CRMF_E_ALG_SHA1, CMP_FAIL_BAD_ALG},
        {CM_E_NOMEM, CMP_FAIL_SYSTEM_FAILURE},
        {CM_E_CRYPTO, CMP_FAIL_SYSTEM_FAILURE},
        {CM_CODE(CM_CLASS_AGAIN, 1), CMP_FAIL_SYSTEM_UNAVAIL},
        {CM_CODE(CM_CLASS_PROTO, 0x3ff), CMP_FAIL_BAD_DATA_FORMAT},
        {CM_CODE(CM_CLASS_POLICY, 0x7ff), CMP_FAIL_BAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const int got = cm_code_failinfo(cases[i].code);
        if (got != (int)cases[i].bit) {
            fprintf(stderr, "\n  code %s -> %d\n", cm_result_name(cm_result_make(cases[i].code)),
                    got);
        }
        CU_ASSERT_EQUAL(got, (int)cases[i].bit);
    }
    CU_ASSERT_EQUAL(cm_code_failinfo(CM_OK), -1);
}

// --- general message contents (cmp_genm.c) ---------------------------------------------------

// The Name CN=CA 1, used as a directoryName and as an RDN below.
static const uint8_t k_genm_name[] = {0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55,
                                      0x04, 0x03, 0x0c, 0x04, 'C',  'A',  ' ',  '1'};

// finish_ok finishes |b|, asserting success.
static cm_span finish_ok(der_builder *b)
{
    cm_span out = {0};
    TEST_ASSERT_OK(der_builder_finish(b, &out));
    return out;
}

// put_dir_name writes directoryName [4] { Name }.
static void put_dir_name(der_builder *b)
{
    der_mark dn;
    der_open(b, &dn, DER_CONTEXT_CONS(4));
    der_put_raw(b, cm_span_make(k_genm_name, sizeof(k_genm_name)));
    der_close(b, &dn);
}

// crl_status_list_4 writes a CRLStatusList of one CRLStatus per CRLSource form:
//   1. issuer [1] { GeneralNames { dirName } }, thisUpdate UTCTime
//   2. issuer [1] { dirName } (GeneralName directly in [1]), no thisUpdate
//   3. dpn [0] { fullName [0] { URI } }, no thisUpdate
//   4. dpn [0] { nameRelativeToCRLIssuer [1] { CN=CA 1 } }, thisUpdate GeneralizedTime
static cm_span crl_status_list_4(der_builder *b, int64_t t1, int64_t t4)
{
    der_builder_init_arena(b, &g_arena, 256);
    der_mark list, st, src, in;
    der_open(b, &list, DER_TAG_SEQUENCE);
    der_open(b, &st, DER_TAG_SEQUENCE);
    der_open(b, &src, DER_CONTEXT_CONS(1));
    der_open(b, &in, DER_TAG_SEQUENCE);
    put_dir_name(b);
    der_close(b, &in);
    der_close(b, &src);
    der_put_utctime(b, t1);
    der_close(b, &st);

    der_open(b, &st, DER_TAG_SEQUENCE);
    der_open(b, &src, DER_CONTEXT_CONS(1));
    put_dir_name(b);
    der_close(b, &src);
    der_close(b, &st);

    der_open(b, &st, DER_TAG_SEQUENCE);
    der_open(b, &src, DER_CONTEXT_CONS(0));
    der_open(b, &in, DER_CONTEXT_CONS(0));
    der_put_tlv(b, DER_CONTEXT(6), CM_SPAN_LIT("http://ca.example/ca1.crl"));
    der_close(b, &in);
    der_close(b, &src);
    der_close(b, &st);

    der_open(b, &st, DER_TAG_SEQUENCE);
    der_open(b, &src, DER_CONTEXT_CONS(0));
    // The RDN's content is the AttributeTypeAndValue inside the Name's one SET.
    der_put_header(b, DER_CONTEXT_CONS(1), sizeof(k_genm_name) - 4);
    der_put_raw(b, cm_span_make(k_genm_name + 4, sizeof(k_genm_name) - 4));
    der_close(b, &src);
    der_put_gentime(b, t4);
    der_close(b, &st);
    der_close(b, &list);
    cm_span out = {0};
    TEST_ASSERT_OK(der_builder_finish(b, &out));
    return out;
}

static void test_cmp_crl_status_list_parses_every_source_form(void)
{
    const int64_t t1 = 1700000000, t4 = 2600000000; // 2023 (UTCTime), 2052 (GeneralizedTime)
    der_builder b;
    const cm_span der = crl_status_list_4(&b, t1, t4);
    const cmp_crl_status *st = NULL;
    size_t n = 0;
    TEST_ASSERT_OK(cmp_crl_status_list_from_der(&g_arena, &st, &n, der));
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_EQUAL(st[0].source_kind, CMP_CRL_SOURCE_ISSUER);
    CU_ASSERT_TRUE(st[0].has_this_update);
    CU_ASSERT_EQUAL(st[0].this_update, t1);
    CU_ASSERT_EQUAL(st[1].source_kind, CMP_CRL_SOURCE_ISSUER);
    CU_ASSERT_FALSE(st[1].has_this_update);
    // Both issuer forms give the same GeneralName elements.
    CU_ASSERT_TRUE(cm_span_eq(st[0].source, st[1].source));
    der_reader r;
    der_reader_init(&r, st[0].source);
    crmf_general_name gn;
    TEST_ASSERT_OK(crmf_general_name_parse(&r, &gn));
    CU_ASSERT_EQUAL(gn.tag, CRMF_GN_DIRECTORY_NAME);
    CU_ASSERT_TRUE(cm_span_eq(gn.name, cm_span_make(k_genm_name, sizeof(k_genm_name))));
    CU_ASSERT_TRUE(der_reader_empty(&r));
    CU_ASSERT_EQUAL(st[2].source_kind, CMP_CRL_SOURCE_DPN);
    CU_ASSERT_FALSE(st[2].has_this_update);
    CU_ASSERT_TRUE(st[2].source.len > 0 && st[2].source.p[0] == 0xa0); // fullName
    CU_ASSERT_EQUAL(st[3].source_kind, CMP_CRL_SOURCE_DPN);
    CU_ASSERT_TRUE(st[3].source.len > 0 && st[3].source.p[0] == 0xa1); // RDN
    CU_ASSERT_TRUE(st[3].has_this_update);
    CU_ASSERT_EQUAL(st[3].this_update, t4);
}

// crl_status_list_of writes a CRLStatusList of |n| CRLStatus { issuer [1] { dNSName } }.
static cm_span crl_status_list_of(size_t n)
{
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 256);
    der_mark list, st, src;
    der_open_hint(&b, &list, DER_TAG_SEQUENCE, 3);
    for (size_t i = 0; i < n; i++) {
        der_open(&b, &st, DER_TAG_SEQUENCE);
        der_open(&b, &src, DER_CONTEXT_CONS(1));
        der_put_tlv(&b, DER_CONTEXT(2), CM_SPAN_LIT("ca.example"));
        der_close(&b, &src);
        der_close(&b, &st);
    }
    der_close(&b, &list);
    return finish_ok(&b);
}

// expect_list_code parses |bytes| as a CRLStatusList and expects |want|, the outputs untouched.
static void expect_list_code(cm_span bytes, uint32_t want)
{
    const cmp_crl_status sentinel = {0};
    const cmp_crl_status *st = &sentinel;
    size_t n = 99;
    TEST_ASSERT_CODE(cmp_crl_status_list_from_der(&g_arena, &st, &n, bytes), want);
    CU_ASSERT_PTR_EQUAL(st, &sentinel);
    CU_ASSERT_EQUAL(n, 99);
}

static void test_cmp_crl_status_list_rejects_malformed(void)
{
    der_builder b;
    const cm_span good = crl_status_list_4(&b, 1700000000, 2600000000);
    for (size_t cut = 0; cut < good.len; cut++) {
        expect_list_code(cm_span_make(good.p, cut), CM_E_DER_TRUNCATED);
    }
    uint8_t *longer = cm_arena_alloc(&g_arena, good.len + 2);
    memcpy(longer, good.p, good.len);
    memcpy(longer + good.len, "\x05\x00", 2);
    expect_list_code(cm_span_make(longer, good.len + 2), CM_E_DER_TRAILING);

    const struct {
        const char *what;
        const char *der;
        size_t len;
        uint32_t code;
    } cases[] = {
#define C(what, lit, code) {what, lit, sizeof(lit) - 1, code}
        C("empty list", "\x30\x00", CMP_E_EMPTY_SEQUENCE),
        C("not a SEQUENCE", "\x31\x00", CM_E_DER_UNEXPECTED_TAG),
        C("empty CRLStatus", "\x30\x02\x30\x00", CM_E_DER_UNEXPECTED_TAG),
        C("source [2]", "\x30\x04\x30\x02\xa2\x00", CM_E_DER_UNEXPECTED_TAG),
        C("source primitive [1]", "\x30\x04\x30\x02\x81\x00", CM_E_DER_UNEXPECTED_TAG),
        C("issuer: no names", "\x30\x04\x30\x02\xa1\x00", CMP_E_EMPTY_SEQUENCE),
        C("issuer: empty GeneralNames", "\x30\x06\x30\x04\xa1\x02\x30\x00", CMP_E_EMPTY_SEQUENCE),
        C("issuer: bytes after GeneralNames", "\x30\x0a\x30\x08\xa1\x06\x30\x02\x82\x00\x82\x00",
          CM_E_DER_TRAILING),
        C("issuer: not a GeneralName", "\x30\x06\x30\x04\xa1\x02\x04\x00", CRMF_E_BAD_CHOICE),
        C("dpn: empty", "\x30\x04\x30\x02\xa0\x00", CM_E_DER_TRUNCATED),
        C("dpn: choice [2]", "\x30\x06\x30\x04\xa0\x02\xa2\x00", CM_E_DER_UNEXPECTED_TAG),
        C("dpn: two names", "\x30\x0a\x30\x08\xa0\x06\xa0\x02\x82\x00\xa1\x00", CM_E_DER_TRAILING),
        C("dpn: empty fullName", "\x30\x06\x30\x04\xa0\x02\xa0\x00", CMP_E_EMPTY_SEQUENCE),
        C("dpn: empty RDN", "\x30\x06\x30\x04\xa0\x02\xa1\x00", CMP_E_EMPTY_SEQUENCE),
        C("dpn: ATV without value", "\x30\x0d\x30\x0b\xa0\x09\xa1\x07\x30\x05\x06\x03\x55\x04\x03",
          CM_E_DER_TRUNCATED),
        C("thisUpdate not a Time", "\x30\x09\x30\x07\xa1\x02\x82\x00\x02\x01\x01",
          CM_E_DER_UNEXPECTED_TAG),
        C("bad UTCTime",
          "\x30\x15\x30\x13\xa1\x02\x82\x00\x17\x0d"
          "2301010000000",
          CM_E_DER_TIME),
        C("after thisUpdate",
          "\x30\x17\x30\x15\xa1\x02\x82\x00\x17\x0d"
          "230101000000Z\x05\x00",
          CM_E_DER_TRAILING),
        C("non-minimal length", "\x30\x81\x04\x30\x02\xa1\x00", CM_E_DER_LENGTH_NONMINIMAL),
        C("indefinite length", "\x30\x80\x30\x02\xa1\x00\x00\x00", CM_E_DER_INDEFINITE),
#undef C
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (getenv("CMP_TEST_VERBOSE") != NULL) {
            fprintf(stderr, "\n  case: %s\n", cases[i].what);
        }
        expect_list_code(cm_span_make(cases[i].der, cases[i].len), cases[i].code);
    }

    // One entry over the cap; at the cap it parses (the count, not the form, refused it).
    expect_list_code(crl_status_list_of(CMP_MAX_CRL_STATUS + 1), CM_E_DER_TOO_MANY);
    const cmp_crl_status *items;
    size_t n;
    TEST_ASSERT_OK(
        cmp_crl_status_list_from_der(&g_arena, &items, &n, crl_status_list_of(CMP_MAX_CRL_STATUS)));
    CU_ASSERT_EQUAL(n, CMP_MAX_CRL_STATUS);

    // An arena at its cap.
    cm_arena tiny;
    cm_arena_init(&tiny, 64, 64);
    CU_ASSERT_PTR_NOT_NULL(cm_arena_alloc(&tiny, 48));
    const cmp_crl_status sentinel = {0};
    items = &sentinel;
    TEST_ASSERT_CODE(cmp_crl_status_list_from_der(&tiny, &items, &n, good), CM_E_NOMEM);
    CU_ASSERT_PTR_EQUAL(items, &sentinel);
    cm_arena_cleanup(&tiny);
}

static void test_cmp_key_alg_marshal_writes_each_key_type(void)
{
    // The DER of each AlgorithmIdentifier (RFC 5480 §2.1.1, RFC 3279 §2.3.1, RFC 8410 §3),
    // checked against OpenSSL's reading of it.
    const struct {
        cmp_key_type type;
        int nid;
        int curve; // NID_undef: no curve parameter
        int ptype; // V_ASN1_UNDEF (absent), V_ASN1_NULL or V_ASN1_OBJECT
    } cases[] = {
        {CMP_KEY_EC_P256, NID_X9_62_id_ecPublicKey, NID_X9_62_prime256v1, V_ASN1_OBJECT},
        {CMP_KEY_EC_P384, NID_X9_62_id_ecPublicKey, NID_secp384r1, V_ASN1_OBJECT},
        {CMP_KEY_EC_P521, NID_X9_62_id_ecPublicKey, NID_secp521r1, V_ASN1_OBJECT},
        {CMP_KEY_RSA, NID_rsaEncryption, NID_undef, V_ASN1_NULL},
        {CMP_KEY_ED25519, NID_ED25519, NID_undef, V_ASN1_UNDEF},
        {CMP_KEY_ED448, NID_ED448, NID_undef, V_ASN1_UNDEF},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        der_builder b;
        der_builder_init_arena(&b, &g_arena, 32);
        cmp_key_alg_marshal(&b, cases[i].type);
        const cm_span der = finish_ok(&b);
        const unsigned char *q = der.p;
        X509_ALGOR *a = d2i_X509_ALGOR(NULL, &q, (long)der.len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT_PTR_EQUAL(q, der.p + der.len);
        const ASN1_OBJECT *obj;
        int ptype;
        const void *pval;
        X509_ALGOR_get0(&obj, &ptype, &pval, a);
        CU_ASSERT_EQUAL(OBJ_obj2nid(obj), cases[i].nid);
        CU_ASSERT_EQUAL(ptype, cases[i].ptype);
        if (cases[i].curve != NID_undef) {
            CU_ASSERT_EQUAL(OBJ_obj2nid(pval), cases[i].curve);
        }
        X509_ALGOR_free(a);
    }
    // RFC 8410 §3 gives the Ed25519 encoding: 30 05 06 03 2B 65 70.
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 32);
    cmp_key_alg_marshal(&b, CMP_KEY_ED25519);
    CU_ASSERT_TRUE(cm_span_eq(finish_ok(&b), CM_SPAN_LIT("\x30\x05\x06\x03\x2b\x65\x70")));

    // A list keeps the order; a type outside the enum poisons the builder.
    const cmp_key_type list[] = {CMP_KEY_RSA, CMP_KEY_EC_P384};
    der_builder_init_arena(&b, &g_arena, 64);
    cmp_key_alg_list_marshal(&b, list, 2);
    der_reader r, seq, alg;
    der_reader_init(&r, finish_ok(&b));
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    cm_span oid;
    TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &alg));
    TEST_ASSERT_OK(der_get_oid(&alg, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_RSA_ENCRYPTION));
    TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &alg));
    TEST_ASSERT_OK(der_get_oid(&alg, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_EC_PUBLIC_KEY));
    TEST_ASSERT_OK(der_get_oid(&alg, &oid));
    CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_P384));
    TEST_ASSERT_OK(der_expect_end(&seq));
    der_builder_init_arena(&b, &g_arena, 32);
    cmp_key_alg_marshal(&b, CMP_KEY_TYPE_COUNT);
    cm_span out;
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_INVALID_ARG);
    der_builder_init_arena(&b, &g_arena, 32);
    const cmp_key_type bad[] = {CMP_KEY_ED448, (cmp_key_type)77};
    cmp_key_alg_list_marshal(&b, bad, 2);
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_INVALID_ARG);
}

static void test_cmp_genp_contents_marshal(void)
{
    uint8_t *c1, *c2;
    size_t l1, l2;
    CU_ASSERT_TRUE_FATAL(load_cert_der("ca.pem", &c1, &l1, NULL));
    CU_ASSERT_TRUE_FATAL(load_cert_der("cl.pem", &c2, &l2, NULL));
    const cm_span certs[2] = {cm_span_make(c1, l1), cm_span_make(c2, l2)};

    // caCerts / crls: SEQUENCE OF the elements, verbatim.
    der_builder b;
    der_builder_init_arena(&b, &g_arena, 64);
    cmp_seq_of_marshal(&b, certs, 2);
    der_reader r, seq;
    der_reader_init(&r, finish_ok(&b));
    TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
    TEST_ASSERT_OK(der_expect_end(&r));
    for (size_t i = 0; i < 2; i++) {
        cm_span got;
        TEST_ASSERT_OK(der_get_element(&seq, DER_TAG_SEQUENCE, &got));
        CU_ASSERT_TRUE(cm_span_eq(got, certs[i]));
    }
    TEST_ASSERT_OK(der_expect_end(&seq));
    der_builder_init_arena(&b, &g_arena, 8);
    cmp_seq_of_marshal(&b, certs, 0);
    CU_ASSERT_TRUE(cm_span_eq(finish_ok(&b), CM_SPAN_LIT("\x30\x00")));

    // RootCaKeyUpdateContent: newWithNew, then [0] newWithOld and [1] oldWithNew when given.
    for (int with = 0; with < 2; with++) {
        cmp_root_ca_key_update u = {.new_with_new = certs[0]};
        if (with) {
            u.new_with_old = certs[1];
            u.old_with_new = certs[1];
        }
        der_builder_init_arena(&b, &g_arena, 64);
        cmp_root_ca_key_update_marshal(&b, &u);
        der_reader_init(&r, finish_ok(&b));
        TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
        cm_span got;
        TEST_ASSERT_OK(der_get_element(&seq, DER_TAG_SEQUENCE, &got));
        CU_ASSERT_TRUE(cm_span_eq(got, certs[0]));
        for (uint32_t t = 0; t < 2 && with; t++) {
            der_reader tagged;
            TEST_ASSERT_OK(der_enter(&seq, DER_CONTEXT_CONS(t), &tagged));
            TEST_ASSERT_OK(der_get_element(&tagged, DER_TAG_SEQUENCE, &got));
            CU_ASSERT_TRUE(cm_span_eq(got, certs[1]));
            TEST_ASSERT_OK(der_expect_end(&tagged));
        }
        TEST_ASSERT_OK(der_expect_end(&seq));
    }
    cmp_root_ca_key_update none = {.new_with_old = certs[1]};
    der_builder_init_arena(&b, &g_arena, 64);
    cmp_root_ca_key_update_marshal(&b, &none);
    cm_span out;
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_INVALID_ARG);

    // certReqTemplate: the template, then keySpec with one control.
    // One Extension (basicConstraints, critical, empty value): the Extensions content octets.
    static const uint8_t k_exts[] = {0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d,
                                     0x13, 0x01, 0x01, 0xff, 0x04, 0x00};
    crmf_template t;
    memset(&t, 0, sizeof(t));
    t.extensions = cm_span_make(k_exts, sizeof(k_exts));
    const cmp_key_spec specs[] = {{.type = CMP_KEY_EC_P256},
                                  {.type = CMP_KEY_RSA, .rsa_key_len = 3072}};
    for (size_t i = 0; i < 3; i++) {
        der_builder_init_arena(&b, &g_arena, 64);
        cmp_cert_req_template_marshal(&b, &t, i < 2 ? &specs[i] : NULL);
        der_reader_init(&r, finish_ok(&b));
        TEST_ASSERT_OK(der_enter(&r, DER_TAG_SEQUENCE, &seq));
        crmf_template got;
        TEST_ASSERT_OK(crmf_template_parse(&seq, &got));
        CU_ASSERT_TRUE(cm_span_eq(got.extensions, t.extensions));
        if (i == 2) {
            TEST_ASSERT_OK(der_expect_end(&seq)); // no keySpec
            continue;
        }
        der_reader ctrls, atv, alg;
        cm_span oid;
        TEST_ASSERT_OK(der_enter(&seq, DER_TAG_SEQUENCE, &ctrls));
        TEST_ASSERT_OK(der_expect_end(&seq));
        TEST_ASSERT_OK(der_enter(&ctrls, DER_TAG_SEQUENCE, &atv));
        TEST_ASSERT_OK(der_expect_end(&ctrls));
        TEST_ASSERT_OK(der_get_oid(&atv, &oid));
        if (i == 0) {
            CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_REGCTRL_ALG_ID));
            TEST_ASSERT_OK(der_enter(&atv, DER_TAG_SEQUENCE, &alg));
            TEST_ASSERT_OK(der_get_oid(&alg, &oid));
            CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_EC_PUBLIC_KEY));
            TEST_ASSERT_OK(der_get_oid(&alg, &oid));
            CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_P256));
        } else {
            CU_ASSERT_TRUE(der_oid_is(oid, DER_OID_REGCTRL_RSA_KEY_LEN));
            uint64_t bits = 0;
            TEST_ASSERT_OK(der_get_u64(&atv, &bits));
            CU_ASSERT_EQUAL(bits, 3072);
        }
        TEST_ASSERT_OK(der_expect_end(&atv));
    }
    const cmp_key_spec bad_rsa = {.type = CMP_KEY_RSA};
    der_builder_init_arena(&b, &g_arena, 64);
    cmp_cert_req_template_marshal(&b, &t, &bad_rsa);
    TEST_ASSERT_CODE(der_builder_finish(&b, &out), CM_E_INVALID_ARG);
    free(c1);
    free(c2);
}

int test_cmp_register(void);
int test_cmp_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_cmp_parses_and_roundtrips_openssl_messages),
        TEST_CASE(test_cmp_ccr_and_ccp),
        TEST_CASE(test_cmp_protected_part_is_what_openssl_maced),
        TEST_CASE(test_cmp_request_and_response_headers_agree),
        TEST_CASE(test_cmp_ip_carries_the_issued_certificate),
        TEST_CASE(test_cmp_cert_conf_hash_matches_openssl),
        TEST_CASE(test_cmp_cert_hash_follows_signature_and_hash_alg),
        TEST_CASE(test_cmp_rr_names_the_certificate_and_reason),
        TEST_CASE(test_cmp_body_details_from_openssl),
        TEST_CASE(test_cmp_marshals_every_body_accepted_by_openssl),
        TEST_CASE(test_cmp_typical_ip_fits_a_fixed_buffer_with_protection_and_extra_certs),
        TEST_CASE(test_cmp_rejects_truncation_at_every_byte),
        TEST_CASE(test_cmp_rejects_header_rule_violations),
        TEST_CASE(test_cmp_rejects_bad_general_info),
        TEST_CASE(test_cmp_rejects_unknown_and_unsupported_bodies),
        TEST_CASE(test_cmp_nested_depth_is_limited),
        TEST_CASE(test_cmp_nested_shallow_and_count),
        TEST_CASE(test_cmp_hash_alg_needs_pvno_3),
        TEST_CASE(test_cmp_unsupported_pvno_is_reported_not_rejected),
        TEST_CASE(test_cmp_rejects_bad_status_and_reason),
        TEST_CASE(test_cmp_rejects_empty_sequences),
        TEST_CASE(test_cmp_failinfo_mapping),
        TEST_CASE(test_cmp_crl_status_list_parses_every_source_form),
        TEST_CASE(test_cmp_crl_status_list_rejects_malformed),
        TEST_CASE(test_cmp_key_alg_marshal_writes_each_key_type),
        TEST_CASE(test_cmp_genp_contents_marshal),
    };
    return test_register_suite("cmp", cmp_suite_init, cmp_suite_cleanup, cmp_test_setup,
                               cmp_test_teardown, tests, TEST_NUM_CASES(tests));
}
