// PR_SET_CHILD_SUBREAPER, with a child and a grandchild alive at the snapshot. /check: the flag
// reads back; then the child is told to exit, and the orphaned grandchild must be reparented to us
// (not to the sandbox's init, pid 1): it reports its getppid() through a pipe.
#include "http.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static int to_child[2], from_grandchild[2], started[2];
static pid_t child;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int flag = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &flag);
    RT_CHECK(r, flag == 1, "PR_GET_CHILD_SUBREAPER is %d", flag);
    if (write(to_child[1], "x", 1) != 1) rt_fail(r, "cannot tell the child to exit");
    int status = 0;
    if (waitpid(child, &status, 0) != child) rt_fail(r, "child not reaped: %s", strerror(errno));
    pid_t reported = 0;
    if (read(from_grandchild[0], &reported, sizeof reported) != (ssize_t)sizeof reported)
        rt_fail(r, "the grandchild did not report");
    RT_CHECK(r, reported == getpid(), "the orphaned grandchild's parent is %d, not the subreaper %d",
             (int)reported, (int)getpid());
    if (!r->failed) rt_add(r, "ok orphan reparented to the subreaper %d", (int)getpid());
    return 1;
}

int main(void) {
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) rt_die("prctl");
    if (pipe(to_child) != 0 || pipe(from_grandchild) != 0 || pipe(started) != 0) rt_die("pipe");
    child = fork();
    if (child == 0) {
        pid_t grandchild = fork();
        if (grandchild == 0) {
            // Waits until its parent is gone, then says who its parent is now.
            close(to_child[1]);
            pid_t first = getppid();
            if (write(started[1], "g", 1) != 1) _exit(1);
            while (getppid() == first) usleep(2000);
            pid_t now = getppid();
            if (write(from_grandchild[1], &now, sizeof now) < 0) _exit(1);
            pause();
            _exit(0);
        }
        char c;
        if (read(to_child[0], &c, 1) < 0) _exit(1);
        _exit(0);
    }
    // Ready (and snapshotted) only once the grandchild knows its first parent: otherwise a /check soon
    // after a restore could make the child exit before the grandchild, still being forked, read its
    // parent, which would then already be us, and the grandchild would wait for a change for ever.
    char c;
    if (read(started[0], &c, 1) != 1) rt_die("the grandchild did not start");
    rt_serve("child-subreaper", handle);
}
