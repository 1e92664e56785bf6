// Threads in nanosleep at the snapshot: one sleeps 10 ms at a time and counts ticks, one sleeps 1000 s
// (a -ERESTART_RESTARTBLOCK restart: after a restore it either sleeps on or sees EINTR, and goes back
// to sleep either way). /check: the ticker keeps ticking, and the long sleeper is alive: a SIGUSR1 sent
// to the process (every other thread blocks it, so the kernel picks the sleeper; no tid involved)
// interrupts its sleep and it counts the wake-up.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static atomic_ulong ticks, wakeups, eintr_seen;
static atomic_int started;
static pthread_t long_sleeper;

static void on_usr1(int sig) {
    (void)sig;
}

static void* ticker(void* arg) {
    (void)arg;
    atomic_fetch_add(&started, 1);
    for (;;) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        atomic_fetch_add(&ticks, 1);
    }
    return NULL;
}

static void* sleeper(void* arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    atomic_fetch_add(&started, 1);
    for (;;) {
        struct timespec ts = {1000, 0};
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR) atomic_fetch_add(&eintr_seen, 1);
        atomic_fetch_add(&wakeups, 1);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    unsigned long t0 = atomic_load(&ticks);
    rt_sleep_ms(100);
    unsigned long t1 = atomic_load(&ticks);
    RT_CHECK(r, t1 > t0 + 3, "the 10 ms sleeper ticked %lu times in 100 ms", t1 - t0);
    unsigned long w0 = atomic_load(&wakeups);
    kill(getpid(), SIGUSR1);
    for (int i = 0; i < 200 && atomic_load(&wakeups) == w0; ++i) rt_sleep_ms(10);
    RT_CHECK(r, atomic_load(&wakeups) > w0, "the 1000 s sleeper did not wake on SIGUSR1");
    if (!r->failed)
        rt_add(r, "ok ticks +%lu in 100 ms; long sleeper woke (wakeups %lu, EINTR %lu)", t1 - t0,
               atomic_load(&wakeups), atomic_load(&eintr_seen));
    return 1;
}

int main(void) {
    struct sigaction sa = {.sa_handler = on_usr1};  // no SA_RESTART: nanosleep returns EINTR
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t set;  // blocked in main and the ticker (inherited), unblocked by the sleeper
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, ticker, NULL) != 0 ||
        pthread_create(&long_sleeper, NULL, sleeper, NULL) != 0)
        rt_die("pthread_create");
    while (atomic_load(&started) < 2) rt_sleep_ms(1);
    rt_sleep_ms(30);
    rt_serve("sleep-threads", handle);
}
