// Shared by tcp-connection-v4.c and tcp-connection-v6.c (define RT_FAMILY first): established TCP
// connections at the snapshot, to a server the program runs itself on loopback port 9101 (standing
// for a database the function keeps a connection to).
//   fd 42 <-> fd 43   a client connection and its accepted end, one byte exchanged
//   fd 44 <-> fd 46   another, fd 44 registered in the epoll set fd 45 (EPOLLIN|EPOLLRDHUP, data 0x2a)
//   fd 47             a connection the server closed (CLOSE_WAIT: end of stream not read yet)
//   fd 48             a connection with O_NONBLOCK
//   fd 50             the server's listening socket
// The function is told it was restored (restore_signal SIGUSR2). Booted, /check finds every
// connection live. Restored, every connection fd must be a socket of the same family and type whose
// next use fails as after a reset: poll and epoll report an error or hang-up, a read gives
// ECONNRESET or end of stream (never blocks), a write fails with EPIPE or ECONNRESET; the flags are
// kept; and a new connection to the restored listener works (what a client's retry does).
#include "http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>

static volatile sig_atomic_t restored;
static void on_restored(int sig) {
    (void)sig;
    restored = 1;
}

static socklen_t server_address(struct sockaddr_storage* ss) {
    memset(ss, 0, sizeof *ss);
    if (RT_FAMILY == AF_INET6) {
        struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(9101);
        a->sin6_addr = in6addr_loopback;
        return sizeof *a;
    }
    struct sockaddr_in* a = (struct sockaddr_in*)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(9101);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sizeof *a;
}

static int connect_to_server(void) {
    struct sockaddr_storage ss;
    socklen_t len = server_address(&ss);
    int c = socket(RT_FAMILY, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr*)&ss, len) != 0) rt_die("connect");
    return c;
}

static void place(int fd, int at) {
    if (dup2(fd, at) < 0) rt_die("dup2");
    close(fd);
}

static const int kConnections[] = {42, 43, 44, 46, 47, 48};

static void check_booted(struct rt_reply* r) {
    RT_CHECK(r, send(42, "x", 1, MSG_NOSIGNAL) == 1, "booted: send on fd 42: %s", strerror(errno));
    char c = 0;
    RT_CHECK(r, recv(43, &c, 1, 0) == 1 && c == 'x', "booted: fd 43 did not receive fd 42's byte");
    RT_CHECK(r, recv(47, &c, 1, MSG_DONTWAIT) == 0, "booted: fd 47 is not at end of stream");
    if (!r->failed) rt_add(r, "ok booted: connections live");
}

static void check_restored(struct rt_reply* r) {
    for (size_t i = 0; i < sizeof kConnections / sizeof *kConnections; ++i) {
        int fd = kConnections[i];
        int domain = -1, type = -1;
        socklen_t len = sizeof domain;
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
        len = sizeof type;
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
        RT_CHECK(r, domain == RT_FAMILY && type == SOCK_STREAM, "fd %d: domain %d type %d", fd, domain, type);
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        RT_CHECK(r, poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)), "fd %d: poll revents %#x", fd,
                 p.revents);
    }
    RT_CHECK(r, (fcntl(48, F_GETFL) & O_NONBLOCK) && !(fcntl(42, F_GETFL) & O_NONBLOCK),
             "O_NONBLOCK not kept");
    RT_CHECK(r, fcntl(42, F_GETFD) == 0, "close-on-exec appeared on fd 42 (dup2 cleared it)");
    struct epoll_event ev[4];
    int n = epoll_wait(45, ev, 4, 0);
    RT_CHECK(r, n == 1 && ev[0].data.u64 == 0x2a && (ev[0].events & (EPOLLERR | EPOLLHUP)),
             "epoll: %d events, first %#x data %#llx", n, n > 0 ? ev[0].events : 0,
             n > 0 ? (unsigned long long)ev[0].data.u64 : 0ULL);
    char buf[16];
    for (int fd = 42; fd <= 47; fd += 5) {  // 42 and 47 (the one closed by its peer)
        errno = 0;
        ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        RT_CHECK(r, got == 0 || (got < 0 && errno == ECONNRESET), "fd %d: first read %zd (%s)", fd, got,
                 strerror(errno));
        errno = 0;
        got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        RT_CHECK(r, got == 0 || (got < 0 && errno != EAGAIN), "fd %d: second read %zd (%s)", fd, got,
                 strerror(errno));
    }
    errno = 0;
    ssize_t sent = send(43, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    RT_CHECK(r, sent < 0 && (errno == EPIPE || errno == ECONNRESET), "fd 43: send gave %zd (%s)", sent,
             strerror(errno));
    sent = send(44, "x", 1, MSG_NOSIGNAL);
    RT_CHECK(r, sent < 0 && (errno == EPIPE || errno == ECONNRESET), "fd 44: send gave %zd (%s)", sent,
             strerror(errno));
    // What a client's retry does: a new connection to the (restored) server works.
    int c = connect_to_server();
    int s = accept4(50, NULL, NULL, SOCK_CLOEXEC);
    RT_CHECK(r,
             s >= 0 && send(c, "again", 5, MSG_NOSIGNAL) == 5 && recv(s, buf, 5, MSG_WAITALL) == 5 &&
                 memcmp(buf, "again", 5) == 0,
             "reconnecting to the restored server failed: %s", strerror(errno));
    close(c);
    if (s >= 0) close(s);
    if (!r->failed) rt_add(r, "ok restored: 6 connections reset, epoll reports it, reconnect works");
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    if (restored)
        check_restored(r);
    else
        check_booted(r);
    return 1;
}

static int run(const char* name) {
    struct sigaction sa = {.sa_handler = on_restored};
    sigaction(SIGUSR2, &sa, NULL);
    struct sockaddr_storage ss;
    socklen_t len = server_address(&ss);
    int l = socket(RT_FAMILY, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr*)&ss, len) != 0 || listen(l, 8) != 0) rt_die("server");
    place(l, 50);
    place(connect_to_server(), 42);
    place(accept4(50, NULL, NULL, SOCK_CLOEXEC), 43);
    char c = 0;
    if (send(42, "h", 1, 0) != 1 || recv(43, &c, 1, 0) != 1) rt_die("exchange");
    place(connect_to_server(), 44);
    place(accept4(50, NULL, NULL, SOCK_CLOEXEC), 46);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = 0x2a};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 44, &ev) != 0) rt_die("epoll");
    place(ep, 45);
    place(connect_to_server(), 47);
    close(accept4(50, NULL, NULL, SOCK_CLOEXEC));  // the server ends this one: fd 47 in CLOSE_WAIT
    struct pollfd p = {.fd = 47, .events = POLLRDHUP};
    if (poll(&p, 1, 2000) != 1) rt_die("fin on fd 47");
    int nb = connect_to_server();
    fcntl(nb, F_SETFL, O_NONBLOCK);
    place(nb, 48);
    place(accept4(50, NULL, NULL, SOCK_CLOEXEC), 49);
    rt_serve(name, handle);
    return 0;
}
