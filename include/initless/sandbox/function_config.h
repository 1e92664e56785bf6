// A function's sandbox configuration in OCI runtime-spec terms: function.toml's keys over the hardened
// defaults (DESIGN.md, "The sandbox"). What `initless spec DIR` prints and what Sandbox::prepare applies.
//
// Defaults: every namespace but time (the restorer makes its own), root inside a user namespace mapped to
// an unprivileged host range of the function's own, no capabilities, no_new_privs, a private /etc over the
// host's read-only /usr, Docker's masked and read-only paths, pids/memory/cpu limits, tmpfs /tmp and
// /dev/shm of a fixed size, a private writable layer of a fixed size, loopback-only network.
//
// host_runtimes_root() builds, once per state dir and host /etc, the directory used as root.path for
// functions without a rootfs of their own; it may be called from any thread (the build is atomic: a
// rename of a complete directory).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "initless/oci/spec.h"
#include "initless/spec/function_spec.h"

namespace initless::sandbox {

// Size of each function's id range, and where the ranges start on the host: far above any uid a
// distribution hands out, so nothing on the host is owned by a function's ids.
constexpr uint32_t kIdRangeSize = 65536;
constexpr uint32_t kIdRangesStart = 1u << 30;
constexpr uint32_t kIdRanges = 16384;  // [2^30, 2^31)

// The first host id of the function's range (a hash of its name picks one of kIdRanges slots).
uint32_t function_host_id_base(const std::string& name);

oci::RuntimeSpec function_runtime_spec(const spec::FunctionSpec& spec);

std::filesystem::path host_runtimes_root();

// The environment a function starts with: ours, then its spec's.
std::vector<std::string> function_env(const spec::FunctionSpec& spec);

}  // namespace initless::sandbox
