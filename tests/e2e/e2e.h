// Shared harness of the end-to-end tests: a per-test state dir (INITLESS_STATE_DIR), leak checks,
// running the `initless` binary as a subprocess, and paths to the test functions and examples.
// The tests run real sandboxes, so they need root; a test that cannot run here fails with the reason.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "initless/gateway/http_client.h"
#include "initless/sandbox/sandbox.h"

namespace e2e {

namespace fs = std::filesystem;

// tests/e2e/functions/<name>
fs::path test_function(const std::string& name);
// The deployable directory of an example: examples/<name>, or build/examples/<name> for built ones.
fs::path example_dir(const std::string& name);
fs::path initless_binary();

// A process we saw and expect to be gone: pid plus start time, so a reused pid is not mistaken.
struct ProcessId {
    pid_t pid = 0;
    uint64_t start = 0;
    static ProcessId of(pid_t pid);
    bool alive() const;
};

struct CliResult {
    int status = -1;  // wait status
    std::string out, err;
    int exit_code() const;
    std::string describe() const;  // for assertion messages
};

// A running `initless ...` subprocess with stdout/stderr going to files.
class CliProcess {
  public:
    CliProcess(const std::vector<std::string>& args, const fs::path& scratch);
    // The moved-from process handle must not kill the process when it is destroyed.
    CliProcess(CliProcess&& o) noexcept
        : pid_(std::exchange(o.pid_, 0)), out_(std::move(o.out_)), err_(std::move(o.err_)) {}
    ~CliProcess();
    pid_t pid() const { return pid_; }
    const fs::path& out_path() const { return out_; }  // its stdout, as written so far
    // Waits for the exit (killing it after `timeout` and failing the test).
    CliResult wait(std::chrono::milliseconds timeout = std::chrono::seconds(90));

  private:
    pid_t pid_ = 0;
    fs::path out_, err_;
};

// Base fixture: a fresh state dir per test (set as INITLESS_STATE_DIR for this process and the CLI it
// runs) and, after the test, the leak check of everything the test registered.
class E2eTest : public ::testing::Test {
  protected:
    void SetUp() override;
    void TearDown() override;

    // Runs `initless ARGS...` to completion.
    CliResult cli(const std::vector<std::string>& args,
                  std::chrono::milliseconds timeout = std::chrono::seconds(90));
    CliProcess cli_async(const std::vector<std::string>& args);

    // Remember an instance id / process: TearDown checks its cgroup, dir and processes are gone.
    void track(const initless::sandbox::Sandbox& sb);
    void track_instance(const std::string& id) { instances_.push_back(id); }
    void track_process(pid_t pid) { processes_.push_back(ProcessId::of(pid)); }

    // Everything tracked so far must be gone now (also called by TearDown).
    void expect_no_leftovers();

    std::vector<std::string> instance_dirs() const;  // names under the state dir's instances/

    fs::path scratch_;    // the test's own temp dir (removed in TearDown)
    fs::path state_dir_;  // scratch_/state
    std::vector<std::string> instances_;
    std::vector<ProcessId> processes_;
};

// GET `target` from the function in `sb` over a socket made inside its network namespace.
initless::gateway::HttpResponse get(const initless::sandbox::Sandbox& sb, const std::string& target);
// Waits for init to report an exit (polling), up to `timeout`.
std::optional<initless::sandbox::ExitReport> wait_exit(initless::sandbox::Sandbox& sb,
                                                       std::chrono::milliseconds timeout);

// Every /proc/mounts line mentioning "initless" and `under`; every initless cgroup directory named `id`;
// every process whose cgroup is initless/`id`.
std::vector<std::string> initless_mounts(const std::string& under = "");
std::vector<std::string> cgroup_dirs(const std::string& id);
std::vector<pid_t> processes_in_cgroup(const std::string& id);
std::vector<pid_t> own_children();

int check_leftovers();  // for `e2e_tests --check-leftovers`

std::string read_text(const fs::path& path);
void write_text(const fs::path& path, const std::string& text);

}  // namespace e2e
