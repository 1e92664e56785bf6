// A sandbox for one function instance, configured by an OCI runtime spec (oci::RuntimeSpec; a
// function's comes from function_runtime_spec, function_config.h), in two stages.
//   prepare(): the spec's namespaces (a user namespace whose id maps are written before init runs;
//              the cgroup namespace made by init once it is in its cgroup), a cgroup with the spec's
//              limits, the root (root.path, under an overlay whose writable layer is a tmpfs of its own
//              when the spec's io.initless.writable-layer-mb says so), the spec's mounts in order, its
//              devices (host nodes bound in), masked and read-only paths, hostname, loopback up, and
//              for io.initless.network = egress a slirp4netns outside; our init as pid 1, waiting.
//              This is the pre-started stage a pool keeps.
//   start():   init runs the spec's process as pid 2 (rlimits, ids, capabilities, no_new_privs,
//              umask, cwd as the spec says), the seccomp filter installed as the last step before
//              exec, stdout/stderr to the instance log.
//   spawn_restorer(): instead of start, init makes an empty process at a chosen pid for `restore`.
// Init gets the files it mounts as fds opened through its own /proc/PID/root: as root of a user
// namespace it may not walk the state dir. Mounts live only in the sandbox's mount namespace, but the
// writable layer's tmpfs is mounted in ours (so a checkpoint reads it) under the instance dir.
// `teardown` (and the destructor) kills the tree, stops slirp4netns, unmounts the layer and removes
// the cgroup and the instance directory; if the controller dies, init sees its control socket close
// and kills the tree, slirp4netns sees its exit pipe close, and `collect_garbage` removes the rest.
// Not thread-safe: one thread at a time per Sandbox.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "initless/oci/spec.h"
#include "initless/seccomp/profile.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/cgroup.h"
#include "initless/sys/unique_fd.h"

namespace initless::sandbox {

// Where instances keep their upper dirs and logs: $INITLESS_STATE_DIR or /run/initless.
std::filesystem::path state_dir();
// The binary exec'd as the sandbox's init: $INITLESS_INIT_BINARY, or this executable (programs other
// than `initless` that link the library, such as tests, set the variable to build/initless).
std::string init_binary_path();

struct SandboxOptions {
    // Copied into the upper dir before the overlay is mounted (a snapshot's writable layer).
    std::optional<std::filesystem::path> upper_seed;
    // Instead of upper_seed: fills the upper dir (holding only the dirs the sandbox makes for the
    // function) before the overlay is mounted. A restore
    // copies an image's writable layer this way, checking it against the image's MAC as it copies.
    std::function<void(const std::filesystem::path& upper)> seed_upper;
    // An OCI runtime's container (src/runtime) rather than a function instance:
    //   id            the instance's id (else one is made from the function's name);
    //   instance_dir  its directory (else state_dir()/instances/<id>, which collect_garbage watches);
    //   cgroup_path   its cgroup at this path under each controller (else initless/<id>);
    //   detached      init outlives this object (see release()): it then serves one connection at a
    //                 time on <instance_dir>/init.sock, the process it starts keeps init's stdio (the
    //                 caller's), and init exits with that process's exit status (128+signal if killed)
    //                 once it ends, killing what is left, so that the process's end is init's end.
    //   seccomp_filter the filter the container's process runs under (its config.json's linux.seccomp),
    //                 instead of the function spec's: what a restore installs and checks an image against.
    std::string id;
    std::optional<std::filesystem::path> instance_dir;
    std::optional<seccomp::Filter> seccomp_filter;
    std::optional<std::filesystem::path> cgroup_path;
    bool detached = false;
    // Called as prepare finishes each of its parts ("dirs", "cgroup", "init forked", "init setup":
    // init's mounts and pivot_root), for a caller that times them (the OCI runtime's --debug).
    std::function<void(const char* part)> on_part;
};

struct ExitReport {
    pid_t pid = 0;   // inside the sandbox
    int status = 0;  // as from waitpid
    std::string describe() const;
};

// Shifts of CLOCK_MONOTONIC and CLOCK_BOOTTIME for a restorer's time namespace (see spawn_restorer).
struct ClockOffsets {
    int64_t monotonic_ns = 0, boottime_ns = 0;
};

struct ProcessHandle {
    pid_t host_pid = 0;  // in the controller's pid namespace
    pid_t sandbox_pid = 0;
    sys::UniqueFd pidfd;
};

class Sandbox {
  public:
    // The function's sandbox: function_runtime_spec(spec) (function_config.h).
    static Sandbox prepare(const spec::FunctionSpec& spec, const SandboxOptions& options = {});
    // A sandbox configured by `runtime`; `spec` names the instance and gives its port and rw_dirs.
    static Sandbox prepare(const oci::RuntimeSpec& runtime, const spec::FunctionSpec& spec,
                           const SandboxOptions& options = {});

    Sandbox(Sandbox&&) noexcept;
    Sandbox& operator=(Sandbox&&) noexcept;
    ~Sandbox();

