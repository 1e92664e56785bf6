// File status and descriptor flags: /dev/null open O_WRONLY|O_APPEND, /dev/zero O_RDONLY|O_NONBLOCK,
// a pipe with O_NONBLOCK set on the read end only (fcntl F_SETFL), a listening socket set non-blocking,
// FD_CLOEXEC on some fds and not others, fds at high numbers (100, 200) and a gap. /check reads
// F_GETFL/F_GETFD for each and compares with what was set.
#include "http.h"

#include <fcntl.h>

struct want {
    int fd, fl_mask, fl, cloexec;
    const char* what;
};
static struct want wants[8];
static int nwants;

static void expect(int fd, int fl_mask, int fl, int cloexec, const char* what) {
    wants[nwants++] = (struct want){fd, fl_mask, fl, cloexec, what};
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    for (int i = 0; i < nwants; ++i) {
        struct want* w = &wants[i];
        int fl = fcntl(w->fd, F_GETFL), fdfl = fcntl(w->fd, F_GETFD);
        RT_CHECK(r, fl >= 0, "fd %d (%s) is not open", w->fd, w->what);
        if (fl < 0) continue;
        RT_CHECK(r, (fl & w->fl_mask) == w->fl, "fd %d (%s): F_GETFL %#o, want %#o under mask %#o", w->fd,
                 w->what, fl & w->fl_mask, w->fl, w->fl_mask);
        RT_CHECK(r, !!(fdfl & FD_CLOEXEC) == w->cloexec, "fd %d (%s): FD_CLOEXEC %d, want %d", w->fd, w->what,
                 !!(fdfl & FD_CLOEXEC), w->cloexec);
    }
    RT_CHECK(r, fcntl(150, F_GETFD) < 0 && errno == EBADF, "fd 150 (never opened) is open");
    RT_CHECK(r, write(100, "x", 1) == 1, "write to /dev/null (O_APPEND): %s", strerror(errno));
    if (!r->failed)
        rt_add(r, "ok %d fds keep their access mode, O_APPEND, O_NONBLOCK and FD_CLOEXEC", nwants);
    return 1;
}

int main(void) {
    const int M = O_ACCMODE | O_APPEND | O_NONBLOCK;
    int n = open("/dev/null", O_WRONLY | O_APPEND);
    if (n < 0 || dup2(n, 100) < 0) rt_die("/dev/null");
    close(n);
    expect(100, M, O_WRONLY | O_APPEND, 0, "/dev/null O_WRONLY|O_APPEND");
    int z = open("/dev/zero", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (z < 0 || dup3(z, 200, O_CLOEXEC) < 0) rt_die("/dev/zero");
    close(z);
    expect(200, M, O_RDONLY | O_NONBLOCK, 1, "/dev/zero O_NONBLOCK, cloexec");
    int p[2];
    if (pipe(p) != 0) rt_die("pipe");
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
    expect(p[0], M, O_RDONLY | O_NONBLOCK, 0, "pipe read end O_NONBLOCK");
    expect(p[1], M, O_WRONLY, 1, "pipe write end blocking, cloexec");
    int l = rt_listen_on(9001, 16);
    fcntl(l, F_SETFL, O_NONBLOCK);
    fcntl(l, F_SETFD, 0);
    expect(l, M, O_RDWR | O_NONBLOCK, 0, "listening socket O_NONBLOCK, no cloexec");
    int lfd = rt_listen();
    expect(lfd, M, O_RDWR, 1, "the HTTP socket, blocking, cloexec");
    rt_serve_on(lfd, "fd-flags", handle);
}
