#include "tern/ops.h"

#include <cstring>
#include <stdexcept>

#include "cpu/cpu_ops.h"

#ifdef TERN_HAVE_CUDA
#include "../cuda/cuda_ops.h"
#endif

#if defined(__SSE3__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif

namespace tern::ops {
namespace {

using P = std::pair<const char*, const Tensor*>;

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("op ") + op + ": " + what);
}

// Every tensor of an op lives on one device; true when that is a GPU.
bool on_gpu(const char* op, std::initializer_list<P> tensors) {
  const Device dev = tensors.begin()->second->device();
  for (auto [name, t] : tensors)
    if (!(t->device() == dev))
      fail(op, std::string(name) + " is on " + device_name(t->device()) + ", " +
                   tensors.begin()->first + " on " + device_name(dev));
  if (dev.kind == DeviceKind::cpu) return false;
#ifndef TERN_HAVE_CUDA
  fail(op, "tensors on " + device_name(dev) + ", and this build has only the CPU backend");
#endif
  return true;
}

// f32, or (on the GPU) bf16: the compute dtype of activations.
DType expect_float(const char* op, const char* name, const Tensor& t, bool gpu) {
  if (t.dtype() == DType::f32 || (gpu && t.dtype() == DType::bf16)) return t.dtype();
  fail(op, std::string(name) + " must be f32" + (gpu ? " or bf16" : "") + ", got " +
               dtype_name(t.dtype()) + (t.dtype() == DType::bf16 ? " (bf16 needs the GPU)" : ""));
}

void expect_f32(const char* op, const char* name, const Tensor& t) {
  if (t.dtype() != DType::f32)
    fail(op, std::string(name) + " must be f32, got " + dtype_name(t.dtype()));
}

void expect_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.dtype() != want)
    fail(op, std::string(name) + " must be " + dtype_name(want) + ", got " + dtype_name(t.dtype()));
}

void expect_shape(const char* op, const char* name, const Tensor& t, const Shape& want) {
  if (t.shape() != want)
    fail(op, std::string(name) + " has shape " + shape_str(t.shape()) + ", expected " +
                 shape_str(want));
}

void expect_2d(const char* op, const char* name, const Tensor& t) {
  if (t.ndim() != 2) fail(op, std::string(name) + " must be 2-D, got " + shape_str(t.shape()));
}

void expect_same(const char* op, const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel())
    fail(op, "size mismatch " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
}

void expect_segments(const char* op, const std::vector<ParamSegment>& segments, int64_t n) {
  for (const auto& s : segments)
    if (s.offset < 0 || s.count < 0 || s.offset + s.count > n)
      fail(op, "segment [" + std::to_string(s.offset) + ", +" + std::to_string(s.count) +
                   ") outside a buffer of " + std::to_string(n));
}

}  // namespace

void flush_denormals_on_this_thread(bool on) {
#if defined(__SSE3__)
  _MM_SET_FLUSH_ZERO_MODE(on ? _MM_FLUSH_ZERO_ON : _MM_FLUSH_ZERO_OFF);
  _MM_SET_DENORMALS_ZERO_MODE(on ? _MM_DENORMALS_ZERO_ON : _MM_DENORMALS_ZERO_OFF);
#else
  (void)on;
#endif
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::relu:
      return "relu";
    case Activation::gelu:
      return "gelu";
    case Activation::tanh:
      return "tanh";
  }
  return "?";
}

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta, const Tensor* bias) {
  const bool gpu = on_gpu("gemm", {{"a", &a}, {"b", &b}, {"c", &c}});
  for (auto [n, t] : {P{"a", &a}, {"b", &b}, {"c", &c}}) expect_2d("gemm", n, *t);
  const DType ab = expect_float("gemm", "a", a, gpu);
  expect_dtype("gemm", "b", b, ab);
  // bf16 operands may write an f32 output (weight gradients into the f32 gradient buffer).
  if (c.dtype() != ab && !(ab == DType::bf16 && c.dtype() == DType::f32))
    fail("gemm",
         std::string("c is ") + dtype_name(c.dtype()) + " for " + dtype_name(ab) + " operands");
  int64_t m = trans_a ? a.dim(1) : a.dim(0), k = trans_a ? a.dim(0) : a.dim(1);
  int64_t kb = trans_b ? b.dim(1) : b.dim(0), n = trans_b ? b.dim(0) : b.dim(1);
  if (k != kb)
    fail("gemm", "inner dimensions differ: " + shape_str(a.shape()) + " x " + shape_str(b.shape()));
  expect_shape("gemm", "c", c, {m, n});
  if (bias) {
    on_gpu("gemm", {{"c", &c}, {"bias", bias}});
    expect_dtype("gemm", "bias", *bias, c.dtype());
    expect_shape("gemm", "bias", *bias, {n});
  }
  if (gpu) {
#ifdef TERN_HAVE_CUDA
    cuda::gemm(trans_a, trans_b, m, n, k, alpha, a.raw(), b.raw(), ab, beta, c.raw(), c.dtype(),
               bias ? bias->raw() : nullptr);
#endif
    return;
  }
  cpu::gemm(trans_a, trans_b, m, n, k, alpha, a.data<float>(), b.data<float>(), beta,
            c.data<float>());
  if (bias) cpu::add_bias(c.data<float>(), bias->data<float>(), m, n);
}

