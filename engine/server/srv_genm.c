// General messages (RFC 9483 §4.3, RFC 9810 §5.3.19): genm → genp with one InfoTypeAndValue
// for each one asked for that the CA answers: caProtEncCert (absent: no encryption
// certificate), signKeyPairTypes, encKeyPairTypes, preferredSymmAlg, currentCRL,
// supportedLangTags (en), caCerts, rootCaKeyUpdate (for rootCaCert), certReqTemplate, crls
// (for crlStatusList). Other types are left out; a genm of nothing but those, or of nothing
// at all, gets an empty genp. The infoValues are encoded by engine/cmp (cmp_genm.c) or here
// when they are a single element; this file decides what goes into them.
#include <string.h>

#include "engine/der/der_oid.h"
#include "engine/server/srv_internal.h"

// The profile's key types (CA_KEY_* bits) with cmp's names for them, in bit order (the order
// signKeyPairTypes lists them).
static const struct {
    uint32_t bit;
    cmp_key_type type;
} k_srv_key_types[] = {
    {CA_KEY_EC_P256, CMP_KEY_EC_P256}, {CA_KEY_EC_P384, CMP_KEY_EC_P384},
    {CA_KEY_EC_P521, CMP_KEY_EC_P521}, {CA_KEY_RSA, CMP_KEY_RSA},
    {CA_KEY_ED25519, CMP_KEY_ED25519}, {CA_KEY_ED448, CMP_KEY_ED448},
};

#define SRV_NUM_KEY_TYPES (sizeof(k_srv_key_types) / sizeof(k_srv_key_types[0]))

// srv_genm_crls answers crlStatusList (id-it 22) with crls (id-it 23): the current CRL when the
// client's (CRLStatus.thisUpdate) is older or absent; an absent value when it is current.
static cm_result srv_genm_crls(srv_request *req, cmp_itav *out, cm_span status_list)
{
    const cmp_crl_status *st;
    size_t num;
    CM_TRY(cmp_crl_status_list_from_der(&req->arena, &st, &num, status_list));
    // The CA keeps one CRL: the first CRLStatus says how current the client's copy is.
    store_crl crl;
    cm_result r = store_crl_get(req->w->reader, &req->arena, &crl, req->ca->name);
    out->oid = CM_SPAN_LIT(DER_OID_IT_CRLS);
    if (r.code == STORE_E_NOT_FOUND || (cm_ok(r) && crl.crl_der.len == 0)) {
        return cm_result_make(CM_OK); // no CRL yet: absent value
    }
    CM_TRY(r);
    if (!st[0].has_this_update || st[0].this_update < crl.this_update) {
        der_builder b;
        der_builder_init_arena(&b, &req->arena, crl.crl_der.len + 8);
        cmp_seq_of_marshal(&b, &crl.crl_der, 1);
        return der_builder_finish(&b, &out->value);
    }
    return cm_result_make(CM_OK);
}

// srv_genm_ca_certs: caCerts, the CA's certificate and its chain (RFC 9483 §4.3.1).
static cm_result srv_genm_ca_certs(srv_request *req, cmp_itav *out)
{
    const ca_authority *a = req->ca->authority;
    cm_span certs[CA_MAX_CHAIN + 1];
    size_t n = 0;
    certs[n++] = ca_authority_cert(a);
    for (size_t i = 0; i < ca_authority_num_chain(a) && n <= CA_MAX_CHAIN; i++) {
        certs[n++] = ca_authority_chain(a, i);
    }
    der_builder b;
    der_builder_init_arena(&b, &req->arena, 2048);
    cmp_seq_of_marshal(&b, certs, n);
    out->oid = CM_SPAN_LIT(DER_OID_IT_CA_CERTS);
    return der_builder_finish(&b, &out->value);
}

