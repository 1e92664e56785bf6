// Trace-driven simulation of one node: replays an AzureTrace through a KeepAlivePolicy under a memory
// budget, acting as the policy's host exactly as the controller will (only through policy.h's events
// and decisions), and measures cold starts, their overhead, and memory-time.
// Model: an instance runs up to `instance_concurrency` invocations at once (1, the default, as in
// OpenWhisk and Lambda; the spec's `concurrency`); a request joins a busy instance with a free slot
// before it takes an idle one. A minute's invocations are
// spread over the minute by a seeded uniform draw and each draws its duration from the function's
// percentiles, so a run is deterministic for a given seed. A cold start delays the invocation by the
// cost model's restore time (from memory or disk, by the function's snapshot tier) or, in the Boot
// world, by the boot time; the instance holds its memory from the start of the cold start. A pre-warmed
// instance is ready cost-model time after the pre-warm; a request that takes it earlier waits the rest.
// The budget is keep-alive memory: idle instances and in-memory snapshots, what a policy controls.
// Running invocations always get their instance (their memory is reported, not limited: the 2019
// samples hold functions running for minutes thousands of times a day, hundreds of GB busy at once,
// more than any one node; budgeting it would leave no policy anything to decide). When an instance goes
// idle, or a pre-warm or a snapshot placement would exceed the budget, the policy gets memory pressure;
// kept memory it does not free is reported (over_budget_gb_s); a pre-warm that does not fit is skipped.
// Non-tiered policies never place snapshots in memory: their restores come from disk.
//
// ReplayModel::FaasCache is instead the model of FaaSCache's public simulator (Fuerst and Sharma,
// ASPLOS'21; aFuerst/faascache-sim), so that the paper's result can be reproduced with our policies:
//  - the budget covers every instance, running and idle (a node's memory);
//  - a request that finds no idle instance asks the policy for the memory of a new one; when the policy
//    cannot free enough (everything else is busy) the request is dropped (counted, no policy event);
//  - each function's cold-start cost is its own init time, the trace's maximum execution time minus its
//    average (their run time minus warm time); no cost model, no snapshot tiers; a warm run takes the
//    average;
//  - memory is the app's mean allocated memory (AverageAllocatedMb); a minute's invocations are evenly
//    spaced over the minute (no random draw, the seed changes nothing).
// Differences that remain: their TTL drops a function's stale instances only when that function is
// invoked again (so stale instances of other functions hold memory until evicted by recency); ours
// expires them at the deadline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "initless/policy/policy.h"
#include "initless/sim/azure_trace.h"
#include "initless/sim/cost_model.h"

namespace initless::sim {

enum class ColdStartWorld { Restore, Boot };
enum class ReplayModel { Initless, FaasCache };

struct ReplayConfig {
    double memory_budget_mb = 0;
    std::uint64_t seed = 1;
    ColdStartWorld world = ColdStartWorld::Restore;  // ignored by ReplayModel::FaasCache
    std::uint32_t instance_concurrency = 1;
    ReplayModel model = ReplayModel::Initless;
};

// Per trace function (index = trace row), to see which functions a policy's decisions cost.
struct FunctionReplayStats {
    std::uint64_t invocations = 0;  // arrived (served + dropped)
    std::uint64_t cold_starts = 0;
    std::uint64_t dropped = 0;
    double cold_start_overhead_s = 0;
    double idle_gb_s = 0;         // memory-time its idle instances held
    std::uint64_t evictions = 0;  // of its instances, by Evict decisions
    bool operator==(const FunctionReplayStats&) const = default;
};

struct ReplayResult {
    std::string policy;
    double memory_budget_mb = 0;
    std::uint64_t seed = 0;
    ColdStartWorld world = ColdStartWorld::Restore;
    ReplayModel model = ReplayModel::Initless;

    std::uint64_t invocations = 0;
    std::uint64_t warm_starts = 0;
    std::uint64_t pre_warmed_starts = 0;
    std::uint64_t cold_from_memory = 0;
    std::uint64_t cold_from_disk = 0;  // includes boots in the Boot world
    double cold_start_overhead_s = 0;  // total delay added to invocations by cold starts
    std::uint64_t dropped = 0;         // requests that found no memory (ReplayModel::FaasCache only)
    double slowdown_sum = 0;           // sum over served invocations of delay / execution time
    double busy_gb_s = 0;              // memory-time of instances running an invocation (or starting)
    double idle_gb_s = 0;              // memory-time of idle instances
    double snapshot_gb_s = 0;          // memory-time of snapshots in the memory tier
    double over_budget_gb_s = 0;       // kept memory-time above the budget (the policy freed too little)
    double peak_memory_mb = 0;
    std::uint64_t pre_warms = 0;          // instances started by a PreWarm decision
    std::uint64_t pre_warms_unused = 0;   // of those, removed without serving
    std::uint64_t pre_warms_skipped = 0;  // PreWarm that did not fit in memory
    std::uint64_t evictions = 0;          // removals by Evict decisions
    std::uint64_t expirations = 0;        // removals by KeepUntil deadlines
    std::vector<FunctionReplayStats> per_function;

    std::uint64_t cold_starts() const { return cold_from_memory + cold_from_disk; }
    double used_gb_s() const { return busy_gb_s + idle_gb_s + snapshot_gb_s; }
    double wasted_gb_s() const { return idle_gb_s + snapshot_gb_s; }
    std::uint64_t served() const { return invocations - dropped; }
    // FaaSCache's "increase in execution time": the mean over served invocations of delay / run time.
    double mean_slowdown() const { return served() ? slowdown_sum / static_cast<double>(served()) : 0; }
    bool operator==(const ReplayResult&) const = default;
};

const char* world_name(ColdStartWorld w);
const char* model_name(ReplayModel m);

class TraceReplay {
  public:
    TraceReplay(const AzureTrace& trace, const ColdStartCostModel& costs, ReplayConfig config);
    // Registers every function with `policy` (ids are trace row indexes) and replays the whole trace.
    ReplayResult run(policy::KeepAlivePolicy& policy) const;
    // The profile a policy is given for trace function `index` in this world.
    policy::FunctionProfile profile(std::size_t index) const;

  private:
    const AzureTrace& trace_;
    const ColdStartCostModel& costs_;
    ReplayConfig config_;
};

}  // namespace initless::sim
