// Wall-clock phase timing (milliseconds, monotonic clock), for reports of where time went.
#pragma once

#include <chrono>

namespace initless::sys {

class Stopwatch {
  public:
    Stopwatch() : start_(std::chrono::steady_clock::now()) {}
    // Milliseconds since construction or the previous lap.
    double lap_ms() {
        auto now = std::chrono::steady_clock::now();
        double ms = std::chrono::duration<double, std::milli>(now - start_).count();
        start_ = now;
        return ms;
    }

  private:
    std::chrono::steady_clock::time_point start_;
};

}  // namespace initless::sys
