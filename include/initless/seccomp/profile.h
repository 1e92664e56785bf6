// The seccomp filter of a sandbox: a profile in the terms of the OCI runtime spec's `linux.seccomp`
// object (same field names, same action, operator, architecture and flag strings), our default
// profile for functions, and its compilation to classic BPF with libseccomp.
//
// Who uses what: the sandbox compiles the profile of its function (`profile_for`) when it is
// prepared and hands the raw BPF to its init, which installs it as the function's last step before
// exec (init does not link libseccomp); the checkpoint compares each thread's filter with it, and a
// restore installs it as its last step. `compile` is deterministic (the same profile gives the same
// bytes), which is what lets the checkpoint recognise the sandbox's own filter.
//
// Everything here is pure computation; any thread may call it. Errors throw initless::Error naming
// the bad field (`linux.seccomp.syscalls[3].args[0].op: ...`).
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace initless::spec {
struct FunctionSpec;
}

namespace initless::seccomp {

// The spec's actions: SCMP_ACT_KILL (= KILL_THREAD), SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD,
// SCMP_ACT_TRAP, SCMP_ACT_ERRNO, SCMP_ACT_TRACE, SCMP_ACT_ALLOW, SCMP_ACT_LOG, SCMP_ACT_NOTIFY.
enum class Action { Kill, KillProcess, KillThread, Trap, Errno, Trace, Allow, Log, Notify };
// SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT, _MASKED_EQ.
enum class Op { NotEqual, LessThan, LessEqual, EqualTo, GreaterEqual, GreaterThan, MaskedEqual };

struct Arg {
    unsigned index = 0;     // 0..5
    uint64_t value = 0;     // for MASKED_EQ: the mask
    uint64_t valueTwo = 0;  // for MASKED_EQ: the value the masked argument must equal
    Op op = Op::EqualTo;
    bool operator==(const Arg&) const = default;
};

struct Syscall {
    std::vector<std::string> names;  // non-empty
    Action action = Action::Allow;
    std::optional<uint32_t> errnoRet;  // SCMP_ACT_ERRNO (default EPERM) or SCMP_ACT_TRACE's message
    std::vector<Arg> args;             // all must hold (AND); several rules for one name are OR-ed
    bool operator==(const Syscall&) const = default;
};

struct Profile {
    Action defaultAction = Action::Allow;
    std::optional<uint32_t> defaultErrnoRet;
    std::vector<std::string> architectures;  // SCMP_ARCH_*; empty: the native one only
    std::vector<std::string> flags;          // SECCOMP_FILTER_FLAG_{TSYNC,LOG,SPEC_ALLOW}
    std::string listenerPath;                // kept but ignored: SCMP_ACT_NOTIFY is refused
    std::string listenerMetadata;            // likewise
    std::vector<Syscall> syscalls;
    bool operator==(const Profile&) const = default;
};

// JSON in the spec's form. from_json validates everything `compile` needs and throws
// initless::Error naming the field (paths start at `linux.seccomp`); unknown keys are ignored, as
// the spec requires.
void to_json(nlohmann::json& j, const Profile& p);
void from_json(const nlohmann::json& j, Profile& p);
// Checks a Profile built in code as from_json checks a parsed one.
void validate(const Profile& p);

// The profile every function gets unless its spec says `seccomp = "unconfined"`: an allow-list at
// least as strict as Docker's default profile for a container without capabilities, stricter where
// a function has no use for a call (DESIGN.md "Seccomp" lists both side by side).
Profile function_default();

// The profile of a function: function_default(), or nothing for `seccomp = "unconfined"`. The one
// place the spec's key is read (the OCI translation maps the result into linux.seccomp).
std::optional<Profile> profile_for(const spec::FunctionSpec& spec);

// Classic BPF for the native architecture (x86_64) and the profile's architectures, with the
// syscall lookup as a binary tree. Names libseccomp does not know are skipped (as runc does);
// function_default() uses only known names (a unit test checks it).
std::vector<sock_filter> compile(const Profile& p);
// The seccomp(SECCOMP_SET_MODE_FILTER) flags the profile's `flags` ask for (never TSYNC: the
// installer decides that).
unsigned install_flags(const Profile& p);

// The compiled form a sandbox carries and init installs: empty `bpf` means no filter.
struct Filter {
    std::vector<sock_filter> bpf;
    unsigned flags = 0;
    bool empty() const { return bpf.empty(); }
};
Filter filter_for(const spec::FunctionSpec& spec);

// Raw bytes of a filter (8 per instruction, as the kernel stores it) and back: what travels to init
// and into the image.
std::vector<uint8_t> to_bytes(const std::vector<sock_filter>& bpf);
std::vector<sock_filter> from_bytes(const std::vector<uint8_t>& bytes);
bool same_program(const std::vector<sock_filter>& a, const std::vector<sock_filter>& b);

}  // namespace initless::seccomp
