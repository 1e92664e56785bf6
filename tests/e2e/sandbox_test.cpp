// Library-level: the sandbox from the inside (pid, /proc, capabilities, root, network, memory limit)
// and its teardown, with the probe function (tests/e2e/functions/probe) over real HTTP.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "e2e.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"
#include "initless/sys/process.h"

using namespace e2e;
using namespace std::chrono_literals;
namespace sandbox = initless::sandbox;
namespace spec = initless::spec;

namespace {

class SandboxE2e : public E2eTest {
  protected:
    // Prepares and starts the probe, waits until it is ready.
    sandbox::Sandbox boot_probe() { return boot(test_function("probe")); }
    // The probe function as `name`, with network = "egress", from a function dir of its own.
    sandbox::Sandbox boot_egress_probe(const std::string& name) {
        fs::path dir = scratch_ / name;
        fs::create_directories(dir);
        fs::copy_file(test_function("probe") / "app.py", dir / "app.py");
        write_text(dir / "function.toml",
                   "name = \"" + name +
                       "\"\ncommand = [\"/usr/bin/python3\", \"app.py\"]\n"
                       "ready = \"probe: ready\"\nmemory_mb = 64\nnetwork = \"egress\"\n"
                       "[env]\nPYTHONDONTWRITEBYTECODE = \"1\"\n");
        return boot(dir);
    }
    // The function of `dir` booted and ready; torn down by the fixture if the test does not.
    sandbox::Sandbox boot(const fs::path& dir) {
        auto s = spec::load(dir);
        auto sb = sandbox::Sandbox::prepare(s);
        track(sb);
        auto fn = sb.start();
        track_process(fn.host_pid);
        sb.wait_ready(s.ready, 20s);
        return sb;
    }
};

std::string unique_name(const std::string& prefix) {
    std::random_device rd;
    return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
}

std::map<std::string, std::string> status_fields(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        out[line.substr(0, colon)] = value;
    }
    return out;
}

}  // namespace

TEST_F(SandboxE2e, FunctionIsPid2AndSeesOnlyTheSandbox) {
    auto sb = boot_probe();
    auto pid = get(sb, "/pid");
    ASSERT_EQ(pid.status, 200);
    EXPECT_LE(std::stoi(pid.body), 2) << "the function's pid inside the sandbox";

    auto procs = get(sb, "/procs");
    ASSERT_EQ(procs.status, 200);
    std::set<int> seen;
    std::istringstream in(procs.body);
    for (std::string p; std::getline(in, p, ',');) seen.insert(std::stoi(p));
    // Our init (1) and the function (2): nothing of the host's.
    EXPECT_EQ(seen, (std::set<int>{1, 2})) << "/proc inside lists " << procs.body;

    EXPECT_EQ(get(sb, "/hostname").body, "e2e-probe");
    sb.teardown();
}

TEST_F(SandboxE2e, FunctionHasNoCapabilitiesAndNoNewPrivs) {
    auto sb = boot_probe();
    auto r = get(sb, "/status");
    ASSERT_EQ(r.status, 200);
    auto f = status_fields(r.body);
    for (const char* key : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
        ASSERT_TRUE(f.count(key)) << key << " missing in\n" << r.body;
        EXPECT_EQ(f[key], "0000000000000000") << key;
    }
    EXPECT_EQ(f["NoNewPrivs"], "1");
    sb.teardown();
}

TEST_F(SandboxE2e, WritesToRootLandInTheUpperDirNotOnTheHost) {
    auto sb = boot_probe();
    std::string name = unique_name("e2e-written");
    auto r = get(sb, "/write?" + name);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(get(sb, "/exists?/" + name).body, "yes");
    EXPECT_FALSE(fs::exists("/" + name)) << "the function's write reached the host root";
    fs::path upper = sb.upper_dir() / name;
    ASSERT_TRUE(fs::exists(upper)) << "not in the upper dir " << sb.upper_dir();
    EXPECT_EQ(read_text(upper).rfind("written by ", 0), 0u) << read_text(upper);

    // /function (the function's own directory) is read-only.
    auto ro = get(sb, "/write?function/" + name);
    EXPECT_EQ(ro.status, 500);
    EXPECT_NE(ro.body.find("Read-only file system"), std::string::npos) << ro.body;
    EXPECT_FALSE(fs::exists(test_function("probe") / name));
    sb.teardown();
    EXPECT_FALSE(fs::exists(upper)) << "teardown left the upper dir";
}

TEST_F(SandboxE2e, TwoSandboxesDoNotSeeEachOther) {
    auto a = boot_probe();
    auto b = boot_probe();
    EXPECT_NE(a.id(), b.id());
    std::string name = unique_name("e2e-only-in-a");
    ASSERT_EQ(get(a, "/write?" + name).status, 200);
    EXPECT_EQ(get(a, "/exists?/" + name).body, "yes");
    EXPECT_EQ(get(b, "/exists?/" + name).body, "no");
    EXPECT_EQ(get(b, "/procs").body, "1,2");
    a.teardown();
    // b still answers after a is gone.
    EXPECT_EQ(get(b, "/").body, "ok");
    b.teardown();
}

