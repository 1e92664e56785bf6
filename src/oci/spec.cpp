#include "initless/oci/spec.h"

#include <linux/capability.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::oci {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::array<std::pair<const char*, int>, 41> kCapabilities = {{
    {"CAP_CHOWN", 0},
    {"CAP_DAC_OVERRIDE", 1},
    {"CAP_DAC_READ_SEARCH", 2},
    {"CAP_FOWNER", 3},
    {"CAP_FSETID", 4},
    {"CAP_KILL", 5},
    {"CAP_SETGID", 6},
    {"CAP_SETUID", 7},
    {"CAP_SETPCAP", 8},
    {"CAP_LINUX_IMMUTABLE", 9},
    {"CAP_NET_BIND_SERVICE", 10},
    {"CAP_NET_BROADCAST", 11},
    {"CAP_NET_ADMIN", 12},
    {"CAP_NET_RAW", 13},
    {"CAP_IPC_LOCK", 14},
    {"CAP_IPC_OWNER", 15},
    {"CAP_SYS_MODULE", 16},
    {"CAP_SYS_RAWIO", 17},
    {"CAP_SYS_CHROOT", 18},
    {"CAP_SYS_PTRACE", 19},
    {"CAP_SYS_PACCT", 20},
    {"CAP_SYS_ADMIN", 21},
    {"CAP_SYS_BOOT", 22},
    {"CAP_SYS_NICE", 23},
    {"CAP_SYS_RESOURCE", 24},
    {"CAP_SYS_TIME", 25},
    {"CAP_SYS_TTY_CONFIG", 26},
    {"CAP_MKNOD", 27},
    {"CAP_LEASE", 28},
    {"CAP_AUDIT_WRITE", 29},
    {"CAP_AUDIT_CONTROL", 30},
    {"CAP_SETFCAP", 31},
    {"CAP_MAC_OVERRIDE", 32},
    {"CAP_MAC_ADMIN", 33},
    {"CAP_SYSLOG", 34},
    {"CAP_WAKE_ALARM", 35},
    {"CAP_BLOCK_SUSPEND", 36},
    {"CAP_AUDIT_READ", 37},
    {"CAP_PERFMON", 38},
    {"CAP_BPF", 39},
    {"CAP_CHECKPOINT_RESTORE", 40},
}};

constexpr std::array<std::pair<const char*, int>, 16> kRlimits = {{
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_STACK", RLIMIT_STACK},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
}};

const std::set<std::string> kNamespaceTypes = {"pid", "network", "mount",  "ipc",
                                               "uts", "user",    "cgroup", "time"};

// Reads one property at a path ("linux.resources.memory.limit"), with errors that name the path.
class Reader {
  public:
    [[noreturn]] static void fail(const std::string& path, const std::string& what) {
        throw Error(fmt::format("config.json: {}: {}", path, what));
    }

    static const json* member(const json& object, const std::string& path, const char* key) {
        if (!object.is_object()) fail(path, "must be an object");
        auto it = object.find(key);
        if (it == object.end() || it->is_null()) return nullptr;
        return &*it;
    }

    template <typename T>
    static T get(const json& value, const std::string& path) {
        try {
            return value.get<T>();
        } catch (const json::exception&) {
            fail(path, fmt::format("has the wrong type ({})", value.type_name()));
        }
    }

    template <typename T>
    static void opt(const json& object, const std::string& path, const char* key, T& out) {
        if (const json* v = member(object, path, key)) out = get<T>(*v, join(path, key));
    }

    template <typename T>
    static void opt(const json& object, const std::string& path, const char* key, std::optional<T>& out) {
        if (const json* v = member(object, path, key)) out = get<T>(*v, join(path, key));
    }

    static std::string join(const std::string& path, const char* key) {
        return path.empty() ? std::string(key) : path + "." + key;
    }

