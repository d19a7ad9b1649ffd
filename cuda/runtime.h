#pragma once
// The CUDA runtime state of this process: one device per rank, a compute stream that every op
// runs on, a copy stream for host-to-device batches, a stream-ordered memory pool, the cuBLASLt
// handle and scratch memory. Created on first use, after select_device().
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tern::cuda {

// Devices visible to this process; 0 when there is no driver or no GPU (never throws).
int device_count();
// Binds this process (all its threads) to one device. Call before any other CUDA work.
void select_device(int index);
int current_device();
// "NVIDIA H100 80GB HBM3, sm_90, driver 12.x" for logs.
const char* device_description();

cudaStream_t compute_stream();
cudaStream_t copy_stream();
cublasLtHandle_t blaslt();
// cuBLASLt's workspace, on the compute stream.
void* blaslt_workspace(size_t* bytes);

// Stream-ordered allocation on the compute stream from a pool that keeps freed memory.
void* device_alloc(size_t bytes);
void device_free(void* p);
// Scratch memory valid until the next call on the compute stream (ops use it within one call).
void* scratch(size_t bytes);
// A small pinned host buffer for reading results back (loss sums, norms).
void* pinned_readback(size_t bytes);

// TF32 for f32 GEMMs (off by default: f32 results then match the CPU).
void set_tf32(bool on);
bool tf32();

void synchronize();

}  // namespace tern::cuda
