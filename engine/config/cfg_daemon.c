// The [certmintd] section: listeners, threads, limits, timeouts, the store, logging and the
// default CA (see cfg.h for the keys). Loaded after every [ca:NAME], which default_ca names.
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/err.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"


// cfg_listen_one parses one address of |key| (listen or admin_listen) into |list|, which holds
// |*num| of at most |max|.
static cm_result cfg_listen_one(cfg_loader *ld, const char *key, cfg_listen *list, size_t *num,
                                size_t max, const char *item)
{
    if (*num == max) {
        return cfg_fail(ld, CFG_E_VALUE, key, "more than %zu addresses", max);
    }
    cfg_listen *l = &list[*num];
    char host[64];
    const char *port;
    // https://ADDR serves HTTPS there; http://ADDR is the same as ADDR.
    l->tls = strncmp(item, "https://", 8) == 0;
    if (l->tls) {
        item += 8;
    } else if (strncmp(item, "http://", 7) == 0) {
        item += 7;
    }
    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - item - 1) >= sizeof(host)) {
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not [IPv6]:port", item);
        }
        memcpy(host, item + 1, (size_t)(close - item - 1));
        host[close - item - 1] = '\0';
        port = close + 2;
        l->ipv6 = true;
    } else {
        const char *colon = strrchr(item, ':');
        if (colon == NULL || colon == item || (size_t)(colon - item) >= sizeof(host) ||
            memchr(item, ':', (size_t)(colon - item)) != NULL) {
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not host:port or [IPv6]:port", item);
        }
        memcpy(host, item, (size_t)(colon - item));
        host[colon - item] = '\0';
        port = colon + 1;
        l->ipv6 = false;
    }
    uint8_t addr[16];
    if (inet_pton(l->ipv6 ? AF_INET6 : AF_INET, host, addr) != 1 ||
        strlen(host) >= sizeof(l->host)) {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not a numeric %s address", host,
                        l->ipv6 ? "IPv6" : "IPv4");
    }
    uint32_t p;
    CM_TRY(cfg_u32(ld, &p, key, port, 1, 65535));
    memcpy(l->host, host, strlen(host) + 1);
    l->port = (uint16_t)p;
    (*num)++;
    return cm_result_make(CM_OK);
}

// --- limits and operations (issue 23): max_connections_per_peer, admin_listen,
// admin_max_connections, store_min_free --------------------------------------------------------

// cfg_size parses a byte count: digits, optionally followed by K, M, G or T (powers of 1024,
// with or without "iB"/"B", any case): "268435456", "256M", "256MiB", "1g", "0".
static cm_result cfg_size(cfg_loader *ld, uint64_t *out, const char *key, const char *v)
{
    uint64_t n = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - 9) / 10) {
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is too large", v);
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    unsigned shift = 0;
    static const char k_units[] = "kmgt";
    const char *u = *p != '\0' ? strchr(k_units, *p | 0x20) : NULL;
    if (u != NULL) {
        shift = 10u * (unsigned)(u - k_units + 1);
        p++;
        if ((p[0] | 0x20) == 'i' && (p[1] | 0x20) == 'b') {
            p += 2;
        } else if ((p[0] | 0x20) == 'b') {
            p++;
        }
    }
    if (p == v || (*v < '0' || *v > '9') || *p != '\0') {
        return cfg_fail(ld, CFG_E_VALUE, key,
                        "'%s' is not a size (bytes, or a number with K, M, G or T)", v);
    }
    if (shift > 0 && n > (UINT64_MAX >> shift)) {
        return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is too large", v);
    }
    *out = n << shift;
    return cm_result_make(CM_OK);
}

static bool cfg_daemon_limit_key(const char *k)
{
    return strcmp(k, "max_connections_per_peer") == 0 || strcmp(k, "admin_listen") == 0 ||
           strcmp(k, "admin_max_connections") == 0 || strcmp(k, "store_min_free") == 0;
}

