// engine/config: load, validate and freeze certmintd's one configuration file.
//
// The file is in OpenSSL config syntax (sections, key = value, $var), read with NCONF, so a
// profile's certificate extensions are written exactly as for `openssl ca`. Everything is
// checked at start-up; the first problem fails the load with a message that names the file,
// the section, the key and what is wrong, e.g.
//   certmint.cnf: [profile:devices] validity_days: 'abc' is not a number
// Unknown keys are errors (typo safety). Relative paths are resolved against the directory of
// the configuration file. Secrets are read from files that must not be readable by group or
// others, are never logged and are wiped when the configuration is freed.
//
// Sections (OpenSSL 3.0's NCONF does not accept ':' in a section name, so the loader rewrites
// "[ca:NAME]" to "[ca NAME]" before parsing; both spellings are accepted, messages use ':'):
//
//   [certmintd]
//   listen       = 127.0.0.1:8080, [::1]:8080   # required; IPv4 or [IPv6] addresses;
//                                    #   https://ADDR serves HTTPS there (the tls_ keys)
//   io_threads   = 2                 # default: online cores
//   hsm_sessions = 4                 # default: online cores
//   hsm_dispatch = auto              # auto | inline | pool
//   max_connections = 4096           # per I/O thread; more get 503 (Retry-After: 1)
//   store_sync   = full              # full: fsync every commit (power-loss safe); normal: WAL
//                                    #   fsync at checkpoints (process-crash safe only)
//   header_timeout  = 10             # seconds for a request (head and body) to arrive
//   idle_timeout    = 30             # seconds a keep-alive connection may idle
//   store        = sqlite:var/certmint.db        # required; or PostgreSQL (README "Scale-out"):
//                  postgresql://certmint@db.example/certmint?sslmode=verify-full  (a libpq
//                  URI) or postgresql:host=/run/postgresql dbname=certmint (KEY=VALUE pairs);
//                  never with a password: that goes in a password file
//   store_passfile = pgpass          # PostgreSQL: the libpq password file (mode 0600), added
//                                    #   to the connection string (default: PGPASSFILE, ~/.pgpass)
//   max_request_bytes     = 262144   # default 256 KiB
//   min_pbm_iterations    = 100      # default 100
//   max_pbm_iterations    = 10000    # default 10000 (~1 ms of CPU for a forged MAC)
//   max_pbmac1_iterations = 2500     # default 2500 (the same budget for PBKDF2)
//   (protection_algs, pop_algs and allow_sha1 are at the end of the list)
//   message_time_window   = 300      # seconds; default 300
//   confirm_wait_time     = 300      # seconds; default 300
//   log_level    = info              # error | warn | info | debug
//   default_ca   = devices           # served at /.well-known/cmp; default: the only CA
//   max_connections_per_peer = 256   # per I/O thread and IPv4 address / IPv6 /64; none: no cap
//   admin_listen = 127.0.0.1:8081    # /healthz and /metrics only, own slots; default: none
//   admin_max_connections = 16       # per I/O thread on admin_listen
//   store_min_free = 256M            # refuse new enrolments below this free space (0: never)
//   coap_listen  = 127.0.0.1:5683    # CMP over CoAP (RFC 9482), UDP; default: none
//   coap_max_transfers_per_peer = 4  # open block-wise transfers per peer address
//   coap_transfer_timeout = 60       # seconds a transfer may wait for its next block
//   coap_peer_rate = 1000            # datagrams per second per peer address; none: no cap
//   coap_max_requests = 64           # CoAP requests in the engine at once; more get 5.03
//   protection_algs = ecdsa-sha256, pbmac1, hmac-sha256, sha256  # names from the algorithm
//                                    # table (README): what may protect a message; default:
//                                    # the whole table but its SHA-1 rows
//   pop_algs     = ecdsa-sha256, ed25519  # signature names: what a POPO (or a PKCS#10
//                                    # self-signature) may use; default: every signature row
//                                    # but the SHA-1 ones
//   allow_sha1   = off               # on: the SHA-1 rows join the defaults and may be listed
//   tls_cert     = tls.pem           # for the https:// listen addresses: the server certificate
//   tls_key      = tls.key           #   and its key (PEM, mode 0600 or stricter)
//   tls_chain    = tls-chain.pem     # optional: intermediates sent after tls_cert
//   tls_client_auth = off            # off | optional | required (TLS client certificates)
//   tls_client_ca = ra-ca.pem        # the CAs a client certificate must chain to
//   tls_ticket_lifetime = 3600       # seconds: session ticket lifetime and key rotation; 0: none
//   tls_handshake_timeout = 10       # seconds for a TLS handshake to finish
//   max_nested_depth = 2             # nested messages inside nested ones (0: none accepted)
//   max_nested_messages = 256        # inner messages of one request, at every depth
//   nested_threads = 2               # threads verifying a batch's inner messages; default:
//                                    #   online cores; 0: on the I/O thread that received it
//   waiting_timeout = 86400          # seconds a request may wait (delayed delivery) before it
//                                    #   is answered with a rejection
//   max_hsm_queue = auto             # HSM queue depth above which new enrolments wait; auto:
//                                    #   what 100 ms of the pool's measured signing rate drains
//   max_commit_latency = 250         # ms: store commit latency above which enrolments wait
//   max_pending   = 10000            # enrolments waiting under load on this node; more:
//                                    #   systemUnavail
//   approval_check_after = 60        # seconds: the checkAfter of a request held for approval
//   kdf_threads  = 1                 # PBM/PBMAC1 key derivation threads; default: cores / 2
//   kdf_max_queue = 1024             # requests waiting for them; more get systemUnavail
//   kdf_inline   = on                # a good address's MAC on the I/O thread while none waits
//   mac_failures_max = 10            # wrong MACs per senderKID, and per address, within
//   mac_failure_window = 60          #   this many seconds start a back-off of
//   mac_failure_backoff = 60         #   this many seconds (MAC requests refused); none: never
//   error_signatures_per_peer = 10   # signed errors per second per address to messages that
//                                    #   cannot be authenticated; then unprotected; none: no cap
//   retransmit_window = auto         # seconds a resent request gets its answer again; auto:
//                                    #   confirm_wait_time, or 300 for implicitConfirm; 0: off
//   retransmit_cache_entries = 65536 # answers kept at most
//   retransmit_cache_bytes = 64M     #   and their memory
//
//   [ca:NAME]                        # served at /.well-known/cmp/p/NAME
//   key          = pkcs11:...        # required; resolved later by hsm/
//   cert         = ca.pem            # required; must hold the key above (checked by hsm/)
//   chain        = chain.pem         # optional: the CA's chain up to the root
//   cmp_key      = pkcs11:...        # optional, with cmp_cert; default: key and cert
//   cmp_cert     = cmp.pem
//   profile      = NAME              # required: a [profile:NAME]
//   clients      = NAME              # optional: a [clients:NAME]
//   caPubs       = on | off          # default off
//   sign_mac_responses = on | off    # default off: MAC requests get MAC responses
//   unprotected_genm   = on | off    # default off
//   crl_validity_days  = 7           # CRL nextUpdate - thisUpdate, 1..365; default 7
//   root_new_with_new  = newroot.pem  # a root CA key update to announce (genm rootCaCert);
//   root_new_with_old  = nwo.pem      #   the other two are optional
//   root_old_with_new  = own.pem
//   crl_min_interval   = 60          # seconds between CRLs under revocations; default 60
//   sig_alg      = rsa-pss-sha256    # the CA's signature algorithm (a signature name of the
//                                    # table the key can make); default: by key type
//
//   [profile:NAME]
//   validity_days     = 365          # default 365
//   max_validity_days = 730          # default: validity_days
//   key_types         = P-256, P-384, P-521, RSA, Ed25519, Ed448   # default P-256
//   rsa_min_bits      = 2048         # default 2048
//   rsa_max_bits      = 4096         # default 4096
//   subject_required  = CN           # RDN types that must appear
//   subject_allowed   = O, OU, C     # further RDN types that may appear
//                                    # (neither given: the subject is copied as requested)
//   san_types         = dns, ip, email, uri   # default none
//   implicit_confirm  = on | off     # default on
//   extensions        = SECTION      # an `openssl ca` extensions section
//   key_usage_allowed = digitalSignature, keyAgreement   # keyUsage bits a request may ask
//                                    #   for; default: the bits of the profile's keyUsage
//   eku_allowed       = clientAuth, serverAuth   # purposes a request may ask for; default:
//                                    #   those of the profile's extendedKeyUsage
//   requested_extensions = refuse | replace   # a keyUsage/EKU outside the above: refused
//                                    #   (badCertTemplate, default) or the profile's used
//   allow_key_reuse   = off          # on: a key this CA already certified may be certified again
//   revoke_on_update  = off          # on: a kur also revokes the old certificate (superseded)
//   subject_from      = signer       # signer | request: a certificate-signed cr/kur may ask
//                                    #   only for its signer's subject, or for any (default
//                                    #   signer)
//   approval          = auto         # auto | manual: every request waits for `certmint approve`
//                                    #   (default manual with ca = on, else auto)
//   ca                = off          # on: issues CA certificates (basicConstraints cA, keyUsage
//                                    #   keyCertSign and cRLSign): cross-certificates for ccr
//   path_len          = 0            # with ca = on: the pathLenConstraint (default: none)
//   name_constraints  = permitted;DNS:.example.com   # with ca = on: nameConstraints (OpenSSL
//                                    #   syntax), critical
//   encryption_key_types = RSA       # keys proving possession by keyEncipherment (encrCert,
//                                    #   encryptedKey); default none
//   kem_key_types     = P-256, X25519  # keys proving possession by keyAgreement; default none
//   central_keygen    = off          # off | allowed | required: the CA generates the key of a
//                                    #   request without one (RFC 9483 §4.1.6); default off
//   central_key_types = P-256        # the types it generates (of key_types); default key_types
//   central_keygen_min_secret = 16   # octets a MAC secret needs to receive a key (8..4096)
//   central_keygen_kdf_iterations = 10000  # PBKDF2 iterations of that password recipient
//
//   [clients:NAME]
//   secret.REF    = secrets/REF.key  # a password (PBM, PBMAC1) file (mode 0600 or stricter)
//   key.REF       = keys/REF.key     # a key (HMAC, AES-GMAC, KMAC): 16..64 octets, raw or as
//                                    # hex text (`openssl rand -hex 32`); mode 0600 or stricter
//   senderKID.REF = hex:0a0b0c       # optional: the senderKID for REF (text or hex:);
//                                    # default: the bytes of REF
//   trust_anchors = vendor-ca.pem    # PEM file(s), comma separated: signature-protected ir
//   trust_crls    = vendor-ca.crl    # CRL file(s) (PEM or DER) of those anchors' CAs, checked
//                                    #   in every chain; reloaded on SIGHUP; needs trust_anchors
//   ra_certs      = ra.pem           # PEM file(s): RAs allowed raVerified / revocation
//   ra_require_cmcra = on            # an RA certificate needs extended key usage id-kp-cmcRA
//   profiles      = devices, gw      # profiles a request may select with certProfile
//   max_certs.REF = 100              # the secret REF enrols at most this many certificates
//   once.REF      = on               # the secret REF enrols one certificate (max_certs 1)
//   subject_pattern.REF = CN=line-7-*  # subjects the secret REF may request (ca_subject_match)
//   ra.REF        = on               # the secret REF may protect nested messages as an RA
//   cross_requesters = other-ca.pem  # PEM file(s): CA certificates that may send ccr, signed
//                                    #   with their key (trusted as themselves)
//   cross_profile = cross            # the profile (ca = on) a ccr is issued under; required
//                                    #   with cross_requesters
#ifndef CERTMINT_ENGINE_CONFIG_CFG_H
#define CERTMINT_ENGINE_CONFIG_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/ca/ca.h"
#include "engine/crmf/crmf.h"