void add_bias(Tensor& y, const Tensor& bias) {
  const bool gpu = on_gpu("add_bias", {{"y", &y}, {"bias", &bias}});
  const DType t = expect_float("add_bias", "y", y, gpu);
  expect_dtype("add_bias", "bias", bias, t);
  expect_2d("add_bias", "y", y);
  expect_shape("add_bias", "bias", bias, {y.dim(1)});
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::add_bias(y.raw(), bias.raw(), t, y.dim(0), y.dim(1));
#endif
  cpu::add_bias(y.data<float>(), bias.data<float>(), y.dim(0), y.dim(1));
}

void bias_grad(const Tensor& dy, Tensor& dbias, bool accumulate) {
  const bool gpu = on_gpu("bias_grad", {{"dy", &dy}, {"dbias", &dbias}});
  const DType t = expect_float("bias_grad", "dy", dy, gpu);
  expect_f32("bias_grad", "dbias", dbias);
  expect_2d("bias_grad", "dy", dy);
  expect_shape("bias_grad", "dbias", dbias, {dy.dim(1)});
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::bias_grad(dy.raw(), t, dbias.data<float>(), dy.dim(0), dy.dim(1), accumulate);
#endif
  (void)t;
  cpu::bias_grad(dy.data<float>(), dbias.data<float>(), dy.dim(0), dy.dim(1), accumulate);
}

void activation_forward(Activation act, const Tensor& x, Tensor& y) {
  const bool gpu = on_gpu("activation_forward", {{"x", &x}, {"y", &y}});
  const DType t = expect_float("activation_forward", "x", x, gpu);
  expect_dtype("activation_forward", "y", y, t);
  expect_same("activation_forward", x, y);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::activation_forward(act, x.raw(), y.raw(), t, x.numel());
#endif
  cpu::activation_forward(act, x.data<float>(), y.data<float>(), x.numel());
}

