#include "initless/sys/fault.h"

#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::sys {

bool fault_requested(std::string_view point) {
    static const std::string requested = [] {
        const char* v = std::getenv("INITLESS_TEST_FAULT");
        return v ? "," + std::string(v) + "," : std::string();
    }();
    if (requested.empty()) return false;
    return requested.find(fmt::format(",{},", point)) != std::string::npos;
}

void maybe_inject_fault(std::string_view point) {
    if (fault_requested(point)) throw Error(fmt::format("injected fault at {} (INITLESS_TEST_FAULT)", point));
}

}  // namespace initless::sys
