// The seccomp component: the OCI profile's JSON and validation, the default profile's content, and
// its compiled filter installed in a real child process (each attempt's errno checked).
#include <errno.h>
#include <linux/io_uring.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/seccomp.h>

#include <functional>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "initless/seccomp/profile.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"

using namespace initless;
using json = nlohmann::json;

namespace {

std::string error_of(const json& j) {
    try {
        j.get<seccomp::Profile>();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "profile accepted but should not have been: " << j.dump();
    return {};
}

// Runs `attempt` in a child under `bpf` and returns what it returned (an errno, or 0 on success);
// -1 if the child died.
int errno_under(const std::vector<sock_filter>& bpf, const std::function<int()>& attempt) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) return -1;
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        sock_fprog prog{static_cast<unsigned short>(bpf.size()), const_cast<sock_filter*>(bpf.data())};
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
            ::_exit(100);
        int r = attempt();
        (void)!::write(pipefd[1], &r, sizeof r);
        ::_exit(0);
    }
    ::close(pipefd[1]);
    int r = -1;
    if (::read(pipefd[0], &r, sizeof r) != sizeof r) r = -1;
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return r;
}

int errno_of(long r) {
    return r < 0 ? errno : 0;
}

}  // namespace

TEST(SeccompProfile, JsonRoundTripUsesTheSpecsNames) {
    seccomp::Profile p = seccomp::function_default();
    json j = p;
    EXPECT_EQ(j["defaultAction"], "SCMP_ACT_ERRNO");
    EXPECT_EQ(j["defaultErrnoRet"], EPERM);
    EXPECT_EQ(j["architectures"], json::array({"SCMP_ARCH_X86_64"}));
    bool masked = false;
    for (const auto& r : j["syscalls"])
        if (r["names"] == json::array({"clone"})) {
            EXPECT_EQ(r["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
            EXPECT_EQ(r["args"][0]["index"], 0);
            EXPECT_EQ(r["args"][0]["valueTwo"], 0);
            masked = true;
        }
    EXPECT_TRUE(masked);
    EXPECT_EQ(j.get<seccomp::Profile>(), p);
}

TEST(SeccompProfile, ParsesASpecProfileAndIgnoresUnknownKeys) {
    json j = json::parse(R"({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"], "listenerPath": "/run/agent.sock", "comment": "ignored",
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                     {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]})");
    auto p = j.get<seccomp::Profile>();
    EXPECT_EQ(p.defaultAction, seccomp::Action::Errno);
    EXPECT_EQ(p.listenerPath, "/run/agent.sock");
    ASSERT_EQ(p.syscalls.size(), 3u);
    EXPECT_EQ(p.syscalls[1].args[0].op, seccomp::Op::EqualTo);
    EXPECT_EQ(p.syscalls[2].errnoRet, 38u);
    EXPECT_EQ(seccomp::install_flags(p), 4u);
    EXPECT_FALSE(seccomp::compile(p).empty());
}

TEST(SeccompProfile, ErrorsNameTheBadField) {
    auto base = [] {
        return json{{"defaultAction", "SCMP_ACT_ERRNO"},
                    {"syscalls", json::array({{{"names", {"read"}}, {"action", "SCMP_ACT_ALLOW"}}})}};
    };
    json j = base();
    j["defaultAction"] = "SCMP_ACT_DENY";
    EXPECT_NE(error_of(j).find("linux.seccomp.defaultAction: unknown action 'SCMP_ACT_DENY'"),
              std::string::npos);
    j = base();
    j["syscalls"][0]["args"] = json::array({{{"index", 0}, {"value", 1}, {"op", "SCMP_CMP_XOR"}}});
    EXPECT_NE(error_of(j).find("linux.seccomp.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_XOR'"),
              std::string::npos);
    j = base();
    j["syscalls"][0]["args"] = json::array({{{"index", 6}, {"value", 1}, {"op", "SCMP_CMP_EQ"}}});
    EXPECT_NE(error_of(j).find("linux.seccomp.syscalls[0].args[0].index: must be between 0 and 5"),
              std::string::npos);
    j = base();
    j["syscalls"][0]["names"] = json::array();
    EXPECT_NE(error_of(j).find("linux.seccomp.syscalls[0].names: must name at least one syscall"),
              std::string::npos);
    j = base();
    j["syscalls"][0].erase("action");
    EXPECT_NE(error_of(j).find("linux.seccomp.syscalls[0]: required field 'action' is missing"),
              std::string::npos);
    j = base();
    j["syscalls"][0]["errnoRet"] = 1;
    EXPECT_NE(
        error_of(j).find("linux.seccomp.syscalls[0].action: errnoRet is only meaningful with SCMP_ACT_ERRNO"),
        std::string::npos);
    j = base();
    j["architectures"] = {"SCMP_ARCH_Z80"};
    EXPECT_NE(error_of(j).find("linux.seccomp.architectures[0]: unknown architecture 'SCMP_ARCH_Z80'"),
              std::string::npos);
    j = base();
    j["defaultAction"] = "SCMP_ACT_NOTIFY";
    EXPECT_NE(error_of(j).find("SCMP_ACT_NOTIFY needs a seccomp agent"), std::string::npos);
    j = base();
    j["defaultErrnoRet"] = -1;
    EXPECT_NE(error_of(j).find("linux.seccomp.defaultErrnoRet: must be a non-negative integer"),
              std::string::npos);
}

