#include "initless/sys/process.h"

#include <linux/capability.h>
#include <pthread.h>
#include <sys/signalfd.h>

#include <sys/resource.h>

#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::sys {

ForkResult fork_process(uint64_t flags, std::span<const pid_t> set_tid) {
    int pidfd = -1;
    struct clone_args args {};
    args.flags = flags | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    if (!set_tid.empty()) {
        args.set_tid = reinterpret_cast<uint64_t>(set_tid.data());
        args.set_tid_size = set_tid.size();
    }
    long r = ::syscall(SYS_clone3, &args, sizeof args);
    if (r < 0) throw SysError("clone3", errno);
    ForkResult out;
    out.pid = static_cast<pid_t>(r);
    if (r > 0) out.pidfd.reset(pidfd);
    return out;
}

void read_process_memory(pid_t pid, uint64_t addr, void* data, size_t len) {
    iovec local{data, len};
    iovec remote{reinterpret_cast<void*>(addr), len};
    ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n != static_cast<ssize_t>(len))
        throw SysError(fmt::format("read {} bytes at {:#x} in process {}", len, addr, pid),
                       n < 0 ? errno : EFAULT);
}

void write_process_memory(pid_t pid, uint64_t addr, const void* data, size_t len) {
    iovec local{const_cast<void*>(data), len};
    iovec remote{reinterpret_cast<void*>(addr), len};
    ssize_t n = ::process_vm_writev(pid, &local, 1, &remote, 1, 0);
    if (n != static_cast<ssize_t>(len))
        throw SysError(fmt::format("write {} bytes at {:#x} in process {}", len, addr, pid),
                       n < 0 ? errno : EFAULT);
}

bool same_open_file(pid_t pid, int fd1, int fd2) {
    return same_open_file(pid, fd1, pid, fd2);
}

bool same_open_file(pid_t pid1, int fd1, pid_t pid2, int fd2) {
    long r = ::syscall(SYS_kcmp, pid1, pid2, 0 /* KCMP_FILE */, fd1, fd2);
    if (r < 0)
        throw SysError(fmt::format("kcmp fd {} of process {} and fd {} of process {}", fd1, pid1, fd2, pid2),
                       errno);
    return r == 0;
}

bool same_address_space(pid_t pid1, pid_t pid2) {
    long r = ::syscall(SYS_kcmp, pid1, pid2, 1 /* KCMP_VM */, 0, 0);
    if (r < 0 && errno == ESRCH) return false;
    if (r < 0) throw SysError(fmt::format("kcmp address spaces of processes {} and {}", pid1, pid2), errno);
    return r == 0;
}

pid_t vfork_child_of(pid_t tid) {
    std::vector<pid_t> children;
    std::string wchan;
    try {
        std::istringstream in(read_file(fmt::format("/proc/{}/task/{}/children", tid, tid)));
        for (pid_t child; in >> child;) children.push_back(child);
        wchan = read_file(fmt::format("/proc/{}/wchan", tid));
        while (!wchan.empty() && std::isspace(static_cast<unsigned char>(wchan.back()))) wchan.pop_back();
    } catch (const Error&) {
        return 0;  // gone
    }
    for (pid_t child : children)
        if (same_address_space(tid, child)) return child;
    // kernel_clone since 5.10 (_do_fork, do_fork before): a thread sleeps there only in
    // wait_for_vfork_done, which is inlined into it.
    if (children.empty() || (wchan != "kernel_clone" && wchan != "_do_fork" && wchan != "do_fork")) return 0;
    pid_t newest = 0;
    uint64_t newest_start = 0;
    for (pid_t child : children) {
        uint64_t start = 0;
        try {
            start = proc_start_time(child);
        } catch (const Error&) {
            continue;
        }
        if (!newest || start > newest_start || (start == newest_start && child > newest)) {
            newest = child;
            newest_start = start;
        }
    }
    return newest;
}

bool same_table(pid_t pid1, pid_t pid2, SharedTable which) {
    long r = ::syscall(SYS_kcmp, pid1, pid2, static_cast<int>(which), 0, 0);
    if (r < 0 && errno == ESRCH) return false;
    if (r < 0)
        throw SysError(fmt::format("kcmp ({}) of processes {} and {}", static_cast<int>(which), pid1, pid2),
                       errno);
    return r == 0;
}

bool is_epoll_target(pid_t pid, int epfd, int tfd, int nth, int fd) {
    struct {
        uint32_t efd, tfd, toff;
    } slot{static_cast<uint32_t>(epfd), static_cast<uint32_t>(tfd), static_cast<uint32_t>(nth)};
    long r = ::syscall(SYS_kcmp, pid, pid, 7 /* KCMP_EPOLL_TFD */, fd, &slot);
    if (r < 0 && (errno == EBADF || errno == ENOENT)) return false;  // no such fd or registration
    if (r < 0) throw SysError(fmt::format("kcmp epoll {} target {} of process {}", epfd, tfd, pid), errno);
    return r == 0;
}

UniqueFd pidfd_open(pid_t pid) {
    long fd = ::syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) throw SysError(fmt::format("pidfd_open {}", pid), errno);
    return UniqueFd(static_cast<int>(fd));
}

UniqueFd pidfd_getfd(int pidfd, int target_fd) {
    long fd = ::syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
    if (fd < 0) throw SysError(fmt::format("pidfd_getfd fd {}", target_fd), errno);
    return UniqueFd(static_cast<int>(fd));
}

