// Datagram-like unix sockets with data queued whose peer is gone or shut down both ways:
//  - seqpacket pair: "one", an empty message, "three" queued at end 0, then end 1 closed;
//  - datagram pair: "alpha", an empty datagram, "gamma" queued at end 0, then end 1 closed;
//  - seqpacket pair shut down both ways by both ends after "late", an empty message and "later"
//    were queued at end 0;
//  - stream pair: "tail" queued at end 0, then end 1 closed.
// (The checkpoint refused the first two as "a connection made through a listening socket", and its
// peek took an empty message for the end of a shut seqpacket queue.)
// /check: every message in order (the empty ones as 0-byte messages), then end of stream where the
// kind gives one (seqpacket: 0), EAGAIN for the datagram socket (non-blocking ends).
#include "http.h"

#include <fcntl.h>

static int seq[2], dg[2], both[2], str[2];

static ssize_t rd(int fd, char* buf, size_t cap) {
    ssize_t n = recv(fd, buf, cap - 1, MSG_DONTWAIT);
    if (n >= 0) buf[n] = 0;
    return n;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char buf[64];
    ssize_t n;
    n = rd(seq[0], buf, sizeof buf);
    RT_CHECK(r, n == 3 && strcmp(buf, "one") == 0, "seqpacket 1: %zd", n);
    n = rd(seq[0], buf, sizeof buf);
    RT_CHECK(r, n == 0, "seqpacket 2 (empty): %zd", n);
    n = rd(seq[0], buf, sizeof buf);
    RT_CHECK(r, n == 5 && strcmp(buf, "three") == 0, "seqpacket 3: %zd (%s)", n,
             n < 0 ? strerror(errno) : buf);
    n = rd(seq[0], buf, sizeof buf);
    RT_CHECK(r, n == 0, "seqpacket after the peer closed: %zd (%s)", n, n < 0 ? strerror(errno) : "");
    n = rd(dg[0], buf, sizeof buf);
    RT_CHECK(r, n == 5 && strcmp(buf, "alpha") == 0, "datagram 1: %zd", n);
    n = rd(dg[0], buf, sizeof buf);
    RT_CHECK(r, n == 0, "datagram 2 (empty): %zd (%s)", n, n < 0 ? strerror(errno) : "");
    n = rd(dg[0], buf, sizeof buf);
    RT_CHECK(r, n == 5 && strcmp(buf, "gamma") == 0, "datagram 3: %zd (%s)", n,
             n < 0 ? strerror(errno) : buf);
    n = rd(dg[0], buf, sizeof buf);
    RT_CHECK(r, n < 0 && errno == EAGAIN, "datagram after the peer closed: %zd (%s)", n,
             n < 0 ? strerror(errno) : "");
    n = rd(both[0], buf, sizeof buf);
    RT_CHECK(r, n == 4 && strcmp(buf, "late") == 0, "shut seqpacket: %zd (%s)", n,
             n < 0 ? strerror(errno) : buf);
    n = rd(both[0], buf, sizeof buf);
    RT_CHECK(r, n == 0, "shut seqpacket message 2 (empty): %zd (%s)", n, n < 0 ? strerror(errno) : "");
    n = rd(both[0], buf, sizeof buf);
    RT_CHECK(r, n == 5 && strcmp(buf, "later") == 0, "shut seqpacket message 3: %zd (%s)", n,
             n < 0 ? strerror(errno) : buf);
    n = rd(both[0], buf, sizeof buf);
    RT_CHECK(r, n == 0, "shut seqpacket after its messages: %zd (%s)", n, n < 0 ? strerror(errno) : "");
    n = send(both[1], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    RT_CHECK(r, n < 0 && errno == EPIPE, "send on a shut seqpacket: %zd (%s)", n,
             n < 0 ? strerror(errno) : "");
    n = rd(str[0], buf, sizeof buf);
    RT_CHECK(r, n == 4 && strcmp(buf, "tail") == 0, "stream: %zd (%s)", n, n < 0 ? strerror(errno) : buf);
    n = rd(str[0], buf, sizeof buf);
    RT_CHECK(r, n == 0, "stream after the peer closed: %zd (%s)", n, n < 0 ? strerror(errno) : "");
    if (!r->failed) rt_add(r, "ok queued messages kept after the peer closed or shut down");
    return 1;
}

int main(void) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, seq) != 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) != 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, both) != 0)
        rt_die("socketpair");
    if (send(seq[1], "one", 3, 0) != 3 || send(seq[1], "", 0, 0) != 0 || send(seq[1], "three", 5, 0) != 5)
        rt_die("send seqpacket");
    close(seq[1]);
    if (send(dg[1], "alpha", 5, 0) != 5 || send(dg[1], "", 0, 0) != 0 || send(dg[1], "gamma", 5, 0) != 5)
        rt_die("send datagram");
    close(dg[1]);
    if (send(both[1], "late", 4, 0) != 4 || send(both[1], "", 0, 0) != 0 || send(both[1], "later", 5, 0) != 5)
        rt_die("send late");
    if (shutdown(both[0], SHUT_RDWR) != 0 || shutdown(both[1], SHUT_RDWR) != 0) rt_die("shutdown");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, str) != 0) rt_die("socketpair stream");
    if (send(str[1], "tail", 4, 0) != 4) rt_die("send tail");
    close(str[1]);
    rt_serve("socket-peer-closed", handle);
}
