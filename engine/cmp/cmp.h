// engine/cmp: the CMP message codec (RFC 4210 as updated by RFC 9480; CMP v3 is RFC 9810).
//
// cmp_msg_parse turns the DER bytes of a PKIMessage into a cmp_msg whose fields are views
// (cm_span) into the caller's buffer: nothing is copied, and every array lives in the caller's
// cm_arena. The parser keeps exactly the spans that protection needs: the header and the body
// are adjacent, so cmp_msg.protected_part is the content of
//   ProtectedPart ::= SEQUENCE { header PKIHeader, body PKIBody }      (RFC 4210 §5.1.3)
// and a MAC or signature is computed over SEQUENCE-header || protected_part.
//
// The marshal functions write the same structures back. The round-trip law holds for every
// message the parser accepts: cmp_msg_marshal(cmp_msg_parse(x)) == x byte for byte. Rare
// substructures (freeText, statusString, rspInfo, publicationInfo, encrypted keys) are kept
// as verbatim spans and spliced back.
//
// The ASN.1 module is RFC 9810 Appendix F (PKIXCMP-2023), DEFINITIONS EXPLICIT TAGS: every
// [n] in PKIHeader, PKIMessage and PKIBody wraps the element it tags.
//
// Header rules the parser enforces (each with its own code, mapped to a PKIFailureInfo bit by
// cm_code_failinfo): transactionID present; senderNonce present and at least 16 octets;
// recipNonce, when present, at least 16 octets; protection and protectionAlg both present or
// both absent; a signature protectionAlg needs extraCerts when the caller asks
// (cmp_parse_opts.require_protection_cert); implicitConfirm's value is NULL;
// confirmWaitTime is a GeneralizedTime, and not together with implicitConfirm
// (CMP_E_IMPLICIT_WITH_WAIT); hashAlg in CertStatus only under pvno 3. A pvno other
// than 1..3 is NOT a parse failure: the message is returned with header.pvno as read and
// cmp_header_pvno_supported() false, so the server can answer unsupportedVersion in kind; if
// the rest of such a message does not parse, the result is CMP_E_UNSUPPORTED_VERSION.
//
// Thread: everything here is pure and reentrant; a cmp_msg is confined to its request.
#ifndef CERTMINT_ENGINE_CMP_CMP_H
#define CERTMINT_ENGINE_CMP_CMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base/base.h"
#include "engine/crmf/crmf.h"
#include "engine/der/der.h"

// ---------------------------------------------------------------------------------------------
// Result codes (cmp range 0x200-0x2ff): the CMP rows of engine/base/codes.def, with their
// explanations and PKIFailureInfo bits (cm_code_failinfo). Numbers are stable: append, never
// renumber.

enum {
#define CM_CODES_CMP CM_CODE_ENUM
#include "engine/base/codes.def"
};

// PKIFailureInfo bit numbers (RFC 9810 §5.2.3): aliases of base's cm_failinfo, the numbers
// the registry names.
enum {
    CMP_FAIL_BAD_ALG = CM_FAIL_BAD_ALG,
    CMP_FAIL_BAD_MESSAGE_CHECK = CM_FAIL_BAD_MESSAGE_CHECK,
    CMP_FAIL_BAD_REQUEST = CM_FAIL_BAD_REQUEST,
    CMP_FAIL_BAD_TIME = CM_FAIL_BAD_TIME,
    CMP_FAIL_BAD_CERT_ID = CM_FAIL_BAD_CERT_ID,
    CMP_FAIL_BAD_DATA_FORMAT = CM_FAIL_BAD_DATA_FORMAT,
    CMP_FAIL_WRONG_AUTHORITY = CM_FAIL_WRONG_AUTHORITY,
    CMP_FAIL_INCORRECT_DATA = CM_FAIL_INCORRECT_DATA,
    CMP_FAIL_MISSING_TIME_STAMP = CM_FAIL_MISSING_TIME_STAMP,
    CMP_FAIL_BAD_POP = CM_FAIL_BAD_POP,
    CMP_FAIL_CERT_REVOKED = CM_FAIL_CERT_REVOKED,
    CMP_FAIL_CERT_CONFIRMED = CM_FAIL_CERT_CONFIRMED,
    CMP_FAIL_WRONG_INTEGRITY = CM_FAIL_WRONG_INTEGRITY,
    CMP_FAIL_BAD_RECIPIENT_NONCE = CM_FAIL_BAD_RECIPIENT_NONCE,
    CMP_FAIL_TIME_NOT_AVAILABLE = CM_FAIL_TIME_NOT_AVAILABLE,
    CMP_FAIL_UNACCEPTED_POLICY = CM_FAIL_UNACCEPTED_POLICY,
    CMP_FAIL_UNACCEPTED_EXTENSION = CM_FAIL_UNACCEPTED_EXTENSION,
    CMP_FAIL_ADD_INFO_NOT_AVAILABLE = CM_FAIL_ADD_INFO_NOT_AVAILABLE,
    CMP_FAIL_BAD_SENDER_NONCE = CM_FAIL_BAD_SENDER_NONCE,
    CMP_FAIL_BAD_CERT_TEMPLATE = CM_FAIL_BAD_CERT_TEMPLATE,
    CMP_FAIL_SIGNER_NOT_TRUSTED = CM_FAIL_SIGNER_NOT_TRUSTED,
    CMP_FAIL_TRANSACTION_ID_IN_USE = CM_FAIL_TRANSACTION_ID_IN_USE,
    CMP_FAIL_UNSUPPORTED_VERSION = CM_FAIL_UNSUPPORTED_VERSION,
    CMP_FAIL_NOT_AUTHORIZED = CM_FAIL_NOT_AUTHORIZED,
    CMP_FAIL_SYSTEM_UNAVAIL = CM_FAIL_SYSTEM_UNAVAIL,
    CMP_FAIL_SYSTEM_FAILURE = CM_FAIL_SYSTEM_FAILURE,
    CMP_FAIL_DUPLICATE_CERT_REQ = CM_FAIL_DUPLICATE_CERT_REQ,
};

