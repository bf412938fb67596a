// The TBSCertList builder (RFC 5280 §5.1). Signing is the HSM pool's; assembly is
// ca_signed_assemble.
#include "engine/ca/ca_internal.h"
#include "engine/der/der_oid.h"

// TBSCertList ::= SEQUENCE {
//     version                 Version OPTIONAL,   -- if present, MUST be v2
//     signature               AlgorithmIdentifier,
//     issuer                  Name,
//     thisUpdate              Time,
//     nextUpdate              Time OPTIONAL,
//     revokedCertificates     SEQUENCE OF SEQUENCE {
//          userCertificate         CertificateSerialNumber,
//          revocationDate          Time,
//          crlEntryExtensions      Extensions OPTIONAL } OPTIONAL,
//     crlExtensions           [0] EXPLICIT Extensions OPTIONAL }
// CRLNumber ::= INTEGER (0..MAX)                                   -- §5.2.3
// CRLReason ::= ENUMERATED { unspecified (0), keyCompromise (1), cACompromise (2),
//     affiliationChanged (3), superseded (4), cessationOfOperation (5), certificateHold (6),
//     removeFromCRL (8), privilegeWithdrawn (9), aACompromise (10) }   -- §5.3.1
cm_result ca_crl_tbs_build(const ca_authority *ca, der_builder *b, cm_span sig_alg,
                           int64_t this_update, int64_t next_update, uint64_t crl_number,
                           const ca_crl_entry *entries, size_t num_entries)
{
    CM_ENSURE(next_update > this_update, CM_E_INVALID_ARG);
    for (size_t i = 0; i < num_entries; i++) {
        const int reason = entries[i].reason;
        // 7 is unused; removeFromCRL belongs to delta CRLs only.
        CM_ENSURE(reason >= CA_REASON_NONE && reason <= CA_REASON_AA_COMPROMISE && reason != 7 &&
                      reason != CA_REASON_REMOVE_FROM_CRL,
                  CM_E_INVALID_ARG);
        CM_ENSURE(entries[i].serial.len > 0 && entries[i].serial.len <= DER_MAX_SERIAL_LEN,
                  CM_E_INVALID_ARG);
    }

    der_mark tbs, list, ext_tag, exts;
    der_open_hint(b, &tbs, DER_TAG_SEQUENCE, 4);
    der_put_u64(b, 1); // v2
    der_put_raw(b, sig_alg);
    der_put_raw(b, ca->subject);
    der_put_time(b, this_update);
    der_put_time(b, next_update);
    if (num_entries > 0) {
        der_open_hint(b, &list, DER_TAG_SEQUENCE, 4);
        for (size_t i = 0; i < num_entries; i++) {
            const ca_crl_entry *e = &entries[i];
            der_mark entry;
            der_open(b, &entry, DER_TAG_SEQUENCE);
            der_put_uint_bytes(b, e->serial);
            der_put_time(b, e->revoked_at);
            if (e->reason > CA_REASON_UNSPECIFIED) {
                // Extensions { Extension { reasonCode, OCTET STRING { ENUMERATED } } }
                const uint8_t value[3] = {DER_TAG_ENUMERATED, 1, (uint8_t)e->reason};
                der_mark entry_exts;
                der_open(b, &entry_exts, DER_TAG_SEQUENCE);
                ca_put_extension(b, CM_SPAN_LIT(DER_OID_CE_CRL_REASON), false,
                                 cm_span_make(value, sizeof(value)));
                der_close(b, &entry_exts);
            }
            der_close(b, &entry);
        }
        der_close(b, &list);
    }
    der_open(b, &ext_tag, DER_CONTEXT_CONS(0));
    der_open(b, &exts, DER_TAG_SEQUENCE);
    der_put_raw(b, cm_span_make(ca->aki_ext, ca->aki_ext_len));
    uint8_t num[16];
    der_builder nb;
    der_builder_init_fixed(&nb, num, sizeof(num));
    der_put_u64(&nb, crl_number);
    cm_span num_der;
    CM_TRY(der_builder_finish(&nb, &num_der));
    ca_put_extension(b, CM_SPAN_LIT(DER_OID_CE_CRL_NUMBER), false, num_der);
    der_close(b, &exts);
    der_close(b, &ext_tag);
    der_close(b, &tbs);
    return der_builder_ok(b) ? cm_result_make(CM_OK) : cm_result_make(b->err);
}
