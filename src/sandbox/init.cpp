#include "initless/sandbox/init.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"

extern char** environ;

namespace initless::sandbox {

namespace fs = std::filesystem;
using json = nlohmann::json;
using sys::check;

namespace {

void mount_fs(const char* source, const fs::path& target, const char* type, unsigned long flags,
              const std::string& data = {}) {
    if (::mount(source, target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) != 0)
        throw sys::SysError(
            fmt::format("mount {} on {} ({})", source ? source : "-", target.string(), type ? type : "bind"),
            errno);
}

void make_device(const fs::path& path, unsigned major, unsigned minor) {
    check(::mknod(path.c_str(), S_IFCHR | 0666, makedev(major, minor)), "mknod " + path.string());
    check(::chmod(path.c_str(), 0666), "chmod " + path.string());
}

// Builds the sandbox root and pivots into it. Runs as pid 1 of the new namespaces.
void build_root(const json& setup) {
    fs::path merged = setup.at("merged").get<std::string>();
    mount_fs(nullptr, "/", nullptr, MS_REC | MS_PRIVATE);
    mount_fs("overlay", merged, "overlay", 0,
             fmt::format("lowerdir={},upperdir={},workdir={}", setup.at("rootfs").get<std::string>(),
                         setup.at("upper").get<std::string>(), setup.at("work").get<std::string>()));
    for (const char* d : {"proc", "dev", "tmp", "function", "sys"}) fs::create_directories(merged / d);
    mount_fs("proc", merged / "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_fs("sysfs", merged / "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_fs("tmpfs", merged / "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k");
    make_device(merged / "dev/null", 1, 3);
    make_device(merged / "dev/zero", 1, 5);
    make_device(merged / "dev/full", 1, 7);
    make_device(merged / "dev/random", 1, 8);
    make_device(merged / "dev/urandom", 1, 9);
    make_device(merged / "dev/tty", 5, 0);
    fs::create_symlink("/proc/self/fd", merged / "dev/fd");
    fs::create_symlink("/proc/self/fd/0", merged / "dev/stdin");
    fs::create_symlink("/proc/self/fd/1", merged / "dev/stdout");
    fs::create_symlink("/proc/self/fd/2", merged / "dev/stderr");
    fs::create_directories(merged / "dev/shm");
    mount_fs("tmpfs", merged / "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_fs("tmpfs", merged / "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    fs::path function_dir = setup.at("function_dir").get<std::string>();
    mount_fs(function_dir.c_str(), merged / "function", nullptr, MS_BIND | MS_REC);
    mount_fs(nullptr, merged / "function", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV);
    for (const auto& d : setup.at("rw_dirs"))
        fs::create_directories(merged / fs::path(d.get<std::string>()).relative_path());

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
    check(::chdir(merged.c_str()), "chdir to new root");
    check(static_cast<int>(::syscall(SYS_pivot_root, ".", ".")), "pivot_root");
    check(::umount2(".", MNT_DETACH), "detach old root");
    check(::chdir("/"), "chdir /");

    std::string hostname = setup.at("hostname").get<std::string>();
    check(::sethostname(hostname.c_str(), hostname.size()), "sethostname");
    sys::set_loopback_up();
}

// In a child of init, before exec or restore: a clean signal state and our stdio.
void reset_child(int log_fd, int keep_fd = -1, int keep_fd2 = -1) {
    sigset_t all;
    sigfillset(&all);
    for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
    ::sigprocmask(SIG_UNBLOCK, &all, nullptr);
    ::setsid();
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // Nothing of init's (control socket, signalfd, log) may leak into the function.
    int keep_lo = std::min(keep_fd, keep_fd2), keep_hi = std::max(keep_fd, keep_fd2);
    int from = 3;
    for (int keep : {keep_lo, keep_hi}) {
        if (keep < from) continue;
        if (keep > from) ::syscall(SYS_close_range, static_cast<unsigned>(from), static_cast<unsigned>(keep - 1), 0u);
        from = keep + 1;
    }
    ::syscall(SYS_close_range, static_cast<unsigned>(from), ~0u, 0u);
}

// The filter start() sent as hex (8 bytes per instruction), read before anything is dropped.
std::vector<sock_filter> parse_filter(const json& request) {
    std::vector<sock_filter> bpf;
    if (!request.contains("seccomp")) return bpf;
    const std::string hex = request["seccomp"].at("bpf").get<std::string>();
    std::vector<uint8_t> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
    bpf.resize(bytes.size() / sizeof(sock_filter));
    std::memcpy(bpf.data(), bytes.data(), bpf.size() * sizeof(sock_filter));
    return bpf;
}

[[noreturn]] void exec_function(const json& request, int log_fd) {
    reset_child(log_fd);
    auto fail = [](const std::string& what) {
        std::string line =
            fmt::format("initless: cannot start function: {}: {}\n", what, std::strerror(errno));
        (void)!::write(2, line.data(), line.size());
        ::_exit(127);
    };
    std::vector<sock_filter> filter = parse_filter(request);
    unsigned filter_flags = request.contains("seccomp") ? request["seccomp"].value("flags", 0u) : 0u;
    std::string cwd = request.at("cwd").get<std::string>();
    if (::chdir(cwd.c_str()) != 0) fail("chdir " + cwd);
    // Drop every capability for good: bounding set, ambient, then effective/permitted/inheritable.
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("no_new_privs");
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capset, &header, data) != 0) fail("capset");

    std::vector<std::string> argv_s = request.at("argv").get<std::vector<std::string>>();
    std::vector<std::string> env_s = request.at("env").get<std::vector<std::string>>();
    std::vector<char*> argv, env;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_s) env.push_back(e.data());
    env.push_back(nullptr);
    environ = env.data();  // execvp searches the function's PATH, not ours
    // The seccomp filter last, right before exec: it needs no_new_privs (set above), and nothing of
    // ours runs under it but execve (and the failure report).
    if (!filter.empty()) {
        sock_fprog prog{static_cast<unsigned short>(filter.size()), filter.data()};
        if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, filter_flags, &prog) != 0) fail("seccomp filter");
    }
    ::execvp(argv[0], argv.data());
    fail("exec " + argv_s[0]);
    ::_exit(127);
}

