// The OCI runtime spec's config.json (runtime-spec v1.x), as the one configuration model of a sandbox.
//
// Owns nothing but values: parse/serialise with the spec's field names, and validate. Any thread.
//
// What is modelled is what a Linux container needs and the sandbox applies (process, root, hostname,
// mounts, hooks, linux.{namespaces, uidMappings, gidMappings, devices, resources, cgroupsPath,
// maskedPaths, readonlyPaths, seccomp, sysctl}, annotations). Following the spec's extensibility rule,
// unknown properties are ignored rather than refused; a known property of the wrong type or with a
// value outside its domain is an error naming the property's path ("linux.namespaces[2].type: ...").
// `seccomp` is kept as the spec's JSON object here and compiled by the seccomp component.
//
// Extensions of ours travel as annotations (the spec's place for them), all under "io.initless.":
//   io.initless.writable-layer-mb  an overlay with a private writable layer of this size (tmpfs) is put
//                                   above root.path; without it root.path itself is the root (Docker
//                                   hands us an overlay it made already).
//   io.initless.network            "none" (loopback only) or "egress".
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace initless::oci {

struct User {
    uint32_t uid = 0, gid = 0;
    std::optional<uint32_t> umask;
    std::vector<uint32_t> additional_gids;
};

// Capability names as the spec writes them ("CAP_NET_BIND_SERVICE").
struct Capabilities {
    std::vector<std::string> bounding, effective, inheritable, permitted, ambient;
};

struct Rlimit {
    std::string type;  // "RLIMIT_NOFILE"
    uint64_t soft = 0, hard = 0;
};

struct Process {
    bool terminal = false;
    User user;
    std::vector<std::string> args;
    std::vector<std::string> env;  // "KEY=value"
    std::string cwd = "/";
    Capabilities capabilities;
    std::vector<Rlimit> rlimits;
    bool no_new_privileges = false;
    std::optional<int> oom_score_adj;
};

struct Root {
    std::filesystem::path path;
    bool readonly = false;
};

struct Mount {
    std::filesystem::path destination;
    std::string type;  // "bind" or empty with a "bind"/"rbind" option means a bind mount
    std::string source;
    std::vector<std::string> options;

    // A bind mount: type "bind", or a "bind"/"rbind" option (how runc reads it).
    bool is_bind() const;
};

struct Hook {
    std::string path;
    std::vector<std::string> args, env;
    std::optional<int> timeout;
};

struct Hooks {
    std::vector<Hook> prestart, create_runtime, create_container, start_container, poststart, poststop;
};

struct Namespace {
    std::string type;  // pid network mount ipc uts user cgroup time
    std::string path;  // join this one instead of making a new one
};

struct IdMapping {
    uint32_t container_id = 0, host_id = 0, size = 0;
};

struct Device {
    std::filesystem::path path;
    std::string type;  // c b u p
    int64_t major = 0, minor = 0;
    std::optional<uint32_t> file_mode, uid, gid;
};

// linux.resources.devices[i]: the device cgroup's allow/deny list, applied in order.
struct DeviceRule {
    bool allow = false;
    std::string type = "a";               // a (all), c, b
    std::optional<int64_t> major, minor;  // none: any
    std::string access = "rwm";
};

struct Resources {
    std::optional<int64_t> memory_limit;  // bytes
    std::optional<int64_t> memory_swap;
    std::optional<uint64_t> cpu_shares;
    std::optional<int64_t> cpu_quota;  // µs per period
    std::optional<uint64_t> cpu_period;
    std::optional<int64_t> pids_limit;
    std::vector<DeviceRule> devices;
};

struct Linux {
    std::vector<Namespace> namespaces;
    std::vector<IdMapping> uid_mappings, gid_mappings;
    std::vector<Device> devices;
    Resources resources;
    std::string cgroups_path;
    std::vector<std::string> masked_paths, readonly_paths;
    std::optional<nlohmann::json> seccomp;
    std::map<std::string, std::string> sysctl;
    std::string rootfs_propagation;

    bool has_namespace(const std::string& type) const;
    const Namespace* find_namespace(const std::string& type) const;
};

struct RuntimeSpec {
    std::string oci_version = "1.0.2";
    Process process;
    Root root;
    std::string hostname;
    std::vector<Mount> mounts;
    Hooks hooks;
    Linux linux_settings;  // "linux" in config.json (the name is a predefined macro in GNU C++)
    std::map<std::string, std::string> annotations;

    // The annotation's value, or `fallback`.
    std::string annotation(const std::string& key, const std::string& fallback = {}) const;
};

// Throws initless::Error naming the property for a wrong type or value.
RuntimeSpec parse(const nlohmann::json& config);
RuntimeSpec load(const std::filesystem::path& config_json);
nlohmann::json to_json(const RuntimeSpec& spec);

// Docker's defaults (moby's oci/defaults.go semantics), which our function defaults meet or exceed.
std::vector<std::string> default_masked_paths();
std::vector<std::string> default_readonly_paths();

// The capability's number, or throws naming it ("unknown capability CAP_FOO").
int capability_number(const std::string& name);
uint64_t capability_mask(const std::vector<std::string>& names);
// The resource's number for setrlimit, or throws.
int rlimit_resource(const std::string& name);

// The host id that `container_id` maps to, if any mapping covers it.
std::optional<uint32_t> to_host(const std::vector<IdMapping>& mappings, uint32_t container_id);
// The container id of `host_id`, if any mapping covers it.
std::optional<uint32_t> to_container(const std::vector<IdMapping>& mappings, uint32_t host_id);

}  // namespace initless::oci
