// FaaSCache's cache sizing: the hit ratio a keep-alive cache of size c would get is the fraction of
// invocations whose reuse distance is at most c (Fuerst and Sharma, ASPLOS'21, eq. 2). The reuse distance
// of an invocation of f is f's own size plus the sizes of the distinct functions invoked since f's
// previous invocation; a first invocation has infinite distance (a compulsory miss).
// The curve treats a function as one cached object: concurrent instances of one function are not
// modelled, so the curve is an upper bound ("false hits" in the paper) that the simulator checks.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "initless/policy/policy.h"

namespace initless::policy {

inline constexpr double kInfiniteDistance = std::numeric_limits<double>::infinity();

class ReuseDistanceTracker {
  public:
    // `capacity` bounds the position index; when it fills up the tracker compacts in O(functions).
    explicit ReuseDistanceTracker(std::size_t capacity = 1 << 16);
    // Records an invocation of `f` whose instance holds `size_mb`; returns its reuse distance in MB.
    double access(FunctionId f, double size_mb);

  private:
    void fenwick_add(std::size_t pos, double v);
    double fenwick_prefix(std::size_t pos) const;  // sum over [0, pos)
    void compact();

    std::size_t capacity_;
    std::size_t next_pos_ = 0;
    std::vector<double> tree_;
    std::vector<std::int64_t> last_pos_;  // -1: never accessed
    std::vector<double> size_;
};

class HitRatioCurve {
  public:
    explicit HitRatioCurve(double bucket_mb = 64);
    void add(double distance_mb);
    std::uint64_t accesses() const { return accesses_; }
    // Fraction of all recorded accesses that would hit in a cache of `cache_mb`.
    double hit_ratio(double cache_mb) const;
    // Hit ratio with unlimited memory (everything but compulsory misses).
    double max_hit_ratio() const;
    // Smallest cache (a bucket edge) reaching `fraction` of the max hit ratio.
    double size_for_fraction_of_max(double fraction) const;
    // The knee: the bucket edge farthest above the chord from (0, 0) to (largest distance, max hit ratio),
    // where extra memory starts to buy little.
    double knee_mb() const;

  private:
    double bucket_mb_;
    std::vector<std::uint64_t> buckets_;  // buckets_[b]: distances in (b-1, b] * bucket_mb
    std::uint64_t accesses_ = 0;
    std::uint64_t infinite_ = 0;
};

}  // namespace initless::policy
