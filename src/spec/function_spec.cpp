#include "initless/spec/function_spec.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <limits>
#include <set>
#include <string_view>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::spec {

namespace fs = std::filesystem;

namespace {

// Order matters only for the "known keys" hint: the order of DESIGN.md.
constexpr std::string_view kKnownKeys[] = {
    "name",
    "command",
    "env",
    "ready",
    "port",
    "rootfs",
    "rw_dirs",
    "memory_mb",
    "cpus",
    "pids_max",
    "writable_layer_mb",
    "tmp_mb",
    "network",
    "concurrency",
    "max_instances",
    "timeout_s",
    "prestart",
    "prestart_max_age_s",
    "queue_max",
    "queue_timeout_ms",
    "restore",
    "warmup",
    "restore_signal",
    "seccomp",
    "refuse_tcp_connections",
};

constexpr std::string_view kRestoreStrategies[] = {"auto", "eager", "cow", "lazy", "prefetch"};

std::string_view type_name(toml::node_type t) {
    switch (t) {
        case toml::node_type::table:
            return "a table";
        case toml::node_type::array:
            return "an array";
        case toml::node_type::string:
            return "a string";
        case toml::node_type::integer:
            return "an integer";
        case toml::node_type::floating_point:
            return "a float";
        case toml::node_type::boolean:
            return "a boolean";
        case toml::node_type::date:
            return "a date";
        case toml::node_type::time:
            return "a time";
        case toml::node_type::date_time:
            return "a date-time";
        case toml::node_type::none:
            break;
    }
    return "nothing";
}

bool valid_name(std::string_view s) {
    if (s.empty() || s.size() > 63) return false;
    auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!lower_or_digit(s[0])) return false;
    return std::all_of(s.begin() + 1, s.end(),
                       [&](char c) { return lower_or_digit(c) || c == '_' || c == '-'; });
}

// Reads one parsed document into a FunctionSpec; every failure points at file:line and the key.
class Reader {
  public:
    explicit Reader(std::string file) : file_(std::move(file)) {}

    [[noreturn]] void fail(const toml::source_region& where, std::string_view key,
                           std::string_view what) const {
        if (where.begin.line > 0)
            throw Error(fmt::format("{}:{}: key '{}' {}", file_, where.begin.line, key, what));
        throw Error(fmt::format("{}: key '{}' {}", file_, key, what));
    }

    [[noreturn]] void wrong_type(const toml::node& n, std::string_view key, std::string_view want) const {
        fail(n.source(), key, fmt::format("must be {}, not {}", want, type_name(n.type())));
    }

    std::string string(const toml::node& n, std::string_view key) const {
        const auto* v = n.as_string();
        if (!v) wrong_type(n, key, "a string");
        return v->get();
    }

    std::string nonempty_string(const toml::node& n, std::string_view key) const {
        std::string s = string(n, key);
        if (s.empty()) fail(n.source(), key, "must not be empty");
        return s;
    }

    // An integer within [lo, hi]; TOML integers are int64, so hi never exceeds that.
    int64_t integer(const toml::node& n, std::string_view key, int64_t lo, int64_t hi) const {
        const auto* v = n.as_integer();
        if (!v) wrong_type(n, key, "an integer");
        int64_t x = v->get();
        if (x < lo || x > hi) {
            if (hi == std::numeric_limits<int64_t>::max())
                fail(n.source(), key, fmt::format("must be at least {} (got {})", lo, x));
            fail(n.source(), key, fmt::format("must be between {} and {} (got {})", lo, hi, x));
        }
        return x;
    }

    // Integers are accepted too: `cpus = 2` is what people write.
    double positive_number(const toml::node& n, std::string_view key) const {
        double x;
        if (const auto* i = n.as_integer())
            x = static_cast<double>(i->get());
        else if (const auto* f = n.as_floating_point())
            x = f->get();
        else
            wrong_type(n, key, "a number");
        if (!std::isfinite(x) || x <= 0)
            fail(n.source(), key, fmt::format("must be greater than 0 (got {})", x));
        return x;
    }

    const toml::array& array(const toml::node& n, std::string_view key) const {
        const auto* a = n.as_array();
        if (!a) wrong_type(n, key, "an array");
        return *a;
    }

    const toml::table& table(const toml::node& n, std::string_view key) const {
        const auto* t = n.as_table();
        if (!t) wrong_type(n, key, "a table");
        return *t;
    }

    const std::string& file() const { return file_; }

  private:
    std::string file_;
};

// lexically_normal keeps a trailing slash as an empty last element; drop it so "/tmp/" and "/tmp" are equal.
fs::path normal_path(const std::string& s) {
    fs::path p = fs::path(s).lexically_normal();
    if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
    return p;
}

