// epoll registrations keyed by (fd number, open file) that no longer match the fd table (issue 15:
// restore failed with "File exists"; issue 14: the restored program hung). Pipe A's read end was
// registered at fd a (data 111), dup'd to fd b and closed at a; pipe B's read end then took number a
// and was registered there too (data 222): two registrations under fd a. Pipe C's read end is
// registered both at its fd and at a dup of it (data 333 and 334: one file, two registrations).
// /check: a byte written into each pipe is reported under each of its registrations' data, and
// nothing else; each wait is bounded (a lost registration fails, it does not hang).
#include "http.h"

#include <sys/epoll.h>

static int ep, a_w, b_w, c_w;

static int wait_for(uint64_t* seen, int max) {
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 1000);
    for (int i = 0; i < n && i < max; ++i) seen[i] = evs[i].data.u64;
    return n;
}

static int has(uint64_t* seen, int n, uint64_t v) {
    for (int i = 0; i < n; ++i)
        if (seen[i] == v) return 1;
    return 0;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    uint64_t seen[8];
    int n = wait_for(seen, 8);
    RT_CHECK(r, n == 0, "%d events before any write", n);
    struct {
        int w;
        uint64_t want[2];
        int count;
    } cases[] = {{a_w, {111, 0}, 1}, {b_w, {222, 0}, 1}, {c_w, {333, 334}, 2}};
    for (int k = 0; k < 3; ++k) {
        if (write(cases[k].w, "x", 1) != 1) rt_fail(r, "write pipe %d", k);
        n = wait_for(seen, 8);
        RT_CHECK(r, n == cases[k].count, "pipe %d: %d events, not %d", k, n, cases[k].count);
        for (int i = 0; i < cases[k].count; ++i)
            RT_CHECK(r, has(seen, n, cases[k].want[i]), "pipe %d: no event with data %llu", k,
                     (unsigned long long)cases[k].want[i]);
        // Edge-triggered: the next wait sees only the next pipe's edge.
    }
    if (!r->failed) rt_add(r, "ok registrations under closed and reused fd numbers kept");
    return 1;
}

static void add(int fd, uint64_t data) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) rt_die("epoll_ctl");
}

int main(void) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    int a[2], b[2], c[2];
    if (pipe(a) != 0) rt_die("pipe");
    add(a[0], 111);
    int a_dup = dup(a[0]);
    close(a[0]);
    if (pipe(b) != 0) rt_die("pipe");  // b[0] takes a[0]'s number
    if (b[0] != a[0] && dup2(b[0], a[0]) >= 0) {
        close(b[0]);
        b[0] = a[0];
    }
    add(b[0], 222);
    if (pipe(c) != 0) rt_die("pipe");
    add(c[0], 333);
    add(dup(c[0]), 334);
    a_w = a[1];
    b_w = b[1];
    c_w = c[1];
    (void)a_dup;
    rt_serve("epoll-dup", handle);
}