TEST_F(SandboxE2e, NetworkIsItsOwnLoopbackOnly) {
    // A listener on the host's loopback must not be reachable from inside.
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(s, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(s, 4), 0);
    socklen_t len = sizeof addr;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
    int port = ntohs(addr.sin_port);

    auto sb = boot_probe();
    auto r = get(sb, "/connect?" + std::to_string(port));
    EXPECT_EQ(r.body.rfind("refused", 0), 0u)
        << "the function reached the host's port " << port << ": " << r.body;
    // Its own port, inside, works.
    EXPECT_EQ(get(sb, "/connect?9000").body.rfind("connected", 0), 0u);
    ::close(s);
    sb.teardown();
}

namespace {

// A listener that greets every connection with `greeting` and closes it, on a thread of the test.
class Greeter {
  public:
    Greeter(in_addr_t address, std::string greeting) : greeting_(std::move(greeting)) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = address;
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0)
            throw initless::Error("greeter: bind/listen failed");
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] {
            for (;;) {
                int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (c < 0) return;  // shut down
                (void)!::write(c, greeting_.data(), greeting_.size());
                ::close(c);
            }
        });
    }
    ~Greeter() {
        ::shutdown(fd_, SHUT_RDWR);
        thread_.join();
        ::close(fd_);
    }
    int port() const { return port_; }

  private:
    std::string greeting_;
    int fd_ = -1, port_ = 0;
    std::thread thread_;
};

// The host's first IPv4 address that is not loopback: what "outside the sandbox" means here.
std::optional<std::string> host_address() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return std::nullopt;
    std::optional<std::string> out;
    for (ifaddrs* i = list; i && !out; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK)) continue;
        char buf[INET_ADDRSTRLEN];
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
        out = buf;
    }
    ::freeifaddrs(list);
    return out;
}

}  // namespace

// network = "egress": outbound connections reach the host's own address (standing for the world,
// since no other network is reachable here) through slirp4netns; the host's loopback services stay
// out of reach (10.0.2.2 is slirp's way to them, disabled), and so does everything with "none".
TEST_F(SandboxE2e, EgressReachesOutsideButNotTheHostsLoopback) {
    auto address = host_address();
    ASSERT_TRUE(address) << "this machine has no non-loopback IPv4 address to stand for the outside";
    in_addr outside{};
    ASSERT_EQ(::inet_pton(AF_INET, address->c_str(), &outside), 1);
    Greeter world(outside.s_addr, "hello from outside");
    Greeter loopback(htonl(INADDR_LOOPBACK), "hello from the host's loopback");
    std::string to_world = *address + ":" + std::to_string(world.port());

    auto sb = boot_egress_probe("e2e-probe-egress");
    EXPECT_EQ(get(sb, "/connect?" + to_world).body, "connected hello from outside");
    EXPECT_EQ(get(sb, "/connect?10.0.2.2:" + std::to_string(loopback.port())).body.rfind("refused", 0), 0u);
    EXPECT_EQ(get(sb, "/connect?127.0.0.1:" + std::to_string(loopback.port())).body.rfind("refused", 0), 0u);
    sb.teardown();

    auto none = boot_probe();
    EXPECT_EQ(get(none, "/connect?" + to_world).body.rfind("refused", 0), 0u)
        << "network = none reached " << to_world;
    none.teardown();
}

// Starting a function's egress network leaves the host's mounts alone: slirp4netns's own sandbox once
// detached every `ip netns` mount on the host (/run/netns is a shared mount), so a namespace made
// before the function started was gone after it.
TEST_F(SandboxE2e, EgressLeavesTheHostsNetnsMountsAlone) {
    std::string ns = "il-e2e-" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("ip netns add " + ns).c_str()), 0) << "ip netns add failed (iproute2)";
    fs::path point = fs::path("/run/netns") / ns;
    auto mounted = [&] {
        return read_text("/proc/self/mountinfo").find(" " + point.string() + " ") != std::string::npos;
    };
    EXPECT_TRUE(mounted()) << point << " is not a mount after ip netns add";

    auto sb = boot_egress_probe("e2e-probe-egress-mounts");
    EXPECT_TRUE(mounted()) << point << " was unmounted on the host while the function's network started";
    sb.teardown();
    EXPECT_TRUE(mounted()) << point << " was unmounted on the host by the sandbox's teardown";
    EXPECT_EQ(std::system(("ip netns del " + ns).c_str()), 0);
}