uint32_t u32(int64_t x) {
    return static_cast<uint32_t>(x);
}
constexpr int64_t kU32Max = std::numeric_limits<uint32_t>::max();
constexpr int64_t kMaxTimeoutS = 3600;
constexpr size_t kMaxSpecBytes = 1 << 20;
constexpr int64_t kNoMax = std::numeric_limits<int64_t>::max();

void read_key(const Reader& r, std::string_view key, const toml::node& n, FunctionSpec& s) {
    if (key == "name") {
        s.name = r.string(n, key);
        if (!valid_name(s.name))
            r.fail(n.source(), key,
                   fmt::format("'{}' must match [a-z0-9][a-z0-9_-]* and be at most 63 characters", s.name));
    } else if (key == "command") {
        const auto& a = r.array(n, key);
        if (a.empty()) r.fail(n.source(), key, "must not be empty");
        s.command.clear();
        for (size_t i = 0; i < a.size(); ++i)
            s.command.push_back(r.string(a[i], fmt::format("command[{}]", i)));
        if (s.command[0].empty()) r.fail(a[0].source(), "command[0]", "must not be empty");
    } else if (key == "env") {
        for (auto&& [k, v] : r.table(n, key)) {
            std::string full = fmt::format("env.{}", k.str());
            if (k.str().empty() || k.str().find('=') != std::string_view::npos)
                r.fail(k.source(), full, "is not a valid environment variable name");
            s.env[std::string(k.str())] = r.string(v, full);
        }
    } else if (key == "ready") {
        s.ready = r.nonempty_string(n, key);
        // The phrase is matched within a line of stdout, so it cannot span lines.
        if (s.ready.find_first_of("\r\n") != std::string::npos)
            r.fail(n.source(), key, "must be a single line");
    } else if (key == "port") {
        s.port = static_cast<uint16_t>(r.integer(n, key, 1, 65535));
    } else if (key == "rootfs") {
        s.rootfs = normal_path(r.nonempty_string(n, key));
        if (!s.rootfs.is_absolute())
            r.fail(n.source(), key, fmt::format("must be an absolute path (got '{}')", s.rootfs.string()));
        if (s.rootfs == "/")
            r.fail(n.source(), key,
                   "must not be the host's root '/' (it holds the host's secrets); leave it unset for the "
                   "host's runtimes (/usr, read-only) under a private /etc");
    } else if (key == "rw_dirs") {
        s.rw_dirs.clear();
        std::set<fs::path> seen;
        const auto& a = r.array(n, key);
        for (size_t i = 0; i < a.size(); ++i) {
            std::string k = fmt::format("rw_dirs[{}]", i);
            fs::path p = normal_path(r.nonempty_string(a[i], k));
            if (!p.is_absolute())
                r.fail(a[i].source(), k, fmt::format("must be an absolute path (got '{}')", p.string()));
            if (p == "/") r.fail(a[i].source(), k, "must not be '/'");
            // /function is the read-only function directory; a writable layer over it would hide that.
            auto rel = p.lexically_relative("/function");
            if (!rel.empty() && *rel.begin() != "..")
                r.fail(a[i].source(), k, fmt::format("'{}' is inside the read-only /function", p.string()));
            if (!seen.insert(p).second)
                r.fail(a[i].source(), k, fmt::format("'{}' is listed twice", p.string()));
            s.rw_dirs.push_back(p);
        }
    } else if (key == "memory_mb") {
        s.memory_mb = static_cast<uint64_t>(r.integer(n, key, 16, kNoMax));
    } else if (key == "cpus") {
        s.cpus = r.positive_number(n, key);
    } else if (key == "pids_max") {
        s.pids_max = u32(r.integer(n, key, 8, 1 << 22));
    } else if (key == "writable_layer_mb") {
        s.writable_layer_mb = u32(r.integer(n, key, 1, 1 << 20));
    } else if (key == "tmp_mb") {
        s.tmp_mb = u32(r.integer(n, key, 1, 1 << 20));
    } else if (key == "network") {
        s.network = r.string(n, key);
        if (s.network != "none" && s.network != "egress")
            r.fail(n.source(), key, fmt::format("'{}' is not one of none|egress", s.network));
    } else if (key == "concurrency") {
        s.concurrency = u32(r.integer(n, key, 1, kU32Max));
    } else if (key == "max_instances") {
        s.max_instances = u32(r.integer(n, key, 1, kU32Max));
    } else if (key == "timeout_s") {
        // At most an hour: every wait on a function (its ready phrase, a warmup, a restore, a request) is
        // bounded by it, so a function must not be able to make them unbounded in practice.
        s.timeout_s = u32(r.integer(n, key, 1, kMaxTimeoutS));
    } else if (key == "prestart") {
        s.prestart = u32(r.integer(n, key, 0, kU32Max));
    } else if (key == "prestart_max_age_s") {
        s.prestart_max_age_s = u32(r.integer(n, key, 1, kU32Max));
    } else if (key == "queue_max") {
        s.queue_max = u32(r.integer(n, key, 0, kU32Max));
    } else if (key == "queue_timeout_ms") {
        s.queue_timeout_ms = u32(r.integer(n, key, 1, kMaxTimeoutS * 1000));
    } else if (key == "restore") {
        s.restore = r.string(n, key);
        if (std::find(std::begin(kRestoreStrategies), std::end(kRestoreStrategies), s.restore) ==
            std::end(kRestoreStrategies))
            r.fail(n.source(), key,
                   fmt::format("'{}' is not one of {}", s.restore, fmt::join(kRestoreStrategies, "|")));
    } else if (key == "warmup") {
        s.warmup = u32(r.integer(n, key, 0, kU32Max));
    } else if (key == "restore_signal") {
        std::string name = r.string(n, key);
        static const std::pair<const char*, int> kSignals[] = {{"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2},
                                                               {"SIGHUP", SIGHUP},   {"SIGWINCH", SIGWINCH},
                                                               {"SIGCONT", SIGCONT}, {"SIGURG", SIGURG}};
        s.restore_signal = 0;
        for (auto [sig_name, number] : kSignals)
            if (name == sig_name) s.restore_signal = number;
        if (!s.restore_signal)
            r.fail(
                n.source(), key,
                fmt::format("'{}' is not one of SIGUSR1, SIGUSR2, SIGHUP, SIGWINCH, SIGCONT, SIGURG", name));
    } else if (key == "seccomp") {
        s.seccomp = r.string(n, key);
        if (s.seccomp != "default" && s.seccomp != "unconfined")
            r.fail(n.source(), key,
                   fmt::format("'{}' is not one of default|unconfined (unconfined is for debugging only)",
                               s.seccomp));
    } else if (key == "refuse_tcp_connections") {
        const auto* v = n.as_boolean();
        if (!v) r.wrong_type(n, key, "a boolean");
        s.refuse_tcp_connections = v->get();
    } else {
        r.fail(n.source(), key, fmt::format("is unknown (known keys: {})", fmt::join(kKnownKeys, ", ")));
    }
}

}  // namespace

