#include "initless/runtime/runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "initless/image/auth.h"
#include "initless/image/image.h"
#include "initless/oci/spec.h"
#include "initless/sandbox/init.h"
#include "initless/sandbox/sandbox.h"
#include "initless/seccomp/profile.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/cgroup.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/mount.h"
#include "initless/sys/process.h"
#include "initless/sys/stopwatch.h"
#include "initless_container.h"

extern char** environ;

namespace initless::runtime {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string log_line(const std::string& level, const std::string& message, bool json_format) {
    auto now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    char time[64];
    std::strftime(time, sizeof time, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_format ? json{{"level", level}, {"msg", message}, {"time", time}}.dump() + "\n"
                       : fmt::format("time=\"{}\" level={} msg=\"{}\"\n", time, level, message);
}
namespace ilc = initless_container;

namespace {

constexpr const char* kOciVersion = "1.0.2";

const std::pair<const char*, int> kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT}, {"ILL", SIGILL},     {"TRAP", SIGTRAP},
    {"ABRT", SIGABRT}, {"IOT", SIGIOT},       {"BUS", SIGBUS},   {"FPE", SIGFPE},     {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},     {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},   {"ALRM", SIGALRM},
    {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},   {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},     {"TTOU", SIGTTOU}, {"URG", SIGURG},     {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"POLL", SIGPOLL}, {"PWR", SIGPWR},       {"SYS", SIGSYS}};

// /proc/PID/stat: (state, start time); nullopt when the pid is gone.
std::optional<std::pair<char, uint64_t>> proc_stat(pid_t pid) {
    std::string stat;
    try {
        stat = sys::read_file(fmt::format("/proc/{}/stat", pid));
    } catch (const Error&) {
        return std::nullopt;
    }
    size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size()) return std::nullopt;
    char state = stat[close + 2];
    // Fields after the command: state is field 3, start time field 22.
    size_t at = close + 2;
    for (int field = 3; field < 22; ++field) {
        at = stat.find(' ', at);
        if (at == std::string::npos) return std::nullopt;
        ++at;
    }
    return std::pair<char, uint64_t>{state, std::stoull(stat.substr(at))};
}

// Alive and the same process (not a reused pid); a zombie has ended.
bool alive(pid_t pid, uint64_t start) {
    if (pid <= 0) return false;
    auto st = proc_stat(pid);
    return st && st->first != 'Z' && st->first != 'X' && st->second == start;
}

std::string now_rfc3339() {
    auto now = std::chrono::system_clock::now();
    auto secs = std::chrono::system_clock::to_time_t(now);
    auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() % 1000000000;
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:09d}Z", buf, ns);
}

void check_id(const std::string& id) {
    if (id.empty() || id.size() > 1024 || id == "." || id == ".." ||
        !std::all_of(id.begin(), id.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
                   c == '+';
        }))
        throw Error(fmt::format("invalid container id '{}'", id));
}

struct Record {
    std::string id;
    fs::path bundle;
    pid_t init_pid = 0;
    uint64_t init_start = 0;
    pid_t process_pid = 0;  // host pid of the started process (0: not started)
    std::string cgroup_path;
    std::string created;
    std::map<std::string, std::string> annotations;
    // Init-less containers: "boot" (snapshot at the phrase) or "restore" (stage 1 done at create);
    // "" for a plain container. The image's dir in the store, the keeper's and the watcher's pids.
    std::string mode;
    std::string image_dir;
    pid_t keeper_pid = 0, watcher_pid = 0;
    uint64_t keeper_start = 0, watcher_start = 0;

    json to_json() const {
        return {{"id", id},
                {"bundle", bundle.string()},
                {"init_pid", init_pid},
                {"init_start", init_start},
                {"process_pid", process_pid},
                {"cgroup_path", cgroup_path},
                {"created", created},
                {"annotations", annotations},
                {"mode", mode},
                {"image_dir", image_dir},
                {"keeper_pid", keeper_pid},
                {"keeper_start", keeper_start},
                {"watcher_pid", watcher_pid},
                {"watcher_start", watcher_start}};
    }
    static Record from_json(const json& j) {
        Record r;
        r.id = j.at("id").get<std::string>();
        r.bundle = j.at("bundle").get<std::string>();
        r.init_pid = j.at("init_pid").get<pid_t>();
        r.init_start = j.at("init_start").get<uint64_t>();
        r.process_pid = j.value("process_pid", 0);
        r.cgroup_path = j.at("cgroup_path").get<std::string>();
        r.created = j.value("created", "");
        r.annotations = j.value("annotations", std::map<std::string, std::string>{});
        r.mode = j.value("mode", "");
        r.image_dir = j.value("image_dir", "");
        r.keeper_pid = j.value("keeper_pid", 0);
        r.keeper_start = j.value("keeper_start", uint64_t{0});
        r.watcher_pid = j.value("watcher_pid", 0);
        r.watcher_start = j.value("watcher_start", uint64_t{0});
        return r;
    }
    bool init_alive() const { return alive(init_pid, init_start); }
    std::string status() const {
        if (!init_alive()) return "stopped";
        if (sys::Cgroup::open_path(cgroup_path).frozen()) return "paused";
        return process_pid ? "running" : "created";
    }
    json oci_state(const std::string& status_override = {}) const {
        std::string status = status_override.empty() ? this->status() : status_override;
        json s = {{"ociVersion", kOciVersion}, {"id", id}, {"status", status}, {"bundle", bundle.string()}};
        if (status != "stopped")
            s["pid"] = init_pid;
        else
            s["pid"] = 0;
        s["annotations"] = annotations;
        return s;
    }
};

