// certmint pending, approve and reject: the requests that wait (delayed delivery, issue 16),
// read from and decided in the store's pending table. A request under a profile with
// approval = manual waits for an operator: `approve` lets the daemon's drain sign it (within a
// second), `reject` gives its reservation back (serial, key, the credential's use) and keeps the
// rejection for the client's next pollReq. The daemon need not be stopped: both are store
// operations of their own (STORE_OP_PENDING_DECIDE), atomic against the daemon's drain.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/server/srv.h"
#include "tools/certmint/tool.h"

static const char *const k_state_names[STORE_PENDING_NUM_STATES] = {
    [STORE_PENDING_QUEUED] = "queued",       [STORE_PENDING_APPROVAL] = "approval",
    [STORE_PENDING_APPROVED] = "approved",   [STORE_PENDING_SIGNING] = "signing",
    [STORE_PENDING_ISSUED] = "issued",       [STORE_PENDING_REJECTED] = "rejected",
    [STORE_PENDING_DELIVERED] = "delivered",
};

// The reason a rejection carries, before the operator's text.
#define TOOL_REJECT_PREFIX "rejected by the CA operator"
#define TOOL_REASON_MAX    256u

static const char *tool_pending_state_name(store_pending_state s)
{
    return (unsigned)s < STORE_PENDING_NUM_STATES ? k_state_names[s] : "?";
}

// tool_age_text writes the age |s| (seconds) as "42s", "3m12s", "5h07m" or "2d03h".
static void tool_age_text(char *out, size_t cap, int64_t s)
{
    if (s < 0) {
        s = 0;
    }
    if (s < 60) {
        (void)snprintf(out, cap, "%llds", (long long)s);
    } else if (s < 3600) {
        (void)snprintf(out, cap, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    } else if (s < 86400) {
        (void)snprintf(out, cap, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    } else {
        (void)snprintf(out, cap, "%lldd%02lldh", (long long)(s / 86400),
                       (long long)(s % 86400 / 3600));
    }
}

typedef struct tool_pending_ctx {
    bool json;
    int64_t now;
    size_t count;
} tool_pending_ctx;

static bool tool_pending_row(void *ctx, const store_pending *p)
{
    tool_pending_ctx *l = ctx;
    char age[32];
    tool_age_text(age, sizeof(age), l->now - p->created_at);
    const char *profile = p->profile != NULL ? p->profile : "-";
    const char *requester = p->requester != NULL ? p->requester : "-";
    if (!l->json) {
        printf("%lld  %-9s  %7s  %s  %s  %s  %s  %s\n", (long long)p->id,
               tool_pending_state_name(p->state), age, p->ca, profile, p->key_type, p->subject,
               requester);
    } else {
        char created[32], expires[32];
        tool_time_text(created, sizeof(created), p->created_at);
        tool_time_text(expires, sizeof(expires), p->expires_at);
        printf("%s\n  {\"id\": %lld, \"state\": \"%s\", \"why\": \"%s\", \"ca\": ",
               l->count == 0 ? "" : ",", (long long)p->id, tool_pending_state_name(p->state),
               p->why == STORE_PENDING_WHY_APPROVAL ? "approval" : "load");
        tool_json_string(stdout, p->ca);
        printf(", \"profile\": ");
        tool_json_string(stdout, profile);
        printf(", \"subject\": ");
        tool_json_string(stdout, p->subject);
        printf(", \"key\": ");
        tool_json_string(stdout, p->key_type);
        printf(", \"requester\": ");
        tool_json_string(stdout, requester);
        printf(", \"age_s\": %lld, \"created\": \"%s\", \"expires\": \"%s\"",
               (long long)(l->now - p->created_at), created, expires);
        if (p->state == STORE_PENDING_REJECTED && p->status_text != NULL) {
            printf(", \"reason\": ");
            tool_json_string(stdout, p->status_text);
        }
        printf("}");
    }
    l->count++;
    return true;
}

int tool_pending(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint pending -c CONF [--ca NAME] [--state STATE] [--all] [--json]\n"
        "  Lists the requests that wait (delayed delivery), oldest first, one a line:\n"
        "    ID  STATE  AGE  CA  PROFILE  KEY  SUBJECT  REQUESTER\n"
        "  STATE is approval (waits for certmint approve or reject), queued (accepted under\n"
        "  load), approved, signing, issued or rejected (the answer waits for the client's\n"
        "  pollReq) or delivered (shown with --all only). --state shows one state; --json\n"
        "  prints a JSON array of objects (id, state, why, ca, profile, subject, key,\n"
        "  requester, age_s, created, expires, reason).\n"
        "  Exit: 0 ok (also when nothing waits), 1 failed, 2 usage.\n";
    const char *conf = NULL, *ca = NULL, *state = NULL, *pos[1];
    bool json = false, all = false;
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL},   {"--config", &conf, NULL},
                             {"--ca", &ca, NULL},   {"--state", &state, NULL},
                             {"--all", NULL, &all}, {"--json", NULL, &json}};
    int pr = tool_args_parse(argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), pos, 0, &np,
                             "certmint pending", help);
    if (pr >= 0) {
        return pr;
    }
    store_pending_filter f = {.states = all ? 0u
                                            : ((1u << STORE_PENDING_NUM_STATES) - 1u) &
                                                  ~(1u << STORE_PENDING_DELIVERED)};
    if (state != NULL) {
        size_t i = 0;
        while (i < STORE_PENDING_NUM_STATES && strcmp(state, k_state_names[i]) != 0) {
            i++;
        }
        if (i == STORE_PENDING_NUM_STATES) {
            fprintf(stderr,
                    "certmint pending: --state '%s': use approval, queued, approved, signing, "
                    "issued, rejected or delivered\n",
                    state);
            return 2;
        }
        f.states = 1u << i;
    }
    if (conf == NULL) {
        fprintf(stderr, "certmint pending: -c CONF is required (see --help)\n");
        return 2;
    }
    tool_inst t = {.cmd = "certmint pending"};
    int rc = 1;
    if (!tool_inst_open_cfg(&t, conf)) {
        goto out;
    }
    if (ca != NULL) {
        const cfg_ca *c = tool_inst_pick_ca(&t, ca);
        if (c == NULL) {
            goto out;
        }
        f.ca = c->name;
    }
    if (!tool_inst_open_store(&t)) {
        goto out;
    }
    tool_pending_ctx l = {.json = json, .now = cm_time_now()};
    if (json) {
        printf("[");
    }
    const cm_result r = store_pending_list(t.rd, &f, tool_pending_row, &l);
    if (json) {
        printf("%s]\n", l.count == 0 ? "" : "\n");
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "certmint pending: reading the store failed: %s\n", cm_result_name(r));
        goto out;
    }
    rc = 0;
