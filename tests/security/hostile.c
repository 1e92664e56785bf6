// The hostile function: one program that tries escapes from its sandbox on request.
//
// GET /attempt/<name> runs attempt <name> in a child process (so an escape that worked changes
// nothing in the server, and a filter that kills the caller kills only the child) and answers
//   "denied <errno name>"    the attempt failed with that errno (EPERM, ENOSYS, ...)
//   "killed <signal name>"   the attempt's process was killed (SIGSYS from a KILL action, say)
//   "ALLOWED <details>"      the escape worked: the sandbox is broken
// Adding an attempt: a function below and one line in kAttempts; then one line in
// security_test.cpp's list with the errno it must fail with.
#include "http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

// An attempt returns 0 when the escape worked (with details written to `details`), else the errno
// that stopped it.
typedef int (*attempt_fn)(char* details, size_t size);

static int fail_errno(void) {
    return errno ? errno : EIO;
}

static int try_io_uring_setup(char* details, size_t size) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(SYS_io_uring_setup, 4, &p);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "io_uring fd %ld", fd);
    return 0;
}

// BPF_PROG_LOAD of the smallest socket filter: r0 = 0; exit.
static int try_bpf_prog_load(char* details, size_t size) {
    struct bpf_insn insns[2];
    memset(insns, 0, sizeof insns);
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[0].dst_reg = BPF_REG_0;
    insns[1].code = BPF_JMP | BPF_EXIT;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t) "GPL";
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "bpf program fd %ld", fd);
    return 0;
}

static int try_perf_event_open(char* details, size_t size) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.exclude_kernel = 1;
    long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "perf event fd %ld", fd);
    return 0;
}

static int try_keyctl(char* details, size_t size) {
    long id = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "initless-hostile");
    if (id < 0) return fail_errno();
    snprintf(details, size, "joined session keyring %ld", id);
    return 0;
}

static int try_add_key(char* details, size_t size) {
    long id = syscall(SYS_add_key, "user", "initless-hostile", "secret", 6, KEY_SPEC_PROCESS_KEYRING);
    if (id < 0) return fail_errno();
    snprintf(details, size, "key %ld added", id);
    return 0;
}

static int try_userfaultfd(char* details, size_t size) {
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "userfaultfd %ld", fd);
    return 0;
}

static int try_kexec_load(char* details, size_t size) {
    long r = syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL);
    if (r < 0) return fail_errno();
    snprintf(details, size, "kexec_load returned %ld", r);
    return 0;
}

static int try_mount_tmpfs(char* details, size_t size) {
    if (mount("hostile", "/tmp", "tmpfs", 0, "size=1m") != 0) return fail_errno();
    snprintf(details, size, "tmpfs mounted on /tmp");
    return 0;
}

// A user namespace of its own, then a mount inside it (what gives root-in-namespace its power).
static int try_unshare_user_mount(char* details, size_t size) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return fail_errno();
    if (mount("hostile", "/tmp", "tmpfs", 0, "size=1m") != 0) {
        snprintf(details, size, "unshare(CLONE_NEWUSER|CLONE_NEWNS) worked (mount inside failed: %s)",
                 strerrorname_np(errno));
        return 0;
    }
    snprintf(details, size, "unshare(CLONE_NEWUSER|CLONE_NEWNS) and a tmpfs mount inside worked");
    return 0;
}

static int try_clone_newuser(char* details, size_t size) {
    long pid = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), 0UL, NULL, NULL, 0UL);
    if (pid < 0) return fail_errno();
    if (pid == 0) _exit(0);
    waitpid((pid_t)pid, NULL, 0);
    snprintf(details, size, "clone(CLONE_NEWUSER) made process %ld", pid);
    return 0;
}

static int try_clone3(char* details, size_t size) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) return fail_errno();
    if (pid == 0) _exit(0);
    waitpid((pid_t)pid, NULL, 0);
    snprintf(details, size, "clone3(CLONE_NEWUSER) made process %ld", pid);
    return 0;
}

static int try_ptrace_attach_init(char* details, size_t size) {
    if (ptrace(PTRACE_ATTACH, 1, NULL, NULL) != 0) return fail_errno();
    ptrace(PTRACE_DETACH, 1, NULL, NULL);
    snprintf(details, size, "attached to pid 1");
    return 0;
}

