#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "tern/compute/tensor.h"
#include "tern/dist/communicator.h"
#include "tern/dist/sharding.h"

namespace tern {

// Averages gradients over the ranks in buckets (slices of the flat gradient buffer, from its end,
// since backward produces the last layers' gradients first). A bucket's all-reduce starts as soon
// as backward reports it final, so communication overlaps the rest of backward (PyTorch DDP's
// reducer). The first bucket is small so that communication starts early.
//
// ZeRO-1 (with `sharding`): each bucket is reduce-scattered instead, so this rank receives only
// the sums for its slice of the buffer, in `shard` (sharding.size(rank) elements); the rest of
// `grads` is left as backward wrote it.
class GradReducer {
 public:
  // overlap false: every all-reduce starts after backward (to measure what the overlap hides).
  GradReducer(Communicator& comm, Tensor grads, double bucket_mb, bool overlap = true,
              const FlatSharding* sharding = nullptr, Tensor shard = {});
  size_t num_buckets() const { return buckets_.size(); }
  void begin_step();
  // Gradients in [offset, end) are final for this step.
  void grads_ready_from(int64_t offset);
  // Starts what is left and waits for everything.
  void finish();

 private:
  struct Bucket {
    int64_t offset, count;
  };
  bool active() const;
  void start_from(int64_t offset);
  Communicator& comm_;
  Tensor grads_;
  // Device gradients over a host communicator (MPI without CUDA support) travel through here
  // (and, with ZeRO-1, their reduced slice through host_shard_).
  Tensor host_grads_, host_shard_;
  const FlatSharding* sharding_;
  Tensor shard_;
  std::vector<Bucket> buckets_;  // ordered from the end of the buffer
  size_t next_ = 0;
  bool overlap_;
};

}  // namespace tern