    ProcessHandle start();
    // An empty child of init waiting in pause() with pid `sandbox_pid`, in its own session, with an
    // anonymous read-write-execute mapping of `stub_size` bytes at `stub_addr`, stdio on the log,
    // and `pages_fd` (an image's pages file) as its fd 3: the raw material of a restore. It also
    // touches `reserve_bytes` of anonymous memory, which the restore frees and reuses warm.
    // With non-zero `clock_offsets` it is made in a new time namespace whose CLOCK_MONOTONIC and
    // CLOCK_BOOTTIME are shifted by them (so that a restored process's clocks continue from its
    // checkpoint); if the kernel refuses, this throws. A `uffd_device_fd` (/dev/userfaultfd opened by
    // us) becomes its fd 4: inside the sandbox's user namespace the userfaultfd syscall may only
    // make a user-mode-only userfaultfd, the device's USERFAULTFD_IOC_NEW makes a full one.
    static constexpr int kRestorerPagesFd = 3;
    static constexpr int kRestorerUffdDeviceFd = 4;
    ProcessHandle spawn_restorer(pid_t sandbox_pid, uint64_t stub_addr, uint64_t stub_size, int pages_fd,
                                 uint64_t reserve_bytes = 0, ClockOffsets clock_offsets = {},
                                 int uffd_device_fd = -1);

    // Waits until the log holds `phrase`; throws with the log's tail if the function exits first or
    // `timeout` passes.
    void wait_ready(const std::string& phrase, std::chrono::milliseconds timeout);
    // Exit of a process init reported, if any arrived (non-blocking).
    std::optional<ExitReport> poll_exit();

    // TCP to 127.0.0.1:port inside the sandbox, accepted within `timeout` (sys::connect_in_netns).
    sys::UniqueFd connect(uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
    void teardown();
    // Detached sandboxes only: makes the process a restore made (spawn_restorer's, by its pid in the
    // sandbox) the container's process, whose end is init's end. If it has ended already, so has init
    // (and this throws, init being gone).
    void adopt(pid_t sandbox_pid);
    // Detached sandboxes only: lets init, its cgroup and the instance dir live on without this
    // object (a runtime's `create` exits and leaves the container to its `start`, `kill`, `delete`).
    void release();
    std::string log_tail(size_t bytes = 2000) const;

    const std::string& id() const { return id_; }
    const std::filesystem::path& dir() const { return dir_; }
    // The writable layer (a tmpfs mounted on the host) and its overlay upper dir.
    std::filesystem::path layer_dir() const { return dir_ / "layer"; }
    std::filesystem::path upper_dir() const { return dir_ / "layer" / "upper"; }
    // The function's stdout and stderr; a link to layer/log when there is a writable layer.
    std::filesystem::path log_path() const { return dir_ / "log"; }
    pid_t init_pid() const { return init_pid_; }
    // A pidfd of init of the caller's own (another thread may signal it, with no race on this object's
    // fds): killing init kills every process of the sandbox.
    sys::UniqueFd init_pidfd() const;
    // What each thread of the sandbox is doing (sys::describe_processes), for an error about a function
    // that stopped answering.
    std::string describe_processes() const;
    int netns_fd() const { return netns_.get(); }
    const sys::Cgroup& cgroup() const { return cgroup_; }
    const spec::FunctionSpec& spec() const { return spec_; }
    const oci::RuntimeSpec& runtime_spec() const { return runtime_; }
    // The host ids of root of the sandbox's user namespace ({0, 0} without one): what files made for
    // the function from outside (a restore's copy of /tmp) must be created as.
    std::pair<uid_t, gid_t> root_ids() const;
    // The filter start() has init install (seccomp::filter_for(spec)): a restore installs the same,
    // the checkpoint accepts only it. Empty for `seccomp = "unconfined"`.
    const seccomp::Filter& seccomp_filter() const { return seccomp_filter_; }
    // For a caller that learns the filter only after prepare (the OCI runtime loads the snapshot that
    // holds it while the sandbox is prepared): before start() or a restore's stage 1.
    void set_seccomp_filter(seccomp::Filter filter) { seccomp_filter_ = std::move(filter); }

  private:
    Sandbox() = default;
    std::string request(const std::string& message, std::vector<sys::UniqueFd>* fds,
                        std::span<const int> send_fds = {});
    ProcessHandle request_process(const std::string& message, std::span<const int> send_fds);
    void handle_event(const std::string& message);
    void start_egress();
    void stop_egress();

    spec::FunctionSpec spec_;
    oci::RuntimeSpec runtime_;
    seccomp::Filter seccomp_filter_;
    std::string id_;
    std::filesystem::path dir_;
    pid_t init_pid_ = 0;
    sys::UniqueFd init_pidfd_;
    sys::UniqueFd control_;
    sys::UniqueFd netns_;
    sys::Cgroup cgroup_;
    std::vector<ExitReport> exits_;
    pid_t network_pid_ = 0;  // slirp4netns, for network = "egress"
    sys::UniqueFd network_pidfd_;
    sys::UniqueFd network_exit_;
    bool detached_ = false;
};

// The request that has init start the spec's process under `filter` (empty: none); the filter travels as
// raw BPF in hex. Throws if it is too big for one control message.
std::string start_request(const seccomp::Filter& filter);
// The path of a detached init's control socket in its instance dir.
std::filesystem::path control_socket_path(const std::filesystem::path& instance_dir);
// One request to a detached init (see SandboxOptions::detached) over its control socket: the reply,
// and its fds. Throws the init's error, or if it is gone.
std::string request_detached(const std::filesystem::path& instance_dir, const std::string& message,
                             std::vector<sys::UniqueFd>* fds = nullptr, std::span<const int> send_fds = {});

// Removes instances whose controller is gone: kills a leftover init, removes cgroups and dirs.
// Returns a line per thing removed. `ours_too`: also the instances this process owns, for a caller
// that has torn down every sandbox it made (the daemon at its end: a teardown that failed, say for
// want of fds, left its dir until the next start).
std::vector<std::string> collect_garbage(bool ours_too = false);

}  // namespace initless::sandbox
