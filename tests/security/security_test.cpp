// The hostile-function suite: each escape hostile.c knows is tried in a booted function (`initless
// run --request /attempt/<name>`) and in a restored one (`initless restore --request ...`, the
// attempt made after the restore), and must fail with the errno listed here. After each attempt
// the host is as it was (its mount table and key list unchanged) and the sandbox left nothing
// (no instance dir, no cgroup).
//
// Adding an attempt: a function and a kAttempts line in hostile.c, and one line in kAttempts here.
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli.h"

namespace {

using nlohmann::json;

struct Attempt {
    std::string name;      // GET /attempt/<name>
    std::string expected;  // the whole answer: "denied <errno name>"
};

// Why each fails: the seccomp filter (src/seccomp/default_profile.cpp) answers EPERM for what it
// does not allow, and ENOSYS for clone3 (so that libc falls back to clone, whose flags it checks).
const std::vector<Attempt> kAttempts = {
    {"io_uring_setup", "denied EPERM"},
    {"bpf_prog_load", "denied EPERM"},
    {"perf_event_open", "denied EPERM"},
    {"keyctl", "denied EPERM"},
    {"add_key", "denied EPERM"},
    {"userfaultfd", "denied EPERM"},
    {"kexec_load", "denied EPERM"},
    {"mount_tmpfs", "denied EPERM"},
    {"unshare_user_mount", "denied EPERM"},
    {"clone_newuser", "denied EPERM"},
    {"clone3", "denied ENOSYS"},
    {"ptrace_attach_init", "denied EPERM"},
    {"open_by_handle_at", "denied EPERM"},
    {"raw_socket", "denied EPERM"},
    {"packet_socket", "denied EPERM"},
    {"setns", "denied EPERM"},
    // The sandbox itself (DESIGN.md "The sandbox"): a private root, read-only /proc/sys and /usr, no
    // route out, limits.
    {"read_shadow", "denied ENOENT"},
    {"read_state_dirs", "denied ENOENT"},
    {"write_core_pattern", "denied EACCES"},  // host root's file, unmapped in the user namespace
    // Bound read-only over itself, as Docker does; a kernel without magic SysRq (this VM's) has no file.
    {"write_sysrq_trigger",
     std::filesystem::exists("/proc/sysrq-trigger") ? "denied EROFS" : "denied ENOENT"},
    {"signal_host_process", "denied ESRCH"},  // the pid namespace: no host pid can be named
    {"write_usr", "denied EROFS"},
    {"connect_host_loopback", "denied ENETUNREACH"},
    {"fork_bomb", "denied EAGAIN"},                    // pids_max
    {"allocate_past_memory_limit", "killed SIGKILL"},  // the memory cgroup's OOM kill
    {"fill_writable_layer", "denied ENOSPC"},          // writable_layer_mb
};

enum class Start { Booted, Restored };

void PrintTo(const Attempt& a, std::ostream* os) {
    *os << a.name << " (want " << a.expected << ")";
}
void PrintTo(Start s, std::ostream* os) {
    *os << (s == Start::Booted ? "booted" : "restored");
}

fs::path hostile_dir() {
    return program_dir("hostile");  // cli.h: RT_FUNCTIONS_DIR is this suite's functions dir
}

// Whether a mount point is one that tests running beside this one make and remove: a scratch dir in
// /tmp (every test's is /tmp/<name>/...; the e2e small-disk and Docker tests mount there), a
// sandbox's instance dir, the runtime dirs of initless and of the dockerd/containerd the Docker
// tests start, or `ip netns`'s /run/netns (the remote-pages tests' two hosts; its first use mounts
// /run/netns itself, for good).
bool scratch_mount(const std::string& point) {
    if (point.rfind("/tmp/", 0) == 0 && point.find('/', 5) != std::string::npos) return true;
    for (const char* prefix : {"/tmp/initless-", "/tmp/e2e-", "/tmp/ild.", "/run/initless", "/run/docker",
                               "/run/containerd", "/run/netns"})
        if (point.rfind(prefix, 0) == 0) return true;
    return point.find("/instances/") != std::string::npos;
}

// The host's mount table without the mounts of sandboxes and test scratch dirs (other tests and other
// users of the machine make and remove those while we run); an escaped mount would show on a path
// of the host itself (/tmp, /proc, / ...).
std::string host_mounts() {
    std::istringstream in(read_text("/proc/self/mountinfo"));
    std::string line, out;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, devno, root, point;
        fields >> id >> parent >> devno >> root >> point;
        if (scratch_mount(point)) continue;
        out += line + "\n";
    }
    return out;
}

