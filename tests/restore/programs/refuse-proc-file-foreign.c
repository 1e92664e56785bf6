// Contract: fd 42 is a file under /proc/1 (the sandbox's init, outside the snapshot), fd 43 its
// task directory /proc/1/task/1: the snapshot must fail naming an fd, the task and the rule.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int fd = open("/proc/1/status", O_RDONLY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /proc/1/status as fd 42");
    close(fd);
    fd = open("/proc/1/task/1", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 43) != 43) rt_die("open /proc/1/task/1 as fd 43");
    close(fd);
    rt_serve("refuse-proc-file-foreign", handle);
}
