// certmint store copy: an instance's whole store into another store, e.g. from SQLite into the
// PostgreSQL database that several certmintd nodes will share, with the row counts compared
// afterwards.
#include <stdio.h>
#include <string.h>

#include "tools/certmint/tool.h"

// tool_store_open opens the store at |url| with a reader; false after saying why.
static bool tool_store_open(const char *cmd, const char *what, const char *url, store **out_st,
                            store_reader **out_rd)
{
    cm_result r = store_open(out_st, url, NULL);
    if (cm_ok(r)) {
        r = store_reader_open(*out_st, out_rd);
    }
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: cannot open the %s store %s: %s\n", cmd, what, url, cm_result_name(r));
        return false;
    }
    return true;
}

// tool_store_status_counts counts certificates by status (index: store_cert_status).
static bool tool_store_status_counts(store_reader *rd, uint64_t out[4])
{
    for (int s = 0; s < 4; s++) {
        store_filter f = {.status = (store_cert_status)s};
        if (!cm_ok(store_cert_count(rd, &f, &out[s]))) {
            return false;
        }
    }
    return true;
}

static int tool_store_copy(int argc, char **argv)
{
    static const char cmd[] = "certmint store copy";
    static const char help[] =
        "usage: certmint store copy --from URL --to URL [--force]\n"
        "  Copies every certificate (statuses and revocations as they are), every CMP\n"
        "  transaction (with its reservation), every waiting request (delayed delivery),\n"
        "  every CA's CRL state and every credential's count from one store into another,\n"
        "  then compares the row counts of both. A URL is what [certmintd] store takes: "
        "sqlite:PATH or a\n"
        "  PostgreSQL connection string (postgresql://USER@HOST/DB?..., the password in a\n"
        "  passfile or PGPASSFILE). The target's schema is created if needed. A target that\n"
        "  holds rows is refused unless --force, which empties it first. Stop certmintd on\n"
        "  the source first: what it writes during the copy would be missed.\n"
        "  Example: certmint store copy --from sqlite:/var/lib/certmint/certmint.db \\\n"
        "             --to 'postgresql://certmint@db/certmint?passfile=/etc/certmint/pgpass'\n"
        "  Exit: 0 copied and verified, 1 failed, 2 usage.\n";
    const char *from = NULL, *to = NULL, *pos[1];
    bool force = false;
    size_t np;
    const tool_opt opts[] = {
        {"--from", &from, NULL}, {"--to", &to, NULL}, {"--force", NULL, &force}};
    int pr = tool_args_parse(argc, argv, 3, opts, sizeof(opts) / sizeof(opts[0]), pos, 0, &np, cmd,
                             help);
    if (pr >= 0) {
        return pr;
    }
    if (from == NULL || to == NULL) {
        fprintf(stderr, "%s: --from and --to are required (see --help)\n", cmd);
        return 2;
    }
    if (strcmp(from, to) == 0) {
        fprintf(stderr, "%s: --from and --to name the same store\n", cmd);
        return 2;
    }
    store *src = NULL, *dst = NULL;
    store_reader *rs = NULL, *rd = NULL;
    int rc = 1;
    store_copy_counts want, had, copied = {0}, got;
    uint64_t want_status[4], got_status[4];
    if (!tool_store_open(cmd, "source", from, &src, &rs) ||
        !tool_store_open(cmd, "target", to, &dst, &rd)) {
        goto out;
    }
    cm_result r = store_copy_count(rs, &want);
    if (cm_ok(r)) {
        r = store_copy_count(rd, &had);
    }
    if (!cm_ok(r) || !tool_store_status_counts(rs, want_status)) {
        fprintf(stderr, "%s: cannot count the rows: %s\n", cmd, cm_result_name(r));
        goto out;
    }
    const bool filled = had.certs + had.txns + had.crl_states + had.uses + had.pending != 0;
    if (filled && !force) {
        fprintf(stderr,
                "%s: the target already holds %llu certificates, %llu transactions, %llu "
                "CRL states and %llu waiting requests: pass --force to empty it first\n",
                cmd, (unsigned long long)had.certs, (unsigned long long)had.txns,
                (unsigned long long)had.crl_states, (unsigned long long)had.pending);
        goto out;
    }
    r = store_copy(dst, rs, filled, &copied);
    if (!cm_ok(r)) {
        fprintf(stderr, "%s: the copy failed after %llu certificates: %s\n", cmd,
                (unsigned long long)copied.certs, cm_result_name(r));
        goto out;
    }
    r = store_copy_count(rd, &got);
    if (!cm_ok(r) || !tool_store_status_counts(rd, got_status)) {
        fprintf(stderr, "%s: cannot count the copied rows: %s\n", cmd, cm_result_name(r));
        goto out;
    }
    if (memcmp(&got, &want, sizeof(got)) != 0 ||
        memcmp(got_status, want_status, sizeof(got_status)) != 0) {
        fprintf(stderr,
                "%s: the counts differ: source %llu/%llu/%llu/%llu/%llu, target "
                "%llu/%llu/%llu/%llu/%llu (certificates/transactions/CRL states/credential "
                "counts/waiting requests), or by status\n",
                cmd, (unsigned long long)want.certs, (unsigned long long)want.txns,
                (unsigned long long)want.crl_states, (unsigned long long)want.uses,
                (unsigned long long)want.pending, (unsigned long long)got.certs,
                (unsigned long long)got.txns, (unsigned long long)got.crl_states,
                (unsigned long long)got.uses, (unsigned long long)got.pending);
        goto out;
    }
    printf("copied %llu certificates (%llu valid, %llu unconfirmed, %llu revoked, %llu on hold), "
           "%llu transactions and %llu CRL states into %s store; counts verified\n",
           (unsigned long long)got.certs, (unsigned long long)got_status[STORE_CERT_VALID],
           (unsigned long long)got_status[STORE_CERT_UNCONFIRMED],
           (unsigned long long)got_status[STORE_CERT_REVOKED],
           (unsigned long long)got_status[STORE_CERT_HOLD], (unsigned long long)got.txns,
           (unsigned long long)got.crl_states, store_backend_name(dst));
    printf("  with %llu waiting requests (delayed delivery) and %llu credential counts\n",
           (unsigned long long)got.pending, (unsigned long long)got.uses);
    rc = 0;
out:
    store_reader_close(rs);
    store_reader_close(rd);
    store_close(src);
    store_close(dst);
    return rc;
}

int tool_store(int argc, char **argv)
{
    static const char help[] = "usage: certmint store copy --from URL --to URL [--force]\n"
                               "  Run 'certmint store copy --help' for details.\n";
    if (argc >= 3 && strcmp(argv[2], "copy") == 0) {
        return tool_store_copy(argc, argv);
    }
    if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
        fputs(help, stdout);
        return 0;
    }
    fprintf(stderr, "certmint store: %s (want: copy)\n",
            argc >= 3 ? "unknown action" : "no action");
    fputs(help, stderr);
    return 2;
}