// The "shocker" escape: a file handle guessed for the root directory of the filesystem.
static int try_open_by_handle_at(char* details, size_t size) {
    int mount_fd = open("/", O_RDONLY | O_DIRECTORY);
    if (mount_fd < 0) return fail_errno();
    struct {
        struct file_handle h;
        unsigned char bytes[8];
    } handle;
    memset(&handle, 0, sizeof handle);
    handle.h.handle_bytes = 8;
    handle.h.handle_type = 1;  // FILEID_INO32_GEN
    handle.bytes[0] = 2;       // inode 2: the root of an ext4 filesystem
    long fd = syscall(SYS_open_by_handle_at, mount_fd, &handle.h, O_RDONLY);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "opened a file by handle: fd %ld", fd);
    return 0;
}

static int try_raw_socket(char* details, size_t size) {
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "raw AF_INET socket %d", fd);
    return 0;
}

static int try_packet_socket(char* details, size_t size) {
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "AF_PACKET socket %d", fd);
    return 0;
}

// Joining a namespace through an fd (its own user namespace: without a filter that is EINVAL).
static int try_setns(char* details, size_t size) {
    int fd = open("/proc/self/ns/user", O_RDONLY);
    if (fd < 0) return fail_errno();
    if (setns(fd, CLONE_NEWUSER) != 0) return fail_errno();
    snprintf(details, size, "setns(user namespace) worked");
    return 0;
}

// The host's secrets and the daemon's state are not in the sandbox's root at all (a private root).
static int try_read_shadow(char* details, size_t size) {
    int fd = open("/etc/shadow", O_RDONLY);
    if (fd < 0) return fail_errno();
    snprintf(details, size, "opened /etc/shadow");
    return 0;
}

// Another function's image and every instance's layer live under these: none is inside.
static int try_read_state_dirs(char* details, size_t size) {
    const char* dirs[] = {"/var/lib/initless", "/run/initless", "/dev/shm/initless-images"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; ++i) {
        int fd = open(dirs[i], O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            snprintf(details, size, "opened %s", dirs[i]);
            return 0;
        }
        if (errno != ENOENT) return fail_errno();
    }
    return ENOENT;
}

// Writes `data` to the host file `path` names; 0 (with details) if the write went through.
static int write_host_file(const char* path, const char* data, char* details, size_t size) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return fail_errno();
    ssize_t n = write(fd, data, strlen(data));
    int err = errno;
    close(fd);
    if (n < 0) return err;
    snprintf(details, size, "wrote %s", path);
    return 0;
}

static int try_write_core_pattern(char* details, size_t size) {
    return write_host_file("/proc/sys/kernel/core_pattern", "|/tmp/escape", details, size);
}

// Docker's read-only /proc paths: sysrq-trigger would reboot or crash the host ("h" only prints help to
// the kernel log, should it get through).
static int try_write_sysrq_trigger(char* details, size_t size) {
    return write_host_file("/proc/sysrq-trigger", "h", details, size);
}

// A host process cannot even be named from the sandbox's pid namespace: signal 0 (existence check, no
// effect) to every pid up to 65536 that is not one of the sandbox's own finds nothing, where on the
// host it would find the daemon, sshd and the rest (ESRCH for each; EPERM would mean found).
static int try_signal_host_process(char* details, size_t size) {
    int found = 0, first = 0;
    for (pid_t pid = 2; pid < 65536; ++pid) {
        if (kill(pid, 0) != 0 && errno == ESRCH) continue;
        char path[32];
        snprintf(path, sizeof path, "/proc/%d", (int)pid);
        if (access(path, F_OK) == 0) continue;  // one of the sandbox's own processes
        if (!found++) first = pid;
    }
    if (!found) return ESRCH;
    snprintf(details, size, "%d processes outside the sandbox answer kill(pid, 0), the first %d", found,
             first);
    return 0;
}

// The host's runtimes are bound read-only.
static int try_write_usr(char* details, size_t size) {
    int fd = open("/usr/bin/escape", O_WRONLY | O_CREAT, 0755);
    if (fd < 0) return fail_errno();
    close(fd);
    snprintf(details, size, "created /usr/bin/escape");
    return 0;
}

// The host's loopback services (the gateway's admin API): with network = "none" there is no route
// out; 10.0.2.2 is where slirp4netns would put the host's loopback, which egress disables too.
static int try_connect_host_loopback(char* details, size_t size) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return fail_errno();
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(8080);
    a.sin_addr.s_addr = htonl(0x0a000202);
    int rc = connect(s, (struct sockaddr*)&a, sizeof a);
    int err = errno;
    close(s);
    if (rc != 0) return err;
    snprintf(details, size, "connected to 10.0.2.2:8080");
    return 0;
}

