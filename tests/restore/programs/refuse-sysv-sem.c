// Contract: a SysV semaphore set (the counter at 3). A restored instance gets a fresh ipc namespace,
// so the set would be gone: the snapshot must fail naming it.
#include "http.h"

#include <sys/ipc.h>
#include <sys/sem.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int s = semget(0x5255, 1, IPC_CREAT | 0600);
    if (s < 0) rt_die("semget");
    if (semctl(s, 0, SETVAL, 3) != 0) rt_die("semctl");
    rt_serve("refuse-sysv-sem", handle);
}
