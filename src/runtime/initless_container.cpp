#include "initless_container.h"

#include "initless/runtime/runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "initless/checkpoint/checkpoint.h"
#include "initless/image/auth.h"
#include "initless/restore/restore.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/mount.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "initless/sys/tree.h"

namespace initless::runtime::initless_container {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string env_value(const oci::RuntimeSpec& spec, const std::string& name) {
    std::string value;
    for (const auto& e : spec.process.env)
        if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
            value = e.substr(name.size() + 1);  // the last one wins, as for getenv after execve
    return value;
}

// The mount at `dir` as this process sees it: its fstype and super options (mountinfo's last field).
std::optional<std::pair<std::string, std::string>> mount_at(const fs::path& dir) {
    std::string text;
    try {
        text = sys::read_file("/proc/self/mountinfo");
    } catch (const Error&) {
        return std::nullopt;
    }
    std::optional<std::pair<std::string, std::string>> found;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        std::istringstream in(line);
        std::string id, parent, devno, root, point;
        in >> id >> parent >> devno >> root >> point;
        if (point != dir.string()) continue;
        std::string word;
        while (in >> word && word != "-") {
        }
        std::string fstype, source, options;
        in >> fstype >> source >> options;
        found = std::pair{fstype, options};  // the last mount on top is what the path shows
    }
    return found;
}

// An overlay root's lower dirs (resolved: Docker names them by short links), without Docker's
// per-container init layer (<id>-init/diff: the mount points of /etc/hosts and the like, the same in
// every container); else the root's own path.
std::string root_identity(const fs::path& root) {
    std::error_code ec;
    fs::path canonical = fs::weakly_canonical(root, ec);
    if (ec) canonical = root;
    auto m = mount_at(canonical);
    if (!m || m->first != "overlay") return "dir " + canonical.string();
    std::string lowers;
    for (std::string_view rest = m->second; !rest.empty();) {
        size_t comma = rest.find(',');
        std::string_view option = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        if (option.rfind("lowerdir=", 0) != 0) continue;
        std::string_view list = option.substr(9);
        while (!list.empty()) {
            size_t colon = list.find(':');
            fs::path lower(std::string(list.substr(0, colon)));
            list = colon == std::string_view::npos ? std::string_view{} : list.substr(colon + 1);
            fs::path resolved = fs::weakly_canonical(lower, ec);
            if (ec) resolved = lower;
            std::string layer = resolved.parent_path().filename().string();
            if (layer.size() > 5 && layer.compare(layer.size() - 5, 5, "-init") == 0) continue;
            lowers += resolved.string() + "\n";
        }
    }
    return "overlay\n" + lowers;
}

// A helper's own stdio and session: nothing of the verb's caller (the shim waits for `start`'s output
// pipe to close), and no signal sent to the caller's group. Its other fds stay: the keeper needs the
// sandbox's control connection and the image's files, which the verb opened (no exec follows).
void detach_helper() {
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        ::dup2(devnull, 0);
        ::dup2(devnull, 1);
        ::dup2(devnull, 2);
        if (devnull > 2) ::close(devnull);
    }
    ::setsid();
}

void write_all_fd(int fd, const std::string& data) {
    for (size_t off = 0; off < data.size();) {
        ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        off += static_cast<size_t>(n);
    }
}

