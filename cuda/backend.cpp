// The CUDA backend behind the table of tern/compute/backend.h: the op list's GPU kernels
// (cuda_ops.h) and the runtime's memory, streams and events. libtern_cuda.so exports one entry,
// tern_cuda_backend(); the binaries load it only when a GPU is asked for.
#include <cuda_runtime_api.h>

#include "check.h"
#include "cuda_ops.h"
#include "runtime.h"
#include "tern/compute/backend.h"

namespace tern::cuda {
namespace {

class CudaBackend final : public compute::Backend {
 public:
  const char* name() const override { return "cuda"; }
  bool supports_bf16() const override { return true; }

  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
            const void* b, DType ab, float beta, void* c, DType ct, const void* bias) override {
    cuda::gemm(ta, tb, m, n, k, alpha, a, b, ab, beta, c, ct, bias);
  }
  void add_bias(void* y, const void* bias, DType t, int64_t rows, int64_t cols) override {
    cuda::add_bias(y, bias, t, rows, cols);
  }
  void bias_grad(const void* dy, DType t, float* dbias, int64_t rows, int64_t cols,
                 bool accumulate) override {
    cuda::bias_grad(dy, t, dbias, rows, cols, accumulate);
  }
  void activation_forward(ops::Activation act, const void* x, void* y, DType t,
                          int64_t n) override {
    cuda::activation_forward(act, x, y, t, n);
  }
  void activation_backward(ops::Activation act, const void* x, const void* dy, void* dx, DType t,
                           int64_t n) override {
    cuda::activation_backward(act, x, dy, dx, t, n);
  }
  void dropout(const void* x, void* y, DType t, int64_t rows, int64_t cols, float p,
               ops::DropoutKey key) override {
    cuda::dropout(x, y, t, rows, cols, p, key);
  }
  void layernorm_forward(const void* x, DType t, const float* gamma, const float* beta, void* y,
                         float* mean, float* rstd, int64_t rows, int64_t cols, float eps) override {
    cuda::layernorm_forward(x, t, gamma, beta, y, mean, rstd, rows, cols, eps);
  }
  void layernorm_backward(const void* dy, const void* x, DType t, const float* gamma,
                          const float* mean, const float* rstd, void* dx, float* dgamma,
                          float* dbeta, int64_t rows, int64_t cols, bool accumulate) override {
    cuda::layernorm_backward(dy, x, t, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols,
                             accumulate);
  }
  ops::LossStats softmax_cross_entropy(const void* logits, DType t, const int32_t* labels,
                                       void* dlogits, float grad_scale, int64_t rows,
                                       int64_t classes) override {
    return cuda::softmax_cross_entropy(logits, t, labels, dlogits, grad_scale, rows, classes);
  }
  ops::LossStats mean_squared_error(const void* pred, DType t, const float* target, void* dpred,
                                    float grad_scale, int64_t rows, int64_t cols) override {
    return cuda::mean_squared_error(pred, t, target, dpred, grad_scale, rows, cols);
  }
  void conv2d_forward(const void* x, const void* w, const void* bias, void* y, DType t,
                      const ops::ConvDims& d) override {
    cuda::conv2d_forward(x, w, bias, y, t, d);
  }
  void conv2d_backward(const void* x, const void* w, const void* dy, void* dx, float* dw,
                       float* dbias, DType t, const ops::ConvDims& d, bool accumulate) override {
    cuda::conv2d_backward(x, w, dy, dx, dw, dbias, t, d, accumulate);
  }
  void pool2d_forward(ops::Pool pool, const void* x, void* y, DType t,
                      const ops::PoolDims& d) override {
    cuda::pool2d_forward(pool, x, y, t, d);
  }
  void pool2d_backward(ops::Pool pool, const void* x, const void* dy, void* dx, DType t,
                       const ops::PoolDims& d) override {
    cuda::pool2d_backward(pool, x, dy, dx, t, d);
  }
  void batchnorm_sums(const void* x, DType t, int64_t n, int64_t c, int64_t s,
                      double* sums) override {
    cuda::batchnorm_sums(x, t, n, c, s, sums);
  }
  void batchnorm_forward(const void* x, DType t, const float* mean, const float* rstd,
                         const float* gamma, const float* beta, void* y, int64_t n, int64_t c,
                         int64_t s) override {
    cuda::batchnorm_forward(x, t, mean, rstd, gamma, beta, y, n, c, s);
  }
  void batchnorm_backward_sums(const void* dy, const void* x, DType t, const float* mean,
                               const float* rstd, float* dgamma, float* dbeta, int64_t n, int64_t c,
                               int64_t s, double* sums) override {
    cuda::batchnorm_backward_sums(dy, x, t, mean, rstd, dgamma, dbeta, n, c, s, sums);
  }
  void batchnorm_backward(const void* dy, const void* x, DType t, const float* mean,
                          const float* rstd, const float* gamma, const double* sums, double count,
                          void* dx, int64_t n, int64_t c, int64_t s) override {
    cuda::batchnorm_backward(dy, x, t, mean, rstd, gamma, sums, count, dx, n, c, s);
  }
  int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions,
                            void* out, DType t, int64_t n, int64_t seq, int64_t vocab,
                            int64_t dim) override {
    return cuda::embedding_forward(ids, table, positions, out, t, n, seq, vocab, dim);
  }
  void embedding_backward(const int32_t* ids, const void* dout, DType t, float* dtable,
                          float* dpositions, int64_t n, int64_t seq, int64_t vocab,
                          int64_t dim) override {
    cuda::embedding_backward(ids, dout, t, dtable, dpositions, n, seq, vocab, dim);
  }
  void attention_forward(const void* qkv, DType t, void* out, float* lse,
                         const ops::AttentionDims& a) override {
    cuda::attention_forward(qkv, t, out, lse, a.n, a.t, a.heads, a.d);
  }
  void attention_backward(const void* qkv, const void* out, const void* dout, const float* lse,
                          DType t, void* dqkv, const ops::AttentionDims& a) override {
    cuda::attention_backward(qkv, out, dout, lse, t, dqkv, a.n, a.t, a.heads, a.d);
  }
  void add(const void* a, const void* b, void* out, DType t, int64_t n) override {
    cuda::add(a, b, out, t, n);
  }
  double sum_squares(const float* x, int64_t n) override { return cuda::sum_squares(x, n); }
  void scale(float* x, float s, int64_t n) override { cuda::scale(x, s, n); }
  void adamw_update(float* p, const float* g, float* m, float* v,
                    const std::vector<ops::ParamSegment>& segments, const ops::AdamWHyper& h,
                    void* shadow) override {
    cuda::adamw_update(p, g, m, v, segments, h, shadow);
  }
  void sgd_update(float* p, const float* g, float* vel,
                  const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h,
                  void* shadow) override {
    cuda::sgd_update(p, g, vel, segments, h, shadow);
  }
  void convert(const void* src, DType from, void* dst, DType to, int64_t n) override {
    cuda::convert(src, from, dst, to, n);
  }
};

