// Contract: an inotify watch (fd 42, wd 1) on a file with two hard links in /tmp: its inode is at two
// paths, and re-adding it by one of them after restore could watch the other copy. The snapshot must
// fail naming the watch and both paths.
#include "http.h"

#include <fcntl.h>
#include <sys/inotify.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int f = open("/tmp/watched", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0 || link("/tmp/watched", "/tmp/watched-too") != 0) rt_die("link");
    close(f);
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, "/tmp/watched", IN_MODIFY) != 1 || dup2(fd, 42) < 0)
        rt_die("inotify");
    close(fd);
    rt_serve("refuse-inotify-hardlink", handle);
}
