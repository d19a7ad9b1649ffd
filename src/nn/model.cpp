#include "tern/nn/model.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

#include "tern/base/error.h"

namespace tern {
namespace {

// Parameter tensors start on 16-float (64-byte) boundaries so vector loads stay aligned.
constexpr int64_t kParamAlign = 16;

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

Model::Model(const std::vector<std::string>& layer_specs, const std::string& loss,
             const Shape& input_shape, Device dev, DType compute)
    : input_shape_(input_shape), device_(dev), compute_(compute), loss_(make_loss(loss)) {
  if (compute != DType::f32 && (compute != DType::bf16 || dev.kind != DeviceKind::cuda))
    throw InputError(std::string("run.precision: ") + dtype_name(compute) +
                     " compute needs a GPU (run.device=cuda)");
  if (layer_specs.empty()) throw InputError("model.layer: the model has no layers");
  Shape shape = input_shape;
  int64_t offset = 0;
  // Where each layer's parameters live: their own, or (tied) an earlier layer's.
  std::vector<std::vector<std::pair<int64_t, Shape>>> views(layer_specs.size());
  for (size_t i = 0; i < layer_specs.size(); ++i) {
    LayerSpec spec = LayerSpec::parse(layer_specs[i], static_cast<int>(i));
    layers_.push_back(make_layer(spec, shape));
    const Layer& layer = *layers_.back();
    layer_param_begin_.push_back(offset);
    for (const ParamSpec& p : layer.param_specs()) {
      if (!p.tied_to.empty()) {
        const ParamInfo& target = tied_target(p.tied_to, spec.where());
        if (target.shape != p.shape)
          throw InputError(spec.where() + ": its " + p.name + " " + shape_str(p.shape) +
                           " cannot be tied to " + target.name + " " + shape_str(target.shape));
        views[i].push_back({target.offset, p.shape});
        continue;
      }
      views[i].push_back({offset, p.shape});
      table_.push_back({std::to_string(i) + "." + layer.type() + "." + p.name, p.shape, offset,
                        p.decay, p.init, p.fan_in, static_cast<int>(i)});
      // The optimizer's segments are the trained parameters; state like running statistics
      // stays out of them (and its gradient stays zero).
      if (p.trainable) segments_.push_back({offset, shape_numel(p.shape), p.decay});
      offset += (shape_numel(p.shape) + kParamAlign - 1) / kParamAlign * kParamAlign;
    }
    shape = layer.out_shape();
  }
  params_ = Tensor::zeros({offset}, DType::f32, dev);
  grads_ = Tensor::zeros({offset}, DType::f32, dev);
  compute_params_ = compute == DType::f32 ? params_ : Tensor::zeros({offset}, compute, dev);
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<Tensor> p, g, c;
    for (const auto& [at, param_shape] : views[i]) {
      p.push_back(params_.slice(at, param_shape));
      g.push_back(grads_.slice(at, param_shape));
      c.push_back(compute_params_.slice(at, param_shape));
    }
    layers_[i]->bind(std::move(p), std::move(g), std::move(c));
    layers_[i]->place(dev, compute);
  }
  if (loss_->classification() && output_shape().size() > 2)
    throw InputError("model.loss: " + std::string(loss_->type()) +
                     " needs a model whose output is [classes] or [positions, classes], got " +
                     shape_str(output_shape()));
}

const ParamInfo& Model::tied_target(const std::string& tied_to, const std::string& where) const {
  const size_t dot = tied_to.find('.');
  const std::string type = tied_to.substr(0, dot), name = tied_to.substr(dot + 1);
  for (auto it = table_.rbegin(); it != table_.rend(); ++it)
    if (layers_[it->layer]->type() == type &&
        it->name == std::to_string(it->layer) + "." + type + "." + name)
      return *it;
  throw InputError(where + ": ties its weight to the " + name + " of a " + type +
                   " layer, and no earlier layer is one");
}

void Model::params_changed() {
  if (compute_ != DType::f32) ops::convert(params_, compute_params_);
}

void Model::init_params(uint64_t seed) {
  // Made on the host (the same numbers whatever the device), then copied.
  Tensor host = Tensor::zeros({params_.numel()});
  float* base = host.data<float>();
  for (size_t k = 0; k < table_.size(); ++k) {
    const ParamInfo& info = table_[k];
    float* p = base + info.offset;
    const int64_t n = shape_numel(info.shape);
    switch (info.init) {
      case Init::zeros:
        std::fill(p, p + n, 0.0f);
        break;
      case Init::ones:
        std::fill(p, p + n, 1.0f);
        break;
      case Init::uniform_fan_in: {
        // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch's Linear; a 64-bit engine with a
        // hand-made float conversion so the values are the same with every standard library.
        std::mt19937_64 rng(splitmix64(seed ^ splitmix64(k + 1)));
        const float bound = 1.0f / std::sqrt(static_cast<float>(info.fan_in));
        for (int64_t i = 0; i < n; ++i) {
          const float u = static_cast<float>(rng() >> 40) * (1.0f / 16777216.0f);
          p[i] = (2.0f * u - 1.0f) * bound;
        }
        break;
      }
      case Init::normal_002: {
        // Box-Muller on the same engine and float conversion: platform independent.
        std::mt19937_64 rng(splitmix64(seed ^ splitmix64(k + 1)));
        auto uniform = [&] {
          return (static_cast<double>(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        };
        for (int64_t i = 0; i < n; i += 2) {
          const double r = std::sqrt(-2.0 * std::log(uniform())),
                       a = 2.0 * std::numbers::pi * uniform();
          p[i] = static_cast<float>(0.02 * r * std::cos(a));
          if (i + 1 < n) p[i + 1] = static_cast<float>(0.02 * r * std::sin(a));
        }
        break;
      }
    }
  }
  params_.copy_from(host);
  params_changed();
}

void Model::ensure_capacity(int64_t rows) {
  if (rows <= capacity_rows_ && !act_store_.empty()) return;
  capacity_rows_ = rows;
  act_store_.clear();
  int64_t widest = shape_numel(input_shape_);
  for (const auto& layer : layers_) {
    Shape s = layer->out_shape();
    s.insert(s.begin(), rows);
    act_store_.push_back(Tensor::empty(s, compute_, device_));
    widest = std::max(widest, shape_numel(layer->out_shape()));
    layer->reserve(rows);
  }
  for (auto& d : dact_store_) d = Tensor::empty({rows * widest}, compute_, device_);
  if (compute_ != DType::f32) {
    Shape in = input_shape_;
    in.insert(in.begin(), rows);
    input_store_ = Tensor::empty(in, compute_, device_);
  }
}

const Tensor& Model::forward(const Tensor& x, const StepContext& ctx) {
  if (x.ndim() < 1 || Shape(x.shape().begin() + 1, x.shape().end()) != input_shape_)
    throw std::invalid_argument("Model::forward: input " + shape_str(x.shape()) +
                                " does not match the model input " + shape_str(input_shape_));
  if (!(x.device() == device_))
    throw std::invalid_argument("Model::forward: input on " + device_name(x.device()) +
                                ", model on " + device_name(device_));
  rows_ = x.dim(0);
  ensure_capacity(rows_);
  if (compute_ != DType::f32 && x.dtype() == DType::f32) {
    Tensor in = input_store_.rows(0, rows_);
    ops::convert(x, in);
    acts_.assign(1, in);
  } else {
    acts_.assign(1, x);
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    Tensor y = act_store_[i].rows(0, rows_);
    layers_[i]->forward(acts_.back(), y, ctx);
    acts_.push_back(y);
  }
  return acts_.back();
}

ops::LossStats Model::loss(const Tensor& target, float grad_scale, bool with_grad) {
  const Tensor& out = acts_.back();
  Tensor dout;
  if (with_grad) dout = dact_store_[0].slice(0, out.shape());
  return loss_->compute(out, target, with_grad ? &dout : nullptr, grad_scale);
}

void Model::backward(const StepContext& ctx, const std::function<void(int64_t)>& grads_ready_from) {
  int cur = 0;  // dact_store_[cur] holds the gradient of the current layer's output
  for (int i = num_layers() - 1; i >= 0; --i) {
    const Tensor& x = acts_[i];
    const Tensor& y = acts_[i + 1];
    Tensor dy = dact_store_[cur].slice(0, y.shape());
    Tensor dx;
    if (i > 0) dx = dact_store_[1 - cur].slice(0, x.shape());
    layers_[i]->backward(x, y, dy, i > 0 ? &dx : nullptr, ctx);
    if (grads_ready_from) grads_ready_from(layer_param_begin_[i]);
    cur = 1 - cur;
  }
}

}  // namespace tern