out:
    tool_inst_close(&t);
    return rc;
}

// tool_pending_id reads a pending request's id (a positive decimal number).
static bool tool_pending_id(const char *text, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v <= 0 || text[0] == '+') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

// tool_decide is approve and reject: |reason| NULL approves, otherwise rejects with it.
static int tool_decide(const char *cmd, const char *conf, const char *id_text, const char *reason)
{
    int64_t id = 0;
    if (!tool_pending_id(id_text, &id)) {
        fprintf(stderr,
                "%s: '%s' is not the id of a pending request (certmint pending -c %s "
                "lists them)\n",
                cmd, id_text, conf);
        return 2;
    }
    tool_inst t = {.cmd = cmd};
    cm_arena a;
    cm_arena_init(&a, 0, 0);
    int rc = 1;
    if (!tool_inst_open_cfg(&t, conf) || !tool_inst_open_store(&t)) {
        goto out;
    }
    store_pending p;
    cm_result r = store_pending_get_id(t.rd, &a, &p, id);
    if (r.code == STORE_E_PENDING_UNKNOWN) {
        fprintf(stderr, "%s: no pending request %lld (certmint pending -c %s lists them)\n", cmd,
                (long long)id, conf);
        goto out;
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: reading the store failed: %s\n", cmd, cm_result_name(r));
        goto out;
    }
    char text[TOOL_REASON_MAX + sizeof(TOOL_REJECT_PREFIX) + 4];
    if (reason != NULL) {
        (void)snprintf(text, sizeof(text), "%s%s%s", TOOL_REJECT_PREFIX,
                       reason[0] != '\0' ? ": " : "", reason);
    }
    store_job job;
    store_job_init(&job, STORE_OP_PENDING_DECIDE, NULL);
    job.u.pop = (store_pending_op){.id = id,
                                   .time = cm_time_now(),
                                   .approve = reason == NULL,
                                   .fail_info = cm_code_failinfo(SRV_E_OPERATOR_REJECTED),
                                   .status_text = reason != NULL ? text : NULL,
                                   .keep_s = t.cfg->waiting_timeout};
    r = store_run(t.st, &job);
    if (r.code == STORE_E_PENDING_STATE || r.code == STORE_E_PENDING_UNKNOWN) {
        // Decided meanwhile, or not in a state this decision applies to: say where it is.
        store_pending now;
        const bool read = cm_ok(store_pending_get_id(t.rd, &a, &now, id));
        const store_pending_state s = read ? now.state : p.state;
        const bool issued = (read ? now.fail_info : p.fail_info) < 0;
        const char *hint =
            s == STORE_PENDING_QUEUED ? "it waits because the CA was busy, not for approval"
            : s == STORE_PENDING_ISSUED || s == STORE_PENDING_DELIVERED
                ? (issued ? "its certificate is issued (certmint revoke withdraws it)"
                          : "it was rejected")
            : s == STORE_PENDING_REJECTED ? "it was rejected"
                                          : "it was decided already";
        fprintf(stderr, "%s: pending request %lld is %s: %s\n", cmd, (long long)id,
                tool_pending_state_name(s), hint);
        goto out;
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: the store refused: %s\n", cmd, cm_result_name(r));
        goto out;
    }
    if (reason == NULL) {
        printf("approved pending request %lld (ca %s, %s): the daemon signs it; the client's "
               "next pollReq gets the certificate\n",
               (long long)id, p.ca, p.subject);
    } else {
        printf("rejected pending request %lld (ca %s, %s): the client's next pollReq gets the "
               "rejection \"%s\"\n",
               (long long)id, p.ca, p.subject, text);
    }
    rc = 0;
out:
    cm_arena_cleanup(&a);
    tool_inst_close(&t);
    return rc;
}