// srv_genm_root_update: rootCaCert (the client's current root, optional) → rootCaKeyUpdate
// (§4.3.2) when an update is configured and the client's root is ours; else an absent value.
static cm_result srv_genm_root_update(srv_request *req, cmp_itav *out, cm_span their_root)
{
    const srv_ca *ca = req->ca;
    out->oid = CM_SPAN_LIT(DER_OID_IT_ROOT_CA_KEY_UPDATE);
    if (ca->root_update[0].len == 0 ||
        (their_root.len != 0 && !cm_span_eq(their_root, srv_ca_root(ca->authority)))) {
        return cm_result_make(CM_OK);
    }
    const cmp_root_ca_key_update u = {.new_with_new = ca->root_update[0],
                                      .new_with_old = ca->root_update[1],
                                      .old_with_new = ca->root_update[2]};
    der_builder b;
    der_builder_init_arena(&b, &req->arena, 4096);
    cmp_root_ca_key_update_marshal(&b, &u);
    return der_builder_finish(&b, &out->value);
}

// srv_genm_template: certReqTemplate, the profile's extensions as the template and its
// preferred key as keySpec (§4.3.3): the first allowed curve or EdDSA, else RSA of the
// profile's smallest modulus.
static cm_result srv_genm_template(srv_request *req, cmp_itav *out)
{
    const ca_profile *profile = req->ca->profile;
    uint32_t rsa_min = 0;
    const uint32_t types = ca_profile_key_types(profile, &rsa_min);
    static const uint32_t k_pref[] = {CA_KEY_EC_P256, CA_KEY_EC_P384, CA_KEY_EC_P521,
                                      CA_KEY_ED25519, CA_KEY_ED448};
    cmp_key_spec spec = {.type = CMP_KEY_RSA, .rsa_key_len = rsa_min != 0 ? rsa_min : 2048};
    for (size_t i = 0; i < sizeof(k_pref) / sizeof(k_pref[0]); i++) {
        if ((types & k_pref[i]) == 0) {
            continue;
        }
        for (size_t k = 0; k < SRV_NUM_KEY_TYPES; k++) {
            if (k_srv_key_types[k].bit == k_pref[i]) {
                spec.type = k_srv_key_types[k].type;
            }
        }
        break;
    }
    crmf_template t;
    memset(&t, 0, sizeof(t));
    t.extensions = ca_profile_extensions(profile);
    der_builder b;
    der_builder_init_arena(&b, &req->arena, 1024);
    cmp_cert_req_template_marshal(&b, &t, &spec);
    out->oid = CM_SPAN_LIT(DER_OID_IT_CERT_REQ_TEMPLATE);
    return der_builder_finish(&b, &out->value);
}

// srv_genm_key_types: signKeyPairTypes, the key types the profile accepts (§5.3.19.2).
static cm_result srv_genm_key_types(srv_request *req, cmp_itav *out)
{
    const uint32_t types = ca_profile_key_types(req->ca->profile, NULL);
    cmp_key_type list[SRV_NUM_KEY_TYPES];
    size_t n = 0;
    for (size_t k = 0; k < SRV_NUM_KEY_TYPES; k++) {
        if ((types & k_srv_key_types[k].bit) != 0) {
            list[n++] = k_srv_key_types[k].type;
        }
    }
    der_builder b;
    der_builder_init_arena(&b, &req->arena, 256);
    cmp_key_alg_list_marshal(&b, list, n);
    out->oid = CM_SPAN_LIT(DER_OID_IT_SIGN_KEY_PAIR_TYPES);
    return der_builder_finish(&b, &out->value);
}

// srv_genm_current_crl: currentCRL, the CA's latest CRL, absent when none was issued
// (§5.3.19.6).
static cm_result srv_genm_current_crl(srv_request *req, cmp_itav *out)
{
    store_crl crl;
    cm_result r = store_crl_get(req->w->reader, &req->arena, &crl, req->ca->name);
    out->oid = CM_SPAN_LIT(DER_OID_IT_CURRENT_CRL);
    if (cm_ok(r) && crl.crl_der.len != 0) {
        out->value = crl.crl_der;
    } else if (r.code != STORE_E_NOT_FOUND) {
        CM_TRY(r);
    }
    return cm_result_make(CM_OK);
}

