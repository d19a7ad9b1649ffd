#include "tern/nn/layers.h"

#include "layer_types.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <sstream>

#include "tern/base/error.h"

namespace tern {

namespace {

// A batch tensor as [rows x positions, width]: every leading dimension becomes a row.
Tensor matrix(const Tensor& t, int64_t width) { return t.reshape({t.numel() / width, width}); }

// y = x W^T + b over the last dimension (as PyTorch's Linear: a [T, C] input maps every position),
// W stored [out, in] as in PyTorch so exports read the same way.
class Linear final : public Layer {
 public:
  Linear(LayerSpec& spec, const Shape& in) {
    if (in.empty()) throw InputError(spec.where() + ": needs an input with features");
    in_ = in.back();
    out_ = spec.require_int("out");
    if (out_ <= 0) throw InputError(spec.where() + ": out must be positive");
    bias_ = spec.get_bool("bias", true);
    const std::string tie = spec.get_string("tie", "");
    tied_ = tie == "embedding";
    if (!tie.empty() && !tied_)
      throw InputError(spec.where() + ": tie=" + tie +
                       " is not a layer it can share its weight with (tie=embedding: the token "
                       "table of the embedding layer, GPT-2's weight tying)");
    in_shape_ = in;
    out_shape_ = in;
    out_shape_.back() = out_;
  }
  const char* type() const override { return "linear"; }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> p{{"weight", {out_, in_}, true, Init::uniform_fan_in, in_}};
    // Tied: the embedding's token table [vocab, dim] is this layer's [out, in] weight.
    if (tied_) p[0].tied_to = "embedding.token";
    if (bias_) p.push_back({"bias", {out_}, false, Init::uniform_fan_in, in_});
    return p;
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    // The bias rides on the GEMM (a cuBLASLt epilogue on the GPU).
    Tensor y2 = matrix(y, out_);
    ops::gemm(matrix(x, in_), false, compute_params_[0], true, y2, 1.0f, 0.0f,
              bias_ ? &compute_params_[1] : nullptr);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    const Tensor x2 = matrix(x, in_), dy2 = matrix(dy, out_);
    // Weight gradients accumulate in f32 whatever the compute dtype.
    ops::gemm(dy2, true, x2, false, grads_[0], 1.0f, 1.0f);
    if (bias_) ops::bias_grad(dy2, grads_[1], true);
    if (dx) {
      Tensor dx2 = matrix(*dx, in_);
      ops::gemm(dy2, false, compute_params_[0], false, dx2);
    }
  }

 private:
  int64_t in_ = 0, out_ = 0;
  bool bias_ = true;
  bool tied_ = false;
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

// Layer normalisation over the last dimension (each position of a [positions, channels] input
// on its own, as in a transformer).
class LayerNorm final : public Layer {
 public:
  LayerNorm(LayerSpec& spec, const Shape& in) {
    eps_ = spec.get_float("eps", 1e-5f);
    if (!(eps_ > 0.0f)) throw InputError(spec.where() + ": eps must be positive");
    if (in.empty()) throw InputError(spec.where() + ": needs an input with features");
    dim_ = in.back();
    positions_ = shape_numel(in) / dim_;
    in_shape_ = out_shape_ = in;
  }
  const char* type() const override { return "layernorm"; }
  std::vector<ParamSpec> param_specs() const override {
    return {{"weight", {dim_}, false, Init::ones}, {"bias", {dim_}, false, Init::zeros}};
  }
  void reserve(int64_t max_rows) override {
    if (mean_.numel() >= max_rows * positions_) return;
    mean_ = Tensor::empty({max_rows * positions_}, DType::f32, device_);
    rstd_ = Tensor::empty({max_rows * positions_}, DType::f32, device_);
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    const int64_t n = x.numel() / dim_;
    Tensor mean = mean_.slice(0, {n}), rstd = rstd_.slice(0, {n}), y2 = matrix(y, dim_);
    ops::layernorm_forward(matrix(x, dim_), params_[0], params_[1], y2, mean, rstd, eps_);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    const int64_t n = x.numel() / dim_;
    Tensor mean = mean_.slice(0, {n}), rstd = rstd_.slice(0, {n});
    Tensor dx2 = dx ? matrix(*dx, dim_) : Tensor::empty({n, dim_}, x.dtype(), x.device());
    ops::layernorm_backward(matrix(dy, dim_), matrix(x, dim_), params_[0], mean, rstd, dx2,
                            grads_[0], grads_[1], true);
  }

