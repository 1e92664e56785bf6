// Contract: a shared anonymous mapping (MAP_SHARED|MAP_ANONYMOUS, as used for memory shared with
// children) is not supported yet: the snapshot must fail, naming the mapping and the rule.
#include "http.h"

#include <sys/mman.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    char* p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) rt_die("mmap");
    strcpy(p, "shared state");
    rt_serve("refuse-shared-anon", handle);
}
