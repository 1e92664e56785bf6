// Contract: a regular file open for writing (/tmp/out.log at fd 42) must make the snapshot fail,
// naming the fd and the rule.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int fd = open("/tmp/out.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, 42) < 0 || write(42, "log line\n", 9) != 9) rt_die("open /tmp/out.log");
    close(fd);
    rt_serve("refuse-write-file", handle);
}
