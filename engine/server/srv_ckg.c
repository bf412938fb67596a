// Keys that do not sign (issue 19): central key generation (RFC 9483 §4.1.6) and the proofs of
// possession of keys that cannot sign a POPO (RFC 4211 §4.2, RFC 9810 §5.2.8).
//
// Central key generation. An ir/cr/kur whose certTemplate has no publicKey (or only its
// algorithm, with an empty key) and no POPO asks the CA to act as key generation authority
// (KGA). When the profile allows it (central_keygen), the key is generated in process with
// OpenSSL before the reservation (the reservation checks key reuse on its hash), certified as
// usual, packaged as an AsymmetricKeyPackage (RFC 5958) and signed by the KGA, the CMP key, in
// a SignedData whose signature is one more HSM job; that SignedData is encrypted to the
// requester in an EnvelopedData (engine/cmp/cmp_cms.c) by the method RFC 9483 §4.1.6 gives for
// its credential: key transport to an RSA signer certificate (§4.1.6.2), key agreement with an
// EC signer certificate (§4.1.6.1), a password recipient with the shared secret of a
// MAC-protected request (§4.1.6.3). The key is never stored: it lives in an EVP_PKEY and one
// OPENSSL_malloc'ed package buffer, both wiped and freed once the EnvelopedData exists (and by
// srv_ckg_cleanup when the request ends another way). The response carries it in
// CertifiedKeyPair.privateKey (EncryptedKey's envelopedData [0], RFC 9810 §5.2.2) and is pvno
// 3. certConf is as for any certificate.
//
// Why in process and not in the token (central_keygen_in_hsm): the KGA signs the package and
// the EnvelopedData encrypts it, so the private key must be in this process in clear anyway; a
// token key would have to be generated extractable and wrapped out (SoftHSM 2.6.1 can wrap a
// private key with CKM_AES_KEY_WRAP_PAD), which adds PKCS#11 calls and an extractable key in
// the CA's token and protects nothing more than the token's random generator would. Not done.
//
// Keys that cannot sign. A key-agreement key (ECDH P-256/P-384/P-521, X25519, X448) or an
// encryption-only RSA key proves possession with a keyAgreement / keyEncipherment POPO:
//   - subsequentMessage encrCert (indirect): the certificate goes out encrypted to the key
//     itself (CertOrEncCert.encryptedCert) and the certConf's certHash, which only the key's
//     holder can compute, proves possession; implicitConfirm is never granted for it, and an
//     unconfirmed certificate is revoked by the confirmation sweep as any other;
//   - encryptedKey (direct), MAC-protected requests only: the private key arrives in an
//     EnvelopedData with a password recipient under the request's shared secret; the CA has no
//     key of its own to decrypt a key-transport or key-agreement recipient (its keys sign, in
//     the token);
//   - challengeResp, agreeMAC and the deprecated thisMessage/dhMAC are refused with a reason.
// The profile lists the key types it accepts this way (encryption_key_types, kem_key_types)
// and ca_policy_check gives their certificates keyEncipherment or keyAgreement.
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv_internal.h"

// --- classification -------------------------------------------------------------------------

ca_key_use srv_ckg_key_use(const crmf_cert_req_msg *msg)
{
    switch (msg->popo.type) {
    case CRMF_POPO_KEY_ENCIPHERMENT:
        return CA_KEY_USE_ENCIPHER;
    case CRMF_POPO_KEY_AGREEMENT:
        return CA_KEY_USE_AGREE;
    default:
        return CA_KEY_USE_SIGN;
    }
}

static const char *srv_ckg_profile(const srv_request *req)
{
    return req->profile_name != NULL ? req->profile_name : "default";
}

