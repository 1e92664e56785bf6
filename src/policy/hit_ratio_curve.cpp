#include "initless/policy/hit_ratio_curve.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "initless/sys/error.h"

namespace initless::policy {

ReuseDistanceTracker::ReuseDistanceTracker(std::size_t capacity)
    : capacity_(capacity), tree_(capacity + 1, 0.0) {
    if (capacity < 2) throw Error("reuse distance tracker: capacity must be >= 2");
}

void ReuseDistanceTracker::fenwick_add(std::size_t pos, double v) {
    for (std::size_t i = pos + 1; i <= capacity_; i += i & (~i + 1)) tree_[i] += v;
}

double ReuseDistanceTracker::fenwick_prefix(std::size_t pos) const {
    double s = 0;
    for (std::size_t i = pos; i > 0; i -= i & (~i + 1)) s += tree_[i];
    return s;
}

void ReuseDistanceTracker::compact() {
    // Only each function's latest position matters; renumber them densely in the same order.
    std::vector<FunctionId> live;
    for (FunctionId f = 0; f < last_pos_.size(); ++f)
        if (last_pos_[f] >= 0) live.push_back(f);
    std::sort(live.begin(), live.end(),
              [&](FunctionId a, FunctionId b) { return last_pos_[a] < last_pos_[b]; });
    if (live.size() + 1 >= capacity_) {
        capacity_ = 2 * (live.size() + 1);
    }
    tree_.assign(capacity_ + 1, 0.0);
    next_pos_ = 0;
    for (FunctionId f : live) {
        last_pos_[f] = static_cast<std::int64_t>(next_pos_);
        fenwick_add(next_pos_++, size_[f]);
    }
}

double ReuseDistanceTracker::access(FunctionId f, double size_mb) {
    if (f >= last_pos_.size()) {
        last_pos_.resize(f + 1, -1);
        size_.resize(f + 1, 0.0);
    }
    if (next_pos_ >= capacity_) compact();
    double distance = kInfiniteDistance;
    if (last_pos_[f] >= 0) {
        auto p = static_cast<std::size_t>(last_pos_[f]);
        // Distinct functions since p are exactly those whose latest access lies after p.
        distance = fenwick_prefix(next_pos_) - fenwick_prefix(p + 1) + size_mb;
        fenwick_add(p, -size_[f]);
    }
    size_[f] = size_mb;
    last_pos_[f] = static_cast<std::int64_t>(next_pos_);
    fenwick_add(next_pos_++, size_mb);
    return distance;
}

HitRatioCurve::HitRatioCurve(double bucket_mb) : bucket_mb_(bucket_mb) {
    if (!(bucket_mb > 0)) throw Error("hit ratio curve: bucket size must be > 0 MB");
}

void HitRatioCurve::add(double distance_mb) {
    ++accesses_;
    if (std::isinf(distance_mb)) {
        ++infinite_;
        return;
    }
    auto b = static_cast<std::size_t>(std::ceil(std::max(0.0, distance_mb) / bucket_mb_ - 1e-9));
    if (b >= buckets_.size()) buckets_.resize(b + 1, 0);
    ++buckets_[b];
}

double HitRatioCurve::hit_ratio(double cache_mb) const {
    if (accesses_ == 0) return 0;
    std::uint64_t hits = 0;
    for (std::size_t b = 0; b < buckets_.size() && static_cast<double>(b) * bucket_mb_ <= cache_mb + 1e-9;
         ++b)
        hits += buckets_[b];
    return static_cast<double>(hits) / static_cast<double>(accesses_);
}

double HitRatioCurve::max_hit_ratio() const {
    if (accesses_ == 0) return 0;
    return static_cast<double>(accesses_ - infinite_) / static_cast<double>(accesses_);
}

double HitRatioCurve::size_for_fraction_of_max(double fraction) const {
    double target = fraction * max_hit_ratio();
    std::uint64_t hits = 0;
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
        hits += buckets_[b];
        if (static_cast<double>(hits) >= target * static_cast<double>(accesses_) - 1e-9)
            return static_cast<double>(b) * bucket_mb_;
    }
    return static_cast<double>(buckets_.size()) * bucket_mb_;
}

double HitRatioCurve::knee_mb() const {
    if (buckets_.empty()) return 0;
    double xmax = static_cast<double>(buckets_.size() - 1) * bucket_mb_;
    double ymax = max_hit_ratio();
    if (xmax <= 0) return 0;
    double best = 0, best_x = 0;
    std::uint64_t hits = 0;
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
        hits += buckets_[b];
        double x = static_cast<double>(b) * bucket_mb_;
        double y = static_cast<double>(hits) / static_cast<double>(accesses_);
        double above = y / ymax - x / xmax;  // both axes normalised
        if (above > best) {
            best = above;
            best_x = x;
        }
    }
    return best_x;
}

}  // namespace initless::policy