Record load_record(const fs::path& dir, const std::string& id) {
    std::error_code ec;
    if (!fs::exists(dir / "state.json", ec)) throw Error(fmt::format("container {} does not exist", id));
    return Record::from_json(json::parse(sys::read_file(dir / "state.json")));
}

void save_record(const fs::path& dir, const Record& r) {
    sys::write_file_replace(dir / "state.json", r.to_json().dump());
}

// Runs one hook with the state on stdin, killed at its timeout; in the mount namespace of
// `mount_ns_pid` when non-zero (createContainer, startContainer). Its output goes to `output`.
void run_hook(const oci::Hook& hook, const json& state, const fs::path& output, pid_t mount_ns_pid,
              const std::string& kind) {
    auto [in_read, in_write] = sys::make_pipe();
    sys::UniqueFd out = sys::open_file(output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    sys::UniqueFd mnt;
    if (mount_ns_pid)
        mnt = sys::open_file(fmt::format("/proc/{}/ns/mnt", mount_ns_pid), O_RDONLY | O_CLOEXEC);
    auto child = sys::fork_process(0);
    if (child.pid == 0) {
        ::dup2(in_read.get(), 0);
        ::dup2(out.get(), 1);
        ::dup2(out.get(), 2);
        if (mnt && ::setns(mnt.get(), CLONE_NEWNS) != 0) ::_exit(126);
        std::vector<std::string> args = hook.args.empty() ? std::vector<std::string>{hook.path} : hook.args;
        std::vector<char*> argv, envp;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<std::string> env = hook.env;
        for (auto& e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        ::execve(hook.path.c_str(), argv.data(), envp.data());
        ::_exit(127);
    }
    in_read.reset();
    std::string data = state.dump();
    {
        // A hook may not read its stdin, and may have ended already: the write then fails with EPIPE
        // rather than killing this process by SIGPIPE (which left the container's state, cgroup and
        // keeper behind). Ignored only around the write: the hook has its own disposition already, and
        // init and the container's process must not inherit an ignored SIGPIPE.
        struct sigaction ignore {
        }, before{};
        ignore.sa_handler = SIG_IGN;
        ::sigaction(SIGPIPE, &ignore, &before);
        (void)!::write(in_write.get(), data.data(), data.size());
        ::sigaction(SIGPIPE, &before, nullptr);
    }
    in_write.reset();
    int timeout_ms = hook.timeout ? *hook.timeout * 1000 : -1;
    pollfd p{child.pidfd.get(), POLLIN, 0};
    bool ended = sys::retry_eintr([&] { return ::poll(&p, 1, timeout_ms); }) > 0;
    if (!ended) ::kill(child.pid, SIGKILL);
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    if (!ended) throw Error(fmt::format("{} hook {} timed out after {} s", kind, hook.path, *hook.timeout));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::string tail;
        try {
            tail = sys::read_file(output);
            if (tail.size() > 500) tail = tail.substr(tail.size() - 500);
        } catch (const Error&) {
        }
        throw Error(fmt::format("{} hook {} {}: {}", kind, hook.path,
                                sandbox::ExitReport{child.pid, status}.describe(), tail));
    }
}

void run_hooks(const std::vector<oci::Hook>& hooks, const json& state, const fs::path& dir,
               pid_t mount_ns_pid, const std::string& kind) {
    for (const auto& h : hooks) run_hook(h, state, dir / "hooks.log", mount_ns_pid, kind);
}

// The container's seccomp filter: linux.seccomp compiled (no filter without one, as runc). Compiling
// validates it, so create calls this too and refuses a profile we cannot apply.
seccomp::Filter container_filter(const oci::RuntimeSpec& spec) {
    if (!spec.linux_settings.seccomp) return {};
    auto profile = spec.linux_settings.seccomp->get<seccomp::Profile>();
    return {seccomp::compile(profile), seccomp::install_flags(profile)};
}

// --debug: a verb's steps and their times, one log line at the end ("create c1: config 0.3 ms, ...").
class StepTimes {
  public:
    explicit StepTimes(bool on) : on_(on) {}
    void step(const char* name) {
        if (on_) text_ += fmt::format("{}{} {:.1f} ms", text_.empty() ? "" : ", ", name, watch_.lap_ms());
    }
    void log(const RuntimeOptions& o, const std::string& what) const {
        if (on_) ilc::notice(o.log, o.log_json, 0, "debug", fmt::format("{}: {}", what, text_));
    }

  private:
    bool on_;
    sys::Stopwatch watch_;
    std::string text_;
};

// A value that asks for something: not null, 0, "", false, nor an empty array, nor an object of such.
bool is_set(const json& v) {
    if (v.is_null()) return false;
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_number()) return v != 0;
    if (v.is_string()) return !v.get<std::string>().empty();
    if (v.is_array()) return !v.empty();
    for (const auto& [key, member] : v.items())
        if (is_set(member)) return true;
    return false;
}

