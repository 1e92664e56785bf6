// Contract: a regular file open for writing outside the instance's private storage (fd 42, /proc's
// comm file of the process, opened O_WRONLY) must make the snapshot fail, naming the fd, the file and
// the rule. (Files open for writing in the writable layer, /tmp or /dev/shm are restored:
// private-write-files.)
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = open("/proc/self/comm", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, 42) < 0) rt_die("open /proc/self/comm");
    close(fd);
    rt_serve("refuse-write-file", handle);
}
