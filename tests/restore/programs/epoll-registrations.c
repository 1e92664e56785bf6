// epoll with several registrations: eventfd A (EPOLLIN, data 0x1111222233334444), eventfd B
// (EPOLLIN|EPOLLET, data 7), a pipe's read end (EPOLLIN|EPOLLONESHOT, data 0xdead), and an fd that was
// registered then closed (the kernel dropped it). /check: fdinfo lists the same registrations, and
// after writing to all three epoll_wait reports exactly their data; then ET and ONESHOT do not re-fire.
#include "http.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep, a, b, pr, pw;
#define DA 0x1111222233334444ULL
#define DB 7ULL
#define DP 0xdeadULL

static unsigned long long fdinfo_events(int tfd, unsigned long long* data) {
    // The kernel adds EPOLLERR|EPOLLHUP to every registration; compare the rest.
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", ep);
    FILE* f = fopen(p, "re");
    unsigned long long ev = ~0ULL;
    while (f && fgets(line, sizeof line, f)) {
        int fd;
        unsigned e;
        unsigned long long d;
        if (sscanf(line, "tfd: %d events: %x data: %llx", &fd, &e, &d) == 3 && fd == tfd) {
            ev = e & ~(unsigned)(EPOLLERR | EPOLLHUP);
            *data = d;
        }
    }
    if (f) fclose(f);
    return ev;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct {
        int fd;
        unsigned events;
        unsigned long long data;
    } want[] = {{a, EPOLLIN, DA}, {b, EPOLLIN | EPOLLET, DB}, {pr, EPOLLIN | EPOLLONESHOT, DP}};
    for (int i = 0; i < 3; ++i) {
        unsigned long long d = 0, e = fdinfo_events(want[i].fd, &d);
        RT_CHECK(r, e == want[i].events && d == want[i].data,
                 "fd %d registered with events %llx data %llx, want %x %llx", want[i].fd, e, d,
                 want[i].events, want[i].data);
    }
    uint64_t one = 1;
    if (write(a, &one, 8) != 8 || write(b, &one, 8) != 8 || write(pw, "x", 1) != 1)
        rt_fail(r, "write: %s", strerror(errno));
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, 1000);
    int seen = 0;
    for (int i = 0; i < n; ++i) {
        if (ev[i].data.u64 == DA)
            seen |= 1;
        else if (ev[i].data.u64 == DB)
            seen |= 2;
        else if (ev[i].data.u64 == DP)
            seen |= 4;
        else
            rt_fail(r, "unexpected data %llx", (unsigned long long)ev[i].data.u64);
    }
    RT_CHECK(r, n == 3 && seen == 7, "first epoll_wait: %d events, mask %d", n, seen);
    // Level-triggered A fires again; edge-triggered B and the spent one-shot pipe do not.
    n = epoll_wait(ep, ev, 8, 50);
    RT_CHECK(r, n == 1 && ev[0].data.u64 == DA, "second epoll_wait: %d events (want only A's)", n);
    uint64_t v;
    char c;
    if (read(a, &v, 8) != 8 || read(b, &v, 8) != 8 || read(pr, &c, 1) != 1)
        rt_fail(r, "drain: %s", strerror(errno));
    struct epoll_event re = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = DP};
    epoll_ctl(ep, EPOLL_CTL_MOD, pr, &re);  // re-arm, as the state was before
    if (!r->failed) rt_add(r, "ok 3 registrations with their data; ET and ONESHOT semantics kept");
    return 1;
}

int main(void) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    a = eventfd(0, EFD_NONBLOCK);
    b = eventfd(0, EFD_NONBLOCK);
    int p[2];
    if (ep < 0 || a < 0 || b < 0 || pipe2(p, O_NONBLOCK) != 0) rt_die("setup");
    pr = p[0];
    pw = p[1];
    int gone = eventfd(0, 0);
    struct epoll_event e1 = {.events = EPOLLIN, .data.u64 = DA};
    struct epoll_event e2 = {.events = EPOLLIN | EPOLLET, .data.u64 = DB};
    struct epoll_event e3 = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = DP};
    struct epoll_event e4 = {.events = EPOLLIN, .data.u64 = 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &e1) || epoll_ctl(ep, EPOLL_CTL_ADD, b, &e2) ||
        epoll_ctl(ep, EPOLL_CTL_ADD, pr, &e3) || epoll_ctl(ep, EPOLL_CTL_ADD, gone, &e4))
        rt_die("epoll_ctl");
    close(gone);
    rt_serve("epoll-registrations", handle);
}
