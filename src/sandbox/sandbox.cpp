#include "initless/sandbox/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "initless/sandbox/function_config.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/hex.h"
#include "initless/sys/mount.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "initless/sys/tracee.h"

namespace initless::sandbox {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kControlTimeout = std::chrono::seconds(20);

std::string new_instance_id(const std::string& name) {
    std::random_device rd;
    uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    return fmt::format("{}-{:012x}", name, r & 0xffffffffffffULL);
}

json owner_record(pid_t pid) {
    return {{"pid", pid}, {"start", sys::proc_start_time(pid)}};
}

bool owner_alive(const json& record) {
    pid_t pid = record.at("pid").get<pid_t>();
    if (!sys::process_alive(pid)) return false;
    try {
        return sys::proc_start_time(pid) == record.at("start").get<uint64_t>();
    } catch (const Error&) {
        return false;
    }
}

}  // namespace

std::string init_binary_path() {
    const char* env = ::getenv("INITLESS_INIT_BINARY");
    return env && *env ? std::string(env) : std::string("/proc/self/exe");
}

fs::path state_dir() {
    const char* env = ::getenv("INITLESS_STATE_DIR");
    return env && *env ? fs::path(env) : fs::path("/run/initless");
}

std::string ExitReport::describe() const {
    if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return fmt::format("ended with wait status {:#x}", status);
}

Sandbox Sandbox::prepare(const spec::FunctionSpec& spec, const SandboxOptions& options) {
    return prepare(function_runtime_spec(spec), spec, options);
}

namespace {

// The user namespace's root on the host, if the spec makes one with a mapping for root.
std::optional<std::pair<uid_t, gid_t>> mapped_root(const oci::RuntimeSpec& rs) {
    if (!rs.linux_settings.has_namespace("user")) return std::nullopt;
    auto uid = oci::to_host(rs.linux_settings.uid_mappings, 0);
    auto gid = oci::to_host(rs.linux_settings.gid_mappings, 0);
    if (!uid || !gid) return std::nullopt;
    return std::pair<uid_t, gid_t>{*uid, *gid};
}

// Namespaces given by path that init joins: the caller's thread enters them around the fork (init
// inherits them), then returns to its own. Network, IPC and UTS only: a pid namespace joined would
// leave init no pid 1, a mount or user namespace cannot be entered by a process with threads.
int setns_type(const std::string& type) {
    if (type == "network") return CLONE_NEWNET;
    if (type == "ipc") return CLONE_NEWIPC;
    if (type == "uts") return CLONE_NEWUTS;
    throw Error(fmt::format(
        "joining an existing {} namespace by path is not supported (network, ipc and uts are)", type));
}

class JoinedNamespaces {
  public:
    explicit JoinedNamespaces(const oci::RuntimeSpec& rs) {
        for (const auto& ns : rs.linux_settings.namespaces) {
            if (ns.path.empty()) continue;
            int type = setns_type(ns.type);
            const char* self = type == CLONE_NEWNET ? "net" : type == CLONE_NEWIPC ? "ipc" : "uts";
            sys::UniqueFd target = sys::open_file(ns.path, O_RDONLY | O_CLOEXEC);
            sys::UniqueFd ours =
                sys::open_file(fmt::format("/proc/thread-self/ns/{}", self), O_RDONLY | O_CLOEXEC);
            if (::setns(target.get(), type) != 0)
                throw sys::SysError(fmt::format("join {} namespace {}", ns.type, ns.path), errno);
            saved_.emplace_back(type, std::move(ours));
        }
    }
    ~JoinedNamespaces() {
        for (auto& [type, fd] : saved_) ::setns(fd.get(), type);
    }
    JoinedNamespaces(const JoinedNamespaces&) = delete;
    JoinedNamespaces& operator=(const JoinedNamespaces&) = delete;

