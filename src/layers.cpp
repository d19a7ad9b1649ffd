#include "tern/layers.h"

#include <sstream>

#include "tern/error.h"

namespace tern {

LayerSpec LayerSpec::parse(const std::string& text, int index) {
  LayerSpec spec;
  spec.text_ = text;
  spec.index_ = index;
  std::istringstream in(text);
  in >> spec.type_;
  if (spec.type_.empty()) throw InputError("layer " + std::to_string(index) + " is empty");
  std::string token;
  while (in >> token) {
    auto eq = token.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == token.size())
      throw InputError(spec.where() + ": argument '" + token + "' is not key=value");
    auto key = token.substr(0, eq);
    if (spec.args_.count(key))
      throw InputError(spec.where() + ": argument '" + key + "' given twice");
    spec.args_[key] = token.substr(eq + 1);
  }
  return spec;
}

std::string LayerSpec::where() const {
  return "model.layer " + std::to_string(index_) + " (" + text_ + ")";
}

const std::string* LayerSpec::find(const std::string& key) {
  auto it = args_.find(key);
  if (it == args_.end()) return nullptr;
  used_[key] = true;
  return &it->second;
}

int64_t LayerSpec::get_int(const std::string& key, int64_t fallback) {
  const std::string* v = find(key);
  if (!v) return fallback;
  size_t pos = 0;
  int64_t out = 0;
  try {
    out = std::stoll(*v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v->size()) throw InputError(where() + ": " + key + "=" + *v + " is not an integer");
  return out;
}

int64_t LayerSpec::require_int(const std::string& key) {
  if (!args_.count(key)) throw InputError(where() + ": missing argument " + key + "=N");
  return get_int(key, 0);
}

float LayerSpec::get_float(const std::string& key, float fallback) {
  const std::string* v = find(key);
  if (!v) return fallback;
  size_t pos = 0;
  float out = 0;
  try {
    out = std::stof(*v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v->size()) throw InputError(where() + ": " + key + "=" + *v + " is not a number");
  return out;
}

bool LayerSpec::get_bool(const std::string& key, bool fallback) {
  const std::string* v = find(key);
  if (!v) return fallback;
  if (*v == "true" || *v == "1" || *v == "yes") return true;
  if (*v == "false" || *v == "0" || *v == "no") return false;
  throw InputError(where() + ": " + key + "=" + *v + " is not true or false");
}

void LayerSpec::check_all_used() const {
  for (const auto& [key, value] : args_)
    if (!used_.count(key))
      throw InputError(where() + ": unknown argument '" + key + "' for layer type " + type_);
}

void Layer::bind(std::vector<Tensor> params, std::vector<Tensor> grads,
                 std::vector<Tensor> compute) {
  params_ = std::move(params);
  grads_ = std::move(grads);
  compute_params_ = std::move(compute);
}

namespace {

int64_t features(const Shape& s) { return shape_numel(s); }

// y = x W^T + b, W stored [out, in] as in PyTorch so exports read the same way.
class Linear final : public Layer {
 public:
  Linear(LayerSpec& spec, const Shape& in) {
    in_ = features(in);
    out_ = spec.require_int("out");
    if (out_ <= 0) throw InputError(spec.where() + ": out must be positive");
    bias_ = spec.get_bool("bias", true);
    in_shape_ = {in_};
    out_shape_ = {out_};
  }
  const char* type() const override { return "linear"; }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> p{{"weight", {out_, in_}, true, Init::uniform_fan_in, in_}};
    if (bias_) p.push_back({"bias", {out_}, false, Init::uniform_fan_in, in_});
    return p;
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    // The bias rides on the GEMM (a cuBLASLt epilogue on the GPU).
    ops::gemm(x, false, compute_params_[0], true, y, 1.0f, 0.0f,
              bias_ ? &compute_params_[1] : nullptr);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    // Weight gradients accumulate in f32 whatever the compute dtype.
    ops::gemm(dy, true, x, false, grads_[0], 1.0f, 1.0f);
    if (bias_) ops::bias_grad(dy, grads_[1], true);
    if (dx) ops::gemm(dy, false, compute_params_[0], false, *dx);
  }

 private:
  int64_t in_ = 0, out_ = 0;
  bool bias_ = true;
};

class ActivationLayer final : public Layer {
 public:
  ActivationLayer(ops::Activation act, const Shape& in) : act_(act) { in_shape_ = out_shape_ = in; }
  const char* type() const override { return ops::activation_name(act_); }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    ops::activation_forward(act_, x, y);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    if (dx) ops::activation_backward(act_, x, dy, *dx);
  }

 private:
  ops::Activation act_;
};

class Dropout final : public Layer {
 public:
  Dropout(LayerSpec& spec, const Shape& in) {
    p_ = spec.get_float("p", 0.1f);
    if (!(p_ >= 0.0f && p_ < 1.0f)) throw InputError(spec.where() + ": p must be in [0, 1)");
    stream_ = static_cast<uint32_t>(spec.index());
    in_shape_ = out_shape_ = in;
  }
  const char* type() const override { return "dropout"; }
  void forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    float p = ctx.training ? p_ : 0.0f;
    ops::dropout_forward(x, y, p, key(ctx));
  }
  void backward(const Tensor&, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext& ctx) override {
    if (dx) ops::dropout_backward(dy, *dx, p_, key(ctx));
  }

 private:
  ops::DropoutKey key(const StepContext& ctx) const {
    return {ctx.seed, stream_, ctx.first_sample};
  }
  float p_ = 0.1f;
  uint32_t stream_ = 0;
};

