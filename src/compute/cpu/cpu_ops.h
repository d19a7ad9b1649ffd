#pragma once
#include <cstdint>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"

// CPU reference implementations of the op list, on raw row-major pointers. ops.cpp checks the
// arguments and calls these.
namespace tern::cpu {

using ops::AttentionDims;
using ops::ConvDims;
using ops::PoolDims;

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          const float* b, float beta, float* c);
void add_bias(float* y, const float* bias, int64_t rows, int64_t cols);
void bias_grad(const float* dy, float* dbias, int64_t rows, int64_t cols, bool accumulate);
void activation_forward(ops::Activation act, const float* x, float* y, int64_t n);
void activation_backward(ops::Activation act, const float* x, const float* dy, float* dx,
                         int64_t n);
// out = a + b; out may alias a or b.
void add(const float* a, const float* b, float* out, int64_t n);
void dropout(const float* x, float* y, int64_t rows, int64_t cols, float p, ops::DropoutKey key);
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t cols, float eps);
void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t rows,
                        int64_t cols, bool accumulate);
ops::LossStats softmax_cross_entropy(const float* logits, const int32_t* labels, float* dlogits,
                                     float grad_scale, int64_t rows, int64_t classes);
ops::LossStats mean_squared_error(const float* pred, const float* target, float* dpred,
                                  float grad_scale, int64_t rows, int64_t cols);
double sum_squares(const float* x, int64_t n);
void scale(float* x, float s, int64_t n);
void adamw_update(float* p, const float* g, float* m, float* v,
                  const std::vector<ops::ParamSegment>& segments, const ops::AdamWHyper& h);
void sgd_update(float* p, const float* g, float* vel,
                const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h);

void convert(const void* src, DType from, void* dst, DType to, int64_t n);

void conv2d_forward(const float* x, const float* w, const float* bias, float* y, const ConvDims& d);
void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* dbias, const ConvDims& d, bool accumulate);
// qkv [n, t, 3 heads d], out [n, t, heads d], lse [n, heads, t]; dqkv like qkv.
void attention_forward(const float* qkv, float* out, float* lse, const AttentionDims& a);
void attention_backward(const float* qkv, const float* out, const float* dout, const float* lse,
                        float* dqkv, const AttentionDims& a);
// Batch norm over x [n, c, s]: sums (2c doubles, zeroed by the caller) as ops.h describes.
void batchnorm_sums(const float* x, int64_t n, int64_t c, int64_t s, double* sums);
void batchnorm_forward(const float* x, const float* mean, const float* rstd, const float* gamma,
                       const float* beta, float* y, int64_t n, int64_t c, int64_t s);
void batchnorm_backward_sums(const float* dy, const float* x, const float* mean, const float* rstd,
                             float* dgamma, float* dbeta, int64_t n, int64_t c, int64_t s,
                             double* sums);
void batchnorm_backward(const float* dy, const float* x, const float* mean, const float* rstd,
                        const float* gamma, const double* sums, double count, float* dx, int64_t n,
                        int64_t c, int64_t s);
// Returns the flat index of the first id outside [0, vocab) (rows before it are written), or -1.
int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions,
                          float* out, int64_t n, int64_t seq, int64_t vocab, int64_t dim);
void embedding_backward(const int32_t* ids, const float* dout, float* dtable, float* dpositions,
                        int64_t n, int64_t seq, int64_t vocab, int64_t dim);
void pool2d_forward(ops::Pool pool, const float* x, float* y, const PoolDims& d);
void pool2d_backward(ops::Pool pool, const float* x, const float* dy, float* dx, const PoolDims& d);

}  // namespace tern::cpu
