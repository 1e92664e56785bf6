#include "initless/sandbox/function_config.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <random>

#include <fmt/format.h>

#include "initless/sandbox/sandbox.h"
#include "initless/seccomp/profile.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::sandbox {

namespace fs = std::filesystem;

namespace {

// Bumped when the layout of the host-runtimes root changes: sandboxes prepared from then on use a new one.
constexpr int kHostRootLayout = 2;

// Host /etc entries a function may need and that hold no secret: the dynamic linker's cache, the
// alternatives links (/usr/bin/java points through them), language runtimes' configuration (the JDK's
// conf dir is a link farm into /etc/java-*), public CA certificates, time zone, service names. Never
// passwd/shadow, ssh, ssl/private, sudoers, machine-id or anything under the operator's control.
const char* const kEtcEntries[] = {"alternatives",
                                   "ld.so.cache",
                                   "ld.so.conf",
                                   "ld.so.conf.d",
                                   "localtime",
                                   "timezone",
                                   "os-release",
                                   "debian_version",
                                   "ssl/certs",
                                   "ssl/openssl.cnf",
                                   "ca-certificates.conf",
                                   "mime.types",
                                   "protocols",
                                   "services",
                                   "host.conf",
                                   "gai.conf",
                                   "fonts",
                                   "magic",
                                   "magic.mime",
                                   "matplotlibrc",
                                   "nodejs"};
const char* const kEtcPrefixes[] = {"java-", "python3"};

// Top-level names that are links into /usr on a merged-/usr host (and bind-mounted when they are not).
const char* const kUsrLinks[] = {"bin", "lib", "lib32", "lib64", "libx32", "sbin"};

std::string mtime_key(const fs::path& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return "-";
    return fmt::format("{}.{}", st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}

void build_host_root(const fs::path& dir) {
    // No /root here: a lower dir of mode 0700 owned by host root could not be searched by the overlay's
    // mounter (root of the function's user namespace); the sandbox makes /root in the writable layer.
    for (const char* d : {"usr", "etc", "etc/ssl", "proc", "sys", "dev", "tmp", "function", "home", "run",
                          "var", "var/tmp", "var/cache", "var/log", "var/lib", "mnt", "opt", "srv", "media"})
        fs::create_directories(dir / d);
    fs::permissions(dir / "tmp", fs::perms(01777));
    fs::permissions(dir / "var/tmp", fs::perms(01777));
    for (const char* name : kUsrLinks) {
        fs::path host = fs::path("/") / name;
        std::error_code ec;
        if (fs::is_symlink(host, ec))
            fs::create_symlink(fs::read_symlink(host), dir / name);
        else if (fs::is_directory(host, ec))
            fs::create_directory(dir / name);
    }
    auto copy_etc = [&](const std::string& rel) {
        std::error_code ec;
        if (fs::symlink_status(fs::path("/etc") / rel, ec).type() == fs::file_type::not_found) return;
        // The host's own /etc, a trusted source: links are copied as links, the rest as it is.
        fs::create_directories((dir / "etc" / rel).parent_path());
        fs::copy(fs::path("/etc") / rel, dir / "etc" / rel,
                 fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    };
    for (const char* e : kEtcEntries) copy_etc(e);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/etc", ec)) {
        std::string name = e.path().filename().string();
        for (const char* prefix : kEtcPrefixes)
            if (name.rfind(prefix, 0) == 0) copy_etc(name);
    }
    // The accounts inside: root (what the function runs as) and nobody (what unmapped host ids show as).
    sys::write_file(
        dir / "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    sys::write_file(dir / "etc/group", "root:x:0:\nnogroup:x:65534:\n");
    sys::write_file(dir / "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    sys::write_file(dir / "etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n");
    sys::write_file(dir / "etc/resolv.conf", "");
}

// The largest NOFILE a function may get: ours (raising it needs CAP_SYS_RESOURCE, which we lack).
uint64_t nofile_limit() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_max == RLIM_INFINITY) return 1048576;
    return std::min<uint64_t>(r.rlim_max, 1048576);
}

}  // namespace

uint32_t function_host_id_base(const std::string& name) {
    return kIdRangesStart + static_cast<uint32_t>(fnv1a(name) % kIdRanges) * kIdRangeSize;
}

std::vector<std::string> function_env(const spec::FunctionSpec& spec) {
    std::map<std::string, std::string> env = {
        {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        {"HOME", "/root"},
        {"HOSTNAME", spec.name},
        {"PORT", std::to_string(spec.port)},
        {"LANG", "C.UTF-8"},
    };
    for (const auto& [k, v] : spec.env) env[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
}

fs::path host_runtimes_root() {
    std::string key = fmt::format("{}:{}:{}:{}", kHostRootLayout, mtime_key("/etc"),
                                  mtime_key("/etc/alternatives"), mtime_key("/etc/ld.so.cache"));
    fs::path parent = state_dir() / "rootfs";
    fs::path dir = parent / fmt::format("host-{:016x}", fnv1a(key));
    std::error_code ec;
    if (fs::is_directory(dir, ec)) return dir;
    fs::create_directories(parent);
    std::random_device rd;
    fs::path tmp = parent / fmt::format(".building-{:08x}", rd());
    try {
        fs::create_directory(tmp);
        build_host_root(tmp);
        fs::rename(tmp, dir, ec);  // another process may have won the race: its copy is as good
        if (ec) sys::remove_tree(tmp);
    } catch (const std::exception& e) {
        try {
            sys::remove_tree(tmp);
        } catch (const Error&) {
        }
        throw Error(fmt::format("building the host-runtimes root {}: {}", dir.string(), e.what()));
    }
    return dir;
}

oci::RuntimeSpec function_runtime_spec(const spec::FunctionSpec& spec) {
    oci::RuntimeSpec s;
    oci::Process& p = s.process;
    p.args = spec.command;
    p.env = function_env(spec);
    p.cwd = "/function";
    p.user = {0, 0, 022, {}};
    // No capability at all: the function is root of its own user namespace only, and even that root
    // holds nothing (files it did not create are not its own; it cannot bind, mount or trace).
    p.no_new_privileges = true;
    uint64_t nofile = nofile_limit();
    // No core files: the host's core_pattern (possibly a pipe to a host helper) must not see a crash.
    p.rlimits = {{"RLIMIT_NOFILE", nofile, nofile}, {"RLIMIT_CORE", 0, 0}};

    bool host_runtimes = spec.rootfs.empty();
    s.root.path = host_runtimes ? host_runtimes_root() : spec.rootfs;
    s.hostname = spec.name;

    auto tmpfs = [](const char* dest, std::vector<std::string> options) {
        return oci::Mount{dest, "tmpfs", "tmpfs", std::move(options)};
    };
    std::string tmp_size = fmt::format("size={}m", spec.tmp_mb);
    s.mounts = {
        {"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
        tmpfs("/dev", {"nosuid", "noexec", "strictatime", "mode=755", "size=64k"}),
        tmpfs("/dev/shm", {"nosuid", "noexec", "nodev", "mode=1777", tmp_size}),
        {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
        tmpfs("/tmp", {"nosuid", "nodev", "mode=1777", tmp_size}),
    };
    if (host_runtimes) {
        s.mounts.push_back({"/usr", "bind", "/usr", {"rbind", "ro", "nosuid", "nodev"}});
        for (const char* name : kUsrLinks) {
            fs::path host = fs::path("/") / name;
            std::error_code ec;
            if (!fs::is_symlink(host, ec) && fs::is_directory(host, ec))
                s.mounts.push_back({host, "bind", host.string(), {"rbind", "ro", "nosuid", "nodev"}});
        }
    }
    s.mounts.push_back({"/function", "bind", spec.dir.string(), {"rbind", "ro", "nosuid", "nodev"}});

    oci::Linux& l = s.linux_settings;
    for (const char* ns : {"pid", "network", "ipc", "uts", "mount", "user", "cgroup"})
        l.namespaces.push_back({ns, ""});
    uint32_t base = function_host_id_base(spec.name);
    l.uid_mappings = {{0, base, kIdRangeSize}};
    l.gid_mappings = {{0, base, kIdRangeSize}};
    for (auto [name, minor] : {std::pair{"null", 3}, {"zero", 5}, {"full", 7}, {"random", 8}, {"urandom", 9}})
        l.devices.push_back({fs::path("/dev") / name, "c", 1, minor, 0666, 0, 0});
    l.devices.push_back({"/dev/tty", "c", 5, 0, 0666, 0, 0});
    l.resources.memory_limit = static_cast<int64_t>(spec.memory_mb << 20);
    l.resources.cpu_period = 100000;
    l.resources.cpu_quota = static_cast<int64_t>(std::llround(spec.cpus * 100000));
    l.resources.pids_limit = spec.pids_max;
    // No user namespace inside this one: nothing a function runs needs one, and inside a fresh one it
    // would hold every capability again over its own mounts (seccomp denies the call too).
    l.sysctl["user.max_user_namespaces"] = "0";
    // What the sandbox installs (seccomp::filter_for, the same profile), shown here in the spec's terms.
    if (auto profile = seccomp::profile_for(spec)) {
        nlohmann::json j = *profile;
        l.seccomp = j;
    }
    l.masked_paths = oci::default_masked_paths();
    l.readonly_paths = oci::default_readonly_paths();

    s.annotations["io.initless.function"] = spec.name;
    s.annotations["io.initless.writable-layer-mb"] = std::to_string(spec.writable_layer_mb);
    s.annotations["io.initless.network"] = spec.network;
    return s;
}

}  // namespace initless::sandbox
