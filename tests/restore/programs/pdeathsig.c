// PR_SET_PDEATHSIG: the main thread asks for SIGUSR1 when its parent (the sandbox's init) dies, a
// second thread for SIGUSR2 (the setting is per thread). /check: PR_GET_PDEATHSIG reads both back.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t asked = PTHREAD_COND_INITIALIZER, answered = PTHREAD_COND_INITIALIZER;
static int question, answer;

static void* worker(void* arg) {
    (void)arg;
    if (prctl(PR_SET_PDEATHSIG, SIGUSR2) != 0) rt_die("prctl");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!question) pthread_cond_wait(&asked, &lock);
        question = 0;
        int sig = -1;
        prctl(PR_GET_PDEATHSIG, &sig);
        answer = sig;
        pthread_cond_signal(&answered);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int sig = -1;
    prctl(PR_GET_PDEATHSIG, &sig);
    RT_CHECK(r, sig == SIGUSR1, "main thread's parent death signal is %d, not SIGUSR1", sig);
    pthread_mutex_lock(&lock);
    answer = -2;
    question = 1;
    pthread_cond_signal(&asked);
    while (answer == -2) pthread_cond_wait(&answered, &lock);
    int other = answer;
    pthread_mutex_unlock(&lock);
    RT_CHECK(r, other == SIGUSR2, "second thread's parent death signal is %d, not SIGUSR2", other);
    if (!r->failed) rt_add(r, "ok pdeathsig SIGUSR1 and SIGUSR2 per thread");
    return 1;
}

int main(void) {
    if (prctl(PR_SET_PDEATHSIG, SIGUSR1) != 0) rt_die("prctl");
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    rt_serve("pdeathsig", handle);
}