TEST(SeccompProfile, DefaultNamesOnlySyscallsLibseccompKnowsOnThisMachine) {
    for (const auto& rule : seccomp::function_default().syscalls)
        for (const auto& name : rule.names) EXPECT_GE(seccomp_syscall_resolve_name(name.c_str()), 0) << name;
}

TEST(SeccompProfile, DefaultAllowsNothingDockerDeniesWithoutCapabilities) {
    const char* denied[] = {"mount",
                            "umount2",
                            "fsopen",
                            "fsmount",
                            "move_mount",
                            "open_tree",
                            "pivot_root",
                            "chroot",
                            "unshare",
                            "setns",
                            "bpf",
                            "perf_event_open",
                            "keyctl",
                            "add_key",
                            "request_key",
                            "userfaultfd",
                            "kexec_load",
                            "kexec_file_load",
                            "reboot",
                            "init_module",
                            "finit_module",
                            "delete_module",
                            "open_by_handle_at",
                            "ptrace",
                            "process_vm_readv",
                            "process_vm_writev",
                            "io_uring_setup",
                            "io_uring_enter",
                            "io_uring_register",
                            "syslog",
                            "acct",
                            "swapon",
                            "settimeofday",
                            "clock_settime",
                            "sethostname",
                            "iopl",
                            "ioperm",
                            "kcmp",
                            "pidfd_getfd",
                            "mbind",
                            "memfd_secret",
                            "landlock_create_ruleset",
                            "modify_ldt",
                            "quotactl",
                            "vhangup"};
    for (const auto& rule : seccomp::function_default().syscalls) {
        if (rule.action != seccomp::Action::Allow) continue;
        for (const char* d : denied)
            EXPECT_EQ(std::find(rule.names.begin(), rule.names.end(), d), rule.names.end()) << d;
    }
}

TEST(SeccompProfile, CompileIsDeterministic) {
    auto a = seccomp::compile(seccomp::function_default());
    auto b = seccomp::compile(seccomp::function_default());
    EXPECT_TRUE(seccomp::same_program(a, b));
    EXPECT_TRUE(seccomp::same_program(seccomp::from_bytes(seccomp::to_bytes(a)), a));
    EXPECT_LE(a.size(), static_cast<size_t>(BPF_MAXINSNS));
}

TEST(SeccompProfile, ProfileForFollowsTheSpec) {
    spec::FunctionSpec s;
    EXPECT_TRUE(seccomp::profile_for(s).has_value());
    EXPECT_FALSE(seccomp::filter_for(s).empty());
    s.seccomp = "unconfined";
    EXPECT_FALSE(seccomp::profile_for(s).has_value());
    EXPECT_TRUE(seccomp::filter_for(s).empty());
}

TEST(SeccompFilter, DefaultFilterDeniesEscapesAndAllowsOrdinaryWork) {
    auto bpf = seccomp::compile(seccomp::function_default());
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::syscall(SYS_getpid)); }), 0);
    EXPECT_EQ(errno_under(bpf,
                          [] {
                              io_uring_params params{};
                              return errno_of(::syscall(SYS_io_uring_setup, 4, &params));
                          }),
              EPERM);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::syscall(SYS_clone3, nullptr, 0)); }), ENOSYS);
    EXPECT_EQ(
        errno_under(bpf, [] { return errno_of(::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)); }),
        EPERM);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::syscall(SYS_unshare, CLONE_NEWUSER)); }), EPERM);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::syscall(SYS_ptrace, 16 /* ATTACH */, 1, 0, 0)); }),
              EPERM);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::socket(AF_PACKET, SOCK_RAW, 0)); }), EPERM);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::socket(AF_ALG, SOCK_SEQPACKET, 0)); }), EPERM);
    EXPECT_EQ(errno_under(bpf,
                          [] {
                              int fd = ::socket(AF_INET, SOCK_STREAM, 0);
                              if (fd < 0) return errno;
                              ::close(fd);
                              return 0;
                          }),
              0);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::personality(0xffffffff)); }), 0);
    EXPECT_EQ(errno_under(bpf, [] { return errno_of(::personality(READ_IMPLIES_EXEC)); }), EPERM);
    // A thread is still made (glibc falls back from clone3 to clone).
    EXPECT_EQ(errno_under(bpf,
                          [] {
                              pid_t p = ::fork();
                              if (p == 0) ::_exit(0);
                              if (p < 0) return errno;
                              ::waitpid(p, nullptr, 0);
                              return 0;
                          }),
              0);
}
