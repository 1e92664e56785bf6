// Contract: a thread with a filesystem context of its own (unshare(CLONE_FS)) whose current
// directory is deleted; the process's main thread is elsewhere: the snapshot must fail naming the
// thread and the rule, not restore the thread in the process's directory.
#include "http.h"

#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }
static int sync_pipe[2];

static void* own_cwd(void* arg) {
    (void)arg;
    if (unshare(CLONE_FS) != 0) rt_die("unshare(CLONE_FS)");
    if (mkdir("/tmp/rt-cwd-thread", 0755) != 0) rt_die("mkdir");
    if (chdir("/tmp/rt-cwd-thread") != 0) rt_die("chdir");
    if (rmdir("/tmp/rt-cwd-thread") != 0) rt_die("rmdir");
    if (write(sync_pipe[1], "x", 1) != 1) rt_die("write");
    for (;;) pause();
    return NULL;
}

int main(void) {
    if (pipe(sync_pipe) != 0) rt_die("pipe");
    pthread_t t;
    if (pthread_create(&t, NULL, own_cwd, NULL) != 0) rt_die("pthread_create");
    char c;
    if (read(sync_pipe[0], &c, 1) != 1) rt_die("read");
    rt_serve("refuse-deleted-cwd-thread", handle);
}
