// Contract: a thread with an fd table of its own (unshare(CLONE_FILES)) holding fd 42, which the
// process's main thread does not have: the snapshot must fail naming the thread and the rule, not
// restore the thread with the process's fds.
#include "http.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }
static int sync_pipe[2];

static void* own_files(void* arg) {
    (void)arg;
    if (unshare(CLONE_FILES) != 0) rt_die("unshare(CLONE_FILES)");
    int fd = open("data.bin", O_RDONLY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open data.bin as fd 42");
    close(fd);
    if (write(sync_pipe[1], "x", 1) != 1) rt_die("write");
    for (;;) pause();
    return NULL;
}

int main(void) {
    if (pipe(sync_pipe) != 0) rt_die("pipe");
    pthread_t t;
    if (pthread_create(&t, NULL, own_files, NULL) != 0) rt_die("pthread_create");
    char c;
    if (read(sync_pipe[0], &c, 1) != 1) rt_die("read");
    rt_serve("refuse-thread-own-files", handle);
}
