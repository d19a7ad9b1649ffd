// Kernels of the convolutional and sequence layers: residual add, per-channel bias, pooling, batch
// normalisation and embeddings. As in kernels.cu, each mirrors its CPU reference (src/ops.cpp,
// src/compute/cpu/conv.cpp) with the same summation order where the CPU's order is cheap to follow
// (pooling and embedding gradients gather in the CPU's order, so f32 results match it exactly),
// and every reduction runs in a fixed order: no float atomics, results reproducible run to run.
#include <cub/device/device_radix_sort.cuh>

#include <cmath>
#include <cstring>
#include <vector>

#include "check.h"
#include "cuda_ops.h"
#include "device_common.cuh"
#include "runtime.h"

namespace tern::cuda {
namespace {

// ---- per-channel reductions over [n, c, s] ----------------------------------------------------

// What a channel reduction sums: a = x or dy, b = x for the normalised product.
enum class Reduce {
  values_and_squares,  // sum a, sum a^2              (batch norm forward)
  grad_and_xhat,       // sum a, sum a (b - mean) rstd (batch norm backward)
  values,              // sum a                        (convolution bias gradient)
};

constexpr int kMaxPartials = 64;

// Partial sums of channel blockIdx.x over samples [p chunk, (p + 1) chunk), p = blockIdx.y: each
// thread strides over the chunk in a fixed pattern, then a shared-memory tree of fixed shape.
template <class T, Reduce R>
__global__ void channel_partial_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ rstd, int64_t n, int64_t c,
                                       int64_t s, int64_t chunk, double* __restrict__ partial) {
  const int64_t ch = blockIdx.x, p = blockIdx.y;
  const int64_t first = p * chunk, last = first + chunk < n ? first + chunk : n;
  const float mu = R == Reduce::grad_and_xhat ? mean[ch] : 0.0f;
  const float rs = R == Reduce::grad_and_xhat ? rstd[ch] : 0.0f;
  double acc0 = 0, acc1 = 0;
  const int64_t count = (last > first ? last - first : 0) * s;
  for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
    const int64_t i = ((first + e / s) * c + ch) * s + e % s;
    const float v = to_f(a[i]);
    acc0 += v;
    if constexpr (R == Reduce::values_and_squares) acc1 += static_cast<double>(v) * v;
    // The CPU's expression: a double product with the float difference, then with rstd.
    if constexpr (R == Reduce::grad_and_xhat)
      acc1 += static_cast<double>(v) * (to_f(b[i]) - mu) * rs;
  }
  __shared__ double s0[kThreads], s1[kThreads];
  s0[threadIdx.x] = acc0;
  s1[threadIdx.x] = acc1;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      s0[threadIdx.x] += s0[threadIdx.x + half];
      s1[threadIdx.x] += s1[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[(ch * gridDim.y + p) * 2] = s0[0];
    partial[(ch * gridDim.y + p) * 2 + 1] = s1[0];
  }
}

// sums[ch] and sums[c + ch] from the partials in order; optionally into f32 gradients:
// g0[ch] (+)= sums[ch], g1[ch] (+)= sums[c + ch].
__global__ void channel_final_kernel(const double* __restrict__ partial, int parts, int64_t c,
                                     double* __restrict__ sums, float* __restrict__ g0,
                                     float* __restrict__ g1, bool accumulate) {
  const int64_t ch = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (ch >= c) return;
  double a = 0, b = 0;
  for (int p = 0; p < parts; ++p) {
    a += partial[(ch * parts + p) * 2];
    b += partial[(ch * parts + p) * 2 + 1];
  }
  sums[ch] = a;
  sums[c + ch] = b;
  if (g0) g0[ch] = (accumulate ? g0[ch] : 0.0f) + static_cast<float>(a);
  if (g1) g1[ch] = (accumulate ? g1[ch] : 0.0f) + static_cast<float>(b);
}