 private:
  int64_t dim_ = 0, positions_ = 1;
  float eps_ = 1e-5f;
  Tensor mean_, rstd_;
};

// reshape / flatten: the same values seen with another per-sample shape.
class View final : public Layer {
 public:
  View(const char* type, const Shape& in, Shape out, const std::string& where) : type_(type) {
    if (shape_numel(out) != shape_numel(in))
      throw InputError(where + ": " + shape_str(out) + " holds " +
                       std::to_string(shape_numel(out)) + " values, the input " + shape_str(in) +
                       " has " + std::to_string(shape_numel(in)));
    in_shape_ = in;
    out_shape_ = std::move(out);
  }
  const char* type() const override { return type_; }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override { y.copy_from(x); }
  void backward(const Tensor&, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    if (dx) dx->copy_from(dy);
  }

 private:
  const char* type_;
};

// Causal multi-head self-attention over a [T, C] input with its projections (GPT-2's layout):
// qkv = x W_qkv^T + b_qkv, split into q, k, v [T, C]; each head attends to positions <= t; the
// heads' outputs go through y = att W_proj^T + b_proj.
class Attention final : public Layer {
 public:
  Attention(LayerSpec& spec, const Shape& in) {
    if (in.size() != 2)
      throw InputError(spec.where() + ": needs an input of [positions, channels], got " +
                       shape_str(in));
    heads_ = spec.require_int("heads");
    bias_ = spec.get_bool("bias", true);
    t_ = in[0];
    c_ = in[1];
    if (heads_ < 1 || c_ % heads_)
      throw InputError(spec.where() + ": " + std::to_string(c_) + " channels do not split into " +
                       std::to_string(heads_) + " heads");
    in_shape_ = out_shape_ = in;
  }
  const char* type() const override { return "attention"; }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> p{{"qkv.weight", {3 * c_, c_}, true, Init::uniform_fan_in, c_}};
    if (bias_) p.push_back({"qkv.bias", {3 * c_}, false, Init::uniform_fan_in, c_});
    p.push_back({"proj.weight", {c_, c_}, true, Init::uniform_fan_in, c_});
    if (bias_) p.push_back({"proj.bias", {c_}, false, Init::uniform_fan_in, c_});
    return p;
  }
  void reserve(int64_t max_rows) override {
    if (max_rows <= rows_) return;
    rows_ = max_rows;
    const DType t = compute_dtype_;
    qkv_ = Tensor::empty({max_rows, t_, 3 * c_}, t, device_);
    dqkv_ = Tensor::empty({max_rows, t_, 3 * c_}, t, device_);
    att_ = Tensor::empty({max_rows, t_, c_}, t, device_);
    datt_ = Tensor::empty({max_rows, t_, c_}, t, device_);
    lse_ = Tensor::empty({max_rows, heads_, t_}, DType::f32, device_);
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    const int64_t rows = x.dim(0);
    // The projection writes q, k and v side by side; the attention op reads them in place.
    Tensor qkv = qkv_.rows(0, rows), qkv2 = matrix(qkv, 3 * c_);
    ops::gemm(matrix(x, c_), false, compute_params_[0], true, qkv2, 1.0f, 0.0f,
              bias_ ? &compute_params_[1] : nullptr);
    Tensor att = att_.rows(0, rows), lse = lse_.rows(0, rows);
    ops::attention_forward(qkv, att, lse, heads_);
    Tensor y2 = matrix(y, c_);
    ops::gemm(matrix(att, c_), false, compute_params_[proj()], true, y2, 1.0f, 0.0f,
              bias_ ? &compute_params_[3] : nullptr);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    const int64_t rows = x.dim(0);
    const Tensor dy2 = matrix(dy, c_);
    Tensor att = att_.rows(0, rows), datt = datt_.rows(0, rows);
    ops::gemm(dy2, true, matrix(att, c_), false, grads_[proj()], 1.0f, 1.0f);
    if (bias_) ops::bias_grad(dy2, grads_[3], true);
    Tensor datt2 = matrix(datt, c_);
    ops::gemm(dy2, false, compute_params_[proj()], false, datt2);
    Tensor dqkv = dqkv_.rows(0, rows);
    ops::attention_backward(qkv_.rows(0, rows), att, datt, lse_.rows(0, rows), dqkv, heads_);
    const Tensor dqkv2 = matrix(dqkv, 3 * c_), x2 = matrix(x, c_);
    ops::gemm(dqkv2, true, x2, false, grads_[0], 1.0f, 1.0f);
    if (bias_) ops::bias_grad(dqkv2, grads_[1], true);
    if (dx) {
      Tensor dx2 = matrix(*dx, c_);
      ops::gemm(dqkv2, false, compute_params_[0], false, dx2);
    }
  }

 private:
  size_t proj() const { return bias_ ? 2 : 1; }

