// Contract: an io_uring instance (fd 42) cannot be recreated: the snapshot must fail, naming the fd
// and the rule. (If io_uring is disabled on the host the program fails to start, and says so.)
#include "http.h"

#include <linux/io_uring.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(SYS_io_uring_setup, 4, &p);
    if (fd < 0 || dup2(fd, 42) < 0) rt_die("io_uring_setup");
    close(fd);
    rt_serve("refuse-io-uring", handle);
}
