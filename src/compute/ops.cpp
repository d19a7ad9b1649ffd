// The op list (tern/compute/ops.h): each op checks its arguments (dtype, shape, device) and
// hands raw pointers to the backend of its tensors' device (tern/compute/backend.h). The checks
// of the convolution, pooling and batch-norm ops are in ops_spatial.cpp, those of the embedding
// and attention ops in ops_sequence.cpp.
#include "tern/compute/ops.h"

#include <cstring>
#include <stdexcept>

#include "op_checks.h"

namespace tern::ops {

using namespace checks;

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
  Backend& be = backend_of("gemm", {{"a", &a}, {"b", &b}, {"c", &c}});
  for (auto [n, t] : {P{"a", &a}, {"b", &b}, {"c", &c}}) expect_2d("gemm", n, *t);
  const DType ab = expect_float("gemm", "a", a, be);
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
    backend_of("gemm", {{"c", &c}, {"bias", bias}});
    expect_dtype("gemm", "bias", *bias, c.dtype());
    expect_shape("gemm", "bias", *bias, {n});
  }
  be.gemm(trans_a, trans_b, m, n, k, alpha, a.raw(), b.raw(), ab, beta, c.raw(), c.dtype(),
          bias ? bias->raw() : nullptr);
}

void add_bias(Tensor& y, const Tensor& bias) {
  Backend& be = backend_of("add_bias", {{"y", &y}, {"bias", &bias}});
  const DType t = expect_float("add_bias", "y", y, be);
  expect_dtype("add_bias", "bias", bias, t);
  expect_2d("add_bias", "y", y);
  expect_shape("add_bias", "bias", bias, {y.dim(1)});
  return be.add_bias(y.raw(), bias.raw(), t, y.dim(0), y.dim(1));
}

void bias_grad(const Tensor& dy, Tensor& dbias, bool accumulate) {
  Backend& be = backend_of("bias_grad", {{"dy", &dy}, {"dbias", &dbias}});
  const DType t = expect_float("bias_grad", "dy", dy, be);
  expect_f32("bias_grad", "dbias", dbias);
  expect_2d("bias_grad", "dy", dy);
  expect_shape("bias_grad", "dbias", dbias, {dy.dim(1)});
  return be.bias_grad(dy.raw(), t, dbias.data<float>(), dy.dim(0), dy.dim(1), accumulate);
}

void activation_forward(Activation act, const Tensor& x, Tensor& y) {
  Backend& be = backend_of("activation_forward", {{"x", &x}, {"y", &y}});
  const DType t = expect_float("activation_forward", "x", x, be);
  expect_dtype("activation_forward", "y", y, t);
  expect_same("activation_forward", x, y);
  return be.activation_forward(act, x.raw(), y.raw(), t, x.numel());
}

void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx) {
  Backend& be = backend_of("activation_backward", {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  const DType t = expect_float("activation_backward", "x", x, be);
  expect_dtype("activation_backward", "dy", dy, t);
  expect_dtype("activation_backward", "dx", dx, t);
  expect_same("activation_backward", x, dy);
  expect_same("activation_backward", x, dx);
  return be.activation_backward(act, x.raw(), dy.raw(), dx.raw(), t, x.numel());
}

static void dropout_op(const char* op, const Tensor& x, Tensor& y, float p, DropoutKey key) {
  Backend& be = backend_of(op, {{"input", &x}, {"output", &y}});
  const DType t = expect_float(op, "input", x, be);
  expect_dtype(op, "output", y, t);
  expect_same(op, x, y);
  if (x.ndim() < 1) fail(op, "input needs a batch dimension");
  if (!(p >= 0.0f && p < 1.0f)) fail(op, "p must be in [0, 1), got " + std::to_string(p));
  const int64_t rows = x.dim(0), cols = x.numel() / std::max<int64_t>(x.dim(0), 1);
  return be.dropout(x.raw(), y.raw(), t, rows, cols, p, key);
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
  Backend& be = backend_of(
      "layernorm_forward",
      {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}, {"y", &y}, {"mean", &mean}, {"rstd", &rstd}});
  const DType t = expect_float("layernorm_forward", "x", x, be);
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
  return be.layernorm_forward(x.raw(), t, gamma.data<float>(), beta.data<float>(), y.raw(),
                              mean.data<float>(), rstd.data<float>(), rows, cols, eps);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                        bool accumulate) {
  Backend& be = backend_of("layernorm_backward", {{"dy", &dy},
                                                  {"x", &x},
                                                  {"gamma", &gamma},
                                                  {"mean", &mean},
                                                  {"rstd", &rstd},
                                                  {"dx", &dx},
                                                  {"dgamma", &dgamma},
                                                  {"dbeta", &dbeta}});
  const DType t = expect_float("layernorm_backward", "x", x, be);
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
  return be.layernorm_backward(dy.raw(), x.raw(), t, gamma.data<float>(), mean.data<float>(),
                               rstd.data<float>(), dx.raw(), dgamma.data<float>(),
                               dbeta.data<float>(), rows, cols, accumulate);
}

LossStats softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor* dlogits,
                                float grad_scale) {
  Backend& be = backend_of("softmax_cross_entropy", {{"logits", &logits}, {"labels", &labels}});
  const DType t = expect_float("softmax_cross_entropy", "logits", logits, be);
  expect_2d("softmax_cross_entropy", "logits", logits);
  if (labels.dtype() != DType::i32) fail("softmax_cross_entropy", "labels must be i32");
  expect_shape("softmax_cross_entropy", "labels", labels, {logits.dim(0)});
  if (dlogits) {
    backend_of("softmax_cross_entropy", {{"logits", &logits}, {"dlogits", dlogits}});
    expect_dtype("softmax_cross_entropy", "dlogits", *dlogits, t);
    expect_shape("softmax_cross_entropy", "dlogits", *dlogits, logits.shape());
  }
  return be.softmax_cross_entropy(logits.raw(), t, labels.data<int32_t>(),
                                  dlogits ? dlogits->raw() : nullptr, grad_scale, logits.dim(0),
                                  logits.dim(1));
}