cm_result srv_ckg_classify(srv_request *req, const crmf_cert_req_msg *msg)
{
    const crmf_popo *popo = &msg->popo;
    const crmf_template *tm = &msg->req.tmpl;
    req->ckg.kind = SRV_CKG_NONE;
    const bool no_key = tm->public_key.len == 0 || tm->spki.key.len == 0;
    if (no_key) {
        if (popo->type != CRMF_POPO_ABSENT) {
            // RFC 9483 §4.1.6: central key generation carries no POPO; anything else with a
            // POPO and no key is just incomplete.
            cm_why_set(&req->why, "the certTemplate has no public key, so there is nothing to "
                                  "prove possession of; omit the POPO to ask for central key "
                                  "generation");
            CM_BAIL(CRMF_E_POPO_NO_KEY);
        }
        if (req->policy.central_keygen == SRV_CKG_OFF) {
            cm_why_set(&req->why,
                       "the request has no public key: central key generation is not offered "
                       "by profile %s (central_keygen = off)",
                       srv_ckg_profile(req));
            CM_BAIL(SRV_E_CKG_OFF);
        }
        req->ckg.kind = SRV_CKG_KEYGEN;
        req->ckg.key_use = CA_KEY_USE_SIGN;
        return cm_result_make(CM_OK);
    }
    if (req->policy.central_keygen == SRV_CKG_REQUIRED) {
        cm_why_set(&req->why,
                   "profile %s generates keys centrally (central_keygen = required): send the "
                   "certTemplate without a public key and without a POPO",
                   srv_ckg_profile(req));
        CM_BAIL(SRV_E_CKG_REQUIRED);
    }
    if (popo->type != CRMF_POPO_KEY_ENCIPHERMENT && popo->type != CRMF_POPO_KEY_AGREEMENT) {
        return cm_result_make(CM_OK);
    }
    const char *pop = popo->type == CRMF_POPO_KEY_ENCIPHERMENT ? "keyEncipherment" : "keyAgreement";
    req->ckg.key_use = srv_ckg_key_use(msg);
    uint64_t sub = 0;
    switch (popo->priv_key_choice) {
    case CRMF_PRIV_SUBSEQUENT:
        CM_TRY(crmf_popo_subsequent(popo, &sub));
        if (sub == CRMF_SUBSEQUENT_ENCR_CERT) {
            req->ckg.kind = SRV_CKG_ENCR_CERT;
            return cm_result_make(CM_OK);
        }
        cm_why_set(&req->why,
                   "%s proof of possession by challengeResp (popdecc/popdecr) is not "
                   "supported: ask for encrCert (subsequentMessage 0), the "
                   "certificate encrypted to the key",
                   pop);
        break;
    case CRMF_PRIV_ENCRYPTED_KEY:
        req->ckg.kind = SRV_CKG_ENCRYPTED_KEY;
        return cm_result_make(CM_OK);
    case CRMF_PRIV_AGREE_MAC:
        cm_why_set(&req->why,
                   "%s proof of possession by agreeMAC needs a key-agreement key of "
                   "this CA, which it does not have: use subsequentMessage encrCert",
                   pop);
        break;
    default:
        cm_why_set(&req->why,
                   "%s proof of possession by %s is deprecated (RFC 9810 5.2.8.3) and "
                   "not supported: use subsequentMessage encrCert",
                   pop, popo->priv_key_choice == CRMF_PRIV_THIS_MESSAGE ? "thisMessage" : "dhMAC");
        break;
    }
    CM_BAIL(SRV_E_POP_METHOD);
}

// --- central key generation ---------------------------------------------------------------

// The key types the KGA generates, in the order a request naming none gets the first listed.
static const struct {
    uint32_t ca;
    const char *alg;   // EVP_PKEY_Q_keygen's type
    const char *curve; // EC: the group
} k_srv_ckg_types[] = {
    {CA_KEY_EC_P256, "EC", "P-256"}, {CA_KEY_EC_P384, "EC", "P-384"},
    {CA_KEY_EC_P521, "EC", "P-521"}, {CA_KEY_ED25519, "ED25519", NULL},
    {CA_KEY_ED448, "ED448", NULL},   {CA_KEY_RSA, "RSA", NULL},
};
#define SRV_CKG_NUM_TYPES (sizeof(k_srv_ckg_types) / sizeof(k_srv_ckg_types[0]))

// srv_ckg_type_of maps the algorithm a template names (with an empty key) to a CA_KEY_* bit;
// 0 for one the KGA cannot generate.
static uint32_t srv_ckg_type_of(const crmf_spki *k)
{
    switch (k->type) {
    case CRMF_KEY_RSA:
        return CA_KEY_RSA;
    case CRMF_KEY_EC:
        return k->ec_curve == CRMF_EC_P256   ? CA_KEY_EC_P256
               : k->ec_curve == CRMF_EC_P384 ? CA_KEY_EC_P384
               : k->ec_curve == CRMF_EC_P521 ? CA_KEY_EC_P521
                                             : 0;
    case CRMF_KEY_ED25519:
        return CA_KEY_ED25519;
    case CRMF_KEY_ED448:
        return CA_KEY_ED448;
    default:
        return 0;
    }
}

