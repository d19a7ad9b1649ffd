#pragma once
#include <cstdint>
#include <functional>
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
// has the layout of the parameters, or of this rank's slice of them alone (ZeRO-1).
class Optimizer {
 public:
  // State lives on `dev`, beside the parameters; `state_numel` elements (the parameters', or the
  // slice's).
  Optimizer(const OptimConfig& cfg, int64_t total_steps, int64_t state_numel, Device dev = {});
  struct StepStats {
    float lr = 0;
    double grad_norm = 0;  // before clipping
  };
  // Clips the (already averaged) gradients and applies update number `step` (0-based).
  StepStats step(Model& model, int64_t step);
  // ZeRO-1: updates this rank's slice [begin, begin + grads.numel()) of the flat parameters,
  // whose averaged gradients are in `grads`, from state covering that slice alone. `global_sq` is
  // the sum of squared gradients over every rank's slice (the global norm, so clipping is the
  // same as unsharded). The slice goes in `num_chunks` chunks of `chunk` elements (the last ones
  // may be short or empty: every rank counts the same chunks), chunk_done(c) after each, so that
  // the caller can start gathering it; the compute copy of the parameters (bf16) is not written.
  StepStats step_slice(Model& model, Tensor& grads, int64_t begin, int64_t step, double global_sq,
                       int num_chunks, int64_t chunk, const std::function<void(int)>& chunk_done);
  Tensor& state_a() { return state_a_; }
  Tensor& state_b() { return state_b_; }

 private:
  // The learning rate, the norm from the sum of squares, and clipping applied to `grads`.
  StepStats start_step(Tensor& grads, int64_t step, double sum_sq);
  void update(Tensor& params, const Tensor& grads, Tensor& a, Tensor& b,
              const std::vector<ops::ParamSegment>& segments, const StepStats& stats, int64_t step,
              Tensor* shadow);
  OptimConfig cfg_;
  int64_t total_steps_;
  Tensor state_a_, state_b_;  // adamw: m, v; sgd: velocity, unused
};

}  // namespace tern
