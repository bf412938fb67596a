// certmint list, show, revoke and revive: the issued certificates in the store, found by
// serial.
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

#include "tools/certmint/tool.h"

typedef struct tool_list_ctx {
    bool json;
    const char *subject_substr; // NULL: every subject
    size_t count;
} tool_list_ctx;

// tool_subject_text returns the printable subject of |c| (RFC 4514, ca_name_to_text): the
// stored text, or, when the server left it empty, text made from the subject DER. The result
// is |buf| or the store's string.
static const char *tool_subject_text(const store_cert *c, char *buf, size_t cap)
{
    if (c->subject_text != NULL && c->subject_text[0] != '\0') {
        return c->subject_text;
    }
    (void)ca_name_to_text(buf, cap, c->subject_der);
    return buf;
}

static bool tool_list_row(void *ctx, const store_cert *c)
{
    tool_list_ctx *l = ctx;
    char serial[2 * TOOL_SERIAL_MAX + 1], na[32], nb[32], rt[32], sbuf[1024];
    const char *subject = tool_subject_text(c, sbuf, sizeof(sbuf));
    if (l->subject_substr != NULL && strstr(subject, l->subject_substr) == NULL) {
        return true;
    }
    tool_serial_text(serial, sizeof(serial), c->serial);
    tool_time_text(na, sizeof(na), c->not_after);
    if (!l->json) {
        printf("%s  %-11s  %s  %s  %s\n", serial, tool_status_name(c->status), na, c->ca, subject);
    } else {
        tool_time_text(nb, sizeof(nb), c->not_before);
        tool_time_text(rt, sizeof(rt), c->revoked_at);
        printf("%s\n  {\"serial\": \"%s\", \"ca\": ", l->count == 0 ? "" : ",", serial);
        tool_json_string(stdout, c->ca);
        printf(", \"status\": \"%s\", \"not_before\": \"%s\", \"not_after\": \"%s\", "
               "\"subject\": ",
               tool_status_name(c->status), nb, na);
        tool_json_string(stdout, subject);
        if (c->status == STORE_CERT_REVOKED || c->status == STORE_CERT_HOLD) {
            printf(", \"revoked_at\": \"%s\", \"reason\": \"%s\"", rt, tool_reason_name(c->reason));
        }
        printf("}");
    }
    l->count++;
    return true;
}

int tool_list(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint list -c CONF [--ca NAME] [--status valid|revoked|hold|unconfirmed]\n"
        "                     [--subject SUBSTR] [--json]\n"
        "  Lists the issued certificates in the store, in issue order, one a line:\n"
        "    SERIAL  STATUS  NOT_AFTER  CA  SUBJECT\n"
        "  SERIAL is hex as `openssl x509 -serial` prints it; --subject matches a\n"
        "  case-sensitive substring of the subject; --json prints a JSON array of objects\n"
        "  (serial, ca, status, not_before, not_after, subject, revoked_at, reason).\n"
        "  Exit: 0 ok (also when nothing matches), 1 failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *status = NULL, *subject = NULL, *pos[1];
    bool json = false;
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},           {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},           {"--status", &status, NULL},
                             {"--subject", &subject, NULL}, {"--json", NULL, &json}};
    int pr = tool_args_parse(argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), pos, 0, &np,
                             "certmint list", help);
    if (pr >= 0) {
        return pr;
    }
    store_filter f = {.status = STORE_CERT_ANY};
    if (status != NULL) {
        static const store_cert_status k_all[] = {STORE_CERT_UNCONFIRMED, STORE_CERT_VALID,
                                                  STORE_CERT_REVOKED, STORE_CERT_HOLD};
        bool found = false;
        for (size_t i = 0; i < sizeof(k_all) / sizeof(k_all[0]); i++) {
            if (strcmp(status, tool_status_name(k_all[i])) == 0) {
                f.status = k_all[i];
                found = true;
            }
        }
        if (!found) {
            fprintf(stderr,
                    "certmint list: --status '%s': use valid, revoked, hold or "
                    "unconfirmed\n",
                    status);
            return 2;
        }
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint list: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint list"};
    int rc = 1;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    if (ca != NULL) {
        const cfg_ca *c = tool_inst_pick_ca(&t, ca);
        if (c == NULL) {
            goto out;
        }
        f.ca = c->name;
    }
    if (!tool_inst_open_store(&t)) {
        goto out;
    }
    // The subject is matched here, not by the store: the server may leave subject_text empty.
    tool_list_ctx l = {.json = json, .subject_substr = subject};
    if (json) {
        printf("[");
    }
    cm_result r = store_cert_list(t.rd, &f, tool_list_row, &l);
    if (json) {
        printf("%s]\n", l.count == 0 ? "" : "\n");
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint list: reading the store failed: %s\n", cm_result_name(r));
        goto out;
    }
    rc = 0;
out:
    tool_inst_close(&t);
    return rc;
}

