// The option parser of the commands that take -c CONF.
#include <stdio.h>
#include <string.h>

#include "tools/certmint/tool.h"

int tool_args_parse(int argc, char **argv, int first, const tool_opt *opts, size_t num_opts,
                    const char **pos, size_t max_pos, size_t *out_num_pos, const char *cmd,
                    const char *help)
{
    *out_num_pos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(help, stdout);
            return 0;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (*out_num_pos == max_pos) {
                fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", cmd, a);
                return 2;
            }
            pos[(*out_num_pos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        const size_t name_len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const tool_opt *o = NULL;
        for (size_t k = 0; k < num_opts; k++) {
            if (strlen(opts[k].name) == name_len && strncmp(opts[k].name, a, name_len) == 0) {
                o = &opts[k];
            }
        }
        if (o == NULL) {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", cmd, a);
            return 2;
        }
        if (o->value == NULL) {
            if (eq != NULL) {
                fprintf(stderr, "%s: %.*s takes no value\n", cmd, (int)name_len, a);
                return 2;
            }
            *o->flag = true;
        } else if (eq != NULL) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            fprintf(stderr, "%s: %s needs a value (see --help)\n", cmd, a);
            return 2;
        }
    }
    return -1;
}
