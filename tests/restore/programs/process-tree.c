// A tree of processes, each reached over its own socketpair (cross-process pairs, some with data the
// main process has not read yet), with the sessions and groups a restore must rebuild:
//   A: the main process's child, leader of its own group (setpgid), same session;
//   B: a child that called setsid; it forks C, which stays in B's session and group, and whose
//      socketpair end passed through B (created by the main process before B was forked);
//   D: double-forked (its parent exited): adopted by init, ppid 1, in the main session and group;
//   E: a child that joined A's group.
// A pipe from the main process to A holds 1000 unread bytes; a MAP_SHARED anonymous page is shared
// by all, and every child bumps its counter when asked. /check asks every child for its ids.
#include "http.h"

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

enum { A, B, C, D, E, N };
static const char* const kName[N] = {"A", "B", "C", "D", "E"};
static int link_fd[N];  // the main process's end of each child's socketpair
static pid_t pid_of[N], main_pid;
static atomic_int* shared_counter;
static int pipe_to_a[2];

static unsigned char pipe_byte(size_t i) {
    return (unsigned char)(i * 7 + 3);
}

// A child: says hello (left unread until /check), then answers each request with its ids.
static void child_loop(int name, int fd) {
    char hello[32];
    int n = snprintf(hello, sizeof hello, "hello from %s", kName[name]);
    if (send(fd, hello, (size_t)n, 0) != n) _exit(2);
    for (;;) {
        char req[16];
        ssize_t got = recv(fd, req, sizeof req, 0);
        if (got <= 0) _exit(0);
        int extra = 0;
        if (name == A) {  // A also drains the pipe the main process filled before the snapshot
            unsigned char buf[1000];
            size_t have = 0;
            while (have < sizeof buf) {
                ssize_t r = read(pipe_to_a[0], buf + have, sizeof buf - have);
                if (r <= 0) break;
                have += (size_t)r;
            }
            extra = have == sizeof buf ? 1 : -(int)have;
            for (size_t i = 0; i < have && extra == 1; ++i)
                if (buf[i] != pipe_byte(i)) extra = -2000;
        }
        int count = atomic_fetch_add(shared_counter, 1) + 1;
        char reply[128];
        int len = snprintf(reply, sizeof reply, "%d %d %d %d %d %d", getpid(), getppid(), getpgid(0),
                           getsid(0), count, extra);
        if (send(fd, reply, (size_t)len, 0) != len) _exit(3);
    }
}

static void make_link(int name, int sv[2]) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) rt_die("socketpair");
    link_fd[name] = sv[0];
}

static int handle(const char* path, struct rt_reply* r) {
    if (strcmp(path, "/check") != 0) return 0;
    pid_t want_ppid[N] = {main_pid, main_pid, pid_of[B], 1, main_pid};
    pid_t want_pgid[N] = {pid_of[A], pid_of[B], pid_of[B], main_pid, pid_of[A]};
    pid_t want_sid[N] = {main_pid, pid_of[B], pid_of[B], main_pid, main_pid};
    RT_CHECK(r, getpid() == main_pid, "main pid %d, was %d", getpid(), main_pid);
    for (int k = 0; k < N; ++k) {
        char buf[128] = {0};
        char want_hello[32];
        snprintf(want_hello, sizeof want_hello, "hello from %s", kName[k]);
        ssize_t got = recv(link_fd[k], buf, sizeof buf - 1, MSG_DONTWAIT);
        RT_CHECK(r, got > 0 && strcmp(buf, want_hello) == 0, "%s: queued hello lost (got '%s')", kName[k],
                 got > 0 ? buf : "");
        int before = atomic_load(shared_counter);
        if (send(link_fd[k], "?", 1, 0) != 1) {
            rt_fail(r, "%s: send: %s", kName[k], strerror(errno));
            continue;
        }
        memset(buf, 0, sizeof buf);
        got = recv(link_fd[k], buf, sizeof buf - 1, 0);
        int pid = 0, ppid = 0, pgid = 0, sid = 0, count = 0, extra = 0;
        if (got <= 0 || sscanf(buf, "%d %d %d %d %d %d", &pid, &ppid, &pgid, &sid, &count, &extra) != 6) {
            rt_fail(r, "%s: no answer (%s)", kName[k], got < 0 ? strerror(errno) : "closed");
            continue;
        }
        RT_CHECK(r, pid == pid_of[k], "%s: pid %d, was %d", kName[k], pid, pid_of[k]);
        RT_CHECK(r, ppid == want_ppid[k], "%s: ppid %d, want %d", kName[k], ppid, want_ppid[k]);
        RT_CHECK(r, pgid == want_pgid[k], "%s: pgid %d, want %d", kName[k], pgid, want_pgid[k]);
        RT_CHECK(r, sid == want_sid[k], "%s: sid %d, want %d", kName[k], sid, want_sid[k]);
        RT_CHECK(r, count == before + 1 && atomic_load(shared_counter) == before + 1,
                 "%s: shared counter not shared (child saw %d, main %d, before %d)", kName[k], count,
                 atomic_load(shared_counter), before);
        if (k == A) RT_CHECK(r, extra == 1, "A: the pipe's 1000 unread bytes did not come back (%d)", extra);
        RT_CHECK(r, getpgid(pid_of[k]) == want_pgid[k] && getsid(pid_of[k]) == want_sid[k],
                 "%s: ids seen from the main process differ", kName[k]);
    }
    if (!r->failed)
        rt_add(r, "ok 5 processes with their pids, parents, groups and sessions; shared page shared");
    return 1;
}

