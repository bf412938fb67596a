// The [certmintd] section: listeners, threads, limits, timeouts, the store, logging and the
// default CA (see cfg.h for the keys). Loaded after every [ca:NAME], which default_ca names.
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/err.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"


static cm_result cfg_listen_one(cfg_loader *ld, const char *item)
{
    cfg_config *cfg = ld->cfg;
    if (cfg->num_listen == CFG_MAX_LISTEN) {
        return cfg_fail(ld, CFG_E_VALUE, "listen", "more than %u addresses", CFG_MAX_LISTEN);
    }
    cfg_listen *l = &cfg->listen[cfg->num_listen];
    char host[64];
    const char *port;
    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - item - 1) >= sizeof(host)) {
            return cfg_fail(ld, CFG_E_VALUE, "listen", "'%s' is not [IPv6]:port", item);
        }
        memcpy(host, item + 1, (size_t)(close - item - 1));
        host[close - item - 1] = '\0';
        port = close + 2;
        l->ipv6 = true;
    } else {
        const char *colon = strrchr(item, ':');
        if (colon == NULL || colon == item || (size_t)(colon - item) >= sizeof(host) ||
            memchr(item, ':', (size_t)(colon - item)) != NULL) {
            return cfg_fail(ld, CFG_E_VALUE, "listen", "'%s' is not host:port or [IPv6]:port",
                            item);
        }
        memcpy(host, item, (size_t)(colon - item));
        host[colon - item] = '\0';
        port = colon + 1;
        l->ipv6 = false;
    }
    uint8_t addr[16];
    if (inet_pton(l->ipv6 ? AF_INET6 : AF_INET, host, addr) != 1 ||
        strlen(host) >= sizeof(l->host)) {
        return cfg_fail(ld, CFG_E_VALUE, "listen", "'%s' is not a numeric %s address", host,
                        l->ipv6 ? "IPv6" : "IPv4");
    }
    uint32_t p;
    CM_TRY(cfg_u32(ld, &p, "listen", port, 1, 65535));
    memcpy(l->host, host, strlen(host) + 1);
    l->port = (uint16_t)p;
    cfg->num_listen++;
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
    cfg->max_pbm_iterations = 100000;
    cfg->max_pbmac1_iterations = 100000;
    cfg->message_time_window = 300;
    cfg->confirm_wait_time = 300;
    cfg->log_level = CM_LOG_INFO;
    const char *default_ca = NULL;
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "listen") == 0) {
            cfg->num_listen = 0;
            char item[CFG_ITEM_MAX];
            for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
                CM_TRY(cfg_listen_one(ld, item));
            }
        } else if (strcmp(k, "io_threads") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->io_threads, k, v, 1, 256));
        } else if (strcmp(k, "hsm_sessions") == 0) {
            CM_TRY(cfg_u32(ld, &cfg->hsm_sessions, k, v, 1, 1024));
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
    if (cfg->min_pbm_iterations > cfg->max_pbm_iterations) {
        return cfg_fail(ld, CFG_E_VALUE, "min_pbm_iterations", "%u is above max_pbm_iterations %u",
                        cfg->min_pbm_iterations, cfg->max_pbm_iterations);
    }
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