// Codes (cfg range 0x600-0x6ff): the CFG rows of engine/base/codes.def. All are USAGE class:
// the operator's file is wrong.
enum {
#define CM_CODES_CFG CM_CODE_ENUM
#include "engine/base/codes.def"
};

#define CFG_MAX_LISTEN       16u
#define CFG_MAX_ADMIN_LISTEN 4u
#define CFG_MAX_SERVE        8u // listen and admin_listen addresses together (engine/net's limit)
#define CFG_MAX_SECRET       4096u // bytes in one secret file
#define CFG_MAX_FILE         (1u << 20)
#define CFG_MAX_RA_CERTS     64u
#define CFG_MAX_COAP_LISTEN  4u

// cfg_listen is one address to listen on. Thread: immutable after cfg_load.
typedef struct cfg_listen {
    char host[48]; // numeric address, without brackets
    uint16_t port;
    bool ipv6;
    bool tls; // https://: the address speaks TLS (the tls_ keys)
} cfg_listen;

// cfg_secret is one MAC credential. Thread: immutable after cfg_load.
typedef struct cfg_secret {
    char *ref;    // REF of secret.REF or key.REF (for logs; never the secret)
    uint8_t *kid; // senderKID
    size_t kid_len;
    uint8_t *secret; // wiped by cfg_free
    size_t secret_len;
    uint32_t max_certs;    // max_certs.REF / once.REF: certificates it may enrol; 0: no limit
    char *subject_pattern; // subject_pattern.REF, NULL when none
    bool is_key;           // key.REF: a key for the key-based MACs; else a password (PBM, PBMAC1)
    bool ra;               // ra.REF = on: may protect nested messages as an RA (issue 16)
} cfg_secret;

