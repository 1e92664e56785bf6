// Established IPv6 TCP connections at the snapshot, restored reset: see tcp-connection.h.
#define RT_FAMILY AF_INET6
#include "tcp-connection.h"

int main(void) {
    return run("tcp-connection-v6");
}
