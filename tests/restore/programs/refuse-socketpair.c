// Contract: a connected unix socketpair (fds 42 and 43) is a connection: the snapshot must fail,
// naming the fd and the rule.
#include "http.h"

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || dup2(sv[0], 42) < 0 || dup2(sv[1], 43) < 0) rt_die("socketpair");
    close(sv[0]);
    close(sv[1]);
    rt_serve("refuse-socketpair", handle);
}
