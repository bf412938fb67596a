// certmint-bench: a CMP-over-HTTP load generator for any CMP server (certmintd, OpenSSL's
// `openssl cmp` mock server, a commercial CA).
//
//   certmint-bench --url http://127.0.0.1:8080/.well-known/cmp --secret demo-device:SECRET
//                  [--flow ir-implicit|ir-confirm|cr|p10cr] [-n COUNT | --duration S]
//                  [--mac hmac-sha256|kmac128|gmac] [--connections C]
//                  [--key-type ec-p256|ec-p384|rsa2048|ed25519] ...
//   certmint-bench --limit [--token-uri PKCS11-URI] [--duration S]   (the physical limit)
//
// Every request is prepared before the clock starts (device keys, fresh transactionID and
// senderNonce, subject, POPO signature, PBM or signature protection), on all cores. The run
// is one epoll loop over C keep-alive connections with one request in flight on each; a
// certConf (ir-confirm) goes on the same connection right after its ip. Every response is
// checked (certmint_bench_check.c); --verify also checks the protection and the certificate's
// signature against --ca, after the clock stops. `--help` lists every option.
//
// This file: main, the options and the phases of a load run (bench_run_main). The rest, with
// bench/certmint_bench.h: certmint_bench_prepare.c and certmint_bench_msg.c (the requests),
// certmint_bench_run.c (the loop), certmint_bench_check.c (each response),
// certmint_bench_verify.c (--verify), certmint_bench_report.c (text and JSON),
// certmint_bench_limit.c (--limit).
#include "bench/certmint_bench.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

const char *const bench_flow_names[BENCH_NUM_FLOWS] = {
    "ir-implicit", "ir-confirm", "cr",     "p10cr",          "genm",
    "kur",         "rr",         "nested", "nested-confirm", "ir-ckg"};

const char *const bench_key_names[BENCH_NUM_KEY_TYPES] = {"ec-p256", "ec-p384", "rsa2048",
                                                          "ed25519"};

_Noreturn void bench_die(const char *what)
{
    (void)fprintf(stderr, "certmint-bench: %s\n", what);
    exit(2);
}

bool bench_bind_source(const bench_opts *o, int fd, int family)
{
    if (o->source == NULL) {
        return true;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len = 0;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)(void *)&ss;
        a->sin_family = AF_INET;
        len = sizeof(*a);
        if (inet_pton(AF_INET, o->source, &a->sin_addr) != 1) {
            return false;
        }
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&ss;
        a->sin6_family = AF_INET6;
        len = sizeof(*a);
        if (inet_pton(AF_INET6, o->source, &a->sin6_addr) != 1) {
            return false;
        }
    } else {
        return false;
    }
    const int one = 1;
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    return bind(fd, (const struct sockaddr *)&ss, len) == 0;
}

