// Many threads: 32 workers, half parked in pthread_cond_wait, half in a 5 ms nanosleep loop. /check:
// /proc/self/task lists 33 tasks with the same tids as at boot, every waiter wakes on a broadcast and
// every sleeper keeps counting.
#include "http.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>

#define N 32
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned generation;
static atomic_uint woke, started;
static atomic_ulong sleeps[N];
static pid_t tids[N];

static void* waiter(void* arg) {
    int id = (int)(long)arg;
    tids[id] = gettid();
    pthread_mutex_lock(&lock);
    unsigned seen = generation;
    atomic_fetch_add(&started, 1);
    for (;;) {
        while (generation == seen) pthread_cond_wait(&cond, &lock);
        seen = generation;
        atomic_fetch_add(&woke, 1);
    }
    return NULL;
}

static void* sleeper(void* arg) {
    int id = (int)(long)arg;
    tids[id] = gettid();
    atomic_fetch_add(&started, 1);
    for (;;) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        atomic_fetch_add(&sleeps[id], 1);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int tasks = 0;
    DIR* d = opendir("/proc/self/task");
    struct dirent* e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') tasks++;
    if (d) closedir(d);
    RT_CHECK(r, tasks == N + 1, "%d tasks, want %d", tasks, N + 1);
    for (int i = 0; i < N; ++i) {
        char p[64];
        snprintf(p, sizeof p, "/proc/self/task/%d", tids[i]);
        RT_CHECK(r, access(p, F_OK) == 0, "thread %d (tid %d) is gone", i, tids[i]);
    }
    unsigned long before[N];
    for (int i = 1; i < N; i += 2) before[i] = atomic_load(&sleeps[i]);
    unsigned w0 = atomic_load(&woke);
    pthread_mutex_lock(&lock);
    generation++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int k = 0; k < 200 && atomic_load(&woke) < w0 + N / 2; ++k) rt_sleep_ms(10);
    RT_CHECK(r, atomic_load(&woke) - w0 == N / 2, "%u of %d waiters woke", atomic_load(&woke) - w0, N / 2);
    rt_sleep_ms(50);
    int stuck = 0;
    for (int i = 1; i < N; i += 2)
        if (atomic_load(&sleeps[i]) == before[i]) stuck++;
    RT_CHECK(r, stuck == 0, "%d of %d sleepers stopped counting", stuck, N / 2);
    if (!r->failed)
        rt_add(r, "ok %d threads alive with their tids: %d waiters woke, %d sleepers counting", N, N / 2,
               N / 2);
    return 1;
}

int main(void) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    for (long i = 0; i < N; ++i) {
        pthread_t t;
        if (pthread_create(&t, &attr, i % 2 ? sleeper : waiter, (void*)i) != 0) rt_die("pthread_create");
    }
    while (atomic_load(&started) < N) rt_sleep_ms(1);
    rt_sleep_ms(30);
    rt_serve("many-threads", handle);
}
