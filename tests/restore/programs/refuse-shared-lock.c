// Contract: a lock on a file every instance opens (fd 42, /function/data.bin, the function's own
// read-only directory, flock(LOCK_SH)): restored instances would contend for one lock. The snapshot
// must fail naming the fd, the lock and the rule.
#include "http.h"

#include <fcntl.h>
#include <sys/file.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = open("/function/data.bin", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_SH) != 0 || dup2(fd, 42) < 0) rt_die("flock");
    close(fd);
    rt_serve("refuse-shared-lock", handle);
}
