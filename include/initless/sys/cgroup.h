// A cgroup of our own across the v1 controllers this machine mounts (memory, cpu, pids, freezer,
// devices) at /sys/fs/cgroup/<ctrl>/initless/<name>. Only cgroups created here are ever written or removed.
// `remove` kills what is left inside and rmdirs every controller's directory.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace initless::sys {

class Cgroup {
  public:
    static constexpr const char* kRoot = "/sys/fs/cgroup";
    static constexpr const char* kGroup = "initless";

    Cgroup() = default;
    static Cgroup create(const std::string& name);
    // An existing group by name (for gc), not owned: dropping it leaves the group alone; call
    // remove() to delete it. Controllers whose directory is missing are skipped.
    static Cgroup open(const std::string& name);
    static std::vector<std::string> list();  // names under any controller's initless/ dir
    // A group at `path` under each controller's root (an OCI runtime spec's cgroupsPath, such as
    // /docker/<id>), parents made as needed; owned like `create`'s. `open_path` finds an existing one.
    static Cgroup create_path(const std::filesystem::path& path);
    static Cgroup open_path(const std::filesystem::path& path);

    // Gives up ownership: the group outlives this object (a container's, removed by `delete`).
    void release() { owned_ = false; }
    // The freezer's FROZEN or THAWED; waits until the kernel reports the state reached.
    void set_frozen(bool frozen);
    bool frozen() const;

    Cgroup(Cgroup&& o) noexcept;
    Cgroup& operator=(Cgroup&& o) noexcept;
    Cgroup(const Cgroup&) = delete;
    ~Cgroup();

    void set_memory_limit(uint64_t bytes);
    void set_cpu_limit(double cpus);
    void set_pids_limit(uint64_t max);
    // The v1 devices controller's list, written in order: each rule is (allow, "a" or "c|b MAJ:MIN
    // ACCESS" with * for any number) to devices.allow or devices.deny. Throws if there is no devices
    // controller, so that a container that asked for a device list never runs without one.
    void set_device_rules(const std::vector<std::pair<bool, std::string>>& rules);
    void attach(pid_t pid);
    std::vector<pid_t> pids() const;
    bool oom_killed() const;  // memory.oom_control reports an OOM kill happened
    void remove();            // idempotent; kills members first
    const std::string& name() const { return name_; }
    bool empty() const { return name_.empty(); }

  private:
    std::filesystem::path dir(const char* controller) const;
    void make_dirs(bool exist_ok);  // create's and create_path's mkdirs; removes what it made on failure
    std::string name_;
    std::filesystem::path group_;  // under each controller's root: initless/<name>, or a cgroupsPath
    std::vector<std::string> controllers_;
    bool owned_ = false;  // created here: removed with this object
};

// The first migration of a task between cgroups after the system's cgroups were left alone for a
// while waits one RCU grace period (the kernel's cgroup_threadgroup_rwsem leaving its fast mode):
// 7-16 ms measured here, against 0.2 ms for a migration made within ~10 ms of another. A
// MigrationWarmup starts that wait at once in a child process of its own (which makes a no-op
// migration into the memory cgroup it is in, and exits), so that the caller's attach a few
// milliseconds later finds the lock already in its slow mode. For short-lived callers whose attach is
// on a latency path (the OCI runtime's create). A child, not a thread: the caller stays
// single-threaded for the forks it makes next. Never throws; the destructor reaps the child.
class MigrationWarmup {
  public:
    MigrationWarmup() noexcept;
    ~MigrationWarmup();
    MigrationWarmup(const MigrationWarmup&) = delete;
    MigrationWarmup& operator=(const MigrationWarmup&) = delete;

  private:
    pid_t pid_ = -1;
};

}  // namespace initless::sys
