// FaaSCache's greedy-dual keep-alive (Fuerst and Sharma, ASPLOS'21):
//   priority = Clock + Freq x Cost / Size
// Freq is the function's invocation count since it last had no instance at all, Cost what a miss
// costs on this host (the restore from disk, or a boot), Size its memory. As the paper describes it,
// each instance takes the priority computed at its own last use (so Clock carries each instance's
// recency). FaaSCache's public simulator instead gives all instances of a function the priority of the
// function's latest use: that is SharedPriorityGreedyDualPolicy below.
// Under memory pressure the lowest-priority idle instance goes and Clock rises to its priority. Clock
// never goes back: an instance that ran for a long time carries the priority of its start, which can
// be below Clock when it goes idle; evicting it must not age everything used since (docs/policies.md).
// Busy instances are never evicted, nothing expires on a timer. The policy also feeds FaaSCache's
// reuse-distance hit-ratio curve, from which a host can size keep-alive memory (recommended_memory_mb).
#pragma once

#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "initless/policy/hit_ratio_curve.h"
#include "initless/policy/idle_pool.h"
#include "initless/policy/policy.h"

namespace initless::policy {

// Function: FaaSCache's Freq, per function. Instance: each instance counts its own uses, so the idle
// clones a burst leaves behind rank by what they served, not by their function's total.
enum class FrequencyScope { Function, Instance };

class GreedyDualPolicy : public KeepAlivePolicy {
  public:
    explicit GreedyDualPolicy(FrequencyScope scope = FrequencyScope::Function) : scope_(scope) {}
    std::string_view name() const override {
        return scope_ == FrequencyScope::Function ? "greedy-dual" : "greedy-dual-instance";
    }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;

    double clock() const { return clock_; }
    // Priority an instance of `f` would get if it were used now.
    double priority_now(FunctionId f) const;
    double frequency(FunctionId f) const { return state_.at(f).freq; }
    const HitRatioCurve& hit_ratio_curve() const { return curve_; }
    // FaaSCache's sizing: memory at the knee of the hit-ratio curve.
    double recommended_memory_mb() const { return curve_.knee_mb(); }

  private:
    struct FunctionState {
        double freq = 0;
        std::uint32_t instances = 0;  // busy + idle
    };
    struct InstanceState {
        FunctionId function;
        double priority;
        bool idle;
        double uses;
    };
    double priority_of(FunctionId f, double instance_uses) const;
    void instance_gone(FunctionId f);
    void forget(InstanceId i);

    FrequencyScope scope_;
    FunctionProfiles profiles_;
    std::vector<FunctionState> state_;
    std::unordered_map<InstanceId, InstanceState> instances_;
    std::set<std::pair<double, InstanceId>> ranked_;  // idle instances, lowest priority first
    double clock_ = 0;
    ReuseDistanceTracker reuse_;
    HitRatioCurve curve_;
};

// Greedy-dual as FaaSCache's simulator (aFuerst/faascache-sim) runs it: Freq is the number of uses of
// the function's instances that are still alive (an evicted instance takes its uses with it), and every
// use gives ALL instances of the function, busy and idle, the new priority Clock + Freq x Cost / Size.
// So a function's idle clones rank together, at the priority of its latest use; which clone of the
// lowest-ranked function goes first is arbitrary (here: the lowest id). Clock never goes back.
class SharedPriorityGreedyDualPolicy : public KeepAlivePolicy {
  public:
    std::string_view name() const override { return "greedy-dual-shared"; }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;

    double clock() const { return clock_; }
    double priority(FunctionId f) const { return state_.at(f).priority; }

  private:
    struct FunctionState {
        double uses = 0;  // of the instances alive now
        double priority = 0;
        std::set<InstanceId> idle;
    };
    struct InstanceState {
        FunctionId function;
        double uses;
        bool idle;
    };
    void set_priority(FunctionId f, double priority);
    void forget(InstanceId i);

    FunctionProfiles profiles_;
    std::vector<FunctionState> state_;
    std::unordered_map<InstanceId, InstanceState> instances_;
    std::set<std::pair<double, FunctionId>> ranked_;  // functions with an idle instance, lowest first
    double clock_ = 0;
};

}  // namespace initless::policy
