#include "initless/policy/fixed_ttl.h"

#include "initless/sys/error.h"

namespace initless::policy {

FixedTtlPolicy::FixedTtlPolicy(TimeMs ttl_ms) : ttl_ms_(ttl_ms) {
    if (ttl_ms <= 0) throw Error("ttl policy: keep-alive must be > 0 ms");
}

void FixedTtlPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
}

void FixedTtlPolicy::forget(InstanceId i) {
    auto it = idle_.find(i);
    if (it == idle_.end()) return;
    by_idle_since_.erase({it->second.first, i});
    idle_.erase(it);
}

void FixedTtlPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    forget(e.instance);
}

void FixedTtlPolicy::on_instance_idle(const InstanceIdle& e, Decisions& out) {
    profiles_.at(e.function);
    forget(e.instance);
    idle_.emplace(e.instance, std::pair{e.now, e.function});
    by_idle_since_.emplace(e.now, e.instance);
    if (ttl_ms_ != kForever) out.push_back(Decision::keep_until(e.function, e.instance, e.now + ttl_ms_));
}

void FixedTtlPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    forget(e.instance);
}

void FixedTtlPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !by_idle_since_.empty()) {
        InstanceId victim = by_idle_since_.begin()->second;
        FunctionId f = idle_.at(victim).second;
        freed += profiles_.at(f).memory_mb;
        out.push_back(Decision::evict(f, victim));
        forget(victim);
    }
}

}  // namespace initless::policy
