// Contract: a deleted current directory in a child process, not the first one (the child enters
// /tmp/rt-cwd-child, its parent removes it): the snapshot must fail naming that process.
#include "http.h"

#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int sync[2];
    if (pipe(sync) != 0) rt_die("pipe");
    if (mkdir("/tmp/rt-cwd-child", 0755) != 0) rt_die("mkdir /tmp/rt-cwd-child");
    pid_t child = fork();
    if (child < 0) rt_die("fork");
    if (child == 0) {
        if (chdir("/tmp/rt-cwd-child") != 0) rt_die("chdir");
        if (write(sync[1], "x", 1) != 1) rt_die("write");
        for (;;) pause();
    }
    char c;
    if (read(sync[0], &c, 1) != 1) rt_die("read");
    if (rmdir("/tmp/rt-cwd-child") != 0) rt_die("rmdir");
    rt_serve("refuse-deleted-cwd-child", handle);
}
