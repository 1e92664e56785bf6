// An interval timer: setitimer(ITIMER_REAL) every 2 ms with a SIGALRM handler that counts (SA_RESTART).
// /check: the timer is still armed with a 2 ms interval (getitimer) and the count keeps growing.
// A process that relies on SIGALRM stops working if the restore drops the timer.
// The short period is deliberate: the kernel re-arms ITIMER_REAL only when SIGALRM is dequeued, so a
// timer that expires while the checkpoint has the process frozen reads it_value 0 (interval still set)
// with SIGALRM pending; with 2 ms that case is what a snapshot almost always sees.
#include "http.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>

static atomic_ulong alarms;
static void on_alarm(int sig) {
    (void)sig;
    atomic_fetch_add(&alarms, 1);
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    RT_CHECK(r, it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 2000,
             "ITIMER_REAL interval %ld.%06ld s, not 0.002", (long)it.it_interval.tv_sec,
             (long)it.it_interval.tv_usec);
    unsigned long a0 = atomic_load(&alarms);
    rt_sleep_ms(200);
    unsigned long a1 = atomic_load(&alarms);
    RT_CHECK(r, a1 >= a0 + 20, "%lu SIGALRMs in 200 ms", a1 - a0);
    if (!r->failed) rt_add(r, "ok %lu SIGALRMs in 200 ms", a1 - a0);
    return 1;
}

int main(void) {
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_interval = {0, 2000}, .it_value = {0, 2000}};
    setitimer(ITIMER_REAL, &it, NULL);
    rt_sleep_ms(50);
    rt_serve("itimer", handle);
}
