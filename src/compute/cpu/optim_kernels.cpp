#include <algorithm>
#include <cmath>

#include "cpu/cpu_ops.h"
#include "cpu/fast_math.h"
#include "cpu/parallel.h"

namespace tern::cpu {
namespace {

// The segments cut into pieces of at most 32768 elements: the units the op threads share.
std::vector<ops::ParamSegment> split(const std::vector<ops::ParamSegment>& segments) {
  constexpr int64_t kPiece = 32768;
  std::vector<ops::ParamSegment> out;
  for (const auto& s : segments)
    for (int64_t at = 0; at < s.count; at += kPiece)
      out.push_back({s.offset + at, std::min(kPiece, s.count - at), s.decay});
  return out;
}

TERN_SIMD_CLONES void adamw_range(float* p, const float* g, float* m, float* v, int64_t n,
                                  const ops::AdamWHyper& h, float decay, float step_size,
                                  float inv_sqrt_bc2) {
  for (int64_t i = 0; i < n; ++i) {
    m[i] = h.beta1 * m[i] + (1.0f - h.beta1) * g[i];
    v[i] = h.beta2 * v[i] + (1.0f - h.beta2) * g[i] * g[i];
    const float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + h.eps;
    p[i] = p[i] * decay - step_size * m[i] / denom;
  }
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v,
                  const std::vector<ops::ParamSegment>& segments, const ops::AdamWHyper& h) {
  const float bc1 = 1.0f - static_cast<float>(std::pow(h.beta1, static_cast<double>(h.step)));
  const float bc2 = 1.0f - static_cast<float>(std::pow(h.beta2, static_cast<double>(h.step)));
  const float step_size = h.lr / bc1;
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  const std::vector<ops::ParamSegment> pieces = split(segments);
  parallel_for(static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      const ops::ParamSegment& seg = pieces[k];
      const float decay = seg.decay ? 1.0f - h.lr * h.weight_decay : 1.0f;
      adamw_range(p + seg.offset, g + seg.offset, m + seg.offset, v + seg.offset, seg.count, h,
                  decay, step_size, inv_sqrt_bc2);
    }
  });
}

void sgd_update(float* p, const float* g, float* vel,
                const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h) {
  for (const auto& seg : segments) {
    const float wd = seg.decay ? h.weight_decay : 0.0f;
    for (int64_t i = seg.offset, end = seg.offset + seg.count; i < end; ++i) {
      const float grad = g[i] + wd * p[i];
      if (h.momentum == 0.0f) {
        p[i] -= h.lr * grad;
        continue;
      }
      vel[i] = h.momentum * vel[i] + grad;
      p[i] -= h.lr * (h.nesterov ? grad + h.momentum * vel[i] : vel[i]);
    }
  }
}

}  // namespace tern::cpu
