// A SIGTRAP handler (SA_SIGINFO) installed at init. The engine's own traps are forced SIGTRAPs (the
// checkpoint's single steps, the restore stub's int3): forcing a blocked signal resets its action to
// SIG_DFL, so the handler must survive both. /check: the action is still the handler with its flags,
// and raise(SIGTRAP) runs it.
#include "http.h"

#include <signal.h>

static volatile sig_atomic_t trapped;

static void on_trap(int sig, siginfo_t* info, void* ctx) {
    (void)ctx;
    if (sig == SIGTRAP && info->si_code == SI_TKILL) trapped++;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct sigaction now;
    sigaction(SIGTRAP, NULL, &now);
    RT_CHECK(r, (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_trap,
             "SIGTRAP action is %p flags %#x, not the handler", (void*)now.sa_sigaction,
             (unsigned)now.sa_flags);
    RT_CHECK(r, (now.sa_flags & SA_RESTART), "SIGTRAP lost SA_RESTART (flags %#x)", (unsigned)now.sa_flags);
    if (!r->failed) {
        int before = trapped;
        raise(SIGTRAP);
        RT_CHECK(r, trapped == before + 1, "raise(SIGTRAP) did not run the handler");
    }
    if (!r->failed) rt_add(r, "ok SIGTRAP handler kept and runs");
    return 1;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTRAP, &sa, NULL) != 0) rt_die("sigaction");
    rt_serve("sigtrap-handler", handle);
}
