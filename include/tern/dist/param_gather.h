#pragma once
#include <cstdint>

#include "tern/compute/tensor.h"
#include "tern/dist/communicator.h"
#include "tern/dist/sharding.h"

namespace tern {

// ZeRO-1's last phase: each rank has updated its slice of the flat parameters; the slices are
// all-gathered, chunk by chunk, so that chunk c travels while the optimizer updates chunk c + 1
// (the MPI progress thread, or NCCL's stream, moves it). finish() waits for all of them.
class ParamGather {
 public:
  // chunk: elements per chunk of a rank's slice (see FlatSharding::num_chunks).
  ParamGather(Communicator& comm, Tensor params, const FlatSharding& sharding, int64_t chunk);
  int64_t chunk() const { return chunk_; }
  // Chunk c of this rank's slice is final for this step.
  void chunk_done(int c);
  void finish();

 private:
  bool active() const;
  Communicator& comm_;
  Tensor params_;
  // Device parameters over a host communicator travel through here.
  Tensor host_params_;
  const FlatSharding& sharding_;
  int64_t chunk_;
  bool started_ = false;
};

}  // namespace tern
