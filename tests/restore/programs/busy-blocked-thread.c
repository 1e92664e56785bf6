// A thread that blocks every signal (raw rt_sigprocmask: glibc's would leave two unblocked) and
// spins in user space, with a running sum in an SSE register: it is checkpointed mid-computation,
// never in a syscall, with the mask the restorer stub itself runs under. /check: it still spins,
// its sum agrees with its counter (its registers and xstate came back), its mask is still full.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static atomic_long count;
static atomic_int tid, started;

static void* spinner(void* arg) {
    (void)arg;
    unsigned long all = ~0UL;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, 8);
    atomic_store(&tid, gettid());
    atomic_store(&started, 1);
    double sum = 0;  // kept in an xmm register across the loop
    for (long n = 1;; ++n) {
        sum += 1.0;
        if ((long)sum != n) {
            atomic_store(&count, -n);  // registers changed under the thread
            for (;;) rt_sleep_ms(1000);
        }
        atomic_store(&count, n);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    long a = atomic_load(&count);
    rt_sleep_ms(50);
    long b = atomic_load(&count);
    RT_CHECK(r, a >= 0 && b >= 0, "the spinner's sum disagrees with its counter (%ld, %ld)", a, b);
    RT_CHECK(r, b > a, "the spinner does not run (%ld, then %ld)", a, b);
    char p[64];
    snprintf(p, sizeof p, "/proc/self/task/%d/status", atomic_load(&tid));
    unsigned long long m = strtoull(rt_status_field(p, "SigBlk:"), NULL, 16);
    RT_CHECK(r, m == 0xfffffffffffbfeffULL, "spinner SigBlk %llx, want every signal", m);
    if (!r->failed) rt_add(r, "ok spinner at %ld, mask %llx", b, m);
    return 1;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, spinner, NULL) != 0) rt_die("pthread_create");
    while (!atomic_load(&started)) rt_sleep_ms(1);
    rt_serve("busy-blocked-thread", handle);
}
