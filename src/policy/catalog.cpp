#include "initless/policy/catalog.h"

#include "initless/policy/fixed_ttl.h"
#include "initless/policy/greedy_dual.h"
#include "initless/policy/hybrid_histogram.h"
#include "initless/policy/icebreaker.h"
#include "initless/policy/tiered.h"
#include "initless/sys/error.h"

namespace initless::policy {

const std::vector<std::string>& policy_names() {
    static const std::vector<std::string> kNames = {"ttl",
                                                    "lru",
                                                    "greedy-dual",
                                                    "greedy-dual-instance",
                                                    "greedy-dual-shared",
                                                    "hybrid-histogram",
                                                    "icebreaker",
                                                    "tiered"};
    return kNames;
}

std::unique_ptr<KeepAlivePolicy> make_policy(std::string_view name) {
    if (name == "ttl") return std::make_unique<FixedTtlPolicy>();
    if (name == "lru") return std::make_unique<LruPolicy>();
    if (name == "greedy-dual") return std::make_unique<GreedyDualPolicy>();
    if (name == "greedy-dual-instance") return std::make_unique<GreedyDualPolicy>(FrequencyScope::Instance);
    if (name == "greedy-dual-shared") return std::make_unique<SharedPriorityGreedyDualPolicy>();
    if (name == "hybrid-histogram") return std::make_unique<HybridHistogramPolicy>();
    if (name == "icebreaker") return std::make_unique<IceBreakerPolicy>();
    if (name == "tiered") return std::make_unique<TieredPolicy>();
    std::string known;
    for (const auto& n : policy_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown policy '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace initless::policy