static cm_result cfg_daemon_limit(cfg_loader *ld, const char *k, const char *v)
{
    cfg_config *cfg = ld->cfg;
    if (strcmp(k, "max_connections_per_peer") == 0) {
        if (strcmp(v, "none") == 0) {
            cfg->max_connections_per_peer = UINT32_MAX; // engine/net's NET_NO_LIMIT
            return cm_result_make(CM_OK);
        }
        return cfg_u32(ld, &cfg->max_connections_per_peer, k, v, 1, 1000000);
    }
    if (strcmp(k, "admin_listen") == 0) {
        cfg->num_admin_listen = 0;
        char item[CFG_ITEM_MAX];
        for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
            CM_TRY(cfg_listen_one(ld, k, cfg->admin_listen, &cfg->num_admin_listen,
                                  CFG_MAX_ADMIN_LISTEN, item));
        }
        return cm_result_make(CM_OK);
    }
    if (strcmp(k, "admin_max_connections") == 0) {
        return cfg_u32(ld, &cfg->admin_max_connections, k, v, 1, 1024);
    }
    return cfg_size(ld, &cfg->store_min_free, k, v); // store_min_free
}

// cfg_daemon_limits_check: what the keys above need together once all are read.
static cm_result cfg_daemon_limits_check(cfg_loader *ld)
{
    const cfg_config *cfg = ld->cfg;
    if (cfg->num_admin_listen > 0 && cfg->num_listen + cfg->num_admin_listen > CFG_MAX_SERVE) {
        return cfg_fail(ld, CFG_E_VALUE, "admin_listen",
                        "%zu addresses together with listen's %zu; at most %u in all",
                        cfg->num_admin_listen, cfg->num_listen, CFG_MAX_SERVE);
    }
    // An admin address on a listen port would share the port (SO_REUSEPORT): the kernel would
    // hand CMP clients to the admin listener and monitoring to the main one.
    for (size_t i = 0; i < cfg->num_admin_listen; i++) {
        for (size_t j = 0; j < cfg->num_listen; j++) {
            if (cfg->admin_listen[i].port == cfg->listen[j].port) {
                return cfg_fail(ld, CFG_E_VALUE, "admin_listen", "port %u is also a listen port",
                                (unsigned)cfg->listen[j].port);
            }
        }
    }
    return cm_result_make(CM_OK);
}

// cfg_daemon_algs builds protection_algs and pop_algs (after the loop: allow_sha1 may come
// later in the section) from the algorithm table's names.
static cm_result cfg_daemon_algs(cfg_loader *ld, const char *protection_algs, const char *pop_algs)
{
    cfg_config *cfg = ld->cfg;
    crmf_alg_policy_default(&cfg->protection_algs, cfg->allow_sha1);
    crmf_alg_policy_default(&cfg->pop_algs, cfg->allow_sha1);
    char why[200];
    const uint32_t all = (1u << CRMF_ALG_KIND_DIGEST) | (1u << CRMF_ALG_KIND_SIGNATURE) |
                         (1u << CRMF_ALG_KIND_PASSWORD_MAC) | (1u << CRMF_ALG_KIND_KEY_MAC);
    if (protection_algs != NULL &&
        !cm_ok(crmf_alg_policy_parse(&cfg->protection_algs, why, sizeof(why), protection_algs, all,
                                     cfg->allow_sha1))) {
        return cfg_fail(ld, CFG_E_VALUE, "protection_algs", "%s", why);
    }
    if (pop_algs != NULL &&
        !cm_ok(crmf_alg_policy_parse(&cfg->pop_algs, why, sizeof(why), pop_algs,
                                     1u << CRMF_ALG_KIND_SIGNATURE, cfg->allow_sha1))) {
        return cfg_fail(ld, CFG_E_VALUE, "pop_algs", "%s", why);
    }
    return cm_result_make(CM_OK);
}

// --- TLS (issue 18): tls_cert, tls_key, tls_chain, tls_client_ca, tls_client_auth,
// tls_ticket_lifetime, tls_handshake_timeout ----------------------------------------------------

static bool cfg_daemon_tls_key(const char *k)
{
    return strcmp(k, "tls_cert") == 0 || strcmp(k, "tls_key") == 0 || strcmp(k, "tls_chain") == 0 ||
           strcmp(k, "tls_client_ca") == 0 || strcmp(k, "tls_client_auth") == 0 ||
           strcmp(k, "tls_ticket_lifetime") == 0 || strcmp(k, "tls_handshake_timeout") == 0;
}

