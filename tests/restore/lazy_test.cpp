// The lazy strategy's page server, seen from the process that runs it (this test): restores through
// the library (restore::restore_into), so the server thread and its fds live here and can be counted.
//   - pages the image never saved come back as the kernel's zero page (UFFDIO_ZEROPAGE), saved ones
//     with their contents;
//   - events while the fill runs (mremap, MADV_DONTNEED, fork) keep the memory right;
//   - an instance killed mid-fill leaves no server thread and no fd behind;
//   - one server thread serves several instances at once.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cli.h"
#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/pages/page_server.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"

namespace {

using namespace initless;
using namespace std::chrono_literals;

size_t count_entries(const char* dir) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

// The page frame of the kernel's shared zero page, as pagemap shows it (read fault on fresh memory).
uint64_t zero_page_frame() {
    void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile char c = *static_cast<volatile char*>(p);
    (void)c;
    uint64_t e = 0;
    sys::UniqueFd pm = sys::open_file("/proc/self/pagemap", O_RDONLY);
    sys::read_exact(pm.get(), &e, 8, static_cast<off_t>(reinterpret_cast<uint64_t>(p) / 4096 * 8));
    ::munmap(p, 4096);
    return e & ((1ULL << 55) - 1);
}

class LazyServer : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_EQ(::geteuid(), 0u) << "the restore suite runs real sandboxes and needs root";
        char tmpl[] = "/tmp/initless-lazy-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        scratch_ = tmpl;
        state_ = scratch_ / "state";
        fs::create_directories(state_);
        ::setenv("INITLESS_STATE_DIR", state_.c_str(), 1);
        ::setenv("INITLESS_INIT_BINARY", INITLESS_BINARY, 1);
        fs::path dir = program_dir("lazy-pages");
        ASSERT_TRUE(fs::exists(dir / "function.toml")) << dir << " is not built";
        auto r = run_cli({"snapshot", dir.string(), "--image", (scratch_ / "image").string(), "--json"},
                         scratch_, state_, 120s);
        ASSERT_EQ(r.exit_code, 0) << r.describe();
        img_ = image::load(scratch_ / "image", image::Key::of_state_dir(state_));
        spec_ = spec::load(img_.manifest.function_dir);
    }
    void TearDown() override {
        run_cli({"gc"}, scratch_, state_, 30s);
        std::error_code ec;
        fs::remove_all(scratch_, ec);
    }
    sandbox::Sandbox sandbox() {
        sandbox::SandboxOptions opts;
        opts.seed_upper = [this](const fs::path& upper) { image::copy_tree(img_, image::kUpperTree, upper); };
        return sandbox::Sandbox::prepare(spec_, opts);
    }
    // Waits up to `limit` for the server thread to end.
    static bool server_ends(std::chrono::milliseconds limit) {
        auto until = std::chrono::steady_clock::now() + limit;
        while (pages::PageServer::shared().thread_running()) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::sleep_for(5ms);
        }
        return true;
    }
    fs::path scratch_, state_;
    image::Image img_;
    spec::FunctionSpec spec_;
};

TEST_F(LazyServer, NeverSavedPagesAreTheZeroPageAndSavedOnesComeBack) {
    auto sb = sandbox();
    auto restored = restore::restore_into(sb, img_, restore::Strategy::Lazy);
    ASSERT_TRUE(restored.served);
    auto res = gateway::http_get(sb.connect(spec_.port), "/check");
    ASSERT_EQ(res.status, 200);
    ASSERT_EQ(res.body.rfind("ok ", 0), 0u) << res.body;
    ASSERT_TRUE(restored.served->wait_complete(20s)) << "the fill did not complete";
    auto stats = restored.served->stats();
    EXPECT_GT(stats.pages_copied, 0u);
    EXPECT_GT(stats.pages_prefetched, 0u) << "the background fill installed nothing";

    // The heap's zero MiBs (every fourth) were never saved: each page is the zero page now.
    uint64_t heap = std::stoull(res.body.substr(3), nullptr, 16);
    const image::Vma* vma = nullptr;
    for (const auto& v : img_.manifest.processes[0].vmas)
        if (v.start <= heap && heap < v.end) vma = &v;
    ASSERT_NE(vma, nullptr);
    ASSERT_TRUE(pages::served_lazily(*vma));
    uint64_t zero_frame = zero_page_frame();
    sys::UniqueFd pm = sys::open_file(fmt::format("/proc/{}/pagemap", restored.host_pids[0]), O_RDONLY);
    size_t zero_pages = 0, other = 0;
    for (uint64_t mib = 3; mib < 128; mib += 4)
        for (uint64_t k = 0; k < 256; ++k) {
            uint64_t e = 0;
            uint64_t addr = heap + (mib << 20) + k * 4096;
            sys::read_exact(pm.get(), &e, 8, static_cast<off_t>(addr / 4096 * 8));
            bool present = e >> 63 & 1;
            (present && (e & ((1ULL << 55) - 1)) == zero_frame ? zero_pages : other)++;
        }
    EXPECT_EQ(other, 0u) << zero_pages << " of the never-saved pages are the zero page";
    EXPECT_GE(stats.pages_zeroed, zero_pages);
    sb.teardown();
}

TEST_F(LazyServer, EventsWhileTheFillRunsKeepMemoryRight) {
    auto sb = sandbox();
    auto restored = restore::restore_into(sb, img_, restore::Strategy::Lazy);
    // At once, while the 192 MiB are still being filled: mremap, MADV_DONTNEED and fork.
    auto res = gateway::http_get(sb.connect(spec_.port), "/events");
    EXPECT_EQ(res.status, 200);
    EXPECT_EQ(res.body, "ok events\n");
    // How many of the events came while the fill ran depends on timing: the figures are only shown.
    auto stats = restored.served->stats();
    RecordProperty("events", static_cast<int>(stats.events));
    RecordProperty("processes", static_cast<int>(stats.processes));
    res = gateway::http_get(sb.connect(spec_.port), "/check");
    EXPECT_EQ(res.body.rfind("ok ", 0), 0u) << res.body;
    sb.teardown();
    EXPECT_TRUE(server_ends(5s));
}

