// Remote pages (include/initless/pages/remote.h): `initless page-server` in one network namespace
// and `initless restore DIR --pages-from` in another, joined by a veth pair, stand in for two hosts.
// DIR holds the image without its pages.img. Both sides share one state dir (the image key: on two
// real hosts it is copied along with the manifest).
//   - restore suite programs covering memory kinds answer "ok" from inside, restored remotely;
//   - the page server answers garbage, bad ranges and vanishing clients with errors, keeps serving,
//     and stops cleanly on SIGTERM;
//   - a page server killed mid-restore ends the restore with an error within 10 s, leaving nothing;
//   - through the library: the function of a restore whose source died is killed, and the page
//     server thread and every fd end (counted in this process).
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/pages/page_server.h"
#include "initless/pages/remote.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/file.h"
#include "initless/sys/socket.h"

namespace {

using namespace initless;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Runs a command; 0 on success.
int sh(const std::string& cmd) {
    int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Two network namespaces joined by a veth pair: "server" 10.231.N.1 and "client" 10.231.N.2.
// Removed (with the veth) when dropped.
struct TwoHosts {
    std::string server_ns, client_ns, server_ip, client_ip;
    bool ok = false;
    TwoHosts() {
        int n = static_cast<int>(::getpid() % 250) + 1;
        server_ns = fmt::format("ilrp-s-{}", ::getpid());
        client_ns = fmt::format("ilrp-c-{}", ::getpid());
        server_ip = fmt::format("10.231.{}.1", n);
        client_ip = fmt::format("10.231.{}.2", n);
        std::string vs = fmt::format("ilrs{}", ::getpid()), vc = fmt::format("ilrc{}", ::getpid());
        ok = sh("ip netns add " + server_ns) == 0 && sh("ip netns add " + client_ns) == 0 &&
             sh(fmt::format("ip link add {} netns {} type veth peer name {} netns {}", vs, server_ns, vc,
                            client_ns)) == 0 &&
             sh(fmt::format("ip -n {} addr add {}/30 dev {}", server_ns, server_ip, vs)) == 0 &&
             sh(fmt::format("ip -n {} addr add {}/30 dev {}", client_ns, client_ip, vc)) == 0 &&
             sh(fmt::format("ip -n {} link set {} up", server_ns, vs)) == 0 &&
             sh(fmt::format("ip -n {} link set {} up", client_ns, vc)) == 0 &&
             sh(fmt::format("ip -n {} link set lo up", server_ns)) == 0 &&
             sh(fmt::format("ip -n {} link set lo up", client_ns)) == 0;
        server_veth = vs;
    }
    // Slows the server's side of the link (a token bucket: the kernel here has no netem).
    bool limit_server_rate(const std::string& rate) const {
        return sh(fmt::format("tc -n {} qdisc add dev {} root tbf rate {} burst 32kb latency 2s", server_ns,
                              server_veth, rate)) == 0;
    }
    ~TwoHosts() {
        sh("ip netns del " + server_ns);
        sh("ip netns del " + client_ns);
    }
    std::string server_veth;
};

// Entries of a /proc directory (fds, tasks): what a test compares before and after.
size_t count_entries(const char* dir) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

// The last page of a lazily served VMA outside `img`'s working set (~0: none): reading it is a fault
// the restore set did not fetch.
uint64_t lazy_page_outside_working_set(const image::Image& img) {
    uint64_t found = ~0ULL;
    for (const auto& p : img.manifest.processes)
        for (const auto& v : p.vmas)
            if (pages::served_lazily(v))
                for (const auto& r : img.runs_of(v)) {
                    uint64_t page = r.file_offset + (r.pages - 1) * 4096;
                    bool in_working_set = false;
                    for (auto [a, b] : img.working_set_file_ranges())
                        in_working_set |= page / image::kPageSumBlock >= a / image::kPageSumBlock &&
                                          page / image::kPageSumBlock <= (b - 1) / image::kPageSumBlock;
                    if (r.pages > 0 && !in_working_set) found = page;
                }
    return found;
}

// One response of the page protocol on `sock`: its header and its data, within 5 s.
std::pair<pages::remote::ResponseHeader, std::string> read_response(int sock) {
    auto by = Clock::now() + 5s;
    pages::remote::ResponseHeader h;
    sys::receive_all_by(sock, &h, sizeof h, by);
    std::string body(h.length, '\0');
    sys::receive_all_by(sock, body.data(), body.size(), by);
    return {h, body};
}

class RemotePages : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u) << "the restore suite runs real sandboxes and needs root";
        char tmpl[] = "/tmp/initless-remote-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        scratch_ = tmpl;
        state_ = scratch_ / "state";
        fs::create_directories(state_);
    }
    void TearDown() override {
        // What gc finds in this test's state dir is this test's leak. An empty old cgroup without an
        // instance dir cannot be traced to a test (other tests run beside this one): shown, not failed.
        auto gc = run_cli({"gc"}, scratch_, state_, 30s);
        std::istringstream lines(gc.out);
        for (std::string line; std::getline(lines, line);) {
            if (line.rfind("removed cgroup ", 0) == 0)
                std::fprintf(stderr, "note: gc removed a cgroup another test left: %s\n", line.c_str());
            else
                ADD_FAILURE() << "gc found leftovers of this test: " << line << "\n" << gc.describe();
        }
        std::error_code ec;
        fs::remove_all(scratch_, ec);
    }

    // Snapshots program `name` into <scratch>/<name>.img; and a copy without pages.img, the
    // manifest dir a remote restore gets, into <scratch>/<name>.manifest.
    std::pair<fs::path, fs::path> snapshot(const std::string& name) {
        fs::path image = scratch_ / (name + ".img"), manifest = scratch_ / (name + ".manifest");
        auto r = run_cli({"snapshot", program_dir(name).string(), "--image", image.string(), "--json"},
                         scratch_, state_, 120s);
        EXPECT_EQ(r.exit_code, 0) << r.describe();
        EXPECT_TRUE(manifest_copy(image, manifest));
        return {image, manifest};
    }

    // `initless page-server` of `image` in namespace `ns` (empty: this one) on `ip`:0; the address it
    // listens on, once it says so.
    std::string start_page_server(std::optional<Child>& server, const fs::path& image, const std::string& ns,
                                  const std::string& ip, const std::vector<std::string>& options = {}) {
        return ::start_page_server(server, image, ns, ip, scratch_, state_,
                                   fmt::format("page-server-{}", ++servers_), options);
    }

    // `initless page-server` of `image` on 127.0.0.1 in this namespace: its address (port 0 if it did
    // not start).
    sys::TcpAddress local_page_server(std::optional<Child>& server, const fs::path& image,
                                      const std::vector<std::string>& options = {}) {
        std::string addr = start_page_server(server, image, "", "127.0.0.1", options);
        return addr.empty() ? sys::TcpAddress{} : sys::parse_tcp_address(addr);
    }

    // The lazy restore of `img` into a new sandbox (`sb`), its pages read through `source`: in this
    // process, so that the page server thread, its fds and the sandbox are this test's.
    restore::Restored restore_lazily(image::Image& img, std::shared_ptr<pages::RemotePageSource> source,
                                     const spec::FunctionSpec& spec, std::optional<sandbox::Sandbox>& sb) {
        img.pages_file = std::make_shared<const sys::UniqueFd>(source->cache_file());
        img.page_source = std::move(source);
        sandbox::SandboxOptions opts;
        opts.seed_upper = [&](const fs::path& upper) { image::copy_tree(img, image::kUpperTree, upper); };
        sb.emplace(sandbox::Sandbox::prepare(spec, opts));
        return restore::restore_into(*sb, img, restore::Strategy::Lazy);
    }

    // `initless restore manifest --pages-from addr ...` in namespace `ns`.
    CliResult restore_in(const std::string& ns, std::vector<std::string> args, std::chrono::seconds timeout) {
        std::vector<std::string> argv = {"nsenter", "--net=/run/netns/" + ns, INITLESS_BINARY};
        argv.insert(argv.end(), args.begin(), args.end());
        Child c(argv, scratch_, state_, fmt::format("restore-{}", ++restores_));
        CliResult r;
        r.exit_code = c.wait(timeout);
        r.timed_out = r.exit_code < 0;
        if (r.timed_out) {
            ::kill(c.pid, SIGKILL);
            ::waitpid(c.pid, nullptr, 0);
            c.pid = -1;
        }
        r.out = read_text(c.out);
        r.err = read_text(c.err);
        return r;
    }

    fs::path scratch_, state_;
    int servers_ = 0, restores_ = 0;
};

