#include "e2e.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "initless/sandbox/init.h"
#include "initless/sys/cgroup.h"
#include "initless/sys/process.h"

namespace e2e {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

fs::path test_function(const std::string& name) {
    return fs::path(E2E_FUNCTIONS_DIR) / name;
}

fs::path example_dir(const std::string& name) {
    fs::path built = fs::path(INITLESS_BINARY_DIR) / "examples" / name;
    if (fs::exists(built / "function.toml")) return built;
    return fs::path(INITLESS_SOURCE_DIR) / "examples" / name;
}

fs::path initless_binary() {
    return INITLESS_CLI;
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
}

ProcessId ProcessId::of(pid_t pid) {
    ProcessId p{pid, 0};
    try {
        p.start = initless::sys::proc_start_time(pid);
    } catch (const std::exception&) {
    }
    return p;
}

bool ProcessId::alive() const {
    if (pid <= 0 || !initless::sys::process_alive(pid)) return false;
    try {
        return initless::sys::proc_start_time(pid) == start;
    } catch (const std::exception&) {
        return false;
    }
}

int CliResult::exit_code() const {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string CliResult::describe() const {
    return "exit " + std::to_string(exit_code()) + "\n--- stdout\n" + out + "--- stderr\n" + err;
}

CliProcess::CliProcess(const std::vector<std::string>& args, const fs::path& scratch) {
    static int counter = 0;
    std::string tag = std::to_string(++counter);
    out_ = scratch / ("cli-" + tag + ".out");
    err_ = scratch / ("cli-" + tag + ".err");
    std::string binary = initless_binary().string();
    std::vector<std::string> argv_s = {binary};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
        int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int n = ::open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || n < 0) ::_exit(125);
        ::dup2(n, 0);
        ::dup2(o, 1);
        ::dup2(e, 2);
        std::vector<char*> argv;
        for (auto& a : argv_s) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(binary.c_str(), argv.data());
        ::_exit(126);
    }
}

CliProcess::~CliProcess() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
}

CliResult CliProcess::wait(std::chrono::milliseconds timeout) {
    CliResult r;
    auto deadline = Clock::now() + timeout;
    for (;;) {
        pid_t p = ::waitpid(pid_, &r.status, WNOHANG);
        if (p == pid_) break;
        if (Clock::now() > deadline) {
            ADD_FAILURE() << "initless (pid " << pid_ << ") still running after " << timeout.count()
                          << " ms; killed";
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &r.status, 0);
            break;
        }
        std::this_thread::sleep_for(10ms);
    }
    pid_ = 0;
    r.out = read_text(out_);
    r.err = read_text(err_);
    return r;
}

void E2eTest::SetUp() {
    if (::geteuid() != 0) GTEST_FAIL() << "the e2e tests run real sandboxes and need root";
    char tmpl[] = "/tmp/initless-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    scratch_ = tmpl;
    state_dir_ = scratch_ / "state";
    fs::create_directory(state_dir_);
    ::setenv("INITLESS_STATE_DIR", state_dir_.c_str(), 1);
}

void E2eTest::TearDown() {
    if (scratch_.empty()) return;
    expect_no_leftovers();
    std::error_code ec;
    fs::remove_all(scratch_, ec);
    EXPECT_FALSE(ec) << "remove " << scratch_ << ": " << ec.message();
    ::unsetenv("INITLESS_STATE_DIR");
}

CliResult E2eTest::cli(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
    return cli_async(args).wait(timeout);
}

CliProcess E2eTest::cli_async(const std::vector<std::string>& args) {
    return CliProcess(args, scratch_);
}

void E2eTest::track(const initless::sandbox::Sandbox& sb) {
    track_instance(sb.id());
    track_process(sb.init_pid());
}

std::vector<std::string> E2eTest::instance_dirs() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(state_dir_ / "instances", ec))
        out.push_back(e.path().filename());
    return out;
}

void E2eTest::expect_no_leftovers() {
    // This test's mounts only: other tests running at once have their instances' layers mounted.
    EXPECT_EQ(initless_mounts(scratch_.string()), std::vector<std::string>{})
        << "initless mounts visible on the host";
    EXPECT_EQ(instance_dirs(), std::vector<std::string>{}) << "instance dirs left under " << state_dir_;
    for (const auto& id : instances_) {
        EXPECT_EQ(cgroup_dirs(id), std::vector<std::string>{}) << "cgroup of " << id << " left";
        EXPECT_EQ(processes_in_cgroup(id), std::vector<pid_t>{}) << "processes left in cgroup " << id;
    }
    for (const auto& p : processes_) EXPECT_FALSE(p.alive()) << "process " << p.pid << " is still there";
    EXPECT_EQ(own_children(), std::vector<pid_t>{}) << "the test has child processes left";
}

