#pragma once
// Helpers shared by the CUDA kernel files: storage-dtype conversion (every kernel computes in f32
// whatever it stores), grid sizing, 16-byte vector packs, and dispatch on the compute dtype.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tern/compute/tensor.h"

namespace tern::cuda {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

inline int grid_for(int64_t work, int threads = kThreads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, 8192));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

[[noreturn]] inline void bad_dtype(const char* op, DType t) {
  throw std::invalid_argument(std::string("cuda ") + op + ": unsupported dtype " + dtype_name(t));
}

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Calls body.template operator()<T>() with T the C++ type of a float dtype.
template <class Body>
void dispatch_float(const char* op, DType t, Body&& body) {
  if (t == DType::f32)
    body.template operator()<float>();
  else if (t == DType::bf16)
    body.template operator()<bf16>();
  else
    bad_dtype(op, t);
}

}  // namespace tern::cuda
