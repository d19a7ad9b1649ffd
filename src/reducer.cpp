#include <algorithm>

#include "tern/dist.h"

namespace tern {

namespace {
// PyTorch DDP's first_bucket_bytes_cap: a small first bucket gets communication going early.
constexpr double kFirstBucketMb = 1.0;
}  // namespace

GradReducer::GradReducer(Communicator& comm, Tensor grads, double bucket_mb)
    : comm_(comm), grads_(std::move(grads)) {
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

void GradReducer::grads_ready_from(int64_t offset) {
  if (comm_.size() == 1) return;
  float* g = grads_.data<float>();
  while (next_ < buckets_.size() && buckets_[next_].offset >= offset) {
    const Bucket& b = buckets_[next_++];
    comm_.allreduce_sum_start(g + b.offset, b.count);
  }
  comm_.progress();
}

void GradReducer::finish() {
  if (comm_.size() == 1) return;
  grads_ready_from(0);
  comm_.wait_all();
}

}  // namespace tern
