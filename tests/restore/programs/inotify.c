// inotify instances, restored with their watches re-added by path at the same wds:
//   fd 42  IN_NONBLOCK|IN_CLOEXEC, watching
//            wd 1 /tmp/inotify-dir        IN_CREATE|IN_DELETE          (a directory on tmpfs)
//            wd 2 /tmp/inotify-file       IN_MODIFY|IN_CLOSE_WRITE     (a file on tmpfs)
//            wd 3 /var/inotify-layer      IN_CREATE                    (a directory of the writable layer)
//            wd 4 /tmp/inotify-link       IN_ATTRIB|IN_DONT_FOLLOW     (the symlink itself)
//            wd 5 /function/subdir        IN_DELETE_SELF|IN_ONESHOT|IN_EXCL_UNLINK (read-only function dir)
//          with an event queued at the snapshot (a write to /tmp/inotify-file): kept when booted,
//          dropped by a restore (the snapshot says so).
//   fd 43  blocking, close-on-exec off, no watches.
//   fd 44  a dup of fd 42 (one instance: a watch added through one is removed through the other).
// /check: the flags; /proc/self/fdinfo/42 shows wds 1..5 on the inodes of those paths with their
// masks; events made now arrive with the right wds, masks and names; a new watch gets a wd above 5.
#include "http.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#define NWATCH 5
static const char* const kPaths[NWATCH] = {"/tmp/inotify-dir", "/tmp/inotify-file", "/var/inotify-layer",
                                           "/tmp/inotify-link", "/function/subdir"};
static const uint32_t kMasks[NWATCH] = {IN_CREATE | IN_DELETE, IN_MODIFY | IN_CLOSE_WRITE, IN_CREATE,
                                        IN_ATTRIB | IN_DONT_FOLLOW,
                                        IN_DELETE_SELF | IN_ONESHOT | IN_EXCL_UNLINK};

// Drains fd 42; returns a bit per expected event seen (bit i of `want`), or -1 on an unexpected one.
struct want {
    int wd;
    uint32_t mask;
    const char* name;
};

