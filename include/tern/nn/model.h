#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"
#include "tern/nn/layers.h"
#include "tern/nn/losses.h"

namespace tern {

// Where one parameter tensor lives in the flat buffers.
struct ParamInfo {
  std::string name;  // "<layer index>.<layer type>.<param>", e.g. "0.linear.weight"
  Shape shape;
  int64_t offset = 0;  // elements into the flat buffer
  bool decay = true;
  Init init = Init::zeros;
  int64_t fan_in = 1;
  int layer = 0;
};

// A stack of layers with all parameters in one flat buffer and all gradients in another
// (DESIGN.md section 3): reducer buckets are slices of the gradient buffer, the optimizer is one
// pass, a checkpoint is byte ranges.
class Model {
 public:
  // dev: where parameters, gradients and activations live; compute: the activations' dtype (f32,
  // or bf16 on a GPU: the layers then compute from a bf16 copy of the f32 master parameters).
  Model(const std::vector<std::string>& layer_specs, const std::string& loss,
        const Shape& input_shape, Device dev = {}, DType compute = DType::f32);
  Device device() const { return device_; }
  DType compute_dtype() const { return compute_; }

  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const { return layers_.back()->out_shape(); }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  const Layer& layer(int i) const { return *layers_.at(i); }
  const Loss& loss_fn() const { return *loss_; }

  int64_t num_params() const { return params_.numel(); }
  Tensor& params() { return params_; }
  const Tensor& params() const { return params_; }
  Tensor& grads() { return grads_; }
  const std::vector<ParamInfo>& param_table() const { return table_; }
  // The decay mask as segments of the flat buffer, for the optimizer.
  const std::vector<ops::ParamSegment>& segments() const { return segments_; }
  // The bf16 copy of the parameters in bf16 runs (the optimizer writes it), else null.
  Tensor* compute_params() { return compute_ == DType::f32 ? nullptr : &compute_params_; }
  // After the f32 parameters were written from outside (resume, broadcast): refresh the copy.
  void params_changed();

  // Deterministic initialisation from the seed alone (same on every rank, platform and device).
  void init_params(uint64_t seed);
  void zero_grads() { grads_.zero_(); }

  // Runs the layers on x [rows, input...]; the output stays valid until the next forward.
  const Tensor& forward(const Tensor& x, const StepContext& ctx);
  // Loss of the last forward against the targets; with_grad also seeds backward.
  ops::LossStats loss(const Tensor& target, float grad_scale, bool with_grad);
  // Adds this batch's gradients. After each layer, grads_ready_from(offset) says that gradients
  // in [offset, num_params) will not change any more in this backward.
  void backward(const StepContext& ctx, const std::function<void(int64_t)>& grads_ready_from);

 private:
  // The parameter a `tied_to` name ("embedding.token") refers to: the nearest earlier one.
  const ParamInfo& tied_target(const std::string& tied_to, const std::string& where) const;
  void ensure_capacity(int64_t rows);

  Shape input_shape_;
  Device device_;
  DType compute_ = DType::f32;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Loss> loss_;
  std::vector<ParamInfo> table_;
  std::vector<int64_t> layer_param_begin_;
  std::vector<ops::ParamSegment> segments_;
  Tensor params_, grads_, compute_params_;
  Tensor input_store_;  // the input converted to the compute dtype (bf16 runs)
  int64_t capacity_rows_ = 0;
  int64_t rows_ = 0;
  std::vector<Tensor> act_store_;  // output of layer i, capacity_rows_ rows
  std::vector<Tensor>
      acts_;  // views of the current batch: acts_[0] input, acts_[i+1] output of layer i
  Tensor dact_store_[2];  // ping-pong gradients of activations
};

}  // namespace tern
