// seccomp_run: runs a program under the seccomp filter that certmintd.service asks systemd for,
// so the test suite catches a unit whose filter breaks certmintd (io_uring above all) without
// systemd as PID 1.
//
//   seccomp_run --syscalls FILE [--families AF_INET,AF_INET6,AF_UNIX] [--mdwe] -- PROG ARGS...
//
// --syscalls FILE   the allow-list, one system call name a line (tests/systemd/unit_filter.py
//                   derives it from the unit's SystemCallFilter= lines, expanding the @groups
//                   with systemd-analyze); every other call kills the process with SIGSYS, as
//                   systemd does without SystemCallErrorNumber=. Names this architecture lacks
//                   are skipped, as systemd skips them.
// --families LIST   RestrictAddressFamilies=: socket() with another family fails with
//                   EAFNOSUPPORT.
// --mdwe            MemoryDenyWriteExecute=: mmap with PROT_WRITE|PROT_EXEC, mprotect and
//                   pkey_mprotect adding PROT_EXEC and shmat with SHM_EXEC fail with EPERM.
//
// The filter is loaded with no_new_privs (needed without CAP_SYS_ADMIN, and what the unit's
// NoNewPrivileges=yes gives) and then PROG is executed. Exit: PROG's own status; 2 for a usage
// error, 1 when the filter cannot be built or PROG cannot be executed.
// Not emulated: RestrictNamespaces=, RestrictRealtime=, LockPersonality= (also seccomp in
// systemd, but nothing in certmintd comes near them) and everything that is not seccomp.
#include <errno.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <unistd.h>

static int seccomp_usage(void)
{
    (void)fprintf(stderr, "usage: seccomp_run --syscalls FILE [--families AF_INET,...] [--mdwe] "
                          "-- PROG [ARGS...]\n");
    return 2;
}

// The address families RestrictAddressFamilies= may name (those certmint's unit could use).
static const struct {
    const char *name;
    int family;
} k_seccomp_families[] = {
    {"AF_UNIX", AF_UNIX},       {"AF_INET", AF_INET},     {"AF_INET6", AF_INET6},
    {"AF_NETLINK", AF_NETLINK}, {"AF_PACKET", AF_PACKET},
};

// seccomp_add_syscalls allows every call named in |path|; false after printing why.
static bool seccomp_add_syscalls(scmp_filter_ctx ctx, const char *path, bool families, bool mdwe,
                                 size_t *out_num)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        (void)fprintf(stderr, "seccomp_run: %s: %s\n", path, strerror(errno));
        return false;
    }
    char line[128];
    bool ok = true;
    *out_num = 0;
    while (ok && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }
        const int nr = seccomp_syscall_resolve_name(line);
        if (nr == __NR_SCMP_ERROR) {
            continue; // not a call of this architecture (arm_fadvise64_64, ...)
        }
        // The calls with argument rules get them below instead of an unconditional allow.
        if ((families && nr == SCMP_SYS(socket)) ||
            (mdwe && (nr == SCMP_SYS(mmap) || nr == SCMP_SYS(mprotect) ||
                      nr == SCMP_SYS(pkey_mprotect) || nr == SCMP_SYS(shmat)))) {
            continue;
        }
        const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc != 0 && rc != -EEXIST) {
            (void)fprintf(stderr, "seccomp_run: cannot allow %s: %s\n", line, strerror(-rc));
            ok = false;
        }
        (*out_num)++;
    }
    (void)fclose(f);
    return ok;
}

// seccomp_add_families allows socket() for the families in |list| and makes it fail with
// EAFNOSUPPORT for every other family value (one rule each: a rule compares an argument once).
static bool seccomp_add_families(scmp_filter_ctx ctx, const char *list)
{
    bool allowed[AF_MAX];
    memset(allowed, 0, sizeof(allowed));
    char buf[256];
    (void)snprintf(buf, sizeof(buf), "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok != NULL;
         tok = strtok_r(NULL, ", ", &save)) {
        bool known = false;
        for (size_t i = 0; i < sizeof(k_seccomp_families) / sizeof(k_seccomp_families[0]); i++) {
            if (strcmp(tok, k_seccomp_families[i].name) == 0) {
                allowed[k_seccomp_families[i].family] = true;
                known = true;
            }
        }
        if (!known) {
            (void)fprintf(stderr, "seccomp_run: unknown address family %s\n", tok);
            return false;
        }
    }
    int rc = 0;
    // The argument comparisons spelt out: libseccomp's SCMP_A0 leaves datum_b to the compiler,
    // which clang's -Wmissing-field-initializers (the tsan preset) refuses.
    for (int fam = 0; fam < AF_MAX && rc == 0; fam++) {
        const struct scmp_arg_cmp eq = {
            .arg = 0, .op = SCMP_CMP_EQ, .datum_a = (scmp_datum_t)fam, .datum_b = 0};
        rc = seccomp_rule_add(ctx, allowed[fam] ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EAFNOSUPPORT),
                              SCMP_SYS(socket), 1, eq);
    }
    if (rc == 0) {
        const struct scmp_arg_cmp ge = {
            .arg = 0, .op = SCMP_CMP_GE, .datum_a = (scmp_datum_t)AF_MAX, .datum_b = 0};
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, ge);
    }
    if (rc != 0) {
        (void)fprintf(stderr, "seccomp_run: socket rules: %s\n", strerror(-rc));
        return false;
    }
    return true;
}

