#include <cstdio>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/checkpoint/checkpoint.h"
#include "initless/cli/timing.h"
#include "initless/cli/verbs.h"
#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"

namespace initless::cli {

namespace {
struct SnapshotOptions {
    std::string dir;
    std::string image;
    std::string workingset_request = "/";
    bool json = false;
};
}  // namespace

void add_snapshot(CLI::App& app) {
    auto* cmd = app.add_subcommand("snapshot",
                                   "boot a function, wait until it is ready, and snapshot it into an image");
    static SnapshotOptions o;
    cmd->add_option("DIR", o.dir, "function directory (holds function.toml)")->required();
    cmd->add_option("--image", o.image, "image directory to create (default: <state dir>/images/<name>)");
    cmd->add_option("--workingset-request", o.workingset_request,
                    "GET path sent to a trial restore of the new image to record its working set");
    cmd->add_flag("--json", o.json, "print one JSON object");
    cmd->callback([] {
        sandbox::collect_garbage();
        spec::FunctionSpec spec = spec::load(o.dir);
        std::filesystem::path image =
            o.image.empty() ? sandbox::state_dir() / "images" / spec.name : std::filesystem::path(o.image);
        if (image.has_parent_path()) std::filesystem::create_directories(image.parent_path());
        Stopwatch total, phase;
        auto sb = sandbox::Sandbox::prepare(spec);
        auto fn = sb.start();
        sb.wait_ready(spec.ready, std::chrono::seconds(spec.timeout_s));
        double boot_ms = phase.lap_ms();
        for (uint32_t i = 0; i < spec.warmup; ++i) {
            auto res = gateway::http_get(sb.connect(spec.port), "/");
            if (res.status >= 500)
                throw Error(fmt::format("warmup request {} got status {}", i + 1, res.status));
        }
        double warmup_ms = phase.lap_ms();
        checkpoint::Target target{sb.init_pid(), sb.log_path(), sb.upper_dir(),
                                  spec.name,     spec.dir,      spec.port};
        checkpoint::Stats stats;
        // Before publishing, the staged image is restored once in a sandbox of its own and sent one
        // request: an image that cannot be restored and answer is never published, and the pages
        // that request touched become the image's working set (for the prefetch strategy).
        double trial_ms = 0;
        size_t working_set_pages = 0;
        auto trial = [&](const std::filesystem::path& staging) {
            Stopwatch watch;
            image::Image staged = image::load(staging, /*verify_pages=*/false);
            sandbox::SandboxOptions opts;
            opts.upper_seed = staged.upper_path();
            auto trial_sb = sandbox::Sandbox::prepare(spec, opts);
            auto restored = restore::restore_into(trial_sb, staged, restore::Strategy::Cow);
            auto res = gateway::http_get(trial_sb.connect(spec.port), o.workingset_request);
            if (res.status >= 500)
                throw Error(
                    fmt::format("a trial restore of the new image answered {} with status {}; log:\n{}",
                                o.workingset_request, res.status, trial_sb.log_tail()));
            std::vector<image::WorkingSetRun> ws;
            for (size_t i = 0; i < restored.host_pids.size(); ++i) {
                auto one =
                    restore::record_working_set(restored.host_pids[i], staged.manifest.processes.at(i), i);
                ws.insert(ws.end(), one.begin(), one.end());
            }
            for (const auto& r : ws) working_set_pages += r.pages;
            image::write_working_set(staging, ws);
            trial_sb.teardown();
            trial_ms = watch.lap_ms();
        };
        // A warmup connection the function has not closed yet is transient: give it a moment.
        for (int attempt = 0;; ++attempt) {
            try {
                stats = checkpoint::checkpoint(target, image, trial);
                break;
            } catch (const checkpoint::ContractError& e) {
                if (spec.warmup == 0 || attempt >= 20 ||
                    std::string(e.what()).find("connection") == std::string::npos)
                    throw Error(fmt::format("snapshot {}: {}", spec.name, e.what()));
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
        double checkpoint_ms = phase.lap_ms();
        sb.teardown();
        if (o.json) {
            nlohmann::json out = {{"function", spec.name},
                                  {"image", std::filesystem::absolute(image).string()},
                                  {"boot_ms", boot_ms},
                                  {"warmup_ms", warmup_ms},
                                  {"checkpoint_ms", checkpoint_ms},
                                  {"trial_restore_ms", trial_ms},
                                  {"working_set_pages", working_set_pages},
                                  {"freeze_ms", stats.freeze_ms},
                                  {"total_ms", total.lap_ms()},
                                  {"image_bytes", stats.image_bytes},
                                  {"pages_written", stats.pages_written},
                                  {"zero_pages_skipped", stats.zero_pages_skipped},
                                  {"processes", stats.processes},
                                  {"threads", stats.threads},
                                  {"vmas", stats.vmas},
                                  {"fds", stats.fds}};
            std::printf("%s\n", out.dump().c_str());
        } else {
            std::printf(
                "%s",
                fmt::format(
                    "snapshot of {} at {}\n  boot {:.1f} ms, checkpoint {:.1f} ms (freeze {:.1f} ms, "
                    "trial restore {:.1f} ms)\n"
                    "  image {:.1f} MiB on disk: {} pages written, {} zero pages skipped; {} processes, "
                    "{} threads, {} VMAs, {} fds; working set {} pages\n",
                    spec.name, image.string(), boot_ms, checkpoint_ms, stats.freeze_ms, trial_ms,
                    stats.image_bytes / 1048576.0, stats.pages_written, stats.zero_pages_skipped,
                    stats.processes, stats.threads, stats.vmas, stats.fds, working_set_pages)
                    .c_str());
        }
    });
}

}  // namespace initless::cli
