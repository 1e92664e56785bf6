// Contract: an fd of /proc/<pid> names a task; one outside the snapshot (here the sandbox's init,
// pid 1) is not restored with it, so the fd would point at another task or none: the snapshot must
// fail naming the fd, the task and the rule.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = open("/proc/1", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /proc/1 as fd 42");
    close(fd);
    rt_serve("refuse-foreign-proc-fd", handle);
}
