// Causal self-attention on the CPU: the reference the fused GPU kernel is checked against.
// Per (sample, head) the scores S = Q K^T / sqrt(d) are one OpenBLAS GEMM over strided views of
// the [N, T, heads * d] tensors (row stride heads * d), the masked softmax runs row by row in
// float with the log-sum-exp saved, and P V is another GEMM. Backward recomputes P from the
// log-sum-exp (as the GPU kernel does) and uses four more GEMMs.
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/cpu_ops.h"

namespace tern::cpu {
namespace {

// Offset of head h of sample n in a [N, T, heads * d] tensor (row stride heads * d).
inline int64_t head(const AttentionDims& a, int64_t n, int64_t h) {
  return n * a.t * a.heads * a.d + h * a.d;
}

// c[m, n] = alpha * op(a) op(b) + beta * c, row-major with explicit leading dimensions.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// p[t, s] = exp(scores[t, s] - lse[t]) for s <= t, 0 above the diagonal.
void probabilities(float* p, const float* lse, int64_t t_len) {
  for (int64_t t = 0; t < t_len; ++t) {
    float* row = p + t * t_len;
    for (int64_t s = 0; s <= t; ++s) row[s] = std::exp(row[s] - lse[t]);
    for (int64_t s = t + 1; s < t_len; ++s) row[s] = 0.0f;
  }
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, float* out, float* lse,
                       const AttentionDims& a) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.d));
  const int64_t ld = a.heads * a.d, T = a.t;
  std::vector<float> p(static_cast<size_t>(T * T));
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t o = head(a, n, h);
      gemm(false, true, T, T, a.d, scale, q + o, ld, k + o, ld, 0.0f, p.data(), T);
      float* l = lse + (n * a.heads + h) * T;
      for (int64_t t = 0; t < T; ++t) {
        const float* row = p.data() + t * T;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t s = 0; s <= t; ++s) m = std::max(m, row[s]);
        double sum = 0;
        for (int64_t s = 0; s <= t; ++s) sum += std::exp(static_cast<double>(row[s] - m));
        l[t] = m + static_cast<float>(std::log(sum));
      }
      probabilities(p.data(), l, T);
      gemm(false, false, T, a.d, T, 1.0f, p.data(), T, v + o, ld, 0.0f, out + o, ld);
    }
}

void attention_backward(const float* q, const float* k, const float* v, const float* out,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv,
                        const AttentionDims& a) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.d));
  const int64_t ld = a.heads * a.d, T = a.t;
  std::vector<float> p(static_cast<size_t>(T * T)), dp(static_cast<size_t>(T * T));
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t o = head(a, n, h);
      gemm(false, true, T, T, a.d, scale, q + o, ld, k + o, ld, 0.0f, p.data(), T);
      probabilities(p.data(), lse + (n * a.heads + h) * T, T);
      // dV = P^T dO; dP = dO V^T
      gemm(true, false, T, a.d, T, 1.0f, p.data(), T, dout + o, ld, 0.0f, dv + o, ld);
      gemm(false, true, T, T, a.d, 1.0f, dout + o, ld, v + o, ld, 0.0f, dp.data(), T);
      // dS = P * (dP - D) * scale, D_t = dO_t . O_t
      for (int64_t t = 0; t < T; ++t) {
        const float* go = dout + o + t * ld;
        const float* oo = out + o + t * ld;
        float delta = 0.0f;
        for (int64_t j = 0; j < a.d; ++j) delta += go[j] * oo[j];
        float* row = dp.data() + t * T;
        const float* pr = p.data() + t * T;
        for (int64_t s = 0; s < T; ++s) row[s] = pr[s] * (row[s] - delta) * scale;
      }
      // dQ = dS K; dK = dS^T Q
      gemm(false, false, T, a.d, T, 1.0f, dp.data(), T, k + o, ld, 0.0f, dq + o, ld);
      gemm(true, false, T, a.d, T, 1.0f, dp.data(), T, q + o, ld, 0.0f, dk + o, ld);
    }
}

}  // namespace tern::cpu
