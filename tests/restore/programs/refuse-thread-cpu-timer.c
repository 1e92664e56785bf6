// Contract: a POSIX timer (timer_create, CLOCK_MONOTONIC, SIGEV_SIGNAL) cannot be restored yet: the
// snapshot must fail, naming the timer and the rule.
#include "http.h"

#include <signal.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
    signal(SIGUSR1, SIG_IGN);
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0) rt_die("timer_create");
    struct itimerspec its = {.it_interval = {1, 0}, .it_value = {1, 0}};
    timer_settime(t, 0, &its, NULL);
    rt_serve("refuse-posix-timer", handle);
}
