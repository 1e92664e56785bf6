// Per-thread blocked-signal masks: the main thread blocks SIGUSR1, thread A blocks SIGUSR2 and SIGHUP,
// thread B blocks SIGTERM and SIGRTMIN+3. /check reads each thread's SigBlk in
// /proc/self/task/<tid>/status, and the main thread's own mask with pthread_sigmask.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static atomic_int started, request[2];
static _Atomic unsigned long long reported[2];
static unsigned long long want[2];

static unsigned long long bit(int sig) {
    return 1ULL << (sig - 1);
}

static void* worker(void* arg) {
    int i = (int)(long)arg;
    sigset_t set;
    sigemptyset(&set);
    if (i == 0) {
        sigaddset(&set, SIGUSR2);
        sigaddset(&set, SIGHUP);
    } else {
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGRTMIN + 3);
    }
    pthread_sigmask(SIG_SETMASK, &set, NULL);
    atomic_fetch_add(&started, 1);
    for (;;) {
        if (atomic_exchange(&request[i], 0)) {
            sigset_t cur;
            pthread_sigmask(SIG_SETMASK, NULL, &cur);
            unsigned long long m = 1ULL << 63;  // "answered"
            for (int sig = 1; sig < 64; ++sig)
                if (sigismember(&cur, sig) == 1) m |= bit(sig);
            atomic_store(&reported[i], m);
        }
        rt_sleep_ms(5);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    RT_CHECK(r, sigismember(&cur, SIGUSR1) == 1, "main thread lost SIGUSR1 from its mask");
    RT_CHECK(r, sigismember(&cur, SIGUSR2) == 0, "main thread has SIGUSR2 blocked");
    char p[64];
    snprintf(p, sizeof p, "/proc/self/task/%d/status", gettid());
    unsigned long long m = strtoull(rt_status_field(p, "SigBlk:"), NULL, 16);
    RT_CHECK(r, m == bit(SIGUSR1), "main SigBlk %llx, want %llx", m, bit(SIGUSR1));
    for (int i = 0; i < 2; ++i) {
        atomic_store(&reported[i], 0);
        atomic_store(&request[i], 1);
    }
    for (int i = 0; i < 2; ++i) {
        for (int k = 0; k < 200 && !atomic_load(&reported[i]); ++k) rt_sleep_ms(10);
        m = atomic_load(&reported[i]);
        RT_CHECK(r, m, "worker %d did not answer", i);
        m &= ~(1ULL << 63);
        RT_CHECK(r, m == want[i], "worker %d mask %llx, want %llx", i, m, want[i]);
    }
    if (!r->failed) rt_add(r, "ok masks main %llx, workers %llx and %llx", bit(SIGUSR1), want[0], want[1]);
    return 1;
}

int main(void) {
    want[0] = bit(SIGUSR2) | bit(SIGHUP);
    want[1] = bit(SIGTERM) | bit(SIGRTMIN + 3);
    pthread_t t;
    for (long i = 0; i < 2; ++i)
        if (pthread_create(&t, NULL, worker, (void*)i) != 0) rt_die("pthread_create");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
    while (atomic_load(&started) < 2) rt_sleep_ms(1);
    rt_serve("sigmask-threads", handle);
}
