// `initless serve` end to end: a real daemon (the initless binary) with its own state dir and port,
// driven over real HTTP and through the CLI verbs, restoring real sandboxes.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "e2e.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"

namespace e2e {
namespace {

using namespace std::chrono_literals;
using initless::gateway::HttpRequest;
using initless::gateway::HttpResponse;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

uint16_t free_port() {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(s);
    return ntohs(a.sin_port);
}

std::string header(const HttpResponse& r, const std::string& name) {
    auto it = r.headers.find(name);
    return it == r.headers.end() ? "" : it->second;
}

class ServeTest : public E2eTest {
  protected:
    void SetUp() override {
        E2eTest::SetUp();
        registry_ = scratch_ / "registry";
    }
    void TearDown() override {
        if (daemon_) stop_daemon();
        // The tmpfs image store of this test's state dir (controller/registry.cpp names it by a hash of
        // the state dir): a daemon that stops cleanly removes it, one that failed or was killed leaves
        // it, and no later daemon has this state dir to clean it up.
        std::error_code ec;
        fs::path tmpfs_root =
            fs::path("/dev/shm/initless-images") /
            fmt::format("{:016x}", std::hash<std::string>{}(fs::absolute(registry_).string()));
        fs::remove_all(tmpfs_root, ec);
        fs::remove(tmpfs_root.parent_path(), ec);  // only if empty: another daemon's store may be in it
        E2eTest::TearDown();
    }

