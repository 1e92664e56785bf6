// A function holding a TCP connection at the snapshot to a server that is not part of it: the
// python/tcp-reconnect function keeps a connection to 127.0.0.1:9432 opened at init, where this test
// runs a small line server (standing for a database) in the sandbox's network namespace: the
// server's sockets belong to this test process, so it is outside the function's process tree and
// outside the snapshot, as a database is. Each sandbox gets its own server ("generation" 1 for the
// booted one, 2 and 3 for the restored ones), as every instance reaches the same database address.
//
// The snapshot lists the connection as restored reset; with refuse_tcp_connections it fails naming
// it; after a restore the function's next query finds the connection reset, reconnects once and is
// answered by the new server.
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
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
#include "initless/sys/socket.h"

namespace {

using namespace initless;
using namespace std::chrono_literals;

// Answers each line it receives with "pong <generation> <count>" on every connection, until destroyed.
class LineServer {
  public:
    LineServer(int netns_fd, uint16_t port, int generation)
        : listener_(sys::listen_in_netns(netns_fd, port)), generation_(generation), thread_([this] { run(); }) {}
    ~LineServer() {
        stop_ = true;
        thread_.join();
    }
    int accepted() const { return accepted_; }

  private:
    void run() {
        std::vector<int> conns;
        std::vector<std::string> pending;
        while (!stop_) {
            std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
            for (int c : conns) fds.push_back({c, POLLIN, 0});
            if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
            if (fds[0].revents & POLLIN) {
                int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
                if (c >= 0) {
                    conns.push_back(c);
                    pending.emplace_back();
                    ++accepted_;
                }
            }
            for (size_t i = fds.size() - 1; i >= 1; --i) {
                if (!fds[i].revents) continue;
                char buf[256];
                ssize_t n = ::recv(conns[i - 1], buf, sizeof buf, 0);
                if (n <= 0) {
                    ::close(conns[i - 1]);
                    conns.erase(conns.begin() + static_cast<long>(i - 1));
                    pending.erase(pending.begin() + static_cast<long>(i - 1));
                    continue;
                }
                pending[i - 1].append(buf, static_cast<size_t>(n));
                size_t nl;
                while ((nl = pending[i - 1].find('\n')) != std::string::npos) {
                    pending[i - 1].erase(0, nl + 1);
                    std::string reply = "pong " + std::to_string(generation_) + " " + std::to_string(++answered_) + "\n";
                    (void)::send(conns[i - 1], reply.data(), reply.size(), MSG_NOSIGNAL);
                }
            }
        }
        for (int c : conns) ::close(c);
    }

    sys::UniqueFd listener_;
    int generation_;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    int answered_ = 0;
    std::thread thread_;  // last: starts once the rest is built
};

class TcpReconnect : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u) << "the restore suite runs real sandboxes and needs root";
        char tmpl[] = "/tmp/initless-tcp-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
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
};

TEST_F(TcpReconnect, PythonClientReconnectsToItsServerAfterRestore) {
    spec::FunctionSpec spec =
        spec::load(fs::path(INITLESS_SOURCE_DIR) / "tests" / "restore" / "python" / "tcp-reconnect");
    fs::path image_dir = scratch_ / "image";
    image::Key key = image::Key::of_state_dir(state_);
    checkpoint::Stats stats;
    {
        auto sb = sandbox::Sandbox::prepare(spec);
        LineServer db(sb.netns_fd(), 9432, 1);
        sb.start();
        sb.wait_ready(spec.ready, 10s);
        auto booted = gateway::http_get(sb.connect(spec.port), "/", 10s);
        EXPECT_EQ(booted.body, "db: pong 1 2; reconnects: 0\n");

        checkpoint::Target target{sb.init_pid(), sb.log_path(), sb.upper_dir(), spec.name, spec.dir, spec.port,
                                  sb.seccomp_filter().bpf, sb.seccomp_filter().flags, true};
        try {
            checkpoint::checkpoint(target, scratch_ / "strict-image", key);
            ADD_FAILURE() << "refuse_tcp_connections: the snapshot of a held connection succeeded";
        } catch (const checkpoint::ContractError& e) {
            EXPECT_NE(std::string(e.what()).find("127.0.0.1:9432"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("refuse_tcp_connections"), std::string::npos) << e.what();
        }
        EXPECT_FALSE(fs::exists(scratch_ / "strict-image" / "manifest.json"));

        target.refuse_tcp_connections = false;
        stats = checkpoint::checkpoint(target, image_dir, key);
        ASSERT_EQ(stats.notes.size(), 1u);
        EXPECT_NE(stats.notes[0].find("127.0.0.1:9432"), std::string::npos) << stats.notes[0];
        EXPECT_NE(stats.notes[0].find("reset"), std::string::npos) << stats.notes[0];
        EXPECT_EQ(db.accepted(), 1);
        sb.teardown();
    }

    image::Image img = image::load(image_dir, key);
    int generation = 2;
    for (auto strategy : {restore::Strategy::Cow, restore::Strategy::Eager}) {
        SCOPED_TRACE(restore::strategy_name(strategy));
        sandbox::SandboxOptions opts;
        opts.seed_upper = [&img](const fs::path& upper) { image::copy_tree(img, image::kUpperTree, upper); };
        auto sb = sandbox::Sandbox::prepare(spec, opts);
        LineServer db(sb.netns_fd(), 9432, generation);
        restore::restore_into(sb, img, strategy);
        auto first = gateway::http_get(sb.connect(spec.port), "/", 10s);
        // The held connection failed as a reset one does; the client reconnected once, to this server.
        EXPECT_EQ(first.body, "db: pong " + std::to_string(generation) + " 1; reconnects: 1\n");
        auto second = gateway::http_get(sb.connect(spec.port), "/", 10s);
        EXPECT_EQ(second.body, "db: pong " + std::to_string(generation) + " 2; reconnects: 1\n");
        EXPECT_EQ(db.accepted(), 1);
        std::string id = sb.id();
        sb.teardown();
        EXPECT_EQ(sandbox_leftovers(id, state_), "");
        ++generation;
    }
}

}  // namespace