class LayerNorm final : public Layer {
 public:
  LayerNorm(LayerSpec& spec, const Shape& in) {
    eps_ = spec.get_float("eps", 1e-5f);
    if (!(eps_ > 0.0f)) throw InputError(spec.where() + ": eps must be positive");
    dim_ = features(in);
    in_shape_ = out_shape_ = {dim_};
  }
  const char* type() const override { return "layernorm"; }
  std::vector<ParamSpec> param_specs() const override {
    return {{"weight", {dim_}, false, Init::ones}, {"bias", {dim_}, false, Init::zeros}};
  }
  void reserve(int64_t max_rows) override {
    if (mean_.numel() >= max_rows) return;
    mean_ = Tensor::empty({max_rows}, DType::f32, device_);
    rstd_ = Tensor::empty({max_rows}, DType::f32, device_);
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    Tensor mean = mean_.slice(0, {x.dim(0)}), rstd = rstd_.slice(0, {x.dim(0)});
    ops::layernorm_forward(x, params_[0], params_[1], y, mean, rstd, eps_);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    Tensor mean = mean_.slice(0, {x.dim(0)}), rstd = rstd_.slice(0, {x.dim(0)});
    Tensor scratch;
    if (!dx) scratch = Tensor::empty(x.shape(), x.dtype(), x.device());
    ops::layernorm_backward(dy, x, params_[0], mean, rstd, dx ? *dx : scratch, grads_[0], grads_[1],
                            true);
  }

 private:
  int64_t dim_ = 0;
  float eps_ = 1e-5f;
  Tensor mean_, rstd_;
};

template <ops::Activation A>
LayerInfo activation_info(const char* help) {
  return {[](LayerSpec&, const Shape& in) { return std::make_unique<ActivationLayer>(A, in); },
          help};
}

}  // namespace

const std::map<std::string, LayerInfo>& layer_registry() {
  static const std::map<std::string, LayerInfo> registry = {
      {"linear",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<Linear>(s, in); },
        "out=N [bias=true]: fully connected, y = x W^T + b"}},
      {"relu", activation_info<ops::Activation::relu>("max(x, 0)")},
      {"gelu", activation_info<ops::Activation::gelu>("GELU, tanh approximation")},
      {"tanh", activation_info<ops::Activation::tanh>("hyperbolic tangent")},
      {"dropout",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<Dropout>(s, in); },
        "[p=0.1]: zeroes a fraction p in training; the mask follows the global sample index"}},
      {"layernorm",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<LayerNorm>(s, in); },
        "[eps=1e-5]: layer normalisation over the features, with weight and bias"}},
  };
  return registry;
}

std::unique_ptr<Layer> make_layer(LayerSpec& spec, const Shape& in) {
  const auto& reg = layer_registry();
  auto it = reg.find(spec.type());
  if (it == reg.end()) {
    std::string known;
    for (const auto& [name, info] : reg) known += (known.empty() ? "" : ", ") + name;
    throw InputError(spec.where() + ": unknown layer type '" + spec.type() + "' (known: " + known +
                     ")");
  }
  auto layer = it->second.make(spec, in);
  spec.check_all_used();
  return layer;
}

}  // namespace tern