// Runs the reduction; copies the 2c sums to host_sums when given (synchronising).
template <class T, Reduce R>
void channel_sums(const T* a, const T* b, const float* mean, const float* rstd, int64_t n,
                  int64_t c, int64_t s, float* g0, float* g1, bool accumulate, double* host_sums) {
  const int64_t per_sample = std::max<int64_t>(s, 1);
  const int parts = static_cast<int>(std::clamp<int64_t>(
      n * per_sample / 4096, 1, std::min<int64_t>(std::max<int64_t>(n, 1), kMaxPartials)));
  const int64_t chunk = (n + parts - 1) / parts;
  auto* partial = static_cast<double*>(scratch(sizeof(double) * (2 * c * parts + 2 * c)));
  double* sums = partial + 2 * c * parts;
  channel_partial_kernel<T, R>
      <<<dim3(static_cast<unsigned>(c), parts), kThreads, 0, compute_stream()>>>(
          a, b, mean, rstd, n, c, s, chunk, partial);
  TERN_CUDA_CHECK_LAUNCH("channel_partial_kernel");
  channel_final_kernel<<<grid_for(c), kThreads, 0, compute_stream()>>>(partial, parts, c, sums, g0,
                                                                       g1, accumulate);
  TERN_CUDA_CHECK_LAUNCH("channel_final_kernel");
  if (!host_sums) return;
  auto* pinned = static_cast<double*>(pinned_readback(sizeof(double) * 2 * c));
  TERN_CUDA_CHECK(cudaMemcpyAsync(pinned, sums, sizeof(double) * 2 * c, cudaMemcpyDeviceToHost,
                                  compute_stream()));
  TERN_CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
  std::memcpy(host_sums, pinned, sizeof(double) * 2 * c);
}

// y = x * scale[ch] + shift[ch] (batch norm forward), or y += bias[ch] when x is null.
template <class T>
__global__ void channel_affine_kernel(const T* __restrict__ x, T* __restrict__ y,
                                      const float* __restrict__ mean,
                                      const float* __restrict__ rstd,
                                      const float* __restrict__ gamma,
                                      const float* __restrict__ beta, int64_t total, int64_t c,
                                      int64_t s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = (i / s) % c;
    const float k = rstd[ch] * gamma[ch], off = beta[ch] - mean[ch] * k;
    y[i] = from_f<T>(to_f(x[i]) * k + off);
  }
}

template <class T>
__global__ void channel_bias_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t total,
                                    int64_t c, int64_t s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(to_f(y[i]) + to_f(bias[(i / s) % c]));
}

// dx = gamma rstd (dy - m1 - xhat m2), m = [m1 | m2] per channel (means over the global batch).
template <class T>
__global__ void batchnorm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    const float* __restrict__ gamma, const float* __restrict__ m,
                                    T* __restrict__ dx, int64_t total, int64_t c, int64_t s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = (i / s) % c;
    const float rs = rstd[ch], k = gamma[ch] * rs;
    dx[i] = from_f<T>(k * (to_f(dy[i]) - m[ch] - (to_f(x[i]) - mean[ch]) * rs * m[c + ch]));
  }
}

// ---- pooling ----------------------------------------------------------------------------------

template <class T>
__global__ void pool_forward_kernel(ops::Pool pool, const T* __restrict__ x, T* __restrict__ y,
                                    ops::PoolDims d) {
  const int64_t total = d.n * d.c * d.oh * d.ow;
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = o % d.ow, oy = o / d.ow % d.oh, plane = o / (d.ow * d.oh);
    const T* in = x + plane * d.h * d.w + oy * d.stride * d.w + ox * d.stride;
    float acc = pool == ops::Pool::max ? -INFINITY : 0.0f;
    for (int64_t i = 0; i < d.k; ++i)
      for (int64_t j = 0; j < d.k; ++j) {
        const float v = to_f(in[i * d.w + j]);
        acc = pool == ops::Pool::max ? fmaxf(acc, v) : acc + v;
      }
    y[o] = from_f<T>(pool == ops::Pool::max ? acc : acc * inv);
  }
}

