// Policies on small hand-made event sequences where the right decision is known.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>

#include "initless/policy/catalog.h"
#include "initless/policy/fixed_ttl.h"
#include "initless/policy/fourier_predictor.h"
#include "initless/policy/greedy_dual.h"
#include "initless/policy/hit_ratio_curve.h"
#include "initless/policy/hybrid_histogram.h"
#include "initless/policy/icebreaker.h"
#include "initless/policy/tiered.h"
#include "initless/sys/error.h"

using namespace initless::policy;

namespace {

FunctionProfile fn(FunctionId id, double mb, double from_memory_ms, double from_disk_ms,
                   double image_mb = 0) {
    return {id, mb, image_mb, from_memory_ms, from_disk_ms};
}

// Runs one invocation of `f` on `inst` from `start` to `end`: start, end, idle. Returns the decisions of
// the idle event.
Decisions invoke(KeepAlivePolicy& p, FunctionId f, InstanceId inst, TimeMs start, TimeMs end,
                 StartKind kind = StartKind::ColdFromDisk) {
    Decisions out;
    p.on_invocation_start({start, f, inst, kind}, out);
    out.clear();
    p.on_invocation_end({end, f, inst}, out);
    p.on_instance_idle({end, f, inst, IdleReason::AfterInvocation}, out);
    return out;
}

std::vector<InstanceId> evicted(const Decisions& d) {
    std::vector<InstanceId> v;
    for (const auto& x : d)
        if (x.kind == DecisionKind::Evict) v.push_back(x.instance);
    return v;
}

}  // namespace

TEST(PolicyFixedTtl, KeepsTenMinutesAfterIdle) {
    FixedTtlPolicy p;
    p.on_function_registered(fn(0, 128, 10, 100));
    auto d = invoke(p, 0, 1, 0, 500);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0], Decision::keep_until(0, 1, 500 + 10 * kMinuteMs));
    // Reused and idle again: the deadline moves.
    d = invoke(p, 0, 1, 60'000, 61'000, StartKind::Warm);
    EXPECT_EQ(d[0].at, 61'000 + 10 * kMinuteMs);
}

TEST(PolicyFixedTtl, PressureEvictsLongestIdleAndNeverBusy) {
    FixedTtlPolicy p;
    for (FunctionId f = 0; f < 3; ++f) p.on_function_registered(fn(f, 100, 10, 100));
    invoke(p, 0, 1, 0, 1000);
    invoke(p, 1, 2, 0, 2000);
    Decisions out;
    p.on_invocation_start({3000, 2, 3, StartKind::ColdFromDisk}, out);  // busy, not evictable
    out.clear();
    p.on_memory_pressure({4000, 150, 2}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{1, 2}));
    out.clear();
    p.on_memory_pressure({5000, 100, 2}, out);
    EXPECT_TRUE(out.empty()) << "only the busy instance is left";
}

TEST(PolicyLru, NoTimeoutAndLeastRecentlyUsedGoesFirst) {
    LruPolicy p;
    EXPECT_EQ(p.name(), "lru");
    for (FunctionId f = 0; f < 2; ++f) p.on_function_registered(fn(f, 100, 10, 100));
    EXPECT_TRUE(invoke(p, 0, 1, 0, 1000).empty());
    invoke(p, 1, 2, 0, 2000);
    invoke(p, 0, 1, 3000, 4000, StartKind::Warm);  // 1 is now the most recent
    Decisions out;
    p.on_memory_pressure({5000, 50, 0}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{2}));
}

TEST(PolicyLru, RemovedInstanceIsNotEvictedAgain) {
    LruPolicy p;
    p.on_function_registered(fn(0, 100, 10, 100));
    invoke(p, 0, 1, 0, 1000);
    Decisions out;
    p.on_instance_removed({2000, 0, 1}, out);
    p.on_memory_pressure({3000, 100, 0}, out);
    EXPECT_TRUE(out.empty());
}

