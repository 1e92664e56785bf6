// Contract: a mapping of a file deleted after it was mapped (/tmp/rt-gone.bin) cannot be restored: the
// snapshot must fail, naming the mapping and the rule.
#include "http.h"

#include <fcntl.h>
#include <sys/mman.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = open("/tmp/rt-gone.bin", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 8192) != 0) rt_die("create /tmp/rt-gone.bin");
    char* p = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) rt_die("mmap");
    close(fd);
    unlink("/tmp/rt-gone.bin");
    rt_serve("refuse-deleted-map", handle);
}
