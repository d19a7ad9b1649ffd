#pragma once
#include <cstdint>
#include <string>

#include "tern/compute/tensor.h"
#include "tern/nn/model.h"

namespace tern {

struct OptimConfig {
  std::string name = "adamw";  // adamw | sgd
  float lr = 1e-3f;
  float weight_decay = 0.01f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float momentum = 0.9f;
  bool nesterov = false;
  std::string schedule = "cosine";  // cosine | linear | constant
  int64_t warmup_steps = 0;
  float min_lr_ratio = 0.0f;  // the schedule decays to lr * min_lr_ratio
  float clip_norm = 0.0f;     // global gradient norm limit; 0 = off
};

// Learning rate at a 0-based step: linear warmup from lr/warmup to lr, then decay to
// lr * min_lr_ratio at the last step.
float learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps);

// SGD with momentum or AdamW, one fused pass over the model's flat buffers. Its state (momenta)
// has the layout of the parameters.
class Optimizer {
 public:
  // State lives on `dev`, beside the parameters.
  Optimizer(const OptimConfig& cfg, int64_t total_steps, int64_t num_params, Device dev = {});
  struct StepStats {
    float lr = 0;
    double grad_norm = 0;  // before clipping
  };
  // Clips the (already averaged) gradients and applies update number `step` (0-based).
  StepStats step(Model& model, int64_t step);
  Tensor& state_a() { return state_a_; }
  Tensor& state_b() { return state_b_; }

 private:
  OptimConfig cfg_;
  int64_t total_steps_;
  Tensor state_a_, state_b_;  // adamw: m, v; sgd: velocity, unused
};

}  // namespace tern
