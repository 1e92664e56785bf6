// Pipes within the process holding unread data: one with 1000 bytes, one full (64 KiB, the default
// capacity), one empty. /check reads exactly the data back, the empty one has nothing, and a new
// write/read round trip works.
#include "http.h"

#include <fcntl.h>

static int small[2], full[2], empty[2];

static unsigned char byte_at(int which, size_t i) {
    return (unsigned char)(which * 17 + i * 13 + (i >> 8));
}

static int read_exactly(int fd, unsigned char* buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0) return (int)got;
        got += (size_t)n;
    }
    return (int)got;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    static unsigned char buf[65536 + 16];
    int n = read_exactly(small[0], buf, 1000);
    RT_CHECK(r, n == 1000, "small pipe gave %d bytes, not 1000", n);
    for (int i = 0; i < n; ++i)
        if (buf[i] != byte_at(1, (size_t)i)) {
            rt_fail(r, "small pipe byte %d differs", i);
            break;
        }
    RT_CHECK(r, read(small[0], buf, 1) < 0 && errno == EAGAIN, "small pipe has more than 1000 bytes");
    n = read_exactly(full[0], buf, 65536);
    RT_CHECK(r, n == 65536, "full pipe gave %d bytes, not 65536", n);
    for (int i = 0; i < n; ++i)
        if (buf[i] != byte_at(2, (size_t)i)) {
            rt_fail(r, "full pipe byte %d differs", i);
            break;
        }
    RT_CHECK(r, read(empty[0], buf, 1) < 0 && errno == EAGAIN, "empty pipe is not empty");
    RT_CHECK(r, write(empty[1], "ping", 4) == 4 && read(empty[0], buf, 8) == 4 && memcmp(buf, "ping", 4) == 0,
             "round trip through the empty pipe failed");
    if (!r->failed) rt_add(r, "ok 1000 + 65536 unread bytes came back, empty pipe empty");
    return 1;
}

int main(void) {
    if (pipe2(small, O_NONBLOCK) || pipe2(full, O_NONBLOCK) || pipe2(empty, O_NONBLOCK)) rt_die("pipe2");
    static unsigned char buf[65536];
    for (size_t i = 0; i < 1000; ++i) buf[i] = byte_at(1, i);
    if (write(small[1], buf, 1000) != 1000) rt_die("write small");
    for (size_t i = 0; i < sizeof buf; ++i) buf[i] = byte_at(2, i);
    if (write(full[1], buf, sizeof buf) != (ssize_t)sizeof buf) rt_die("write full");
    rt_serve("pipe-data", handle);
}
