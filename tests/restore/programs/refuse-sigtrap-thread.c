// Contract: a SIGTRAP pending on a second thread only (it blocks SIGTRAP, tgkill aimed at it), and
// one pending on a child process's main thread: the snapshot must fail naming a thread and the rule.
#include "state_thread.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static void* trapped(void* arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTRAP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGTRAP) != 0) rt_die("tgkill");
    state_thread_ready();
    return NULL;
}

int main(void) {
    start_state_thread(trapped);
    rt_serve("refuse-sigtrap-thread", handle);
}
