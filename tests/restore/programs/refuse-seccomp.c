// Contract: a thread with a seccomp filter (here one that answers prctl with EPERM) may block the
// syscalls the checkpoint injects, and restore does not install filters: the snapshot must fail
// naming the thread, the filter and the rule.
#include "http.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int filtered = 0;

static void* filtered_thread(void* arg) {
    (void)arg;
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) rt_die("PR_SET_NO_NEW_PRIVS");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) rt_die("seccomp");
    pthread_mutex_lock(&lock);
    filtered = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    for (;;) pause();
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, filtered_thread, NULL) != 0) rt_die("pthread_create");
    pthread_mutex_lock(&lock);
    while (!filtered) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    rt_serve("refuse-seccomp", handle);
}