  private:
    std::vector<std::pair<int, sys::UniqueFd>> saved_;
};

uint64_t clone_flags(const oci::RuntimeSpec& rs) {
    uint64_t flags = 0;
    for (const auto& ns : rs.linux_settings.namespaces) {
        if (!ns.path.empty()) {
            setns_type(ns.type);  // refuses the kinds that cannot be joined
            continue;
        }
        if (ns.type == "pid") flags |= CLONE_NEWPID;
        if (ns.type == "network") flags |= CLONE_NEWNET;
        if (ns.type == "ipc") flags |= CLONE_NEWIPC;
        if (ns.type == "uts") flags |= CLONE_NEWUTS;
        if (ns.type == "mount") flags |= CLONE_NEWNS;
        if (ns.type == "user") flags |= CLONE_NEWUSER;
        // cgroup: init unshares it once it is in its cgroup, so that the namespace's root is that group.
        // time: the restorer makes its own.
    }
    if (!(flags & CLONE_NEWNS)) throw Error("a sandbox needs its own mount namespace");
    if (!(flags & CLONE_NEWPID)) throw Error("a sandbox needs its own pid namespace (its init is pid 1)");
    return flags;
}

std::string id_map(const std::vector<oci::IdMapping>& ms) {
    std::string out;
    for (const auto& m : ms) out += fmt::format("{} {} {}\n", m.container_id, m.host_id, m.size);
    return out;
}

}  // namespace

