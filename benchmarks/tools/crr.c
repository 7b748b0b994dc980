/* Short TCP connections per second (connect, request, response, close), as netperf's
 * TCP_CRR measures them, for benchmarks/live_vs_ovs.py: the load generator must cost far
 * less than the datapath it measures (a Python client caps every peer near 10k/s).
 *
 *   crr server ADDR PORT
 *   crr client ADDR PORT SECONDS CONCURRENT   -> prints "<connections/s> <failures>"
 *
 * The server reads one request (up to 64 bytes), echoes it and closes; the client keeps
 * CONCURRENT connections in flight, each: connect, send 64 bytes, read 64 back, close.
 * Every wait is bounded: the client gives up on what is still in flight 5 s after the end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define EVENTS 256

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in address(const char *ip, const char *port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "crr: bad address %s\n", ip);
        exit(2);
    }
    return a;
}

static int server(struct sockaddr_in a) {
    int one = 1, ep = epoll_create1(0);
    int srv = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(srv, (struct sockaddr *)&a, sizeof a) || listen(srv, 4096)) {
        perror("crr server");
        return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = srv}, evs[EVENTS];
    epoll_ctl(ep, EPOLL_CTL_ADD, srv, &ev);
    char buf[MSG];
    for (;;) {
        int n = epoll_wait(ep, evs, EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == srv) {
                int c;
                while ((c = accept4(srv, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t got = recv(fd, buf, sizeof buf, 0);
            if (got < 0 && errno == EAGAIN)
                continue;
            if (got > 0 && send(fd, buf, (size_t)got, MSG_NOSIGNAL) < 0)
                got = -1;
            close(fd); /* closing removes it from the epoll set */
        }
    }
}

struct conn {
    int fd, got, sent;
};

static int ep;
static struct sockaddr_in target;

static int start(struct conn *c) {
    c->got = c->sent = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -1;
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static int client(double seconds, int concurrent) {
    struct conn *conns = calloc((size_t)concurrent, sizeof *conns);
    struct epoll_event evs[EVENTS];
    long done = 0, fails = 0, open = 0;
    char buf[MSG];
    memset(buf, 'x', sizeof buf);
    ep = epoll_create1(0);
    double t0 = now(), stop = t0 + seconds;
    for (int i = 0; i < concurrent; i++)
        if (start(&conns[i]) == 0)
            open++;
        else
            fails++;
    while (open > 0 && now() < stop + 5) {
        int n = epoll_wait(ep, evs, EVENTS, 500);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            int ok = -1; /* -1: not finished yet */
            if (!c->sent) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || send(c->fd, buf, MSG, MSG_NOSIGNAL) != MSG) {
                    ok = 0;
                } else {
                    c->sent = 1;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            } else {
                ssize_t got = recv(c->fd, buf, sizeof buf, 0);
                if (got > 0)
                    c->got += (int)got;
                if (c->got >= MSG)
                    ok = 1;
                else if (got == 0 || (got < 0 && errno != EAGAIN))
                    ok = 0;
            }
            if (ok < 0)
                continue;
            close(c->fd);
            open--;
            done += ok && now() <= stop; /* what ends after the measured time is not counted */
            fails += !ok;
            if (now() < stop) {
                if (start(c) == 0)
                    open++;
                else
                    fails++;
            }
        }
    }
    printf("%.1f %ld\n", done / seconds, fails);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "server"))
        return server(address(argv[2], argv[3]));
    if (argc == 6 && !strcmp(argv[1], "client")) {
        target = address(argv[2], argv[3]);
        return client(atof(argv[4]), atoi(argv[5]));
    }
    fprintf(stderr, "usage: crr server ADDR PORT | crr client ADDR PORT SECONDS CONCURRENT\n");
    return 2;
}
