// Finding the backend of a device: the CPU's is linked in; the CUDA one is loaded once, on the
// first call that needs it, from libtern_cuda.so.
#include "tern/compute/backend.h"

#include "tern/base/module.h"

#include <mutex>
#include <stdexcept>
#include <string>

namespace tern::compute {
namespace {

const CudaModule& load_cuda_module() {
  auto entry = reinterpret_cast<CudaModuleEntry>(
      load_module_entry("libtern_cuda.so", "tern_cuda_backend", "TERN_CUDA_LIBRARY"));
  static CudaModule module = entry();
  if (module.abi != kBackendAbi || !module.ops || !module.device)
    throw std::runtime_error("libtern_cuda.so is of another tern build (backend ABI " +
                             std::to_string(module.abi) + ", this binary's " +
                             std::to_string(kBackendAbi) + ")");
  return module;
}

}  // namespace

bool cuda_module_built() {
#ifdef TERN_CUDA_MODULE
  return true;
#else
  return false;
#endif
}

const CudaModule& cuda_module() {
  if (!cuda_module_built())
    throw std::runtime_error(
        "this build of tern has no CUDA backend (configure with TERN_CUDA=ON)");
  // A failed load is not retried: every caller gets the same message.
  static std::once_flag once;
  static const CudaModule* module = nullptr;
  static std::string error;
  std::call_once(once, [] {
    try {
      module = &load_cuda_module();
    } catch (const std::exception& e) {
      error = std::string("the CUDA backend: ") + e.what();
    }
  });
  if (!module) throw std::runtime_error(error);
  return *module;
}

}  // namespace tern::compute
