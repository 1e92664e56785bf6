// Contract: an O_PATH fd (fd 42) and a plain fd dup'd to a high number (fd 1000) of a directory
// removed since: the snapshot must fail naming an fd, the directory and the rule.
#include "http.h"

#include <fcntl.h>
#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    if (mkdir("/tmp/rt-opath-gone", 0755) != 0) rt_die("mkdir");
    int fd = open("/tmp/rt-opath-gone", O_PATH | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open O_PATH as fd 42");
    close(fd);
    fd = open("/tmp/rt-opath-gone", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 1000) != 1000) rt_die("open as fd 1000");
    close(fd);
    if (rmdir("/tmp/rt-opath-gone") != 0) rt_die("rmdir");
    rt_serve("refuse-deleted-dir-opath", handle);
}
