// Established IPv4 TCP connections at the snapshot, restored reset: see tcp-connection.h.
#define RT_FAMILY AF_INET
#include "tcp-connection.h"

int main(void) {
    return run("tcp-connection-v4");
}
