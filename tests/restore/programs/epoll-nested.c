// Nested epoll and one file in two epoll sets: epoll `outer` watches epoll `inner` (data 7), which
// watches pipe P's read end (data 11); epoll `other` watches the same read end (data 22) and a dup
// of it (data 23). /check: nothing ready before a write; after a byte into P, outer reports inner,
// inner reports P, other reports both of its registrations; each wait bounded.
#include "http.h"

#include <sys/epoll.h>

static int outer, inner, other, p[2];

static void add(int ep, int fd, uint64_t data) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) rt_die("epoll_ctl");
}

static int collect(int ep, uint64_t* seen) {
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 200);
    for (int i = 0; i < n; ++i) seen[i] = evs[i].data.u64;
    return n;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    uint64_t seen[8];
    int n = collect(outer, seen);
    RT_CHECK(r, n == 0, "outer: %d events before the write", n);
    if (write(p[1], "x", 1) != 1) rt_fail(r, "write");
    n = collect(outer, seen);
    RT_CHECK(r, n == 1 && seen[0] == 7, "outer: %d events (first %llu), not inner's 7", n,
             n > 0 ? (unsigned long long)seen[0] : 0ULL);
    n = collect(inner, seen);
    RT_CHECK(r, n == 1 && seen[0] == 11, "inner: %d events (first %llu), not 11", n,
             n > 0 ? (unsigned long long)seen[0] : 0ULL);
    n = collect(other, seen);
    RT_CHECK(r, n == 2 && seen[0] + seen[1] == 45, "other: %d events, not 22 and 23", n);
    char c;
    if (read(p[0], &c, 1) != 1) rt_fail(r, "read back");
    n = collect(outer, seen);
    RT_CHECK(r, n == 0, "outer: %d events after draining", n);
    if (!r->failed) rt_add(r, "ok nested epoll and a pipe in two epoll sets");
    return 1;
}

int main(void) {
    if (pipe(p) != 0) rt_die("pipe");
    outer = epoll_create1(EPOLL_CLOEXEC);
    inner = epoll_create1(0);
    other = epoll_create1(0);
    if (outer < 0 || inner < 0 || other < 0) rt_die("epoll_create1");
    add(inner, p[0], 11);
    add(outer, inner, 7);
    add(other, p[0], 22);
    int d = dup(p[0]);
    if (d < 0) rt_die("dup");
    add(other, d, 23);
    rt_serve("epoll-nested", handle);
}
