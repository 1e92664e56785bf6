// A pipe enlarged with F_SETPIPE_SZ to 1 MiB holding 200 KiB of unread data (more than a default pipe
// holds). /check: the capacity is still 1 MiB and all 200 KiB come back.
#include "http.h"

#include <fcntl.h>

#define LEN (200 * 1024)
static int p[2];

static unsigned char byte_at(size_t i) {
    return (unsigned char)(i * 7 + (i >> 10));
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int sz = fcntl(p[0], F_GETPIPE_SZ);
    RT_CHECK(r, sz == 1 << 20, "pipe capacity %d, not 1 MiB", sz);
    static unsigned char buf[LEN + 1];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf && (n = read(p[0], buf + got, sizeof buf - got)) > 0) got += (size_t)n;
    RT_CHECK(r, got == LEN, "read back %zu bytes, not %d", got, LEN);
    for (size_t i = 0; i < got; ++i)
        if (buf[i] != byte_at(i)) {
            rt_fail(r, "byte %zu differs", i);
            break;
        }
    if (!r->failed) rt_add(r, "ok 1 MiB pipe gave back its 200 KiB");
    return 1;
}

int main(void) {
    if (pipe2(p, O_NONBLOCK) != 0) rt_die("pipe2");
    if (fcntl(p[0], F_SETPIPE_SZ, 1 << 20) < 0) rt_die("F_SETPIPE_SZ");
    static unsigned char buf[LEN];
    for (size_t i = 0; i < LEN; ++i) buf[i] = byte_at(i);
    if (write(p[1], buf, LEN) != LEN) rt_die("write");
    rt_serve("pipe-big", handle);
}