Sandbox Sandbox::prepare(const oci::RuntimeSpec& runtime, const spec::FunctionSpec& spec,
                         const SandboxOptions& options) {
    Sandbox sb;
    sb.spec_ = spec;
    sb.runtime_ = runtime;
    sb.seccomp_filter_ = options.seccomp_filter ? *options.seccomp_filter : seccomp::filter_for(spec);
    sb.id_ = options.id.empty() ? new_instance_id(spec.name) : options.id;
    sb.dir_ = options.instance_dir ? *options.instance_dir : state_dir() / "instances" / sb.id_;
    sb.detached_ = options.detached;
    auto part_done = [&](const char* part) {
        if (options.on_part) options.on_part(part);
    };
    try {
        fs::create_directories(sb.dir_);
        sys::write_file(sb.dir_ / "owner", owner_record(::getpid()).dump());
        fs::create_directory(sb.dir_ / "merged");
        auto root_ids = mapped_root(runtime);
        std::string layer_mb = runtime.annotation("io.initless.writable-layer-mb");
        if (!layer_mb.empty()) {
            // The writable layer is a tmpfs of its own, so its size is bounded; it is mounted here, in
            // the host's namespace, so that a checkpoint can read it, and unmounted by teardown or gc.
            fs::create_directory(sb.layer_dir());
            sys::mount_tmpfs(sb.layer_dir(), fmt::format("size={}m,mode=0755", layer_mb));
            fs::create_directory(sb.upper_dir());
            fs::create_directory(sb.layer_dir() / "work");
            if (root_ids) {
                // The root of the merged tree and the directories a function writes to are owned by
                // its root, so that it can write there as it could on its own machine; everything
                // the lower layer holds stays owned by ids it has no mapping for.
                sys::change_owner(sb.upper_dir(), root_ids->first, root_ids->second);
                sys::change_owner(sb.layer_dir() / "work", root_ids->first, root_ids->second);
                for (const char* d : {"root", "tmp", "run", "home", "var", "var/tmp", "var/cache", "var/log",
                                      "var/lib", "etc"}) {
                    std::error_code ec;
                    fs::path lower = runtime.root.path / d;
                    bool in_lower = fs::is_directory(lower, ec);
                    if (fs::is_symlink(lower, ec) || (!in_lower && std::string_view(d) != "root")) continue;
                    fs::create_directories(sb.upper_dir() / d);
                    fs::permissions(sb.upper_dir() / d,
                                    in_lower ? fs::status(lower).permissions() : fs::perms(0700));
                    sys::change_owner(sb.upper_dir() / d, root_ids->first, root_ids->second);
                }
            }
            if (options.seed_upper)
                options.seed_upper(sb.upper_dir());
            else if (options.upper_seed)
                sys::copy_tree(*options.upper_seed, sb.upper_dir());
            if (runtime.annotation("io.initless.network") == "egress" &&
                fs::is_directory(sb.upper_dir() / "etc")) {
                // slirp4netns answers DNS at 10.0.2.3 (the host's resolver behind it).
                sys::write_file(sb.upper_dir() / "etc/resolv.conf", "nameserver 10.0.2.3\n");
            }
        } else if (options.upper_seed || options.seed_upper) {
            throw Error("a writable-layer seed needs a writable layer (io.initless.writable-layer-mb)");
        }
        // With a writable layer, the log (the function's stdout and stderr) lives on the layer's tmpfs,
        // named through a relative link: what a function prints is then bounded by the layer's size and
        // charged to its memory limit, like the files it writes. In the instance dir it could fill
        // the host's /run (or disk) at the speed the function prints.
        fs::path log_file = layer_mb.empty() ? sb.log_path() : sb.layer_dir() / "log";
        sys::write_file(log_file, "");
        if (root_ids) sys::change_owner(log_file, root_ids->first, root_ids->second);
        if (!layer_mb.empty()) fs::create_symlink("layer/log", sb.log_path());

        part_done("dirs");
        const auto& res = runtime.linux_settings.resources;
        sb.cgroup_ = options.cgroup_path ? sys::Cgroup::create_path(*options.cgroup_path)
                                         : sys::Cgroup::create(sb.id_);
        if (res.memory_limit && *res.memory_limit > 0) sb.cgroup_.set_memory_limit(*res.memory_limit);
        if (res.cpu_quota && *res.cpu_quota > 0)
            sb.cgroup_.set_cpu_limit(static_cast<double>(*res.cpu_quota) /
                                     static_cast<double>(res.cpu_period.value_or(100000)));
        sb.cgroup_.set_pids_limit(
            res.pids_limit && *res.pids_limit > 0 ? static_cast<uint64_t>(*res.pids_limit) : 4194304);
        if (!res.devices.empty()) {
            // The devices the sandbox's processes may open or mknod: what stops a process that kept
            // CAP_MKNOD (an OCI container's default set) from making and opening a host disk's node.
            std::vector<std::pair<bool, std::string>> rules;
            for (const auto& d : res.devices) {
                auto number = [](const std::optional<int64_t>& n) {
                    return n ? std::to_string(*n) : std::string("*");
                };
                rules.emplace_back(d.allow, d.type == "a"
                                                ? std::string("a")
                                                : fmt::format("{} {}:{} {}", d.type, number(d.major),
                                                              number(d.minor), d.access));
            }
            sb.cgroup_.set_device_rules(rules);
        }

        part_done("cgroup");
        uint64_t flags = clone_flags(runtime);
        auto [ours, theirs] = sys::seqpacket_pair();
        // Init may exec only once its user namespace has its id maps: an exec before that would run as
        // an unmapped id and lose every capability.
        auto [go_read, go_write] = sys::make_pipe();
        std::string control_arg = std::to_string(theirs.get());
        const char* argv[] = {"initless", "__init", "--control", control_arg.c_str(), nullptr};
        std::string init_binary = init_binary_path();
        std::optional<JoinedNamespaces> joined(std::in_place, runtime);
        auto child = sys::fork_process(flags);
        if (child.pid == 0) {
            ::fcntl(theirs.get(), F_SETFD, 0);
            char go = 0;
            go_write.reset();
            if (::read(go_read.get(), &go, 1) != 1) ::_exit(125);
            if (flags & CLONE_NEWUSER) {
                // Still the host's root by id, which the namespace does not map: become its root.
                // Raw syscalls, not glibc's setgroups/setres[ug]id: those apply the change to every
                // thread glibc believes the process has, a list copied from the multi-threaded
                // daemon, under a lock another thread may have held at the fork; the child then
                // waited on a futex forever, holding a copy of every sandbox's control socket (so
                // no init ever saw its daemon die).
                if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, 0, 0, 0) != 0 ||
                    ::syscall(SYS_setresuid, 0, 0, 0) != 0)
                    ::_exit(124);
            }
            ::execv(init_binary.c_str(), const_cast<char**>(argv));
            ::_exit(126);
        }
        joined.reset();
        go_read.reset();
        sb.init_pid_ = child.pid;
        sb.init_pidfd_ = std::move(child.pidfd);
        theirs.reset();
        sb.control_ = std::move(ours);
        sys::write_file(sb.dir_ / "init", owner_record(sb.init_pid_).dump());
        if (flags & CLONE_NEWUSER) {
            // setgroups stays allowed: we write the maps as the parent namespace's root, and a function
            // may only ever use the groups its own range maps.
            sys::write_file(fmt::format("/proc/{}/uid_map", sb.init_pid_),
                            id_map(runtime.linux_settings.uid_mappings));
            sys::write_file(fmt::format("/proc/{}/gid_map", sb.init_pid_),
                            id_map(runtime.linux_settings.gid_mappings));
        }
        sb.cgroup_.attach(sb.init_pid_);
        char go = 1;
        if (::write(go_write.get(), &go, 1) != 1) throw sys::SysError("starting sandbox init", errno);
        go_write.reset();
        sb.netns_ = sys::open_file(fmt::format("/proc/{}/ns/net", sb.init_pid_), O_RDONLY);
        std::string network = runtime.annotation("io.initless.network", "none");
        if (network == "egress")
            sb.start_egress();
        else if (network != "none")
            throw Error(fmt::format("network '{}' is not one of none|egress", network));

        part_done("init forked");
        // Init, root of a user namespace, may not be able to walk to our files (a state dir of mode
        // 0700, a function dir under one): it gets each as an fd opened here and names it through
        // /proc/self/fd, which needs no search permission on the way.
        // The fds are opened through init's /proc/PID/root, so that they belong to the mounts of its
        // mount namespace (overlayfs and bind mounts accept no other).
        std::vector<sys::UniqueFd> passed;
        fs::path init_root = fmt::format("/proc/{}/root", sb.init_pid_);
        auto pass = [&](const fs::path& path, int flags) {
            passed.push_back(
                sys::open_file(init_root / fs::absolute(path).relative_path(), flags | O_CLOEXEC));
            return static_cast<int>(passed.size() - 1);
        };
        json setup = {{"spec", oci::to_json(runtime)}, {"rw_dirs", json::array()}, {"fds", json::object()}};
        json& fds = setup["fds"];
        fds["log"] = pass(sb.log_path(), O_WRONLY | O_APPEND);
        fds["root"] = pass(runtime.root.path, O_PATH | O_DIRECTORY);
        fds["instance"] = pass(sb.dir_, O_PATH | O_DIRECTORY);
        if (!layer_mb.empty()) {
            fds["upper"] = pass(sb.upper_dir(), O_PATH | O_DIRECTORY);
            fds["work"] = pass(sb.layer_dir() / "work", O_PATH | O_DIRECTORY);
        }
        fds["mounts"] = json::object();
        for (size_t i = 0; i < runtime.mounts.size(); ++i) {
            const auto& m = runtime.mounts[i];
            if (m.is_bind()) fds["mounts"][std::to_string(i)] = pass(m.source, O_PATH);
        }
        for (const auto& d : spec.rw_dirs) setup["rw_dirs"].push_back(d.string());
        sys::UniqueFd listener;
        if (options.detached) {
            listener = sys::listen_unix_seqpacket(control_socket_path(sb.dir_));
            setup["detached"] = true;
            passed.push_back(sys::duplicate(listener.get()));
            fds["listen"] = passed.size() - 1;
        }
        std::vector<int> raw;
        for (const auto& f : passed) raw.push_back(f.get());
        sb.request(setup.dump(), nullptr, raw);
        part_done("init setup");
    } catch (const std::exception& e) {
        sb.teardown();
        throw Error(fmt::format("prepare sandbox for {}: {}", spec.name, e.what()));
    }
    return sb;
}

