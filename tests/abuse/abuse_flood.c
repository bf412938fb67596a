// tests/abuse/abuse_flood.c: the request floods of tests/abuse/run.sh (issue 23), in C so that
// the attacker spends little of the machine's CPU on itself (the server's share is what is
// measured; the Python attackers in abuse.py do the same more slowly).
//
//   abuse-flood --port P [--host H] [--source ADDR] [--conns N] [--duration S]
//               [--path PATH] (--body FILE | --garbage)
//
// N connections, each posting a request as soon as the previous one is answered: the DER of
// --body FILE every time (a wrong-MAC request, tests/abuse/abuse.py mkmac), or --garbage random
// bytes (64..2048) as application/pkixcmp. A connection the server closes (it closes after a
// rejection) is opened again at once. Ends after --duration seconds or on SIGTERM and prints
// one JSON line: requests sent, answered, by HTTP status, connection errors, requests a second.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FLOOD_MAX_CONNS 256
#define FLOOD_IN_CAP    65536

typedef struct flood_conn {
    int fd;
    uint8_t *out;
    size_t out_len, out_off;
    uint8_t in[FLOOD_IN_CAP];
    size_t in_len;
} flood_conn;

static volatile sig_atomic_t g_stop;

static void flood_on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static struct {
    const char *host, *source, *path, *body_path;
    int port, conns;
    double duration;
    bool garbage;
    uint8_t *body;
    size_t body_len;
    struct sockaddr_in dst, src;
    int ep;
    uint64_t sent, answered, errors, status[6]; // status[k]: kxx
} g;

static double flood_now(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// flood_request builds the next request of |c| (the head and a body).
static void flood_request(flood_conn *c)
{
    uint8_t rnd[2048];
    const uint8_t *body = g.body;
    size_t len = g.body_len;
    if (g.garbage) {
        uint16_t n = 0;
        if (getrandom(&n, sizeof(n), 0) != (ssize_t)sizeof(n)) {
            n = 1000;
        }
        len = 64u + n % (sizeof(rnd) - 64u);
        if (getrandom(rnd, len, 0) != (ssize_t)len) {
            memset(rnd, 0x30, len);
        }
        body = rnd;
    }
    char head[512];
    const int h = snprintf(head, sizeof(head),
                           "POST %s HTTP/1.1\r\nHost: ca\r\nContent-Type: application/pkixcmp\r\n"
                           "Content-Length: %zu\r\n\r\n",
                           g.path, len);
    free(c->out);
    c->out = malloc((size_t)h + len);
    if (c->out == NULL) {
        exit(2);
    }
    memcpy(c->out, head, (size_t)h);
    memcpy(c->out + h, body, len);
    c->out_len = (size_t)h + len;
    c->out_off = 0;
    c->in_len = 0;
}

static void flood_close(flood_conn *c)
{
    if (c->fd >= 0) {
        (void)close(c->fd);
        c->fd = -1;
    }
}

static bool flood_open(flood_conn *c, size_t i)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return false;
    }
    const int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if ((g.source != NULL && bind(c->fd, (const struct sockaddr *)&g.src, sizeof(g.src)) != 0) ||
        (connect(c->fd, (const struct sockaddr *)&g.dst, sizeof(g.dst)) != 0 &&
         errno != EINPROGRESS)) {
        flood_close(c);
        return false;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = i};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        flood_close(c);
        return false;
    }
    flood_request(c);
    return true;
}

// flood_answered reports whether |c|'s input holds one whole response (Content-Length bytes
// after the head); sets *close_after when the server says it closes.
static bool flood_answered(flood_conn *c, bool *close_after)
{
    const uint8_t *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (end == NULL) {
        return false;
    }
    const size_t head = (size_t)(end + 4 - c->in);
    size_t clen = 0;
    const char *cl = memmem(c->in, head, "Content-Length: ", 16);
    if (cl != NULL) {
        clen = strtoul(cl + 16, NULL, 10);
    }
    *close_after = memmem(c->in, head, "Connection: close", 17) != NULL;
    if (c->in_len < head + clen) {
        return false;
    }
    const int st = c->in_len > 12 ? atoi((const char *)c->in + 9) : 0;
    if (st >= 100 && st < 600) {
        g.status[st / 100]++;
    }
    return true;
}

