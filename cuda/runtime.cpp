#include "runtime.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

#include "check.h"

namespace tern::cuda {
namespace {

// 32 MiB: cuBLASLt's recommendation for Hopper.
constexpr size_t kBlasWorkspace = size_t{32} << 20;

struct Runtime {
  int device = -1;
  cudaStream_t compute = nullptr, copy = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  void* readback = nullptr;
  size_t readback_bytes = 0;
  bool tf32 = false;
  std::string description;
};

// Never destroyed: device memory freed by tensors that outlive main() must still find a stream.
Runtime& rt() {
  static Runtime* r = new Runtime;
  return *r;
}
std::mutex init_mutex;

Runtime& ready() {
  Runtime& r = rt();
  if (r.compute) return r;
  std::lock_guard<std::mutex> lock(init_mutex);
  if (r.compute) return r;
  if (r.device < 0) {
    if (device_count() == 0) throw std::runtime_error("CUDA: no GPU is visible to this process");
    r.device = 0;
  }
  TERN_CUDA_CHECK(cudaSetDevice(r.device));
  cudaDeviceProp prop{};
  TERN_CUDA_CHECK(cudaGetDeviceProperties(&prop, r.device));
  int driver = 0;
  TERN_CUDA_CHECK(cudaDriverGetVersion(&driver));
  r.description = std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
                  std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) +
                  " SMs, driver CUDA " + std::to_string(driver / 1000) + "." +
                  std::to_string(driver % 1000 / 10);
  // The pool keeps what tensors free, so steady-state training allocates nothing new.
  cudaMemPool_t pool;
  TERN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, r.device));
  uint64_t threshold = UINT64_MAX;
  TERN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  cudaStream_t compute = nullptr;
  TERN_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  TERN_CUDA_CHECK(cudaStreamCreateWithFlags(&r.copy, cudaStreamNonBlocking));
  TERN_CUBLAS_CHECK(cublasLtCreate(&r.lt));
  TERN_CUDA_CHECK(cudaMallocAsync(&r.workspace, kBlasWorkspace, compute));
  r.compute = compute;  // last: other threads see a fully made runtime
  return r;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return n;
}

void select_device(int index) {
  Runtime& r = rt();
  if (r.compute && r.device != index)
    throw std::logic_error("CUDA: device " + std::to_string(r.device) +
                           " is already in use by this process; cannot switch to " +
                           std::to_string(index));
  const int n = device_count();
  if (index < 0 || index >= n)
    throw std::runtime_error("CUDA: device " + std::to_string(index) + " does not exist (" +
                             std::to_string(n) + " visible)");
  {
    std::lock_guard<std::mutex> lock(init_mutex);
    r.device = index;
  }
  ready();
}

int current_device() { return ready().device; }
const char* device_description() { return ready().description.c_str(); }
cudaStream_t compute_stream() { return ready().compute; }
cudaStream_t copy_stream() { return ready().copy; }
cublasLtHandle_t blaslt() { return ready().lt; }

void* blaslt_workspace(size_t* bytes) {
  *bytes = kBlasWorkspace;
  return ready().workspace;
}

void* device_alloc(size_t bytes) {
  Runtime& r = ready();
  void* p = nullptr;
  TERN_CUDA_CHECK(cudaMallocAsync(&p, bytes == 0 ? 256 : bytes, r.compute));
  return p;
}

void device_free(void* p) {
  if (!p) return;
  // Errors here are not thrown: this runs in destructors, also while unwinding.
  if (cudaFreeAsync(p, rt().compute) != cudaSuccess) (void)cudaGetLastError();
}

void* scratch(size_t bytes) {
  Runtime& r = ready();
  if (bytes > r.scratch_bytes) {
    if (r.scratch) TERN_CUDA_CHECK(cudaFreeAsync(r.scratch, r.compute));
    r.scratch_bytes = std::max(bytes, r.scratch_bytes * 2);
    TERN_CUDA_CHECK(cudaMallocAsync(&r.scratch, r.scratch_bytes, r.compute));
  }
  return r.scratch;
}

void* pinned_readback(size_t bytes) {
  Runtime& r = ready();
  if (bytes > r.readback_bytes) {
    // Only ever used after a stream synchronisation, so nothing in flight still reads it.
    if (r.readback) TERN_CUDA_CHECK(cudaFreeHost(r.readback));
    r.readback_bytes = std::max<size_t>(bytes, 4096);
    TERN_CUDA_CHECK(cudaMallocHost(&r.readback, r.readback_bytes));
  }
  return r.readback;
}

void set_tf32(bool on) { rt().tf32 = on; }
bool tf32() { return rt().tf32; }

void synchronize() { TERN_CUDA_CHECK(cudaStreamSynchronize(ready().compute)); }

}  // namespace tern::cuda