// Restore suite programs covering memory kinds: a large heap with zero MiBs, brk growth, mmap'd regions of
// every protection, file-backed private COW pages, a memfd mapping, a process tree, and lazy-pages
// (mremap, MADV_DONTNEED, fork and a kernel read of served memory).
TEST_F(RemotePages, ProgramsRestoredAcrossTwoHostsAnswerOk) {
    TwoHosts hosts;
    ASSERT_TRUE(hosts.ok) << "could not make two network namespaces joined by a veth pair";
    for (const char* name : {"big-heap", "brk-growth", "mmap-regions", "file-private-cow", "memfd-map",
                             "process-tree", "lazy-pages"}) {
        SCOPED_TRACE(name);
        auto [image, manifest] = snapshot(name);
        std::optional<Child> server;
        std::string addr = start_page_server(server, image, hosts.server_ns, hosts.server_ip);
        ASSERT_FALSE(addr.empty());
        auto r = restore_in(hosts.client_ns,
                            {"restore", manifest.string(), "--pages-from", addr, "--instances", "2",
                             "--request", "/check", "--json", "--no-fallback"},
                            60s);
        ASSERT_EQ(r.exit_code, 0) << r.describe();
        json j = json::parse(r.out, nullptr, false);
        ASSERT_TRUE(j.is_object()) << r.describe();
        EXPECT_EQ(j.value("strategy", ""), "lazy");
        ASSERT_TRUE(j.contains("remote")) << j.dump(2);
        EXPECT_GT(j["remote"].value("bytes_fetched", 0), 0u) << j.dump(2);
        for (const auto& inst : j["instances"]) {
            EXPECT_EQ(inst.value("mode", ""), "restore") << inst.dump(2);
            EXPECT_EQ(inst.value("body", "").rfind("ok", 0), 0u) << inst.dump(2);
            ASSERT_TRUE(inst.contains("memory")) << inst.dump(2);
            EXPECT_GT(inst["memory"].value("bytes_fetched", 0), 0u) << inst.dump(2);
            EXPECT_FALSE(inst["memory"].contains("failure")) << inst.dump(2);
        }
        ::kill(server->pid, SIGTERM);
        EXPECT_EQ(server->wait(10s), 0) << read_text(server->err);
    }
}

