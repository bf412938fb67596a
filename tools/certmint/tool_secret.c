// certmint secret: [clients:NAME] MAC credentials, edited in the configuration text itself
// (comments, order and everything else kept as they are; tool_ini.c).
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "tools/certmint/tool.h"

#define TOOL_MAX_REF 64u

static bool tool_ref_ok(const char *ref)
{
    const size_t n = strlen(ref);
    if (n == 0 || n > TOOL_MAX_REF || ref[0] == '-' || ref[0] == '.') {
        return false;
    }
    return strspn(ref, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") == n;
}

// tool_secret_gen_or_read fills |buf| (cap CFG_MAX_SECRET + 1) with a new secret or the one
// in |file| (one trailing line end dropped, as cfg_load does).
static bool tool_secret_gen_or_read(const char *cmd, char *buf, size_t *out_len, const char *file)
{
    if (file == NULL) {
        *out_len = 32; // 32 of 62 symbols: 190 bits
        if (!tool_random_text(buf, *out_len)) {
            fprintf(stderr, "%s: the random generator failed\n", cmd);
            return false;
        }
        return true;
    }
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot read --secret-file %s: %s\n", cmd, file, strerror(errno));
        return false;
    }
    size_t n = fread(buf, 1, CFG_MAX_SECRET + 1, f);
    (void)fclose(f);
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }
    }
    if (n == 0 || n > CFG_MAX_SECRET) {
        fprintf(stderr, "%s: --secret-file %s must hold 1 to %u bytes\n", cmd, file,
                CFG_MAX_SECRET);
        return false;
    }
    *out_len = n;
    return true;
}