static cm_result cfg_daemon_tls(cfg_loader *ld, const char *k, const char *v)
{
    cfg_config *cfg = ld->cfg;
    if (strcmp(k, "tls_cert") == 0) {
        return cfg_path(ld, &cfg->tls_cert, k, v);
    }
    if (strcmp(k, "tls_key") == 0) {
        if (strncmp(v, "pkcs11:", 7) == 0) {
            // OpenSSL 3.0 on Debian 12 reaches a token only through the deprecated ENGINE
            // API, and a TLS handshake would then wait for C_Sign on an I/O loop.
            return cfg_fail(ld, CFG_E_VALUE, k,
                            "a PKCS#11 URI is not supported for the TLS key: give a PEM file");
        }
        return cfg_path(ld, &cfg->tls_key, k, v);
    }
    if (strcmp(k, "tls_chain") == 0) {
        return cfg_path(ld, &cfg->tls_chain, k, v);
    }
    if (strcmp(k, "tls_client_ca") == 0) {
        return cfg_path(ld, &cfg->tls_client_ca, k, v);
    }
    if (strcmp(k, "tls_client_auth") == 0) {
        static const char *const k_modes[] = {"off", "optional", "required"};
        for (uint32_t i = 0; i < 3; i++) {
            if (strcmp(v, k_modes[i]) == 0) {
                cfg->tls_client_auth = i;
                return cm_result_make(CM_OK);
            }
        }
        return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not off, optional or required", v);
    }
    if (strcmp(k, "tls_ticket_lifetime") == 0) {
        // RFC 8446 §4.6.1: a ticket lifetime of at most seven days.
        return cfg_u32(ld, &cfg->tls_ticket_lifetime, k, v, 0, 604800);
    }
    return cfg_u32(ld, &cfg->tls_handshake_timeout, k, v, 1, 3600); // tls_handshake_timeout
}

// cfg_daemon_tls_check: what the TLS keys need together once all are read. The files
// themselves are loaded by engine/net when the daemon starts (certmintd --check included).
static cm_result cfg_daemon_tls_check(cfg_loader *ld)
{
    cfg_config *cfg = ld->cfg;
    cfg->num_tls_listen = 0;
    for (size_t i = 0; i < cfg->num_listen; i++) {
        cfg->num_tls_listen += cfg->listen[i].tls;
    }
    for (size_t i = 0; i < cfg->num_admin_listen; i++) {
        if (cfg->admin_listen[i].tls) {
            return cfg_fail(ld, CFG_E_VALUE, "admin_listen",
                            "https:// is not served on the admin listener (plain HTTP only)");
        }
    }
    if (cfg->num_tls_listen > 0 && (cfg->tls_cert == NULL || cfg->tls_key == NULL)) {
        return cfg_fail(ld, CFG_E_MISSING, cfg->tls_cert == NULL ? "tls_cert" : "tls_key",
                        "missing: listen has an https:// address");
    }
    if (cfg->tls_client_auth != 0 && cfg->tls_client_ca == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "tls_client_ca", "missing: tls_client_auth is %s",
                        cfg->tls_client_auth == 1 ? "optional" : "required");
    }
    if (cfg->tls_key != NULL) {
        struct stat st;
        if (stat(cfg->tls_key, &st) != 0) {
            return cfg_fail(ld, CFG_E_FILE, "tls_key", "cannot open %s: %s", cfg->tls_key,
                            strerror(errno));
        }
        if ((st.st_mode & 077) != 0) {
            return cfg_fail(ld, CFG_E_SECRET_MODE, "tls_key",
                            "%s has mode %04o; a private key must not be accessible by group or "
                            "others (chmod 600)",
                            cfg->tls_key, (unsigned)(st.st_mode & 07777));
        }
    }
    return cm_result_make(CM_OK);
}

// --- CMP over CoAP (issue 18, RFC 9482): coap_listen, coap_max_transfers_per_peer,
// coap_transfer_timeout, coap_peer_rate, coap_max_requests -----------------------------------

static void cfg_daemon_coap_defaults(cfg_config *cfg)
{
    cfg->coap_max_transfers_per_peer = 4;
    cfg->coap_transfer_timeout = 60;
    cfg->coap_peer_rate = 1000;
    cfg->coap_max_requests = 64;
}

static bool cfg_daemon_coap_key(const char *k)
{
    return strcmp(k, "coap_listen") == 0 || strcmp(k, "coap_max_transfers_per_peer") == 0 ||
           strcmp(k, "coap_transfer_timeout") == 0 || strcmp(k, "coap_peer_rate") == 0 ||
           strcmp(k, "coap_max_requests") == 0;
}