// The keeper: stage 1 now, stage 2 when `start` asks (see begin_keeper). A failed stage 1 lets init go
// at once and tells the next `start` why (which then boots the container).
[[noreturn]] void keeper_main(sandbox::Sandbox& sb, const image::Image& img, int listen_fd) {
    std::optional<restore::RestorePlan> plan;
    std::string stage1_error;
    pid_t init_pid = sb.init_pid();  // release() forgets it
    try {
        plan = restore::RestorePlan::prepare(sb, img, restore::Strategy::Cow);
    } catch (const std::exception& e) {
        plan.reset();
        stage1_error = fmt::format("restore stage 1: {}", e.what());
        try {
            sb.release();
        } catch (...) {
        }
    }
    int code = 0;
    try {
        // The restorer's death (the container killed before it was started) is reported to us, its
        // tracer, by SIGCHLD; init's own end only once we have collected it (init, the pid namespace's
        // reaper, waits for its traced children), so the signal, not init's pidfd, is what ends a wait.
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &chld, nullptr);
        sys::UniqueFd child_signal(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
        sys::UniqueFd init = sys::pidfd_open(init_pid);
        for (;;) {
            pollfd p[3] = {{listen_fd, POLLIN, 0}, {init.get(), POLLIN, 0}, {child_signal.get(), POLLIN, 0}};
            if (sys::retry_eintr([&] { return ::poll(p, plan ? 3 : 2, -1); }) < 0)
                throw sys::SysError("poll", errno);
            if ((p[1].revents & POLLIN) || (plan && (p[2].revents & POLLIN))) break;  // ended unstarted
            if (!(p[0].revents & POLLIN)) continue;
            sys::UniqueFd conn(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
            if (!conn) continue;
            std::string message;
            if (!sys::receive_message(conn.get(), message) || message != "stage2") continue;
            if (!plan) {
                sys::send_message(conn.get(), json{{"ok", false}, {"error", stage1_error}}.dump());
                ::_exit(1);
            }
            json reply;
            try {
                auto t0 = std::chrono::steady_clock::now();
                restore::Restored restored = plan->execute();
                double ms =
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
                sb.adopt(restored.process.sandbox_pid);
                reply = {{"ok", true}, {"pid", restored.process.host_pid}, {"restore_ms", ms}};
            } catch (const std::exception& e) {
                reply = {{"ok", false}, {"error", fmt::format("restore stage 2: {}", e.what())}};
                code = 1;
            }
            plan.reset();
            // Init listens again once this connection closes: a failed start boots through it.
            sb.release();
            sys::send_message(conn.get(), reply.dump());
            ::_exit(code);
        }
    } catch (...) {
        code = 2;
    }
    if (plan) {
        plan.reset();
        try {
            sb.release();
        } catch (...) {
        }
    }
    ::_exit(code);
}

constexpr int kCheckpointAttempts = 10;  // 200 ms apart

[[noreturn]] void watcher_main(const WatchJob& job, int notify_fd) {
    int code = 0;
    try {
        sys::UniqueFd init = sys::pidfd_open(job.init_pid);
        pollfd p[2] = {{notify_fd, POLLIN, 0}, {init.get(), POLLIN, 0}};
        char byte = 0;
        for (;;) {
            if (sys::retry_eintr([&] { return ::poll(p, 2, -1); }) < 0) throw sys::SysError("poll", errno);
            if (p[0].revents & POLLIN) {
                if (sys::retry_eintr([&] { return ::read(notify_fd, &byte, 1); }) == 1) break;
                ::_exit(0);  // init closed it without the phrase: the container ended
            }
            if (p[0].revents & (POLLHUP | POLLERR)) ::_exit(0);
            if (p[1].revents & POLLIN) ::_exit(0);
        }
        checkpoint::Target t;
        t.init_host_pid = job.init_pid;
        t.log_path = fmt::format("/proc/{}/fd/1", job.process_pid);  // init's relay
        t.stdin_path = fmt::format("/proc/{}/fd/0", job.init_pid);   // the shim's
        t.stderr_path = fmt::format("/proc/{}/fd/2", job.init_pid);
        t.function = "oci:" + job.id;
        t.seccomp_filter = job.filter.bpf;
        t.seccomp_flags = job.filter.flags;
        t.rw_dirs = job.rw_dirs;
        t.skip_net_sysctls = true;
        fs::create_directories(job.store);
        ::chmod(job.store.c_str(), 0700);
        image::Key key = image::Key::of_state_dir(job.store);
        std::error_code ec;
        if (fs::exists(job.image_dir, ec)) {
            notice(job.log, job.log_json, 0, "info",
                   fmt::format("container {}: snapshot {} exists already (another container made it)", job.id,
                               job.image_dir.string()));
            ::_exit(0);
        }
        // A checkpoint that fails leaves the container as it was; some failures pass by themselves (a
        // connection waiting to be accepted: a client that came as soon as the port listened), so it is
        // tried again for a while, as long as the container runs.
        checkpoint::Stats stats;
        for (int attempt = 1;; ++attempt) {
            try {
                stats = checkpoint::checkpoint(t, job.image_dir, key);
                // This process wrote the pages: the containers restored from them need not read them
                // all again to check them (image::load_verified_once).
                image::stamp_verified(job.image_dir, key);
                break;
            } catch (const std::exception&) {
                pollfd ended{init.get(), POLLIN, 0};
                if (attempt >= kCheckpointAttempts || fs::exists(job.image_dir, ec) ||
                    sys::retry_eintr([&] { return ::poll(&ended, 1, 200); }) != 0)
                    throw;
            }
        }
        notice(job.log, job.log_json, 0, "info",
               fmt::format("container {}: snapshot taken into {} ({} processes, {} MB, frozen {:.1f} ms)",
                           job.id, job.image_dir.string(), stats.processes, stats.image_bytes >> 20,
                           stats.total_ms));
    } catch (const std::exception& e) {
        std::error_code ec;
        bool other = fs::exists(job.image_dir, ec);  // a container of the same key published first
        notice(job.log, job.log_json, other ? 0 : job.init_pid, other ? "info" : "warning",
               fmt::format("container {}: no snapshot taken: {}", job.id, e.what()));
        code = other ? 0 : 1;
    }
    ::_exit(code);
}

}  // namespace

