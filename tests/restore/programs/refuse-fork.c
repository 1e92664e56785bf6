// Contract: two processes (the function forked a child that stays) must make the snapshot fail with
// the one-process rule.
#include "http.h"

#include <signal.h>
#include <sys/prctl.h>

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    pid_t child = fork();
    if (child < 0) rt_die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) pause();
    }
    rt_serve("refuse-fork", handle);
}