FunctionSpec load(const fs::path& path) {
    std::error_code ec;
    fs::path file = path;
    fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    if (fs::is_directory(path, ec)) {
        file = path / "function.toml";
        dir = path;
    }
    // Messages name the file as the caller spelled it, which is what they will look for.
    const std::string shown = file.string();

    std::string text;
    try {
        text = sys::read_regular_file(file, kMaxSpecBytes);
    } catch (const Error& e) {
        throw Error(fmt::format("function spec {}: {}", shown, e.what()));
    }

    FunctionSpec s;
    // The directory itself, not where a symlinked function.toml points: that directory is what gets mounted.
    s.dir = fs::canonical(dir, ec);
    if (ec) throw Error(fmt::format("function spec {}: {}", shown, ec.message()));

    toml::table doc;
    try {
        doc = toml::parse(text, shown);
    } catch (const toml::parse_error& e) {
        const auto& at = e.source().begin;
        throw Error(fmt::format("{}:{}:{}: {}", shown, at.line, at.column, e.description()));
    }

    Reader r(shown);
    // Unknown keys first, wherever they are, so a typo is reported as such rather than as a missing key.
    for (auto&& [k, v] : doc) {
        if (std::find(std::begin(kKnownKeys), std::end(kKnownKeys), k.str()) == std::end(kKnownKeys))
            r.fail(k.source(), k.str(),
                   fmt::format("is unknown (known keys: {})", fmt::join(kKnownKeys, ", ")));
    }
    for (auto&& [k, v] : doc) read_key(r, k.str(), v, s);

    for (std::string_view required : {"command", "ready"}) {
        if (!doc.contains(required))
            throw Error(fmt::format("{}: required key '{}' is missing", shown, required));
    }

    if (!doc.contains("name")) {
        s.name = s.dir.filename().string();
        if (!valid_name(s.name))
            throw Error(fmt::format(
                "{}: key 'name' is not set and the directory name '{}' is not a valid function name "
                "([a-z0-9][a-z0-9_-]*, at most 63 characters); set 'name'",
                shown, s.name));
    }
    return s;
}

}  // namespace initless::spec
