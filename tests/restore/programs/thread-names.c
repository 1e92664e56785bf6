// Thread names (comm): the main thread is "rt-main", two workers "rt-worker-1" and "rt-worker-2"
// (prctl PR_SET_NAME / pthread_setname_np, as JVMs and runtimes name their threads). /check: the main
// thread's /proc/self/comm, and each worker reads its own name with PR_GET_NAME (no tids involved).
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>

static atomic_int started, request[2], result[2];  // result: 1 ok, 2 wrong name

static void* worker(void* arg) {
    int i = (int)(long)arg & 1;
    char name[16] = "rt-worker-1";
    name[10] = (char)('1' + i);
    pthread_setname_np(pthread_self(), name);
    atomic_fetch_add(&started, 1);
    for (;;) {
        if (atomic_exchange(&request[i], 0)) {
            char now[17] = {0};
            prctl(PR_GET_NAME, now);
            atomic_store(&result[i], strcmp(now, name) == 0 ? 1 : 2);
        }
        rt_sleep_ms(5);
    }
    return NULL;
}

static const char* main_comm(void) {
    static char buf[64];
    buf[0] = 0;
    FILE* f = fopen("/proc/self/comm", "re");
    if (f && fgets(buf, sizeof buf, f)) buf[strcspn(buf, "\n")] = 0;
    if (f) fclose(f);
    return buf;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, strcmp(main_comm(), "rt-main") == 0, "main thread is named '%s'", main_comm());
    for (int i = 0; i < 2; ++i) {
        atomic_store(&result[i], 0);
        atomic_store(&request[i], 1);
    }
    for (int i = 0; i < 2; ++i) {
        for (int k = 0; k < 200 && !atomic_load(&result[i]); ++k) rt_sleep_ms(10);
        int v = atomic_load(&result[i]);
        RT_CHECK(r, v == 1, "worker %d: %s", i + 1,
                 v == 0 ? "no answer" : "its name (PR_GET_NAME) is not rt-worker-N");
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