Settings settings_of(const oci::RuntimeSpec& spec) {
    Settings s;
    s.phrase = env_value(spec, "CHECKPOINT_MSG");
    std::string dirs = env_value(spec, "RW_DIRS");
    std::replace(dirs.begin(), dirs.end(), ',', ':');
    std::istringstream in(dirs);
    for (std::string d; std::getline(in, d, ':');) {
        d.erase(0, d.find_first_not_of(" \t"));
        d.erase(d.find_last_not_of(" \t") + 1);
        if (d.empty()) continue;
        fs::path p = fs::path(d).lexically_normal();
        if (!p.is_absolute() || p == "/" || p.string().find("..") != std::string::npos)
            throw Error(fmt::format("RW_DIRS: '{}' is not an absolute directory below /", d));
        s.rw_dirs.push_back(p);
    }
    return s;
}

std::string key_of(const oci::RuntimeSpec& spec, const json& config, std::string* described) {
    image::Sha256 h;
    auto line = [&](const std::string& s) {
        h.update(s);
        h.update("\n");
    };
    line("initless-oci-key 1");
    std::string root = root_identity(spec.root.path);
    if (described) *described = root;
    line("root " + root);
    line(fmt::format("readonly {}", spec.root.readonly));
    for (const auto& a : spec.process.args) line("arg " + a);
    // Sorted: Docker lists `-e` variables in a different order from one container to the next (a Go
    // map), and each order made a key of its own, so every container of the 1.3 GB dict booted.
    std::vector<std::string> env;
    for (const auto& e : spec.process.env)
        if (e.rfind("HOSTNAME=", 0) != 0) env.push_back(e);
    std::sort(env.begin(), env.end());
    for (const auto& e : env) line("env " + e);
    line("cwd " + spec.process.cwd);
    const json& process = config.value("process", json::object());
    line("user " + process.value("user", json::object()).dump());
    line("capabilities " + process.value("capabilities", json::object()).dump());
    line("noNewPrivileges " + process.value("noNewPrivileges", json(false)).dump());
    for (const auto& m : config.value("mounts", json::array()))
        line(fmt::format("mount {} {} {}", m.value("destination", ""), m.value("type", ""),
                         m.value("options", json::array()).dump()));
    const json& linux_settings = config.value("linux", json::object());
    for (const auto& n : linux_settings.value("namespaces", json::array()))
        line("namespace " + n.value("type", ""));
    line("seccomp " + linux_settings.value("seccomp", json()).dump());
    return h.hex();
}

fs::path default_store() {
    const char* env = std::getenv("INITLESS_OCI_STORE");
    return env && *env ? fs::path(env) : fs::path("/var/lib/initless/oci");
}

