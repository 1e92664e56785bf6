// Building a function's snapshot: boot it in a sandbox, wait for its ready phrase, send the spec's
// warmup requests, checkpoint it, restore the staged image once in a sandbox of its own (an image
// that cannot be restored and answer is never published; the pages that trial's request touched
// become the image's working set), then publish it. Used by `initless snapshot` and by the daemon's
// deploy.
// Threads: everything runs on the calling thread, which ptrace-attaches to the function (checkpoint)
// and to the trial restorer; it blocks for the function's boot (bounded by the spec's timeout_s) and
// the checkpoint. `progress` is called on that thread after each step. Throws initless::Error (a
// checkpoint::ContractError for a contract violation) naming the step; on any failure every sandbox
// it made is torn down and nothing is published.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "initless/checkpoint/checkpoint.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/unique_fd.h"

namespace initless::controller {

struct SnapshotResult {
    std::filesystem::path image;
    double boot_ms = 0;        // sandbox prepared and the command started
    double ready_ms = 0;       // start until the ready phrase
    double warmup_ms = 0;      // the spec's warmup requests
    double checkpoint_ms = 0;  // freeze, dump, contract check (the trial restore excluded)
    double trial_ms = 0;       // trial restore, one request, working set recorded
    double restore_ms = 0;     // of which the restore itself (both stages): a cold start's cost
    double publish_ms = 0;     // fsync and rename
    double total_ms = 0;
    uint64_t working_set_pages = 0;
    checkpoint::Stats stats;
};

// Steps, in order: "boot", "ready", "warmup", "checkpoint", "trial-restore", "publish".
using SnapshotProgress = std::function<void(const std::string& step, double ms)>;

// Given a pidfd of each sandbox's init as it is made (the function's, the trial restore's): a caller
// that must end the build early (a daemon shutting down) kills them, and every wait here then ends.
using SandboxStarted = std::function<void(sys::UniqueFd init_pidfd)>;

// Publishes the image at `image` (which must not exist yet), authenticated under `key`.
// `workingset_request` is the GET path sent to the trial restore.
SnapshotResult build_snapshot(const spec::FunctionSpec& spec, const std::filesystem::path& image,
                              const image::Key& key, const std::string& workingset_request = "/",
                              const SnapshotProgress& progress = {}, const SandboxStarted& started = {});

}  // namespace initless::controller
