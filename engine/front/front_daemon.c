// engine/front: the daemon's wiring — configuration into keys, CAs, the HSM pool, the store
// and the engine; serving through engine/net; the maintenance duties.
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "engine/der/der_oid.h"
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
    net_tls_free(d->tls);
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
        free(d->profiles != NULL ? d->profiles[i] : NULL);
        ca_trust_free(d->own_trust != NULL ? d->own_trust[i] : NULL);
        ca_authority_free(d->cmp_ids != NULL ? d->cmp_ids[i] : NULL);
    }
    free(d->secrets);
    free(d->ra_certs);
    free(d->profiles);
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
    lim.policy = &d->cfg->protection_algs;
    r = cmp_protect_ctx_new(&d->prot, NULL, NULL, &lim);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "PBM iteration limits rejected: %s", cm_result_name(r));
        goto fail;
    }
    r = front_tls_load(d, err, err_cap);
    if (!cm_ok(r)) {
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
    if (d->tls != NULL) {
        static const char *const k_auth[] = {"off", "optional", "required"};
        fprintf(f, "  tls %s (%zu https:// address(es)), client certificates %s\n",
                d->cfg->tls_cert, d->cfg->num_tls_listen, k_auth[d->cfg->tls_client_auth % 3]);
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

// front_ca_sig_alg applies [ca:NAME] sig_alg: the certificate (and CRL) signatures, and the CMP
// protection signatures when the CMP key can make it too.
static cm_result front_ca_sig_alg(srv_ca *s, const cfg_ca *c, char *err, size_t err_cap)
{
    if (c->sig_alg == CRMF_ALG_NONE) {
        return cm_result_make(CM_OK);
    }
    const hsm_sig_alg sa = hsm_sig_alg_of_row((int)c->sig_alg);
    if (sa == HSM_SIG_NONE || !hsm_sig_alg_fits(sa, hsm_key_get_type(s->ca_key))) {
        front_err(err, err_cap, "[ca:%s] sig_alg %s %s", c->name, crmf_alg_get(c->sig_alg)->name,
                  sa == HSM_SIG_NONE ? "is not one the token can make (ECDSA or RSA with SHA-2, "
                                       "RSASSA-PSS with SHA-2, Ed25519, Ed448)"
                                     : "does not fit the CA key");
        return cm_result_make(CM_E_INVALID_ARG);
    }
    s->ca_sig_alg = sa;
    if (hsm_sig_alg_fits(sa, hsm_key_get_type(s->cmp_key))) {
        s->cmp_sig_alg = sa;
    }
    return cm_result_make(CM_OK);
}

// front_policy is what the profile |p| decides about trust, authorization, approval and central
// key generation (srv_policy).
static srv_policy front_policy(const cfg_profile *p)
{
    return (srv_policy){.allow_key_reuse = p->allow_key_reuse,
                        .revoke_on_update = p->revoke_on_update,
                        .subject_from_request = p->subject_from_request,
                        .manual_approval = p->approval_manual,
                        .central_keygen = (srv_ckg_mode)p->central_keygen,
                        .central_key_types = p->central_key_types,
                        .central_keygen_min_secret = p->central_keygen_min_secret,
                        .central_keygen_kdf_iterations = p->central_keygen_kdf_iterations};
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
            d->secrets[k][j].kind = cl->secrets[j].is_key ? CMP_SECRET_KEY : CMP_SECRET_PASSWORD;
            d->secrets[k][j].max_certs = cl->secrets[j].max_certs;
            d->secrets[k][j].subject_pattern = cl->secrets[j].subject_pattern;
            d->secrets[k][j].ra = cl->secrets[j].ra;
        }
    }
    // The profiles a certProfile may select (issue 14), with their trust settings; after them,
    // in one more slot, the cross-certification profile (issue 16).
    const size_t num_prof = cl != NULL ? cl->num_profiles : 0;
    const bool cross = cl != NULL && cl->num_cross_certs > 0 && cl->cross_profile != NULL;
    if (num_prof > 0 || cross) {
        d->profiles[k] = calloc(num_prof + 1, sizeof(srv_profile));
        if (d->profiles[k] == NULL) {
            front_err(err, err_cap, "out of memory");
            return cm_result_make(CM_E_NOMEM);
        }
        for (size_t j = 0; j < num_prof; j++) {
            const cfg_profile *p = cl->profiles[j];
            d->profiles[k][j] =
                (srv_profile){.name = p->name, .profile = p->profile, .policy = front_policy(p)};
        }
        if (cross) {
            const cfg_profile *p = cl->cross_profile;
            d->profiles[k][num_prof] =
                (srv_profile){.name = p->name, .profile = p->profile, .policy = front_policy(p)};
        }
    }
    // The RA certificates, then the cross-certification requesters (issue 16), in one array.
    const size_t num_ra = cl != NULL ? cl->num_ra_certs : 0;
    const size_t num_cross = cross ? cl->num_cross_certs : 0;
    if (num_ra + num_cross > 0) {
        d->ra_certs[k] = calloc(num_ra + num_cross, sizeof(cm_span));
        if (d->ra_certs[k] == NULL) {
            front_err(err, err_cap, "out of memory");
            return cm_result_make(CM_E_NOMEM);
        }
        for (size_t j = 0; j < num_ra; j++) {
            d->ra_certs[k][j] = cm_span_make(cl->ra_certs[j], cl->ra_cert_lens[j]);
        }
        for (size_t j = 0; j < num_cross; j++) {
            d->ra_certs[k][num_ra + j] = cm_span_make(cl->cross_certs[j], cl->cross_cert_lens[j]);
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
                  .crl_validity = (int64_t)c->crl_validity_days * 86400,
                  .ra_cmcra_optional = cl != NULL && !cl->ra_require_cmcra,
                  .profile_name = c->profile->name,
                  .policy = front_policy(c->profile),
                  .profiles = d->profiles[k],
                  .num_profiles = num_prof,
                  .cross_requesters = num_cross > 0 ? d->ra_certs[k] + num_ra : NULL,
                  .num_cross_requesters = num_cross,
                  .cross_profile = cross ? &d->profiles[k][num_prof] : NULL};
    // Key generation authority (RFC 9483 §4.1.6): the CA's own key, or a CMP certificate
    // with id-kp-cmKGA (certmint init --kga).
    bool kga_eku = false;
    r = ca_cert_has_eku(ca_authority_cert(cmp_id), CM_SPAN_LIT(DER_OID_KP_CM_KGA), &kga_eku);
    s->kga = cmp_id == c->authority || (cm_ok(r) && kga_eku);
    if (s->ca_sig_alg == HSM_SIG_NONE || s->cmp_sig_alg == HSM_SIG_NONE) {
        front_err(err, err_cap, "[ca:%s] unsupported key type", c->name);
        return cm_result_make(CM_E_INVALID_ARG);
    }
    return front_ca_sig_alg(s, c, err, err_cap);
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
    d->profiles = calloc(cfg->num_cas, sizeof(srv_profile *));
    if (d->cas == NULL || d->secrets == NULL || d->own_trust == NULL || d->ra_certs == NULL ||
        d->cmp_ids == NULL || d->profiles == NULL) {
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
                     .prot_algs = &cfg->protection_algs,
                     .pop_algs = &cfg->pop_algs,
                     .arena_cap = (size_t)cfg->max_request_bytes * 4 + (1u << 20),
                     .space = &d->space,
                     .max_nested_depth = cfg->max_nested_depth,
                     .max_nested_messages = cfg->max_nested_messages,
                     .nested_threads = cfg->nested_threads,
                     .waiting_timeout = cfg->waiting_timeout,
                     .max_hsm_queue = cfg->max_hsm_queue,
                     .max_commit_latency = cfg->max_commit_latency,
                     .max_pending = cfg->max_pending,
                     .approval_check_after = cfg->approval_check_after,
                     .kdf_threads = cfg->kdf_threads,
                     .kdf_max_queue = cfg->kdf_max_queue,
                     .kdf_inline = cfg->kdf_inline,
                     .mac_failures_max = cfg->mac_failures_max,
                     .mac_failure_window = cfg->mac_failure_window,
                     .mac_failure_backoff = cfg->mac_failure_backoff,
                     .error_signatures_per_peer = cfg->error_signatures_per_peer,
                     .retransmit_window =
                         cfg->retransmit_window < 0 ? SRV_RETRANSMIT_AUTO : cfg->retransmit_window,
                     .retransmit_max_entries = cfg->retransmit_cache_entries,
                     .retransmit_max_bytes = (size_t)cfg->retransmit_cache_bytes};
    r = srv_engine_new(&d->engine, &sp);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot build the engine: %s", cm_result_name(r));
        return r;
    }
    // The drain of delayed delivery (issue 16): signs what waits; srv_engine_free stops it.
    r = srv_engine_start_pending(d->engine);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot start the pending drain: %s", cm_result_name(r));
    }
    return r;
}

