// The function spec (`function.toml`, keys in DESIGN.md): parsed, validated and defaulted.
// `load` throws initless::Error naming the file, line and key for any unknown key, wrong type,
// out-of-range value or missing required key (`command`, `ready`). `name` defaults to the
// directory's name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace initless::spec {

struct FunctionSpec {
    std::filesystem::path dir;         // absolute directory holding function.toml; /function inside
    std::string name;                  // [a-z0-9][a-z0-9_-]*, at most 63 chars
    std::vector<std::string> command;  // argv, non-empty; run with cwd /function
    std::map<std::string, std::string> env;
    std::string ready;  // phrase printed on stdout when initialised, non-empty
    uint16_t port = 9000;
    // Overlay lower layer, read-only. Empty: the host's runtimes (its /usr, read-only) under a private
    // /etc made by the sandbox, never the host's own root.
    std::filesystem::path rootfs;
    std::vector<std::filesystem::path> rw_dirs;  // absolute paths inside the sandbox
    uint64_t memory_mb = 512;
    double cpus = 1.0;
    uint32_t pids_max = 1024;          // processes and threads together (a fork bomb stops here)
    uint32_t writable_layer_mb = 256;  // the private writable layer above the root (a tmpfs)
    uint32_t tmp_mb = 64;              // /tmp and /dev/shm, each (tmpfs, charged to the memory limit)
    std::string network = "none";      // none: loopback only | egress: outbound through NAT
    uint32_t concurrency = 1;
    uint32_t max_instances = 10;
    uint32_t timeout_s = 60;
    uint32_t prestart = 1;              // sandboxes kept prepared (restore stage 1 done) by `serve`
    uint32_t prestart_max_age_s = 300;  // a prepared sandbox older than this is replaced (its clock
                                        // offsets were fixed when it was prepared)
    uint32_t queue_max = 1000;          // requests waiting for an instance; beyond: 503
    uint32_t queue_timeout_ms = 30000;  // longest wait for an instance; then 504
    std::string restore = "auto";       // auto | eager | cow | lazy | prefetch
    uint32_t warmup = 0;                // GET / requests sent before the snapshot
    int restore_signal = 0;             // sent once restored (opt-in notice, e.g. to reseed); 0: none
    std::string seccomp = "default";    // default (seccomp::function_default()) | unconfined (debugging only)
    // An established TCP connection makes the snapshot fail (the strict contract) instead of being
    // restored as a reset connection the function must reconnect.
    bool refuse_tcp_connections = false;
};

// `path` is a function directory or a function.toml file.
FunctionSpec load(const std::filesystem::path& path);

}  // namespace initless::spec
