// A listening socket's backlog: listen(fd, 7) on 9001. For a listening TCP socket, TCP_INFO's
// tcpi_sacked is the accept queue's maximum (sk_max_ack_backlog). /check: it is still 7.
#include "http.h"

#include <netinet/tcp.h>

static int s;

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    RT_CHECK(r, getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0, "TCP_INFO: %s", strerror(errno));
    RT_CHECK(r, ti.tcpi_sacked == 7, "backlog %u, not 7", ti.tcpi_sacked);
    if (!r->failed) rt_add(r, "ok backlog 7");
    return 1;
}

int main(void) {
    s = rt_listen_on(9001, 7);
    rt_serve("tcp-backlog", handle);
}
