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

static volatile pid_t vforker_tid;

static void* vforker(void* arg) {
    (void)arg;
    vforker_tid = (pid_t)syscall(SYS_gettid);
    pid_t child = vfork();
    if (child == 0) {
        for (;;) syscall(SYS_pause);
    }
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, vforker, NULL) != 0) rt_die("pthread_create");
    while (!vforker_tid) rt_sleep_ms(1);
    rt_wait_vfork_parent(vforker_tid);
    rt_serve("refuse-vfork-thread", handle);
}
