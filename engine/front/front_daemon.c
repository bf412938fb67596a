// engine/front: the daemon's wiring — configuration into keys, CAs, the HSM pool, the store
// and the engine; serving through engine/net; the maintenance duties.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/front/front_internal.h"

__attribute__((format(printf, 3, 4))) static void front_err(char *err, size_t cap, const char *fmt,
                                                            ...)
{
    if (cap == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

void front_daemon_free(front_daemon *d)
{
    if (d == NULL) {
        return;
    }
    front_daemon_stop(d);
    srv_engine_free(d->engine);
    if (d->store != NULL) {
        store_close(d->store);
    }
    hsm_pool_free(d->pool);
    for (size_t i = 0; i < d->num_keys; i++) {
        hsm_key_free(d->keys[i]);
    }
    free(d->keys);
    hsm_token_free(d->token);
    for (size_t i = 0; i < d->num_cas; i++) {
        free(d->secrets != NULL ? d->secrets[i] : NULL);
        free(d->ra_certs != NULL ? d->ra_certs[i] : NULL);
        ca_trust_free(d->own_trust != NULL ? d->own_trust[i] : NULL);
        ca_authority_free(d->cmp_ids != NULL ? d->cmp_ids[i] : NULL);
    }
    free(d->secrets);
    free(d->ra_certs);
    free(d->own_trust);
    free(d->cmp_ids);
    free(d->cas);
    cmp_protect_ctx_free(d->prot);
    cfg_free(d->cfg);
    free(d);
}

// front_open_keys opens the token of the first CA's key and finds every CA's keys in it.
static cm_result front_open_keys(front_daemon *d, char *err, size_t err_cap)
{
    const cfg_config *cfg = d->cfg;
    hsm_error he;
    memset(&he, 0, sizeof(he));
    cm_result r = hsm_token_open(&d->token, &he, cfg->cas[0].key_uri);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "[ca:%s] key: %s (%s)", cfg->cas[0].name, he.msg,
                  cm_result_name(r));
        return r;
    }
    d->keys = calloc(2 * cfg->num_cas, sizeof(hsm_key *));
    if (d->keys == NULL) {
        front_err(err, err_cap, "out of memory");
        return cm_result_make(CM_E_NOMEM);
    }
    for (size_t i = 0; i < cfg->num_cas; i++) {
        const cfg_ca *c = &cfg->cas[i];
        const char *uris[2] = {c->key_uri, c->cmp_key_uri != NULL ? c->cmp_key_uri : c->key_uri};
        for (size_t k = 0; k < 2; k++) {
            r = hsm_key_find(d->token, &d->keys[2 * i + k], &he, uris[k]);
            d->num_keys = 2 * i + k + 1;
            if (r.code == CM_E_LIMIT) {
                front_err(err, err_cap,
                          "[ca:%s] %s: the token has %u keys open, the most it allows (each CA "
                          "opens its key and its CMP key)",
                          c->name, k == 0 ? "key" : "cmp_key", HSM_MAX_KEYS_PER_TOKEN);
                return r;
            }
            if (!cm_ok(r)) {
                front_err(err, err_cap, "[ca:%s] %s: %s (%s)", c->name, k == 0 ? "key" : "cmp_key",
                          he.msg, cm_result_name(r));
                return r;
            }
        }
        r = ca_authority_matches_spki(c->authority, hsm_key_get0_spki(d->keys[2 * i]));
        if (!cm_ok(r)) {
            front_err(err, err_cap, "[ca:%s] cert %s does not hold the public key of %s", c->name,
                      c->cert_path, c->key_uri);
            return r;
        }
    }
    return cm_result_make(CM_OK);
}

CM_RESULT front_daemon_load(front_daemon **out, char *err, size_t err_cap, const char *path)
{
    *out = NULL;
    front_daemon *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        front_err(err, err_cap, "out of memory");
        return cm_result_make(CM_E_NOMEM);
    }
    cm_result r = cfg_load(&d->cfg, err, err_cap, path);
    if (!cm_ok(r)) {
        goto fail;
    }
    cm_runtime_set_log_level(d->cfg->log_level);
    if (d->cfg->num_cas == 0) {
        front_err(err, err_cap, "%s: no [ca:NAME] section", path);
        r = cm_result_make(CFG_E_MISSING);
        goto fail;
    }
    r = front_open_keys(d, err, err_cap);
    if (!cm_ok(r)) {
        goto fail;
    }
    cmp_protect_limits lim;
    cmp_protect_limits_default(&lim);
    lim.pbm_min_iterations = d->cfg->min_pbm_iterations;
    lim.pbm_max_iterations = d->cfg->max_pbm_iterations;
    lim.pbmac1_max_iterations = d->cfg->max_pbmac1_iterations;
    r = cmp_protect_ctx_new(&d->prot, NULL, NULL, &lim);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "PBM iteration limits rejected: %s", cm_result_name(r));
        goto fail;
    }
    *out = d;
    return cm_result_make(CM_OK);
