// Contract: a shared mapping of a memfd (its fd closed, so only the mapping holds it) must make the
// snapshot fail, naming the mapping and the rule.
#include "http.h"

#include <sys/mman.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int fd = memfd_create("rt-memfd", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 65536) != 0) rt_die("memfd");
    char* p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) rt_die("mmap");
    close(fd);
    strcpy(p, "shared state");
    rt_serve("refuse-memfd-map", handle);
}
