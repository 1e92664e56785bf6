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

struct HistogramSample {         // one label set of a histogram family
    std::vector<double> counts;  // per bucket, not cumulative
    double sum = 0;
    double count = 0;
};

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

    // A sample looked up once and updated many times: a caller on the hot path (the gateway, once
    // per request) then neither renders labels nor searches the family. A reference stays valid as
    // long as the Metrics: counter and histogram samples are never erased (only gauges are, and
    // they have no references).
    class CounterRef {
        double* value_ = nullptr;
        friend class Metrics;
    };
    class HistogramRef {
        const std::vector<double>* buckets_ = nullptr;
        HistogramSample* histogram_ = nullptr;
        friend class Metrics;
    };
    CounterRef counter(const std::string& name, const Labels& labels);
    HistogramRef histogram(const std::string& name, const Labels& labels);
    void add(CounterRef counter, double value = 1);
    // Both at once, under one lock: a request's count and its duration.
    void record(CounterRef counter, HistogramRef histogram, double value);

    std::string exposition() const;

    static std::string escape_label_value(const std::string& v);

    // A label value naming the kind of an error: its first words, lower case, at most 40 characters;
    // a number (a pid, a thread's id, an address) becomes "n", so that each kind of failure is one
    // series, not one per failure.
    static std::string reason_label(const std::string& error);

  private:
    struct Family {
        Type type = Type::Counter;
        std::string help;
        std::vector<double> buckets;
        std::map<std::string, double> values;  // rendered label set -> value
        std::map<std::string, HistogramSample> histograms;
    };
    static std::string render(const Labels& labels);
    Family& family(const std::string& name, Type type);

    mutable std::mutex mu_;
    std::map<std::string, Family> families_;
};

}  // namespace initless::controller
