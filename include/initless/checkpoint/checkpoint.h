// Checkpoint: freezes the function's process tree (every thread of every process below the sandbox's
// init, under ptrace), reads its whole state, checks the init-less contract, and publishes an image
// (see image/image.h). The processes are left exactly as they were and resumed when this returns or
// throws (queued socket data is peeked, unread pipe data is read and written back while frozen).
//
// Contract violations throw ContractError naming the process, the fd or mapping and the rule broken:
// an established connection, a regular file open for writing, a deleted or private memfd mapping, an
// fd kind the engine cannot recreate (io_uring, inotify, ...), a pipe or socket pair to a process
// outside the snapshot, a process already being traced, a zombie or stopped process, a session or
// process group whose leader is gone. Never a partial image.
//
// Blocking; any thread may call it (it seizes, reads and releases the tree on the calling thread),
// one checkpoint of a sandbox at a time. How each kind of state is read: src/state/kinds.h.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "initless/image/auth.h"
#include "initless/sys/error.h"

namespace initless::checkpoint {

using ContractError = initless::ContractError;  // defined beside Error: the kinds of state throw it

struct Target {
    pid_t init_host_pid = 0;          // the sandbox's init; every process below it is checkpointed
    std::filesystem::path log_path;   // fds pointing here are the instance's stdio log
    std::filesystem::path upper_dir;  // the sandbox's writable layer; empty: none (an OCI container's root)
    std::string function;
    std::filesystem::path function_dir;
    uint16_t port = 0;
    // The filter the sandbox installed in the function (Sandbox::seccomp_filter): each thread must
    // run under exactly this one (none when empty); the image records it for the restore.
    std::vector<sock_filter> seccomp_filter;
    unsigned seccomp_flags = 0;
    // The strict contract: an established TCP connection fails the checkpoint instead of being
    // restored as a reset connection (function.toml `refuse_tcp_connections`).
    bool refuse_tcp_connections = false;
    // An OCI container's stdin and stderr (e.g. /proc/PID/fd/0 of its process): fds on the same file
    // or pipe are restored from the restorer's fds 0 and 2 (the new container's); empty: none.
    std::filesystem::path stdin_path, stderr_path;
    // Directories of the function (paths inside its root) copied while frozen into the image's
    // kRwDirsTree, at their paths: an OCI container's RW_DIRS, each restored container's own copy.
    std::vector<std::filesystem::path> rw_dirs;
    // The network namespace's sysctls are not the function's to keep: an OCI container's caller
    // (Docker's libnetwork) sets them in every new container, where /proc/sys is read-only.
    bool skip_net_sysctls = false;
};

struct Stats {
    uint64_t image_bytes = 0;  // allocated on disk
    uint64_t pages_written = 0, zero_pages_skipped = 0;
    uint64_t processes = 0, vmas = 0, threads = 0, fds = 0;
    double freeze_ms = 0, dump_ms = 0, total_ms = 0;
    // State the image restores differently from how it was, one line each (a TCP connection restored
    // reset, UDP datagrams dropped): the snapshot's output lists them.
    std::vector<std::string> notes;
};

// The image is authenticated under `key` (image/auth.h). The writable layer and the sandbox's /tmp
// and /dev/shm are copied while the tree is frozen, never following a symlink in them (a device node
// there is refused, a FIFO or socket skipped). `before_publish` runs on the complete staged image
// just before it is renamed into place (the snapshot verb records the working set there); if it
// throws, nothing is published.
Stats checkpoint(const Target& target, const std::filesystem::path& image_dir, const image::Key& key,
                 const std::function<void(const std::filesystem::path& staging)>& before_publish = {});

}  // namespace initless::checkpoint