void discard_image(const fs::path& image_dir) {
    try {
        fs::path aside = image_dir;
        aside += fmt::format(".discarded.{}", ::getpid());
        if (::rename(image_dir.c_str(), aside.c_str()) == 0) sys::remove_tree(aside);
    } catch (...) {
    }
}

void copy_rw_dirs(const image::Image& img, pid_t init_pid, const std::vector<fs::path>& rw_dirs) {
    std::error_code ec;
    for (const auto& dir : rw_dirs) {
        fs::path rel = dir.relative_path();
        fs::path saved = img.dir / image::kRwDirsTree / rel;
        if (!fs::is_directory(saved, ec)) continue;  // not in the snapshot (RW_DIRS changed: another key)
        // Made level by level inside the container's root, never following its links out of it.
        fs::path at = "/";
        for (const auto& part : rel) {
            sys::UniqueFd parent = sys::open_in_root_of(init_pid, at.string(), O_RDONLY | O_DIRECTORY);
            if (::mkdirat(parent.get(), part.c_str(), 0755) != 0 && errno != EEXIST)
                throw sys::SysError(fmt::format("mkdir {} in the container", (at / part).string()), errno);
            at /= part;
        }
        sys::UniqueFd from = sys::open_file(saved, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        sys::UniqueFd to = sys::open_in_root_of(init_pid, "/" + rel.string(), O_RDONLY | O_DIRECTORY);
        sys::copy_tree_at(from.get(), to.get(), nullptr, "rw dir " + dir.string());
    }
}

Keeper begin_keeper(sandbox::Sandbox& sb, const image::Image& img, const fs::path& socket_path) {
    sys::UniqueFd listener = sys::listen_unix_seqpacket(socket_path);
    auto child = sys::fork_process(0);
    if (child.pid == 0) {
        detach_helper();
        keeper_main(sb, img, listener.get());
    }
    return Keeper(child.pid);
}

Keeper::~Keeper() {
    if (!pid_) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
}

Helper Keeper::keep() {
    pid_t pid = std::exchange(pid_, 0);
    return {pid, sys::proc_start_time(pid)};
}

Stage2 run_stage2(const fs::path& socket_path) {
    sys::UniqueFd conn = sys::connect_unix_seqpacket(socket_path);
    sys::send_message(conn.get(), "stage2");
    std::string reply;
    pollfd p{conn.get(), POLLIN, 0};
    if (sys::retry_eintr([&] { return ::poll(&p, 1, 60000); }) == 0)
        throw Error("restore stage 2 did not end in 60 s");
    if (!sys::receive_message(conn.get(), reply)) throw Error("the restore keeper ended without an answer");
    json r = json::parse(reply);
    if (!r.value("ok", false)) throw Error(r.value("error", std::string("restore stage 2 failed")));
    return {r.at("pid").get<pid_t>(), r.value("restore_ms", 0.0)};
}

Helper start_watcher(const WatchJob& job, sys::UniqueFd notify_read) {
    auto child = sys::fork_process(0);
    if (child.pid == 0) {
        detach_helper();
        watcher_main(job, notify_read.get());
    }
    return {child.pid, sys::proc_start_time(child.pid)};
}

fs::path staging_of(const fs::path& image_dir, pid_t pid) {
    fs::path p = image_dir;
    p += fmt::format(".tmp.{}", pid);
    return p;
}

void notice(const fs::path& log, bool log_json, pid_t init_pid, const std::string& level,
            const std::string& message) {
    try {
        if (!log.empty()) {
            std::string line = log_line(level, message, log_json);
            sys::UniqueFd f(::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
            if (f) write_all_fd(f.get(), line);
        }
        if (init_pid > 0) {
            // Non-blocking: the shim's stderr may be a FIFO nobody reads yet (the open would wait for a
            // reader) or a full pipe; the notice is then dropped, not the runtime verb held.
            sys::UniqueFd err(::open(fmt::format("/proc/{}/fd/2", init_pid).c_str(),
                                     O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK));
            if (err) write_all_fd(err.get(), "initless: " + message + "\n");
        }
    } catch (...) {
    }
}

}  // namespace initless::runtime::initless_container
