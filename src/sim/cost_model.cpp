#include "initless/sim/cost_model.h"

#include <algorithm>

#include "csv_table.h"
#include "initless/sys/error.h"

namespace initless::sim {

ColdStartCostModel ColdStartCostModel::from_points(std::vector<CostPoint> points, std::string source) {
    std::sort(points.begin(), points.end(),
              [](const CostPoint& a, const CostPoint& b) { return a.memory_mb < b.memory_mb; });
    if (points.size() < 2) throw Error(source + ": a cost model needs at least two rows");
    for (std::size_t i = 1; i < points.size(); ++i)
        if (points[i].memory_mb == points[i - 1].memory_mb)
            throw Error(source + ": two rows for memory_mb " + std::to_string(points[i].memory_mb));
    ColdStartCostModel m;
    m.points_ = std::move(points);
    m.source_ = std::move(source);
    return m;
}

ColdStartCostModel ColdStartCostModel::load(const std::filesystem::path& csv) {
    auto t = CsvTable::read(csv);
    std::size_t c_mb = t.column("memory_mb"), c_boot = t.column("boot_ms"),
                c_restore = t.column("restore_ms");
    bool has_disk = t.has_column("restore_disk_ms"), has_image = t.has_column("image_mb");
    bool has_measured = t.has_column("restore_disk_measured_ms");
    std::vector<CostPoint> points;
    for (std::size_t r = 0; r < t.rows(); ++r) {
        CostPoint p;
        p.memory_mb = t.number(r, c_mb);
        p.boot_ms = t.number(r, c_boot);
        p.restore_ms = t.number(r, c_restore);
        p.restore_disk_ms = has_disk ? t.number(r, t.column("restore_disk_ms")) : p.restore_ms;
        p.image_mb = has_image ? t.number(r, t.column("image_mb")) : p.memory_mb;
        if (has_measured && !t.row(r)[t.column("restore_disk_measured_ms")].empty()) {
            p.restore_disk_ms = t.number(r, t.column("restore_disk_measured_ms"));
            p.disk_measured = true;
        }
        if (p.memory_mb <= 0 || p.boot_ms < 0 || p.restore_ms < 0 || p.restore_disk_ms < 0 || p.image_mb < 0)
            throw Error(t.where(r) + ": memory_mb must be > 0 and every cost >= 0");
        points.push_back(p);
    }
    return from_points(std::move(points), csv.string());
}

double ColdStartCostModel::interpolate(double memory_mb, double CostPoint::*field) const {
    std::size_t i = 1;
    while (i + 1 < points_.size() && memory_mb > points_[i].memory_mb) ++i;
    const auto& a = points_[i - 1];
    const auto& b = points_[i];
    double f = (memory_mb - a.memory_mb) / (b.memory_mb - a.memory_mb);
    return std::max(0.0, a.*field + f * (b.*field - a.*field));
}

double ColdStartCostModel::boot_ms(double mb) const {
    return interpolate(mb, &CostPoint::boot_ms);
}
double ColdStartCostModel::restore_ms(double mb) const {
    return interpolate(mb, &CostPoint::restore_ms);
}
double ColdStartCostModel::restore_disk_ms(double mb) const {
    return interpolate(mb, &CostPoint::restore_disk_ms);
}
double ColdStartCostModel::image_mb(double mb) const {
    return interpolate(mb, &CostPoint::image_mb);
}

}  // namespace initless::sim
