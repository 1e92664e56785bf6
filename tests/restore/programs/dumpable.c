// PR_SET_DUMPABLE 0 (no core dumps, /proc/PID files owned by root, no ptrace by peers).
// /check: PR_GET_DUMPABLE reads 0.
#include "http.h"

#include <sys/prctl.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int v = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    RT_CHECK(r, v == 0, "PR_GET_DUMPABLE is %d, not 0", v);
    if (!r->failed) rt_add(r, "ok not dumpable");
    return 1;
}

int main(void) {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) rt_die("prctl");
    rt_serve("dumpable", handle);
}