static cm_result cfg_daemon_coap(cfg_loader *ld, const char *k, const char *v)
{
    cfg_config *cfg = ld->cfg;
    if (strcmp(k, "coap_listen") == 0) {
        cfg->num_coap_listen = 0;
        char item[CFG_ITEM_MAX];
        for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
            CM_TRY(cfg_listen_one(ld, k, cfg->coap_listen, &cfg->num_coap_listen,
                                  CFG_MAX_COAP_LISTEN, item));
        }
        return cm_result_make(CM_OK);
    }
    if (strcmp(k, "coap_max_transfers_per_peer") == 0) {
        return cfg_u32(ld, &cfg->coap_max_transfers_per_peer, k, v, 1, 64);
    }
    if (strcmp(k, "coap_transfer_timeout") == 0) {
        return cfg_u32(ld, &cfg->coap_transfer_timeout, k, v, 1, 3600);
    }
    if (strcmp(k, "coap_peer_rate") == 0) {
        if (strcmp(v, "none") == 0) {
            cfg->coap_peer_rate = UINT32_MAX;
            return cm_result_make(CM_OK);
        }
        return cfg_u32(ld, &cfg->coap_peer_rate, k, v, 1, 10000000);
    }
    return cfg_u32(ld, &cfg->coap_max_requests, k, v, 1, 65536); // coap_max_requests
}

// --- what unauthenticated senders may cost, and resends (issue 23): kdf_threads,
// kdf_max_queue, kdf_inline, mac_failures_max, mac_failure_window, mac_failure_backoff,
// error_signatures_per_peer, retransmit_window, retransmit_cache_entries,
// retransmit_cache_bytes --------------------------------------------------------------------

static void cfg_daemon_abuse_defaults(cfg_config *cfg, long cores)
{
    // Half the cores: key derivation may take them while the I/O loops keep the rest.
    cfg->kdf_threads = cores >= 4 ? (uint32_t)(cores < 128 ? cores / 2 : 64) : 1;
    cfg->kdf_max_queue = 1024;
    cfg->kdf_inline = true;
    cfg->mac_failures_max = 10;
    cfg->mac_failure_window = 60;
    cfg->mac_failure_backoff = 60;
    cfg->error_signatures_per_peer = 10;
    cfg->retransmit_window = -1; // auto
    cfg->retransmit_cache_entries = 65536;
    cfg->retransmit_cache_bytes = 64ull << 20;
}

static bool cfg_daemon_abuse_key(const char *k)
{
    return strcmp(k, "kdf_threads") == 0 || strcmp(k, "kdf_max_queue") == 0 ||
           strcmp(k, "kdf_inline") == 0 || strcmp(k, "mac_failures_max") == 0 ||
           strcmp(k, "mac_failure_window") == 0 || strcmp(k, "mac_failure_backoff") == 0 ||
           strcmp(k, "error_signatures_per_peer") == 0 || strcmp(k, "retransmit_window") == 0 ||
           strcmp(k, "retransmit_cache_entries") == 0 || strcmp(k, "retransmit_cache_bytes") == 0;
}