CM_RESULT front_daemon_start(front_daemon *d, char *err, size_t err_cap)
{
    // First, so the store and the HSM open under the limit the server will run with.
    uint64_t limit = 0;
    const cm_result lr = net_fd_limit_raise(0, &limit);
    if (!cm_ok(lr)) {
        cm_log(CM_LOG_WARN, "certmintd: cannot raise RLIMIT_NOFILE: %s", cm_result_text(lr));
        struct rlimit rl;
        limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0;
    }
    __atomic_store_n(&d->fd_limit, limit, __ATOMIC_RELAXED);
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = d->cfg->hsm_sessions;
    po.dispatch = (hsm_dispatch)d->cfg->hsm_dispatch;
    cm_result r = hsm_pool_new(&d->pool, d->token, &po);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot start %u HSM sessions: %s", po.sessions, cm_result_name(r));
        return r;
    }
    // hsm_dispatch = auto: time signatures on this thread and sign on the loops' own sessions
    // when the token computes in this process (SoftHSM), in the pool when it mostly waits (a
    // network HSM). The first CA's CMP key signs the 64-byte test messages (its CA key when it
    // has none): they are no DER structure, so nothing can take them for a certificate.
    hsm_calibration hc;
    const hsm_key *probe = d->num_keys > 1 ? d->keys[1] : NULL;
    r = hsm_pool_calibrate(d->pool, &hc, probe,
                           probe != NULL ? hsm_sig_alg_for_key(probe) : HSM_SIG_NONE);
    if (!cm_ok(r)) {
        cm_log(CM_LOG_WARN, "certmintd: hsm_dispatch auto: a test signature failed (%s): pool",
               cm_result_name(r));
    } else if (hc.measured) {
        cm_log(CM_LOG_INFO,
               "certmintd: hsm_dispatch auto: C_Sign %llu us (%llu us CPU of this thread): %s",
               (unsigned long long)(hc.wall_ns / 1000), (unsigned long long)(hc.cpu_ns / 1000),
               hsm_dispatch_name(hc.dispatch));
    }
    const char *url = d->cfg->store_url;
    store_options so = {.sync = d->cfg->store_sync_normal ? STORE_SYNC_NORMAL : STORE_SYNC_FULL};
    r = store_open(&d->store, url, &so);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "cannot open the store %s: %s", url, cm_result_name(r));
        return r;
    }
    r = store_space_init(&d->space, url, d->cfg->store_min_free);
    if (!cm_ok(r)) {
        front_err(err, err_cap, "store %s: its directory's name is too long", url);
        return r;
    }
    front_daemon_refresh_gauges(d); // a start on a nearly full disk warns at once
    CM_TRY(front_build_engine(d, err, err_cap));
    d->head_timeout_ms = d->cfg->header_timeout * 1000u;
    d->idle_timeout_ms = d->cfg->idle_timeout * 1000u;
    d->limits = http_limits_default();
    d->limits.max_body = d->cfg->max_request_bytes;
    return cm_result_make(CM_OK);
}