fail:
    front_daemon_free(d);
    return r;
}

void front_daemon_report(const front_daemon *d, FILE *f)
{
    fprintf(f, "certmintd: %s is valid\n", d->cfg->path);
    for (size_t i = 0; i < d->cfg->num_cas; i++) {
        const hsm_key *k = d->keys[2 * i];
        fprintf(f, "  ca %-16s key %s (%u bits) %s\n", d->cfg->cas[i].name, hsm_key_get0_label(k),
                hsm_key_get_bits(k), &d->cfg->cas[i] == d->cfg->default_ca ? "[default]" : "");
    }
}

size_t front_ca_order(const cfg_config *cfg, size_t *order)
{
    // The default CA is answered at /.well-known/cmp: it goes first.
    size_t n = 0;
    for (size_t i = 0; i < cfg->num_cas; i++) {
        if (&cfg->cas[i] == cfg->default_ca) {
            order[n++] = i;
        }
    }
    for (size_t i = 0; i < cfg->num_cas; i++) {
        if (&cfg->cas[i] != cfg->default_ca) {
            order[n++] = i;
        }
    }
    return n;
}

// front_build_ca fills d->cas[k] from the configuration's CA |i|.
static cm_result front_build_ca(front_daemon *d, size_t k, size_t i, char *err, size_t err_cap)
{
    const cfg_ca *c = &d->cfg->cas[i];
    srv_ca *s = &d->cas[k];
    const cfg_clients *cl = c->clients;
    char terr[512];
    if (cl != NULL && cl->num_secrets > 0) {
        d->secrets[k] = calloc(cl->num_secrets, sizeof(srv_secret));
        if (d->secrets[k] == NULL) {
            front_err(err, err_cap, "out of memory");
            return cm_result_make(CM_E_NOMEM);
        }
        for (size_t j = 0; j < cl->num_secrets; j++) {
            d->secrets[k][j].ref = cm_span_make(cl->secrets[j].kid, cl->secrets[j].kid_len);
            d->secrets[k][j].secret =
                cm_span_make(cl->secrets[j].secret, cl->secrets[j].secret_len);
        }
    }
    if (cl != NULL && cl->num_ra_certs > 0) {
        d->ra_certs[k] = calloc(cl->num_ra_certs, sizeof(cm_span));
        if (d->ra_certs[k] == NULL) {
            front_err(err, err_cap, "out of memory");
            return cm_result_make(CM_E_NOMEM);
        }
        for (size_t j = 0; j < cl->num_ra_certs; j++) {
            d->ra_certs[k][j] = cm_span_make(cl->ra_certs[j], cl->ra_cert_lens[j]);
        }
    }
    const char *own[] = {c->cert_path};
    cm_result r = ca_trust_new(&d->own_trust[k], terr, sizeof(terr), own, 1, 4096);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "[ca:%s] %s", c->name, terr);
        return r;
    }
    hsm_key *ck = d->keys[2 * i], *pk = d->keys[2 * i + 1];
    const ca_authority *cmp_id = c->authority;
    if (c->cmp_cert_path != NULL && strcmp(c->cmp_cert_path, c->cert_path) != 0) {
        // A separate CMP protection certificate (id-kp-cmcCA), issued by this CA: its chain
        // for extraCerts is the CA certificate (and the CA's chain).
        r = ca_identity_load(&d->cmp_ids[k], terr, sizeof(terr), c->cmp_cert_path, c->cert_path);
        if (!cm_ok(r)) {
            front_err(err, err_cap, "[ca:%s] cmp_cert: %s", c->name, terr);
            return r;
        }
        r = ca_authority_matches_spki(d->cmp_ids[k], hsm_key_get0_spki(pk));
        if (!cm_ok(r)) {
            front_err(err, err_cap, "[ca:%s] cmp_cert %s does not hold the public key of %s",
                      c->name, c->cmp_cert_path, c->cmp_key_uri);
            return r;
        }
        cmp_id = d->cmp_ids[k];
    }
    *s = (srv_ca){.name = c->name,
                  .authority = c->authority,
                  .profile = c->profile->profile,
                  .ca_key = ck,
                  .ca_sig_alg = hsm_sig_alg_for_key(ck),
                  .cmp_cert = cmp_id,
                  .cmp_key = pk,
                  .cmp_sig_alg = hsm_sig_alg_for_key(pk),
                  .secrets = d->secrets[k],
                  .num_secrets = cl != NULL ? cl->num_secrets : 0,
                  .client_trust = cl != NULL ? cl->trust : NULL,
                  .own_trust = d->own_trust[k],
                  .ca_pubs = c->ca_pubs,
                  .sign_mac_responses = c->sign_mac_responses,
                  .unprotected_genm = c->unprotected_genm,
                  .ra_certs = d->ra_certs[k],
                  .num_ra_certs = cl != NULL ? cl->num_ra_certs : 0,
                  .root_update = {cm_span_make(c->root_update[0], c->root_update_len[0]),
                                  cm_span_make(c->root_update[1], c->root_update_len[1]),
                                  cm_span_make(c->root_update[2], c->root_update_len[2])},
                  .crl_min_interval = c->crl_min_interval,
                  .crl_validity = (int64_t)c->crl_validity_days * 86400};
    if (s->ca_sig_alg == HSM_SIG_NONE || s->cmp_sig_alg == HSM_SIG_NONE) {
        front_err(err, err_cap, "[ca:%s] unsupported key type", c->name);
        return cm_result_make(CM_E_INVALID_ARG);
    }
    return cm_result_make(CM_OK);
}

