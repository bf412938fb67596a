// Suite "cfg": a full valid configuration loads with every value where it belongs; every
// key's bad value, unknown keys and sections, missing sections and keys, and a secret file
// readable by others are refused with the right code and a message naming the file, the
// section, the key and the problem. Certificates are made with the openssl CLI at suite init.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <CUnit/CUnit.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/config/cfg.h"
#include "tests/support/test_support.h"

static char g_dir[256];
static char g_conf[320];

static const char k_base[] = "dir = .\n"
                             "[certmintd]\n"
                             "listen = 127.0.0.1:8080, [::1]:8443\n"
                             "io_threads = 2\n"
                             "hsm_sessions = 4\n"
                             "hsm_dispatch = pool\n"
                             "store = sqlite:var/certmint.db\n"
                             "max_request_bytes = 131072\n"
                             "min_pbm_iterations = 500\n"
                             "max_pbm_iterations = 50000\n"
                             "max_pbmac1_iterations = 20000\n"
                             "message_time_window = 120\n"
                             "confirm_wait_time = 60\n"
                             "log_level = debug\n"
                             "default_ca = devices\n"
                             "max_connections_per_peer = 32\n"
                             "admin_listen = 127.0.0.1:8081, [::1]:8082\n"
                             "admin_max_connections = 4\n"
                             "store_min_free = 1G\n"
                             "\n"
                             "[ca:devices]   # served at /.well-known/cmp/p/devices\n"
                             "key = pkcs11:token=certmint;object=devices-ca?pin-source=file:pin\n"
                             "cert = ca.pem\n"
                             "profile = device\n"
                             "clients = line\n"
                             "caPubs = on\n"
                             "unprotected_genm = yes\n"
                             "\n"
                             "[ca:servers]\n"
                             "key = pkcs11:token=certmint;object=servers-ca\n"
                             "cert = $dir/ca.pem\n"
                             "chain = ca.pem\n"
                             "cmp_key = pkcs11:token=certmint;object=cmp\n"
                             "cmp_cert = ra.pem\n"
                             "profile = device\n"
                             "sign_mac_responses = on\n"
                             "\n"
                             "[profile:device]\n"
                             "validity_days = 365\n"
                             "max_validity_days = 730\n"
                             "key_types = P-256, RSA, Ed25519\n"
                             "rsa_min_bits = 2048\n"
                             "rsa_max_bits = 3072\n"
                             "subject_required = CN\n"
                             "subject_allowed = O, C, serialNumber\n"
                             "san_types = dns, ip\n"
                             "implicit_confirm = off\n"
                             "extensions = device_ext\n"
                             "\n"
                             "[device_ext]\n"
                             "basicConstraints = critical, CA:FALSE\n"
                             "keyUsage = critical, digitalSignature\n"
                             "extendedKeyUsage = clientAuth\n"
                             "certificatePolicies = @pol\n"
                             "\n"
                             "[pol]\n"
                             "policyIdentifier = 1.3.6.1.4.1.99999.7\n"
                             "\n"
                             "[clients:line]\n"
                             "secret.line7 = secrets/line7.key\n"
                             "secret.line8 = secrets/line8.key\n"
                             "senderKID.line8 = hex:0a0B0c\n"
                             "trust_anchors = vendor.pem\n"
                             "ra_certs = ra.pem, vendor.pem\n";

static const char *path_of(char *out, size_t cap, const char *name)
{
    return test_path(out, cap, g_dir, name);
}

static bool write_text(const char *name, const char *text)
{
    char p[320];
    return test_write_file(path_of(p, sizeof(p), name), text, strlen(text));
}

static int cfg_suite_init(void)
{
    if (!test_tmpdir(g_dir, sizeof(g_dir), "cfg")) {
        return 1;
    }
    path_of(g_conf, sizeof(g_conf), "certmint.cnf");
    char log[320], key[320], ca[320], vkey[320], vendor[320], rkey[320], ra[320], ext[320];
    char secrets[320];
    path_of(log, sizeof(log), "openssl.log");
    path_of(key, sizeof(key), "ca.key");
    path_of(ca, sizeof(ca), "ca.pem");
    path_of(vkey, sizeof(vkey), "vendor.key");
    path_of(vendor, sizeof(vendor), "vendor.pem");
    path_of(rkey, sizeof(rkey), "ra.key");
    path_of(ra, sizeof(ra), "ra.pem");
    path_of(ext, sizeof(ext), "ext.cnf");
    path_of(secrets, sizeof(secrets), "secrets");
    if (!write_text("ext.cnf", "[req]\ndistinguished_name=dn\n[dn]\n[leaf]\n"
                               "basicConstraints=critical,CA:FALSE\n") ||
        mkdir(secrets, 0700) != 0 || !write_text("secrets/line7.key", "s3cret-line7\n") ||
        !write_text("secrets/line8.key", "another secret") || !write_text("empty.pem", "") ||
        !write_text("secrets/empty.key", "\n") || !write_text("secrets/open.key", "open") ||
        chmod(path_of(secrets, sizeof(secrets), "secrets/open.key"), 0644) != 0) {
        return 1;
    }
    const test_pki_cert_spec ca_spec = {.subject = "/CN=Devices CA", .days = 30};
    const test_pki_cert_spec vendor_spec = {.subject = "/CN=Vendor CA", .days = 30};
    const test_pki_cert_spec ra_spec = {
        .subject = "/CN=Line RA", .days = 30, .ext_file = ext, .ext_section = "leaf"};
    if (!test_pki_make_ca(key, ca, &ca_spec, log) ||
        !test_pki_make_ca(vkey, vendor, &vendor_spec, log) ||
        !test_pki_make_ca(rkey, ra, &ra_spec, log)) {
        return 1;
    }
    return 0;
}

static int cfg_suite_cleanup(void)
{
    (void)test_rmtree(g_dir);
    return 0;
}

static uint8_t *pem_der(const char *name, size_t *out_len)
{
    char p[320];
    BIO *b = BIO_new_file(path_of(p, sizeof(p), name), "r");
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    unsigned char *der = NULL;
    const int len = x != NULL ? i2d_X509(x, &der) : -1;
    X509_free(x);
    *out_len = len > 0 ? (size_t)len : 0;
    return der;
}