  int64_t heads_ = 1, t_ = 0, c_ = 0, rows_ = 0;
  bool bias_ = true;
  Tensor qkv_, dqkv_, att_, datt_, lse_;
};

// A pre-norm transformer block over [T, C] (GPT-2's): h = x + attention(layernorm(x)), then
// y = h + proj(gelu(fc(layernorm(h)))), fc widening to 4C. Built from the layers above; its
// parameters are theirs, named "ln1.weight", "attn.qkv.weight", "fc.weight", ...
class TransformerBlock final : public Layer {
 public:
  TransformerBlock(LayerSpec& spec, const Shape& in) {
    if (in.size() != 2)
      throw InputError(spec.where() + ": needs an input of [positions, channels], got " +
                       shape_str(in));
    const int64_t heads = spec.require_int("heads");
    // No biases in the projections by default (nanoGPT's choice): the key projection's bias has
    // a zero gradient (softmax ignores a shift shared by all keys), and AdamW would turn its
    // rounding noise into steps that differ between W ranks and 1.
    const std::string bias = spec.get_bool("bias", false) ? "true" : "false";
    const int64_t c = in[1];
    auto part = [&](const std::string& name, const std::string& text, const Shape& part_in) {
      LayerSpec s = LayerSpec::parse(text, spec.index());
      try {
        parts_.push_back({name, make_layer(s, part_in)});
      } catch (const InputError& e) {
        throw InputError(spec.where() + ": " + e.what());
      }
    };
    part("ln1", "layernorm", in);
    part("attn", "attention heads=" + std::to_string(heads) + " bias=" + bias, in);
    part("ln2", "layernorm", in);
    part("fc", "linear out=" + std::to_string(4 * c) + " bias=" + bias, in);
    part("act", "gelu", {in[0], 4 * c});
    part("proj", "linear out=" + std::to_string(c) + " bias=" + bias, {in[0], 4 * c});
    in_shape_ = out_shape_ = in;
  }
  const char* type() const override { return "transformer_block"; }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> out;
    for (const auto& [name, layer] : parts_)
      for (ParamSpec p : layer->param_specs()) {
        p.name = name + "." + p.name;
        out.push_back(p);
      }
    return out;
  }
  void reserve(int64_t max_rows) override {
    for (auto& [name, layer] : parts_) layer->reserve(max_rows);
    if (max_rows <= rows_) return;
    rows_ = max_rows;
    const int64_t t = in_shape_[0], c = in_shape_[1];
    for (Tensor* b : {&a1_, &a2_, &h_, &a3_, &a6_, &g1_, &g2_, &g3_})
      *b = Tensor::empty({max_rows, t, c}, compute_dtype_, device_);
    for (Tensor* b : {&a4_, &a5_, &g4_, &g5_})
      *b = Tensor::empty({max_rows, t, 4 * c}, compute_dtype_, device_);
  }
  void forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    auto [a1, a2, h, a3, a4, a5, a6] = activations(x.dim(0));
    at(0).forward(x, a1, ctx);
    at(1).forward(a1, a2, ctx);
    ops::add(x, a2, h);
    at(2).forward(h, a3, ctx);
    at(3).forward(a3, a4, ctx);
    at(4).forward(a4, a5, ctx);
    at(5).forward(a5, a6, ctx);
    ops::add(h, a6, y);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext& ctx) override {
    const int64_t r = x.dim(0);
    auto [a1, a2, h, a3, a4, a5, a6] = activations(r);
    Tensor g1 = g1_.rows(0, r), g2 = g2_.rows(0, r), g3 = g3_.rows(0, r);
    Tensor g4 = g4_.rows(0, r), g5 = g5_.rows(0, r);
    // dh = dy + the MLP branch's input gradient
    at(5).backward(a5, a6, dy, &g5, ctx);
    at(4).backward(a4, a5, g5, &g4, ctx);
    at(3).backward(a3, a4, g4, &g1, ctx);
    at(2).backward(h, a3, g1, &g2, ctx);
    ops::add(dy, g2, g2);  // g2 = dh
    // dx = dh + the attention branch's input gradient
    at(1).backward(a1, a2, g2, &g1, ctx);
    at(0).backward(x, a1, g1, &g3, ctx);
    if (dx) ops::add(g2, g3, *dx);
  }

 protected:
  void on_place() override {
    for (auto& [name, layer] : parts_) layer->place(device_, compute_dtype_);
  }
  void on_bind() override {
    size_t next = 0;
    for (auto& [name, layer] : parts_) {
      const size_t n = layer->param_specs().size();
      auto take = [&](const std::vector<Tensor>& v) {
        return std::vector<Tensor>(v.begin() + next, v.begin() + next + n);
      };
      layer->bind(take(params_), take(grads_), take(compute_params_));
      next += n;
    }
  }

 private:
  Layer& at(size_t i) { return *parts_[i].second; }
  // This batch's views of the saved activations: ln1, attention, h = x + attention, ln2, fc,
  // gelu, proj.
  std::array<Tensor, 7> activations(int64_t rows) const {
    return {a1_.rows(0, rows), a2_.rows(0, rows), h_.rows(0, rows), a3_.rows(0, rows),
            a4_.rows(0, rows), a5_.rows(0, rows), a6_.rows(0, rows)};
  }

  std::vector<std::pair<std::string, std::unique_ptr<Layer>>> parts_;
  int64_t rows_ = 0;
  Tensor a1_, a2_, h_, a3_, a4_, a5_, a6_, g1_, g2_, g3_, g4_, g5_;
};

