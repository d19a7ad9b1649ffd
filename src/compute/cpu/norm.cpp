#include <cmath>
#include <cstring>

#include "cpu/cpu_ops.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"

namespace tern::cpu {
namespace {

// Rows of a layer norm per piece of work on the op threads.
constexpr int64_t kRowGrain = 32;

TERN_SIMD_CLONES void forward_rows(const float* x, const float* gamma, const float* beta, float* y,
                                   float* mean, float* rstd, int64_t first, int64_t last,
                                   int64_t cols, float eps) {
  for (int64_t r = first; r < last; ++r) {
    const float* in = x + r * cols;
    float* out = y + r * cols;
    const float mu = lane_sum(cols, [&](int64_t c) { return in[c]; }) / static_cast<float>(cols);
    const float var = lane_sum(cols, [&](int64_t c) { return (in[c] - mu) * (in[c] - mu); });
    const float rs = 1.0f / std::sqrt(var / static_cast<float>(cols) + eps);
    for (int64_t c = 0; c < cols; ++c) out[c] = (in[c] - mu) * rs * gamma[c] + beta[c];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma
TERN_SIMD_CLONES void dx_rows(const float* dy, const float* x, const float* gamma,
                              const float* mean, const float* rstd, float* dx, int64_t first,
                              int64_t last, int64_t cols) {
  for (int64_t r = first; r < last; ++r) {
    const float* g = dy + r * cols;
    const float* in = x + r * cols;
    float* out = dx + r * cols;
    const float mu = mean[r], rs = rstd[r];
    const float m1 =
        lane_sum(cols, [&](int64_t c) { return g[c] * gamma[c]; }) / static_cast<float>(cols);
    const float m2 =
        lane_sum(cols, [&](int64_t c) { return g[c] * gamma[c] * ((in[c] - mu) * rs); }) /
        static_cast<float>(cols);
    for (int64_t c = 0; c < cols; ++c) {
      float xhat = (in[c] - mu) * rs;
      out[c] = rs * (g[c] * gamma[c] - m1 - xhat * m2);
    }
  }
}

// Columns [first, last) of dgamma and dbeta, summing the rows in order.
TERN_SIMD_CLONES void param_grad_columns(const float* dy, const float* x, const float* mean,
                                         const float* rstd, float* dgamma, float* dbeta,
                                         int64_t rows, int64_t cols, int64_t first, int64_t last) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dy + r * cols;
    const float* in = x + r * cols;
    const float mu = mean[r], rs = rstd[r];
    for (int64_t c = first; c < last; ++c) {
      dgamma[c] += g[c] * ((in[c] - mu) * rs);
      dbeta[c] += g[c];
    }
  }
}

}  // namespace

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t cols, float eps) {
  parallel_for(rows, kRowGrain, [&](int64_t first, int64_t last) {
    forward_rows(x, gamma, beta, y, mean, rstd, first, last, cols, eps);
  });
}

void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t rows,
                        int64_t cols, bool accumulate) {
  // dx row by row (rows are independent); then dgamma and dbeta column by column, each
  // summing the rows in order, so the result does not depend on the number of threads.
  parallel_for(rows, kRowGrain, [&](int64_t first, int64_t last) {
    dx_rows(dy, x, gamma, mean, rstd, dx, first, last, cols);
  });
  parallel_for(cols, 16, [&](int64_t first, int64_t last) {
    if (!accumulate) {
      std::memset(dgamma + first, 0, sizeof(float) * (last - first));
      std::memset(dbeta + first, 0, sizeof(float) * (last - first));
    }
    param_grad_columns(dy, x, mean, rstd, dgamma, dbeta, rows, cols, first, last);
  });
}

}  // namespace tern::cpu