std::pair<uid_t, gid_t> Sandbox::root_ids() const {
    return mapped_root(runtime_).value_or(std::pair<uid_t, gid_t>{0, 0});
}

Sandbox::Sandbox(Sandbox&& o) noexcept {
    *this = std::move(o);
}

Sandbox& Sandbox::operator=(Sandbox&& o) noexcept {
    if (this != &o) {
        teardown();
        spec_ = std::move(o.spec_);
        runtime_ = std::move(o.runtime_);
        seccomp_filter_ = std::move(o.seccomp_filter_);
        id_ = std::move(o.id_);
        dir_ = std::move(o.dir_);
        init_pid_ = std::exchange(o.init_pid_, 0);
        init_pidfd_ = std::move(o.init_pidfd_);
        control_ = std::move(o.control_);
        netns_ = std::move(o.netns_);
        cgroup_ = std::move(o.cgroup_);
        exits_ = std::move(o.exits_);
        network_pid_ = std::exchange(o.network_pid_, 0);
        network_pidfd_ = std::move(o.network_pidfd_);
        network_exit_ = std::move(o.network_exit_);
        detached_ = o.detached_;
        o.dir_.clear();
    }
    return *this;
}

Sandbox::~Sandbox() {
    teardown();
}

void Sandbox::handle_event(const std::string& message) {
    json event = json::parse(message);
    if (event.value("event", "") == "exit")
        exits_.push_back({event.at("pid").get<pid_t>(), event.at("status").get<int>()});
}