#define CMP_FAILINFO_BIT(n) (1u << (n))

// PKIStatus values (RFC 9810 §5.2.3).
enum {
    CMP_STATUS_ACCEPTED = 0,
    CMP_STATUS_GRANTED_WITH_MODS = 1,
    CMP_STATUS_REJECTION = 2,
    CMP_STATUS_WAITING = 3,
    CMP_STATUS_REVOCATION_WARNING = 4,
    CMP_STATUS_REVOCATION_NOTIFICATION = 5,
    CMP_STATUS_KEY_UPDATE_WARNING = 6,
};

// ---------------------------------------------------------------------------------------------
// Limits (every SEQUENCE OF is capped; over the cap is CM_E_DER_TOO_MANY).

#define CMP_MAX_EXTRA_CERTS     16u // PKIMessage.extraCerts
#define CMP_MAX_CA_PUBS         16u // CertRepMessage.caPubs
#define CMP_MAX_GENERAL_INFO    16u // PKIHeader.generalInfo
#define CMP_MAX_CERT_PROFILES   8u  // certProfile SEQUENCE OF UTF8String
#define CMP_MAX_RESPONSES       16u // CertRepMessage.response, CertConfirmContent, poll*
#define CMP_MAX_REV_DETAILS     16u // RevReqContent, RevRepContent.status
#define CMP_MAX_ITAVS           16u // GenMsgContent / GenRepContent
#define CMP_MAX_CRL_ENTRY_EXTS  16u // RevDetails.crlEntryDetails
#define CMP_DEFAULT_MAX_NESTING 1u  // nested levels accepted by default
#define CMP_MAX_NESTING_LIMIT   4u  // hard bound on cmp_parse_opts.max_nesting
#define CMP_MIN_NONCE_LEN       16u // RFC 9483 §3.1: transactionID, nonces of at least 128 bits

// NestedMessageContent (an RA batch): messages in one, by default and at most
// (cmp_parse_opts.max_nested).
#define CMP_MAX_NESTED       256u
#define CMP_MAX_NESTED_LIMIT 4096u

// ---------------------------------------------------------------------------------------------
// Common structures

// AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }
// (RFC 5280 §4.1.1.2). Thread: value type; views into the message.
typedef struct cmp_alg_id {
    cm_span whole;  // the SEQUENCE element
    cm_span oid;    // OID content octets
    cm_span params; // the parameters element (TLV), len 0 when absent
} cmp_alg_id;

// An optional OCTET STRING field: |present| distinguishes absent from empty.
// Thread: value type.
typedef struct cmp_opt_span {
    bool present;
    cm_span v; // content octets
} cmp_opt_span;

// InfoTypeAndValue ::= SEQUENCE { infoType OBJECT IDENTIFIER,
//                                 infoValue ANY DEFINED BY infoType OPTIONAL }  (RFC 9810 §5.3.19)
// Thread: value type; views into the message.
typedef struct cmp_itav {
    cm_span oid;   // infoType content octets
    cm_span value; // infoValue element (TLV), len 0 when absent
} cmp_itav;

// PKIStatusInfo ::= SEQUENCE { status PKIStatus, statusString PKIFreeText OPTIONAL,
//                              failInfo PKIFailureInfo OPTIONAL }         (RFC 9810 §5.2.3)
// Thread: value type; views into the message.
typedef struct cmp_status_info {
    int64_t status;        // CMP_STATUS_*
    cm_span status_string; // the PKIFreeText SEQUENCE element, len 0 when absent
    bool has_fail_info;
    uint32_t fail_info; // CMP_FAILINFO_BIT(CMP_FAIL_*) bits
} cmp_status_info;

// ---------------------------------------------------------------------------------------------
// Header

