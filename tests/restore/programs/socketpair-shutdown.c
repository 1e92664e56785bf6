// Socket pairs shut down at the snapshot: a SOCK_SEQPACKET pair whose peer sent two messages and
// shut down (the reader sees both, then end of stream, 0, for ever; issue 15: the checkpoint's peek
// spun on it), and a SOCK_STREAM pair whose reader shut its receive side (SHUT_RD: reads give 0 at
// once, writes from the peer fail with EPIPE). /check: all of that after restore, without blocking
// (every end is non-blocking: a lost shutdown reads EAGAIN).
#include "http.h"

#include <fcntl.h>
#include <signal.h>

static int seq[2], str[2];

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char buf[64];
    ssize_t n = recv(seq[0], buf, sizeof buf, 0);
    RT_CHECK(r, n == 5 && memcmp(buf, "first", 5) == 0, "seqpacket message 1: %zd (%s)", n,
             n < 0 ? strerror(errno) : "");
    n = recv(seq[0], buf, sizeof buf, 0);
    RT_CHECK(r, n == 6 && memcmp(buf, "second", 6) == 0, "seqpacket message 2: %zd (%s)", n,
             n < 0 ? strerror(errno) : "");
    for (int i = 0; i < 2; ++i) {
        n = recv(seq[0], buf, sizeof buf, 0);
        RT_CHECK(r, n == 0, "seqpacket read after the peer's shutdown: %zd (%s), not end of stream", n,
                 n < 0 ? strerror(errno) : "");
    }
    n = send(seq[1], "x", 1, MSG_NOSIGNAL);
    RT_CHECK(r, n < 0 && errno == EPIPE, "seqpacket send on the shut end: %zd (%s), not EPIPE", n,
             n < 0 ? strerror(errno) : "");
    n = recv(str[0], buf, sizeof buf, 0);
    RT_CHECK(r, n == 0, "stream read on the SHUT_RD end: %zd (%s), not 0", n, n < 0 ? strerror(errno) : "");
    n = send(str[1], "y", 1, MSG_NOSIGNAL);
    RT_CHECK(r, n < 0 && errno == EPIPE, "stream send towards the SHUT_RD end: %zd (%s), not EPIPE", n,
             n < 0 ? strerror(errno) : "");
    n = send(str[0], "z", 1, MSG_NOSIGNAL);
    RT_CHECK(r, n == 1, "the SHUT_RD end can no longer send: %s", strerror(errno));
    if (!r->failed) rt_add(r, "ok seqpacket EOF after its 2 messages, stream SHUT_RD kept");
    return 1;
}

int main(void) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, seq) != 0) rt_die("socketpair");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, str) != 0) rt_die("socketpair");
    if (send(seq[1], "first", 5, 0) != 5 || send(seq[1], "second", 6, 0) != 6) rt_die("send");
    if (shutdown(seq[1], SHUT_WR) != 0 || shutdown(str[0], SHUT_RD) != 0) rt_die("shutdown");
    rt_serve("socketpair-shutdown", handle);
}
