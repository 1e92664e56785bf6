// Signal dispositions: SIGUSR1 has an SA_SIGINFO|SA_RESTART handler with SIGUSR2 in its sa_mask,
// SIGPIPE is ignored, SIGHUP has a plain handler. /check: sigaction reads back the same handlers,
// flags and masks, and signals raised after the restore reach the handlers (with their si_value).
#include "http.h"

#include <signal.h>
#include <stdatomic.h>

static atomic_int usr1_count, hup_count, last_value;

static void on_usr1(int sig, siginfo_t* si, void* ctx) {
    (void)sig;
    (void)ctx;
    atomic_fetch_add(&usr1_count, 1);
    atomic_store(&last_value, si->si_value.sival_int);
}
static void on_hup(int sig) {
    (void)sig;
    atomic_fetch_add(&hup_count, 1);
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct sigaction sa;
    sigaction(SIGUSR1, NULL, &sa);
    RT_CHECK(r, sa.sa_sigaction == on_usr1, "SIGUSR1 handler is %p, not %p", (void*)sa.sa_sigaction,
             (void*)on_usr1);
    RT_CHECK(r, (sa.sa_flags & (SA_SIGINFO | SA_RESTART)) == (SA_SIGINFO | SA_RESTART), "SIGUSR1 flags %#x",
             (unsigned)sa.sa_flags);
    RT_CHECK(r, sigismember(&sa.sa_mask, SIGUSR2) == 1, "SIGUSR2 missing from SIGUSR1's sa_mask");
    sigaction(SIGPIPE, NULL, &sa);
    RT_CHECK(r, sa.sa_handler == SIG_IGN, "SIGPIPE is no longer ignored");
    sigaction(SIGHUP, NULL, &sa);
    RT_CHECK(r, sa.sa_handler == on_hup, "SIGHUP handler lost");
    RT_CHECK(r, !(sa.sa_flags & SA_RESTART), "SIGHUP gained SA_RESTART");
    sigaction(SIGTERM, NULL, &sa);
    RT_CHECK(r, sa.sa_handler == SIG_DFL, "SIGTERM is not SIG_DFL");
    int before = atomic_load(&usr1_count);
    union sigval v = {.sival_int = 4242};
    sigqueue(getpid(), SIGUSR1, v);
    int hup_before = atomic_load(&hup_count);
    raise(SIGHUP);
    kill(getpid(), SIGPIPE);  // ignored: must not kill us
    for (int i = 0; i < 100 && atomic_load(&usr1_count) == before; ++i) rt_sleep_ms(10);
    RT_CHECK(r, atomic_load(&usr1_count) == before + 1, "SIGUSR1 handler ran %d times",
             atomic_load(&usr1_count) - before);
    RT_CHECK(r, atomic_load(&last_value) == 4242, "si_value %d, not 4242", atomic_load(&last_value));
    RT_CHECK(r, atomic_load(&hup_count) == hup_before + 1, "SIGHUP handler did not run");
    if (!r->failed) rt_add(r, "ok handlers, flags and masks kept; usr1 count %d", atomic_load(&usr1_count));
    return 1;
}

int main(void) {
    struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ign, NULL);
    struct sigaction hup = {.sa_handler = on_hup};
    sigaction(SIGHUP, &hup, NULL);
    union sigval v = {.sival_int = 1};
    sigqueue(getpid(), SIGUSR1, v);  // the handler works before the snapshot too
    rt_serve("signal-handler", handle);
}
