// Contract: the main thread has ended (pthread_exit) while a second thread serves: the process
// lives on with a dead leader (its State is Z). The snapshot must fail in bounded time naming the
// process and the rule (it was refused as "a zombie" not reaped, which it is not).
#include "http.h"

#include <pthread.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    rt_add(r, "ok serving from a thread, the leader gone");
    return 1;
}

static void* server(void* arg) {
    (void)arg;
    // Ready only once the leader is gone: pthread_exit returns to nothing, but the thread takes a
    // while to end, and a snapshot taken meanwhile saw a live leader and succeeded (a flaky test).
    // (The process's state in /proc is its leader's: Z once the main thread has ended.)
    for (int i = 0; i < 5000 && rt_task_state("/proc/self/stat") != 'Z'; ++i) rt_sleep_ms(1);
    if (rt_task_state("/proc/self/stat") != 'Z') rt_die("the main thread did not end");
    rt_serve("refuse-leader-exited", handle);
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, server, NULL) != 0) rt_die("pthread_create");
    pthread_exit(NULL);
}