// What an escape could change on the host and we can see from here.
struct HostView {
    std::string mounts, keys;
    static HostView now() { return {host_mounts(), read_text("/proc/keys")}; }
};

class Security : public ::testing::TestWithParam<std::tuple<Attempt, Start>> {
  protected:
    // One image for the whole suite: the snapshot of hostile.c, made once.
    static void SetUpTestSuite() {
        char tmpl[] = "/tmp/initless-security-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        suite_scratch_ = tmpl;
        fs::create_directories(suite_scratch_ / "state");
        image_ = suite_scratch_ / "image";
        snapshot_ = run_cli({"snapshot", hostile_dir().string(), "--image", image_.string(), "--json"},
                            suite_scratch_, suite_scratch_ / "state", 60s);
    }
    static void TearDownTestSuite() {
        std::error_code ec;
        fs::remove_all(suite_scratch_, ec);
    }

    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u) << "the security suite runs real sandboxes and needs root";
        char tmpl[] = "/tmp/initless-security-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        scratch_ = tmpl;
        state_ = scratch_ / "state";
        fs::create_directories(state_);
        // Images are authenticated under their state dir's key: this test's restores use the key the
        // suite's snapshot was made under.
        std::error_code ec;
        fs::copy_file(suite_scratch_ / "state" / "image.key", state_ / "image.key", ec);
        if (!ec) fs::permissions(state_ / "image.key", fs::perms::owner_read | fs::perms::owner_write);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(scratch_, ec);
    }

    // The instance's report from `run` (booted) or `restore` (restored).
    json attempt(const std::string& name, Start start) {
        std::string path = "/attempt/" + name;
        CliResult r;
        if (start == Start::Booted) {
            r = run_cli({"run", hostile_dir().string(), "--request", path, "--json"}, scratch_, state_, 60s);
        } else {
            EXPECT_EQ(snapshot_.exit_code, 0) << "the snapshot of hostile failed:\n" << snapshot_.describe();
            if (snapshot_.exit_code != 0) return {};
            r = run_cli({"restore", image_.string(), "--instances", "1", "--request", path, "--json",
                         "--no-fallback"},
                        scratch_, state_, 60s);
        }
        EXPECT_EQ(r.exit_code, 0) << r.describe();
        json j = json::parse(r.out, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << "no JSON report:\n" << r.describe();
        if (j.is_discarded()) return {};
        if (start == Start::Restored) {
            EXPECT_TRUE(j.contains("instances") && j["instances"].size() == 1) << j.dump(2);
            if (!j.contains("instances") || j["instances"].empty()) return {};
            json inst = j["instances"][0];
            EXPECT_EQ(inst.value("mode", ""), "restore") << inst.dump(2);
            return inst;
        }
        return j;
    }

    static inline fs::path suite_scratch_, image_;
    static inline CliResult snapshot_;
    fs::path scratch_, state_;
};

TEST_P(Security, AttemptFailsAndLeavesNothing) {
    const auto& [a, start] = GetParam();
    HostView before = HostView::now();
    json report = attempt(a.name, start);
    std::string body = report.value("body", "");
    while (!body.empty() && body.back() == '\n') body.pop_back();
    EXPECT_EQ(report.value("status", 0), 200) << report.dump(2);
    EXPECT_EQ(body, a.expected) << a.name << (start == Start::Booted ? " (booted)" : " (restored)") << ": "
                                << report.dump(2);
    // The host: no mount and no key appeared or went.
    HostView after = HostView::now();
    EXPECT_EQ(after.mounts, before.mounts) << "the host's mount table changed";
    EXPECT_EQ(after.keys, before.keys) << "the host's keys changed";
    // The sandbox: torn down without leftovers.
    std::string instance = report.value("instance", "");
    EXPECT_FALSE(instance.empty()) << report.dump(2);
    EXPECT_EQ(sandbox_leftovers(instance, state_), "");
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(state_ / "instances", ec))
        ADD_FAILURE() << "left after the attempt: " << e.path();
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<Attempt, Start>>& info) {
    return std::get<0>(info.param).name +
           (std::get<1>(info.param) == Start::Booted ? "_booted" : "_restored");
}

INSTANTIATE_TEST_SUITE_P(Hostile, Security,
                         ::testing::Combine(::testing::ValuesIn(kAttempts),
                                            ::testing::Values(Start::Booted, Start::Restored)),
                         case_name);

}  // namespace
