#include <cmath>
#include <cstring>

#include "cpu/cpu_ops.h"

namespace tern::cpu {

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t cols, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
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
}

void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t rows,
                        int64_t cols, bool accumulate) {
  if (!accumulate) {
    std::memset(dgamma, 0, sizeof(float) * cols);
    std::memset(dbeta, 0, sizeof(float) * cols);
  }
  for (int64_t r = 0; r < rows; ++r) {
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
      dgamma[c] += g[c] * xhat;
      dbeta[c] += g[c];
    }
    const float m1 = static_cast<float>(sum_dxhat / cols);
    const float m2 = static_cast<float>(sum_dxhat_xhat / cols);
    for (int64_t c = 0; c < cols; ++c) {
      float xhat = (in[c] - mu) * rs;
      out[c] = rs * (g[c] * gamma[c] - m1 - xhat * m2);
    }
  }
}

}  // namespace tern::cpu
