#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"

namespace tern {

// One entry of a config's layer list, e.g. "linear out=128 bias=true". Arguments are read
// through the getters; any argument left unread is an error naming the layer.
class LayerSpec {
 public:
  static LayerSpec parse(const std::string& text, int index);
  const std::string& type() const { return type_; }
  int index() const { return index_; }
  std::string where() const;  // "layer 2 (linear out=10)"

  int64_t get_int(const std::string& key, int64_t fallback);
  int64_t require_int(const std::string& key);
  float get_float(const std::string& key, float fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  // A shape written with x between the dimensions: "1x8x8".
  Shape require_shape(const std::string& key);
  void check_all_used() const;

 private:
  const std::string* find(const std::string& key);
  std::string type_, text_;
  int index_ = 0;
  std::map<std::string, std::string> args_;
  std::map<std::string, bool> used_;
};

// normal_002: N(0, 0.02), GPT-2's initialisation of embeddings.
enum class Init { zeros, ones, uniform_fan_in, normal_002 };

struct ParamSpec {
  std::string name;  // within the layer: "weight", "bias", ...
  Shape shape;
  bool decay;  // weight decay applies (not to biases and norm parameters)
  Init init;
  int64_t fan_in = 1;
  // False for state that lives with the parameters (checkpointed, exported) but is not trained:
  // batch norm's running statistics. The optimizer skips it; its gradient stays zero.
  bool trainable = true;
  // Weight tying: "<layer type>.<param>" names a parameter of an earlier layer (the nearest one of
  // that type) that this one shares instead of having its own: the same values, and both layers
  // add their gradients into the same place. Empty for a parameter of the layer's own.
  std::string tied_to = "";
};

// What a step tells the layers. Row i of the batch is global sample first_sample + i.
// allreduce_sum (in training, when there are several ranks: the trainer's communicator) sums
// values over the ranks, so a layer can reduce over the global batch (batch norm's statistics).
struct StepContext {
  bool training = true;
  uint64_t seed = 0;
  int64_t first_sample = 0;
  std::function<void(double* values, int count)> allreduce_sum;
};

// A layer maps [rows, in_features...] to [rows, out_features...]. Parameters and gradients are
// views into the model's two flat buffers, bound once; backward adds into the gradients
// (the model zeroes them once per optimizer step, which gives gradient accumulation for free).
class Layer {
 public:
  virtual ~Layer() = default;
  virtual const char* type() const = 0;
  const Shape& in_shape() const { return in_shape_; }
  const Shape& out_shape() const { return out_shape_; }
  virtual std::vector<ParamSpec> param_specs() const { return {}; }
  // Parameters (f32 master copy), their gradients (f32), and the parameters in the compute dtype
  // (the same tensors in f32 runs; a bf16 copy in bf16 runs): views into the model's buffers.
  void bind(std::vector<Tensor> params, std::vector<Tensor> grads, std::vector<Tensor> compute);
  // Where the layer runs and the dtype of its activations; before reserve().
  void place(Device dev, DType compute) {
    device_ = dev;
    compute_dtype_ = compute;
    on_place();
  }
  // Scratch space that depends on the batch size.
  virtual void reserve(int64_t /*max_rows*/) {}
  virtual void forward(const Tensor& x, Tensor& y, const StepContext& ctx) = 0;
  // dx is null for the first layer, whose input needs no gradient.
  virtual void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx,
                        const StepContext& ctx) = 0;

 protected:
  // After bind(): for layers made of other layers, to hand them their views.
  virtual void on_bind() {}
  // After place(): for layers made of other layers, to place them too.
  virtual void on_place() {}
  Shape in_shape_, out_shape_;
  std::vector<Tensor> params_, grads_, compute_params_;
  Device device_;
  DType compute_dtype_ = DType::f32;
};

using LayerFactory = std::function<std::unique_ptr<Layer>(LayerSpec&, const Shape& in)>;
struct LayerInfo {
  LayerFactory make;
  std::string help;  // arguments and meaning, for --help
};
// Every layer type by name; the config's layer list is built from it.
const std::map<std::string, LayerInfo>& layer_registry();
std::unique_ptr<Layer> make_layer(LayerSpec& spec, const Shape& in);

}  // namespace tern