std::string Sandbox::request(const std::string& message, std::vector<sys::UniqueFd>* fds,
                             std::span<const int> send_fds) {
    sys::send_message(control_.get(), message, send_fds);
    auto deadline = Clock::now() + kControlTimeout;
    std::string reply;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd p{control_.get(), POLLIN, 0};
        int r = sys::retry_eintr([&] { return ::poll(&p, 1, static_cast<int>(std::max<long>(left, 0))); });
        if (r == 0) throw Error("sandbox init did not answer in time");
        if (!sys::receive_message(control_.get(), reply, fds))
            throw Error("sandbox init is gone (control socket closed); log: " + log_tail(500));
        json parsed = json::parse(reply);
        if (parsed.contains("event")) {
            handle_event(reply);
            continue;
        }
        if (!parsed.value("ok", false))
            throw Error(parsed.value("error", std::string("init refused the request")));
        return reply;
    }
}

// Init answers a start or restorer request with the new process's pid and its pidfd.
ProcessHandle Sandbox::request_process(const std::string& message, std::span<const int> send_fds) {
    std::vector<sys::UniqueFd> fds;
    json reply = json::parse(request(message, &fds, send_fds));
    if (fds.size() != 1) throw Error("init sent no pidfd for the new process");
    ProcessHandle h;
    h.sandbox_pid = reply.at("pid").get<pid_t>();
    h.pidfd = std::move(fds[0]);
    h.host_pid = sys::pid_of_pidfd(h.pidfd.get());
    return h;
}

std::string start_request(const seccomp::Filter& filter) {
    json req = {{"op", "start"}};
    // Raw BPF, in hex: init installs it without knowing what a profile is.
    if (!filter.empty()) {
        std::string hex = sys::hex(seccomp::to_bytes(filter.bpf));
        if (hex.size() > 48 * 1024)  // the control socket carries 64 KiB messages
            throw Error(fmt::format("the seccomp filter has {} instructions, too many to send to init",
                                    filter.bpf.size()));
        req["seccomp"] = {{"bpf", hex}, {"flags", filter.flags}};
    }
    return req.dump();
}

ProcessHandle Sandbox::start() {
    std::string request;
    try {
        request = start_request(seccomp_filter_);
    } catch (const Error& e) {
        throw Error(fmt::format("start {}: {}", spec_.name, e.what()));
    }
    return request_process(request, {});
}

ProcessHandle Sandbox::spawn_restorer(pid_t sandbox_pid, uint64_t stub_addr, uint64_t stub_size, int pages_fd,
                                      uint64_t reserve_bytes, ClockOffsets clock_offsets,
                                      int uffd_device_fd) {
    json req = {{"op", "restorer"},
                {"pid", sandbox_pid},
                {"stub_addr", stub_addr},
                {"stub_size", stub_size},
                {"reserve_bytes", reserve_bytes}};
    if (clock_offsets.monotonic_ns || clock_offsets.boottime_ns)
        req["clock_offsets"] = {clock_offsets.monotonic_ns, clock_offsets.boottime_ns};
    const int fds[2] = {pages_fd, uffd_device_fd};
    return request_process(req.dump(), std::span<const int>(fds, uffd_device_fd >= 0 ? 2 : 1));
}

std::optional<ExitReport> Sandbox::poll_exit() {
    while (control_) {
        pollfd p{control_.get(), POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) break;
        std::string message;
        if (!sys::receive_message(control_.get(), message)) break;
        handle_event(message);
    }
    if (exits_.empty()) return std::nullopt;
    ExitReport r = exits_.front();
    exits_.erase(exits_.begin());
    return r;
}