TEST(PolicyGreedyDual, KeepsFrequentExpensiveSmallFunction) {
    GreedyDualPolicy p;
    p.on_function_registered(fn(0, 100, 0, 1000));   // small, costly
    p.on_function_registered(fn(1, 1000, 0, 1000));  // big, same cost
    // Function 1 used more recently, but function 0 is used 3 times: 3 * 1000/100 >> 1 * 1000/1000.
    for (int k = 0; k < 3; ++k)
        invoke(p, 0, 10, k * 1000, k * 1000 + 10, k ? StartKind::Warm : StartKind::ColdFromDisk);
    invoke(p, 1, 20, 5000, 5010);
    EXPECT_DOUBLE_EQ(p.frequency(0), 3);
    Decisions out;
    p.on_memory_pressure({6000, 1, 1}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{20}));
    // Clock takes the evicted priority: 0 + 1 * 1000 / 1000.
    EXPECT_DOUBLE_EQ(p.clock(), 1.0);
    // Freq resets once function 1 has no instance left.
    EXPECT_DOUBLE_EQ(p.frequency(1), 0);
}

TEST(PolicyGreedyDual, ClockAgesOldInstances) {
    GreedyDualPolicy p;
    p.on_function_registered(fn(0, 100, 0, 100));
    p.on_function_registered(fn(1, 100, 0, 100));
    p.on_function_registered(fn(2, 100, 0, 100));
    invoke(p, 0, 1, 0, 10);                    // priority 1
    invoke(p, 0, 1, 20, 30, StartKind::Warm);  // priority 2
    invoke(p, 1, 2, 40, 50);                   // priority 1
    Decisions out;
    p.on_memory_pressure({60, 100, 2}, out);  // evicts 2, clock = 1
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{2}));
    // Function 2's instance, used twice after the clock rose, ranks 1 + 2 = 3 and outlives instance 1,
    // which also had two uses but ranks 0 + 2 = 2 from before.
    invoke(p, 2, 3, 70, 80);
    invoke(p, 2, 3, 90, 100, StartKind::Warm);  // 1 + 2 = 3
    out.clear();
    p.on_memory_pressure({110, 100, 0}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{1}));
}

TEST(PolicyGreedyDual, ClockNeverGoesBackWhenALongRunningInstanceIsEvicted) {
    GreedyDualPolicy p;
    p.on_function_registered(fn(0, 100, 0, 100));  // worth 1 per use
    p.on_function_registered(fn(1, 100, 0, 500));  // worth 5 per use
    Decisions out;
    // Instance 1 starts at Clock 0 (priority 1) and runs for a long time.
    p.on_invocation_start({0, 0, 1, StartKind::ColdFromDisk}, out);
    // Meanwhile function 1's instances come and go: Clock rises to 5, then 10.
    invoke(p, 1, 2, 10, 20);
    p.on_memory_pressure({30, 100, 1}, out);
    EXPECT_DOUBLE_EQ(p.clock(), 5);
    invoke(p, 1, 3, 40, 50);
    out.clear();
    p.on_memory_pressure({60, 100, 1}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{3}));
    EXPECT_DOUBLE_EQ(p.clock(), 10);
    // Instance 1 finishes with its priority of 1, far below Clock, and is evicted first. Clock stays at 10:
    // set back to 1, it would rank every instance used from now on below the ones used before.
    p.on_invocation_end({70, 0, 1}, out);
    p.on_instance_idle({70, 0, 1, IdleReason::AfterInvocation}, out);
    out.clear();
    p.on_memory_pressure({80, 100, 1}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{1}));
    EXPECT_DOUBLE_EQ(p.clock(), 10);
    invoke(p, 0, 4, 90, 100);   // priority 10 + 1 = 11
    invoke(p, 1, 5, 110, 120);  // priority 10 + 5 = 15
    EXPECT_DOUBLE_EQ(p.priority_now(0), 11);
}