// An example answers as the booted function did: examples/python-bigdict's /checksum (every entry of
// the dict read) equals the booted one's, and the request counter continues from the snapshot (2 warmup
// requests, so /checksum is number 3).
TEST_F(RemotePages, PythonBigdictAnswersAsBootedAcrossTwoHosts) {
    TwoHosts hosts;
    ASSERT_TRUE(hosts.ok) << "could not make two network namespaces joined by a veth pair";
    fs::path src = fs::path(INITLESS_SOURCE_DIR) / "examples" / "python-bigdict";
    fs::path dir = scratch_ / "python-bigdict";
    fs::create_directories(dir);
    fs::copy_file(src / "app.py", dir / "app.py");
    std::string own;
    std::istringstream lines(read_text(src / "function.toml"));
    for (std::string line; std::getline(lines, line);)
        if (line.rfind("warmup", 0) != 0) own += line + "\n";
    std::ofstream(dir / "function.toml") << "warmup = 2\n" << own;
    auto booted = run_cli({"run", dir.string(), "--request", "/checksum", "--json"}, scratch_, state_, 120s);
    ASSERT_EQ(booted.exit_code, 0) << booted.describe();
    json boot = json::parse(json::parse(booted.out).at("body").get<std::string>());
    ASSERT_TRUE(boot.contains("checksum")) << boot.dump();

    fs::path image = scratch_ / "bigdict.img", manifest = scratch_ / "bigdict.manifest";
    auto snap = run_cli({"snapshot", dir.string(), "--image", image.string()}, scratch_, state_, 120s);
    ASSERT_EQ(snap.exit_code, 0) << snap.describe();
    ASSERT_EQ(sh(fmt::format("cp -a {} {}", image.string(), manifest.string())), 0);
    fs::remove(manifest / "pages.img");
    std::optional<Child> server;
    std::string addr = start_page_server(server, image, hosts.server_ns, hosts.server_ip);
    ASSERT_FALSE(addr.empty());
    auto r = restore_in(hosts.client_ns,
                        {"restore", manifest.string(), "--pages-from", addr, "--instances", "2", "--request",
                         "/checksum", "--json", "--no-fallback"},
                        60s);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    json j = json::parse(r.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.describe();
    for (const auto& inst : j["instances"]) {
        json body = json::parse(inst.value("body", ""), nullptr, false);
        ASSERT_TRUE(body.is_object()) << inst.dump();
        EXPECT_EQ(body["n"], boot["n"]);
        EXPECT_EQ(body["checksum"], boot["checksum"]) << "the dict changed across the remote restore";
        EXPECT_EQ(body["requests"], 3) << "the counter should continue from 2 (warmup) to 3";
    }
    ::kill(server->pid, SIGTERM);
    EXPECT_EQ(server->wait(10s), 0) << read_text(server->err);
}

// The manifest dir alone (no page server) restores nothing, and an image without pages.sums or a
// server of another image is refused naming why.
TEST_F(RemotePages, AServerOfAnotherImageIsRefused) {
    auto [image, manifest] = snapshot("mmap-regions");
    auto [other, other_manifest] = snapshot("brk-growth");
    std::optional<Child> server;
    std::string addr = start_page_server(server, other, "", "127.0.0.1");
    ASSERT_FALSE(addr.empty());
    auto r =
        run_cli({"restore", manifest.string(), "--pages-from", addr, "--request", "/check", "--no-fallback"},
                scratch_, state_, 60s);
    EXPECT_NE(r.exit_code, 0) << r.describe();
    EXPECT_NE(r.err.find("serves another image"), std::string::npos) << r.describe();
    auto plain = run_cli({"restore", manifest.string(), "--request", "/check", "--no-fallback"}, scratch_,
                         state_, 60s);
    EXPECT_NE(plain.exit_code, 0) << "restored without pages.img or a page server:\n" << plain.describe();
}

// A page server whose pages.img was changed after the snapshot (started with --no-verify, so it serves
// it): the changed block fails its digest in pages.sums and the restore fails naming it; the function
// never runs on the changed bytes.
TEST_F(RemotePages, AChangedPageFailsItsDigest) {
    auto [image, manifest] = snapshot("mmap-regions");
    auto img = image::load(image, image::Key::of_state_dir(state_));
    ASSERT_FALSE(img.runs.empty());
    // Every saved run changed in its first byte: whichever the restore fetches first fails.
    {
        sys::UniqueFd fd = sys::open_file(image / "pages.img", O_RDWR);
        for (const auto& r : img.runs) {
            char byte = 0;
            ASSERT_EQ(::pread(fd.get(), &byte, 1, static_cast<off_t>(r.file_offset)), 1);
            byte = static_cast<char>(byte ^ 0x5a);
            ASSERT_EQ(::pwrite(fd.get(), &byte, 1, static_cast<off_t>(r.file_offset)), 1);
        }
    }
    std::optional<Child> server;
    std::vector<std::string> argv = {INITLESS_BINARY, "page-server", "--image",    image.string(),
                                     "--listen",      "127.0.0.1:0", "--no-verify"};
    server.emplace(argv, scratch_, state_, "page-server-changed");
    std::string addr;
    auto until = Clock::now() + 30s;
    std::regex listening("listening on (\\S+)");
    while (addr.empty() && Clock::now() < until) {
        std::smatch m;
        std::string out = read_text(server->out);
        if (std::regex_search(out, m, listening)) addr = m[1];
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_FALSE(addr.empty()) << read_text(server->err);
    auto r =
        run_cli({"restore", manifest.string(), "--pages-from", addr, "--request", "/check", "--no-fallback"},
                scratch_, state_, 60s);
    EXPECT_NE(r.exit_code, 0) << "restored from changed pages:\n" << r.describe();
    EXPECT_NE(r.err.find("does not match pages.sums"), std::string::npos) << r.describe();
}

// Garbage, bad ranges and clients that vanish mid-request get errors; the server keeps serving others
// and ends cleanly (exit 0) on SIGTERM with a client still connected.
TEST_F(RemotePages, PageServerAnswersBadInputAndStopsOnSigterm) {
    using namespace pages::remote;
    auto [image, manifest] = snapshot("mmap-regions");
    std::optional<Child> server;
    auto target = local_page_server(server, image);
    ASSERT_NE(target.port, 0);
    auto deadline = [] { return Clock::now() + 5s; };
    auto header = read_response;
    // A bad range: an error, and the connection goes on.
    auto a = sys::connect_tcp(target, 5s);
    uint64_t size = image::load(image, image::Key::of_state_dir(state_)).manifest.pages_file_size;
    for (Request bad : {Request{kRequestMagic, kRange, size, 4096}, Request{kRequestMagic, kRange, 0, 0},
                        Request{kRequestMagic, kRange, 0, kMaxRange + 4096},
                        Request{kRequestMagic, kRange, ~0ULL - 10, 4096}}) {
        sys::send_all_by(a.get(), &bad, sizeof bad, deadline());
        auto [h, body] = header(a.get());
        EXPECT_EQ(h.status, kBadRange) << body;
        EXPECT_NE(body.find("bad range"), std::string::npos) << body;
    }
    Request good{kRequestMagic, kRange, 0, 4096};
    sys::send_all_by(a.get(), &good, sizeof good, deadline());
    auto [ok, page] = header(a.get());
    EXPECT_EQ(ok.status, kOk);
    EXPECT_EQ(page.size(), 4096u);
    // Garbage: a malformed answer, then the server closes the connection.
    auto b = sys::connect_tcp(target, 5s);
    std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    garbage.resize(sizeof(Request), ' ');
    sys::send_all_by(b.get(), garbage.data(), garbage.size(), deadline());
    auto [bad, why] = header(b.get());
    EXPECT_EQ(bad.status, kMalformed) << why;
    char byte;
    EXPECT_EQ(sys::receive_some_by(b.get(), &byte, 1, deadline()), 0u)
        << "the connection stayed open after garbage";
    // Half a request, then gone.
    {
        auto c = sys::connect_tcp(target, 5s);
        sys::send_all_by(c.get(), &good, 10, deadline());
    }
    // The first client is still served.
    sys::send_all_by(a.get(), &good, sizeof good, deadline());
    auto [again, page2] = header(a.get());
    EXPECT_EQ(again.status, kOk);
    EXPECT_EQ(page2, page);
    // Clients over the limit, none idle for a second: a restore's source is refused and says why, not
    // "does not speak the protocol". Filled until the server serves kMaxClients at once (`a` and the
    // rest of the limit, each answering a hello): the garbage and the half-request clients may still
    // count for a moment after they end, and a slot they free later would let the source in.
    std::vector<sys::UniqueFd> many;
    Request hello{kRequestMagic, kHello, 0, 0};
    for (int tries = 0; many.size() + 1 < pages::RemotePageServer::kMaxClients; ++tries) {
        ASSERT_LT(tries, 200) << "the page server never served its limit of clients";
        auto s = sys::connect_tcp(target, 5s);
        sys::send_all_by(s.get(), &hello, sizeof hello, deadline());
        auto [h, body] = header(s.get());
        if (h.status == kOk)
            many.push_back(std::move(s));
        else
            ::usleep(10'000);  // refused while the ended ones still count
    }
    // Each asks once more, `a` first, so that none has been idle for long.
    sys::send_all_by(a.get(), &hello, sizeof hello, deadline());
    EXPECT_EQ(header(a.get()).first.status, kOk);
    for (auto& s : many) {
        sys::send_all_by(s.get(), &hello, sizeof hello, deadline());
        EXPECT_EQ(header(s.get()).first.status, kOk);
    }
    auto img = image::load_without_pages(manifest, image::Key::of_state_dir(state_));
    try {
        pages::RemotePageSource refused(target, img, 3000ms);
        ADD_FAILURE() << "a client over the limit was served while no client had been idle for a second";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("refused the connection: page-server: too many clients"),
                  std::string::npos)
            << e.what();
    }
    // Over a second later the client idle longest (`a`) makes room: idle connections, whoever holds
    // them, do not lock restores out.
    std::this_thread::sleep_for(1200ms);
    try {
        pages::RemotePageSource served(target, img, 3000ms);
    } catch (const Error& e) {
        ADD_FAILURE() << "a restore was refused while every client was idle: " << e.what();
    }
    auto until = Clock::now() + 5s;
    while (sys::peek_stream(a.get()) != sys::StreamPeek::Closed && Clock::now() < until)
        std::this_thread::sleep_for(10ms);
    EXPECT_EQ(sys::peek_stream(a.get()), sys::StreamPeek::Closed) << "the client idle longest was not ended";
    size_t ended = 0;
    for (auto& s : many) ended += sys::peek_stream(s.get()) == sys::StreamPeek::Closed;
    EXPECT_EQ(ended, 0u) << "more than one client was ended to make room for one";
    auto kept = std::move(many.back());
    many.clear();
    // SIGTERM with a client still connected: a clean exit.
    ::kill(server->pid, SIGTERM);
    EXPECT_EQ(server->wait(10s), 0) << read_text(server->err);
    std::string log = read_text(server->err);
    EXPECT_NE(log.find("bad range"), std::string::npos) << log;
    EXPECT_NE(log.find("malformed request"), std::string::npos) << log;
    EXPECT_NE(log.find("stopped"), std::string::npos) << log;
    EXPECT_NE(log.find("ending client 127.0.0.1"), std::string::npos) << log;
    EXPECT_NE(log.find("clients already"), std::string::npos) << log;
}

// A page server closes clients idle past --client-idle-s; a source whose two connections it closed
// (the first after the restore set, the read-ahead's while it waited for the fill to begin) makes
// each again when it needs it, and every page it hands out is pages.img's.
TEST_F(RemotePages, ASourceReconnectsAfterThePageServerClosedItsIdleConnections) {
    auto [image, manifest] = snapshot("big-heap");
    std::optional<Child> server;
    auto target = local_page_server(server, image, {"--client-idle-s", "1"});
    ASSERT_NE(target.port, 0);
    auto img = image::load_without_pages(manifest, image::Key::of_state_dir(state_));
    uint64_t lazy_page = lazy_page_outside_working_set(img);
    ASSERT_NE(lazy_page, ~0ULL) << "big-heap's image has no lazily served page outside its working set";
    pages::RemotePageSource source(target, img, 3000ms);
    source.fetch_for_restore(img);
    std::this_thread::sleep_for(2500ms);
    std::string log = read_text(server->err);
    size_t closed = 0;
    for (size_t at = log.find("no request for 1000 ms"); at != std::string::npos;
         at = log.find("no request for 1000 ms", at + 1))
        ++closed;
    EXPECT_EQ(closed, 2u) << "the page server did not close both idle connections\n" << log;
    EXPECT_EQ(source.counters().reconnects.load(), 0u);

    auto pages_img = sys::open_file(image / "pages.img", O_RDONLY);
    auto same_as_image = [&](uint64_t offset, uint64_t len) {
        std::string want(len, '\0');
        EXPECT_EQ(::pread(pages_img.get(), want.data(), len, static_cast<off_t>(offset)),
                  static_cast<ssize_t>(len));
        return std::memcmp(source.read(offset, len), want.data(), len) == 0;
    };
    // A fault: the first connection is made again; the read-ahead wakes (the fill began) and makes its own.
    EXPECT_TRUE(same_as_image(lazy_page, 4096));
    auto until = Clock::now() + 10s;
    while (source.counters().reconnects < 2 && Clock::now() < until) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(source.counters().reconnects.load(), 2u);
    uint64_t size = img.manifest.pages_file_size, mismatched = 0;
    for (uint64_t off = 0; off < size; off += image::kPageSumBlock)
        mismatched += !same_as_image(off, std::min<uint64_t>(image::kPageSumBlock, size - off));
    EXPECT_EQ(mismatched, 0u);
    EXPECT_GT(source.counters().blocks_read_ahead.load(), 0u);
    ::kill(server->pid, SIGTERM);
    EXPECT_EQ(server->wait(10s), 0) << read_text(server->err);
}

// A source whose connections were ended to make room (the server full, they idle for over a second)
// and whose reconnections find the server full of clients that keep asking: it asks again until a
// place frees (within its timeout), and the fault that needed it is answered right.
TEST_F(RemotePages, AReconnectionToAFullServerWaitsForRoom) {
    using namespace pages::remote;
    auto [image, manifest] = snapshot("big-heap");
    std::optional<Child> server;
    auto target = local_page_server(server, image);
    ASSERT_NE(target.port, 0);
    auto img = image::load_without_pages(manifest, image::Key::of_state_dir(state_));
    uint64_t lazy_page = lazy_page_outside_working_set(img);
    ASSERT_NE(lazy_page, ~0ULL);
    pages::RemotePageSource source(target, img, 5000ms);
    source.fetch_for_restore(img);  // two connections; the read-ahead then waits for the fill
    // Clients that ask every 200 ms: never idle for a second.
    std::mutex mu;
    std::vector<sys::UniqueFd> busy;
    Request hello{kRequestMagic, kHello, 0, 0};
    auto ask = [&](int sock) {
        sys::send_all_by(sock, &hello, sizeof hello, Clock::now() + 5s);
        return read_response(sock).first.status;
    };
    auto join = [&] {
        auto s = sys::connect_tcp(target, 5s);
        EXPECT_EQ(ask(s.get()), kOk);
        std::lock_guard lock(mu);
        busy.push_back(std::move(s));
    };
    for (size_t i = 0; i + 2 < pages::RemotePageServer::kMaxClients; ++i) join();
    std::atomic<bool> stop{false};
    std::thread keeper([&] {
        while (!stop) {
            {
                std::lock_guard lock(mu);
                for (auto& s : busy) ask(s.get());
            }
            std::this_thread::sleep_for(200ms);
        }
    });
    std::this_thread::sleep_for(1200ms);
    join();  // each takes the place of one of the source's connections, idle for over a second
    join();
    // Two places free half a second from now (the read-ahead wants one too, once the fault wakes it).
    std::thread freeing([&] {
        std::this_thread::sleep_for(500ms);
        std::lock_guard lock(mu);
        busy.pop_back();
        busy.pop_back();
    });
    auto t0 = Clock::now();
    std::string want(4096, '\0'), got;
    try {
        got.assign(reinterpret_cast<const char*>(source.read(lazy_page, 4096)), 4096);
    } catch (const std::exception& e) {
        ADD_FAILURE() << "the fault failed: " << e.what();
    }
    auto took = Clock::now() - t0;
    freeing.join();
    stop = true;
    keeper.join();
    auto pages_img = sys::open_file(image / "pages.img", O_RDONLY);
    ASSERT_EQ(::pread(pages_img.get(), want.data(), want.size(), static_cast<off_t>(lazy_page)), 4096);
    EXPECT_EQ(got, want);
    EXPECT_GE(took, 400ms) << "the server had room at once: the test did not fill it";
    EXPECT_GE(source.counters().reconnects.load(), 1u);
    ::kill(server->pid, SIGTERM);
    EXPECT_EQ(server->wait(10s), 0) << read_text(server->err);
}

// A page server restarted (killed, and started again on its address) between the fetch before a lazy
// restore and the function's faults and fill: the source's two connections are made again with the
// new server, the function's pages are right and its fill completes.
TEST_F(RemotePages, APageServerRestartedIsConnectedToAgain) {
    ::setenv("INITLESS_STATE_DIR", state_.c_str(), 1);
    ::setenv("INITLESS_INIT_BINARY", INITLESS_BINARY, 1);
    auto [image, manifest] = snapshot("big-heap");
    std::optional<Child> server;
    auto target = local_page_server(server, image, {"--no-verify"});
    ASSERT_NE(target.port, 0);
    auto img = image::load_without_pages(manifest, image::Key::of_state_dir(state_));
    auto source = std::make_shared<pages::RemotePageSource>(target, img, 5000ms);
    // The restore set is in; the read-ahead waits for the fill to begin before it takes the rest.
    source->fetch_for_restore(img);
    ::kill(server->pid, SIGKILL);
    server->wait(5s);
    std::optional<Child> again;
    again.emplace(std::vector<std::string>{INITLESS_BINARY, "page-server", "--image", image.string(),
                                           "--listen", target.str(), "--no-verify"},
                  scratch_, state_, "page-server-again");
    auto spec = spec::load(img.manifest.function_dir);
    std::optional<sandbox::Sandbox> sb;
    auto restored = restore_lazily(img, source, spec, sb);
    auto res = gateway::http_get(sb->connect(spec.port), "/check", 20s);
    EXPECT_EQ(res.body.rfind("ok", 0), 0u) << res.body;
    EXPECT_TRUE(restored.served->wait_complete(30s));
    auto stats = restored.served->stats();
    EXPECT_TRUE(stats.complete);
    EXPECT_EQ(stats.failure, "");
    EXPECT_EQ(source->counters().reconnects.load(), 2u) << "both connections are made again";
    sb->teardown();
    ::kill(again->pid, SIGTERM);
    EXPECT_EQ(again->wait(10s), 0) << read_text(again->err);
}

// A page server killed (SIGKILL: the connection is reset) or hung (SIGSTOP: nothing answers; the
// restore's --pages-timeout-ms is 2000) while the restored function's request faults its heap in over a
// slow link: the restore ends with an error naming the cause within 10 s, and gc finds nothing left
// (TearDown).
class DeadPageServer : public RemotePages, public ::testing::WithParamInterface<int> {};

TEST_P(DeadPageServer, EndsTheRestoreWithinTenSeconds) {
    int signal = GetParam();
    TwoHosts hosts;
    ASSERT_TRUE(hosts.ok) << "could not make two network namespaces joined by a veth pair";
    ASSERT_TRUE(hosts.limit_server_rate("40mbit"));  // 192 MiB of saved heap: ~40 s
    auto [image, manifest] = snapshot("big-heap");
    std::optional<Child> server;
    std::string addr = start_page_server(server, image, hosts.server_ns, hosts.server_ip);
    ASSERT_FALSE(addr.empty());
    std::vector<std::string> argv = {"nsenter",
                                     "--net=/run/netns/" + hosts.client_ns,
                                     INITLESS_BINARY,
                                     "restore",
                                     manifest.string(),
                                     "--pages-from",
                                     addr,
                                     "--pages-timeout-ms",
                                     "2000",
                                     "--request",
                                     "/check",
                                     "--json",
                                     "--no-fallback"};
    Child restore(argv, scratch_, state_, "restore-killed");
    std::this_thread::sleep_for(3s);
    ASSERT_EQ(restore.wait(0ms), -1) << "the restore ended before the kill: " << read_text(restore.err);
    ::kill(server->pid, signal);
    auto killed = Clock::now();
    int rc = restore.wait(10s);
    double took = std::chrono::duration<double>(Clock::now() - killed).count();
    if (signal == SIGSTOP) ::kill(server->pid, SIGKILL);
    ASSERT_NE(rc, -1) << "the restore did not end within 10 s of the page server's " << strsignal(signal);
    EXPECT_NE(rc, 0) << read_text(restore.out);
    std::string err = read_text(restore.err);
    std::printf("the restore ended %.2f s after %s: %s", took, strsignal(signal), err.c_str());
    EXPECT_NE(err.find("the function was killed"), std::string::npos) << err;
    EXPECT_NE(err.find("page server " + addr), std::string::npos) << err;
    if (signal == SIGSTOP) {
        EXPECT_NE(err.find("no answer within 2000 ms"), std::string::npos) << err;
    }
}

INSTANTIATE_TEST_SUITE_P(RemotePages, DeadPageServer, ::testing::Values(SIGKILL, SIGSTOP),
                         [](const ::testing::TestParamInfo<int>& info) {
                             return std::string(info.param == SIGKILL ? "Killed" : "Stopped");
                         });

// Through the library: a lazy restore whose remote source dies mid-fill has its function killed, and
// the page server thread and every fd it held end.
TEST_F(RemotePages, ADeadSourceKillsTheFunctionAndLeavesNoThreadOrFd) {
    ::setenv("INITLESS_STATE_DIR", state_.c_str(), 1);
    ::setenv("INITLESS_INIT_BINARY", INITLESS_BINARY, 1);
    auto [image, manifest] = snapshot("big-heap");
    size_t fds = count_entries("/proc/self/fd"), tasks = count_entries("/proc/self/task");
    {
        std::optional<Child> server;
        std::string addr = start_page_server(server, image, "", "127.0.0.1");
        ASSERT_FALSE(addr.empty());
        auto img = image::load_without_pages(manifest, image::Key::of_state_dir(state_));
        auto source = std::make_shared<pages::RemotePageSource>(sys::parse_tcp_address(addr), img, 3000ms);
        source->fetch_for_restore(img);
        auto spec = spec::load(img.manifest.function_dir);
        std::optional<sandbox::Sandbox> sb;
        auto restored = restore_lazily(img, source, spec, sb);
        EXPECT_FALSE(restored.served->stats().complete) << "the fill ended before the kill (not mid-fill)";
        ::kill(server->pid, SIGKILL);
        server->wait(5s);
        // The function's request faults what the fill has not fetched yet.
        try {
            gateway::http_get(sb->connect(spec.port), "/check", std::chrono::seconds(10));
        } catch (const std::exception&) {
        }
        ASSERT_TRUE(restored.served->wait_complete(10s)) << "still served after its source died";
        auto stats = restored.served->stats();
        EXPECT_NE(stats.failure.find("page server"), std::string::npos) << stats.failure;
        EXPECT_FALSE(stats.complete);
        pid_t pid = restored.host_pids[0];
        auto gone = [pid] {
            std::error_code ec;
            std::string stat = read_text(fmt::format("/proc/{}/stat", pid));
            return stat.empty() || stat.find(") Z") != std::string::npos;
        };
        auto until = Clock::now() + 5s;
        while (!gone() && Clock::now() < until) std::this_thread::sleep_for(10ms);
        EXPECT_TRUE(gone()) << "the restored function still runs after its page source died";
        sb->teardown();
    }
    auto until = Clock::now() + 5s;
    while (pages::PageServer::shared().thread_running() && Clock::now() < until)
        std::this_thread::sleep_for(5ms);
    EXPECT_FALSE(pages::PageServer::shared().thread_running());
    EXPECT_EQ(count_entries("/proc/self/fd"), fds) << "fds were left open";
    EXPECT_EQ(count_entries("/proc/self/task"), tasks) << "threads were left";
}

// The read-ahead's own connection dying (the page server killed while it has ranges in flight, and
// nothing else asks for pages) fails the source: every later read throws naming the server, even of
// a block fetched before; and dropping the source ends the read-ahead's thread and its fds.
TEST_F(RemotePages, AServerDyingUnderTheReadAheadFailsTheSourceAndLeavesNoThreadOrFd) {
    auto [image, manifest] = snapshot("big-heap");
    size_t fds = count_entries("/proc/self/fd"), tasks = count_entries("/proc/self/task");
    {
        std::optional<Child> server;
        std::string addr = start_page_server(server, image, "", "127.0.0.1");
        ASSERT_FALSE(addr.empty());
        auto img = image::load_without_pages(manifest, image::Key::of_state_dir(state_));
        ASSERT_FALSE(img.working_set.empty());
        pages::RemotePageSource source(sys::parse_tcp_address(addr), img, 3000ms);
        source.fetch_for_restore(img);
        // A page of a lazily served VMA outside the working set, read as a fault would: the
        // read-ahead goes on past the restore set.
        uint64_t last_block = lazy_page_outside_working_set(img);
        ASSERT_NE(last_block, ~0ULL) << "big-heap's image has no lazily served page outside its working set";
        source.read(last_block, 4096);
        ::kill(server->pid, SIGKILL);
        server->wait(5s);
        uint64_t blocks = (img.manifest.pages_file_size + image::kPageSumBlock - 1) / image::kPageSumBlock;
        // A block of the working set, in the cache since fetch_for_restore: it reads until the
        // read-ahead's failure is known, then throws like every read.
        auto [ws_start, ws_end] = img.working_set_file_ranges().front();
        std::string failure;
        auto until = Clock::now() + 5s;
        while (failure.empty() && Clock::now() < until) {
            try {
                source.read(ws_start, ws_end - ws_start);
                std::this_thread::sleep_for(5ms);
            } catch (const image::PageSourceFailed& e) {
                failure = e.what();
            }
        }
        ASSERT_FALSE(failure.empty())
            << "the read-ahead's dead connection did not fail the source within 5 s";
        EXPECT_NE(failure.find("page server " + addr), std::string::npos) << failure;
        EXPECT_NE(failure.find("read-ahead"), std::string::npos) << failure;
        const auto& c = source.counters();
        EXPECT_LT(c.blocks_for_restore + c.blocks_read_ahead, blocks * 9 / 10)
            << "the read-ahead was (nearly) done before the kill: nothing was in flight";
        EXPECT_THROW(source.read(last_block, 4096), image::PageSourceFailed);
    }
    EXPECT_EQ(count_entries("/proc/self/fd"), fds) << "fds were left open";
    EXPECT_EQ(count_entries("/proc/self/task"), tasks) << "threads were left";
}

}  // namespace