// tool_find_cert looks |serial_text| up in CA |ca_name| (NULL: every CA of the
// configuration). On success |*out| is filled in |a| and 0 is returned; otherwise the problem
// was printed and the exit code (1 or 2) is returned.
static int tool_find_cert(tool_inst *t, cm_arena *a, store_cert *out, const char *ca_name,
                          const char *serial_text)
{
    uint8_t serial[TOOL_SERIAL_MAX];
    size_t serial_len = 0;
    if (!tool_serial_parse(serial_text, serial, &serial_len)) {
        fprintf(stderr,
                "%s: '%s' is not a serial number: give it in hex as `certmint list` or "
                "`openssl x509 -serial` print it (e.g. 3F0A..., 0x3f0a..., 3f:0a:...)\n",
                t->cmd, serial_text);
        return 2;
    }
    const cfg_ca *only = NULL;
    if (ca_name != NULL) {
        only = tool_inst_pick_ca(t, ca_name);
        if (only == NULL) {
            return 1;
        }
    }
    if (!tool_inst_open_store(t)) {
        return 1;
    }
    size_t found = 0;
    for (size_t i = 0; i < t->cfg->num_cas; i++) {
        const cfg_ca *c = &t->cfg->cas[i];
        if (only != NULL && c != only) {
            continue;
        }
        store_cert tmp;
        cm_result r = store_cert_get(t->rd, a, &tmp, c->name, cm_span_make(serial, serial_len));
        if (cm_ok(r)) {
            if (found++ == 0) {
                *out = tmp;
            }
        } else if (r.code != STORE_E_NOT_FOUND) {
            fprintf(stderr, "%s: reading the store failed: %s\n", t->cmd, cm_result_name(r));
            return 1;
        }
    }
    char text[2 * TOOL_SERIAL_MAX + 1];
    tool_serial_text(text, sizeof(text), cm_span_make(serial, serial_len));
    if (found == 0) {
        fprintf(stderr,
                "%s: no certificate with serial %s in %s (certmint list -c %s shows "
                "the serials)\n",
                t->cmd, text, only != NULL ? only->name : "any CA of the configuration",
                t->cfg->path);
        return 1;
    }
    if (found > 1) {
        fprintf(stderr, "%s: serial %s exists in several CAs: pass --ca NAME\n", t->cmd, text);
        return 1;
    }
    return 0;
}

int tool_show(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint show -c CONF [--ca NAME] SERIAL\n"
        "  Prints one issued certificate as `openssl x509 -text` does, then its record in the\n"
        "  store: CA, status, issue time, revocation time and reason, requester.\n"
        "  SERIAL is hex (any case, optional 0x, colons allowed).\n"
        "  Exit: 0 ok, 1 not found or failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL}, {"--config", &conf, NULL}, {"--ca", &ca, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 3, pos, 1, &np, "certmint show", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint show: -c CONF and SERIAL are required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint show"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    X509 *x = NULL;
    BIO *out = NULL;
    int rc = 1;
    store_cert c;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    rc = tool_find_cert(&t, &a, &c, ca, pos[0]);
    if (rc != 0) {
        goto out;
    }
    rc = 1;
    const unsigned char *q = c.cert_der.p;
    x = d2i_X509(NULL, &q, (long)c.cert_der.len);
    out = BIO_new_fp(stdout, BIO_NOCLOSE);
    if (x == NULL || out == NULL || X509_print_ex(out, x, XN_FLAG_COMPAT, X509_FLAG_COMPAT) != 1) {
        fprintf(stderr, "certmint show: the stored certificate does not parse\n");
        goto out;
    }
    (void)BIO_flush(out);
    char ts[32];
    printf("Store record:\n    CA: %s\n    Status: %s\n", c.ca, tool_status_name(c.status));
    tool_time_text(ts, sizeof(ts), c.issued_at);
    printf("    Issued at: %s\n", ts);
    if (c.status == STORE_CERT_REVOKED || c.status == STORE_CERT_HOLD) {
        tool_time_text(ts, sizeof(ts), c.revoked_at);
        printf("    Revoked at: %s\n    Reason: %s\n", ts, tool_reason_name(c.reason));
    }
    if (c.status == STORE_CERT_UNCONFIRMED) {
        tool_time_text(ts, sizeof(ts), c.confirm_deadline);
        printf("    certConf expected before: %s\n", ts);
    }
    if (c.requester_kind == STORE_AUTH_MAC) {
        printf("    Requester: MAC, senderKID '%.*s'\n", (int)c.requester.len,
               (const char *)c.requester.p);
    } else if (c.requester_kind == STORE_AUTH_SIGNATURE) {
        printf("    Requester: signature, certificate SHA-256 ");
        for (size_t i = 0; i < c.requester.len; i++) {
            printf("%02X", c.requester.p[i]);
        }
        printf("\n");
    }
    if (c.transaction_id.len > 0) {
        printf("    Transaction: ");
        for (size_t i = 0; i < c.transaction_id.len; i++) {
            printf("%02X", c.transaction_id.p[i]);
        }
        printf("\n");
    }
    rc = 0;
out:
    BIO_free(out);
    X509_free(x);
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}

