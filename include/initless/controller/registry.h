// The daemon's persistent function registry, in its state dir (on disk; the registry survives a
// restart):
//   functions/<name>/current.json   the deployed version: paths, deploy time, measured costs
//   functions/<name>/v-<id>/code/   a copy of the function's directory as deployed (the sandbox's
//                                   /function; a copy, so later edits of the source cannot break
//                                   the snapshot's mapped-file checks)
//   functions/<name>/v-<id>/image/  its snapshot, or, with the tmpfs image store,
//                                   /dev/shm/initless-images/<state-id>/<name>/v-<id>
//   functions/<name>/log            what the function's instances printed, each line prefixed with
//                                   the instance id
// A deploy stages a new version and commits it by writing current.json atomically; anything else
// found at start (a version not current, a staged one a killed daemon left) is removed.
// Not thread-safe: the controller serialises calls per function (one deploy per function at once)
// and calls log methods under the function's log mutex.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "initless/spec/function_spec.h"

namespace initless::controller {

struct RegistryEntry {
    std::string name;
    std::filesystem::path version_dir, code_dir, image_dir;
    std::string deployed_at;  // UTC, ISO 8601
    double boot_ms = 0;       // measured at deploy: boot until ready
    double restore_ms = 0;    // measured at deploy: the trial restore (both stages, cow), without its request
    double image_mb = 0;
    nlohmann::json snapshot;  // the deploy's step timings
};

struct StagedEntry {
    RegistryEntry entry;
};

class Registry {
  public:
    Registry(std::filesystem::path state_dir, bool tmpfs_images);

    std::vector<RegistryEntry> load_all() const;
    void remove_leftovers() const;

    // A new version of `source`'s function with its directory copied in (no image yet).
    StagedEntry stage(const spec::FunctionSpec& source) const;
    // Makes the staged version current; returns the previous current one (name empty if none).
    RegistryEntry commit(const StagedEntry& staged) const;
    void discard(const StagedEntry& staged) const;
    void remove_version(const RegistryEntry& entry) const;
    void remove_function(const RegistryEntry& entry) const;
    // Forgets the function at once: its current.json (a restart no longer loads it) and its log (a
    // deploy of the same name starts a new one). Its version's files stay for instances still draining.
    void unregister(const std::string& name) const;

    std::filesystem::path log_path(const std::string& name) const;
    // Appends to the function's log, cutting it to its newer half once it passes `max_bytes`.
    void append_log(const std::string& name, const std::string& data, uint64_t max_bytes) const;

  private:
    std::filesystem::path function_dir(const std::string& name) const {
        return state_dir_ / "functions" / name;
    }
    std::filesystem::path image_root(const std::string& name) const;
    std::filesystem::path state_dir_;
    bool tmpfs_images_;
    std::filesystem::path tmpfs_root_;
};

}  // namespace initless::controller
