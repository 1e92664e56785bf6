// Listening unix sockets: SOCK_STREAM bound to /tmp/rt-stream.sock, SOCK_SEQPACKET bound to
// /tmp/rt-seq.sock, and one in the abstract namespace ("\0rt-abstract"). /check: each still listens
// at its address and a client can connect and be accepted (and the path exists in the file system).
#include "http.h"

#include <poll.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/un.h>

static int st, sq, ab;

static socklen_t addr_of(struct sockaddr_un* a, const char* path, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(path);
    memcpy(a->sun_path + abstract, path, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + abstract + n + (abstract ? 0 : 1));
}

static int make(int type, const char* path, int abstract) {
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, path, abstract);
    if (!abstract) unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr*)&a, len) != 0 || listen(fd, 8) != 0) rt_die(path);
    return fd;
}

static int roundtrip(int lfd, int type, const char* path, int abstract) {
    int c = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, path, abstract);
    int ok = connect(c, (struct sockaddr*)&a, len) == 0;
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    ok = ok && poll(&p, 1, 2000) == 1;
    int s = ok ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : -1;
    ok = s >= 0 && write(c, "hi", 2) == 2;
    char buf[4];
    ok = ok && read(s, buf, sizeof buf) == 2;
    if (s >= 0) close(s);
    close(c);
    return ok;
}

static int type_of(int fd) {
    int v = -1;
    socklen_t len = sizeof v;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len);
    return v;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct stat s;
    RT_CHECK(r, stat("/tmp/rt-stream.sock", &s) == 0 && S_ISSOCK(s.st_mode),
             "/tmp/rt-stream.sock is missing");
    RT_CHECK(r, type_of(sq) == SOCK_SEQPACKET, "seqpacket socket has type %d", type_of(sq));
    RT_CHECK(r, roundtrip(st, SOCK_STREAM, "/tmp/rt-stream.sock", 0),
             "stream socket: connect/accept failed (%s)", strerror(errno));
    RT_CHECK(r, roundtrip(sq, SOCK_SEQPACKET, "/tmp/rt-seq.sock", 0),
             "seqpacket socket: connect/accept failed (%s)", strerror(errno));
    RT_CHECK(r, roundtrip(ab, SOCK_STREAM, "rt-abstract", 1), "abstract socket: connect/accept failed (%s)",
             strerror(errno));
    if (!r->failed) rt_add(r, "ok stream, seqpacket and abstract unix sockets accept connections");
    return 1;
}

int main(void) {
    st = make(SOCK_STREAM, "/tmp/rt-stream.sock", 0);
    sq = make(SOCK_SEQPACKET, "/tmp/rt-seq.sock", 0);
    ab = make(SOCK_STREAM, "rt-abstract", 1);
    rt_serve("unix-listen", handle);
}