bool host_file_says(const char* path, const char* prefix) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return false;
    try {
        return sys::read_file(path).rfind(prefix, 0) == 0;
    } catch (const Error&) {
        return false;
    }
}

// config.json's settings that the sandbox does not apply although a runtime's caller (Docker,
// Kubernetes) may rely on them for isolation or limits. Each is refused when it asks for anything, so
// that a container never runs less confined than its config says; the first one found is the error.
// docs/docker.md lists what is applied, ignored and refused.
void refuse_unapplied(const json& config) {
    auto find = [&](std::initializer_list<const char*> path) -> const json* {
        const json* v = &config;
        for (const char* key : path) {
            if (!v->is_object()) return nullptr;
            auto it = v->find(key);
            if (it == v->end()) return nullptr;
            v = &*it;
        }
        return v;
    };
    auto refuse_set = [&](std::initializer_list<const char*> path, const char* why) {
        const json* v = find(path);
        if (!v || !is_set(*v)) return;
        std::string name;
        for (const char* key : path) name += (name.empty() ? "" : ".") + std::string(key);
        throw Error(fmt::format("config.json: {} is set ({}) but initless does not apply it: {}", name,
                                v->dump(), why));
    };
    refuse_set({"process", "ioPriority"}, "no I/O priority support");
    refuse_set({"process", "scheduler"}, "no scheduler policy support");
    refuse_set({"process", "execCPUAffinity"}, "no CPU affinity support");
    refuse_set({"linux", "personality"}, "no personality support");
    refuse_set({"linux", "intelRdt"}, "no resctrl support");
    refuse_set({"linux", "timeOffsets"}, "no time namespace offsets for a container");
    refuse_set({"linux", "resources", "blockIO"}, "the blkio controller is not used");
    refuse_set({"linux", "resources", "hugepageLimits"}, "the hugetlb controller is not used");
    refuse_set({"linux", "resources", "network"}, "net_cls/net_prio are not used");
    refuse_set({"linux", "resources", "rdma"}, "the rdma controller is not used");
    refuse_set({"linux", "resources", "unified"}, "this is a cgroup v1 host");
    refuse_set({"linux", "resources", "cpu", "cpus"}, "the cpuset controller is not used");
    refuse_set({"linux", "resources", "cpu", "mems"}, "the cpuset controller is not used");
    refuse_set({"linux", "resources", "cpu", "realtimeRuntime"}, "no realtime scheduling limits");
    refuse_set({"linux", "resources", "cpu", "realtimePeriod"}, "no realtime scheduling limits");
    refuse_set({"linux", "resources", "memory", "reservation"}, "no soft memory limit");
    refuse_set({"linux", "resources", "memory", "kernel"}, "no kernel memory limit");
    refuse_set({"linux", "resources", "memory", "kernelTCP"}, "no kernel TCP memory limit");
    refuse_set({"linux", "resources", "memory", "disableOOMKiller"}, "the OOM killer stays on");
    if (const json* sw = find({"linux", "resources", "memory", "swappiness"});
        sw && sw->is_number() && *sw != -1)
        refuse_set({"linux", "resources", "memory", "swappiness"}, "no swappiness setting");
    // A mandatory access control profile: refused where the host enforces that LSM (then the caller
    // relies on it); on a host without it there is nothing to apply, as with runc.
    if (host_file_says("/sys/module/apparmor/parameters/enabled", "Y"))
        refuse_set({"process", "apparmorProfile"}, "AppArmor profiles are not loaded by initless");
    if (host_file_says("/sys/fs/selinux/enforce", "1")) {
        refuse_set({"process", "selinuxLabel"}, "SELinux labels are not applied by initless");
        refuse_set({"linux", "mountLabel"}, "SELinux labels are not applied by initless");
    }
    // The root is made rprivate: a caller that asked for propagation from or to the host would not get it.
    if (const json* p = find({"linux", "rootfsPropagation"}); p && p->is_string()) {
        std::string v = p->get<std::string>();
        if (!v.empty() && v != "private" && v != "rprivate")
            throw Error(fmt::format(
                "config.json: linux.rootfsPropagation '{}' is not supported (the root is always rprivate)",
                v));
    }
}

oci::RuntimeSpec load_config(const fs::path& dir) {
    return oci::parse(json::parse(sys::read_file(dir / "config.json")));
}

void wait_gone(const Record& r, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (r.init_alive() && std::chrono::steady_clock::now() < deadline) ::usleep(2000);
}

}  // namespace

