// A sealed region (mseal, VmFlags sl) holding data: after restore it must still refuse mprotect and
// munmap with EPERM, and keep its data.
#include "http.h"

#include <sys/mman.h>
#include <sys/syscall.h>

#define LEN (2 * 4096)
static char* sealed;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, sealed[10] == 'S', "sealed data lost");
    int rc = mprotect(sealed, LEN, PROT_READ | PROT_WRITE | PROT_EXEC);
    RT_CHECK(r, rc != 0 && errno == EPERM, "mprotect of the sealed region: %s",
             rc == 0 ? "succeeded" : strerror(errno));
    rc = munmap(sealed, LEN);
    RT_CHECK(r, rc != 0 && errno == EPERM, "munmap of the sealed region: %s",
             rc == 0 ? "succeeded" : strerror(errno));
    if (!r->failed) rt_add(r, "ok sealed region refuses mprotect and munmap");
    return 1;
}

int main(void) {
    char* g = mmap(NULL, LEN + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sealed = mmap(g + 4096, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (g == MAP_FAILED || sealed == MAP_FAILED) rt_die("mmap");
    sealed[10] = 'S';
    if (syscall(462 /* mseal */, sealed, LEN, 0) != 0) rt_die("mseal");
    rt_serve("mseal", handle);
}