// The header fields a message is built from. The parser fills one in (cmp_header.f), so a
// parsed header marshals back unchanged; a server fills one in for its response.
// Thread: value type; the spans must outlive the marshal call.
typedef struct cmp_header_fields {
    int64_t pvno; // 2 (cmp2000) normally, 3 (cmp2021) when v3 features are used
    // sender/recipient GeneralName: |*_gn| is the whole GeneralName element and wins when set;
    // otherwise |*_name| is a Name (SEQUENCE) written as directoryName [4]; both empty gives
    // the NULL-DN directoryName (RFC 9810 §5.1.1).
    cm_span sender_gn;
    cm_span sender_name;
    cm_span recipient_gn;
    cm_span recipient_name;
    bool has_message_time;
    int64_t message_time;   // seconds since the epoch, written as GeneralizedTime
    cm_span protection_alg; // whole AlgorithmIdentifier element, len 0 when absent
    cmp_opt_span sender_kid;
    cmp_opt_span recip_kid;
    cmp_opt_span transaction_id;
    cmp_opt_span sender_nonce;
    cmp_opt_span recip_nonce;
    cm_span free_text; // whole PKIFreeText SEQUENCE element, len 0 when absent
    const cmp_itav *general_info;
    size_t num_general_info; // 0: generalInfo absent
} cmp_header_fields;

// PKIHeader ::= SEQUENCE {
//     pvno                INTEGER     { cmp1999(1), cmp2000(2), cmp2021(3) },
//     sender              GeneralName,
//     recipient           GeneralName,
//     messageTime     [0] GeneralizedTime         OPTIONAL,
//     protectionAlg   [1] AlgorithmIdentifier{ALGORITHM, {...}} OPTIONAL,
//     senderKID       [2] KeyIdentifier           OPTIONAL,
//     recipKID        [3] KeyIdentifier           OPTIONAL,
//     transactionID   [4] OCTET STRING            OPTIONAL,
//     senderNonce     [5] OCTET STRING            OPTIONAL,
//     recipNonce      [6] OCTET STRING            OPTIONAL,
//     freeText        [7] PKIFreeText             OPTIONAL,
//     generalInfo     [8] SEQUENCE SIZE (1..MAX) OF InfoTypeAndValue OPTIONAL }
// (RFC 9810 §5.1.1). Thread: confined to its request; views into the message.
typedef struct cmp_header {
    cmp_header_fields f;      // everything needed to re-encode
    cm_span whole;            // the PKIHeader element
    crmf_general_name sender; // parsed sender (tag CRMF_GN_DIRECTORY_NAME: .name is the Name)
    crmf_general_name recipient;
    cmp_alg_id protection_alg; // parsed f.protection_alg (all empty when absent)
    // Decoded generalInfo entries (RFC 9810 §5.1.1.1-5.1.1.4); all are also in f.general_info.
    bool implicit_confirm;
    bool has_confirm_wait_time;
    int64_t confirm_wait_time;
    const cm_span *cert_profiles; // UTF8String contents of certProfile
    size_t num_cert_profiles;
    cm_span orig_pki_message; // origPKIMessage value element (PKIMessages), len 0 when absent
} cmp_header;

// cmp_header_pvno_supported reports whether |h|'s pvno is one this codec speaks (1..3; RFC
// 9483 servers additionally require 2 or 3). Thread: any.
bool cmp_header_pvno_supported(const cmp_header *h);

// ---------------------------------------------------------------------------------------------
// Bodies
//
// Every body structure below holds views into the message and arrays in the arena.
// Thread: confined to the request that parsed or built it.

// PKIBody CHOICE tags (RFC 9810 §5.1.2).
typedef enum cmp_body_type {
    CMP_BODY_IR = 0,
    CMP_BODY_IP = 1,
    CMP_BODY_CR = 2,
    CMP_BODY_CP = 3,
    CMP_BODY_P10CR = 4,
    CMP_BODY_POPDECC = 5,
    CMP_BODY_POPDECR = 6,
    CMP_BODY_KUR = 7,
    CMP_BODY_KUP = 8,
    CMP_BODY_KRR = 9,
    CMP_BODY_KRP = 10,
    CMP_BODY_RR = 11,
    CMP_BODY_RP = 12,
    CMP_BODY_CCR = 13,
    CMP_BODY_CCP = 14,
    CMP_BODY_CKUANN = 15,
    CMP_BODY_CANN = 16,
    CMP_BODY_RANN = 17,
    CMP_BODY_CRLANN = 18,
    CMP_BODY_PKICONF = 19,
    CMP_BODY_NESTED = 20,
    CMP_BODY_GENM = 21,
    CMP_BODY_GENP = 22,
    CMP_BODY_ERROR = 23,
    CMP_BODY_CERT_CONF = 24,
    CMP_BODY_POLL_REQ = 25,
    CMP_BODY_POLL_REP = 26,
} cmp_body_type;

