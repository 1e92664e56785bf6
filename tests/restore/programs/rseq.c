// rseq: glibc registers an rseq area per thread. After a restore every thread's area must be registered
// again at the same address (the kernel writes cpu_id into it). /check: in the main thread and a worker,
// the area's cpu_id is a real CPU (not -1 uninitialised / -2 failed), matches getcpu, and registering
// the same area again fails with EBUSY (it is registered).
#include "http.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

static atomic_int request, result;

static int verify(void) {
    if (__rseq_size == 0) return 5;  // glibc did not register: nothing to check
    struct rseq* rs = (struct rseq*)((char*)__builtin_thread_pointer() + __rseq_offset);
    int cpu = (int)rs->cpu_id;
    if (cpu < 0) return 2;
    long rc = syscall(SYS_rseq, rs, __rseq_size < 32 ? 32 : __rseq_size, 0, RSEQ_SIG);
    if (!(rc < 0 && errno == EBUSY)) return 3;
    unsigned c = 0;
    getcpu(&c, NULL);
    // The thread may migrate between the two reads; allow a retry.
    if ((int)c != (int)rs->cpu_id) {
        getcpu(&c, NULL);
        if ((int)c != (int)rs->cpu_id) return 4;
    }
    return 1;
}

static void* worker(void* arg) {
    (void)arg;
    for (;;) {
        if (atomic_exchange(&request, 0)) atomic_store(&result, verify());
        rt_sleep_ms(5);
    }
    return NULL;
}

static const char* why(int v) {
    switch (v) {
        case 0:
            return "no answer";
        case 2:
            return "rseq cpu_id is negative (area not registered)";
        case 3:
            return "re-registering the area did not fail with EBUSY (area not registered)";
        case 4:
            return "rseq cpu_id does not match getcpu";
        case 5:
            return "glibc did not register rseq";
        default:
            return "?";
    }
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int m = verify();
    RT_CHECK(r, m == 1, "main thread: %s", why(m));
    atomic_store(&result, 0);
    atomic_store(&request, 1);
    for (int i = 0; i < 200 && !atomic_load(&result); ++i) rt_sleep_ms(10);
    int w = atomic_load(&result);
    RT_CHECK(r, w == 1, "worker thread: %s", why(w));
    if (!r->failed)
        rt_add(r, "ok rseq registered in both threads (size %u, offset %td)", __rseq_size, __rseq_offset);
    return 1;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) rt_die("pthread_create");
    rt_sleep_ms(20);
    rt_serve("rseq", handle);
}