TEST(PolicyTiered, ClockNeverGoesBack) {
    TieredPolicy p;
    p.on_function_registered(fn(0, 100, 100, 100));  // boots: no snapshot tier, worth 1 per use
    p.on_function_registered(fn(1, 100, 500, 500));  // worth 5 per use
    Decisions out;
    p.on_invocation_start({0, 0, 1, StartKind::ColdFromDisk}, out);
    invoke(p, 1, 2, 10, 20);
    p.on_memory_pressure({30, 100, 1}, out);
    EXPECT_DOUBLE_EQ(p.clock(), 5);
    p.on_invocation_end({40, 0, 1}, out);
    p.on_instance_idle({40, 0, 1, IdleReason::AfterInvocation}, out);
    out.clear();
    p.on_memory_pressure({50, 100, 1}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{1}));
    EXPECT_DOUBLE_EQ(p.clock(), 5);
}

TEST(PolicyGreedyDual, SharedPriorityRanksAllClonesAtTheLatestUse) {
    // FaaSCache's simulator: a use of any instance re-ranks all of the function's instances.
    SharedPriorityGreedyDualPolicy p;
    p.on_function_registered(fn(0, 100, 0, 100));  // worth 1 per use
    p.on_function_registered(fn(1, 100, 0, 250));  // worth 2.5 per use
    invoke(p, 0, 1, 0, 10);                        // Freq 1: priority 1
    invoke(p, 0, 2, 20, 30);                       // Freq 2: both clones at 2
    invoke(p, 1, 3, 40, 50);                       // priority 2.5
    invoke(p, 0, 1, 60, 70, StartKind::Warm);  // Freq 3: both clones at 3, instance 2 too (unused since 30)
    EXPECT_DOUBLE_EQ(p.priority(0), 3);
    Decisions out;
    p.on_memory_pressure({80, 100, 1}, out);
    EXPECT_EQ(evicted(out), (std::vector<InstanceId>{3})) << "per-instance priorities would evict 2 (at 2)";
    EXPECT_DOUBLE_EQ(p.clock(), 2.5);
    out.clear();
    p.on_memory_pressure({90, 100, 1}, out);
    ASSERT_EQ(evicted(out).size(), 1u);
    EXPECT_DOUBLE_EQ(p.clock(), 3);
    // The evicted clone takes its uses with it: Freq is the uses of the instances still alive.
    Decisions more;
    InstanceId left = evicted(out)[0] == 1 ? 2 : 1;
    double left_uses = left == 1 ? 2 : 1;
    p.on_invocation_start({100, 0, left, StartKind::Warm}, more);
    EXPECT_DOUBLE_EQ(p.priority(0), 3 + (left_uses + 1) * 1);
}

TEST(PolicyGreedyDual, BusyInstancesAreNeverEvicted) {
    GreedyDualPolicy p;
    p.on_function_registered(fn(0, 100, 0, 100));
    Decisions out;
    p.on_invocation_start({0, 0, 1, StartKind::ColdFromDisk}, out);
    p.on_memory_pressure({10, 100, 0}, out);
    EXPECT_TRUE(out.empty());
}

TEST(PolicyHitRatioCurve, ReuseDistancesByHand) {
    ReuseDistanceTracker t(4);  // small capacity: exercises compaction
    // A(100) B(200) C(50) A B B A: distances inf inf inf, A: 100+200+50=350, B: 200+50+100=350, B: 200,
    // A: 100 + 200 = 300.
    EXPECT_TRUE(std::isinf(t.access(0, 100)));
    EXPECT_TRUE(std::isinf(t.access(1, 200)));
    EXPECT_TRUE(std::isinf(t.access(2, 50)));
    EXPECT_DOUBLE_EQ(t.access(0, 100), 350);
    EXPECT_DOUBLE_EQ(t.access(1, 200), 350);
    EXPECT_DOUBLE_EQ(t.access(1, 200), 200);
    EXPECT_DOUBLE_EQ(t.access(0, 100), 300);
}

