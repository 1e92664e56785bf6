// Wall-clock phase timing for the verbs' reports (milliseconds, monotonic clock).
#pragma once

#include <chrono>

namespace initless::cli {

class Stopwatch {
public:
    Stopwatch() : start_(std::chrono::steady_clock::now()) {}
    double lap_ms() {
        auto now = std::chrono::steady_clock::now();
        double ms = std::chrono::duration<double, std::milli>(now - start_).count();
        start_ = now;
        return ms;
    }

private:
    std::chrono::steady_clock::time_point start_;
};

}  // namespace initless::cli
