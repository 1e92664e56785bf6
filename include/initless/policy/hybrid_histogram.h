// The hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC'20, sec. 4).
// Per function, a histogram of idle times (IT: from the end of the last execution to the next
// invocation) in 1-minute bins over a 4-hour range. When the histogram is representative, an instance
// that goes idle is unloaded and pre-warmed again at the 5th-percentile IT minus a 10% margin, then kept
// until the 99th-percentile IT plus 10%; a head of 0 means: keep the instance loaded after execution.
// Not representative (fewer than `min_samples` ITs, or the coefficient of variation of the bin counts
// below `min_cv`): the standard keep-alive for the whole range (4 hours). Mostly out-of-bounds ITs (over
// 4 hours): the paper forecasts the next IT with ARIMA; this implementation uses an exponentially
// weighted mean of the out-of-bounds ITs instead (pre-warm at 85% of it, keep for 30%: the paper's 15%
// margin on each side). Under memory pressure (the paper has no budget) the instance idle longest goes first.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "initless/policy/idle_pool.h"
#include "initless/policy/policy.h"

namespace initless::policy {

class IdleHistogram {
  public:
    static constexpr int kBins = 240;  // 1-minute bins, 4 hours
    void record(TimeMs idle_ms);
    std::uint64_t in_range() const { return in_range_; }
    std::uint64_t out_of_bounds() const { return oob_; }
    // The bin (minute) holding the p-th percentile of the in-range ITs; in_range() must be > 0.
    int percentile_bin(double p) const;
    // Coefficient of variation of the bin counts: high when the ITs concentrate in few bins.
    double bin_count_cv() const;

  private:
    std::array<std::uint32_t, kBins> bins_{};
    double sum_of_squares_ = 0;  // of the bin counts, kept as ITs arrive: the CV costs O(1)
    std::uint64_t in_range_ = 0;
    std::uint64_t oob_ = 0;
};

struct HybridHistogramConfig {
    std::uint32_t min_samples = 10;
    double min_cv = 2.0;
    double head_percentile = 0.05;
    double tail_percentile = 0.99;
    double margin = 0.10;
    double max_oob_fraction = 0.5;
};

// The windows the policy chose for one function, in ms (exposed for tests and reports).
struct KeepAliveWindows {
    TimeMs pre_warm_ms = 0;    // unload after execution and pre-warm this long after it (0: stay loaded)
    TimeMs keep_alive_ms = 0;  // how long the (re)loaded instance stays idle
    bool from_histogram = false;
};

class HybridHistogramPolicy : public KeepAlivePolicy {
  public:
    explicit HybridHistogramPolicy(HybridHistogramConfig config = {});

    std::string_view name() const override { return "hybrid-histogram"; }
    void on_function_registered(const FunctionProfile& profile) override;
    void on_invocation_start(const InvocationStart& e, Decisions& out) override;
    void on_invocation_end(const InvocationEnd& e, Decisions& out) override;
    void on_instance_idle(const InstanceIdle& e, Decisions& out) override;
    void on_instance_removed(const InstanceRemoved& e, Decisions& out) override;
    void on_memory_pressure(const MemoryPressure& e, Decisions& out) override;

    KeepAliveWindows windows(FunctionId f) const;
    const KeepAliveWindows& cached_windows(FunctionId f);
    const IdleHistogram& histogram(FunctionId f) const { return state_.at(f).histogram; }

  private:
    struct FunctionState {
        IdleHistogram histogram;
        KeepAliveWindows windows;  // recomputed only after a new IT
        bool windows_stale = true;
        std::uint32_t running = 0;
        TimeMs last_end = -1;
        double oob_mean_ms = 0;
    };
    void keep(FunctionId f, InstanceId i, TimeMs now, TimeMs until, Decisions& out);

    HybridHistogramConfig config_;
    FunctionProfiles profiles_;
    std::vector<FunctionState> state_;
    IdleSinceOrder idle_;
};

}  // namespace initless::policy
