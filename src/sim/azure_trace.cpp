#include "initless/sim/azure_trace.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>

#include "csv_table.h"
#include "initless/sys/error.h"

namespace initless::sim {

namespace fs = std::filesystem;

double DurationPercentiles::at(double u) const {
    u = std::clamp(u, 0.0, 1.0);
    std::size_t i = 1;
    while (i + 1 < kQuantiles.size() && u > kQuantiles[i]) ++i;
    double q0 = kQuantiles[i - 1], q1 = kQuantiles[i];
    double f = q1 > q0 ? (u - q0) / (q1 - q0) : 0;
    return std::max(1.0, ms[i - 1] + f * (ms[i] - ms[i - 1]));
}

namespace {

struct Layout {
    const char* invocations;
    const char* durations;
    const char* memory;
};
constexpr Layout kSampled{"inv.csv", "run.csv", "mem.csv"};
constexpr Layout kOriginal{"invocations.csv", "durations.csv", "memory.csv"};

bool is_minute_column(const std::string& h) {
    std::string_view d = h;
    if (d.starts_with("minute_")) d.remove_prefix(7);
    return !d.empty() && std::all_of(d.begin(), d.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::string key(const std::string& owner, const std::string& app, const std::string& function) {
    return owner + "/" + app + "/" + function;
}

}  // namespace

AzureTrace AzureTrace::load(const fs::path& dir) {
    if (!fs::is_directory(dir)) throw Error("trace " + dir.string() + ": not a directory");
    Layout layout = fs::exists(dir / kSampled.invocations)    ? kSampled
                    : fs::exists(dir / kOriginal.invocations) ? kOriginal
                                                              : Layout{nullptr, nullptr, nullptr};
    if (layout.invocations == nullptr)
        throw Error("trace " + dir.string() +
                    ": no inv.csv (invitro sample) or invocations.csv (2019 schema)");

    AzureTrace trace;
    trace.dir = dir;
    auto inv = CsvTable::read(dir / layout.invocations);
    auto run = CsvTable::read(dir / layout.durations);
    auto mem = CsvTable::read(dir / layout.memory);

    std::vector<std::size_t> minute_cols;
    for (std::size_t c = 0; c < inv.header().size(); ++c)
        if (is_minute_column(inv.header()[c])) minute_cols.push_back(c);
    if (minute_cols.empty())
        throw Error((dir / layout.invocations).string() + ": no per-minute columns (minute_1.. or 1..)");
    trace.minutes = static_cast<int>(minute_cols.size());

    // Execution-time percentiles by function.
    static const char* const kDurationCols[] = {
        "percentile_Average_0",  "percentile_Average_1",  "percentile_Average_25", "percentile_Average_50",
        "percentile_Average_75", "percentile_Average_99", "percentile_Average_100"};
    std::size_t r_owner = run.column("HashOwner"), r_app = run.column("HashApp"),
                r_fn = run.column("HashFunction");
    std::size_t dcols[7];
    for (int i = 0; i < 7; ++i) dcols[i] = run.column(kDurationCols[i]);
    bool has_average = run.has_column("Average"), has_maximum = run.has_column("Maximum");
    struct Durations {
        DurationPercentiles percentiles;
        double average_ms, maximum_ms;
    };
    std::map<std::string, Durations> durations;
    for (std::size_t r = 0; r < run.rows(); ++r) {
        DurationPercentiles d;
        for (int i = 0; i < 7; ++i) {
            d.ms[static_cast<std::size_t>(i)] = run.number(r, dcols[i]);
            if (d.ms[static_cast<std::size_t>(i)] < 0)
                throw Error(run.where(r) + ": column '" + kDurationCols[i] + "': negative duration");
        }
        double average = has_average ? run.number(r, run.column("Average")) : d.ms[3];
        double maximum = has_maximum ? run.number(r, run.column("Maximum")) : d.ms[6];
        if (average < 0 || maximum < 0)
            throw Error(run.where(r) + ": columns 'Average', 'Maximum': negative duration");
        durations[key(run.row(r)[r_owner], run.row(r)[r_app], run.row(r)[r_fn])] = {d, average, maximum};
    }

    // Memory is per app.
    std::size_t m_owner = mem.column("HashOwner"), m_app = mem.column("HashApp");
    std::size_t m_p50 = mem.column("AverageAllocatedMb_pct50");
    bool has_mean = mem.has_column("AverageAllocatedMb");
    std::map<std::string, std::pair<double, double>> memory;  // median, mean
    for (std::size_t r = 0; r < mem.rows(); ++r) {
        double mb = mem.number(r, m_p50);
        if (mb <= 0) throw Error(mem.where(r) + ": column 'AverageAllocatedMb_pct50': memory must be > 0 MB");
        double mean = has_mean ? mem.number(r, mem.column("AverageAllocatedMb")) : mb;
        if (mean <= 0) throw Error(mem.where(r) + ": column 'AverageAllocatedMb': memory must be > 0 MB");
        memory[mem.row(r)[m_owner] + "/" + mem.row(r)[m_app]] = {mb, mean};
    }

    std::size_t i_owner = inv.column("HashOwner"), i_app = inv.column("HashApp"),
                i_fn = inv.column("HashFunction");
    for (std::size_t r = 0; r < inv.rows(); ++r) {
        TraceFunction f;
        f.owner = inv.row(r)[i_owner];
        f.app = inv.row(r)[i_app];
        f.function = inv.row(r)[i_fn];
        f.per_minute.reserve(minute_cols.size());
        for (std::size_t c : minute_cols) {
            double v = inv.number(r, c);
            if (v < 0 || v != std::floor(v) || v > 4e9)
                throw Error(inv.where(r) + ": column '" + inv.header()[c] +
                            "': invocation count must be a "
                            "non-negative integer");
            f.per_minute.push_back(static_cast<std::uint32_t>(v));
            f.invocations += static_cast<std::uint64_t>(v);
        }
        auto d = durations.find(key(f.owner, f.app, f.function));
        if (d == durations.end())
            throw Error(inv.where(r) + ": function " + f.function + " has no row in " + layout.durations);
        f.duration = d->second.percentiles;
        f.average_ms = d->second.average_ms;
        f.maximum_ms = d->second.maximum_ms;
        auto m = memory.find(f.owner + "/" + f.app);
        if (m == memory.end())
            throw Error(inv.where(r) + ": app " + f.app + " of function " + f.function + " has no row in " +
                        layout.memory);
        f.memory_mb = m->second.first;
        f.memory_average_mb = m->second.second;
        trace.invocations += f.invocations;
        trace.functions.push_back(std::move(f));
    }
    if (trace.functions.empty()) throw Error((dir / layout.invocations).string() + ": no functions");
    return trace;
}

}  // namespace initless::sim
