// Threads parked in futex: four threads wait in pthread_cond_wait (FUTEX_WAIT) at the snapshot.
// /check broadcasts a new generation and verifies every thread wakes, takes the mutex and answers.
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>

#define N 4
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned generation;
static atomic_uint parked, answers;

static void* worker(void* arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    unsigned seen = generation;
    for (;;) {
        atomic_fetch_add(&parked, 1);
        while (generation == seen) pthread_cond_wait(&cond, &lock);
        seen = generation;
        atomic_fetch_add(&answers, 1);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    unsigned before = atomic_load(&answers);
    pthread_mutex_lock(&lock);
    generation++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 200 && atomic_load(&answers) < before + N; ++i) rt_sleep_ms(10);
    unsigned got = atomic_load(&answers) - before;
    RT_CHECK(r, got == N, "%u of %d threads woke from pthread_cond_wait within 2 s", got, N);
    if (!r->failed) rt_add(r, "ok %d threads woke from the futex (generation %u)", N, generation);
    return 1;
}

int main(void) {
    pthread_t t[N];
    for (int i = 0; i < N; ++i)
        if (pthread_create(&t[i], NULL, worker, NULL) != 0) rt_die("pthread_create");
    while (atomic_load(&parked) < N) rt_sleep_ms(1);
    rt_sleep_ms(20);  // they are inside FUTEX_WAIT now
    rt_serve("futex-threads", handle);
}
