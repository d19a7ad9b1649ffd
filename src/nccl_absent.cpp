// Builds without CUDA: there is no NCCL communicator.
#include <stdexcept>

#include "tern/dist.h"

namespace tern {

std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, double) {
  throw std::runtime_error("dist.backend=nccl: this build has no CUDA backend (TERN_CUDA=OFF)");
}
bool nccl_built() { return false; }

}  // namespace tern
