// eventfd counters: a plain eventfd holding 42, a semaphore eventfd holding 3 (non-blocking), an
// empty one. /check: the first reads 42, the semaphore gives 1, 1, 1 then EAGAIN, the empty one has
// nothing; writes work afterwards.
#include "http.h"

#include <fcntl.h>
#include <sys/eventfd.h>

static int plain, sem, empty;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    uint64_t v = 0;
    RT_CHECK(r, read(plain, &v, sizeof v) == sizeof v && v == 42, "plain eventfd read %llu, not 42",
             (unsigned long long)v);
    for (int i = 0; i < 3; ++i) {
        v = 0;
        RT_CHECK(r, read(sem, &v, sizeof v) == sizeof v && v == 1, "semaphore read %d gave %llu (%s)", i,
                 (unsigned long long)v, strerror(errno));
    }
    errno = 0;
    RT_CHECK(r, read(sem, &v, sizeof v) < 0 && errno == EAGAIN, "semaphore not empty after 3 reads");
    RT_CHECK(r, fcntl(empty, F_GETFL) & O_NONBLOCK, "empty eventfd lost O_NONBLOCK");
    RT_CHECK(r, read(empty, &v, sizeof v) < 0 && errno == EAGAIN, "empty eventfd is not empty");
    v = 5;
    RT_CHECK(r, write(plain, &v, sizeof v) == sizeof v, "write: %s", strerror(errno));
    RT_CHECK(r, read(plain, &v, sizeof v) == sizeof v && v == 5, "write/read round trip gave %llu",
             (unsigned long long)v);
    v = 42;
    if (write(plain, &v, sizeof v) != sizeof v) rt_fail(r, "refill");
    v = 3;
    if (write(sem, &v, sizeof v) != sizeof v) rt_fail(r, "refill semaphore");
    if (!r->failed) rt_add(r, "ok counter 42, semaphore 3, empty stays empty");
    return 1;
}

int main(void) {
    plain = eventfd(42, EFD_CLOEXEC);
    sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    empty = eventfd(0, EFD_NONBLOCK);
    if (plain < 0 || sem < 0 || empty < 0) rt_die("eventfd");
    rt_serve("eventfd", handle);
}
