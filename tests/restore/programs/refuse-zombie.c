// Contract: a child that exited and was never waited for (a zombie) cannot be restored: the snapshot
// must fail naming it and the rule.
#include "http.h"

#include <sys/wait.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    pid_t child = fork();
    if (child < 0) rt_die("fork");
    if (child == 0) _exit(0);
    // Wait until it is a zombie, without reaping it.
    siginfo_t info;
    if (waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) != 0) rt_die("waitid");
    rt_serve("refuse-zombie", handle);
}
