// Contract: a SysV message queue holding a message. A restored instance gets a fresh ipc namespace,
// so the queue would be gone: the snapshot must fail naming it.
#include "http.h"

#include <sys/ipc.h>
#include <sys/msg.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int q = msgget(0x5254, IPC_CREAT | 0600);
    if (q < 0) rt_die("msgget");
    struct {
        long type;
        char text[8];
    } m = {1, "hello"};
    if (msgsnd(q, &m, sizeof m.text, 0) != 0) rt_die("msgsnd");
    rt_serve("refuse-sysv-msg", handle);
}
