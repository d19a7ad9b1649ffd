// Over 600 lines on purpose: one file keeps every custom kernel beside the shared launch and
// vector-access helpers they use, and nvcc compiles it once.
// Custom kernels of the CUDA backend: everything in the op list but the GEMMs (gemm.cpp).
// Each op mirrors its CPU reference in src/compute/cpu/ (same formulas, same Philox stream, same
// tie-breaking), computes in f32 whatever the storage dtype, and reduces in a fixed order so
// results are reproducible run to run. Elementwise kernels use 16-byte accesses when every
// pointer allows it.
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "check.h"
#include "cuda_ops.h"
#include "device_common.cuh"
#include "runtime.h"
#include "tern/compute/philox.h"

namespace tern::cuda {
namespace {

using ops::Activation;

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

// ---- elementwise ------------------------------------------------------------------------------

struct Relu {
  __device__ float fwd(float v) const { return v > 0.0f ? v : 0.0f; }
  __device__ float bwd(float v, float g) const { return v > 0.0f ? g : 0.0f; }
};
struct Tanh {
  __device__ float fwd(float v) const { return tanhf(v); }
  __device__ float bwd(float v, float g) const {
    const float t = tanhf(v);
    return g * (1.0f - t * t);
  }
};
struct Gelu {
  __device__ float fwd(float v) const {
    return 0.5f * v * (1.0f + tanhf(kGeluC * (v + kGeluA * v * v * v)));
  }
  __device__ float bwd(float v, float g) const {
    const float u = kGeluC * (v + kGeluA * v * v * v);
    const float t = tanhf(u);
    const float du = kGeluC * (1.0f + 3.0f * kGeluA * v * v);
    return g * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
  }
};
template <class Act>
struct ActFwd {
  __device__ float operator()(float x) const { return Act().fwd(x); }
};
template <class Act>
struct ActBwd {
  __device__ float operator()(float x, float g) const { return Act().bwd(x, g); }
};
__global__ void scale_kernel(float* x, float s, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= s;
}

// y = f(x), V elements per thread access.
template <class TI, class TO, int V, class F>
__global__ void unary_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t packs = n / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += stride) {
    Pack<TI, V> a = reinterpret_cast<const Pack<TI, V>*>(x)[i];
    Pack<TO, V> b;
#pragma unroll
    for (int j = 0; j < V; ++j) b.v[j] = from_f<TO>(f(to_f(a.v[j])));
    reinterpret_cast<Pack<TO, V>*>(y)[i] = b;
  }
  for (int64_t i = packs * V + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride)
    y[i] = from_f<TO>(f(to_f(x[i])));
}

// out = f(a, b)
template <class T, int V, class F>
__global__ void binary_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                              int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t packs = n / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += stride) {
    Pack<T, V> pa = reinterpret_cast<const Pack<T, V>*>(a)[i];
    Pack<T, V> pb = reinterpret_cast<const Pack<T, V>*>(b)[i];
    Pack<T, V> r;
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = from_f<T>(f(to_f(pa.v[j]), to_f(pb.v[j])));
    reinterpret_cast<Pack<T, V>*>(out)[i] = r;
  }
  for (int64_t i = packs * V + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride)
    out[i] = from_f<T>(f(to_f(a[i]), to_f(b[i])));
}

template <class TI, class TO, class F>
void launch_unary(const void* x, void* y, int64_t n, F f) {
  if (n == 0) return;
  constexpr int V = 16 / (sizeof(TI) > sizeof(TO) ? sizeof(TI) : sizeof(TO));
  auto* in = static_cast<const TI*>(x);
  auto* out = static_cast<TO*>(y);
  if (aligned16(x) && aligned16(y))
    unary_kernel<TI, TO, V><<<grid_for(n / V + 1), kThreads, 0, compute_stream()>>>(in, out, n, f);
  else
    unary_kernel<TI, TO, 1><<<grid_for(n), kThreads, 0, compute_stream()>>>(in, out, n, f);
  TERN_CUDA_CHECK_LAUNCH("unary_kernel");
}

