// The [certmintd] section's delayed-delivery keys (issue 16): how long a request may wait, the
// backpressure bounds (HSM queue, commit latency, waiting requests) and the checkAfter of a
// request held for approval (see cfg.h for the keys). cfg_daemon.c hands them over.
#include <string.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"

void cfg_daemon_pending_defaults(cfg_config *cfg)
{
    cfg->waiting_timeout = 86400;
    cfg->max_hsm_queue = 0; // auto
    cfg->max_commit_latency = 250;
    cfg->max_pending = 10000;
    cfg->approval_check_after = 60;
}

bool cfg_daemon_pending(cfg_loader *ld, const char *k, const char *v, cm_result *out)
{
    cfg_config *cfg = ld->cfg;
    *out = cm_result_make(CM_OK);
    if (strcmp(k, "waiting_timeout") == 0) {
        *out = cfg_u32(ld, &cfg->waiting_timeout, k, v, 10, 31536000);
    } else if (strcmp(k, "max_hsm_queue") == 0) {
        if (strcmp(v, "auto") == 0) {
            cfg->max_hsm_queue = 0;
        } else {
            *out = cfg_u32(ld, &cfg->max_hsm_queue, k, v, 1, 10000000);
        }
    } else if (strcmp(k, "max_commit_latency") == 0) {
        *out = cfg_u32(ld, &cfg->max_commit_latency, k, v, 1, 600000);
    } else if (strcmp(k, "max_pending") == 0) {
        *out = cfg_u32(ld, &cfg->max_pending, k, v, 1, 10000000);
    } else if (strcmp(k, "approval_check_after") == 0) {
        *out = cfg_u32(ld, &cfg->approval_check_after, k, v, 1, 86400);
    } else {
        return false;
    }
    return true;
}
