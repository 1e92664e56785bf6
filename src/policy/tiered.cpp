#include "initless/policy/tiered.h"

#include <algorithm>

namespace initless::policy {

void TieredPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
}

double TieredPolicy::warm_worth(FunctionId f, double uses) const {
    const auto& p = profiles_.at(f);
    const auto& s = state_[f];
    double miss = s.snapshot == Tier::SnapshotInMemory ? p.cold_from_memory_ms : p.cold_from_disk_ms;
    return uses * miss / p.memory_mb;
}

double TieredPolicy::snapshot_worth(FunctionId f) const {
    const auto& p = profiles_.at(f);
    return state_[f].restores * (p.cold_from_disk_ms - p.cold_from_memory_ms) / p.image_mb;
}

void TieredPolicy::forget(InstanceId i) {
    auto it = instances_.find(i);
    if (it == instances_.end()) return;
    if (it->second.idle) ranked_.erase({it->second.priority, instance_tag(i)});
    instances_.erase(it);
}

void TieredPolicy::instance_gone(FunctionId f) {
    auto& s = state_[f];
    if (s.instances > 0) --s.instances;
}

void TieredPolicy::on_invocation_start(const InvocationStart& e, Decisions& out) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    bool cold = e.start == StartKind::ColdFromDisk || e.start == StartKind::ColdFromMemory;
    if (cold) s.restores += 1;

    bool worth_memory = p.image_mb > 0 && p.cold_from_disk_ms > p.cold_from_memory_ms;
    if (s.snapshot == Tier::SnapshotInMemory) {
        ranked_.erase({s.snapshot_priority, snapshot_tag(e.function)});
        s.snapshot_priority = clock_ + snapshot_worth(e.function);
        ranked_.emplace(s.snapshot_priority, snapshot_tag(e.function));
    } else if (e.start == StartKind::ColdFromDisk && worth_memory) {
        s.snapshot = Tier::SnapshotInMemory;
        s.restores = 1;
        s.snapshot_priority = clock_ + snapshot_worth(e.function);
        ranked_.emplace(s.snapshot_priority, snapshot_tag(e.function));
        out.push_back(Decision::place_snapshot(e.function, Tier::SnapshotInMemory));
    }

    auto it = instances_.find(e.instance);
    if (it == instances_.end()) {
        ++s.instances;
        instances_.emplace(e.instance,
                           InstanceState{e.function, clock_ + warm_worth(e.function, 1), false, 1});
        return;
    }
    if (it->second.idle) ranked_.erase({it->second.priority, instance_tag(e.instance)});
    double uses = it->second.uses + 1;
    it->second = {e.function, clock_ + warm_worth(e.function, uses), false, uses};
}

void TieredPolicy::on_instance_idle(const InstanceIdle& e, Decisions&) {
    profiles_.at(e.function);
    auto it = instances_.find(e.instance);
    if (it == instances_.end()) {
        ++state_[e.function].instances;
        it = instances_
                 .emplace(e.instance, InstanceState{e.function, clock_ + warm_worth(e.function, 1), false, 0})
                 .first;
    }
    if (!it->second.idle) {
        it->second.idle = true;
        ranked_.emplace(it->second.priority, instance_tag(e.instance));
    }
}

void TieredPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    if (instances_.count(e.instance) == 0) return;
    forget(e.instance);
    instance_gone(e.function);
}

void TieredPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !ranked_.empty()) {
        auto [priority, tag] = *ranked_.begin();
        ranked_.erase(ranked_.begin());
        clock_ = std::max(clock_, priority);
        if ((tag & 1) != 0) {
            auto f = static_cast<FunctionId>(tag >> 1);
            auto& s = state_[f];
            s.snapshot = Tier::SnapshotOnDisk;
            freed += profiles_.at(f).image_mb;
            out.push_back(Decision::place_snapshot(f, Tier::SnapshotOnDisk));
        } else {
            InstanceId victim = tag >> 1;
            FunctionId f = instances_.at(victim).function;
            instances_.erase(victim);
            freed += profiles_.at(f).memory_mb;
            out.push_back(Decision::evict(f, victim));
            instance_gone(f);
        }
    }
}

}  // namespace initless::policy