// Token and position embedding: ids [T] (i32, the model's input) -> [T, dim].
class Embedding final : public Layer {
 public:
  Embedding(LayerSpec& spec, const Shape& in) {
    if (in.size() != 1)
      throw InputError(spec.where() + ": needs an input of [positions] token ids, got " +
                       shape_str(in));
    vocab_ = spec.require_int("vocab");
    dim_ = spec.require_int("dim");
    if (vocab_ < 1 || dim_ < 1) throw InputError(spec.where() + ": vocab and dim must be positive");
    in_shape_ = in;
    out_shape_ = {in[0], dim_};
  }
  const char* type() const override { return "embedding"; }
  std::vector<ParamSpec> param_specs() const override {
    return {{"token", {vocab_, dim_}, true, Init::normal_002},
            {"position", {in_shape_[0], dim_}, true, Init::normal_002}};
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    ops::embedding_forward(x, params_[0], &params_[1], y);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor*,
                const StepContext&) override {
    ops::embedding_backward(x, dy, grads_[0], &grads_[1]);  // token ids have no gradient
  }

 private:
  int64_t vocab_ = 0, dim_ = 0;
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
        "out=N [bias=true] [tie=embedding]: fully connected, y = x W^T + b over the last "
        "dimension; tie=embedding shares W with the embedding layer's token table (weight "
        "tying: out = vocab, input width = the embedding's dim)"}},
      {"relu", activation_info<ops::Activation::relu>("max(x, 0)")},
      {"gelu", activation_info<ops::Activation::gelu>("GELU, tanh approximation")},
      {"tanh", activation_info<ops::Activation::tanh>("hyperbolic tangent")},
      {"dropout",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<Dropout>(s, in); },
        "[p=0.1]: zeroes a fraction p in training; the mask follows the global sample index"}},
      {"layernorm",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<LayerNorm>(s, in); },
        "[eps=1e-5]: layer normalisation over the features, with weight and bias"}},
      {"batchnorm",
       {make_batchnorm,
        "[eps=1e-5] [momentum=0.1]: batch normalisation over the channels (first dimension), "
        "statistics of the global batch across ranks, running statistics for inference"}},
      {"attention",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<Attention>(s, in); },
        "heads=H [bias=true]: causal multi-head self-attention over a [positions, channels] "
        "input, with its qkv and output projections"}},
      {"transformer_block",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<TransformerBlock>(s, in); },
        "heads=H [bias=false]: pre-norm transformer block over [positions, channels]: x + "
        "attention(ln(x)), then h + mlp(ln(h)) with a 4x GELU MLP"}},
      {"embedding",
       {[](LayerSpec& s, const Shape& in) { return std::make_unique<Embedding>(s, in); },
        "vocab=V dim=C: token ids [positions] -> token + position embeddings [positions, C] "
        "(the first layer of a language model)"}},
      {"reshape",
       {[](LayerSpec& s, const Shape& in) {
          return std::make_unique<View>("reshape", in, s.require_shape("to"), s.where());
        },
        "to=AxBxC: the same values with another per-sample shape (e.g. 64 -> 1x8x8)"}},
      {"flatten",
       {[](LayerSpec& s, const Shape& in) {
          return std::make_unique<View>("flatten", in, Shape{shape_numel(in)}, s.where());
        },
        "[C, H, W] -> [C*H*W]"}},
      {"conv2d",
       {make_conv2d,
        "out=K k=N [stride=1] [pad=0] [bias=true]: 2-D convolution of a [C, H, W] input"}},
      {"maxpool2d",
       {[](LayerSpec& s, const Shape& in) { return make_pool2d(ops::Pool::max, s, in); },
        "k=N [stride=k]: maximum over k x k windows of a [C, H, W] input"}},
      {"avgpool2d",
       {[](LayerSpec& s, const Shape& in) { return make_pool2d(ops::Pool::avg, s, in); },
        "k=N [stride=k]: mean over k x k windows of a [C, H, W] input"}},
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
