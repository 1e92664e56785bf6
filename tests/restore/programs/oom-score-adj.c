// oom_score_adj raised to 345 at init (a process may always raise its own).
// /check: /proc/self/oom_score_adj reads 345.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char buf[32] = {0};
    int fd = open("/proc/self/oom_score_adj", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0) rt_fail(r, "cannot read oom_score_adj");
    if (fd >= 0) close(fd);
    RT_CHECK(r, atoi(buf) == 345, "oom_score_adj is %d, not 345", atoi(buf));
    if (!r->failed) rt_add(r, "ok oom_score_adj 345");
    return 1;
}

int main(void) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd < 0 || write(fd, "345", 3) != 3) rt_die("oom_score_adj");
    close(fd);
    rt_serve("oom-score-adj", handle);
}
