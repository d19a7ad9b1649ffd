#include "tern/ops.h"

#include <stdexcept>

#include "cpu/cpu_ops.h"

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

void expect_f32(const char* op, const char* name, const Tensor& t) {
  if (t.dtype() != DType::f32)
    fail(op, std::string(name) + " must be f32, got " + dtype_name(t.dtype()));
  if (t.device().kind != DeviceKind::cpu)
    fail(op, std::string(name) + " is on " + device_name(t.device()) +
                 ", and this build has only the CPU backend");
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
          float beta) {
  for (auto [n, t] : {P{"a", &a}, {"b", &b}, {"c", &c}}) {
    expect_f32("gemm", n, *t);
    expect_2d("gemm", n, *t);
  }
  int64_t m = trans_a ? a.dim(1) : a.dim(0), k = trans_a ? a.dim(0) : a.dim(1);
  int64_t kb = trans_b ? b.dim(1) : b.dim(0), n = trans_b ? b.dim(0) : b.dim(1);
  if (k != kb)
    fail("gemm", "inner dimensions differ: " + shape_str(a.shape()) + " x " + shape_str(b.shape()));
  expect_shape("gemm", "c", c, {m, n});
  cpu::gemm(trans_a, trans_b, m, n, k, alpha, a.data<float>(), b.data<float>(), beta,
            c.data<float>());
}

void add_bias(Tensor& y, const Tensor& bias) {
  expect_f32("add_bias", "y", y);
  expect_f32("add_bias", "bias", bias);
  expect_2d("add_bias", "y", y);
  expect_shape("add_bias", "bias", bias, {y.dim(1)});
  cpu::add_bias(y.data<float>(), bias.data<float>(), y.dim(0), y.dim(1));
}

void bias_grad(const Tensor& dy, Tensor& dbias, bool accumulate) {
  expect_f32("bias_grad", "dy", dy);
  expect_f32("bias_grad", "dbias", dbias);
  expect_2d("bias_grad", "dy", dy);
  expect_shape("bias_grad", "dbias", dbias, {dy.dim(1)});
  cpu::bias_grad(dy.data<float>(), dbias.data<float>(), dy.dim(0), dy.dim(1), accumulate);
}

void activation_forward(Activation act, const Tensor& x, Tensor& y) {
  expect_f32("activation_forward", "x", x);
  expect_f32("activation_forward", "y", y);
  expect_same("activation_forward", x, y);
  cpu::activation_forward(act, x.data<float>(), y.data<float>(), x.numel());
}

void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx) {
  for (auto [n, t] : {P{"x", &x}, {"dy", &dy}, {"dx", &dx}})
    expect_f32("activation_backward", n, *t);
  expect_same("activation_backward", x, dy);
  expect_same("activation_backward", x, dx);
  cpu::activation_backward(act, x.data<float>(), dy.data<float>(), dx.data<float>(), x.numel());
}

static void check_dropout(const char* op, const Tensor& x, const Tensor& y, float p) {
  expect_f32(op, "input", x);
  expect_f32(op, "output", y);
  expect_same(op, x, y);
  if (x.ndim() < 1) fail(op, "input needs a batch dimension");
  if (!(p >= 0.0f && p < 1.0f)) fail(op, "p must be in [0, 1), got " + std::to_string(p));
}

void dropout_forward(const Tensor& x, Tensor& y, float p, DropoutKey key) {
  check_dropout("dropout_forward", x, y, p);
  cpu::dropout(x.data<float>(), y.data<float>(), x.dim(0),
               x.numel() / std::max<int64_t>(x.dim(0), 1), p, key);
}

void dropout_backward(const Tensor& dy, Tensor& dx, float p, DropoutKey key) {
  // The mask is the same function of the key, so backward is the forward applied to dy.
  check_dropout("dropout_backward", dy, dx, p);
  cpu::dropout(dy.data<float>(), dx.data<float>(), dy.dim(0),
               dy.numel() / std::max<int64_t>(dy.dim(0), 1), p, key);
}