cm_result front_fd_count(uint64_t *out)
{
    DIR *dir = opendir("/proc/self/fd");
    CM_ENSURE(dir != NULL, cm_code_from_errno(errno));
    uint64_t n = 0;
    for (const struct dirent *e = readdir(dir); e != NULL; e = readdir(dir)) {
        n += e->d_name[0] != '.';
    }
    (void)closedir(dir);
    *out = n > 0 ? n - 1 : 0; // the directory's own descriptor
    return cm_result_make(CM_OK);
}

cm_result front_fd_plan(net_server_config *nc, const front_fd_budget *b, uint64_t *out_need,
                        uint64_t *out_fixed)
{
    CM_ENSURE(nc->io_threads > 0, CM_E_INVALID_ARG); // the caller resolves the defaults
    if (nc->max_connections == 0) {
        nc->max_connections = NET_DEFAULT_MAX_CONNECTIONS;
    }
    const uint64_t others = b->open_now + b->per_reader * b->readers + b->reserve;
    // net_server_fds_needed is linear in max_connections (one descriptor per connection per
    // loop): what the server needs besides its main connections is its value at one, less one
    // per loop.
    net_server_config one = *nc;
    one.max_connections = 1;
    const uint64_t loops = nc->io_threads;
    const uint64_t server_fixed = net_server_fds_needed(&one) - loops;
    *out_need = net_server_fds_needed(nc) + others;
    *out_fixed = server_fixed + others;
    if (*out_need <= b->limit) {
        return cm_result_make(CM_OK);
    }
    const uint64_t per_loop = b->limit > *out_fixed ? (b->limit - *out_fixed) / loops : 0;
    CM_ENSURE(per_loop >= FRONT_MIN_CONNECTIONS, CM_E_LIMIT);
    nc->max_connections = (uint32_t)per_loop; // below the configured value, so it fits
    return cm_result_make(CM_OK);
}