struct Init {
    int control;
    int log_fd = -1;
    std::set<pid_t> watched;

    void reply(const json& message, std::span<const int> fds = {}) {
        sys::send_message(control, message.dump(), fds);
    }

    void start(const json& request) {
        auto child = sys::fork_process(0);
        if (child.pid == 0) exec_function(request, log_fd);
        watched.insert(child.pid);
        int fd = child.pidfd.get();
        reply({{"ok", true}, {"pid", child.pid}}, std::span<const int>(&fd, 1));
    }

    // The restorer gets the image's pages file as fd 3 (it cannot open host paths from in here).
    void spawn_restorer(const json& request, int pages_fd) {
        pid_t want = request.at("pid").get<pid_t>();
        uint64_t addr = request.at("stub_addr").get<uint64_t>();
        uint64_t size = request.at("stub_size").get<uint64_t>();
        uint64_t reserve = request.value("reserve_bytes", uint64_t{0});
        if (request.contains("clock_offsets")) {
            // A new time namespace for the children made from now on (the restorer): its clocks are
            // shifted so that the restored process sees them continue from its checkpoint.
            auto offset = [](const char* clock, int64_t ns) {
                int64_t sec = ns >= 0 ? ns / 1000000000 : -((-ns + 999999999) / 1000000000);
                return fmt::format("{} {} {}\n", clock, sec, ns - sec * 1000000000);
            };
            std::string offsets = offset("monotonic", request["clock_offsets"][0].get<int64_t>()) +
                                  offset("boottime", request["clock_offsets"][1].get<int64_t>());
            std::string error;
            if (::unshare(CLONE_NEWTIME) != 0) {
                error = fmt::format("unshare(CLONE_NEWTIME): {}", std::strerror(errno));
            } else {
                int fd = ::open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
                if (fd < 0 ||
                    ::write(fd, offsets.data(), offsets.size()) != static_cast<ssize_t>(offsets.size()))
                    error = fmt::format("writing timens_offsets '{}': {}", offsets, std::strerror(errno));
                if (fd >= 0) ::close(fd);
            }
            if (!error.empty()) {
                reply({{"ok", false}, {"error", "restorer time namespace: " + error}, {"errno", 0}});
                return;
            }
        }
        int status_pipe[2];
        check(::pipe2(status_pipe, O_CLOEXEC), "pipe");
        pid_t tids[1] = {want};
        auto child = sys::fork_process(0, tids);
        if (child.pid == 0) {
            // Everything is in place before the status byte: the controller seizes us right after it.
            int status_fd = ::fcntl(status_pipe[1], F_DUPFD, 200);
            int pages = ::fcntl(pages_fd, F_DUPFD, 201);
            reset_child(log_fd, status_fd, pages);
            if (pages >= 0) {
                ::dup2(pages, 3);
                ::close(pages);
            }
            void* p = ::mmap(reinterpret_cast<void*>(addr), size, PROT_READ | PROT_WRITE | PROT_EXEC,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            int err = p == MAP_FAILED ? errno : 0;
            // Memory touched now, off the request path, and freed by the restore's first munmap: the
            // pages the restore then needs come back already backed by the host.
            if (!err && reserve)
                ::mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                       -1, 0);
            (void)!::write(status_fd, &err, sizeof err);
            ::close(status_fd);
            if (err) ::_exit(3);
            for (;;) ::pause();
        }
        ::close(status_pipe[1]);
        int err = -1;
        ssize_t n = sys::retry_eintr([&] { return ::read(status_pipe[0], &err, sizeof err); });
        ::close(status_pipe[0]);
        if (n != sizeof err || err != 0) {
            ::kill(child.pid, SIGKILL);
            ::waitpid(child.pid, nullptr, 0);
            reply({{"ok", false},
                   {"error", fmt::format("restorer stub mapping at {:#x}: {}", addr,
                                         n == sizeof err ? std::strerror(err) : "child died")},
                   {"errno", n == sizeof err ? err : 0}});
            return;
        }
        watched.insert(child.pid);
        int fd = child.pidfd.get();
        reply({{"ok", true}, {"pid", child.pid}}, std::span<const int>(&fd, 1));
    }

