// Contract: a SysV shared memory segment attached (shmat) cannot be restored: the snapshot must fail,
// naming the mapping and the rule.
#include "http.h"

#include <sys/ipc.h>
#include <sys/shm.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int id = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600);
    if (id < 0) rt_die("shmget");
    char* p = shmat(id, NULL, 0);
    if (p == (void*)-1) rt_die("shmat");
    shmctl(id, IPC_RMID, NULL);
    strcpy(p, "sysv");
    rt_serve("refuse-sysv-shm", handle);
}
