// Thread-local storage in several threads: a __thread int and a __thread array, different in each of
// four threads and the main thread; plus each thread's errno (TLS too). /check asks every thread to
// verify its own TLS (fs_base must point at its own block) and report.
#include "http.h"

#include <pthread.h>
#include <stdatomic.h>

#define N 4
static __thread int tls_id = -1;
static __thread char tls_name[32];
static atomic_int request[N], result[N];

static void fill(int id) {
    tls_id = id;
    snprintf(tls_name, sizeof tls_name, "thread-%d", id);
    errno = 1000 + id;
}

static int verify(int id) {
    char want[32];
    snprintf(want, sizeof want, "thread-%d", id);
    if (tls_id != id) return 2;
    if (strcmp(tls_name, want) != 0) return 3;
    if (errno != 1000 + id) return 4;
    return 1;
}

static void* worker(void* arg) {
    int id = (int)(long)arg;
    fill(id);
    for (;;) {
        if (atomic_exchange(&request[id], 0)) atomic_store(&result[id], verify(id));
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        errno = 1000 + id;  // nanosleep may set it
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int saved = errno;
    errno = 999;
    RT_CHECK(r, tls_id == 99 && strcmp(tls_name, "main") == 0, "main thread TLS: id %d name '%s'", tls_id,
             tls_name);
    errno = saved;
    for (int i = 1; i < N; ++i) {
        atomic_store(&result[i], 0);
        atomic_store(&request[i], 1);
    }
    for (int i = 1; i < N; ++i) {
        for (int k = 0; k < 200 && !atomic_load(&result[i]); ++k) rt_sleep_ms(10);
        int v = atomic_load(&result[i]);
        RT_CHECK(r, v == 1, "thread %d: %s", i,
                 v == 0   ? "no answer"
                 : v == 2 ? "__thread int wrong"
                 : v == 3 ? "__thread array wrong"
                          : "errno wrong");
    }
    if (!r->failed) rt_add(r, "ok TLS of main and %d threads intact", N - 1);
    return 1;
}

int main(void) {
    tls_id = 99;
    strcpy(tls_name, "main");
    pthread_t t;
    for (long i = 1; i < N; ++i)
        if (pthread_create(&t, NULL, worker, (void*)i) != 0) rt_die("pthread_create");
    rt_sleep_ms(20);
    rt_serve("tls-threads", handle);
}