void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx) {
  const bool gpu = on_gpu("activation_backward", {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  const DType t = expect_float("activation_backward", "x", x, gpu);
  expect_dtype("activation_backward", "dy", dy, t);
  expect_dtype("activation_backward", "dx", dx, t);
  expect_same("activation_backward", x, dy);
  expect_same("activation_backward", x, dx);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::activation_backward(act, x.raw(), dy.raw(), dx.raw(), t, x.numel());
#endif
  cpu::activation_backward(act, x.data<float>(), dy.data<float>(), dx.data<float>(), x.numel());
}

static void dropout_op(const char* op, const Tensor& x, Tensor& y, float p, DropoutKey key) {
  const bool gpu = on_gpu(op, {{"input", &x}, {"output", &y}});
  const DType t = expect_float(op, "input", x, gpu);
  expect_dtype(op, "output", y, t);
  expect_same(op, x, y);
  if (x.ndim() < 1) fail(op, "input needs a batch dimension");
  if (!(p >= 0.0f && p < 1.0f)) fail(op, "p must be in [0, 1), got " + std::to_string(p));
  const int64_t rows = x.dim(0), cols = x.numel() / std::max<int64_t>(x.dim(0), 1);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::dropout(x.raw(), y.raw(), t, rows, cols, p, key);
#endif
  cpu::dropout(x.data<float>(), y.data<float>(), rows, cols, p, key);
}

void dropout_forward(const Tensor& x, Tensor& y, float p, DropoutKey key) {
  dropout_op("dropout_forward", x, y, p, key);
}

void dropout_backward(const Tensor& dy, Tensor& dx, float p, DropoutKey key) {
  // The mask is the same function of the key, so backward is the forward applied to dy.
  dropout_op("dropout_backward", dy, dx, p, key);
}

void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                       Tensor& mean, Tensor& rstd, float eps) {
  const bool gpu = on_gpu(
      "layernorm_forward",
      {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}, {"y", &y}, {"mean", &mean}, {"rstd", &rstd}});
  const DType t = expect_float("layernorm_forward", "x", x, gpu);
  expect_dtype("layernorm_forward", "y", y, t);
  for (auto [n, p] : {P{"gamma", &gamma}, {"beta", &beta}, {"mean", &mean}, {"rstd", &rstd}})
    expect_f32("layernorm_forward", n, *p);
  expect_2d("layernorm_forward", "x", x);
  int64_t rows = x.dim(0), cols = x.dim(1);
  expect_shape("layernorm_forward", "gamma", gamma, {cols});
  expect_shape("layernorm_forward", "beta", beta, {cols});
  expect_shape("layernorm_forward", "y", y, x.shape());
  expect_shape("layernorm_forward", "mean", mean, {rows});
  expect_shape("layernorm_forward", "rstd", rstd, {rows});
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::layernorm_forward(x.raw(), t, gamma.data<float>(), beta.data<float>(), y.raw(),
                                   mean.data<float>(), rstd.data<float>(), rows, cols, eps);
#endif
  cpu::layernorm_forward(x.data<float>(), gamma.data<float>(), beta.data<float>(), y.data<float>(),
                         mean.data<float>(), rstd.data<float>(), rows, cols, eps);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                        bool accumulate) {
  const bool gpu = on_gpu("layernorm_backward", {{"dy", &dy},
                                                 {"x", &x},
                                                 {"gamma", &gamma},
                                                 {"mean", &mean},
                                                 {"rstd", &rstd},
                                                 {"dx", &dx},
                                                 {"dgamma", &dgamma},
                                                 {"dbeta", &dbeta}});
  const DType t = expect_float("layernorm_backward", "x", x, gpu);
  expect_dtype("layernorm_backward", "dy", dy, t);
  expect_dtype("layernorm_backward", "dx", dx, t);
  for (auto [n, p] : {P{"gamma", &gamma},
                      {"mean", &mean},
                      {"rstd", &rstd},
                      {"dgamma", &dgamma},
                      {"dbeta", &dbeta}})
    expect_f32("layernorm_backward", n, *p);
  expect_2d("layernorm_backward", "x", x);
  int64_t rows = x.dim(0), cols = x.dim(1);
  expect_shape("layernorm_backward", "dy", dy, x.shape());
  expect_shape("layernorm_backward", "dx", dx, x.shape());
  expect_shape("layernorm_backward", "gamma", gamma, {cols});
  expect_shape("layernorm_backward", "dgamma", dgamma, {cols});
  expect_shape("layernorm_backward", "dbeta", dbeta, {cols});
  expect_shape("layernorm_backward", "mean", mean, {rows});
  expect_shape("layernorm_backward", "rstd", rstd, {rows});
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::layernorm_backward(dy.raw(), x.raw(), t, gamma.data<float>(), mean.data<float>(),
                                    rstd.data<float>(), dx.raw(), dgamma.data<float>(),
                                    dbeta.data<float>(), rows, cols, accumulate);
#endif
  cpu::layernorm_backward(dy.data<float>(), x.data<float>(), gamma.data<float>(),
                          mean.data<float>(), rstd.data<float>(), dx.data<float>(),
                          dgamma.data<float>(), dbeta.data<float>(), rows, cols, accumulate);
}

LossStats softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor* dlogits,
                                float grad_scale) {
  const bool gpu = on_gpu("softmax_cross_entropy", {{"logits", &logits}, {"labels", &labels}});
  const DType t = expect_float("softmax_cross_entropy", "logits", logits, gpu);
  expect_2d("softmax_cross_entropy", "logits", logits);
  if (labels.dtype() != DType::i32) fail("softmax_cross_entropy", "labels must be i32");
  expect_shape("softmax_cross_entropy", "labels", labels, {logits.dim(0)});
  if (dlogits) {
    on_gpu("softmax_cross_entropy", {{"logits", &logits}, {"dlogits", dlogits}});
    expect_dtype("softmax_cross_entropy", "dlogits", *dlogits, t);
    expect_shape("softmax_cross_entropy", "dlogits", *dlogits, logits.shape());
  }
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::softmax_cross_entropy(logits.raw(), t, labels.data<int32_t>(),
                                       dlogits ? dlogits->raw() : nullptr, grad_scale,
                                       logits.dim(0), logits.dim(1));
#endif
  return cpu::softmax_cross_entropy(logits.data<float>(), labels.data<int32_t>(),
                                    dlogits ? dlogits->data<float>() : nullptr, grad_scale,
                                    logits.dim(0), logits.dim(1));
}

LossStats mean_squared_error(const Tensor& pred, const Tensor& target, Tensor* dpred,
                             float grad_scale) {
  const bool gpu = on_gpu("mean_squared_error", {{"pred", &pred}, {"target", &target}});
  const DType t = expect_float("mean_squared_error", "pred", pred, gpu);
  expect_f32("mean_squared_error", "target", target);
  expect_2d("mean_squared_error", "pred", pred);
  expect_same("mean_squared_error", pred, target);
  if (dpred) {
    on_gpu("mean_squared_error", {{"pred", &pred}, {"dpred", dpred}});
    expect_dtype("mean_squared_error", "dpred", *dpred, t);
    expect_shape("mean_squared_error", "dpred", *dpred, pred.shape());
  }
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::mean_squared_error(pred.raw(), t, target.data<float>(),
                                    dpred ? dpred->raw() : nullptr, grad_scale, pred.dim(0),
                                    pred.dim(1));
#endif
  return cpu::mean_squared_error(pred.data<float>(), target.data<float>(),
                                 dpred ? dpred->data<float>() : nullptr, grad_scale, pred.dim(0),
                                 pred.dim(1));
}

