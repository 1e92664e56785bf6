// The working directory changed to a subdirectory of the function (/function/subdir). /check: getcwd
// and /proc/self/cwd name it, and a relative open of marker.txt works.
#include "http.h"

#include <fcntl.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char buf[512] = {0}, link[512] = {0};
    RT_CHECK(r, getcwd(buf, sizeof buf) && strcmp(buf, "/function/subdir") == 0, "getcwd '%s'", buf);
    ssize_t n = readlink("/proc/self/cwd", link, sizeof link - 1);
    RT_CHECK(r, n > 0 && strcmp(link, "/function/subdir") == 0, "/proc/self/cwd -> '%s'", link);
    int fd = open("marker.txt", O_RDONLY | O_CLOEXEC);
    char m[64] = {0};
    RT_CHECK(r, fd >= 0 && read(fd, m, sizeof m - 1) > 0 && strncmp(m, "marker", 6) == 0,
             "relative open of marker.txt: %s", fd < 0 ? strerror(errno) : m);
    if (fd >= 0) close(fd);
    if (!r->failed) rt_add(r, "ok cwd %s", buf);
    return 1;
}

int main(void) {
    if (chdir("subdir") != 0) rt_die("chdir subdir");
    rt_serve("cwd", handle);
}
