// Not a state program: the target of the fault-injection tests (FaultInjection in restore_test.cpp),
// which copy it under a name of their own so that they can look for anything it left. A child
// process and a thread, so that a failed restore has several processes and threads to kill and reap.
#include "http.h"

#include <pthread.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    rt_add(r, "ok fault-target");
    return 1;
}

static void* sleeper(void* arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(void) {
    pid_t child = fork();
    if (child < 0) rt_die("fork");
    if (child == 0) {
        for (;;) pause();
    }
    pthread_t t;
    if (pthread_create(&t, NULL, sleeper, NULL) != 0) rt_die("pthread_create");
    rt_serve("fault-target", handle);
}
