// The process umask set to 027 at init (process-wide fs state, like cwd). /check: umask reads back 027.
#include "http.h"

#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    mode_t m = umask(027);
    RT_CHECK(r, m == 027, "umask is %03o, not 027", (unsigned)m);
    if (!r->failed) rt_add(r, "ok umask 027");
    return 1;
}

int main(void) {
    umask(027);
    rt_serve("umask", handle);
}
