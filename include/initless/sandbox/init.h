// The sandbox's pid 1. It is this same binary exec'd as `initless __init --control FD` right after
// clone3 made the namespaces, so it starts single-threaded and clean. It receives its setup over the
// control socket (JSON messages), builds the root, then serves requests: start the function, spawn a
// restorer, report exits. It reaps every zombie, forwards SIGTERM, and when the control socket closes
// (the controller is gone) it kills everything in the sandbox and exits, which ends the namespaces.
// A detached init (an OCI container's) also: relays the started process's stdout to its own when the
// start request asks ("relay": {"phrase"}, with a pipe's write end passed along), copying every byte and
// writing one byte to that pipe when the phrase first goes by (an init-less container's watcher waits on
// it); and adopts a restored process on request ("adopt"), whose end is then its end.
#pragma once

#include <linux/filter.h>

#include <vector>

#include "initless/oci/spec.h"

namespace initless::sandbox {

[[noreturn]] void run_init(int control_fd);

// In a fresh child inside the sandbox's namespaces: applies the spec's process (rlimits, oom score,
// capabilities, ids, no_new_privs, umask, cwd) and execs it, in a new session, with nothing open but
// stdio. Stdin is /dev/null and stdout/stderr go to `log_fd`, or with log_fd < 0 stdio stays as it
// is (an OCI runtime's container: the shim's pipes). `filter` (raw BPF, may be empty) is installed last
// before exec with no_new_privs, else before the capabilities are dropped (the kernel wants
// CAP_SYS_ADMIN then). On failure it writes why to stderr and exits 127.
[[noreturn]] void exec_process(const oci::Process& process, int log_fd, std::vector<sock_filter> filter = {},
                               unsigned filter_flags = 0);

}  // namespace initless::sandbox