// CertResponse ::= SEQUENCE { certReqId INTEGER, status PKIStatusInfo,
//     certifiedKeyPair CertifiedKeyPair OPTIONAL, rspInfo OCTET STRING OPTIONAL }
// CertifiedKeyPair ::= SEQUENCE { certOrEncCert CertOrEncCert,
//     privateKey [0] EncryptedKey OPTIONAL, publicationInfo [1] PKIPublicationInfo OPTIONAL }
// CertOrEncCert ::= CHOICE { certificate [0] CMPCertificate, encryptedCert [1] EncryptedKey }
// (RFC 9810 §5.3.4). Thread: value type; views into the message.
typedef struct cmp_cert_response {
    int64_t cert_req_id;
    cmp_status_info status;
    bool has_certified_key_pair;
    cm_span cert;             // certificate [0]: the Certificate element, len 0 otherwise
    cm_span encrypted_cert;   // encryptedCert [1]: the whole [1] element, verbatim
    cm_span private_key;      // privateKey [0]: the whole [0] element, verbatim
    cm_span publication_info; // publicationInfo [1]: the whole [1] element, verbatim
    cmp_opt_span rsp_info;
} cmp_cert_response;

// CertRepMessage ::= SEQUENCE {
//     caPubs   [1] SEQUENCE SIZE (1..MAX) OF CMPCertificate OPTIONAL,
//     response     SEQUENCE OF CertResponse }                      (RFC 9810 §5.3.4)
typedef struct cmp_cert_rep {
    const cm_span *ca_pubs; // Certificate elements
    size_t num_ca_pubs;     // 0: caPubs absent
    const cmp_cert_response *responses;
    size_t num_responses;
} cmp_cert_rep;

// CertStatus ::= SEQUENCE { certHash OCTET STRING, certReqId INTEGER,
//     statusInfo PKIStatusInfo OPTIONAL,
//     hashAlg [0] AlgorithmIdentifier{DIGEST-ALGORITHM, {...}} OPTIONAL } (RFC 9810 §5.3.18)
typedef struct cmp_cert_status {
    cm_span cert_hash;
    int64_t cert_req_id;
    bool has_status_info;
    cmp_status_info status_info;
    bool has_hash_alg;
    cmp_alg_id hash_alg; // only legal with pvno 3
} cmp_cert_status;

// PollRepContent ::= SEQUENCE OF SEQUENCE { certReqId INTEGER, checkAfter INTEGER,
//     reason PKIFreeText OPTIONAL }                                   (RFC 9810 §5.3.22)
typedef struct cmp_poll_rep {
    int64_t cert_req_id;
    int64_t check_after; // seconds
    cm_span reason;      // PKIFreeText element, len 0 when absent
} cmp_poll_rep;

// RevDetails ::= SEQUENCE { certDetails CertTemplate,
//     crlEntryDetails Extensions{{...}} OPTIONAL }                    (RFC 9810 §5.3.9)
typedef struct cmp_rev_details {
    crmf_template tmpl;        // certDetails, parsed and marshalled by crmf
    cm_span crl_entry_details; // the Extensions element, len 0 when absent
    bool has_reason;
    uint32_t reason; // CRLReason (RFC 5280 §5.3.1) from id-ce-cRLReasons
} cmp_rev_details;

// RevRepContent ::= SEQUENCE { status SEQUENCE SIZE (1..MAX) OF PKIStatusInfo,
//     revCerts [0] SEQUENCE SIZE (1..MAX) OF CertId OPTIONAL,
//     crls     [1] SEQUENCE SIZE (1..MAX) OF CertificateList OPTIONAL } (RFC 9810 §5.3.10)
typedef struct cmp_rev_rep {
    const cmp_status_info *status;
    size_t num_status;
    cm_span rev_certs; // whole [0] element, verbatim, len 0 when absent
    cm_span crls;      // whole [1] element, verbatim, len 0 when absent
} cmp_rev_rep;

// ErrorMsgContent ::= SEQUENCE { pKIStatusInfo PKIStatusInfo, errorCode INTEGER OPTIONAL,
//     errorDetails PKIFreeText OPTIONAL }                             (RFC 9810 §5.3.21)
typedef struct cmp_error_msg {
    cmp_status_info status;
    bool has_error_code;
    int64_t error_code;
    cm_span error_details; // PKIFreeText element, len 0 when absent
} cmp_error_msg;

typedef struct cmp_msg cmp_msg;

// PKIBody ::= CHOICE { ... }, each alternative [n] EXPLICIT (RFC 9810 §5.1.2). Thread: confined
// to its request; views into the message and the arena. |type| picks
// the member of |u| in use:
//   ir/cr/kur/ccr  u.req (CertReqMessages via crmf)
//   p10cr       u.p10    (CertificationRequest via crmf)
//   ip/cp/kup/ccp  u.rep
//   rr          u.rr        rp      u.rp
//   certConf    u.conf      pollReq u.poll_req   pollRep u.poll_rep
//   genm/genp   u.gen       error   u.error      nested  u.nested   pkiconf (none)
typedef struct cmp_body {
    cmp_body_type type;
    cm_span whole;   // the [n] element
    cm_span content; // the element inside [n]
    union {
        crmf_cert_req_msgs req;
        crmf_csr p10;
        cmp_cert_rep rep;
        struct {
            const cmp_rev_details *items;
            size_t num;
        } rr;
        cmp_rev_rep rp;
        struct {
            const cmp_cert_status *items;
            size_t num; // 0 is legal: an empty CertConfirmContent rejects all (§5.3.18)
        } conf;
        struct {
            const int64_t *cert_req_ids;
            size_t num;
        } poll_req;
        struct {
            const cmp_poll_rep *items;
            size_t num;
        } poll_rep;
        struct {
            const cmp_itav *items;
            size_t num;
        } gen;
        cmp_error_msg error;
        struct {
            const cmp_msg *msgs; // parsed inner messages (NULL when parsed shallow)
            size_t num;
            // The inner PKIMessage elements, whole: set instead of |msgs| by a shallow parse
            // (cmp_parse_opts.nested_shallow); a marshal splices them verbatim when |msgs| is
            // NULL.
            const cm_span *ders;
        } nested;
    } u;
} cmp_body;