uint64_t bench_now(void)
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
    hints.ai_socktype = o->coap ? SOCK_DGRAM : SOCK_STREAM;
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
        if (ctx.flow == BENCH_FLOW_IR_CONFIRM || ctx.flow == BENCH_FLOW_NESTED_CONFIRM) {
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
    if (o->tls) {
        run.tls_ctx = bench_tls_ctx_new(o);
    }
    cm_arena_init(&run.arena, 65536, 0);
    if (!cm_ok(cmp_digests_init(&run.digests)) ||
        !cm_ok(crmf_crypto_init(&run.crypto, NULL, NULL))) {
        bench_die("cannot initialise the digests");
    }
    if (ctx.flow != o->flow) {
        // kur/rr: enrol every request's certificate first, untimed.
        const uint64_t te = bench_now();
        run.capture = true;
        bench_loop(&run, total, 0, o->progress);
        run.capture = false;
        const uint64_t enrolled = run.fails[BENCH_OK];
        if (enrolled != total) {
            (void)fprintf(stderr, "certmint-bench: enrolling for the %s run: %llu of %zu ok;",
                          bench_flow_names[o->flow], (unsigned long long)enrolled, total);
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
        if (!o->quiet) {
            (void)fprintf(stderr,
                          "certmint-bench: enrolled %zu certificates for the %s run in %.2f s\n",
                          total, bench_flow_names[o->flow], (double)(bench_now() - te) / 1e9);
        }
        memset(run.fails, 0, sizeof(run.fails));
        run.next = 0;
        run.num_lat = 0;
        run.ok_in_window = 0;
        run.unfinished = 0;
        run.reconnects = 0;
        run.tls_full = run.tls_resumed = 0;
    }
    if (o->warmup > 0) {
        bench_loop(&run, o->warmup, 0, false);
        memset(run.fails, 0, sizeof(run.fails));
        run.num_lat = 0;
        run.ok_in_window = 0;
        run.reconnects = 0;
        run.tls_full = run.tls_resumed = 0;
    }
    if (o->serials_path != NULL) {
        run.serials = fopen(o->serials_path, "w");
        if (run.serials == NULL) {
            bench_die("cannot create the --save-serials file");
        }
    }
    // The clock.
    const double cpu0 = bench_cpu_seconds();
    const uint64_t t0 = bench_now();
    const uint64_t stop_at = o->count != 0 ? 0 : t0 + (uint64_t)(o->duration * 1e9);
    bench_loop(&run, total, stop_at, o->progress);
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
    bench_latency_summary(&r, run.lat, run.num_lat);
    if (run.serials != NULL && fclose(run.serials) != 0) {
        bench_die("cannot write the --save-serials file");
    }
    run.serials = NULL;
    bench_report(&run, &r);
    if (o->json_path != NULL) {
        bench_write_json(&run, &r);
    }

    for (size_t i = 0; i < o->connections; i++) {
        bench_conn_close(&run.conns[i]);
        SSL_SESSION_free(run.conns[i].sess);
        free(run.conns[i].in);
        free(run.conns[i].conf);
        free(run.conns[i].nested_fails);
        free(run.conns[i].poll);
        bench_coap_cleanup(&run.conns[i]);
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
    SSL_CTX_free(run.tls_ctx);
    freeaddrinfo(run.ai);
    cm_arena_cleanup(&run.arena);
    cmp_digests_cleanup(&run.digests);
    crmf_crypto_cleanup(&run.crypto);
    bench_ctx_cleanup(&ctx);
    return r.failed == 0 && r.ok > 0 ? 0 : 1;
}

static void bench_usage(FILE *f)
{
    (void)fprintf(
        f,
        "usage: certmint-bench --url http[s]://HOST:PORT/PATH | coap://HOST:PORT/PATH\n"
        "                      (--secret REF:SECRET [--pbmac1 | --mac M] |\n"
        "                      --cert CERT.pem --key KEY.pem) [options]\n"
        "       (--mac hmac-sha256|kmac128|gmac or any key-based MAC name of the algorithm\n"
        "       table: a key-based MAC with SECRET the key in hex, a key.REF file's content;\n"
        "       gmac is AES-GMAC with the key's length)\n"
        "       certmint-bench --limit [--token-uri PKCS11-URI] [--duration S] [options]\n"
        "  --flow F              ir-implicit (default) | ir-confirm | cr | p10cr | genm |\n"
        "                        kur | rr (each request enrols a certificate before the clock\n"
        "                        with the given protection, then updates / revokes it, signed\n"
        "                        with that certificate) | nested | nested-confirm (--batch\n"
        "                        irs with the given protection in one nested message signed\n"
        "                        by --ra-cert; nested-confirm then sends their certConfs in\n"
        "                        another; rates and counts are of the inner requests) |\n"
        "                        ir-ckg (an ir without a key: the CA generates it; the key\n"
        "                        comes back under the --secret and must be the certificate's)\n"
        "  --batch N             inner requests per nested message (default 16)\n"
        "  --ra-cert CERT.pem    the RA certificate that signs the nested messages (with\n"
        "  --ra-key KEY.pem      --ra-key), one of the CA's ra_certs\n"
        "  --key-type T          ec-p256 (default) | ec-p384 | rsa2048 | ed25519\n"
        "  --key-pool N          N device keys reused round-robin (default: one per request)\n"
        "  -n COUNT              transactions to measure (default 1000)\n"
        "  --duration S          measure for S seconds instead (see --prepare)\n"
        "  --prepare N           requests prepared for a --duration run (default 5000*S)\n"
        "  --connections C       keep-alive connections, one request in flight each (default 1)\n"
        "  --reconnect           a new TCP connection per transaction\n"
        "  --coap                CMP over CoAP (RFC 9482; implied by a coap:// --url):\n"
        "                        confirmable requests, block-wise both ways\n"
        "  --coap-block N        CoAP block size, 16..1024 (default 1024)\n"
        "  --tls                 TLS to the server (implied by an https:// --url)\n"
        "  --tls-ca CA.pem       verify the server's certificate against CA.pem and the --url\n"
        "                        host (without it the server is not verified)\n"
        "  --tls-cert CERT.pem   a TLS client certificate (with --tls-key KEY.pem)\n"
        "  --tls-key KEY.pem\n"
        "  --tls-no-resume       with --reconnect: a full handshake per connection instead of\n"
        "                        resuming the last session (a session ticket)\n"
        "  --warmup N            transactions before the clock starts (default 0)\n"
        "  --subject-template T  e.g. 'CN=dev-%%d' (default), %%d is the request number\n"
        "  --pbm-iterations N    iteration count (default 500 for PBM, 1000 for PBMAC1)\n"
        "  --no-key-check        do not compare the certificate's key (OpenSSL's mock server)\n"
        "  --ca CA.pem           the CA: recipient name, and --verify's trust anchor\n"
        "  --verify              after the clock: check response protection and certificates\n"
        "  --timeout S           per transaction (default 30)\n"
        "  --source ADDR         connect from this numeric address (e.g. 127.0.0.2)\n"
        "  --threads N           preparation / --limit threads (default: online cores)\n"
        "  --json FILE           results as JSON ('-': stdout)\n"
        "  --save-serials FILE   the serial number of every certificate received in the\n"
        "                        measured run, one a line (the INTEGER's content octets in hex)\n"
        "  --quiet               no progress line (shown on stderr when it is a terminal)\n");
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

// bench_parse_url splits http[s]://HOST[:PORT]/PATH (https:// turns --tls on) or
// coap://HOST[:PORT]/PATH (CoAP, RFC 9482).
static bool bench_parse_url(bench_opts *o)
{
    const char *u = o->url;
    const bool https = strncmp(u, "https://", 8) == 0;
    o->coap_url = strncmp(u, "coap://", 7) == 0;
    if (!https && !o->coap_url && strncmp(u, "http://", 7) != 0) {
        return false;
    }
    o->tls = o->tls || https;
    u += https ? 8 : 7;
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
        (void)snprintf(o->port, sizeof(o->port), "%s",
                       o->coap_url ? "5683" : (https ? "443" : "80"));
    }
    return true;
}

enum {
    BENCH_OPT_URL = 256,
    BENCH_OPT_SECRET,
    BENCH_OPT_PBMAC1,
    BENCH_OPT_MAC,
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
    BENCH_OPT_COAP,
    BENCH_OPT_COAP_BLOCK,
    BENCH_OPT_JSON,
    BENCH_OPT_SAVE_SERIALS,
    BENCH_OPT_NO_KEY_CHECK,
    BENCH_OPT_CA,
    BENCH_OPT_VERIFY,
    BENCH_OPT_TIMEOUT,
    BENCH_OPT_THREADS,
    BENCH_OPT_LIMIT,
    BENCH_OPT_TOKEN_URI,
    BENCH_OPT_PBM_ITER,
    BENCH_OPT_QUIET,
    BENCH_OPT_TLS,
    BENCH_OPT_TLS_CA,
    BENCH_OPT_TLS_CERT,
    BENCH_OPT_TLS_KEY,
    BENCH_OPT_TLS_NO_RESUME,
    BENCH_OPT_BATCH,
    BENCH_OPT_RA_CERT,
    BENCH_OPT_RA_KEY,
    BENCH_OPT_SOURCE,
    BENCH_OPT_HELP,
};

static const struct option k_bench_long_opts[] = {
    {"url", required_argument, NULL, BENCH_OPT_URL},
    {"secret", required_argument, NULL, BENCH_OPT_SECRET},
    {"pbmac1", no_argument, NULL, BENCH_OPT_PBMAC1},
    {"mac", required_argument, NULL, BENCH_OPT_MAC},
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
    {"coap", no_argument, NULL, BENCH_OPT_COAP},
    {"coap-block", required_argument, NULL, BENCH_OPT_COAP_BLOCK},
    {"json", required_argument, NULL, BENCH_OPT_JSON},
    {"save-serials", required_argument, NULL, BENCH_OPT_SAVE_SERIALS},
    {"no-key-check", no_argument, NULL, BENCH_OPT_NO_KEY_CHECK},
    {"ca", required_argument, NULL, BENCH_OPT_CA},
    {"verify", no_argument, NULL, BENCH_OPT_VERIFY},
    {"timeout", required_argument, NULL, BENCH_OPT_TIMEOUT},
    {"threads", required_argument, NULL, BENCH_OPT_THREADS},
    {"limit", no_argument, NULL, BENCH_OPT_LIMIT},
    {"token-uri", required_argument, NULL, BENCH_OPT_TOKEN_URI},
    {"pbm-iterations", required_argument, NULL, BENCH_OPT_PBM_ITER},
    {"quiet", no_argument, NULL, BENCH_OPT_QUIET},
    {"tls", no_argument, NULL, BENCH_OPT_TLS},
    {"tls-ca", required_argument, NULL, BENCH_OPT_TLS_CA},
    {"tls-cert", required_argument, NULL, BENCH_OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, BENCH_OPT_TLS_KEY},
    {"tls-no-resume", no_argument, NULL, BENCH_OPT_TLS_NO_RESUME},
    {"batch", required_argument, NULL, BENCH_OPT_BATCH},
    {"ra-cert", required_argument, NULL, BENCH_OPT_RA_CERT},
    {"ra-key", required_argument, NULL, BENCH_OPT_RA_KEY},
    {"source", required_argument, NULL, BENCH_OPT_SOURCE},
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
    case BENCH_OPT_MAC:
        o->mac_name = arg;
        return true;
    case BENCH_OPT_CERT:
        o->cert_path = arg;
        return true;
    case BENCH_OPT_KEY:
        o->key_path = arg;
        return true;
    case BENCH_OPT_KEY_TYPE:
        if (!bench_pick(arg, bench_key_names, BENCH_NUM_KEY_TYPES, &pick)) {
            return false;
        }
        o->key_type = (bench_key_type)pick;
        return true;
    case BENCH_OPT_KEY_POOL:
        return bench_parse_size_arg(arg, &o->key_pool);
    case BENCH_OPT_FLOW:
        if (!bench_pick(arg, bench_flow_names, BENCH_NUM_FLOWS, &pick)) {
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
    case BENCH_OPT_COAP:
        o->coap = true;
        return true;
    case BENCH_OPT_COAP_BLOCK:
        if (!bench_parse_size_arg(arg, &v)) {
            return false;
        }
        for (o->coap_szx = 0; o->coap_szx < 6 && ((size_t)16 << o->coap_szx) != v; o->coap_szx++) {
        }
        return ((size_t)16 << o->coap_szx) == v;
    case BENCH_OPT_RECONNECT:
        o->reconnect = true;
        return true;
    case BENCH_OPT_JSON:
        o->json_path = arg;
        return true;
    case BENCH_OPT_SAVE_SERIALS:
        o->serials_path = arg;
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
    case BENCH_OPT_QUIET:
        o->quiet = true;
        return true;
    case BENCH_OPT_PBM_ITER:
        return bench_parse_size_arg(arg, &v) && v > 0 && (o->pbm_iterations = v) > 0;
    case BENCH_OPT_TLS:
        o->tls = true;
        return true;
    case BENCH_OPT_TLS_CA:
        o->tls_ca = arg;
        return true;
    case BENCH_OPT_TLS_CERT:
        o->tls_cert = arg;
        return true;
    case BENCH_OPT_TLS_KEY:
        o->tls_key = arg;
        return true;
    case BENCH_OPT_TLS_NO_RESUME:
        o->tls_no_resume = true;
        return true;
    case BENCH_OPT_BATCH:
        return bench_parse_size_arg(arg, &o->batch) && o->batch >= 1 &&
               o->batch <= CMP_MAX_NESTED_LIMIT;
    case BENCH_OPT_RA_CERT:
        o->ra_cert_path = arg;
        return true;
    case BENCH_OPT_RA_KEY:
        o->ra_key_path = arg;
        return true;
    case BENCH_OPT_SOURCE:
        o->source = arg;
        return true;
    default:
        return false;
    }
}

// bench_key_mac resolves --mac and decodes --secret's hex key; returns a message or NULL.
static const char *bench_key_mac(bench_opts *o)
{
    if (o->secret == NULL || o->pbmac1) {
        return "--mac needs --secret REF:HEXKEY and no --pbmac1";
    }
    const size_t n = strlen(o->secret);
    if (n % 2 != 0 || n / 2 < CMP_PROTECT_MIN_KEY_LEN || n / 2 > sizeof(o->mac_key)) {
        return "--mac: the secret must be a key of 16..64 octets in hex";
    }
    for (size_t i = 0; i < n; i += 2) {
        unsigned v = 0;
        if (sscanf(o->secret + i, "%2x", &v) != 1 || !isxdigit((unsigned char)o->secret[i]) ||
            !isxdigit((unsigned char)o->secret[i + 1])) {
            return "--mac: the secret must be a key of 16..64 octets in hex";
        }
        o->mac_key[i / 2] = (uint8_t)v;
    }
    o->mac_key_len = n / 2;
    const crmf_alg *a = NULL;
    if (strcmp(o->mac_name, "gmac") == 0) {
        a = crmf_alg_get(o->mac_key_len == 16   ? CRMF_ALG_AES128_GMAC
                         : o->mac_key_len == 24 ? CRMF_ALG_AES192_GMAC
                         : o->mac_key_len == 32 ? CRMF_ALG_AES256_GMAC
                                                : CRMF_ALG_NONE);
        if (a == NULL) {
            return "--mac gmac: the key must be 16, 24 or 32 octets";
        }
    } else {
        a = crmf_alg_by_name(o->mac_name);
    }
    if (a == NULL || a->kind != CRMF_ALG_KIND_KEY_MAC) {
        return "--mac: not a key-based MAC of the algorithm table (hmac-sha256, kmac128, gmac...)";
    }
    o->key_mac = (int)a->id;
    return NULL;
}

// bench_opts_check_nested checks the nested flows' options and rounds the counts up to whole
// batches; returns a message or NULL.
static const char *bench_opts_check_nested(bench_opts *o)
{
    if (!bench_flow_is_nested(o->flow)) {
        if (o->batch != 0 || o->ra_cert_path != NULL || o->ra_key_path != NULL) {
            return "--batch, --ra-cert and --ra-key are for --flow nested and nested-confirm";
        }
        o->batch = 1;
        return NULL;
    }
    if (o->ra_cert_path == NULL || o->ra_key_path == NULL) {
        return "--flow nested needs --ra-cert and --ra-key (an RA certificate of the CA)";
    }
    if (o->batch == 0) {
        o->batch = 16;
    }
    const size_t b = o->batch;
    o->count = (o->count + b - 1) / b * b;
    o->prepare = (o->prepare + b - 1) / b * b;
    o->warmup = (o->warmup + b - 1) / b * b;
    return NULL;
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
    if (o->coap_url) {
        o->coap = true;
    } else if (o->coap) {
        return "--coap needs a coap:// --url";
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
    if (o->mac_name != NULL) {
        const char *why = bench_key_mac(o);
        if (why != NULL) {
            return why;
        }
    }
    if ((o->tls_cert != NULL) != (o->tls_key != NULL)) {
        return "--tls-cert and --tls-key go together";
    }
    if (!o->tls && (o->tls_ca != NULL || o->tls_cert != NULL || o->tls_no_resume)) {
        return "--tls-ca, --tls-cert and --tls-no-resume need --tls (or an https:// --url)";
    }
    if (o->flow == BENCH_FLOW_IR_CKG && o->secret == NULL) {
        return "ir-ckg decrypts the generated key with the shared secret: give --secret";
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
    return bench_opts_check_nested(o);
}

int main(int argc, char **argv)
{
    bench_opts o;
    memset(&o, 0, sizeof(o));
    o.connections = 1;
    o.subject_template = "CN=dev-%d";
    o.pbm_iterations = 0; // 500 for PBM, 1000 for PBMAC1 (RFC 8018 §4.2)
    o.timeout = 30;
    o.coap_szx = 6; // 1024-byte CoAP blocks
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
    o.progress = !o.quiet && isatty(STDERR_FILENO) == 1;
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
    OPENSSL_cleanse(o.mac_key, sizeof(o.mac_key));
    return rc;
}
