// A read-only file fd at an offset: data.bin opened O_RDONLY, 5000 bytes read; a second fd on the same
// file at offset 0 never read; a directory fd (O_DIRECTORY) for openat. /check: the first fd's next
// read continues at byte 5000, the second starts at 0, pread does not move them, openat through the
// directory fd works.
#include "http.h"
#include "data.h"

#include <fcntl.h>

static int at5000, at0, dirfd_;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    off_t pos = lseek(at5000, 0, SEEK_CUR);
    RT_CHECK(r, pos == 5000, "fd %d is at offset %lld, not 5000", at5000, (long long)pos);
    char buf[100];
    RT_CHECK(r, pread(at5000, buf, 10, 100) == 10 && rt_data_matches(buf, 100, 10), "pread at 100");
    ssize_t n = read(at5000, buf, sizeof buf);
    RT_CHECK(r, n == sizeof buf && rt_data_matches(buf, 5000, sizeof buf),
             "read at 5000 gave %zd bytes, wrong data", n);
    lseek(at5000, 5000, SEEK_SET);
    RT_CHECK(r, lseek(at0, 0, SEEK_CUR) == 0, "second fd not at 0");
    n = read(at0, buf, 8);
    RT_CHECK(r, n == 8 && rt_data_matches(buf, 0, 8), "second fd read wrong data");
    lseek(at0, 0, SEEK_SET);
    int fd = openat(dirfd_, RT_DATA_FILE, O_RDONLY | O_CLOEXEC);
    RT_CHECK(r, fd >= 0, "openat through the directory fd: %s", strerror(errno));
    if (fd >= 0) close(fd);
    int fl = fcntl(at5000, F_GETFL);
    RT_CHECK(r, (fl & O_ACCMODE) == O_RDONLY, "access mode changed: %#x", fl);
    if (!r->failed) rt_add(r, "ok fd %d continues at 5000, fd %d at 0", at5000, at0);
    return 1;
}

int main(void) {
    at5000 = open(RT_DATA_FILE, O_RDONLY | O_CLOEXEC);
    at0 = open(RT_DATA_FILE, O_RDONLY);
    dirfd_ = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (at5000 < 0 || at0 < 0 || dirfd_ < 0) rt_die("open");
    char buf[5000];
    if (read(at5000, buf, sizeof buf) != sizeof buf) rt_die("read");
    rt_serve("file-offset", handle);
}
