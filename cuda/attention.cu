// Over 600 lines on purpose: the forward and backward kernels share their tiling and must change
// together.
// Fused causal multi-head self-attention (flash attention): per (sample, head) the queries, keys
// and values are streamed through shared memory in tiles and the softmax runs online (a running
// max and sum per query, the partial output rescaled as the max grows), so no T x T matrix is
// ever stored; the forward saves only each query's log-sum-exp, from which backward recomputes
// the probabilities tile by tile.
//
// Backward is split so that every gradient element has exactly one writer, in a fixed summation
// order, with no float atomics, and results are bitwise reproducible: one kernel computes
// D_t = dO_t . O_t; one block per key tile loops over the query tiles at or below the diagonal
// and accumulates that tile's dK and dV; one block per query tile loops over the key tiles and
// accumulates dQ. The scores and dP are computed twice (once per kernel), the price of
// determinism that flash attention's atomic dQ avoids.
//
// Two implementations, chosen at dispatch:
//  - tensor cores (bf16, head dim a multiple of 16, 16-byte aligned tensors): mma.sync
//    m16n8k16 bf16 x bf16 -> f32 with ldmatrix operand loads and cp.async double buffering.
//    Each warp owns 16 rows of the block's tile; a score fragment's layout is exactly the A
//    operand's layout of the next product, so P and dS never leave registers (they are rounded
//    to bf16 for that product, as flash attention does).
//  - scalar FMA (f32, and bf16 for other head dims): 32 x 32 tiles in f32 shared memory. f32
//    stays off TF32 so it matches the CPU reference (src/compute/cpu/attention.cpp) to f32
//    rounding.
// Both template on the head dim padded to 32, 64 or 128; the padding is zero-filled in shared
// memory, so it adds nothing to any dot product, and is never stored.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "check.h"
#include "cuda_ops.h"
#include "device_common.cuh"
#include "runtime.h"

namespace tern::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Every attention kernel runs 4 warps: 4 x 16 mma rows, or 32 rows of 4 threads each.
constexpr int kAttnThreads = 128;
constexpr int kStaticSmem = 48 * 1024;

// Which rows of the packed [n, t, 3c] projections (and of the [n, t, c] outputs) one block works
// on. Blocks are numbered heaviest tile first: causal tiles differ in work by up to the number of
// tiles, and the short ones then fill the gaps at the end of the grid.
struct HeadSlice {
  int b, h, bh;     // sample, head, b * heads + h (the row of lse and D)
  int64_t c, ld3;   // heads * d, the row stride of qkv
  int64_t qkv_off;  // offset of (b, row 0, head h) in qkv, q part
  int64_t out_off;  // offset of (b, row 0, head h) in out / dout
};

__device__ __forceinline__ HeadSlice head_slice(int bh, int seq, int heads, int d) {
  HeadSlice s;
  s.bh = bh;
  s.b = bh / heads;
  s.h = bh % heads;
  s.c = static_cast<int64_t>(heads) * d;
  s.ld3 = 3 * s.c;
  s.qkv_off = static_cast<int64_t>(s.b) * seq * s.ld3 + static_cast<int64_t>(s.h) * d;
  s.out_off = static_cast<int64_t>(s.b) * seq * s.c + static_cast<int64_t>(s.h) * d;
  return s;
}

// ---- D_t = dO_t . O_t (backward's row correction) ---------------------------------------------

// One warp per (sample, position, head) row; rows of [n, t, c] with head h are r * d onwards
// for r = (b * seq + t) * heads + h, so the row index needs no decomposition to read.
template <class T>
__global__ void attn_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout,
                                  float* __restrict__ delta, int64_t rows, int seq, int heads,
                                  int d) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    const T* o = out + r * d;
    const T* g = dout + r * d;
    float s = 0.0f;
    for (int k = lane; k < d; k += 32) s += to_f(o[k]) * to_f(g[k]);
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (lane == 0) {
      const int64_t bt = r / heads;  // b * seq + t
      const int64_t h = r % heads, b = bt / seq, t = bt % seq;
      delta[(b * heads + h) * seq + t] = s;
    }
  }
}

// ---- scalar path ------------------------------------------------------------------------------
// Tiles of 32 rows in f32 shared memory, rows padded by one float so that a column walk hits 32
// different banks. Thread i owns row i / 4 of the score tile and the 8 columns (i % 4) + 4 j, and
// the same row of the output tile with columns (i % 4) + 4 j: a row's 4 threads are adjacent
// lanes, so row reductions are two shuffles and a row of P is shared within the warp only.

constexpr int kSB = 32;  // scalar tile rows (queries and keys)

template <int DP>
constexpr int kScalarLd = DP + 1;

// rows [t0, t0 + kSB) of one head's [seq, d] slice (row stride ld) into dst[kSB][DP + 1] as f32,
// zero beyond seq and beyond d.
template <class T, int DP>
__device__ __forceinline__ void load_rows_f32(float* dst, const T* __restrict__ src, int64_t ld,
                                              int t0, int seq, int d) {
  for (int i = threadIdx.x; i < kSB * DP; i += kAttnThreads) {
    const int r = i / DP, k = i % DP;
    dst[r * kScalarLd<DP> + k] =
        (t0 + r < seq && k < d) ? to_f(src[static_cast<int64_t>(t0 + r) * ld + k]) : 0.0f;
  }
}

