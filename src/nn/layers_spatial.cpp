// The layers over images and channels: batch normalisation, convolution, pooling.
#include <cmath>

#include "layer_types.h"
#include "tern/base/error.h"

namespace tern {
namespace {

// Batch normalisation over the channels (the first per-sample dimension; every feature of a
// vector input). In training the statistics are those of the global batch: with several ranks
// the per-channel sums are all-reduced in forward and backward (synchronised batch norm), so W
// ranks train as one. Running statistics (PyTorch's: momentum-weighted, the unbiased variance)
// live with the parameters as untrained state, so checkpoints and exports carry them; inference
// normalises with them.
class BatchNorm final : public Layer {
 public:
  BatchNorm(LayerSpec& spec, const Shape& in) {
    eps_ = spec.get_float("eps", 1e-5f);
    momentum_ = spec.get_float("momentum", 0.1f);
    if (!(eps_ > 0.0f) || !(momentum_ >= 0.0f && momentum_ <= 1.0f))
      throw InputError(spec.where() + ": eps must be positive and momentum in [0, 1]");
    channels_ = in.empty() ? 1 : in[0];
    in_shape_ = out_shape_ = in;
  }
  const char* type() const override { return "batchnorm"; }
  std::vector<ParamSpec> param_specs() const override {
    return {{"weight", {channels_}, false, Init::ones},
            {"bias", {channels_}, false, Init::zeros},
            {"running_mean", {channels_}, false, Init::zeros, 1, false},
            {"running_var", {channels_}, false, Init::ones, 1, false}};
  }
  void reserve(int64_t) override {
    if (mean_.defined()) return;
    mean_ = Tensor::empty({channels_}, DType::f32, device_);
    rstd_ = Tensor::empty({channels_}, DType::f32, device_);
  }
  void forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const Tensor xs = as_channels(x);
    // The statistics are a few numbers per channel: worked out on the host (in double, from
    // sums the op reduces on the device when there is one), then copied where the layer runs.
    Tensor host = Tensor::empty({4, channels_});
    float* mean = host.data<float>();
    float* rstd = mean + channels_;
    float* run_mean = rstd + channels_;
    float* run_var = run_mean + channels_;
    Tensor run_mean_h = host.slice(2 * channels_, {channels_});
    Tensor run_var_h = host.slice(3 * channels_, {channels_});
    run_mean_h.copy_from(params_[2]);
    run_var_h.copy_from(params_[3]);
    if (ctx.training) {
      std::vector<double> sums;
      ops::batchnorm_sums(xs, channels_, sums);
      sums.push_back(static_cast<double>(per_channel(xs)));
      if (ctx.allreduce_sum) ctx.allreduce_sum(sums.data(), static_cast<int>(sums.size()));
      const double m = sums.back();
      if (m > 0) {
        for (int64_t c = 0; c < channels_; ++c) {
          const double mu = sums[c] / m;
          const double var = std::max(sums[channels_ + c] / m - mu * mu, 0.0);
          mean[c] = static_cast<float>(mu);
          rstd[c] = static_cast<float>(1.0 / std::sqrt(var + eps_));
          const double unbiased = m > 1 ? var * m / (m - 1) : var;
          run_mean[c] = static_cast<float>((1 - momentum_) * run_mean[c] + momentum_ * mu);
          run_var[c] = static_cast<float>((1 - momentum_) * run_var[c] + momentum_ * unbiased);
        }
        params_[2].copy_from(run_mean_h);
        params_[3].copy_from(run_var_h);
      }
      count_ = m;
    } else {
      for (int64_t c = 0; c < channels_; ++c) {
        mean[c] = run_mean[c];
        rstd[c] = 1.0f / std::sqrt(run_var[c] + eps_);
      }
    }
    mean_.copy_from(host.slice(0, {channels_}));
    rstd_.copy_from(host.slice(channels_, {channels_}));
    Tensor ys = as_channels(y);
    ops::batchnorm_forward(xs, mean_, rstd_, params_[0], params_[1], ys);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext& ctx) override {
    const Tensor xs = as_channels(x), dys = as_channels(dy);
    // The parameters' gradients are this rank's sums (the reducer adds the ranks' up).
    std::vector<double> sums;
    ops::batchnorm_backward_sums(dys, xs, mean_, rstd_, sums, grads_[0], grads_[1]);
    if (!dx) return;
    if (ctx.allreduce_sum) ctx.allreduce_sum(sums.data(), static_cast<int>(sums.size()));
    if (count_ > 0) {
      Tensor dxs = as_channels(*dx);
      ops::batchnorm_backward(dys, xs, mean_, rstd_, params_[0], sums, count_, dxs);
    }
  }

