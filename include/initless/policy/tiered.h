// initless's own policy: three places a function can live between invocations (policy.h's Tier) and one
// greedy-dual ranking over everything that holds memory, IceBreaker's high-end/low-end servers turned
// into memory tiers. Two kinds of object compete for the same budget:
//  - an idle warm instance, worth (its uses) x (cost of its function's next cold start) / memory_mb,
//    where that cost is the restore from memory when the function's snapshot is in the memory tier and
//    from disk otherwise;
//  - a function's snapshot pages in page cache or tmpfs, worth (cold starts it served) x (restore from
//    disk - restore from memory) / image_mb. One snapshot serves any number of concurrent cold starts
//    and is smaller than an instance, so functions too big or too bursty to keep warm still start
//    from memory.
// Each object counts its own uses (not its function's, as FaaSCache's Freq does: on the Azure samples
// that pins the idle clones a burst leaves behind; see docs/policies.md). Priority = Clock + worth,
// computed at the object's last use; the lowest goes first (an instance is evicted, a snapshot drops to
// disk) and Clock rises to its priority (never back: see greedy_dual.h). A snapshot enters the memory
// tier when a restore from disk has just read it (its pages are in page cache then anyway). When
// restores cost the same from both tiers (a world of boots), no snapshot is ever worth memory and this
// is per-instance greedy-dual.
#pragma once

#include <cstdint>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "initless/policy/idle_pool.h"
#include "initless/policy/policy.h"

namespace initless::policy {

class TieredPolicy : public KeepAlivePolicy {
  public:
    std::string_view name() const override { return "tiered"; }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;

    Tier snapshot_tier(FunctionId f) const { return state_.at(f).snapshot; }
    double clock() const { return clock_; }

  private:
    struct FunctionState {
        double snapshot_priority = 0;
        double restores = 0;  // cold starts served while the snapshot is in memory
        std::uint32_t instances = 0;
        Tier snapshot = Tier::SnapshotOnDisk;
    };
    struct InstanceState {
        FunctionId function;
        double priority;
        bool idle;
        double uses;
    };
    // Ranked entries: an idle instance (id << 1) or a function's in-memory snapshot (id << 1 | 1).
    static std::uint64_t instance_tag(InstanceId i) { return i << 1; }
    static std::uint64_t snapshot_tag(FunctionId f) { return (static_cast<std::uint64_t>(f) << 1) | 1; }
    double warm_worth(FunctionId f, double uses) const;
    double snapshot_worth(FunctionId f) const;
    void forget(InstanceId i);
    void instance_gone(FunctionId f);

    FunctionProfiles profiles_;
    std::vector<FunctionState> state_;
    std::unordered_map<InstanceId, InstanceState> instances_;
    std::set<std::pair<double, std::uint64_t>> ranked_;
    double clock_ = 0;
};

}  // namespace initless::policy