    void start_daemon(std::vector<std::string> extra = {}) {
        port_ = free_port();
        address_ = "127.0.0.1:" + std::to_string(port_);
        std::vector<std::string> args = {"serve", "--listen", listen_host_ + ":" + std::to_string(port_),
                                         "--state", registry_.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        daemon_.emplace(cli_async(args));
        track_process(daemon_->pid());
        auto deadline = Clock::now() + 30s;
        while (Clock::now() < deadline) {
            try {
                if (request("GET", "/healthz").status == 200) return;
            } catch (const std::exception&) {
            }
            siginfo_t info{};
            if (::waitid(P_PID, static_cast<id_t>(daemon_->pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                info.si_pid == daemon_->pid()) {
                auto r = daemon_->wait(1s);
                daemon_.reset();
                FAIL() << "the daemon exited before listening: " << r.describe();
            }
            std::this_thread::sleep_for(50ms);
        }
        ::kill(daemon_->pid(), SIGKILL);
        auto r = daemon_->wait(10s);
        daemon_.reset();
        FAIL() << "the daemon did not answer /healthz within 30 s: " << r.describe();
    }

    // Whether the function's log (`initless logs`) shows `line` within 5 s (the daemon copies its
    // instances' output every 50 ms).
    ::testing::AssertionResult log_shows(const std::string& function, const std::string& line) {
        std::string log;
        for (auto deadline = Clock::now() + 5s; Clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
            log = cli({"logs", function, "--server", address_}).out;
            if (log.find(line) != std::string::npos) return ::testing::AssertionSuccess();
        }
        return ::testing::AssertionFailure()
               << "the log of " << function << " has no '" << line << "' after 5 s:\n"
               << log;
    }

    // Deploys a counter variant named `name` with no pool and calls it once: the id of its instance.
    std::string deploy_and_call_once(const std::string& name, std::map<std::string, std::string> keys = {}) {
        keys["name"] = "\"" + name + "\"";
        keys["prestart"] = "0";
        auto d = deploy(counter_variant(name.substr(4), keys));
        EXPECT_EQ(d.exit_code(), 0) << d.describe();
        auto first = invoke(name);
        EXPECT_EQ(first.body, "count 1");
        return header(first, "X-Initless-Instance");
    }

    // The next request is served by instance `id`, whose counter goes on to `count`: it was kept.
    void expect_instance_kept(const std::string& function, const std::string& id, int count) {
        auto again = invoke(function);
        EXPECT_EQ(again.body, "count " + std::to_string(count)) << "the instance was lost";
        EXPECT_EQ(header(again, "X-Initless-Instance"), id);
    }

    // SIGTERM, then the exit status; the daemon must drain and exit 0 by itself.
    CliResult stop_daemon() {
        ::kill(daemon_->pid(), SIGTERM);
        CliResult r = daemon_->wait(60s);
        daemon_.reset();
        return r;
    }

    HttpResponse request(const std::string& method, const std::string& target, const std::string& body = "",
                         std::map<std::string, std::string> headers = {}) {
        HttpRequest req;
        req.method = method;
        req.target = target;
        req.body = body;
        req.headers = std::move(headers);
        return initless::gateway::http_request(
            initless::sys::connect_tcp(initless::sys::TcpAddress{"127.0.0.1", port_},
                                       std::chrono::seconds(10)),
            req, 60s);
    }

    HttpResponse invoke(const std::string& function, const std::string& path = "") {
        auto r = request("GET", "/function/" + function + path);
        auto it = r.headers.find("X-Initless-Instance");
        if (it != r.headers.end()) seen_instances_.insert(it->second);
        return r;
    }

    CliResult deploy(const fs::path& dir) {
        return cli({"deploy", dir.string(), "--server", address_}, 120s);
    }

    // A copy of tests/e2e/functions/counter with function.toml keys replaced.
    fs::path counter_variant(const std::string& name, const std::map<std::string, std::string>& keys) {
        fs::path dir = scratch_ / name;
        fs::create_directories(dir);
        fs::copy_file(test_function("counter") / "app.py", dir / "app.py");
        std::string toml = read_text(test_function("counter") / "function.toml");
        std::string out;
        std::istringstream in(toml);
        std::set<std::string> done;
        for (std::string line; std::getline(in, line);) {
            auto eq = line.find(" = ");
            std::string key = eq == std::string::npos ? "" : line.substr(0, eq);
            if (line.rfind("[env]", 0) == 0) {
                for (const auto& [k, v] : keys)
                    if (!done.count(k)) out += k + " = " + v + "\n";
                done.insert("[env]");
            }
            if (keys.count(key) && !done.count("[env]")) {
                out += key + " = " + keys.at(key) + "\n";
                done.insert(key);
            } else {
                out += line + "\n";
            }
        }
        write_text(dir / "function.toml", out);
        return dir;
    }

    // The daemon's CPU time so far (utime + stime, proc(5) fields 14 and 15).
    uint64_t daemon_cpu_ms() const {
        auto f = initless::sys::proc_stat_fields(daemon_->pid());
        return (std::stoull(f.at(14)) + std::stoull(f.at(15))) * 1000 / ::sysconf(_SC_CLK_TCK);
    }

    void TrackSeenInstances() {
        for (const auto& id : seen_instances_) track_instance(id);
    }

    fs::path registry_;
    uint16_t port_ = 0;
    std::string address_;
    std::string listen_host_ = "127.0.0.1";
    std::optional<CliProcess> daemon_;
    std::set<std::string> seen_instances_;
};

TEST_F(ServeTest, DeployThenColdThenWarmWithTimingsAndMetrics) {
    start_daemon();
    auto d = deploy(test_function("counter"));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    for (const char* step : {"copy", "boot", "ready", "warmup", "checkpoint", "trial-restore", "publish"})
        EXPECT_NE(d.out.find(step), std::string::npos) << "deploy did not show step " << step << "\n"
                                                       << d.out;

    auto cold = invoke("e2e-counter");
    ASSERT_EQ(cold.status, 200) << cold.body;
    EXPECT_EQ(cold.body, "count 1");
    EXPECT_EQ(header(cold, "X-Initless-Start"), "cold");
    std::regex timing(R"(queue;dur=[0-9.]+, sandbox;dur=[0-9.]+, restore;dur=[0-9.]+, exec;dur=[0-9.]+)");
    EXPECT_TRUE(std::regex_match(header(cold, "Server-Timing"), timing)) << header(cold, "Server-Timing");

    auto warm = invoke("e2e-counter");
    ASSERT_EQ(warm.status, 200) << warm.body;
    EXPECT_EQ(warm.body, "count 2") << "the warm instance must continue the cold one's counter";
    EXPECT_EQ(header(warm, "X-Initless-Start"), "warm");
    EXPECT_EQ(header(warm, "X-Initless-Instance"), header(cold, "X-Initless-Instance"));

    // A path and query reach the function; the CLI prints the body.
    auto echo = request("POST", "/function/e2e-counter/echo?x=1", "hello");
    EXPECT_EQ(echo.body, "hello");
    auto inv = cli({"invoke", "e2e-counter", "/", "--server", address_});
    EXPECT_EQ(inv.exit_code(), 0) << inv.describe();
    EXPECT_EQ(inv.out, "count 3");

    // Nothing of the daemon's (its listening socket, client connections, registry files) reaches the
    // function: 0-2, its listener, the gateway's kept-alive connections to it (one per I/O loop that has
    // served it: 2 by default), and what Python opens itself.
    auto fds = invoke("e2e-counter", "/fds");
    ASSERT_EQ(fds.status, 200);
    int sockets = 0;
    std::istringstream lines(fds.body);
    for (std::string line; std::getline(lines, line);) {
        if (line.find("socket:") != std::string::npos) sockets++;
        EXPECT_EQ(line.find(registry_.string()), std::string::npos) << line;
    }
    EXPECT_LE(sockets, 3) << fds.body;

    auto metrics = request("GET", "/metrics");
    ASSERT_EQ(metrics.status, 200);
    EXPECT_NE(metrics.body.find("initless_starts_total{function=\"e2e-counter\",kind=\"cold\"} 1"),
              std::string::npos)
        << metrics.body;
    EXPECT_NE(
        metrics.body.find("gateway_function_invocation_total{function_name=\"e2e-counter\",code=\"200\"} 5"),
        std::string::npos)
        << metrics.body;
    EXPECT_NE(metrics.body.find("initless_restore_seconds_count{function=\"e2e-counter\"}"),
              std::string::npos);
    // The real promtool checks the exposition format.
    fs::path file = scratch_ / "metrics.txt";
    write_text(file, metrics.body);
    ASSERT_TRUE(fs::exists("/usr/bin/promtool"))
        << "promtool missing: scripts/setup.sh installs Debian's prometheus";
    std::string cmd = "/usr/bin/promtool check metrics < " + file.string() + " > " +
                      (scratch_ / "promtool.out").string() + " 2>&1";
    int rc = std::system(cmd.c_str());
    EXPECT_EQ(rc, 0) << read_text(scratch_ / "promtool.out");

    auto ls = cli({"ls", "--server", address_});
    EXPECT_EQ(ls.exit_code(), 0) << ls.describe();
    EXPECT_NE(ls.out.find("e2e-counter"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find(header(cold, "X-Initless-Instance")), std::string::npos) << ls.out;
    auto logs = cli({"logs", "e2e-counter", "--server", address_});
    EXPECT_EQ(logs.exit_code(), 0) << logs.describe();
    auto stats = cli({"stats", "--server", address_, "--json"});
    EXPECT_EQ(stats.exit_code(), 0) << stats.describe();
    EXPECT_EQ(json::parse(stats.out)["e2e-counter"]["starts"]["cold"].get<double>(), 1) << stats.out;

    auto stopped = stop_daemon();
    EXPECT_EQ(stopped.exit_code(), 0) << stopped.describe();
    TrackSeenInstances();
}

// A function that serves one connection at a time (Python's HTTPServer speaking HTTP/1.1 reads a
// kept-alive connection until it closes) and takes one request at a time: requests that come in on
// new client connections, which the daemon spreads over its I/O loops, are all answered at once. The
// gateway kept one idle upstream connection per loop, and a request on the other loop waited behind
// it until the function's timeout (504).
TEST_F(ServeTest, OneConnectionAtATimeFunctionServesEveryLoop) {
    start_daemon();
    auto d = deploy(test_function("one-connection"));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    for (int i = 1; i <= 6; ++i) {
        auto t0 = Clock::now();
        auto r = invoke("e2e-one-connection");
        EXPECT_EQ(r.status, 200) << "request " << i << ": " << r.body;
        EXPECT_EQ(r.body, "count " + std::to_string(i));
        EXPECT_LT(Clock::now() - t0, 2s) << "request " << i << " waited";
    }
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A function whose accept queue overflows (backlog 1, one accept every 5 ms) has its kernel drop
// the SYNs of the connections beyond it; left to the kernel, each would be sent again after 1 s. The
// gateway tries such a connection again within milliseconds (2.5-5 ms, then 5-10, .. up to 80-160), so
// 12 requests at once are all answered within a few of those tries (~0.2 s), none after a second.
TEST_F(ServeTest, ConnectionsDroppedByAFullAcceptQueueAreRetriedSoon) {
    start_daemon();
    auto d = deploy(test_function("slow-accept"));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    ASSERT_EQ(invoke("e2e-slow-accept").status, 200);  // the instance, restored
    std::vector<std::thread> threads;
    std::vector<HttpResponse> results(12);
    std::vector<Clock::duration> took(results.size());
    for (size_t i = 0; i < results.size(); ++i)
        threads.emplace_back([&, i] {
            auto t0 = Clock::now();
            try {
                results[i] = request("GET", "/function/e2e-slow-accept/");
            } catch (const std::exception& e) {
                results[i].body = e.what();
            }
            took[i] = Clock::now() - t0;
        });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < results.size(); ++i) {
        EXPECT_EQ(results[i].status, 200) << results[i].body;
        EXPECT_LT(took[i], 900ms) << "request " << i << " took "
                                  << std::chrono::duration_cast<std::chrono::milliseconds>(took[i]).count()
                                  << " ms: a dropped SYN was left to the kernel's 1 s retry";
    }
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// The gateway's threads poll for a while before they sleep when a request is alone in flight
// (ServerOptions::spin_us); they must still sleep through a slow function's request and an idle
// spell, or an idle daemon would burn a core. Its CPU time over a 1 s request and 1 s without any
// is what a loop that never stopped polling would use in one tenth of that.
TEST_F(ServeTest, GatewayThreadsSleepThroughSlowRequestsAndIdleness) {
    start_daemon();
    auto d = deploy(counter_variant("spin", {{"name", "\"e2e-spin\""}, {"timeout_s", "10"}}));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    for (int i = 1; i <= 50; ++i) {
        auto r = invoke("e2e-spin");
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.body, "count " + std::to_string(i));
    }
    auto before = daemon_cpu_ms();
    auto slow = invoke("e2e-spin", "/slow?ms=1000");
    EXPECT_EQ(slow.status, 200) << slow.body;
    std::this_thread::sleep_for(1s);
    auto used = daemon_cpu_ms() - before;
    EXPECT_LT(used, 200u) << "the daemon used " << used << " ms of CPU in 2 s with one slow request";
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// `initless logs -f` prints what instances print while it runs (the body streams, not at the end).
TEST_F(ServeTest, LogsFollowStreamsAsInstancesPrint) {
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    auto before = fs::directory_iterator(scratch_);
    std::set<fs::path> old_files;
    for (const auto& e : before) old_files.insert(e.path());
    auto follow = cli_async({"logs", "e2e-counter", "-f", "--server", address_});
    std::this_thread::sleep_for(300ms);
    fs::path out;
    for (const auto& e : fs::directory_iterator(scratch_))
        if (!old_files.count(e.path()) && e.path().extension() == ".out") out = e.path();
    ASSERT_FALSE(out.empty()) << "no output file of `initless logs -f`";
    ASSERT_EQ(invoke("e2e-counter").status, 200);
    auto deadline = Clock::now() + 5s;
    while (read_text(out).find("counter: request 1") == std::string::npos && Clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    EXPECT_NE(read_text(out).find("counter: request 1"), std::string::npos) << read_text(out);
    ::kill(follow.pid(), SIGTERM);
    follow.wait(10s);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

TEST_F(ServeTest, ConcurrentRequestsScaleOut) {
    start_daemon();
    auto d = deploy(
        counter_variant("scale", {{"name", "\"e2e-scale\""}, {"max_instances", "5"}, {"prestart", "2"}}));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    std::vector<std::thread> threads;
    std::vector<HttpResponse> results(20);
    std::atomic<int> errors{0};
    for (int i = 0; i < 20; ++i)
        threads.emplace_back([&, i] {
            try {
                results[i] = request("GET", "/function/e2e-scale/slow?ms=300");
            } catch (const std::exception&) {
                errors++;
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(errors, 0);
    std::set<std::string> instances;
    for (const auto& r : results) {
        EXPECT_EQ(r.status, 200) << r.body;
        instances.insert(header(r, "X-Initless-Instance"));
    }
    seen_instances_.insert(instances.begin(), instances.end());
    EXPECT_GE(instances.size(), 3u) << "20 concurrent requests with concurrency = 1 must scale out";
    EXPECT_LE(instances.size(), 5u) << "max_instances = 5";
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A scale up restores a few instances at a time, as a burst of requests does: never more than the
// daemon's restores at once (--restores-at-once) are starting, the rest wait as pending, and all come up.
TEST_F(ServeTest, ScaleUpRestoresAFewAtATime) {
    const uint32_t at_once = 3;
    start_daemon({"--restores-at-once", std::to_string(at_once)});
    ASSERT_EQ(deploy(counter_variant("paced", {{"name", "\"e2e-paced\""},
                                               {"max_instances", "12"},
                                               {"prestart", "0"},
                                               {"memory_mb", "128"}}))
                  .exit_code(),
              0);
    auto scaled = request("POST", "/system/scale-function/e2e-paced", R"({"replicas": 12})");
    ASSERT_EQ(scaled.status, 202) << scaled.body;  // accepted: the instances come up afterwards
    EXPECT_EQ(json::parse(scaled.body)["starting"], 12) << scaled.body;
    uint32_t most_restoring = 0, most_pending = 0;
    json described;
    for (auto deadline = Clock::now() + 60s; Clock::now() < deadline; std::this_thread::sleep_for(5ms)) {
        described = json::parse(request("GET", "/system/function/e2e-paced").body);
        // "starting" counts an instance until it is up, a while after its restore ended and the next began.
        most_restoring = std::max(most_restoring, described["restoring"].get<uint32_t>());
        most_pending = std::max(most_pending, described["starts_pending"].get<uint32_t>());
        if (described["idle"].get<uint32_t>() == 12) break;
    }
    EXPECT_EQ(described["idle"].get<uint32_t>(), 12u) << described.dump();
    std::string stats = cli({"stats", "--server", address_, "--json"}).out;  // a restore that fell back boots
    EXPECT_GE(most_restoring, 1u);
    EXPECT_LE(most_restoring, at_once) << "more restores at once than the daemon allows; " << stats;
    EXPECT_GT(most_pending, 0u) << "12 starts with " << at_once << " at once: some must have waited; "
                                << stats;
    for (const auto& inst : described["instances"]) seen_instances_.insert(inst["id"].get<std::string>());
    EXPECT_EQ(invoke("e2e-paced").status, 200);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// The keep-alive policy decides over idle instances: with an idle-memory budget smaller than two
// instances, LRU evicts the least recently used one as soon as both are idle.
TEST_F(ServeTest, IdleMemoryBudgetMakesThePolicyEvict) {
    start_daemon({"--policy", "lru", "--memory-mb", "150"});
    // An idle instance of a function removed since: gone from the policy too. Left in its idle set, it
    // was the one the policy chose to evict below, which freed nothing.
    ASSERT_EQ(deploy(counter_variant("ghost", {{"name", "\"e2e-ghost\""}, {"prestart", "0"}})).exit_code(),
              0);
    ASSERT_EQ(invoke("e2e-ghost").status, 200);
    ASSERT_EQ(cli({"rm", "e2e-ghost", "--server", address_}).exit_code(), 0);
    ASSERT_EQ(deploy(counter_variant("evict", {{"name", "\"e2e-evict\""}, {"prestart", "0"}})).exit_code(),
              0);
    std::vector<HttpResponse> results(2);
    std::thread a([&] { results[0] = invoke("e2e-evict", "/slow?ms=600"); });
    std::thread b([&] { results[1] = invoke("e2e-evict", "/slow?ms=600"); });
    a.join();
    b.join();
    ASSERT_EQ(results[0].status, 200);
    ASSERT_EQ(results[1].status, 200);
    EXPECT_NE(header(results[0], "X-Initless-Instance"), header(results[1], "X-Initless-Instance"));
    // Two idle instances of 96 MB each exceed the 150 MB budget: one goes.
    size_t instances = 2;
    auto deadline = Clock::now() + 5s;
    while (Clock::now() < deadline && instances > 1) {
        instances = json::parse(request("GET", "/system/function/e2e-evict").body)["instances"].size();
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(instances, 1u);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

TEST_F(ServeTest, CrashGives502NamingTheExitThenANewInstanceServes) {
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    ASSERT_EQ(invoke("e2e-counter").status, 200);
    auto crash = invoke("e2e-counter", "/crash");
    EXPECT_EQ(crash.status, 502) << crash.body;
    EXPECT_NE(crash.body.find("exited with status 3"), std::string::npos) << crash.body;
    auto next = invoke("e2e-counter");
    EXPECT_EQ(next.status, 200) << next.body;
    EXPECT_EQ(next.body, "count 1") << "a new instance, restored from the snapshot";
    auto oom = invoke("e2e-counter", "/hog");
    EXPECT_EQ(oom.status, 502) << oom.body;
    EXPECT_NE(oom.body.find("OOM"), std::string::npos) << oom.body;
    EXPECT_EQ(invoke("e2e-counter").status, 200);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A crash under load fails the crashing request only. The instance's death is learnt a moment after
// its connection broke; meanwhile the instance looked free (concurrency = 1, nothing in flight) and the
// requests that came were sent to it, each getting the crash's 502 (found by a soak: ~8 per crash).
TEST_F(ServeTest, ACrashUnderLoadFailsOnlyTheCrashingRequest) {
    start_daemon();
    auto d = deploy(counter_variant("crash-load", {{"name", "\"e2e-crash-load\""}, {"max_instances", "4"}}));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    std::atomic<bool> stop{false};
    std::atomic<int> ok{0};
    std::mutex mu;
    std::vector<std::string> failures;
    std::vector<std::thread> load;
    for (int i = 0; i < 4; ++i)
        load.emplace_back([&] {
            while (!stop) {
                try {
                    auto r = request("GET", "/function/e2e-crash-load/");
                    if (r.status == 200) {
                        ok++;
                        continue;
                    }
                    std::lock_guard lock(mu);
                    failures.push_back(fmt::format("{} {}", r.status, r.body));
                } catch (const std::exception& e) {
                    std::lock_guard lock(mu);
                    failures.push_back(e.what());
                }
            }
        });
    for (int i = 0; i < 6; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        auto crash = request("GET", "/function/e2e-crash-load/crash");
        EXPECT_EQ(crash.status, 502) << crash.body;
    }
    stop = true;
    for (auto& t : load) t.join();
    EXPECT_GT(ok.load(), 20);
    EXPECT_TRUE(failures.empty()) << failures.size()
                                  << " requests beside the crashes failed, the first: " << failures.front();
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

std::string raw_exchange(uint16_t port, const std::string& bytes);

TEST_F(ServeTest, HungFunctionGives504AndIsKilled) {
    start_daemon();
    ASSERT_EQ(deploy(counter_variant("hang", {{"name", "\"e2e-hang\""}, {"timeout_s", "2"}})).exit_code(), 0);
    auto t0 = Clock::now();
    auto hung = invoke("e2e-hang", "/hang");
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_EQ(hung.status, 504) << hung.body;
    EXPECT_NE(hung.body.find("did not answer within"), std::string::npos) << hung.body;
    EXPECT_LT(s, 6.0);
    auto next = invoke("e2e-hang");
    EXPECT_EQ(next.status, 200) << next.body;

    // On one connection, a request to a function with a long timeout_s, then one to the hanging
    // function: the second's 2 s hold, not the first's 60 s (the connection has one timer).
    ASSERT_EQ(
        deploy(counter_variant("patient", {{"name", "\"e2e-patient\""}, {"timeout_s", "60"}})).exit_code(),
        0);
    t0 = Clock::now();
    std::string both =
        raw_exchange(port_,
                     "GET /function/e2e-patient/ HTTP/1.1\r\nHost: a\r\n\r\n"
                     "GET /function/e2e-hang/hang HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    s = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_NE(both.find("HTTP/1.1 200"), std::string::npos) << both;
    EXPECT_NE(both.find("HTTP/1.1 504"), std::string::npos) << both;
    EXPECT_LT(s, 6.0);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

TEST_F(ServeTest, QueueFullGives503AndQueueTimeoutGives504) {
    start_daemon();
    ASSERT_EQ(deploy(counter_variant("queue", {{"name", "\"e2e-queue\""},
                                               {"max_instances", "1"},
                                               {"queue_max", "2"},
                                               {"queue_timeout_ms", "700"}}))
                  .exit_code(),
              0);
    std::vector<std::thread> threads;
    std::vector<HttpResponse> results(4);
    threads.emplace_back([&] { results[0] = invoke("e2e-queue", "/slow?ms=2500"); });
    std::this_thread::sleep_for(300ms);
    for (int i = 1; i < 4; ++i) {
        threads.emplace_back([&, i] { results[i] = request("GET", "/function/e2e-queue/"); });
        std::this_thread::sleep_for(50ms);
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(results[0].status, 200) << results[0].body;
    std::multiset<int> statuses = {results[1].status, results[2].status, results[3].status};
    EXPECT_EQ(statuses, (std::multiset<int>{503, 504, 504}));
    for (int i = 1; i < 4; ++i) {
        if (results[i].status == 503) {
            EXPECT_NE(results[i].body.find("queue full"), std::string::npos) << results[i].body;
        }
        if (results[i].status == 504) {
            EXPECT_NE(results[i].body.find("queue_timeout_ms"), std::string::npos) << results[i].body;
        }
    }
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

TEST_F(ServeTest, LargeBodiesBothWays) {
    // With the tmpfs image store (images in RAM, as the seed's fastest mode).
    start_daemon({"--image-store", "tmpfs"});
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    auto described = json::parse(request("GET", "/system/function/e2e-counter").body);
    std::string image = described["snapshot"].get<std::string>();
    EXPECT_EQ(image.rfind("/dev/shm/initless-images/", 0), 0u) << image;
    EXPECT_TRUE(fs::exists(fs::path(image) / "manifest.json")) << image;
    std::string body(6 << 20, 'a');
    for (size_t i = 0; i < body.size(); i += 4096) body[i] = static_cast<char>('a' + (i / 4096) % 26);
    auto echo = request("POST", "/function/e2e-counter/echo", body);
    ASSERT_EQ(echo.status, 200);
    EXPECT_EQ(echo.body.size(), body.size());
    EXPECT_TRUE(echo.body == body);
    auto big = invoke("e2e-counter", "/big?mb=8");
    EXPECT_EQ(big.status, 200);
    EXPECT_EQ(big.body.size(), 8u << 20);
    // Removing the function removes its image from RAM too.
    EXPECT_EQ(cli({"rm", "e2e-counter", "--server", address_}).exit_code(), 0);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    EXPECT_FALSE(fs::exists(image)) << image;
    EXPECT_FALSE(fs::exists(fs::path(image).parent_path().parent_path())) << "the tmpfs image root is left";
    TrackSeenInstances();
}

TEST_F(ServeTest, RestartKeepsTheRegistry) {
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    EXPECT_EQ(invoke("e2e-counter").body, "count 1");
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    start_daemon();
    auto ls = request("GET", "/system/functions");
    ASSERT_EQ(ls.status, 200);
    auto fns = json::parse(ls.body);
    ASSERT_EQ(fns.size(), 1u) << ls.body;
    EXPECT_FALSE(fns[0]["snapshot"].is_null()) << "the snapshot survives the restart";
    auto r = invoke("e2e-counter");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "count 1");
    EXPECT_EQ(header(r, "X-Initless-Start"), "cold");
    auto rm = cli({"rm", "e2e-counter", "--server", address_});
    EXPECT_EQ(rm.exit_code(), 0) << rm.describe();
    EXPECT_EQ(invoke("e2e-counter").status, 404);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// `rm` then `deploy` of the same name at once: the removal's files go a second later, and they must be
// the removed version's only. It took the whole function dir, the new version's code, image and
// current.json with it: every start of the new version failed, and a restart forgot it.
TEST_F(ServeTest, RemoveThenRedeployKeepsTheNewVersion) {
    start_daemon();
    auto fn = counter_variant("redeploy", {{"name", "\"e2e-redeploy\""}, {"prestart", "0"}});
    ASSERT_EQ(deploy(fn).exit_code(), 0);
    auto first = invoke("e2e-redeploy");
    EXPECT_EQ(first.body, "count 1");
    std::string old_instance = header(first, "X-Initless-Instance");
    ASSERT_FALSE(old_instance.empty());
    ASSERT_TRUE(log_shows("e2e-redeploy", "[" + old_instance + "] counter: request 1"));
    auto rm = cli({"rm", "e2e-redeploy", "--server", address_});
    ASSERT_EQ(rm.exit_code(), 0) << rm.describe();
    ASSERT_EQ(deploy(fn).exit_code(), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the removal's cleanup
    auto r = invoke("e2e-redeploy");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "count 1");
    EXPECT_EQ(header(r, "X-Initless-Start"), "cold");
    // The new deployment's log is its own: the new instance's line comes, the removed one's never does.
    EXPECT_TRUE(log_shows("e2e-redeploy", "[" + header(r, "X-Initless-Instance") + "] counter: request 1"));
    auto log = cli({"logs", "e2e-redeploy", "--server", address_}).out;
    EXPECT_EQ(log.find(old_instance), std::string::npos) << "the removed function's log was kept:\n" << log;
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    start_daemon();
    auto again = invoke("e2e-redeploy");
    EXPECT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(header(again, "X-Initless-Start"), "cold") << "the redeployed snapshot survives a restart";
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A request still running on a function that is replaced (a redeploy) or removed (`rm`) ends with its
// code in place; the old version's files go once nothing of it runs. They went 1 s after the switch,
// from under the request, whose instance was then torn down on a gateway thread by the last reference.
TEST_F(ServeTest, ReplacedOrRemovedFunctionsFinishTheirRequestsWithTheirCode) {
    start_daemon();
    auto fn = counter_variant("drain", {{"name", "\"e2e-drain\""}, {"prestart", "0"}, {"timeout_s", "20"}});
    ASSERT_EQ(deploy(fn).exit_code(), 0);
    ASSERT_EQ(invoke("e2e-drain").status, 200);
    fs::path versions = registry_ / "functions" / "e2e-drain";
    auto version_count = [&] {
        size_t n = 0;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(versions, ec))
            if (e.path().filename().string().rfind("v-", 0) == 0) n++;
        return n;
    };
    std::string code_size = fmt::format("app.py has {} bytes", fs::file_size(fn / "app.py"));
    for (std::string how : {"redeploy", "rm"}) {
        HttpResponse slow;
        std::thread request_thread([&] { slow = invoke("e2e-drain", "/readlater?ms=9000"); });
        std::this_thread::sleep_for(300ms);
        auto done = how == "redeploy" ? deploy(fn) : cli({"rm", "e2e-drain", "--server", address_});
        ASSERT_EQ(done.exit_code(), 0) << done.describe();
        std::this_thread::sleep_for(1500ms);  // past the old removal's second
        EXPECT_GE(version_count(), how == "redeploy" ? 2u : 1u) << how << ": the draining version went";
        request_thread.join();
        EXPECT_EQ(slow.status, 200) << how << ": " << slow.body;
        EXPECT_EQ(slow.body, code_size) << how;
        auto deadline = Clock::now() + 10s;
        while (version_count() != (how == "redeploy" ? 1u : 0u) && Clock::now() < deadline)
            std::this_thread::sleep_for(50ms);
        EXPECT_EQ(version_count(), how == "redeploy" ? 1u : 0u) << how << ": the drained version stayed";
        if (how == "redeploy") {
            ASSERT_EQ(invoke("e2e-drain").status, 200);
        }
    }
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A function printing without end fills neither the host's disk nor the daemon: its output waits on
// its writable layer's tmpfs (charged to it), what the daemon copied is freed, and when it prints faster
// than the daemon copies, the middle is dropped and the function's log says so.
TEST_F(ServeTest, PrintingWithoutEndIsBoundedAndSaysWhatWasDropped) {
    start_daemon();
    std::string id = deploy_and_call_once("e2e-flood", {{"timeout_s", "30"}});
    auto flood = invoke("e2e-flood", "/flood?mb=200");
    EXPECT_EQ(flood.status, 200) << flood.body;
    EXPECT_EQ(flood.body, "flooded 200");
    EXPECT_TRUE(log_shows("e2e-flood", "[" + id + "] [initless: "));
    EXPECT_TRUE(log_shows("e2e-flood", "bytes of output dropped: printed faster than the log is copied]"));
    std::this_thread::sleep_for(300ms);  // a few more copies
    fs::path log = state_dir_ / "instances" / id / "log";
    ASSERT_TRUE(fs::is_symlink(log)) << log << ": the log is not on the writable layer";
    struct stat st {};
    ASSERT_EQ(::stat(log.c_str(), &st), 0);
    EXPECT_GE(st.st_size, 200ll << 20) << "the log's size is what was printed";
    EXPECT_LT(st.st_blocks * 512, 16ll << 20) << "what was copied is not freed";
    expect_instance_kept("e2e-flood", id, 2);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A response that is not HTTP, or whose head is over the gateway's limit, from a function that is still
// there: a 502 naming what was wrong, at once (not after the second the daemon waits for a dying
// instance's exit), and the instance stays. A connection closed in the middle of a response says so.
TEST_F(ServeTest, BrokenResponsesAreNamedAndTheInstanceStays) {
    start_daemon();
    std::string id = deploy_and_call_once("e2e-broken");
    struct Case {
        std::string what, says;
        bool at_once;
    };
    for (const Case& c :
         {Case{"garbage", "the function's response is not valid HTTP (bad version)", true},
          Case{"bighead", "the function's response head is over the limit (262144 bytes)", true},
          Case{"half", "the function closed the connection in the middle of its response", false},
          Case{"switch", "the function's response is not valid HTTP (status 101)", true},
          Case{"status99", "the function's response is not valid HTTP (status 99)", true}}) {
        auto t0 = Clock::now();
        auto r = invoke("e2e-broken", "/raw?what=" + c.what);
        auto took = Clock::now() - t0;
        EXPECT_EQ(r.status, 502) << c.what;
        EXPECT_EQ(r.body, c.says + "\n") << c.what;
        if (c.at_once) {
            EXPECT_LT(took, 450ms) << c.what << ": answered only when the function closed";
        }
    }
    expect_instance_kept("e2e-broken", id, 2);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// How many fds process `pid` has open.
long open_fds(pid_t pid) {
    return std::distance(fs::directory_iterator(fmt::format("/proc/{}/fd", pid)), fs::directory_iterator());
}

// A daemon short of file descriptors (its soft limit lowered under it, as a host's limits or a flood of
// connections would) fails the starts it cannot make, with a reason, and serves again once it has fds;
// it stops cleanly and leaves no instance dir. Before: a teardown's directory listing threw
// std::filesystem's own error out of a destructor and the daemon aborted, and the dirs of prepares that
// failed early stayed until the next start.
TEST_F(ServeTest, ADaemonShortOfFdsFailsStartsThenServesAgain) {
    start_daemon();
    auto d = deploy(counter_variant(
        "fds", {{"name", "\"e2e-fds\""}, {"prestart", "0"}, {"max_instances", "20"}, {"concurrency", "1"}}));
    ASSERT_EQ(d.exit_code(), 0) << d.describe();
    ASSERT_EQ(invoke("e2e-fds").status, 200);
    rlimit old{};
    ASSERT_EQ(::prlimit(daemon_->pid(), RLIMIT_NOFILE, nullptr, &old), 0);
    size_t open_now = open_fds(daemon_->pid());
    rlimit tight = old;
    tight.rlim_cur = open_now + 12;
    ASSERT_EQ(::prlimit(daemon_->pid(), RLIMIT_NOFILE, &tight, nullptr), 0);
    std::vector<std::thread> burst;
    std::atomic<int> failed_with_reason{0};
    for (int i = 0; i < 20; ++i)
        burst.emplace_back([&] {
            try {
                auto r = request("GET", "/function/e2e-fds/slow?ms=300");
                if (r.status == 502 && r.body.find("Too many open files") != std::string::npos)
                    failed_with_reason++;
            } catch (const std::exception&) {  // the gateway may not accept it either
            }
        });
    for (auto& t : burst) t.join();
    EXPECT_GT(failed_with_reason.load(), 0) << "the limit did not bite: the test proves nothing";
    ASSERT_EQ(::prlimit(daemon_->pid(), RLIMIT_NOFILE, &old, nullptr), 0);
    for (int i = 0; i < 3; ++i) {
        auto r = invoke("e2e-fds");
        EXPECT_EQ(r.status, 200) << r.body;
    }
    std::vector<std::thread> again;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i)
        again.emplace_back([&] {
            if (request("GET", "/function/e2e-fds/slow?ms=300").status == 200) ok++;
        });
    for (auto& t : again) t.join();
    EXPECT_EQ(ok.load(), 8);
    auto stopped = stop_daemon();
    EXPECT_EQ(stopped.exit_code(), 0);
    std::string teardowns;  // what the daemon said of what it could not remove, for a failure's message
    std::istringstream lines(stopped.err);
    for (std::string line; std::getline(lines, line);)
        if (line.find("event=gc") != std::string::npos || line.find("teardown") != std::string::npos ||
            line.find("jobs-left") != std::string::npos)
            teardowns += line + "\n";
    EXPECT_EQ(instance_dirs(), std::vector<std::string>{}) << teardowns;
}

// Requests broken at once on one live instance share one diagnosis (the daemon waits up to a second for
// an exit report that may trail the broken connection, and the instance takes no request meanwhile):
// all are answered within a diagnosis or two, and the instance stays. Each had a thread of its own,
// waiting its turn: the tenth was answered after ~10 s.
TEST_F(ServeTest, RequestsBrokenAtOnceShareOneDiagnosis) {
    start_daemon();
    std::string id = deploy_and_call_once("e2e-broken-many", {{"concurrency", "10"}, {"max_instances", "1"}});
    std::vector<std::thread> threads;
    std::vector<HttpResponse> results(10);
    std::vector<Clock::duration> took(10);
    for (size_t i = 0; i < results.size(); ++i)
        threads.emplace_back([&, i] {
            auto t0 = Clock::now();
            results[i] = invoke("e2e-broken-many", "/raw?what=half");
            took[i] = Clock::now() - t0;
        });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < results.size(); ++i) {
        EXPECT_EQ(results[i].status, 502) << results[i].body;
        EXPECT_EQ(results[i].body, "the function closed the connection in the middle of its response\n");
        EXPECT_LT(took[i], 5s) << "request " << i;
    }
    expect_instance_kept("e2e-broken-many", id, 2);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// `Expect: 100-continue` (curl sends it with bodies over 1 MiB and waits a second for the 100): the
// gateway answers 100 after the head, reads the body, and sends the function the whole request without
// the Expect. An interim response of the function (103) is not taken for its answer.
TEST_F(ServeTest, ExpectContinueAndInterimResponses) {
    start_daemon();
    ASSERT_EQ(deploy(counter_variant("expect", {{"name", "\"e2e-expect\""}, {"prestart", "0"}})).exit_code(),
              0);
    ASSERT_EQ(invoke("e2e-expect").status, 200);
    // A client that waits for the 100 before it sends its body; returns the final response.
    auto exchange = [&](const std::string& path) {
        auto fd = initless::sys::connect_tcp(initless::sys::TcpAddress{"127.0.0.1", port_},
                                             std::chrono::seconds(10));
        timeval tv{5, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::string head = "POST /function/e2e-expect" + path +
                           " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                           "Connection: close\r\n\r\n";
        EXPECT_EQ(::send(fd.get(), head.data(), head.size(), MSG_NOSIGNAL),
                  static_cast<ssize_t>(head.size()));
        char buf[4096];
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))),
                  "HTTP/1.1 100 Continue\r\n\r\n")
            << "no 100 Continue within 5 s";
        EXPECT_EQ(::send(fd.get(), "hello", 5, MSG_NOSIGNAL), 5);
        std::string out;
        while ((n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
        EXPECT_EQ(out.rfind("HTTP/1.1 200", 0), 0u) << out;
        return out;
    };
    std::string echoed = exchange("/echo");
    EXPECT_NE(echoed.find("\r\n\r\nhello"), std::string::npos) << echoed;
    // The function saw no Expect (it would have sent a 100 of its own, taken for its answer).
    std::string headers = exchange("/headers");
    EXPECT_EQ(headers.find("Expect"), std::string::npos) << headers;
    EXPECT_NE(headers.find("Content-Length: 5"), std::string::npos) << headers;
    auto interim = invoke("e2e-expect", "/raw?what=interim");
    EXPECT_EQ(interim.status, 200);
    EXPECT_EQ(interim.body, "final");
    // After an interim response, the final answer to a HEAD has no body either (its Content-Length is 5).
    auto t0 = Clock::now();
    auto head = request("HEAD", "/function/e2e-expect/raw?what=interim");
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.body, "");
    EXPECT_LT(Clock::now() - t0, 2s) << "the gateway waited for a body a HEAD answer does not have";
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// `rm` is durable when it returns: a daemon killed right after it (within the second its cleanup waits
// for draining instances) does not bring the function back at its next start.
TEST_F(ServeTest, RemoveIsDurableWhenItReturns) {
    start_daemon();
    ASSERT_EQ(deploy(counter_variant("durable-rm", {{"name", "\"e2e-durable-rm\""}, {"prestart", "0"}}))
                  .exit_code(),
              0);
    auto rm = cli({"rm", "e2e-durable-rm", "--server", address_});
    ASSERT_EQ(rm.exit_code(), 0) << rm.describe();
    ::kill(daemon_->pid(), SIGKILL);
    daemon_->wait(10s);
    daemon_.reset();
    start_daemon();
    EXPECT_EQ(request("GET", "/system/function/e2e-durable-rm").status, 404);
    auto ls = cli({"ls", "--server", address_});
    EXPECT_EQ(ls.out.find("e2e-durable-rm"), std::string::npos) << ls.out;
    EXPECT_FALSE(fs::exists(registry_ / "functions" / "e2e-durable-rm")) << "left by the removed function";
    // An error answer is one line on stderr, not also the body on stdout.
    auto logs = cli({"logs", "e2e-durable-rm", "--server", address_});
    EXPECT_NE(logs.exit_code(), 0);
    EXPECT_EQ(logs.out, "");
    EXPECT_EQ(logs.err, "initless: error: no function named 'e2e-durable-rm' is deployed\n");
    EXPECT_EQ(stop_daemon().exit_code(), 0);
}

// A snapshot changed on disk is not authenticated: refused when the daemon loads it; the function
// boots instead and says so (X-Initless-Start: boot, the reason in its description).
TEST_F(ServeTest, CorruptedSnapshotFallsBackToABoot) {
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    std::string image =
        json::parse(request("GET", "/system/function/e2e-counter").body)["snapshot"].get<std::string>();
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    {
        std::fstream pages(fs::path(image) / "pages.img", std::ios::in | std::ios::out | std::ios::binary);
        ASSERT_TRUE(pages.good());
        pages.seekg(0, std::ios::end);
        auto size = static_cast<std::streamoff>(pages.tellg());
        for (std::streamoff at = 0; at < size; at += 4096) {  // one flipped byte in every saved page
            pages.seekg(at);
            char c = 0;
            pages.read(&c, 1);
            pages.seekp(at);
            c = static_cast<char>(c ^ 0x5a);
            pages.write(&c, 1);
        }
    }
    start_daemon();
    auto described = json::parse(request("GET", "/system/function/e2e-counter").body);
    EXPECT_TRUE(described["snapshot"].is_null()) << described.dump();
    EXPECT_NE(described.value("snapshot_problem", "")
                  .find("is not authenticated: pages.img does not match its MAC"),
              std::string::npos)
        << described.dump();
    auto r = invoke("e2e-counter");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(header(r, "X-Initless-Start"), "boot");
    EXPECT_EQ(r.body, "count 1");
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A foreign image (made under another key: here the state dir's key is replaced, so the deployed
// image is foreign to it) is refused at load; the function boots instead and says why.
TEST_F(ServeTest, ForeignImageFallsBackToABoot) {
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    fs::path key = registry_ / "image.key";
    ASSERT_TRUE(fs::exists(key));
    fs::remove(key);
    write_text(key, std::string(32, 'f'));
    fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
    start_daemon();
    auto described = json::parse(request("GET", "/system/function/e2e-counter").body);
    EXPECT_TRUE(described["snapshot"].is_null()) << described.dump();
    EXPECT_NE(described.value("snapshot_problem", "").find("the image was made with another key"),
              std::string::npos)
        << described.dump();
    auto r = invoke("e2e-counter");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(header(r, "X-Initless-Start"), "boot");
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// What a process that did not end is doing, for the failure message: its state, wait channel and
// tracer, and the same for its threads and children (a tracee of ours, a child it waits for).
std::string describe_stuck(pid_t pid) {
    std::string out;
    auto field = [](const std::string& status, const std::string& name) {
        auto at = status.find(name + ":");
        return at == std::string::npos
                   ? std::string("?")
                   : status.substr(at + name.size() + 1, status.find('\n', at) - at - name.size() - 1);
    };
    auto one = [&](pid_t p, pid_t tid, const std::string& role) {
        fs::path dir = fs::path("/proc") / std::to_string(p) / "task" / std::to_string(tid);
        std::error_code ec;
        std::string status = read_text(dir / "status");
        std::string wchan = fs::exists(dir / "wchan", ec) ? read_text(dir / "wchan") : "";
        out += role + " " + std::to_string(tid) + " " + field(status, "Name") + " state" +
               field(status, "State") + " tracer" + field(status, "TracerPid") + " wchan " + wchan + "\n";
    };
    std::error_code ec;
    for (const auto& task : fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task", ec)) {
        pid_t tid = std::stoi(task.path().filename());
        one(pid, tid, tid == pid ? "process" : "  thread");
        std::string children = read_text(task.path() / "children");
        std::istringstream in(children);
        for (pid_t child; in >> child;) one(child, child, "  child");
    }
    return out;
}

TEST_F(ServeTest, KilledDaemonLeavesNothingAfterTheNextStart) {
    start_daemon();
    ASSERT_EQ(deploy(counter_variant("kill", {{"name", "\"e2e-kill\""}, {"prestart", "2"}})).exit_code(), 0);
    ASSERT_EQ(invoke("e2e-kill").status, 200);
    std::this_thread::sleep_for(500ms);  // the pool refills
    std::vector<std::string> before = instance_dirs();
    EXPECT_GE(before.size(), 2u);
    std::vector<pid_t> inits;
    for (const auto& id : before)
        inits.push_back(json::parse(read_text(state_dir_ / "instances" / id / "init"))["pid"].get<pid_t>());
    ::kill(daemon_->pid(), SIGKILL);
    daemon_->wait(10s);
    daemon_.reset();
    // Its sandboxes' inits were orphaned to us (the test is a child subreaper): each ends by itself
    // when its control socket closes.
    for (pid_t init : inits) {
        auto deadline = Clock::now() + 10s;
        pid_t got = 0;
        while ((got = ::waitpid(init, nullptr, WNOHANG)) == 0 && Clock::now() < deadline)
            std::this_thread::sleep_for(20ms);
        EXPECT_EQ(got, init) << "a sandbox init outlived the killed daemon by 10 s:\n"
                             << describe_stuck(init);
    }
    start_daemon();
    // The new daemon removed its predecessor's instances; only its own pool may exist now.
    std::this_thread::sleep_for(1s);
    for (const auto& id : before) {
        EXPECT_FALSE(fs::exists(state_dir_ / "instances" / id)) << id;
        EXPECT_EQ(cgroup_dirs(id), std::vector<std::string>{}) << id;
        EXPECT_EQ(processes_in_cgroup(id), std::vector<pid_t>{}) << id;
    }
    auto answer = invoke("e2e-kill");
    auto stopped = stop_daemon();
    EXPECT_EQ(answer.status, 200) << answer.body << "\nthe second daemon's log:\n" << stopped.describe();
    EXPECT_EQ(stopped.exit_code(), 0);
    for (const auto& id : before) track_instance(id);
    TrackSeenInstances();
}

TEST_F(ServeTest, BadDeploysFailClearlyAndLeaveNothing) {
    start_daemon();
    auto broken = deploy(test_function("broken-spec"));
    EXPECT_EQ(broken.exit_code(), 1) << broken.describe();
    EXPECT_NE(broken.err.find("command"), std::string::npos) << broken.err;
    auto never = deploy(test_function("never-ready"));
    EXPECT_EQ(never.exit_code(), 1) << never.describe();
    EXPECT_NE(never.err.find("did not print its ready phrase"), std::string::npos) << never.err;
    // Ready, but its warmup request never answered: the deploy fails within timeout_s (it waited for
    // ever, and so did the daemon's shutdown, before the client's limits were made to hold).
    auto silent_start = std::chrono::steady_clock::now();
    auto silent = deploy(test_function("silent-warmup"));
    EXPECT_EQ(silent.exit_code(), 1) << silent.describe();
    EXPECT_NE(silent.err.find("warmup request 1 (timeout_s = 1)"), std::string::npos) << silent.err;
    EXPECT_NE(silent.err.find("not over within its 1000 ms"), std::string::npos) << silent.err;
    EXPECT_LT(std::chrono::steady_clock::now() - silent_start, 20s);
    // Answered a byte at a time: bounded in all by timeout_s, not only between bytes.
    auto trickle_start = std::chrono::steady_clock::now();
    auto trickle = deploy(test_function("trickle-warmup"));
    EXPECT_EQ(trickle.exit_code(), 1) << trickle.describe();
    EXPECT_NE(trickle.err.find("the exchange was not over within its 1000 ms"), std::string::npos)
        << trickle.err;
    EXPECT_LT(std::chrono::steady_clock::now() - trickle_start, 20s);
    auto missing = deploy(scratch_ / "no-such-dir");
    EXPECT_EQ(missing.exit_code(), 1) << missing.describe();
    auto ls = json::parse(request("GET", "/system/functions").body);
    EXPECT_EQ(ls.size(), 0u) << ls.dump();
    EXPECT_FALSE(fs::exists(registry_ / "functions" / "e2e-never-ready"));
    EXPECT_FALSE(fs::exists(registry_ / "functions" / "e2e-silent-warmup"));
    EXPECT_FALSE(fs::exists(registry_ / "functions" / "e2e-trickle-warmup"));
    EXPECT_EQ(request("GET", "/function/e2e-never-ready").status, 404);
    EXPECT_EQ(instance_dirs(), std::vector<std::string>{});
    auto unreachable = cli({"ls", "--server", "127.0.0.1:1"});
    EXPECT_EQ(unreachable.exit_code(), 1);
    EXPECT_NE(unreachable.err.find("cannot reach the initless server"), std::string::npos) << unreachable.err;
    EXPECT_EQ(stop_daemon().exit_code(), 0);
}

// A boot waiting for its ready phrase (a function with no usable snapshot, up to timeout_s) is ended by
// the shutdown, and by the function's removal. The shutdown waited 60 s for it, then went on while the
// boot's thread still used the controller it freed.
TEST_F(ServeTest, ShutdownAndRemovalEndABootThatWaitsOnItsFunction) {
    auto fn = counter_variant("slow-boot",
                              {{"name", "\"e2e-slow-boot\""}, {"prestart", "0"}, {"timeout_s", "300"}});
    // Deploys it on the running daemon and stops that: boots from the next start never get ready (the
    // registry's copy of the code is what instances run), and the snapshot is unusable, so a request boots.
    auto deploy_with_slow_boots = [&] {
        ASSERT_EQ(deploy(fn).exit_code(), 0);
        fs::path image =
            json::parse(request("GET", "/system/function/e2e-slow-boot").body)["snapshot"].get<std::string>();
        EXPECT_EQ(stop_daemon().exit_code(), 0);
        ASSERT_TRUE(fs::exists(image.parent_path() / "code" / "app.py")) << image;
        std::ofstream(image.parent_path() / "code" / "ready-delay") << "1000";
        std::ofstream(image / "pages.img", std::ios::in | std::ios::out | std::ios::binary)
            .write("garbage!", 8);
    };
    start_daemon();
    deploy_with_slow_boots();
    for (std::string how : {"rm", "stop"}) {
        start_daemon();
        HttpResponse waited;
        std::thread waiting([&] { waited = invoke("e2e-slow-boot"); });
        std::this_thread::sleep_for(1500ms);  // the boot waits for its ready phrase now
        auto t0 = Clock::now();
        if (how == "rm") {
            ASSERT_EQ(cli({"rm", "e2e-slow-boot", "--server", address_}).exit_code(), 0);
            waiting.join();
            EXPECT_LT(Clock::now() - t0, 5s) << "the removal left the boot waiting";
            EXPECT_EQ(waited.status, 503) << waited.body;
            // The boot's sandbox goes too (the 503 alone came before, while the boot went on to timeout_s).
            for (auto until = Clock::now() + 5s; !instance_dirs().empty() && Clock::now() < until;)
                std::this_thread::sleep_for(50ms);
            EXPECT_EQ(instance_dirs(), std::vector<std::string>{}) << "the removed function's boot goes on";
            deploy_with_slow_boots();  // for the next round
        } else {
            auto stopped = stop_daemon();
            waiting.join();
            EXPECT_LT(Clock::now() - t0, 10s) << "the shutdown waited for the boot";
            EXPECT_EQ(stopped.exit_code(), 0) << stopped.describe();
            EXPECT_EQ(stopped.err.find("shutdown-jobs-left"), std::string::npos) << stopped.err;
        }
    }
}

// A shutdown does not wait for a deploy that waits on its function: the deploy's sandboxes are killed,
// the deploy fails saying so, and the daemon exits at once (it waited up to timeout_s, then 60 s for its
// jobs, and went on with the job still running).
TEST_F(ServeTest, ShutdownEndsADeployThatWaitsOnItsFunction) {
    start_daemon();
    fs::path dir = scratch_ / "silent-long";
    fs::create_directories(dir);
    fs::copy_file(test_function("silent-warmup") / "app.py", dir / "app.py");
    std::string toml = read_text(test_function("silent-warmup") / "function.toml");
    auto at = toml.find("timeout_s = 1\n");
    ASSERT_NE(at, std::string::npos);
    toml.replace(at, 14, "timeout_s = 120\n");
    std::ofstream(dir / "function.toml") << toml;
    auto deploying = cli_async({"deploy", dir.string(), "--server", address_});
    for (auto until = Clock::now() + 20s;
         read_text(deploying.out_path()).find("ready") == std::string::npos;) {
        ASSERT_LT(Clock::now(), until)
            << "the deploy did not reach its warmup: " << read_text(deploying.out_path());
        std::this_thread::sleep_for(50ms);
    }
    std::this_thread::sleep_for(300ms);  // in the warmup request now
    // Another deploy of the name is refused while this one runs, and being refused does not free the
    // name (a second refusal) nor lose the running deploy's sandboxes (the shutdown below still ends it).
    for (int i = 0; i < 2; ++i) {
        auto again = deploy(dir);
        EXPECT_EQ(again.exit_code(), 1) << again.describe();
        EXPECT_NE(again.err.find("a deploy of e2e-silent-warmup is already running"), std::string::npos)
            << again.err;
    }
    auto t0 = Clock::now();
    auto stopped = stop_daemon();
    EXPECT_LT(Clock::now() - t0, 20s) << "the shutdown waited for the deploy";
    EXPECT_EQ(stopped.exit_code(), 0) << stopped.describe();
    EXPECT_NE(stopped.err.find("event=deploy-stopped function=e2e-silent-warmup"), std::string::npos)
        << stopped.err;
    auto deployed = deploying.wait(20s);
    EXPECT_EQ(deployed.exit_code(), 1) << deployed.describe();
    EXPECT_EQ(instance_dirs(), std::vector<std::string>{});
    EXPECT_FALSE(fs::exists(registry_ / "functions" / "e2e-silent-warmup" / "current.json"));
}

// Raw bytes to the gateway, and what comes back (until the server closes or 5 s pass).
std::string raw_exchange(uint16_t port, const std::string& bytes) {
    auto fd =
        initless::sys::connect_tcp(initless::sys::TcpAddress{"127.0.0.1", port}, std::chrono::seconds(10));
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n = ::send(fd.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
    }
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

struct RawResponse {
    std::string status_line;
    std::multimap<std::string, std::string> fields;  // names lower-cased
    std::string body;
    size_t count(const std::string& name) const { return fields.count(name); }
    std::string field(const std::string& name) const {
        auto it = fields.find(name);
        return it == fields.end() ? "" : it->second;
    }
};

// Splits what came back on one connection into responses, framed as a client would frame them:
// by Content-Length, none for a HEAD request's response or a 204.
std::vector<RawResponse> split_responses(std::string bytes, const std::vector<bool>& head_requests) {
    std::vector<RawResponse> out;
    for (size_t i = 0; i < head_requests.size() && !bytes.empty(); ++i) {
        auto end = bytes.find("\r\n\r\n");
        if (end == std::string::npos) break;
        RawResponse r;
        std::istringstream head(bytes.substr(0, end));
        std::getline(head, r.status_line);
        if (!r.status_line.empty() && r.status_line.back() == '\r') r.status_line.pop_back();
        for (std::string line; std::getline(head, line);) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            auto colon = line.find(':');
            std::string name = line.substr(0, colon);
            std::transform(name.begin(), name.end(), name.begin(),
                           [](unsigned char c) { return std::tolower(c); });
            r.fields.emplace(name, line.substr(colon + 2));
        }
        size_t length = 0;
        if (!head_requests[i] && r.count("content-length")) length = std::stoul(r.field("content-length"));
        r.body = bytes.substr(end + 4, length);
        bytes.erase(0, end + 4 + length);
        out.push_back(std::move(r));
    }
    return out;
}

// A function's response goes back with its own fields, one length that frames it, and ours; the
// request reaches the function without the client's connection fields. Four requests pipelined on
// one connection: a wrong length anywhere would misframe the ones after it.
TEST_F(ServeTest, ForwardedMessagesKeepTheirFieldsAndAreFramedRight) {
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    ASSERT_EQ(invoke("e2e-counter").status, 200);
    std::string requests =
        "POST /function/e2e-counter/echo?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        "X-Custom: one\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        "HEAD /function/e2e-counter/ HTTP/1.1\r\nHost: a\r\n\r\n"
        "GET /function/e2e-counter/nocontent HTTP/1.1\r\nHost: a\r\n\r\n"
        "GET /function/e2e-counter/forged HTTP/1.1\r\nHost: a\r\n\r\n"
        "GET /function/e2e-counter/headers HTTP/1.1\r\nHost: a\r\nX-Custom: two\r\nTe: trailers\r\n"
        "X-Forwarded-For: 10.9.9.9\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\n";
    auto got = split_responses(raw_exchange(port_, requests), {false, true, false, false, false});
    ASSERT_EQ(got.size(), 5u);
    // A function cannot set the gateway's fields: its own are dropped; its reason phrase stays.
    auto forged = got[3];
    EXPECT_EQ(forged.status_line, "HTTP/1.1 299 Made Up");
    EXPECT_EQ(forged.body, "forged");
    EXPECT_EQ(forged.count("x-initless-start"), 1u);
    EXPECT_EQ(forged.field("x-initless-start"), "warm");
    EXPECT_EQ(forged.count("x-initless-instance"), 1u);
    EXPECT_NE(forged.field("x-initless-instance"), "forged");
    EXPECT_EQ(forged.count("server-timing"), 1u);
    EXPECT_EQ(forged.field("server-timing").find("fake"), std::string::npos);
    EXPECT_EQ(forged.field("server"), "initless");
    got.erase(got.begin() + 3);

    EXPECT_EQ(got[0].status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(got[0].body, "hello world");
    EXPECT_EQ(got[0].field("x-length"), "11") << "the function got the de-chunked body with its length";
    EXPECT_EQ(got[0].field("x-method"), "POST");
    EXPECT_EQ(got[0].count("content-length"), 1u);
    EXPECT_EQ(got[0].field("server"), "initless");
    EXPECT_EQ(got[0].count("server"), 1u) << "the function's own Server field is replaced";
    EXPECT_EQ(got[0].field("x-initless-start"), "warm");
    EXPECT_FALSE(got[0].field("server-timing").empty());

    EXPECT_EQ(got[1].status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(got[1].field("x-head"), "yes");
    EXPECT_EQ(got[1].field("content-length"), "5") << "a HEAD answer carries the length of the GET";
    EXPECT_FALSE(got[1].field("server-timing").empty());

    EXPECT_EQ(got[2].status_line, "HTTP/1.1 204 No Content");
    EXPECT_EQ(got[2].count("content-length"), 0u);
    EXPECT_EQ(got[2].body, "");

    EXPECT_EQ(got[3].status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(got[3].field("connection"), "close");
    std::string seen = got[3].body;
    std::transform(seen.begin(), seen.end(), seen.begin(), [](unsigned char c) { return std::tolower(c); });
    EXPECT_NE(seen.find("x-custom: two"), std::string::npos) << seen;
    EXPECT_NE(seen.find("host: localhost"), std::string::npos) << seen;
    EXPECT_NE(seen.find("x-forwarded-for: 127.0.0.1"), std::string::npos) << seen;
    EXPECT_EQ(seen.find("10.9.9.9"), std::string::npos) << "a client's X-Forwarded-For is replaced:\n"
                                                        << seen;
    for (const char* hop : {"te:", "keep-alive:", "transfer-encoding:"})
        EXPECT_EQ(seen.find(hop), std::string::npos) << hop << " reached the function:\n" << seen;

    // The counter (Python's http.server) writes its head and its body apart, with Nagle on: unless the
    // gateway acknowledges the head at once, the body waits for Linux's delayed ACK (22 ms a request here).
    auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < 40; ++i) ASSERT_EQ(request("POST", "/function/e2e-counter/echo", "x").status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t, 400ms) << "40 warm requests (about 20 ms here)";

    // An HTTP/1.0 client without keep-alive gets an HTTP/1.0 answer, then the connection closes.
    auto t0 = std::chrono::steady_clock::now();
    auto old = split_responses(raw_exchange(port_, "GET /function/e2e-counter/ HTTP/1.0\r\n\r\n"), {false});
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "the connection was not closed";
    ASSERT_EQ(old.size(), 1u);
    EXPECT_EQ(old[0].status_line, "HTTP/1.0 200 OK");
    EXPECT_EQ(old[0].body.rfind("count ", 0), 0u) << old[0].body;
    EXPECT_EQ(old[0].count("connection"), 0u);

    // The absolute form of a target (as a client configured with a proxy sends it) is routed by its path,
    // and only the path and query reach the function.
    auto absolute = split_responses(
        raw_exchange(port_,
                     "GET http://elsewhere:9/function/e2e-counter/headers?q=1 HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n"),
        {false});
    ASSERT_EQ(absolute.size(), 1u);
    EXPECT_EQ(absolute[0].status_line, "HTTP/1.1 200 OK") << absolute[0].body;
    EXPECT_EQ(absolute[0].body.find("elsewhere"), std::string::npos) << absolute[0].body;
    EXPECT_EQ(stop_daemon().exit_code(), 0);
}

TEST_F(ServeTest, GarbageHttpGets4xxAndTheDaemonKeepsServing) {
    start_daemon({"--max-body-mb", "1"});
    EXPECT_EQ(raw_exchange(port_, "hello there\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
    EXPECT_EQ(raw_exchange(port_, std::string(4096, '\x01')).rfind("HTTP/1.1 400", 0), 0u);
    std::string big_header =
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(32 * 1024, 'a') + "\r\n\r\n";
    EXPECT_EQ(raw_exchange(port_, big_header).rfind("HTTP/1.1 431", 0), 0u);
    std::string big_body =
        "POST /function/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + std::string(2000000, 'b');
    EXPECT_EQ(raw_exchange(port_, big_body).rfind("HTTP/1.1 413", 0), 0u);
    // A chunk-size line that never ends: Beast's parser bounds a head, not that line, so the read buffer's
    // own limit ends it (before, the daemon took in whatever came, for up to 120 s).
    std::string endless_chunk =
        "POST /function/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1" +
        std::string(4 << 20, 'a');
    EXPECT_EQ(raw_exchange(port_, endless_chunk).rfind("HTTP/1.1 400", 0), 0u);
    EXPECT_EQ(request("POST", "/system/functions", "{not json").status, 400);
    EXPECT_EQ(request("GET", "/function/nobody").status, 404);
    // Names nobody deployed make no metric series: each would stay for good.
    for (int i = 0; i < 50; ++i) EXPECT_EQ(request("GET", fmt::format("/function/nobody-{}", i)).status, 404);
    auto metrics = request("GET", "/metrics");
    EXPECT_EQ(metrics.body.find("nobody"), std::string::npos) << metrics.body;
    EXPECT_EQ(request("GET", "/nowhere").status, 404);
    EXPECT_EQ(request("GET", "/healthz").status, 200);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
}

// A connection to the gateway read by hand: what a client that reads slowly, or watches a stream, sees.
class RawClient {
  public:
    explicit RawClient(uint16_t port, const std::string& host = "127.0.0.1")
        : fd_(initless::sys::connect_tcp(initless::sys::TcpAddress{host, port}, std::chrono::seconds(10))) {}
    RawClient(const std::string& host, uint16_t port) : RawClient(port, host) {}
    void send(const std::string& bytes) {
        for (size_t off = 0; off < bytes.size();) {
            ssize_t n = ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
            ASSERT_GT(n, 0) << "send: " << strerror(errno);
            off += static_cast<size_t>(n);
        }
    }
    // Reads until what came holds `want` (true), the peer closes or `within` passes (false).
    bool read_until(const std::string& want, std::chrono::milliseconds within) {
        auto deadline = Clock::now() + within;
        while (got.find(want) == std::string::npos) {
            if (!read_some(deadline)) return false;
        }
        return true;
    }
    // Reads until the peer closes (true) or `within` passes (false).
    bool read_to_close(std::chrono::milliseconds within) {
        auto deadline = Clock::now() + within;
        while (read_some(deadline)) {
        }
        return closed;
    }
    int fd() const { return fd_.get(); }
    std::string got;
    bool closed = false;

  private:
    bool read_some(Clock::time_point deadline) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0 || closed) return false;
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
        char buf[65536];
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n <= 0) {
            closed = true;
            return false;
        }
        got.append(buf, static_cast<size_t>(n));
        return true;
    }
    initless::sys::UniqueFd fd_;
};

long status_kib(pid_t pid, const std::string& field) {
    std::istringstream in(read_text(fs::path("/proc") / std::to_string(pid) / "status"));
    for (std::string line; std::getline(in, line);)
        if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
    return -1;
}

// A function's response that is long, or has no declared length (a stream of events, a download, a body
// ended by closing), goes to the client as it arrives and at the client's pace, whatever
// --max-body-mb says: the daemon holds a piece at a time. A function that fails after its head has gone
// out ends the client's connection without the rest.
TEST_F(ServeTest, LongAndEndlessResponsesArePassedOnAsTheyArrive) {
    start_daemon({"--max-body-mb", "1"});
    std::string id = deploy_and_call_once("e2e-stream", {{"timeout_s", "3"}});

    // Events come as they are sent, chunked, with the gateway's fields; the connection and the
    // instance serve on afterwards.
    RawClient events(port_);
    auto t0 = Clock::now();
    events.send("GET /function/e2e-stream/stream?n=4&ms=400 HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(events.read_until("tick 0", 5000ms)) << events.got;
    EXPECT_LT(Clock::now() - t0, 350ms) << "the first event waited for the last";
    ASSERT_TRUE(events.read_until("0\r\n\r\n", 5000ms)) << events.got;
    EXPECT_GE(Clock::now() - t0, 1200ms);
    EXPECT_EQ(events.got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << events.got;
    EXPECT_NE(events.got.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << events.got;
    EXPECT_NE(events.got.find("X-Initless-Start: warm\r\n"), std::string::npos) << events.got;
    EXPECT_NE(events.got.find("Server-Timing: queue;dur="), std::string::npos) << events.got;
    EXPECT_NE(events.got.find("tick 3\n"), std::string::npos) << events.got;
    events.got.clear();
    events.send("GET /function/e2e-stream/ HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(events.read_until("count 2", 5000ms)) << events.got;
    // `initless invoke` prints each event when it comes.
    auto invoking = cli_async({"invoke", "e2e-stream", "/stream?n=4&ms=400", "--server", address_});
    for (auto deadline = Clock::now() + 1200ms;
         read_text(invoking.out_path()).empty() && Clock::now() < deadline;)
        std::this_thread::sleep_for(20ms);
    EXPECT_EQ(read_text(invoking.out_path()), "tick 0\n") << "`invoke` printed the first event late";
    auto invoked = invoking.wait(10s);
    EXPECT_EQ(invoked.exit_code(), 0) << invoked.describe();
    EXPECT_EQ(invoked.out, "tick 0\ntick 1\ntick 2\ntick 3\n");

    // 200 MiB declared, 200 times --max-body-mb: the client reads nothing for half a second, and the
    // daemon does not take the body in meanwhile; then the whole of it comes, with its length, read and
    // written in pieces big enough that it costs the daemon little CPU (1.7 s when Beast's reads were
    // sized by the head's buffer, a KiB or two each; 0.2 s with 64 KiB).
    pid_t daemon = daemon_->pid();
    long rss_before = status_kib(daemon, "VmRSS");
    uint64_t cpu_before = daemon_cpu_ms();
    RawClient download(port_);
    download.send(
        "GET /function/e2e-stream/download?mb=200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::this_thread::sleep_for(500ms);
    long rss_paused = status_kib(daemon, "VmRSS");
    EXPECT_LT(rss_paused - rss_before, 32 * 1024)
        << "the daemon took the body in faster than the client reads";
    ASSERT_TRUE(download.read_to_close(10000ms));
    auto end = download.got.find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos) << download.got.substr(0, 300);
    EXPECT_NE(download.got.substr(0, end).find("Content-Length: 209715200"), std::string::npos)
        << download.got.substr(0, end);
    EXPECT_EQ(download.got.size() - end - 4, 200u << 20);
    EXPECT_LT(daemon_cpu_ms() - cpu_before, 800u) << "passing 200 MiB on took the daemon this many ms of CPU";
    EXPECT_EQ(download.got.find_first_not_of('d', end + 4), std::string::npos);
    EXPECT_LT(status_kib(daemon, "VmHWM") - rss_before, 64 * 1024) << "the daemon held the body";

    // A function that sends more than it declared: what follows is not taken for its next answer (asked on
    // the same client connection, so on the same gateway thread, whose upstream connections it reuses).
    RawClient overshoot(port_);
    overshoot.send("GET /function/e2e-stream/overshoot HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(overshoot.read_until(std::string(300 << 10, 'o'), 5000ms)) << overshoot.got.substr(0, 300);
    overshoot.got.clear();
    overshoot.send("GET /function/e2e-stream/ HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(overshoot.read_until("count 3", 5000ms))
        << "bytes past a response were read as the next one: " << overshoot.got;

    // A client that stops reading: its response is cut when timeout_s (3 s) has passed, and the instance,
    // not at fault, stays.
    RawClient stalled(port_);
    stalled.send("GET /function/e2e-stream/download?mb=100 HTTP/1.1\r\nHost: x\r\n\r\n");
    std::this_thread::sleep_for(4000ms);
    EXPECT_LT(status_kib(daemon, "VmRSS") - rss_before, 32 * 1024);
    EXPECT_TRUE(stalled.read_to_close(5000ms)) << "the stalled response was not cut";
    EXPECT_LT(stalled.got.size(), 100u << 20) << "the response came whole to a client that did not read";

    // A body ended by the function closing: chunked to an HTTP/1.1 client, until the close to an
    // HTTP/1.0 one.
    auto until_close = invoke("e2e-stream", "/untilclose?kb=300");
    EXPECT_EQ(until_close.status, 200);
    EXPECT_EQ(until_close.body, std::string(300 << 10, 'u'));
    EXPECT_EQ(header(until_close, "Transfer-Encoding"), "chunked");
    RawClient old(port_);
    old.send("GET /function/e2e-stream/untilclose?kb=300 HTTP/1.0\r\n\r\n");
    ASSERT_TRUE(old.read_to_close(5000ms));
    end = old.got.find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos);
    std::string head = old.got.substr(0, end);
    EXPECT_EQ(head.rfind("HTTP/1.0 200", 0), 0u) << head;
    EXPECT_EQ(head.find("Transfer-Encoding"), std::string::npos) << head;
    EXPECT_EQ(old.got.substr(end + 4), std::string(300 << 10, 'u'));
    expect_instance_kept("e2e-stream", id, 4);

    auto stopped = stop_daemon();
    EXPECT_EQ(stopped.exit_code(), 0);
    EXPECT_NE(stopped.err.find("the response was still being sent to the client when timeout_s (3 s) passed"),
              std::string::npos);
    start_daemon({"--max-body-mb", "1"});
    // Failing after the head: the client's connection ends with no last chunk. A function that exited is
    // replaced; one that stopped sending is cut at timeout_s and its instance stays (its head came in time;
    // other requests may be on it), answering the next request.
    std::string previous;
    for (std::string then : {"crash", "hang"}) {
        RawClient cut(port_);
        cut.send("GET /function/e2e-stream/stream?n=2&ms=50&then=" + then + " HTTP/1.1\r\nHost: x\r\n\r\n");
        EXPECT_TRUE(cut.read_to_close(8000ms)) << then << ": " << cut.got;
        EXPECT_NE(cut.got.find("tick 1\n"), std::string::npos) << then << ": " << cut.got;
        EXPECT_EQ(cut.got.find("0\r\n\r\n"), std::string::npos) << then << ": " << cut.got;
        auto next = invoke("e2e-stream");
        EXPECT_EQ(next.status, 200) << then;
        if (then == "crash") {
            EXPECT_EQ(next.body, "count 1") << "the instance that exited served again";
            EXPECT_NE(header(next, "X-Initless-Instance"), previous);
        } else {
            EXPECT_EQ(next.body, "count 2") << "the instance whose stream was cut at timeout_s is gone";
            EXPECT_EQ(header(next, "X-Initless-Instance"), previous);
        }
        previous = header(next, "X-Initless-Instance");
    }
    // A client that leaves a stream while the function waits between events: noticed then, not at the next
    // event's write (1 s later) or timeout_s: the instance's request is over well before the next event.
    {
        RawClient leaver(port_);
        leaver.send("GET /function/e2e-stream/stream?n=3&ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n");
        ASSERT_TRUE(leaver.read_until("tick 0", 5000ms)) << leaver.got;
    }
    auto left_at = Clock::now();
    json serving;
    for (auto until = left_at + 700ms; Clock::now() < until; std::this_thread::sleep_for(20ms)) {
        serving = json::parse(request("GET", "/system/function/e2e-stream").body);
        uint32_t in_flight = 0;
        for (const auto& inst : serving["instances"]) in_flight += inst["in_flight"].get<uint32_t>();
        if (in_flight == 0) break;
    }
    uint32_t still = 0;
    for (const auto& inst : serving["instances"]) still += inst["in_flight"].get<uint32_t>();
    EXPECT_EQ(still, 0u) << "700 ms after its client left, the stream still held its instance: "
                         << serving.dump();
    std::string metrics = request("GET", "/metrics").body;
    for (const char* line : {"gateway_responses_cut_total{function_name=\"e2e-stream\",why=\"function\"} 1",
                             "gateway_responses_cut_total{function_name=\"e2e-stream\",why=\"timeout\"} 1",
                             "gateway_responses_cut_total{function_name=\"e2e-stream\",why=\"client\"} 1"})
        EXPECT_NE(metrics.find(line), std::string::npos) << line << "\n" << metrics;
    auto last = stop_daemon();
    EXPECT_EQ(last.exit_code(), 0);
    EXPECT_NE(last.err.find("the response was not over when timeout_s (3 s) passed"), std::string::npos);
    EXPECT_NE(last.err.find("reason=\"the client closed its connection\""), std::string::npos);
    TrackSeenInstances();
}

// What a hostile or broken function's answers cannot do: grow the daemon's memory with a chunk-size line
// that never ends, or have stale bytes it wrote after an answer taken for the next client's answer.
TEST_F(ServeTest, HostileResponsesAreCutOrDropped) {
    start_daemon();
    std::string id = deploy_and_call_once("e2e-hostile");
    // A chunked body whose size line never ends (Beast bounds a head, not that line): cut once the read
    // buffer is full, not read into the daemon's memory until timeout_s.
    long rss_before = status_kib(daemon_->pid(), "VmRSS");
    RawClient endless(port_);
    endless.send("GET /function/e2e-hostile/raw?what=endless-chunk HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(endless.read_to_close(5000ms)) << "the response was not cut";
    EXPECT_EQ(endless.got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << endless.got.substr(0, 200);
    EXPECT_LT(status_kib(daemon_->pid(), "VmRSS") - rss_before, 32 * 1024) << "the daemon held what came";
    // A function that answers, and later writes a second answer on the same connection: the stale bytes
    // are not the next request's answer (asked on the same client connection, so on the same gateway
    // thread, whose upstream connections it reuses).
    RawClient twice(port_);
    twice.send("GET /function/e2e-hostile/late?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(twice.read_until("on time", 5000ms)) << twice.got;
    std::this_thread::sleep_for(500ms);
    twice.got.clear();
    twice.send("GET /function/e2e-hostile/ HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(twice.read_until("count 2", 5000ms)) << "another answer came: " << twice.got;
    EXPECT_EQ(twice.got.find("stale!"), std::string::npos) << twice.got;
    // Answers that come before the function took the request's body (16 MiB: more than the sockets
    // hold), and it never takes it, or only after: the answer goes to the client at once, and the
    // instance, not at fault, stays (before: a 504 and the instance killed at timeout_s, or a 502).
    for (std::string close : {"0", "1", "2", "2", "2"}) {
        auto t0 = Clock::now();
        auto early =
            request("POST", "/function/e2e-hostile/early?close=" + close, std::string(16 << 20, 'b'));
        EXPECT_EQ(early.status, 413) << "close=" << close << ": " << early.body;
        EXPECT_EQ(early.body, "too big") << "close=" << close;
        EXPECT_LT(Clock::now() - t0, 2s) << "close=" << close;
    }
    expect_instance_kept("e2e-hostile", id, 3);
    auto stopped = stop_daemon();
    EXPECT_EQ(stopped.exit_code(), 0);
    EXPECT_NE(stopped.err.find("event=upstream-dropped function=e2e-hostile"), std::string::npos)
        << stopped.err;
    TrackSeenInstances();
}

// A followed log goes on past the cut that keeps a function's log under its limit (the follower's offset
// into the old file meant nothing in the new one, and it went silent), and a follower that reads nothing
// meanwhile is sent the log at its own pace, not held by the daemon as it grows.
TEST_F(ServeTest, AFollowedLogGoesOnPastItsCutAtTheReadersPace) {
    start_daemon();
    std::string id = deploy_and_call_once("e2e-flood", {{"timeout_s", "30"}});
    RawClient follower(port_);
    follower.send("GET /system/logs?name=e2e-flood&follow=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(follower.read_until("\r\n\r\n", 5000ms)) << follower.got;
    pid_t daemon = daemon_->pid();
    long rss_before = status_kib(daemon, "VmRSS");
    // 200 MB printed: the log is copied, its middle dropped, and cut to its newer half past 8 MiB, while the
    // follower reads nothing.
    auto flood = invoke("e2e-flood", "/flood?mb=200");
    EXPECT_EQ(flood.body, "flooded 200");
    std::this_thread::sleep_for(3000ms);
    EXPECT_LT(status_kib(daemon, "VmRSS") - rss_before, 8 * 1024)
        << "the daemon held the log for its follower";
    EXPECT_TRUE(follower.read_until(
        "[initless: the log was cut to its newer half here; lines may be missing]", 20000ms))
        << follower.got.size() << " bytes followed";
    // And it goes on: a request's line comes after the cut.
    follower.got.clear();
    EXPECT_EQ(invoke("e2e-flood", "/").status, 200);
    EXPECT_TRUE(follower.read_until("[" + id + "]", 5000ms)) << follower.got.substr(0, 500);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// A follower of a quiet log that leaves is let go within a tick, and a follow of a function removed
// meanwhile ends, saying so. Each stayed until the daemon stopped (its socket, a timer at 5 Hz): a
// client with API access could fill the daemon's fds.
TEST_F(ServeTest, FollowersThatLeaveOrOutliveTheirFunctionAreLetGo) {
    start_daemon();
    deploy_and_call_once("e2e-quiet");
    pid_t daemon = daemon_->pid();
    long before = open_fds(daemon);
    const std::string follow = "GET /system/logs?name=e2e-quiet&follow=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    {
        std::vector<std::unique_ptr<RawClient>> followers;
        for (int i = 0; i < 20; ++i) {
            followers.push_back(std::make_unique<RawClient>(port_));
            followers.back()->send(follow);
            ASSERT_TRUE(followers.back()->read_until("\r\n\r\n", 5000ms));
        }
        EXPECT_GE(open_fds(daemon), before + 15) << "before " << before;
    }
    auto deadline = Clock::now() + 3s;
    while (open_fds(daemon) > before && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
    EXPECT_LE(open_fds(daemon), before + 2)
        << "the followers that left are still held (before " << before << ")";
    RawClient follower(port_);
    follower.send(follow);
    ASSERT_TRUE(follower.read_until("\r\n\r\n", 5000ms));
    ASSERT_EQ(cli({"rm", "e2e-quiet", "--server", address_}).exit_code(), 0);
    EXPECT_TRUE(follower.read_to_close(3000ms)) << follower.got;
    EXPECT_NE(follower.got.find("[initless: the function was removed]"), std::string::npos) << follower.got;
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// Request bodies are held whole until they go to the function, so those held at once are bounded
// (--max-held-bodies-mb). Bytes count as they arrive: a head declaring a length holds nothing (else a few
// heads alone would shut every upload out); a declared length the bound has no room for now gets 503 at
// its head, before its body is sent, and a chunked body as soon as it passes the bound. What a request
// held is given back when it ends.
TEST_F(ServeTest, RequestBodiesHeldAtOnceAreBounded) {
    start_daemon({"--max-body-mb", "8", "--max-held-bodies-mb", "10"});
    deploy_and_call_once("e2e-uploads");
    const std::string head =
        "POST /function/e2e-uploads/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n";
    std::vector<std::unique_ptr<RawClient>> heads_only;
    for (int i = 0; i < 3; ++i) {  // 24 MiB declared, nothing sent
        heads_only.push_back(std::make_unique<RawClient>(port_));
        heads_only.back()->send(head);
    }
    std::this_thread::sleep_for(200ms);
    auto through = request("POST", "/function/e2e-uploads/echo", std::string(8 << 20, 'a'));
    EXPECT_EQ(through.status, 200) << "heads that sent no body held the bound: " << through.body;

    RawClient holder(port_);
    holder.send(head.substr(0, head.size() - 2) + "Connection: close\r\n\r\n" +
                std::string(7 << 20, 'h'));  // 8 MiB declared, 7 MiB sent: held
    std::this_thread::sleep_for(300ms);

    std::string metrics = request("GET", "/metrics").body;
    auto held = metrics.find("\ninitless_request_bodies_held_bytes ");
    ASSERT_NE(held, std::string::npos) << metrics;
    EXPECT_GE(std::stod(metrics.substr(held + 36)), 7 << 20) << metrics.substr(held, 60);
    RawClient declared(port_);
    declared.send(head);
    ASSERT_TRUE(declared.read_to_close(5000ms)) << declared.got;
    EXPECT_EQ(declared.got.rfind("HTTP/1.1 503", 0), 0u) << declared.got;
    EXPECT_NE(declared.got.find("the gateway holds as many request bodies as it may at once (10 MiB)"),
              std::string::npos)
        << declared.got;

    RawClient chunked(port_);
    chunked.send("POST /function/e2e-uploads/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::string chunk = fmt::format("{:x}\r\n{}\r\n", 256 << 10, std::string(256 << 10, 'c'));
    for (int i = 0; i < 24 && !chunked.closed; ++i) {  // 6 MiB, if it were all taken
        ::send(chunked.fd(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
        chunked.read_until("\r\n\r\n", 20ms);
    }
    ASSERT_TRUE(chunked.read_until("\r\n\r\n", 5000ms)) << chunked.got;
    EXPECT_EQ(chunked.got.rfind("HTTP/1.1 503", 0), 0u) << chunked.got;

    holder.send(std::string(1 << 20, 'h'));
    ASSERT_TRUE(holder.read_to_close(10000ms)) << holder.got.substr(0, 400);
    EXPECT_EQ(holder.got.rfind("HTTP/1.1 200", 0), 0u) << holder.got.substr(0, 400);
    EXPECT_NE(holder.got.find("X-Length: 8388608"), std::string::npos) << holder.got.substr(0, 400);
    // Given back: the same request again goes through.
    auto again = request("POST", "/function/e2e-uploads/echo", std::string(8 << 20, 'a'));
    EXPECT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(again.body.size(), 8u << 20);
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

// This host's first IPv4 address other than loopback, or "".
std::string non_loopback_ipv4() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return "";
    std::string found;
    for (ifaddrs* i = list; i && found.empty(); i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
            (i->ifa_flags & IFF_LOOPBACK))
            continue;
        char text[INET_ADDRSTRLEN];
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
        found = text;
    }
    ::freeifaddrs(list);
    return found;
}

// The API changes what runs on the host: without a token it answers clients on this host only (a daemon
// listening on every address must not be deployed to from the network), with --api-token-file it wants
// the token from everyone; functions are open either way, and the CLI's token never reaches a function.
TEST_F(ServeTest, TheApiWantsItsTokenOrALocalClient) {
    std::string external = non_loopback_ipv4();
    ASSERT_FALSE(external.empty())
        << "this test needs an IPv4 address other than loopback; the host has none";
    listen_host_ = "0.0.0.0";
    start_daemon();
    ASSERT_EQ(deploy(test_function("counter")).exit_code(), 0);
    auto from = [&](const std::string& host, const std::string& target,
                    std::map<std::string, std::string> headers = {}) {
        HttpRequest req;
        req.target = target;
        req.headers = std::move(headers);
        return initless::gateway::http_request(
            initless::sys::connect_tcp(initless::sys::TcpAddress{host, port_}, std::chrono::seconds(10)), req,
            30s);
    };
    EXPECT_EQ(from("127.0.0.1", "/system/functions").status, 200);
    // A page a function serves, in a browser on this host, is not a client of the API (same origin as
    // the functions): its fetches carry Sec-Fetch-Site (and Origin, but for a same-origin GET). An
    // address typed into the browser (Sec-Fetch-Site: none) is the user.
    auto from_page = from("127.0.0.1", "/system/functions", {{"Sec-Fetch-Site", "same-origin"}});
    EXPECT_EQ(from_page.status, 403);
    EXPECT_EQ(from_page.body,
              "the API does not take requests from web pages (this one carries Origin or Sec-Fetch-Site)\n");
    EXPECT_EQ(from("127.0.0.1", "/system/logs?name=e2e-counter", {{"Origin", "http://127.0.0.1"}}).status,
              403);
    EXPECT_EQ(from("127.0.0.1", "/system/functions", {{"Sec-Fetch-Site", "none"}}).status, 200);
    {
        RawClient page("127.0.0.1", port_);
        page.send(
            "DELETE /system/functions HTTP/1.1\r\nHost: x\r\nOrigin: http://127.0.0.1\r\nContent-Type: "
            "text/plain\r\nContent-Length: 30\r\n\r\n{\"functionName\":\"e2e-counter\"}");
        ASSERT_TRUE(page.read_to_close(5000ms)) << page.got;
        EXPECT_EQ(page.got.rfind("HTTP/1.1 403", 0), 0u) << page.got;
    }
    EXPECT_EQ(from("127.0.0.1", "/system/function/e2e-counter").status, 200)
        << "a web page removed a function";
    auto refused = from(external, "/system/functions");
    EXPECT_EQ(refused.status, 403);
    EXPECT_EQ(refused.body,
              "the API answers only clients on this host; start serve with --api-token-file to let others in "
              "with the token\n");
    EXPECT_EQ(from(external, "/system/function/e2e-counter").status, 403);
    // Refused at the head: no 100 Continue, no body taken in.
    RawClient upload(external, port_);
    upload.send(
        "POST /system/functions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nExpect: "
        "100-continue\r\n\r\n");
    ASSERT_TRUE(upload.read_to_close(5000ms)) << upload.got;
    EXPECT_EQ(upload.got.rfind("HTTP/1.1 403", 0), 0u) << upload.got;
    EXPECT_EQ(from(external, "/function/e2e-counter/").body, "count 1")
        << "a function is open to every client";
    EXPECT_EQ(from(external, "/healthz").status, 200);
    EXPECT_EQ(stop_daemon().exit_code(), 0);

    const std::string token = "initless-test-token-0123456789";
    write_text(scratch_ / "token", token + "\n");
    write_text(scratch_ / "short", "abc\n");
    auto bad = cli({"serve", "--listen", "127.0.0.1:0", "--state", registry_.string(), "--api-token-file",
                    (scratch_ / "short").string()});
    EXPECT_EQ(bad.exit_code(), 1) << bad.describe();
    EXPECT_NE(bad.err.find("the token must be one word of 16 characters or more"), std::string::npos)
        << bad.err;

    start_daemon({"--api-token-file", (scratch_ / "token").string()});
    for (const std::string& host : {std::string("127.0.0.1"), external}) {
        auto none = from(host, "/system/functions");
        EXPECT_EQ(none.status, 401) << host;
        EXPECT_EQ(header(none, "WWW-Authenticate"), "Bearer realm=\"initless\"") << host;
        EXPECT_EQ(from(host, "/system/functions", {{"Authorization", "Bearer " + token + "x"}}).status, 401);
        EXPECT_EQ(from(host, "/system/functions", {{"Authorization", "Basic " + token}}).status, 401);
        EXPECT_EQ(from(host, "/system/functions", {{"Authorization", "bearer " + token}}).status, 200)
            << host;
        EXPECT_EQ(from(host, "/function/e2e-counter/").status, 200) << host;
    }
    auto without = cli({"ls", "--server", address_});
    EXPECT_EQ(without.exit_code(), 1);
    EXPECT_NE(without.err.find("the API wants Authorization: Bearer"), std::string::npos) << without.err;
    ::setenv("INITLESS_API_TOKEN", token.c_str(), 1);
    auto with = cli({"ls", "--server", address_});
    auto headers = cli({"invoke", "e2e-counter", "/headers", "--server", address_});
    // A client that sends the token with every request: it is not forwarded to the function either.
    auto sent = from("127.0.0.1", "/function/e2e-counter/headers", {{"Authorization", "Bearer " + token}});
    EXPECT_EQ(sent.body.find(token), std::string::npos) << "the API's token reached a function:\n"
                                                        << sent.body;
    auto own = from("127.0.0.1", "/function/e2e-counter/headers", {{"Authorization", "Bearer its-own"}});
    EXPECT_NE(own.body.find("Bearer its-own"), std::string::npos) << "a function's own token is its business";
    ::unsetenv("INITLESS_API_TOKEN");
    EXPECT_EQ(with.exit_code(), 0) << with.describe();
    EXPECT_NE(with.out.find("e2e-counter"), std::string::npos) << with.out;
    EXPECT_EQ(headers.exit_code(), 0) << headers.describe();
    EXPECT_EQ(headers.out.find(token), std::string::npos) << "the API's token reached a function:\n"
                                                          << headers.out;
    EXPECT_EQ(stop_daemon().exit_code(), 0);
    TrackSeenInstances();
}

}  // namespace
}  // namespace e2e
