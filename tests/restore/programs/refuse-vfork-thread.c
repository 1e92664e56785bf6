// Contract: a second thread of the first process is the parent of a vfork in progress (the child
// never execs); the main thread serves as usual. The snapshot must fail in bounded time naming the
// processes and the rule.
#include "http.h"

#include <pthread.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static void* vforker(void* arg) {
    (void)arg;
    pid_t child = vfork();
    if (child == 0) {
        for (;;) syscall(SYS_pause);
    }
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, vforker, NULL) != 0) rt_die("pthread_create");
    rt_sleep_ms(100);
    rt_serve("refuse-vfork-thread", handle);
}