    // Each element of an optional array, with its path.
    template <typename F>
    static void each(const json& object, const std::string& path, const char* key, F&& f) {
        const json* v = member(object, path, key);
        if (!v) return;
        std::string p = join(path, key);
        if (!v->is_array()) fail(p, "must be an array");
        for (size_t i = 0; i < v->size(); ++i) f((*v)[i], fmt::format("{}[{}]", p, i));
    }
};

void check_capabilities(const std::vector<std::string>& names, const std::string& path) {
    for (const auto& n : names) try {
            capability_number(n);
        } catch (const Error& e) {
            Reader::fail(path, e.what());
        }
}

std::vector<IdMapping> parse_mappings(const json& lx, const char* key) {
    std::vector<IdMapping> out;
    Reader::each(lx, "linux", key, [&](const json& m, const std::string& p) {
        IdMapping id;
        const json* c = Reader::member(m, p, "containerID");
        const json* h = Reader::member(m, p, "hostID");
        const json* s = Reader::member(m, p, "size");
        if (!c || !h || !s) Reader::fail(p, "needs containerID, hostID and size");
        id.container_id = Reader::get<uint32_t>(*c, p + ".containerID");
        id.host_id = Reader::get<uint32_t>(*h, p + ".hostID");
        id.size = Reader::get<uint32_t>(*s, p + ".size");
        if (id.size == 0) Reader::fail(p + ".size", "must be positive");
        for (const auto& o : out)
            if (id.container_id < o.container_id + o.size && o.container_id < id.container_id + id.size)
                Reader::fail(p, "overlaps another mapping's containerID range");
        out.push_back(id);
    });
    return out;
}

Hook parse_hook(const json& h, const std::string& p) {
    Hook hook;
    Reader::opt(h, p, "path", hook.path);
    if (hook.path.empty() || hook.path[0] != '/') Reader::fail(p + ".path", "must be an absolute path");
    Reader::opt(h, p, "args", hook.args);
    Reader::opt(h, p, "env", hook.env);
    Reader::opt(h, p, "timeout", hook.timeout);
    if (hook.timeout && *hook.timeout <= 0) Reader::fail(p + ".timeout", "must be positive");
    return hook;
}

json hook_json(const Hook& h) {
    json j = {{"path", h.path}};
    if (!h.args.empty()) j["args"] = h.args;
    if (!h.env.empty()) j["env"] = h.env;
    if (h.timeout) j["timeout"] = *h.timeout;
    return j;
}

json mappings_json(const std::vector<IdMapping>& ms) {
    json a = json::array();
    for (const auto& m : ms)
        a.push_back({{"containerID", m.container_id}, {"hostID", m.host_id}, {"size", m.size}});
    return a;
}

}  // namespace

bool Mount::is_bind() const {
    return type == "bind" || std::find(options.begin(), options.end(), "bind") != options.end() ||
           std::find(options.begin(), options.end(), "rbind") != options.end();
}

bool Linux::has_namespace(const std::string& type) const {
    return find_namespace(type) != nullptr;
}

const Namespace* Linux::find_namespace(const std::string& type) const {
    for (const auto& n : namespaces)
        if (n.type == type) return &n;
    return nullptr;
}

std::string RuntimeSpec::annotation(const std::string& key, const std::string& fallback) const {
    auto it = annotations.find(key);
    return it == annotations.end() ? fallback : it->second;
}

int capability_number(const std::string& name) {
    for (const auto& [n, v] : kCapabilities)
        if (name == n) return v;
    throw Error("unknown capability " + name);
}

uint64_t capability_mask(const std::vector<std::string>& names) {
    uint64_t mask = 0;
    for (const auto& n : names) {
        int c = capability_number(n);
        if (c <= CAP_LAST_CAP) mask |= 1ULL << c;  // newer than this kernel: it cannot be held anyway
    }
    return mask;
}

int rlimit_resource(const std::string& name) {
    for (const auto& [n, v] : kRlimits)
        if (name == n) return v;
    throw Error("unknown rlimit " + name);
}

