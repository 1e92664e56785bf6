// Named pipes (FIFOs) opened by path in each mode:
//   /tmp/rt.fifo         fd 42 O_RDONLY|O_NONBLOCK, fd 43 O_WRONLY, fd 44 O_RDWR; 11 bytes unread
//   /tmp/rt-wo.fifo      fd 45 O_WRONLY alone (its reader gone: a write fails with EPIPE)
//   /rt-layer.fifo       fd 46 O_RDONLY|O_NONBLOCK alone, in the writable layer (no writer: end of stream)
// /check: each fd is a FIFO at its path with its mode and O_NONBLOCK as before; the unread bytes come
// out of fd 42; what fd 44 writes, fd 42 reads; fd 45's write fails with EPIPE; fd 46 reads end of
// stream; a writer opened by path now reaches fd 42 (it is the same FIFO, not a new pipe).
#include "http.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

static void link_of(int fd, char* out, size_t len) {
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, out, len - 1);
    out[n > 0 ? n : 0] = 0;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    static const struct {
        int fd;
        const char* path;
        int mode;
        int nonblock;
    } want[] = {{42, "/tmp/rt.fifo", O_RDONLY, 1},
                {43, "/tmp/rt.fifo", O_WRONLY, 0},
                {44, "/tmp/rt.fifo", O_RDWR, 0},
                {45, "/tmp/rt-wo.fifo", O_WRONLY, 0},
                {46, "/rt-layer.fifo", O_RDONLY, 1}};
    for (size_t i = 0; i < sizeof want / sizeof *want; ++i) {
        struct stat st;
        char target[256];
        link_of(want[i].fd, target, sizeof target);
        int fl = fcntl(want[i].fd, F_GETFL);
        RT_CHECK(r, fstat(want[i].fd, &st) == 0 && S_ISFIFO(st.st_mode), "fd %d is not a FIFO", want[i].fd);
        RT_CHECK(r, strcmp(target, want[i].path) == 0, "fd %d is %s, want %s", want[i].fd, target,
                 want[i].path);
        RT_CHECK(r, (fl & O_ACCMODE) == want[i].mode && !!(fl & O_NONBLOCK) == want[i].nonblock,
                 "fd %d flags %#x", want[i].fd, fl);
    }
    char buf[64] = {0};
    ssize_t n = read(42, buf, sizeof buf - 1);
    RT_CHECK(r, n == 11 && memcmp(buf, "hello fifo\n", 11) == 0, "fd 42 read %zd bytes '%s'", n, buf);
    RT_CHECK(r, write(44, "x", 1) == 1 && read(42, buf, 1) == 1 && buf[0] == 'x', "fd 44 -> fd 42 failed");
    errno = 0;
    RT_CHECK(r, write(45, "y", 1) < 0 && errno == EPIPE, "fd 45 (no reader) write: %s", strerror(errno));
    n = read(46, buf, 1);
    RT_CHECK(r, n == 0, "fd 46 read %zd (%s), want end of stream", n, strerror(errno));
    int w = open("/tmp/rt.fifo", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    RT_CHECK(r, w >= 0 && write(w, "z", 1) == 1 && read(42, buf, 1) == 1 && buf[0] == 'z',
             "a writer opened by path does not reach fd 42");
    if (w >= 0) close(w);
    if (!r->failed) rt_add(r, "ok 3 FIFOs, 5 fds, modes and unread data kept");
    return 1;
}

static void place(int fd, int at) {
    if (fd < 0 || dup2(fd, at) < 0) rt_die("fifo");
    close(fd);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    if (mkfifo("/tmp/rt.fifo", 0600) != 0 || mkfifo("/tmp/rt-wo.fifo", 0600) != 0 ||
        mkfifo("/rt-layer.fifo", 0600) != 0)
        rt_die("mkfifo");
    place(open("/tmp/rt.fifo", O_RDONLY | O_NONBLOCK | O_CLOEXEC), 42);
    place(open("/tmp/rt.fifo", O_WRONLY | O_CLOEXEC), 43);
    place(open("/tmp/rt.fifo", O_RDWR | O_CLOEXEC), 44);
    if (write(43, "hello fifo\n", 11) != 11) rt_die("write fifo");
    int reader = open("/tmp/rt-wo.fifo", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    place(open("/tmp/rt-wo.fifo", O_WRONLY | O_CLOEXEC), 45);
    close(reader);
    place(open("/rt-layer.fifo", O_RDONLY | O_NONBLOCK | O_CLOEXEC), 46);
    rt_serve("fifo-modes", handle);
}
