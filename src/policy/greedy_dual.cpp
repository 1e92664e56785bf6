#include "initless/policy/greedy_dual.h"

namespace initless::policy {

void GreedyDualPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
}

void GreedyDualPolicy::rank(FunctionId f) {
    if (idle_.count(f) > 0) ranked_.emplace(state_[f].priority, f);
}

void GreedyDualPolicy::unrank(FunctionId f) { ranked_.erase({state_[f].priority, f}); }

void GreedyDualPolicy::instance_gone(FunctionId f) {
    auto& s = state_[f];
    if (s.instances > 0) --s.instances;
    if (s.instances == 0) s.freq = 0;
}

void GreedyDualPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    curve_.add(reuse_.access(e.function, p.memory_mb));
    unrank(e.function);
    idle_.remove(e.instance);
    if (e.start == StartKind::ColdFromDisk || e.start == StartKind::ColdFromMemory) ++s.instances;
    s.freq += 1;
    s.priority = clock_ + s.freq * p.cold_from_disk_ms / p.memory_mb;
    rank(e.function);
}

void GreedyDualPolicy::on_instance_idle(const InstanceIdle& e, Decisions&) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    unrank(e.function);
    if (e.reason == IdleReason::PreWarmed) {
        ++s.instances;
        s.priority = clock_ + s.freq * p.cold_from_disk_ms / p.memory_mb;
    }
    idle_.add(e.function, e.instance);
    rank(e.function);
}

void GreedyDualPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    profiles_.at(e.function);
    unrank(e.function);
    idle_.remove(e.instance);
    instance_gone(e.function);
    rank(e.function);
}

void GreedyDualPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !ranked_.empty()) {
        auto [priority, f] = *ranked_.begin();
        ranked_.erase(ranked_.begin());
        clock_ = priority;
        InstanceId victim = idle_.newest(f);
        idle_.remove(victim);
        freed += profiles_.at(f).memory_mb;
        out.push_back(Decision::evict(f, victim));
        instance_gone(f);
        rank(f);
    }
}

}  // namespace initless::policy
