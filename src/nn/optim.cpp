#include "tern/nn/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "tern/compute/ops.h"

namespace tern {

float learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps) {
  if (step < cfg.warmup_steps)
    return cfg.lr * static_cast<float>(step + 1) / static_cast<float>(cfg.warmup_steps);
  const float min_lr = cfg.lr * cfg.min_lr_ratio;
  const int64_t decay_steps = total_steps - cfg.warmup_steps;
  if (cfg.schedule == "constant" || decay_steps <= 1) return cfg.lr;
  const double progress =
      std::clamp(static_cast<double>(step - cfg.warmup_steps) / (decay_steps - 1), 0.0, 1.0);
  if (cfg.schedule == "linear") return cfg.lr + static_cast<float>(progress) * (min_lr - cfg.lr);
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return min_lr + static_cast<float>(cosine) * (cfg.lr - min_lr);
}

Optimizer::Optimizer(const OptimConfig& cfg, int64_t total_steps, int64_t state_numel, Device dev)
    : cfg_(cfg), total_steps_(total_steps) {
  state_a_ = Tensor::zeros({state_numel}, DType::f32, dev);
  state_b_ = Tensor::zeros({cfg.name == "adamw" ? state_numel : 0}, DType::f32, dev);
}

namespace {
// The segments within [first, last) of the flat buffer, relative to `first`.
std::vector<ops::ParamSegment> segments_within(const std::vector<ops::ParamSegment>& all,
                                               int64_t first, int64_t last) {
  std::vector<ops::ParamSegment> out;
  for (const ops::ParamSegment& s : all) {
    const int64_t lo = std::max(first, s.offset), hi = std::min(last, s.offset + s.count);
    if (lo < hi) out.push_back({lo - first, hi - lo, s.decay});
  }
  return out;
}
}  // namespace

Optimizer::StepStats Optimizer::start_step(Tensor& grads, int64_t step, double sum_sq) {
  StepStats stats;
  stats.lr = learning_rate(cfg_, step, total_steps_);
  stats.grad_norm = std::sqrt(sum_sq);
  if (cfg_.clip_norm > 0 && stats.grad_norm > cfg_.clip_norm)
    ops::scale(grads, static_cast<float>(cfg_.clip_norm / (stats.grad_norm + 1e-6)));
  return stats;
}

void Optimizer::update(Tensor& params, const Tensor& grads, Tensor& a, Tensor& b,
                       const std::vector<ops::ParamSegment>& segments, const StepStats& stats,
                       int64_t step, Tensor* shadow) {
  if (cfg_.name == "adamw") {
    ops::adamw_update(params, grads, a, b, segments,
                      {stats.lr, cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, step + 1},
                      shadow);
  } else {
    ops::sgd_update(params, grads, a, segments,
                    {stats.lr, cfg_.momentum, cfg_.weight_decay, cfg_.nesterov}, shadow);
  }
}

Optimizer::StepStats Optimizer::step(Model& model, int64_t step) {
  Tensor& grads = model.grads();
  const StepStats stats = start_step(grads, step, ops::sum_squares(grads));
  update(model.params(), grads, state_a_, state_b_, model.segments(), stats, step,
         model.compute_params());
  return stats;
}

Optimizer::StepStats Optimizer::step_slice(Model& model, Tensor& grads, int64_t begin, int64_t step,
                                           double global_sq, int num_chunks, int64_t chunk,
                                           const std::function<void(int)>& chunk_done) {
  const int64_t end = begin + grads.numel();
  if (state_a_.numel() != grads.numel() || end > model.params().numel())
    throw std::invalid_argument("Optimizer::step_slice: the slice does not fit the state");
  const StepStats stats = start_step(grads, step, global_sq);
  const bool adamw = cfg_.name == "adamw";
  for (int c = 0; c < num_chunks; ++c) {
    const int64_t first = std::min(end, begin + c * chunk), last = std::min(end, first + chunk);
    const auto segments = segments_within(model.segments(), first, last);
    if (!segments.empty()) {
      const int64_t at = first - begin, count = last - first;
      Tensor p = model.params().slice(first, {count});
      Tensor b = adamw ? state_b_.slice(at, {count}) : state_b_;
      Tensor a = state_a_.slice(at, {count});
      update(p, grads.slice(at, {count}), a, b, segments, stats, step, nullptr);
    }
    chunk_done(c);
  }
  return stats;
}

}  // namespace tern
