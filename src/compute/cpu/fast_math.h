#pragma once
// Branch-free float exp and tanh for the CPU kernels' inner loops (GELU, attention's softmax).
#include <bit>
#include <cmath>
#include <cstdint>

// Hot loops are also compiled for AVX-512 and AVX2 (x86-64-v4, -v3) besides the x86-64-v2
// baseline, and the loader picks the widest the CPU has (GCC's target_clones): one binary runs on
// any x86-64 machine and uses its vectors. A clone may contract a * b + c into an FMA, so results
// can differ in the last bit between machines, never between runs on one machine.
// ThreadSanitizer builds take the baseline only: the clones' ifunc resolvers run during
// relocation, before the sanitizer's runtime is up, and its instrumentation crashes them.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define TERN_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TERN_SIMD_CLONES
#endif

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

// sum of f(i) for i in [0, n), in 16 interleaved float lanes combined in a fixed order: unlike a
// running sum, the compiler may keep the lanes in one vector register; the result depends only
// on n and the values (not on threads or the machine's vector width).
template <class F>
inline float lane_sum(int64_t n, F f) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += f(i + j);
  float tail = 0.0f;
  for (; i < n; ++i) tail += f(i);
  for (int width = 8; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  return acc[0] + tail;
}

}  // namespace tern::cpu
