// Contract: a thread with a filesystem context of its own (unshare(CLONE_FS)) whose current
// directory is deleted; the process's main thread is elsewhere: the snapshot must fail naming the
// thread and the rule, not restore the thread in the process's directory.
#include "state_thread.h"

#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static void* own_cwd(void* arg) {
    (void)arg;
    if (unshare(CLONE_FS) != 0) rt_die("unshare(CLONE_FS)");
    if (mkdir("/tmp/rt-cwd-thread", 0755) != 0) rt_die("mkdir");
    if (chdir("/tmp/rt-cwd-thread") != 0) rt_die("chdir");
    if (rmdir("/tmp/rt-cwd-thread") != 0) rt_die("rmdir");
    state_thread_ready();
    return NULL;
}

int main(void) {
    start_state_thread(own_cwd);
    rt_serve("refuse-deleted-cwd-thread", handle);
}