static void expect_4d(const char* op, const char* name, const Tensor& t) {
  if (t.ndim() != 4) fail(op, std::string(name) + " must be 4-D, got " + shape_str(t.shape()));
}

// The activations' dtype (f32, or bf16 on the GPU) shared by every named tensor.
static DType expect_compute(const char* op, bool gpu, std::initializer_list<P> tensors) {
  const DType t = expect_float(op, tensors.begin()->first, *tensors.begin()->second, gpu);
  for (auto [name, x] : tensors) expect_dtype(op, name, *x, t);
  return t;
}

static ConvDims conv_dims(const char* op, const Tensor& x, const Tensor& w, Conv2dGeometry g) {
  expect_4d(op, "x", x);
  expect_4d(op, "w", w);
  if (g.stride < 1 || g.pad < 0)
    fail(op, "stride " + std::to_string(g.stride) + " / pad " + std::to_string(g.pad));
  if (w.dim(1) != x.dim(1))
    fail(op,
         "x has " + std::to_string(x.dim(1)) + " channels, w expects " + std::to_string(w.dim(1)));
  ConvDims d{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(2),
             w.dim(3), g.stride, g.pad,    0,        0};
  d.oh = (d.h + 2 * d.pad - d.kh) / d.stride + 1;
  d.ow = (d.w + 2 * d.pad - d.kw) / d.stride + 1;
  if (d.h + 2 * d.pad < d.kh || d.w + 2 * d.pad < d.kw)
    fail(op, "a " + std::to_string(d.kh) + "x" + std::to_string(d.kw) + " kernel does not fit " +
                 shape_str(x.shape()) + " with pad " + std::to_string(d.pad));
  return d;
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                    Conv2dGeometry g) {
  const char* op = "conv2d_forward";
  const bool gpu = on_gpu(op, {{"x", &x}, {"w", &w}, {"y", &y}});
  const DType t = expect_compute(op, gpu, {{"x", &x}, {"w", &w}, {"y", &y}});
  const ConvDims d = conv_dims(op, x, w, g);
  expect_shape(op, "y", y, {d.n, d.k, d.oh, d.ow});
  if (bias) {
    on_gpu(op, {{"x", &x}, {"bias", bias}});
    expect_dtype(op, "bias", *bias, t);
    expect_shape(op, "bias", *bias, {d.k});
  }
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::conv2d_forward(x.raw(), w.raw(), bias ? bias->raw() : nullptr, y.raw(), t, d);
#endif
  cpu::conv2d_forward(x.data<float>(), w.data<float>(), bias ? bias->data<float>() : nullptr,
                      y.data<float>(), d);
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                     Tensor* dbias, Conv2dGeometry g, bool accumulate) {
  const char* op = "conv2d_backward";
  const bool gpu = on_gpu(op, {{"x", &x}, {"w", &w}, {"dy", &dy}, {"dw", &dw}});
  const DType t = expect_compute(op, gpu, {{"x", &x}, {"w", &w}, {"dy", &dy}});
  expect_f32(op, "dw", dw);
  const ConvDims d = conv_dims(op, x, w, g);
  expect_shape(op, "dy", dy, {d.n, d.k, d.oh, d.ow});
  expect_shape(op, "dw", dw, w.shape());
  if (dx) {
    on_gpu(op, {{"x", &x}, {"dx", dx}});
    expect_dtype(op, "dx", *dx, t);
    expect_shape(op, "dx", *dx, x.shape());
  }
  if (dbias) {
    on_gpu(op, {{"x", &x}, {"dbias", dbias}});
    expect_f32(op, "dbias", *dbias);
    expect_shape(op, "dbias", *dbias, {d.k});
  }
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::conv2d_backward(x.raw(), w.raw(), dy.raw(), dx ? dx->raw() : nullptr,
                                 dw.data<float>(), dbias ? dbias->data<float>() : nullptr, t, d,
                                 accumulate);
#endif
  cpu::conv2d_backward(x.data<float>(), w.data<float>(), dy.data<float>(),
                       dx ? dx->data<float>() : nullptr, dw.data<float>(),
                       dbias ? dbias->data<float>() : nullptr, d, accumulate);
}

