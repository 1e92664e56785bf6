// Contract: fd 42 is a pidfd of the process's parent, the sandbox's init (outside the snapshot):
// the snapshot must fail naming the fd and the rule.
#include "http.h"

#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = (int)syscall(SYS_pidfd_open, getppid(), 0);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("pidfd_open(parent) as fd 42");
    close(fd);
    rt_serve("refuse-pidfd-parent", handle);
}
