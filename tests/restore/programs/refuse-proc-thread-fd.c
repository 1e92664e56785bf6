// Contract: fd 42 is /proc/thread-self of a live second thread (/proc/<pid>/task/<tid>). Restore
// opens a process's fds before it makes its other threads, so that path cannot be opened then (the
// trial restore failed "fd 42 open /proc/2/task/3: No such file or directory"): the snapshot must
// fail naming the fd, the thread and the rule.
#include "http.h"

#include <fcntl.h>
#include <pthread.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }
static int sync_pipe[2];

static void* worker(void* arg) {
    (void)arg;
    int fd = open("/proc/thread-self", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /proc/thread-self as fd 42");
    close(fd);
    if (write(sync_pipe[1], "x", 1) != 1) rt_die("write");
    for (;;) pause();
    return NULL;
}

int main(void) {
    if (pipe(sync_pipe) != 0) rt_die("pipe");
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) rt_die("pthread_create");
    char c;
    if (read(sync_pipe[0], &c, 1) != 1) rt_die("read");
    rt_serve("refuse-proc-thread-fd", handle);
}