// front_fd_budget_measure fills |b| for the running process: what is open now and what one
// store reader adds (opened and closed here, so the backend's real count is used).
static void front_fd_budget_measure(front_daemon *d, front_fd_budget *b, uint32_t io_threads)
{
    memset(b, 0, sizeof(*b));
    b->limit = __atomic_load_n(&d->fd_limit, __ATOMIC_RELAXED);
    b->readers = (uint64_t)io_threads + 2;
    b->reserve = FRONT_FD_RESERVE;
    b->per_reader = FRONT_FD_PER_READER;
    uint64_t before = 0, with = 0;
    if (!cm_ok(front_fd_count(&before))) {
        b->open_now = 64; // no /proc: a generous guess for the store, the HSM and the log
        return;
    }
    b->open_now = before;
    store_reader *rd = NULL;
    if (cm_ok(store_reader_open(d->store, &rd))) {
        // Nothing seen (the backend opens lazily, or another thread closed one meanwhile):
        // keep the default.
        if (cm_ok(front_fd_count(&with)) && with > before) {
            b->per_reader = with - before;
        }
        store_reader_close(rd);
    }
}

// front_fd_check fits |nc| into the soft limit front_daemon_start raised (front_fd_plan):
// max_connections lowered with a WARN that names the numbers, or serving refused with them.
static cm_result front_fd_check(front_daemon *d, net_server_config *nc, char *err, size_t err_cap)
{
    front_fd_budget b;
    front_fd_budget_measure(d, &b, nc->io_threads);
    const uint32_t asked = nc->max_connections;
    uint64_t need = 0, fixed = 0;
    const cm_result r = front_fd_plan(nc, &b, &need, &fixed);
    char why[320];
    const uint64_t others = b.open_now + b.readers * b.per_reader + b.reserve;
    (void)snprintf(why, sizeof(why),
                   "%u I/O thread(s) x %u connections, plus %llu: %llu for the listeners, admin "
                   "slots and refused sockets, %llu open now (store, HSM, log), %llu store "
                   "readers x %llu, a reserve of %llu",
                   nc->io_threads, asked, (unsigned long long)fixed,
                   (unsigned long long)(fixed - others), (unsigned long long)b.open_now,
                   (unsigned long long)b.readers, (unsigned long long)b.per_reader,
                   (unsigned long long)b.reserve);
    if (!cm_ok(r)) {
        front_err(err, err_cap,
                  "RLIMIT_NOFILE is %llu descriptors; %llu are needed (%s), and fewer than %u "
                  "connections per I/O thread would be left: raise the limit (systemd "
                  "LimitNOFILE=, ulimit -n) or lower io_threads",
                  (unsigned long long)b.limit, (unsigned long long)need, why,
                  FRONT_MIN_CONNECTIONS);
        return r;
    }
    if (nc->max_connections != asked) {
        cm_log(CM_LOG_WARN,
               "certmintd: max_connections lowered from %u to %u per I/O thread: RLIMIT_NOFILE "
               "is %llu descriptors and %llu are needed (%s); raise the limit (systemd "
               "LimitNOFILE=, ulimit -n) or set max_connections to at most %u",
               asked, nc->max_connections, (unsigned long long)b.limit, (unsigned long long)need,
               why, nc->max_connections);
    } else {
        cm_log(CM_LOG_INFO, "certmintd: descriptors: at most %llu needed of RLIMIT_NOFILE %llu",
               (unsigned long long)need, (unsigned long long)b.limit);
    }
    return cm_result_make(CM_OK);
}

