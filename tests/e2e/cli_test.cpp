// CLI-level: `initless run` and `initless gc` as subprocesses, with every example and the test functions.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "e2e.h"

using namespace e2e;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

class CliE2e : public E2eTest {
  protected:
    // `initless run DIR --request TARGET --json`; expects success and returns the JSON.
    json run_json(const fs::path& dir, const std::string& target = "/") {
        auto r = cli({"run", dir.string(), "--request", target, "--json"});
        EXPECT_EQ(r.exit_code(), 0) << r.describe();
        json out;
        try {
            out = json::parse(r.out);
        } catch (const std::exception& e) {
            ADD_FAILURE() << "not JSON: " << e.what() << "\n" << r.describe();
            return json::object();
        }
        if (out.contains("instance")) track_instance(out["instance"].get<std::string>());
        return out;
    }

    // The one instance under the state dir, waiting up to `timeout` for it to appear.
    std::string wait_instance(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            auto dirs = instance_dirs();
            if (dirs.size() == 1 && fs::exists(state_dir_ / "instances" / dirs[0] / "init")) return dirs[0];
            std::this_thread::sleep_for(20ms);
        }
        return {};
    }

    fs::path write_spec(const std::string& name, const std::string& toml) {
        fs::path dir = scratch_ / name;
        fs::create_directories(dir);
        write_text(dir / "function.toml", toml);
        return dir;
    }
};

class ExampleE2e : public CliE2e, public ::testing::WithParamInterface<std::string> {};

}  // namespace

TEST_P(ExampleE2e, BootsAndAnswers) {
    fs::path dir = example_dir(GetParam());
    ASSERT_TRUE(fs::exists(dir / "function.toml")) << dir << " has no function.toml (is the example built?)";
    json out = run_json(dir);
    ASSERT_TRUE(out.contains("status")) << out.dump();
    EXPECT_EQ(out["status"], 200) << out.dump();
    EXPECT_EQ(out["function"], GetParam());
    EXPECT_EQ(out["mode"], "boot");
    EXPECT_FALSE(out["body"].get<std::string>().empty());
    double prepare = out["prepare_ms"], init = out["init_ms"], exec = out["exec_ms"], total = out["total_ms"];
    EXPECT_GT(prepare, 0);
    EXPECT_GT(init, 0);
    EXPECT_GT(exec, 0);
    EXPECT_GE(total, prepare + init + exec - 0.5);
    EXPECT_LT(total, 60000) << "a plain boot of a small example is seconds, not minutes";
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleE2e,
                         ::testing::Values("python-hello", "python-bigdict", "node-hello", "java-hello",
                                           "c-hello"),
                         [](const auto& info) {
                             std::string n = info.param;
                             for (char& c : n)
                                 if (c == '-') c = '_';
                             return n;
                         });

// The checksum python-bigdict's app.py computes over its dict of `n` keys, derived here from the
// formula it documents (value(k) = k * MULT mod 2^61-1; checksum = sum of k * value(k) mod 2^61-1).
uint64_t expected_bigdict_checksum(uint64_t n) {
    using u128 = unsigned __int128;
    const u128 mod = (u128{1} << 61) - 1, mult = 0x9E3779B97F4A7C15ULL;
    u128 total = 0;
    for (uint64_t k = 0; k < n; ++k) total = (total + k * ((k * mult) % mod)) % mod;
    return static_cast<uint64_t>(total);
}

TEST_F(CliE2e, BigdictChecksumAnswers) {
    json out = run_json(example_dir("python-bigdict"), "/checksum");
    EXPECT_EQ(out["status"], 200) << out.dump();
    json body = json::parse(out.value("body", ""), nullptr, false);
    ASSERT_TRUE(body.is_object() && body.contains("checksum") && body.contains("n")) << out.dump();
    EXPECT_GT(body["n"].get<uint64_t>(), 0u);
    EXPECT_EQ(body["checksum"].get<uint64_t>(), expected_bigdict_checksum(body["n"].get<uint64_t>()))
        << out.dump();
}

TEST_F(CliE2e, HumanOutputHasTimings) {
    auto r = cli({"run", test_function("probe").string(), "--request", "/pid"});
    ASSERT_EQ(r.exit_code(), 0) << r.describe();
    EXPECT_NE(r.out.find("e2e-probe /pid -> 200"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("boot: prepare"), std::string::npos) << r.out;
}

TEST_F(CliE2e, NotFoundIsAStatusNotAnError) {
    json out = run_json(test_function("probe"), "/no-such-path");
    EXPECT_EQ(out["status"], 404);
}

TEST_F(CliE2e, SpecErrorNamesFileLineAndKey) {
    fs::path dir = write_spec("badkey", "command = [\"/bin/true\"]\nready = \"r\"\ncolour = \"blue\"\n");
    auto r = cli({"run", dir.string(), "--json"});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("function.toml:3"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("colour"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(instance_dirs(), std::vector<std::string>{}) << "a bad spec must not prepare a sandbox";
}

TEST_F(CliE2e, SpecErrorWrongTypeAndMissingKey) {
    fs::path wrong =
        write_spec("wrongtype", "command = [\"/bin/true\"]\nready = \"r\"\nmemory_mb = \"lots\"\n");
    auto r = cli({"run", wrong.string()});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("memory_mb"), std::string::npos) << r.err;

    fs::path missing = write_spec("noready", "command = [\"/bin/true\"]\n");
    r = cli({"run", missing.string()});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("ready"), std::string::npos) << r.err;

    r = cli({"run", (scratch_ / "does-not-exist").string()});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("does-not-exist"), std::string::npos) << r.err;
}

