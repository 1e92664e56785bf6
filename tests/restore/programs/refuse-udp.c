// Contract: a UDP socket (fd 42, bound to 0.0.0.0:9001) is neither a listening TCP nor a listening
// unix socket: the snapshot must fail, naming the fd and the rule.
#include "http.h"

static int handle(const char* path, struct rt_reply* r) { (void)path; (void)r; return 1; }

int main(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9001)};
    if (fd < 0 || bind(fd, (struct sockaddr*)&a, sizeof a) != 0 || dup2(fd, 42) < 0) rt_die("udp");
    close(fd);
    rt_serve("refuse-udp", handle);
}
