// Signals pending at the snapshot that the kernel also sends for faults, and queued real-time
// signals: SIGSEGV, SIGBUS and SIGFPE blocked and sent with kill (process-directed), SIGILL sent to
// a second thread with tgkill, SIGRTMIN+3 queued three times with values 1, 2, 3 (sigqueue) and
// SIGRTMIN+4 queued at the second thread with value 9. /check: all still pending, each taken once
// by sigtimedwait with its value, real-time values in order.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

static int sync_pipe[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int asked, answered;
static char thread_report[512];
static pid_t worker_tid;

static void* worker(void* arg) {
    (void)arg;
    worker_tid = (pid_t)syscall(SYS_gettid);
    if (write(sync_pipe[1], "x", 1) != 1) rt_die("write");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (asked == answered) pthread_cond_wait(&cond, &lock);
        sigset_t want, pend;
        sigemptyset(&want);
        sigaddset(&want, SIGILL);
        sigaddset(&want, SIGRTMIN + 4);
        sigpending(&pend);
        size_t len = 0;
        len += (size_t)snprintf(thread_report + len, sizeof thread_report - len, "%s%s",
                                sigismember(&pend, SIGILL) ? "" : "SIGILL not pending; ",
                                sigismember(&pend, SIGRTMIN + 4) ? "" : "SIGRTMIN+4 not pending; ");
        struct timespec zero = {0, 0};
        siginfo_t si;
        int got_ill = 0, got_rt = 0, rt_value = -1;
        for (int k = 0; k < 3; ++k) {
            int s = sigtimedwait(&want, &si, &zero);
            if (s == SIGILL) ++got_ill;
            if (s == SIGRTMIN + 4) ++got_rt, rt_value = si.si_value.sival_int;
        }
        if (got_ill != 1 || got_rt != 1 || rt_value != 9)
            snprintf(thread_report + len, sizeof thread_report - len,
                     "thread took SIGILL %d times, SIGRTMIN+4 %d times (value %d); ", got_ill, got_rt,
                     rt_value);
        answered = asked;
        pthread_cond_broadcast(&cond);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    sigset_t pend;
    sigpending(&pend);
    const int process_sigs[] = {SIGSEGV, SIGBUS, SIGFPE};
    for (int i = 0; i < 3; ++i)
        RT_CHECK(r, sigismember(&pend, process_sigs[i]), "signal %d not pending", process_sigs[i]);
    RT_CHECK(r, sigismember(&pend, SIGRTMIN + 3), "SIGRTMIN+3 not pending");
    sigset_t want;
    sigemptyset(&want);
    for (int i = 0; i < 3; ++i) sigaddset(&want, process_sigs[i]);
    sigaddset(&want, SIGRTMIN + 3);
    struct timespec zero = {0, 0};
    siginfo_t si;
    int counts[3] = {0, 0, 0}, values[4], nvalues = 0;
    for (int k = 0; k < 8; ++k) {
        int s = sigtimedwait(&want, &si, &zero);
        if (s < 0) break;
        for (int i = 0; i < 3; ++i)
            if (s == process_sigs[i]) ++counts[i];
        if (s == SIGRTMIN + 3 && nvalues < 4) values[nvalues++] = si.si_value.sival_int;
    }
    for (int i = 0; i < 3; ++i)
        RT_CHECK(r, counts[i] == 1, "signal %d taken %d times", process_sigs[i], counts[i]);
    RT_CHECK(r, nvalues == 3 && values[0] == 1 && values[1] == 2 && values[2] == 3,
             "SIGRTMIN+3 taken %d times, values not 1 2 3", nvalues);
    pthread_mutex_lock(&lock);
    ++asked;
    pthread_cond_broadcast(&cond);
    while (answered != asked) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    if (thread_report[0]) rt_fail(r, "%s", thread_report);
    if (!r->failed) rt_add(r, "ok SIGSEGV SIGBUS SIGFPE SIGILL pending, real-time values kept in order");
    return 1;
}

int main(void) {
    sigset_t all;
    sigemptyset(&all);
    const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (int i = 0; i < 4; ++i) sigaddset(&all, sigs[i]);
    sigaddset(&all, SIGRTMIN + 3);
    sigaddset(&all, SIGRTMIN + 4);
    if (sigprocmask(SIG_BLOCK, &all, NULL) != 0) rt_die("sigprocmask");
    if (pipe(sync_pipe) != 0) rt_die("pipe");
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) rt_die("pthread_create");
    char c;
    if (read(sync_pipe[0], &c, 1) != 1) rt_die("read");
    for (int i = 0; i < 3; ++i) kill(getpid(), sigs[i]);
    if (syscall(SYS_tgkill, getpid(), worker_tid, SIGILL) != 0) rt_die("tgkill");
    for (int v = 1; v <= 3; ++v) {
        union sigval sv = {.sival_int = v};
        if (sigqueue(getpid(), SIGRTMIN + 3, sv) != 0) rt_die("sigqueue");
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGRTMIN + 4;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = 9;
    if (syscall(SYS_rt_tgsigqueueinfo, getpid(), worker_tid, SIGRTMIN + 4, &si) != 0)
        rt_die("rt_tgsigqueueinfo");
    rt_serve("pending-sync-signals", handle);
}
