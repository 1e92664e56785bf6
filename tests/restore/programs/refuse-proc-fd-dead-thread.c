// Contract: fd 42 is /proc/thread-self of a thread that has ended since (/proc/<pid>/task/<tid>):
// the process is in the snapshot but that task is not; the snapshot must fail naming the fd and the
// rule (a restore cannot open it again).
#include "http.h"

#include <fcntl.h>
#include <pthread.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static void* opener(void* arg) {
    (void)arg;
    int fd = open("/proc/thread-self", O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dup2(fd, 42) != 42) rt_die("open /proc/thread-self as fd 42");
    close(fd);
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, opener, NULL) != 0) rt_die("pthread_create");
    pthread_join(t, NULL);
    rt_serve("refuse-proc-fd-dead-thread", handle);
}
