#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tern/compute/tensor.h"

namespace tern::ops {
// Flush denormal floats to zero on the calling thread (x86 FTZ and DAZ). Once a model converges
// its gradients fall into the denormal range, where x86 arithmetic is many times slower.
void flush_denormals_on_this_thread(bool on);
}  // namespace tern::ops

// The op list: every compute primitive tern uses, one function each. Each checks its arguments
// (dtype, shape, device) and calls the backend table (backend.h) of its tensors' device:
// src/compute/cpu/ holds the reference implementations, cuda/ the GPU ones. All tensors of one call
// live on one device. All tensors are row-major and f32 unless stated; on the GPU, activations (and
// the matching GEMM operands) may be bf16, while parameters' gradients, norm statistics and
// optimizer state stay f32.
namespace tern::ops {

enum class Activation { relu, gelu, tanh };
const char* activation_name(Activation a);

// c = alpha * op(a) @ op(b) + beta * c (+ bias[n] per row when given), 2-D operands. With bf16
// operands c may be f32 (weight gradients accumulate into the f32 gradient buffer).
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
          float alpha = 1.0f, float beta = 0.0f, const Tensor* bias = nullptr);

// y[n, :] += bias
void add_bias(Tensor& y, const Tensor& bias);
// dbias = sum_n dy[n, :]  (added to dbias when accumulate)
void bias_grad(const Tensor& dy, Tensor& dbias, bool accumulate);

// y = act(x)
void activation_forward(Activation act, const Tensor& x, Tensor& y);
// dx = dy * act'(x), x the activation's input
void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx);

// Which random stream a dropout mask comes from. Row i of the batch is the global sample
// `first_sample + i`, so the mask does not depend on how the global batch is split over ranks.
struct DropoutKey {
  uint64_t seed = 0;
  uint32_t stream = 0;  // one per dropout layer
  int64_t first_sample = 0;
};
// y = x * mask / (1 - p); backward regenerates the same mask from the key.
void dropout_forward(const Tensor& x, Tensor& y, float p, DropoutKey key);
void dropout_backward(const Tensor& dy, Tensor& dx, float p, DropoutKey key);

// Layer normalisation over the last dimension; mean and rstd ([rows]) are saved for backward.
void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                       Tensor& mean, Tensor& rstd, float eps);
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                        bool accumulate);

struct LossStats {
  double loss_sum = 0;  // summed over rows
  int64_t correct = 0;  // rows whose arg-max is the label (classification only)
};
// Softmax cross-entropy of logits [N, C] against i32 labels [N], fused with its gradient:
// when dlogits is given it receives grad_scale * d(loss_row)/d(logits).
LossStats softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor* dlogits,
                                float grad_scale);
// Mean squared error per row (averaged over the row's D values) of pred [N, D] against target.
LossStats mean_squared_error(const Tensor& pred, const Tensor& target, Tensor* dpred,
                             float grad_scale);

// 2-D convolution of x [N, C, H, W] with w [K, C, kh, kw] (+ bias [K]) into y [N, K, OH, OW],
// the same stride and zero padding along both axes: OH = (H + 2 pad - kh) / stride + 1.
struct Conv2dGeometry {
  int64_t stride = 1, pad = 0;
};
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                    Conv2dGeometry g);
// dw (and dbias) receive the gradients, added when accumulate; dx (optional) is overwritten.
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                     Tensor* dbias, Conv2dGeometry g, bool accumulate);

// The whole geometry of one convolution, pooling or attention call: ops.cpp derives it from the
// tensors and hands it to either backend.
struct ConvDims {
  int64_t n, c, h, w, k, kh, kw, stride, pad, oh, ow;
};
struct PoolDims {
  int64_t n, c, h, w, k, stride, oh, ow;
};
struct AttentionDims {
  int64_t n, t, heads, d;  // batch, sequence, heads, head size
};

// Max or average pooling over k x k windows of x [N, C, H, W] with a stride, no padding
// (windows that do not fit are dropped, as PyTorch's floor mode). Max pooling's backward sends the
// gradient to the first maximum of each window.
enum class Pool { max, avg };
void pool2d_forward(Pool pool, const Tensor& x, Tensor& y, int64_t k, int64_t stride);
void pool2d_backward(Pool pool, const Tensor& x, const Tensor& dy, Tensor& dx, int64_t k,
                     int64_t stride);

