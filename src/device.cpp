#include "tern/device.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "tern/error.h"

#ifdef TERN_HAVE_CUDA
#include "../cuda/check.h"
#include "../cuda/runtime.h"
#endif

namespace tern {

#ifdef TERN_HAVE_CUDA
bool cuda_built() { return true; }
int cuda_device_count() { return cuda::device_count(); }
Device use_cuda_device(int index) {
  cuda::select_device(index);
  return {DeviceKind::cuda, index};
}
std::string cuda_device_description() { return cuda::device_description(); }
void set_cuda_tf32(bool on) { cuda::set_tf32(on); }

std::shared_ptr<void> device_allocate(size_t bytes, Device dev) {
  if (dev.index != cuda::current_device())
    throw std::runtime_error("tensor on " + device_name(dev) + ", but this process uses cuda:" +
                             std::to_string(cuda::current_device()));
  return std::shared_ptr<void>(cuda::device_alloc(bytes), cuda::device_free);
}

void device_memset_zero(void* p, size_t bytes, Device) {
  TERN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda::compute_stream()));
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  const bool from_gpu = src_dev.kind == DeviceKind::cuda, to_gpu = dst_dev.kind == DeviceKind::cuda;
  if (!from_gpu && !to_gpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  TERN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda::compute_stream()));
  // The host side of a copy must stay valid (host to GPU: pageable memory is staged by the
  // driver before the call returns) or be complete (GPU to host) when this returns.
  if (!to_gpu) cuda::synchronize();
}

void device_synchronize(Device dev) {
  if (dev.kind == DeviceKind::cuda) cuda::synchronize();
}

namespace {
bool is_pinned(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}
}  // namespace

namespace {
// Freed pinned blocks by size; page-locking is slow (milliseconds), reuse is free.
struct PinnedPool {
  std::mutex mu;
  std::multimap<size_t, void*> free;
};
PinnedPool& pinned_pool() {
  static PinnedPool* pool = new PinnedPool;  // outlives every tensor
  return *pool;
}
}  // namespace

Tensor pinned_empty(const Shape& shape, DType dt) {
  const size_t bytes = std::max<size_t>(shape_numel(shape) * dtype_size(dt), 1);
  void* p = nullptr;
  {
    PinnedPool& pool = pinned_pool();
    std::lock_guard<std::mutex> lock(pool.mu);
    auto it = pool.free.find(bytes);
    if (it != pool.free.end()) {
      p = it->second;
      pool.free.erase(it);
    }
  }
  if (!p) TERN_CUDA_CHECK(cudaMallocHost(&p, bytes));
  auto storage = std::shared_ptr<void>(p, [bytes](void* q) {
    PinnedPool& pool = pinned_pool();
    std::lock_guard<std::mutex> lock(pool.mu);
    pool.free.emplace(bytes, q);
  });
  return Tensor::wrap_shared(std::move(storage), shape, dt);
}

struct BatchUploader::Slot {
  Tensor host_x, host_y;  // pinned batches being copied from (kept alive until done)
  void* pinned = nullptr;
  size_t pinned_bytes = 0;
  Tensor x, y;
  cudaEvent_t copied = nullptr;    // the copy out of `pinned` is done
  cudaEvent_t consumed = nullptr;  // the kernels reading x and y are done
  bool used = false;
};

BatchUploader::BatchUploader(Device dev) : dev_(dev), slots_(new Slot[2]) {
  for (int i = 0; i < 2; ++i) {
    TERN_CUDA_CHECK(cudaEventCreateWithFlags(&slots_[i].copied, cudaEventDisableTiming));
    TERN_CUDA_CHECK(cudaEventCreateWithFlags(&slots_[i].consumed, cudaEventDisableTiming));
  }
}

BatchUploader::~BatchUploader() {
  if (cudaStreamSynchronize(cuda::copy_stream()) != cudaSuccess) (void)cudaGetLastError();
  for (int i = 0; i < 2; ++i) {
    cudaEventDestroy(slots_[i].copied);
    cudaEventDestroy(slots_[i].consumed);
    if (slots_[i].pinned) cudaFreeHost(slots_[i].pinned);
  }
}

