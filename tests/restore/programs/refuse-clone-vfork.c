// Contract: a child process made with clone(CLONE_VFORK) but without CLONE_VM: its parent (a second
// process of the function) sleeps until the child execs or exits, yet the two do not share an
// address space. The child sleeps in nanosleep. The snapshot must fail in bounded time naming the
// processes and the rule.
#include "http.h"

#include <signal.h>
#include <sched.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    pid_t parent = fork();
    if (parent < 0) rt_die("fork");
    if (parent == 0) {
        // clone3 is answered ENOSYS by the sandbox's filter (as by Docker's): clone, the same flags.
        long child = syscall(SYS_clone, CLONE_VFORK | SIGCHLD, 0, 0, 0, 0);
        if (child < 0) rt_die("clone(CLONE_VFORK)");
        if (child == 0) {
            for (;;) {
                struct timespec t = {3600, 0};
                syscall(SYS_nanosleep, &t, NULL);
            }
        }
        _exit(0);
    }
    rt_wait_vfork_parent(parent);
    rt_serve("refuse-clone-vfork", handle);
}
