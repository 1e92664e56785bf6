// Contract: a netlink socket (fd 42, NETLINK_ROUTE, bound) cannot be recreated by initless: the
// snapshot must fail naming the fd, the socket's family and the rule.
#include "http.h"

#include <linux/netlink.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    struct sockaddr_nl a = {.nl_family = AF_NETLINK};
    if (fd < 0 || bind(fd, (struct sockaddr*)&a, sizeof a) != 0 || dup2(fd, 42) < 0) rt_die("netlink");
    close(fd);
    rt_serve("refuse-netlink", handle);
}
