// TCP_INFO fields glibc's <netinet/tcp.h> does not declare (segment counters, Linux 4.2+): read with
// the kernel's own struct, in a file of its own because <linux/tcp.h> and <netinet/tcp.h> clash.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "initless/sys/inspect.h"

namespace initless::sys {

bool tcp_exchanged_segments(int sock) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return false;
    // A kernel that fills less than the counters reports zeros: read as "never used", as before.
    return ti.tcpi_segs_out != 0 || ti.tcpi_segs_in != 0;
}

}  // namespace initless::sys