static void test_cfg_full_example_loads(void)
{
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, k_base, sizeof(k_base) - 1));
    cfg_config *c = NULL;
    char err[512] = "";
    const cm_result r = cfg_load(&c, err, sizeof(err), g_conf);
    if (!cm_ok(r)) {
        fprintf(stderr, "\n  %s: %s\n", cm_result_name(r), err);
    }
    CU_ASSERT_FATAL(cm_ok(r));

    CU_ASSERT_EQUAL(c->num_listen, 2);
    CU_ASSERT_STRING_EQUAL(c->listen[0].host, "127.0.0.1");
    CU_ASSERT_EQUAL(c->listen[0].port, 8080);
    CU_ASSERT_FALSE(c->listen[0].ipv6);
    CU_ASSERT_STRING_EQUAL(c->listen[1].host, "::1");
    CU_ASSERT_EQUAL(c->listen[1].port, 8443);
    CU_ASSERT_TRUE(c->listen[1].ipv6);
    CU_ASSERT_EQUAL(c->io_threads, 2);
    CU_ASSERT_EQUAL(c->hsm_sessions, 4);
    CU_ASSERT_EQUAL(c->hsm_dispatch, CFG_HSM_DISPATCH_POOL);
    char want[400];
    path_of(want, sizeof(want), "var/certmint.db");
    CU_ASSERT_STRING_EQUAL(c->store_path, want);
    CU_ASSERT_EQUAL(c->max_request_bytes, 131072);
    CU_ASSERT_EQUAL(c->min_pbm_iterations, 500);
    CU_ASSERT_EQUAL(c->max_pbm_iterations, 50000);
    CU_ASSERT_EQUAL(c->max_pbmac1_iterations, 20000);
    CU_ASSERT_EQUAL(c->message_time_window, 120);
    CU_ASSERT_EQUAL(c->confirm_wait_time, 60);
    CU_ASSERT_EQUAL(c->log_level, CM_LOG_DEBUG);
    CU_ASSERT_EQUAL(c->max_connections_per_peer, 32);
    CU_ASSERT_EQUAL_FATAL(c->num_admin_listen, 2);
    CU_ASSERT_STRING_EQUAL(c->admin_listen[0].host, "127.0.0.1");
    CU_ASSERT_EQUAL(c->admin_listen[0].port, 8081);
    CU_ASSERT_TRUE(!c->admin_listen[0].ipv6 && c->admin_listen[1].ipv6);
    CU_ASSERT_EQUAL(c->admin_listen[1].port, 8082);
    CU_ASSERT_EQUAL(c->admin_max_connections, 4);
    CU_ASSERT_EQUAL(c->store_min_free, 1ull << 30);

    CU_ASSERT_EQUAL_FATAL(c->num_cas, 2);
    const cfg_ca *dev = cfg_ca_find(c, "devices");
    const cfg_ca *srv = cfg_ca_find(c, "servers");
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    CU_ASSERT_PTR_NULL(cfg_ca_find(c, "nope"));
    CU_ASSERT_PTR_EQUAL(c->default_ca, dev);
    CU_ASSERT_STRING_EQUAL(dev->key_uri,
                           "pkcs11:token=certmint;object=devices-ca?pin-source=file:pin");
    CU_ASSERT_STRING_EQUAL(dev->cmp_key_uri, dev->key_uri);
    path_of(want, sizeof(want), "ca.pem");
    CU_ASSERT_STRING_EQUAL(dev->cert_path, want);
    CU_ASSERT_PTR_NULL(dev->chain_path);
    CU_ASSERT_TRUE(dev->ca_pubs && dev->unprotected_genm && !dev->sign_mac_responses);
    CU_ASSERT_TRUE(!srv->ca_pubs && !srv->unprotected_genm && srv->sign_mac_responses);
    size_t ca_len, ra_len;
    uint8_t *ca_der = pem_der("ca.pem", &ca_len);
    uint8_t *ra_der = pem_der("ra.pem", &ra_len);
    CU_ASSERT_TRUE(dev->cmp_cert_len == ca_len && memcmp(dev->cmp_cert, ca_der, ca_len) == 0);
    CU_ASSERT_TRUE(srv->cmp_cert_len == ra_len && memcmp(srv->cmp_cert, ra_der, ra_len) == 0);
    const cm_span cert = ca_authority_cert(dev->authority);
    CU_ASSERT_TRUE(cert.len == ca_len && memcmp(cert.p, ca_der, ca_len) == 0);
    CU_ASSERT_EQUAL(ca_authority_num_chain(srv->authority), 1);
    CU_ASSERT_STRING_EQUAL(srv->cmp_key_uri, "pkcs11:token=certmint;object=cmp");

    // The profile, shared by both CAs.
    CU_ASSERT_PTR_EQUAL(dev->profile, srv->profile);
    CU_ASSERT_STRING_EQUAL(dev->profile->name, "device");
    CU_ASSERT_FALSE(ca_profile_implicit_confirm(dev->profile->profile));
    CU_ASSERT_TRUE(ca_profile_extensions(dev->profile->profile).len > 20);

    // Clients: secrets (a trailing newline is not part of one), senderKIDs, anchors, RAs.
    const cfg_clients *cl = dev->clients;
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
    CU_ASSERT_PTR_NULL(srv->clients);
    CU_ASSERT_EQUAL(cl->num_secrets, 2);
    const cfg_secret *s7 = cfg_clients_find_secret(cl, CM_SPAN_LIT("line7"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s7);
    CU_ASSERT_TRUE(s7->secret_len == 12 && memcmp(s7->secret, "s3cret-line7", 12) == 0);
    const cfg_secret *s8 = cfg_clients_find_secret(cl, CM_SPAN_LIT("\x0a\x0b\x0c"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s8);
    CU_ASSERT_STRING_EQUAL(s8->ref, "line8");
    CU_ASSERT_TRUE(s8->secret_len == 14 && memcmp(s8->secret, "another secret", 14) == 0);
    CU_ASSERT_PTR_NULL(cfg_clients_find_secret(cl, CM_SPAN_LIT("line8")));
    CU_ASSERT_PTR_NOT_NULL(cl->trust);
    CU_ASSERT_EQUAL(cl->num_ra_certs, 2);
    CU_ASSERT_TRUE(cl->ra_cert_lens[0] == ra_len && memcmp(cl->ra_certs[0], ra_der, ra_len) == 0);
    OPENSSL_free(ca_der);
    OPENSSL_free(ra_der);
    cfg_free(c);
}

static void test_cfg_defaults(void)
{
    static const char text[] = "[certmintd]\nlisten = 0.0.0.0:80\nstore = sqlite:/var/x.db\n"
                               "[ca:only]\nkey = pkcs11:object=k\ncert = ca.pem\nprofile = p\n"
                               "[profile:p]\n";
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, sizeof(text) - 1));
    cfg_config *c = NULL;
    char err[512] = "";
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_STRING_EQUAL(c->store_path, "/var/x.db");
    CU_ASSERT_TRUE(c->io_threads >= 1);
    CU_ASSERT_EQUAL(c->hsm_sessions, c->io_threads);
    CU_ASSERT_EQUAL(c->hsm_dispatch, CFG_HSM_DISPATCH_AUTO);
    CU_ASSERT_EQUAL(c->max_request_bytes, 256 * 1024);
    CU_ASSERT_EQUAL(c->min_pbm_iterations, 100);
    CU_ASSERT_EQUAL(c->max_pbm_iterations, 10000);
    CU_ASSERT_EQUAL(c->max_pbmac1_iterations, 2500);
    CU_ASSERT_EQUAL(c->message_time_window, 300);
    CU_ASSERT_EQUAL(c->log_level, CM_LOG_INFO);
    CU_ASSERT_EQUAL(c->max_connections_per_peer, 256);
    CU_ASSERT_EQUAL(c->num_admin_listen, 0);
    CU_ASSERT_EQUAL(c->admin_max_connections, 16);
    CU_ASSERT_EQUAL(c->store_min_free, 256ull << 20);
    CU_ASSERT_EQUAL(c->max_nested_depth, 2);
    CU_ASSERT_EQUAL(c->max_nested_messages, 256);
    CU_ASSERT_EQUAL(c->nested_threads, c->io_threads);
    // Issue 23's abuse limits.
    CU_ASSERT_TRUE(c->kdf_threads >= 1);
    CU_ASSERT_EQUAL(c->kdf_max_queue, 1024);
    CU_ASSERT_EQUAL(c->mac_failures_max, 10);
    CU_ASSERT_EQUAL(c->mac_failure_window, 60);
    CU_ASSERT_EQUAL(c->mac_failure_backoff, 60);
    CU_ASSERT_EQUAL(c->error_signatures_per_peer, 10);
    CU_ASSERT_EQUAL(c->retransmit_window, -1); // auto
    CU_ASSERT_EQUAL(c->retransmit_cache_entries, 65536);
    CU_ASSERT_EQUAL(c->retransmit_cache_bytes, 64ull << 20);
    CU_ASSERT_PTR_EQUAL(c->default_ca, &c->cas[0]); // the only CA
    CU_ASSERT_TRUE(ca_profile_implicit_confirm(c->cas[0].profile->profile));
    CU_ASSERT_EQUAL(ca_profile_extensions(c->cas[0].profile->profile).len, 0);
    CU_ASSERT_FALSE(c->cas[0].ca_pubs);
    cfg_free(c);
}

// policy_ku runs the policy check of |profile| on a new P-256 key asking for keyUsage |ku|.
static cm_result policy_ku(const cfg_config *c, const ca_profile *profile, const char *ku,
                           ca_decision *d)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char *spki = NULL;
    const int spki_len = key != NULL ? i2d_PUBKEY(key, &spki) : -1;
    X509_EXTENSION *x = X509V3_EXT_conf_nid(NULL, NULL, NID_key_usage, ku);
    CU_ASSERT_FATAL(spki_len > 0 && x != NULL);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(x);
    static const uint8_t k_name[] = {0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06,
                                     0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, 'x'};
    const ca_ext ext = {CM_SPAN_LIT("\x55\x1d\x0f"), true,
                        cm_span_make(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v))};
    const ca_request req = {.subject = cm_span_make(k_name, sizeof(k_name)),
                            .spki = cm_span_make(spki, (size_t)spki_len),
                            .exts = &ext,
                            .num_exts = 1};
    const cm_result r = ca_policy_check(profile, c->cas[0].authority, d, &req, cm_time_now(), NULL);
    X509_EXTENSION_free(x);
    OPENSSL_free(spki);
    EVP_PKEY_free(key);
    return r;
}

static void test_cfg_profile_requested_extensions(void)
{
    // key_usage_allowed widens what a request may ask for; requested_extensions = replace
    // turns a refusal into the profile's own keyUsage.
    static const char text[] =
        "[certmintd]\nlisten = 0.0.0.0:80\nstore = sqlite:/var/x.db\n"
        "[ca:only]\nkey = pkcs11:object=k\ncert = ca.pem\nprofile = p\n"
        "[profile:p]\nextensions = p_ext\nkey_usage_allowed = digitalSignature, keyAgreement\n"
        "eku_allowed = clientAuth, 1.3.6.1.5.5.7.3.28, none\n"
        "[profile:q]\nextensions = p_ext\nrequested_extensions = replace\n"
        "[p_ext]\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n";
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, sizeof(text) - 1));
    cfg_config *c = NULL;
    char err[512] = "";
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_FATAL(c->num_profiles == 2);
    const ca_profile *p = NULL, *q = NULL;
    for (size_t i = 0; i < c->num_profiles; i++) {
        if (strcmp(c->profiles[i].name, "p") == 0) {
            p = c->profiles[i].profile;
        } else {
            q = c->profiles[i].profile;
        }
    }
    CU_ASSERT_FATAL(p != NULL && q != NULL);
    ca_decision d;
    TEST_ASSERT_OK(policy_ku(c, p, "keyAgreement", &d));
    CU_ASSERT_TRUE(d.key_usage.len > 0);
    TEST_ASSERT_CODE(policy_ku(c, p, "keyCertSign", &d), CA_E_KEY_USAGE);
    TEST_ASSERT_CODE(policy_ku(c, q, "keyAgreement", &d), CM_OK); // replaced, not refused
    CU_ASSERT_EQUAL(d.mods, CA_MOD_KEY_USAGE);
    CU_ASSERT_EQUAL(d.key_usage.len, 0);
    cfg_free(c);
}

typedef struct cfg_case {
    const char *append; // appended to k_base (NCONF reopens sections, the last value wins)
    uint32_t code;
    const char *msg; // expected after "PATH: "
} cfg_case;

