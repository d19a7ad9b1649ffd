#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "tern/compute/tensor.h"

// Which devices this build and this machine have, and binding a process to one GPU.
namespace tern {

bool cuda_built();
// GPUs visible to this process; 0 in a build without CUDA or on a machine without a GPU.
int cuda_device_count();
// Binds this process to GPU `index` (one GPU per rank) and returns it.
Device use_cuda_device(int index);
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, driver CUDA 13.0"
std::string cuda_device_description();
// TF32 in f32 GEMMs on the GPU (off: f32 results match the CPU backend).
void set_cuda_tf32(bool on);
// Sets the CPU threads of this process (the op pool; BLAS calls run inside it): `requested`, or
// the node's cores shared by the `local_world` processes on it. Returns the number set.
int configure_cpu_threads(int64_t requested, int local_world);

// Waits for everything queued on the device.
void device_synchronize(Device dev);

// The device a run.device setting names: cpu, cuda, or auto (cuda when this build has it and
// there is a GPU for each of the local_world ranks on this node; the CPU otherwise). local_rank
// picks the GPU, one per rank (with cuda, ranks may share GPUs). Throws InputError when cuda is
// asked for and none is there; `option` names the setting in that message.
Device resolve_device(const std::string& setting, int local_rank, int local_world,
                      const std::string& option = "run.device");

// Host memory the GPU copies from directly (page-locked), from a pool that reuses freed blocks:
// for batches that go to the device every step. Plain host memory in builds without CUDA.
Tensor pinned_empty(const Shape& shape, DType dt);

// Copies host batches to the GPU on a copy stream of their own (from the batch itself when it is
// pinned_empty memory, else through a pinned staging buffer); the compute stream waits for each
// copy by an event, so the copy of the next batch overlaps the current step's kernels. Two slots
// alternate: request the next batch only once all work that reads the previous one is queued.
class BatchUploader {
 public:
  explicit BatchUploader(Device dev);
  ~BatchUploader();
  BatchUploader(const BatchUploader&) = delete;
  BatchUploader& operator=(const BatchUploader&) = delete;
  // Device copies of x and y (same shapes and dtypes), valid until the upload after next.
  std::pair<Tensor, Tensor> upload(const Tensor& x, const Tensor& y);

 private:
  struct Slot;
  Device dev_;
  std::unique_ptr<Slot[]> slots_;
  [[maybe_unused]] int next_ = 0;  // unused in builds without CUDA
  [[maybe_unused]] bool any_ = false;
};

}  // namespace tern
