#include <gtest/gtest.h>

#include "initless/controller/metrics.h"
#include "initless/gateway/server.h"
#include "initless/sys/error.h"

namespace {

using initless::controller::Metrics;

TEST(Metrics, CountersGaugesAndHistogramsInTheTextFormat) {
    Metrics m;
    m.declare("requests_total", Metrics::Type::Counter, "Requests.");
    m.declare("pool", Metrics::Type::Gauge, "Pool size.");
    m.declare("latency_seconds", Metrics::Type::Histogram, "Latency.", {0.1, 0.01, 1});
    m.add("requests_total", {{"function", "a"}, {"code", "200"}});
    m.add("requests_total", {{"function", "a"}, {"code", "200"}}, 2);
    m.set("pool", {{"function", "a"}}, 3);
    m.observe("latency_seconds", {{"function", "a"}}, 0.05);
    m.observe("latency_seconds", {{"function", "a"}}, 0.005);
    m.observe("latency_seconds", {{"function", "a"}}, 5);
    std::string text = m.exposition();
    EXPECT_NE(text.find("# TYPE requests_total counter\n"), std::string::npos) << text;
    EXPECT_NE(text.find("requests_total{function=\"a\",code=\"200\"} 3\n"), std::string::npos) << text;
    EXPECT_NE(text.find("pool{function=\"a\"} 3\n"), std::string::npos) << text;
    // Buckets are sorted and cumulative; +Inf counts everything.
    EXPECT_NE(text.find("latency_seconds_bucket{function=\"a\",le=\"0.01\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("latency_seconds_bucket{function=\"a\",le=\"0.1\"} 2\n"), std::string::npos) << text;
    EXPECT_NE(text.find("latency_seconds_bucket{function=\"a\",le=\"1\"} 2\n"), std::string::npos) << text;
    EXPECT_NE(text.find("latency_seconds_bucket{function=\"a\",le=\"+Inf\"} 3\n"), std::string::npos) << text;
    EXPECT_NE(text.find("latency_seconds_count{function=\"a\"} 3\n"), std::string::npos) << text;
    EXPECT_EQ(m.value("requests_total", {{"function", "a"}, {"code", "200"}}), 3);
    m.clear("pool");
    EXPECT_EQ(m.exposition().find("pool{"), std::string::npos);
}

// The gateway looks a histogram up before its first sample; a scrape in between reads its buckets.
TEST(Metrics, AHistogramLookedUpButNotYetRecordedShowsZeros) {
    Metrics m;
    m.declare("latency_seconds", Metrics::Type::Histogram, "Latency.", {0.01, 0.1});
    (void)m.histogram("latency_seconds", {{"function", "a"}});
    std::string text = m.exposition();
    EXPECT_NE(text.find("latency_seconds_bucket{function=\"a\",le=\"0.1\"} 0\n"), std::string::npos) << text;
    EXPECT_NE(text.find("latency_seconds_count{function=\"a\"} 0\n"), std::string::npos) << text;
}

// A failure's label is its kind: the pids, thread ids and addresses in its message do not make a series
// each (a new series per failed restore, kept for good).
TEST(Metrics, AReasonLabelIsTheKindOfTheErrorNotItsNumbers) {
    EXPECT_EQ(Metrics::reason_label("thread 4123 did not stop within 100 ms: gone"),
              "thread-n-did-not-stop-within-n-ms");
    EXPECT_EQ(Metrics::reason_label("thread 77 did not stop within 2000 ms"),
              "thread-n-did-not-stop-within-n-ms");
    EXPECT_EQ(Metrics::reason_label("bad map at 0x7f12ab34cd00 in task 12"), "bad-map-at-n-in-task-n");
    EXPECT_EQ(Metrics::reason_label("image corrupted: pages.img"), "image-corrupted");
    EXPECT_EQ(Metrics::reason_label(""), "unknown");
    EXPECT_LE(Metrics::reason_label(std::string(100, 'a')).size(), 40u);
}

TEST(Metrics, LabelValuesAreEscaped) {
    EXPECT_EQ(Metrics::escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(Metrics, UndeclaredOrMistypedFamiliesAreErrors) {
    Metrics m;
    m.declare("c", Metrics::Type::Counter, "C.");
    EXPECT_THROW(m.add("nope", {}), initless::Error);
    EXPECT_THROW(m.set("c", {}, 1), initless::Error);
}

TEST(GatewayAddress, ParsesHostAndPort) {
    using initless::gateway::parse_address;
    EXPECT_EQ(parse_address("127.0.0.1:8080"), (std::pair<std::string, uint16_t>{"127.0.0.1", 8080}));
    EXPECT_EQ(parse_address("localhost:0"), (std::pair<std::string, uint16_t>{"127.0.0.1", 0}));
    EXPECT_EQ(parse_address("[::1]:9"), (std::pair<std::string, uint16_t>{"::1", 9}));
    EXPECT_THROW(parse_address("8080"), initless::Error);
    EXPECT_THROW(parse_address("host:99999"), initless::Error);
    EXPECT_THROW(parse_address("host:80x"), initless::Error);
}

}  // namespace