template <class T, class F>
void launch_binary(const void* a, const void* b, void* out, int64_t n, F f) {
  if (n == 0) return;
  constexpr int V = 16 / sizeof(T);
  auto* pa = static_cast<const T*>(a);
  auto* pb = static_cast<const T*>(b);
  auto* po = static_cast<T*>(out);
  if (aligned16(a) && aligned16(b) && aligned16(out))
    binary_kernel<T, V><<<grid_for(n / V + 1), kThreads, 0, compute_stream()>>>(pa, pb, po, n, f);
  else
    binary_kernel<T, 1><<<grid_for(n), kThreads, 0, compute_stream()>>>(pa, pb, po, n, f);
  TERN_CUDA_CHECK_LAUNCH("binary_kernel");
}

template <class T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t rows,
                                int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(to_f(y[i]) + to_f(bias[i % cols]));
}

template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                               int64_t cols, float p, uint64_t seed, uint32_t stream,
                               int64_t first_sample) {
  // One thread per group of 4 columns of a row: one Philox call, as the CPU reference does.
  const int64_t groups = (cols + 3) / 4;
  const float keep_scale = 1.0f / (1.0f - p);
  const uint32_t k0 = static_cast<uint32_t>(seed);
  const uint32_t k1 = static_cast<uint32_t>(seed >> 32) ^ (stream * 0x85EBCA6Bu);
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < rows * groups;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / groups, g = t % groups;
    const uint64_t sample = static_cast<uint64_t>(first_sample + r);
    Philox4 bits =
        philox4x32(Philox4{{static_cast<uint32_t>(sample), static_cast<uint32_t>(sample >> 32),
                            static_cast<uint32_t>(g), 0u}},
                   k0, k1);
    const int64_t c0 = g * 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (c0 + j >= cols) break;
      const int64_t i = r * cols + c0 + j;
      y[i] = from_f<T>(philox_uniform(bits.v[j]) < p ? 0.0f : to_f(x[i]) * keep_scale);
    }
  }
}

// ---- reductions -------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__device__ T block_sum(T v, T* shared) {  // shared: blockDim.x elements
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  T out = shared[0];
  __syncthreads();
  return out;
}

// Column sums in two fixed-order stages. Stage 1: block (32, 8) sums a chunk of rows for 32
// columns. `second` (optional) receives a second sum, of dy * xhat for layer norm.
template <class T, bool kLayerNorm>
__global__ void colsum_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                      const float* __restrict__ mean,
                                      const float* __restrict__ rstd, int64_t rows, int64_t cols,
                                      int64_t chunk_rows, float* __restrict__ partial_a,
                                      float* __restrict__ partial_b) {
  __shared__ float sa[8][33], sb[8][33];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk_rows, r1 = min(rows, r0 + chunk_rows);
  float a = 0.0f, b = 0.0f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const float g = to_f(dy[r * cols + c]);
      a += g;
      if (kLayerNorm) b += g * (to_f(x[r * cols + c]) - mean[r]) * rstd[r];
    }
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float ta = 0.0f, tb = 0.0f;
    for (int j = 0; j < 8; ++j) ta += sa[j][threadIdx.x], tb += sb[j][threadIdx.x];
    partial_a[blockIdx.y * cols + c] = ta;
    if (kLayerNorm) partial_b[blockIdx.y * cols + c] = tb;
  }
}

__global__ void colsum_final_kernel(const float* __restrict__ partial, int64_t chunks, int64_t cols,
                                    float* __restrict__ out, bool accumulate) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int64_t j = 0; j < chunks; ++j) s += partial[j * cols + c];
  out[c] = accumulate ? out[c] + s : s;
}

struct ColsumPlan {
  int64_t chunks, chunk_rows;
};
ColsumPlan colsum_plan(int64_t rows) {
  const int64_t chunks = std::clamp<int64_t>((rows + 63) / 64, 1, 128);
  return {chunks, (rows + chunks - 1) / chunks};
}

