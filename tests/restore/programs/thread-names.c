// Thread names (comm): the main thread is "rt-main", two workers "rt-worker-1" and "rt-worker-2"
// (prctl PR_SET_NAME / pthread_setname_np, as JVMs and runtimes name their threads). /check reads
// /proc/self/task/<tid>/comm for each.
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>

static pid_t tids[2];
static atomic_int started;

static void* worker(void* arg) {
    int i = (int)(long)arg & 1;
    char name[16] = "rt-worker-1";
    name[10] = (char)('1' + i);
    pthread_setname_np(pthread_self(), name);
    tids[i] = gettid();
    atomic_fetch_add(&started, 1);
    for (;;) pause();
    return NULL;
}

static const char* comm_of(pid_t tid) {
    static char buf[64];
    char p[64];
    snprintf(p, sizeof p, "/proc/self/task/%d/comm", tid);
    buf[0] = 0;
    FILE* f = fopen(p, "re");
    if (f && fgets(buf, sizeof buf, f)) buf[strcspn(buf, "\n")] = 0;
    if (f) fclose(f);
    return buf;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, strcmp(comm_of(gettid()), "rt-main") == 0, "main thread is named '%s'", comm_of(gettid()));
    for (int i = 0; i < 2; ++i) {
        char want[16] = "rt-worker-1";
        want[10] = (char)('1' + i);
        RT_CHECK(r, strcmp(comm_of(tids[i]), want) == 0, "thread %d is named '%s', not %s", tids[i], comm_of(tids[i]), want);
    }
    if (!r->failed) rt_add(r, "ok thread names kept");
    return 1;
}

int main(void) {
    prctl(PR_SET_NAME, "rt-main");
    pthread_t t;
    for (long i = 0; i < 2; ++i)
        if (pthread_create(&t, NULL, worker, (void*)i) != 0) rt_die("pthread_create");
    while (atomic_load(&started) < 2) rt_sleep_ms(1);
    rt_serve("thread-names", handle);
}
