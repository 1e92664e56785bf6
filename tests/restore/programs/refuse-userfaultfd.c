// Contract: a region registered with a userfaultfd (missing-page faults handled by the process).
// The registration and the fd cannot be recreated: the snapshot must fail naming the mapping (or the
// fd) and the rule.
#include "http.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    // User-mode-only: allowed without capabilities whatever vm.unprivileged_userfaultfd says.
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (uffd < 0) rt_die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(uffd, UFFDIO_API, &api) != 0) rt_die("UFFDIO_API");
    char* region = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) rt_die("mmap");
    struct uffdio_register reg = {.range = {.start = (unsigned long)region, .len = 4 * 4096},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) rt_die("UFFDIO_REGISTER");
    if (dup2(uffd, 42) < 0) rt_die("dup2");
    rt_serve("refuse-userfaultfd", handle);
}