// Each input element gathers from the windows that contain it, in the CPU's (oy, ox) order; for
// max pooling only from windows whose first maximum it is.
template <class T>
__global__ void pool_backward_kernel(ops::Pool pool, const T* __restrict__ x,
                                     const T* __restrict__ dy, T* __restrict__ dx,
                                     ops::PoolDims d) {
  const int64_t total = d.n * d.c * d.h * d.w;
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ix = e % d.w, iy = e / d.w % d.h, plane = e / (d.w * d.h);
    const T* in = x + plane * d.h * d.w;
    const T* g = dy + plane * d.oh * d.ow;
    // Windows oy with oy * stride <= iy < oy * stride + k.
    const int64_t oy0 = iy >= d.k ? (iy - d.k) / d.stride + 1 : 0;
    const int64_t ox0 = ix >= d.k ? (ix - d.k) / d.stride + 1 : 0;
    const int64_t oy1 = iy / d.stride < d.oh - 1 ? iy / d.stride : d.oh - 1;
    const int64_t ox1 = ix / d.stride < d.ow - 1 ? ix / d.stride : d.ow - 1;
    float acc = 0.0f;
    for (int64_t oy = oy0; oy <= oy1; ++oy)
      for (int64_t ox = ox0; ox <= ox1; ++ox) {
        const float go = to_f(g[oy * d.ow + ox]);
        if (pool == ops::Pool::avg) {
          acc += go * inv;
          continue;
        }
        const int64_t base = oy * d.stride * d.w + ox * d.stride;
        int64_t arg = base;
        for (int64_t i = 0; i < d.k; ++i)
          for (int64_t j = 0; j < d.k; ++j)
            if (to_f(in[base + i * d.w + j]) > to_f(in[arg])) arg = base + i * d.w + j;
        if (arg == iy * d.w + ix) acc += go;
      }
    dx[e] = from_f<T>(acc);
  }
}

// ---- embeddings -------------------------------------------------------------------------------

template <class T>
__global__ void embedding_forward_kernel(const int32_t* __restrict__ ids,
                                         const float* __restrict__ table,
                                         const float* __restrict__ positions, T* __restrict__ out,
                                         int64_t rows, int64_t seq, int64_t vocab, int64_t dim,
                                         unsigned long long* __restrict__ first_bad) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / dim, j = e % dim;
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab) {
      if (j == 0) atomicMin(first_bad, static_cast<unsigned long long>(i));
      out[e] = from_f<T>(0.0f);
      continue;
    }
    float v = table[id * dim + j];
    if (positions) v += positions[(i % seq) * dim + j];
    out[e] = from_f<T>(v);
  }
}

__global__ void iota_kernel(int32_t* __restrict__ v, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    v[i] = static_cast<int32_t>(i);
}

// After a stable sort by id: the thread at the start of each id's run (column j) adds the run's
// rows in position order, starting from the current gradient, as the CPU loop does.
template <class T>
__global__ void embedding_table_grad_kernel(const int32_t* __restrict__ sorted_ids,
                                            const int32_t* __restrict__ sorted_pos,
                                            const T* __restrict__ dout, float* __restrict__ dtable,
                                            int64_t rows, int64_t vocab, int64_t dim) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / dim, j = e % dim;
    const int32_t id = sorted_ids[i];
    if ((i > 0 && sorted_ids[i - 1] == id) || id < 0 || id >= vocab) continue;
    float acc = dtable[id * dim + j];
    for (int64_t r = i; r < rows && sorted_ids[r] == id; ++r)
      acc += to_f(dout[sorted_pos[r] * dim + j]);
    dtable[id * dim + j] = acc;
  }
}

template <class T>
__global__ void embedding_position_grad_kernel(const T* __restrict__ dout,
                                               float* __restrict__ dpositions, int64_t n,
                                               int64_t seq, int64_t dim) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < seq * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = dpositions[e];
    for (int64_t r = 0; r < n; ++r) acc += to_f(dout[r * seq * dim + e]);
    dpositions[e] = acc;
  }
}

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  // No __restrict__: out may alias a or b (each element is read before it is written).
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void add(const void* a, const void* b, void* out, DType t, int64_t n) {
  if (n == 0) return;
  dispatch_float("add", t, [&]<class T>() {
    add_kernel<T><<<grid_for(n), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n);
  });
  TERN_CUDA_CHECK_LAUNCH("add_kernel");
}

