// Opening an instance: the configuration, the store, the token.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "tools/certmint/tool.h"

void tool_env_load(const char *conf_path)
{
    if (getenv("SOFTHSM2_CONF") != NULL) {
        return;
    }
    char path[PATH_MAX];
    const char *slash = strrchr(conf_path, '/');
    int n = slash == NULL
                ? snprintf(path, sizeof(path), "env")
                : snprintf(path, sizeof(path), "%.*s/env", (int)(slash - conf_path), conf_path);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return;
    }
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return;
    }
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "SOFTHSM2_CONF=", 14) == 0 && line[14] != '\0') {
            (void)setenv("SOFTHSM2_CONF", line + 14, 1);
        }
    }
    (void)fclose(f);
}

bool tool_inst_open_cfg(tool_inst *t, const char *conf_path)
{
    char err[1024];
    cm_result r = cfg_load(&t->cfg, err, sizeof(err), conf_path);
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: %s\n", t->cmd, err);
        if (access(conf_path, F_OK) != 0) {
            fprintf(stderr,
                    "%s: pass the certmint.cnf of an instance with -c (certmint init "
                    "--dir DIR makes one)\n",
                    t->cmd);
        }
        return false;
    }
    return true;
}

const cfg_ca *tool_inst_pick_ca(tool_inst *t, const char *name)
{
    const cfg_config *cfg = t->cfg;
    if (name == NULL) {
        if (cfg->default_ca != NULL) {
            return cfg->default_ca;
        }
        if (cfg->num_cas == 1) {
            return &cfg->cas[0];
        }
        fprintf(stderr, "%s: %s has %zu CAs and no default_ca: pass --ca NAME\n", t->cmd, cfg->path,
                cfg->num_cas);
        return NULL;
    }
    const cfg_ca *c = cfg_ca_find(cfg, name);
    if (c == NULL) {
        fprintf(stderr, "%s: %s has no [ca:%s]; its CAs are:", t->cmd, cfg->path, name);
        for (size_t i = 0; i < cfg->num_cas; i++) {
            fprintf(stderr, " %s", cfg->cas[i].name);
        }
        fputc('\n', stderr);
    }
    return c;
}

bool tool_inst_open_store(tool_inst *t)
{
    const char *url = t->cfg->store_url;
    cm_result r = store_open(&t->st, url, NULL);
    if (cm_ok(r)) {
        r = store_reader_open(t->st, &t->rd);
    }
    if (!cm_ok(r)) {
        fprintf(stderr,
                "%s: cannot open the store %s: %s (check the store key of [certmintd] "
                "and the permissions of its folder)\n",
                t->cmd, url, cm_result_name(r));
        return false;
    }
    return true;
}

// tool_hsm_hint says what to do about a token or key failure.
static const char *tool_hsm_hint(cm_result r)
{
    if (r.code == cm_code_from_ckr(CKR_PIN_INCORRECT) ||
        r.code == cm_code_from_ckr(CKR_PIN_LEN_RANGE)) {
        return "the user PIN is wrong: check the file pin-source names in the key URI";
    }
    if (r.code == HSM_E_NO_TOKEN) {
        return "no token has that label: check token= in the key URI and, for SoftHSM2, "
               "SOFTHSM2_CONF (certmint reads it from the env file next to the configuration)";
    }
    if (r.code == HSM_E_PIN_SOURCE || r.code == HSM_E_NO_PIN) {
        return "the PIN file cannot be read: check pin-source in the key URI";
    }
    if (r.code == HSM_E_MODULE_LOAD || r.code == HSM_E_NO_MODULE) {
        return "the PKCS#11 module cannot be loaded: check module-path/module-name in the key URI";
    }
    if (r.code == HSM_E_NO_KEY || r.code == HSM_E_AMBIGUOUS_KEY) {
        return "check object=/id= in the key URI (the message lists the keys the token holds)";
    }
    return "check the key URI in the configuration";
}

bool tool_inst_open_key(tool_inst *t, const cfg_ca *c, bool pool)
{
    hsm_error err;
    memset(&err, 0, sizeof(err));
    cm_result r = hsm_token_open(&t->tok, &err, c->key_uri);
    if (cm_ok(r)) {
        r = hsm_key_find(t->tok, &t->key, &err, c->key_uri);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: [ca:%s] key: %s (%s)\n%s: %s\n", t->cmd, c->name, err.msg,
                cm_result_name(r), t->cmd, tool_hsm_hint(r));
        return false;
    }
    if (!cm_ok(ca_authority_matches_spki(c->authority, hsm_key_get0_spki(t->key)))) {
        fprintf(stderr,
                "%s: [ca:%s] the key %s does not hold the public key of %s: the key URI "
                "names another key than the one the CA certificate was made for\n",
                t->cmd, c->name, hsm_key_get0_label(t->key), c->cert_path);
        return false;
    }
    if (pool) {
        hsm_pool_opts po;
        hsm_pool_opts_default(&po);
        po.sessions = 1;
        r = hsm_pool_new(&t->pool, t->tok, &po);
        if (!cm_ok(r)) {
            fprintf(stderr, "%s: cannot open a session on the token: %s\n", t->cmd,
                    cm_result_name(r));
            return false;
        }
    }
    return true;
}

void tool_inst_close(tool_inst *t)
{
    hsm_pool_free(t->pool);
    hsm_key_free(t->key);
    hsm_token_free(t->tok);
    store_reader_close(t->rd);
    if (t->st != NULL) {
        store_close(t->st);
    }
    cfg_free(t->cfg);
}