static PoolDims pool_dims(const char* op, const Tensor& x, int64_t k, int64_t stride) {
  expect_4d(op, "x", x);
  if (k < 1 || stride < 1)
    fail(op, "window " + std::to_string(k) + " / stride " + std::to_string(stride));
  if (x.dim(2) < k || x.dim(3) < k)
    fail(op, "a " + std::to_string(k) + "x" + std::to_string(k) + " window does not fit " +
                 shape_str(x.shape()));
  return {x.dim(0),
          x.dim(1),
          x.dim(2),
          x.dim(3),
          k,
          stride,
          (x.dim(2) - k) / stride + 1,
          (x.dim(3) - k) / stride + 1};
}

void pool2d_forward(Pool pool, const Tensor& x, Tensor& y, int64_t k, int64_t stride) {
  const char* op = "pool2d_forward";
  const bool gpu = on_gpu(op, {{"x", &x}, {"y", &y}});
  const DType t = expect_compute(op, gpu, {{"x", &x}, {"y", &y}});
  const PoolDims d = pool_dims(op, x, k, stride);
  expect_shape(op, "y", y, {d.n, d.c, d.oh, d.ow});
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::pool2d_forward(pool, x.raw(), y.raw(), t, d);
#endif
  (void)t;
  cpu::pool2d_forward(pool, x.data<float>(), y.data<float>(), d);
}

void pool2d_backward(Pool pool, const Tensor& x, const Tensor& dy, Tensor& dx, int64_t k,
                     int64_t stride) {
  const char* op = "pool2d_backward";
  const bool gpu = on_gpu(op, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  const DType t = expect_compute(op, gpu, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  const PoolDims d = pool_dims(op, x, k, stride);
  expect_shape(op, "dy", dy, {d.n, d.c, d.oh, d.ow});
  expect_shape(op, "dx", dx, x.shape());
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::pool2d_backward(pool, x.raw(), dy.raw(), dx.raw(), t, d);
#endif
  (void)t;
  cpu::pool2d_backward(pool, x.data<float>(), dy.data<float>(), dx.data<float>(), d);
}

// x as [N, C, S] with C = channels.
static void bn_dims(const char* op, const Tensor& x, int64_t channels, int64_t* n, int64_t* s) {
  const auto bad = [&] {
    fail(op, shape_str(x.shape()) + " is not [N, " + std::to_string(channels) + ", ...]");
  };
  if (x.ndim() < 2 || channels < 1) bad();
  *n = x.dim(0);
  const int64_t per_row = *n ? x.numel() / *n : 0;
  if (*n && per_row % channels) bad();
  *s = *n ? per_row / channels : 0;
}

// The per-channel f32 vectors of a batch-norm call: on x's device, [channels] each.
static void bn_vectors(const char* op, const Tensor& x, int64_t channels,
                       std::initializer_list<P> vectors) {
  for (auto [name, v] : vectors) {
    on_gpu(op, {{"x", &x}, {name, v}});
    expect_f32(op, name, *v);
    expect_shape(op, name, *v, {channels});
  }
}

void batchnorm_sums(const Tensor& x, int64_t channels, std::vector<double>& sums) {
  const char* op = "batchnorm_sums";
  const bool gpu = on_gpu(op, {{"x", &x}});
  const DType t = expect_float(op, "x", x, gpu);
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  sums.assign(2 * channels, 0.0);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::batchnorm_sums(x.raw(), t, n, channels, s, sums.data());
#endif
  (void)t;
  const float* p = x.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const float* row = p + (i * channels + c) * s;
      double a = 0, b = 0;
      for (int64_t j = 0; j < s; ++j) a += row[j], b += double(row[j]) * row[j];
      sums[c] += a;
      sums[channels + c] += b;
    }
}

void batchnorm_forward(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
                       const Tensor& beta, Tensor& y) {
  const char* op = "batchnorm_forward";
  const bool gpu = on_gpu(op, {{"x", &x}, {"y", &y}});
  const DType t = expect_compute(op, gpu, {{"x", &x}, {"y", &y}});
  const int64_t channels = mean.numel();
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  bn_vectors(op, x, channels,
             {{"mean", &mean}, {"rstd", &rstd}, {"gamma", &gamma}, {"beta", &beta}});
  expect_shape(op, "y", y, x.shape());
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::batchnorm_forward(x.raw(), t, mean.data<float>(), rstd.data<float>(),
                                   gamma.data<float>(), beta.data<float>(), y.raw(), n, channels,
                                   s);
#endif
  (void)t;
  const float *p = x.data<float>(), *mu = mean.data<float>(), *rs = rstd.data<float>();
  const float *g = gamma.data<float>(), *b = beta.data<float>();
  float* out = y.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * s;
      const float k = rs[c] * g[c], off = b[c] - mu[c] * k;
      for (int64_t j = 0; j < s; ++j) out[base + j] = p[base + j] * k + off;
    }
}