int tool_revoke(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint revoke -c CONF [--ca NAME] SERIAL [--reason NAME]\n"
        "  Revokes an issued certificate in the store (the server's own store operation);\n"
        "  the next CRL lists it (certmint crl). Reasons (RFC 5280 5.3.1): unspecified\n"
        "  (default), keyCompromise, cACompromise, affiliationChanged, superseded,\n"
        "  cessationOfOperation, certificateHold (revocable later, or released),\n"
        "  removeFromCRL (releases a certificate on hold), privilegeWithdrawn, aACompromise.\n"
        "  Exit: 0 ok, 1 unknown serial, already revoked, not on hold or failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *reason_name = "unspecified", *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},
                             {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},
                             {"--reason", &reason_name, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 4, pos, 1, &np, "certmint revoke", help);
    if (pr >= 0) {
        return pr;
    }
    const int reason = tool_reason_parse(reason_name);
    if (reason < 0) {
        fprintf(stderr,
                "certmint revoke: --reason '%s' is not a CRLReason; use one of:", reason_name);
        tool_reasons_print(stderr);
        fputc('\n', stderr);
        return 2;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint revoke: -c CONF and SERIAL are required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint revoke"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    int rc = 1;
    store_cert c;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    rc = tool_find_cert(&t, &a, &c, ca, pos[0]);
    if (rc != 0) {
        goto out;
    }
    rc = 1;
    const bool release = reason == STORE_REASON_REMOVE_FROM_CRL;
    store_job job;
    store_job_init(&job, release ? STORE_OP_CERT_RELEASE : STORE_OP_CERT_REVOKE, NULL);
    job.u.ref.ca = c.ca;
    job.u.ref.serial = c.serial;
    job.u.ref.time = cm_time_now();
    job.u.ref.reason = release ? 0 : reason;
    cm_result r = store_run(t.st, &job);
    char serial[2 * TOOL_SERIAL_MAX + 1];
    tool_serial_text(serial, sizeof(serial), c.serial);
    if (r.code == STORE_E_ALREADY_REVOKED) {
        char when[32];
        tool_time_text(when, sizeof(when), c.revoked_at);
        fprintf(stderr, "certmint revoke: %s is %s already (reason %s, since %s)%s\n", serial,
                c.status == STORE_CERT_HOLD ? "on hold" : "revoked", tool_reason_name(c.reason),
                when,
                c.status == STORE_CERT_HOLD ? "; --reason removeFromCRL releases it, another "
                                              "reason revokes it for good"
                                            : "");
        goto out;
    }
    if (r.code == STORE_E_NOT_ON_HOLD) {
        fprintf(stderr,
                "certmint revoke: %s is %s, not on hold: removeFromCRL only releases a "
                "certificate revoked with certificateHold\n",
                serial, tool_status_name(c.status));
        goto out;
    }
    if (r.code == STORE_E_NOT_FOUND) {
        fprintf(stderr, "certmint revoke: %s vanished from the store\n", serial);
        goto out;
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint revoke: the store refused: %s\n", cm_result_name(r));
        goto out;
    }
    if (release) {
        printf("released %s (ca %s) from hold: valid again; the next CRL drops it "
               "(certmint crl -c %s)\n",
               serial, c.ca, conf);
    } else {
        printf("revoked %s (ca %s, reason %s); the next CRL lists it (certmint crl -c %s)\n",
               serial, c.ca, tool_reason_name(reason), conf);
    }
    rc = 0;
out:
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}

int tool_revive(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint revive -c CONF [--ca NAME] SERIAL\n"
        "  Releases a certificate on hold (revoked with certificateHold): it is valid again\n"
        "  and the next CRL no longer lists it (certmint crl); the same as\n"
        "  certmint revoke --reason removeFromCRL. Only a certificate on hold can be revived.\n"
        "  Exit: 0 ok, 1 unknown serial, not on hold or failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL}, {"--config", &conf, NULL}, {"--ca", &ca, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 3, pos, 1, &np, "certmint revive", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint revive: -c CONF and SERIAL are required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint revive"};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    int rc = 1;
    store_cert c;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    rc = tool_find_cert(&t, &a, &c, ca, pos[0]);
    if (rc != 0) {
        goto out;
    }
    rc = 1;
    char serial[2 * TOOL_SERIAL_MAX + 1];
    tool_serial_text(serial, sizeof(serial), c.serial);
    store_job job;
    store_job_init(&job, STORE_OP_CERT_RELEASE, NULL);
    job.u.ref.ca = c.ca;
    job.u.ref.serial = c.serial;
    job.u.ref.time = cm_time_now();
    cm_result r = store_run(t.st, &job);
    if (r.code == STORE_E_NOT_ON_HOLD) {
        fprintf(stderr,
                "certmint revive: %s is %s, not on hold: only a certificate revoked with "
                "certificateHold can be revived\n",
                serial, tool_status_name(c.status));
        goto out;
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint revive: the store refused: %s\n", cm_result_name(r));
        goto out;
    }
    printf("revived %s (ca %s): valid again; the next CRL drops it (certmint crl -c %s)\n", serial,
           c.ca, conf);
    rc = 0;
out:
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}
