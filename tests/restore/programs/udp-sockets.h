// Shared by udp-v4.c and udp-v6.c (define RT_FAMILY first): UDP sockets on loopback.
//   fd 42  bound to port 9201 (a server), holding a datagram from fd 43 nobody read at the snapshot
//   fd 43  connected to port 9201 (a client; its local port chosen by connect)
//   fd 44  neither bound nor connected
//   fd 45  bound to the wildcard address port 9203 with SO_BROADCAST (IPv4) or IPV6_V6ONLY (IPv6)
// /check: addresses, peer, local port and options as at the snapshot; the queued datagram is either
// still there (booted) or dropped (restored: the snapshot's output says so), never garbled; datagrams
// then flow both ways between fd 43 and fd 42, and from fd 44 (bound on first send).
#include "http.h"

#include <arpa/inet.h>
#include <fcntl.h>

static socklen_t address(struct sockaddr_storage* ss, int port, int wildcard) {
    memset(ss, 0, sizeof *ss);
    if (RT_FAMILY == AF_INET6) {
        struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = wildcard ? in6addr_any : in6addr_loopback;
        return sizeof *a;
    }
    struct sockaddr_in* a = (struct sockaddr_in*)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(wildcard ? INADDR_ANY : INADDR_LOOPBACK);
    return sizeof *a;
}

static int port_of(const struct sockaddr_storage* ss) {
    return ntohs(RT_FAMILY == AF_INET6 ? ((const struct sockaddr_in6*)ss)->sin6_port
                                       : ((const struct sockaddr_in*)ss)->sin_port);
}

static int local_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    return getsockname(fd, (struct sockaddr*)&ss, &len) == 0 ? port_of(&ss) : -1;
}

static int client_port;  // fd 43's local port at init

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    for (int fd = 42; fd <= 45; ++fd) {
        int domain = -1, type = -1;
        socklen_t len = sizeof domain;
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
        len = sizeof type;
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
        RT_CHECK(r, domain == RT_FAMILY && type == SOCK_DGRAM, "fd %d: domain %d type %d", fd, domain, type);
    }
    RT_CHECK(r, local_port(42) == 9201, "fd 42 bound to port %d", local_port(42));
    RT_CHECK(r, local_port(43) == client_port, "fd 43 local port %d, was %d", local_port(43), client_port);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    RT_CHECK(r, getpeername(43, (struct sockaddr*)&peer, &plen) == 0 && port_of(&peer) == 9201,
             "fd 43 not connected to 9201");
    plen = sizeof peer;
    RT_CHECK(r, getpeername(44, (struct sockaddr*)&peer, &plen) != 0 && errno == ENOTCONN, "fd 44 connected");
    RT_CHECK(r, local_port(44) == 0, "fd 44 bound to %d", local_port(44));
    RT_CHECK(r, local_port(45) == 9203, "fd 45 bound to %d", local_port(45));
    int v = 0;
    socklen_t vlen = sizeof v;
    if (RT_FAMILY == AF_INET6)
        getsockopt(45, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vlen);
    else
        getsockopt(45, SOL_SOCKET, SO_BROADCAST, &v, &vlen);
    RT_CHECK(r, v == 1, "fd 45 option lost");
    char buf[64];
    ssize_t n = recv(42, buf, sizeof buf, MSG_DONTWAIT);
    int had_queued = n == 6 && memcmp(buf, "queued", 6) == 0;
    RT_CHECK(r, had_queued || (n < 0 && errno == EAGAIN), "fd 42 held %zd bytes, not the queued datagram", n);
    RT_CHECK(r, send(43, "ping", 4, 0) == 4, "send fd 43: %s", strerror(errno));
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    n = recvfrom(42, buf, sizeof buf, 0, (struct sockaddr*)&from, &flen);
    RT_CHECK(r, n == 4 && memcmp(buf, "ping", 4) == 0 && port_of(&from) == client_port, "fd 42 got %zd bytes",
             n);
    RT_CHECK(r, sendto(42, "pong", 4, 0, (struct sockaddr*)&from, flen) == 4, "reply: %s", strerror(errno));
    n = recv(43, buf, sizeof buf, 0);
    RT_CHECK(r, n == 4 && memcmp(buf, "pong", 4) == 0, "fd 43 got %zd bytes", n);
    struct sockaddr_storage server;
    socklen_t slen = address(&server, 9201, 0);
    RT_CHECK(r, sendto(44, "hi", 2, 0, (struct sockaddr*)&server, slen) == 2, "send fd 44: %s",
             strerror(errno));
    n = recv(42, buf, sizeof buf, 0);
    RT_CHECK(r, n == 2, "fd 42 got %zd bytes from fd 44", n);
    if (!r->failed)
        rt_add(r, "ok udp sockets as they were (queued datagram %s)", had_queued ? "kept" : "dropped");
    return 1;
}

static void place(int fd, int at) {
    if (fd < 0 || dup2(fd, at) < 0) rt_die("dup2");
    close(fd);
}

static int run(const char* name) {
    struct sockaddr_storage ss;
    socklen_t len = address(&ss, 9201, 0);
    int s = socket(RT_FAMILY, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0 || bind(s, (struct sockaddr*)&ss, len) != 0) rt_die("bind 9201");
    place(s, 42);
    int c = socket(RT_FAMILY, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr*)&ss, len) != 0) rt_die("connect");
    place(c, 43);
    client_port = local_port(43);
    place(socket(RT_FAMILY, SOCK_DGRAM | SOCK_CLOEXEC, 0), 44);
    int w = socket(RT_FAMILY, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (RT_FAMILY == AF_INET6)
        setsockopt(w, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    else
        setsockopt(w, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    len = address(&ss, 9203, 1);
    if (bind(w, (struct sockaddr*)&ss, len) != 0) rt_die("bind 9203");
    place(w, 45);
    if (send(43, "queued", 6, 0) != 6) rt_die("send queued");
    rt_serve(name, handle);
    return 0;
}
