// The NCCL communicator lives in libtern_nccl.so (cuda/nccl_communicator.cpp), which needs the
// CUDA backend, NCCL and the CUDA runtime: it is loaded only when a run asks for NCCL.
#include <mutex>
#include <stdexcept>
#include <string>

#include "tern/dist/communicator.h"

#include "tern/base/module.h"

namespace tern {
namespace {
using Entry = Communicator* (*)(Communicator*, double);
}  // namespace

bool nccl_built() {
#ifdef TERN_CUDA_MODULE
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host, double timeout_seconds) {
  if (!nccl_built())
    throw std::runtime_error("dist.backend=nccl: this build has no CUDA backend (TERN_CUDA=OFF)");
  static std::once_flag once;
  static Entry entry = nullptr;
  static std::string error;
  std::call_once(once, [] {
    try {
      entry = reinterpret_cast<Entry>(
          load_module_entry("libtern_nccl.so", "tern_nccl_communicator", "TERN_NCCL_LIBRARY"));
    } catch (const std::exception& e) {
      error = std::string("dist.backend=nccl: ") + e.what();
    }
  });
  if (!entry) throw std::runtime_error(error);
  return std::unique_ptr<Communicator>(entry(&host, timeout_seconds));
}

}  // namespace tern
