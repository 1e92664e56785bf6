// A function holding a TCP connection at the snapshot to a server outside its sandbox: the
// python/tcp-reconnect function (network = "egress") keeps a connection opened at init to a small
// line server (standing for a database) that this test runs on the host, on the host's own
// non-loopback address: the function reaches it only through its egress (slirp4netns, which makes
// the connection from the host side; the host's loopback is closed to it). The address reaches the
// function through its env (DB_HOST, DB_PORT in a function.toml the test writes). One server serves
// the booted function and every restored instance, as one database does.
//
// The snapshot lists the connection as restored reset; with refuse_tcp_connections it fails naming
// it; after a restore (cow, prefetch, eager) the function's first query finds the connection reset,
// reconnects once to the same server and is answered on the new connection. No slirp4netns, mount
// or network namespace of a sandbox is left after its teardown.
//
// IPv4 only: the sandbox's egress gives it no IPv6 (slirp4netns runs without --enable-ipv6).
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cli.h"
#include "initless/checkpoint/checkpoint.h"
#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace {

using namespace initless;
using namespace std::chrono_literals;

// The host's first IPv4 address that is up and not loopback ("" if it has none).
std::string host_address() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return "";
    std::string out;
    for (ifaddrs* a = list; a && out.empty(); a = a->ifa_next) {
        if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
        if (!(a->ifa_flags & IFF_UP) || (a->ifa_flags & IFF_LOOPBACK)) continue;
        char buf[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof buf);
        out = buf;
    }
    ::freeifaddrs(list);
    return out;
}

// Listens on `address`, a port the kernel picks; answers each line with "pong <connection> <line>":
// which connection it has accepted (1, 2, ...) and how many lines it has answered on it.
class LineServer {
  public:
    explicit LineServer(const std::string& address) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1)
            throw Error("not an IPv4 address: " + address);
        listener_ = sys::UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        socklen_t len = sizeof a;
        if (!listener_ || ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::listen(listener_.get(), 16) != 0 ||
            ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
            throw sys::SysError("line server on " + address, errno);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~LineServer() {
        stop_ = true;
        thread_.join();
    }
    uint16_t port() const { return port_; }
    int accepted() const { return accepted_; }

  private:
    struct Conn {
        int fd;
        int serial;
        int answered = 0;
        std::string pending;
    };
    void run() {
        std::vector<Conn> conns;
        while (!stop_) {
            std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
            for (const auto& c : conns) fds.push_back({c.fd, POLLIN, 0});
            if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
            if (fds[0].revents & POLLIN) {
                int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
                if (c >= 0) conns.push_back({c, ++accepted_});
            }
            for (size_t i = fds.size() - 1; i >= 1; --i) {
                if (!fds[i].revents) continue;
                Conn& c = conns[i - 1];
                char buf[256];
                ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
                if (n <= 0) {
                    ::close(c.fd);
                    conns.erase(conns.begin() + static_cast<long>(i - 1));
                    continue;
                }
                c.pending.append(buf, static_cast<size_t>(n));
                size_t nl;
                while ((nl = c.pending.find('\n')) != std::string::npos) {
                    c.pending.erase(0, nl + 1);
                    std::string reply =
                        "pong " + std::to_string(c.serial) + " " + std::to_string(++c.answered) + "\n";
                    (void)::send(c.fd, reply.data(), reply.size(), MSG_NOSIGNAL);
                }
            }
        }
        for (const auto& c : conns) ::close(c.fd);
    }

    sys::UniqueFd listener_;
    uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::thread thread_;
};

// The slirp4netns processes serving the sandbox whose init is `init` (its pid is their argument).
std::vector<pid_t> slirp_of(pid_t init) {
    std::vector<pid_t> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
        std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string cmdline = read_text(e.path() / "cmdline");
        std::vector<std::string> args;
        for (size_t at = 0; at < cmdline.size();) {
            size_t end = cmdline.find('\0', at);
            if (end == std::string::npos) end = cmdline.size();
            args.push_back(cmdline.substr(at, end - at));
            at = end + 1;
        }
        if (args.empty() || fs::path(args[0]).filename() != "slirp4netns") continue;
        for (const auto& a : args)
            if (a == std::to_string(init)) out.push_back(std::stoi(name));
    }
    return out;
}

// Who still holds network namespace `link` ("net:[4026532...]"): a process in it, an fd of it, a
// bind mount of it. Empty when nothing does.
std::string netns_holders(const std::string& link) {
    std::string out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
        std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::error_code ec2;
        if (fs::read_symlink(e.path() / "ns" / "net", ec2).string() == link)
            out += "process " + name + " is in it; ";
        for (const auto& fd : fs::directory_iterator(e.path() / "fd", ec2))
            if (std::error_code ec3; fs::read_symlink(fd.path(), ec3).string() == link)
                out += "process " + name + " holds it at " + fd.path().string() + "; ";
    }
    if (read_text("/proc/self/mountinfo").find(link) != std::string::npos) out += "it is mounted; ";
    return out;
}

