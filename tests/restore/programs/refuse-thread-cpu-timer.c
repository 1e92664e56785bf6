// Contract: a POSIX timer on a thread's CPU clock (timer_create(CLOCK_THREAD_CPUTIME_ID)) names a
// clock of the thread that made it, which a restore cannot name again: the snapshot must fail naming
// the timer and the rule. (Timers of the other clocks are restored: posix-timers.)
#include "http.h"

#include <signal.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
    signal(SIGUSR1, SIG_IGN);
    timer_t t;
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &ev, &t) != 0) rt_die("timer_create");
    struct itimerspec its = {.it_interval = {1, 0}, .it_value = {1, 0}};
    timer_settime(t, 0, &its, NULL);
    rt_serve("refuse-thread-cpu-timer", handle);
}
