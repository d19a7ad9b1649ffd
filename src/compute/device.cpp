#include "tern/compute/device.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>

#include "tern/base/error.h"
#include "tern/compute/backend.h"

namespace tern {

using compute::DeviceRuntime;
using Stream = DeviceRuntime::Stream;

namespace {
// The GPU runtime of the CUDA module; loads it (and throws naming it) on first use.
DeviceRuntime& gpu() { return *compute::cuda_module().device; }

// A GPU's device nodes (Linux, and WSL's): without them there is nothing to load the module for.
bool gpu_device_nodes() {
  static const bool present =
      std::filesystem::exists("/dev/nvidiactl") || std::filesystem::exists("/dev/dxg");
  return present;
}

// Why run.device=cuda cannot be had here: no CUDA build, a module that does not load, or no GPU.
std::string cuda_unavailable_reason() {
  if (!compute::cuda_module_built())
    return "this build has no CUDA backend (configure with -DTERN_CUDA=ON on a machine with the "
           "CUDA toolkit)";
  try {
    compute::cuda_module();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no GPU is visible to this process";
}
}  // namespace

bool cuda_built() { return compute::cuda_module_built(); }

int cuda_device_count() {
  if (!compute::cuda_module_built() || !gpu_device_nodes()) return 0;
  try {
    return gpu().device_count();
  } catch (const std::exception&) {
    return 0;  // no loadable module: as good as no GPU, and resolve_device says why
  }
}

Device use_cuda_device(int index) {
  gpu().select_device(index);
  return {DeviceKind::cuda, index};
}
std::string cuda_device_description() { return gpu().description(); }
void set_cuda_tf32(bool on) {
  if (compute::cuda_module_built() && cuda_device_count() > 0) gpu().set_tf32(on);
}

std::shared_ptr<void> device_allocate(size_t bytes, Device dev) {
  DeviceRuntime& rt = gpu();
  if (dev.index != rt.current_device())
    throw std::runtime_error("tensor on " + device_name(dev) +
                             ", but this process uses cuda:" + std::to_string(rt.current_device()));
  return std::shared_ptr<void>(rt.allocate(bytes), [&rt](void* p) { rt.release(p); });
}

void device_memset_zero(void* p, size_t bytes, Device) { gpu().memset_zero(p, bytes); }

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  const bool from_gpu = src_dev.on_gpu(), to_gpu = dst_dev.on_gpu();
  if (!from_gpu && !to_gpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  DeviceRuntime& rt = gpu();
  rt.copy_async(dst, src, bytes, Stream::compute);
  // The host side of a copy must stay valid (host to GPU: pageable memory is staged by the
  // driver before the call returns) or be complete (GPU to host) when this returns.
  if (!to_gpu) rt.synchronize();
}

void device_synchronize(Device dev) {
  if (dev.on_gpu()) gpu().synchronize();
}

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
  if (!compute::cuda_module_built()) return Tensor::empty(shape, dt);
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
  if (!p) p = gpu().pinned_allocate(bytes);
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
  void* copied = nullptr;    // event: the copy out of `pinned` is done
  void* consumed = nullptr;  // event: the kernels reading x and y are done
  bool used = false;
};

BatchUploader::BatchUploader(Device dev) : dev_(dev), slots_(new Slot[2]) {
  if (!dev.on_gpu()) throw std::runtime_error("BatchUploader: " + device_name(dev) + " is no GPU");
  DeviceRuntime& rt = gpu();
  for (int i = 0; i < 2; ++i) {
    slots_[i].copied = rt.event_create();
    slots_[i].consumed = rt.event_create();
  }
}

BatchUploader::~BatchUploader() {
  DeviceRuntime& rt = gpu();
  try {
    rt.stream_synchronize(Stream::copy);
  } catch (const std::exception&) {
    // A failed device is reported by the next call that can throw.
  }
  for (int i = 0; i < 2; ++i) {
    rt.event_destroy(slots_[i].copied);
    rt.event_destroy(slots_[i].consumed);
    if (slots_[i].pinned) rt.pinned_release(slots_[i].pinned);
  }
}

std::pair<Tensor, Tensor> BatchUploader::upload(const Tensor& x, const Tensor& y) {
  DeviceRuntime& rt = gpu();
  // Everything reading the previous slot's batch is queued by now (the caller's contract).
  if (any_) rt.event_record(slots_[1 - next_].consumed, Stream::compute);
  Slot& s = slots_[next_];
  next_ = 1 - next_;
  any_ = true;
  const size_t xb = x.nbytes(), yb = y.nbytes(), x_padded = (xb + 255) / 256 * 256;
  if (s.used) rt.event_synchronize(s.copied);  // the host side is free
  s.host_x = s.host_y = Tensor();
  const bool direct = rt.is_pinned(x.raw()) && rt.is_pinned(y.raw());
  if (!direct && x_padded + yb > s.pinned_bytes) {
    if (s.pinned) rt.pinned_release(s.pinned);
    s.pinned_bytes = (x_padded + yb) * 5 / 4;
    s.pinned = rt.pinned_allocate(s.pinned_bytes);
  }
  bool allocated = false;
  if (!s.x.defined() || s.x.shape() != x.shape() || s.x.dtype() != x.dtype())
    s.x = Tensor::empty(x.shape(), x.dtype(), dev_), allocated = true;
  if (!s.y.defined() || s.y.shape() != y.shape() || s.y.dtype() != y.dtype())
    s.y = Tensor::empty(y.shape(), y.dtype(), dev_), allocated = true;
  // New memory comes from the pool on the compute stream: let that finish before the copy stream
  // writes it (rare: the first batches and size changes only).
  if (allocated) rt.synchronize();
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
  if (s.used) rt.stream_wait(Stream::copy, s.consumed);
  rt.copy_async(s.x.raw(), from_x, xb, Stream::copy);
  rt.copy_async(s.y.raw(), from_y, yb, Stream::copy);
  rt.event_record(s.copied, Stream::copy);
  rt.stream_wait(Stream::compute, s.copied);
  s.used = true;
  return {s.x, s.y};
}

Device resolve_device(const std::string& setting, int local_rank, int local_world,
                      const std::string& option) {
  if (setting == "cpu") return {};
  const int n = cuda_device_count();
  if (setting == "auto" && n == 0) return {};
  if (setting == "auto" && local_world > n) return {};
  if (n == 0) throw InputError(option + "=cuda: " + cuda_unavailable_reason());
  return use_cuda_device(local_rank % n);
}

}  // namespace tern
