// membarrier registrations (per address space): PRIVATE_EXPEDITED and PRIVATE_EXPEDITED_SYNC_CORE
// registered at init. /check: GET_REGISTRATIONS still lists them and both expedited barriers work
// (each fails with EPERM without its registration).
#include "http.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

static long mb(int cmd) {
    return syscall(SYS_membarrier, cmd, 0, 0);
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    long regs = mb(MEMBARRIER_CMD_GET_REGISTRATIONS);
    RT_CHECK(r,
             regs >= 0 && (regs & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) &&
                 (regs & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE),
             "registrations %#lx lack PRIVATE_EXPEDITED or its SYNC_CORE", regs);
    RT_CHECK(r, mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0, "PRIVATE_EXPEDITED barrier: %s", strerror(errno));
    RT_CHECK(r, mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0, "SYNC_CORE barrier: %s",
             strerror(errno));
    RT_CHECK(r, mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) != 0, "RSEQ barrier works though never registered");
    if (!r->failed) rt_add(r, "ok membarrier registrations %#lx", regs);
    return 1;
}

int main(void) {
    if (mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) rt_die("membarrier register");
    if (mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) != 0) rt_die("membarrier register sync core");
    rt_serve("membarrier", handle);
}
