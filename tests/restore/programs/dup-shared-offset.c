// Two fds sharing one open file description (dup): reading through one moves the other's offset, and
// F_SETFL on one shows on the other. /check verifies they are still one description after the restore
// (offsets, and kcmp where the sandbox's seccomp filter allows it: the default profile denies kcmp,
// as Docker's does), not two separately opened files.
#include "http.h"
#include "data.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>

static int a, b;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    long same = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b);
    int kcmp_denied = same < 0 && errno == EPERM;
    RT_CHECK(r, same == 0 || kcmp_denied, "fds %d and %d are different open file descriptions (kcmp %ld)", a,
             b, same);
    RT_CHECK(r, lseek(b, 0, SEEK_CUR) == 1000, "fd %d at %lld, not 1000", b,
             (long long)lseek(b, 0, SEEK_CUR));
    char buf[10];
    if (read(a, buf, 10) != 10) rt_fail(r, "read: %s", strerror(errno));
    RT_CHECK(r, lseek(b, 0, SEEK_CUR) == 1010, "reading fd %d did not move fd %d (at %lld)", a, b,
             (long long)lseek(b, 0, SEEK_CUR));
    lseek(a, 1000, SEEK_SET);
    if (!r->failed) rt_add(r, "ok fds %d and %d share one description at offset 1000", a, b);
    return 1;
}

int main(void) {
    a = open(RT_DATA_FILE, O_RDONLY);
    if (a < 0) rt_die("open");
    b = dup(a);
    lseek(a, 1000, SEEK_SET);
    rt_serve("dup-shared-offset", handle);
}