std::optional<uint32_t> to_host(const std::vector<IdMapping>& mappings, uint32_t container_id) {
    for (const auto& m : mappings)
        if (container_id >= m.container_id && container_id - m.container_id < m.size)
            return m.host_id + (container_id - m.container_id);
    return std::nullopt;
}

std::optional<uint32_t> to_container(const std::vector<IdMapping>& mappings, uint32_t host_id) {
    for (const auto& m : mappings)
        if (host_id >= m.host_id && host_id - m.host_id < m.size)
            return m.container_id + (host_id - m.host_id);
    return std::nullopt;
}

std::vector<std::string> default_masked_paths() {
    return {"/proc/asound",
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"};
}

std::vector<std::string> default_readonly_paths() {
    return {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
}

RuntimeSpec parse(const json& c) {
    using R = Reader;
    RuntimeSpec s;
    if (!c.is_object()) R::fail("(top)", "must be an object");
    R::opt(c, "", "ociVersion", s.oci_version);
    if (s.oci_version.rfind("1.", 0) != 0)
        R::fail("ociVersion", fmt::format("'{}' is not a 1.x version of the runtime spec", s.oci_version));

    const json* proc = R::member(c, "", "process");
    if (!proc) R::fail("process", "is required");
    Process& p = s.process;
    R::opt(*proc, "process", "terminal", p.terminal);
    if (p.terminal) R::fail("process.terminal", "a terminal is not supported (functions log to a file)");
    if (const json* u = R::member(*proc, "process", "user")) {
        R::opt(*u, "process.user", "uid", p.user.uid);
        R::opt(*u, "process.user", "gid", p.user.gid);
        R::opt(*u, "process.user", "umask", p.user.umask);
        R::opt(*u, "process.user", "additionalGids", p.user.additional_gids);
    }
    R::opt(*proc, "process", "args", p.args);
    if (p.args.empty()) R::fail("process.args", "must hold at least the program");
    R::opt(*proc, "process", "env", p.env);
    for (const auto& e : p.env)
        if (e.find('=') == std::string::npos) R::fail("process.env", fmt::format("'{}' is not KEY=value", e));
    R::opt(*proc, "process", "cwd", p.cwd);
    if (p.cwd.empty() || p.cwd[0] != '/') R::fail("process.cwd", "must be an absolute path");
    if (const json* caps = R::member(*proc, "process", "capabilities")) {
        const std::string cp = "process.capabilities";
        R::opt(*caps, cp, "bounding", p.capabilities.bounding);
        R::opt(*caps, cp, "effective", p.capabilities.effective);
        R::opt(*caps, cp, "inheritable", p.capabilities.inheritable);
        R::opt(*caps, cp, "permitted", p.capabilities.permitted);
        R::opt(*caps, cp, "ambient", p.capabilities.ambient);
        for (const auto* set :
             {&p.capabilities.bounding, &p.capabilities.effective, &p.capabilities.inheritable,
              &p.capabilities.permitted, &p.capabilities.ambient})
            check_capabilities(*set, cp);
    }
    R::each(*proc, "process", "rlimits", [&](const json& r, const std::string& path) {
        Rlimit lim;
        R::opt(r, path, "type", lim.type);
        try {
            rlimit_resource(lim.type);
        } catch (const Error& e) {
            R::fail(path + ".type", e.what());
        }
        R::opt(r, path, "soft", lim.soft);
        R::opt(r, path, "hard", lim.hard);
        if (lim.soft > lim.hard) R::fail(path, "soft is above hard");
        p.rlimits.push_back(lim);
    });
    R::opt(*proc, "process", "noNewPrivileges", p.no_new_privileges);
    R::opt(*proc, "process", "oomScoreAdj", p.oom_score_adj);
    if (p.oom_score_adj && (*p.oom_score_adj < -1000 || *p.oom_score_adj > 1000))
        R::fail("process.oomScoreAdj", "must be within [-1000, 1000]");

    const json* root = R::member(c, "", "root");
    if (!root) R::fail("root", "is required");
    std::string root_path;
    R::opt(*root, "root", "path", root_path);
    if (root_path.empty()) R::fail("root.path", "is required");
    s.root.path = root_path;
    R::opt(*root, "root", "readonly", s.root.readonly);
    R::opt(c, "", "hostname", s.hostname);

    R::each(c, "", "mounts", [&](const json& m, const std::string& path) {
        Mount mount;
        std::string dest;
        R::opt(m, path, "destination", dest);
        if (dest.empty() || dest[0] != '/') R::fail(path + ".destination", "must be an absolute path");
        mount.destination = fs::path(dest).lexically_normal();
        if (mount.destination.has_relative_path() && mount.destination.filename().empty())
            mount.destination = mount.destination.parent_path();  // "/data/" is "/data"
        R::opt(m, path, "type", mount.type);
        R::opt(m, path, "source", mount.source);
        R::opt(m, path, "options", mount.options);
        s.mounts.push_back(std::move(mount));
    });

    if (const json* hooks = R::member(c, "", "hooks")) {
        auto list = [&](const char* key, std::vector<Hook>& out) {
            R::each(*hooks, "hooks", key,
                    [&](const json& h, const std::string& path) { out.push_back(parse_hook(h, path)); });
        };
        list("prestart", s.hooks.prestart);
        list("createRuntime", s.hooks.create_runtime);
        list("createContainer", s.hooks.create_container);
        list("startContainer", s.hooks.start_container);
        list("poststart", s.hooks.poststart);
        list("poststop", s.hooks.poststop);
    }

    if (const json* lx = R::member(c, "", "linux")) {
        Linux& l = s.linux_settings;
        R::each(*lx, "linux", "namespaces", [&](const json& n, const std::string& path) {
            Namespace ns;
            R::opt(n, path, "type", ns.type);
            R::opt(n, path, "path", ns.path);
            if (!kNamespaceTypes.count(ns.type))
                R::fail(path + ".type", fmt::format("'{}' is not a namespace type", ns.type));
            if (l.has_namespace(ns.type)) R::fail(path + ".type", fmt::format("'{}' appears twice", ns.type));
            l.namespaces.push_back(ns);
        });
        l.uid_mappings = parse_mappings(*lx, "uidMappings");
        l.gid_mappings = parse_mappings(*lx, "gidMappings");
        if (!l.uid_mappings.empty() && !l.has_namespace("user"))
            R::fail("linux.uidMappings", "mappings need a user namespace");
        R::each(*lx, "linux", "devices", [&](const json& d, const std::string& path) {
            Device dev;
            std::string dp;
            R::opt(d, path, "path", dp);
            if (dp.empty() || dp[0] != '/') R::fail(path + ".path", "must be an absolute path");
            dev.path = dp;
            R::opt(d, path, "type", dev.type);
            if (dev.type != "c" && dev.type != "b" && dev.type != "u" && dev.type != "p")
                R::fail(path + ".type", fmt::format("'{}' is not one of c, b, u, p", dev.type));
            R::opt(d, path, "major", dev.major);
            R::opt(d, path, "minor", dev.minor);
            R::opt(d, path, "fileMode", dev.file_mode);
            R::opt(d, path, "uid", dev.uid);
            R::opt(d, path, "gid", dev.gid);
            l.devices.push_back(dev);
        });
        if (const json* res = R::member(*lx, "linux", "resources")) {
            const std::string rp = "linux.resources";
            if (const json* mem = R::member(*res, rp, "memory")) {
                R::opt(*mem, rp + ".memory", "limit", l.resources.memory_limit);
                R::opt(*mem, rp + ".memory", "swap", l.resources.memory_swap);
                if (l.resources.memory_limit && *l.resources.memory_limit <= 0 &&
                    *l.resources.memory_limit != -1)
                    R::fail(rp + ".memory.limit", "must be positive (or -1 for none)");
            }
            if (const json* cpu = R::member(*res, rp, "cpu")) {
                R::opt(*cpu, rp + ".cpu", "shares", l.resources.cpu_shares);
                R::opt(*cpu, rp + ".cpu", "quota", l.resources.cpu_quota);
                R::opt(*cpu, rp + ".cpu", "period", l.resources.cpu_period);
            }
            R::each(*res, rp, "devices", [&](const json& d, const std::string& path) {
                DeviceRule rule;
                R::opt(d, path, "allow", rule.allow);
                R::opt(d, path, "type", rule.type);
                if (rule.type.empty()) rule.type = "a";
                if (rule.type != "a" && rule.type != "c" && rule.type != "b")
                    R::fail(path + ".type", fmt::format("'{}' is not one of a, c, b", rule.type));
                R::opt(d, path, "major", rule.major);
                R::opt(d, path, "minor", rule.minor);
                if ((rule.major && *rule.major < 0) || (rule.minor && *rule.minor < 0))
                    R::fail(path, "major and minor must not be negative");
                R::opt(d, path, "access", rule.access);
                if (rule.access.empty()) rule.access = "rwm";
                if (rule.access.find_first_not_of("rwm") != std::string::npos)
                    R::fail(path + ".access", fmt::format("'{}' is not made of r, w, m", rule.access));
                l.resources.devices.push_back(rule);
            });
            if (const json* pids = R::member(*res, rp, "pids")) {
                R::opt(*pids, rp + ".pids", "limit", l.resources.pids_limit);
                if (l.resources.pids_limit && *l.resources.pids_limit == 0)
                    R::fail(rp + ".pids.limit", "must be positive (or -1 for none)");
            }
        }
        R::opt(*lx, "linux", "cgroupsPath", l.cgroups_path);
        R::opt(*lx, "linux", "maskedPaths", l.masked_paths);
        R::opt(*lx, "linux", "readonlyPaths", l.readonly_paths);
        for (const auto* set : {&l.masked_paths, &l.readonly_paths})
            for (const auto& mp : *set)
                if (mp.empty() || mp[0] != '/')
                    R::fail("linux.maskedPaths", fmt::format("'{}' is not absolute", mp));
        if (const json* sc = R::member(*lx, "linux", "seccomp")) {
            if (!sc->is_object()) R::fail("linux.seccomp", "must be an object");
            l.seccomp = *sc;
        }
        R::opt(*lx, "linux", "sysctl", l.sysctl);
        R::opt(*lx, "linux", "rootfsPropagation", l.rootfs_propagation);
    }
    R::opt(c, "", "annotations", s.annotations);
    return s;
}

RuntimeSpec load(const fs::path& config_json) {
    json j;
    try {
        j = json::parse(sys::read_file(config_json));
    } catch (const json::exception& e) {
        throw Error(fmt::format("{}: not JSON: {}", config_json.string(), e.what()));
    }
    return parse(j);
}

json to_json(const RuntimeSpec& s) {
    const Process& p = s.process;
    json user = {{"uid", p.user.uid}, {"gid", p.user.gid}};
    if (p.user.umask) user["umask"] = *p.user.umask;
    if (!p.user.additional_gids.empty()) user["additionalGids"] = p.user.additional_gids;
    json rlimits = json::array();
    for (const auto& r : p.rlimits) rlimits.push_back({{"type", r.type}, {"hard", r.hard}, {"soft", r.soft}});
    json process = {{"terminal", p.terminal},
                    {"user", user},
                    {"args", p.args},
                    {"env", p.env},
                    {"cwd", p.cwd},
                    {"capabilities",
                     {{"bounding", p.capabilities.bounding},
                      {"effective", p.capabilities.effective},
                      {"inheritable", p.capabilities.inheritable},
                      {"permitted", p.capabilities.permitted},
                      {"ambient", p.capabilities.ambient}}},
                    {"rlimits", rlimits},
                    {"noNewPrivileges", p.no_new_privileges}};
    if (p.oom_score_adj) process["oomScoreAdj"] = *p.oom_score_adj;

    json mounts = json::array();
    for (const auto& m : s.mounts) {
        json j = {{"destination", m.destination.string()}, {"type", m.type}, {"source", m.source}};
        if (!m.options.empty()) j["options"] = m.options;
        mounts.push_back(j);
    }
    json hooks = json::object();
    auto put_hooks = [&](const char* key, const std::vector<Hook>& hs) {
        if (hs.empty()) return;
        json a = json::array();
        for (const auto& h : hs) a.push_back(hook_json(h));
        hooks[key] = a;
    };
    put_hooks("prestart", s.hooks.prestart);
    put_hooks("createRuntime", s.hooks.create_runtime);
    put_hooks("createContainer", s.hooks.create_container);
    put_hooks("startContainer", s.hooks.start_container);
    put_hooks("poststart", s.hooks.poststart);
    put_hooks("poststop", s.hooks.poststop);

    const Linux& l = s.linux_settings;
    json namespaces = json::array();
    for (const auto& n : l.namespaces) {
        json j = {{"type", n.type}};
        if (!n.path.empty()) j["path"] = n.path;
        namespaces.push_back(j);
    }
    json devices = json::array();
    for (const auto& d : l.devices) {
        json j = {{"path", d.path.string()}, {"type", d.type}, {"major", d.major}, {"minor", d.minor}};
        if (d.file_mode) j["fileMode"] = *d.file_mode;
        if (d.uid) j["uid"] = *d.uid;
        if (d.gid) j["gid"] = *d.gid;
        devices.push_back(j);
    }
    json resources = json::object();
    if (l.resources.memory_limit) resources["memory"]["limit"] = *l.resources.memory_limit;
    if (l.resources.memory_swap) resources["memory"]["swap"] = *l.resources.memory_swap;
    if (l.resources.cpu_shares) resources["cpu"]["shares"] = *l.resources.cpu_shares;
    if (l.resources.cpu_quota) resources["cpu"]["quota"] = *l.resources.cpu_quota;
    if (l.resources.cpu_period) resources["cpu"]["period"] = *l.resources.cpu_period;
    if (l.resources.pids_limit) resources["pids"]["limit"] = *l.resources.pids_limit;
    for (const auto& r : l.resources.devices) {
        json j = {{"allow", r.allow}, {"type", r.type}, {"access", r.access}};
        if (r.major) j["major"] = *r.major;
        if (r.minor) j["minor"] = *r.minor;
        resources["devices"].push_back(j);
    }
    json linux_json = {{"namespaces", namespaces},
                       {"devices", devices},
                       {"resources", resources},
                       {"maskedPaths", l.masked_paths},
                       {"readonlyPaths", l.readonly_paths}};
    if (!l.uid_mappings.empty()) linux_json["uidMappings"] = mappings_json(l.uid_mappings);
    if (!l.gid_mappings.empty()) linux_json["gidMappings"] = mappings_json(l.gid_mappings);
    if (!l.cgroups_path.empty()) linux_json["cgroupsPath"] = l.cgroups_path;
    if (l.seccomp) linux_json["seccomp"] = *l.seccomp;
    if (!l.sysctl.empty()) linux_json["sysctl"] = l.sysctl;
    if (!l.rootfs_propagation.empty()) linux_json["rootfsPropagation"] = l.rootfs_propagation;

    json out = {{"ociVersion", s.oci_version},
                {"process", process},
                {"root", {{"path", s.root.path.string()}, {"readonly", s.root.readonly}}},
                {"hostname", s.hostname},
                {"mounts", mounts},
                {"linux", linux_json}};
    if (!hooks.empty()) out["hooks"] = hooks;
    if (!s.annotations.empty()) out["annotations"] = s.annotations;
    return out;
}

}  // namespace initless::oci