static void flood_event(flood_conn *c, size_t i, uint32_t events)
{
    if ((events & EPOLLOUT) != 0 && c->out_off < c->out_len) {
        const ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            g.errors++;
            flood_close(c);
            return;
        }
        if (n > 0) {
            c->out_off += (size_t)n;
            if (c->out_off == c->out_len) {
                g.sent++;
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
                (void)epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) == 0) {
        return;
    }
    const ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
    if (n < 0 && errno == EAGAIN) {
        return;
    }
    if (n <= 0) {
        if (c->out_off < c->out_len || c->in_len > 0) {
            g.errors++; // closed before the answer
        }
        flood_close(c);
        return;
    }
    c->in_len += (size_t)n;
    bool close_after = false;
    if (!flood_answered(c, &close_after)) {
        if (c->in_len == sizeof(c->in)) {
            flood_close(c);
        }
        return;
    }
    g.answered++;
    if (close_after) {
        flood_close(c);
        return;
    }
    flood_request(c);
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = i};
    (void)epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int flood_usage(void)
{
    (void)fprintf(stderr, "usage: abuse-flood --port P [--host H] [--source ADDR] [--conns N] "
                          "[--duration S] [--path PATH] (--body FILE | --garbage)\n");
    return 2;
}

static bool flood_args(int argc, char **argv)
{
    g.host = "127.0.0.1";
    g.path = "/.well-known/cmp/p/devices";
    g.conns = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--garbage") == 0) {
            g.garbage = true;
            continue;
        }
        if (v == NULL) {
            return false;
        }
        i++;
        if (strcmp(a, "--port") == 0) {
            g.port = atoi(v);
        } else if (strcmp(a, "--host") == 0) {
            g.host = v;
        } else if (strcmp(a, "--source") == 0) {
            g.source = v;
        } else if (strcmp(a, "--conns") == 0) {
            g.conns = atoi(v);
        } else if (strcmp(a, "--duration") == 0) {
            g.duration = atof(v);
        } else if (strcmp(a, "--path") == 0) {
            g.path = v;
        } else if (strcmp(a, "--body") == 0) {
            g.body_path = v;
        } else {
            return false;
        }
    }
    return g.port > 0 && g.port < 65536 && g.conns > 0 && g.conns <= FLOOD_MAX_CONNS &&
           (g.garbage != (g.body_path != NULL));
}

static bool flood_read_body(void)
{
    FILE *f = fopen(g.body_path, "rb");
    if (f == NULL) {
        return false;
    }
    g.body = malloc(1 << 20);
    g.body_len = g.body != NULL ? fread(g.body, 1, 1 << 20, f) : 0;
    (void)fclose(f);
    return g.body_len > 0;
}

int main(int argc, char **argv)
{
    if (!flood_args(argc, argv) || (g.body_path != NULL && !flood_read_body())) {
        return flood_usage();
    }
    g.dst.sin_family = AF_INET;
    g.dst.sin_port = htons((uint16_t)g.port);
    g.src.sin_family = AF_INET;
    if (inet_pton(AF_INET, g.host, &g.dst.sin_addr) != 1 ||
        (g.source != NULL && inet_pton(AF_INET, g.source, &g.src.sin_addr) != 1)) {
        return flood_usage();
    }
    (void)signal(SIGTERM, flood_on_term);
    (void)signal(SIGINT, flood_on_term);
    (void)signal(SIGPIPE, SIG_IGN);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    static flood_conn conns[FLOOD_MAX_CONNS];
    for (int i = 0; i < g.conns; i++) {
        conns[i].fd = -1;
    }
    const double t0 = flood_now();
    const double end = g.duration > 0 ? t0 + g.duration : 1e300;
    while (!g_stop && flood_now() < end) {
        for (int i = 0; i < g.conns; i++) {
            if (conns[i].fd < 0 && !flood_open(&conns[i], (size_t)i)) {
                g.errors++;
            }
        }
        struct epoll_event evs[FLOOD_MAX_CONNS];
        const int n = epoll_wait(g.ep, evs, FLOOD_MAX_CONNS, 100);
        for (int k = 0; k < n; k++) {
            const size_t i = (size_t)evs[k].data.u64;
            if (conns[i].fd >= 0) {
                flood_event(&conns[i], i, evs[k].events);
            }
        }
    }
    const double secs = flood_now() - t0;
    printf("{\"attack\": \"%s\", \"sent\": %llu, \"answered\": %llu, \"errors\": %llu, "
           "\"status\": {\"2xx\": %llu, \"4xx\": %llu, \"5xx\": %llu}, \"per_s\": %.0f}\n",
           g.garbage ? "garbage" : "macflood", (unsigned long long)g.sent,
           (unsigned long long)g.answered, (unsigned long long)g.errors,
           (unsigned long long)g.status[2], (unsigned long long)g.status[4],
           (unsigned long long)g.status[5], secs > 0 ? (double)g.sent / secs : 0.0);
    return 0;
}