template <class T, int DP>
__global__ void __launch_bounds__(kAttnThreads)
    attn_fwd_scalar(const T* __restrict__ qkv, T* __restrict__ out, float* __restrict__ lse,
                    int seq, int heads, int d, int nh, float scale) {
  constexpr int LD = kScalarLd<DP>, PL = kSB + 1, OC = DP / 4;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  float* sq = reinterpret_cast<float*>(attn_smem);
  float* sk = sq + kSB * LD;
  float* sv = sk + kSB * LD;
  float* sp = sv + kSB * LD;  // [kSB][PL]

  const int tiles = (seq + kSB - 1) / kSB;
  const int qt = tiles - 1 - static_cast<int>(blockIdx.x / nh);
  const HeadSlice hs = head_slice(static_cast<int>(blockIdx.x % nh), seq, heads, d);
  const T* qb = qkv + hs.qkv_off;
  const int q0 = qt * kSB;
  const int row = threadIdx.x / 4, cq = threadIdx.x % 4;
  const int tq = q0 + row;

  load_rows_f32<T, DP>(sq, qb, hs.ld3, q0, seq, d);
  float m = -INFINITY, l = 0.0f;
  float o[OC];
#pragma unroll
  for (int j = 0; j < OC; ++j) o[j] = 0.0f;

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kSB;
    __syncthreads();  // the previous tile's K, V and P are no longer read
    load_rows_f32<T, DP>(sk, qb + hs.c, hs.ld3, k0, seq, d);
    load_rows_f32<T, DP>(sv, qb + 2 * hs.c, hs.ld3, k0, seq, d);
    __syncthreads();

    float s[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j] = 0.0f;
#pragma unroll 8
    for (int k = 0; k < DP; ++k) {
      const float qv = sq[row * LD + k];
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] += qv * sk[(cq + 4 * j) * LD + k];
    }
    // Causal mask; keys at or past seq only ever lie above the diagonal of a real query.
    float mx = m;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j] = (k0 + cq + 4 * j <= tq) ? s[j] * scale : -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // mx is finite: key k0 <= q0 <= tq is never masked.
    const float alpha = expf(m - mx);  // 0 on the first tile (m = -inf)
    m = mx;
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float p = expf(s[j] - m);
      sum += p;
      sp[row * PL + cq + 4 * j] = p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    l = l * alpha + sum;
    __syncwarp();  // the row of P was written by the 4 lanes that read it
#pragma unroll
    for (int j = 0; j < OC; ++j) o[j] *= alpha;
    for (int cc = 0; cc < kSB; ++cc) {
      const float p = sp[row * PL + cc];
#pragma unroll
      for (int j = 0; j < OC; ++j) o[j] += p * sv[cc * LD + cq + 4 * j];
    }
  }

  if (tq < seq) {
    const float inv = 1.0f / l;
    T* dst = out + hs.out_off + static_cast<int64_t>(tq) * hs.c;
#pragma unroll
    for (int j = 0; j < OC; ++j)
      if (cq + 4 * j < d) dst[cq + 4 * j] = from_f<T>(o[j] * inv);
    if (cq == 0) lse[static_cast<int64_t>(hs.bh) * seq + tq] = m + logf(l);
  }
}

// dK and dV of one key tile: thread rows are keys, score columns are queries (S^T, P^T, dS^T).
template <class T, int DP>
__global__ void __launch_bounds__(kAttnThreads)
    attn_bwd_dkdv_scalar(const T* __restrict__ qkv, const T* __restrict__ dout,
                         const float* __restrict__ lse, const float* __restrict__ delta,
                         T* __restrict__ dqkv, int seq, int heads, int d, int nh, float scale) {
  constexpr int LD = kScalarLd<DP>, PL = kSB + 1, OC = DP / 4;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  float* sk = reinterpret_cast<float*>(attn_smem);
  float* sv = sk + kSB * LD;
  float* sq = sv + kSB * LD;
  float* sdo = sq + kSB * LD;
  float* sp = sdo + kSB * LD;  // P^T [key][query]
  float* sds = sp + kSB * PL;  // dS^T [key][query]
  float* slse = sds + kSB * PL;
  float* sdd = slse + kSB;

  const int tiles = (seq + kSB - 1) / kSB;
  const int kt = static_cast<int>(blockIdx.x / nh);  // key tile 0 sees every query tile
  const HeadSlice hs = head_slice(static_cast<int>(blockIdx.x % nh), seq, heads, d);
  const T* qb = qkv + hs.qkv_off;
  const T* gb = dout + hs.out_off;
  const float* lse_h = lse + static_cast<int64_t>(hs.bh) * seq;
  const float* d_h = delta + static_cast<int64_t>(hs.bh) * seq;
  const int k0 = kt * kSB;
  const int row = threadIdx.x / 4, cq = threadIdx.x % 4;
  const int key = k0 + row;

  load_rows_f32<T, DP>(sk, qb + hs.c, hs.ld3, k0, seq, d);
  load_rows_f32<T, DP>(sv, qb + 2 * hs.c, hs.ld3, k0, seq, d);
  float dk[OC], dv[OC];
#pragma unroll
  for (int j = 0; j < OC; ++j) dk[j] = dv[j] = 0.0f;

  for (int qt = kt; qt < tiles; ++qt) {
    const int q0 = qt * kSB;
    __syncthreads();  // the previous tile's Q, dO, P^T and dS^T are no longer read
    load_rows_f32<T, DP>(sq, qb, hs.ld3, q0, seq, d);
    load_rows_f32<T, DP>(sdo, gb, hs.c, q0, seq, d);
    if (threadIdx.x < kSB) {
      const int q = q0 + threadIdx.x;
      slse[threadIdx.x] = q < seq ? lse_h[q] : 0.0f;
      sdd[threadIdx.x] = q < seq ? d_h[q] : 0.0f;
    }
    __syncthreads();

    float s[8], dp[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j] = dp[j] = 0.0f;
#pragma unroll 4
    for (int k = 0; k < DP; ++k) {
      const float kv = sk[row * LD + k], vv = sv[row * LD + k];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        s[j] += kv * sq[(cq + 4 * j) * LD + k];
        dp[j] += vv * sdo[(cq + 4 * j) * LD + k];
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int cc = cq + 4 * j, q = q0 + cc;
      // Queries past seq (zero rows, lse 0) would count with P = 1: masked with the triangle.
      const float p = (q >= key && q < seq) ? expf(s[j] * scale - slse[cc]) : 0.0f;
      sp[row * PL + cc] = p;
      sds[row * PL + cc] = p * (dp[j] - sdd[cc]) * scale;
    }
    __syncwarp();  // a row of P^T and dS^T is read only by the 4 lanes that wrote it
    for (int cc = 0; cc < kSB; ++cc) {
      const float p = sp[row * PL + cc], ds = sds[row * PL + cc];
#pragma unroll
      for (int j = 0; j < OC; ++j) {
        dv[j] += p * sdo[cc * LD + cq + 4 * j];
        dk[j] += ds * sq[cc * LD + cq + 4 * j];
      }
    }
  }

  if (key < seq) {
    T* dst = dqkv + hs.qkv_off + static_cast<int64_t>(key) * hs.ld3;
#pragma unroll
    for (int j = 0; j < OC; ++j)
      if (cq + 4 * j < d) {
        dst[hs.c + cq + 4 * j] = from_f<T>(dk[j]);
        dst[2 * hs.c + cq + 4 * j] = from_f<T>(dv[j]);
      }
  }
}

