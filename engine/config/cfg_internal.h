// engine/config internals: the loader's state and the helpers the section loaders share
// (cfg_load.c, cfg_daemon.c, cfg_profile.c, cfg_clients.c, cfg_ca.c). Only engine/config/*.c
// and its tests include this.
#ifndef CERTMINT_ENGINE_CONFIG_CFG_INTERNAL_H
#define CERTMINT_ENGINE_CONFIG_CFG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "engine/config/cfg.h"

#define CFG_ITEM_MAX 1024u // longest item of a comma-separated value, with its NUL

// cfg_loader is the state of one cfg_load call. Thread: start-up, one thread.
typedef struct cfg_loader {
    cfg_config *cfg;
    CONF *conf;
    char *err;
    size_t err_cap;
    char section[160]; // the section being read, as shown in messages ("profile:devices")
} cfg_loader;

// cfg_fail writes "FILE: [SECTION] KEY: what" into the loader's error buffer (without the
// section when none is being read, without the key when |key| is NULL) and returns |code|,
// noted as the first failure. Thread: start-up.
cm_result cfg_fail(cfg_loader *ld, uint32_t code, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// cfg_strdup returns a malloc'ed copy of |s|, NULL when out of memory.
char *cfg_strdup(const char *s);

// cfg_resolve returns |p| made absolute against the configuration file's directory
// (malloc'ed; NULL when out of memory).
char *cfg_resolve(const cfg_loader *ld, const char *p);

// cfg_item copies the next comma-separated, trimmed item of |*cursor| into |buf| (truncated
// to |cap| - 1 bytes); false at the end. An empty item is returned as "" (callers reject it).
bool cfg_item(const char **cursor, char *buf, size_t cap);

// cfg_u32 parses |v| (the value of |key|) as a decimal number in |min|..|max| into |*out|;
// CFG_E_VALUE with a message otherwise.
CM_RESULT cfg_u32(cfg_loader *ld, uint32_t *out, const char *key, const char *v, uint32_t min,
                  uint32_t max);

// cfg_bool parses on/yes/true/1 and off/no/false/0 (any case); CFG_E_VALUE otherwise.
CM_RESULT cfg_bool(cfg_loader *ld, bool *out, const char *key, const char *v);

// cfg_path replaces |*out| with |v| resolved against the file's directory (cfg_resolve);
// CFG_E_VALUE for an empty path.
CM_RESULT cfg_path(cfg_loader *ld, char **out, const char *key, const char *v);

// cfg_pkcs11_uri replaces |*out| with a copy of |v|, which must start with "pkcs11:" (the hsm
// module parses the rest); CFG_E_VALUE otherwise.
CM_RESULT cfg_pkcs11_uri(cfg_loader *ld, char **out, const char *key, const char *v);

// cfg_read_certs reads every PEM certificate of |path| as DER into |ders|/|lens| (malloc'ed,
// appending at |*num|, up to |cap|). CFG_E_FILE when the file cannot be opened or holds no
// certificate, CFG_E_VALUE past |cap|.
CM_RESULT cfg_read_certs(cfg_loader *ld, const char *key, const char *path, uint8_t **ders,
                         size_t *lens, size_t *num, size_t cap);

// The section loaders. Each reads one section of ld->conf into the configuration, with
// ld->section naming it for messages, and fails with a CFG_E_* code and a message.
// cfg_daemon_load reads [certmintd] (after the other sections: default_ca names a CA);
// cfg_profile_load one [profile:NAME] into |pr|; cfg_clients_load one [clients:NAME] into |cl|
// (secrets, trust anchors, RA certificates); cfg_ca_load one [ca:NAME] into |ca| (after the
// profiles and client groups it names). |section| is the NCONF section name ("ca NAME").
CM_RESULT cfg_daemon_load(cfg_loader *ld);

// cfg_store reads the value of [certmintd] store (cfg_store.c): sqlite:PATH into store_path
// and store_url, a PostgreSQL connection string into store_url; CFG_E_VALUE for anything else
// and for a connection string holding a password. cfg_store_finish, once the section is read,
// checks store_passfile (a PostgreSQL store only; a file no group or other may read) and
// appends it to store_url.
CM_RESULT cfg_store(cfg_loader *ld, const char *v);
CM_RESULT cfg_store_finish(cfg_loader *ld);
CM_RESULT cfg_profile_load(cfg_loader *ld, cfg_profile *pr, const char *section);
CM_RESULT cfg_clients_load(cfg_loader *ld, cfg_clients *cl, const char *section);
CM_RESULT cfg_ca_load(cfg_loader *ld, cfg_ca *ca, const char *section);

// cfg_profile_policy_key applies |k| = |v| when it is one of the profile's trust keys
// (allow_key_reuse, revoke_on_update, subject_from; and issue 16's approval, ca, path_len,
// name_constraints; cfg_policy.c) and returns true, with the
// result (CM_OK or a CFG_E_* failure with its message) in |*out|; false for any other key.
bool cfg_profile_policy_key(cfg_loader *ld, cfg_profile *pr, const char *k, const char *v,
                            cm_result *out);

// cfg_daemon_pending_defaults sets the delayed-delivery settings' defaults; cfg_daemon_pending
// applies |k| = |v| when it is one of them (waiting_timeout, max_hsm_queue,
// max_commit_latency, max_pending, approval_check_after; cfg_pending.c) and returns true with
// the result in |*out|, false for any other key.
void cfg_daemon_pending_defaults(cfg_config *cfg);
bool cfg_daemon_pending(cfg_loader *ld, const char *k, const char *v, cm_result *out);

// cfg_profile_ca_params copies the profile's CA keys (ca, path_len, name_constraints:
// cfg_policy.c) into |p| before ca_profile_new, and settles the approval default (manual for a
// CA profile). Thread: start-up.
void cfg_profile_ca_params(cfg_profile *pr, ca_profile_params *p);

#endif // CERTMINT_ENGINE_CONFIG_CFG_INTERNAL_H
