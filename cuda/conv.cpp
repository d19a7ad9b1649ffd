// 2-D convolution through cuDNN's convolution API, NCHW. Descriptors and the chosen algorithms are
// cached per geometry and dtype, so a training step only looks them up. Algorithms: the fastest
// cuDNN ranks among those it reports deterministic (gradients must not depend on the run), with
// FMA-only math for f32 unless TF32 is on (f32 results then match the CPU's im2col + GEMM within
// rounding) and tensor-op math for bf16.
#include <cudnn.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "check.h"
#include "cuda_ops.h"
#include "runtime.h"

#define TERN_CUDNN_CHECK(call)                                           \
  do {                                                                   \
    cudnnStatus_t tern_st_ = (call);                                     \
    if (tern_st_ != CUDNN_STATUS_SUCCESS)                                \
      ::tern::cuda::throw_cuda_error("cuDNN", #call, __FILE__, __LINE__, \
                                     cudnnGetErrorString(tern_st_));     \
  } while (0)

namespace tern::cuda {
namespace {

cudnnHandle_t handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t made = nullptr;
    TERN_CUDNN_CHECK(cudnnCreate(&made));
    return made;
  }();
  // Set every time: cheap, and the compute stream is the one every op runs on.
  TERN_CUDNN_CHECK(cudnnSetStream(h, compute_stream()));
  return h;
}

struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_bytes = 0, data_bytes = 0, filter_bytes = 0;
};

cudnnDataType_t cudnn_type(DType t) {
  if (t == DType::f32) return CUDNN_DATA_FLOAT;
  if (t == DType::bf16) return CUDNN_DATA_BFLOAT16;
  throw std::invalid_argument(std::string("cuda conv2d: unsupported dtype ") + dtype_name(t));
}

// The first deterministic algorithm of cuDNN's ranking that succeeded.
template <class Perf>
const Perf& pick(const Perf* perf, int count, const char* what) {
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC)
      return perf[i];
  throw std::runtime_error(std::string("cuDNN offers no deterministic ") + what +
                           " algorithm for this convolution");
}

const Plan& plan_for(const ops::ConvDims& d, DType t) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int, bool>;
  static std::map<Key, Plan> plans;
  static std::mutex mutex;
  const Key key{d.n, d.c, d.h, d.w, d.k, d.kh, d.kw, d.stride, d.pad, static_cast<int>(t), tf32()};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  const auto i32 = [](int64_t v) { return static_cast<int>(v); };
  const cudnnDataType_t dt = cudnn_type(t);
  Plan p;
  TERN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.x));
  TERN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.y));
  TERN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.w));
  TERN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv));
  TERN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NCHW, dt, i32(d.n), i32(d.c),
                                              i32(d.h), i32(d.w)));
  TERN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NCHW, dt, i32(d.n), i32(d.k),
                                              i32(d.oh), i32(d.ow)));
  TERN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(p.w, dt, CUDNN_TENSOR_NCHW, i32(d.k), i32(d.c),
                                              i32(d.kh), i32(d.kw)));
  // Cross-correlation, as PyTorch's Conv2d and the CPU reference compute; f32 accumulation.
  TERN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.conv, i32(d.pad), i32(d.pad), i32(d.stride),
                                                   i32(d.stride), 1, 1, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
  const cudnnMathType_t math = t == DType::bf16 ? CUDNN_TENSOR_OP_MATH
                               : tf32()         ? CUDNN_DEFAULT_MATH
                                                : CUDNN_FMA_MATH;
  TERN_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, math));
  int oh = 0, ow = 0, on = 0, oc = 0;
  TERN_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p.conv, p.x, p.w, &on, &oc, &oh, &ow));
  if (oh != d.oh || ow != d.ow)
    throw std::logic_error("cuDNN's output size " + std::to_string(oh) + "x" + std::to_string(ow) +
                           " differs from tern's " + std::to_string(d.oh) + "x" +
                           std::to_string(d.ow));
  cudnnHandle_t h = handle();
  constexpr int kMax = 16;
  int found = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[kMax];
  TERN_CUDNN_CHECK(
      cudnnGetConvolutionForwardAlgorithm_v7(h, p.x, p.w, p.conv, p.y, kMax, &found, fwd));
  const auto& f = pick(fwd, found, "forward");
  p.fwd = f.algo;
  p.fwd_bytes = f.memory;
  cudnnConvolutionBwdDataAlgoPerf_t data[kMax];
  TERN_CUDNN_CHECK(
      cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w, p.y, p.conv, p.x, kMax, &found, data));
  const auto& bd = pick(data, found, "backward-data");
  p.bwd_data = bd.algo;
  p.data_bytes = bd.memory;
  cudnnConvolutionBwdFilterAlgoPerf_t filter[kMax];
  TERN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x, p.y, p.conv, p.w, kMax,
                                                                 &found, filter));
  const auto& bf = pick(filter, found, "backward-filter");
  p.bwd_filter = bf.algo;
  p.filter_bytes = bf.memory;
  return plans.emplace(key, p).first->second;
}

}  // namespace

