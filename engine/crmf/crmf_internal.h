// engine/crmf internals shared by the module's .c files and its tests. Not for other modules.
#ifndef CERTMINT_ENGINE_CRMF_CRMF_INTERNAL_H
#define CERTMINT_ENGINE_CRMF_CRMF_INTERNAL_H

#include "engine/crmf/crmf.h"

// crmf_enter_whole is der_enter that also returns the entered element's whole TLV.
CM_RESULT crmf_enter_whole(der_reader *r, uint32_t tag, der_reader *out_child, cm_span *out_whole);

// crmf_alg_id_check validates AlgorithmIdentifier content octets (OID, optional parameters).
CM_RESULT crmf_alg_id_check(cm_span body);

// crmf_attr_parse reads one AttributeTypeAndValue ::= SEQUENCE { type OID, value ANY }.
CM_RESULT crmf_attr_parse(der_reader *r, crmf_attr *out);

// crmf_attr_seq_parse reads SEQUENCE SIZE (1..MAX) OF AttributeTypeAndValue (at most |cap|)
// into an array allocated from |arena|.
CM_RESULT crmf_attr_seq_parse(cm_arena *arena, der_reader *r, size_t cap, crmf_attr **out,
                              size_t *out_num);

// crmf_attr_seq_marshal writes SEQUENCE OF |attrs| (|num| >= 1).
void crmf_attr_seq_marshal(der_builder *b, const crmf_attr *attrs, size_t num);

// crmf_spki_read reads a whole SubjectPublicKeyInfo SEQUENCE from |r| into |*out|.
CM_RESULT crmf_spki_read(der_reader *r, crmf_spki *out);

// crmf_ec_curve_name returns the OpenSSL group name of a CRMF_EC_* curve, NULL if unknown.
const char *crmf_ec_curve_name(uint32_t curve);

// crmf_hash_name returns the OpenSSL digest name for |h| (NULL for CRMF_HASH_NONE), from the
// table's digest row; crmf_hash_len its output length in octets (SHAKE128/256: 32/64, RFC 9481
// §2.2; 0 for NONE); crmf_hash_is_xof whether it is a SHAKE (EVP_DigestFinalXOF).
const char *crmf_hash_name(crmf_hash h);
size_t crmf_hash_len(crmf_hash h);
bool crmf_hash_is_xof(crmf_hash h);

#endif // CERTMINT_ENGINE_CRMF_CRMF_INTERNAL_H