TEST_F(CliE2e, NeverReadyFailsAfterTimeout) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = cli({"run", test_function("never-ready").string(), "--json"});
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("did not print its ready phrase"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("starting but never ready"), std::string::npos) << r.err;
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 15s);
}

TEST_F(CliE2e, ExitsEarlyFails) {
    auto r = cli({"run", test_function("exits-early").string()});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("exited with status 3"), std::string::npos) << r.err;
}

TEST_F(CliE2e, MissingCommandFails) {
    auto r = cli({"run", test_function("bad-command").string()});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("/nonexistent/server"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("exited with status 127"), std::string::npos) << r.err;
}

TEST_F(CliE2e, FunctionCrashMidRequestFailsClean) {
    auto r = cli({"run", test_function("probe").string(), "--request", "/crash", "--json"});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_EQ(r.out, "");
}

TEST_F(CliE2e, OomKilledFunctionFailsClean) {
    auto r = cli({"run", test_function("probe").string(), "--request", "/hog", "--json"});
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("OOM killer"), std::string::npos) << "the error does not name the OOM kill:\n"
                                                           << r.describe();
}

// The controller (`initless run`) is killed with SIGKILL while its function is up: init notices the
// control socket close and ends the sandbox by itself; `initless gc` removes the cgroup and the dir.
TEST_F(CliE2e, KilledRunIsCleanedByGc) {
    auto run = cli_async({"run", test_function("never-ready-long").string(), "--json"});
    std::string id = wait_instance(20s);
    ASSERT_FALSE(id.empty()) << "no instance appeared under " << state_dir_;
    track_instance(id);
    fs::path inst = state_dir_ / "instances" / id;
    // Wait until the function runs (its first line is in the log), so there is a whole tree to kill.
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (read_text(inst / "log").find("starting but never ready") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    ASSERT_NE(read_text(inst / "log").find("starting"), std::string::npos) << "the function never started";
    pid_t init = json::parse(read_text(inst / "init"))["pid"].get<pid_t>();
    std::vector<pid_t> members = processes_in_cgroup(id);
    EXPECT_GE(members.size(), 2u) << "init and the function";
    for (pid_t p : members) track_process(p);

    ASSERT_EQ(::kill(run.pid(), SIGKILL), 0);
    auto r = run.wait(10s);
    EXPECT_TRUE(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGKILL) << r.describe();

    // init was orphaned to us (the test is a child subreaper): it must exit on its own, cleanly.
    int status = 0;
    pid_t got = 0;
    deadline = std::chrono::steady_clock::now() + 10s;
    while ((got = ::waitpid(init, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    ASSERT_EQ(got, init) << "sandbox init did not end after its controller was killed";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "init wait status " << status;
    EXPECT_EQ(processes_in_cgroup(id), std::vector<pid_t>{}) << "the function outlived init";

    // What is left until gc: the instance dir and the (empty) cgroup.
    EXPECT_TRUE(fs::exists(inst));
    EXPECT_FALSE(cgroup_dirs(id).empty());

    auto gc = cli({"gc"});
    EXPECT_EQ(gc.exit_code(), 0) << gc.describe();
    EXPECT_NE(gc.out.find("removed instance " + id), std::string::npos) << gc.out;
    expect_no_leftovers();
    auto again = cli({"gc"});
    EXPECT_EQ(again.exit_code(), 0) << again.describe();
    EXPECT_EQ(again.out, "") << "a second gc found more to remove";
}

// The same, but the next `initless run` (which collects garbage first) does the cleaning.
TEST_F(CliE2e, NextRunCollectsGarbage) {
    auto run = cli_async({"run", test_function("never-ready-long").string()});
    std::string id = wait_instance(20s);
    ASSERT_FALSE(id.empty());
    track_instance(id);
    pid_t init = json::parse(read_text(state_dir_ / "instances" / id / "init"))["pid"].get<pid_t>();
    ::kill(run.pid(), SIGKILL);
    run.wait(10s);
    int status = 0;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (::waitpid(init, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    json out = run_json(test_function("probe"));
    EXPECT_EQ(out["status"], 200);
}
