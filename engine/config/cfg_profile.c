// The [profile:NAME] sections: validity, key types, subject and SAN rules and the extensions
// section, turned into a ca_profile (see cfg.h for the keys).
#include <string.h>

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include "engine/config/cfg.h"
#include "engine/config/cfg_internal.h"


static cm_result cfg_key_types(cfg_loader *ld, uint32_t *out, const char *key, const char *v)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } k_types[] = {{"P-256", CA_KEY_EC_P256},   {"P-384", CA_KEY_EC_P384},
                   {"P-521", CA_KEY_EC_P521},   {"RSA", CA_KEY_RSA},
                   {"Ed25519", CA_KEY_ED25519}, {"Ed448", CA_KEY_ED448},
                   {"X25519", CA_KEY_X25519},   {"X448", CA_KEY_X448}};
    uint32_t bits = 0;
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        uint32_t bit = 0;
        if (strcasecmp(item, "none") == 0 && strcmp(key, "key_types") != 0) {
            continue; // encryption_key_types, kem_key_types, central_key_types: none
        }
        for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++) {
            if (strcasecmp(item, k_types[i].name) == 0) {
                bit = k_types[i].bit;
            }
        }
        if (bit == 0) {
            return cfg_fail(
                ld, CFG_E_VALUE, key,
                "'%s' is not one of P-256, P-384, P-521, RSA, Ed25519, Ed448, X25519, X448", item);
        }
        bits |= bit;
    }
    *out = bits;
    return cm_result_make(CM_OK);
}

static cm_result cfg_san_types(cfg_loader *ld, uint32_t *out, const char *key, const char *v)
{
    uint32_t bits = 0;
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        if (strcasecmp(item, "dns") == 0) {
            bits |= CA_SAN_DNS;
        } else if (strcasecmp(item, "ip") == 0) {
            bits |= CA_SAN_IP;
        } else if (strcasecmp(item, "email") == 0) {
            bits |= CA_SAN_EMAIL;
        } else if (strcasecmp(item, "uri") == 0) {
            bits |= CA_SAN_URI;
        } else if (strcasecmp(item, "none") != 0) {
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not one of dns, ip, email, uri, none",
                            item);
        }
    }
    *out = bits;
    return cm_result_make(CM_OK);
}

// cfg_key_usage parses key_usage_allowed: keyUsage bit names as OpenSSL spells them, or none.
static cm_result cfg_key_usage(cfg_loader *ld, uint32_t *out, const char *key, const char *v)
{
    uint32_t bits = 0;
    char item[CFG_ITEM_MAX];
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        const uint32_t bit = ca_key_usage_bit(item);
        if (bit == 0 && strcasecmp(item, "none") != 0) {
            return cfg_fail(ld, CFG_E_VALUE, key,
                            "'%s' is not a keyUsage bit (digitalSignature, nonRepudiation, "
                            "keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, "
                            "cRLSign, encipherOnly, decipherOnly, or none)",
                            item);
        }
        bits |= bit;
    }
    *out = bits;
    return cm_result_make(CM_OK);
}

// cfg_purposes splits eku_allowed into at most CA_MAX_EKU purposes (OpenSSL names or dotted
// OIDs, or none), copied into |store|.
static cm_result cfg_purposes(cfg_loader *ld, char store[][64], const char **names, size_t *num,
                              const char *key, const char *v)
{
    char item[CFG_ITEM_MAX];
    *num = 0;
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        if (strcasecmp(item, "none") == 0) {
            continue;
        }
        if (*num == CA_MAX_EKU) {
            return cfg_fail(ld, CFG_E_VALUE, key, "more than %u purposes", CA_MAX_EKU);
        }
        ASN1_OBJECT *obj = item[0] != '\0' && strlen(item) < 64 ? OBJ_txt2obj(item, 0) : NULL;
        ASN1_OBJECT_free(obj);
        if (obj == NULL) {
            ERR_clear_error();
            return cfg_fail(ld, CFG_E_VALUE, key,
                            "'%s' is not an extended key usage OpenSSL knows (a name such as "
                            "clientAuth, or a dotted OID)",
                            item);
        }
        memcpy(store[*num], item, strlen(item) + 1);
        names[*num] = store[*num];
        (*num)++;
    }
    return cm_result_make(CM_OK);
}