static cm_result front_build_engine(front_daemon *d, char *err, size_t err_cap)
{
    const cfg_config *cfg = d->cfg;
    d->num_cas = cfg->num_cas;
    d->cas = calloc(cfg->num_cas, sizeof(srv_ca));
    d->secrets = calloc(cfg->num_cas, sizeof(srv_secret *));
    d->own_trust = calloc(cfg->num_cas, sizeof(ca_trust *));
    d->ra_certs = calloc(cfg->num_cas, sizeof(cm_span *));
    d->cmp_ids = calloc(cfg->num_cas, sizeof(ca_authority *));
    if (d->cas == NULL || d->secrets == NULL || d->own_trust == NULL || d->ra_certs == NULL ||
        d->cmp_ids == NULL) {
        front_err(err, err_cap, "out of memory");
        return cm_result_make(CM_E_NOMEM);
    }
    size_t *order = calloc(cfg->num_cas, sizeof(size_t));
    if (order == NULL) {
        front_err(err, err_cap, "out of memory");
        return cm_result_make(CM_E_NOMEM);
    }
    const size_t n = front_ca_order(cfg, order);
    cm_result r = cm_result_make(CM_OK);
    for (size_t k = 0; k < n && cm_ok(r); k++) {
        r = front_build_ca(d, k, order[k], err, err_cap);
    }
    free(order);
    CM_TRY(r);
    srv_params sp = {.hsm = d->pool,
                     .store = d->store,
                     .prot = d->prot,
                     .cas = d->cas,
                     .num_cas = d->num_cas,
                     .message_time_window = cfg->message_time_window,
                     .confirm_wait_time = cfg->confirm_wait_time,
                     .arena_cap = (size_t)cfg->max_request_bytes * 4 + (1u << 20)};
    r = srv_engine_new(&d->engine, &sp);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot build the engine: %s", cm_result_name(r));
    }
    return r;
}

CM_RESULT front_daemon_start(front_daemon *d, char *err, size_t err_cap)
{
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = d->cfg->hsm_sessions;
    cm_result r = hsm_pool_new(&d->pool, d->token, &po);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot start %u HSM sessions: %s", po.sessions, cm_result_name(r));
        return r;
    }
    const char *url = d->cfg->store_url;
    store_options so = {.sync = d->cfg->store_sync_normal ? STORE_SYNC_NORMAL : STORE_SYNC_FULL};
    r = store_open(&d->store, url, &so);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot open the store %s: %s", url, cm_result_name(r));
        return r;
    }
    CM_TRY(front_build_engine(d, err, err_cap));
    d->head_timeout_ms = d->cfg->header_timeout * 1000u;
    d->idle_timeout_ms = d->cfg->idle_timeout * 1000u;
    d->limits = http_limits_default();
    d->limits.max_body = d->cfg->max_request_bytes;
    return cm_result_make(CM_OK);
}

