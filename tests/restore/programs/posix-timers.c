// POSIX timers (timer_create) with their ids:
//   A  CLOCK_MONOTONIC, SIGEV_SIGNAL SIGUSR1, sigev_value 0x1234, every 20 ms
//   B  CLOCK_REALTIME, SIGEV_NONE, one shot in an hour
//   C  CLOCK_MONOTONIC, SIGEV_THREAD_ID to a thread of its own (which waits for SIGUSR2), every 20 ms
//   D  CLOCK_BOOTTIME, created and never armed
// /check: every id is still a timer; B has between 50 and 60 minutes left and no interval; D is
// disarmed; within 300 ms A fires again with its sigev_value and id, and C's signal reaches its thread.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

static timer_t a, b, c, d;
static volatile sig_atomic_t a_count, a_bad_value;
static volatile int c_count, c_tid, waiter_tid;

static void on_a(int sig, siginfo_t* info, void* ctx) {
    (void)sig;
    (void)ctx;
    ++a_count;
    if (info->si_value.sival_int != 0x1234 || info->si_code != SI_TIMER) a_bad_value = 1;
}

static void* waiter(void* arg) {
    (void)arg;
    waiter_tid = (int)gettid();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) == 0 && sig == SIGUSR2) {
            c_tid = (int)gettid();
            __atomic_add_fetch(&c_count, 1, __ATOMIC_SEQ_CST);
        }
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct itimerspec its;
    RT_CHECK(r, timer_gettime(a, &its) == 0 && its.it_interval.tv_nsec == 20000000, "timer A lost (%s)",
             strerror(errno));
    RT_CHECK(r,
             timer_gettime(b, &its) == 0 && its.it_interval.tv_sec == 0 && its.it_value.tv_sec >= 3000 &&
                 its.it_value.tv_sec < 3600,
             "timer B: %ld s left", (long)its.it_value.tv_sec);
    RT_CHECK(r, timer_gettime(c, &its) == 0 && its.it_interval.tv_nsec == 20000000, "timer C lost");
    RT_CHECK(r, timer_gettime(d, &its) == 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0,
             "timer D armed or lost");
    int a0 = a_count, c0 = c_count;
    rt_sleep_ms(300);
    RT_CHECK(r, a_count - a0 >= 3, "timer A fired %d times in 300 ms", a_count - a0);
    RT_CHECK(r, !a_bad_value, "timer A's signal lost its sigev_value or si_code");
    RT_CHECK(r, c_count - c0 >= 3 && c_tid == waiter_tid, "timer C fired %d times, in tid %d (want %d)",
             c_count - c0, c_tid, waiter_tid);
    timer_t e;
    struct sigevent none = {.sigev_notify = SIGEV_NONE};
    RT_CHECK(r, timer_create(CLOCK_MONOTONIC, &none, &e) == 0 && e != a && e != b && e != c && e != d,
             "a new timer clashes with a restored one");
    timer_delete(e);
    if (!r->failed)
        rt_add(r, "ok 4 POSIX timers with their ids (%ld %ld %ld %ld)", (long)(intptr_t)a, (long)(intptr_t)b,
               (long)(intptr_t)c, (long)(intptr_t)d);
    return 1;
}

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);  // every thread but the waiter's sigwait leaves it blocked
    struct sigaction sa = {.sa_sigaction = on_a, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t th;
    pthread_create(&th, NULL, waiter, NULL);
    while (!waiter_tid) rt_sleep_ms(1);
    struct sigevent ea = {
        .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1, .sigev_value.sival_int = 0x1234};
    struct sigevent eb = {.sigev_notify = SIGEV_NONE};
    struct sigevent ec = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR2};
    ec._sigev_un._tid = waiter_tid;
    struct sigevent ed = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
    if (timer_create(CLOCK_MONOTONIC, &ea, &a) || timer_create(CLOCK_REALTIME, &eb, &b) ||
        timer_create(CLOCK_MONOTONIC, &ec, &c) || timer_create(CLOCK_BOOTTIME, &ed, &d))
        rt_die("timer_create");
    struct itimerspec periodic = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
    struct itimerspec hour = {.it_value = {3600, 0}};
    timer_settime(a, 0, &periodic, NULL);
    timer_settime(b, 0, &hour, NULL);
    timer_settime(c, 0, &periodic, NULL);
    rt_serve("posix-timers", handle);
}
