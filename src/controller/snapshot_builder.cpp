#include "initless/controller/snapshot_builder.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/sys/stopwatch.h"

namespace initless::controller {

SnapshotResult build_snapshot(const spec::FunctionSpec& spec, const std::filesystem::path& image,
                              const image::Key& key, const std::string& workingset_request,
                              const SnapshotProgress& progress, const SandboxStarted& started) {
    auto step = [&](const char* name, double ms) {
        if (progress) progress(name, ms);
    };
    SnapshotResult out;
    out.image = image;
    sys::Stopwatch total, phase;
    auto sb = sandbox::Sandbox::prepare(spec);
    if (started) started(sb.init_pidfd());
    sb.start();
    out.boot_ms = phase.lap_ms();
    step("boot", out.boot_ms);
    sb.wait_ready(spec.ready, std::chrono::seconds(spec.timeout_s));
    out.ready_ms = phase.lap_ms();
    step("ready", out.ready_ms);
    for (uint32_t i = 0; i < spec.warmup; ++i) {
        gateway::HttpResponse res;
        try {
            res = gateway::http_get(sb.connect(spec.port, std::chrono::seconds(spec.timeout_s)), "/",
                                    std::chrono::seconds(spec.timeout_s));
        } catch (const Error& e) {
            throw Error(fmt::format("warmup request {} (timeout_s = {}): {}; log:\n{}", i + 1, spec.timeout_s,
                                    e.what(), sb.log_tail()));
        }
        if (res.status >= 500) throw Error(fmt::format("warmup request {} got status {}", i + 1, res.status));
    }
    out.warmup_ms = phase.lap_ms();
    step("warmup", out.warmup_ms);

    checkpoint::Target target{sb.init_pid(),
                              sb.log_path(),
                              sb.upper_dir(),
                              spec.name,
                              spec.dir,
                              spec.port,
                              sb.seccomp_filter().bpf,
                              sb.seccomp_filter().flags,
                              spec.refuse_tcp_connections};
    // Runs on the complete staged image, before it is renamed into place.
    auto trial = [&](const std::filesystem::path& staging) {
        out.checkpoint_ms = phase.lap_ms();
        step("checkpoint", out.checkpoint_ms);
        image::Image staged = image::load(staging, key, /*verify_pages=*/false);
        sandbox::SandboxOptions opts;
        opts.seed_upper = [&staged](const std::filesystem::path& upper) {
            image::copy_tree(staged, image::kUpperTree, upper);
        };
        auto trial_sb = sandbox::Sandbox::prepare(spec, opts);
        if (started) started(trial_sb.init_pidfd());
        sys::Stopwatch restore_watch;
        auto restored = restore::restore_into(trial_sb, staged, restore::Strategy::Cow);
        out.restore_ms = restore_watch.lap_ms();
        gateway::HttpResponse res;
        try {
            res = gateway::http_get(trial_sb.connect(spec.port, std::chrono::seconds(spec.timeout_s)),
                                    workingset_request, std::chrono::seconds(spec.timeout_s));
        } catch (const Error& e) {
            throw Error(fmt::format(
                "a trial restore of the new image (timeout_s = {}): {}; its processes: {}; log:\n{}",
                spec.timeout_s, e.what(), trial_sb.describe_processes(), trial_sb.log_tail()));
        }
        if (res.status >= 500)
            throw Error(fmt::format("a trial restore of the new image answered {} with status {}; log:\n{}",
                                    workingset_request, res.status, trial_sb.log_tail()));
        std::vector<image::WorkingSetRun> ws;
        for (size_t i = 0; i < restored.host_pids.size(); ++i) {
            auto one = restore::record_working_set(restored.host_pids[i], staged.manifest.processes.at(i), i);
            ws.insert(ws.end(), one.begin(), one.end());
        }
        for (const auto& r : ws) out.working_set_pages += r.pages;
        image::write_working_set(staging, ws, key);
        trial_sb.teardown();
        out.trial_ms = phase.lap_ms();
        step("trial-restore", out.trial_ms);
    };
    // A warmup connection the function has not closed yet is transient: give it a moment.
    for (int attempt = 0;; ++attempt) {
        try {
            out.stats = checkpoint::checkpoint(target, image, key, trial);
            break;
        } catch (const checkpoint::ContractError& e) {
            if (spec.warmup == 0 || attempt >= 20 ||
                std::string(e.what()).find("connection") == std::string::npos)
                throw checkpoint::ContractError(fmt::format("snapshot {}: {}", spec.name, e.what()));
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            phase.lap_ms();
        }
    }
    out.publish_ms = phase.lap_ms();
    step("publish", out.publish_ms);
    sb.teardown();
    out.total_ms = total.lap_ms();
    return out;
}

}  // namespace initless::controller
