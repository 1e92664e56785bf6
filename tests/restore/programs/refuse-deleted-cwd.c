// Contract: a current directory deleted after the process entered it cannot be restored (restore
// enters it by path): the snapshot must fail naming the process, the directory and the rule.
#include "http.h"

#include <sys/stat.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    if (mkdir("/tmp/rt-cwd-gone", 0755) != 0) rt_die("mkdir /tmp/rt-cwd-gone");
    if (chdir("/tmp/rt-cwd-gone") != 0) rt_die("chdir");
    if (rmdir("/tmp/rt-cwd-gone") != 0) rt_die("rmdir");
    rt_serve("refuse-deleted-cwd", handle);
}
