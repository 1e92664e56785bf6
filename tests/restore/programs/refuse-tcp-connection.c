// Contract, strict: with `refuse_tcp_connections = true` (its function.toml, from CMakeLists.txt), an
// established TCP connection (fd 42, connected to a listening socket of the function on port 9001)
// must make the snapshot fail, naming the fd and the rule. (Without the key, it is restored reset:
// tcp-connection-v4.)
#include "http.h"

#include <arpa/inet.h>

static int handle(const char* path, struct rt_reply* r) {
    (void)path;
    (void)r;
    return 1;
}

int main(void) {
    int l = rt_listen_on(9001, 8);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9001)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (c < 0 || connect(c, (struct sockaddr*)&a, sizeof a) != 0 || dup2(c, 42) < 0) rt_die("connect");
    close(c);
    int s = accept(l, NULL, NULL);  // the server side is established too
    if (s < 0 || dup2(s, 43) < 0) rt_die("accept");
    close(s);
    rt_serve("refuse-tcp-connection", handle);
}
