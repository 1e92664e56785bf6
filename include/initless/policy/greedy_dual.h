// FaaSCache's greedy-dual keep-alive (Fuerst and Sharma, ASPLOS'21): every function has a priority
//   Clock + Freq x Cost / Size
// shared by all its instances, recomputed at each of its invocations. Under memory pressure the idle
// instance of the lowest-priority function goes and Clock becomes that priority, so recency enters
// through Clock, frequency through Freq, and cheap-to-restart or big functions go first. Busy instances
// are never evicted. Freq counts invocations since the function last had no instance at all.
// Cost is what a miss costs on this host (the restore from disk, or a boot); Size is its memory.
// Nothing expires on a timer. The policy also feeds FaaSCache's reuse-distance hit-ratio curve, from
// which a host can size the keep-alive memory (recommended_memory_mb).
#pragma once

#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "initless/policy/hit_ratio_curve.h"
#include "initless/policy/idle_pool.h"
#include "initless/policy/policy.h"

namespace initless::policy {

class GreedyDualPolicy : public KeepAlivePolicy {
public:
    std::string_view name() const override { return "greedy-dual"; }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;

    double clock() const { return clock_; }
    double priority(FunctionId f) const { return state_.at(f).priority; }
    double frequency(FunctionId f) const { return state_.at(f).freq; }
    const HitRatioCurve& hit_ratio_curve() const { return curve_; }
    // FaaSCache's sizing: memory at the knee of the hit-ratio curve.
    double recommended_memory_mb() const { return curve_.knee_mb(); }

private:
    struct FunctionState {
        double freq = 0;
        double priority = 0;
        std::uint32_t instances = 0;  // busy + idle
    };
    void rank(FunctionId f);
    void unrank(FunctionId f);
    void instance_gone(FunctionId f);

    FunctionProfiles profiles_;
    std::vector<FunctionState> state_;
    IdlePool idle_;
    std::set<std::pair<double, FunctionId>> ranked_;  // functions with an idle instance, lowest first
    double clock_ = 0;
    ReuseDistanceTracker reuse_;
    HitRatioCurve curve_;
};

}  // namespace initless::policy
