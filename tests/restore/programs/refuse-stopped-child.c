// Contract: a child process stopped by SIGSTOP (job control): the snapshot must fail naming the
// process and the rule, in bounded time.
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
    if (child == 0) {
        raise(SIGSTOP);
        for (;;) pause();
    }
    int status;
    if (waitpid(child, &status, WUNTRACED) != child || !WIFSTOPPED(status)) rt_die("waitpid WUNTRACED");
    rt_serve("refuse-stopped-child", handle);
}