// front_addr_text writes a configured address as engine/net takes it.
static const char *front_addr_text(char *out, size_t cap, const cfg_listen *l)
{
    (void)snprintf(out, cap, l->ipv6 ? "[%s]:%u" : "%s:%u", l->host, (unsigned)l->port);
    return out;
}

CM_RESULT front_daemon_serve(front_daemon *d, char *err, size_t err_cap,
                             const char *listen_override)
{
    const char *listen[CFG_MAX_LISTEN];
    char addrs[CFG_MAX_LISTEN][64];
    for (size_t i = 0; i < d->cfg->num_listen; i++) {
        listen[i] = front_addr_text(addrs[i], sizeof(addrs[i]), &d->cfg->listen[i]);
    }
    size_t num_listen = d->cfg->num_listen;
    uint32_t tls_mask = 0; // the https:// addresses (issue 18)
    for (size_t i = 0; i < num_listen; i++) {
        tls_mask |= d->cfg->listen[i].tls ? 1u << i : 0;
    }
    if (listen_override != NULL) {
        const bool https = strncmp(listen_override, "https://", 8) == 0;
        listen[0] = listen_override + (https                                         ? 8
                                       : strncmp(listen_override, "http://", 7) == 0 ? 7
                                                                                     : 0);
        num_listen = 1;
        tls_mask = https ? 1u : 0;
    }
    if (tls_mask != 0 && d->tls == NULL) {
        front_err(err, err_cap, "https://%s needs tls_cert and tls_key", listen[0]);
        return cm_result_make(CFG_E_MISSING);
    }
    const char *admin[CFG_MAX_ADMIN_LISTEN];
    char admin_addrs[CFG_MAX_ADMIN_LISTEN][64];
    for (size_t i = 0; i < d->cfg->num_admin_listen; i++) {
        admin[i] =
            front_addr_text(admin_addrs[i], sizeof(admin_addrs[i]), &d->cfg->admin_listen[i]);
    }
    net_server_config nc = {.listen = listen,
                            .num_listen = num_listen,
                            .io_threads = d->cfg->io_threads,
                            .max_connections = d->cfg->max_connections,
                            .max_connections_per_peer = d->cfg->max_connections_per_peer,
                            .reject_response = CM_SPAN_LIT(FRONT_REJECT_RESPONSE),
                            .admin_listen = admin,
                            .num_admin_listen = d->cfg->num_admin_listen,
                            .admin_max_connections =
                                d->cfg->num_admin_listen > 0 ? d->cfg->admin_max_connections : 0,
                            .tls = d->tls,
                            .tls_listen_mask = tls_mask,
                            .tls_handshake_ms = d->cfg->tls_handshake_timeout * 1000u};
    // CoAP first, so the descriptor check counts its sockets and store reader as open.
    cm_result r = front_coap_start(&d->coap, d, err, err_cap);
    if (!cm_ok(r)) {
        return r;
    }
    r = front_fd_check(d, &nc, err, err_cap);
    if (!cm_ok(r)) {
        front_coap_stop(d->coap);
        d->coap = NULL;
        return r;
    }
    // Read by /metrics on the loops: set before they start.
    d->conns_per_loop = nc.max_connections;
    d->admin_per_loop = nc.admin_max_connections;
    d->io_threads = nc.io_threads;
    r = net_server_start(&d->net, &nc, front_net_app(), d);
    if (!cm_ok(r)) {
        d->net = NULL;
        front_coap_stop(d->coap);
        d->coap = NULL;
        front_err(err, err_cap, "cannot listen on %s: %s", num_listen > 0 ? listen[0] : "-",
                  cm_result_name(r));
        return r;
    }
    for (size_t i = 0; i < num_listen; i++) {
        cm_log(CM_LOG_INFO,
               "certmintd: serving CMP on %s://%s (port %u), %zu CA(s), %u HSM "
               "session(s)",
               (tls_mask >> i & 1u) != 0 ? "https" : "http", listen[i],
               (unsigned)net_server_port(d->net, i), d->num_cas, d->cfg->hsm_sessions);
    }
    for (size_t i = 0; i < nc.num_admin_listen; i++) {
        cm_log(CM_LOG_INFO,
               "certmintd: serving /healthz and /metrics on http://%s (port %u), %u "
               "connection(s) per I/O thread",
               admin[i], (unsigned)net_server_admin_port(d->net, i), nc.admin_max_connections);
    }
    for (size_t i = 0; i < d->cfg->num_coap_listen; i++) {
        char addr[64];
        cm_log(CM_LOG_INFO, "certmintd: serving CMP over CoAP on coap://%s (UDP port %u)",
               front_addr_text(addr, sizeof(addr), &d->cfg->coap_listen[i]),
               (unsigned)front_coap_port(d->coap, i));
    }
    return cm_result_make(CM_OK);
}

