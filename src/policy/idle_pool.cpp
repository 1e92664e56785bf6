#include "initless/policy/idle_pool.h"

#include <string>

#include "initless/sys/error.h"

namespace initless::policy {

void FunctionProfiles::add(const FunctionProfile& p) {
    if (p.memory_mb <= 0) throw Error("policy: function " + std::to_string(p.id) + ": memory_mb must be > 0");
    if (p.id >= profiles_.size()) {
        profiles_.resize(p.id + 1);
        known_.resize(p.id + 1, false);
    }
    profiles_[p.id] = p;
    known_[p.id] = true;
}

const FunctionProfile& FunctionProfiles::at(FunctionId f) const {
    if (f >= profiles_.size() || !known_[f])
        throw Error("policy: event for function " + std::to_string(f) + " that was never registered");
    return profiles_[f];
}

void IdlePool::add(FunctionId f, InstanceId i) {
    if (where_.count(i) != 0) return;
    if (f >= by_function_.size()) by_function_.resize(f + 1);
    auto& v = by_function_[f];
    where_.emplace(i, Slot{f, v.size()});
    v.push_back(i);
}

bool IdlePool::remove(InstanceId i) {
    auto it = where_.find(i);
    if (it == where_.end()) return false;
    auto& v = by_function_[it->second.function];
    std::size_t idx = it->second.index;
    if (idx + 1 != v.size()) {
        v[idx] = v.back();
        where_[v[idx]].index = idx;
    }
    v.pop_back();
    where_.erase(it);
    return true;
}

const std::vector<InstanceId>& IdlePool::of(FunctionId f) const {
    static const std::vector<InstanceId> kNone;
    return f < by_function_.size() ? by_function_[f] : kNone;
}

void IdleSinceOrder::mark_idle(FunctionId f, InstanceId i, TimeMs now) {
    forget(i);
    idle_.emplace(i, std::pair{now, f});
    by_idle_since_.emplace(now, i);
}

void IdleSinceOrder::forget(InstanceId i) {
    auto it = idle_.find(i);
    if (it == idle_.end()) return;
    by_idle_since_.erase({it->second.first, i});
    idle_.erase(it);
}

void IdleSinceOrder::evict_oldest(double need_mb, const FunctionProfiles& profiles, Decisions& out) {
    double freed = 0;
    while (freed < need_mb && !by_idle_since_.empty()) {
        InstanceId victim = by_idle_since_.begin()->second;
        FunctionId f = idle_.at(victim).second;
        freed += profiles.at(f).memory_mb;
        out.push_back(Decision::evict(f, victim));
        forget(victim);
    }
}

}  // namespace initless::policy
