#include <algorithm>
#include <stdexcept>

#include "tern/dist/grad_reducer.h"

namespace tern {

namespace {
// PyTorch DDP's first_bucket_bytes_cap: a small first bucket gets communication going early.
constexpr double kFirstBucketMb = 1.0;
}  // namespace

GradReducer::GradReducer(Communicator& comm, Tensor grads, double bucket_mb, bool overlap,
                         const FlatSharding* sharding, Tensor shard)
    : comm_(comm),
      grads_(std::move(grads)),
      sharding_(sharding),
      shard_(std::move(shard)),
      overlap_(overlap) {
  if (comm_.device_buffers() && !grads_.on_cuda())
    throw std::invalid_argument("GradReducer: a GPU communicator needs gradients on the GPU");
  if (sharding_ && (sharding_->total() != grads_.numel() || sharding_->world() != comm_.size() ||
                    shard_.numel() != sharding_->size(comm_.rank())))
    throw std::invalid_argument("GradReducer: the sharding does not fit the gradients");
  if (!comm_.device_buffers() && grads_.on_cuda() && comm_.size() > 1) {
    host_grads_ = Tensor::empty(grads_.shape());
    if (sharding_) host_shard_ = Tensor::empty(shard_.shape());
  }
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
    if (sharding_) {
      // This rank's part of the bucket lands at its place in the slice it owns.
      const int me = comm_.rank();
      const int64_t lo = std::clamp(b.offset, sharding_->begin(me), sharding_->end(me));
      float* out = (staged ? host_shard_ : shard_).data<float>() + (lo - sharding_->begin(me));
      comm_.reduce_scatter_sum_start(g + b.offset, out,
                                     sharding_->counts_within(b.offset, b.offset + b.count));
    } else {
      comm_.allreduce_sum_start(g + b.offset, b.count);
    }
  }
  comm_.progress();
}

void GradReducer::finish() {
  if (!active()) {
    // One rank and no collective: the slice it owns is the whole buffer.
    if (sharding_ && shard_.raw() != grads_.raw()) shard_.copy_from(grads_);
    return;
  }
  start_from(0);
  comm_.wait_all();
  if (sharding_) {
    if (host_shard_.defined()) shard_.copy_from(host_shard_);
  } else if (host_grads_.defined()) {
    grads_.copy_from(host_grads_);
  }
}

}  // namespace tern