// cfg_clients is one [clients:NAME] section. Thread: immutable after cfg_load (the trust
// store's cache is internally locked).
typedef struct cfg_clients {
    char *name;
    cfg_secret *secrets;
    size_t num_secrets;
    ca_trust *trust;    // NULL when no trust_anchors
    uint8_t **ra_certs; // DER
    size_t *ra_cert_lens;
    size_t num_ra_certs;
    bool ra_require_cmcra; // ra_require_cmcra (default on)
    char **crl_paths;      // trust_crls, resolved: reloaded by cfg_clients_reload_crls
    size_t num_crl_paths;
    const struct cfg_profile **profiles; // profiles a certProfile may select
    size_t num_profiles;
    // Cross-certification (issue 16): CA certificates that may send ccr (DER) and the profile
    // their ccr are issued under (ca = on).
    uint8_t **cross_certs;
    size_t *cross_cert_lens;
    size_t num_cross_certs;
    const struct cfg_profile *cross_profile;
} cfg_clients;

// cfg_profile is one [profile:NAME] section. Thread: immutable after cfg_load.
typedef struct cfg_profile {
    char *name;
    ca_profile *profile;
    bool allow_key_reuse;      // allow_key_reuse (default off)
    bool revoke_on_update;     // revoke_on_update (default off)
    bool subject_from_request; // subject_from = request (default signer)
    // Delayed delivery and CA certificates (issue 16; cfg_policy.c).
    bool approval_manual; // approval = manual (default: manual when ca = on, else auto)
    bool approval_set;    // approval was given (the default follows ca otherwise)
    bool is_ca;           // ca = on
    bool has_path_len;    // path_len given
    uint32_t path_len;
    char *name_constraints; // name_constraints, NULL when none
    // Central key generation (issue 19; engine/server/srv_ckg.c): central_keygen (CFG_CKG_*,
    // default off), central_key_types (CA_KEY_* bits, default the profile's key_types that
    // can sign), central_keygen_min_secret (octets) and central_keygen_kdf_iterations (PBKDF2;
    // 0: the server's defaults).
    uint8_t central_keygen;
    uint32_t central_key_types;
    uint32_t central_keygen_min_secret;
    uint32_t central_keygen_kdf_iterations;
} cfg_profile;

