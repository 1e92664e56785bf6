// signalfd: SIGUSR2 and SIGHUP are blocked and read through a non-blocking signalfd. /check: the
// signalfd's mask is intact (fdinfo), a SIGUSR2 raised after the restore is read from it with its
// si_value, and SIGTERM (not in the mask) is not.
#include "http.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>

static int sfd;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", sfd);
    unsigned long long mask = strtoull(rt_status_field(p, "sigmask:"), NULL, 16);
    unsigned long long want = (1ULL << (SIGUSR2 - 1)) | (1ULL << (SIGHUP - 1));
    RT_CHECK(r, mask == want, "signalfd mask %llx, want %llx", mask, want);
    RT_CHECK(r, fcntl(sfd, F_GETFL) & O_NONBLOCK, "signalfd lost O_NONBLOCK");
    struct signalfd_siginfo si;
    RT_CHECK(r, read(sfd, &si, sizeof si) < 0 && errno == EAGAIN,
             "signalfd had something to read before raise");
    union sigval v = {.sival_int = 99};
    sigqueue(getpid(), SIGUSR2, v);
    memset(&si, 0, sizeof si);
    ssize_t n = read(sfd, &si, sizeof si);
    RT_CHECK(r, n == sizeof si, "read signalfd: %s", strerror(errno));
    RT_CHECK(r, si.ssi_signo == SIGUSR2 && si.ssi_int == 99, "read signo %u value %d", si.ssi_signo,
             si.ssi_int);
    if (!r->failed) rt_add(r, "ok signalfd mask %llx, SIGUSR2 read with value 99", mask);
    return 1;
}

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) rt_die("signalfd");
    rt_serve("signalfd", handle);
}