int parse_signal(const std::string& text) {
    if (!text.empty() && std::all_of(text.begin(), text.end(),
                                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        int n = std::stoi(text);
        if (n <= 0 || n >= NSIG) throw Error(fmt::format("invalid signal number {}", n));
        return n;
    }
    std::string name = text;
    for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (name.rfind("SIG", 0) == 0) name = name.substr(3);
    for (auto [n, s] : kSignals)
        if (name == n) return s;
    throw Error(fmt::format("unknown signal '{}'", text));
}

Runtime::Runtime(fs::path root, RuntimeOptions options)
    : root_(std::move(root)), options_(std::move(options)) {
    fs::create_directories(root_);
    ::chmod(root_.c_str(), 0700);
    if (options_.snapshot_store.empty()) options_.snapshot_store = ilc::default_store();
}

fs::path Runtime::dir(const std::string& id) const {
    check_id(id);
    return root_ / id;
}

void Runtime::create(const std::string& id, const CreateOptions& options) {
    // Init's attach to its cgroup comes ~10 ms from now: start the kernel's grace-period wait that
    // the first migration pays (sys/cgroup.h) meanwhile.
    sys::MigrationWarmup warm_attach;
    StepTimes steps(options_.debug);
    fs::path d = dir(id);
    if (options.console_socket)
        throw Error("a terminal (--console-socket, process.terminal) is not supported by initless yet");
    fs::path bundle = fs::absolute(options.bundle);
    json config;
    try {
        config = json::parse(sys::read_file(bundle / "config.json"));
    } catch (const json::exception& e) {
        throw Error(fmt::format("{}: not JSON: {}", (bundle / "config.json").string(), e.what()));
    }
    oci::RuntimeSpec spec = oci::parse(config);
    refuse_unapplied(config);
    if (spec.root.path.is_relative()) spec.root.path = bundle / spec.root.path;
    steps.step("config");
    // An init-less container: restored from its key's snapshot if there is a usable one, else booted
    // (and snapshotted at its phrase). Why an image is not used goes to the container's log below.
    ilc::Settings initless = ilc::settings_of(spec);
    std::string mode, image_dir, unusable;
    std::optional<image::Image> img;
    struct {
        std::optional<image::Image> img;
        std::string error;
    } loaded;
    std::jthread snapshot_loader;  // joined on every way out (jthread), before what it writes goes
    if (!initless.phrase.empty()) {
        std::string root_identity;
        image_dir = (options_.snapshot_store / ilc::key_of(spec, config, &root_identity)).string();
        ilc::notice(
            options_.log, options_.log_json, 0, "info",
            fmt::format("container {}: init-less, snapshot {} (root: {})", id, image_dir, root_identity));
        mode = "boot";
        steps.step("snapshot key");
        std::error_code ec;
        if (fs::exists(image_dir, ec)) {
            // Loaded on a thread of its own while the sandbox is prepared (most of which is waiting
            // for init's mounts). The namespaces the sandbox joins by path (network, ipc, uts) are
            // entered by this thread alone; a mount or user namespace, which a process with threads
            // could not enter, it refuses. Each verb is a new process: the pages are read in full
            // once per image, not per create.
            snapshot_loader = std::jthread([this, &loaded, image_dir] {
                try {
                    loaded.img = image::load_verified_once(image_dir,
                                                           image::Key::of_state_dir(options_.snapshot_store));
                } catch (const std::exception& e) {
                    loaded.error = e.what();
                }
            });
        }
    }
    // Waits for the snapshot (if one is being loaded): the image to restore, or why there is none.
    auto take_snapshot = [&] {
        if (!snapshot_loader.joinable()) return;
        snapshot_loader.join();
        if (loaded.img) {
            img = std::move(loaded.img);
            mode = "restore";
        } else {
            unusable =
                fmt::format("snapshot {} is not usable ({}); booting instead", image_dir, loaded.error);
            ilc::discard_image(image_dir);
        }
    };
    std::string cgroup_path = spec.linux_settings.cgroups_path;
    if (cgroup_path.find(':') != std::string::npos)
        throw Error(fmt::format("cgroupsPath '{}' is a systemd slice: systemd cgroups are not supported",
                                cgroup_path));
    if (cgroup_path.empty()) cgroup_path = "/initless-oci/" + id;
    // The spec's default devices, which a runtime must supply whatever linux.devices lists (Docker
    // lists none for a plain container and mounts a tmpfs on /dev): the host's nodes, bound in.
    for (const char* name : {"null", "zero", "full", "random", "urandom", "tty"}) {
        fs::path path = fs::path("/dev") / name;
        auto& devs = spec.linux_settings.devices;
        if (std::none_of(devs.begin(), devs.end(), [&](const oci::Device& d) { return d.path == path; }))
            devs.push_back(oci::Device{path, "c", 0, 0, std::nullopt, std::nullopt, std::nullopt});
    }
    // With a device list, the rules every runc container gets after it (runc's AllowedDevices): mknod of
    // any node (opening it is what the list decides), and the default devices and the terminal ones.
    if (auto& rules = spec.linux_settings.resources.devices; !rules.empty()) {
        auto rule = [](const char* type, std::optional<int64_t> major, std::optional<int64_t> minor,
                       const char* access) {
            return oci::DeviceRule{true, type, major, minor, access};
        };
        for (auto r : {rule("c", std::nullopt, std::nullopt, "m"), rule("b", std::nullopt, std::nullopt, "m"),
                       rule("c", 1, 3, "rwm"), rule("c", 1, 5, "rwm"), rule("c", 1, 7, "rwm"),
                       rule("c", 1, 8, "rwm"), rule("c", 1, 9, "rwm"), rule("c", 5, 0, "rwm"),
                       rule("c", 5, 1, "rwm"), rule("c", 5, 2, "rwm"), rule("c", 136, std::nullopt, "rwm")})
            rules.push_back(r);
    }
    if (::mkdir(d.c_str(), 0700) != 0) {
        if (errno == EEXIST) throw Error(fmt::format("container with id {} already exists", id));
        throw sys::SysError("mkdir " + d.string(), errno);
    }
    try {
        sys::write_file(d / "config.json", oci::to_json(spec).dump());
        spec::FunctionSpec fspec;
        fspec.name = "oci";
        fspec.command = spec.process.args;
        sandbox::SandboxOptions so;
        so.id = id;
        so.instance_dir = d / "sandbox";
        so.cgroup_path = cgroup_path;
        so.detached = true;
        // The function's own seccomp default does not apply: start installs linux.seccomp, and a
        // restore installs the same (and checks the image was made under it).
        fspec.seccomp = "unconfined";
        so.on_part = [&](const char* part) { steps.step(fmt::format("sandbox {}", part).c_str()); };
        sandbox::Sandbox sb = sandbox::Sandbox::prepare(spec, fspec, so);
        take_snapshot();
        steps.step("snapshot load (wait)");
        if (img && spec.linux_settings.seccomp) {
            // The image's filter is linux.seccomp compiled when it was made: the profile is part of the
            // key, and the image is authenticated. Compiling Docker's default profile again costs ~15 ms.
            sb.set_seccomp_filter(seccomp::Filter{seccomp::from_bytes(img->manifest.seccomp_filter),
                                                  img->manifest.seccomp_flags});
        } else {
            sb.set_seccomp_filter(container_filter(spec));
        }
        sandbox::start_request(sb.seccomp_filter());  // refuses a profile it cannot apply, now
        steps.step("seccomp");
        Record r;
        r.id = id;
        r.bundle = bundle;
        r.init_pid = sb.init_pid();
        r.init_start = sys::proc_start_time(r.init_pid);
        r.cgroup_path = cgroup_path;
        r.created = now_rfc3339();
        r.annotations = spec.annotations;
        save_record(d, r);
        json creating = r.oci_state("creating");
        r.mode = mode;
        r.image_dir = image_dir;
        if (!unusable.empty()) ilc::notice(options_.log, options_.log_json, r.init_pid, "warning", unusable);
        // Stage 1 (the restorer, seized with its tables written) runs in the keeper while the hooks run
        // and after this process exits (begin_keeper); the RW_DIRS' copies meanwhile. A failure here
        // still boots the container.
        auto restore_failed = [&](const std::exception& e) {
            ilc::notice(
                options_.log, options_.log_json, r.init_pid, "warning",
                fmt::format("restore of snapshot {} failed ({}); booting instead", image_dir, e.what()));
            ilc::discard_image(image_dir);
            r.mode = "boot";
        };
        std::optional<ilc::Keeper> keeper;
        if (img) {
            try {
                keeper.emplace(ilc::begin_keeper(sb, *img, d / "keeper.sock"));
                steps.step("restore stage 1 begun");
                ilc::copy_rw_dirs(*img, r.init_pid, initless.rw_dirs);
                steps.step("rw dirs");
            } catch (const std::exception& e) {
                keeper.reset();
                restore_failed(e);
            }
        }
        run_hooks(spec.hooks.prestart, creating, d, 0, "prestart");
        run_hooks(spec.hooks.create_runtime, creating, d, 0, "createRuntime");
        run_hooks(spec.hooks.create_container, creating, d, r.init_pid, "createContainer");
        steps.step("hooks");
        if (keeper) {
            ilc::Helper kept = keeper->keep();
            r.keeper_pid = kept.pid;
            r.keeper_start = kept.start_time;
        }
        save_record(d, r);
        if (options.pid_file) sys::write_file_replace(*options.pid_file, std::to_string(r.init_pid));
        sb.release();
        steps.step("record");
        steps.log(options_, "create " + id);
    } catch (...) {
        try {
            sys::Cgroup::open_path(cgroup_path).remove();
        } catch (const Error&) {
        }
        sys::unmount_under(d);
        sys::remove_tree(d);
        throw;
    }
}

void Runtime::start(const std::string& id) {
    StepTimes steps(options_.debug);
    fs::path d = dir(id);
    Record r = load_record(d, id);
    std::string status = r.status();
    if (status != "created") throw Error(fmt::format("cannot start a container that is {}", status));
    oci::RuntimeSpec spec = load_config(d);
    steps.step("record");
    run_hooks(spec.hooks.start_container, r.oci_state(), d, r.init_pid, "startContainer");
    steps.step("hooks");
    if (r.mode == "restore") {
        try {
            r.process_pid = ilc::run_stage2(d / "keeper.sock").host_pid;
            steps.step("restore stage 2");
        } catch (const std::exception& e) {
            // The keeper has let init go, with nothing started: boot it, and make a new snapshot.
            ilc::notice(
                options_.log, options_.log_json, r.init_pid, "warning",
                fmt::format("restore of snapshot {} failed ({}); booting instead", r.image_dir, e.what()));
            ilc::discard_image(r.image_dir);
            r.mode = "boot";
        }
        r.keeper_pid = 0;
    }
    if (r.mode != "restore") {
        seccomp::Filter filter =
            container_filter(spec);  // (a restore's is the image's, installed by stage 2)
        std::string request = sandbox::start_request(filter);
        std::optional<std::pair<sys::UniqueFd, sys::UniqueFd>> notify;
        std::string phrase = r.mode == "boot" ? ilc::settings_of(spec).phrase : "";
        if (!phrase.empty()) {
            // Init relays the process's stdout and writes a byte here when the phrase went by.
            json req = json::parse(request);
            req["relay"] = {{"phrase", phrase}};
            request = req.dump();
            notify = sys::make_pipe();
        }
        std::vector<sys::UniqueFd> fds;
        int notify_write = notify ? notify->second.get() : -1;
        json reply = json::parse(sandbox::request_detached(
            d / "sandbox", request, &fds,
            notify ? std::span<const int>(&notify_write, 1) : std::span<const int>()));
        if (fds.size() != 1) throw Error("container init sent no pidfd for the process it started");
        r.process_pid = sys::pid_of_pidfd(fds[0].get());
        if (notify) {
            notify->second.reset();
            ilc::WatchJob job{id,
                              r.init_pid,
                              r.process_pid,
                              r.image_dir,
                              options_.snapshot_store,
                              ilc::settings_of(spec).rw_dirs,
                              filter,
                              options_.log,
                              options_.log_json};
            ilc::Helper watcher = ilc::start_watcher(job, std::move(notify->first));
            r.watcher_pid = watcher.pid;
            r.watcher_start = watcher.start_time;
        }
    }
    save_record(d, r);
    for (const auto& h : spec.hooks.poststart) {
        try {
            run_hook(h, r.oci_state(), d / "hooks.log", 0, "poststart");
        } catch (const Error& e) {
            // The spec: a failing poststart hook is logged, the container keeps running.
            sys::write_file(d / "hooks.log", std::string("warning: ") + e.what() + "\n");
        }
    }
    steps.step(r.mode == "restore" ? "record" : "process start");
    steps.log(options_, "start " + id);
}

json Runtime::state(const std::string& id) const {
    fs::path d = dir(id);
    return load_record(d, id).oci_state();
}

void Runtime::kill(const std::string& id, int signal, bool all) {
    fs::path d = dir(id);
    Record r = load_record(d, id);
    if (all) {
        sys::Cgroup cg = sys::Cgroup::open_path(r.cgroup_path);
        if (signal == SIGKILL && cg.frozen()) cg.set_frozen(false);
        for (pid_t p : cg.pids()) ::kill(p, signal);
        return;
    }
    if (!r.init_alive()) throw Error(fmt::format("container {} is not running", id));
    // SIGKILL ends init, and with it the pid namespace; any other signal is the process's to handle
    // (init, its pid 1, would only forward it), or init's before a process was started.
    pid_t target = signal == SIGKILL || !r.process_pid ? r.init_pid : r.process_pid;
    if (target == r.process_pid && !sys::process_alive(target)) target = r.init_pid;
    if (!sys::send_signal(target, signal) && target != r.init_pid) sys::send_signal(r.init_pid, signal);
}

void Runtime::remove(const std::string& id, bool force) {
    fs::path d = dir(id);
    Record r;
    try {
        r = load_record(d, id);
    } catch (const Error&) {
        std::error_code ec;
        if (force && fs::exists(d, ec)) {
            sys::unmount_under(d);
            sys::remove_tree(d);
            return;
        }
        throw;
    }
    std::string status = r.status();
    if (status != "stopped" && status != "created" && !force)
        throw Error(fmt::format("cannot delete container {} that is {} (use --force)", id, status));
    // An init-less container's helpers end with init by themselves; one still there (a keeper holding
    // stage 1, a watcher in the middle of a checkpoint) is killed first: processes it traces would keep
    // init, their pid namespace's reaper, from ending. What the watcher staged is removed.
    for (auto [pid, start] :
         {std::pair{r.keeper_pid, r.keeper_start}, std::pair{r.watcher_pid, r.watcher_start}}) {
        if (!alive(pid, start)) continue;
        ::kill(pid, SIGKILL);
        for (int i = 0; i < 500 && alive(pid, start); ++i) ::usleep(2000);
    }
    if (r.watcher_pid && !r.image_dir.empty()) {
        std::error_code ec;
        fs::path staged = ilc::staging_of(r.image_dir, r.watcher_pid);
        if (fs::exists(staged, ec)) sys::remove_tree(staged);
    }
    if (r.init_alive()) {
        sys::Cgroup cg = sys::Cgroup::open_path(r.cgroup_path);
        if (cg.frozen()) cg.set_frozen(false);
        ::kill(r.init_pid, SIGKILL);
        wait_gone(r, std::chrono::seconds(10));
    }
    try {
        oci::RuntimeSpec spec = load_config(d);
        for (const auto& h : spec.hooks.poststop) {
            try {
                run_hook(h, r.oci_state("stopped"), d / "hooks.log", 0, "poststop");
            } catch (const Error&) {
                // The spec: poststop failures are logged and the deletion goes on.
            }
        }
    } catch (const Error&) {
    }
    sys::Cgroup::open_path(r.cgroup_path).remove();
    sys::unmount_under(d);
    sys::remove_tree(d);
}

std::vector<pid_t> Runtime::pids(const std::string& id) const {
    fs::path d = dir(id);
    Record r = load_record(d, id);
    return sys::Cgroup::open_path(r.cgroup_path).pids();
}

int Runtime::exec(const std::string& id, const ExecOptions& options) {
    fs::path d = dir(id);
    Record r = load_record(d, id);
    if (r.status() != "running")
        throw Error(fmt::format("cannot exec in container {} that is {}", id, r.status()));
    oci::RuntimeSpec spec = load_config(d);
    // The process object is checked by the same parser as config.json's.
    json process = json::parse(sys::read_file(options.process_json));
    json wrapper = oci::to_json(spec);
    wrapper["process"] = process;
    oci::Process proc = oci::parse(wrapper).process;
    seccomp::Filter filter = container_filter(spec);

    // The namespaces init was made with, the user namespace first (it grants the rest), mount last.
    std::vector<std::pair<int, sys::UniqueFd>> ns;
    auto add = [&](const char* type, const char* name, int flag) {
        if (spec.linux_settings.has_namespace(type))
            ns.emplace_back(
                flag, sys::open_file(fmt::format("/proc/{}/ns/{}", r.init_pid, name), O_RDONLY | O_CLOEXEC));
    };
    add("user", "user", CLONE_NEWUSER);
    add("ipc", "ipc", CLONE_NEWIPC);
    add("uts", "uts", CLONE_NEWUTS);
    add("network", "net", CLONE_NEWNET);
    add("cgroup", "cgroup", CLONE_NEWCGROUP);
    add("mount", "mnt", CLONE_NEWNS);
    // The pid namespace is entered here (it applies to children only): the child is born in it.
    sys::UniqueFd pidns = sys::open_file(fmt::format("/proc/{}/ns/pid", r.init_pid), O_RDONLY | O_CLOEXEC);
    if (::setns(pidns.get(), CLONE_NEWPID) != 0)
        throw sys::SysError("join the container's pid namespace", errno);
    auto [go_read, go_write] = sys::make_pipe();
    auto child = sys::fork_process(0);
    if (child.pid == 0) {
        go_write.reset();
        char go = 0;
        if (::read(go_read.get(), &go, 1) != 1) ::_exit(125);
        for (auto& [flag, fd] : ns)
            if (::setns(fd.get(), flag) != 0) {
                std::string line = fmt::format("initless exec: setns: {}\n", std::strerror(errno));
                (void)!::write(2, line.data(), line.size());
                ::_exit(126);
            }
        if (spec.linux_settings.has_namespace("user") &&
            (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0))
            ::_exit(124);
        sandbox::exec_process(proc, -1, filter.bpf, filter.flags);
    }
    go_read.reset();
    try {
        sys::Cgroup::open_path(r.cgroup_path).attach(child.pid);
    } catch (...) {
        ::kill(child.pid, SIGKILL);
        ::waitpid(child.pid, nullptr, 0);
        throw;
    }
    char go = 1;
    if (::write(go_write.get(), &go, 1) != 1) throw sys::SysError("start exec'd process", errno);
    go_write.reset();
    if (options.pid_file) sys::write_file_replace(*options.pid_file, std::to_string(child.pid));
    if (options.detach) return 0;
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void Runtime::pause(const std::string& id) {
    fs::path d = dir(id);
    Record r = load_record(d, id);
    if (r.status() != "running")
        throw Error(fmt::format("cannot pause container {} that is {}", id, r.status()));
    sys::Cgroup::open_path(r.cgroup_path).set_frozen(true);
}

void Runtime::resume(const std::string& id) {
    fs::path d = dir(id);
    Record r = load_record(d, id);
    if (r.status() != "paused")
        throw Error(fmt::format("cannot resume container {} that is {}", id, r.status()));
    sys::Cgroup::open_path(r.cgroup_path).set_frozen(false);
}

void Runtime::update(const std::string& id, const json& resources) {
    fs::path d = dir(id);
    Record r = load_record(d, id);
    sys::Cgroup cg = sys::Cgroup::open_path(r.cgroup_path);
    if (resources.contains("memory") && resources["memory"].contains("limit") &&
        !resources["memory"]["limit"].is_null()) {
        int64_t limit = resources["memory"]["limit"].get<int64_t>();
        if (limit > 0) cg.set_memory_limit(static_cast<uint64_t>(limit));
    }
    if (resources.contains("cpu") && resources["cpu"].contains("quota") &&
        !resources["cpu"]["quota"].is_null()) {
        int64_t quota = resources["cpu"]["quota"].get<int64_t>();
        uint64_t period = resources["cpu"].value("period", uint64_t{100000});
        if (quota > 0)
            cg.set_cpu_limit(static_cast<double>(quota) / static_cast<double>(period ? period : 100000));
    }
    if (resources.contains("pids") && resources["pids"].contains("limit") &&
        !resources["pids"]["limit"].is_null()) {
        int64_t limit = resources["pids"]["limit"].get<int64_t>();
        cg.set_pids_limit(limit > 0 ? static_cast<uint64_t>(limit) : 4194304);
    }
}

std::vector<json> Runtime::list() const {
    std::vector<json> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root_, ec)) {
        try {
            Record r = load_record(e.path(), e.path().filename().string());
            json s = r.oci_state();
            s["created"] = r.created;
            out.push_back(s);
        } catch (const std::exception&) {
        }
    }
    return out;
}

