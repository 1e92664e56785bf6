// O_PATH fds (a file and a directory of the function), and O_RDONLY|O_NOFOLLOW|O_NOATIME flags:
//   fd 42  /function/data.bin, O_PATH
//   fd 43  /function/subdir, O_PATH|O_DIRECTORY
// /check: both still O_PATH on the same inodes; openat through fd 43 reaches subdir/marker.txt; a
// read through fd 42 fails with EBADF (an O_PATH fd is not open for reading).
#include "http.h"

#include <fcntl.h>
#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct stat a, b;
    RT_CHECK(r, (fcntl(42, F_GETFL) & O_PATH) && (fcntl(43, F_GETFL) & O_PATH), "O_PATH lost: %#x %#x",
             fcntl(42, F_GETFL), fcntl(43, F_GETFL));
    RT_CHECK(r, fstat(42, &a) == 0 && stat("/function/data.bin", &b) == 0 && a.st_ino == b.st_ino,
             "fd 42 is not /function/data.bin");
    RT_CHECK(r, fstat(43, &a) == 0 && S_ISDIR(a.st_mode), "fd 43 is not a directory");
    int m = openat(43, "marker.txt", O_RDONLY | O_CLOEXEC);
    char buf[64] = {0};
    RT_CHECK(r, m >= 0 && read(m, buf, sizeof buf - 1) > 0 && strncmp(buf, "marker of o-path", 16) == 0,
             "openat through fd 43 failed: '%s'", buf);
    if (m >= 0) close(m);
    errno = 0;
    RT_CHECK(r, read(42, buf, 1) < 0 && errno == EBADF, "read through an O_PATH fd: %s", strerror(errno));
    if (!r->failed) rt_add(r, "ok O_PATH fds on a file and a directory");
    return 1;
}

int main(void) {
    int f = open("/function/data.bin", O_PATH | O_CLOEXEC);
    int d = open("/function/subdir", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (f < 0 || d < 0 || dup2(f, 42) < 0 || dup2(d, 43) < 0) rt_die("O_PATH");
    close(f);
    close(d);
    rt_serve("o-path", handle);
}
