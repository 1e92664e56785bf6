// Bookkeeping shared by the policies: the registered function profiles, and the idle instances of each
// function with O(1) add, remove and pick. Neither decides anything; they only keep the policy's view
// of the host consistent with the events it was sent.
#pragma once

#include <cstddef>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "initless/policy/policy.h"

namespace initless::policy {

class FunctionProfiles {
  public:
    void add(const FunctionProfile& p);
    // Throws initless::Error for a function that was never registered (a host bug).
    const FunctionProfile& at(FunctionId f) const;
    std::size_t size() const { return profiles_.size(); }

  private:
    std::vector<FunctionProfile> profiles_;
    std::vector<bool> known_;
};

class IdlePool {
  public:
    void add(FunctionId f, InstanceId i);
    // Returns whether `i` was idle here (removing an unknown instance is not an error: events may
    // report instances the policy already evicted).
    bool remove(InstanceId i);
    bool contains(InstanceId i) const { return where_.count(i) != 0; }
    std::size_t count(FunctionId f) const { return f < by_function_.size() ? by_function_[f].size() : 0; }
    // The most recently added idle instance of `f`; count(f) must be > 0.
    InstanceId newest(FunctionId f) const { return by_function_[f].back(); }
    const std::vector<InstanceId>& of(FunctionId f) const;
    std::size_t size() const { return where_.size(); }

  private:
    struct Slot {
        FunctionId function;
        std::size_t index;
    };
    std::unordered_map<InstanceId, Slot> where_;
    std::vector<std::vector<InstanceId>> by_function_;
};

// Idle instances in the order they went idle: what LRU-style eviction under memory pressure needs.
class IdleSinceOrder {
  public:
    // Records `i` (of `f`) as idle since `now`, replacing an earlier record of it.
    void mark_idle(FunctionId f, InstanceId i, TimeMs now);
    void forget(InstanceId i);  // no-op for an instance not recorded
    // Evicts the instances idle longest until `need_mb` of memory is freed or none is left.
    void evict_oldest(double need_mb, const FunctionProfiles& profiles, Decisions& out);

  private:
    std::set<std::pair<TimeMs, InstanceId>> by_idle_since_;  // front: idle longest
    std::unordered_map<InstanceId, std::pair<TimeMs, FunctionId>> idle_;
};

}  // namespace initless::policy