json Runtime::features() {
    std::vector<std::string> caps;
    for (int c = 0; c <= 40; ++c) {
        // Names known to the spec parser, in number order.
        static const char* const kNames[] = {"CAP_CHOWN",
                                             "CAP_DAC_OVERRIDE",
                                             "CAP_DAC_READ_SEARCH",
                                             "CAP_FOWNER",
                                             "CAP_FSETID",
                                             "CAP_KILL",
                                             "CAP_SETGID",
                                             "CAP_SETUID",
                                             "CAP_SETPCAP",
                                             "CAP_LINUX_IMMUTABLE",
                                             "CAP_NET_BIND_SERVICE",
                                             "CAP_NET_BROADCAST",
                                             "CAP_NET_ADMIN",
                                             "CAP_NET_RAW",
                                             "CAP_IPC_LOCK",
                                             "CAP_IPC_OWNER",
                                             "CAP_SYS_MODULE",
                                             "CAP_SYS_RAWIO",
                                             "CAP_SYS_CHROOT",
                                             "CAP_SYS_PTRACE",
                                             "CAP_SYS_PACCT",
                                             "CAP_SYS_ADMIN",
                                             "CAP_SYS_BOOT",
                                             "CAP_SYS_NICE",
                                             "CAP_SYS_RESOURCE",
                                             "CAP_SYS_TIME",
                                             "CAP_SYS_TTY_CONFIG",
                                             "CAP_MKNOD",
                                             "CAP_LEASE",
                                             "CAP_AUDIT_WRITE",
                                             "CAP_AUDIT_CONTROL",
                                             "CAP_SETFCAP",
                                             "CAP_MAC_OVERRIDE",
                                             "CAP_MAC_ADMIN",
                                             "CAP_SYSLOG",
                                             "CAP_WAKE_ALARM",
                                             "CAP_BLOCK_SUSPEND",
                                             "CAP_AUDIT_READ",
                                             "CAP_PERFMON",
                                             "CAP_BPF",
                                             "CAP_CHECKPOINT_RESTORE"};
        caps.emplace_back(kNames[c]);
    }
    return {
        {"ociVersionMin", "1.0.0"},
        {"ociVersionMax", kOciVersion},
        {"hooks",
         {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}},
        {"mountOptions",
         {"async",      "atime",         "bind",    "defaults", "dev",         "diratime", "dirsync",
          "exec",       "mand",          "noatime", "nodev",    "nodiratime",  "noexec",   "nomand",
          "norelatime", "nostrictatime", "nosuid",  "private",  "rbind",       "relatime", "remount",
          "ro",         "rprivate",      "rshared", "rslave",   "runbindable", "rw",       "shared",
          "slave",      "strictatime",   "suid",    "sync",     "unbindable"}},
        {"linux",
         {{"namespaces", {"cgroup", "ipc", "mount", "network", "pid", "user", "uts"}},
          {"capabilities", caps},
          {"cgroup", {{"v1", true}, {"v2", false}, {"systemd", false}, {"systemdUser", false}}},
          {"seccomp", {{"enabled", false}}},
          {"apparmor", {{"enabled", false}}},
          {"selinux", {{"enabled", false}}}}},
        {"annotations",
         {{"io.initless.writable-layer-mb", "an overlay with a private tmpfs writable layer of this size"},
          {"io.initless.network", "none | egress"}}}};
}

}  // namespace initless::runtime