// srv_genm_enc_key_types: encKeyPairTypes (RFC 4210 §5.3.19.3), the key types of the profile
// that can encrypt or agree on keys (RSA keyEncipherment, EC keyAgreement; EdDSA keys only
// sign); an absent value when there is none.
static cm_result srv_genm_enc_key_types(srv_request *req, cmp_itav *out)
{
    const uint32_t types = ca_profile_key_types(req->ca->profile, NULL) &
                           (CA_KEY_EC_P256 | CA_KEY_EC_P384 | CA_KEY_EC_P521 | CA_KEY_RSA);
    cmp_key_type list[SRV_NUM_KEY_TYPES];
    size_t n = 0;
    for (size_t k = 0; k < SRV_NUM_KEY_TYPES; k++) {
        if ((types & k_srv_key_types[k].bit) != 0) {
            list[n++] = k_srv_key_types[k].type;
        }
    }
    out->oid = CM_SPAN_LIT(DER_OID_IT_ENC_KEY_PAIR_TYPES);
    if (n == 0) {
        return cm_result_make(CM_OK);
    }
    der_builder b;
    der_builder_init_arena(&b, &req->arena, 256);
    cmp_key_alg_list_marshal(&b, list, n);
    return der_builder_finish(&b, &out->value);
}

// srv_genm_symm_alg: preferredSymmAlg (RFC 4210 §5.3.19.4), AES-256-CBC, the content
// encryption RFC 9481 §5 names (certmint itself encrypts nothing yet).
static cm_result srv_genm_symm_alg(srv_request *req, cmp_itav *out)
{
    // AlgorithmIdentifier { id-aes256-CBC 2.16.840.1.101.3.4.1.42 }, no IV: a preference only.
    static const uint8_t k_aes256_cbc[] = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                           0x01, 0x65, 0x03, 0x04, 0x01, 0x2a};
    (void)req;
    out->oid = CM_SPAN_LIT(DER_OID_IT_PREFERRED_SYMM_ALG);
    out->value = cm_span_make(k_aes256_cbc, sizeof(k_aes256_cbc));
    return cm_result_make(CM_OK);
}

// srv_genm_lang: supportedLangTags (RFC 4210 §5.3.19.9): the client lists the languages it
// reads, the CA answers the one it chose. certmint writes its statusStrings in English, so it
// chooses the first tag whose primary subtag is "en" (RFC 5646); a list without one, or no
// list, is refused.
static cm_result srv_genm_lang(srv_request *req, cmp_itav *out, cm_span value)
{
    // SuppLangTagsValue ::= SEQUENCE OF UTF8String
    der_reader r, seq;
    der_reader_init(&r, value);
    if (value.len == 0 || !cm_ok(der_enter(&r, DER_TAG_SEQUENCE, &seq)) || !der_reader_empty(&r) ||
        der_reader_empty(&seq)) {
        cm_why_set(&req->why, "a genm for supportedLangTags needs the list of languages the "
                              "client reads (SEQUENCE OF UTF8String)");
        CM_BAIL(SRV_E_BODY);
    }
    cm_span chosen = cm_span_make(NULL, 0);
    size_t n = 0;
    while (!der_reader_empty(&seq)) {
        cm_span tag;
        CM_ENSURE(++n <= CMP_MAX_ITAVS, CM_E_DER_TOO_MANY);
        CM_TRY(der_get_string(&seq, DER_TAG_UTF8_STRING, &tag));
        const bool en = tag.len >= 2 && (tag.p[0] | 0x20) == 'e' && (tag.p[1] | 0x20) == 'n' &&
                        (tag.len == 2 || tag.p[2] == '-');
        if (en && chosen.len == 0) {
            chosen = tag;
        }
    }
    if (chosen.len == 0) {
        cm_why_set(&req->why, "supportedLangTags offers no English tag; this CA writes en only");
        CM_BAIL(SRV_E_LANGUAGE);
    }
    der_builder b;
    der_builder_init_arena(&b, &req->arena, chosen.len + 8);
    der_mark m;
    der_open(&b, &m, DER_TAG_SEQUENCE);
    der_put_string(&b, DER_TAG_UTF8_STRING, chosen);
    der_close(&b, &m);
    out->oid = CM_SPAN_LIT(DER_OID_IT_SUPP_LANG_TAGS);
    return der_builder_finish(&b, &out->value);
}