// checkpoint::checkpoint once the function has closed its side of the test's own request: the client
// end closes as soon as the answer is read, the function's a moment later, and until then the checkpoint
// refuses it as "a request still open" (a full ctest hit that once). Up to 1 s, as the snapshot builder
// waits for a warmup's connection.
checkpoint::Stats checkpoint_after_requests(const checkpoint::Target& target, const fs::path& dir,
                                            const image::Key& key) {
    for (int attempt = 0;; ++attempt) {
        try {
            return checkpoint::checkpoint(target, dir, key);
        } catch (const checkpoint::ContractError& e) {
            if (attempt >= 20 || std::string(e.what()).find("a request still open") == std::string::npos)
                throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
}

class TcpReconnect : public LibrarySandboxTest {
  protected:
    TcpReconnect() : LibrarySandboxTest("initless-tcp") {}

    // What a sandbox must not leave once torn down, beside sandbox_leftovers: its slirp4netns, its
    // network namespace, a mount of its instance dir. `netns` is its namespace's link, read before.
    void expect_nothing_left(sandbox::Sandbox& sb, const std::string& netns) {
        std::string id = sb.id();
        pid_t init = sb.init_pid();
        fs::path dir = sb.dir();
        EXPECT_FALSE(slirp_of(init).empty()) << "no slirp4netns serves the sandbox before its teardown";
        sb.teardown();
        EXPECT_TRUE(slirp_of(init).empty()) << "a slirp4netns of sandbox " << id << " is left";
        EXPECT_EQ(netns_holders(netns), "") << "the network namespace of sandbox " << id << " is left";
        EXPECT_EQ(sandbox_leftovers(id, state_), "");
        EXPECT_EQ(read_text("/proc/self/mountinfo").find(dir.string()), std::string::npos)
            << "a mount of " << dir << " is left";
    }
};

std::string netns_link(const sandbox::Sandbox& sb) {
    return fs::read_symlink("/proc/" + std::to_string(sb.init_pid()) + "/ns/net").string();
}

TEST_F(TcpReconnect, PythonClientReconnectsToAServerOutsideItsSandboxAfterRestore) {
    std::string host = host_address();
    if (host.empty()) GTEST_SKIP() << "this host has no non-loopback IPv4 address for the sandbox to reach";
    LineServer db(host);
    std::string server = host + ":" + std::to_string(db.port());

    // The function, its server's address in its env.
    fs::path source = fs::path(INITLESS_SOURCE_DIR) / "tests" / "restore" / "python" / "tcp-reconnect";
    fs::path function = scratch_ / "function";
    fs::create_directories(function);
    fs::copy_file(source / "app.py", function / "app.py");
    std::string toml = read_text(source / "function.toml");
    ASSERT_NE(toml.find("network = \"egress\""), std::string::npos) << toml;
    size_t env = toml.find("\n[env]\n");  // the last table: lines appended go into it
    ASSERT_NE(env, std::string::npos) << toml;
    ASSERT_EQ(toml.find("\n[", env + 1), std::string::npos) << toml;
    toml += "DB_HOST = \"" + host + "\"\nDB_PORT = \"" + std::to_string(db.port()) + "\"\n";
    sys::write_file(function / "function.toml", toml);
    spec::FunctionSpec spec = spec::load(function);

    fs::path image_dir = scratch_ / "image";
    image::Key key = image::Key::of_state_dir(state_);
    {
        auto sb = sandbox::Sandbox::prepare(spec);
        sb.start();
        sb.wait_ready(spec.ready, 10s);
        auto booted = gateway::http_get(sb.connect(spec.port), "/", 10s);
        EXPECT_EQ(booted.body, "db: pong 1 2; reconnects: 0\n");

        checkpoint::Target target{
            sb.init_pid(), sb.log_path(), sb.upper_dir(),          spec.name,
            spec.dir,      spec.port,     sb.seccomp_filter().bpf, sb.seccomp_filter().flags,
            true};
        try {
            checkpoint_after_requests(target, scratch_ / "strict-image", key);
            ADD_FAILURE() << "refuse_tcp_connections: the snapshot of a held connection succeeded";
        } catch (const checkpoint::ContractError& e) {
            EXPECT_NE(std::string(e.what()).find(server), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("refuse_tcp_connections"), std::string::npos) << e.what();
        }
        EXPECT_FALSE(fs::exists(scratch_ / "strict-image" / "manifest.json"));

        target.refuse_tcp_connections = false;
        checkpoint::Stats stats = checkpoint_after_requests(target, image_dir, key);
        ASSERT_EQ(stats.notes.size(), 1u);
        EXPECT_NE(stats.notes[0].find("-> " + server), std::string::npos) << stats.notes[0];
        EXPECT_NE(stats.notes[0].find("reset"), std::string::npos) << stats.notes[0];
        EXPECT_EQ(db.accepted(), 1);
        expect_nothing_left(sb, netns_link(sb));
    }

    image::Image img = image::load(image_dir, key);
    int connection = 1;
    for (auto strategy : {restore::Strategy::Cow, restore::Strategy::Prefetch, restore::Strategy::Eager}) {
        SCOPED_TRACE(restore::strategy_name(strategy));
        sandbox::SandboxOptions opts;
        opts.seed_upper = [&img](const fs::path& upper) { image::copy_tree(img, image::kUpperTree, upper); };
        auto sb = sandbox::Sandbox::prepare(spec, opts);
        std::string netns = netns_link(sb);
        restore::restore_into(sb, img, strategy);
        ++connection;
        auto first = gateway::http_get(sb.connect(spec.port), "/", 10s);
        // The held connection failed as a reset one does; the client reconnected once, to the same server.
        EXPECT_EQ(first.body, "db: pong " + std::to_string(connection) + " 1; reconnects: 1\n");
        auto second = gateway::http_get(sb.connect(spec.port), "/", 10s);
        EXPECT_EQ(second.body, "db: pong " + std::to_string(connection) + " 2; reconnects: 1\n");
        EXPECT_EQ(db.accepted(), connection);
        expect_nothing_left(sb, netns);
    }
}

}  // namespace
