// tools/certmint: the admin tool, one file per command group, sharing this header.
//
//   certmint.c       main: the command table, the usage text, runtime set-up
//   tool_args.c      the option parser of the commands that take -c CONF
//   tool_io.c        files (create-only, replace through rename, read whole), random text
//   tool_ini.c       the INI editor: reads the configuration text, finds sections and keys,
//                    writes it back with comments and order kept, and checks it still loads
//   tool_inst.c      opening an instance: configuration, store, token and key
//   tool_format.c    serial numbers, times, CRLReason and status names, JSON strings
//   tool_issue.c     certificates and requests built and signed through the token
//   tool_init.c      certmint init
//   tool_import.c    certmint import-ca-cert
//   tool_keys.c      certmint keys
//   tool_certs.c     certmint list, show, revoke
//   tool_crl.c       certmint crl
//   tool_secret.c    certmint secret add|list|remove
//   tool_store.c     certmint store copy
//   tool_pending.c   certmint pending, approve, reject (requests that wait)
//
// Every command function takes main's argc/argv (argv[1] is the command's name), prints its own
// messages prefixed "certmint COMMAND:" and returns the exit code: 0 ok, 1 failed, 2 usage.
// Thread: the tool is single-threaded (the hsm pool's workers aside).
#ifndef CERTMINT_TOOLS_CERTMINT_TOOL_H
#define CERTMINT_TOOLS_CERTMINT_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "engine/base/base.h"
#include "engine/ca/ca.h"
#include "engine/config/cfg.h"
#include "engine/store/store.h"
#include "hsm/hsm.h"

// ---------------------------------------------------------------------------------------------
// The commands (each in its own file, see above).

int tool_init_main(int argc, char **argv);
int tool_import_ca_cert(int argc, char **argv);
int tool_keys(int argc, char **argv);
int tool_list(int argc, char **argv);
int tool_show(int argc, char **argv);
int tool_revoke(int argc, char **argv);
int tool_revive(int argc, char **argv); // a certificate on hold becomes valid again
int tool_crl(int argc, char **argv);
int tool_secret(int argc, char **argv);
int tool_pending(int argc, char **argv); // the requests that wait (delayed delivery)
int tool_approve(int argc, char **argv); // a request waiting for approval is signed
int tool_reject(int argc, char **argv);  // a waiting request is rejected
int tool_store(int argc, char **argv);

// ---------------------------------------------------------------------------------------------
// tool_args.c

// tool_opt is one option a command accepts.
typedef struct tool_opt {
    const char *name;   // "--ca"; "-c" is spelled as its own entry
    const char **value; // where the value goes; NULL for a flag
    bool *flag;         // set for a flag
} tool_opt;

// tool_args_parse walks argv[first..]: options listed in |opts| (as "--name VALUE" or
// "--name=VALUE"), "--help"/"-h", and up to |max_pos| positional arguments, stored in |pos|
// (|*out_num_pos| of them). Values point into argv. Returns -1 to go on, 0 when |help| was
// printed to stdout, 2 after a usage error naming |cmd| was printed to stderr.
int tool_args_parse(int argc, char **argv, int first, const tool_opt *opts, size_t num_opts,
                    const char **pos, size_t max_pos, size_t *out_num_pos, const char *cmd,
                    const char *help);

// ---------------------------------------------------------------------------------------------
// tool_io.c

// tool_write_file creates |path| (it must not exist: O_EXCL) with |mode| and writes |len|
// bytes of |data|. False, after printing why, on any failure.
bool tool_write_file(const char *path, const void *data, size_t len, mode_t mode);

// tool_write_replace writes |data| to |path| through a temporary file (|path|.tmp) and rename,
// so a reader never sees half a file. False, after printing why (prefixed |cmd|), on failure;
// the temporary file is removed then.
bool tool_write_replace(const char *cmd, const char *path, const void *data, size_t len,
                        mode_t mode);

// tool_read_all reads the whole file |path| into |*out| (malloc'ed: the caller frees it).
// False, after printing why, on failure.
bool tool_read_all(const char *path, uint8_t **out, size_t *out_len);

