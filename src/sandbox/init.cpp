#include "initless/sandbox/init.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <set>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/oci/spec.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/hex.h"
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

struct MountOptions {
    unsigned long flags = 0;  // applied at mount (or by the remount of a bind)
    unsigned long propagation = 0;
    bool bind = false, recursive = false;
    std::string data;
};

MountOptions parse_options(const oci::Mount& m) {
    static const std::pair<const char*, unsigned long> kSet[] = {
        {"ro", MS_RDONLY},         {"nosuid", MS_NOSUID},
        {"nodev", MS_NODEV},       {"noexec", MS_NOEXEC},
        {"sync", MS_SYNCHRONOUS},  {"dirsync", MS_DIRSYNC},
        {"noatime", MS_NOATIME},   {"nodiratime", MS_NODIRATIME},
        {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME},
        {"mand", MS_MANDLOCK}};
    static const std::pair<const char*, unsigned long> kClear[] = {
        {"rw", MS_RDONLY},           {"suid", MS_NOSUID},         {"dev", MS_NODEV},
        {"exec", MS_NOEXEC},         {"async", MS_SYNCHRONOUS},   {"atime", MS_NOATIME},
        {"diratime", MS_NODIRATIME}, {"norelatime", MS_RELATIME}, {"nomand", MS_MANDLOCK}};
    static const std::pair<const char*, unsigned long> kPropagation[] = {
        {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
        {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
        {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
        {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC}};
    MountOptions o;
    o.bind = m.is_bind();
    for (const auto& opt : m.options) {
        bool known = false;
        if (opt == "bind" || opt == "rbind") {
            o.recursive = o.recursive || opt == "rbind";
            continue;
        }
        for (auto [name, f] : kSet)
            if (opt == name) o.flags |= f, known = true;
        for (auto [name, f] : kClear)
            if (opt == name) o.flags &= ~f, known = true;
        for (auto [name, f] : kPropagation)
            if (opt == name) o.propagation |= f, known = true;
        if (!known) o.data += (o.data.empty() ? "" : ",") + opt;
    }
    return o;
}

// Flags a remount of a bind must keep: the kernel refuses, inside a user namespace, to clear what the
// mount it copies had (they are locked), so they are read back and kept.
unsigned long locked_flags(const fs::path& target) {
    struct statvfs st {};
    if (::statvfs(target.c_str(), &st) != 0) return 0;
    unsigned long f = 0;
    if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) f |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
    if (st.f_flag & ST_RDONLY) f |= MS_RDONLY;
    return f;
}

void remount_bind(const fs::path& target, unsigned long flags) {
    mount_fs(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | flags | locked_flags(target));
}

// Creates what a mount needs at `target`: a file for a file, a directory otherwise. A symlink at the
// target is refused: following it could put the mount outside the root.
void make_mount_point(const fs::path& target, bool file) {
    std::error_code ec;
    auto st = fs::symlink_status(target, ec);
    if (st.type() == fs::file_type::symlink)
        throw Error(fmt::format("mount point {} is a symlink", target.string()));
    if (st.type() != fs::file_type::not_found) return;
    fs::create_directories(target.parent_path());
    if (file)
        sys::write_file(target, "");
    else
        fs::create_directories(target);
}

// A cgroup mount as runc makes one on cgroup v1: a tmpfs holding each hierarchy this process is in,
// each showing the container's group as its root, and the unified (v2) hierarchy at unified/ when the
// host has one. The tmpfs gets the mount's flags last.
// In a cgroup namespace each hierarchy is mounted afresh (its root is then the container's group).
// Without one (Docker's default on cgroup v1) a fresh mount would show the host's whole hierarchy, so
// the container's own group is bound from the host's mount instead, as runc does; this also spares a
// fresh cgroup2 mount in the host's cgroup namespace, which takes 6-14 ms here (the kernel applies the
// root's flags again at every such mount), against ~20 us for a bind.
void mount_cgroups(const fs::path& target, const MountOptions& o, bool own_cgroup_ns) {
    make_mount_point(target, false);
    mount_fs("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755");
    unsigned long flags = o.flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY);
    std::string lines = sys::read_file("/proc/self/cgroup");
    size_t at = 0;
    while (at < lines.size()) {
        size_t end = lines.find('\n', at);
        if (end == std::string::npos) end = lines.size();
        std::string line = lines.substr(at, end - at);
        at = end + 1;
        size_t a = line.find(':'), b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        std::string controllers = line.substr(a + 1, b - a - 1);
        std::string group = line.substr(b + 1);
        std::string dir = controllers.empty()                  ? std::string("unified")
                          : controllers.rfind("name=", 0) == 0 ? controllers.substr(5)
                                                               : controllers;
        fs::create_directories(target / dir);
        // Init's mount namespace is still a copy of the host's: its hierarchies are where the host
        // mounted them.
        fs::path host_group = fs::path("/sys/fs/cgroup") / dir / fs::path(group).relative_path();
        std::error_code ec;
        if (!own_cgroup_ns && fs::is_directory(host_group, ec) &&
            ::mount(host_group.c_str(), (target / dir).c_str(), nullptr, MS_BIND, nullptr) == 0) {
            remount_bind(target / dir, flags);
        } else if (controllers.empty()) {
            if (::mount("cgroup2", (target / dir).c_str(), "cgroup2", flags, nullptr) != 0) {
                fs::remove(target / dir);  // no v2 hierarchy mountable here: leave it out
                continue;
            }
        } else {
            mount_fs("cgroup", target / dir, "cgroup", flags, controllers);
        }
        // cpu,cpuacct is also reached as cpu and cpuacct, as on the host.
        if (dir.find(',') != std::string::npos) {
            size_t from = 0;
            for (;;) {
                size_t comma = dir.find(',', from);
                std::string part =
                    dir.substr(from, comma == std::string::npos ? std::string::npos : comma - from);
                std::error_code ec;
                if (!fs::exists(target / part, ec)) fs::create_symlink(dir, target / part);
                if (comma == std::string::npos) break;
                from = comma + 1;
            }
        }
    }
    if (o.flags & MS_RDONLY)
        mount_fs(nullptr, target, nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

void apply_mount(const fs::path& root, const oci::Mount& m, bool own_cgroup_ns) {
    fs::path target = root / m.destination.relative_path();
    MountOptions o = parse_options(m);
    if (m.type == "cgroup") {
        mount_cgroups(target, o, own_cgroup_ns);
    } else if (o.bind) {
        std::error_code ec;
        bool file = !fs::is_directory(m.source, ec);
        make_mount_point(target, file);
        mount_fs(m.source.c_str(), target, nullptr, MS_BIND | (o.recursive ? MS_REC : 0));
        if (o.flags) remount_bind(target, o.flags);
    } else {
        make_mount_point(target, false);
        mount_fs(m.source.empty() ? m.type.c_str() : m.source.c_str(), target, m.type.c_str(), o.flags,
                 o.data);
    }
    if (o.propagation) mount_fs(nullptr, target, nullptr, o.propagation);
}

// A masked path shows nothing: /dev/null over a file, an empty read-only tmpfs over a directory.
void mask_path(const std::string& path) {
    std::error_code ec;
    auto st = fs::symlink_status(path, ec);
    if (ec || st.type() == fs::file_type::not_found) return;
    if (st.type() == fs::file_type::directory)
        mount_fs("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
    else
        mount_fs("/dev/null", path, nullptr, MS_BIND);
}

void make_readonly(const std::string& path) {
    std::error_code ec;
    if (fs::symlink_status(path, ec).type() == fs::file_type::not_found) return;
    mount_fs(path.c_str(), path, nullptr, MS_BIND | MS_REC);
    remount_bind(path, MS_RDONLY);
}

// Builds the sandbox root from the runtime spec and pivots into it. Runs as pid 1 of the new
// namespaces (root of its user namespace when there is one).
void build_root(const json& setup, const std::vector<sys::UniqueFd>& passed, const oci::RuntimeSpec& spec) {
    // What the controller opened for us, named through /proc/self/fd (see Sandbox::prepare).
    auto fd_path = [&](const json& index) {
        size_t i = index.get<size_t>();
        if (i >= passed.size()) throw Error("the controller passed fewer fds than the setup names");
        return fmt::format("/proc/self/fd/{}", passed[i].get());
    };
    const json& fds = setup.at("fds");
    // The instance dir is reached through its fd and "merged" is walked from there, so that every
    // later lookup under it crosses into the mounts made on it.
    fs::path merged = fd_path(fds.at("instance")) + "/merged";
    mount_fs(nullptr, "/", nullptr, MS_REC | MS_PRIVATE);
    // The cgroup namespace is made first, with init in its group, so that the group is its root (and
    // the root of the cgroup hierarchies a "cgroup" mount shows).
    if (spec.linux_settings.has_namespace("cgroup"))
        check(::unshare(CLONE_NEWCGROUP), "unshare cgroup namespace");
    if (fds.contains("upper")) {
        mount_fs("overlay", merged, "overlay", 0,
                 fmt::format("lowerdir={},upperdir={},workdir={}{}", fd_path(fds.at("root")),
                             fd_path(fds.at("upper")), fd_path(fds.at("work")),
                             // Inside a user namespace overlayfs may not use trusted.* xattrs (whiteouts,
                             // opaque dirs): user.* ones, which the layer's tmpfs keeps.
                             spec.linux_settings.has_namespace("user") ? ",userxattr" : ""));
    } else {
        mount_fs(fd_path(fds.at("root")).c_str(), merged, nullptr, MS_BIND | MS_REC);
    }
    for (size_t i = 0; i < spec.mounts.size(); ++i) {
        oci::Mount m = spec.mounts[i];
        if (fds.at("mounts").contains(std::to_string(i)))
            m.source = fd_path(fds.at("mounts").at(std::to_string(i)));
        apply_mount(merged, m, spec.linux_settings.has_namespace("cgroup"));
    }
    // Devices are the host's nodes bound in: inside a user namespace nothing may make one.
    for (const auto& d : spec.linux_settings.devices) {
        if (d.type != "c" && d.type != "b") continue;
        fs::path target = merged / d.path.relative_path();
        make_mount_point(target, true);
        mount_fs(d.path.c_str(), target, nullptr, MS_BIND);
    }
    std::error_code ec;
    // A devpts instance of the container's own: /dev/ptmx is its ptmx, as runc makes it.
    if (fs::exists(merged / "dev/pts/ptmx", ec) &&
        fs::symlink_status(merged / "dev/ptmx", ec).type() == fs::file_type::not_found)
        fs::create_symlink("pts/ptmx", merged / "dev/ptmx");
    for (auto [link, to] : {std::pair{"dev/fd", "/proc/self/fd"},
                            {"dev/stdin", "/proc/self/fd/0"},
                            {"dev/stdout", "/proc/self/fd/1"},
                            {"dev/stderr", "/proc/self/fd/2"}})
        if (fs::symlink_status(merged / link, ec).type() == fs::file_type::not_found)
            fs::create_symlink(to, merged / link);
    for (const auto& d : setup.at("rw_dirs"))
        fs::create_directories(merged / fs::path(d.get<std::string>()).relative_path());
    if (spec.root.readonly) remount_bind(merged, MS_RDONLY);

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
    check(::chdir(merged.c_str()), "chdir to new root");
    check(static_cast<int>(::syscall(SYS_pivot_root, ".", ".")), "pivot_root");
    check(::umount2(".", MNT_DETACH), "detach old root");
    check(::chdir("/"), "chdir /");

    // Sysctls before /proc/sys turns read-only.
    for (const auto& [key, value] : spec.linux_settings.sysctl) {
        std::string path = "/proc/sys/" + key;
        std::replace(path.begin() + 10, path.end(), '.', '/');
        sys::write_file(path, value);
    }
    for (const auto& p : spec.linux_settings.masked_paths) mask_path(p);
    for (const auto& p : spec.linux_settings.readonly_paths) make_readonly(p);
    if (!spec.hostname.empty())
        check(::sethostname(spec.hostname.c_str(), spec.hostname.size()), "sethostname");
    if (spec.linux_settings.has_namespace("network")) sys::set_loopback_up();
}

// In a child of init, before exec or restore: a clean signal state and our stdio.
void reset_child(int log_fd, std::initializer_list<int> keep_fds = {}) {
    sigset_t all;
    sigfillset(&all);
    for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
    ::sigprocmask(SIG_UNBLOCK, &all, nullptr);
    ::setsid();
    if (log_fd >= 0) {
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, 0);
        ::dup2(log_fd, 1);
        ::dup2(log_fd, 2);
    }
    // Nothing of init's (control socket, signalfd, log) may leak into the function.
    std::vector<int> keep_sorted(keep_fds);
    std::sort(keep_sorted.begin(), keep_sorted.end());
    int from = 3;
    for (int keep : keep_sorted) {
        if (keep < from) continue;
        if (keep > from)
            ::syscall(SYS_close_range, static_cast<unsigned>(from), static_cast<unsigned>(keep - 1), 0u);
        from = keep + 1;
    }
    ::syscall(SYS_close_range, static_cast<unsigned>(from), ~0u, 0u);
}

// The filter start() sent as hex (8 bytes per instruction), read before anything is dropped.
std::vector<sock_filter> parse_filter(const json& request) {
    std::vector<sock_filter> bpf;
    if (!request.contains("seccomp")) return bpf;
    std::vector<uint8_t> bytes = sys::unhex(request["seccomp"].at("bpf").get<std::string>());
    bpf.resize(bytes.size() / sizeof(sock_filter));
    std::memcpy(bpf.data(), bytes.data(), bpf.size() * sizeof(sock_filter));
    return bpf;
}

}  // namespace

[[noreturn]] void exec_process(const oci::Process& process, int log_fd, std::vector<sock_filter> filter,
                               unsigned filter_flags) {
    reset_child(log_fd);
    auto fail = [](const std::string& what) {
        std::string line =
            fmt::format("initless: cannot start function: {}: {}\n", what, std::strerror(errno));
        (void)!::write(2, line.data(), line.size());
        ::_exit(127);
    };
    for (const auto& r : process.rlimits) {
        rlimit lim{r.soft, r.hard};
        if (::setrlimit(oci::rlimit_resource(r.type), &lim) != 0) fail("setrlimit " + r.type);
    }
    if (process.oom_score_adj) {
        std::string v = std::to_string(*process.oom_score_adj);
        int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, v.data(), v.size()) < 0) fail("oom_score_adj");
        ::close(fd);
    }
    auto install_filter = [&] {
        sock_fprog prog{static_cast<unsigned short>(filter.size()), filter.data()};
        if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, filter_flags, &prog) != 0) fail("seccomp filter");
    };
    // Without no_new_privs the kernel lets only a CAP_SYS_ADMIN holder install a filter, so then it goes
    // in now, before the capabilities are dropped (as runc does; Docker's profile allows what follows).
    if (!filter.empty() && !process.no_new_privileges) install_filter();
    // Capabilities as the spec says (none for a function): the bounding set first, while we may still
    // drop from it; the ids keep the permitted set (KEEPCAPS) until capset sets the three sets.
    uint64_t bounding = oci::capability_mask(process.capabilities.bounding);
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(bounding & (1ULL << cap))) ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail("keepcaps");
    std::vector<gid_t> groups(process.user.additional_gids.begin(), process.user.additional_gids.end());
    if (::setgroups(groups.size(), groups.data()) != 0) fail("setgroups");
    if (::setresgid(process.user.gid, process.user.gid, process.user.gid) != 0) fail("setgid");
    if (::setresuid(process.user.uid, process.user.uid, process.user.uid) != 0) fail("setuid");
    ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    uint64_t eff = oci::capability_mask(process.capabilities.effective);
    uint64_t prm = oci::capability_mask(process.capabilities.permitted);
    uint64_t inh = oci::capability_mask(process.capabilities.inheritable);
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {
        {static_cast<uint32_t>(eff), static_cast<uint32_t>(prm), static_cast<uint32_t>(inh)},
        {static_cast<uint32_t>(eff >> 32), static_cast<uint32_t>(prm >> 32),
         static_cast<uint32_t>(inh >> 32)}};
    if (::syscall(SYS_capset, &header, data) != 0) fail("capset");
    for (const auto& name : process.capabilities.ambient)
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, oci::capability_number(name), 0, 0) != 0)
            fail("raise ambient " + name);
    if (process.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("no_new_privs");
    if (process.user.umask) ::umask(*process.user.umask);
    if (::chdir(process.cwd.c_str()) != 0) fail("chdir " + process.cwd);

    std::vector<std::string> argv_s = process.args;
    std::vector<std::string> env_s = process.env;
    std::vector<char*> argv, env;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_s) env.push_back(e.data());
    env.push_back(nullptr);
    environ = env.data();  // execvp searches the function's PATH, not ours
    // With no_new_privs the seccomp filter goes in last, right before exec: nothing of ours runs under
    // it but execve (and the failure report).
    if (!filter.empty() && process.no_new_privileges) install_filter();
    ::execvp(argv[0], argv.data());
    fail("exec " + argv_s[0]);
    ::_exit(127);
}

