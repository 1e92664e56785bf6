// Contract: the process sets its audit login uid (/proc/self/loginuid). A restored process inherits
// the sandbox's and the kernel lets it be set only once: the snapshot must fail naming it.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = open("/proc/self/loginuid", O_WRONLY);
    if (fd < 0 || write(fd, "4242", 4) != 4) rt_die("write /proc/self/loginuid");
    close(fd);
    rt_serve("refuse-loginuid", handle);
}