// srv_ckg_types_text lists the CA_KEY_* bits of |types| by name into |buf|.
static const char *srv_ckg_types_text(char *buf, size_t cap, uint32_t types)
{
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < SRV_CKG_NUM_TYPES && used + 1 < cap; i++) {
        if ((types & k_srv_ckg_types[i].ca) != 0) {
            const int n = snprintf(buf + used, cap - used, "%s%s", used > 0 ? ", " : "",
                                   ca_key_type_name(k_srv_ckg_types[i].ca));
            used += n > 0 ? (size_t)n : 0;
        }
    }
    if (used == 0) {
        (void)snprintf(buf, cap, "none");
    }
    return buf;
}

// srv_ckg_pick_type decides which key to generate: the template's algorithm, else the first
// the profile generates.
static cm_result srv_ckg_pick_type(srv_request *req, const crmf_template *tm, size_t *out)
{
    const uint32_t allowed = req->policy.central_key_types;
    char list[96];
    if (tm->public_key.len == 0) {
        for (size_t i = 0; i < SRV_CKG_NUM_TYPES; i++) {
            if ((allowed & k_srv_ckg_types[i].ca) != 0) {
                *out = i;
                return cm_result_make(CM_OK);
            }
        }
        cm_why_set(&req->why, "profile %s generates no key type (central_key_types: none)",
                   srv_ckg_profile(req));
        CM_BAIL(SRV_E_CKG_KEY_TYPE);
    }
    const uint32_t want = srv_ckg_type_of(&tm->spki);
    for (size_t i = 0; i < SRV_CKG_NUM_TYPES && want != 0; i++) {
        if (k_srv_ckg_types[i].ca == want && (allowed & want) != 0) {
            *out = i;
            return cm_result_make(CM_OK);
        }
    }
    char key[64];
    cm_why_set(&req->why,
               "key type %s is not one profile %s generates centrally (central_key_types: %s)",
               want != 0 ? ca_key_type_name(want) : crmf_key_text(key, sizeof(key), &tm->spki),
               srv_ckg_profile(req), srv_ckg_types_text(list, sizeof(list), allowed));
    CM_BAIL(SRV_E_CKG_KEY_TYPE);
}

// srv_ckg_signer_recipient: a signature-protected request gets the key encrypted to its signer
// certificate's key (RFC 9483 §4.1.6.1, §4.1.6.2), named by its subject key identifier (or
// issuer and serial without one). The key must be able to receive: RSA transports, EC agrees;
// a keyUsage present must allow that (keyEncipherment, keyAgreement: RFC 5280 §4.2.1.3).
static cm_result srv_ckg_signer_recipient(srv_request *req)
{
    cmp_cms_recipient *rc = &req->ckg.rcpt;
    cm_why why;
    cm_why_clear(&why);
    cmp_cms_recipient_kind kind;
    if (!cm_ok(cmp_cms_recipient_kind_for(&kind, req->signer.spki, &why))) {
        cm_why_set(&req->why,
                   "the centrally generated key would be encrypted to the signer's certificate, "
                   "but %s",
                   why.text);
        CM_BAIL(SRV_E_CKG_RECIPIENT);
    }
    cm_span ku;
    bool has_ku = false;
    CM_TRY(ca_cert_find_ext(req->signer_cert, CM_SPAN_LIT(DER_OID_CE_KEY_USAGE), &ku, &has_ku));
    if (has_ku) {
        der_reader r;
        uint32_t bits = 0;
        der_reader_init(&r, ku);
        const uint32_t need = kind == CMP_CMS_KTRI ? CA_KU_KEY_ENCIPHERMENT : CA_KU_KEY_AGREEMENT;
        if (!cm_ok(der_get_bitstring_flags(&r, &bits)) || (bits & need) == 0) {
            cm_why_set(&req->why,
                       "the centrally generated key would be encrypted to the signer's "
                       "certificate, whose keyUsage does not allow %s",
                       kind == CMP_CMS_KTRI ? "keyEncipherment" : "keyAgreement");
            CM_BAIL(SRV_E_CKG_RECIPIENT);
        }
    }
    cm_span ski;
    bool has_ski = false;
    CM_TRY(
        ca_cert_find_ext(req->signer_cert, CM_SPAN_LIT(DER_OID_CE_SUBJECT_KEY_ID), &ski, &has_ski));
    rc->kind = kind;
    rc->spki = req->signer.spki;
    if (has_ski) {
        der_reader r;
        der_reader_init(&r, ski);
        CM_TRY(der_get_octets(&r, &rc->ski));
    } else {
        rc->issuer = req->signer.issuer;
        rc->serial = req->signer.serial;
    }
    return cm_result_make(CM_OK);
}