void front_daemon_stop(front_daemon *d)
{
    front_coap_stop(d->coap); // its requests in flight answered, like the loops'
    d->coap = NULL;
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

void front_daemon_refresh_gauges(front_daemon *d)
{
    const cm_result sr = store_space_refresh(&d->space); // logs what it finds
    (void)sr;
    uint64_t n = 0;
    if (cm_ok(front_fd_count(&n))) {
        __atomic_store_n(&d->fds_open, n, __ATOMIC_RELAXED);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        __atomic_store_n(&d->fd_limit, (uint64_t)rl.rlim_cur, __ATOMIC_RELAXED);
    }
}

void front_daemon_maintain(front_daemon *d, int64_t now)
{
    // Every node watches its own gauges; CRLs, the sweep and expiry run on one node at a time,
    // the others stand by and take over within a maintenance period when the leader's
    // database session ends.
    front_daemon_refresh_gauges(d);
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

void front_daemon_reload_crls(front_daemon *d)
{
    for (size_t i = 0; i < d->cfg->num_clients; i++) {
        const cfg_clients *cl = &d->cfg->clients[i];
        if (cl->num_crl_paths == 0) {
            continue;
        }
        char err[600];
        if (cm_ok(cfg_clients_reload_crls(cl, err, sizeof(err)))) {
            cm_log(CM_LOG_INFO, "certmintd: [clients:%s] reloaded %zu CRL(s)", cl->name,
                   ca_trust_num_crls(cl->trust));
        } else {
            cm_log(CM_LOG_WARN, "certmintd: %s (the previous CRLs stay in force)", err);
        }
    }
}
