// A pending signal at the snapshot: SIGUSR2 is blocked and raised (process-directed, pending), and a
// thread-directed SIGRTMIN+1 is pending on the main thread. The contract (RESTORE-PITFALLS.md) says
// pending signals must not be dropped silently: /check expects both still pending (sigpending) and
// delivered, with their si_value, once unblocked.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static atomic_int usr2, rt1, rt1_value;
static void on_usr2(int sig) {
    (void)sig;
    atomic_fetch_add(&usr2, 1);
}
static void on_rt1(int sig, siginfo_t* si, void* ctx) {
    (void)sig;
    (void)ctx;
    atomic_fetch_add(&rt1, 1);
    atomic_store(&rt1_value, si->si_value.sival_int);
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    sigset_t pending;
    sigpending(&pending);
    int p_usr2 = sigismember(&pending, SIGUSR2), p_rt1 = sigismember(&pending, SIGRTMIN + 1);
    RT_CHECK(r, p_usr2 == 1, "SIGUSR2 (blocked, pending at the snapshot) is no longer pending");
    RT_CHECK(r, p_rt1 == 1, "SIGRTMIN+1 (blocked, pending at the snapshot) is no longer pending");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGRTMIN + 1);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    RT_CHECK(r, atomic_load(&usr2) == 1, "SIGUSR2 handler ran %d times after unblocking", atomic_load(&usr2));
    RT_CHECK(r, atomic_load(&rt1) == 1, "SIGRTMIN+1 handler ran %d times after unblocking",
             atomic_load(&rt1));
    RT_CHECK(r, atomic_load(&rt1) != 1 || atomic_load(&rt1_value) == 77, "SIGRTMIN+1 si_value %d, not 77",
             atomic_load(&rt1_value));
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (!r->failed) rt_add(r, "ok both pending signals survived and were delivered");
    return 1;
}

int main(void) {
    struct sigaction a = {.sa_handler = on_usr2};
    sigaction(SIGUSR2, &a, NULL);
    struct sigaction b = {.sa_sigaction = on_rt1, .sa_flags = SA_SIGINFO};
    sigaction(SIGRTMIN + 1, &b, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    kill(getpid(), SIGUSR2);
    union sigval v = {.sival_int = 77};
    pthread_sigqueue(pthread_self(), SIGRTMIN + 1, v);
    rt_serve("pending-signal", handle);
}