template <class T, bool kLayerNorm>
void colsums(const T* dy, const T* x, const float* mean, const float* rstd, int64_t rows,
             int64_t cols, float* out_a, float* out_b, bool accumulate) {
  if (cols == 0) return;
  const ColsumPlan plan = colsum_plan(std::max<int64_t>(rows, 1));
  auto* partial = static_cast<float*>(scratch(sizeof(float) * plan.chunks * cols * 2));
  float* partial_b = partial + plan.chunks * cols;
  dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(plan.chunks));
  colsum_partial_kernel<T, kLayerNorm><<<grid, dim3(32, 8), 0, compute_stream()>>>(
      dy, x, mean, rstd, rows, cols, plan.chunk_rows, partial, partial_b);
  TERN_CUDA_CHECK_LAUNCH("colsum_partial_kernel");
  const int fb = static_cast<int>((cols + kThreads - 1) / kThreads);
  colsum_final_kernel<<<fb, kThreads, 0, compute_stream()>>>(partial, plan.chunks, cols, out_a,
                                                             accumulate);
  TERN_CUDA_CHECK_LAUNCH("colsum_final_kernel");
  if (kLayerNorm) {
    colsum_final_kernel<<<fb, kThreads, 0, compute_stream()>>>(partial_b, plan.chunks, cols, out_b,
                                                               accumulate);
    TERN_CUDA_CHECK_LAUNCH("colsum_final_kernel");
  }
}

// ---- layer norm: one warp per row ---------------------------------------------------------------

constexpr int kRowsPerBlock = kThreads / 32;

template <class T>
__global__ void layernorm_forward_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, T* __restrict__ y,
                                         float* __restrict__ mean, float* __restrict__ rstd,
                                         int64_t rows, int64_t cols, float eps) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* in = x + r * cols;
  float s = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) s += to_f(in[c]);
  const float mu = warp_sum(s) / static_cast<float>(cols);
  float v = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float d = to_f(in[c]) - mu;
    v += d * d;
  }
  const float rs = rsqrtf(warp_sum(v) / static_cast<float>(cols) + eps);
  T* out = y + r * cols;
  for (int64_t c = lane; c < cols; c += 32)
    out[c] = from_f<T>((to_f(in[c]) - mu) * rs * gamma[c] + beta[c]);
  if (lane == 0) mean[r] = mu, rstd[r] = rs;
}

template <class T>
__global__ void layernorm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                          const float* __restrict__ gamma,
                                          const float* __restrict__ mean,
                                          const float* __restrict__ rstd, T* __restrict__ dx,
                                          int64_t rows, int64_t cols) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* g = dy + r * cols;
  const T* in = x + r * cols;
  const float mu = mean[r], rs = rstd[r];
  float s1 = 0.0f, s2 = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float dxhat = to_f(g[c]) * gamma[c];
    s1 += dxhat;
    s2 += dxhat * (to_f(in[c]) - mu) * rs;
  }
  const float m1 = warp_sum(s1) / static_cast<float>(cols);
  const float m2 = warp_sum(s2) / static_cast<float>(cols);
  T* out = dx + r * cols;
  for (int64_t c = lane; c < cols; c += 32) {
    const float xhat = (to_f(in[c]) - mu) * rs;
    out[c] = from_f<T>(rs * (to_f(g[c]) * gamma[c] - m1 - xhat * m2));
  }
}

// ---- losses: one warp per row, then one fixed-order block reduction -----------------------------

struct LossResult {
  double loss_sum;
  long long correct;
  long long bad_row;  // first row with a label outside [0, classes), or -1
};

