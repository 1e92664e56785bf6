// TCP sockets whose connection ended before the snapshot but whose fds the function kept open (what a
// web server's worker does between a client's disconnect and its own close: Jetty after the platform's
// warmup request). Each is in TCP_CLOSE, and the kernel still reports its local address:
//   fd 40             a listener, 127.0.0.1:9102 (no SO_REUSEADDR, so a second bind there fails)
//   fd 41             an accepted end whose client reset the connection (local address :9102)
//   fd 42             an accepted end closed from both sides (shutdown, FIN both ways; local :9102)
//   fd 43             the client end of fd 42's connection (an ephemeral local port)
//   fd 44             a client whose connect was refused (nothing listens on 9103)
//   fd 45             for contrast, a socket never connected, bound to 127.0.0.1:9104: bound again
// Such a socket must not be bound to its old address at restore (fds 41 and 42 would take the
// listener's port). /check, booted or restored: each ended fd is a TCP socket of the same family whose
// reads never block (end of stream or ECONNRESET), whose writes fail, and the listener still accepts.
#include "http.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int connect_to(int port) {
    struct sockaddr_in a = loopback(port);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0) rt_die("socket");
    if (connect(c, (struct sockaddr*)&a, sizeof a) != 0 && port != 9103) rt_die("connect");
    return c;
}

static void place(int fd, int at) {
    if (dup2(fd, at) < 0) rt_die("dup2");
    close(fd);
}

static int tcp_state(int fd) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 ? ti.tcpi_state : -1;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char buf[8];
    for (int fd = 41; fd <= 44; ++fd) {
        int domain = -1;
        socklen_t len = sizeof domain;
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
        RT_CHECK(r, domain == AF_INET, "fd %d: domain %d", fd, domain);
        errno = 0;
        ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        RT_CHECK(r, got == 0 || (got < 0 && errno != EAGAIN), "fd %d: read %zd (%s)", fd, got,
                 strerror(errno));
        errno = 0;
        ssize_t sent = send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        RT_CHECK(r, sent < 0, "fd %d: a write to an ended connection succeeded", fd);
    }
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    RT_CHECK(r, getsockname(45, (struct sockaddr*)&bound, &len) == 0 && ntohs(bound.sin_port) == 9104,
             "fd 45 is not bound to 9104 any more");
    int c = connect_to(9102);
    struct pollfd p = {.fd = 40, .events = POLLIN};
    int a = poll(&p, 1, 2000) == 1 ? accept4(40, NULL, NULL, SOCK_CLOEXEC) : -1;
    RT_CHECK(r, a >= 0 && send(c, "y", 1, MSG_NOSIGNAL) == 1 && recv(a, buf, 1, 0) == 1 && buf[0] == 'y',
             "the listener on 9102 does not accept: %s", strerror(errno));
    close(c);
    if (a >= 0) close(a);
    if (!r->failed)
        rt_add(r, "ok 4 ended connections end at once, the listener on 9102 accepts, fd 45 bound to 9104");
    return 1;
}

int main(void) {
    struct sockaddr_in a = loopback(9102);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 8) != 0) rt_die("listen 9102");
    place(l, 40);

    // fd 41: the client resets (SO_LINGER 0, close): the accepted end reads ECONNRESET, then is CLOSE.
    int c = connect_to(9102);
    place(accept4(40, NULL, NULL, SOCK_CLOEXEC), 41);
    struct linger abort_on_close = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
    close(c);

    // fds 42 and 43: both ends shut down for writing and read to end of stream: one end goes through
    // LAST_ACK to CLOSE, the other to TIME_WAIT (kept by the kernel) and CLOSE for its fd.
    place(connect_to(9102), 43);
    place(accept4(40, NULL, NULL, SOCK_CLOEXEC), 42);
    shutdown(43, SHUT_WR);
    char byte;
    if (recv(42, &byte, 1, 0) != 0) rt_die("end of stream on fd 42");
    shutdown(42, SHUT_WR);
    if (recv(43, &byte, 1, 0) != 0) rt_die("end of stream on fd 43");

    // fd 44: a refused connect.
    place(connect_to(9103), 44);

    // fd 45: bound, never connected.
    int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in at = loopback(9104);
    if (b < 0 || bind(b, (struct sockaddr*)&at, sizeof at) != 0) rt_die("bind 9104");
    place(b, 45);

    // Wait until every ended socket has reached CLOSE (the reset and the last ACK cross loopback).
    for (int i = 0; i < 200; ++i) {
        if (tcp_state(41) == TCP_CLOSE && tcp_state(42) == TCP_CLOSE && tcp_state(44) == TCP_CLOSE) break;
        usleep(10000);
    }
    if (tcp_state(41) != TCP_CLOSE || tcp_state(42) != TCP_CLOSE) rt_die("ended connections not in CLOSE");
    rt_serve("tcp-ended-connection", handle);
    return 0;
}
