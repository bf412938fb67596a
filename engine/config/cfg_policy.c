// The trust and authorization keys of a [profile:NAME] section (issue 14): key reuse, what a key
// update does to the certificate it replaces, and where the subject of a certificate-signed
// request may come from. cfg_profile.c hands every key it does not know to
// cfg_profile_policy_key first.
#include <string.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"

bool cfg_profile_policy_key(cfg_loader *ld, cfg_profile *pr, const char *k, const char *v,
                            cm_result *out)
{
    *out = cm_result_make(CM_OK);
    if (strcmp(k, "allow_key_reuse") == 0) {
        *out = cfg_bool(ld, &pr->allow_key_reuse, k, v);
    } else if (strcmp(k, "revoke_on_update") == 0) {
        *out = cfg_bool(ld, &pr->revoke_on_update, k, v);
    } else if (strcmp(k, "subject_from") == 0) {
        if (strcmp(v, "signer") == 0 || strcmp(v, "request") == 0) {
            pr->subject_from_request = v[0] == 'r';
        } else {
            *out = cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not signer or request", v);
        }
    } else {
        return false;
    }
    return true;
}