static cm_result srv_ckg_recipient(srv_request *req)
{
    if (req->vouched || (req->sig_ok && req->signer_is_ra)) {
        // An RA's credential (its signature, or an inner message it vouches for with its own
        // MAC secret: srv_nested_vouch) would let the RA open the end entity's key.
        cm_why_set(&req->why, "central key generation through an RA is not supported: the key "
                              "would be encrypted to the RA, not to the end entity");
        CM_BAIL(SRV_E_CKG_RECIPIENT);
    }
    if (req->mac_ok && req->secret != NULL) {
        const uint32_t min = req->policy.central_keygen_min_secret != 0
                                 ? req->policy.central_keygen_min_secret
                                 : SRV_CKG_DEFAULT_MIN_SECRET;
        if (req->secret->secret.len < min) {
            char kid[80];
            cm_why_set(&req->why,
                       "the shared secret of senderKID %s (%zu octets) is too short to derive "
                       "the key that encrypts its centrally generated key with PBKDF2: at least "
                       "%u octets (central_keygen_min_secret)",
                       srv_bytes_text(kid, req->msg.header.f.sender_kid.v), req->secret->secret.len,
                       min);
            CM_BAIL(SRV_E_CKG_SECRET);
        }
        req->ckg.rcpt =
            (cmp_cms_recipient){.kind = CMP_CMS_PWRI,
                                .password = req->secret->secret,
                                .iterations = req->policy.central_keygen_kdf_iterations != 0
                                                  ? req->policy.central_keygen_kdf_iterations
                                                  : SRV_CKG_DEFAULT_KDF_ITERATIONS};
        return cm_result_make(CM_OK);
    }
    CM_ENSURE(req->sig_ok, SRV_E_CKG_RECIPIENT);
    return srv_ckg_signer_recipient(req);
}

static cm_result srv_ckg_keygen(srv_request *req, size_t type)
{
    uint32_t rsa_bits = 0;
    (void)ca_profile_key_types(req->profile, &rsa_bits);
    rsa_bits = rsa_bits < 2048 ? 2048 : rsa_bits;
    EVP_PKEY *key = k_srv_ckg_types[type].ca == CA_KEY_RSA
                        ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)rsa_bits)
                    : k_srv_ckg_types[type].curve != NULL
                        ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", k_srv_ckg_types[type].curve)
                        : EVP_PKEY_Q_keygen(NULL, NULL, k_srv_ckg_types[type].alg);
    const int n = key != NULL ? i2d_PUBKEY(key, NULL) : -1;
    uint8_t *spki = n > 0 ? cm_arena_alloc(&req->arena, (size_t)n) : NULL;
    uint8_t *p = spki;
    if (spki == NULL || i2d_PUBKEY(key, &p) != n) {
        EVP_PKEY_free(key);
        cm_ossl_clear_errors();
        cm_why_set(&req->why, "the %s key could not be generated",
                   ca_key_type_name(k_srv_ckg_types[type].ca));
        CM_BAIL(SRV_E_CKG_KEYGEN);
    }
    req->ckg.key = key;
    req->creq.spki = cm_span_make(spki, (size_t)n);
    return cm_result_make(CM_OK);
}

// --- proofs of possession -------------------------------------------------------------------