    void reap() {
        for (;;) {
            int status = 0;
            pid_t p = ::waitpid(-1, &status, WNOHANG | __WALL);
            if (p <= 0) return;
            if (watched.erase(p)) {
                try {
                    sys::send_message(control,
                                      json{{"event", "exit"}, {"pid", p}, {"status", status}}.dump());
                } catch (const Error&) {
                }
            }
        }
    }

    [[noreturn]] void shut_down() {
        ::kill(-1, SIGKILL);
        while (::waitpid(-1, nullptr, __WALL) > 0) {
        }
        ::_exit(0);
    }
};

}  // namespace

void run_init(int control_fd) {
    // Whatever the controller had open without close-on-exec (a daemon's client sockets, say) ends
    // here: init and everything it starts hold only the control socket and what init opens itself.
    if (control_fd > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(control_fd - 1), 0u);
    ::syscall(SYS_close_range, static_cast<unsigned>(control_fd + 1), ~0u, 0u);
    Init init{control_fd};
    sigset_t handled;
    sigemptyset(&handled);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&handled, s);
    ::sigprocmask(SIG_BLOCK, &handled, nullptr);
    int sfd = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    ::prctl(PR_SET_NAME, "initless-init", 0, 0, 0);

    std::string message;
    try {
        if (!sys::receive_message(control_fd, message)) init.shut_down();
        json setup = json::parse(message);
        init.log_fd =
            sys::open_file(setup.at("log").get<std::string>(), O_WRONLY | O_APPEND | O_CREAT, 0644).release();
        build_root(setup);
        init.reply({{"ok", true}});
    } catch (const std::exception& e) {
        try {
            init.reply({{"ok", false}, {"error", fmt::format("prepare sandbox: {}", e.what())}});
        } catch (...) {
        }
        ::_exit(1);
    }

    for (;;) {
        pollfd fds[2] = {{control_fd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents & POLLIN) {
            signalfd_siginfo si{};
            while (::read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGCHLD) {
                    init.reap();
                } else {
                    ::kill(-1, SIGTERM);  // forwarded to every process of the sandbox
                }
            }
            init.reap();
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            bool open = false;
            std::vector<sys::UniqueFd> passed;
            try {
                open = sys::receive_message(control_fd, message, &passed);
            } catch (const Error&) {
            }
            if (!open) init.shut_down();
            try {
                json request = json::parse(message);
                std::string op = request.at("op").get<std::string>();
                if (op == "start")
                    init.start(request);
                else if (op == "restorer")
                    init.spawn_restorer(request, passed.empty() ? -1 : passed[0].get());
                else
                    init.reply({{"ok", false}, {"error", "unknown request " + op}});
            } catch (const std::exception& e) {
                init.reply({{"ok", false}, {"error", e.what()}});
            }
        }
    }
}

}  // namespace initless::sandbox
