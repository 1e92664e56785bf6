// Contract: a file open for writing that was deleted (fd 42, /tmp/heartbeat, unlinked after open, as
// gunicorn's worker heartbeat is) has no contents in the saved /tmp: the snapshot must fail, naming
// the fd and the rule.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = open("/tmp/heartbeat", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || dup2(fd, 42) < 0 || write(42, "beat", 4) != 4 || unlink("/tmp/heartbeat") != 0)
        rt_die("heartbeat");
    close(fd);
    rt_serve("refuse-write-deleted", handle);
}
