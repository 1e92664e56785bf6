// Sysctls of the sandbox's own network namespace changed at init: net.ipv4.ip_local_port_range,
// net.core.somaxconn and net.ipv4.tcp_keepalive_time. A restored instance gets a fresh netns, so
// they must be written again. /check: each reads back as set.
#include "http.h"

#include <fcntl.h>

static const char* const settings[][2] = {{"/proc/sys/net/ipv4/ip_local_port_range", "20000\t30000"},
                                          {"/proc/sys/net/core/somaxconn", "777"},
                                          {"/proc/sys/net/ipv4/tcp_keepalive_time", "123"}};

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; ++i) {
        char buf[128] = {0};
        int fd = open(settings[i][0], O_RDONLY);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0) close(fd);
        if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
        RT_CHECK(r, n > 0 && strcmp(buf, settings[i][1]) == 0, "%s reads '%s', not '%s'", settings[i][0], buf,
                 settings[i][1]);
    }
    if (!r->failed) rt_add(r, "ok netns sysctls kept");
    return 1;
}

int main(void) {
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; ++i) {
        int fd = open(settings[i][0], O_WRONLY);
        if (fd < 0 || write(fd, settings[i][1], strlen(settings[i][1])) < 0) rt_die(settings[i][0]);
        close(fd);
    }
    rt_serve("net-sysctls", handle);
}
