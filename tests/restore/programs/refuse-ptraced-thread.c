// Contract: a child process traces a second thread of its parent (the first process), not its
// leader: the snapshot must fail in bounded time naming the traced thread and the rule.
#include "state_thread.h"

#include <pthread.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}
static int done_pipe[2];
static pid_t worker_tid;

static void* worker(void* arg) {
    (void)arg;
    worker_tid = (pid_t)syscall(SYS_gettid);
    state_thread_ready();
    return NULL;
}

int main(void) {
    if (pipe(done_pipe) != 0) rt_die("pipe");
    start_state_thread(worker);
    pid_t tracer = fork();
    if (tracer < 0) rt_die("fork");
    if (tracer == 0) {
        if (ptrace(PTRACE_SEIZE, worker_tid, NULL, NULL) != 0) rt_die("PTRACE_SEIZE of the parent's thread");
        if (write(done_pipe[1], "x", 1) != 1) rt_die("write");
        for (;;) {
            int status;
            if (waitpid(worker_tid, &status, __WALL) < 0)
                pause();
            else
                ptrace(PTRACE_CONT, worker_tid, NULL, NULL);
        }
    }
    char c;
    if (read(done_pipe[0], &c, 1) != 1) rt_die("tracer failed");
    rt_serve("refuse-ptraced-thread", handle);
}
