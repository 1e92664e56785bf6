#include "initless/sys/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::sys {

namespace fs = std::filesystem;
namespace {
const char* const kControllers[] = {"memory", "cpu", "pids", "freezer", "devices"};
}

fs::path Cgroup::dir(const char* controller) const {
    return fs::path(kRoot) / controller / (group_.empty() ? fs::path(kGroup) / name_ : group_);
}

Cgroup Cgroup::create_path(const fs::path& path) {
    Cgroup cg;
    cg.name_ = path.filename().string();
    cg.group_ = path.relative_path();
    if (cg.name_.empty() || cg.group_.empty())
        throw Error(fmt::format("cgroup path '{}' names no group", path.string()));
    cg.make_dirs(/*exist_ok=*/true);
    return cg;
}

Cgroup Cgroup::open_path(const fs::path& path) {
    Cgroup cg;
    cg.name_ = path.filename().string();
    cg.group_ = path.relative_path();
    for (const char* c : kControllers)
        if (fs::exists(cg.dir(c))) cg.controllers_.emplace_back(c);
    return cg;
}

void Cgroup::set_frozen(bool frozen) {
    const char* want = frozen ? "FROZEN" : "THAWED";
    write_file(dir("freezer") / "freezer.state", want);
    for (int i = 0; i < 1000; ++i) {
        std::string state = read_file(dir("freezer") / "freezer.state");
        if (state.rfind(want, 0) == 0) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        write_file(dir("freezer") / "freezer.state", want);
    }
    throw Error(fmt::format("cgroup {}: freezer did not reach {}", name_, want));
}

bool Cgroup::frozen() const {
    std::error_code ec;
    if (!fs::exists(dir("freezer") / "freezer.state", ec)) return false;
    return read_file(dir("freezer") / "freezer.state").rfind("FROZEN", 0) == 0;
}

Cgroup Cgroup::create(const std::string& name) {
    Cgroup cg;
    cg.name_ = name;
    cg.make_dirs(/*exist_ok=*/false);
    return cg;
}

// The group's directory under every mounted v1 controller, with its parents. A parent may vanish
// between our mkdir of it and of the group: another initless process removing the shared initless/
// parent as its last group goes (Cgroup::remove). The group's mkdir then fails with ENOENT, and
// the parents are made again.
void Cgroup::make_dirs(bool exist_ok) {
    owned_ = true;
    try {
        for (const char* c : kControllers) {
            fs::path root = fs::path(kRoot) / c;
            if (!fs::exists(root / "cgroup.procs")) continue;
            fs::path d = dir(c);
            // Not fs::create_directories: its mkdir of a parent that another process makes and removes
            // meanwhile fails with "File exists" (EEXIST, then not a directory when it looks again).
            for (int attempt = 0;; ++attempt) {
                fs::path at = root, failed = d;
                int err = 0;
                for (const auto& part : d.parent_path().lexically_relative(root)) {
                    at /= part;
                    if (::mkdir(at.c_str(), 0755) != 0 && errno != EEXIST) {
                        err = errno;
                        failed = at;
                        break;
                    }
                }
                if (err == 0) {
                    if (::mkdir(d.c_str(), 0755) == 0 || (errno == EEXIST && exist_ok)) break;
                    err = errno;
                }
                if (err != ENOENT || attempt == 50)
                    throw SysError(fmt::format("mkdir {}", failed.string()), err);
            }
            controllers_.emplace_back(c);
        }
    } catch (...) {
        remove();
        throw;
    }
    if (controllers_.empty()) throw Error("no cgroup v1 controller found under /sys/fs/cgroup");
}

Cgroup Cgroup::open(const std::string& name) {
    Cgroup cg;
    cg.name_ = name;
    for (const char* c : kControllers)
        if (fs::exists(cg.dir(c))) cg.controllers_.emplace_back(c);
    return cg;
}

std::vector<std::string> Cgroup::list() {
    std::set<std::string> names;
    for (const char* c : kControllers) {
        fs::path group = fs::path(kRoot) / c / kGroup;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(group, ec))
            if (e.is_directory()) names.insert(e.path().filename().string());
    }
    return {names.begin(), names.end()};
}

Cgroup::Cgroup(Cgroup&& o) noexcept
    : name_(std::move(o.name_)),
      group_(std::move(o.group_)),
      controllers_(std::move(o.controllers_)),
      owned_(std::exchange(o.owned_, false)) {
    o.name_.clear();
    o.controllers_.clear();
}