namespace {

struct Init {
    int control;
    int log_fd = -1;
    oci::RuntimeSpec spec;
    std::set<pid_t> watched;
    bool detached = false;  // see SandboxOptions::detached
    int listen_fd = -1;
    pid_t main_pid = 0;          // the process `start` made (detached: init's exit is its exit)
    std::map<pid_t, int> ended;  // watched processes reaped before anyone adopted them (detached)
    // An init-less container's stdout relay (detached, start with "relay"): the process writes into
    // relay_fd, init copies every byte to its own stdout (the shim's) and, when `phrase` first goes
    // by, writes one byte to notify_fd (the watcher's pipe, outside) and closes it.
    int relay_fd = -1;
    int notify_fd = -1;
    std::string phrase;
    std::string tail;  // the last phrase.size() - 1 bytes relayed, for a phrase split across reads

    // Copies what the relay holds now to init's stdout (poll said it is readable: one read).
    void relay_once() {
        char buf[65536];
        ssize_t n = ::read(relay_fd, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
        if (n <= 0) {  // every writer is gone
            ::close(relay_fd);
            relay_fd = -1;
            return;
        }
        write_stdout(buf, static_cast<size_t>(n));
        if (notify_fd < 0) return;
        tail.append(buf, static_cast<size_t>(n));
        if (tail.find(phrase) != std::string::npos) {
            char one = 1;
            (void)!::write(notify_fd, &one, 1);
            ::close(notify_fd);
            notify_fd = -1;
            tail.clear();
        } else if (tail.size() >= phrase.size()) {
            tail.erase(0, tail.size() - (phrase.size() - 1));
        }
    }
    // Blocking: the shim reads its pipes; a closed pipe drops the bytes (they have nowhere to go).
    static void write_stdout(const char* data, size_t len) {
        for (size_t off = 0; off < len;) {
            ssize_t w = ::write(1, data + off, len - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return;
            off += static_cast<size_t>(w);
        }
    }
    // What the relay holds when the container ends, once its writers are gone (a writer left running
    // could fill it faster than the shim takes it, and the drain would never end).
    void drain_relay() {
        if (relay_fd < 0) return;
        ::fcntl(relay_fd, F_SETFL, O_NONBLOCK);
        for (;;) {
            char buf[65536];
            ssize_t n = ::read(relay_fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            write_stdout(buf, static_cast<size_t>(n));
        }
    }

    // The exit status a shell would report: the code, or 128 + the signal.
    [[noreturn]] void exit_with(int status) {
        int code = WIFEXITED(status)     ? WEXITSTATUS(status)
                   : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                         : 255;
        ::kill(-1, SIGKILL);
        while (::waitpid(-1, nullptr, __WALL) > 0) {
        }
        drain_relay();
        ::_exit(code);
    }

    void reply(const json& message, std::span<const int> fds = {}) {
        sys::send_message(control, message.dump(), fds);
    }

    void start(const json& request, std::vector<sys::UniqueFd>& passed) {
        if (detached && main_pid) {
            reply({{"ok", false}, {"error", "the container's process was started already"}});
            return;
        }
        unsigned filter_flags = request.contains("seccomp") ? request["seccomp"].value("flags", 0u) : 0u;
        auto filter = parse_filter(request);
        int relay_write = -1;
        if (request.contains("relay")) {
            // stdout through us (see relay_fd); the watcher's pipe came with the request.
            if (!detached || passed.empty() || relay_fd >= 0) {
                reply({{"ok", false},
                       {"error", "a stdout relay needs a detached init and the watcher's pipe"}});
                return;
            }
            phrase = request["relay"].at("phrase").get<std::string>();
            if (phrase.empty()) {
                reply({{"ok", false}, {"error", "an empty phrase"}});
                return;
            }
            int p[2];
            check(::pipe2(p, O_CLOEXEC), "relay pipe");
            relay_fd = p[0];
            relay_write = p[1];
            notify_fd = passed[0].release();
        }
        auto child = sys::fork_process(0);
        if (child.pid == 0) {
            if (relay_write >= 0) ::dup2(relay_write, 1);  // dup2 clears close-on-exec on fd 1
            exec_process(spec.process, detached ? -1 : log_fd, std::move(filter), filter_flags);
        }
        if (relay_write >= 0) ::close(relay_write);
        watched.insert(child.pid);
        main_pid = child.pid;
        int fd = child.pidfd.get();
        reply({{"ok", true}, {"pid", child.pid}}, std::span<const int>(&fd, 1));
    }

    // The restorer gets the image's pages file as fd 3 (it cannot open host paths from in here) and,
    // for a lazy restore, /dev/userfaultfd as fd 4.
    void spawn_restorer(const json& request, int pages_fd, int uffd_device_fd) {
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
            int uffd_device = uffd_device_fd >= 0 ? ::fcntl(uffd_device_fd, F_DUPFD, 201) : -1;
            // A detached init's restorer keeps init's stdio (the shim's), as its started process would.
            reset_child(detached ? -1 : log_fd, {status_fd, pages, uffd_device});
            if (pages >= 0) {
                ::dup2(pages, 3);
                ::close(pages);
            }
            if (uffd_device >= 0) {
                ::dup2(uffd_device, 4);
                ::close(uffd_device);
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

    // Detached: a restored process becomes the container's process (its end is init's end).
    void adopt(const json& request) {
        pid_t pid = request.at("pid").get<pid_t>();
        if (!detached || main_pid) {
            reply({{"ok", false}, {"error", "the container's process was started already"}});
            return;
        }
        if (auto it = ended.find(pid); it != ended.end()) exit_with(it->second);  // it is gone already
        if (!watched.count(pid)) {
            reply({{"ok", false}, {"error", fmt::format("process {} is not a child of init", pid)}});
            return;
        }
        main_pid = pid;
        reply({{"ok", true}});
    }

    void reap() {
        for (;;) {
            int status = 0;
            pid_t p = ::waitpid(-1, &status, WNOHANG | __WALL);
            if (p <= 0) return;
            if (detached && p == main_pid) exit_with(status);
            if (detached && watched.count(p)) ended[p] = status;
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
        std::vector<sys::UniqueFd> passed;
        if (!sys::receive_message(control_fd, message, &passed)) init.shut_down();
        json setup = json::parse(message);
        size_t log_index = setup.at("fds").at("log").get<size_t>();
        if (log_index >= passed.size()) throw Error("the controller passed no log fd");
        // The other passed fds close when setup is done; the log stays (children dup it to stdout).
        init.log_fd = passed[log_index].release();
        init.spec = oci::parse(setup.at("spec"));
        if (setup.value("detached", false)) {
            size_t i = setup.at("fds").at("listen").get<size_t>();
            if (i >= passed.size()) throw Error("the controller passed no listening socket");
            init.detached = true;
            init.listen_fd = passed[i].release();
        }
        build_root(setup, passed, init.spec);
        init.reply({{"ok", true}});
    } catch (const std::exception& e) {
        try {
            init.reply({{"ok", false}, {"error", fmt::format("prepare sandbox: {}", e.what())}});
        } catch (...) {
        }
        ::_exit(1);
    }

    for (;;) {
        // A detached init between connections waits on its listening socket instead.
        pollfd fds[3] = {{init.control >= 0 ? init.control : init.listen_fd, POLLIN, 0},
                         {sfd, POLLIN, 0},
                         {init.relay_fd, POLLIN, 0}};
        if (::poll(fds, init.relay_fd >= 0 ? 3 : 2, -1) < 0) continue;
        if (init.relay_fd >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) init.relay_once();
        if (fds[1].revents & POLLIN) {
            signalfd_siginfo si{};
            while (::read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGCHLD) {
                    init.reap();
                } else if (init.detached && !init.main_pid) {
                    // A created container that was never started ends on the signal, as runc's would.
                    init.exit_with(static_cast<int>(si.ssi_signo));  // a wait status "killed by signo"
                } else {
                    ::kill(-1, SIGTERM);  // forwarded to every process of the sandbox
                }
            }
            init.reap();
        }
        if (init.control < 0 && (fds[0].revents & POLLIN)) {
            int conn = ::accept4(init.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (conn >= 0) init.control = conn;
            continue;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            bool open = false;
            std::vector<sys::UniqueFd> passed;
            try {
                open = sys::receive_message(init.control, message, &passed);
            } catch (const Error&) {
            }
            if (!open && init.detached) {
                ::close(init.control);
                init.control = -1;
                continue;
            }
            if (!open) init.shut_down();
            try {
                json request = json::parse(message);
                std::string op = request.at("op").get<std::string>();
                if (op == "start")
                    init.start(request, passed);
                else if (op == "adopt")
                    init.adopt(request);
                else if (op == "restorer")
                    init.spawn_restorer(request, passed.empty() ? -1 : passed[0].get(),
                                        passed.size() < 2 ? -1 : passed[1].get());
                else
                    init.reply({{"ok", false}, {"error", "unknown request " + op}});
            } catch (const std::exception& e) {
                init.reply({{"ok", false}, {"error", e.what()}});
            }
        }
    }
}

}  // namespace initless::sandbox
