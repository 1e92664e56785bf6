// Listening TCP sockets with options: the HTTP socket; 0.0.0.0:9001 with SO_REUSEADDR, SO_KEEPALIVE,
// TCP_NODELAY and TCP_DEFER_ACCEPT; [::]:9002 IPv6-only with SO_REUSEPORT; 127.0.0.1:9003 (bound to
// loopback only). /check: getsockopt/getsockname give the same values and a client inside can connect
// to each and be accepted.
#include "http.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <poll.h>

static int s4, s6, slo;

static int opt(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    getsockopt(fd, level, name, &v, &len);
    return v;
}

static int roundtrip(int lfd, int family, const char* addr, int port) {
    int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in* a = (struct sockaddr_in*)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6* a = (struct sockaddr_in6*)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        len = sizeof *a;
    }
    int ok =
        connect(c, (struct sockaddr*)&ss, len) == 0 && write(c, "x", 1) == 1;  // data for TCP_DEFER_ACCEPT
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    ok = ok && poll(&p, 1, 2000) == 1;
    int a = ok ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : -1;
    ok = a >= 0;
    if (a >= 0) close(a);
    close(c);
    return ok;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, opt(s4, SOL_SOCKET, SO_ACCEPTCONN) == 1, "9001 is not listening");
    RT_CHECK(r, opt(s4, SOL_SOCKET, SO_REUSEADDR) == 1, "9001 lost SO_REUSEADDR");
    RT_CHECK(r, opt(s4, SOL_SOCKET, SO_KEEPALIVE) == 1, "9001 lost SO_KEEPALIVE");
    RT_CHECK(r, opt(s4, IPPROTO_TCP, TCP_NODELAY) == 1, "9001 lost TCP_NODELAY");
    RT_CHECK(r, opt(s4, IPPROTO_TCP, TCP_DEFER_ACCEPT) > 0, "9001 lost TCP_DEFER_ACCEPT");
    RT_CHECK(r, opt(s6, SOL_SOCKET, SO_DOMAIN) == AF_INET6, "9002 is not IPv6");
    RT_CHECK(r, opt(s6, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "9002 lost IPV6_V6ONLY");
    RT_CHECK(r, opt(s6, SOL_SOCKET, SO_REUSEPORT) == 1, "9002 lost SO_REUSEPORT");
    RT_CHECK(r, opt(s6, IPPROTO_TCP, TCP_NODELAY) == 0, "9002 gained TCP_NODELAY");
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(slo, (struct sockaddr*)&a, &len);
    RT_CHECK(r, a.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && ntohs(a.sin_port) == 9003,
             "9003 bound to %s:%d", inet_ntoa(a.sin_addr), ntohs(a.sin_port));
    RT_CHECK(r, roundtrip(s4, AF_INET, "127.0.0.1", 9001), "connect/accept on 9001 failed");
    RT_CHECK(r, roundtrip(s6, AF_INET6, "::1", 9002), "connect/accept on [::1]:9002 failed");
    RT_CHECK(r, roundtrip(slo, AF_INET, "127.0.0.1", 9003), "connect/accept on 127.0.0.1:9003 failed");
    if (!r->failed) rt_add(r, "ok 3 listening sockets with their options and addresses accept connections");
    return 1;
}

int main(void) {
    int one = 1, five = 5;
    s4 = rt_listen_on(9001, 32);
    setsockopt(s4, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(s4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s4, IPPROTO_TCP, TCP_DEFER_ACCEPT, &five, sizeof five);
    s6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    setsockopt(s6, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in6 a6 = {
        .sin6_family = AF_INET6, .sin6_port = htons(9002), .sin6_addr = IN6ADDR_ANY_INIT};
    if (s6 < 0 || bind(s6, (struct sockaddr*)&a6, sizeof a6) != 0 || listen(s6, 16) != 0)
        rt_die("ipv6 listen");
    slo = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons(9003)};
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (slo < 0 || bind(slo, (struct sockaddr*)&lo, sizeof lo) != 0 || listen(slo, 8) != 0)
        rt_die("loopback listen");
    rt_serve("tcp-listen", handle);
}
