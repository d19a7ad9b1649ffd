#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "tern/compute/tensor.h"

namespace tern::testing {

inline Tensor random_tensor(Shape shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

inline Tensor copy_of(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  std::copy_n(static_cast<const char*>(t.raw()), t.nbytes(), static_cast<char*>(out.raw()));
  return out;
}

// Central difference of loss() in the element v, with step 1e-2 (f32 forward passes).
template <class Loss>
double numeric_grad(float& v, const Loss& loss) {
  constexpr float kEps = 1e-2f;
  const float saved = v;
  v = saved + kEps;
  const double lp = loss();
  v = saved - kEps;
  const double lm = loss();
  v = saved;
  return (lp - lm) / (2 * kEps);
}

// Relative error that tolerates tiny gradients.
inline double rel_err(double a, double b) {
  return std::abs(a - b) / std::max(1e-2, std::abs(a) + std::abs(b));
}

// A fresh temporary path for a file a test writes.
std::string temp_path(const std::string& name);

}  // namespace tern::testing