static const cfg_case k_bad[] = {
    // [certmintd]
    {"[certmintd]\nio_threads = abc\n", CFG_E_VALUE,
     "[certmintd] io_threads: 'abc' is not a number"},
    {"[certmintd]\nio_threads = 0\n", CFG_E_VALUE,
     "[certmintd] io_threads: '0' is out of range 1..256"},
    {"[certmintd]\nhsm_sessions = 5000\n", CFG_E_VALUE,
     "[certmintd] hsm_sessions: '5000' is out of range"},
    {"[certmintd]\nhsm_dispatch = threads\n", CFG_E_VALUE,
     "[certmintd] hsm_dispatch: 'threads' is not auto, inline or pool"},
    {"[certmintd]\nlisten = 127.0.0.1\n", CFG_E_VALUE,
     "[certmintd] listen: '127.0.0.1' is not host:port"},
    {"[certmintd]\nlisten = [::1:80\n", CFG_E_VALUE,
     "[certmintd] listen: '[::1:80' is not [IPv6]:port"},
    {"[certmintd]\nlisten = ::1:80\n", CFG_E_VALUE,
     "[certmintd] listen: '::1:80' is not host:port"},
    {"[certmintd]\nlisten = 999.1.1.1:80\n", CFG_E_VALUE,
     "[certmintd] listen: '999.1.1.1' is not a numeric IPv4 address"},
    {"[certmintd]\nlisten = localhost:80\n", CFG_E_VALUE,
     "[certmintd] listen: 'localhost' is not a numeric IPv4"},
    {"[certmintd]\nlisten = 127.0.0.1:80, [::1]:70000\n", CFG_E_VALUE,
     "[certmintd] listen: '70000' is out of range 1..65535"},
    {"[certmintd]\nstore = mysql:x\n", CFG_E_VALUE,
     "[certmintd] store: 'mysql:x' is not sqlite:PATH nor postgresql://"},
    {"[certmintd]\nstore = postgresql:\n", CFG_E_VALUE,
     "[certmintd] store: 'postgresql:' is not sqlite:PATH"},
    // A password never goes into the configuration (nor into its messages).
    {"[certmintd]\nstore = postgresql://certmint:pw-in-url@db/certmint\n", CFG_E_VALUE,
     "[certmintd] store: the connection string holds a password: put it in a password file"},
    {"[certmintd]\nstore = postgres://u@db/x?sslmode=require&password=pw-in-url\n", CFG_E_VALUE,
     "[certmintd] store: the connection string holds a password"},
    {"[certmintd]\nstore = postgresql:host=/tmp dbname=x password = pw-in-url\n", CFG_E_VALUE,
     "[certmintd] store: the connection string holds a password"},
    {"[certmintd]\nstore = postgresql:host=/tmp x pw-in-url\n", CFG_E_VALUE,
     "[certmintd] store: the postgresql: value is not libpq KEY=VALUE pairs"},
    {"[certmintd]\nstore_passfile = pgpass\n", CFG_E_VALUE,
     "[certmintd] store_passfile: only a PostgreSQL store takes a password file"},
    {"[certmintd]\nmax_request_bytes = 10\n", CFG_E_VALUE,
     "[certmintd] max_request_bytes: '10' is out of range"},
    {"[certmintd]\nmin_pbm_iterations = 60000\n", CFG_E_VALUE,
     "[certmintd] min_pbm_iterations: 60000 is above max_pbm_iterations 50000"},
    {"[certmintd]\nmax_pbm_iterations = x1\n", CFG_E_VALUE,
     "[certmintd] max_pbm_iterations: 'x1' is not a number"},
    {"[certmintd]\nmax_pbmac1_iterations = -5\n", CFG_E_VALUE,
     "[certmintd] max_pbmac1_iterations: '-5' is not a number"},
    {"[certmintd]\nmessage_time_window = 1e3\n", CFG_E_VALUE,
     "[certmintd] message_time_window: '1e3' is not a number"},
    {"[certmintd]\nconfirm_wait_time = 0\n", CFG_E_VALUE,
     "[certmintd] confirm_wait_time: '0' is out of range"},
    {"[certmintd]\nlog_level = verbose\n", CFG_E_VALUE,
     "[certmintd] log_level: 'verbose' is not error, warn, info or debug"},
    {"[certmintd]\ndefault_ca = nope\n", CFG_E_REFERENCE,
     "[certmintd] default_ca: no [ca:nope] section"},
    {"[certmintd]\nlistne = 127.0.0.1:80\n", CFG_E_UNKNOWN_KEY, "[certmintd] listne: unknown key"},
    {"[certmintd]\nmax_connections_per_peer = 0\n", CFG_E_VALUE,
     "[certmintd] max_connections_per_peer: '0' is out of range 1..1000000"},
    {"[certmintd]\nmax_connections_per_peer = unlimited\n", CFG_E_VALUE,
     "[certmintd] max_connections_per_peer: 'unlimited' is not a number"},
    {"[certmintd]\nadmin_listen = 127.0.0.1\n", CFG_E_VALUE,
     "[certmintd] admin_listen: '127.0.0.1' is not host:port"},
    {"[certmintd]\nadmin_listen = [::1]:99999\n", CFG_E_VALUE,
     "[certmintd] admin_listen: '99999' is out of range 1..65535"},
    {"[certmintd]\nadmin_listen = 127.0.0.2:8080\n", CFG_E_VALUE,
     "[certmintd] admin_listen: port 8080 is also a listen port"},
    {"[certmintd]\nadmin_listen = 127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3, 127.0.0.1:4, "
     "127.0.0.1:5\n",
     CFG_E_VALUE, "[certmintd] admin_listen: more than 4 addresses"},
    {"[certmintd]\nlisten = 127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3, 127.0.0.1:4, 127.0.0.1:5\n"
     "admin_listen = 127.0.0.1:6, 127.0.0.1:7, 127.0.0.1:9, 127.0.0.1:10\n",
     CFG_E_VALUE, "[certmintd] admin_listen: 4 addresses together with listen's 5; at most 8"},
    {"[certmintd]\nadmin_max_connections = 0\n", CFG_E_VALUE,
     "[certmintd] admin_max_connections: '0' is out of range 1..1024"},
    {"[certmintd]\nkdf_threads = 0\n", CFG_E_VALUE,
     "[certmintd] kdf_threads: '0' is out of range 1..64"},
    {"[certmintd]\nkdf_max_queue = 0\n", CFG_E_VALUE,
     "[certmintd] kdf_max_queue: '0' is out of range 1..65536"},
    {"[certmintd]\nmac_failures_max = 0\n", CFG_E_VALUE,
     "[certmintd] mac_failures_max: '0' is out of range 1..1000000"},
    {"[certmintd]\nmac_failure_window = 0\n", CFG_E_VALUE,
     "[certmintd] mac_failure_window: '0' is out of range 1..86400"},
    {"[certmintd]\nmac_failure_backoff = forever\n", CFG_E_VALUE,
     "[certmintd] mac_failure_backoff: 'forever' is not a number"},
    {"[certmintd]\nerror_signatures_per_peer = -1\n", CFG_E_VALUE,
     "[certmintd] error_signatures_per_peer: '-1' is not a number"},
    {"[certmintd]\nretransmit_window = 86401\n", CFG_E_VALUE,
     "[certmintd] retransmit_window: '86401' is out of range 0..86400"},
    {"[certmintd]\nretransmit_cache_entries = 0\n", CFG_E_VALUE,
     "[certmintd] retransmit_cache_entries: '0' is out of range 1..16777216"},
    {"[certmintd]\nretransmit_cache_bytes = 1K\n", CFG_E_VALUE,
     "[certmintd] retransmit_cache_bytes: '1K' is below 64K"},
    {"[certmintd]\nstore_min_free = 12X\n", CFG_E_VALUE,
     "[certmintd] store_min_free: '12X' is not a size (bytes, or a number with K, M, G or T)"},
    {"[certmintd]\nstore_min_free = M\n", CFG_E_VALUE, "[certmintd] store_min_free: 'M' is not"},
    {"[certmintd]\nstore_min_free = -1\n", CFG_E_VALUE, "[certmintd] store_min_free: '-1' is not"},
    {"[certmintd]\nstore_min_free = 256MiBs\n", CFG_E_VALUE,
     "[certmintd] store_min_free: '256MiBs' is not"},
    {"[certmintd]\nstore_min_free = 99999999T\n", CFG_E_VALUE,
     "[certmintd] store_min_free: '99999999T' is too large"},
    {"[certmintd]\nstore_min_free = 99999999999999999999\n", CFG_E_VALUE,
     "[certmintd] store_min_free: '99999999999999999999' is too large"},
    // [ca:NAME]
    {"[certmintd]\nstore_sync = off\n", CFG_E_VALUE,
     "[certmintd] store_sync: 'off' is not full or normal"},
    {"[certmintd]\nmax_connections = 0\n", CFG_E_VALUE,
     "[certmintd] max_connections: '0' is out of range"},
    {"[certmintd]\nheader_timeout = 5000\n", CFG_E_VALUE,
     "[certmintd] header_timeout: '5000' is out of range"},
    {"[certmintd]\nidle_timeout = x\n", CFG_E_VALUE,
     "[certmintd] idle_timeout: 'x' is not a number"},
    {"[ca:devices]\ncrl_validity_days = 0\n", CFG_E_VALUE,
     "[ca:devices] crl_validity_days: '0' is out of range"},
    {"[ca:devices]\ncrl_min_interval = 99999999\n", CFG_E_VALUE,
     "[ca:devices] crl_min_interval: '99999999' is out of range"},
    {"[ca:devices]\nroot_new_with_old = ca.pem\n", CFG_E_MISSING,
     "[ca:devices] root_new_with_new: required with root_new_with_old"},
    {"[ca:devices]\nroot_new_with_new = missing.pem\n", CFG_E_FILE,
     "[ca:devices] root_new_with_new: "},
    {"[ca:devices]\nkey = /dev/token\n", CFG_E_VALUE,
     "[ca:devices] key: '/dev/token' is not a PKCS#11 URI"},
    {"[ca:devices]\ncmp_key = file:x\n", CFG_E_VALUE,
     "[ca:devices] cmp_key: 'file:x' is not a PKCS#11 URI"},
    {"[ca:devices]\ncmp_key = pkcs11:object=cmp\n", CFG_E_MISSING,
     "[ca:devices] cmp_cert: cmp_key and cmp_cert go together"},
    {"[ca:devices]\ncert = missing.pem\n", CFG_E_FILE, "[ca:devices] cert: "},
    {"[ca:devices]\ncert = ra.pem\n", CFG_E_FILE, "ra.pem: not a CA certificate"},
    {"[ca:devices]\nchain = missing.pem\n", CFG_E_FILE, "missing.pem: cannot open the chain file"},
    {"[ca:devices]\ncmp_key = pkcs11:object=c\ncmp_cert = empty.pem\n", CFG_E_FILE,
     "[ca:devices] cmp_cert: "},
    {"[ca:devices]\nprofile = nope\n", CFG_E_REFERENCE,
     "[ca:devices] profile: no [profile:nope] section"},
    {"[ca:devices]\nclients = nope\n", CFG_E_REFERENCE,
     "[ca:devices] clients: no [clients:nope] section"},
    {"[ca:devices]\ncaPubs = maybe\n", CFG_E_VALUE,
     "[ca:devices] caPubs: 'maybe' is not on or off"},
    {"[ca:devices]\nsign_mac_responses = 2\n", CFG_E_VALUE,
     "[ca:devices] sign_mac_responses: '2' is not on or off"},
    {"[ca:devices]\nunprotected_genm = \n", CFG_E_VALUE,
     "[ca:devices] unprotected_genm: '' is not on or off"},
    {"[ca:devices]\nprofil = device\n", CFG_E_UNKNOWN_KEY, "[ca:devices] profil: unknown key"},
    // [profile:NAME]
    {"[profile:device]\nvalidity_days = abc\n", CFG_E_VALUE,
     "[profile:device] validity_days: 'abc' is not a number"},
    {"[profile:device]\nmax_validity_days = 10\n", CFG_E_VALUE,
     "[profile:device] max_validity_days: 10 is below validity_days 365"},
    {"[profile:device]\nkey_types = P-256, DSA\n", CFG_E_VALUE,
     "[profile:device] key_types: 'DSA' is not one of"},
    {"[profile:device]\nrsa_min_bits = 512\n", CFG_E_VALUE,
     "[profile:device] rsa_min_bits: '512' is out of range"},
    {"[profile:device]\nrsa_max_bits = 1024\n", CFG_E_VALUE,
     "[profile:device] rsa_max_bits: 1024 is below rsa_min_bits 2048"},
    {"[profile:device]\nsubject_required = CN, bogusAttr\n", CFG_E_VALUE,
     "[profile:device] subject_required: 'bogusAttr' is not an attribute type"},
    {"[profile:device]\nsan_types = dns, x400\n", CFG_E_VALUE,
     "[profile:device] san_types: 'x400' is not one of"},
    {"[profile:device]\nimplicit_confirm = perhaps\n", CFG_E_VALUE,
     "[profile:device] implicit_confirm: 'perhaps' is not on or off"},
    {"[profile:device]\nkey_usage_allowed = digitalSignature, fly\n", CFG_E_VALUE,
     "[profile:device] key_usage_allowed: 'fly' is not a keyUsage bit"},
    {"[profile:device]\neku_allowed = clientAuth, notAPurpose\n", CFG_E_VALUE,
     "[profile:device] eku_allowed: 'notAPurpose' is not an extended key usage OpenSSL knows"},
    {"[profile:device]\nrequested_extensions = ignore\n", CFG_E_VALUE,
     "[profile:device] requested_extensions: 'ignore' is not refuse or replace"},
    {"[profile:device]\nextensions = nosuch\n", CFG_E_REFERENCE,
     "[profile:device] extensions: no section [nosuch]"},
    {"[device_ext]\nkeyUsage = critical, digitalSignatur\n", CFG_E_VALUE,
     "[profile:device] [device_ext] keyUsage: 'critical, digitalSignatur' is not a valid extension "
     "value"},
    {"[device_ext]\nsubjectKeyIdentifier = hash\n", CFG_E_VALUE,
     "[profile:device] [device_ext] subjectKeyIdentifier: not allowed"},
    {"[profile:device]\nvalidity = 30\n", CFG_E_UNKNOWN_KEY,
     "[profile:device] validity: unknown key"},
    // [clients:NAME]
    {"[clients:line]\nsecret.open = secrets/open.key\n", CFG_E_SECRET_MODE,
     "[clients:line] secret.open: "},
    {"[clients:line]\nsecret.gone = secrets/gone.key\n", CFG_E_FILE,
     "[clients:line] secret.gone: cannot open "},
    {"[clients:line]\nsecret.empty = secrets/empty.key\n", CFG_E_VALUE,
     "empty.key holds an empty secret"},
    {"[clients:line]\nsecret.dir = secrets\n", CFG_E_FILE, "secrets is not a regular file"},
    {"[clients:line]\nsenderKID.nosuch = x\n", CFG_E_REFERENCE,
     "[clients:line] senderKID.nosuch: there is no secret.nosuch"},
    {"[clients:line]\nsenderKID.line8 = hex:0g\n", CFG_E_VALUE,
     "[clients:line] senderKID.line8: 'hex:0g' is not valid hex"},
    {"[clients:line]\nsenderKID.line8 = hex:abc\n", CFG_E_VALUE,
     "[clients:line] senderKID.line8: 'hex:abc' is not a senderKID"},
    {"[clients:line]\nsenderKID.line8 = line7\n", CFG_E_VALUE,
     "[clients:line] secret.line7 and secret.line8 have the same senderKID"},
    {"[clients:line]\ntrust_anchors = missing.pem\n", CFG_E_FILE, "[clients:line] trust_anchors: "},
    {"[clients:line]\ntrust_anchors = empty.pem\n", CFG_E_FILE, "empty.pem: no PEM certificate"},
    {"[clients:line]\nra_certs = empty.pem\n", CFG_E_FILE, "[clients:line] ra_certs: "},
    {"[clients:line]\nra_certs = ra.pem,\n", CFG_E_VALUE,
     "[clients:line] ra_certs: empty file name"},
    {"[clients:line]\nsecrets = x\n", CFG_E_UNKNOWN_KEY, "[clients:line] secrets: unknown key"},
    // Sections
    {"[profil:x]\nvalidity_days = 1\n", CFG_E_UNKNOWN_KEY,
     "[profil:x]: unknown section kind 'profil'"},
    {"[broken\n", CFG_E_SYNTAX, "line "},
    {".include other.cnf\n", CFG_E_SYNTAX, ".include is not supported"},
};

