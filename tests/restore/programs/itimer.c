// An interval timer: setitimer(ITIMER_REAL) every 20 ms with a SIGALRM handler that counts (SA_RESTART).
// /check: the timer is still armed with a 20 ms interval (getitimer) and the count keeps growing.
// A process that relies on SIGALRM stops working if the restore drops the timer.
#include "http.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>

static atomic_ulong alarms;
static void on_alarm(int sig) { (void)sig; atomic_fetch_add(&alarms, 1); }

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    RT_CHECK(r, it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 20000, "ITIMER_REAL interval %ld.%06ld s, not 0.020",
             (long)it.it_interval.tv_sec, (long)it.it_interval.tv_usec);
    unsigned long a0 = atomic_load(&alarms);
    rt_sleep_ms(200);
    unsigned long a1 = atomic_load(&alarms);
    RT_CHECK(r, a1 >= a0 + 3, "%lu SIGALRMs in 200 ms", a1 - a0);
    if (!r->failed) rt_add(r, "ok %lu SIGALRMs in 200 ms", a1 - a0);
    return 1;
}

int main(void) {
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_interval = {0, 20000}, .it_value = {0, 20000}};
    setitimer(ITIMER_REAL, &it, NULL);
    rt_sleep_ms(50);
    rt_serve("itimer", handle);
}
