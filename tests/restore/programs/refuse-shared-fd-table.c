// Contract: a child process made with clone(CLONE_FILES) shares our fd table: restore would give
// each process its own copy, so an fd one opens would no longer be the other's. The snapshot must
// fail naming both processes and the table.
#include "http.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static int child(void* arg) {
    (void)arg;
    for (;;) pause();
    return 0;
}

int main(void) {
    size_t size = 64 * 1024;
    char* stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) rt_die("mmap");
    if (clone(child, stack + size, CLONE_FILES | SIGCHLD, NULL) < 0) rt_die("clone");
    rt_serve("refuse-shared-fd-table", handle);
}
