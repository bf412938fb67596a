// certmint: the admin tool.
//
//   certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|ed25519]
//                 [--subject DN] [--days N] [--port N] [--csr]
//                 [--module PATH --token LABEL --pin-file FILE]
//   certmint import-ca-cert -c CONF --cert FILE [--chain FILE]
//   certmint keys -c CONF
//   certmint secret add|list|remove -c CONF [--ref REF] [--secret-file F] [--ca NAME]
//   certmint list -c CONF [--ca NAME] [--status S] [--subject SUBSTR] [--json]
//   certmint show -c CONF [--ca NAME] SERIAL
//   certmint revoke -c CONF [--ca NAME] SERIAL [--reason NAME]
//   certmint revive -c CONF [--ca NAME] SERIAL
//   certmint crl -c CONF [--ca NAME] [--out FILE] [--days N]
//   certmint pending -c CONF [--ca NAME] [--state STATE] [--all] [--json]
//   certmint approve -c CONF ID
//   certmint reject -c CONF ID [--reason TEXT]
//   certmint store copy --from URL --to URL [--force]
//
// `init` makes a complete instance in DIR (tool_init.c). The other commands work on the
// instance a configuration describes, through the same engine modules as the daemon (cfg,
// store, hsm, srv_crl_issue); the commands that open the token read SOFTHSM2_CONF from the env
// file next to the configuration when the environment lacks it. Exit codes: 0 ok, 1 failed,
// 2 usage. This file is the command table; each command group has its own tool_*.c
// (tools/certmint/tool.h lists them).
#include <stdio.h>
#include <string.h>

#include "tools/certmint/tool.h"

static int tool_usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  certmint init --dir DIR [--key-type ec-p256|ec-p384|rsa2048|rsa3072|ed25519]\n"
               "                [--subject DN] [--days N] [--port N] [--csr]\n"
               "                [--module PATH --token LABEL --pin-file FILE]\n"
               "  certmint import-ca-cert -c CONF --cert FILE [--chain FILE]\n"
               "  certmint keys -c CONF\n"
               "  certmint secret add|list|remove -c CONF [--ref REF] [--secret-file F]\n"
               "  certmint list -c CONF [--status valid|revoked|hold|unconfirmed]\n"
               "                [--subject SUBSTR] [--json]\n"
               "  certmint show -c CONF SERIAL\n"
               "  certmint revoke -c CONF SERIAL [--reason NAME]\n"
               "  certmint revive -c CONF SERIAL\n"
               "  certmint crl -c CONF [--ca NAME] [--out FILE] [--days N]\n"
               "  certmint pending -c CONF [--ca NAME] [--state STATE] [--all] [--json]\n"
               "  certmint approve -c CONF ID\n"
               "  certmint reject -c CONF ID [--reason TEXT]\n"
               "  certmint store copy --from URL --to URL [--force]\n"
               "Run 'certmint COMMAND --help' for details. Exit: 0 ok, 1 failed, 2 usage.\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return tool_usage(stderr);
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        return tool_usage(stdout);
    }
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } k_cmds[] = {{"init", tool_init_main},
                  {"keys", tool_keys},
                  {"secret", tool_secret},
                  {"list", tool_list},
                  {"show", tool_show},
                  {"revoke", tool_revoke},
                  {"revive", tool_revive},
                  {"crl", tool_crl},
                  {"import-ca-cert", tool_import_ca_cert},
                  {"store", tool_store},
                  {"pending", tool_pending},
                  {"approve", tool_approve},
                  {"reject", tool_reject}};
    for (size_t i = 0; i < sizeof(k_cmds) / sizeof(k_cmds[0]); i++) {
        if (strcmp(argv[1], k_cmds[i].name) == 0) {
            if (!cm_ok(cm_runtime_init())) {
                fprintf(stderr, "certmint: cannot initialise OpenSSL\n");
                return 1;
            }
            cm_runtime_set_log_level(CM_LOG_WARN);
            return k_cmds[i].fn(argc, argv);
        }
    }
    fprintf(stderr, "certmint: unknown command '%s'\n", argv[1]);
    return tool_usage(stderr);
}
