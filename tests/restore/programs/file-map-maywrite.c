// Shared file mappings mapped read-only, whose later mprotect(PROT_WRITE) depends on how the file
// was opened: /tmp/rt-maywrite.bin opened read-write (VmFlags mw: the mprotect works and writes reach
// the file) and data.bin opened read-only (the mprotect fails with EACCES). /check: the same after
// restore.
#include "http.h"

#include <fcntl.h>
#include <sys/mman.h>

static char *rw_opened, *ro_opened;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int rc = mprotect(ro_opened, 4096, PROT_READ | PROT_WRITE);
    RT_CHECK(r, rc != 0 && errno == EACCES, "mprotect(PROT_WRITE) of the read-only-opened mapping: %s",
             rc == 0 ? "succeeded" : strerror(errno));
    rc = mprotect(rw_opened, 4096, PROT_READ | PROT_WRITE);
    RT_CHECK(r, rc == 0, "mprotect(PROT_WRITE) of the read-write-opened mapping: %s", strerror(errno));
    if (rc == 0) {
        rw_opened[1] = 'W';
        msync(rw_opened, 4096, MS_SYNC);
        char c = 0;
        int fd = open("/tmp/rt-maywrite.bin", O_RDONLY);
        if (fd < 0 || pread(fd, &c, 1, 1) != 1) rt_fail(r, "cannot read the file back");
        if (fd >= 0) close(fd);
        RT_CHECK(r, c == 'W', "a write through the mapping did not reach the file");
        mprotect(rw_opened, 4096, PROT_READ);
    }
    RT_CHECK(r, ro_opened[0] == 'p', "data.bin mapping reads %c", ro_opened[0]);
    if (!r->failed) rt_add(r, "ok mprotect as before: EACCES read-only-opened, allowed read-write-opened");
    return 1;
}

int main(void) {
    int fd = open("/tmp/rt-maywrite.bin", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) rt_die("tmp file");
    if (pwrite(fd, "m", 1, 0) != 1) rt_die("pwrite");
    rw_opened = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    fd = open("data.bin", O_RDONLY);
    if (fd < 0) rt_die("data.bin");
    ro_opened = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (rw_opened == MAP_FAILED || ro_opened == MAP_FAILED) rt_die("mmap");
    rt_serve("file-map-maywrite", handle);
}
