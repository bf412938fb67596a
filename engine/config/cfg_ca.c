// The [ca:NAME] sections: the CA's key and certificate, the CMP protection identity, the
// profile and client group it uses, root CA key update certificates and CRL settings (see cfg.h
// for the keys). Loaded after every [profile:NAME] and [clients:NAME], which it names.
#include <stdlib.h>
#include <string.h>

#include <openssl/conf.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"


cm_result cfg_ca_load(cfg_loader *ld, cfg_ca *ca, const char *section)
{
    cfg_config *cfg = ld->cfg;
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(ld->conf, section);
    ca->crl_validity_days = 7;
    ca->crl_min_interval = 60;
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "key") == 0) {
            CM_TRY(cfg_pkcs11_uri(ld, &ca->key_uri, k, v));
        } else if (strcmp(k, "cmp_key") == 0) {
            CM_TRY(cfg_pkcs11_uri(ld, &ca->cmp_key_uri, k, v));
        } else if (strcmp(k, "cert") == 0) {
            CM_TRY(cfg_path(ld, &ca->cert_path, k, v));
        } else if (strcmp(k, "chain") == 0) {
            CM_TRY(cfg_path(ld, &ca->chain_path, k, v));
        } else if (strcmp(k, "cmp_cert") == 0) {
            CM_TRY(cfg_path(ld, &ca->cmp_cert_path, k, v));
        } else if (strcmp(k, "profile") == 0) {
            ca->profile = NULL;
            for (size_t j = 0; j < cfg->num_profiles; j++) {
                if (strcmp(cfg->profiles[j].name, v) == 0) {
                    ca->profile = &cfg->profiles[j];
                }
            }
            if (ca->profile == NULL) {
                return cfg_fail(ld, CFG_E_REFERENCE, k, "no [profile:%s] section", v);
            }
        } else if (strcmp(k, "clients") == 0) {
            ca->clients = NULL;
            for (size_t j = 0; j < cfg->num_clients; j++) {
                if (strcmp(cfg->clients[j].name, v) == 0) {
                    ca->clients = &cfg->clients[j];
                }
            }
            if (ca->clients == NULL) {
                return cfg_fail(ld, CFG_E_REFERENCE, k, "no [clients:%s] section", v);
            }
        } else if (strcmp(k, "caPubs") == 0) {
            CM_TRY(cfg_bool(ld, &ca->ca_pubs, k, v));
        } else if (strcmp(k, "sign_mac_responses") == 0) {
            CM_TRY(cfg_bool(ld, &ca->sign_mac_responses, k, v));
        } else if (strcmp(k, "unprotected_genm") == 0) {
            CM_TRY(cfg_bool(ld, &ca->unprotected_genm, k, v));
        } else if (strcmp(k, "root_new_with_new") == 0) {
            CM_TRY(cfg_path(ld, &ca->root_update_paths[0], k, v));
        } else if (strcmp(k, "root_new_with_old") == 0) {
            CM_TRY(cfg_path(ld, &ca->root_update_paths[1], k, v));
        } else if (strcmp(k, "root_old_with_new") == 0) {
            CM_TRY(cfg_path(ld, &ca->root_update_paths[2], k, v));
        } else if (strcmp(k, "crl_validity_days") == 0) {
            CM_TRY(cfg_u32(ld, &ca->crl_validity_days, k, v, 1, 365));
        } else if (strcmp(k, "crl_min_interval") == 0) {
            CM_TRY(cfg_u32(ld, &ca->crl_min_interval, k, v, 0, 86400));
        } else if (strcmp(k, "sig_alg") == 0) {
            const crmf_alg *a = crmf_alg_by_name(v);
            if (a == NULL || a->kind != CRMF_ALG_KIND_SIGNATURE) {
                return cfg_fail(ld, CFG_E_VALUE, k,
                                "'%s' is not a signature algorithm name (see the README's "
                                "algorithm table)",
                                v);
            }
            ca->sig_alg = a->id;
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (ca->key_uri == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "key", "missing");
    }
    if (ca->cert_path == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "cert", "missing");
    }
    if (ca->profile == NULL) {
        return cfg_fail(ld, CFG_E_MISSING, "profile", "missing");
    }
    if ((ca->cmp_key_uri == NULL) != (ca->cmp_cert_path == NULL)) {
        return cfg_fail(ld, CFG_E_MISSING, ca->cmp_key_uri == NULL ? "cmp_key" : "cmp_cert",
                        "cmp_key and cmp_cert go together");
    }
    char why[400];
    cm_result r =
        ca_authority_load(&ca->authority, why, sizeof(why), ca->cert_path, ca->chain_path);
    if (!cm_ok(r)) {
        return cfg_fail(ld, r.code == CM_E_NOMEM ? CM_E_NOMEM : CFG_E_FILE, "cert", "%s", why);
    }
    static const char *const k_root_keys[3] = {"root_new_with_new", "root_new_with_old",
                                               "root_old_with_new"};
    if (ca->root_update_paths[0] == NULL &&
        (ca->root_update_paths[1] != NULL || ca->root_update_paths[2] != NULL)) {
        return cfg_fail(ld, CFG_E_MISSING, "root_new_with_new",
                        "required with root_new_with_old / root_old_with_new");
    }
    for (size_t i = 0; i < 3; i++) {
        if (ca->root_update_paths[i] != NULL) {
            size_t num = 0;
            CM_TRY(cfg_read_certs(ld, k_root_keys[i], ca->root_update_paths[i], &ca->root_update[i],
                                  &ca->root_update_len[i], &num, 1));
        }
    }
    if (ca->cmp_key_uri == NULL) {
        ca->cmp_key_uri = cfg_strdup(ca->key_uri);
        ca->cmp_cert_path = cfg_strdup(ca->cert_path);
        const cm_span der = ca_authority_cert(ca->authority);
        ca->cmp_cert = malloc(der.len);
        CM_ENSURE(ca->cmp_key_uri != NULL && ca->cmp_cert_path != NULL && ca->cmp_cert != NULL,
                  CM_E_NOMEM);
        memcpy(ca->cmp_cert, der.p, der.len);
        ca->cmp_cert_len = der.len;
    } else {
        size_t num = 0;
        CM_TRY(cfg_read_certs(ld, "cmp_cert", ca->cmp_cert_path, &ca->cmp_cert, &ca->cmp_cert_len,
                              &num, 1));
    }
    return cm_result_make(CM_OK);
}
