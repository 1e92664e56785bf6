// IPv6 UDP sockets, bound, connected and neither: see udp-sockets.h.
#define RT_FAMILY AF_INET6
#include "udp-sockets.h"

int main(void) {
    return run("udp-v6");
}
