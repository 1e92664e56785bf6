// Clocks: a restored process's CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from its checkpoint. The
// checkpoint records both at the freeze (the function was booted in the host's time namespace: its
// clocks are ours); restore makes the restorer in a time namespace shifted by the difference to now
// (CLOCK_REALTIME is not namespaced). Otherwise every timed wait a runtime had pending expires at
// once on the first request.
#include <time.h>

#include <nlohmann/json.hpp>

#include "initless/sys/inspect.h"
#include "state/kinds.h"

namespace initless::state::clocks {

void read(image::Manifest& m) {
    m.monotonic_ns = sys::clock_ns(CLOCK_MONOTONIC);
    m.boottime_ns = sys::clock_ns(CLOCK_BOOTTIME);
}

void store(json& j, const image::Manifest& m) {
    j["clocks"] = {m.monotonic_ns, m.boottime_ns};
}

void load(const json& j, image::Manifest& m) {
    m.monotonic_ns = j.at("clocks")[0];
    m.boottime_ns = j.at("clocks")[1];
}

// The offsets are fixed when the restorer is made, so the time a prepared sandbox waits in its
// pool passes for the restored process too.
std::pair<int64_t, int64_t> offsets(const image::Manifest& m) {
    if (!m.monotonic_ns) return {0, 0};
    return {m.monotonic_ns - sys::clock_ns(CLOCK_MONOTONIC), m.boottime_ns - sys::clock_ns(CLOCK_BOOTTIME)};
}

}  // namespace initless::state::clocks
