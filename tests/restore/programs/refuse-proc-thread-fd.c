// Contract: fd 42 is /proc/thread-self of a live second thread (/proc/<pid>/task/<tid>). Restore
// opens a process's fds before it makes its other threads, so that path cannot be opened then (the
// trial restore failed "fd 42 open /proc/2/task/3: No such file or directory"): the snapshot must
// fail naming the fd, the thread and the rule.
#include "state_thread.h"

#include <fcntl.h>
#include <pthread.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static void* worker(void* arg) {
    (void)arg;
    int fd = open("/proc/thread-self", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /proc/thread-self as fd 42");
    close(fd);
    state_thread_ready();
    return NULL;
}

int main(void) {
    start_state_thread(worker);
    rt_serve("refuse-proc-thread-fd", handle);
}