template <class T>
__global__ void softmax_xent_kernel(const T* __restrict__ logits,
                                    const int32_t* __restrict__ labels, T* __restrict__ dlogits,
                                    float grad_scale, int64_t rows, int64_t classes,
                                    float* __restrict__ row_loss, int* __restrict__ row_flag) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* z = logits + r * classes;
  const int label = labels[r];
  if (label < 0 || label >= classes) {
    if (lane == 0) row_loss[r] = 0.0f, row_flag[r] = -1;
    return;
  }
  // Arg-max with the CPU's tie rule: the first index holding the maximum.
  float zmax = -INFINITY;
  int64_t arg = INT64_MAX;
  for (int64_t c = lane; c < classes; c += 32) {
    const float v = to_f(z[c]);
    if (v > zmax || arg == INT64_MAX) zmax = v, arg = c;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, zmax, o);
    const int64_t oa = __shfl_xor_sync(0xffffffffu, arg, o);
    if (ov > zmax || (ov == zmax && oa < arg)) zmax = ov, arg = oa;
  }
  float denom = 0.0f;
  for (int64_t c = lane; c < classes; c += 32) denom += __expf(to_f(z[c]) - zmax);
  denom = warp_sum(denom);
  if (lane == 0) {
    row_loss[r] = logf(denom) - (to_f(z[label]) - zmax);
    row_flag[r] = arg == label ? 1 : 0;
  }
  if (dlogits) {
    const float inv = 1.0f / denom;
    T* d = dlogits + r * classes;
    for (int64_t c = lane; c < classes; c += 32)
      d[c] = from_f<T>(grad_scale * (__expf(to_f(z[c]) - zmax) * inv - (c == label ? 1.0f : 0.0f)));
  }
}

template <class T>
__global__ void mse_kernel(const T* __restrict__ pred, const float* __restrict__ target,
                           T* __restrict__ dpred, float grad_scale, int64_t rows, int64_t cols,
                           float* __restrict__ row_loss, int* __restrict__ row_flag) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  float s = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const int64_t i = r * cols + c;
    const float diff = to_f(pred[i]) - target[i];
    s += diff * diff;
    if (dpred) dpred[i] = from_f<T>(grad_scale * 2.0f * diff * inv_cols);
  }
  s = warp_sum(s);
  if (lane == 0) row_loss[r] = s * inv_cols, row_flag[r] = 0;
}

__global__ void loss_reduce_kernel(const float* __restrict__ row_loss,
                                   const int* __restrict__ row_flag, int64_t rows,
                                   LossResult* __restrict__ out) {
  __shared__ double sd[1024];
  __shared__ long long sc[1024];
  double loss = 0;
  long long correct = 0, bad = LLONG_MAX;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    loss += row_loss[r];
    if (row_flag[r] > 0) ++correct;
    if (row_flag[r] < 0 && r < bad) bad = r;
  }
  loss = block_sum(loss, sd);
  correct = block_sum(correct, sc);
  sc[threadIdx.x] = bad;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sc[threadIdx.x] = min(sc[threadIdx.x], sc[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out->loss_sum = loss;
    out->correct = correct;
    out->bad_row = sc[0] == LLONG_MAX ? -1 : sc[0];
  }
}

LossResult finish_loss(float* row_loss, int* row_flag, int64_t rows, LossResult* dev_result) {
  loss_reduce_kernel<<<1, 1024, 0, compute_stream()>>>(row_loss, row_flag, rows, dev_result);
  TERN_CUDA_CHECK_LAUNCH("loss_reduce_kernel");
  auto* host = static_cast<LossResult*>(pinned_readback(sizeof(LossResult)));
  TERN_CUDA_CHECK(cudaMemcpyAsync(host, dev_result, sizeof(LossResult), cudaMemcpyDeviceToHost,
                                  compute_stream()));
  synchronize();
  return *host;
}

struct LossScratch {
  LossResult* result;
  float* row_loss;
  int* row_flag;
};
LossScratch loss_scratch(int64_t rows) {
  char* base = static_cast<char*>(scratch(256 + sizeof(float) * rows + sizeof(int) * rows + 256));
  LossScratch s;
  s.result = reinterpret_cast<LossResult*>(base);
  s.row_loss = reinterpret_cast<float*>(base + 256);
  s.row_flag = reinterpret_cast<int*>(base + 256 + ((sizeof(float) * rows + 255) / 256) * 256);
  return s;
}

