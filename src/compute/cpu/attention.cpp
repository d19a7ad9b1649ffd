// Causal self-attention on the CPU: the reference the fused GPU kernel is checked against.
// Per (sample, head) the scores S = Q K^T / sqrt(d) are one OpenBLAS GEMM over strided views of
// the packed qkv tensor, the masked softmax runs row by row in
// float with the log-sum-exp saved, and P V is another GEMM. Backward recomputes P from the
// log-sum-exp (as the GPU kernel does) and uses four more GEMMs.
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"

namespace tern::cpu {
namespace {

// Offsets of head h of sample n: in qkv [N, T, 3C] (q at +0, k at +C, v at +2C, row stride 3C)
// and in out [N, T, C] (row stride C).
inline int64_t head_in(const AttentionDims& a, int64_t n, int64_t h) {
  return n * a.t * 3 * a.heads * a.d + h * a.d;
}
inline int64_t head_out(const AttentionDims& a, int64_t n, int64_t h) {
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
TERN_SIMD_CLONES void probabilities(float* p, const float* lse, int64_t t_len) {
  for (int64_t t = 0; t < t_len; ++t) {
    float* row = p + t * t_len;
    for (int64_t s = 0; s <= t; ++s) row[s] = exp_approx(row[s] - lse[t]);
    for (int64_t s = t + 1; s < t_len; ++s) row[s] = 0.0f;
  }
}

// lse[t] = log sum over s <= t of exp(scores[t, s]), each row from its maximum.
TERN_SIMD_CLONES void log_sum_exp(const float* p, float* lse, int64_t t_len) {
  for (int64_t t = 0; t < t_len; ++t) {
    const float* row = p + t * t_len;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s <= t; ++s) m = std::max(m, row[s]);
    lse[t] = m + std::log(lane_sum(t + 1, [&](int64_t s) { return exp_approx(row[s] - m); }));
  }
}

// dS = P * (dP - D) * scale in place of dP, D_t = dO_t . O_t.
TERN_SIMD_CLONES void score_grads(float* dp, const float* p, const float* go, const float* o,
                                  int64_t t_len, int64_t d, int64_t c, float scale) {
  for (int64_t t = 0; t < t_len; ++t) {
    const float delta = lane_sum(d, [&](int64_t j) { return go[t * c + j] * o[t * c + j]; });
    float* row = dp + t * t_len;
    const float* pr = p + t * t_len;
    for (int64_t s = 0; s < t_len; ++s) row[s] = pr[s] * (row[s] - delta) * scale;
  }
}

// T x T scratch for one (sample, head) at a time, per thread.
float* scores(std::vector<float>& v, int64_t t) {
  if (v.size() < static_cast<size_t>(t * t)) v.resize(static_cast<size_t>(t * t));
  return v.data();
}

}  // namespace

// Every (sample, head) is independent: they are spread over the op threads.
void attention_forward(const float* qkv, float* out, float* lse, const AttentionDims& a) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.d));
  const int64_t c = a.heads * a.d, ld = 3 * c, T = a.t;
  parallel_for(a.n * a.heads, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer;
    float* p = scores(buffer, T);
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / a.heads, h = nh % a.heads;
      const float* q = qkv + head_in(a, n, h);
      const float *k = q + c, *v = q + 2 * c;
      gemm(false, true, T, T, a.d, scale, q, ld, k, ld, 0.0f, p, T);
      float* l = lse + (n * a.heads + h) * T;
      log_sum_exp(p, l, T);
      probabilities(p, l, T);
      gemm(false, false, T, a.d, T, 1.0f, p, T, v, ld, 0.0f, out + head_out(a, n, h), c);
    }
  });
}

void attention_backward(const float* qkv, const float* out, const float* dout, const float* lse,
                        float* dqkv, const AttentionDims& a) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.d));
  const int64_t c = a.heads * a.d, ld = 3 * c, T = a.t;
  parallel_for(a.n * a.heads, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer, dbuffer;
    float* p = scores(buffer, T);
    float* dp = scores(dbuffer, T);
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / a.heads, h = nh % a.heads;
      const float* q = qkv + head_in(a, n, h);
      const float *k = q + c, *v = q + 2 * c;
      float* dq = dqkv + head_in(a, n, h);
      float *dk = dq + c, *dv = dq + 2 * c;
      const float* go = dout + head_out(a, n, h);
      const float* o = out + head_out(a, n, h);
      gemm(false, true, T, T, a.d, scale, q, ld, k, ld, 0.0f, p, T);
      probabilities(p, lse + (n * a.heads + h) * T, T);
      // dV = P^T dO; dP = dO V^T
      gemm(true, false, T, a.d, T, 1.0f, p, T, go, c, 0.0f, dv, ld);
      gemm(false, true, T, T, a.d, 1.0f, go, c, v, ld, 0.0f, dp, T);
      score_grads(dp, p, go, o, T, a.d, c, scale);
      // dQ = dS K; dK = dS^T Q
      gemm(false, false, T, a.d, T, 1.0f, dp, T, k, ld, 0.0f, dq, ld);
      gemm(true, false, T, a.d, T, 1.0f, dp, T, q, ld, 0.0f, dk, ld);
    }
  });
}

}  // namespace tern::cpu
