#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/cpu_ops.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"
#include "tern/compute/philox.h"

namespace tern::cpu {
namespace {

// GELU with the tanh approximation (GPT-2's, PyTorch's approximate="tanh").
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

}  // namespace

void add_bias(float* y, const float* bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = y + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

void bias_grad(const float* dy, float* dbias, int64_t rows, int64_t cols, bool accumulate) {
  if (!accumulate) std::memset(dbias, 0, sizeof(float) * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = dy + r * cols;
    for (int64_t c = 0; c < cols; ++c) dbias[c] += row[c];
  }
}

// Elementwise loops run over ranges of this many elements on the op threads.
constexpr int64_t kElementGrain = 16384;

namespace {

TERN_SIMD_CLONES void activation_forward_range(ops::Activation act, const float* x, float* y,
                                               int64_t n) {
  switch (act) {
    case ops::Activation::relu:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
      break;
    case ops::Activation::tanh:
      for (int64_t i = 0; i < n; ++i) y[i] = tanh_approx(x[i]);
      break;
    case ops::Activation::gelu:
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanh_approx(kGeluC * (v + kGeluA * v * v * v)));
      }
      break;
  }
}

TERN_SIMD_CLONES void activation_backward_range(ops::Activation act, const float* x,
                                                const float* dy, float* dx, int64_t n) {
  switch (act) {
    case ops::Activation::relu:
      // Both operands loaded before the select, so the loop vectorises instead of branching.
      for (int64_t i = 0; i < n; ++i) {
        const float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : 0.0f;
      }
      break;
    case ops::Activation::tanh:
      for (int64_t i = 0; i < n; ++i) {
        float t = tanh_approx(x[i]);
        dx[i] = dy[i] * (1.0f - t * t);
      }
      break;
    case ops::Activation::gelu:
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        float u = kGeluC * (v + kGeluA * v * v * v);
        float t = tanh_approx(u);
        float du = kGeluC * (1.0f + 3.0f * kGeluA * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
      }
      break;
  }
}

TERN_SIMD_CLONES void add_range(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace

void activation_forward(ops::Activation act, const float* x, float* y, int64_t count) {
  parallel_for(count, kElementGrain, [&](int64_t begin, int64_t end) {
    activation_forward_range(act, x + begin, y + begin, end - begin);
  });
}

void activation_backward(ops::Activation act, const float* x, const float* dy, float* dx,
                         int64_t count) {
  parallel_for(count, kElementGrain, [&](int64_t begin, int64_t end) {
    activation_backward_range(act, x + begin, dy + begin, dx + begin, end - begin);
  });
}

void add(const float* a, const float* b, float* out, int64_t count) {
  parallel_for(count, kElementGrain, [&](int64_t begin, int64_t end) {
    add_range(a + begin, b + begin, out + begin, end - begin);
  });
}

void dropout(const float* x, float* y, int64_t rows, int64_t cols, float p, ops::DropoutKey key) {
  const float keep_scale = 1.0f / (1.0f - p);
  const uint32_t k0 = static_cast<uint32_t>(key.seed);
  const uint32_t k1 = static_cast<uint32_t>(key.seed >> 32) ^ (key.stream * 0x85EBCA6Bu);
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t sample = static_cast<uint64_t>(key.first_sample + r);
    const float* in = x + r * cols;
    float* out = y + r * cols;
    for (int64_t c0 = 0; c0 < cols; c0 += 4) {
      Philox4 bits =
          philox4x32(Philox4{{static_cast<uint32_t>(sample), static_cast<uint32_t>(sample >> 32),
                              static_cast<uint32_t>(c0 / 4), 0u}},
                     k0, k1);
      for (int64_t j = 0; j < 4 && c0 + j < cols; ++j)
        out[c0 + j] = philox_uniform(bits.v[j]) < p ? 0.0f : in[c0 + j] * keep_scale;
    }
  }
}

double sum_squares(const float* x, int64_t n) {
  // Four partial sums keep the loop vectorisable while summing in double.
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (; i < n; ++i) s[0] += static_cast<double>(x[i]) * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

void scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace tern::cpu

namespace tern::cpu {

namespace {
// bf16 is the upper half of an f32; rounding to nearest even on the dropped half, NaN kept NaN.
uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
}  // namespace

void convert(const void* src, DType from, void* dst, DType to, int64_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * dtype_size(from));
  } else if (from == DType::f32 && to == DType::bf16) {
    auto* in = static_cast<const float*>(src);
    auto* out = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
  } else if (from == DType::bf16 && to == DType::f32) {
    auto* in = static_cast<const uint16_t*>(src);
    auto* out = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
  } else {
    throw std::invalid_argument(std::string("convert: ") + dtype_name(from) + " to " +
                                dtype_name(to) + " is not supported");
  }
}

}  // namespace tern::cpu