std::pair<Tensor, Tensor> BatchUploader::upload(const Tensor& x, const Tensor& y) {
  // Everything reading the previous slot's batch is queued by now (the caller's contract).
  if (any_) TERN_CUDA_CHECK(cudaEventRecord(slots_[1 - next_].consumed, cuda::compute_stream()));
  Slot& s = slots_[next_];
  next_ = 1 - next_;
  any_ = true;
  const size_t xb = x.nbytes(), yb = y.nbytes(), x_padded = (xb + 255) / 256 * 256;
  if (s.used) TERN_CUDA_CHECK(cudaEventSynchronize(s.copied));  // the host side is free
  s.host_x = s.host_y = Tensor();
  const bool direct = is_pinned(x.raw()) && is_pinned(y.raw());
  if (!direct && x_padded + yb > s.pinned_bytes) {
    if (s.pinned) TERN_CUDA_CHECK(cudaFreeHost(s.pinned));
    s.pinned_bytes = (x_padded + yb) * 5 / 4;
    TERN_CUDA_CHECK(cudaMallocHost(&s.pinned, s.pinned_bytes));
  }
  bool allocated = false;
  if (!s.x.defined() || s.x.shape() != x.shape() || s.x.dtype() != x.dtype())
    s.x = Tensor::empty(x.shape(), x.dtype(), dev_), allocated = true;
  if (!s.y.defined() || s.y.shape() != y.shape() || s.y.dtype() != y.dtype())
    s.y = Tensor::empty(y.shape(), y.dtype(), dev_), allocated = true;
  // New memory comes from the pool on the compute stream: let that finish before the copy stream
  // writes it (rare: the first batches and size changes only).
  if (allocated) cuda::synchronize();
  const void* from_x = x.raw();
  const void* from_y = y.raw();
  if (direct) {
    s.host_x = x, s.host_y = y;
  } else {
    std::memcpy(s.pinned, x.raw(), xb);
    std::memcpy(static_cast<char*>(s.pinned) + x_padded, y.raw(), yb);
    from_x = s.pinned;
    from_y = static_cast<char*>(s.pinned) + x_padded;
  }
  cudaStream_t copy = cuda::copy_stream();
  if (s.used) TERN_CUDA_CHECK(cudaStreamWaitEvent(copy, s.consumed));
  TERN_CUDA_CHECK(cudaMemcpyAsync(s.x.raw(), from_x, xb, cudaMemcpyHostToDevice, copy));
  TERN_CUDA_CHECK(cudaMemcpyAsync(s.y.raw(), from_y, yb, cudaMemcpyHostToDevice, copy));
  TERN_CUDA_CHECK(cudaEventRecord(s.copied, copy));
  TERN_CUDA_CHECK(cudaStreamWaitEvent(cuda::compute_stream(), s.copied));
  s.used = true;
  return {s.x, s.y};
}
#else
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
Device use_cuda_device(int) {
  throw std::runtime_error("this build of tern has no CUDA backend (configure with TERN_CUDA=ON)");
}
std::string cuda_device_description() { return "none"; }
void set_cuda_tf32(bool) {}
std::shared_ptr<void> device_allocate(size_t, Device dev) {
  throw std::runtime_error("Tensor: device " + device_name(dev) +
                           " is not built in (configure with TERN_CUDA=ON)");
}
void device_memset_zero(void*, size_t, Device) {
  throw std::runtime_error("no CUDA backend in this build");
}
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (dst_dev.kind != DeviceKind::cpu || src_dev.kind != DeviceKind::cpu)
    throw std::runtime_error("no CUDA backend in this build");
  if (bytes) std::memcpy(dst, src, bytes);
}
void device_synchronize(Device) {}
Tensor pinned_empty(const Shape& shape, DType dt) { return Tensor::empty(shape, dt); }
struct BatchUploader::Slot {};
BatchUploader::BatchUploader(Device) {
  throw std::runtime_error("BatchUploader: no CUDA backend in this build");
}
BatchUploader::~BatchUploader() = default;
std::pair<Tensor, Tensor> BatchUploader::upload(const Tensor&, const Tensor&) {
  throw std::runtime_error("BatchUploader: no CUDA backend in this build");
}
#endif

Device resolve_device(const std::string& setting, int local_rank, int local_world,
                      const std::string& option) {
  if (setting == "cpu") return {};
  const int n = cuda_device_count();
  if (setting == "auto" && n == 0) return {};
  if (setting == "auto" && local_world > n) return {};
  if (n == 0)
    throw InputError(option + "=cuda: " +
                     (cuda_built() ? "no GPU is visible to this process"
                                   : "this build has no CUDA backend (configure with "
                                     "-DTERN_CUDA=ON on a machine with the CUDA toolkit)"));
  return use_cuda_device(local_rank % n);
}

}  // namespace tern
