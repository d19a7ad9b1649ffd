// Causal self-attention on the CPU: the reference the fused GPU kernel is checked against.
// Probabilities are recomputed from each query's log-sum-exp in backward, as the GPU kernel does,
// so no T x T matrix outlives a query row.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/cpu_ops.h"

namespace tern::cpu {
namespace {

// Element (n, t, head h, j) of a [N, T, heads * d] tensor.
inline int64_t at(const AttentionDims& a, int64_t n, int64_t t, int64_t h) {
  return ((n * a.t + t) * a.heads + h) * a.d;
}

float dot(const float* x, const float* y, int64_t d) {
  float s = 0.0f;
  for (int64_t j = 0; j < d; ++j) s += x[j] * y[j];
  return s;
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, float* out, float* lse,
                       const AttentionDims& a) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.d));
  std::vector<float> p(static_cast<size_t>(a.t));
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t h = 0; h < a.heads; ++h)
      for (int64_t t = 0; t < a.t; ++t) {
        const float* qt = q + at(a, n, t, h);
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t s = 0; s <= t; ++s) {
          p[s] = dot(qt, k + at(a, n, s, h), a.d) * scale;
          m = std::max(m, p[s]);
        }
        double sum = 0;
        for (int64_t s = 0; s <= t; ++s) sum += std::exp(static_cast<double>(p[s] - m));
        const float l = m + static_cast<float>(std::log(sum));
        lse[(n * a.heads + h) * a.t + t] = l;
        float* o = out + at(a, n, t, h);
        std::memset(o, 0, sizeof(float) * a.d);
        for (int64_t s = 0; s <= t; ++s) {
          const float w = std::exp(p[s] - l);
          const float* vs = v + at(a, n, s, h);
          for (int64_t j = 0; j < a.d; ++j) o[j] += w * vs[j];
        }
      }
}

void attention_backward(const float* q, const float* k, const float* v, const float* out,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv,
                        const AttentionDims& a) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.d));
  const size_t total = static_cast<size_t>(a.n * a.t * a.heads * a.d);
  std::memset(dq, 0, sizeof(float) * total);
  std::memset(dk, 0, sizeof(float) * total);
  std::memset(dv, 0, sizeof(float) * total);
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t h = 0; h < a.heads; ++h)
      for (int64_t t = 0; t < a.t; ++t) {
        const float* qt = q + at(a, n, t, h);
        const float* dot_ = dout + at(a, n, t, h);
        const float l = lse[(n * a.heads + h) * a.t + t];
        // D_t = dout_t . out_t = sum_s p_ts (dout_t . v_s)
        const float delta = dot(dot_, out + at(a, n, t, h), a.d);
        float* dqt = dq + at(a, n, t, h);
        for (int64_t s = 0; s <= t; ++s) {
          const float* ks = k + at(a, n, s, h);
          const float* vs = v + at(a, n, s, h);
          const float p = std::exp(dot(qt, ks, a.d) * scale - l);
          const float ds = p * (dot(dot_, vs, a.d) - delta) * scale;
          float* dks = dk + at(a, n, s, h);
          float* dvs = dv + at(a, n, s, h);
          for (int64_t j = 0; j < a.d; ++j) {
            dvs[j] += p * dot_[j];
            dqt[j] += ds * ks[j];
            dks[j] += ds * qt[j];
          }
        }
      }
}

}  // namespace tern::cpu