UniqueFd signal_fd(std::initializer_list<int> signals) {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : signals) sigaddset(&set, sig);
    int rc = ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    if (rc != 0) throw SysError("pthread_sigmask", rc);
    UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd) throw SysError("signalfd", errno);
    return fd;
}

bool pidfd_send_signal(int pidfd, int sig) {
    if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0) return true;
    if (errno == ESRCH) return false;
    throw SysError(fmt::format("pidfd_send_signal {}", sig), errno);
}

pid_t pid_of_pidfd(int pidfd) {
    std::istringstream in(read_file(fmt::format("/proc/self/fdinfo/{}", pidfd)));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("Pid:", 0) == 0) return static_cast<pid_t>(std::stol(line.substr(4)));
    throw Error("pidfd fdinfo has no Pid line");
}

std::vector<std::string> proc_stat_fields(pid_t pid) {
    std::string stat = read_file(fmt::format("/proc/{}/stat", pid));
    auto close = stat.rfind(')');
    if (close == std::string::npos) throw Error(fmt::format("/proc/{}/stat: malformed", pid));
    std::vector<std::string> fields(3);  // 0..2 unused so that indexes match proc(5)
    std::istringstream in(stat.substr(close + 2));
    std::string f;
    while (in >> f) fields.push_back(f);
    return fields;
}

uint64_t proc_start_time(pid_t pid) {
    return std::stoull(proc_stat_fields(pid).at(22));
}

bool set_this_thread_background(bool idle_io) {
    // <linux/ioprio.h>: IOPRIO_WHO_PROCESS = 1 (who 0: the calling thread); classes BE = 2 (levels 0-7,
    // 7 the lowest) and IDLE = 3, shifted by 13.
    constexpr int kWhoProcess = 1, kClassBestEffort = 2, kClassIdle = 3, kClassShift = 13, kLowest = 7;
    int prio = idle_io ? kClassIdle << kClassShift : (kClassBestEffort << kClassShift) | kLowest;
    bool io = ::syscall(SYS_ioprio_set, kWhoProcess, 0, prio) == 0;
    // setpriority(PRIO_PROCESS, tid) sets one thread's nice value on Linux.
    bool cpu = ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10) == 0;
    return io && cpu;
}

bool process_alive(pid_t pid) {
    return ::kill(pid, 0) == 0 || errno == EPERM;
}

std::vector<pid_t> proc_tasks(pid_t pid) {
    std::vector<pid_t> out;
    for (const auto& name : list_directory(fmt::format("/proc/{}/task", pid)))
        out.push_back(static_cast<pid_t>(std::stol(name)));
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<pid_t> proc_children(pid_t pid) {
    std::vector<pid_t> out;
    for (pid_t tid : proc_tasks(pid)) {
        std::string children;
        try {
            children = read_file(fmt::format("/proc/{}/task/{}/children", pid, tid));
        } catch (const Error&) {
            continue;  // a thread that ended since the listing: it has no children any more
        }
        std::istringstream in(children);
        pid_t child;
        while (in >> child) out.push_back(child);
    }
    std::sort(out.begin(), out.end());
    return out;
}

uint64_t raise_fd_limit() {
    rlimit r{};
    check(::getrlimit(RLIMIT_NOFILE, &r), "getrlimit NOFILE");
    if (r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        check(::setrlimit(RLIMIT_NOFILE, &r), "setrlimit NOFILE");
    }
    return r.rlim_cur;
}

bool send_signal(pid_t pid, int sig) {
    if (::kill(pid, sig) == 0) return true;
    if (errno == ESRCH) return false;
    throw SysError(fmt::format("signal {} to process {}", sig, pid), errno);
}

}  // namespace initless::sys

namespace initless::sys {

namespace {

void raise_effective_to_permitted() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capget, &header, data) != 0) throw SysError("capget", errno);
    data[0].effective = data[0].permitted;
    data[1].effective = data[1].permitted;
    if (::syscall(SYS_capset, &header, data) != 0) throw SysError("capset", errno);
}

}  // namespace

FsIdentity::FsIdentity(uid_t uid, gid_t gid) {
    if (uid == 0 && gid == 0) return;
    // The raw syscalls: glibc's would be the same, but these are per thread by design here.
    ::syscall(SYS_setfsgid, gid);
    ::syscall(SYS_setfsuid, uid);
    // setfsuid answers the previous value, never an error: ask again to know it took.
    bool took = static_cast<uid_t>(::syscall(SYS_setfsuid, -1)) == uid &&
                static_cast<gid_t>(::syscall(SYS_setfsgid, -1)) == gid;
    active_ = true;
    try {
        if (!took) throw Error(fmt::format("setfsuid/setfsgid to {}:{} did not take effect", uid, gid));
        raise_effective_to_permitted();
    } catch (...) {
        ::syscall(SYS_setfsuid, 0);
        ::syscall(SYS_setfsgid, 0);
        active_ = false;
        throw;
    }
}

FsIdentity::~FsIdentity() {
    if (!active_) return;
    active_ = false;
    ::syscall(SYS_setfsuid, 0);  // back to 0: the kernel makes the file capabilities effective again
    ::syscall(SYS_setfsgid, 0);
}

}  // namespace initless::sys
