// Fixed keep-alive (OpenWhisk's default: 10 minutes idle, then the instance goes) and plain LRU (keep
// every idle instance until memory runs out). Both answer memory pressure the same way: the instance
// idle the longest goes first. They are the baselines the other policies are measured against.
#pragma once

#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "initless/policy/idle_pool.h"
#include "initless/policy/policy.h"

namespace initless::policy {

class FixedTtlPolicy : public KeepAlivePolicy {
  public:
    static constexpr TimeMs kOpenWhiskTtlMs = 10 * kMinuteMs;

    explicit FixedTtlPolicy(TimeMs ttl_ms = kOpenWhiskTtlMs);

    std::string_view name() const override { return ttl_ms_ == kForever ? "lru" : "ttl"; }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;

  private:
    TimeMs ttl_ms_;
    FunctionProfiles profiles_;
    IdleSinceOrder idle_;  // the least recently used first
};

// LRU under the host's memory budget: no timeout at all.
class LruPolicy : public FixedTtlPolicy {
  public:
    LruPolicy() : FixedTtlPolicy(kForever) {}
};

}  // namespace initless::policy
