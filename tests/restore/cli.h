// The restore suite's way of running the `initless` CLI: a subprocess with its own state dir, its
// output in files, killed after a timeout; and the fixture of the tests that make sandboxes through
// the library in this process. Shared by the suite's test files.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

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

// A child process (its stdout and stderr in files), killed when dropped.
struct Child {
    pid_t pid = -1;
    fs::path out, err;
    Child(std::vector<std::string> argv, const fs::path& scratch, const fs::path& state,
          const std::string& tag) {
        out = scratch / (tag + ".out");
        err = scratch / (tag + ".err");
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        pid = ::fork();
        if (pid == 0) {
            int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (o < 0 || e < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0) ::_exit(126);
            ::setenv("INITLESS_STATE_DIR", state.c_str(), 1);
            ::execvp(args[0], args.data());
            ::_exit(127);
        }
    }
    // Exit code (128+signal) once it exited within `limit`, else -1 (still running); 126 if it never
    // started (fork failed).
    int wait(std::chrono::milliseconds limit) {
        if (pid <= 0) return 126;
        auto until = std::chrono::steady_clock::now() + limit;
        for (;;) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            if (std::chrono::steady_clock::now() > until) return -1;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    ~Child() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
};

// Runs `initless ARGS...` with INITLESS_STATE_DIR=state, stdout and stderr into files under scratch.
// After `timeout` the CLI is killed (its sandboxes die with it: init watches its control socket).
CliResult run_cli(const std::vector<std::string>& args, const fs::path& scratch, const fs::path& state,
                  std::chrono::seconds timeout) {
    static int counter = 0;
    std::vector<std::string> argv = {INITLESS_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    Child c(argv, scratch, state, "cli-" + std::to_string(++counter));
    CliResult r;
    if (c.pid < 0) {
        r.err = "fork failed";
        return r;
    }
    r.exit_code = c.wait(timeout);
    if (r.exit_code < 0) {
        r.timed_out = true;
        ::kill(c.pid, SIGKILL);
        int status = 0;
        ::waitpid(c.pid, &status, 0);
        c.pid = -1;
        r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    r.out = read_text(c.out);
    r.err = read_text(c.err);
    return r;
}

// `initless page-server --image IMAGE --listen IP:0`, in network namespace `ns` (empty: this one),
// started into `server` (its output under scratch, named by `tag`); the address it listens on once it
// says so (it verifies the image first), or "" and a test failure.
inline std::string start_page_server(std::optional<Child>& server, const fs::path& image,
                                     const std::string& ns, const std::string& ip, const fs::path& scratch,
                                     const fs::path& state, const std::string& tag,
                                     const std::vector<std::string>& options = {}) {
    std::vector<std::string> argv;
    if (!ns.empty()) argv = {"nsenter", "--net=/run/netns/" + ns};
    for (std::string a : {std::string(INITLESS_BINARY), std::string("page-server"), std::string("--image"),
                          image.string(), std::string("--listen"), ip + ":0"})
        argv.push_back(a);
    argv.insert(argv.end(), options.begin(), options.end());
    server.emplace(argv, scratch, state, tag);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    // The whole line: a read racing the server's write may see part of it (a port cut short).
    std::regex listening("listening on (\\S+)\n");
    while (std::chrono::steady_clock::now() < until) {
        std::smatch m;
        std::string out = read_text(server->out);
        if (std::regex_search(out, m, listening)) return m[1];
        int status = 0;
        if (::waitpid(server->pid, &status, WNOHANG) == server->pid) {
            server->pid = -1;
            ADD_FAILURE() << "page-server exited: " << read_text(server->err);
            return "";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "page-server did not start: " << read_text(server->err);
    return "";
}

// A copy of image dir `image` at `to` without its pages.img: what a remote restore is given. cp -a:
// the trees' digests cover owners, modes and mtimes.
inline bool manifest_copy(const fs::path& image, const fs::path& to) {
    std::string cmd = "cp -a '" + image.string() + "' '" + to.string() + "' >/dev/null 2>&1";
    int rc = std::system(cmd.c_str());
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) return false;
    std::error_code ec;
    return fs::remove(to / "pages.img", ec);
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

// For tests that make sandboxes in this process through the library (sandbox::Sandbox,
// restore::restore_into): a per-test scratch dir (prefix `prefix`) holding a state dir of its own,
// which INITLESS_STATE_DIR points at, with the CLI binary as the sandboxes' init. TearDown runs
// `initless gc` on that state dir (what a failed test left) and removes the scratch dir.
class LibrarySandboxTest : public ::testing::Test {
  protected:
    explicit LibrarySandboxTest(std::string prefix) : prefix_(std::move(prefix)) {}
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u) << "the restore suite runs real sandboxes and needs root";
        std::string tmpl = "/tmp/" + prefix_ + "-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        scratch_ = tmpl;
        state_ = scratch_ / "state";
        fs::create_directories(state_);
        ::setenv("INITLESS_STATE_DIR", state_.c_str(), 1);
        ::setenv("INITLESS_INIT_BINARY", INITLESS_BINARY, 1);
    }
    void TearDown() override {
        run_cli({"gc"}, scratch_, state_, 30s);
        std::error_code ec;
        fs::remove_all(scratch_, ec);
    }
    fs::path scratch_, state_;

  private:
    std::string prefix_;
};

}  // namespace
