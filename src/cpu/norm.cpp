#include <cmath>
#include <cstring>

#include "cpu/cpu_ops.h"
#include "cpu/parallel.h"

namespace tern::cpu {

// Rows of a layer norm per piece of work on the op threads.
constexpr int64_t kRowGrain = 32;

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t cols, float eps) {
  parallel_for(rows, kRowGrain, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const float* in = x + r * cols;
      float* out = y + r * cols;
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += in[c];
      const float mu = static_cast<float>(sum / cols);
      double var = 0;
      for (int64_t c = 0; c < cols; ++c) {
        float d = in[c] - mu;
        var += static_cast<double>(d) * d;
      }
      const float rs = 1.0f / std::sqrt(static_cast<float>(var / cols) + eps);
      for (int64_t c = 0; c < cols; ++c) out[c] = (in[c] - mu) * rs * gamma[c] + beta[c];
      mean[r] = mu;
      rstd[r] = rs;
    }
  });
}

void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t rows,
                        int64_t cols, bool accumulate) {
  // dx row by row (rows are independent); then dgamma and dbeta column by column, each
  // summing the rows in order, so the result does not depend on the number of threads.
  parallel_for(rows, kRowGrain, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const float* g = dy + r * cols;
      const float* in = x + r * cols;
      float* out = dx + r * cols;
      const float mu = mean[r], rs = rstd[r];
      // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma
      double sum_dxhat = 0, sum_dxhat_xhat = 0;
      for (int64_t c = 0; c < cols; ++c) {
        float xhat = (in[c] - mu) * rs;
        float dxhat = g[c] * gamma[c];
        sum_dxhat += dxhat;
        sum_dxhat_xhat += static_cast<double>(dxhat) * xhat;
      }
      const float m1 = static_cast<float>(sum_dxhat / cols);
      const float m2 = static_cast<float>(sum_dxhat_xhat / cols);
      for (int64_t c = 0; c < cols; ++c) {
        float xhat = (in[c] - mu) * rs;
        out[c] = rs * (g[c] * gamma[c] - m1 - xhat * m2);
      }
    }
  });
  parallel_for(cols, 16, [&](int64_t first, int64_t last) {
    if (!accumulate) {
      std::memset(dgamma + first, 0, sizeof(float) * (last - first));
      std::memset(dbeta + first, 0, sizeof(float) * (last - first));
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = dy + r * cols;
      const float* in = x + r * cols;
      const float mu = mean[r], rs = rstd[r];
      for (int64_t c = first; c < last; ++c) {
        dgamma[c] += g[c] * ((in[c] - mu) * rs);
        dbeta[c] += g[c];
      }
    }
  });
}

}  // namespace tern::cpu
