// IceBreaker's function invocation predictor (Roy, Patel and Tiwari, ASPLOS'22): over a local window of
// per-minute values, fit a quadratic trend a t^2 + b t + c by least squares, take the FFT of what the
// trend leaves, keep the strongest harmonics, and extrapolate trend plus harmonics one step ahead.
// The FFT is a small radix-2 one written here (no FFT library in the project).
#pragma once

#include <complex>
#include <cstddef>
#include <vector>

namespace initless::policy {

// In-place radix-2 FFT (forward, no scaling). Throws initless::Error unless the size is a power of two.
void fft(std::vector<std::complex<double>>& x);
// Direct O(n^2) DFT with the same convention, for checking fft().
std::vector<std::complex<double>> naive_dft(const std::vector<std::complex<double>>& x);

struct QuadraticTrend {
    double a = 0, b = 0, c = 0;
    double at(double t) const { return (a * t + b) * t + c; }
};
// Least-squares quadratic through (t, y[t]) for t = 0..n-1 (linear or constant when n is too small).
QuadraticTrend fit_quadratic(const std::vector<double>& y);

class FourierPredictor {
  public:
    // `harmonics`: how many of the strongest frequency bins to keep.
    explicit FourierPredictor(std::size_t harmonics = 3) : harmonics_(harmonics) {}
    // Predicts the value right after the window (t = window.size()); window.size() must be a power of
    // two. The result is clamped to [0, 2 * max(window)]: a quadratic runs away when extrapolated.
    double predict_next(const std::vector<double>& window) const;

  private:
    std::size_t harmonics_;
};

}  // namespace initless::policy