void batchnorm_backward_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                             const Tensor& rstd, std::vector<double>& sums, Tensor& dgamma,
                             Tensor& dbeta) {
  const char* op = "batchnorm_backward_sums";
  const bool gpu = on_gpu(op, {{"dy", &dy}, {"x", &x}});
  const DType t = expect_compute(op, gpu, {{"dy", &dy}, {"x", &x}});
  const int64_t channels = mean.numel();
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  expect_shape(op, "dy", dy, x.shape());
  bn_vectors(op, x, channels,
             {{"mean", &mean}, {"rstd", &rstd}, {"dgamma", &dgamma}, {"dbeta", &dbeta}});
  sums.assign(2 * channels, 0.0);
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::batchnorm_backward_sums(dy.raw(), x.raw(), t, mean.data<float>(),
                                         rstd.data<float>(), dgamma.data<float>(),
                                         dbeta.data<float>(), n, channels, s, sums.data());
#endif
  (void)t;
  const float *p = x.data<float>(), *g = dy.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * s;
      const float mu = mean.data<float>()[c], rs = rstd.data<float>()[c];
      double a = 0, b = 0;
      for (int64_t j = 0; j < s; ++j)
        a += g[base + j], b += double(g[base + j]) * (p[base + j] - mu) * rs;
      sums[c] += a;
      sums[channels + c] += b;
    }
  for (int64_t c = 0; c < channels; ++c) {
    dbeta.data<float>()[c] += static_cast<float>(sums[c]);
    dgamma.data<float>()[c] += static_cast<float>(sums[channels + c]);
  }
}

void batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                        const Tensor& gamma, const std::vector<double>& sums, double count,
                        Tensor& dx) {
  const char* op = "batchnorm_backward";
  const bool gpu = on_gpu(op, {{"dy", &dy}, {"x", &x}, {"dx", &dx}});
  const DType t = expect_compute(op, gpu, {{"dy", &dy}, {"x", &x}, {"dx", &dx}});
  const int64_t channels = mean.numel();
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  expect_shape(op, "dy", dy, x.shape());
  expect_shape(op, "dx", dx, x.shape());
  bn_vectors(op, x, channels, {{"mean", &mean}, {"rstd", &rstd}, {"gamma", &gamma}});
  if (static_cast<int64_t>(sums.size()) != 2 * channels)
    fail(op, "expected " + std::to_string(2 * channels) + " sums");
  if (!(count > 0)) fail(op, "count must be positive");
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::batchnorm_backward(dy.raw(), x.raw(), t, mean.data<float>(), rstd.data<float>(),
                                    gamma.data<float>(), sums.data(), count, dx.raw(), n, channels,
                                    s);
#endif
  (void)t;
  const float *p = x.data<float>(), *g = dy.data<float>();
  float* out = dx.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t base = (i * channels + c) * s;
      const float mu = mean.data<float>()[c], rs = rstd.data<float>()[c];
      const float k = gamma.data<float>()[c] * rs;
      const float m1 = static_cast<float>(sums[c] / count);
      const float m2 = static_cast<float>(sums[channels + c] / count);
      for (int64_t j = 0; j < s; ++j)
        out[base + j] = k * (g[base + j] - m1 - (p[base + j] - mu) * rs * m2);
    }
}

static void expect_ids(const char* op, const Tensor& ids) {
  if (ids.dtype() != DType::i32 || ids.ndim() != 2)
    fail(op, "ids must be i32 [N, T], got " + std::string(dtype_name(ids.dtype())) +
                 shape_str(ids.shape()));
}

// Id `id` at flat position i of ids [N, T] is outside [0, vocab).
[[noreturn]] static void bad_id(const char* op, const Tensor& ids, int64_t i, int32_t id,
                                int64_t vocab) {
  const int64_t t = ids.dim(1);
  throw std::out_of_range(std::string(op) + ": ids[" + std::to_string(i / t) + ", " +
                          std::to_string(i % t) + "] = " + std::to_string(id) + ", outside [0, " +
                          std::to_string(vocab) + ")");
}