// ---------------------------------------------------------------------------------------------
// Message

// PKIMessage ::= SEQUENCE {
//     header           PKIHeader,
//     body             PKIBody,
//     protection   [0] PKIProtection OPTIONAL,
//     extraCerts   [1] SEQUENCE SIZE (1..MAX) OF CMPCertificate OPTIONAL }
// PKIProtection ::= BIT STRING                                        (RFC 9810 §5.1)
// Thread: confined to its request; views into the message buffer and the arena.
typedef struct cmp_msg {
    cm_span whole;          // the PKIMessage element
    cm_span protected_part; // header || body: the content of ProtectedPart (§5.1.3)
    cmp_header header;
    cmp_body body;
    bool has_protection;
    cm_span protection;         // BIT STRING bits
    uint8_t protection_unused;  // its unused-bit count
    const cm_span *extra_certs; // Certificate elements, in order
    size_t num_extra_certs;     // 0: extraCerts absent
} cmp_msg;

// Parse options; a NULL pointer means the defaults. Thread: value type.
typedef struct cmp_parse_opts {
    uint32_t max_nesting;     // nested levels accepted: 0 refuses any nested body; NULL opts
                              // give CMP_DEFAULT_MAX_NESTING; capped at CMP_MAX_NESTING_LIMIT
    uint32_t max_extra_certs; // 0 picks CMP_MAX_EXTRA_CERTS (never above it)
    // A signature-protected message must carry its protection certificate in extraCerts
    // (CMP_E_NO_EXTRA_CERTS otherwise). RFC 9483 §3.3 requires it in the first message of a
    // transaction only (OpenSSL omits it from its responses and later messages), so only the
    // server knows when to ask: it sets this for a transaction's first request.
    bool require_protection_cert;
    // NestedMessageContent (RFC 9810 §5.3.23): at most |max_nested| inner messages (0 picks
    // CMP_MAX_NESTED; never above CMP_MAX_NESTED_LIMIT; more: CM_E_DER_TOO_MANY). With
    // |nested_shallow| the inner messages are only delimited, each a SEQUENCE element, and
    // not parsed: body.u.nested.ders holds them and body.u.nested.msgs is NULL, for a caller
    // that parses each one on its own with its own limits (the server: one request per inner
    // message). Both apply to the outermost nested body only; deeper ones, when parsed, get
    // the defaults.
    uint32_t max_nested;
    bool nested_shallow;
} cmp_parse_opts;

// cmp_msg_parse reads one PKIMessage from |r| (trailing bytes are left for the caller) into
// |out|, allocating arrays from |arena|. On success every span in |out| points into the
// bytes |r| views, which must outlive |out|. On failure returns a PROTO/POLICY code (see the
// header rules at the top), CM_E_DER_* for malformed DER, CM_E_NOMEM when the arena is
// exhausted; |out| is then unspecified and |r| unchanged. |opts| may be NULL.
// Thread: any; touches only its arguments.
CM_RESULT cmp_msg_parse(cm_arena *arena, cmp_msg *out, der_reader *r, const cmp_parse_opts *opts);

// cmp_msg_from_der is cmp_msg_parse for a buffer that must hold exactly one PKIMessage
// (CM_E_DER_TRAILING otherwise).
CM_RESULT cmp_msg_from_der(cm_arena *arena, cmp_msg *out, cm_span der, const cmp_parse_opts *opts);

// cmp_header_parse reads a PKIHeader from |r| into |out| (arrays from |arena|). It checks
// the structure only; the header rules are checked by cmp_msg_parse once the whole message is
// known. On failure |r| is unchanged. Thread: any.
CM_RESULT cmp_header_parse(cm_arena *arena, cmp_header *out, der_reader *r);

// cmp_body_parse reads a PKIBody from |r| into |out| (arrays from |arena|). |pvno| is the
// enclosing header's (hashAlg needs 3); |opts| (may be NULL) bounds nested bodies, whose
// messages are parsed with cmp_msg_parse one level down. On failure |r| is unchanged.
// Thread: any.
CM_RESULT cmp_body_parse(cm_arena *arena, cmp_body *out, der_reader *r, int64_t pvno,
                         const cmp_parse_opts *opts);

// cmp_alg_id_parse reads an AlgorithmIdentifier. On failure |r| is unchanged.
CM_RESULT cmp_alg_id_parse(cmp_alg_id *out, der_reader *r);