// dQ of one query tile: thread rows are queries, score columns are keys.
template <class T, int DP>
__global__ void __launch_bounds__(kAttnThreads)
    attn_bwd_dq_scalar(const T* __restrict__ qkv, const T* __restrict__ dout,
                       const float* __restrict__ lse, const float* __restrict__ delta,
                       T* __restrict__ dqkv, int seq, int heads, int d, int nh, float scale) {
  constexpr int LD = kScalarLd<DP>, PL = kSB + 1, OC = DP / 4;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  float* sq = reinterpret_cast<float*>(attn_smem);
  float* sdo = sq + kSB * LD;
  float* sk = sdo + kSB * LD;
  float* sv = sk + kSB * LD;
  float* sds = sv + kSB * LD;  // [query][key]

  const int tiles = (seq + kSB - 1) / kSB;
  const int qt = tiles - 1 - static_cast<int>(blockIdx.x / nh);
  const HeadSlice hs = head_slice(static_cast<int>(blockIdx.x % nh), seq, heads, d);
  const T* qb = qkv + hs.qkv_off;
  const int q0 = qt * kSB;
  const int row = threadIdx.x / 4, cq = threadIdx.x % 4;
  const int tq = q0 + row;
  const bool real = tq < seq;
  const float lse_r = real ? lse[static_cast<int64_t>(hs.bh) * seq + tq] : 0.0f;
  const float d_r = real ? delta[static_cast<int64_t>(hs.bh) * seq + tq] : 0.0f;

  load_rows_f32<T, DP>(sq, qb, hs.ld3, q0, seq, d);
  load_rows_f32<T, DP>(sdo, dout + hs.out_off, hs.c, q0, seq, d);
  float dq[OC];
#pragma unroll
  for (int j = 0; j < OC; ++j) dq[j] = 0.0f;

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kSB;
    __syncthreads();  // the previous tile's K, V and dS are no longer read
    load_rows_f32<T, DP>(sk, qb + hs.c, hs.ld3, k0, seq, d);
    load_rows_f32<T, DP>(sv, qb + 2 * hs.c, hs.ld3, k0, seq, d);
    __syncthreads();

    float s[8], dp[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j] = dp[j] = 0.0f;
#pragma unroll 4
    for (int k = 0; k < DP; ++k) {
      const float qv = sq[row * LD + k], gv = sdo[row * LD + k];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        s[j] += qv * sk[(cq + 4 * j) * LD + k];
        dp[j] += gv * sv[(cq + 4 * j) * LD + k];
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int cc = cq + 4 * j;
      const float p = (real && k0 + cc <= tq) ? expf(s[j] * scale - lse_r) : 0.0f;
      sds[row * PL + cc] = p * (dp[j] - d_r) * scale;
    }
    __syncwarp();
    for (int cc = 0; cc < kSB; ++cc) {
      const float ds = sds[row * PL + cc];
#pragma unroll
      for (int j = 0; j < OC; ++j) dq[j] += ds * sk[cc * LD + cq + 4 * j];
    }
  }

  if (real) {
    T* dst = dqkv + hs.qkv_off + static_cast<int64_t>(tq) * hs.ld3;
#pragma unroll
    for (int j = 0; j < OC; ++j)
      if (cq + 4 * j < d) dst[cq + 4 * j] = from_f<T>(dq[j]);
  }
}

// ---- PTX wrappers (tensor-core path) ----------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared without a register round trip; completes at cp_async_wait.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8 x 8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, and lane l receives
// row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 of each (of its transpose with _trans).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// 2^x in one MUFU op (exp2f without fast-math adds denormal handling the bf16 path has no use
// for); 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// c[16x8] += a[16x16] b[16x8], bf16 in, f32 accumulate. With g = lane / 4, t = lane % 4:
// a regs hold (row, col) pairs (g, 2t), (g+8, 2t), (g, 2t+8), (g+8, 2t+8) (+1 on col in the high
// half); b regs (k, n) = (2t, g), (2t+8, g) (+1 on k); c = (g, 2t), (g, 2t+1), (g+8, 2t),
// (g+8, 2t+1).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- tensor-core path -------------------------------------------------------------------------

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) is the low half
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

// Two adjacent 16 x 8 accumulator tiles (n-tiles 2i and 2i + 1) are one 16 x 16 A operand.
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4],
                                         const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// Shared tiles are [rows][DP + 8] bf16: the 16-byte row skew puts the 8 rows an ldmatrix reads in
// 8 different bank groups.
template <int DP>
constexpr int kTcLd = DP + 8;

