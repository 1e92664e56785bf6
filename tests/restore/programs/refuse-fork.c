// Contract: two processes (the function forked a child that stays, with a pipe between them holding
// unread data) must make the snapshot fail with the one-process rule.
#include "http.h"

#include <signal.h>
#include <sys/prctl.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int p[2];
    if (pipe(p) != 0) rt_die("pipe");
    pid_t child = fork();
    if (child < 0) rt_die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[0]);
        if (write(p[1], "from the child", 14) != 14) rt_die("write");
        for (;;) pause();
    }
    close(p[1]);
    rt_serve("refuse-fork", handle);
}