void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                       Tensor& mean, Tensor& rstd, float eps) {
  for (auto [n, t] : {P{"x", &x},
                      {"gamma", &gamma},
                      {"beta", &beta},
                      {"y", &y},
                      {"mean", &mean},
                      {"rstd", &rstd}})
    expect_f32("layernorm_forward", n, *t);
  expect_2d("layernorm_forward", "x", x);
  int64_t rows = x.dim(0), cols = x.dim(1);
  expect_shape("layernorm_forward", "gamma", gamma, {cols});
  expect_shape("layernorm_forward", "beta", beta, {cols});
  expect_shape("layernorm_forward", "y", y, x.shape());
  expect_shape("layernorm_forward", "mean", mean, {rows});
  expect_shape("layernorm_forward", "rstd", rstd, {rows});
  cpu::layernorm_forward(x.data<float>(), gamma.data<float>(), beta.data<float>(), y.data<float>(),
                         mean.data<float>(), rstd.data<float>(), rows, cols, eps);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                        bool accumulate) {
  for (auto [n, t] : {P{"dy", &dy},
                      {"x", &x},
                      {"gamma", &gamma},
                      {"mean", &mean},
                      {"rstd", &rstd},
                      {"dx", &dx},
                      {"dgamma", &dgamma},
                      {"dbeta", &dbeta}})
    expect_f32("layernorm_backward", n, *t);
  expect_2d("layernorm_backward", "x", x);
  int64_t rows = x.dim(0), cols = x.dim(1);
  expect_shape("layernorm_backward", "dy", dy, x.shape());
  expect_shape("layernorm_backward", "dx", dx, x.shape());
  expect_shape("layernorm_backward", "gamma", gamma, {cols});
  expect_shape("layernorm_backward", "dgamma", dgamma, {cols});
  expect_shape("layernorm_backward", "dbeta", dbeta, {cols});
  expect_shape("layernorm_backward", "mean", mean, {rows});
  expect_shape("layernorm_backward", "rstd", rstd, {rows});
  cpu::layernorm_backward(dy.data<float>(), x.data<float>(), gamma.data<float>(),
                          mean.data<float>(), rstd.data<float>(), dx.data<float>(),
                          dgamma.data<float>(), dbeta.data<float>(), rows, cols, accumulate);
}

LossStats softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor* dlogits,
                                float grad_scale) {
  expect_f32("softmax_cross_entropy", "logits", logits);
  expect_2d("softmax_cross_entropy", "logits", logits);
  if (labels.dtype() != DType::i32) fail("softmax_cross_entropy", "labels must be i32");
  expect_shape("softmax_cross_entropy", "labels", labels, {logits.dim(0)});
  float* d = nullptr;
  if (dlogits) {
    expect_f32("softmax_cross_entropy", "dlogits", *dlogits);
    expect_shape("softmax_cross_entropy", "dlogits", *dlogits, logits.shape());
    d = dlogits->data<float>();
  }
  return cpu::softmax_cross_entropy(logits.data<float>(), labels.data<int32_t>(), d, grad_scale,
                                    logits.dim(0), logits.dim(1));
}

LossStats mean_squared_error(const Tensor& pred, const Tensor& target, Tensor* dpred,
                             float grad_scale) {
  expect_f32("mean_squared_error", "pred", pred);
  expect_f32("mean_squared_error", "target", target);
  expect_2d("mean_squared_error", "pred", pred);
  expect_same("mean_squared_error", pred, target);
  float* d = nullptr;
  if (dpred) {
    expect_f32("mean_squared_error", "dpred", *dpred);
    expect_shape("mean_squared_error", "dpred", *dpred, pred.shape());
    d = dpred->data<float>();
  }
  return cpu::mean_squared_error(pred.data<float>(), target.data<float>(), d, grad_scale,
                                 pred.dim(0), pred.dim(1));
}

double sum_squares(const Tensor& x) {
  expect_f32("sum_squares", "x", x);
  return cpu::sum_squares(x.data<float>(), x.numel());
}

void scale(Tensor& x, float s) {
  expect_f32("scale", "x", x);
  cpu::scale(x.data<float>(), s, x.numel());
}

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const std::vector<ParamSegment>& segments, const AdamWHyper& h) {
  for (auto [n, t] : {P{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}})
    expect_f32("adamw_update", n, *t);
  expect_same("adamw_update", param, grad);
  expect_same("adamw_update", param, m);
  expect_same("adamw_update", param, v);
  expect_segments("adamw_update", segments, param.numel());
  if (h.step < 1) fail("adamw_update", "step is 1-based");
  cpu::adamw_update(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                    segments, h);
}

void sgd_update(Tensor& param, const Tensor& grad, Tensor& velocity,
                const std::vector<ParamSegment>& segments, const SgdHyper& h) {
  for (auto [n, t] : {P{"param", &param}, {"grad", &grad}, {"velocity", &velocity}})
    expect_f32("sgd_update", n, *t);
  expect_same("sgd_update", param, grad);
  expect_same("sgd_update", param, velocity);
  expect_segments("sgd_update", segments, param.numel());
  cpu::sgd_update(param.data<float>(), grad.data<float>(), velocity.data<float>(), segments, h);
}

}  // namespace tern::ops
