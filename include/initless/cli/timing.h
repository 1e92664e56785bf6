// Phase timing for the verbs' reports: the sys Stopwatch.
#pragma once

#include "initless/sys/stopwatch.h"

namespace initless::cli {
using sys::Stopwatch;
}  // namespace initless::cli
