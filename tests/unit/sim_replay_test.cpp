// The trace reader, the cost model and the replay: parse errors name file, line and column; hand-made
// traces give the cold starts and overheads that can be worked out by hand; a seed fixes every number.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "initless/policy/catalog.h"
#include "initless/policy/fixed_ttl.h"
#include "initless/policy/tiered.h"
#include "initless/sim/azure_trace.h"
#include "initless/sim/cost_model.h"
#include "initless/sim/trace_replay.h"
#include "initless/sys/error.h"

namespace fs = std::filesystem;
using namespace initless::sim;
using initless::Error;

namespace {

struct FunctionRow {
    std::vector<int> counts;
    double duration_ms;     // every percentile and the average
    double memory_mb;       // every memory percentile and the mean
    double maximum_ms = 0;  // the trace's Maximum; 0: duration_ms
};

// Writes a trace in the invitro layout (inv.csv, run.csv, mem.csv) with one app per function.
class TraceDir {
  public:
    explicit TraceDir(const std::vector<FunctionRow>& rows) {
        dir_ = fs::temp_directory_path() /
               ("initless-sim-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
        fs::create_directories(dir_);
        std::ofstream inv(dir_ / "inv.csv"), run(dir_ / "run.csv"), mem(dir_ / "mem.csv");
        inv << "HashFunction,HashApp,HashOwner";
        for (std::size_t m = 0; m < rows.at(0).counts.size(); ++m) inv << ",minute_" << m + 1;
        inv << "\n";
        run << "HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,percentile_Average_0,"
               "percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,"
               "percentile_Average_99,percentile_Average_100\n";
        mem << "HashApp,HashOwner,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_"
               "pct5,"
               "AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,"
               "AverageAllocatedMb_pct95,"
               "AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\n";
        for (std::size_t i = 0; i < rows.size(); ++i) {
            std::string f = "f" + std::to_string(i), a = "a" + std::to_string(i), o = "o" + std::to_string(i);
            inv << f << "," << a << "," << o;
            for (int c : rows[i].counts) inv << "," << c;
            inv << "\n";
            double d = rows[i].duration_ms;
            double max = rows[i].maximum_ms > 0 ? rows[i].maximum_ms : d;
            run << f << "," << a << "," << o << ",1," << d << "," << d << "," << max;
            for (int k = 0; k < 7; ++k) run << "," << d;
            run << "\n";
            double m = rows[i].memory_mb;
            mem << a << "," << o << ",1," << m;
            for (int k = 0; k < 8; ++k) mem << "," << m;
            mem << "\n";
        }
    }
    ~TraceDir() { fs::remove_all(dir_); }
    const fs::path& path() const { return dir_; }
    // Replaces line `line` (1-based) of `file`.
    void edit(const std::string& file, int line, const std::string& text) {
        std::ifstream in(dir_ / file);
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        lines.at(static_cast<std::size_t>(line - 1)) = text;
        std::ofstream out(dir_ / file);
        for (const auto& l : lines) out << l << "\n";
    }

  private:
    fs::path dir_;
    static inline int counter_ = 0;
};

// Restore 20 ms from memory, 250 ms from disk, boot 3 s, image half the memory; flat in size.
ColdStartCostModel flat_costs() {
    return ColdStartCostModel::from_points({{100, 3000, 20, 250, 50}, {10000, 3000, 20, 250, 5000}}, "test");
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

ReplayResult replay(const fs::path& dir, std::string_view policy, double budget_mb, std::uint64_t seed = 1,
                    ColdStartWorld world = ColdStartWorld::Restore,
                    ReplayModel model = ReplayModel::Initless) {
    auto trace = AzureTrace::load(dir);
    auto costs = flat_costs();
    TraceReplay r(trace, costs, {budget_mb, seed, world, 1, model});
    auto p = initless::policy::make_policy(policy);
    return r.run(*p);
}

std::vector<int> every_minute(int minutes, int count = 1) {
    return std::vector<int>(static_cast<std::size_t>(minutes), count);
}

}  // namespace

TEST(SimTrace, LoadsTheInvitroLayout) {
    TraceDir t({{{1, 0, 2}, 500, 256}, {{0, 3, 0}, 1000, 1024}});
    auto trace = AzureTrace::load(t.path());
    EXPECT_EQ(trace.minutes, 3);
    ASSERT_EQ(trace.functions.size(), 2u);
    EXPECT_EQ(trace.invocations, 6u);
    EXPECT_EQ(trace.functions[0].per_minute, (std::vector<std::uint32_t>{1, 0, 2}));
    EXPECT_DOUBLE_EQ(trace.functions[1].memory_mb, 1024);
    EXPECT_DOUBLE_EQ(trace.functions[1].duration.at(0.5), 1000);
}

TEST(SimTrace, LoadsTheOriginalSchemaShippedWithTheProject) {
    auto trace = AzureTrace::load(fs::path(INITLESS_SOURCE_DIR) / "data/azure-functions-2019/real-10");
    EXPECT_EQ(trace.functions.size(), 10u);
    EXPECT_EQ(trace.minutes, 1440);
    EXPECT_GT(trace.invocations, 0u);
    for (const auto& f : trace.functions) EXPECT_GT(f.memory_mb, 0);
}

TEST(SimTrace, DurationQuantilesInterpolateThePercentiles) {
    DurationPercentiles d{{10, 20, 100, 200, 300, 1000, 5000}};
    EXPECT_DOUBLE_EQ(d.at(0), 10);
    EXPECT_DOUBLE_EQ(d.at(0.5), 200);
    EXPECT_DOUBLE_EQ(d.at(0.625), 250);
    EXPECT_DOUBLE_EQ(d.at(1), 5000);
    DurationPercentiles zero{};
    EXPECT_DOUBLE_EQ(zero.at(0.3), 1) << "at least 1 ms";
}

TEST(SimTrace, ParseErrorsNameFileLineAndColumn) {
    TraceDir t({{{1, 0, 2}, 500, 256}, {{0, 3, 0}, 1000, 1024}});
    t.edit("inv.csv", 3, "f1,a1,o1,0,x3,0");
    auto msg = error_of([&] { AzureTrace::load(t.path()); });
    EXPECT_NE(msg.find("inv.csv:3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("minute_2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'x3' is not a number"), std::string::npos) << msg;

    t.edit("inv.csv", 3, "f1,a1,o1,0,3");
    msg = error_of([&] { AzureTrace::load(t.path()); });
    EXPECT_NE(msg.find("inv.csv:3: 5 fields, the header has 6"), std::string::npos) << msg;

    t.edit("inv.csv", 3, "f1,a1,o1,0,-3,0");
    msg = error_of([&] { AzureTrace::load(t.path()); });
    EXPECT_NE(msg.find("non-negative integer"), std::string::npos) << msg;

    t.edit("inv.csv", 3, "f9,a1,o1,0,3,0");
    msg = error_of([&] { AzureTrace::load(t.path()); });
    EXPECT_NE(msg.find("inv.csv:3: function f9 has no row in run.csv"), std::string::npos) << msg;
}

TEST(SimTrace, MissingFilesAndColumnsAreClear) {
    auto msg = error_of([] { AzureTrace::load("/nonexistent/trace"); });
    EXPECT_NE(msg.find("not a directory"), std::string::npos) << msg;
    TraceDir t({{{1}, 500, 256}});
    fs::remove(t.path() / "mem.csv");
    msg = error_of([&] { AzureTrace::load(t.path()); });
    EXPECT_NE(msg.find("mem.csv: cannot open"), std::string::npos) << msg;
    TraceDir u({{{1}, 500, 256}});
    u.edit("run.csv", 1,
           "HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,p0,p1,p25,p50,p75,p99,p100");
    msg = error_of([&] { AzureTrace::load(u.path()); });
    EXPECT_NE(msg.find("no column 'percentile_Average_0'"), std::string::npos) << msg;
}

TEST(SimCostModel, InterpolatesAndExtendsAndDefaults) {
    auto dir = fs::temp_directory_path() / ("initless-costs-" + std::to_string(::getpid()) + ".csv");
    {
        std::ofstream out(dir);
        out << "# provisional\nmemory_mb,boot_ms,restore_ms\n1024,3000,20\n128,1000,10\n";
    }
    auto m = ColdStartCostModel::load(dir);
    EXPECT_DOUBLE_EQ(m.boot_ms(128), 1000);
    EXPECT_DOUBLE_EQ(m.boot_ms(576), 2000);
    EXPECT_DOUBLE_EQ(m.boot_ms(1920), 5000) << "beyond the last row the last segment goes on";
    EXPECT_DOUBLE_EQ(m.restore_disk_ms(576), m.restore_ms(576)) << "no disk column: no tier difference";
    EXPECT_DOUBLE_EQ(m.image_mb(576), 576);
    {
        std::ofstream out(dir);
        out << "memory_mb,boot_ms,restore_ms\n128,1000,10\n256,fast,10\n";
    }
    auto msg = error_of([&] { ColdStartCostModel::load(dir); });
    EXPECT_NE(msg.find(":3: column 'boot_ms': 'fast' is not a number"), std::string::npos) << msg;
    {
        std::ofstream out(dir);
        out << "memory_mb,restore_ms\n128,10\n256,10\n";
    }
    msg = error_of([&] { ColdStartCostModel::load(dir); });
    EXPECT_NE(msg.find("no column 'boot_ms'"), std::string::npos) << msg;
    fs::remove(dir);
}

TEST(SimCostModel, MeasuredColdCacheRestoreReplacesTheEstimateWhereGiven) {
    auto dir = fs::temp_directory_path() / ("initless-costs-m-" + std::to_string(::getpid()) + ".csv");
    {
        std::ofstream out(dir);
        out << "memory_mb,boot_ms,restore_ms,restore_disk_ms,image_mb,restore_disk_measured_ms\n"
               "100,1000,40,300,100,\n"
               "1000,9000,40,1300,900,700\n";
    }
    auto m = ColdStartCostModel::load(dir);
    EXPECT_DOUBLE_EQ(m.restore_disk_ms(100), 300) << "empty cell: the estimate";
    EXPECT_DOUBLE_EQ(m.restore_disk_ms(1000), 700) << "measured";
    EXPECT_DOUBLE_EQ(m.restore_disk_ms(550), 500) << "interpolated between estimate and measurement";
    EXPECT_FALSE(m.points().at(0).disk_measured);
    EXPECT_TRUE(m.points().at(1).disk_measured);
    {
        std::ofstream out(dir);
        out << "memory_mb,boot_ms,restore_ms,restore_disk_ms,restore_disk_measured_ms\n100,1,1,1,slow\n200,1,"
               "1,1,\n";
    }
    auto msg = error_of([&] { ColdStartCostModel::load(dir); });
    EXPECT_NE(msg.find(":2: column 'restore_disk_measured_ms': 'slow' is not a number"), std::string::npos)
        << msg;
    fs::remove(dir);
}

TEST(SimReplay, SteadyFunctionUnderTtlHasOneColdStart) {
    TraceDir t({{every_minute(30), 1000, 1024}});
    auto r = replay(t.path(), "ttl", 4096);
    EXPECT_EQ(r.invocations, 30u);
    EXPECT_EQ(r.cold_starts(), 1u);
    EXPECT_EQ(r.warm_starts, 29u);
    EXPECT_NEAR(r.cold_start_overhead_s, 0.250, 1e-9);
    // Busy: 30 s of execution plus the 0.25 s restore, at 1 GB.
    EXPECT_NEAR(r.busy_gb_s, 30.25, 0.01);
    EXPECT_NEAR(r.used_gb_s(), 30 * 60, 60) << "the instance holds 1 GB for the whole half hour";
}

TEST(SimReplay, BudgetSmallerThanAnInstanceMakesEveryStartCold) {
    TraceDir t({{every_minute(30), 1000, 1024}});
    auto r = replay(t.path(), "greedy-dual", 512);
    EXPECT_EQ(r.cold_starts(), 30u);
    EXPECT_NEAR(r.cold_start_overhead_s, 30 * 0.250, 1e-9);
    EXPECT_EQ(r.over_budget_gb_s, 0);
    EXPECT_NEAR(r.idle_gb_s, 0, 1e-9);
    auto boot = replay(t.path(), "greedy-dual", 512, 1, ColdStartWorld::Boot);
    EXPECT_NEAR(boot.cold_start_overhead_s, 30 * 3.0, 1e-9);
}

TEST(SimReplay, TtlExpiresWhereLruKeeps) {
    std::vector<int> counts(30, 0);  // the trace ends before the second instance's 10 minutes are up
    counts[0] = 1;
    counts[25] = 1;  // 25 minutes later: past the 10-minute keep-alive
    TraceDir t({{counts, 1000, 1024}});
    auto ttl = replay(t.path(), "ttl", 4096);
    auto lru = replay(t.path(), "lru", 4096);
    EXPECT_EQ(ttl.cold_starts(), 2u);
    EXPECT_EQ(ttl.expirations, 1u);
    EXPECT_EQ(lru.cold_starts(), 1u);
    EXPECT_LT(ttl.idle_gb_s, lru.idle_gb_s);
}

TEST(SimReplay, TieredRestoresFromMemoryWhenOnlyTheSnapshotFits) {
    // 1024 MB instance, 512 MB image, 600 MB budget: the instance cannot stay, the snapshot can.
    std::vector<int> counts(30, 0);
    for (int m = 0; m < 30; m += 5) counts[static_cast<std::size_t>(m)] = 1;
    TraceDir t({{counts, 1000, 1024}});
    auto tiered = replay(t.path(), "tiered", 600);
    EXPECT_EQ(tiered.cold_starts(), 6u);
    EXPECT_EQ(tiered.cold_from_disk, 1u);
    EXPECT_EQ(tiered.cold_from_memory, 5u);
    EXPECT_NEAR(tiered.cold_start_overhead_s, 0.250 + 5 * 0.020, 1e-9);
    EXPECT_GT(tiered.snapshot_gb_s, 0);
    auto gd = replay(t.path(), "greedy-dual", 600);
    EXPECT_EQ(gd.cold_from_disk, 6u);
    EXPECT_GT(gd.cold_start_overhead_s, 3 * tiered.cold_start_overhead_s);
    auto boot = replay(t.path(), "tiered", 600, 1, ColdStartWorld::Boot);
    EXPECT_EQ(boot.cold_from_memory, 0u) << "no snapshots when cold starts are boots";
}

TEST(SimReplay, SameSeedSameNumbersOtherSeedOtherNumbers) {
    std::mt19937 rng(7);
    std::vector<FunctionRow> rows;
    for (int f = 0; f < 12; ++f) {
        std::vector<int> counts;
        for (int m = 0; m < 90; ++m) counts.push_back(static_cast<int>(rng() % 4 == 0 ? rng() % 30 : 0));
        rows.push_back({counts, 200.0 + 400 * f, 128.0 * (1 + f % 4)});
    }
    TraceDir t(rows);
    for (const auto& name : initless::policy::policy_names()) {
        auto a = replay(t.path(), name, 1024, 42);
        auto b = replay(t.path(), name, 1024, 42);
        EXPECT_EQ(a, b) << name;
        EXPECT_GT(a.cold_starts(), 0u) << name;
        EXPECT_EQ(a.invocations, a.warm_starts + a.pre_warmed_starts + a.cold_starts()) << name;
        double idle = 0;
        std::uint64_t evictions = 0;
        for (const auto& f : a.per_function) {
            idle += f.idle_gb_s;
            evictions += f.evictions;
        }
        EXPECT_EQ(evictions, a.evictions) << name;
        EXPECT_NEAR(idle, a.idle_gb_s, 1e-6 * (1 + a.idle_gb_s))
            << name << ": per-function idle memory-time adds up";
        auto c = replay(t.path(), name, 1024, 43);
        EXPECT_EQ(a.invocations, c.invocations) << name;
        EXPECT_NE(a.busy_gb_s, c.busy_gb_s) << name << ": the seed moves arrivals and durations";
    }
}

TEST(SimReplay, IceBreakerPreWarmsARegularFunction) {
    // Active in every 4th minute: after the predictor's window fills, most starts are pre-warmed.
    std::vector<int> counts(200, 0);
    for (int m = 0; m < 200; m += 4) counts[static_cast<std::size_t>(m)] = 3;
    TraceDir t({{counts, 500, 256}});
    auto r = replay(t.path(), "icebreaker", 8192);
    EXPECT_GT(r.pre_warmed_starts, r.cold_starts());
    auto ttl = replay(t.path(), "ttl", 8192);
    EXPECT_EQ(ttl.pre_warmed_starts, 0u);
}

TEST(SimReplay, RejectsANonPositiveBudget) {
    TraceDir t({{every_minute(3), 1000, 1024}});
    auto trace = AzureTrace::load(t.path());
    auto costs = flat_costs();
    EXPECT_THROW(TraceReplay(trace, costs, {0, 1, ColdStartWorld::Restore}), Error);
}

TEST(SimReplay, InstancesTakingConcurrentInvocationsNeedFewerColdStarts) {
    // 20 invocations in one minute, each running 2 minutes: all overlap.
    std::vector<int> counts(3, 0);
    counts[0] = 20;
    TraceDir t({{counts, 120'000, 256}});
    auto trace = AzureTrace::load(t.path());
    auto costs = flat_costs();
    auto run = [&](std::uint32_t concurrency) {
        TraceReplay r(trace, costs, {8192, 1, ColdStartWorld::Restore, concurrency});
        auto p = initless::policy::make_policy("lru");
        return r.run(*p);
    };
    EXPECT_EQ(run(1).cold_starts(), 20u);
    auto shared = run(8);
    EXPECT_EQ(shared.cold_starts(), 3u);  // ceil(20 / 8)
    EXPECT_EQ(shared.warm_starts, 17u);
    EXPECT_LT(shared.busy_gb_s, run(1).busy_gb_s);
}

TEST(SimReplay, FaasCacheModelBudgetsRunningInstancesAndDropsWhatDoesNotFit) {
    // Two 1 GB functions invoked at the start of every minute (evenly spaced: one a minute is at :00),
    // average 1 s, maximum 5 s: a cold start costs the 4 s of init. A 1.5 GB node holds one instance.
    std::vector<FunctionRow> rows = {{every_minute(3), 1000, 1024, 5000},
                                     {every_minute(3), 1000, 1024, 5000}};
    TraceDir t(rows);
    auto fc = replay(t.path(), "lru", 1536, 1, ColdStartWorld::Restore, ReplayModel::FaasCache);
    EXPECT_EQ(fc.invocations, 6u);
    // Minute 0: function 0 starts cold; function 1 finds the node full of a busy instance: dropped. Minutes 1
    // and 2: function 0 is warm (its instance is idle and holds the memory), function 1 is dropped again.
    EXPECT_EQ(fc.cold_starts(), 1u);
    EXPECT_EQ(fc.warm_starts, 2u);
    EXPECT_EQ(fc.dropped, 3u);
    EXPECT_EQ(fc.per_function.at(1).dropped, 3u);
    EXPECT_EQ(fc.per_function.at(0).cold_starts, 1u);
    EXPECT_NEAR(fc.cold_start_overhead_s, 4.0, 1e-9);
    EXPECT_NEAR(fc.mean_slowdown(), 4.0 / 3, 1e-9) << "one 4 s delay on a 1 s run, over 3 served";
    // Our model budgets idle memory only: running instances always get memory, nothing is dropped.
    auto ours = replay(t.path(), "lru", 1536, 1, ColdStartWorld::Restore, ReplayModel::Initless);
    EXPECT_EQ(ours.dropped, 0u);
    EXPECT_EQ(ours.served(), 6u);
}

TEST(SimReplay, FaasCacheModelEvictsIdleInstancesToMakeRoom) {
    // Function 0 at minute 0, function 1 at minute 1: the idle instance of 0 is evicted for 1, not dropped.
    std::vector<int> a(3, 0), b(3, 0);
    a[0] = 1;
    a[2] = 1;
    b[1] = 1;
    TraceDir t({{a, 1000, 1024, 3000}, {b, 1000, 1024, 2000}});
    auto fc = replay(t.path(), "greedy-dual", 1536, 1, ColdStartWorld::Restore, ReplayModel::FaasCache);
    EXPECT_EQ(fc.dropped, 0u);
    EXPECT_EQ(fc.cold_starts(), 3u);
    EXPECT_EQ(fc.evictions, 2u);
    EXPECT_NEAR(fc.cold_start_overhead_s, 2.0 + 1.0 + 2.0, 1e-9) << "init is maximum - average per function";
}
