// Init-less containers (issue 12, item 3): a container whose process env holds CHECKPOINT_MSG is
// snapshotted once, when that phrase goes by on its stdout, into the snapshot store; every later
// container of the same key starts by a restore of it. The parts runtime.cpp's verbs use:
//   settings_of, key_of   what a container asks for, and which snapshot is its;
//   begin_keeper, run_stage2
//                         `create` forks a keeper that runs the restore's stage 1 and holds the plan
//                         (the restorer is traced, and a plan executes only on the thread that made it)
//                         until `start` asks it for stage 2 over <container>/keeper.sock;
//   start_watcher         `start` of a booted one forks a watcher that waits for init's word that the
//                         phrase went by (init relays the process's stdout, init.h) and checkpoints the
//                         container without stopping it (frozen for the checkpoint, then it goes on).
// Both helpers are processes of ours outside the container: children of the verb that forks them,
// reparented to the shim (a subreaper) when it exits, holding none of the shim's fds (their stdio is
// /dev/null, so `runc start`'s output pipe closes when the verb exits). Each ends by itself — the
// keeper after stage 2 or when init ends, the watcher after the checkpoint or when init ends — and
// `delete` kills what is left and removes a watcher's staged image. Called from one thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "initless/image/image.h"
#include "initless/oci/spec.h"
#include "initless/sandbox/sandbox.h"
#include "initless/seccomp/profile.h"

namespace initless::runtime::initless_container {

struct Settings {
    std::string phrase;                          // CHECKPOINT_MSG; empty: a plain container
    std::vector<std::filesystem::path> rw_dirs;  // RW_DIRS (colon- or comma-separated absolute dirs)
};
// From the spec's process env; throws for an RW_DIRS entry that is not an absolute path.
Settings settings_of(const oci::RuntimeSpec& spec);

// The snapshot a container of this spec restores from: hex SHA-256 of the root's identity (an
// overlay's lower dirs, Docker's per-container "-init" layer left out; else the root's path), the
// args, the env without HOSTNAME (Docker sets it per container), cwd, user, capabilities, the mounts'
// destinations, types and options (not their sources: Docker's are per container), the namespace
// types and the seccomp profile.
// `described` (may be null) receives the hashed text's first lines (the root's identity), for the log.
std::string key_of(const oci::RuntimeSpec& spec, const nlohmann::json& config,
                   std::string* described = nullptr);

// $INITLESS_OCI_STORE, else /var/lib/initless/oci.
std::filesystem::path default_store();

// Moves an unusable image out of the way (renamed, then removed) so that the next boot publishes a
// new one; never throws.
void discard_image(const std::filesystem::path& image_dir);

// Copies the image's RW_DIRS into the container whose init is `init_pid` (each dir made if missing).
void copy_rw_dirs(const image::Image& img, pid_t init_pid, const std::vector<std::filesystem::path>& rw_dirs);

struct Helper {
    pid_t pid = 0;
    uint64_t start_time = 0;
};

// Forks the keeper, which runs stage 1 (restorer spawned and seized, tables written) on a sandbox
// (prepared, detached, not released; the caller releases its own copy afterwards) and then waits, on
// `socket_path` (<container>/keeper.sock), for `start` to ask for stage 2. Stage 1 goes on while
// `create` runs the container's hooks (Docker's prestart hook takes 100-200 ms) and after it returns
// (containerd and dockerd take longer than stage 1 to call `start`): `create` does not wait for it.
// A failed stage 1 lets init go at once; the keeper answers `start` with its error, and `start`
// boots the container.
class Keeper {
  public:
    explicit Keeper(pid_t pid) : pid_(pid) {}
    Keeper(Keeper&& o) noexcept : pid_(std::exchange(o.pid_, 0)) {}
    Keeper& operator=(Keeper&&) = delete;
    // Not kept (create failed meanwhile): killed and reaped; its restorer dies with it (traced with
    // PTRACE_O_EXITKILL).
    ~Keeper();
    // The keeper goes on after this process (reparented to the shim); it ends by itself (see above).
    Helper keep();

  private:
    pid_t pid_ = 0;
};
Keeper begin_keeper(sandbox::Sandbox& sandbox, const image::Image& img,
                    const std::filesystem::path& socket_path);

struct Stage2 {
    pid_t host_pid = 0;  // the restored process
    double restore_ms = 0;
};
// Asks the keeper for stage 2 and waits for it; throws the keeper's error (it has then released
// init and exited, the restorer is gone and init waits for a start as if just created).
Stage2 run_stage2(const std::filesystem::path& socket_path);

struct WatchJob {
    std::string id;
    pid_t init_pid = 0;
    pid_t process_pid = 0;  // the started process (host pid): its stdout is init's relay
    std::filesystem::path image_dir;
    std::filesystem::path store;
    std::vector<std::filesystem::path> rw_dirs;
    seccomp::Filter filter;     // the one the process runs under
    std::filesystem::path log;  // the runtime's --log ("" for none)
    bool log_json = false;
};
// Forks the watcher, which takes `notify_read` (init writes one byte there when the phrase went by).
Helper start_watcher(const WatchJob& job, sys::UniqueFd notify_read);

// The staged image a watcher `pid` would leave if killed mid-checkpoint (image::ImageWriter's name).
std::filesystem::path staging_of(const std::filesystem::path& image_dir, pid_t pid);

// A line in the runtime's log (level "warning" or "info") and, for a warning, on the container's
// stderr (init's fd 2: the shim's), so that `docker logs` shows it. Never throws.
void notice(const std::filesystem::path& log, bool log_json, pid_t init_pid, const std::string& level,
            const std::string& message);

}  // namespace initless::runtime::initless_container
