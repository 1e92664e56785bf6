// Contract: a unix stream connection made through a listening socket (fd 42 the client, connected to
// /tmp/rt-conn.sock; fd 43 its accepted end) is not a socketpair: its peer cannot be connected again
// at restore. The snapshot must fail naming the fd, the address and the rule.
#include "http.h"

#include <sys/un.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, "/tmp/rt-conn.sock");
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 4) != 0) rt_die("listen");
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr*)&a, sizeof a) != 0 || dup2(c, 42) < 0) rt_die("connect");
    int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0 || dup2(s, 43) < 0) rt_die("accept");
    close(c);
    close(s);
    close(l);
    rt_serve("refuse-unix-connected", handle);
}
