// IceBreaker-style pre-warming (Roy, Patel and Tiwari, ASPLOS'22): each minute, predict every recently
// active function's concurrency for the coming minute with FourierPredictor over the last `window`
// minutes of per-minute peak concurrency. A predicted function gets `round(prediction)` instances
// pre-warmed at the minute's start and its idle instances kept through the minute; any other idle
// instance goes at the end of the minute it went idle in (IceBreaker keeps nothing warm on speculation
// beyond the prediction). Under memory pressure the nearest deadline goes first, so instances of
// functions not predicted for the coming minute go before predicted ones. The choice between IceBreaker's
// high- and low-end servers is TieredPolicy's job.
#pragma once

#include <cstdint>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "initless/policy/fourier_predictor.h"
#include "initless/policy/idle_pool.h"
#include "initless/policy/policy.h"

namespace initless::policy {

struct IceBreakerConfig {
    std::size_t window_minutes = 64;  // power of two (FFT)
    std::size_t harmonics = 3;
    double threshold = 0.5;  // predicted concurrency at or above this pre-warms
};

class IceBreakerPolicy : public KeepAlivePolicy {
  public:
    explicit IceBreakerPolicy(IceBreakerConfig config = {});

    std::string_view name() const override { return "icebreaker"; }
    TimeMs tick_interval_ms() const override { return kMinuteMs; }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_invocation_end(const InvocationEnd& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;
    void on_clock_tick(const ClockTick& e, Decisions& out) override;

    // Predicted concurrency for the current minute (0 when not predicted active).
    double prediction(FunctionId f) const { return state_.at(f).predicted; }

  private:
    struct FunctionState {
        std::vector<double> series;  // ring of per-minute peak concurrency
        std::size_t head = 0;        // index of the oldest minute
        std::uint32_t busy = 0;
        std::uint32_t minute_peak = 0;
        std::int64_t last_active_minute = -1'000'000;
        double predicted = 0;
    };
    void keep(FunctionId f, InstanceId i, TimeMs until, Decisions& out);
    void forget(InstanceId i);

    IceBreakerConfig config_;
    FourierPredictor predictor_;
    FunctionProfiles profiles_;
    std::vector<FunctionState> state_;
    IdlePool idle_;
    std::set<std::pair<TimeMs, InstanceId>> by_deadline_;
    std::unordered_map<InstanceId, std::pair<TimeMs, FunctionId>> deadline_;
    std::vector<double> scratch_;
    std::int64_t minute_ = 0;
};

}  // namespace initless::policy