void conv2d_forward(const void* x, const void* w, const void* bias, void* y, DType t,
                    const ops::ConvDims& d) {
  if (d.n == 0) return;
  const Plan& p = plan_for(d, t);
  const float one = 1.0f, zero = 0.0f;
  void* ws = p.fwd_bytes ? scratch(p.fwd_bytes) : nullptr;
  TERN_CUDNN_CHECK(cudnnConvolutionForward(handle(), &one, p.x, x, p.w, w, p.conv, p.fwd, ws,
                                           p.fwd_bytes, &zero, p.y, y));
  if (bias) channel_bias_forward(y, bias, t, d.n, d.k, d.oh * d.ow);
}

void conv2d_backward(const void* x, const void* w, const void* dy, void* dx, float* dw,
                     float* dbias, DType t, const ops::ConvDims& d, bool accumulate) {
  const int64_t wcount = d.k * d.c * d.kh * d.kw;
  if (d.n == 0) {  // an empty batch: cuDNN rejects zero-sized descriptors
    if (accumulate) return;
    TERN_CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(float) * wcount, compute_stream()));
    if (dbias) TERN_CUDA_CHECK(cudaMemsetAsync(dbias, 0, sizeof(float) * d.k, compute_stream()));
    return;
  }
  const Plan& p = plan_for(d, t);
  const float one = 1.0f, zero = 0.0f;
  cudnnHandle_t h = handle();
  if (t == DType::f32) {
    void* ws = p.filter_bytes ? scratch(p.filter_bytes) : nullptr;
    TERN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p.x, x, p.y, dy, p.conv, p.bwd_filter,
                                                    ws, p.filter_bytes, accumulate ? &one : &zero,
                                                    p.w, dw));
  } else {
    // cuDNN writes a weight gradient of the data's dtype: bf16 into a temporary (after the
    // workspace), then added into the f32 buffer.
    const size_t ws_bytes = (p.filter_bytes + 255) / 256 * 256;
    char* base = static_cast<char*>(scratch(ws_bytes + wcount * dtype_size(t)));
    void* tmp = base + ws_bytes;
    TERN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p.x, x, p.y, dy, p.conv, p.bwd_filter,
                                                    p.filter_bytes ? base : nullptr, p.filter_bytes,
                                                    &zero, p.w, tmp));
    if (accumulate) {
      // dw += f32(tmp) through a pooled f32 copy (the pool makes this allocation free).
      void* as_f32 = device_alloc(sizeof(float) * wcount);
      convert(tmp, t, as_f32, DType::f32, wcount);
      add(dw, as_f32, dw, DType::f32, wcount);
      device_free(as_f32);
    } else {
      convert(tmp, t, dw, DType::f32, wcount);
    }
  }
  if (dbias) channel_bias_grad(dy, t, dbias, d.n, d.k, d.oh * d.ow, accumulate);
  if (dx) {
    void* ws = p.data_bytes ? scratch(p.data_bytes) : nullptr;
    TERN_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, p.w, w, p.y, dy, p.conv, p.bwd_data, ws,
                                                  p.data_bytes, &zero, p.x, dx));
  }
}

}  // namespace tern::cuda
