// argv and the environment: started as ["./cmdline-env", "alpha", "beta gamma"] with RT_MARKER set in
// function.toml. /check: /proc/self/cmdline and /proc/self/environ read back the same (they live in
// the process's memory between arg_start/arg_end and env_start/env_end), getenv works, the saved argv
// pointers still work, and /proc/self/exe names the binary.
#include "http.h"

#include <fcntl.h>

static char** saved_argv;

static size_t read_all(const char* path, char* buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    ssize_t n;
    while (fd >= 0 && len < cap && (n = read(fd, buf + len, cap - len)) > 0) len += (size_t)n;
    if (fd >= 0) close(fd);
    return len;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    static const char want[] = "./cmdline-env\0alpha\0beta gamma";
    char buf[8192];
    size_t n = read_all("/proc/self/cmdline", buf, sizeof buf);
    RT_CHECK(r, n == sizeof want && memcmp(buf, want, sizeof want) == 0,
             "/proc/self/cmdline is '%.*s' (%zu bytes)", (int)n, buf, n);
    n = read_all("/proc/self/environ", buf, sizeof buf - 1);
    buf[n] = 0;
    int found = 0;
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (strcmp(buf + i, "RT_MARKER=restore suite") == 0) found = 1;
    RT_CHECK(r, found, "/proc/self/environ (%zu bytes) lacks RT_MARKER=restore suite", n);
    const char* m = getenv("RT_MARKER");
    RT_CHECK(r, m && strcmp(m, "restore suite") == 0, "getenv(RT_MARKER) = %s", m ? m : "(null)");
    RT_CHECK(r, strcmp(saved_argv[2], "beta gamma") == 0, "argv[2] = '%s'", saved_argv[2]);
    char exe[512] = {0};
    RT_CHECK(r,
             readlink("/proc/self/exe", exe, sizeof exe - 1) > 0 && strcmp(exe, "/function/cmdline-env") == 0,
             "/proc/self/exe -> '%s'", exe);
    if (!r->failed) rt_add(r, "ok cmdline, environ and exe as at boot");
    return 1;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "want 2 arguments\n");
        return 1;
    }
    saved_argv = argv;
    rt_serve("cmdline-env", handle);
}
