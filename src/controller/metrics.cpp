#include "initless/controller/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::controller {

std::string Metrics::escape_label_value(const std::string& v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string Metrics::reason_label(const std::string& error) {
    std::string r;
    for (size_t i = 0; i < error.size() && r.size() < 40; ++i) {
        char c = error[i];
        if (c == ':' || c == '\n') break;
        if (std::isdigit(static_cast<unsigned char>(c))) {
            bool hex = c == '0' && i + 1 < error.size() && error[i + 1] == 'x';
            if (hex) ++i;
            while (i + 1 < error.size() && (hex ? std::isxdigit(static_cast<unsigned char>(error[i + 1]))
                                                : std::isdigit(static_cast<unsigned char>(error[i + 1]))))
                ++i;
            r += 'n';
            continue;
        }
        r += (std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '-');
    }
    return r.empty() ? "unknown" : r;
}

std::string Metrics::render(const Labels& labels) {
    std::string out;
    for (const auto& [k, v] : labels) {
        out += out.empty() ? "" : ",";
        out += k + "=\"" + escape_label_value(v) + "\"";
    }
    return out;
}

void Metrics::declare(const std::string& name, Type type, const std::string& help,
                      std::vector<double> buckets) {
    std::lock_guard lock(mu_);
    Family& f = families_[name];
    f.type = type;
    f.help = help;
    std::sort(buckets.begin(), buckets.end());
    f.buckets = std::move(buckets);
}

Metrics::Family& Metrics::family(const std::string& name, Type type) {
    auto it = families_.find(name);
    if (it == families_.end() || it->second.type != type)
        throw Error(fmt::format("metrics: {} is not declared with that type", name));
    return it->second;
}

void Metrics::add(const std::string& name, const Labels& labels, double value) {
    std::lock_guard lock(mu_);
    family(name, Type::Counter).values[render(labels)] += value;
}

void Metrics::set(const std::string& name, const Labels& labels, double value) {
    std::lock_guard lock(mu_);
    family(name, Type::Gauge).values[render(labels)] = value;
}

void Metrics::clear(const std::string& name) {
    std::lock_guard lock(mu_);
    family(name, Type::Gauge).values.clear();
}

namespace {
void count_in(const std::vector<double>& buckets, HistogramSample& h, double value) {
    if (h.counts.empty()) h.counts.assign(buckets.size(), 0);
    auto at = std::lower_bound(buckets.begin(), buckets.end(), value);  // first bucket with le >= value
    if (at != buckets.end()) h.counts[static_cast<size_t>(at - buckets.begin())] += 1;
    h.sum += value;
    h.count += 1;
}
}  // namespace

void Metrics::observe(const std::string& name, const Labels& labels, double value) {
    std::lock_guard lock(mu_);
    Family& f = family(name, Type::Histogram);
    count_in(f.buckets, f.histograms[render(labels)], value);
}

Metrics::CounterRef Metrics::counter(const std::string& name, const Labels& labels) {
    std::lock_guard lock(mu_);
    CounterRef ref;
    ref.value_ = &family(name, Type::Counter).values[render(labels)];  // map nodes do not move
    return ref;
}

Metrics::HistogramRef Metrics::histogram(const std::string& name, const Labels& labels) {
    std::lock_guard lock(mu_);
    Family& f = family(name, Type::Histogram);
    HistogramRef ref;
    ref.buckets_ = &f.buckets;
    ref.histogram_ = &f.histograms[render(labels)];
    // Sized now: the exposition may run before the first record does.
    if (ref.histogram_->counts.empty()) ref.histogram_->counts.assign(f.buckets.size(), 0);
    return ref;
}

void Metrics::add(CounterRef counter, double value) {
    std::lock_guard lock(mu_);
    *counter.value_ += value;
}

void Metrics::record(CounterRef counter, HistogramRef histogram, double value) {
    std::lock_guard lock(mu_);
    *counter.value_ += 1;
    count_in(*histogram.buckets_, *histogram.histogram_, value);
}

double Metrics::value(const std::string& name, const Labels& labels) const {
    std::lock_guard lock(mu_);
    auto it = families_.find(name);
    if (it == families_.end()) return 0;
    auto v = it->second.values.find(render(labels));
    return v == it->second.values.end() ? 0 : v->second;
}

namespace {
std::string number(double v) {
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
    return fmt::format("{}", v);
}
std::string with(const std::string& labels, const std::string& extra) {
    if (labels.empty()) return "{" + extra + "}";
    return "{" + labels + "," + extra + "}";
}
std::string braces(const std::string& labels) {
    return labels.empty() ? "" : "{" + labels + "}";
}
}  // namespace

std::string Metrics::exposition() const {
    std::lock_guard lock(mu_);
    std::string out;
    for (const auto& [name, f] : families_) {
        const char* type = f.type == Type::Counter ? "counter"
                           : f.type == Type::Gauge ? "gauge"
                                                   : "histogram";
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, f.help, name, type);
        for (const auto& [labels, v] : f.values)
            out += fmt::format("{}{} {}\n", name, braces(labels), number(v));
        for (const auto& [labels, h] : f.histograms) {
            double cumulative = 0;
            for (size_t i = 0; i < f.buckets.size(); ++i) {
                cumulative += h.counts[i];
                out += fmt::format("{}_bucket{} {}\n", name,
                                   with(labels, "le=\"" + number(f.buckets[i]) + "\""), number(cumulative));
            }
            out += fmt::format("{}_bucket{} {}\n", name, with(labels, "le=\"+Inf\""), number(h.count));
            out += fmt::format("{}_sum{} {}\n", name, braces(labels), number(h.sum));
            out += fmt::format("{}_count{} {}\n", name, braces(labels), number(h.count));
        }
    }
    return out;
}

}  // namespace initless::controller
