// The restore suite's way of running the `initless` CLI: a subprocess with its own state dir, its
// output in files, killed after a timeout. Shared by the suite's test files.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

struct CliResult {
    int exit_code = -1;
    bool timed_out = false;
    std::string out, err;
    std::string describe() const {
        return (timed_out ? std::string("TIMED OUT (killed)") : "exit " + std::to_string(exit_code)) +
               "\n--- stdout\n" + out + "\n--- stderr\n" + err;
    }
};

// Runs `initless ARGS...` with INITLESS_STATE_DIR=state, stdout and stderr into files under scratch.
// After `timeout` the CLI is killed (its sandboxes die with it: init watches its control socket).
CliResult run_cli(const std::vector<std::string>& args, const fs::path& scratch, const fs::path& state,
                  std::chrono::seconds timeout) {
    static int counter = 0;
    fs::path out = scratch / ("cli-" + std::to_string(++counter) + ".out");
    fs::path err = scratch / ("cli-" + std::to_string(counter) + ".err");
    std::vector<std::string> argv_s = {INITLESS_BINARY};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (o < 0 || e < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0) ::_exit(126);
        ::setenv("INITLESS_STATE_DIR", state.c_str(), 1);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    CliResult r;
    if (pid < 0) {
        r.err = "fork failed";
        return r;
    }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    for (;;) {
        pid_t w = ::waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            r.timed_out = true;
            break;
        }
        std::this_thread::sleep_for(5ms);
    }
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_text(out);
    r.err = read_text(err);
    return r;
}

inline fs::path program_dir(const std::string& name) {
    return fs::path(RT_FUNCTIONS_DIR) / name;
}

// What a torn-down sandbox must not leave: its cgroup (in any controller) or its instance directory.
// Empty when nothing is left.
inline std::string sandbox_leftovers(const std::string& id, const fs::path& state_dir) {
    std::string out;
    std::error_code ec;
    for (const auto& controller : fs::directory_iterator("/sys/fs/cgroup", ec)) {
        fs::path dir = controller.path() / "initless" / id;
        if (fs::exists(dir)) out += "cgroup " + dir.string() + " is left; ";
    }
    if (fs::exists(state_dir / "instances" / id))
        out += "instance dir " + (state_dir / "instances" / id).string() + " is left; ";
    return out;
}

}  // namespace
