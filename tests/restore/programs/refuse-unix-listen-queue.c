// Contract: a unix listening socket (fd 42, abstract name @rt-queue, SOCK_SEQPACKET) with a connection
// waiting to be accepted (its client already closed): the connection cannot be made again at restore,
// and a program expecting it would wait in accept forever. The snapshot must fail naming the fd, the
// socket and the rule.
#include "http.h"

#include <stddef.h>
#include <sys/un.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, "\0rt-queue", 9);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 9);
    int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr*)&a, len) != 0 || listen(l, 4) != 0 || dup2(l, 42) < 0)
        rt_die("listen");
    close(l);
    int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr*)&a, len) != 0 || send(c, "hi", 2, 0) != 2) rt_die("connect");
    close(c);
    rt_serve("refuse-unix-listen-queue", handle);
}
