// engine/ca internals shared by the module's .c files and its tests.
#ifndef CERTMINT_ENGINE_CA_CA_INTERNAL_H
#define CERTMINT_ENGINE_CA_CA_INTERNAL_H

#include <stdarg.h>

#include <openssl/evp.h>

#include "engine/ca/ca.h"

// Thread: immutable after ca_profile_new.
struct ca_profile {
    ca_profile_params p;                // string arrays cleared; p.name points at |name|
    char *name;                         // owned copy of the profile's name, may be NULL
    cm_span rdn_oids[CA_MAX_RDN_RULES]; // OID content octets; required first, then allowed
    uint8_t *rdn_buf;                   // owns the OID octets
    size_t num_required;
    size_t num_allowed;
    uint8_t *ext_der; // concatenated Extension elements
    size_t ext_der_len;
    cm_span ext_oids[CA_MAX_PROFILE_EXTS]; // extnID content of each, into ext_der
    size_t num_exts;
    // Requested keyUsage / extendedKeyUsage (ca_policy_check): what may be asked for.
    uint32_t own_ku;                 // the bits of the profile's keyUsage (0: none)
    uint32_t ku_allowed;             // CA_KU_* bits a request may hold
    cm_span eku_allowed[CA_MAX_EKU]; // OID content octets, into ext_der or eku_buf
    size_t num_eku_allowed;
    uint8_t *eku_buf; // owns configured eku_allowed OIDs
    bool is_ca;       // the profile's basicConstraints has cA TRUE
};

// Thread: immutable after ca_authority_load.
struct ca_authority {
    uint8_t *der;
    size_t der_len;
    cm_span subject; // into der
    cm_span spki;    // into der
    int64_t not_before;
    int64_t not_after;
    uint8_t ski[64];
    size_t ski_len;
    uint8_t aki_ext[96]; // the AKI Extension element issued certificates and CRLs carry
    size_t aki_ext_len;
    uint8_t *chain[CA_MAX_CHAIN];
    size_t chain_len[CA_MAX_CHAIN];
    size_t num_chain;
    EVP_MD *sha1; // fetched once for SKIs
};

// ca_errf writes a formatted one-line reason into |err| (when |err_cap| > 0).
void ca_errf(char *err, size_t err_cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// ca_attr_label_of returns the short label of an attribute type OID ("CN", "serialNumber"), or
// its dotted text written into |buf| (|cap| bytes) for types without one.
const char *ca_attr_label_of(cm_span oid, char *buf, size_t cap);

// ca_put_extension writes Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }.
void ca_put_extension(der_builder *b, cm_span oid, bool critical, cm_span value);

// ca_profile_find_ext looks extension |oid| up among the profile's own: its extnValue content
// and criticality. false when the profile does not write it.
bool ca_profile_find_ext(const ca_profile *pr, cm_span oid, cm_span *out_value, bool *out_critical);

#endif // CERTMINT_ENGINE_CA_CA_INTERNAL_H