TEST(PolicyHitRatioCurve, HitRatioIsTheDistanceDistribution) {
    HitRatioCurve c(100);
    for (double d : {kInfiniteDistance, kInfiniteDistance, 100.0, 200.0, 200.0, 350.0, 300.0, 900.0})
        c.add(d);
    EXPECT_DOUBLE_EQ(c.hit_ratio(0), 0);
    EXPECT_DOUBLE_EQ(c.hit_ratio(100), 1.0 / 8);
    EXPECT_DOUBLE_EQ(c.hit_ratio(300), 4.0 / 8);
    EXPECT_DOUBLE_EQ(c.max_hit_ratio(), 6.0 / 8);
    EXPECT_DOUBLE_EQ(c.hit_ratio(1e9), 6.0 / 8);
    EXPECT_DOUBLE_EQ(c.size_for_fraction_of_max(0.5), 200);
    double knee = c.knee_mb();
    EXPECT_GT(knee, 0);
    EXPECT_LT(knee, 900);
}

TEST(PolicyIdleHistogram, PercentilesAndRepresentativeness) {
    IdleHistogram h;
    for (int i = 0; i < 100; ++i) h.record(10 * kMinuteMs + 5000);  // all in bin 10
    EXPECT_EQ(h.percentile_bin(0.05), 10);
    EXPECT_EQ(h.percentile_bin(0.99), 10);
    EXPECT_GT(h.bin_count_cv(), 2.0);
    IdleHistogram flat;
    for (int b = 0; b < IdleHistogram::kBins; ++b) flat.record(b * kMinuteMs);
    EXPECT_LT(flat.bin_count_cv(), 0.01);
    flat.record(5 * 60 * kMinuteMs);
    EXPECT_EQ(flat.out_of_bounds(), 1u);
}

TEST(PolicyHybridHistogram, PeriodicFunctionIsUnloadedAndPreWarmed) {
    HybridHistogramPolicy p;
    p.on_function_registered(fn(0, 100, 10, 100));
    // Every 10 minutes, runs 1 s: ITs just under 10 minutes, all in bin 9.
    Decisions d;
    for (int k = 0; k < 12; ++k) d = invoke(p, 0, 1, k * 10 * kMinuteMs, k * 10 * kMinuteMs + 1000);
    auto w = p.windows(0);
    EXPECT_TRUE(w.from_histogram);
    EXPECT_EQ(w.pre_warm_ms, static_cast<TimeMs>(9 * kMinuteMs * 0.9));                     // head minus 10%
    EXPECT_EQ(w.pre_warm_ms + w.keep_alive_ms, static_cast<TimeMs>(10 * kMinuteMs * 1.1));  // tail plus 10%
    TimeMs end = 11 * 10 * kMinuteMs + 1000;
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(d[0], Decision::evict(0, 1));
    EXPECT_EQ(d[1], Decision::pre_warm(0, end + w.pre_warm_ms));
    // The pre-warmed instance is kept for the keep-alive window, covering the next arrival at 120 min.
    Decisions out;
    p.on_instance_idle({end + w.pre_warm_ms, 0, 2, IdleReason::PreWarmed}, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_GT(out[0].at, 120 * kMinuteMs);
    EXPECT_EQ(out[0].at, end + w.pre_warm_ms + w.keep_alive_ms);
}

TEST(PolicyHybridHistogram, FallsBackToRangeKeepAliveWhenNotRepresentative) {
    HybridHistogramPolicy p;
    p.on_function_registered(fn(0, 100, 10, 100));
    auto d = invoke(p, 0, 1, 0, 1000);  // no ITs yet
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0], Decision::keep_until(0, 1, 1000 + 240 * kMinuteMs));
    // ITs spread evenly over the range: a flat histogram, CV below 2.
    TimeMs t = 1000;
    for (int k = 0; k < 60; ++k) {
        t += (k * 4 % 240) * kMinuteMs + 1;
        d = invoke(p, 0, 1, t, t + 10, StartKind::Warm);
        t += 10;
    }
    EXPECT_FALSE(p.windows(0).from_histogram);
    EXPECT_EQ(d[0], Decision::keep_until(0, 1, t + 240 * kMinuteMs));
}

TEST(PolicyHybridHistogram, FrequentFunctionStaysLoaded) {
    HybridHistogramPolicy p;
    p.on_function_registered(fn(0, 100, 10, 100));
    Decisions d;
    for (int k = 0; k < 20; ++k) d = invoke(p, 0, 1, k * 20'000, k * 20'000 + 100, StartKind::Warm);
    auto w = p.windows(0);
    EXPECT_TRUE(w.from_histogram);
    EXPECT_EQ(w.pre_warm_ms, 0);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].kind, DecisionKind::KeepUntil);
}

