#pragma once
// The CUDA backend of the op list (include/tern/compute/ops.h), on raw device pointers, behind the
// backend table (backend.cpp): ops.cpp checks the arguments and the table calls these; every
// call is queued on the compute stream. Tensors written `T`
// below are f32 or bf16 (the compute dtype); parameters' gradients, norms' statistics and the
// optimizer's buffers are always f32. Functions returning host values synchronise.
#include <cstdint>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"

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
// Causal self-attention over packed projections (attention.cu): qkv [n, seq, 3c] (q, k, v side by
// side; head h uses columns [h d, (h + 1) d) of each part; c = heads d), out [n, seq, c] of the
// same dtype, lse [n, heads, seq] f32: each query's log-sum-exp of its scores scaled by 1/sqrt(d).
void attention_forward(const void* qkv, DType t, void* out, float* lse, int64_t n, int64_t seq,
                       int64_t heads, int64_t d);
// dqkv [n, seq, 3c] (same dtype) is overwritten with the gradients of q, k and v.
void attention_backward(const void* qkv, const void* out, const void* dout, const float* lse,
                        DType t, void* dqkv, int64_t n, int64_t seq, int64_t heads, int64_t d);
// out = a + b (T), n elements.
void add(const void* a, const void* b, void* out, DType t, int64_t n);

// Convolution through cuDNN (conv.cpp), NCHW, x / w / y / dx of dtype T. bias (optional, T) is
// added per output channel. dw and dbias are f32 (the gradient buffer): written, or added to when
// accumulate; in bf16 runs cuDNN writes the weight gradient in bf16 first (as PyTorch's autocast
// does). Algorithms are deterministic ones; f32 runs use FMA math unless TF32 is on.
void conv2d_forward(const void* x, const void* w, const void* bias, void* y, DType t,
                    const ops::ConvDims& d);
void conv2d_backward(const void* x, const void* w, const void* dy, void* dx, float* dw,
                     float* dbias, DType t, const ops::ConvDims& d, bool accumulate);
// y[n, c, :] += bias[c] over [n, c, s] (bias T); dbias[c] (+)= sum of dy[:, c, :] in a fixed order.
void channel_bias_forward(void* y, const void* bias, DType t, int64_t n, int64_t c, int64_t s);
void channel_bias_grad(const void* dy, DType t, float* dbias, int64_t n, int64_t c, int64_t s,
                       bool accumulate);

void pool2d_forward(ops::Pool pool, const void* x, void* y, DType t, const ops::PoolDims& d);
void pool2d_backward(ops::Pool pool, const void* x, const void* dy, void* dx, DType t,
                     const ops::PoolDims& d);

// Batch normalisation over x viewed [n, c, s] (see ops.h). The sums are reduced on the device in
// double, in a fixed order, and copied into host_sums[2c] (these calls synchronise).
void batchnorm_sums(const void* x, DType t, int64_t n, int64_t c, int64_t s, double* host_sums);
void batchnorm_forward(const void* x, DType t, const float* mean, const float* rstd,
                       const float* gamma, const float* beta, void* y, int64_t n, int64_t c,
                       int64_t s);
// Also adds the sums into dbeta and dgamma (f32, on the device).
void batchnorm_backward_sums(const void* dy, const void* x, DType t, const float* mean,
                             const float* rstd, float* dgamma, float* dbeta, int64_t n, int64_t c,
                             int64_t s, double* host_sums);
void batchnorm_backward(const void* dy, const void* x, DType t, const float* mean,
                        const float* rstd, const float* gamma, const double* host_sums,
                        double count, void* dx, int64_t n, int64_t c, int64_t s);

// Token (+ position) embedding: ids [n, seq] i32, table [vocab, dim] and positions f32, out T.
// Returns the flat index of the first id outside [0, vocab), or -1 (synchronises); rows of bad ids
// are written as zeros.
int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions, void* out,
                          DType t, int64_t n, int64_t seq, int64_t vocab, int64_t dim);
// dtable rows gather their tokens' gradients in position order (a stable sort by id, no atomics),
// so results match the CPU's summation order; dpositions (optional) sums over n.
void embedding_backward(const int32_t* ids, const void* dout, DType t, float* dtable,
                        float* dpositions, int64_t n, int64_t seq, int64_t vocab, int64_t dim);

}  // namespace tern::cuda
