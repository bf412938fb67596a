// The trust and authorization keys of a [profile:NAME] section (issue 14): key reuse, what a key
// update does to the certificate it replaces, and where the subject of a certificate-signed
// request may come from; and (issue 16) whether requests wait for an operator's approval and
// whether the profile issues CA certificates (ca, path_len, name_constraints). cfg_profile.c hands
// every key it does not know to cfg_profile_policy_key first.
#include <stdlib.h>
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
    } else if (strcmp(k, "approval") == 0) {
        if (strcmp(v, "auto") == 0 || strcmp(v, "manual") == 0) {
            pr->approval_manual = v[0] == 'm';
            pr->approval_set = true;
        } else {
            *out = cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not auto or manual", v);
        }
    } else if (strcmp(k, "ca") == 0) {
        *out = cfg_bool(ld, &pr->is_ca, k, v);
    } else if (strcmp(k, "path_len") == 0) {
        *out = cfg_u32(ld, &pr->path_len, k, v, 0, 32);
        pr->has_path_len = cm_ok(*out);
    } else if (strcmp(k, "name_constraints") == 0) {
        free(pr->name_constraints);
        pr->name_constraints = v[0] != '\0' ? cfg_strdup(v) : NULL;
        if (v[0] == '\0') {
            *out = cfg_fail(ld, CFG_E_VALUE, k, "empty");
        } else if (pr->name_constraints == NULL) {
            *out = cm_result_make(CM_E_NOMEM);
        }
    } else {
        return false;
    }
    return true;
}

void cfg_profile_ca_params(cfg_profile *pr, ca_profile_params *p)
{
    p->is_ca = pr->is_ca;
    p->has_path_len = pr->has_path_len;
    p->path_len = pr->path_len;
    p->name_constraints = pr->name_constraints;
    if (!pr->approval_set) {
        // A cross-certificate makes another CA's whole hierarchy trusted here: a person decides.
        pr->approval_manual = pr->is_ca;
    }
}