 private:
  // [rows, C, rest] whatever the per-sample shape.
  Tensor as_channels(const Tensor& t) const {
    const int64_t rows = t.ndim() ? t.dim(0) : 0;
    const int64_t rest = rows && channels_ ? t.numel() / rows / channels_ : 1;
    return t.reshape({rows, channels_, rest});
  }
  int64_t per_channel(const Tensor& xs) const { return xs.dim(0) * xs.dim(2); }

  int64_t channels_ = 1;
  float eps_ = 1e-5f, momentum_ = 0.1f;
  double count_ = 0;  // values per channel over the global batch, in the last training forward
  Tensor mean_, rstd_;
};

// Per-sample input [C, H, W], as convolution and pooling take it.
void expect_image(const LayerSpec& spec, const Shape& in) {
  if (in.size() != 3)
    throw InputError(spec.where() + ": needs an input of [channels, height, width], got " +
                     shape_str(in) + " (a `reshape to=CxHxW` layer before it makes one)");
}

class Conv2d final : public Layer {
 public:
  Conv2d(LayerSpec& spec, const Shape& in) {
    expect_image(spec, in);
    out_ = spec.require_int("out");
    k_ = spec.require_int("k");
    geom_.stride = spec.get_int("stride", 1);
    geom_.pad = spec.get_int("pad", 0);
    bias_ = spec.get_bool("bias", true);
    if (out_ <= 0 || k_ <= 0 || geom_.stride <= 0 || geom_.pad < 0)
      throw InputError(spec.where() + ": out, k and stride must be positive, pad >= 0");
    const int64_t oh = (in[1] + 2 * geom_.pad - k_) / geom_.stride + 1;
    const int64_t ow = (in[2] + 2 * geom_.pad - k_) / geom_.stride + 1;
    if (in[1] + 2 * geom_.pad < k_ || in[2] + 2 * geom_.pad < k_)
      throw InputError(spec.where() + ": a " + std::to_string(k_) + "x" + std::to_string(k_) +
                       " kernel does not fit the input " + shape_str(in));
    in_shape_ = in;
    out_shape_ = {out_, oh, ow};
  }
  const char* type() const override { return "conv2d"; }
  std::vector<ParamSpec> param_specs() const override {
    const int64_t fan_in = in_shape_[0] * k_ * k_;
    std::vector<ParamSpec> p{
        {"weight", {out_, in_shape_[0], k_, k_}, true, Init::uniform_fan_in, fan_in}};
    if (bias_) p.push_back({"bias", {out_}, false, Init::uniform_fan_in, fan_in});
    return p;
  }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    ops::conv2d_forward(x, compute_params_[0], bias_ ? &compute_params_[1] : nullptr, y, geom_);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    ops::conv2d_backward(x, compute_params_[0], dy, dx, grads_[0], bias_ ? &grads_[1] : nullptr,
                         geom_, true);
  }

 private:
  int64_t out_ = 0, k_ = 0;
  ops::Conv2dGeometry geom_;
  bool bias_ = true;
};

class Pool2d final : public Layer {
 public:
  Pool2d(ops::Pool pool, LayerSpec& spec, const Shape& in) : pool_(pool) {
    expect_image(spec, in);
    k_ = spec.require_int("k");
    stride_ = spec.get_int("stride", k_);
    if (k_ <= 0 || stride_ <= 0) throw InputError(spec.where() + ": k and stride must be positive");
    if (in[1] < k_ || in[2] < k_)
      throw InputError(spec.where() + ": a " + std::to_string(k_) + "x" + std::to_string(k_) +
                       " window does not fit the input " + shape_str(in));
    in_shape_ = in;
    out_shape_ = {in[0], (in[1] - k_) / stride_ + 1, (in[2] - k_) / stride_ + 1};
  }
  const char* type() const override { return pool_ == ops::Pool::max ? "maxpool2d" : "avgpool2d"; }
  void forward(const Tensor& x, Tensor& y, const StepContext&) override {
    ops::pool2d_forward(pool_, x, y, k_, stride_);
  }
  void backward(const Tensor& x, const Tensor&, const Tensor& dy, Tensor* dx,
                const StepContext&) override {
    if (dx) ops::pool2d_backward(pool_, x, dy, *dx, k_, stride_);
  }

 private:
  ops::Pool pool_;
  int64_t k_ = 1, stride_ = 1;
};

}  // namespace

std::unique_ptr<Layer> make_batchnorm(LayerSpec& spec, const Shape& in) {
  return std::make_unique<BatchNorm>(spec, in);
}
std::unique_ptr<Layer> make_conv2d(LayerSpec& spec, const Shape& in) {
  return std::make_unique<Conv2d>(spec, in);
}
std::unique_ptr<Layer> make_pool2d(ops::Pool pool, LayerSpec& spec, const Shape& in) {
  return std::make_unique<Pool2d>(pool, spec, in);
}

}  // namespace tern