// The table, positions (optional) and activation tensors of an embedding call.
static void embedding_args(const char* op, bool gpu, const Tensor& ids, const Tensor& table,
                           const Tensor* positions, const Tensor& act, const char* act_name) {
  expect_ids(op, ids);
  expect_f32(op, "table", table);
  expect_float(op, act_name, act, gpu);
  expect_2d(op, "table", table);
  const int64_t n = ids.dim(0), t = ids.dim(1), c = table.dim(1);
  expect_shape(op, act_name, act, {n, t, c});
  if (positions) {
    on_gpu(op, {{"table", &table}, {"positions", positions}});
    expect_f32(op, "positions", *positions);
    if (positions->ndim() != 2 || positions->dim(0) < t || positions->dim(1) != c)
      fail(op, "positions " + shape_str(positions->shape()) + " cannot cover " + std::to_string(t) +
                   " positions of width " + std::to_string(c));
  }
}

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor* positions,
                       Tensor& out) {
  const char* op = "embedding_forward";
  const bool gpu = on_gpu(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  embedding_args(op, gpu, ids, table, positions, out, "out");
  const int64_t n = ids.dim(0), t = ids.dim(1), vocab = table.dim(0), c = table.dim(1);
#ifdef TERN_HAVE_CUDA
  if (gpu) {
    const int64_t bad = cuda::embedding_forward(ids.data<int32_t>(), table.data<float>(),
                                                positions ? positions->data<float>() : nullptr,
                                                out.raw(), out.dtype(), n, t, vocab, c);
    if (bad >= 0) {
      Tensor one = Tensor::empty({1}, DType::i32);
      one.copy_from(ids.reshape({n * t}).slice(bad, {1}));
      bad_id(op, ids, bad, one.data<int32_t>()[0], vocab);
    }
    return;
  }
#endif
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < n * t; ++i) {
    if (id[i] < 0 || id[i] >= vocab) bad_id(op, ids, i, id[i], vocab);
    float* o = out.data<float>() + i * c;
    std::memcpy(o, table.data<float>() + id[i] * c, sizeof(float) * c);
    if (positions) {
      const float* p = positions->data<float>() + (i % t) * c;
      for (int64_t j = 0; j < c; ++j) o[j] += p[j];
    }
  }
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable, Tensor* dpositions) {
  const char* op = "embedding_backward";
  const bool gpu = on_gpu(op, {{"ids", &ids}, {"dout", &dout}, {"dtable", &dtable}});
  embedding_args(op, gpu, ids, dtable, dpositions, dout, "dout");
  const int64_t n = ids.dim(0), t = ids.dim(1), vocab = dtable.dim(0), c = dtable.dim(1);
#ifdef TERN_HAVE_CUDA
  // Ids were checked by the forward pass; the kernels skip any outside the table.
  if (gpu)
    return cuda::embedding_backward(
        ids.data<int32_t>(), dout.raw(), dout.dtype(), dtable.data<float>(),
        dpositions ? dpositions->data<float>() : nullptr, n, t, vocab, c);
#endif
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < n * t; ++i) {
    if (id[i] < 0 || id[i] >= vocab) bad_id(op, ids, i, id[i], vocab);
    const float* g = dout.data<float>() + i * c;
    float* d = dtable.data<float>() + id[i] * c;
    for (int64_t j = 0; j < c; ++j) d[j] += g[j];
    if (dpositions) {
      float* dp = dpositions->data<float>() + (i % t) * c;
      for (int64_t j = 0; j < c; ++j) dp[j] += g[j];
    }
  }
}

// qkv [N, T, 3C] with C = heads x D.
static AttentionDims attention_dims(const char* op, const Tensor& qkv, int64_t heads) {
  if (qkv.ndim() != 3 || qkv.dim(2) % 3)
    fail(op, "qkv must be [N, T, 3C], got " + shape_str(qkv.shape()));
  const int64_t c = qkv.dim(2) / 3;
  if (heads < 1 || c % heads)
    fail(op, std::to_string(c) + " channels do not split into " + std::to_string(heads) + " heads");
  return {qkv.dim(0), qkv.dim(1), heads, c / heads};
}

void attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, int64_t heads) {
  const char* op = "attention_forward";
  const bool gpu = on_gpu(op, {{"qkv", &qkv}, {"out", &out}, {"lse", &lse}});
  const DType t = expect_compute(op, gpu, {{"qkv", &qkv}, {"out", &out}});
  expect_f32(op, "lse", lse);
  const AttentionDims a = attention_dims(op, qkv, heads);
  expect_shape(op, "out", out, {a.n, a.t, a.heads * a.d});
  expect_shape(op, "lse", lse, {a.n, a.heads, a.t});
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::attention_forward(qkv.raw(), t, out.raw(), lse.data<float>(), a.n, a.t, a.heads,
                                   a.d);
#endif
  (void)t;
  cpu::attention_forward(qkv.data<float>(), out.data<float>(), lse.data<float>(), a);
}

