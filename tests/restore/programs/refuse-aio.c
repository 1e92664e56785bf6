// Contract: a Linux AIO context (io_setup) alive at the snapshot: its ring is a special mapping
// ("/[aio] (deleted)") whose requests and kernel state cannot be recreated. The snapshot must fail
// naming the mapping and the rule.
#include "http.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, 16, &ctx) != 0) rt_die("io_setup");
    rt_serve("refuse-aio", handle);
}
