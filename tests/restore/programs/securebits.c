// Securebits per thread: SECBIT_KEEP_CAPS set at init with PR_SET_KEEPCAPS (the function holds no
// capability, so PR_SET_SECUREBITS itself is not open to it; restore sets the bits with it).
// /check: PR_GET_KEEPCAPS reads 1 and PR_GET_SECUREBITS is exactly SECBIT_KEEP_CAPS.
#include "http.h"

#include <linux/securebits.h>
#include <sys/prctl.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int keep = prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0);
    int bits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    RT_CHECK(r, keep == 1, "PR_GET_KEEPCAPS is %d", keep);
    RT_CHECK(r, bits == SECBIT_KEEP_CAPS, "securebits are %#x", bits);
    if (!r->failed) rt_add(r, "ok securebits %#x", bits);
    return 1;
}

int main(void) {
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) rt_die("keepcaps");
    rt_serve("securebits", handle);
}
