#include "tern/nn/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>

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

Optimizer::Optimizer(const OptimConfig& cfg, int64_t total_steps, int64_t num_params, Device dev)
    : cfg_(cfg), total_steps_(total_steps) {
  state_a_ = Tensor::zeros({num_params}, DType::f32, dev);
  state_b_ = Tensor::zeros({cfg.name == "adamw" ? num_params : 0}, DType::f32, dev);
}

Optimizer::StepStats Optimizer::step(Model& model, int64_t step) {
  StepStats stats;
  stats.lr = learning_rate(cfg_, step, total_steps_);
  Tensor& grads = model.grads();
  stats.grad_norm = std::sqrt(ops::sum_squares(grads));
  if (cfg_.clip_norm > 0 && stats.grad_norm > cfg_.clip_norm)
    ops::scale(grads, static_cast<float>(cfg_.clip_norm / (stats.grad_norm + 1e-6)));
  if (cfg_.name == "adamw") {
    ops::adamw_update(model.params(), grads, state_a_, state_b_, model.segments(),
                      {stats.lr, cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, step + 1},
                      model.compute_params());
  } else {
    ops::sgd_update(model.params(), grads, state_a_, model.segments(),
                    {stats.lr, cfg_.momentum, cfg_.weight_decay, cfg_.nesterov},
                    model.compute_params());
  }
  return stats;
}

}  // namespace tern