TEST_F(LazyServer, AnInstanceKilledMidFillLeavesNoThreadOrFd) {
    ASSERT_TRUE(server_ends(5s));
    size_t fds = count_entries("/proc/self/fd"), tasks = count_entries("/proc/self/task");
    {
        auto sb = sandbox();
        auto restored = restore::restore_into(sb, img_, restore::Strategy::Lazy);
        EXPECT_TRUE(pages::PageServer::shared().thread_running());
        // The fill starts a little after the restore (page_server.h): kill once it is under way.
        uint64_t installed = restored.served->stats().pages_prefetched;
        auto until = std::chrono::steady_clock::now() + 5s;
        while (restored.served->stats().pages_prefetched == installed &&
               std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
        pages::ServeStats at_kill = restored.served->stats();
        sys::send_signal(restored.host_pids[0], SIGKILL);
        EXPECT_GT(at_kill.pages_prefetched, installed) << "the background fill never started";
        EXPECT_FALSE(at_kill.complete) << "the fill ended before the kill (not mid-fill)";
        EXPECT_TRUE(restored.served->wait_complete(5s)) << "the killed process is still counted as served";
        std::string id = sb.id();
        sb.teardown();
        EXPECT_EQ(sandbox_leftovers(id, state_), "");
    }
    EXPECT_TRUE(server_ends(5s)) << "the page server thread is still running";
    EXPECT_EQ(pages::PageServer::shared().served_count(), 0u);
    EXPECT_EQ(count_entries("/proc/self/fd"), fds) << "fds were left open";
    EXPECT_EQ(count_entries("/proc/self/task"), tasks) << "threads were left";
}

// One served process that keeps making events (four threads dropping a page and faulting it again,
// without end) must not hold the one server thread: another restore's working set is installed, its
// faults answered, and the churning one's fill still completes.
TEST_F(LazyServer, AProcessThatKeepsFaultingDoesNotHoldTheServerFromOthers) {
    ASSERT_TRUE(server_ends(5s));
    auto churning_sb = sandbox();
    auto churning = restore::restore_into(churning_sb, img_, restore::Strategy::Lazy);
    auto res = gateway::http_get(churning_sb.connect(spec_.port), "/churn");
    ASSERT_EQ(res.body, "ok churning\n");
    ASSERT_FALSE(churning.served->stats().complete) << "the fill ended before the churn began";
    // The other restore, in a thread: if the server never takes its command, the churning process is
    // killed after 20 s so that the test ends (and fails) instead of hanging.
    auto sb = sandbox();
    auto t0 = std::chrono::steady_clock::now();
    std::promise<void> restored_promise;
    auto restored_future = restored_promise.get_future();
    std::optional<restore::Restored> other;
    std::string error;
    std::thread restoring([&] {
        try {
            other.emplace(restore::restore_into(sb, img_, restore::Strategy::Lazy));
        } catch (const std::exception& e) {
            error = e.what();
        }
        restored_promise.set_value();
    });
    bool in_time = restored_future.wait_for(20s) == std::future_status::ready;
    double took_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!in_time) sys::send_signal(churning.host_pids[0], SIGKILL);
    restoring.join();
    ASSERT_TRUE(in_time) << "a restore waited over 20 s for the server thread, held by a churning process";
    ASSERT_TRUE(other) << error;
    std::printf("the other restore took %.1f ms beside the churn\n", took_ms);
    auto check = gateway::http_get(sb.connect(spec_.port), "/check", 20s);
    EXPECT_EQ(check.body.rfind("ok ", 0), 0u) << check.body;
    EXPECT_TRUE(churning.served->wait_complete(30s)) << "the churning process's fill never completed";
    EXPECT_TRUE(other->served->wait_complete(30s));
    sys::send_signal(churning.host_pids[0], SIGKILL);
    churning_sb.teardown();
    sb.teardown();
    EXPECT_TRUE(server_ends(5s));
}

TEST_F(LazyServer, OneServerThreadServesManyInstancesAtOnce) {
    ASSERT_TRUE(server_ends(5s));
    size_t tasks = count_entries("/proc/self/task");
    constexpr int kInstances = 4;
    std::vector<sandbox::Sandbox> sandboxes;
    std::vector<restore::Restored> restored;
    for (int i = 0; i < kInstances; ++i) sandboxes.push_back(sandbox());
    size_t most = 0;
    for (auto& sb : sandboxes) {
        restored.push_back(restore::restore_into(sb, img_, restore::Strategy::Lazy));
        most = std::max(most, pages::PageServer::shared().served_count());
    }
    EXPECT_GE(most, 2u) << "the instances were never served at the same time";
    // One thread more than before, whatever the number of instances.
    EXPECT_LE(count_entries("/proc/self/task"), tasks + 1);
    for (size_t i = 0; i < sandboxes.size(); ++i) {
        auto res = gateway::http_get(sandboxes[i].connect(spec_.port), "/check");
        EXPECT_EQ(res.body.rfind("ok ", 0), 0u) << "instance " << i << ": " << res.body;
    }
    for (auto& r : restored) EXPECT_TRUE(r.served->wait_complete(30s));
    for (auto& sb : sandboxes) sb.teardown();
    EXPECT_TRUE(server_ends(5s));
}

}  // namespace