// Batch normalisation over channels, x viewed as [N, C, S] (S: the spatial size; 1 for a vector
// of C features). Split in two halves around sums over the batch, so that a caller can all-reduce
// the sums over the ranks in between (synchronised batch norm: the statistics are those of the
// global batch, whatever the number of ranks). Sums are per channel, in double, on the host:
// sums[c] and sums[C + c] (the GPU reduces in a fixed order, then reads them back). On the GPU x,
// y, dy and dx may be bf16; mean, rstd, gamma and beta are f32. Forward: sums of x and x^2; then y
// = (x - mean) * rstd * gamma + beta (mean, rstd: [C]).
void batchnorm_sums(const Tensor& x, int64_t channels, std::vector<double>& sums);
void batchnorm_forward(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
                       const Tensor& beta, Tensor& y);
// Backward: this rank's sums of dy and dy * xhat, which are also the gradients of beta and gamma
// (added into dbeta and dgamma, f32 [C]); then dx from the global sums over `count` values per
// channel.
void batchnorm_backward_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                             const Tensor& rstd, std::vector<double>& sums, Tensor& dgamma,
                             Tensor& dbeta);
void batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                        const Tensor& gamma, const std::vector<double>& sums, double count,
                        Tensor& dx);

// Token and position embedding: out[n, t, :] = table[ids[n, t], :] (+ positions[t, :]), ids i32
// [N, T], table [V, C], positions [>= T, C], out [N, T, C]. Backward adds dout's rows into the
// rows of dtable the ids name (and its sums over n into dpositions). An id outside [0, V) is
// std::out_of_range naming the position. On the GPU out and dout may be bf16 (table, positions and
// their gradients f32), and backward reduces each table row in a fixed order (no atomics).
void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor* positions,
                       Tensor& out);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable, Tensor* dpositions);

// Causal multi-head self-attention, the core between the projections. qkv [N, T, 3C] holds q, k
// and v side by side (columns [0, C), [C, 2C), [2C, 3C)) as the qkv projection writes them, so no
// copy splits them; C = heads x D, head h uses columns [h D, (h + 1) D) of each part. out [N, T,
// C]: out_t = sum over s <= t of softmax_s(q_t . k_s / sqrt(D)) v_s per head. lse [N, heads, T]
// (f32) receives each query's log-sum-exp, which backward uses to recompute the probabilities
// without a T x T matrix kept (flash attention's scheme; the GPU kernel is tiled and never forms
// it). dqkv [N, T, 3C] is overwritten.
void attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, int64_t heads);
void attention_backward(const Tensor& qkv, const Tensor& out, const Tensor& dout, const Tensor& lse,
                        Tensor& dqkv, int64_t heads);

// out = a + b elementwise (residual connections); out may alias a or b.
void add(const Tensor& a, const Tensor& b, Tensor& out);

// sum(x^2) in double, for the global gradient norm.
double sum_squares(const Tensor& x);
void scale(Tensor& x, float s);

// Optimizer updates over flat buffers. Segments carry the weight-decay mask: biases and norm
// parameters are not decayed.
struct ParamSegment {
  int64_t offset = 0;
  int64_t count = 0;
  bool decay = true;
};
struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1-based, for bias correction
};
// `shadow` (optional, bf16): receives the updated parameters in bf16, for bf16 compute.
void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const std::vector<ParamSegment>& segments, const AdamWHyper& h,
                  Tensor* shadow = nullptr);
struct SgdHyper {
  float lr, momentum, weight_decay;
  bool nesterov;
};
void sgd_update(Tensor& param, const Tensor& grad, Tensor& velocity,
                const std::vector<ParamSegment>& segments, const SgdHyper& h,
                Tensor* shadow = nullptr);

// dst = src converted between f32 and bf16 (round to nearest even), or copied when the dtypes
// match.
void convert(const Tensor& src, Tensor& dst);

}  // namespace tern::ops