// srv_genm_item answers one InfoTypeAndValue |q| into |out|; |*out_known| false for a type
// the CA does not answer (left out of the genp: RFC 4210 §5.3.19, "the receiver is free to
// ignore any contained OBJECT IDs that it does not recognize").
static cm_result srv_genm_item(srv_request *req, cmp_itav *out, bool *out_known, const cmp_itav *q)
{
    memset(out, 0, sizeof(*out));
    *out_known = true;
    if (der_oid_is(q->oid, DER_OID_IT_CA_CERTS)) {
        if (q->value.len != 0) {
            cm_why_set(&req->why, "a genm for caCerts must have no value");
            CM_BAIL(SRV_E_BODY);
        }
        return srv_genm_ca_certs(req, out);
    }
    if (der_oid_is(q->oid, DER_OID_IT_ROOT_CA_CERT)) {
        return srv_genm_root_update(req, out, q->value);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CERT_REQ_TEMPLATE)) {
        if (q->value.len != 0) {
            cm_why_set(&req->why, "a genm for certReqTemplate must have no value");
            CM_BAIL(SRV_E_BODY);
        }
        return srv_genm_template(req, out);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CRL_STATUS_LIST)) {
        if (q->value.len == 0) {
            cm_why_set(&req->why, "a genm for crlStatusList needs a CRLStatusList value");
            CM_BAIL(SRV_E_BODY);
        }
        return srv_genm_crls(req, out, q->value);
    }
    if (der_oid_is(q->oid, DER_OID_IT_SIGN_KEY_PAIR_TYPES)) {
        return srv_genm_key_types(req, out);
    }
    if (der_oid_is(q->oid, DER_OID_IT_ENC_KEY_PAIR_TYPES)) {
        return srv_genm_enc_key_types(req, out);
    }
    if (der_oid_is(q->oid, DER_OID_IT_PREFERRED_SYMM_ALG)) {
        return srv_genm_symm_alg(req, out);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CURRENT_CRL)) {
        return srv_genm_current_crl(req, out);
    }
    if (der_oid_is(q->oid, DER_OID_IT_CA_PROT_ENC_CERT)) {
        // RFC 4210 §5.3.19.1: Certificate | < absent >. certmint has no encryption
        // certificate, so the answer is deliberately empty.
        out->oid = CM_SPAN_LIT(DER_OID_IT_CA_PROT_ENC_CERT);
        return cm_result_make(CM_OK);
    }
    if (der_oid_is(q->oid, DER_OID_IT_SUPP_LANG_TAGS)) {
        return srv_genm_lang(req, out, q->value);
    }
    *out_known = false;
    return cm_result_make(CM_OK);
}

// srv_genm_answer answers every InfoTypeAndValue the CA knows, in the genm's order; an empty
// genm (what `openssl cmp -cmd genm` sends without -infotype) gets an empty genp, as
// OpenSSL's own mock server answers it.
static cm_result srv_genm_answer(srv_request *req, cmp_itav *out, size_t *out_num)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    const size_t num = m->body.u.gen.num;
    // The one request answered without protection: caCerts alone, for a device bootstrapping
    // its trust (unprotected_genm).
    const bool bootstrap = num == 1 && der_oid_is(m->body.u.gen.items[0].oid, DER_OID_IT_CA_CERTS);
    if (!(bootstrap && ca->unprotected_genm && !m->has_protection)) {
        CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    }
    size_t n = 0;
    for (size_t i = 0; i < num; i++) {
        bool known = false;
        CM_TRY(srv_genm_item(req, &out[n], &known, &m->body.u.gen.items[i]));
        n += known;
    }
    *out_num = n;
    return cm_result_make(CM_OK);
}

void srv_genm_start(srv_request *req)
{
    const size_t num = req->msg.body.u.gen.num;
    cmp_itav *itavs = cm_arena_alloc(&req->arena, (num > 0 ? num : 1) * sizeof(cmp_itav));
    size_t n = 0;
    cm_result r = itavs != NULL ? srv_genm_answer(req, itavs, &n) : cm_result_make(CM_E_NOMEM);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENP;
    body.u.gen.items = itavs;
    body.u.gen.num = n;
    srv_respond(req, &body);
}
