// `initless sim`: replay an Azure trace through one or more keep-alive policies at one or more memory
// budgets and report cold starts, their overhead and memory-time (a table, or JSON / CSV for scripts).
// Runs are independent and spread over --jobs threads; the output order and every number depend only
// on the arguments and the seed.
#include <atomic>
#include <cstdio>
#include <exception>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/verbs.h"
#include "initless/policy/catalog.h"
#include "initless/policy/greedy_dual.h"
#include "initless/sim/azure_trace.h"
#include "initless/sim/cost_model.h"
#include "initless/sim/trace_replay.h"
#include "initless/sys/error.h"

namespace initless::cli {

namespace {

struct SimOptions {
    std::string trace;
    std::vector<std::string> policies{"all"};
    std::vector<double> memory_mb;
    std::uint64_t seed = 1;
    std::string costs = "bench/costs.csv";
    std::string world = "restore";
    bool json = false;
    bool csv = false;
    unsigned jobs = 2;
    std::uint32_t concurrency = 1;
    std::string model = "initless";
    std::string per_function;  // CSV file of per-function counts, "" for none
};

struct Run {
    std::string policy;
    double memory_mb;
    sim::ColdStartWorld world;
    sim::ReplayResult result;
    double knee_mb = -1, predicted_hit_ratio = -1, max_hit_ratio = -1;  // greedy-dual's sizing curve
};

nlohmann::json to_json(const Run& r) {
    const auto& x = r.result;
    nlohmann::json j = {{"policy", x.policy},
                        {"model", sim::model_name(x.model)},
                        {"world", sim::world_name(x.world)},
                        {"memory_mb", x.memory_budget_mb},
                        {"seed", x.seed},
                        {"invocations", x.invocations},
                        {"warm_starts", x.warm_starts},
                        {"pre_warmed_starts", x.pre_warmed_starts},
                        {"cold_starts", x.cold_starts()},
                        {"cold_from_memory", x.cold_from_memory},
                        {"cold_from_disk", x.cold_from_disk},
                        {"cold_start_overhead_s", x.cold_start_overhead_s},
                        {"dropped", x.dropped},
                        {"mean_slowdown", x.mean_slowdown()},
                        {"memory_used_gb_s", x.used_gb_s()},
                        {"memory_wasted_gb_s", x.wasted_gb_s()},
                        {"busy_gb_s", x.busy_gb_s},
                        {"idle_gb_s", x.idle_gb_s},
                        {"snapshot_gb_s", x.snapshot_gb_s},
                        {"over_budget_gb_s", x.over_budget_gb_s},
                        {"peak_memory_mb", x.peak_memory_mb},
                        {"pre_warms", x.pre_warms},
                        {"pre_warms_unused", x.pre_warms_unused},
                        {"pre_warms_skipped", x.pre_warms_skipped},
                        {"evictions", x.evictions},
                        {"expirations", x.expirations}};
    if (r.knee_mb >= 0) {
        j["hit_ratio_curve"] = {{"knee_mb", r.knee_mb},
                                {"hit_ratio_at_budget", r.predicted_hit_ratio},
                                {"max_hit_ratio", r.max_hit_ratio}};
    }
    return j;
}

void run_sim(const SimOptions& o) {
    std::vector<std::string> policies;
    for (const auto& p : o.policies) {
        std::stringstream ss(p);
        std::string name;
        while (std::getline(ss, name, ',')) {
            if (name == "all") {
                for (const auto& n : policy::policy_names()) policies.push_back(n);
            } else {
                policy::make_policy(name);  // unknown names fail before any work
                policies.push_back(name);
            }
        }
    }
    std::vector<sim::ColdStartWorld> worlds;
    if (o.world == "restore" || o.world == "both") worlds.push_back(sim::ColdStartWorld::Restore);
    if (o.world == "boot" || o.world == "both") worlds.push_back(sim::ColdStartWorld::Boot);
    if (worlds.empty()) throw Error("sim: --cold-start must be restore, boot or both, not '" + o.world + "'");
    if (o.memory_mb.empty()) throw Error("sim: give at least one --memory-mb");
    if (o.model != "initless" && o.model != "faascache")
        throw Error("sim: --model must be initless or faascache, not '" + o.model + "'");
    auto model = o.model == "faascache" ? sim::ReplayModel::FaasCache : sim::ReplayModel::Initless;
    // FaaSCache's model takes its costs from the trace: one world, and no cost model is read.
    if (model == sim::ReplayModel::FaasCache) worlds = {sim::ColdStartWorld::Boot};

    auto trace = sim::AzureTrace::load(o.trace);
    auto costs = model == sim::ReplayModel::FaasCache
                     ? sim::ColdStartCostModel::from_points({{1, 0, 0, 0, 0}, {2, 0, 0, 0, 0}},
                                                            "the trace (init time = maximum - average)")
                     : sim::ColdStartCostModel::load(o.costs);

    std::vector<Run> runs;
    for (auto w : worlds)
        for (double m : o.memory_mb)
            for (const auto& p : policies) runs.push_back({p, m, w, {}});

    std::atomic<std::size_t> next{0};
    std::mutex failure_mutex;
    std::string failure;
    auto worker = [&] {
        for (std::size_t i; (i = next++) < runs.size();) {
            try {
                auto& r = runs[i];
                auto pol = policy::make_policy(r.policy);
                sim::TraceReplay replay(trace, costs, {r.memory_mb, o.seed, r.world, o.concurrency, model});
                r.result = replay.run(*pol);
                if (auto* gd = dynamic_cast<policy::GreedyDualPolicy*>(pol.get())) {
                    r.knee_mb = gd->hit_ratio_curve().knee_mb();
                    r.predicted_hit_ratio = gd->hit_ratio_curve().hit_ratio(r.memory_mb);
                    r.max_hit_ratio = gd->hit_ratio_curve().max_hit_ratio();
                }
            } catch (const std::exception& e) {
                std::lock_guard lock(failure_mutex);
                if (failure.empty()) failure = e.what();
            }
        }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < std::max(1u, o.jobs); ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    if (!failure.empty()) throw Error(failure);

    if (!o.per_function.empty()) {
        std::FILE* out = std::fopen(o.per_function.c_str(), "w");
        if (out == nullptr) throw Error("sim: cannot write " + o.per_function);
        fmt::print(out,
                   "trace,model,world,policy,memory_mb,function,hash,function_memory_mb,init_ms,invocations,"
                   "cold_starts,dropped,cold_start_overhead_s,idle_gb_s,evictions\n");
        for (const auto& r : runs) {
            const auto& x = r.result;
            sim::TraceReplay replay(trace, costs, {r.memory_mb, o.seed, r.world, o.concurrency, model});
            for (std::size_t f = 0; f < x.per_function.size(); ++f) {
                const auto& s = x.per_function[f];
                auto p = replay.profile(f);
                fmt::print(out, "{},{},{},{},{},{},{},{:.0f},{:.0f},{},{},{},{:.3f},{:.1f},{}\n",
                           trace.dir.filename().string(), sim::model_name(x.model), sim::world_name(x.world),
                           x.policy, x.memory_budget_mb, f, trace.functions[f].function.substr(0, 12),
                           p.memory_mb, p.cold_from_disk_ms, s.invocations, s.cold_starts, s.dropped,
                           s.cold_start_overhead_s, s.idle_gb_s, s.evictions);
            }
        }
        std::fclose(out);
    }

    if (o.json) {
        nlohmann::json out = {
            {"trace", o.trace},
            {"functions", trace.functions.size()},
            {"invocations", trace.invocations},
            {"minutes", trace.minutes},
            {"costs", costs.source()},
            {"model", o.model},
            {"seed", o.seed},
            {"instance_concurrency", o.concurrency},
            {"arrivals", "per-minute counts spread uniformly within the minute by a seeded draw"},
            {"runs", nlohmann::json::array()}};
        for (const auto& r : runs) out["runs"].push_back(to_json(r));
        std::puts(out.dump(2).c_str());
        return;
    }
    if (o.csv) {
        std::puts(
            "trace,world,policy,memory_mb,seed,invocations,cold_starts,cold_from_memory,cold_from_disk,"
            "pre_warmed_starts,cold_start_overhead_s,memory_used_gb_s,memory_wasted_gb_s,busy_gb_s,"
            "idle_gb_s,snapshot_gb_s,over_budget_gb_s,peak_memory_mb,pre_warms,pre_warms_unused,knee_mb,"
            "model,dropped,"
            "mean_slowdown");
        for (const auto& r : runs) {
            const auto& x = r.result;
            fmt::print(
                "{},{},{},{},{},{},{},{},{},{},{:.3f},{:.1f},{:.1f},{:.1f},{:.1f},{:.1f},{:.1f},{:.0f},{},{},"
                "{},{},{},{:.6f}\n",
                trace.dir.filename().string(), sim::world_name(x.world), x.policy, x.memory_budget_mb, x.seed,
                x.invocations, x.cold_starts(), x.cold_from_memory, x.cold_from_disk, x.pre_warmed_starts,
                x.cold_start_overhead_s, x.used_gb_s(), x.wasted_gb_s(), x.busy_gb_s, x.idle_gb_s,
                x.snapshot_gb_s, x.over_budget_gb_s, x.peak_memory_mb, x.pre_warms, x.pre_warms_unused,
                r.knee_mb >= 0 ? fmt::format("{:.0f}", r.knee_mb) : "", sim::model_name(x.model), x.dropped,
                x.mean_slowdown());
        }
        return;
    }
    fmt::print("trace {} ({} functions, {} invocations, {} minutes), costs {}, seed {}\n", o.trace,
               trace.functions.size(), trace.invocations, trace.minutes, costs.source(), o.seed);
    fmt::print("{:<9} {:<20} {:>9} {:>10} {:>9} {:>9} {:>12} {:>11} {:>11} {:>10} {:>9} {:>9}\n", "world",
               "policy", "memory_mb", "cold", "from_mem", "from_disk", "overhead_s", "used_GB_s",
               "wasted_GB_s", "over_GB_s", "dropped", "slowdown");
    for (const auto& r : runs) {
        const auto& x = r.result;
        fmt::print(
            "{:<9} {:<20} {:>9.0f} {:>10} {:>9} {:>9} {:>12.1f} {:>11.0f} {:>11.0f} {:>10.0f} {:>9} "
            "{:>9.4f}\n",
            model == sim::ReplayModel::FaasCache ? "faascache" : sim::world_name(x.world), x.policy,
            x.memory_budget_mb, x.cold_starts(), x.cold_from_memory, x.cold_from_disk,
            x.cold_start_overhead_s, x.used_gb_s(), x.wasted_gb_s(), x.over_budget_gb_s, x.dropped,
            x.mean_slowdown());
    }
}

}  // namespace

void add_sim(CLI::App& app) {
    auto opts = std::make_shared<SimOptions>();
    auto* cmd = app.add_subcommand("sim", "replay an Azure Functions trace through keep-alive policies");
    cmd->add_option("--trace", opts->trace, "trace directory (e.g. data/azure-functions-2019/sampled-1000)")
        ->required();
    cmd->add_option(
           "--policy", opts->policies,
           "policy name, comma-separated names, or 'all' (ttl, lru, greedy-dual, greedy-dual-instance, "
           "greedy-dual-shared, hybrid-histogram, icebreaker, tiered)")
        ->delimiter(',');
    cmd->add_option("--memory-mb", opts->memory_mb,
                    "keep-alive memory budget in MB: idle instances and in-memory snapshots (repeat or "
                    "comma-separate)")
        ->required()
        ->delimiter(',');
    cmd->add_option("--seed", opts->seed, "seed of the arrival and duration draws");
    cmd->add_option("--costs", opts->costs, "cold-start cost model CSV (memory_mb,boot_ms,restore_ms,...)");
    cmd->add_option("--cold-start", opts->world, "what a cold start is: restore, boot, or both");
    cmd->add_option("--jobs", opts->jobs, "runs in parallel");
    cmd->add_option("--concurrency", opts->concurrency, "invocations one instance runs at once (default 1)");
    cmd->add_option(
        "--model", opts->model,
        "initless (budget = idle memory, costs from --costs) or faascache (FaaSCache's simulator: "
        "budget = all memory, requests that do not fit are dropped, cold start = maximum - average "
        "execution time of the function)");
    cmd->add_option(
        "--per-function", opts->per_function,
        "also write every run's per-function invocations, cold starts, drops and overhead to this CSV");
    cmd->add_flag("--json", opts->json, "print JSON");
    cmd->add_flag("--csv", opts->csv, "print CSV");
    cmd->callback([opts] { run_sim(*opts); });
}

}  // namespace initless::cli
