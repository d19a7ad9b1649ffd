// Batch normalisation on the CPU over x viewed as [n, c, s], sums in double (see ops.h).
#include "cpu/cpu_ops.h"

namespace tern::cpu {

void batchnorm_sums(const float* x, int64_t n, int64_t channels, int64_t s, double* sums) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const float* row = x + (i * channels + c) * s;
      double a = 0, b = 0;
      for (int64_t j = 0; j < s; ++j) a += row[j], b += double(row[j]) * row[j];
      sums[c] += a;
      sums[channels + c] += b;
    }
}

void batchnorm_forward(const float* x, const float* mean, const float* rstd, const float* gamma,
                       const float* beta, float* y, int64_t n, int64_t channels, int64_t s) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * s;
      const float k = rstd[c] * gamma[c], off = beta[c] - mean[c] * k;
      for (int64_t j = 0; j < s; ++j) y[base + j] = x[base + j] * k + off;
    }
}

void batchnorm_backward_sums(const float* dy, const float* x, const float* mean, const float* rstd,
                             float* dgamma, float* dbeta, int64_t n, int64_t channels, int64_t s,
                             double* sums) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * s;
      const float mu = mean[c], rs = rstd[c];
      double a = 0, b = 0;
      for (int64_t j = 0; j < s; ++j)
        a += dy[base + j], b += double(dy[base + j]) * (x[base + j] - mu) * rs;
      sums[c] += a;
      sums[channels + c] += b;
    }
  for (int64_t c = 0; c < channels; ++c) {
    dbeta[c] += static_cast<float>(sums[c]);
    dgamma[c] += static_cast<float>(sums[channels + c]);
  }
}

void batchnorm_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                        const float* gamma, const double* sums, double count, float* dx, int64_t n,
                        int64_t channels, int64_t s) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * s;
      const float mu = mean[c], rs = rstd[c];
      const float k = gamma[c] * rs;
      const float m1 = static_cast<float>(sums[c] / count);
      const float m2 = static_cast<float>(sums[channels + c] / count);
      for (int64_t j = 0; j < s; ++j)
        dx[base + j] = k * (dy[base + j] - m1 - (x[base + j] - mu) * rs * m2);
    }
}

}  // namespace tern::cpu