// cmp_status_info_parse reads a PKIStatusInfo (status 0..6, else CMP_E_BAD_STATUS).
CM_RESULT cmp_status_info_parse(cmp_status_info *out, der_reader *r);

// cmp_free_text_parse reads a PKIFreeText (SEQUENCE SIZE (1..MAX) OF UTF8String, at most 16
// strings) and returns the whole element in |*out_whole|.
CM_RESULT cmp_free_text_parse(cm_span *out_whole, der_reader *r);

// cmp_itav_parse reads one InfoTypeAndValue.
CM_RESULT cmp_itav_parse(cmp_itav *out, der_reader *r);

// cmp_itav_marshal writes one InfoTypeAndValue. Errors are sticky in |b|.
void cmp_itav_marshal(der_builder *b, const cmp_itav *it);

// cmp_is_signature_alg reports whether the protectionAlg OID |oid| is a signature algorithm
// (RSA, RSASSA-PSS, ECDSA, EdDSA: RFC 9481 §3) rather than a MAC. Thread: any.
bool cmp_is_signature_alg(cm_span oid);

// ---------------------------------------------------------------------------------------------
// Marshal

// cmp_header_marshal writes PKIHeader from |h| (pvno written as given, so a parsed header with
// an unsupported pvno still round-trips). Errors poison |b| (sticky). Thread: any.
void cmp_header_marshal(der_builder *b, const cmp_header_fields *h);

// cmp_body_marshal writes the [n] PKIBody element for |body| from |type| and the union member
// (body->whole and body->content are not used): ir/cr/kur through crmf_msgs_marshal, p10cr
// through crmf_csr_marshal, rr's certDetails through crmf_template_marshal, a nested body's
// messages from u.nested.msgs, or when that is NULL the elements of u.nested.ders spliced
// verbatim. |max_nesting|
// bounds nested bodies (deeper poisons |b| with CMP_E_NESTING_DEPTH). A body type this codec
// does not handle poisons |b| with CMP_E_UNSUPPORTED_BODY. Errors are sticky in |b|.
void cmp_body_marshal(der_builder *b, const cmp_body *body, uint32_t max_nesting);

// cmp_protected_part_marshal writes ProtectedPart ::= SEQUENCE { header, body } — the bytes a
// MAC or signature covers (RFC 9810 §5.1.3). Errors are sticky in |b|.
void cmp_protected_part_marshal(der_builder *b, const cmp_header_fields *h, const cmp_body *body);

// cmp_msg_marshal writes a whole PKIMessage from a parsed (or hand-filled) |m|: header from
// m->header.f, body, protection when m->has_protection, extraCerts spliced verbatim.
// m->whole and m->protected_part are not used. Nested bodies are written down to
// CMP_MAX_NESTING_LIMIT levels (deeper poisons |b| with CMP_E_NESTING_DEPTH). Errors are
// sticky in |b|.
void cmp_msg_marshal(der_builder *b, const cmp_msg *m);

// cmp_msg_marshal_bounded is cmp_msg_marshal accepting at most |max_nesting| nested levels.
void cmp_msg_marshal_bounded(der_builder *b, const cmp_msg *m, uint32_t max_nesting);

// cmp_msg_writer builds a PKIMessage in one buffer in two steps, so protection can be computed
// over the header and body before it is appended:
//   cmp_msg_writer_begin(&w, b, &hdr, &body);
//   cm_span pp = cmp_msg_writer_protected_part(&w);     // header || body
//   ... MAC or sign SEQUENCE{pp} ...
//   cmp_msg_writer_finish(&w, prot, 0, certs, n);
// Thread: value type, confined to its builder's user.
typedef struct cmp_msg_writer {
    der_builder *b;
    der_mark outer;
    size_t pp_start; // offset of the header in b->buf
} cmp_msg_writer;

// cmp_msg_writer_begin opens the PKIMessage and writes header and body. Errors are sticky.
void cmp_msg_writer_begin(cmp_msg_writer *w, der_builder *b, const cmp_header_fields *h,
                          const cmp_body *body);

// cmp_msg_writer_protected_part returns the header || body bytes just written (the content of
// ProtectedPart), valid until the next append to the builder; an empty span once the builder
// has failed.
cm_span cmp_msg_writer_protected_part(const cmp_msg_writer *w);

// cmp_msg_writer_finish appends protection [0] when |protection| is non-NULL (the BIT STRING
// bits; |unused| its unused-bit count, 0 for MACs and signatures) and extraCerts [1] when
// |num_extra_certs| > 0 (each a pre-encoded Certificate spliced verbatim), and closes the
// message. Errors are sticky; finish the builder to see them.
void cmp_msg_writer_finish(cmp_msg_writer *w, const cm_span *protection, uint8_t unused,
                           const cm_span *extra_certs, size_t num_extra_certs);

// cmp_status_info_marshal writes a PKIStatusInfo. Errors are sticky in |b|.
void cmp_status_info_marshal(der_builder *b, const cmp_status_info *si);

