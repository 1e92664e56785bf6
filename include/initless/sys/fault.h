// Test-only fault injection. The restore suite sets INITLESS_TEST_FAULT to a comma-separated list
// of points ("restore:prepare", "restore:tables", "restore:finish", "restore:kill-restorer",
// "restore:stub-op" (an op of the stub's table that fails), "checkpoint:function-exits"); the checkpoint and
// restore drivers ask fault_requested(point) at each and fail there (or kill what the point names), to show
// that every failure ends in bounded time with everything killed and reaped. Unset in production: then every
// call returns false. Any thread may call it (reads the environment once).
#pragma once

#include <string_view>

namespace initless::sys {

bool fault_requested(std::string_view point);

// Throws Error("injected fault at <point>") if that point was requested.
void maybe_inject_fault(std::string_view point);

}  // namespace initless::sys
