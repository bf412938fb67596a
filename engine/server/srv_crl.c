// CRLs (RFC 5280 §5): built from the store's revoked entries, signed with the CA key through
// the HSM pool, recorded in the store (which serves them to /crl/NAME.crl and genm).
// Blocking: called by the daemon's maintenance thread and by the admin tool, never by a loop.
#include <stdlib.h>
#include <string.h>

#include "engine/server/srv_internal.h"

typedef struct srv_crl_list {
    ca_crl_entry *items;
    uint8_t *serials; // serial bytes, SRV_CRL_SERIAL_MAX per entry
    size_t num, cap;
    bool failed;
} srv_crl_list;

#define SRV_CRL_SERIAL_MAX 21u // a 20-octet serial with its sign octet

static bool srv_crl_collect(void *ctx, cm_span serial, int64_t revoked_at, int reason)
{
    srv_crl_list *l = ctx;
    if (serial.len > SRV_CRL_SERIAL_MAX) {
        l->failed = true;
        return false;
    }
    if (l->num == l->cap) {
        const size_t cap = l->cap == 0 ? 64 : l->cap * 2;
        ca_crl_entry *ni = realloc(l->items, cap * sizeof(*ni));
        if (ni != NULL) {
            l->items = ni;
        }
        uint8_t *ns = realloc(l->serials, cap * SRV_CRL_SERIAL_MAX);
        if (ns != NULL) {
            l->serials = ns;
        }
        if (ni == NULL || ns == NULL) {
            l->failed = true;
            return false;
        }
        l->cap = cap;
    }
    memcpy(l->serials + l->num * SRV_CRL_SERIAL_MAX, serial.p, serial.len);
    l->items[l->num].serial = cm_span_make(NULL, serial.len); // pointer fixed below
    l->items[l->num].revoked_at = revoked_at;
    l->items[l->num].reason = reason;
    l->num++;
    return true;
}

cm_result srv_crl_issue(const srv_crl_params *p, int64_t now, cm_arena *arena, cm_span *out_crl)
{
    CM_ENSURE(p->validity_s > 0, CM_E_INVALID_ARG);
    store_reader *rd = NULL;
    srv_crl_list list = {0};
    der_builder tb, cb, ab;
    der_builder_init(&tb, 1024);
    der_builder_init(&cb, 1024);
    der_builder_init(&ab, 64);
    cm_result r = store_reader_open(p->store, &rd);
    store_crl state;
    memset(&state, 0, sizeof(state));
    if (cm_ok(r)) {
        r = store_crl_get(rd, arena, &state, p->ca_name);
        if (r.code == STORE_E_NOT_FOUND) {
            memset(&state, 0, sizeof(state));
            r = cm_result_make(CM_OK);
        }
    }
    // RFC 5280 §3.3: entries of expired certificates may be dropped.
    if (cm_ok(r)) {
        r = store_revoked_list(rd, p->ca_name, now, srv_crl_collect, &list);
    }
    if (cm_ok(r) && list.failed) {
        r = cm_result_make(CM_E_NOMEM);
    }
    for (size_t i = 0; cm_ok(r) && i < list.num; i++) {
        list.items[i].serial.p = list.serials + i * SRV_CRL_SERIAL_MAX;
    }
    store_job num;
    store_job_init(&num, STORE_OP_CRL_NEXT_NUMBER, NULL);
    num.u.ref.ca = p->ca_name;
    if (cm_ok(r)) {
        r = store_run(p->store, &num);
    }
    cm_span alg, tbs, crl;
    if (cm_ok(r)) {
        hsm_sig_alg_marshal(&ab, p->sig_alg);
        r = der_builder_finish(&ab, &alg);
    }
    if (cm_ok(r)) {
        r = ca_crl_tbs_build(p->authority, &tb, alg, now, now + p->validity_s, num.out_value,
                             list.items, list.num);
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&tb, &tbs);
    }
    uint8_t sig[HSM_MAX_SIG_LEN];
    size_t sig_len = 0;
    if (cm_ok(r)) {
        r = hsm_sign_sync(p->pool, &sig_len, sig, sizeof(sig), p->key, p->sig_alg, tbs);
    }
    if (cm_ok(r)) {
        r = ca_signed_assemble(&cb, tbs, alg, cm_span_make(sig, sig_len));
    }
    if (cm_ok(r)) {
        r = der_builder_finish(&cb, &crl);
    }
    if (cm_ok(r)) {
        store_job put;
        store_job_init(&put, STORE_OP_CRL_PUT, NULL);
        put.u.crl.ca = p->ca_name;
        put.u.crl.crl_number = num.out_value;
        put.u.crl.built_revision = state.revision; // revocations after the read come next time
        put.u.crl.crl_der = crl;
        put.u.crl.this_update = now;
        put.u.crl.next_update = now + p->validity_s;
        r = store_run(p->store, &put);
    }
    if (cm_ok(r)) {
        uint8_t *copy = cm_arena_memdup(arena, crl);
        if (copy == NULL) {
            r = cm_result_make(CM_E_NOMEM);
        } else {
            *out_crl = cm_span_make(copy, crl.len);
        }
    }
    if (rd != NULL) {
        store_reader_close(rd);
    }
    der_builder_cleanup(&tb);
    der_builder_cleanup(&cb);
    der_builder_cleanup(&ab);
    free(list.items);
    free(list.serials);
    return r;
}

cm_result srv_crl_due(store_reader *rd, const char *ca_name, int64_t now, int64_t min_interval_s,
                      int64_t validity_s, bool *out_due)
{
    cm_arena a;
    cm_arena_init(&a, 1024, 0);
    store_crl st;
    cm_result r = store_crl_get(rd, &a, &st, ca_name);
    *out_due = false;
    if (r.code == STORE_E_NOT_FOUND || (cm_ok(r) && st.crl_der.len == 0)) {
        *out_due = true; // never issued
        r = cm_result_make(CM_OK);
    } else if (cm_ok(r)) {
        const bool changed = st.revision > st.built_revision;
        const bool calm = now - st.this_update >= min_interval_s;
        // Re-issue when a quarter of the validity is left, so clients never see it expire.
        const bool expiring = st.next_update - now < validity_s / 4;
        *out_due = (changed && calm) || expiring;
    }
    cm_arena_cleanup(&a);
    return r;
}

cm_result srv_worker_crl(srv_worker *w, const srv_ca *ca, cm_arena *arena, cm_span *out_crl)
{
    store_crl crl;
    CM_TRY(store_crl_get(w->reader, arena, &crl, ca->name));
    CM_ENSURE(crl.crl_der.len != 0, STORE_E_NOT_FOUND);
    *out_crl = crl.crl_der;
    return cm_result_make(CM_OK);
}
