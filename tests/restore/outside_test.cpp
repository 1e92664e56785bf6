// The restored process seen from the host, not from inside: after a restore with each strategy, the
// suite reads /proc of every restored process and compares it with the image (capabilities,
// no_new_privs, signal dispositions, blocked and pending signals per thread, the task list and its
// tids, the VMAs, the cgroup), asks the program its own verdict too, then tears the sandbox down and
// checks nothing is left: no process of it, no cgroup, no instance directory, no mount.
//
// The snapshot is made with the CLI (as users do, working set included); the restores run through
// the library (restore::restore_into), so the test holds the sandbox and the host pids.
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "cli.h"
#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/function_config.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"

namespace {

using namespace initless;

uint64_t hex_field(std::map<std::string, std::string>& status, const std::string& key) {
    return std::stoull(status.at(key), nullptr, 16);
}

pid_t innermost(const std::string& ns_ids) {
    std::istringstream in(ns_ids);
    pid_t v = 0, last = 0;
    while (in >> v) last = v;
    return last;
}

uint64_t signal_bits(const std::vector<std::vector<uint8_t>>& queued) {
    uint64_t bits = 0;
    for (const auto& info : queued) {
        int sig = 0;
        std::memcpy(&sig, info.data(), sizeof sig);
        bits |= 1ULL << (sig - 1);
    }
    return bits;
}

std::string fmt_vma(const image::Vma& v) {
    std::ostringstream out;
    out << std::hex << v.start << "-" << v.end << " " << v.name;
    return out.str();
}

// Everything /proc shows of restored process `host` that the image recorded as `p`.
void expect_matches_image(pid_t host, const image::Process& p, const std::string& cgroup_id) {
    SCOPED_TRACE("process " + std::to_string(p.pid) + " (host pid " + std::to_string(host) + ")");
    auto status = sys::read_status(host);
    EXPECT_EQ(innermost(status.at("NSpid")), p.pid);
    EXPECT_EQ(innermost(status.at("NSsid")), p.sid);
    EXPECT_EQ(innermost(status.at("NSpgid")), p.pgid);
    EXPECT_EQ(hex_field(status, "CapEff"), p.creds.cap_effective);
    EXPECT_EQ(hex_field(status, "CapPrm"), p.creds.cap_permitted);
    EXPECT_EQ(hex_field(status, "CapBnd"), p.creds.cap_bounding);
    EXPECT_EQ(status.at("NoNewPrivs") == "1", p.creds.no_new_privs);
    uint64_t ignored = 0, caught = 0;
    for (const auto& a : p.actions) {
        if (a.handler == reinterpret_cast<uint64_t>(SIG_IGN)) ignored |= 1ULL << (a.signal - 1);
        if (a.handler > reinterpret_cast<uint64_t>(SIG_IGN)) caught |= 1ULL << (a.signal - 1);
    }
    EXPECT_EQ(hex_field(status, "SigIgn"), ignored);
    EXPECT_EQ(hex_field(status, "SigCgt"), caught);
    EXPECT_EQ(hex_field(status, "ShdPnd"), signal_bits(p.pending_shared));

    // The task list: the image's tids, each thread with its mask and queued signals.
    std::map<pid_t, const image::Thread*> want;
    for (const auto& th : p.threads) want[th.tid] = &th;
    std::set<pid_t> seen;
    for (pid_t tid : sys::proc_tasks(host)) {
        auto ts = sys::read_status(tid);
        pid_t inside = innermost(ts.at("NSpid"));
        seen.insert(inside);
        auto it = want.find(inside);
        if (it == want.end()) {
            ADD_FAILURE() << "thread " << inside << " is not in the image";
            continue;
        }
        EXPECT_EQ(hex_field(ts, "SigBlk"), it->second->sigmask) << "thread " << inside;
        EXPECT_EQ(hex_field(ts, "SigPnd"), signal_bits(it->second->pending)) << "thread " << inside;
        EXPECT_EQ(hex_field(ts, "CapEff"), p.creds.cap_effective) << "thread " << inside;
    }
    std::set<pid_t> wanted;
    for (const auto& [tid, th] : want) wanted.insert(tid);
    EXPECT_EQ(seen, wanted) << "the restored task list differs from the image's";

    // Every VMA of the image is mapped at its address with its protection (it may be split into
    // several entries: cow maps runs of a file mapping from the image).
    auto maps = sys::read_maps(host);
    for (const auto& v : p.vmas) {
        if (v.kind == image::VmaKind::Vsyscall) continue;
        std::string expected_perms = std::string(v.prot & PROT_READ ? "r" : "-") +
                                     (v.prot & PROT_WRITE ? "w" : "-") + (v.prot & PROT_EXEC ? "x" : "-") +
                                     (v.shared ? "s" : "p");
        uint64_t at = v.start;
        for (const auto& m : maps) {
            if (m.end <= at || m.start > at || at >= v.end) continue;
            EXPECT_EQ(m.perms, expected_perms) << fmt_vma(v);
            at = m.end;
        }
        EXPECT_GE(at, v.end) << "not mapped from " << std::hex << at << ": " << fmt_vma(v);
    }
    std::string cgroup = sys::read_file("/proc/" + std::to_string(host) + "/cgroup");
    EXPECT_NE(cgroup.find(cgroup_id), std::string::npos) << cgroup;
}

class FromOutside : public LibrarySandboxTest, public ::testing::WithParamInterface<std::string> {
  protected:
    FromOutside() : LibrarySandboxTest("initless-outside") {}
};

TEST_P(FromOutside, RestoredProcessMatchesTheImageAndLeavesNothing) {
    fs::path dir = program_dir(GetParam());
    ASSERT_TRUE(fs::exists(dir / "function.toml")) << dir << " is not built";
    fs::path image_dir = scratch_ / "image";
    auto r =
        run_cli({"snapshot", dir.string(), "--image", image_dir.string(), "--json"}, scratch_, state_, 60s);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    image::Image img = image::load(image_dir, image::Key::of_state_dir(state_));
    spec::FunctionSpec spec = spec::load(img.manifest.function_dir);
    for (auto strategy : {restore::Strategy::Eager, restore::Strategy::Cow, restore::Strategy::Prefetch,
                          restore::Strategy::Lazy}) {
        SCOPED_TRACE(restore::strategy_name(strategy));
        sandbox::SandboxOptions opts;
        opts.seed_upper = [&img](const fs::path& upper) { image::copy_tree(img, image::kUpperTree, upper); };
        auto sb = sandbox::Sandbox::prepare(spec, opts);
        restore::Restored restored = restore::restore_into(sb, img, strategy);
        ASSERT_EQ(restored.host_pids.size(), img.manifest.processes.size());
        for (size_t i = 0; i < restored.host_pids.size(); ++i) {
            expect_matches_image(restored.host_pids[i], img.manifest.processes[i], sb.id());
            // The user namespace's mapping is kept: root inside is the function's host id, nothing else.
            auto status = sys::read_status(restored.host_pids[i]);
            std::string root = std::to_string(sandbox::function_host_id_base(spec.name));
            EXPECT_EQ(status.at("Uid"), root + "\t" + root + "\t" + root + "\t" + root);
            EXPECT_EQ(status.at("Gid"), root + "\t" + root + "\t" + root + "\t" + root);
        }
        auto res = gateway::http_get(sb.connect(spec.port), "/check");
        EXPECT_EQ(res.status, 200);
        EXPECT_EQ(res.body.rfind("ok", 0), 0u) << res.body;

        // Teardown leaves nothing: no process of the tree, no cgroup, no instance dir, no mount.
        std::string id = sb.id();
        pid_t init = sb.init_pid();
        fs::path instance_dir = sb.dir();
        sb.teardown();
        std::vector<pid_t> pids = restored.host_pids;
        pids.push_back(init);
        for (pid_t pid : pids)
            EXPECT_FALSE(fs::exists("/proc/" + std::to_string(pid))) << "process " << pid << " is left";
        EXPECT_EQ(sandbox_leftovers(id, state_), "");
        std::string mounts = sys::read_file("/proc/self/mountinfo");
        EXPECT_EQ(mounts.find(instance_dir.string()), std::string::npos)
            << "a mount of " << instance_dir << " is left";
    }
}

// A sandbox whose spec allows less than the image asks for is not restored into: here the spec's user
// is uid 1000 while the image's process runs as root of its namespace. The refusal names both.
TEST_F(FromOutside, RestoreRefusesAnImageAskingMoreThanTheSpecAllows) {
    fs::path dir = program_dir("umask");
    fs::path image_dir = scratch_ / "image";
    auto r = run_cli({"snapshot", dir.string(), "--image", image_dir.string()}, scratch_, state_, 60s);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    image::Image img = image::load(image_dir, image::Key::of_state_dir(state_));
    spec::FunctionSpec spec = spec::load(img.manifest.function_dir);
    oci::RuntimeSpec runtime = sandbox::function_runtime_spec(spec);
    runtime.process.user.uid = 1000;
    sandbox::SandboxOptions opts;
    opts.seed_upper = [&img](const fs::path& upper) { image::copy_tree(img, image::kUpperTree, upper); };
    auto sb = sandbox::Sandbox::prepare(runtime, spec, opts);
    try {
        restore::restore_into(sb, img, restore::Strategy::Eager);
        ADD_FAILURE() << "restored an image whose process runs as uid 0 into a spec whose user is uid 1000";
    } catch (const initless::Error& e) {
        EXPECT_NE(std::string(e.what()).find("asks for more than the sandbox's spec allows"),
                  std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("runs as uid 0, the spec's user is uid 1000"), std::string::npos)
            << e.what();
    }
    std::string id = sb.id();
    sb.teardown();
    EXPECT_EQ(sandbox_leftovers(id, state_), "");
}

// Programs whose state /proc shows: threads with gapped tids, masks, dispositions, queued signals, a
// tree of processes with sessions and groups, and a variety of mappings.
INSTANTIATE_TEST_SUITE_P(Programs, FromOutside,
                         ::testing::Values("thread-tids", "sigmask-threads", "signal-handler",
                                           "pending-signal", "many-threads", "process-tree", "mmap-regions",
                                           "file-private-cow", "shared-anon"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             std::string n = info.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });

}  // namespace
