// certmint crl: a fresh CRL issued through srv_crl_issue, written as DER.
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/x509.h>

#include "engine/server/srv.h"
#include "tools/certmint/tool.h"

int tool_crl(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint crl -c CONF [--ca NAME] [--out FILE] [--days N]\n"
        "  Issues a fresh CRL of the CA (default: default_ca) signed with its key in the\n"
        "  token, records it in the store and writes it as DER to FILE (default:\n"
        "  NAME.crl next to CONF). --days: nextUpdate - thisUpdate (default: the CA's\n"
        "  crl_validity_days, 7 unless set).\n"
        "  SOFTHSM2_CONF is read from the env file next to CONF when not set.\n"
        "  Check it: openssl crl -inform DER -in FILE -CAfile ca.pem -noout\n"
        "  Exit: 0 ok, 1 failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *out_path = NULL, *days_text = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},
                             {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},
                             {"--out", &out_path, NULL},
                             {"--days", &days_text, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 5, pos, 0, &np, "certmint crl", help);
    if (pr >= 0) {
        return pr;
    }
    long days = 0; // 0: the CA's crl_validity_days
    if (days_text != NULL) {
        char *end = NULL;
        errno = 0;
        days = strtol(days_text, &end, 10);
        if (errno != 0 || end == days_text || *end != '\0' || days < 1 || days > 3650) {
            fprintf(stderr, "certmint crl: --days '%s': give a number of days from 1 to 3650\n",
                    days_text);
            return 2;
        }
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint crl: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_env_load(conf);
    tool_inst t = {.cmd = "certmint crl"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    X509_CRL *crl = NULL;
    int rc = 1;
    char path[PATH_MAX + 64];
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    const cfg_ca *c = tool_inst_pick_ca(&t, ca);
    if (c == NULL || !tool_inst_open_key(&t, c, true) || !tool_inst_open_store(&t)) {
        goto out;
    }
    if (days == 0) {
        days = c->crl_validity_days > 0 ? (long)c->crl_validity_days : 7;
    }
    if (out_path == NULL) {
        (void)snprintf(path, sizeof(path), "%s/%s.crl", t.cfg->dir, c->name);
        out_path = path;
    }
    const srv_crl_params p = {.store = t.st,
                              .pool = t.pool,
                              .key = t.key,
                              .sig_alg = hsm_sig_alg_for_key(t.key),
                              .authority = c->authority,
                              .ca_name = c->name,
                              .validity_s = (int64_t)days * 86400};
    cm_span der = {0};
    cm_result r = srv_crl_issue(&p, cm_time_now(), &a, &der);
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint crl: [ca:%s] the CRL could not be issued: %s%s\n", c->name,
                cm_result_name(r),
                r.code == STORE_E_STALE || r.code == STORE_E_BUSY
                    ? " (certmintd issued one at the same moment: run this again)"
                    : "");
        goto out;
    }
    if (!tool_write_replace(t.cmd, out_path, der.p, der.len, 0644)) {
        goto out;
    }
    const unsigned char *q = der.p;
    crl = d2i_X509_CRL(NULL, &q, (long)der.len);
    if (crl == NULL) {
        fprintf(stderr, "certmint crl: the CRL written to %s does not parse\n", out_path);
        goto out;
    }
    STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(crl);
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    char next[32];
    tool_time_text(next, sizeof(next), cm_time_now() + (int64_t)days * 86400);
    printf("certmint crl: wrote %s (ca %s, CRL number %ld, %d entries, next update %s)\n", out_path,
           c->name, num != NULL ? ASN1_INTEGER_get(num) : -1L,
           revoked != NULL ? sk_X509_REVOKED_num(revoked) : 0, next);
    ASN1_INTEGER_free(num);
    rc = 0;
out:
    X509_CRL_free(crl);
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}
