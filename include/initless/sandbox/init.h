// The sandbox's pid 1. It is this same binary exec'd as `initless __init --control FD` right after
// clone3 made the namespaces, so it starts single-threaded and clean. It receives its setup over the
// control socket (JSON messages), builds the root, then serves requests: start the function, spawn a
// restorer, report exits. It reaps every zombie, forwards SIGTERM, and when the control socket closes
// (the controller is gone) it kills everything in the sandbox and exits, which ends the namespaces.
#pragma once

namespace initless::sandbox {

[[noreturn]] void run_init(int control_fd);

}  // namespace initless::sandbox