// ---- sum of squares -----------------------------------------------------------------------------

__global__ void sum_squares_kernel(const float* __restrict__ x, int64_t n,
                                   double* __restrict__ partial) {
  __shared__ double sd[kThreads];
  double s = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if ((reinterpret_cast<uintptr_t>(x) & 15u) == 0) {
    const int64_t packs = n / 4;
    for (int64_t i = start; i < packs; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      s += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y +
           static_cast<double>(v.z) * v.z + static_cast<double>(v.w) * v.w;
    }
    for (int64_t i = packs * 4 + start; i < n; i += stride) s += static_cast<double>(x[i]) * x[i];
  } else {
    for (int64_t i = start; i < n; i += stride) s += static_cast<double>(x[i]) * x[i];
  }
  s = block_sum(s, sd);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(const double* __restrict__ partial, int n,
                                    double* __restrict__ out) {
  __shared__ double sd[1024];
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s, sd);
  if (threadIdx.x == 0) *out = s;
}

// ---- optimizers: one block per chunk of a parameter segment -------------------------------------

constexpr int64_t kChunk = 8192;  // elements per block (a multiple of 4, for float4 access)

struct Chunk {
  int64_t offset;
  int32_t count;
  int32_t decay;
};

// The chunk table of a segment list, uploaded once and reused while the segments stay the same.
// The caller holds chunk_mutex() until its kernel is queued (a later change frees the table in
// stream order, after that kernel).
std::mutex& chunk_mutex() {
  static std::mutex mu;
  return mu;
}
const Chunk* chunk_table(const std::vector<ops::ParamSegment>& segments, int* count) {
  static std::vector<ops::ParamSegment> cached;
  static Chunk* device = nullptr;
  static int cached_count = 0;
  auto same = [&] {
    if (cached.size() != segments.size()) return false;
    for (size_t i = 0; i < segments.size(); ++i)
      if (cached[i].offset != segments[i].offset || cached[i].count != segments[i].count ||
          cached[i].decay != segments[i].decay)
        return false;
    return true;
  };
  if (!device || !same()) {
    std::vector<Chunk> host;
    for (const auto& s : segments)
      for (int64_t start = 0; start < s.count; start += kChunk)
        host.push_back({s.offset + start, static_cast<int32_t>(std::min(kChunk, s.count - start)),
                        s.decay ? 1 : 0});
    if (device) device_free(device);
    device = static_cast<Chunk*>(device_alloc(sizeof(Chunk) * std::max<size_t>(host.size(), 1)));
    if (!host.empty())
      TERN_CUDA_CHECK(cudaMemcpyAsync(device, host.data(), sizeof(Chunk) * host.size(),
                                      cudaMemcpyHostToDevice, compute_stream()));
    // The host vector dies here: the copy must be done with it.
    synchronize();
    cached = segments;
    cached_count = static_cast<int>(host.size());
  }
  *count = cached_count;
  return device;
}

struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay, step_size, inv_sqrt_bc2;
};

