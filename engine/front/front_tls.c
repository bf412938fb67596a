// engine/front: HTTPS (issue 18). The TLS identity from the configuration's tls_ keys (engine/net
// does the TLS itself, in the loops), what a connection's handshake established (its client
// certificate, logged with each request and handed to the engine, which never authenticates a
// CMP message by it: RFC 9811), and the TLS families of /metrics.
#include <stdio.h>
#include <string.h>

#include "engine/front/front_internal.h"

cm_result front_tls_load(front_daemon *d, char *err, size_t err_cap)
{
    const cfg_config *cfg = d->cfg;
    if (cfg->tls_cert == NULL) {
        return cm_result_make(CM_OK);
    }
    const net_tls_config tc = {.cert_path = cfg->tls_cert,
                               .key_path = cfg->tls_key,
                               .chain_path = cfg->tls_chain,
                               .client_ca_path = cfg->tls_client_ca,
                               .client_auth = (net_tls_client_auth)cfg->tls_client_auth,
                               .ticket_lifetime_s = cfg->tls_ticket_lifetime};
    char why[512] = "";
    const cm_result r = net_tls_new(&d->tls, why, sizeof(why), &tc);
    if (!cm_ok(r) && err_cap > 0) {
        (void)snprintf(err, err_cap, "%s: [certmintd] %s", cfg->path, why);
    }
    return r;
}

void front_tls_learn(front_loop *l, front_conn *fc)
{
    if (fc->tls_known) {
        return;
    }
    fc->tls_known = true;
    net_tls_info info;
    if (l->tp->tls_info == NULL || !l->tp->tls_info(l->tp_arg, fc->ref, &info)) {
        return;
    }
    fc->tls = true;
    fc->tls_der = info.peer_cert;
    (void)snprintf(fc->tls_peer, sizeof(fc->tls_peer), "%s", info.peer_subject);
}

void front_tls_pass(front_conn *fc)
{
    if (fc->tls_der.len == 0) {
        return;
    }
    // The request may outlive the connection (jobs out when it closes): its own copy.
    uint8_t *p = cm_arena_alloc(srv_request_arena(fc->req), fc->tls_der.len);
    if (p != NULL) {
        memcpy(p, fc->tls_der.p, fc->tls_der.len);
        srv_request_set_tls_peer(fc->req, cm_span_make(p, fc->tls_der.len));
    }
}

size_t front_tls_metrics_write(const front_daemon *d, const net_stats *ns, char *out, size_t cap)
{
    if (d->tls == NULL || cap == 0) {
        return 0;
    }
    const int n = snprintf(
        out, cap,
        "# HELP certmint_tls_handshakes_total TLS handshakes on the https:// listeners, by "
        "result: full, resumed (a session ticket), failed (a protocol error, a refused "
        "version, suite or client certificate, or the client left first), timeout "
        "(tls_handshake_timeout).\n"
        "# TYPE certmint_tls_handshakes_total counter\n"
        "certmint_tls_handshakes_total{result=\"full\"} %llu\n"
        "certmint_tls_handshakes_total{result=\"resumed\"} %llu\n"
        "certmint_tls_handshakes_total{result=\"failed\"} %llu\n"
        "certmint_tls_handshakes_total{result=\"timeout\"} %llu\n"
        "# HELP certmint_tls_handshake_seconds I/O loop time spent in TLS handshakes (the "
        "handshake's CPU on the loop), all results.\n"
        "# TYPE certmint_tls_handshake_seconds summary\n"
        "certmint_tls_handshake_seconds_sum %.6f\n"
        "certmint_tls_handshake_seconds_count %llu\n"
        "# HELP certmint_tls_connections_open TLS connections open now (also in "
        "certmint_connections_open).\n"
        "# TYPE certmint_tls_connections_open gauge\n"
        "certmint_tls_connections_open %llu\n",
        (unsigned long long)ns->tls_full, (unsigned long long)ns->tls_resumed,
        (unsigned long long)ns->tls_failed, (unsigned long long)ns->tls_timeouts,
        (double)ns->tls_handshake_ns / 1e9,
        (unsigned long long)(ns->tls_full + ns->tls_resumed + ns->tls_failed + ns->tls_timeouts),
        (unsigned long long)ns->tls_open);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap;
}
