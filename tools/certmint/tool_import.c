// certmint import-ca-cert -c CONF --cert FILE [--chain FILE]: finishes an instance made with
// 'certmint init --csr': checks the certificate is a CA certificate holding the CA key,
// installs it (and the chain), issues the CMP protection certificate with it, and checks the
// configuration loads.
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "tools/certmint/tool.h"

int tool_import_ca_cert(int argc, char **argv)
{
    const char *conf = NULL, *cert = NULL, *chain = NULL;
    for (int i = 2; i < argc; i++) {
        const bool has = i + 1 < argc;
        if (strcmp(argv[i], "-c") == 0 && has) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "--cert") == 0 && has) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--chain") == 0 && has) {
            chain = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: certmint import-ca-cert -c CONF --cert FILE [--chain FILE]\n"
                   "  Installs the CA certificate a parent CA issued for DIR/ca.csr (made by\n"
                   "  'certmint init --csr'), and its chain; issues the CMP protection\n"
                   "  certificate. Exit: 0 ok, 1 failed, 2 usage.\n");
            return 0;
        } else {
            fprintf(stderr, "certmint import-ca-cert: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (conf == NULL || cert == NULL) {
        fprintf(stderr, "certmint import-ca-cert: -c CONF and --cert FILE are required\n");
        return 2;
    }
    char conf_abs[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 64];
    if (realpath(conf, conf_abs) == NULL) {
        fprintf(stderr, "certmint import-ca-cert: %s: %s\n", conf, strerror(errno));
        return 1;
    }
    (void)snprintf(dir, sizeof(dir), "%s", conf_abs);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    struct stat st;
    if (stat(tool_path(p, sizeof(p), dir, "ca.pem"), &st) == 0) {
        fprintf(stderr,
                "certmint import-ca-cert: %s already exists: this instance has its CA "
                "certificate\n",
                p);
        return 1;
    }
    tool_env_load(conf_abs);
    tool_text t;
    char key_uri[PATH_MAX * 2], cmp_uri[PATH_MAX * 2], err[512];
    if (!tool_text_read("certmint import-ca-cert", &t, conf_abs)) {
        return 1;
    }
    int rc = 1;
    hsm_token *tok = NULL;
    hsm_key *ca_key = NULL, *cmp_key = NULL;
    hsm_pool *pool = NULL;
    ca_authority *authority = NULL;
    uint8_t *der = NULL, *cmp_name = NULL, *pem = NULL, *chain_pem = NULL;
    size_t der_len = 0, cmp_name_len = 0, pem_len = 0, chain_len = 0;
    hsm_error herr;
    memset(&herr, 0, sizeof(herr));
    if (!tool_conf_value(&t, "key", key_uri, sizeof(key_uri)) ||
        !tool_conf_value(&t, "cmp_key", cmp_uri, sizeof(cmp_uri))) {
        fprintf(stderr,
                "certmint import-ca-cert: %s has no key/cmp_key (not made by "
                "'certmint init --csr'?)\n",
                conf_abs);
        goto out;
    }
    if (!cm_ok(ca_authority_load(&authority, err, sizeof(err), cert, chain))) {
        fprintf(stderr, "certmint import-ca-cert: %s\n", err);
        goto out;
    }
    hsm_pool_opts po;
    hsm_pool_opts_default(&po);
    po.sessions = 1;
    cm_result r = hsm_token_open(&tok, &herr, key_uri);
    if (cm_ok(r)) {
        r = hsm_key_find(tok, &ca_key, &herr, key_uri);
    }
    if (cm_ok(r)) {
        r = hsm_key_find(tok, &cmp_key, &herr, cmp_uri);
    }
    if (cm_ok(r)) {
        r = hsm_pool_new(&pool, tok, &po);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint import-ca-cert: PKCS#11: %s (%s)\n", herr.msg, cm_result_name(r));
        goto out;
    }
    if (!cm_ok(ca_authority_matches_spki(authority, hsm_key_get0_spki(ca_key)))) {
        fprintf(stderr,
                "certmint import-ca-cert: %s does not hold the CA key of this instance "
                "(was it issued for %s/ca.csr?)\n",
                cert, dir);
        goto out;
    }
    const int64_t left = (ca_authority_not_after(authority) - cm_time_now()) / 86400;
    const int days = left > 825 ? 825 : (int)(left > 1 ? left : 1);
    if (!tool_parse_dn("/O=certmint/CN=certmint CMP protection", &cmp_name, &cmp_name_len) ||
        !tool_issue(pool, ca_key, hsm_sig_alg_for_key(ca_key), authority, cmp_key,
                    cm_span_make(cmp_name, cmp_name_len), days, 0, &der, &der_len) ||
        !tool_read_all(cert, &pem, &pem_len) ||
        (chain != NULL && !tool_read_all(chain, &chain_pem, &chain_len))) {
        goto out;
    }
    if (!tool_write_file(tool_path(p, sizeof(p), dir, "ca.pem"), pem, pem_len, 0644) ||
        !tool_write_pem_cert(tool_path(p, sizeof(p), dir, "cmp.pem"), der, der_len)) {
        goto out;
    }
    if (chain != NULL) {
        // "chain = chain.pem" goes right after "cert = ca.pem".
        static const char k_after[] = "cert = ca.pem\n";
        char *at = strstr(t.p, k_after);
        if (at == NULL || !tool_write_file(tool_path(p, sizeof(p), dir, "chain.pem"), chain_pem,
                                           chain_len, 0644)) {
            fprintf(stderr, "certmint import-ca-cert: cannot add the chain to %s\n", conf_abs);
            goto out;
        }
        const size_t head = (size_t)(at - t.p) + sizeof(k_after) - 1;
        static const char k_line[] = "chain = chain.pem\n";
        char *nt = malloc(t.len + sizeof(k_line));
        if (nt == NULL) {
            goto out;
        }
        memcpy(nt, t.p, head);
        memcpy(nt + head, k_line, sizeof(k_line) - 1);
        memcpy(nt + head + sizeof(k_line) - 1, t.p + head, t.len - head);
        const bool ok = tool_text_write("certmint import-ca-cert", conf_abs, nt,
                                        t.len + sizeof(k_line) - 1, &t.st);
        free(nt);
        if (!ok) {
            goto out;
        }
    }
    cfg_config *cfg = NULL;
    if (!cm_ok(cfg_load(&cfg, err, sizeof(err), conf_abs))) {
        fprintf(stderr, "certmint import-ca-cert: the configuration does not load: %s\n", err);
        goto out;
    }
    cfg_free(cfg);
    printf("certmint: %s installed as %s/ca.pem; CMP protection certificate %s/cmp.pem\n", cert,
           dir, dir);
    rc = 0;
out:
    free(t.p);
    free(der);
    free(pem);
    free(chain_pem);
    OPENSSL_free(cmp_name);
    ca_authority_free(authority);
    hsm_pool_free(pool);
    hsm_key_free(cmp_key);
    hsm_key_free(ca_key);
    hsm_token_free(tok);
    return rc;
}