// Rows [t0, t0 + ROWS) of one head's [seq, d] slice (row stride ld) into dst[ROWS][DP + 8],
// 16 bytes per cp.async; rows past seq and columns past d are zeroed, so they add nothing and
// can never inject NaN from stale shared memory into a masked product.
template <int DP, int ROWS>
__device__ __forceinline__ void tc_load_rows(bf16* dst, const bf16* __restrict__ src, int64_t ld,
                                             int t0, int seq, int d) {
  constexpr int CH = DP / 8;
  for (int i = threadIdx.x; i < ROWS * CH; i += kAttnThreads) {
    const int r = i / CH, ch = i % CH;
    bf16* s = dst + r * kTcLd<DP> + ch * 8;
    if (t0 + r < seq && ch * 8 < d)
      cp_async16(s, src + static_cast<int64_t>(t0 + r) * ld + ch * 8);
    else
      *reinterpret_cast<uint4*>(s) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// A operand (16 rows from `rows`, columns [k0, k0 + 16)) of a row-major [*][DP + 8] tile.
template <int DP>
__device__ __forceinline__ void ldsm_a(uint32_t (&a)[4], const bf16* rows, int k0, int lane) {
  ldsm_x4(a, rows + (lane % 16) * kTcLd<DP> + k0 + (lane / 16) * 8);
}
// B operands of two n-tiles (n in [n0, n0 + 16)) for k in [k0, k0 + 16), where the tile is stored
// [n][k] (B^T row-major: keys when B = K^T): {r[0], r[1]} for n0, {r[2], r[3]} for n0 + 8.
template <int DP>
__device__ __forceinline__ void ldsm_b_nk(uint32_t (&r)[4], const bf16* tile, int n0, int k0,
                                          int lane) {
  ldsm_x4(r, tile + (n0 + lane % 8 + (lane / 16) * 8) * kTcLd<DP> + k0 + ((lane / 8) % 2) * 8);
}
// The same where the tile is stored [k][n] (B row-major: values when B = V).
template <int DP>
__device__ __forceinline__ void ldsm_b_kn(uint32_t (&r)[4], const bf16* tile, int n0, int k0,
                                          int lane) {
  ldsm_x4_trans(r,
                tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * kTcLd<DP> + n0 + (lane / 16) * 8);
}

// Writes a warp's 16 x DP accumulator (rows scaled by f0 for rows g, f1 for rows g + 8) as bf16
// rows dst[r * ld], r < valid, columns < d, through the warp's own 16 rows of `stage` so that
// the global stores are whole 16-byte chunks.
template <int DP>
__device__ __forceinline__ void tc_store_rows(const float (&acc)[DP / 8][4], float f0, float f1,
                                              bf16* stage, bf16* __restrict__ dst, int64_t ld,
                                              int valid, int d, int lane) {
  constexpr int LDS = kTcLd<DP>, CH = DP / 8;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < DP / 8; ++j) {
    *reinterpret_cast<uint32_t*>(stage + g * LDS + j * 8 + 2 * t) =
        pack_bf16(acc[j][0] * f0, acc[j][1] * f0);
    *reinterpret_cast<uint32_t*>(stage + (g + 8) * LDS + j * 8 + 2 * t) =
        pack_bf16(acc[j][2] * f1, acc[j][3] * f1);
  }
  __syncwarp();
  for (int i = lane; i < 16 * CH; i += 32) {
    const int r = i / CH, ch = i % CH;
    if (r < valid && ch * 8 < d)
      *reinterpret_cast<uint4*>(dst + r * ld + ch * 8) =
          *reinterpret_cast<const uint4*>(stage + r * LDS + ch * 8);
  }
  __syncwarp();  // the stage may be rewritten by the caller next
}

constexpr int kTB = 64;  // tensor-core query and key tile (query tile of dK/dV: kTcBq)

// dK/dV's query tile: 32 for head dim 128 keeps its 4 accumulators within the register file.
template <int DP>
constexpr int kTcBq = DP == 128 ? 32 : 64;

// Dynamic shared memory of each tensor-core kernel, in bf16 tile rows (+ f32 row statistics).
template <int DP>
constexpr size_t tc_fwd_smem() {
  constexpr int rows = kTB + 4 * kTB;  // Q, 2 x K, 2 x V
  return sizeof(bf16) * rows * kTcLd<DP>;
}
template <int DP>
constexpr size_t tc_dkdv_smem() {
  constexpr int rows = 2 * kTB + 4 * kTcBq<DP>;                            // K, V, 2 x Q, 2 x dO
  return sizeof(bf16) * rows * kTcLd<DP> + sizeof(float) * 4 * kTcBq<DP>;  // 2 x (lse, D)
}
template <int DP>
constexpr size_t tc_dq_smem() {
  constexpr int rows = 2 * kTB + 4 * kTB;  // Q, dO, 2 x K, 2 x V
  return sizeof(bf16) * rows * kTcLd<DP>;
}

template <int DP>
__global__ void __launch_bounds__(kAttnThreads)
    attn_fwd_tc(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse,
                int seq, int heads, int d, int nh, float scale_log2) {
  constexpr int LDS = kTcLd<DP>, KS = DP / 16, NT = kTB / 8, OT = DP / 8;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  bf16* sq = reinterpret_cast<bf16*>(attn_smem);
  bf16* sk = sq + kTB * LDS;      // [2][kTB][LDS]
  bf16* sv = sk + 2 * kTB * LDS;  // [2][kTB][LDS]

  const int tiles = (seq + kTB - 1) / kTB;
  const int qt = tiles - 1 - static_cast<int>(blockIdx.x / nh);
  const HeadSlice hs = head_slice(static_cast<int>(blockIdx.x % nh), seq, heads, d);
  const bf16* qb = qkv + hs.qkv_off;
  const bf16* kb = qb + hs.c;
  const bf16* vb = qb + 2 * hs.c;
  const int q0 = qt * kTB;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;

  tc_load_rows<DP, kTB>(sq, qb, hs.ld3, q0, seq, d);
  tc_load_rows<DP, kTB>(sk, kb, hs.ld3, 0, seq, d);
  tc_load_rows<DP, kTB>(sv, vb, hs.ld3, 0, seq, d);
  cp_async_commit();

  uint32_t qf[KS][4];
  float o[OT][4];
#pragma unroll
  for (int j = 0; j < OT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  // Running max of the raw scores q.k (scale > 0 keeps the order, and leaving the scale out lets
  // one FMA scale and shift each score) and this thread's part of the row sum, for rows g and
  // g + 8; the 4 lanes of a row share the max, and the sums are added at the end.
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    if (kt < qt) {  // prefetch the next K, V while this tile is computed
      tc_load_rows<DP, kTB>(sk + (buf ^ 1) * kTB * LDS, kb, hs.ld3, (kt + 1) * kTB, seq, d);
      tc_load_rows<DP, kTB>(sv + (buf ^ 1) * kTB * LDS, vb, hs.ld3, (kt + 1) * kTB, seq, d);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) ldsm_a<DP>(qf[ks], sq + warp * 16 * LDS, ks * 16, lane);
    }
    const bf16* kt_s = sk + buf * kTB * LDS;
    const bf16* vt_s = sv + buf * kTB * LDS;

    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; j += 2)
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t r[4];
        ldsm_b_nk<DP>(r, kt_s, j * 8, ks * 16, lane);
        mma_bf16(s[j], qf[ks], r[0], r[1]);
        mma_bf16(s[j + 1], qf[ks], r[2], r[3]);
      }

    // Only the diagonal tile has keys above a query (and keys past seq, for real queries).
    const bool diag = kt == qt;
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (diag && kt * kTB + j * 8 + 2 * t + (e & 1) > (e < 2 ? row0 : row1)) s[j][e] = -INFINITY;
        if (e < 2)
          mx0 = fmaxf(mx0, s[j][e]);
        else
          mx1 = fmaxf(mx1, s[j][e]);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    // Finite: key kt * kTB <= q0 is unmasked for every row of the tile.
    const float a0 = fast_exp2((m0 - mx0) * scale_log2), a1 = fast_exp2((m1 - mx1) * scale_log2);
    m0 = mx0;
    m1 = mx1;
    const float sh0 = -m0 * scale_log2, sh1 = -m1 * scale_log2;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      s[j][0] = fast_exp2(fmaf(s[j][0], scale_log2, sh0));
      s[j][1] = fast_exp2(fmaf(s[j][1], scale_log2, sh0));
      s[j][2] = fast_exp2(fmaf(s[j][2], scale_log2, sh1));
      s[j][3] = fast_exp2(fmaf(s[j][3], scale_log2, sh1));
      sum0 += s[j][0] + s[j][1];
      sum1 += s[j][2] + s[j][3];
    }
    l0 = l0 * a0 + sum0;
    l1 = l1 * a1 + sum1;