// The values of cfg_profile.central_keygen, in srv_ckg_mode's order.
enum { CFG_CKG_OFF = 0, CFG_CKG_ALLOWED = 1, CFG_CKG_REQUIRED = 2 };

// cfg_ca is one [ca:NAME] section. Thread: immutable after cfg_load.
typedef struct cfg_ca {
    char *name;
    char *key_uri;     // PKCS#11 URI of the CA key
    char *cmp_key_uri; // of the CMP protection key (== key_uri's value by default)
    char *cert_path;   // absolute or relative to the working directory after resolution
    char *chain_path;  // NULL when none
    char *cmp_cert_path;
    ca_authority *authority; // the CA certificate and chain, loaded
    uint8_t *cmp_cert;       // DER of the CMP protection certificate
    size_t cmp_cert_len;
    const cfg_profile *profile;
    const cfg_clients *clients; // NULL when none
    bool ca_pubs;
    bool sign_mac_responses;
    bool unprotected_genm;
    // A root CA key update to announce (genm rootCaCert, RFC 9483 §4.3.2): newWithNew,
    // newWithOld, oldWithNew certificates (DER; NULL when not configured).
    char *root_update_paths[3];
    uint8_t *root_update[3];
    size_t root_update_len[3];
    uint32_t crl_validity_days; // CRL nextUpdate - thisUpdate; default 7
    uint32_t crl_min_interval;  // seconds between CRLs when revocations keep coming; default 60
    crmf_alg_id sig_alg;        // sig_alg: a signature row; CRMF_ALG_NONE: by the key's type
} cfg_ca;

