// Contract: a SIGTRAP pending at the snapshot (blocked, raised). Checkpoint and restore stop the
// process through SIGTRAP traps, which a pending SIGTRAP would take the place of (issue 15: the
// restore failed "unmapping the restorer stub"): the snapshot must fail naming it and the rule.
#include "http.h"

#include <signal.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTRAP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) rt_die("sigprocmask");
    if (kill(getpid(), SIGTRAP) != 0) rt_die("kill");
    rt_serve("refuse-pending-sigtrap", handle);
}
