// Character devices held open: /dev/urandom (read), /dev/zero, /dev/null (write). /check: reading
// urandom gives 64 bytes that are not all equal, /dev/zero gives zeros, /dev/null accepts writes, and
// getrandom works.
#include "http.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int urandom, zero, null;

static int is_dev(int fd, unsigned maj, unsigned min) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == maj && minor(st.st_rdev) == min;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    RT_CHECK(r, is_dev(urandom, 1, 9), "fd %d is not /dev/urandom (1:9)", urandom);
    RT_CHECK(r, is_dev(zero, 1, 5), "fd %d is not /dev/zero (1:5)", zero);
    RT_CHECK(r, is_dev(null, 1, 3), "fd %d is not /dev/null (1:3)", null);
    unsigned char b[64];
    RT_CHECK(r, read(urandom, b, sizeof b) == sizeof b, "read urandom: %s", strerror(errno));
    int same = 1;
    for (size_t i = 1; i < sizeof b; ++i) same &= b[i] == b[0];
    RT_CHECK(r, !same, "urandom gave 64 equal bytes");
    memset(b, 1, sizeof b);
    RT_CHECK(r, read(zero, b, sizeof b) == sizeof b && b[0] == 0 && b[63] == 0, "read /dev/zero");
    RT_CHECK(r, write(null, b, sizeof b) == sizeof b, "write /dev/null: %s", strerror(errno));
    RT_CHECK(r, getrandom(b, sizeof b, 0) == sizeof b, "getrandom: %s", strerror(errno));
    if (!r->failed) rt_add(r, "ok urandom, zero and null work");
    return 1;
}

int main(void) {
    urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (urandom < 0 || zero < 0 || null < 0) rt_die("open /dev");
    unsigned char b[16];
    if (read(urandom, b, sizeof b) != sizeof b) rt_die("read urandom");
    rt_serve("dev-files", handle);
}
