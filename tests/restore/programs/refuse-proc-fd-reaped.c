// Contract: fd 42 is /proc/<pid> of a child that has exited and been reaped since: that task is
// not in the snapshot, the snapshot must fail naming the fd and the rule.
#include "http.h"

#include <fcntl.h>
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
    char p[64];
    snprintf(p, sizeof p, "/proc/%d", (int)child);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /proc/<child> as fd 42");
    close(fd);
    kill(child, SIGKILL);
    if (waitpid(child, NULL, 0) != child) rt_die("waitpid");
    rt_serve("refuse-proc-fd-reaped", handle);
}