void channel_bias_forward(void* y, const void* bias, DType t, int64_t n, int64_t c, int64_t s) {
  const int64_t total = n * c * s;
  if (total == 0) return;
  dispatch_float("channel_bias_forward", t, [&]<class T>() {
    channel_bias_kernel<T><<<grid_for(total), kThreads, 0, compute_stream()>>>(
        static_cast<T*>(y), static_cast<const T*>(bias), total, c, s);
  });
  TERN_CUDA_CHECK_LAUNCH("channel_bias_kernel");
}

void channel_bias_grad(const void* dy, DType t, float* dbias, int64_t n, int64_t c, int64_t s,
                       bool accumulate) {
  if (c == 0) return;
  dispatch_float("channel_bias_grad", t, [&]<class T>() {
    channel_sums<T, Reduce::values>(static_cast<const T*>(dy), nullptr, nullptr, nullptr, n, c, s,
                                    dbias, nullptr, accumulate, nullptr);
  });
}

void pool2d_forward(ops::Pool pool, const void* x, void* y, DType t, const ops::PoolDims& d) {
  const int64_t total = d.n * d.c * d.oh * d.ow;
  if (total == 0) return;
  dispatch_float("pool2d_forward", t, [&]<class T>() {
    pool_forward_kernel<T><<<grid_for(total), kThreads, 0, compute_stream()>>>(
        pool, static_cast<const T*>(x), static_cast<T*>(y), d);
  });
  TERN_CUDA_CHECK_LAUNCH("pool_forward_kernel");
}

void pool2d_backward(ops::Pool pool, const void* x, const void* dy, void* dx, DType t,
                     const ops::PoolDims& d) {
  const int64_t total = d.n * d.c * d.h * d.w;
  if (total == 0) return;
  dispatch_float("pool2d_backward", t, [&]<class T>() {
    pool_backward_kernel<T><<<grid_for(total), kThreads, 0, compute_stream()>>>(
        pool, static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), d);
  });
  TERN_CUDA_CHECK_LAUNCH("pool_backward_kernel");
}

void batchnorm_sums(const void* x, DType t, int64_t n, int64_t c, int64_t s, double* host_sums) {
  dispatch_float("batchnorm_sums", t, [&]<class T>() {
    channel_sums<T, Reduce::values_and_squares>(static_cast<const T*>(x), nullptr, nullptr, nullptr,
                                                n, c, s, nullptr, nullptr, false, host_sums);
  });
}

void batchnorm_forward(const void* x, DType t, const float* mean, const float* rstd,
                       const float* gamma, const float* beta, void* y, int64_t n, int64_t c,
                       int64_t s) {
  const int64_t total = n * c * s;
  if (total == 0) return;
  dispatch_float("batchnorm_forward", t, [&]<class T>() {
    channel_affine_kernel<T><<<grid_for(total), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(x), static_cast<T*>(y), mean, rstd, gamma, beta, total, c, s);
  });
  TERN_CUDA_CHECK_LAUNCH("channel_affine_kernel");
}

void batchnorm_backward_sums(const void* dy, const void* x, DType t, const float* mean,
                             const float* rstd, float* dgamma, float* dbeta, int64_t n, int64_t c,
                             int64_t s, double* host_sums) {
  dispatch_float("batchnorm_backward_sums", t, [&]<class T>() {
    channel_sums<T, Reduce::grad_and_xhat>(static_cast<const T*>(dy), static_cast<const T*>(x),
                                           mean, rstd, n, c, s, dbeta, dgamma, true, host_sums);
  });
}

