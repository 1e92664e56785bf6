// PR_SET_TIMERSLACK per thread: 1 ms in the main thread, 7 us in a second one.
// /check: PR_GET_TIMERSLACK reads both back (and /proc/self/timerslack_ns the main thread's).
#include "http.h"

#include <pthread.h>
#include <sys/prctl.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t asked = PTHREAD_COND_INITIALIZER, answered = PTHREAD_COND_INITIALIZER;
static int question;
static long answer;

static void* worker(void* arg) {
    (void)arg;
    if (prctl(PR_SET_TIMERSLACK, 7000UL, 0, 0, 0) != 0) rt_die("prctl");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!question) pthread_cond_wait(&asked, &lock);
        question = 0;
        answer = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        pthread_cond_signal(&answered);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    long v = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    RT_CHECK(r, v == 1000000, "main thread's timer slack is %ld ns, not 1000000", v);
    pthread_mutex_lock(&lock);
    answer = -2;
    question = 1;
    pthread_cond_signal(&asked);
    while (answer == -2) pthread_cond_wait(&answered, &lock);
    long other = answer;
    pthread_mutex_unlock(&lock);
    RT_CHECK(r, other == 7000, "second thread's timer slack is %ld ns, not 7000", other);
    if (!r->failed) rt_add(r, "ok timer slack 1000000 and 7000 ns");
    return 1;
}

int main(void) {
    if (prctl(PR_SET_TIMERSLACK, 1000000UL, 0, 0, 0) != 0) rt_die("prctl");
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    rt_serve("timerslack", handle);
}
