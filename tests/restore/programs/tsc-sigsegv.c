// PR_SET_TSC PR_TSC_SIGSEGV in a second thread (rdtsc faults there); the main thread keeps TSC access.
// /check: the main thread reads PR_TSC_ENABLE and can rdtsc; the second thread reads PR_TSC_SIGSEGV,
// and its rdtsc raises SIGSEGV (caught, counted).
#include "http.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/prctl.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t asked = PTHREAD_COND_INITIALIZER, answered = PTHREAD_COND_INITIALIZER;
static int question, answer_mode = -2, answer_faulted;
static __thread sigjmp_buf jump;
static __thread volatile int armed;

static void on_segv(int sig) {
    (void)sig;
    if (armed) siglongjmp(jump, 1);
    _exit(99);
}

static inline unsigned long long rdtsc(void) {
    unsigned lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((unsigned long long)hi << 32) | lo;
}

static void* worker(void* arg) {
    (void)arg;
    if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0) != 0) rt_die("PR_SET_TSC");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!question) pthread_cond_wait(&asked, &lock);
        question = 0;
        int mode = -1;
        prctl(PR_GET_TSC, &mode, 0, 0, 0);
        volatile int faulted = 0;
        armed = 1;
        if (sigsetjmp(jump, 1) == 0)
            (void)rdtsc();
        else
            faulted = 1;
        armed = 0;
        answer_faulted = faulted;
        answer_mode = mode;
        pthread_cond_signal(&answered);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int mode = -1;
    prctl(PR_GET_TSC, &mode, 0, 0, 0);
    RT_CHECK(r, mode == PR_TSC_ENABLE, "main thread's TSC mode is %d", mode);
    (void)rdtsc();
    pthread_mutex_lock(&lock);
    answer_mode = -2;
    question = 1;
    pthread_cond_signal(&asked);
    while (answer_mode == -2) pthread_cond_wait(&answered, &lock);
    int other = answer_mode, faulted = answer_faulted;
    pthread_mutex_unlock(&lock);
    RT_CHECK(r, other == PR_TSC_SIGSEGV, "second thread's TSC mode is %d, not PR_TSC_SIGSEGV", other);
    RT_CHECK(r, faulted, "rdtsc did not fault in the second thread");
    if (!r->failed) rt_add(r, "ok rdtsc faults only in the PR_TSC_SIGSEGV thread");
    return 1;
}

int main(void) {
    signal(SIGSEGV, on_segv);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    rt_serve("tsc-sigsegv", handle);
}