#pragma unroll
    for (int j = 0; j < OT; ++j) {
      o[j][0] *= a0;
      o[j][1] *= a0;
      o[j][2] *= a1;
      o[j][3] *= a1;
    }
#pragma unroll
    for (int ks = 0; ks < kTB / 16; ++ks) {
      uint32_t pa[4];
      acc_to_a(pa, s[2 * ks], s[2 * ks + 1]);
#pragma unroll
      for (int j = 0; j < OT; j += 2) {
        uint32_t r[4];
        ldsm_b_kn<DP>(r, vt_s, j * 8, ks * 16, lane);
        mma_bf16(o[j], pa, r[0], r[1]);
        mma_bf16(o[j + 1], pa, r[2], r[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (t == 0) {
    float* lse_h = lse + static_cast<int64_t>(hs.bh) * seq;
    if (row0 < seq) lse_h[row0] = (m0 * scale_log2 + log2f(l0)) * kLn2;
    if (row1 < seq) lse_h[row1] = (m1 * scale_log2 + log2f(l1)) * kLn2;
  }
  // Q's shared tile is free (read once into registers, and every warp has passed the barrier).
  const int r0 = q0 + warp * 16;
  tc_store_rows<DP>(o, 1.0f / l0, 1.0f / l1, sq + warp * 16 * LDS,
                    out + hs.out_off + static_cast<int64_t>(r0) * hs.c, hs.c, seq - r0, d, lane);
}

template <int DP>
__global__ void __launch_bounds__(kAttnThreads)
    attn_bwd_dkdv_tc(const bf16* __restrict__ qkv, const bf16* __restrict__ dout,
                     const float* __restrict__ lse, const float* __restrict__ delta,
                     bf16* __restrict__ dqkv, int seq, int heads, int d, int nh, float scale,
                     float scale_log2) {
  constexpr int BQ = kTcBq<DP>, LDS = kTcLd<DP>, KS = DP / 16, NQ = BQ / 8, OT = DP / 8;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  bf16* sk = reinterpret_cast<bf16*>(attn_smem);
  bf16* sv = sk + kTB * LDS;
  bf16* sq = sv + kTB * LDS;                                   // [2][BQ][LDS]
  bf16* sdo = sq + 2 * BQ * LDS;                               // [2][BQ][LDS]
  float* slse = reinterpret_cast<float*>(sdo + 2 * BQ * LDS);  // [2][BQ], times log2(e)
  float* sdd = slse + 2 * BQ;                                  // [2][BQ]

  const int k0 = static_cast<int>(blockIdx.x / nh) * kTB;  // key tile 0 sees every query tile
  const HeadSlice hs = head_slice(static_cast<int>(blockIdx.x % nh), seq, heads, d);
  const bf16* qb = qkv + hs.qkv_off;
  const bf16* gb = dout + hs.out_off;
  const float* lse_h = lse + static_cast<int64_t>(hs.bh) * seq;
  const float* d_h = delta + static_cast<int64_t>(hs.bh) * seq;
  const int qtiles = (seq + BQ - 1) / BQ;
  const int first = k0 / BQ;  // the query tile holding query k0: the first with a query >= a key
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int key0 = k0 + warp * 16 + g, key1 = key0 + 8;

  auto load_q_tile = [&](int i, int buf) {
    tc_load_rows<DP, BQ>(sq + buf * BQ * LDS, qb, hs.ld3, i * BQ, seq, d);
    tc_load_rows<DP, BQ>(sdo + buf * BQ * LDS, gb, hs.c, i * BQ, seq, d);
    for (int r = threadIdx.x; r < BQ; r += kAttnThreads) {
      const int q = i * BQ + r;
      slse[buf * BQ + r] = q < seq ? lse_h[q] * kLog2e : 0.0f;
      sdd[buf * BQ + r] = q < seq ? d_h[q] : 0.0f;
    }
  };
  tc_load_rows<DP, kTB>(sk, qb + hs.c, hs.ld3, k0, seq, d);
  tc_load_rows<DP, kTB>(sv, qb + 2 * hs.c, hs.ld3, k0, seq, d);
  load_q_tile(first, 0);
  cp_async_commit();

  float dk[OT][4], dv[OT][4];
#pragma unroll
  for (int j = 0; j < OT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.0f;

  for (int i = first; i < qtiles; ++i) {
    const int buf = (i - first) & 1;
    if (i + 1 < qtiles) {
      load_q_tile(i + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* q_s = sq + buf * BQ * LDS;
    const bf16* do_s = sdo + buf * BQ * LDS;
    const float* lse_s = slse + buf * BQ;
    const float* d_s = sdd + buf * BQ;
    const int q0 = i * BQ;

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys and the BQ queries.
    float st[NQ][4], dpt[NQ][4];
#pragma unroll
    for (int j = 0; j < NQ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t ka[4], va[4];
      ldsm_a<DP>(ka, sk + warp * 16 * LDS, ks * 16, lane);
      ldsm_a<DP>(va, sv + warp * 16 * LDS, ks * 16, lane);
#pragma unroll
      for (int j = 0; j < NQ; j += 2) {
        uint32_t r[4];
        ldsm_b_nk<DP>(r, q_s, j * 8, ks * 16, lane);
        mma_bf16(st[j], ka, r[0], r[1]);
        mma_bf16(st[j + 1], ka, r[2], r[3]);
        ldsm_b_nk<DP>(r, do_s, j * 8, ks * 16, lane);
        mma_bf16(dpt[j], va, r[0], r[1]);
        mma_bf16(dpt[j + 1], va, r[2], r[3]);
      }
    }
    // Masking is needed where a query of the tile may precede a key, or lie past seq (its zero
    // row would otherwise count with probability exp(0 - 0)).
    const bool edge = q0 < k0 + kTB - 1 || q0 + BQ > seq;
#pragma unroll
    for (int j = 0; j < NQ; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * 8 + 2 * t + (e & 1), q = q0 + col;
        float p = fast_exp2(st[j][e] * scale_log2 - lse_s[col]);
        if (edge && (q < (e < 2 ? key0 : key1) || q >= seq)) p = 0.0f;
        st[j][e] = p;
        dpt[j][e] = p * (dpt[j][e] - d_s[col]) * scale;
      }
    }
    // dV += P^T dO, dK += dS^T Q, over the tile's queries.
#pragma unroll
    for (int ks = 0; ks < BQ / 16; ++ks) {
      uint32_t pa[4], sa[4];
      acc_to_a(pa, st[2 * ks], st[2 * ks + 1]);
      acc_to_a(sa, dpt[2 * ks], dpt[2 * ks + 1]);
#pragma unroll
      for (int j = 0; j < OT; j += 2) {
        uint32_t r[4];
        ldsm_b_kn<DP>(r, do_s, j * 8, ks * 16, lane);
        mma_bf16(dv[j], pa, r[0], r[1]);
        mma_bf16(dv[j + 1], pa, r[2], r[3]);
        ldsm_b_kn<DP>(r, q_s, j * 8, ks * 16, lane);
        mma_bf16(dk[j], sa, r[0], r[1]);
        mma_bf16(dk[j + 1], sa, r[2], r[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  // Stage through the Q buffers (2 BQ >= 64 rows: 16 per warp), free after the last barrier.
  const int r0 = k0 + warp * 16;
  bf16* dst = dqkv + hs.qkv_off + static_cast<int64_t>(r0) * hs.ld3;
  tc_store_rows<DP>(dk, 1.0f, 1.0f, sq + warp * 16 * LDS, dst + hs.c, hs.ld3, seq - r0, d, lane);
  tc_store_rows<DP>(dv, 1.0f, 1.0f, sq + warp * 16 * LDS, dst + 2 * hs.c, hs.ld3, seq - r0, d,
                    lane);
}

template <int DP>
__global__ void __launch_bounds__(kAttnThreads)
    attn_bwd_dq_tc(const bf16* __restrict__ qkv, const bf16* __restrict__ dout,
                   const float* __restrict__ lse, const float* __restrict__ delta,
                   bf16* __restrict__ dqkv, int seq, int heads, int d, int nh, float scale,
                   float scale_log2) {
  constexpr int LDS = kTcLd<DP>, KS = DP / 16, NT = kTB / 8, OT = DP / 8;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  bf16* sq = reinterpret_cast<bf16*>(attn_smem);
  bf16* sdo = sq + kTB * LDS;
  bf16* sk = sdo + kTB * LDS;     // [2][kTB][LDS]
  bf16* sv = sk + 2 * kTB * LDS;  // [2][kTB][LDS]

  const int tiles = (seq + kTB - 1) / kTB;
  const int qt = tiles - 1 - static_cast<int>(blockIdx.x / nh);
  const HeadSlice hs = head_slice(static_cast<int>(blockIdx.x % nh), seq, heads, d);
  const bf16* qb = qkv + hs.qkv_off;
  const bf16* kb = qb + hs.c;
  const bf16* vb = qb + 2 * hs.c;
  const int q0 = qt * kTB;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  // Rows past seq compute garbage confined to their own rows, which are never stored.
  const float* lse_h = lse + static_cast<int64_t>(hs.bh) * seq;
  const float* d_h = delta + static_cast<int64_t>(hs.bh) * seq;
  const float lse0 = row0 < seq ? lse_h[row0] * kLog2e : 0.0f;
  const float lse1 = row1 < seq ? lse_h[row1] * kLog2e : 0.0f;
  const float dd0 = row0 < seq ? d_h[row0] : 0.0f;
  const float dd1 = row1 < seq ? d_h[row1] : 0.0f;

  tc_load_rows<DP, kTB>(sq, qb, hs.ld3, q0, seq, d);
  tc_load_rows<DP, kTB>(sdo, dout + hs.out_off, hs.c, q0, seq, d);
  tc_load_rows<DP, kTB>(sk, kb, hs.ld3, 0, seq, d);
  tc_load_rows<DP, kTB>(sv, vb, hs.ld3, 0, seq, d);
  cp_async_commit();

  float dq[OT][4];
#pragma unroll
  for (int j = 0; j < OT; ++j) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    if (kt < qt) {
      tc_load_rows<DP, kTB>(sk + (buf ^ 1) * kTB * LDS, kb, hs.ld3, (kt + 1) * kTB, seq, d);
      tc_load_rows<DP, kTB>(sv + (buf ^ 1) * kTB * LDS, vb, hs.ld3, (kt + 1) * kTB, seq, d);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* kt_s = sk + buf * kTB * LDS;
    const bf16* vt_s = sv + buf * kTB * LDS;

    // S = Q K^T and dP = dO V^T for this warp's 16 queries and the tile's keys.
    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t qa[4], ga[4];
      ldsm_a<DP>(qa, sq + warp * 16 * LDS, ks * 16, lane);
      ldsm_a<DP>(ga, sdo + warp * 16 * LDS, ks * 16, lane);
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t r[4];
        ldsm_b_nk<DP>(r, kt_s, j * 8, ks * 16, lane);
        mma_bf16(s[j], qa, r[0], r[1]);
        mma_bf16(s[j + 1], qa, r[2], r[3]);
        ldsm_b_nk<DP>(r, vt_s, j * 8, ks * 16, lane);
        mma_bf16(dp[j], ga, r[0], r[1]);
        mma_bf16(dp[j + 1], ga, r[2], r[3]);
      }
    }
    const bool diag = kt == qt;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool lo = e < 2;
        float p = fast_exp2(s[j][e] * scale_log2 - (lo ? lse0 : lse1));
        if (diag && kt * kTB + j * 8 + 2 * t + (e & 1) > (lo ? row0 : row1)) p = 0.0f;
        s[j][e] = p * (dp[j][e] - (lo ? dd0 : dd1)) * scale;  // dS
      }
    }
    // dQ += dS K over the tile's keys.
#pragma unroll
    for (int ks = 0; ks < kTB / 16; ++ks) {
      uint32_t sa[4];
      acc_to_a(sa, s[2 * ks], s[2 * ks + 1]);
#pragma unroll
      for (int j = 0; j < OT; j += 2) {
        uint32_t r[4];
        ldsm_b_kn<DP>(r, kt_s, j * 8, ks * 16, lane);
        mma_bf16(dq[j], sa, r[0], r[1]);
        mma_bf16(dq[j + 1], sa, r[2], r[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  const int r0 = q0 + warp * 16;
  tc_store_rows<DP>(dq, 1.0f, 1.0f, sq + warp * 16 * LDS,
                    dqkv + hs.qkv_off + static_cast<int64_t>(r0) * hs.ld3, hs.ld3, seq - r0, d,
                    lane);
}

// ---- dispatch ---------------------------------------------------------------------------------

void check_dims(const char* op, int64_t n, int64_t seq, int64_t heads, int64_t d) {
  if (d < 1 || d > 128)
    throw std::invalid_argument(std::string("cuda ") + op + ": head dim " + std::to_string(d) +
                                " outside [1, 128]");
  if (n < 0 || seq < 0 || heads < 0)
    throw std::invalid_argument(std::string("cuda ") + op + ": negative size (n " +
                                std::to_string(n) + ", seq " + std::to_string(seq) + ", heads " +
                                std::to_string(heads) + ")");
  if (seq > INT32_MAX / 2 || heads * d > INT32_MAX / 4 || n * heads > INT32_MAX / 2)
    throw std::invalid_argument(std::string("cuda ") + op + ": sizes too large");
}

// Calls body.template operator()<DP>() with DP the head dim padded to 32, 64 or 128.
template <class Body>
void dispatch_head_dim(int64_t d, Body&& body) {
  if (d <= 32)
    body.template operator()<32>();
  else if (d <= 64)
    body.template operator()<64>();
  else
    body.template operator()<128>();
}

// The tensor-core kernels move 16-byte chunks of 8 bf16 (so d, hence every row offset, is a
// multiple of 8) and feed k-steps of 16.
bool use_tensor_cores(DType t, int64_t d, std::initializer_list<const void*> ptrs) {
  if (t != DType::bf16 || d % 16 != 0) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

int attn_grid(int64_t nh, int64_t seq, int tile) {
  const int64_t blocks = nh * ((seq + tile - 1) / tile);
  if (blocks > INT32_MAX) throw std::invalid_argument("cuda attention: grid too large");
  return static_cast<int>(blocks);
}

// Above the 48 KB default a kernel must opt in to its dynamic shared memory (idempotent, cheap).
template <class Kernel>
void allow_smem(Kernel* kernel, size_t bytes) {
  if (bytes > kStaticSmem)
    TERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

template <int DP>
constexpr size_t scalar_fwd_smem() {
  return sizeof(float) * (3 * kSB * kScalarLd<DP> + kSB * (kSB + 1));
}
template <int DP>
constexpr size_t scalar_dkdv_smem() {
  return sizeof(float) * (4 * kSB * kScalarLd<DP> + 2 * kSB * (kSB + 1) + 2 * kSB);
}
template <int DP>
constexpr size_t scalar_dq_smem() {
  return sizeof(float) * (4 * kSB * kScalarLd<DP> + kSB * (kSB + 1));
}

}  // namespace

void attention_forward(const void* qkv, DType t, void* out, float* lse, int64_t n, int64_t seq,
                       int64_t heads, int64_t d) {
  check_dims("attention_forward", n, seq, heads, d);
  if (n == 0 || seq == 0 || heads == 0) return;
  const int nh = static_cast<int>(n * heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int si = static_cast<int>(seq), hi = static_cast<int>(heads), di = static_cast<int>(d);
  if (use_tensor_cores(t, d, {qkv, out})) {
    dispatch_head_dim(d, [&]<int DP>() {
      constexpr size_t smem = tc_fwd_smem<DP>();
      allow_smem(attn_fwd_tc<DP>, smem);
      attn_fwd_tc<DP><<<attn_grid(nh, seq, kTB), kAttnThreads, smem, compute_stream()>>>(
          static_cast<const bf16*>(qkv), static_cast<bf16*>(out), lse, si, hi, di, nh,
          scale * kLog2e);
      TERN_CUDA_CHECK_LAUNCH("attn_fwd_tc");
    });
    return;
  }
  dispatch_float("attention_forward", t, [&]<class T>() {
    dispatch_head_dim(d, [&]<int DP>() {
      constexpr size_t smem = scalar_fwd_smem<DP>();
      allow_smem(attn_fwd_scalar<T, DP>, smem);
      attn_fwd_scalar<T, DP><<<attn_grid(nh, seq, kSB), kAttnThreads, smem, compute_stream()>>>(
          static_cast<const T*>(qkv), static_cast<T*>(out), lse, si, hi, di, nh, scale);
      TERN_CUDA_CHECK_LAUNCH("attn_fwd_scalar");
    });
  });
}

void attention_backward(const void* qkv, const void* out, const void* dout, const float* lse,
                        DType t, void* dqkv, int64_t n, int64_t seq, int64_t heads, int64_t d) {
  check_dims("attention_backward", n, seq, heads, d);
  if (n == 0 || seq == 0 || heads == 0) return;
  const int nh = static_cast<int>(n * heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int si = static_cast<int>(seq), hi = static_cast<int>(heads), di = static_cast<int>(d);
  const int64_t rows = n * seq * heads;
  auto* delta = static_cast<float*>(scratch(sizeof(float) * rows));
  const bool tc = use_tensor_cores(t, d, {qkv, dout, dqkv});
  dispatch_float("attention_backward", t, [&]<class T>() {
    constexpr int kWarps = kThreads / 32;  // one row per warp
    attn_delta_kernel<T><<<grid_for(rows, kWarps), kThreads, 0, compute_stream()>>>(
        static_cast<const T*>(out), static_cast<const T*>(dout), delta, rows, si, hi, di);
    TERN_CUDA_CHECK_LAUNCH("attn_delta_kernel");
    if constexpr (std::is_same_v<T, bf16>) {
      if (tc) {
        dispatch_head_dim(d, [&]<int DP>() {
          const auto* q = static_cast<const bf16*>(qkv);
          const auto* g = static_cast<const bf16*>(dout);
          auto* dx = static_cast<bf16*>(dqkv);
          constexpr size_t smem_kv = tc_dkdv_smem<DP>(), smem_q = tc_dq_smem<DP>();
          allow_smem(attn_bwd_dkdv_tc<DP>, smem_kv);
          attn_bwd_dkdv_tc<DP>
              <<<attn_grid(nh, seq, kTB), kAttnThreads, smem_kv, compute_stream()>>>(
                  q, g, lse, delta, dx, si, hi, di, nh, scale, scale * kLog2e);
          TERN_CUDA_CHECK_LAUNCH("attn_bwd_dkdv_tc");
          allow_smem(attn_bwd_dq_tc<DP>, smem_q);
          attn_bwd_dq_tc<DP><<<attn_grid(nh, seq, kTB), kAttnThreads, smem_q, compute_stream()>>>(
              q, g, lse, delta, dx, si, hi, di, nh, scale, scale * kLog2e);
          TERN_CUDA_CHECK_LAUNCH("attn_bwd_dq_tc");
        });
        return;
      }
    }
    dispatch_head_dim(d, [&]<int DP>() {
      const auto* q = static_cast<const T*>(qkv);
      const auto* g = static_cast<const T*>(dout);
      auto* dx = static_cast<T*>(dqkv);
      constexpr size_t smem_kv = scalar_dkdv_smem<DP>(), smem_q = scalar_dq_smem<DP>();
      allow_smem(attn_bwd_dkdv_scalar<T, DP>, smem_kv);
      attn_bwd_dkdv_scalar<T, DP>
          <<<attn_grid(nh, seq, kSB), kAttnThreads, smem_kv, compute_stream()>>>(
              q, g, lse, delta, dx, si, hi, di, nh, scale);
      TERN_CUDA_CHECK_LAUNCH("attn_bwd_dkdv_scalar");
      allow_smem(attn_bwd_dq_scalar<T, DP>, smem_q);
      attn_bwd_dq_scalar<T, DP>
          <<<attn_grid(nh, seq, kSB), kAttnThreads, smem_q, compute_stream()>>>(
              q, g, lse, delta, dx, si, hi, di, nh, scale);
      TERN_CUDA_CHECK_LAUNCH("attn_bwd_dq_scalar");
    });
  });
}

}  // namespace tern::cuda