int tool_approve(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint approve -c CONF ID\n"
        "  Approves the pending request ID (certmint pending lists them; state approval):\n"
        "  the daemon signs and records its certificate within a second, and the client's\n"
        "  next pollReq gets it. The daemon keeps running.\n"
        "  Exit: 0 ok, 1 unknown ID, not waiting for approval, or failed, 2 usage.\n";
    const char *conf = NULL, *pos[1];
    size_t np;
    const tool_opt opts[] = {{"-c", &conf, NULL}, {"--config", &conf, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 2, pos, 1, &np, "certmint approve", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint approve: -c CONF and ID are required (see --help)\n");
        return 2;
    }
    return tool_decide("certmint approve", conf, pos[0], NULL);
}

int tool_reject(int argc, char **argv)
{
    static const char help[] =
        "usage: certmint reject -c CONF ID [--reason TEXT]\n"
        "  Rejects the pending request ID (certmint pending lists them) before its\n"
        "  certificate is issued: what its reservation held (serial, key, the secret's use)\n"
        "  is given back, and the client's next pollReq gets a rejection (failInfo\n"
        "  notAuthorized) whose statusString is \"rejected by the CA operator: TEXT\".\n"
        "  TEXT: at most 256 characters, no control characters.\n"
        "  Exit: 0 ok, 1 unknown ID, decided or issued already, or failed, 2 usage.\n";
    const char *conf = NULL, *reason = "", *pos[1];
    size_t np;
    const tool_opt opts[] = {
        {"-c", &conf, NULL}, {"--config", &conf, NULL}, {"--reason", &reason, NULL}};
    int pr = tool_args_parse(argc, argv, 2, opts, 3, pos, 1, &np, "certmint reject", help);
    if (pr >= 0) {
        return pr;
    }
    if (conf == NULL || np != 1) {
        fprintf(stderr, "certmint reject: -c CONF and ID are required (see --help)\n");
        return 2;
    }
    const size_t len = strlen(reason);
    bool control = false;
    for (size_t i = 0; i < len; i++) {
        control |= (unsigned char)reason[i] < 0x20 || reason[i] == 0x7f;
    }
    if (len > TOOL_REASON_MAX || control) {
        fprintf(stderr,
                "certmint reject: --reason must be at most %u characters without control "
                "characters\n",
                TOOL_REASON_MAX);
        return 2;
    }
    return tool_decide("certmint reject", conf, pos[0], reason);
}