LossStats mean_squared_error(const Tensor& pred, const Tensor& target, Tensor* dpred,
                             float grad_scale) {
  Backend& be = backend_of("mean_squared_error", {{"pred", &pred}, {"target", &target}});
  const DType t = expect_float("mean_squared_error", "pred", pred, be);
  expect_f32("mean_squared_error", "target", target);
  expect_2d("mean_squared_error", "pred", pred);
  expect_same("mean_squared_error", pred, target);
  if (dpred) {
    backend_of("mean_squared_error", {{"pred", &pred}, {"dpred", dpred}});
    expect_dtype("mean_squared_error", "dpred", *dpred, t);
    expect_shape("mean_squared_error", "dpred", *dpred, pred.shape());
  }
  return be.mean_squared_error(pred.raw(), t, target.data<float>(), dpred ? dpred->raw() : nullptr,
                               grad_scale, pred.dim(0), pred.dim(1));
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "add";
  Backend& be = backend_of(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  const DType t = expect_compute(op, be, {{"a", &a}, {"b", &b}, {"out", &out}});
  expect_same(op, a, b);
  expect_same(op, a, out);
  return be.add(a.raw(), b.raw(), out.raw(), t, out.numel());
}

double sum_squares(const Tensor& x) {
  Backend& be = backend_of("sum_squares", {{"x", &x}});
  expect_f32("sum_squares", "x", x);
  return be.sum_squares(x.data<float>(), x.numel());
}

void scale(Tensor& x, float s) {
  Backend& be = backend_of("scale", {{"x", &x}});
  expect_f32("scale", "x", x);
  return be.scale(x.data<float>(), s, x.numel());
}

static void check_shadow(const char* op, const Tensor& param, const Tensor* shadow) {
  if (!shadow) return;
  backend_of(op, {{"param", &param}, {"shadow", shadow}});
  expect_dtype(op, "shadow", *shadow, DType::bf16);
  expect_same(op, param, *shadow);
}

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const std::vector<ParamSegment>& segments, const AdamWHyper& h, Tensor* shadow) {
  Backend& be =
      backend_of("adamw_update", {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  for (auto [n, t] : {P{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}})
    expect_f32("adamw_update", n, *t);
  expect_same("adamw_update", param, grad);
  expect_same("adamw_update", param, m);
  expect_same("adamw_update", param, v);
  expect_segments("adamw_update", segments, param.numel());
  check_shadow("adamw_update", param, shadow);
  if (h.step < 1) fail("adamw_update", "step is 1-based");
  return be.adamw_update(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                         segments, h, shadow ? shadow->raw() : nullptr);
}

void sgd_update(Tensor& param, const Tensor& grad, Tensor& velocity,
                const std::vector<ParamSegment>& segments, const SgdHyper& h, Tensor* shadow) {
  Backend& be =
      backend_of("sgd_update", {{"param", &param}, {"grad", &grad}, {"velocity", &velocity}});
  for (auto [n, t] : {P{"param", &param}, {"grad", &grad}, {"velocity", &velocity}})
    expect_f32("sgd_update", n, *t);
  expect_same("sgd_update", param, grad);
  expect_same("sgd_update", param, velocity);
  expect_segments("sgd_update", segments, param.numel());
  check_shadow("sgd_update", param, shadow);
  return be.sgd_update(param.data<float>(), grad.data<float>(), velocity.data<float>(), segments, h,
                       shadow ? shadow->raw() : nullptr);
}

void convert(const Tensor& src, Tensor& dst) {
  Backend& be = backend_of("convert", {{"src", &src}, {"dst", &dst}});
  expect_same("convert", src, dst);
  return be.convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel());
}

}  // namespace tern::ops
