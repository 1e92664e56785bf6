// Contract: a SIGTRAP pending on a second thread only (it blocks SIGTRAP, tgkill aimed at it), and
// one pending on a child process's main thread: the snapshot must fail naming a thread and the rule.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }
static int sync_pipe[2];

static void* trapped(void* arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTRAP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGTRAP) != 0) rt_die("tgkill");
    if (write(sync_pipe[1], "x", 1) != 1) rt_die("write");
    for (;;) pause();
    return NULL;
}

int main(void) {
    if (pipe(sync_pipe) != 0) rt_die("pipe");
    pthread_t t;
    if (pthread_create(&t, NULL, trapped, NULL) != 0) rt_die("pthread_create");
    char c;
    if (read(sync_pipe[0], &c, 1) != 1) rt_die("read");
    rt_serve("refuse-sigtrap-thread", handle);
}
