// Files open for writing in the instance's private storage, kept open across the snapshot:
//   fd 42  /tmp/app.log, O_WRONLY|O_APPEND (a log file), two lines written at init
//   fd 43  /dev/shm/state.bin, O_RDWR, 100 bytes written, offset 40
//   fd 44  /rt-layer.dat (in the writable layer of the overlay root), O_RDWR, 64 bytes, offset 10
//   fd 45  /tmp/app.log again, O_RDONLY (a reader of the log, offset 0)
// /check appends a line of its own (random) to the log through fd 42, then reads the log by path: it
// must hold the two init lines and its own line only. `restore --instances 2` checks two instances
// one after the other: if they shared the file, the second would see the first's line. Offsets,
// flags and contents of the other files must be as at the snapshot.
#include "http.h"

#include <fcntl.h>

static const char kInit[] = "init line 1\ninit line 2\n";

static void fill(char* buf, size_t len, char base) {
    for (size_t i = 0; i < len; ++i) buf[i] = (char)(base + (char)(i % 26));
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int fl = fcntl(42, F_GETFL);
    RT_CHECK(r, (fl & O_ACCMODE) == O_WRONLY && (fl & O_APPEND), "fd 42 flags %#x (want O_WRONLY|O_APPEND)",
             fl);
    unsigned token = 0;
    int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (rnd < 0 || read(rnd, &token, sizeof token) != sizeof token) token = (unsigned)time(NULL);
    if (rnd >= 0) close(rnd);
    char own[64];
    int n = snprintf(own, sizeof own, "instance %08x\n", token);
    RT_CHECK(r, write(42, own, (size_t)n) == n, "append to /tmp/app.log: %s", strerror(errno));
    char want[256], got[512] = {0};
    snprintf(want, sizeof want, "%s%s", kInit, own);
    int log = open("/tmp/app.log", O_RDONLY | O_CLOEXEC);
    ssize_t len = log >= 0 ? read(log, got, sizeof got - 1) : -1;
    if (log >= 0) close(log);
    RT_CHECK(r, len >= 0 && strcmp(got, want) == 0,
             "/tmp/app.log holds '%s', want '%s' (another instance's line?)", got, want);
    // The reader fd 45 reads from its own offset (0) through the same file.
    char first[12] = {0};
    RT_CHECK(r, read(45, first, 11) == 11 && strcmp(first, "init line 1") == 0, "fd 45 read '%s'", first);

    char expect[100], buf[100];
    fill(expect, sizeof expect, 'a');
    RT_CHECK(r, lseek(43, 0, SEEK_CUR) == 40, "fd 43 offset %ld, want 40", (long)lseek(43, 0, SEEK_CUR));
    RT_CHECK(r, (fcntl(43, F_GETFL) & O_ACCMODE) == O_RDWR, "fd 43 not O_RDWR");
    RT_CHECK(r, read(43, buf, 10) == 10 && memcmp(buf, expect + 40, 10) == 0, "fd 43 contents differ");
    RT_CHECK(r, write(43, "XY", 2) == 2, "write fd 43: %s", strerror(errno));
    RT_CHECK(r, pread(43, buf, 2, 50) == 2 && memcmp(buf, "XY", 2) == 0, "fd 43 write did not land at 50");

    fill(expect, 64, 'A');
    RT_CHECK(r, lseek(44, 0, SEEK_CUR) == 10, "fd 44 offset %ld, want 10", (long)lseek(44, 0, SEEK_CUR));
    RT_CHECK(r, read(44, buf, 54) == 54 && memcmp(buf, expect + 10, 54) == 0, "fd 44 contents differ");
    RT_CHECK(r, read(44, buf, 1) == 0, "fd 44 longer than 64 bytes");
    own[n - 1] = 0;
    if (!r->failed) rt_add(r, "ok log appended privately (%s), offsets 40 and 10 kept", own);
    return 1;
}

static void place(int fd, int at) {
    if (fd < 0 || dup2(fd, at) < 0) rt_die("open");
    close(fd);
}

int main(void) {
    place(open("/tmp/app.log", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), 42);
    if (write(42, "init line 1\n", 12) != 12 || write(42, "init line 2\n", 12) != 12) rt_die("log");
    char buf[100];
    fill(buf, sizeof buf, 'a');
    place(open("/dev/shm/state.bin", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), 43);
    if (write(43, buf, 100) != 100 || lseek(43, 40, SEEK_SET) != 40) rt_die("state.bin");
    fill(buf, 64, 'A');
    place(open("/rt-layer.dat", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), 44);
    if (write(44, buf, 64) != 64 || lseek(44, 10, SEEK_SET) != 10) rt_die("rt-layer.dat");
    place(open("/tmp/app.log", O_RDONLY | O_CLOEXEC), 45);
    rt_serve("private-write-files", handle);
}
