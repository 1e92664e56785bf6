// Contract: a thread with an fd table of its own (unshare(CLONE_FILES)) holding fd 42, which the
// process's main thread does not have: the snapshot must fail naming the thread and the rule, not
// restore the thread with the process's fds.
#include "state_thread.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static void* own_files(void* arg) {
    (void)arg;
    if (unshare(CLONE_FILES) != 0) rt_die("unshare(CLONE_FILES)");
    int fd = open("data.bin", O_RDONLY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open data.bin as fd 42");
    close(fd);
    state_thread_ready();
    return NULL;
}

int main(void) {
    start_state_thread(own_files);
    rt_serve("refuse-thread-own-files", handle);
}
