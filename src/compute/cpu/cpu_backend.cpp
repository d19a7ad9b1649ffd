// The CPU backend: the op list's reference implementations (the kernels of src/compute/cpu/)
// behind the backend table. Every pointer is f32 here: ops.cpp admits bf16 only where
// supports_bf16(), and the CPU's convert is the one op that reads or writes bf16.
#include <cstring>

#include "cpu/cpu_ops.h"
#include "tern/compute/backend.h"

namespace tern::cpu {
namespace {

float* f(void* p) { return static_cast<float*>(p); }
const float* f(const void* p) { return static_cast<const float*>(p); }

// The bf16 copy of the parameters within the updated segments.
void write_shadow(const float* p, void* shadow, const std::vector<ops::ParamSegment>& segments) {
  if (!shadow) return;
  for (const auto& s : segments)
    convert(p + s.offset, DType::f32, static_cast<uint16_t*>(shadow) + s.offset, DType::bf16,
            s.count);
}

class CpuBackend final : public compute::Backend {
 public:
  const char* name() const override { return "cpu"; }
  bool supports_bf16() const override { return false; }

  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
            const void* b, DType, float beta, void* c, DType, const void* bias) override {
    cpu::gemm(ta, tb, m, n, k, alpha, f(a), f(b), beta, f(c));
    if (bias) cpu::add_bias(f(c), f(bias), m, n);
  }
  void add_bias(void* y, const void* bias, DType, int64_t rows, int64_t cols) override {
    cpu::add_bias(f(y), f(bias), rows, cols);
  }
  void bias_grad(const void* dy, DType, float* dbias, int64_t rows, int64_t cols,
                 bool accumulate) override {
    cpu::bias_grad(f(dy), dbias, rows, cols, accumulate);
  }
  void activation_forward(ops::Activation act, const void* x, void* y, DType, int64_t n) override {
    cpu::activation_forward(act, f(x), f(y), n);
  }
  void activation_backward(ops::Activation act, const void* x, const void* dy, void* dx, DType,
                           int64_t n) override {
    cpu::activation_backward(act, f(x), f(dy), f(dx), n);
  }
  void dropout(const void* x, void* y, DType, int64_t rows, int64_t cols, float p,
               ops::DropoutKey key) override {
    cpu::dropout(f(x), f(y), rows, cols, p, key);
  }
  void layernorm_forward(const void* x, DType, const float* gamma, const float* beta, void* y,
                         float* mean, float* rstd, int64_t rows, int64_t cols, float eps) override {
    cpu::layernorm_forward(f(x), gamma, beta, f(y), mean, rstd, rows, cols, eps);
  }
  void layernorm_backward(const void* dy, const void* x, DType, const float* gamma,
                          const float* mean, const float* rstd, void* dx, float* dgamma,
                          float* dbeta, int64_t rows, int64_t cols, bool accumulate) override {
    cpu::layernorm_backward(f(dy), f(x), gamma, mean, rstd, f(dx), dgamma, dbeta, rows, cols,
                            accumulate);
  }
  ops::LossStats softmax_cross_entropy(const void* logits, DType, const int32_t* labels,
                                       void* dlogits, float grad_scale, int64_t rows,
                                       int64_t classes) override {
    return cpu::softmax_cross_entropy(f(logits), labels, f(dlogits), grad_scale, rows, classes);
  }
  ops::LossStats mean_squared_error(const void* pred, DType, const float* target, void* dpred,
                                    float grad_scale, int64_t rows, int64_t cols) override {
    return cpu::mean_squared_error(f(pred), target, f(dpred), grad_scale, rows, cols);
  }
  void conv2d_forward(const void* x, const void* w, const void* bias, void* y, DType,
                      const ops::ConvDims& d) override {
    cpu::conv2d_forward(f(x), f(w), f(bias), f(y), d);
  }
  void conv2d_backward(const void* x, const void* w, const void* dy, void* dx, float* dw,
                       float* dbias, DType, const ops::ConvDims& d, bool accumulate) override {
    cpu::conv2d_backward(f(x), f(w), f(dy), f(dx), dw, dbias, d, accumulate);
  }
  void pool2d_forward(ops::Pool pool, const void* x, void* y, DType,
                      const ops::PoolDims& d) override {
    cpu::pool2d_forward(pool, f(x), f(y), d);
  }
  void pool2d_backward(ops::Pool pool, const void* x, const void* dy, void* dx, DType,
                       const ops::PoolDims& d) override {
    cpu::pool2d_backward(pool, f(x), f(dy), f(dx), d);
  }
  void batchnorm_sums(const void* x, DType, int64_t n, int64_t c, int64_t s,
                      double* sums) override {
    cpu::batchnorm_sums(f(x), n, c, s, sums);
  }
  void batchnorm_forward(const void* x, DType, const float* mean, const float* rstd,
                         const float* gamma, const float* beta, void* y, int64_t n, int64_t c,
                         int64_t s) override {
    cpu::batchnorm_forward(f(x), mean, rstd, gamma, beta, f(y), n, c, s);
  }
  void batchnorm_backward_sums(const void* dy, const void* x, DType, const float* mean,
                               const float* rstd, float* dgamma, float* dbeta, int64_t n, int64_t c,
                               int64_t s, double* sums) override {
    cpu::batchnorm_backward_sums(f(dy), f(x), mean, rstd, dgamma, dbeta, n, c, s, sums);
  }
  void batchnorm_backward(const void* dy, const void* x, DType, const float* mean,
                          const float* rstd, const float* gamma, const double* sums, double count,
                          void* dx, int64_t n, int64_t c, int64_t s) override {
    cpu::batchnorm_backward(f(dy), f(x), mean, rstd, gamma, sums, count, f(dx), n, c, s);
  }
  int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions,
                            void* out, DType, int64_t n, int64_t seq, int64_t vocab,
                            int64_t dim) override {
    return cpu::embedding_forward(ids, table, positions, f(out), n, seq, vocab, dim);
  }
  void embedding_backward(const int32_t* ids, const void* dout, DType, float* dtable,
                          float* dpositions, int64_t n, int64_t seq, int64_t vocab,
                          int64_t dim) override {
    cpu::embedding_backward(ids, f(dout), dtable, dpositions, n, seq, vocab, dim);
  }
  void attention_forward(const void* qkv, DType, void* out, float* lse,
                         const ops::AttentionDims& a) override {
    cpu::attention_forward(f(qkv), f(out), lse, a);
  }
  void attention_backward(const void* qkv, const void* out, const void* dout, const float* lse,
                          DType, void* dqkv, const ops::AttentionDims& a) override {
    cpu::attention_backward(f(qkv), f(out), f(dout), lse, f(dqkv), a);
  }
  void add(const void* a, const void* b, void* out, DType, int64_t n) override {
    cpu::add(f(a), f(b), f(out), n);
  }
  double sum_squares(const float* x, int64_t n) override { return cpu::sum_squares(x, n); }
  void scale(float* x, float s, int64_t n) override { cpu::scale(x, s, n); }
  void adamw_update(float* p, const float* g, float* m, float* v,
                    const std::vector<ops::ParamSegment>& segments, const ops::AdamWHyper& h,
                    void* shadow) override {
    cpu::adamw_update(p, g, m, v, segments, h);
    write_shadow(p, shadow, segments);
  }
  void sgd_update(float* p, const float* g, float* vel,
                  const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h,
                  void* shadow) override {
    cpu::sgd_update(p, g, vel, segments, h);
    write_shadow(p, shadow, segments);
  }
  void convert(const void* src, DType from, void* dst, DType to, int64_t n) override {
    cpu::convert(src, from, dst, to, n);
  }
};

}  // namespace
}  // namespace tern::cpu

namespace tern::compute {
Backend& cpu_backend() {
  static cpu::CpuBackend backend;
  return backend;
}
}  // namespace tern::compute
