#include <algorithm>
#include <stdexcept>

#include "tern/dist/grad_reducer.h"

namespace tern {

namespace {
// PyTorch DDP's first_bucket_bytes_cap: a small first bucket gets communication going early.
constexpr double kFirstBucketMb = 1.0;
}  // namespace

GradReducer::GradReducer(Communicator& comm, Tensor grads, double bucket_mb, bool overlap)
    : comm_(comm), grads_(std::move(grads)), overlap_(overlap) {
  if (comm_.device_buffers() && !grads_.on_cuda())
    throw std::invalid_argument("GradReducer: a GPU communicator needs gradients on the GPU");
  if (!comm_.device_buffers() && grads_.on_cuda() && comm_.size() > 1)
    host_grads_ = Tensor::empty(grads_.shape());
  const int64_t n = grads_.numel();
  int64_t end = n;
  double cap_mb = std::min(kFirstBucketMb, bucket_mb);
  while (end > 0) {
    const int64_t cap =
        std::max<int64_t>(1, static_cast<int64_t>(cap_mb * (1 << 20) / sizeof(float)));
    const int64_t begin = std::max<int64_t>(0, end - cap);
    buckets_.push_back({begin, end - begin});
    end = begin;
    cap_mb = bucket_mb;
  }
}

void GradReducer::begin_step() { next_ = 0; }

bool GradReducer::active() const {
  // NCCL runs even at world size 1, so that one GPU exercises the same path as many.
  return comm_.size() > 1 || comm_.device_buffers();
}

void GradReducer::grads_ready_from(int64_t offset) {
  if (!active() || !overlap_) return;
  start_from(offset);
}

void GradReducer::start_from(int64_t offset) {
  const bool staged = host_grads_.defined();
  float* g = staged ? host_grads_.data<float>() : grads_.data<float>();
  while (next_ < buckets_.size() && buckets_[next_].offset >= offset) {
    const Bucket& b = buckets_[next_++];
    // Over a host communicator, GPU gradients are copied out first (this waits for backward).
    if (staged) host_grads_.slice(b.offset, {b.count}).copy_from(grads_.slice(b.offset, {b.count}));
    comm_.allreduce_sum_start(g + b.offset, b.count);
  }
  comm_.progress();
}

void GradReducer::finish() {
  if (!active()) return;
  start_from(0);
  comm_.wait_all();
  if (host_grads_.defined()) grads_.copy_from(host_grads_);
}

}  // namespace tern
