// Contract: an fd of a directory deleted after it was opened cannot be reopened by path: the
// snapshot must fail naming the fd, the directory and the rule.
#include "http.h"

#include <fcntl.h>
#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    if (mkdir("/tmp/rt-dir-gone", 0755) != 0) rt_die("mkdir /tmp/rt-dir-gone");
    int fd = open("/tmp/rt-dir-gone", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /tmp/rt-dir-gone as fd 42");
    close(fd);
    if (rmdir("/tmp/rt-dir-gone") != 0) rt_die("rmdir");
    rt_serve("refuse-deleted-dir-fd", handle);
}