static int drain(struct rt_reply* r, const struct want* w, int n) {
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int seen = 0;
    for (;;) {
        ssize_t len = read(42, buf, sizeof buf);
        if (len <= 0) break;
        for (char* p = buf; p < buf + len;) {
            struct inotify_event* e = (struct inotify_event*)p;
            int known = 0;
            for (int i = 0; i < n; ++i)
                if (e->wd == w[i].wd && (e->mask & ~(uint32_t)IN_ISDIR) == w[i].mask &&
                    strcmp(e->len ? e->name : "", w[i].name) == 0) {
                    seen |= 1 << i;
                    known = 1;
                }
            if (!known && w)
                rt_fail(r, "unexpected event wd %d mask %#x name '%s'", e->wd, e->mask,
                        e->len ? e->name : "");
            p += sizeof *e + e->len;
        }
    }
    return seen;
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int fl = fcntl(42, F_GETFL), fdfl = fcntl(42, F_GETFD);
    RT_CHECK(r, fl >= 0 && (fl & O_NONBLOCK) && (fdfl & FD_CLOEXEC), "fd 42 flags %#x fd flags %#x", fl,
             fdfl);
    fl = fcntl(43, F_GETFL), fdfl = fcntl(43, F_GETFD);
    RT_CHECK(r, fl >= 0 && !(fl & O_NONBLOCK) && !(fdfl & FD_CLOEXEC), "fd 43 flags %#x fd flags %#x", fl,
             fdfl);

    // The watches as the kernel shows them: wd, inode, mask.
    FILE* f = fopen("/proc/self/fdinfo/42", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned wd = 0, sdev = 0, mask = 0;
        unsigned long ino = 0;
        if (sscanf(line, "inotify wd:%x ino:%lx sdev:%x mask:%x", &wd, &ino, &sdev, &mask) != 4) continue;
        if (wd < 1 || wd > NWATCH) {
            rt_fail(r, "a watch with wd %u", wd);
            continue;
        }
        struct stat st;
        RT_CHECK(r, lstat(kPaths[wd - 1], &st) == 0 && st.st_ino == ino, "wd %u is on inode %lu, not on %s",
                 wd, ino, kPaths[wd - 1]);
        RT_CHECK(r, mask == (kMasks[wd - 1] & ~(uint32_t)IN_DONT_FOLLOW), "wd %u has mask %#x, not %#x", wd,
                 mask, kMasks[wd - 1] & ~(uint32_t)IN_DONT_FOLLOW);
        found |= 1 << (wd - 1);
    }
    if (f) fclose(f);
    RT_CHECK(r, found == (1 << NWATCH) - 1, "watches found in fdinfo: %#x", found);
    FILE* f43 = fopen("/proc/self/fdinfo/43", "r");
    int watches43 = 0;
    while (f43 && fgets(line, sizeof line, f43)) watches43 += strncmp(line, "inotify ", 8) == 0;
    if (f43) fclose(f43);
    RT_CHECK(r, f43 && watches43 == 0, "fd 43 has %d watches", watches43);

    drain(r, NULL, 0);  // what was queued at the snapshot (kept when booted, dropped when restored)

    int fd = open("/tmp/inotify-dir/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
    unlink("/tmp/inotify-dir/new");
    fd = open("/tmp/inotify-file", O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "x", 1) != 1) rt_fail(r, "write /tmp/inotify-file");
        close(fd);
    }
    mkdir("/var/inotify-layer/sub", 0755);
    rmdir("/var/inotify-layer/sub");
    RT_CHECK(r, utimensat(AT_FDCWD, "/tmp/inotify-link", NULL, AT_SYMLINK_NOFOLLOW) == 0,
             "utimensat link: %s", strerror(errno));
    struct want w[] = {{1, IN_CREATE, "new"},   {1, IN_DELETE, "new"}, {2, IN_MODIFY, ""},
                       {2, IN_CLOSE_WRITE, ""}, {3, IN_CREATE, "sub"}, {4, IN_ATTRIB, ""}};
    int n = sizeof w / sizeof w[0];
    int seen = drain(r, w, n);
    for (int i = 0; i < n; ++i)
        RT_CHECK(r, seen & (1 << i), "no event wd %d mask %#x '%s'", w[i].wd, w[i].mask, w[i].name);

    int wd = inotify_add_watch(44, "/tmp", IN_DELETE_SELF);
    RT_CHECK(r, wd > NWATCH, "a new watch through fd 44 got wd %d (%s)", wd, strerror(errno));
    RT_CHECK(r, wd > 0 && inotify_rm_watch(42, wd) == 0, "fd 42 does not know wd %d of its dup fd 44 (%s)",
             wd, strerror(errno));
    drain(r, NULL, 0);  // its IN_IGNORED
    if (!r->failed)
        rt_add(r, "ok inotify: 5 watches at their wds and masks, events arrive, a new watch got wd %d", wd);
    return 1;
}

int main(void) {
    if (mkdir("/tmp/inotify-dir", 0755) != 0 || mkdir("/var/inotify-layer", 0755) != 0) rt_die("mkdir");
    int fd = open("/tmp/inotify-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || symlink("/tmp/inotify-file", "/tmp/inotify-link") != 0) rt_die("file, symlink");
    int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC), empty = inotify_init1(0);
    if (in < 0 || empty < 0 || dup2(in, 42) < 0 || dup3(empty, 43, 0) < 0) rt_die("inotify_init1");
    close(in);
    close(empty);
    if (dup2(42, 44) < 0) rt_die("dup2");
    int fd42 = fcntl(42, F_GETFD);
    if (fd42 < 0 || fcntl(42, F_SETFD, fd42 | FD_CLOEXEC) < 0) rt_die("cloexec");
    for (int i = 0; i < NWATCH; ++i)
        if (inotify_add_watch(42, kPaths[i], kMasks[i]) != i + 1) rt_die(kPaths[i]);
    if (write(fd, "queued", 6) != 6) rt_die("write");  // an event left in the queue
    close(fd);
    rt_serve("inotify", handle);
}