// srv_ckg_encrypted_key: the POPO's EnvelopedData holds the private key of the template's key
// (an AsymmetricKeyPackage) for a password recipient under the request's shared secret.
static cm_result srv_ckg_encrypted_key(srv_request *req, const crmf_cert_req_msg *msg)
{
    if (!req->mac_ok || req->secret == NULL) {
        cm_why_set(&req->why, "encryptedKey proof of possession is accepted in MAC-protected "
                              "requests only (a PasswordRecipientInfo under the shared "
                              "secret): this CA has no key to decrypt other recipients");
        CM_BAIL(SRV_E_POP_METHOD);
    }
    cm_span body;
    CM_TRY(crmf_popo_encrypted_key(&msg->popo, &body));
    const cmp_protect_limits *lim = cmp_protect_ctx_limits(req->w->e->p.prot);
    const cmp_cms_opener o = {.password = req->secret->secret,
                              .min_iterations = lim->pbmac1_min_iterations,
                              .max_iterations = lim->pbmac1_max_iterations,
                              .max_salt_len = lim->max_salt_len};
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    cm_span ctype;
    cm_why why;
    cm_why_clear(&why);
    cm_result r = cmp_cms_open(&req->w->crypto, &plain, &plain_len, &ctype, body, &o, &why);
    if (!cm_ok(r)) {
        cm_why_set(&req->why, "the encryptedKey proof of possession cannot be opened: %s",
                   cm_why_or_text(&why, r));
        return r;
    }
    EVP_PKEY *key = NULL;
    if (!der_oid_is(ctype, DER_OID_CT_KP_AKEY_PACKAGE)) {
        cm_why_set(&req->why, "the encryptedKey must hold an AsymmetricKeyPackage "
                              "(id-ct-KP-aKeyPackage)");
        r = cm_result_make(CMP_E_CMS_MALFORMED);
    } else {
        r = cmp_key_package_key(&req->w->crypto, &key, cm_span_make(plain, plain_len),
                                req->creq.spki);
        if (r.code == CMP_E_CMS_DECRYPT) {
            cm_why_set(&req->why, "the private key in encryptedKey is not the key of the "
                                  "certTemplate");
            r = cm_result_make(SRV_E_POP_KEY_MISMATCH);
        } else if (!cm_ok(r)) {
            cm_why_set(&req->why, "the encryptedKey does not hold a readable private key");
        }
    }
    EVP_PKEY_free(key);
    cmp_cms_secret_free(plain, plain_len);
    return r;
}

// srv_ckg_encr_cert_check: the certificate will be encrypted to the requested key itself, by
// key transport for keyEncipherment (RSA) and key agreement for keyAgreement.
static cm_result srv_ckg_encr_cert_check(srv_request *req)
{
    cmp_cms_recipient_kind kind;
    cm_why why;
    cm_why_clear(&why);
    cm_result r = cmp_cms_recipient_kind_for(&kind, req->creq.spki, &why);
    const cmp_cms_recipient_kind want =
        req->ckg.key_use == CA_KEY_USE_ENCIPHER ? CMP_CMS_KTRI : CMP_CMS_KARI;
    if (!cm_ok(r) || kind != want) {
        cm_why_set(&req->why, "a %s proof of possession needs a key that can %s",
                   want == CMP_CMS_KTRI ? "keyEncipherment" : "keyAgreement",
                   want == CMP_CMS_KTRI ? "transport keys (RSA)"
                                        : "agree keys (ECDH, X25519, X448)");
        CM_BAIL(SRV_E_POP_KEY_TYPE);
    }
    return cm_result_make(CM_OK);
}

cm_result srv_ckg_prepare(srv_request *req, const crmf_cert_req_msg *msg)
{
    const crmf_template *tm = &msg->req.tmpl;
    switch (req->ckg.kind) {
    case SRV_CKG_KEYGEN: {
        if (!req->ca->kga) {
            cm_why_set(&req->why, "central key generation needs a CMP certificate with "
                                  "id-kp-cmKGA (certmint init --kga)");
            CM_BAIL(SRV_E_CKG_NO_KGA);
        }
        size_t type = 0;
        CM_TRY(srv_ckg_pick_type(req, tm, &type));
        CM_TRY(srv_ckg_recipient(req));
        CM_TRY(srv_ckg_keygen(req, type));
        req->creq.key_use = CA_KEY_USE_SIGN;
        return cm_result_make(CM_OK);
    }
    case SRV_CKG_ENCR_CERT:
    case SRV_CKG_ENCRYPTED_KEY:
        CM_TRY(crmf_spki_to_der(&req->arena, &req->creq.spki, tm->public_key));
        req->creq.key_use = req->ckg.key_use;
        if (req->ckg.kind == SRV_CKG_ENCR_CERT) {
            return srv_ckg_encr_cert_check(req);
        }
        return srv_ckg_encrypted_key(req, msg);
    default:
        CM_BAIL(CM_E_INVALID_ARG);
    }
}

