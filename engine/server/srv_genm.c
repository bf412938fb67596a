// General messages (RFC 9483 §4.3, RFC 9810 §5.3.19): genm → genp with one InfoTypeAndValue
// answering the one asked for: caCerts, rootCaKeyUpdate, certReqTemplate, crls,
// signKeyPairTypes, currentCRL; anything else gets an empty genp. The infoValues are encoded by
// engine/cmp (cmp_genm.c); this file decides what goes into them.
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

static cm_result srv_genm_answer(srv_request *req, cmp_itav *out, bool *out_empty)
{
    const cmp_msg *m = &req->msg;
    const srv_ca *ca = req->ca;
    if (m->body.u.gen.num != 1) { // RFC 9483 §4.3: one InfoTypeAndValue
        cm_why_set(&req->why, "genm must carry exactly one InfoTypeAndValue, not %zu",
                   m->body.u.gen.num);
        CM_BAIL(SRV_E_REQ_COUNT);
    }
    const cmp_itav *q = &m->body.u.gen.items[0];
    const bool ca_certs = der_oid_is(q->oid, DER_OID_IT_CA_CERTS);
    if (!(ca_certs && ca->unprotected_genm && !m->has_protection)) {
        CM_TRY(srv_authenticate(req, ca->client_trust, ca->own_trust));
    }
    memset(out, 0, sizeof(*out));
    *out_empty = false;
    if (ca_certs) {
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
    if (der_oid_is(q->oid, DER_OID_IT_CURRENT_CRL)) {
        return srv_genm_current_crl(req, out);
    }
    // Anything else: an empty genp (RFC 9810 §5.3.19: the CA need not answer every type).
    *out_empty = true;
    return cm_result_make(CM_OK);
}

void srv_genm_start(srv_request *req)
{
    cmp_itav *itav = cm_arena_alloc(&req->arena, sizeof(cmp_itav));
    bool empty = false;
    cm_result r = itav != NULL ? srv_genm_answer(req, itav, &empty) : cm_result_make(CM_E_NOMEM);
    if (!cm_ok(r)) {
        srv_fail(req, r);
        return;
    }
    cmp_body body;
    memset(&body, 0, sizeof(body));
    body.type = CMP_BODY_GENP;
    body.u.gen.items = itav;
    body.u.gen.num = empty ? 0 : 1;
    srv_respond(req, &body);
}