cudaStream_t stream_of(compute::DeviceRuntime::Stream s) {
  return s == compute::DeviceRuntime::Stream::copy ? copy_stream() : compute_stream();
}

class CudaRuntime final : public compute::DeviceRuntime {
 public:
  int device_count() override { return cuda::device_count(); }
  void select_device(int index) override { cuda::select_device(index); }
  int current_device() override { return cuda::current_device(); }
  std::string description() override { return cuda::device_description(); }
  void set_tf32(bool on) override { cuda::set_tf32(on); }
  void* allocate(size_t bytes) override { return device_alloc(bytes); }
  void release(void* p) override { device_free(p); }
  void memset_zero(void* p, size_t bytes) override {
    TERN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_stream()));
  }
  void copy_async(void* dst, const void* src, size_t bytes, Stream s) override {
    TERN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_of(s)));
  }
  void synchronize() override { cuda::synchronize(); }
  void* pinned_allocate(size_t bytes) override {
    void* p = nullptr;
    TERN_CUDA_CHECK(cudaMallocHost(&p, bytes));
    return p;
  }
  void pinned_release(void* p) override { cudaFreeHost(p); }
  bool is_pinned(const void* p) override {
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return attr.type == cudaMemoryTypeHost;
  }
  void* event_create() override {
    cudaEvent_t e = nullptr;
    TERN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void event_destroy(void* e) override {
    if (e) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  }
  void event_record(void* e, Stream s) override {
    TERN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), stream_of(s)));
  }
  void event_synchronize(void* e) override {
    TERN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e)));
  }
  void stream_wait(Stream s, void* e) override {
    TERN_CUDA_CHECK(cudaStreamWaitEvent(stream_of(s), static_cast<cudaEvent_t>(e)));
  }
  void stream_synchronize(Stream s) override {
    TERN_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  }
};

}  // namespace
}  // namespace tern::cuda

extern "C" __attribute__((visibility("default"))) tern::compute::CudaModule tern_cuda_backend() {
  // Never destroyed: tensors freed after main() returns still reach the runtime.
  static auto* ops = new tern::cuda::CudaBackend;
  static auto* device = new tern::cuda::CudaRuntime;
  return {tern::compute::kBackendAbi, ops, device};
}