initless::gateway::HttpResponse get(const initless::sandbox::Sandbox& sb, const std::string& target) {
    return initless::gateway::http_get(sb.connect(sb.spec().port), target, std::chrono::seconds(20));
}

std::optional<initless::sandbox::ExitReport> wait_exit(initless::sandbox::Sandbox& sb,
                                                       std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (auto e = sb.poll_exit()) return e;
        std::this_thread::sleep_for(20ms);
    }
    return std::nullopt;
}

std::vector<std::string> initless_mounts(const std::string& under) {
    std::vector<std::string> out;
    std::istringstream in(read_text("/proc/self/mounts"));
    for (std::string line; std::getline(in, line);)
        if (line.find("initless") != std::string::npos && line.find(under) != std::string::npos)
            out.push_back(line);
    return out;
}

std::vector<std::string> cgroup_dirs(const std::string& id) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& c : fs::directory_iterator(initless::sys::Cgroup::kRoot, ec)) {
        fs::path d = c.path() / initless::sys::Cgroup::kGroup / id;
        if (fs::exists(d, ec)) out.push_back(d.string());
    }
    return out;
}

std::vector<pid_t> processes_in_cgroup(const std::string& id) {
    std::vector<pid_t> out;
    std::string needle = std::string("/") + initless::sys::Cgroup::kGroup + "/" + id;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
        std::string name = e.path().filename();
        if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
        std::string cg = read_text(e.path() / "cgroup");
        if (cg.find(needle + "\n") != std::string::npos) out.push_back(std::stoi(name));
    }
    return out;
}

std::vector<pid_t> own_children() {
    std::vector<pid_t> out;
    std::error_code ec;
    for (const auto& t : fs::directory_iterator("/proc/self/task", ec)) {
        std::istringstream in(read_text(t.path() / "children"));
        for (pid_t p; in >> p;) out.push_back(p);
    }
    return out;
}

// After the whole suite: nothing of it may be left on the machine (mounts, cgroups and processes of
// the e2e test functions, scratch dirs). Prints what it finds; returns the exit code.
int check_leftovers() {
    std::vector<std::string> found;
    for (const auto& m : initless_mounts("initless-e2e-")) found.push_back("mount: " + m);
    std::error_code ec;
    std::set<std::string> ids;
    for (const auto& c : fs::directory_iterator(initless::sys::Cgroup::kRoot, ec))
        for (const auto& g : fs::directory_iterator(c.path() / initless::sys::Cgroup::kGroup, ec))
            if (g.path().filename().string().rfind("e2e-", 0) == 0) {
                found.push_back("cgroup: " + g.path().string());
                ids.insert(g.path().filename());
            }
    for (const auto& id : ids)
        for (pid_t p : processes_in_cgroup(id)) found.push_back("process " + std::to_string(p) + " in " + id);
    for (const auto& e : fs::directory_iterator("/tmp", ec))
        if (e.path().filename().string().rfind("initless-e2e-", 0) == 0)
            found.push_back("scratch dir: " + e.path().string());
    for (const auto& f : found) std::printf("left over: %s\n", f.c_str());
    if (found.empty()) std::printf("e2e: nothing left over\n");
    return found.empty() ? 0 : 1;
}

}  // namespace e2e

// The sandbox re-executes /proc/self/exe as `__init --control FD` for its pid 1, so this binary must
// also be able to be that init, exactly like `initless __init`.
int main(int argc, char** argv) {
    if (argc == 4 && std::strcmp(argv[1], "__init") == 0 && std::strcmp(argv[2], "--control") == 0)
        initless::sandbox::run_init(std::atoi(argv[3]));
    if (argc == 2 && std::strcmp(argv[1], "--check-leftovers") == 0) return e2e::check_leftovers();
    // Orphans of the CLI processes we start (a sandbox init whose `initless run` was killed) become our
    // children, so a test can see how they end and none goes unnoticed.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
