#include "initless/policy/fixed_ttl.h"

#include "initless/sys/error.h"

namespace initless::policy {

FixedTtlPolicy::FixedTtlPolicy(TimeMs ttl_ms) : ttl_ms_(ttl_ms) {
    if (ttl_ms <= 0) throw Error("ttl policy: keep-alive must be > 0 ms");
}

void FixedTtlPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
}

void FixedTtlPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    idle_.forget(e.instance);
}

void FixedTtlPolicy::on_instance_idle(const InstanceIdle& e, Decisions& out) {
    profiles_.at(e.function);
    idle_.forget(e.instance);
    idle_.mark_idle(e.function, e.instance, e.now);
    if (ttl_ms_ != kForever) out.push_back(Decision::keep_until(e.function, e.instance, e.now + ttl_ms_));
}

void FixedTtlPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    idle_.forget(e.instance);
}

void FixedTtlPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    idle_.evict_oldest(e.need_mb, profiles_, out);
}

}  // namespace initless::policy
