// The default seccomp profile of a function: an allow-list, everything else answered EPERM.
//
// How it was written: by what a function does (serve HTTP from Python, Node, the JVM, C), not by
// copying a list. Docker's default profile (moby profiles/seccomp) was the yardstick: for a
// container without capabilities it allows about 350 calls. We allow a subset of those, and deny
// beyond it what a function has no use for, what the checkpoint cannot save, and what the kernel has
// repeatedly been attacked through. DESIGN.md "Seccomp" has the table side by side.
//
// Denied beyond Docker (and why):
//   - every architecture but x86_64: i386 and x32 calls reach the kernel's compat entry points
//     (Docker allows both); such a call kills the process (profile.cpp).
//   - io_uring_setup/enter/register: a second syscall interface that seccomp cannot see into, and
//     the largest source of kernel privilege escalations of recent years (Docker dropped it too, in
//     2023; older Dockers allow it). libuv and others fall back to plain syscalls on EPERM.
//   - ptrace, process_vm_readv/writev: the function is alone in its pid namespace with only its own
//     processes; none needs to trace another, a traced process cannot be snapshotted, and a tracer
//     inside could tamper with a process while we checkpoint it. (Docker allows them on kernels
//     >= 4.8.) Debugging inside a sandbox is what `seccomp = "unconfined"` is for.
//   - socket: only the families a function uses, AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (glibc
//     reads interface addresses over netlink); Docker allows every family but AF_VSOCK, so AF_ALG,
//     AF_PACKET, AF_KEY, Bluetooth, ... stay reachable there (raw and packet sockets then still fail
//     for want of CAP_NET_RAW; here the filter stops them first).
//   - memfd_secret: its pages are invisible to /proc/PID/mem, so a snapshot could not save them.
//   - landlock_*: a Landlock domain cannot be checkpointed; a restored process would silently lose it.
//   - modify_ldt: 16-bit segments (Wine, DOSEMU) only, with a history of kernel bugs.
//   - fanotify_mark, name_to_handle_at: halves of interfaces whose other half (fanotify_init,
//     open_by_handle_at) needs capabilities; nothing to do with them alone.
//   - clone3: answered ENOSYS (its flags sit in memory, where a filter cannot look), so glibc falls
//     back to clone, whose flags are checked; as Docker does.
// Denied as in Docker (for a container without capabilities): mount, umount2, fsopen, fsconfig,
// fsmount, fspick, move_mount, open_tree, mount_setattr, pivot_root, chroot; unshare, setns, clone
// with a CLONE_NEW* flag; bpf, perf_event_open; keyctl, add_key, request_key; userfaultfd;
// kexec_load, kexec_file_load, reboot, init/finit/delete_module; open_by_handle_at; syslog; acct;
// swapon/swapoff; settimeofday, clock_settime; sethostname, setdomainname; iopl, ioperm; quotactl;
// kcmp, pidfd_getfd, process_madvise; mbind, set_mempolicy, get_mempolicy; vhangup; personality
// other than Docker's five values; lookup_dcookie, nfsservctl, uselib, _sysctl, ustat, sysfs and the
// other obsolete calls.
#include <sched.h>
#include <sys/personality.h>
#include <sys/socket.h>

#include "initless/seccomp/profile.h"

namespace initless::seccomp {

namespace {

// Grouped by what a function does with them. Every name must be known to libseccomp 2.5.4 on
// x86_64 (a unit test checks it).
const std::vector<std::string> kAllowed = {
    // Processes and threads (clone is below, with its flags checked).
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "kill",
    "tkill",
    "tgkill",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "arch_prctl",
    "prctl",
    "restart_syscall",
    "pidfd_open",
    "pidfd_send_signal",
    "process_mrelease",
    "membarrier",
    "getcpu",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_getattr",
    "sched_setattr",
    "getpriority",
    "setpriority",
    "ioprio_get",
    "ioprio_set",
    // Memory.
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "remap_file_pages",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "memfd_create",
    // Signals.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "pause",
    "alarm",
    // Time (setting a clock needs CAP_SYS_TIME; adjtimex with modes 0 only reads).
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "times",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "adjtimex",
    "clock_adjtime",
    // Files and directories.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "lseek",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "ftruncate",
    "truncate",
    "fallocate",
    "fadvise64",
    "readahead",
    "sendfile",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "mkdir",
    "mkdirat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "fchownat",
    "lchown",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "mknod",
    "mknodat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "ioctl",
    "pipe",
    "pipe2",
    // Waiting for events.
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "futex",
    "futex_waitv",
    // Asynchronous I/O of the old interface (databases use it; every call is a plain syscall).
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    // Sockets (socket itself is below, by family).
    "socketpair",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "setsockopt",
    "getsockopt",
    // Identity (changing it needs capabilities the function does not have).
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capget",
    "capset",
    // Limits and machine information.
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "sysinfo",
    "uname",
    "getrandom",
    // System V and POSIX IPC, in the sandbox's own IPC namespace.
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    // A function may narrow its own filter further (it then cannot be snapshotted: DESIGN.md).
    "seccomp",
};

// Namespace flags clone must not carry. CLONE_NEWTIME is not here: for clone it is a bit of the
// exit signal (time namespaces come only from unshare and clone3, both refused).
constexpr uint64_t kNamespaceFlags =
    CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;

}  // namespace

Profile function_default() {
    Profile p;
    p.defaultAction = Action::Errno;
    p.defaultErrnoRet = EPERM;
    p.architectures = {"SCMP_ARCH_X86_64"};
    p.syscalls.push_back({kAllowed, Action::Allow, std::nullopt, {}});
    // clone without any namespace flag: threads and processes, never a namespace.
    p.syscalls.push_back(
        {{"clone"}, Action::Allow, std::nullopt, {{0, kNamespaceFlags, 0, Op::MaskedEqual}}});
    // clone3 keeps its flags in memory: ENOSYS, so that libc falls back to clone.
    p.syscalls.push_back({{"clone3"}, Action::Errno, ENOSYS, {}});
    // socket by family (the low 32 bits: the argument is an int).
    for (uint64_t family : {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK})
        p.syscalls.push_back(
            {{"socket"}, Action::Allow, std::nullopt, {{0, 0xffffffffULL, family, Op::MaskedEqual}}});
    // personality: the values Docker allows (Linux, UNAME26, ADDR_NO_RANDOMIZE, both, and the query).
    for (uint64_t persona : {0x0ULL, 0x0008ULL, 0x20000ULL, 0x20008ULL, 0xffffffffULL})
        p.syscalls.push_back({{"personality"}, Action::Allow, std::nullopt, {{0, persona, 0, Op::EqualTo}}});
    return p;
}

}  // namespace initless::seccomp