CM_RESULT front_daemon_serve(front_daemon *d, char *err, size_t err_cap,
                             const char *listen_override)
{
    const char *listen[CFG_MAX_LISTEN];
    char addrs[CFG_MAX_LISTEN][64];
    for (size_t i = 0; i < d->cfg->num_listen; i++) {
        const cfg_listen *l = &d->cfg->listen[i];
        (void)snprintf(addrs[i], sizeof(addrs[i]), l->ipv6 ? "[%s]:%u" : "%s:%u", l->host,
                       (unsigned)l->port);
        listen[i] = addrs[i];
    }
    size_t num_listen = d->cfg->num_listen;
    if (listen_override != NULL) {
        listen[0] = listen_override;
        num_listen = 1;
    }
    net_server_config nc = {.listen = listen,
                            .num_listen = num_listen,
                            .io_threads = d->cfg->io_threads,
                            .max_connections = d->cfg->max_connections};
    const cm_result r = net_server_start(&d->net, &nc, front_net_app(), d);
    if (!cm_ok(r)) {
        d->net = NULL;
        front_err(err, err_cap, "cannot listen on %s: %s", num_listen > 0 ? listen[0] : "-",
                  cm_result_name(r));
        return r;
    }
    for (size_t i = 0; i < num_listen; i++) {
        cm_log(CM_LOG_INFO,
               "certmintd: serving CMP on http://%s (port %u), %zu CA(s), %u HSM "
               "session(s)",
               listen[i], (unsigned)net_server_port(d->net, i), d->num_cas, d->cfg->hsm_sessions);
    }
    return cm_result_make(CM_OK);
}

void front_daemon_stop(front_daemon *d)
{
    if (d->net == NULL) {
        return;
    }
    net_server_stop(d->net);
    net_server_wait(d->net);
    d->net = NULL;
}

// front_daemon_leader reports whether this node runs the duties only one node sharing the
// store may run (store_leader_try: a PostgreSQL advisory lock; always on SQLite).
static bool front_daemon_leader(front_daemon *d)
{
    bool leader = false;
    const cm_result r = store_leader_try(d->store, &leader);
    if (!cm_ok(r)) {
        cm_log(CM_LOG_DEBUG, "certmintd: leader lock: %s", cm_result_name(r));
    }
    return leader;
}

// front_daemon_crls issues the CRLs that are due (the leader only).
static void front_daemon_crls(front_daemon *d)
{
    store_reader *rd = NULL;
    if (!cm_ok(store_reader_open(d->store, &rd))) {
        return;
    }
    const int64_t now = cm_time_now();
    for (size_t i = 0; i < d->num_cas; i++) {
        const srv_ca *ca = &d->cas[i];
        bool due = false;
        cm_result r = srv_crl_due(rd, ca->name, now, ca->crl_min_interval, ca->crl_validity, &due);
        if (!cm_ok(r) || !due) {
            continue;
        }
        srv_crl_params cp = {.store = d->store,
                             .pool = d->pool,
                             .key = ca->ca_key,
                             .sig_alg = ca->ca_sig_alg,
                             .authority = ca->authority,
                             .ca_name = ca->name,
                             .validity_s = ca->crl_validity};
        cm_arena a;
        cm_arena_init(&a, 4096, 0);
        cm_span crl;
        r = srv_crl_issue(&cp, now, &a, &crl);
        if (cm_ok(r)) {
            cm_log(CM_LOG_INFO, "certmintd: [ca:%s] issued a CRL (%zu bytes)", ca->name, crl.len);
        } else {
            cm_log(CM_LOG_WARN, "certmintd: [ca:%s] cannot issue a CRL: %s", ca->name,
                   cm_result_name(r));
        }
        cm_arena_cleanup(&a);
    }
    store_reader_close(rd);
}

void front_daemon_refresh_crls(front_daemon *d)
{
    if (front_daemon_leader(d)) {
        front_daemon_crls(d);
    }
}

void front_daemon_maintain(front_daemon *d, int64_t now)
{
    // CRLs, the sweep and expiry run on one node at a time; the others stand by and take over
    // within a maintenance period when the leader's database session ends.
    if (!front_daemon_leader(d)) {
        return;
    }
    uint64_t revoked = 0;
    const cm_result r = srv_engine_maintain(d->engine, now, &revoked);
    front_daemon_crls(d);
    if (!cm_ok(r)) {
        cm_log(CM_LOG_WARN, "certmintd: maintenance: %s", cm_result_name(r));
    } else if (revoked > 0) {
        cm_log(CM_LOG_INFO, "certmintd: revoked %llu certificate(s) never confirmed",
               (unsigned long long)revoked);
    }
}

srv_engine *front_daemon_engine(const front_daemon *d)
{
    return d->engine;
}

size_t front_daemon_num_cas(const front_daemon *d)
{
    return d->num_cas;
}
