#pragma once
// Branch-free float exp and tanh for the CPU kernels' inner loops (GELU, attention's softmax).
#include <bit>
#include <cmath>
#include <cstdint>

namespace tern::cpu {

// exp(y) for y in [-88, 88]: y = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to
// r^7 (relative error under 2e-7), 2^k put straight into the exponent bits. No calls and no
// branches, so the loops around it vectorise (libm's expf/tanhf are scalar calls: GELU in a
// transformer spent half its time in them).
inline float exp_approx(float y) {
  y = y < -87.0f ? -87.0f : (y > 87.0f ? 87.0f : y);
  // Round y / ln 2 to the nearest integer by adding and removing 1.5 * 2^23.
  const float k = (y * 1.4426950408889634f + 12582912.0f) - 12582912.0f;
  const float r = y - k * 0.693145751953125f - k * 1.428606765330187e-06f;  // ln 2, split
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

// tanh(x): its odd Taylor series to x^9 below |x| = 0.25 (where 1 - 2 / (e^2x + 1) would lose
// digits to cancellation), that expression above it; relative error under 5e-7.
inline float tanh_approx(float x) {
  const float a = std::fabs(x), x2 = x * x;
  const float small =
      x * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835)))));
  const float large = std::copysign(1.0f - 2.0f / (exp_approx(2.0f * a) + 1.0f), x);
  return a < 0.25f ? small : large;
}

}  // namespace tern::cpu
