// certmintd: the CMP CA daemon. engine/front does the work: it loads the configuration, opens
// the PKCS#11 token and the store, builds the engine (engine/server) and serves CMP over
// HTTP/1.1 on io_uring loops (engine/net, engine/http). This file keeps the arguments, the
// signals and the maintenance loop.
//
//   certmintd -c FILE [--check] [--log FILE] [--listen ADDR]
//
// Runs in the foreground and logs to stderr, or to the file of --log. SIGTERM/SIGINT stop it
// gracefully (no new connections, requests in flight answered, the store flushed); SIGHUP
// reopens the --log file (after log rotation) and is otherwise ignored.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/front/front.h"

#define MAIN_MAINTAIN_S 2 // the certConf sweep and transaction expiry period

// main_log_open sends log lines to |path| (appended). The file takes over descriptor 2 with
// dup2, so a SIGHUP after log rotation swaps the file under the same descriptor number while
// other threads may be writing: no write can ever land in a reused descriptor.
static bool main_log_open(const char *path)
{
    const int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "certmintd: cannot open log %s: %s\n", path, strerror(errno));
        return false;
    }
    const bool ok = dup2(fd, 2) == 2;
    (void)close(fd);
    return ok;
}

static void main_usage(FILE *f)
{
    fprintf(f, "usage: certmintd -c FILE [--check] [--log FILE] [--listen ADDR]\n"
               "  -c FILE   the configuration (OpenSSL config syntax, see README)\n"
               "  --check   validate the configuration and the HSM keys, then exit\n"
               "  --log FILE  append log lines to FILE instead of stderr; SIGHUP reopens it\n"
               "              (for log rotation)\n"
               "  --listen ADDR  serve on ADDR (host:port, [v6]:port) instead of the configured\n"
               "                 listen addresses\n"
               "Runs in the foreground. SIGTERM or SIGINT stops it gracefully: no new\n"
               "connections, requests in flight answered, the store flushed.\n");
}

// main_serve runs the started daemon until SIGTERM or SIGINT: the main thread takes the
// signals and runs the maintenance duties (certConf sweep, transaction expiry, CRLs).
static void main_serve(front_daemon *d, const sigset_t *sigs, const char *log_path)
{
    front_daemon_refresh_crls(d);
    for (;;) {
        struct timespec ts = {.tv_sec = MAIN_MAINTAIN_S, .tv_nsec = 0};
        const int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            cm_log(CM_LOG_INFO, "certmintd: %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return;
        }
        if (sig == SIGHUP) {
            if (log_path != NULL && main_log_open(log_path)) {
                cm_log(CM_LOG_INFO, "certmintd: SIGHUP: reopened %s", log_path);
            }
            continue;
        }
        front_daemon_maintain(d, cm_time_now());
    }
}

int main(int argc, char **argv)
{
    const char *conf = NULL;
    const char *listen_override = NULL;
    const char *log_path = NULL;
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            conf = argv[++i];
        } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
            log_path = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_override = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            main_usage(stdout);
            return 0;
        } else {
            main_usage(stderr);
            return 2;
        }
    }
    if (conf == NULL) {
        main_usage(stderr);
        return 2;
    }
    if (!cm_ok(cm_runtime_init())) {
        fprintf(stderr, "certmintd: cannot initialise OpenSSL\n");
        return 1;
    }
    // Signals are taken by sigtimedwait in main_serve; every thread inherits the blocked mask.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    (void)pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    (void)signal(SIGPIPE, SIG_IGN);

    if (log_path != NULL && !main_log_open(log_path)) {
        return 1;
    }
    char err[1024];
    front_daemon *d = NULL;
    if (!cm_ok(front_daemon_load(&d, err, sizeof(err), conf))) {
        fprintf(stderr, "certmintd: %s\n", err);
        return 1;
    }
    if (check_only) {
        front_daemon_report(d, stdout);
        front_daemon_free(d);
        return 0;
    }
    if (!cm_ok(front_daemon_start(d, err, sizeof(err))) ||
        !cm_ok(front_daemon_serve(d, err, sizeof(err), listen_override))) {
        fprintf(stderr, "certmintd: %s\n", err);
        front_daemon_free(d);
        return 1;
    }
    main_serve(d, &sigs, log_path);
    front_daemon_stop(d);
    front_daemon_free(d); // closes the store after everything queued committed
    cm_log(CM_LOG_INFO, "certmintd: stopped");
    return 0;
}