// The values of cfg_config.hsm_dispatch (the same order as hsm/hsm.h's hsm_dispatch).
enum { CFG_HSM_DISPATCH_AUTO = 0, CFG_HSM_DISPATCH_INLINE = 1, CFG_HSM_DISPATCH_POOL = 2 };

// cfg_config is the whole frozen configuration. Thread: immutable after cfg_load; share it
// read-only between threads.
typedef struct cfg_config {
    char *path; // as given to cfg_load
    char *dir;  // its directory, for relative paths
    cfg_listen listen[CFG_MAX_LISTEN];
    size_t num_listen;
    uint32_t io_threads;
    uint32_t max_connections; // per I/O thread; excess connections get a 503
    bool store_sync_normal;   // store_sync = normal: fsync at checkpoints only (default full)
    uint32_t header_timeout;  // seconds for a request's head and body to arrive
    uint32_t idle_timeout;    // seconds a keep-alive connection may idle
    uint32_t hsm_sessions;
    // hsm_dispatch: CFG_HSM_DISPATCH_AUTO (default), _INLINE or _POOL, in hsm_dispatch's order.
    uint32_t hsm_dispatch;
    char *store_url;      // what store_open takes: sqlite:RESOLVED-PATH, or the PostgreSQL
                          // connection string with store_passfile appended
    char *store_path;     // the PATH of sqlite:PATH, resolved; NULL for PostgreSQL
    char *store_passfile; // store_passfile, resolved; NULL when not set
    uint32_t max_request_bytes;
    uint32_t min_pbm_iterations;
    uint32_t max_pbm_iterations;
    uint32_t max_pbmac1_iterations;
    uint32_t message_time_window; // seconds
    uint32_t confirm_wait_time;   // seconds
    cm_log_level log_level;
    const cfg_ca *default_ca; // NULL when there is none
    cfg_ca *cas;
    size_t num_cas;
    cfg_profile *profiles;
    size_t num_profiles;
    cfg_clients *clients;
    size_t num_clients;
    // Limits and operations (issue 23).
    uint32_t max_connections_per_peer; // per I/O thread and peer address; UINT32_MAX: no cap
    cfg_listen admin_listen[CFG_MAX_ADMIN_LISTEN]; // /healthz and /metrics only
    size_t num_admin_listen;
    uint32_t admin_max_connections; // per I/O thread, on the admin listeners
    uint64_t store_min_free;        // bytes; below it new enrolments are refused (0: never)
    // CMP over CoAP (issue 18, RFC 9482).
    cfg_listen coap_listen[CFG_MAX_COAP_LISTEN]; // UDP; none: no CoAP
    size_t num_coap_listen;
    uint32_t coap_max_transfers_per_peer; // open block-wise transfers per peer address
    uint32_t coap_transfer_timeout;       // seconds a transfer may wait for its next block
    uint32_t coap_peer_rate;              // datagrams per second per address; UINT32_MAX: none
    uint32_t coap_max_requests;           // CoAP requests in the engine at once
    bool allow_sha1;                      // allow_sha1 (default off)
    crmf_alg_policy protection_algs;      // protection_algs (default: the table without SHA-1)
    crmf_alg_policy pop_algs;             // pop_algs (default: its signatures without SHA-1)
    // TLS for the https:// listen addresses (issue 18). Paths resolved; NULL when not set.
    char *tls_cert;
    char *tls_key;
    char *tls_chain;
    char *tls_client_ca;
    uint32_t tls_client_auth;       // 0 off, 1 optional, 2 required (net_tls_client_auth)
    uint32_t tls_ticket_lifetime;   // seconds; 0: no session tickets
    uint32_t tls_handshake_timeout; // seconds
    size_t num_tls_listen;          // listen addresses with tls
    // Nested messages (issue 16, RFC 9483 §5.2.2).
    uint32_t max_nested_depth;    // nesting levels accepted (0: nested messages refused)
    uint32_t max_nested_messages; // inner messages of one request, all levels together
    uint32_t nested_threads;      // the inner messages' verification pool (0: inline)
    // Delayed delivery (issue 16; cfg_pending.c).
    uint32_t waiting_timeout;      // seconds a request may wait
    uint32_t max_hsm_queue;        // 0: auto (100 ms of the measured signing rate)
    uint32_t max_commit_latency;   // ms
    uint32_t max_pending;          // enrolments waiting under load on this node
    uint32_t approval_check_after; // seconds
    // What unauthenticated senders may cost, and resends (issue 23; srv_params has the same).
    uint32_t kdf_threads;               // PBM/PBMAC1 verification threads
    uint32_t kdf_max_queue;             // requests waiting for them; more get systemUnavail
    bool kdf_inline;                    // a good address's MAC checked on the I/O thread
    uint32_t mac_failures_max;          // wrong MACs before a back-off; 0 (none): no back-off
    uint32_t mac_failure_window;        // seconds
    uint32_t mac_failure_backoff;       // seconds
    uint32_t error_signatures_per_peer; // per second; 0 (none): no limit
    int64_t retransmit_window;          // seconds; 0: no cache; -1 (auto): SRV_RETRANSMIT_AUTO
    uint32_t retransmit_cache_entries;  // answers kept at most
    uint64_t retransmit_cache_bytes;    // and their memory
} cfg_config;