// cfg_names splits |v| into at most CA_MAX_RDN_RULES / 2 names, copied into |store|.
static cm_result cfg_names(cfg_loader *ld, char store[][64], const char **names, size_t *num,
                           const char *key, const char *v)
{
    char item[CFG_ITEM_MAX];
    *num = 0;
    for (const char *c = v; cfg_item(&c, item, sizeof(item));) {
        if (*num == CA_MAX_RDN_RULES / 2) {
            return cfg_fail(ld, CFG_E_VALUE, key, "more than %u attribute types",
                            CA_MAX_RDN_RULES / 2);
        }
        ASN1_OBJECT *obj = item[0] != '\0' && strlen(item) < 64 ? OBJ_txt2obj(item, 0) : NULL;
        ASN1_OBJECT_free(obj);
        if (obj == NULL) {
            ERR_clear_error();
            return cfg_fail(ld, CFG_E_VALUE, key, "'%s' is not an attribute type OpenSSL knows",
                            item);
        }
        memcpy(store[*num], item, strlen(item) + 1);
        names[*num] = store[*num];
        (*num)++;
    }
    return cm_result_make(CM_OK);
}

cm_result cfg_profile_load(cfg_loader *ld, cfg_profile *pr, const char *section)
{
    STACK_OF(CONF_VALUE) *vals = NCONF_get_section(ld->conf, section);
    ca_profile_params p;
    memset(&p, 0, sizeof(p));
    p.name = pr->name;
    p.default_days = 365;
    p.key_types = CA_KEY_EC_P256;
    p.rsa_min_bits = 2048;
    p.rsa_max_bits = 4096;
    p.implicit_confirm = true;
    bool have_max = false, have_central_types = false;
    char req_store[CA_MAX_RDN_RULES / 2][64], allow_store[CA_MAX_RDN_RULES / 2][64];
    const char *req_names[CA_MAX_RDN_RULES / 2], *allow_names[CA_MAX_RDN_RULES / 2];
    const char *ext = NULL;
    cm_result r = cm_result_make(CM_OK);
    char eku_store[CA_MAX_EKU][64];
    const char *eku_names[CA_MAX_EKU];
    for (int i = 0; i < sk_CONF_VALUE_num(vals); i++) {
        const CONF_VALUE *cv = sk_CONF_VALUE_value(vals, i);
        const char *k = cv->name, *v = cv->value;
        if (strcmp(k, "validity_days") == 0) {
            CM_TRY(cfg_u32(ld, &p.default_days, k, v, 1, 36500));
        } else if (strcmp(k, "max_validity_days") == 0) {
            CM_TRY(cfg_u32(ld, &p.max_days, k, v, 1, 36500));
            have_max = true;
        } else if (strcmp(k, "key_types") == 0) {
            CM_TRY(cfg_key_types(ld, &p.key_types, k, v));
        } else if (strcmp(k, "encryption_key_types") == 0) {
            CM_TRY(cfg_key_types(ld, &p.enc_key_types, k, v));
        } else if (strcmp(k, "kem_key_types") == 0) {
            CM_TRY(cfg_key_types(ld, &p.kem_key_types, k, v));
        } else if (strcmp(k, "central_key_types") == 0) {
            CM_TRY(cfg_key_types(ld, &pr->central_key_types, k, v));
            have_central_types = true;
        } else if (strcmp(k, "central_keygen") == 0) {
            if (strcmp(v, "off") == 0) {
                pr->central_keygen = CFG_CKG_OFF;
            } else if (strcmp(v, "allowed") == 0) {
                pr->central_keygen = CFG_CKG_ALLOWED;
            } else if (strcmp(v, "required") == 0) {
                pr->central_keygen = CFG_CKG_REQUIRED;
            } else {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not off, allowed or required", v);
            }
        } else if (strcmp(k, "central_keygen_min_secret") == 0) {
            CM_TRY(cfg_u32(ld, &pr->central_keygen_min_secret, k, v, 8, CFG_MAX_SECRET));
        } else if (strcmp(k, "central_keygen_kdf_iterations") == 0) {
            CM_TRY(cfg_u32(ld, &pr->central_keygen_kdf_iterations, k, v, 1000, 10000000));
        } else if (strcmp(k, "rsa_min_bits") == 0) {
            CM_TRY(cfg_u32(ld, &p.rsa_min_bits, k, v, 1024, 16384));
        } else if (strcmp(k, "rsa_max_bits") == 0) {
            CM_TRY(cfg_u32(ld, &p.rsa_max_bits, k, v, 1024, 16384));
        } else if (strcmp(k, "subject_required") == 0) {
            CM_TRY(cfg_names(ld, req_store, req_names, &p.num_required_rdns, k, v));
        } else if (strcmp(k, "subject_allowed") == 0) {
            CM_TRY(cfg_names(ld, allow_store, allow_names, &p.num_allowed_rdns, k, v));
        } else if (strcmp(k, "san_types") == 0) {
            CM_TRY(cfg_san_types(ld, &p.san_types, k, v));
        } else if (strcmp(k, "implicit_confirm") == 0) {
            CM_TRY(cfg_bool(ld, &p.implicit_confirm, k, v));
        } else if (strcmp(k, "key_usage_allowed") == 0) {
            CM_TRY(cfg_key_usage(ld, &p.key_usage_allowed, k, v));
            p.has_key_usage_allowed = true;
        } else if (strcmp(k, "eku_allowed") == 0) {
            CM_TRY(cfg_purposes(ld, eku_store, eku_names, &p.num_eku_allowed, k, v));
            p.has_eku_allowed = true;
            p.eku_allowed = eku_names;
        } else if (strcmp(k, "requested_extensions") == 0) {
            if (strcasecmp(v, "replace") == 0) {
                p.replace_requested_exts = true;
            } else if (strcasecmp(v, "refuse") == 0) {
                p.replace_requested_exts = false;
            } else {
                return cfg_fail(ld, CFG_E_VALUE, k, "'%s' is not refuse or replace", v);
            }
        } else if (strcmp(k, "extensions") == 0) {
            if (NCONF_get_section(ld->conf, v) == NULL) {
                ERR_clear_error();
                return cfg_fail(ld, CFG_E_REFERENCE, k, "no section [%s]", v);
            }
            ext = v;
        } else if (cfg_profile_policy_key(ld, pr, k, v, &r)) {
            CM_TRY(r);
        } else {
            return cfg_fail(ld, CFG_E_UNKNOWN_KEY, k, "unknown key");
        }
    }
    if (!have_max) {
        p.max_days = p.default_days;
    } else if (p.max_days < p.default_days) {
        return cfg_fail(ld, CFG_E_VALUE, "max_validity_days", "%u is below validity_days %u",
                        p.max_days, p.default_days);
    }
    if (p.rsa_max_bits < p.rsa_min_bits) {
        return cfg_fail(ld, CFG_E_VALUE, "rsa_max_bits", "%u is below rsa_min_bits %u",
                        p.rsa_max_bits, p.rsa_min_bits);
    }
    if (p.key_types == 0) {
        return cfg_fail(ld, CFG_E_VALUE, "key_types", "no key type");
    }
    // Central key generation (issue 19): the KGA generates keys that sign, of the profile's
    // key types (the certificate must pass the profile's key rule); default: all of them.
    const uint32_t sign_types = CA_KEY_EC_P256 | CA_KEY_EC_P384 | CA_KEY_EC_P521 | CA_KEY_RSA |
                                CA_KEY_ED25519 | CA_KEY_ED448;
    if (!have_central_types) {
        pr->central_key_types = p.key_types & sign_types;
    } else if ((pr->central_key_types & ~(p.key_types & sign_types)) != 0) {
        return cfg_fail(ld, CFG_E_VALUE, "central_key_types",
                        "lists a key type that is not in key_types (or cannot sign)");
    }
    if (pr->central_keygen != CFG_CKG_OFF && pr->central_key_types == 0) {
        return cfg_fail(ld, CFG_E_VALUE, "central_key_types",
                        "central_keygen = %s needs a key type to generate",
                        pr->central_keygen == CFG_CKG_REQUIRED ? "required" : "allowed");
    }
    p.subject_mode =
        p.num_required_rdns + p.num_allowed_rdns > 0 ? CA_SUBJECT_RULES : CA_SUBJECT_COPY;
    p.required_rdns = req_names;
    p.allowed_rdns = allow_names;
    cfg_profile_ca_params(pr, &p); // ca, path_len, name_constraints (cfg_policy.c)
    char why[400];
    r = ca_profile_new(&pr->profile, why, sizeof(why), &p, ld->conf, ext);
    if (!cm_ok(r)) {
        return cfg_fail(ld, r.code == CM_E_NOMEM ? CM_E_NOMEM : CFG_E_VALUE, NULL, "%s", why);
    }
    return cm_result_make(CM_OK);
}
