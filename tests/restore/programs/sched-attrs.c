// Scheduling per thread: the main thread SCHED_BATCH at nice 19 (the lowest priority: raising it needs
// CAP_SYS_NICE, which a function lacks), a second thread SCHED_IDLE, and the
// main thread pinned to CPU 0. /check: sched_getscheduler, getpriority and sched_getaffinity read
// them back (the second thread answers for itself).
#include "http.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t asked = PTHREAD_COND_INITIALIZER, answered = PTHREAD_COND_INITIALIZER;
static int question, answer = -2;

static void* worker(void* arg) {
    (void)arg;
    struct sched_param sp = {0};
    if (sched_setscheduler(0, SCHED_IDLE, &sp) != 0) rt_die("SCHED_IDLE");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!question) pthread_cond_wait(&asked, &lock);
        question = 0;
        answer = sched_getscheduler(0);
        pthread_cond_signal(&answered);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int policy = sched_getscheduler(0);
    RT_CHECK(r, policy == SCHED_BATCH, "main thread's policy is %d, not SCHED_BATCH", policy);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    RT_CHECK(r, nice == 19, "main thread's nice is %d, not 19", nice);
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    RT_CHECK(r, CPU_COUNT(&set) == 1 && CPU_ISSET(0, &set), "main thread runs on %d CPUs, not CPU 0 only",
             CPU_COUNT(&set));
    pthread_mutex_lock(&lock);
    answer = -2;
    question = 1;
    pthread_cond_signal(&asked);
    while (answer == -2) pthread_cond_wait(&answered, &lock);
    int other = answer;
    pthread_mutex_unlock(&lock);
    RT_CHECK(r, other == SCHED_IDLE, "second thread's policy is %d, not SCHED_IDLE", other);
    if (!r->failed) rt_add(r, "ok SCHED_BATCH nice 19 on CPU 0, SCHED_IDLE thread");
    return 1;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    struct sched_param sp = {0};
    if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0) rt_die("SCHED_BATCH");
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19) != 0) rt_die("setpriority");
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) rt_die("sched_setaffinity");
    rt_serve("sched-attrs", handle);
}
