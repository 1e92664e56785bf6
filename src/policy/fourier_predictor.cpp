#include "initless/policy/fourier_predictor.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "initless/sys/error.h"

namespace initless::policy {

void fft(std::vector<std::complex<double>>& x) {
    const std::size_t n = x.size();
    if (n == 0 || (n & (n - 1)) != 0)
        throw Error("fft: size " + std::to_string(n) + " is not a power of two");
    for (std::size_t i = 1, j = 0; i < n; ++i) {
        std::size_t bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) std::swap(x[i], x[j]);
    }
    for (std::size_t len = 2; len <= n; len <<= 1) {
        double angle = -2 * std::numbers::pi / static_cast<double>(len);
        std::complex<double> step(std::cos(angle), std::sin(angle));
        for (std::size_t i = 0; i < n; i += len) {
            std::complex<double> w(1);
            for (std::size_t k = 0; k < len / 2; ++k) {
                auto u = x[i + k];
                auto v = x[i + k + len / 2] * w;
                x[i + k] = u + v;
                x[i + k + len / 2] = u - v;
                w *= step;
            }
        }
    }
}

std::vector<std::complex<double>> naive_dft(const std::vector<std::complex<double>>& x) {
    const std::size_t n = x.size();
    std::vector<std::complex<double>> out(n);
    for (std::size_t k = 0; k < n; ++k)
        for (std::size_t t = 0; t < n; ++t)
            out[k] += x[t] * std::polar(1.0, -2 * std::numbers::pi * static_cast<double>(k * t % n) /
                                                 static_cast<double>(n));
    return out;
}

QuadraticTrend fit_quadratic(const std::vector<double>& y) {
    const std::size_t n = y.size();
    if (n == 0) return {};
    if (n < 3) {
        double mean = 0;
        for (double v : y) mean += v;
        return {0, 0, mean / static_cast<double>(n)};
    }
    // Normal equations for [c b a] with sums of t^k; t is centred to keep them well conditioned.
    double mid = (static_cast<double>(n) - 1) / 2;
    double s[5] = {}, r[3] = {};
    for (std::size_t i = 0; i < n; ++i) {
        double t = static_cast<double>(i) - mid, p = 1;
        for (int k = 0; k < 5; ++k) {
            s[k] += p;
            if (k < 3) r[k] += p * y[i];
            p *= t;
        }
    }
    double m[3][4] = {{s[0], s[1], s[2], r[0]}, {s[1], s[2], s[3], r[1]}, {s[2], s[3], s[4], r[2]}};
    for (int col = 0; col < 3; ++col) {
        int pivot = col;
        for (int row = col + 1; row < 3; ++row)
            if (std::abs(m[row][col]) > std::abs(m[pivot][col])) pivot = row;
        std::swap(m[col], m[pivot]);
        if (std::abs(m[col][col]) < 1e-12) return {0, 0, r[0] / s[0]};
        for (int row = 0; row < 3; ++row) {
            if (row == col) continue;
            double f = m[row][col] / m[col][col];
            for (int k = col; k < 4; ++k) m[row][k] -= f * m[col][k];
        }
    }
    double cc = m[0][3] / m[0][0], bc = m[1][3] / m[1][1], ac = m[2][3] / m[2][2];
    // Back from centred t' = t - mid.
    return {ac, bc - 2 * ac * mid, ac * mid * mid - bc * mid + cc};
}

double FourierPredictor::predict_next(const std::vector<double>& window) const {
    const std::size_t n = window.size();
    double peak = 0;
    for (double v : window) peak = std::max(peak, v);
    if (peak == 0) return 0;
    auto trend = fit_quadratic(window);
    std::vector<std::complex<double>> spectrum(n);
    for (std::size_t t = 0; t < n; ++t) spectrum[t] = window[t] - trend.at(static_cast<double>(t));
    fft(spectrum);
    // Strongest bins among 1..n/2 (bin 0 is what the trend already explains).
    std::vector<std::size_t> bins;
    for (std::size_t k = 1; k <= n / 2; ++k) bins.push_back(k);
    std::size_t keep = std::min(harmonics_, bins.size());
    std::partial_sort(
        bins.begin(), bins.begin() + static_cast<std::ptrdiff_t>(keep), bins.end(),
        [&](std::size_t a, std::size_t b) { return std::abs(spectrum[a]) > std::abs(spectrum[b]); });
    double t = static_cast<double>(n);
    double value = trend.at(t);
    for (std::size_t i = 0; i < keep; ++i) {
        std::size_t k = bins[i];
        double scale = (k == n / 2 ? 1.0 : 2.0) / static_cast<double>(n);
        value += scale * std::abs(spectrum[k]) *
                 std::cos(2 * std::numbers::pi * static_cast<double>(k) * t / static_cast<double>(n) +
                          std::arg(spectrum[k]));
    }
    return std::clamp(value, 0.0, 2 * peak);
}

}  // namespace initless::policy
