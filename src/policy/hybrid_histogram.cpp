#include "initless/policy/hybrid_histogram.h"

#include <algorithm>
#include <cmath>

namespace initless::policy {

void IdleHistogram::record(TimeMs idle_ms) {
    auto minute = std::max<TimeMs>(0, idle_ms) / kMinuteMs;
    if (minute >= kBins) {
        ++oob_;
        return;
    }
    auto& c = bins_[static_cast<std::size_t>(minute)];
    sum_of_squares_ += 2.0 * c + 1;
    ++c;
    ++in_range_;
}

int IdleHistogram::percentile_bin(double p) const {
    double target = p * static_cast<double>(in_range_);
    std::uint64_t cumulative = 0;
    for (int b = 0; b < kBins; ++b) {
        cumulative += bins_[static_cast<std::size_t>(b)];
        if (cumulative > 0 && static_cast<double>(cumulative) >= target) return b;
    }
    return kBins - 1;
}

double IdleHistogram::bin_count_cv() const {
    double mean = static_cast<double>(in_range_) / kBins;
    if (mean == 0) return 0;
    double var = std::max(0.0, sum_of_squares_ / kBins - mean * mean);
    return std::sqrt(var) / mean;
}

HybridHistogramPolicy::HybridHistogramPolicy(HybridHistogramConfig config) : config_(config) {}

void HybridHistogramPolicy::on_function_registered(const FunctionProfile& profile) {
    profiles_.add(profile);
    if (profile.id >= state_.size()) state_.resize(profile.id + 1);
}

KeepAliveWindows HybridHistogramPolicy::windows(FunctionId f) const {
    const auto& s = state_.at(f);
    const auto& h = s.histogram;
    const TimeMs range = IdleHistogram::kBins * kMinuteMs;
    auto total = h.in_range() + h.out_of_bounds();
    if (total >= config_.min_samples &&
        static_cast<double>(h.out_of_bounds()) > config_.max_oob_fraction * static_cast<double>(total)) {
        auto predicted = static_cast<TimeMs>(s.oob_mean_ms);
        return {static_cast<TimeMs>(0.85 * predicted), static_cast<TimeMs>(0.30 * predicted), false};
    }
    if (h.in_range() < config_.min_samples || h.bin_count_cv() < config_.min_cv) return {0, range, false};
    // Head at the lower edge of its bin, tail at the upper edge: the margins widen the window.
    TimeMs head = h.percentile_bin(config_.head_percentile) * kMinuteMs;
    TimeMs tail = (h.percentile_bin(config_.tail_percentile) + 1) * kMinuteMs;
    auto pre_warm = static_cast<TimeMs>(static_cast<double>(head) * (1.0 - config_.margin));
    auto keep_end = static_cast<TimeMs>(static_cast<double>(tail) * (1.0 + config_.margin));
    return {pre_warm, keep_end - pre_warm, true};
}

const KeepAliveWindows& HybridHistogramPolicy::cached_windows(FunctionId f) {
    auto& s = state_.at(f);
    if (s.windows_stale) {
        s.windows = windows(f);
        s.windows_stale = false;
    }
    return s.windows;
}

void HybridHistogramPolicy::keep(FunctionId f, InstanceId i, TimeMs now, TimeMs until, Decisions& out) {
    idle_.mark_idle(f, i, now);
    out.push_back(Decision::keep_until(f, i, until));
}

void HybridHistogramPolicy::on_invocation_start(const InvocationStart& e, Decisions&) {
    profiles_.at(e.function);
    auto& s = state_[e.function];
    idle_.forget(e.instance);
    if (s.running == 0 && s.last_end >= 0) {
        TimeMs it = e.now - s.last_end;
        s.histogram.record(it);
        s.windows_stale = true;
        if (it >= IdleHistogram::kBins * kMinuteMs)
            s.oob_mean_ms = s.oob_mean_ms == 0 ? static_cast<double>(it) : 0.7 * s.oob_mean_ms + 0.3 * it;
    }
    ++s.running;
}

void HybridHistogramPolicy::on_invocation_end(const InvocationEnd& e, Decisions&) {
    auto& s = state_.at(e.function);
    if (s.running > 0) --s.running;
    if (s.running == 0) s.last_end = e.now;
}

void HybridHistogramPolicy::on_instance_idle(const InstanceIdle& e, Decisions& out) {
    profiles_.at(e.function);
    const auto& w = cached_windows(e.function);
    if (e.reason == IdleReason::PreWarmed || w.pre_warm_ms == 0) {
        keep(e.function, e.instance, e.now, e.now + w.keep_alive_ms, out);
        return;
    }
    // Unload now and come back just before the next invocation is expected. Other instances of the
    // function may still be busy; their own idle events make the same choice.
    idle_.forget(e.instance);
    out.push_back(Decision::evict(e.function, e.instance));
    if (state_[e.function].running == 0) out.push_back(Decision::pre_warm(e.function, e.now + w.pre_warm_ms));
}

void HybridHistogramPolicy::on_instance_removed(const InstanceRemoved& e, Decisions&) {
    idle_.forget(e.instance);
}

void HybridHistogramPolicy::on_memory_pressure(const MemoryPressure& e, Decisions& out) {
    idle_.evict_oldest(e.need_mb, profiles_, out);
}

}  // namespace initless::policy