static cm_result cfg_daemon_abuse(cfg_loader *ld, const char *k, const char *v)
{
    cfg_config *cfg = ld->cfg;
    if (strcmp(k, "kdf_threads") == 0) {
        return cfg_u32(ld, &cfg->kdf_threads, k, v, 1, 64);
    }
    if (strcmp(k, "kdf_max_queue") == 0) {
        return cfg_u32(ld, &cfg->kdf_max_queue, k, v, 1, 65536);
    }
    if (strcmp(k, "kdf_inline") == 0) {
        return cfg_bool(ld, &cfg->kdf_inline, k, v);
    }
    if (strcmp(k, "mac_failures_max") == 0 || strcmp(k, "error_signatures_per_peer") == 0) {
        uint32_t *dst = strcmp(k, "mac_failures_max") == 0 ? &cfg->mac_failures_max
                                                           : &cfg->error_signatures_per_peer;
        if (strcmp(v, "none") == 0) {
            *dst = 0;
            return cm_result_make(CM_OK);
        }
        return cfg_u32(ld, dst, k, v, 1, 1000000);
    }
    if (strcmp(k, "mac_failure_window") == 0) {
        return cfg_u32(ld, &cfg->mac_failure_window, k, v, 1, 86400);
    }
    if (strcmp(k, "mac_failure_backoff") == 0) {
        return cfg_u32(ld, &cfg->mac_failure_backoff, k, v, 1, 86400);
    }
    if (strcmp(k, "retransmit_window") == 0) {
        if (strcmp(v, "auto") == 0) {
            cfg->retransmit_window = -1;
            return cm_result_make(CM_OK);
        }
        uint32_t w = 0;
        CM_TRY(cfg_u32(ld, &w, k, v, 0, 86400));
        cfg->retransmit_window = w;
        return cm_result_make(CM_OK);
    }
    if (strcmp(k, "retransmit_cache_entries") == 0) {
        return cfg_u32(ld, &cfg->retransmit_cache_entries, k, v, 1, 1u << 24);
    }
    CM_TRY(cfg_size(ld, &cfg->retransmit_cache_bytes, k, v)); // retransmit_cache_bytes
    if (cfg->retransmit_cache_bytes < 65536) {
        return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is below 64K", v);
    }
    return cm_result_make(CM_OK);
}