static void expect_fail(const char *text, uint32_t code, const char *msg)
{
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    const cm_result r = cfg_load(&c, err, sizeof(err), g_conf);
    CU_ASSERT_PTR_NULL(c);
    // "PATH: " comes first, then the section, key and problem.
    const bool prefix = strncmp(err, g_conf, strlen(g_conf)) == 0 && err[strlen(g_conf)] == ':';
    const bool has = strstr(err, msg) != NULL;
    if (r.code != code || !prefix || !has) {
        fprintf(stderr, "\n  got %s \"%s\"\n  want %s \"...%s...\"\n", cm_result_name(r), err,
                cm_result_name(cm_result_make(code)), msg);
    }
    CU_ASSERT_EQUAL(r.code, code);
    CU_ASSERT_TRUE(prefix);
    CU_ASSERT_TRUE(has);
    // No secret ever appears in a message.
    CU_ASSERT_PTR_NULL(strstr(err, "s3cret"));
    CU_ASSERT_PTR_NULL(strstr(err, "pw-in-url"));
    CU_ASSERT_PTR_NULL(strstr(err, "another secret"));
    cfg_free(c);
}

static void test_cfg_rejects_bad_values(void)
{
    char text[sizeof(k_base) + 512];
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        (void)snprintf(text, sizeof(text), "%s\n%s", k_base, k_bad[i].append);
        expect_fail(text, k_bad[i].code, k_bad[i].msg);
    }
}

// test_cfg_load_store loads k_base with |extra| appended and returns the store URL it made
// (copied into |out|), or fails the test.
static void test_cfg_load_store(const char *extra, char *out, size_t cap, bool *out_sqlite)
{
    char text[sizeof(k_base) + 512];
    (void)snprintf(text, sizeof(text), "%s\n[certmintd]\n%s", k_base, extra);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    const cm_result r = cfg_load(&c, err, sizeof(err), g_conf);
    if (!cm_ok(r)) {
        fprintf(stderr, "\n  %s: %s\n", cm_result_name(r), err);
    }
    CU_ASSERT_FATAL(cm_ok(r));
    (void)snprintf(out, cap, "%s", c->store_url);
    *out_sqlite = c->store_path != NULL;
    cfg_free(c);
}