// tool_path joins |dir| and |name| into |buf|; NULL when it does not fit in |cap|.
const char *tool_path(char *buf, size_t cap, const char *dir, const char *name);

// tool_random_text writes |n| characters of [a-zA-Z0-9] from RAND_bytes and a NUL to |out|
// (cap |n| + 1): no modulo bias, the 62 symbols are drawn by rejection. False when the random
// generator fails.
bool tool_random_text(char *out, size_t n);

// ---------------------------------------------------------------------------------------------
// tool_ini.c: the configuration text, edited in place.

// tool_text is a file's text (NUL-terminated, malloc'ed: free(p)) and its stat (mode, owner).
typedef struct tool_text {
    char *p;
    size_t len;
    struct stat st;
} tool_text;

// tool_text_read reads |path| (at most CFG_MAX_FILE bytes) into |t|. False, after printing why
// (prefixed |cmd|), on failure; |t->p| is NULL then.
bool tool_text_read(const char *cmd, tool_text *t, const char *path);

// tool_text_write replaces the file at |path| with |data| (tool_write_replace), keeping the
// mode of |st| and, when allowed (root), its owner.
bool tool_text_write(const char *cmd, const char *path, const char *data, size_t len,
                     const struct stat *st);

// tool_line_key reports whether the line [p, end) sets |key| ("key = value"); |*out_value|
// (pointing into the line) gets the value without a trailing comment and blanks.
bool tool_line_key(const char *p, const char *end, const char *key, const char **out_value,
                   size_t *out_value_len);

// tool_section_find locates [clients:NAME] (or [clients NAME]) in |t|: |*out_body| is the
// offset just after its header line, |*out_end| the offset of the next section header (or the
// end), and |*out_last| the offset just after its last line that is neither blank nor a comment
// (the header line when the section is empty). False when there is no such section.
bool tool_section_find(const tool_text *t, const char *name, size_t *out_body, size_t *out_end,
                       size_t *out_last);

// tool_cfg_verify reloads the edited configuration at |path| with cfg_load; on failure it
// writes |orig| back, says so (prefixed |cmd|) and returns false.
bool tool_cfg_verify(const char *cmd, const char *path, const tool_text *orig);

// tool_conf_value finds the first "KEY = value" line of the configuration text (instances made
// by 'certmint init' have one CA) and copies the value into |out| (cap |cap|, NUL-terminated).
// False when there is none or it does not fit.
bool tool_conf_value(const tool_text *t, const char *key, char *out, size_t cap);

// ---------------------------------------------------------------------------------------------
// tool_inst.c: an instance the configuration describes.

// tool_inst is what a command opened; tool_inst_close releases all of it. Start from
// {.cmd = "certmint NAME"}: every member but cmd zero.
typedef struct tool_inst {
    const char *cmd; // "certmint list", for messages
    cfg_config *cfg;
    store *st;
    store_reader *rd;
    hsm_token *tok;
    hsm_key *key;
    hsm_pool *pool;
} tool_inst;

// tool_env_load sets SOFTHSM2_CONF from the `env` file next to |conf_path| (written by
// `certmint init`) unless the environment has it already, as the daemon's unit file does.
// A missing or unreadable file is not an error.
void tool_env_load(const char *conf_path);

// tool_inst_open_cfg loads the configuration |conf_path| into |t->cfg|. False, after printing
// the loader's message (and a hint when the file does not exist), on failure.
bool tool_inst_open_cfg(tool_inst *t, const char *conf_path);

// tool_inst_pick_ca returns the CA named |name| of |t->cfg|, or the default CA when |name| is
// NULL (the only one when there is one). NULL, after listing the choices, when there is none.
// The result is borrowed from |t->cfg|.
const cfg_ca *tool_inst_pick_ca(tool_inst *t, const char *name);

// tool_inst_open_store opens the configuration's store and a reader on it (|t->st|, |t->rd|).
// False, after printing why and what to check, on failure.
bool tool_inst_open_store(tool_inst *t);

