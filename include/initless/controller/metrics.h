// Metrics in the Prometheus text exposition format (version 0.0.4), written by hand since Debian
// has no prometheus-cpp. Families are declared once (name, type, help, histogram buckets); samples
// are keyed by their label set. Every method is thread-safe (one mutex; the hot path is a map
// lookup and an add). `exposition` renders every family, plus the gauges a caller adds at scrape.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace initless::controller {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
  public:
    enum class Type { Counter, Gauge, Histogram };

    void declare(const std::string& name, Type type, const std::string& help,
                 std::vector<double> buckets = {});
    void add(const std::string& name, const Labels& labels, double value = 1);  // counter
    void set(const std::string& name, const Labels& labels, double value);      // gauge
    void observe(const std::string& name, const Labels& labels, double value);  // histogram
    // Drops every gauge sample of `name` (gauges rebuilt at each scrape).
    void clear(const std::string& name);
    double value(const std::string& name, const Labels& labels) const;  // counter or gauge; 0 if none

    std::string exposition() const;

    static std::string escape_label_value(const std::string& v);

  private:
    struct Histogram {
        std::vector<double> counts;  // per bucket, not cumulative
        double sum = 0;
        double count = 0;
    };
    struct Family {
        Type type = Type::Counter;
        std::string help;
        std::vector<double> buckets;
        std::map<std::string, double> values;  // rendered label set -> value
        std::map<std::string, Histogram> histograms;
    };
    static std::string render(const Labels& labels);
    Family& family(const std::string& name, Type type);

    mutable std::mutex mu_;
    std::map<std::string, Family> families_;
};

}  // namespace initless::controller