static void test_cfg_postgresql_store(void)
{
    char url[600];
    char want[600];
    bool sqlite = true;
    test_cfg_load_store("store = postgresql://certmint@/certmint?host=/run/postgresql\n", url,
                        sizeof(url), &sqlite);
    CU_ASSERT_STRING_EQUAL(url, "postgresql://certmint@/certmint?host=/run/postgresql");
    CU_ASSERT_FALSE(sqlite);
    test_cfg_load_store("store = postgres://db.example/certmint\n", url, sizeof(url), &sqlite);
    CU_ASSERT_STRING_EQUAL(url, "postgres://db.example/certmint");
    // A password file (relative to the configuration, 0600) joins the connection string.
    char pass[400];
    path_of(pass, sizeof(pass), "pg pass");
    CU_ASSERT_TRUE_FATAL(test_write_file(pass, "*:*:*:certmint:x\n", 18));
    CU_ASSERT_EQUAL_FATAL(chmod(pass, 0600), 0);
    test_cfg_load_store("store = postgresql://certmint@/certmint?host=/run/postgresql\n"
                        "store_passfile = pg pass\n",
                        url, sizeof(url), &sqlite);
    path_of(want, sizeof(want), "");
    char expect[700];
    (void)snprintf(expect, sizeof(expect),
                   "postgresql://certmint@/certmint?host=/run/postgresql&passfile=%spg%%20pass",
                   want);
    CU_ASSERT_STRING_EQUAL(url, expect);
    test_cfg_load_store("store_passfile = pg pass\nstore = postgres://db/certmint\n", url,
                        sizeof(url), &sqlite);
    (void)snprintf(expect, sizeof(expect), "postgres://db/certmint?passfile=%spg%%20pass", want);
    CU_ASSERT_STRING_EQUAL(url, expect);
    test_cfg_load_store("store = postgresql:host=/run/postgresql dbname=certmint\n"
                        "store_passfile = pg pass\n",
                        url, sizeof(url), &sqlite);
    (void)snprintf(expect, sizeof(expect),
                   "postgresql:host=/run/postgresql dbname=certmint passfile='%spg pass'", want);
    CU_ASSERT_STRING_EQUAL(url, expect);
    // sqlite: keeps its resolved path in the URL.
    test_cfg_load_store("store = sqlite:x.db\n", url, sizeof(url), &sqlite);
    path_of(want, sizeof(want), "x.db");
    (void)snprintf(expect, sizeof(expect), "sqlite:%s", want);
    CU_ASSERT_STRING_EQUAL(url, expect);
    CU_ASSERT_TRUE(sqlite);

    // A password file others may read, or none at all, is refused.
    char text[sizeof(k_base) + 512];
    CU_ASSERT_EQUAL_FATAL(chmod(pass, 0644), 0);
    (void)snprintf(text, sizeof(text),
                   "%s\n[certmintd]\nstore = postgres://db/certmint\nstore_passfile = pg pass\n",
                   k_base);
    expect_fail(text, CFG_E_VALUE, "store_passfile: ");
    expect_fail(text, CFG_E_VALUE, "pg pass is readable by group or others (chmod 600 it)");
    (void)remove(pass);
    expect_fail(text, CFG_E_FILE, "store_passfile: cannot read");
}

static void test_cfg_sizes_and_no_peer_cap(void)
{
    static const struct {
        const char *v;
        uint64_t want;
    } k_sizes[] = {{"0", 0},
                   {"268435456", 268435456},
                   {"256m", 256ull << 20},
                   {"2GiB", 2ull << 30},
                   {"512KB", 512ull << 10},
                   {"1T", 1ull << 40}};
    char text[sizeof(k_base) + 256];
    for (size_t i = 0; i < sizeof(k_sizes) / sizeof(k_sizes[0]); i++) {
        const int n = snprintf(text, sizeof(text),
                               "%s[certmintd]\nstore_min_free = %s\n"
                               "max_connections_per_peer = none\n",
                               k_base, k_sizes[i].v);
        CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, (size_t)n));
        cfg_config *c = NULL;
        char err[512] = "";
        TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
        CU_ASSERT_EQUAL(c->store_min_free, k_sizes[i].want);
        CU_ASSERT_EQUAL(c->max_connections_per_peer, UINT32_MAX);
        cfg_free(c);
    }
}

// The abuse limits (issue 23): numbers, none (no back-off, no error-signature cap), a fixed or
// an off retransmit_window, sizes.
static void test_cfg_abuse_limits(void)
{
    static const char k_set[] = "[certmintd]\nkdf_threads = 3\nkdf_max_queue = 7\n"
                                "mac_failures_max = 4\nmac_failure_window = 30\n"
                                "mac_failure_backoff = 600\nerror_signatures_per_peer = 2\n"
                                "retransmit_window = 120\nretransmit_cache_entries = 100\n"
                                "retransmit_cache_bytes = 1M\n";
    static const char k_off[] = "[certmintd]\nmac_failures_max = none\n"
                                "error_signatures_per_peer = none\nretransmit_window = 0\n";
    char text[sizeof(k_base) + 512];
    int n = snprintf(text, sizeof(text), "%s%s", k_base, k_set);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, (size_t)n));
    cfg_config *c = NULL;
    char err[512] = "";
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_EQUAL(c->kdf_threads, 3);
    CU_ASSERT_EQUAL(c->kdf_max_queue, 7);
    CU_ASSERT_EQUAL(c->mac_failures_max, 4);
    CU_ASSERT_EQUAL(c->mac_failure_window, 30);
    CU_ASSERT_EQUAL(c->mac_failure_backoff, 600);
    CU_ASSERT_EQUAL(c->error_signatures_per_peer, 2);
    CU_ASSERT_EQUAL(c->retransmit_window, 120);
    CU_ASSERT_EQUAL(c->retransmit_cache_entries, 100);
    CU_ASSERT_EQUAL(c->retransmit_cache_bytes, 1ull << 20);
    cfg_free(c);
    n = snprintf(text, sizeof(text), "%s%s", k_base, k_off);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, (size_t)n));
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_EQUAL(c->mac_failures_max, 0);
    CU_ASSERT_EQUAL(c->error_signatures_per_peer, 0);
    CU_ASSERT_EQUAL(c->retransmit_window, 0);
    cfg_free(c);
}

static void test_cfg_secret_mode_names_file_and_mode(void)
{
    char text[sizeof(k_base) + 128];
    (void)snprintf(text, sizeof(text), "%s\n[clients:line]\nsecret.open = secrets/open.key\n",
                   k_base);
    char want[400];
    path_of(want, sizeof(want), "secrets/open.key");
    strncat(want, " has mode 0644", sizeof(want) - strlen(want) - 1);
    expect_fail(text, CFG_E_SECRET_MODE, want);
    // 0640 is refused too (group readable); 0400 is fine.
    char p[320];
    CU_ASSERT_EQUAL(chmod(path_of(p, sizeof(p), "secrets/open.key"), 0640), 0);
    expect_fail(text, CFG_E_SECRET_MODE, "has mode 0640");
    CU_ASSERT_EQUAL(chmod(p, 0400), 0);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_PTR_NOT_NULL(cfg_clients_find_secret(c->default_ca->clients, CM_SPAN_LIT("open")));
    cfg_free(c);
    CU_ASSERT_EQUAL(chmod(p, 0644), 0);
}

static void test_cfg_missing_sections_and_keys(void)
{
    static const char profile[] = "[profile:p]\n";
    static const char daemon[] = "[certmintd]\nlisten = 127.0.0.1:80\nstore = sqlite:x.db\n";
    static const char ca[] = "[ca:x]\nkey = pkcs11:object=k\ncert = ca.pem\nprofile = p\n";
    char text[1024];
    (void)snprintf(text, sizeof(text), "%s%s", ca, profile);
    expect_fail(text, CFG_E_MISSING, "no [certmintd] section");
    (void)snprintf(text, sizeof(text), "%s%s", daemon, profile);
    expect_fail(text, CFG_E_MISSING, "no [ca:NAME] section");
    (void)snprintf(text, sizeof(text), "%s%s[ca:x]\ncert = ca.pem\nprofile = p\n", daemon, profile);
    expect_fail(text, CFG_E_MISSING, "[ca:x] key: missing");
    (void)snprintf(text, sizeof(text), "%s%s[ca:x]\nkey = pkcs11:a\nprofile = p\n", daemon,
                   profile);
    expect_fail(text, CFG_E_MISSING, "[ca:x] cert: missing");
    (void)snprintf(text, sizeof(text), "%s%s[ca:x]\nkey = pkcs11:a\ncert = ca.pem\n", daemon,
                   profile);
    expect_fail(text, CFG_E_MISSING, "[ca:x] profile: missing");
    (void)snprintf(text, sizeof(text), "[certmintd]\nstore = sqlite:x.db\n%s%s", ca, profile);
    expect_fail(text, CFG_E_MISSING, "[certmintd] listen: missing");
    (void)snprintf(text, sizeof(text), "[certmintd]\nlisten = 127.0.0.1:80\n%s%s", ca, profile);
    expect_fail(text, CFG_E_MISSING, "[certmintd] store: missing");
    // The file itself.
    cfg_config *c = NULL;
    char err[512] = "", p[320];
    TEST_ASSERT_CODE(cfg_load(&c, err, sizeof(err), path_of(p, sizeof(p), "absent.cnf")),
                     CFG_E_FILE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "absent.cnf: cannot open"));
    CU_ASSERT_PTR_NULL(c);
}

// make_crl writes an (empty) CRL of the vendor CA to |name| with openssl ca -gencrl.
static bool make_crl(const char *name, int hours)
{
    char cnf[320], db[320], out[320], key[320], cert[320], log[320], hrs[16];
    path_of(cnf, sizeof(cnf), "crl-ca.cnf");
    path_of(db, sizeof(db), "crl-index.txt");
    path_of(out, sizeof(out), name);
    path_of(key, sizeof(key), "vendor.key");
    path_of(cert, sizeof(cert), "vendor.pem");
    path_of(log, sizeof(log), "openssl.log");
    char text[600];
    (void)snprintf(text, sizeof(text),
                   "[ca]\ndefault_ca = c\n[c]\ndatabase = %s\ndefault_md = sha256\n"
                   "default_crl_days = 1\n",
                   db);
    (void)snprintf(hrs, sizeof(hrs), "%d", hours);
    const char *argv[] = {"openssl", "ca", "-gencrl",   "-config", cnf,    "-keyfile", key,
                          "-cert",   cert, "-crlhours", hrs,       "-out", out,        NULL};
    return test_write_file(cnf, text, strlen(text)) && test_write_file(db, "", 0) &&
           test_run(argv, log) == 0;
}

static const char k_trust[] = "[profile:gw]\n"
                              "allow_key_reuse = on\n"
                              "revoke_on_update = yes\n"
                              "subject_from = request\n"
                              "[clients:line]\n"
                              "trust_crls = vendor.crl\n"
                              "ra_require_cmcra = off\n"
                              "profiles = device, gw\n"
                              "max_certs.line7 = 250\n"
                              "once.line8 = on\n"
                              "ra.line8 = on\n"
                              "subject_pattern.line7 = CN=line-7-*\n"
                              "key.lk = secrets/lk.key\n"
                              "max_certs.lk = 3\n"
                              "subject_pattern.lk = CN=k-*\n";

