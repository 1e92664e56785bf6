// Contract: a SysV shared memory segment created but not attached (no mapping shows it). A restored
// instance gets a fresh ipc namespace, so it would be gone: the snapshot must fail naming it.
#include "http.h"

#include <sys/ipc.h>
#include <sys/shm.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int id = shmget(0x5256, 65536, IPC_CREAT | 0600);
    if (id < 0) rt_die("shmget");
    rt_serve("refuse-sysv-shm-detached", handle);
}
