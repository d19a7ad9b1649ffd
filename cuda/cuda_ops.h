#pragma once
// The CUDA backend of the op list (include/tern/ops.h), on raw device pointers. ops.cpp checks
// the arguments and calls these; every call is queued on the compute stream. Tensors written `T`
// below are f32 or bf16 (the compute dtype); parameters' gradients, norms' statistics and the
// optimizer's buffers are always f32. Functions returning host values synchronise.
#include <cstdint>
#include <vector>

#include "tern/ops.h"
#include "tern/tensor.h"

namespace tern::cuda {

// c[m,n] = alpha * op(a) op(b) + beta * c (+ bias[n] when bias is given, a cuBLASLt epilogue).
// a, b: T; c: T, or f32 when a and b are bf16 (weight gradients into the f32 buffer); bias: c's
// dtype.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          const void* b, DType ab, float beta, void* c, DType ct, const void* bias);
void add_bias(void* y, const void* bias, DType t, int64_t rows, int64_t cols);
void bias_grad(const void* dy, DType t, float* dbias, int64_t rows, int64_t cols, bool accumulate);
void activation_forward(ops::Activation act, const void* x, void* y, DType t, int64_t n);
void activation_backward(ops::Activation act, const void* x, const void* dy, void* dx, DType t,
                         int64_t n);
void dropout(const void* x, void* y, DType t, int64_t rows, int64_t cols, float p,
             ops::DropoutKey key);
void layernorm_forward(const void* x, DType t, const float* gamma, const float* beta, void* y,
                       float* mean, float* rstd, int64_t rows, int64_t cols, float eps);
void layernorm_backward(const void* dy, const void* x, DType t, const float* gamma,
                        const float* mean, const float* rstd, void* dx, float* dgamma, float* dbeta,
                        int64_t rows, int64_t cols, bool accumulate);
ops::LossStats softmax_cross_entropy(const void* logits, DType t, const int32_t* labels,
                                     void* dlogits, float grad_scale, int64_t rows,
                                     int64_t classes);
ops::LossStats mean_squared_error(const void* pred, DType t, const float* target, void* dpred,
                                  float grad_scale, int64_t rows, int64_t cols);
double sum_squares(const float* x, int64_t n);
void scale(float* x, float s, int64_t n);
// `shadow` (optional, bf16): receives the updated parameters rounded to bf16 in the same pass.
void adamw_update(float* p, const float* g, float* m, float* v,
                  const std::vector<ops::ParamSegment>& segments, const ops::AdamWHyper& h,
                  void* shadow);
void sgd_update(float* p, const float* g, float* vel,
                const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h,
                void* shadow);
void convert(const void* src, DType from, void* dst, DType to, int64_t n);

}  // namespace tern::cuda