void Sandbox::wait_ready(const std::string& phrase, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    sys::UniqueFd inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!inotify) throw sys::SysError("inotify_init1", errno);
    sys::check(::inotify_add_watch(inotify.get(), log_path().c_str(), IN_MODIFY), "inotify_add_watch log");
    sys::UniqueFd log = sys::open_file(log_path(), O_RDONLY);
    std::string window;
    char buf[65536];
    bool init_gone = false;
    for (;;) {
        for (;;) {
            ssize_t n = ::read(log.get(), buf, sizeof buf);
            if (n <= 0) break;
            window.append(buf, static_cast<size_t>(n));
            if (window.find(phrase) != std::string::npos) return;
            if (window.size() > phrase.size()) window.erase(0, window.size() - phrase.size());
        }
        if (auto ex = poll_exit())
            throw Error(fmt::format("function {} {} before printing its ready phrase '{}'; log tail:\n{}",
                                    spec_.name, ex->describe(), phrase, log_tail()));
        // Init is gone with no exit report (killed: the daemon stopping). Waiting on would spin on its
        // closed control socket until the deadline.
        if (init_gone)
            throw Error(fmt::format("function {}: its sandbox's init exited before the ready phrase '{}'",
                                    spec_.name, phrase));
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0)
            throw Error(
                fmt::format("function {} did not print its ready phrase '{}' within {} ms; log tail:\n{}",
                            spec_.name, phrase, timeout.count(), log_tail()));
        pollfd p[3] = {
            {inotify.get(), POLLIN, 0}, {control_.get(), POLLIN, 0}, {init_pidfd_.get(), POLLIN, 0}};
        ::poll(p, init_pidfd_ ? 3 : 2, static_cast<int>(std::min<long>(left, 100)));
        init_gone = init_pidfd_ && (p[2].revents & POLLIN);  // judged at the top, after the log and reports
        while (::read(inotify.get(), buf, sizeof buf) > 0) {
        }
    }
}

sys::UniqueFd Sandbox::connect(uint16_t port, std::chrono::milliseconds timeout) const {
    return sys::connect_in_netns(netns_.get(), port, timeout);
}

std::string Sandbox::log_tail(size_t bytes) const {
    try {
        // Only the end is read: the log may be large, or sparse where the daemon freed what it copied
        // (those bytes read as zeros, and are dropped).
        sys::UniqueFd fd = sys::open_file(log_path(), O_RDONLY);
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) throw sys::SysError("stat log", errno);
        uint64_t size = static_cast<uint64_t>(st.st_size);
        std::string tail = sys::read_from(fd.get(), size > bytes ? size - bytes : 0, bytes);
        std::erase(tail, '\0');
        return tail;
    } catch (const Error&) {
        return "(no log)";
    }
}

// Outbound connections through slirp4netns: a user-mode TCP/IP stack on the host side that reaches
// the world as an ordinary process, so the sandbox needs no veth, bridge or NAT rule on the host, and
// with --disable-host-loopback it cannot reach the host's 127.0.0.1 (the gateway's admin API). It runs
// sandboxed itself (its own mount namespace, capabilities dropped, a seccomp filter) and exits when
// the write end of its exit pipe, held only by us, closes: at teardown, or when this process dies.
void Sandbox::start_egress() {
    auto [exit_read, exit_write] = sys::make_pipe();
    auto [ready_read, ready_write] = sys::make_pipe();
    std::string pid = std::to_string(init_pid_);
    const char* argv[] = {"slirp4netns",
                          "--configure",
                          "--mtu=65520",
                          "--disable-host-loopback",
                          "--enable-sandbox",
                          "--enable-seccomp",
                          "--exit-fd=3",
                          "--ready-fd=4",
                          pid.c_str(),
                          "tap0",
                          nullptr};
    auto child = sys::fork_process(0);
    if (child.pid == 0) {
        // slirp4netns's --enable-sandbox makes its own mount namespace and detaches the old root
        // there; started from the host's namespace, the detach reached the host's shared mounts
        // (every `ip netns` mount in /run/netns vanished). In a private copy of ours it cannot.
        if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
            ::_exit(126);
        ::dup2(exit_read.get(), 3);
        ::dup2(ready_write.get(), 4);
        ::syscall(SYS_close_range, 5u, ~0u, 0u);
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, 0);
        ::dup2(devnull, 1);
        ::execvp(argv[0], const_cast<char**>(argv));
        ::_exit(127);
    }
    network_pid_ = child.pid;
    network_pidfd_ = std::move(child.pidfd);
    network_exit_ = std::move(exit_write);
    exit_read.reset();
    ready_write.reset();
    pollfd p{ready_read.get(), POLLIN, 0};
    char c = 0;
    if (sys::retry_eintr([&] { return ::poll(&p, 1, 5000); }) <= 0 || ::read(ready_read.get(), &c, 1) != 1)
        throw Error(
            "egress network: slirp4netns did not configure the sandbox's network within 5 s "
            "(is the slirp4netns package installed?)");
}