__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, float decay,
                                          const AdamWArgs& a) {
  m = a.beta1 * m + (1.0f - a.beta1) * g;
  v = a.beta2 * v + (1.0f - a.beta2) * g * g;
  const float denom = sqrtf(v) * a.inv_sqrt_bc2 + a.eps;
  p = p * decay - a.step_size * m / denom;
}

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g,
                             float* __restrict__ m, float* __restrict__ v,
                             bf16* __restrict__ shadow, const Chunk* __restrict__ chunks,
                             AdamWArgs a, bool aligned) {
  const Chunk ch = chunks[blockIdx.x];
  const float decay = ch.decay ? 1.0f - a.lr * a.weight_decay : 1.0f;
  const int64_t base = ch.offset;
  // The model's segments start on 16-float boundaries (model.cpp): float4 access applies.
  const int packs = aligned && (base & 3) == 0 ? ch.count / 4 : 0;
  for (int i = threadIdx.x; i < packs; i += blockDim.x) {
    const int64_t o = base + 4 * static_cast<int64_t>(i);
    float4 pp = *reinterpret_cast<float4*>(p + o);
    const float4 gg = *reinterpret_cast<const float4*>(g + o);
    float4 mm = *reinterpret_cast<float4*>(m + o);
    float4 vv = *reinterpret_cast<float4*>(v + o);
    adamw_one(pp.x, gg.x, mm.x, vv.x, decay, a);
    adamw_one(pp.y, gg.y, mm.y, vv.y, decay, a);
    adamw_one(pp.z, gg.z, mm.z, vv.z, decay, a);
    adamw_one(pp.w, gg.w, mm.w, vv.w, decay, a);
    *reinterpret_cast<float4*>(p + o) = pp;
    *reinterpret_cast<float4*>(m + o) = mm;
    *reinterpret_cast<float4*>(v + o) = vv;
    if (shadow) {
      shadow[o] = __float2bfloat16_rn(pp.x);
      shadow[o + 1] = __float2bfloat16_rn(pp.y);
      shadow[o + 2] = __float2bfloat16_rn(pp.z);
      shadow[o + 3] = __float2bfloat16_rn(pp.w);
    }
  }
  for (int i = packs * 4 + threadIdx.x; i < ch.count; i += blockDim.x) {
    const int64_t o = base + i;
    float pp = p[o], mm = m[o], vv = v[o];
    adamw_one(pp, g[o], mm, vv, decay, a);
    p[o] = pp, m[o] = mm, v[o] = vv;
    if (shadow) shadow[o] = __float2bfloat16_rn(pp);
  }
}

struct SgdArgs {
  float lr, momentum, weight_decay;
  bool nesterov;
};

__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ g,
                           float* __restrict__ vel, bf16* __restrict__ shadow,
                           const Chunk* __restrict__ chunks, SgdArgs a) {
  const Chunk ch = chunks[blockIdx.x];
  const float wd = ch.decay ? a.weight_decay : 0.0f;
  for (int i = threadIdx.x; i < ch.count; i += blockDim.x) {
    const int64_t o = ch.offset + i;
    const float grad = g[o] + wd * p[o];
    float pv = p[o];
    if (a.momentum == 0.0f) {
      pv -= a.lr * grad;
    } else {
      const float vv = a.momentum * vel[o] + grad;
      vel[o] = vv;
      pv -= a.lr * (a.nesterov ? grad + a.momentum * vv : vv);
    }
    p[o] = pv;
    if (shadow) shadow[o] = __float2bfloat16_rn(pv);
  }
}

}  // namespace

// ---- the op list ------------------------------------------------------------------------------

void add_bias(void* y, const void* bias, DType t, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  dispatch_float("add_bias", t, [&]<class T>() {
    add_bias_kernel<T><<<grid_for(rows * cols), kThreads, 0, compute_stream()>>>(
        static_cast<T*>(y), static_cast<const T*>(bias), rows, cols);
  });
  TERN_CUDA_CHECK_LAUNCH("add_bias_kernel");
}

void bias_grad(const void* dy, DType t, float* dbias, int64_t rows, int64_t cols, bool accumulate) {
  dispatch_float("bias_grad", t, [&]<class T>() {
    colsums<T, false>(static_cast<const T*>(dy), nullptr, nullptr, nullptr, rows, cols, dbias,
                      nullptr, accumulate);
  });
}

void activation_forward(ops::Activation act, const void* x, void* y, DType t, int64_t n) {
  dispatch_float("activation_forward", t, [&]<class T>() {
    switch (act) {
      case Activation::relu:
        return launch_unary<T, T>(x, y, n, ActFwd<Relu>());
      case Activation::gelu:
        return launch_unary<T, T>(x, y, n, ActFwd<Gelu>());
      case Activation::tanh:
        return launch_unary<T, T>(x, y, n, ActFwd<Tanh>());
    }
  });
}

