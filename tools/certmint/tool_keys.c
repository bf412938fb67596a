// certmint keys: every CA's key found in its token and checked against the CA certificate.
#include <stdio.h>
#include <string.h>

#include "tools/certmint/tool.h"

static const char *tool_key_type_name(hsm_key_type t)
{
    switch (t) {
    case HSM_KEY_EC_P256:
        return "EC P-256";
    case HSM_KEY_EC_P384:
        return "EC P-384";
    case HSM_KEY_EC_P521:
        return "EC P-521";
    case HSM_KEY_RSA:
        return "RSA";
    case HSM_KEY_ED25519:
        return "Ed25519";
    case HSM_KEY_ED448:
        return "Ed448";
    default:
        return "?";
    }
}

int tool_keys(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint keys -c CONF\n"
        "  Opens the token of every CA's key, finds the key and prints its type and size and\n"
        "  whether it matches the CA certificate (a check that the HSM is reachable).\n"
        "  SOFTHSM2_CONF is read from the env file next to CONF when not set.\n"
        "  Exit: 0 all keys found and matching, 1 a key is missing or wrong, 2 usage.\n";
    const char *conf = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL}, {"--config", &conf, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 2, pos, 0, &np, "certmint keys", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint keys: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_env_load(conf);
    tool_inst cfg_only = {.cmd = "certmint keys"};
    if (!tool_inst_open_cfg(&cfg_only, conf)) {
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < cfg_only.cfg->num_cas; i++) {
        const cfg_ca *c = &cfg_only.cfg->cas[i];
        tool_inst t = {.cmd = "certmint keys"};
        if (tool_inst_open_key(&t, c, false)) {
            printf("ca %-16s key '%s' %s %u bits, matches %s\n", c->name, hsm_key_get0_label(t.key),
                   tool_key_type_name(hsm_key_get_type(t.key)), hsm_key_get_bits(t.key),
                   c->cert_path);
        } else {
            rc = 1;
        }
        tool_inst_close(&t);
    }
    tool_inst_close(&cfg_only);
    return rc;
}
