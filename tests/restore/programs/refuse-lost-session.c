// Contract: a daemon-style double fork (fork, setsid, fork, the session leader exits) leaves a process
// in a session whose leader is gone; restore cannot make such a session, so the snapshot must fail
// naming the process and the rule.
#include "http.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int p[2];
    if (pipe(p) != 0) rt_die("pipe");
    pid_t leader = fork();
    if (leader == 0) {
        setsid();
        if (fork() == 0) {
            close(p[0]);
            close(p[1]);  // tells the main process the daemon exists
            for (;;) pause();
        }
        _exit(0);
    }
    close(p[1]);
    char byte;
    while (read(p[0], &byte, 1) > 0) {
    }
    waitpid(leader, NULL, 0);
    rt_serve("refuse-lost-session", handle);
}
