// timerfd: a periodic 10 ms CLOCK_MONOTONIC timer (non-blocking, expired 5 times unread at the snapshot)
// and a one-shot CLOCK_REALTIME timer due in 1000 s. /check: the periodic one keeps expiring (reads
// return growing counts, interval still 10 ms), the one-shot one is still armed for the remaining time.
#include "http.h"

#include <fcntl.h>
#include <sys/timerfd.h>

static int periodic, oneshot;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    uint64_t a = 0, b = 0;
    rt_sleep_ms(30);
    RT_CHECK(r, read(periodic, &a, sizeof a) == sizeof a, "first read: %s", strerror(errno));
    rt_sleep_ms(50);
    RT_CHECK(r, read(periodic, &b, sizeof b) == sizeof b, "second read: %s", strerror(errno));
    RT_CHECK(r, b >= 2, "only %llu expirations in 50 ms", (unsigned long long)b);
    struct itimerspec its;
    timerfd_gettime(periodic, &its);
    RT_CHECK(r, its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == 10000000, "interval %ld.%09ld",
             (long)its.it_interval.tv_sec, its.it_interval.tv_nsec);
    RT_CHECK(r, fcntl(periodic, F_GETFL) & O_NONBLOCK, "periodic timerfd lost O_NONBLOCK");
    timerfd_gettime(oneshot, &its);
    RT_CHECK(r, its.it_value.tv_sec > 900 && its.it_value.tv_sec <= 1000, "one-shot timer has %ld s left",
             (long)its.it_value.tv_sec);
    RT_CHECK(r, its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == 0,
             "one-shot timer became periodic");
    int clock = -1;
    char p[64], line[128];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", oneshot);
    FILE* f = fopen(p, "re");
    while (f && fgets(line, sizeof line, f)) sscanf(line, "clockid: %d", &clock);
    if (f) fclose(f);
    RT_CHECK(r, clock == CLOCK_REALTIME, "one-shot timer clock %d, not CLOCK_REALTIME", clock);
    if (!r->failed)
        rt_add(r, "ok periodic: %llu then %llu expirations; one-shot: %ld s left", (unsigned long long)a,
               (unsigned long long)b, (long)its.it_value.tv_sec);
    return 1;
}

int main(void) {
    periodic = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    oneshot = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
    if (periodic < 0 || oneshot < 0) rt_die("timerfd_create");
    struct itimerspec p = {.it_interval = {0, 10000000}, .it_value = {0, 10000000}};
    struct itimerspec o = {.it_value = {1000, 0}};
    if (timerfd_settime(periodic, 0, &p, NULL) != 0 || timerfd_settime(oneshot, 0, &o, NULL) != 0)
        rt_die("timerfd_settime");
    // Expirations pile up unread before the snapshot, as in an idle function: the kernel then shows
    // it_value (0, 0) in fdinfo although the periodic timer is still running.
    rt_sleep_ms(50);
    rt_serve("timerfd", handle);
}
