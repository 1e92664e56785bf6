// Profiles in the OCI runtime spec's terms: JSON, validation and compilation with libseccomp.
// The default profile's reasoning is in default_profile.cpp.
#include "initless/seccomp/profile.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/unique_fd.h"

namespace initless::seccomp {

using json = nlohmann::json;

namespace {

constexpr std::pair<Action, std::string_view> kActions[] = {
    {Action::Kill, "SCMP_ACT_KILL"},
    {Action::KillProcess, "SCMP_ACT_KILL_PROCESS"},
    {Action::KillThread, "SCMP_ACT_KILL_THREAD"},
    {Action::Trap, "SCMP_ACT_TRAP"},
    {Action::Errno, "SCMP_ACT_ERRNO"},
    {Action::Trace, "SCMP_ACT_TRACE"},
    {Action::Allow, "SCMP_ACT_ALLOW"},
    {Action::Log, "SCMP_ACT_LOG"},
    {Action::Notify, "SCMP_ACT_NOTIFY"},
};

constexpr std::pair<Op, std::string_view> kOps[] = {
    {Op::NotEqual, "SCMP_CMP_NE"},           {Op::LessThan, "SCMP_CMP_LT"},
    {Op::LessEqual, "SCMP_CMP_LE"},          {Op::EqualTo, "SCMP_CMP_EQ"},
    {Op::GreaterEqual, "SCMP_CMP_GE"},       {Op::GreaterThan, "SCMP_CMP_GT"},
    {Op::MaskedEqual, "SCMP_CMP_MASKED_EQ"},
};

// Every architecture the spec names. Only the x86 family can ever issue a syscall on this machine
// (an x86_64 kernel sees x86_64, i386 and x32 calls), so the others are accepted and left out of
// the filter: a rule for them could never match.
constexpr std::pair<std::string_view, uint32_t> kArches[] = {
    {"SCMP_ARCH_X86", SCMP_ARCH_X86},
    {"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
    {"SCMP_ARCH_X32", SCMP_ARCH_X32},
    {"SCMP_ARCH_ARM", 0},
    {"SCMP_ARCH_AARCH64", 0},
    {"SCMP_ARCH_MIPS", 0},
    {"SCMP_ARCH_MIPS64", 0},
    {"SCMP_ARCH_MIPS64N32", 0},
    {"SCMP_ARCH_MIPSEL", 0},
    {"SCMP_ARCH_MIPSEL64", 0},
    {"SCMP_ARCH_MIPSEL64N32", 0},
    {"SCMP_ARCH_PPC", 0},
    {"SCMP_ARCH_PPC64", 0},
    {"SCMP_ARCH_PPC64LE", 0},
    {"SCMP_ARCH_S390", 0},
    {"SCMP_ARCH_S390X", 0},
    {"SCMP_ARCH_PARISC", 0},
    {"SCMP_ARCH_PARISC64", 0},
    {"SCMP_ARCH_RISCV64", 0},
};

// SECCOMP_FILTER_FLAG_* values (linux/seccomp.h); WAIT_KILLABLE_RECV only matters with a listener.
constexpr std::pair<std::string_view, unsigned> kFlags[] = {
    {"SECCOMP_FILTER_FLAG_TSYNC", 1u},
    {"SECCOMP_FILTER_FLAG_LOG", 2u},
    {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4u},
    {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", 0u},
};

template <typename T, size_t N>
std::string known(const std::pair<T, std::string_view> (&table)[N]) {
    std::vector<std::string_view> names;
    for (const auto& [v, name] : table) names.push_back(name);
    return fmt::format("{}", fmt::join(names, ", "));
}

// The same for tables written name first (architectures, flags).
template <typename T, size_t N>
std::string known(const std::pair<std::string_view, T> (&table)[N]) {
    std::vector<std::string_view> names;
    for (const auto& [name, v] : table) names.push_back(name);
    return fmt::format("{}", fmt::join(names, ", "));
}

std::string_view action_name(Action a) {
    for (const auto& [v, name] : kActions)
        if (v == a) return name;
    return "?";
}
std::string_view op_name(Op o) {
    for (const auto& [v, name] : kOps)
        if (v == o) return name;
    return "?";
}

[[noreturn]] void fail(const std::string& where, const std::string& what) {
    throw Error(fmt::format("{}: {}", where, what));
}

const json& field(const json& j, const char* key, const std::string& where) {
    if (!j.contains(key)) fail(where, fmt::format("required field '{}' is missing", key));
    return j.at(key);
}

std::string string_at(const json& j, const std::string& where) {
    if (!j.is_string()) fail(where, fmt::format("must be a string, not {}", j.type_name()));
    return j.get<std::string>();
}

uint64_t unsigned_at(const json& j, const std::string& where, uint64_t max) {
    if (!j.is_number_integer() || (j.is_number_integer() && !j.is_number_unsigned() && j.get<int64_t>() < 0))
        fail(where, fmt::format("must be a non-negative integer, not {}", j.dump()));
    uint64_t v = j.get<uint64_t>();
    if (v > max) fail(where, fmt::format("must be at most {} (got {})", max, v));
    return v;
}

std::vector<std::string> strings_at(const json& j, const std::string& where) {
    if (!j.is_array()) fail(where, fmt::format("must be an array of strings, not {}", j.type_name()));
    std::vector<std::string> out;
    for (size_t i = 0; i < j.size(); ++i) out.push_back(string_at(j[i], fmt::format("{}[{}]", where, i)));
    return out;
}

template <typename T, size_t N>
T lookup(const std::pair<T, std::string_view> (&table)[N], const std::string& name, const std::string& where,
         const char* what) {
    for (const auto& [v, n] : table)
        if (n == name) return v;
    fail(where, fmt::format("unknown {} '{}' (known: {})", what, name, known(table)));
}

template <typename T, size_t N>
T lookup(const std::pair<std::string_view, T> (&table)[N], const std::string& name, const std::string& where,
         const char* what) {
    for (const auto& [n, v] : table)
        if (n == name) return v;
    fail(where, fmt::format("unknown {} '{}' (known: {})", what, name, known(table)));
}

constexpr uint32_t kMaxErrno = 4095;

void check_action(Action a, const std::optional<uint32_t>& errno_ret, const std::string& where,
                  const char* errno_field) {
    if (a == Action::Notify)
        fail(where,
             "SCMP_ACT_NOTIFY needs a seccomp agent listening on listenerPath, which initless does not run");
    if (errno_ret && a != Action::Errno && a != Action::Trace)
        fail(where, fmt::format("{} is only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {}",
                                errno_field, action_name(a)));
    if (errno_ret && *errno_ret > kMaxErrno)
        fail(where, fmt::format("{} must be at most {} (got {})", errno_field, kMaxErrno, *errno_ret));
}

uint32_t scmp_action(Action a, const std::optional<uint32_t>& errno_ret) {
    switch (a) {
        case Action::Kill:
        case Action::KillThread:
            return SCMP_ACT_KILL_THREAD;
        case Action::KillProcess:
            return SCMP_ACT_KILL_PROCESS;
        case Action::Trap:
            return SCMP_ACT_TRAP;
        case Action::Errno:
            return SCMP_ACT_ERRNO(errno_ret.value_or(EPERM));
        case Action::Trace:
            return SCMP_ACT_TRACE(errno_ret.value_or(0));
        case Action::Allow:
            return SCMP_ACT_ALLOW;
        case Action::Log:
            return SCMP_ACT_LOG;
        case Action::Notify:
            break;
    }
    throw Error("seccomp: SCMP_ACT_NOTIFY cannot be compiled");
}

scmp_compare scmp_op(Op o) {
    switch (o) {
        case Op::NotEqual:
            return SCMP_CMP_NE;
        case Op::LessThan:
            return SCMP_CMP_LT;
        case Op::LessEqual:
            return SCMP_CMP_LE;
        case Op::EqualTo:
            return SCMP_CMP_EQ;
        case Op::GreaterEqual:
            return SCMP_CMP_GE;
        case Op::GreaterThan:
            return SCMP_CMP_GT;
        case Op::MaskedEqual:
            return SCMP_CMP_MASKED_EQ;
    }
    return SCMP_CMP_EQ;
}

}  // namespace

void to_json(json& j, const Profile& p) {
    j = json::object();
    j["defaultAction"] = action_name(p.defaultAction);
    if (p.defaultErrnoRet) j["defaultErrnoRet"] = *p.defaultErrnoRet;
    if (!p.architectures.empty()) j["architectures"] = p.architectures;
    if (!p.flags.empty()) j["flags"] = p.flags;
    if (!p.listenerPath.empty()) j["listenerPath"] = p.listenerPath;
    if (!p.listenerMetadata.empty()) j["listenerMetadata"] = p.listenerMetadata;
    json rules = json::array();
    for (const auto& s : p.syscalls) {
        json r = {{"names", s.names}, {"action", action_name(s.action)}};
        if (s.errnoRet) r["errnoRet"] = *s.errnoRet;
        if (!s.args.empty()) {
            r["args"] = json::array();
            for (const auto& a : s.args)
                r["args"].push_back({{"index", a.index},
                                     {"value", a.value},
                                     {"valueTwo", a.valueTwo},
                                     {"op", op_name(a.op)}});
        }
        rules.push_back(std::move(r));
    }
    j["syscalls"] = std::move(rules);
}

void from_json(const json& j, Profile& p) {
    const std::string root = "linux.seccomp";
    if (!j.is_object()) fail(root, fmt::format("must be an object, not {}", j.type_name()));
    p = Profile{};
    p.defaultAction = lookup(kActions, string_at(field(j, "defaultAction", root), root + ".defaultAction"),
                             root + ".defaultAction", "action");
    if (j.contains("defaultErrnoRet"))
        p.defaultErrnoRet =
            static_cast<uint32_t>(unsigned_at(j["defaultErrnoRet"], root + ".defaultErrnoRet", UINT32_MAX));
    if (j.contains("architectures"))
        p.architectures = strings_at(j["architectures"], root + ".architectures");
    if (j.contains("flags")) p.flags = strings_at(j["flags"], root + ".flags");
    if (j.contains("listenerPath")) p.listenerPath = string_at(j["listenerPath"], root + ".listenerPath");
    if (j.contains("listenerMetadata"))
        p.listenerMetadata = string_at(j["listenerMetadata"], root + ".listenerMetadata");
    if (j.contains("syscalls")) {
        const json& rules = j["syscalls"];
        if (!rules.is_array())
            fail(root + ".syscalls", fmt::format("must be an array, not {}", rules.type_name()));
        for (size_t i = 0; i < rules.size(); ++i) {
            const std::string at = fmt::format("{}.syscalls[{}]", root, i);
            const json& r = rules[i];
            if (!r.is_object()) fail(at, fmt::format("must be an object, not {}", r.type_name()));
            Syscall s;
            s.names = strings_at(field(r, "names", at), at + ".names");
            s.action =
                lookup(kActions, string_at(field(r, "action", at), at + ".action"), at + ".action", "action");
            if (r.contains("errnoRet"))
                s.errnoRet = static_cast<uint32_t>(unsigned_at(r["errnoRet"], at + ".errnoRet", UINT32_MAX));
            if (r.contains("args")) {
                const json& args = r["args"];
                if (!args.is_array())
                    fail(at + ".args", fmt::format("must be an array, not {}", args.type_name()));
                for (size_t k = 0; k < args.size(); ++k) {
                    const std::string aat = fmt::format("{}.args[{}]", at, k);
                    const json& a = args[k];
                    if (!a.is_object()) fail(aat, fmt::format("must be an object, not {}", a.type_name()));
                    Arg arg;
                    arg.index = static_cast<unsigned>(
                        unsigned_at(field(a, "index", aat), aat + ".index", UINT32_MAX));
                    arg.value = unsigned_at(field(a, "value", aat), aat + ".value", UINT64_MAX);
                    if (a.contains("valueTwo"))
                        arg.valueTwo = unsigned_at(a["valueTwo"], aat + ".valueTwo", UINT64_MAX);
                    arg.op =
                        lookup(kOps, string_at(field(a, "op", aat), aat + ".op"), aat + ".op", "operator");
                    s.args.push_back(arg);
                }
            }
            p.syscalls.push_back(std::move(s));
        }
    }
    validate(p);
}

void validate(const Profile& p) {
    const std::string root = "linux.seccomp";
    check_action(p.defaultAction, p.defaultErrnoRet, root + ".defaultAction", "defaultErrnoRet");
    for (size_t i = 0; i < p.architectures.size(); ++i)
        lookup(kArches, p.architectures[i], fmt::format("{}.architectures[{}]", root, i), "architecture");
    for (size_t i = 0; i < p.flags.size(); ++i)
        lookup(kFlags, p.flags[i], fmt::format("{}.flags[{}]", root, i), "flag");
    for (size_t i = 0; i < p.syscalls.size(); ++i) {
        const Syscall& s = p.syscalls[i];
        const std::string at = fmt::format("{}.syscalls[{}]", root, i);
        if (s.names.empty()) fail(at + ".names", "must name at least one syscall");
        for (size_t k = 0; k < s.names.size(); ++k)
            if (s.names[k].empty()) fail(fmt::format("{}.names[{}]", at, k), "must not be empty");
        check_action(s.action, s.errnoRet, at + ".action", "errnoRet");
        std::vector<unsigned> seen;
        for (size_t k = 0; k < s.args.size(); ++k) {
            const Arg& a = s.args[k];
            const std::string aat = fmt::format("{}.args[{}]", at, k);
            if (a.index > 5) fail(aat + ".index", fmt::format("must be between 0 and 5 (got {})", a.index));
            if (std::find(seen.begin(), seen.end(), a.index) != seen.end())
                fail(aat + ".index",
                     fmt::format("argument {} is compared twice in one rule (write two rules instead)",
                                 a.index));
            seen.push_back(a.index);
        }
    }
}

unsigned install_flags(const Profile& p) {
    unsigned flags = 0;
    for (const auto& name : p.flags)
        for (const auto& [n, v] : kFlags)
            if (n == name && n != "SECCOMP_FILTER_FLAG_TSYNC") flags |= v;
    return flags;
}

std::vector<sock_filter> compile(const Profile& p) {
    validate(p);
    std::unique_ptr<void, void (*)(scmp_filter_ctx)> ctx(
        seccomp_init(scmp_action(p.defaultAction, p.defaultErrnoRet)), seccomp_release);
    if (!ctx) throw Error("seccomp: libseccomp could not make a filter context");
    auto attr = [&](scmp_filter_attr a, uint32_t v, const char* what) {
        int rc = seccomp_attr_set(ctx.get(), a, v);
        if (rc != 0) throw sys::SysError(fmt::format("seccomp: setting the filter's {}", what), -rc);
    };
    // A call of an architecture the profile does not list (an int 0x80 from a 64-bit process)
    // goes through the kernel's compat entry points, a classic source of bugs: it kills the process.
    attr(SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS, "bad-architecture action");
    // A binary tree of syscall numbers rather than a linear scan: the filter runs on every syscall.
    attr(SCMP_FLTATR_CTL_OPTIMIZE, 2, "optimisation level");
    for (const auto& name : p.architectures) {
        uint32_t arch = lookup(kArches, name, "linux.seccomp.architectures", "architecture");
        if (arch == 0 || arch == seccomp_arch_native()) continue;
        int rc = seccomp_arch_add(ctx.get(), arch);
        if (rc != 0 && rc != -EEXIST) throw sys::SysError("seccomp: adding architecture " + name, -rc);
    }
    const uint32_t default_action = scmp_action(p.defaultAction, p.defaultErrnoRet);
    for (size_t i = 0; i < p.syscalls.size(); ++i) {
        const Syscall& s = p.syscalls[i];
        uint32_t action = scmp_action(s.action, s.errnoRet);
        if (action == default_action) continue;  // libseccomp refuses a rule that changes nothing
        std::vector<scmp_arg_cmp> cmps;
        for (const Arg& a : s.args) {
            scmp_arg_cmp c{};
            c.arg = a.index;
            c.op = scmp_op(a.op);
            c.datum_a = a.value;
            c.datum_b = a.valueTwo;
            cmps.push_back(c);
        }
        for (const auto& name : s.names) {
            int nr = seccomp_syscall_resolve_name(name.c_str());
            if (nr == __NR_SCMP_ERROR) continue;  // unknown to libseccomp: skipped, as runc does
            int rc = seccomp_rule_add_array(ctx.get(), action, nr, static_cast<unsigned>(cmps.size()),
                                            cmps.empty() ? nullptr : cmps.data());
            if (rc != 0)
                throw sys::SysError(
                    fmt::format("seccomp: linux.seccomp.syscalls[{}] ({}): libseccomp refused the rule", i,
                                name),
                    -rc);
        }
    }
    sys::UniqueFd out(::memfd_create("initless-seccomp", MFD_CLOEXEC));
    if (!out) throw sys::SysError("seccomp: memfd_create", errno);
    int rc = seccomp_export_bpf(ctx.get(), out.get());
    if (rc != 0) throw sys::SysError("seccomp: exporting the filter", -rc);
    std::string bytes = sys::read_file(fmt::format("/proc/self/fd/{}", out.get()));
    if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0)
        throw Error(
            fmt::format("seccomp: libseccomp exported {} bytes, not whole instructions", bytes.size()));
    std::vector<sock_filter> bpf(bytes.size() / sizeof(sock_filter));
    std::memcpy(bpf.data(), bytes.data(), bytes.size());
    if (bpf.size() > BPF_MAXINSNS)
        throw Error(fmt::format("seccomp: the filter has {} instructions, more than the kernel's {}",
                                bpf.size(), BPF_MAXINSNS));
    return bpf;
}

std::optional<Profile> profile_for(const spec::FunctionSpec& spec) {
    if (spec.seccomp == "unconfined") return std::nullopt;
    return function_default();
}

Filter filter_for(const spec::FunctionSpec& spec) {
    auto profile = profile_for(spec);
    if (!profile) return {};
    // Every function with the default profile gets the same filter: compiled once (~3 ms).
    if (*profile == function_default()) {
        static const Filter compiled{compile(*profile), install_flags(*profile)};
        return compiled;
    }
    return {compile(*profile), install_flags(*profile)};
}

std::vector<uint8_t> to_bytes(const std::vector<sock_filter>& bpf) {
    std::vector<uint8_t> out(bpf.size() * sizeof(sock_filter));
    if (!bpf.empty()) std::memcpy(out.data(), bpf.data(), out.size());
    return out;
}

std::vector<sock_filter> from_bytes(const std::vector<uint8_t>& bytes) {
    if (bytes.size() % sizeof(sock_filter) != 0)
        throw Error(fmt::format("seccomp: {} bytes are not whole BPF instructions", bytes.size()));
    std::vector<sock_filter> out(bytes.size() / sizeof(sock_filter));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
}

bool same_program(const std::vector<sock_filter>& a, const std::vector<sock_filter>& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(sock_filter)) == 0);
}

}  // namespace initless::seccomp