static int tool_secret_add(tool_inst *t, const cfg_ca *c, const char *conf, const char *ref,
                           const char *file)
{
    const cfg_clients *cl = c->clients;
    for (size_t i = 0; i < cl->num_secrets; i++) {
        if (strcmp(cl->secrets[i].ref, ref) == 0) {
            fprintf(stderr,
                    "%s: [clients:%s] has secret.%s already; pick another --ref, or remove "
                    "it first (certmint secret remove -c %s --ref %s)\n",
                    t->cmd, cl->name, ref, conf, ref);
            return 1;
        }
    }
    int rc = 1;
    tool_text text = {0};
    char *edited = NULL;
    char secret[CFG_MAX_SECRET + 1];
    size_t secret_len = 0;
    char rel[TOOL_MAX_REF + 16], abs[PATH_MAX + TOOL_MAX_REF + 16], line[2 * TOOL_MAX_REF + 32];
    bool created = false;
    size_t body, end, last;
    if (!tool_text_read(t->cmd, &text, conf)) {
        goto out;
    }
    if (!tool_section_find(&text, cl->name, &body, &end, &last)) {
        fprintf(stderr, "%s: cannot find the [clients:%s] header in %s\n", t->cmd, cl->name, conf);
        goto out;
    }
    if (!tool_secret_gen_or_read(t->cmd, secret, &secret_len, file)) {
        goto out;
    }
    (void)snprintf(rel, sizeof(rel), "secrets/%s", ref);
    (void)snprintf(abs, sizeof(abs), "%s/secrets", t->cfg->dir);
    if (mkdir(abs, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: cannot create %s: %s\n", t->cmd, abs, strerror(errno));
        goto out;
    }
    (void)snprintf(abs, sizeof(abs), "%s/%s", t->cfg->dir, rel);
    if (access(abs, F_OK) == 0) {
        fprintf(stderr,
                "%s: %s exists already (not referenced by [clients:%s]); delete it or "
                "pick another --ref\n",
                t->cmd, abs, cl->name);
        goto out;
    }
    if (!tool_write_file(abs, secret, secret_len, 0600)) {
        goto out;
    }
    created = true;
    // The new line goes after the section's last setting; a last line without its line end
    // gets one first.
    const bool need_nl = last > 0 && text.p[last - 1] != '\n';
    const int ll =
        snprintf(line, sizeof(line), "%ssecret.%s = %s\n", need_nl ? "\n" : "", ref, rel);
    edited = malloc(text.len + (size_t)ll + 1);
    if (edited == NULL) {
        goto out;
    }
    memcpy(edited, text.p, last);
    memcpy(edited + last, line, (size_t)ll);
    memcpy(edited + last + (size_t)ll, text.p + last, text.len - last);
    if (!tool_text_write(t->cmd, conf, edited, text.len + (size_t)ll, &text.st) ||
        !tool_cfg_verify(t->cmd, conf, &text)) {
        goto out;
    }
    if (file == NULL) {
        printf("added secret.%s to [clients:%s] of %s\n"
               "  reference: %s\n"
               "  secret:    %.*s   (shown once; stored in %s, mode 0600)\n",
               ref, cl->name, conf, ref, (int)secret_len, secret, abs);
    } else {
        printf("added secret.%s to [clients:%s] of %s (secret copied from %s to %s, mode 0600)\n",
               ref, cl->name, conf, file, abs);
    }
    printf("Restart certmintd to load it. A device then enrols with\n"
           "  openssl cmp -cmd ir ... -ref %s -secret file:%s\n",
           ref, abs);
    created = false;
    rc = 0;
out:
    if (created) {
        (void)unlink(abs);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    free(edited);
    free(text.p);
    return rc;
}

static int tool_secret_remove(tool_inst *t, const cfg_ca *c, const char *conf, const char *ref)
{
    const cfg_clients *cl = c->clients;
    bool known = false;
    for (size_t i = 0; i < cl->num_secrets; i++) {
        known = known || strcmp(cl->secrets[i].ref, ref) == 0;
    }
    if (!known) {
        fprintf(stderr,
                "%s: [clients:%s] has no secret.%s (certmint secret list -c %s shows "
                "the references)\n",
                t->cmd, cl->name, ref, conf);
        return 1;
    }
    int rc = 1;
    tool_text text = {0};
    char *edited = NULL;
    char key_secret[TOOL_MAX_REF + 16], key_kid[TOOL_MAX_REF + 16];
    char file[PATH_MAX + PATH_MAX];
    file[0] = '\0';
    size_t body, end, last;
    if (!tool_text_read(t->cmd, &text, conf)) {
        goto out;
    }
    if (!tool_section_find(&text, cl->name, &body, &end, &last)) {
        fprintf(stderr, "%s: cannot find the [clients:%s] header in %s\n", t->cmd, cl->name, conf);
        goto out;
    }
    (void)snprintf(key_secret, sizeof(key_secret), "secret.%s", ref);
    (void)snprintf(key_kid, sizeof(key_kid), "senderKID.%s", ref);
    edited = malloc(text.len + 1);
    if (edited == NULL) {
        goto out;
    }
    size_t o = 0, removed = 0;
    for (size_t off = 0; off < text.len;) {
        const char *p = text.p + off;
        const char *nl = memchr(p, '\n', text.len - off);
        const size_t next = nl != NULL ? (size_t)(nl - text.p) + 1 : text.len;
        const char *v = NULL;
        size_t vl = 0;
        bool drop = false;
        if (off >= body && off < end) {
            const char *le = text.p + (nl != NULL ? next - 1 : next);
            if (tool_line_key(p, le, key_secret, &v, &vl)) {
                drop = true;
                if (vl > 0 && vl < PATH_MAX) {
                    if (v[0] == '/') {
                        (void)snprintf(file, sizeof(file), "%.*s", (int)vl, v);
                    } else {
                        (void)snprintf(file, sizeof(file), "%s/%.*s", t->cfg->dir, (int)vl, v);
                    }
                }
            } else if (tool_line_key(p, le, key_kid, &v, &vl)) {
                drop = true;
            }
        }
        if (drop) {
            removed++;
        } else {
            memcpy(edited + o, p, next - off);
            o += next - off;
        }
        off = next;
    }
    if (removed == 0 || file[0] == '\0') {
        fprintf(stderr,
                "%s: no 'secret.%s = FILE' line in the [clients:%s] section of %s "
                "(is it set through a $variable?); edit the file by hand\n",
                t->cmd, ref, cl->name, conf);
        goto out;
    }
    if (!tool_text_write(t->cmd, conf, edited, o, &text.st) ||
        !tool_cfg_verify(t->cmd, conf, &text)) {
        goto out;
    }
    if (unlink(file) != 0) {
        fprintf(stderr, "%s: removed secret.%s from %s but cannot delete %s: %s\n", t->cmd, ref,
                conf, file, strerror(errno));
        goto out;
    }
    printf("removed secret.%s from [clients:%s] of %s and deleted %s; restart certmintd to "
           "stop accepting it\n",
           ref, cl->name, conf, file);
    rc = 0;
out:
    free(edited);
    free(text.p);
    return rc;
}

int tool_secret(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint secret add    -c CONF --ref REF [--secret-file F] [--ca NAME]\n"
        "       certmint secret list   -c CONF [--ca NAME]\n"
        "       certmint secret remove -c CONF --ref REF [--ca NAME]\n"
        "  Manages the MAC credentials (secret.REF) of the [clients:NAME] section the CA\n"
        "  (default: default_ca) names. add generates a strong secret, prints it once,\n"
        "  stores it in secrets/REF (mode 0600) next to CONF and appends\n"
        "  'secret.REF = secrets/REF' to the section (comments and order of CONF kept);\n"
        "  with --secret-file F the secret is copied from F instead and not printed.\n"
        "  list prints the references (never the secrets). remove deletes the line (and a\n"
        "  senderKID.REF line) and the secret file. REF: letters, digits, '_', '-', '.'.\n"
        "  certmintd reads the secrets at start: restart it afterwards.\n"
        "  Exit: 0 ok, 1 failed (duplicate or unknown REF, ...), 2 usage.\n";
    if (argc < 3 || strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
        fputs(help, argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    const char *action = argv[2];
    const bool add = strcmp(action, "add") == 0, list = strcmp(action, "list") == 0,
               remove = strcmp(action, "remove") == 0;
    if (!add && !list && !remove) {
        fprintf(stderr, "certmint secret: unknown action '%s': use add, list or remove\n", action);
        return 2;
    }
    const char *conf = NULL, *ca = NULL, *ref = NULL, *file = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},
                             {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},
                             {"--ref", &ref, NULL},
                             {"--secret-file", &file, NULL}};
    int pr = tool_args_parse(argc, argv, 3, opts, 5, pos, 0, &np, "certmint secret", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint secret: -c CONF is required (see --help)\n");
        return 2;
    }
    if (!list && ref == NULL) {
        fprintf(stderr, "certmint secret %s: --ref REF is required (see --help)\n", action);
        return 2;
    }
    if ((list && ref != NULL) || (!add && file != NULL)) {
        fprintf(stderr, "certmint secret %s: %s does not apply (see --help)\n", action,
                list && ref != NULL ? "--ref" : "--secret-file");
        return 2;
    }
    if (ref != NULL && !tool_ref_ok(ref)) {
        fprintf(stderr,
                "certmint secret %s: --ref '%s': use 1 to %u letters, digits, '_', '-' or '.' "
                "(not starting with '-' or '.')\n",
                action, ref, TOOL_MAX_REF);
        return 2;
    }
    tool_inst t = {.cmd = "certmint secret"};
    int rc = 1;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    const cfg_ca *c = tool_inst_pick_ca(&t, ca);
    if (c == NULL) {
        goto out;
    }
    if (c->clients == NULL) {
        fprintf(stderr,
                "certmint secret: [ca:%s] has no 'clients = NAME' line: add one and a "
                "[clients:NAME] section to %s, then run this again\n",
                c->name, conf);
        goto out;
    }
    if (list) {
        for (size_t i = 0; i < c->clients->num_secrets; i++) {
            printf("%s\n", c->clients->secrets[i].ref);
        }
        rc = 0;
    } else if (add) {
        rc = tool_secret_add(&t, c, conf, ref, file);
    } else {
        rc = tool_secret_remove(&t, c, conf, ref);
    }
out:
    tool_inst_close(&t);
    return rc;
}
