// Threads that come and go during the checkpoint: two threads create and join short-lived threads
// in a loop, so threads end between the checkpoint's listing of a process's threads and its seizing
// them (the snapshot failed "ptrace SEIZE tid N: No such process"). /check: both loops still turn.
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>

static atomic_long joined[2];

static void* nothing(void* arg) {
    return arg;
}

static void* churner(void* arg) {
    long k = (long)arg;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, nothing, NULL) == 0) pthread_join(t, NULL);
        atomic_fetch_add(&joined[k], 1);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    // Each churner must go on making and joining threads; 2 s, since a restore under a loaded
    // machine (the suite runs three at once) can leave a thread unscheduled for 100 ms.
    long before[2] = {atomic_load(&joined[0]), atomic_load(&joined[1])};
    for (int waited = 0; waited < 2000; waited += 10) {
        if (atomic_load(&joined[0]) > before[0] && atomic_load(&joined[1]) > before[1]) break;
        rt_sleep_ms(10);
    }
    for (int k = 0; k < 2; ++k)
        RT_CHECK(r, atomic_load(&joined[k]) > before[k], "churner %d joined no thread in 2 s", k);
    if (!r->failed) rt_add(r, "ok threads keep coming and going");
    return 1;
}

int main(void) {
    pthread_t a, b;
    if (pthread_create(&a, NULL, churner, (void*)0L) != 0 ||
        pthread_create(&b, NULL, churner, (void*)1L) != 0)
        rt_die("pthread_create");
    rt_serve("thread-churn", handle);
}
