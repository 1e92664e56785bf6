// The Azure Functions 2019 trace (Shahrad et al., ATC'20) as the simulator reads it: per function, its
// invocation count for every minute of the day, its execution-time percentiles and its memory.
// Two layouts are accepted (see data/azure-functions-2019/README.md): the invitro samples
// (inv.csv, run.csv, mem.csv) and the original schema (invocations.csv, durations.csv, memory.csv).
// Columns are found by header name. Memory is per app in the trace; an instance of a function is
// given its app's median allocated memory (AverageAllocatedMb_pct50). Any malformed or missing value
// throws initless::Error naming the file, the line and the column.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace initless::sim {

// Execution time as a piecewise-linear quantile function through the trace's percentiles.
struct DurationPercentiles {
    static constexpr std::array<double, 7> kQuantiles = {0.0, 0.01, 0.25, 0.50, 0.75, 0.99, 1.0};
    std::array<double, 7> ms{};  // percentile_Average_{0,1,25,50,75,99,100}
    // Duration at quantile u in [0, 1]; at least 1 ms.
    double at(double u) const;
};

struct TraceFunction {
    std::string owner, app, function;  // the trace's hashes
    std::vector<std::uint32_t> per_minute;
    DurationPercentiles duration;
    double memory_mb = 0;  // the app's median allocated memory (AverageAllocatedMb_pct50)
    std::uint64_t invocations = 0;
    // What FaaSCache's simulator uses (see trace_replay.h, ReplayModel::FaasCache): the mean execution
    // time as the warm run time, the maximum as the cold one (so init = maximum - average), and the app's
    // mean allocated memory. Files without these columns fall back to the 50th and 100th percentile and
    // the median memory.
    double average_ms = 0;
    double maximum_ms = 0;
    double memory_average_mb = 0;
};

struct AzureTrace {
    std::filesystem::path dir;
    std::vector<TraceFunction> functions;
    int minutes = 0;
    std::uint64_t invocations = 0;

    static AzureTrace load(const std::filesystem::path& dir);
};

}  // namespace initless::sim