void attention_backward(const Tensor& qkv, const Tensor& out, const Tensor& dout, const Tensor& lse,
                        Tensor& dqkv, int64_t heads) {
  const char* op = "attention_backward";
  const bool gpu =
      on_gpu(op, {{"qkv", &qkv}, {"out", &out}, {"dout", &dout}, {"lse", &lse}, {"dqkv", &dqkv}});
  const DType t =
      expect_compute(op, gpu, {{"qkv", &qkv}, {"out", &out}, {"dout", &dout}, {"dqkv", &dqkv}});
  expect_f32(op, "lse", lse);
  const AttentionDims a = attention_dims(op, qkv, heads);
  expect_shape(op, "out", out, {a.n, a.t, a.heads * a.d});
  expect_shape(op, "dout", dout, out.shape());
  expect_shape(op, "dqkv", dqkv, qkv.shape());
  expect_shape(op, "lse", lse, {a.n, a.heads, a.t});
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::attention_backward(qkv.raw(), out.raw(), dout.raw(), lse.data<float>(), t,
                                    dqkv.raw(), a.n, a.t, a.heads, a.d);
#endif
  (void)t;
  cpu::attention_backward(qkv.data<float>(), out.data<float>(), dout.data<float>(),
                          lse.data<float>(), dqkv.data<float>(), a);
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "add";
  const bool gpu = on_gpu(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  const DType t = expect_compute(op, gpu, {{"a", &a}, {"b", &b}, {"out", &out}});
  expect_same(op, a, b);
  expect_same(op, a, out);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::add(a.raw(), b.raw(), out.raw(), t, out.numel());
#endif
  (void)t;
  cpu::add(a.data<float>(), b.data<float>(), out.data<float>(), out.numel());
}

double sum_squares(const Tensor& x) {
  const bool gpu = on_gpu("sum_squares", {{"x", &x}});
  expect_f32("sum_squares", "x", x);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::sum_squares(x.data<float>(), x.numel());
#endif
  (void)gpu;
  return cpu::sum_squares(x.data<float>(), x.numel());
}

void scale(Tensor& x, float s) {
  const bool gpu = on_gpu("scale", {{"x", &x}});
  expect_f32("scale", "x", x);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::scale(x.data<float>(), s, x.numel());
#endif
  (void)gpu;
  cpu::scale(x.data<float>(), s, x.numel());
}

// The shadow copy is written where the update writes: inside the segments only.
static void convert_segments(const Tensor& param, Tensor& shadow,
                             const std::vector<ParamSegment>& segments) {
  for (const auto& s : segments) {
    Tensor dst = shadow.slice(s.offset, {s.count});
    convert(param.slice(s.offset, {s.count}), dst);
  }
}

static void check_shadow(const char* op, const Tensor& param, const Tensor* shadow) {
  if (!shadow) return;
  on_gpu(op, {{"param", &param}, {"shadow", shadow}});
  expect_dtype(op, "shadow", *shadow, DType::bf16);
  expect_same(op, param, *shadow);
}

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const std::vector<ParamSegment>& segments, const AdamWHyper& h, Tensor* shadow) {
  const bool gpu =
      on_gpu("adamw_update", {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  for (auto [n, t] : {P{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}})
    expect_f32("adamw_update", n, *t);
  expect_same("adamw_update", param, grad);
  expect_same("adamw_update", param, m);
  expect_same("adamw_update", param, v);
  expect_segments("adamw_update", segments, param.numel());
  check_shadow("adamw_update", param, shadow);
  if (h.step < 1) fail("adamw_update", "step is 1-based");
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::adamw_update(param.data<float>(), grad.data<float>(), m.data<float>(),
                              v.data<float>(), segments, h, shadow ? shadow->raw() : nullptr);
#endif
  (void)gpu;
  cpu::adamw_update(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                    segments, h);
  if (shadow) convert_segments(param, *shadow, segments);
}

void sgd_update(Tensor& param, const Tensor& grad, Tensor& velocity,
                const std::vector<ParamSegment>& segments, const SgdHyper& h, Tensor* shadow) {
  const bool gpu =
      on_gpu("sgd_update", {{"param", &param}, {"grad", &grad}, {"velocity", &velocity}});
  for (auto [n, t] : {P{"param", &param}, {"grad", &grad}, {"velocity", &velocity}})
    expect_f32("sgd_update", n, *t);
  expect_same("sgd_update", param, grad);
  expect_same("sgd_update", param, velocity);
  expect_segments("sgd_update", segments, param.numel());
  check_shadow("sgd_update", param, shadow);
#ifdef TERN_HAVE_CUDA
  if (gpu)
    return cuda::sgd_update(param.data<float>(), grad.data<float>(), velocity.data<float>(),
                            segments, h, shadow ? shadow->raw() : nullptr);
#endif
  (void)gpu;
  cpu::sgd_update(param.data<float>(), grad.data<float>(), velocity.data<float>(), segments, h);
  if (shadow) convert_segments(param, *shadow, segments);
}

void convert(const Tensor& src, Tensor& dst) {
  const bool gpu = on_gpu("convert", {{"src", &src}, {"dst", &dst}});
  expect_same("convert", src, dst);
#ifdef TERN_HAVE_CUDA
  if (gpu) return cuda::convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel());
#endif
  (void)gpu;
  cpu::convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel());
}

}  // namespace tern::ops