static void test_cfg_trust_settings(void)
{
    CU_ASSERT_TRUE_FATAL(make_crl("vendor.crl", 24));
    CU_ASSERT_TRUE_FATAL(write_text("secrets/lk.key", "00112233445566778899aabbccddeeff"
                                                      "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n"));
    char text[sizeof(k_base) + sizeof(k_trust) + 8];
    (void)snprintf(text, sizeof(text), "%s\n%s", k_base, k_trust);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    const cm_result r = cfg_load(&c, err, sizeof(err), g_conf);
    if (!cm_ok(r)) {
        fprintf(stderr, "\n  %s: %s\n", cm_result_name(r), err);
    }
    CU_ASSERT_FATAL(cm_ok(r));
    const cfg_clients *cl = cfg_ca_find(c, "devices")->clients;
    CU_ASSERT_FALSE(cl->ra_require_cmcra);
    CU_ASSERT_EQUAL(cl->num_crl_paths, 1);
    CU_ASSERT_EQUAL(ca_trust_num_crls(cl->trust), 1);
    CU_ASSERT_EQUAL_FATAL(cl->num_profiles, 2);
    CU_ASSERT_STRING_EQUAL(cl->profiles[0]->name, "device");
    CU_ASSERT_STRING_EQUAL(cl->profiles[1]->name, "gw");
    CU_ASSERT_FALSE(cl->profiles[0]->allow_key_reuse || cl->profiles[0]->revoke_on_update ||
                    cl->profiles[0]->subject_from_request);
    CU_ASSERT_TRUE(cl->profiles[1]->allow_key_reuse && cl->profiles[1]->revoke_on_update &&
                   cl->profiles[1]->subject_from_request);
    const cfg_secret *s7 = cfg_clients_find_secret(cl, CM_SPAN_LIT("line7"));
    const cfg_secret *s8 = cfg_clients_find_secret(cl, CM_SPAN_LIT("\x0a\x0b\x0c"));
    CU_ASSERT_TRUE_FATAL(s7 != NULL && s8 != NULL);
    CU_ASSERT_EQUAL(s7->max_certs, 250);
    CU_ASSERT_STRING_EQUAL(s7->subject_pattern, "CN=line-7-*");
    CU_ASSERT_EQUAL(s8->max_certs, 1);
    CU_ASSERT_PTR_NULL(s8->subject_pattern);
    CU_ASSERT_TRUE(s8->ra); // ra.line8 = on: may protect nested messages
    CU_ASSERT_FALSE(s7->ra);
    // The per-secret limits apply to a key.REF (key-based MACs) as to a secret.REF.
    const cfg_secret *lk = cfg_clients_find_secret(cl, CM_SPAN_LIT("lk"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(lk);
    CU_ASSERT_TRUE(lk->is_key);
    CU_ASSERT_EQUAL(lk->max_certs, 3);
    CU_ASSERT_STRING_EQUAL(lk->subject_pattern, "CN=k-*");

    // SIGHUP's reload: a broken file keeps the CRLs loaded, a new one replaces them.
    CU_ASSERT_TRUE_FATAL(write_text("vendor.crl", "not a CRL"));
    TEST_ASSERT_CODE(cfg_clients_reload_crls(cl, err, sizeof(err)), CA_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "[clients:line] trust_crls: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "vendor.crl: no CRL in the file"));
    CU_ASSERT_EQUAL(ca_trust_num_crls(cl->trust), 1);
    CU_ASSERT_TRUE_FATAL(make_crl("vendor.crl", 48));
    TEST_ASSERT_OK(cfg_clients_reload_crls(cl, err, sizeof(err)));
    CU_ASSERT_EQUAL(ca_trust_num_crls(cl->trust), 1);
    // A client group without trust_crls: nothing to do.
    TEST_ASSERT_OK(cfg_clients_reload_crls(&c->clients[0], err, sizeof(err)));
    cfg_free(c);

    // Defaults: the RA EKU is required, profiles keep keys unique, bind the subject, revoke
    // nothing on update; secrets have no limit and no pattern.
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, k_base, sizeof(k_base) - 1));
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    cl = cfg_ca_find(c, "devices")->clients;
    CU_ASSERT_TRUE(cl->ra_require_cmcra);
    CU_ASSERT_EQUAL(cl->num_profiles, 0);
    CU_ASSERT_EQUAL(cl->num_crl_paths, 0);
    const cfg_profile *p = cfg_ca_find(c, "devices")->profile;
    CU_ASSERT_FALSE(p->allow_key_reuse || p->revoke_on_update || p->subject_from_request);
    CU_ASSERT_EQUAL(cfg_clients_find_secret(cl, CM_SPAN_LIT("line7"))->max_certs, 0);
    cfg_free(c);
}

static const cfg_case k_bad_trust[] = {
    {"[clients:line]\nmax_certs.nope = 3\n", CFG_E_REFERENCE,
     "[clients:line] max_certs.nope: there is no secret.nope or key.nope"},
    {"[clients:line]\nmax_certs.line7 = 0\n", CFG_E_VALUE,
     "[clients:line] max_certs.line7: '0' is out of range"},
    {"[clients:line]\nonce.line7 = on\nmax_certs.line7 = 5\n", CFG_E_VALUE,
     "[clients:line] max_certs.line7: 5 contradicts once.line7 = on"},
    {"[clients:line]\nmax_certs.line7 = 5\nonce.line7 = on\n", CFG_E_VALUE,
     "[clients:line] once.line7: contradicts max_certs.line7 = 5"},
    {"[clients:line]\nonce.line7 = sometimes\n", CFG_E_VALUE,
     "[clients:line] once.line7: 'sometimes' is not on or off"},
    {"[clients:line]\nonce.x = on\n", CFG_E_REFERENCE,
     "[clients:line] once.x: there is no secret.x"},
    {"[clients:line]\nra.line7 = maybe\n", CFG_E_VALUE,
     "[clients:line] ra.line7: 'maybe' is not on or off"},
    {"[clients:line]\nra.x = on\n", CFG_E_REFERENCE, "[clients:line] ra.x: there is no secret.x"},
    {"[certmintd]\nmax_nested_depth = 5\n", CFG_E_VALUE,
     "[certmintd] max_nested_depth: '5' is out of range"},
    {"[certmintd]\nmax_nested_messages = 0\n", CFG_E_VALUE,
     "[certmintd] max_nested_messages: '0' is out of range"},
    {"[certmintd]\nnested_threads = 257\n", CFG_E_VALUE,
     "[certmintd] nested_threads: '257' is out of range"},
    {"[clients:line]\nsubject_pattern.x = CN=*\n", CFG_E_REFERENCE,
     "[clients:line] subject_pattern.x: there is no secret.x"},
    {"[clients:line]\ntrust_crls = missing.crl\n", CFG_E_FILE, "[clients:line] trust_crls: "},
    {"[clients:line]\ntrust_crls = vendor.pem\n", CFG_E_FILE, "vendor.pem: no CRL in the file"},
    {"[clients:other]\ntrust_crls = vendor.crl\n", CFG_E_MISSING,
     "[clients:other] trust_crls: CRLs of trust anchors need trust_anchors"},
    {"[clients:line]\nprofiles = device, nope\n", CFG_E_REFERENCE,
     "[clients:line] profiles: no [profile:nope] section"},
    {"[clients:line]\nprofiles = device, device\n", CFG_E_VALUE,
     "[clients:line] profiles: 'device' is listed twice"},
    {"[clients:line]\nra_require_cmcra = 7\n", CFG_E_VALUE,
     "[clients:line] ra_require_cmcra: '7' is not on or off"},
    {"[profile:device]\nsubject_from = anyone\n", CFG_E_VALUE,
     "[profile:device] subject_from: 'anyone' is not signer or request"},
    {"[profile:device]\nallow_key_reuse = 2\n", CFG_E_VALUE,
     "[profile:device] allow_key_reuse: '2' is not on or off"},
    {"[profile:device]\nrevoke_on_update = x\n", CFG_E_VALUE,
     "[profile:device] revoke_on_update: 'x' is not on or off"},
};

static void test_cfg_rejects_bad_trust_settings(void)
{
    CU_ASSERT_TRUE_FATAL(make_crl("vendor.crl", 24));
    char text[sizeof(k_base) + 512];
    for (size_t i = 0; i < sizeof(k_bad_trust) / sizeof(k_bad_trust[0]); i++) {
        (void)snprintf(text, sizeof(text), "%s\n%s", k_base, k_bad_trust[i].append);
        expect_fail(text, k_bad_trust[i].code, k_bad_trust[i].msg);
    }
    // A pattern longer than CA_MAX_PATTERN.
    char big[CA_MAX_PATTERN + 64];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char app[sizeof(big) + 64];
    (void)snprintf(app, sizeof(app), "[clients:line]\nsubject_pattern.line7 = %s\n", big);
    (void)snprintf(text, sizeof(text), "%s\n%s", k_base, app);
    expect_fail(text, CFG_E_VALUE, "[clients:line] subject_pattern.line7: ");
}

// Delayed delivery, approval and cross-certification (issue 16): the settings, their defaults
// and the refusals.
static const char k_pending[] = "[certmintd]\n"
                                "waiting_timeout = 3600\n"
                                "max_hsm_queue = 300\n"
                                "max_commit_latency = 50\n"
                                "max_pending = 77\n"
                                "approval_check_after = 2\n"
                                "[profile:device]\n"
                                "approval = manual\n"
                                "[profile:cross]\n"
                                "ca = on\n"
                                "path_len = 0\n"
                                "name_constraints = permitted;DNS:.example.com\n"
                                "[clients:line]\n"
                                "cross_requesters = vendor.pem\n"
                                "cross_profile = cross\n";

static void test_cfg_pending_settings(void)
{
    char text[sizeof(k_base) + sizeof(k_pending) + 8];
    (void)snprintf(text, sizeof(text), "%s\n%s", k_base, k_pending);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    const cm_result r = cfg_load(&c, err, sizeof(err), g_conf);
    if (!cm_ok(r)) {
        fprintf(stderr, "\n  %s: %s\n", cm_result_name(r), err);
    }
    CU_ASSERT_FATAL(cm_ok(r));
    CU_ASSERT_EQUAL(c->waiting_timeout, 3600);
    CU_ASSERT_EQUAL(c->max_hsm_queue, 300);
    CU_ASSERT_EQUAL(c->max_commit_latency, 50);
    CU_ASSERT_EQUAL(c->max_pending, 77);
    CU_ASSERT_EQUAL(c->approval_check_after, 2);
    const cfg_clients *cl = cfg_ca_find(c, "devices")->clients;
    CU_ASSERT_EQUAL(cl->num_cross_certs, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl->cross_profile);
    CU_ASSERT_STRING_EQUAL(cl->cross_profile->name, "cross");
    // A CA profile needs an operator's approval by default; the device profile asked for it.
    CU_ASSERT_TRUE(cl->cross_profile->approval_manual);
    CU_ASSERT_TRUE(cl->cross_profile->is_ca);
    CU_ASSERT_TRUE(ca_profile_is_ca(cl->cross_profile->profile));
    uint32_t n = 9;
    CU_ASSERT_TRUE(ca_profile_path_len(cl->cross_profile->profile, &n));
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_TRUE(cfg_ca_find(c, "devices")->profile->approval_manual);
    cfg_free(c);
    // The defaults: a day of waiting, the HSM bound measured, 250 ms, 10000, 60 s; no approval.
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, k_base, sizeof(k_base) - 1));
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_EQUAL(c->waiting_timeout, 86400);
    CU_ASSERT_EQUAL(c->max_hsm_queue, 0);
    CU_ASSERT_EQUAL(c->max_commit_latency, 250);
    CU_ASSERT_EQUAL(c->max_pending, 10000);
    CU_ASSERT_EQUAL(c->approval_check_after, 60);
    CU_ASSERT_FALSE(cfg_ca_find(c, "devices")->profile->approval_manual);
    CU_ASSERT_EQUAL(cfg_ca_find(c, "devices")->clients->num_cross_certs, 0);
    cfg_free(c);
    static const cfg_case k_bad_pending[] = {
        {"[certmintd]\nmax_hsm_queue = soon\n", CFG_E_VALUE,
         "[certmintd] max_hsm_queue: 'soon' is not a number"},
        {"[certmintd]\nwaiting_timeout = 1\n", CFG_E_VALUE,
         "[certmintd] waiting_timeout: '1' is out of range"},
        {"[profile:device]\napproval = maybe\n", CFG_E_VALUE,
         "[profile:device] approval: 'maybe' is not auto or manual"},
        {"[profile:device]\npath_len = 1\n", CFG_E_VALUE, "path_len needs ca = on"},
        {"[profile:x]\nca = on\nextensions = device_ext\n", CFG_E_VALUE,
         "ca = on writes basicConstraints"},
        {"[profile:x]\nca = on\nname_constraints = permitted;bogus:x\n", CFG_E_VALUE,
         "name_constraints"},
        {"[clients:line]\ncross_requesters = vendor.pem\n", CFG_E_MISSING,
         "[clients:line] cross_profile: cross_requesters needs a cross_profile"},
        {"[clients:line]\ncross_requesters = vendor.pem\ncross_profile = device\n", CFG_E_VALUE,
         "[clients:line] cross_profile: [profile:device] issues end-entity certificates"},
        {"[clients:line]\ncross_profile = nope\n", CFG_E_REFERENCE,
         "[clients:line] cross_profile: no [profile:nope] section"},
        {"[clients:line]\ncross_requesters = missing.pem\n", CFG_E_FILE,
         "[clients:line] cross_requesters: "},
    };
    char bad[sizeof(k_base) + 512];
    for (size_t i = 0; i < sizeof(k_bad_pending) / sizeof(k_bad_pending[0]); i++) {
        (void)snprintf(bad, sizeof(bad), "%s\n%s", k_base, k_bad_pending[i].append);
        expect_fail(bad, k_bad_pending[i].code, k_bad_pending[i].msg);
    }
}