void batchnorm_backward(const void* dy, const void* x, DType t, const float* mean,
                        const float* rstd, const float* gamma, const double* host_sums,
                        double count, void* dx, int64_t n, int64_t c, int64_t s) {
  const int64_t total = n * c * s;
  if (total == 0) return;
  // The global means of dy and dy * xhat, per channel, as the CPU rounds them.
  std::vector<float> m(2 * c);
  for (int64_t i = 0; i < 2 * c; ++i) m[i] = static_cast<float>(host_sums[i] / count);
  auto* dm = static_cast<float*>(scratch(sizeof(float) * 2 * c));
  // Pageable source: the copy is staged before cudaMemcpyAsync returns, so m may go.
  TERN_CUDA_CHECK(cudaMemcpyAsync(dm, m.data(), sizeof(float) * 2 * c, cudaMemcpyHostToDevice,
                                  compute_stream()));
  dispatch_float("batchnorm_backward", t, [&]<class T>() {
    batchnorm_dx_kernel<T><<<grid_for(total), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd, gamma, dm,
        static_cast<T*>(dx), total, c, s);
  });
  TERN_CUDA_CHECK_LAUNCH("batchnorm_dx_kernel");
}

int64_t embedding_forward(const int32_t* ids, const float* table, const float* positions, void* out,
                          DType t, int64_t n, int64_t seq, int64_t vocab, int64_t dim) {
  const int64_t rows = n * seq;
  if (rows * dim == 0) return -1;
  auto* flag = static_cast<unsigned long long*>(scratch(sizeof(unsigned long long)));
  TERN_CUDA_CHECK(cudaMemsetAsync(flag, 0xff, sizeof(unsigned long long), compute_stream()));
  dispatch_float("embedding_forward", t, [&]<class T>() {
    embedding_forward_kernel<T><<<grid_for(rows * dim), kThreads, 0, compute_stream()>>>(
        ids, table, positions, static_cast<T*>(out), rows, seq, vocab, dim, flag);
  });
  TERN_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
  auto* host = static_cast<unsigned long long*>(pinned_readback(sizeof(unsigned long long)));
  TERN_CUDA_CHECK(cudaMemcpyAsync(host, flag, sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                                  compute_stream()));
  TERN_CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
  return *host == ~0ull ? -1 : static_cast<int64_t>(*host);
}

void embedding_backward(const int32_t* ids, const void* dout, DType t, float* dtable,
                        float* dpositions, int64_t n, int64_t seq, int64_t vocab, int64_t dim) {
  const int64_t rows = n * seq;
  if (rows * dim == 0) return;
  if (rows > INT32_MAX) throw std::invalid_argument("cuda embedding_backward: over 2^31 tokens");
  const int items = static_cast<int>(rows);
  // Sort (id, position) pairs by id over all 32 bits (an id outside the range cannot split another
  // id's run); radix sort is stable, so positions stay ascending within each id.
  size_t temp_bytes = 0;
  TERN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, ids, static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), items, 0, 32,
      compute_stream()));
  const size_t ids_bytes = align256(sizeof(int32_t) * rows);
  char* base = static_cast<char*>(scratch(3 * ids_bytes + align256(temp_bytes)));
  auto* sorted_ids = reinterpret_cast<int32_t*>(base);
  auto* positions_in = reinterpret_cast<int32_t*>(base + ids_bytes);
  auto* sorted_pos = reinterpret_cast<int32_t*>(base + 2 * ids_bytes);
  void* temp = base + 3 * ids_bytes;
  iota_kernel<<<grid_for(rows), kThreads, 0, compute_stream()>>>(positions_in, rows);
  TERN_CUDA_CHECK_LAUNCH("iota_kernel");
  // Ids outside [0, vocab) were reported by forward; the gradient kernel skips them.
  TERN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, sorted_ids, positions_in,
                                                  sorted_pos, items, 0, 32, compute_stream()));
  dispatch_float("embedding_backward", t, [&]<class T>() {
    embedding_table_grad_kernel<T><<<grid_for(rows * dim), kThreads, 0, compute_stream()>>>(
        sorted_ids, sorted_pos, static_cast<const T*>(dout), dtable, rows, vocab, dim);
    TERN_CUDA_CHECK_LAUNCH("embedding_table_grad_kernel");
    if (dpositions) {
      embedding_position_grad_kernel<T><<<grid_for(seq * dim), kThreads, 0, compute_stream()>>>(
          static_cast<const T*>(dout), dpositions, n, seq, dim);
      TERN_CUDA_CHECK_LAUNCH("embedding_position_grad_kernel");
    }
  });
}

}  // namespace tern::cuda
