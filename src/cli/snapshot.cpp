#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/verbs.h"
#include "initless/controller/snapshot_builder.h"
#include "initless/image/image.h"
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
        auto r = controller::build_snapshot(spec, image, image::Key::of_state_dir(sandbox::state_dir()),
                                            o.workingset_request);
        const auto& stats = r.stats;
        double boot_ms = r.boot_ms + r.ready_ms;
        if (o.json) {
            nlohmann::json out = {{"function", spec.name},
                                  {"image", std::filesystem::absolute(image).string()},
                                  {"boot_ms", boot_ms},
                                  {"warmup_ms", r.warmup_ms},
                                  {"checkpoint_ms", r.checkpoint_ms + r.trial_ms + r.publish_ms},
                                  {"trial_restore_ms", r.trial_ms},
                                  {"working_set_pages", r.working_set_pages},
                                  {"freeze_ms", stats.freeze_ms},
                                  {"total_ms", r.total_ms},
                                  {"image_bytes", stats.image_bytes},
                                  {"pages_written", stats.pages_written},
                                  {"zero_pages_skipped", stats.zero_pages_skipped},
                                  {"processes", stats.processes},
                                  {"threads", stats.threads},
                                  {"vmas", stats.vmas},
                                  {"fds", stats.fds},
                                  {"notes", stats.notes}};
            std::printf("%s\n", out.dump().c_str());
            return;
        }
        std::printf(
            "%s",
            fmt::format("snapshot of {} at {}\n  boot {:.1f} ms, checkpoint {:.1f} ms (freeze {:.1f} ms, "
                        "trial restore {:.1f} ms)\n"
                        "  image {:.1f} MiB on disk: {} pages written, {} zero pages skipped; {} processes, "
                        "{} threads, {} VMAs, {} fds; working set {} pages\n",
                        spec.name, image.string(), boot_ms, r.checkpoint_ms + r.trial_ms + r.publish_ms,
                        stats.freeze_ms, r.trial_ms, stats.image_bytes / 1048576.0, stats.pages_written,
                        stats.zero_pages_skipped, stats.processes, stats.threads, stats.vmas, stats.fds,
                        r.working_set_pages)
                .c_str());
        // What the image restores differently (a connection restored reset, datagrams dropped).
        for (const auto& note : stats.notes) std::printf("  note: %s\n", note.c_str());
    });
}

}  // namespace initless::cli