// Issue 19: the central key generation keys and the key types that prove possession without a
// signature (engine/server/srv_ckg.c reads them through srv_policy and the ca_profile).
static void test_cfg_central_keygen(void)
{
    static const char k_ckg[] = "[profile:gw]\n"
                                "key_types = P-256, P-384, RSA\n"
                                "central_keygen = required\n"
                                "central_key_types = P-384, RSA\n"
                                "central_keygen_min_secret = 24\n"
                                "central_keygen_kdf_iterations = 20000\n"
                                "encryption_key_types = RSA\n"
                                "kem_key_types = P-256, X25519\n"
                                "[clients:line]\n"
                                "profiles = gw\n";
    char text[sizeof(k_base) + sizeof(k_ckg) + 8];
    (void)snprintf(text, sizeof(text), "%s\n%s", k_base, k_ckg);
    CU_ASSERT_TRUE_FATAL(make_crl("vendor.crl", 24));
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    const cm_result r = cfg_load(&c, err, sizeof(err), g_conf);
    if (!cm_ok(r)) {
        fprintf(stderr, "\n  %s: %s\n", cm_result_name(r), err);
    }
    CU_ASSERT_FATAL(cm_ok(r));
    const cfg_clients *cl = cfg_ca_find(c, "devices")->clients;
    CU_ASSERT_EQUAL_FATAL(cl->num_profiles, 1);
    const cfg_profile *gw = cl->profiles[0];
    CU_ASSERT_EQUAL(gw->central_keygen, CFG_CKG_REQUIRED);
    CU_ASSERT_EQUAL(gw->central_key_types, CA_KEY_EC_P384 | CA_KEY_RSA);
    CU_ASSERT_EQUAL(gw->central_keygen_min_secret, 24);
    CU_ASSERT_EQUAL(gw->central_keygen_kdf_iterations, 20000);
    CU_ASSERT_EQUAL(ca_profile_key_use_types(gw->profile, CA_KEY_USE_ENCIPHER), CA_KEY_RSA);
    CU_ASSERT_EQUAL(ca_profile_key_use_types(gw->profile, CA_KEY_USE_AGREE),
                    CA_KEY_EC_P256 | CA_KEY_X25519);
    // Defaults: off, every key type of the profile, none that proves possession otherwise.
    const cfg_profile *dev = cfg_ca_find(c, "devices")->profile;
    CU_ASSERT_EQUAL(dev->central_keygen, CFG_CKG_OFF);
    CU_ASSERT_EQUAL(dev->central_key_types, CA_KEY_EC_P256 | CA_KEY_RSA | CA_KEY_ED25519);
    CU_ASSERT_EQUAL(dev->central_keygen_min_secret, 0);
    CU_ASSERT_EQUAL(dev->central_keygen_kdf_iterations, 0);
    CU_ASSERT_EQUAL(ca_profile_key_use_types(dev->profile, CA_KEY_USE_ENCIPHER), 0);
    CU_ASSERT_EQUAL(ca_profile_key_use_types(dev->profile, CA_KEY_USE_AGREE), 0);
    cfg_free(c);

    static const cfg_case k_ckg_bad[] = {
        {"[profile:device]\ncentral_keygen = sometimes\n", CFG_E_VALUE,
         "[profile:device] central_keygen: 'sometimes' is not off, allowed or required"},
        {"[profile:device]\ncentral_key_types = P-521\n", CFG_E_VALUE,
         "[profile:device] central_key_types: lists a key type that is not in key_types (or "
         "cannot sign)"},
        {"[profile:device]\ncentral_keygen = allowed\ncentral_key_types = none\n", CFG_E_VALUE,
         "[profile:device] central_key_types: central_keygen = allowed needs a key type to "
         "generate"},
        {"[profile:device]\ncentral_key_types = P-256, Curve9\n", CFG_E_VALUE,
         "[profile:device] central_key_types: 'Curve9' is not one of P-256, P-384, P-521, RSA, "
         "Ed25519, Ed448, X25519, X448"},
        {"[profile:device]\ncentral_keygen_min_secret = 4\n", CFG_E_VALUE,
         "[profile:device] central_keygen_min_secret: '4' is out of range"},
        {"[profile:device]\ncentral_keygen_kdf_iterations = 10\n", CFG_E_VALUE,
         "[profile:device] central_keygen_kdf_iterations: '10' is out of range"},
        {"[profile:device]\nkem_key_types = RSA\n", CFG_E_VALUE, "kem_key_types: only P-256"},
        {"[profile:device]\nencryption_key_types = X25519\n", CFG_E_VALUE,
         "encryption_key_types: only RSA keys transport keys"},
        {"[profile:device]\nkey_types = X25519\n", CFG_E_VALUE,
         "X25519 and X448 keys cannot sign: list them in kem_key_types"},
        {"[profile:device]\nkey_types = none\n", CFG_E_VALUE, "[profile:device] key_types: "},
    };
    char bad[sizeof(k_base) + 512];
    for (size_t i = 0; i < sizeof(k_ckg_bad) / sizeof(k_ckg_bad[0]); i++) {
        (void)snprintf(bad, sizeof(bad), "%s\n%s", k_base, k_ckg_bad[i].append);
        expect_fail(bad, k_ckg_bad[i].code, k_ckg_bad[i].msg);
    }
}

