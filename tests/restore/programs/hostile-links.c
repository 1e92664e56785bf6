// Links planted to lead the checkpoint's copy of the writable layer and /tmp out of the sandbox: in
// /var/rt-links (the writable layer) and /tmp/rt-links (tmpfs), symlinks to /etc/shadow, to ../../..,
// to /proc/self/root/etc/shadow and to /etc, a FIFO no one ever opens for writing, and a device node
// (mknod: refused for a function without CAP_MKNOD; its errno is recorded). A snapshot must copy the
// links as links (never read what they point to) and not block on the FIFO. /check after restore:
// every link reads back with its target, the FIFO is still a FIFO, the plain file is intact.
#include "http.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static const char* const kDirs[] = {"/var/rt-links", "/tmp/rt-links"};
static const char* const kLinks[][2] = {{"shadow", "/etc/shadow"},
                                        {"up", "../../../../../.."},
                                        {"proc-root", "/proc/self/root/etc/shadow"},
                                        {"etc", "/etc"}};
static int mknod_errno = -1;

static void plant(const char* dir) {
    char path[256];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) rt_die("mkdir");
    for (size_t i = 0; i < sizeof kLinks / sizeof kLinks[0]; ++i) {
        snprintf(path, sizeof path, "%s/%s", dir, kLinks[i][0]);
        if (symlink(kLinks[i][1], path) != 0) rt_die("symlink");
    }
    snprintf(path, sizeof path, "%s/fifo", dir);
    if (mkfifo(path, 0644) != 0) rt_die("mkfifo");
    snprintf(path, sizeof path, "%s/null", dir);
    mknod_errno = mknod(path, S_IFCHR | 0666, makedev(1, 3)) == 0 ? 0 : errno;
    snprintf(path, sizeof path, "%s/plain", dir);
    FILE* f = fopen(path, "w");
    if (!f || fputs("plain file\n", f) < 0 || fclose(f) != 0) rt_die("plain file");
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    char p[256], target[256];
    for (size_t d = 0; d < 2; ++d) {
        for (size_t i = 0; i < sizeof kLinks / sizeof kLinks[0]; ++i) {
            snprintf(p, sizeof p, "%s/%s", kDirs[d], kLinks[i][0]);
            ssize_t n = readlink(p, target, sizeof target - 1);
            RT_CHECK(r, n >= 0, "%s is not a symlink after restore (%s)", p, strerror(errno));
            if (n < 0) continue;
            target[n] = 0;
            RT_CHECK(r, strcmp(target, kLinks[i][1]) == 0, "%s points to %s, not %s", p, target,
                     kLinks[i][1]);
        }
        struct stat st;
        snprintf(p, sizeof p, "%s/fifo", kDirs[d]);
        RT_CHECK(r, lstat(p, &st) == 0 && S_ISFIFO(st.st_mode), "%s is not a FIFO after restore", p);
        snprintf(p, sizeof p, "%s/plain", kDirs[d]);
        char buf[64] = {0};
        int fd = open(p, O_RDONLY);
        RT_CHECK(r, fd >= 0 && read(fd, buf, sizeof buf - 1) == 11 && strcmp(buf, "plain file\n") == 0,
                 "%s lost its contents", p);
        if (fd >= 0) close(fd);
    }
    RT_CHECK(r, mknod_errno == EPERM, "mknod of a device node gave errno %d, not EPERM", mknod_errno);
    if (!r->failed) rt_add(r, "ok links, FIFO and file as planted; mknod EPERM");
    return 1;
}

int main(void) {
    for (size_t d = 0; d < 2; ++d) plant(kDirs[d]);
    rt_serve("hostile-links", handle);
}
