// certmintd: the CMP CA daemon. engine/front does the work: it loads the configuration, opens
// the PKCS#11 token and the store, builds the engine (engine/server) and serves CMP over
// HTTP/1.1 on io_uring loops (engine/net, engine/http). This file keeps the arguments, the
// signals and the maintenance loop.
//
//   certmintd -c FILE [--check] [--log FILE] [--listen ADDR]
//
// Runs in the foreground and logs to stderr, or to the file of --log. SIGTERM/SIGINT stop it
// gracefully (no new connections, requests in flight answered, the store flushed); SIGHUP
// reopens the --log file (after log rotation) and reloads the trust anchors' CRLs
// (trust_crls); the rest of the configuration is read only at start.
//
// Under systemd (Type=notify, NOTIFY_SOCKET set) it reports through sd_notify (libsystemd):
// READY=1 once the store, the HSM pool and the listeners are up (so /healthz answers),
// STATUS= with a one-line summary refreshed by the maintenance loop, STOPPING=1 on SIGTERM,
// and, when WatchdogSec= is set (WATCHDOG_USEC), WATCHDOG=1 every half period but only while
// every I/O loop takes the front's probe (front_daemon_loops_alive), so a wedged loop gets the
// daemon restarted. Without NOTIFY_SOCKET every sd_notify is a no-op.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
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
               "              (for log rotation) and reloads the trust_crls files\n"
               "  --listen ADDR  serve on ADDR (host:port, [v6]:port, or https://host:port with\n"
               "                 tls_cert/tls_key) instead of the configured listen addresses\n"
               "Runs in the foreground. SIGTERM or SIGINT stops it gracefully: no new\n"
               "connections, requests in flight answered, the store flushed.\n");
}

// main_status sends systemd a STATUS= line: the enrolment rate since the previous call (|*prev|
// and |*prev_ns| carry it between calls), the HSM sessions and queue, the totals.
static void main_status(const front_daemon *d, uint64_t *prev, uint64_t *prev_ns)
{
    front_status st;
    front_daemon_status(d, &st);
    const uint64_t now = cm_time_mono_ns();
    const double secs = *prev_ns != 0 ? (double)(now - *prev_ns) / 1e9 : 0;
    const double rate = secs > 0 ? (double)(st.enrolments - *prev) / secs : 0;
    (void)sd_notifyf(0,
                     "STATUS=%.1f enrolments/s, %u HSM sessions (%zu signatures queued), "
                     "%llu enrolments and %llu requests since start",
                     rate, st.hsm_sessions, st.hsm_queued, (unsigned long long)st.enrolments,
                     (unsigned long long)st.requests);
    *prev = st.enrolments;
    *prev_ns = now;
}

// main_serve runs the started daemon until SIGTERM or SIGINT: the main thread takes the
// signals, runs the maintenance duties (certConf sweep, transaction expiry, CRLs) every
// MAIN_MAINTAIN_S and refreshes systemd's STATUS= after them, and with a watchdog probes the
// I/O loops every half watchdog period, sending WATCHDOG=1 when all of them answered.
static void main_serve(front_daemon *d, const sigset_t *sigs, const char *log_path)
{
    front_daemon_refresh_crls(d);
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) <= 0) {
        wd_usec = 0;
    }
    // The period of the main thread's wake-ups: the maintenance period, or half the watchdog's.
    uint64_t tick_ns = (uint64_t)MAIN_MAINTAIN_S * 1000000000u;
    if (wd_usec > 0 && wd_usec * 500u < tick_ns) {
        tick_ns = wd_usec * 500u;
    }
    if (wd_usec > 0) {
        cm_log(CM_LOG_INFO, "certmintd: systemd watchdog every %llu ms",
               (unsigned long long)(wd_usec / 1000u));
        (void)front_daemon_loops_alive(d); // the first probes
    }
    uint64_t enrolled = 0, status_ns = 0;
    main_status(d, &enrolled, &status_ns);
    uint64_t next_maintain = cm_time_mono_ns() + (uint64_t)MAIN_MAINTAIN_S * 1000000000u;
    bool wedged = false;
    for (;;) {
        struct timespec ts = {.tv_sec = (time_t)(tick_ns / 1000000000u),
                              .tv_nsec = (long)(tick_ns % 1000000000u)};
        const int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            (void)sd_notify(0, "STOPPING=1\nSTATUS=stopping: answering the requests in flight");
            cm_log(CM_LOG_INFO, "certmintd: %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return;
        }
        if (sig == SIGHUP) {
            if (log_path != NULL && main_log_open(log_path)) {
                cm_log(CM_LOG_INFO, "certmintd: SIGHUP: reopened %s", log_path);
            }
            front_daemon_reload_crls(d);
            continue;
        }
        if (wd_usec > 0) {
            const bool alive = front_daemon_loops_alive(d);
            if (alive) {
                (void)sd_notify(0, "WATCHDOG=1");
            } else if (!wedged) {
                cm_log(CM_LOG_WARN,
                       "certmintd: an I/O loop has not turned for %llu ms; the "
                       "watchdog is not told that all is well",
                       (unsigned long long)(tick_ns / 1000000u));
            }
            wedged = !alive;
        }
        if (cm_time_mono_ns() >= next_maintain) {
            front_daemon_maintain(d, cm_time_now());
            main_status(d, &enrolled, &status_ns);
            next_maintain = cm_time_mono_ns() + (uint64_t)MAIN_MAINTAIN_S * 1000000000u;
        }
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
        if (!check_only) {
            (void)sd_notifyf(0, "STATUS=failed: %s", err);
        }
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
        (void)sd_notifyf(0, "STATUS=failed: %s", err);
        front_daemon_free(d);
        return 1;
    }
    // The store, the HSM pool and the listeners are up, and every loop serves.
    front_status st;
    front_daemon_status(d, &st);
    (void)sd_notifyf(0, "READY=1\nSTATUS=serving %zu CA(s) with %u HSM session(s)",
                     front_daemon_num_cas(d), st.hsm_sessions);
    main_serve(d, &sigs, log_path);
    front_daemon_stop(d);
    front_daemon_free(d); // closes the store after everything queued committed
    cm_log(CM_LOG_INFO, "certmintd: stopped");
    return 0;
}
