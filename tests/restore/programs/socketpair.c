// Socket pairs within one process, with data queued at the snapshot in both directions: a stream
// pair (100 bytes one way, 50000 the other), a datagram pair (3 messages of 1, 300 and 4000 bytes)
// and a seqpacket pair (2 messages), one end non-blocking. /check reads everything back with its
// boundaries, then sends a round trip through each pair.
#include "http.h"

#include <fcntl.h>

static int stream[2], dgram[2], seqp[2];
static const size_t kDgram[] = {1, 300, 4000};

static unsigned char byte_at(int which, size_t i) {
    return (unsigned char)(which * 31 + i * 5 + (i >> 9));
}

static void fill(unsigned char* buf, int which, size_t len) {
    for (size_t i = 0; i < len; ++i) buf[i] = byte_at(which, i);
}

static int same(const unsigned char* buf, int which, size_t len) {
    for (size_t i = 0; i < len; ++i)
        if (buf[i] != byte_at(which, i)) return 0;
    return 1;
}

static size_t read_stream(int fd, unsigned char* buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (n <= 0) break;
        got += (size_t)n;
    }
    return got;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    static unsigned char buf[65536];
    size_t n = read_stream(stream[1], buf, 100);
    RT_CHECK(r, n == 100 && same(buf, 1, 100), "stream end 1 got %zu of 100 bytes or different ones", n);
    n = read_stream(stream[0], buf, 50000);
    RT_CHECK(r, n == 50000 && same(buf, 2, 50000), "stream end 0 got %zu of 50000 bytes or different ones",
             n);
    RT_CHECK(r, recv(stream[0], buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "stream end 0 has more data");
    for (int k = 0; k < 3; ++k) {
        ssize_t got = recv(dgram[1], buf, sizeof buf, MSG_DONTWAIT);
        RT_CHECK(r, got == (ssize_t)kDgram[k] && same(buf, 10 + k, kDgram[k]),
                 "datagram %d: %zd bytes, want %zu", k, got, kDgram[k]);
    }
    RT_CHECK(r, recv(dgram[1], buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "an extra datagram");
    for (int k = 0; k < 2; ++k) {
        ssize_t got = recv(seqp[0], buf, sizeof buf, MSG_DONTWAIT);
        RT_CHECK(r, got == 7 + k && same(buf, 20 + k, (size_t)(7 + k)), "seqpacket %d: %zd bytes", k, got);
    }
    RT_CHECK(r, fcntl(seqp[0], F_GETFL) & O_NONBLOCK, "seqpacket end 0 lost O_NONBLOCK");
    RT_CHECK(r, !(fcntl(seqp[1], F_GETFL) & O_NONBLOCK), "seqpacket end 1 became non-blocking");
    int type = 0;
    socklen_t len = sizeof type;
    getsockopt(dgram[0], SOL_SOCKET, SO_TYPE, &type, &len);
    RT_CHECK(r, type == SOCK_DGRAM, "datagram pair has type %d", type);
    int pairs[3][2] = {{stream[0], stream[1]}, {dgram[0], dgram[1]}, {seqp[0], seqp[1]}};
    for (int k = 0; k < 3; ++k) {
        char reply[8] = {0};
        RT_CHECK(r,
                 send(pairs[k][0], "ping", 4, 0) == 4 && recv(pairs[k][1], reply, sizeof reply, 0) == 4 &&
                     memcmp(reply, "ping", 4) == 0,
                 "round trip through pair %d failed", k);
    }
    if (!r->failed)
        rt_add(r, "ok stream, datagram and seqpacket pairs kept their queued data and boundaries");
    return 1;
}

int main(void) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, stream) ||
        socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, seqp))
        rt_die("socketpair");
    fcntl(seqp[0], F_SETFL, O_NONBLOCK);
    static unsigned char buf[50000];
    fill(buf, 1, 100);
    if (send(stream[0], buf, 100, 0) != 100) rt_die("send");
    fill(buf, 2, 50000);
    if (send(stream[1], buf, 50000, 0) != 50000) rt_die("send");
    for (int k = 0; k < 3; ++k) {
        fill(buf, 10 + k, kDgram[k]);
        if (send(dgram[0], buf, kDgram[k], 0) != (ssize_t)kDgram[k]) rt_die("send dgram");
    }
    for (int k = 0; k < 2; ++k) {
        fill(buf, 20 + k, (size_t)(7 + k));
        if (send(seqp[1], buf, (size_t)(7 + k), 0) != 7 + k) rt_die("send seqpacket");
    }
    rt_serve("socketpair", handle);
}
