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
    rt_serve("refuse-leader-exited", handle);
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, server, NULL) != 0) rt_die("pthread_create");
    pthread_exit(NULL);
}