void Sandbox::stop_egress() {
    if (network_pid_ <= 0) return;
    network_exit_.reset();
    pollfd p{network_pidfd_.get(), POLLIN, 0};
    if (sys::retry_eintr([&] { return ::poll(&p, 1, 2000); }) <= 0) {
        sys::send_signal(network_pid_, SIGKILL);
        ::poll(&p, 1, 2000);
    }
    ::waitpid(network_pid_, nullptr, WNOHANG);
    network_pid_ = 0;
    network_pidfd_.reset();
}

void Sandbox::adopt(pid_t sandbox_pid) {
    if (!detached_) throw Error("only a detached sandbox's init adopts a process");
    request(json{{"op", "adopt"}, {"pid", sandbox_pid}}.dump(), nullptr);
}

void Sandbox::release() {
    if (!detached_) throw Error("only a detached sandbox may be released");
    control_.reset();  // a detached init keeps running, waiting for a connection on its socket
    netns_.reset();
    init_pid_ = 0;
    init_pidfd_.reset();
    cgroup_.release();
    cgroup_ = sys::Cgroup();
    dir_.clear();
}

fs::path control_socket_path(const fs::path& instance_dir) {
    return instance_dir / "init.sock";
}

std::string request_detached(const fs::path& instance_dir, const std::string& message,
                             std::vector<sys::UniqueFd>* fds, std::span<const int> send_fds) {
    sys::UniqueFd control = sys::connect_unix_seqpacket(control_socket_path(instance_dir));
    sys::send_message(control.get(), message, send_fds);
    std::string reply;
    for (;;) {
        pollfd p{control.get(), POLLIN, 0};
        if (sys::retry_eintr([&] { return ::poll(&p, 1, 20000); }) == 0)
            throw Error("container init did not answer in time");
        if (!sys::receive_message(control.get(), reply, fds)) throw Error("container init is gone");
        json parsed = json::parse(reply);
        if (parsed.contains("event")) continue;
        if (!parsed.value("ok", false))
            throw Error(parsed.value("error", std::string("init refused the request")));
        return reply;
    }
}