static void test_ca_subject_match(void)
{
    static const struct {
        const char *pattern, *subject;
        bool match;
    } k_cases[] = {
        {"CN=line-7-*", "CN=line-7-0042", true},
        {"CN=line-7-*", "CN=line-7-", true},
        {"CN=line-7-*", "CN=line-8-0042", false},
        {"CN=line-7-*", "cn=line-7-0042", false}, // case-sensitive
        // '*' stays inside one attribute value: no further RDN, no multi-valued RDN.
        {"CN=line-7-*", "CN=line-7-1,O=Evil", false},
        {"CN=line-7-*", "CN=line-7-1+serialNumber=9", false},
        {"CN=line-7-*,O=Acme", "CN=line-7-1,O=Acme", true},
        {"CN=line-7-*,O=Acme", "CN=line-7-1,O=Acme,C=DE", false},
        {"CN=*,O=Acme", "CN=a,b,O=Acme", false},
        // An escaped comma is part of a value (RFC 4514 §2.4), so '*' may cover it.
        {"CN=*", "CN=a\\,b", true},
        {"CN=dev-??", "CN=dev-42", true},
        {"CN=dev-??", "CN=dev-4", false},
        {"CN=dev-??", "CN=dev-4,", false},
        {"CN=\\*", "CN=*", true},
        {"CN=\\*", "CN=x", false},
        {"*", "CN=x", true},
        {"*", "CN=x,O=y", false},
        {"CN=a*b*c", "CN=aXbYc", true},
        {"CN=a*b*c", "CN=aXbY", false},
        {"CN=x", "CN=x", true},
        {"CN=x", "CN=xy", false},
        {"CN=x", "", false},
    };
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        const bool got = ca_subject_match(k_cases[i].pattern, k_cases[i].subject);
        if (got != k_cases[i].match) {
            fprintf(stderr, "\n  '%s' vs '%s': %d\n", k_cases[i].pattern, k_cases[i].subject, got);
        }
        CU_ASSERT_EQUAL(got, k_cases[i].match);
    }
    CU_ASSERT_TRUE(ca_subject_pattern_valid("CN=x\\*"));
    CU_ASSERT_FALSE(ca_subject_pattern_valid("CN=x\\"));
    CU_ASSERT_FALSE(ca_subject_pattern_valid(""));
}

// protection_algs, pop_algs, allow_sha1 ([certmintd]), key.REF ([clients:NAME]) and sig_alg
// ([ca:NAME]): what loads, where it lands, and each refusal's message.
static void test_cfg_algorithms_and_keys(void)
{
    CU_ASSERT_TRUE_FATAL(write_text("secrets/k1.key", "00112233445566778899aabbccddeeff"
                                                      "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n"));
    CU_ASSERT_TRUE_FATAL(write_text("secrets/short.key", "00112233445566778899aabbccddee"));
    CU_ASSERT_TRUE_FATAL(write_text("secrets/weak.key", "0000000000000000000000000000000000"
                                                        "000000000000000000000000000000"));
    CU_ASSERT_TRUE_FATAL(write_text("secrets/raw.key", "not a hex key at all, just words"));
    char text[sizeof(k_base) + 1024];
    (void)snprintf(text, sizeof(text),
                   "%s\n[certmintd]\nprotection_algs = ecdsa-sha256, pbm, sha256, hmac-sha256\n"
                   "pop_algs = ed25519 ecdsa-shake256\nallow_sha1 = off\n"
                   "[clients:line]\nkey.rak = secrets/k1.key\n"
                   "[ca:devices]\nsig_alg = rsa-pss-sha256\n",
                   k_base);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    cfg_config *c = NULL;
    char err[512] = "";
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&c->protection_algs, CRMF_ALG_ECDSA_SHA256));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&c->protection_algs, CRMF_ALG_HMAC_SHA256));
    CU_ASSERT_FALSE(crmf_alg_policy_allows(&c->protection_algs, CRMF_ALG_ED25519));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&c->pop_algs, CRMF_ALG_ECDSA_SHAKE256));
    CU_ASSERT_FALSE(crmf_alg_policy_allows(&c->pop_algs, CRMF_ALG_ECDSA_SHA256));
    CU_ASSERT_EQUAL(c->cas[0].sig_alg, CRMF_ALG_RSA_PSS_SHA256);
    const cfg_clients *cl = c->cas[0].clients;
    const cfg_secret *k = cfg_clients_find_secret(cl, CM_SPAN_LIT("rak"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_TRUE(k->is_key);
    CU_ASSERT_EQUAL(k->secret_len, 32);
    CU_ASSERT_TRUE(k->secret[0] == 0x00 && k->secret[1] == 0x11 && k->secret[31] == 0xf0);
    const cfg_secret *pw = cfg_clients_find_secret(cl, CM_SPAN_LIT("line7"));
    CU_ASSERT_FALSE(pw->is_key); // secret.REF stays a password
    cfg_free(c);
    // The defaults: the table without SHA-1; allow_sha1 = on adds it; a CA's sig_alg by key.
    (void)snprintf(text, sizeof(text), "%s\n[certmintd]\nallow_sha1 = on\n", k_base);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&c->protection_algs, CRMF_ALG_HMAC_SHA1_IPSEC));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&c->pop_algs, CRMF_ALG_ECDSA_SHA1));
    CU_ASSERT_EQUAL(c->cas[0].sig_alg, CRMF_ALG_NONE);
    cfg_free(c);
    (void)snprintf(text, sizeof(text), "%s", k_base);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    CU_ASSERT_FALSE(c->allow_sha1);
    CU_ASSERT_FALSE(crmf_alg_policy_allows(&c->protection_algs, CRMF_ALG_HMAC_SHA1_IPSEC));
    CU_ASSERT_TRUE(crmf_alg_policy_allows(&c->protection_algs, CRMF_ALG_KMAC256));
    cfg_free(c);
    (void)snprintf(text, sizeof(text),
                   "%s\n[certmintd]\nallow_sha1 = yes\n"
                   "protection_algs = ecdsa-sha1, pbm, sha1, hmac-sha1\n",
                   k_base);
    CU_ASSERT_TRUE_FATAL(test_write_file(g_conf, text, strlen(text)));
    TEST_ASSERT_OK(cfg_load(&c, err, sizeof(err), g_conf));
    cfg_free(c);
    static const cfg_case bad[] = {
        {"[certmintd]\nprotection_algs = ecdsa-sha256, sha257\n", CFG_E_VALUE,
         "[certmintd] protection_algs: 'sha257' is not an algorithm name (see the README's "
         "algorithm table)"},
        {"[certmintd]\nprotection_algs = ecdsa-sha1\n", CFG_E_VALUE,
         "[certmintd] protection_algs: 'ecdsa-sha1' is SHA-1 based: set allow_sha1 = on to allow "
         "it"},
        {"[certmintd]\npop_algs = hmac-sha256\n", CFG_E_VALUE,
         "[certmintd] pop_algs: 'hmac-sha256' is a key-based MAC, which this setting does not "
         "take"},
        {"[certmintd]\npop_algs = ,\n", CFG_E_VALUE, "[certmintd] pop_algs: the list is empty"},
        {"[certmintd]\nallow_sha1 = maybe\n", CFG_E_VALUE, "[certmintd] allow_sha1: 'maybe'"},
        {"[clients:line]\nkey.s = secrets/short.key\n", CFG_E_VALUE, "[clients:line] key.s: ",
         /* then the path */},
        {"[clients:line]\nkey.w = secrets/weak.key\n", CFG_E_VALUE,
         "does not look like a random key (1 distinct octets); make one with openssl rand -hex "
         "32"},
        {"[clients:line]\nkey.r = secrets/raw.key\n", CFG_E_VALUE,
         "secrets/raw.key must hold the key as 32..128 hex digits (16..64 octets; e.g. openssl "
         "rand -hex 32)"},
        {"[clients:line]\nkey.line7 = secrets/k1.key\n", CFG_E_VALUE,
         "there is a secret.line7 or key.line7 already: one REF, one secret"},
        {"[clients:line]\nkey. = secrets/k1.key\n", CFG_E_VALUE,
         "the reference after 'key.' is empty"},
        {"[clients:line]\nsenderKID.nobody = x\n", CFG_E_REFERENCE,
         "there is no secret.nobody or key.nobody"},
        {"[ca:devices]\nsig_alg = pbm\n", CFG_E_VALUE,
         "[ca:devices] sig_alg: 'pbm' is not a signature algorithm name (see the README's "
         "algorithm table)"},
        {"[ca:devices]\nsig_alg = ecdsa-sha-256\n", CFG_E_VALUE,
         "'ecdsa-sha-256' is not a signature algorithm name"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        (void)snprintf(text, sizeof(text), "%s\n%s", k_base, bad[i].append);
        expect_fail(text, bad[i].code, bad[i].msg);
    }
    // The short key's message names the file and the format.
    (void)snprintf(text, sizeof(text), "%s\n[clients:line]\nkey.s = secrets/short.key\n", k_base);
    expect_fail(text, CFG_E_VALUE, "secrets/short.key must hold the key as 32..128 hex digits");
}

int test_cfg_register(void);
int test_cfg_register(void)
{
    static const test_case tests[] = {
        TEST_CASE(test_cfg_full_example_loads),
        TEST_CASE(test_cfg_defaults),
        TEST_CASE(test_cfg_profile_requested_extensions),
        TEST_CASE(test_cfg_rejects_bad_values),
        TEST_CASE(test_cfg_sizes_and_no_peer_cap),
        TEST_CASE(test_cfg_abuse_limits),
        TEST_CASE(test_cfg_secret_mode_names_file_and_mode),
        TEST_CASE(test_cfg_postgresql_store),
        TEST_CASE(test_cfg_missing_sections_and_keys),
        TEST_CASE(test_cfg_trust_settings),
        TEST_CASE(test_cfg_rejects_bad_trust_settings),
        TEST_CASE(test_cfg_central_keygen),
        TEST_CASE(test_ca_subject_match),
        TEST_CASE(test_cfg_pending_settings),
        TEST_CASE(test_cfg_algorithms_and_keys),
    };
    return test_register_suite("cfg", cfg_suite_init, cfg_suite_cleanup, NULL, NULL, tests,
                               TEST_NUM_CASES(tests));
}