// pids_max stops a fork bomb: fork until it fails, then reap.
static int try_fork_bomb(char* details, size_t size) {
    enum { kMax = 100000 };
    static pid_t kids[kMax];
    int n = 0, err = 0;
    for (; n < kMax; ++n) {
        pid_t p = fork();
        if (p == 0) {
            pause();
            _exit(0);
        }
        if (p < 0) {
            err = errno;
            break;
        }
        kids[n] = p;
    }
    for (int i = 0; i < n; ++i) kill(kids[i], SIGKILL);
    for (int i = 0; i < n; ++i) waitpid(kids[i], NULL, 0);
    if (err) return err;
    snprintf(details, size, "forked %d processes", n);
    return 0;
}

// The memory limit: the attempt's process is OOM-killed.
static int try_allocate_past_memory_limit(char* details, size_t size) {
    size_t total = 0;
    while (total < (8ULL << 30)) {
        size_t chunk = 16 << 20;
        char* p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return fail_errno();
        memset(p, 1, chunk);
        total += chunk;
    }
    snprintf(details, size, "touched %zu MiB", total >> 20);
    return 0;
}

// The writable layer's size (a tmpfs of writable_layer_mb): ENOSPC.
static int try_fill_writable_layer(char* details, size_t size) {
    int fd = open("/var/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return fail_errno();
    static char buf[1 << 20];
    memset(buf, 1, sizeof buf);
    long total = 0;
    int err = 0;
    while (total < (8L << 30)) {
        ssize_t n = write(fd, buf, sizeof buf);
        if (n < 0) {
            err = errno;
            break;
        }
        total += n;
    }
    close(fd);
    unlink("/var/tmp/fill");
    if (err) return err;
    snprintf(details, size, "wrote %ld MiB", total >> 20);
    return 0;
}

static const struct {
    const char* name;
    attempt_fn run;
} kAttempts[] = {
    {"io_uring_setup", try_io_uring_setup},
    {"bpf_prog_load", try_bpf_prog_load},
    {"perf_event_open", try_perf_event_open},
    {"keyctl", try_keyctl},
    {"add_key", try_add_key},
    {"userfaultfd", try_userfaultfd},
    {"kexec_load", try_kexec_load},
    {"mount_tmpfs", try_mount_tmpfs},
    {"unshare_user_mount", try_unshare_user_mount},
    {"clone_newuser", try_clone_newuser},
    {"clone3", try_clone3},
    {"ptrace_attach_init", try_ptrace_attach_init},
    {"open_by_handle_at", try_open_by_handle_at},
    {"raw_socket", try_raw_socket},
    {"packet_socket", try_packet_socket},
    {"setns", try_setns},
    {"read_shadow", try_read_shadow},
    {"read_state_dirs", try_read_state_dirs},
    {"write_core_pattern", try_write_core_pattern},
    {"write_sysrq_trigger", try_write_sysrq_trigger},
    {"signal_host_process", try_signal_host_process},
    {"write_usr", try_write_usr},
    {"connect_host_loopback", try_connect_host_loopback},
    {"fork_bomb", try_fork_bomb},
    {"allocate_past_memory_limit", try_allocate_past_memory_limit},
    {"fill_writable_layer", try_fill_writable_layer},
};

struct outcome {
    int err;
    char details[512];
};

// Runs the attempt in a child and reports what happened to it.
static void run_attempt(attempt_fn run, struct rt_reply* r) {
    int fds[2];
    if (pipe(fds) != 0) {
        rt_fail(r, "pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        rt_fail(r, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        struct outcome o;
        memset(&o, 0, sizeof o);
        errno = 0;
        o.err = run(o.details, sizeof o.details);
        (void)!write(fds[1], &o, sizeof o);
        _exit(0);
    }
    close(fds[1]);
    struct outcome o;
    memset(&o, 0, sizeof o);
    ssize_t n;
    do n = read(fds[0], &o, sizeof o);
    while (n < 0 && errno == EINTR);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (n != (ssize_t)sizeof o) {
        if (WIFSIGNALED(status))
            rt_add(r, "killed SIG%s", sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
        else
            rt_add(r, "broken: the attempt's process ended with status %d without an answer", status);
        return;
    }
    if (o.err == 0)
        rt_add(r, "ALLOWED %s", o.details);
    else
        rt_add(r, "denied %s", strerrorname_np(o.err) ? strerrorname_np(o.err) : "unknown-errno");
}

static int handle(const char* path, struct rt_reply* r) {
    const char* prefix = "/attempt/";
    if (strncmp(path, prefix, strlen(prefix)) != 0) return 0;
    const char* name = path + strlen(prefix);
    for (size_t i = 0; i < sizeof kAttempts / sizeof kAttempts[0]; ++i)
        if (strcmp(kAttempts[i].name, name) == 0) {
            run_attempt(kAttempts[i].run, r);
            return 1;
        }
    return 0;
}

int main(void) {
    rt_serve("hostile", handle);
}
