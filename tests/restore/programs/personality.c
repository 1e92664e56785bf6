// personality(ADDR_NO_RANDOMIZE | UNAME26) set at init. /check: personality(0xffffffff) reads it
// back and uname reports a 2.6.x release (UNAME26 in effect).
#include "http.h"

#include <sys/personality.h>
#include <sys/utsname.h>

#define WANTED (ADDR_NO_RANDOMIZE | UNAME26)

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int p = personality(0xffffffff);
    RT_CHECK(r, p == WANTED, "personality is %#x, not %#x", p, WANTED);
    struct utsname u;
    uname(&u);
    RT_CHECK(r, strncmp(u.release, "2.6.", 4) == 0, "uname release %s, UNAME26 not in effect", u.release);
    if (!r->failed) rt_add(r, "ok personality %#x, release %s", p, u.release);
    return 1;
}

int main(void) {
    if (personality(WANTED) < 0) rt_die("personality");
    rt_serve("personality", handle);
}