TEST(PolicyFourier, FftMatchesDirectDft) {
    std::vector<std::complex<double>> x(16);
    for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = {std::sin(0.7 * static_cast<double>(i)) + 0.1 * i, 0.3 * (i % 3)};
    auto expect = naive_dft(x);
    fft(x);
    for (std::size_t k = 0; k < x.size(); ++k) {
        EXPECT_NEAR(x[k].real(), expect[k].real(), 1e-9);
        EXPECT_NEAR(x[k].imag(), expect[k].imag(), 1e-9);
    }
    std::vector<std::complex<double>> bad(12);
    EXPECT_THROW(fft(bad), initless::Error);
}

TEST(PolicyFourier, QuadraticFitRecoversCoefficients) {
    std::vector<double> y;
    for (int t = 0; t < 20; ++t) y.push_back(0.5 * t * t - 3 * t + 7);
    auto q = fit_quadratic(y);
    EXPECT_NEAR(q.a, 0.5, 1e-9);
    EXPECT_NEAR(q.b, -3, 1e-9);
    EXPECT_NEAR(q.c, 7, 1e-9);
}

TEST(PolicyFourier, PredictsPeriodicSignalPlusTrend) {
    // Period 16 over a window of 64 (an exact bin), on a linear trend.
    auto signal = [](int t) { return 5 + 0.05 * t + 3 * std::cos(2 * std::numbers::pi * t / 16.0 + 0.4); };
    std::vector<double> w;
    for (int t = 0; t < 64; ++t) w.push_back(signal(t));
    FourierPredictor p(3);
    EXPECT_NEAR(p.predict_next(w), signal(64), 0.3);
    std::vector<double> zeros(64, 0.0);
    EXPECT_EQ(p.predict_next(zeros), 0);
}

TEST(PolicyIceBreaker, PreWarmsAPeriodicFunctionBeforeItsMinute) {
    IceBreakerPolicy p;
    p.on_function_registered(fn(0, 100, 10, 100));
    p.on_function_registered(fn(1, 100, 10, 100));
    // Function 0 runs in every 4th minute (period 4 divides the 64-minute window); function 1 once.
    InstanceId next = 1;
    Decisions out;
    std::vector<TimeMs> pre_warm_minutes;
    for (TimeMs m = 0; m < 200; ++m) {
        out.clear();
        p.on_clock_tick({m * kMinuteMs}, out);
        for (const auto& d : out)
            if (d.kind == DecisionKind::PreWarm) {
                EXPECT_EQ(d.function, 0u) << "function 1 ran once, long ago";
                if (m >= 140) pre_warm_minutes.push_back(m);
            }
        if (m % 4 == 0) invoke(p, 0, next++, m * kMinuteMs + 1000, m * kMinuteMs + 2000);
        if (m == 3) invoke(p, 1, next++, m * kMinuteMs + 1000, m * kMinuteMs + 2000);
    }
    // From minute 140 on, every active minute (multiple of 4) is pre-warmed and no other minute is.
    EXPECT_FALSE(pre_warm_minutes.empty());
    for (TimeMs m : pre_warm_minutes) EXPECT_EQ(m % 4, 0) << "minute " << m;
    EXPECT_EQ(pre_warm_minutes.size(), 15u);  // 140, 144, ..., 196
}

TEST(PolicyIceBreaker, UnpredictedInstanceGoesAtTheEndOfItsMinute) {
    IceBreakerPolicy p;
    p.on_function_registered(fn(0, 100, 10, 100));
    auto d = invoke(p, 0, 1, 30'000, 40'000);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].kind, DecisionKind::KeepUntil);
    EXPECT_EQ(d[0].at, kMinuteMs + 1000);
}