// tool_inst_open_key opens the token of |c|'s key, finds the key (|t->tok|, |t->key|) and
// checks it matches the CA certificate; with |pool| it also starts a one-session signing pool
// (|t->pool|). False, after printing why and a hint, on failure.
bool tool_inst_open_key(tool_inst *t, const cfg_ca *c, bool pool);

// tool_inst_close frees everything |t| holds; safe on a partly opened instance.
void tool_inst_close(tool_inst *t);

// ---------------------------------------------------------------------------------------------
// tool_format.c: serials, times, names, JSON.

#define TOOL_SERIAL_MAX 21u // 20 octets of magnitude and a sign octet

// tool_time_text writes |t| (seconds since the epoch) as 2024-05-01T12:00:00Z, or "-" for 0.
void tool_time_text(char *out, size_t cap, int64_t t);

// tool_serial_parse reads a serial number as hex: any case, an optional 0x, colons or spaces
// between digits allowed ("3F:0A", "0x3f0a", "3F0A" are the same). |out| receives the content
// octets of the DER INTEGER (minimal, positive: a 00 octet when the top bit is set), which is
// how the store keys certificates. False when |text| is not such a number or too long.
bool tool_serial_parse(const char *text, uint8_t out[TOOL_SERIAL_MAX], size_t *out_len);

// tool_serial_text prints |serial| (DER INTEGER content) as `openssl x509 -serial` does: the
// magnitude in upper-case hex, two digits an octet (cap 2 * TOOL_SERIAL_MAX + 1 holds any).
void tool_serial_text(char *out, size_t cap, cm_span serial);

// tool_reason_name returns the RFC 5280 name of CRLReason |reason|, or "-" for none.
const char *tool_reason_name(int reason);

// tool_reason_parse maps a CRLReason name (RFC 5280 §5.3.1; case does not matter) to its
// value; -1 when it names none.
int tool_reason_parse(const char *name);

// tool_reasons_print writes " NAME" for every CRLReason to |f|, in value order.
void tool_reasons_print(FILE *f);

// tool_status_name returns the name `certmint list` uses for |s| (valid, revoked, ...).
const char *tool_status_name(store_cert_status s);

// tool_json_string writes |s| to |f| as a JSON string (RFC 8259 §7): quotes, backslashes and
// control characters escaped, everything else (UTF-8) as is.
void tool_json_string(FILE *f, const char *s);

// ---------------------------------------------------------------------------------------------
// tool_issue.c: certificates and requests signed through the token.

// tool_parse_dn turns "/CN=x/O=y" (OpenSSL's text form; '/' inside a value is not supported)
// into a DER Name in |*out| (OPENSSL_free it). False, after printing why, when it is not one.
bool tool_parse_dn(const char *text, uint8_t **out, size_t *out_len);

// tool_issue builds one certificate signed by |signer| with |alg| through |pool|: |ca| NULL
// makes the self-signed root for |subject_key| (ca_root_tbs_build), otherwise a CMP protection
// certificate issued by |ca| (ca_cmp_tbs_build: keyUsage digitalSignature, EKU id-kp-cmcCA,
// SKI, AKI; |cmp_flags| CA_CMP_CERT_KGA adds id-kp-cmKGA). Subject |name| (DER), a random
// serial, valid from 5 minutes ago for |days|. |*out| is malloc'ed DER. False, after printing
// why, on failure.
bool tool_issue(hsm_pool *pool, const hsm_key *signer, hsm_sig_alg alg, const ca_authority *ca,
                const hsm_key *subject_key, cm_span name, int days, uint32_t cmp_flags,
                uint8_t **out, size_t *out_len);

// tool_csr_write makes a PKCS#10 request (RFC 2986) for |key|, signed in the token with |alg|,
// and writes it as PEM to the new file |path|: subject |name|, no attributes (the parent sets
// the extensions). False, after printing why, on failure.
bool tool_csr_write(hsm_pool *pool, const hsm_key *key, hsm_sig_alg alg, cm_span name,
                    const char *path);

// tool_write_pem_cert writes the DER certificate |der| as PEM to the new file |path| (0644).
bool tool_write_pem_cert(const char *path, const uint8_t *der, size_t len);

#endif // CERTMINT_TOOLS_CERTMINT_TOOL_H