// cmp_free_text_marshal writes PKIFreeText ::= SEQUENCE SIZE (1..MAX) OF UTF8String from
// |num| strings (at least one), e.g. for statusString or freeText fields. Errors are sticky.
void cmp_free_text_marshal(der_builder *b, const cm_span *texts, size_t num);

// cmp_itav_implicit_confirm returns the generalInfo entry implicitConfirm (id-it 13, NULL).
cmp_itav cmp_itav_implicit_confirm(void);

// cmp_itav_confirm_wait_time encodes confirmWaitTime (id-it 14) for |t| into |buf| (at least
// 17 bytes) and returns the entry, whose value points into |buf|. Thread: any.
cmp_itav cmp_itav_confirm_wait_time(uint8_t buf[17], int64_t t);

// ---------------------------------------------------------------------------------------------
// certHash (RFC 9810 §5.3.18)

// cmp_digests holds the EVP_MDs certHash may need, fetched once at start-up (STYLE.md §2.5).
// Thread: immutable after cmp_digests_init; shared by all threads.
typedef struct cmp_digests {
    struct evp_md_st *sha224;
    struct evp_md_st *sha256;
    struct evp_md_st *sha384;
    struct evp_md_st *sha512;
    struct evp_md_st *shake256;
} cmp_digests;

// cmp_digests_init fetches the digests from the default library context. On failure returns
// CM_E_CRYPTO and leaves |d| safe for cmp_digests_cleanup. Thread: start-up.
CM_RESULT cmp_digests_init(cmp_digests *d);

// cmp_digests_cleanup releases what cmp_digests_init fetched; safe on a zeroed |d|.
void cmp_digests_cleanup(cmp_digests *d);

#define CMP_MAX_CERT_HASH_LEN 64u

// cmp_cert_hash computes certHash over the certificate DER |cert| into |out| (at least
// CMP_MAX_CERT_HASH_LEN bytes), setting |*out_len|. The hash is |hash_alg| when non-NULL (the
// pvno 3 hashAlg: SHA-224/256/384/512, or SHAKE256 with 512 bits of output), otherwise the one
// of the certificate's signature algorithm (read with crmf_sig_alg_parse): SHA-224/256/384/512
// for the RSA, RSASSA-PSS (its hashAlgorithm) and ECDSA variants, SHA-512 for Ed25519 and
// SHAKE256 with 512 bits of output for Ed448 (RFC 9481 §2, RFC 8419 §3). OpenSSL 3.0's
// X509_digest_sig (and so `openssl cmp`) sends only SHAKE256's default 256 bits for Ed448:
// those are the first 32 octets of ours, so a verifier may compare that prefix.
// Fails with CMP_E_UNKNOWN_HASH_ALG for anything else (SHA-1 included), CM_E_DER_* when |cert|
// is not a Certificate, CM_E_CRYPTO when OpenSSL fails. Thread: any.
CM_RESULT cmp_cert_hash(const cmp_digests *d, uint8_t *out, size_t *out_len, cm_span cert,
                        const cmp_alg_id *hash_alg);

// ---------------------------------------------------------------------------------------------
// General message contents (RFC 9483 §4.3, RFC 9810 §5.3.19): the infoValues a CA reads from a
// genm or writes into a genp that are more than a spliced element (cmp_genm.c).

#define CMP_MAX_CRL_STATUS 16u // CRLStatusList entries

// CRLSource choice numbers.
typedef enum cmp_crl_source_kind {
    CMP_CRL_SOURCE_DPN = 0,    // dpn [0] DistributionPointName
    CMP_CRL_SOURCE_ISSUER = 1, // issuer [1] GeneralNames
} cmp_crl_source_kind;

// CRLStatus ::= SEQUENCE { source CRLSource, thisUpdate Time OPTIONAL }
// CRLSource ::= CHOICE { dpn [0] DistributionPointName, issuer [1] GeneralNames }
// (RFC 9810 §5.3.19.16, RFC 9483 §4.3.4). Thread: value type; views into the message.
typedef struct cmp_crl_status {
    cmp_crl_source_kind source_kind;
    // dpn: the DistributionPointName element (fullName [0] or nameRelativeToCRLIssuer [1]);
    // issuer: the GeneralName elements of GeneralNames, concatenated.
    cm_span source;
    bool has_this_update;
    int64_t this_update; // seconds since the epoch
} cmp_crl_status;

// cmp_crl_status_list_from_der parses the infoValue of crlStatusList (id-it 22),
//   CRLStatusList ::= SEQUENCE SIZE (1..MAX) OF CRLStatus,
// which must be all of |der|, into |*out_items| (|*out_num| entries, at least one, at most
// CMP_MAX_CRL_STATUS) allocated from |arena|. Every GeneralName is checked with
// crmf_general_name_parse, every RDN of nameRelativeToCRLIssuer is a non-empty SET OF
// AttributeTypeAndValue. The module is EXPLICIT TAGS, so issuer [1] holds a GeneralNames
// SEQUENCE; [1] holding the GeneralName elements directly (the IMPLICIT reading) is accepted
// too. Fails with CMP_E_EMPTY_SEQUENCE for an empty list or name list, CM_E_DER_TOO_MANY over
// the cap, CM_E_DER_UNEXPECTED_TAG for a CRLSource or DistributionPointName outside its
// CHOICE, CRMF_E_* for a bad GeneralName, CM_E_DER_* for malformed DER, CM_E_NOMEM when
// |arena| is full; the outputs are then unchanged. Thread: any.
CM_RESULT cmp_crl_status_list_from_der(cm_arena *arena, const cmp_crl_status **out_items,
                                       size_t *out_num, cm_span der);