TEST_F(SandboxE2e, MemoryHogIsOomKilledAtTheLimit) {
    auto sb = boot_probe();
    uint64_t limit = sb.spec().memory_mb << 20;
    // The function is killed mid-request: the connection ends without a response.
    EXPECT_THROW(get(sb, "/hog"), initless::Error);
    auto exit = wait_exit(sb, 20s);
    ASSERT_TRUE(exit.has_value()) << "no exit reported; log:\n" << sb.log_tail();
    EXPECT_EQ(exit->pid, 2);
    EXPECT_TRUE(WIFSIGNALED(exit->status) && WTERMSIG(exit->status) == SIGKILL) << exit->describe();
    EXPECT_TRUE(sb.cgroup().oom_killed());
    fs::path max_usage = fs::path(initless::sys::Cgroup::kRoot) / "memory" / initless::sys::Cgroup::kGroup /
                         sb.id() / "memory.max_usage_in_bytes";
    uint64_t peak = std::stoull(read_text(max_usage));
    EXPECT_LE(peak, limit) << "peak usage above the limit";
    EXPECT_GE(peak, limit / 2) << "killed far below the limit (peak " << peak << ")";
    sb.teardown();
}

TEST_F(SandboxE2e, FunctionCrashIsReportedAndTeardownIsClean) {
    auto sb = boot_probe();
    EXPECT_THROW(get(sb, "/crash"), initless::Error);
    auto exit = wait_exit(sb, 10s);
    ASSERT_TRUE(exit.has_value());
    EXPECT_EQ(exit->pid, 2);
    EXPECT_TRUE(WIFEXITED(exit->status) && WEXITSTATUS(exit->status) == 3) << exit->describe();
    // init is still there and answers: the sandbox is torn down by us, not by the crash.
    EXPECT_TRUE(initless::sys::process_alive(sb.init_pid()));
    sb.teardown();
}

TEST_F(SandboxE2e, NeverReadyTimesOutWithTheLogTail) {
    auto s = spec::load(test_function("never-ready"));
    auto sb = sandbox::Sandbox::prepare(s);
    track(sb);
    sb.start();
    auto t0 = std::chrono::steady_clock::now();
    try {
        sb.wait_ready(s.ready, 500ms);
        ADD_FAILURE() << "wait_ready returned for a function that never prints its phrase";
    } catch (const initless::Error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("did not print its ready phrase"), std::string::npos) << what;
        EXPECT_NE(what.find("starting but never ready"), std::string::npos) << "no log tail in: " << what;
    }
    auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(waited, 400ms);
    EXPECT_LT(waited, 5s);
    sb.teardown();
}

TEST_F(SandboxE2e, ExitBeforeReadyIsReported) {
    auto s = spec::load(test_function("exits-early"));
    auto sb = sandbox::Sandbox::prepare(s);
    track(sb);
    sb.start();
    try {
        sb.wait_ready(s.ready, 10s);
        ADD_FAILURE() << "wait_ready returned for a function that exited";
    } catch (const initless::Error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("exited with status 3"), std::string::npos) << what;
        EXPECT_NE(what.find("exits-early: giving up"), std::string::npos) << what;
    }
    sb.teardown();
}

TEST_F(SandboxE2e, PreparedButNeverStartedTearsDownClean) {
    auto s = spec::load(test_function("probe"));
    auto sb = sandbox::Sandbox::prepare(s);
    track(sb);
    EXPECT_TRUE(fs::exists(sb.dir()));
    EXPECT_FALSE(cgroup_dirs(sb.id()).empty());
    EXPECT_EQ(processes_in_cgroup(sb.id()), std::vector<pid_t>{sb.init_pid()}) << "only init, waiting";
    sb.teardown();
}

TEST_F(SandboxE2e, DestructorTearsDown) {
    {
        auto sb = boot_probe();
        EXPECT_EQ(get(sb, "/").body, "ok");
    }  // no teardown() call: the destructor must do it
}

TEST_F(SandboxE2e, GcLeavesLiveSandboxesAlone) {
    auto sb = boot_probe();
    // Our own state dir: the owner (this process) is alive, so nothing goes.
    auto removed = sandbox::collect_garbage();
    EXPECT_EQ(removed, std::vector<std::string>{});
    EXPECT_EQ(get(sb, "/").body, "ok");
    // `initless gc` over another, empty state dir must not touch this sandbox either.
    fs::path other = scratch_ / "other-state";
    fs::create_directory(other);
    ::setenv("INITLESS_STATE_DIR", other.c_str(), 1);
    auto r = cli({"gc"});
    ::setenv("INITLESS_STATE_DIR", state_dir_.c_str(), 1);
    EXPECT_EQ(r.exit_code(), 0) << r.describe();
    EXPECT_EQ(r.out, "") << "gc of another state dir removed something of a live sandbox";
    EXPECT_FALSE(cgroup_dirs(sb.id()).empty());
    EXPECT_EQ(get(sb, "/").body, "ok");
    sb.teardown();
}
