#include "initless/sandbox/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"

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

std::vector<std::string> function_env(const spec::FunctionSpec& spec) {
    std::map<std::string, std::string> env = {
        {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        {"HOME", "/root"},
        {"HOSTNAME", spec.name},
        {"PORT", std::to_string(spec.port)},
        {"LANG", "C.UTF-8"},
    };
    for (const auto& [k, v] : spec.env) env[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
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
    Sandbox sb;
    sb.spec_ = spec;
    sb.seccomp_filter_ = seccomp::filter_for(spec);
    sb.id_ = new_instance_id(spec.name);
    sb.dir_ = state_dir() / "instances" / sb.id_;
    try {
        fs::create_directories(sb.dir_);
        sys::write_file(sb.dir_ / "owner", owner_record(::getpid()).dump());
        for (const char* d : {"upper", "work", "merged"}) fs::create_directory(sb.dir_ / d);
        if (options.upper_seed) sys::copy_tree(*options.upper_seed, sb.upper_dir());
        sys::write_file(sb.log_path(), "");

        sb.cgroup_ = sys::Cgroup::create(sb.id_);
        sb.cgroup_.set_memory_limit(spec.memory_mb << 20);
        sb.cgroup_.set_cpu_limit(spec.cpus);
        sb.cgroup_.set_pids_limit(4096);

        auto [ours, theirs] = sys::seqpacket_pair();
        std::string control_arg = std::to_string(theirs.get());
        const char* argv[] = {"initless", "__init", "--control", control_arg.c_str(), nullptr};
        std::string init_binary = init_binary_path();
        auto child =
            sys::fork_process(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC);
        if (child.pid == 0) {
            ::fcntl(theirs.get(), F_SETFD, 0);
            ::execv(init_binary.c_str(), const_cast<char**>(argv));
            ::_exit(126);
        }
        sb.init_pid_ = child.pid;
        sb.init_pidfd_ = std::move(child.pidfd);
        theirs.reset();
        sb.control_ = std::move(ours);
        sys::write_file(sb.dir_ / "init", owner_record(sb.init_pid_).dump());
        sb.cgroup_.attach(sb.init_pid_);
        sb.netns_ = sys::open_file(fmt::format("/proc/{}/ns/net", sb.init_pid_), O_RDONLY);

        json setup = {{"rootfs", spec.rootfs.string()},      {"upper", sb.upper_dir().string()},
                      {"work", (sb.dir_ / "work").string()}, {"merged", (sb.dir_ / "merged").string()},
                      {"function_dir", spec.dir.string()},   {"hostname", spec.name},
                      {"log", sb.log_path().string()},       {"rw_dirs", json::array()}};
        for (const auto& d : spec.rw_dirs) setup["rw_dirs"].push_back(d.string());
        sb.request(setup.dump(), nullptr);
    } catch (const std::exception& e) {
        sb.teardown();
        throw Error(fmt::format("prepare sandbox for {}: {}", spec.name, e.what()));
    }
    return sb;
}

Sandbox::Sandbox(Sandbox&& o) noexcept {
    *this = std::move(o);
}

Sandbox& Sandbox::operator=(Sandbox&& o) noexcept {
    if (this != &o) {
        teardown();
        spec_ = std::move(o.spec_);
        seccomp_filter_ = std::move(o.seccomp_filter_);
        id_ = std::move(o.id_);
        dir_ = std::move(o.dir_);
        init_pid_ = std::exchange(o.init_pid_, 0);
        init_pidfd_ = std::move(o.init_pidfd_);
        control_ = std::move(o.control_);
        netns_ = std::move(o.netns_);
        cgroup_ = std::move(o.cgroup_);
        exits_ = std::move(o.exits_);
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

ProcessHandle Sandbox::start() {
    json req = {{"op", "start"}, {"argv", spec_.command}, {"env", function_env(spec_)}, {"cwd", "/function"}};
    // Raw BPF, in hex: init installs it without knowing what a profile is.
    if (!seccomp_filter_.empty()) {
        std::string hex;
        for (uint8_t b : seccomp::to_bytes(seccomp_filter_.bpf)) hex += fmt::format("{:02x}", b);
        if (hex.size() > 48 * 1024)  // the control socket carries 64 KiB messages
            throw Error(fmt::format("start {}: the seccomp filter has {} instructions, too many to send to init",
                                    spec_.name, seccomp_filter_.bpf.size()));
        req["seccomp"] = {{"bpf", hex}, {"flags", seccomp_filter_.flags}};
    }
    return request_process(req.dump(), {});
}

ProcessHandle Sandbox::spawn_restorer(pid_t sandbox_pid, uint64_t stub_addr, uint64_t stub_size, int pages_fd,
                                      uint64_t reserve_bytes, ClockOffsets clock_offsets) {
    json req = {{"op", "restorer"},
                {"pid", sandbox_pid},
                {"stub_addr", stub_addr},
                {"stub_size", stub_size},
                {"reserve_bytes", reserve_bytes}};
    if (clock_offsets.monotonic_ns || clock_offsets.boottime_ns)
        req["clock_offsets"] = {clock_offsets.monotonic_ns, clock_offsets.boottime_ns};
    return request_process(req.dump(), std::span<const int>(&pages_fd, 1));
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
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0)
            throw Error(
                fmt::format("function {} did not print its ready phrase '{}' within {} ms; log tail:\n{}",
                            spec_.name, phrase, timeout.count(), log_tail()));
        pollfd p[2] = {{inotify.get(), POLLIN, 0}, {control_.get(), POLLIN, 0}};
        ::poll(p, 2, static_cast<int>(std::min<long>(left, 100)));
        while (::read(inotify.get(), buf, sizeof buf) > 0) {
        }
    }
}

sys::UniqueFd Sandbox::connect(uint16_t port) const {
    return sys::connect_in_netns(netns_.get(), port);
}

std::string Sandbox::log_tail(size_t bytes) const {
    try {
        std::string all = sys::read_file(log_path());
        return all.size() > bytes ? all.substr(all.size() - bytes) : all;
    } catch (const Error&) {
        return "(no log)";
    }
}

void Sandbox::teardown() {
    control_.reset();  // init kills the whole tree when its control socket closes
    netns_.reset();
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
            init_pid_ = 0;
            init_pidfd_.reset();
            dir_.clear();
            return;
        }
        ::waitpid(init_pid_, nullptr, 0);  // it has exited: this reaps it at once
        init_pid_ = 0;
        init_pidfd_.reset();
    }
    try {
        cgroup_.remove();
    } catch (const Error&) {
    }
    if (!dir_.empty()) {
        try {
            sys::remove_tree(dir_);
        } catch (const Error&) {
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

std::vector<std::string> collect_garbage() {
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
        if (!owner.is_null() && owner_alive(owner)) {
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
        sys::Cgroup::open(id).remove();
        sys::remove_tree(e.path());
        removed.push_back("removed instance " + id);
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
