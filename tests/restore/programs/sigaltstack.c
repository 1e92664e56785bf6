// sigaltstack per thread: the main thread and a worker each have their own alternate stack, and
// SIGUSR1's handler is SA_ONSTACK. /check: sigaltstack reads back the same stack in both threads, and
// the handler, run in each thread after the restore, runs on that thread's alternate stack.
#include "http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#define ALT_SIZE (64 * 1024)
static char main_alt[ALT_SIZE], worker_alt[ALT_SIZE];
static _Atomic(uintptr_t) handler_sp;
static atomic_int request, result;  // worker: 1 = check yourself; result: 1 ok, 2+ failures
static pthread_t worker_thread;

static void on_usr1(int sig) {
    (void)sig;
    char here;
    atomic_store(&handler_sp, (uintptr_t)&here);
}

static int on_alt(const char* alt) {
    uintptr_t sp = atomic_load(&handler_sp);
    return sp >= (uintptr_t)alt && sp < (uintptr_t)alt + ALT_SIZE;
}

static int check_self(const char* alt) {
    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0) return 2;
    if (ss.ss_sp != alt || ss.ss_size != ALT_SIZE || (ss.ss_flags & SS_DISABLE)) return 3;
    atomic_store(&handler_sp, 0);
    pthread_kill(pthread_self(), SIGUSR1);
    return on_alt(alt) ? 1 : 4;
}

static void* worker(void* arg) {
    (void)arg;
    stack_t ss = {.ss_sp = worker_alt, .ss_size = ALT_SIZE};
    if (sigaltstack(&ss, NULL) != 0) rt_die("sigaltstack");
    for (;;) {
        if (atomic_exchange(&request, 0)) atomic_store(&result, check_self(worker_alt));
        rt_sleep_ms(5);
    }
    return NULL;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int m = check_self(main_alt);
    RT_CHECK(r, m == 1, "main thread: %s",
             m == 3   ? "sigaltstack differs"
             : m == 4 ? "handler not on the alt stack"
                      : "sigaltstack failed");
    atomic_store(&result, 0);
    atomic_store(&request, 1);
    for (int i = 0; i < 200 && !atomic_load(&result); ++i) rt_sleep_ms(10);
    int w = atomic_load(&result);
    RT_CHECK(r, w == 1, "worker thread: %s",
             w == 0   ? "no answer"
             : w == 3 ? "sigaltstack differs"
             : w == 4 ? "handler not on the alt stack"
                      : "sigaltstack failed");
    if (!r->failed)
        rt_add(r, "ok both threads keep their alternate stacks (%p, %p)", (void*)main_alt, (void*)worker_alt);
    return 1;
}

int main(void) {
    stack_t ss = {.ss_sp = main_alt, .ss_size = ALT_SIZE};
    if (sigaltstack(&ss, NULL) != 0) rt_die("sigaltstack");
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_ONSTACK | SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    if (pthread_create(&worker_thread, NULL, worker, NULL) != 0) rt_die("pthread_create");
    rt_sleep_ms(20);
    rt_serve("sigaltstack", handle);
}
