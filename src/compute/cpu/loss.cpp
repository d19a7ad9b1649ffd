#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu/cpu_ops.h"

namespace tern::cpu {

ops::LossStats softmax_cross_entropy(const float* logits, const int32_t* labels, float* dlogits,
                                     float grad_scale, int64_t rows, int64_t classes) {
  ops::LossStats stats;
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * classes;
    const int32_t label = labels[r];
    if (label < 0 || label >= classes)
      throw std::out_of_range("softmax_cross_entropy: row " + std::to_string(r) + " has label " +
                              std::to_string(label) + ", outside [0, " + std::to_string(classes) +
                              ")");
    float zmax = z[0];
    int64_t argmax = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (z[c] > zmax) zmax = z[c], argmax = c;
    double denom = 0;
    for (int64_t c = 0; c < classes; ++c) denom += std::exp(static_cast<double>(z[c] - zmax));
    const double log_denom = std::log(denom);
    stats.loss_sum += log_denom - (z[label] - zmax);
    stats.correct += argmax == label;
    if (dlogits) {
      float* d = dlogits + r * classes;
      const double inv = 1.0 / denom;
      for (int64_t c = 0; c < classes; ++c)
        d[c] = grad_scale * static_cast<float>(std::exp(static_cast<double>(z[c] - zmax)) * inv -
                                               (c == label ? 1.0 : 0.0));
    }
  }
  return stats;
}

ops::LossStats mean_squared_error(const float* pred, const float* target, float* dpred,
                                  float grad_scale, int64_t rows, int64_t cols) {
  ops::LossStats stats;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int64_t r = 0; r < rows; ++r) {
    double row_sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const float diff = pred[i] - target[i];
      row_sum += static_cast<double>(diff) * diff;
      if (dpred) dpred[i] = grad_scale * 2.0f * diff * inv_cols;
    }
    stats.loss_sum += row_sum / cols;
  }
  return stats;
}

}  // namespace tern::cpu