int main(void) {
    main_pid = getpid();
    shared_counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared_counter == MAP_FAILED) rt_die("mmap");
    if (pipe2(pipe_to_a, O_CLOEXEC) != 0) rt_die("pipe");
    int sv[2];

    make_link(A, sv);
    if ((pid_of[A] = fork()) == 0) {
        setpgid(0, 0);
        close(pipe_to_a[1]);
        child_loop(A, sv[1]);
    }
    setpgid(pid_of[A], pid_of[A]);  // either side may run first
    close(sv[1]);
    close(pipe_to_a[0]);
    unsigned char data[1000];
    for (size_t i = 0; i < sizeof data; ++i) data[i] = pipe_byte(i);
    if (write(pipe_to_a[1], data, sizeof data) != (ssize_t)sizeof data) rt_die("write pipe");

    int cv[2];
    make_link(C, cv);
    make_link(B, sv);
    if ((pid_of[B] = fork()) == 0) {
        setsid();
        pid_t c = fork();
        if (c == 0) {
            close(sv[1]);
            child_loop(C, cv[1]);
        }
        close(cv[1]);
        child_loop(B, sv[1]);
    }
    close(sv[1]);
    close(cv[1]);

    make_link(D, sv);
    int dp[2];
    if (pipe(dp) != 0) rt_die("pipe");
    pid_t x = fork();
    if (x == 0) {
        pid_t d = fork();
        if (d == 0) {
            close(dp[0]);
            close(dp[1]);
            child_loop(D, sv[1]);
        }
        if (write(dp[1], &d, sizeof d) != sizeof d) _exit(5);
        _exit(0);
    }
    close(dp[1]);
    if (read(dp[0], &pid_of[D], sizeof pid_of[D]) != sizeof pid_of[D]) rt_die("read D's pid");
    close(dp[0]);
    waitpid(x, NULL, 0);
    close(sv[1]);

    make_link(E, sv);
    if ((pid_of[E] = fork()) == 0) {
        if (setpgid(0, pid_of[A]) != 0) _exit(6);
        child_loop(E, sv[1]);
    }
    close(sv[1]);

    // Ready only once every child has said hello (and C's pid is known: it is B's child).
    for (int k = 0; k < N; ++k) {
        char buf[64];
        if (recv(link_fd[k], buf, sizeof buf, MSG_PEEK) <= 0) rt_die("hello");
    }
    for (int tries = 0; tries < 2000 && !pid_of[C]; ++tries) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid_of[B], pid_of[B]);
        FILE* f = fopen(path, "re");
        if (f && fgets(line, sizeof line, f)) pid_of[C] = atoi(line);
        if (f) fclose(f);
    }
    while (getpgid(pid_of[E]) != pid_of[A]) rt_sleep_ms(1);
    rt_serve("process-tree", handle);
}
