#include "initless/policy/greedy_dual.h"

#include <algorithm>

namespace initless::policy {

void GreedyDualPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
}

double GreedyDualPolicy::priority_of(FunctionId f, double instance_uses) const {
    const auto& p = profiles_.at(f);
    double freq = scope_ == FrequencyScope::Function ? state_.at(f).freq : instance_uses;
    return clock_ + freq * p.cold_from_disk_ms / p.memory_mb;
}

double GreedyDualPolicy::priority_now(FunctionId f) const {
    return priority_of(f, 1);
}

void GreedyDualPolicy::instance_gone(FunctionId f) {
    auto& s = state_[f];
    if (s.instances > 0) --s.instances;
    if (s.instances == 0) s.freq = 0;
}

void GreedyDualPolicy::forget(InstanceId i) {
    auto it = instances_.find(i);
    if (it == instances_.end()) return;
    if (it->second.idle) ranked_.erase({it->second.priority, i});
    instances_.erase(it);
}

void GreedyDualPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    curve_.add(reuse_.access(e.function, p.memory_mb));
    s.freq += 1;
    auto it = instances_.find(e.instance);
    if (it == instances_.end()) {
        ++s.instances;
        instances_.emplace(e.instance, InstanceState{e.function, priority_of(e.function, 1), false, 1});
        return;
    }
    if (it->second.idle) ranked_.erase({it->second.priority, e.instance});
    double uses = it->second.uses + 1;
    it->second = {e.function, priority_of(e.function, uses), false, uses};
}

void GreedyDualPolicy::on_instance_idle(const InstanceIdle& e, Decisions&) {
    profiles_.at(e.function);
    auto it = instances_.find(e.instance);
    if (it == instances_.end()) {
        // A pre-warmed instance: it has not been used, so it ranks as if used now.
        ++state_[e.function].instances;
        it = instances_.emplace(e.instance, InstanceState{e.function, priority_now(e.function), false, 0})
                 .first;
    }
    if (!it->second.idle) {
        it->second.idle = true;
        ranked_.emplace(it->second.priority, e.instance);
    }
}

void GreedyDualPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    if (instances_.count(e.instance) == 0) return;
    forget(e.instance);
    instance_gone(e.function);
}

void GreedyDualPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !ranked_.empty()) {
        auto [priority, victim] = *ranked_.begin();
        FunctionId f = instances_.at(victim).function;
        clock_ = std::max(clock_, priority);
        forget(victim);
        freed += profiles_.at(f).memory_mb;
        out.push_back(Decision::evict(f, victim));
        instance_gone(f);
    }
}

void SharedPriorityGreedyDualPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
}

void SharedPriorityGreedyDualPolicy::set_priority(FunctionId f, double priority) {
    auto& s = state_[f];
    if (!s.idle.empty()) {
        ranked_.erase({s.priority, f});
        ranked_.emplace(priority, f);
    }
    s.priority = priority;
}

void SharedPriorityGreedyDualPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    auto it = instances_.try_emplace(e.instance, InstanceState{e.function, 0, false}).first;
    if (it->second.idle) {
        it->second.idle = false;
        s.idle.erase(e.instance);
        if (s.idle.empty()) ranked_.erase({s.priority, e.function});
    }
    it->second.uses += 1;
    s.uses += 1;
    set_priority(e.function, clock_ + s.uses * p.cold_from_disk_ms / p.memory_mb);
}

void SharedPriorityGreedyDualPolicy::on_instance_idle(const InstanceIdle& e, Decisions&) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    auto [it, added] = instances_.try_emplace(e.instance, InstanceState{e.function, 0, false});
    if (added) set_priority(e.function, clock_ + s.uses * p.cold_from_disk_ms / p.memory_mb);  // pre-warmed
    if (it->second.idle) return;
    it->second.idle = true;
    if (s.idle.empty()) ranked_.emplace(s.priority, e.function);
    s.idle.insert(e.instance);
}

void SharedPriorityGreedyDualPolicy::forget(InstanceId i) {
    auto it = instances_.find(i);
    if (it == instances_.end()) return;
    auto& s = state_[it->second.function];
    s.uses -= it->second.uses;
    if (it->second.idle) {
        s.idle.erase(i);
        if (s.idle.empty()) ranked_.erase({s.priority, it->second.function});
    }
    instances_.erase(it);
}

void SharedPriorityGreedyDualPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    forget(e.instance);
}

void SharedPriorityGreedyDualPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !ranked_.empty()) {
        auto [priority, f] = *ranked_.begin();
        InstanceId victim = *state_[f].idle.begin();
        clock_ = std::max(clock_, priority);
        forget(victim);
        freed += profiles_.at(f).memory_mb;
        out.push_back(Decision::evict(f, victim));
    }
}

}  // namespace initless::policy
