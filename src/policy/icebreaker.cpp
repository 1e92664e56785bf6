#include "initless/policy/icebreaker.h"

#include <algorithm>
#include <cmath>

#include "initless/sys/error.h"

namespace initless::policy {

namespace {
// Deadlines sit a second past the minute's end so that the tick at the boundary can extend them first.
constexpr TimeMs kGraceMs = 1000;
TimeMs end_of_minute(TimeMs now) {
    return (now / kMinuteMs + 1) * kMinuteMs;
}
}  // namespace

IceBreakerPolicy::IceBreakerPolicy(IceBreakerConfig config) : config_(config), predictor_(config.harmonics) {
    std::size_t w = config_.window_minutes;
    if (w < 4 || (w & (w - 1)) != 0)
        throw Error("icebreaker policy: window must be a power of two >= 4 minutes");
}

void IceBreakerPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
    state_[profile.id].series.assign(config_.window_minutes, 0.0);
}

void IceBreakerPolicy::forget(InstanceId i) {
    auto it = deadline_.find(i);
    if (it != deadline_.end()) {
        by_deadline_.erase({it->second.first, i});
        deadline_.erase(it);
    }
    idle_.remove(i);
}

void IceBreakerPolicy::keep(FunctionId f, InstanceId i, TimeMs until, Decisions& out) {
    auto it = deadline_.find(i);
    if (it != deadline_.end()) {
        by_deadline_.erase({it->second.first, i});
        it->second.first = until;
    } else {
        deadline_.emplace(i, std::pair{until, f});
    }
    by_deadline_.emplace(until, i);
    idle_.add(f, i);
    out.push_back(Decision::keep_until(f, i, until));
}

void IceBreakerPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    profiles_.at(e.function);
    auto& s = state_[e.function];
    forget(e.instance);
    ++s.busy;
    s.minute_peak = std::max(s.minute_peak, s.busy);
    s.last_active_minute = e.now / kMinuteMs;
}

void IceBreakerPolicy::on_invocation_end(const InvocationEnd& e, Decisions&) {
    auto& s = state_.at(e.function);
    if (s.busy > 0) --s.busy;
}

void IceBreakerPolicy::on_instance_idle(const InstanceIdle& e, Decisions& out) {
    profiles_.at(e.function);
    keep(e.function, e.instance, end_of_minute(e.now) + kGraceMs, out);
}

void IceBreakerPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    forget(e.instance);
}

void IceBreakerPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    double freed = 0;
    while (freed < e.need_mb && !by_deadline_.empty()) {
        InstanceId victim = by_deadline_.begin()->second;
        FunctionId f = deadline_.at(victim).second;
        freed += profiles_.at(f).memory_mb;
        out.push_back(Decision::evict(f, victim));
        forget(victim);
    }
}

void IceBreakerPolicy::on_clock_tick(const ClockTick& e, Decisions& out) {
    std::int64_t minute = e.now / kMinuteMs;
    if (minute <= minute_ && minute != 0) return;
    minute_ = minute;
    const std::size_t w = config_.window_minutes;
    scratch_.resize(w);
    for (FunctionId f = 0; f < state_.size(); ++f) {
        auto& s = state_[f];
        if (s.series.empty()) continue;
        // Close the minute that just ended; instances busy across the boundary start the new one.
        s.series[s.head] = s.minute_peak;
        s.head = (s.head + 1) % w;
        s.minute_peak = s.busy;
        s.predicted = 0;
        if (minute - s.last_active_minute > static_cast<std::int64_t>(w)) continue;
        for (std::size_t t = 0; t < w; ++t) scratch_[t] = s.series[(s.head + t) % w];
        double p = predictor_.predict_next(scratch_);
        if (p < config_.threshold) continue;
        s.predicted = p;
        auto want = static_cast<std::uint32_t>(std::max(1.0, std::round(p)));
        out.push_back(Decision::pre_warm(f, e.now, want));
        TimeMs until = end_of_minute(e.now) + kGraceMs;
        for (InstanceId i : std::vector<InstanceId>(idle_.of(f))) keep(f, i, until, out);
    }
}

}  // namespace initless::policy
