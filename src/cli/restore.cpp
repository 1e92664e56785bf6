#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/timing.h"
#include "initless/cli/verbs.h"
#include "initless/gateway/http_client.h"
#include "initless/image/image.h"
#include "initless/pages/remote.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::cli {

namespace {
struct RestoreOptions {
    std::string image;
    std::string strategy = "auto";
    int instances = 1;
    std::string request;
    int requests = 1;
    bool json = false;
    bool no_fallback = false;
    bool no_verify = false;
    std::string pages_from;
    int pages_timeout_ms = 5000;
};

struct Instance {
    std::optional<sandbox::Sandbox> sandbox;
    std::optional<restore::RestorePlan> plan;
    std::shared_ptr<pages::ServedMemory> served;  // under lazy
    std::string failure;
    nlohmann::json report;
};
}  // namespace

void add_restore(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "restore", "restore a snapshot into fresh sandboxes and optionally send each a request");
    static RestoreOptions o;
    cmd->add_option("IMAGE", o.image, "image directory made by `initless snapshot`")->required();
    cmd->add_option("--strategy", o.strategy,
                    "memory strategy: eager | cow | prefetch | lazy | auto (= prefetch)")
        ->check(CLI::IsMember({"eager", "cow", "prefetch", "lazy", "auto"}));
    cmd->add_option("--instances", o.instances,
                    "how many instances to restore (all stay up until every one answered)")
        ->check(CLI::Range(1, 64));
    cmd->add_option("--request", o.request, "path of a GET request to send to each instance");
    cmd->add_option(
           "--requests", o.requests,
           "send the request this many times to each instance, one after the other (exec_ms is the first; "
           "every one's time is in exec_ms_each)")
        ->check(CLI::Range(1, 1000));
    cmd->add_flag("--json", o.json, "print one JSON object");
    cmd->add_flag("--no-fallback", o.no_fallback, "fail instead of booting normally when a restore fails");
    cmd->add_flag("--no-verify", o.no_verify,
                  "skip the MAC check of pages.img and the trees at load (the manifest, index and working "
                  "set are still "
                  "authenticated; the check reads the whole image: a cold-cache measurement needs this)");
    cmd->add_option(
        "--pages-from", o.pages_from,
        "HOST:PORT of an `initless page-server` of this image: IMAGE then needs no pages.img (the lazy "
        "strategy; the working set and the pages the restore reads itself are fetched first, the rest "
        "on demand and in the background, every block checked against the image's pages.sums)");
    cmd->add_option(
           "--pages-timeout-ms", o.pages_timeout_ms,
           "with --pages-from: a page request not answered within this fails the restore, and kills the "
           "function if it runs already")
        ->check(CLI::Range(100, 600000));
    cmd->callback([] {
        if (!o.pages_from.empty() && o.strategy != "auto" && o.strategy != "lazy")
            throw Error(fmt::format("--pages-from serves pages lazily: --strategy {} cannot be used with it",
                                    o.strategy));
        if (!o.pages_from.empty()) o.strategy = "lazy";
        sandbox::collect_garbage();
        Stopwatch load_watch;
        std::optional<image::Image> img;
        std::string image_failure;
        spec::FunctionSpec spec;
        std::shared_ptr<pages::RemotePageSource> remote;
        double fetch_ms = 0;
        try {
            if (o.pages_from.empty()) {
                img = image::load(o.image, image::Key::of_state_dir(sandbox::state_dir()), !o.no_verify);
            } else {
                img = image::load_without_pages(o.image, image::Key::of_state_dir(sandbox::state_dir()));
                Stopwatch fetch;
                remote =
                    std::make_shared<pages::RemotePageSource>(sys::parse_tcp_address(o.pages_from), *img,
                                                              std::chrono::milliseconds(o.pages_timeout_ms));
                remote->fetch_for_restore(*img);
                img->pages_file = std::make_shared<const sys::UniqueFd>(remote->cache_file());
                img->page_source = remote;
                fetch_ms = fetch.lap_ms();
            }
            spec = spec::load(img->manifest.function_dir);
        } catch (const image::NotAuthenticated&) {
            // Nothing of an image that is not authenticated is trusted, not even the function its
            // manifest names: no fallback boot either.
            throw;
        } catch (const Error& e) {
            // An image that fails its other checks is never restored; the function can still boot if
            // its (authenticated) manifest says where it lives.
            if (o.no_fallback) throw;
            image_failure = e.what();
            std::string dir;
            try {
                dir = image::load_manifest(o.image, image::Key::of_state_dir(sandbox::state_dir()))
                          .function_dir;
            } catch (const std::exception&) {
                throw Error(fmt::format("{}; and the manifest does not say which function to boot instead",
                                        e.what()));
            }
            spec = spec::load(dir);
        }
        double load_ms = load_watch.lap_ms();
        restore::Strategy strategy = restore::parse_strategy(o.strategy);
        sandbox::SandboxOptions sopts;
        if (img)
            sopts.seed_upper = [&img](const std::filesystem::path& upper) {
                image::copy_tree(*img, image::kUpperTree, upper);
            };

        // Stage 1 for every instance (what a pool does before requests come): sandbox and restore plan.
        std::vector<Instance> instances(static_cast<size_t>(o.instances));
        for (auto& inst : instances) {
            Stopwatch phase;
            inst.sandbox = sandbox::Sandbox::prepare(spec, sopts);
            double sandbox_ms = phase.lap_ms();
            inst.report = {{"instance", inst.sandbox->id()}, {"sandbox_ms", sandbox_ms}};
            try {
                if (!img) throw Error(image_failure);
                inst.plan = restore::RestorePlan::prepare(*inst.sandbox, *img, strategy);
            } catch (const Error& e) {
                inst.failure = e.what();
            }
            inst.report["prepare_ms"] = sandbox_ms + phase.lap_ms();
        }
        // Stage 2, the request path: restore, then the request.
        for (auto& inst : instances) {
            Stopwatch total, phase;
            nlohmann::json& r = inst.report;
            if (inst.plan) {
                try {
                    auto restored = inst.plan->execute();
                    inst.served = restored.served;
                    const auto& t = restored.timings;
                    r["mode"] = "restore";
                    r["restore_ms"] = phase.lap_ms();
                    r["breakdown"] = {{"spawn_ms", t.spawn_ms},
                                      {"plan_ms", t.plan_ms},
                                      {"layout_ms", t.layout_ms},
                                      {"threads_ms", t.threads_ms},
                                      {"finish_ms", t.finish_ms},
                                      {"seccomp_ms", t.seccomp_ms},
                                      {"ops", t.ops}};
                } catch (const Error& e) {
                    inst.failure = e.what();
                }
                inst.plan.reset();
            }
            if (!inst.failure.empty()) {
                if (o.no_fallback) throw Error(fmt::format("restore {}: {}", o.image, inst.failure));
                std::fprintf(stderr, "initless: restore failed (%s); booting %s normally instead\n",
                             inst.failure.c_str(), spec.name.c_str());
                inst.sandbox->teardown();
                inst.sandbox = sandbox::Sandbox::prepare(spec);
                inst.sandbox->start();
                inst.sandbox->wait_ready(spec.ready, std::chrono::seconds(spec.timeout_s));
                r["mode"] = "boot-fallback";
                r["fallback_reason"] = inst.failure;
                r["restore_ms"] = phase.lap_ms();
            }
            // A restore whose page source failed had its function killed: say so rather than what the
            // request met.
            auto source_failure = [&]() -> std::string {
                return inst.served ? inst.served->stats().failure : "";
            };
            // A request is bounded by the function's timeout_s, as the gateway bounds it; one that fails
            // says what the function's processes were doing (a restored process that stopped answering
            // is a restore bug to find).
            auto get = [&]() -> gateway::HttpResponse {
                try {
                    return gateway::http_get(
                        inst.sandbox->connect(spec.port, std::chrono::seconds(spec.timeout_s)), o.request,
                        std::chrono::seconds(spec.timeout_s));
                } catch (const Error& e) {
                    if (auto why = source_failure(); !why.empty())
                        throw Error(fmt::format(
                            "restore {}: the function was killed, its pages could not be served: {}", o.image,
                            why));
                    throw Error(fmt::format("{}: GET {}: {}; its processes: {}", inst.sandbox->id(),
                                            o.request, e.what(), inst.sandbox->describe_processes()));
                }
            };
            if (!o.request.empty()) {
                gateway::HttpResponse res = get();
                r["exec_ms"] = phase.lap_ms();
                r["status"] = res.status;
                r["body"] = res.body;
                if (o.requests > 1) {
                    r["exec_ms_each"] = nlohmann::json::array({r["exec_ms"]});
                    if (inst.served) r["pages_copied_after_first"] = inst.served->stats().pages_copied;
                    for (int k = 1; k < o.requests; ++k) {
                        gateway::HttpResponse again = get();
                        r["exec_ms_each"].push_back(phase.lap_ms());
                        if (again.status != res.status) r["status"] = again.status;
                    }
                }
            }
            r["total_ms"] = r["prepare_ms"].get<double>() + total.lap_ms();
            if (inst.served) {
                // Figures as they stand once the request answered (the fill may still be running).
                auto m = inst.served->stats();
                r["memory"] = {{"faults", m.faults},
                               {"pages_copied", m.pages_copied},
                               {"pages_zeroed", m.pages_zeroed},
                               {"pages_prefetched", m.pages_prefetched},
                               {"bytes_read", m.bytes_read},
                               {"events", m.events},
                               {"processes", m.processes},
                               {"complete", m.complete},
                               {"complete_ms", m.complete_ms}};
                if (remote) {
                    r["memory"]["bytes_fetched"] = remote->counters().bytes_fetched.load();
                    r["memory"]["page_requests"] = remote->counters().requests.load();
                }
                if (!m.failure.empty()) {
                    r["memory"]["failure"] = m.failure;
                    throw Error(
                        fmt::format("restore {}: the function was killed, its pages could not be served: {}",
                                    o.image, m.failure));
                }
            }
        }
        nlohmann::json out = {{"image", o.image},
                              {"function", spec.name},
                              {"strategy", restore::strategy_name(strategy)},
                              {"image_load_ms", load_ms},
                              {"instances", nlohmann::json::array()}};
        if (remote) {
            // The source is shared by the instances: its figures are the run's.
            const auto& c = remote->counters();
            out["remote"] = {{"server", o.pages_from},
                             {"fetch_ms", fetch_ms},
                             {"blocks_for_restore", c.blocks_for_restore.load()},
                             {"blocks_fetched", c.blocks_fetched.load()},
                             {"bytes_fetched", c.bytes_fetched.load()},
                             {"blocks_read_ahead", c.blocks_read_ahead.load()},
                             {"blocks_on_demand", c.blocks_on_demand.load()},
                             {"reads_waited", c.reads_waited.load()},
                             {"requests", c.requests.load()}};
        }
        for (auto& inst : instances) out["instances"].push_back(inst.report);
        for (auto& inst : instances) inst.sandbox->teardown();
        if (o.json) {
            std::printf("%s\n", out.dump().c_str());
            return;
        }
        std::printf("%s", fmt::format("restore of {} ({}), image verified in {:.1f} ms\n", spec.name,
                                      restore::strategy_name(strategy), load_ms)
                              .c_str());
        for (const auto& r : out["instances"]) {
            std::printf("%s", fmt::format("  {}: {}: prepared in {:.1f} ms; on request: restore {:.2f} ms",
                                          r["instance"].get<std::string>(), r["mode"].get<std::string>(),
                                          r["prepare_ms"].get<double>(), r["restore_ms"].get<double>())
                                  .c_str());
            if (r.contains("status"))
                std::printf(
                    "%s", fmt::format("; {} -> {} in {:.2f} ms: {}", o.request, r["status"].get<int>(),
                                      r["exec_ms"].get<double>(), r["body"].get<std::string>().substr(0, 120))
                              .c_str());
            std::printf("\n");
        }
    });
}

}  // namespace initless::cli