// cfg_load reads and validates the file at |path| and every file it references (CA
// certificates, chains, trust anchors, RA certificates, secrets). On success |*out| is the
// frozen configuration (free with cfg_free). On failure returns a CFG_E_* code (or
// CM_E_NOMEM) and writes one line "PATH: [section] key: what is wrong" into |err|; nothing is
// allocated then. Never logs secrets. Thread: start-up only (NCONF, file I/O).
CM_RESULT cfg_load(cfg_config **out, char *err, size_t err_cap, const char *path);

// cfg_free wipes the secrets and releases |cfg|; NULL is a no-op.
void cfg_free(cfg_config *cfg);

// cfg_ca_find returns the CA named |name| or NULL. Thread: any.
const cfg_ca *cfg_ca_find(const cfg_config *cfg, const char *name);

// cfg_clients_find_secret returns the credential whose senderKID is |kid|, or NULL. The
// comparison is not constant time: senderKIDs are not secret. Thread: any.
const cfg_secret *cfg_clients_find_secret(const cfg_clients *clients, cm_span kid);

// cfg_clients_reload_crls reads the trust_crls files of |clients| again and swaps them into its
// trust store (ca_trust_set_crls: safe while other threads verify). A no-op without
// trust_crls. On failure the store keeps its CRLs and |err| says "[clients:NAME] trust_crls:
// FILE: what is wrong". Thread: any (certmintd's SIGHUP handler; file I/O).
CM_RESULT cfg_clients_reload_crls(const cfg_clients *clients, char *err, size_t err_cap);


#endif // CERTMINT_ENGINE_CONFIG_CFG_H
