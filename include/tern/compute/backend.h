#pragma once
// The table behind the op list. ops.cpp checks each call's arguments (dtype, shape, device) and
// hands raw pointers to the backend of the tensors' device: the CPU backend (src/compute/cpu/),
// linked into every binary, or the CUDA backend (cuda/), a shared library of its own
// (libtern_cuda.so) loaded the first time a GPU is asked for. A backend implements every op or
// does not compile, so no op can lack a GPU path; a process that never asks for a GPU maps no
// CUDA library.
//
// Pointers written `void*` hold the call's compute dtype `t`: f32, or bf16 where
// supports_bf16(). Parameters' gradients, norm statistics and optimizer state are always f32.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tern/compute/ops.h"
#include "tern/compute/tensor.h"

namespace tern::compute {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual bool supports_bf16() const = 0;

  // c[m,n] = alpha op(a) op(b) + beta c (+ bias[n]); c may be f32 for bf16 operands.
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const void* a, const void* b, DType ab, float beta, void* c, DType ct,
                    const void* bias) = 0;
  virtual void add_bias(void* y, const void* bias, DType t, int64_t rows, int64_t cols) = 0;
  virtual void bias_grad(const void* dy, DType t, float* dbias, int64_t rows, int64_t cols,
                         bool accumulate) = 0;
  virtual void activation_forward(ops::Activation act, const void* x, void* y, DType t,
                                  int64_t n) = 0;
  virtual void activation_backward(ops::Activation act, const void* x, const void* dy, void* dx,
                                   DType t, int64_t n) = 0;
  virtual void dropout(const void* x, void* y, DType t, int64_t rows, int64_t cols, float p,
                       ops::DropoutKey key) = 0;
  virtual void layernorm_forward(const void* x, DType t, const float* gamma, const float* beta,
                                 void* y, float* mean, float* rstd, int64_t rows, int64_t cols,
                                 float eps) = 0;
  virtual void layernorm_backward(const void* dy, const void* x, DType t, const float* gamma,
                                  const float* mean, const float* rstd, void* dx, float* dgamma,
                                  float* dbeta, int64_t rows, int64_t cols, bool accumulate) = 0;
  virtual ops::LossStats softmax_cross_entropy(const void* logits, DType t, const int32_t* labels,
                                               void* dlogits, float grad_scale, int64_t rows,
                                               int64_t classes) = 0;
  virtual ops::LossStats mean_squared_error(const void* pred, DType t, const float* target,
                                            void* dpred, float grad_scale, int64_t rows,
                                            int64_t cols) = 0;
  virtual void conv2d_forward(const void* x, const void* w, const void* bias, void* y, DType t,
                              const ops::ConvDims& d) = 0;
  virtual void conv2d_backward(const void* x, const void* w, const void* dy, void* dx, float* dw,
                               float* dbias, DType t, const ops::ConvDims& d, bool accumulate) = 0;
  virtual void pool2d_forward(ops::Pool pool, const void* x, void* y, DType t,
                              const ops::PoolDims& d) = 0;
  virtual void pool2d_backward(ops::Pool pool, const void* x, const void* dy, void* dx, DType t,
                               const ops::PoolDims& d) = 0;
  // Batch norm over x [n, c, s]; the sums (2c doubles) are read back to the host.
  virtual void batchnorm_sums(const void* x, DType t, int64_t n, int64_t c, int64_t s,
                              double* host_sums) = 0;
  virtual void batchnorm_forward(const void* x, DType t, const float* mean, const float* rstd,
                                 const float* gamma, const float* beta, void* y, int64_t n,
                                 int64_t c, int64_t s) = 0;
  virtual void batchnorm_backward_sums(const void* dy, const void* x, DType t, const float* mean,
                                       const float* rstd, float* dgamma, float* dbeta, int64_t n,
                                       int64_t c, int64_t s, double* host_sums) = 0;
  virtual void batchnorm_backward(const void* dy, const void* x, DType t, const float* mean,
                                  const float* rstd, const float* gamma, const double* host_sums,
                                  double count, void* dx, int64_t n, int64_t c, int64_t s) = 0;
  // Returns the flat index of the first id outside [0, vocab), or -1.
  virtual int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions,
                                    void* out, DType t, int64_t n, int64_t seq, int64_t vocab,
                                    int64_t dim) = 0;
  virtual void embedding_backward(const int32_t* ids, const void* dout, DType t, float* dtable,
                                  float* dpositions, int64_t n, int64_t seq, int64_t vocab,
                                  int64_t dim) = 0;
  virtual void attention_forward(const void* qkv, DType t, void* out, float* lse,
                                 const ops::AttentionDims& a) = 0;
  virtual void attention_backward(const void* qkv, const void* out, const void* dout,
                                  const float* lse, DType t, void* dqkv,
                                  const ops::AttentionDims& a) = 0;
  virtual void add(const void* a, const void* b, void* out, DType t, int64_t n) = 0;
  virtual double sum_squares(const float* x, int64_t n) = 0;
  virtual void scale(float* x, float s, int64_t n) = 0;
  // `shadow` (optional, bf16): receives the updated parameters within the segments.
  virtual void adamw_update(float* p, const float* g, float* m, float* v,
                            const std::vector<ops::ParamSegment>& segments,
                            const ops::AdamWHyper& h, void* shadow) = 0;
  virtual void sgd_update(float* p, const float* g, float* vel,
                          const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h,
                          void* shadow) = 0;
  virtual void convert(const void* src, DType from, void* dst, DType to, int64_t n) = 0;
};