void activation_backward(ops::Activation act, const void* x, const void* dy, void* dx, DType t,
                         int64_t n) {
  dispatch_float("activation_backward", t, [&]<class T>() {
    switch (act) {
      case Activation::relu:
        return launch_binary<T>(x, dy, dx, n, ActBwd<Relu>());
      case Activation::gelu:
        return launch_binary<T>(x, dy, dx, n, ActBwd<Gelu>());
      case Activation::tanh:
        return launch_binary<T>(x, dy, dx, n, ActBwd<Tanh>());
    }
  });
}

void dropout(const void* x, void* y, DType t, int64_t rows, int64_t cols, float p,
             ops::DropoutKey key) {
  if (rows * cols == 0) return;
  dispatch_float("dropout", t, [&]<class T>() {
    dropout_kernel<T><<<grid_for(rows * ((cols + 3) / 4)), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(x), static_cast<T*>(y), rows, cols, p, key.seed, key.stream,
        key.first_sample);
  });
  TERN_CUDA_CHECK_LAUNCH("dropout_kernel");
}

void layernorm_forward(const void* x, DType t, const float* gamma, const float* beta, void* y,
                       float* mean, float* rstd, int64_t rows, int64_t cols, float eps) {
  if (rows == 0) return;
  const int blocks = static_cast<int>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  dispatch_float("layernorm_forward", t, [&]<class T>() {
    layernorm_forward_kernel<T><<<blocks, kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(x), gamma, beta, static_cast<T*>(y), mean, rstd, rows, cols, eps);
  });
  TERN_CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

void layernorm_backward(const void* dy, const void* x, DType t, const float* gamma,
                        const float* mean, const float* rstd, void* dx, float* dgamma, float* dbeta,
                        int64_t rows, int64_t cols, bool accumulate) {
  const int blocks = static_cast<int>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  dispatch_float("layernorm_backward", t, [&]<class T>() {
    if (rows > 0) {
      layernorm_backward_kernel<T><<<blocks, kThreads, 0, compute_stream()>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), gamma, mean, rstd,
          static_cast<T*>(dx), rows, cols);
      TERN_CUDA_CHECK_LAUNCH("layernorm_backward_kernel");
    }
    // dbeta = column sums of dy, dgamma = column sums of dy * xhat.
    colsums<T, true>(static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd, rows, cols,
                     dbeta, dgamma, accumulate);
  });
}

ops::LossStats softmax_cross_entropy(const void* logits, DType t, const int32_t* labels,
                                     void* dlogits, float grad_scale, int64_t rows,
                                     int64_t classes) {
  if (rows == 0) return {};
  LossScratch s = loss_scratch(rows);
  const int blocks = static_cast<int>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  dispatch_float("softmax_cross_entropy", t, [&]<class T>() {
    softmax_xent_kernel<T><<<blocks, kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(logits), labels, static_cast<T*>(dlogits), grad_scale, rows, classes,
        s.row_loss, s.row_flag);
  });
  TERN_CUDA_CHECK_LAUNCH("softmax_xent_kernel");
  const LossResult r = finish_loss(s.row_loss, s.row_flag, rows, s.result);
  if (r.bad_row >= 0) {
    int32_t label = 0;
    TERN_CUDA_CHECK(cudaMemcpy(&label, labels + r.bad_row, sizeof label, cudaMemcpyDeviceToHost));
    throw std::out_of_range("softmax_cross_entropy: row " + std::to_string(r.bad_row) +
                            " has label " + std::to_string(label) + ", outside [0, " +
                            std::to_string(classes) + ")");
  }
  return {r.loss_sum, static_cast<int64_t>(r.correct)};
}