Cgroup& Cgroup::operator=(Cgroup&& o) noexcept {
    if (this != &o) {
        try {
            if (owned_) remove();
        } catch (...) {
        }
        name_ = std::move(o.name_);
        group_ = std::move(o.group_);
        controllers_ = std::move(o.controllers_);
        owned_ = std::exchange(o.owned_, false);
        o.name_.clear();
        o.controllers_.clear();
    }
    return *this;
}

Cgroup::~Cgroup() {
    if (!owned_) return;
    try {
        remove();
    } catch (...) {
    }
}

void Cgroup::set_memory_limit(uint64_t bytes) {
    write_file(dir("memory") / "memory.limit_in_bytes", std::to_string(bytes));
}

void Cgroup::set_cpu_limit(double cpus) {
    const uint64_t period = 100000;
    write_file(dir("cpu") / "cpu.cfs_period_us", std::to_string(period));
    write_file(dir("cpu") / "cpu.cfs_quota_us",
               std::to_string(static_cast<uint64_t>(std::ceil(cpus * period))));
}

void Cgroup::set_pids_limit(uint64_t max) {
    write_file(dir("pids") / "pids.max", std::to_string(max));
}

void Cgroup::set_device_rules(const std::vector<std::pair<bool, std::string>>& rules) {
    if (std::find(controllers_.begin(), controllers_.end(), "devices") == controllers_.end())
        throw Error(fmt::format("cgroup {}: no devices controller to apply a device list with", name_));
    for (const auto& [allow, rule] : rules)
        write_file(dir("devices") / (allow ? "devices.allow" : "devices.deny"), rule);
}

void Cgroup::attach(pid_t pid) {
    for (const auto& c : controllers_) write_file(dir(c.c_str()) / "cgroup.procs", std::to_string(pid));
}

std::vector<pid_t> Cgroup::pids() const {
    std::set<pid_t> out;
    for (const auto& c : controllers_) {
        std::error_code ec;
        if (!fs::exists(dir(c.c_str()) / "cgroup.procs", ec)) continue;
        std::istringstream in(read_file(dir(c.c_str()) / "cgroup.procs"));
        pid_t p;
        while (in >> p) out.insert(p);
    }
    return {out.begin(), out.end()};
}

bool Cgroup::oom_killed() const {
    std::istringstream in(read_file(dir("memory") / "memory.oom_control"));
    std::string key;
    uint64_t value;
    while (in >> key >> value)
        if (key == "oom_kill") return value > 0;
    return false;
}

void Cgroup::remove() {
    if (name_.empty()) return;
    // A frozen group cannot die: thaw it first.
    std::error_code ec;
    if (fs::exists(dir("freezer") / "freezer.state", ec)) {
        try {
            write_file(dir("freezer") / "freezer.state", "THAWED");
        } catch (const Error&) {
        }
    }
    std::string failure;
    for (int attempt = 0; attempt < 200; ++attempt) {
        try {
            for (pid_t p : pids()) ::kill(p, SIGKILL);
        } catch (const Error&) {
            // Unreadable (a process short of fds): an empty group still goes, and rmdir says if not.
        }
        failure.clear();
        for (const auto& c : controllers_) {
            fs::path d = dir(c.c_str());
            if (::rmdir(d.c_str()) != 0 && errno != ENOENT)
                failure = fmt::format("rmdir {}: {}", d.string(), std::strerror(errno));
        }
        if (failure.empty()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!failure.empty()) throw Error(failure);
    // The shared initless/ parent goes when its last group does; another instance may still hold it.
    // A cgroupsPath's parents (/docker) belong to whoever named them and stay.
    if (group_.empty())
        for (const auto& c : controllers_) ::rmdir((fs::path(kRoot) / c / kGroup).c_str());
    name_.clear();
    controllers_.clear();
}

MigrationWarmup::MigrationWarmup() noexcept {
    std::string procs;
    try {
        std::istringstream lines(read_file("/proc/self/cgroup"));
        for (std::string line; std::getline(lines, line);) {
            auto a = line.find(':'), b = line.find(':', a + 1);
            if (a == std::string::npos || b == std::string::npos) continue;
            if (line.substr(a + 1, b - a - 1) == "memory")
                procs = fmt::format("{}/memory{}/cgroup.procs", Cgroup::kRoot, line.substr(b + 1));
        }
    } catch (...) {
        return;
    }
    if (procs.empty()) return;
    pid_ = ::fork();
    if (pid_ == 0) {  // raw calls only: "0" is the writer itself, moved to where it already is
        int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd >= 0 && ::write(fd, "0", 1) == 1) ::_exit(0);
        ::_exit(1);
    }
}

MigrationWarmup::~MigrationWarmup() {
    if (pid_ > 0) {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

}  // namespace initless::sys