sys::UniqueFd Sandbox::init_pidfd() const {
    int fd = ::fcntl(init_pidfd_.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw sys::SysError("dup init's pidfd", errno);
    return sys::UniqueFd(fd);
}

std::string Sandbox::describe_processes() const {
    return sys::describe_processes(cgroup_.pids());
}

void Sandbox::teardown() {
    control_.reset();  // init kills the whole tree when its control socket closes
    netns_.reset();
    stop_egress();
    if (init_pid_ > 0) {
        // Bounded: init is the pid namespace's reaper and exits only once every task in it is reaped;
        // a task still traced by a thread of this process (a restore that failed half-way) waits for
        // that thread. Never wait forever here: after 3 s init is killed, after 10 s more it is left
        // (with its instance dir, which names it) for `collect_garbage`.
        pollfd p{init_pidfd_.get(), POLLIN, 0};
        bool exited = sys::retry_eintr([&] { return ::poll(&p, 1, 3000); }) > 0;
        if (!exited) {
            ::kill(init_pid_, SIGKILL);
            exited = sys::retry_eintr([&] { return ::poll(&p, 1, 10000); }) > 0;
        }
        if (!exited) {
            spdlog::warn(
                "event=teardown-incomplete instance={} init={} reason=\"init did not exit 13 s after the "
                "kill; its cgroup and instance dir are left for gc\"",
                id_, init_pid_);
            init_pid_ = 0;
            init_pidfd_.reset();
            dir_.clear();
            return;
        }
        ::waitpid(init_pid_, nullptr, 0);  // it has exited: this reaps it at once
        init_pid_ = 0;
        init_pidfd_.reset();
    }
    bool group_left = false;
    try {
        cgroup_.remove();
    } catch (const Error& e) {
        // Not fatal, but a group left behind is a leak to explain; the instance dir stays with it, so
        // that collect_garbage finds the group by its dir's owner record (an orphan group it leaves
        // for 30 s, since it cannot tell it from one another process is making).
        spdlog::warn("event=teardown-incomplete instance={} reason=\"{}\"", id_, e.what());
        group_left = true;
    }
    if (group_left) {
        dir_.clear();
    } else if (!dir_.empty()) {
        try {
            sys::unmount_under(dir_);
            sys::remove_tree(dir_);
        } catch (const Error& e) {
            // Listing the mounts takes an fd, which a process short of them may not get. An empty dir
            // (a prepare that failed early) goes anyway; else the dir keeps its owner record, by which
            // collect_garbage knows it (the daemon's at its end, or the next start's).
            if (::rmdir(dir_.c_str()) != 0)
                spdlog::warn("event=teardown-incomplete instance={} reason=\"{}\"", id_, e.what());
        }
        dir_.clear();
    }
}

// A group with processes in any controller, or one created in the last 30 s.
static bool cgroup_in_use(const std::string& name) {
    for (const char* c : {"memory", "cpu", "pids", "freezer"}) {
        fs::path dir = fs::path(sys::Cgroup::kRoot) / c / sys::Cgroup::kGroup / name;
        std::error_code ec;
        auto mtime = fs::last_write_time(dir, ec);
        if (ec) continue;
        if (fs::file_time_type::clock::now() - mtime < std::chrono::seconds(30)) return true;
        try {
            if (sys::read_file(dir / "cgroup.procs").find_first_not_of(" \n") != std::string::npos)
                return true;
        } catch (const Error&) {
        }
    }
    return false;
}

std::vector<std::string> collect_garbage(bool ours_too) {
    std::vector<std::string> removed;
    fs::path instances = state_dir() / "instances";
    std::error_code ec;
    std::set<std::string> live_dirs;
    for (const auto& e : fs::directory_iterator(instances, ec)) {
        std::string id = e.path().filename().string();
        json owner, init;
        try {
            owner = json::parse(sys::read_file(e.path() / "owner"));
        } catch (const std::exception&) {
            // No owner record: a prepare that died before writing one, or garbage. Old enough to judge?
            auto age = fs::file_time_type::clock::now() - fs::last_write_time(e.path(), ec);
            if (age < std::chrono::seconds(30)) {
                live_dirs.insert(id);
                continue;
            }
        }
        bool ours = !owner.is_null() && owner.value("pid", 0) == ::getpid();
        if (!owner.is_null() && owner_alive(owner) && !(ours && ours_too)) {
            live_dirs.insert(id);
            continue;
        }
        try {
            init = json::parse(sys::read_file(e.path() / "init"));
            if (owner_alive(init)) {
                pid_t pid = init.at("pid").get<pid_t>();
                ::kill(pid, SIGKILL);
                for (int i = 0; i < 300 && sys::process_alive(pid); ++i) ::usleep(10000);
                removed.push_back(fmt::format("killed init {} of {}", pid, id));
            }
        } catch (const std::exception&) {
        }
        try {
            sys::Cgroup::open(id).remove();
            sys::unmount_under(e.path());
            sys::remove_tree(e.path());
            removed.push_back("removed instance " + id);
        } catch (const Error& err) {  // the others still go
            removed.push_back(fmt::format("could not remove instance {}: {}", id, err.what()));
        }
    }
    for (const auto& name : sys::Cgroup::list()) {
        if (live_dirs.count(name)) continue;
        if (fs::exists(instances / name)) continue;
        // No instance dir here: the group may belong to a live sandbox of another state dir, or to a
        // prepare that has not attached its init yet. Only an empty group, old enough, is garbage.
        if (cgroup_in_use(name)) continue;
        sys::Cgroup::open(name).remove();
        removed.push_back("removed cgroup " + name);
    }
    return removed;
}

}  // namespace initless::sandbox
