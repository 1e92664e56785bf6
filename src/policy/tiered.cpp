#include "initless/policy/tiered.h"

namespace initless::policy {

void TieredPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
}

double TieredPolicy::warm_worth(FunctionId f) const {
    const auto& p = profiles_.at(f);
    const auto& s = state_[f];
    double miss = s.snapshot == Tier::SnapshotInMemory ? p.cold_from_memory_ms : p.cold_from_disk_ms;
    return s.freq * miss / p.memory_mb;
}

double TieredPolicy::snapshot_worth(FunctionId f) const {
    const auto& p = profiles_.at(f);
    return state_[f].freq * (p.cold_from_disk_ms - p.cold_from_memory_ms) / p.image_mb;
}

void TieredPolicy::rank_warm(FunctionId f) {
    if (idle_.count(f) > 0) ranked_.emplace(state_[f].warm_priority, tag(f, kWarm));
}

void TieredPolicy::unrank_warm(FunctionId f) { ranked_.erase({state_[f].warm_priority, tag(f, kWarm)}); }

void TieredPolicy::maybe_reset(FunctionId f) {
    auto& s = state_[f];
    if (s.instances == 0 && s.snapshot == Tier::SnapshotOnDisk) s.freq = 0;
}

void TieredPolicy::on_invocation_start(const InvocationStart& e, Decisions& out) {
    const auto& p = profiles_.at(e.function);
    auto& s = state_[e.function];
    unrank_warm(e.function);
    idle_.remove(e.instance);
    if (e.start == StartKind::ColdFromDisk || e.start == StartKind::ColdFromMemory) ++s.instances;
    s.freq += 1;
    s.warm_priority = clock_ + warm_worth(e.function);
    rank_warm(e.function);

    bool worth_memory = p.image_mb > 0 && p.cold_from_disk_ms > p.cold_from_memory_ms;
    if (s.snapshot == Tier::SnapshotInMemory) {
        ranked_.erase({s.snapshot_priority, tag(e.function, kSnapshot)});
    } else if (e.start == StartKind::ColdFromDisk && worth_memory) {
        s.snapshot = Tier::SnapshotInMemory;
        out.push_back(Decision::place_snapshot(e.function, Tier::SnapshotInMemory));
    } else {
        return;
    }
    s.snapshot_priority = clock_ + snapshot_worth(e.function);
    ranked_.emplace(s.snapshot_priority, tag(e.function, kSnapshot));
}

void TieredPolicy::on_instance_idle(const InstanceIdle& e, Decisions&) {
    profiles_.at(e.function);
    auto& s = state_[e.function];
    unrank_warm(e.function);
    if (e.reason == IdleReason::PreWarmed) {
        ++s.instances;
        s.warm_priority = clock_ + warm_worth(e.function);
    }
    idle_.add(e.function, e.instance);
    rank_warm(e.function);
}

void TieredPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    profiles_.at(e.function);
    auto& s = state_[e.function];
    unrank_warm(e.function);
    idle_.remove(e.instance);
    if (s.instances > 0) --s.instances;
    maybe_reset(e.function);
    rank_warm(e.function);
}

void TieredPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !ranked_.empty()) {
        auto [priority, t] = *ranked_.begin();
        ranked_.erase(ranked_.begin());
        clock_ = priority;
        auto f = static_cast<FunctionId>(t >> 1);
        auto& s = state_[f];
        if ((t & 1) == kSnapshot) {
            s.snapshot = Tier::SnapshotOnDisk;
            freed += profiles_.at(f).image_mb;
            out.push_back(Decision::place_snapshot(f, Tier::SnapshotOnDisk));
        } else {
            InstanceId victim = idle_.newest(f);
            idle_.remove(victim);
            freed += profiles_.at(f).memory_mb;
            out.push_back(Decision::evict(f, victim));
            if (s.instances > 0) --s.instances;
            rank_warm(f);
        }
        maybe_reset(f);
    }
}

}  // namespace initless::policy