cm_result cfg_daemon_load(cfg_loader *ld)
{
    cfg_config *cfg = ld->cfg;
    (void)snprintf(ld->section, sizeof(ld->section), "certmintd");
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(ld->conf, "certmintd");
    if (vals == NULL) {
        ERR_clear_error();
        ld->section[0] = '\0';
        return cfg_fail(ld, CFG_E_MISSING, NULL, "no [certmintd] section");
    }
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->io_threads = cores > 0 && cores < 256 ? (uint32_t)cores : 1;
    cfg->max_connections = 4096;
    cfg->header_timeout = 10;
    cfg->idle_timeout = 30;
    cfg->hsm_sessions = cfg->io_threads;
    cfg->max_request_bytes = 256u * 1024u;
    cfg->min_pbm_iterations = 100;
    // About 1 ms of CPU each before a MAC is known to be good (issue 14; bench/pbm_cost_bench:
    // ~64 ns per PBM iteration, ~350 ns per PBKDF2-HMAC-SHA256 iteration with a 32-octet key).
    cfg->max_pbm_iterations = 10000;
    cfg->max_pbmac1_iterations = 2500;
    cfg->message_time_window = 300;
    cfg->confirm_wait_time = 300;
    cfg->log_level = CM_LOG_INFO;
    cfg->max_connections_per_peer = 256; // engine/net's NET_DEFAULT_MAX_CONNECTIONS_PER_PEER
    cfg->admin_max_connections = 16;     // NET_DEFAULT_ADMIN_MAX_CONNECTIONS
    cfg->store_min_free = 256ull << 20;
    cfg_daemon_coap_defaults(cfg);
    cfg_daemon_abuse_defaults(cfg, cores);
    cfg->tls_ticket_lifetime = 3600; // engine/net's NET_TLS_DEFAULT_TICKET_LIFETIME_S
    cfg->tls_handshake_timeout = 10;
    cfg->max_nested_depth = 2;
    cfg->max_nested_messages = 256;
    cfg->nested_threads = cfg->io_threads;
    cfg_daemon_pending_defaults(cfg);
    const char *default_ca = NULL;
    const char *protection_algs = NULL;
    const char *pop_algs = NULL;
    cm_result pr = cm_result_make(CM_OK);
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "listen") == 0) {
            cfg->num_listen = 0;
            char item[CFG_ITEM_MAX];
            for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
                CM_TRY(cfg_listen_one(ld, k, cfg->listen, &cfg->num_listen, CFG_MAX_LISTEN, item));
            }
        } else if (strcmp(k, "io_threads") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->io_threads, k, v, 1, 256));
        } else if (strcmp(k, "hsm_sessions") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->hsm_sessions, k, v, 1, 1024));
        } else if (strcmp(k, "hsm_dispatch") == 0) {
            static const char *const k_dispatch[] = {"auto", "inline", "pool"};
            size_t d = 0;
            while (d < 3 && strcmp(v, k_dispatch[d]) != 0) {
                d++;
            }
            if (d == 3) {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not auto, inline or pool", v);
            }
            cfg->hsm_dispatch = (uint32_t)d;
        } else if (strcmp(k, "store_sync") == 0) {
            if (strcmp(v, "full") == 0) {
                cfg->store_sync_normal = false;
            } else if (strcmp(v, "normal") == 0) {
                cfg->store_sync_normal = true;
            } else {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not full or normal", v);
            }
        } else if (strcmp(k, "max_connections") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_connections, k, v, 1, 1000000));
        } else if (strcmp(k, "header_timeout") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->header_timeout, k, v, 1, 3600));
        } else if (strcmp(k, "idle_timeout") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->idle_timeout, k, v, 1, 86400));
        } else if (strcmp(k, "store") == 0) {
            CM_TRY(cfg_store(ld, v));
        } else if (strcmp(k, "store_passfile") == 0) {
            CM_TRY(cfg_path(ld, &cfg->store_passfile, k, v));
        } else if (strcmp(k, "max_request_bytes") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_request_bytes, k, v, 1024, 64u << 20));
        } else if (strcmp(k, "min_pbm_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->min_pbm_iterations, k, v, 1, 10000000));
        } else if (strcmp(k, "max_pbm_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_pbm_iterations, k, v, 1, 10000000));
        } else if (strcmp(k, "max_pbmac1_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_pbmac1_iterations, k, v, 1, 10000000));
        } else if (strcmp(k, "message_time_window") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->message_time_window, k, v, 1, 86400));
        } else if (strcmp(k, "confirm_wait_time") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->confirm_wait_time, k, v, 1, 86400));
        } else if (strcmp(k, "log_level") == 0) {
            if (!cm_log_level_parse(v, &cfg->log_level)) {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not error, warn, info or debug", v);
            }
        } else if (strcmp(k, "default_ca") == 0) {
            default_ca = v;
        } else if (cfg_daemon_limit_key(k)) {
            CM_TRY(cfg_daemon_limit(ld, k, v));
        } else if (cfg_daemon_coap_key(k)) {
            CM_TRY(cfg_daemon_coap(ld, k, v));
        } else if (strcmp(k, "protection_algs") == 0) {
            protection_algs = v;
        } else if (strcmp(k, "pop_algs") == 0) {
            pop_algs = v;
        } else if (strcmp(k, "allow_sha1") == 0) {
            CM_TRY(cfg_bool(ld, &cfg->allow_sha1, k, v));
        } else if (cfg_daemon_tls_key(k)) {
            CM_TRY(cfg_daemon_tls(ld, k, v));
        } else if (strcmp(k, "max_nested_depth") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_nested_depth, k, v, 0, 4)); // CMP_MAX_NESTING_LIMIT
        } else if (strcmp(k, "max_nested_messages") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->max_nested_messages, k, v, 1, 4096)); // CMP_MAX_NESTED_LIMIT
        } else if (strcmp(k, "nested_threads") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->nested_threads, k, v, 0, 256));
        } else if (cfg_daemon_pending(ld, k, v, &pr)) {
            CM_TRY(pr);
        } else if (cfg_daemon_abuse_key(k)) {
            CM_TRY(cfg_daemon_abuse(ld, k, v));
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (cfg->num_listen == 0) {
        return cfg_fail(ld, CFG_E_MISSING, "listen", "missing");
    }
    if (cfg->store_url == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "store", "missing");
    }
    CM_TRY(cfg_store_finish(ld));
    CM_TRY(cfg_daemon_limits_check(ld));
    CM_TRY(cfg_daemon_tls_check(ld));
    if (cfg->min_pbm_iterations > cfg->max_pbm_iterations) {
        return cfg_fail(ld, CFG_E_VALUE, "min_pbm_iterations", "%u is above max_pbm_iterations %u",
                        cfg->min_pbm_iterations, cfg->max_pbm_iterations);
    }
    CM_TRY(cfg_daemon_algs(ld, protection_algs, pop_algs));
    if (default_ca != NULL) {
        cfg->default_ca = cfg_ca_find(cfg, default_ca);
        if (cfg->default_ca == NULL) {
            return cfg_fail(ld, CFG_E_REFERENCE, "default_ca", "no [ca:%s] section", default_ca);
        }
    } else if (cfg->num_cas == 1) {
        cfg->default_ca = &cfg->cas[0];
    }
    return cm_result_make(CM_OK);
}
