// Thread ids: glibc keeps each thread's tid in its pthread struct (pthread_kill, robust mutexes use it),
// so a restored thread must have its tid back. Two workers record gettid() at boot. /check: each worker
// still has that tid (gettid() inside it), /proc/self/task lists it, and pthread_kill reaches each
// worker (its SIGUSR1 handler records which thread ran it). Threads that ended before the snapshot
// leave gaps in the tids (a fresh pid namespace would hand out the same tids in order anyway: only
// with gaps does a restore that ignored the tids fail).
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static pthread_t threads[2];
static pid_t boot_tid[2];
static atomic_int started, request[2], same_tid[2];
static _Atomic pid_t handled_by;

static void on_usr1(int sig) {
    (void)sig;
    atomic_store(&handled_by, gettid());
}

static void* worker(void* arg) {
    int i = (int)(long)arg;
    boot_tid[i] = gettid();
    atomic_fetch_add(&started, 1);
    for (;;) {
        if (atomic_exchange(&request[i], 0)) atomic_store(&same_tid[i], gettid() == boot_tid[i] ? 1 : 2);
        rt_sleep_ms(5);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    for (int i = 0; i < 2; ++i) {
        atomic_store(&same_tid[i], 0);
        atomic_store(&request[i], 1);
        for (int k = 0; k < 200 && !atomic_load(&same_tid[i]); ++k) rt_sleep_ms(10);
        RT_CHECK(r, atomic_load(&same_tid[i]) == 1, "worker %d: gettid() is not its boot tid %d", i,
                 boot_tid[i]);
        char p[64];
        snprintf(p, sizeof p, "/proc/self/task/%d", boot_tid[i]);
        RT_CHECK(r, access(p, F_OK) == 0, "worker %d: %s does not exist", i, p);
        atomic_store(&handled_by, 0);
        int rc = pthread_kill(threads[i], SIGUSR1);
        RT_CHECK(r, rc == 0, "pthread_kill(worker %d): %s", i, strerror(rc));
        for (int k = 0; k < 200 && !atomic_load(&handled_by); ++k) rt_sleep_ms(10);
        RT_CHECK(r, atomic_load(&handled_by) == boot_tid[i],
                 "pthread_kill(worker %d) ran the handler in tid %d, not %d", i, atomic_load(&handled_by),
                 boot_tid[i]);
    }
    RT_CHECK(r, boot_tid[0] > getpid() + 3 && boot_tid[1] > boot_tid[0] + 3,
             "tids %d and %d have no gaps after pid %d", boot_tid[0], boot_tid[1], getpid());
    if (!r->failed)
        rt_add(r, "ok workers keep tids %d and %d; pthread_kill reaches them", boot_tid[0], boot_tid[1]);
    return 1;
}

static void* short_lived(void* arg) {
    return arg;
}

// A thread that starts and ends: its tid is not used again before the snapshot.
static void leave_gap(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, short_lived, NULL) != 0 || pthread_join(t, NULL) != 0)
        rt_die("short-lived thread");
}

int main(void) {
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    for (long i = 0; i < 2; ++i) {
        for (int k = 0; k < 3; ++k) leave_gap();
        if (pthread_create(&threads[i], NULL, worker, (void*)i) != 0) rt_die("pthread_create");
    }
    while (atomic_load(&started) < 2) rt_sleep_ms(1);
    rt_serve("thread-tids", handle);
}