ops::LossStats mean_squared_error(const void* pred, DType t, const float* target, void* dpred,
                                  float grad_scale, int64_t rows, int64_t cols) {
  if (rows == 0) return {};
  LossScratch s = loss_scratch(rows);
  const int blocks = static_cast<int>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  dispatch_float("mean_squared_error", t, [&]<class T>() {
    mse_kernel<T><<<blocks, kThreads, 0, compute_stream()>>>(static_cast<const T*>(pred), target,
                                                             static_cast<T*>(dpred), grad_scale,
                                                             rows, cols, s.row_loss, s.row_flag);
  });
  TERN_CUDA_CHECK_LAUNCH("mse_kernel");
  const LossResult r = finish_loss(s.row_loss, s.row_flag, rows, s.result);
  return {r.loss_sum, 0};
}

double sum_squares(const float* x, int64_t n) {
  const int blocks = std::min(grid_for(n / 4 + 1), 1024);
  auto* partial = static_cast<double*>(scratch(sizeof(double) * (blocks + 1)));
  sum_squares_kernel<<<blocks, kThreads, 0, compute_stream()>>>(x, n, partial);
  TERN_CUDA_CHECK_LAUNCH("sum_squares_kernel");
  sum_partials_kernel<<<1, 1024, 0, compute_stream()>>>(partial, blocks, partial + blocks);
  TERN_CUDA_CHECK_LAUNCH("sum_partials_kernel");
  auto* host = static_cast<double*>(pinned_readback(sizeof(double)));
  TERN_CUDA_CHECK(cudaMemcpyAsync(host, partial + blocks, sizeof(double), cudaMemcpyDeviceToHost,
                                  compute_stream()));
  synchronize();
  return *host;
}

void scale(float* x, float s, int64_t n) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), kThreads, 0, compute_stream()>>>(x, s, n);
  TERN_CUDA_CHECK_LAUNCH("scale_kernel");
}

void adamw_update(float* p, const float* g, float* m, float* v,
                  const std::vector<ops::ParamSegment>& segments, const ops::AdamWHyper& h,
                  void* shadow) {
  std::lock_guard<std::mutex> lock(chunk_mutex());
  int chunks = 0;
  const Chunk* table = chunk_table(segments, &chunks);
  if (chunks == 0) return;
  // Bias corrections exactly as the CPU reference computes them.
  const float bc1 = 1.0f - static_cast<float>(std::pow(h.beta1, static_cast<double>(h.step)));
  const float bc2 = 1.0f - static_cast<float>(std::pow(h.beta2, static_cast<double>(h.step)));
  AdamWArgs a{h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.lr / bc1, 1.0f / std::sqrt(bc2)};
  const bool aligned = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
  adamw_kernel<<<chunks, kThreads, 0, compute_stream()>>>(p, g, m, v, static_cast<bf16*>(shadow),
                                                          table, a, aligned);
  TERN_CUDA_CHECK_LAUNCH("adamw_kernel");
}

void sgd_update(float* p, const float* g, float* vel,
                const std::vector<ops::ParamSegment>& segments, const ops::SgdHyper& h,
                void* shadow) {
  std::lock_guard<std::mutex> lock(chunk_mutex());
  int chunks = 0;
  const Chunk* table = chunk_table(segments, &chunks);
  if (chunks == 0) return;
  sgd_kernel<<<chunks, kThreads, 0, compute_stream()>>>(
      p, g, vel, static_cast<bf16*>(shadow), table, {h.lr, h.momentum, h.weight_decay, h.nesterov});
  TERN_CUDA_CHECK_LAUNCH("sgd_kernel");
}

namespace {
struct Identity {
  __device__ float operator()(float x) const { return x; }
};
}  // namespace

void convert(const void* src, DType from, void* dst, DType to, int64_t n) {
  if (from == DType::f32 && to == DType::bf16)
    launch_unary<float, bf16>(src, dst, n, Identity());
  else if (from == DType::bf16 && to == DType::f32)
    launch_unary<bf16, float>(src, dst, n, Identity());
  else if (from == to)
    TERN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * dtype_size(from), cudaMemcpyDeviceToDevice,
                                    compute_stream()));
  else
    throw std::invalid_argument(std::string("cuda convert: ") + dtype_name(from) + " to " +
                                dtype_name(to) + " is not supported");
}

}  // namespace tern::cuda