// --- after the certificate ------------------------------------------------------------------

// srv_ckg_digest: the SignedData's digest is the one the KGA's signature hashes with (RFC
// 5754), SHA-512 for Ed25519 (RFC 8419 §3).
static crmf_hash srv_ckg_digest(hsm_sig_alg alg)
{
    const crmf_alg *row = crmf_alg_get((crmf_alg_id)hsm_sig_alg_row(alg));
    if (row == NULL) {
        return CRMF_HASH_NONE;
    }
    if (row->sig == CRMF_SIG_ED25519) {
        return CRMF_HASH_SHA512;
    }
    return row->hash;
}

// srv_ckg_sign_kga packages the key and hands the signed attributes of the KGA's SignedData to
// the HSM.
static cm_result srv_ckg_sign_kga(srv_request *req)
{
    srv_ckg *k = &req->ckg;
    const srv_ca *ca = req->ca;
    CM_TRY(cmp_key_package_new(&k->package, &k->package_len, k->key));
    EVP_PKEY_free(k->key); // the package is the only copy from here on
    k->key = NULL;
    der_builder ab;
    der_builder_init_arena(&ab, &req->arena, 64);
    hsm_sig_alg_marshal(&ab, ca->cmp_sig_alg);
    cm_span alg;
    CM_TRY(der_builder_finish(&ab, &alg));
    // The KGA's certificate and its chain (RFC 9483 §4.1.6: certificates MUST hold it).
    const ca_authority *kga = ca->cmp_cert;
    size_t n = 0;
    k->certs[n++] = ca_authority_cert(kga);
    for (size_t i = 0; i < ca_authority_num_chain(kga) && n < CMP_CMS_MAX_CERTS; i++) {
        k->certs[n++] = ca_authority_chain(kga, i);
    }
    k->sd = (cmp_signed_data){.content_type = CM_SPAN_LIT(DER_OID_CT_KP_AKEY_PACKAGE),
                              .content = cm_span_make(k->package, k->package_len),
                              .digest = srv_ckg_digest(ca->cmp_sig_alg),
                              .sig_alg = alg,
                              .ski = ca_authority_ski(kga),
                              .certs = k->certs,
                              .num_certs = n,
                              .signing_time = req->now};
    der_builder sb;
    der_builder_init_arena(&sb, &req->arena, CMP_CMS_MAX_ATTRS_LEN);
    CM_TRY(cmp_signed_data_attrs(&req->w->crypto, &sb, &k->sd));
    CM_TRY(der_builder_finish(&sb, &k->attrs));
    k->kga_signing = true;
    srv_sign_submit(req, ca->cmp_key, ca->cmp_sig_alg, k->attrs, SRV_ST_SIGN_CERT);
    return cm_result_make(CM_OK);
}

// srv_ckg_seal_cert: the certificate in an EnvelopedData to its own key, named by its subject
// key identifier (ca_tbs_build always writes one), as CertOrEncCert's encryptedCert [1].
static cm_result srv_ckg_seal_cert(srv_request *req)
{
    cm_span ski_ext;
    bool found = false;
    CM_TRY(ca_cert_find_ext(req->cert, CM_SPAN_LIT(DER_OID_CE_SUBJECT_KEY_ID), &ski_ext, &found));
    CM_ENSURE(found, SRV_E_INTERNAL);
    der_reader r;
    der_reader_init(&r, ski_ext);
    cmp_cms_recipient rc = {.kind = req->ckg.key_use == CA_KEY_USE_ENCIPHER ? CMP_CMS_KTRI
                                                                            : CMP_CMS_KARI,
                            .spki = req->creq.spki};
    CM_TRY(der_get_octets(&r, &rc.ski));
    der_builder b;
    der_builder_init_arena(&b, &req->arena, req->cert.len + 512);
    der_mark m;
    der_open_hint(&b, &m, DER_CONTEXT_CONS(1), 3);
    CM_TRY(cmp_cms_seal(&req->w->crypto, &b, DER_CONTEXT_CONS(0), &rc, CM_SPAN_LIT(DER_OID_CT_DATA),
                        req->cert, &req->why));
    der_close(&b, &m);
    return der_builder_finish(&b, &req->ckg.encrypted_cert);
}

