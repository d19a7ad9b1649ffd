#include "tern/dist/param_gather.h"

#include <stdexcept>
#include <vector>

namespace tern {

ParamGather::ParamGather(Communicator& comm, Tensor params, const FlatSharding& sharding,
                         int64_t chunk)
    : comm_(comm), params_(std::move(params)), sharding_(sharding), chunk_(chunk) {
  if (chunk_ < 1) throw std::invalid_argument("ParamGather: chunk must be >= 1");
  if (sharding_.total() != params_.numel() || sharding_.world() != comm_.size())
    throw std::invalid_argument("ParamGather: the sharding does not fit the parameters");
  if (comm_.device_buffers() && !params_.on_cuda())
    throw std::invalid_argument("ParamGather: a GPU communicator needs parameters on the GPU");
  if (!comm_.device_buffers() && params_.on_cuda() && comm_.size() > 1)
    host_params_ = Tensor::empty(params_.shape());
}

bool ParamGather::active() const { return comm_.size() > 1 || comm_.device_buffers(); }

void ParamGather::chunk_done(int c) {
  if (!active()) return;
  const int world = sharding_.world(), me = comm_.rank();
  std::vector<int64_t> offsets(world), counts(world);
  for (int r = 0; r < world; ++r) {
    auto [first, last] = sharding_.chunk_of(r, c, chunk_);
    offsets[r] = first;
    counts[r] = last - first;
  }
  float* data = params_.data<float>();
  if (host_params_.defined()) {
    // Over a host communicator this waits for the update of the chunk on the GPU.
    if (counts[me])
      host_params_.slice(offsets[me], {counts[me]})
          .copy_from(params_.slice(offsets[me], {counts[me]}));
    data = host_params_.data<float>();
  }
  comm_.allgather_start(data, offsets, counts);
  comm_.progress();
  started_ = true;
}

void ParamGather::finish() {
  if (!started_) return;
  started_ = false;
  comm_.wait_all();
  if (host_params_.defined()) params_.copy_from(host_params_);
}

}  // namespace tern