TEST(PolicyTiered, KeepsSnapshotInMemoryWhenWarmInstanceDoesNotFit) {
    TieredPolicy p;
    // Restores: 20 ms from memory, 250 ms from disk; image is half the instance.
    p.on_function_registered(fn(0, 1000, 20, 250, 500));
    Decisions out;
    p.on_invocation_start({0, 0, 1, StartKind::ColdFromDisk}, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0], Decision::place_snapshot(0, Tier::SnapshotInMemory));
    out.clear();
    p.on_invocation_end({100, 0, 1}, out);
    p.on_instance_idle({100, 0, 1, IdleReason::AfterInvocation}, out);
    // Room for 500 MB only: the warm instance (worth 250/1000 per MB) goes, the snapshot (230/500) stays.
    p.on_memory_pressure({200, 1000, 0}, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0], Decision::evict(0, 1));
    EXPECT_EQ(p.snapshot_tier(0), Tier::SnapshotInMemory);
    // The next cold start is from memory and does not re-place the snapshot.
    out.clear();
    p.on_invocation_start({300, 0, 2, StartKind::ColdFromMemory}, out);
    EXPECT_TRUE(out.empty());
    // More pressure: the snapshot drops to disk.
    p.on_memory_pressure({400, 500, 0}, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0], Decision::place_snapshot(0, Tier::SnapshotOnDisk));
}

TEST(PolicyTiered, NoSnapshotTierWhenColdStartsAreBoots) {
    TieredPolicy p;
    p.on_function_registered(fn(0, 1000, 3000, 3000, 0));
    Decisions out;
    p.on_invocation_start({0, 0, 1, StartKind::ColdFromDisk}, out);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(p.snapshot_tier(0), Tier::SnapshotOnDisk);
}

TEST(PolicyCatalog, BuildsEveryNamedPolicyAndRejectsUnknown) {
    for (const auto& n : policy_names()) EXPECT_EQ(make_policy(n)->name(), n);
    try {
        make_policy("fifo");
        FAIL() << "no error";
    } catch (const initless::Error& e) {
        EXPECT_NE(std::string(e.what()).find("greedy-dual"), std::string::npos) << e.what();
    }
}

TEST(PolicyProfiles, EventForUnregisteredFunctionIsAnError) {
    GreedyDualPolicy p;
    Decisions out;
    EXPECT_THROW(p.on_invocation_start({0, 7, 1, StartKind::ColdFromDisk}, out), initless::Error);
}

TEST(PolicyGreedyDual, InstanceScopeRanksBurstClonesByTheirOwnUses) {
    // Function 0 served 5 invocations on instance 1, then a burst started clones 2 and 3 (one use each).
    // Function 1 has one instance, used twice.
    for (auto scope : {FrequencyScope::Function, FrequencyScope::Instance}) {
        GreedyDualPolicy p(scope);
        p.on_function_registered(fn(0, 100, 0, 100));
        p.on_function_registered(fn(1, 100, 0, 100));
        for (int k = 0; k < 5; ++k)
            invoke(p, 0, 1, k * 10, k * 10 + 5, k ? StartKind::Warm : StartKind::ColdFromDisk);
        Decisions out;
        p.on_invocation_start({60, 0, 2, StartKind::ColdFromDisk}, out);
        p.on_invocation_start({61, 0, 3, StartKind::ColdFromDisk}, out);
        p.on_invocation_end({70, 0, 2}, out);
        p.on_instance_idle({70, 0, 2, IdleReason::AfterInvocation}, out);
        p.on_invocation_end({71, 0, 3}, out);
        p.on_instance_idle({71, 0, 3, IdleReason::AfterInvocation}, out);
        invoke(p, 1, 9, 100, 110);
        invoke(p, 1, 9, 120, 130, StartKind::Warm);
        out.clear();
        p.on_memory_pressure({200, 100, 1}, out);
        auto v = evicted(out);
        ASSERT_EQ(v.size(), 1u);
        if (scope == FrequencyScope::Function)
            EXPECT_EQ(v[0], 9u) << "FaaSCache: the clones carry Freq 6 and 7, function 1 only 2";
        else
            EXPECT_EQ(v[0], 2u) << "per instance: a clone used once goes before an instance used twice";
    }
}
