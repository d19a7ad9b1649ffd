// The checks of the convolution, pooling and batch-norm ops (the op list: ops.cpp).
#include "tern/compute/ops.h"

#include <stdexcept>
#include <string>

#include "op_checks.h"

namespace tern::ops {

using namespace checks;

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
  Backend& be = backend_of(op, {{"x", &x}, {"w", &w}, {"y", &y}});
  const DType t = expect_compute(op, be, {{"x", &x}, {"w", &w}, {"y", &y}});
  const ConvDims d = conv_dims(op, x, w, g);
  expect_shape(op, "y", y, {d.n, d.k, d.oh, d.ow});
  if (bias) {
    backend_of(op, {{"x", &x}, {"bias", bias}});
    expect_dtype(op, "bias", *bias, t);
    expect_shape(op, "bias", *bias, {d.k});
  }
  return be.conv2d_forward(x.raw(), w.raw(), bias ? bias->raw() : nullptr, y.raw(), t, d);
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                     Tensor* dbias, Conv2dGeometry g, bool accumulate) {
  const char* op = "conv2d_backward";
  Backend& be = backend_of(op, {{"x", &x}, {"w", &w}, {"dy", &dy}, {"dw", &dw}});
  const DType t = expect_compute(op, be, {{"x", &x}, {"w", &w}, {"dy", &dy}});
  expect_f32(op, "dw", dw);
  const ConvDims d = conv_dims(op, x, w, g);
  expect_shape(op, "dy", dy, {d.n, d.k, d.oh, d.ow});
  expect_shape(op, "dw", dw, w.shape());
  if (dx) {
    backend_of(op, {{"x", &x}, {"dx", dx}});
    expect_dtype(op, "dx", *dx, t);
    expect_shape(op, "dx", *dx, x.shape());
  }
  if (dbias) {
    backend_of(op, {{"x", &x}, {"dbias", dbias}});
    expect_f32(op, "dbias", *dbias);
    expect_shape(op, "dbias", *dbias, {d.k});
  }
  return be.conv2d_backward(x.raw(), w.raw(), dy.raw(), dx ? dx->raw() : nullptr, dw.data<float>(),
                            dbias ? dbias->data<float>() : nullptr, t, d, accumulate);
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
  Backend& be = backend_of(op, {{"x", &x}, {"y", &y}});
  const DType t = expect_compute(op, be, {{"x", &x}, {"y", &y}});
  const PoolDims d = pool_dims(op, x, k, stride);
  expect_shape(op, "y", y, {d.n, d.c, d.oh, d.ow});
  return be.pool2d_forward(pool, x.raw(), y.raw(), t, d);
}

void pool2d_backward(Pool pool, const Tensor& x, const Tensor& dy, Tensor& dx, int64_t k,
                     int64_t stride) {
  const char* op = "pool2d_backward";
  Backend& be = backend_of(op, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  const DType t = expect_compute(op, be, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  const PoolDims d = pool_dims(op, x, k, stride);
  expect_shape(op, "dy", dy, {d.n, d.c, d.oh, d.ow});
  expect_shape(op, "dx", dx, x.shape());
  return be.pool2d_backward(pool, x.raw(), dy.raw(), dx.raw(), t, d);
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
    backend_of(op, {{"x", &x}, {name, v}});
    expect_f32(op, name, *v);
    expect_shape(op, name, *v, {channels});
  }
}

void batchnorm_sums(const Tensor& x, int64_t channels, std::vector<double>& sums) {
  const char* op = "batchnorm_sums";
  Backend& be = backend_of(op, {{"x", &x}});
  const DType t = expect_float(op, "x", x, be);
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  sums.assign(2 * channels, 0.0);
  return be.batchnorm_sums(x.raw(), t, n, channels, s, sums.data());
}

void batchnorm_forward(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
                       const Tensor& beta, Tensor& y) {
  const char* op = "batchnorm_forward";
  Backend& be = backend_of(op, {{"x", &x}, {"y", &y}});
  const DType t = expect_compute(op, be, {{"x", &x}, {"y", &y}});
  const int64_t channels = mean.numel();
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  bn_vectors(op, x, channels,
             {{"mean", &mean}, {"rstd", &rstd}, {"gamma", &gamma}, {"beta", &beta}});
  expect_shape(op, "y", y, x.shape());
  return be.batchnorm_forward(x.raw(), t, mean.data<float>(), rstd.data<float>(),
                              gamma.data<float>(), beta.data<float>(), y.raw(), n, channels, s);
}

void batchnorm_backward_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                             const Tensor& rstd, std::vector<double>& sums, Tensor& dgamma,
                             Tensor& dbeta) {
  const char* op = "batchnorm_backward_sums";
  Backend& be = backend_of(op, {{"dy", &dy}, {"x", &x}});
  const DType t = expect_compute(op, be, {{"dy", &dy}, {"x", &x}});
  const int64_t channels = mean.numel();
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  expect_shape(op, "dy", dy, x.shape());
  bn_vectors(op, x, channels,
             {{"mean", &mean}, {"rstd", &rstd}, {"dgamma", &dgamma}, {"dbeta", &dbeta}});
  sums.assign(2 * channels, 0.0);
  return be.batchnorm_backward_sums(dy.raw(), x.raw(), t, mean.data<float>(), rstd.data<float>(),
                                    dgamma.data<float>(), dbeta.data<float>(), n, channels, s,
                                    sums.data());
}

void batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                        const Tensor& gamma, const std::vector<double>& sums, double count,
                        Tensor& dx) {
  const char* op = "batchnorm_backward";
  Backend& be = backend_of(op, {{"dy", &dy}, {"x", &x}, {"dx", &dx}});
  const DType t = expect_compute(op, be, {{"dy", &dy}, {"x", &x}, {"dx", &dx}});
  const int64_t channels = mean.numel();
  int64_t n = 0, s = 0;
  bn_dims(op, x, channels, &n, &s);
  expect_shape(op, "dy", dy, x.shape());
  expect_shape(op, "dx", dx, x.shape());
  bn_vectors(op, x, channels, {{"mean", &mean}, {"rstd", &rstd}, {"gamma", &gamma}});
  if (static_cast<int64_t>(sums.size()) != 2 * channels)
    fail(op, "expected " + std::to_string(2 * channels) + " sums");
  if (!(count > 0)) fail(op, "count must be positive");
  return be.batchnorm_backward(dy.raw(), x.raw(), t, mean.data<float>(), rstd.data<float>(),
                               gamma.data<float>(), sums.data(), count, dx.raw(), n, channels, s);
}

}  // namespace tern::ops
