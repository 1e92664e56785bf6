// Contract: an inotify fd (fd 42, watching /function) cannot be recreated: the snapshot must fail,
// naming the fd and the rule.
#include "http.h"

#include <sys/inotify.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, "/function", IN_MODIFY) < 0 || dup2(fd, 42) < 0) rt_die("inotify");
    close(fd);
    rt_serve("refuse-inotify", handle);
}
