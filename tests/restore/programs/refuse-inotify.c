// Contract: an inotify fd (fd 42) whose watches cannot be numbered again: of two watches, the first
// was removed, so the one left has wd 2 and a fresh instance would give it wd 1. The snapshot must
// fail naming the fd, its wds and the rule.
#include "http.h"

#include <sys/inotify.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, "/function", IN_MODIFY) != 1 ||
        inotify_add_watch(fd, "/tmp", IN_CREATE) != 2 || inotify_rm_watch(fd, 1) != 0 || dup2(fd, 42) < 0)
        rt_die("inotify");
    close(fd);
    rt_serve("refuse-inotify", handle);
}