cm_result srv_ckg_after_cert(srv_request *req, bool *out_submitted)
{
    *out_submitted = false;
    switch (req->ckg.kind) {
    case SRV_CKG_KEYGEN: {
        cm_result r = srv_ckg_sign_kga(req);
        if (!cm_ok(r)) {
            srv_ckg_cleanup(req);
            return r.code == SRV_E_INTERNAL ? r : cm_result_make(SRV_E_CKG_KEYGEN);
        }
        *out_submitted = true;
        return r;
    }
    case SRV_CKG_ENCR_CERT:
        return srv_ckg_seal_cert(req);
    default:
        return cm_result_make(CM_OK);
    }
}

cm_result srv_ckg_after_kga(srv_request *req)
{
    srv_ckg *k = &req->ckg;
    k->kga_signing = false;
    const cm_span sig = cm_span_make(req->sig, req->hjob.sig_len);
    // The SignedData holds the key in clear: it is written into one buffer of exactly the room
    // it needs (no realloc leaves a copy behind) and wiped right after it is encrypted.
    size_t cap = k->package_len + k->attrs.len + sig.len + k->sd.sig_alg.len + 256;
    for (size_t i = 0; i < k->sd.num_certs; i++) {
        cap += k->sd.certs[i].len + 8;
    }
    uint8_t *buf = OPENSSL_malloc(cap);
    cm_result r = cm_result_make(buf != NULL ? CM_OK : CM_E_NOMEM);
    cm_span sd;
    if (cm_ok(r)) {
        der_builder sb;
        der_builder_init_fixed(&sb, buf, cap);
        cmp_signed_data_marshal(&sb, &k->sd, k->attrs, sig);
        r = der_builder_finish(&sb, &sd);
    }
    if (cm_ok(r)) {
        der_builder b;
        der_builder_init_arena(&b, &req->arena, sd.len + 1024);
        der_mark m;
        der_open_hint(&b, &m, DER_CONTEXT_CONS(0), 3); // privateKey [0] EXPLICIT
        r = cmp_cms_seal(&req->w->crypto, &b, DER_CONTEXT_CONS(0), &k->rcpt,
                         CM_SPAN_LIT(DER_OID_CT_SIGNED_DATA), sd, &req->why);
        der_close(&b, &m);
        if (cm_ok(r)) {
            r = der_builder_finish(&b, &k->private_key);
        }
    }
    cmp_cms_secret_free(buf, cap);
    srv_ckg_cleanup(req);
    return r;
}

cm_result srv_ckg_may_wait(srv_request *req, srv_wait wait)
{
    if (req->ckg.kind != SRV_CKG_KEYGEN && req->ckg.kind != SRV_CKG_ENCR_CERT) {
        return cm_result_make(CM_OK);
    }
    const char *what = req->ckg.kind == SRV_CKG_KEYGEN
                           ? "central key generation cannot wait: the generated key is never "
                             "stored"
                           : "an encrCert proof of possession cannot wait: the certificate "
                             "would be delivered later unencrypted";
    if (wait == SRV_WAIT_APPROVAL) {
        cm_why_set(&req->why,
                   "%s, and profile %s approves every request manually (approval = "
                   "manual)",
                   what, srv_ckg_profile(req));
    } else {
        cm_why_set(&req->why, "%s, and the CA is overloaded; try again later", what);
    }
    CM_BAIL(SRV_E_CKG_WAIT);
}

void srv_ckg_cleanup(srv_request *req)
{
    srv_ckg *k = &req->ckg;
    EVP_PKEY_free(k->key); // OpenSSL clears private key material when it frees it
    k->key = NULL;
    cmp_cms_secret_free(k->package, k->package_len);
    k->package = NULL;
    k->package_len = 0;
    k->sd.content = cm_span_make(NULL, 0);
}