// The GPU's memory, streams and events, as the CUDA backend exposes them to device.cpp.
class DeviceRuntime {
 public:
  enum class Stream { compute, copy };
  virtual ~DeviceRuntime() = default;
  virtual int device_count() = 0;  // 0 without a driver or a GPU; never throws
  virtual void select_device(int index) = 0;
  virtual int current_device() = 0;
  virtual std::string description() = 0;
  virtual void set_tf32(bool on) = 0;
  virtual void* allocate(size_t bytes) = 0;  // stream-ordered, on the compute stream
  virtual void release(void* p) = 0;
  virtual void memset_zero(void* p, size_t bytes) = 0;
  // Queued on `stream`; either side may be host or device memory.
  virtual void copy_async(void* dst, const void* src, size_t bytes, Stream stream) = 0;
  virtual void synchronize() = 0;  // the compute stream
  virtual void* pinned_allocate(size_t bytes) = 0;
  virtual void pinned_release(void* p) = 0;
  virtual bool is_pinned(const void* p) = 0;
  // Events order the copy stream against the compute stream.
  virtual void* event_create() = 0;
  virtual void event_destroy(void* event) = 0;
  virtual void event_record(void* event, Stream stream) = 0;
  virtual void event_synchronize(void* event) = 0;
  virtual void stream_wait(Stream stream, void* event) = 0;
  virtual void stream_synchronize(Stream stream) = 0;
};

// What libtern_cuda.so hands out through its one entry point, tern_cuda_backend().
struct CudaModule {
  int abi = 0;  // kBackendAbi of the build that made it
  Backend* ops = nullptr;
  DeviceRuntime* device = nullptr;
};
// Raised whenever Backend or DeviceRuntime change: a libtern_cuda.so of another build is refused.
inline constexpr int kBackendAbi = 1;
extern "C" using CudaModuleEntry = CudaModule(*)();

Backend& cpu_backend();
// True when this build made libtern_cuda.so (TERN_CUDA): whether it loads is another matter.
bool cuda_module_built();
// The CUDA module, loaded on the first call (dlopen of libtern_cuda.so next to the binary's
// lib/ folder, else from the loader's path; TERN_CUDA_LIBRARY overrides). Throws
// std::runtime_error naming the library and the loader's message when it cannot be loaded.
const CudaModule& cuda_module();
Backend& backend_for(Device device);

}  // namespace tern::compute
