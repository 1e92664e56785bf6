// Contract: a vfork in progress (a parent asleep until its child execs or exits, both sharing one
// address space) cannot be frozen: the parent never stops for ptrace. The snapshot must fail, in
// bounded time, naming the processes and the rule.
#include "http.h"

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
        pid_t child = vfork();
        if (child == 0) {
            // Only raw syscalls in a vfork child: it never execs, so its parent waits forever.
            for (;;) syscall(SYS_pause);
        }
        _exit(0);
    }
    rt_wait_vfork_parent(parent);
    rt_serve("refuse-vfork", handle);
}