// seccomp_add_masked adds |nr| allowed when argument |arg| & |mask| == 0 or another value below
// |mask| that is not |deny|, and failing with EPERM when it equals |deny|.
static int seccomp_add_masked(scmp_filter_ctx ctx, int nr, unsigned arg, scmp_datum_t mask,
                              scmp_datum_t deny)
{
    int rc = 0;
    // Every combination of the mask's bits gets its own rule, so the rules never overlap.
    for (scmp_datum_t v = 0; v <= mask && rc == 0; v++) {
        if ((v & ~mask) != 0) {
            continue;
        }
        const struct scmp_arg_cmp cmp = {arg, SCMP_CMP_MASKED_EQ, mask, v};
        rc = seccomp_rule_add_array(ctx, v == deny ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_ALLOW, nr, 1,
                                    &cmp);
    }
    return rc;
}

// seccomp_add_mdwe adds MemoryDenyWriteExecute='s argument rules.
static bool seccomp_add_mdwe(scmp_filter_ctx ctx)
{
    const scmp_datum_t wx = PROT_WRITE | PROT_EXEC;
    int rc = seccomp_add_masked(ctx, SCMP_SYS(mmap), 2, wx, wx);
    if (rc == 0) {
        rc = seccomp_add_masked(ctx, SCMP_SYS(mprotect), 2, PROT_EXEC, PROT_EXEC);
    }
    if (rc == 0) {
        rc = seccomp_add_masked(ctx, SCMP_SYS(pkey_mprotect), 2, PROT_EXEC, PROT_EXEC);
    }
    if (rc == 0) {
        rc = seccomp_add_masked(ctx, SCMP_SYS(shmat), 2, SHM_EXEC, SHM_EXEC);
    }
    if (rc != 0) {
        (void)fprintf(stderr, "seccomp_run: MemoryDenyWriteExecute rules: %s\n", strerror(-rc));
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    const char *syscalls = NULL;
    const char *families = NULL;
    bool mdwe = false;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--syscalls") == 0 && i + 1 < argc) {
            syscalls = argv[++i];
        } else if (strcmp(argv[i], "--families") == 0 && i + 1 < argc) {
            families = argv[++i];
        } else if (strcmp(argv[i], "--mdwe") == 0) {
            mdwe = true;
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            return seccomp_usage();
        }
    }
    if (syscalls == NULL || i >= argc) {
        return seccomp_usage();
    }
    // KILL_PROCESS, not KILL (the thread): an io_uring loop thread dying alone would hang.
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (ctx == NULL) {
        (void)fprintf(stderr, "seccomp_run: seccomp_init failed\n");
        return 1;
    }
    size_t num = 0;
    bool ok = seccomp_add_syscalls(ctx, syscalls, families != NULL, mdwe, &num) &&
              (families == NULL || seccomp_add_families(ctx, families)) &&
              (!mdwe || seccomp_add_mdwe(ctx));
    if (ok && num == 0) {
        (void)fprintf(stderr, "seccomp_run: %s allows no system call\n", syscalls);
        ok = false;
    }
    // execve itself must pass the filter: systemd allows it implicitly, so do we.
    if (ok) {
        const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(execve), 0);
        ok = rc == 0 || rc == -EEXIST;
    }
    if (ok) {
        const int rc = seccomp_load(ctx);
        if (rc != 0) {
            (void)fprintf(stderr, "seccomp_run: seccomp_load: %s\n", strerror(-rc));
            ok = false;
        }
    }
    seccomp_release(ctx);
    if (!ok) {
        return 1;
    }
    (void)execv(argv[i], argv + i);
    (void)fprintf(stderr, "seccomp_run: cannot run %s: %s\n", argv[i], strerror(errno));
    return 1;
}
