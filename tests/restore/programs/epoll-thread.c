// A thread blocked in epoll_wait at the snapshot (on an eventfd). /check writes the eventfd; the
// thread must wake, see the registration's data value and answer through a second eventfd.
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#define DATA 0x5eed0000cafeULL
static int ep, kick, done;
static atomic_int waiting;

static void* waiter(void* arg) {
    (void)arg;
    for (;;) {
        struct epoll_event ev[4];
        atomic_store(&waiting, 1);
        int n = epoll_wait(ep, ev, 4, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rt_die("epoll_wait");
        for (int i = 0; i < n; ++i) {
            uint64_t v = 0;
            if (read(kick, &v, sizeof v) != sizeof v) continue;
            uint64_t answer = ev[i].data.u64 == DATA ? v : 0xbad;
            if (write(done, &answer, sizeof answer) != sizeof answer) rt_die("write");
        }
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    uint64_t v = 7;
    RT_CHECK(r, write(kick, &v, sizeof v) == sizeof v, "write eventfd: %s", strerror(errno));
    struct epoll_event ev;
    int local = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    epoll_ctl(local, EPOLL_CTL_ADD, done, &ev);
    int n = epoll_wait(local, &ev, 1, 2000);
    close(local);
    uint64_t answer = 0;
    RT_CHECK(r, n == 1, "the epoll_wait thread did not answer within 2 s");
    if (n == 1) {
        RT_CHECK(r, read(done, &answer, sizeof answer) == sizeof answer, "read answer: %s", strerror(errno));
        RT_CHECK(r, answer == 7, "the thread answered %#llx (0xbad: wrong epoll data)",
                 (unsigned long long)answer);
    }
    if (!r->failed) rt_add(r, "ok the thread woke from epoll_wait with data %#llx", DATA);
    return 1;
}

int main(void) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    kick = eventfd(0, EFD_CLOEXEC);
    done = eventfd(0, EFD_CLOEXEC);
    if (ep < 0 || kick < 0 || done < 0) rt_die("epoll/eventfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DATA};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, kick, &ev) != 0) rt_die("epoll_ctl");
    pthread_t t;
    if (pthread_create(&t, NULL, waiter, NULL) != 0) rt_die("pthread_create");
    while (!atomic_load(&waiting)) rt_sleep_ms(1);
    rt_sleep_ms(20);
    rt_serve("epoll-thread", handle);
}