// cmp_seq_of_marshal writes SEQUENCE { els[0], ..., els[num-1] }, each a whole DER element
// spliced verbatim: caCerts' SEQUENCE OF CMPCertificate (RFC 9483 §4.3.1), crls' SEQUENCE OF
// CertificateList (§4.3.4). |num| may be 0 (an empty SEQUENCE; the caller enforces SIZE
// (1..MAX) where the schema has it). Errors are sticky in |b|.
void cmp_seq_of_marshal(der_builder *b, const cm_span *els, size_t num);

// RootCaKeyUpdateContent ::= SEQUENCE {
//     newWithNew       CMPCertificate,
//     newWithOld   [0] CMPCertificate OPTIONAL,
//     oldWithNew   [1] CMPCertificate OPTIONAL }          (RFC 9810 §5.3.19.15, RFC 9483 §4.3.2)
// Thread: value type; the certificates are whole DER elements, len 0 when absent.
typedef struct cmp_root_ca_key_update {
    cm_span new_with_new; // required
    cm_span new_with_old;
    cm_span old_with_new;
} cmp_root_ca_key_update;

// cmp_root_ca_key_update_marshal writes RootCaKeyUpdateContent (the infoValue of
// rootCaKeyUpdate, id-it 18) from |u|; an empty newWithNew poisons |b| with
// CM_E_INVALID_ARG. Errors are sticky in |b|.
void cmp_root_ca_key_update_marshal(der_builder *b, const cmp_root_ca_key_update *u);

// cmp_key_type names a public key type for the AlgorithmIdentifiers a CA advertises (cmp's own
// list: the server maps its profile's key types onto it).
typedef enum cmp_key_type {
    CMP_KEY_EC_P256 = 0,
    CMP_KEY_EC_P384,
    CMP_KEY_EC_P521,
    CMP_KEY_RSA,
    CMP_KEY_ED25519,
    CMP_KEY_ED448,
    CMP_KEY_TYPE_COUNT,
} cmp_key_type;

// cmp_key_alg_marshal writes the AlgorithmIdentifier of a public key of type |type|:
// id-ecPublicKey with the namedCurve as parameters (RFC 5480 §2.1.1), rsaEncryption with NULL
// parameters (RFC 3279 §2.3.1), id-Ed25519 / id-Ed448 without parameters (RFC 8410 §3). A
// |type| outside the enum poisons |b| with CM_E_INVALID_ARG. Errors are sticky in |b|.
void cmp_key_alg_marshal(der_builder *b, cmp_key_type type);

// cmp_key_alg_list_marshal writes SEQUENCE OF AlgorithmIdentifier for |num| key types, in
// order: the infoValue of signKeyPairTypes (id-it 2, RFC 9810 §5.3.19.2). Errors are sticky.
void cmp_key_alg_list_marshal(der_builder *b, const cmp_key_type *types, size_t num);

// The keySpec of a certReqTemplate: the key the CA wants. For an RSA key it is
//   id-regCtrl-rsaKeyLen: INTEGER (1..MAX), the modulus length in bits,
// otherwise
//   id-regCtrl-algId: AlgorithmIdentifier{PUBLIC-KEY}     (RFC 9483 §4.3.3, RFC 9810 §5.3.19.14)
// Thread: value type.
typedef struct cmp_key_spec {
    cmp_key_type type;
    uint64_t rsa_key_len; // bits; used (and required non-zero) when |type| is CMP_KEY_RSA
} cmp_key_spec;

// cmp_cert_req_template_marshal writes the infoValue of certReqTemplate (id-it 19):
//   CertReqTemplateContent ::= SEQUENCE { certTemplate CertTemplate, keySpec Controls OPTIONAL }
//   Controls ::= SEQUENCE SIZE (1..MAX) OF AttributeTypeAndValue
//   AttributeTypeAndValue ::= SEQUENCE { type OBJECT IDENTIFIER, value ANY DEFINED BY type }
// with |tmpl| through crmf_template_marshal and, when |key_spec| is non-NULL, a keySpec of one
// control as cmp_key_spec describes. An RSA keySpec with rsa_key_len 0, or a type outside the
// enum, poisons |b| with CM_E_INVALID_ARG. Errors are sticky in |b|.
void cmp_cert_req_template_marshal(der_builder *b, const crmf_template *tmpl,
                                   const cmp_key_spec *key_spec);

#if __has_include("engine/cmp/cmp_protect.h")
#include "engine/cmp/cmp_protect.h"
#endif
#include "engine/cmp/cmp_cms.h"

#endif // CERTMINT_ENGINE_CMP_CMP_H
