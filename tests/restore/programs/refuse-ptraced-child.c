// Contract: the function traces its own child (PTRACE_SEIZE, then PTRACE_INTERRUPT: the child sits in
// a ptrace stop), and that child's second thread is traced too. The snapshot must fail in bounded
// time naming the traced process and the rule.
#include "http.h"

#include <pthread.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    pid_t child = fork();
    if (child < 0) rt_die("fork");
    if (child == 0) {
        for (;;) pause();
    }
    if (ptrace(PTRACE_SEIZE, child, NULL, NULL) != 0) rt_die("PTRACE_SEIZE");
    if (ptrace(PTRACE_INTERRUPT, child, NULL, NULL) != 0) rt_die("PTRACE_INTERRUPT");
    int status;
    if (waitpid(child, &status, __WALL) != child) rt_die("waitpid");
    rt_serve("refuse-ptraced-child", handle);
}
