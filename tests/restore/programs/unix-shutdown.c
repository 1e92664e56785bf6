// The shutdown state of unix sockets:
//   fd 42/43  stream pair: 42 sent "bye" then shut its send side (43 reads "bye", then end of stream)
//   fd 44/45  seqpacket pair: 44 shut its receive side
//   fd 46/47  stream pair: 46 shut both sides
//   fd 48     a stream listener at /tmp/rt-shut.sock shut for receiving, O_NONBLOCK: it polls
//             readable with POLLRDHUP, refuses connections, and a blocking accept fails with EINVAL at
//             once (restored without its shutdown, a blocking accept would wait forever)
// /check: every side that was shut is still shut (reads end of stream, writes fail with EPIPE), every
// side that was open still works, and the queued "bye" is read before the end of stream.
#include "http.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/un.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char buf[16] = {0};
    ssize_t n = recv(43, buf, sizeof buf, MSG_DONTWAIT);
    RT_CHECK(r, n == 3 && memcmp(buf, "bye", 3) == 0, "fd 43 first read %zd '%s'", n, buf);
    n = recv(43, buf, sizeof buf, MSG_DONTWAIT);
    RT_CHECK(r, n == 0, "fd 43 after bye: %zd (%s), want end of stream", n, strerror(errno));
    errno = 0;
    RT_CHECK(r, send(42, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "fd 42 send after SHUT_WR: %s",
             strerror(errno));
    RT_CHECK(r, send(43, "back", 4, MSG_NOSIGNAL) == 4 && recv(42, buf, 4, 0) == 4,
             "fd 43 -> fd 42 (open side) broken");

    n = recv(44, buf, sizeof buf, MSG_DONTWAIT);
    RT_CHECK(r, n == 0, "fd 44 (SHUT_RD) read %zd (%s), want end of stream", n, strerror(errno));
    errno = 0;
    RT_CHECK(r, send(45, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "fd 45 send to a shut reader: %s",
             strerror(errno));
    RT_CHECK(r, send(44, "ok", 2, MSG_NOSIGNAL) == 2 && recv(45, buf, sizeof buf, 0) == 2,
             "fd 44 -> fd 45 broken");

    RT_CHECK(r, recv(46, buf, sizeof buf, MSG_DONTWAIT) == 0 && recv(47, buf, sizeof buf, MSG_DONTWAIT) == 0,
             "fd 46/47 (SHUT_RDWR) not at end of stream");
    errno = 0;
    RT_CHECK(r, send(47, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "fd 47 send: %s", strerror(errno));

    struct pollfd pl = {.fd = 48, .events = POLLIN | POLLRDHUP};
    RT_CHECK(r, poll(&pl, 1, 0) == 1 && (pl.revents & POLLRDHUP), "the listener does not poll shut (%#x)",
             pl.revents);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, "/tmp/rt-shut.sock");
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    errno = 0;
    RT_CHECK(r, c >= 0 && connect(c, (struct sockaddr*)&a, sizeof a) != 0 && errno == ECONNREFUSED,
             "connecting to the shut listener: %s, want ECONNREFUSED", strerror(errno));
    if (c >= 0) close(c);
    RT_CHECK(r, fcntl(48, F_GETFL) & O_NONBLOCK, "fd 48 lost O_NONBLOCK");
    if (!r->failed) rt_add(r, "ok shutdown states of 3 pairs and a listener kept");
    return 1;
}

static void pair_at(int type, int a, int b) {
    int sv[2];
    if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0 || dup2(sv[0], a) < 0 || dup2(sv[1], b) < 0)
        rt_die("socketpair");
    close(sv[0]);
    close(sv[1]);
}

int main(void) {
    pair_at(SOCK_STREAM, 42, 43);
    if (send(42, "bye", 3, 0) != 3 || shutdown(42, SHUT_WR) != 0) rt_die("shut 42");
    pair_at(SOCK_SEQPACKET, 44, 45);
    if (shutdown(44, SHUT_RD) != 0) rt_die("shut 44");
    pair_at(SOCK_STREAM, 46, 47);
    if (shutdown(46, SHUT_RDWR) != 0) rt_die("shut 46");
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, "/tmp/rt-shut.sock");
    if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 4) != 0 ||
        shutdown(l, SHUT_RD) != 0 || dup2(l, 48) < 0)
        rt_die("listener");
    close(l);
    rt_serve("unix-shutdown", handle);
}
