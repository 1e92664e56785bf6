// Bookkeeping shared by the policies: the registered function profiles, and the idle instances of each
// function with O(1) add, remove and pick. Neither decides anything; they only keep the policy's view
// of the host consistent with the events it was sent.
#pragma once

#include <cstddef>
#include <unordered_map>
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

}  // namespace initless::policy
