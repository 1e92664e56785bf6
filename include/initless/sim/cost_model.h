// What a cold start costs, by instance size, read from a CSV so that measured bench data replaces the
// provisional numbers without code changes. Columns (by header name, any order, '#' lines are comments):
//   memory_mb, boot_ms, restore_ms                   required
//   restore_disk_ms                                  optional, default restore_ms (no tier difference)
//   restore_disk_measured_ms                         optional, may be empty per row: a cold-cache restore
//                                                    MEASURED by the restore bench; where given it replaces
//                                                    restore_disk_ms (then only an estimate) for that row
//   image_mb                                         optional, default memory_mb
// restore_ms is a restore with the snapshot's pages in page cache or tmpfs; restore_disk_ms one that
// reads them from disk; image_mb the snapshot pages held in memory when it sits in the memory tier.
// Values between rows are interpolated linearly; outside the rows the nearest segment is extended
// (never below zero). Errors name the file and line.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace initless::sim {

struct CostPoint {
    double memory_mb = 0;
    double boot_ms = 0;
    double restore_ms = 0;
    double restore_disk_ms = 0;
    double image_mb = 0;
    bool disk_measured = false;  // restore_disk_ms came from restore_disk_measured_ms
};

class ColdStartCostModel {
  public:
    static ColdStartCostModel load(const std::filesystem::path& csv);
    // At least two rows with distinct memory_mb, sorted or not.
    static ColdStartCostModel from_points(std::vector<CostPoint> points, std::string source);

    double boot_ms(double memory_mb) const;
    double restore_ms(double memory_mb) const;
    double restore_disk_ms(double memory_mb) const;
    double image_mb(double memory_mb) const;
    const std::string& source() const { return source_; }
    const std::vector<CostPoint>& points() const { return points_; }

  private:
    double interpolate(double memory_mb, double CostPoint::*field) const;

    std::vector<CostPoint> points_;
    std::string source_;
};

}  // namespace initless::sim
