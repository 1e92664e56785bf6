// Locks on files of the instance's private storage:
//   fd 42  /tmp/locks.dat, flock(LOCK_EX)
//   fd 43  /tmp/locks.dat again (its own description), an OFD write lock on bytes [0, 10)
//   fd 44  /dev/shm/posix.dat, a classic POSIX read lock on bytes [20, 30) (owned by the process)
//   fd 45  /tmp/lease.dat, O_RDONLY, a read lease (F_SETLEASE F_RDLCK)
// /check tests each lock from a description of its own (a different owner): flock(LOCK_EX|LOCK_NB)
// fails with EWOULDBLOCK, F_OFD_GETLK finds the write lock on [0, 10) and the POSIX read lock on
// [20, 30) held by this process, F_GETLEASE on fd 45 says F_RDLCK.
#include "http.h"

#include <fcntl.h>
#include <sys/file.h>

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    int other = open("/tmp/locks.dat", O_RDWR | O_CLOEXEC);
    errno = 0;
    RT_CHECK(r, other >= 0 && flock(other, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK,
             "flock of fd 42 is gone (a new description locked it: %s)", strerror(errno));
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    RT_CHECK(r, fcntl(other, F_OFD_GETLK, &q) == 0 && q.l_type == F_WRLCK && q.l_start == 0 && q.l_len == 10,
             "OFD lock of fd 43 is gone (type %d start %ld len %ld)", q.l_type, (long)q.l_start,
             (long)q.l_len);
    if (other >= 0) close(other);
    int posix = open("/dev/shm/posix.dat", O_RDWR | O_CLOEXEC);
    struct flock p = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    RT_CHECK(r,
             posix >= 0 && fcntl(posix, F_OFD_GETLK, &p) == 0 && p.l_type == F_RDLCK && p.l_start == 20 &&
                 p.l_len == 10 && p.l_pid == getpid(),
             "POSIX lock gone (type %d start %ld len %ld pid %d, want pid %d)", p.l_type, (long)p.l_start,
             (long)p.l_len, p.l_pid, getpid());
    if (posix >= 0) close(posix);
    RT_CHECK(r, fcntl(45, F_GETLEASE) == F_RDLCK, "lease on fd 45: %d", fcntl(45, F_GETLEASE));
    if (!r->failed) rt_add(r, "ok flock, OFD, POSIX locks and a read lease held");
    return 1;
}

static int create(const char* path, int flags, int at) {
    int fd = open(path, flags | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, "0123456789012345678901234567890123456789", 40) < 0 || dup2(fd, at) < 0)
        rt_die(path);
    close(fd);
    return at;
}

int main(void) {
    create("/tmp/locks.dat", O_RDWR | O_CREAT, 42);
    if (flock(42, LOCK_EX) != 0) rt_die("flock");
    int fd = open("/tmp/locks.dat", O_RDWR | O_CLOEXEC);
    struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    if (fd < 0 || fcntl(fd, F_OFD_SETLK, &w) != 0 || dup2(fd, 43) < 0) rt_die("OFD lock");
    close(fd);
    create("/dev/shm/posix.dat", O_RDWR | O_CREAT, 44);
    struct flock rd = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 20, .l_len = 10};
    if (fcntl(44, F_SETLK, &rd) != 0) rt_die("POSIX lock");
    close(create("/tmp/lease.dat", O_WRONLY | O_CREAT, 45));
    fd = open("/tmp/lease.dat", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) != 0 || dup2(fd, 45) < 0) rt_die("lease");
    close(fd);
    rt_serve("file-locks", handle);
}
